/* kv_conn.c: the binary client protocol front end: connections (accepted, or relays to other
 * members), framing, reads and flushes, and the dispatch of each request to the service. */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <assert.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <openssl/ssl.h>
#include <unistd.h>

#include "common.h"
#include "kv/buf.h"
#include "kv/wire.h"
#include "log.h"
#include "server/kv_internal.h"

static_assert(SQ_CONFIG_MAX_FRAME_BYTES == SQ_KV_MAX_FRAME, "[kv] max_frame_bytes' bound");

struct conn *sq__kvs_conn_by_id(struct sq_kv_server *s, uint64_t id)
{
    for (struct conn *c = s->conns; c != NULL; c = c->next) {
        if (c->id == id && !c->dead) {
            return c;
        }
    }
    return NULL;
}

static void conn_arm(struct sq_kv_server *s, struct conn *c, bool out)
{
    if (c->want_out == out || c->fd < 0) {
        return;
    }
    c->want_out = out;
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.u64 = c->id};
    epoll_ctl(s->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Sends what `out` holds through TLS (a handshake first, if one is under way). */
static void tls_flush(struct sq_kv_server *s, struct conn *c)
{
    c->tls_want_write = false;
    for (;;) {
        long n = sq__kvs_tls_send(s, c, c->out.p + c->out.off, c->out.len - c->out.off);
        if (n > 0) {
            c->out.off += (size_t)n;
            if (c->out.off < c->out.len) {
                continue;
            }
        } else if (n == SQ_TLS_WANT_WRITE) {
            c->tls_want_write = true;
        } else if (n == SQ_TLS_CLOSED) {
            c->dead = true;
        }
        return; /* all sent, or the handshake wants to read first */
    }
}

void sq__kvs_conn_flush(struct sq_kv_server *s, struct conn *c)
{
    if (c->ssl != NULL && c->tls_read_blocked && c->fd >= 0) {
        /* A read that had to write (TLS's own bytes) goes on now, before anything of ours. */
        c->tls_read_blocked = false;
        sq__kvs_conn_read(s, c);
        if (c->dead) {
            return;
        }
    }
    if (c->ssl != NULL) {
        tls_flush(s, c);
    }
    while (c->ssl == NULL && c->out.off < c->out.len) {
        ssize_t n = send(c->fd, c->out.p + c->out.off, c->out.len - c->out.off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                c->dead = true;
            }
            break;
        }
        c->out.off += (size_t)n;
    }
    if (c->out.off == c->out.len) {
        c->out.len = 0;
        c->out.off = 0;
    } else if (c->out.off > (1u << 20)) {
        memmove(c->out.p, c->out.p + c->out.off, c->out.len - c->out.off);
        c->out.len -= c->out.off;
        c->out.off = 0;
    }
    if (!c->dead) {
        /* With TLS, a writable socket helps only when TLS waits to write (not to read). */
        conn_arm(s, c, c->ssl != NULL ? c->tls_want_write : c->out.len > 0);
    }
}

void sq__kvs_conn_send(struct sq_kv_server *s, struct conn *c, const struct sq_kv_frame *f)
{
    if (c == NULL || c->dead) {
        return;
    }
    if (c->answer != NULL) {
        sq__kvs_stat_answer(s, c, f);
        c->answer(c->answer_arg, f);
        return;
    }
    size_t n = sq__kv_frame_bytes(f);
    if (c->out.len + n > s->cfg.kv_max_output_bytes || sq__buf_reserve(&c->out, n) != 0) {
        sq__log(SQ_LOG_WARN,
                "kv: dropping a client %" PRIu64
                " that does not read its answers ([kv] max_output_bytes)",
                c->id);
        c->dead = true;
        return;
    }
    long w = sq__kv_encode(f, c->out.p + c->out.len, n);
    SQ_ASSERT(w == (long)n);
    c->out.len += n;
    if (!c->relay) {
        sq__kvs_stat_answer(s, c, f);
    }
    /* Not armed for EPOLLOUT here: whoever queues an answer holds svc_mu and flushes the
     * connections before letting go of it (sq__kvs_flush_conns, at the end of the service
     * loop's turn or of sq__kvs_help), and only a socket that did not take it all waits for
     * EPOLLOUT. Arming it here cost two epoll_ctl calls and a wake-up of the service thread for
     * every answer the loop thread sent. */
}

