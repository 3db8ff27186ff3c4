/* member.c: a group member at run time: the event-loop thread that drives the protocol core over
 * the fabric transport, and the public sq_member_* API around it. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <time.h>

#include "common.h"
#include "config.h"
#include "log.h"
#include "smc.h"
#include "transport/fabric/fabric.h"

/* The loop wakes at least this often when idle, to bump the heartbeat. */
#define SQ_IDLE_WAKE_MS 100
#define SQ_HEARTBEAT_MS 100

enum member_state { ST_OPEN, ST_RUNNING, ST_FAILED, ST_CLOSING };

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
static void set_error(sq_member *m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->errmsg, sizeof(m->errmsg), fmt, ap);
    va_end(ap);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void on_deliver(void *arg, const sq_message *msg)
{
    sq_member *m = arg;
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
    struct sq__smc_layout L;
    rc = sq__smc_layout(&L, m->cfg.nmembers, m->cfg.window_size, m->cfg.max_payload);
    if (rc != 0) {
        if (err != NULL) {
            snprintf(err, err_size, "%s: the subgroup layout is out of range", config_path);
        }
        free(m);
        return SQ_ECONFIG;
    }
    m->table_bytes = L.table_bytes;
    /* Page-aligned and zeroed: registered with the fabric as one region. */
    if (posix_memalign((void **)&m->table, 4096, m->table_bytes) != 0) {
        free(m);
        return SQ_ENOMEM;
    }
    memset(m->table, 0, m->table_bytes);
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    m->state = ST_OPEN;
    *out = m;
    return 0;
}

int sq_member_on_deliver(sq_member *m, sq_deliver_fn fn, void *arg)
{
    if (m == NULL || m->state != ST_OPEN) {
        return SQ_ESTATE;
    }
    m->deliver = fn;
    m->deliver_arg = arg;
    return 0;
}

static bool in_loop_thread(const sq_member *m)
{
    return m->loop_started && pthread_equal(pthread_self(), m->loop_self);
}

static void fail_locked(sq_member *m, int rc)
{
    if (m->state == ST_RUNNING) {
        m->state = ST_FAILED;
        set_error(m, "member %u stopped: %s (%s)", m->cfg.self_id, sq_strerror(rc),
                  m->smc.errmsg[0] ? m->smc.errmsg : "no detail");
        sq__log(SQ_LOG_ERROR, "%s", m->errmsg);
    }
    pthread_cond_broadcast(&m->cv);
}

static void broadcast(sq_member *m)
{
    if (m->waiters > 0) {
        pthread_cond_broadcast(&m->cv);
    }
}

static void *loop_main(void *arg)
{
    sq_member *m = arg;
    uint64_t next_heartbeat = now_ms() + SQ_HEARTBEAT_MS;
    pthread_mutex_lock(&m->mu);
    while (m->state == ST_RUNNING) {
        int rc = sq__smc_poll(&m->smc);
        if (rc < 0) {
            fail_locked(m, rc);
            break;
        }
        if (rc > 0) {
            broadcast(m);
        }
        uint64_t now = now_ms();
        if (now >= next_heartbeat) {
            sq__smc_heartbeat(&m->smc);
            next_heartbeat = now + SQ_HEARTBEAT_MS;
        }
        pthread_mutex_unlock(&m->mu);
        /* Posting writes makes system calls: do it without the lock so senders can fill slots
         * meanwhile. Only this thread touches the transport. Then, when busy, only make
         * progress; when idle, block until a peer writes, a sender wakes us, or the heartbeat is
         * due. */
        int w = m->t->vt->flush(m->t);
        if (w == 0) {
            w = m->t->vt->wait(m->t, rc > 0 ? 0 : SQ_IDLE_WAKE_MS);
        }
        pthread_mutex_lock(&m->mu);
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

int sq_member_start(sq_member *m, int timeout_ms)
{
    if (m == NULL || m->state != ST_OPEN || m->t != NULL) {
        return SQ_ESTATE;
    }
    if (timeout_ms >= 0) {
        m->cfg.connect_timeout_ms = timeout_ms;
    }
    char err[256] = "";
    int rc = sq__fabric_create(&m->t, &m->cfg, m->table, m->table_bytes, err, sizeof(err));
    if (rc != 0) {
        set_error(m, "%s", err);
        return rc;
    }
    uint32_t ids[SQ_MAX_MEMBERS];
    for (uint32_t i = 0; i < m->cfg.nmembers; i++) {
        ids[i] = m->cfg.members[i].id;
    }
    struct sq__smc_params p = {.nmembers = m->cfg.nmembers, .my_rank = m->rank,
                               .window_size = m->cfg.window_size,
                               .max_payload = m->cfg.max_payload, .view_id = 0,
                               .member_ids = ids};
    rc = sq__smc_init(&m->smc, &p, m->table, m->t, on_deliver, m);
    if (rc != 0) {
        m->t->vt->destroy(m->t);
        m->t = NULL;
        set_error(m, "cannot set up the shared state table: %s", sq_strerror(rc));
        return rc;
    }
    m->smc_ready = true;
    m->state = ST_RUNNING;
    if (pthread_create(&m->loop, NULL, loop_main, m) != 0) {
        m->state = ST_FAILED;
        set_error(m, "cannot start the event-loop thread");
        return SQ_ENOMEM;
    }
    m->loop_self = m->loop;
    m->loop_started = true;
    sq__log(SQ_LOG_INFO, "member %u (rank %u of %u) joined the group over %s", m->cfg.self_id,
            m->rank, m->cfg.nmembers, m->t->vt->name);
    return 0;
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
    int rc = reserve_locked(m, size, &buf, flags);
    if (rc == 0) {
        if (size > 0) {
            memcpy(buf, data, size);
        }
        rc = commit_locked(m);
    }
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
    uint64_t deadline = now_ms() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms);
    pthread_mutex_lock(&m->mu);
    int rc = 0;
    while ((rc = check_running(m)) == 0 && !done(&m->smc)) {
        if (timeout_ms >= 0 && now_ms() >= deadline) {
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
    free(m->table);
    free(m);
}
