/* group.c: the control table, the shard tables, layouts and state handovers of one member. See
 * group.h. */
#include "group.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "hash.h"
#include "log.h"
#include "view.h"

#define WELCOME_MAGIC 0x4d4f434c45575153ull  /* "SQWELCOM" */
#define HANDOVER_MAGIC 0x524556444e414853ull /* "SHANDVER" */
/* The control table carries no messages: one tiny slot per member. */
#define CTL_WINDOW 1u
#define CTL_PAYLOAD 8u

static_assert(sizeof(struct sq__welcome) <= SQ_WELCOME_BYTES, "welcome fits its block");
static_assert(sizeof(struct sq__welcome) <= SQ_TRANSPORT_MAX_COPY, "welcome is one write_copy");

/* What a donor writes after each chunk of a shard's state: the view, the chunk number, the
 * size, what it holds, a hash of its bytes, and a check of the whole header (written last). */
struct handover {
    uint64_t magic;
    uint64_t view_id;
    uint64_t shard;
    uint64_t seq;
    uint64_t size;
    uint64_t flags;     /* CHUNK_LAST: the application state (else: log records) */
    uint64_t status;    /* 0, or 1: the state did not fit max_state_bytes */
    uint64_t last_ts;   /* with CHUNK_LAST: the shard's last timestamp */
    uint64_t keep_next; /* with CHUNK_CUT: 1 + the last version the newcomer keeps (0: none)... */
    uint64_t keep_ts;   /* ...and that record's timestamp, which must match */
    uint64_t data_hash;
    uint64_t check;
};
#define CHUNK_LAST 1u
#define CHUNK_CUT 2u /* first chunk only: the newcomer's log goes past the shard's history */
static_assert(sizeof(struct handover) <= SQ_HANDOVER_BYTES, "handover fits its record");

