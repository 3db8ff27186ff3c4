/* client_io.c: the client library's I/O side: the table of calls in flight, the one TCP
 * connection to a member, and the I/O thread that sends, receives, retries and expires. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "client/client_internal.h"
#include "common.h"
#include "le.h"

#define RETRY_MS 50 /* between attempts after a retriable answer or a lost member */
/* A member that closed this many connections in a row before answering the client hello does
 * not speak the protocol (a group port given as a client port, say): when every member of the
 * list is such, calls fail at once instead of at their timeout. */
#define HELLO_MISSES_MAX 3
#define CONNECT_TIMEOUT_MS 1000
/* A member that says nothing for this long while requests wait for it is stalled (stopped,
 * descheduled, hung): the client moves to the next member and sends them again there (the
 * at-most-once table makes the resend safe). Watches alone do not count: they may be silent.
 * Halfway, the client asks the member who it is (a hello): a member whose group is slow to
 * deliver (a view change, a slow disk) still answers that at once, and is not left. */
#define SILENT_MEMBER_MS 2000

uint64_t sq__client_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void sq__client_wake(sq_client *c)
{
    char x = 1;
    ssize_t w = write(c->wake[1], &x, 1);
    (void)w; /* a full pipe wakes the thread as well */
}

/* ---- calls (under mu) ---- */

struct call **sq__client_slot_of(sq_client *c, uint64_t req)
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

void sq__client_call_unlink(sq_client *c, struct call *k)
{
    struct call **pc = sq__client_slot_of(c, k->req_id);
    if (*pc == k) {
        *pc = k->next;
        c->ncalls--;
        window_done(c, k);
        c->nwatching -= k->watch && k->acked;
        c->nretry -= k->acked && k->retry_at_ms != 0;
    }
}

static void disconnect(sq_client *c);
static void leave_first(sq_client *c);

static void queue_frame(sq_client *c, struct call *k)
{
    if (c->connected && sq__buf_reserve(&c->out, k->len) == 0) {
        memcpy(c->out.p + c->out.len, k->frame, k->len);
        c->out.len += k->len;
        k->sent = true;
        if (k->trace && k->t_sent == 0 &&
            c->ntr_unsent < sizeof(c->tr_unsent) / sizeof(c->tr_unsent[0])) {
            c->tr_unsent[c->ntr_unsent++] = k->req_id;
        }
    }
}

/* Under mu, `out` just emptied into the socket: the traced requests in it went at `now` (taken
 * before the send: on loopback the member may read them before the call returns). */
static void stamp_sent(sq_client *c, uint64_t now)
{
    for (uint32_t i = 0; i < c->ntr_unsent; i++) {
        struct call *k = *sq__client_slot_of(c, c->tr_unsent[i]);
        if (k != NULL && k->req_id == c->tr_unsent[i] && k->t_sent == 0) {
            k->t_sent = now;
        }
    }
    c->ntr_unsent = 0;
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

static void set_why(sq_client *c, uint32_t i, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* One TLS read or write on the connection: the bytes moved; or -1 with errno EAGAIN (TLS waits
 * for the socket) or EPIPE (the connection ended: a TLS failure is recorded as why[cur]). A
 * write is made under mu (send_out), a read by the socket's reader without it. */
static ssize_t tls_io(sq_client *c, void *buf, size_t n, bool write)
{
    pthread_mutex_lock(&c->tls_mu);
    ERR_clear_error();
    int r = write ? SSL_write(c->ssl, buf, (int)SQ_MIN(n, (size_t)INT32_MAX))
                  : SSL_read(c->ssl, buf, (int)SQ_MIN(n, (size_t)INT32_MAX));
    int e = r > 0 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, r);
    char why[160] = "";
    if (e == SSL_ERROR_SSL) {
        ERR_error_string_n(ERR_get_error(), why, sizeof(why));
    }
    ERR_clear_error();
    pthread_mutex_unlock(&c->tls_mu);
    if (r > 0) {
        return r;
    }
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        errno = EAGAIN;
        return -1;
    }
    if (why[0] != '\0') {
        /* e.g. a member that requires a client certificate says so in an alert, here. A write
         * is made under mu already (send_out), a read without it. */
        if (!write) {
            pthread_mutex_lock(&c->mu);
        }
        set_why(c, c->cur, "%s:%s: TLS: %s%s", c->host[c->cur], c->port[c->cur], why,
                strstr(why, "certificate required") != NULL
                    ? " (the member requires a client certificate: give one, with its key)"
                    : "");
        c->tls_why = true;
        if (!write) {
            pthread_mutex_unlock(&c->mu);
        }
    }
    errno = EPIPE;
    return -1;
}

