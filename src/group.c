/* group.c: one member's views: the control table, the shard tables and layouts of each view,
 * the first view (formed, restarted or welcomed into) and the next one's installation. See group.h;
 * state handovers are in group_handover.c, the shard logs in group_log.c. */
#include "group.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "group_internal.h"
#include "hash.h"
#include "log.h"
#include "restart.h"
#include "view.h"

#define WELCOME_MAGIC 0x4d4f434c45575153ull /* "SQWELCOM" */
/* The control table carries no messages: one tiny slot per member. */
#define CTL_WINDOW 1u
#define CTL_PAYLOAD 8u
/* How long a change to this member's rows that no other member waits on may wait for the next
 * push (smc.c, "lazy changes"): far longer than a multicast round, so that under load it rides
 * on a push made anyway, and short next to anything a user waits for. */
#define SQ_LAZY_PUSH_US 1000u

static_assert(sizeof(struct sq__welcome) <= SQ_WELCOME_BYTES, "welcome fits its block");
static_assert(sizeof(struct sq__welcome) <= SQ_TRANSPORT_MAX_COPY, "welcome is one write_copy");

int sq__group_fail(struct sq__group *g, int rc, const char *fmt, ...)
{
    if (g->failed == 0) {
        g->failed = rc;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(g->errmsg, sizeof(g->errmsg), fmt, ap);
        va_end(ap);
    }
    return g->failed;
}

static uint64_t welcome_check(const struct sq__welcome *w)
{
    return sq__fnv1a(SQ_FNV_INIT, w, offsetof(struct sq__welcome, check)) | 1u;
}

int sq__group_mem_layout(const struct sq_config *cfg, struct sq__group_mem *mem)
{
    memset(mem, 0, sizeof(*mem));
    struct sq__sst_layout L;
    if (sq__sst_layout(&L, cfg->nmembers, CTL_WINDOW, CTL_PAYLOAD) != 0) {
        return SQ_ECONFIG;
    }
    mem->ctl_region = L.table_bytes;
    size_t off = 2 * L.table_bytes;
    for (uint32_t s = 0; s < cfg->nsubgroups; s++) {
        const struct sq_subgroup_cfg *sg = &cfg->subgroups[s];
        if (sq__sst_layout_large(&L, sq__config_shard_rows(cfg, s), sg->window_size,
                                 sg->max_payload, sg->max_smc_payload,
                                 (size_t)sg->large_buffer_bytes) != 0) {
            return SQ_ECONFIG;
        }
        mem->sg_off[s] = off;
        mem->sg_region[s] = L.table_bytes;
        off += 2 * L.table_bytes;
    }
    mem->welcome_off = off;
    mem->handover_off = off + SQ_WELCOME_BYTES;
    off = mem->handover_off + SQ_HANDOVER_BYTES * SQ_MAX_SUBGROUPS;
    for (uint32_t s = 0; s < cfg->nsubgroups; s++) {
        mem->state_off[s][0] = off;
        mem->state_off[s][1] = off + SQ_ALIGN8(cfg->max_state_bytes);
        off += 2 * SQ_ALIGN8(cfg->max_state_bytes);
    }
    mem->end = off;
    return 0;
}

void sq__group_init(struct sq__group *g, const struct sq_config *cfg, uint8_t *base,
                    struct sq_transport *t, uint32_t self_peer, const uint32_t *peer_ids,
                    uint64_t now_us)
{
    sq_deliver_fn deliver = g->deliver;
    void *deliver_arg = g->deliver_arg;
    sq_state_save_fn save = g->save;
    sq_state_load_fn load = g->load;
    void *state_arg = g->state_arg;
    sq_persisted_fn persisted = g->persisted;
    void *persisted_arg = g->persisted_arg;
    struct sq_disk *disk = g->disk;
    int (*on_accept)(void *, const struct sq__vc_value *) = g->on_accept;
    void *on_accept_arg = g->on_accept_arg;
    memset(g, 0, sizeof(*g));
    g->on_accept = on_accept;
    g->on_accept_arg = on_accept_arg;
    pthread_mutex_init(&g->durable_mu, NULL);
    g->persisted = persisted;
    g->persisted_arg = persisted_arg;
    g->disk = disk != NULL ? disk : sq__disk_posix();
    for (uint32_t s = 0; s < SQ_MAX_SUBGROUPS; s++) {
        g->log_shard[s] = UINT32_MAX;
    }
    g->deliver = deliver;
    g->deliver_arg = deliver_arg;
    g->save = save;
    g->load = load;
    g->state_arg = state_arg;
    g->cfg = cfg;
    g->base = base;
    g->t = t;
    g->self_peer = self_peer;
    g->peer_ids = peer_ids;
    g->now_us = now_us;
    (void)sq__group_mem_layout(cfg, &g->mem);
    uint32_t flat = 0;
    for (uint32_t s = 0; s < cfg->nsubgroups; s++) {
        g->shard_base[s] = flat;
        flat += cfg->subgroups[s].shards;
    }
    sq__assign_clear(&g->assign);
    sq__assign_clear(&g->holders);
}

