/* fuzz_frame.c: a libFuzzer target for everything squall decodes from a peer: client frames
 * (sq__kv_frame_need, sq__kv_decode, then encode must give back the same bytes), item lists, the
 * replicated ops, and saved stores (state transfer), whose load must either refuse the input or
 * take it so that it saves and loads again. Built and run by run.sh. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv/store.h"
#include "kv/wire.h"
#include "squall.h"

/* Always on (whatever NDEBUG says): a failed property is a finding, like a crash. */
#define MUST(cond)                                                                                 \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_frame.c:%d: property failed: %s\n", __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void frame(const uint8_t *data, size_t size)
{
    long need = sq__kv_frame_need(data, size);
    MUST(size >= 4 || need == 0);
    MUST(need == 0 || need == SQ_EPROTO ||
         (need >= (long)SQ_KV_HEADER_BYTES && need <= (long)SQ_KV_MAX_FRAME));
    /* the frame at the start as a reader would take it, and the whole input as one frame */
    size_t lens[2] = {need > 0 && (size_t)need <= size ? (size_t)need : 0, size};
    for (int i = 0; i < 2; i++) {
        size_t len = lens[i];
        if (len == 0) {
            continue;
        }
        struct sq_kv_frame f;
        char why[128] = "";
        int rc = sq__kv_decode(data, len, &f, why, sizeof(why));
        if (rc != 0) {
            MUST(rc == SQ_EPROTO);
            MUST(why[0] != '\0');
            continue;
        }
        MUST(len == (size_t)sq__kv_frame_need(data, len));
        MUST(sq__kv_frame_bytes(&f) == len);
        MUST(f.op >= 1 && f.op <= SQ_KV_OP_MAX);
        MUST((f.flags & ~(uint32_t)SQ_KV_F_MASK) == 0);
        MUST((const uint8_t *)f.key == data + SQ_KV_HEADER_BYTES);
        MUST((const uint8_t *)f.value + f.value_len == data + len);
        uint8_t *out = malloc(len);
        MUST(out != NULL);
        MUST(sq__kv_encode(&f, out, len) == (long)len);
        MUST(memcmp(out, data, len) == 0);
        free(out);
    }
}

static void items(const uint8_t *data, size_t size)
{
    size_t pos = 0;
    struct sq_kv_item_raw it;
    uint8_t out[SQ_KV_ITEM_HEADER_BYTES + SQ_KV_MAX_KEY];
    int rc;
    while ((rc = sq__kv_item_next(data, size, &pos, &it)) == 0) {
        MUST(it.key_len <= SQ_KV_MAX_KEY && it.flags <= 1);
        MUST((const uint8_t *)it.key + it.key_len == data + pos);
        MUST(pos <= size);
        /* the item encodes back to what was there (but for the pad byte, which is not read) */
        size_t n = sq__kv_item_encode(&it, out);
        const uint8_t *at = data + pos - n;
        MUST(memcmp(out, at, 23) == 0);
        MUST(memcmp(out + 24, at + 24, it.key_len) == 0);
    }
    MUST(rc == SQ_ENOTFOUND || rc == SQ_EPROTO);
    MUST(rc != SQ_ENOTFOUND || pos == size);
}

/* Decodes the input as an op; returns whether it is one. */
static bool op(const uint8_t *data, size_t size, struct sq_kv_op *o)
{
    int rc = sq__kv_op_decode(data, size, o);
    if (rc != 0) {
        MUST(rc == SQ_EPROTO);
        return false;
    }
    MUST(sq__kv_op_bytes(o) == size);
    uint8_t *out = malloc(size);
    MUST(out != NULL);
    sq__kv_op_encode(o, out);
    MUST(memcmp(out, data, size) == 0);
    free(out);
    return true;
}

/* Up to 4 keys of a loaded store, to write and read them. */
struct some_keys {
    char name[4][64];
    uint16_t len[4];
    int n;
};

static void some_keys_fn(void *arg, const char *key, uint16_t key_len,
                         const struct sq_kv_version *v)
{
    struct some_keys *k = arg;
    (void)v;
    if (k->n < 4 && key_len <= sizeof(k->name[0])) {
        memcpy(k->name[k->n], key, key_len);
        k->len[k->n++] = key_len;
    }
}

