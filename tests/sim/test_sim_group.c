/* test_sim_group.c: whole groups with subgroups and shards (src/group.c) on the simulated network,
 * with crashes, restarts that rejoin, and partitions at random moments, one seed per run. Each
 * member keeps an application state per shard (a count and a hash of what it delivered there),
 * which the library hands to members new to a shard. After every run it checks:
 *   - members that install the same view id agree on its members, its adequacy and its layout;
 *   - every view keeps a majority of the one before it;
 *   - for every shard, members that install view v+1 delivered the same messages in view v, in
 *     the same order; nothing is delivered in an inadequate view;
 *   - each sender's messages arrive in the order sent, with the right payload, in the right shard;
 *   - at the end, running members that reach each other share one view, none sits on a decided
 *     view change it never installed, and members of the same shard hold the same state (so the
 *     handovers carried exactly the right state);
 * In some seeds a newcomer dies while its handover runs, once its donor decided the next view
 * (a bystander's crash): the donor must go on without it.
 *   - persistent subgroups log on simulated disks that lose what was not synced and tear the
 *     last write when a member crashes; logs are flushed at random moments, so crashes fall
 *     between append, sync and the table update. Every version a member reported persisted is,
 *     after recovery, in the log of every member of that shard (same bytes, same timestamp), and
 *     every log holds exactly what its member delivered, in order.
 * A failure prints its seed; `test_sim_group --seed S -v` replays it. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "config.h"
#include "group.h"
#include "hash.h"
#include "kv/store.h"
#include "transport/sim/sim.h"
#include "../unit/memdisk.h"
#include "seeds.h"

#define MAX_N 7
#define MAX_VIEWS 24
#define MAX_SG 3
#define TICK_US 1000u
#define HB_TIMEOUT_MS 20u

struct rec {
    uint32_t incarnation;
    uint32_t view;
    uint32_t sg, shard;
    uint32_t sender; /* member id */
    uint64_t seq;    /* sender's own message number in that subgroup */
    uint64_t index;
    uint64_t timestamp;
    uint64_t version;
    uint32_t size;
};

/* A persisted report: version V of (sg, shard) was durable at these members' incarnations. */
struct report {
    uint32_t sg, shard;
    uint64_t version;
    uint32_t nmembers;
    uint32_t ids[MAX_N];
    uint32_t incarnations[MAX_N];
};

struct shard_state {
    uint64_t count, hash;
};

struct node {
    uint32_t id;
    bool crashed;
    bool stopped;
    bool joining;
    int stop_reason;
    struct sq__group g;
    uint8_t *mem;
    size_t mem_bytes;
    struct rec *log;
    uint64_t nlog, caplog;
    uint64_t next_seq[MAX_SG];
    uint64_t last_seq_from[MAX_SG][MAX_N]; /* last seq delivered from each sender, +1 */
    uint64_t last_ts[MAX_SG];              /* timestamp of the last delivery, per subgroup */
    struct shard_state state[MAX_SG];
    struct sq_kv_store *kv[MAX_SG]; /* a key-value store fed by the same deliveries */
    uint32_t views[MAX_VIEWS];
    uint64_t view_members[MAX_VIEWS];
    uint32_t view_incarnation[MAX_VIEWS];
    bool view_adequate[MAX_VIEWS];
    uint32_t view_rank[MAX_VIEWS];
    struct sq__assign view_assign[MAX_VIEWS];
    uint32_t nviews;
    uint32_t incarnation;
    uint64_t restart_at;
    struct memdisk *disks[8]; /* by incarnation: a restart keeps its disk, or gets a fresh one */
    bool keep_disk;           /* the next restart keeps the disk (and the log on it) */
    struct run *run;
};

struct run {
    uint64_t seed;
    uint32_t n;
    struct sq_config cfg;
    uint32_t peer_ids[MAX_N];
    struct node node[MAX_N];
    struct sq_sim *sim;
    char failure[300];
    bool verbose;
    bool kill_next_leader;
    /* The scenario of chaos seed 110: a bystander crashes while a handover runs, and once the
     * view change that removes it is decided at the donor (which then takes no more
     * suspicions), the newcomer dies too. 0: off, 1: waiting for a handover, 2: for the
     * decision, 3: done. */
    uint32_t newcomer_dies;
    uint32_t nd_donor, nd_newcomer;
    uint64_t rng;
    struct report *reports;
    uint32_t nreports, capreports;
    uint32_t flush_permille; /* chance per tick that a member flushes its logs */
    bool flush_sync;         /* group commit (or none: written, never synced) */
};

static uint64_t g_views, g_inadequate, g_handovers, g_delivered, g_partitioned, g_removed;
static uint64_t g_reports, g_checked_records, g_newcomer_deaths;

