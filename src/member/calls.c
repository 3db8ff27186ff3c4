/* calls.c: point-to-point queries and ordered calls, their replies and their bounds. */
#include <assert.h>
#include <string.h>

#include "common.h"
#include "log.h"
#include "member/member_internal.h"

/* An ordered call's payload starts with the call id and the caller's peer index. */
#define CALL_HDR 16u
/* Reply status travels in the first 4 bytes of a reply (a negative SQ_E* or 0). */
#define REPLY_HDR 8u
static_assert(SQ_QUERY_MAX_BYTES + REPLY_HDR <= SQ_P2P_MAX_PAYLOAD, "query sizes");

static struct pending_call *find_call(sq_member *m, uint64_t id)
{
    for (uint32_t i = 0; i < MAX_CALLS; i++) {
        if (m->calls[i].id != 0 && m->calls[i].id == id) {
            return &m->calls[i];
        }
    }
    return NULL;
}

static void check_call_done(struct pending_call *c)
{
    if (c->delivered && !c->done && (c->expect & ~c->got) == 0) {
        c->done = true;
    }
}

static void add_call_reply(sq_member *m, struct pending_call *c, uint32_t peer, int status,
                           const void *data, size_t len)
{
    if ((c->got >> peer) & 1u) {
        return;
    }
    c->got |= 1ull << peer;
    if (c->n < c->max) {
        sq_reply *r = &c->replies[c->n++];
        r->member_id = m->peer_ids[peer];
        r->status = status;
        r->size = len;
        if (len > 0) {
            memcpy(r->data, data, SQ_MIN(len, sizeof(r->data)));
        }
    }
    check_call_done(c);
}

void sq__member_settle_calls(sq_member *m, uint64_t next_peers)
{
    for (uint32_t i = 0; i < MAX_CALLS; i++) {
        struct pending_call *pc = &m->calls[i];
        if (pc->id == 0 || pc->done) {
            continue;
        }
        if (!pc->delivered) {
            pc->done = true; /* it was past the trim: never delivered anywhere */
            pc->rc = SQ_EVIEWCHANGE;
            continue;
        }
        for (uint32_t p = 0; p < m->cfg.nmembers; p++) {
            if (((pc->expect & ~pc->got) >> p) & 1u && !((next_peers >> p) & 1u)) {
                add_call_reply(m, pc, p, SQ_EPEER, NULL, 0); /* it left before answering */
            }
        }
    }
}

/* Runs the ordered-call handler for a call delivered here and sends the answer to the caller
 * (or keeps it, when I am the caller). */
void sq__member_handle_call(sq_member *m, const sq_message *msg)
{
    static uint8_t reply[SQ_P2P_MAX_PAYLOAD]; /* loop thread only */
    if (msg->size < CALL_HDR) {
        sq__log(SQ_LOG_WARN, "ignoring a malformed ordered call from member %u", msg->sender_id);
        return;
    }
    uint64_t id, caller;
    memcpy(&id, msg->data, 8);
    memcpy(&caller, (const uint8_t *)msg->data + 8, 8);
    sq_message call = *msg;
    call.data = (const uint8_t *)msg->data + CALL_HDR;
    call.size = msg->size - CALL_HDR;
    size_t len = 0;
    int32_t status = SQ_ENOTSUP;
    if (m->on_call != NULL) {
        status = m->on_call(m->on_call_arg, &call, reply + REPLY_HDR, SQ_QUERY_MAX_BYTES, &len);
    }
    if (len > SQ_QUERY_MAX_BYTES) {
        status = SQ_EMSGSIZE;
        len = 0;
    }
    if (caller == m->self_peer) {
        struct pending_call *c = find_call(m, id);
        if (c != NULL) {
            c->delivered = true;
            /* Every member of the shard it was delivered in answers. */
            const struct sq__sst *sh = &m->g.shard[msg->subgroup].sst;
            for (uint32_t r = 0; r < sh->L.nmembers; r++) {
                c->expect |= 1ull << sh->member_peers[r];
            }
            add_call_reply(m, c, m->self_peer, status, reply + REPLY_HDR, len);
        }
        return;
    }
    if (caller >= m->cfg.nmembers) {
        return;
    }
    memcpy(reply, &status, 4);
    memset(reply + 4, 0, 4);
    if (m->nbacklog == 0 && sq__p2p_stage(&m->p2p, (uint32_t)caller, SQ_P2P_CALL_REPLY, id, reply,
                                          REPLY_HDR + len) == 0) {
        return;
    }
    /* The caller's ring is full: keep the answer, in order, until it has room. */
    if (m->nbacklog == MAX_REPLY_BACKLOG) {
        sq__log(SQ_LOG_ERROR,
                "dropping an ordered-call reply to member %u: %d replies wait "
                "already",
                m->peer_ids[caller], MAX_REPLY_BACKLOG);
        return;
    }
    struct backlog_reply *b = &m->backlog[m->nbacklog];
    b->bytes = malloc(REPLY_HDR + len);
    if (b->bytes == NULL) {
        return;
    }
    memcpy(b->bytes, reply, REPLY_HDR + len);
    b->peer = (uint32_t)caller;
    b->id = id;
    b->len = REPLY_HDR + len;
    m->nbacklog++;
}

