/* common.h: assertions, little-endian helpers and small utilities shared by every module. */
#ifndef SQ_COMMON_H
#define SQ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "squall.h"

/* Assertions guard programmer errors and protocol invariants; they stay on in every build. */
#define SQ_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            sq__assert_fail(#cond, __FILE__, __LINE__);                                            \
        }                                                                                          \
    } while (0)

_Noreturn static inline void sq__assert_fail(const char *what, const char *file, int line)
{
    fprintf(stderr, "squall: assertion failed: %s (%s:%d)\n", what, file, line);
    abort();
}

#define SQ_ALIGN8(x) (((x) + 7u) & ~(size_t)7u)
#define SQ_MIN(a, b) ((a) < (b) ? (a) : (b))
#define SQ_MAX(a, b) ((a) > (b) ? (a) : (b))
#define SQ_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* The build only supports little-endian hosts: every wire and table format is little-endian and
 * the table is read in place. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "squall needs a little-endian host"
#endif

#endif
