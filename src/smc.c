/* smc.c: the shard's shared state table and totally ordered small-message multicast. */
#include "smc.h"

#include <assert.h>
#include <stdarg.h>

#include "common.h"
#include "hash.h"
#include "view.h"

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

#define row sq__smc_row

/* Tags say "written in this view": the memory of a view is reused two views later, so a tag must
 * not be a value that old contents (old rows, payload bytes) could hold by chance. They are
 * 64-bit hashes of the view, the rank and, for slots, the slot number; the per-rank part is
 * computed once per view (tags are checked on every poll). */
static void make_tags(struct sq__smc *s)
{
    for (uint32_t r = 0; r < s->L.nmembers; r++) {
        uint64_t base = sq__fnv1a_u64(sq__fnv1a_u64(SQ_FNV_INIT, s->view_id), r);
        s->row_tags[r] = sq__mix64(base) | 1u; /* never 0: zeroed memory never matches */
        s->slot_tag_base[r] = sq__mix64(base ^ 0x5107u);
    }
}

static inline uint64_t row_tag(const struct sq__smc *s, uint32_t rank)
{
    return s->row_tags[rank];
}

static inline uint64_t slot_tag(const struct sq__smc *s, uint32_t rank, uint64_t slot_no)
{
    return sq__mix64(s->slot_tag_base[rank] + slot_no * 0x9e3779b97f4a7c15ull) | 1u;
}

bool sq__smc_row_valid(const struct sq__smc *s, uint32_t rank)
{
    return load_u64(row(s, rank) + s->L.header_bytes - 8) == row_tag(s, rank);
}

uint64_t sq__smc_col(const struct sq__smc *s, uint32_t rank, size_t off)
{
    if (rank != s->my_rank && !sq__smc_row_valid(s, rank)) {
        return 0;
    }
    return load_u64(row(s, rank) + off);
}

uint64_t sq__smc_prefix(const struct sq__smc *s, uint32_t rank)
{
    const uint64_t n = s->L.nmembers;
    if (rank != s->my_rank && !sq__smc_row_valid(s, rank)) {
        return 0;
    }
    const uint8_t *rr = row(s, rank) + SQ_SMC_OFF_RECEIVED;
    uint64_t p = UINT64_MAX;
    for (uint32_t r = 0; r < n; r++) {
        uint64_t got = rank == s->my_rank ? s->received[r] : load_u64(rr + 8u * r);
        p = SQ_MIN(p, got * n + r);
    }
    return p;
}

/* Offset of a table pointer in the transport's memory. */
static inline size_t toff(const struct sq__smc *s, const uint8_t *p)
{
    return s->region_offset + (size_t)(p - s->table);
}

static inline uint8_t *slot_end(const struct sq__smc *s, uint32_t rank, uint64_t slot_no)
{
    return row(s, rank) + s->L.header_bytes +
           (size_t)(slot_no % s->L.window_size) * s->L.slot_bytes + s->L.slot_bytes;
}

static_assert(((SQ_SMC_OFF_RECEIVED + 8u * (SQ_SMC_MAX_MEMBERS + 4 * SQ_MAX_SUBGROUPS) + 40u +
                63u) &
               ~63u) <= SQ_TRANSPORT_MAX_COPY,
              "the row header must fit one write_copy");
static_assert(SQ_SMC_MAX_MEMBERS <= 64, "member masks are 64-bit");

/* Trailer fields, relative to the slot's end. */
#define TR_TS (SQ_SMC_TRAILER_BYTES)
#define TR_INDEX (SQ_SMC_TRAILER_BYTES - 8)
#define TR_SIZE (SQ_SMC_TRAILER_BYTES - 16)
#define TR_FLAGS (SQ_SMC_TRAILER_BYTES - 20)
#define TR_TAG 8u