static void drain_backlog(sq_member *m)
{
    uint32_t k = 0;
    while (k < m->nbacklog &&
           sq__p2p_stage(&m->p2p, m->backlog[k].peer, SQ_P2P_CALL_REPLY, m->backlog[k].id,
                         m->backlog[k].bytes, m->backlog[k].len) == 0) {
        free(m->backlog[k].bytes);
        k++;
    }
    memmove(m->backlog, m->backlog + k, (m->nbacklog - k) * sizeof(m->backlog[0]));
    m->nbacklog -= k;
}

static struct pending_query *find_query(sq_member *m, uint64_t id, uint32_t peer)
{
    for (uint32_t i = 0; i < MAX_QUERIES; i++) {
        if (m->queries[i].id == id && m->queries[i].peer == peer) {
            return &m->queries[i];
        }
    }
    return NULL;
}

void sq__member_fail_queries_to(sq_member *m, uint32_t peer)
{
    for (uint32_t i = 0; i < MAX_QUERIES; i++) {
        if (m->queries[i].id != 0 && !m->queries[i].done && m->queries[i].peer == peer) {
            m->queries[i].done = true;
            m->queries[i].rc = SQ_EPEER;
        }
    }
}

/* Answers queries and takes replies from every connected member. Bounded: at most a ring's
 * worth per peer per call. */
int sq__member_serve_p2p(sq_member *m)
{
    int events = 0;
    static uint8_t reply[SQ_P2P_MAX_PAYLOAD]; /* loop thread only */
    drain_backlog(m);
    for (uint32_t p = 0; p < m->cfg.nmembers; p++) {
        struct sq__p2p_msg msg;
        for (uint32_t k = 0; k < SQ_P2P_SLOTS && sq__p2p_peek(&m->p2p, p, &msg) == 1; k++) {
            if (msg.kind == SQ_P2P_REQUEST) {
                if (!sq__p2p_can_stage(&m->p2p, p)) {
                    break; /* no room for the answer yet: the asker must read first */
                }
                size_t len = 0;
                int32_t status = SQ_ENOTSUP;
                if (m->on_query != NULL) {
                    status = m->on_query(m->on_query_arg, m->peer_ids[p], msg.data, msg.size,
                                         reply + REPLY_HDR, SQ_QUERY_MAX_BYTES, &len);
                }
                if (len > SQ_QUERY_MAX_BYTES) {
                    status = SQ_EMSGSIZE;
                    len = 0;
                }
                memcpy(reply, &status, 4);
                memset(reply + 4, 0, 4);
                (void)sq__p2p_stage(&m->p2p, p, SQ_P2P_REPLY, msg.id, reply, REPLY_HDR + len);
            } else if (msg.kind == SQ_P2P_CALL_REPLY && msg.size >= REPLY_HDR) {
                struct pending_call *c = find_call(m, msg.id);
                if (c != NULL) {
                    int32_t status;
                    memcpy(&status, msg.data, 4);
                    add_call_reply(m, c, p, status, (const uint8_t *)msg.data + REPLY_HDR,
                                   msg.size - REPLY_HDR);
                }
            } else if (msg.kind == SQ_P2P_REPLY && msg.size >= REPLY_HDR) {
                struct pending_query *q = find_query(m, msg.id, p);
                if (q != NULL && !q->done) {
                    int32_t status;
                    memcpy(&status, msg.data, 4);
                    q->len = msg.size - REPLY_HDR;
                    memcpy(q->reply, (const uint8_t *)msg.data + REPLY_HDR, SQ_MIN(q->len, q->cap));
                    q->rc = status;
                    q->done = true;
                }
            }
            sq__p2p_consume(&m->p2p, p);
            events++;
        }
    }
    (void)sq__p2p_flush(&m->p2p);
    return events;
}

