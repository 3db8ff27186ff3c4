/* hash.h: FNV-1a 64-bit hashing, used for config digests and delivered-sequence fingerprints. */
#ifndef SQ_HASH_H
#define SQ_HASH_H

#include <stddef.h>
#include <stdint.h>

#define SQ_FNV_INIT 0xcbf29ce484222325ull

/* Folds `len` bytes into hash `h` and returns the new hash. */
uint64_t sq__fnv1a(uint64_t h, const void *data, size_t len);
/* Folds one 64-bit value, as 8 little-endian bytes. */
uint64_t sq__fnv1a_u64(uint64_t h, uint64_t v);

/* Scrambles every bit of `h` into every other (murmur3's 64-bit finalizer): turns counters and
 * small ids into tags that old memory contents do not hold by chance. */
uint64_t sq__mix64(uint64_t h);

#endif
