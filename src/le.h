/* le.h: little-endian loads and stores for the wire and disk formats (byte by byte, so any
 * alignment and any host order work). */
#ifndef SQ_LE_H
#define SQ_LE_H

#include <stdint.h>

static inline void sq__st16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline void sq__st32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static inline void sq__st64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static inline uint16_t sq__ld16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t sq__ld32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static inline uint64_t sq__ld64(const uint8_t *p)
{
    return (uint64_t)sq__ld32(p) | ((uint64_t)sq__ld32(p + 4) << 32);
}

#endif
