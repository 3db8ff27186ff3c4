/* buf.h: the growable byte buffer of the key-value service and the client library: bytes
 * [off, len) are pending (sent or parsed up to off), and growing first reclaims [0, off). */
#ifndef SQ_KV_BUF_H
#define SQ_KV_BUF_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "squall.h"

struct sq__buf {
    uint8_t *p;
    size_t len, cap, off;
};

/* Makes room for n more bytes after len. SQ_ENOMEM leaves the buffer as it was. */
static inline int sq__buf_reserve(struct sq__buf *b, size_t n)
{
    if (b->len + n <= b->cap) {
        return 0;
    }
    if (b->off > 0) {
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->len + n <= b->cap) {
            return 0;
        }
    }
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n) {
        cap *= 2;
    }
    uint8_t *p = realloc(b->p, cap);
    if (p == NULL) {
        return SQ_ENOMEM;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static inline int sq__buf_add(struct sq__buf *b, const void *data, size_t n)
{
    int rc = sq__buf_reserve(b, n);
    if (rc == 0 && n > 0) {
        memcpy(b->p + b->len, data, n);
        b->len += n;
    }
    return rc;
}

/* Appends printf-style text (without its NUL). SQ_ENOMEM leaves the buffer as it was. */
static inline int sq__buf_printf(struct sq__buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static inline int sq__buf_printf(struct sq__buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || sq__buf_reserve(b, (size_t)n + 1) != 0) {
        return SQ_ENOMEM;
    }
    va_start(ap, fmt);
    vsnprintf((char *)b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

static inline void sq__buf_free(struct sq__buf *b)
{
    free(b->p);
    *b = (struct sq__buf){0};
}

#endif
