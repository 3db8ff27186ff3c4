/* group_log.c: the persistent shards' logs in the group: logging deliveries, opening and
 * replaying logs, publishing what is durable, and the flusher's side. */
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "group.h"
#include "group_internal.h"
#include "log.h"

/* Reads entry e's payload into g->scratch, growing it as needed: 0, SQ_ENOMEM or SQ_EIO. */
int sq__group_read_payload(struct sq__group *g, struct sq__plog *log,
                           const struct sq__plog_entry *e)
{
    if (g->scratch_cap < e->size) {
        uint8_t *p = realloc(g->scratch, e->size);
        if (p == NULL) {
            return SQ_ENOMEM;
        }
        g->scratch = p;
        g->scratch_cap = e->size;
    }
    ssize_t r = sq__plog_read(log, e, g->scratch, e->size);
    return r == (ssize_t)e->size ? 0 : r < 0 ? (int)r : SQ_EIO;
}

/* Persistent shards: every message passes here in the total order as soon as this member holds
 * it and all before it, before it is delivered (see sq__smc_set_ordered), and is logged. So the
 * sync of an update overlaps the multicast round that makes it stable, instead of following it.
 * What the log then holds past the last delivery may be trimmed away by a view change:
 * sq__group_cut_undelivered takes it out before the next view. */
void sq__group_ordered(void *arg, const sq_message *msg)
{
    struct sq__group *g = arg;
    uint32_t s = msg->subgroup;
    if (g->log[s] == NULL || g->failed != 0 || (msg->flags & SQ_MSG_ORDERED_CALL)) {
        return;
    }
    int rc = sq__plog_append(g->log[s], msg->version, msg->timestamp, msg->sender_id, msg->data,
                             (uint32_t)msg->size);
    if (rc != 0) {
        sq__group_fail(g, rc, "cannot log version %#llx of shard %u of subgroup %s: %s",
                       (unsigned long long)msg->version, msg->shard, g->cfg->subgroups[s].name,
                       sq_strerror(rc));
        return; /* not delivered: the member stops (poll reports the failure) */
    }
    g->appended = true;
}

/* Every delivery of a shard passes here; a persistent shard's message was logged before (by
 * sq__group_ordered). */
void sq__group_deliver(void *arg, const sq_message *msg)
{
    struct sq__group *g = arg;
    uint32_t s = msg->subgroup;
    if (g->log[s] != NULL && g->failed != 0) {
        return; /* the log failed: nothing more reaches the application unlogged */
    }
    atomic_store_explicit(&g->delivered_next[s], msg->version + 1, memory_order_release);
    if (g->deliver != NULL) {
        g->deliver(g->deliver_arg, msg);
    }
}

int sq__group_cut_undelivered(struct sq__group *g, uint32_t s)
{
    struct sq__plog *log = g->log[s];
    uint64_t limit = atomic_load(&g->delivered_next[s]);
    if (log == NULL || sq__plog_count(log) == 0 || sq__plog_last(log).version < limit) {
        return 0; /* nothing logged ahead of delivery */
    }
    uint64_t n = sq__plog_count(log), keep = n;
    while (keep > 0 && sq__plog_version_at(log, keep - 1) >= limit) {
        keep--; /* the records past the last delivery are the log's tail */
    }
    uint64_t first = sq__plog_version_at(log, keep);
    /* The flusher's count of durable records must not name records the cut replaces. */
    pthread_mutex_lock(&g->durable_mu);
    int rc = sq__plog_truncate(log, keep);
    if (atomic_load(&g->durable_next[s]) > limit) {
        atomic_store(&g->durable_next[s], limit); /* every record kept was durable */
    }
    pthread_mutex_unlock(&g->durable_mu);
    if (rc != 0) {
        return sq__group_fail(g, rc,
                              "cannot cut the log of subgroup %s back to its last delivery: %s",
                              g->cfg->subgroups[s].name, sq_strerror(rc));
    }
    sq__log(SQ_LOG_INFO,
            "the view change trimmed %llu logged updates of subgroup %s that were never delivered "
            "(versions from %#llx): cut from the log",
            (unsigned long long)(n - keep), g->cfg->subgroups[s].name, (unsigned long long)first);
    return 0;
}

/* Opens the log of my shard k of persistent subgroup s (once: shards are sticky). A log from
 * an earlier run is kept only when a donor will bring it up to date (this member rejoins a
 * running group); forming a group on it would reuse its versions. */
