/* test_kv_store.c: one shard's key-value store: the op format, puts, conditional puts, removals,
 * barriers, the at-most-once table and its bounds, reads at a version or a time, histories,
 * prefix walks, the three store types, 100k keys, state transfer (save and load) and load
 * refusing truncated or damaged state, and a random run checked against a simple model. */
#include <stdint.h>
#include <stdlib.h>

#include "kv/store.h"
#include "squall.h"
#include "test.h"

/* ---- helpers ---- */

static uint64_t rng_state;

static uint64_t rnd(void)
{
    /* xorshift64*: deterministic, so a failure reproduces */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static struct sq_kv_store *make(int type)
{
    struct sq_kv_store *s = NULL;
    int rc = sq__kv_store_create(&s, type);
    if (rc != 0 || s == NULL) {
        fprintf(stderr, "sq__kv_store_create(%d): %s\n", type, sq_strerror(rc));
        exit(2);
    }
    CHECK_EQ_INT(sq__kv_store_type(s), type);
    return s;
}

/* Applies one op as a member does: encoded, decoded from the delivered bytes, applied. */
static int apply(struct sq_kv_store *s, uint8_t kind, uint8_t flags, uint64_t expect,
                 uint64_t client, uint64_t req, const char *key, const char *value,
                 uint64_t version, uint64_t ts, struct sq_kv_applied *out)
{
    size_t klen = strlen(key), vlen = value != NULL ? strlen(value) : 0;
    struct sq_kv_op op = {.kind = kind, .flags = flags, .client = client, .req_id = req,
                          .expect = expect, .origin = 3, .arg = 0, .key = key,
                          .key_len = (uint16_t)klen, .value = value,
                          .value_len = (uint32_t)vlen};
    size_t n = sq__kv_op_bytes(&op);
    uint8_t *buf = malloc(n);
    if (buf == NULL) {
        return SQ_ENOMEM;
    }
    sq__kv_op_encode(&op, buf);
    struct sq_kv_op d;
    int rc = sq__kv_op_decode(buf, n, &d);
    CHECK_EQ_INT(rc, 0);
    if (rc == 0) {
        rc = sq__kv_store_apply(s, &d, version, ts, out);
    }
    free(buf);
    return rc;
}

static int put(struct sq_kv_store *s, const char *key, const char *value, uint64_t client,
               uint64_t req, uint64_t version, struct sq_kv_applied *out)
{
    return apply(s, SQ_KV_PUT, 0, 0, client, req, key, value, version, version * 10, out);
}

static int rm(struct sq_kv_store *s, const char *key, uint64_t client, uint64_t req,
              uint64_t version, struct sq_kv_applied *out)
{
    return apply(s, SQ_KV_REMOVE, 0, 0, client, req, key, NULL, version, version * 10, out);
}

/* The latest value of a key as a string ("" when it has none in memory, "<missing>" when the key
 * is unknown, "<removed>" for a tombstone). */
static const char *latest_value(const struct sq_kv_store *s, const char *key,
                                struct sq_kv_version *v)
{
    static char text[256];
    const void *val;
    size_t size;
    struct sq_kv_version local;
    if (v == NULL) {
        v = &local;
    }
    int rc = sq__kv_store_get(s, key, (uint16_t)strlen(key), SQ_KV_LATEST, 0, v, &val, &size);
    if (rc == SQ_ENOTFOUND) {
        return "<missing>";
    }
    CHECK_EQ_INT(rc, 0);
    if (v->deleted) {
        CHECK(val == NULL);
        return "<removed>";
    }
    if (val == NULL) {
        return "";
    }
    CHECK_EQ_INT(size, v->size);
    if (size >= sizeof(text)) {
        size = sizeof(text) - 1;
    }
    memcpy(text, val, size);
    text[size] = '\0';
    return text;
}

#define CHECK_VALUE(s, key, want)                                                                  \
    do {                                                                                           \
        const char *got_ = latest_value((s), (key), NULL);                                         \
        sq_test_checks++;                                                                          \
        if (strcmp(got_, (want)) != 0) {                                                           \
            sq_test_failures++;                                                                    \
            fprintf(stderr, "%s:%d: %s is \"%s\", expected \"%s\"\n", __FILE__, __LINE__, (key),   \
                    got_, (want));                                                                 \
        }                                                                                          \
    } while (0)

static uint32_t nhistory(const struct sq_kv_store *s, const char *key)
{
    const struct sq_kv_version *h;
    uint32_t n = 0;
    if (sq__kv_store_history(s, key, (uint16_t)strlen(key), &h, &n) != 0) {
        return 0;
    }
    return n;
}

/* A digest of everything a client can read: every key (sorted), its history and latest value.
 * Two stores with the same digest answer every read alike. */
struct keyref {
    char name[64];
    uint16_t len;
};
struct collect {
    struct keyref *keys;
    size_t n, cap;
};

static void collect_fn(void *arg, const char *key, uint16_t key_len, const struct sq_kv_version *v)
{
    (void)v;
    struct collect *c = arg;
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 64;
        c->keys = realloc(c->keys, c->cap * sizeof(*c->keys));
        if (c->keys == NULL) {
            fprintf(stderr, "out of memory\n");
            exit(2);
        }
    }
    size_t l = key_len < sizeof(c->keys[0].name) ? key_len : sizeof(c->keys[0].name) - 1;
    memcpy(c->keys[c->n].name, key, l);
    c->keys[c->n].name[l] = '\0';
    c->keys[c->n].len = key_len;
    c->n++;
}

static int cmp_keyref(const void *a, const void *b)
{
    const struct keyref *x = a, *y = b;
    int c = memcmp(x->name, y->name, x->len < y->len ? x->len : y->len);
    return c != 0 ? c : (int)x->len - (int)y->len;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ b[i]) * 0x100000001b3ull;
    }
    return h;
}

static uint64_t digest(const struct sq_kv_store *s)
{
    struct collect c = {0};
    sq__kv_store_each(s, "", 0, true, false, 0, collect_fn, &c);
    CHECK_EQ_INT(c.n, sq__kv_store_keys(s));
    qsort(c.keys, c.n, sizeof(*c.keys), cmp_keyref);
    uint64_t h = 0xcbf29ce484222325ull;
    uint64_t last = sq__kv_store_last(s);
    h = fnv(h, &last, sizeof(last));
    for (size_t i = 0; i < c.n; i++) {
        h = fnv(h, c.keys[i].name, c.keys[i].len);
        const struct sq_kv_version *hist;
        uint32_t n = 0;
        CHECK_EQ_INT(sq__kv_store_history(s, c.keys[i].name, c.keys[i].len, &hist, &n), 0);
        for (uint32_t j = 0; j < n; j++) {
            h = fnv(h, &hist[j].version, 8);
            h = fnv(h, &hist[j].timestamp, 8);
            h = fnv(h, &hist[j].size, 4);
            h = fnv(h, &hist[j].deleted, 1);
        }
        struct sq_kv_version v;
        const void *val;
        size_t size;
        CHECK_EQ_INT(sq__kv_store_get(s, c.keys[i].name, c.keys[i].len, SQ_KV_LATEST, 0, &v,
                                      &val, &size),
                     0);
        if (val != NULL) {
            h = fnv(h, val, size);
        }
    }
    free(c.keys);
    return h;
}

/* ---- the op format ---- */

static void test_op_codec(void)
{
    struct sq_kv_op op = {.kind = SQ_KV_PUT, .flags = SQ_KV_OPF_IF_VERSION,
                          .client = 0x0807060504030201ull, .req_id = 0x1817161514131211ull,
                          .expect = 0x2827262524232221ull, .origin = 0x34333231u,
                          .arg = 0x44434241u, .key = "/a/b", .key_len = 4, .value = "xyz",
                          .value_len = 3};
    uint8_t buf[64];
    CHECK_EQ_INT(sq__kv_op_bytes(&op), 47);
    sq__kv_op_encode(&op, buf);
    static const uint8_t want[47] = {
        SQ_KV_PUT, SQ_KV_OPF_IF_VERSION, 4, 0, 3, 0, 0, 0,
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
        0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18,
        0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28,
        0x31, 0x32, 0x33, 0x34, 0x41, 0x42, 0x43, 0x44,
        '/', 'a', '/', 'b', 'x', 'y', 'z',
    };
    CHECK(memcmp(buf, want, sizeof(want)) == 0);
    struct sq_kv_op d;
    CHECK_EQ_INT(sq__kv_op_decode(buf, 47, &d), 0);
    CHECK(d.kind == op.kind && d.flags == op.flags && d.client == op.client &&
          d.req_id == op.req_id && d.expect == op.expect && d.origin == op.origin &&
          d.arg == op.arg && d.key_len == 4 && d.value_len == 3);
    CHECK(d.key == (const char *)buf + 40);
    CHECK(memcmp(d.value, "xyz", 3) == 0);

    /* every truncation, and a byte too many */
    int wrong = 0;
    for (size_t len = 0; len < 47; len++) {
        uint8_t *copy = malloc(len > 0 ? len : 1);
        memcpy(copy, buf, len);
        if (sq__kv_op_decode(copy, len, &d) != SQ_EPROTO) {
            wrong++;
        }
        free(copy);
    }
    CHECK_EQ_INT(wrong, 0);
    buf[47] = 0;
    CHECK_EQ_INT(sq__kv_op_decode(buf, 48, &d), SQ_EPROTO);
    /* unknown kinds, and lengths that do not add up */
    uint8_t b[64];
    memcpy(b, buf, 47);
    b[0] = 0;
    CHECK_EQ_INT(sq__kv_op_decode(b, 47, &d), SQ_EPROTO);
    b[0] = SQ_KV_POOL_CREATE + 1;
    CHECK_EQ_INT(sq__kv_op_decode(b, 47, &d), SQ_EPROTO);
    for (uint8_t k = SQ_KV_PUT; k <= SQ_KV_POOL_CREATE; k++) {
        b[0] = k;
        CHECK_EQ_INT(sq__kv_op_decode(b, 47, &d), 0);
    }
    memcpy(b, buf, 47);
    b[2] = 5;
    CHECK_EQ_INT(sq__kv_op_decode(b, 47, &d), SQ_EPROTO);
    memcpy(b, buf, 47);
    b[7] = 0x80; /* value_len 2^31 + 3 */
    CHECK_EQ_INT(sq__kv_op_decode(b, 47, &d), SQ_EPROTO);
    /* the smallest op: a barrier with no key or value */
    struct sq_kv_op bar = {.kind = SQ_KV_BARRIER};
    CHECK_EQ_INT(sq__kv_op_bytes(&bar), 40);
    sq__kv_op_encode(&bar, b);
    CHECK_EQ_INT(sq__kv_op_decode(b, 40, &d), 0);
    CHECK_EQ_INT(d.kind, SQ_KV_BARRIER);
    CHECK_EQ_INT(d.key_len + d.value_len, 0);
}

