/* wire.c: encoding and decoding of the key-value client protocol's frames and item lists. */
#include "kv/wire.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "le.h"
#include "squall.h"

static_assert(SQ_KV_HEADER_BYTES == 60, "the frame header is 60 bytes on the wire");
static_assert(SQ_KV_ITEM_HEADER_BYTES == 24, "an item header is 24 bytes on the wire");

size_t sq__kv_frame_bytes(const struct sq_kv_frame *f)
{
    return SQ_KV_HEADER_BYTES + (size_t)f->key_len + f->str_len + f->value_len;
}

long sq__kv_encode(const struct sq_kv_frame *f, void *out, size_t cap)
{
    if (f->key_len > SQ_KV_MAX_KEY || f->str_len > SQ_KV_MAX_STR ||
        f->value_len > SQ_KV_MAX_VALUE || cap < sq__kv_frame_bytes(f)) {
        return SQ_EINVAL;
    }
    uint8_t *p = out;
    size_t total = sq__kv_frame_bytes(f);
    sq__st32(p, (uint32_t)(total - 4));
    sq__st16(p + 4, SQ_KV_MAGIC);
    p[6] = SQ_KV_PROTO;
    p[7] = f->op;
    sq__st32(p + 8, f->flags);
    sq__st32(p + 12, (uint32_t)f->status);
    sq__st64(p + 16, f->req_id);
    sq__st64(p + 24, f->client);
    sq__st64(p + 32, f->version);
    sq__st64(p + 40, f->time);
    sq__st32(p + 48, f->count);
    sq__st16(p + 52, f->key_len);
    sq__st16(p + 54, f->str_len);
    sq__st32(p + 56, f->value_len);
    uint8_t *q = p + SQ_KV_HEADER_BYTES;
    if (f->key_len > 0) {
        memcpy(q, f->key, f->key_len);
    }
    q += f->key_len;
    if (f->str_len > 0) {
        memcpy(q, f->str, f->str_len);
    }
    q += f->str_len;
    if (f->value_len > 0) {
        memcpy(q, f->value, f->value_len);
    }
    return (long)total;
}

long sq__kv_frame_need(const void *buf, size_t len)
{
    if (len < 4) {
        return 0;
    }
    uint32_t rest = sq__ld32(buf);
    if (rest < SQ_KV_HEADER_BYTES - 4 || rest > SQ_KV_MAX_FRAME - 4) {
        return SQ_EPROTO;
    }
    return (long)rest + 4;
}

int sq__kv_decode(const void *buf, size_t len, struct sq_kv_frame *f, char *why, size_t why_size)
{
    const uint8_t *p = buf;
    const char *reason = NULL;
    if (len < SQ_KV_HEADER_BYTES) {
        reason = "frame shorter than its 60-byte header";
    } else if (sq__ld32(p) != len - 4) {
        reason = "frame length does not match";
    } else if (sq__ld16(p + 4) != SQ_KV_MAGIC) {
        reason = "bad magic (not a squall client frame)";
    } else if (p[6] != SQ_KV_PROTO) {
        reason = "unsupported protocol version";
    } else if (p[7] == 0 || p[7] > SQ_KV_OP_MAX) {
        reason = "unknown operation";
    } else if ((sq__ld32(p + 8) & ~(uint32_t)SQ_KV_F_MASK) != 0) {
        reason = "unknown flags";
    } else if (sq__ld16(p + 52) > SQ_KV_MAX_KEY) {
        reason = "key longer than 1024 bytes";
    } else if (sq__ld16(p + 54) > SQ_KV_MAX_STR) {
        reason = "string field longer than 512 bytes";
    } else if (sq__ld32(p + 56) > SQ_KV_MAX_VALUE) {
        reason = "value over the limit of " SQ_KV_MAX_VALUE_TEXT;
    } else if (SQ_KV_HEADER_BYTES + (size_t)sq__ld16(p + 52) + sq__ld16(p + 54) +
                   sq__ld32(p + 56) !=
               len) {
        reason = "field lengths do not add up to the frame length";
    }
    if (reason != NULL) {
        if (why != NULL && why_size > 0) {
            snprintf(why, why_size, "%s", reason);
        }
        return SQ_EPROTO;
    }
    *f = (struct sq_kv_frame){
        .op = p[7],
        .flags = sq__ld32(p + 8),
        .status = (int32_t)sq__ld32(p + 12),
        .req_id = sq__ld64(p + 16),
        .client = sq__ld64(p + 24),
        .version = sq__ld64(p + 32),
        .time = sq__ld64(p + 40),
        .count = sq__ld32(p + 48),
        .key_len = sq__ld16(p + 52),
        .str_len = sq__ld16(p + 54),
        .value_len = sq__ld32(p + 56),
    };
    f->key = (const char *)p + SQ_KV_HEADER_BYTES;
    f->str = f->key + f->key_len;
    f->value = f->str + f->str_len;
    return 0;
}

size_t sq__kv_item_encode(const struct sq_kv_item_raw *it, void *out)
{
    uint8_t *p = out;
    sq__st64(p, it->version);
    sq__st64(p + 8, it->timestamp);
    sq__st32(p + 16, it->size);
    sq__st16(p + 20, it->key_len);
    p[22] = it->flags;
    p[23] = 0;
    if (it->key_len > 0) {
        memcpy(p + SQ_KV_ITEM_HEADER_BYTES, it->key, it->key_len);
    }
    return SQ_KV_ITEM_HEADER_BYTES + it->key_len;
}

int sq__kv_item_next(const void *buf, size_t len, size_t *pos, struct sq_kv_item_raw *it)
{
    if (*pos == len) {
        return SQ_ENOTFOUND;
    }
    if (*pos > len || len - *pos < SQ_KV_ITEM_HEADER_BYTES) {
        return SQ_EPROTO;
    }
    const uint8_t *p = (const uint8_t *)buf + *pos;
    uint16_t klen = sq__ld16(p + 20);
    if (klen > SQ_KV_MAX_KEY || len - *pos - SQ_KV_ITEM_HEADER_BYTES < klen || p[22] > 1) {
        return SQ_EPROTO;
    }
    *it = (struct sq_kv_item_raw){.version = sq__ld64(p),
                                  .timestamp = sq__ld64(p + 8),
                                  .size = sq__ld32(p + 16),
                                  .flags = p[22],
                                  .key = (const char *)p + SQ_KV_ITEM_HEADER_BYTES,
                                  .key_len = klen};
    *pos += SQ_KV_ITEM_HEADER_BYTES + klen;
    return 0;
}
