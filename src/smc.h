/* smc.h: the shared state table of one shard and small-message multicast over it (SMC).
 *
 * Pure protocol logic: no I/O of its own. Bytes reach other members only through the transport's
 * write(); the caller runs sq__smc_poll() whenever the table may have changed.
 *
 * Table layout: one row per member rank of the view, rows back to back, all fields little-endian.
 *   row header (SQ_SMC_OFF_RECEIVED + 8 per member + 32, rounded up to 64 bytes):
 *     u64 heartbeat     bumped every heartbeat period; others suspect a row that stops moving
 *     u64 num_sent      indexes this member has assigned (real and null messages), all pushed
 *     u64 delivered     global indexes delivered here: the next one to deliver
 *     u64 suspected     bit r: this member suspects rank r (only ever grows)
 *     u64 joins         bit p: transport peer p asked to join (only ever grows)
 *     u64 prepare       ballot this member leads with, when it is the leader
 *     u64 prop[21]      the leader's proposal: ballot, removed ranks, added peers, trim,
 *                       trims[SQ_MAX_SHARDS] (one per shard of the layout), check
 *     u64 acc[21]       the proposal this member accepted, same fields
 *     u64 received[n]   per sender rank: how many of that sender's messages arrived here
 *     u64 prefix[8]     per subgroup: the global index up to which I received everything in
 *                       my shard of it, frozen when I wedge (control table only)
 *     u64 ack[8]        per subgroup: state chunks a newcomer has taken in this view (control
 *                       table only; see group.c)
 *     u64 have[8]       per subgroup: a newcomer's log already holds versions up to have - 1
 *     u64 have_ts[8]    ... and the timestamp of that last version (0, 0: its log is empty)
 *     u64 wedged        1 once this member froze its counters for a view change
 *     u64 promise       view-change ballot this member follows (see view.c)
 *     u64 learned       1 once this member knows the decision (then acc holds it)
 *     u64 persisted     persistent shards: 1 + the highest version on disk here (0: none)
 *     u64 row_tag       hash(view id, rank), the header's last field: a row whose tag is not this
 *                       view's is stale (the memory is reused every other view) and reads as 0
 *   then window_size slots of slot_size bytes each:
 *     [payload area, align8(max_payload) bytes; a payload of size s is right-aligned, i.e. it
 *      starts align8(s) bytes before the trailer] [trailer: u64 timestamp (the sender's hybrid
 *      clock), u64 index, u32 size, u32 flags, u64 tag = hash(view id, sender rank, slot number)]
 * A sender puts its z-th real message in slot z % window_size and writes the tag last, so a
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

#include "config.h"
#include "squall.h"
#include "transport.h"

#define SQ_SMC_MAX_MEMBERS 32
/* At most this many global indexes are delivered per poll, so one poll is bounded work. */
#define SQ_SMC_MAX_DELIVER_BATCH 4096u

#define SQ_SMC_TRAILER_BYTES 32u
#define SQ_SMC_OFF_HEARTBEAT 0u
#define SQ_SMC_OFF_NUM_SENT 8u
#define SQ_SMC_OFF_DELIVERED 16u
#define SQ_SMC_OFF_SUSPECTED 24u
#define SQ_SMC_OFF_JOINS 32u
#define SQ_SMC_OFF_PREPARE 40u
#define SQ_SMC_VALUE_WORDS (5u + SQ_MAX_SHARDS)
#define SQ_SMC_OFF_PROP 48u
#define SQ_SMC_OFF_ACC (SQ_SMC_OFF_PROP + 8u * SQ_SMC_VALUE_WORDS)
#define SQ_SMC_OFF_RECEIVED (SQ_SMC_OFF_ACC + 8u * SQ_SMC_VALUE_WORDS)
/* After received[n]: prefix, ack, have, have_ts (SQ_MAX_SUBGROUPS each), wedged, promise, learned,
 * view_tag (see sq__smc_layout). A reader that sees one of them written sees every earlier field of
 * the same header write: wedged vouches for the frozen counters, promise for the accepted value,
 * the view tag for everything. */

/* A view-change proposal: which ranks leave, which transport peers join, and the global index up
 * to which (exclusive) every survivor delivers in the old view. `check` guards against reading a
 * half-landed copy. */