static void drop_shards(struct sq__group *g)
{
    for (uint32_t s = 0; s < SQ_MAX_SUBGROUPS; s++) {
        sq__group_end_donation(&g->donation[s]);
        if (g->in_shard[s]) {
            sq__smc_fini(&g->shard[s]);
            g->in_shard[s] = false;
        }
        g->awaiting[s] = false;
    }
}

void sq__group_fini(struct sq__group *g)
{
    drop_shards(g);
    for (uint32_t s = 0; s < SQ_MAX_SUBGROUPS; s++) {
        sq__group_drop_state_in(g, s);
    }
    if (g->ctl_ready) {
        sq__smc_fini(&g->ctl);
        g->ctl_ready = false;
    }
}

/* Sets up view `view_id` over layout `assign` (adequate or not); `holders` says who held each
 * shard's state before it. Moves state as the layout requires. */
static int setup_view(struct sq__group *g, uint32_t view_id, uint32_t n, const uint32_t *ids,
                      const uint32_t *peers, uint32_t my_rank, const struct sq__assign *assign,
                      const struct sq__assign *holders, bool adequate)
{
    const struct sq_config *cfg = g->cfg;
    if (g->clock_us != NULL) {
        g->now_us = g->clock_us();
    }
    struct sq__smc_params cp = {.sst = {.nmembers = n,
                                        .my_rank = my_rank,
                                        .window_size = CTL_WINDOW,
                                        .max_payload = CTL_PAYLOAD,
                                        .view_id = view_id,
                                        .member_ids = ids,
                                        .member_peers = peers,
                                        .region_offset = (view_id % 2) * g->mem.ctl_region,
                                        .npeers = cfg->nmembers,
                                        .peer_ids = g->peer_ids},
                                .now_us = g->now_us,
                                .heartbeat_timeout_us =
                                    (uint64_t)cfg->heartbeat_timeout_ms * 1000u,
                                .lazy_us = SQ_LAZY_PUSH_US};
    int rc = sq__smc_init(&g->ctl, &cp, g->base + cp.sst.region_offset, g->t, NULL, NULL);
    if (rc != 0) {
        return sq__group_fail(g, rc, "cannot set up the control table of view %u", view_id);
    }
    g->ctl_ready = true;
    sq__view_attach(&g->ctl.sst); /* the view change runs over the control table */
    g->ctl.sst.counts = &g->suspicions;
    g->ctl.sst.nsubgroups = cfg->nsubgroups;
    g->ctl.sst.on_accept = g->on_accept;
    g->ctl.sst.on_accept_arg = g->on_accept_arg;
    g->assign = *assign;
    g->adequate = adequate;
    g->holders = adequate ? *assign : *holders;
    if (!adequate) {
        return 0; /* no shard runs until members join */
    }
    for (uint32_t s = 0; s < cfg->nsubgroups; s++) {
        for (uint32_t r = 0; r < n; r++) {
            uint8_t k = assign->shard[s][r];
            g->ctl.sst.shard_of[s][r] = k == SQ_SHARD_NONE ? 0xFF : (uint8_t)(g->shard_base[s] + k);
        }
    }
    for (uint32_t s = 0; s < cfg->nsubgroups; s++) {
        const struct sq_subgroup_cfg *sg = &cfg->subgroups[s];
        for (uint32_t k = 0; k < sg->shards; k++) {
            uint32_t ranks[SQ_MAX_MEMBERS], newcomers[SQ_MAX_MEMBERS], nnew = 0;
            uint32_t m = sq__assign_members(assign, n, s, k, ranks);
            uint32_t donor = UINT32_MAX;
            for (uint32_t i = 0; i < m; i++) {
                if (holders->shard[s][ranks[i]] == k) {
                    donor = donor == UINT32_MAX ? ranks[i] : donor;
                } else {
                    newcomers[nnew++] = ranks[i];
                }
            }
            if (nnew > 0 && donor == my_rank) {
                sq__group_start_donation(g, view_id, s, k, newcomers, nnew);
            }
            if (assign->shard[s][my_rank] != k) {
                continue;
            }
            /* My shard of this subgroup: its table, ranks in view order. */
            uint32_t sids[SQ_MAX_MEMBERS], speers[SQ_MAX_MEMBERS], smine = 0;
            for (uint32_t i = 0; i < m; i++) {
                sids[i] = ids[ranks[i]];
                speers[i] = peers[ranks[i]];
                smine = ranks[i] == my_rank ? i : smine;
            }
            struct sq__smc_params sp = {
                .sst = {.nmembers = m,
                        .my_rank = smine,
                        .window_size = sg->window_size,
                        .max_payload = sg->max_payload,
                        .max_smc_payload = sg->max_smc_payload,
                        .large_ring_bytes = (size_t)sg->large_buffer_bytes,
                        .view_id = view_id,
                        .member_ids = sids,
                        .member_peers = speers,
                        .region_offset = g->mem.sg_off[s] + (view_id % 2) * g->mem.sg_region[s],
                        .npeers = cfg->nmembers,
                        .peer_ids = g->peer_ids},
                .now_us = g->now_us,
                .data_only = true,
                .subgroup = s,
                .shard = k,
                .last_timestamp = g->last_ts[s],
                .schedule = sg->large_schedule == SQ_SCHEDULE_STAR ? SQ_SMC_STAR : SQ_SMC_CHAIN,
                .block_bytes = sg->block_size,
                .large_bytes_total = &g->large_bytes_sent,
                .lazy_us = SQ_LAZY_PUSH_US};
            bool newcomer = holders->shard[s][my_rank] != k && donor != UINT32_MAX;
            bool holder = holders->shard[s][my_rank] == k;
            if (sg->persistent && (g->log[s] == NULL || !g->log_ok[s]) &&
                (rc = sq__group_open_log(g, s, k, newcomer, holder)) != 0) {
                return rc;
            }
            if (newcomer && g->log[s] != NULL) {
                /* Tell the donor where my log ends, so it sends only what comes after. */
                uint8_t *row = sq__sst_row(&g->ctl.sst, my_rank);
                struct sq__plog_entry last = sq__plog_last(g->log[s]);
                bool any = sq__plog_count(g->log[s]) > 0;
                sq__store_u64(row + g->ctl.sst.L.off_have + 8u * s, any ? last.version + 1 : 0);
                sq__store_u64(row + g->ctl.sst.L.off_have_ts + 8u * s, any ? last.timestamp : 0);
                g->ctl.sst.header_dirty = true;
            }
            rc = sq__smc_init(&g->shard[s], &sp, g->base + sp.sst.region_offset, g->t,
                              sq__group_deliver, g);
            if (rc != 0) {
                return sq__group_fail(g, rc, "cannot set up shard %u of subgroup %s", k, sg->name);
            }
            if (sg->persistent) {
                sq__smc_set_ordered(&g->shard[s], sq__group_ordered, g);
            }
            g->in_shard[s] = true;
            g->ctl.sst.shards[s] = &g->shard[s].sst;
            if (holders->shard[s][my_rank] != k && donor != UINT32_MAX) {
                g->shard[s].hold = true; /* deliver nothing before the donor's state is in */
                g->awaiting[s] = true;
                g->donor_rank[s] = donor;
                g->chunks_in[s] = 0;
                g->records_in[s] = 0;
                sq__group_drop_state_in(g, s); /* pieces of a handover a view change cut short */
            } else if (holders->shard[s][my_rank] != k && view_id > 0) {
                sq__log(SQ_LOG_WARN,
                        "shard %u of subgroup %s starts empty in view %u: none of "
                        "its earlier members is left to hand its state over",
                        k, sg->name, view_id);
            }
        }
    }
    return 0;
}

