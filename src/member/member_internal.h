/* member_internal.h: what the parts of the member runtime (src/member/) share: the member's
 * state and the calls between the parts.
 *
 *   api.c      the public sq_member_* API: open and close, callbacks, send, drain, leave, logs
 *   start.c    start, join and restart: kept logs, the transport, the first view, the welcome
 *   loop.c     the event-loop thread: polls the group, installs views, turns links into joins
 *              and suspicions, keeps the restart guard
 *   persist.c  what a restart needs on disk: the persistence thread and the view file
 *   calls.c    point-to-point queries and ordered calls, and their replies
 *
 * m->mu guards the group, the state and errmsg: the loop thread holds it except while it flushes
 * and waits on the transport, and the API takes it (see api_lock in api.c). */
#ifndef SQ_MEMBER_INTERNAL_H
#define SQ_MEMBER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "group.h"
#include "p2p.h"
#include "restart.h"
#include "squall.h"

enum member_state { ST_OPEN, ST_RUNNING, ST_FAILED, ST_CLOSING };

/* Queries a member may have waiting for answers at once. */
#define MAX_QUERIES 64
/* Ordered calls a member may have waiting for replies at once, and replies to others' calls
 * waiting for room in a p2p ring. */
#define MAX_CALLS 16
#define MAX_REPLY_BACKLOG 1024

struct sq_member {
    struct sq_config cfg;
    uint32_t rank;
    uint8_t *table;
    size_t table_bytes;
    struct sq_transport *t;
    struct sq__group g; /* the control table, my shards, layouts and state handovers */
    bool g_ready;
    uint32_t reserve_view[SQ_MAX_SUBGROUPS]; /* view of each subgroup's open reservation */
    sq_deliver_fn deliver;
    void *deliver_arg;
    sq_view_fn on_view;
    void *on_view_arg;
    _Atomic int failure;               /* why the member stopped, 0 while running (any thread) */
    uint32_t peer_ids[SQ_MAX_MEMBERS]; /* configured ids by transport peer index */
    uint32_t self_peer;
    uint64_t pending_joins; /* peers that asked to join and are not in a view yet */
    /* Links from peers of the current view: the member itself, admitted through another member
     * before its link to this one came up, or a restarted process. Its row tells: a heartbeat
     * that moves is the member; one that stays still for a heartbeat timeout, a process that
     * is gone. */
    uint64_t doubtful_joins;
    uint64_t doubt_hb[SQ_MAX_MEMBERS];
    uint64_t doubt_since_us[SQ_MAX_MEMBERS];
    uint64_t last_note_us; /* the loop's last look at new links (its own stalls are forgiven) */
    size_t p2p_off;        /* after the group's memory: the point-to-point rings */
    struct sq__p2p p2p;
    bool p2p_ready;
    sq_query_fn on_query;
    void *on_query_arg;
    uint64_t next_query_id;
    struct pending_query {
        uint64_t id; /* 0: free */
        uint32_t peer;
        bool done;
        int rc;
        void *reply;
        size_t cap;
        size_t len;
    } queries[MAX_QUERIES];
    sq_call_fn on_call;
    void *on_call_arg;
    uint64_t next_call_id;
    struct pending_call {
        uint64_t id;    /* 0: free */
        bool delivered; /* here, in the total order: the expected repliers are known */
        bool done;
        int rc;
        uint64_t expect; /* peers that must answer (the view at delivery) */
        uint64_t got;
        sq_reply *replies;
        uint32_t max, n;
    } calls[MAX_CALLS];
    struct backlog_reply {
        uint32_t peer;
        uint64_t id;
        size_t len;
        uint8_t *bytes;
    } * backlog;
    uint32_t nbacklog;

