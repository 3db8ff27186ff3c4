/* smc.c: totally ordered multicast over a shard's shared state table: small messages in its slots,
 * large ones in its senders' rings, forwarded along a schedule (see "large messages" below). */
#include "smc.h"

#include "common.h"
#include "hash.h"
#include "log.h"

/* Columns are read while a peer's write may be landing (RDMA) or half-landed (tcp), so every read
 * of a remote column is an atomic load with acquire order: payload bytes are read only after the
 * tag or counter that covers them. */
#define load_u64 sq__load_u64
#define store_u64 sq__store_u64

static inline uint32_t load_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static inline void store_u32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, sizeof(v));
}

/* Row `rank` of this shard's table. */
static inline uint8_t *row(const struct sq__smc *s, uint32_t rank)
{
    return sq__sst_row(&s->sst, rank);
}

/* Slot tags: see sst.c for why tags are hashes. */
static inline uint64_t slot_tag(const struct sq__smc *s, uint32_t rank, uint64_t slot_no)
{
    return sq__mix64(s->sst.slot_tag_base[rank] + slot_no * 0x9e3779b97f4a7c15ull) | 1u;
}

static inline uint8_t *slot_end(const struct sq__smc *s, uint32_t rank, uint64_t slot_no)
{
    return row(s, rank) + s->sst.L.header_bytes +
           (size_t)(slot_no % s->sst.L.window_size) * s->sst.L.slot_bytes + s->sst.L.slot_bytes;
}

/* Trailer fields, relative to the slot's end. */
#define TR_TS (SQ_SST_TRAILER_BYTES)
#define TR_INDEX (SQ_SST_TRAILER_BYTES - 8)
#define TR_SIZE (SQ_SST_TRAILER_BYTES - 16)
#define TR_FLAGS (SQ_SST_TRAILER_BYTES - 20)
#define TR_TAG 8u

/* ---- large messages ----
 *
 * A message above the table's max_smc_payload is written into the sender's ring (one per sender
 * rank, at the same offset at every member), contiguously, at a 64-byte aligned position of the
 * sender's stream (a position p lies at p % ring_bytes; a message that would cross the ring's end
 * starts at the next lap instead). Its slot carries the position; the trailer has the real size
 * and SQ__SMC_FLAG_LARGE.
 *
 * The bytes travel by the schedule: in a chain, the sender writes each block to rank+1, which
 * writes it on to rank+2 as soon as it has it, and so on (pipelined, so a message of b blocks
 * reaches the last of n members after about b + n - 2 block times, and the sender writes it
 * once whatever n is); in a star the sender writes it to every member. After each batch of blocks
 * a member writes its forwarding word for that sender (how far into the stream it has written,
 * with a check hash) to the members it forwards to: links are FIFO, so a member that reads the
 * word from its source holds every byte below it. A member counts a large message received only
 * once its source's word passed the message's end: what it received, it holds whole, so delivery
 * and the ragged trim need nothing new. Ring space is reused only once the message was delivered
 * at every member, as slots are, so every forward of it is done by then. */

static inline bool is_large(uint32_t flags)
{
    return (flags & SQ__SMC_FLAG_LARGE) != 0;
}

/* Sender r's ring in this view's table. */
static inline uint8_t *ring(const struct sq__smc *s, uint32_t r)
{
    return s->sst.table + s->sst.L.large_off + (size_t)r * s->sst.L.large_ring_bytes;
}

static inline size_t ring_at(const struct sq__smc *s, uint64_t pos)
{
    return (size_t)(pos % s->sst.L.large_ring_bytes);
}

/* Member `rank`'s forwarding word pair for sender `sender`. */
static inline uint8_t *fwd_word(const struct sq__smc *s, uint32_t rank, uint32_t sender)
{
    return row(s, rank) + s->sst.L.off_fwd + 16u * sender;
}

static inline uint64_t fwd_check(const struct sq__smc *s, uint32_t rank, uint32_t sender,
                                 uint64_t v)
{
    return sq__mix64(s->sst.slot_tag_base[rank] ^ ((uint64_t)(sender + 1) << 40) ^
                     sq__mix64(v + 0x1a5e)) |
           1u;
}

/* The member whose writes bring me sender r's large messages. */
static uint32_t source_of(const struct sq__smc *s, uint32_t r)
{
    const uint32_t n = s->sst.L.nmembers;
    return s->schedule == SQ_SMC_STAR ? r : (s->sst.my_rank + n - 1) % n;
}

/* The members I write sender r's large messages to (bit = rank). */
static uint64_t targets_of(const struct sq__smc *s, uint32_t r)
{
    const uint32_t n = s->sst.L.nmembers;
    const uint32_t me = s->sst.my_rank;
    if (s->schedule == SQ_SMC_STAR) {
        return me == r ? ((n >= 64 ? ~0ull : (1ull << n) - 1) & ~(1ull << me)) : 0;
    }
    uint32_t next = (me + 1) % n;
    return next == r || next == me ? 0 : 1ull << next;
}