/* The first view of a joiner (or of every member of a restart), without its rank yet. */
static void make_welcome(struct sq__welcome *w, uint32_t view_id, uint32_t n, const uint32_t *ids,
                         const uint32_t *peers, const struct sq__assign *assign,
                         const struct sq__assign *holders, bool adequate)
{
    memset(w, 0, sizeof(*w));
    w->magic = WELCOME_MAGIC;
    w->view_id = view_id;
    w->nmembers = n;
    w->adequate = adequate;
    memcpy(w->ids, ids, n * sizeof(uint32_t));
    memcpy(w->peers, peers, n * sizeof(uint32_t));
    w->assign = *assign;
    w->holders = *holders;
}

/* Writes `w` as the welcome of the member of rank r into that member's memory. */
static int send_welcome(struct sq__group *g, struct sq__welcome *w, uint32_t r)
{
    w->my_rank = r;
    w->check = welcome_check(w);
    memcpy(g->base + g->mem.welcome_off, w, sizeof(*w));
    return g->t->vt->write_copy(g->t, w->peers[r], g->mem.welcome_off, sizeof(*w));
}

/* The first view over members `peers` (n of them, tails by the same index): its id and layout.
 * Members keep the shards of their logs; the longest log of each shard holds its history (logs
 * are prefixes of one another: every delivered update was received by every member of its view,
 * and an update that only a member missing now delivered was never persisted). */
