/* client_internal.h: what the pieces of the key-value client library (src/client/client*.c)
 * share.
 *
 *   client.c     the public calls (include/squall/client.h): open and close, the blocking calls
 *                built on the asynchronous ones, the request options, watches
 *   client_io.c  the table of calls in flight, the connection to a member, the I/O thread that
 *                sends, receives, retries and expires
 *
 * Between them pass the one struct sq_client (what is under `mu` is shared with the I/O thread)
 * and its calls: a public call encodes a request and hands it to sq__client_submit; the I/O
 * thread (sq__client_io_main) sends it, resends it after a failure and runs its callback. */
#ifndef SQ_CLIENT_INTERNAL_H
#define SQ_CLIENT_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kv/buf.h"
#include "kv/wire.h"
#include "client/client_tls.h"
#include "squall/client.h"

#define MAX_MEMBERS 32
#define CALL_BUCKETS 4096u
#define WATCH_BUCKETS 65536u /* established watches: a client may hold 100,000s */
/* SQ_CLIENT_WATCH_SHARDS (client.h): the most shards a subgroup has (config.h SQ_MAX_SHARDS) */

struct call {
    struct call *next;
    uint64_t req_id;
    uint8_t op;
    uint8_t *frame; /* the encoded request, resent after a failure */
    size_t len;
    sq_kv_done_fn done;
    void *arg;
    sq_watch_fn wfn;
    void *warg;
    bool watch, acked, sent;
    bool cancelled; /* unwatched: no more events, never registered again */
    /* watches: by shard, the version after the last event delivered (versions count per
     * shard); sent again, in the request's value, when the client watches again */
    uint64_t next_from[SQ_CLIENT_WATCH_SHARDS];
    uint64_t deadline_ms;
    uint64_t retry_at_ms;
    bool trace;              /* SQ_KV_F_TRACE: the result carries where the time went */
    uint64_t t_call, t_sent; /* traced: when it was called, and first went into the socket */
};

/* A member's own front end (HTTP) reaches that member's service in-process: a blocking request
 * call (no watch) made while the client's member is the first of its list goes to
 * request(arg, conn, frame, len) on the caller's thread instead of into the socket (0: handled;
 * else it goes into the socket), and its answers come back through sq__client_direct_answer.
 * Everything else (retries, another member after SQ_ENOQUORUM, watches, timeouts) is as over
 * the socket, with the same request numbers. close(arg, conn) runs in sq_client_close, before
 * the client is freed; after it no answer may arrive. */
struct sq__client_direct {
    int (*request)(void *arg, uint64_t conn, const uint8_t *frame, size_t len);
    void (*close)(void *arg, uint64_t conn);
    void *arg;
    uint64_t conn;
};

struct sq_client {
    char host[MAX_MEMBERS][256];
    char port[MAX_MEMBERS][8];
    uint32_t nmembers, cur;
    int fd;
    bool connected;
    /* TLS (sq_client_open_tls), or NULL. ssl is the connection's; tls_mu serializes its reads
     * (the reader, outside mu) with its writes (under mu). ssl_next: try_connect's result. */
    struct ssl_ctx_st *tls;
    struct ssl_st *ssl, *ssl_next;
    pthread_mutex_t tls_mu;
    bool tls_why; /* why[cur] holds a TLS failure: disconnect keeps it */
    uint32_t member_id;
    uint64_t client_id;
    uint64_t next_req;
    int timeout_ms;
    pthread_mutex_t mu;
    pthread_t io;
    int wake[2];
    bool stop;
    struct call *calls[CALL_BUCKETS]; /* requests, and watches not yet established */
    struct call **watches;            /* established watches, WATCH_BUCKETS chains */
    uint32_t nretry;                  /* established watches waiting to ask again */
    uint32_t ncalls;
    uint32_t nwatching; /* established watches among ncalls: they do not count as in flight */
    uint64_t win_base;  /* requests in flight (watches excluded): bit i of win_mask is */
    uint64_t win_mask;  /* request win_base + i, all within SQ_CLIENT_MAX_INFLIGHT ids */
    /* by member: why it could not be used last (a name that does not resolve, a refused
     * connection, a connection closed at the hello), and how many connections in a row it
     * closed before answering the hello */
    char why[MAX_MEMBERS][200];
    uint8_t hello_misses[MAX_MEMBERS];
    struct call *in_callback; /* the watch whose callback the I/O thread runs now */
    pthread_cond_t cb_done;   /* signalled when that callback returns */
    struct sq__buf out, in;
    uint64_t next_connect_ms;
    _Atomic uint64_t
        heard_ms; /* when the member last sent anything, or when requests began waiting */
    bool probed;  /* a hello went out to a silent member (the I/O thread's) */
    /* traced requests queued in `out` and not yet in the socket (their sent time is taken when
     * `out` empties); past 8 at once, the rest go untimed */
    uint64_t tr_unsent[8];
    uint32_t ntr_unsent;
    /* Who reads the socket: the I/O thread, or a blocking caller whose call is the only one in
     * flight (sq__client_take_reader): it reads its answer itself, which saves two thread
     * wake-ups. io_reading: the I/O thread is reading now (the caller waits its turn). */
    bool reader_busy, io_reading;
    struct sq__buf deferred; /* frames a reader left to the I/O thread (see defer_frame) */
    /* By request op: whether the answer came within the reader's spin, the last 8 times it
     * spun (bit set: it did), and calls since it last spun anyway (see call_wait). */
    _Atomic uint8_t spin_hits[SQ_KV_OP_MAX + 1];
    _Atomic uint8_t spin_skipped[SQ_KV_OP_MAX + 1];
    struct sq__client_direct direct; /* request == NULL: none (set before the first call) */
    uint64_t conn_gen;               /* connections dropped so far (under mu) */
    /* an in-process answer said this member is out of the group while the client was on
     * connection leave_gen: the I/O thread drops that connection (under mu) */
    bool leave_first;
    uint64_t leave_gen;
};

