/* squall.h: the public C API of squall, a replicated group with totally ordered atomic multicast.
 */
#ifndef SQUALL_H
#define SQUALL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "squall/errors.h" /* SQ_E* codes, sq_strerror, SQ_API */

/* Log levels and the process-wide log sink. The library never prints: without a sink its log
 * lines are dropped. sq_member_open sets the level from the config's [group] log_level. */
enum {
    SQ_LOG_LEVEL_ERROR = 0,
    SQ_LOG_LEVEL_WARN = 1,
    SQ_LOG_LEVEL_INFO = 2,
    SQ_LOG_LEVEL_DEBUG = 3
};
typedef void (*sq_log_fn)(int level, const char *line);
void sq_set_log(sq_log_fn fn, int level);

/* A group member: one process's place in the group (opaque, created by sq_member_open). */
typedef struct sq_member sq_member;

/* One delivered message. Valid only during the delivery callback: `data` points into the
 * member's shared state table and is reused once the callback returns. */
typedef struct sq_message {
    uint32_t sender_id;   /* configured id of the member that sent it */
    uint32_t sender_rank; /* its rank in the current view */
    uint64_t index;       /* global index in the shard's total order (nulls included) */
    uint64_t version;     /* (view id << 32) | sequence of delivered messages in the view */
    const void *data;     /* payload, 8-byte aligned */
    size_t size;          /* payload size in bytes, <= max_payload */
    uint32_t flags;       /* internal: SQ_MSG_ORDERED_CALL for ordered calls */
    uint32_t subgroup;    /* subgroup index, in config file order */
    uint32_t shard;       /* shard of that subgroup; indexes and versions count per shard */
    uint64_t timestamp;   /* hybrid logical clock, microseconds since the Unix epoch: the
                             sender's clock, raised so it never goes backwards in the shard */
} sq_message;

/* SQ_MSG_REPLAYED: a group restarted from its logs hands every logged update of a persistent
 * subgroup to the application again, in order, before anything new, so it can rebuild its
 * state; these are not new deliveries. */
enum { SQ_MSG_ORDERED_CALL = 1, SQ_MSG_REPLAYED = 2 };

/* Called once per message, in the same total order at every member, on the member's event-loop
 * thread. It may call sq_member_send with SQ_SEND_NONBLOCK (a blocking send from here returns
 * SQ_EAGAIN when the window is full, since blocking would stop delivery). */
typedef void (*sq_deliver_fn)(void *arg, const sq_message *msg);

/* A view: the members of the group between two membership changes. */
typedef struct sq_view {
    uint32_t view_id; /* 0 for the configured first view, +1 at every change */
    uint32_t nmembers;
    const uint32_t *member_ids; /* by rank; valid during the callback only */
    uint32_t my_rank;
    uint32_t nremoved; /* members that left since the previous view */
    const uint32_t *removed_ids;
    uint64_t dropped; /* my messages that the change dropped (sent, never delivered) */
    int adequate;     /* 1 when every shard has its min_members: messages flow */
    uint32_t nsubgroups;
    const uint32_t *my_shard; /* by subgroup: my shard, or SQ_NO_SHARD (standing by) */
    const uint32_t *shard_of; /* by subgroup * nmembers + rank: each member's shard */
    uint32_t awaiting_state;  /* bit s: this member is new to its shard of subgroup s and
                                 receives the shard's state (sq_state_load_fn) before it
                                 delivers anything there */
} sq_view;

#define SQ_NO_SHARD 0xFFFFFFFFu

/* Called when a view is installed, after every message of the previous view was delivered: on
 * the event-loop thread, except for the first view, which sq_member_start reports before it
 * returns. */
typedef void (*sq_view_fn)(void *arg, const sq_view *view);

/* Flags for sq_member_send and sq_member_reserve. */
enum { SQ_SEND_NONBLOCK = 1 };

/* Opens a member from an INI configuration file: parses and checks it, allocates the shared state
 * table. Nothing is connected yet. On error returns a negative code, *out is NULL, and when
 * `err` is not NULL a message naming the file, line and key is written to it. */
int sq_member_open(sq_member **out, const char *config_path, char *err, size_t err_size);

