/* member.c: a group member at run time: the event-loop thread that drives the protocol core over
 * the fabric transport, and the public sq_member_* API around it. */
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <time.h>

#include "common.h"
#include "config.h"
#include "hash.h"
#include "log.h"
#include "p2p.h"
#include "smc.h"
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

/* The welcome a donor writes into a joiner's memory (after the state): the view that adds it.
 * Little-endian; `check` (written last) vouches for the rest. */
#define WELCOME_MAGIC 0x4d4f434c45575153ull /* "SQWELCOM" */
#define WELCOME_BYTES 512u
struct welcome {
    uint64_t magic;
    uint64_t view_id;
    uint64_t nmembers;
    uint64_t my_rank;
    uint64_t state_size;
    uint64_t status; /* 0, or 1: the state did not fit max_state_bytes */
    uint32_t ids[SQ_MAX_MEMBERS];
    uint32_t peers[SQ_MAX_MEMBERS];
    uint64_t check;
};
static_assert(sizeof(struct welcome) <= SQ_TRANSPORT_MAX_COPY, "one write_copy");
static_assert(sizeof(struct welcome) <= WELCOME_BYTES, "fits its block");

static uint64_t welcome_check(const struct welcome *w)
{
    return sq__fnv1a(SQ_FNV_INIT, w, offsetof(struct welcome, check)) | 1u;
}

struct sq_member {
    struct sq_config cfg;
    uint32_t rank;
    uint8_t *table;
    size_t table_bytes;
    struct sq_transport *t;
    struct sq__smc smc;
    bool smc_ready;
    sq_deliver_fn deliver;
    void *deliver_arg;
    sq_view_fn on_view;
    void *on_view_arg;
    size_t region_bytes; /* one view's table; the memory holds two, used by alternate views */
    size_t welcome_off;  /* then a welcome block for when this member joins... */
    size_t state_off;    /* ...and room for the state a joiner receives (max_state_bytes) */
    sq_state_save_fn save;
    sq_state_load_fn load;
    void *state_arg;
    int failure;         /* why the member stopped, 0 while running */
    uint32_t peer_ids[SQ_MAX_MEMBERS]; /* configured ids by transport peer index */
    uint32_t self_peer;
    uint64_t pending_joins; /* peers that asked to join and are not in a view yet */
    size_t p2p_off;                    /* then the point-to-point rings */
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
        uint64_t id; /* 0: free */
        bool delivered;      /* here, in the total order: the expected repliers are known */
        bool done;
        int rc;
        uint64_t expect;     /* peers that must answer (the view at delivery) */
        uint64_t got;
        sq_reply *replies;
        uint32_t max, n;
    } calls[MAX_CALLS];
    struct backlog_reply {
        uint32_t peer;
        uint64_t id;
        size_t len;
        uint8_t *bytes;
    } *backlog;
    uint32_t nbacklog;

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
    struct sq__smc_layout L;
    rc = sq__smc_layout(&L, m->cfg.nmembers, m->cfg.window_size, m->cfg.max_payload);
    if (rc != 0) {
        if (err != NULL) {
            snprintf(err, err_size, "%s: the subgroup layout is out of range", config_path);
        }
        free(m);
        return SQ_ECONFIG;
    }
    /* Two regions: view v uses region v % 2, so writes of the view being left never land in
     * the table of the view being installed (views only shrink so far: the first is largest). */
    m->region_bytes = L.table_bytes;
    m->welcome_off = 2 * L.table_bytes;
    m->state_off = m->welcome_off + WELCOME_BYTES;
    m->p2p_off = m->state_off + SQ_ALIGN8(m->cfg.max_state_bytes);
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
        m->save = save;
        m->load = load;
        m->state_arg = arg;
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
            set_error(m, "member %u stopped in view %u: it suspects %d of the %u members, so it "
                         "is on the minority side and may not go on alone", m->cfg.self_id,
                      m->smc.view_id, __builtin_popcountll(m->smc.suspected), m->smc.L.nmembers);
        } else if (rc == SQ_ELEFT) {
            set_error(m, "member %u left the group in view %u", m->cfg.self_id, m->smc.view_id);
        } else if (rc == SQ_EREMOVED) {
            set_error(m, "member %u stopped in view %u: the other members removed it from the "
                         "group (it may rejoin as a new member)", m->cfg.self_id, m->smc.view_id);
        } else {
            set_error(m, "member %u stopped: %s (%s)", m->cfg.self_id, sq_strerror(rc),
                      m->smc.errmsg[0] ? m->smc.errmsg : "no detail");
        }
        sq__log(rc == SQ_ELEFT ? SQ_LOG_INFO : SQ_LOG_ERROR, "%s", m->errmsg);
    }
    pthread_cond_broadcast(&m->cv);
}

