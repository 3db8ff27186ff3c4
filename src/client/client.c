/* client.c: the key-value client library (include/squall/client.h): one TCP connection to a
 * member, an I/O thread that sends, receives and retries (client_io.c), and blocking calls built
 * on the asynchronous ones. */
#include "squall/client.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "client/client_internal.h"
#include "common.h"
#include "kv/wire.h"

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

/* ---- public calls ---- */

static int client_open(sq_client **out, const char *members, int timeout_ms, bool spread,
                       const sq_client_tls *tls, char *err, size_t err_size);

int sq_client_open(sq_client **out, const char *members, int timeout_ms, char *err, size_t err_size)
{
    return client_open(out, members, timeout_ms, true, NULL, err, err_size);
}

int sq_client_open_tls(sq_client **out, const char *members, int timeout_ms,
                       const sq_client_tls *tls, char *err, size_t err_size)
{
    return client_open(out, members, timeout_ms, true, tls, err, err_size);
}

int sq__client_open_first(sq_client **out, const char *members, int timeout_ms,
                          const sq_client_tls *tls, char *err, size_t err_size)
{
    return client_open(out, members, timeout_ms, false, tls, err, err_size);
}

/* Frees what client_open made before the I/O thread. */
static void free_unstarted(sq_client *c)
{
    if (c->ssl != NULL) {
        SSL_free(c->ssl);
    }
    if (c->fd >= 0) {
        close(c->fd);
    }
    SSL_CTX_free(c->tls);
    close(c->wake[0]);
    close(c->wake[1]);
    pthread_mutex_destroy(&c->mu);
    pthread_mutex_destroy(&c->tls_mu);
    pthread_cond_destroy(&c->cb_done);
    free(c->out.p); /* the hello queued for the first member */
    free(c->watches);
    free(c);
}

static int client_open(sq_client **out, const char *members, int timeout_ms, bool spread,
                       const sq_client_tls *tls, char *err, size_t err_size)
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
        c->client_id = (uint64_t)sq__client_now_ms() ^ ((uint64_t)getpid() << 32);
    }
    c->client_id |= 1; /* 0 means "no client" to the members */
    /* spread clients over members, or the first one first */
    c->cur = spread ? (uint32_t)(c->client_id >> 8) % c->nmembers : 0;
    if (pipe2(c->wake, O_NONBLOCK | O_CLOEXEC) != 0) {
        free(c->watches);
        free(c);
        snprintf(err, err_size, "pipe: %s", strerror(errno));
        return SQ_EIO;
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_mutex_init(&c->tls_mu, NULL);
    pthread_cond_init(&c->cb_done, NULL);
    if (tls != NULL) {
        int rc = sq__client_tls_ctx(c, tls, err, err_size);
        if (rc != 0) {
            free_unstarted(c);
            return rc;
        }
    }
    /* One connection attempt over the list now, so that a wrong address fails at once. */
    for (uint32_t i = 0; i < c->nmembers && !c->connected; i++) {
        int fd = sq__client_try_connect(c, c->cur);
        if (fd >= 0) {
            c->fd = fd;
            c->ssl = c->ssl_next;
            c->connected = true;
        } else {
            c->cur = (c->cur + 1) % c->nmembers;
        }
    }
    if (c->connected) {
        sq__client_queue_hello(c);
    }
    if (!c->connected) {
        size_t n = (size_t)snprintf(err, err_size, "no member answers:");
        for (uint32_t i = 0; i < c->nmembers && n < err_size; i++) {
            n += (size_t)snprintf(err + n, err_size - n, "%s %s", i > 0 ? ";" : "", c->why[i]);
        }
        free_unstarted(c);
        return SQ_ECLOSED;
    }
    if (pthread_create(&c->io, NULL, sq__client_io_main, c) != 0) {
        free_unstarted(c);
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
    if (c->direct.close != NULL) {
        c->direct.close(c->direct.arg, c->direct.conn); /* no direct answer comes after this */
    }
    pthread_mutex_lock(&c->mu);
    c->stop = true;
    pthread_mutex_unlock(&c->mu);
    sq__client_wake(c);
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
    if (c->ssl != NULL) {
        SSL_free(c->ssl);
    }
    SSL_CTX_free(c->tls);
    if (c->fd >= 0) {
        close(c->fd);
    }
    close(c->wake[0]);
    close(c->wake[1]);
    pthread_mutex_destroy(&c->tls_mu);
    free(c->out.p);
    free(c->watches);
    free(c->in.p);
    free(c->deferred.p);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cb_done);
    free(c);
}

static int bad_arg(sq_kv_result *r, int rc, const char *what);

/* Blocking calls wait for the asynchronous result here. */
struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    sq_kv_result *r;
};

void sq__client_waiter_done(void *arg, const sq_kv_result *res)
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

/* How long a blocking call reads its own answer before it leaves the socket to the I/O thread. */
#define READER_TURN_MS 20
/* A blocking call whose answer usually comes within SPIN_US of its request (a get from memory,
 * ~15-30 us on loopback) looks for it without sleeping that long: the sleep and wake-up would
 * cost more than the wait. Whether it usually does is learnt per op from the last 8 spins; an op
 * whose answers come later (a multicast put) spins only every SPIN_PROBE_EVERY-th call, to
 * notice when that changes, so its spins cost the member threads little CPU. */
