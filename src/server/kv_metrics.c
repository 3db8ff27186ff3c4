/* kv_metrics.c: what the service counts (requests by op and result, latency histograms of puts,
 * removes and gets, watch events, connections) and the metrics answer, in Prometheus' text
 * exposition format: every front end (the HTTP /metrics route, `squall status --metrics`) asks
 * for it with STATUS + SQ_KV_F_METRICS. Names follow <project>_<subsystem>_<name>_<unit>. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "common.h"
#include "config.h"
#include "kv/buf.h"
#include "kv/store.h"
#include "kv/wire.h"
#include "persist/disk.h"
#include "server/kv_internal.h"

/* Upper bounds of the latency buckets, in microseconds. */
static const uint64_t lat_bounds_us[LAT_BUCKETS] = {
    50,    100,    250,    500,    1000,    2500,    5000,    10000,   25000,
    50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000};

static const char *const op_names[SQ_KV_OP_MAX + 1] = {
    [SQ_KV_OP_HELLO] = "hello",
    [SQ_KV_OP_PUT] = "put",
    [SQ_KV_OP_GET] = "get",
    [SQ_KV_OP_REMOVE] = "remove",
    [SQ_KV_OP_LIST] = "list",
    [SQ_KV_OP_HISTORY] = "history",
    [SQ_KV_OP_WATCH] = "watch",
    [SQ_KV_OP_UNWATCH] = "unwatch",
    [SQ_KV_OP_POOL_CREATE] = "pool_create",
    [SQ_KV_OP_POOL_LIST] = "pool_list",
    [SQ_KV_OP_STATUS] = "status",
};

static const char *const res_names[RES_N] = {"ok",      "conflict",    "not_found",
                                             "invalid", "unavailable", "error"};

static int result_of(int status)
{
    if (sq_err_transient(status)) {
        return RES_UNAVAILABLE; /* what HTTP answers 503: try again, maybe elsewhere */
    }
    switch (status) {
    case 0:
        return RES_OK;
    case SQ_ECONFLICT:
    case SQ_EEXIST:
        return RES_CONFLICT;
    case SQ_ENOTFOUND:
    case SQ_ENOPOOL:
        return RES_NOT_FOUND;
    case SQ_EINVAL:
    case SQ_EMSGSIZE:
    case SQ_ENOTSUP:
    case SQ_EPROTO:
        return RES_INVALID;
    default:
        return RES_OTHER;
    }
}

static int lat_index(uint8_t op)
{
    return op == SQ_KV_OP_PUT      ? LAT_PUT
           : op == SQ_KV_OP_REMOVE ? LAT_REMOVE
           : op == SQ_KV_OP_GET    ? LAT_GET
                                   : -1;
}

void sq__kvs_stat_request(struct sq_kv_server *s, struct conn *c, const struct sq_kv_frame *f)
{
    (void)s;
    if (c->peer || lat_index(f->op) < 0) {
        return;
    }
    if (c->pend == NULL) {
        c->pend = calloc(1, sizeof(*c->pend));
        if (c->pend == NULL) {
            return; /* not measured */
        }
    }
    uint32_t i = (uint32_t)(f->req_id % PENDING_SLOTS);
    c->pend->req_id[i] = f->req_id;
    c->pend->at_us[i] = sq__mono_us();
}

void sq__kvs_stat_answer(struct sq_kv_server *s, struct conn *c, const struct sq_kv_frame *f)
{
    if (c->peer) {
        return; /* the member that relayed counts it for its client */
    }
    if (f->op == SQ_KV_OP_EVENT) {
        s->stats.events++;
        return;
    }
    if (f->op > SQ_KV_OP_MAX) {
        return;
    }
    s->stats.ops[f->op][result_of(f->status)]++;
    int l = lat_index(f->op);
    if (l < 0 || c->pend == NULL) {
        return;
    }
    uint32_t i = (uint32_t)(f->req_id % PENDING_SLOTS);
    if (c->pend->req_id[i] != f->req_id || c->pend->at_us[i] == 0) {
        return;
    }
    uint64_t us = sq__mono_us() - c->pend->at_us[i];
    c->pend->at_us[i] = 0;
    int b = 0;
    while (b < LAT_BUCKETS && us > lat_bounds_us[b]) {
        b++;
    }
    s->stats.lat[l][b]++;
    s->stats.lat_sum_us[l] += us;
    s->stats.lat_count[l]++;
}

