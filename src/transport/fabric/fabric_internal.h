/* fabric_internal.h: what the two halves of the libfabric transport share: its state (struct
 * fabric, a struct peer for each member) and the calls between fabric.c (fabric objects, RMA
 * writes, waiting, teardown) and fabric_connect.c (hellos, connecting and accepting, the set-up
 * rounds, the event queue while running), with fabric_hello.c (what a hello holds and how one is
 * checked). One thread makes every call (see fabric.c). */
#ifndef SQ_FABRIC_INTERNAL_H
#define SQ_FABRIC_INTERNAL_H

#include <rdma/fabric.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "transport.h"

#define FI_API_VERSION FI_VERSION(1, 9)
/* Bounds: CQ entries read per call, adjacent-write merge gap, connect retry period. */
#define CQ_BATCH 64
#define MERGE_GAP_BYTES 4096u
#define RETRY_MS 100
#define MR_KEY_BASE 0x5c000u
/* Unanswered handshake challenges kept per claimed member, and for how long. */
#define CHALLENGES_PER_RANK 16
#define CHALLENGE_TTL_MS 10000
/* Most ranges one write carries (fi_writemsg with several local and remote iovs), where the
 * provider takes more than one (tx_attr->rma_iov_limit: 4 on tcp, 1 on verbs). */
#define MAX_WRITE_IOV 4u

struct range {
    size_t off, len;
    int64_t stage; /* staging entry holding the bytes (write_copy), or -1: send in place */
    size_t src;    /* in place: where the bytes are in local memory (usually off) */
};

enum peer_state { P_IDLE, P_CONNECTING, P_ACCEPTING, P_UP, P_FAILED };

struct peer {
    uint32_t rank;
    uint32_t id;
    enum peer_state state;
    struct fid_ep *ep;
    uint64_t retry_at_ms;
    uint64_t remote_key;
    uint64_t remote_base;
    uint64_t incarnation; /* of the process at the other end of ep (0: none yet) */
    uint32_t outstanding; /* posted writes not yet completed */
    struct range *pending;
    uint32_t npending, cap;
    /* Staging ring for write_copy: entries are taken in posting order and given back in
     * completion order (the provider completes an endpoint's writes in order). */
    uint8_t *stage;
    uint64_t stage_head, stage_tail;
    uint32_t stage_slots;
    /* Connecting with a group key (fabric_connect.c): the acceptor's challenge to answer (and,
     * once answered, the one its accept must be sealed for) and the nonce of our answer. */
    uint8_t challenge[16];
    uint8_t my_nonce[16];
    bool have_challenge;
    bool answered; /* the attempt under way carries a sealed answer (only it may be accepted) */
    /* Completion contexts: which kind of write finished, and for whom. */
    struct fi_context ctx_inplace;
    struct fi_context ctx_copy;
};

struct fabric {
    struct sq_transport base;
    const struct sq_config *cfg;
    struct fi_info *info; /* of our passive (listening) endpoint */
    struct fid_fabric *fabric;
    struct fid_domain *domain;
    struct fid_eq *eq;
    struct fid_cq *cq;
    struct fid_pep *pep;
    struct fid_mr *mr;
    void *mr_desc;
    struct fid_mr *stage_mr; /* all peers' staging rings, one local region */
    void *stage_desc;
    uint8_t *stage_mem;
    uint8_t *table;
    size_t table_bytes;
    uint64_t digest;
    uint64_t incarnation; /* ours */
    bool virt_addr;
    bool cq_data;
    uint32_t tx_size;
    uint32_t write_iov; /* ranges one write may carry: 1..MAX_WRITE_IOV */
    int cq_fd;
    int epfd;
    int wakefd;
    _Atomic int wake_pending; /* an eventfd write is outstanding: further wakes are free */
    bool rx_seen;             /* a peer's write completed since the last wait() returned */
    uint64_t failed;          /* peers whose link failed (bit = config rank) */
    bool joining;             /* this member joins a running group */
    bool restarting; /* forming from views some member kept on disk: the caller forms view 0 */
    bool running;    /* the group runs: accept members that (re)join */
    uint32_t view_id;
    uint64_t view_peers;
    uint64_t joined;        /* peers that connected to join, not yet reported */
    uint64_t contact_peers; /* joining: the view a running member told us about */
    uint32_t contact_view;
    bool have_contact;
    int spin_us;
    struct peer peers[SQ_MAX_MEMBERS];
    /* Accepting with a group key: the challenges sent to each claimed member and not answered
     * yet (a few per rank, so that a stranger claiming a rank cannot starve the real member). */
    struct challenge {
        uint8_t nonce[16];
        uint64_t expires_ms; /* 0: free */
    } challenges[SQ_MAX_MEMBERS][CHALLENGES_PER_RANK];
    uint32_t challenge_next[SQ_MAX_MEMBERS];
    struct sq_log_tail tails[SQ_MAX_MEMBERS]; /* by rank, from the hellos */
    char *err;
    size_t err_size;
};

/* fabric.c */

/* Writes the error message into the caller's buffer (during sq__fabric_create); returns rc. */
int sq__fabric_fail(struct fabric *f, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The fi_getinfo hints for cfg's provider and domain: a connected endpoint with RMA writes. NULL
 * when out of memory; the caller frees them (fi_freeinfo). */
struct fi_info *sq__fabric_hints(const struct sq_config *cfg);
/* Marks the link to `p` failed (reported through failed_peers) and drops its pending writes. */
void sq__fabric_mark_failed(struct fabric *f, struct peer *p);
/* Reads completions; returns how many were a peer's writes, or SQ_EPEER / SQ_ETRANSPORT. */
int sq__fabric_drain_cq(struct fabric *f);

/* fabric_connect.c */

/* Checks that the provider carries a whole hello as connection data; SQ_ETRANSPORT otherwise. */
int sq__fabric_check_cm_size(struct fabric *f);
/* Handles the connection events of a running member: closed links, (re)joining members. */
void sq__fabric_check_eq(struct fabric *f);
/* Connects to the group (forming, joining, or noticing a restart) within connect_timeout_ms. */
int sq__fabric_establish(struct fabric *f);

#endif
