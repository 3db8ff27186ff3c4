/* group.h: one member's share of the group, as pure protocol logic over the transport: the
 * control table (heartbeats, suspicions, view changes) of the whole view, one shard table per
 * subgroup this member serves, the shard layout of each view, and the moves of state that a new
 * layout needs. No threads and no clock of its own: src/member/ drives it on the fabric, the
 * simulations drive it on the sim transport.
 *
 * Memory (the transport's registered region), from offset 0:
 *   control tables, two (view v uses copy v % 2)
 *   per subgroup: two shard tables sized for the subgroup's largest shard
 *   welcome block (a joiner learns its first view here), handover records (one per subgroup)
 *   per subgroup: two buffers of max_state_bytes for the shard state a newcomer receives (or a
 *   donor sends); view v uses buffer v % 2, so a handover still in flight is never overwritten
 * sq__group_bytes() is the end; the caller may put its own areas after it. */
#ifndef SQ_GROUP_H
#define SQ_GROUP_H

#include <stdatomic.h>

#include "config.h"
#include "layout.h"
#include "persist/disk.h"
#include "persist/plog.h"
#include "smc.h"

#define SQ_WELCOME_BYTES 1024u
#define SQ_HANDOVER_BYTES 128u

struct sq__group_mem {
    size_t ctl_region;                  /* one control table */
    size_t sg_off[SQ_MAX_SUBGROUPS];    /* first of the subgroup's two shard tables */
    size_t sg_region[SQ_MAX_SUBGROUPS]; /* one shard table */
    size_t welcome_off;
    size_t handover_off; /* + SQ_HANDOVER_BYTES * subgroup */
    size_t state_off[SQ_MAX_SUBGROUPS][2];
    size_t end;
};

/* The first view a joiner is in, as the member of rank 0 writes it into the joiner's memory. */
struct sq__welcome {
    uint64_t magic;
    uint64_t view_id;
    uint64_t nmembers;
    uint64_t my_rank;
    uint64_t adequate;
    uint32_t ids[SQ_MAX_MEMBERS];
    uint32_t peers[SQ_MAX_MEMBERS];
    struct sq__assign assign;  /* the layout of that view */
    struct sq__assign holders; /* who held each shard's state before it */
    uint64_t restart;          /* 1: the first view of a restart from the disks */
    uint64_t check;            /* written last: vouches for the rest */
};

/* A donor's work for one subgroup: the shard's log (persistent subgroups) and then the
 * application state, both in chunks of up to max_state_bytes, to each newcomer in turn; each chunk
 * waits for the newcomer's acknowledgement in its control row. */
struct sq__donation {
    bool active;
    uint32_t view_id;
    uint32_t shard;
    uint32_t newcomers[SQ_MAX_MEMBERS]; /* control ranks */
    uint32_t nnew, cur;
    void *state; /* the application state at the view boundary */
    size_t state_size;
    size_t state_pos; /* of it, sent to the current newcomer */
    int state_status; /* 0, or 3: the state callback failed */
    uint64_t last_ts;
    uint64_t log_end; /* log entries to send: the ones before the view boundary */
    uint64_t pos;     /* next log entry for the current newcomer */
    uint32_t seq;     /* chunks sent to the current newcomer */
    bool in_flight, last_sent;
    bool started;       /* the current newcomer's log end is known: pos starts after it */
    bool diverged;      /* the current newcomer's log goes past mine: it cuts it back to... */
    uint64_t keep_next; /* ...1 + this version (0: all of it), whose timestamp is keep_ts */
    uint64_t keep_ts;
    uint64_t bytes_sent;
    uint64_t sent_records; /* to the current newcomer */
};

#define SQ_DURABLE_MARKS 16

struct sq__group {
    const struct sq_config *cfg;
    struct sq__suspicions suspicions;  /* the failure detector's counts, over every view */
    _Atomic uint64_t large_bytes_sent; /* large-message bytes written to others, over every view */
    struct sq__group_mem mem;
    uint8_t *base;
    struct sq_transport *t;
    uint32_t self_peer;
    uint64_t now_us;
    sq_deliver_fn deliver;
    void *deliver_arg;
    sq_state_save_fn save;
    sq_state_load_fn load;
    void *state_arg;
    sq_persisted_fn persisted;
    void *persisted_arg;
    struct sq_disk *disk;       /* where persistent shards keep their logs (NULL: the real one) */
    uint64_t (*clock_us)(void); /* if set, read when a view is set up (a replay takes time) */
    int (*on_accept)(void *arg, const struct sq__vc_value *v); /* handed to each control table */
    void *on_accept_arg;
    const uint32_t *peer_ids; /* configured ids by transport peer */

