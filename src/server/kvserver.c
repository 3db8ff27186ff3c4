/* kvserver.c: the key-value service of a squalld member: creating, starting and stopping it, and
 * the service thread's loop. Its pieces, one concern a file, are listed in kv_internal.h.
 *
 * Threads. The member's event-loop thread delivers operations: it applies them to the shard's
 * store (src/kv/store.c) and hands the answers for this member's clients, and the updates for
 * watchers, to the service thread through a queue. The service thread owns every client
 * connection (epoll): it decodes frames, answers reads from the stores, multicasts writes into
 * the key's shard, or relays a request to a member of that shard over that member's client port.
 * `mu` guards what both threads touch; member calls are never made while holding it (the loop
 * thread holds the member's lock while it runs our callbacks).
 *
 * Writes are applied in the shard's total order, so every replica gives the same answer to a
 * conditional put; the answer goes back once the op is delivered (volatile and trigger stores:
 * every member of the shard has it) or persisted at every member (persistent stores). A stable
 * read multicasts a barrier and answers at the barrier's place in the order. */
#include "server/kvserver.h"

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"
#include "config.h"
#include "kv/buf.h"
#include "kv/store.h"
#include "kv/wire.h"
#include "server/kv_internal.h"

#define REQUEST_TIMEOUT_MS 60000 /* a request still in flight after this is failed */

void sq__kvs_wake(struct sq_kv_server *s)
{
    uint64_t one = 1;
    ssize_t w = write(s->efd, &one, sizeof(one));
    (void)w; /* a full counter still wakes the thread */
}

/* Once a second: requests that waited too long are failed; closed connections are freed. */
static void sweep(struct sq_kv_server *s)
{
    uint64_t now = sq__mono_ms();
    if (now - s->last_sweep_ms < 1000) {
        return;
    }
    s->last_sweep_ms = now;
    for (uint32_t b = 0; b < ENTRY_BUCKETS; b++) {
        for (struct entry *e = s->ents[b], *next; e != NULL; e = next) {
            next = e->next;
            if (!e->watch && now - e->created_ms > REQUEST_TIMEOUT_MS) {
                struct agg *agg = e->agg;
                uint64_t origin = e->origin, client = e->client, req = e->req_id;
                uint8_t op = e->op;
                sq__kvs_entry_free(s, e);
                if (agg != NULL) {
                    struct sq_kv_frame a = {
                        .op = op, .status = SQ_ETIMEDOUT, .client = client, .req_id = req};
                    sq__kvs_agg_part(s, agg, &a);
                } else {
                    sq__kvs_reply_err(s, origin, op, client, req, SQ_ETIMEDOUT, 0,
                                      "not answered within %d s (is the shard below min_members?)",
                                      REQUEST_TIMEOUT_MS / 1000);
                }
                next = s->ents[b]; /* the chain may have changed: start it over */
            }
        }
    }
    for (struct conn **pc = &s->conns; *pc != NULL;) {
        struct conn *c = *pc;
        if (c->dead) {
            if (c->fd >= 0) {
                sq__kvs_conn_close(s, c);
            }
            *pc = c->next;
            sq__buf_free(&c->in);
            free(c->pend);
            sq__buf_free(&c->out);
            free(c);
        } else {
            pc = &c->next;
        }
    }
}

bool sq__kvs_out_of_group(struct sq_kv_server *s)
{
    if (atomic_load(&s->detached)) {
        return true;
    }
    /* only the service thread sets s->m to NULL (detach, under svc_mu), and this runs under
     * svc_mu (on the service thread, or an in-process request's) */
    return s->m != NULL && sq_member_failure(s->m) != 0;
}

/* Frees the answers and events the loop thread handed over and nobody sent yet. */
static void free_dones(struct sq_kv_server *s)
{
    struct done *lists[SQ_MAX_SUBGROUPS + 1];
    lists[0] = s->ready_head;
    for (uint32_t g = 0; g < SQ_MAX_SUBGROUPS; g++) {
        lists[g + 1] = s->wait_head[g];
        s->wait_head[g] = s->wait_tail[g] = NULL;
    }
    s->ready_head = s->ready_tail = NULL;
    for (uint32_t i = 0; i <= SQ_MAX_SUBGROUPS; i++) {
        for (struct done *d = lists[i], *next; d != NULL; d = next) {
            next = d->next;
            free(d->key);
            free(d->value);
            free(d);
        }
    }
}

/* The service thread's side of sq__kv_server_detach: the member's loop has stopped (it
 * failed), so nothing arrives from it any more; what this member knew of the group goes. */
