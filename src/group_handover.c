/* group_handover.c: state transfer to a shard's newcomers: the donor sends the shard's log and
 * the application state chunk by chunk, the newcomer takes them in and acknowledges each. */
#include <assert.h>
#include <string.h>

#include "common.h"
#include "group.h"
#include "group_internal.h"
#include "hash.h"
#include "log.h"

#define HANDOVER_MAGIC 0x524556444e414853ull /* "SHANDVER" */

/* What a donor writes after each chunk of a shard's state: the view, the chunk number, the
 * size, what it holds, a hash of its bytes, and a check of the whole header (written last). */
struct handover {
    uint64_t magic;
    uint64_t view_id;
    uint64_t shard;
    uint64_t seq;
    uint64_t size;
    uint64_t flags;     /* CHUNK_STATE / CHUNK_LAST: the application state (else: log records) */
    uint64_t status;    /* with CHUNK_LAST: 0, or 3: the donor's state callback failed */
    uint64_t last_ts;   /* with CHUNK_LAST: the shard's last timestamp */
    uint64_t keep_next; /* with CHUNK_CUT: 1 + the last version the newcomer keeps (0: none)... */
    uint64_t keep_ts;   /* ...and that record's timestamp, which must match */
    uint64_t data_hash;
    uint64_t check;
};
#define CHUNK_LAST 1u  /* the application state's last piece (maybe all of it, maybe none) */
#define CHUNK_CUT 2u   /* first chunk only: the newcomer's log goes past the shard's history */
#define CHUNK_STATE 4u /* a piece of the application state, more to come */
static_assert(sizeof(struct handover) <= SQ_HANDOVER_BYTES, "handover fits its record");

static uint64_t handover_check(const struct handover *h)
{
    return sq__fnv1a(SQ_FNV_INIT, h, offsetof(struct handover, check)) | 1u;
}

/* Becomes the donor of shard (s, k) for its newcomers: takes the application state as of the
 * old view's last delivery; sq__group_pump_donation() then sends the log and the state chunk by
 * chunk. */
void sq__group_start_donation(struct sq__group *g, uint32_t view_id, uint32_t s, uint32_t k,
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
}

void sq__group_end_donation(struct sq__donation *d)
{
    free(d->state);
    d->state = NULL;
    d->active = false;
}

/* Sends the next chunk to the current newcomer once it took the previous one. */
int sq__group_pump_donation(struct sq__group *g, uint32_t s)
{
    struct sq__donation *d = &g->donation[s];
    int events = 0;
    const uint64_t failed = g->t->vt->failed_peers(g->t); /* links closed, as of this poll */
    while (d->active) {
        if (d->cur == d->nnew) {
            sq__group_end_donation(d);
            return events + 1;
        }
        uint32_t nc = d->newcomers[d->cur];
        uint32_t peer = g->ctl.sst.member_peers[nc];
        /* A newcomer whose link closed is gone too, even once the next view is decided (which no
         * longer takes suspicions): it cannot take the rest, and waiting for it would keep this
         * member from ever installing that view (chaos seed 110: the donor of a restart stayed in
         * its first view for good, and the group with it). The next view counts it as having
         * its state, as the others do; it is not there to serve, and leaves in the one after. */
        if ((g->ctl.sst.suspected >> nc) & 1u || (g->ctl.sst.decision.removed >> nc) & 1u ||
            (failed >> peer) & 1u) {
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
                d->state_pos = 0;
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
                        return sq__group_fail(
                            g, SQ_EMSGSIZE,
                            "a log record of %u bytes does not fit "
                            "max_state_bytes (%llu): raise it to hand the log over",
                            e.size, (unsigned long long)cap);
                    }
                    break;
                }
                int rc = sq__group_read_payload(g, g->log[s], &e);
                if (rc != 0) {
                    return sq__group_fail(g, rc, "cannot read the log to hand it over: %s",
                                          sq_strerror(rc));
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
            /* The application state, in pieces of up to max_state_bytes. */
            size_t left = d->state_status == 0 ? d->state_size - d->state_pos : 0;
            len = left < cap ? left : cap;
            if (len > 0) {
                memcpy(buf, (const uint8_t *)d->state + d->state_pos, len);
                d->state_pos += len;
            }
            if (len == left) {
                h.flags |= CHUNK_LAST;
                h.status = (uint64_t)d->state_status;
                h.last_ts = d->last_ts;
                d->last_sent = true;
            } else {
                h.flags |= CHUNK_STATE;
            }
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
            sq__sst_suspect_why(&g->ctl.sst, nc, SQ_SUSPECT_LINK, "handing it a shard failed");
        }
    }
    return events;
}

/* A newcomer whose log goes past the shard's history (see sq__group_pump_donation): cuts it back to
 * the record the donor names, which must be there with the same timestamp. */