int sq__group_open_log(struct sq__group *g, uint32_t s, uint32_t k, bool have_donor, bool holder)
{
    char dir[600], err[800] = "";
    sq__group_log_dir(g->cfg, g->peer_ids[g->self_peer], s, k, dir, sizeof(dir));
    struct sq__plog *log = g->log[s];
    if (log != NULL && g->log_shard[s] != k) {
        /* Found at start, but of another shard than the layout gives me: not this history. */
        sq__plog_close(log);
        __atomic_store_n(&g->log[s], NULL, __ATOMIC_RELEASE);
        log = NULL;
    }
    if (log == NULL) {
        int rc = sq__group_open_shard_log(g->cfg, g->disk, g->peer_ids[g->self_peer], s, k, &log,
                                          err, sizeof(err));
        if (rc != 0) {
            return sq__group_fail(g, rc, "%s", err);
        }
    }
    g->log_shard[s] = k;
    g->log_ok[s] = true;
    uint64_t n = sq__plog_count(log);
    if (n > 0 && (have_donor || holder)) {
        struct sq__plog_entry last = sq__plog_last(log);
        sq__log(SQ_LOG_INFO, "%s holds %llu records up to version %#llx: %s", dir,
                (unsigned long long)n, (unsigned long long)last.version,
                holder ? "the group goes on from it" : "this member asks only for what came after");
        atomic_store(&g->durable_next[s], last.version + 1);
        atomic_store(&g->delivered_next[s], last.version + 1); /* the history so far */
        __atomic_store_n(&g->log[s], log, __ATOMIC_RELEASE);
        return 0;
    }
    if (n > 0) {
        struct sq__plog_entry last = sq__plog_last(log);
        sq__plog_close(log);
        __atomic_store_n(&g->log[s], NULL, __ATOMIC_RELEASE);
        return sq__group_fail(
            g, SQ_ESTATE,
            "%s holds %llu records from an earlier run (last version "
            "%#llx), but no member can bring it up to date and it is not the longest "
            "log of its shard: move the directory away to start this member afresh",
            dir, (unsigned long long)n, (unsigned long long)last.version);
    }
    atomic_store(&g->durable_next[s], 0);
    atomic_store(&g->delivered_next[s], 0);
    __atomic_store_n(&g->log[s], log, __ATOMIC_RELEASE); /* the flusher thread reads it */
    return 0;
}

void sq__group_adopt_log(struct sq__group *g, uint32_t s, uint32_t k, struct sq__plog *log)
{
    g->log_shard[s] = k;
    g->log_ok[s] = false;
    __atomic_store_n(&g->log[s], log, __ATOMIC_RELEASE);
}

int sq__group_open_shard_log(const struct sq_config *cfg, struct sq_disk *disk, uint32_t member_id,
                             uint32_t s, uint32_t k, struct sq__plog **out, char *err,
                             size_t err_size)
{
    char dir[600];
    sq__group_log_dir(cfg, member_id, s, k, dir, sizeof(dir));
    int rc = sq__plog_open(out, disk, dir, cfg->segment_bytes, err, err_size);
    if (rc == 0 && (*out)->recovery[0] != '\0') {
        sq__log(SQ_LOG_WARN, "log recovery: %s", (*out)->recovery);
    }
    return rc;
}

void sq__group_log_dir(const struct sq_config *cfg, uint32_t member_id, uint32_t s, uint32_t k,
                       char *out, size_t cap)
{
    snprintf(out, cap, "%s/member-%u/%s.%u", cfg->data_dir, member_id, cfg->subgroups[s].name, k);
}

/* Before the first view of a restart: the shard clocks go on from the logs, and the members
 * holding a shard's history replay it to the application, every record in order, flagged (a
 * donor's state then includes it). */
int sq__group_replay_logs(struct sq__group *g, uint32_t my_rank, const struct sq__assign *assign)
{
    for (uint32_t s = 0; s < g->cfg->nsubgroups; s++) {
        if (g->log[s] != NULL && sq__plog_count(g->log[s]) > 0) {
            g->last_ts[s] = sq__plog_last(g->log[s]).timestamp;
        }
    }
    for (uint32_t s = 0; s < g->cfg->nsubgroups; s++) {
        struct sq__plog *log = g->log[s];
        if (log == NULL || g->deliver == NULL || assign->shard[s][my_rank] != g->log_shard[s]) {
            continue;
        }
        uint64_t count = sq__plog_count(log);
        for (uint64_t p = 0; p < count; p++) {
            struct sq__plog_entry e;
            if (sq__plog_entry_at(log, p, &e) != 0) {
                break;
            }
            int rc = sq__group_read_payload(g, log, &e);
            if (rc != 0) {
                return sq__group_fail(g, rc, "cannot replay the log of subgroup %s: %s",
                                      g->cfg->subgroups[s].name, sq_strerror(rc));
            }
            sq_message m = {.sender_id = e.sender,
                            .index = p,
                            .version = e.version,
                            .data = g->scratch,
                            .size = e.size,
                            .flags = SQ_MSG_REPLAYED,
                            .subgroup = s,
                            .shard = g->log_shard[s],
                            .timestamp = e.timestamp};
            g->deliver(g->deliver_arg, &m);
        }
        sq__log(SQ_LOG_INFO, "replayed %llu logged updates of subgroup %s",
                (unsigned long long)count, g->cfg->subgroups[s].name);
    }
    return 0;
}

