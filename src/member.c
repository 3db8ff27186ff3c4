/* member.c: a group member at run time: the event-loop thread that drives the protocol core over
 * the fabric transport, and the public sq_member_* API around it. */
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "config.h"
#include "group.h"
#include "hash.h"
#include "log.h"
#include "p2p.h"
#include "restart.h"
#include "smc.h"
#include "view.h"
#include "transport/fabric/fabric.h"

/* The loop wakes at least this often when idle, to bump the heartbeat. */
#define SQ_IDLE_WAKE_MS 100

enum member_state { ST_OPEN, ST_RUNNING, ST_FAILED, ST_CLOSING };

/* Queries a member may have waiting for answers at once. */
#define MAX_QUERIES 64
/* Ordered calls a member may have waiting for replies at once, and replies to others' calls
 * waiting for room in a p2p ring. */
#define MAX_CALLS 16
#define MAX_REPLY_BACKLOG 1024
/* An ordered call's payload starts with the call id and the caller's peer index. */
#define CALL_HDR 16u
/* Reply status travels in the first 4 bytes of a reply (a negative SQ_E* or 0). */
#define REPLY_HDR 8u
static_assert(SQ_QUERY_MAX_BYTES + REPLY_HDR <= SQ_P2P_MAX_PAYLOAD, "query sizes");

struct sq_member {
    struct sq_config cfg;
    uint32_t rank;
    uint8_t *table;
    size_t table_bytes;
    struct sq_transport *t;
    struct sq__group g; /* the control table, my shards, layouts and state handovers */
    bool g_ready;
    uint32_t reserve_view[SQ_MAX_SUBGROUPS]; /* view of each subgroup's open reservation */
    sq_deliver_fn deliver;
    void *deliver_arg;
    sq_view_fn on_view;
    void *on_view_arg;
    int failure;                       /* why the member stopped, 0 while running */
    uint32_t peer_ids[SQ_MAX_MEMBERS]; /* configured ids by transport peer index */
    uint32_t self_peer;
    uint64_t pending_joins; /* peers that asked to join and are not in a view yet */
    /* Links from peers of the current view: the member itself, admitted through another member
     * before its link to this one came up, or a restarted process. Its row tells: a heartbeat
     * that moves is the member; one that stays still for a heartbeat timeout, a process that
     * is gone. */
    uint64_t doubtful_joins;
    uint64_t doubt_hb[SQ_MAX_MEMBERS];
    uint64_t doubt_since_us[SQ_MAX_MEMBERS];
    size_t p2p_off; /* after the group's memory: the point-to-point rings */
    struct sq__p2p p2p;
    bool p2p_ready;
    sq_query_fn on_query;
    void *on_query_arg;
    uint64_t next_query_id;
    struct pending_query {
        uint64_t id; /* 0: free */
        uint32_t peer;
        bool done;
        int rc;
        void *reply;
        size_t cap;
        size_t len;
    } queries[MAX_QUERIES];
    sq_call_fn on_call;
    void *on_call_arg;
    uint64_t next_call_id;
    struct pending_call {
        uint64_t id;    /* 0: free */
        bool delivered; /* here, in the total order: the expected repliers are known */
        bool done;
        int rc;
        uint64_t expect; /* peers that must answer (the view at delivery) */
        uint64_t got;
        sq_reply *replies;
        uint32_t max, n;
    } calls[MAX_CALLS];
    struct backlog_reply {
        uint32_t peer;
        uint64_t id;
        size_t len;
        uint8_t *bytes;
    } * backlog;
    uint32_t nbacklog;

    /* The persistence thread: writes and syncs the logs of persistent subgroups, so that the
     * event loop never waits for the disk. */
    pthread_t flusher;
    bool flusher_started;
    pthread_mutex_t pmu; /* guards the two flags below */
    pthread_cond_t pcv;
    bool pwork, pstop;
    _Atomic int persist_failed;
    bool offline_logs; /* sq_member_open_logs: logs opened for reading only */
    struct sq__plog *found[SQ_MAX_SUBGROUPS]; /* logs found at start, handed to the group */
    uint32_t found_shard[SQ_MAX_SUBGROUPS];
    /* The view file (restart.h): what it says now, whether a view installed since it was last
     * written, and, per subgroup, a handed-over log not yet durable (and 1 + its last version). */
    struct sq__viewfile vf;
    bool vf_dirty;
    bool vf_pending[SQ_MAX_SUBGROUPS];
    uint64_t vf_want[SQ_MAX_SUBGROUPS];
    /* The first view of a restart from the disks: until every member of it has written its row
     * here, no view change may follow (two would-be leaders could otherwise each go on with
     * part of the group). */
    bool restart_guard;
    uint64_t restart_guard_until_ms; /* a member of that view not there by then ends this one */

    pthread_mutex_t mu; /* guards smc, state and errmsg */
    pthread_cond_t cv;  /* signalled on delivery progress, failure and close */
    int waiters;        /* threads in wait_progress: the loop signals only when there are some */
    pthread_t loop;
    bool loop_started;
    pthread_t loop_self;
    enum member_state state;
    _Atomic uint64_t delivered;
    char errmsg[256];
};

static void set_error(sq_member *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail_queries_to(sq_member *m, uint32_t peer);
static void set_error(sq_member *m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->errmsg, sizeof(m->errmsg), fmt, ap);
    va_end(ap);
}

static void handle_call(sq_member *m, const sq_message *msg);
struct pending_call;
static void add_call_reply(sq_member *m, struct pending_call *c, uint32_t peer, int status,
                           const void *data, size_t len);

static void on_deliver(void *arg, const sq_message *msg)
{
    sq_member *m = arg;
    if (msg->flags & SQ_MSG_REPLAYED) {
        if (m->deliver != NULL) {
            m->deliver(m->deliver_arg, msg); /* rebuilding state at a restart: not a delivery */
        }
        return;
    }
    if (msg->flags & SQ_MSG_ORDERED_CALL) {
        handle_call(m, msg);
        return;
    }
    atomic_fetch_add_explicit(&m->delivered, 1, memory_order_relaxed);
    if (m->deliver != NULL) {
        m->deliver(m->deliver_arg, msg);
    }
}

int sq_member_open(sq_member **out, const char *config_path, char *err, size_t err_size)
{
    *out = NULL;
    sq_member *m = calloc(1, sizeof(*m));
    if (m == NULL) {
        return SQ_ENOMEM;
    }
    int rc = sq__config_load(&m->cfg, config_path, err, err_size);
    if (rc != 0) {
        free(m);
        return rc;
    }
    m->rank = (uint32_t)sq__config_rank_of(&m->cfg, m->cfg.self_id);
    sq__log_set_level(m->cfg.log_level);
    for (uint32_t i = 0; i < m->cfg.nmembers; i++) {
        m->peer_ids[i] = m->cfg.members[i].id;
    }
    struct sq__group_mem gm;
    rc = sq__group_mem_layout(&m->cfg, &gm);
    if (rc != 0) {
        if (err != NULL) {
            snprintf(err, err_size, "%s: the subgroup layout is out of range", config_path);
        }
        free(m);
        return SQ_ECONFIG;
    }
    /* Every table comes twice: view v uses copy v % 2, so writes of the view being left never
     * land in the table of the view being installed. */
    m->p2p_off = gm.end;
    m->table_bytes = m->p2p_off + sq__p2p_area_bytes(m->cfg.nmembers);
    m->self_peer = m->rank;
    /* Page-aligned and zeroed: registered with the fabric as one region. */
    if (posix_memalign((void **)&m->table, 4096, m->table_bytes) != 0) {
        free(m);
        return SQ_ENOMEM;
    }
    memset(m->table, 0, m->table_bytes);
    m->backlog = calloc(MAX_REPLY_BACKLOG, sizeof(m->backlog[0]));
    if (m->backlog == NULL) {
        free(m->table);
        free(m);
        return SQ_ENOMEM;
    }
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    pthread_mutex_init(&m->pmu, NULL);
    pthread_cond_init(&m->pcv, NULL);
    m->state = ST_OPEN;
    *out = m;
    return 0;
}

/* Callbacks are set before start: the loop thread reads them without the lock. */
static int before_start(const sq_member *m)
{
    return m == NULL || m->state != ST_OPEN ? SQ_ESTATE : 0;
}

int sq_member_on_view(sq_member *m, sq_view_fn fn, void *arg)
{
    int rc = before_start(m);
    if (rc == 0) {
        m->on_view = fn;
        m->on_view_arg = arg;
    }
    return rc;
}

int sq_member_on_state(sq_member *m, sq_state_save_fn save, sq_state_load_fn load, void *arg)
{
    int rc = before_start(m);
    if (rc == 0) {
        m->g.save = save;
        m->g.load = load;
        m->g.state_arg = arg;
    }
    return rc;
}

int sq_member_on_query(sq_member *m, sq_query_fn fn, void *arg)
{
    int rc = before_start(m);
    if (rc == 0) {
        m->on_query = fn;
        m->on_query_arg = arg;
    }
    return rc;
}

