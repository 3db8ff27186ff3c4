/* test_sim_mcast.c: whole groups of 3-7 members on the simulated network, one seed per run.
 * Random senders, sizes, delays, jitter, loss, torn writes and window sizes; asserts that every
 * member delivers every message exactly once, in the same order, with the right payload.
 * A failure prints its seed; `test_sim_mcast --seed S -v` replays it. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "smc.h"
#include "transport/sim/sim.h"
#include "seeds.h"

#define MAX_N 7

struct record {
    uint32_t sender;
    uint64_t index;
    uint64_t version;
    uint32_t size;
};

struct member {
    struct sq__smc smc;
    uint8_t *table;
    struct record *log;
    uint64_t nlog;
    uint64_t per_sender[MAX_N]; /* delivered count per sender, to check payloads */
    struct run *run;
    uint32_t rank;
};

struct run {
    uint64_t seed;
    uint32_t n;
    struct member m[MAX_N];
    uint64_t sent[MAX_N];   /* messages sent per sender */
    uint32_t *sizes[MAX_N]; /* size of each message per sender */
    uint64_t total;         /* messages to send in all */
    char failure[256];
    bool verbose;
};

static uint8_t payload_byte(uint32_t sender, uint64_t seq, size_t pos)
{
    return (uint8_t)(sender * 31u + seq * 7u + pos * 13u + (pos >> 8));
}

