/* store.c: one shard's key-value store: keys in an xxhash64 table, each with its latest value
 * and (persistent stores) every version's metadata, plus the at-most-once table of requests. */
#include "kv/store.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "le.h"
#include "squall.h"

struct key {
    struct key *next; /* bucket chain */
    uint64_t hash;
    char *name;
    uint16_t len;
    void *value; /* the latest value (NULL for trigger stores and removals) */
    uint32_t size;
    struct sq_kv_version *hist; /* oldest first; volatile stores keep only the latest */
    uint32_t nhist, caphist;
};

struct answer {
    uint64_t req_id;
    int32_t status;
    uint64_t version;
    uint64_t timestamp;
};

struct client {
    struct client *next;
    uint64_t id;
    uint64_t last_used; /* version of its latest request: the least recent client is evicted */
    uint32_t n, head;   /* ring of its last answers */
    struct answer ring[SQ_KV_DEDUP_PER_CLIENT];
};

struct sq_kv_store {
    int type;
    uint64_t last;
    struct key **buckets;
    uint64_t nbuckets, nkeys;
    struct client **cbuckets; /* SQ_KV_DEDUP_CLIENTS * 2 buckets */
    uint64_t nclients;
};

#define CBUCKETS (SQ_KV_DEDUP_CLIENTS * 2)

size_t sq__kv_op_bytes(const struct sq_kv_op *op)
{
    return SQ_KV_OP_HEADER_BYTES + (size_t)op->key_len + op->value_len;
}

void sq__kv_op_encode(const struct sq_kv_op *op, void *out)
{
    uint8_t *p = out;
    p[0] = op->kind;
    p[1] = op->flags;
    sq__st16(p + 2, op->key_len);
    sq__st32(p + 4, op->value_len);
    sq__st64(p + 8, op->client);
    sq__st64(p + 16, op->req_id);
    sq__st64(p + 24, op->expect);
    sq__st32(p + 32, op->origin);
    sq__st32(p + 36, op->arg);
    if (op->key_len > 0) {
        memcpy(p + SQ_KV_OP_HEADER_BYTES, op->key, op->key_len);
    }
    if (op->value_len > 0) {
        memcpy(p + SQ_KV_OP_HEADER_BYTES + op->key_len, op->value, op->value_len);
    }
}

int sq__kv_op_decode(const void *buf, size_t len, struct sq_kv_op *op)
{
    const uint8_t *p = buf;
    if (len < SQ_KV_OP_HEADER_BYTES || p[0] < SQ_KV_PUT || p[0] > SQ_KV_POOL_CREATE ||
        SQ_KV_OP_HEADER_BYTES + (size_t)sq__ld16(p + 2) + sq__ld32(p + 4) != len) {
        return SQ_EPROTO;
    }
    *op = (struct sq_kv_op){.kind = p[0],
                            .flags = p[1],
                            .key_len = sq__ld16(p + 2),
                            .value_len = sq__ld32(p + 4),
                            .client = sq__ld64(p + 8),
                            .req_id = sq__ld64(p + 16),
                            .expect = sq__ld64(p + 24),
                            .origin = sq__ld32(p + 32),
                            .arg = sq__ld32(p + 36)};
    op->key = (const char *)p + SQ_KV_OP_HEADER_BYTES;
    op->value = op->key + op->key_len;
    return 0;
}

int sq__kv_store_create(struct sq_kv_store **out, int type)
{
    struct sq_kv_store *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return SQ_ENOMEM;
    }
    s->type = type;
    s->nbuckets = 1024;
    s->buckets = calloc(s->nbuckets, sizeof(*s->buckets));
    s->cbuckets = calloc(CBUCKETS, sizeof(*s->cbuckets));
    if (s->buckets == NULL || s->cbuckets == NULL) {
        sq__kv_store_destroy(s);
        return SQ_ENOMEM;
    }
    *out = s;
    return 0;
}