static void report_view(sq_member *m, const uint32_t *removed, uint32_t nremoved, uint64_t dropped)
{
    char list[256] = "";
    size_t len = 0;
    for (uint32_t i = 0; i < m->smc.L.nmembers && len < sizeof(list) - 16; i++) {
        len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%u", i ? "," : "",
                                m->smc.member_ids[i]);
    }
    sq__log(SQ_LOG_INFO, "view %u installed: members %s, my rank %u%s", m->smc.view_id, list,
            m->smc.my_rank, nremoved ? " (members left)" : "");
    if (dropped > 0) {
        sq__log(SQ_LOG_WARN, "view change dropped %llu of my messages (sent after the trim)",
                (unsigned long long)dropped);
    }
    if (m->on_view != NULL) {
        sq_view v = {.view_id = m->smc.view_id, .nmembers = m->smc.L.nmembers,
                     .member_ids = m->smc.member_ids, .my_rank = m->smc.my_rank,
                     .nremoved = nremoved, .removed_ids = removed, .dropped = dropped};
        m->on_view(m->on_view_arg, &v);
    }
}

static struct sq__smc_params view_params(sq_member *m, uint32_t view_id, uint32_t n,
                                         uint32_t my_rank, const uint32_t *ids,
                                         const uint32_t *peers)
{
    struct sq__smc_params p = {.nmembers = n, .my_rank = my_rank,
                               .window_size = m->cfg.window_size,
                               .max_payload = m->cfg.max_payload, .view_id = view_id,
                               .member_ids = ids, .member_peers = peers,
                               .region_offset = (view_id % 2) * m->region_bytes,
                               .now_us = sq__mono_us(),
                               .heartbeat_timeout_us = (uint64_t)m->cfg.heartbeat_timeout_ms * 1000u,
                               .npeers = m->cfg.nmembers, .peer_ids = m->peer_ids};
    return p;
}

static void tell_transport_view(sq_member *m)
{
    uint64_t peers = 0;
    for (uint32_t r = 0; r < m->smc.L.nmembers; r++) {
        peers |= 1ull << m->smc.member_peers[r];
    }
    m->t->vt->set_view(m->t, m->smc.view_id, peers);
}

/* The donor (first survivor of the new view) ships its state, as of the old view's last
 * delivery, to each joiner, then the welcome that tells it the view. */
static void welcome_joiners(sq_member *m, uint32_t view_id, uint32_t n, const uint32_t *ids,
                            const uint32_t *peers, uint64_t added)
{
    void *st = NULL;
    size_t size = 0;
    if (m->save != NULL && m->save(m->state_arg, &st, &size) != 0) {
        sq__log(SQ_LOG_ERROR, "the state callback failed: joiners get no state");
        size = 0;
    }
    struct welcome w;
    memset(&w, 0, sizeof(w));
    w.magic = WELCOME_MAGIC;
    w.view_id = view_id;
    w.nmembers = n;
    w.state_size = size;
    w.status = size > m->cfg.max_state_bytes ? 1 : 0;
    memcpy(w.ids, ids, n * sizeof(uint32_t));
    memcpy(w.peers, peers, n * sizeof(uint32_t));
    if (w.status == 0 && size > 0) {
        memcpy(m->table + m->state_off, st, size);
    } else if (w.status != 0) {
        sq__log(SQ_LOG_ERROR, "the state (%zu bytes) exceeds max_state_bytes (%llu): the joiner "
                              "cannot start", size, (unsigned long long)m->cfg.max_state_bytes);
    }
    free(st);
    for (uint32_t r = 0; r < n; r++) {
        if (!((added >> peers[r]) & 1u)) {
            continue;
        }
        w.my_rank = r;
        w.check = welcome_check(&w);
        memcpy(m->table + m->welcome_off, &w, sizeof(w));
        int rc = 0;
        if (w.status == 0 && size > 0) {
            rc = m->t->vt->write(m->t, peers[r], m->state_off, size);
        }
        if (rc == 0) {
            rc = m->t->vt->write_copy(m->t, peers[r], m->welcome_off, sizeof(w));
        }
        sq__log(rc == 0 ? SQ_LOG_INFO : SQ_LOG_WARN, "welcomed member %u into view %u with %zu "
                "bytes of state%s", ids[r], view_id, size, rc == 0 ? "" : ": its link failed");
    }
}

