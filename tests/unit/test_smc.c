/* test_smc.c: the multicast core on small, hand-checked scenarios: layout, send errors, window
 * flow control, round-robin order with nulls, sends from the delivery callback, a newcomer's
 * clock once its state is in, a corrupt row from the network, and large messages along a chain
 * and a star. */
#include "smc.h"

#include <stdint.h>
#include <stdlib.h>

#include "common.h"
#include "test.h"
#include "transport/sim/sim.h"

#define N_MAX 4
#define LOG_MAX 64

struct got {
    uint32_t sender;
    uint64_t index;
    uint64_t version;
    char text[16];
};

struct group {
    uint32_t n;
    struct sq_sim *sim;
    struct sq__smc m[N_MAX];
    uint8_t *table[N_MAX];
    struct got log[N_MAX][LOG_MAX];
    uint32_t nlog[N_MAX];
    int reply_from; /* member that answers the first message it gets, or -1 */
};

struct ctx {
    struct group *g;
    uint32_t rank;
} ctxs[N_MAX];

static int send_text(struct sq__smc *m, const char *text)
{
    void *buf = NULL;
    size_t len = strlen(text) + 1;
    int rc = sq__smc_reserve(m, len, &buf);
    if (rc != 0) {
        return rc;
    }
    memcpy(buf, text, len);
    return sq__smc_commit(m);
}

static void on_deliver(void *arg, const sq_message *msg)
{
    struct ctx *c = arg;
    struct group *g = c->g;
    SQ_ASSERT(g->nlog[c->rank] < LOG_MAX);
    struct got *e = &g->log[c->rank][g->nlog[c->rank]++];
    e->sender = msg->sender_id;
    e->index = msg->index;
    e->version = msg->version;
    snprintf(e->text, sizeof(e->text), "%.*s", (int)msg->size, (const char *)msg->data);
    if ((int)c->rank == g->reply_from) {
        g->reply_from = -1;
        CHECK_EQ_INT(send_text(&g->m[c->rank], "reply"), 0);
    }
}

/* The large-message settings of a group (max_smc 0: none) and each member's bytes counter. */
struct large_opts {
    uint32_t max_smc;
    size_t ring;
    enum sq__smc_schedule schedule;
    _Atomic uint64_t *sent; /* N_MAX counters, or NULL */
    uint64_t lazy_us;       /* see smc.h's lazy_us (0: every change pushed at once) */
};

static void group_init_with(struct group *g, uint32_t n, uint32_t window, uint32_t max_payload,
                            uint64_t seed, const struct large_opts *lo, sq_deliver_fn deliver)
{
    memset(g, 0, sizeof(*g));
    g->n = n;
    g->reply_from = -1;
    struct sq_sim_params p = {.min_delay_us = 3, .max_jitter_us = 20};
    SQ_ASSERT(sq__sim_create(&g->sim, n, seed, &p) == 0);
    uint32_t ids[N_MAX] = {10, 11, 12, 13};
    for (uint32_t r = 0; r < n; r++) {
        struct sq__sst_layout L;
        SQ_ASSERT(sq__sst_layout_large(&L, n, window, max_payload, lo->max_smc, lo->ring) == 0);
        CHECK(sq__sst_has_large(&L) == (lo->max_smc != 0));
        g->table[r] = calloc(1, L.table_bytes);
        sq__sim_attach(g->sim, r, g->table[r], L.table_bytes);
        ctxs[r] = (struct ctx){g, r};
        struct sq__smc_params sp = {.sst = {.nmembers = n,
                                            .my_rank = r,
                                            .window_size = window,
                                            .max_payload = max_payload,
                                            .max_smc_payload = lo->max_smc,
                                            .large_ring_bytes = lo->ring,
                                            .view_id = 3,
                                            .member_ids = ids},
                                    .schedule = lo->schedule,
                                    .block_bytes = 4096,
                                    .large_bytes_total = lo->sent != NULL ? &lo->sent[r] : NULL,
                                    .lazy_us = lo->lazy_us};
        SQ_ASSERT(sq__smc_init(&g->m[r], &sp, g->table[r], sq__sim_transport(g->sim, r), deliver,
                               &ctxs[r]) == 0);
    }
}