int sq_member_on_call(sq_member *m, sq_call_fn fn, void *arg)
{
    int rc = before_start(m);
    if (rc == 0) {
        m->on_call = fn;
        m->on_call_arg = arg;
    }
    return rc;
}

int sq_member_on_persisted(sq_member *m, sq_persisted_fn fn, void *arg)
{
    int rc = before_start(m);
    if (rc == 0) {
        m->g.persisted = fn;
        m->g.persisted_arg = arg;
    }
    return rc;
}

int sq_member_on_deliver(sq_member *m, sq_deliver_fn fn, void *arg)
{
    int rc = before_start(m);
    if (rc == 0) {
        m->deliver = fn;
        m->deliver_arg = arg;
    }
    return rc;
}

static bool in_loop_thread(const sq_member *m)
{
    return m->loop_started && pthread_equal(pthread_self(), m->loop_self);
}

static void fail_locked(sq_member *m, int rc)
{
    if (m->state == ST_RUNNING) {
        m->state = ST_FAILED;
        m->failure = rc;
        if (rc == SQ_EPARTITIONED) {
            set_error(m,
                      "member %u stopped in view %u: it suspects %d of the %u members, so it "
                      "is on the minority side and may not go on alone",
                      m->cfg.self_id, m->g.ctl.sst.view_id,
                      __builtin_popcountll(m->g.ctl.sst.suspected), m->g.ctl.sst.L.nmembers);
        } else if (rc == SQ_ELEFT) {
            set_error(m, "member %u left the group in view %u", m->cfg.self_id,
                      m->g.ctl.sst.view_id);
        } else if (rc == SQ_EREMOVED) {
            set_error(m,
                      "member %u stopped in view %u: the other members removed it from the "
                      "group (it may rejoin as a new member)",
                      m->cfg.self_id, m->g.ctl.sst.view_id);
        } else {
            set_error(m, "member %u stopped: %s (%s)", m->cfg.self_id, sq_strerror(rc),
                      m->g.errmsg[0] ? m->g.errmsg : "no detail");
        }
        sq__log(rc == SQ_ELEFT ? SQ_LOG_INFO : SQ_LOG_ERROR, "%s", m->errmsg);
    }
    pthread_cond_broadcast(&m->cv);
}

static void report_view(sq_member *m, const uint32_t *removed, uint32_t nremoved, uint64_t dropped)
{
    const struct sq__sst *c = &m->g.ctl.sst;
    char list[256] = "", shards[256] = "";
    size_t len = 0, slen = 0;
    for (uint32_t i = 0; i < c->L.nmembers && len < sizeof(list) - 16; i++) {
        len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%u", i ? "," : "",
                                c->member_ids[i]);
    }
    static uint32_t my_shard[SQ_MAX_SUBGROUPS], shard_of[SQ_MAX_SUBGROUPS * SQ_MAX_MEMBERS];
    for (uint32_t s = 0; s < m->cfg.nsubgroups; s++) {
        for (uint32_t r = 0; r < c->L.nmembers; r++) {
            uint8_t k = m->g.assign.shard[s][r];
            shard_of[s * c->L.nmembers + r] = k == SQ_SHARD_NONE ? SQ_NO_SHARD : k;
        }
        my_shard[s] = shard_of[s * c->L.nmembers + c->my_rank];
        if (m->cfg.nsubgroups > 1 || m->cfg.subgroups[s].shards > 1 || my_shard[s] == SQ_NO_SHARD) {
            if (my_shard[s] == SQ_NO_SHARD) {
                slen += (size_t)snprintf(shards + slen, sizeof(shards) - slen, ", %s: standing by",
                                         m->cfg.subgroups[s].name);
            } else {
                slen += (size_t)snprintf(shards + slen, sizeof(shards) - slen, ", %s: shard %u",
                                         m->cfg.subgroups[s].name, my_shard[s]);
            }
            slen = SQ_MIN(slen, sizeof(shards) - 1);
        }
    }
    sq__log(SQ_LOG_INFO, "view %u installed: members %s, my rank %u%s%s", c->view_id, list,
            c->my_rank, shards, nremoved ? " (members left)" : "");
    if (!m->g.adequate) {
        sq__log(SQ_LOG_WARN, "view %u is inadequate (%s): no messages until more members join",
                c->view_id, m->g.inadequate_why);
    }
    if (dropped > 0) {
        sq__log(SQ_LOG_WARN, "view change dropped %llu of my messages (sent after the trim)",
                (unsigned long long)dropped);
    }
    if (m->on_view != NULL) {
        uint32_t awaiting = 0;
        for (uint32_t s = 0; s < m->cfg.nsubgroups; s++) {
            awaiting |= (uint32_t)m->g.awaiting[s] << s;
        }
        sq_view v = {.view_id = c->view_id,
                     .nmembers = c->L.nmembers,
                     .awaiting_state = awaiting,
                     .member_ids = c->member_ids,
                     .my_rank = c->my_rank,
                     .nremoved = nremoved,
                     .removed_ids = removed,
                     .dropped = dropped,
                     .adequate = m->g.adequate,
                     .nsubgroups = m->cfg.nsubgroups,
                     .my_shard = my_shard,
                     .shard_of = shard_of};
        m->on_view(m->on_view_arg, &v);
    }
}

static void tell_transport_view(sq_member *m)
{
    uint64_t peers = 0;
    for (uint32_t r = 0; r < m->g.ctl.sst.L.nmembers; r++) {
        peers |= 1ull << m->g.ctl.sst.member_peers[r];
    }
    m->t->vt->set_view(m->t, m->g.ctl.sst.view_id, peers);
}

/* Every shard delivered up to its trim: close the links of the members that left and start the
 * next view in the other copy of every table. */
static bool any_persistent(const sq_member *m);

/* After a blocking write on the loop thread: heartbeats that did not move meanwhile were not
 * looked for, so their clocks start again (the others were likely writing too). */
static void pause_heartbeats(sq_member *m)
{
    if (!m->g.ctl_ready) {
        return;
    }
    uint64_t now = sq__mono_us();
    for (uint32_t r = 0; r < m->g.ctl.sst.L.nmembers; r++) {
        m->g.ctl.seen_hb_at_us[r] = now;
    }
}

/* Replaces the view file with `vf` (then m->vf), on the loop thread. On error the member's
 * message says so (unless it failed already) and the error is returned. */
static int write_view_file(sq_member *m, const struct sq__viewfile *vf)
{
    char path[700], err[900];
    sq__viewfile_path(&m->cfg, m->cfg.self_id, path, sizeof(path));
    int rc = sq__viewfile_write(path, vf, err, sizeof(err));
    pause_heartbeats(m);
    if (rc != 0) {
        sq__log(SQ_LOG_ERROR, "%s", err);
        if (m->g.failed == 0) {
            snprintf(m->g.errmsg, sizeof(m->g.errmsg), "cannot write the view file (see the log)");
        }
        return rc;
    }
    m->vf = *vf;
    return 0;
}

/* A view was set up: the view file is rewritten, and the shards that wait for a handover are
 * not this member's whole history until the handed-over log is durable. */
static void note_view(sq_member *m)
{
    m->vf_dirty = true;
    for (uint32_t s = 0; s < m->cfg.nsubgroups; s++) {
        if (m->g.awaiting[s] && !m->vf_pending[s]) {
            m->vf_want[s] = 0;
        }
        /* a handed-over log counts only once durable, even if a view installs before that */
        m->vf_pending[s] |= m->g.awaiting[s];
    }
}

/* Writes the view file when what it should say changed (restart.h). Called by the loop thread
 * (or before it starts); 0 or the write error. */
static int save_view(sq_member *m)
{
    if (!any_persistent(m) || !m->g.ctl_ready) {
        return 0;
    }
    bool pending = false;
    for (uint32_t s = 0; s < m->cfg.nsubgroups; s++) {
        pending |= m->vf_pending[s];
    }
    if (!m->vf_dirty && !pending) {
        return 0;
    }
    const struct sq__sst *c = &m->g.ctl.sst;
    struct sq__viewfile vf = {.view_next = c->view_id + 1};
    for (uint32_t r = 0; r < c->L.nmembers; r++) {
        vf.members |= 1u << c->member_peers[r];
    }
    for (uint32_t s = 0; s < m->cfg.nsubgroups; s++) {
        if (!m->cfg.subgroups[s].persistent) {
            continue;
        }
        for (uint32_t r = 0; r < c->L.nmembers; r++) {
            uint8_t k = m->g.holders.shard[s][r];
            if (k != SQ_SHARD_NONE && m->g.shard_base[s] + k < 16) {
                vf.held |= (uint16_t)(1u << (m->g.shard_base[s] + k));
            }
        }
        uint8_t k = m->g.holders.shard[s][c->my_rank];
        if (k == SQ_SHARD_NONE || m->g.shard_base[s] + k >= 16) {
            continue;
        }
        if (m->vf_pending[s]) {
            struct sq__plog *log = m->g.log[s];
            if (m->g.awaiting[s] || log == NULL) {
                continue;
            }
            if (m->vf_want[s] == 0) {
                m->vf_want[s] = sq__plog_count(log) > 0 ? sq__plog_last(log).version + 1 : 1;
            }
            if (sq__plog_count(log) > 0 && atomic_load(&m->g.durable_next[s]) < m->vf_want[s]) {
                continue;
            }
            m->vf_pending[s] = false;
            m->vf_dirty = true;
        }
        vf.mine |= (uint16_t)(1u << (m->g.shard_base[s] + k));
    }
    if (!m->vf_dirty) {
        return 0;
    }
    m->vf_dirty = false;
    if (m->vf.acc_view > vf.view_next) {
        vf.acc_view = m->vf.acc_view; /* accepted, not installed yet */
        vf.acc_members = m->vf.acc_members;
    }
    if (memcmp(&vf, &m->vf, sizeof(vf)) == 0) {
        return 0;
    }
    return write_view_file(m, &vf);
}