/* Puts what the flusher made durable in my shard row, and reports the shard's frontier (the
 * least over its members) as it advances. */
int sq__group_publish_persistence(struct sq__group *g, uint32_t s)
{
    struct sq__smc *sh = &g->shard[s];
    if (g->awaiting[s]) {
        return 0; /* until the donor confirmed my log and brought it up to date, it counts 0 */
    }
    uint8_t *mine = sq__sst_row(&sh->sst, sh->sst.my_rank) + sh->sst.L.off_persisted;
    uint64_t durable = atomic_load(&g->durable_next[s]);
    int events = 0;
    if (durable > sq__load_u64(mine)) {
        sq__store_u64(mine, durable);
        sh->sst.header_dirty = true;
        events++;
        /* now, not at the next poll: the members answering clients wait for it */
        int rc = sq__sst_push_header(&sh->sst);
        if (rc != 0) {
            return rc;
        }
    }
    uint64_t frontier = UINT64_MAX;
    for (uint32_t r = 0; r < sh->sst.L.nmembers; r++) {
        frontier = SQ_MIN(frontier, sq__sst_col(&sh->sst, r, sh->sst.L.off_persisted));
    }
    /* Members log before delivery: an update may be on every disk before it is delivered here.
     * It is reported persisted only once delivered too (the application has seen it). */
    frontier = SQ_MIN(frontier, atomic_load(&g->delivered_next[s]));
    if (frontier != UINT64_MAX && frontier > g->frontier[s]) {
        g->frontier[s] = frontier;
        if (g->persisted != NULL) {
            g->persisted(g->persisted_arg, s, sh->shard, frontier - 1);
        }
        events++;
    }
    return events;
}

int sq__group_flush_log(struct sq__group *g, uint32_t sg, bool sync, bool written_is_durable)
{
    struct sq__plog *log = __atomic_load_n(&g->log[sg], __ATOMIC_ACQUIRE);
    if (log == NULL) {
        return 0;
    }
    uint64_t durable = 0;
    /* Not while a log is cut (cut_log): the count would name records the cut replaced. */
    pthread_mutex_lock(&g->durable_mu);
    int rc = sq__plog_flush(log, sync, &durable);
    if (written_is_durable) {
        durable = sq__plog_written(log); /* flush = none: the promise is only this much */
    }
    if (durable > 0) {
        uint64_t next = sq__plog_version_at(log, durable - 1) + 1;
        if (next > atomic_load(&g->durable_next[sg])) {
            uint32_t i = atomic_load_explicit(&g->durable_marks[sg], memory_order_relaxed);
            atomic_store_explicit(&g->durable_mark[sg][i % SQ_DURABLE_MARKS].at_us, sq__mono_us(),
                                  memory_order_relaxed);
            atomic_store_explicit(&g->durable_mark[sg][i % SQ_DURABLE_MARKS].next, next,
                                  memory_order_relaxed);
            atomic_store_explicit(&g->durable_marks[sg], i + 1, memory_order_release);
            atomic_store(&g->durable_next[sg], next);
        }
    }
    pthread_mutex_unlock(&g->durable_mu);
    return rc;
}

uint64_t sq__group_durable_time(const struct sq__group *g, uint32_t sg, uint64_t version)
{
    uint32_t n = atomic_load_explicit(&g->durable_marks[sg], memory_order_acquire);
    uint64_t best = 0, best_next = UINT64_MAX;
    for (uint32_t k = 0; k < SQ_MIN(n, (uint32_t)SQ_DURABLE_MARKS); k++) {
        uint32_t i = (n - 1 - k) % SQ_DURABLE_MARKS;
        uint64_t next = atomic_load_explicit(&g->durable_mark[sg][i].next, memory_order_relaxed);
        if (next > version && next < best_next) {
            best_next = next;
            best = atomic_load_explicit(&g->durable_mark[sg][i].at_us, memory_order_relaxed);
        }
    }
    return best;
}

void sq__group_close_logs(struct sq__group *g)
{
    free(g->scratch);
    g->scratch = NULL;
    g->scratch_cap = 0;
    for (uint32_t s = 0; s < SQ_MAX_SUBGROUPS; s++) {
        sq__plog_close(g->log[s]);
        g->log[s] = NULL;
    }
}