/* Under mu: sends what `out` holds, as far as the socket takes it; true when it all went. A
 * broken connection is dropped when `may_drop` (only the thread that reads the socket drops it:
 * the reader's buffers go with it). */
static bool send_out(sq_client *c, bool may_drop)
{
    if (!c->connected || c->out.len == c->out.off) {
        return c->out.len == c->out.off;
    }
    uint64_t t = c->ntr_unsent > 0 ? sq__mono_us() : 0;
    ssize_t w;
    if (c->ssl != NULL) {
        w = tls_io(c, c->out.p + c->out.off, c->out.len - c->out.off, true);
    } else {
        w = send(c->fd, c->out.p + c->out.off, c->out.len - c->out.off,
                 MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    if (w > 0) {
        c->out.off += (size_t)w;
        if (c->out.off == c->out.len) {
            c->out.off = c->out.len = 0;
            stamp_sent(c, t);
            return true;
        }
    } else if (may_drop && w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        disconnect(c);
    }
    return false;
}

/* Requests that may go in-process: those whose meaning does not depend on the connection they
 * come on (an unwatch names a watch registered on the socket's connection). */
static bool direct_op(uint8_t op)
{
    switch (op) {
    case SQ_KV_OP_PUT:
    case SQ_KV_OP_GET:
    case SQ_KV_OP_REMOVE:
    case SQ_KV_OP_LIST:
    case SQ_KV_OP_HISTORY:
    case SQ_KV_OP_POOL_LIST:
    case SQ_KV_OP_POOL_CREATE:
    case SQ_KV_OP_STATUS:
        return true;
    default:
        return false;
    }
}

/* Queues one request; `done` runs once with its result. */
int sq__client_submit(sq_client *c, struct sq_kv_frame *f, sq_kv_done_fn done, void *arg,
                      sq_watch_fn wfn, void *warg, uint64_t *req_out, bool *direct)
{
    if (direct != NULL) {
        *direct = false;
    }
    if (f->key_len > SQ_KV_MAX_KEY || f->value_len > SQ_KV_MAX_VALUE ||
        f->str_len > SQ_KV_MAX_STR) {
        return f->value_len > SQ_KV_MAX_VALUE ? SQ_EMSGSIZE : SQ_EINVAL;
    }
    uint64_t t_call = (f->flags & SQ_KV_F_TRACE) ? sq__mono_us() : 0;
    struct call *k = calloc(1, sizeof(*k));
    if (k == NULL) {
        return SQ_ENOMEM;
    }
    k->trace = t_call != 0;
    k->t_call = t_call;
    pthread_mutex_lock(&c->mu);
    if (c->ncalls == c->nwatching) {
        c->heard_ms =
            sq__client_now_ms(); /* the member's silence counts from the first request waiting */
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
        /* a watch's value lists the first version wanted per shard */
        k->next_from[i] = f->version;
        if (k->watch && f->value_len == 8u * SQ_CLIENT_WATCH_SHARDS) {
            k->next_from[i] = sq__ld64((const uint8_t *)f->value + 8 * i);
        }
    }
    k->deadline_ms = sq__client_now_ms() + (uint64_t)c->timeout_ms;
    struct call **pc = &c->calls[k->req_id % CALL_BUCKETS];
    k->next = *pc;
    *pc = k;
    c->ncalls++;
    if (!k->watch) {
        window_add(c, k->req_id);
    }
    if (req_out != NULL) {
        *req_out = k->req_id;
    }
    /* To this member's service in-process: the client's member is the list's first (its own),
     * and the connection to it is up (so a retry or SQ_ENOQUORUM finds the usual path). */
    if (direct != NULL && c->direct.request != NULL && direct_op(k->op) && c->connected &&
        c->cur == 0) {
        uint64_t req = k->req_id;
        uint8_t small[4096];
        uint8_t *copy = k->len <= sizeof(small) ? small : malloc(k->len);
        if (copy != NULL) {
            /* the answer may come (and free k) before request() returns */
            memcpy(copy, k->frame, k->len);
            size_t len = k->len;
            k->sent = true;
            if (k->trace && k->t_sent == 0) {
                k->t_sent = sq__mono_us();
            }
            pthread_mutex_unlock(&c->mu);
            int rc = c->direct.request(c->direct.arg, c->direct.conn, copy, len);
            if (copy != small) {
                free(copy);
            }
            if (rc == 0) {
                *direct = true;
                return 0;
            }
            pthread_mutex_lock(&c->mu); /* not taken: into the socket after all */
            k = *sq__client_slot_of(c, req);
            if (k == NULL || k->req_id != req) {
                pthread_mutex_unlock(&c->mu);
                return 0; /* expired meanwhile: its callback ran */
            }
            k->sent = false;
        }
    }
    bool first = c->out.len == c->out.off;
    queue_frame(c, k);
    /* Into the socket from the caller's thread when nothing is queued before it: the I/O thread
     * is woken only for what does not go at once (or to connect). */
    bool wake = !k->sent || !first || !send_out(c, false);
    pthread_mutex_unlock(&c->mu);
    if (wake) {
        sq__client_wake(c);
    }
    return 0;
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

/* Drops the connection to the current member: every call goes out again to the next one. */
static void drop_member(sq_client *c)
{
    if (c->ssl != NULL) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) {
        close(c->fd);
    }
    c->conn_gen++;
    c->fd = -1;
    c->connected = false;
    c->member_id = UINT32_MAX;
    c->out.len = c->out.off = 0;
    c->ntr_unsent = 0;
    c->in.len = c->in.off = 0;
    FOR_EACH_CALL(c, k, true)
    {
        k->sent = false;
    }
    c->cur = (c->cur + 1) % c->nmembers;
}

/* The connection ended (closed, broken, garbage, or a member out of the group); one that ended
 * before the member answered the hello counts as a hello miss. */
static void disconnect(sq_client *c)
{
    if (c->connected && c->member_id == UINT32_MAX) {
        uint32_t i = c->cur;
        c->hello_misses[i] += c->hello_misses[i] < UINT8_MAX;
        if (!c->tls_why) {
            set_why(c, i,
                    "%s:%s does not speak squall's client protocol (it closed the connection "
                    "at the client hello): a group port, not a client_port?%s",
                    c->host[i], c->port[i],
                    c->tls == NULL ? " Or one that requires TLS (--tls)?" : "");
        }
    }
    c->tls_why = false;
    drop_member(c);
}

SSL_CTX *sq__tls_ctx_new(const SSL_METHOD *method)
{
    SSL_CTX *ctx = SSL_CTX_new(method);
    if (ctx != NULL) {
        SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
        SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        SSL_CTX_set_num_tickets(ctx, 0);
        /* Frames carry their own lengths: a peer that just closes is no truncation attack. */
        SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    }
    return ctx;
}

int sq__tls_expect_peer(SSL *ssl, const char *host)
{
    unsigned char addr[16];
    bool ip = inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
    return ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host)
              : SSL_set1_host(ssl, host) && SSL_set_tlsext_host_name(ssl, host);
}

int sq__client_tls_ctx(sq_client *c, const sq_client_tls *t, char *err, size_t err_size)
{
    SSL_CTX *ctx = sq__tls_ctx_new(TLS_client_method());
    if (ctx == NULL) {
        snprintf(err, err_size, "cannot create a TLS context");
        return SQ_ENOMEM;
    }
    c->tls = ctx;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    char why[160] = "";
    const char *what = NULL, *file = NULL;
    if (t->ca_file != NULL ? SSL_CTX_load_verify_locations(ctx, t->ca_file, NULL) != 1
                           : SSL_CTX_set_default_verify_paths(ctx) != 1) {
        what = "CA file", file = t->ca_file != NULL ? t->ca_file : "(the system's)";
    } else if ((t->cert_file != NULL) != (t->key_file != NULL)) {
        snprintf(err, err_size, "TLS: a client certificate and its key go together");
        return SQ_EINVAL;
    } else if (t->cert_file != NULL && SSL_CTX_use_certificate_chain_file(ctx, t->cert_file) != 1) {
        what = "certificate", file = t->cert_file;
    } else if (t->key_file != NULL &&
               SSL_CTX_use_PrivateKey_file(ctx, t->key_file, SSL_FILETYPE_PEM) != 1) {
        what = "key", file = t->key_file;
    } else if (t->key_file != NULL && SSL_CTX_check_private_key(ctx) != 1) {
        what = "key (not the certificate's)", file = t->key_file;
    }
    if (what != NULL) {
        unsigned long e = ERR_get_error();
        if (e != 0) {
            ERR_error_string_n(e, why, sizeof(why));
        }
        ERR_clear_error();
        snprintf(err, err_size, "TLS %s %s: %s", what, file, why[0] ? why : "unusable");
        return SQ_EINVAL;
    }
    return 0;
}

/* The TLS handshake on a new connection to member i, waiting up to CONNECT_TIMEOUT_MS: 0 with
 * the session in c->ssl_next, or -1 with the reason in c->why[i]. The member's certificate must
 * be trusted and name the host (or address) it was given as. */
static int tls_handshake(sq_client *c, uint32_t i, int fd)
{
    SSL *ssl = SSL_new(c->tls);
    const char *host = c->host[i];
    if (ssl == NULL || SSL_set_fd(ssl, fd) != 1 || sq__tls_expect_peer(ssl, host) != 1) {
        set_why(c, i, "%s:%s: cannot set up TLS", host, c->port[i]);
        SSL_free(ssl);
        ERR_clear_error();
        return -1;
    }
    uint64_t deadline = sq__client_now_ms() + CONNECT_TIMEOUT_MS;
    for (;;) {
        ERR_clear_error();
        int r = SSL_connect(ssl);
        if (r == 1) {
            c->ssl_next = ssl;
            return 0;
        }
        int e = SSL_get_error(ssl, r);
        uint64_t now = sq__client_now_ms();
        if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) && now < deadline) {
            struct pollfd p = {.fd = fd, .events = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT};
            (void)poll(&p, 1, (int)(deadline - now));
            continue;
        }
        char why[160] = "the member closed the connection";
        long v = SSL_get_verify_result(ssl);
        if (v != X509_V_OK) {
            snprintf(why, sizeof(why), "the member's certificate: %s",
                     X509_verify_cert_error_string(v));
        } else if (e == SSL_ERROR_SSL) {
            ERR_error_string_n(ERR_get_error(), why, sizeof(why));
        } else if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            snprintf(why, sizeof(why), "no answer within %d ms", CONNECT_TIMEOUT_MS);
        }
        set_why(c, i, "%s:%s: TLS handshake failed: %s%s", host, c->port[i], why,
                v == X509_V_OK && e == SSL_ERROR_SSL
                    ? " (does the member take TLS? its config needs [tls])"
                    : "");
        SSL_free(ssl);
        ERR_clear_error();
        return -1;
    }
}

