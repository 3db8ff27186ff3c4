/* sst.h: the shared state table of one shard in one view: its row layout and columns, reading
 * other members' rows, and writing this member's own row and pushing it to the others.
 *
 * Pure protocol logic: no I/O of its own. Bytes reach other members only through the transport's
 * write(). The multicast (smc.h) and the view change (view.h) are both predicates over the table:
 * each reads the columns it needs here and writes its own row through this module.
 *
 * Table layout: one row per member rank of the view, rows back to back, all fields little-endian.
 *   row header (SQ_SST_OFF_RECEIVED + 8 per member + 32, rounded up to 64 bytes):
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
 *                       table only; see group_handover.c)
 *     u64 have[8]       per subgroup: a newcomer's log already holds versions up to have - 1
 *     u64 have_ts[8]    ... and the timestamp of that last version (0, 0: its log is empty)
 *     u64 wedged        1 once this member froze its counters for a view change
 *     u64 promise       view-change ballot this member follows (see view.c)
 *     u64 learned       1 once this member knows the decision (then acc holds it)
 *     u64 persisted     persistent shards: 1 + the highest version on disk here (0: none)
 *     u64 row_tag       hash(view id, rank), the header's last field: a row whose tag is not this
 *                       view's is stale (the memory is reused every other view) and reads as 0
 *   then window_size slots of slot_size bytes each:
 *     [payload area, align8(max_smc_payload) bytes; a payload of size s is right-aligned, i.e. it
 *      starts align8(s) bytes before the trailer] [trailer: u64 timestamp (the sender's hybrid
 *      clock), u64 index, u32 size, u32 flags, u64 tag = hash(view id, sender rank, slot number)]
 *   then, when the table has a large-message area, per sender rank r a forwarding word pair:
 *     u64 fwd[r]        how far into sender r's large stream this member has written to the
 *                       members it forwards r's stream to (see smc.c, large messages)
 *     u64 fwd_check[r]  hash(view, this rank, r, fwd[r]): a torn or stale pair never matches
 * A sender puts its z-th real message in slot z % window_size and writes the tag last, so a
 * reader that sees the tag knows the whole slot arrived (writes land in address order).
 *
 * Large-message area (only when max_payload > max_smc_payload), after every row, page-aligned:
 * one ring of large_ring_bytes per sender rank, at the same offset at every member. A message
 * above max_smc_payload lies contiguously in its sender's ring; its slot carries only its stream
 * position (u64) as payload, with SQ__SMC_FLAG_LARGE in the trailer flags. */
#ifndef SQ_SST_H
#define SQ_SST_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "squall.h"
#include "transport.h"

#define SQ_SST_MAX_MEMBERS 32
/* Largest ring of one sender's large messages (see the large-message area above). */
#define SQ_SST_MAX_RING_BYTES (4ull << 30)

#define SQ_SST_TRAILER_BYTES 32u
#define SQ_SST_OFF_HEARTBEAT 0u
#define SQ_SST_OFF_NUM_SENT 8u
#define SQ_SST_OFF_DELIVERED 16u
#define SQ_SST_OFF_SUSPECTED 24u
#define SQ_SST_OFF_JOINS 32u
#define SQ_SST_OFF_PREPARE 40u
#define SQ_SST_VALUE_WORDS (5u + SQ_MAX_SHARDS)
#define SQ_SST_OFF_PROP 48u
#define SQ_SST_OFF_ACC (SQ_SST_OFF_PROP + 8u * SQ_SST_VALUE_WORDS)
#define SQ_SST_OFF_RECEIVED (SQ_SST_OFF_ACC + 8u * SQ_SST_VALUE_WORDS)
/* After received[n]: prefix, ack, have, have_ts (SQ_MAX_SUBGROUPS each), wedged, promise, learned,
 * view_tag (see sq__sst_layout). A reader that sees one of them written sees every earlier field of
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
enum sq__sst_phase {
    SQ_SST_RUNNING,  /* normal multicast */
    SQ_SST_CHANGING, /* wedged: agreeing on the next view */
    SQ_SST_READY,    /* delivered up to the agreed trim: the caller installs the next view */
    SQ_SST_STOPPED,  /* this member must stop: see `stop_reason` */
};