/* ---- applying ops ---- */

static void test_put_get(void)
{
    struct sq_kv_store *s = make(SQ_KV_STORE_VOLATILE);
    struct sq_kv_applied a;
    struct sq_kv_version v;
    const void *val;
    size_t size;
    CHECK_EQ_INT(sq__kv_store_last(s), 0);
    CHECK_EQ_INT(sq__kv_store_keys(s), 0);
    CHECK_EQ_INT(sq__kv_store_get(s, "/a", 2, SQ_KV_LATEST, 0, &v, &val, &size), SQ_ENOTFOUND);
    CHECK(val == NULL);

    CHECK_EQ_INT(put(s, "/a", "one", 7, 1, 100, &a), 0);
    CHECK_EQ_INT(a.status, 0);
    CHECK_EQ_INT(a.version, 100);
    CHECK_EQ_INT(a.timestamp, 1000);
    CHECK(!a.duplicate);
    CHECK_EQ_INT(sq__kv_store_last(s), 100);
    CHECK_EQ_INT(sq__kv_store_keys(s), 1);
    CHECK_EQ_INT(sq__kv_store_get(s, "/a", 2, SQ_KV_LATEST, 0, &v, &val, &size), 0);
    CHECK_EQ_INT(v.version, 100);
    CHECK_EQ_INT(v.timestamp, 1000);
    CHECK_EQ_INT(v.size, 3);
    CHECK_EQ_INT(v.deleted, 0);
    CHECK(val != NULL && size == 3 && memcmp(val, "one", 3) == 0);

    /* an overwrite; keys are exact (no prefix matches) and binary */
    CHECK_EQ_INT(put(s, "/a", "second", 7, 2, 101, &a), 0);
    CHECK_VALUE(s, "/a", "second");
    CHECK_VALUE(s, "/", "<missing>");
    CHECK_VALUE(s, "/ab", "<missing>");
    CHECK_EQ_INT(sq__kv_store_keys(s), 1);
    /* an empty value and an empty key are values and keys like any other */
    CHECK_EQ_INT(put(s, "/empty", "", 7, 3, 102, &a), 0);
    CHECK_EQ_INT(sq__kv_store_get(s, "/empty", 6, SQ_KV_LATEST, 0, &v, &val, &size), 0);
    CHECK(val != NULL);
    CHECK_EQ_INT(size, 0);
    CHECK_EQ_INT(v.deleted, 0);
    CHECK_EQ_INT(put(s, "", "root", 7, 4, 103, &a), 0);
    CHECK_VALUE(s, "", "root");
    const char bin[3] = {'k', '\0', 'z'};
    struct sq_kv_op op = {.kind = SQ_KV_PUT, .key = bin, .key_len = 3, .value = "b",
                          .value_len = 1};
    CHECK_EQ_INT(sq__kv_store_apply(s, &op, 104, 1040, &a), 0);
    CHECK_EQ_INT(sq__kv_store_get(s, bin, 3, SQ_KV_LATEST, 0, &v, &val, &size), 0);
    CHECK_EQ_INT(v.version, 104);
    CHECK_EQ_INT(sq__kv_store_get(s, bin, 1, SQ_KV_LATEST, 0, &v, &val, &size), SQ_ENOTFOUND);
    CHECK_EQ_INT(sq__kv_store_keys(s), 4);
    /* the value returned is the store's copy, not the op's buffer */
    char mutable[4] = "abc";
    op = (struct sq_kv_op){.kind = SQ_KV_PUT, .key = "/m", .key_len = 2, .value = mutable,
                           .value_len = 3};
    CHECK_EQ_INT(sq__kv_store_apply(s, &op, 105, 1050, &a), 0);
    mutable[0] = 'X';
    CHECK_VALUE(s, "/m", "abc");
    sq__kv_store_destroy(s);
    sq__kv_store_destroy(NULL);
}

static void test_conditional(void)
{
    for (int type = 0; type <= SQ_KV_STORE_TRIGGER; type++) {
        struct sq_kv_store *s = make(type);
        struct sq_kv_applied a;
        CHECK_EQ_INT(put(s, "/c", "v1", 1, 1, 10, &a), 0);
        CHECK_EQ_INT(put(s, "/c", "v2", 1, 2, 20, &a), 0);
        uint32_t nh = nhistory(s, "/c");

        /* a stale if-version: a conflict that names the current version, and no change */
        CHECK_EQ_INT(apply(s, SQ_KV_PUT, SQ_KV_OPF_IF_VERSION, 10, 1, 3, "/c", "v3", 30, 300, &a),
                     0);
        CHECK_EQ_INT(a.status, SQ_ECONFLICT);
        CHECK_EQ_INT(a.version, 20);
        CHECK_EQ_INT(a.timestamp, 200);
        CHECK(!a.duplicate);
        CHECK_EQ_INT(nhistory(s, "/c"), nh);
        struct sq_kv_version v;
        const char *val = latest_value(s, "/c", &v);
        CHECK_EQ_INT(v.version, 20);
        CHECK(strcmp(val, type == SQ_KV_STORE_TRIGGER ? "" : "v2") == 0);
        /* the op was still delivered and applied (as a no-op): it is the last */
        CHECK_EQ_INT(sq__kv_store_last(s), 30);

        /* the right if-version writes */
        CHECK_EQ_INT(apply(s, SQ_KV_PUT, SQ_KV_OPF_IF_VERSION, 20, 1, 4, "/c", "v4", 40, 400, &a),
                     0);
        CHECK_EQ_INT(a.status, 0);
        CHECK_EQ_INT(a.version, 40);
        CHECK_EQ_INT(latest_value(s, "/c", &v)[0] != '<', 1);
        CHECK_EQ_INT(v.version, 40);

        /* if-version 0 means "must not exist" */
        CHECK_EQ_INT(apply(s, SQ_KV_PUT, SQ_KV_OPF_IF_VERSION, 0, 1, 5, "/c", "x", 50, 500, &a), 0);
        CHECK_EQ_INT(a.status, SQ_ECONFLICT);
        CHECK_EQ_INT(a.version, 40);
        CHECK_EQ_INT(apply(s, SQ_KV_PUT, SQ_KV_OPF_IF_VERSION, 0, 1, 6, "/new", "n", 60, 600, &a),
                     0);
        CHECK_EQ_INT(a.status, 0);
        CHECK_EQ_INT(a.version, 60);
        /* a version the key never had, on a key that does not exist */
        CHECK_EQ_INT(apply(s, SQ_KV_PUT, SQ_KV_OPF_IF_VERSION, 5, 1, 7, "/nope", "n", 70, 700, &a),
                     0);
        CHECK_EQ_INT(a.status, SQ_ECONFLICT);
        CHECK_EQ_INT(a.version, 0);
        CHECK_EQ_INT(a.timestamp, 0);
        CHECK_VALUE(s, "/nope", "<missing>");

        /* if-absent: refused while the key exists, allowed once it is removed */
        CHECK_EQ_INT(apply(s, SQ_KV_PUT, SQ_KV_OPF_IF_ABSENT, 0, 1, 8, "/c", "y", 80, 800, &a), 0);
        CHECK_EQ_INT(a.status, SQ_ECONFLICT);
        CHECK_EQ_INT(a.version, 40);
        CHECK_EQ_INT(rm(s, "/c", 1, 9, 90, &a), 0);
        CHECK_EQ_INT(a.status, 0);
        CHECK_EQ_INT(apply(s, SQ_KV_PUT, SQ_KV_OPF_IF_ABSENT, 0, 1, 10, "/c", "z", 100, 1000, &a),
                     0);
        CHECK_EQ_INT(a.status, 0);
        CHECK_EQ_INT(a.version, 100);
        CHECK_VALUE(s, "/c", type == SQ_KV_STORE_TRIGGER ? "" : "z");
        CHECK_EQ_INT(apply(s, SQ_KV_PUT, SQ_KV_OPF_IF_ABSENT, 0, 1, 11, "/fresh", "f", 110, 1100,
                           &a),
                     0);
        CHECK_EQ_INT(a.status, 0);

        /* a conditional remove */
        CHECK_EQ_INT(apply(s, SQ_KV_REMOVE, SQ_KV_OPF_IF_VERSION, 99, 1, 12, "/c", NULL, 120,
                           1200, &a),
                     0);
        CHECK_EQ_INT(a.status, SQ_ECONFLICT);
        CHECK_EQ_INT(a.version, 100);
        CHECK_EQ_INT(apply(s, SQ_KV_REMOVE, SQ_KV_OPF_IF_VERSION, 100, 1, 13, "/c", NULL, 130,
                           1300, &a),
                     0);
        CHECK_EQ_INT(a.status, 0);
        CHECK_EQ_INT(a.version, 130);
        CHECK_VALUE(s, "/c", "<removed>");
        sq__kv_store_destroy(s);
    }
}