#define SPIN_US 50
#define SPIN_PROBE_EVERY 32

static int spin_for(sq_client *c, uint8_t op)
{
    uint8_t hits = atomic_load_explicit(&c->spin_hits[op], memory_order_relaxed);
    if (__builtin_popcount(hits) >= 4) {
        return SPIN_US;
    }
    uint8_t n = atomic_load_explicit(&c->spin_skipped[op], memory_order_relaxed);
    atomic_store_explicit(&c->spin_skipped[op], (uint8_t)((n + 1) % SPIN_PROBE_EVERY),
                          memory_order_relaxed);
    return n == 0 ? SPIN_US : 0;
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
    uint64_t give_up = sq__client_now_ms() + (uint64_t)c->timeout_ms;
    int rc;
    bool direct = false;
    while ((rc = sq__client_submit(c, f, sq__client_waiter_done, &w, wfn, warg, req_out,
                                   wfn == NULL ? &direct : NULL)) == SQ_EAGAIN &&
           sq__client_now_ms() < give_up) {
        usleep(1000);
    }
    uint8_t op = f->op <= SQ_KV_OP_MAX ? f->op : 0;
    if (rc == 0 && wfn == NULL && !direct && sq__client_take_reader(c)) {
        /* The only call in flight: read its answer here rather than be woken by the I/O thread
         * (for a short while: retries, reconnects and timeouts are the I/O thread's). */
        uint64_t until = sq__client_now_ms() + READER_TURN_MS;
        int spin = spin_for(c, op);
        for (;;) {
            pthread_mutex_lock(&w.mu);
            bool done = w.done;
            pthread_mutex_unlock(&w.mu);
            uint64_t now = sq__client_now_ms();
            bool hit = false;
            if (done || now >= until || !sq__client_read_wait(c, (int)(until - now), spin, &hit)) {
                break;
            }
            if (spin > 0) {
                uint8_t h = atomic_load_explicit(&c->spin_hits[op], memory_order_relaxed);
                atomic_store_explicit(&c->spin_hits[op], (uint8_t)(h << 1 | hit),
                                      memory_order_relaxed);
                spin = 0;
            }
        }
        sq__client_drop_reader(c);
    }
    if (rc == 0) {
        pthread_mutex_lock(&w.mu);
        while (!w.done) {
            pthread_cond_wait(&w.cv, &w.mu);
        }
        pthread_mutex_unlock(&w.mu);
        rc = r->status;
        if (r->trace.call != 0) {
            r->trace.returned = sq__mono_us();
        }
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
    if (o != NULL && o->trace) {
        f->flags |= SQ_KV_F_TRACE;
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
    if (o->trace) {
        f->flags |= SQ_KV_F_TRACE;
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
                       "a value is over the limit of " SQ_KV_MAX_VALUE_TEXT
                       " (and of the pool's max_payload)");
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
    return sq__client_submit(c, &f, done, arg, NULL, NULL, NULL, NULL);
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
    return sq__client_submit(c, &f, done, arg, NULL, NULL, NULL, NULL);
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
    struct sq_kv_frame f = {.op = SQ_KV_OP_STATUS,
                            .flags = json == 2 ? SQ_KV_F_METRICS
                                     : json    ? SQ_KV_F_JSON
                                               : 0};
    return call_wait(c, &f, r, NULL, NULL, NULL);
}

static int watch_frame(sq_client *c, struct sq_kv_frame *fp, uint8_t *from, sq_watch_fn fn,
                       void *arg, uint64_t *watch_id);

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
    return watch_frame(c, &f, from, fn, arg, watch_id);
}

int sq_client_watch_shards(sq_client *c, const char *target, const uint64_t *from_v, size_t nfrom,
                           sq_watch_fn fn, void *arg, uint64_t *watch_id)
{
    struct sq_kv_frame f;
    if (fn == NULL || (nfrom > 0 && from_v == NULL) || nfrom > SQ_CLIENT_WATCH_SHARDS ||
        key_frame(&f, SQ_KV_OP_WATCH, target) != 0) {
        return SQ_EINVAL;
    }
    /* f.version is what a member that reads no per-shard list would start from: the lowest */
    uint8_t from[8 * SQ_CLIENT_WATCH_SHARDS];
    f.version = UINT64_MAX;
    for (size_t s = 0; s < SQ_CLIENT_WATCH_SHARDS; s++) {
        uint64_t v = s < nfrom ? from_v[s] : 0;
        f.version = SQ_MIN(f.version, v);
        for (int i = 0; i < 8; i++) {
            from[8 * s + i] = (uint8_t)(v >> (8 * i));
        }
    }
    return watch_frame(c, &f, from, fn, arg, watch_id);
}

static int watch_frame(sq_client *c, struct sq_kv_frame *fp, uint8_t *from, sq_watch_fn fn,
                       void *arg, uint64_t *watch_id)
{
    struct sq_kv_frame f = *fp;
    f.value = from;
    f.value_len = 8u * SQ_CLIENT_WATCH_SHARDS;
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
    struct call *k = *sq__client_slot_of(c, watch_id);
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
    k = *sq__client_slot_of(c, watch_id);
    if (k != NULL && k->watch) {
        sq__client_call_unlink(c, k);
        free(k->frame);
        free(k);
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}
