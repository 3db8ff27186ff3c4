/* lincheck.h: a linearizability checker for one key of squall's store, seen as a register with
 * versions, conditional puts and removals (Wing & Gong's search with Lowe's just-in-time
 * linearization and memoized configurations), used on the histories the chaos suite records.
 *
 * The model. A key's state is (value, version): value 0 is "absent" (never written, or removed),
 * every write puts a value no other write puts (the chaos clients make them unique), and each
 * applied write gets a version greater than every earlier one of its key. A client call is an
 * operation with its call and return times and its outcome: done (ok), refused (conflict, not
 * found) or unknown (timed out, connection lost: it may have been applied, once, at any time
 * after its call, or never). A history is linearizable when every done and refused operation,
 * and any subset of the unknown ones, can be put in one order that respects real time (an
 * operation that returned before another was called comes first) in which each one's outcome is
 * what the model gives.
 *
 * Scale. A key's history is cut where no operation is pending into segments, searched as a
 * chain: a segment gives the states it can end in one at a time, the next starts from the
 * latest, and the search comes back for another only when the next has no order from there.
 * Within a segment it keeps the configurations (operations placed, state) it has seen, so it
 * visits each at most once. Unknown writes: lc_prepare gives each one whose value was seen (read, or used by a
 * conditional put) the version it was seen with and a return time no later than the first
 * operation that saw it (it was applied before anyone could see it); one never seen is dropped
 * when nothing in the history can depend on it having been applied (see lincheck.c). */
#ifndef SQ_CHAOS_LINCHECK_H
#define SQ_CHAOS_LINCHECK_H

#include <stddef.h>
#include <stdint.h>

#define LC_NEVER UINT64_MAX /* the return time of an unknown operation */
#define LC_NOVER UINT64_MAX /* a version nobody saw */

typedef enum lc_kind {
    LC_PUT,        /* put value */
    LC_PUT_IF,     /* put value only if the key is at version `expect` */
    LC_PUT_ABSENT, /* put value only if the key is absent */
    LC_REMOVE,     /* remove the key (a version of its own; refused as not found when absent) */
    LC_GET,        /* a linearizable read (squall's get --stable) */
} lc_kind;

typedef enum lc_outcome {
    LC_OK,       /* done: a write's version, a read's value and version (0, 0: absent) */
    LC_CONFLICT, /* a conditional put refused: `version` is the current one the member named */
    LC_NOTFOUND, /* a remove or read of an absent key */
    LC_UNKNOWN,  /* no answer: a write that may have been applied */
} lc_outcome;

typedef struct lc_op {
    lc_kind kind;
    lc_outcome outcome;
    uint64_t value;   /* writes: the value written (nonzero); reads: the value read (0 absent) */
    uint64_t expect;  /* LC_PUT_IF: the version the key must be at */
    uint64_t version; /* see lc_outcome; LC_NOVER when unknown */
    uint64_t call_ns, ret_ns; /* monotonic; ret_ns = LC_NEVER for LC_UNKNOWN */
    uint32_t id;              /* the caller's index of the operation, for reports */
} lc_op;

typedef struct lc_state {
    uint64_t value;
    uint64_t version; /* LC_NOVER: applied by an unknown write nobody saw */
} lc_state;

/* Resolves and prunes unknown operations in place (see above) and drops nothing else. `seen`
 * lists (value, version, time) sightings from outside the linearizable operations (plain gets,
 * watch events, the log read after the run): each one resolves the write of that value like a
 * read would, and caps its return time at `time_ns` (LC_NEVER: resolve only). Returns the new
 * number of operations. */
typedef struct lc_seen {
    uint64_t value, version, time_ns;
} lc_seen;
size_t lc_prepare(lc_op *ops, size_t n, const lc_seen *seen, size_t nseen);

/* The verdict on one key. */
typedef enum lc_verdict {
    LC_LINEARIZABLE = 0,
    LC_VIOLATION = 1, /* no order explains the history: see bad_* */
    LC_UNDECIDED = 2, /* the search exceeded max_configs: neither proven nor refuted */
} lc_verdict;

typedef struct lc_result {
    lc_verdict verdict;
    size_t segments;    /* how many segments the history was cut into */
    size_t configs;     /* configurations visited, over all segments */
    size_t max_segment; /* the most operations in one segment */
    /* LC_VIOLATION: a smallest sub-history found that is not linearizable on its own from the
     * states the segment could start in (bad_n operations, ids in bad_ids, malloc'd: the caller
     * frees it), and those start states. */
    uint32_t *bad_ids;
    size_t bad_n;
    lc_state bad_from[8];
    size_t bad_nfrom;
} lc_result;

/* Checks ops[0..n) of one key, starting from the absent state, or with any_start from a state
 * nobody knows (the first operation that tells decides it: a volatile pool after the members
 * holding it were lost). Sorts ops by call time. Gives up with LC_UNDECIDED after `max_configs`
 * configurations in one segment (0: 4 million). */
lc_verdict lc_check(lc_op *ops, size_t n, size_t max_configs, int any_start, lc_result *res);

/* Frees what lc_check left in res (safe on a zeroed result). */
void lc_result_free(lc_result *res);

/* A short name of an op's kind and outcome, for reports. */
const char *lc_kind_name(lc_kind k);
const char *lc_outcome_name(lc_outcome o);

#endif
