/* start.c: how a member gets into its first view: start, join, or restart from the disks. */
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "log.h"
#include "member/member_internal.h"
#include "transport/fabric/fabric.h"

static int join_group(sq_member *m);
static int await_welcome(sq_member *m);
static int restart_group(sq_member *m);

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
        sq__member_set_error(m, "%s", err);
        return rc;
    }
    sq__p2p_init(&m->p2p, m->table, m->p2p_off, m->cfg.nmembers, m->self_peer, m->t);
    m->p2p_ready = true;
    return 0;
}

static void init_group(sq_member *m)
{
    m->g.deliver = sq__member_on_deliver;
    m->g.deliver_arg = m;
    m->g.on_accept = sq__member_any_persistent(m) ? sq__member_record_accept : NULL;
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
int sq__member_open_kept_log(sq_member *m, uint32_t s, uint32_t k, struct sq__plog **out)
{
    char dir[600], err[800] = "";
    sq__group_log_dir(&m->cfg, m->cfg.self_id, s, k, dir, sizeof(dir));
    if (access(dir, F_OK) != 0) {
        return 0;
    }
    int rc = sq__group_open_shard_log(&m->cfg, sq__disk_posix(), m->cfg.self_id, s, k, out, err,
                                      sizeof(err));
    if (rc != 0) {
        sq__member_set_error(m, "%s", err);
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
            int rc = sq__member_open_kept_log(m, s, k, &log);
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
    if (sq__member_any_persistent(m)) {
        char path[700], err[900] = "";
        sq__viewfile_path(&m->cfg, m->cfg.self_id, path, sizeof(path));
        int rc = sq__viewfile_read(path, &m->vf, err, sizeof(err));
        if (rc < 0) {
            sq__member_set_error(m, "%s", err);
            return rc;
        }
        if (rc > 0) {
            /* A restart's first view rewrites this file at once. A member that cannot (its disk
             * full or read-only) would be counted in every restart the others try and then fail
             * it, each time it is started again, so they could never restart without it (chaos
             * seed 121): it stays out, and says why, until it can write there. */
            rc = sq__viewfile_write(path, &m->vf, err, sizeof(err));
            if (rc != 0) {
                sq__member_set_error(m,
                                     "%s (this member cannot take part in the group until its "
                                     "data directory takes writes again: a full disk?)",
                                     err);
                return rc;
            }
            tail.vf_view = m->vf.view_next;
            tail.vf_members = m->vf.members;
            tail.vf_held = m->vf.held;
            tail.vf_mine = m->vf.mine;
            tail.vf_acc_view = m->vf.acc_view;
            tail.vf_acc_members = m->vf.acc_members;
            tail.vf_prev_view = m->vf.prev.view_next;
            tail.vf_prev_members = m->vf.prev.members;
            tail.vf_prev_held = m->vf.prev.held;
            tail.vf_prev_mine = m->vf.prev.mine;
            tail.vf_prev_acc_view = m->vf.prev.acc_view;
            tail.vf_prev_acc_members = m->vf.prev.acc_members;
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
        sq__member_set_error(m, "cannot set up the shared state tables: %s", m->g.errmsg);
        return rc;
    }
    return sq__member_run_loop(m);
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

/* Whether the member at `peer` is gone since this member took the first view of a restart: its
 * link, once up (or, for the leader, the one its welcome came over), closed or failed, or another
 * process of it linked up. Such a member never takes this view, so waiting for it would only
 * hold the restart until the guard's deadline (and a new process of it would be counted as the
 * old one). `*known` holds the process this member counts on (0: none yet). */
static bool restart_peer_gone(sq_member *m, uint32_t peer, uint64_t *known)
{
    uint64_t inc = 0;
    int st = sq__fabric_peer_link(m->t, peer, &inc);
    if (*known == 0) {
        *known = st == SQ_FABRIC_UP ? inc : 0;
        return false;
    }
    return st == SQ_FABRIC_DOWN || (st == SQ_FABRIC_UP && inc != *known);
}

/* A member that was given the first view of a restart links up with every other member of it
 * (the higher rank of each pair connects) before it runs. A member of the view that goes away
 * meanwhile ends this one at once, with the message to start it again (squalld exits, and its
 * supervisor restarts it into a new restart without that member). */
static int link_view(sq_member *m, uint64_t deadline)
{
    const struct sq__sst *c = &m->g.ctl.sst;
    uint32_t need = 0;
    uint64_t known[SQ_MAX_MEMBERS] = {0};
    for (uint32_t r = 0; r < c->L.nmembers; r++) {
        need |= 1u << c->member_peers[r];
    }
    /* Rank 0 of a restart's first view is the member that led it: its welcome came over a link
     * that was up, so a link to it found closed now was lost since. */
    uint32_t leader = c->member_peers[0];
    if (leader != m->self_peer) {
        uint64_t inc = 0;
        int st = sq__fabric_peer_link(m->t, leader, &inc);
        known[leader] = inc;
        if (st == SQ_FABRIC_DOWN) {
            sq__member_set_error(m,
                                 "the restart did not complete: member %u, which sent the first "
                                 "view, went away before this member linked up with it; start "
                                 "this member again",
                                 m->cfg.members[leader].id);
            return SQ_ESTATE;
        }
    }
    for (;;) {
        for (uint32_t p = 0; p < m->cfg.nmembers; p++) {
            if (p != m->self_peer && ((need >> p) & 1u) && restart_peer_gone(m, p, &known[p])) {
                sq__member_set_error(m,
                                     "the restart did not complete: member %u of its first view "
                                     "went away (or started again) before every member linked up; "
                                     "start this member again",
                                     m->cfg.members[p].id);
                return SQ_ESTATE;
            }
        }
        if ((need & ~sq__fabric_linked(m->t)) == 0) {
            return 0;
        }
        if (sq__mono_ms() >= deadline) {
            sq__member_set_error(
                m, "could not link with every member of the restarted group within %d ms",
                m->cfg.connect_timeout_ms);
            return SQ_ETIMEDOUT;
        }
        int rc = sq__fabric_form_step(m->t, 20);
        if (rc != 0) {
            sq__member_set_error(m, "%s", "transport set-up failed while restarting");
            return rc;
        }
    }
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
            sq__member_set_error(m, "%s", m->g.errmsg);
            return rc;
        }
        if (rc > 0 && !m->g.restart_view) {
            m->rank = m->g.ctl.sst.my_rank; /* a running group welcomed us as a joiner */
            sq__log(SQ_LOG_INFO, "member %u joined view %u", m->cfg.self_id, m->g.ctl.sst.view_id);
            return sq__member_run_loop(m);
        }
        if (rc > 0) {
            m->rank = m->g.ctl.sst.my_rank;
            m->restart_guard = true;
            m->g.gate = true;
            m->restart_guard_until_ms = sq__mono_ms() + (uint64_t)m->cfg.connect_timeout_ms;
            sq__log(SQ_LOG_INFO, "member %u takes the first view %u of the restart (%u members)",
                    m->cfg.self_id, m->g.ctl.sst.view_id, m->g.ctl.sst.L.nmembers);
            rc = link_view(m, deadline);
            return rc != 0 ? rc : sq__member_run_loop(m);
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
                        sq__member_set_error(m, "%s", m->g.errmsg);
                        return rc;
                    }
                    m->rank = m->g.ctl.sst.my_rank;
                    m->restart_guard = true;
                    m->g.gate = true;
                    m->restart_guard_until_ms = sq__mono_ms() + (uint64_t)m->cfg.connect_timeout_ms;
                    return sq__member_run_loop(m);
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
            sq__member_set_error(m, "the group did not restart within %d ms: %s",
                                 m->cfg.connect_timeout_ms, why);
            return SQ_ETIMEDOUT;
        }
        if (why[0] != '\0' && (strcmp(why, said) != 0 || now - said_at >= 5000)) {
            sq__log(SQ_LOG_INFO, "restart: %s", why); /* what it waits for, as it changes */
            snprintf(said, sizeof(said), "%s", why);
            said_at = now;
        }
        rc = sq__fabric_form_step(m->t, 20);
        if (rc != 0) {
            sq__member_set_error(m, "transport set-up failed while restarting (%s)",
                                 sq_strerror(rc));
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
            sq__member_set_error(m,
                                 "member %u connected but was not added to the group within %d ms",
                                 m->cfg.self_id, m->cfg.connect_timeout_ms);
            return SQ_ETIMEDOUT;
        }
        int w_rc = m->t->vt->wait(m->t, 50);
        if (w_rc < 0 && w_rc != SQ_EPEER) {
            sq__member_set_error(m, "transport: %s", sq_strerror(w_rc));
            return w_rc;
        }
    }
    if (rc < 0) {
        sq__member_set_error(m, "%s", m->g.errmsg);
        return rc;
    }
    m->rank = m->g.ctl.sst.my_rank;
    sq__log(SQ_LOG_INFO, "member %u joined view %u", m->cfg.self_id, m->g.ctl.sst.view_id);
    return sq__member_run_loop(m);
}