static void group_init(struct group *g, uint32_t n, uint32_t window, uint32_t max_payload)
{
    const struct large_opts none = {0};
    group_init_with(g, n, window, max_payload, 7, &none, on_deliver);
}

static void group_fini(struct group *g)
{
    for (uint32_t r = 0; r < g->n; r++) {
        sq__smc_fini(&g->m[r]);
        free(g->table[r]);
    }
    sq__sim_destroy(g->sim);
}

/* Polls everyone, then lets the network run until nothing is in flight. */
static void settle(struct group *g)
{
    for (int round = 0; round < 10000; round++) {
        int busy = 0;
        for (uint32_t r = 0; r < g->n; r++) {
            int rc = sq__smc_poll(&g->m[r]);
            SQ_ASSERT(rc >= 0);
            busy += rc;
        }
        uint32_t dst;
        if (sq__sim_step(g->sim, &dst) == 1) {
            busy++;
        }
        if (busy == 0 && sq__sim_pending(g->sim) == 0) {
            return;
        }
    }
    SQ_ASSERT(!"settle: no quiescence");
}

static void test_layout(void)
{
    struct sq__sst_layout L;
    CHECK_EQ_INT(sq__sst_layout(&L, 3, 4, 100), 0);
    /* 48 + 2 * 168 (proposal, acceptance) + 3 * 8 (received) + 4 * 64 (prefixes, acks, have,
     * have_ts) + 40 (wedged, promise, learned, persisted, tag) = 704 */
    CHECK_EQ_INT(L.header_bytes, 704);
    CHECK_EQ_INT(L.off_prefix, 408);
    CHECK_EQ_INT(L.off_ack, 472);
    CHECK_EQ_INT(L.off_have, 536);
    CHECK_EQ_INT(L.off_wedged, 664);
    CHECK_EQ_INT(L.off_promise, 672);
    CHECK_EQ_INT(L.slot_bytes, 104 + 32); /* align8(100) + trailer */
    CHECK_EQ_INT(L.row_bytes, 1280);      /* 704 + 4 * 136, rounded up to 64 */
    CHECK_EQ_INT(L.table_bytes, 3 * L.row_bytes);
    CHECK_EQ_INT(sq__sst_layout(&L, 0, 4, 100), SQ_EINVAL);
    CHECK_EQ_INT(sq__sst_layout(&L, SQ_SST_MAX_MEMBERS + 1, 4, 100), SQ_EINVAL);
    CHECK_EQ_INT(sq__sst_layout(&L, 3, 0, 100), SQ_EINVAL);
    CHECK_EQ_INT(sq__sst_layout(&L, 3, 4, 0), SQ_EINVAL);
}

static void test_send_errors(void)
{
    struct group g;
    group_init(&g, 2, 2, 32);
    void *buf;
    CHECK_EQ_INT(sq__smc_reserve(&g.m[0], 33, &buf), SQ_EMSGSIZE);
    CHECK_EQ_INT(sq__smc_commit(&g.m[0]), SQ_ESTATE);
    CHECK_EQ_INT(sq__smc_reserve(&g.m[0], 32, &buf), 0);
    CHECK_EQ_INT((uintptr_t)buf % 8, 0);
    CHECK_EQ_INT(sq__smc_reserve(&g.m[0], 1, &buf), SQ_EBUSY);
    CHECK_EQ_INT(sq__smc_commit(&g.m[0]), 0);
    CHECK_EQ_INT(send_text(&g.m[0], "b"), 0);
    /* Window of 2, nothing delivered yet: the third must wait, never overwrite. */
    CHECK(!sq__smc_can_send(&g.m[0]));
    CHECK_EQ_INT(send_text(&g.m[0], "c"), SQ_EAGAIN);
    CHECK(!sq__smc_drained(&g.m[0]));
    settle(&g);
    CHECK(sq__smc_drained(&g.m[0]));
    CHECK(sq__smc_all_caught_up(&g.m[0]));
    CHECK_EQ_INT(send_text(&g.m[0], "c"), 0);
    settle(&g);
    CHECK_EQ_INT(g.nlog[0], 3);
    CHECK_EQ_INT(g.nlog[1], 3);
    CHECK(strcmp(g.log[1][2].text, "c") == 0);
    group_fini(&g);
}

