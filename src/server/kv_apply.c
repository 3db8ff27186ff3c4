/* kv_apply.c: the member's callbacks (deliveries, views, state, persistence) applying ops to the
 * stores, and the answers and events they hand to the service thread. */
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "config.h"
#include "kv/store.h"
#include "kv/wire.h"
#include "log.h"
#include "server/kv_internal.h"

/* ---- the loop thread: deliveries, views, state, persistence ---- */

static struct sq_kv_store *store_for(struct sq_kv_server *s, uint32_t sg, uint32_t shard)
{
    if (s->store[sg] != NULL && s->store_shard[sg] != shard) {
        sq__kv_store_destroy(s->store[sg]); /* moved to another shard: its state comes next */
        s->store[sg] = NULL;
    }
    if (s->store[sg] == NULL) {
        if (sq__kv_store_create(&s->store[sg], s->cfg.subgroups[sg].store) != 0) {
            return NULL;
        }
        s->store_shard[sg] = shard;
    }
    return s->store[sg];
}

static void done_ready(struct sq_kv_server *s, struct done *d)
{
    d->next = NULL;
    if (s->ready_tail != NULL) {
        s->ready_tail->next = d;
    } else {
        s->ready_head = d;
    }
    s->ready_tail = d;
}

/* An answer for one of this member's clients: at once, or once persisted everywhere. */
static void done_answer(struct sq_kv_server *s, struct done *d)
{
    uint32_t sg = d->sg;
    if (s->cfg.subgroups[sg].persistent && s->persisted[sg] <= d->msg_version) {
        d->next = NULL;
        if (s->wait_tail[sg] != NULL) {
            s->wait_tail[sg]->next = d;
        } else {
            s->wait_head[sg] = d;
        }
        s->wait_tail[sg] = d;
        return;
    }
    done_ready(s, d);
}

static void apply_pool(struct sq_kv_server *s, const struct sq_kv_op *op, int *status)
{
    uint32_t sg = op->arg & 0xff, shards = op->arg >> 16;
    *status = 0;
    for (uint32_t i = 0; i < s->npools; i++) {
        const struct pool *p = &s->pools[i];
        if (op->client != 0 && p->client == op->client && p->req_id == op->req_id) {
            return; /* a retry of the request that created it (applied once) */
        }
    }
    if (s->npools >= MAX_POOLS) {
        *status = SQ_ENOSPC;
        return;
    }
    if (op->key_len > MAX_POOL_PATH || sg >= s->cfg.nsubgroups || shards == 0 ||
        shards > s->cfg.subgroups[sg].shards) {
        *status = SQ_EINVAL;
        return;
    }
    for (uint32_t i = 0; i < s->npools; i++) {
        const struct pool *p = &s->pools[i];
        size_t m = SQ_MIN((size_t)p->len, (size_t)op->key_len);
        if (memcmp(p->path, op->key, m) == 0 &&
            (p->len == op->key_len || (p->len < op->key_len && op->key[p->len] == '/') ||
             (op->key_len < p->len && p->path[op->key_len] == '/'))) {
            *status = SQ_EEXIST; /* the same pool, or one nested in the other */
            return;
        }
    }
    struct pool *p = &s->pools[s->npools++];
    memcpy(p->path, op->key, op->key_len);
    p->path[op->key_len] = '\0';
    p->len = op->key_len;
    p->sg = sg;
    p->shards = shards;
    p->client = op->client;
    p->req_id = op->req_id;
}