/* Registers the delivery callback. Must be called before sq_member_start. */
int sq_member_on_deliver(sq_member *m, sq_deliver_fn fn, void *arg);

/* Registers the view-change callback. Must be called before sq_member_start. */
int sq_member_on_view(sq_member *m, sq_view_fn fn, void *arg);

/* State transfer, per shard: when a view places a member in a shard it was not in (it joined, or
 * stood by until the shard needed it), the shard's donor (its lowest-ranked old member) runs
 * `save` for that subgroup and shard right after the old view's last delivery, returning the
 * state in a buffer from malloc (the library frees it); `load` runs at the newcomer before it
 * delivers anything in that shard. Must be registered before start/join. */
typedef int (*sq_state_save_fn)(void *arg, uint32_t subgroup, uint32_t shard, void **buf,
                                size_t *size);
typedef void (*sq_state_load_fn)(void *arg, uint32_t subgroup, uint32_t shard, const void *buf,
                                 size_t size);
int sq_member_on_state(sq_member *m, sq_state_save_fn save, sq_state_load_fn load, void *arg);

/* Persistent subgroups (delivery = persistent): called on the event-loop thread, in order, each
 * time the shard's persistence frontier advances: every version up to and including `version`
 * is on disk at every member of the shard (Paxos-durable). Must be registered before start. */
typedef void (*sq_persisted_fn)(void *arg, uint32_t subgroup, uint32_t shard, uint64_t version);
int sq_member_on_persisted(sq_member *m, sq_persisted_fn fn, void *arg);

/* When this member's own log of a persistent subgroup became durable past `version` (its flusher
 * finished the write and sync that covered it), in CLOCK_MONOTONIC microseconds; 0 when it is
 * not durable here yet, or was so long ago (many syncs back) that the member no longer knows.
 * Any thread; for latency traces. */
uint64_t sq_member_durable_time(sq_member *m, uint32_t subgroup, uint64_t version);

/* Reads this member's log of its shard of a persistent subgroup. `how`: SQ_LOG_EXACT (the entry
 * with version `key`), SQ_LOG_AT_OR_BEFORE (the latest entry with version <= `key`),
 * SQ_LOG_AT_TIME (the latest entry with timestamp <= `key`, microseconds since the epoch), or
 * SQ_LOG_AFTER (the first entry with version > `key`: iterate from 0 with the last version seen).
 * Fills *rec and copies up to `cap` payload bytes into `buf` (rec->size is the full size).
 * SQ_ENOTFOUND when there is no such entry, SQ_ENOTSUP for a subgroup that is not persistent
 * or that this member does not serve. Entries are readable once written to the file, which the
 * flusher does promptly; durable ones are those up to the persisted frontier. A running member
 * logs an update before it is delivered, and a view change may trim such an update: reads stop
 * at the last delivery here, so they never show one (logs opened with sq_member_open_logs show
 * all the member had logged when it stopped). */
enum { SQ_LOG_EXACT, SQ_LOG_AT_OR_BEFORE, SQ_LOG_AT_TIME, SQ_LOG_AFTER, SQ_LOG_FIRST };
typedef struct sq_record {
    uint64_t version;
    uint64_t timestamp;
    uint32_t sender_id;
    size_t size;
} sq_record;
int sq_member_log_get(sq_member *m, uint32_t subgroup, int how, uint64_t key, sq_record *rec,
                      void *buf, size_t cap);

/* For tools, without joining the group: opens the logs this member keeps under data_dir (one
 * per persistent subgroup; a torn last record is cut and reported through the log sink, damage
 * before it fails with the file and offset), so that sq_member_log_get reads them. Returns the
 * number of logs opened, or an error (details in sq_member_errmsg). Not with start/join. */
int sq_member_open_logs(sq_member *m);

/* Joins a running group instead of forming the first view: connects to the configured members,
 * asks to be added, waits for the view that adds it and for the state, then starts. A member that
 * was killed rejoins this way (as a new incarnation). SQ_ETIMEDOUT after `timeout_ms`. */
int sq_member_join(sq_member *m, int timeout_ms);

