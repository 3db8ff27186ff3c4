/* fabric.c: the libfabric transport. Each pair of members shares one connected FI_EP_MSG endpoint
 * (the higher rank connects, the lower accepts); the whole table is one memory region; writes
 * are RMA writes, merged when adjacent, the last of each batch carrying remote CQ data so that an
 * idle peer blocked on its completion queue wakes. One thread (the member's loop) makes every
 * libfabric call; other threads only wake() it through an eventfd.
 *
 * Facts about the tcp provider this code relies on (libfabric 1.17): remote writes land only
 * while the target calls into its CQ, so wait() always reads the CQ before and after blocking;
 * the CQ's wait fd (FI_WAIT_FD) becomes readable on incoming data; a write to a dead peer still
 * returns 0 and fails later as a CQ error entry (FI_ENOTCONN); mr_mode may be 0, meaning remote
 * addresses are offsets and the requested key is used, so both FI_MR_VIRT_ADDR and provider keys
 * are handled. */
#include "fabric.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_eq.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_rma.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "hash.h"
#include "log.h"

#define FI_API_VERSION FI_VERSION(1, 9)
/* Bounds: CQ entries read per call, adjacent-write merge gap, connect retry period. */
#define CQ_BATCH 64
#define MERGE_GAP_BYTES 4096u
#define RETRY_MS 100
#define MR_KEY_BASE 0x5c000u

#define HELLO_MAGIC 0x4c4c5153u /* "SQLL" */
#define HELLO_VERSION 5u

/* Exchanged as connection private data, both ways. Little-endian on the wire (the build is
 * little-endian only, see common.h). */
struct hello {
    uint32_t magic;
    uint16_t version;
    uint16_t reject_reason; /* set only in fi_reject data */
    uint32_t id;
    uint32_t rank;
    uint64_t digest;
    uint64_t table_bytes;
    uint64_t mr_key;
    uint64_t mr_addr; /* base address, for FI_MR_VIRT_ADDR providers; 0 otherwise */
    uint32_t flags;   /* HELLO_JOINING from a member joining a running group, HELLO_RUNNING back */
    uint32_t view_id; /* with HELLO_RUNNING: the current view... */
    uint64_t view_peers;     /* ...and its members, by peer index */
    uint64_t incarnation;    /* random per process: tells a restarted member from a stale probe */
    struct sq_log_tail tail; /* what this member's logs hold (a restart goes on from them) */
};
static_assert(sizeof(struct hello) == 176, "hello is a wire format");

#define HELLO_JOINING 1u
#define HELLO_RUNNING 2u

/* This member's log tail: set before the transport starts, read-only after. */
static struct sq_log_tail g_my_tail = {.shard = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}};

enum reject_reason {
    REJ_NONE,
    REJ_BAD_HELLO,
    REJ_MISMATCH,
    REJ_DUPLICATE,
    REJ_UNKNOWN_MEMBER,
    REJ_NOT_RUNNING,
    REJ_PROBE
};
static const char *const reject_text[] = {
    "no reason",
    "malformed hello",
    "configuration mismatch (member list, subgroup or table size)",
    "already connected",
    "not a member of the configured group",
    "the group is still forming (start with the others, or join later)",
    "forming: the higher rank connects"};

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
    struct sq_log_tail tails[SQ_MAX_MEMBERS]; /* by rank, from the hellos */
    char *err;
    size_t err_size;
};

static int fail(struct fabric *f, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct fabric *f, int rc, const char *fmt, ...)
{
    if (f->err != NULL && f->err_size > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(f->err, f->err_size, fmt, ap);
        va_end(ap);
    }
    return rc;
}

static struct fi_info *make_hints(const struct sq_config *cfg)
{
    struct fi_info *h = fi_allocinfo();
    if (h == NULL) {
        return NULL;
    }
    h->ep_attr->type = FI_EP_MSG;
    h->caps = FI_RMA | FI_WRITE | FI_REMOTE_WRITE;
    h->mode = 0; /* we share one context per peer and kind of write: no FI_CONTEXT */
    /* What this code can handle; the provider answers with what it needs. */
    h->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY;
    h->domain_attr->threading = FI_THREAD_DOMAIN;
    h->fabric_attr->prov_name = strdup(cfg->provider);
    if (cfg->domain[0] != '\0') {
        h->domain_attr->name = strdup(cfg->domain);
    }
    h->addr_format = FI_SOCKADDR_IN;
    return h;
}

/* ---- writes ---- */

static void mark_failed(struct fabric *f, struct peer *p)
{
    if (p->state != P_FAILED) {
        p->state = P_FAILED;
        f->failed |= 1ull << p->rank;
    }
    p->npending = 0;
}

static struct peer *peer_of_ctx(struct fabric *f, void *ctx, bool *copy)
{
    for (uint32_t r = 0; r < f->base.nmembers; r++) {
        struct peer *p = &f->peers[r];
        if (ctx == &p->ctx_inplace || ctx == &p->ctx_copy) {
            if (copy != NULL) {
                *copy = ctx == &p->ctx_copy;
            }
            return p;
        }
    }
    return NULL;
}

/* Reads completions: tx ones free send-queue space, rx ones (remote CQ data) mean a peer wrote.
 * Returns the number of rx completions, or SQ_EPEER when a write to a peer failed. */