/* How far into sender r's stream I hold every byte (read from my source's word). */
static uint64_t source_fwd(struct sq__smc *s, uint32_t r)
{
    uint32_t src = source_of(s, r);
    if (src != s->sst.my_rank) {
        const uint8_t *w = fwd_word(s, src, r);
        /* The check is written after the value: read it first, so a matching pair is whole. */
        uint64_t c = load_u64(w + 8);
        uint64_t v = load_u64(w);
        if (c == fwd_check(s, src, r, v)) {
            s->seen_src[r] = SQ_MAX(s->seen_src[r], v);
        }
    }
    return s->seen_src[r];
}

/* Where the slot ending at `end` puts its large message in its sender's stream (its payload). */
static inline uint64_t stream_pos(const uint8_t *end)
{
    return load_u64(end - SQ_SST_TRAILER_BYTES - 8);
}

static inline void set_stream_pos(uint8_t *end, uint64_t pos)
{
    store_u64(end - SQ_SST_TRAILER_BYTES - 8, pos);
}

/* A large slot's stream position; false if the slot is malformed. */
static bool large_pos(const struct sq__smc *s, const uint8_t *end, uint32_t size, uint64_t *pos)
{
    *pos = stream_pos(end);
    const struct sq__sst_layout *L = &s->sst.L;
    return sq__sst_has_large(L) && size > L->max_smc_payload && size <= L->max_payload &&
           (*pos & 63u) == 0 && ring_at(s, *pos) + size <= L->large_ring_bytes;
}

/* Frees ring space of my messages that every member delivered (in order, as slots free). */
static void free_large(struct sq__smc *s)
{
    while (s->freed_slots < s->slots_used &&
           s->slot_global[s->freed_slots % s->sst.L.window_size] < s->min_delivered) {
        const uint8_t *end = slot_end(s, s->sst.my_rank, s->freed_slots);
        uint32_t flags = load_u32(end - TR_FLAGS);
        if (is_large(flags)) {
            s->large_tail = stream_pos(end) + load_u32(end - TR_SIZE);
        }
        s->freed_slots++;
    }
}

/* Forwards what I hold of sender r's large messages to my targets, at most a few blocks. */
static int forward_stream(struct sq__smc *s, uint32_t r)
{
    uint64_t targets = targets_of(s, r);
    if (targets == 0) {
        return 0;
    }
    const bool mine = r == s->sst.my_rank;
    if (!mine && !sq__sst_row_valid(&s->sst, r)) {
        return 0;
    }
    int blocks = 0;
    while (blocks < (int)SQ_SMC_MAX_FORWARD_BLOCKS) {
        uint64_t z = s->fwd_slot[r];
        const uint64_t W = s->sst.L.window_size;
        if (mine && z >= s->slots_used) {
            break;
        }
        if (mine && s->slots_used - z > W) {
            /* Its slot was reused: it was delivered everywhere, so it went all the way. */
            s->fwd_slot[r] = s->slots_used - W;
            continue;
        }
        const uint8_t *end = slot_end(s, r, z);
        if (!mine && load_u64(end - TR_TAG) != slot_tag(s, r, z)) {
            if (z < s->recv_slots[r]) {
                s->fwd_slot[r] = z + 1; /* received, and its slot since reused (see above) */
                continue;
            }
            break; /* not here yet */
        }
        uint32_t size = load_u32(end - TR_SIZE);
        if (!is_large(load_u32(end - TR_FLAGS))) {
            s->fwd_slot[r] = z + 1;
            continue;
        }
        uint64_t pos;
        if (!large_pos(s, end, size, &pos)) {
            return sq__sst_fail(&s->sst, SQ_ETRANSPORT,
                                "member %u sent a bad large-message slot %llu (size %u)",
                                s->sst.member_ids[r], (unsigned long long)z, size);
        }
        uint64_t from = SQ_MAX(s->fwd_pos[r], pos);
        uint64_t stop = pos + size;
        uint64_t have = mine ? stop : SQ_MIN(source_fwd(s, r), stop);
        if (from >= stop) {
            s->fwd_slot[r] = z + 1;
            continue;
        }
        if (have <= from) {
            break; /* the next block has not reached me */
        }
        uint64_t to = SQ_MIN(have, from + s->block_bytes);
        /* A member whose link is gone is suspected: the chain through it is broken until the
         * next view. */
        int wrote = sq__sst_push_to(&s->sst, targets,
                                    sq__sst_offset(&s->sst, ring(s, r) + ring_at(s, from)),
                                    (size_t)(to - from), false);
        if (wrote < 0) {
            return wrote;
        }
        if (s->large_bytes_total != NULL) {
            atomic_fetch_add_explicit(s->large_bytes_total, (uint64_t)wrote * (to - from),
                                      memory_order_relaxed);
        }
        s->fwd_pos[r] = to;
        blocks++;
        if (to == stop) {
            s->fwd_slot[r] = z + 1;
        }
    }
    if (blocks > 0) {
        uint8_t *w = fwd_word(s, s->sst.my_rank, r);
        store_u64(w, s->fwd_pos[r]);
        store_u64(w + 8, fwd_check(s, s->sst.my_rank, r, s->fwd_pos[r]));
        int rc = sq__sst_push_to(&s->sst, targets, sq__sst_offset(&s->sst, w), 16, true);
        if (rc < 0) {
            return rc;
        }
    }
    return blocks;
}

