/* sst.c: the shard's shared state table: layout, tags, column reads, own-row writes, pushes. */
#include "sst.h"

#include <assert.h>
#include <stdarg.h>

#include "common.h"
#include "hash.h"
#include "log.h"

/* Columns are read while a peer's write may be landing (RDMA) or half-landed (tcp): every read of
 * a remote column is an atomic load with acquire order (see smc.c). */
#define load_u64 sq__load_u64
#define store_u64 sq__store_u64
#define row sq__sst_row

/* Tags say "written in this view": the memory of a view is reused two views later, so a tag must
 * not be a value that old contents (old rows, payload bytes) could hold by chance. They are
 * 64-bit hashes of the view, the rank and, for slots, the slot number; the per-rank part is
 * computed once per view (tags are checked on every poll). */
static void make_tags(struct sq__sst *s)
{
    for (uint32_t r = 0; r < s->L.nmembers; r++) {
        uint64_t base = sq__fnv1a_u64(sq__fnv1a_u64(SQ_FNV_INIT, s->view_id), r);
        s->row_tags[r] = sq__mix64(base) | 1u; /* never 0: zeroed memory never matches */
        s->slot_tag_base[r] = sq__mix64(base ^ 0x5107u);
    }
}

static inline uint64_t row_tag(const struct sq__sst *s, uint32_t rank)
{
    return s->row_tags[rank];
}

bool sq__sst_row_valid(const struct sq__sst *s, uint32_t rank)
{
    return load_u64(row(s, rank) + s->L.header_bytes - 8) == row_tag(s, rank);
}

uint64_t sq__sst_col(const struct sq__sst *s, uint32_t rank, size_t off)
{
    if (rank != s->my_rank && !sq__sst_row_valid(s, rank)) {
        return 0;
    }
    return load_u64(row(s, rank) + off);
}

uint64_t sq__sst_prefix(const struct sq__sst *s, uint32_t rank)
{
    const uint64_t n = s->L.nmembers;
    if (rank != s->my_rank && !sq__sst_row_valid(s, rank)) {
        return 0;
    }
    const uint8_t *rr = row(s, rank) + SQ_SST_OFF_RECEIVED;
    uint64_t p = UINT64_MAX;
    for (uint32_t r = 0; r < n; r++) {
        uint64_t got = rank == s->my_rank ? s->received[r] : load_u64(rr + 8u * r);
        p = SQ_MIN(p, got * n + r);
    }
    return p;
}

static_assert(((SQ_SST_OFF_RECEIVED + 8u * (SQ_SST_MAX_MEMBERS + 4 * SQ_MAX_SUBGROUPS) + 40u +
                63u) &
               ~63u) <= SQ_TRANSPORT_MAX_COPY,
              "the row header must fit one write_copy");
static_assert(SQ_SST_MAX_MEMBERS <= 64, "member masks are 64-bit");

int sq__sst_fail(struct sq__sst *s, int err, const char *fmt, ...)
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

int sq__sst_layout(struct sq__sst_layout *L, uint32_t nmembers, uint32_t window_size,
                   uint32_t max_payload)
{
    return sq__sst_layout_large(L, nmembers, window_size, max_payload, 0, 0);
}

int sq__sst_layout_large(struct sq__sst_layout *L, uint32_t nmembers, uint32_t window_size,
                         uint32_t max_payload, uint32_t max_smc_payload, size_t ring_bytes)
{
    if (nmembers == 0 || nmembers > SQ_SST_MAX_MEMBERS || window_size == 0 || max_payload == 0) {
        return SQ_EINVAL;
    }
    bool large = max_smc_payload != 0 && max_smc_payload < max_payload;
    if (large &&
        (max_smc_payload < 8 || ring_bytes < max_payload || ring_bytes > SQ_SST_MAX_RING_BYTES)) {
        return SQ_EINVAL;
    }
    memset(L, 0, sizeof(*L));
    L->nmembers = nmembers;
    L->window_size = window_size;
    L->max_payload = max_payload;
    L->max_smc_payload = large ? max_smc_payload : max_payload;
    L->off_prefix = SQ_SST_OFF_RECEIVED + 8u * nmembers;
    L->off_ack = L->off_prefix + 8u * SQ_MAX_SUBGROUPS;
    L->off_have = L->off_ack + 8u * SQ_MAX_SUBGROUPS;
    L->off_have_ts = L->off_have + 8u * SQ_MAX_SUBGROUPS;
    L->off_wedged = L->off_have_ts + 8u * SQ_MAX_SUBGROUPS;
    L->off_promise = L->off_wedged + 8u;
    L->off_learned = L->off_promise + 8u;
    L->off_persisted = L->off_learned + 8u;
    L->header_bytes = (L->off_persisted + 16u + 63u) & ~(size_t)63u;
    L->slot_bytes = SQ_ALIGN8((size_t)L->max_smc_payload) + SQ_SST_TRAILER_BYTES;
    L->off_fwd = L->header_bytes + L->slot_bytes * window_size;
    size_t fwd_bytes = large ? 16u * nmembers : 0;
    L->row_bytes = (L->off_fwd + fwd_bytes + 63u) & ~(size_t)63u;
    L->table_bytes = L->row_bytes * nmembers;
    if (large) {
        L->large_ring_bytes = (ring_bytes + 4095u) & ~(size_t)4095u;
        L->large_off = (L->table_bytes + 4095u) & ~(size_t)4095u;
        L->table_bytes = L->large_off + L->large_ring_bytes * nmembers;
    }
    return 0;
}