static int gfail(struct sq__group *g, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int gfail(struct sq__group *g, int rc, const char *fmt, ...)
{
    if (g->failed == 0) {
        g->failed = rc;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(g->errmsg, sizeof(g->errmsg), fmt, ap);
        va_end(ap);
    }
    return g->failed;
}

static uint64_t welcome_check(const struct sq__welcome *w)
{
    return sq__fnv1a(SQ_FNV_INIT, w, offsetof(struct sq__welcome, check)) | 1u;
}

static uint64_t handover_check(const struct handover *h)
{
    return sq__fnv1a(SQ_FNV_INIT, h, offsetof(struct handover, check)) | 1u;
}

int sq__group_mem_layout(const struct sq_config *cfg, struct sq__group_mem *mem)
{
    memset(mem, 0, sizeof(*mem));
    struct sq__sst_layout L;
    if (sq__sst_layout(&L, cfg->nmembers, CTL_WINDOW, CTL_PAYLOAD) != 0) {
        return SQ_ECONFIG;
    }
    mem->ctl_region = L.table_bytes;
    size_t off = 2 * L.table_bytes;
    for (uint32_t s = 0; s < cfg->nsubgroups; s++) {
        const struct sq_subgroup_cfg *sg = &cfg->subgroups[s];
        if (sq__sst_layout(&L, sq__config_shard_rows(cfg, s), sg->window_size, sg->max_payload) !=
            0) {
            return SQ_ECONFIG;
        }
        mem->sg_off[s] = off;
        mem->sg_region[s] = L.table_bytes;
        off += 2 * L.table_bytes;
    }
    mem->welcome_off = off;
    mem->handover_off = off + SQ_WELCOME_BYTES;
    off = mem->handover_off + SQ_HANDOVER_BYTES * SQ_MAX_SUBGROUPS;
    for (uint32_t s = 0; s < cfg->nsubgroups; s++) {
        mem->state_off[s][0] = off;
        mem->state_off[s][1] = off + SQ_ALIGN8(cfg->max_state_bytes);
        off += 2 * SQ_ALIGN8(cfg->max_state_bytes);
    }
    mem->end = off;
    return 0;
}

void sq__group_init(struct sq__group *g, const struct sq_config *cfg, uint8_t *base,
                    struct sq_transport *t, uint32_t self_peer, const uint32_t *peer_ids,
                    uint64_t now_us)
{
    sq_deliver_fn deliver = g->deliver;
    void *deliver_arg = g->deliver_arg;
    sq_state_save_fn save = g->save;
    sq_state_load_fn load = g->load;
    void *state_arg = g->state_arg;
    sq_persisted_fn persisted = g->persisted;
    void *persisted_arg = g->persisted_arg;
    struct sq_disk *disk = g->disk;
    int (*on_accept)(void *, const struct sq__vc_value *) = g->on_accept;
    void *on_accept_arg = g->on_accept_arg;
    memset(g, 0, sizeof(*g));
    g->on_accept = on_accept;
    g->on_accept_arg = on_accept_arg;
    pthread_mutex_init(&g->durable_mu, NULL);
    g->persisted = persisted;
    g->persisted_arg = persisted_arg;
    g->disk = disk != NULL ? disk : sq__disk_posix();
    for (uint32_t s = 0; s < SQ_MAX_SUBGROUPS; s++) {
        g->log_shard[s] = UINT32_MAX;
    }
    g->deliver = deliver;
    g->deliver_arg = deliver_arg;
    g->save = save;
    g->load = load;
    g->state_arg = state_arg;
    g->cfg = cfg;
    g->base = base;
    g->t = t;
    g->self_peer = self_peer;
    g->peer_ids = peer_ids;
    g->now_us = now_us;
    (void)sq__group_mem_layout(cfg, &g->mem);
    uint32_t flat = 0;
    for (uint32_t s = 0; s < cfg->nsubgroups; s++) {
        g->shard_base[s] = flat;
        flat += cfg->subgroups[s].shards;
    }
    sq__assign_clear(&g->assign);
    sq__assign_clear(&g->holders);
}

static void end_donation(struct sq__donation *d);

static void drop_shards(struct sq__group *g)
{
    for (uint32_t s = 0; s < SQ_MAX_SUBGROUPS; s++) {
        end_donation(&g->donation[s]);
        if (g->in_shard[s]) {
            sq__smc_fini(&g->shard[s]);
            g->in_shard[s] = false;
        }
        g->awaiting[s] = false;
    }
}

void sq__group_fini(struct sq__group *g)
{
    drop_shards(g);
    if (g->ctl_ready) {
        sq__smc_fini(&g->ctl);
        g->ctl_ready = false;
    }
}

/* Reads entry e's payload into g->scratch, growing it as needed: 0, SQ_ENOMEM or SQ_EIO. */
static int read_payload(struct sq__group *g, struct sq__plog *log, const struct sq__plog_entry *e)
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

/* Becomes the donor of shard (s, k) for its newcomers: takes the application state as of the
 * old view's last delivery; pump_donation() then sends the log and the state chunk by chunk. */
static void start_donation(struct sq__group *g, uint32_t view_id, uint32_t s, uint32_t k,
                           const uint32_t *newcomers, uint32_t nnew)
{
    struct sq__donation *d = &g->donation[s];
    free(d->state);
    memset(d, 0, sizeof(*d));
    d->active = true;
    d->view_id = view_id;
    d->shard = k;
    memcpy(d->newcomers, newcomers, nnew * sizeof(uint32_t));
    d->nnew = nnew;
    d->last_ts = g->last_ts[s];
    d->log_end = g->log[s] != NULL ? sq__plog_count(g->log[s]) : 0;
    if (g->save != NULL && g->save(g->state_arg, s, k, &d->state, &d->state_size) != 0) {
        sq__log(SQ_LOG_ERROR,
                "the state callback failed for shard %u of subgroup %s: its "
                "newcomers cannot start",
                k, g->cfg->subgroups[s].name);
        free(d->state);
        d->state = NULL;
        d->state_size = 0;
        d->state_status = 3;
        return;
    }
    if (d->state_size > g->cfg->max_state_bytes) {
        d->state_status = 1;
        sq__log(SQ_LOG_ERROR,
                "the state of shard %u of subgroup %s (%zu bytes) exceeds "
                "max_state_bytes (%llu): its newcomers cannot start",
                k, g->cfg->subgroups[s].name, d->state_size,
                (unsigned long long)g->cfg->max_state_bytes);
    }
}

static void end_donation(struct sq__donation *d)
{
    free(d->state);
    d->state = NULL;
    d->active = false;
}

/* Sends the next chunk to the current newcomer once it took the previous one. */
static int pump_donation(struct sq__group *g, uint32_t s)
{
    struct sq__donation *d = &g->donation[s];
    int events = 0;
    while (d->active) {
        if (d->cur == d->nnew) {
            end_donation(d);
            return events + 1;
        }
        uint32_t nc = d->newcomers[d->cur];
        uint32_t peer = g->ctl.sst.member_peers[nc];
        if ((g->ctl.sst.suspected >> nc) & 1u || (g->ctl.sst.decision.removed >> nc) & 1u) {
            d->cur++; /* it failed: it leaves with the next view */
            d->pos = 0;
            d->seq = 0;
            d->in_flight = d->last_sent = d->started = d->diverged = false;
            d->sent_records = 0;
            continue;
        }
        if (!d->started) {
            /* Where the newcomer's log ends: in its control row of this view. */
            if (!sq__sst_row_valid(&g->ctl.sst, nc)) {
                return events;
            }
            uint64_t have = sq__sst_col(&g->ctl.sst, nc, g->ctl.sst.L.off_have + 8u * s);
            uint64_t have_ts = sq__sst_col(&g->ctl.sst, nc, g->ctl.sst.L.off_have_ts + 8u * s);
            d->pos = 0;
            if (have > 0) {
                struct sq__plog_entry e;
                uint64_t p = 0;
                bool found = g->log[s] != NULL &&
                             sq__plog_find(g->log[s], have - 1, SQ_PLOG_EXACT, &e, &p) == 0;
                if (!found && g->log[s] != NULL && sq__plog_last(g->log[s]).version >= have - 1 &&
                    sq__plog_written(g->log[s]) < sq__plog_count(g->log[s])) {
                    return events; /* it may be among what the flusher has not written yet */
                }
                if (found && e.timestamp == have_ts && p < d->log_end) {
                    d->pos = p + 1;
                } else {
                    /* Its log goes past the shard's history: records it delivered before the
                     * group restarted without it, which the group never persisted. It keeps
                     * what it shares with my log (every log is a prefix of the history up to
                     * such a suffix): up to my latest record at or before its last one. */
                    d->diverged = true;
                    d->keep_next = 0;
                    d->keep_ts = 0;
                    d->pos = 0;
                    uint64_t q = 0;
                    if (g->log[s] != NULL &&
                        sq__plog_find(g->log[s], have - 1, SQ_PLOG_AT_OR_BEFORE, &e, &q) == 0) {
                        if (e.version == have - 1) {
                            q = q > 0 ? q - 1 : UINT64_MAX; /* same version, other record */
                        }
                        if (q != UINT64_MAX && d->log_end > 0) {
                            q = SQ_MIN(q, d->log_end - 1);
                            if (sq__plog_entry_at(g->log[s], q, &e) == 0) {
                                d->keep_next = e.version + 1;
                                d->keep_ts = e.timestamp;
                                d->pos = q + 1;
                            }
                        }
                    }
                    sq__log(SQ_LOG_WARN,
                            "member %u's log of shard %u of subgroup %s ends at "
                            "version %#llx, past this shard's history: it keeps the records up "
                            "to version %#llx and drops the rest",
                            g->ctl.sst.member_ids[nc], d->shard, g->cfg->subgroups[s].name,
                            (unsigned long long)(have - 1),
                            (unsigned long long)(d->keep_next ? d->keep_next - 1 : 0));
                }
            }
            d->started = true;
        }
        if (d->in_flight) {
            if (sq__sst_col(&g->ctl.sst, nc, g->ctl.sst.L.off_ack + 8u * s) < d->seq) {
                return events; /* not taken yet */
            }
            d->in_flight = false;
            events++;
            if (d->last_sent) {
                sq__log(SQ_LOG_INFO,
                        "handed shard %u of subgroup %s to member %u in view %u: "
                        "%llu log records, %zu bytes of state, %u chunks",
                        d->shard, g->cfg->subgroups[s].name, g->ctl.sst.member_ids[nc], d->view_id,
                        (unsigned long long)d->sent_records, d->state_size, d->seq);
                d->cur++;
                d->pos = 0;
                d->seq = 0;
                d->last_sent = d->started = d->diverged = false;
                d->sent_records = 0;
            }
            continue;
        }
        /* Build the next chunk in this view's buffer: log records while any are left, then
         * the application state. */
        const size_t off = g->mem.state_off[s][d->view_id % 2];
        uint8_t *buf = g->base + off;
        const size_t cap = g->cfg->max_state_bytes;
        struct handover h = {
            .magic = HANDOVER_MAGIC, .view_id = d->view_id, .shard = d->shard, .seq = d->seq};
        if (d->diverged && d->seq == 0) {
            h.flags |= CHUNK_CUT;
            h.keep_next = d->keep_next;
            h.keep_ts = d->keep_ts;
        }
        size_t len = 0;
        if (d->pos < d->log_end) {
            while (d->pos < d->log_end) {
                struct sq__plog_entry e;
                if (sq__plog_entry_at(g->log[s], d->pos, &e) != 0) {
                    break; /* not written to the file yet: the flusher is on it */
                }
                size_t need = sq__plog_record_bytes(e.size);
                if (len + need > cap) {
                    if (len == 0) {
                        return gfail(g, SQ_EMSGSIZE,
                                     "a log record of %u bytes does not fit "
                                     "max_state_bytes (%llu): raise it to hand the log over",
                                     e.size, (unsigned long long)cap);
                    }
                    break;
                }
                int rc = read_payload(g, g->log[s], &e);
                if (rc != 0) {
                    return gfail(g, rc, "cannot read the log to hand it over: %s", sq_strerror(rc));
                }
                len += sq__plog_encode(buf + len, e.version, e.timestamp, e.sender, g->scratch,
                                       e.size);
                d->pos++;
                d->sent_records++;
            }
            if (len == 0) {
                return events; /* wait for the flusher */
            }
        } else {
            h.flags |= CHUNK_LAST;
            h.status = (uint64_t)d->state_status;
            h.last_ts = d->last_ts;
            if (d->state_status == 0 && d->state_size > 0) {
                memcpy(buf, d->state, d->state_size);
                len = d->state_size;
            }
            d->last_sent = true;
        }
        h.size = len;
        h.data_hash = sq__fnv1a(SQ_FNV_INIT, buf, len);
        h.check = handover_check(&h);
        size_t rec = g->mem.handover_off + SQ_HANDOVER_BYTES * s;
        memcpy(g->base + rec, &h, sizeof(h));
        int rc = len > 0 ? g->t->vt->write(g->t, peer, off, len) : 0;
        if (rc == 0) {
            rc = g->t->vt->write_copy(g->t, peer, rec, sizeof(h));
        }
        d->seq++;
        d->in_flight = true;
        d->bytes_sent += len;
        events++;
        if (rc != 0) {
            /* The newcomer would wait for ever: it leaves in the next view (and may rejoin). */
            sq__log(SQ_LOG_WARN, "handing shard %u of subgroup %s to member %u failed: %s",
                    d->shard, g->cfg->subgroups[s].name, g->ctl.sst.member_ids[nc],
                    sq_strerror(rc));
            sq__sst_suspect(&g->ctl.sst, nc);
        }
    }
    return events;
}

/* Every delivery of a shard passes here: persistent subgroups log it first. */
static void group_deliver(void *arg, const sq_message *msg)
{
    struct sq__group *g = arg;
    uint32_t s = msg->subgroup;
    if (g->log[s] != NULL && g->failed != 0) {
        return; /* the log failed: nothing more reaches the application unlogged */
    }
    if (g->log[s] != NULL && !(msg->flags & SQ_MSG_ORDERED_CALL)) {
        int rc = sq__plog_append(g->log[s], msg->version, msg->timestamp, msg->sender_id, msg->data,
                                 (uint32_t)msg->size);
        if (rc != 0) {
            gfail(g, rc, "cannot log version %#llx of shard %u of subgroup %s: %s",
                  (unsigned long long)msg->version, msg->shard, g->cfg->subgroups[s].name,
                  sq_strerror(rc));
            return; /* not delivered: the member stops (poll reports the failure) */
        }
        g->appended = true;
    }
    if (g->deliver != NULL) {
        g->deliver(g->deliver_arg, msg);
    }
}

/* Opens the log of my shard k of persistent subgroup s (once: shards are sticky). A log from
 * an earlier run is kept only when a donor will bring it up to date (this member rejoins a
 * running group); forming a group on it would reuse its versions. */
static int open_log(struct sq__group *g, uint32_t s, uint32_t k, bool have_donor, bool holder)
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
            return gfail(g, rc, "%s", err);
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
        __atomic_store_n(&g->log[s], log, __ATOMIC_RELEASE);
        return 0;
    }
    if (n > 0) {
        struct sq__plog_entry last = sq__plog_last(log);
        sq__plog_close(log);
        __atomic_store_n(&g->log[s], NULL, __ATOMIC_RELEASE);
        return gfail(g, SQ_ESTATE,
                     "%s holds %llu records from an earlier run (last version "
                     "%#llx), but no member can bring it up to date and it is not the longest "
                     "log of its shard: move the directory away to start this member afresh",
                     dir, (unsigned long long)n, (unsigned long long)last.version);
    }
    atomic_store(&g->durable_next[s], 0);
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