static int forward_large(struct sq__smc *s)
{
    if (!sq__sst_has_large(&s->sst.L)) {
        return 0;
    }
    int events = 0;
    for (uint32_t r = 0; r < s->sst.L.nmembers; r++) {
        int rc = forward_stream(s, r);
        if (rc < 0) {
            return rc;
        }
        events += rc;
    }
    return events;
}

int sq__smc_init(struct sq__smc *s, const struct sq__smc_params *p, uint8_t *table,
                 struct sq_transport *t, sq_deliver_fn deliver, void *deliver_arg)
{
    memset(s, 0, sizeof(*s));
    int rc = sq__sst_init(&s->sst, &p->sst, table, t);
    if (rc != 0) {
        return rc;
    }
    for (uint32_t i = 0; i < p->sst.nmembers; i++) {
        s->seen_hb_at_us[i] = p->now_us;
    }
    s->slot_global = calloc(p->sst.window_size, sizeof(uint64_t));
    if (s->slot_global == NULL) {
        return SQ_ENOMEM;
    }
    s->deliver = deliver;
    s->deliver_arg = deliver_arg;
    s->last_sent_global = UINT64_MAX;
    s->hb_timeout_us = p->heartbeat_timeout_us;
    s->hb_period_us = SQ_MAX(p->heartbeat_timeout_us / 5, 1000u);
    s->now_us = s->last_hb_us = s->last_tick_us = p->now_us;
    s->data_only = p->data_only;
    s->subgroup = p->subgroup;
    s->last_timestamp = p->last_timestamp;
    s->ordered_last_ts = p->last_timestamp;
    s->shard = p->shard;
    s->schedule = p->schedule;
    s->block_bytes = p->block_bytes != 0 ? p->block_bytes : (1u << 20);
    s->large_bytes_total = p->large_bytes_total;
    s->lazy_us = p->lazy_us;
    /* A sender's window frees as the others' delivered counters pass its oldest slot: with W
     * slots its messages lie at least n indexes apart, so a counter that trails the truth by less
     * than W*n/4 still frees three quarters of a full window. */
    s->lazy_gap =
        p->sst.window_size >= 2 ? SQ_MAX(1u, p->sst.window_size * p->sst.nmembers / 4u) : 1u;
    return 0;
}

void sq__smc_set_ordered(struct sq__smc *s, sq_deliver_fn ordered, void *arg)
{
    SQ_ASSERT(s->next_ordered == 0);
    s->ordered = ordered;
    s->ordered_arg = arg;
}

void sq__smc_release(struct sq__smc *s, uint64_t last_ts)
{
    /* Nothing was logged ahead while on hold: logging starts from the same clock as delivery.
     * That clock is the donor's, not the later of it and mine: every member of the view must
     * stamp the same messages alike, and mine may be ahead (a restart set it from my log's last
     * record, which the donor then had me cut as past the shard's history). */
    SQ_ASSERT(s->next_ordered == s->next_deliver);
    s->hold = false;
    s->last_timestamp = last_ts;
    s->ordered_last_ts = last_ts;
}

void sq__smc_fini(struct sq__smc *s)
{
    free(s->slot_global);
    s->slot_global = NULL;
}

/* Minimum over members of their delivered column. */
static uint64_t min_delivered(struct sq__smc *s)
{
    uint64_t m = UINT64_MAX;
    for (uint32_t j = 0; j < s->sst.L.nmembers; j++) {
        uint64_t d;
        if (j == s->sst.my_rank) {
            d = s->next_deliver;
        } else {
            d = sq__sst_col(&s->sst, j, SQ_SST_OFF_DELIVERED);
            d = s->seen_delivered[j] = SQ_MAX(d, s->seen_delivered[j]);
        }
        m = SQ_MIN(m, d);
    }
    s->min_delivered = m;
    return m;
}

bool sq__smc_can_send(struct sq__smc *s)
{
    if (s->slots_used < s->sst.L.window_size) {
        return true;
    }
    uint64_t prev = s->slot_global[s->slots_used % s->sst.L.window_size];
    return s->min_delivered > prev || min_delivered(s) > prev;
}

