/* test_sim_view.c: whole groups of 3-7 members on the simulated network with crashes and
 * partitions at random moments, one seed per run. After every run it checks the virtual
 * synchrony invariants:
 *   - no two members install different views with the same id;
 *   - every view is a majority of the one before it (no minority partition installs a view);
 *   - all members that install view v+1 delivered the same messages in view v, in the same order;
 *   - each sender's messages are delivered in the order sent, with the right payload;
 *   - at the end, the members still running that can all reach each other share one view;
 *   - stalls (a member, or every member, not running for a while) shorter than the heartbeat
 *     timeout change no view; a member removed after a longer one, or stopped on a minority
 *     side, joins again as a new incarnation (as squalld does) and is back by the end.
 * A failure prints its seed; `test_sim_view --seed S -v` replays it. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "smc.h"
#include "view.h"
#include "transport/sim/sim.h"
#include "seeds.h"

#define MAX_N 7
#define MAX_VIEWS 16
#define TICK_US 1000u
#define HB_TIMEOUT_US 20000u

struct rec {
    uint32_t incarnation;
    uint32_t view;
    uint32_t sender; /* member id */
    uint64_t seq;    /* sender's own message number */
    uint64_t index;
};

struct node {
    uint32_t id;
    bool crashed;
    bool stopped;
    int stop_reason;
    struct sq__smc smc;
    uint8_t *mem;
    size_t region;
    struct rec *log;
    uint64_t nlog, caplog;
    uint64_t next_seq;             /* my next message number */
    uint64_t last_seq_from[MAX_N]; /* last seq delivered from each sender, +1 */
    uint32_t views[MAX_VIEWS];     /* view ids installed, in order */
    uint64_t view_members[MAX_VIEWS];
    uint32_t view_incarnation[MAX_VIEWS];
    uint32_t nviews;
    uint32_t incarnation;  /* bumped at every restart */
    bool joining;          /* restarted, waiting to be added */
    uint64_t restart_at;   /* when a crashed member comes back (0: never) */
    uint64_t paused_until; /* stalled (stopped, descheduled): not ticked nor polled */
    struct run *run;
};

struct run {
    uint64_t seed;
    uint32_t n;
    struct node node[MAX_N];
    struct sq_sim *sim;
    uint32_t window, max_payload;
    char failure[300];
    bool verbose;
    bool kill_next_leader; /* crash the next member that publishes a proposal, mid-flight */
    uint64_t rng;
};

static uint64_t g_views_installed, g_takeovers, g_adopted, g_partitioned, g_removed, g_rejoins,
    g_stalls;