static void fail(struct run *run, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(struct run *run, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sq_sim_vfail(run->failure, sizeof(run->failure), fmt, ap);
    va_end(ap);
}

static uint8_t pbyte(uint32_t sender, uint32_t sg, uint64_t seq, size_t pos)
{
    return (uint8_t)(sender * 29u + sg * 13u + seq * 11u + pos * 7u);
}

/* Empties a member's key-value store of a subgroup (a new incarnation, or a shard whose state
 * comes by handover). The subgroup index picks the store type, so all three are exercised. */
static void kv_reset(struct node *nd, uint32_t sg)
{
    sq__kv_store_destroy(nd->kv[sg]);
    nd->kv[sg] = NULL;
    int rc = sq__kv_store_create(&nd->kv[sg], (int)(sg % 3));
    SQ_ASSERT(rc == 0);
}

/* Every delivery is also a key-value op, derived from (sender, seq): puts, conditional puts
 * (must not exist, or at a version that may or may not be current), removes and repeated
 * request ids. Replicas must end with byte-identical stores: the store is deterministic and
 * its state survives handovers. */
static void kv_apply(struct node *me, const sq_message *msg, uint32_t s, uint64_t seq)
{
    char key[16];
    int klen = snprintf(key, sizeof(key), "/k/%u", (unsigned)((seq * 7 + s) % 5));
    uint64_t value = seq;
    struct sq_kv_op op = {.kind = seq % 5 == 4 ? SQ_KV_REMOVE : SQ_KV_PUT,
                          .client = s + 1,
                          .req_id = seq % 11 == 10 ? seq - 1 : seq,
                          .origin = s,
                          .key = key,
                          .key_len = (uint16_t)klen,
                          .value = &value,
                          .value_len = seq % 5 == 4 ? 0 : sizeof(value)};
    if (seq % 3 == 1) {
        op.flags = SQ_KV_OPF_IF_VERSION;
        op.expect = seq % 2 ? 0 : msg->version - seq % 4; /* sometimes right, mostly not */
    }
    struct sq_kv_applied a;
    int rc = sq__kv_store_apply(me->kv[msg->subgroup], &op, msg->version + 1, msg->timestamp, &a);
    if (rc != 0) {
        fail(me->run, "member %u: the key-value store failed to apply: %s", me->id,
             sq_strerror(rc));
    }
}

static void on_deliver(void *arg, const sq_message *msg)
{
    struct node *me = arg;
    struct run *run = me->run;
    uint32_t sg = msg->subgroup, s = msg->sender_id;
    if (msg->size < 8 || sg >= run->cfg.nsubgroups || s >= run->n) {
        fail(run, "member %u: a malformed delivery (%zu bytes, subgroup %u, sender %u)", me->id,
             msg->size, sg, s);
        return;
    }
    if (!me->g.adequate || !me->g.in_shard[sg] || me->g.shard[sg].shard != msg->shard) {
        fail(run,
             "member %u: a delivery in subgroup %u shard %u, which it does not serve in "
             "view %u",
             me->id, sg, msg->shard, me->g.ctl.sst.view_id);
        return;
    }
    uint64_t seq;
    memcpy(&seq, msg->data, 8);
    if (seq + 1 <= me->last_seq_from[sg][s]) {
        fail(run, "member %u: message %" PRIu64 " of sender %u in subgroup %u out of order", me->id,
             seq, s, sg);
        return;
    }
    for (size_t i = 8; i < msg->size; i++) {
        if (((const uint8_t *)msg->data)[i] != pbyte(s, sg, seq, i)) {
            fail(run, "member %u: message %" PRIu64 " of %u corrupt at %zu", me->id, seq, s, i);
            return;
        }
    }
    if (msg->timestamp <= me->last_ts[sg]) {
        fail(run, "member %u: timestamp %" PRIu64 " in subgroup %u after %" PRIu64, me->id,
             msg->timestamp, sg, me->last_ts[sg]);
        return;
    }
    me->last_ts[sg] = msg->timestamp;
    me->last_seq_from[sg][s] = seq + 1;
    struct shard_state *st = &me->state[sg];
    st->count++;
    st->hash = sq__fnv1a_u64(
        sq__fnv1a_u64(sq__fnv1a_u64(sq__fnv1a_u64(st->hash, s), seq), msg->index), msg->timestamp);
    kv_apply(me, msg, s, seq);
    if (me->nlog == me->caplog) {
        me->caplog = me->caplog ? me->caplog * 2 : 1024;
        me->log = realloc(me->log, me->caplog * sizeof(struct rec));
        SQ_ASSERT(me->log != NULL);
    }
    me->log[me->nlog++] = (struct rec){
        me->incarnation, me->g.ctl.sst.view_id, sg,           msg->shard,         s, seq,
        msg->index,      msg->timestamp,        msg->version, (uint32_t)msg->size};
    g_delivered++;
}

static int save_state(void *arg, uint32_t sg, uint32_t shard, void **buf, size_t *size)
{
    struct node *me = arg;
    (void)shard;
    void *kv = NULL;
    size_t kv_size = 0;
    if (sq__kv_store_save(me->kv[sg], &kv, &kv_size) != 0) {
        return -1;
    }
    uint8_t *copy = malloc(sizeof(struct shard_state) + kv_size);
    if (copy == NULL) {
        free(kv);
        return -1;
    }
    memcpy(copy, &me->state[sg], sizeof(struct shard_state));
    memcpy(copy + sizeof(struct shard_state), kv, kv_size);
    free(kv);
    *buf = copy;
    *size = sizeof(struct shard_state) + kv_size;
    return 0;
}

static void load_state(void *arg, uint32_t sg, uint32_t shard, const void *buf, size_t size)
{
    struct node *me = arg;
    (void)shard;
    if (size < sizeof(struct shard_state)) {
        fail(me->run, "member %u: a state of %zu bytes for subgroup %u", me->id, size, sg);
        return;
    }
    memcpy(&me->state[sg], buf, sizeof(struct shard_state));
    int rc = sq__kv_store_load(me->kv[sg], (const uint8_t *)buf + sizeof(struct shard_state),
                               size - sizeof(struct shard_state));
    if (rc != 0) {
        fail(me->run, "member %u: the key-value state of subgroup %u does not load: %s", me->id, sg,
             sq_strerror(rc));
    }
    g_handovers++;
}

static void on_persisted(void *arg, uint32_t sg, uint32_t shard, uint64_t version)
{
    struct node *me = arg;
    struct run *run = me->run;
    if (run->nreports == run->capreports) {
        run->capreports = run->capreports ? run->capreports * 2 : 256;
        run->reports = realloc(run->reports, run->capreports * sizeof(struct report));
        SQ_ASSERT(run->reports != NULL);
    }
    struct report *r = &run->reports[run->nreports++];
    *r = (struct report){.sg = sg, .shard = shard, .version = version};
    const struct sq__smc *sh = &me->g.shard[sg];
    for (uint32_t k = 0; k < sh->sst.L.nmembers; k++) {
        uint32_t id = sh->sst.member_ids[k];
        r->ids[r->nmembers] = id;
        r->incarnations[r->nmembers] = id == me->id ? me->incarnation : run->node[id].incarnation;
        r->nmembers++;
    }
    g_reports++;
}

static void record_view(struct run *run, struct node *nd)
{
    if (nd->nviews == MAX_VIEWS) {
        fail(run, "member %u: more than %d views", nd->id, MAX_VIEWS);
        return;
    }
    uint64_t mask = 0;
    for (uint32_t r = 0; r < nd->g.ctl.sst.L.nmembers; r++) {
        mask |= 1ull << nd->g.ctl.sst.member_ids[r];
    }
    uint32_t k = nd->nviews++;
    nd->views[k] = nd->g.ctl.sst.view_id;
    nd->view_members[k] = mask;
    nd->view_incarnation[k] = nd->incarnation;
    nd->view_adequate[k] = nd->g.adequate;
    nd->view_rank[k] = nd->g.ctl.sst.my_rank;
    nd->view_assign[k] = nd->g.assign;
    /* A member that stopped holding a shard's state starts that shard's count afresh: the
     * newcomer's load replaces it, and a shard it left is no longer compared. */
    for (uint32_t s = 0; s < run->cfg.nsubgroups; s++) {
        if (nd->g.awaiting[s]) {
            memset(&nd->state[s], 0, sizeof(nd->state[s]));
            kv_reset(nd, s);
        }
    }
    g_views++;
    g_inadequate += !nd->g.adequate;
}

static void new_incarnation(struct run *run, struct node *nd)
{
    nd->g.deliver = on_deliver;
    nd->g.deliver_arg = nd;
    nd->g.save = save_state;
    nd->g.load = load_state;
    nd->g.state_arg = nd;
    nd->g.persisted = on_persisted;
    nd->g.persisted_arg = nd;
    SQ_ASSERT(nd->incarnation < 8 && nd->disks[nd->incarnation] == NULL);
    struct memdisk *disk;
    if (nd->keep_disk && nd->incarnation > 0) {
        disk = nd->disks[nd->incarnation - 1]; /* the same machine comes back */
    } else {
        disk = malloc(sizeof(*disk));
        SQ_ASSERT(disk != NULL);
        md_init(disk);
    }
    nd->disks[nd->incarnation] = disk;
    nd->g.disk = &disk->base;
    sq__group_init(&nd->g, &run->cfg, nd->mem, sq__sim_transport(run->sim, nd->id), nd->id,
                   run->peer_ids, sq__sim_now(run->sim));
    memset(nd->state, 0, sizeof(nd->state));
    memset(nd->last_ts, 0, sizeof(nd->last_ts));
    for (uint32_t sg = 0; sg < MAX_SG; sg++) {
        kv_reset(nd, sg);
    }
}

/* The process dies with the machine: its disk keeps only what was synced, plus perhaps a torn
 * part of the last write. */
static void crash_node(struct run *run, struct node *nd)
{
    nd->crashed = true;
    md_crash(nd->disks[nd->incarnation],
             sq__sim_rand_below(&run->rng, 3) == 0 ? sq__sim_rand_below(&run->rng, 200) : 0);
}

static void stop_node(struct run *run, struct node *nd, int reason)
{
    nd->stopped = true;
    nd->stop_reason = reason;
    g_partitioned += reason == SQ_EPARTITIONED;
    g_removed += reason == SQ_EREMOVED;
    if (run->verbose) {
        printf("  t=%" PRIu64 " member %u stops in view %u: %s\n", sq__sim_now(run->sim), nd->id,
               nd->g.ctl.sst.view_id, sq_err_name(reason));
    }
}

static void poll_node(struct run *run, struct node *nd)
{
    if (nd->crashed || nd->stopped) {
        return;
    }
    struct sq_transport *t = sq__sim_transport(run->sim, nd->id);
    if (nd->joining) {
        int rc = sq__group_try_welcome(&nd->g);
        if (rc == SQ_ESTATE && strstr(nd->g.errmsg, "from an earlier run") != NULL) {
            /* Back on an old log of a shard nobody can bring up to date: it refuses. */
            stop_node(run, nd, rc);
            return;
        }
        if (rc < 0) {
            fail(run, "member %u: bad welcome: %s", nd->id, nd->g.errmsg);
            return;
        }
        if (rc == 0) {
            return;
        }
        nd->joining = false;
        record_view(run, nd);
        if (run->verbose) {
            printf("  t=%" PRIu64 " member %u rejoins in view %u\n", sq__sim_now(run->sim), nd->id,
                   nd->g.ctl.sst.view_id);
        }
    }
    for (int k = 0; k < 64; k++) {
        uint64_t failed = t->vt->failed_peers(t);
        for (uint32_t r = 0; r < nd->g.ctl.sst.L.nmembers; r++) {
            if (r != nd->g.ctl.sst.my_rank && (failed >> nd->g.ctl.sst.member_peers[r]) & 1u) {
                sq__sst_suspect(&nd->g.ctl.sst, r);
            }
        }
        uint64_t prop_before = nd->g.ctl.sst.prop.ballot;
        int rc = sq__group_poll(&nd->g, sq__sim_now(run->sim));
        if (rc == SQ_ECORRUPT && strstr(nd->g.errmsg, "does not match the group's history")) {
            /* Back on the old log of a shard that started over after losing every holder: the
             * histories cannot be merged, and it says so. */
            stop_node(run, nd, rc);
            return;
        }
        if (rc == SQ_ESTATE && nd->g.errmsg[0] != '\0' && strstr(nd->g.errmsg, "hand over")) {
            stop_node(run, nd, rc); /* its donor failed before handing the state over */
            return;
        }
        if (rc < 0) {
            fail(run, "member %u poll: %s (%s)", nd->id, sq_strerror(rc), nd->g.errmsg);
            return;
        }
        if (run->kill_next_leader && nd->g.ctl.sst.prop.ballot != prop_before) {
            run->kill_next_leader = false;
            crash_node(run, nd);
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
        enum sq__sst_phase phase = sq__group_phase(&nd->g);
        if (phase == SQ_SST_STOPPED) {
            stop_node(run, nd, nd->g.ctl.sst.stop_reason);
            return;
        }
        if (phase == SQ_SST_READY) {
            const struct sq__sst *c = &nd->g.ctl.sst;
            for (uint32_t r = 0; r < c->L.nmembers; r++) {
                uint32_t peer = c->member_peers[r];
                bool gone = (c->decision.removed >> r) & 1u;
                if ((gone && !((c->decision.added >> peer) & 1u)) ||
                    (nd->g.ctl.fence_cut >> r) & 1u) {
                    t->vt->disconnect(t, peer);
                }
            }
            rc = sq__group_install(&nd->g);
            if (rc == SQ_ESTATE && strstr(nd->g.errmsg, "from an earlier run") != NULL) {
                stop_node(run, nd, rc); /* back on an old log nobody can bring up to date */
                return;
            }
            if (rc != 0) {
                fail(run, "member %u install: %s (%s)", nd->id, sq_strerror(rc), nd->g.errmsg);
                return;
            }
            record_view(run, nd);
            if (run->verbose) {
                char lay[128] = "";
                size_t len = 0;
                for (uint32_t s = 0; s < run->cfg.nsubgroups && len < sizeof(lay) - 8; s++) {
                    len += (size_t)snprintf(lay + len, sizeof(lay) - len, " sg%u:", s);
                    for (uint32_t r = 0; r < nd->g.ctl.sst.L.nmembers && len < sizeof(lay) - 4;
                         r++) {
                        uint8_t k2 = nd->g.assign.shard[s][r];
                        len += (size_t)snprintf(lay + len, sizeof(lay) - len, "%c",
                                                k2 == SQ_SHARD_NONE ? '-' : (char)('0' + k2));
                    }
                }
                printf("  t=%" PRIu64 " member %u installs view %u (%u members,%s%s)\n",
                       sq__sim_now(run->sim), nd->id, nd->g.ctl.sst.view_id,
                       nd->g.ctl.sst.L.nmembers, lay, nd->g.adequate ? "" : ", inadequate");
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
    uint32_t sg = (uint32_t)sq__sim_rand_below(rng, run->cfg.nsubgroups);
    int why = 0;
    struct sq__smc *sh = sq__group_shard(&nd->g, sg, &why);
    if (sh == NULL) {
        return;
    }
    uint32_t max = run->cfg.subgroups[sg].max_payload;
    uint32_t size = 8 + (uint32_t)sq__sim_rand_below(rng, max - 7);
    void *buf;
    if (sq__smc_reserve(sh, size, &buf) != 0) {
        return;
    }
    /* Each member's clock is off by up to 50 ms, and some go backwards now and then. */
    uint64_t skew = (nd->id * 7919u) % 50000u;
    sh->stamp = sq__sim_now(run->sim) + skew;
    if (sq__sim_rand_below(rng, 20) == 0 && sh->stamp > 30000) {
        sh->stamp -= 30000;
    }
    uint64_t seq = nd->next_seq[sg];
    memcpy(buf, &seq, 8);
    for (size_t i = 8; i < size; i++) {
        ((uint8_t *)buf)[i] = pbyte(nd->id, sg, seq, i);
    }
    if (sq__smc_commit(sh) == 0) {
        nd->next_seq[sg]++;
    }
}

static uint32_t popcount(uint64_t x)
{
    return (uint32_t)__builtin_popcountll(x);
}

/* Where an incarnation's deliveries in view v start and end in its log. */
static void log_range(const struct node *nd, uint32_t inc, uint32_t v, uint64_t *lo, uint64_t *hi)
{
    uint64_t a = 0;
    while (a < nd->nlog && (nd->log[a].incarnation != inc || nd->log[a].view < v)) {
        a++;
    }
    uint64_t b = a;
    while (b < nd->nlog && nd->log[b].incarnation == inc && nd->log[b].view == v) {
        b++;
    }
    *lo = a;
    *hi = b;
}

static void check(struct run *run)
{
    const uint32_t nsg = run->cfg.nsubgroups;
    /* Long after the last fault healed, no running member still sits on a decided view change
     * it never installed (a donor waiting for a newcomer that died: chaos seed 110). */
    for (uint32_t i = 0; i < run->n; i++) {
        const struct node *nd = &run->node[i];
        if (!nd->crashed && !nd->stopped && !nd->joining &&
            nd->g.ctl.sst.phase == SQ_SST_READY) {
            fail(run, "member %u never installed the view after %u, though it was decided", i,
                 nd->g.ctl.sst.view_id);
        }
    }
    /* Same view id: same members, adequacy and layout; majorities. */
    int first_at[MAX_VIEWS][2];
    memset(first_at, -1, sizeof(first_at));
    uint64_t members_of[MAX_VIEWS] = {0};
    for (uint32_t i = 0; i < run->n; i++) {
        struct node *nd = &run->node[i];
        for (uint32_t k = 0; k < nd->nviews; k++) {
            uint32_t v = nd->views[k];
            if (first_at[v][0] < 0) {
                first_at[v][0] = (int)i;
                first_at[v][1] = (int)k;
                members_of[v] = nd->view_members[k];
                continue;
            }
            const struct node *o = &run->node[first_at[v][0]];
            uint32_t ok = (uint32_t)first_at[v][1];
            if (o->view_members[ok] != nd->view_members[k] ||
                o->view_adequate[ok] != nd->view_adequate[k] ||
                memcmp(&o->view_assign[ok], &nd->view_assign[k], sizeof(struct sq__assign)) != 0) {
                fail(run,
                     "view %u differs between members %u and %u (members %#" PRIx64 "/%#" PRIx64
                     ", adequate %d/%d, or layout)",
                     v, o->id, nd->id, o->view_members[ok], nd->view_members[k],
                     o->view_adequate[ok], nd->view_adequate[k]);
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
    /* Per view and shard: everyone that went on to v+1 delivered the same messages in v. */
    for (uint32_t v = 0; v + 1 < MAX_VIEWS; v++) {
        for (uint32_t sg = 0; sg < nsg; sg++) {
            for (uint32_t shard = 0; shard < run->cfg.subgroups[sg].shards; shard++) {
                const struct node *ref = NULL;
                uint64_t rcount = 0, rhash = 0;
                for (uint32_t i = 0; i < run->n; i++) {
                    const struct node *nd = &run->node[i];
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
                    uint64_t lo, hi, count = 0, h = 0;
                    log_range(nd, (uint32_t)inc, v, &lo, &hi);
                    for (uint64_t x = lo; x < hi; x++) {
                        const struct rec *r = &nd->log[x];
                        if (r->sg == sg && r->shard == shard) {
                            count++;
                            h = sq__fnv1a_u64(
                                sq__fnv1a_u64(sq__fnv1a_u64(sq__fnv1a_u64(h, r->sender), r->seq),
                                              r->index),
                                r->timestamp);
                        }
                    }
                    if (count == 0) {
                        /* Not in the shard, or nothing sent: members of the shard must agree. */
                        bool member = false;
                        for (uint32_t k = 0; k < nd->nviews; k++) {
                            if (nd->views[k] == v && nd->view_incarnation[k] == inc &&
                                nd->view_adequate[k]) {
                                member = nd->view_assign[k].shard[sg][nd->view_rank[k]] == shard;
                            }
                        }
                        if (!member) {
                            continue;
                        }
                    }
                    if (ref == NULL) {
                        ref = nd;
                        rcount = count;
                        rhash = h;
                    } else if (count != rcount || h != rhash) {
                        fail(run,
                             "view %u, subgroup %u shard %u: members %u and %u delivered "
                             "different sequences (%" PRIu64 " and %" PRIu64 " messages)",
                             v, sg, shard, ref->id, nd->id, rcount, count);
                    }
                }
            }
        }
    }
    /* At the end: connected running members share a view and, per shard, the same state. */
    for (uint32_t i = 0; i < run->n; i++) {
        for (uint32_t j = i + 1; j < run->n; j++) {
            struct node *a = &run->node[i], *b = &run->node[j];
            if (a->crashed || b->crashed || a->stopped || b->stopped || a->joining || b->joining ||
                sq__sim_is_cut(run->sim, i, j)) {
                continue;
            }
            if (a->g.ctl.sst.view_id != b->g.ctl.sst.view_id ||
                a->g.ctl.sst.phase != SQ_SST_RUNNING || b->g.ctl.sst.phase != SQ_SST_RUNNING) {
                fail(run, "members %u and %u still connected but in views %u/%u (phases %d/%d)", i,
                     j, a->g.ctl.sst.view_id, b->g.ctl.sst.view_id, a->g.ctl.sst.phase,
                     b->g.ctl.sst.phase);
                continue;
            }
            for (uint32_t sg = 0; sg < nsg && a->g.adequate; sg++) {
                if (!a->g.in_shard[sg] || !b->g.in_shard[sg] ||
                    a->g.shard[sg].shard != b->g.shard[sg].shard) {
                    continue;
                }
                if (a->g.awaiting[sg] || b->g.awaiting[sg]) {
                    fail(run, "members %u/%u still wait for the state of subgroup %u", i, j, sg);
                } else if (a->state[sg].count != b->state[sg].count ||
                           a->state[sg].hash != b->state[sg].hash) {
                    fail(run,
                         "subgroup %u shard %u: members %u and %u end with different states "
                         "(%" PRIu64 " and %" PRIu64 " messages)",
                         sg, a->g.shard[sg].shard, i, j, a->state[sg].count, b->state[sg].count);
                } else {
                    void *sa = NULL, *sb = NULL;
                    size_t na = 0, nb = 0;
                    int ra = sq__kv_store_save(a->kv[sg], &sa, &na);
                    int rb = sq__kv_store_save(b->kv[sg], &sb, &nb);
                    if (ra != 0 || rb != 0 || na != nb || memcmp(sa, sb, na) != 0) {
                        fail(run,
                             "subgroup %u shard %u: members %u and %u end with different "
                             "key-value stores (%" PRIu64 " and %" PRIu64 " keys)",
                             sg, a->g.shard[sg].shard, i, j, sq__kv_store_keys(a->kv[sg]),
                             sq__kv_store_keys(b->kv[sg]));
                    }
                    free(sa);
                    free(sb);
                }
            }
        }
    }
}

static int cmp_version(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* From an incarnation's first delivery in sg on, the log on its disk is a prefix of its
 * deliveries (before it: what an earlier incarnation logged, or history handed over). */
static void check_prefix(struct run *run, struct node *nd, uint32_t inc, uint32_t sg, uint32_t k,
                         struct sq__plog *log)
{
    const uint32_t i = nd->id;
    /* From this incarnation's first delivery in sg on, the log is a prefix of
     * its deliveries (before it: history handed over when it joined). */
    uint64_t pos = 0, first_pos = 0;
    for (uint64_t x = 0; x < nd->nlog; x++) {
        if (nd->log[x].incarnation == inc && nd->log[x].sg == sg && nd->log[x].shard == k) {
            struct sq__plog_entry e0;
            if (sq__plog_find(log, nd->log[x].version, SQ_PLOG_EXACT, &e0, &first_pos) != 0) {
                first_pos = sq__plog_count(log); /* all of it lost in a crash */
            }
            break;
        }
    }
    pos = first_pos;
    uint8_t buf[256];
    for (uint64_t x = 0; x < nd->nlog && run->failure[0] == '\0'; x++) {
        const struct rec *r = &nd->log[x];
        if (r->incarnation != inc || r->sg != sg || r->shard != k) {
            continue;
        }
        struct sq__plog_entry e;
        if (sq__plog_entry_at(log, pos, &e) != 0) {
            break; /* lost in the crash: never reported durable (checked below) */
        }
        ssize_t n = sq__plog_read(log, &e, buf, sizeof(buf));
        uint64_t seq = 0;
        memcpy(&seq, buf, 8);
        bool bytes_ok = n == (ssize_t)r->size && seq == r->seq;
        for (ssize_t b = 8; bytes_ok && b < n; b++) {
            bytes_ok = buf[b] == pbyte(r->sender, sg, r->seq, (size_t)b);
        }
        if (e.version != r->version || e.timestamp != r->timestamp || e.sender != r->sender ||
            !bytes_ok) {
            fail(run,
                 "member %u incarnation %u: log entry %" PRIu64 " of subgroup "
                 "%u (version %#" PRIx64 ") differs from its delivery "
                 "(version %#" PRIx64 ")",
                 i, inc, pos, sg, e.version, r->version);
        }
        pos++;
        g_checked_records++;
    }
    if (pos <= first_pos) {
        return;
    }
    /* After the deliveries, at most a window of records per member that were logged ahead of
     * delivery (in order, but not yet stable when the run ended or the member stopped). Each is
     * a well-formed message of its sender, and where any member delivered that version, the
     * same record: logging ahead never puts into a log what the order does not say. */
    uint64_t ahead = sq__plog_count(log) - pos;
    uint64_t bound = (uint64_t)run->cfg.subgroups[sg].window_size * run->n;
    if (ahead > bound) {
        fail(run,
             "member %u incarnation %u: the log of subgroup %u holds %" PRIu64
             " entries but only %" PRIu64 " match deliveries (more ahead than %" PRIu64 ")",
             i, inc, sg, sq__plog_count(log), pos, bound);
        return;
    }
    for (; pos < sq__plog_count(log) && run->failure[0] == '\0'; pos++) {
        struct sq__plog_entry e;
        if (sq__plog_entry_at(log, pos, &e) != 0) {
            break;
        }
        ssize_t n = sq__plog_read(log, &e, buf, sizeof(buf));
        uint64_t seq = 0;
        memcpy(&seq, buf, 8);
        bool bytes_ok = n >= 8;
        for (ssize_t b = 8; bytes_ok && b < n; b++) {
            bytes_ok = buf[b] == pbyte(e.sender, sg, seq, (size_t)b);
        }
        const struct rec *same = NULL;
        for (uint32_t j = 0; j < run->n && same == NULL; j++) {
            for (uint64_t x = 0; x < run->node[j].nlog; x++) {
                const struct rec *r = &run->node[j].log[x];
                if (r->sg == sg && r->shard == k && r->version == e.version) {
                    same = r;
                    break;
                }
            }
        }
        if (!bytes_ok || (same != NULL && (same->timestamp != e.timestamp ||
                                           same->sender != e.sender || same->seq != seq))) {
            fail(run,
                 "member %u incarnation %u: log entry %" PRIu64 " of subgroup %u (version %#" PRIx64
                 "), logged ahead of delivery, is not what the order delivered",
                 i, inc, pos, sg, e.version);
        }
        g_checked_records++;
    }
}

/* Power cut for everyone, then recovery: each log holds a prefix of what its member delivered,
 * and every reported version is in the log of every member the report covered. */
static void check_logs(struct run *run)
{
    /* by member, incarnation, subgroup and shard; incarnations that share a disk share logs */
    static struct sq__plog *logs[MAX_N][8][MAX_SG][3];
    memset(logs, 0, sizeof(logs));
    for (uint32_t i = 0; i < run->n; i++) {
        struct node *nd = &run->node[i];
        sq__group_close_logs(&nd->g);
        for (uint32_t inc = 0; inc <= nd->incarnation && inc < 8; inc++) {
            struct memdisk *d = nd->disks[inc];
            if (d == NULL) {
                continue;
            }
            bool shared = inc > 0 && d == nd->disks[inc - 1];
            if (shared) {
                memcpy(logs[i][inc], logs[i][inc - 1], sizeof(logs[i][inc]));
            } else {
                md_crash(d,
                         sq__sim_rand_below(&run->rng, 2) ? sq__sim_rand_below(&run->rng, 100) : 0);
            }
            for (uint32_t sg = 0; sg < run->cfg.nsubgroups; sg++) {
                if (!run->cfg.subgroups[sg].persistent) {
                    continue;
                }
                for (uint32_t k = 0; k < run->cfg.subgroups[sg].shards; k++) {
                    if (!shared) {
                        char dir[128], err[600];
                        snprintf(dir, sizeof(dir), "/sim/member-%u/sg%u.%u", i, sg, k);
                        struct sq__plog *log = NULL;
                        if (sq__plog_open(&log, &d->base, dir, 1 << 20, err, sizeof(err)) != 0) {
                            fail(run, "member %u incarnation %u: log %s does not open: %s", i, inc,
                                 dir, err);
                            continue;
                        }
                        if (sq__plog_count(log) == 0) {
                            sq__plog_close(log);
                            continue;
                        }
                        logs[i][inc][sg][k] = log;
                    }
                    /* The last incarnation to write on a disk: its deliveries are the tail. */
                    bool last_on_disk =
                        inc == nd->incarnation || inc + 1 >= 8 || nd->disks[inc + 1] != d;
                    if (last_on_disk && logs[i][inc][sg][k] != NULL) {
                        check_prefix(run, nd, inc, sg, k, logs[i][inc][sg][k]);
                    }
                }
            }
        }
    }
    /* Every version delivered anywhere, per subgroup and shard, sorted. */
    static uint64_t *known[MAX_SG][3];
    static uint64_t nknown[MAX_SG][3];
    memset(nknown, 0, sizeof(nknown));
    for (uint32_t sg = 0; sg < MAX_SG; sg++) {
        for (uint32_t k = 0; k < 3; k++) {
            uint64_t total = 0;
            for (uint32_t i = 0; i < run->n; i++) {
                total += run->node[i].nlog;
            }
            known[sg][k] = malloc((total + 1) * sizeof(uint64_t));
            SQ_ASSERT(known[sg][k] != NULL);
        }
    }
    for (uint32_t i = 0; i < run->n; i++) {
        for (uint64_t x = 0; x < run->node[i].nlog; x++) {
            const struct rec *r = &run->node[i].log[x];
            known[r->sg][r->shard][nknown[r->sg][r->shard]++] = r->version;
        }
    }
    for (uint32_t sg = 0; sg < MAX_SG; sg++) {
        for (uint32_t k = 0; k < 3; k++) {
            qsort(known[sg][k], nknown[sg][k], sizeof(uint64_t), cmp_version);
        }
    }
    /* A report says every version up to V is on disk at every member it covers; V itself may
     * be one nobody sent (versions are sparse). Check the latest delivered one at or below V.
     * flush = none promises nothing across a power cut: only the prefix check above applies. */
    for (uint32_t x = 0; run->flush_sync && x < run->nreports && run->failure[0] == '\0'; x++) {
        const struct report *r = &run->reports[x];
        const uint64_t *kv = known[r->sg][r->shard];
        uint64_t lo = 0, hi = nknown[r->sg][r->shard];
        while (lo < hi) {
            uint64_t mid = lo + (hi - lo) / 2;
            if (kv[mid] <= r->version) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if (lo == 0) {
            continue;
        }
        uint64_t want = kv[lo - 1];
        struct sq__plog_entry ref = {0};
        for (uint32_t k = 0; k < r->nmembers; k++) {
            struct sq__plog *log = logs[r->ids[k]][r->incarnations[k]][r->sg][r->shard];
            struct sq__plog_entry e;
            if (log == NULL || sq__plog_find(log, want, SQ_PLOG_EXACT, &e, NULL) != 0) {
                fail(run,
                     "version %#" PRIx64 " of subgroup %u shard %u was reported persisted "
                     "(frontier %#" PRIx64 ") but member %u (incarnation %u) lost it",
                     want, r->sg, r->shard, r->version, r->ids[k], r->incarnations[k]);
                break;
            }
            if (k == 0) {
                ref = e;
            } else if (e.timestamp != ref.timestamp || e.sender != ref.sender ||
                       e.size != ref.size) {
                fail(run, "version %#" PRIx64 " of subgroup %u differs between members", r->version,
                     r->sg);
            }
        }
    }
    for (uint32_t sg = 0; sg < MAX_SG; sg++) {
        for (uint32_t k = 0; k < 3; k++) {
            free(known[sg][k]);
        }
    }
    for (uint32_t i = 0; i < MAX_N; i++) {
        for (uint32_t inc = 0; inc < 8; inc++) {
            for (uint32_t sg = 0; sg < MAX_SG; sg++) {
                for (uint32_t k = 0; k < 3; k++) {
                    if (inc == 0 || logs[i][inc][sg][k] != logs[i][inc - 1][sg][k]) {
                        sq__plog_close(logs[i][inc][sg][k]);
                    }
                }
            }
        }
    }
}

/* A random layout that n members can serve: 1-3 subgroups, 1-3 shards each, min/max sizes. */
static void make_config(struct run *run, uint64_t *rng)
{
    char text[4096];
    /* State and log records move to newcomers in chunks of max_state_bytes: often many. */
    uint32_t chunk =
        sq__sim_rand_below(rng, 2) == 0 ? 1048576 : 256 + (uint32_t)sq__sim_rand_below(rng, 2048);
    size_t len = (size_t)snprintf(text, sizeof(text),
                                  "[self]\nid=0\n[group]\n"
                                  "heartbeat_timeout_ms=%u\nmax_state_bytes=%u\n"
                                  "data_dir=/sim\nsegment_bytes=1048576\n",
                                  HB_TIMEOUT_MS, chunk);
    for (uint32_t i = 0; i < run->n; i++) {
        len += (size_t)snprintf(text + len, sizeof(text) - len, "[member.%u]\nhost=sim\nport=%u\n",
                                i, 7000 + i);
    }
    uint32_t nsg = 1 + (uint32_t)sq__sim_rand_below(rng, MAX_SG);
    for (uint32_t s = 0; s < nsg; s++) {
        uint32_t shards = 1 + (uint32_t)sq__sim_rand_below(rng, 3);
        while (shards > run->n) {
            shards--;
        }
        uint32_t min = 1 + (uint32_t)sq__sim_rand_below(rng, 2);
        if (shards * min > run->n) {
            min = 1;
        }
        uint32_t max =
            sq__sim_rand_below(rng, 2) == 0 ? 0 : min + (uint32_t)sq__sim_rand_below(rng, 3);
        len += (size_t)snprintf(text + len, sizeof(text) - len,
                                "[subgroup.sg%u]\nshards=%u\nmin_members=%u\nwindow_size=%u\n"
                                "max_payload=%u\n",
                                s, shards, min, 1 + (uint32_t)sq__sim_rand_below(rng, 10),
                                8 + (uint32_t)sq__sim_rand_below(rng, 100));
        if (max != 0) {
            len += (size_t)snprintf(text + len, sizeof(text) - len, "max_members=%u\n", max);
        }
        if (sq__sim_rand_below(rng, 2) == 0) {
            len += (size_t)snprintf(text + len, sizeof(text) - len, "delivery=persistent\n");
        }
        if (sq__sim_rand_below(rng, 2) == 0) {
            /* Messages above max_smc_payload take the large path, through a small ring (it
             * fills and wraps often), across the same crashes and view changes. */
            len += (size_t)snprintf(
                text + len, sizeof(text) - len,
                "max_smc_payload=%u\nlarge_buffer_bytes=%u\nblock_size=4096\nlarge_schedule=%s\n",
                8 + (uint32_t)sq__sim_rand_below(rng, 60), 4096u << sq__sim_rand_below(rng, 2),
                sq__sim_rand_below(rng, 2) == 0 ? "chain" : "star");
        }
    }
    char err[256];
    if (sq__config_parse_string(&run->cfg, "sim.cfg", text, err, sizeof(err)) != 0) {
        fail(run, "the generated layout does not parse: %s", err);
    }
}

/* Kills member `victim` for good (links reset) or with a restart that rejoins later. */
static void kill_member(struct run *run, uint32_t victim, uint64_t restart_at)
{
    struct node *nd = &run->node[victim];
    crash_node(run, nd);
    nd->restart_at = restart_at;
    for (uint32_t j = 0; j < run->n; j++) {
        if (j != victim) {
            sq__sim_cut(run->sim, victim, j);
        }
    }
}

/* Drives run->newcomer_dies (see struct run), once per tick. */
static void newcomer_dies_step(struct run *run, uint64_t now)
{
    if (run->newcomer_dies == 1) {
        for (uint32_t i = 0; i < run->n; i++) {
            struct node *d = &run->node[i];
            if (d->crashed || d->stopped || d->joining || d->g.ctl.sst.phase != SQ_SST_RUNNING) {
                continue;
            }
            for (uint32_t sg = 0; sg < run->cfg.nsubgroups; sg++) {
                const struct sq__donation *dn = &d->g.donation[sg];
                if (!dn->active || dn->cur >= dn->nnew) {
                    continue;
                }
                uint32_t nc = d->g.ctl.sst.member_peers[dn->newcomers[dn->cur]];
                /* The leader of the change must be a third member: it learns the decision with
                 * the newcomer's vote and tells the donor, while the donor and the newcomer
                 * hear nothing from each other for a while (less than a heartbeat timeout). */
                uint32_t leader = d->g.ctl.sst.member_peers[0];
                if (leader == i || leader == nc) {
                    continue;
                }
                for (uint32_t b = 0; b < run->n; b++) {
                    struct node *bn = &run->node[b];
                    if (b == i || b == nc || b == leader || bn->crashed || bn->stopped ||
                        bn->joining) {
                        continue;
                    }
                    kill_member(run, b, 0);
                    sq__sim_hold(run->sim, i, nc, now + HB_TIMEOUT_MS * 1000u / 2);
                    run->newcomer_dies = 2;
                    run->nd_donor = i;
                    run->nd_newcomer = nc;
                    if (run->verbose) {
                        printf("  t=%" PRIu64 " member %u crashes while %u hands shard %u of "
                               "subgroup %u to %u\n",
                               now, b, i, dn->shard, sg, nc);
                    }
                    return;
                }
            }
        }
        return;
    }
    if (run->newcomer_dies == 2) {
        struct node *d = &run->node[run->nd_donor];
        struct node *nc = &run->node[run->nd_newcomer];
        if (d->crashed || d->stopped || nc->crashed || nc->stopped || nc->joining) {
            run->newcomer_dies = 1; /* something else came first: wait for another handover */
            return;
        }
        bool serving = false;
        for (uint32_t sg = 0; sg < run->cfg.nsubgroups; sg++) {
            const struct sq__donation *dn = &d->g.donation[sg];
            serving |= dn->active && dn->cur < dn->nnew &&
                       d->g.ctl.sst.member_peers[dn->newcomers[dn->cur]] == run->nd_newcomer;
        }
        if (!serving) {
            run->newcomer_dies = 1;
            return;
        }
        if (d->g.ctl.sst.phase == SQ_SST_READY) {
            kill_member(run, run->nd_newcomer, now + 5000 + sq__sim_rand_below(&run->rng, 20000));
            run->newcomer_dies = 3;
            g_newcomer_deaths++;
            if (run->verbose) {
                printf("  t=%" PRIu64 " newcomer %u dies: its donor %u decided the next view\n",
                       now, run->nd_newcomer, run->nd_donor);
            }
        }
    }
}

static int run_seed(uint64_t seed, bool verbose)
{
    uint64_t rng = seed * 0x9e3779b97f4a7c15ull + 11;
    struct run *run = calloc(1, sizeof(*run));
    SQ_ASSERT(run != NULL);
    run->seed = seed;
    run->verbose = verbose;
    run->n = 3 + (uint32_t)sq__sim_rand_below(&rng, 5);
    run->rng = seed ^ 0x5eed;
    run->kill_next_leader = sq__sim_rand_below(&rng, 5) == 0;
    run->flush_permille = 50 + (uint32_t)sq__sim_rand_below(&rng, 900);
    run->flush_sync = sq__sim_rand_below(&rng, 8) != 0;
    make_config(run, &rng);
    /* (not from rng: the other seeds keep their schedules; small chunks: handovers that take
     * long enough for a view change to be decided meanwhile) */
    run->newcomer_dies = run->n >= 4 && run->cfg.max_state_bytes < 65536 &&
                                 (seed * 0x2545f4914f6cdd1dull) >> 62 == 0
                             ? 1
                             : 0;
    struct sq_sim_params sp = {
        .min_delay_us = 5 + (uint32_t)sq__sim_rand_below(&rng, 100),
        .max_jitter_us = (uint32_t)sq__sim_rand_below(&rng, 400),
        .loss_permille = (uint32_t)sq__sim_rand_below(&rng, 30),
        .retransmit_us = 2000,
        .torn_permille = (uint32_t)sq__sim_rand_below(&rng, 200),
    };
    SQ_ASSERT(sq__sim_create(&run->sim, run->n, seed ^ 0xbeef, &sp) == 0);
    struct sq__group_mem gm;
    SQ_ASSERT(run->failure[0] != '\0' || sq__group_mem_layout(&run->cfg, &gm) == 0);
    for (uint32_t i = 0; i < run->n && run->failure[0] == '\0'; i++) {
        run->peer_ids[i] = i;
        struct node *nd = &run->node[i];
        nd->id = i;
        nd->run = run;
        nd->mem_bytes = gm.end;
        nd->mem = calloc(1, gm.end);
        SQ_ASSERT(nd->mem != NULL);
        sq__sim_attach(run->sim, i, nd->mem, gm.end);
    }
    for (uint32_t i = 0; i < run->n && run->failure[0] == '\0'; i++) {
        struct node *nd = &run->node[i];
        new_incarnation(run, nd);
        if (sq__group_start_first(&nd->g, NULL) != 0) {
            fail(run, "member %u cannot start: %s", i, nd->g.errmsg);
        }
        record_view(run, nd);
    }
    uint32_t nfaults = (uint32_t)sq__sim_rand_below(&rng, 4);
    uint64_t fault_at[4];
    uint32_t fault_kind[4];
    for (uint32_t f = 0; f < nfaults; f++) {
        fault_at[f] = 10000 + sq__sim_rand_below(&rng, 290000);
        fault_kind[f] = (uint32_t)sq__sim_rand_below(&rng, 6);
    }
    const uint64_t send_until = 400000, end = 800000;
    uint32_t send_permille = 100 + (uint32_t)sq__sim_rand_below(&rng, 600);
    if (verbose) {
        printf("seed %" PRIu64 ": n=%u subgroups=%u", seed, run->n, run->cfg.nsubgroups);
        for (uint32_t s = 0; s < run->cfg.nsubgroups; s++) {
            const struct sq_subgroup_cfg *sg = &run->cfg.subgroups[s];
            printf(" [%u shards, min %u, max %u, window %u, payload %u]", sg->shards,
                   sg->min_members, sg->max_members, sg->window_size, sg->max_payload);
        }
        printf(" delay=%u+%u loss=%u torn=%u faults=%u flush=%u/1000 %s\n", sp.min_delay_us,
               sp.max_jitter_us, sp.loss_permille, sp.torn_permille, nfaults, run->flush_permille,
               run->flush_sync ? "synced" : "not synced");
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
            if (!(fault_at[f] > now - TICK_US && fault_at[f] <= now)) {
                continue;
            }
            uint32_t victim = (uint32_t)sq__sim_rand_below(&rng, run->n);
            struct node *nd = &run->node[victim];
            if (fault_kind[f] <= 1) {
                if (fault_kind[f] == 0) {
                    kill_member(run, victim, nd->restart_at); /* a restart due stays due */
                } else {
                    crash_node(run, nd);
                }
                if (verbose) {
                    printf("  t=%" PRIu64 " crash member %u (%s)\n", now, victim,
                           fault_kind[f] == 0 ? "links reset" : "silent");
                }
            } else if (fault_kind[f] <= 3) {
                /* kill -9 and a restart that rejoins a little later */
                if (!nd->crashed && !nd->stopped && !nd->joining) {
                    kill_member(run, victim, now + 5000 + sq__sim_rand_below(&rng, 60000));
                    if (verbose) {
                        printf("  t=%" PRIu64 " kill member %u, restart at %" PRIu64 "\n", now,
                               victim, nd->restart_at);
                    }
                }
            } else {
                uint64_t side = 1 + sq__sim_rand_below(&rng, (1ull << run->n) - 2);
                uint64_t heal = now + 2000 + sq__sim_rand_below(&rng, 3000u * HB_TIMEOUT_MS);
                for (uint32_t a = 0; a < run->n; a++) {
                    for (uint32_t b = 0; b < run->n; b++) {
                        if (((side >> a) & 1u) && !((side >> b) & 1u)) {
                            if (fault_kind[f] == 4) {
                                sq__sim_cut(run->sim, a, b);
                            } else {
                                sq__sim_hold(run->sim, a, b, heal);
                            }
                        }
                    }
                }
                if (verbose) {
                    printf("  t=%" PRIu64 " partition %#" PRIx64 " from the rest (%s)\n", now, side,
                           fault_kind[f] == 4 ? "reset" : "silent, heals");
                }
            }
        }
        if (run->newcomer_dies != 0) {
            newcomer_dies_step(run, now);
        }
        for (uint32_t i = 0; i < run->n && run->failure[0] == '\0'; i++) {
            struct node *nd = &run->node[i];
            if (nd->crashed && nd->restart_at != 0 && now >= nd->restart_at) {
                nd->crashed = false;
                nd->restart_at = 0;
                nd->joining = true;
                nd->incarnation++;
                nd->keep_disk = sq__sim_rand_below(&rng, 2) == 0;
                sq__group_fini(&nd->g);
                sq__group_close_logs(&nd->g);
                memset(nd->mem, 0, nd->mem_bytes);
                new_incarnation(run, nd);
                sq__sim_reconnect(run->sim, i);
                if (verbose) {
                    printf("  t=%" PRIu64 " member %u restarts and asks to join\n", now, i);
                }
            }
            if (nd->joining && !nd->crashed && !nd->stopped) {
                /* As on the fabric, a joiner asks only once it reaches every running member. */
                bool reaches_all = true;
                for (uint32_t c = 0; c < run->n; c++) {
                    const struct node *o = &run->node[c];
                    if (c != i && !o->crashed && !o->stopped && !o->joining &&
                        sq__sim_is_cut(run->sim, i, c)) {
                        reaches_all = false;
                    }
                }
                for (uint32_t c = 0; c < run->n && reaches_all; c++) {
                    struct node *contact = &run->node[c];
                    /* The join request travels with the joiner's connection: only a
                     * member it can reach hears it. */
                    if (c != i && !contact->crashed && !contact->stopped && !contact->joining &&
                        !sq__sim_is_cut(run->sim, i, c)) {
                        sq__sst_request_join(&contact->g.ctl.sst, i);
                        break;
                    }
                }
                poll_node(run, nd);
                continue;
            }
            if (nd->crashed || nd->stopped) {
                continue;
            }
            if (sq__sim_rand_below(&rng, 1000) < run->flush_permille) {
                for (uint32_t sg = 0; sg < run->cfg.nsubgroups; sg++) {
                    int frc = sq__group_flush_log(&nd->g, sg, run->flush_sync, !run->flush_sync);
                    if (frc != 0) {
                        fail(run, "member %u: flush: %s", i, sq_strerror(frc));
                    }
                }
            }
            if (now < send_until && sq__sim_rand_below(&rng, 1000) < send_permille) {
                try_send(run, nd, &rng);
            }
            poll_node(run, nd);
        }
    }
    if (run->failure[0] == '\0') {
        check(run);
    }
    if (run->failure[0] == '\0') {
        check_logs(run);
    }
    int ok = run->failure[0] == '\0';
    if (!ok) {
        fprintf(stderr,
                "FAIL seed %" PRIu64 ": %s\n  replay: test_sim_group --seed %" PRIu64 " -v\n", seed,
                run->failure, seed);
    } else if (verbose) {
        for (uint32_t i = 0; i < run->n; i++) {
            struct node *nd = &run->node[i];
            printf("  member %u: %s, view %u, %" PRIu64 " delivered\n", i,
                   nd->crashed   ? "crashed"
                   : nd->stopped ? sq_err_name(nd->stop_reason)
                   : nd->joining ? "joining"
                                 : "running",
                   nd->g.ctl.sst.view_id, nd->nlog);
        }
    }
    for (uint32_t i = 0; i < run->n; i++) {
        sq__group_fini(&run->node[i].g);
        sq__group_close_logs(&run->node[i].g);
        free(run->node[i].mem);
        free(run->node[i].log);
        for (uint32_t sg = 0; sg < MAX_SG; sg++) {
            sq__kv_store_destroy(run->node[i].kv[sg]);
        }
        for (int k = 0; k < 8; k++) {
            struct memdisk *d = run->node[i].disks[k];
            if (d != NULL && (k == 0 || d != run->node[i].disks[k - 1])) {
                md_free(d);
                free(d);
            }
        }
    }
    free(run->reports);
    sq__sim_destroy(run->sim);
    free(run);
    return ok;
}

int main(int argc, char **argv)
{
    int rc = sq_sim_main(argc, argv, "sim group", run_seed);
    printf("views installed %" PRIu64 " (inadequate %" PRIu64 "), state handovers %" PRIu64
           ", messages delivered %" PRIu64 ", members stopped as partitioned %" PRIu64
           ", as removed %" PRIu64 ", persisted reports %" PRIu64 ", log records checked %" PRIu64
           ", newcomers dead after the next view was decided %" PRIu64 "\n",
           g_views, g_inadequate, g_handovers, g_delivered, g_partitioned, g_removed, g_reports,
           g_checked_records, g_newcomer_deaths);
    return rc;
}
