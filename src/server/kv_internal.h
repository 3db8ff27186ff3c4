/* kv_internal.h: what the pieces of a member's key-value service share (src/server/kv*.c).
 *
 *   kvserver.c   creating, starting and stopping the service; the service thread's loop
 *   kv_conn.c    the binary client protocol front end: connections, framing, request dispatch
 *   kv_route.c   requests on keys and pools: checks, routing key -> pool -> shard -> member
 *   kv_relay.c   requests in flight: local ops, relays to other members, fan-out aggregation
 *   kv_read.c    reads from this member's stores and log: get, list, history
 *   kv_watch.c   watches: registration with replay, events, unwatch
 *   kv_apply.c   the member's callbacks (loop thread) applying ops, and the answers they hand over
 *   kv_status.c  the status answer
 *   kv_metrics.c the counters of requests and their latencies, and the metrics answer
 *
 * Between them pass the one struct sq_kv_server (what is under `mu` is shared with the loop
 * thread), the dones the loop thread hands to the service thread, the entries of the requests in
 * flight and the connections, by id: a front end decodes a request and calls the service
 * operations (sq__kvs_key_request, sq__kvs_pool_create, ...), which answer on the connection it
 * came from (sq__kvs_conn_send, sq__kvs_reply_err). Threads and locking: see kvserver.c. */
#ifndef SQ_KV_INTERNAL_H
#define SQ_KV_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "kv/buf.h"
#include "kv/store.h"
#include "kv/wire.h"
#include "squall.h"

#define MAX_POOLS 64
#define MAX_POOL_PATH 255
#define ENTRY_BUCKETS 8192u
#define WATCH_BUCKETS (1u << 17)

struct conn {
    struct conn *next;
    uint64_t id;
    int fd;
    bool relay;      /* ours, to another member's client port */
    uint32_t member; /* relay: that member */
    bool want_out;
    bool dead;
    uint8_t host[17]; /* accepted: the peer's address family and address ([kv] limits) */
    struct ssl_st *ssl;     /* TLS ([tls] in the config), or NULL (kv_tls.c) */
    bool tls_want_write;    /* TLS waits for the socket to take bytes (a handshake's, or ours) */
    bool tls_read_blocked;  /* ...and it was a read that wrote: read again once writable */
    struct watch *watches;  /* registered by this client connection */
    struct sq__buf in, out; /* out.off: what was sent already */
    bool peer;              /* another member relays to us on it: not counted as a client's */
    struct pending *pend;   /* when its requests came (the latency metrics), or NULL */
    /* An in-process client of this member (the HTTP front end; fd is -1): its requests are
     * handled on its caller's thread under svc_mu, and each answer goes to `answer` (under
     * svc_mu, from whichever thread sends it) instead of into a socket. */
    void (*answer)(void *arg, const struct sq_kv_frame *f);
    void *answer_arg;
};

/* Requests of a connection waiting for their answer, by req_id modulo PENDING_SLOTS: when each
 * was read. A slot taken by a later request loses the earlier one's time (it is not measured);
 * the client library keeps far fewer than PENDING_SLOTS in flight. */
#define PENDING_SLOTS 128
struct pending {
    uint64_t req_id[PENDING_SLOTS];
    uint64_t at_us[PENDING_SLOTS];
};

/* Request counters (service thread, under svc_mu): by op and result, and latency histograms of
 * put, remove and get, from the request's frame read to its answer queued. */
enum { RES_OK, RES_CONFLICT, RES_NOT_FOUND, RES_INVALID, RES_UNAVAILABLE, RES_OTHER, RES_N };
#define LAT_BUCKETS 17
enum { LAT_PUT, LAT_REMOVE, LAT_GET, LAT_N };
struct kv_stats {
    uint64_t ops[SQ_KV_OP_MAX + 1][RES_N];
    uint64_t lat[LAT_N][LAT_BUCKETS + 1]; /* the last one: above every bound */
    uint64_t lat_sum_us[LAT_N], lat_count[LAT_N];
    uint64_t events;     /* watch events sent to clients */
    uint64_t accepted;   /* client connections accepted */
    uint64_t tls_failed; /* TLS handshakes that failed (a client's, or a relay's) */
    uint64_t refused;    /* connections closed at once: [kv] max_connections(_per_host) */
};