static void clear(struct sq_kv_store *s)
{
    for (uint64_t b = 0; b < s->nbuckets; b++) {
        struct key *k = s->buckets[b];
        while (k != NULL) {
            struct key *next = k->next;
            free(k->name);
            free(k->value);
            free(k->hist);
            free(k);
            k = next;
        }
        s->buckets[b] = NULL;
    }
    for (uint64_t b = 0; b < CBUCKETS; b++) {
        struct client *c = s->cbuckets[b];
        while (c != NULL) {
            struct client *next = c->next;
            free(c);
            c = next;
        }
        s->cbuckets[b] = NULL;
    }
    s->nkeys = 0;
    s->nclients = 0;
    s->last = 0;
}

void sq__kv_store_destroy(struct sq_kv_store *s)
{
    if (s == NULL) {
        return;
    }
    if (s->buckets != NULL && s->cbuckets != NULL) {
        clear(s);
    }
    free(s->buckets);
    free(s->cbuckets);
    free(s);
}

int sq__kv_store_type(const struct sq_kv_store *s)
{
    return s->type;
}

uint64_t sq__kv_store_last(const struct sq_kv_store *s)
{
    return s->last;
}

uint64_t sq__kv_store_keys(const struct sq_kv_store *s)
{
    return s->nkeys;
}

static struct key *find(const struct sq_kv_store *s, const char *name, uint16_t len, uint64_t hash)
{
    for (struct key *k = s->buckets[hash & (s->nbuckets - 1)]; k != NULL; k = k->next) {
        if (k->hash == hash && k->len == len && memcmp(k->name, name, len) == 0) {
            return k;
        }
    }
    return NULL;
}

/* Doubles the table when it averages more than one key a bucket (one O(n) pass, then amortized
 * O(1) per key). Failing to grow only makes chains longer. */
static void grow(struct sq_kv_store *s)
{
    uint64_t n = s->nbuckets * 2;
    struct key **b = calloc(n, sizeof(*b));
    if (b == NULL) {
        return;
    }
    for (uint64_t i = 0; i < s->nbuckets; i++) {
        struct key *k = s->buckets[i];
        while (k != NULL) {
            struct key *next = k->next;
            k->next = b[k->hash & (n - 1)];
            b[k->hash & (n - 1)] = k;
            k = next;
        }
    }
    free(s->buckets);
    s->buckets = b;
    s->nbuckets = n;
}

static struct key *insert(struct sq_kv_store *s, const char *name, uint16_t len, uint64_t hash)
{
    struct key *k = calloc(1, sizeof(*k));
    if (k == NULL) {
        return NULL;
    }
    k->name = malloc(len > 0 ? len : 1);
    if (k->name == NULL) {
        free(k);
        return NULL;
    }
    memcpy(k->name, name, len);
    k->len = len;
    k->hash = hash;
    if (s->nkeys >= s->nbuckets) {
        grow(s);
    }
    k->next = s->buckets[hash & (s->nbuckets - 1)];
    s->buckets[hash & (s->nbuckets - 1)] = k;
    s->nkeys++;
    return k;
}

static struct client *client_find(struct sq_kv_store *s, uint64_t id)
{
    for (struct client *c = s->cbuckets[id % CBUCKETS]; c != NULL; c = c->next) {
        if (c->id == id) {
            return c;
        }
    }
    return NULL;
}

static void client_evict_oldest(struct sq_kv_store *s)
{
    struct client **victim = NULL;
    for (uint64_t b = 0; b < CBUCKETS; b++) {
        for (struct client **pc = &s->cbuckets[b]; *pc != NULL; pc = &(*pc)->next) {
            /* ties cannot happen: two clients never share a request's version */
            if (victim == NULL || (*pc)->last_used < (*victim)->last_used) {
                victim = pc;
            }
        }
    }
    if (victim != NULL) {
        struct client *c = *victim;
        *victim = c->next;
        free(c);
        s->nclients--;
    }
}

static const struct answer *answered(struct sq_kv_store *s, uint64_t client, uint64_t req)
{
    struct client *c = client_find(s, client);
    if (c == NULL) {
        return NULL;
    }
    for (uint32_t i = 0; i < c->n; i++) {
        if (c->ring[i].req_id == req) {
            return &c->ring[i];
        }
    }
    return NULL;
}

