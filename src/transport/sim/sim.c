/* sim.c: the deterministic simulated network. Writes are snapshotted when posted and applied to
 * the destination table at a virtual time drawn from the seed; each link stays FIFO, as a tcp
 * connection or an RDMA reliable connection does, while links race each other. */
#include "sim.h"

#include "common.h"

struct sim_event {
    uint64_t time_us;
    uint64_t seq; /* ties broken by posting order: deterministic */
    uint32_t src, dst;
    size_t offset;
    size_t src_offset; /* where an in-place write reads in the sender's memory */
    size_t len;
    uint8_t *bytes; /* snapshot (write_copy), owned by the event; NULL: read at apply time */
    uint32_t epoch; /* the link's connection when posted: a reconnect drops older writes */
};

struct sim_endpoint {
    struct sq_transport base;
    struct sq_sim *sim;
    uint8_t *table;
    size_t bytes;
};

struct sq_sim {
    uint32_t n;
    uint64_t rng;
    struct sq_sim_params p;
    uint64_t now_us;
    uint64_t seq;
    uint64_t applied;
    uint64_t link_last[SQ_SIM_MAX_MEMBERS][SQ_SIM_MAX_MEMBERS]; /* latest time queued per link */
    struct sim_endpoint ep[SQ_SIM_MAX_MEMBERS];
    bool cut[SQ_SIM_MAX_MEMBERS][SQ_SIM_MAX_MEMBERS]; /* link dead for good, both directions */
    uint64_t hold[SQ_SIM_MAX_MEMBERS][SQ_SIM_MAX_MEMBERS]; /* nothing lands before this time */
    uint32_t epoch[SQ_SIM_MAX_MEMBERS][SQ_SIM_MAX_MEMBERS]; /* connection number of each link */
    struct sim_event *heap; /* binary min-heap on (time, seq) */
    size_t nheap, capheap;
};

uint64_t sq__sim_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t sq__sim_rand_below(uint64_t *state, uint64_t bound)
{
    SQ_ASSERT(bound > 0);
    return sq__sim_rand(state) % bound;
}

static bool before(const struct sim_event *a, const struct sim_event *b)
{
    return a->time_us < b->time_us || (a->time_us == b->time_us && a->seq < b->seq);
}

static int heap_push(struct sq_sim *sim, struct sim_event ev)
{
    if (sim->nheap == SQ_SIM_MAX_EVENTS) {
        return SQ_EAGAIN;
    }
    if (sim->nheap == sim->capheap) {
        size_t cap = sim->capheap ? sim->capheap * 2 : 1024;
        struct sim_event *h = realloc(sim->heap, cap * sizeof(*h));
        if (h == NULL) {
            return SQ_ENOMEM;
        }
        sim->heap = h;
        sim->capheap = cap;
    }
    size_t i = sim->nheap++;
    sim->heap[i] = ev;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(&sim->heap[i], &sim->heap[parent])) {
            break;
        }
        struct sim_event t = sim->heap[i];
        sim->heap[i] = sim->heap[parent];
        sim->heap[parent] = t;
        i = parent;
    }
    return 0;
}

static struct sim_event heap_pop(struct sq_sim *sim)
{
    SQ_ASSERT(sim->nheap > 0);
    struct sim_event top = sim->heap[0];
    sim->heap[0] = sim->heap[--sim->nheap];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < sim->nheap && before(&sim->heap[l], &sim->heap[m])) {
            m = l;
        }
        if (r < sim->nheap && before(&sim->heap[r], &sim->heap[m])) {
            m = r;
        }
        if (m == i) {
            break;
        }
        struct sim_event t = sim->heap[i];
        sim->heap[i] = sim->heap[m];
        sim->heap[m] = t;
        i = m;
    }
    return top;
}

/* Delay of one write on a link, drawn from the seed. */
static uint64_t link_delay(struct sq_sim *sim)
{
    uint64_t d = sim->p.min_delay_us;
    if (sim->p.max_jitter_us > 0) {
        d += sq__sim_rand_below(&sim->rng, (uint64_t)sim->p.max_jitter_us + 1);
    }
    if (sim->p.loss_permille > 0 && sq__sim_rand_below(&sim->rng, 1000) < sim->p.loss_permille) {
        d += sim->p.retransmit_us;
    }
    return d;
}