/* Point-to-point queries, answered outside the total order. The handler runs on the answering
 * member's event-loop thread: it writes at most `reply_cap` bytes to `reply`, sets *reply_len,
 * and returns 0 (or a negative SQ_E* code, which the asker gets back). Register before start. */
typedef int (*sq_query_fn)(void *arg, uint32_t from_id, const void *req, size_t req_size,
                           void *reply, size_t reply_cap, size_t *reply_len);
int sq_member_on_query(sq_member *m, sq_query_fn fn, void *arg);

/* Largest query or reply payload. */
#define SQ_QUERY_MAX_BYTES 4088u

/* Asks member `member_id` and waits up to `timeout_ms` for its answer, copied to `reply` (at
 * most `reply_cap` bytes; *reply_len gets the full size). SQ_EPEER if that member is not
 * reachable or fails meanwhile, SQ_ETIMEDOUT, SQ_EMSGSIZE, or the handler's error. Not from
 * callbacks. */
int sq_member_query(sq_member *m, uint32_t member_id, const void *req, size_t req_size, void *reply,
                    size_t reply_cap, size_t *reply_len, int timeout_ms);

/* Ordered calls: a request multicast in the total order, which every member handles at its
 * place in the order (so all handle the same calls in the same order, among the other messages)
 * and answers by a point-to-point reply. The handler runs on each member's event-loop thread and
 * works like a query handler. Register before start. */
typedef int (*sq_call_fn)(void *arg, const sq_message *call, void *reply, size_t reply_cap,
                          size_t *reply_len);
int sq_member_on_call(sq_member *m, sq_call_fn fn, void *arg);

/* One member's answer to an ordered call. */
typedef struct sq_reply {
    uint32_t member_id;
    int status;  /* 0, the handler's error, or SQ_EPEER if the member left first */
    size_t size; /* full size of the answer */
    uint8_t data[SQ_QUERY_MAX_BYTES];
} sq_reply;

/* Multicasts `req` as an ordered call and gathers one reply from each member of the view in
 * which it is delivered (this member included). Fills up to `max_replies` entries of `replies`
 * and sets *nreplies. Members that fail before answering are reported with SQ_EPEER. Blocks up
 * to `timeout_ms`. Not from callbacks. */
int sq_member_ordered_call(sq_member *m, const void *req, size_t req_size, sq_reply *replies,
                           uint32_t max_replies, uint32_t *nreplies, int timeout_ms);
/* The same in this member's shard of subgroup `subgroup`: the replies come from that shard's
 * members. */
int sq_member_ordered_call_in(sq_member *m, uint32_t subgroup, const void *req, size_t req_size,
                              sq_reply *replies, uint32_t max_replies, uint32_t *nreplies,
                              int timeout_ms);

/* Connects to every member of the configured first view and starts the event-loop thread.
 * Returns once the group is formed (every connection up), or SQ_ETIMEDOUT after
 * `timeout_ms` (a negative value waits forever). If the others already run (this member was
 * restarted), it joins them as sq_member_join does. */
int sq_member_start(sq_member *m, int timeout_ms);

/* Multicasts a copy of `data` to the shard. Blocks while this member's window is full or the view
 * is changing, unless `flags` has SQ_SEND_NONBLOCK, in which case it returns SQ_EAGAIN. A message
 * sent just before a failure may be dropped by the view change (see sq_view.dropped). SQ_EMSGSIZE
 * if `size` is larger than max_payload; SQ_ECLOSED if the member has failed or is closing. */
int sq_member_send(sq_member *m, const void *data, size_t size, int flags);

/* The same, to this member's shard of subgroup `subgroup` (an index from sq_member_subgroup;
 * sq_member_send is subgroup 0). While the view is inadequate (a shard below its min_members)
 * it blocks until members join, or returns SQ_EAGAIN with SQ_SEND_NONBLOCK. SQ_ENOTSUP when this
 * member stands by in that subgroup (every shard already has max_members). */
int sq_member_send_in(sq_member *m, uint32_t subgroup, const void *data, size_t size, int flags);

