/* kv_status.c: the member's status answer (STATUS), as text or JSON: view, subgroups, shards,
 * versions and pools. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>

#include "common.h"
#include "config.h"
#include "kv/buf.h"
#include "kv/store.h"
#include "kv/wire.h"
#include "server/kv_internal.h"

void sq__kvs_status(struct sq_kv_server *s, struct conn *c, const struct sq_kv_frame *f)
{
    if (f->flags & SQ_KV_F_METRICS) {
        sq__kvs_metrics(s, c, f);
        return;
    }
    bool json = (f->flags & SQ_KV_F_JSON) != 0;
    struct sq__buf b = {0};
#define OUT(...) (void)sq__buf_printf(&b, __VA_ARGS__)
    sq_member_health h = {0};
    bool out = sq__kvs_out_of_group(s);
    if (s->m != NULL && !out) {
        (void)sq_member_get_health(s->m, &h); /* a member call: not under mu */
    }
    pthread_mutex_lock(&s->mu);
    if (out) {
        /* rejoining: what it knew of the group is gone; say so, and why */
        if (json) {
            OUT("{\"member\":%u,\"in_group\":false,\"why\":\"", s->my_id);
            for (const char *p = s->detached_why; *p != '\0'; p++) {
                OUT(*p == '"' || *p == '\\' ? "\\%c" : "%c", *p);
            }
            OUT("\"}\n");
        } else {
            OUT("member %u: not in the group now: %s\n", s->my_id,
                s->detached_why[0] ? s->detached_why : "its member failed; it is rejoining");
        }
        pthread_mutex_unlock(&s->mu);
        goto send;
    }
    if (json) {
        OUT("{\"member\":%u,\"view\":%u,\"adequate\":%s,\"members\":[", s->my_id, s->view_id,
            s->adequate ? "true" : "false");
    } else {
        OUT("member %u, view %u (%s), members", s->my_id, s->view_id,
            s->adequate ? "adequate" : "INADEQUATE: a shard is below min_members");
    }
    for (uint32_t r = 0; r < s->nmembers; r++) {
        /* every member of a view is in the config (the group digest checks it); still, never
         * index past it */
        int mr = sq__config_rank_of(&s->cfg, s->ids[r]);
        const char *host = mr >= 0 ? s->cfg.members[mr].host : "?";
        uint32_t port = mr >= 0 ? s->cfg.members[mr].client_port : 0;
        if (json) {
            OUT("%s{\"id\":%u,\"client\":\"%s:%u\"}", r ? "," : "", s->ids[r], host, port);
        } else {
            OUT(" %u (%s:%u)", s->ids[r], host, port);
        }
    }
    OUT(json ? "],\"subgroups\":[" : "\n");
    for (uint32_t g = 0; g < s->cfg.nsubgroups; g++) {
        const struct sq_subgroup_cfg *sg = &s->cfg.subgroups[g];
        const char *kind = (int)g == s->meta ? "metadata" : sq__kvs_store_name(sg->store);
        if (json) {
            OUT("%s{\"name\":\"%s\",\"store\":\"%s\",\"shards\":[", g ? "," : "", sg->name, kind);
        } else {
            OUT("subgroup %s (%s, %s delivery, %u shard%s):", sg->name, kind,
                sg->persistent ? "persistent" : "atomic", sg->shards, sg->shards > 1 ? "s" : "");
        }
        for (uint32_t k = 0; k < sg->shards; k++) {
            OUT(json ? "%s{\"shard\":%u,\"members\":[" : "%s shard %u: members", k ? "," : "", k);
            uint32_t cnt = 0;
            for (uint32_t r = 0; r < s->nmembers; r++) {
                if (s->shard_of[g * s->nmembers + r] == k) {
                    OUT(json ? "%s%u" : "%s%u", json ? (cnt ? "," : "") : " ", s->ids[r]);
                    cnt++;
                }
            }
            OUT(json ? "]}" : ";");
        }
        uint64_t last = s->store[g] != NULL ? sq__kv_store_last(s->store[g]) : 0;
        uint64_t keys = s->store[g] != NULL ? sq__kv_store_keys(s->store[g]) : 0;
        if (json) {
            OUT("],\"my_shard\":%d,\"last_version\":\"0x%" PRIx64 "\",\"keys\":%" PRIu64,
                s->my_shard[g] == SQ_NO_SHARD ? -1 : (int)s->my_shard[g], last, keys);
            if (sg->persistent) {
                OUT(",\"persisted\":\"0x%" PRIx64 "\"", s->persisted[g]);
            }
            OUT("}");
        } else {
            if (s->my_shard[g] == SQ_NO_SHARD) {
                OUT(" this member stands by\n");
            } else if ((int)g == s->meta) {
                OUT(" %u pool%s\n", s->npools, s->npools == 1 ? "" : "s");
            } else {
                OUT(" this member: shard %u, last version 0x%" PRIx64 ", %" PRIu64 " key%s",
                    s->my_shard[g], last, keys, keys == 1 ? "" : "s");
                if (sg->persistent) {
                    OUT(", persisted at every member up to 0x%" PRIx64, s->persisted[g]);
                }
                OUT("\n");
            }
        }
    }
    uint64_t suspected = h.suspected_heartbeat + h.suspected_link + h.suspected_relayed;
    if (json) {
        OUT("],\"detector\":{\"heartbeat_timeout_ms\":%u,\"suspected_heartbeat\":%" PRIu64
            ",\"suspected_link\":%" PRIu64 ",\"suspected_relayed\":%" PRIu64
            ",\"own_stalls\":%" PRIu64 ",\"longest_stall_ms\":%" PRIu64 "}",
            h.heartbeat_timeout_ms, h.suspected_heartbeat, h.suspected_link, h.suspected_relayed,
            h.own_stalls, h.longest_stall_ms);
    } else {
        OUT("failure detector: heartbeat timeout %u ms; this member suspected %" PRIu64
            " (heartbeat %" PRIu64 ", link %" PRIu64 ", relayed %" PRIu64
            "); its own stalls %" PRIu64 " (longest %" PRIu64 " ms)\n",
            h.heartbeat_timeout_ms, suspected, h.suspected_heartbeat, h.suspected_link,
            h.suspected_relayed, h.own_stalls, h.longest_stall_ms);
    }
    OUT(json ? ",\"pools\":[" : "");
    for (uint32_t i = 0; i < s->npools; i++) {
        const struct pool *p = &s->pools[i];
        const struct sq_subgroup_cfg *sg = &s->cfg.subgroups[p->sg];
        if (json) {
            OUT("%s{\"path\":\"%s\",\"subgroup\":\"%s\",\"store\":\"%s\",\"shards\":%u}",
                i ? "," : "", p->path, sg->name, sq__kvs_store_name(sg->store), p->shards);
        } else {
            OUT("pool %s: subgroup %s (%s), %u shard%s\n", p->path, sg->name,
                sq__kvs_store_name(sg->store), p->shards, p->shards > 1 ? "s" : "");
        }
    }
    if (!json && s->npools == 0) {
        OUT("no pools yet (squall pool create PATH TYPE)\n");
    }
    OUT(json ? "]}\n" : "");
    pthread_mutex_unlock(&s->mu);
send:;
#undef OUT
    sq__kvs_send_text(s, c, f, &b);
}

void sq__kvs_send_text(struct sq_kv_server *s, struct conn *c, const struct sq_kv_frame *f,
                       struct sq__buf *b)
{
    struct sq_kv_frame a = {.op = f->op,
                            .req_id = f->req_id,
                            .client = f->client,
                            .value = b->p,
                            .value_len = (uint32_t)b->len};
    sq__kvs_conn_send(s, c, &a);
    sq__buf_free(b);
}