static int drain_cq(struct fabric *f)
{
    int rx = 0;
    for (;;) {
        struct fi_cq_data_entry e[CQ_BATCH];
        ssize_t n = fi_cq_read(f->cq, e, CQ_BATCH);
        if (n == -FI_EAGAIN) {
            return rx;
        }
        if (n == -FI_EAVAIL) {
            struct fi_cq_err_entry ee;
            memset(&ee, 0, sizeof(ee));
            if (fi_cq_readerr(f->cq, &ee, 0) < 0) {
                return SQ_ETRANSPORT;
            }
            bool copy = false;
            struct peer *p = peer_of_ctx(f, ee.op_context, &copy);
            if (p == NULL) {
                return SQ_ETRANSPORT;
            }
            if (p->state != P_FAILED) {
                sq__log(SQ_LOG_WARN, "write to member %u failed: %s", p->id, fi_strerror(ee.err));
            }
            mark_failed(f, p);
            p->outstanding = p->outstanding > 0 ? p->outstanding - 1 : 0;
            if (copy && p->stage_head < p->stage_tail) {
                p->stage_head++;
            }
            continue; /* the member leaves in the next view; the others go on */
        }
        if (n < 0) {
            return SQ_ETRANSPORT;
        }
        for (ssize_t i = 0; i < n; i++) {
            if (e[i].flags & FI_REMOTE_WRITE) {
                rx++;
            } else if (e[i].op_context != NULL) {
                bool copy = false;
                struct peer *p = peer_of_ctx(f, e[i].op_context, &copy);
                SQ_ASSERT(p != NULL);
                /* A write of a replaced connection may complete after the reset: ignore it. */
                if (p->outstanding > 0) {
                    p->outstanding--;
                }
                if (copy && p->stage_head < p->stage_tail) {
                    p->stage_head++;
                }
            }
        }
        if (rx > 0) {
            /* Whoever drained (flush, a full send queue), the next wait() must report it. */
            f->rx_seen = true;
        }
        if (n < CQ_BATCH) {
            return rx;
        }
    }
}

static int post_write(struct fabric *f, struct peer *p, const struct range *r, bool doorbell)
{
    uint64_t addr = (f->virt_addr ? p->remote_base : 0) + r->off;
    const void *src = f->table + r->src;
    void *desc = f->mr_desc;
    void *ctx = &p->ctx_inplace;
    if (r->stage >= 0) {
        src = p->stage + (size_t)(r->stage % p->stage_slots) * SQ_TRANSPORT_MAX_COPY;
        desc = f->stage_desc;
        ctx = &p->ctx_copy;
    }
    for (int tries = 0;; tries++) {
        if (p->state != P_UP) {
            return SQ_EPEER;
        }
        ssize_t rc;
        if (p->outstanding >= f->tx_size) {
            rc = -FI_EAGAIN;
        } else if (doorbell && f->cq_data) {
            rc = fi_writedata(p->ep, src, r->len, desc, 0, 0, addr, p->remote_key, ctx);
        } else {
            rc = fi_write(p->ep, src, r->len, desc, 0, addr, p->remote_key, ctx);
        }
        if (rc == 0) {
            p->outstanding++;
            return 0;
        }
        if (rc != -FI_EAGAIN) {
            sq__log(SQ_LOG_WARN, "fi_write to member %u: %s", p->id, fi_strerror((int)-rc));
            mark_failed(f, p);
            return SQ_EPEER;
        }
        /* Send queue full: make progress (which also lands incoming writes, so two members
         * flushing to each other cannot deadlock), then block briefly on the CQ. */
        int d = drain_cq(f);
        if (d < 0) {
            return d;
        }
        if (p->outstanding >= f->tx_size && tries > 16) {
            struct pollfd pfd = {.fd = f->cq_fd, .events = POLLIN};
            struct fid *fids[1] = {&f->cq->fid};
            if (fi_trywait(f->fabric, fids, 1) == FI_SUCCESS) {
                (void)poll(&pfd, 1, 10);
            }
        }
    }
}

static int post_pending(struct fabric *f, struct peer *p)
{
    for (uint32_t i = 0; i < p->npending; i++) {
        int rc = post_write(f, p, &p->pending[i], false);
        if (rc != 0) {
            return rc;
        }
    }
    p->npending = 0;
    return 0;
}

static int fab_write_at(struct sq_transport *t, uint32_t peer, size_t local_offset,
                        size_t remote_offset, size_t len)
{
    struct fabric *f = (struct fabric *)t;
    SQ_ASSERT(peer < t->nmembers);
    SQ_ASSERT(peer != t->my_rank);
    SQ_ASSERT(local_offset + len <= f->table_bytes);
    SQ_ASSERT(remote_offset + len <= f->table_bytes);
    struct peer *p = &f->peers[peer];
    if (p->state != P_UP) {
        return SQ_EPEER;
    }
    if (p->npending > 0 && local_offset == remote_offset) {
        struct range *last = &p->pending[p->npending - 1];
        size_t end = last->off + last->len;
        if (last->stage < 0 && last->src == last->off && remote_offset >= end &&
            remote_offset - end <= MERGE_GAP_BYTES) {
            /* Adjacent slots go as one write: it lands in address order, so each slot's tag
             * still arrives after its payload. */
            last->len = remote_offset + len - last->off;
            return 0;
        }
    }
    if (p->npending == p->cap) {
        /* More separate ranges than a window between flushes: post what we have. */
        int rc = post_pending(f, p);
        if (rc != 0) {
            return rc;
        }
    }
    p->pending[p->npending++] = (struct range){remote_offset, len, -1, local_offset};
    return 0;
}

static int fab_write(struct sq_transport *t, uint32_t peer, size_t offset, size_t len)
{
    return fab_write_at(t, peer, offset, offset, len);
}