void sq__kvs_on_deliver(void *arg, const sq_message *msg)
{
    struct sq_kv_server *s = arg;
    struct sq_kv_op op;
    if (sq__kv_op_decode(msg->data, msg->size, &op) != 0) {
        return; /* not ours (nulls carry no payload) */
    }
    bool replayed = (msg->flags & SQ_MSG_REPLAYED) != 0;
    bool mine = !replayed && op.origin == s->my_id;
    /* Key-value versions are the shard's versions plus one, so that 0 never names an entry:
     * "if-version 0" means "must not exist" and watches from 0 see everything. */
    uint64_t version = msg->version + 1;
    pthread_mutex_lock(&s->mu);
    struct done *d = NULL;
    if (mine) {
        d = calloc(1, sizeof(*d));
        if (d != NULL) {
            *d = (struct done){.kind = DONE_ANSWER,
                               .sg = msg->subgroup,
                               .client = op.client,
                               .req_id = op.req_id,
                               .msg_version = msg->version};
            if (atomic_load_explicit(&s->ntraced, memory_order_relaxed) > 0) {
                d->tr_deliver = sq__mono_us();
            }
        }
    }
    if (op.kind == SQ_KV_POOL_CREATE) {
        int status = 0;
        if ((int)msg->subgroup == s->meta) {
            apply_pool(s, &op, &status);
        } else {
            status = SQ_EINVAL;
        }
        if (status == 0) {
            sq__log(SQ_LOG_INFO, "kv: pool %.*s on subgroup %s, %u shard%s", (int)op.key_len,
                    op.key, s->cfg.subgroups[op.arg & 0xff].name, op.arg >> 16,
                    op.arg >> 16 == 1 ? "" : "s");
        }
        if (d != NULL) {
            d->status = status;
            d->version = version;
            d->timestamp = msg->timestamp;
        }
        goto out;
    }
    struct sq_kv_store *st = store_for(s, msg->subgroup, msg->shard);
    if (st == NULL) {
        if (d != NULL) {
            d->status = SQ_ENOMEM;
        }
        goto out;
    }
    struct sq_kv_applied a;
    int rc = sq__kv_store_apply(st, &op, version, msg->timestamp, &a);
    if (rc != 0) {
        /* Out of memory: this replica can no longer follow the shard. Stopping is the only
         * safe thing; the others go on without it. */
        sq__log(SQ_LOG_ERROR, "kv: cannot apply an update (%s): stopping", sq_strerror(rc));
        abort();
    }
    if (d != NULL) {
        d->status = a.status;
        d->version = a.version;
        d->timestamp = a.timestamp;
        if (op.kind == SQ_KV_BARRIER) {
            /* A stable read: answered from the state at the barrier's place in the order. */
            struct sq_kv_version v;
            const void *val;
            size_t vsize;
            int how = (op.flags & SQ_KV_F_AT_VERSION) ? SQ_KV_AT_VERSION
                      : (op.flags & SQ_KV_F_AT_TIME)  ? SQ_KV_AT_TIME
                                                      : SQ_KV_LATEST;
            d->status = sq__kv_store_get(st, op.key, op.key_len, how, op.expect, &v, &val, &vsize);
            if (d->status == 0) {
                d->version = v.version;
                d->timestamp = v.timestamp;
                d->count = v.size;
                if (v.deleted) {
                    d->status = SQ_ENOTFOUND;
                    d->flags = SQ_KV_F_DELETED;
                } else if (val != NULL && !(op.flags & SQ_KV_F_SIZE_ONLY)) {
                    d->value = malloc(vsize > 0 ? vsize : 1);
                    if (d->value == NULL) {
                        d->status = SQ_ENOMEM;
                    } else {
                        memcpy(d->value, val, vsize);
                        d->size = (uint32_t)vsize;
                    }
                } else if (val == NULL && !(op.flags & SQ_KV_F_SIZE_ONLY)) {
                    /* an older version: the service thread reads it from the log */
                    d->from_log = true;
                }
            } else {
                d->version = 0;
            }
            d->flags |= op.flags & SQ_KV_F_SIZE_ONLY;
        }
    }
    if (!replayed && (op.kind == SQ_KV_PUT || op.kind == SQ_KV_REMOVE) && a.status == 0 &&
        !a.duplicate && s->nwatches > 0) {
        struct done *ev = calloc(1, sizeof(*ev));
        if (ev != NULL) {
            *ev = (struct done){.kind = DONE_EVENT,
                                .sg = msg->subgroup,
                                .version = version,
                                .timestamp = msg->timestamp,
                                .flags = op.kind == SQ_KV_REMOVE ? SQ_KV_F_DELETED : 0};
            ev->key = malloc(op.key_len > 0 ? op.key_len : 1);
            ev->value = malloc(op.value_len > 0 ? op.value_len : 1);
            if (ev->key == NULL || ev->value == NULL) {
                free(ev->key);
                free(ev->value);
                free(ev);
            } else {
                memcpy(ev->key, op.key, op.key_len);
                ev->key_len = op.key_len;
                if (op.kind == SQ_KV_PUT && op.value_len > 0) {
                    memcpy(ev->value, op.value, op.value_len);
                }
                ev->size = op.kind == SQ_KV_PUT ? op.value_len : 0;
                done_ready(s, ev);
            }
        }
    }
out:
    if (d != NULL && s->cfg.subgroups[msg->subgroup].persistent) {
        /* Tell the service thread now that the op is in the order, so that a view change
         * before it is persisted does not send it again. */
        struct done *mark = calloc(1, sizeof(*mark));
        if (mark != NULL) {
            *mark = (struct done){.kind = DONE_DELIVERED, .client = op.client, .req_id = op.req_id};
            done_ready(s, mark);
        }
    }
    if (d != NULL) {
        done_answer(s, d);
    }
    bool ready = s->ready_head != NULL;
    pthread_mutex_unlock(&s->mu);
    if (ready) {
        sq__kvs_help(s);
    }
}