/* Before this member accepts a proposed next view (the loop thread, in a poll): it records the
 * view and its members in its view file, durably, so that a restart from a majority knows of it
 * even if only members missing then installed it (restart.h). */
static int record_accept(void *arg, const struct sq__vc_value *v)
{
    sq_member *m = arg;
    const struct sq__sst *c = &m->g.ctl.sst;
    struct sq__viewfile vf = m->vf;
    vf.acc_view = c->view_id + 2;
    vf.acc_members = (uint32_t)v->added;
    for (uint32_t r = 0; r < c->L.nmembers; r++) {
        if (!((v->removed >> r) & 1u)) {
            vf.acc_members |= 1u << c->member_peers[r];
        }
    }
    if (vf.acc_view == m->vf.acc_view && vf.acc_members == m->vf.acc_members) {
        return 0;
    }
    int rc = write_view_file(m, &vf);
    if (rc != 0 && m->g.failed == 0) {
        m->g.failed = rc; /* inside a poll: the poll reports it */
    }
    return rc;
}

static int install_next_view(sq_member *m)
{
    const struct sq__sst *c = &m->g.ctl.sst;
    uint32_t removed[SQ_MAX_MEMBERS], nremoved = 0;
    for (uint32_t r = 0; r < c->L.nmembers; r++) {
        uint32_t peer = c->member_peers[r];
        bool gone = (c->decision.removed >> r) & 1u;
        bool rejoins = (c->decision.added >> peer) & 1u; /* a new incarnation, same link */
        if (gone) {
            removed[nremoved++] = c->member_ids[r];
        }
        if ((gone && !rejoins) || (m->g.ctl.fence_cut >> r) & 1u) {
            m->t->vt->disconnect(m->t, peer);
        }
    }
    m->pending_joins &= ~c->decision.added;
    uint64_t next_peers = 0;
    for (uint32_t r = 0; r < c->L.nmembers; r++) {
        if (!((c->decision.removed >> r) & 1u)) {
            next_peers |= 1ull << c->member_peers[r];
        }
    }
    next_peers |= c->decision.added;
    for (uint32_t i = 0; i < MAX_CALLS; i++) {
        struct pending_call *pc = &m->calls[i];
        if (pc->id == 0 || pc->done) {
            continue;
        }
        if (!pc->delivered) {
            pc->done = true; /* it was past the trim: never delivered anywhere */
            pc->rc = SQ_EVIEWCHANGE;
            continue;
        }
        for (uint32_t p = 0; p < m->cfg.nmembers; p++) {
            if (((pc->expect & ~pc->got) >> p) & 1u && !((next_peers >> p) & 1u)) {
                add_call_reply(m, pc, p, SQ_EPEER, NULL, 0); /* it left before answering */
            }
        }
    }
    int rc = sq__group_install(&m->g);
    if (rc != 0) {
        return rc;
    }
    m->rank = m->g.ctl.sst.my_rank;
    m->restart_guard = false; /* a view change completed: every member of the last one took it */
    m->g.gate = false;
    tell_transport_view(m);
    report_view(m, removed, nremoved, m->g.dropped);
    note_view(m);
    return save_view(m);
}

static void broadcast(sq_member *m)
{
    if (m->waiters > 0) {
        pthread_cond_broadcast(&m->cv);
    }
}

/* Turns links the transport saw fail into suspicions of the members behind them. */
static void admit_join(sq_member *m, uint32_t p)
{
    sq__log(SQ_LOG_INFO, "member %u asks to join", m->peer_ids[p]);
    m->pending_joins |= 1ull << p;
    fail_queries_to(m, p);
    sq__p2p_reset_peer(&m->p2p, p); /* a new incarnation: start both rings afresh */
}

static int rank_of_peer(const struct sq__sst *c, uint32_t p)
{
    for (uint32_t r = 0; r < c->L.nmembers; r++) {
        if (c->member_peers[r] == p) {
            return (int)r;
        }
    }
    return -1;
}

/* Links that came up since the last look: joins, unless the peer is in the view (see
 * doubtful_joins). */
static void note_joins(sq_member *m)
{
    const struct sq__sst *c = &m->g.ctl.sst;
    uint64_t now = sq__mono_us();
    uint64_t joined = m->t->vt->joined(m->t);
    for (uint32_t p = 0; p < m->cfg.nmembers; p++) {
        if (!((joined >> p) & 1u)) {
            continue;
        }
        int r = rank_of_peer(c, p);
        if (r >= 0 && (uint32_t)r != c->my_rank) {
            m->doubtful_joins |= 1ull << p;
            m->doubt_hb[p] = sq__sst_col(c, (uint32_t)r, SQ_SST_OFF_HEARTBEAT);
            m->doubt_since_us[p] = now;
        } else {
            admit_join(m, p);
        }
    }
    /* As long as a heartbeat may stay still before suspicion: the member itself may still be
     * linking up with the others and writing its view file before its first heartbeat. */
    uint64_t wait_us = 1000ull * (uint64_t)m->cfg.heartbeat_timeout_ms;
    for (uint32_t p = 0; p < m->cfg.nmembers; p++) {
        if (!((m->doubtful_joins >> p) & 1u)) {
            continue;
        }
        int r = rank_of_peer(c, p);
        if (r >= 0 && sq__sst_row_valid(c, (uint32_t)r) &&
            sq__sst_col(c, (uint32_t)r, SQ_SST_OFF_HEARTBEAT) != m->doubt_hb[p]) {
            m->doubtful_joins &= ~(1ull << p); /* the member itself: its link to me came late */
            sq__log(SQ_LOG_DEBUG, "member %u linked up; it is in the view already", m->peer_ids[p]);
        } else if (r < 0 || now - m->doubt_since_us[p] >= wait_us) {
            m->doubtful_joins &= ~(1ull << p); /* a new process: the one in the view is gone */
            admit_join(m, p);
        }
    }
}

static void suspect_failed_links(sq_member *m)
{
    note_joins(m);
    uint64_t failed = m->t->vt->failed_peers(m->t);
    m->pending_joins &= ~failed; /* a joiner that went away again is not waited for */
    m->doubtful_joins &= ~failed;
    /* Asked again in every view until a view adds it: a request that arrives while a change is
     * already fixed would otherwise be lost with that view. */
    for (uint32_t p = 0; p < m->cfg.nmembers; p++) {
        if ((m->pending_joins >> p) & 1u) {
            sq__sst_request_join(&m->g.ctl.sst, p);
        }
    }
    if (failed == 0) {
        return;
    }
    for (uint32_t p = 0; p < m->cfg.nmembers; p++) {
        if ((failed >> p) & 1u) {
            fail_queries_to(m, p);
        }
    }
    for (uint32_t r = 0; r < m->g.ctl.sst.L.nmembers; r++) {
        if (r != m->g.ctl.sst.my_rank && (failed >> m->g.ctl.sst.member_peers[r]) & 1u) {
            sq__sst_suspect(&m->g.ctl.sst, r);
        }
    }
}

static struct pending_call *find_call(sq_member *m, uint64_t id)
{
    for (uint32_t i = 0; i < MAX_CALLS; i++) {
        if (m->calls[i].id != 0 && m->calls[i].id == id) {
            return &m->calls[i];
        }
    }
    return NULL;
}

static void check_call_done(struct pending_call *c)
{
    if (c->delivered && !c->done && (c->expect & ~c->got) == 0) {
        c->done = true;
    }
}

static void add_call_reply(sq_member *m, struct pending_call *c, uint32_t peer, int status,
                           const void *data, size_t len)
{
    if ((c->got >> peer) & 1u) {
        return;
    }
    c->got |= 1ull << peer;
    if (c->n < c->max) {
        sq_reply *r = &c->replies[c->n++];
        r->member_id = m->peer_ids[peer];
        r->status = status;
        r->size = len;
        if (len > 0) {
            memcpy(r->data, data, SQ_MIN(len, sizeof(r->data)));
        }
    }
    check_call_done(c);
}

/* Runs the ordered-call handler for a call delivered here and sends the answer to the caller
 * (or keeps it, when I am the caller). */