static int fab_write_copy(struct sq_transport *t, uint32_t peer, size_t offset, size_t len)
{
    struct fabric *f = (struct fabric *)t;
    SQ_ASSERT(peer < t->nmembers);
    SQ_ASSERT(peer != t->my_rank);
    SQ_ASSERT(offset + len <= f->table_bytes);
    SQ_ASSERT(len <= SQ_TRANSPORT_MAX_COPY);
    struct peer *p = &f->peers[peer];
    if (p->state != P_UP) {
        return SQ_EPEER;
    }
    struct range *last = p->npending > 0 ? &p->pending[p->npending - 1] : NULL;
    if (last != NULL && last->stage >= 0 && last->off == offset && last->len == len) {
        /* Nothing was queued after it: refreshing its bytes equals sending both in turn. */
        memcpy(p->stage + (size_t)(last->stage % p->stage_slots) * SQ_TRANSPORT_MAX_COPY,
               f->table + offset, len);
        return 0;
    }
    if (p->npending == p->cap) {
        int rc = post_pending(f, p);
        if (rc != 0) {
            return rc;
        }
    }
    /* Every staged entry is either pending or posted and not complete, so the ring (one more
     * than the send queue plus the pending list) cannot be full. */
    SQ_ASSERT(p->stage_tail - p->stage_head < p->stage_slots);
    int64_t e = (int64_t)p->stage_tail++;
    memcpy(p->stage + (size_t)(e % p->stage_slots) * SQ_TRANSPORT_MAX_COPY, f->table + offset, len);
    p->pending[p->npending++] = (struct range){offset, len, e, offset};
    return 0;
}

static int fab_flush(struct sq_transport *t)
{
    struct fabric *f = (struct fabric *)t;
    int result = 0;
    for (uint32_t r = 0; r < t->nmembers; r++) {
        struct peer *p = &f->peers[r];
        for (uint32_t i = 0; i < p->npending && result == 0; i++) {
            result = post_write(f, p, &p->pending[i], i + 1 == p->npending);
        }
        p->npending = 0;
        if (result == SQ_EPEER) {
            result = 0; /* reported through failed_peers(); the other links carry on */
        }
    }
    if (result == 0) {
        int d = drain_cq(f); /* reap tx completions, keep the send queues short */
        result = d < 0 ? d : 0;
    }
    return result;
}

/* ---- waiting ---- */

static void consume_wake(struct fabric *f)
{
    uint64_t v;
    ssize_t rd = read(f->wakefd, &v, sizeof(v));
    (void)rd;
    atomic_store_explicit(&f->wake_pending, 0, memory_order_release);
}

static int fab_wait(struct sq_transport *t, int timeout_ms)
{
    struct fabric *f = (struct fabric *)t;
    int rx = drain_cq(f);
    if (rx < 0) {
        return rx;
    }
    bool seen = f->rx_seen;
    f->rx_seen = false;
    if (atomic_load_explicit(&f->wake_pending, memory_order_acquire)) {
        consume_wake(f);
        return 1;
    }
    if (seen || timeout_ms == 0) {
        return 1;
    }
    /* A short bounded spin catches the reply of a busy peer without a sleep and wake-up. */
    if (f->spin_us > 0) {
        uint64_t until = sq__mono_us() + (uint64_t)f->spin_us;
        while (sq__mono_us() < until) {
            rx = drain_cq(f);
            if (rx != 0 || atomic_load_explicit(&f->wake_pending, memory_order_acquire)) {
                f->rx_seen = false;
                return rx < 0 ? rx : 1;
            }
        }
    }
    struct fid *fids[1] = {&f->cq->fid};
    if (fi_trywait(f->fabric, fids, 1) == FI_SUCCESS) {
        struct epoll_event ev[4];
        int n = epoll_wait(f->epfd, ev, 4, timeout_ms);
        if (n < 0 && errno != EINTR) {
            return SQ_EIO;
        }
        for (int i = 0; i < n; i++) {
            if (ev[i].data.fd == f->wakefd) {
                consume_wake(f);
            }
        }
        if (n == 0) {
            rx = drain_cq(f);
            f->rx_seen = false;
            return rx < 0 ? rx : rx > 0;
        }
    }
    rx = drain_cq(f);
    f->rx_seen = false;
    return rx < 0 ? rx : 1;
}

static int on_connreq(struct fabric *f, struct fi_eq_cm_entry *e, size_t datalen);
static int on_connected(struct fabric *f, struct fi_eq_cm_entry *e, size_t datalen);

/* A peer that closed its connection (or died) shows up as FI_SHUTDOWN on the event queue. */
static void check_eq(struct fabric *f)
{
    union {
        struct fi_eq_cm_entry e;
        uint8_t raw[sizeof(struct fi_eq_cm_entry) + 256];
    } buf;
    for (int k = 0; k < 8; k++) {
        uint32_t event = 0;
        ssize_t rd = fi_eq_read(f->eq, &event, &buf, sizeof(buf), 0);
        if (rd == -FI_EAVAIL) {
            struct fi_eq_err_entry ee;
            memset(&ee, 0, sizeof(ee));
            (void)fi_eq_readerr(f->eq, &ee, 0);
            continue;
        }
        if (rd < 0) {
            return;
        }
        if (event == FI_SHUTDOWN) {
            for (uint32_t r = 0; r < f->base.nmembers; r++) {
                struct peer *p = &f->peers[r];
                if (p->ep != NULL && &p->ep->fid == buf.e.fid && p->state == P_UP) {
                    sq__log(SQ_LOG_WARN, "member %u closed its connection", p->id);
                    mark_failed(f, p);
                }
            }
        } else if (event == FI_CONNREQ) {
            size_t datalen = (size_t)rd > sizeof(buf.e) ? (size_t)rd - sizeof(buf.e) : 0;
            (void)on_connreq(f, &buf.e, datalen); /* a member (re)joining */
        } else if (event == FI_CONNECTED) {
            size_t datalen = (size_t)rd > sizeof(buf.e) ? (size_t)rd - sizeof(buf.e) : 0;
            (void)on_connected(f, &buf.e, datalen);
        }
    }
}

