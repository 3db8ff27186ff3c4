/* view.c: the view-change protocol (wedge, Paxos over the table, ragged trim). See view.h. */
#include "view.h"

#include <string.h>

#include "common.h"
#include "hash.h"

uint64_t sq__vc_check(const struct sq__vc_value *v)
{
    uint64_t h = SQ_FNV_INIT;
    h = sq__fnv1a_u64(h, v->ballot);
    h = sq__fnv1a_u64(h, v->removed);
    h = sq__fnv1a_u64(h, v->added);
    h = sq__fnv1a_u64(h, v->trim);
    for (uint32_t k = 0; k < SQ_MAX_SHARDS; k++) {
        h = sq__fnv1a_u64(h, v->trims[k]);
    }
    return h | 1u; /* never 0, so a zeroed row never checks */
}

/* Reads a proposal or acceptance from a row; false when absent or half-landed. */
static bool read_value(const struct sq__sst *s, uint32_t rank, size_t off, struct sq__vc_value *v)
{
    if (rank != s->my_rank && !sq__sst_row_valid(s, rank)) {
        return false;
    }
    const uint8_t *p = sq__sst_row(s, rank) + off;
    v->ballot = sq__load_u64(p);
    v->removed = sq__load_u64(p + 8);
    v->added = sq__load_u64(p + 16);
    v->trim = sq__load_u64(p + 24);
    for (uint32_t k = 0; k < SQ_MAX_SHARDS; k++) {
        v->trims[k] = sq__load_u64(p + 32 + 8 * k);
    }
    v->check = sq__load_u64(p + 32 + 8 * SQ_MAX_SHARDS);
    return v->ballot != 0 && v->check == sq__vc_check(v);
}

static void write_value(struct sq__sst *s, size_t off, const struct sq__vc_value *v)
{
    uint8_t *p = sq__sst_row(s, s->my_rank) + off;
    sq__store_u64(p, v->ballot);
    sq__store_u64(p + 8, v->removed);
    sq__store_u64(p + 16, v->added);
    sq__store_u64(p + 24, v->trim);
    for (uint32_t k = 0; k < SQ_MAX_SHARDS; k++) {
        sq__store_u64(p + 32 + 8 * k, v->trims[k]);
    }
    sq__store_u64(p + 32 + 8 * SQ_MAX_SHARDS, v->check);
    s->header_dirty = true;
}

static bool same(const struct sq__vc_value *a, const struct sq__vc_value *b)
{
    return a->ballot == b->ballot && a->removed == b->removed && a->added == b->added &&
           a->trim == b->trim && memcmp(a->trims, b->trims, sizeof(a->trims)) == 0;
}

static int stop(struct sq__sst *s, int reason)
{
    s->phase = SQ_SST_STOPPED;
    s->stop_reason = reason;
    return 1;
}

/* Suspicions and join requests spread: whatever an unsuspected member has, I adopt. */
static int merge_suspicions(struct sq__sst *s)
{
    uint64_t before = s->suspected;
    uint64_t joins_before = s->joins;
    for (uint32_t k = 0; k < s->L.nmembers; k++) {
        if (k == s->my_rank || (s->suspected >> k) & 1u) {
            continue;
        }
        uint64_t theirs = sq__sst_col(s, k, SQ_SST_OFF_SUSPECTED);
        uint64_t joins = sq__sst_col(s, k, SQ_SST_OFF_JOINS);
        if (theirs >> s->L.nmembers != 0 || (s->npeers < 64 && joins >> s->npeers != 0)) {
            continue; /* not masks over this view: ignore the garbage */
        }
        for (uint32_t p = 0; p < s->npeers; p++) {
            if ((joins >> p) & 1u) {
                sq__sst_request_join(s, p);
            }
        }
        for (uint32_t r = 0; r < s->L.nmembers; r++) {
            if ((theirs >> r) & 1u && r != s->my_rank) {
                sq__sst_suspect_why(s, r, SQ_SUSPECT_RELAYED, "member %u suspects it",
                                    s->member_ids[k]);
            } else if ((theirs >> r) & 1u) {
                sq__sst_suspect(s, r); /* it suspects me: I cannot be in its next view */
            }
        }
    }
    return s->suspected != before || s->joins != joins_before;
}

/* The leader's side: once every unsuspected member is wedged and follows my ballot, fix the
 * proposal, adopting a value some of them already accepted. */
