/* smc.h: small-message multicast (SMC) over the shared state table of one shard (sst.h).
 *
 * Pure protocol logic: no I/O of its own. Bytes reach other members only through the transport's
 * write(); the caller runs sq__smc_poll() whenever the table may have changed.
 *
 * Ordering: message i of sender rank r has global index i * n + r. A sender with nothing to send
 * raises num_sent instead of writing null messages into slots: every index below num_sent that no
 * slot carries is a null. Global index g is delivered once every member's received counters show
 * g and every index before it arrived. A slot is reused only when its previous message has been
 * delivered at every member, so delivery can read payloads in place.
 *
 * Large messages (above the table's max_smc_payload): the payload lies in the sender's ring of
 * the large-message area (sst.h) and moves in blocks along a schedule (a chain by default, so the
 * sender writes each byte once whatever the group's size); the slot carries only its stream
 * position. A member counts such a message received only once the whole payload is here, so
 * delivery, the ragged trim and everything above see large messages like small ones. */
#ifndef SQ_SMC_H
#define SQ_SMC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "squall.h"
#include "sst.h"
#include "transport.h"

/* At most this many global indexes are delivered per poll, so one poll is bounded work. */
#define SQ_SMC_MAX_DELIVER_BATCH 4096u
/* At most this many blocks of large messages are forwarded per sender and poll. */
#define SQ_SMC_MAX_FORWARD_BLOCKS 4u
/* Trailer flag of a slot that carries a large message's stream position (never delivered). */
#define SQ__SMC_FLAG_LARGE 0x80000000u

/* How a large message's blocks travel (see smc.c). */
enum sq__smc_schedule {
    SQ_SMC_CHAIN, /* sender -> rank+1 -> rank+2 ...: every member but the last forwards it once */
    SQ_SMC_STAR,  /* the sender writes it to every other member itself */
};

struct sq__smc_params {
    struct sq__sst_params sst; /* the table */
    uint64_t now_us;           /* the caller's clock at the start of the view */
    /* suspect a member whose heartbeat stalls this long (0: never) */
    uint64_t heartbeat_timeout_us;
    bool data_only;          /* a shard's table: no heartbeats, no view protocol of its own */
    uint64_t last_timestamp; /* of the shard's last delivery before this view */
    uint32_t subgroup;       /* reported in delivered messages */
    uint32_t shard;
    /* large messages (when the table has a large-message area) */
    enum sq__smc_schedule schedule;
    uint32_t block_bytes; /* the unit of forwarding (0: 1 MiB) */
    /* if not NULL, the bytes of large messages this member writes to others are added here */
    _Atomic uint64_t *large_bytes_total;
    /* How long a change to my row that no other member waits on (see smc.c, "lazy changes") may
     * wait for the next push; the caller must poll again by then (sq__smc_lazy_deadline). 0:
     * every change goes out at the end of the poll that made it. */
    uint64_t lazy_us;
};

struct sq__smc {
    struct sq__sst sst; /* the table, and the view change's state over it */
    sq_deliver_fn deliver;
    void *deliver_arg;

    /* sending */
    uint64_t next_index;   /* my next message index; equals my published num_sent */
    uint64_t slots_used;   /* real messages I have put in slots */
    uint64_t pushed_slots; /* of those, how many were written to the peers */
    uint64_t *slot_global; /* window_size entries: global index of the message in each slot */
    bool reserved;
    uint32_t reserved_size;
    uint32_t reserved_flags;   /* trailer flags of the open reservation (sq__smc_set_flags) */
    uint64_t last_sent_global; /* global index of my latest real message, UINT64_MAX if none */

    /* large messages: my ring holds my stream between large_tail and large_head */
    enum sq__smc_schedule schedule;
    uint32_t block_bytes;
    uint64_t large_head;   /* where my next large message may start in my stream */
    uint64_t large_tail;   /* my stream below it is free: delivered at every member */
    uint64_t freed_slots;  /* my slots, in order, whose messages every member delivered */
    uint64_t reserved_pos; /* stream position of the open reservation, if large */
    uint64_t fwd_slot[SQ_SST_MAX_MEMBERS]; /* per sender: next slot whose bytes I forward */
    uint64_t fwd_pos[SQ_SST_MAX_MEMBERS];  /* per sender: its stream forwarded this far */
    uint64_t seen_src[SQ_SST_MAX_MEMBERS]; /* per sender: what my source forwarded to me */
    _Atomic uint64_t *large_bytes_total;   /* the params' counter over views, or NULL */

    /* receiving, per sender rank */
    uint64_t recv_slots[SQ_SST_MAX_MEMBERS];    /* next slot number expected */
    uint64_t deliver_slots[SQ_SST_MAX_MEMBERS]; /* next slot number to deliver */

    /* largest value seen so far of each member's monotonic columns (a torn read of a column
     * being written can only be lower than its true value, so the max is always safe) */
    uint64_t seen_num_sent[SQ_SST_MAX_MEMBERS];
    uint64_t seen_delivered[SQ_SST_MAX_MEMBERS];
    /* global index of the latest real message received from another member (see fill_nulls) */
    uint64_t highest_real;
    bool any_real;

