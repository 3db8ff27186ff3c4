/* loop.c: the event-loop thread that drives the protocol core over the fabric transport. */
#include <string.h>

#include "common.h"
#include "log.h"
#include "member/member_internal.h"

/* The loop wakes at least this often when idle, to bump the heartbeat. */
#define SQ_IDLE_WAKE_MS 100

void sq__member_on_deliver(void *arg, const sq_message *msg)
{
    sq_member *m = arg;
    if (msg->flags & SQ_MSG_REPLAYED) {
        if (m->deliver != NULL) {
            m->deliver(m->deliver_arg, msg); /* rebuilding state at a restart: not a delivery */
        }
        return;
    }
    if (msg->flags & SQ_MSG_ORDERED_CALL) {
        sq__member_handle_call(m, msg);
        return;
    }
    atomic_fetch_add_explicit(&m->delivered, 1, memory_order_relaxed);
    if (m->deliver != NULL) {
        m->deliver(m->deliver_arg, msg);
    }
}

static void fail_locked(sq_member *m, int rc)
{
    if (m->state == ST_RUNNING) {
        m->state = ST_FAILED;
        if (rc == SQ_EPARTITIONED) {
            sq__member_set_error(
                m,
                "member %u stopped in view %u: it suspects %d of the %u members, so it "
                "is on the minority side and may not go on alone",
                m->cfg.self_id, m->g.ctl.sst.view_id, __builtin_popcountll(m->g.ctl.sst.suspected),
                m->g.ctl.sst.L.nmembers);
        } else if (rc == SQ_ELEFT) {
            sq__member_set_error(m, "member %u left the group in view %u", m->cfg.self_id,
                                 m->g.ctl.sst.view_id);
        } else if (rc == SQ_EREMOVED) {
            sq__member_set_error(
                m,
                "member %u stopped in view %u: the other members removed it from the "
                "group (it may rejoin as a new member)",
                m->cfg.self_id, m->g.ctl.sst.view_id);
        } else {
            sq__member_set_error(m, "member %u stopped: %s (%s)", m->cfg.self_id, sq_strerror(rc),
                                 m->g.errmsg[0] ? m->g.errmsg : "no detail");
        }
        sq__log(rc == SQ_ELEFT ? SQ_LOG_INFO : SQ_LOG_ERROR, "%s", m->errmsg);
        /* last: a thread that sees the failure (an atomic) may read the message at once */
        m->failure = rc;
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
    sq__member_settle_calls(m, next_peers);
    int rc = sq__group_install(&m->g);
    if (rc != 0) {
        return rc;
    }
    m->rank = m->g.ctl.sst.my_rank;
    m->restart_guard = false; /* a view change completed: every member of the last one took it */
    m->g.gate = false;
    tell_transport_view(m);
    report_view(m, removed, nremoved, m->g.dropped);
    sq__member_note_view(m);
    return sq__member_save_view(m);
}

static void broadcast(sq_member *m)
{
    if (m->waiters > 0) {
        pthread_cond_broadcast(&m->cv);
    }
}

static void admit_join(sq_member *m, uint32_t p)
{
    sq__log(SQ_LOG_INFO, "member %u asks to join", m->peer_ids[p]);
    m->pending_joins |= 1ull << p;
    sq__member_fail_queries_to(m, p);
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
    /* This member's own stall (see smc.c, forgive_own_stall) does not count against a doubtful
     * peer either: its heartbeat written meanwhile has not been read yet. */
    uint64_t period_us = 1000ull * (uint64_t)SQ_MAX(m->cfg.heartbeat_timeout_ms / 5, 1);
    if (m->last_note_us != 0 && now - m->last_note_us > period_us) {
        uint64_t excess = now - m->last_note_us - period_us;
        for (uint32_t p = 0; p < m->cfg.nmembers; p++) {
            m->doubt_since_us[p] = SQ_MIN(m->doubt_since_us[p] + excess, now);
        }
    }
    m->last_note_us = now;
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

/* Turns links the transport saw fail into suspicions of the members behind them. */
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
            sq__member_fail_queries_to(m, p);
        }
    }
    for (uint32_t r = 0; r < m->g.ctl.sst.L.nmembers; r++) {
        if (r != m->g.ctl.sst.my_rank && (failed >> m->g.ctl.sst.member_peers[r]) & 1u) {
            sq__sst_suspect_why(&m->g.ctl.sst, r, SQ_SUSPECT_LINK,
                                "the transport reports its link closed or failed");
        }
    }
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
        /* Every member wrote its row, so each has the view in its view file (sq__member_run_loop
         * writes it before the first row goes out): from now on a restart from a majority knows of
         * it, and the shards may deliver and persist in it. */
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
            int vrc = sq__member_save_view(m);
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
        if (sq__member_serve_p2p(m) > 0) {
            rc = rc > 0 ? rc + 1 : 1;
        }
        if (rc > 0) {
            broadcast(m);
        }
        uint64_t lazy = sq__group_lazy_deadline(&m->g);
        pthread_mutex_unlock(&m->mu);
        /* Posting writes makes system calls: do it without the lock so senders can fill slots
         * meanwhile. Only this thread touches the transport. Then, when busy, only make
         * progress; when idle, block until a peer writes, a sender wakes us, or the next
         * heartbeat is due. */
        int w = m->t->vt->flush(m->t);
        if (w == 0) {
            int idle_ms = SQ_MIN(SQ_IDLE_WAKE_MS, SQ_MAX(m->cfg.heartbeat_timeout_ms / 5, 1));
            if (lazy != UINT64_MAX) {
                /* a change waiting for a push is due then (group.h), at most once per burst */
                uint64_t now = sq__mono_us();
                idle_ms = lazy <= now ? 0 : SQ_MIN(idle_ms, (int)((lazy - now + 999) / 1000));
            }
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

/* Starts the event loop over the view already set up in m->g. */
int sq__member_run_loop(sq_member *m)
{
    sq__member_note_view(m);
    int vrc = sq__member_save_view(m);
    if (vrc != 0) {
        sq__member_set_error(m, "%s", m->g.errmsg);
        return vrc;
    }
    if (sq__member_any_persistent(m)) {
        if (pthread_create(&m->flusher, NULL, sq__member_flusher_main, m) != 0) {
            sq__member_set_error(m, "cannot start the persistence thread");
            return SQ_ENOMEM;
        }
        m->flusher_started = true;
    }
    m->g_ready = true;
    m->state = ST_RUNNING;
    tell_transport_view(m);
    report_view(m, NULL, 0, 0);
    /* Read before the loop starts: it may install the next view at once (tsan saw that). */
    const uint32_t rank = m->rank, nmembers = m->g.ctl.sst.L.nmembers,
                   view_id = m->g.ctl.sst.view_id;
    if (pthread_create(&m->loop, NULL, loop_main, m) != 0) {
        m->state = ST_FAILED;
        sq__member_set_error(m, "cannot start the event-loop thread");
        return SQ_ENOMEM;
    }
    m->loop_self = m->loop;
    m->loop_started = true;
    sq__log(SQ_LOG_INFO, "member %u (rank %u of %u) is in view %u over %s", m->cfg.self_id, rank,
            nmembers, view_id, m->t->vt->name);
    return 0;
}
