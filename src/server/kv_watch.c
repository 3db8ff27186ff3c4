/* kv_watch.c: watches on a key or a prefix: registering one on this member's shard with the
 * replay of what it missed, sending events as updates are delivered, and unwatching. */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "common.h"
#include "kv/store.h"
#include "kv/wire.h"
#include "server/kv_internal.h"

static uint32_t watch_bucket(uint32_t sg, const char *t, size_t len, bool prefix)
{
    return (uint32_t)((XXH64(t, len, sg * 2u + prefix)) & (WATCH_BUCKETS - 1));
}

static void send_event(struct sq_kv_server *s, const struct watch *w, const char *key,
                       uint16_t key_len, uint64_t version, uint64_t ts, bool deleted,
                       const void *val, uint32_t size)
{
    struct sq_kv_frame ev = {.op = SQ_KV_OP_EVENT,
                             .req_id = w->req_id,
                             .client = w->client,
                             .version = version,
                             .time = ts,
                             .count = w->shard,
                             .flags = deleted ? SQ_KV_F_DELETED : 0,
                             .key = key,
                             .key_len = key_len,
                             .value = val,
                             .value_len = size};
    sq__kvs_conn_send(s, sq__kvs_conn_by_id(s, w->conn), &ev);
}

void sq__kvs_dispatch_event(struct sq_kv_server *s, const struct done *d)
{
    /* the key itself, then every prefix of it that ends in '/' */
    for (size_t len = d->key_len; len > 0; len--) {
        bool prefix = len < d->key_len;
        if (prefix && d->key[len - 1] != '/') {
            continue;
        }
        for (struct watch *w = s->wb[watch_bucket(d->sg, d->key, len, prefix)]; w != NULL;
             w = w->next) {
            if (w->sg == d->sg && w->prefix == prefix && w->len == len &&
                memcmp(w->target, d->key, len) == 0 && d->version > w->live_after) {
                send_event(s, w, d->key, d->key_len, d->version, d->timestamp,
                           (d->flags & SQ_KV_F_DELETED) != 0, d->value, d->size);
            }
        }
    }
}

struct replay_item {
    uint64_t version, ts;
    uint8_t deleted;
    uint16_t key_len;
    char *key;
    void *value; /* the latest value, copied; NULL: read from the log */
    uint32_t size;
};

struct replay {
    struct replay_item *it;
    size_t n, cap;
    uint64_t from;
    const struct sq_kv_store *st;
    int rc;
};

static void replay_add(struct replay *r, const char *key, uint16_t key_len,
                       const struct sq_kv_version *v, const void *val, size_t vsize)
{
    if (r->rc != 0) {
        return;
    }
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 64;
        struct replay_item *p = realloc(r->it, cap * sizeof(*p));
        if (p == NULL) {
            r->rc = SQ_ENOMEM;
            return;
        }
        r->it = p;
        r->cap = cap;
    }
    struct replay_item *x = &r->it[r->n];
    *x = (struct replay_item){.version = v->version,
                              .ts = v->timestamp,
                              .deleted = v->deleted,
                              .key_len = key_len,
                              .size = v->size};
    x->key = malloc(key_len > 0 ? key_len : 1);
    if (x->key == NULL) {
        r->rc = SQ_ENOMEM;
        return;
    }
    memcpy(x->key, key, key_len);
    if (val != NULL) {
        x->value = malloc(vsize > 0 ? vsize : 1);
        if (x->value == NULL) {
            free(x->key);
            r->rc = SQ_ENOMEM;
            return;
        }
        memcpy(x->value, val, vsize);
        x->size = (uint32_t)vsize;
    }
    r->n++;
}

/* Every version of the key from r->from on (its latest value copied from memory). */
static void replay_key(void *arg, const char *key, uint16_t key_len,
                       const struct sq_kv_version *unused)
{
    struct replay *r = arg;
    (void)unused;
    const struct sq_kv_version *vs;
    uint32_t n = 0;
    if (sq__kv_store_history(r->st, key, key_len, &vs, &n) != 0) {
        return;
    }
    struct sq_kv_version latest;
    const void *val;
    size_t vsize;
    (void)sq__kv_store_get(r->st, key, key_len, SQ_KV_LATEST, 0, &latest, &val, &vsize);
    for (uint32_t i = 0; i < n; i++) {
        if (vs[i].version >= r->from) {
            bool last = i == n - 1;
            replay_add(r, key, key_len, &vs[i], last ? val : NULL, last ? vsize : 0);
        }
    }
}

static int cmp_replay(const void *a, const void *b)
{
    const struct replay_item *x = a, *y = b;
    return (x->version > y->version) - (x->version < y->version);
}