int sq__sst_init(struct sq__sst *s, const struct sq__sst_params *p, uint8_t *table,
                 struct sq_transport *t)
{
    memset(s, 0, sizeof(*s));
    int rc = sq__sst_layout_large(&s->L, p->nmembers, p->window_size, p->max_payload,
                                  p->max_smc_payload, p->large_ring_bytes);
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
    }
    if (p->peer_ids != NULL) {
        if (p->npeers > SQ_SST_MAX_MEMBERS) {
            return SQ_EINVAL;
        }
        s->npeers = p->npeers;
        memcpy(s->peer_ids, p->peer_ids, p->npeers * sizeof(uint32_t));
    } else {
        for (uint32_t i = 0; i < p->nmembers; i++) {
            if (s->member_peers[i] >= SQ_SST_MAX_MEMBERS) {
                return SQ_EINVAL;
            }
            s->peer_ids[s->member_peers[i]] = s->member_ids[i];
            s->npeers = SQ_MAX(s->npeers, s->member_peers[i] + 1);
        }
    }
    s->table = table;
    s->region_offset = p->region_offset;
    s->t = t;
    s->phase = SQ_SST_RUNNING;
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

int sq__sst_push(struct sq__sst *s, size_t off, size_t len, bool copy)
{
    int rc = sq__sst_push_to(s, ~0ull, off, len, copy);
    return rc < 0 ? rc : 0;
}

int sq__sst_push_to(struct sq__sst *s, uint64_t ranks, size_t off, size_t len, bool copy)
{
    int wrote = 0;
    for (uint32_t j = 0; j < s->L.nmembers; j++) {
        if (!((ranks >> j) & 1u) || j == s->my_rank || (s->suspected >> j) & 1u) {
            continue;
        }
        uint32_t peer = s->member_peers[j];
        int rc = copy ? s->t->vt->write_copy(s->t, peer, off, len)
                      : s->t->vt->write(s->t, peer, off, len);
        if (rc == SQ_EPEER) {
            /* the link is gone: that member leaves in the next view */
            sq__sst_suspect_why(s, j, SQ_SUSPECT_LINK, "its link failed while writing to it");
            continue;
        }
        if (rc != 0) {
            return sq__sst_fail(s, rc, "write to member %u failed: %s", s->member_ids[j],
                                sq_strerror(rc));
        }
        wrote++;
    }
    return wrote;
}

int sq__sst_push_header(struct sq__sst *s)
{
    if (s->header_dirty) {
        s->header_dirty = false;
        s->header_lazy = false; /* whatever was waiting goes out in this write */
        s->lazy_since_us = 0;
        s->pushed_prefix = sq__sst_prefix(s, s->my_rank);
        s->pushed_delivered = load_u64(row(s, s->my_rank) + SQ_SST_OFF_DELIVERED);
        /* The header keeps changing (a sender commits while it is in flight), so it goes as a
         * copy: a header that counted slots not yet written would break FIFO order. */
        int rc = sq__sst_push(s, sq__sst_offset(s, row(s, s->my_rank)), s->L.header_bytes, true);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

void sq__sst_suspect(struct sq__sst *s, uint32_t rank)
{
    SQ_ASSERT(rank < s->L.nmembers);
    if ((s->suspected >> rank) & 1u || s->phase == SQ_SST_READY) {
        return;
    }
    s->suspected |= 1ull << rank;
    store_u64(row(s, s->my_rank) + SQ_SST_OFF_SUSPECTED, s->suspected);
    s->header_dirty = true;
}

void sq__sst_suspect_why(struct sq__sst *s, uint32_t rank, enum sq__suspect_cause cause,
                         const char *fmt, ...)
{
    SQ_ASSERT(rank < s->L.nmembers);
    SQ_ASSERT(cause < SQ_SUSPECT_CAUSES);
    if ((s->suspected >> rank) & 1u || s->phase == SQ_SST_READY) {
        return;
    }
    char why[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    sq__log(SQ_LOG_WARN, "member %u suspects member %u in view %u: %s", s->member_ids[s->my_rank],
            s->member_ids[rank], s->view_id, why);
    if (s->counts != NULL) {
        atomic_fetch_add_explicit(&s->counts->by_cause[cause], 1, memory_order_relaxed);
    }
    sq__sst_suspect(s, rank);
}

void sq__sst_request_join(struct sq__sst *s, uint32_t peer)
{
    SQ_ASSERT(peer < s->npeers);
    if ((s->joins >> peer) & 1u || s->phase == SQ_SST_READY || s->phase == SQ_SST_STOPPED) {
        return;
    }
    s->joins |= 1ull << peer;
    store_u64(row(s, s->my_rank) + SQ_SST_OFF_JOINS, s->joins);
    s->header_dirty = true;
}
