/* kv_relay.c: requests in flight: the ops this member multicasts into its shards (until they
 * are delivered or persisted), the requests it relays to a member serving a key's shard, and the
 * aggregation of the answers of a request fanned out to every shard of a pool. */
#include <errno.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"
#include "config.h"
#include "hash.h"
#include "kv/buf.h"
#include "kv/store.h"
#include "kv/wire.h"
#include "server/kv_internal.h"

/* ---- requests in flight ---- */

uint32_t sq__kvs_ent_bucket(uint64_t client, uint64_t req)
{
    return (uint32_t)(sq__mix64(client ^ (req * 0x9e3779b97f4a7c15ull)) % ENTRY_BUCKETS);
}

static struct entry *entry_add(struct sq_kv_server *s, uint64_t client, uint64_t req, uint8_t op,
                               uint64_t origin, uint64_t via)
{
    struct entry *e = calloc(1, sizeof(*e));
    if (e == NULL) {
        return NULL;
    }
    *e = (struct entry){.client = client,
                        .req_id = req,
                        .op = op,
                        .origin = origin,
                        .via = via,
                        .created_ms = sq__mono_ms()};
    uint32_t b = sq__kvs_ent_bucket(client, req);
    e->next = s->ents[b];
    s->ents[b] = e;
    return e;
}

static void outbox_remove(struct sq_kv_server *s, struct entry *e)
{
    struct entry **pp = &s->outbox;
    s->outbox_tail = NULL;
    while (*pp != NULL) {
        if (*pp == e) {
            *pp = e->onext;
            continue;
        }
        s->outbox_tail = *pp;
        pp = &(*pp)->onext;
    }
    e->queued = false;
}

void sq__kvs_entry_free(struct sq_kv_server *s, struct entry *e)
{
    uint32_t b = sq__kvs_ent_bucket(e->client, e->req_id);
    for (struct entry **pp = &s->ents[b]; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == e) {
            *pp = e->next;
            break;
        }
    }
    if (e->queued) {
        outbox_remove(s, e);
    }
    if (e->traced) {
        atomic_fetch_sub(&s->ntraced, 1);
    }
    free(e->opbuf);
    free(e);
}

uint16_t sq__kvs_trace_text(char *buf, size_t size, uint64_t recv, uint64_t mcast, uint64_t deliver,
                            uint64_t durable, uint64_t persist)
{
    int n = snprintf(buf, size, SQ_KV_TRACE_FORMAT, recv, mcast, deliver, durable, persist,
                     sq__mono_us());
    return (uint16_t)SQ_MIN((size_t)SQ_MAX(n, 0), size - 1);
}

void sq__kvs_outbox_push(struct sq_kv_server *s, struct entry *e)
{
    if (e->queued) {
        return;
    }
    e->queued = true;
    e->onext = NULL;
    if (s->outbox_tail != NULL) {
        s->outbox_tail->onext = e;
    } else {
        s->outbox = e;
    }
    s->outbox_tail = e;
}

void sq__kvs_local_op(struct sq_kv_server *s, uint64_t conn, const struct sq_kv_frame *f,
                      uint32_t sg, const struct sq_kv_op *op)
{
    struct entry *e = entry_add(s, f->client, f->req_id, f->op, conn, 0);
    size_t n = sq__kv_op_bytes(op);
    if (e == NULL || (e->opbuf = malloc(n)) == NULL) {
        if (e != NULL) {
            sq__kvs_entry_free(s, e);
        }
        sq__kvs_reply_err(s, conn, f->op, f->client, f->req_id, SQ_ENOMEM, 0, "out of memory");
        return;
    }
    sq__kv_op_encode(op, e->opbuf);
    e->oplen = n;
    e->sg = sg;
    if (f->flags & SQ_KV_F_TRACE) {
        e->traced = true;
        e->tr_recv = s->frame_recv_us;
        atomic_fetch_add(&s->ntraced, 1);
    }
    /* Multicast at the end of the service loop's turn (sq__kvs_flush_outbox), with every other
     * op that came in the same turn: one take of the member's lock for them all. */
    sq__kvs_outbox_push(s, e);
}

#define SEND_BATCH 64 /* ops multicast under one take of the member's lock */

void sq__kvs_flush_outbox(struct sq_kv_server *s)
{
    while (s->outbox != NULL) {
        /* the ops at the head of the outbox that go into the same subgroup */
        struct entry *run[SEND_BATCH];
        const void *data[SEND_BATCH];
        size_t sizes[SEND_BATCH];
        uint32_t n = 0;
        for (struct entry *e = s->outbox; e != NULL && n < SEND_BATCH && e->sg == s->outbox->sg;
             e = e->onext) {
            run[n] = e;
            data[n] = e->opbuf;
            sizes[n] = e->oplen;
            n++;
        }
        uint32_t sent = 0;
        int rc = sq_member_send_many(s->m, run[0]->sg, n, data, sizes, SQ_SEND_NONBLOCK, &sent);
        uint64_t now = s->ntraced > 0 ? sq__mono_us() : 0;
        for (uint32_t i = 0; i < sent; i++) {
            struct entry *e = run[i];
            s->outbox = e->onext;
            e->queued = false;
            if (e->traced) {
                e->tr_mcast = now;
            }
        }
        if (s->outbox == NULL) {
            s->outbox_tail = NULL;
        }
        if (rc == 0) {
            continue;
        }
        if (rc == SQ_EAGAIN || (rc == SQ_ECLOSED && sq__kvs_out_of_group(s))) {
            /* The window is full or the view is changing: keep the order, retry soon. A member
             * that just failed: squalld detaches the service at once, and the client resends
             * elsewhere; until then the op waits rather than failing for good. */
            return;
        }
        struct entry *e = run[sent]; /* cannot go into the shard: answered */
        sq__kvs_reply_err(s, e->origin, e->op, e->client, e->req_id,
                          rc == SQ_ENOTSUP ? SQ_ESTATE : rc, 0,
                          "member %u cannot send into the shard: %s", s->my_id, sq_strerror(rc));
        sq__kvs_entry_free(s, e);
    }
}