int sq__smc_reserve(struct sq__smc *s, size_t size, void **buf)
{
    if (s->sst.failed != 0) {
        return s->sst.failed;
    }
    if (s->reserved) {
        return SQ_EBUSY;
    }
    if (size > s->sst.L.max_payload) {
        return SQ_EMSGSIZE;
    }
    if (s->sst.phase != SQ_SST_RUNNING) {
        return SQ_EAGAIN; /* wedged: the next view takes new messages */
    }
    if (!sq__smc_can_send(s)) {
        return SQ_EAGAIN;
    }
    /* Before the slot is written over: its old message's ring space is accounted free. */
    free_large(s);
    if (size > s->sst.L.max_smc_payload) {
        const uint64_t R = s->sst.L.large_ring_bytes;
        uint64_t start = (s->large_head + 63u) & ~63ull;
        if (start % R + size > R) {
            start += R - start % R; /* it would cross the ring's end: the next lap */
        }
        /* [large_tail, large_head) holds messages not yet delivered everywhere (none when the
         * two meet): the new one must not reach round the ring into them. */
        if (s->large_tail != s->large_head && start + size - s->large_tail > R) {
            (void)min_delivered(s);
            free_large(s);
            if (s->large_tail != s->large_head && start + size - s->large_tail > R) {
                return SQ_EAGAIN;
            }
        }
        s->reserved_pos = start;
        *buf = ring(s, s->sst.my_rank) + ring_at(s, start);
    } else {
        s->reserved_pos = UINT64_MAX;
        *buf = slot_end(s, s->sst.my_rank, s->slots_used) - SQ_SST_TRAILER_BYTES - SQ_ALIGN8(size);
    }
    s->reserved = true;
    s->reserved_size = (uint32_t)size;
    return 0;
}

int sq__smc_commit(struct sq__smc *s)
{
    if (s->sst.failed != 0) {
        return s->sst.failed;
    }
    if (!s->reserved) {
        return SQ_ESTATE;
    }
    if (s->sst.phase != SQ_SST_RUNNING) {
        /* Wedged since the reservation: my counters are frozen, the message cannot go out. */
        s->reserved = false;
        s->reserved_flags = 0;
        return SQ_EVIEWCHANGE;
    }
    uint64_t z = s->slots_used;
    uint8_t *end = slot_end(s, s->sst.my_rank, z);
    uint64_t index = s->next_index;
    uint64_t global = index * s->sst.L.nmembers + s->sst.my_rank;
    /* A hybrid clock: never behind what this shard already delivered. */
    store_u64(end - TR_TS, SQ_MAX(s->stamp, s->last_timestamp + (s->last_timestamp != UINT64_MAX)));
    store_u64(end - TR_INDEX, index);
    store_u32(end - TR_SIZE, s->reserved_size);
    uint32_t flags = s->reserved_flags;
    if (s->reserved_pos != UINT64_MAX) {
        set_stream_pos(end, s->reserved_pos);
        s->large_head = s->reserved_pos + s->reserved_size;
        flags |= SQ__SMC_FLAG_LARGE;
    }
    store_u32(end - TR_FLAGS, flags);
    s->reserved_flags = 0;
    store_u64(end - TR_TAG, slot_tag(s, s->sst.my_rank, z));
    s->slot_global[z % s->sst.L.window_size] = global;
    s->slots_used = z + 1;
    s->next_index = index + 1;
    s->last_sent_global = global;
    s->reserved = false;
    /* My own message counts as received here at once. */
    s->sst.received[s->sst.my_rank] = s->next_index;
    s->recv_slots[s->sst.my_rank] = s->slots_used;
    store_u64(row(s, s->sst.my_rank) + SQ_SST_OFF_RECEIVED + 8u * s->sst.my_rank, s->next_index);
    store_u64(row(s, s->sst.my_rank) + SQ_SST_OFF_NUM_SENT, s->next_index);
    s->sst.header_dirty = true;
    return 0;
}

void sq__smc_set_flags(struct sq__smc *s, uint32_t flags)
{
    SQ_ASSERT(s->reserved);
    s->reserved_flags = flags;
}

/* My own stall: the loop ticks at least once a heartbeat period while it runs, so a longer gap
 * means this process was stopped, descheduled or blocked. What the others wrote meanwhile has
 * not been read yet (the transport lands it after this tick), so their heartbeat clocks move on
 * by the excess: only time this member was there to watch counts against them. A member that
 * counted its own stall would suspect everyone at once after a whole-machine stall, and stop as
 * a minority of one. Only the excess over a period is forgiven, so that a loop that is slow on
 * every turn still suspects a dead member in the end. */
