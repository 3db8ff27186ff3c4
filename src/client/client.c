/* client.c: the key-value client library (include/squall/client.h): one TCP connection to a
 * member, an I/O thread that sends, receives and retries, and blocking calls built on the
 * asynchronous ones. */
#include "squall/client.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "kv/buf.h"
#include "kv/wire.h"

#define MAX_MEMBERS 32
#define CALL_BUCKETS 4096u
#define WATCH_BUCKETS 65536u /* established watches: a client may hold 100,000s */
#define RETRY_MS 50          /* between attempts after a retriable answer or a lost member */
/* A member that closed this many connections in a row before answering the client hello does
 * not speak the protocol (a group port given as a client port, say): when every member of the
 * list is such, calls fail at once instead of at their timeout. */
#define HELLO_MISSES_MAX 3
#define CONNECT_TIMEOUT_MS 1000
/* A member that says nothing for this long while requests wait for it is stalled (stopped,
 * descheduled, hung): the client moves to the next member and sends them again there (the
 * at-most-once table makes the resend safe). Watches alone do not count: they may be silent. */
#define SILENT_MEMBER_MS 2000
#define SQ_CLIENT_WATCH_SHARDS 16 /* the most shards a subgroup has (config.h SQ_MAX_SHARDS) */

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
};