struct pool {
    char path[MAX_POOL_PATH + 1];
    uint16_t len;
    uint32_t sg;
    uint32_t shards;
    uint64_t client, req_id; /* the request that created it: a retry of it is not a conflict */
};

/* Gathers the answers of one request fanned out to every shard of a pool (list, prefix
 * watch). */
struct agg {
    uint64_t origin, client, req_id;
    uint8_t op;
    int remaining;
    int status;
    char msg[200];
    struct sq__buf items;
    uint32_t nitems;
};

/* A request in flight: a local op waiting for its delivery (opbuf), or a relayed request
 * waiting for another member's answer (via). */
struct entry {
    struct entry *next;  /* hash chain by (client, req_id) */
    struct entry *onext; /* outbox */
    uint64_t client, req_id;
    uint64_t origin; /* connection the answer goes to */
    uint64_t via;    /* relay connection, or 0 for a local op */
    struct agg *agg;
    uint8_t op;
    bool watch;     /* relayed watch: stays until unwatched */
    bool queued;    /* in the outbox */
    bool delivered; /* a local op delivered, waiting to be persisted: never resent */
    uint32_t sg;
    uint8_t *opbuf;
    size_t oplen;
    uint64_t created_ms;
    bool traced;                /* SQ_KV_F_TRACE: the answer carries the stage times */
    uint64_t tr_recv, tr_mcast; /* when the frame was read, and the op multicast */
};

/* Handed from the loop thread to the service thread. */
enum { DONE_ANSWER, DONE_EVENT, DONE_DELIVERED };
struct done {
    struct done *next;
    uint8_t kind;
    bool from_log; /* a stable read of an older version: the value is read from the log */
    uint32_t sg;
    uint64_t client, req_id;
    uint64_t msg_version; /* the delivered op's version: persistence is awaited up to it */
    int status;
    uint32_t flags; /* SQ_KV_F_DELETED */
    uint64_t version, timestamp;
    uint32_t count;
    char *key;
    uint16_t key_len;
    void *value;
    uint32_t size;
    uint64_t tr_deliver, tr_persist; /* while traced ops are in flight (ntraced): their times */
};

struct watch {
    struct watch *next, **pprev;   /* bucket chain */
    struct watch *cnext, **cpprev; /* its connection's watches */
    uint64_t conn, client, req_id;
    uint32_t sg;
    char *target;
    uint16_t len;
    bool prefix;
    uint64_t live_after; /* events up to this version were replayed */
    uint32_t shard;      /* events carry it: versions count per shard */
};

struct sq_kv_server {
    sq_member *m; /* NULL while detached (the member failed; its next incarnation not in) */
    struct sq_config cfg;
    struct ssl_ctx_st *tls_accept, *tls_relay; /* with [tls]: for clients, for relays */
    uint64_t refused_logged_ms;                 /* when a refused connection was last logged */
    uint64_t tls_logged_ms;                     /* when a failed TLS handshake was last logged */
    uint32_t my_id;
    int meta;
    uint32_t client_port;
    pthread_mutex_t mu;
    /* under mu */
    struct sq_kv_store *store[SQ_MAX_SUBGROUPS];
    uint32_t store_shard[SQ_MAX_SUBGROUPS];
    uint32_t view_id, nmembers, adequate;
    uint32_t ids[SQ_MAX_MEMBERS];
    uint32_t my_shard[SQ_MAX_SUBGROUPS];
    uint32_t shard_of[SQ_MAX_SUBGROUPS * SQ_MAX_MEMBERS];
    bool have_view;
    bool meta_ready; /* the pool table is this member's (not waiting for a newcomer's state) */
    uint64_t persisted[SQ_MAX_SUBGROUPS]; /* 1 + the frontier */
    struct pool pools[MAX_POOLS];
    uint32_t npools;
    struct done *wait_head[SQ_MAX_SUBGROUPS], *wait_tail[SQ_MAX_SUBGROUPS];
    struct done *ready_head, *ready_tail;
    bool resend;
    uint64_t nwatches;
    atomic_uint ntraced; /* traced local ops in flight: the loop thread then stamps times */
    /* The service thread's state below (connections, requests in flight, watches) is under
     * svc_mu: the service thread holds it except while it waits for events, and the loop
     * thread takes it when free to send the answers it just made ready itself (sq__kvs_help),
     * which saves waking the service thread for them. */
    pthread_mutex_t svc_mu;
    bool svc_open; /* under svc_mu: the service runs (the loop thread may help) */
    /* service thread */
    int lfd, efd, ep;
    pthread_t thread;
    bool started;
    atomic_bool stop;
    struct conn *conns;
    uint64_t next_conn;
    struct entry *ents[ENTRY_BUCKETS];
    struct entry *outbox, *outbox_tail;
    struct watch **wb;
    uint8_t *logbuf;
    size_t logcap;
    uint64_t last_sweep_ms;
    uint64_t frame_recv_us; /* the frame being handled was traced: when it was read */
    struct kv_stats stats;
    bool mu_ready;
    /* Rejoining: from the member's failure to its next incarnation's first view, every request
     * is answered SQ_ENOQUORUM with `detached_why`, so that clients go to another member. */
    atomic_bool detached;
    char detached_why[200]; /* under mu */
    bool detach_req;        /* under mu: squalld asks the service thread to detach */
    pthread_cond_t detach_cv;
};