static void test_round_robin_order(void)
{
    struct group g;
    group_init(&g, 3, 8, 16);
    /* All sent before anything moves: order is by index, then rank, whatever the timing. */
    CHECK_EQ_INT(send_text(&g.m[1], "A"), 0);
    CHECK_EQ_INT(send_text(&g.m[2], "B"), 0);
    CHECK_EQ_INT(send_text(&g.m[0], "C"), 0);
    CHECK_EQ_INT(send_text(&g.m[2], "D"), 0);
    settle(&g);
    const char *want[] = {"C", "A", "B", "D"};
    const uint64_t index[] = {0, 1, 2, 5}; /* D is rank 2's second: 1 * 3 + 2 */
    for (uint32_t r = 0; r < 3; r++) {
        CHECK_EQ_INT(g.nlog[r], 4);
        for (uint32_t k = 0; k < 4 && k < g.nlog[r]; k++) {
            CHECK(strcmp(g.log[r][k].text, want[k]) == 0);
            CHECK_EQ_INT(g.log[r][k].index, index[k]);
            CHECK_EQ_INT(g.log[r][k].version, (3ull << 32) | k);
            CHECK_EQ_INT(g.log[r][k].sender, 10 + (index[k] % 3));
        }
    }
    group_fini(&g);
}

static void test_nulls_let_one_sender_go(void)
{
    struct group g;
    group_init(&g, 3, 2, 16);
    const char *texts[] = {"x0", "x1", "x2", "x3", "x4"};
    for (int k = 0; k < 5; k++) {
        /* Window 2: rank 2 can only go on because the idle members fill nulls. */
        while (send_text(&g.m[2], texts[k]) == SQ_EAGAIN) {
            settle(&g);
        }
    }
    settle(&g);
    for (uint32_t r = 0; r < 3; r++) {
        CHECK_EQ_INT(g.nlog[r], 5);
        for (uint32_t k = 0; k < g.nlog[r]; k++) {
            CHECK(strcmp(g.log[r][k].text, texts[k]) == 0);
            CHECK_EQ_INT(g.log[r][k].sender, 12);
            CHECK_EQ_INT(g.log[r][k].version & 0xffffffffu, k);
        }
    }
    /* The idle members sent nulls only: they have no real message. */
    CHECK(sq__smc_drained(&g.m[0]));
    CHECK_EQ_INT(g.m[0].slots_used, 0);
    CHECK(g.m[0].next_index >= 5);
    group_fini(&g);
}

/* One hop: every write in flight lands, then every member polls (and so answers). */
static void hop(struct group *g)
{
    size_t k = sq__sim_pending(g->sim);
    uint32_t dst;
    for (size_t i = 0; i < k; i++) {
        sq__sim_step(g->sim, &dst);
    }
    for (uint32_t r = 0; r < g->n; r++) {
        SQ_ASSERT(sq__smc_poll(&g->m[r]) >= 0);
    }
}

/* Rank `r` sends `text` and polls (the writes go out); hops until it delivered it: how many. */
static int hops_to_deliver(struct group *g, uint32_t r, const char *text)
{
    uint32_t before = g->nlog[r];
    CHECK_EQ_INT(send_text(&g->m[r], text), 0);
    SQ_ASSERT(sq__smc_poll(&g->m[r]) >= 0);
    for (int h = 0; h < 10; h++) {
        if (g->nlog[r] > before) {
            return h;
        }
        hop(g);
    }
    return -1;
}