static void handle_call(sq_member *m, const sq_message *msg)
{
    static uint8_t reply[SQ_P2P_MAX_PAYLOAD]; /* loop thread only */
    if (msg->size < CALL_HDR) {
        sq__log(SQ_LOG_WARN, "ignoring a malformed ordered call from member %u", msg->sender_id);
        return;
    }
    uint64_t id, caller;
    memcpy(&id, msg->data, 8);
    memcpy(&caller, (const uint8_t *)msg->data + 8, 8);
    sq_message call = *msg;
    call.data = (const uint8_t *)msg->data + CALL_HDR;
    call.size = msg->size - CALL_HDR;
    size_t len = 0;
    int32_t status = SQ_ENOTSUP;
    if (m->on_call != NULL) {
        status = m->on_call(m->on_call_arg, &call, reply + REPLY_HDR, SQ_QUERY_MAX_BYTES, &len);
    }
    if (len > SQ_QUERY_MAX_BYTES) {
        status = SQ_EMSGSIZE;
        len = 0;
    }
    if (caller == m->self_peer) {
        struct pending_call *c = find_call(m, id);
        if (c != NULL) {
            c->delivered = true;
            /* Every member of the shard it was delivered in answers. */
            const struct sq__sst *sh = &m->g.shard[msg->subgroup].sst;
            for (uint32_t r = 0; r < sh->L.nmembers; r++) {
                c->expect |= 1ull << sh->member_peers[r];
            }
            add_call_reply(m, c, m->self_peer, status, reply + REPLY_HDR, len);
        }
        return;
    }
    if (caller >= m->cfg.nmembers) {
        return;
    }
    memcpy(reply, &status, 4);
    memset(reply + 4, 0, 4);
    if (m->nbacklog == 0 && sq__p2p_stage(&m->p2p, (uint32_t)caller, SQ_P2P_CALL_REPLY, id, reply,
                                          REPLY_HDR + len) == 0) {
        return;
    }
    /* The caller's ring is full: keep the answer, in order, until it has room. */
    if (m->nbacklog == MAX_REPLY_BACKLOG) {
        sq__log(SQ_LOG_ERROR,
                "dropping an ordered-call reply to member %u: %d replies wait "
                "already",
                m->peer_ids[caller], MAX_REPLY_BACKLOG);
        return;
    }
    struct backlog_reply *b = &m->backlog[m->nbacklog];
    b->bytes = malloc(REPLY_HDR + len);
    if (b->bytes == NULL) {
        return;
    }
    memcpy(b->bytes, reply, REPLY_HDR + len);
    b->peer = (uint32_t)caller;
    b->id = id;
    b->len = REPLY_HDR + len;
    m->nbacklog++;
}

static void drain_backlog(sq_member *m)
{
    uint32_t k = 0;
    while (k < m->nbacklog &&
           sq__p2p_stage(&m->p2p, m->backlog[k].peer, SQ_P2P_CALL_REPLY, m->backlog[k].id,
                         m->backlog[k].bytes, m->backlog[k].len) == 0) {
        free(m->backlog[k].bytes);
        k++;
    }
    memmove(m->backlog, m->backlog + k, (m->nbacklog - k) * sizeof(m->backlog[0]));
    m->nbacklog -= k;
}

static struct pending_query *find_query(sq_member *m, uint64_t id, uint32_t peer)
{
    for (uint32_t i = 0; i < MAX_QUERIES; i++) {
        if (m->queries[i].id == id && m->queries[i].peer == peer) {
            return &m->queries[i];
        }
    }
    return NULL;
}

static void fail_queries_to(sq_member *m, uint32_t peer)
{
    for (uint32_t i = 0; i < MAX_QUERIES; i++) {
        if (m->queries[i].id != 0 && !m->queries[i].done && m->queries[i].peer == peer) {
            m->queries[i].done = true;
            m->queries[i].rc = SQ_EPEER;
        }
    }
}

/* Answers queries and takes replies from every connected member. Bounded: at most a ring's
 * worth per peer per call. */
static int serve_p2p(sq_member *m)
{
    int events = 0;
    static uint8_t reply[SQ_P2P_MAX_PAYLOAD]; /* loop thread only */
    drain_backlog(m);
    for (uint32_t p = 0; p < m->cfg.nmembers; p++) {
        struct sq__p2p_msg msg;
        for (uint32_t k = 0; k < SQ_P2P_SLOTS && sq__p2p_peek(&m->p2p, p, &msg) == 1; k++) {
            if (msg.kind == SQ_P2P_REQUEST) {
                if (!sq__p2p_can_stage(&m->p2p, p)) {
                    break; /* no room for the answer yet: the asker must read first */
                }
                size_t len = 0;
                int32_t status = SQ_ENOTSUP;
                if (m->on_query != NULL) {
                    status = m->on_query(m->on_query_arg, m->peer_ids[p], msg.data, msg.size,
                                         reply + REPLY_HDR, SQ_QUERY_MAX_BYTES, &len);
                }
                if (len > SQ_QUERY_MAX_BYTES) {
                    status = SQ_EMSGSIZE;
                    len = 0;
                }
                memcpy(reply, &status, 4);
                memset(reply + 4, 0, 4);
                (void)sq__p2p_stage(&m->p2p, p, SQ_P2P_REPLY, msg.id, reply, REPLY_HDR + len);
            } else if (msg.kind == SQ_P2P_CALL_REPLY && msg.size >= REPLY_HDR) {
                struct pending_call *c = find_call(m, msg.id);
                if (c != NULL) {
                    int32_t status;
                    memcpy(&status, msg.data, 4);
                    add_call_reply(m, c, p, status, (const uint8_t *)msg.data + REPLY_HDR,
                                   msg.size - REPLY_HDR);
                }
            } else if (msg.kind == SQ_P2P_REPLY && msg.size >= REPLY_HDR) {
                struct pending_query *q = find_query(m, msg.id, p);
                if (q != NULL && !q->done) {
                    int32_t status;
                    memcpy(&status, msg.data, 4);
                    q->len = msg.size - REPLY_HDR;
                    memcpy(q->reply, (const uint8_t *)msg.data + REPLY_HDR, SQ_MIN(q->len, q->cap));
                    q->rc = status;
                    q->done = true;
                }
            }
            sq__p2p_consume(&m->p2p, p);
            events++;
        }
    }
    (void)sq__p2p_flush(&m->p2p);
    return events;
}

/* The restart guard: lifted once every member of the first view wrote its row here; a
 * suspicion before that ends this member (see restart_guard). */
static int check_restart_guard(sq_member *m)
{
    const struct sq__sst *c = &m->g.ctl.sst;
    uint32_t missing = UINT32_MAX;
    for (uint32_t r = 0; r < c->L.nmembers && missing == UINT32_MAX; r++) {
        if (r != c->my_rank && !sq__sst_row_valid(c, r)) {
            missing = r;
        }
    }
    if (missing == UINT32_MAX) {
        /* Every member wrote its row, so each has the view in its view file (run_loop writes it
         * before the first row goes out): from now on a restart from a majority knows of it,
         * and the shards may deliver and persist in it. */
        m->restart_guard = false;
        m->g.gate = false;
        sq__log(SQ_LOG_INFO, "every member took the first view of the restart");
        return 1;
    }
    if (c->suspected != 0 || sq__mono_ms() >= m->restart_guard_until_ms) {
        snprintf(m->g.errmsg, sizeof(m->g.errmsg),
                 "the restart did not complete: member %u "
                 "never took its first view (it may have followed another member's restart, or "
                 "failed); start this member again",
                 c->member_ids[missing]);
        return SQ_ESTATE;
    }
    return 0;
}

/* Before each poll under the restart guard: a member of the first view that has not written its
 * row yet may still be replaying its log or linking up; it is not suspected for that (the
 * guard's deadline bounds the wait). */
static void hold_restart_heartbeats(sq_member *m)
{
    struct sq__smc *c = &m->g.ctl;
    uint64_t now = sq__mono_us();
    for (uint32_t r = 0; r < c->sst.L.nmembers; r++) {
        if (r != c->sst.my_rank && !sq__sst_row_valid(&c->sst, r)) {
            c->seen_hb_at_us[r] = now;
        }
    }
}

