/* wire.h: the key-value client protocol: frames between clients and members over TCP, and the
 * item lists some answers carry. Every field is little-endian; see docs in README.md
 * ("Client protocol"). Decoding never trusts its input: every length is checked. */
#ifndef SQ_KV_WIRE_H
#define SQ_KV_WIRE_H

#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Frame layout (60-byte header, then key, str and value bytes):
 *   0  u32 length   bytes after this field: 56 + key_len + str_len + value_len
 *   4  u16 magic    0x5153 ("SQ")
 *   6  u8  proto    SQ_KV_PROTO
 *   7  u8  op       SQ_KV_OP_*
 *   8  u32 flags    SQ_KV_F_*
 *  12  i32 status   0 in requests; 0 or a negative SQ_E* code in answers
 *  16  u64 req_id   chosen by the client, echoed in the answer (and in watch events)
 *  24  u64 client   the client's random id: (client, req_id) is applied at most once
 *  32  u64 version  if-version, at-version or from-version; in answers the entry's version
 *  40  u64 time     at-time (microseconds since the epoch); in answers the entry's timestamp
 *  48  u32 count    shards (pool create); in answers the number of items or the full size
 *  52  u16 key_len  <= SQ_KV_MAX_KEY
 *  54  u16 str_len  <= SQ_KV_MAX_STR: store type or subgroup (pool create); error text in answers
 *  56  u32 value_len <= SQ_KV_MAX_VALUE
 */
#define SQ_KV_MAGIC 0x5153u
#define SQ_KV_PROTO 1u
#define SQ_KV_HEADER_BYTES 60u
#define SQ_KV_MAX_KEY 1024u
#define SQ_KV_MAX_STR 512u
#define SQ_KV_MAX_VALUE (64u << 20)
#define SQ_KV_MAX_VALUE_TEXT "64 MiB" /* SQ_KV_MAX_VALUE, for messages */
#define SQ_KV_MAX_FRAME (SQ_KV_HEADER_BYTES + SQ_KV_MAX_KEY + SQ_KV_MAX_STR + SQ_KV_MAX_VALUE)

enum {
    SQ_KV_OP_HELLO = 1,       /* answer: str = "member=ID"; also the op of the SQ_EPROTO
                                 answer to a malformed frame (req_id copied when readable) */
    SQ_KV_OP_PUT = 2,         /* key, value; IF_VERSION / IF_ABSENT make it conditional */
    SQ_KV_OP_GET = 3,         /* key; AT_VERSION / AT_TIME / STABLE / SIZE_ONLY */
    SQ_KV_OP_REMOVE = 4,      /* key; IF_VERSION */
    SQ_KV_OP_LIST = 5,        /* key = prefix; AT_TIME; answer: items */
    SQ_KV_OP_HISTORY = 6,     /* key; answer: items (one per version, oldest first) */
    SQ_KV_OP_WATCH = 7,       /* key, or a prefix ending in '/'; version = first version wanted;
                                 value (optional): 16 x u64, the first version per shard (a
                                 client watching again); answer: version = last applied */
    SQ_KV_OP_UNWATCH = 8,     /* version = req_id of the watch */
    SQ_KV_OP_POOL_CREATE = 9, /* key = path; str = store type or subgroup name; count = shards */
    SQ_KV_OP_POOL_LIST = 10,  /* answer: items (key = path, version = subgroup, size = shards,
                                 timestamp = store type) */
    SQ_KV_OP_STATUS = 11,     /* answer: value = text (JSON with SQ_KV_F_JSON) */
    SQ_KV_OP_EVENT = 12,      /* member to client: one update for a watch (req_id = the watch's,
                                 count = the shard: versions count per shard) */
    SQ_KV_OP_MAX = 12,
};