void sq__kvs_reply_err(struct sq_kv_server *s, uint64_t conn, uint8_t op, uint64_t client,
                       uint64_t req, int status, uint64_t version, const char *fmt, ...)
{
    char msg[SQ_KV_MAX_STR];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    struct sq_kv_frame f = {.op = op,
                            .status = status,
                            .req_id = req,
                            .client = client,
                            .version = version,
                            .str = msg,
                            .str_len = (uint16_t)(n < 0 ? 0 : SQ_MIN((size_t)n, sizeof(msg) - 1))};
    sq__kvs_conn_send(s, sq__kvs_conn_by_id(s, conn), &f);
}

struct conn *sq__kvs_conn_new(struct sq_kv_server *s, int fd, bool relay, uint32_t member)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        close(fd);
        return NULL;
    }
    c->id = ++s->next_conn;
    c->fd = fd;
    c->relay = relay;
    c->member = member;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    struct epoll_event ev = {.events = EPOLLIN | (relay ? EPOLLOUT : 0), .data.u64 = c->id};
    c->want_out = relay;
    c->tls_want_write = relay; /* a relay's handshake starts once it is connected */
    if (sq__kvs_tls_start(s, c) != 0 || epoll_ctl(s->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        sq__kvs_tls_drop(c);
        close(fd);
        free(c);
        return NULL;
    }
    c->next = s->conns;
    s->conns = c;
    return c;
}

/* The address a connection came from, as bytes to compare (family first). */
static void host_of(const struct sockaddr_storage *a, uint8_t out[17])
{
    memset(out, 0, 17);
    if (a->ss_family == AF_INET) {
        out[0] = AF_INET;
        memcpy(out + 1, &((const struct sockaddr_in *)a)->sin_addr, 4);
    } else if (a->ss_family == AF_INET6) {
        out[0] = AF_INET6;
        memcpy(out + 1, &((const struct sockaddr_in6 *)a)->sin6_addr, 16);
    }
}

/* Whether [kv] max_connections or max_connections_per_host leaves room for one more from
 * `host`; the reason in `why` when not. */
static bool room_for(struct sq_kv_server *s, const uint8_t host[17], char *why, size_t size)
{
    uint32_t all = 0, same = 0;
    for (struct conn *c = s->conns; c != NULL; c = c->next) {
        if (!c->dead && !c->relay && c->fd >= 0) {
            all++;
            same += memcmp(c->host, host, sizeof(c->host)) == 0;
        }
    }
    if (all >= s->cfg.kv_max_connections) {
        snprintf(why, size, "%u client connections are open ([kv] max_connections)", all);
        return false;
    }
    uint32_t per = s->cfg.kv_max_connections_per_host;
    if (per != 0 && same >= per) {
        snprintf(why, size, "%u connections are open from that address ([kv] "
                 "max_connections_per_host)", same);
        return false;
    }
    return true;
}

void sq__kvs_accept(struct sq_kv_server *s)
{
    for (;;) {
        struct sockaddr_storage addr;
        socklen_t len = sizeof(addr);
        memset(&addr, 0, sizeof(addr));
        int fd = accept4(s->lfd, (struct sockaddr *)&addr, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            break;
        }
        uint8_t host[17];
        host_of(&addr, host);
        char why[160];
        if (!room_for(s, host, why, sizeof(why))) {
            close(fd);
            s->stats.refused++;
            uint64_t now = sq__mono_ms();
            if (now - s->refused_logged_ms >= 1000) { /* at most one line a second */
                s->refused_logged_ms = now;
                sq__log(SQ_LOG_WARN, "kv: refused a client connection: %s", why);
            }
            continue;
        }
        struct conn *c = sq__kvs_conn_new(s, fd, false, 0);
        if (c != NULL) {
            memcpy(c->host, host, sizeof(host));
        }
        s->stats.accepted++;
    }
}