/* The old view delivered up to its trim: close the links of the members that left and start
 * the next view in the other region of the table. */
static int install_next_view(sq_member *m)
{
    uint32_t ids[SQ_MAX_MEMBERS], peers[SQ_MAX_MEMBERS], my_rank = 0;
    uint32_t n = sq__smc_next_view(&m->smc, ids, peers, &my_rank);
    uint32_t removed[SQ_MAX_MEMBERS], nremoved = 0;
    for (uint32_t r = 0; r < m->smc.L.nmembers; r++) {
        uint32_t peer = m->smc.member_peers[r];
        bool gone = (m->smc.decision.removed >> r) & 1u;
        bool rejoins = (m->smc.decision.added >> peer) & 1u; /* a new incarnation, same link */
        if (gone) {
            removed[nremoved++] = m->smc.member_ids[r];
        }
        if ((gone && !rejoins) || (m->smc.fence_cut >> r) & 1u) {
            m->t->vt->disconnect(m->t, peer);
        }
    }
    uint64_t dropped = m->smc.dropped;
    m->pending_joins &= ~m->smc.decision.added;
    uint64_t next_peers = 0;
    for (uint32_t r = 0; r < n; r++) {
        next_peers |= 1ull << peers[r];
    }
    for (uint32_t i = 0; i < MAX_CALLS; i++) {
        struct pending_call *c = &m->calls[i];
        if (c->id == 0 || c->done) {
            continue;
        }
        if (!c->delivered) {
            c->done = true; /* it was past the trim: never delivered anywhere */
            c->rc = SQ_EVIEWCHANGE;
            continue;
        }
        for (uint32_t p = 0; p < m->cfg.nmembers; p++) {
            if (((c->expect & ~c->got) >> p) & 1u && !((next_peers >> p) & 1u)) {
                add_call_reply(m, c, p, SQ_EPEER, NULL, 0); /* it left before answering */
            }
        }
    }
    if (m->smc.decision.added != 0 && my_rank == 0) {
        welcome_joiners(m, m->smc.view_id + 1, n, ids, peers, m->smc.decision.added);
    }
    struct sq__smc_params p = view_params(m, m->smc.view_id + 1, n, my_rank, ids, peers);
    struct sq__smc next;
    uint8_t *region = m->table + p.region_offset;
    int rc = sq__smc_init(&next, &p, region, m->t, on_deliver, m);
    if (rc != 0) {
        return rc;
    }
    sq__smc_fini(&m->smc);
    m->smc = next;
    m->rank = my_rank;
    tell_transport_view(m);
    report_view(m, removed, nremoved, dropped);
    return 0;
}

static void broadcast(sq_member *m)
{
    if (m->waiters > 0) {
        pthread_cond_broadcast(&m->cv);
    }
}

