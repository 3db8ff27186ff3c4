/* fabric_hello.c: the members' hello and the group-key handshake it carries (fabric_hello.h). */
#include "fabric_hello.h"

#include <rdma/fabric.h>
#include <rdma/fi_domain.h>
#include <string.h>

#include "common.h"
#include "fabric_internal.h"
#include "squall/errors.h"

static_assert(sizeof(struct hello) <= 256, "a hello fits fabric_connect.c's event buffers");

static const char *const reject_text[] = {
    "no reason",
    "malformed hello",
    "configuration mismatch (member list, subgroup or table size)",
    "already connected",
    "not a member of the configured group",
    "the group is still forming (start with the others, or join later)",
    "forming: the higher rank connects",
    "authenticate first (a challenge)",
    "the group has a key ([group] key_file) and the connecting member has none",
    "authentication failed: the members' group keys differ ([group] key_file)",
    "the connecting member has a group key ([group] key_file) and the accepting one has none"};
static_assert(SQ_ARRAY_LEN(reject_text) == REJ_NO_KEY + 1, "a text for every reason");

const char *sq__hello_reject_text(int why)
{
    return why >= 0 && (size_t)why < SQ_ARRAY_LEN(reject_text) ? reject_text[why]
                                                               : "unknown reason";
}

static const uint8_t zero_nonce[SQ_AUTH_NONCE_BYTES];

/* The fields a seal authenticates: all before `secret`. */
#define HELLO_AAD_BYTES offsetof(struct hello, secret)

void sq__hello_make(const struct fabric *f, struct hello *h, uint32_t to_rank,
                    const struct sq_log_tail *tail)
{
    memset(h, 0, sizeof(*h));
    h->magic = HELLO_MAGIC;
    h->version = HELLO_VERSION;
    h->id = f->cfg->self_id;
    h->rank = f->base.my_rank;
    h->digest = f->digest;
    h->table_bytes = f->table_bytes;
    h->secret.mr_key = fi_mr_key(f->mr);
    h->secret.mr_addr = f->virt_addr ? (uint64_t)(uintptr_t)f->table : 0;
    h->flags = (f->joining ? HELLO_JOINING : 0) | (f->running ? HELLO_RUNNING : 0) |
               (f->cfg->has_key ? HELLO_AUTH : 0);
    h->view_id = f->view_id;
    h->view_peers = f->view_peers;
    h->incarnation = f->incarnation;
    h->tail = *tail;
    h->to_rank = to_rank;
}

int sq__hello_seal(const struct fabric *f, struct hello *h, enum sq_auth_dir dir,
                   const uint8_t nc[SQ_AUTH_NONCE_BYTES], const uint8_t na[SQ_AUTH_NONCE_BYTES])
{
    memcpy(h->nonce, dir == SQ_AUTH_CONNECT ? nc : na, SQ_AUTH_NONCE_BYTES);
    memcpy(h->echo, dir == SQ_AUTH_CONNECT ? na : nc, SQ_AUTH_NONCE_BYTES);
    return sq__auth_seal(f->cfg->group_key, h->digest, nc, na, dir, h, HELLO_AAD_BYTES,
                         (uint8_t *)&h->secret, sizeof(h->secret), h->tag);
}

/* Whether the peer's hello opens as a seal for us in direction `dir` (decrypting its secret). */
static bool open_hello(const struct fabric *f, struct hello *h, enum sq_auth_dir dir,
                       const uint8_t nc[SQ_AUTH_NONCE_BYTES], const uint8_t na[SQ_AUTH_NONCE_BYTES])
{
    return sq__auth_open(f->cfg->group_key, h->digest, nc, na, dir, h, HELLO_AAD_BYTES,
                         (uint8_t *)&h->secret, sizeof(h->secret), h->tag) &&
           h->to_rank == f->base.my_rank;
}

int sq__hello_challenge(struct fabric *f, uint32_t rank, uint8_t nonce[SQ_AUTH_NONCE_BYTES])
{
    int rc = sq__auth_nonce(nonce);
    if (rc != 0) {
        return rc;
    }
    struct challenge *c = &f->challenges[rank][f->challenge_next[rank]++ % CHALLENGES_PER_RANK];
    memcpy(c->nonce, nonce, SQ_AUTH_NONCE_BYTES);
    c->expires_ms = sq__mono_ms() + CHALLENGE_TTL_MS;
    return 0;
}