static void test_remove(void)
{
    struct sq_kv_store *s = make(SQ_KV_STORE_PERSISTENT);
    struct sq_kv_applied a;
    /* removing a key that was never there: not found, and no key appears */
    CHECK_EQ_INT(rm(s, "/r", 1, 1, 1, &a), 0);
    CHECK_EQ_INT(a.status, SQ_ENOTFOUND);
    CHECK_EQ_INT(a.version, 0);
    CHECK_EQ_INT(sq__kv_store_keys(s), 0);
    CHECK_VALUE(s, "/r", "<missing>");

    CHECK_EQ_INT(put(s, "/r", "alive", 1, 2, 2, &a), 0);
    CHECK_EQ_INT(rm(s, "/r", 1, 3, 3, &a), 0);
    CHECK_EQ_INT(a.status, 0);
    CHECK_EQ_INT(a.version, 3);
    CHECK_EQ_INT(a.timestamp, 30);
    /* a tombstone: the key is still counted and read as removed, with its own version */
    struct sq_kv_version v;
    const void *val;
    size_t size;
    CHECK_EQ_INT(sq__kv_store_get(s, "/r", 2, SQ_KV_LATEST, 0, &v, &val, &size), 0);
    CHECK_EQ_INT(v.deleted, 1);
    CHECK_EQ_INT(v.version, 3);
    CHECK_EQ_INT(v.size, 0);
    CHECK(val == NULL);
    CHECK_EQ_INT(size, 0);
    CHECK_EQ_INT(sq__kv_store_keys(s), 1);
    /* removing it again is not found: the current version is the tombstone's */
    CHECK_EQ_INT(rm(s, "/r", 1, 4, 4, &a), 0);
    CHECK_EQ_INT(a.status, SQ_ENOTFOUND);
    CHECK_EQ_INT(a.version, 3);
    CHECK_EQ_INT(nhistory(s, "/r"), 2);
    /* and it comes back */
    CHECK_EQ_INT(put(s, "/r", "again", 1, 5, 5, &a), 0);
    CHECK_VALUE(s, "/r", "again");
    const struct sq_kv_version *h;
    uint32_t n;
    CHECK_EQ_INT(sq__kv_store_history(s, "/r", 2, &h, &n), 0);
    CHECK_EQ_INT(n, 3);
    if (n == 3) {
        CHECK(h[0].version == 2 && !h[0].deleted && h[0].size == 5);
        CHECK(h[1].version == 3 && h[1].deleted && h[1].size == 0);
        CHECK(h[2].version == 5 && !h[2].deleted && h[2].size == 5);
    }
    /* the removal as of a version or a time in between */
    CHECK_EQ_INT(sq__kv_store_get(s, "/r", 2, SQ_KV_AT_VERSION, 4, &v, &val, &size), 0);
    CHECK(v.version == 3 && v.deleted == 1 && val == NULL);
    CHECK_EQ_INT(sq__kv_store_get(s, "/r", 2, SQ_KV_AT_TIME, 35, &v, &val, &size), 0);
    CHECK(v.version == 3 && v.deleted == 1 && val == NULL);
    sq__kv_store_destroy(s);
}

static void test_barrier(void)
{
    struct sq_kv_store *s = make(SQ_KV_STORE_PERSISTENT);
    struct sq_kv_applied a;
    CHECK_EQ_INT(put(s, "/b", "x", 1, 1, 5, &a), 0);
    uint64_t before = digest(s);
    /* a barrier (and a pool create, which a shard's store does not interpret) changes nothing
     * but the last version, and is not remembered as a request */
    CHECK_EQ_INT(apply(s, SQ_KV_BARRIER, 0, 0, 1, 2, "/b", "ignored", 6, 60, &a), 0);
    CHECK_EQ_INT(a.status, 0);
    CHECK_EQ_INT(a.version, 6);
    CHECK_EQ_INT(a.timestamp, 60);
    CHECK(!a.duplicate);
    CHECK_EQ_INT(sq__kv_store_last(s), 6);
    CHECK_EQ_INT(apply(s, SQ_KV_POOL_CREATE, 0, 0, 1, 3, "/pool", NULL, 7, 70, &a), 0);
    CHECK_EQ_INT(sq__kv_store_last(s), 7);
    CHECK_EQ_INT(sq__kv_store_keys(s), 1);
    CHECK_EQ_INT(nhistory(s, "/b"), 1);
    CHECK_VALUE(s, "/pool", "<missing>");
    /* request 2 of client 1 was a barrier, so a put with that id is new */
    CHECK_EQ_INT(put(s, "/b", "y", 1, 2, 8, &a), 0);
    CHECK(!a.duplicate);
    CHECK_EQ_INT(a.version, 8);
    CHECK(digest(s) != before);
    sq__kv_store_destroy(s);
}

/* ---- at most once ---- */

static void test_dedup(void)
{
    for (int type = 0; type <= SQ_KV_STORE_TRIGGER; type++) {
        struct sq_kv_store *s = make(type);
        struct sq_kv_applied a;
        CHECK_EQ_INT(put(s, "/d", "first", 42, 1, 10, &a), 0);
        CHECK_EQ_INT(put(s, "/e", "other", 42, 2, 11, &a), 0);
        uint64_t before = digest(s);
        /* the retry (even with a different value) gets the first answer and adds nothing */
        CHECK_EQ_INT(put(s, "/d", "retry", 42, 1, 12, &a), 0);
        CHECK_EQ_INT(a.status, 0);
        CHECK(a.duplicate);
        CHECK_EQ_INT(a.version, 10);
        CHECK_EQ_INT(a.timestamp, 100);
        CHECK_EQ_INT(nhistory(s, "/d"), 1);
        CHECK_VALUE(s, "/d", type == SQ_KV_STORE_TRIGGER ? "" : "first");
        CHECK_EQ_INT(sq__kv_store_last(s), 12);
        /* the digest includes `last`; apart from it nothing changed */
        struct sq_kv_store *t = make(type);
        CHECK_EQ_INT(put(t, "/d", "first", 42, 1, 10, &a), 0);
        CHECK_EQ_INT(put(t, "/e", "other", 42, 2, 11, &a), 0);
        CHECK(digest(t) == before);
        CHECK_EQ_INT(apply(t, SQ_KV_BARRIER, 0, 0, 0, 0, "", NULL, 12, 120, &a), 0);
        CHECK(digest(t) == digest(s));
        sq__kv_store_destroy(t);

        /* a retried conflict is the same conflict, even though it would succeed now */
        CHECK_EQ_INT(apply(s, SQ_KV_PUT, SQ_KV_OPF_IF_VERSION, 99, 42, 3, "/d", "c", 13, 130, &a),
                     0);
        CHECK_EQ_INT(a.status, SQ_ECONFLICT);
        CHECK_EQ_INT(a.version, 10);
        CHECK_EQ_INT(put(s, "/d", "x", 42, 4, 14, &a), 0);
        CHECK_EQ_INT(apply(s, SQ_KV_PUT, SQ_KV_OPF_IF_VERSION, 99, 42, 3, "/d", "c", 15, 150, &a),
                     0);
        CHECK_EQ_INT(a.status, SQ_ECONFLICT);
        CHECK(a.duplicate);
        CHECK_EQ_INT(a.version, 10);
        /* a retried remove answers its first answer, not "not found" */
        CHECK_EQ_INT(rm(s, "/e", 42, 5, 16, &a), 0);
        CHECK_EQ_INT(a.status, 0);
        CHECK_EQ_INT(rm(s, "/e", 42, 5, 17, &a), 0);
        CHECK_EQ_INT(a.status, 0);
        CHECK(a.duplicate);
        CHECK_EQ_INT(a.version, 16);
        /* the same request id from another client is another request */
        CHECK_EQ_INT(put(s, "/d", "y", 43, 1, 18, &a), 0);
        CHECK(!a.duplicate);
        CHECK_EQ_INT(a.version, 18);
        /* client 0 (internal requests) is never remembered */
        CHECK_EQ_INT(put(s, "/z", "a", 0, 1, 19, &a), 0);
        CHECK_EQ_INT(put(s, "/z", "b", 0, 1, 20, &a), 0);
        CHECK(!a.duplicate);
        CHECK_EQ_INT(a.version, 20);
        sq__kv_store_destroy(s);
    }
}

static void test_dedup_window(void)
{
    /* each client's last SQ_KV_DEDUP_PER_CLIENT requests are remembered, older ones are not */
    struct sq_kv_store *s = make(SQ_KV_STORE_PERSISTENT);
    struct sq_kv_applied a;
    uint64_t v = 1;
    for (uint64_t req = 1; req <= SQ_KV_DEDUP_PER_CLIENT + 1; req++) {
        CHECK_EQ_INT(put(s, "/w", "x", 9, req, v++, &a), 0);
        CHECK(!a.duplicate);
    }
    CHECK_EQ_INT(nhistory(s, "/w"), SQ_KV_DEDUP_PER_CLIENT + 1);
    /* 2 and 65 are remembered */
    CHECK_EQ_INT(put(s, "/w", "x", 9, 2, v++, &a), 0);
    CHECK(a.duplicate);
    CHECK_EQ_INT(a.version, 2);
    CHECK_EQ_INT(put(s, "/w", "x", 9, SQ_KV_DEDUP_PER_CLIENT + 1, v++, &a), 0);
    CHECK(a.duplicate);
    CHECK_EQ_INT(a.version, SQ_KV_DEDUP_PER_CLIENT + 1);
    /* 1 fell out: applied again (as header says), and it pushes 2 out */
    uint64_t at = v++;
    CHECK_EQ_INT(put(s, "/w", "x", 9, 1, at, &a), 0);
    CHECK(!a.duplicate);
    CHECK_EQ_INT(a.version, at);
    CHECK_EQ_INT(nhistory(s, "/w"), SQ_KV_DEDUP_PER_CLIENT + 2);
    at = v++;
    CHECK_EQ_INT(put(s, "/w", "x", 9, 2, at, &a), 0);
    CHECK(!a.duplicate);
    CHECK_EQ_INT(a.version, at);
    /* and 1 is now remembered with its second answer */
    CHECK_EQ_INT(put(s, "/w", "x", 9, 1, v++, &a), 0);
    CHECK(a.duplicate);
    CHECK_EQ_INT(a.version, at - 1);
    sq__kv_store_destroy(s);
}

