/* api.c: the public sq_member_* API: open and close, callbacks, sending, draining, leave, logs. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "common.h"
#include "log.h"
#include "member/member_internal.h"
#include "smc.h"
#include "view.h"

void sq__member_set_error(sq_member *m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->errmsg, sizeof(m->errmsg), fmt, ap);
    va_end(ap);
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
    /* Page-aligned and zeroed: registered with the fabric as one region. An anonymous mapping is
     * zero-filled by the kernel page by page as it is first touched, so a member's resident
     * memory is what its tables use (slots that have carried messages, state areas that held a
     * handover), not the sum of every window and state area it could use. */
    void *mem =
        mmap(NULL, m->table_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        free(m);
        return SQ_ENOMEM;
    }
    m->table = mem;
    m->backlog = calloc(MAX_REPLY_BACKLOG, sizeof(m->backlog[0]));
    if (m->backlog == NULL) {
        munmap(m->table, m->table_bytes);
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

uint64_t sq_member_durable_time(sq_member *m, uint32_t subgroup, uint64_t version)
{
    if (m == NULL || subgroup >= m->cfg.nsubgroups) {
        return 0;
    }
    return sq__group_durable_time(&m->g, subgroup, version);
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

bool sq__member_in_loop_thread(const sq_member *m)
{
    return atomic_load(&m->loop_started) && pthread_equal(pthread_self(), m->loop_self);
}

/* Waits for delivery progress; false when the member failed or is closing. */
int sq__member_wait_progress(sq_member *m, int flags)
{
    if ((flags & SQ_SEND_NONBLOCK) || sq__member_in_loop_thread(m)) {
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
    if (sq__member_in_loop_thread(m)) {
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

int sq__member_check_running(sq_member *m)
{
    if (m->state == ST_RUNNING) {
        return 0;
    }
    return m->state == ST_OPEN ? SQ_ESTATE : SQ_ECLOSED;
}

/* Reserves a slot in my shard of subgroup `sg` with m->mu held, waiting for the window (and for
 * an adequate view) unless told not to. */
int sq__member_reserve_locked(sq_member *m, uint32_t sg, size_t size, void **buf, int flags)
{
    for (;;) {
        int rc = sq__member_check_running(m);
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
        rc = sq__member_wait_progress(m, flags);
        if (rc != 0) {
            return rc;
        }
    }
}

int sq__member_commit_locked(sq_member *m, uint32_t sg)
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
    if (rc == 0 && !sq__member_in_loop_thread(m)) {
        m->t->vt->wake(m->t); /* the loop flushes the write and pushes the header */
    }
    return rc;
}

/* With m->mu held: one copying send (which simply starts over when the view changed under
 * it). */
static int send_locked(sq_member *m, uint32_t subgroup, const void *data, size_t size, int flags)
{
    void *buf = NULL;
    int rc;
    do {
        rc = sq__member_reserve_locked(m, subgroup, size, &buf, flags);
        if (rc == 0) {
            if (size > 0) {
                memcpy(buf, data, size);
            }
            rc = sq__member_commit_locked(m, subgroup);
        }
    } while (rc == SQ_EVIEWCHANGE);
    return rc;
}

int sq_member_send_in(sq_member *m, uint32_t subgroup, const void *data, size_t size, int flags)
{
    if (m == NULL || (data == NULL && size > 0) || subgroup >= m->cfg.nsubgroups) {
        return SQ_EINVAL;
    }
    bool locked = api_lock(m);
    int rc = send_locked(m, subgroup, data, size, flags);
    api_unlock(m, locked);
    return rc;
}

int sq_member_send_many(sq_member *m, uint32_t subgroup, uint32_t n, const void *const *data,
                        const size_t *sizes, int flags, uint32_t *sent)
{
    *sent = 0;
    if (m == NULL || subgroup >= m->cfg.nsubgroups || (n > 0 && (data == NULL || sizes == NULL))) {
        return SQ_EINVAL;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (data[i] == NULL && sizes[i] > 0) {
            return SQ_EINVAL;
        }
    }
    bool locked = api_lock(m);
    int rc = 0;
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        rc = send_locked(m, subgroup, data[i], sizes[i], flags);
        *sent += rc == 0;
    }
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
    int rc = sq__member_reserve_locked(m, subgroup, size, buf, flags);
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
    int rc = sq__member_check_running(m);
    if (rc == 0) {
        rc = sq__member_commit_locked(m, subgroup);
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
    if (sq__member_in_loop_thread(m)) {
        return SQ_ESTATE;
    }
    uint64_t deadline = sq__mono_ms() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms);
    pthread_mutex_lock(&m->mu);
    int rc = 0;
    while ((rc = sq__member_check_running(m)) == 0 && !every_shard(m, done)) {
        if (timeout_ms >= 0 && sq__mono_ms() >= deadline) {
            rc = SQ_ETIMEDOUT;
            break;
        }
        (void)sq__member_wait_progress(m, 0);
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

int sq_member_get_health(const sq_member *m, sq_member_health *out)
{
    if (m == NULL || out == NULL) {
        return SQ_EINVAL;
    }
    const struct sq__suspicions *c = &m->g.suspicions;
    *out =
        (sq_member_health){.suspected_heartbeat = atomic_load(&c->by_cause[SQ_SUSPECT_HEARTBEAT]),
                           .suspected_link = atomic_load(&c->by_cause[SQ_SUSPECT_LINK]),
                           .suspected_relayed = atomic_load(&c->by_cause[SQ_SUSPECT_RELAYED]),
                           .own_stalls = atomic_load(&c->own_stalls),
                           .longest_stall_ms = atomic_load(&c->longest_stall_us) / 1000,
                           .heartbeat_timeout_ms = (uint32_t)m->cfg.heartbeat_timeout_ms};
    return 0;
}

uint64_t sq_member_large_bytes_sent(const sq_member *m)
{
    return m == NULL ? 0 : atomic_load_explicit(&m->g.large_bytes_sent, memory_order_relaxed);
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
    if (sq__member_in_loop_thread(m)) {
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
        (void)sq__member_wait_progress(m, 0);
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
    munmap(m->table, m->table_bytes);
    free(m);
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
    uint64_t limit = atomic_load(&m->g.delivered_next[subgroup]);
    if (rc == 0 && !m->offline_logs && e.version >= limit) {
        /* Logged ahead of its delivery: not history yet, perhaps never. */
        if (how == SQ_LOG_AT_OR_BEFORE || how == SQ_LOG_AT_TIME) {
            rc = limit == 0 ? SQ_ENOTFOUND
                            : sq__plog_find(log, limit - 1, SQ_PLOG_AT_OR_BEFORE, &e, NULL);
        } else {
            rc = SQ_ENOTFOUND;
        }
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
            int rc = sq__member_open_kept_log(m, s, k, &log);
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