static void *loop_main(void *arg)
{
    sq_member *m = arg;
    pthread_mutex_lock(&m->mu);
    while (m->state == ST_RUNNING) {
        suspect_failed_links(m);
        if (m->restart_guard) {
            hold_restart_heartbeats(m);
        }
        int rc = sq__group_poll(&m->g, sq__mono_us());
        if (m->g.appended) {
            m->g.appended = false;
            pthread_mutex_lock(&m->pmu);
            m->pwork = true;
            pthread_cond_signal(&m->pcv);
            pthread_mutex_unlock(&m->pmu);
        }
        int prc = atomic_load(&m->persist_failed);
        if (prc != 0 && rc >= 0) {
            snprintf(m->g.errmsg, sizeof(m->g.errmsg),
                     "writing the log failed: %s (nothing "
                     "more is delivered here, since it could not be made durable)",
                     sq_strerror(prc));
            rc = prc;
        }
        if (rc < 0) {
            fail_locked(m, rc);
            break;
        }
        if (rc >= 0) {
            int vrc = save_view(m);
            rc = vrc != 0 ? vrc : rc;
        }
        if (rc >= 0 && m->restart_guard) {
            int grc = check_restart_guard(m);
            rc = grc < 0 ? grc : rc + grc;
        }
        if (rc < 0) {
            fail_locked(m, rc);
            break;
        }
        enum sq__sst_phase phase = sq__group_phase(&m->g);
        if (phase == SQ_SST_STOPPED) {
            if (m->g.ctl.sst.stop_reason == SQ_ELEFT) {
                (void)m->t->vt->flush(m->t); /* the others must see me ask to leave */
            }
            fail_locked(m, m->g.ctl.sst.stop_reason);
            break;
        }
        if (phase == SQ_SST_READY) {
            int irc = install_next_view(m);
            if (irc != 0) {
                fail_locked(m, irc);
                break;
            }
            rc = 1;
        }
        if (serve_p2p(m) > 0) {
            rc = rc > 0 ? rc + 1 : 1;
        }
        if (rc > 0) {
            broadcast(m);
        }
        pthread_mutex_unlock(&m->mu);
        /* Posting writes makes system calls: do it without the lock so senders can fill slots
         * meanwhile. Only this thread touches the transport. Then, when busy, only make
         * progress; when idle, block until a peer writes, a sender wakes us, or the next
         * heartbeat is due. */
        int w = m->t->vt->flush(m->t);
        if (w == 0) {
            int idle_ms = SQ_MIN(SQ_IDLE_WAKE_MS, SQ_MAX(m->cfg.heartbeat_timeout_ms / 5, 1));
            w = m->t->vt->wait(m->t, rc > 0 ? 0 : idle_ms);
        }
        pthread_mutex_lock(&m->mu);
        if (w == SQ_EPEER) {
            continue; /* the next iteration turns it into a suspicion */
        }
        if (w < 0 && m->state == ST_RUNNING) {
            snprintf(m->g.errmsg, sizeof(m->g.errmsg), "transport: %s", sq_strerror(w));
            m->g.failed = w;
            fail_locked(m, w);
            break;
        }
    }
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

static bool any_persistent(const sq_member *m)
{
    for (uint32_t s = 0; s < m->cfg.nsubgroups; s++) {
        if (m->cfg.subgroups[s].persistent) {
            return true;
        }
    }
    return false;
}

/* The persistence thread. group_commit: write and sync whatever the loop appended, as soon as
 * it did (appends that come in meanwhile form the next batch); periodic: write as it comes,
 * sync every flush_interval_ms; none: write, never sync. */
static void *flusher_main(void *arg)
{
    sq_member *m = arg;
    const int policy = m->cfg.flush_policy;
    uint64_t next_sync = sq__mono_ms() + (uint64_t)m->cfg.flush_interval_ms;
    pthread_mutex_lock(&m->pmu);
    for (;;) {
        if (!m->pwork && !m->pstop) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            long wait_ms = policy == SQ_FLUSH_PERIODIC ? m->cfg.flush_interval_ms : 100;
            ts.tv_nsec += (wait_ms % 1000) * 1000000L;
            ts.tv_sec += wait_ms / 1000 + ts.tv_nsec / 1000000000L;
            ts.tv_nsec %= 1000000000L;
            pthread_cond_timedwait(&m->pcv, &m->pmu, &ts);
        }
        bool stop = m->pstop;
        m->pwork = false;
        pthread_mutex_unlock(&m->pmu);
        bool sync = policy == SQ_FLUSH_GROUP_COMMIT || stop ||
                    (policy == SQ_FLUSH_PERIODIC && sq__mono_ms() >= next_sync);
        if (sync && policy == SQ_FLUSH_PERIODIC) {
            next_sync = sq__mono_ms() + (uint64_t)m->cfg.flush_interval_ms;
        }
        if (policy == SQ_FLUSH_NONE && !stop) {
            sync = false;
        }
        bool progress = false;
        for (uint32_t s = 0; s < m->cfg.nsubgroups; s++) {
            uint64_t before = atomic_load(&m->g.durable_next[s]);
            int rc = sq__group_flush_log(&m->g, s, sync, policy == SQ_FLUSH_NONE);
            if (rc != 0 && atomic_load(&m->persist_failed) == 0) {
                sq__log(SQ_LOG_ERROR, "the log of subgroup %s cannot be written: %s",
                        m->cfg.subgroups[s].name, sq_strerror(rc));
                atomic_store(&m->persist_failed, rc);
                progress = true;
            }
            progress |= atomic_load(&m->g.durable_next[s]) != before;
        }
        if (progress && !stop) {
            m->t->vt->wake(m->t); /* the loop publishes what became durable */
        }
        pthread_mutex_lock(&m->pmu);
        if (stop) {
            break;
        }
    }
    pthread_mutex_unlock(&m->pmu);
    return NULL;
}

/* Starts the event loop over the view already set up in m->g. */
static int run_loop(sq_member *m)
{
    note_view(m);
    int vrc = save_view(m);
    if (vrc != 0) {
        set_error(m, "%s", m->g.errmsg);
        return vrc;
    }
    if (any_persistent(m)) {
        if (pthread_create(&m->flusher, NULL, flusher_main, m) != 0) {
            set_error(m, "cannot start the persistence thread");
            return SQ_ENOMEM;
        }
        m->flusher_started = true;
    }
    m->g_ready = true;
    m->state = ST_RUNNING;
    tell_transport_view(m);
    report_view(m, NULL, 0, 0);
    if (pthread_create(&m->loop, NULL, loop_main, m) != 0) {
        m->state = ST_FAILED;
        set_error(m, "cannot start the event-loop thread");
        return SQ_ENOMEM;
    }
    m->loop_self = m->loop;
    m->loop_started = true;
    sq__log(SQ_LOG_INFO, "member %u (rank %u of %u) is in view %u over %s", m->cfg.self_id, m->rank,
            m->g.ctl.sst.L.nmembers, m->g.ctl.sst.view_id, m->t->vt->name);
    return 0;
}

static int open_transport(sq_member *m, int timeout_ms, bool join)
{
    if (m == NULL || m->state != ST_OPEN || m->t != NULL || m->offline_logs) {
        return SQ_ESTATE;
    }
    if (timeout_ms >= 0) {
        m->cfg.connect_timeout_ms = timeout_ms;
    }
    char err[256] = "";
    int rc = sq__fabric_create(&m->t, &m->cfg, m->table, m->table_bytes, join, err, sizeof(err));
    if (rc != 0) {
        set_error(m, "%s", err);
        return rc;
    }
    sq__p2p_init(&m->p2p, m->table, m->p2p_off, m->cfg.nmembers, m->self_peer, m->t);
    m->p2p_ready = true;
    return 0;
}

static int join_group(sq_member *m);
static int await_welcome(sq_member *m);
static int restart_group(sq_member *m);

static int record_accept(void *arg, const struct sq__vc_value *v);

static void init_group(sq_member *m)
{
    m->g.deliver = on_deliver;
    m->g.deliver_arg = m;
    m->g.on_accept = any_persistent(m) ? record_accept : NULL;
    m->g.on_accept_arg = m;
    sq__group_init(&m->g, &m->cfg, m->table, m->t, m->self_peer, m->peer_ids, sq__mono_us());
    m->g.clock_us = sq__mono_us; /* a view set up after a long wait or replay starts fresh */
    for (uint32_t s = 0; s < m->cfg.nsubgroups; s++) {
        if (m->found[s] != NULL) {
            sq__group_adopt_log(&m->g, s, m->found_shard[s], m->found[s]);
            m->found[s] = NULL;
        }
    }
}

/* Opens this member's log of shard k of subgroup s if an earlier run left one: 1 (and *out),
 * 0 when there is none, or an error (with the member's error message set). */
static int open_kept_log(sq_member *m, uint32_t s, uint32_t k, struct sq__plog **out)
{
    char dir[600], err[800] = "";
    sq__group_log_dir(&m->cfg, m->cfg.self_id, s, k, dir, sizeof(dir));
    if (access(dir, F_OK) != 0) {
        return 0;
    }
    int rc = sq__group_open_shard_log(&m->cfg, sq__disk_posix(), m->cfg.self_id, s, k, out, err,
                                      sizeof(err));
    if (rc != 0) {
        set_error(m, "%s", err);
        return rc;
    }
    return 1;
}

/* Before connecting: opens the logs this member kept from an earlier run (recovering them) and
 * sums them up for the hellos, so that a restarted group can go on from them. */