/* Sets up view `view_id` over layout `assign` (adequate or not); `holders` says who held each
 * shard's state before it. Moves state as the layout requires. */
static int setup_view(struct sq__group *g, uint32_t view_id, uint32_t n, const uint32_t *ids,
                      const uint32_t *peers, uint32_t my_rank, const struct sq__assign *assign,
                      const struct sq__assign *holders, bool adequate)
{
    const struct sq_config *cfg = g->cfg;
    if (g->clock_us != NULL) {
        g->now_us = g->clock_us();
    }
    struct sq__smc_params cp = {.sst = {.nmembers = n,
                                        .my_rank = my_rank,
                                        .window_size = CTL_WINDOW,
                                        .max_payload = CTL_PAYLOAD,
                                        .view_id = view_id,
                                        .member_ids = ids,
                                        .member_peers = peers,
                                        .region_offset = (view_id % 2) * g->mem.ctl_region,
                                        .npeers = cfg->nmembers,
                                        .peer_ids = g->peer_ids},
                                .now_us = g->now_us,
                                .heartbeat_timeout_us =
                                    (uint64_t)cfg->heartbeat_timeout_ms * 1000u};
    int rc = sq__smc_init(&g->ctl, &cp, g->base + cp.sst.region_offset, g->t, NULL, NULL);
    if (rc != 0) {
        return gfail(g, rc, "cannot set up the control table of view %u", view_id);
    }
    g->ctl_ready = true;
    sq__view_attach(&g->ctl.sst); /* the view change runs over the control table */
    g->ctl.sst.nsubgroups = cfg->nsubgroups;
    g->ctl.sst.on_accept = g->on_accept;
    g->ctl.sst.on_accept_arg = g->on_accept_arg;
    g->assign = *assign;
    g->adequate = adequate;
    g->holders = adequate ? *assign : *holders;
    if (!adequate) {
        return 0; /* no shard runs until members join */
    }
    for (uint32_t s = 0; s < cfg->nsubgroups; s++) {
        for (uint32_t r = 0; r < n; r++) {
            uint8_t k = assign->shard[s][r];
            g->ctl.sst.shard_of[s][r] = k == SQ_SHARD_NONE ? 0xFF : (uint8_t)(g->shard_base[s] + k);
        }
    }
    for (uint32_t s = 0; s < cfg->nsubgroups; s++) {
        const struct sq_subgroup_cfg *sg = &cfg->subgroups[s];
        for (uint32_t k = 0; k < sg->shards; k++) {
            uint32_t ranks[SQ_MAX_MEMBERS], newcomers[SQ_MAX_MEMBERS], nnew = 0;
            uint32_t m = sq__assign_members(assign, n, s, k, ranks);
            uint32_t donor = UINT32_MAX;
            for (uint32_t i = 0; i < m; i++) {
                if (holders->shard[s][ranks[i]] == k) {
                    donor = donor == UINT32_MAX ? ranks[i] : donor;
                } else {
                    newcomers[nnew++] = ranks[i];
                }
            }
            if (nnew > 0 && donor == my_rank) {
                start_donation(g, view_id, s, k, newcomers, nnew);
            }
            if (assign->shard[s][my_rank] != k) {
                continue;
            }
            /* My shard of this subgroup: its table, ranks in view order. */
            uint32_t sids[SQ_MAX_MEMBERS], speers[SQ_MAX_MEMBERS], smine = 0;
            for (uint32_t i = 0; i < m; i++) {
                sids[i] = ids[ranks[i]];
                speers[i] = peers[ranks[i]];
                smine = ranks[i] == my_rank ? i : smine;
            }
            struct sq__smc_params sp = {
                .sst = {.nmembers = m,
                        .my_rank = smine,
                        .window_size = sg->window_size,
                        .max_payload = sg->max_payload,
                        .view_id = view_id,
                        .member_ids = sids,
                        .member_peers = speers,
                        .region_offset = g->mem.sg_off[s] + (view_id % 2) * g->mem.sg_region[s],
                        .npeers = cfg->nmembers,
                        .peer_ids = g->peer_ids},
                .now_us = g->now_us,
                .data_only = true,
                .subgroup = s,
                .shard = k,
                .last_timestamp = g->last_ts[s]};
            bool newcomer = holders->shard[s][my_rank] != k && donor != UINT32_MAX;
            bool holder = holders->shard[s][my_rank] == k;
            if (sg->persistent && (g->log[s] == NULL || !g->log_ok[s]) &&
                (rc = open_log(g, s, k, newcomer, holder)) != 0) {
                return rc;
            }
            if (newcomer && g->log[s] != NULL) {
                /* Tell the donor where my log ends, so it sends only what comes after. */
                uint8_t *row = sq__sst_row(&g->ctl.sst, my_rank);
                struct sq__plog_entry last = sq__plog_last(g->log[s]);
                bool any = sq__plog_count(g->log[s]) > 0;
                sq__store_u64(row + g->ctl.sst.L.off_have + 8u * s, any ? last.version + 1 : 0);
                sq__store_u64(row + g->ctl.sst.L.off_have_ts + 8u * s, any ? last.timestamp : 0);
                g->ctl.sst.header_dirty = true;
            }
            rc = sq__smc_init(&g->shard[s], &sp, g->base + sp.sst.region_offset, g->t,
                              group_deliver, g);
            if (rc != 0) {
                return gfail(g, rc, "cannot set up shard %u of subgroup %s", k, sg->name);
            }
            g->in_shard[s] = true;
            g->ctl.sst.shards[s] = &g->shard[s].sst;
            if (holders->shard[s][my_rank] != k && donor != UINT32_MAX) {
                g->shard[s].hold = true; /* deliver nothing before the donor's state is in */
                g->awaiting[s] = true;
                g->donor_rank[s] = donor;
                g->chunks_in[s] = 0;
                g->records_in[s] = 0;
            } else if (holders->shard[s][my_rank] != k && view_id > 0) {
                sq__log(SQ_LOG_WARN,
                        "shard %u of subgroup %s starts empty in view %u: none of "
                        "its earlier members is left to hand its state over",
                        k, sg->name, view_id);
            }
        }
    }
    return 0;
}