static void fail(struct run *run, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(struct run *run, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sq_sim_vfail(run->failure, sizeof(run->failure), fmt, ap);
    va_end(ap);
}

static uint8_t pbyte(uint32_t sender, uint64_t seq, size_t pos)
{
    return (uint8_t)(sender * 29u + seq * 11u + pos * 7u);
}

static void on_deliver(void *arg, const sq_message *msg)
{
    struct node *me = arg;
    struct run *run = me->run;
    if (msg->size < 8) {
        fail(run, "member %u: a message of %zu bytes, all are >= 8", me->id, msg->size);
        return;
    }
    uint64_t seq;
    memcpy(&seq, msg->data, 8);
    uint32_t s = msg->sender_id;
    if (s >= run->n || seq + 1 <= me->last_seq_from[s]) {
        fail(run, "member %u: message %" PRIu64 " of sender %u out of order", me->id, seq, s);
        return;
    }
    for (size_t i = 8; i < msg->size; i++) {
        if (((const uint8_t *)msg->data)[i] != pbyte(s, seq, i)) {
            fail(run, "member %u: message %" PRIu64 " of %u corrupt at %zu", me->id, seq, s, i);
            return;
        }
    }
    me->last_seq_from[s] = seq + 1;
    if (me->nlog == me->caplog) {
        me->caplog = me->caplog ? me->caplog * 2 : 1024;
        me->log = realloc(me->log, me->caplog * sizeof(struct rec));
        SQ_ASSERT(me->log != NULL);
    }
    me->log[me->nlog++] = (struct rec){me->incarnation, me->smc.sst.view_id, s, seq, msg->index};
}

static void record_view(struct node *nd)
{
    SQ_ASSERT(nd->nviews < MAX_VIEWS);
    uint64_t mask = 0;
    for (uint32_t r = 0; r < nd->smc.sst.L.nmembers; r++) {
        mask |= 1ull << nd->smc.sst.member_ids[r];
    }
    nd->views[nd->nviews] = nd->smc.sst.view_id;
    nd->view_members[nd->nviews] = mask;
    nd->view_incarnation[nd->nviews] = nd->incarnation;
    nd->nviews++;
}

static void start_view(struct run *run, struct node *nd, uint32_t view_id, uint32_t n,
                       uint32_t my_rank, const uint32_t *ids)
{
    uint32_t all[MAX_N];
    for (uint32_t i = 0; i < run->n; i++) {
        all[i] = i;
    }
    struct sq__smc_params p = {.sst = {.nmembers = n,
                                       .my_rank = my_rank,
                                       .window_size = run->window,
                                       .max_payload = run->max_payload,
                                       .view_id = view_id,
                                       .member_ids = ids,
                                       .member_peers = ids,
                                       .npeers = run->n,
                                       .peer_ids = all,
                                       .region_offset = (view_id % 2) * nd->region},
                               .now_us = sq__sim_now(run->sim),
                               .heartbeat_timeout_us = HB_TIMEOUT_US};
    SQ_ASSERT(sq__smc_init(&nd->smc, &p, nd->mem + p.sst.region_offset,
                           sq__sim_transport(run->sim, nd->id), on_deliver, nd) == 0);
    sq__view_attach(&nd->smc.sst);
    record_view(nd);
}

/* Polls a node until idle, installs views it is ready for, notes stops. */
static void poll_node(struct run *run, struct node *nd)
{
    if (nd->crashed || nd->stopped || nd->joining || nd->paused_until > sq__sim_now(run->sim)) {
        return;
    }
    for (int k = 0; k < 64; k++) {
        uint64_t failed = sq__sim_transport(run->sim, nd->id)
                              ->vt->failed_peers(sq__sim_transport(run->sim, nd->id));
        for (uint32_t r = 0; r < nd->smc.sst.L.nmembers; r++) {
            if (r != nd->smc.sst.my_rank && (failed >> nd->smc.sst.member_peers[r]) & 1u) {
                sq__sst_suspect(&nd->smc.sst, r);
            }
        }
        uint64_t prop_before = nd->smc.sst.prop.ballot;
        int rc = sq__smc_poll(&nd->smc);
        if (rc < 0) {
            fail(run, "member %u poll: %s (%s)", nd->id, sq_strerror(rc), nd->smc.sst.errmsg);
            return;
        }
        if (run->kill_next_leader && nd->smc.sst.prop.ballot != prop_before) {
            /* The leader dies with its proposal in flight: it reaches only some members. */
            run->kill_next_leader = false;
            nd->crashed = true;
            for (uint32_t j = 0; j < run->n; j++) {
                if (j != nd->id && sq__sim_rand_below(&run->rng, 2) == 0) {
                    sq__sim_cut(run->sim, nd->id, j);
                }
            }
            if (run->verbose) {
                printf("  t=%" PRIu64 " leader %u crashes just after proposing\n",
                       sq__sim_now(run->sim), nd->id);
            }
            return;
        }
        if (nd->smc.sst.phase == SQ_SST_STOPPED) {
            nd->stopped = true;
            nd->stop_reason = nd->smc.sst.stop_reason;
            g_partitioned += nd->stop_reason == SQ_EPARTITIONED;
            g_removed += nd->stop_reason == SQ_EREMOVED;
            if (nd->stop_reason == SQ_EPARTITIONED || nd->stop_reason == SQ_EREMOVED) {
                /* squalld joins again by itself, after a pause: a new incarnation */
                nd->stopped = false;
                nd->crashed = true;
                nd->restart_at =
                    sq__sim_now(run->sim) + 3000 + sq__sim_rand_below(&run->rng, 2 * HB_TIMEOUT_US);
                g_rejoins++;
            }
            g_adopted += nd->smc.sst.vc_adopted;
            if (run->verbose) {
                printf("  t=%" PRIu64 " member %u stops in view %u: %s\n", sq__sim_now(run->sim),
                       nd->id, nd->smc.sst.view_id, sq_err_name(nd->stop_reason));
            }
            return;
        }
        if (nd->smc.sst.phase == SQ_SST_READY) {
            uint32_t ids[MAX_N], peers[MAX_N], my_rank = 0;
            uint32_t n = sq__smc_next_view(&nd->smc, ids, peers, &my_rank);
            for (uint32_t r = 0; r < nd->smc.sst.L.nmembers; r++) {
                if ((nd->smc.sst.decision.removed >> r) & 1u) {
                    sq__sim_transport(run->sim, nd->id)
                        ->vt->disconnect(sq__sim_transport(run->sim, nd->id),
                                         nd->smc.sst.member_peers[r]);
                }
            }
            uint32_t v = nd->smc.sst.view_id + 1;
            g_views_installed++;
            g_takeovers += nd->smc.sst.decision.ballot > 1;
            g_adopted += nd->smc.sst.vc_adopted;
            if (run->verbose) {
                printf("  t=%" PRIu64 " member %u installs view %u (%u members, trim %" PRIu64
                       ")\n",
                       sq__sim_now(run->sim), nd->id, v, n, nd->smc.sst.decision.trim);
            }
            uint64_t added = nd->smc.sst.decision.added;
            sq__smc_fini(&nd->smc);
            start_view(run, nd, v, n, my_rank, ids);
            /* The donor welcomes the joiners: they start in this view (no application state
             * in the simulator: the checks compare deliveries view by view). */
            for (uint32_t r = 0; r < n && my_rank == 0; r++) {
                struct node *j = &run->node[ids[r]];
                if (((added >> ids[r]) & 1u) && j->joining && !j->crashed) {
                    j->joining = false;
                    start_view(run, j, v, n, r, ids);
                    if (run->verbose) {
                        printf("  t=%" PRIu64 " member %u rejoins in view %u\n",
                               sq__sim_now(run->sim), j->id, v);
                    }
                }
            }
            rc = 1;
        }
        if (rc == 0) {
            return;
        }
    }
}

static void try_send(struct run *run, struct node *nd, uint64_t *rng)
{
    uint32_t size = 8 + (uint32_t)sq__sim_rand_below(rng, run->max_payload - 7);
    void *buf;
    if (sq__smc_reserve(&nd->smc, size, &buf) != 0) {
        return;
    }
    uint64_t seq = nd->next_seq;
    memcpy(buf, &seq, 8);
    for (size_t i = 8; i < size; i++) {
        ((uint8_t *)buf)[i] = pbyte(nd->id, seq, i);
    }
    if (sq__smc_commit(&nd->smc) == 0) {
        nd->next_seq++;
    }
}

static uint32_t popcount(uint64_t x)
{
    return (uint32_t)__builtin_popcountll(x);
}

static void check(struct run *run)
{
    /* Same view id => same members; each view keeps a majority of its predecessor. */
    uint64_t members_of[MAX_VIEWS] = {0};
    for (uint32_t i = 0; i < run->n; i++) {
        struct node *nd = &run->node[i];
        for (uint32_t k = 0; k < nd->nviews; k++) {
            uint32_t v = nd->views[k];
            if (members_of[v] == 0) {
                members_of[v] = nd->view_members[k];
            } else if (members_of[v] != nd->view_members[k]) {
                fail(run,
                     "view %u has members %#" PRIx64 " at member %u but %#" PRIx64 " elsewhere", v,
                     nd->view_members[k], nd->id, members_of[v]);
            }
        }
    }
    for (uint32_t v = 1; v < MAX_VIEWS; v++) {
        uint64_t prev = members_of[v - 1], cur = members_of[v];
        if (prev != 0 && cur != 0 && popcount(cur & prev) < popcount(prev) / 2 + 1) {
            fail(run, "view %u (%#" PRIx64 ") keeps no majority of view %u (%#" PRIx64 ")", v, cur,
                 v - 1, prev);
        }
    }
    /* Members that installed v+1 delivered the same sequence in v. */
    for (uint32_t v = 0; v + 1 < MAX_VIEWS; v++) {
        struct node *ref = NULL;
        uint64_t ref_lo = 0, ref_hi = 0;
        for (uint32_t i = 0; i < run->n; i++) {
            struct node *nd = &run->node[i];
            /* Only an incarnation that was in v and went on to v+1 saw all of v. */
            int64_t inc = -1;
            for (uint32_t k = 0; k + 1 < nd->nviews; k++) {
                if (nd->views[k] == v && nd->views[k + 1] == v + 1 &&
                    nd->view_incarnation[k] == nd->view_incarnation[k + 1]) {
                    inc = nd->view_incarnation[k];
                }
            }
            if (inc < 0) {
                continue;
            }
            uint64_t lo = 0;
            while (lo < nd->nlog &&
                   (nd->log[lo].incarnation != (uint32_t)inc || nd->log[lo].view < v)) {
                lo++;
            }
            uint64_t hi = lo;
            while (hi < nd->nlog && nd->log[hi].incarnation == (uint32_t)inc &&
                   nd->log[hi].view == v) {
                hi++;
            }
            if (ref == NULL) {
                ref = nd;
                ref_lo = lo;
                ref_hi = hi;
                continue;
            }
            bool same = hi - lo == ref_hi - ref_lo;
            for (uint64_t k = 0; same && k < hi - lo; k++) {
                const struct rec *a = &nd->log[lo + k], *b = &ref->log[ref_lo + k];
                same = a->view == b->view && a->sender == b->sender && a->seq == b->seq &&
                       a->index == b->index;
            }
            if (!same) {
                fail(run,
                     "view %u: members %u and %u delivered different sequences (%" PRIu64
                     " and %" PRIu64 " messages)",
                     v, ref->id, nd->id, ref_hi - ref_lo, hi - lo);
            }
        }
    }
    /* Running members that can reach each other end in the same view. */
    for (uint32_t i = 0; i < run->n; i++) {
        for (uint32_t j = i + 1; j < run->n; j++) {
            struct node *a = &run->node[i], *b = &run->node[j];
            if (a->crashed || b->crashed || a->stopped || b->stopped || a->joining || b->joining ||
                sq__sim_is_cut(run->sim, i, j)) {
                continue;
            }
            if (a->smc.sst.view_id != b->smc.sst.view_id || a->smc.sst.phase != SQ_SST_RUNNING ||
                b->smc.sst.phase != SQ_SST_RUNNING) {
                fail(run, "members %u and %u still connected but in views %u/%u (phases %d/%d)", i,
                     j, a->smc.sst.view_id, b->smc.sst.view_id, a->smc.sst.phase, b->smc.sst.phase);
            }
        }
    }
}

static int run_seed(uint64_t seed, bool verbose)
{
    uint64_t rng = seed * 0x9e3779b97f4a7c15ull + 7;
    struct run *run = calloc(1, sizeof(*run));
    SQ_ASSERT(run != NULL);
    run->seed = seed;
    run->verbose = verbose;
    run->n = 3 + (uint32_t)sq__sim_rand_below(&rng, 5);
    run->rng = seed ^ 0x1ead;
    run->kill_next_leader = sq__sim_rand_below(&rng, 4) == 0;
    run->window = 1 + (uint32_t)sq__sim_rand_below(&rng, 12);
    run->max_payload = 8 + (uint32_t)sq__sim_rand_below(&rng, 120);
    struct sq_sim_params sp = {
        .min_delay_us = 5 + (uint32_t)sq__sim_rand_below(&rng, 100),
        .max_jitter_us = (uint32_t)sq__sim_rand_below(&rng, 400),
        .loss_permille = (uint32_t)sq__sim_rand_below(&rng, 30),
        .retransmit_us = 2000,
        .torn_permille = (uint32_t)sq__sim_rand_below(&rng, 200),
    };
    SQ_ASSERT(sq__sim_create(&run->sim, run->n, seed ^ 0xfeed, &sp) == 0);
    struct sq__sst_layout L;
    SQ_ASSERT(sq__sst_layout(&L, run->n, run->window, run->max_payload) == 0);
    uint32_t ids[MAX_N];
    for (uint32_t i = 0; i < run->n; i++) {
        ids[i] = i;
    }
    for (uint32_t i = 0; i < run->n; i++) {
        struct node *nd = &run->node[i];
        nd->id = i;
        nd->run = run;
        nd->region = L.table_bytes;
        nd->mem = calloc(2, L.table_bytes);
        sq__sim_attach(run->sim, i, nd->mem, 2 * L.table_bytes);
        start_view(run, nd, 0, run->n, i, ids);
    }
    /* Faults: up to three, at random times in the first 300 ms. */
    uint32_t nfaults = (uint32_t)sq__sim_rand_below(&rng, 3);
    uint64_t fault_at[4];
    uint32_t fault_kind[4];
    uint32_t chase[4] = {0}; /* 1 + the member a chained crash targets */
    for (uint32_t f = 0; f < nfaults; f++) {
        fault_at[f] = 10000 + sq__sim_rand_below(&rng, 290000);
        fault_kind[f] = (uint32_t)sq__sim_rand_below(&rng, 10);
    }
    /* Runs whose only faults are stalls shorter than the timeout must change no view. */
    bool short_stalls_only = nfaults > 0;
    for (uint32_t f = 0; f < nfaults; f++) {
        short_stalls_only &= fault_kind[f] == 7 || fault_kind[f] == 9;
    }
    const uint64_t send_until = 350000, end = 700000;
    uint32_t send_permille = 100 + (uint32_t)sq__sim_rand_below(&rng, 600);
    if (verbose) {
        printf("seed %" PRIu64 ": n=%u window=%u max_payload=%u delay=%u+%u loss=%u torn=%u "
               "faults=%u\n",
               seed, run->n, run->window, run->max_payload, sp.min_delay_us, sp.max_jitter_us,
               sp.loss_permille, sp.torn_permille, nfaults);
    }
    uint64_t next_tick = TICK_US;
    while (run->failure[0] == '\0') {
        uint64_t next_net = sq__sim_next_time(run->sim);
        if (next_net <= next_tick) {
            uint32_t dst = 0;
            if (sq__sim_step(run->sim, &dst) == 1) {
                poll_node(run, &run->node[dst]);
            }
            continue;
        }
        if (next_tick > end) {
            break;
        }
        sq__sim_advance(run->sim, next_tick);
        uint64_t now = next_tick;
        next_tick += TICK_US;
        for (uint32_t f = 0; f < nfaults; f++) {
            if (fault_at[f] > now - TICK_US && fault_at[f] <= now) {
                uint32_t victim =
                    chase[f] ? chase[f] - 1 : (uint32_t)sq__sim_rand_below(&rng, run->n);
                if (fault_kind[f] >= 7) {
                    /* A stall: the process does not run (SIGSTOP, descheduled, a blocked loop)
                     * while its links stay up. 7: one member, 30-90% of the timeout; 8: one
                     * member, 1.5-3 timeouts (it is removed, then rejoins); 9: every member at
                     * once for up to 2 timeouts (a whole-machine stall). */
                    uint64_t len =
                        fault_kind[f] == 7 ? HB_TIMEOUT_US * 3 / 10 +
                                                 sq__sim_rand_below(&rng, HB_TIMEOUT_US * 6 / 10)
                        : fault_kind[f] == 8
                            ? HB_TIMEOUT_US * 3 / 2 +
                                  sq__sim_rand_below(&rng, HB_TIMEOUT_US * 3 / 2)
                            : HB_TIMEOUT_US / 2 + sq__sim_rand_below(&rng, HB_TIMEOUT_US * 3 / 2);
                    for (uint32_t j = 0; j < run->n; j++) {
                        if (fault_kind[f] == 9 || j == victim) {
                            run->node[j].paused_until =
                                SQ_MAX(run->node[j].paused_until, now + len);
                        }
                    }
                    g_stalls++;
                    if (verbose) {
                        printf("  t=%" PRIu64 " stall %s for %" PRIu64 " us\n", now,
                               fault_kind[f] == 9 ? "every member" : "one member", len);
                    }
                } else if (fault_kind[f] <= 1) {
                    /* A crash: the process stops; its links reset (kill) or go silent (hang). */
                    run->node[victim].crashed = true;
                    if (fault_kind[f] == 0) {
                        for (uint32_t j = 0; j < run->n; j++) {
                            if (j != victim) {
                                sq__sim_cut(run->sim, victim, j);
                            }
                        }
                    }
                    if (verbose) {
                        printf("  t=%" PRIu64 " crash member %u (%s) in phase %d, proposal ballot "
                               "%" PRIu64 "\n",
                               now, victim, fault_kind[f] == 0 ? "links reset" : "silent",
                               run->node[victim].smc.sst.phase,
                               run->node[victim].smc.sst.prop.ballot);
                    }
                } else if (fault_kind[f] == 6) {
                    /* kill -9 and a restart with --join a little later */
                    struct node *nd = &run->node[victim];
                    if (!nd->crashed && !nd->stopped && !nd->joining) {
                        nd->crashed = true;
                        nd->restart_at = now + 5000 + sq__sim_rand_below(&rng, 60000);
                        for (uint32_t j = 0; j < run->n; j++) {
                            if (j != victim) {
                                sq__sim_cut(run->sim, victim, j);
                            }
                        }
                        if (verbose) {
                            printf("  t=%" PRIu64 " kill member %u, restart at %" PRIu64 "\n", now,
                                   victim, nd->restart_at);
                        }
                    }
                } else if (fault_kind[f] <= 3) {
                    /* A partition: a random side of 1..n-1 members loses every link across,
                     * reset for good (kind 2) or silent and healing later (kind 3). */
                    uint64_t side = 1 + sq__sim_rand_below(&rng, (1ull << run->n) - 2);
                    uint64_t heal = now + 2000 + sq__sim_rand_below(&rng, 3 * HB_TIMEOUT_US);
                    for (uint32_t a = 0; a < run->n; a++) {
                        for (uint32_t b = 0; b < run->n; b++) {
                            if (((side >> a) & 1u) && !((side >> b) & 1u)) {
                                if (fault_kind[f] == 2) {
                                    sq__sim_cut(run->sim, a, b);
                                } else {
                                    sq__sim_hold(run->sim, a, b, heal);
                                }
                            }
                        }
                    }
                    if (verbose) {
                        printf("  t=%" PRIu64 " partition %#" PRIx64 " from the rest (%s)\n", now,
                               side, fault_kind[f] == 2 ? "reset" : "silent, heals");
                    }
                } else {
                    /* Two crashes in quick succession, the second of the lowest-ranked member
                     * still up: often the leader in the middle of the view change. */
                    run->node[victim].crashed = true;
                    uint32_t leader = 0;
                    while (leader < run->n &&
                           (run->node[leader].crashed || run->node[leader].stopped)) {
                        leader++;
                    }
                    if (leader < run->n && nfaults < 4) {
                        /* Just after the first crash is noticed: mid view change. */
                        fault_at[nfaults] =
                            now + HB_TIMEOUT_US - 6000 + sq__sim_rand_below(&rng, 8000);
                        fault_kind[nfaults] =
                            (uint32_t)sq__sim_rand_below(&rng, 2); /* reset or silent */
                        nfaults++;
                        chase[nfaults - 1] = leader + 1;
                    }
                    if (verbose) {
                        printf("  t=%" PRIu64 " crash member %u (silent), then the leader\n", now,
                               victim);
                    }
                }
            }
        }
        for (uint32_t i = 0; i < run->n; i++) {
            struct node *nd = &run->node[i];
            if (nd->crashed && nd->restart_at != 0 && now >= nd->restart_at) {
                /* A new incarnation: fresh memory, fresh connections, asks to join. */
                nd->crashed = false;
                nd->restart_at = 0;
                nd->joining = true;
                nd->incarnation++;
                sq__smc_fini(&nd->smc);
                memset(nd->mem, 0, 2 * nd->region);
                memset(&nd->smc, 0, sizeof(nd->smc));
                sq__sim_reconnect(run->sim, i);
                if (verbose) {
                    printf("  t=%" PRIu64 " member %u restarts and asks to join\n", now, i);
                }
            }
            if (nd->joining) {
                for (uint32_t c = 0; c < run->n; c++) {
                    struct node *contact = &run->node[c];
                    if (c != i && !contact->crashed && !contact->stopped && !contact->joining) {
                        sq__sst_request_join(&contact->smc.sst, i);
                        break;
                    }
                }
                continue;
            }
            if (nd->crashed || nd->stopped || nd->paused_until > now) {
                continue;
            }
            if (now < send_until && sq__sim_rand_below(&rng, 1000) < send_permille) {
                try_send(run, nd, &rng);
            }
            sq__smc_tick(&nd->smc, now);
            poll_node(run, nd);
        }
    }
    if (run->failure[0] == '\0') {
        check(run);
    }
    for (uint32_t i = 0; short_stalls_only && run->failure[0] == '\0' && i < run->n; i++) {
        if (run->node[i].nviews != 1 || run->node[i].incarnation != 0) {
            fail(run,
                 "stalls shorter than the timeout changed the view: member %u installed %u "
                 "views (incarnation %u)",
                 i, run->node[i].nviews, run->node[i].incarnation);
        }
    }
    int ok = run->failure[0] == '\0';
    if (!ok) {
        fprintf(stderr,
                "FAIL seed %" PRIu64 ": %s\n  replay: test_sim_view --seed %" PRIu64 " -v\n", seed,
                run->failure, seed);
    } else if (verbose) {
        for (uint32_t i = 0; i < run->n; i++) {
            struct node *nd = &run->node[i];
            printf("  member %u: %s, view %u, %" PRIu64 " delivered\n", i,
                   nd->crashed   ? "crashed"
                   : nd->stopped ? sq_err_name(nd->stop_reason)
                                 : "running",
                   nd->smc.sst.view_id, nd->nlog);
        }
    }
    for (uint32_t i = 0; i < run->n; i++) {
        sq__smc_fini(&run->node[i].smc);
        free(run->node[i].mem);
        free(run->node[i].log);
    }
    sq__sim_destroy(run->sim);
    free(run);
    return ok;
}

int main(int argc, char **argv)
{
    int rc = sq_sim_main(argc, argv, "sim view", run_seed);
    printf("views installed %" PRIu64 ", by a leader other than rank 0 %" PRIu64
           ", proposals adopted from an earlier leader %" PRIu64 ", members stopped as "
           "partitioned %" PRIu64 ", as removed %" PRIu64 ", rejoined %" PRIu64 ", stalls %" PRIu64
           "\n",
           g_views_installed, g_takeovers, g_adopted, g_partitioned, g_removed, g_rejoins,
           g_stalls);
    return rc;
}
