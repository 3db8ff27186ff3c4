/* fabric_connect.c: the libfabric transport's connections: hellos, connecting and accepting,
 * the set-up rounds (forming, joining, noticing a restart), and the event queue while running. */
#include <assert.h>
#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_eq.h>
#include <rdma/fi_errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "fabric.h"
#include "fabric_hello.h"
#include "fabric_internal.h"
#include "log.h"

/* This member's log tail: set before the transport starts, read-only after. */
static struct sq_log_tail g_my_tail = {.shard = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}};

/* "127.0.0.1:7401" for a connecting peer's address, when the provider gives one. */
static void addr_text(const struct fi_info *info, char *buf, size_t size)
{
    snprintf(buf, size, "an unknown address");
    if (info == NULL || info->dest_addr == NULL) {
        return;
    }
    char host[INET6_ADDRSTRLEN] = "";
    if (info->addr_format == FI_SOCKADDR_IN && info->dest_addrlen >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *a = info->dest_addr;
        if (inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host)) != NULL) {
            snprintf(buf, size, "%s:%u", host, ntohs(a->sin_port));
        }
    } else if (info->addr_format == FI_SOCKADDR_IN6 &&
               info->dest_addrlen >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *a = info->dest_addr;
        if (inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host)) != NULL) {
            snprintf(buf, size, "[%s]:%u", host, ntohs(a->sin6_port));
        }
    }
}