static void test_lone_sender_one_round_trip(void)
{
    for (uint32_t sender = 0; sender < 3; sender++) {
        struct group g;
        group_init(&g, 3, 8, 16);
        /* The first message waits for the others' nulls before it (hearing of it, then of each
         * other's); after it they stand a round ahead, so every next one takes a round trip:
         * to the others, and their received counters back. */
        CHECK(hops_to_deliver(&g, sender, "first") >= 2);
        settle(&g);
        for (int k = 0; k < 3; k++) {
            int h = hops_to_deliver(&g, sender, "next");
            CHECK_EQ_INT(h, 2);
            settle(&g);
        }
        for (uint32_t r = 0; r < 3; r++) {
            CHECK_EQ_INT(g.nlog[r], 4);
        }
        /* The idle members' nulls only follow real messages: nothing runs away while idle. */
        uint64_t idx = g.m[(sender + 1) % 3].next_index;
        settle(&g);
        settle(&g);
        CHECK_EQ_INT(g.m[(sender + 1) % 3].next_index, idx);
        group_fini(&g);
    }
}

/* Lazy changes (smc.c): a member's delivered counter, and received counters that leave its
 * prefix where it was, wait for the next push. One sender at three members: each message still
 * takes one round trip, every member delivers it, and fewer writes go out; what waited goes out
 * once its time is up; a sender whose window is full is never held up by it. */
static void test_lazy_changes_ride_on_the_next_push(void)
{
    uint64_t writes[2] = {0, 0};
    for (int lazy = 0; lazy < 2; lazy++) {
        struct group g;
        const struct large_opts lo = {.lazy_us = lazy ? 1000 : 0};
        group_init_with(&g, 3, 8, 16, 7, &lo, on_deliver);
        CHECK(hops_to_deliver(&g, 0, "first") >= 2);
        settle(&g);
        uint64_t before = sq__sim_applied(g.sim);
        for (int k = 0; k < 10; k++) {
            CHECK_EQ_INT(hops_to_deliver(&g, 0, "next"), 2);
            settle(&g);
            for (uint32_t r = 0; r < 3; r++) {
                CHECK_EQ_INT(g.nlog[r], (uint32_t)k + 2);
            }
        }
        writes[lazy] = sq__sim_applied(g.sim) - before;
        /* the clock has not moved: with lazy changes the others' last delivered counters wait */
        bool waiting = false;
        for (uint32_t r = 0; r < 3; r++) {
            waiting |= sq__smc_lazy_deadline(&g.m[r]) != UINT64_MAX;
        }
        CHECK(waiting == (lazy == 1));
        CHECK(sq__smc_all_caught_up(&g.m[0]) == (lazy == 0));
        for (uint32_t r = 0; r < 3; r++) {
            if (lazy) {
                CHECK(sq__smc_lazy_deadline(&g.m[r]) == UINT64_MAX ||
                      sq__smc_lazy_deadline(&g.m[r]) == 1000);
            }
            sq__smc_tick(&g.m[r], 999);
        }
        settle(&g);
        CHECK(sq__smc_all_caught_up(&g.m[0]) == (lazy == 0)); /* not yet due */
        for (uint32_t r = 0; r < 3; r++) {
            sq__smc_tick(&g.m[r], 1000);
        }
        settle(&g);
        for (uint32_t r = 0; r < 3; r++) {
            CHECK(sq__smc_all_caught_up(&g.m[r]));
            CHECK(sq__smc_lazy_deadline(&g.m[r]) == UINT64_MAX);
        }
        group_fini(&g);
    }
    /* 14 writes a message against 8: the sender's slot and header to each of the others, their
     * pushes on receiving it, and then (eager only) their pushes on hearing each other's nulls
     * and delivering it, and the sender's on hearing their nulls and delivering it */
    CHECK_EQ_INT(writes[0], 140);
    CHECK_EQ_INT(writes[1], 80);
    printf("  lone sender, 10 messages: %llu writes, %llu with lazy changes\n",
           (unsigned long long)writes[0], (unsigned long long)writes[1]);

    /* A window of 8 kept full by one sender, the clock never moving: the delivered counters
     * go out often enough (lazy_gap) that it never stalls. */
    struct group g;
    const struct large_opts lo = {.lazy_us = 1000};
    group_init_with(&g, 3, 8, 16, 9, &lo, on_deliver);
    for (int k = 0; k < 60; k++) {
        int spins = 0;
        while (!sq__smc_can_send(&g.m[0]) && spins++ < 100) {
            hop(&g);
        }
        CHECK_EQ_INT(send_text(&g.m[0], "w"), 0);
        SQ_ASSERT(sq__smc_poll(&g.m[0]) >= 0);
    }
    settle(&g);
    for (uint32_t r = 0; r < 3; r++) {
        CHECK_EQ_INT(g.nlog[r], 60);
    }
    group_fini(&g);
}

