/* squall/client.h: the client library of squall's key-value store, for programs outside the
 * group. A client speaks the binary protocol (src/kv/wire.h) over TCP to any member, which relays
 * each request to the shard that holds the key. */
#ifndef SQUALL_CLIENT_H
#define SQUALL_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "errors.h" /* error codes: SQ_ECONFLICT, SQ_ENOTFOUND, ... and sq_strerror */

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sq_client sq_client;

/* Connects to one of `members`, a comma-separated list of host:port (the members' client
 * ports). When the member fails, the client moves to the next one and retries what was in
 * flight with the same request ids, so every put is applied once. `timeout_ms` bounds each
 * call (including retries); <= 0 means 10 s. On error *out is NULL and `err` says why. */
SQ_API int sq_client_open(sq_client **out, const char *members, int timeout_ms, char *err,
                          size_t err_size);

/* TLS to the members' client ports ([tls] in their configs). Every field may be NULL. */
typedef struct sq_client_tls {
    const char *ca_file;   /* PEM: trust member certificates signed by these; NULL: the system's */
    const char *cert_file; /* PEM: this client's certificate, for members that require one */
    const char *key_file;  /* PEM: its private key (with cert_file) */
} sq_client_tls;

/* sq_client_open over TLS 1.3: each member's certificate must be trusted and name the host or
 * address it is listed as in `members`. `tls` NULL is sq_client_open. A file that cannot be used
 * is SQ_EINVAL with the reason in `err`; a member whose handshake fails is skipped like one that
 * does not answer, with the reason (an untrusted or expired certificate, a port without TLS) in
 * `err` when none is left. */
SQ_API int sq_client_open_tls(sq_client **out, const char *members, int timeout_ms,
                              const sq_client_tls *tls, char *err, size_t err_size);

/* Stops the client's I/O thread, closes the connection and frees the client. Outstanding
 * asynchronous calls complete with SQ_ECLOSED first. Safe on NULL. Not from a callback (there
 * it returns without closing). */
SQ_API void sq_client_close(sq_client *c);

/* The id of the member this client is connected to, or UINT32_MAX. */
SQ_API uint32_t sq_client_member(const sq_client *c);

/* Where the time of one traced call went (opts.trace = 1): CLOCK_MONOTONIC microseconds at each
 * stage, 0 for a stage the call did not pass (durability for a volatile store; everything
 * between received and answered for a plain get). The member's times are its own clock: they
 * line up with the client's only on the same machine. */
typedef struct sq_kv_trace {
    uint64_t call;      /* the call was made */
    uint64_t sent;      /* its frame went into the socket */
    uint64_t received;  /* the member read it */
    uint64_t multicast; /* the member put the op into its shard's multicast */
    uint64_t delivered; /* delivered at the member: every member of the shard has it */
    uint64_t durable;   /* persistent stores: on disk at that member */
    uint64_t persisted; /* persistent stores: on disk at every member of the shard */
    uint64_t answered;  /* the member queued the answer */
    uint64_t answer_in; /* the client read the answer */
    uint64_t returned;  /* the blocking call returned (0 for asynchronous calls) */
} sq_kv_trace;

/* The outcome of one call. `value` is owned by the library: valid until the callback returns
 * (asynchronous calls) or until the next call on the same sq_kv_result (blocking calls, which
 * reuse and finally free it in sq_kv_result_free). */
typedef struct sq_kv_result {
    int status;         /* 0 or a negative SQ_E* code */
    uint64_t version;   /* put/remove: the new version; get: the entry's; conflict: current */
    uint64_t timestamp; /* the entry's hybrid logical clock time, microseconds since epoch */
    int deleted;        /* get at a version or time: the key was removed there */
    uint32_t count;     /* get --size: the value's size; list/history: the number of items */
    void *value;        /* get: the value; list/history/pool list: the items (see below) */
    size_t size;
    char message[256]; /* a one-line reason when status != 0 */
    sq_kv_trace trace; /* traced calls (opts.trace): where the time went; else zeros */
    size_t cap_;       /* internal */
} sq_kv_result;

/* Frees what a blocking call left in `r` (safe to call more than once). */
SQ_API void sq_kv_result_free(sq_kv_result *r);

/* Options of puts and removes. */
typedef struct sq_put_opts {
    int if_version; /* 1: only if the key is still at `version` (0 = must not exist) */
    uint64_t version;
    int if_absent; /* 1: only if the key does not exist (or was removed) */
    int trace;     /* 1: fill result.trace (costs a few clock reads; for benchmarks) */
} sq_put_opts;

/* Options of gets. */
typedef struct sq_get_opts {
    int at_version; /* the latest entry at or before `version` */
    uint64_t version;
    int at_time; /* the latest entry at or before `time_us` */
    uint64_t time_us;
    int stable;    /* only what every replica holds: sees every put completed before */
    int size_only; /* only the size (in result.count) */
    int trace;     /* 1: fill result.trace */
} sq_get_opts;

/* Puts `value` under `key` (a path under a pool: "/orders/42"). On success r->version and
 * r->timestamp are the new entry's. A conditional put that fails returns SQ_ECONFLICT with the
 * key's current version in r->version (0 when it never existed; the removal's version after a
 * remove). Returns r->status. */