static void detach(struct sq_kv_server *s)
{
    atomic_store(&s->detached, true);
    pthread_mutex_lock(&s->mu);
    bool served = s->have_view;
    pthread_mutex_unlock(&s->mu);
    if (served) {
        /* Clients first (their requests and watches go with them), then relays. Their clients
         * resend to another member with the same request numbers: the shard's at-most-once
         * table answers a write that got through with its first answer. */
        for (int relays = 0; relays < 2; relays++) {
            for (struct conn *c = s->conns; c != NULL; c = c->next) {
                if (c->fd >= 0 && c->relay == (relays == 1)) {
                    sq__kvs_conn_close(s, c);
                }
            }
        }
    }
    for (uint32_t b = 0; b < ENTRY_BUCKETS; b++) {
        while (s->ents[b] != NULL) {
            struct entry *e = s->ents[b];
            struct agg *agg = e->agg;
            struct sq_kv_frame a = {
                .op = e->op, .status = SQ_ENOQUORUM, .client = e->client, .req_id = e->req_id};
            struct conn *o = agg == NULL ? sq__kvs_conn_by_id(s, e->origin) : NULL;
            sq__kvs_entry_free(s, e);
            if (agg != NULL) {
                sq__kvs_agg_part(s, agg, &a); /* answers nobody: its connection is closed */
            } else if (o != NULL && o->answer != NULL) {
                /* an in-process client has no connection to lose: it is told to go elsewhere
                 * (and resends with the same request number) */
                sq__kvs_conn_send(s, o, &a);
            }
        }
    }
    pthread_mutex_lock(&s->mu);
    free_dones(s);
    for (uint32_t g = 0; g < SQ_MAX_SUBGROUPS; g++) {
        sq__kv_store_destroy(s->store[g]);
        s->store[g] = NULL;
        s->store_shard[g] = 0;
        s->my_shard[g] = SQ_NO_SHARD;
        s->persisted[g] = 0;
    }
    s->npools = 0;
    s->view_id = s->nmembers = s->adequate = 0;
    s->have_view = s->meta_ready = s->resend = false;
    s->m = NULL;
    pthread_mutex_unlock(&s->mu);
}

bool sq__kvs_flush_conns(struct sq_kv_server *s)
{
    bool left = false;
    for (struct conn *c = s->conns; c != NULL; c = c->next) {
        if (!c->dead && c->out.len > c->out.off) {
            sq__kvs_conn_flush(s, c);
            left |= !c->dead && c->out.len > c->out.off;
        }
        if (c->dead && c->fd >= 0) {
            sq__kvs_conn_close(s, c);
        }
    }
    return left;
}

void sq__kvs_help(struct sq_kv_server *s)
{
    if (pthread_mutex_trylock(&s->svc_mu) != 0) {
        sq__kvs_wake(s); /* busy: it takes them when done */
        return;
    }
    bool done = s->svc_open && !atomic_load(&s->detached) && sq__kvs_process_dones(s, true);
    if (done) {
        (void)sq__kvs_flush_conns(s);
    }
    pthread_mutex_unlock(&s->svc_mu);
    if (!done) {
        sq__kvs_wake(s);
    }
}

static void *service_main(void *arg)
{
    struct sq_kv_server *s = arg;
    struct epoll_event evs[64];
    pthread_mutex_lock(&s->svc_mu);
    while (!atomic_load(&s->stop)) {
        pthread_mutex_lock(&s->mu);
        bool detach_req = s->detach_req;
        pthread_mutex_unlock(&s->mu);
        if (detach_req) {
            detach(s);
            pthread_mutex_lock(&s->mu);
            s->detach_req = false;
            pthread_cond_broadcast(&s->detach_cv);
            pthread_mutex_unlock(&s->mu);
        }
        int timeout = s->outbox != NULL ? 2 : 500;
        pthread_mutex_unlock(&s->svc_mu);
        int n = epoll_wait(s->ep, evs, 64, timeout);
        pthread_mutex_lock(&s->svc_mu);
        for (int i = 0; i < n; i++) {
            uint64_t id = evs[i].data.u64;
            if (id == 0) {
                sq__kvs_accept(s);
                continue;
            }
            if (id == 1) {
                uint64_t v;
                ssize_t r = read(s->efd, &v, sizeof(v));
                (void)r;
                continue;
            }
            struct conn *c = sq__kvs_conn_by_id(s, id);
            if (c == NULL) {
                continue;
            }
            if (evs[i].events & EPOLLIN) {
                sq__kvs_conn_read(s, c);
            }
            if (!c->dead && (evs[i].events & EPOLLOUT)) {
                sq__kvs_conn_flush(s, c);
            }
            if (!c->dead && (evs[i].events & (EPOLLERR | EPOLLHUP)) && !(evs[i].events & EPOLLIN)) {
                c->dead = true;
            }
            if (c->dead) {
                sq__kvs_conn_close(s, c);
            }
        }
        (void)sq__kvs_process_dones(s, false);
        sq__kvs_flush_outbox(s);
        (void)sq__kvs_flush_conns(s);
        sweep(s);
    }
    s->svc_open = false;
    pthread_mutex_unlock(&s->svc_mu);
    return NULL;
}

