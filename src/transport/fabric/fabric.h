/* fabric.h: the libfabric transport: one connected (FI_EP_MSG) endpoint per pair of members, the
 * whole shared state table registered once, and table ranges pushed with one-sided RMA writes. */
#ifndef SQ_FABRIC_H
#define SQ_FABRIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "transport.h"

/* Opens the provider named in `cfg`, registers `table` (`table_bytes`, owned by the caller and
 * outliving the transport), listens on this member's host:port and connects to every other
 * member of the first view, retrying refused connections until cfg->connect_timeout_ms.
 * Members exchange their id, table size and group digest when they connect, and refuse a peer
 * whose configuration does not match. With `join`, this member joins a running group instead:
 * it connects to every configured member and returns once it reaches every member of the view
 * a running member reported when it answered. Returns 0 and the transport in *out, or an error with
 * a message in `err`. */
int sq__fabric_create(struct sq_transport **out, const struct sq_config *cfg, uint8_t *table,
                      size_t table_bytes, bool join, char *err, size_t err_size);

/* The log tails exchanged in the hellos: this member's (set before sq__fabric_create), and each
 * peer's by rank once the group formed (all zero for a peer not heard from). */
void sq__fabric_set_log_tail(const struct sq_log_tail *mine);
void sq__fabric_log_tails(struct sq_transport *t, struct sq_log_tail *by_rank);

/* Restarting from disks (restart.h): sq__fabric_create returns as soon as it sees that some member
 * kept a view file, and the caller forms the first view itself with these: whether it did so;
 * one round of set-up (connects, connection events within `wait_ms`); the ranks linked now (this
 * member's included); and whether a member reported a running group, every member of whose view
 * is linked now (then join it: the transport is in joining mode). */
bool sq__fabric_restarting(struct sq_transport *t);
int sq__fabric_form_step(struct sq_transport *t, int wait_ms);
uint32_t sq__fabric_linked(struct sq_transport *t);
bool sq__fabric_join_ready(struct sq_transport *t);
/* Rank's link: SQ_FABRIC_DOWN (not set up yet, or lost), SQ_FABRIC_SETUP or SQ_FABRIC_UP, and
 * the process at its other end (`*incarnation`, random per process, 0 before any hello): a
 * restarted member comes back with another one. */
enum { SQ_FABRIC_DOWN, SQ_FABRIC_SETUP, SQ_FABRIC_UP };
int sq__fabric_peer_link(struct sq_transport *t, uint32_t rank, uint64_t *incarnation);

#endif