static void plan_first(struct sq__group *g, uint32_t n, const struct sq_log_tail *tails,
                       const uint16_t *whole, uint32_t *view_id, struct sq__assign *assign,
                       struct sq__assign *holders, bool *adequate)
{
    struct sq__assign kept;
    sq__assign_clear(&kept);
    sq__assign_clear(holders);
    *view_id = 0;
    for (uint32_t r = 0; tails != NULL && r < n; r++) {
        *view_id = SQ_MAX(*view_id, tails[r].view_next);
    }
    if (*view_id > 0) {
        for (uint32_t s = 0; s < g->cfg->nsubgroups; s++) {
            if (!g->cfg->subgroups[s].persistent) {
                continue;
            }
            /* With `whole` (a restart from a majority): only the members that held a shard's
             * whole history in the last view count for it, when there are any; a longer log
             * elsewhere ends in updates that were never persisted (delivered by a member that
             * missed an earlier restart), and its member cuts them when it receives the shard. */
            uint64_t longest[SQ_MAX_SHARDS] = {0};
            bool by_whole[SQ_MAX_SHARDS] = {false};
            for (uint32_t r = 0; r < n; r++) {
                uint8_t k = tails[r].shard[s];
                uint32_t flat = g->shard_base[s] + k;
                if (k < g->cfg->subgroups[s].shards && whole != NULL && flat < 16 &&
                    (whole[r] >> flat) & 1u) {
                    by_whole[k] = true;
                }
            }
            for (uint32_t r = 0; r < n; r++) {
                uint8_t k = tails[r].shard[s];
                if (k < g->cfg->subgroups[s].shards) {
                    kept.shard[s][r] = k;
                    if (!by_whole[k] || (whole[r] >> (g->shard_base[s] + k)) & 1u) {
                        longest[k] = SQ_MAX(longest[k], tails[r].last[s]);
                    }
                }
            }
            for (uint32_t r = 0; r < n; r++) {
                uint8_t k = tails[r].shard[s];
                if (k < g->cfg->subgroups[s].shards && (longest[k] > 0 || by_whole[k]) &&
                    tails[r].last[s] == longest[k] &&
                    (!by_whole[k] || (whole[r] >> (g->shard_base[s] + k)) & 1u)) {
                    holders->shard[s][r] = k;
                }
            }
        }
    }
    *adequate =
        sq__assign_shards(g->cfg, n, &kept, assign, g->inadequate_why, sizeof(g->inadequate_why));
}