struct ordered_log {
    uint64_t version[LOG_MAX], ts[LOG_MAX];
    uint32_t n;
} g_ordered[N_MAX];

static void on_ordered(void *arg, const sq_message *msg)
{
    struct ctx *c = arg;
    struct ordered_log *o = &g_ordered[c->rank];
    SQ_ASSERT(o->n < LOG_MAX);
    /* before its delivery here, never behind delivery */
    CHECK(c->g->m[c->rank].next_deliver <= msg->index);
    CHECK(o->n >= c->g->nlog[c->rank]);
    o->version[o->n] = msg->version;
    o->ts[o->n] = msg->timestamp;
    o->n++;
}

static void test_ordered_ahead_of_delivery(void)
{
    struct group g;
    group_init(&g, 3, 8, 16);
    memset(g_ordered, 0, sizeof(g_ordered));
    for (uint32_t r = 0; r < 3; r++) {
        sq__smc_set_ordered(&g.m[r], on_ordered, &ctxs[r]);
    }
    CHECK_EQ_INT(hops_to_deliver(&g, 1, "a") >= 2, 1);
    settle(&g);
    /* The sender holds its next message in order at once (the others' nulls are there): it is
     * handed over before any hop, while delivery needs the round trip. */
    CHECK_EQ_INT(send_text(&g.m[1], "b"), 0);
    SQ_ASSERT(sq__smc_poll(&g.m[1]) >= 0);
    CHECK_EQ_INT(g_ordered[1].n, 2);
    CHECK_EQ_INT(g.nlog[1], 1);
    /* The others hold it after one hop, before it is stable there. */
    hop(&g);
    CHECK_EQ_INT(g_ordered[0].n, 2);
    CHECK_EQ_INT(g.nlog[0], 1);
    CHECK_EQ_INT(send_text(&g.m[2], "c"), 0);
    CHECK_EQ_INT(send_text(&g.m[0], "d"), 0);
    settle(&g);
    for (uint32_t r = 0; r < 3; r++) {
        CHECK_EQ_INT(g_ordered[r].n, g.nlog[r]);
        CHECK_EQ_INT(g.nlog[r], 4);
        for (uint32_t k = 0; k < g.nlog[r] && k < g_ordered[r].n; k++) {
            CHECK_EQ_INT(g_ordered[r].version[k], g.log[r][k].version);
            CHECK_EQ_INT(g_ordered[r].version[k], g_ordered[0].version[k]);
            CHECK_EQ_INT(g_ordered[r].ts[k], g_ordered[0].ts[k]);
        }
    }
    group_fini(&g);
}

/* A newcomer on hold whose own clock is ahead of the donor's (a restart set it from its log's last
 * record, which the donor then had it cut): once released with the donor's clock it stamps every
 * message as the others do (chaos seed 110: its log diverged from the first record of the view,
 * and it could never rejoin). */
