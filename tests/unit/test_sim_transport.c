/* test_sim_transport.c: the simulated network keeps each link FIFO, reads in-place writes when
 * they land and copies when posted, tears writes lower-addresses-first, and replays exactly from
 * a seed. */
#include "transport/sim/sim.h"

#include <stdint.h>
#include <stdlib.h>

#include "common.h"
#include "test.h"

static void test_fifo_under_jitter(void)
{
    struct sq_sim_params p = {.min_delay_us = 1, .max_jitter_us = 500, .loss_permille = 100,
                              .retransmit_us = 1000};
    struct sq_sim *sim = NULL;
    CHECK_EQ_INT(sq__sim_create(&sim, 2, 42, &p), 0);
    uint64_t a[4] = {0}, b[4] = {0};
    sq__sim_attach(sim, 0, (uint8_t *)a, sizeof(a));
    sq__sim_attach(sim, 1, (uint8_t *)b, sizeof(b));
    struct sq_transport *t = sq__sim_transport(sim, 0);
    for (uint64_t v = 1; v <= 200; v++) {
        a[1] = v;
        CHECK_EQ_INT(t->vt->write_copy(t, 1, 8, 8), 0);
    }
    uint64_t last = 0;
    uint32_t dst = 9;
    int steps = 0;
    while (sq__sim_step(sim, &dst) == 1) {
        CHECK_EQ_INT(dst, 1);
        CHECK(b[1] == last + 1); /* in order, none skipped */
        last = b[1];
        steps++;
    }
    CHECK_EQ_INT(steps, 200);
    CHECK_EQ_INT(b[1], 200);
    sq__sim_destroy(sim);
}

static void test_inplace_vs_copy(void)
{
    struct sq_sim_params p = {.min_delay_us = 10};
    struct sq_sim *sim = NULL;
    CHECK_EQ_INT(sq__sim_create(&sim, 2, 1, &p), 0);
    uint64_t a[2] = {7, 7}, b[2] = {0, 0};
    sq__sim_attach(sim, 0, (uint8_t *)a, sizeof(a));
    sq__sim_attach(sim, 1, (uint8_t *)b, sizeof(b));
    struct sq_transport *t = sq__sim_transport(sim, 0);
    CHECK_EQ_INT(t->vt->write(t, 1, 0, 8), 0);      /* read when it lands */
    CHECK_EQ_INT(t->vt->write_copy(t, 1, 8, 8), 0); /* copied now */
    a[0] = 99;
    a[1] = 99;
    uint32_t dst;
    while (sq__sim_step(sim, &dst) == 1) {
    }
    CHECK_EQ_INT(b[0], 99);
    CHECK_EQ_INT(b[1], 7);
    CHECK(t->vt->wait(t, 0) == SQ_ENOTSUP);
    sq__sim_destroy(sim);
}

static void test_torn_lower_first(void)
{
    struct sq_sim_params p = {.min_delay_us = 1, .max_jitter_us = 100, .torn_permille = 1000};
    struct sq_sim *sim = NULL;
    CHECK_EQ_INT(sq__sim_create(&sim, 2, 3, &p), 0);
    uint8_t a[64], b[64];
    memset(a, 0xab, sizeof(a));
    memset(b, 0, sizeof(b));
    sq__sim_attach(sim, 0, a, sizeof(a));
    sq__sim_attach(sim, 1, b, sizeof(b));
    struct sq_transport *t = sq__sim_transport(sim, 0);
    CHECK_EQ_INT(t->vt->write_copy(t, 1, 0, 64), 0);
    CHECK_EQ_INT(sq__sim_pending(sim), 2);
    uint32_t dst;
    CHECK_EQ_INT(sq__sim_step(sim, &dst), 1);
    CHECK(b[0] == 0xab);  /* the first part holds the lowest address */
    CHECK(b[63] == 0);    /* the last byte is still in flight */
    CHECK_EQ_INT(sq__sim_step(sim, &dst), 1);
    CHECK(memcmp(a, b, sizeof(a)) == 0);
    sq__sim_destroy(sim);
}

/* Posts a fixed pattern of writes and returns a fingerprint of the landing schedule. */
static uint64_t schedule(uint64_t seed)
{
    struct sq_sim_params p = {.min_delay_us = 5, .max_jitter_us = 300, .loss_permille = 50,
                              .retransmit_us = 700, .torn_permille = 200};
    struct sq_sim *sim = NULL;
    SQ_ASSERT(sq__sim_create(&sim, 3, seed, &p) == 0);
    uint8_t tables[3][256] = {{0}};
    for (uint32_t i = 0; i < 3; i++) {
        sq__sim_attach(sim, i, tables[i], sizeof(tables[i]));
    }
    for (uint32_t k = 0; k < 60; k++) {
        struct sq_transport *t = sq__sim_transport(sim, k % 3);
        SQ_ASSERT(t->vt->write(t, (k + 1 + k / 3 % 2) % 3 == k % 3 ? (k + 2) % 3 : (k + 1 + k / 3 % 2) % 3,
                               (k * 8) % 200, 16) == 0);
    }
    uint64_t h = 1469598103934665603ull;
    uint32_t dst;
    while (sq__sim_step(sim, &dst) == 1) {
        h = (h ^ dst) * 1099511628211ull;
        h = (h ^ sq__sim_now(sim)) * 1099511628211ull;
    }
    sq__sim_destroy(sim);
    return h;
}

static void test_replay(void)
{
    CHECK(schedule(11) == schedule(11));
    CHECK(schedule(11) != schedule(12));
}

int main(void)
{
    test_fifo_under_jitter();
    test_inplace_vs_copy();
    test_torn_lower_first();
    test_replay();
    return sq_test_done("test_sim_transport");
}