struct sq__vc_value {
    uint64_t ballot;
    uint64_t removed;
    uint64_t added;
    uint64_t trim;
    uint64_t trims[SQ_MAX_SHARDS]; /* per shard (flat number): its trim, like `trim` */
    uint64_t check;
};

/* Where a shard is in its view's life. */
enum sq__smc_phase {
    SQ_SMC_RUNNING,  /* normal multicast */
    SQ_SMC_CHANGING, /* wedged: agreeing on the next view */
    SQ_SMC_READY,    /* delivered up to the agreed trim: the caller installs the next view */
    SQ_SMC_STOPPED,  /* this member must stop: see `stop_reason` */
};

struct sq__smc_params {
    uint32_t nmembers;
    uint32_t my_rank;
    uint32_t window_size;
    uint32_t max_payload;
    uint32_t view_id;
    const uint32_t *member_ids;   /* nmembers ids by rank; copied */
    const uint32_t *member_peers; /* nmembers transport peer indexes by rank (NULL: the rank) */
    size_t region_offset;         /* where this view's table starts in the transport's memory */
    uint32_t npeers;              /* every configured member, by transport peer index... */
    const uint32_t *peer_ids;     /* ...and its id (NULL: the members of this view only) */
    uint64_t now_us;              /* the caller's clock at the start of the view */
    /* suspect a member whose heartbeat stalls this long (0: never) */
    uint64_t heartbeat_timeout_us;
    bool data_only;          /* a shard's table: no heartbeats, no view protocol of its own */
    uint64_t last_timestamp; /* of the shard's last delivery before this view */
    uint32_t subgroup;       /* reported in delivered messages */
    uint32_t shard;
};

struct sq__smc_layout {
    uint32_t nmembers;
    uint32_t window_size;
    uint32_t max_payload;
    size_t header_bytes;
    size_t off_prefix;
    size_t off_ack;
    size_t off_have;
    size_t off_have_ts;
    size_t off_wedged;
    size_t off_promise;
    size_t off_learned;
    size_t off_persisted;
    size_t slot_bytes;
    size_t row_bytes;
    size_t table_bytes;
};

struct sq__smc {
    struct sq__smc_layout L;
    uint32_t my_rank;
    uint32_t view_id;
    uint32_t member_ids[SQ_SMC_MAX_MEMBERS];
    uint32_t member_peers[SQ_SMC_MAX_MEMBERS];
    uint32_t npeers;
    uint32_t peer_ids[SQ_SMC_MAX_MEMBERS];
    uint64_t row_tags[SQ_SMC_MAX_MEMBERS]; /* see smc.c: tags of this view */
    uint64_t slot_tag_base[SQ_SMC_MAX_MEMBERS];
    size_t region_offset;
    uint8_t *table; /* this view's table: the transport's memory + region_offset */
    struct sq_transport *t;
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
    bool data_only;
    bool hold;      /* a newcomer waiting for its shard's state: receives, delivers nothing */
    uint64_t stamp; /* the sender's clock for the next commit (microseconds) */
    uint64_t last_timestamp; /* of the last delivery: timestamps never go backwards */
    uint32_t subgroup, shard;
    int failed; /* first error, sticky */
    char errmsg[160];

    /* failure detection */
    uint64_t hb_timeout_us, hb_period_us, last_hb_us, now_us;
    uint64_t seen_hb[SQ_SMC_MAX_MEMBERS];
    uint64_t seen_hb_at_us[SQ_SMC_MAX_MEMBERS];

    /* view change (view.c) */
    enum sq__smc_phase phase;
    uint64_t suspected; /* mirrors my row */
    uint64_t joins;     /* mirrors my row */
    uint64_t promise;
    struct sq__vc_value prop, acc, decision;
    int stop_reason;     /* SQ_EPARTITIONED, SQ_EREMOVED or SQ_ELEFT once phase is STOPPED */
    uint64_t dropped;    /* my real messages beyond the trim: never delivered */
    uint64_t vc_adopted; /* times this member, leading, carried an earlier leader's value */
    /* If set, called before this member accepts a proposal (a next view): nonzero (an error)
     * and it does not accept it. The member records on disk what it accepts (restart.h). */
    int (*on_accept)(void *arg, const struct sq__vc_value *v);
    void *on_accept_arg;
    bool leaving;
    uint64_t fence_since_us; /* when this member began waiting for the rows of the next view */
    uint64_t fence_cut;      /* ranks whose links the caller must close at installation */