static int find_logs(sq_member *m)
{
    struct sq_log_tail tail;
    memset(&tail, 0, sizeof(tail));
    memset(tail.shard, 0xFF, sizeof(tail.shard));
    for (uint32_t s = 0; s < m->cfg.nsubgroups; s++) {
        if (!m->cfg.subgroups[s].persistent) {
            continue;
        }
        for (uint32_t k = 0; k < m->cfg.subgroups[s].shards; k++) {
            struct sq__plog *log = NULL;
            int rc = open_kept_log(m, s, k, &log);
            if (rc <= 0) {
                if (rc < 0) {
                    return rc;
                }
                continue;
            }
            uint64_t last = sq__plog_count(log) > 0 ? sq__plog_last(log).version + 1 : 0;
            if (last == 0 || last <= tail.last[s]) {
                sq__plog_close(log); /* empty, or older than another shard's log here */
                continue;
            }
            sq__plog_close(m->found[s]);
            m->found[s] = log;
            m->found_shard[s] = k;
            tail.shard[s] = (uint8_t)k;
            tail.last[s] = last;
            tail.view_next = SQ_MAX(tail.view_next, (uint32_t)((last - 1) >> 32) + 1);
        }
    }
    if (any_persistent(m)) {
        char path[700], err[900] = "";
        sq__viewfile_path(&m->cfg, m->cfg.self_id, path, sizeof(path));
        int rc = sq__viewfile_read(path, &m->vf, err, sizeof(err));
        if (rc < 0) {
            set_error(m, "%s", err);
            return rc;
        }
        if (rc > 0) {
            tail.vf_view = m->vf.view_next;
            tail.vf_members = m->vf.members;
            tail.vf_held = m->vf.held;
            tail.vf_mine = m->vf.mine;
            tail.vf_acc_view = m->vf.acc_view;
            tail.vf_acc_members = m->vf.acc_members;
        }
    }
    sq__fabric_set_log_tail(&tail);
    return 0;
}

int sq_member_start(sq_member *m, int timeout_ms)
{
    if (m == NULL || m->state != ST_OPEN || m->t != NULL || m->offline_logs) {
        return SQ_ESTATE;
    }
    int rc = find_logs(m);
    if (rc != 0) {
        return rc;
    }
    rc = open_transport(m, timeout_ms, false);
    if (rc != 0) {
        return rc;
    }
    if (m->t->vt->joining(m->t)) {
        return join_group(m); /* restarted while the others run: come back as a joiner */
    }
    if (sq__fabric_restarting(m->t)) {
        return restart_group(m);
    }
    struct sq_log_tail tails[SQ_MAX_MEMBERS];
    sq__fabric_log_tails(m->t, tails);
    init_group(m);
    rc = sq__group_start_first(&m->g, tails);
    if (rc != 0) {
        m->t->vt->destroy(m->t);
        m->t = NULL;
        set_error(m, "cannot set up the shared state tables: %s", m->g.errmsg);
        return rc;
    }
    return run_loop(m);
}

int sq_member_join(sq_member *m, int timeout_ms)
{
    if (m == NULL || m->state != ST_OPEN || m->t != NULL || m->offline_logs) {
        return SQ_ESTATE;
    }
    int rc = find_logs(m);
    if (rc != 0) {
        return rc;
    }
    rc = open_transport(m, timeout_ms, true);
    if (rc != 0) {
        return rc;
    }
    return join_group(m);
}

/* A member that was given the first view of a restart links up with every other member of it
 * (the higher rank of each pair connects) before it runs. */
static int link_view(sq_member *m, uint64_t deadline)
{
    uint32_t need = 0;
    for (uint32_t r = 0; r < m->g.ctl.sst.L.nmembers; r++) {
        need |= 1u << m->g.ctl.sst.member_peers[r];
    }
    while ((need & ~sq__fabric_linked(m->t)) != 0) {
        if (sq__mono_ms() >= deadline) {
            set_error(m, "could not link with every member of the restarted group within %d ms",
                      m->cfg.connect_timeout_ms);
            return SQ_ETIMEDOUT;
        }
        int rc = sq__fabric_form_step(m->t, 20);
        if (rc != 0) {
            set_error(m, "%s", "transport set-up failed while restarting");
            return rc;
        }
    }
    return 0;
}

/* The group restarts from its members' disks (restart.h). The lowest-ranked member linked here
 * leads: once the members linked may restart the group, it waits restart_wait_ms for the rest
 * (or until every configured member is here), then starts the first view over the members linked
 * and sends it to them. The others wait for it, or join if they find the group running. */
static int restart_group(sq_member *m)
{
    const uint64_t start = sq__mono_ms();
    const uint64_t deadline = start + (uint64_t)m->cfg.connect_timeout_ms;
    const uint32_t all = m->cfg.nmembers >= 32 ? UINT32_MAX : (1u << m->cfg.nmembers) - 1;
    uint64_t ready_since = 0, said_at = 0;
    char why[256] = "", said[256] = "";
    init_group(m);
    if (m->vf.view_next > 0) {
        sq__log(SQ_LOG_INFO,
                "member %u restarts from its disks (its last view was %u): waiting "
                "for a majority of the group",
                m->cfg.self_id, m->vf.view_next - 1);
    } else {
        sq__log(SQ_LOG_INFO, "member %u has no view file; the others restart from their disks",
                m->cfg.self_id);
    }
    for (;;) {
        if (sq__fabric_join_ready(m->t)) {
            sq__log(SQ_LOG_INFO, "the group runs already: joining it");
            return await_welcome(m);
        }
        uint32_t view_peers = 0;
        if (sq__group_peek_welcome(&m->g, &view_peers)) {
            /* Close the links to members outside that view first: a member that also believed
             * it led (links not all-to-all) could otherwise write its rows into this memory. */
            uint32_t other = sq__fabric_linked(m->t) & ~view_peers & ~(1u << m->self_peer);
            for (uint32_t p = 0; p < m->cfg.nmembers; p++) {
                if ((other >> p) & 1u) {
                    m->t->vt->disconnect(m->t, p);
                }
            }
        }
        int rc = sq__group_try_welcome(&m->g);
        if (rc < 0) {
            set_error(m, "%s", m->g.errmsg);
            return rc;
        }
        if (rc > 0 && !m->g.restart_view) {
            m->rank = m->g.ctl.sst.my_rank; /* a running group welcomed us as a joiner */
            sq__log(SQ_LOG_INFO, "member %u joined view %u", m->cfg.self_id, m->g.ctl.sst.view_id);
            return run_loop(m);
        }
        if (rc > 0) {
            m->rank = m->g.ctl.sst.my_rank;
            m->restart_guard = true;
            m->g.gate = true;
            m->restart_guard_until_ms = sq__mono_ms() + (uint64_t)m->cfg.connect_timeout_ms;
            sq__log(SQ_LOG_INFO, "member %u takes the first view %u of the restart (%u members)",
                    m->cfg.self_id, m->g.ctl.sst.view_id, m->g.ctl.sst.L.nmembers);
            rc = link_view(m, deadline);
            return rc != 0 ? rc : run_loop(m);
        }
        uint32_t linked = sq__fabric_linked(m->t);
        uint32_t leader = (uint32_t)__builtin_ctz(linked);
        if (leader == m->self_peer && !m->t->vt->joining(m->t)) {
            struct sq_log_tail tails[SQ_MAX_MEMBERS];
            sq__fabric_log_tails(m->t, tails);
            bool restart = false;
            if (sq__restart_check(&m->cfg, linked, tails, &restart, why, sizeof(why)) == 1) {
                uint64_t now = sq__mono_ms();
                ready_since = ready_since ? ready_since : now;
                if (linked == all || now - ready_since >= (uint64_t)m->cfg.restart_wait_ms) {
                    rc = sq__group_start_restart(&m->g, linked, tails);
                    if (rc != 0) {
                        set_error(m, "%s", m->g.errmsg);
                        return rc;
                    }
                    m->rank = m->g.ctl.sst.my_rank;
                    m->restart_guard = true;
                    m->g.gate = true;
                    m->restart_guard_until_ms = sq__mono_ms() + (uint64_t)m->cfg.connect_timeout_ms;
                    return run_loop(m);
                }
            } else {
                ready_since = 0;
            }
        } else if (m->t->vt->joining(m->t)) {
            snprintf(why, sizeof(why),
                     "the group runs already: joining it once linked with "
                     "every member of its view");
        } else {
            snprintf(why, sizeof(why), "waiting for member %u to send the first view",
                     m->cfg.members[leader].id);
        }
        uint64_t now = sq__mono_ms();
        if (now >= deadline) {
            set_error(m, "the group did not restart within %d ms: %s", m->cfg.connect_timeout_ms,
                      why);
            return SQ_ETIMEDOUT;
        }
        if (why[0] != '\0' && (strcmp(why, said) != 0 || now - said_at >= 5000)) {
            sq__log(SQ_LOG_INFO, "restart: %s", why); /* what it waits for, as it changes */
            snprintf(said, sizeof(said), "%s", why);
            said_at = now;
        }
        rc = sq__fabric_form_step(m->t, 20);
        if (rc != 0) {
            set_error(m, "transport set-up failed while restarting (%s)", sq_strerror(rc));
            return rc;
        }
    }
}

/* Connected as a joiner: our connections asked the members to add us. */
static int join_group(sq_member *m)
{
    init_group(m);
    return await_welcome(m);
}

/* A joiner with its group set up: the donor's welcome says when the members added us. */
static int await_welcome(sq_member *m)
{
    int rc;
    uint64_t deadline = sq__mono_ms() + (uint64_t)m->cfg.connect_timeout_ms;
    while ((rc = sq__group_try_welcome(&m->g)) == 0) {
        if (sq__mono_ms() >= deadline) {
            set_error(m, "member %u connected but was not added to the group within %d ms",
                      m->cfg.self_id, m->cfg.connect_timeout_ms);
            return SQ_ETIMEDOUT;
        }
        int w_rc = m->t->vt->wait(m->t, 50);
        if (w_rc < 0 && w_rc != SQ_EPEER) {
            set_error(m, "transport: %s", sq_strerror(w_rc));
            return w_rc;
        }
    }
    if (rc < 0) {
        set_error(m, "%s", m->g.errmsg);
        return rc;
    }
    m->rank = m->g.ctl.sst.my_rank;
    sq__log(SQ_LOG_INFO, "member %u joined view %u", m->cfg.self_id, m->g.ctl.sst.view_id);
    return run_loop(m);
}