struct sq_client {
    char host[MAX_MEMBERS][256];
    char port[MAX_MEMBERS][8];
    uint32_t nmembers, cur;
    int fd;
    bool connected;
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
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void wake(sq_client *c)
{
    char x = 1;
    ssize_t w = write(c->wake[1], &x, 1);
    (void)w; /* a full pipe wakes the thread as well */
}

void sq_kv_result_free(sq_kv_result *r)
{
    if (r != NULL) {
        free(r->value);
        r->value = NULL;
        r->size = 0;
        r->cap_ = 0;
    }
}

int sq_kv_next_item(const sq_kv_result *r, size_t *pos, sq_kv_item *item)
{
    struct sq_kv_item_raw it;
    int rc = sq__kv_item_next(r->value, r->size, pos, &it);
    if (rc == SQ_ENOTFOUND) {
        return 0;
    }
    if (rc != 0) {
        return rc;
    }
    *item = (sq_kv_item){.key = it.key,
                         .key_len = it.key_len,
                         .version = it.version,
                         .timestamp = it.timestamp,
                         .size = it.size,
                         .deleted = it.flags & 1};
    return 1;
}

/* ---- calls (under mu) ---- */

static struct call **slot_of(sq_client *c, uint64_t req)
{
    struct call **pc = &c->calls[req % CALL_BUCKETS];
    while (*pc != NULL && (*pc)->req_id != req) {
        pc = &(*pc)->next;
    }
    if (*pc != NULL) {
        return pc;
    }
    pc = &c->watches[req % WATCH_BUCKETS];
    while (*pc != NULL && (*pc)->req_id != req) {
        pc = &(*pc)->next;
    }
    return pc;
}

/* Every call: requests and both kinds of watch (the watches only when `watches`). */
#define FOR_EACH_CALL(c, k, watches_too)                                                           \
    for (uint32_t b_ = 0; b_ < CALL_BUCKETS + ((watches_too) ? WATCH_BUCKETS : 0); b_++)           \
        for (struct call *k = b_ < CALL_BUCKETS ? (c)->calls[b_]                                   \
                                                : (c)->watches[b_ - CALL_BUCKETS];                 \
             k != NULL; k = k->next)

/* The window of request ids in flight, kept as calls start and end (no scan on the hot path):
 * ids stay within SQ_CLIENT_MAX_INFLIGHT of each other, so a retry always falls in a shard's
 * window of remembered answers. */
static uint64_t oldest_request(const sq_client *c)
{
    return c->win_mask != 0 ? c->win_base : c->next_req + 1;
}

static void window_add(sq_client *c, uint64_t id)
{
    if (c->win_mask == 0) {
        c->win_base = id;
    }
    c->win_mask |= 1ull << (id - c->win_base);
}

static void window_done(sq_client *c, const struct call *k)
{
    if (k->watch || k->req_id < c->win_base || k->req_id - c->win_base >= 64) {
        return;
    }
    c->win_mask &= ~(1ull << (k->req_id - c->win_base));
    while (c->win_mask != 0 && !(c->win_mask & 1)) {
        c->win_mask >>= 1;
        c->win_base++;
    }
}

static void call_unlink(sq_client *c, struct call *k)
{
    struct call **pc = slot_of(c, k->req_id);
    if (*pc == k) {
        *pc = k->next;
        c->ncalls--;
        window_done(c, k);
        c->nwatching -= k->watch && k->acked;
        c->nretry -= k->acked && k->retry_at_ms != 0;
    }
}

static void queue_frame(sq_client *c, struct call *k)
{
    if (c->connected && sq__buf_reserve(&c->out, k->len) == 0) {
        memcpy(c->out.p + c->out.len, k->frame, k->len);
        c->out.len += k->len;
        k->sent = true;
    }
}

/* A watch asks again, per shard, from the version after the last event it delivered. */
static void watch_from(struct call *k)
{
    uint8_t *p = k->frame + k->len - 8u * SQ_CLIENT_WATCH_SHARDS;
    for (int s = 0; s < SQ_CLIENT_WATCH_SHARDS; s++) {
        for (int i = 0; i < 8; i++) {
            p[8 * s + i] = (uint8_t)(k->next_from[s] >> (8 * i));
        }
    }
}

/* ---- connection ---- */

/* Records why member i could not be used (formatted apart: gcc cannot tell c->why[i] from
 * c->host[i] among the arguments). */
static void set_why(sq_client *c, uint32_t i, const char *fmt, ...)
{
    char tmp[sizeof(c->why[0])];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    memcpy(c->why[i], tmp, sizeof(tmp));
}

static void disconnect(sq_client *c)
{
    if (c->connected && c->member_id == UINT32_MAX) {
        uint32_t i = c->cur;
        c->hello_misses[i] += c->hello_misses[i] < UINT8_MAX;
        set_why(c, i,
                "%s:%s does not speak squall's client protocol (it closed the connection "
                "at the client hello): a group port, not a client_port?",
                c->host[i], c->port[i]);
    }
    if (c->fd >= 0) {
        close(c->fd);
    }
    c->fd = -1;
    c->connected = false;
    c->member_id = UINT32_MAX;
    c->out.len = c->out.off = 0;
    c->in.len = c->in.off = 0;
    FOR_EACH_CALL(c, k, true)
    {
        k->sent = false;
    }
    c->cur = (c->cur + 1) % c->nmembers;
}

/* Connects to member i: a socket, or -1 with the reason in c->why[i] (written without mu: only
 * sq_client_open, before the I/O thread exists, and the I/O thread write it). */
static int try_connect(sq_client *c, uint32_t i)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    int e = getaddrinfo(c->host[i], c->port[i], &hints, &ai);
    if (e != 0 || ai == NULL) {
        set_why(c, i, "cannot resolve '%s': %s", c->host[i],
                e == EAI_SYSTEM ? strerror(errno) : gai_strerror(e));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        set_why(c, i, "socket: %s", strerror(errno));
        freeaddrinfo(ai);
        return -1;
    }
    int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
    int err = rc == 0 ? 0 : errno;
    freeaddrinfo(ai);
    if (rc != 0 && err == EINPROGRESS) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        socklen_t len = sizeof(err);
        int n = poll(&p, 1, CONNECT_TIMEOUT_MS);
        if (n == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0) {
            rc = 0;
        } else if (n == 0) {
            err = ETIMEDOUT;
        }
    }
    if (rc != 0) {
        set_why(c, i, "%s:%s: %s", c->host[i], c->port[i], strerror(err));
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

/* Asks the member who it is (request id 0, answered with "member=ID"). */
static void queue_hello(sq_client *c)
{
    struct sq_kv_frame f = {.op = SQ_KV_OP_HELLO, .client = c->client_id};
    if (sq__buf_reserve(&c->out, SQ_KV_HEADER_BYTES) == 0) {
        long n = sq__kv_encode(&f, c->out.p + c->out.len, SQ_KV_HEADER_BYTES);
        c->out.len += n > 0 ? (size_t)n : 0;
    }
}

/* Connects (the I/O thread, without mu) and queues every call again. */
static void connect_next(sq_client *c)
{
    uint32_t i = c->cur;
    int fd = try_connect(c, i);
    pthread_mutex_lock(&c->mu);
    if (fd < 0) {
        c->cur = (c->cur + 1) % c->nmembers;
        c->next_connect_ms = now_ms() + (c->cur == 0 ? 100 : 0);
        pthread_mutex_unlock(&c->mu);
        return;
    }
    c->fd = fd;
    c->connected = true;
    c->heard_ms = now_ms();
    queue_hello(c);
    FOR_EACH_CALL(c, k, true)
    {
        if (k->retry_at_ms == 0 && !k->cancelled) {
            if (k->watch) {
                watch_from(k);
            }
            queue_frame(c, k);
        }
    }
    pthread_mutex_unlock(&c->mu);
}

static bool retriable(int status)
{
    return status == SQ_EPEER || status == SQ_ESTATE || status == SQ_EAGAIN ||
           status == SQ_EVIEWCHANGE;
}

static void fill_result(sq_kv_result *r, const struct sq_kv_frame *f)
{
    *r = (sq_kv_result){.status = f->status,
                        .version = f->version,
                        .timestamp = f->time,
                        .deleted = (f->flags & SQ_KV_F_DELETED) != 0,
                        .count = f->count,
                        .value = (void *)f->value,
                        .size = f->value_len};
    size_t n = f->str_len < sizeof(r->message) - 1 ? f->str_len : sizeof(r->message) - 1;
    memcpy(r->message, f->str, n);
    r->message[n] = '\0';
}

/* One frame from the member. Callbacks run without mu. */
static void on_frame(sq_client *c, const struct sq_kv_frame *f)
{
    pthread_mutex_lock(&c->mu);
    if (f->op == SQ_KV_OP_HELLO && f->req_id == 0) {
        unsigned id = 0;
        if (f->status == 0 && f->str_len > 7 && f->str_len < 40) {
            char who[40];
            memcpy(who, f->str, f->str_len);
            who[f->str_len] = '\0';
            if (sscanf(who, "member=%u", &id) == 1) {
                c->member_id = id;
                c->hello_misses[c->cur] = 0;
            }
        }
        pthread_mutex_unlock(&c->mu);
        return; /* or the member refused a frame: the calls answer by timing out or retry */
    }
    struct call *k = *slot_of(c, f->req_id);
    if (k == NULL) {
        pthread_mutex_unlock(&c->mu);
        return; /* an answer to a call already given up on, or an unwatched watch */
    }
    if (f->op == SQ_KV_OP_EVENT) {
        uint32_t shard = f->count < SQ_CLIENT_WATCH_SHARDS ? f->count : 0;
        if (!k->watch || k->cancelled || f->version < k->next_from[shard]) {
            pthread_mutex_unlock(&c->mu);
            return; /* unwatched, or already delivered before a reconnect */
        }
        k->next_from[shard] = f->version + 1;
        sq_watch_fn fn = k->wfn;
        void *arg = k->warg;
        c->in_callback = k;
        pthread_mutex_unlock(&c->mu);
        sq_kv_event ev = {.key = f->key,
                          .key_len = f->key_len,
                          .version = f->version,
                          .timestamp = f->time,
                          .deleted = (f->flags & SQ_KV_F_DELETED) != 0,
                          .value = f->value,
                          .size = f->value_len};
        fn(arg, &ev);
        pthread_mutex_lock(&c->mu);
        c->in_callback = NULL;
        pthread_cond_broadcast(&c->cb_done);
        pthread_mutex_unlock(&c->mu);
        return;
    }
    uint64_t now = now_ms();
    if (k->cancelled) {
        pthread_mutex_unlock(&c->mu);
        return; /* an unwatched watch: sq_client_unwatch removes it */
    }
    if (f->status == SQ_ENOQUORUM && (k->acked || now < k->deadline_ms)) {
        /* This member is out of the group for now: every other request would get the same
         * answer, so all of them go to the next member at once. */
        disconnect(c);
        pthread_mutex_unlock(&c->mu);
        return;
    }
    if (retriable(f->status) && (k->acked || now < k->deadline_ms)) {
        k->sent = false;
        c->nretry += k->acked && k->retry_at_ms == 0;
        k->retry_at_ms = now + RETRY_MS;
        pthread_mutex_unlock(&c->mu);
        return;
    }
    if (k->watch && k->acked && f->status == 0) {
        pthread_mutex_unlock(&c->mu);
        return; /* the answer to a watch asked again */
    }
    sq_kv_done_fn done = k->done;
    void *arg = k->arg;
    if (k->watch && f->status == 0) {
        /* The watch stays, among the established ones (which nothing needs to scan); its
         * first answer completes sq_client_watch. */
        struct call **pc = slot_of(c, k->req_id);
        *pc = k->next;
        k->next = c->watches[k->req_id % WATCH_BUCKETS];
        c->watches[k->req_id % WATCH_BUCKETS] = k;
        k->acked = true;
        c->nwatching++;
        k->done = NULL;
    } else {
        call_unlink(c, k);
        free(k->frame);
        free(k);
    }
    pthread_mutex_unlock(&c->mu);
    if (done != NULL) {
        sq_kv_result r;
        fill_result(&r, f);
        done(arg, &r);
    }
}

/* Fails calls whose time is up (watches, once established, never expire). */
static void expire(sq_client *c)
{
    uint64_t now = now_ms();
    struct call *dead = NULL;
    pthread_mutex_lock(&c->mu);
    /* No member of the list speaks the protocol: waiting for the timeout would not help. */
    bool hopeless = true;
    for (uint32_t i = 0; i < c->nmembers && hopeless; i++) {
        hopeless = c->hello_misses[i] >= HELLO_MISSES_MAX;
    }
    char why[256] = "";
    if (hopeless) {
        snprintf(why, sizeof(why), "%s", c->why[c->cur]);
    }
    for (uint32_t b = 0; b < CALL_BUCKETS; b++) {
        for (struct call **pc = &c->calls[b]; *pc != NULL;) {
            struct call *k = *pc;
            if (!k->acked && (hopeless || now >= k->deadline_ms)) {
                *pc = k->next;
                c->ncalls--;
                window_done(c, k);
                k->next = dead;
                dead = k;
                continue;
            }
            if (k->retry_at_ms != 0 && now >= k->retry_at_ms && !k->cancelled) {
                k->retry_at_ms = 0;
                if (k->watch) {
                    watch_from(k);
                }
                queue_frame(c, k);
            }
            pc = &k->next;
        }
    }
    for (uint32_t b = 0; c->nretry > 0 && b < WATCH_BUCKETS; b++) {
        for (struct call *k = c->watches[b]; k != NULL; k = k->next) {
            if (k->retry_at_ms != 0 && now >= k->retry_at_ms) {
                k->retry_at_ms = 0;
                c->nretry--;
                if (!k->cancelled) {
                    watch_from(k);
                    queue_frame(c, k);
                }
            }
        }
    }
    pthread_mutex_unlock(&c->mu);
    while (dead != NULL) {
        struct call *k = dead;
        dead = k->next;
        if (k->done != NULL) {
            sq_kv_result r = {.status = hopeless ? SQ_ECLOSED : SQ_ETIMEDOUT};
            snprintf(r.message, sizeof(r.message), "%s",
                     hopeless ? why : "no answer from any member in time");
            k->done(k->arg, &r);
        }
        free(k->frame);
        free(k);
    }
}

static void read_frames(sq_client *c)
{
    for (;;) {
        if (sq__buf_reserve(&c->in, 65536) != 0) {
            pthread_mutex_lock(&c->mu);
            disconnect(c);
            pthread_mutex_unlock(&c->mu);
            return;
        }
        ssize_t n = recv(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        }
        if (n <= 0) {
            pthread_mutex_lock(&c->mu);
            disconnect(c);
            pthread_mutex_unlock(&c->mu);
            return;
        }
        c->in.len += (size_t)n;
        c->heard_ms = now_ms();
        for (;;) {
            long need = sq__kv_frame_need(c->in.p + c->in.off, c->in.len - c->in.off);
            struct sq_kv_frame f;
            if (need == 0 || (need > 0 && (size_t)need > c->in.len - c->in.off)) {
                break;
            }
            if (need < 0 || sq__kv_decode(c->in.p + c->in.off, (size_t)need, &f, NULL, 0) != 0) {
                pthread_mutex_lock(&c->mu);
                disconnect(c); /* a member that sends garbage: try another */
                pthread_mutex_unlock(&c->mu);
                return;
            }
            on_frame(c, &f);
            if (!c->connected) {
                return; /* the frame moved us to another member */
            }
            c->in.off += (size_t)need;
        }
        if (c->in.off == c->in.len) {
            c->in.off = c->in.len = 0;
        }
    }
}

static void *io_main(void *arg)
{
    sq_client *c = arg;
    for (;;) {
        pthread_mutex_lock(&c->mu);
        bool stop = c->stop, connected = c->connected;
        bool want = c->ncalls > 0;
        uint64_t next_connect = c->next_connect_ms;
        pthread_mutex_unlock(&c->mu);
        if (stop) {
            break;
        }
        if (!connected && want && now_ms() >= next_connect) {
            connect_next(c);
        }
        pthread_mutex_lock(&c->mu);
        struct pollfd p[2] = {{.fd = c->wake[0], .events = POLLIN},
                              {.fd = c->connected ? c->fd : -1,
                               .events = POLLIN | (c->out.len > c->out.off ? POLLOUT : 0)}};
        int timeout = c->connected ? 20 : 50;
        pthread_mutex_unlock(&c->mu);
        int n = poll(p, 2, timeout);
        if (n > 0 && (p[0].revents & POLLIN)) {
            char tmp[64];
            while (read(c->wake[0], tmp, sizeof(tmp)) > 0) {
            }
        }
        if (n > 0 && p[1].fd >= 0 && (p[1].revents & (POLLIN | POLLERR | POLLHUP))) {
            read_frames(c);
        }
        pthread_mutex_lock(&c->mu);
        if (c->connected && c->ncalls > c->nwatching && now_ms() - c->heard_ms > SILENT_MEMBER_MS) {
            uint32_t i = c->cur;
            c->member_id = c->member_id == UINT32_MAX ? 0 : c->member_id; /* no hello miss */
            disconnect(c); /* a stalled member: the requests go to the next one */
            set_why(c, i, "%s:%s accepted the connection but said nothing for %d ms (stalled?)",
                    c->host[i], c->port[i], SILENT_MEMBER_MS);
        }
        if (c->connected && c->out.len > c->out.off) {
            ssize_t w = send(c->fd, c->out.p + c->out.off, c->out.len - c->out.off,
                             MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w > 0) {
                c->out.off += (size_t)w;
                if (c->out.off == c->out.len) {
                    c->out.off = c->out.len = 0;
                }
            } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                disconnect(c);
            }
        }
        pthread_mutex_unlock(&c->mu);
        expire(c);
    }
    return NULL;
}