/* Reads and writes the keys a load brought in: the histories, values and at-most-once answers
 * it took must be ones the store can go on from. */
static void use_loaded(struct sq_kv_store *s)
{
    struct some_keys k = {.n = 0};
    sq__kv_store_each(s, "", 0, true, false, 0, some_keys_fn, &k);
    sq__kv_store_each(s, "", 0, false, true, 1000, some_keys_fn, &k);
    for (int i = 0; i < k.n; i++) {
        struct sq_kv_version v;
        const void *val;
        size_t vs;
        static const int hows[3] = {SQ_KV_LATEST, SQ_KV_AT_VERSION, SQ_KV_AT_TIME};
        for (int h = 0; h < 3; h++) {
            int rc = sq__kv_store_get(s, k.name[i], k.len[i], hows[h], sq__kv_store_last(s) / 2,
                                      &v, &val, &vs);
            MUST(rc == 0 || rc == SQ_ENOTFOUND);
        }
        MUST(sq__kv_store_get(s, k.name[i], k.len[i], SQ_KV_LATEST, 0, &v, &val, &vs) == 0);
        /* a put at the key's version, a retry of it, and a removal */
        for (int j = 0; j < 3; j++) {
            struct sq_kv_op o = {.kind = j < 2 ? SQ_KV_PUT : SQ_KV_REMOVE,
                                 .flags = j == 0 ? SQ_KV_OPF_IF_VERSION : 0,
                                 .client = (uint64_t)i + 1, .req_id = j == 1 ? 0 : (uint64_t)j,
                                 .expect = v.version, .key = k.name[i], .key_len = k.len[i],
                                 .value = "fuzz", .value_len = j < 2 ? 4 : 0};
            struct sq_kv_applied a;
            uint64_t at = sq__kv_store_last(s) + 1;
            MUST(sq__kv_store_apply(s, &o, at, at, &a) == 0);
            MUST(a.status == 0 || a.status == SQ_ECONFLICT || a.status == SQ_ENOTFOUND);
        }
        const struct sq_kv_version *hist;
        uint32_t nh;
        MUST(sq__kv_store_history(s, k.name[i], k.len[i], &hist, &nh) == 0 && nh > 0);
    }
}

static void store(const uint8_t *data, size_t size, const struct sq_kv_op *o)
{
    /* the store type a save names is at byte 4: a store of that type, so load gets past it */
    int type = size > 4 && data[4] <= SQ_KV_STORE_TRIGGER ? data[4] : SQ_KV_STORE_VOLATILE;
    struct sq_kv_store *s = NULL, *t = NULL;
    MUST(sq__kv_store_create(&s, type) == 0);
    int rc = sq__kv_store_load(s, data, size);
    MUST(rc == 0 || rc == SQ_EPROTO);
    if (rc == 0) {
        MUST(sq__kv_store_create(&t, type) == 0);
        void *buf = NULL;
        size_t n = 0;
        MUST(sq__kv_store_save(s, &buf, &n) == 0);
        MUST(sq__kv_store_load(t, buf, n) == 0);
        MUST(sq__kv_store_keys(t) == sq__kv_store_keys(s));
        MUST(sq__kv_store_last(t) == sq__kv_store_last(s));
        free(buf);
        use_loaded(t);
    }
    /* whatever load did, the store works: apply the input's op, if it is one, and read it */
    if (o != NULL) {
        struct sq_kv_applied a;
        uint64_t v = sq__kv_store_last(s) + 1;
        MUST(sq__kv_store_apply(s, o, v, v, &a) == 0);
        MUST(sq__kv_store_last(s) == v);
        struct sq_kv_version ver;
        const void *val;
        size_t vs;
        rc = sq__kv_store_get(s, o->key, o->key_len, SQ_KV_LATEST, 0, &ver, &val, &vs);
        MUST(rc == 0 || rc == SQ_ENOTFOUND);
        const struct sq_kv_version *h;
        uint32_t nh;
        rc = sq__kv_store_history(s, o->key, o->key_len, &h, &nh);
        MUST(rc == 0 || rc == SQ_ENOTFOUND);
    }
    sq__kv_store_destroy(t);
    sq__kv_store_destroy(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    frame(data, size);
    items(data, size);
    struct sq_kv_op o;
    bool is_op = op(data, size, &o);
    store(data, size, is_op ? &o : NULL);
    return 0;
}
