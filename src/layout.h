/* layout.h: which members of a view form which shard of each subgroup.
 *
 * Deterministic from the view, so every member computes the same layout without talking, and
 * sticky: a member keeps its shard for as long as it stays in the group, so shard state only ever
 * moves to members that are new to a shard. The rule, per subgroup:
 *   1. every member of the previous layout that survives keeps its shard;
 *   2. the others (joiners, stand-bys), in rank order, each go to the shard with the fewest
 *      members that is below max_members (ties: the lowest shard number);
 *   3. a member that finds every shard full stands by (in no shard of that subgroup).
 * A view is adequate when every shard of every subgroup has at least min_members. */
#ifndef SQ_LAYOUT_H
#define SQ_LAYOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define SQ_SHARD_NONE 0xFFu

/* Shard of each member rank, per subgroup (SQ_SHARD_NONE: stands by). */
struct sq__assign {
    uint8_t shard[SQ_MAX_SUBGROUPS][SQ_MAX_MEMBERS];
};

/* Fills every entry with SQ_SHARD_NONE. */
void sq__assign_clear(struct sq__assign *a);

/* Computes the layout of a view of n members from `kept` (the previous layout, already moved to
 * the new ranks; SQ_SHARD_NONE for members new to the group). Returns true if the view is adequate;
 * otherwise writes the first shard that is short of members to `why`. */
bool sq__assign_shards(const struct sq_config *c, uint32_t n, const struct sq__assign *kept,
                       struct sq__assign *out, char *why, size_t why_size);

/* Moves an assignment from the old view's ranks to the next view's: new rank i was old rank
 * old_rank[i], or is new to the group (old_rank[i] == UINT32_MAX). */
void sq__assign_move(const struct sq__assign *old, uint32_t n, const uint32_t *old_rank,
                     struct sq__assign *out);

/* Members of shard k of subgroup g, in rank order; returns how many. */
uint32_t sq__assign_members(const struct sq__assign *a, uint32_t n, uint32_t g, uint32_t k,
                            uint32_t *ranks);

#endif