static int queue_part(struct sq_sim *sim, uint32_t src, uint32_t dst, size_t off, size_t len,
                      const uint8_t *from, bool copy, size_t src_off)
{
    /* FIFO per link: never earlier than what is already queued on it. */
    uint64_t arrive = SQ_MAX(sim->now_us + link_delay(sim), sim->hold[src][dst]);
    uint64_t t = SQ_MAX(arrive, sim->link_last[src][dst]);
    sim->link_last[src][dst] = t;
    struct sim_event ev = {.time_us = t, .seq = sim->seq++, .src = src, .dst = dst,
                           .offset = off, .src_offset = src_off, .len = len, .bytes = NULL,
                           .epoch = sim->epoch[src][dst]};
    if (copy) {
        ev.bytes = malloc(len);
        if (ev.bytes == NULL) {
            return SQ_ENOMEM;
        }
        memcpy(ev.bytes, from, len);
    }
    int rc = heap_push(sim, ev);
    if (rc != 0) {
        free(ev.bytes);
    }
    return rc;
}

/* An in-place write reads the sender's bytes when it lands, the latest moment a real fabric
 * could read them, so a caller that changes bytes still in flight is caught. */
static int sim_post(struct sq_transport *t, uint32_t peer, size_t offset, size_t len, bool copy,
                    size_t src_off)
{
    struct sim_endpoint *ep = (struct sim_endpoint *)t;
    struct sq_sim *sim = ep->sim;
    uint32_t src = t->my_rank;
    SQ_ASSERT(peer < sim->n);
    SQ_ASSERT(peer != src);
    SQ_ASSERT(offset + len <= ep->bytes);
    SQ_ASSERT(len > 0);
    if (sim->cut[src][peer]) {
        return SQ_EPEER;
    }
    const uint8_t *from = ep->table + src_off;
    SQ_ASSERT(src_off + len <= ep->bytes);
    /* A torn write lands as two parts, the lower addresses first, possibly far apart in time. */
    if (len > 1 && sim->p.torn_permille > 0 &&
        sq__sim_rand_below(&sim->rng, 1000) < sim->p.torn_permille) {
        size_t cut = 1 + (size_t)sq__sim_rand_below(&sim->rng, len - 1);
        int rc = queue_part(sim, src, peer, offset, cut, from, copy, src_off);
        if (rc != 0) {
            return rc;
        }
        return queue_part(sim, src, peer, offset + cut, len - cut, from + cut, copy, src_off + cut);
    }
    return queue_part(sim, src, peer, offset, len, from, copy, src_off);
}

static int sim_write(struct sq_transport *t, uint32_t peer, size_t offset, size_t len)
{
    return sim_post(t, peer, offset, len, false, offset);
}

static int sim_write_at(struct sq_transport *t, uint32_t peer, size_t local_offset,
                        size_t remote_offset, size_t len)
{
    return sim_post(t, peer, remote_offset, len, false, local_offset);
}

static int sim_write_copy(struct sq_transport *t, uint32_t peer, size_t offset, size_t len)
{
    SQ_ASSERT(len <= SQ_TRANSPORT_MAX_COPY);
    return sim_post(t, peer, offset, len, true, offset);
}

static int sim_flush(struct sq_transport *t)
{
    (void)t;
    return 0;
}

static int sim_wait(struct sq_transport *t, int timeout_ms)
{
    (void)t;
    (void)timeout_ms;
    return SQ_ENOTSUP; /* the simulation driver decides who runs */
}

static void sim_wake(struct sq_transport *t)
{
    (void)t;
}

static void sim_destroy_ep(struct sq_transport *t)
{
    (void)t; /* endpoints live inside the simulator */
}

static uint64_t sim_failed_peers(struct sq_transport *t)
{
    struct sim_endpoint *ep = (struct sim_endpoint *)t;
    struct sq_sim *sim = ep->sim;
    uint64_t mask = 0;
    for (uint32_t j = 0; j < sim->n; j++) {
        if (sim->cut[t->my_rank][j]) {
            mask |= 1ull << j;
        }
    }
    return mask;
}

static void sim_disconnect(struct sq_transport *t, uint32_t peer)
{
    struct sim_endpoint *ep = (struct sim_endpoint *)t;
    sq__sim_cut(ep->sim, t->my_rank, peer);
}

static uint64_t sim_joined(struct sq_transport *t)
{
    (void)t;
    return 0; /* the simulator drives joins itself */
}

static void sim_set_view(struct sq_transport *t, uint32_t view_id, uint64_t peers)
{
    (void)t;
    (void)view_id;
    (void)peers;
}

static bool sim_joining(struct sq_transport *t)
{
    (void)t;
    return false;
}

static const struct sq_transport_vtable sim_vtable = {
    .joining = sim_joining,
    .joined = sim_joined,
    .set_view = sim_set_view,
    .failed_peers = sim_failed_peers,
    .disconnect = sim_disconnect,
    .name = "sim",
    .write = sim_write,
    .write_copy = sim_write_copy,
    .write_at = sim_write_at,
    .flush = sim_flush,
    .wait = sim_wait,
    .wake = sim_wake,
    .destroy = sim_destroy_ep,
};

