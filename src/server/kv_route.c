/* kv_route.c: requests on keys and pools: checked against the pool table, routed key -> pool ->
 * shard -> member, and served here (multicast, read, watch) or relayed to a member of the shard;
 * pool creation and the pool list. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "common.h"
#include "config.h"
#include "kv/buf.h"
#include "kv/store.h"
#include "kv/wire.h"
#include "server/kv_internal.h"

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

/* ---- requests from clients ---- */

void sq__kvs_key_request(struct sq_kv_server *s, struct conn *c, const struct sq_kv_frame *f)
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
        /* A pool's own path (as a prefix, without its '/') is a mistake of its own: say where
         * the pool's keys are rather than that no pool holds it. */
        bool is_pool = false;
        pthread_mutex_lock(&s->mu);
        for (uint32_t i = 0; i < s->npools && !is_pool; i++) {
            is_pool =
                s->pools[i].len == f->key_len && memcmp(s->pools[i].path, f->key, f->key_len) == 0;
        }
        pthread_mutex_unlock(&s->mu);
        int n = (int)SQ_MIN(f->key_len, 200u);
        if (is_pool && (f->op == SQ_KV_OP_LIST || f->op == SQ_KV_OP_WATCH)) {
            sq__kvs_reply_err(s, c->id, f->op, f->client, f->req_id, SQ_EINVAL, 0,
                              "'%.*s' is a pool: its keys are under '%.*s/'", n, f->key, n, f->key);
        } else if (is_pool) {
            sq__kvs_reply_err(s, c->id, f->op, f->client, f->req_id, SQ_EINVAL, 0,
                              "'%.*s' is a pool, not a key: its keys go under it, such as %.*s/42",
                              n, f->key, n, f->key);
        } else {
            sq__kvs_reply_err(s, c->id, f->op, f->client, f->req_id, SQ_ENOPOOL, 0,
                              "no pool holds '%.*s' (create one with: squall pool create PATH "
                              "TYPE)",
                              n, f->key);
        }
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

void sq__kvs_pool_create(struct sq_kv_server *s, struct conn *c, const struct sq_kv_frame *f)
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
                          "subgroup %s has %u shard%s: a pool on it can use at most that many",
                          s->cfg.subgroups[sg].name, s->cfg.subgroups[sg].shards,
                          s->cfg.subgroups[sg].shards == 1 ? "" : "s");
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

void sq__kvs_pool_list(struct sq_kv_server *s, struct conn *c, const struct sq_kv_frame *f)
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