    /* The persistence thread: writes and syncs the logs of persistent subgroups, so that the
     * event loop never waits for the disk. */
    pthread_t flusher;
    bool flusher_started;
    pthread_mutex_t pmu; /* guards the two flags below */
    pthread_cond_t pcv;
    bool pwork, pstop;
    _Atomic int persist_failed;
    bool offline_logs; /* sq_member_open_logs: logs opened for reading only */
    struct sq__plog *found[SQ_MAX_SUBGROUPS]; /* logs found at start, handed to the group */
    uint32_t found_shard[SQ_MAX_SUBGROUPS];
    /* The view file (restart.h): what it says now, whether a view installed since it was last
     * written, and, per subgroup, a handed-over log not yet durable (and 1 + its last version). */
    struct sq__viewfile vf;
    bool vf_dirty;
    bool vf_pending[SQ_MAX_SUBGROUPS];
    uint64_t vf_want[SQ_MAX_SUBGROUPS];
    /* The first view of a restart from the disks: until every member of it has written its row
     * here, no view change may follow (two would-be leaders could otherwise each go on with
     * part of the group). */
    bool restart_guard;
    uint64_t restart_guard_until_ms; /* a member of that view not there by then ends this one */

    pthread_mutex_t mu; /* guards smc, state and errmsg */
    pthread_cond_t cv;  /* signalled on delivery progress, failure and close */
    int waiters; /* threads in sq__member_wait_progress: the loop signals only when there are some
                  */
    pthread_t loop;
    /* read without the lock by any thread (sq__member_in_loop_thread): loop_self is written
     * before loop_started is set */
    atomic_bool loop_started;
    pthread_t loop_self;
    enum member_state state;
    _Atomic uint64_t delivered;
    char errmsg[256];
};

/* api.c */

/* Sets the member's error message (what sq_member_errmsg returns). */
void sq__member_set_error(sq_member *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* True on the event-loop thread (the delivery callback runs there, with m->mu held). */
bool sq__member_in_loop_thread(const sq_member *m);
/* With m->mu held: waits for delivery progress (bounded); SQ_EAGAIN at once with
 * SQ_SEND_NONBLOCK or on the loop thread, else 0. */
int sq__member_wait_progress(sq_member *m, int flags);
/* 0 while the member runs, else SQ_ESTATE (not started) or SQ_ECLOSED. */
int sq__member_check_running(sq_member *m);
/* With m->mu held: reserves / commits a slot in my shard of subgroup `sg` (see api.c). */
int sq__member_reserve_locked(sq_member *m, uint32_t sg, size_t size, void **buf, int flags);
int sq__member_commit_locked(sq_member *m, uint32_t sg);

/* start.c */

/* Opens this member's log of shard k of subgroup s if an earlier run left one: 1 (and *out),
 * 0 when there is none, or an error (with the member's error message set). */
int sq__member_open_kept_log(sq_member *m, uint32_t s, uint32_t k, struct sq__plog **out);

/* loop.c */

/* The group's delivery callback (the loop thread): replays, ordered calls and deliveries. */
void sq__member_on_deliver(void *arg, const sq_message *msg);
/* Starts the event loop over the view already set up in m->g. */
int sq__member_run_loop(sq_member *m);

/* persist.c */

/* True when some subgroup is persistent (then the member keeps a view file and a flusher). */
bool sq__member_any_persistent(const sq_member *m);
/* A view was set up: the view file is to be rewritten (see persist.c). */
void sq__member_note_view(sq_member *m);
/* Writes the view file when what it should say changed; 0 or the write error. */
int sq__member_save_view(sq_member *m);
/* The group's on_accept callback: records a proposed next view in the view file first. */
int sq__member_record_accept(void *arg, const struct sq__vc_value *v);
/* The persistence thread's body (arg: the member). */
void *sq__member_flusher_main(void *arg);

/* calls.c */

/* Runs the ordered-call handler for a call delivered here and answers the caller. */
void sq__member_handle_call(sq_member *m, const sq_message *msg);
/* Ends the queries waiting for an answer from `peer` with SQ_EPEER. */
void sq__member_fail_queries_to(sq_member *m, uint32_t peer);
/* Answers queries and takes replies from every connected member; returns what it handled. */
int sq__member_serve_p2p(sq_member *m);
/* Before the next view installs (its members by peer: `next_peers`): ends the ordered calls the
 * view change decided on. */
void sq__member_settle_calls(sq_member *m, uint64_t next_peers);

#endif