int sq__sim_create(struct sq_sim **out, uint32_t n, uint64_t seed, const struct sq_sim_params *p)
{
    *out = NULL;
    if (n == 0 || n > SQ_SIM_MAX_MEMBERS) {
        return SQ_EINVAL;
    }
    struct sq_sim *sim = calloc(1, sizeof(*sim));
    if (sim == NULL) {
        return SQ_ENOMEM;
    }
    sim->n = n;
    sim->rng = seed;
    sim->p = *p;
    for (uint32_t i = 0; i < n; i++) {
        sim->ep[i].base.vt = &sim_vtable;
        sim->ep[i].base.nmembers = n;
        sim->ep[i].base.my_rank = i;
        sim->ep[i].sim = sim;
    }
    *out = sim;
    return 0;
}

void sq__sim_destroy(struct sq_sim *sim)
{
    if (sim == NULL) {
        return;
    }
    for (size_t i = 0; i < sim->nheap; i++) {
        free(sim->heap[i].bytes);
    }
    free(sim->heap);
    free(sim);
}

void sq__sim_attach(struct sq_sim *sim, uint32_t rank, uint8_t *table, size_t bytes)
{
    SQ_ASSERT(rank < sim->n);
    sim->ep[rank].table = table;
    sim->ep[rank].bytes = bytes;
}

struct sq_transport *sq__sim_transport(struct sq_sim *sim, uint32_t rank)
{
    SQ_ASSERT(rank < sim->n);
    return &sim->ep[rank].base;
}

int sq__sim_step(struct sq_sim *sim, uint32_t *dst)
{
    if (sim->nheap == 0) {
        return 0;
    }
    struct sim_event ev = heap_pop(sim);
    SQ_ASSERT(ev.time_us >= sim->now_us);
    sim->now_us = ev.time_us;
    if (sim->cut[ev.src][ev.dst] || ev.epoch != sim->epoch[ev.src][ev.dst]) {
        free(ev.bytes); /* a broken connection loses what was still in flight */
        *dst = ev.dst;
        return 2;
    }
    struct sim_endpoint *to = &sim->ep[ev.dst];
    SQ_ASSERT(ev.offset + ev.len <= to->bytes);
    const uint8_t *from = ev.bytes != NULL ? ev.bytes : sim->ep[ev.src].table + ev.src_offset;
    memcpy(to->table + ev.offset, from, ev.len);
    free(ev.bytes);
    sim->applied++;
    *dst = ev.dst;
    return 1;
}

void sq__sim_cut(struct sq_sim *sim, uint32_t a, uint32_t b)
{
    SQ_ASSERT(a < sim->n && b < sim->n);
    sim->cut[a][b] = true;
    sim->cut[b][a] = true;
}

void sq__sim_hold(struct sq_sim *sim, uint32_t a, uint32_t b, uint64_t until_us)
{
    SQ_ASSERT(a < sim->n && b < sim->n);
    sim->hold[a][b] = SQ_MAX(sim->hold[a][b], until_us);
    sim->hold[b][a] = SQ_MAX(sim->hold[b][a], until_us);
}

void sq__sim_reconnect(struct sq_sim *sim, uint32_t a)
{
    SQ_ASSERT(a < sim->n);
    for (uint32_t b = 0; b < sim->n; b++) {
        if (b == a) {
            continue;
        }
        sim->cut[a][b] = sim->cut[b][a] = false;
        sim->epoch[a][b]++;
        sim->epoch[b][a]++;
        sim->hold[a][b] = sim->hold[b][a] = 0;
    }
}

bool sq__sim_is_cut(const struct sq_sim *sim, uint32_t a, uint32_t b)
{
    return sim->cut[a][b];
}

uint64_t sq__sim_next_time(const struct sq_sim *sim)
{
    return sim->nheap > 0 ? sim->heap[0].time_us : UINT64_MAX;
}

void sq__sim_advance(struct sq_sim *sim, uint64_t to_us)
{
    SQ_ASSERT(to_us >= sim->now_us);
    SQ_ASSERT(to_us <= sq__sim_next_time(sim));
    sim->now_us = to_us;
}

uint64_t sq__sim_now(const struct sq_sim *sim)
{
    return sim->now_us;
}

size_t sq__sim_pending(const struct sq_sim *sim)
{
    return sim->nheap;
}

uint64_t sq__sim_applied(const struct sq_sim *sim)
{
    return sim->applied;
}
