/* store.h: one shard's key-value store: the replicated operations (put, conditional put, remove)
 * applied in delivery order, the per-key version history, and the table that applies each
 * client request at most once. Pure logic: no I/O, no locking (the caller serializes). */
#ifndef SQ_KV_STORE_H
#define SQ_KV_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A replicated operation: the payload multicast in the shard. Layout (little-endian):
 *   0 u8 kind, 1 u8 flags, 2 u16 key_len, 4 u32 value_len, 8 u64 client, 16 u64 req_id,
 *  24 u64 expect (if-version), 32 u32 origin member id, 36 u32 arg, 40 key, then value. */
#define SQ_KV_OP_HEADER_BYTES 40u
enum {
    SQ_KV_PUT = 1,
    SQ_KV_REMOVE = 2,
    SQ_KV_BARRIER = 3,     /* no change: marks a place in the order (stable reads) */
    SQ_KV_POOL_CREATE = 4, /* metadata subgroup: key = path, arg = subgroup | store<<8 |
                              shards<<16 */
};
enum { SQ_KV_OPF_IF_VERSION = 1, SQ_KV_OPF_IF_ABSENT = 2 };

struct sq_kv_op {
    uint8_t kind;
    uint8_t flags;
    uint64_t client;
    uint64_t req_id;
    uint64_t expect;
    uint32_t origin;
    uint32_t arg;
    const char *key;
    uint16_t key_len;
    const void *value;
    uint32_t value_len;
};

/* Bytes an encoded op takes. */
size_t sq__kv_op_bytes(const struct sq_kv_op *op);
/* Encodes `op` into `out` (sq__kv_op_bytes bytes). */
void sq__kv_op_encode(const struct sq_kv_op *op, void *out);
/* Decodes a delivered payload; SQ_EPROTO when it is not an op. Pointers point into `buf`. */
int sq__kv_op_decode(const void *buf, size_t len, struct sq_kv_op *op);

/* What applying one op did (the answer to its client). */
struct sq_kv_applied {
    int status;       /* 0, SQ_ECONFLICT, SQ_ENOTFOUND (remove of a missing key) */
    uint64_t version; /* of the new entry; for a conflict the key's current version */
    uint64_t timestamp;
    bool duplicate; /* (client, req_id) was applied before: this is its first answer */
};

/* One version of a key. */
struct sq_kv_version {
    uint64_t version;
    uint64_t timestamp;
    uint32_t size;
    uint8_t deleted;
};

enum { SQ_KV_STORE_VOLATILE = 0, SQ_KV_STORE_PERSISTENT = 1, SQ_KV_STORE_TRIGGER = 2 };

/* Clients remembered for at-most-once application, and requests remembered per client. A retry
 * of a request older than the last SQ_KV_DEDUP_PER_CLIENT of its client is applied again. */
#define SQ_KV_DEDUP_CLIENTS 4096
#define SQ_KV_DEDUP_PER_CLIENT 64

struct sq_kv_store;

/* Creates an empty store of type SQ_KV_STORE_*: volatile keeps each key's latest value,
 * persistent also each key's versions (values of older ones are read from the log), trigger
 * keeps no values: only each key's latest version and the at-most-once table. */
int sq__kv_store_create(struct sq_kv_store **out, int type);
void sq__kv_store_destroy(struct sq_kv_store *s);
int sq__kv_store_type(const struct sq_kv_store *s);

/* Applies a delivered op at (version, timestamp). Deterministic: every replica that applies the
 * same ops in the same order holds the same store and gives the same answers. SQ_ENOMEM leaves
 * the store unchanged. */
int sq__kv_store_apply(struct sq_kv_store *s, const struct sq_kv_op *op, uint64_t version,
                       uint64_t timestamp, struct sq_kv_applied *out);

/* The version of the last op applied (0: none). */
uint64_t sq__kv_store_last(const struct sq_kv_store *s);

/* Reads a key. how: SQ_KV_LATEST, SQ_KV_AT_VERSION (latest version <= key), SQ_KV_AT_TIME
 * (latest with timestamp <= key). Fills *v; when that version's value is in memory (the latest
 * of a volatile or persistent store), *value and *value_size point at it (valid until the next
 * apply), else *value is NULL (read it from the log). SQ_ENOTFOUND when the key has no such
 * version; a removal is returned with v->deleted = 1. */
enum { SQ_KV_LATEST, SQ_KV_AT_VERSION, SQ_KV_AT_TIME };
int sq__kv_store_get(const struct sq_kv_store *s, const char *key, uint16_t key_len, int how,
                     uint64_t at, struct sq_kv_version *v, const void **value, size_t *value_size);

/* Every version of a key, oldest first: *versions points into the store (valid until the next
 * apply). SQ_ENOTFOUND for an unknown key. */
int sq__kv_store_history(const struct sq_kv_store *s, const char *key, uint16_t key_len,
                         const struct sq_kv_version **versions, uint32_t *n);

/* Calls fn for every key that starts with `prefix` and exists at the given point (latest when
 * at_time is false), removed keys too when `removed`, in no particular order. */
typedef void (*sq_kv_each_fn)(void *arg, const char *key, uint16_t key_len,
                              const struct sq_kv_version *v);
void sq__kv_store_each(const struct sq_kv_store *s, const char *prefix, uint16_t prefix_len,
                       bool removed, bool at_time, uint64_t time, sq_kv_each_fn fn, void *arg);

/* Number of keys (removed ones included). */
uint64_t sq__kv_store_keys(const struct sq_kv_store *s);

/* State transfer: the whole store in a buffer from malloc, and back. Load replaces the contents;
 * SQ_EPROTO for a buffer that is not a saved store. */
int sq__kv_store_save(const struct sq_kv_store *s, void **buf, size_t *size);
int sq__kv_store_load(struct sq_kv_store *s, const void *buf, size_t size);

#endif