static int lead(struct sq__sst *s, uint64_t ballot)
{
    uint8_t *mine = sq__sst_row(s, s->my_rank);
    if (sq__load_u64(mine + SQ_SST_OFF_PREPARE) != ballot) {
        sq__store_u64(mine + SQ_SST_OFF_PREPARE, ballot);
        s->header_dirty = true;
    }
    if (s->prop.ballot == ballot) {
        return 0; /* a leader never changes its proposal within its ballot */
    }
    struct sq__vc_value best = {0};
    uint64_t trim = UINT64_MAX;
    uint64_t trims[SQ_MAX_SHARDS];
    for (uint32_t k = 0; k < SQ_MAX_SHARDS; k++) {
        trims[k] = UINT64_MAX;
    }
    for (uint32_t k = 0; k < s->L.nmembers; k++) {
        if ((s->suspected >> k) & 1u) {
            continue;
        }
        if (sq__sst_col(s, k, s->L.off_wedged) != 1 ||
            sq__sst_col(s, k, s->L.off_promise) != ballot) {
            return 0; /* wait: everyone I do not suspect must freeze and follow me */
        }
        struct sq__vc_value acc;
        if (read_value(s, k, SQ_SST_OFF_ACC, &acc) && acc.ballot > best.ballot) {
            best = acc;
        }
        trim = SQ_MIN(trim, sq__sst_prefix(s, k));
        /* Each shard's trim: the least that its surviving members received, everything before
         * it included (frozen and published when they wedged). */
        for (uint32_t g = 0; g < s->nsubgroups; g++) {
            uint32_t flat = s->shard_of[g][k];
            if (flat < SQ_MAX_SHARDS) {
                trims[flat] = SQ_MIN(trims[flat], sq__sst_col(s, k, s->L.off_prefix + 8u * g));
            }
        }
    }
    struct sq__vc_value v = {
        .ballot = ballot, .removed = s->suspected, .added = s->joins, .trim = trim};
    for (uint32_t k = 0; k < SQ_MAX_SHARDS; k++) {
        v.trims[k] = trims[k] == UINT64_MAX ? 0 : trims[k]; /* no survivor: nobody delivers */
    }
    for (uint32_t r = 0; r < s->L.nmembers; r++) {
        if ((s->joins >> s->member_peers[r]) & 1u) {
            v.removed |= 1ull << r; /* a rejoining member replaces its old incarnation */
        }
    }
    if (v.removed >> s->my_rank & 1u) {
        return 0; /* cannot happen while I lead: I would have stopped */
    }
    if (best.ballot != 0) {
        v.removed = best.removed; /* Paxos: a value that may be chosen is carried forward */
        v.added = best.added;
        v.trim = best.trim;
        memcpy(v.trims, best.trims, sizeof(v.trims));
        s->vc_adopted++;
    }
    v.check = sq__vc_check(&v);
    s->prop = v;
    write_value(s, SQ_SST_OFF_PROP, &v);
    return 1;
}

/* The acceptor's side: promise to my leader's ballot, accept its proposal. */
static int follow(struct sq__sst *s, uint32_t leader, uint64_t ballot)
{
    int changed = 0;
    if (s->promise < ballot && sq__sst_col(s, leader, SQ_SST_OFF_PREPARE) == ballot) {
        s->promise = ballot;
        sq__store_u64(sq__sst_row(s, s->my_rank) + s->L.off_promise, ballot);
        s->header_dirty = true;
        changed = 1;
    }
    struct sq__vc_value prop;
    if (s->promise == ballot && read_value(s, leader, SQ_SST_OFF_PROP, &prop) &&
        prop.ballot == ballot && !same(&prop, &s->acc) &&
        (s->on_accept == NULL || s->on_accept(s->on_accept_arg, &prop) == 0)) {
        s->acc = prop;
        write_value(s, SQ_SST_OFF_ACC, &prop);
        changed = 1;
    }
    return changed;
}

/* The learner's side: a value accepted by a majority of the view is decided; so is a value a
 * member that learned it reports (members that move on to the next view stop answering in this
 * one, so a laggard must be able to learn from a single row). */
static bool learn(struct sq__sst *s, uint32_t quorum)
{
    struct sq__vc_value vals[SQ_SST_MAX_MEMBERS];
    bool have[SQ_SST_MAX_MEMBERS];
    for (uint32_t k = 0; k < s->L.nmembers; k++) {
        have[k] = read_value(s, k, SQ_SST_OFF_ACC, &vals[k]);
        if (have[k] && k != s->my_rank && sq__sst_col(s, k, s->L.off_learned) == 1) {
            s->decision = vals[k];
            return true;
        }
    }
    for (uint32_t k = 0; k < s->L.nmembers; k++) {
        if (!have[k]) {
            continue;
        }
        uint32_t votes = 0;
        for (uint32_t j = 0; j < s->L.nmembers; j++) {
            votes += have[j] && same(&vals[j], &vals[k]);
        }
        if (votes >= quorum) {
            s->decision = vals[k];
            return true;
        }
    }
    return false;
}

