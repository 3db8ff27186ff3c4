/* test_kv_wire.c: the key-value client protocol: the exact byte layout of a frame, encode/decode
 * round trips at the limits, frame_need, and that decode refuses every truncation and every
 * corruption of the checked header fields (and never reads outside the buffer), and item lists. */
#include <stdint.h>
#include <stdlib.h>

#include "kv/wire.h"
#include "squall.h"
#include "test.h"

static void wr32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static bool frames_equal(const struct sq_kv_frame *a, const struct sq_kv_frame *b)
{
    return a->op == b->op && a->flags == b->flags && a->status == b->status &&
           a->req_id == b->req_id && a->client == b->client && a->version == b->version &&
           a->time == b->time && a->count == b->count && a->key_len == b->key_len &&
           a->str_len == b->str_len && a->value_len == b->value_len &&
           (a->key_len == 0 || memcmp(a->key, b->key, a->key_len) == 0) &&
           (a->str_len == 0 || memcmp(a->str, b->str, a->str_len) == 0) &&
           (a->value_len == 0 || memcmp(a->value, b->value, a->value_len) == 0);
}

/* A frame that sets every field to something distinct, so a field written to the wrong offset
 * shows up. */
static struct sq_kv_frame sample(void)
{
    return (struct sq_kv_frame){
        .op = SQ_KV_OP_PUT,
        .flags = SQ_KV_F_IF_VERSION | SQ_KV_F_JSON,
        .status = SQ_ECONFLICT,
        .req_id = 0x1112131415161718ull,
        .client = 0x2122232425262728ull,
        .version = 0x3132333435363738ull,
        .time = 0x4142434445464748ull,
        .count = 0x51525354u,
        .key = "/orders/42",
        .key_len = 10,
        .str = "persistent",
        .str_len = 10,
        .value = "hello, world",
        .value_len = 12,
    };
}

static void test_layout(void)
{
    struct sq_kv_frame f = sample();
    uint8_t buf[256];
    CHECK_EQ_INT(sq__kv_frame_bytes(&f), 60 + 10 + 10 + 12);
    CHECK_EQ_INT(sq__kv_encode(&f, buf, sizeof(buf)), 92);
    /* the golden header: every field little-endian at the offset wire.h documents */
    static const uint8_t want[60] = {
        88, 0, 0, 0,                                    /* length: 92 - 4 */
        0x53, 0x51, 1, SQ_KV_OP_PUT,                    /* magic "SQ", proto, op */
        0x01, 0x01, 0, 0,                               /* flags: IF_VERSION | JSON */
        0xeb, 0xff, 0xff, 0xff,                         /* status -21 */
        0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11, /* req_id */
        0x28, 0x27, 0x26, 0x25, 0x24, 0x23, 0x22, 0x21, /* client */
        0x38, 0x37, 0x36, 0x35, 0x34, 0x33, 0x32, 0x31, /* version */
        0x48, 0x47, 0x46, 0x45, 0x44, 0x43, 0x42, 0x41, /* time */
        0x54, 0x53, 0x52, 0x51,                         /* count */
        10, 0, 10, 0,                                   /* key_len, str_len */
        12, 0, 0, 0,                                    /* value_len */
    };
    CHECK(memcmp(buf, want, sizeof(want)) == 0);
    CHECK(memcmp(buf + 60, "/orders/42persistenthello, world", 32) == 0);

    struct sq_kv_frame g;
    char why[128] = "";
    CHECK_EQ_INT(sq__kv_frame_need(buf, 92), 92);
    CHECK_EQ_INT(sq__kv_decode(buf, 92, &g, why, sizeof(why)), 0);
    CHECK(frames_equal(&f, &g));
    /* the decoded fields point into the buffer, not into a copy */
    CHECK(g.key == (const char *)buf + 60);
    CHECK(g.str == (const char *)buf + 70);
    CHECK(g.value == (const void *)(buf + 80));
    /* encoding what was decoded gives back the same bytes */
    uint8_t again[256];
    CHECK_EQ_INT(sq__kv_encode(&g, again, sizeof(again)), 92);
    CHECK(memcmp(buf, again, 92) == 0);
}