/* ---- relaying ---- */

static struct conn *relay_conn(struct sq_kv_server *s, uint32_t member)
{
    for (struct conn *c = s->conns; c != NULL; c = c->next) {
        if (c->relay && c->member == member && !c->dead) {
            return c;
        }
    }
    int r = sq__config_rank_of(&s->cfg, member);
    if (r < 0 || s->cfg.members[r].client_port == 0) {
        return NULL;
    }
    char port[16];
    snprintf(port, sizeof(port), "%u", s->cfg.members[r].client_port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    if (getaddrinfo(s->cfg.members[r].host, port, &hints, &ai) != 0 || ai == NULL) {
        return NULL;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        freeaddrinfo(ai);
        return NULL;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
        freeaddrinfo(ai);
        close(fd);
        return NULL;
    }
    freeaddrinfo(ai);
    return sq__kvs_conn_new(s, fd, true, member);
}

void sq__kvs_relay(struct sq_kv_server *s, uint64_t origin, const struct sq_kv_frame *f,
                   uint32_t member, struct agg *agg)
{
    struct conn *rc = relay_conn(s, member);
    struct entry *e = rc != NULL ? entry_add(s, f->client, f->req_id, f->op, origin, rc->id) : NULL;
    if (e == NULL) {
        if (agg != NULL) {
            agg->remaining--;
            agg->status = SQ_EPEER;
        } else {
            sq__kvs_reply_err(s, origin, f->op, f->client, f->req_id, SQ_EPEER, 0,
                              "member %u, which serves that key, cannot be reached", member);
        }
        return;
    }
    e->agg = agg;
    e->watch = f->op == SQ_KV_OP_WATCH;
    struct sq_kv_frame g = *f;
    g.flags |= SQ_KV_F_LOCAL;
    sq__kvs_conn_send(s, rc, &g);
}

void sq__kvs_relay_answer(struct sq_kv_server *s, struct conn *rc, const struct sq_kv_frame *a)
{
    uint32_t b = sq__kvs_ent_bucket(a->client, a->req_id);
    for (struct entry *e = s->ents[b], *next; e != NULL; e = next) {
        next = e->next;
        if (e->via != rc->id || e->client != a->client || e->req_id != a->req_id) {
            continue;
        }
        if (a->op == SQ_KV_OP_EVENT) {
            sq__kvs_conn_send(s, sq__kvs_conn_by_id(s, e->origin), a);
            continue;
        }
        if (e->agg != NULL) {
            struct agg *agg = e->agg;
            e->agg = NULL;
            if (!e->watch || a->status != 0) {
                sq__kvs_entry_free(s, e);
            }
            sq__kvs_agg_part(s, agg, a);
        } else {
            sq__kvs_conn_send(s, sq__kvs_conn_by_id(s, e->origin), a);
            if (!e->watch || a->status != 0) {
                sq__kvs_entry_free(s, e);
            }
        }
    }
}

/* ---- fan-out: one request to every shard of a pool ---- */

void sq__kvs_agg_finish(struct sq_kv_server *s, struct agg *agg)
{
    if (agg->status != 0 && agg->op == SQ_KV_OP_WATCH) {
        /* a watch is all shards or nothing: the client will ask again */
        sq__kvs_drop_watch(s, agg->origin, agg->client, agg->req_id);
    }
    if (agg->status != 0) {
        sq__kvs_reply_err(s, agg->origin, agg->op, agg->client, agg->req_id, agg->status, 0, "%s",
                          agg->msg[0] ? agg->msg : sq_strerror(agg->status));
    } else if (agg->op == SQ_KV_OP_LIST) {
        struct sq_kv_frame f = {.op = agg->op, .client = agg->client, .req_id = agg->req_id};
        sq__kvs_send_items(s, agg->origin, &f, &agg->items, agg->nitems);
    } else {
        struct sq_kv_frame a = {.op = agg->op, .req_id = agg->req_id, .client = agg->client};
        sq__kvs_conn_send(s, sq__kvs_conn_by_id(s, agg->origin), &a);
    }
    sq__buf_free(&agg->items);
    free(agg);
}

void sq__kvs_agg_part(struct sq_kv_server *s, struct agg *agg, const struct sq_kv_frame *a)
{
    if (a->status != 0 && agg->status == 0) {
        agg->status = a->status;
        snprintf(agg->msg, sizeof(agg->msg), "%.*s", (int)SQ_MIN(a->str_len, 190u),
                 a->str != NULL ? a->str : "");
    } else if (a->status == 0 && agg->op == SQ_KV_OP_LIST) {
        if (sq__buf_add(&agg->items, a->value, a->value_len) != 0) {
            agg->status = SQ_ENOMEM;
        }
        agg->nitems += a->count;
    }
    if (--agg->remaining == 0) {
        sq__kvs_agg_finish(s, agg);
    }
}
