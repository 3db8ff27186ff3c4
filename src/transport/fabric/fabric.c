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

#include <errno.h>
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
#include "fabric_internal.h"
#include "hash.h"
#include "log.h"

int sq__fabric_fail(struct fabric *f, int rc, const char *fmt, ...)
{
    if (f->err != NULL && f->err_size > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(f->err, f->err_size, fmt, ap);
        va_end(ap);
    }
    return rc;
}

struct fi_info *sq__fabric_hints(const struct sq_config *cfg)
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

void sq__fabric_mark_failed(struct fabric *f, struct peer *p)
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
int sq__fabric_drain_cq(struct fabric *f)
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
            sq__fabric_mark_failed(f, p);
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

/* How many of the n ranges at r go as one write: up to write_iov, at most one of them staged (a
 * write's completion gives back at most one staging entry, so the ring cannot run out). */
static uint32_t batch_of(const struct fabric *f, const struct range *r, uint32_t n)
{
    uint32_t k = 0, staged = 0;
    while (k < n && k < f->write_iov) {
        staged += r[k].stage >= 0;
        if (staged > 1) {
            break;
        }
        k++;
    }
    return k;
}

/* Posts the n ranges at r (1..write_iov, at most one staged) as one write: their bytes land in
 * order, and one completion reports them all. */