static uint64_t fab_failed_peers(struct sq_transport *t)
{
    struct fabric *f = (struct fabric *)t;
    check_eq(f);
    return f->failed;
}

static void fab_disconnect(struct sq_transport *t, uint32_t peer)
{
    struct fabric *f = (struct fabric *)t;
    SQ_ASSERT(peer < t->nmembers);
    struct peer *p = &f->peers[peer];
    if (p->ep != NULL) {
        fi_shutdown(p->ep, 0);
    }
    mark_failed(f, p);
}

static uint64_t fab_joined(struct sq_transport *t)
{
    struct fabric *f = (struct fabric *)t;
    check_eq(f);
    uint64_t j = f->joined;
    f->joined = 0;
    return j;
}

static void fab_set_view(struct sq_transport *t, uint32_t view_id, uint64_t peers)
{
    struct fabric *f = (struct fabric *)t;
    f->running = true;
    f->view_id = view_id;
    f->view_peers = peers;
}

static bool fab_joining(struct sq_transport *t)
{
    return ((struct fabric *)t)->joining;
}

static void fab_wake(struct sq_transport *t)
{
    struct fabric *f = (struct fabric *)t;
    /* Only the first wake since the loop last looked costs a system call. */
    if (atomic_exchange_explicit(&f->wake_pending, 1, memory_order_acq_rel) == 0) {
        uint64_t one = 1;
        ssize_t w = write(f->wakefd, &one, sizeof(one));
        (void)w;
    }
}

/* ---- teardown ---- */

static void close_fid(struct fid *fid)
{
    if (fid != NULL) {
        fi_close(fid);
    }
}

static void fab_destroy(struct sq_transport *t)
{
    struct fabric *f = (struct fabric *)t;
    if (f == NULL) {
        return;
    }
    for (uint32_t r = 0; r < SQ_MAX_MEMBERS; r++) {
        if (f->peers[r].ep != NULL) {
            fi_shutdown(f->peers[r].ep, 0);
            close_fid(&f->peers[r].ep->fid);
        }
        free(f->peers[r].pending);
    }
    if (f->pep != NULL) {
        close_fid(&f->pep->fid);
    }
    if (f->mr != NULL) {
        close_fid(&f->mr->fid);
    }
    if (f->stage_mr != NULL) {
        close_fid(&f->stage_mr->fid);
    }
    free(f->stage_mem);
    if (f->cq != NULL) {
        close_fid(&f->cq->fid);
    }
    if (f->eq != NULL) {
        close_fid(&f->eq->fid);
    }
    if (f->domain != NULL) {
        close_fid(&f->domain->fid);
    }
    if (f->fabric != NULL) {
        close_fid(&f->fabric->fid);
    }
    if (f->info != NULL) {
        fi_freeinfo(f->info);
    }
    if (f->epfd >= 0) {
        close(f->epfd);
    }
    if (f->wakefd >= 0) {
        close(f->wakefd);
    }
    free(f);
}

static const struct sq_transport_vtable fabric_vtable = {
    .name = "fabric",
    .write = fab_write,
    .write_copy = fab_write_copy,
    .write_at = fab_write_at,
    .failed_peers = fab_failed_peers,
    .joined = fab_joined,
    .set_view = fab_set_view,
    .joining = fab_joining,
    .disconnect = fab_disconnect,
    .flush = fab_flush,
    .wait = fab_wait,
    .wake = fab_wake,
    .destroy = fab_destroy,
};

/* ---- connection set-up ---- */

static void make_hello(const struct fabric *f, struct hello *h)
{
    memset(h, 0, sizeof(*h));
    h->magic = HELLO_MAGIC;
    h->version = HELLO_VERSION;
    h->id = f->cfg->self_id;
    h->rank = f->base.my_rank;
    h->digest = f->digest;
    h->table_bytes = f->table_bytes;
    h->mr_key = fi_mr_key(f->mr);
    h->mr_addr = f->virt_addr ? (uint64_t)(uintptr_t)f->table : 0;
    h->flags = (f->joining ? HELLO_JOINING : 0) | (f->running ? HELLO_RUNNING : 0);
    h->view_id = f->view_id;
    h->view_peers = f->view_peers;
    h->incarnation = f->incarnation;
    h->tail = g_my_tail;
}

/* Checks a peer's hello; returns the reject reason (REJ_NONE if good). */
static int check_hello(const struct fabric *f, const void *data, size_t len, bool accepting)
{
    struct hello h;
    if (len < sizeof(h)) {
        return REJ_BAD_HELLO;
    }
    memcpy(&h, data, sizeof(h));
    if (h.magic != HELLO_MAGIC || h.version != HELLO_VERSION) {
        return REJ_BAD_HELLO;
    }
    if (h.rank >= f->base.nmembers || f->cfg->members[h.rank].id != h.id) {
        return REJ_UNKNOWN_MEMBER;
    }
    if (h.digest != f->digest || h.table_bytes != f->table_bytes) {
        return REJ_MISMATCH;
    }
    if (accepting && h.rank == f->base.my_rank) {
        return REJ_UNKNOWN_MEMBER;
    }
    if (accepting && f->running) {
        if (!(h.flags & HELLO_JOINING) && f->peers[h.rank].incarnation == h.incarnation) {
            /* A probe the same process sent while we were both forming; it has closed that
             * endpoint since (our own connection reached it first). Not a rejoin. */
            return REJ_PROBE;
        }
        return REJ_NONE; /* a member (re)joining: it replaces whatever link we had with it */
    }
    if (accepting && (h.flags & HELLO_JOINING)) {
        return REJ_NOT_RUNNING;
    }
    if (accepting && h.rank < f->base.my_rank) {
        return REJ_PROBE; /* a lower rank checking whether the group already runs */
    }
    /* The higher rank connects; an accept only comes from above us. */
    if (accepting && (h.rank <= f->base.my_rank || f->peers[h.rank].state == P_UP)) {
        return REJ_DUPLICATE;
    }
    return REJ_NONE;
}