/* ---- kvserver.c ---- */

/* Wakes the service thread: dones are ready, or it is to stop. */
void sq__kvs_wake(struct sq_kv_server *s);

/* Whether this member is out of the group now: detached (rejoining), or its member failed and
 * squalld has not detached the service yet. Requests are then answered without the member. */
bool sq__kvs_out_of_group(struct sq_kv_server *s);

/* ---- kv_conn.c ---- */

/* The live connection with that id, or NULL (closed, or dead and waiting to be freed). */
struct conn *sq__kvs_conn_by_id(struct sq_kv_server *s, uint64_t id);

/* Sends what the connection has queued, as far as the socket takes it. */
void sq__kvs_conn_flush(struct sq_kv_server *s, struct conn *c);

/* Queues a frame on a connection (flushed by the service loop). */
void sq__kvs_conn_send(struct sq_kv_server *s, struct conn *c, const struct sq_kv_frame *f);

/* Answers request (client, req) on connection `conn` with an error status and a message. */
void sq__kvs_reply_err(struct sq_kv_server *s, uint64_t conn, uint8_t op, uint64_t client,
                       uint64_t req, int status, uint64_t version, const char *fmt, ...)
    __attribute__((format(printf, 8, 9)));

/* Registers a connection on `fd` (accepted, or a relay to `member` being connected); closes
 * `fd` and returns NULL on failure. */
struct conn *sq__kvs_conn_new(struct sq_kv_server *s, int fd, bool relay, uint32_t member);

/* Accepts every pending client connection on the listening socket. */
void sq__kvs_accept(struct sq_kv_server *s);

/* A connection is gone: what waited on it is answered or dropped. */
void sq__kvs_conn_close(struct sq_kv_server *s, struct conn *c);

/* Reads what the socket has and handles every whole frame in it. */
void sq__kvs_conn_read(struct sq_kv_server *s, struct conn *c);

/* ---- kv_metrics.c ---- */

/* A request frame was read from client connection c: its time is kept for its answer. */
void sq__kvs_stat_request(struct sq_kv_server *s, struct conn *c, const struct sq_kv_frame *f);

/* An answer (or event) is queued on connection c: counted by op and result. */
void sq__kvs_stat_answer(struct sq_kv_server *s, struct conn *c, const struct sq_kv_frame *f);

/* STATUS with SQ_KV_F_METRICS: this member's metrics in Prometheus' text format. */
void sq__kvs_metrics(struct sq_kv_server *s, struct conn *c, const struct sq_kv_frame *f);

/* ---- kv_route.c ---- */

/* The name of a store type: volatile, persistent or trigger. */
const char *sq__kvs_store_name(int t);

/* A request on a key or a prefix (put, get, remove, list, history, watch): checked, routed to
 * the key's shard (or every shard of the pool) and answered here or relayed. */