void sq__kvs_on_persisted(void *arg, uint32_t sg, uint32_t shard, uint64_t version)
{
    struct sq_kv_server *s = arg;
    (void)shard;
    bool any = false;
    pthread_mutex_lock(&s->mu);
    s->persisted[sg] = version + 1;
    while (s->wait_head[sg] != NULL && s->wait_head[sg]->msg_version <= version) {
        struct done *d = s->wait_head[sg];
        if (d->tr_deliver != 0) {
            d->tr_persist = sq__mono_us();
        }
        s->wait_head[sg] = d->next;
        if (s->wait_head[sg] == NULL) {
            s->wait_tail[sg] = NULL;
        }
        done_ready(s, d);
        any = true;
    }
    pthread_mutex_unlock(&s->mu);
    if (any) {
        sq__kvs_help(s);
    }
}

void sq__kvs_on_view(void *arg, const sq_view *v)
{
    struct sq_kv_server *s = arg;
    pthread_mutex_lock(&s->mu);
    s->view_id = v->view_id;
    s->nmembers = v->nmembers;
    s->adequate = (uint32_t)v->adequate;
    memcpy(s->ids, v->member_ids, v->nmembers * sizeof(uint32_t));
    memcpy(s->my_shard, v->my_shard, v->nsubgroups * sizeof(uint32_t));
    memcpy(s->shard_of, v->shard_of, (size_t)v->nsubgroups * v->nmembers * sizeof(uint32_t));
    for (uint32_t g = 0; g < v->nsubgroups; g++) {
        if ((int)g == s->meta) {
            s->meta_ready = !(v->awaiting_state & (1u << g)) && v->my_shard[g] != SQ_NO_SHARD;
            continue;
        }
        if (v->my_shard[g] == SQ_NO_SHARD || (v->awaiting_state & (1u << g))) {
            /* A member new to a shard gets its store with the state (load_state); until then
             * reads answer SQ_ESTATE, which clients retry, rather than from an empty store. */
            sq__kv_store_destroy(s->store[g]);
            s->store[g] = NULL;
        } else {
            /* the first view, a restart from the logs (replayed already), or a shard that
             * starts empty: what this member has is the shard's state */
            (void)store_for(s, g, v->my_shard[g]);
        }
    }
    s->have_view = true;
    s->resend = true; /* ops the change dropped go again (at most once: dedup) */
    pthread_mutex_unlock(&s->mu);
    atomic_store(&s->detached, false); /* an incarnation that rejoined serves again */
    printf("view=%u members=", v->view_id);
    for (uint32_t i = 0; i < v->nmembers; i++) {
        printf("%s%u", i ? "," : "", v->member_ids[i]);
    }
    printf(" my_rank=%u adequate=%d\n", v->my_rank, v->adequate);
    sq__kvs_wake(s);
}

/* Pool table state (metadata subgroup): "SQPL" u32 n, then n x (u16 len, u32 sg, u32 shards,
 * u64 creator client, u64 creator request, path). */
