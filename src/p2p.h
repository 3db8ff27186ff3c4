/* p2p.h: point-to-point messages between members, outside the total order (queries and their
 * replies). Every ordered pair of members has a ring of slots in the receiver's memory that the
 * sender writes one-sided, from a staging ring in its own memory; the receiver writes back how
 * many it consumed, which frees the sender's slots. Pure logic over the transport, like smc.
 *
 * Layout of the p2p area (same offsets at every member), npeers = configured members:
 *   inbox[p]   SQ_P2P_RING_BYTES: messages from peer p to me
 *   outbox[q]  SQ_P2P_RING_BYTES: my messages to peer q, staged until q consumed them
 *   acks[p]    u64: how many of my messages peer p consumed (written by p)
 * A slot: [payload, right-aligned to the trailer][u64 seq][u32 size][u32 kind][u64 id][u64 tag]
 * with the tag (a hash of sender, receiver and seq) written last. */
#ifndef SQ_P2P_H
#define SQ_P2P_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "transport.h"

#define SQ_P2P_MAX_PEERS 32
#define SQ_P2P_SLOTS 16u
#define SQ_P2P_MAX_PAYLOAD 4096u
#define SQ_P2P_TRAILER 32u
#define SQ_P2P_SLOT_BYTES (SQ_P2P_MAX_PAYLOAD + SQ_P2P_TRAILER)
#define SQ_P2P_RING_BYTES (SQ_P2P_SLOTS * SQ_P2P_SLOT_BYTES)

enum { SQ_P2P_REQUEST = 1, SQ_P2P_REPLY = 2, SQ_P2P_CALL_REPLY = 3 };

struct sq__p2p_msg {
    uint32_t kind;
    uint64_t id;
    const void *data; /* in the inbox: valid until sq__p2p_consume */
    size_t size;
};

struct sq__p2p {
    uint8_t *mem;
    size_t base;
    uint32_t npeers;
    uint32_t me;
    struct sq_transport *t;
    uint64_t sent[SQ_P2P_MAX_PEERS];     /* messages staged for each peer */
    uint64_t pushed[SQ_P2P_MAX_PEERS];   /* of those, written to it */
    uint64_t consumed[SQ_P2P_MAX_PEERS]; /* messages from each peer consumed here */
    uint64_t acked[SQ_P2P_MAX_PEERS];    /* consumed counts already written back */
};

/* Bytes of the p2p area for `npeers` members. */
size_t sq__p2p_area_bytes(uint32_t npeers);

/* Sets up over the transport's memory `mem`, the area at offset `base` (zeroed by the caller). */
void sq__p2p_init(struct sq__p2p *p, uint8_t *mem, size_t base, uint32_t npeers, uint32_t me,
                  struct sq_transport *t);

/* The link to `peer` was replaced (it restarted): forget both directions. */
void sq__p2p_reset_peer(struct sq__p2p *p, uint32_t peer);

/* Stages a message for `peer`. SQ_EAGAIN when its ring is full (it has not consumed enough),
 * SQ_EMSGSIZE above SQ_P2P_MAX_PAYLOAD. Written by the next flush. */
int sq__p2p_stage(struct sq__p2p *p, uint32_t peer, uint32_t kind, uint64_t id, const void *data,
                  size_t size);

/* True when a message to `peer` could be staged now. */
bool sq__p2p_can_stage(const struct sq__p2p *p, uint32_t peer);

/* Writes staged messages and consumed counts through the transport. Returns 0 or an error;
 * SQ_EPEER from one peer does not stop the others (the caller learns of it from the transport). */
int sq__p2p_flush(struct sq__p2p *p);

/* The next message from `peer`, if one has arrived: 1 and *msg, else 0. */
int sq__p2p_peek(const struct sq__p2p *p, uint32_t peer, struct sq__p2p_msg *msg);

/* Done with the message sq__p2p_peek returned: its slot goes back to the sender. */
void sq__p2p_consume(struct sq__p2p *p, uint32_t peer);

#endif