/* Connects to member i: a socket, or -1 with the reason in c->why[i] (written without mu: only
 * sq_client_open, before the I/O thread exists, and the I/O thread write it). */
int sq__client_try_connect(sq_client *c, uint32_t i)
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
    c->ssl_next = NULL;
    if (c->tls != NULL && tls_handshake(c, i, fd) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Asks the member who it is (request id 0, answered with "member=ID"). */
void sq__client_queue_hello(sq_client *c)
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
    int fd = sq__client_try_connect(c, i);
    pthread_mutex_lock(&c->mu);
    if (fd < 0) {
        c->cur = (c->cur + 1) % c->nmembers;
        c->next_connect_ms = sq__client_now_ms() + (c->cur == 0 ? 100 : 0);
        pthread_mutex_unlock(&c->mu);
        return;
    }
    c->fd = fd;
    c->ssl = c->ssl_next;
    c->connected = true;
    c->heard_ms = sq__client_now_ms();
    c->probed = false;
    sq__client_queue_hello(c);
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

/* Whether call k is retried after an answer that says "not here" or "not now". */
static bool still_trying(const struct call *k, uint64_t now)
{
    return k->acked || now < k->deadline_ms;
}

/* Under mu, on the socket's reader: this member is out of the group; the calls go to the next
 * member after a pause, longer once the whole list said so. */
static void leave_member(sq_client *c, uint64_t now)
{
    disconnect(c);
    c->next_connect_ms = now + (c->cur == 0 ? 4 * RETRY_MS : RETRY_MS);
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
    if (n > 0) { /* an in-process answer without a message has no string at all */
        memcpy(r->message, f->str, n);
    }
    r->message[n] = '\0';
}

/* One frame from the member. Callbacks run without mu. */
static void on_frame(sq_client *c, const struct sq_kv_frame *f)
{
    uint64_t answer_in = (f->flags & SQ_KV_F_TRACE) ? sq__mono_us() : 0;
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
    struct call *k = *sq__client_slot_of(c, f->req_id);
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
                          .size = f->value_len,
                          .shard = shard};
        fn(arg, &ev);
        pthread_mutex_lock(&c->mu);
        c->in_callback = NULL;
        pthread_cond_broadcast(&c->cb_done);
        pthread_mutex_unlock(&c->mu);
        return;
    }
    uint64_t now = sq__client_now_ms();
    if (k->cancelled) {
        pthread_mutex_unlock(&c->mu);
        return; /* an unwatched watch: sq_client_unwatch removes it */
    }
    if (f->status == SQ_ENOQUORUM && still_trying(k, now)) {
        /* This member is out of the group for now: every other request would get the same
         * answer, so all of them go to the next member at once. Only the socket's reader may
         * drop the connection (its buffers and TLS session go with it): the I/O thread running
         * a deferred frame while a caller reads leaves it to leave_first. */
        if (c->reader_busy && pthread_equal(pthread_self(), c->io)) {
            if (!c->leave_first) {
                c->leave_first = true;
                c->leave_gen = c->conn_gen;
            }
        } else {
            leave_member(c, now);
        }
        pthread_mutex_unlock(&c->mu);
        return;
    }
    if (retriable(f->status) && still_trying(k, now)) {
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
    sq_kv_trace tr = {0};
    if (k->trace) {
        tr.call = k->t_call;
        tr.sent = k->t_sent;
        tr.answer_in = answer_in;
    }
    if (k->watch && f->status == 0) {
        /* The watch stays, among the established ones (which nothing needs to scan); its
         * first answer completes sq_client_watch. */
        struct call **pc = sq__client_slot_of(c, k->req_id);
        *pc = k->next;
        k->next = c->watches[k->req_id % WATCH_BUCKETS];
        c->watches[k->req_id % WATCH_BUCKETS] = k;
        k->acked = true;
        c->nwatching++;
        k->done = NULL;
    } else {
        sq__client_call_unlink(c, k);
        free(k->frame);
        free(k);
    }
    pthread_mutex_unlock(&c->mu);
    if (done != NULL) {
        sq_kv_result r;
        fill_result(&r, f);
        if (tr.call != 0) {
            if (f->flags & SQ_KV_F_TRACE) {
                (void)sscanf(r.message, SQ_KV_TRACE_SCAN, &tr.received, &tr.multicast,
                             &tr.delivered, &tr.durable, &tr.persisted, &tr.answered);
                r.message[0] = '\0'; /* a traced answer's text is its times, not a reason */
            }
            r.trace = tr;
        }
        done(arg, &r);
    }
}