int sq__group_start_first(struct sq__group *g, const struct sq_log_tail *tails)
{
    uint32_t n = g->cfg->nmembers, ids[SQ_MAX_MEMBERS], peers[SQ_MAX_MEMBERS];
    for (uint32_t i = 0; i < n; i++) {
        ids[i] = g->cfg->members[i].id;
        peers[i] = i;
    }
    struct sq__assign holders, assign;
    uint32_t view_id;
    bool adequate;
    plan_first(g, n, tails, NULL, &view_id, &assign, &holders, &adequate);
    if (view_id > 0) {
        sq__log(SQ_LOG_INFO, "restarting from the logs: the first view is %u", view_id);
        int rc = sq__group_replay_logs(g, g->self_peer, &assign);
        if (rc != 0) {
            return rc;
        }
    }
    return setup_view(g, view_id, n, ids, peers, g->self_peer, &assign, &holders, adequate);
}

int sq__group_start_restart(struct sq__group *g, uint32_t present, const struct sq_log_tail *tails)
{
    uint32_t n = 0, ids[SQ_MAX_MEMBERS], peers[SQ_MAX_MEMBERS], my_rank = UINT32_MAX;
    struct sq_log_tail rt[SQ_MAX_MEMBERS];
    uint32_t view_id = 0, accepted = 0;
    for (uint32_t p = 0; p < g->cfg->nmembers; p++) {
        if ((present >> p) & 1u) {
            my_rank = p == g->self_peer ? n : my_rank;
            ids[n] = g->cfg->members[p].id;
            peers[n] = p;
            rt[n] = tails[p];
            view_id = SQ_MAX(view_id, tails[p].vf_view);
            accepted = SQ_MAX(accepted, tails[p].vf_acc_view);
            n++;
        }
    }
    if (my_rank == UINT32_MAX) {
        return sq__group_fail(g, SQ_EINVAL, "a restart without this member");
    }
    /* Who held each shard's whole history in the latest view that counts (a restart's first
     * view that never completed does not, restart.h); the new view's id comes after every
     * view recorded all the same. */
    struct sq_log_tail eff[SQ_MAX_MEMBERS];
    sq__restart_effective_tails(g->cfg, present, tails, eff);
    uint32_t counted = 0;
    for (uint32_t r = 0; r < n; r++) {
        counted = SQ_MAX(counted, eff[peers[r]].vf_view);
    }
    uint16_t whole[SQ_MAX_MEMBERS];
    for (uint32_t r = 0; r < n; r++) {
        const struct sq_log_tail *e = &eff[peers[r]];
        whole[r] = e->vf_view == counted && counted > 0 ? e->vf_mine : 0;
    }
    struct sq__assign holders, assign;
    uint32_t logged;
    bool adequate;
    plan_first(g, n, rt, whole, &logged, &assign, &holders, &adequate);
    /* After every view a member present installed, accepted or logged in, and one more. */
    view_id = SQ_MAX(SQ_MAX(view_id, accepted), logged) + 1;
    struct sq__welcome w;
    make_welcome(&w, view_id, n, ids, peers, &assign, &holders, adequate);
    w.restart = 1;
    for (uint32_t r = 0; r < n; r++) {
        if (r == my_rank) {
            continue;
        }
        int rc = send_welcome(g, &w, r);
        if (rc != 0) {
            return sq__group_fail(g, rc, "cannot send the first view to member %u: %s", ids[r],
                                  sq_strerror(rc));
        }
    }
    memset(g->base + g->mem.welcome_off, 0, sizeof(w));
    int rc = g->t->vt->flush(g->t);
    if (rc != 0) {
        return sq__group_fail(g, rc, "cannot send the first view: %s", sq_strerror(rc));
    }
    sq__log(SQ_LOG_INFO,
            "restarting the group from its disks with %u of %u members: the first "
            "view is %u",
            n, g->cfg->nmembers, view_id);
    rc = sq__group_replay_logs(g, my_rank, &assign);
    if (rc != 0) {
        return rc;
    }
    return setup_view(g, view_id, n, ids, peers, my_rank, &assign, &holders, adequate);
}

/* The welcome in this member's memory, if a whole one has landed. */
static bool read_welcome(const struct sq__group *g, struct sq__welcome *w)
{
    memcpy(w, g->base + g->mem.welcome_off, sizeof(*w));
    return w->magic == WELCOME_MAGIC && w->check == welcome_check(w);
}