static void test_release_takes_the_donors_clock(void)
{
    struct group g;
    group_init(&g, 3, 8, 16);
    memset(g_ordered, 0, sizeof(g_ordered));
    for (uint32_t r = 0; r < 3; r++) {
        sq__smc_set_ordered(&g.m[r], on_ordered, &ctxs[r]);
        g.m[r].last_timestamp = g.m[r].ordered_last_ts = 500; /* the shard's clock */
    }
    g.m[2].last_timestamp = g.m[2].ordered_last_ts = 900000; /* a cut record's stamp */
    g.m[2].hold = true;
    sq__smc_release(&g.m[2], 500);
    g.m[0].stamp = 600;
    g.m[1].stamp = 700;
    CHECK_EQ_INT(send_text(&g.m[0], "a"), 0);
    CHECK_EQ_INT(send_text(&g.m[1], "b"), 0);
    settle(&g);
    CHECK_EQ_INT(send_text(&g.m[2], "c"), 0);
    settle(&g);
    for (uint32_t r = 0; r < 3; r++) {
        CHECK_EQ_INT(g.nlog[r], 3);
        CHECK_EQ_INT(g_ordered[r].n, 3);
        for (uint32_t k = 0; k < g_ordered[r].n; k++) {
            CHECK_EQ_INT(g_ordered[r].version[k], g_ordered[0].version[k]);
            CHECK_EQ_INT(g_ordered[r].ts[k], g_ordered[0].ts[k]);
        }
    }
    CHECK_EQ_INT(g_ordered[0].ts[0], 600);
    CHECK(g_ordered[0].ts[2] < 900000);
    group_fini(&g);
}

static void test_send_from_callback(void)
{
    struct group g;
    group_init(&g, 3, 4, 16);
    g.reply_from = 1;
    CHECK_EQ_INT(send_text(&g.m[0], "ask"), 0);
    settle(&g);
    for (uint32_t r = 0; r < 3; r++) {
        CHECK_EQ_INT(g.nlog[r], 2);
        CHECK(strcmp(g.log[r][0].text, "ask") == 0);
        CHECK(strcmp(g.log[r][1].text, "reply") == 0);
        CHECK_EQ_INT(g.log[r][1].sender, 11);
    }
    group_fini(&g);
}

static void test_corrupt_row_fails_cleanly(void)
{
    struct group g;
    group_init(&g, 2, 4, 16);
    CHECK_EQ_INT(send_text(&g.m[0], "one"), 0);
    CHECK_EQ_INT(send_text(&g.m[0], "two"), 0);
    settle(&g);
    /* Member 0's third message goes out with an index that goes backwards: as if the sender or
     * the network were broken. */
    CHECK_EQ_INT(send_text(&g.m[0], "bad"), 0);
    struct sq__sst_layout L = g.m[0].sst.L;
    uint8_t *end = g.table[0] + L.header_bytes + 3 * L.slot_bytes; /* slot number 2 */
    uint64_t index = 0;
    memcpy(end - 24, &index, 8);
    CHECK(sq__smc_poll(&g.m[0]) >= 0);
    uint32_t dst;
    while (sq__sim_step(g.sim, &dst) == 1) {
    }
    int rc = sq__smc_poll(&g.m[1]);
    CHECK_EQ_INT(rc, SQ_ETRANSPORT);
    CHECK_CONTAINS(g.m[1].sst.errmsg, "member 10 sent a bad slot 2");
    CHECK_EQ_INT(sq__smc_poll(&g.m[1]), SQ_ETRANSPORT); /* sticky */
    void *buf;
    CHECK_EQ_INT(sq__smc_reserve(&g.m[1], 1, &buf), SQ_ETRANSPORT);
    group_fini(&g);
}

/* ---- large messages ---- */

struct big_got {
    uint32_t n;
    uint32_t sender[16];
    uint32_t size[16];
    uint64_t hash[16];
};
static struct big_got g_big[N_MAX];

static uint64_t bytes_hash(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ p[i]) * 1099511628211ull;
    }
    return h;
}