static int cut_log(struct sq__group *g, uint32_t s, const struct handover *h)
{
    struct sq__plog *log = g->log[s];
    char dir[600];
    sq__group_log_dir(g->cfg, g->peer_ids[g->self_peer], s, (uint32_t)h->shard, dir, sizeof(dir));
    if (log == NULL) {
        return sq__group_fail(g, SQ_EIO,
                              "told to cut a log of shard %llu of subgroup %s that is not open",
                              (unsigned long long)h->shard, g->cfg->subgroups[s].name);
    }
    uint64_t keep = 0;
    if (h->keep_next > 0) {
        struct sq__plog_entry e;
        if (sq__plog_find(log, h->keep_next - 1, SQ_PLOG_EXACT, &e, &keep) != 0 ||
            e.timestamp != h->keep_ts) {
            return sq__group_fail(
                g, SQ_ECORRUPT,
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
    atomic_store(&g->delivered_next[s], h->keep_next);
    pthread_mutex_unlock(&g->durable_mu);
    if (rc != 0) {
        return sq__group_fail(g, rc, "cannot cut %s back to the group's history: %s", dir,
                              sq_strerror(rc));
    }
    sq__log(SQ_LOG_WARN,
            "%s: cut %llu records (versions %#llx to %#llx) that this member "
            "delivered but the group, restarted without it, never persisted; it keeps %llu",
            dir, (unsigned long long)(n - keep), (unsigned long long)first,
            (unsigned long long)last, (unsigned long long)keep);
    return 0;
}

void sq__group_drop_state_in(struct sq__group *g, uint32_t s)
{
    free(g->state_in[s]);
    g->state_in[s] = NULL;
    g->state_in_len[s] = 0;
}

/* A newcomer: the application state's last piece is in: loads the gathered state and lets the
 * shard deliver. */
static int take_state(struct sq__group *g, uint32_t s, const struct handover *h)
{
    if (h->status == 3) {
        return sq__group_fail(g, SQ_EIO,
                              "the member handing over shard %llu of subgroup %s "
                              "could not save its state (its state callback failed)",
                              (unsigned long long)h->shard, g->cfg->subgroups[s].name);
    }
    if (h->status != 0) {
        return sq__group_fail(g, SQ_EIO,
                              "the state of shard %llu of subgroup %s could not be "
                              "handed over (status %llu)",
                              (unsigned long long)h->shard, g->cfg->subgroups[s].name,
                              (unsigned long long)h->status);
    }
    if (g->load != NULL) {
        g->load(g->state_arg, s, (uint32_t)h->shard, g->state_in[s], g->state_in_len[s]);
    }
    sq__log(SQ_LOG_INFO,
            "received shard %llu of subgroup %s: %llu log records and %zu "
            "bytes of state in %u chunks",
            (unsigned long long)h->shard, g->cfg->subgroups[s].name,
            (unsigned long long)g->records_in[s], g->state_in_len[s], g->chunks_in[s] + 1);
    sq__group_drop_state_in(g, s);
    g->awaiting[s] = false;
    g->last_ts[s] = h->last_ts;
    sq__smc_release(&g->shard[s], h->last_ts);
    return 0;
}

/* A newcomer: takes the donor's chunks as they come (log records into its log, then the
 * application state), acknowledging each in its control row. */
int sq__group_check_handovers(struct sq__group *g)
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
                (g->ctl.fence_cut >> d) & 1u ||
                (g->t->vt->failed_peers(g->t) >> g->ctl.sst.member_peers[d]) & 1u) {
                return sq__group_fail(
                    g, SQ_ESTATE,
                    "member %u, which was to hand over shard %u of "
                    "subgroup %s, failed first: this member has no state to go on with",
                    g->ctl.sst.member_ids[d], g->shard[s].shard, g->cfg->subgroups[s].name);
            }
            continue;
        }
        const uint8_t *buf = g->base + g->mem.state_off[s][h.view_id % 2];
        if (h.size > g->cfg->max_state_bytes ||
            sq__fnv1a(SQ_FNV_INIT, buf, (size_t)h.size) != h.data_hash) {
            return sq__group_fail(
                g, SQ_EIO, "chunk %llu of shard %llu of subgroup %s arrived damaged",
                (unsigned long long)h.seq, (unsigned long long)h.shard, g->cfg->subgroups[s].name);
        }
        if (h.flags & CHUNK_CUT) {
            int rc = cut_log(g, s, &h);
            if (rc != 0) {
                return rc;
            }
        }
        if (!(h.flags & (CHUNK_STATE | CHUNK_LAST))) {
            /* Log records, in order, each with its own checksum. */
            size_t at = 0;
            while (at < h.size) {
                struct sq__plog_entry e;
                const uint8_t *payload;
                size_t n = sq__plog_decode(buf + at, (size_t)h.size - at, &e, &payload);
                if (n == 0 || g->log[s] == NULL) {
                    return sq__group_fail(g, SQ_EIO,
                                          "chunk %llu of shard %llu of subgroup %s holds a bad "
                                          "log record at byte %zu",
                                          (unsigned long long)h.seq, (unsigned long long)h.shard,
                                          g->cfg->subgroups[s].name, at);
                }
                int rc =
                    sq__plog_append(g->log[s], e.version, e.timestamp, e.sender, payload, e.size);
                if (rc != 0) {
                    return sq__group_fail(g, rc,
                                          "cannot log a handed-over record (version %#llx): %s",
                                          (unsigned long long)e.version, sq_strerror(rc));
                }
                g->records_in[s]++;
                g->appended = true;
                /* the shard's history, delivered before this member came in */
                atomic_store(&g->delivered_next[s], e.version + 1);
                at += n;
            }
        } else {
            /* A piece of the application state: gathered until the last one. */
            if (h.size > 0) {
                uint8_t *p = realloc(g->state_in[s], g->state_in_len[s] + (size_t)h.size);
                if (p == NULL) {
                    return sq__group_fail(g, SQ_ENOMEM,
                                          "no memory for the state of shard %llu of subgroup %s "
                                          "(%zu bytes so far)",
                                          (unsigned long long)h.shard, g->cfg->subgroups[s].name,
                                          g->state_in_len[s] + (size_t)h.size);
                }
                memcpy(p + g->state_in_len[s], buf, (size_t)h.size);
                g->state_in[s] = p;
                g->state_in_len[s] += (size_t)h.size;
            }
            if (h.flags & CHUNK_LAST) {
                int rc = take_state(g, s, &h);
                if (rc != 0) {
                    return rc;
                }
            }
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