int sq_member_query(sq_member *m, uint32_t member_id, const void *req, size_t req_size, void *reply,
                    size_t reply_cap, size_t *reply_len, int timeout_ms)
{
    if (m == NULL || (req == NULL && req_size > 0) || (reply == NULL && reply_cap > 0)) {
        return SQ_EINVAL;
    }
    if (req_size > SQ_QUERY_MAX_BYTES) {
        return SQ_EMSGSIZE;
    }
    int peer = sq__config_rank_of(&m->cfg, member_id);
    if (peer < 0 || (uint32_t)peer == m->self_peer) {
        return SQ_EINVAL;
    }
    if (sq__member_in_loop_thread(m)) {
        return SQ_ESTATE;
    }
    uint64_t deadline = sq__mono_ms() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms);
    pthread_mutex_lock(&m->mu);
    int rc = 0;
    struct pending_query *q = NULL;
    while ((rc = sq__member_check_running(m)) == 0) {
        if ((m->t->vt->failed_peers(m->t) >> peer) & 1u) {
            rc = SQ_EPEER;
            break;
        }
        for (uint32_t i = 0; i < MAX_QUERIES && q == NULL; i++) {
            q = m->queries[i].id == 0 ? &m->queries[i] : NULL;
        }
        if (q != NULL && sq__p2p_can_stage(&m->p2p, (uint32_t)peer)) {
            break;
        }
        q = NULL;
        if (timeout_ms >= 0 && sq__mono_ms() >= deadline) {
            rc = SQ_ETIMEDOUT;
            break;
        }
        (void)sq__member_wait_progress(m, 0);
    }
    if (rc == 0) {
        *q = (struct pending_query){
            .id = ++m->next_query_id, .peer = (uint32_t)peer, .reply = reply, .cap = reply_cap};
        rc = sq__p2p_stage(&m->p2p, (uint32_t)peer, SQ_P2P_REQUEST, q->id, req, req_size);
        m->t->vt->wake(m->t);
        while (rc == 0 && !q->done) {
            if ((rc = sq__member_check_running(m)) != 0) {
                break;
            }
            if (timeout_ms >= 0 && sq__mono_ms() >= deadline) {
                rc = SQ_ETIMEDOUT;
                break;
            }
            (void)sq__member_wait_progress(m, 0);
        }
        if (rc == 0) {
            rc = q->rc;
            if (reply_len != NULL) {
                *reply_len = q->len;
            }
        }
        q->id = 0; /* a late answer finds no one waiting */
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

int sq_member_ordered_call(sq_member *m, const void *req, size_t req_size, sq_reply *replies,
                           uint32_t max_replies, uint32_t *nreplies, int timeout_ms)
{
    return sq_member_ordered_call_in(m, 0, req, req_size, replies, max_replies, nreplies,
                                     timeout_ms);
}

int sq_member_ordered_call_in(sq_member *m, uint32_t subgroup, const void *req, size_t req_size,
                              sq_reply *replies, uint32_t max_replies, uint32_t *nreplies,
                              int timeout_ms)
{
    if (m == NULL || (req == NULL && req_size > 0) || (replies == NULL && max_replies > 0) ||
        subgroup >= m->cfg.nsubgroups) {
        return SQ_EINVAL;
    }
    if (req_size + CALL_HDR > m->cfg.subgroups[subgroup].max_payload ||
        req_size > SQ_QUERY_MAX_BYTES) {
        return SQ_EMSGSIZE;
    }
    if (sq__member_in_loop_thread(m)) {
        return SQ_ESTATE;
    }
    uint64_t deadline = sq__mono_ms() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms);
    pthread_mutex_lock(&m->mu);
    struct pending_call *c = NULL;
    for (uint32_t i = 0; i < MAX_CALLS && c == NULL; i++) {
        c = m->calls[i].id == 0 ? &m->calls[i] : NULL;
    }
    if (c == NULL) {
        pthread_mutex_unlock(&m->mu);
        return SQ_EBUSY;
    }
    *c = (struct pending_call){.id = ((uint64_t)m->self_peer << 56) | ++m->next_call_id,
                               .replies = replies,
                               .max = max_replies};
    int rc;
    do {
        void *buf = NULL;
        rc = sq__member_reserve_locked(m, subgroup, req_size + CALL_HDR, &buf, 0);
        if (rc == 0) {
            uint64_t caller = m->self_peer;
            memcpy(buf, &c->id, 8);
            memcpy((uint8_t *)buf + 8, &caller, 8);
            if (req_size > 0) {
                memcpy((uint8_t *)buf + CALL_HDR, req, req_size);
            }
            sq__smc_set_flags(&m->g.shard[subgroup], SQ_MSG_ORDERED_CALL);
            rc = sq__member_commit_locked(m, subgroup);
        }
    } while (rc == SQ_EVIEWCHANGE);
    while (rc == 0 && !c->done) {
        if ((rc = sq__member_check_running(m)) != 0) {
            break;
        }
        if (timeout_ms >= 0 && sq__mono_ms() >= deadline) {
            rc = SQ_ETIMEDOUT;
            break;
        }
        (void)sq__member_wait_progress(m, 0);
    }
    if (rc == 0) {
        rc = c->rc;
    }
    if (nreplies != NULL) {
        *nreplies = c->n;
    }
    c->id = 0;
    pthread_mutex_unlock(&m->mu);
    return rc;
}