static uint64_t client_id(uint64_t i)
{
    /* spread over the table, with some ids that share a bucket */
    return i % 7 == 0 ? i * 8192 + 1 : i * 0x9e3779b97f4a7c15ull;
}

/* The at-most-once table full, then new clients: the least recently used client is forgotten,
 * and only it. */
static void eviction_run(struct sq_kv_store *s)
{
    struct sq_kv_applied a;
    char key[32];
    uint64_t v = 1;
    /* a full table: clients 1..4096, each with one put, client i at version i */
    for (uint64_t i = 1; i <= SQ_KV_DEDUP_CLIENTS; i++) {
        snprintf(key, sizeof(key), "/c/%llu", (unsigned long long)i);
        CHECK_EQ_INT(put(s, key, "v", client_id(i), 1, v++, &a), 0);
    }
    /* client 1 is used again, so client 2 is now the least recently used */
    CHECK_EQ_INT(put(s, "/c/1", "w", client_id(1), 2, v++, &a), 0);
    CHECK(!a.duplicate);
    /* a new client evicts client 2 (and only it) */
    CHECK_EQ_INT(put(s, "/new", "n", 777, 1, v++, &a), 0);
    CHECK(!a.duplicate);
    CHECK_EQ_INT(put(s, "/c/1", "v", client_id(1), 1, v++, &a), 0);
    CHECK(a.duplicate);
    CHECK_EQ_INT(a.version, 1);
    CHECK_EQ_INT(put(s, "/c/4096", "v", client_id(4096), 1, v++, &a), 0);
    CHECK(a.duplicate);
    CHECK_EQ_INT(a.version, 4096);
    /* client 2's retry is applied again: a second version of its key */
    uint64_t at = v++;
    CHECK_EQ_INT(put(s, "/c/2", "v", client_id(2), 1, at, &a), 0);
    CHECK(!a.duplicate);
    CHECK_EQ_INT(a.version, at);
    CHECK_EQ_INT(nhistory(s, "/c/2"), sq__kv_store_type(s) == SQ_KV_STORE_PERSISTENT ? 2 : 1);
    /* that brought client 2 back, evicting client 3, now the least recently used */
    CHECK_EQ_INT(put(s, "/c/2", "v", client_id(2), 1, v++, &a), 0);
    CHECK(a.duplicate);
    CHECK_EQ_INT(a.version, at);
    CHECK_EQ_INT(put(s, "/new", "n", 777, 1, v++, &a), 0);
    CHECK(a.duplicate);
    CHECK_EQ_INT(put(s, "/c/4", "v", client_id(4), 1, v++, &a), 0);
    CHECK(a.duplicate);
    CHECK_EQ_INT(a.version, 4);
    at = v++;
    CHECK_EQ_INT(put(s, "/c/3", "v", client_id(3), 1, at, &a), 0);
    CHECK(!a.duplicate);
    CHECK_EQ_INT(a.version, at);
}

static void test_dedup_eviction(void)
{
    /* two replicas that apply the same ops evict the same clients and hold the same bytes */
    struct sq_kv_store *a = make(SQ_KV_STORE_PERSISTENT), *b = make(SQ_KV_STORE_PERSISTENT);
    eviction_run(a);
    eviction_run(b);
    void *ba = NULL, *bb = NULL;
    size_t na = 0, nb = 0;
    CHECK_EQ_INT(sq__kv_store_save(a, &ba, &na), 0);
    CHECK_EQ_INT(sq__kv_store_save(b, &bb, &nb), 0);
    CHECK(na == nb && memcmp(ba, bb, na) == 0);
    free(ba);
    free(bb);
    sq__kv_store_destroy(a);
    sq__kv_store_destroy(b);
    struct sq_kv_store *v = make(SQ_KV_STORE_VOLATILE);
    eviction_run(v);
    sq__kv_store_destroy(v);
}

/* ---- reads ---- */

static void test_versions_and_times(void)
{
    struct sq_kv_store *s = make(SQ_KV_STORE_PERSISTENT);
    struct sq_kv_applied a;
    CHECK_EQ_INT(apply(s, SQ_KV_PUT, 0, 0, 1, 1, "/t", "ten", 10, 100, &a), 0);
    CHECK_EQ_INT(apply(s, SQ_KV_PUT, 0, 0, 1, 2, "/t", "twenty", 20, 200, &a), 0);
    CHECK_EQ_INT(apply(s, SQ_KV_PUT, 0, 0, 1, 3, "/other", "o", 25, 250, &a), 0);
    CHECK_EQ_INT(apply(s, SQ_KV_PUT, 0, 0, 1, 4, "/t", "thirty", 30, 300, &a), 0);
    struct sq_kv_version v;
    const void *val;
    size_t size;
    struct {
        int how;
        uint64_t at;
        int rc;
        uint64_t version;
        bool in_memory;
    } cases[] = {
        {SQ_KV_LATEST, 0, 0, 30, true},
        {SQ_KV_AT_VERSION, 9, SQ_ENOTFOUND, 0, false},
        {SQ_KV_AT_VERSION, 10, 0, 10, false},
        {SQ_KV_AT_VERSION, 25, 0, 20, false},
        {SQ_KV_AT_VERSION, 29, 0, 20, false},
        {SQ_KV_AT_VERSION, 30, 0, 30, true},
        {SQ_KV_AT_VERSION, UINT64_MAX, 0, 30, true},
        {SQ_KV_AT_TIME, 99, SQ_ENOTFOUND, 0, false},
        {SQ_KV_AT_TIME, 100, 0, 10, false},
        {SQ_KV_AT_TIME, 199, 0, 10, false},
        {SQ_KV_AT_TIME, 200, 0, 20, false},
        {SQ_KV_AT_TIME, 299, 0, 20, false},
        {SQ_KV_AT_TIME, 300, 0, 30, true},
        {SQ_KV_AT_TIME, UINT64_MAX, 0, 30, true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = sq__kv_store_get(s, "/t", 2, cases[i].how, cases[i].at, &v, &val, &size);
        CHECK_EQ_INT(rc, cases[i].rc);
        if (rc == 0) {
            CHECK_EQ_INT(v.version, cases[i].version);
            CHECK_EQ_INT(v.timestamp, cases[i].version * 10);
            CHECK_EQ_INT(v.size, cases[i].version == 10 ? 3 : 6); /* "ten", "twenty", "thirty" */
            CHECK_EQ_INT(val != NULL, cases[i].in_memory);
        } else {
            CHECK(val == NULL);
        }
        if (val != NULL) {
            CHECK(size == 6 && memcmp(val, "thirty", 6) == 0);
        }
    }
    const struct sq_kv_version *h;
    uint32_t n;
    CHECK_EQ_INT(sq__kv_store_history(s, "/t", 2, &h, &n), 0);
    CHECK_EQ_INT(n, 3);
    if (n == 3) {
        CHECK(h[0].version == 10 && h[1].version == 20 && h[2].version == 30);
        CHECK(h[0].timestamp == 100 && h[1].timestamp == 200 && h[2].timestamp == 300);
        CHECK(h[0].size == 3 && h[1].size == 6 && h[2].size == 6);
    }
    CHECK_EQ_INT(sq__kv_store_history(s, "/x", 2, &h, &n), SQ_ENOTFOUND);
    /* equal timestamps (a clock that did not move): the later version wins */
    CHECK_EQ_INT(apply(s, SQ_KV_PUT, 0, 0, 1, 5, "/t", "same", 31, 300, &a), 0);
    CHECK_EQ_INT(sq__kv_store_get(s, "/t", 2, SQ_KV_AT_TIME, 300, &v, &val, &size), 0);
    CHECK_EQ_INT(v.version, 31);
    sq__kv_store_destroy(s);
}

static void test_volatile_and_trigger(void)
{
    /* volatile: only the latest version, with its value */
    struct sq_kv_store *s = make(SQ_KV_STORE_VOLATILE);
    struct sq_kv_applied a;
    struct sq_kv_version v;
    const void *val;
    size_t size;
    for (uint64_t i = 1; i <= 5; i++) {
        CHECK_EQ_INT(put(s, "/v", i == 5 ? "five" : "old", 1, i, i, &a), 0);
    }
    const struct sq_kv_version *h;
    uint32_t n;
    CHECK_EQ_INT(sq__kv_store_history(s, "/v", 2, &h, &n), 0);
    CHECK_EQ_INT(n, 1);
    CHECK_EQ_INT(h[0].version, 5);
    CHECK_VALUE(s, "/v", "five");
    CHECK_EQ_INT(sq__kv_store_get(s, "/v", 2, SQ_KV_AT_VERSION, 4, &v, &val, &size),
                 SQ_ENOTFOUND);
    CHECK_EQ_INT(sq__kv_store_get(s, "/v", 2, SQ_KV_AT_VERSION, 5, &v, &val, &size), 0);
    CHECK(val != NULL && size == 4);
    CHECK_EQ_INT(sq__kv_store_get(s, "/v", 2, SQ_KV_AT_TIME, 49, &v, &val, &size), SQ_ENOTFOUND);
    CHECK_EQ_INT(rm(s, "/v", 1, 6, 6, &a), 0);
    CHECK_EQ_INT(sq__kv_store_history(s, "/v", 2, &h, &n), 0);
    CHECK_EQ_INT(n, 1);
    CHECK(h[0].version == 6 && h[0].deleted);
    CHECK_VALUE(s, "/v", "<removed>");
    sq__kv_store_destroy(s);

    /* trigger: versions and sizes, never a value */
    s = make(SQ_KV_STORE_TRIGGER);
    for (uint64_t i = 1; i <= 5; i++) {
        CHECK_EQ_INT(put(s, "/g", "payload", 1, i, i, &a), 0);
        CHECK_EQ_INT(a.version, i);
    }
    CHECK_EQ_INT(sq__kv_store_get(s, "/g", 2, SQ_KV_LATEST, 0, &v, &val, &size), 0);
    CHECK_EQ_INT(v.version, 5);
    CHECK_EQ_INT(v.size, 7);
    CHECK(val == NULL);
    CHECK_EQ_INT(size, 0);
    CHECK_EQ_INT(nhistory(s, "/g"), 1);
    /* nothing of the values is kept: a saved trigger store is just metadata */
    void *buf = NULL;
    size_t bytes = 0;
    CHECK_EQ_INT(sq__kv_store_save(s, &buf, &bytes), 0);
    CHECK(buf != NULL && memmem(buf, bytes, "payload", 7) == NULL);
    free(buf);
    sq__kv_store_destroy(s);
}

struct seen {
    char keys[16][16];
    uint64_t versions[16];
    uint8_t deleted[16];
    int n;
};

static void seen_fn(void *arg, const char *key, uint16_t key_len, const struct sq_kv_version *v)
{
    struct seen *sn = arg;
    if (sn->n < 16 && key_len < 16) {
        memcpy(sn->keys[sn->n], key, key_len);
        sn->keys[sn->n][key_len] = '\0';
        sn->versions[sn->n] = v->version;
        sn->deleted[sn->n] = v->deleted;
    }
    sn->n++;
}

/* What each() called, sorted by key, as "key@version[-]" joined by spaces. */
static const char *walk(const struct sq_kv_store *s, const char *prefix, bool removed,
                        bool at_time, uint64_t time)
{
    static char out[512];
    struct seen sn = {0};
    sq__kv_store_each(s, prefix, (uint16_t)strlen(prefix), removed, at_time, time, seen_fn, &sn);
    int n = sn.n < 16 ? sn.n : 16;
    /* insertion sort: a handful of keys */
    for (int i = 1; i < n; i++) {
        for (int j = i; j > 0 && strcmp(sn.keys[j - 1], sn.keys[j]) > 0; j--) {
            char k[16];
            memcpy(k, sn.keys[j], 16);
            memcpy(sn.keys[j], sn.keys[j - 1], 16);
            memcpy(sn.keys[j - 1], k, 16);
            uint64_t v = sn.versions[j];
            sn.versions[j] = sn.versions[j - 1];
            sn.versions[j - 1] = v;
            uint8_t d = sn.deleted[j];
            sn.deleted[j] = sn.deleted[j - 1];
            sn.deleted[j - 1] = d;
        }
    }
    size_t o = 0;
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        o += (size_t)snprintf(out + o, sizeof(out) - o, "%s%s@%llu%s", i ? " " : "", sn.keys[i],
                              (unsigned long long)sn.versions[i], sn.deleted[i] ? "-" : "");
    }
    return out;
}