static int setup_ep(struct fabric *f, struct fi_info *info, struct fid_ep **ep)
{
    int rc = fi_endpoint(f->domain, info, ep, NULL);
    if (rc == 0) {
        rc = fi_ep_bind(*ep, &f->eq->fid, 0);
    }
    if (rc == 0) {
        rc = fi_ep_bind(*ep, &f->cq->fid, FI_TRANSMIT | FI_RECV);
    }
    if (rc == 0) {
        rc = fi_enable(*ep);
    }
    if (rc != 0 && *ep != NULL) {
        fi_close(&(*ep)->fid);
        *ep = NULL;
    }
    return rc;
}

static struct peer *peer_of_ep(struct fabric *f, fid_t fid)
{
    for (uint32_t r = 0; r < f->base.nmembers; r++) {
        if (f->peers[r].ep != NULL && &f->peers[r].ep->fid == fid) {
            return &f->peers[r];
        }
    }
    return NULL;
}

static int start_connect(struct fabric *f, struct peer *p)
{
    const struct sq_member_addr *a = &f->cfg->members[p->rank];
    char port[16];
    snprintf(port, sizeof(port), "%u", a->port);
    struct fi_info *hints = make_hints(f->cfg);
    if (hints == NULL) {
        return SQ_ENOMEM;
    }
    struct fi_info *info = NULL;
    int rc = fi_getinfo(FI_API_VERSION, a->host, port, 0, hints, &info);
    fi_freeinfo(hints);
    if (rc != 0) {
        return fail(f, SQ_ETRANSPORT, "cannot resolve member %u at %s:%u with provider %s: %s",
                    p->id, a->host, a->port, f->cfg->provider, fi_strerror(-rc));
    }
    rc = setup_ep(f, info, &p->ep);
    if (rc == 0) {
        struct hello h;
        make_hello(f, &h);
        rc = fi_connect(p->ep, info->dest_addr, &h, sizeof(h));
    }
    fi_freeinfo(info);
    if (rc != 0) {
        if (p->ep != NULL) {
            fi_close(&p->ep->fid);
            p->ep = NULL;
        }
        p->retry_at_ms = sq__mono_ms() + RETRY_MS;
        sq__log(SQ_LOG_DEBUG, "connect to member %u: %s; retrying", p->id, fi_strerror(-rc));
        return 0;
    }
    p->state = P_CONNECTING;
    return 0;
}

static void mark_up(struct fabric *f, struct peer *p, const struct hello *h)
{
    f->tails[p->rank] = h->tail;
    p->remote_key = h->mr_key;
    p->remote_base = h->mr_addr;
    p->incarnation = h->incarnation;
    p->state = P_UP;
    f->failed &= ~(1ull << p->rank);
    sq__log(SQ_LOG_INFO, "connected to member %u (rank %u)", p->id, p->rank);
}

/* FI_CONNECTED for one of our endpoints: as connector, check the answer and note a running
 * group's view; as acceptor, the link is up. */
static int on_connected(struct fabric *f, struct fi_eq_cm_entry *e, size_t datalen)
{
    struct peer *p = peer_of_ep(f, e->fid);
    if (p == NULL) {
        return 0;
    }
    if (p->state == P_CONNECTING) {
        int why = check_hello(f, e->data, datalen, false);
        if (why != REJ_NONE) {
            return fail(f, SQ_ECONFIG, "member %u answered with a bad hello: %s", p->id,
                        reject_text[why]);
        }
        struct hello h;
        memcpy(&h, e->data, sizeof(h));
        mark_up(f, p, &h);
        if ((h.flags & HELLO_RUNNING) && !f->joining) {
            /* The group already runs (this member restarted): join it instead of forming. */
            sq__log(SQ_LOG_INFO, "member %u says the group is running (view %u): joining it", p->id,
                    h.view_id);
            f->joining = true;
        }
        if ((h.flags & HELLO_RUNNING) && (!f->have_contact || h.view_id > f->contact_view)) {
            f->have_contact = true;
            f->contact_view = h.view_id;
            f->contact_peers = h.view_peers;
        }
    } else if (p->state == P_ACCEPTING) {
        struct hello h = {.mr_key = p->remote_key,
                          .mr_addr = p->remote_base,
                          .incarnation = p->incarnation,
                          .tail = f->tails[p->rank]};
        mark_up(f, p, &h);
        if (f->running) {
            f->joined |= 1ull << p->rank;
        }
    }
    return 0;
}

