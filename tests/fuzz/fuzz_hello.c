/* fuzz_hello.c: a libFuzzer target for the hello members exchange when they connect
 * (src/transport/fabric/fabric_hello.c), on both sides of a connection, with and without a
 * group key. Properties: no input crashes the check; with a key, no hello is taken that was not
 * sealed with it for this very handshake (a forgery, or a replay of a sealed one, is refused);
 * a hello sealed right is taken, its memory key intact, whatever else it says. Built and run by
 * run.sh. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fabric_hello.h"
#include "fabric_internal.h"

#define MUST(cond)                                                                                 \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_hello.c:%d: property failed: %s\n", __LINE__, #cond);            \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* The first input byte says how to run: */
#define M_ACCEPTING 1u /* we accept (else: the hello answers our connect to rank 2) */
#define M_KEY 2u       /* the group has a key */
#define M_RUNNING 4u   /* the group runs */
#define M_SEAL 8u      /* seal the rest as a holder of the key answering us would */
#define M_IDENTITY 16u /* make magic, version, rank, id, digest and table size right */
#define M_REPLAY 32u   /* accepting: check the sealed hello twice */

static struct sq_config g_cfg;
static struct fabric g_f;

static void setup(uint8_t mode, uint8_t salt)
{
    memset(&g_cfg, 0, sizeof(g_cfg));
    memset(&g_f, 0, sizeof(g_f));
    g_cfg.nmembers = 3;
    for (uint32_t r = 0; r < 3; r++) {
        g_cfg.members[r].id = 10 + r;
    }
    g_cfg.self_id = 11;
    g_cfg.has_key = (mode & M_KEY) != 0;
    for (size_t i = 0; i < sizeof(g_cfg.group_key); i++) {
        g_cfg.group_key[i] = (uint8_t)(i * 13 + 1);
    }
    g_f.cfg = &g_cfg;
    g_f.base.nmembers = 3;
    g_f.base.my_rank = 1;
    g_f.digest = 0x5eed0000deadbeefull;
    g_f.table_bytes = 65536;
    g_f.running = (mode & M_RUNNING) != 0;
    for (uint32_t r = 0; r < 3; r++) {
        g_f.peers[r].rank = r;
        g_f.peers[r].id = 10 + r;
        g_f.peers[r].incarnation = salt & 1 ? 0 : 77;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    uint8_t mode = data[0];
    data++;
    size--;
    setup(mode, size > 0 ? data[0] : 0);
    const bool accepting = (mode & M_ACCEPTING) != 0;
    struct peer *p = accepting ? NULL : &g_f.peers[2];
    struct hello h, in;

    /* The raw bytes, as a stranger could send them: never crash, never taken with a key. */
    int why = sq__hello_check(&g_f, data, size, accepting, p, &h);
    MUST(why >= REJ_NONE && why <= REJ_NO_KEY);
    MUST(sq__hello_reject_text(why) != NULL);
    if (g_cfg.has_key) {
        MUST(why != REJ_NONE);
    }
    if (size < sizeof(in)) {
        MUST(why == REJ_BAD_HELLO);
        return 0;
    }
    if (!(mode & M_SEAL) || !g_cfg.has_key) {
        return 0;
    }

    /* Sealed right for this handshake, as the peer holding the key would. */
    memcpy(&in, data, sizeof(in));
    if (mode & M_IDENTITY) {
        in.magic = HELLO_MAGIC;
        in.version = HELLO_VERSION;
        in.rank = accepting ? in.rank % 3 : 2;
        in.id = 10 + in.rank;
        in.digest = g_f.digest;
        in.table_bytes = g_f.table_bytes;
    }
    in.flags |= HELLO_AUTH;
    in.to_rank = 1;
    const uint64_t mr_key = in.secret.mr_key, mr_addr = in.secret.mr_addr;
    uint8_t nc[SQ_AUTH_NONCE_BYTES], na[SQ_AUTH_NONCE_BYTES];
    MUST(sq__auth_nonce(nc) == 0);
    if (accepting) {
        MUST(in.rank < 3 || !(mode & M_IDENTITY));
        if (in.rank >= 3) {
            return 0; /* not a member: refused before any challenge (checked above) */
        }
        MUST(sq__hello_challenge(&g_f, in.rank, na) == 0);
    } else {
        MUST(sq__auth_nonce(na) == 0);
        memcpy(p->my_nonce, nc, sizeof(nc));
        memcpy(p->challenge, na, sizeof(na));
        p->answered = true; /* our attempt answered that challenge */
    }
    /* sq__hello_seal takes the sealer's key (ours) and the digest the hello carries. */
    MUST(sq__hello_seal(&g_f, &in, accepting ? SQ_AUTH_CONNECT : SQ_AUTH_ACCEPT, nc, na) == 0);
    why = sq__hello_check(&g_f, &in, sizeof(in), accepting, p, &h);
    MUST(why >= REJ_NONE && why <= REJ_NO_KEY);
    const bool identity_ok = in.magic == HELLO_MAGIC && in.version == HELLO_VERSION &&
                             in.rank < 3 && in.id == 10 + in.rank && in.digest == g_f.digest &&
                             in.table_bytes == g_f.table_bytes &&
                             (accepting ? in.rank != 1 : in.rank == 2);
    if (identity_ok) {
        /* Past the identity, the seal opens: whatever is refused now is not for the key. */
        MUST(why != REJ_AUTH_FAILED && why != REJ_AUTH_REQUIRED && why != REJ_CHALLENGE &&
             why != REJ_NO_KEY);
        MUST(h.secret.mr_key == mr_key && h.secret.mr_addr == mr_addr);
        if (accepting && (mode & M_REPLAY)) {
            /* The challenge was good for one answer: the same bytes again are refused. */
            int again = sq__hello_check(&g_f, &in, sizeof(in), accepting, p, &h);
            MUST(again == REJ_CHALLENGE);
        }
    } else {
        MUST(why == REJ_BAD_HELLO || why == REJ_UNKNOWN_MEMBER || why == REJ_MISMATCH);
    }
    /* One bit flipped anywhere in what the seal covers: never taken. */
    if (identity_ok && accepting) {
        MUST(sq__hello_challenge(&g_f, in.rank, na) == 0);
        MUST(sq__hello_seal(&g_f, &in, SQ_AUTH_CONNECT, nc, na) == 0);
        size_t at = (size_t)(mr_key % sizeof(in));
        if (at >= offsetof(struct hello, nonce) && at < offsetof(struct hello, secret)) {
            return 0; /* a changed nonce or echo names another challenge: covered above */
        }
        ((uint8_t *)&in)[at] ^= 1;
        why = sq__hello_check(&g_f, &in, sizeof(in), accepting, p, &h);
        MUST(why != REJ_NONE);
    }
    return 0;
}