bool sq__group_peek_welcome(struct sq__group *g, uint32_t *peers)
{
    struct sq__welcome w;
    if (!read_welcome(g, &w) || !w.restart || w.nmembers == 0 || w.nmembers > g->cfg->nmembers) {
        return false;
    }
    *peers = 0;
    for (uint32_t r = 0; r < w.nmembers; r++) {
        *peers |= w.peers[r] < 32 ? 1u << w.peers[r] : 0;
    }
    return true;
}

int sq__group_try_welcome(struct sq__group *g)
{
    struct sq__welcome w;
    if (!read_welcome(g, &w)) {
        return 0;
    }
    if (w.nmembers == 0 || w.nmembers > g->cfg->nmembers || w.my_rank >= w.nmembers ||
        w.peers[w.my_rank] != g->self_peer) {
        return sq__group_fail(g, SQ_EIO,
                              "the welcome into view %llu makes no sense (%llu members, rank "
                              "%llu)",
                              (unsigned long long)w.view_id, (unsigned long long)w.nmembers,
                              (unsigned long long)w.my_rank);
    }
    for (uint32_t r = 0; r < w.nmembers; r++) {
        if (w.peers[r] >= g->cfg->nmembers) {
            return sq__group_fail(g, SQ_EIO, "the welcome names an unknown member");
        }
    }
    if (!w.adequate) {
        snprintf(g->inadequate_why, sizeof(g->inadequate_why), "a shard is below min_members");
    }
    g->restart_view = w.restart != 0;
    if (w.restart) {
        /* The first view of a restart from the disks: holders replay their logs first. */
        int rc = sq__group_replay_logs(g, (uint32_t)w.my_rank, &w.assign);
        if (rc != 0) {
            return rc;
        }
    }
    int rc = setup_view(g, (uint32_t)w.view_id, (uint32_t)w.nmembers, w.ids, w.peers,
                        (uint32_t)w.my_rank, &w.assign, &w.holders, w.adequate != 0);
    return rc == 0 ? 1 : rc;
}

int sq__group_poll(struct sq__group *g, uint64_t now_us)
{
    if (g->failed != 0) {
        return g->failed;
    }
    g->now_us = now_us;
    int events =
        sq__group_check_handovers(g); /* first: it vouches for a donor that is busy sending */
    if (events < 0) {
        return events;
    }
    for (uint32_t s = 0; s < g->cfg->nsubgroups; s++) {
        int rc = g->donation[s].active ? sq__group_pump_donation(g, s) : 0;
        if (rc < 0) {
            return rc;
        }
        events += rc;
    }
    sq__smc_tick(&g->ctl, now_us);
    int rc = sq__smc_poll(&g->ctl);
    if (rc < 0) {
        return sq__group_fail(g, rc, "%s", g->ctl.sst.errmsg);
    }
    events += rc;
    for (uint32_t s = 0; s < g->cfg->nsubgroups; s++) {
        if (!g->in_shard[s] || g->gate) {
            continue;
        }
        sq__smc_tick(&g->shard[s], now_us); /* a shard's table only takes the time */
        rc = sq__smc_poll(&g->shard[s]);
        if (rc < 0) {
            return sq__group_fail(g, rc, "shard %u of subgroup %s: %s", g->shard[s].shard,
                                  g->cfg->subgroups[s].name, g->shard[s].sst.errmsg);
        }
        events += rc;
        if (g->log[s] != NULL) {
            rc = sq__group_publish_persistence(g, s);
            if (rc < 0) {
                return sq__group_fail(g, rc, "shard %u of subgroup %s: %s", g->shard[s].shard,
                                      g->cfg->subgroups[s].name, g->shard[s].sst.errmsg);
            }
            events += rc;
        }
        /* A shard member whose link broke is suspected here too: the whole view changes. */
        for (uint32_t r = 0; r < g->shard[s].sst.L.nmembers; r++) {
            if ((g->shard[s].sst.suspected >> r) & 1u) {
                for (uint32_t c = 0; c < g->ctl.sst.L.nmembers; c++) {
                    if (g->ctl.sst.member_peers[c] == g->shard[s].sst.member_peers[r] &&
                        c != g->ctl.sst.my_rank) {
                        sq__sst_suspect_why(&g->ctl.sst, c, SQ_SUSPECT_LINK,
                                            "its link broke in shard %u of subgroup %s",
                                            g->shard[s].shard, g->cfg->subgroups[s].name);
                    }
                }
            }
        }
    }
    return g->failed != 0 ? g->failed : events;
}