/* Waits for delivery progress; false when the member failed or is closing. */
static int wait_progress(sq_member *m, int flags)
{
    if ((flags & SQ_SEND_NONBLOCK) || in_loop_thread(m)) {
        return SQ_EAGAIN;
    }
    /* The loop signals on every delivery; the timeout only bounds a lost wake-up. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 50 * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    m->waiters++;
    pthread_cond_timedwait(&m->cv, &m->mu, &ts);
    m->waiters--;
    return 0;
}

/* API calls made from the delivery callback already run under the loop's lock. */
static bool api_lock(sq_member *m)
{
    if (in_loop_thread(m)) {
        return false;
    }
    pthread_mutex_lock(&m->mu);
    return true;
}

static void api_unlock(sq_member *m, bool locked)
{
    if (locked) {
        pthread_mutex_unlock(&m->mu);
    }
}

static int check_running(sq_member *m)
{
    if (m->state == ST_RUNNING) {
        return 0;
    }
    return m->state == ST_OPEN ? SQ_ESTATE : SQ_ECLOSED;
}

/* Reserves a slot in my shard of subgroup `sg` with m->mu held, waiting for the window (and for
 * an adequate view) unless told not to. */
static int reserve_locked(sq_member *m, uint32_t sg, size_t size, void **buf, int flags)
{
    for (;;) {
        int rc = check_running(m);
        if (rc != 0) {
            return rc;
        }
        struct sq__smc *sh = sq__group_shard(&m->g, sg, &rc);
        if (sh != NULL) {
            rc = sq__smc_reserve(sh, size, buf);
            if (rc == 0) {
                m->reserve_view[sg] = m->g.ctl.sst.view_id;
            }
        }
        if (rc != SQ_EAGAIN) {
            return rc;
        }
        rc = wait_progress(m, flags);
        if (rc != 0) {
            return rc;
        }
    }
}

static int commit_locked(sq_member *m, uint32_t sg)
{
    int rc = 0;
    struct sq__smc *sh = sq__group_shard(&m->g, sg, &rc);
    if (sh == NULL || !sh->reserved) {
        /* The view changed between reserve and commit: that slot is gone with its view. */
        return m->reserve_view[sg] != m->g.ctl.sst.view_id ? SQ_EVIEWCHANGE
                                                           : (sh == NULL ? rc : SQ_ESTATE);
    }
    sh->stamp = sq__wall_us();
    rc = sq__smc_commit(sh);
    if (rc == 0 && !in_loop_thread(m)) {
        m->t->vt->wake(m->t); /* the loop flushes the write and pushes the header */
    }
    return rc;
}

int sq_member_send_in(sq_member *m, uint32_t subgroup, const void *data, size_t size, int flags)
{
    if (m == NULL || (data == NULL && size > 0) || subgroup >= m->cfg.nsubgroups) {
        return SQ_EINVAL;
    }
    void *buf = NULL;
    bool locked = api_lock(m);
    int rc;
    do {
        /* A copying send can simply start over when the view changed under it. */
        rc = reserve_locked(m, subgroup, size, &buf, flags);
        if (rc == 0) {
            if (size > 0) {
                memcpy(buf, data, size);
            }
            rc = commit_locked(m, subgroup);
        }
    } while (rc == SQ_EVIEWCHANGE);
    api_unlock(m, locked);
    return rc;
}

int sq_member_send(sq_member *m, const void *data, size_t size, int flags)
{
    return sq_member_send_in(m, 0, data, size, flags);
}

int sq_member_subgroup(const sq_member *m, const char *name)
{
    int g = m == NULL || name == NULL ? -1 : sq__config_subgroup(&m->cfg, name);
    return g < 0 ? SQ_EINVAL : g;
}

int sq_member_reserve_in(sq_member *m, uint32_t subgroup, size_t size, void **buf, int flags)
{
    if (m == NULL || buf == NULL || subgroup >= m->cfg.nsubgroups) {
        return SQ_EINVAL;
    }
    bool locked = api_lock(m);
    int rc = reserve_locked(m, subgroup, size, buf, flags);
    api_unlock(m, locked);
    return rc;
}

int sq_member_reserve(sq_member *m, size_t size, void **buf, int flags)
{
    return sq_member_reserve_in(m, 0, size, buf, flags);
}

int sq_member_commit_in(sq_member *m, uint32_t subgroup)
{
    if (m == NULL || subgroup >= m->cfg.nsubgroups) {
        return SQ_EINVAL;
    }
    bool locked = api_lock(m);
    int rc = check_running(m);
    if (rc == 0) {
        rc = commit_locked(m, subgroup);
    }
    api_unlock(m, locked);
    return rc;
}

int sq_member_commit(sq_member *m)
{
    return sq_member_commit_in(m, 0);
}

static bool every_shard(sq_member *m, bool (*done)(struct sq__smc *))
{
    for (uint32_t s = 0; s < m->cfg.nsubgroups; s++) {
        if (m->g.in_shard[s] && !done(&m->g.shard[s])) {
            return false;
        }
    }
    return true;
}

/* Blocks until `done` holds for every shard of mine, the member stops, or `timeout_ms` passes. */
static int wait_until(sq_member *m, bool (*done)(struct sq__smc *), int timeout_ms)
{
    if (m == NULL) {
        return SQ_EINVAL;
    }
    if (in_loop_thread(m)) {
        return SQ_ESTATE;
    }
    uint64_t deadline = sq__mono_ms() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms);
    pthread_mutex_lock(&m->mu);
    int rc = 0;
    while ((rc = check_running(m)) == 0 && !every_shard(m, done)) {
        if (timeout_ms >= 0 && sq__mono_ms() >= deadline) {
            rc = SQ_ETIMEDOUT;
            break;
        }
        (void)wait_progress(m, 0);
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

static bool drained(struct sq__smc *s)
{
    return sq__smc_drained(s);
}

int sq_member_drain(sq_member *m, int timeout_ms)
{
    return wait_until(m, drained, timeout_ms);
}

int sq_member_quiesce(sq_member *m, int timeout_ms)
{
    return wait_until(m, sq__smc_all_caught_up, timeout_ms);
}

uint64_t sq_member_delivered(const sq_member *m)
{
    return atomic_load_explicit(&((sq_member *)m)->delivered, memory_order_relaxed);
}

int sq_member_failure(const sq_member *m)
{
    return m == NULL ? SQ_EINVAL : m->failure;
}

uint32_t sq_member_view_id(const sq_member *m)
{
    return m->g.ctl.sst.view_id;
}

uint32_t sq_member_id(const sq_member *m)
{
    return m->cfg.self_id;
}

uint32_t sq_member_rank(const sq_member *m)
{
    return m->rank;
}

uint32_t sq_member_count(const sq_member *m)
{
    return m->cfg.nmembers;
}

const char *sq_member_errmsg(const sq_member *m)
{
    return m == NULL ? "" : m->errmsg;
}

int sq_member_leave(sq_member *m, int timeout_ms)
{
    if (m == NULL) {
        return SQ_EINVAL;
    }
    if (in_loop_thread(m)) {
        return SQ_ESTATE;
    }
    uint64_t deadline = sq__mono_ms() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms);
    pthread_mutex_lock(&m->mu);
    if (m->state != ST_RUNNING) {
        pthread_mutex_unlock(&m->mu);
        return m->state == ST_OPEN ? SQ_ESTATE : SQ_ECLOSED;
    }
    sq__view_leave(&m->g.ctl.sst);
    uint64_t others = 0;
    for (uint32_t r = 0; r < m->g.ctl.sst.L.nmembers; r++) {
        if (r != m->g.ctl.sst.my_rank) {
            others |= 1ull << m->g.ctl.sst.member_peers[r];
        }
    }
    m->t->vt->wake(m->t);
    while (m->state == ST_RUNNING && (timeout_ms < 0 || sq__mono_ms() < deadline)) {
        (void)wait_progress(m, 0);
    }
    bool left = m->state != ST_RUNNING;
    pthread_mutex_unlock(&m->mu);
    if (!left) {
        return SQ_ETIMEDOUT;
    }
    pthread_join(m->loop, NULL);
    m->loop_started = false;
    /* The loop is gone, so this thread may drive the transport: keep serving the connections
     * until every other member has installed the view without us and closed its link. */
    while ((m->t->vt->failed_peers(m->t) & others) != others) {
        if (timeout_ms >= 0 && sq__mono_ms() >= deadline) {
            return SQ_ETIMEDOUT;
        }
        (void)m->t->vt->wait(m->t, 20);
    }
    return 0;
}

void sq_member_close(sq_member *m)
{
    if (m == NULL) {
        return;
    }
    pthread_mutex_lock(&m->mu);
    if (m->state == ST_RUNNING || m->state == ST_FAILED) {
        m->state = ST_CLOSING;
    }
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    if (m->loop_started) {
        m->t->vt->wake(m->t);
        pthread_join(m->loop, NULL);
    }
    if (m->flusher_started) {
        /* A last write and sync: a clean stop leaves every delivered update on disk. */
        pthread_mutex_lock(&m->pmu);
        m->pstop = true;
        pthread_cond_signal(&m->pcv);
        pthread_mutex_unlock(&m->pmu);
        pthread_join(m->flusher, NULL);
    }
    sq__group_close_logs(&m->g);
    for (uint32_t s = 0; s < SQ_MAX_SUBGROUPS; s++) {
        sq__plog_close(m->found[s]); /* found at start, never handed over (start failed) */
    }
    if (m->g_ready) {
        sq__group_fini(&m->g);
    }
    if (m->t != NULL) {
        m->t->vt->destroy(m->t);
    }
    pthread_cond_destroy(&m->cv);
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->pcv);
    pthread_mutex_destroy(&m->pmu);
    for (uint32_t i = 0; i < m->nbacklog; i++) {
        free(m->backlog[i].bytes);
    }
    free(m->backlog);
    free(m->table);
    free(m);
}

