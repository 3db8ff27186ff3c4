/* smc.h: the shared state table of one shard and small-message multicast over it (SMC).
 *
 * Pure protocol logic: no I/O of its own. Bytes reach other members only through the transport's
 * write(); the caller runs sq__smc_poll() whenever the table may have changed.
 *
 * Table layout: one row per member rank, rows back to back, all fields little-endian.
 *   row header (SQ_SMC_HEADER bytes plus 8 per member, rounded up to 64):
 *     u64 heartbeat     bumped by the runtime; failure detection reads it (membership)
 *     u64 num_sent      indexes this member has assigned (real and null messages), all pushed
 *     u64 delivered     global indexes delivered here: the next one to deliver
 *     u64 received[n]   per sender rank: how many of that sender's messages arrived here
 *   then window_size slots of slot_size bytes each:
 *     [payload area, align8(max_payload) bytes; a payload of size s is right-aligned, i.e. it
 *      starts align8(s) bytes before the trailer] [trailer: u64 index, u32 size, u32 flags,
 *      u64 tag]
 * A sender puts its z-th real message in slot z % window_size and writes tag = z + 1 last, so a
 * reader that sees the tag knows the whole slot arrived (writes land in address order).
 *
 * Ordering: message i of sender rank r has global index i * n + r. A sender with nothing to send
 * raises num_sent instead of writing null messages into slots: every index below num_sent that no
 * slot carries is a null. Global index g is delivered once every member's received counters show
 * g and every index before it arrived. A slot is reused only when its previous message has been
 * delivered at every member, so delivery can read payloads in place. */
#ifndef SQ_SMC_H
#define SQ_SMC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "squall.h"
#include "transport.h"

#define SQ_SMC_MAX_MEMBERS 32
/* At most this many global indexes are delivered per poll, so one poll is bounded work. */
#define SQ_SMC_MAX_DELIVER_BATCH 4096u

#define SQ_SMC_TRAILER_BYTES 24u
#define SQ_SMC_OFF_HEARTBEAT 0u
#define SQ_SMC_OFF_NUM_SENT 8u
#define SQ_SMC_OFF_DELIVERED 16u
#define SQ_SMC_OFF_RECEIVED 24u

struct sq__smc_params {
    uint32_t nmembers;
    uint32_t my_rank;
    uint32_t window_size;
    uint32_t max_payload;
    uint32_t view_id;
    const uint32_t *member_ids; /* nmembers ids by rank; copied */
};

struct sq__smc_layout {
    uint32_t nmembers;
    uint32_t window_size;
    uint32_t max_payload;
    size_t header_bytes;
    size_t slot_bytes;
    size_t row_bytes;
    size_t table_bytes;
};

struct sq__smc {
    struct sq__smc_layout L;
    uint32_t my_rank;
    uint32_t view_id;
    uint32_t member_ids[SQ_SMC_MAX_MEMBERS];
    uint8_t *table;
    struct sq_transport *t;
    sq_deliver_fn deliver;
    void *deliver_arg;

    /* sending */
    uint64_t next_index;    /* my next message index; equals my published num_sent */
    uint64_t slots_used;    /* real messages I have put in slots */
    uint64_t pushed_slots;  /* of those, how many were written to the peers */
    uint64_t *slot_global;  /* window_size entries: global index of the message in each slot */
    bool reserved;
    uint32_t reserved_size;
    uint64_t last_sent_global; /* global index of my latest real message, UINT64_MAX if none */

    /* receiving, per sender rank */
    uint64_t recv_slots[SQ_SMC_MAX_MEMBERS];    /* next slot number expected */
    uint64_t deliver_slots[SQ_SMC_MAX_MEMBERS]; /* next slot number to deliver */
    uint64_t received[SQ_SMC_MAX_MEMBERS];      /* mirrors my row's received[] */

    /* largest value seen so far of each member's monotonic columns (a torn read of a column
     * being written can only be lower than its true value, so the max is always safe) */
    uint64_t seen_num_sent[SQ_SMC_MAX_MEMBERS];
    uint64_t seen_delivered[SQ_SMC_MAX_MEMBERS];

    uint64_t next_deliver;   /* next global index to deliver */
    uint64_t delivered_real; /* messages delivered in this view (nulls excluded) */
    uint64_t min_delivered;  /* min over members of delivered, as last computed */
    bool header_dirty;
    int failed; /* first error, sticky */
    char errmsg[160];
};

/* Computes the table layout for these parameters. Returns SQ_EINVAL for out-of-range values. */
int sq__smc_layout(struct sq__smc_layout *L, uint32_t nmembers, uint32_t window_size,
                   uint32_t max_payload);

/* Initializes `s` over `table` (L.table_bytes, zero-filled by the caller, owned by the caller and
 * outliving `s`), writing through `t`. Returns 0, SQ_EINVAL or SQ_ENOMEM. */
int sq__smc_init(struct sq__smc *s, const struct sq__smc_params *p, uint8_t *table,
                 struct sq_transport *t, sq_deliver_fn deliver, void *deliver_arg);
void sq__smc_fini(struct sq__smc *s);

/* Reserves my next slot for `size` bytes: *buf points into my row. SQ_EAGAIN when the slot still
 * holds a message not yet delivered at every member, SQ_EMSGSIZE, SQ_EBUSY if a reservation is
 * open, or the sticky failure. */
int sq__smc_reserve(struct sq__smc *s, size_t size, void **buf);
/* Sends the reserved slot: assigns its index. The next poll writes the slot to every peer,
 * then the header that counts it; commit itself makes no transport call. */
int sq__smc_commit(struct sq__smc *s);

/* Evaluates every predicate once: consumes arrived slots, fills nulls when others are ahead,
 * delivers up to SQ_SMC_MAX_DELIVER_BATCH stable messages, and writes new slots and my row
 * header (if it changed) through the transport. The caller then flushes the transport, outside
 * any lock it holds, since flushing makes system calls. Returns the number of things that happened (0: idle), or a negative
 * error (sticky: the shard cannot go on, see s->errmsg). */
int sq__smc_poll(struct sq__smc *s);

/* Raises my heartbeat column; pushed by the next poll. */
void sq__smc_heartbeat(struct sq__smc *s);

/* True when every real message I sent has been delivered here. */
bool sq__smc_drained(const struct sq__smc *s);

/* True when every member has delivered at least what this member has delivered. */
bool sq__smc_all_caught_up(struct sq__smc *s);

/* True when a reserve() would not get SQ_EAGAIN for lack of a free slot. */
bool sq__smc_can_send(struct sq__smc *s);

#endif