/* The first view of a joiner (or of every member of a restart), without its rank yet. */
static void make_welcome(struct sq__welcome *w, uint32_t view_id, uint32_t n, const uint32_t *ids,
                         const uint32_t *peers, const struct sq__assign *assign,
                         const struct sq__assign *holders, bool adequate)
{
    memset(w, 0, sizeof(*w));
    w->magic = WELCOME_MAGIC;
    w->view_id = view_id;
    w->nmembers = n;
    w->adequate = adequate;
    memcpy(w->ids, ids, n * sizeof(uint32_t));
    memcpy(w->peers, peers, n * sizeof(uint32_t));
    w->assign = *assign;
    w->holders = *holders;
}

/* Writes `w` as the welcome of the member of rank r into that member's memory. */
static int send_welcome(struct sq__group *g, struct sq__welcome *w, uint32_t r)
{
    w->my_rank = r;
    w->check = welcome_check(w);
    memcpy(g->base + g->mem.welcome_off, w, sizeof(*w));
    return g->t->vt->write_copy(g->t, w->peers[r], g->mem.welcome_off, sizeof(*w));
}

/* The first view over members `peers` (n of them, tails by the same index): its id and layout.
 * Members keep the shards of their logs; the longest log of each shard holds its history (logs
 * are prefixes of one another: every delivered update was received by every member of its view,
 * and an update that only a member missing now delivered was never persisted). */
