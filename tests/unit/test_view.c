/* test_view.c: the view-change protocol on hand-built scenarios: a crashed follower, a minority
 * partition, and a leader that dies with its proposal half delivered (the next leader must carry
 * that proposal forward, and every survivor must end in the same view). */
#include "view.h"

#include <stdint.h>
#include <stdlib.h>

#include "common.h"
#include "smc.h"
#include "test.h"
#include "transport/sim/sim.h"

#define N 5

struct member {
    struct sq__smc smc;
    uint8_t *mem;
    size_t region;
    bool down;
    uint64_t delivered[2]; /* per view */
    uint64_t hash[2];
};

static struct sq_sim *sim;
static struct member g[N];
static uint32_t n;

static void on_deliver(void *arg, const sq_message *msg)
{
    struct member *m = arg;
    uint32_t v = m->smc.sst.view_id;
    if (v < 2) {
        m->delivered[v]++;
        m->hash[v] = m->hash[v] * 31 + msg->index * 7 + msg->sender_id;
    }
}

static void setup(uint32_t members)
{
    n = members;
    struct sq_sim_params p = {.min_delay_us = 10};
    SQ_ASSERT(sq__sim_create(&sim, n, 5, &p) == 0);
    uint32_t ids[N] = {0, 1, 2, 3, 4};
    struct sq__sst_layout L;
    SQ_ASSERT(sq__sst_layout(&L, n, 4, 16) == 0);
    for (uint32_t i = 0; i < n; i++) {
        memset(&g[i], 0, sizeof(g[i]));
        g[i].region = L.table_bytes;
        g[i].mem = calloc(2, L.table_bytes);
        sq__sim_attach(sim, i, g[i].mem, 2 * L.table_bytes);
        struct sq__smc_params sp = {.sst = {.nmembers = n,
                                            .my_rank = i,
                                            .window_size = 4,
                                            .max_payload = 16,
                                            .member_ids = ids,
                                            .member_peers = ids},
                                    .heartbeat_timeout_us = 0};
        SQ_ASSERT(sq__smc_init(&g[i].smc, &sp, g[i].mem, sq__sim_transport(sim, i), on_deliver,
                               &g[i]) == 0);
        sq__view_attach(&g[i].smc.sst);
    }
}

static void teardown(void)
{
    for (uint32_t i = 0; i < n; i++) {
        sq__smc_fini(&g[i].smc);
        free(g[i].mem);
    }
    sq__sim_destroy(sim);
}

static void install(struct member *m)
{
    for (uint32_t r = 0; r < m->smc.sst.L.nmembers; r++) {
        if (((m->smc.sst.decision.removed | m->smc.fence_cut) >> r) & 1u) {
            m->smc.sst.t->vt->disconnect(m->smc.sst.t, m->smc.sst.member_peers[r]);
        }
    }
    uint32_t ids[N], peers[N], rank = 0;
    uint32_t k = sq__smc_next_view(&m->smc, ids, peers, &rank);
    struct sq__smc_params sp = {
        .sst = {.nmembers = k,
                .my_rank = rank,
                .window_size = 4,
                .max_payload = 16,
                .member_ids = ids,
                .member_peers = peers,
                .view_id = m->smc.sst.view_id + 1,
                .region_offset = ((m->smc.sst.view_id + 1) % 2) * m->region}};
    struct sq__smc next;
    SQ_ASSERT(
        sq__smc_init(&next, &sp, m->mem + sp.sst.region_offset, m->smc.sst.t, on_deliver, m) == 0);
    sq__smc_fini(&m->smc);
    m->smc = next;
    sq__view_attach(&m->smc.sst);
}

static void poll(uint32_t i)
{
    struct member *m = &g[i];
    if (m->down) {
        return;
    }
    uint64_t failed = m->smc.sst.t->vt->failed_peers(m->smc.sst.t);
    for (uint32_t r = 0; r < m->smc.sst.L.nmembers; r++) {
        if (r != m->smc.sst.my_rank && (failed >> m->smc.sst.member_peers[r]) & 1u) {
            sq__sst_suspect(&m->smc.sst, r);
        }
    }
    SQ_ASSERT(sq__smc_poll(&m->smc) >= 0);
    if (m->smc.sst.phase == SQ_SST_READY) {
        install(m);
        SQ_ASSERT(sq__smc_poll(&m->smc) >= 0);
    }
}

/* Polls every live member and delivers every write, until nothing moves. */
static void settle(void)
{
    for (int round = 0; round < 20000; round++) {
        for (uint32_t i = 0; i < n; i++) {
            poll(i);
        }
        uint32_t dst;
        int st = sq__sim_step(sim, &dst);
        if (st == 1) {
            poll(dst);
        } else if (st == 0) {
            bool again = false;
            for (uint32_t i = 0; i < n; i++) {
                again |= !g[i].down && sq__smc_poll(&g[i].smc) > 0;
            }
            if (!again && sq__sim_pending(sim) == 0) {
                return;
            }
        }
    }
    SQ_ASSERT(!"settle: no quiescence");
}

static void send_some(uint32_t i, int count)
{
    for (int k = 0; k < count; k++) {
        void *buf;
        if (sq__smc_reserve(&g[i].smc, 8, &buf) != 0) {
            settle();
            SQ_ASSERT(sq__smc_reserve(&g[i].smc, 8, &buf) == 0);
        }
        memset(buf, k, 8);
        SQ_ASSERT(sq__smc_commit(&g[i].smc) == 0);
        poll(i);
    }
}