int sq__kvs_save_state(void *arg, uint32_t sg, uint32_t shard, void **buf, size_t *size)
{
    struct sq_kv_server *s = arg;
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    if ((int)sg == s->meta) {
        uint8_t *p = malloc(8 + (size_t)s->npools * (26 + MAX_POOL_PATH));
        if (p == NULL) {
            rc = SQ_ENOMEM;
        } else {
            size_t o = 0;
            memcpy(p, "SQPL", 4);
            memcpy(p + 4, &s->npools, 4); /* members share endianness (DESIGN.md) */
            o = 8;
            for (uint32_t i = 0; i < s->npools; i++) {
                memcpy(p + o, &s->pools[i].len, 2);
                memcpy(p + o + 2, &s->pools[i].sg, 4);
                memcpy(p + o + 6, &s->pools[i].shards, 4);
                memcpy(p + o + 10, &s->pools[i].client, 8);
                memcpy(p + o + 18, &s->pools[i].req_id, 8);
                memcpy(p + o + 26, s->pools[i].path, s->pools[i].len);
                o += 26u + s->pools[i].len;
            }
            *buf = p;
            *size = o;
        }
    } else {
        struct sq_kv_store *st = store_for(s, sg, shard);
        rc = st == NULL ? SQ_ENOMEM : sq__kv_store_save(st, buf, size);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void sq__kvs_load_state(void *arg, uint32_t sg, uint32_t shard, const void *buf, size_t size)
{
    struct sq_kv_server *s = arg;
    const uint8_t *p = buf;
    pthread_mutex_lock(&s->mu);
    if ((int)sg == s->meta) {
        uint32_t n = 0;
        if (size >= 8 && memcmp(p, "SQPL", 4) == 0) {
            memcpy(&n, p + 4, 4);
        }
        size_t o = 8;
        s->npools = 0;
        for (uint32_t i = 0; i < n && i < MAX_POOLS && o + 26 <= size; i++) {
            struct pool *pl = &s->pools[s->npools];
            memcpy(&pl->len, p + o, 2);
            memcpy(&pl->sg, p + o + 2, 4);
            memcpy(&pl->shards, p + o + 6, 4);
            memcpy(&pl->client, p + o + 10, 8);
            memcpy(&pl->req_id, p + o + 18, 8);
            if (pl->len > MAX_POOL_PATH || o + 26 + pl->len > size || pl->sg >= s->cfg.nsubgroups) {
                break;
            }
            memcpy(pl->path, p + o + 26, pl->len);
            pl->path[pl->len] = '\0';
            o += 26u + pl->len;
            s->npools++;
        }
        s->meta_ready = true;
    } else {
        /* into a fresh store, swapped in only when the whole state loaded */
        struct sq_kv_store *st = NULL;
        int rc = sq__kv_store_create(&st, s->cfg.subgroups[sg].store);
        if (rc == 0) {
            rc = sq__kv_store_load(st, buf, size);
        }
        if (rc == 0) {
            sq__kv_store_destroy(s->store[sg]);
            s->store[sg] = st;
            s->store_shard[sg] = shard;
        } else {
            sq__kv_store_destroy(st);
            /* Serving an empty or stale shard would be silent divergence: stop instead; the
             * others go on without this member. */
            sq__log(SQ_LOG_ERROR,
                    "kv: the state received for subgroup %s is unusable (%s): "
                    "stopping",
                    s->cfg.subgroups[sg].name, sq_strerror(rc));
            abort();
        }
    }
    pthread_mutex_unlock(&s->mu);
}

/* ---- the service thread: answers and events handed over ---- */

bool sq__kvs_process_dones(struct sq_kv_server *s, bool loop)
{
    pthread_mutex_lock(&s->mu);
    if (loop) {
        bool simple = !s->resend;
        for (struct done *d = s->ready_head; d != NULL && simple; d = d->next) {
            simple = !d->from_log;
        }
        if (!simple) {
            pthread_mutex_unlock(&s->mu);
            return false;
        }
    }
    struct done *d = s->ready_head;
    s->ready_head = s->ready_tail = NULL;
    bool resend = s->resend;
    s->resend = false;
    pthread_mutex_unlock(&s->mu);
    while (d != NULL) {
        struct done *next = d->next;
        if (d->kind == DONE_EVENT) {
            sq__kvs_dispatch_event(s, d);
        } else if (d->kind == DONE_DELIVERED) {
            for (struct entry *e = s->ents[sq__kvs_ent_bucket(d->client, d->req_id)]; e != NULL;
                 e = e->next) {
                if (e->opbuf != NULL && e->via == 0 && e->client == d->client &&
                    e->req_id == d->req_id) {
                    e->delivered = true;
                }
            }
        } else {
            uint32_t b = sq__kvs_ent_bucket(d->client, d->req_id);
            for (struct entry *e = s->ents[b], *en; e != NULL; e = en) {
                en = e->next;
                if (e->opbuf == NULL || e->via != 0 || e->client != d->client ||
                    e->req_id != d->req_id) {
                    continue;
                }
                struct sq_kv_frame a = {.op = e->op,
                                        .status = d->status,
                                        .req_id = e->req_id,
                                        .client = e->client,
                                        .version = d->version,
                                        .time = d->timestamp,
                                        .count = d->count,
                                        .flags = d->flags & (SQ_KV_F_DELETED | SQ_KV_F_SIZE_ONLY),
                                        .value = d->value,
                                        .value_len = d->size};
                char msg[200] = "";
                if (d->status == 0 && d->from_log) {
                    uint32_t len = 0;
                    int rc = sq__kvs_read_logged(s, d->sg, d->version, &a.value, &len);
                    a.value_len = len;
                    if (rc != 0) {
                        a.status = rc;
                        snprintf(msg, sizeof(msg), "reading version 0x%" PRIx64 ": %s", d->version,
                                 sq_strerror(rc));
                    }
                } else if (d->status == SQ_ECONFLICT) {
                    if (d->version == 0) {
                        snprintf(msg, sizeof(msg), "the key does not exist");
                    } else {
                        snprintf(msg, sizeof(msg), "the key is at version 0x%" PRIx64, d->version);
                    }
                } else if (d->status == SQ_ENOTFOUND) {
                    struct sq_kv_op op; /* the key asked about, for the message */
                    if (sq__kv_op_decode(e->opbuf, e->oplen, &op) == 0 && op.key_len > 0) {
                        snprintf(msg, sizeof(msg), "%.*s: no such key",
                                 (int)SQ_MIN(op.key_len, 150u), op.key);
                    } else {
                        snprintf(msg, sizeof(msg), "no such key");
                    }
                } else if (d->status == SQ_ENOSPC && e->op == SQ_KV_OP_POOL_CREATE) {
                    snprintf(msg, sizeof(msg), "a group holds at most %d pools", MAX_POOLS);
                } else if (d->status == SQ_EEXIST) {
                    snprintf(msg, sizeof(msg), "that pool exists, or overlaps an existing one");
                } else if (d->status != 0) {
                    snprintf(msg, sizeof(msg), "%s", sq_strerror(d->status));
                }
                a.str = msg;
                a.str_len = (uint16_t)strlen(msg);
                if (e->traced && a.status == 0) {
                    uint64_t durable = 0;
                    if (d->tr_persist != 0 && s->m != NULL) {
                        durable = sq_member_durable_time(s->m, d->sg, d->msg_version);
                    }
                    a.flags |= SQ_KV_F_TRACE;
                    a.str_len = sq__kvs_trace_text(msg, sizeof(msg), e->tr_recv, e->tr_mcast,
                                                   d->tr_deliver, durable, d->tr_persist);
                }
                sq__kvs_conn_send(s, sq__kvs_conn_by_id(s, e->origin), &a);
                sq__kvs_entry_free(s, e);
            }
        }
        free(d->key);
        free(d->value);
        free(d);
        d = next;
    }
    if (resend) {
        /* Relays to members the view removed are closed (a partitioned host sends no FIN):
         * what waited on them is answered SQ_EPEER and retried by the clients. */
        pthread_mutex_lock(&s->mu);
        uint32_t n = s->nmembers, ids[SQ_MAX_MEMBERS];
        memcpy(ids, s->ids, sizeof(ids));
        pthread_mutex_unlock(&s->mu);
        for (struct conn *c = s->conns; c != NULL; c = c->next) {
            bool member = false;
            for (uint32_t r = 0; r < n && c->relay; r++) {
                member |= ids[r] == c->member;
            }
            if (c->relay && !member && !c->dead) {
                sq__kvs_conn_close(s, c);
            }
        }
        /* A view change drops the ops that were sent but not delivered in the old view (the
         * view is installed after the old view's last delivery, whose marks came first): send
         * those again. An op sent since the change may go twice; the at-most-once table
         * answers the second with the first's answer. */
        for (uint32_t b = 0; b < ENTRY_BUCKETS; b++) {
            for (struct entry *e = s->ents[b]; e != NULL; e = e->next) {
                if (e->opbuf != NULL && !e->delivered) {
                    sq__kvs_outbox_push(s, e);
                }
            }
        }
    }
    return true;
}