static void plan_first(struct sq__group *g, uint32_t n, const struct sq_log_tail *tails,
                       const uint16_t *whole, uint32_t *view_id, struct sq__assign *assign,
                       struct sq__assign *holders, bool *adequate)
{
    struct sq__assign kept;
    sq__assign_clear(&kept);
    sq__assign_clear(holders);
    *view_id = 0;
    for (uint32_t r = 0; tails != NULL && r < n; r++) {
        *view_id = SQ_MAX(*view_id, tails[r].view_next);
    }
    if (*view_id > 0) {
        for (uint32_t s = 0; s < g->cfg->nsubgroups; s++) {
            if (!g->cfg->subgroups[s].persistent) {
                continue;
            }
            /* With `whole` (a restart from a majority): only the members that held a shard's
             * whole history in the last view count for it, when there are any; a longer log
             * elsewhere ends in updates that were never persisted (delivered by a member that
             * missed an earlier restart), and its member cuts them when it receives the shard. */
            uint64_t longest[SQ_MAX_SHARDS] = {0};
            bool by_whole[SQ_MAX_SHARDS] = {false};
            for (uint32_t r = 0; r < n; r++) {
                uint8_t k = tails[r].shard[s];
                uint32_t flat = g->shard_base[s] + k;
                if (k < g->cfg->subgroups[s].shards && whole != NULL && flat < 16 &&
                    (whole[r] >> flat) & 1u) {
                    by_whole[k] = true;
                }
            }
            for (uint32_t r = 0; r < n; r++) {
                uint8_t k = tails[r].shard[s];
                if (k < g->cfg->subgroups[s].shards) {
                    kept.shard[s][r] = k;
                    if (!by_whole[k] || (whole[r] >> (g->shard_base[s] + k)) & 1u) {
                        longest[k] = SQ_MAX(longest[k], tails[r].last[s]);
                    }
                }
            }
            for (uint32_t r = 0; r < n; r++) {
                uint8_t k = tails[r].shard[s];
                if (k < g->cfg->subgroups[s].shards && (longest[k] > 0 || by_whole[k]) &&
                    tails[r].last[s] == longest[k] &&
                    (!by_whole[k] || (whole[r] >> (g->shard_base[s] + k)) & 1u)) {
                    holders->shard[s][r] = k;
                }
            }
        }
    }
    *adequate =
        sq__assign_shards(g->cfg, n, &kept, assign, g->inadequate_why, sizeof(g->inadequate_why));
}

/* Before the first view of a restart: the shard clocks go on from the logs, and the members
 * holding a shard's history replay it to the application, every record in order, flagged (a
 * donor's state then includes it). */
