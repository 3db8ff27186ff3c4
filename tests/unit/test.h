/* test.h: a minimal test harness: CHECK records a failure and goes on; main returns the count. */
#ifndef SQ_TEST_H
#define SQ_TEST_H

#include <stdio.h>
#include <string.h>

static int sq_test_failures;
static int sq_test_checks;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        sq_test_checks++;                                                                          \
        if (!(cond)) {                                                                             \
            sq_test_failures++;                                                                    \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        sq_test_checks++;                                                                          \
        if (a_ != b_) {                                                                            \
            sq_test_failures++;                                                                    \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld != %lld)\n", __FILE__, __LINE__,  \
                    #a, #b, a_, b_);                                                               \
        }                                                                                          \
    } while (0)

#define CHECK_CONTAINS(hay, needle)                                                                \
    do {                                                                                           \
        sq_test_checks++;                                                                          \
        if (strstr((hay), (needle)) == NULL) {                                                     \
            sq_test_failures++;                                                                    \
            fprintf(stderr, "%s:%d: expected \"%s\" in \"%s\"\n", __FILE__, __LINE__, (needle),    \
                    (hay));                                                                        \
        }                                                                                          \
    } while (0)

static inline int sq_test_done(const char *name)
{
    printf("%s: %d passed, %d failed\n", name, sq_test_checks - sq_test_failures,
           sq_test_failures);
    return sq_test_failures == 0 ? 0 : 1;
}

#endif