static int set_failed(struct sq__smc *s, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int set_failed(struct sq__smc *s, int err, const char *fmt, ...)
{
    if (s->failed == 0) {
        s->failed = err;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(s->errmsg, sizeof(s->errmsg), fmt, ap);
        va_end(ap);
    }
    return s->failed;
}

int sq__smc_layout(struct sq__smc_layout *L, uint32_t nmembers, uint32_t window_size,
                   uint32_t max_payload)
{
    if (nmembers == 0 || nmembers > SQ_SMC_MAX_MEMBERS || window_size == 0 || max_payload == 0) {
        return SQ_EINVAL;
    }
    memset(L, 0, sizeof(*L));
    L->nmembers = nmembers;
    L->window_size = window_size;
    L->max_payload = max_payload;
    L->off_prefix = SQ_SMC_OFF_RECEIVED + 8u * nmembers;
    L->off_ack = L->off_prefix + 8u * SQ_MAX_SUBGROUPS;
    L->off_have = L->off_ack + 8u * SQ_MAX_SUBGROUPS;
    L->off_have_ts = L->off_have + 8u * SQ_MAX_SUBGROUPS;
    L->off_wedged = L->off_have_ts + 8u * SQ_MAX_SUBGROUPS;
    L->off_promise = L->off_wedged + 8u;
    L->off_learned = L->off_promise + 8u;
    L->off_persisted = L->off_learned + 8u;
    L->header_bytes = (L->off_persisted + 16u + 63u) & ~(size_t)63u;
    L->slot_bytes = SQ_ALIGN8((size_t)max_payload) + SQ_SMC_TRAILER_BYTES;
    L->row_bytes = (L->header_bytes + L->slot_bytes * window_size + 63u) & ~(size_t)63u;
    L->table_bytes = L->row_bytes * nmembers;
    return 0;
}

int sq__smc_init(struct sq__smc *s, const struct sq__smc_params *p, uint8_t *table,
                 struct sq_transport *t, sq_deliver_fn deliver, void *deliver_arg)
{
    memset(s, 0, sizeof(*s));
    int rc = sq__smc_layout(&s->L, p->nmembers, p->window_size, p->max_payload);
    if (rc != 0) {
        return rc;
    }
    if (p->my_rank >= p->nmembers || table == NULL || t == NULL) {
        return SQ_EINVAL;
    }
    s->my_rank = p->my_rank;
    s->view_id = p->view_id;
    for (uint32_t i = 0; i < p->nmembers; i++) {
        s->member_ids[i] = p->member_ids != NULL ? p->member_ids[i] : i;
        s->member_peers[i] = p->member_peers != NULL ? p->member_peers[i] : i;
        s->seen_hb_at_us[i] = p->now_us;
    }
    if (p->peer_ids != NULL) {
        if (p->npeers > SQ_SMC_MAX_MEMBERS) {
            return SQ_EINVAL;
        }
        s->npeers = p->npeers;
        memcpy(s->peer_ids, p->peer_ids, p->npeers * sizeof(uint32_t));
    } else {
        for (uint32_t i = 0; i < p->nmembers; i++) {
            if (s->member_peers[i] >= SQ_SMC_MAX_MEMBERS) {
                return SQ_EINVAL;
            }
            s->peer_ids[s->member_peers[i]] = s->member_ids[i];
            s->npeers = SQ_MAX(s->npeers, s->member_peers[i] + 1);
        }
    }
    s->slot_global = calloc(p->window_size, sizeof(uint64_t));
    if (s->slot_global == NULL) {
        return SQ_ENOMEM;
    }
    s->table = table;
    s->region_offset = p->region_offset;
    s->t = t;
    s->deliver = deliver;
    s->deliver_arg = deliver_arg;
    s->last_sent_global = UINT64_MAX;
    s->hb_timeout_us = p->heartbeat_timeout_us;
    s->hb_period_us = SQ_MAX(p->heartbeat_timeout_us / 5, 1000u);
    s->now_us = s->last_hb_us = p->now_us;
    s->phase = SQ_SMC_RUNNING;
    s->data_only = p->data_only;
    s->subgroup = p->subgroup;
    s->last_timestamp = p->last_timestamp;
    s->shard = p->shard;
    memset(s->shard_of, 0xFF, sizeof(s->shard_of));
    make_tags(s);
    /* The memory may hold an older view's rows: mine starts from zero, the others are ignored
     * until their view tag says they belong to this view. */
    uint8_t *mine = row(s, s->my_rank);
    memset(mine, 0, s->L.header_bytes);
    store_u64(mine + s->L.header_bytes - 8, row_tag(s, s->my_rank));
    s->header_dirty = true;
    return 0;
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
    for (uint32_t j = 0; j < s->L.nmembers; j++) {
        uint64_t d;
        if (j == s->my_rank) {
            d = s->next_deliver;
        } else {
            d = sq__smc_col(s, j, SQ_SMC_OFF_DELIVERED);
            d = s->seen_delivered[j] = SQ_MAX(d, s->seen_delivered[j]);
        }
        m = SQ_MIN(m, d);
    }
    s->min_delivered = m;
    return m;
}

bool sq__smc_can_send(struct sq__smc *s)
{
    if (s->slots_used < s->L.window_size) {
        return true;
    }
    uint64_t prev = s->slot_global[s->slots_used % s->L.window_size];
    return s->min_delivered > prev || min_delivered(s) > prev;
}

int sq__smc_reserve(struct sq__smc *s, size_t size, void **buf)
{
    if (s->failed != 0) {
        return s->failed;
    }
    if (s->reserved) {
        return SQ_EBUSY;
    }
    if (size > s->L.max_payload) {
        return SQ_EMSGSIZE;
    }
    if (s->phase != SQ_SMC_RUNNING) {
        return SQ_EAGAIN; /* wedged: the next view takes new messages */
    }
    if (!sq__smc_can_send(s)) {
        return SQ_EAGAIN;
    }
    s->reserved = true;
    s->reserved_size = (uint32_t)size;
    *buf = slot_end(s, s->my_rank, s->slots_used) - SQ_SMC_TRAILER_BYTES - SQ_ALIGN8(size);
    return 0;
}

static int write_all(struct sq__smc *s, size_t off, size_t len, bool copy)
{
    for (uint32_t j = 0; j < s->L.nmembers; j++) {
        if (j == s->my_rank || (s->suspected >> j) & 1u) {
            continue;
        }
        uint32_t peer = s->member_peers[j];
        int rc = copy ? s->t->vt->write_copy(s->t, peer, off, len)
                      : s->t->vt->write(s->t, peer, off, len);
        if (rc == SQ_EPEER) {
            sq__smc_suspect(s, j); /* the link is gone: that member leaves in the next view */
            continue;
        }
        if (rc != 0) {
            return set_failed(s, rc, "write to member %u failed: %s", s->member_ids[j],
                              sq_strerror(rc));
        }
    }
    return 0;
}

int sq__smc_commit(struct sq__smc *s)
{
    if (s->failed != 0) {
        return s->failed;
    }
    if (!s->reserved) {
        return SQ_ESTATE;
    }
    if (s->phase != SQ_SMC_RUNNING) {
        /* Wedged since the reservation: my counters are frozen, the message cannot go out. */
        s->reserved = false;
        s->reserved_flags = 0;
        return SQ_EVIEWCHANGE;
    }
    uint64_t z = s->slots_used;
    uint8_t *end = slot_end(s, s->my_rank, z);
    uint64_t index = s->next_index;
    uint64_t global = index * s->L.nmembers + s->my_rank;
    /* A hybrid clock: never behind what this shard already delivered. */
    store_u64(end - TR_TS, SQ_MAX(s->stamp, s->last_timestamp + (s->last_timestamp != UINT64_MAX)));
    store_u64(end - TR_INDEX, index);
    store_u32(end - TR_SIZE, s->reserved_size);
    store_u32(end - TR_FLAGS, s->reserved_flags);
    s->reserved_flags = 0;
    store_u64(end - TR_TAG, slot_tag(s, s->my_rank, z));
    s->slot_global[z % s->L.window_size] = global;
    s->slots_used = z + 1;
    s->next_index = index + 1;
    s->last_sent_global = global;
    s->reserved = false;
    /* My own message counts as received here at once. */
    s->received[s->my_rank] = s->next_index;
    s->recv_slots[s->my_rank] = s->slots_used;
    store_u64(row(s, s->my_rank) + SQ_SMC_OFF_RECEIVED + 8u * s->my_rank, s->next_index);
    store_u64(row(s, s->my_rank) + SQ_SMC_OFF_NUM_SENT, s->next_index);
    s->header_dirty = true;
    return 0;
}

void sq__smc_set_flags(struct sq__smc *s, uint32_t flags)
{
    SQ_ASSERT(s->reserved);
    s->reserved_flags = flags;
}

void sq__smc_suspect(struct sq__smc *s, uint32_t rank)
{
    SQ_ASSERT(rank < s->L.nmembers);
    if ((s->suspected >> rank) & 1u || s->phase == SQ_SMC_READY) {
        return;
    }
    s->suspected |= 1ull << rank;
    store_u64(row(s, s->my_rank) + SQ_SMC_OFF_SUSPECTED, s->suspected);
    s->header_dirty = true;
}

void sq__smc_request_join(struct sq__smc *s, uint32_t peer)
{
    SQ_ASSERT(peer < s->npeers);
    if ((s->joins >> peer) & 1u || s->phase == SQ_SMC_READY || s->phase == SQ_SMC_STOPPED) {
        return;
    }
    s->joins |= 1ull << peer;
    store_u64(row(s, s->my_rank) + SQ_SMC_OFF_JOINS, s->joins);
    s->header_dirty = true;
}

void sq__smc_leave(struct sq__smc *s)
{
    s->leaving = true;
    sq__smc_suspect(s, s->my_rank);
}

void sq__smc_tick(struct sq__smc *s, uint64_t now_us)
{
    s->now_us = now_us;
    if (s->data_only) {
        return;
    }
    if (now_us - s->last_hb_us >= s->hb_period_us) {
        uint8_t *hb = row(s, s->my_rank) + SQ_SMC_OFF_HEARTBEAT;
        store_u64(hb, load_u64(hb) + 1);
        s->header_dirty = true;
        s->last_hb_us = now_us;
    }
    if (s->hb_timeout_us == 0) {
        return;
    }
    for (uint32_t k = 0; k < s->L.nmembers; k++) {
        if (k == s->my_rank || (s->suspected >> k) & 1u) {
            continue;
        }
        uint64_t hb = sq__smc_col(s, k, SQ_SMC_OFF_HEARTBEAT);
        if (hb != s->seen_hb[k]) {
            s->seen_hb[k] = hb;
            s->seen_hb_at_us[k] = now_us;
        } else if (now_us - s->seen_hb_at_us[k] > s->hb_timeout_us) {
            sq__smc_suspect(s, k);
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

/* Consumes the slots of sender `r` that have arrived; returns how many, or an error when the
 * sender's row breaks the protocol. */
static int receive_from(struct sq__smc *s, uint32_t r)
{
    if (!sq__smc_row_valid(s, r)) {
        return 0;
    }
    /* num_sent first: every slot the sender wrote before it is already here (FIFO links). */
    uint64_t ns = load_u64(row(s, r) + SQ_SMC_OFF_NUM_SENT);
    ns = s->seen_num_sent[r] = SQ_MAX(ns, s->seen_num_sent[r]);
    int got = 0;
    for (uint32_t k = 0; k < s->L.window_size; k++) {
        uint64_t z = s->recv_slots[r];
        const uint8_t *end = slot_end(s, r, z);
        if (load_u64(end - TR_TAG) != slot_tag(s, r, z)) {
            break;
        }
        uint64_t index = load_u64(end - TR_INDEX);
        uint32_t size = load_u32(end - TR_SIZE);
        if (index < s->received[r] || size > s->L.max_payload) {
            return set_failed(s, SQ_ETRANSPORT,
                              "member %u sent a bad slot %llu (index %llu after %llu, size %u)",
                              s->member_ids[r], (unsigned long long)z, (unsigned long long)index,
                              (unsigned long long)s->received[r], size);
        }
        s->received[r] = index + 1;
        s->recv_slots[r] = z + 1;
        got++;
    }
    if (ns > s->received[r]) {
        s->received[r] = ns;
        got++;
    }
    if (got > 0) {
        store_u64(row(s, s->my_rank) + SQ_SMC_OFF_RECEIVED + 8u * r, s->received[r]);
        s->header_dirty = true;
    }
    return got;
}

/* When others have sent past my next index, my missing messages would hold up delivery: assign
 * null messages up to just past the highest index received. */
static int fill_nulls(struct sq__smc *s)
{
    if (s->reserved) {
        return 0; /* the open reservation will take the next index itself */
    }
    const uint64_t n = s->L.nmembers;
    uint64_t highest = 0;
    bool any = false;
    for (uint32_t r = 0; r < n; r++) {
        if (r != s->my_rank && s->received[r] > 0) {
            uint64_t g = (s->received[r] - 1) * n + r;
            highest = any ? SQ_MAX(highest, g) : g;
            any = true;
        }
    }
    uint64_t mine = s->next_index * n + s->my_rank;
    if (!any || mine > highest) {
        return 0;
    }
    uint64_t k = (highest - s->my_rank) / n + 1;
    SQ_ASSERT(k * n + s->my_rank > highest);
    SQ_ASSERT(k > s->next_index);
    s->next_index = k;
    s->received[s->my_rank] = k;
    store_u64(row(s, s->my_rank) + SQ_SMC_OFF_RECEIVED + 8u * s->my_rank, k);
    store_u64(row(s, s->my_rank) + SQ_SMC_OFF_NUM_SENT, k);
    s->header_dirty = true;
    return 1;
}

/* The first global index not yet received by every member. */
static uint64_t stable_prefix(struct sq__smc *s)
{
    uint64_t stable = UINT64_MAX;
    for (uint32_t j = 0; j < s->L.nmembers; j++) {
        stable = SQ_MIN(stable, sq__smc_prefix(s, j));
    }
    return stable;
}

/* Delivers, in order, every global index below `stable` (at most a batch). */
static int deliver_upto(struct sq__smc *s, uint64_t stable)
{
    const uint64_t n = s->L.nmembers;
    uint32_t done = 0;
    while (s->next_deliver < stable && done < SQ_SMC_MAX_DELIVER_BATCH) {
        uint64_t g = s->next_deliver;
        uint32_t r = (uint32_t)(g % n);
        uint64_t i = g / n;
        uint64_t z = s->deliver_slots[r];
        if (z < s->recv_slots[r]) {
            const uint8_t *end = slot_end(s, r, z);
            uint64_t index = load_u64(end - TR_INDEX);
            SQ_ASSERT(index >= i);
            if (index == i) {
                uint32_t size = load_u32(end - TR_SIZE);
                if (s->delivered_real >= UINT32_MAX) {
                    /* The version's low half counts a view's messages: it must not wrap. */
                    set_failed(s, SQ_ESTATE,
                               "2^32 messages in one view: versions would wrap "
                               "(a view change resets the count)");
                    break;
                }
                /* Every member computes the same timestamp from the same order. */
                uint64_t next = s->last_timestamp + (s->last_timestamp != UINT64_MAX);
                uint64_t ts = SQ_MAX(load_u64(end - TR_TS), next);
                s->last_timestamp = ts;
                sq_message m = {
                    .sender_id = s->member_ids[r],
                    .sender_rank = r,
                    .index = g,
                    .version = ((uint64_t)s->view_id << 32) | s->delivered_real,
                    .data = end - SQ_SMC_TRAILER_BYTES - SQ_ALIGN8((size_t)size),
                    .size = size,
                    .flags = load_u32(end - TR_FLAGS),
                    .subgroup = s->subgroup,
                    .shard = s->shard,
                    .timestamp = ts,
                };
                s->delivered_real++;
                s->deliver_slots[r] = z + 1;
                /* Advance first: the callback may send, and must see this one delivered. */
                s->next_deliver = g + 1;
                if (s->deliver != NULL) {
                    s->deliver(s->deliver_arg, &m);
                }
                done++;
                continue;
            }
        }
        /* No slot carries index i: it is a null (received, so the sender assigned it). */
        s->next_deliver = g + 1;
        done++;
    }
    if (done > 0) {
        store_u64(row(s, s->my_rank) + SQ_SMC_OFF_DELIVERED, s->next_deliver);
        s->header_dirty = true;
    }
    return (int)done;
}

/* Pushes the slots committed since the last poll, in order, ahead of the header that counts
 * them: commit only fills the slot, so that every transport call comes from the poller. */
static int push_slots(struct sq__smc *s)
{
    while (s->pushed_slots < s->slots_used) {
        const uint8_t *end = slot_end(s, s->my_rank, s->pushed_slots);
        size_t len = SQ_ALIGN8((size_t)load_u32(end - TR_SIZE)) + SQ_SMC_TRAILER_BYTES;
        int rc = write_all(s, toff(s, end) - len, len, false);
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
    for (uint32_t r = 0; r < s->L.nmembers; r++) {
        if (r != s->my_rank && !((s->decision.removed >> r) & 1u) && !sq__smc_row_valid(s, r)) {
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
    uint64_t trim = s->decision.trim;
    if (s->next_deliver > trim || sq__smc_prefix(s, s->my_rank) < trim) {
        return set_failed(s, SQ_ETRANSPORT,
                          "view change trim %llu is inconsistent with this member (delivered %llu, "
                          "received %llu)",
                          (unsigned long long)trim, (unsigned long long)s->next_deliver,
                          (unsigned long long)sq__smc_prefix(s, s->my_rank));
    }
    int done = s->hold ? 0 : deliver_upto(s, trim);
    if (s->next_deliver == trim && fenced(s)) {
        s->dropped = s->slots_used - s->deliver_slots[s->my_rank];
        s->phase = SQ_SMC_READY;
        done++;
    }
    return done;
}

int sq__smc_poll(struct sq__smc *s)
{
    if (s->failed != 0) {
        return s->failed;
    }
    int events = 0;
    if (s->phase == SQ_SMC_RUNNING) {
        for (uint32_t r = 0; r < s->L.nmembers; r++) {
            if (r == s->my_rank) {
                continue;
            }
            int rc = receive_from(s, r);
            if (rc < 0) {
                return rc;
            }
            events += rc;
        }
        events += fill_nulls(s);
    }
    int vc = s->data_only ? 0 : sq__view_step(s);
    if (vc < 0) {
        return vc;
    }
    events += vc;
    if (s->hold) {
        /* nothing to deliver until the state is in */
    } else if (s->phase == SQ_SMC_RUNNING ||
               (s->phase == SQ_SMC_CHANGING && s->decision.ballot == 0)) {
        events += deliver_upto(s, stable_prefix(s));
    } else if (s->phase == SQ_SMC_CHANGING) {
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
    if (s->header_dirty) {
        s->header_dirty = false;
        /* The header keeps changing (a sender commits while it is in flight), so it goes as a
         * copy: a header that counted slots not yet written would break FIFO order. */
        int rc = write_all(s, toff(s, row(s, s->my_rank)), s->L.header_bytes, true);
        if (rc != 0) {
            return rc;
        }
    }
    return s->failed != 0 ? s->failed : events;
}

void sq__smc_decide_shard(struct sq__smc *shard, uint64_t ballot, uint64_t removed_peers,
                          uint64_t trim)
{
    if (shard->decision.ballot != 0) {
        return;
    }
    if (shard->phase == SQ_SMC_RUNNING) {
        shard->phase = SQ_SMC_CHANGING;
    }
    uint64_t removed = 0;
    for (uint32_t r = 0; r < shard->L.nmembers; r++) {
        if ((removed_peers >> shard->member_peers[r]) & 1u) {
            removed |= 1ull << r;
        }
    }
    shard->decision = (struct sq__vc_value){.ballot = ballot, .removed = removed, .trim = trim};
}

uint32_t sq__smc_next_view(const struct sq__smc *s, uint32_t *ids, uint32_t *peers,
                           uint32_t *my_rank)
{
    SQ_ASSERT(s->phase == SQ_SMC_READY);
    uint32_t n = 0;
    for (uint32_t r = 0; r < s->L.nmembers; r++) {
        if ((s->decision.removed >> r) & 1u) {
            continue;
        }
        if (r == s->my_rank) {
            *my_rank = n;
        }
        ids[n] = s->member_ids[r];
        peers[n] = s->member_peers[r];
        n++;
    }
    for (uint32_t p = 0; p < s->npeers; p++) {
        if ((s->decision.added >> p) & 1u) {
            ids[n] = s->peer_ids[p];
            peers[n] = p;
            n++;
        }
    }
    return n;
}