static void fail(struct run *run, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(struct run *run, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sq_sim_vfail(run->failure, sizeof(run->failure), fmt, ap);
    va_end(ap);
}

static void on_deliver(void *arg, const sq_message *msg)
{
    struct member *me = arg;
    struct run *run = me->run;
    uint32_t s = msg->sender_rank;
    if (s >= run->n) {
        fail(run, "member %u delivered from unknown sender %u", me->rank, s);
        return;
    }
    /* Atomic delivery: nobody delivers a message before every member has received it. */
    for (uint32_t k = 0; k < run->n; k++) {
        if (run->m[k].smc.sst.received[s] <= msg->index / run->n) {
            fail(run, "member %u delivered index %" PRIu64 " before member %u received it",
                 me->rank, msg->index, k);
            return;
        }
    }
    uint64_t seq = me->per_sender[s]++;
    if (seq >= run->sent[s]) {
        fail(run, "member %u delivered message %" PRIu64 " of sender %u, which sent only %" PRIu64,
             me->rank, seq, s, run->sent[s]);
        return;
    }
    if (msg->size != run->sizes[s][seq]) {
        fail(run, "member %u: message %" PRIu64 " of sender %u has size %zu, sent %u", me->rank,
             seq, s, msg->size, run->sizes[s][seq]);
        return;
    }
    if (((uintptr_t)msg->data & 7u) != 0) {
        fail(run, "member %u: payload not 8-byte aligned", me->rank);
        return;
    }
    const uint8_t *p = msg->data;
    for (size_t i = 0; i < msg->size; i++) {
        if (p[i] != payload_byte(s, seq, i)) {
            fail(run, "member %u: message %" PRIu64 " of sender %u differs at byte %zu", me->rank,
                 seq, s, i);
            return;
        }
    }
    if (me->nlog >= run->total) {
        fail(run, "member %u delivered more than the %" PRIu64 " messages sent", me->rank,
             run->total);
        return;
    }
    if (me->nlog > 0 && msg->index <= me->log[me->nlog - 1].index) {
        fail(run, "member %u: global index went from %" PRIu64 " to %" PRIu64, me->rank,
             me->log[me->nlog - 1].index, msg->index);
    }
    if (msg->version != me->nlog) {
        fail(run, "member %u: version %" PRIu64 " for its delivery #%" PRIu64, me->rank,
             msg->version, me->nlog);
    }
    me->log[me->nlog++] = (struct record){s, msg->index, msg->version, (uint32_t)msg->size};
}

static int poll_member(struct run *run, uint32_t r)
{
    /* Poll until idle; each poll is bounded, and so is this loop. */
    for (int k = 0; k < 64; k++) {
        int rc = sq__smc_poll(&run->m[r].smc);
        if (rc < 0) {
            fail(run, "member %u poll failed: %s (%s)", r, sq_strerror(rc),
                 run->m[r].smc.sst.errmsg);
            return rc;
        }
        struct sq_transport *t = run->m[r].smc.sst.t;
        int frc = t->vt->flush(t);
        if (frc != 0) {
            fail(run, "member %u flush failed: %s", r, sq_strerror(frc));
            return frc;
        }
        if (rc == 0) {
            return 0;
        }
    }
    return 0;
}

/* Tries to send the next message of sender r; true if it went out. */
static bool try_send(struct run *run, uint32_t r, bool zero_copy_hold, uint64_t *rng)
{
    struct member *m = &run->m[r];
    uint64_t seq = run->sent[r];
    uint32_t size = run->sizes[r][seq];
    void *buf = NULL;
    int rc = sq__smc_reserve(&m->smc, size, &buf);
    if (rc == SQ_EAGAIN) {
        return false;
    }
    if (rc != 0) {
        fail(run, "member %u reserve: %s", r, sq_strerror(rc));
        return false;
    }
    uint8_t *p = buf;
    for (size_t i = 0; i < size; i++) {
        p[i] = payload_byte(r, seq, i);
    }
    run->sent[r] = seq + 1;
    if (zero_copy_hold) {
        /* Let the network move while the reservation is open, as a slow filler would. */
        for (int k = (int)sq__sim_rand_below(rng, 4); k > 0; k--) {
            (void)poll_member(run, r);
        }
    }
    rc = sq__smc_commit(&m->smc);
    if (rc != 0) {
        fail(run, "member %u commit: %s", r, sq_strerror(rc));
    }
    return true;
}

static int run_seed(uint64_t seed, bool verbose)
{
    uint64_t rng = seed * 0x2545f4914f6cdd1dull + 1;
    struct run *run = calloc(1, sizeof(*run));
    SQ_ASSERT(run != NULL);
    run->seed = seed;
    run->verbose = verbose;
    run->n = 3 + (uint32_t)sq__sim_rand_below(&rng, 5); /* 3..7 */
    uint32_t window = 1 + (uint32_t)sq__sim_rand_below(&rng, 16);
    uint32_t max_payload = 1 + (uint32_t)sq__sim_rand_below(&rng, 300);
    /* Half the seeds take messages above the slots' size by the large-message path: blocks of a
     * random size along a chain or a star, through rings of a random size (at least one largest
     * message, so a sender may have to wait for its ring to drain). */
    uint32_t max_smc = max_payload;
    size_t ring_bytes = 0;
    uint32_t block_bytes = 0;
    enum sq__smc_schedule schedule = SQ_SMC_CHAIN;
    if (sq__sim_rand_below(&rng, 2) == 0) {
        max_smc = 8 + (uint32_t)sq__sim_rand_below(&rng, 300);
        max_payload = max_smc + 1 + (uint32_t)sq__sim_rand_below(&rng, 20000);
        ring_bytes = max_payload + sq__sim_rand_below(&rng, 3u * max_payload);
        block_bytes = 8 + (uint32_t)sq__sim_rand_below(&rng, 4096);
        schedule = sq__sim_rand_below(&rng, 2) == 0 ? SQ_SMC_CHAIN : SQ_SMC_STAR;
    }
    struct sq_sim_params sp = {
        .min_delay_us = 1 + (uint32_t)sq__sim_rand_below(&rng, 50),
        .max_jitter_us = (uint32_t)sq__sim_rand_below(&rng, 300),
        .loss_permille = (uint32_t)sq__sim_rand_below(&rng, 50),
        .retransmit_us = 1000,
        .torn_permille = (uint32_t)sq__sim_rand_below(&rng, 300),
    };
    /* Which members send: all, exactly one, or a random subset. */
    uint32_t mode = (uint32_t)sq__sim_rand_below(&rng, 3);
    bool sends[MAX_N] = {0};
    uint32_t one = (uint32_t)sq__sim_rand_below(&rng, run->n);
    for (uint32_t r = 0; r < run->n; r++) {
        sends[r] = mode == 0 || (mode == 1 && r == one) ||
                   (mode == 2 && (r == one || sq__sim_rand_below(&rng, 2) == 0));
    }
    uint64_t quota[MAX_N] = {0};
    for (uint32_t r = 0; r < run->n; r++) {
        quota[r] = sends[r] ? 50 + sq__sim_rand_below(&rng, 400) : 0;
        run->total += quota[r];
        run->sizes[r] = calloc(quota[r] + 1, sizeof(uint32_t));
        for (uint64_t k = 0; k < quota[r]; k++) {
            uint64_t pick = sq__sim_rand_below(&rng, 10);
            run->sizes[r][k] = pick == 0   ? 0
                               : pick == 1 ? max_payload
                                           : (uint32_t)sq__sim_rand_below(&rng, max_payload + 1);
        }
    }
    if (verbose) {
        printf("seed %" PRIu64 ": n=%u window=%u max_payload=%u max_smc=%u ring=%zu block=%u "
               "schedule=%s mode=%u delay=%u+%u loss=%u torn=%u total=%" PRIu64 "\n",
               seed, run->n, window, max_payload, max_smc, ring_bytes, block_bytes,
               schedule == SQ_SMC_CHAIN ? "chain" : "star", mode, sp.min_delay_us, sp.max_jitter_us,
               sp.loss_permille, sp.torn_permille, run->total);
    }

    struct sq_sim *sim = NULL;
    SQ_ASSERT(sq__sim_create(&sim, run->n, seed ^ 0x5eed, &sp) == 0);
    uint32_t ids[MAX_N];
    for (uint32_t r = 0; r < run->n; r++) {
        ids[r] = 100 + r;
    }
    for (uint32_t r = 0; r < run->n; r++) {
        struct member *m = &run->m[r];
        m->run = run;
        m->rank = r;
        struct sq__sst_layout L;
        SQ_ASSERT(sq__sst_layout_large(&L, run->n, window, max_payload, max_smc, ring_bytes) == 0);
        m->table = calloc(1, L.table_bytes);
        m->log = calloc(run->total + 1, sizeof(struct record));
        SQ_ASSERT(m->table != NULL && m->log != NULL);
        sq__sim_attach(sim, r, m->table, L.table_bytes);
        struct sq__smc_params p = {.sst = {.nmembers = run->n,
                                           .my_rank = r,
                                           .window_size = window,
                                           .max_payload = max_payload,
                                           .max_smc_payload = max_smc,
                                           .large_ring_bytes = ring_bytes,
                                           .view_id = 0,
                                           .member_ids = ids},
                                   .schedule = schedule,
                                   .block_bytes = block_bytes};
        SQ_ASSERT(sq__smc_init(&m->smc, &p, m->table, sq__sim_transport(sim, r), on_deliver, m) ==
                  0);
    }

    /* Drive: interleave sends and network steps, all chosen by the seed. Bounded. */
    uint64_t steps = 0, max_steps = 50u * 1000u * 1000u;
    uint64_t eagain = 0;
    while (run->failure[0] == '\0' && steps++ < max_steps) {
        bool want_send = false;
        for (uint32_t r = 0; r < run->n; r++) {
            want_send |= run->sent[r] < quota[r];
        }
        bool network = sq__sim_pending(sim) > 0;
        if (!want_send && !network) {
            break;
        }
        if (want_send && (!network || sq__sim_rand_below(&rng, 100) < 35)) {
            /* A burst from one sender. */
            uint32_t r = (uint32_t)sq__sim_rand_below(&rng, run->n);
            if (run->sent[r] >= quota[r]) {
                for (r = 0; run->sent[r] >= quota[r]; r++) {
                }
            }
            uint32_t burst = 1 + (uint32_t)sq__sim_rand_below(&rng, 8);
            bool any = false;
            for (uint32_t b = 0; b < burst && run->sent[r] < quota[r]; b++) {
                bool hold = sq__sim_rand_below(&rng, 10) == 0;
                if (!try_send(run, r, hold, &rng)) {
                    eagain++;
                    break;
                }
                any = true;
            }
            if (any) {
                (void)poll_member(run, r);
            } else if (!network) {
                fail(run, "stuck: member %u's window is full and nothing is in flight", r);
                for (uint32_t j = 0; verbose && j < run->n; j++) {
                    struct sq__smc *x = &run->m[j].smc;
                    printf("  member %u: next_deliver %" PRIu64 " next_index %" PRIu64
                           " slots_used %" PRIu64 " head %" PRIu64 " tail %" PRIu64 "\n",
                           j, x->next_deliver, x->next_index, x->slots_used, x->large_head,
                           x->large_tail);
                    for (uint32_t q = 0; q < run->n; q++) {
                        printf("    sender %u: received %" PRIu64 " recv_slots %" PRIu64
                               " fwd_slot %" PRIu64 " fwd_pos %" PRIu64 " seen_src %" PRIu64 "\n",
                               q, x->sst.received[q], x->recv_slots[q], x->fwd_slot[q],
                               x->fwd_pos[q], x->seen_src[q]);
                    }
                }
            }
            continue;
        }
        uint32_t dst = 0;
        if (sq__sim_step(sim, &dst) == 1) {
            (void)poll_member(run, dst);
        }
        if (sq__sim_rand_below(&rng, 50) == 0) {
            (void)poll_member(run, (uint32_t)sq__sim_rand_below(&rng, run->n)); /* spurious */
        }
    }
    if (run->failure[0] == '\0' && steps >= max_steps) {
        fail(run, "no end after %" PRIu64 " steps", max_steps);
    }
    /* Everything delivered everywhere, in one order. */
    for (uint32_t r = 0; r < run->n && run->failure[0] == '\0'; r++) {
        struct member *m = &run->m[r];
        if (m->nlog != run->total) {
            fail(run, "member %u delivered %" PRIu64 " of %" PRIu64 " messages", r, m->nlog,
                 run->total);
            break;
        }
        if (memcmp(m->log, run->m[0].log, run->total * sizeof(struct record)) != 0) {
            for (uint64_t k = 0; k < run->total; k++) {
                if (memcmp(&m->log[k], &run->m[0].log[k], sizeof(struct record)) != 0) {
                    fail(run,
                         "members 0 and %u differ at delivery #%" PRIu64 ": sender %u index "
                         "%" PRIu64 " vs sender %u index %" PRIu64,
                         r, k, run->m[0].log[k].sender, run->m[0].log[k].index, m->log[k].sender,
                         m->log[k].index);
                    break;
                }
            }
        }
        if (!sq__smc_drained(&m->smc)) {
            fail(run, "member %u: own messages not all delivered", r);
        }
    }
    int ok = run->failure[0] == '\0';
    if (!ok) {
        fprintf(stderr,
                "FAIL seed %" PRIu64 ": %s\n  replay: test_sim_mcast --seed %" PRIu64 " -v\n", seed,
                run->failure, seed);
    } else if (verbose) {
        printf("seed %" PRIu64 ": ok, %" PRIu64 " messages, %" PRIu64 " writes applied, %" PRIu64
               " window-full retries, virtual time %" PRIu64 " us\n",
               seed, run->total, sq__sim_applied(sim), eagain, sq__sim_now(sim));
    }
    for (uint32_t r = 0; r < run->n; r++) {
        sq__smc_fini(&run->m[r].smc);
        free(run->m[r].table);
        free(run->m[r].log);
        free(run->sizes[r]);
    }
    sq__sim_destroy(sim);
    free(run);
    return ok;
}

int main(int argc, char **argv)
{
    return sq_sim_main(argc, argv, "sim mcast", run_seed);
}