/* Fails calls whose time is up (watches, once established, never expire). */
static void expire(sq_client *c)
{
    uint64_t now = sq__client_now_ms();
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

/* A blocking caller reading the socket (sq__client_take_reader) meets a frame whose callback
 * must run on the I/O thread (an event, or the answer to an asynchronous call made meanwhile):
 * it goes to the I/O thread, which handles it next (true), in the order it came. */
static bool defer_frame(sq_client *c, const struct sq_kv_frame *f, size_t bytes)
{
    pthread_mutex_lock(&c->mu);
    struct call *k = f->op == SQ_KV_OP_HELLO ? NULL : *sq__client_slot_of(c, f->req_id);
    bool defer = c->deferred.len > 0 || f->op == SQ_KV_OP_EVENT ||
                 (k != NULL && k->done != NULL && k->done != sq__client_waiter_done);
    if (defer && sq__buf_reserve(&c->deferred, bytes) == 0) {
        memcpy(c->deferred.p + c->deferred.len, c->in.p + c->in.off, bytes);
        c->deferred.len += bytes;
    } else {
        defer = false; /* no memory: handled here rather than lost */
    }
    pthread_mutex_unlock(&c->mu);
    if (defer) {
        sq__client_wake(c);
    }
    return defer;
}

/* The I/O thread: handles the frames a reader deferred to it. */
static void run_deferred(sq_client *c)
{
    pthread_mutex_lock(&c->mu);
    struct sq__buf b = c->deferred;
    c->deferred = (struct sq__buf){0};
    pthread_mutex_unlock(&c->mu);
    for (size_t off = 0; off < b.len;) {
        long need = sq__kv_frame_need(b.p + off, b.len - off);
        struct sq_kv_frame f;
        if (need <= 0 || sq__kv_decode(b.p + off, (size_t)need, &f, NULL, 0) != 0) {
            break; /* decoded once already: cannot happen */
        }
        on_frame(c, &f);
        off += (size_t)need;
    }
    sq__buf_free(&b);
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
        ssize_t n = c->ssl != NULL ? tls_io(c, c->in.p + c->in.len, c->in.cap - c->in.len, false)
                                   : recv(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len, 0);
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
        c->heard_ms = sq__client_now_ms();
        pthread_mutex_lock(&c->mu);
        c->probed = false;
        pthread_mutex_unlock(&c->mu);
        bool io = pthread_equal(pthread_self(), c->io);
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
            if (io || !defer_frame(c, &f, (size_t)need)) {
                on_frame(c, &f);
            }
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

void *sq__client_io_main(void *arg)
{
    sq_client *c = arg;
    for (;;) {
        pthread_mutex_lock(&c->mu);
        bool stop = c->stop, connected = c->connected;
        /* not while a caller reads the socket: it uses c->fd and c->in until its turn ends */
        bool want = c->ncalls > 0 && !c->reader_busy;
        uint64_t next_connect = c->next_connect_ms;
        pthread_mutex_unlock(&c->mu);
        if (stop) {
            break;
        }
        if (!connected && want && sq__client_now_ms() >= next_connect) {
            connect_next(c);
        }
        pthread_mutex_lock(&c->mu);
        /* While a blocking caller reads the socket (sq__client_take_reader), it is left alone. */
        struct pollfd p[2] = {{.fd = c->wake[0], .events = POLLIN},
                              {.fd = c->connected && !c->reader_busy ? c->fd : -1,
                               .events = POLLIN | (c->out.len > c->out.off ? POLLOUT : 0)}};
        int timeout = c->connected ? 20 : 50;
        pthread_mutex_unlock(&c->mu);
        int n = poll(p, 2, timeout);
        if (n > 0 && (p[0].revents & POLLIN)) {
            char tmp[64];
            while (read(c->wake[0], tmp, sizeof(tmp)) > 0) {
            }
        }
        run_deferred(c);
        leave_first(c);
        if (n > 0 && p[1].fd >= 0 && (p[1].revents & (POLLIN | POLLERR | POLLHUP))) {
            pthread_mutex_lock(&c->mu);
            /* not a socket dropped since the poll (by a deferred frame, or leave_first) */
            bool mine = !c->reader_busy && c->connected && c->fd == p[1].fd;
            c->io_reading = mine;
            pthread_mutex_unlock(&c->mu);
            if (mine) {
                read_frames(c);
                pthread_mutex_lock(&c->mu);
                c->io_reading = false;
                pthread_mutex_unlock(&c->mu);
            }
        }
        pthread_mutex_lock(&c->mu);
        if (c->reader_busy) {
            pthread_mutex_unlock(&c->mu);
            continue; /* the reader's turn is short: then the checks below run again */
        }
        uint64_t silent_ms = sq__client_now_ms() - c->heard_ms;
        if (c->connected && c->ncalls > c->nwatching && silent_ms > SILENT_MEMBER_MS / 2 &&
            !c->probed) {
            sq__client_queue_hello(c);
            c->probed = true;
        }
        if (c->connected && c->ncalls > c->nwatching && silent_ms > SILENT_MEMBER_MS) {
            uint32_t i = c->cur;
            drop_member(c); /* a stalled member (no hello miss): the requests go to the next one */
            set_why(c, i, "%s:%s accepted the connection but said nothing for %d ms (stalled?)",
                    c->host[i], c->port[i], SILENT_MEMBER_MS);
        }
        (void)send_out(c, true);
        pthread_mutex_unlock(&c->mu);
        expire(c);
    }
    return NULL;
}

/* The I/O thread: an in-process answer said this member is out of the group (see
 * sq__client_direct_answer). */
static void leave_first(sq_client *c)
{
    pthread_mutex_lock(&c->mu);
    if (c->leave_first && c->leave_gen == c->conn_gen && c->connected && !c->reader_busy) {
        leave_member(c, sq__client_now_ms());
    }
    if (!c->reader_busy) {
        c->leave_first = false;
    }
    pthread_mutex_unlock(&c->mu);
}

bool sq__client_take_reader(sq_client *c)
{
    pthread_mutex_lock(&c->mu);
    bool ok = c->connected && !c->reader_busy && !c->io_reading && c->nwatching == 0 &&
              c->ncalls == 1 && c->out.len == c->out.off;
    c->reader_busy |= ok;
    pthread_mutex_unlock(&c->mu);
    return ok;
}

void sq__client_drop_reader(sq_client *c)
{
    pthread_mutex_lock(&c->mu);
    c->reader_busy = false;
    pthread_mutex_unlock(&c->mu);
    sq__client_wake(c); /* the I/O thread watches the socket again */
}

bool sq__client_read_wait(sq_client *c, int ms, int spin_us, bool *spun_in)
{
    pthread_mutex_lock(&c->mu);
    int fd = c->connected ? c->fd : -1;
    pthread_mutex_unlock(&c->mu);
    if (fd < 0) {
        return false;
    }
    /* only the reader closes the socket while it is the reader, so fd stays this socket */
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int n = 0;
    if (spin_us > 0) {
        /* The answer is due within the spin: a look at the socket costs less than a sleep and
         * a wake-up. */
        uint64_t spin_until = sq__mono_us() + (uint64_t)spin_us;
        while (n == 0 && sq__mono_us() < spin_until) {
            n = poll(&p, 1, 0);
        }
        *spun_in = n > 0;
    }
    if (n == 0) {
        n = poll(&p, 1, ms);
    }
    if (n <= 0) {
        return false;
    }
    read_frames(c);
    pthread_mutex_lock(&c->mu);
    /* after a frame went to the I/O thread, so do the ones behind it (its own answer too) */
    bool go_on = c->connected && c->deferred.len == 0;
    pthread_mutex_unlock(&c->mu);
    return go_on;
}

/* ---- in-process path (client_internal.h) ---- */

bool sq__client_on_first(sq_client *c)
{
    pthread_mutex_lock(&c->mu);
    bool first = c->cur == 0;
    pthread_mutex_unlock(&c->mu);
    return first;
}

void sq__client_set_direct(sq_client *c, const struct sq__client_direct *d)
{
    c->direct = *d;
}

void sq__client_direct_answer(void *arg, const struct sq_kv_frame *f)
{
    sq_client *c = arg;
    if (f->status == SQ_ENOQUORUM) {
        /* This member is out of the group: as over the socket, the connection to it is
         * dropped and the calls go to the next member with the same request numbers. Only the
         * socket's reader may drop it: the I/O thread does (leave_first), if the client is
         * still on the connection this answer was about. */
        uint64_t now = sq__client_now_ms();
        pthread_mutex_lock(&c->mu);
        struct call *k = *sq__client_slot_of(c, f->req_id);
        bool retry = k != NULL && k->req_id == f->req_id && still_trying(k, now);
        if (retry && c->connected && c->cur == 0 && !c->leave_first) {
            c->leave_first = true;
            c->leave_gen = c->conn_gen;
        }
        pthread_mutex_unlock(&c->mu);
        if (retry) {
            sq__client_wake(c);
            return;
        }
    }
    on_frame(c, f); /* the call's answer: its waiter wakes */
}