static void crash(uint32_t i)
{
    g[i].down = true;
    for (uint32_t j = 0; j < n; j++) {
        if (j != i) {
            sq__sim_cut(sim, i, j);
        }
    }
}

static void test_follower_crash(void)
{
    setup(3);
    send_some(0, 3);
    send_some(2, 2);
    settle();
    CHECK_EQ_INT(g[0].delivered[0], 5);
    send_some(0, 1);
    send_some(2, 1);
    crash(2); /* its last message is lost in flight: the trim stops before it */
    settle();
    for (uint32_t i = 0; i < 2; i++) {
        CHECK_EQ_INT(g[i].smc.sst.view_id, 1);
        CHECK_EQ_INT(g[i].smc.sst.L.nmembers, 2);
        CHECK_EQ_INT(g[i].smc.sst.phase, SQ_SST_RUNNING);
    }
    CHECK_EQ_INT(g[0].delivered[0], g[1].delivered[0]);
    CHECK(g[0].hash[0] == g[1].hash[0]);
    CHECK_EQ_INT(g[0].delivered[0], 5); /* global 9 (member 0) follows the lost 8 (member 2) */
    /* The new view works: both deliver a new message, with a version in view 1. */
    send_some(1, 2);
    settle();
    CHECK_EQ_INT(g[0].delivered[1], 2);
    CHECK_EQ_INT(g[1].delivered[1], 2);
    teardown();
}

static void test_minority_stops(void)
{
    setup(5);
    send_some(0, 2);
    settle();
    /* Members 0 and 1 lose the other three. */
    for (uint32_t a = 0; a < 2; a++) {
        for (uint32_t b = 2; b < 5; b++) {
            sq__sim_cut(sim, a, b);
        }
    }
    send_some(0, 1);
    send_some(3, 1);
    settle();
    CHECK_EQ_INT(g[0].smc.sst.phase, SQ_SST_STOPPED);
    CHECK_EQ_INT(g[0].smc.sst.stop_reason, SQ_EPARTITIONED);
    CHECK_EQ_INT(g[1].smc.sst.stop_reason, SQ_EPARTITIONED);
    CHECK_EQ_INT(g[0].smc.sst.view_id, 0);
    for (uint32_t i = 2; i < 5; i++) {
        CHECK_EQ_INT(g[i].smc.sst.view_id, 1);
        CHECK_EQ_INT(g[i].smc.sst.L.nmembers, 3);
    }
    teardown();
}

static void test_leader_dies_mid_proposal(void)
{
    setup(5);
    send_some(1, 2);
    settle();
    /* Member 4 is gone: everyone suspects it. */
    crash(4);
    for (uint32_t i = 0; i < 4; i++) {
        sq__sst_suspect(&g[i].smc.sst, 4);
    }
    /* Run until the leader (0) has its proposal out, then cut it from 3 (the proposal still
     * reaches 1 and 2) and stop it. */
    for (int k = 0; k < 10000 && g[0].smc.sst.prop.ballot == 0; k++) {
        for (uint32_t i = 0; i < 4; i++) {
            poll(i);
        }
        uint32_t dst;
        if (sq__sim_step(sim, &dst) == 1) {
            poll(dst);
        }
    }
    CHECK_EQ_INT(g[0].smc.sst.prop.ballot, 1);
    CHECK_EQ_INT(g[0].smc.sst.prop.removed, 1u << 4);
    g[0].down = true;
    sq__sim_cut(sim, 0, 3);
    settle();
    /* 1, 2 and 3 agree on one view 1; the leader's proposal (remove 4 only) was carried
     * forward or learned, so 0 is still in view 1 and a second change removes it. */
    for (uint32_t i = 1; i < 4; i++) {
        CHECK_EQ_INT(g[i].smc.sst.phase, SQ_SST_RUNNING);
        CHECK(g[i].smc.sst.view_id >= 1);
        CHECK_EQ_INT(g[i].smc.sst.view_id, g[1].smc.sst.view_id);
        CHECK_EQ_INT(g[i].delivered[0], g[1].delivered[0]);
        CHECK(g[i].hash[0] == g[1].hash[0]);
    }
    teardown();
}

static void test_clean_leave(void)
{
    setup(3);
    send_some(0, 2);
    settle();
    sq__view_leave(&g[2].smc.sst);
    send_some(1, 1);
    settle();
    CHECK_EQ_INT(g[2].smc.sst.phase, SQ_SST_STOPPED);
    CHECK_EQ_INT(g[2].smc.sst.stop_reason, SQ_ELEFT);
    for (uint32_t i = 0; i < 2; i++) {
        CHECK_EQ_INT(g[i].smc.sst.view_id, 1);
        CHECK_EQ_INT(g[i].smc.sst.L.nmembers, 2);
        CHECK_EQ_INT(g[i].smc.sst.phase, SQ_SST_RUNNING);
    }
    CHECK_EQ_INT(g[0].delivered[0], g[1].delivered[0]);
    CHECK(g[0].delivered[0] >= 2);
    teardown();
}

int main(void)
{
    test_clean_leave();
    test_follower_crash();
    test_minority_stops();
    test_leader_dies_mid_proposal();
    return sq_test_done("test_view");
}