/* Multicasts copies of n messages (data[i], sizes[i]) to this member's shard of `subgroup`, in
 * order, as sq_member_send_in would one by one but taking the member's lock once. Returns 0 when
 * all went; else the error of the first that did not (SQ_EAGAIN with SQ_SEND_NONBLOCK when the
 * window is full), with *sent telling how many went before it. */
int sq_member_send_many(sq_member *m, uint32_t subgroup, uint32_t n, const void *const *data,
                        const size_t *sizes, int flags, uint32_t *sent);

/* Index of the subgroup named `name` in the configuration, or SQ_EINVAL. */
int sq_member_subgroup(const sq_member *m, const char *name);

/* Zero-copy send, step one: reserves the next slot of this member's window for a payload of
 * `size` bytes and returns a pointer to it in *buf (8-byte aligned, owned by the member). Fill it,
 * then call sq_member_commit. Only one reservation may be open at a time (SQ_EBUSY). */
int sq_member_reserve(sq_member *m, size_t size, void **buf, int flags);
/* Zero-copy send, step two: sends the reserved slot. SQ_EVIEWCHANGE when the view began to
 * change since the reservation: the message was not sent; reserve again. */
int sq_member_commit(sq_member *m);
/* Zero-copy send into subgroup `subgroup`; one reservation per subgroup may be open. */
int sq_member_reserve_in(sq_member *m, uint32_t subgroup, size_t size, void **buf, int flags);
int sq_member_commit_in(sq_member *m, uint32_t subgroup);

/* Number of messages (nulls excluded) this member has delivered so far. */
uint64_t sq_member_delivered(const sq_member *m);

/* This member's configured id, rank in the view and the number of members. */
uint32_t sq_member_id(const sq_member *m);
uint32_t sq_member_rank(const sq_member *m);
uint32_t sq_member_count(const sq_member *m);

/* Why the member stopped: 0 while it runs, SQ_EPARTITIONED when it found itself in a minority
 * partition, SQ_EREMOVED when the group removed it, or another error. */
int sq_member_failure(const sq_member *m);

/* What this member's failure detector saw since it started: how many members it suspected, by
 * cause (every suspicion is also logged at warn with its details), and how often its own event
 * loop did not run for half the heartbeat timeout or more (a stopped or descheduled process:
 * that time is not counted against the others). */
typedef struct sq_member_health {
    uint64_t suspected_heartbeat; /* a member whose heartbeat stayed still past the timeout */
    uint64_t suspected_link;      /* a member whose link failed or closed */
    uint64_t suspected_relayed;   /* adopted from another member's suspicion */
    uint64_t own_stalls;
    uint64_t longest_stall_ms;
    uint32_t heartbeat_timeout_ms;
} sq_member_health;
int sq_member_get_health(const sq_member *m, sq_member_health *out);

/* Bytes of large messages (those above a subgroup's max_smc_payload) this member has written to
 * other members since it started, as sender and as forwarder: with the chain schedule a message
 * of B bytes costs its sender B and the group (members - 1) * B in all. */
uint64_t sq_member_large_bytes_sent(const sq_member *m);

/* The current view id. */
uint32_t sq_member_view_id(const sq_member *m);

/* The reason for the last error on this member, or "" (owned by the member). */
const char *sq_member_errmsg(const sq_member *m);

/* Waits until every message this member sent has been delivered here, or `timeout_ms` passes
 * (SQ_ETIMEDOUT). Useful before close so a member does not leave with messages in flight. */
int sq_member_drain(sq_member *m, int timeout_ms);

/* Waits until every member has delivered everything this member has delivered, or
 * `timeout_ms` passes (SQ_ETIMEDOUT): a clean point at which to stop a finite run. */
int sq_member_quiesce(sq_member *m, int timeout_ms);

/* Leaves the group cleanly: the others install a view without this member (as after a failure,
 * but at once, with no timeout). Returns once they have, or after `timeout_ms` (SQ_ETIMEDOUT);
 * the member no longer delivers or sends. Then call sq_member_close. */
int sq_member_leave(sq_member *m, int timeout_ms);

/* Stops the event loop, closes every connection and frees the member. Safe on NULL. Without a
 * leave first, the others see this member fail. */
void sq_member_close(sq_member *m);

#ifdef __cplusplus
}
#endif
#endif