void sq__kvs_key_request(struct sq_kv_server *s, struct conn *c, const struct sq_kv_frame *f);

/* POOL_CREATE: checked here, then multicast into the metadata subgroup (or relayed to a member
 * of it). */
void sq__kvs_pool_create(struct sq_kv_server *s, struct conn *c, const struct sq_kv_frame *f);

/* POOL_LIST: the pool table, answered from this member's copy. */
void sq__kvs_pool_list(struct sq_kv_server *s, struct conn *c, const struct sq_kv_frame *f);

/* ---- kv_relay.c ---- */

/* The bucket of s->ents that holds the entries of request (client, req). */
uint32_t sq__kvs_ent_bucket(uint64_t client, uint64_t req);

/* Unlinks an entry from its bucket (and the outbox) and frees it; its aggregate is not touched. */
void sq__kvs_entry_free(struct sq_kv_server *s, struct entry *e);

/* Queues a local op behind the others waiting to be multicast (nothing if queued already). */
void sq__kvs_outbox_push(struct sq_kv_server *s, struct entry *e);

/* Multicasts an op into this member's shard of `sg`; the answer comes at its delivery. */
void sq__kvs_local_op(struct sq_kv_server *s, uint64_t conn, const struct sq_kv_frame *f,
                      uint32_t sg, const struct sq_kv_op *op);

/* Multicasts the queued local ops in order, until one cannot go yet (the window is full or the
 * view is changing). */
void sq__kvs_flush_outbox(struct sq_kv_server *s);

/* Sends the request on to `member`, which answers from its shard; the answer comes back to
 * `origin` (or into `agg`). */
void sq__kvs_relay(struct sq_kv_server *s, uint64_t origin, const struct sq_kv_frame *f,
                   uint32_t member, struct agg *agg);

/* An answer or event from a member we relayed to. */
void sq__kvs_relay_answer(struct sq_kv_server *s, struct conn *rc, const struct sq_kv_frame *a);

/* Answers a fanned-out request once every shard did, and frees the aggregate. */
void sq__kvs_agg_finish(struct sq_kv_server *s, struct agg *agg);

/* One shard's answer `a` to a fanned-out request; the last one answers the client. */
void sq__kvs_agg_part(struct sq_kv_server *s, struct agg *agg, const struct sq_kv_frame *a);

/* Fills `buf` with a traced answer's stage times (SQ_KV_TRACE_FORMAT; the answer time is now)
 * and returns its length. */
uint16_t sq__kvs_trace_text(char *buf, size_t size, uint64_t recv, uint64_t mcast, uint64_t deliver,
                            uint64_t durable, uint64_t persist);

/* ---- kv_read.c ---- */

/* Reads the value of an older version from this member's log (it may still be on its way to
 * the file: the flusher writes promptly). */
int sq__kvs_read_logged(struct sq_kv_server *s, uint32_t sg, uint64_t version, const void **val,
                        uint32_t *len);

/* A get answered from this member's store (and log, for an older version). */
void sq__kvs_answer_get(struct sq_kv_server *s, struct conn *c, const struct sq_kv_frame *f,
                        uint32_t sg);

/* Items of this member's shard for list or history; appended to `b`. */
int sq__kvs_local_items(struct sq_kv_server *s, const struct sq_kv_frame *f, uint32_t sg,
                        struct sq__buf *b, uint32_t *n, char *why, size_t why_size);

/* Answers a list (items sorted by key) or a history (items in version order). */
void sq__kvs_send_items(struct sq_kv_server *s, uint64_t conn, const struct sq_kv_frame *f,
                        struct sq__buf *b, uint32_t n);

/* ---- kv_watch.c ---- */

/* Sends an update (a DONE_EVENT) to every watch on its key or on a prefix of it. */
void sq__kvs_dispatch_event(struct sq_kv_server *s, const struct done *d);

/* Registers a watch on this member's shard and replays what it missed; `ack` sends the watch's
 * answer (a fanned-out watch is acknowledged by the aggregate). Returns 0 or the error, which
 * was answered when `ack`. */
int sq__kvs_watch_local(struct sq_kv_server *s, uint64_t conn, const struct sq_kv_frame *f,
                        uint32_t sg, bool ack, char *why, size_t why_size);