/* ---- public calls ---- */

int sq_client_open(sq_client **out, const char *members, int timeout_ms, char *err, size_t err_size)
{
    *out = NULL;
    if (members == NULL || members[0] == '\0') {
        snprintf(err, err_size, "no member address given (host:port[,host:port...])");
        return SQ_EINVAL;
    }
    sq_client *c = calloc(1, sizeof(*c));
    if (c != NULL) {
        c->watches = calloc(WATCH_BUCKETS, sizeof(*c->watches));
    }
    if (c == NULL || c->watches == NULL) {
        free(c);
        return SQ_ENOMEM;
    }
    c->fd = -1;
    c->member_id = UINT32_MAX;
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : 10000;
    const char *p = members;
    while (*p != '\0') {
        const char *end = strchr(p, ',');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        const char *colon = memrchr(p, ':', len);
        size_t hlen = colon != NULL ? (size_t)(colon - p) : 0;
        size_t plen = colon != NULL ? len - hlen - 1 : 0;
        char port[8] = "";
        if (plen > 0 && plen < sizeof(port)) {
            memcpy(port, colon + 1, plen);
        }
        char *pe = NULL;
        long pn = strtol(port, &pe, 10);
        if (c->nmembers == MAX_MEMBERS || colon == NULL || hlen == 0 || hlen >= 256 || plen == 0 ||
            plen >= sizeof(port) || *pe != '\0' || pn < 1 || pn > 65535) {
            snprintf(err, err_size, "'%.*s' is not host:port (in the member list '%s')", (int)len,
                     p, members);
            free(c->watches);
            free(c);
            return SQ_EINVAL;
        }
        memcpy(c->host[c->nmembers], p, hlen);
        memcpy(c->port[c->nmembers], port, plen + 1);
        c->nmembers++;
        p += len;
        if (*p == ',') {
            p++;
        }
    }
    if (getrandom(&c->client_id, sizeof(c->client_id), 0) != sizeof(c->client_id)) {
        c->client_id = (uint64_t)now_ms() ^ ((uint64_t)getpid() << 32);
    }
    c->client_id |= 1;                                    /* 0 means "no client" to the members */
    c->cur = (uint32_t)(c->client_id >> 8) % c->nmembers; /* spread clients over members */
    if (pipe2(c->wake, O_NONBLOCK | O_CLOEXEC) != 0) {
        free(c->watches);
        free(c);
        snprintf(err, err_size, "pipe: %s", strerror(errno));
        return SQ_EIO;
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cb_done, NULL);
    /* One connection attempt over the list now, so that a wrong address fails at once. */
    for (uint32_t i = 0; i < c->nmembers && !c->connected; i++) {
        int fd = try_connect(c, c->cur);
        if (fd >= 0) {
            c->fd = fd;
            c->connected = true;
        } else {
            c->cur = (c->cur + 1) % c->nmembers;
        }
    }
    if (c->connected) {
        queue_hello(c);
    }
    if (!c->connected) {
        size_t n = (size_t)snprintf(err, err_size, "no member answers:");
        for (uint32_t i = 0; i < c->nmembers && n < err_size; i++) {
            n += (size_t)snprintf(err + n, err_size - n, "%s %s", i > 0 ? ";" : "", c->why[i]);
        }
        close(c->wake[0]);
        close(c->wake[1]);
        pthread_mutex_destroy(&c->mu);
        free(c->watches);
        free(c);
        return SQ_ECLOSED;
    }
    if (pthread_create(&c->io, NULL, io_main, c) != 0) {
        close(c->fd);
        close(c->wake[0]);
        close(c->wake[1]);
        pthread_mutex_destroy(&c->mu);
        free(c->watches);
        free(c);
        return SQ_ENOMEM;
    }
    *out = c;
    return 0;
}