static int replay_logs(struct sq__group *g, uint32_t my_rank, const struct sq__assign *assign)
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
            int rc = read_payload(g, log, &e);
            if (rc != 0) {
                return gfail(g, rc, "cannot replay the log of subgroup %s: %s",
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

int sq__group_start_first(struct sq__group *g, const struct sq_log_tail *tails)
{
    uint32_t n = g->cfg->nmembers, ids[SQ_MAX_MEMBERS], peers[SQ_MAX_MEMBERS];
    for (uint32_t i = 0; i < n; i++) {
        ids[i] = g->cfg->members[i].id;
        peers[i] = i;
    }
    struct sq__assign holders, assign;
    uint32_t view_id;
    bool adequate;
    plan_first(g, n, tails, NULL, &view_id, &assign, &holders, &adequate);
    if (view_id > 0) {
        sq__log(SQ_LOG_INFO, "restarting from the logs: the first view is %u", view_id);
        int rc = replay_logs(g, g->self_peer, &assign);
        if (rc != 0) {
            return rc;
        }
    }
    return setup_view(g, view_id, n, ids, peers, g->self_peer, &assign, &holders, adequate);
}

int sq__group_start_restart(struct sq__group *g, uint32_t present, const struct sq_log_tail *tails)
{
    uint32_t n = 0, ids[SQ_MAX_MEMBERS], peers[SQ_MAX_MEMBERS], my_rank = UINT32_MAX;
    struct sq_log_tail rt[SQ_MAX_MEMBERS];
    uint32_t view_id = 0, accepted = 0;
    for (uint32_t p = 0; p < g->cfg->nmembers; p++) {
        if ((present >> p) & 1u) {
            my_rank = p == g->self_peer ? n : my_rank;
            ids[n] = g->cfg->members[p].id;
            peers[n] = p;
            rt[n] = tails[p];
            view_id = SQ_MAX(view_id, tails[p].vf_view);
            accepted = SQ_MAX(accepted, tails[p].vf_acc_view);
            n++;
        }
    }
    if (my_rank == UINT32_MAX) {
        return gfail(g, SQ_EINVAL, "a restart without this member");
    }
    uint16_t whole[SQ_MAX_MEMBERS];
    for (uint32_t r = 0; r < n; r++) {
        whole[r] = rt[r].vf_view == view_id && view_id > 0 ? rt[r].vf_mine : 0;
    }
    struct sq__assign holders, assign;
    uint32_t logged;
    bool adequate;
    plan_first(g, n, rt, whole, &logged, &assign, &holders, &adequate);
    /* After every view a member present installed, accepted or logged in, and one more. */
    view_id = SQ_MAX(SQ_MAX(view_id, accepted), logged) + 1;
    struct sq__welcome w;
    make_welcome(&w, view_id, n, ids, peers, &assign, &holders, adequate);
    w.restart = 1;
    for (uint32_t r = 0; r < n; r++) {
        if (r == my_rank) {
            continue;
        }
        int rc = send_welcome(g, &w, r);
        if (rc != 0) {
            return gfail(g, rc, "cannot send the first view to member %u: %s", ids[r],
                         sq_strerror(rc));
        }
    }
    memset(g->base + g->mem.welcome_off, 0, sizeof(w));
    int rc = g->t->vt->flush(g->t);
    if (rc != 0) {
        return gfail(g, rc, "cannot send the first view: %s", sq_strerror(rc));
    }
    sq__log(SQ_LOG_INFO,
            "restarting the group from its disks with %u of %u members: the first "
            "view is %u",
            n, g->cfg->nmembers, view_id);
    rc = replay_logs(g, my_rank, &assign);
    if (rc != 0) {
        return rc;
    }
    return setup_view(g, view_id, n, ids, peers, my_rank, &assign, &holders, adequate);
}

/* The welcome in this member's memory, if a whole one has landed. */
static bool read_welcome(const struct sq__group *g, struct sq__welcome *w)
{
    memcpy(w, g->base + g->mem.welcome_off, sizeof(*w));
    return w->magic == WELCOME_MAGIC && w->check == welcome_check(w);
}

bool sq__group_peek_welcome(struct sq__group *g, uint32_t *peers)
{
    struct sq__welcome w;
    if (!read_welcome(g, &w) || !w.restart || w.nmembers == 0 || w.nmembers > g->cfg->nmembers) {
        return false;
    }
    *peers = 0;
    for (uint32_t r = 0; r < w.nmembers; r++) {
        *peers |= w.peers[r] < 32 ? 1u << w.peers[r] : 0;
    }
    return true;
}

int sq__group_try_welcome(struct sq__group *g)
{
    struct sq__welcome w;
    if (!read_welcome(g, &w)) {
        return 0;
    }
    if (w.nmembers == 0 || w.nmembers > g->cfg->nmembers || w.my_rank >= w.nmembers ||
        w.peers[w.my_rank] != g->self_peer) {
        return gfail(g, SQ_EIO,
                     "the welcome into view %llu makes no sense (%llu members, rank "
                     "%llu)",
                     (unsigned long long)w.view_id, (unsigned long long)w.nmembers,
                     (unsigned long long)w.my_rank);
    }
    for (uint32_t r = 0; r < w.nmembers; r++) {
        if (w.peers[r] >= g->cfg->nmembers) {
            return gfail(g, SQ_EIO, "the welcome names an unknown member");
        }
    }
    if (!w.adequate) {
        snprintf(g->inadequate_why, sizeof(g->inadequate_why), "a shard is below min_members");
    }
    g->restart_view = w.restart != 0;
    if (w.restart) {
        /* The first view of a restart from the disks: holders replay their logs first. */
        int rc = replay_logs(g, (uint32_t)w.my_rank, &w.assign);
        if (rc != 0) {
            return rc;
        }
    }
    int rc = setup_view(g, (uint32_t)w.view_id, (uint32_t)w.nmembers, w.ids, w.peers,
                        (uint32_t)w.my_rank, &w.assign, &w.holders, w.adequate != 0);
    return rc == 0 ? 1 : rc;
}

/* A newcomer whose log goes past the shard's history (see pump_donation): cuts it back to the
 * record the donor names, which must be there with the same timestamp. */
static int cut_log(struct sq__group *g, uint32_t s, const struct handover *h)
{
    struct sq__plog *log = g->log[s];
    char dir[600];
    sq__group_log_dir(g->cfg, g->peer_ids[g->self_peer], s, (uint32_t)h->shard, dir, sizeof(dir));
    if (log == NULL) {
        return gfail(g, SQ_EIO, "told to cut a log of shard %llu of subgroup %s that is not open",
                     (unsigned long long)h->shard, g->cfg->subgroups[s].name);
    }
    uint64_t keep = 0;
    if (h->keep_next > 0) {
        struct sq__plog_entry e;
        if (sq__plog_find(log, h->keep_next - 1, SQ_PLOG_EXACT, &e, &keep) != 0 ||
            e.timestamp != h->keep_ts) {
            return gfail(g, SQ_ECORRUPT,
                         "%s does not match the group's history even before "
                         "version %#llx (this log is not of this group?): move the directory "
                         "away and start this member again",
                         dir, (unsigned long long)(h->keep_next - 1));
        }
        keep++;
    }
    uint64_t n = sq__plog_count(log);
    if (keep >= n) {
        return 0;
    }
    uint64_t first = sq__plog_version_at(log, keep), last = sq__plog_last(log).version;
    /* What the flusher reported durable counted the records cut: start over from the cut, with
     * no flush in between. */
    pthread_mutex_lock(&g->durable_mu);
    int rc = sq__plog_truncate(log, keep);
    atomic_store(&g->durable_next[s], h->keep_next);
    pthread_mutex_unlock(&g->durable_mu);
    if (rc != 0) {
        return gfail(g, rc, "cannot cut %s back to the group's history: %s", dir, sq_strerror(rc));
    }
    sq__log(SQ_LOG_WARN,
            "%s: cut %llu records (versions %#llx to %#llx) that this member "
            "delivered but the group, restarted without it, never persisted; it keeps %llu",
            dir, (unsigned long long)(n - keep), (unsigned long long)first,
            (unsigned long long)last, (unsigned long long)keep);
    return 0;
}

/* A newcomer: takes the donor's chunks as they come (log records into its log, then the
 * application state), acknowledging each in its control row. */
static int check_handovers(struct sq__group *g)
{
    int events = 0;
    for (uint32_t s = 0; s < g->cfg->nsubgroups; s++) {
        if (!g->awaiting[s]) {
            continue;
        }
        struct handover h;
        memcpy(&h, g->base + g->mem.handover_off + SQ_HANDOVER_BYTES * s, sizeof(h));
        if (h.magic != HANDOVER_MAGIC || h.check != handover_check(&h) ||
            h.view_id != g->ctl.sst.view_id || h.shard != g->shard[s].shard ||
            h.seq != g->chunks_in[s]) {
            uint32_t d = g->donor_rank[s];
            if ((g->ctl.sst.suspected >> d) & 1u || (g->ctl.sst.decision.removed >> d) & 1u ||
                (g->ctl.fence_cut >> d) & 1u) {
                return gfail(g, SQ_ESTATE,
                             "member %u, which was to hand over shard %u of "
                             "subgroup %s, failed first: this member has no state to go on with",
                             g->ctl.sst.member_ids[d], g->shard[s].shard,
                             g->cfg->subgroups[s].name);
            }
            continue;
        }
        const uint8_t *buf = g->base + g->mem.state_off[s][h.view_id % 2];
        if (h.size > g->cfg->max_state_bytes ||
            sq__fnv1a(SQ_FNV_INIT, buf, (size_t)h.size) != h.data_hash) {
            return gfail(g, SQ_EIO, "chunk %llu of shard %llu of subgroup %s arrived damaged",
                         (unsigned long long)h.seq, (unsigned long long)h.shard,
                         g->cfg->subgroups[s].name);
        }
        if (h.flags & CHUNK_CUT) {
            int rc = cut_log(g, s, &h);
            if (rc != 0) {
                return rc;
            }
        }
        if (!(h.flags & CHUNK_LAST)) {
            /* Log records, in order, each with its own checksum. */
            size_t at = 0;
            while (at < h.size) {
                struct sq__plog_entry e;
                const uint8_t *payload;
                size_t n = sq__plog_decode(buf + at, (size_t)h.size - at, &e, &payload);
                if (n == 0 || g->log[s] == NULL) {
                    return gfail(g, SQ_EIO,
                                 "chunk %llu of shard %llu of subgroup %s holds a bad "
                                 "log record at byte %zu",
                                 (unsigned long long)h.seq, (unsigned long long)h.shard,
                                 g->cfg->subgroups[s].name, at);
                }
                int rc =
                    sq__plog_append(g->log[s], e.version, e.timestamp, e.sender, payload, e.size);
                if (rc != 0) {
                    return gfail(g, rc, "cannot log a handed-over record (version %#llx): %s",
                                 (unsigned long long)e.version, sq_strerror(rc));
                }
                g->records_in[s]++;
                g->appended = true;
                at += n;
            }
        } else {
            if (h.status == 3) {
                return gfail(g, SQ_EIO,
                             "the member handing over shard %llu of subgroup %s "
                             "could not save its state (its state callback failed)",
                             (unsigned long long)h.shard, g->cfg->subgroups[s].name);
            }
            if (h.status != 0) {
                return gfail(g, SQ_EIO,
                             "the state of shard %llu of subgroup %s could not be "
                             "handed over: it is larger than max_state_bytes (%llu)",
                             (unsigned long long)h.shard, g->cfg->subgroups[s].name,
                             (unsigned long long)g->cfg->max_state_bytes);
            }
            if (g->load != NULL) {
                g->load(g->state_arg, s, (uint32_t)h.shard, buf, (size_t)h.size);
            }
            sq__log(SQ_LOG_INFO,
                    "received shard %llu of subgroup %s: %llu log records and %llu "
                    "bytes of state",
                    (unsigned long long)h.shard, g->cfg->subgroups[s].name,
                    (unsigned long long)g->records_in[s], (unsigned long long)h.size);
            g->awaiting[s] = false;
            g->shard[s].hold = false;
            g->shard[s].last_timestamp = SQ_MAX(g->shard[s].last_timestamp, h.last_ts);
        }
        g->chunks_in[s]++;
        /* The donor's heartbeat rides behind its chunks on the same link: a chunk that arrives
         * is as good a sign of life. (A dead donor sends none, and is suspected as usual.) */
        g->ctl.seen_hb_at_us[g->donor_rank[s]] = g->now_us;
        sq__store_u64(sq__sst_row(&g->ctl.sst, g->ctl.sst.my_rank) + g->ctl.sst.L.off_ack + 8u * s,
                      g->chunks_in[s]);
        g->ctl.sst.header_dirty = true;
        events++;
        s--; /* the next chunk may be in already */
    }
    return events;
}

/* Puts what the flusher made durable in my shard row, and reports the shard's frontier (the
 * least over its members) as it advances. */
static int publish_persistence(struct sq__group *g, uint32_t s)
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
    }
    uint64_t frontier = UINT64_MAX;
    for (uint32_t r = 0; r < sh->sst.L.nmembers; r++) {
        frontier = SQ_MIN(frontier, sq__sst_col(&sh->sst, r, sh->sst.L.off_persisted));
    }
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
            atomic_store(&g->durable_next[sg], next);
        }
    }
    pthread_mutex_unlock(&g->durable_mu);
    return rc;
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