/* Hands a shard table the decided change of its control table: freezes it if it was not yet and
 * sets its trim (and removes the ranks whose transport peers are in `removed_peers`). */
static void decide_shard(struct sq__sst *shard, uint64_t ballot, uint64_t removed_peers,
                         uint64_t trim)
{
    if (shard->decision.ballot != 0) {
        return;
    }
    if (shard->phase == SQ_SST_RUNNING) {
        shard->phase = SQ_SST_CHANGING;
    }
    uint64_t removed = 0;
    for (uint32_t r = 0; r < shard->L.nmembers; r++) {
        if ((removed_peers >> shard->member_peers[r]) & 1u) {
            removed |= 1ull << r;
        }
    }
    shard->decision = (struct sq__vc_value){.ballot = ballot, .removed = removed, .trim = trim};
}

int sq__view_step(struct sq__sst *s)
{
    if (s->phase == SQ_SST_READY || s->phase == SQ_SST_STOPPED) {
        return 0;
    }
    const uint32_t n = s->L.nmembers;
    int events = merge_suspicions(s);
    if (s->suspected == 0 && s->joins == 0) {
        return events;
    }
    if ((s->suspected >> s->my_rank) & 1u) {
        /* The others will remove me (or I asked them to): I cannot stay. */
        return stop(s, s->leaving ? SQ_ELEFT : SQ_EREMOVED);
    }
    if (s->phase == SQ_SST_RUNNING) {
        /* Wedge: from here my received counters and num_sent never move in this view, nor do
         * those of my shards, whose prefixes go out in the same header write as `wedged`. */
        s->phase = SQ_SST_CHANGING;
        for (uint32_t g = 0; g < s->nsubgroups; g++) {
            struct sq__sst *sh = s->shards[g];
            if (sh != NULL) {
                if (sh->phase == SQ_SST_RUNNING) {
                    sh->phase = SQ_SST_CHANGING;
                }
                sq__store_u64(sq__sst_row(s, s->my_rank) + s->L.off_prefix + 8u * g,
                              sq__sst_prefix(sh, sh->my_rank));
            }
        }
        sq__store_u64(sq__sst_row(s, s->my_rank) + s->L.off_wedged, 1);
        s->header_dirty = true;
        events++;
    }
    if (s->decision.ballot != 0) {
        return events; /* decided: smc delivers up to the trim */
    }
    const uint32_t quorum = n / 2 + 1;
    uint32_t alive = n - (uint32_t)__builtin_popcountll(s->suspected);
    if (alive < quorum) {
        return stop(s, SQ_EPARTITIONED); /* a minority never installs a view */
    }
    uint32_t leader = (uint32_t)__builtin_ctzll(~s->suspected);
    uint64_t ballot = (uint64_t)leader + 1;
    if (leader == s->my_rank) {
        events += lead(s, ballot);
    }
    events += follow(s, leader, ballot);
    if (learn(s, quorum)) {
        events++;
        /* Tell the laggards: acc holds the decision, learned (written after it) vouches for it. */
        s->acc = s->decision;
        write_value(s, SQ_SST_OFF_ACC, &s->decision);
        sq__store_u64(sq__sst_row(s, s->my_rank) + s->L.off_learned, 1);
        if ((s->decision.removed >> s->my_rank) & 1u) {
            return stop(s, SQ_EREMOVED);
        }
        uint64_t removed_peers = 0;
        for (uint32_t r = 0; r < n; r++) {
            if ((s->decision.removed >> r) & 1u) {
                removed_peers |= 1ull << s->member_peers[r];
            }
        }
        for (uint32_t g = 0; g < s->nsubgroups; g++) {
            uint32_t flat = s->shard_of[g][s->my_rank];
            if (s->shards[g] != NULL && flat < SQ_MAX_SHARDS) {
                decide_shard(s->shards[g], s->decision.ballot, removed_peers,
                             s->decision.trims[flat]);
            }
        }
    }
    return events;
}

void sq__view_attach(struct sq__sst *s)
{
    s->control_step = sq__view_step;
}

void sq__view_leave(struct sq__sst *s)
{
    s->leaving = true;
    sq__sst_suspect(s, s->my_rank);
}