int sq__fabric_check_cm_size(struct fabric *f)
{
    size_t cm = 0, len = sizeof(cm);
    int rc = fi_getopt(&f->pep->fid, FI_OPT_ENDPOINT, FI_OPT_CM_DATA_SIZE, &cm, &len);
    if (rc == 0 && cm < sizeof(struct hello)) {
        return sq__fabric_fail(f, SQ_ETRANSPORT,
                               "libfabric provider '%s' carries %zu bytes of connection data, "
                               "and a member's hello takes %zu",
                               f->cfg->provider, cm, sizeof(struct hello));
    }
    return 0; /* a provider that does not say: the first connection will tell */
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

/* Closes the endpoint of a connection that did not come up; the next set-up round connects to
 * `p` again from `retry_at_ms` on. */
static void retry_later(struct peer *p, uint64_t retry_at_ms)
{
    fi_close(&p->ep->fid);
    p->ep = NULL;
    p->state = P_IDLE;
    p->retry_at_ms = retry_at_ms;
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
    struct fi_info *hints = sq__fabric_hints(f->cfg);
    if (hints == NULL) {
        return SQ_ENOMEM;
    }
    struct fi_info *info = NULL;
    int rc = fi_getinfo(FI_API_VERSION, a->host, port, 0, hints, &info);
    fi_freeinfo(hints);
    if (rc != 0) {
        return sq__fabric_fail(f, SQ_ETRANSPORT,
                               "cannot resolve member %u at %s:%u with provider %s: %s", p->id,
                               a->host, a->port, f->cfg->provider, fi_strerror(-rc));
    }
    struct hello h;
    sq__hello_make(f, &h, p->rank, &g_my_tail);
    p->answered = f->cfg->has_key && p->have_challenge;
    p->have_challenge = false;
    if (p->answered) {
        rc = sq__auth_nonce(p->my_nonce);
        if (rc == 0) {
            rc = sq__hello_seal(f, &h, SQ_AUTH_CONNECT, p->my_nonce, p->challenge);
        }
        if (rc != 0) {
            fi_freeinfo(info);
            return sq__fabric_fail(f, rc, "cannot seal a hello for member %u", p->id);
        }
    } else if (f->cfg->has_key) {
        /* No challenge to answer yet: this try asks for one and carries no secret. */
        memset(&h.secret, 0, sizeof(h.secret));
    }
    rc = setup_ep(f, info, &p->ep);
    if (rc == 0) {
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
    p->remote_key = h->secret.mr_key;
    p->remote_base = h->secret.mr_addr;
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
        struct hello h;
        int why = sq__hello_check(f, e->data, datalen, false, p, &h);
        if (why == REJ_AUTH_FAILED || why == REJ_AUTH_REQUIRED) {
            return sq__fabric_fail(f, SQ_ECONFIG,
                                   "member %u at %s:%u answered without proving that it holds "
                                   "the group key ([group] key_file): %s",
                                   p->id, f->cfg->members[p->rank].host,
                                   f->cfg->members[p->rank].port, sq__hello_reject_text(why));
        }
        if (why != REJ_NONE) {
            return sq__fabric_fail(f, SQ_ECONFIG, "member %u answered with a bad hello: %s", p->id,
                                   sq__hello_reject_text(why));
        }
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
        struct hello h = {.secret = {.mr_key = p->remote_key, .mr_addr = p->remote_base},
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
    struct hello h;
    int why = sq__hello_check(f, e->data, datalen, true, NULL, &h);
    if (why == REJ_NONE) {
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
            sq__hello_make(f, &mine, h.rank, &g_my_tail);
            if (f->cfg->has_key) {
                rc = sq__hello_seal(f, &mine, SQ_AUTH_ACCEPT, h.nonce, h.echo);
            }
            if (rc == 0) {
                rc = fi_accept(p->ep, &mine, sizeof(mine));
            }
        }
        if (rc == 0) {
            p->state = P_ACCEPTING;
            p->remote_key = h.secret.mr_key;
            p->remote_base = h.secret.mr_addr;
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
    sq__hello_make(f, &rej, h.rank, &g_my_tail);
    memset(&rej.secret, 0, sizeof(rej.secret)); /* a refused peer learns no memory key */
    if (f->cfg->has_key) {
        /* ... nor, with a key, anything of the group: who is in it, what its logs hold */
        rej.flags = 0;
        rej.view_id = 0;
        rej.view_peers = 0;
        rej.incarnation = 0;
        memset(&rej.tail, 0, sizeof(rej.tail));
    }
    rej.reject_reason = (uint16_t)why;
    if (why == REJ_CHALLENGE && sq__hello_challenge(f, h.rank, rej.nonce) != 0) {
        rej.reject_reason = REJ_BAD_HELLO; /* no randomness: nothing to answer */
    }
    if (why != REJ_PROBE && why != REJ_CHALLENGE) {
        char from[80];
        addr_text(e->info, from, sizeof(from));
        if (why == REJ_BAD_HELLO) {
            sq__log(SQ_LOG_WARN, "refused a connection from %s: %s", from,
                    sq__hello_reject_text(why));
        } else {
            sq__log(SQ_LOG_WARN, "refused a connection from %s claiming to be member %u: %s", from,
                    h.id, sq__hello_reject_text(why));
        }
    }
    fi_reject(f->pep, e->info->handle, &rej, sizeof(rej));
    fi_freeinfo(e->info);
    if (why == REJ_MISMATCH && !f->running) {
        /* A configured member disagrees on the group: the first view can never form. (With a
         * key, the mismatch is only found once the hello's seal opened: no stranger's.) */
        return sq__fabric_fail(f, SQ_ECONFIG,
                               "member %u has a different configuration (member list, "
                               "subgroup or table size)",
                               h.id);
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
        return sq__fabric_fail(f, SQ_ETRANSPORT, "cannot read the event queue error");
    }
    struct peer *p = peer_of_ep(f, ee.fid);
    if (p == NULL) {
        return 0;
    }
    if (ee.err_data != NULL && ee.err_data_size >= sizeof(struct hello)) {
        struct hello h;
        memcpy(&h, ee.err_data, sizeof(h));
        if (h.magic == HELLO_MAGIC && h.reject_reason == REJ_CHALLENGE && f->cfg->has_key) {
            /* Answer the challenge at once, on a new endpoint. */
            memcpy(p->challenge, h.nonce, sizeof(p->challenge));
            p->have_challenge = true;
            retry_later(p, 0);
            return 0;
        }
        if (h.magic == HELLO_MAGIC && h.reject_reason == REJ_PROBE) {
            /* Still forming: that member connects to us. Probe again later, in case this
             * member is the one that restarted. */
            retry_later(p, sq__mono_ms() + 10 * RETRY_MS);
            return 0;
        }
        if (h.magic == HELLO_MAGIC && h.reject_reason != REJ_NONE &&
            h.reject_reason != REJ_NOT_RUNNING && h.reject_reason <= REJ_NO_KEY) {
            return sq__fabric_fail(f, SQ_ECONFIG, "member %u refused our connection: %s", p->id,
                                   sq__hello_reject_text(h.reject_reason));
        }
    }
    retry_later(p, sq__mono_ms() + RETRY_MS);
    sq__log(SQ_LOG_DEBUG, "member %u not reachable yet (%s); retrying", p->id, fi_strerror(ee.err));
    return 0;
}

/* A peer that closed its connection (or died) shows up as FI_SHUTDOWN on the event queue. */
void sq__fabric_check_eq(struct fabric *f)
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
                    sq__fabric_mark_failed(f, p);
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
    /* EINTR: a signal, or this process stopped and continued (SIGSTOP, a debugger). */
    if (rd == -FI_EAGAIN || rd == -FI_ETIMEDOUT || rd == -FI_EINTR) {
        return 0;
    }
    if (rd == -FI_EAVAIL) {
        return on_eq_error(f);
    }
    if (rd < 0) {
        return sq__fabric_fail(f, SQ_ETRANSPORT, "event queue: %s", fi_strerror((int)-rd));
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
            retry_later(p, sq__mono_ms() + RETRY_MS);
        }
    }
    return 0;
}

int sq__fabric_establish(struct fabric *f)
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
            return sq__fabric_fail(
                f, SQ_ETIMEDOUT,
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
    rc = sq__fabric_drain_cq(f); /* completions of the writes posted (a welcome sent) */
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

int sq__fabric_peer_link(struct sq_transport *t, uint32_t rank, uint64_t *incarnation)
{
    struct fabric *f = (struct fabric *)t;
    *incarnation = 0;
    if (rank >= f->base.nmembers || rank == f->base.my_rank) {
        return SQ_FABRIC_DOWN;
    }
    const struct peer *p = &f->peers[rank];
    *incarnation = p->incarnation;
    switch (p->state) {
    case P_UP:
        return SQ_FABRIC_UP;
    case P_CONNECTING:
    case P_ACCEPTING:
        return SQ_FABRIC_SETUP;
    default:
        return SQ_FABRIC_DOWN;
    }
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