bool sq__kv_server_ready(struct sq_kv_server *s)
{
    pthread_mutex_lock(&s->mu);
    bool ready = s->have_view && s->meta_ready;
    for (uint32_t g = 0; ready && g < s->cfg.nsubgroups; g++) {
        ready = (int)g == s->meta || s->my_shard[g] == SQ_NO_SHARD || s->store[g] != NULL;
    }
    pthread_mutex_unlock(&s->mu);
    return ready;
}

int sq__kv_config_serves(const char *config_path)
{
    static struct sq_config cfg; /* large: not on the stack; called once, from main */
    char err[256];
    if (sq__config_load(&cfg, config_path, err, sizeof(err)) != 0) {
        return 0;
    }
    int r = sq__config_rank_of(&cfg, cfg.self_id);
    return r >= 0 && cfg.members[r].client_port != 0;
}

int sq__kv_server_create(struct sq_kv_server **out, sq_member *m, const char *config_path,
                         char *err, size_t err_size)
{
    *out = NULL;
    struct sq_kv_server *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return SQ_ENOMEM;
    }
    s->lfd = s->efd = s->ep = -1;
    int rc = sq__config_load(&s->cfg, config_path, err, err_size);
    if (rc != 0) {
        free(s);
        return rc;
    }
    s->m = m;
    s->my_id = s->cfg.self_id;
    int r = sq__config_rank_of(&s->cfg, s->my_id);
    s->client_port = s->cfg.members[r].client_port;
    s->meta = sq__config_subgroup(&s->cfg, "meta");
    const struct sq_subgroup_cfg *meta = s->meta >= 0 ? &s->cfg.subgroups[s->meta] : NULL;
    if (s->client_port == 0) {
        snprintf(err, err_size, "%s: [member.%u] has no client_port", config_path, s->my_id);
        rc = SQ_ECONFIG;
    } else if (meta == NULL || !meta->persistent || meta->shards != 1 ||
               (meta->max_members != 0 && meta->max_members < s->cfg.nmembers)) {
        snprintf(err, err_size,
                 "%s: the key-value service needs [subgroup.meta] with delivery "
                 "= persistent, one shard and every member (it keeps the pool table)",
                 config_path);
        rc = SQ_ECONFIG;
    }
    for (uint32_t g = 0; rc == 0 && g < s->cfg.nsubgroups; g++) {
        s->logcap = SQ_MAX(s->logcap, (size_t)s->cfg.subgroups[g].max_payload);
    }
    if (rc == 0) {
        /* Before the member starts: a bad certificate is a configuration error, not a member
         * that joins the group and then fails. */
        rc = sq__kvs_tls_init(s, err, err_size);
    }
    if (rc == 0) {
        s->logbuf = malloc(s->logcap);
        s->wb = calloc(WATCH_BUCKETS, sizeof(*s->wb));
        s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        s->ep = epoll_create1(EPOLL_CLOEXEC);
        if (s->logbuf == NULL || s->wb == NULL) {
            rc = SQ_ENOMEM;
        } else if (s->efd < 0 || s->ep < 0) {
            snprintf(err, err_size, "eventfd/epoll: %s", strerror(errno));
            rc = SQ_EIO;
        }
    }
    if (rc != 0) {
        sq__kv_server_destroy(s);
        return rc;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->svc_mu, NULL);
    pthread_cond_init(&s->detach_cv, NULL);
    s->mu_ready = true;
    s->next_conn = 1; /* 0 is the listener, 1 the wake-up */
    for (uint32_t g = 0; g < SQ_MAX_SUBGROUPS; g++) {
        s->my_shard[g] = SQ_NO_SHARD;
    }
    sq__kv_server_attach(s, m);
    atomic_store(&s->detached, false); /* the first incarnation: served once started */
    *out = s;
    return 0;
}

void sq__kv_server_attach(struct sq_kv_server *s, sq_member *m)
{
    sq_member_on_deliver(m, sq__kvs_on_deliver, s);
    sq_member_on_view(m, sq__kvs_on_view, s);
    sq_member_on_state(m, sq__kvs_save_state, sq__kvs_load_state, s);
    sq_member_on_persisted(m, sq__kvs_on_persisted, s);
    pthread_mutex_lock(&s->mu);
    s->m = m;
    pthread_mutex_unlock(&s->mu);
}

bool sq__kv_server_rejoins(const struct sq_kv_server *s)
{
    return s->cfg.rejoin;
}

int sq__kv_server_connect_timeout_ms(const struct sq_kv_server *s)
{
    return s->cfg.connect_timeout_ms;
}