int sq__group_poll(struct sq__group *g, uint64_t now_us)
{
    if (g->failed != 0) {
        return g->failed;
    }
    g->now_us = now_us;
    int events = check_handovers(g); /* first: it vouches for a donor that is busy sending */
    if (events < 0) {
        return events;
    }
    for (uint32_t s = 0; s < g->cfg->nsubgroups; s++) {
        int rc = g->donation[s].active ? pump_donation(g, s) : 0;
        if (rc < 0) {
            return rc;
        }
        events += rc;
    }
    sq__smc_tick(&g->ctl, now_us);
    int rc = sq__smc_poll(&g->ctl);
    if (rc < 0) {
        return gfail(g, rc, "%s", g->ctl.sst.errmsg);
    }
    events += rc;
    for (uint32_t s = 0; s < g->cfg->nsubgroups; s++) {
        if (!g->in_shard[s] || g->gate) {
            continue;
        }
        rc = sq__smc_poll(&g->shard[s]);
        if (rc < 0) {
            return gfail(g, rc, "shard %u of subgroup %s: %s", g->shard[s].shard,
                         g->cfg->subgroups[s].name, g->shard[s].sst.errmsg);
        }
        events += rc;
        if (g->log[s] != NULL) {
            events += publish_persistence(g, s);
        }
        /* A shard member whose link broke is suspected here too: the whole view changes. */
        for (uint32_t r = 0; r < g->shard[s].sst.L.nmembers; r++) {
            if ((g->shard[s].sst.suspected >> r) & 1u) {
                for (uint32_t c = 0; c < g->ctl.sst.L.nmembers; c++) {
                    if (g->ctl.sst.member_peers[c] == g->shard[s].sst.member_peers[r] &&
                        c != g->ctl.sst.my_rank) {
                        sq__sst_suspect(&g->ctl.sst, c);
                    }
                }
            }
        }
    }
    return g->failed != 0 ? g->failed : events;
}