#define CHECK_WALK(got, want)                                                                      \
    do {                                                                                           \
        const char *g_ = (got);                                                                    \
        sq_test_checks++;                                                                          \
        if (strcmp(g_, (want)) != 0) {                                                             \
            sq_test_failures++;                                                                    \
            fprintf(stderr, "%s:%d: walk gave \"%s\", expected \"%s\"\n", __FILE__, __LINE__, g_,  \
                    (want));                                                                       \
        }                                                                                          \
    } while (0)

static void test_each(void)
{
    struct sq_kv_store *s = make(SQ_KV_STORE_PERSISTENT);
    struct sq_kv_applied a;
    CHECK_EQ_INT(put(s, "/a/1", "x", 0, 0, 1, &a), 0);   /* time 10 */
    CHECK_EQ_INT(put(s, "/a/2", "x", 0, 0, 2, &a), 0);   /* time 20 */
    CHECK_EQ_INT(put(s, "/ab", "x", 0, 0, 3, &a), 0);    /* time 30 */
    CHECK_EQ_INT(put(s, "/b/1", "x", 0, 0, 4, &a), 0);   /* time 40 */
    CHECK_EQ_INT(rm(s, "/a/2", 0, 0, 5, &a), 0);         /* time 50 */
    CHECK_EQ_INT(put(s, "/a/1", "y", 0, 0, 6, &a), 0);   /* time 60 */
    CHECK_WALK(walk(s, "/a/", false, false, 0), "/a/1@6");
    CHECK_WALK(walk(s, "/a/", true, false, 0), "/a/1@6 /a/2@5-");
    CHECK_WALK(walk(s, "/a", false, false, 0), "/a/1@6 /ab@3");
    CHECK_WALK(walk(s, "", false, false, 0), "/a/1@6 /ab@3 /b/1@4");
    CHECK_WALK(walk(s, "/c", true, false, 0), "");
    CHECK_WALK(walk(s, "/a/1/longer", true, false, 0), "");
    /* as of a time: before the removal /a/2 was there; before everything nothing was */
    CHECK_WALK(walk(s, "/a/", false, true, 45), "/a/1@1 /a/2@2");
    CHECK_WALK(walk(s, "/a/", false, true, 55), "/a/1@1");
    CHECK_WALK(walk(s, "/a/", true, true, 55), "/a/1@1 /a/2@5-");
    CHECK_WALK(walk(s, "/a/", true, true, 15), "/a/1@1");
    CHECK_WALK(walk(s, "", true, true, 9), "");
    CHECK_WALK(walk(s, "", false, true, UINT64_MAX), "/a/1@6 /ab@3 /b/1@4");
    sq__kv_store_destroy(s);

    /* volatile: at a time before the latest version there is nothing to show */
    s = make(SQ_KV_STORE_VOLATILE);
    CHECK_EQ_INT(put(s, "/a", "x", 0, 0, 1, &a), 0);
    CHECK_EQ_INT(put(s, "/a", "y", 0, 0, 2, &a), 0);
    CHECK_WALK(walk(s, "", false, true, 15), "");
    CHECK_WALK(walk(s, "", false, true, 20), "/a@2");
    sq__kv_store_destroy(s);
}

/* ---- scale ---- */

static void test_many_keys(void)
{
    enum { N = 100000 };
    struct sq_kv_store *s = make(SQ_KV_STORE_VOLATILE);
    char key[32], val[64];
    struct sq_kv_applied a;
    for (int i = 0; i < N; i++) {
        int kl = snprintf(key, sizeof(key), "/k/%06d", i);
        int vl = snprintf(val, sizeof(val), "value-%d-%.*s", i, i % 20, "abcdefghijklmnopqrst");
        struct sq_kv_op op = {.kind = SQ_KV_PUT, .client = (uint64_t)(i % 100) + 1,
                              .req_id = (uint64_t)i, .key = key, .key_len = (uint16_t)kl,
                              .value = val, .value_len = (uint32_t)vl};
        if (sq__kv_store_apply(s, &op, (uint64_t)i + 1, (uint64_t)i * 3, &a) != 0 ||
            a.status != 0) {
            CHECK(!"put failed");
            break;
        }
    }
    CHECK_EQ_INT(sq__kv_store_keys(s), N);
    CHECK_EQ_INT(sq__kv_store_last(s), N);
    int bad = 0;
    for (int i = 0; i < N; i++) {
        int kl = snprintf(key, sizeof(key), "/k/%06d", i);
        int vl = snprintf(val, sizeof(val), "value-%d-%.*s", i, i % 20, "abcdefghijklmnopqrst");
        struct sq_kv_version v;
        const void *got;
        size_t size;
        if (sq__kv_store_get(s, key, (uint16_t)kl, SQ_KV_LATEST, 0, &v, &got, &size) != 0 ||
            v.version != (uint64_t)i + 1 || v.timestamp != (uint64_t)i * 3 ||
            size != (size_t)vl || got == NULL || memcmp(got, val, size) != 0) {
            bad++;
        }
        kl = snprintf(key, sizeof(key), "/k/%06d", N + i);
        if (sq__kv_store_get(s, key, (uint16_t)kl, SQ_KV_LATEST, 0, &v, &got, &size) !=
            SQ_ENOTFOUND) {
            bad++;
        }
    }
    CHECK_EQ_INT(bad, 0);
    /* a prefix walk sees exactly the 1000 keys under /k/042 */
    struct collect c = {0};
    sq__kv_store_each(s, "/k/042", 6, false, false, 0, collect_fn, &c);
    CHECK_EQ_INT(c.n, 1000);
    free(c.keys);

    /* the whole store moves by state transfer */
    void *buf = NULL;
    size_t bytes = 0;
    CHECK_EQ_INT(sq__kv_store_save(s, &buf, &bytes), 0);
    struct sq_kv_store *t = make(SQ_KV_STORE_VOLATILE);
    CHECK_EQ_INT(sq__kv_store_load(t, buf, bytes), 0);
    CHECK_EQ_INT(sq__kv_store_keys(t), N);
    CHECK(digest(t) == digest(s));
    /* and a retry of a remembered request is still a duplicate there */
    struct sq_kv_op op = {.kind = SQ_KV_PUT, .client = 100, .req_id = N - 1, .key = "/k/x",
                          .key_len = 4, .value = "v", .value_len = 1};
    CHECK_EQ_INT(sq__kv_store_apply(t, &op, N + 1, 0, &a), 0);
    CHECK(a.duplicate);
    CHECK_EQ_INT(a.version, N);
    free(buf);
    sq__kv_store_destroy(t);
    sq__kv_store_destroy(s);
}

/* ---- state transfer ---- */

/* A store of the given type with several keys, histories, removals, and remembered requests of
 * several clients. */
static struct sq_kv_store *populated(int type, int nkeys)
{
    struct sq_kv_store *s = make(type);
    struct sq_kv_applied a;
    char key[32], val[32];
    uint64_t v = 1;
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < nkeys; i++) {
            snprintf(key, sizeof(key), "/p/%d", i);
            snprintf(val, sizeof(val), "r%d-%d", round, i);
            uint64_t client = (uint64_t)(i % 5) + 1;
            if (round == 1 && i % 4 == 0) {
                CHECK_EQ_INT(rm(s, key, client, v, v, &a), 0);
            } else {
                CHECK_EQ_INT(put(s, key, val, client, v, v, &a), 0);
            }
            v++;
        }
    }
    CHECK_EQ_INT(put(s, "/empty", "", 0, 0, v++, &a), 0);
    return s;
}

