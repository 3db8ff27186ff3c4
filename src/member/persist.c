/* persist.c: what a restart needs on disk: the persistence thread and the view file. */
#include <string.h>
#include <time.h>

#include "common.h"
#include "log.h"
#include "member/member_internal.h"

bool sq__member_any_persistent(const sq_member *m)
{
    for (uint32_t s = 0; s < m->cfg.nsubgroups; s++) {
        if (m->cfg.subgroups[s].persistent) {
            return true;
        }
    }
    return false;
}

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
void sq__member_note_view(sq_member *m)
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
int sq__member_save_view(sq_member *m)
{
    if (!sq__member_any_persistent(m) || !m->g.ctl_ready) {
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
    if (m->vf.view_next == vf.view_next) {
        vf.prev = m->vf.prev; /* the same view: what its first write kept */
    } else if (m->restart_guard) {
        /* The first view of a restart, which may never complete: the file before it stays
         * readable (sq__restart_effective_tails). */
        vf.prev = (struct sq__viewfile_prev){.view_next = m->vf.view_next,
                                             .members = m->vf.members,
                                             .held = m->vf.held,
                                             .mine = m->vf.mine,
                                             .acc_view = m->vf.acc_view,
                                             .acc_members = m->vf.acc_members};
    }
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
int sq__member_record_accept(void *arg, const struct sq__vc_value *v)
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

/* The persistence thread. group_commit: write and sync whatever the loop appended, as soon as
 * it did (appends that come in meanwhile form the next batch); periodic: write as it comes,
 * sync every flush_interval_ms; none: write, never sync. */
void *sq__member_flusher_main(void *arg)
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