uint64_t sq__group_lazy_deadline(const struct sq__group *g)
{
    uint64_t t = g->ctl_ready ? sq__smc_lazy_deadline(&g->ctl) : UINT64_MAX;
    for (uint32_t s = 0; s < g->cfg->nsubgroups; s++) {
        if (g->in_shard[s] && !g->gate) {
            t = SQ_MIN(t, sq__smc_lazy_deadline(&g->shard[s]));
        }
    }
    return t;
}

enum sq__sst_phase sq__group_phase(const struct sq__group *g)
{
    if (g->ctl.sst.phase != SQ_SST_READY) {
        return g->ctl.sst.phase;
    }
    for (uint32_t s = 0; s < g->cfg->nsubgroups; s++) {
        /* A newcomer still waiting for its state cannot be a holder in the next view. */
        if ((g->in_shard[s] && (g->shard[s].sst.phase != SQ_SST_READY || g->awaiting[s])) ||
            g->donation[s].active) {
            return SQ_SST_CHANGING;
        }
    }
    return SQ_SST_READY;
}

int sq__group_install(struct sq__group *g)
{
    SQ_ASSERT(sq__group_phase(g) == SQ_SST_READY);
    /* First: a donation of this view's log, and the next view's records, must not find what the
     * trim dropped. */
    for (uint32_t s = 0; s < g->cfg->nsubgroups; s++) {
        if (g->in_shard[s]) {
            int rc = sq__group_cut_undelivered(g, s);
            if (rc != 0) {
                return rc;
            }
        }
    }
    uint32_t ids[SQ_MAX_MEMBERS], peers[SQ_MAX_MEMBERS], my_rank = 0;
    uint32_t n = sq__smc_next_view(&g->ctl, ids, peers, &my_rank);
    uint32_t old_rank[SQ_MAX_MEMBERS];
    for (uint32_t i = 0; i < n; i++) {
        old_rank[i] = UINT32_MAX;
        for (uint32_t r = 0; r < g->ctl.sst.L.nmembers; r++) {
            if (g->ctl.sst.member_peers[r] == peers[i] &&
                !((g->ctl.sst.decision.removed >> r) & 1u)) {
                old_rank[i] = r;
            }
        }
    }
    struct sq__assign kept, holders, assign;
    sq__assign_move(&g->assign, n, old_rank, &kept);
    sq__assign_move(&g->holders, n, old_rank, &holders);
    bool adequate =
        sq__assign_shards(g->cfg, n, &kept, &assign, g->inadequate_why, sizeof(g->inadequate_why));
    uint32_t view_id = g->ctl.sst.view_id + 1;
    uint64_t added = g->ctl.sst.decision.added;
    g->removed_mask = g->ctl.sst.decision.removed;
    g->dropped = 0;
    for (uint32_t s = 0; s < g->cfg->nsubgroups; s++) {
        if (g->in_shard[s]) {
            g->dropped += g->shard[s].dropped;
            g->last_ts[s] = g->shard[s].last_timestamp;
        }
    }
    if (added != 0 && my_rank == 0) {
        struct sq__welcome w;
        make_welcome(&w, view_id, n, ids, peers, &assign, &holders, adequate);
        for (uint32_t r = 0; r < n; r++) {
            if (!((added >> peers[r]) & 1u)) {
                continue;
            }
            int rc = send_welcome(g, &w, r);
            sq__log(rc == 0 ? SQ_LOG_INFO : SQ_LOG_WARN, "welcomed member %u into view %u%s",
                    ids[r], view_id, rc == 0 ? "" : ": its link failed");
        }
    }
    sq__group_fini(g);
    return setup_view(g, view_id, n, ids, peers, my_rank, &assign, &holders, adequate);
}

struct sq__smc *sq__group_shard(struct sq__group *g, uint32_t sg, int *why)
{
    if (sg >= g->cfg->nsubgroups) {
        *why = SQ_EINVAL;
        return NULL;
    }
    if (!g->adequate) {
        *why = SQ_EAGAIN;
        return NULL;
    }
    if (!g->in_shard[sg]) {
        *why = SQ_ENOTSUP;
        return NULL;
    }
    return &g->shard[sg];
}