static void handle_frame(struct sq_kv_server *s, struct conn *c, const struct sq_kv_frame *f)
{
    if (c->relay) {
        sq__kvs_relay_answer(s, c, f);
        return;
    }
    if (f->flags & SQ_KV_F_LOCAL) {
        c->peer = true; /* only members relay */
    }
    sq__kvs_stat_request(s, c, f);
    if (f->op != SQ_KV_OP_HELLO && f->op != SQ_KV_OP_STATUS && sq__kvs_out_of_group(s)) {
        char why[sizeof(s->detached_why)];
        pthread_mutex_lock(&s->mu);
        memcpy(why, s->detached_why, sizeof(why));
        pthread_mutex_unlock(&s->mu);
        if (why[0] == '\0') {
            snprintf(why, sizeof(why), "member %u is not in the group now", s->my_id);
        }
        /* A request relayed by another member: that member is still routing to this one, and
         * its client must not leave it for that, so the answer is one it retries (SQ_EPEER);
         * a client of ours goes to another member (SQ_ENOQUORUM). */
        int status = (f->flags & SQ_KV_F_LOCAL) ? SQ_EPEER : SQ_ENOQUORUM;
        sq__kvs_reply_err(s, c->id, f->op, f->client, f->req_id, status, 0, "%s", why);
        return;
    }
    switch (f->op) {
    case SQ_KV_OP_HELLO: {
        char who[64];
        int n = snprintf(who, sizeof(who), "member=%u", s->my_id);
        struct sq_kv_frame a = {.op = f->op,
                                .req_id = f->req_id,
                                .client = f->client,
                                .str = who,
                                .str_len = (uint16_t)n};
        sq__kvs_conn_send(s, c, &a);
        break;
    }
    case SQ_KV_OP_STATUS:
        sq__kvs_status(s, c, f);
        break;
    case SQ_KV_OP_POOL_LIST:
        sq__kvs_pool_list(s, c, f);
        break;
    case SQ_KV_OP_POOL_CREATE:
        sq__kvs_pool_create(s, c, f);
        break;
    case SQ_KV_OP_PUT:
    case SQ_KV_OP_GET:
    case SQ_KV_OP_REMOVE:
    case SQ_KV_OP_LIST:
    case SQ_KV_OP_HISTORY:
    case SQ_KV_OP_WATCH:
        sq__kvs_key_request(s, c, f);
        break;
    case SQ_KV_OP_UNWATCH: {
        sq__kvs_drop_watch(s, c->id, f->client, f->version);
        struct sq_kv_frame a = {.op = f->op, .req_id = f->req_id, .client = f->client};
        sq__kvs_conn_send(s, c, &a);
        break;
    }
    default:
        sq__kvs_reply_err(s, c->id, f->op, f->client, f->req_id, SQ_EPROTO, 0,
                          "operation %u is not a request", f->op);
        break;
    }
}