/* Remembers an answer. Out of memory, the request is simply not remembered: a retry would be
 * applied again, which is what happens beyond the table's bounds anyway. Deterministic: every
 * replica evicts the same clients. */
static void remember(struct sq_kv_store *s, uint64_t client, uint64_t req, uint64_t at,
                     const struct sq_kv_applied *a)
{
    if (client == 0) {
        return; /* internal requests carry no client */
    }
    struct client *c = client_find(s, client);
    if (c == NULL) {
        if (s->nclients >= SQ_KV_DEDUP_CLIENTS) {
            client_evict_oldest(s);
        }
        c = calloc(1, sizeof(*c));
        if (c == NULL) {
            return;
        }
        c->id = client;
        c->next = s->cbuckets[client % CBUCKETS];
        s->cbuckets[client % CBUCKETS] = c;
        s->nclients++;
    }
    c->last_used = at;
    c->ring[c->head] = (struct answer){req, a->status, a->version, a->timestamp};
    c->head = (c->head + 1) % SQ_KV_DEDUP_PER_CLIENT;
    if (c->n < SQ_KV_DEDUP_PER_CLIENT) {
        c->n++;
    }
}

static const struct sq_kv_version *latest(const struct key *k)
{
    return k != NULL && k->nhist > 0 ? &k->hist[k->nhist - 1] : NULL;
}

static int add_version(struct sq_kv_store *s, struct key *k, const struct sq_kv_version *v,
                       const void *value)
{
    void *copy = NULL;
    if (!v->deleted && s->type != SQ_KV_STORE_TRIGGER) {
        copy = malloc(v->size > 0 ? v->size : 1);
        if (copy == NULL) {
            return SQ_ENOMEM;
        }
        if (v->size > 0) {
            memcpy(copy, value, v->size);
        }
    }
    uint32_t keep = s->type == SQ_KV_STORE_PERSISTENT ? k->nhist + 1 : 1;
    if (keep > k->caphist) {
        uint32_t cap = k->caphist ? k->caphist * 2 : 2;
        struct sq_kv_version *h = realloc(k->hist, cap * sizeof(*h));
        if (h == NULL) {
            free(copy);
            return SQ_ENOMEM;
        }
        k->hist = h;
        k->caphist = cap;
    }
    if (s->type == SQ_KV_STORE_PERSISTENT) {
        k->hist[k->nhist++] = *v;
    } else {
        k->hist[0] = *v;
        k->nhist = 1;
    }
    free(k->value);
    k->value = copy;
    k->size = v->deleted ? 0 : v->size;
    return 0;
}

int sq__kv_store_apply(struct sq_kv_store *s, const struct sq_kv_op *op, uint64_t version,
                       uint64_t timestamp, struct sq_kv_applied *out)
{
    *out = (struct sq_kv_applied){0};
    if (op->kind != SQ_KV_PUT && op->kind != SQ_KV_REMOVE) {
        s->last = version;
        out->version = version;
        out->timestamp = timestamp;
        return 0; /* barriers change nothing */
    }
    const struct answer *a = answered(s, op->client, op->req_id);
    if (op->client != 0 && a != NULL) {
        *out = (struct sq_kv_applied){.status = a->status,
                                      .version = a->version,
                                      .timestamp = a->timestamp,
                                      .duplicate = true};
        s->last = version;
        return 0;
    }
    uint64_t hash = XXH64(op->key, op->key_len, 0);
    struct key *k = find(s, op->key, op->key_len, hash);
    const struct sq_kv_version *cur = latest(k);
    bool exists = cur != NULL && !cur->deleted;
    uint64_t cur_version = cur != NULL ? cur->version : 0;
    int status = 0;
    if ((op->flags & SQ_KV_OPF_IF_ABSENT) && exists) {
        status = SQ_ECONFLICT;
    } else if ((op->flags & SQ_KV_OPF_IF_VERSION) &&
               (op->expect == 0 ? exists : op->expect != cur_version)) {
        status = SQ_ECONFLICT;
    } else if (op->kind == SQ_KV_REMOVE && !exists) {
        status = SQ_ENOTFOUND;
    }
    if (status != 0) {
        *out = (struct sq_kv_applied){.status = status,
                                      .version = cur_version,
                                      .timestamp = cur != NULL ? cur->timestamp : 0};
    } else {
        bool created = false;
        if (k == NULL) {
            k = insert(s, op->key, op->key_len, hash);
            if (k == NULL) {
                return SQ_ENOMEM;
            }
            created = true;
        }
        struct sq_kv_version v = {.version = version,
                                  .timestamp = timestamp,
                                  .size = op->kind == SQ_KV_PUT ? op->value_len : 0,
                                  .deleted = op->kind == SQ_KV_REMOVE};
        int rc = add_version(s, k, &v, op->value);
        if (rc != 0) {
            if (created) {
                /* take the new key out again: it is at the head of its bucket */
                s->buckets[hash & (s->nbuckets - 1)] = k->next;
                s->nkeys--;
                free(k->name);
                free(k);
            }
            return rc;
        }
        *out = (struct sq_kv_applied){.status = 0, .version = version, .timestamp = timestamp};
    }
    remember(s, op->client, op->req_id, version, out);
    s->last = version;
    return 0;
}