/* What a table is set up from (sq__sst_init). */
struct sq__sst_params {
    uint32_t nmembers;
    uint32_t my_rank;
    uint32_t window_size;
    uint32_t max_payload;     /* the largest message */
    uint32_t max_smc_payload; /* larger ones take the large path (0: max_payload, no large path) */
    size_t large_ring_bytes;  /* each sender's ring for large messages (with a large path) */
    uint32_t view_id;
    const uint32_t *member_ids;   /* nmembers ids by rank; copied */
    const uint32_t *member_peers; /* nmembers transport peer indexes by rank (NULL: the rank) */
    size_t region_offset;         /* where this view's table starts in the transport's memory */
    uint32_t npeers;              /* every configured member, by transport peer index... */
    const uint32_t *peer_ids;     /* ...and its id (NULL: the members of this view only) */
};

struct sq__sst_layout {
    uint32_t nmembers;
    uint32_t window_size;
    uint32_t max_payload;
    uint32_t max_smc_payload; /* the slots' payload size: messages up to it go in a slot */
    size_t off_fwd;           /* in a row: the forwarding word pairs (large path only) */
    size_t large_off;         /* in the table: the rings (0: no large path) */
    size_t large_ring_bytes;
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

/* Why a member came to suspect another: counted, and logged with the details, so that an
 * operator can tell a crash (a closed link) from a stall (a heartbeat that stopped). */
enum sq__suspect_cause {
    SQ_SUSPECT_HEARTBEAT, /* its heartbeat stayed still past the timeout */
    SQ_SUSPECT_LINK,      /* the transport reported its link failed or closed */
    SQ_SUSPECT_RELAYED,   /* a member I do not suspect suspects it (adopted) */
    SQ_SUSPECT_CAUSES
};

/* A member's failure-detector counts over its life (atomics: read by other threads). */
struct sq__suspicions {
    _Atomic uint64_t by_cause[SQ_SUSPECT_CAUSES];
    _Atomic uint64_t own_stalls;       /* my loop did not run for half the timeout or more */
    _Atomic uint64_t longest_stall_us; /* the longest of those */
};

struct sq__sst {
    struct sq__sst_layout L;
    uint32_t my_rank;
    uint32_t view_id;
    uint32_t member_ids[SQ_SST_MAX_MEMBERS];
    uint32_t member_peers[SQ_SST_MAX_MEMBERS];
    uint32_t npeers;
    uint32_t peer_ids[SQ_SST_MAX_MEMBERS];
    uint64_t row_tags[SQ_SST_MAX_MEMBERS]; /* see sst.c: tags of this view */
    uint64_t slot_tag_base[SQ_SST_MAX_MEMBERS];
    size_t region_offset;
    uint8_t *table; /* this view's table: the transport's memory + region_offset */
    struct sq_transport *t;
    uint64_t received[SQ_SST_MAX_MEMBERS]; /* mirrors my row's received[] */
    bool header_dirty;
    /* My row changed in a way no other member waits on (see smc.c, "lazy changes"): it goes out
     * with the next push, or once it has waited long enough. */
    bool header_lazy;
    uint64_t lazy_since_us;    /* when the oldest change not pushed yet was made */
    uint64_t pushed_prefix;    /* sq__sst_prefix of my row as of my last header push */
    uint64_t pushed_delivered; /* my delivered column as of my last header push */
    int failed; /* first error, sticky */
    char errmsg[160];

    struct sq__suspicions *counts; /* where suspicions are counted (NULL: not counted) */

    /* view change (view.c) */
    enum sq__sst_phase phase;
    uint64_t suspected; /* mirrors my row */
    uint64_t joins;     /* mirrors my row */
    uint64_t promise;
    struct sq__vc_value prop, acc, decision;
    int stop_reason;     /* SQ_EPARTITIONED, SQ_EREMOVED or SQ_ELEFT once phase is STOPPED */
    uint64_t vc_adopted; /* times this member, leading, carried an earlier leader's value */
    /* If set, called before this member accepts a proposal (a next view): nonzero (an error)
     * and it does not accept it. The member records on disk what it accepts (restart.h). */
    int (*on_accept)(void *arg, const struct sq__vc_value *v);
    void *on_accept_arg;
    bool leaving;
    /* The protocol that changes a control table's view (view.h's sq__view_attach sets it; NULL
     * on a shard's table): each poll of the table (sq__smc_poll) runs it once, after taking in
     * what arrived and before delivering. Returns what changed, or a negative error. */
    int (*control_step)(struct sq__sst *s);