    /* The control table's shards (NULL where this member has none): view.c freezes them when
     * it wedges, publishes their prefixes and hands each its trim once the change is decided. */
    uint32_t nsubgroups;
    struct sq__smc *shards[SQ_MAX_SUBGROUPS];
    uint8_t shard_of[SQ_MAX_SUBGROUPS][SQ_SMC_MAX_MEMBERS]; /* flat shard of each rank, or 0xFF */
};

/* Reads a monotonic or tag column of a remote row; the acquire pairs with the writer's order. */
static inline uint64_t sq__load_u64(const uint8_t *p)
{
    return __atomic_load_n((const uint64_t *)(const void *)p, __ATOMIC_ACQUIRE);
}

static inline void sq__store_u64(uint8_t *p, uint64_t v)
{
    __atomic_store_n((uint64_t *)(void *)p, v, __ATOMIC_RELEASE);
}

/* Row `rank` of the view's table. */
static inline uint8_t *sq__smc_row(const struct sq__smc *s, uint32_t rank)
{
    return s->table + (size_t)rank * s->L.row_bytes;
}

/* True when row `rank` was written in this view (its header's view tag matches). */
bool sq__smc_row_valid(const struct sq__smc *s, uint32_t rank);

/* A column of row `rank`: 0 when the row is stale (not of this view); my own row is always
 * current. */
uint64_t sq__smc_col(const struct sq__smc *s, uint32_t rank, size_t off);

/* The first global index that member `rank` has not received with everything before it:
 * min over senders r of received[r] * n + r (0 for a stale row). */
uint64_t sq__smc_prefix(const struct sq__smc *s, uint32_t rank);

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
/* Marks the open reservation with message flags (SQ_MSG_ORDERED_CALL). */
void sq__smc_set_flags(struct sq__smc *s, uint32_t flags);

/* Sends the reserved slot: assigns its index. SQ_EVIEWCHANGE when the view started changing
 * since the reservation: the message is not sent, reserve again once the next view is in. The next
 * poll writes the slot to every peer, then the header that counts it; commit itself makes no
 * transport call. */
int sq__smc_commit(struct sq__smc *s);

/* Evaluates every predicate once: consumes arrived slots, fills nulls when others are ahead,
 * delivers up to SQ_SMC_MAX_DELIVER_BATCH stable messages, and writes new slots and my row
 * header (if it changed) through the transport. The caller then flushes the transport, outside
 * any lock it holds, since flushing makes system calls. Returns the number of things that happened
 * (0: idle), or a negative error (sticky: the shard cannot go on, see s->errmsg). */
int sq__smc_poll(struct sq__smc *s);

/* Advances the shard's clock: bumps my heartbeat every heartbeat period and suspects members
 * whose heartbeat has not moved for the timeout. Call it at least every period; the next poll
 * pushes the result. */
void sq__smc_tick(struct sq__smc *s, uint64_t now_us);

/* Suspects member `rank` (a transport error, say). Suspicions are never retracted. */
void sq__smc_suspect(struct sq__smc *s, uint32_t rank);

/* Asks the group to add transport peer `peer` (a member that connected to join) in the next
 * view; if an older incarnation of it is still a member, that one is removed in the same change. */
void sq__smc_request_join(struct sq__smc *s, uint32_t peer);

/* Asks to leave: this member suspects itself, which every other member adopts, so the next
 * view leaves it out; this member stops with SQ_ELEFT. */
void sq__smc_leave(struct sq__smc *s);

/* Once phase is SQ_SMC_READY, the caller closes the links to the removed ranks and to the ranks
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

/* Hands a shard table the decided change of its control table: freezes it if it was not yet and
 * sets its trim (and removes the ranks whose transport peers are in `removed_peers`). */
void sq__smc_decide_shard(struct sq__smc *shard, uint64_t ballot, uint64_t removed_peers,
                          uint64_t trim);

/* True when a reserve() would not get SQ_EAGAIN for lack of a free slot. */
bool sq__smc_can_send(struct sq__smc *s);

#endif
