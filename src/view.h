/* view.h: the view-change protocol of one shard, run over its shared state table.
 *
 * When any member is suspected, every member merges the suspicions it sees, wedges (freezes its
 * received counters and stops sending) and follows the leader: the lowest-ranked member it does
 * not suspect. Agreeing on the next view is single-decree Paxos over the table: the leader's
 * ballot is its rank + 1 (leaders take over in rank order, since suspicions only grow), members
 * promise by writing the ballot in their row, the leader learns any value already accepted from
 * every unsuspected member and otherwise proposes (removed = its suspicions, trim = the minimum
 * over unsuspected members of what they received with everything before it). Members accept by
 * copying the proposal; a value accepted by a majority of the view is decided, whoever led.
 * Every survivor then delivers exactly the global indexes below the trim and installs the next
 * view. A member that suspects a majority stops (partitioned); one the decision removes stops
 * (removed). */
#ifndef SQ_VIEW_H
#define SQ_VIEW_H

#include "sst.h"

/* Runs one step of the protocol for control table `s`: merges suspicions, wedges, promises,
 * accepts, leads and learns. Sets s->phase to SQ_SST_CHANGING, SQ_SST_STOPPED (with
 * s->stop_reason), and fills s->decision once decided. Returns the number of things that changed,
 * or a negative error. */
int sq__view_step(struct sq__sst *s);

/* Makes `s` a control table: every poll of it (sq__smc_poll) runs one sq__view_step, after taking
 * in what arrived and before delivering. Call it again after each sq__smc_init of the table. */
void sq__view_attach(struct sq__sst *s);

/* Asks to leave: this member suspects itself, which every other member adopts, so the next
 * view leaves it out; this member stops with SQ_ELEFT. */
void sq__view_leave(struct sq__sst *s);

/* The check value of a proposal (FNV-1a of its three fields). */
uint64_t sq__vc_check(const struct sq__vc_value *v);

#endif