/* Index of the latest version with field <= at (by version or by timestamp), or -1. Both fields
 * grow along the history. */
static long search(const struct key *k, bool by_time, uint64_t at)
{
    long lo = 0, hi = (long)k->nhist - 1, best = -1;
    while (lo <= hi) {
        long mid = lo + (hi - lo) / 2;
        uint64_t f = by_time ? k->hist[mid].timestamp : k->hist[mid].version;
        if (f <= at) {
            best = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    return best;
}

int sq__kv_store_get(const struct sq_kv_store *s, const char *key, uint16_t key_len, int how,
                     uint64_t at, struct sq_kv_version *v, const void **value, size_t *value_size)
{
    const struct key *k = find(s, key, key_len, XXH64(key, key_len, 0));
    *value = NULL;
    *value_size = 0;
    if (k == NULL || k->nhist == 0) {
        return SQ_ENOTFOUND;
    }
    long i = (long)k->nhist - 1;
    if (how == SQ_KV_AT_VERSION || how == SQ_KV_AT_TIME) {
        i = search(k, how == SQ_KV_AT_TIME, at);
    }
    if (i < 0) {
        return SQ_ENOTFOUND;
    }
    *v = k->hist[i];
    if (i == (long)k->nhist - 1 && !v->deleted && k->value != NULL) {
        *value = k->value;
        *value_size = k->size;
    }
    return 0;
}

int sq__kv_store_history(const struct sq_kv_store *s, const char *key, uint16_t key_len,
                         const struct sq_kv_version **versions, uint32_t *n)
{
    const struct key *k = find(s, key, key_len, XXH64(key, key_len, 0));
    if (k == NULL || k->nhist == 0) {
        return SQ_ENOTFOUND;
    }
    *versions = k->hist;
    *n = k->nhist;
    return 0;
}

void sq__kv_store_each(const struct sq_kv_store *s, const char *prefix, uint16_t prefix_len,
                       bool removed, bool at_time, uint64_t time, sq_kv_each_fn fn, void *arg)
{
    for (uint64_t b = 0; b < s->nbuckets; b++) {
        for (const struct key *k = s->buckets[b]; k != NULL; k = k->next) {
            if (k->len < prefix_len || memcmp(k->name, prefix, prefix_len) != 0 || k->nhist == 0) {
                continue;
            }
            long i = at_time ? search(k, true, time) : (long)k->nhist - 1;
            if (i >= 0 && (removed || !k->hist[i].deleted)) {
                fn(arg, k->name, k->len, &k->hist[i]);
            }
        }
    }
}

/* Saved store (little-endian): "SQKV" u32 format 1, u32 type, u64 last, u64 nkeys, then per
 * key: u16 len, u32 nhist, u32 value size, u8 has value, name, value, nhist x (u64 version,
 * u64 timestamp, u32 size, u8 deleted); then u64 nclients and per client: u64 id, u64
 * last_used, u32 n, u32 head, n x (u64 req, i32 status, u64 version, u64 timestamp). */
#define SAVE_MAGIC 0x564b5153u
#define VER_BYTES 21u
#define ANSWER_BYTES 28u

/* Keys by name and clients by id: a saved store depends only on what the store holds, not on
 * the order its hash chains happen to be in (which differs between a store that applied the ops
 * and one that loaded them), so every replica saves the same bytes for the same state. */
static int cmp_key(const void *a, const void *b)
{
    const struct key *x = *(const struct key *const *)a, *y = *(const struct key *const *)b;
    int c = memcmp(x->name, y->name, x->len < y->len ? x->len : y->len);
    return c != 0 ? c : (x->len > y->len) - (x->len < y->len);
}

static int cmp_client(const void *a, const void *b)
{
    const struct client *x = *(const struct client *const *)a;
    const struct client *y = *(const struct client *const *)b;
    return (x->id > y->id) - (x->id < y->id);
}

int sq__kv_store_save(const struct sq_kv_store *s, void **buf, size_t *size)
{
    size_t need = 24;
    size_t nk = 0, nc = 0;
    const struct key **keys = malloc((s->nkeys > 0 ? s->nkeys : 1) * sizeof(*keys));
    const struct client **clients = malloc((s->nclients > 0 ? s->nclients : 1) * sizeof(*clients));
    if (keys == NULL || clients == NULL) {
        free(keys);
        free(clients);
        return SQ_ENOMEM;
    }
    for (uint64_t b = 0; b < s->nbuckets; b++) {
        for (const struct key *k = s->buckets[b]; k != NULL; k = k->next) {
            need += 11 + (size_t)k->len + (k->value ? k->size : 0) + (size_t)k->nhist * VER_BYTES;
            keys[nk++] = k;
        }
    }
    need += 8;
    for (uint64_t b = 0; b < CBUCKETS; b++) {
        for (const struct client *c = s->cbuckets[b]; c != NULL; c = c->next) {
            need += 24 + (size_t)c->n * ANSWER_BYTES;
            clients[nc++] = c;
        }
    }
    qsort(keys, nk, sizeof(*keys), cmp_key);
    qsort(clients, nc, sizeof(*clients), cmp_client);
    uint8_t *p = malloc(need);
    if (p == NULL) {
        free(keys);
        free(clients);
        return SQ_ENOMEM;
    }
    uint8_t *q = p;
    sq__st32(q, SAVE_MAGIC);
    sq__st32(q + 4, (1u << 8) | (uint32_t)s->type);
    sq__st64(q + 8, s->last);
    sq__st64(q + 16, s->nkeys);
    q += 24;
    for (size_t i = 0; i < nk; i++) {
        const struct key *k = keys[i];
        sq__st16(q, k->len);
        sq__st32(q + 2, k->nhist);
        sq__st32(q + 6, k->value ? k->size : 0);
        q[10] = k->value != NULL;
        q += 11;
        memcpy(q, k->name, k->len);
        q += k->len;
        if (k->value != NULL && k->size > 0) {
            memcpy(q, k->value, k->size);
            q += k->size;
        }
        for (uint32_t j = 0; j < k->nhist; j++) {
            sq__st64(q, k->hist[j].version);
            sq__st64(q + 8, k->hist[j].timestamp);
            sq__st32(q + 16, k->hist[j].size);
            q[20] = k->hist[j].deleted;
            q += VER_BYTES;
        }
    }
    sq__st64(q, s->nclients);
    q += 8;
    for (size_t i = 0; i < nc; i++) {
        const struct client *c = clients[i];
        sq__st64(q, c->id);
        sq__st64(q + 8, c->last_used);
        sq__st32(q + 16, c->n);
        sq__st32(q + 20, c->head);
        q += 24;
        for (uint32_t j = 0; j < c->n; j++) {
            sq__st64(q, c->ring[j].req_id);
            sq__st32(q + 8, (uint32_t)c->ring[j].status);
            sq__st64(q + 12, c->ring[j].version);
            sq__st64(q + 20, c->ring[j].timestamp);
            q += ANSWER_BYTES;
        }
    }
    free(keys);
    free(clients);
    *buf = p;
    *size = (size_t)(q - p);
    return 0;
}

int sq__kv_store_load(struct sq_kv_store *s, const void *buf, size_t size)
{
    const uint8_t *p = buf, *end = p + size;
    if (size < 24 || sq__ld32(p) != SAVE_MAGIC || sq__ld32(p + 4) != ((1u << 8) | (uint32_t)s->type)) {
        return SQ_EPROTO;
    }
    clear(s);
    uint64_t last = sq__ld64(p + 8), nkeys = sq__ld64(p + 16);
    p += 24;
    int rc = SQ_EPROTO;
    for (uint64_t i = 0; i < nkeys; i++) {
        if (end - p < 11) {
            goto bad;
        }
        uint16_t len = sq__ld16(p);
        uint32_t nhist = sq__ld32(p + 2), vsize = sq__ld32(p + 6);
        bool has_value = p[10] != 0;
        p += 11;
        if ((size_t)(end - p) < (size_t)len + (has_value ? vsize : 0) + (size_t)nhist * VER_BYTES ||
            nhist == 0) {
            goto bad;
        }
        uint64_t hash = XXH64(p, len, 0);
        if (find(s, (const char *)p, len, hash) != NULL) {
            goto bad; /* a key saved twice */
        }
        struct key *k = insert(s, (const char *)p, len, hash);
        if (k == NULL) {
            rc = SQ_ENOMEM;
            goto bad;
        }
        p += len;
        if (has_value) {
            k->value = malloc(vsize > 0 ? vsize : 1);
            if (k->value == NULL) {
                rc = SQ_ENOMEM;
                goto bad;
            }
            memcpy(k->value, p, vsize);
            k->size = vsize;
            p += vsize;
        }
        k->hist = malloc((size_t)nhist * sizeof(*k->hist));
        if (k->hist == NULL) {
            rc = SQ_ENOMEM;
            goto bad;
        }
        k->nhist = k->caphist = nhist;
        for (uint32_t j = 0; j < nhist; j++) {
            k->hist[j] = (struct sq_kv_version){.version = sq__ld64(p),
                                                .timestamp = sq__ld64(p + 8),
                                                .size = sq__ld32(p + 16),
                                                .deleted = p[20] != 0};
            p += VER_BYTES;
        }
    }
    if (end - p < 8) {
        goto bad;
    }
    uint64_t nclients = sq__ld64(p);
    p += 8;
    if (nclients > SQ_KV_DEDUP_CLIENTS) {
        goto bad;
    }
    for (uint64_t i = 0; i < nclients; i++) {
        if (end - p < 24) {
            goto bad;
        }
        struct client *c = calloc(1, sizeof(*c));
        if (c == NULL) {
            rc = SQ_ENOMEM;
            goto bad;
        }
        c->id = sq__ld64(p);
        c->last_used = sq__ld64(p + 8);
        c->n = sq__ld32(p + 16);
        c->head = sq__ld32(p + 20);
        p += 24;
        /* a ring that is not full has its head right after its answers (remember() fills
         * slots 0, 1, ... in order); each client once */
        if (c->n > SQ_KV_DEDUP_PER_CLIENT || c->head >= SQ_KV_DEDUP_PER_CLIENT ||
            (c->n < SQ_KV_DEDUP_PER_CLIENT && c->head != c->n) || client_find(s, c->id) != NULL ||
            (size_t)(end - p) < (size_t)c->n * ANSWER_BYTES) {
            free(c);
            goto bad;
        }
        for (uint32_t j = 0; j < c->n; j++) {
            c->ring[j] = (struct answer){sq__ld64(p), (int32_t)sq__ld32(p + 8), sq__ld64(p + 12), sq__ld64(p + 20)};
            p += ANSWER_BYTES;
            /* only answers apply can give: a retry must never be answered with anything else */
            int32_t st = c->ring[j].status;
            if (st != 0 && st != SQ_ECONFLICT && st != SQ_ENOTFOUND) {
                free(c);
                goto bad;
            }
        }
        c->next = s->cbuckets[c->id % CBUCKETS];
        s->cbuckets[c->id % CBUCKETS] = c;
        s->nclients++;
    }
    if (p != end) {
        goto bad;
    }
    s->last = last;
    return 0;
bad:
    clear(s);
    return rc;
}