static void test_save_load(void)
{
    for (int type = 0; type <= SQ_KV_STORE_TRIGGER; type++) {
        struct sq_kv_store *s = populated(type, 40);
        void *buf = NULL;
        size_t bytes = 0;
        CHECK_EQ_INT(sq__kv_store_save(s, &buf, &bytes), 0);
        /* into an empty store, and into one that holds something else: replaced */
        struct sq_kv_store *t = make(type);
        CHECK_EQ_INT(sq__kv_store_load(t, buf, bytes), 0);
        CHECK(digest(t) == digest(s));
        CHECK_EQ_INT(sq__kv_store_keys(t), 41);
        CHECK_EQ_INT(sq__kv_store_last(t), sq__kv_store_last(s));
        struct sq_kv_store *u = populated(type, 7);
        struct sq_kv_applied a;
        CHECK_EQ_INT(put(u, "/only-in-u", "x", 99, 1, 1000, &a), 0);
        CHECK_EQ_INT(sq__kv_store_load(u, buf, bytes), 0);
        CHECK(digest(u) == digest(s));
        CHECK_VALUE(u, "/only-in-u", "<missing>");
        /* client 99 is forgotten with the rest of u's state */
        CHECK_EQ_INT(put(u, "/only-in-u", "x", 99, 1, 1001, &a), 0);
        CHECK(!a.duplicate);

        /* the at-most-once table moved too: the same retry is a duplicate on both */
        uint64_t next = sq__kv_store_last(s) + 1;
        struct sq_kv_applied as, at;
        CHECK_EQ_INT(put(s, "/p/3", "retry", 4, 84, next, &as), 0);
        CHECK_EQ_INT(put(t, "/p/3", "retry", 4, 84, next, &at), 0);
        CHECK(as.duplicate && at.duplicate);
        CHECK_EQ_INT(as.version, 84);
        CHECK_EQ_INT(at.version, as.version);
        /* and both go on alike */
        CHECK_EQ_INT(put(s, "/p/3", "new", 4, 1000, next + 1, &as), 0);
        CHECK_EQ_INT(put(t, "/p/3", "new", 4, 1000, next + 1, &at), 0);
        CHECK(digest(t) == digest(s));

        /* a store of another type refuses it and keeps what it has */
        struct sq_kv_store *w = make((type + 1) % 3);
        CHECK_EQ_INT(put(w, "/keep", "k", 0, 0, 1, &a), 0);
        CHECK_EQ_INT(sq__kv_store_load(w, buf, bytes), SQ_EPROTO);
        CHECK_VALUE(w, "/keep", (type + 1) % 3 == SQ_KV_STORE_TRIGGER ? "" : "k");

        free(buf);
        sq__kv_store_destroy(w);
        sq__kv_store_destroy(u);
        sq__kv_store_destroy(t);
        sq__kv_store_destroy(s);
    }
    /* an empty store */
    struct sq_kv_store *e = make(SQ_KV_STORE_PERSISTENT), *f = make(SQ_KV_STORE_PERSISTENT);
    void *buf = NULL;
    size_t bytes = 0;
    CHECK_EQ_INT(sq__kv_store_save(e, &buf, &bytes), 0);
    CHECK_EQ_INT(bytes, 32);
    CHECK_EQ_INT(sq__kv_store_load(f, buf, bytes), 0);
    CHECK_EQ_INT(sq__kv_store_keys(f), 0);
    free(buf);
    sq__kv_store_destroy(e);
    sq__kv_store_destroy(f);
}

/* Saves s, loads the save into a fresh store, saves that: the two saves must be the same bytes,
 * so a replica that received the state hands on exactly what it received. */
static bool save_load_save_identical(const struct sq_kv_store *s, int type)
{
    void *b1 = NULL, *b2 = NULL;
    size_t n1 = 0, n2 = 0;
    bool same = false;
    struct sq_kv_store *t = make(type);
    if (sq__kv_store_save(s, &b1, &n1) == 0 && sq__kv_store_load(t, b1, n1) == 0 &&
        sq__kv_store_save(t, &b2, &n2) == 0) {
        same = n1 == n2 && memcmp(b1, b2, n1) == 0;
    }
    free(b1);
    free(b2);
    sq__kv_store_destroy(t);
    return same;
}

static void test_save_load_save_identical(void)
{
    struct sq_kv_applied a;
    /* a few keys in separate buckets */
    struct sq_kv_store *s = make(SQ_KV_STORE_PERSISTENT);
    CHECK_EQ_INT(put(s, "/x", "1", 0, 0, 1, &a), 0);
    CHECK(save_load_save_identical(s, SQ_KV_STORE_PERSISTENT));
    sq__kv_store_destroy(s);
    /* every type, with enough keys and clients that some share a bucket */
    for (int type = 0; type <= SQ_KV_STORE_TRIGGER; type++) {
        s = populated(type, 3000);
        if (!save_load_save_identical(s, type)) {
            CHECK(!"save -> load -> save differs (keys)");
        }
        sq__kv_store_destroy(s);
    }
    /* two clients in one bucket of the at-most-once table, and no key in a shared bucket */
    s = make(SQ_KV_STORE_VOLATILE);
    CHECK_EQ_INT(put(s, "/one", "1", 5, 1, 1, &a), 0);
    CHECK_EQ_INT(put(s, "/one", "2", 5 + 2 * SQ_KV_DEDUP_CLIENTS, 1, 2, &a), 0);
    if (!save_load_save_identical(s, SQ_KV_STORE_VOLATILE)) {
        CHECK(!"save -> load -> save differs (clients)");
    }
    sq__kv_store_destroy(s);
}

/* Every truncation of a saved store is refused, and the store that refused it still works (and
 * then loads the whole save). */
static void test_load_truncated(void)
{
    for (int type = 0; type <= SQ_KV_STORE_TRIGGER; type++) {
        struct sq_kv_store *s = populated(type, 12);
        void *buf = NULL;
        size_t bytes = 0;
        CHECK_EQ_INT(sq__kv_store_save(s, &buf, &bytes), 0);
        uint64_t want = digest(s);
        struct sq_kv_store *t = populated(type, 3);
        int wrong = 0;
        for (size_t cut = 0; cut < bytes; cut++) {
            uint8_t *copy = malloc(cut > 0 ? cut : 1);
            memcpy(copy, buf, cut);
            if (sq__kv_store_load(t, copy, cut) != SQ_EPROTO) {
                wrong++;
            }
            free(copy);
            /* usable: a put and a read */
            struct sq_kv_applied a;
            uint64_t at = sq__kv_store_last(t) + 1;
            if (put(t, "/after", "ok", 77, cut + 1, at, &a) != 0 || a.status != 0 ||
                a.version != at) {
                wrong++;
            }
            struct sq_kv_version v;
            if (strcmp(latest_value(t, "/after", &v),
                       type == SQ_KV_STORE_TRIGGER ? "" : "ok") != 0 ||
                v.version != at) {
                wrong++;
            }
        }
        CHECK_EQ_INT(wrong, 0);
        CHECK_EQ_INT(sq__kv_store_load(t, buf, bytes), 0);
        CHECK(digest(t) == want);
        /* a byte too many */
        uint8_t *longer = malloc(bytes + 1);
        memcpy(longer, buf, bytes);
        longer[bytes] = 0;
        CHECK_EQ_INT(sq__kv_store_load(t, longer, bytes + 1), SQ_EPROTO);
        free(longer);
        free(buf);
        sq__kv_store_destroy(t);
        sq__kv_store_destroy(s);
    }
}

/* A little writer for hand-made saved stores. */
struct w {
    uint8_t b[1024];
    size_t n;
};
static void w8(struct w *w, uint8_t v)
{
    w->b[w->n++] = v;
}
static void w16(struct w *w, uint16_t v)
{
    w8(w, (uint8_t)v);
    w8(w, (uint8_t)(v >> 8));
}
static void w32(struct w *w, uint32_t v)
{
    w16(w, (uint16_t)v);
    w16(w, (uint16_t)(v >> 16));
}
static void w64(struct w *w, uint64_t v)
{
    w32(w, (uint32_t)v);
    w32(w, (uint32_t)(v >> 32));
}
static void wbytes(struct w *w, const char *s, size_t n)
{
    memcpy(w->b + w->n, s, n);
    w->n += n;
}

/* The header and one key "/k" with value "val" and `nhist` versions; the caller writes the
 * client count and the clients. */
static void w_header_and_key(struct w *w, int type, uint32_t nhist)
{
    w->n = 0;
    w32(w, 0x564b5153u);
    w32(w, (1u << 8) | (uint32_t)type);
    w64(w, 9);  /* last */
    w64(w, 1);  /* nkeys */
    w16(w, 2);
    w32(w, nhist);
    w32(w, 3);
    w8(w, 1);
    wbytes(w, "/k", 2);
    wbytes(w, "val", 3);
    for (uint32_t i = 0; i < nhist; i++) {
        w64(w, 9);
        w64(w, 90);
        w32(w, 3);
        w8(w, 0);
    }
}

static int load_w(int type, const struct w *w)
{
    struct sq_kv_store *s = make(type);
    uint8_t *copy = malloc(w->n);
    memcpy(copy, w->b, w->n);
    int rc = sq__kv_store_load(s, copy, w->n);
    free(copy);
    if (rc == 0) {
        CHECK_VALUE(s, "/k", "val");
    }
    /* whatever happened, the store works */
    struct sq_kv_applied a;
    CHECK_EQ_INT(put(s, "/z", "z", 1, 1, 100, &a), 0);
    CHECK_EQ_INT(a.status, 0);
    sq__kv_store_destroy(s);
    return rc;
}

