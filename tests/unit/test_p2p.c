/* test_p2p.c: point-to-point rings over the simulated network: order and integrity under torn
 * writes, flow control (a full ring refuses until the receiver consumes), size limits, and a
 * peer that restarts. */
#include "p2p.h"

#include <stdint.h>
#include <stdlib.h>

#include "common.h"
#include "test.h"
#include "transport/sim/sim.h"

#define N 3

static struct sq_sim *sim;
static struct sq__p2p p2p[N];
static uint8_t *mem[N];
static size_t area;

static void setup(uint32_t torn_permille)
{
    struct sq_sim_params sp = {.min_delay_us = 5, .max_jitter_us = 50,
                               .torn_permille = torn_permille};
    SQ_ASSERT(sq__sim_create(&sim, N, 9, &sp) == 0);
    area = sq__p2p_area_bytes(N);
    for (uint32_t i = 0; i < N; i++) {
        mem[i] = calloc(1, area + 64);
        sq__sim_attach(sim, i, mem[i], area + 64);
        sq__p2p_init(&p2p[i], mem[i], 64, N, i, sq__sim_transport(sim, i));
    }
}

static void teardown(void)
{
    for (uint32_t i = 0; i < N; i++) {
        free(mem[i]);
    }
    sq__sim_destroy(sim);
}

static void run_network(void)
{
    for (uint32_t i = 0; i < N; i++) {
        SQ_ASSERT(sq__p2p_flush(&p2p[i]) == 0);
    }
    uint32_t dst;
    while (sq__sim_step(sim, &dst) != 0) {
    }
}

static void fill(uint8_t *buf, size_t size, uint64_t k)
{
    for (size_t i = 0; i < size; i++) {
        buf[i] = (uint8_t)(k * 13 + i * 7);
    }
}

static void test_order_and_integrity(void)
{
    setup(300); /* torn writes: a message must never be seen half-landed */
    uint8_t buf[SQ_P2P_MAX_PAYLOAD];
    uint64_t next = 0, got = 0;
    for (int round = 0; round < 200; round++) {
        while (next < 1000 && sq__p2p_can_stage(&p2p[0], 2)) {
            size_t size = (size_t)((next * 37) % (SQ_P2P_MAX_PAYLOAD + 1));
            fill(buf, size, next);
            CHECK_EQ_INT(sq__p2p_stage(&p2p[0], 2, SQ_P2P_REQUEST, next, buf, size), 0);
            next++;
        }
        SQ_ASSERT(sq__p2p_flush(&p2p[0]) == 0);
        uint32_t dst;
        /* Look after every landing, torn or not. */
        while (sq__sim_step(sim, &dst) != 0) {
            struct sq__p2p_msg m;
            while (sq__p2p_peek(&p2p[2], 0, &m) == 1) {
                size_t size = (size_t)((got * 37) % (SQ_P2P_MAX_PAYLOAD + 1));
                CHECK_EQ_INT(m.id, got);
                CHECK_EQ_INT(m.size, size);
                CHECK_EQ_INT(m.kind, SQ_P2P_REQUEST);
                fill(buf, size, got);
                CHECK(memcmp(m.data, buf, size) == 0);
                sq__p2p_consume(&p2p[2], 0);
                got++;
            }
            SQ_ASSERT(sq__p2p_flush(&p2p[2]) == 0);
        }
    }
    CHECK_EQ_INT(got, 1000);
    teardown();
}

static void test_flow_control_and_limits(void)
{
    setup(0);
    uint8_t buf[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    CHECK_EQ_INT(sq__p2p_stage(&p2p[1], 0, SQ_P2P_REPLY, 1, buf, SQ_P2P_MAX_PAYLOAD + 1),
                 SQ_EMSGSIZE);
    CHECK_EQ_INT(sq__p2p_stage(&p2p[1], 1, SQ_P2P_REPLY, 1, buf, 8), SQ_EINVAL);
    for (uint32_t k = 0; k < SQ_P2P_SLOTS; k++) {
        CHECK_EQ_INT(sq__p2p_stage(&p2p[1], 0, SQ_P2P_REPLY, k, buf, 8), 0);
    }
    CHECK_EQ_INT(sq__p2p_stage(&p2p[1], 0, SQ_P2P_REPLY, 99, buf, 8), SQ_EAGAIN);
    run_network();
    CHECK_EQ_INT(sq__p2p_stage(&p2p[1], 0, SQ_P2P_REPLY, 99, buf, 8), SQ_EAGAIN); /* unread */
    struct sq__p2p_msg m;
    CHECK_EQ_INT(sq__p2p_peek(&p2p[0], 1, &m), 1);
    CHECK_EQ_INT(m.id, 0);
    CHECK_EQ_INT(sq__p2p_peek(&p2p[0], 1, &m), 1); /* peek does not consume */
    CHECK_EQ_INT(m.id, 0);
    sq__p2p_consume(&p2p[0], 1);
    run_network(); /* the count goes back */
    CHECK_EQ_INT(sq__p2p_stage(&p2p[1], 0, SQ_P2P_REPLY, 99, buf, 8), 0);
    CHECK_EQ_INT(sq__p2p_peek(&p2p[0], 2, &m), 0); /* nothing from 2 */
    teardown();
}

static void test_peer_restart(void)
{
    setup(0);
    uint8_t buf[4] = {9, 9, 9, 9};
    for (uint32_t k = 0; k < 5; k++) {
        CHECK_EQ_INT(sq__p2p_stage(&p2p[1], 0, SQ_P2P_REQUEST, k, buf, 4), 0);
    }
    run_network();
    struct sq__p2p_msg m;
    CHECK_EQ_INT(sq__p2p_peek(&p2p[0], 1, &m), 1);
    sq__p2p_consume(&p2p[0], 1);
    /* Member 1 restarts: fresh memory and counters; member 0 resets its side of the link. */
    memset(mem[1], 0, area + 64);
    sq__p2p_init(&p2p[1], mem[1], 64, N, 1, sq__sim_transport(sim, 1));
    sq__sim_reconnect(sim, 1);
    sq__p2p_reset_peer(&p2p[0], 1);
    CHECK_EQ_INT(sq__p2p_peek(&p2p[0], 1, &m), 0); /* the old incarnation's messages are gone */
    CHECK_EQ_INT(sq__p2p_stage(&p2p[1], 0, SQ_P2P_REQUEST, 77, buf, 4), 0);
    run_network();
    CHECK_EQ_INT(sq__p2p_peek(&p2p[0], 1, &m), 1);
    CHECK_EQ_INT(m.id, 77);
    teardown();
}

int main(void)
{
    test_order_and_integrity();
    test_flow_control_and_limits();
    test_peer_restart();
    return sq_test_done("test_p2p");
}
