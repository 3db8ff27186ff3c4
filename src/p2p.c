/* p2p.c: point-to-point message rings between members (see p2p.h). */
#include "p2p.h"

#include "common.h"
#include "hash.h"
#include "squall.h"

static size_t inbox(const struct sq__p2p *p, uint32_t from)
{
    return p->base + (size_t)from * SQ_P2P_RING_BYTES;
}

static size_t outbox(const struct sq__p2p *p, uint32_t to)
{
    return p->base + (size_t)(p->npeers + to) * SQ_P2P_RING_BYTES;
}

static size_t ack_off(const struct sq__p2p *p, uint32_t who)
{
    return p->base + (size_t)2 * p->npeers * SQ_P2P_RING_BYTES + 8u * who;
}

static uint64_t tag_of(uint32_t from, uint32_t to, uint64_t seq)
{
    uint64_t h = seq * 0x9e3779b97f4a7c15ull ^ ((uint64_t)from << 48) ^ ((uint64_t)to << 40) ^
                 0x5051505051505051ull;
    return sq__mix64(h) | 1u;
}

size_t sq__p2p_area_bytes(uint32_t npeers)
{
    return (size_t)2 * npeers * SQ_P2P_RING_BYTES + 8u * npeers;
}

void sq__p2p_init(struct sq__p2p *p, uint8_t *mem, size_t base, uint32_t npeers, uint32_t me,
                  struct sq_transport *t)
{
    SQ_ASSERT(npeers <= SQ_P2P_MAX_PEERS);
    SQ_ASSERT(me < npeers);
    memset(p, 0, sizeof(*p));
    p->mem = mem;
    p->base = base;
    p->npeers = npeers;
    p->me = me;
    p->t = t;
}

void sq__p2p_reset_peer(struct sq__p2p *p, uint32_t peer)
{
    SQ_ASSERT(peer < p->npeers);
    p->sent[peer] = p->pushed[peer] = p->consumed[peer] = p->acked[peer] = 0;
    memset(p->mem + inbox(p, peer), 0, SQ_P2P_RING_BYTES);
    memset(p->mem + outbox(p, peer), 0, SQ_P2P_RING_BYTES);
    uint64_t zero = 0;
    memcpy(p->mem + ack_off(p, peer), &zero, 8);
}

static uint64_t acked_by(const struct sq__p2p *p, uint32_t peer)
{
    return __atomic_load_n((const uint64_t *)(const void *)(p->mem + ack_off(p, peer)),
                           __ATOMIC_ACQUIRE);
}

bool sq__p2p_can_stage(const struct sq__p2p *p, uint32_t peer)
{
    uint64_t done = acked_by(p, peer);
    return done <= p->sent[peer] && p->sent[peer] - done < SQ_P2P_SLOTS;
}

int sq__p2p_stage(struct sq__p2p *p, uint32_t peer, uint32_t kind, uint64_t id, const void *data,
                  size_t size)
{
    if (peer >= p->npeers || peer == p->me) {
        return SQ_EINVAL;
    }
    if (size > SQ_P2P_MAX_PAYLOAD) {
        return SQ_EMSGSIZE;
    }
    if (!sq__p2p_can_stage(p, peer)) {
        return SQ_EAGAIN;
    }
    uint64_t seq = p->sent[peer] + 1;
    uint8_t *end = p->mem + outbox(p, peer) + (size_t)((seq - 1) % SQ_P2P_SLOTS + 1) * SQ_P2P_SLOT_BYTES;
    uint8_t *payload = end - SQ_P2P_TRAILER - SQ_ALIGN8(size);
    if (size > 0) {
        memcpy(payload, data, size);
    }
    uint32_t sz = (uint32_t)size;
    memcpy(end - 32, &seq, 8);
    memcpy(end - 24, &sz, 4);
    memcpy(end - 20, &kind, 4);
    memcpy(end - 16, &id, 8);
    uint64_t tag = tag_of(p->me, peer, seq);
    __atomic_store_n((uint64_t *)(void *)(end - 8), tag, __ATOMIC_RELEASE);
    p->sent[peer] = seq;
    return 0;
}

int sq__p2p_flush(struct sq__p2p *p)
{
    int result = 0;
    for (uint32_t q = 0; q < p->npeers; q++) {
        while (p->pushed[q] < p->sent[q]) {
            uint64_t seq = p->pushed[q] + 1;
            size_t slot_end = (size_t)((seq - 1) % SQ_P2P_SLOTS + 1) * SQ_P2P_SLOT_BYTES;
            uint32_t sz;
            memcpy(&sz, p->mem + outbox(p, q) + slot_end - 24, 4);
            size_t len = SQ_ALIGN8((size_t)sz) + SQ_P2P_TRAILER;
            /* My outbox for q lands in q's inbox for me, slot for slot. */
            int rc = p->t->vt->write_at(p->t, q, outbox(p, q) + slot_end - len,
                                        inbox(p, p->me) + slot_end - len, len);
            if (rc != 0) {
                result = rc == SQ_EPEER ? result : rc;
                break;
            }
            p->pushed[q] = seq;
        }
        if (p->acked[q] < p->consumed[q]) {
            /* My count for q goes to q's acks[me]; my own acks[me] is the scratch copy. */
            uint64_t c = p->consumed[q];
            memcpy(p->mem + ack_off(p, p->me), &c, 8);
            int rc = p->t->vt->write_copy(p->t, q, ack_off(p, p->me), 8);
            if (rc == 0) {
                p->acked[q] = c;
            } else if (rc != SQ_EPEER) {
                result = rc;
            }
        }
    }
    return result;
}

int sq__p2p_peek(const struct sq__p2p *p, uint32_t peer, struct sq__p2p_msg *msg)
{
    if (peer >= p->npeers || peer == p->me) {
        return 0;
    }
    uint64_t seq = p->consumed[peer] + 1;
    const uint8_t *end =
        p->mem + inbox(p, peer) + (size_t)((seq - 1) % SQ_P2P_SLOTS + 1) * SQ_P2P_SLOT_BYTES;
    uint64_t tag = __atomic_load_n((const uint64_t *)(const void *)(end - 8), __ATOMIC_ACQUIRE);
    if (tag != tag_of(peer, p->me, seq)) {
        return 0;
    }
    uint64_t got_seq;
    uint32_t sz, kind;
    memcpy(&got_seq, end - 32, 8);
    memcpy(&sz, end - 24, 4);
    memcpy(&kind, end - 20, 4);
    if (got_seq != seq || sz > SQ_P2P_MAX_PAYLOAD) {
        return 0; /* not a message of this link: ignore it */
    }
    memcpy(&msg->id, end - 16, 8);
    msg->kind = kind;
    msg->size = sz;
    msg->data = end - SQ_P2P_TRAILER - SQ_ALIGN8((size_t)sz);
    return 1;
}

void sq__p2p_consume(struct sq__p2p *p, uint32_t peer)
{
    SQ_ASSERT(peer < p->npeers);
    p->consumed[peer]++;
}