static int on_connreq(struct fabric *f, struct fi_eq_cm_entry *e, size_t datalen)
{
    int why = check_hello(f, e->data, datalen, true);
    struct hello h;
    memset(&h, 0, sizeof(h));
    if (why == REJ_NONE) {
        memcpy(&h, e->data, sizeof(h));
        struct peer *p = &f->peers[h.rank];
        if (p->ep != NULL) {
            /* An older incarnation's link: what it still carries must never land. */
            fi_shutdown(p->ep, 0);
            fi_close(&p->ep->fid);
            p->ep = NULL;
        }
        p->outstanding = 0;
        p->npending = 0;
        p->stage_head = p->stage_tail = 0;
        int rc = setup_ep(f, e->info, &p->ep);
        if (rc == 0) {
            struct hello mine;
            make_hello(f, &mine);
            rc = fi_accept(p->ep, &mine, sizeof(mine));
        }
        if (rc == 0) {
            p->state = P_ACCEPTING;
            p->remote_key = h.mr_key;
            p->remote_base = h.mr_addr;
            p->incarnation = h.incarnation;
            f->tails[h.rank] = h.tail;
            fi_freeinfo(e->info);
            return 0;
        }
        if (p->ep != NULL) {
            fi_close(&p->ep->fid);
            p->ep = NULL;
        }
        sq__log(SQ_LOG_WARN, "accepting member %u failed: %s", h.id, fi_strerror(-rc));
        fi_freeinfo(e->info);
        return 0;
    }
    struct hello rej;
    make_hello(f, &rej);
    rej.reject_reason = (uint16_t)why;
    if (why != REJ_PROBE) {
        sq__log(SQ_LOG_WARN, "refused a connection: %s", reject_text[why]);
    }
    fi_reject(f->pep, e->info->handle, &rej, sizeof(rej));
    fi_freeinfo(e->info);
    if (why == REJ_MISMATCH && !f->running) {
        /* A configured member disagrees on the group: the first view can never form. */
        struct hello h2;
        memcpy(&h2, e->data, sizeof(h2));
        return fail(f, SQ_ECONFIG,
                    "member %u has a different configuration (member list, "
                    "subgroup or table size)",
                    h2.id);
    }
    return 0;
}

/* Handles one EQ error during set-up. A refused connect is retried (the peer may not be
 * listening yet) unless the peer refused us on purpose. */
static int on_eq_error(struct fabric *f)
{
    struct fi_eq_err_entry ee;
    memset(&ee, 0, sizeof(ee));
    if (fi_eq_readerr(f->eq, &ee, 0) < 0) {
        return fail(f, SQ_ETRANSPORT, "cannot read the event queue error");
    }
    struct peer *p = peer_of_ep(f, ee.fid);
    if (p == NULL) {
        return 0;
    }
    if (ee.err_data != NULL && ee.err_data_size >= sizeof(struct hello)) {
        struct hello h;
        memcpy(&h, ee.err_data, sizeof(h));
        if (h.magic == HELLO_MAGIC && h.reject_reason == REJ_PROBE) {
            /* Still forming: that member connects to us. Probe again later, in case this
             * member is the one that restarted. */
            fi_close(&p->ep->fid);
            p->ep = NULL;
            p->state = P_IDLE;
            p->retry_at_ms = sq__mono_ms() + 10 * RETRY_MS;
            return 0;
        }
        if (h.magic == HELLO_MAGIC && h.reject_reason != REJ_NONE &&
            h.reject_reason != REJ_NOT_RUNNING && h.reject_reason < SQ_ARRAY_LEN(reject_text)) {
            return fail(f, SQ_ECONFIG, "member %u refused our connection: %s", p->id,
                        reject_text[h.reject_reason]);
        }
    }
    fi_close(&p->ep->fid);
    p->ep = NULL;
    p->state = P_IDLE;
    p->retry_at_ms = sq__mono_ms() + RETRY_MS;
    sq__log(SQ_LOG_DEBUG, "member %u not reachable yet (%s); retrying", p->id, fi_strerror(ee.err));
    return 0;
}

/* Some member linked to us (or we) kept a view file: the group restarts from its disks, and the
 * caller decides when it may (restart.h), so set-up returns early. */
static bool restart_seen(const struct fabric *f)
{
    if (g_my_tail.vf_view > 0) {
        return true;
    }
    for (uint32_t r = 0; r < f->base.nmembers; r++) {
        if (f->peers[r].state == P_UP && f->tails[r].vf_view > 0) {
            return true;
        }
    }
    return false;
}

/* Joining: every member of the running view a member told us about is reachable (my own old
 * incarnation may still be listed: the join removes it). */
static bool join_ready(const struct fabric *f)
{
    if (!f->joining || !f->have_contact) {
        return false;
    }
    uint64_t need = f->contact_peers & ~(1ull << f->base.my_rank), have = 0;
    for (uint32_t r = 0; r < f->base.nmembers; r++) {
        have |= (uint64_t)(f->peers[r].state == P_UP) << r;
    }
    return (need & ~have) == 0;
}

/* Forming: every member is connected (probes that came back up count as connections too). */
static bool forming_done(const struct fabric *f)
{
    for (uint32_t r = 0; r < f->base.nmembers; r++) {
        if (r != f->base.my_rank && f->peers[r].state != P_UP) {
            return false;
        }
    }
    return true;
}

/* One round of set-up: (re)connects to members not linked yet, then handles the connection
 * events that come within `wait_ms`. */