    struct sq__smc ctl;
    bool ctl_ready;
    struct sq__smc shard[SQ_MAX_SUBGROUPS];
    bool in_shard[SQ_MAX_SUBGROUPS];       /* shard[g] is set up */
    uint32_t shard_base[SQ_MAX_SUBGROUPS]; /* flat number of shard 0 of each subgroup */
    struct sq__assign assign;              /* this view's layout (by rank) */
    struct sq__assign holders; /* who holds each shard's state: the last adequate layout */
    bool adequate;
    char inadequate_why[128];
    /* newcomers: the view whose handover they wait for, and the donor's rank */
    bool awaiting[SQ_MAX_SUBGROUPS];
    uint32_t donor_rank[SQ_MAX_SUBGROUPS];
    uint32_t chunks_in[SQ_MAX_SUBGROUPS]; /* chunks taken so far */
    uint8_t *state_in[SQ_MAX_SUBGROUPS];  /* the application state's pieces so far (malloc) */
    size_t state_in_len[SQ_MAX_SUBGROUPS];
    uint64_t records_in[SQ_MAX_SUBGROUPS];
    struct sq__donation donation[SQ_MAX_SUBGROUPS];
    uint64_t last_ts[SQ_MAX_SUBGROUPS]; /* timestamp of my shard's last delivery, per subgroup */
    /* persistent subgroups: my shard's log (opened when I enter the shard, kept for good), 1 +
     * the highest version the flusher made durable, and 1 + the highest version durable at
     * every member of the shard (reported through `persisted`) */
    struct sq__plog *log[SQ_MAX_SUBGROUPS];
    uint32_t log_shard[SQ_MAX_SUBGROUPS]; /* the shard log[s] is of */
    bool log_ok[SQ_MAX_SUBGROUPS];        /* log[s] was checked against the layout */
    _Atomic uint64_t durable_next[SQ_MAX_SUBGROUPS];
    /* 1 + the version of my shard's last delivery, or of the last record of its history that
     * came with the log (any thread reads it: log reads stop there); records at or past it were
     * logged ahead of delivery */
    _Atomic uint64_t delivered_next[SQ_MAX_SUBGROUPS];
    /* The last SQ_DURABLE_MARKS advances of durable_next with their times (CLOCK_MONOTONIC µs),
     * written by the flusher, read by traces (sq__group_durable_time): each half is atomic, so
     * a reader racing a write may pair a value with its neighbour's time, never crash. */
    struct {
        _Atomic uint64_t next, at_us;
    } durable_mark[SQ_MAX_SUBGROUPS][SQ_DURABLE_MARKS];
    _Atomic uint32_t durable_marks[SQ_MAX_SUBGROUPS]; /* advances so far (ring position) */
    uint64_t frontier[SQ_MAX_SUBGROUPS];
    bool appended;     /* a delivery went into a log since the caller last looked */
    bool restart_view; /* the view was set up from a restart welcome */
    bool gate;         /* shards neither deliver nor persist (the caller's restart guard is up) */
    pthread_mutex_t durable_mu; /* the flusher's update of durable_next versus cutting a log */
    uint8_t *scratch; /* one payload read back from a log (handover, replay); grows as needed */
    size_t scratch_cap;
    uint64_t dropped;      /* my messages the last view change dropped, over all shards */
    uint64_t removed_mask; /* ranks of the previous view that the last change removed */
    int failed;
    char errmsg[192];
};

/* Computes the memory layout for `cfg`. Returns SQ_ECONFIG if a table is out of range. */
int sq__group_mem_layout(const struct sq_config *cfg, struct sq__group_mem *mem);

/* Sets `g` up (callbacks, memory, transport) without a view yet. */
void sq__group_init(struct sq__group *g, const struct sq_config *cfg, uint8_t *base,
                    struct sq_transport *t, uint32_t self_peer, const uint32_t *peer_ids,
                    uint64_t now_us);

