/* fabric_hello.h: the hello that members exchange as connection data (fabric_connect.c), how
 * one is checked, and the group-key handshake it carries (challenges, seals). */
#ifndef SQ_FABRIC_HELLO_H
#define SQ_FABRIC_HELLO_H

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "fabric_auth.h"

struct fabric;
struct peer;

#define HELLO_MAGIC 0x4c4c5153u /* "SQLL" */
#define HELLO_VERSION 7u

/* Exchanged as connection private data, both ways. Little-endian on the wire (the build is
 * little-endian only, see common.h).
 *
 * With a group key ([group] key_file) a connection takes two tries. The connector's first hello
 * asks for a challenge (HELLO_AUTH, no nonces, no secret) and the acceptor refuses it with a
 * fresh nonce of its own (REJ_CHALLENGE). The second answers it: its own fresh nonce, the
 * challenge echoed, and `secret` sealed under a session key derived from the group key and both
 * nonces, which proves the connector holds the key (the challenge is good for one answer, so a
 * replayed hello fails) and hides its memory key. The acceptor answers with its own seal under
 * the same session key (the other direction), which proves it to the connector. Nothing of a
 * peer's hello is used before its seal opened, and no memory key leaves a member unsealed. */
struct hello {
    uint32_t magic;
    uint16_t version;
    uint16_t reject_reason; /* set only in fi_reject data */
    uint32_t id;
    uint32_t rank;
    uint64_t digest;
    uint64_t table_bytes;
    uint32_t flags;   /* HELLO_JOINING from a member joining a running group, HELLO_RUNNING back */
    uint32_t view_id; /* with HELLO_RUNNING: the current view... */
    uint64_t view_peers;     /* ...and its members, by peer index */
    uint64_t incarnation;    /* random per process: tells a restarted member from a stale probe */
    struct sq_log_tail tail; /* what this member's logs hold (a restart goes on from them) */
    uint32_t to_rank;        /* whom it is for */
    uint32_t pad;
    uint8_t nonce[SQ_AUTH_NONCE_BYTES]; /* the sender's: an answer's, or a challenge (a reject) */
    uint8_t echo[SQ_AUTH_NONCE_BYTES];  /* the other side's nonce this hello answers */
    /* Sealed (encrypted, and authenticated with every field above) when the group has a key. */
    struct {
        uint64_t mr_key;
        uint64_t mr_addr; /* base address, for FI_MR_VIRT_ADDR providers; 0 otherwise */
    } secret;
    uint8_t tag[SQ_AUTH_TAG_BYTES];
};
static_assert(sizeof(struct hello) == 248, "hello is a wire format");

#define HELLO_JOINING 1u
#define HELLO_RUNNING 2u
#define HELLO_AUTH 4u /* the sender holds a group key */

#define HELLO_JOINING 1u
#define HELLO_RUNNING 2u
#define HELLO_AUTH 4u /* the sender holds a group key */

enum reject_reason {
    REJ_NONE,
    REJ_BAD_HELLO,
    REJ_MISMATCH,
    REJ_DUPLICATE,
    REJ_UNKNOWN_MEMBER,
    REJ_NOT_RUNNING,
    REJ_PROBE,
    REJ_CHALLENGE,
    REJ_AUTH_REQUIRED,
    REJ_AUTH_FAILED,
    REJ_NO_KEY,
};
/* What a reject reason says, for logs and errors. */
const char *sq__hello_reject_text(int why);

/* A hello from this member to `to_rank`, its memory key in the clear (not sealed yet). */
void sq__hello_make(const struct fabric *f, struct hello *h, uint32_t to_rank,
                    const struct sq_log_tail *tail);

/* Seals a hello made by sq__hello_make: the connector's answer to challenge `na` with its fresh
 * `nc` (dir SQ_AUTH_CONNECT), or the acceptor's answer to it (SQ_AUTH_ACCEPT). Returns 0 or
 * SQ_EIO. */
int sq__hello_seal(const struct fabric *f, struct hello *h, enum sq_auth_dir dir,
                   const uint8_t nc[SQ_AUTH_NONCE_BYTES], const uint8_t na[SQ_AUTH_NONCE_BYTES]);

/* Accepting: a fresh challenge for a connector claiming `rank` (< nmembers), remembered for one
 * answer within CHALLENGE_TTL_MS. Returns 0 or SQ_EIO. */
int sq__hello_challenge(struct fabric *f, uint32_t rank, uint8_t nonce[SQ_AUTH_NONCE_BYTES]);

/* Checks a peer's hello of `len` bytes and copies it to `h`, its secret decrypted when the
 * group has a key; returns the reject reason (REJ_NONE: take it). `p`: the peer we connected
 * to (NULL when accepting). With a key, nothing but a hello sealed with it for a challenge of
 * ours (accepting) or for our answer (connecting) is ever REJ_NONE. */
int sq__hello_check(struct fabric *f, const void *data, size_t len, bool accepting,
                    const struct peer *p, struct hello *h);

#endif