uint32_t sq_client_member(const sq_client *c)
{
    return c->member_id;
}

void sq_client_close(sq_client *c)
{
    if (c == NULL || pthread_equal(pthread_self(), c->io)) {
        return; /* not from a callback: the I/O thread cannot wait for itself */
    }
    pthread_mutex_lock(&c->mu);
    c->stop = true;
    pthread_mutex_unlock(&c->mu);
    wake(c);
    pthread_join(c->io, NULL);
    for (uint32_t b = 0; b < CALL_BUCKETS + WATCH_BUCKETS; b++) {
        struct call **head = b < CALL_BUCKETS ? &c->calls[b] : &c->watches[b - CALL_BUCKETS];
        while (*head != NULL) {
            struct call *k = *head;
            *head = k->next;
            if (k->done != NULL) {
                sq_kv_result r = {.status = SQ_ECLOSED};
                snprintf(r.message, sizeof(r.message), "the client was closed");
                k->done(k->arg, &r);
            }
            free(k->frame);
            free(k);
        }
    }
    if (c->fd >= 0) {
        close(c->fd);
    }
    close(c->wake[0]);
    close(c->wake[1]);
    free(c->out.p);
    free(c->watches);
    free(c->in.p);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cb_done);
    free(c);
}

/* Queues one request; `done` runs once with its result. */
static int submit(sq_client *c, struct sq_kv_frame *f, sq_kv_done_fn done, void *arg,
                  sq_watch_fn wfn, void *warg, uint64_t *req_out)
{
    if (f->key_len > SQ_KV_MAX_KEY || f->value_len > SQ_KV_MAX_VALUE ||
        f->str_len > SQ_KV_MAX_STR) {
        return f->value_len > SQ_KV_MAX_VALUE ? SQ_EMSGSIZE : SQ_EINVAL;
    }
    struct call *k = calloc(1, sizeof(*k));
    if (k == NULL) {
        return SQ_ENOMEM;
    }
    pthread_mutex_lock(&c->mu);
    if (c->ncalls == c->nwatching) {
        c->heard_ms = now_ms(); /* the member's silence counts from the first request waiting */
    }
    if (c->ncalls - c->nwatching >= SQ_CLIENT_MAX_INFLIGHT ||
        c->next_req + 1 - oldest_request(c) >= SQ_CLIENT_MAX_INFLIGHT) {
        pthread_mutex_unlock(&c->mu);
        free(k);
        return SQ_EAGAIN;
    }
    f->req_id = ++c->next_req;
    f->client = c->client_id;
    k->len = sq__kv_frame_bytes(f);
    k->frame = malloc(k->len);
    if (k->frame == NULL) {
        pthread_mutex_unlock(&c->mu);
        free(k);
        return SQ_ENOMEM;
    }
    long w = sq__kv_encode(f, k->frame, k->len);
    (void)w;
    k->req_id = f->req_id;
    k->op = f->op;
    k->done = done;
    k->arg = arg;
    k->wfn = wfn;
    k->warg = warg;
    k->watch = wfn != NULL;
    for (int i = 0; i < SQ_CLIENT_WATCH_SHARDS; i++) {
        k->next_from[i] = f->version;
    }
    k->deadline_ms = now_ms() + (uint64_t)c->timeout_ms;
    struct call **pc = &c->calls[k->req_id % CALL_BUCKETS];
    k->next = *pc;
    *pc = k;
    c->ncalls++;
    if (!k->watch) {
        window_add(c, k->req_id);
    }
    queue_frame(c, k);
    if (req_out != NULL) {
        *req_out = k->req_id;
    }
    pthread_mutex_unlock(&c->mu);
    wake(c);
    return 0;
}

