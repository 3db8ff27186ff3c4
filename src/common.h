/* common.h: assertions, little-endian helpers and small utilities shared by every module. */
#ifndef SQ_COMMON_H
#define SQ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

/* The monotonic clock, for the runtime and the transport (the protocol core gets its time from
 * its caller, so the simulator can drive it). */
static inline uint64_t sq__mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static inline uint64_t sq__mono_ms(void)
{
    return sq__mono_us() / 1000u;
}

/* Wall-clock time, microseconds since the Unix epoch: the physical part of hybrid timestamps. */
static inline uint64_t sq__wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
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