static void test_empty_and_extremes(void)
{
    /* a frame with no key, string or value: exactly the header */
    struct sq_kv_frame f = {.op = SQ_KV_OP_STATUS};
    uint8_t buf[64];
    CHECK_EQ_INT(sq__kv_encode(&f, buf, sizeof(buf)), 60);
    struct sq_kv_frame g;
    memset(&g, 0xa5, sizeof(g));
    CHECK_EQ_INT(sq__kv_decode(buf, 60, &g, NULL, 0), 0);
    CHECK(frames_equal(&f, &g));
    CHECK_EQ_INT(g.key_len, 0);
    CHECK_EQ_INT(g.value_len, 0);

    /* every field at its largest; every op from HELLO to EVENT; every flag */
    f = (struct sq_kv_frame){.flags = SQ_KV_F_MASK, .status = INT32_MIN, .req_id = UINT64_MAX,
                             .client = UINT64_MAX, .version = UINT64_MAX, .time = UINT64_MAX,
                             .count = UINT32_MAX};
    for (int op = 1; op <= SQ_KV_OP_MAX; op++) {
        f.op = (uint8_t)op;
        CHECK_EQ_INT(sq__kv_encode(&f, buf, sizeof(buf)), 60);
        CHECK_EQ_INT(sq__kv_decode(buf, 60, &g, NULL, 0), 0);
        CHECK(frames_equal(&f, &g));
    }

    /* the largest key, string and value are accepted, one byte more is not */
    char *big = malloc(SQ_KV_MAX_VALUE + 1);
    uint8_t *out = malloc(SQ_KV_MAX_FRAME + 16);
    CHECK(big != NULL && out != NULL);
    if (big == NULL || out == NULL) {
        free(big);
        free(out);
        return;
    }
    for (size_t i = 0; i < SQ_KV_MAX_VALUE + 1; i++) {
        big[i] = (char)(i * 131u >> 3);
    }
    f = (struct sq_kv_frame){.op = SQ_KV_OP_PUT, .key = big, .key_len = SQ_KV_MAX_KEY,
                             .str = big + 7, .str_len = SQ_KV_MAX_STR, .value = big,
                             .value_len = SQ_KV_MAX_VALUE};
    CHECK_EQ_INT(sq__kv_frame_bytes(&f), SQ_KV_MAX_FRAME);
    CHECK_EQ_INT(sq__kv_encode(&f, out, SQ_KV_MAX_FRAME), (long)SQ_KV_MAX_FRAME);
    CHECK_EQ_INT(sq__kv_frame_need(out, 4), (long)SQ_KV_MAX_FRAME);
    CHECK_EQ_INT(sq__kv_decode(out, SQ_KV_MAX_FRAME, &g, NULL, 0), 0);
    CHECK(frames_equal(&f, &g));
    /* too small an output buffer */
    CHECK_EQ_INT(sq__kv_encode(&f, out, SQ_KV_MAX_FRAME - 1), SQ_EINVAL);
    /* each length one over its limit */
    struct sq_kv_frame over = f;
    over.key_len = SQ_KV_MAX_KEY + 1;
    CHECK_EQ_INT(sq__kv_encode(&over, out, SQ_KV_MAX_FRAME + 16), SQ_EINVAL);
    over = f;
    over.str_len = SQ_KV_MAX_STR + 1;
    CHECK_EQ_INT(sq__kv_encode(&over, out, SQ_KV_MAX_FRAME + 16), SQ_EINVAL);
    over = f;
    over.value_len = SQ_KV_MAX_VALUE + 1;
    CHECK_EQ_INT(sq__kv_encode(&over, out, SQ_KV_MAX_FRAME + 16), SQ_EINVAL);
    free(big);
    free(out);
}

static void test_frame_need(void)
{
    uint8_t b[8] = {0};
    /* fewer than 4 bytes: wait for more, whatever they are */
    CHECK_EQ_INT(sq__kv_frame_need(b, 0), 0);
    CHECK_EQ_INT(sq__kv_frame_need(b, 3), 0);
    wr32(b, 0xffffffffu);
    CHECK_EQ_INT(sq__kv_frame_need(b, 3), 0);
    /* smaller than a header, or larger than the largest frame: the connection is closed */
    wr32(b, 0);
    CHECK_EQ_INT(sq__kv_frame_need(b, 4), SQ_EPROTO);
    wr32(b, SQ_KV_HEADER_BYTES - 5);
    CHECK_EQ_INT(sq__kv_frame_need(b, 4), SQ_EPROTO);
    wr32(b, SQ_KV_HEADER_BYTES - 4);
    CHECK_EQ_INT(sq__kv_frame_need(b, 4), SQ_KV_HEADER_BYTES);
    wr32(b, SQ_KV_MAX_FRAME - 4);
    CHECK_EQ_INT(sq__kv_frame_need(b, 8), (long)SQ_KV_MAX_FRAME);
    wr32(b, SQ_KV_MAX_FRAME - 3);
    CHECK_EQ_INT(sq__kv_frame_need(b, 8), SQ_EPROTO);
    wr32(b, 0xffffffffu);
    CHECK_EQ_INT(sq__kv_frame_need(b, 8), SQ_EPROTO);
}

