/* seeds.h: the command line shared by the simulation tests: run seeds, print a summary line. */
#ifndef SQ_TEST_SEEDS_H
#define SQ_TEST_SEEDS_H

#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Records the first failure of a run into `dst` (later ones are often its consequences). */
static inline void sq_sim_vfail(char *dst, size_t size, const char *fmt, va_list ap)
{
    if (dst[0] == '\0') {
        vsnprintf(dst, size, fmt, ap);
    }
}

/* Runs `run_seed` for the seeds the command line asks for (--seeds N, --start S, --seed S, -v)
 * and prints "<name>: N passed, N failed". Returns the process exit status. */
static inline int sq_sim_main(int argc, char **argv, const char *name,
                              int (*run_seed)(uint64_t seed, bool verbose))
{
    uint64_t start = 1, count = 200;
    bool verbose = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seeds") == 0 && i + 1 < argc) {
            count = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--start") == 0 && i + 1 < argc) {
            start = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
            start = strtoull(argv[++i], NULL, 10);
            count = 1;
        } else if (strcmp(argv[i], "-v") == 0) {
            verbose = true;
        } else {
            fprintf(stderr, "usage: %s [--seeds N] [--start S] [--seed S] [-v]\n", argv[0]);
            return 2;
        }
    }
    uint64_t passed = 0, failed = 0;
    for (uint64_t s = start; s < start + count; s++) {
        if (run_seed(s, verbose)) {
            passed++;
        } else {
            failed++;
        }
    }
    printf("%s: %" PRIu64 " passed, %" PRIu64 " failed\n", name, passed, failed);
    return failed == 0 ? 0 : 1;
}

#endif