enum sq__sst_phase sq__group_phase(const struct sq__group *g)
{
    if (g->ctl.sst.phase != SQ_SST_READY) {
        return g->ctl.sst.phase;
    }
    for (uint32_t s = 0; s < g->cfg->nsubgroups; s++) {
        /* A newcomer still waiting for its state cannot be a holder in the next view. */
        if ((g->in_shard[s] && (g->shard[s].sst.phase != SQ_SST_READY || g->awaiting[s])) ||
            g->donation[s].active) {
            return SQ_SST_CHANGING;
        }
    }
    return SQ_SST_READY;
}

int sq__group_install(struct sq__group *g)
{
    SQ_ASSERT(sq__group_phase(g) == SQ_SST_READY);
    uint32_t ids[SQ_MAX_MEMBERS], peers[SQ_MAX_MEMBERS], my_rank = 0;
    uint32_t n = sq__smc_next_view(&g->ctl, ids, peers, &my_rank);
    uint32_t old_rank[SQ_MAX_MEMBERS];
    for (uint32_t i = 0; i < n; i++) {
        old_rank[i] = UINT32_MAX;
        for (uint32_t r = 0; r < g->ctl.sst.L.nmembers; r++) {
            if (g->ctl.sst.member_peers[r] == peers[i] &&
                !((g->ctl.sst.decision.removed >> r) & 1u)) {
                old_rank[i] = r;
            }
        }
    }
    struct sq__assign kept, holders, assign;
    sq__assign_move(&g->assign, n, old_rank, &kept);
    sq__assign_move(&g->holders, n, old_rank, &holders);
    bool adequate =
        sq__assign_shards(g->cfg, n, &kept, &assign, g->inadequate_why, sizeof(g->inadequate_why));
    uint32_t view_id = g->ctl.sst.view_id + 1;
    uint64_t added = g->ctl.sst.decision.added;
    g->removed_mask = g->ctl.sst.decision.removed;
    g->dropped = 0;
    for (uint32_t s = 0; s < g->cfg->nsubgroups; s++) {
        if (g->in_shard[s]) {
            g->dropped += g->shard[s].dropped;
            g->last_ts[s] = g->shard[s].last_timestamp;
        }
    }
    if (added != 0 && my_rank == 0) {
        struct sq__welcome w;
        make_welcome(&w, view_id, n, ids, peers, &assign, &holders, adequate);
        for (uint32_t r = 0; r < n; r++) {
            if (!((added >> peers[r]) & 1u)) {
                continue;
            }
            int rc = send_welcome(g, &w, r);
            sq__log(rc == 0 ? SQ_LOG_INFO : SQ_LOG_WARN, "welcomed member %u into view %u%s",
                    ids[r], view_id, rc == 0 ? "" : ": its link failed");
        }
    }
    sq__group_fini(g);
    return setup_view(g, view_id, n, ids, peers, my_rank, &assign, &holders, adequate);
}

struct sq__smc *sq__group_shard(struct sq__group *g, uint32_t sg, int *why)
{
    if (sg >= g->cfg->nsubgroups) {
        *why = SQ_EINVAL;
        return NULL;
    }
    if (!g->adequate) {
        *why = SQ_EAGAIN;
        return NULL;
    }
    if (!g->in_shard[sg]) {
        *why = SQ_ENOTSUP;
        return NULL;
    }
    return &g->shard[sg];
}
