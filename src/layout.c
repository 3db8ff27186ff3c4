/* layout.c: deterministic, sticky shard assignment. See layout.h. */
#include "layout.h"

#include <stdio.h>
#include <string.h>

void sq__assign_clear(struct sq__assign *a)
{
    memset(a, SQ_SHARD_NONE, sizeof(*a));
}

bool sq__assign_shards(const struct sq_config *c, uint32_t n, const struct sq__assign *kept,
                       struct sq__assign *out, char *why, size_t why_size)
{
    sq__assign_clear(out);
    bool adequate = true;
    for (uint32_t g = 0; g < c->nsubgroups; g++) {
        const struct sq_subgroup_cfg *sg = &c->subgroups[g];
        uint32_t max = sq__config_shard_rows(c, g);
        uint32_t count[SQ_MAX_SHARDS] = {0};
        for (uint32_t r = 0; r < n; r++) {
            uint8_t k = kept->shard[g][r];
            if (k < sg->shards && count[k] < max) {
                out->shard[g][r] = k;
                count[k]++;
            }
        }
        for (uint32_t r = 0; r < n; r++) {
            if (out->shard[g][r] != SQ_SHARD_NONE) {
                continue;
            }
            uint32_t best = SQ_SHARD_NONE;
            for (uint32_t k = 0; k < sg->shards; k++) {
                if (count[k] < max && (best == SQ_SHARD_NONE || count[k] < count[best])) {
                    best = k;
                }
            }
            if (best == SQ_SHARD_NONE) {
                break; /* every shard is full: the rest stand by */
            }
            out->shard[g][r] = (uint8_t)best;
            count[best]++;
        }
        for (uint32_t k = 0; k < sg->shards && adequate; k++) {
            if (count[k] < sg->min_members) {
                adequate = false;
                if (why != NULL && why_size > 0) {
                    snprintf(why, why_size, "shard %u of subgroup %s has %u of its %u minimum "
                             "members", k, sg->name, count[k], sg->min_members);
                }
            }
        }
    }
    return adequate;
}

void sq__assign_move(const struct sq__assign *old, uint32_t n, const uint32_t *old_rank,
                     struct sq__assign *out)
{
    sq__assign_clear(out);
    for (uint32_t g = 0; g < SQ_MAX_SUBGROUPS; g++) {
        for (uint32_t r = 0; r < n; r++) {
            if (old_rank[r] < SQ_MAX_MEMBERS) {
                out->shard[g][r] = old->shard[g][old_rank[r]];
            }
        }
    }
}

uint32_t sq__assign_members(const struct sq__assign *a, uint32_t n, uint32_t g, uint32_t k,
                            uint32_t *ranks)
{
    uint32_t m = 0;
    for (uint32_t r = 0; r < n; r++) {
        if (a->shard[g][r] == k) {
            ranks[m++] = r;
        }
    }
    return m;
}