enum {
    SQ_KV_F_IF_VERSION = 1u << 0, /* write only if the key is at `version` */
    SQ_KV_F_IF_ABSENT = 1u << 1,  /* write only if the key does not exist (or was removed) */
    SQ_KV_F_AT_VERSION = 1u << 2, /* the latest entry at or before `version` */
    SQ_KV_F_AT_TIME = 1u << 3,    /* the latest entry at or before `time` */
    SQ_KV_F_STABLE = 1u << 4,     /* only what every replica holds (linearizable read) */
    SQ_KV_F_SIZE_ONLY = 1u << 5,  /* get: the size (in count), no value */
    SQ_KV_F_LOCAL = 1u << 6,      /* relayed between members: answer from your shard only */
    SQ_KV_F_DELETED = 1u << 7,    /* answers, events, items: the entry is a removal */
    SQ_KV_F_JSON = 1u << 8,       /* status as JSON */
    SQ_KV_F_TRACE = 1u << 9,      /* put, remove, get: the answer's str carries the member's
                                     stage times (SQ_KV_TRACE_FORMAT) instead of being empty */
    SQ_KV_F_METRICS = 1u << 10,   /* status: Prometheus text format metrics */
    SQ_KV_F_MASK = (1u << 11) - 1,
};

/* The stage times a member puts in the answer to a traced request (CLOCK_MONOTONIC µs; 0: the
 * op did not pass that stage, e.g. durability for a volatile store or anything but the answer
 * for a get): received, multicast (in its slot), delivered here (every member has it), durable
 * here (this member's sync covered it), persisted (the shard's frontier passed it), answered. */
#define SQ_KV_TRACE_FORMAT                                                                         \
    "recv=%" PRIu64 " mcast=%" PRIu64 " deliver=%" PRIu64 " durable=%" PRIu64 " persist=%" PRIu64  \
    " answer=%" PRIu64
#define SQ_KV_TRACE_SCAN                                                                           \
    "recv=%" SCNu64 " mcast=%" SCNu64 " deliver=%" SCNu64 " durable=%" SCNu64 " persist=%" SCNu64  \
    " answer=%" SCNu64

/* One decoded frame. key/str/value point into the buffer it was decoded from. */
struct sq_kv_frame {
    uint8_t op;
    uint32_t flags;
    int32_t status;
    uint64_t req_id;
    uint64_t client;
    uint64_t version;
    uint64_t time;
    uint32_t count;
    const char *key;
    uint16_t key_len;
    const char *str;
    uint16_t str_len;
    const void *value;
    uint32_t value_len;
};

/* Bytes the frame takes on the wire. */
size_t sq__kv_frame_bytes(const struct sq_kv_frame *f);

/* Encodes `f` into `out` (at least sq__kv_frame_bytes(f) bytes). Returns the bytes written, or
 * SQ_EINVAL when a length is over its limit. */
long sq__kv_encode(const struct sq_kv_frame *f, void *out, size_t cap);

/* How many bytes the frame that starts at `buf` takes: 0 when fewer than 4 bytes are there,
 * SQ_EPROTO when its length field is impossible (the connection must be closed). */
long sq__kv_frame_need(const void *buf, size_t len);

/* Decodes one whole frame of `len` bytes (as sq__kv_frame_need said). SQ_EPROTO with a reason in
 * `why` when anything is wrong: bad magic, protocol version, op, flags or lengths. */
int sq__kv_decode(const void *buf, size_t len, struct sq_kv_frame *f, char *why, size_t why_size);

/* Item lists (list, history, pool list): repeated
 *   u64 version, u64 timestamp, u32 size, u16 key_len, u8 flags (1 = deleted), u8 pad, key. */
#define SQ_KV_ITEM_HEADER_BYTES 24u
struct sq_kv_item_raw {
    uint64_t version;
    uint64_t timestamp;
    uint32_t size;
    uint8_t flags;
    const char *key;
    uint16_t key_len;
};
/* Appends one item at `out` (at least SQ_KV_ITEM_HEADER_BYTES + key_len bytes); returns the
 * bytes written. */
size_t sq__kv_item_encode(const struct sq_kv_item_raw *it, void *out);
/* Decodes the item at offset *pos of `buf` and advances *pos. 0, SQ_ENOTFOUND at the end, or
 * SQ_EPROTO when the list is malformed. */
int sq__kv_item_next(const void *buf, size_t len, size_t *pos, struct sq_kv_item_raw *it);

#endif