/* The monotonic clock, in milliseconds. */
uint64_t sq__client_now_ms(void);

/* Wakes the I/O thread (a byte down c->wake). */
void sq__client_wake(sq_client *c);

/* Under mu: where the call with request id `req` is linked (a request or either kind of watch),
 * or the empty link at the end of its watch chain when there is none. */
struct call **sq__client_slot_of(sq_client *c, uint64_t req);

/* Under mu: takes k out of the table (the caller frees it). */
void sq__client_call_unlink(sq_client *c, struct call *k);

/* sq_client_open, connecting to the first member of the list first (not to a random one): the
 * HTTP front end of a member goes to that member, so that its requests take no extra hop. */
int sq__client_open_first(sq_client **out, const char *members, int timeout_ms,
                          const sq_client_tls *tls, char *err, size_t err_size);

/* Queues one request; `done` runs once with its result (on the I/O thread). A watch passes its
 * event callback `wfn`. SQ_EAGAIN when SQ_CLIENT_MAX_INFLIGHT requests are in flight. A blocking
 * call passes `direct`: it may then go to c->direct (and *direct says whether it did; its answer
 * then never comes through the socket). */
int sq__client_submit(sq_client *c, struct sq_kv_frame *f, sq_kv_done_fn done, void *arg,
                      sq_watch_fn wfn, void *warg, uint64_t *req_out, bool *direct);

/* Whether c uses the first member of its list now (connected to it, or connecting). */
bool sq__client_on_first(sq_client *c);

/* Sets c's in-process path (see struct sq__client_direct); before the client's first call. */
void sq__client_set_direct(sq_client *c, const struct sq__client_direct *d);

/* An answer to a request that went to c->direct (the frame is valid during the call only). */
void sq__client_direct_answer(void *c, const struct sq_kv_frame *f);

/* Connects to member i: a socket, or -1 with the reason in c->why[i]. */
int sq__client_try_connect(sq_client *c, uint32_t i);

/* Makes c->tls from the caller's files (sq_client_open_tls); SQ_EINVAL naming a bad one. */
int sq__client_tls_ctx(sq_client *c, const sq_client_tls *t, char *err, size_t err_size);

/* Queues the client hello on a fresh connection. */
void sq__client_queue_hello(sq_client *c);

/* The callback of blocking calls (client.c): it only wakes the caller, so any thread may run it. */
void sq__client_waiter_done(void *arg, const sq_kv_result *res);

/* A blocking caller whose call (and no other, and no watch) is in flight becomes the socket's
 * reader: true, and the I/O thread leaves the socket alone until sq__client_drop_reader. */
bool sq__client_take_reader(sq_client *c);
void sq__client_drop_reader(sq_client *c);

/* The reader (see above) waits up to `ms` for the member's frames and handles them; false when
 * nothing came or the connection ended (then the I/O thread takes over). With spin_us > 0 it
 * first polls the socket without sleeping for that long; *spun_in tells whether a frame came
 * within it. */
bool sq__client_read_wait(sq_client *c, int ms, int spin_us, bool *spun_in);

/* The I/O thread (arg: the sq_client). */
void *sq__client_io_main(void *arg);

#endif