static void forgive_own_stall(struct sq__smc *s, uint64_t now_us)
{
    uint64_t gap = now_us > s->last_tick_us ? now_us - s->last_tick_us : 0;
    s->last_tick_us = now_us;
    bool first = !s->ticked;
    s->ticked = true;
    if (gap <= s->hb_period_us || s->hb_timeout_us == 0) {
        return;
    }
    uint64_t excess = gap - s->hb_period_us;
    for (uint32_t k = 0; k < s->sst.L.nmembers; k++) {
        s->seen_hb_at_us[k] = SQ_MIN(s->seen_hb_at_us[k] + excess, now_us);
    }
    if (s->fence_since_us != 0) {
        s->fence_since_us = SQ_MIN(s->fence_since_us + excess, now_us + 1);
    }
    if (gap >= s->hb_timeout_us / 2 && !first) {
        sq__log(SQ_LOG_WARN,
                "member %u: its event loop did not run for %llu ms (the process was stopped or "
                "descheduled, or the loop blocked); that time is not counted against the others",
                s->sst.member_ids[s->sst.my_rank], (unsigned long long)(gap / 1000));
        if (s->sst.counts != NULL) {
            atomic_fetch_add_explicit(&s->sst.counts->own_stalls, 1, memory_order_relaxed);
            uint64_t longest =
                atomic_load_explicit(&s->sst.counts->longest_stall_us, memory_order_relaxed);
            if (gap > longest) {
                atomic_store_explicit(&s->sst.counts->longest_stall_us, gap, memory_order_relaxed);
            }
        }
    }
}

void sq__smc_tick(struct sq__smc *s, uint64_t now_us)
{
    s->now_us = now_us;
    if (s->data_only) {
        return;
    }
    forgive_own_stall(s, now_us);
    if (now_us - s->last_hb_us >= s->hb_period_us) {
        uint8_t *hb = row(s, s->sst.my_rank) + SQ_SST_OFF_HEARTBEAT;
        store_u64(hb, load_u64(hb) + 1);
        s->sst.header_dirty = true;
        s->last_hb_us = now_us;
    }
    if (s->hb_timeout_us == 0) {
        return;
    }
    for (uint32_t k = 0; k < s->sst.L.nmembers; k++) {
        if (k == s->sst.my_rank || (s->sst.suspected >> k) & 1u) {
            continue;
        }
        uint64_t hb = sq__sst_col(&s->sst, k, SQ_SST_OFF_HEARTBEAT);
        if (hb != s->seen_hb[k]) {
            s->seen_hb[k] = hb;
            s->seen_hb_at_us[k] = now_us;
        } else if (now_us - s->seen_hb_at_us[k] > s->hb_timeout_us + 2 * s->hb_period_us) {
            /* A heartbeat moves once a period, so a member stalled for just under the timeout
             * shows a still value for up to a period more, and its next one takes up to a period
             * to be read: two periods of slack keep any stall shorter than the timeout from
             * being taken for a failure. */
            sq__sst_suspect_why(&s->sst, k, SQ_SUSPECT_HEARTBEAT,
                                "its heartbeat stayed at %llu for %llu ms (timeout %llu ms plus "
                                "two heartbeat periods)",
                                (unsigned long long)hb,
                                (unsigned long long)((now_us - s->seen_hb_at_us[k]) / 1000),
                                (unsigned long long)(s->hb_timeout_us / 1000));
        }
    }
}

bool sq__smc_drained(const struct sq__smc *s)
{
    return s->last_sent_global == UINT64_MAX || s->next_deliver > s->last_sent_global;
}

bool sq__smc_all_caught_up(struct sq__smc *s)
{
    return min_delivered(s) >= s->next_deliver;
}

/* Lazy changes. Every change to my row used to go out at the end of the poll that made it, and
 * each such push is a write to every other member, which on TCP is a send, a wake-up and a
 * completion at both ends. Others act on only some of my row: my prefix (sq__sst_prefix: what
 * their deliveries wait for), num_sent (my messages and nulls), heartbeat, persisted, and the
 * view change's columns. A change to my delivered counter only frees the senders' slots, and a
 * received counter that leaves my prefix where it was (another sender's nulls, while an earlier
 * index is still missing) moves nothing of theirs. Such changes wait for the next push, which
 * carries the whole header, or at most lazy_us, or until my delivered counter is lazy_gap ahead
 * of what I last pushed, or a view change starts. With one sender at three members this halves
 * the writes of a message: the pushes a member made on hearing the others' nulls, and on
 * delivering, ride on its next message's push instead. */
static void mark_lazy(struct sq__smc *s)
{
    if (s->lazy_us == 0) {
        s->sst.header_dirty = true;
    } else if (!s->sst.header_lazy) {
        s->sst.header_lazy = true;
        s->sst.lazy_since_us = s->now_us;
    }
}

/* Turns lazy changes into a push when one of them is due (see mark_lazy). */
static void settle_lazy(struct sq__smc *s)
{
    struct sq__sst *t = &s->sst;
    if (!t->header_lazy || t->header_dirty) {
        return;
    }
    uint64_t delivered = load_u64(row(s, t->my_rank) + SQ_SST_OFF_DELIVERED);
    if (t->phase != SQ_SST_RUNNING || sq__sst_prefix(t, t->my_rank) > t->pushed_prefix ||
        delivered - t->pushed_delivered >= s->lazy_gap ||
        s->now_us - t->lazy_since_us >= s->lazy_us) {
        t->header_dirty = true;
    }
}

uint64_t sq__smc_lazy_deadline(const struct sq__smc *s)
{
    if (!s->sst.header_lazy || s->sst.header_dirty) {
        return UINT64_MAX;
    }
    return s->sst.lazy_since_us + s->lazy_us;
}