static int form_round(struct fabric *f, int wait_ms)
{
    const uint32_t n = f->base.nmembers, me = f->base.my_rank;
    for (uint32_t r = 0; r < n; r++) {
        struct peer *p = &f->peers[r];
        if (r != me && p->state == P_IDLE && sq__mono_ms() >= p->retry_at_ms) {
            /* Lower ranks: the connections of the first view. Higher ranks: a probe that a
             * forming member refuses and a running one accepts (this member restarted). */
            int rc = start_connect(f, p);
            if (rc != 0) {
                return rc;
            }
        }
    }
    union {
        struct fi_eq_cm_entry e;
        uint8_t raw[sizeof(struct fi_eq_cm_entry) + 256];
    } buf;
    uint32_t event = 0;
    ssize_t rd = fi_eq_sread(f->eq, &event, &buf, sizeof(buf), wait_ms, 0);
    if (rd == -FI_EAGAIN || rd == -FI_ETIMEDOUT) {
        return 0;
    }
    if (rd == -FI_EAVAIL) {
        return on_eq_error(f);
    }
    if (rd < 0) {
        return fail(f, SQ_ETRANSPORT, "event queue: %s", fi_strerror((int)-rd));
    }
    size_t datalen = (size_t)rd > sizeof(buf.e) ? (size_t)rd - sizeof(buf.e) : 0;
    if (event == FI_CONNREQ) {
        return on_connreq(f, &buf.e, datalen);
    }
    if (event == FI_CONNECTED) {
        return on_connected(f, &buf.e, datalen);
    }
    if (event == FI_SHUTDOWN) {
        struct peer *p = peer_of_ep(f, buf.e.fid);
        if (p != NULL) {
            sq__log(SQ_LOG_WARN, "member %u closed its connection during set-up", p->id);
            fi_close(&p->ep->fid);
            p->ep = NULL;
            p->state = P_IDLE;
            p->retry_at_ms = sq__mono_ms() + RETRY_MS;
        }
    }
    return 0;
}

static int establish(struct fabric *f)
{
    uint64_t deadline = sq__mono_ms() + (uint64_t)f->cfg->connect_timeout_ms;
    const uint32_t n = f->base.nmembers, me = f->base.my_rank;
    for (;;) {
        if (!f->joining && restart_seen(f)) {
            f->restarting = true;
            return 0;
        }
        if (!f->joining && forming_done(f)) {
            return 0;
        }
        if (join_ready(f)) {
            return 0;
        }
        if (sq__mono_ms() >= deadline) {
            char missing[256] = "";
            size_t len = 0;
            for (uint32_t r = 0; r < n; r++) {
                if (r != me && f->peers[r].state != P_UP && len < sizeof(missing) - 16) {
                    len += (size_t)snprintf(missing + len, sizeof(missing) - len, "%s%u",
                                            len ? ", " : "", f->peers[r].id);
                }
            }
            return fail(f, SQ_ETIMEDOUT,
                        f->joining ? "could not join within %d ms: no running member answered, or "
                                     "no connection with member(s) %s"
                                   : "the group did not form within %d ms: no connection with "
                                     "member(s) %s",
                        f->cfg->connect_timeout_ms, missing);
        }
        int rc = form_round(f, RETRY_MS);
        if (rc != 0) {
            return rc;
        }
    }
}

bool sq__fabric_restarting(struct sq_transport *t)
{
    return ((struct fabric *)t)->restarting;
}

int sq__fabric_form_step(struct sq_transport *t, int wait_ms)
{
    struct fabric *f = (struct fabric *)t;
    int rc = form_round(f, wait_ms);
    if (rc != 0) {
        return rc;
    }
    rc = drain_cq(f); /* completions of the writes posted (a welcome sent) */
    return rc < 0 ? rc : 0;
}

uint32_t sq__fabric_linked(struct sq_transport *t)
{
    struct fabric *f = (struct fabric *)t;
    uint32_t up = 1u << f->base.my_rank;
    for (uint32_t r = 0; r < f->base.nmembers; r++) {
        up |= (uint32_t)(f->peers[r].state == P_UP) << r;
    }
    return up;
}

bool sq__fabric_join_ready(struct sq_transport *t)
{
    return join_ready((struct fabric *)t);
}

void sq__fabric_set_log_tail(const struct sq_log_tail *mine)
{
    g_my_tail = *mine;
}

void sq__fabric_log_tails(struct sq_transport *t, struct sq_log_tail *by_rank)
{
    struct fabric *f = (struct fabric *)t;
    memcpy(by_rank, f->tails, sizeof(f->tails));
    by_rank[f->base.my_rank] = g_my_tail;
}