    /* The control table's shards (NULL where this member has none): view.c freezes them when
     * it wedges, publishes their prefixes and hands each its trim once the change is decided. */
    uint32_t nsubgroups;
    struct sq__sst *shards[SQ_MAX_SUBGROUPS];
    uint8_t shard_of[SQ_MAX_SUBGROUPS][SQ_SST_MAX_MEMBERS]; /* flat shard of each rank, or 0xFF */
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
static inline uint8_t *sq__sst_row(const struct sq__sst *s, uint32_t rank)
{
    return s->table + (size_t)rank * s->L.row_bytes;
}

/* Offset of a table pointer in the transport's memory. */
static inline size_t sq__sst_offset(const struct sq__sst *s, const uint8_t *p)
{
    return s->region_offset + (size_t)(p - s->table);
}

/* True when row `rank` was written in this view (its header's view tag matches). */
bool sq__sst_row_valid(const struct sq__sst *s, uint32_t rank);

/* A column of row `rank`: 0 when the row is stale (not of this view); my own row is always
 * current. */
uint64_t sq__sst_col(const struct sq__sst *s, uint32_t rank, size_t off);

/* The first global index that member `rank` has not received with everything before it:
 * min over senders r of received[r] * n + r (0 for a stale row). */
uint64_t sq__sst_prefix(const struct sq__sst *s, uint32_t rank);

/* Computes the table layout for these parameters, without a large-message path (every message
 * fits a slot). Returns SQ_EINVAL for out-of-range values. */
int sq__sst_layout(struct sq__sst_layout *L, uint32_t nmembers, uint32_t window_size,
                   uint32_t max_payload);

/* The same with a large-message path when max_payload > max_smc_payload: slots of
 * max_smc_payload (at least 8, for a large message's stream position), and a ring of
 * `ring_bytes` per sender (at least max_payload, rounded up to a page). max_smc_payload 0 or
 * >= max_payload: no large path. */
int sq__sst_layout_large(struct sq__sst_layout *L, uint32_t nmembers, uint32_t window_size,
                         uint32_t max_payload, uint32_t max_smc_payload, size_t ring_bytes);

/* True when the layout has a large-message path. */
static inline bool sq__sst_has_large(const struct sq__sst_layout *L)
{
    return L->large_off != 0;
}

/* Initializes `s` over `table` (L.table_bytes, owned by the caller and outliving `s`), writing
 * through `t`: my row header starts from zero with this view's tag, the phase is SQ_SST_RUNNING.
 * Returns 0 or SQ_EINVAL. */
int sq__sst_init(struct sq__sst *s, const struct sq__sst_params *p, uint8_t *table,
                 struct sq_transport *t);

/* Records the first error (sticky) and its message; returns the sticky error. */
int sq__sst_fail(struct sq__sst *s, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Suspects member `rank`. Suspicions are never retracted. */
void sq__sst_suspect(struct sq__sst *s, uint32_t rank);

/* The same, for a reason of this member's own: unless `rank` is suspected already, logs at warn
 * "member A suspects member B in view V: <why>" and counts the cause. */
void sq__sst_suspect_why(struct sq__sst *s, uint32_t rank, enum sq__suspect_cause cause,
                         const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Asks the group to add transport peer `peer` (a member that connected to join) in the next
 * view; if an older incarnation of it is still a member, that one is removed in the same change. */
void sq__sst_request_join(struct sq__sst *s, uint32_t peer);

/* Writes bytes [off, off + len) of the transport's memory to every member I do not suspect (as a
 * copy with `copy`, see the transport's write_copy). A member whose link is gone is suspected.
 * Returns 0 or the sticky error. */
int sq__sst_push(struct sq__sst *s, size_t off, size_t len, bool copy);
/* The same to the members of `ranks` (bit r = rank r) only; returns how many it wrote to (>= 0)
 * or the sticky error. */
int sq__sst_push_to(struct sq__sst *s, uint64_t ranks, size_t off, size_t len, bool copy);

/* Pushes my row header to every member I do not suspect if it changed since the last push. */
int sq__sst_push_header(struct sq__sst *s);

#endif
