/* sim.h: a deterministic in-process network for whole groups: one seed drives every link's delay,
 * jitter, loss (as retransmission delay) and torn writes, so any run can be replayed exactly. */
#ifndef SQ_SIM_H
#define SQ_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "transport.h"

#define SQ_SIM_MAX_MEMBERS 32
/* Bound on writes in flight in the whole simulated network. */
#define SQ_SIM_MAX_EVENTS (1u << 20)

struct sq_sim_params {
    uint32_t min_delay_us;     /* every write takes at least this long */
    uint32_t max_jitter_us;    /* plus a uniform random extra in [0, max_jitter_us] */
    uint32_t loss_permille;    /* chance a packet is lost and must be resent... */
    uint32_t retransmit_us;    /* ...which costs this much more delay (links are reliable) */
    uint32_t torn_permille;    /* chance a write lands in two parts, as tcp can apply it */
};

struct sq_sim;

/* The deterministic generator the simulator and its tests share (splitmix64). */
uint64_t sq__sim_rand(uint64_t *state);
/* Uniform in [0, bound). */
uint64_t sq__sim_rand_below(uint64_t *state, uint64_t bound);

/* Creates a network of `n` members; `seed` fixes every random choice. */
int sq__sim_create(struct sq_sim **out, uint32_t n, uint64_t seed, const struct sq_sim_params *p);
void sq__sim_destroy(struct sq_sim *sim);

/* Gives member `rank` its table (`bytes` long, owned by the caller). */
void sq__sim_attach(struct sq_sim *sim, uint32_t rank, uint8_t *table, size_t bytes);

/* The transport of member `rank` (owned by the simulator). */
struct sq_transport *sq__sim_transport(struct sq_sim *sim, uint32_t rank);

/* Applies the earliest pending write (or part of one) and advances the virtual clock to it.
 * Returns 1 and the destination rank in *dst, 2 when the write was lost to a cut link, or 0
 * when nothing is in flight. */
int sq__sim_step(struct sq_sim *sim, uint32_t *dst);

/* Breaks the link between members a and b for good, both ways: later writes fail with
 * SQ_EPEER and writes in flight are lost, as when a connection is reset. */
void sq__sim_cut(struct sq_sim *sim, uint32_t a, uint32_t b);
bool sq__sim_is_cut(const struct sq_sim *sim, uint32_t a, uint32_t b);

/* Member a restarts: new connections to everyone (nothing still in flight on the old ones
 * lands), no cut or held links. */
void sq__sim_reconnect(struct sq_sim *sim, uint32_t a);

/* A silent partition that heals: nothing posted between a and b (both ways) lands before
 * `until_us`; writers see no error, and the links stay FIFO. */
void sq__sim_hold(struct sq_sim *sim, uint32_t a, uint32_t b, uint64_t until_us);

/* Time of the next pending write (UINT64_MAX when none). */
uint64_t sq__sim_next_time(const struct sq_sim *sim);
/* Moves the clock forward to `to_us`, never past the next pending write. */
void sq__sim_advance(struct sq_sim *sim, uint64_t to_us);

/* Virtual time in microseconds. */
uint64_t sq__sim_now(const struct sq_sim *sim);
/* Writes in flight. */
size_t sq__sim_pending(const struct sq_sim *sim);
/* Writes applied so far (parts of torn writes counted separately). */
uint64_t sq__sim_applied(const struct sq_sim *sim);

#endif