void sq__kvs_conn_close(struct sq_kv_server *s, struct conn *c)
{
    if (c->fd >= 0) {
        epoll_ctl(s->ep, EPOLL_CTL_DEL, c->fd, NULL);
        sq__kvs_tls_drop(c);
        close(c->fd);
        c->fd = -1;
    }
    c->dead = true;
    if (!c->relay) {
        sq__kvs_unwatch(s, c->id, false, 0, 0);
    }
    for (uint32_t b = 0; b < ENTRY_BUCKETS; b++) {
        for (struct entry *e = s->ents[b], *next; e != NULL; e = next) {
            next = e->next;
            if (c->relay && e->via == c->id) {
                struct sq_kv_frame a = {
                    .op = e->op, .status = SQ_EPEER, .req_id = e->req_id, .client = e->client};
                char msg[96];
                a.str_len = (uint16_t)snprintf(
                    msg, sizeof(msg), "member %u failed while serving the request", c->member);
                a.str = msg;
                struct agg *agg = e->agg;
                uint64_t origin = e->origin;
                sq__kvs_entry_free(s, e);
                if (agg != NULL) {
                    sq__kvs_agg_part(s, agg, &a);
                } else {
                    sq__kvs_conn_send(s, sq__kvs_conn_by_id(s, origin), &a);
                }
            } else if (!c->relay && e->origin == c->id) {
                if (e->watch && e->via != 0) {
                    struct sq_kv_frame u = {.op = SQ_KV_OP_UNWATCH,
                                            .flags = SQ_KV_F_LOCAL,
                                            .client = e->client,
                                            .version = e->req_id};
                    sq__kvs_conn_send(s, sq__kvs_conn_by_id(s, e->via), &u);
                }
                if (e->agg == NULL) {
                    sq__kvs_entry_free(s, e);
                } else if (e->watch) {
                    struct agg *agg = e->agg;
                    struct sq_kv_frame a = {.op = e->op,
                                            .status = SQ_ECLOSED,
                                            .req_id = e->req_id,
                                            .client = e->client};
                    sq__kvs_entry_free(s, e);
                    sq__kvs_agg_part(s, agg, &a); /* answers nobody: the connection is gone */
                }
            }
        }
    }
}

/* Answers the frame at `off` of c->in with `status` and `why` (its request id, when its header
 * has come), then closes the connection: nothing after it can be read. */
static void refuse_stream(struct sq_kv_server *s, struct conn *c, int status, const char *why,
                          size_t off)
{
    struct sq_kv_frame a = {.op = SQ_KV_OP_HELLO, .status = status};
    a.str = why;
    a.str_len = (uint16_t)strlen(why);
    if (c->in.len - off >= 24) {
        memcpy(&a.req_id, c->in.p + off + 16, 8);
    }
    sq__kvs_conn_send(s, c, &a);
    sq__kvs_conn_flush(s, c);
    sq__log(SQ_LOG_WARN, "kv: closing a client connection: %s", why);
    c->dead = true;
}