int sq__kvs_watch_local(struct sq_kv_server *s, uint64_t conn, const struct sq_kv_frame *f,
                        uint32_t sg, bool ack, char *why, size_t why_size)
{
    bool prefix = f->key_len > 0 && f->key[f->key_len - 1] == '/';
    struct conn *owner = sq__kvs_conn_by_id(s, conn);
    if (owner == NULL) {
        snprintf(why, why_size, "the client's connection is closed");
        return SQ_ECLOSED; /* nobody to send events to */
    }
    struct watch *w = calloc(1, sizeof(*w));
    char *t = malloc(f->key_len > 0 ? f->key_len : 1);
    if (w == NULL || t == NULL) {
        free(w);
        free(t);
        snprintf(why, why_size, "out of memory");
        if (ack) {
            sq__kvs_reply_err(s, conn, SQ_KV_OP_WATCH, f->client, f->req_id, SQ_ENOMEM, 0, "%s",
                              why);
        }
        return SQ_ENOMEM;
    }
    memcpy(t, f->key, f->key_len);
    *w = (struct watch){.conn = conn,
                        .client = f->client,
                        .req_id = f->req_id,
                        .sg = sg,
                        .target = t,
                        .len = f->key_len,
                        .prefix = prefix};
    struct replay r = {.from = f->version};
    pthread_mutex_lock(&s->mu);
    const struct sq_kv_store *st = s->store[sg];
    if (st == NULL) {
        pthread_mutex_unlock(&s->mu);
        free(w);
        free(t);
        snprintf(why, why_size, "member %u does not serve that shard now", s->my_id);
        if (ack) {
            sq__kvs_reply_err(s, conn, SQ_KV_OP_WATCH, f->client, f->req_id, SQ_ESTATE, 0, "%s",
                              why);
        }
        return SQ_ESTATE;
    }
    r.st = st;
    w->live_after = sq__kv_store_last(st);
    w->shard = s->store_shard[sg];
    if (prefix) {
        sq__kv_store_each(st, f->key, f->key_len, true, false, 0, replay_key, &r);
    } else {
        replay_key(&r, f->key, f->key_len, NULL);
    }
    s->nwatches++;
    pthread_mutex_unlock(&s->mu);
    uint32_t b = watch_bucket(sg, t, f->key_len, prefix);
    w->next = s->wb[b];
    w->pprev = &s->wb[b];
    if (w->next != NULL) {
        w->next->pprev = &w->next;
    }
    s->wb[b] = w;
    w->cnext = owner->watches;
    w->cpprev = &owner->watches;
    if (w->cnext != NULL) {
        w->cnext->cpprev = &w->cnext;
    }
    owner->watches = w;
    if (ack) {
        struct sq_kv_frame a = {.op = SQ_KV_OP_WATCH,
                                .req_id = f->req_id,
                                .client = f->client,
                                .version = w->live_after};
        sq__kvs_conn_send(s, sq__kvs_conn_by_id(s, conn), &a);
    }
    if (r.n > 1) {
        qsort(r.it, r.n, sizeof(*r.it), cmp_replay);
    }
    for (size_t i = 0; i < r.n; i++) {
        struct replay_item *x = &r.it[i];
        const void *val = x->value;
        uint32_t size = x->size;
        if (val == NULL && !x->deleted && size > 0) {
            if (sq__kvs_read_logged(s, sg, x->version, &val, &size) != 0) {
                continue; /* gone from the log (a member that started from a state) */
            }
        }
        send_event(s, w, x->key, x->key_len, x->version, x->ts, x->deleted, val,
                   x->deleted ? 0 : size);
    }
    for (size_t i = 0; i < r.n; i++) {
        free(r.it[i].key);
        free(r.it[i].value);
    }
    free(r.it);
    return 0;
}

void sq__kvs_unwatch(struct sq_kv_server *s, uint64_t conn, bool one, uint64_t client,
                     uint64_t req_id)
{
    uint64_t removed = 0;
    struct conn *c = NULL;
    for (struct conn *x = s->conns; x != NULL && c == NULL; x = x->next) {
        c = x->id == conn ? x : NULL; /* a closing connection too */
    }
    struct watch *w = c != NULL ? c->watches : NULL, *next;
    for (; w != NULL; w = next) {
        next = w->cnext;
        if (!one || (w->req_id == req_id && w->client == client)) {
            *w->pprev = w->next;
            if (w->next != NULL) {
                w->next->pprev = w->pprev;
            }
            *w->cpprev = w->cnext;
            if (w->cnext != NULL) {
                w->cnext->cpprev = w->cpprev;
            }
            free(w->target);
            free(w);
            removed++;
        }
    }
    if (removed > 0) {
        pthread_mutex_lock(&s->mu);
        s->nwatches -= removed;
        pthread_mutex_unlock(&s->mu);
    }
}

void sq__kvs_drop_watch(struct sq_kv_server *s, uint64_t conn, uint64_t client, uint64_t req_id)
{
    sq__kvs_unwatch(s, conn, true, client, req_id);
    /* The aggregates are answered after the loop: finishing one may call back here. */
    struct agg *aggs[SQ_MAX_SHARDS * 2];
    uint32_t naggs = 0;
    struct entry *e = s->ents[sq__kvs_ent_bucket(client, req_id)], *next;
    for (; e != NULL; e = next) {
        next = e->next;
        if (e->watch && e->origin == conn && e->client == client && e->req_id == req_id) {
            struct sq_kv_frame u = {.op = SQ_KV_OP_UNWATCH,
                                    .flags = SQ_KV_F_LOCAL,
                                    .client = client,
                                    .version = req_id};
            sq__kvs_conn_send(s, sq__kvs_conn_by_id(s, e->via), &u);
            if (e->agg != NULL && naggs < SQ_ARRAY_LEN(aggs)) {
                aggs[naggs++] = e->agg; /* one part per entry */
            }
            sq__kvs_entry_free(s, e);
        }
    }
    for (uint32_t i = 0; i < naggs; i++) {
        struct sq_kv_frame a = {
            .op = SQ_KV_OP_WATCH, .status = SQ_ECLOSED, .client = client, .req_id = req_id};
        sq__kvs_agg_part(s, aggs[i], &a);
    }
}