    /* Persistent shards: `ordered` sees every real message in the total order as soon as this
     * member holds it and every message before it, which may be before every member has it (so
     * before it is delivered, and perhaps never: a view change may trim it). Each message
     * reaches `ordered` before `deliver`, with the same version and timestamp. NULL: none. */
    sq_deliver_fn ordered;
    void *ordered_arg;
    uint64_t next_ordered;    /* next global index for `ordered`; never behind next_deliver */
    uint64_t ordered_real;    /* its real messages so far in this view */
    uint64_t ordered_last_ts; /* the timestamp of the last of them */
    uint64_t ordered_slots[SQ_SST_MAX_MEMBERS];

    uint64_t next_deliver;   /* next global index to deliver */
    uint64_t delivered_real; /* messages delivered in this view (nulls excluded) */
    uint64_t min_delivered;  /* min over members of delivered, as last computed */
    bool data_only;
    bool hold;      /* a newcomer waiting for its shard's state: receives, delivers nothing */
    uint64_t stamp; /* the sender's clock for the next commit (microseconds) */
    uint64_t last_timestamp; /* of the last delivery: timestamps never go backwards */
    uint32_t subgroup, shard;

    uint64_t lazy_us;  /* the params' lazy_us */
    uint64_t lazy_gap; /* my delivered counter may run this far ahead of what I last pushed */

    /* failure detection */
    uint64_t hb_timeout_us, hb_period_us, last_hb_us, now_us;
    uint64_t last_tick_us; /* the previous tick: a longer gap than a period is my own stall */
    bool ticked;           /* the first tick's gap is the view's set-up, not a stall */
    uint64_t seen_hb[SQ_SST_MAX_MEMBERS];
    uint64_t seen_hb_at_us[SQ_SST_MAX_MEMBERS];

    /* the end of the view (the change itself is agreed in sst's view-change state, view.c) */
    uint64_t dropped;        /* my real messages beyond the trim: never delivered */
    uint64_t fence_since_us; /* when this member began waiting for the rows of the next view */
    uint64_t fence_cut;      /* ranks whose links the caller must close at installation */
};

/* Initializes `s` over `table` (L.table_bytes, zero-filled by the caller, owned by the caller and
 * outliving `s`), writing through `t`. Returns 0, SQ_EINVAL or SQ_ENOMEM. */
int sq__smc_init(struct sq__smc *s, const struct sq__smc_params *p, uint8_t *table,
                 struct sq_transport *t, sq_deliver_fn deliver, void *deliver_arg);
void sq__smc_fini(struct sq__smc *s);

/* Sets the `ordered` callback (see struct sq__smc), right after init. */
void sq__smc_set_ordered(struct sq__smc *s, sq_deliver_fn ordered, void *arg);

/* A newcomer's shard state is in: lifts the hold, and both the delivery and the `ordered` clock go
 * on from `last_ts`, the donor's last timestamp (whatever this member's clock said before). */
void sq__smc_release(struct sq__smc *s, uint64_t last_ts);

/* Reserves my next slot for `size` bytes: *buf points into my row. SQ_EAGAIN when the slot still
 * holds a message not yet delivered at every member, SQ_EMSGSIZE, SQ_EBUSY if a reservation is
 * open, or the sticky failure. */
int sq__smc_reserve(struct sq__smc *s, size_t size, void **buf);
/* Marks the open reservation with message flags (SQ_MSG_ORDERED_CALL). */
void sq__smc_set_flags(struct sq__smc *s, uint32_t flags);

/* Sends the reserved slot: assigns its index. SQ_EVIEWCHANGE when the view started changing
 * since the reservation: the message is not sent, reserve again once the next view is in. The next
 * poll writes the slot to every peer, then the header that counts it; commit itself makes no
 * transport call. */
int sq__smc_commit(struct sq__smc *s);

/* Evaluates every predicate once: consumes arrived slots, fills nulls when others are ahead,
 * runs the table's control step (the view change on a control table: sq__view_attach),
 * delivers up to SQ_SMC_MAX_DELIVER_BATCH stable messages, and writes new slots and my row
 * header (if it changed) through the transport. The caller then flushes the transport, outside
 * any lock it holds, since flushing makes system calls. Returns the number of things that happened
 * (0: idle), or a negative error (sticky: the shard cannot go on, see s->sst.errmsg). */
int sq__smc_poll(struct sq__smc *s);

/* Advances the shard's clock: bumps my heartbeat every heartbeat period and suspects members
 * whose heartbeat has not moved for the timeout. Call it at least every period; the next poll
 * pushes the result. */
void sq__smc_tick(struct sq__smc *s, uint64_t now_us);

/* When the next poll must run at the latest (the clock of sq__smc_tick) for changes to my row
 * that are waiting for a push (see smc.c, "lazy changes"); UINT64_MAX when none are. */
uint64_t sq__smc_lazy_deadline(const struct sq__smc *s);

/* Once phase is SQ_SST_READY, the caller closes the links to the removed ranks and to the ranks
 * in `fence_cut` (kept, but silent: the next view removes them), then installs the next view.
 * The next view's members (ids and transport peers by new rank:
 * the survivors in their old order, then the joiners by peer index) and my rank in it. Returns
 * the number of members. */
uint32_t sq__smc_next_view(const struct sq__smc *s, uint32_t *ids, uint32_t *peers,
                           uint32_t *my_rank);

/* True when every real message I sent has been delivered here. */
bool sq__smc_drained(const struct sq__smc *s);

/* True when every member has delivered at least what this member has delivered. */
bool sq__smc_all_caught_up(struct sq__smc *s);

/* True when a reserve() would not get SQ_EAGAIN for lack of a free slot. */
bool sq__smc_can_send(struct sq__smc *s);

#endif