/* Consumes the slots of sender `r` that have arrived; returns how many, or an error when the
 * sender's row breaks the protocol. */
static int receive_from(struct sq__smc *s, uint32_t r)
{
    if (!sq__sst_row_valid(&s->sst, r)) {
        return 0;
    }
    /* num_sent first: every slot the sender wrote before it is already here (FIFO links). */
    uint64_t ns = load_u64(row(s, r) + SQ_SST_OFF_NUM_SENT);
    ns = s->seen_num_sent[r] = SQ_MAX(ns, s->seen_num_sent[r]);
    int got = 0;
    bool waiting = false; /* a large message's slot is here, not yet all of its payload */
    for (uint32_t k = 0; k < s->sst.L.window_size; k++) {
        uint64_t z = s->recv_slots[r];
        const uint8_t *end = slot_end(s, r, z);
        if (load_u64(end - TR_TAG) != slot_tag(s, r, z)) {
            break;
        }
        uint64_t index = load_u64(end - TR_INDEX);
        uint32_t size = load_u32(end - TR_SIZE);
        bool large = is_large(load_u32(end - TR_FLAGS));
        uint64_t pos = 0;
        if (index < s->sst.received[r] ||
            (large ? !large_pos(s, end, size, &pos) : size > s->sst.L.max_smc_payload)) {
            return sq__sst_fail(&s->sst, SQ_ETRANSPORT,
                                "member %u sent a bad slot %llu (index %llu after %llu, size %u)",
                                s->sst.member_ids[r], (unsigned long long)z,
                                (unsigned long long)index, (unsigned long long)s->sst.received[r],
                                size);
        }
        if (large && source_fwd(s, r) < pos + size) {
            waiting = true; /* received only once the whole payload is here */
            break;
        }
        s->sst.received[r] = index + 1;
        s->recv_slots[r] = z + 1;
        s->highest_real = SQ_MAX(s->highest_real, index * s->sst.L.nmembers + r);
        s->any_real = true;
        got++;
    }
    if (ns > s->sst.received[r] && !waiting) {
        s->sst.received[r] = ns;
        got++;
    }
    if (got > 0) {
        store_u64(row(s, s->sst.my_rank) + SQ_SST_OFF_RECEIVED + 8u * r, s->sst.received[r]);
        mark_lazy(s); /* urgent if it moves my prefix: settle_lazy decides */
    }
    return got;
}

/* When another member's real message is past my next index, my missing indexes would hold up
 * its delivery: assign them as null messages. An idle member (none of its own messages waiting
 * for delivery) goes on through the round after that message's (a round: one index of every
 * sender).
 *
 * Why a round ahead: filling only up to the message leaves my index of the sender's next round
 * open, so the sender's next message would wait for this member to hear of it and for every other
 * member to hear of my null: three one-way hops before it is stable instead of a round trip. A
 * sender that keeps sending (one client at one member) would pay that on every message. A member
 * that sends itself does not skip ahead: its own next message would then land a round later and
 * wait for the others in turn. Only real messages count, never others' nulls: otherwise idle
 * members would chase each other's nulls round after round, and a sender would null out its own
 * next index on seeing the others' look-ahead. */
static int fill_nulls(struct sq__smc *s)
{
    if (s->reserved || !s->any_real) {
        return 0; /* an open reservation will take the next index itself */
    }
    const uint64_t n = s->sst.L.nmembers;
    const uint64_t h = s->highest_real;
    uint64_t mine = s->next_index * n + s->sst.my_rank;
    uint64_t k = mine > h ? 0 : (h - s->sst.my_rank) / n + 1;
    if (sq__smc_drained(s)) {
        k = SQ_MAX(k, h / n + 2);
    }
    if (k <= s->next_index) {
        return 0;
    }
    SQ_ASSERT(k * n + s->sst.my_rank > h);
    s->next_index = k;
    s->sst.received[s->sst.my_rank] = k;
    store_u64(row(s, s->sst.my_rank) + SQ_SST_OFF_RECEIVED + 8u * s->sst.my_rank, k);
    store_u64(row(s, s->sst.my_rank) + SQ_SST_OFF_NUM_SENT, k);
    s->sst.header_dirty = true;
    return 1;
}

/* The first global index not yet received by every member. */
static uint64_t stable_prefix(struct sq__smc *s)
{
    uint64_t stable = UINT64_MAX;
    for (uint32_t j = 0; j < s->sst.L.nmembers; j++) {
        stable = SQ_MIN(stable, sq__sst_prefix(&s->sst, j));
    }
    return stable;
}

/* Global index g in the order, for a cursor over it (the next slot number of each sender, the real
 * messages so far, the last timestamp): true and *m for a real message, false for a null; either
 * way the cursor moves past g. Delivery and `ordered` each keep a cursor, and both come here, so
 * they give every message the same version and timestamp. */