static void test_load_handmade(void)
{
    struct w w;
    /* the format as documented in store.c loads */
    w_header_and_key(&w, SQ_KV_STORE_VOLATILE, 1);
    w64(&w, 1);
    w64(&w, 55); /* client id */
    w64(&w, 9);  /* last used */
    w32(&w, 1);
    w32(&w, 1);
    w64(&w, 7);  /* req */
    w32(&w, 0);
    w64(&w, 9);
    w64(&w, 90);
    CHECK_EQ_INT(load_w(SQ_KV_STORE_VOLATILE, &w), 0);
    {
        /* and remembers client 55's request 7 */
        struct sq_kv_store *s = make(SQ_KV_STORE_VOLATILE);
        CHECK_EQ_INT(sq__kv_store_load(s, w.b, w.n), 0);
        CHECK_EQ_INT(sq__kv_store_last(s), 9);
        struct sq_kv_applied a;
        CHECK_EQ_INT(put(s, "/k", "again", 55, 7, 10, &a), 0);
        CHECK(a.duplicate);
        CHECK_EQ_INT(a.version, 9);
        CHECK_EQ_INT(a.timestamp, 90);
        CHECK_VALUE(s, "/k", "val");
        sq__kv_store_destroy(s);
    }
    /* a bad magic, format or type */
    w.b[0] ^= 1;
    CHECK_EQ_INT(load_w(SQ_KV_STORE_VOLATILE, &w), SQ_EPROTO);
    w.b[0] ^= 1;
    w.b[5] = 2;
    CHECK_EQ_INT(load_w(SQ_KV_STORE_VOLATILE, &w), SQ_EPROTO);
    w.b[5] = 1;
    CHECK_EQ_INT(load_w(SQ_KV_STORE_PERSISTENT, &w), SQ_EPROTO);
    /* a key with no version */
    w_header_and_key(&w, SQ_KV_STORE_VOLATILE, 0);
    w64(&w, 0);
    CHECK_EQ_INT(load_w(SQ_KV_STORE_VOLATILE, &w), SQ_EPROTO);
    /* more keys announced than there are */
    w_header_and_key(&w, SQ_KV_STORE_VOLATILE, 1);
    w64(&w, 0);
    w.b[16] = 2;
    CHECK_EQ_INT(load_w(SQ_KV_STORE_VOLATILE, &w), SQ_EPROTO);
    w.b[16] = 0xff;
    memset(w.b + 17, 0xff, 7);
    CHECK_EQ_INT(load_w(SQ_KV_STORE_VOLATILE, &w), SQ_EPROTO);
    /* a value size larger than the rest */
    w_header_and_key(&w, SQ_KV_STORE_VOLATILE, 1);
    w64(&w, 0);
    w.b[24 + 6] = 0xff;
    w.b[24 + 9] = 0x7f;
    CHECK_EQ_INT(load_w(SQ_KV_STORE_VOLATILE, &w), SQ_EPROTO);
    /* a history count larger than the rest */
    w_header_and_key(&w, SQ_KV_STORE_VOLATILE, 1);
    w64(&w, 0);
    w.b[24 + 2] = 0xff;
    w.b[24 + 5] = 0xff;
    CHECK_EQ_INT(load_w(SQ_KV_STORE_VOLATILE, &w), SQ_EPROTO);
    /* too many clients */
    w_header_and_key(&w, SQ_KV_STORE_VOLATILE, 1);
    w64(&w, SQ_KV_DEDUP_CLIENTS + 1);
    CHECK_EQ_INT(load_w(SQ_KV_STORE_VOLATILE, &w), SQ_EPROTO);
    /* a client with too many answers, or its ring head out of range */
    w_header_and_key(&w, SQ_KV_STORE_VOLATILE, 1);
    w64(&w, 1);
    w64(&w, 55);
    w64(&w, 9);
    w32(&w, SQ_KV_DEDUP_PER_CLIENT + 1);
    w32(&w, 0);
    CHECK_EQ_INT(load_w(SQ_KV_STORE_VOLATILE, &w), SQ_EPROTO);
    w_header_and_key(&w, SQ_KV_STORE_VOLATILE, 1);
    w64(&w, 1);
    w64(&w, 55);
    w64(&w, 9);
    w32(&w, 0);
    w32(&w, SQ_KV_DEDUP_PER_CLIENT);
    CHECK_EQ_INT(load_w(SQ_KV_STORE_VOLATILE, &w), SQ_EPROTO);
    /* answers announced but missing */
    w_header_and_key(&w, SQ_KV_STORE_VOLATILE, 1);
    w64(&w, 1);
    w64(&w, 55);
    w64(&w, 9);
    w32(&w, 2);
    w32(&w, 2);
    w64(&w, 7);
    CHECK_EQ_INT(load_w(SQ_KV_STORE_VOLATILE, &w), SQ_EPROTO);
    /* nothing, and random bytes behind a valid header */
    struct sq_kv_store *s = make(SQ_KV_STORE_PERSISTENT);
    CHECK_EQ_INT(sq__kv_store_load(s, w.b, 0), SQ_EPROTO);
    rng_state = 0x5eed0001;
    int wrong = 0;
    for (int iter = 0; iter < 2000; iter++) {
        size_t n = 24 + rnd() % 200;
        uint8_t *g = malloc(n);
        for (size_t i = 0; i < n; i++) {
            g[i] = (uint8_t)rnd();
        }
        memcpy(g, "SQKV", 4);
        g[4] = SQ_KV_STORE_PERSISTENT;
        g[5] = 1;
        g[6] = g[7] = 0;
        if (iter % 2 == 0) {
            /* a plausible key count, so the walk goes into the keys */
            memset(g + 16, 0, 8);
            g[16] = (uint8_t)(rnd() % 4);
        }
        int rc = sq__kv_store_load(s, g, n);
        if (rc != SQ_EPROTO && rc != 0) {
            wrong++;
        }
        free(g);
    }
    CHECK_EQ_INT(wrong, 0);
    sq__kv_store_destroy(s);
}

/* Saves that are well formed byte by byte but describe no store a save could have produced: a
 * key twice, a client twice, a client whose ring head does not follow its answers. Taking them
 * would break the store's invariants (a lookup sees one of two keys; the at-most-once table
 * answers a request it never saw, or forgets one it did). */
static void test_load_inconsistent(void)
{
    struct w w;
    /* the same key twice */
    w_header_and_key(&w, SQ_KV_STORE_VOLATILE, 1);
    w.b[16] = 2;
    w16(&w, 2);
    w32(&w, 1);
    w32(&w, 3);
    w8(&w, 1);
    wbytes(&w, "/k", 2);
    wbytes(&w, "two", 3);
    w64(&w, 8);
    w64(&w, 80);
    w32(&w, 3);
    w8(&w, 0);
    w64(&w, 0);
    CHECK_EQ_INT(load_w(SQ_KV_STORE_VOLATILE, &w), SQ_EPROTO);

    /* the same client twice */
    w_header_and_key(&w, SQ_KV_STORE_VOLATILE, 1);
    w64(&w, 2);
    for (int i = 0; i < 2; i++) {
        w64(&w, 55);
        w64(&w, 9);
        w32(&w, 0);
        w32(&w, 0);
    }
    CHECK_EQ_INT(load_w(SQ_KV_STORE_VOLATILE, &w), SQ_EPROTO);

    /* one answer, but the ring's head at 5: the next answer would go to slot 5 while lookups
     * read slots 0 and 1 (a zeroed slot that "answers" request 0) */
    w_header_and_key(&w, SQ_KV_STORE_VOLATILE, 1);
    w64(&w, 1);
    w64(&w, 55);
    w64(&w, 9);
    w32(&w, 1);
    w32(&w, 5);
    w64(&w, 7);
    w32(&w, 0);
    w64(&w, 9);
    w64(&w, 90);
    struct sq_kv_store *s = make(SQ_KV_STORE_VOLATILE);
    int rc = sq__kv_store_load(s, w.b, w.n);
    CHECK_EQ_INT(rc, SQ_EPROTO);
    if (rc == 0) {
        /* taken anyway, at most once must still hold: a retry of request 8 is a duplicate, and
         * request 0, never made, is not */
        struct sq_kv_applied a;
        CHECK_EQ_INT(put(s, "/k", "eight", 55, 8, 10, &a), 0);
        CHECK_EQ_INT(put(s, "/k", "eight", 55, 8, 11, &a), 0);
        CHECK(a.duplicate);
        CHECK_EQ_INT(put(s, "/k", "zero", 55, 0, 12, &a), 0);
        CHECK(!a.duplicate);
    }
    sq__kv_store_destroy(s);

    /* an answer no apply can give (status 65536, found by the fuzzer) is refused: a retry of
     * that request would be answered with it; one apply gives is taken */
    const struct {
        int32_t status;
        int load;
    } answers[] = {{65536, SQ_EPROTO}, {SQ_EIO, SQ_EPROTO}, {1, SQ_EPROTO}, {SQ_ECONFLICT, 0}};
    for (size_t i = 0; i < sizeof(answers) / sizeof(answers[0]); i++) {
        w_header_and_key(&w, SQ_KV_STORE_VOLATILE, 1);
        w64(&w, 1);
        w64(&w, 55);
        w64(&w, 9);
        w32(&w, 1);
        w32(&w, 1);
        w64(&w, 7);
        w32(&w, (uint32_t)answers[i].status);
        w64(&w, 9);
        w64(&w, 90);
        CHECK_EQ_INT(load_w(SQ_KV_STORE_VOLATILE, &w), answers[i].load);
    }
}

/* Every single-byte change of a saved store: load refuses it or takes it, never reads outside the
 * buffer, and what it took saves and loads again. */
static void test_load_corrupted(void)
{
    struct sq_kv_store *s = populated(SQ_KV_STORE_PERSISTENT, 6);
    void *buf = NULL;
    size_t bytes = 0;
    CHECK_EQ_INT(sq__kv_store_save(s, &buf, &bytes), 0);
    struct sq_kv_store *t = make(SQ_KV_STORE_PERSISTENT), *u = make(SQ_KV_STORE_PERSISTENT);
    static const uint8_t flips[] = {0x01, 0x02, 0x10, 0x80, 0xff};
    int wrong = 0, taken = 0;
    uint8_t *copy = malloc(bytes);
    for (size_t pos = 0; pos < bytes; pos++) {
        for (size_t f = 0; f < sizeof(flips); f++) {
            memcpy(copy, buf, bytes);
            copy[pos] ^= flips[f];
            int rc = sq__kv_store_load(t, copy, bytes);
            if (rc == 0) {
                taken++;
                void *again = NULL;
                size_t n = 0;
                if (sq__kv_store_save(t, &again, &n) != 0 || sq__kv_store_load(u, again, n) != 0) {
                    wrong++;
                }
                free(again);
            } else if (rc != SQ_EPROTO) {
                wrong++;
            }
        }
    }
    CHECK_EQ_INT(wrong, 0);
    CHECK(taken > 0); /* versions, timestamps and values are not checked, only the structure */
    free(copy);
    free(buf);
    sq__kv_store_destroy(u);
    sq__kv_store_destroy(t);
    sq__kv_store_destroy(s);
}