/* A copy of `len` bytes on the heap, exactly that size, so ASan sees any read past the end. The
 * caller frees it (after it is done with a frame decoded from it). */
static uint8_t *heap_copy(const uint8_t *src, size_t len)
{
    uint8_t *copy = malloc(len > 0 ? len : 1);
    if (copy != NULL && len > 0) {
        memcpy(copy, src, len);
    }
    return copy;
}

/* Decodes a heap copy of buf; for refusals only (the frame would point into freed memory). */
static int decode_copy(const uint8_t *src, size_t len, char *why, size_t why_size)
{
    uint8_t *copy = heap_copy(src, len);
    if (copy == NULL) {
        return SQ_ENOMEM;
    }
    struct sq_kv_frame f;
    int rc = sq__kv_decode(copy, len, &f, why, why_size);
    free(copy);
    return rc;
}

static void test_truncations(void)
{
    struct sq_kv_frame f = sample();
    uint8_t buf[256], cut[256];
    long n = sq__kv_encode(&f, buf, sizeof(buf));
    CHECK_EQ_INT(n, 92);
    int bad_kept = 0, bad_fixed = 0;
    for (long len = 0; len < n; len++) {
        char why[128] = "";
        /* cut as it arrived: the length field still says 88 */
        if (decode_copy(buf, (size_t)len, why, sizeof(why)) != SQ_EPROTO || why[0] == '\0') {
            bad_kept++;
        }
        /* cut with the length field made to agree: the field lengths no longer add up */
        if (len >= 4) {
            memcpy(cut, buf, (size_t)len);
            wr32(cut, (uint32_t)(len - 4));
            why[0] = '\0';
            if (decode_copy(cut, (size_t)len, why, sizeof(why)) != SQ_EPROTO ||
                why[0] == '\0') {
                bad_fixed++;
            }
        }
    }
    CHECK_EQ_INT(bad_kept, 0);
    CHECK_EQ_INT(bad_fixed, 0);
    /* and a frame with bytes after it */
    buf[92] = 0;
    CHECK_EQ_INT(decode_copy(buf, 93, NULL, 0), SQ_EPROTO);
}

/* Every single-byte corruption: decode either refuses it or decodes a frame that encodes back to
 * exactly the corrupted bytes. Corruptions of the length, magic, protocol and the three field
 * lengths are always refused. */
static void test_corruptions(void)
{
    struct sq_kv_frame f = sample();
    uint8_t buf[128], bad[128], again[128];
    long n = sq__kv_encode(&f, buf, sizeof(buf));
    CHECK_EQ_INT(n, 92);
    int wrong = 0, accepted_checked = 0;
    for (long pos = 0; pos < n; pos++) {
        for (int x = 1; x < 256; x++) {
            memcpy(bad, buf, (size_t)n);
            bad[pos] ^= (uint8_t)x;
            uint8_t *copy = heap_copy(bad, (size_t)n);
            if (copy == NULL) {
                wrong++;
                continue;
            }
            struct sq_kv_frame g;
            int rc = sq__kv_decode(copy, (size_t)n, &g, NULL, 0);
            bool checked = pos < 7 || (pos >= 52 && pos < 60);
            if (rc == 0) {
                accepted_checked += checked;
                /* what decoded must be what is there */
                if (sq__kv_encode(&g, again, sizeof(again)) != n ||
                    memcmp(again, bad, (size_t)n) != 0) {
                    wrong++;
                }
            } else if (rc != SQ_EPROTO) {
                wrong++;
            }
            free(copy);
        }
    }
    CHECK_EQ_INT(wrong, 0);
    CHECK_EQ_INT(accepted_checked, 0);
}

