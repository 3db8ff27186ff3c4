/* transport.h: the one vtable through which the protocol core reaches other members.
 *
 * The model is the shared state table (SST): every member holds a copy of the whole table in
 * memory it registered with the transport, and a member changes other members' copies only by
 * asking the transport to copy a byte range of its own copy to the same range of a peer's copy
 * (a one-sided RMA write where the fabric has one). Implementations: fabric (libfabric) in
 * src/transport/fabric, sim (deterministic, in-process) in src/transport/sim. */
#ifndef SQ_TRANSPORT_H
#define SQ_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sq_transport;

/* Largest range write_copy accepts. */
#define SQ_TRANSPORT_MAX_COPY 1024u

struct sq_transport_vtable {
    /* Name for logs, e.g. "fabric/tcp" or "sim". */
    const char *name;

    /* Copies bytes [offset, offset + len) of the local table to the same range of the table of
     * the member at rank `peer` (never the caller's own rank), reading them in place. Contract:
     *  - writes to one peer (write and write_copy alike) are applied at the peer in the order
     *    they were posted (FIFO per link);
     *  - a write may be observed partly applied, but always in increasing address order, so a
     *    reader that sees the last byte of a write changed sees every earlier byte of it;
     *  - the bytes may be read from the local table at any time until the write has landed, so
     *    the caller leaves them unchanged until then (slots qualify: a slot is reused only once
     *    every member delivered its message). Use write_copy for bytes that keep changing.
     * Returns 0, or SQ_EPEER when the link to `peer` has failed, or SQ_ETRANSPORT. May block
     * briefly when the link's send queue is full; never blocks forever. */
    int (*write)(struct sq_transport *t, uint32_t peer, size_t offset, size_t len);

    /* Same as write, but from `local_offset` of the local memory to `remote_offset` of the
     * peer's (in place: the local bytes stay unchanged until the write has landed). */
    int (*write_at)(struct sq_transport *t, uint32_t peer, size_t local_offset,
                    size_t remote_offset, size_t len);

    /* Same as write, but the bytes are copied during the call, so the caller may change them at
     * once. For small ranges only (at most SQ_TRANSPORT_MAX_COPY bytes): the row header. */
    int (*write_copy)(struct sq_transport *t, uint32_t peer, size_t offset, size_t len);

    /* Ends a batch of writes: makes sure every posted write will be sent without further calls
     * and tells each peer that received writes that its table changed. Returns 0, SQ_EPEER or
     * SQ_ETRANSPORT. */
    int (*flush)(struct sq_transport *t);

    /* Makes progress and blocks until a peer's write may have changed the local table, a wake()
     * from another thread, or `timeout_ms` passes (0 polls once, never busy-waits longer than
     * the configured spin). Returns 1 if something may have changed, 0 on timeout, or an error.
     * The simulator drives members itself and returns SQ_ENOTSUP. */
    int (*wait)(struct sq_transport *t, int timeout_ms);

    /* Peers whose link has failed since the transport was created (bit = peer index). */
    uint64_t (*failed_peers)(struct sq_transport *t);

    /* Peers that connected to join the group since the last call (bit = peer index). */
    uint64_t (*joined)(struct sq_transport *t);

    /* Tells the transport the current view (id, members by peer index): it answers members
     * that connect to join with it. */
    void (*set_view)(struct sq_transport *t, uint32_t view_id, uint64_t peers);

    /* True when this member is joining a running group (asked to, or found it running). */
    bool (*joining)(struct sq_transport *t);

    /* Closes the link to `peer` for good (it left the group): nothing it sends lands any more. */
    void (*disconnect)(struct sq_transport *t, uint32_t peer);

    /* Interrupts a wait() in progress or the next one; safe from any thread. */
    void (*wake)(struct sq_transport *t);

    /* Releases everything; the table memory stays the caller's. */
    void (*destroy)(struct sq_transport *t);
};

/* Base of every transport: implementations embed it first. */
struct sq_transport {
    const struct sq_transport_vtable *vt;
    uint32_t nmembers;
    uint32_t my_rank;
};

#endif
