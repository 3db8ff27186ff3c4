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
 * The first view of a restart that never completed (a member of it that is back never recorded
 * it) counts as never proposed: its view files are read as the ones before it (each keeps them,
 * see sq__restart_effective_tails).
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

struct sq__viewfile_prev {
    uint32_t view_next, members;
    uint16_t held, mine;
    uint32_t acc_view, acc_members;
};

struct sq__viewfile {
    uint32_t view_next; /* 1 + view id */
    uint32_t members;   /* by configured rank */
    uint16_t held;      /* flat persistent shard numbers */
    uint16_t mine;
    uint32_t acc_view;    /* 1 + the id of the next view this member accepted, if not installed */
    uint32_t acc_members; /* its members */
    /* The first view of a restart: what this file said before it (view_next 0 otherwise). */
    struct sq__viewfile_prev prev;
};

/* <data_dir>/member-<id>/view */
void sq__viewfile_path(const struct sq_config *cfg, uint32_t member_id, char *out, size_t cap);

/* Reads the view file: 1 (and *out), 0 when there is none, or SQ_ECORRUPT / SQ_EIO with `err`
 * naming the file. */
int sq__viewfile_read(const char *path, struct sq__viewfile *out, char *err, size_t err_size);

/* Replaces the view file, durably. 0 or SQ_EIO / SQ_ENOSPC (with `err`). */
int sq__viewfile_write(const char *path, const struct sq__viewfile *vf, char *err, size_t err_size);

/* The tails as a restart must read them (by configured rank, of the members in `present`): a
 * restart's first view V that some member of V present never recorded (its view file is older,
 * and it has one) never completed, since every member writes V into its view file before its
 * first row in V and the shards deliver in V only once every member's row is there (the restart
 * guard): nothing happened in V. Then every file that says V is read as the file before it
 * (vf_prev_*), as if V had never been proposed. Without this, a holder of V that died before it
 * recorded V (every other member awaiting its handover, so none holds V's whole history) would
 * keep the group from restarting for ever. Repeats for the view before, while the rule holds. */
void sq__restart_effective_tails(const struct sq_config *cfg, uint32_t present,
                                 const struct sq_log_tail *tails, struct sq_log_tail *out);

/* Whether the members in `present` (by configured rank), with these tails (by rank), may start
 * the group: 1 yes; 0 not yet, with what is missing in `why`. `*restart` says whether this is a
 * restart from earlier views (false: a group that never ran, which needs every member). */
int sq__restart_check(const struct sq_config *cfg, uint32_t present,
                      const struct sq_log_tail *tails, bool *restart, char *why, size_t why_size);

#endif