static bool take_message(struct sq__smc *s, uint64_t g, uint64_t *slots, uint64_t *real,
                         uint64_t *last_ts, sq_message *m)
{
    const uint64_t n = s->sst.L.nmembers;
    uint32_t r = (uint32_t)(g % n);
    uint64_t i = g / n;
    uint64_t z = slots[r];
    if (z >= s->recv_slots[r]) {
        return false; /* no slot carries index i: a null (received, so the sender assigned it) */
    }
    const uint8_t *end = slot_end(s, r, z);
    uint64_t index = load_u64(end - TR_INDEX);
    SQ_ASSERT(index >= i);
    if (index != i) {
        return false;
    }
    uint32_t size = load_u32(end - TR_SIZE);
    uint32_t flags = load_u32(end - TR_FLAGS);
    const uint8_t *data = end - SQ_SST_TRAILER_BYTES - SQ_ALIGN8((size_t)size);
    if (is_large(flags)) {
        data = ring(s, r) + ring_at(s, stream_pos(end));
        flags &= ~SQ__SMC_FLAG_LARGE;
    }
    /* Every member computes the same timestamp from the same order. */
    uint64_t next = *last_ts + (*last_ts != UINT64_MAX);
    uint64_t ts = SQ_MAX(load_u64(end - TR_TS), next);
    *last_ts = ts;
    *m = (sq_message){
        .sender_id = s->sst.member_ids[r],
        .sender_rank = r,
        .index = g,
        .version = ((uint64_t)s->sst.view_id << 32) | *real,
        .data = data,
        .size = size,
        .flags = flags,
        .subgroup = s->subgroup,
        .shard = s->shard,
        .timestamp = ts,
    };
    (*real)++;
    slots[r] = z + 1;
    return true;
}

/* Hands `ordered` the next global index (nothing for a null). */
static void order_one(struct sq__smc *s)
{
    sq_message m;
    uint64_t g = s->next_ordered;
    s->next_ordered = g + 1;
    if (take_message(s, g, s->ordered_slots, &s->ordered_real, &s->ordered_last_ts, &m)) {
        s->ordered(s->ordered_arg, &m);
    }
}

/* Hands `ordered` every global index below `limit` (this member's received prefix), at most a
 * batch. */
static int order_upto(struct sq__smc *s, uint64_t limit)
{
    uint32_t done = 0;
    while (s->next_ordered < limit && done < SQ_SMC_MAX_DELIVER_BATCH &&
           s->ordered_real < UINT32_MAX) {
        order_one(s);
        done++;
    }
    return done > 0;
}

/* Delivers, in order, every global index below `stable` (at most a batch). */
static int deliver_upto(struct sq__smc *s, uint64_t stable)
{
    uint32_t done = 0;
    bool large = false;
    while (s->next_deliver < stable && done < SQ_SMC_MAX_DELIVER_BATCH) {
        uint64_t g = s->next_deliver;
        if (s->ordered != NULL && s->next_ordered == g) {
            order_one(s); /* `ordered` sees every message before `deliver` does */
        }
        if (s->delivered_real >= UINT32_MAX) {
            /* The version's low half counts a view's messages: it must not wrap. */
            sq__sst_fail(&s->sst, SQ_ESTATE,
                         "2^32 messages in one view: versions would wrap "
                         "(a view change resets the count)");
            break;
        }
        sq_message m;
        bool real =
            take_message(s, g, s->deliver_slots, &s->delivered_real, &s->last_timestamp, &m);
        /* Advance first: the callback may send, and must see this one delivered. */
        s->next_deliver = g + 1;
        if (real && s->deliver != NULL) {
            s->deliver(s->deliver_arg, &m);
        }
        /* a large message's sender waits for its ring space: no delay for that */
        large |= real && m.size > s->sst.L.max_smc_payload;
        done++;
    }
    if (done > 0) {
        store_u64(row(s, s->sst.my_rank) + SQ_SST_OFF_DELIVERED, s->next_deliver);
        if (large) {
            s->sst.header_dirty = true;
        } else {
            mark_lazy(s); /* frees the senders' slots only */
        }
    }
    return (int)done;
}

/* Pushes the slots committed since the last poll, in order, ahead of the header that counts
 * them: commit only fills the slot, so that every transport call comes from the poller. */
static int push_slots(struct sq__smc *s)
{
    while (s->pushed_slots < s->slots_used) {
        const uint8_t *end = slot_end(s, s->sst.my_rank, s->pushed_slots);
        size_t body =
            is_large(load_u32(end - TR_FLAGS)) ? 8u : SQ_ALIGN8((size_t)load_u32(end - TR_SIZE));
        size_t len = body + SQ_SST_TRAILER_BYTES;
        int rc = sq__sst_push(&s->sst, sq__sst_offset(&s->sst, end) - len, len, false);
        if (rc != 0) {
            return rc;
        }
        s->pushed_slots++;
    }
    return 0;
}