/* Starts the first view: every configured member, ranks in config order. With `tails` (each
 * member's log tail, by rank, from the hellos) and logs from an earlier run somewhere, the group
 * restarts from them: its first view id follows the highest one logged, each member keeps the
 * shard its log is of, the longest log of each shard is the reference (members holding it
 * replay it to the application, flagged SQ_MSG_REPLAYED) and the others receive what they lack
 * from it. */
int sq__group_start_first(struct sq__group *g, const struct sq_log_tail *tails);

/* A restart from the disks, led by this member (see restart.h): starts the first view over the
 * members in `present` (by configured rank; tails by the same), after writing it into the
 * welcome block of every other one of them. */
int sq__group_start_restart(struct sq__group *g, uint32_t present, const struct sq_log_tail *tails);

/* Hands the group a log this member found when it started (before the first view). */
void sq__group_adopt_log(struct sq__group *g, uint32_t s, uint32_t k, struct sq__plog *log);

/* A restart welcome in this member's memory (not yet taken): true, and its members by peer. */
bool sq__group_peek_welcome(struct sq__group *g, uint32_t *peers);

/* A joiner: checks the welcome in its memory; 1 and starts that view if one has arrived, 0 if
 * not yet, or a negative error (a welcome that makes no sense). */
int sq__group_try_welcome(struct sq__group *g);

/* Runs every table once (tick, poll), checks for the state handovers this member waits for.
 * Returns the number of things that happened, or a negative error (see g->errmsg). After it,
 * check sq__group_phase(). */
int sq__group_poll(struct sq__group *g, uint64_t now_us);

/* When the next poll is due at the latest (the clock of sq__group_poll) for changes to this
 * member's rows that wait for a push (smc.c, "lazy changes"); UINT64_MAX when none do. */
uint64_t sq__group_lazy_deadline(const struct sq__group *g);

/* SQ_SST_RUNNING or CHANGING while the view runs; READY once the control table and every shard
 * delivered up to their trims (call sq__group_install); STOPPED (see g->ctl.sst.stop_reason). */
enum sq__sst_phase sq__group_phase(const struct sq__group *g);

/* Installs the decided next view: moves shard state to newcomers (as donor), welcomes joiners
 * (as rank 0), sets up the new tables. The caller closes removed links before. */
int sq__group_install(struct sq__group *g);

/* The shard table of subgroup `sg` this member sends in: NULL (and *why set) when it has none:
 * SQ_EAGAIN while the view is inadequate or changing, SQ_ENOTSUP when it stands by. */
struct sq__smc *sq__group_shard(struct sq__group *g, uint32_t sg, int *why);

void sq__group_fini(struct sq__group *g);

/* Before the next view of a persistent shard: cuts from my log, durably, the records logged ahead
 * of delivery that the view change trimmed (never delivered, so never reported persisted). 0 or
 * an error (the group failed). */
int sq__group_cut_undelivered(struct sq__group *g, uint32_t s);

/* Writes what my shard of persistent subgroup `sg` appended to its log and, with `sync`, makes it
 * durable; then tells the loop how far (durable_next). Safe from another thread than the one
 * polling. Returns 0 or the log's (sticky) error. */
int sq__group_flush_log(struct sq__group *g, uint32_t sg, bool sync, bool written_is_durable);

/* When this member's log of `sg` became durable past `version` (CLOCK_MONOTONIC µs), from the
 * last SQ_DURABLE_MARKS advances; 0 when not yet, or too long ago to tell. For traces. */
uint64_t sq__group_durable_time(const struct sq__group *g, uint32_t sg, uint64_t version);

/* Opens (and recovers) member `member_id`'s log of shard k of subgroup s, creating it if
 * needed, and reports what recovery cut in the log sink. Returns 0 or an error described in
 * `err` (damage names the file and offset). */
int sq__group_open_shard_log(const struct sq_config *cfg, struct sq_disk *disk, uint32_t member_id,
                             uint32_t s, uint32_t k, struct sq__plog **out, char *err,
                             size_t err_size);

/* Where member `member_id` keeps the log of shard k of subgroup s. */
void sq__group_log_dir(const struct sq_config *cfg, uint32_t member_id, uint32_t s, uint32_t k,
                       char *out, size_t cap);

/* Closes the logs (after the flusher stopped). */
void sq__group_close_logs(struct sq__group *g);

#endif