void sq__kv_server_detach(struct sq_kv_server *s, const char *why)
{
    pthread_mutex_lock(&s->mu);
    snprintf(s->detached_why, sizeof(s->detached_why), "%s", why);
    if (!s->started) {
        pthread_mutex_unlock(&s->mu);
        detach(s); /* no service thread to race with */
        return;
    }
    s->detach_req = true;
    sq__kvs_wake(s);
    while (s->detach_req) {
        pthread_cond_wait(&s->detach_cv, &s->mu);
    }
    pthread_mutex_unlock(&s->mu);
}

int sq__kv_server_start(struct sq_kv_server *s, char *err, size_t err_size)
{
    int r = sq__config_rank_of(&s->cfg, s->my_id);
    char port[16];
    snprintf(port, sizeof(port), "%u", s->client_port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE},
                    *ai = NULL;
    int gai = getaddrinfo(s->cfg.members[r].host, port, &hints, &ai);
    if (gai != 0 || ai == NULL) {
        snprintf(err, err_size, "client address %s:%s: %s", s->cfg.members[r].host, port,
                 gai_strerror(gai));
        return SQ_ECONFIG;
    }
    s->lfd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (s->lfd >= 0) {
        setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    }
    if (s->lfd < 0 || bind(s->lfd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(s->lfd, 128) != 0) {
        snprintf(err, err_size, "cannot listen on client port %s:%s: %s", s->cfg.members[r].host,
                 port, strerror(errno));
        freeaddrinfo(ai);
        return SQ_EIO;
    }
    freeaddrinfo(ai);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0};
    epoll_ctl(s->ep, EPOLL_CTL_ADD, s->lfd, &ev);
    ev.data.u64 = 1;
    epoll_ctl(s->ep, EPOLL_CTL_ADD, s->efd, &ev);
    s->svc_open = true; /* before the thread: nothing else holds svc_mu yet */
    if (pthread_create(&s->thread, NULL, service_main, s) != 0) {
        s->svc_open = false;
        snprintf(err, err_size, "cannot start the service thread");
        return SQ_ENOMEM;
    }
    s->started = true;
    return 0;
}

void sq__kv_server_stop(struct sq_kv_server *s)
{
    if (s == NULL || !s->started) {
        return;
    }
    atomic_store(&s->stop, true);
    sq__kvs_wake(s);
    pthread_join(s->thread, NULL);
    s->started = false;
    pthread_mutex_lock(&s->svc_mu); /* the loop thread no longer helps (svc_open) */
    for (struct conn *c = s->conns; c != NULL; c = c->next) {
        if (c->fd >= 0) {
            sq__kvs_conn_flush(s, c);
            sq__kvs_tls_drop(c);
            close(c->fd);
            c->fd = -1;
        }
    }
    pthread_mutex_unlock(&s->svc_mu);
}

void sq__kv_server_destroy(struct sq_kv_server *s)
{
    if (s == NULL) {
        return;
    }
    sq__kv_server_stop(s);
    while (s->conns != NULL) {
        struct conn *c = s->conns;
        s->conns = c->next;
        sq__kvs_tls_drop(c);
        if (c->fd >= 0) {
            close(c->fd);
        }
        sq__buf_free(&c->in);
        free(c->pend);
        sq__buf_free(&c->out);
        free(c);
    }
    for (uint32_t b = 0; b < ENTRY_BUCKETS; b++) {
        while (s->ents[b] != NULL) {
            struct entry *e = s->ents[b];
            s->ents[b] = e->next;
            if (e->agg != NULL && e->agg->remaining <= 1) {
                sq__buf_free(&e->agg->items);
                free(e->agg);
            } else if (e->agg != NULL) {
                e->agg->remaining--;
            }
            free(e->opbuf);
            free(e);
        }
    }
    if (s->wb != NULL) {
        for (uint32_t b = 0; b < WATCH_BUCKETS; b++) {
            while (s->wb[b] != NULL) {
                struct watch *w = s->wb[b];
                s->wb[b] = w->next;
                free(w->target);
                free(w);
            }
        }
    }
    free_dones(s);
    for (uint32_t g = 0; g < SQ_MAX_SUBGROUPS; g++) {
        sq__kv_store_destroy(s->store[g]);
    }
    if (s->lfd >= 0) {
        close(s->lfd);
    }
    if (s->efd >= 0) {
        close(s->efd);
    }
    if (s->ep >= 0) {
        close(s->ep);
    }
    sq__kvs_tls_free(s);
    explicit_bzero(s->cfg.group_key, sizeof(s->cfg.group_key));
    free(s->wb);
    free(s->logbuf);
    if (s->mu_ready) {
        pthread_mutex_destroy(&s->mu);
        pthread_mutex_destroy(&s->svc_mu);
        pthread_cond_destroy(&s->detach_cv);
    }
    free(s);
}