static int post_write(struct fabric *f, struct peer *p, const struct range *r, uint32_t n,
                      bool doorbell)
{
    struct iovec iov[MAX_WRITE_IOV];
    void *desc[MAX_WRITE_IOV];
    struct fi_rma_iov rma[MAX_WRITE_IOV];
    void *ctx = &p->ctx_inplace;
    SQ_ASSERT(n >= 1 && n <= f->write_iov);
    for (uint32_t i = 0; i < n; i++) {
        iov[i] = (struct iovec){f->table + r[i].src, r[i].len};
        desc[i] = f->mr_desc;
        if (r[i].stage >= 0) {
            iov[i].iov_base =
                p->stage + (size_t)(r[i].stage % p->stage_slots) * SQ_TRANSPORT_MAX_COPY;
            desc[i] = f->stage_desc;
            ctx = &p->ctx_copy;
        }
        rma[i] = (struct fi_rma_iov){(f->virt_addr ? p->remote_base : 0) + r[i].off, r[i].len,
                                     p->remote_key};
    }
    bool data = doorbell && f->cq_data;
    struct fi_msg_rma msg = {.msg_iov = iov,
                             .desc = desc,
                             .iov_count = n,
                             .rma_iov = rma,
                             .rma_iov_count = n,
                             .context = ctx};
    for (int tries = 0;; tries++) {
        if (p->state != P_UP) {
            return SQ_EPEER;
        }
        ssize_t rc;
        if (p->outstanding >= f->tx_size) {
            rc = -FI_EAGAIN;
        } else if (n > 1) {
            rc = fi_writemsg(p->ep, &msg, FI_COMPLETION | (data ? FI_REMOTE_CQ_DATA : 0));
        } else if (data) {
            rc = fi_writedata(p->ep, iov[0].iov_base, iov[0].iov_len, desc[0], 0, 0, rma[0].addr,
                              p->remote_key, ctx);
        } else {
            rc = fi_write(p->ep, iov[0].iov_base, iov[0].iov_len, desc[0], 0, rma[0].addr,
                          p->remote_key, ctx);
        }
        if (rc == 0) {
            p->outstanding++;
            return 0;
        }
        if (rc != -FI_EAGAIN) {
            sq__log(SQ_LOG_WARN, "fi_write to member %u: %s", p->id, fi_strerror((int)-rc));
            sq__fabric_mark_failed(f, p);
            return SQ_EPEER;
        }
        /* Send queue full: make progress (which also lands incoming writes, so two members
         * flushing to each other cannot deadlock), then block briefly on the CQ. */
        int d = sq__fabric_drain_cq(f);
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

/* Posts the peer's pending ranges in order, the last write with the doorbell if asked. */
static int post_pending(struct fabric *f, struct peer *p, bool doorbell)
{
    for (uint32_t i = 0; i < p->npending;) {
        uint32_t k = batch_of(f, &p->pending[i], p->npending - i);
        int rc = post_write(f, p, &p->pending[i], k, doorbell && i + k == p->npending);
        if (rc != 0) {
            return rc;
        }
        i += k;
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
        int rc = post_pending(f, p, false);
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
        int rc = post_pending(f, p, false);
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
        result = post_pending(f, p, true);
        p->npending = 0;
        if (result == SQ_EPEER) {
            result = 0; /* reported through failed_peers(); the other links carry on */
        }
    }
    if (result == 0) {
        int d = sq__fabric_drain_cq(f); /* reap tx completions, keep the send queues short */
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
    int rx = sq__fabric_drain_cq(f);
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
            rx = sq__fabric_drain_cq(f);
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
            rx = sq__fabric_drain_cq(f);
            f->rx_seen = false;
            return rx < 0 ? rx : rx > 0;
        }
    }
    rx = sq__fabric_drain_cq(f);
    f->rx_seen = false;
    return rx < 0 ? rx : 1;
}

/* ---- links ---- */

static uint64_t fab_failed_peers(struct sq_transport *t)
{
    struct fabric *f = (struct fabric *)t;
    sq__fabric_check_eq(f);
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
    sq__fabric_mark_failed(f, p);
}

static uint64_t fab_joined(struct sq_transport *t)
{
    struct fabric *f = (struct fabric *)t;
    sq__fabric_check_eq(f);
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

/* ---- set-up ---- */

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
    struct fi_info *hints = sq__fabric_hints(cfg);
    if (hints == NULL) {
        rc = SQ_ENOMEM;
        goto out_free;
    }
    int frc = fi_getinfo(FI_API_VERSION, self->host, port, FI_SOURCE, hints, &f->info);
    fi_freeinfo(hints);
    if (frc != 0) {
        rc = sq__fabric_fail(
            f, SQ_ETRANSPORT,
            "libfabric provider '%s' offers no connected endpoint with RMA writes at "
            "%s:%u%s%s: %s",
            cfg->provider, self->host, self->port, cfg->domain[0] ? " in domain " : "", cfg->domain,
            fi_strerror(-frc));
        goto out_free;
    }
    f->virt_addr = (f->info->domain_attr->mr_mode & FI_MR_VIRT_ADDR) != 0;
    f->cq_data = f->info->domain_attr->cq_data_size > 0;
    f->tx_size = (uint32_t)SQ_MAX(f->info->tx_attr->size, 8u);
    f->write_iov = (uint32_t)SQ_MAX(
        SQ_MIN(SQ_MIN(f->info->tx_attr->rma_iov_limit, f->info->tx_attr->iov_limit),
               (size_t)MAX_WRITE_IOV),
        (size_t)1);

    frc = fi_fabric(f->info->fabric_attr, &f->fabric, NULL);
    if (frc == 0) {
        frc = fi_domain(f->fabric, f->info, &f->domain, NULL);
    }
    if (frc != 0) {
        rc = sq__fabric_fail(f, SQ_ETRANSPORT, "cannot open the %s fabric domain: %s",
                             cfg->provider, fi_strerror(-frc));
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
        rc = sq__fabric_fail(f, SQ_ETRANSPORT,
                             "cannot open queues (a completion queue with a wait fd): %s",
                             fi_strerror(-frc));
        goto out_free;
    }
    uint64_t key =
        (f->info->domain_attr->mr_mode & FI_MR_PROV_KEY) ? 0 : MR_KEY_BASE + f->base.my_rank;
    if (key != 0 && cfg->has_key) {
        /* With a group key, nobody may guess the table's memory key: a random one, as wide as
         * the provider takes, only ever sent sealed (fabric_connect.c). */
        size_t bytes = f->info->domain_attr->mr_key_size;
        uint64_t mask = bytes == 0 || bytes >= 8 ? UINT64_MAX : (1ull << (8 * bytes)) - 1;
        if (getrandom(&key, sizeof(key), 0) != (ssize_t)sizeof(key)) {
            rc = sq__fabric_fail(f, SQ_EIO, "cannot get random bytes: %s", strerror(errno));
            goto out_free;
        }
        key &= mask & ~(uint64_t)0x1000; /* the staging buffers take key + 0x1000 */
    }
    frc = fi_mr_reg(f->domain, table, table_bytes, FI_WRITE | FI_REMOTE_WRITE, 0, key, 0, &f->mr,
                    NULL);
    if (frc != 0) {
        rc = sq__fabric_fail(f, SQ_ETRANSPORT, "cannot register the %zu byte table: %s",
                             table_bytes, fi_strerror(-frc));
        goto out_free;
    }
    f->mr_desc = fi_mr_desc(f->mr);

    f->epfd = epoll_create1(EPOLL_CLOEXEC);
    f->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (f->epfd < 0 || f->wakefd < 0) {
        rc = sq__fabric_fail(f, SQ_EIO, "cannot create epoll/eventfd: %s", strerror(errno));
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
        rc = sq__fabric_fail(f, SQ_ETRANSPORT, "cannot listen on %s:%u: %s", self->host, self->port,
                             fi_strerror(-frc));
        goto out_free;
    }
    rc = sq__fabric_check_cm_size(f);
    if (rc != 0) {
        goto out_free;
    }
    if (!cfg->has_key) {
        sq__log(SQ_LOG_WARN,
                "no group key ([group] key_file): members do not authenticate each other, so "
                "whoever reaches %s:%u with this configuration can join the group "
                "(squalld --gen-key FILE writes a key)",
                self->host, self->port);
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
        rc = sq__fabric_fail(f, SQ_ETRANSPORT, "cannot register the staging buffers: %s",
                             fi_strerror(-frc));
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
    rc = sq__fabric_establish(f);
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