static void on_big(void *arg, const sq_message *msg)
{
    struct big_got *b = &g_big[((struct ctx *)arg)->rank];
    SQ_ASSERT(b->n < 16);
    b->sender[b->n] = msg->sender_id;
    b->size[b->n] = (uint32_t)msg->size;
    b->hash[b->n] = bytes_hash(msg->data, msg->size);
    CHECK_EQ_INT(msg->flags, 0); /* the large-path flag is the multicast's own */
    b->n++;
}

static _Atomic uint64_t g_sent[N_MAX];

static void group_init_large(struct group *g, uint32_t n, enum sq__smc_schedule schedule)
{
    memset(g_big, 0, sizeof(g_big));
    for (uint32_t r = 0; r < N_MAX; r++) {
        atomic_store(&g_sent[r], 0);
    }
    /* slots of 64 bytes; a ring of 40 KiB per sender, for messages of up to 20,000 */
    const struct large_opts lo = {
        .max_smc = 64, .ring = 40960, .schedule = schedule, .sent = g_sent};
    group_init_with(g, n, 4, 20000, 9, &lo, on_big);
}

/* Rank 1 sends 8 messages, large and small mixed, more than its ring holds in all (it wraps):
 * every member delivers all of them whole, in order; in a chain each member but the last writes
 * each byte once, in a star the sender writes it to everyone. */
static void check_large(enum sq__smc_schedule schedule)
{
    struct group g;
    const uint32_t n = 4;
    group_init_large(&g, n, schedule);
    static const uint32_t sizes[8] = {5000, 20, 19999, 64, 65, 12000, 20000, 7001};
    uint64_t want[8], large_total = 0;
    static uint8_t msg[20000];
    for (int k = 0; k < 8; k++) {
        for (uint32_t i = 0; i < sizes[k]; i++) {
            msg[i] = (uint8_t)(i * 31u + (uint32_t)k * 7u + (i >> 8));
        }
        want[k] = bytes_hash(msg, sizes[k]);
        large_total += sizes[k] > 64 ? sizes[k] : 0;
        void *buf = NULL;
        int rc;
        for (int tries = 0; (rc = sq__smc_reserve(&g.m[1], sizes[k], &buf)) == SQ_EAGAIN; tries++) {
            SQ_ASSERT(tries < 100);
            settle(&g);
        }
        CHECK_EQ_INT(rc, 0);
        memcpy(buf, msg, sizes[k]);
        CHECK_EQ_INT(sq__smc_commit(&g.m[1]), 0);
    }
    settle(&g);
    for (uint32_t r = 0; r < n; r++) {
        CHECK_EQ_INT(g_big[r].n, 8);
        for (uint32_t k = 0; k < 8 && k < g_big[r].n; k++) {
            CHECK_EQ_INT(g_big[r].sender[k], 11);
            CHECK_EQ_INT(g_big[r].size[k], sizes[k]);
            CHECK(g_big[r].hash[k] == want[k]);
        }
    }
    for (uint32_t r = 0; r < n; r++) {
        uint64_t expect = 0;
        if (schedule == SQ_SMC_STAR) {
            expect = r == 1 ? (n - 1) * large_total : 0;
        } else {
            expect = (r + 1) % n == 1 ? 0 : large_total; /* the one before the sender is last */
        }
        CHECK_EQ_INT(atomic_load(&g_sent[r]), expect);
    }
    group_fini(&g);
}

static void test_large_chain(void)
{
    check_large(SQ_SMC_CHAIN);
}

static void test_large_star(void)
{
    check_large(SQ_SMC_STAR);
}

int main(void)
{
    test_layout();
    test_send_errors();
    test_round_robin_order();
    test_nulls_let_one_sender_go();
    test_lone_sender_one_round_trip();
    test_lazy_changes_ride_on_the_next_push();
    test_ordered_ahead_of_delivery();
    test_release_takes_the_donors_clock();
    test_send_from_callback();
    test_corrupt_row_fails_cleanly();
    test_large_chain();
    test_large_star();
    return sq_test_done("test_smc");
}
