/* kv_read.c: reads answered from this member's store of a shard and from its log: get, and the
 * items of list and history. */
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "kv/buf.h"
#include "kv/store.h"
#include "kv/wire.h"
#include "server/kv_internal.h"

#define LOG_WAIT_MS 2000 /* how long a read waits for a delivered entry to reach the log */

int sq__kvs_read_logged(struct sq_kv_server *s, uint32_t sg, uint64_t version, const void **val,
                        uint32_t *len)
{
    uint64_t deadline = sq__mono_ms() + LOG_WAIT_MS;
    for (;;) {
        sq_record rec;
        int rc = sq_member_log_get(s->m, sg, SQ_LOG_EXACT, version - 1, &rec, s->logbuf, s->logcap);
        if (rc == 0) {
            struct sq_kv_op op;
            if (rec.size > s->logcap || sq__kv_op_decode(s->logbuf, rec.size, &op) != 0) {
                return SQ_ECORRUPT;
            }
            *val = op.value;
            *len = op.value_len;
            return 0;
        }
        if (rc != SQ_ENOTFOUND || sq__mono_ms() > deadline) {
            return rc;
        }
        /* Wait only when the log ends before it (not written yet); an entry after it means
         * the log will never have it (a member that started from a handed-over state). */
        if (version >= 2 &&
            sq_member_log_get(s->m, sg, SQ_LOG_AFTER, version - 1, &rec, NULL, 0) == 0) {
            return SQ_ENOTFOUND;
        }
        usleep(1000);
    }
}

void sq__kvs_answer_get(struct sq_kv_server *s, struct conn *c, const struct sq_kv_frame *f,
                        uint32_t sg)
{
    int how = (f->flags & SQ_KV_F_AT_VERSION) ? SQ_KV_AT_VERSION
              : (f->flags & SQ_KV_F_AT_TIME)  ? SQ_KV_AT_TIME
                                              : SQ_KV_LATEST;
    uint64_t at = how == SQ_KV_AT_TIME ? f->time : f->version;
    struct sq_kv_version v;
    const void *val = NULL;
    size_t vsize = 0;
    void *copy = NULL;
    pthread_mutex_lock(&s->mu);
    struct sq_kv_store *st = s->store[sg];
    int rc = st == NULL ? SQ_ESTATE
                        : sq__kv_store_get(st, f->key, f->key_len, how, at, &v, &val, &vsize);
    if (rc == 0 && val != NULL && !(f->flags & SQ_KV_F_SIZE_ONLY)) {
        copy = malloc(vsize > 0 ? vsize : 1);
        if (copy == NULL) {
            rc = SQ_ENOMEM;
        } else {
            memcpy(copy, val, vsize);
        }
    }
    pthread_mutex_unlock(&s->mu);
    struct sq_kv_frame a = {.op = SQ_KV_OP_GET, .req_id = f->req_id, .client = f->client};
    if (rc == SQ_ENOTFOUND) {
        sq__kvs_reply_err(s, c->id, SQ_KV_OP_GET, f->client, f->req_id, rc, 0, "%.*s: %s",
                          (int)f->key_len, f->key,
                          how == SQ_KV_LATEST ? "no such key"
                                              : "no version of the key at or before that point");
        goto out;
    }
    if (rc != 0) {
        sq__kvs_reply_err(s, c->id, SQ_KV_OP_GET, f->client, f->req_id, rc, 0, "%s",
                          sq_strerror(rc));
        goto out;
    }
    a.version = v.version;
    a.time = v.timestamp;
    a.count = v.size;
    if (v.deleted) {
        a.status = SQ_ENOTFOUND;
        a.flags = SQ_KV_F_DELETED;
        static const char m1[] = "the key was removed at that point";
        static const char m2[] = "the key was removed";
        a.str = how == SQ_KV_LATEST ? m2 : m1;
        a.str_len = (uint16_t)strlen(a.str);
    } else if (!(f->flags & SQ_KV_F_SIZE_ONLY)) {
        if (copy != NULL) {
            a.value = copy;
            a.value_len = (uint32_t)vsize;
        } else {
            uint32_t len = 0;
            rc = sq__kvs_read_logged(s, sg, v.version, &a.value, &len);
            if (rc != 0) {
                sq__kvs_reply_err(s, c->id, SQ_KV_OP_GET, f->client, f->req_id, rc, v.version,
                                  "reading version 0x%" PRIx64 " from the log: %s", v.version,
                                  sq_strerror(rc));
                goto out;
            }
            a.value_len = len;
        }
    } else {
        a.flags = SQ_KV_F_SIZE_ONLY;
    }
    char trace[200];
    if ((f->flags & SQ_KV_F_TRACE) && a.status == 0) {
        a.flags |= SQ_KV_F_TRACE;
        a.str = trace;
        a.str_len = sq__kvs_trace_text(trace, sizeof(trace), s->frame_recv_us, 0, 0, 0, 0);
    }
    sq__kvs_conn_send(s, c, &a);
out:
    free(copy);
}

struct collect {
    struct sq__buf *b;
    uint32_t n;
    int rc;
};

