/* kvserver.c: the key-value service of a squalld member.
 *
 * Threads. The member's event-loop thread delivers operations: it applies them to the shard's
 * store (src/kv/store.c) and hands the answers for this member's clients, and the updates for
 * watchers, to the service thread through a queue. The service thread owns every client
 * connection (epoll): it decodes frames, answers reads from the stores, multicasts writes into
 * the key's shard, or relays a request to a member of that shard over that member's client port.
 * `mu` guards what both threads touch; member calls are never made while holding it (the loop
 * thread holds the member's lock while it runs our callbacks).
 *
 * Writes are applied in the shard's total order, so every replica gives the same answer to a
 * conditional put; the answer goes back once the op is delivered (volatile and trigger stores:
 * every member of the shard has it) or persisted at every member (persistent stores). A stable
 * read multicasts a barrier and answers at the barrier's place in the order. */
#include "server/kvserver.h"
#include "server/kv_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <xxhash.h>

#include "common.h"
#include "config.h"
#include "hash.h"
#include "kv/buf.h"
#include "kv/store.h"
#include "kv/wire.h"
#include "log.h"

#define MAX_OUTBUF (256u << 20)  /* a client this far behind is dropped */
#define REQUEST_TIMEOUT_MS 60000 /* a request still in flight after this is failed */

void sq__kvs_wake(struct sq_kv_server *s)
{
    uint64_t one = 1;
    ssize_t w = write(s->efd, &one, sizeof(one));
    (void)w; /* a full counter still wakes the thread */
}