/* Accepting: the live challenge of ours to `rank` that `echo` names, or NULL. */
static struct challenge *find_challenge(struct fabric *f, uint32_t rank,
                                        const uint8_t echo[SQ_AUTH_NONCE_BYTES])
{
    uint64_t now = sq__mono_ms();
    for (uint32_t i = 0; i < CHALLENGES_PER_RANK; i++) {
        struct challenge *c = &f->challenges[rank][i];
        if (c->expires_ms != 0 && memcmp(c->nonce, echo, SQ_AUTH_NONCE_BYTES) == 0) {
            if (now >= c->expires_ms) {
                memset(c, 0, sizeof(*c));
                return NULL;
            }
            return c;
        }
    }
    return NULL;
}

/* The group-key half of checking a hello (the identity was checked): accepting, the connector
 * answered a live challenge of ours with a seal that opens; connecting, the acceptor sealed its
 * answer for the challenge we answered. Decrypts the secret; returns the reject reason. */
static int check_auth(struct fabric *f, struct hello *h, bool accepting, const struct peer *p)
{
    bool theirs = (h->flags & HELLO_AUTH) != 0;
    if (!f->cfg->has_key) {
        return theirs ? REJ_NO_KEY : REJ_NONE;
    }
    if (!theirs) {
        return REJ_AUTH_REQUIRED;
    }
    if (accepting) {
        struct challenge *ch = memcmp(h->echo, zero_nonce, sizeof(zero_nonce)) == 0
                                   ? NULL
                                   : find_challenge(f, h->rank, h->echo);
        if (ch == NULL) {
            return REJ_CHALLENGE; /* a first try, or an answer to a challenge long gone */
        }
        uint8_t nc[SQ_AUTH_NONCE_BYTES], na[SQ_AUTH_NONCE_BYTES];
        memcpy(nc, h->nonce, sizeof(nc));
        memcpy(na, h->echo, sizeof(na));
        if (!open_hello(f, h, SQ_AUTH_CONNECT, nc, na)) {
            return REJ_AUTH_FAILED; /* the challenge stays for the real answer */
        }
        memset(ch, 0, sizeof(*ch)); /* good for one answer: a replay of this one fails */
        return REJ_NONE;
    }
    /* Connecting: only an attempt that answered a challenge can be accepted, and its accept
     * must be sealed for that attempt's own fresh nonce (not an earlier attempt's). */
    if (!p->answered || memcmp(h->echo, p->my_nonce, sizeof(p->my_nonce)) != 0 ||
        memcmp(h->nonce, p->challenge, sizeof(p->challenge)) != 0) {
        return REJ_AUTH_FAILED;
    }
    return open_hello(f, h, SQ_AUTH_ACCEPT, p->my_nonce, p->challenge) ? REJ_NONE : REJ_AUTH_FAILED;
}

int sq__hello_check(struct fabric *f, const void *data, size_t len, bool accepting,
                    const struct peer *p, struct hello *h)
{
    memset(h, 0, sizeof(*h));
    if (len < sizeof(*h)) {
        return REJ_BAD_HELLO;
    }
    memcpy(h, data, sizeof(*h));
    if (h->magic != HELLO_MAGIC || h->version != HELLO_VERSION) {
        return REJ_BAD_HELLO;
    }
    if (h->rank >= f->base.nmembers || f->cfg->members[h->rank].id != h->id) {
        return REJ_UNKNOWN_MEMBER;
    }
    if (accepting && h->rank == f->base.my_rank) {
        return REJ_UNKNOWN_MEMBER;
    }
    if (!accepting && h->rank != p->rank) {
        return REJ_UNKNOWN_MEMBER;
    }
    /* With a key, the configuration digest is compared once the seal (which covers it, and
     * whose session key is derived with the sender's digest) opened: a member may then act on
     * a mismatch, which no stranger can fake. */
    int why = check_auth(f, h, accepting, p);
    if (why != REJ_NONE) {
        return why;
    }
    if (h->digest != f->digest || h->table_bytes != f->table_bytes) {
        return REJ_MISMATCH;
    }
    if (accepting && f->running) {
        if (!(h->flags & HELLO_JOINING) && f->peers[h->rank].incarnation == h->incarnation) {
            /* A probe the same process sent while we were both forming; it has closed that
             * endpoint since (our own connection reached it first). Not a rejoin. */
            return REJ_PROBE;
        }
        return REJ_NONE; /* a member (re)joining: it replaces whatever link we had with it */
    }
    if (accepting && (h->flags & HELLO_JOINING)) {
        return REJ_NOT_RUNNING;
    }
    if (accepting && h->rank < f->base.my_rank) {
        return REJ_PROBE; /* a lower rank checking whether the group already runs */
    }
    /* The higher rank connects; an accept only comes from above us. */
    if (accepting && (h->rank <= f->base.my_rank || f->peers[h->rank].state == P_UP)) {
        return REJ_DUPLICATE;
    }
    return REJ_NONE;
}