/* A number no earlier process of this member used: random, never 0 (0 means "no link"). */
static uint64_t new_incarnation(void)
{
    uint64_t x = 0;
    if (getrandom(&x, sizeof(x), 0) != (ssize_t)sizeof(x)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        x = sq__mix64((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) ^
            sq__mix64((uint64_t)getpid());
    }
    return x != 0 ? x : 1;
}

int sq__fabric_create(struct sq_transport **out, const struct sq_config *cfg, uint8_t *table,
                      size_t table_bytes, bool join, char *err, size_t err_size)
{
    *out = NULL;
    struct fabric *f = calloc(1, sizeof(*f));
    if (f == NULL) {
        return SQ_ENOMEM;
    }
    f->base.vt = &fabric_vtable;
    f->base.nmembers = cfg->nmembers;
    f->base.my_rank = (uint32_t)sq__config_rank_of(cfg, cfg->self_id);
    f->cfg = cfg;
    f->table = table;
    f->table_bytes = table_bytes;
    f->digest = sq__config_group_digest(cfg);
    f->epfd = -1;
    f->wakefd = -1;
    f->cq_fd = -1;
    f->spin_us = cfg->spin_us;
    f->err = err;
    f->err_size = err_size;
    f->joining = join;
    f->incarnation = new_incarnation();
    int rc = 0;

    const struct sq_member_addr *self = &cfg->members[f->base.my_rank];
    char port[16];
    snprintf(port, sizeof(port), "%u", self->port);
    struct fi_info *hints = make_hints(cfg);
    if (hints == NULL) {
        rc = SQ_ENOMEM;
        goto out_free;
    }
    int frc = fi_getinfo(FI_API_VERSION, self->host, port, FI_SOURCE, hints, &f->info);
    fi_freeinfo(hints);
    if (frc != 0) {
        rc = fail(f, SQ_ETRANSPORT,
                  "libfabric provider '%s' offers no connected endpoint with RMA writes at "
                  "%s:%u%s%s: %s",
                  cfg->provider, self->host, self->port, cfg->domain[0] ? " in domain " : "",
                  cfg->domain, fi_strerror(-frc));
        goto out_free;
    }
    f->virt_addr = (f->info->domain_attr->mr_mode & FI_MR_VIRT_ADDR) != 0;
    f->cq_data = f->info->domain_attr->cq_data_size > 0;
    f->tx_size = (uint32_t)SQ_MAX(f->info->tx_attr->size, 8u);

    frc = fi_fabric(f->info->fabric_attr, &f->fabric, NULL);
    if (frc == 0) {
        frc = fi_domain(f->fabric, f->info, &f->domain, NULL);
    }
    if (frc != 0) {
        rc = fail(f, SQ_ETRANSPORT, "cannot open the %s fabric domain: %s", cfg->provider,
                  fi_strerror(-frc));
        goto out_free;
    }
    struct fi_eq_attr eq_attr = {.size = 64, .wait_obj = FI_WAIT_UNSPEC};
    struct fi_cq_attr cq_attr = {.size = 4096, .format = FI_CQ_FORMAT_DATA, .wait_obj = FI_WAIT_FD};
    frc = fi_eq_open(f->fabric, &eq_attr, &f->eq, NULL);
    if (frc == 0) {
        frc = fi_cq_open(f->domain, &cq_attr, &f->cq, NULL);
    }
    if (frc == 0) {
        frc = fi_control(&f->cq->fid, FI_GETWAIT, &f->cq_fd);
    }
    if (frc != 0) {
        rc = fail(f, SQ_ETRANSPORT, "cannot open queues (a completion queue with a wait fd): %s",
                  fi_strerror(-frc));
        goto out_free;
    }
    uint64_t key =
        (f->info->domain_attr->mr_mode & FI_MR_PROV_KEY) ? 0 : MR_KEY_BASE + f->base.my_rank;
    frc = fi_mr_reg(f->domain, table, table_bytes, FI_WRITE | FI_REMOTE_WRITE, 0, key, 0, &f->mr,
                    NULL);
    if (frc != 0) {
        rc = fail(f, SQ_ETRANSPORT, "cannot register the %zu byte table: %s", table_bytes,
                  fi_strerror(-frc));
        goto out_free;
    }
    f->mr_desc = fi_mr_desc(f->mr);

    f->epfd = epoll_create1(EPOLL_CLOEXEC);
    f->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (f->epfd < 0 || f->wakefd < 0) {
        rc = fail(f, SQ_EIO, "cannot create epoll/eventfd: %s", strerror(errno));
        goto out_free;
    }
    struct epoll_event ev = {.events = EPOLLIN};
    ev.data.fd = f->cq_fd;
    epoll_ctl(f->epfd, EPOLL_CTL_ADD, f->cq_fd, &ev);
    ev.data.fd = f->wakefd;
    epoll_ctl(f->epfd, EPOLL_CTL_ADD, f->wakefd, &ev);

    frc = fi_passive_ep(f->fabric, f->info, &f->pep, NULL);
    if (frc == 0) {
        frc = fi_pep_bind(f->pep, &f->eq->fid, 0);
    }
    if (frc == 0) {
        frc = fi_listen(f->pep);
    }
    if (frc != 0) {
        rc = fail(f, SQ_ETRANSPORT, "cannot listen on %s:%u: %s", self->host, self->port,
                  fi_strerror(-frc));
        goto out_free;
    }
    /* Staging rings: room for every write that can be posted or pending at once. */
    /* slots and headers of every table, p2p messages and acks */
    uint32_t cap = 8 + 2 * 16;
    for (uint32_t g = 0; g < cfg->nsubgroups; g++) {
        cap += cfg->subgroups[g].window_size + 8;
    }
    uint32_t stage_slots = f->tx_size + cap + 1;
    size_t ring_bytes = (size_t)stage_slots * SQ_TRANSPORT_MAX_COPY;
    if (posix_memalign((void **)&f->stage_mem, 4096, ring_bytes * cfg->nmembers) != 0) {
        f->stage_mem = NULL;
        rc = SQ_ENOMEM;
        goto out_free;
    }
    frc = fi_mr_reg(f->domain, f->stage_mem, ring_bytes * cfg->nmembers, FI_WRITE, 0,
                    (f->info->domain_attr->mr_mode & FI_MR_PROV_KEY) ? 0 : key + 0x1000, 0,
                    &f->stage_mr, NULL);
    if (frc != 0) {
        rc = fail(f, SQ_ETRANSPORT, "cannot register the staging buffers: %s", fi_strerror(-frc));
        goto out_free;
    }
    f->stage_desc = fi_mr_desc(f->stage_mr);
    for (uint32_t r = 0; r < cfg->nmembers; r++) {
        struct peer *p = &f->peers[r];
        p->rank = r;
        p->id = cfg->members[r].id;
        p->cap = cap;
        p->pending = calloc(p->cap, sizeof(struct range));
        p->stage = f->stage_mem + ring_bytes * r;
        p->stage_slots = stage_slots;
        if (p->pending == NULL) {
            rc = SQ_ENOMEM;
            goto out_free;
        }
    }
    rc = establish(f);
    if (rc != 0) {
        goto out_free;
    }
    f->err = NULL;
    f->base.vt = &fabric_vtable;
    *out = &f->base;
    return 0;

out_free:
    fab_destroy(&f->base);
    return rc;
}