/* ---- a random run against a model ---- */

#define M_KEYS 12
#define M_CLIENTS 6
#define M_MAXH 4096

struct m_ver {
    uint64_t version, timestamp;
    uint32_t size;
    uint8_t deleted;
    char value[16];
};
struct m_key {
    struct m_ver h[M_MAXH];
    uint32_t n;
};
struct m_answer {
    uint64_t req;
    int status;
    uint64_t version, timestamp;
};
struct m_client {
    struct m_answer a[SQ_KV_DEDUP_PER_CLIENT]; /* oldest first */
    uint32_t n;
};

static void m_remember(struct m_client *c, const struct m_answer *ans)
{
    if (c->n == SQ_KV_DEDUP_PER_CLIENT) {
        memmove(c->a, c->a + 1, (SQ_KV_DEDUP_PER_CLIENT - 1) * sizeof(c->a[0]));
        c->n--;
    }
    c->a[c->n++] = *ans;
}

static void test_model(uint64_t seed)
{
    static struct m_key keys[M_KEYS];
    static struct m_client clients[M_CLIENTS];
    memset(keys, 0, sizeof(keys));
    memset(clients, 0, sizeof(clients));
    uint64_t next_req[M_CLIENTS];
    for (int c = 0; c < M_CLIENTS; c++) {
        next_req[c] = 1;
    }
    rng_state = seed;
    struct sq_kv_store *s = make(SQ_KV_STORE_PERSISTENT);
    uint64_t ts = 1000;
    int bad = 0;
    for (uint64_t version = 1; version <= 3000 && bad == 0; version++) {
        ts += rnd() % 3; /* sometimes the clock does not move */
        int ki = (int)(rnd() % M_KEYS), ci = (int)(rnd() % M_CLIENTS);
        char key[16], val[16];
        snprintf(key, sizeof(key), "/m/%d", ki);
        snprintf(val, sizeof(val), "%llu", (unsigned long long)(rnd() % 100000));
        uint64_t r = rnd() % 10;
        uint8_t kind = r < 6 ? SQ_KV_PUT : r < 8 ? SQ_KV_REMOVE : SQ_KV_BARRIER;
        uint8_t flags = 0;
        struct m_key *k = &keys[ki];
        const struct m_ver *cur = k->n > 0 ? &k->h[k->n - 1] : NULL;
        uint64_t expect = 0;
        r = rnd() % 6;
        if (r == 0) {
            flags = SQ_KV_OPF_IF_ABSENT;
        } else if (r == 1) {
            flags = SQ_KV_OPF_IF_VERSION;
            expect = cur != NULL && rnd() % 2 ? cur->version : rnd() % version;
        }
        /* a retry of one of the client's recent (or not so recent) requests, or a new one */
        uint64_t req;
        if (next_req[ci] > 1 && rnd() % 4 == 0) {
            uint64_t back = rnd() % (SQ_KV_DEDUP_PER_CLIENT + 8) + 1;
            req = next_req[ci] > back ? next_req[ci] - back : 1;
        } else {
            req = next_req[ci]++;
        }
        uint64_t client = (uint64_t)ci + 1;

        /* the model's answer */
        struct m_answer want = {0};
        bool dup = false;
        if (kind != SQ_KV_BARRIER) {
            for (uint32_t i = 0; i < clients[ci].n; i++) {
                if (clients[ci].a[i].req == req) {
                    want = clients[ci].a[i];
                    dup = true;
                }
            }
        }
        if (kind == SQ_KV_BARRIER) {
            want = (struct m_answer){0, 0, version, ts};
        } else if (!dup) {
            bool exists = cur != NULL && !cur->deleted;
            uint64_t cv = cur != NULL ? cur->version : 0;
            int st = 0;
            if ((flags & SQ_KV_OPF_IF_ABSENT) && exists) {
                st = SQ_ECONFLICT;
            } else if ((flags & SQ_KV_OPF_IF_VERSION) && (expect == 0 ? exists : expect != cv)) {
                st = SQ_ECONFLICT;
            } else if (kind == SQ_KV_REMOVE && !exists) {
                st = SQ_ENOTFOUND;
            }
            if (st != 0) {
                want = (struct m_answer){req, st, cv, cur != NULL ? cur->timestamp : 0};
            } else {
                struct m_ver *nv = &k->h[k->n++];
                *nv = (struct m_ver){.version = version, .timestamp = ts,
                                     .size = kind == SQ_KV_PUT ? (uint32_t)strlen(val) : 0,
                                     .deleted = kind == SQ_KV_REMOVE};
                if (kind == SQ_KV_PUT) {
                    memcpy(nv->value, val, sizeof(val));
                }
                want = (struct m_answer){req, 0, version, ts};
            }
            m_remember(&clients[ci], &want);
        }

        /* the store's */
        struct sq_kv_applied got;
        int rc = apply(s, kind, flags, expect, client, req, key, kind == SQ_KV_PUT ? val : NULL,
                       version, ts, &got);
        if (rc != 0 || got.status != want.status || got.version != want.version ||
            got.timestamp != want.timestamp || got.duplicate != dup) {
            fprintf(stderr,
                    "model seed %llu, version %llu: kind %d flags %d expect %llu client %llu req "
                    "%llu on %s: got rc %d status %d version %llu ts %llu dup %d, want status %d "
                    "version %llu ts %llu dup %d\n",
                    (unsigned long long)seed, (unsigned long long)version, kind, flags,
                    (unsigned long long)expect, (unsigned long long)client,
                    (unsigned long long)req, key, rc, got.status,
                    (unsigned long long)got.version, (unsigned long long)got.timestamp,
                    got.duplicate, want.status, (unsigned long long)want.version,
                    (unsigned long long)want.timestamp, dup);
            bad++;
        }

        /* every so often: every key at random points, and a state transfer */
        if (version % 250 == 0) {
            for (int i = 0; i < M_KEYS && bad == 0; i++) {
                snprintf(key, sizeof(key), "/m/%d", i);
                const struct m_key *mk = &keys[i];
                for (int probe = 0; probe < 8; probe++) {
                    int how = probe == 0 ? SQ_KV_LATEST : probe % 2 ? SQ_KV_AT_VERSION
                                                                    : SQ_KV_AT_TIME;
                    uint64_t at = how == SQ_KV_AT_TIME ? 1000 + rnd() % (ts - 999)
                                                       : rnd() % (version + 1);
                    long wi = -1;
                    for (uint32_t j = 0; j < mk->n; j++) {
                        uint64_t f = how == SQ_KV_AT_TIME ? mk->h[j].timestamp : mk->h[j].version;
                        if (how == SQ_KV_LATEST || f <= at) {
                            wi = (long)j;
                        }
                    }
                    struct sq_kv_version v;
                    const void *gv;
                    size_t size;
                    int grc = sq__kv_store_get(s, key, (uint16_t)strlen(key), how, at, &v, &gv,
                                               &size);
                    if (wi < 0 ? grc != SQ_ENOTFOUND
                               : grc != 0 || v.version != mk->h[wi].version ||
                                     v.timestamp != mk->h[wi].timestamp ||
                                     v.size != mk->h[wi].size ||
                                     v.deleted != mk->h[wi].deleted) {
                        fprintf(stderr, "model seed %llu: get %s how %d at %llu differs\n",
                                (unsigned long long)seed, key, how, (unsigned long long)at);
                        bad++;
                        break;
                    }
                    bool latest = wi == (long)mk->n - 1;
                    if (wi >= 0 && latest && !mk->h[wi].deleted &&
                        (gv == NULL || size != mk->h[wi].size ||
                         memcmp(gv, mk->h[wi].value, size) != 0)) {
                        fprintf(stderr, "model seed %llu: value of %s differs\n",
                                (unsigned long long)seed, key);
                        bad++;
                        break;
                    }
                }
            }
            /* the store goes on from its own saved state */
            void *buf = NULL;
            size_t bytes = 0;
            struct sq_kv_store *t = make(SQ_KV_STORE_PERSISTENT);
            CHECK_EQ_INT(sq__kv_store_save(s, &buf, &bytes), 0);
            CHECK_EQ_INT(sq__kv_store_load(t, buf, bytes), 0);
            free(buf);
            sq__kv_store_destroy(s);
            s = t;
        }
    }
    if (bad != 0) {
        fprintf(stderr, "model: seed %llu reproduces this\n", (unsigned long long)seed);
    }
    CHECK_EQ_INT(bad, 0);
    sq__kv_store_destroy(s);
}

int main(int argc, char **argv)
{
    /* test_kv_store [seed]: the model run's seed (the default ones otherwise) */
    test_op_codec();
    test_put_get();
    test_conditional();
    test_remove();
    test_barrier();
    test_dedup();
    test_dedup_window();
    test_dedup_eviction();
    test_versions_and_times();
    test_volatile_and_trigger();
    test_each();
    test_many_keys();
    test_save_load();
    test_save_load_save_identical();
    test_load_truncated();
    test_load_handmade();
    test_load_inconsistent();
    test_load_corrupted();
    if (argc > 1) {
        test_model(strtoull(argv[1], NULL, 0));
    } else {
        for (uint64_t seed = 1; seed <= 5; seed++) {
            test_model(seed * 0x9e3779b97f4a7c15ull);
        }
    }
    return sq_test_done("test_kv_store");
}