/* ---- connections ---- */

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
    if (c->want_out == out) {
        return;
    }
    c->want_out = out;
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.u64 = c->id};
    epoll_ctl(s->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void conn_flush(struct sq_kv_server *s, struct conn *c)
{
    while (c->out.off < c->out.len) {
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
        conn_arm(s, c, c->out.len > 0);
    }
}

void sq__kvs_conn_send(struct sq_kv_server *s, struct conn *c, const struct sq_kv_frame *f)
{
    if (c == NULL || c->dead) {
        return;
    }
    size_t n = sq__kv_frame_bytes(f);
    if (c->out.len + n > MAX_OUTBUF || sq__buf_reserve(&c->out, n) != 0) {
        sq__log(SQ_LOG_WARN, "kv: dropping a client %" PRIu64 " that does not read its answers",
                c->id);
        c->dead = true;
        return;
    }
    long w = sq__kv_encode(f, c->out.p + c->out.len, n);
    SQ_ASSERT(w == (long)n);
    c->out.len += n;
    conn_arm(s, c, true);
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

/* ---- pools and routing (under mu) ---- */

static const struct pool *pool_of_key(const struct sq_kv_server *s, const char *key, size_t len)
{
    const struct pool *best = NULL;
    for (uint32_t i = 0; i < s->npools; i++) {
        const struct pool *p = &s->pools[i];
        if (len > (size_t)p->len + 1 && memcmp(key, p->path, p->len) == 0 && key[p->len] == '/' &&
            (best == NULL || p->len > best->len)) {
            best = p;
        }
    }
    return best;
}

/* A prefix for list or watch: inside one pool ("/orders/" or "/orders/2026-"). */
static const struct pool *pool_of_prefix(const struct sq_kv_server *s, const char *pre, size_t len)
{
    const struct pool *best = NULL;
    for (uint32_t i = 0; i < s->npools; i++) {
        const struct pool *p = &s->pools[i];
        if (len >= (size_t)p->len + 1 && memcmp(pre, p->path, p->len) == 0 && pre[p->len] == '/' &&
            (best == NULL || p->len > best->len)) {
            best = p;
        }
    }
    return best;
}

/* The key's shard: XXH64 of the whole key (seed 0) modulo the pool's shards. */
static uint32_t shard_of_key(const struct pool *p, const char *key, size_t len)
{
    return (uint32_t)(XXH64(key, len, 0) % p->shards);
}

/* A member serving (sg, shard): UINT32_MAX when none; `pick` spreads relayed requests. */
static uint32_t server_of(const struct sq_kv_server *s, uint32_t sg, uint32_t shard, uint64_t pick)
{
    uint32_t cands[SQ_MAX_MEMBERS], n = 0;
    for (uint32_t r = 0; r < s->nmembers; r++) {
        if (s->shard_of[sg * s->nmembers + r] == shard) {
            cands[n++] = s->ids[r];
        }
    }
    return n == 0 ? UINT32_MAX : cands[pick % n];
}

static bool valid_path(const char *p, size_t len, bool pool)
{
    if (len < 2 || p[0] != '/' || (pool && (p[len - 1] == '/' || len > MAX_POOL_PATH))) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (p[i] == '\0' || (i > 0 && p[i] == '/' && p[i - 1] == '/')) {
            return false;
        }
    }
    return true;
}

const char *sq__kvs_store_name(int t)
{
    return t == SQ_STORE_PERSISTENT ? "persistent" : t == SQ_STORE_TRIGGER ? "trigger" : "volatile";
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
    if (epoll_ctl(s->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        close(fd);
        free(c);
        return NULL;
    }
    c->next = s->conns;
    s->conns = c;
    return c;
}

/* ---- requests from clients ---- */

static void key_request(struct sq_kv_server *s, struct conn *c, const struct sq_kv_frame *f)
{
    char why[300] = "";
    bool prefix_watch = f->op == SQ_KV_OP_WATCH && f->key_len > 0 && f->key[f->key_len - 1] == '/';
    bool fan = f->op == SQ_KV_OP_LIST || prefix_watch;
    if (!valid_path(f->key, f->key_len, false) || (!fan && f->key[f->key_len - 1] == '/')) {
        sq__kvs_reply_err(
            s, c->id, f->op, f->client, f->req_id, SQ_EINVAL, 0,
            "'%.*s' is not a key: keys are paths such as /orders/42 (no '//', no NUL)",
            (int)SQ_MIN(f->key_len, 200u), f->key);
        return;
    }
    if (f->op == SQ_KV_OP_WATCH) {
        /* a client watching again (after an error) replaces what it had registered */
        sq__kvs_drop_watch(s, c->id, f->client, f->req_id);
    }
    pthread_mutex_lock(&s->mu);
    bool meta_ready = s->meta_ready;
    pthread_mutex_unlock(&s->mu);
    if (!meta_ready) {
        sq__kvs_reply_err(s, c->id, f->op, f->client, f->req_id, SQ_ESTATE, 0,
                          "member %u is still receiving the pool table", s->my_id);
        return;
    }
    pthread_mutex_lock(&s->mu);
    const struct pool *pp =
        fan ? pool_of_prefix(s, f->key, f->key_len) : pool_of_key(s, f->key, f->key_len);
    struct pool p = pp != NULL ? *pp : (struct pool){0};
    uint32_t my_shard = pp != NULL ? s->my_shard[p.sg] : SQ_NO_SHARD;
    int store = pp != NULL ? s->cfg.subgroups[p.sg].store : 0;
    uint32_t max_payload = pp != NULL ? s->cfg.subgroups[p.sg].max_payload : 0;
    uint32_t targets[SQ_MAX_SHARDS], ntargets = 0;
    uint32_t servers[SQ_MAX_SHARDS];
    if (pp != NULL) {
        uint32_t first = fan ? 0 : shard_of_key(&p, f->key, f->key_len);
        uint32_t last = fan ? p.shards - 1 : first;
        if (fan && (f->flags & SQ_KV_F_LOCAL)) {
            /* a member fanning out asks each shard for its own part only */
            first = last = my_shard != SQ_NO_SHARD && my_shard < p.shards ? my_shard : 0;
        }
        for (uint32_t k = first; k <= last; k++) {
            targets[ntargets] = k;
            servers[ntargets++] = server_of(s, p.sg, k, f->req_id);
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (pp == NULL) {
        sq__kvs_reply_err(s, c->id, f->op, f->client, f->req_id, SQ_ENOPOOL, 0,
                          "no pool holds '%.*s' (create one with: squall pool create PATH TYPE)",
                          (int)SQ_MIN(f->key_len, 200u), f->key);
        return;
    }
    /* what the pool's store type allows */
    const char *refuse = NULL;
    if (store == SQ_STORE_TRIGGER && f->op != SQ_KV_OP_PUT && f->op != SQ_KV_OP_WATCH) {
        refuse = "trigger pools keep nothing: only put and watch";
    } else if (store == SQ_STORE_TRIGGER && (f->flags & (SQ_KV_F_IF_VERSION | SQ_KV_F_IF_ABSENT))) {
        refuse = "trigger pools keep no versions: conditional puts need a volatile or "
                 "persistent pool";
    } else if (store == SQ_STORE_VOLATILE && f->op == SQ_KV_OP_GET &&
               (f->flags & (SQ_KV_F_AT_VERSION | SQ_KV_F_AT_TIME))) {
        refuse = "volatile pools keep only the latest value: reading at a version or time "
                 "needs a persistent pool";
    }
    if (refuse != NULL) {
        sq__kvs_reply_err(s, c->id, f->op, f->client, f->req_id, SQ_ENOTSUP, 0, "%s", refuse);
        return;
    }
    if (f->op == SQ_KV_OP_PUT &&
        (size_t)f->value_len + SQ_KV_OP_HEADER_BYTES + f->key_len > max_payload) {
        sq__kvs_reply_err(s, c->id, f->op, f->client, f->req_id, SQ_EMSGSIZE, 0,
                          "a value of %u bytes is over this pool's limit of %zu bytes for this key",
                          f->value_len, (size_t)max_payload - SQ_KV_OP_HEADER_BYTES - f->key_len);
        return;
    }
    struct agg *agg = NULL;
    if (fan) {
        agg = calloc(1, sizeof(*agg));
        if (agg == NULL) {
            sq__kvs_reply_err(s, c->id, f->op, f->client, f->req_id, SQ_ENOMEM, 0, "out of memory");
            return;
        }
        *agg = (struct agg){.origin = c->id,
                            .client = f->client,
                            .req_id = f->req_id,
                            .op = f->op,
                            .remaining = (int)ntargets};
    }
    for (uint32_t i = 0; i < ntargets; i++) {
        bool mine = targets[i] == my_shard;
        if (!mine) {
            if ((f->flags & SQ_KV_F_LOCAL) || servers[i] == UINT32_MAX) {
                /* relayed to us on a view that has changed since, or nobody serves it */
                int st = SQ_ESTATE;
                snprintf(why, sizeof(why), "%s",
                         servers[i] == UINT32_MAX
                             ? "no member serves the key's shard now (the view is changing)"
                             : "this member does not serve the key's shard now");
                if (agg != NULL) {
                    agg->status = st;
                    snprintf(agg->msg, sizeof(agg->msg), "%.190s", why);
                    if (--agg->remaining == 0) {
                        sq__kvs_agg_finish(s, agg);
                    }
                } else {
                    sq__kvs_reply_err(s, c->id, f->op, f->client, f->req_id, st, 0, "%s", why);
                }
                continue;
            }
            sq__kvs_relay(s, c->id, f, servers[i], agg);
            if (agg != NULL && agg->remaining == 0) {
                sq__kvs_agg_finish(s, agg);
            }
            continue;
        }
        /* this member's shard */
        struct sq_kv_frame sub = {
            .op = f->op, .status = 0, .req_id = f->req_id, .client = f->client};
        switch (f->op) {
        case SQ_KV_OP_PUT:
        case SQ_KV_OP_REMOVE: {
            struct sq_kv_op op = {
                .kind = f->op == SQ_KV_OP_PUT ? SQ_KV_PUT : SQ_KV_REMOVE,
                .flags = (uint8_t)(((f->flags & SQ_KV_F_IF_VERSION) ? SQ_KV_OPF_IF_VERSION : 0) |
                                   ((f->flags & SQ_KV_F_IF_ABSENT) ? SQ_KV_OPF_IF_ABSENT : 0)),
                .client = f->client,
                .req_id = f->req_id,
                .expect = f->version,
                .origin = s->my_id,
                .key = f->key,
                .key_len = f->key_len,
                .value = f->value,
                .value_len = f->op == SQ_KV_OP_PUT ? f->value_len : 0};
            /* while the view is inadequate the op waits in the outbox */
            sq__kvs_local_op(s, c->id, f, p.sg, &op);
            break;
        }
        case SQ_KV_OP_GET:
            if (f->flags & SQ_KV_F_STABLE) {
                struct sq_kv_op op = {
                    .kind = SQ_KV_BARRIER,
                    .flags = (uint8_t)(f->flags &
                                       (SQ_KV_F_AT_VERSION | SQ_KV_F_AT_TIME | SQ_KV_F_SIZE_ONLY)),
                    .client = f->client,
                    .req_id = f->req_id,
                    .expect = (f->flags & SQ_KV_F_AT_TIME) ? f->time : f->version,
                    .origin = s->my_id,
                    .key = f->key,
                    .key_len = f->key_len};
                sq__kvs_local_op(s, c->id, f, p.sg, &op);
            } else {
                sq__kvs_answer_get(s, c, f, p.sg);
            }
            break;
        case SQ_KV_OP_HISTORY:
        case SQ_KV_OP_LIST: {
            struct sq__buf b = {0};
            uint32_t n = 0;
            int rc = sq__kvs_local_items(s, f, p.sg, &b, &n, why, sizeof(why));
            if (agg != NULL) {
                sub.status = rc;
                sub.str = why;
                sub.str_len = (uint16_t)strlen(why);
                sub.value = b.p;
                sub.value_len = (uint32_t)b.len;
                sub.count = n;
                sq__kvs_agg_part(s, agg, &sub);
            } else if (rc != 0) {
                sq__kvs_reply_err(s, c->id, f->op, f->client, f->req_id, rc, 0, "%s",
                                  why[0] ? why : sq_strerror(rc));
            } else {
                sq__kvs_send_items(s, c->id, f, &b, n);
            }
            sq__buf_free(&b);
            break;
        }
        case SQ_KV_OP_WATCH: {
            /* A watch may carry one first version per shard (a client watching again after a
             * failure): u64 little-endian values, by shard, in the value. */
            struct sq_kv_frame wf = *f;
            const uint8_t *from = f->value;
            if (f->value_len >= 8u * (targets[i] + 1)) {
                wf.version = 0;
                for (int b = 7; b >= 0; b--) {
                    wf.version = (wf.version << 8) | from[8u * targets[i] + (unsigned)b];
                }
            }
            if (agg != NULL) {
                /* each shard acknowledges through the aggregate; events go straight out */
                sub.status = sq__kvs_watch_local(s, c->id, &wf, p.sg, false, why, sizeof(why));
                sub.str = why;
                sub.str_len = (uint16_t)strlen(why);
                sq__kvs_agg_part(s, agg, &sub);
            } else {
                (void)sq__kvs_watch_local(s, c->id, &wf, p.sg, true, why, sizeof(why));
            }
            break;
        }
        default:
            break;
        }
    }
}

static void pool_create(struct sq_kv_server *s, struct conn *c, const struct sq_kv_frame *f)
{
    if (!valid_path(f->key, f->key_len, true)) {
        sq__kvs_reply_err(
            s, c->id, f->op, f->client, f->req_id, SQ_EINVAL, 0,
            "'%.*s' is not a pool path: /name[/name...], at most %d bytes, no trailing '/'",
            (int)SQ_MIN(f->key_len, 200u), f->key, MAX_POOL_PATH);
        return;
    }
    char want[SQ_KV_MAX_STR + 1];
    memcpy(want, f->str, f->str_len);
    want[f->str_len] = '\0';
    int sg = -1;
    for (uint32_t g = 0; g < s->cfg.nsubgroups && sg < 0; g++) {
        if ((int)g != s->meta && strcmp(s->cfg.subgroups[g].name, want) == 0) {
            sg = (int)g;
        }
    }
    for (uint32_t g = 0; g < s->cfg.nsubgroups && sg < 0; g++) {
        if ((int)g != s->meta && strcmp(sq__kvs_store_name(s->cfg.subgroups[g].store), want) == 0) {
            sg = (int)g;
        }
    }
    if (sg < 0) {
        char names[400] = "";
        size_t o = 0;
        for (uint32_t g = 0; g < s->cfg.nsubgroups && o < sizeof(names) - 80; g++) {
            if ((int)g != s->meta) {
                o += (size_t)snprintf(names + o, sizeof(names) - o, "%s%s (%s)", o ? ", " : "",
                                      s->cfg.subgroups[g].name,
                                      sq__kvs_store_name(s->cfg.subgroups[g].store));
            }
        }
        sq__kvs_reply_err(
            s, c->id, f->op, f->client, f->req_id, SQ_EINVAL, 0,
            "'%s' is neither a store type (volatile, persistent, trigger) nor a subgroup "
            "of this group; subgroups: %s",
            want, names[0] ? names : "none");
        return;
    }
    uint32_t shards = f->count == 0 ? s->cfg.subgroups[sg].shards : f->count;
    if (shards > s->cfg.subgroups[sg].shards) {
        sq__kvs_reply_err(s, c->id, f->op, f->client, f->req_id, SQ_EINVAL, 0,
                          "subgroup %s has %u shards: a pool on it can use at most that many",
                          s->cfg.subgroups[sg].name, s->cfg.subgroups[sg].shards);
        return;
    }
    pthread_mutex_lock(&s->mu);
    uint32_t meta_shard = s->my_shard[s->meta];
    uint32_t server = server_of(s, (uint32_t)s->meta, 0, f->req_id);
    pthread_mutex_unlock(&s->mu);
    if (meta_shard == SQ_NO_SHARD) {
        if (server == UINT32_MAX || (f->flags & SQ_KV_F_LOCAL)) {
            sq__kvs_reply_err(s, c->id, f->op, f->client, f->req_id, SQ_ESTATE, 0,
                              "no member serves the metadata subgroup now");
        } else {
            sq__kvs_relay(s, c->id, f, server, NULL);
        }
        return;
    }
    struct sq_kv_op op = {.kind = SQ_KV_POOL_CREATE,
                          .client = f->client,
                          .req_id = f->req_id,
                          .origin = s->my_id,
                          .arg = (uint32_t)sg | (shards << 16),
                          .key = f->key,
                          .key_len = f->key_len};
    sq__kvs_local_op(s, c->id, f, (uint32_t)s->meta, &op);
}

static void pool_list(struct sq_kv_server *s, struct conn *c, const struct sq_kv_frame *f)
{
    struct sq__buf b = {0};
    uint32_t n = 0;
    pthread_mutex_lock(&s->mu);
    if (!s->meta_ready) {
        pthread_mutex_unlock(&s->mu);
        sq__kvs_reply_err(s, c->id, f->op, f->client, f->req_id, SQ_ESTATE, 0,
                          "member %u is still receiving the pool table", s->my_id);
        return;
    }
    for (uint32_t i = 0; i < s->npools; i++) {
        const struct pool *p = &s->pools[i];
        if (sq__buf_reserve(&b, SQ_KV_ITEM_HEADER_BYTES + p->len) != 0) {
            break;
        }
        struct sq_kv_item_raw it = {.version = p->sg,
                                    .timestamp = (uint64_t)s->cfg.subgroups[p->sg].store,
                                    .size = p->shards,
                                    .key = p->path,
                                    .key_len = p->len};
        b.len += sq__kv_item_encode(&it, b.p + b.len);
        n++;
    }
    pthread_mutex_unlock(&s->mu);
    struct sq_kv_frame a = {.op = f->op,
                            .req_id = f->req_id,
                            .client = f->client,
                            .count = n,
                            .value = b.p,
                            .value_len = (uint32_t)b.len};
    sq__kvs_conn_send(s, c, &a);
    sq__buf_free(&b);
}

static void handle_frame(struct sq_kv_server *s, struct conn *c, const struct sq_kv_frame *f)
{
    if (c->relay) {
        sq__kvs_relay_answer(s, c, f);
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
        pool_list(s, c, f);
        break;
    case SQ_KV_OP_POOL_CREATE:
        pool_create(s, c, f);
        break;
    case SQ_KV_OP_PUT:
    case SQ_KV_OP_GET:
    case SQ_KV_OP_REMOVE:
    case SQ_KV_OP_LIST:
    case SQ_KV_OP_HISTORY:
    case SQ_KV_OP_WATCH:
        key_request(s, c, f);
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

/* Once a second: requests that waited too long are failed; closed connections are freed. */
static void sweep(struct sq_kv_server *s)
{
    uint64_t now = sq__mono_ms();
    if (now - s->last_sweep_ms < 1000) {
        return;
    }
    s->last_sweep_ms = now;
    for (uint32_t b = 0; b < ENTRY_BUCKETS; b++) {
        for (struct entry *e = s->ents[b], *next; e != NULL; e = next) {
            next = e->next;
            if (!e->watch && now - e->created_ms > REQUEST_TIMEOUT_MS) {
                struct agg *agg = e->agg;
                uint64_t origin = e->origin, client = e->client, req = e->req_id;
                uint8_t op = e->op;
                sq__kvs_entry_free(s, e);
                if (agg != NULL) {
                    struct sq_kv_frame a = {
                        .op = op, .status = SQ_ETIMEDOUT, .client = client, .req_id = req};
                    sq__kvs_agg_part(s, agg, &a);
                } else {
                    sq__kvs_reply_err(s, origin, op, client, req, SQ_ETIMEDOUT, 0,
                                      "not answered within %d s (is the shard below min_members?)",
                                      REQUEST_TIMEOUT_MS / 1000);
                }
                next = s->ents[b]; /* the chain may have changed: start it over */
            }
        }
    }
    for (struct conn **pc = &s->conns; *pc != NULL;) {
        struct conn *c = *pc;
        if (c->dead) {
            if (c->fd >= 0) {
                sq__kvs_conn_close(s, c);
            }
            *pc = c->next;
            sq__buf_free(&c->in);
            sq__buf_free(&c->out);
            free(c);
        } else {
            pc = &c->next;
        }
    }
}

static void conn_read(struct sq_kv_server *s, struct conn *c)
{
    for (;;) {
        if (sq__buf_reserve(&c->in, 65536) != 0) {
            c->dead = true;
            return;
        }
        ssize_t n = recv(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len, 0);
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
            if (need < 0 ||
                (need > 0 && (size_t)need <= c->in.len - off &&
                 sq__kv_decode(c->in.p + off, (size_t)need, &f, why, sizeof(why)) != 0)) {
                /* The stream cannot be trusted past a bad frame: say why, then close. */
                struct sq_kv_frame a = {.op = SQ_KV_OP_HELLO, .status = SQ_EPROTO};
                if (why[0] == '\0') {
                    snprintf(why, sizeof(why), "impossible frame length");
                }
                a.str = why;
                a.str_len = (uint16_t)strlen(why);
                if (c->in.len - off >= 24) {
                    memcpy(&a.req_id, c->in.p + off + 16, 8);
                }
                sq__kvs_conn_send(s, c, &a);
                conn_flush(s, c);
                sq__log(SQ_LOG_WARN, "kv: closing a client connection: %s", why);
                c->dead = true;
                return;
            }
            if (need == 0 || (size_t)need > c->in.len - off) {
                break;
            }
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
    }
}

static void *service_main(void *arg)
{
    struct sq_kv_server *s = arg;
    struct epoll_event evs[64];
    while (!atomic_load(&s->stop)) {
        int timeout = s->outbox != NULL ? 2 : 500;
        int n = epoll_wait(s->ep, evs, 64, timeout);
        for (int i = 0; i < n; i++) {
            uint64_t id = evs[i].data.u64;
            if (id == 0) {
                for (;;) {
                    int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) {
                        break;
                    }
                    sq__kvs_conn_new(s, fd, false, 0);
                }
                continue;
            }
            if (id == 1) {
                uint64_t v;
                ssize_t r = read(s->efd, &v, sizeof(v));
                (void)r;
                continue;
            }
            struct conn *c = sq__kvs_conn_by_id(s, id);
            if (c == NULL) {
                continue;
            }
            if (evs[i].events & EPOLLIN) {
                conn_read(s, c);
            }
            if (!c->dead && (evs[i].events & EPOLLOUT)) {
                conn_flush(s, c);
            }
            if (!c->dead && (evs[i].events & (EPOLLERR | EPOLLHUP)) && !(evs[i].events & EPOLLIN)) {
                c->dead = true;
            }
            if (c->dead) {
                sq__kvs_conn_close(s, c);
            }
        }
        sq__kvs_process_dones(s);
        sq__kvs_flush_outbox(s);
        for (struct conn *c = s->conns; c != NULL; c = c->next) {
            if (!c->dead && c->out.len > c->out.off) {
                conn_flush(s, c);
            }
            if (c->dead && c->fd >= 0) {
                sq__kvs_conn_close(s, c);
            }
        }
        sweep(s);
    }
    return NULL;
}

bool sq__kv_server_ready(struct sq_kv_server *s)
{
    pthread_mutex_lock(&s->mu);
    bool ready = s->have_view && s->meta_ready;
    for (uint32_t g = 0; ready && g < s->cfg.nsubgroups; g++) {
        ready = (int)g == s->meta || s->my_shard[g] == SQ_NO_SHARD || s->store[g] != NULL;
    }
    pthread_mutex_unlock(&s->mu);
    return ready;
}

int sq__kv_config_serves(const char *config_path)
{
    static struct sq_config cfg; /* large: not on the stack; called once, from main */
    char err[256];
    if (sq__config_load(&cfg, config_path, err, sizeof(err)) != 0) {
        return 0;
    }
    int r = sq__config_rank_of(&cfg, cfg.self_id);
    return r >= 0 && cfg.members[r].client_port != 0;
}

int sq__kv_server_create(struct sq_kv_server **out, sq_member *m, const char *config_path,
                         char *err, size_t err_size)
{
    *out = NULL;
    struct sq_kv_server *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return SQ_ENOMEM;
    }
    s->lfd = s->efd = s->ep = -1;
    int rc = sq__config_load(&s->cfg, config_path, err, err_size);
    if (rc != 0) {
        free(s);
        return rc;
    }
    s->m = m;
    s->my_id = s->cfg.self_id;
    int r = sq__config_rank_of(&s->cfg, s->my_id);
    s->client_port = s->cfg.members[r].client_port;
    s->meta = sq__config_subgroup(&s->cfg, "meta");
    const struct sq_subgroup_cfg *meta = s->meta >= 0 ? &s->cfg.subgroups[s->meta] : NULL;
    if (s->client_port == 0) {
        snprintf(err, err_size, "%s: [member.%u] has no client_port", config_path, s->my_id);
        rc = SQ_ECONFIG;
    } else if (meta == NULL || !meta->persistent || meta->shards != 1 ||
               (meta->max_members != 0 && meta->max_members < s->cfg.nmembers)) {
        snprintf(err, err_size,
                 "%s: the key-value service needs [subgroup.meta] with delivery "
                 "= persistent, one shard and every member (it keeps the pool table)",
                 config_path);
        rc = SQ_ECONFIG;
    }
    for (uint32_t g = 0; rc == 0 && g < s->cfg.nsubgroups; g++) {
        s->logcap = SQ_MAX(s->logcap, (size_t)s->cfg.subgroups[g].max_payload);
    }
    if (rc == 0) {
        s->logbuf = malloc(s->logcap);
        s->wb = calloc(WATCH_BUCKETS, sizeof(*s->wb));
        s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        s->ep = epoll_create1(EPOLL_CLOEXEC);
        if (s->logbuf == NULL || s->wb == NULL) {
            rc = SQ_ENOMEM;
        } else if (s->efd < 0 || s->ep < 0) {
            snprintf(err, err_size, "eventfd/epoll: %s", strerror(errno));
            rc = SQ_EIO;
        }
    }
    if (rc != 0) {
        sq__kv_server_destroy(s);
        return rc;
    }
    pthread_mutex_init(&s->mu, NULL);
    s->next_conn = 1; /* 0 is the listener, 1 the wake-up */
    for (uint32_t g = 0; g < SQ_MAX_SUBGROUPS; g++) {
        s->my_shard[g] = SQ_NO_SHARD;
    }
    sq_member_on_deliver(m, sq__kvs_on_deliver, s);
    sq_member_on_view(m, sq__kvs_on_view, s);
    sq_member_on_state(m, sq__kvs_save_state, sq__kvs_load_state, s);
    sq_member_on_persisted(m, sq__kvs_on_persisted, s);
    *out = s;
    return 0;
}

int sq__kv_server_start(struct sq_kv_server *s, char *err, size_t err_size)
{
    int r = sq__config_rank_of(&s->cfg, s->my_id);
    char port[16];
    snprintf(port, sizeof(port), "%u", s->client_port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE},
                    *ai = NULL;
    int gai = getaddrinfo(s->cfg.members[r].host, port, &hints, &ai);
    if (gai != 0 || ai == NULL) {
        snprintf(err, err_size, "client address %s:%s: %s", s->cfg.members[r].host, port,
                 gai_strerror(gai));
        return SQ_ECONFIG;
    }
    s->lfd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (s->lfd >= 0) {
        setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    }
    if (s->lfd < 0 || bind(s->lfd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(s->lfd, 128) != 0) {
        snprintf(err, err_size, "cannot listen on client port %s:%s: %s", s->cfg.members[r].host,
                 port, strerror(errno));
        freeaddrinfo(ai);
        return SQ_EIO;
    }
    freeaddrinfo(ai);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0};
    epoll_ctl(s->ep, EPOLL_CTL_ADD, s->lfd, &ev);
    ev.data.u64 = 1;
    epoll_ctl(s->ep, EPOLL_CTL_ADD, s->efd, &ev);
    if (pthread_create(&s->thread, NULL, service_main, s) != 0) {
        snprintf(err, err_size, "cannot start the service thread");
        return SQ_ENOMEM;
    }
    s->started = true;
    return 0;
}

void sq__kv_server_stop(struct sq_kv_server *s)
{
    if (s == NULL || !s->started) {
        return;
    }
    atomic_store(&s->stop, true);
    sq__kvs_wake(s);
    pthread_join(s->thread, NULL);
    s->started = false;
    for (struct conn *c = s->conns; c != NULL; c = c->next) {
        if (c->fd >= 0) {
            conn_flush(s, c);
            close(c->fd);
            c->fd = -1;
        }
    }
}

void sq__kv_server_destroy(struct sq_kv_server *s)
{
    if (s == NULL) {
        return;
    }
    sq__kv_server_stop(s);
    while (s->conns != NULL) {
        struct conn *c = s->conns;
        s->conns = c->next;
        if (c->fd >= 0) {
            close(c->fd);
        }
        sq__buf_free(&c->in);
        sq__buf_free(&c->out);
        free(c);
    }
    for (uint32_t b = 0; b < ENTRY_BUCKETS; b++) {
        while (s->ents[b] != NULL) {
            struct entry *e = s->ents[b];
            s->ents[b] = e->next;
            if (e->agg != NULL && e->agg->remaining <= 1) {
                sq__buf_free(&e->agg->items);
                free(e->agg);
            } else if (e->agg != NULL) {
                e->agg->remaining--;
            }
            free(e->opbuf);
            free(e);
        }
    }
    if (s->wb != NULL) {
        for (uint32_t b = 0; b < WATCH_BUCKETS; b++) {
            while (s->wb[b] != NULL) {
                struct watch *w = s->wb[b];
                s->wb[b] = w->next;
                free(w->target);
                free(w);
            }
        }
    }
    struct done *lists[SQ_MAX_SUBGROUPS + 1];
    lists[0] = s->ready_head;
    for (uint32_t g = 0; g < SQ_MAX_SUBGROUPS; g++) {
        lists[g + 1] = s->wait_head[g];
    }
    for (uint32_t i = 0; i <= SQ_MAX_SUBGROUPS; i++) {
        for (struct done *d = lists[i], *next; d != NULL; d = next) {
            next = d->next;
            free(d->key);
            free(d->value);
            free(d);
        }
    }
    for (uint32_t g = 0; g < SQ_MAX_SUBGROUPS; g++) {
        sq__kv_store_destroy(s->store[g]);
    }
    if (s->lfd >= 0) {
        close(s->lfd);
    }
    if (s->efd >= 0) {
        close(s->efd);
    }
    if (s->ep >= 0) {
        close(s->ep);
    }
    free(s->wb);
    free(s->logbuf);
    if (s->m != NULL) {
        pthread_mutex_destroy(&s->mu);
    }
    free(s);
}