static int bad_arg(sq_kv_result *r, int rc, const char *what);

/* Blocking calls wait for the asynchronous result here. */
struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    sq_kv_result *r;
};

static void waiter_done(void *arg, const sq_kv_result *res)
{
    struct waiter *w = arg;
    sq_kv_result *r = w->r;
    void *keep = r->value;
    size_t cap = r->cap_;
    *r = *res;
    r->value = keep;
    r->cap_ = cap;
    r->size = 0;
    if (res->size > 0) {
        if (res->size > cap) {
            void *p = realloc(keep, res->size);
            if (p == NULL) {
                r->status = SQ_ENOMEM;
                snprintf(r->message, sizeof(r->message), "no memory for a %zu-byte value",
                         res->size);
                goto out;
            }
            r->value = p;
            r->cap_ = res->size;
        }
        memcpy(r->value, res->value, res->size);
        r->size = res->size;
    }
out:
    pthread_mutex_lock(&w->mu);
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static int call_wait(sq_client *c, struct sq_kv_frame *f, sq_kv_result *r, sq_watch_fn wfn,
                     void *warg, uint64_t *req_out)
{
    if (c == NULL || r == NULL) {
        return SQ_EINVAL;
    }
    if (pthread_equal(pthread_self(), c->io)) {
        return bad_arg(r, SQ_EBUSY,
                       "blocking calls cannot be made from a callback (the "
                       "client's I/O thread would wait for itself)");
    }
    struct waiter w = {.r = r};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    /* A blocking call waits for room among the calls in flight (other threads' calls). */
    uint64_t give_up = now_ms() + (uint64_t)c->timeout_ms;
    int rc;
    while ((rc = submit(c, f, waiter_done, &w, wfn, warg, req_out)) == SQ_EAGAIN &&
           now_ms() < give_up) {
        usleep(1000);
    }
    if (rc == 0) {
        pthread_mutex_lock(&w.mu);
        while (!w.done) {
            pthread_cond_wait(&w.cv, &w.mu);
        }
        pthread_mutex_unlock(&w.mu);
        rc = r->status;
    } else {
        r->status = rc;
        snprintf(r->message, sizeof(r->message), "%s", sq_strerror(rc));
        r->size = 0;
    }
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    return rc;
}

static int key_frame(struct sq_kv_frame *f, uint8_t op, const char *key)
{
    size_t len = key != NULL ? strlen(key) : 0;
    if (key == NULL || len == 0 || len > SQ_KV_MAX_KEY) {
        return SQ_EINVAL;
    }
    *f = (struct sq_kv_frame){.op = op, .key = key, .key_len = (uint16_t)len};
    return 0;
}

static int bad_arg(sq_kv_result *r, int rc, const char *what)
{
    if (r != NULL) {
        r->status = rc;
        r->size = 0;
        snprintf(r->message, sizeof(r->message), "%s", what);
    }
    return rc;
}

static void put_flags(struct sq_kv_frame *f, const sq_put_opts *o)
{
    if (o != NULL && o->if_version) {
        f->flags |= SQ_KV_F_IF_VERSION;
        f->version = o->version;
    }
    if (o != NULL && o->if_absent) {
        f->flags |= SQ_KV_F_IF_ABSENT;
    }
}

static void get_flags(struct sq_kv_frame *f, const sq_get_opts *o)
{
    if (o == NULL) {
        return;
    }
    if (o->at_version) {
        f->flags |= SQ_KV_F_AT_VERSION;
        f->version = o->version;
    }
    if (o->at_time) {
        f->flags |= SQ_KV_F_AT_TIME;
        f->time = o->time_us;
    }
    if (o->stable) {
        f->flags |= SQ_KV_F_STABLE;
    }
    if (o->size_only) {
        f->flags |= SQ_KV_F_SIZE_ONLY;
    }
}

#define KEY_ERR "a key is a path of 1 to 1024 bytes, such as /orders/42"

int sq_client_put(sq_client *c, const char *key, const void *value, size_t size,
                  const sq_put_opts *opts, sq_kv_result *r)
{
    struct sq_kv_frame f;
    if (key_frame(&f, SQ_KV_OP_PUT, key) != 0) {
        return bad_arg(r, SQ_EINVAL, KEY_ERR);
    }
    if (size > SQ_KV_MAX_VALUE || (size > 0 && value == NULL)) {
        return bad_arg(r, size > SQ_KV_MAX_VALUE ? SQ_EMSGSIZE : SQ_EINVAL,
                       "a value is at most 16 MiB (and the pool's max_payload)");
    }
    f.value = value;
    f.value_len = (uint32_t)size;
    put_flags(&f, opts);
    return call_wait(c, &f, r, NULL, NULL, NULL);
}

int sq_client_put_async(sq_client *c, const char *key, const void *value, size_t size,
                        const sq_put_opts *opts, sq_kv_done_fn done, void *arg)
{
    struct sq_kv_frame f;
    if (c == NULL || done == NULL || key_frame(&f, SQ_KV_OP_PUT, key) != 0 ||
        (size > 0 && value == NULL)) {
        return SQ_EINVAL;
    }
    if (size > SQ_KV_MAX_VALUE) {
        return SQ_EMSGSIZE;
    }
    f.value = value;
    f.value_len = (uint32_t)size;
    put_flags(&f, opts);
    return submit(c, &f, done, arg, NULL, NULL, NULL);
}

int sq_client_get(sq_client *c, const char *key, const sq_get_opts *opts, sq_kv_result *r)
{
    struct sq_kv_frame f;
    if (key_frame(&f, SQ_KV_OP_GET, key) != 0) {
        return bad_arg(r, SQ_EINVAL, KEY_ERR);
    }
    get_flags(&f, opts);
    return call_wait(c, &f, r, NULL, NULL, NULL);
}

int sq_client_get_async(sq_client *c, const char *key, const sq_get_opts *opts, sq_kv_done_fn done,
                        void *arg)
{
    struct sq_kv_frame f;
    if (c == NULL || done == NULL || key_frame(&f, SQ_KV_OP_GET, key) != 0) {
        return SQ_EINVAL;
    }
    get_flags(&f, opts);
    return submit(c, &f, done, arg, NULL, NULL, NULL);
}

int sq_client_remove(sq_client *c, const char *key, const sq_put_opts *opts, sq_kv_result *r)
{
    struct sq_kv_frame f;
    if (key_frame(&f, SQ_KV_OP_REMOVE, key) != 0) {
        return bad_arg(r, SQ_EINVAL, KEY_ERR);
    }
    put_flags(&f, opts);
    return call_wait(c, &f, r, NULL, NULL, NULL);
}

int sq_client_list(sq_client *c, const char *prefix, int at_time, uint64_t time_us, sq_kv_result *r)
{
    struct sq_kv_frame f;
    if (key_frame(&f, SQ_KV_OP_LIST, prefix) != 0) {
        return bad_arg(r, SQ_EINVAL, "a prefix is a path of 1 to 1024 bytes, such as /orders/");
    }
    if (at_time) {
        f.flags |= SQ_KV_F_AT_TIME;
        f.time = time_us;
    }
    return call_wait(c, &f, r, NULL, NULL, NULL);
}

int sq_client_history(sq_client *c, const char *key, sq_kv_result *r)
{
    struct sq_kv_frame f;
    if (key_frame(&f, SQ_KV_OP_HISTORY, key) != 0) {
        return bad_arg(r, SQ_EINVAL, KEY_ERR);
    }
    return call_wait(c, &f, r, NULL, NULL, NULL);
}

int sq_client_pool_create(sq_client *c, const char *path, const char *store, uint32_t shards,
                          sq_kv_result *r)
{
    struct sq_kv_frame f;
    size_t slen = store != NULL ? strlen(store) : 0;
    if (key_frame(&f, SQ_KV_OP_POOL_CREATE, path) != 0 || slen == 0 || slen > SQ_KV_MAX_STR) {
        return bad_arg(r, SQ_EINVAL,
                       "pool create needs a path such as /orders and a store "
                       "type (volatile, persistent, trigger) or subgroup name");
    }
    f.str = store;
    f.str_len = (uint16_t)slen;
    f.count = shards;
    return call_wait(c, &f, r, NULL, NULL, NULL);
}

int sq_client_pool_list(sq_client *c, sq_kv_result *r)
{
    struct sq_kv_frame f = {.op = SQ_KV_OP_POOL_LIST};
    return call_wait(c, &f, r, NULL, NULL, NULL);
}

int sq_client_status(sq_client *c, int json, sq_kv_result *r)
{
    struct sq_kv_frame f = {.op = SQ_KV_OP_STATUS, .flags = json ? SQ_KV_F_JSON : 0};
    return call_wait(c, &f, r, NULL, NULL, NULL);
}

int sq_client_watch(sq_client *c, const char *target, uint64_t from_version, sq_watch_fn fn,
                    void *arg, uint64_t *watch_id)
{
    struct sq_kv_frame f;
    if (fn == NULL || key_frame(&f, SQ_KV_OP_WATCH, target) != 0) {
        return SQ_EINVAL;
    }
    f.version = from_version;
    uint8_t from[8 * SQ_CLIENT_WATCH_SHARDS];
    for (int s = 0; s < SQ_CLIENT_WATCH_SHARDS; s++) {
        for (int i = 0; i < 8; i++) {
            from[8 * s + i] = (uint8_t)(from_version >> (8 * i));
        }
    }
    f.value = from;
    f.value_len = sizeof(from);
    sq_kv_result r = {0};
    uint64_t id = 0;
    int rc = call_wait(c, &f, &r, fn, arg, &id);
    sq_kv_result_free(&r);
    if (rc == 0 && watch_id != NULL) {
        *watch_id = id;
    }
    return rc;
}

int sq_client_unwatch(sq_client *c, uint64_t watch_id)
{
    if (c == NULL) {
        return SQ_EINVAL;
    }
    if (pthread_equal(pthread_self(), c->io)) {
        return SQ_EBUSY; /* from a callback: it would wait for itself */
    }
    /* No event reaches the callback once this returns: the watch is marked first (the I/O
     * thread drops its events and never registers it again), a callback already running is
     * waited for, and then the member is told. */
    pthread_mutex_lock(&c->mu);
    struct call *k = *slot_of(c, watch_id);
    bool ok = k != NULL && k->watch && !k->cancelled;
    if (ok) {
        k->cancelled = true;
        while (c->in_callback == k) {
            pthread_cond_wait(&c->cb_done, &c->mu);
        }
    }
    pthread_mutex_unlock(&c->mu);
    if (!ok) {
        return SQ_ENOTFOUND;
    }
    struct sq_kv_frame f = {.op = SQ_KV_OP_UNWATCH, .version = watch_id};
    sq_kv_result r = {0};
    int rc = call_wait(c, &f, &r, NULL, NULL, NULL);
    sq_kv_result_free(&r);
    /* Even when the member did not answer, the watch is gone here; the member drops its side
     * when the connection closes. */
    pthread_mutex_lock(&c->mu);
    k = *slot_of(c, watch_id);
    if (k != NULL && k->watch) {
        call_unlink(c, k);
        free(k->frame);
        free(k);
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}