void sq__kvs_metrics(struct sq_kv_server *s, struct conn *c, const struct sq_kv_frame *f)
{
    struct sq__buf b = {0};
#define OUT(...) (void)sq__buf_printf(&b, __VA_ARGS__)
#define HELP(name, type, text) OUT("# HELP " name " " text "\n# TYPE " name " " type "\n")
    sq_member_health h = {0};
    uint64_t large = 0;
    bool out = sq__kvs_out_of_group(s);
    if (s->m != NULL && !out) {
        (void)sq_member_get_health(s->m, &h); /* member calls: not under mu */
        large = sq_member_large_bytes_sent(s->m);
    }
    uint64_t disk_bytes = 0, disk_syncs = 0;
    sq__disk_posix_stats(&disk_bytes, &disk_syncs);

    HELP("squall_member_up", "gauge", "Whether the member answered this scrape.");
    OUT("squall_member_up 1\n");
    HELP("squall_member_id", "gauge", "This member's id.");
    OUT("squall_member_id %u\n", s->my_id);
    pthread_mutex_lock(&s->mu);
    HELP("squall_member_in_group", "gauge",
         "1 while the member is in a working view; 0 while it is out (removed, minority, "
         "rejoining).");
    OUT("squall_member_in_group %d\n", !out && s->have_view ? 1 : 0);
    HELP("squall_view_id", "gauge", "The id of the member's current view.");
    OUT("squall_view_id %u\n", out ? 0 : s->view_id);
    HELP("squall_view_members", "gauge", "Members in the current view.");
    OUT("squall_view_members %u\n", out ? 0 : s->nmembers);
    HELP("squall_view_adequate", "gauge",
         "1 when every shard of the view has at least its min_members.");
    OUT("squall_view_adequate %d\n", !out && s->adequate ? 1 : 0);
    HELP("squall_shard_member", "gauge",
         "1 for each member of each shard in the current view (label member: its id).");
    for (uint32_t g = 0; !out && g < s->cfg.nsubgroups; g++) {
        for (uint32_t r = 0; r < s->nmembers; r++) {
            uint32_t k = s->shard_of[g * s->nmembers + r];
            if (k != SQ_NO_SHARD) {
                OUT("squall_shard_member{subgroup=\"%s\",shard=\"%u\",member=\"%u\"} 1\n",
                    s->cfg.subgroups[g].name, k, s->ids[r]);
            }
        }
    }
    HELP("squall_subgroup_delivered_version", "gauge",
         "The version of the last update this member applied, per subgroup (its shard of it).");
    for (uint32_t g = 0; g < s->cfg.nsubgroups; g++) {
        if (s->store[g] == NULL) {
            continue; /* the pool table's subgroup, or a shard this member does not serve */
        }
        uint64_t last = sq__kv_store_last(s->store[g]);
        OUT("squall_subgroup_delivered_version{subgroup=\"%s\"} %" PRIu64 "\n",
            s->cfg.subgroups[g].name, last);
    }
    HELP("squall_subgroup_persisted_version", "gauge",
         "Persistent subgroups: the last version on disk at every member of this member's "
         "shard.");
    for (uint32_t g = 0; g < s->cfg.nsubgroups; g++) {
        if (s->cfg.subgroups[g].persistent) {
            /* key-value versions are the shard's plus one: persisted[] is in them already */
            OUT("squall_subgroup_persisted_version{subgroup=\"%s\"} %" PRIu64 "\n",
                s->cfg.subgroups[g].name, s->persisted[g]);
        }
    }
    HELP("squall_subgroup_persist_lag_versions", "gauge",
         "Persistent subgroups: updates delivered here and not yet on disk everywhere (within "
         "the view).");
    for (uint32_t g = 0; g < s->cfg.nsubgroups; g++) {
        if (!s->cfg.subgroups[g].persistent) {
            continue;
        }
        uint64_t last = s->store[g] != NULL ? sq__kv_store_last(s->store[g]) : s->persisted[g];
        uint64_t pers = s->persisted[g];
        uint64_t lag = last <= pers                   ? 0
                       : (last >> 32) == (pers >> 32) ? last - pers
                                                      : (last & 0xffffffffu) + 1;
        OUT("squall_subgroup_persist_lag_versions{subgroup=\"%s\"} %" PRIu64 "\n",
            s->cfg.subgroups[g].name, lag);
    }
    HELP("squall_subgroup_keys", "gauge", "Keys this member's shard of the subgroup holds.");
    for (uint32_t g = 0; g < s->cfg.nsubgroups; g++) {
        if (s->store[g] == NULL) {
            continue;
        }
        uint64_t keys = sq__kv_store_keys(s->store[g]);
        OUT("squall_subgroup_keys{subgroup=\"%s\"} %" PRIu64 "\n", s->cfg.subgroups[g].name, keys);
    }
    HELP("squall_pools", "gauge", "Object pools in the pool table.");
    OUT("squall_pools %u\n", s->npools);
    uint64_t nwatches = s->nwatches;
    pthread_mutex_unlock(&s->mu);

    HELP("squall_kv_requests_total", "counter",
         "Client requests answered by this member, by operation and result.");
    for (int op = 1; op <= SQ_KV_OP_MAX; op++) {
        for (int r = 0; r < RES_N && op_names[op] != NULL; r++) {
            if (s->stats.ops[op][r] > 0 || r == RES_OK) {
                OUT("squall_kv_requests_total{op=\"%s\",result=\"%s\"} %" PRIu64 "\n", op_names[op],
                    res_names[r], s->stats.ops[op][r]);
            }
        }
    }
    static const char *const lat_names[LAT_N] = {"put", "remove", "get"};
    HELP("squall_kv_request_duration_seconds", "histogram",
         "Time from a request's frame read to its answer queued, by operation.");
    for (int l = 0; l < LAT_N; l++) {
        uint64_t cum = 0;
        for (int k = 0; k < LAT_BUCKETS; k++) {
            cum += s->stats.lat[l][k];
            OUT("squall_kv_request_duration_seconds_bucket{op=\"%s\",le=\"%g\"} %" PRIu64 "\n",
                lat_names[l], (double)lat_bounds_us[k] / 1e6, cum);
        }
        cum += s->stats.lat[l][LAT_BUCKETS];
        OUT("squall_kv_request_duration_seconds_bucket{op=\"%s\",le=\"+Inf\"} %" PRIu64 "\n",
            lat_names[l], cum);
        OUT("squall_kv_request_duration_seconds_sum{op=\"%s\"} %.6f\n", lat_names[l],
            (double)s->stats.lat_sum_us[l] / 1e6);
        OUT("squall_kv_request_duration_seconds_count{op=\"%s\"} %" PRIu64 "\n", lat_names[l],
            s->stats.lat_count[l]);
    }
    HELP("squall_kv_watches", "gauge", "Watches registered at this member.");
    OUT("squall_kv_watches %" PRIu64 "\n", nwatches);
    HELP("squall_kv_watch_events_total", "counter", "Watch events sent to clients.");
    OUT("squall_kv_watch_events_total %" PRIu64 "\n", s->stats.events);
    uint32_t clients = 0, peers = 0;
    for (struct conn *k = s->conns; k != NULL; k = k->next) {
        if (!k->dead && !k->relay) {
            clients += k->peer ? 0 : 1;
            peers += k->peer ? 1 : 0;
        }
    }
    HELP("squall_kv_client_connections", "gauge",
         "Open client connections (the HTTP front end's own included).");
    OUT("squall_kv_client_connections %u\n", clients);
    HELP("squall_kv_relay_connections", "gauge",
         "Open connections of members relaying to this one.");
    OUT("squall_kv_relay_connections %u\n", peers);
    HELP("squall_kv_connections_accepted_total", "counter", "Client connections accepted.");
    OUT("squall_kv_connections_accepted_total %" PRIu64 "\n", s->stats.accepted);
    HELP("squall_kv_connections_refused_total", "counter",
         "Client connections closed at once: [kv] max_connections or max_connections_per_host.");
    OUT("squall_kv_connections_refused_total %" PRIu64 "\n", s->stats.refused);
    HELP("squall_kv_tls_handshake_failures_total", "counter",
         "TLS handshakes on the client port (or of relays) that failed: an untrusted, expired "
         "or missing certificate, or a client without TLS.");
    OUT("squall_kv_tls_handshake_failures_total %" PRIu64 "\n", s->stats.tls_failed);
    HELP("squall_log_written_bytes_total", "counter",
         "Bytes written to the persistent logs (and view file) by this member.");
    OUT("squall_log_written_bytes_total %" PRIu64 "\n", disk_bytes);
    HELP("squall_log_syncs_total", "counter", "Data syncs (fdatasync) of the persistent logs.");
    OUT("squall_log_syncs_total %" PRIu64 "\n", disk_syncs);
    HELP("squall_large_sent_bytes_total", "counter",
         "Bytes of large messages this member sent, as sender and forwarder.");
    OUT("squall_large_sent_bytes_total %" PRIu64 "\n", large);
    HELP("squall_failure_suspicions_total", "counter",
         "Members this member suspected of failure, by cause.");
    OUT("squall_failure_suspicions_total{cause=\"heartbeat\"} %" PRIu64 "\n",
        h.suspected_heartbeat);
    OUT("squall_failure_suspicions_total{cause=\"link\"} %" PRIu64 "\n", h.suspected_link);
    OUT("squall_failure_suspicions_total{cause=\"relayed\"} %" PRIu64 "\n", h.suspected_relayed);
    HELP("squall_own_stalls_total", "counter",
         "Times this member's event loop did not run for half the heartbeat timeout or more.");
    OUT("squall_own_stalls_total %" PRIu64 "\n", h.own_stalls);
#undef HELP
#undef OUT
    sq__kvs_send_text(s, c, f, &b);
}
