/* group_internal.h: what the parts of the group (group.c: views; group_handover.c: state
 * transfer; group_log.c: the shard logs) call of one another. */
#ifndef SQ_GROUP_INTERNAL_H
#define SQ_GROUP_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "group.h"
#include "layout.h"
#include "persist/plog.h"
#include "squall.h"

/* group.c */

/* Records the group's first error (sticky) and its message in g->errmsg; returns the sticky
 * error. */
int sq__group_fail(struct sq__group *g, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* group_handover.c */

/* Becomes the donor of shard (s, k) for its newcomers (control ranks) in view `view_id`. */
void sq__group_start_donation(struct sq__group *g, uint32_t view_id, uint32_t s, uint32_t k,
                              const uint32_t *newcomers, uint32_t nnew);
/* Drops a donation (done, or the view is left): frees the state it held. */
void sq__group_end_donation(struct sq__donation *d);
/* A newcomer drops the application state's pieces gathered so far for subgroup s. */
void sq__group_drop_state_in(struct sq__group *g, uint32_t s);
/* Sends subgroup s's next chunk to the current newcomer once it took the previous one. Returns
 * what happened, or a negative error. */
int sq__group_pump_donation(struct sq__group *g, uint32_t s);
/* A newcomer: takes the donor's chunks that arrived. Returns what happened, or a negative
 * error. */
int sq__group_check_handovers(struct sq__group *g);

/* group_log.c */

/* Reads entry e's payload into g->scratch: 0, SQ_ENOMEM or SQ_EIO. */
int sq__group_read_payload(struct sq__group *g, struct sq__plog *log,
                           const struct sq__plog_entry *e);
/* The persistent shards' callback for messages in order, ahead of delivery: logs them. */
void sq__group_ordered(void *arg, const sq_message *msg);
/* The shards' delivery callback (arg: the group). */
void sq__group_deliver(void *arg, const sq_message *msg);
/* Opens the log of my shard k of persistent subgroup s; 0 or the (recorded) error. */
int sq__group_open_log(struct sq__group *g, uint32_t s, uint32_t k, bool have_donor, bool holder);
/* Before the first view of a restart: shard clocks go on from the logs, holders replay them. */
int sq__group_replay_logs(struct sq__group *g, uint32_t my_rank, const struct sq__assign *assign);
/* Publishes what is durable in my row of subgroup s's shard (pushed at once) and reports its
 * frontier. Returns what happened, or a negative error. */
int sq__group_publish_persistence(struct sq__group *g, uint32_t s);

#endif