/* Turns links the transport saw fail into suspicions of the members behind them. */
static void suspect_failed_links(sq_member *m)
{
    uint64_t joined = m->t->vt->joined(m->t);
    for (uint32_t p = 0; p < m->cfg.nmembers; p++) {
        if ((joined >> p) & 1u) {
            sq__log(SQ_LOG_INFO, "member %u asks to join", m->peer_ids[p]);
            m->pending_joins |= 1ull << p;
            fail_queries_to(m, p);
            sq__p2p_reset_peer(&m->p2p, p); /* a new incarnation: start both rings afresh */
        }
    }
    uint64_t failed = m->t->vt->failed_peers(m->t);
    m->pending_joins &= ~failed; /* a joiner that went away again is not waited for */
    /* Asked again in every view until a view adds it: a request that arrives while a change is
     * already fixed would otherwise be lost with that view. */
    for (uint32_t p = 0; p < m->cfg.nmembers; p++) {
        if ((m->pending_joins >> p) & 1u) {
            sq__smc_request_join(&m->smc, p);
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
    for (uint32_t r = 0; r < m->smc.L.nmembers; r++) {
        if (r != m->smc.my_rank && (failed >> m->smc.member_peers[r]) & 1u) {
            sq__smc_suspect(&m->smc, r);
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
            for (uint32_t r = 0; r < m->smc.L.nmembers; r++) {
                c->expect |= 1ull << m->smc.member_peers[r];
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
    if (m->nbacklog == 0 &&
        sq__p2p_stage(&m->p2p, (uint32_t)caller, SQ_P2P_CALL_REPLY, id, reply, REPLY_HDR + len) == 0) {
        return;
    }
    /* The caller's ring is full: keep the answer, in order, until it has room. */
    if (m->nbacklog == MAX_REPLY_BACKLOG) {
        sq__log(SQ_LOG_ERROR, "dropping an ordered-call reply to member %u: %d replies wait "
                              "already", m->peer_ids[caller], MAX_REPLY_BACKLOG);
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

static void *loop_main(void *arg)
{
    sq_member *m = arg;
    pthread_mutex_lock(&m->mu);
    while (m->state == ST_RUNNING) {
        suspect_failed_links(m);
        sq__smc_tick(&m->smc, sq__mono_us());
        int rc = sq__smc_poll(&m->smc);
        if (rc < 0) {
            fail_locked(m, rc);
            break;
        }
        if (m->smc.phase == SQ_SMC_STOPPED) {
            if (m->smc.stop_reason == SQ_ELEFT) {
                (void)m->t->vt->flush(m->t); /* the others must see me ask to leave */
            }
            fail_locked(m, m->smc.stop_reason);
            break;
        }
        if (m->smc.phase == SQ_SMC_READY) {
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
            snprintf(m->smc.errmsg, sizeof(m->smc.errmsg), "transport: %s", sq_strerror(w));
            m->smc.failed = w;
            fail_locked(m, w);
            break;
        }
    }
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

/* Starts the event loop over the view already set up in m->smc. */
static int run_loop(sq_member *m)
{
    m->smc_ready = true;
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
    sq__log(SQ_LOG_INFO, "member %u (rank %u of %u) is in view %u over %s", m->cfg.self_id,
            m->rank, m->smc.L.nmembers, m->smc.view_id, m->t->vt->name);
    return 0;
}

static int open_transport(sq_member *m, int timeout_ms, bool join)
{
    if (m == NULL || m->state != ST_OPEN || m->t != NULL) {
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

int sq_member_start(sq_member *m, int timeout_ms)
{
    int rc = open_transport(m, timeout_ms, false);
    if (rc != 0) {
        return rc;
    }
    if (m->t->vt->joining(m->t)) {
        return join_group(m); /* restarted while the others run: come back as a joiner */
    }
    uint32_t ids[SQ_MAX_MEMBERS], peers[SQ_MAX_MEMBERS];
    for (uint32_t i = 0; i < m->cfg.nmembers; i++) {
        ids[i] = m->cfg.members[i].id;
        peers[i] = i;
    }
    struct sq__smc_params p = view_params(m, 0, m->cfg.nmembers, m->rank, ids, peers);
    rc = sq__smc_init(&m->smc, &p, m->table, m->t, on_deliver, m);
    if (rc != 0) {
        m->t->vt->destroy(m->t);
        m->t = NULL;
        set_error(m, "cannot set up the shared state table: %s", sq_strerror(rc));
        return rc;
    }
    return run_loop(m);
}

int sq_member_join(sq_member *m, int timeout_ms)
{
    int rc = open_transport(m, timeout_ms, true);
    if (rc != 0) {
        return rc;
    }
    return join_group(m);
}

/* Connected as a joiner: our connections asked the members to add us. */
static int join_group(sq_member *m)
{
    int rc;
    /* Our connections asked the members to add us; the donor's welcome says when they have. */
    uint64_t deadline = sq__mono_ms() + (uint64_t)m->cfg.connect_timeout_ms;
    struct welcome w;
    for (;;) {
        memcpy(&w, m->table + m->welcome_off, sizeof(w));
        if (w.magic == WELCOME_MAGIC && w.check == welcome_check(&w)) {
            break;
        }
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
    if (w.status != 0 || w.nmembers == 0 || w.nmembers > SQ_MAX_MEMBERS ||
        w.my_rank >= w.nmembers || w.state_size > m->cfg.max_state_bytes) {
        set_error(m, "the group could not hand over its state (%llu bytes; max_state_bytes is "
                     "%llu)", (unsigned long long)w.state_size,
                  (unsigned long long)m->cfg.max_state_bytes);
        return SQ_EIO;
    }
    if (m->load != NULL) {
        m->load(m->state_arg, m->table + m->state_off, (size_t)w.state_size);
    }
    m->rank = (uint32_t)w.my_rank;
    struct sq__smc_params p = view_params(m, (uint32_t)w.view_id, (uint32_t)w.nmembers, m->rank,
                                          w.ids, w.peers);
    rc = sq__smc_init(&m->smc, &p, m->table + p.region_offset, m->t, on_deliver, m);
    if (rc != 0) {
        set_error(m, "cannot set up the shared state table: %s", sq_strerror(rc));
        return rc;
    }
    sq__log(SQ_LOG_INFO, "member %u joined view %u with %llu bytes of state", m->cfg.self_id,
            (uint32_t)w.view_id, (unsigned long long)w.state_size);
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

/* Reserves a slot with m->mu held, waiting for the window unless told not to. */
static int reserve_locked(sq_member *m, size_t size, void **buf, int flags)
{
    for (;;) {
        int rc = check_running(m);
        if (rc != 0) {
            return rc;
        }
        rc = sq__smc_reserve(&m->smc, size, buf);
        if (rc != SQ_EAGAIN) {
            return rc;
        }
        rc = wait_progress(m, flags);
        if (rc != 0) {
            return rc;
        }
    }
}

static int commit_locked(sq_member *m)
{
    int rc = sq__smc_commit(&m->smc);
    if (rc == 0 && !in_loop_thread(m)) {
        m->t->vt->wake(m->t); /* the loop flushes the write and pushes the header */
    }
    return rc;
}

int sq_member_send(sq_member *m, const void *data, size_t size, int flags)
{
    if (m == NULL || (data == NULL && size > 0)) {
        return SQ_EINVAL;
    }
    void *buf = NULL;
    bool locked = api_lock(m);
    int rc;
    do {
        /* A copying send can simply start over when the view changed under it. */
        rc = reserve_locked(m, size, &buf, flags);
        if (rc == 0) {
            if (size > 0) {
                memcpy(buf, data, size);
            }
            rc = commit_locked(m);
        }
    } while (rc == SQ_EVIEWCHANGE);
    api_unlock(m, locked);
    return rc;
}

int sq_member_reserve(sq_member *m, size_t size, void **buf, int flags)
{
    if (m == NULL || buf == NULL) {
        return SQ_EINVAL;
    }
    bool locked = api_lock(m);
    int rc = reserve_locked(m, size, buf, flags);
    api_unlock(m, locked);
    return rc;
}

int sq_member_commit(sq_member *m)
{
    if (m == NULL) {
        return SQ_EINVAL;
    }
    bool locked = api_lock(m);
    int rc = check_running(m);
    if (rc == 0) {
        rc = commit_locked(m);
    }
    api_unlock(m, locked);
    return rc;
}

/* Blocks until `done` holds for the shard, the member stops, or `timeout_ms` passes. */
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
    while ((rc = check_running(m)) == 0 && !done(&m->smc)) {
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
    return m->smc.view_id;
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
    sq__smc_leave(&m->smc);
    uint64_t others = 0;
    for (uint32_t r = 0; r < m->smc.L.nmembers; r++) {
        if (r != m->smc.my_rank) {
            others |= 1ull << m->smc.member_peers[r];
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
    if (m->smc_ready) {
        sq__smc_fini(&m->smc);
    }
    if (m->t != NULL) {
        m->t->vt->destroy(m->t);
    }
    pthread_cond_destroy(&m->cv);
    pthread_mutex_destroy(&m->mu);
    for (uint32_t i = 0; i < m->nbacklog; i++) {
        free(m->backlog[i].bytes);
    }
    free(m->backlog);
    free(m->table);
    free(m);
}

int sq_member_query(sq_member *m, uint32_t member_id, const void *req, size_t req_size,
                    void *reply, size_t reply_cap, size_t *reply_len, int timeout_ms)
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
        *q = (struct pending_query){.id = ++m->next_query_id, .peer = (uint32_t)peer,
                                    .reply = reply, .cap = reply_cap};
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
    if (m == NULL || (req == NULL && req_size > 0) || (replies == NULL && max_replies > 0)) {
        return SQ_EINVAL;
    }
    if (req_size + CALL_HDR > m->cfg.max_payload || req_size > SQ_QUERY_MAX_BYTES) {
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
                               .replies = replies, .max = max_replies};
    int rc;
    do {
        void *buf = NULL;
        rc = reserve_locked(m, req_size + CALL_HDR, &buf, 0);
        if (rc == 0) {
            uint64_t caller = m->self_peer;
            memcpy(buf, &c->id, 8);
            memcpy((uint8_t *)buf + 8, &caller, 8);
            if (req_size > 0) {
                memcpy((uint8_t *)buf + CALL_HDR, req, req_size);
            }
            sq__smc_set_flags(&m->smc, SQ_MSG_ORDERED_CALL);
            rc = commit_locked(m);
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