/* The next view reuses the memory of the view before this one, so a write of that older view
 * still in flight from a member would land in the new table. A member's writes arrive in order:
 * once its row of this view is here, its older writes are too. So the next view waits for the row
 * of every member it keeps; one that stays silent past the heartbeat timeout gets its link
 * closed instead (nothing it sent lands after that), and the next view will remove it. */
static bool fenced(struct sq__smc *s)
{
    if (s->data_only) {
        return true; /* the control table's fence covers the member's every write */
    }
    uint64_t missing = 0;
    for (uint32_t r = 0; r < s->sst.L.nmembers; r++) {
        if (r != s->sst.my_rank && !((s->sst.decision.removed >> r) & 1u) &&
            !sq__sst_row_valid(&s->sst, r)) {
            missing |= 1ull << r;
        }
    }
    missing &= ~s->fence_cut;
    if (missing == 0) {
        return true;
    }
    if (s->fence_since_us == 0) {
        s->fence_since_us = s->now_us + 1;
        return false;
    }
    if (s->hb_timeout_us > 0 && s->now_us + 1 - s->fence_since_us > s->hb_timeout_us) {
        s->fence_cut |= missing;
        return true;
    }
    return false;
}

/* After the view change is decided: deliver exactly up to the trim, then the next view may be
 * installed. Everything below the trim arrived here (the trim is a minimum over the survivors'
 * frozen counters, mine included), so no stability check is needed. */
static int deliver_trim(struct sq__smc *s)
{
    uint64_t trim = s->sst.decision.trim;
    if (s->next_deliver > trim || sq__sst_prefix(&s->sst, s->sst.my_rank) < trim) {
        return sq__sst_fail(
            &s->sst, SQ_ETRANSPORT,
            "view change trim %llu is inconsistent with this member (delivered %llu, "
            "received %llu)",
            (unsigned long long)trim, (unsigned long long)s->next_deliver,
            (unsigned long long)sq__sst_prefix(&s->sst, s->sst.my_rank));
    }
    int done = s->hold ? 0 : deliver_upto(s, trim);
    if (s->next_deliver == trim && fenced(s)) {
        s->dropped = s->slots_used - s->deliver_slots[s->sst.my_rank];
        s->sst.phase = SQ_SST_READY;
        done++;
    }
    return done;
}

int sq__smc_poll(struct sq__smc *s)
{
    if (s->sst.failed != 0) {
        return s->sst.failed;
    }
    int events = 0;
    if (s->sst.phase == SQ_SST_RUNNING) {
        for (uint32_t r = 0; r < s->sst.L.nmembers; r++) {
            if (r == s->sst.my_rank) {
                continue;
            }
            int rc = receive_from(s, r);
            if (rc < 0) {
                return rc;
            }
            events += rc;
        }
        events += fill_nulls(s);
        int frc = forward_large(s);
        if (frc < 0) {
            return frc;
        }
        events += frc;
        if (s->ordered != NULL && !s->hold) {
            events += order_upto(s, sq__sst_prefix(&s->sst, s->sst.my_rank));
        }
    }
    /* The view change, on a control table (view.h's sq__view_attach registers it). */
    int vc = s->data_only || s->sst.control_step == NULL ? 0 : s->sst.control_step(&s->sst);
    if (vc < 0) {
        return vc;
    }
    events += vc;
    if (s->hold) {
        /* nothing to deliver until the state is in */
    } else if (s->sst.phase == SQ_SST_RUNNING ||
               (s->sst.phase == SQ_SST_CHANGING && s->sst.decision.ballot == 0)) {
        events += deliver_upto(s, stable_prefix(s));
    } else if (s->sst.phase == SQ_SST_CHANGING) {
        int rc = deliver_trim(s);
        if (rc < 0) {
            return rc;
        }
        events += rc;
    }
    /* Others delivering frees my slots: a sender waiting for its window must hear of it. */
    uint64_t before = s->min_delivered;
    if (min_delivered(s) > before) {
        events++;
    }
    int prc = push_slots(s);
    if (prc != 0) {
        return prc;
    }
    settle_lazy(s);
    int hrc = sq__sst_push_header(&s->sst);
    if (hrc != 0) {
        return hrc;
    }
    return s->sst.failed != 0 ? s->sst.failed : events;
}

uint32_t sq__smc_next_view(const struct sq__smc *s, uint32_t *ids, uint32_t *peers,
                           uint32_t *my_rank)
{
    SQ_ASSERT(s->sst.phase == SQ_SST_READY);
    uint32_t n = 0;
    for (uint32_t r = 0; r < s->sst.L.nmembers; r++) {
        if ((s->sst.decision.removed >> r) & 1u) {
            continue;
        }
        if (r == s->sst.my_rank) {
            *my_rank = n;
        }
        ids[n] = s->sst.member_ids[r];
        peers[n] = s->sst.member_peers[r];
        n++;
    }
    for (uint32_t p = 0; p < s->sst.npeers; p++) {
        if ((s->sst.decision.added >> p) & 1u) {
            ids[n] = s->sst.peer_ids[p];
            peers[n] = p;
            n++;
        }
    }
    return n;
}