/* Removes the watches of a connection (all, or the one with req_id when one is true). */
void sq__kvs_unwatch(struct sq_kv_server *s, uint64_t conn, bool one, uint64_t client,
                     uint64_t req_id);

/* Removes the watch (client, req_id) of a connection: here and at the members it was relayed
 * to (an aggregate still waiting for them is answered, to nobody). */
void sq__kvs_drop_watch(struct sq_kv_server *s, uint64_t conn, uint64_t client, uint64_t req_id);

/* ---- kv_apply.c ---- */

/* The member's delivery callback (loop thread): applies an op to its shard's store in the
 * shard's order, and hands the answer to an op of this member's, and the event for watchers,
 * to the service thread. */
void sq__kvs_on_deliver(void *arg, const sq_message *msg);

/* The persistence callback (loop thread): the answers that waited for every member to persist
 * up to `version` go to the service thread. */
void sq__kvs_on_persisted(void *arg, uint32_t sg, uint32_t shard, uint64_t version);

/* The view callback (loop thread): the new members and shard layout; a store this member no
 * longer serves, or waits for the state of, is dropped; ops the change dropped are resent. */
void sq__kvs_on_view(void *arg, const sq_view *v);

/* The state callbacks (loop thread): save_state hands the pool table, or this member's store
 * of a shard, to a member new to it (in a buffer from malloc, freed by the library); load_state
 * installs it there. */
int sq__kvs_save_state(void *arg, uint32_t sg, uint32_t shard, void **buf, size_t *size);
void sq__kvs_load_state(void *arg, uint32_t sg, uint32_t shard, const void *buf, size_t size);

/* Answers and events handed over by the loop thread (svc_mu held). On the loop thread
 * (`loop`): only when none needs a member call (a value read from the log) and no view change
 * asks to resend ops; false then, and the service thread does it. */
bool sq__kvs_process_dones(struct sq_kv_server *s, bool loop);

/* The loop thread made answers ready: it sends them itself if the service thread is not busy
 * (svc_mu free), else wakes it. */
void sq__kvs_help(struct sq_kv_server *s);

/* ---- kv_status.c ---- */

/* Answers STATUS on `c`: the view, the subgroups and shards, this member's versions and the
 * pools; as JSON when the request has SQ_KV_F_JSON. */
void sq__kvs_status(struct sq_kv_server *s, struct conn *c, const struct sq_kv_frame *f);

/* Under svc_mu: sends what the connections have queued and closes the dead ones; whether some
 * answer is still queued (a socket that did not take it all). */
bool sq__kvs_flush_conns(struct sq_kv_server *s);

/* Answers request f on c with the text in b as its value, and frees b. */
void sq__kvs_send_text(struct sq_kv_server *s, struct conn *c, const struct sq_kv_frame *f,
                       struct sq__buf *b);

/* kv_tls.c: TLS on the client port, all under svc_mu. */

/* What sq__kvs_tls_recv and sq__kvs_tls_send return when they move no bytes. */
enum { SQ_TLS_WANT_READ = -1, SQ_TLS_WANT_WRITE = -2, SQ_TLS_CLOSED = -3 };
/* Makes the TLS contexts from [tls] (nothing without cert_file); SQ_ECONFIG naming the file
 * that is bad. */
int sq__kvs_tls_init(struct sq_kv_server *s, char *err, size_t err_size);
void sq__kvs_tls_free(struct sq_kv_server *s);
/* Gives a new connection (accepted, or a relay) its TLS session when the member has TLS. */
int sq__kvs_tls_start(struct sq_kv_server *s, struct conn *c);
/* Frees a connection's TLS session (before its socket is closed). */
void sq__kvs_tls_drop(struct conn *c);
/* Reads or writes up to n bytes (a handshake goes first): the bytes moved, or SQ_TLS_*; the
 * end of a failed handshake is logged. sq__kvs_tls_send with n == 0 drives a handshake only. */
long sq__kvs_tls_recv(struct sq_kv_server *s, struct conn *c, void *buf, size_t n);
long sq__kvs_tls_send(struct sq_kv_server *s, struct conn *c, const void *buf, size_t n);

#endif