void sq__kvs_conn_read(struct sq_kv_server *s, struct conn *c)
{
    for (;;) {
        if (sq__buf_reserve(&c->in, 65536) != 0) {
            c->dead = true;
            return;
        }
        size_t room = c->in.cap - c->in.len;
        ssize_t n;
        if (c->ssl != NULL) {
            n = sq__kvs_tls_recv(s, c, c->in.p + c->in.len, room);
            if (n == SQ_TLS_WANT_WRITE) {
                c->tls_want_write = true;
                c->tls_read_blocked = true;
                conn_arm(s, c, true);
            }
            if (n == SQ_TLS_CLOSED) {
                c->dead = true;
            }
            if (n < 0) {
                break;
            }
        } else {
            n = recv(c->fd, c->in.p + c->in.len, room, 0);
        }
        if (n == 0) {
            c->dead = true;
            break;
        }
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                c->dead = true;
            }
            break;
        }
        c->in.len += (size_t)n;
        size_t off = 0;
        for (;;) {
            long need = sq__kv_frame_need(c->in.p + off, c->in.len - off);
            char why[128] = "";
            struct sq_kv_frame f;
            if (need > 0 && (uint64_t)need > s->cfg.kv_max_frame_bytes && !c->relay) {
                /* Refused before its bytes are buffered: the header says how long it is. */
                char msg[160];
                snprintf(msg, sizeof(msg),
                         "a frame of %ld bytes is above this member's [kv] max_frame_bytes "
                         "(%" PRIu64 ")",
                         need, s->cfg.kv_max_frame_bytes);
                refuse_stream(s, c, SQ_EMSGSIZE, msg, off);
                return;
            }
            if (need < 0 ||
                (need > 0 && (size_t)need <= c->in.len - off &&
                 sq__kv_decode(c->in.p + off, (size_t)need, &f, why, sizeof(why)) != 0)) {
                /* The stream cannot be trusted past a bad frame: say why, then close. */
                if (why[0] == '\0') {
                    snprintf(why, sizeof(why), "impossible frame length");
                }
                refuse_stream(s, c, SQ_EPROTO, why, off);
                return;
            }
            if (need == 0 || (size_t)need > c->in.len - off) {
                break;
            }
            s->frame_recv_us = (f.flags & SQ_KV_F_TRACE) ? sq__mono_us() : 0;
            handle_frame(s, c, &f);
            off += (size_t)need;
            if (c->dead) {
                return;
            }
        }
        if (off > 0) {
            memmove(c->in.p, c->in.p + off, c->in.len - off);
            c->in.len -= off;
        }
        if (c->in.cap > (1u << 20) && c->in.len < 65536) {
            uint8_t *p = realloc(c->in.p, 65536);
            if (p != NULL) {
                c->in.p = p;
                c->in.cap = 65536;
            }
        }
        if (c->ssl == NULL && (size_t)n < room) {
            break; /* the socket is empty: no read just to hear EAGAIN (epoll is level-triggered) */
        }
        /* TLS reads a record at a time and may hold more than the socket shows: read on until
         * it says it wants the socket. */
    }
    if (c->ssl != NULL && !c->dead && !c->tls_read_blocked &&
        (c->out.len > c->out.off || !SSL_is_init_finished(c->ssl))) {
        sq__kvs_conn_flush(s, c); /* what waited for the handshake, or its next step */
    }
}

/* ---- in-process clients (kvserver.h) ---- */

int sq__kv_server_inproc_open(struct sq_kv_server *s,
                              void (*answer)(void *arg, const struct sq_kv_frame *f), void *arg,
                              uint64_t *id)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return SQ_ENOMEM;
    }
    c->fd = -1;
    c->answer = answer;
    c->answer_arg = arg;
    pthread_mutex_lock(&s->svc_mu);
    c->id = ++s->next_conn;
    c->next = s->conns;
    s->conns = c;
    *id = c->id;
    pthread_mutex_unlock(&s->svc_mu);
    return 0;
}

int sq__kv_server_inproc_request(struct sq_kv_server *s, uint64_t id, const uint8_t *frame,
                                 size_t len)
{
    pthread_mutex_lock(&s->svc_mu);
    struct conn *c = s->svc_open && !atomic_load(&s->stop) ? sq__kvs_conn_by_id(s, id) : NULL;
    struct sq_kv_frame f;
    if (c == NULL || sq__kv_frame_need(frame, len) != (long)len ||
        sq__kv_decode(frame, len, &f, NULL, 0) != 0) {
        pthread_mutex_unlock(&s->svc_mu);
        return SQ_ECLOSED;
    }
    s->frame_recv_us = (f.flags & SQ_KV_F_TRACE) ? sq__mono_us() : 0;
    handle_frame(s, c, &f);
    /* What the service thread does after the frames it reads: ops to multicast, relays to
     * send. It sleeps in epoll meanwhile, so it is woken only when something is left over. */
    sq__kvs_flush_outbox(s);
    bool left = sq__kvs_flush_conns(s) || s->outbox != NULL;
    pthread_mutex_unlock(&s->svc_mu);
    if (left) {
        sq__kvs_wake(s);
    }
    return 0;
}

void sq__kv_server_inproc_close(struct sq_kv_server *s, uint64_t id)
{
    pthread_mutex_lock(&s->svc_mu);
    struct conn *c = sq__kvs_conn_by_id(s, id);
    if (c != NULL) {
        sq__kvs_conn_close(s, c); /* dead: the sweep frees it */
        c->answer = NULL;
    }
    pthread_mutex_unlock(&s->svc_mu);
}