int sq_member_query(sq_member *m, uint32_t member_id, const void *req, size_t req_size, void *reply,
                    size_t reply_cap, size_t *reply_len, int timeout_ms)
{
    if (m == NULL || (req == NULL && req_size > 0) || (reply == NULL && reply_cap > 0)) {
        return SQ_EINVAL;
    }
    if (req_size > SQ_QUERY_MAX_BYTES) {
        return SQ_EMSGSIZE;
    }
    int peer = sq__config_rank_of(&m->cfg, member_id);
    if (peer < 0 || (uint32_t)peer == m->self_peer) {
        return SQ_EINVAL;
    }
    if (in_loop_thread(m)) {
        return SQ_ESTATE;
    }
    uint64_t deadline = sq__mono_ms() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms);
    pthread_mutex_lock(&m->mu);
    int rc = 0;
    struct pending_query *q = NULL;
    while ((rc = check_running(m)) == 0) {
        if ((m->t->vt->failed_peers(m->t) >> peer) & 1u) {
            rc = SQ_EPEER;
            break;
        }
        for (uint32_t i = 0; i < MAX_QUERIES && q == NULL; i++) {
            q = m->queries[i].id == 0 ? &m->queries[i] : NULL;
        }
        if (q != NULL && sq__p2p_can_stage(&m->p2p, (uint32_t)peer)) {
            break;
        }
        q = NULL;
        if (timeout_ms >= 0 && sq__mono_ms() >= deadline) {
            rc = SQ_ETIMEDOUT;
            break;
        }
        (void)wait_progress(m, 0);
    }
    if (rc == 0) {
        *q = (struct pending_query){
            .id = ++m->next_query_id, .peer = (uint32_t)peer, .reply = reply, .cap = reply_cap};
        rc = sq__p2p_stage(&m->p2p, (uint32_t)peer, SQ_P2P_REQUEST, q->id, req, req_size);
        m->t->vt->wake(m->t);
        while (rc == 0 && !q->done) {
            if ((rc = check_running(m)) != 0) {
                break;
            }
            if (timeout_ms >= 0 && sq__mono_ms() >= deadline) {
                rc = SQ_ETIMEDOUT;
                break;
            }
            (void)wait_progress(m, 0);
        }
        if (rc == 0) {
            rc = q->rc;
            if (reply_len != NULL) {
                *reply_len = q->len;
            }
        }
        q->id = 0; /* a late answer finds no one waiting */
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

int sq_member_ordered_call(sq_member *m, const void *req, size_t req_size, sq_reply *replies,
                           uint32_t max_replies, uint32_t *nreplies, int timeout_ms)
{
    return sq_member_ordered_call_in(m, 0, req, req_size, replies, max_replies, nreplies,
                                     timeout_ms);
}

int sq_member_ordered_call_in(sq_member *m, uint32_t subgroup, const void *req, size_t req_size,
                              sq_reply *replies, uint32_t max_replies, uint32_t *nreplies,
                              int timeout_ms)
{
    if (m == NULL || (req == NULL && req_size > 0) || (replies == NULL && max_replies > 0) ||
        subgroup >= m->cfg.nsubgroups) {
        return SQ_EINVAL;
    }
    if (req_size + CALL_HDR > m->cfg.subgroups[subgroup].max_payload ||
        req_size > SQ_QUERY_MAX_BYTES) {
        return SQ_EMSGSIZE;
    }
    if (in_loop_thread(m)) {
        return SQ_ESTATE;
    }
    uint64_t deadline = sq__mono_ms() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms);
    pthread_mutex_lock(&m->mu);
    struct pending_call *c = NULL;
    for (uint32_t i = 0; i < MAX_CALLS && c == NULL; i++) {
        c = m->calls[i].id == 0 ? &m->calls[i] : NULL;
    }
    if (c == NULL) {
        pthread_mutex_unlock(&m->mu);
        return SQ_EBUSY;
    }
    *c = (struct pending_call){.id = ((uint64_t)m->self_peer << 56) | ++m->next_call_id,
                               .replies = replies,
                               .max = max_replies};
    int rc;
    do {
        void *buf = NULL;
        rc = reserve_locked(m, subgroup, req_size + CALL_HDR, &buf, 0);
        if (rc == 0) {
            uint64_t caller = m->self_peer;
            memcpy(buf, &c->id, 8);
            memcpy((uint8_t *)buf + 8, &caller, 8);
            if (req_size > 0) {
                memcpy((uint8_t *)buf + CALL_HDR, req, req_size);
            }
            sq__smc_set_flags(&m->g.shard[subgroup], SQ_MSG_ORDERED_CALL);
            rc = commit_locked(m, subgroup);
        }
    } while (rc == SQ_EVIEWCHANGE);
    while (rc == 0 && !c->done) {
        if ((rc = check_running(m)) != 0) {
            break;
        }
        if (timeout_ms >= 0 && sq__mono_ms() >= deadline) {
            rc = SQ_ETIMEDOUT;
            break;
        }
        (void)wait_progress(m, 0);
    }
    if (rc == 0) {
        rc = c->rc;
    }
    if (nreplies != NULL) {
        *nreplies = c->n;
    }
    c->id = 0;
    pthread_mutex_unlock(&m->mu);
    return rc;
}

int sq_member_log_get(sq_member *m, uint32_t subgroup, int how, uint64_t key, sq_record *rec,
                      void *buf, size_t cap)
{
    if (m == NULL || rec == NULL || (buf == NULL && cap > 0) || subgroup >= m->cfg.nsubgroups) {
        return SQ_EINVAL;
    }
    struct sq__plog *log = __atomic_load_n(&m->g.log[subgroup], __ATOMIC_ACQUIRE);
    if (!m->cfg.subgroups[subgroup].persistent || log == NULL) {
        return SQ_ENOTSUP;
    }
    struct sq__plog_entry e;
    uint64_t pos = 0;
    int rc;
    switch (how) {
    case SQ_LOG_EXACT:
        rc = sq__plog_find(log, key, SQ_PLOG_EXACT, &e, NULL);
        break;
    case SQ_LOG_AT_OR_BEFORE:
        rc = sq__plog_find(log, key, SQ_PLOG_AT_OR_BEFORE, &e, NULL);
        break;
    case SQ_LOG_AT_TIME:
        rc = sq__plog_find_time(log, key, &e, NULL);
        break;
    case SQ_LOG_AFTER:
        rc = sq__plog_find(log, key, SQ_PLOG_AT_OR_BEFORE, &e, &pos);
        rc = sq__plog_entry_at(log, rc == 0 ? pos + 1 : 0, &e);
        break;
    case SQ_LOG_FIRST:
        rc = sq__plog_entry_at(log, 0, &e);
        break;
    default:
        return SQ_EINVAL;
    }
    if (rc != 0) {
        return rc;
    }
    ssize_t n = sq__plog_read(log, &e, buf, cap);
    if (n < 0) {
        return (int)n;
    }
    *rec = (sq_record){
        .version = e.version, .timestamp = e.timestamp, .sender_id = e.sender, .size = e.size};
    return 0;
}

int sq_member_open_logs(sq_member *m)
{
    if (m == NULL || m->state != ST_OPEN || m->offline_logs) {
        return SQ_ESTATE;
    }
    m->offline_logs = true;
    int opened = 0;
    for (uint32_t s = 0; s < m->cfg.nsubgroups; s++) {
        if (!m->cfg.subgroups[s].persistent) {
            continue;
        }
        for (uint32_t k = 0; k < m->cfg.subgroups[s].shards; k++) {
            struct sq__plog *log = NULL;
            int rc = open_kept_log(m, s, k, &log);
            if (rc <= 0) {
                if (rc < 0) {
                    return rc;
                }
                continue;
            }
            if (m->g.log[s] != NULL) {
                sq__plog_close(log); /* one shard per subgroup: keep the first */
                continue;
            }
            m->g.log[s] = log;
            opened++;
        }
    }
    return opened;
}