static void collect_item(void *arg, const char *key, uint16_t key_len,
                         const struct sq_kv_version *v)
{
    struct collect *co = arg;
    if (co->rc != 0 || sq__buf_reserve(co->b, SQ_KV_ITEM_HEADER_BYTES + key_len) != 0) {
        co->rc = SQ_ENOMEM;
        return;
    }
    struct sq_kv_item_raw it = {.version = v->version,
                                .timestamp = v->timestamp,
                                .size = v->size,
                                .flags = v->deleted,
                                .key = key,
                                .key_len = key_len};
    co->b->len += sq__kv_item_encode(&it, co->b->p + co->b->len);
    co->n++;
}

int sq__kvs_local_items(struct sq_kv_server *s, const struct sq_kv_frame *f, uint32_t sg,
                        struct sq__buf *b, uint32_t *n, char *why, size_t why_size)
{
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    struct sq_kv_store *st = s->store[sg];
    if (st == NULL) {
        rc = SQ_ESTATE;
        snprintf(why, why_size, "member %u does not serve that shard now", s->my_id);
    } else if (f->op == SQ_KV_OP_LIST) {
        if ((f->flags & SQ_KV_F_AT_TIME) && sq__kv_store_type(st) != SQ_KV_STORE_PERSISTENT) {
            rc = SQ_ENOTSUP;
            snprintf(why, why_size, "listing as of a time needs a persistent pool");
        } else {
            struct collect co = {b, 0, 0};
            sq__kv_store_each(st, f->key, f->key_len, false, (f->flags & SQ_KV_F_AT_TIME) != 0,
                              f->time, collect_item, &co);
            rc = co.rc;
            *n += co.n;
        }
    } else {
        const struct sq_kv_version *vs;
        uint32_t nv = 0;
        rc = sq__kv_store_history(st, f->key, f->key_len, &vs, &nv);
        if (rc == SQ_ENOTFOUND) {
            snprintf(why, why_size, "%.*s: no such key", (int)f->key_len, f->key);
        }
        struct collect co = {b, 0, 0};
        for (uint32_t i = 0; rc == 0 && i < nv; i++) {
            collect_item(&co, f->key, f->key_len, &vs[i]);
            rc = co.rc;
        }
        *n += co.n;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int cmp_items(const void *a, const void *b)
{
    const uint8_t *x = *(const uint8_t *const *)a, *y = *(const uint8_t *const *)b;
    uint16_t lx = (uint16_t)(x[20] | (x[21] << 8)), ly = (uint16_t)(y[20] | (y[21] << 8));
    int c = memcmp(x + SQ_KV_ITEM_HEADER_BYTES, y + SQ_KV_ITEM_HEADER_BYTES, SQ_MIN(lx, ly));
    return c != 0 ? c : (lx > ly) - (lx < ly);
}

void sq__kvs_send_items(struct sq_kv_server *s, uint64_t conn, const struct sq_kv_frame *f,
                        struct sq__buf *b, uint32_t n)
{
    struct sq__buf sorted = {0};
    const struct sq__buf *out = b;
    if (f->op == SQ_KV_OP_LIST && n > 1) {
        const uint8_t **ptrs = malloc(n * sizeof(*ptrs));
        if (ptrs == NULL || sq__buf_reserve(&sorted, b->len) != 0) {
            free(ptrs);
            sq__kvs_reply_err(s, conn, f->op, f->client, f->req_id, SQ_ENOMEM, 0, "out of memory");
            return;
        }
        size_t pos = 0;
        struct sq_kv_item_raw it;
        uint32_t got = 0;
        while (got < n && sq__kv_item_next(b->p, b->len, &pos, &it) == 0) {
            ptrs[got++] = (const uint8_t *)it.key - SQ_KV_ITEM_HEADER_BYTES;
        }
        /* The count is the sum of what the shards said; a relayed answer whose items do not
         * parse as many as it claims is refused rather than sorted past its end. */
        if (got != n || pos != b->len) {
            free(ptrs);
            sq__buf_free(&sorted);
            sq__kvs_reply_err(s, conn, f->op, f->client, f->req_id, SQ_EPROTO, 0,
                              "a shard's list answer is malformed (%u items counted, %u parsed)", n,
                              got);
            return;
        }
        qsort(ptrs, n, sizeof(*ptrs), cmp_items);
        for (uint32_t i = 0; i < n; i++) {
            uint16_t l = (uint16_t)(ptrs[i][20] | (ptrs[i][21] << 8));
            sq__buf_add(&sorted, ptrs[i], SQ_KV_ITEM_HEADER_BYTES + l);
        }
        free(ptrs);
        out = &sorted;
    }
    if (out->len > SQ_KV_MAX_VALUE) {
        sq__kvs_reply_err(s, conn, f->op, f->client, f->req_id, SQ_EMSGSIZE, 0,
                          "%u entries do not fit in one answer: use a longer prefix", n);
    } else {
        struct sq_kv_frame a = {.op = f->op,
                                .req_id = f->req_id,
                                .client = f->client,
                                .count = n,
                                .value = out->p,
                                .value_len = (uint32_t)out->len};
        sq__kvs_conn_send(s, sq__kvs_conn_by_id(s, conn), &a);
    }
    sq__buf_free(&sorted);
}