SQ_API int sq_client_put(sq_client *c, const char *key, const void *value, size_t size,
                         const sq_put_opts *opts, sq_kv_result *r);
SQ_API int sq_client_get(sq_client *c, const char *key, const sq_get_opts *opts, sq_kv_result *r);
/* Removes `key`: a tombstone with its own version. SQ_ENOTFOUND if it does not exist. */
SQ_API int sq_client_remove(sq_client *c, const char *key, const sq_put_opts *opts,
                            sq_kv_result *r);

/* One entry of a list, history or pool list, decoded from r->value by sq_kv_next_item. */
typedef struct sq_kv_item {
    const char *key; /* not NUL-terminated: key_len bytes */
    size_t key_len;
    uint64_t version;   /* pool list: the subgroup index */
    uint64_t timestamp; /* pool list: the store type (SQ_STORE_*: 0 volatile, 1 persistent,
                           2 trigger) */
    uint32_t size;      /* the value's size; pool list: the number of shards */
    int deleted;
} sq_kv_item;
/* Iterates the items of r->value: *pos starts at 0. 1 with an item, 0 at the end, or
 * SQ_EPROTO. */
SQ_API int sq_kv_next_item(const sq_kv_result *r, size_t *pos, sq_kv_item *item);

/* Keys under `prefix` with their latest version (as of `time_us` when at_time is 1); removed
 * keys are left out. Sorted by key. */
SQ_API int sq_client_list(sq_client *c, const char *prefix, int at_time, uint64_t time_us,
                          sq_kv_result *r);
/* Every version of `key`, oldest first (removals have deleted = 1). */
SQ_API int sq_client_history(sq_client *c, const char *key, sq_kv_result *r);

/* Creates the pool `path` ("/orders") on a subgroup whose store type is `store` ("volatile",
 * "persistent" or "trigger"), or on the subgroup called `store` when one has that name;
 * `shards` 0 means all the subgroup's shards. SQ_EEXIST if it exists. Pools are kept in the
 * group's metadata subgroup and survive restarts. */
SQ_API int sq_client_pool_create(sq_client *c, const char *path, const char *store, uint32_t shards,
                                 sq_kv_result *r);
SQ_API int sq_client_pool_list(sq_client *c, sq_kv_result *r);

/* The member's view of the group: view, members, shards, frontiers; text (json = 0), JSON
 * (json = 1), or the member's metrics in Prometheus' text format (json = 2). */
SQ_API int sq_client_status(sq_client *c, int json, sq_kv_result *r);

/* Watches: every update of `target` (a key, or a prefix ending in '/'), in version order per
 * shard, from version `from_version` on (0: from the beginning the store keeps). The callback
 * runs on the client's I/O thread; `key` and `value` are valid during the callback only. After
 * a member failure the client watches again from the version after the last one it delivered,
 * so nothing is missed. Returns a watch id (> 0) in *watch_id. */
typedef struct sq_kv_event {
    const char *key;
    size_t key_len;
    uint64_t version;
    uint64_t timestamp;
    int deleted;
    const void *value;
    size_t size;
    uint32_t shard; /* the shard of the pool the update is in: versions count per shard */
} sq_kv_event;
typedef void (*sq_watch_fn)(void *arg, const sq_kv_event *ev);
SQ_API int sq_client_watch(sq_client *c, const char *target, uint64_t from_version, sq_watch_fn fn,
                           void *arg, uint64_t *watch_id);
/* The same, resuming a watch per shard: from[k] is the first version wanted in shard k (0: from
 * the beginning the store keeps), for k < nfrom; shards past nfrom start at 0. nfrom is at most
 * SQ_CLIENT_WATCH_SHARDS. A watcher that kept, for each shard, the version after the last event
 * it saw (sq_kv_event.shard) resumes with it and misses nothing of a persistent pool. */
#define SQ_CLIENT_WATCH_SHARDS 16
SQ_API int sq_client_watch_shards(sq_client *c, const char *target, const uint64_t *from,
                                  size_t nfrom, sq_watch_fn fn, void *arg, uint64_t *watch_id);
SQ_API int sq_client_unwatch(sq_client *c, uint64_t watch_id);

/* Asynchronous calls: the callback runs once, on the client's I/O thread, with the result (its
 * value valid during the callback only). A call that returns an error never runs its callback.
 * At most SQ_CLIENT_MAX_INFLIGHT calls may be outstanding (SQ_EAGAIN beyond): each shard
 * remembers a client's last 64 answers, and keeping fewer than half that in flight is what
 * makes a retry after a failure find its first answer (applied once). Use several clients for
 * more concurrency. */
#define SQ_CLIENT_MAX_INFLIGHT 32
typedef void (*sq_kv_done_fn)(void *arg, const sq_kv_result *r);
SQ_API int sq_client_put_async(sq_client *c, const char *key, const void *value, size_t size,
                               const sq_put_opts *opts, sq_kv_done_fn done, void *arg);
SQ_API int sq_client_get_async(sq_client *c, const char *key, const sq_get_opts *opts,
                               sq_kv_done_fn done, void *arg);

#ifdef __cplusplus
}
#endif
#endif
