/* restart.h: restarting a group from its members' disks when a majority comes back.
 *
 * Every member that keeps logs also keeps a view file (<data_dir>/member-<id>/view): the last
 * view it installed, that view's members, the persistent shards that had a holder in it and the
 * ones whose whole history this member held. It is rewritten, atomically (a new file, synced,
 * then renamed over the old one), at each view, when a newcomer's handed-over log is durable,
 * and before the member accepts a proposed next view (which it records with its members).
 *
 * When the group starts again, its members exchange these in their hellos. Let V be the latest
 * view any of them knows. The group may restart when the members present include
 *   - a majority of V's members (a later view would have needed a majority of V to accept it,
 *     so at least one of them would know it), and a majority of every later view that a member
 *     present accepted but did not install (it may have been installed by members missing now;
 *     only members with a view file count), and
 *   - for every persistent shard held in V, a member that held its whole history in V (every
 *     update reported persisted was on disk at every member of its shard, and a member new to
 *     a shard holds it only once the handed-over log is durable), and that is a member of every
 *     later view accepted (it keeps its shard there, and did not install it, so nothing was
 *     persisted in that shard in it).
 * A group that never ran (no view file anywhere) still needs every configured member.
 * The lowest-ranked member present leads: once the condition holds it waits restart_wait_ms for
 * the others, then sends each member present the first view (a welcome). The longest log of each
 * shard among them is its history; members that come back later join as usual, and one whose log
 * goes past that history cuts the suffix (updates it delivered that were never persisted). */
#ifndef SQ_RESTART_H
#define SQ_RESTART_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct sq__viewfile {
    uint32_t view_next; /* 1 + view id */
    uint32_t members;   /* by configured rank */
    uint16_t held;      /* flat persistent shard numbers */
    uint16_t mine;
    uint32_t acc_view;    /* 1 + the id of the next view this member accepted, if not installed */
    uint32_t acc_members; /* its members */
};

/* <data_dir>/member-<id>/view */
void sq__viewfile_path(const struct sq_config *cfg, uint32_t member_id, char *out, size_t cap);

/* Reads the view file: 1 (and *out), 0 when there is none, or SQ_ECORRUPT / SQ_EIO with `err`
 * naming the file. */
int sq__viewfile_read(const char *path, struct sq__viewfile *out, char *err, size_t err_size);

/* Replaces the view file, durably. 0 or SQ_EIO / SQ_ENOSPC (with `err`). */
int sq__viewfile_write(const char *path, const struct sq__viewfile *vf, char *err, size_t err_size);

/* Whether the members in `present` (by configured rank), with these tails (by rank), may start
 * the group: 1 yes; 0 not yet, with what is missing in `why`. `*restart` says whether this is a
 * restart from earlier views (false: a group that never ran, which needs every member). */
int sq__restart_check(const struct sq_config *cfg, uint32_t present,
                      const struct sq_log_tail *tails, bool *restart, char *why, size_t why_size);

#endif