static void test_reasons(void)
{
    struct sq_kv_frame f = {.op = SQ_KV_OP_GET, .key = "k", .key_len = 1};
    uint8_t good[64], b[64];
    CHECK_EQ_INT(sq__kv_encode(&f, good, sizeof(good)), 61);
    struct sq_kv_frame g;
    char why[128];

#define REASON(mutate, text)                                                                       \
    do {                                                                                           \
        memcpy(b, good, 61);                                                                       \
        mutate;                                                                                    \
        why[0] = '\0';                                                                             \
        CHECK_EQ_INT(sq__kv_decode(b, 61, &g, why, sizeof(why)), SQ_EPROTO);                       \
        CHECK_CONTAINS(why, text);                                                                 \
    } while (0)

    REASON(wr32(b, 61), "frame length does not match");
    REASON(b[4] = 'X', "bad magic");
    REASON(b[6] = 2, "unsupported protocol version");
    REASON(b[7] = 0, "unknown operation");
    REASON(b[7] = SQ_KV_OP_MAX + 1, "unknown operation");
    REASON(wr32(b + 8, SQ_KV_F_MASK + 1), "unknown flags");
    REASON(wr32(b + 8, 0x80000000u), "unknown flags");
    REASON((b[52] = 0x01, b[53] = 0x04), "key longer than 1024 bytes"); /* 1025 */
    REASON((b[54] = 0x01, b[55] = 0x02), "string field longer than 512 bytes"); /* 513 */
    REASON(wr32(b + 56, SQ_KV_MAX_VALUE + 1), "value over the limit of 64 MiB");
    REASON(b[52] = 0, "field lengths do not add up");
    REASON(b[54] = 1, "field lengths do not add up");
#undef REASON
    why[0] = '\0';
    CHECK_EQ_INT(sq__kv_decode(good, 59, &g, why, sizeof(why)), SQ_EPROTO);
    CHECK_CONTAINS(why, "shorter than its 60-byte header");
    /* a tiny reason buffer is filled, truncated, and terminated */
    char small[6];
    memset(small, 'x', sizeof(small));
    CHECK_EQ_INT(sq__kv_decode(good, 59, &g, small, sizeof(small)), SQ_EPROTO);
    CHECK(memchr(small, '\0', sizeof(small)) != NULL);
    /* no reason buffer at all */
    CHECK_EQ_INT(sq__kv_decode(good, 59, &g, NULL, 0), SQ_EPROTO);
    /* and the good frame decodes */
    CHECK_EQ_INT(sq__kv_decode(good, 61, &g, why, sizeof(why)), 0);
    CHECK(frames_equal(&f, &g));
}

/* A stream of frames arriving in pieces, cut the way a TCP reader sees it. */
static void test_stream(void)
{
    uint8_t stream[4096];
    size_t used = 0;
    char key[32];
    for (int i = 0; i < 20; i++) {
        int kl = snprintf(key, sizeof(key), "/k/%d", i);
        struct sq_kv_frame f = {.op = SQ_KV_OP_PUT, .req_id = (uint64_t)i, .key = key,
                                .key_len = (uint16_t)kl, .value = key, .value_len = (uint32_t)i};
        long n = sq__kv_encode(&f, stream + used, sizeof(stream) - used);
        CHECK(n > 0);
        used += (size_t)n;
    }
    size_t off = 0;
    int got = 0;
    for (;;) {
        long need = sq__kv_frame_need(stream + off, used - off);
        if (need == 0) {
            break;
        }
        CHECK(need > 0);
        if (need <= 0 || (size_t)need > used - off) {
            break;
        }
        struct sq_kv_frame f;
        CHECK_EQ_INT(sq__kv_decode(stream + off, (size_t)need, &f, NULL, 0), 0);
        CHECK_EQ_INT(f.req_id, got);
        CHECK_EQ_INT(f.value_len, got);
        int kl = snprintf(key, sizeof(key), "/k/%d", got);
        CHECK(f.key_len == kl && memcmp(f.key, key, (size_t)kl) == 0);
        off += (size_t)need;
        got++;
    }
    CHECK_EQ_INT(got, 20);
    CHECK_EQ_INT(off, used);
}

static void test_items(void)
{
    uint8_t buf[4096];
    size_t len = 0;
    struct sq_kv_item_raw in[5] = {
        {.version = 1, .timestamp = 10, .size = 3, .flags = 0, .key = "/a", .key_len = 2},
        {.version = UINT64_MAX, .timestamp = UINT64_MAX, .size = UINT32_MAX, .flags = 1,
         .key = "/b/removed", .key_len = 10},
        {.version = 7, .timestamp = 0, .size = 0, .flags = 0, .key = "", .key_len = 0},
        {.version = 8, .timestamp = 9, .size = 10, .flags = 0, .key = NULL, .key_len = 0},
        {.version = 0x0102030405060708ull, .timestamp = 5, .size = 6, .flags = 1,
         .key = "/zzz", .key_len = 4},
    };
    for (int i = 0; i < 5; i++) {
        size_t n = sq__kv_item_encode(&in[i], buf + len);
        CHECK_EQ_INT(n, SQ_KV_ITEM_HEADER_BYTES + in[i].key_len);
        len += n;
    }
    /* the layout of the first item */
    static const uint8_t want[26] = {1, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0,
                                     3, 0, 0, 0, 2, 0, 0, 0, '/', 'a'};
    CHECK(memcmp(buf, want, sizeof(want)) == 0);

    size_t pos = 0;
    struct sq_kv_item_raw it;
    for (int i = 0; i < 5; i++) {
        CHECK_EQ_INT(sq__kv_item_next(buf, len, &pos, &it), 0);
        CHECK(it.version == in[i].version);
        CHECK(it.timestamp == in[i].timestamp);
        CHECK(it.size == in[i].size);
        CHECK_EQ_INT(it.flags, in[i].flags);
        CHECK_EQ_INT(it.key_len, in[i].key_len);
        CHECK(it.key_len == 0 || memcmp(it.key, in[i].key, it.key_len) == 0);
    }
    CHECK_EQ_INT(pos, len);
    CHECK_EQ_INT(sq__kv_item_next(buf, len, &pos, &it), SQ_ENOTFOUND);
    CHECK_EQ_INT(pos, len);
    /* an empty list ends at once; a position past the end is malformed */
    pos = 0;
    CHECK_EQ_INT(sq__kv_item_next(buf, 0, &pos, &it), SQ_ENOTFOUND);
    pos = len + 1;
    CHECK_EQ_INT(sq__kv_item_next(buf, len, &pos, &it), SQ_EPROTO);

    /* every truncation: the items before the cut, then the end (cut at an item boundary) or
     * SQ_EPROTO (cut inside an item), and never a read past the cut */
    size_t bounds[6] = {0};
    for (int i = 0; i < 5; i++) {
        bounds[i + 1] = bounds[i] + SQ_KV_ITEM_HEADER_BYTES + in[i].key_len;
    }
    int wrong = 0;
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *copy = malloc(cut > 0 ? cut : 1);
        if (copy == NULL) {
            wrong++;
            continue;
        }
        memcpy(copy, buf, cut);
        int whole = 0;
        bool at_bound = false;
        for (int i = 0; i <= 5; i++) {
            if (bounds[i] <= cut) {
                whole = i;
                at_bound = bounds[i] == cut;
            }
        }
        pos = 0;
        int k = 0, rc;
        while ((rc = sq__kv_item_next(copy, cut, &pos, &it)) == 0) {
            k++;
        }
        if (k != whole || rc != (at_bound ? SQ_ENOTFOUND : SQ_EPROTO)) {
            wrong++;
        }
        free(copy);
    }
    CHECK_EQ_INT(wrong, 0);

    /* a deleted flag other than 0 or 1, and a key over the limit */
    uint8_t one[SQ_KV_ITEM_HEADER_BYTES + SQ_KV_MAX_KEY + 1];
    memset(one, 0, sizeof(one));
    struct sq_kv_item_raw big = {.version = 1, .key = (const char *)one, .key_len = 0};
    size_t n = sq__kv_item_encode(&big, one);
    one[22] = 2;
    pos = 0;
    CHECK_EQ_INT(sq__kv_item_next(one, n, &pos, &it), SQ_EPROTO);
    CHECK_EQ_INT(pos, 0);
    one[22] = 0;
    one[20] = (uint8_t)((SQ_KV_MAX_KEY + 1) & 0xff);
    one[21] = (uint8_t)((SQ_KV_MAX_KEY + 1) >> 8);
    pos = 0;
    CHECK_EQ_INT(sq__kv_item_next(one, sizeof(one), &pos, &it), SQ_EPROTO);
    one[20] = (uint8_t)(SQ_KV_MAX_KEY & 0xff);
    one[21] = (uint8_t)(SQ_KV_MAX_KEY >> 8);
    pos = 0;
    CHECK_EQ_INT(sq__kv_item_next(one, sizeof(one) - 1, &pos, &it), 0);
    CHECK_EQ_INT(it.key_len, SQ_KV_MAX_KEY);
}

int main(void)
{
    test_layout();
    test_empty_and_extremes();
    test_frame_need();
    test_truncations();
    test_corruptions();
    test_reasons();
    test_stream();
    test_items();
    return sq_test_done("test_kv_wire");
}
