/* lincheck.c: the linearizability checker of lincheck.h: resolving unknown operations, cutting a
 * key's history into segments, and the search for an order within each. */
#include "lincheck.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define LC_DEFAULT_MAX_CONFIGS (4u << 20) /* per segment */
#define LC_TOTAL_MAX_CONFIGS (64u << 20)  /* over a key's whole history */

const char *lc_kind_name(lc_kind k)
{
    switch (k) {
    case LC_PUT:
        return "put";
    case LC_PUT_IF:
        return "put-if";
    case LC_PUT_ABSENT:
        return "put-absent";
    case LC_REMOVE:
        return "remove";
    case LC_GET:
        return "get";
    }
    return "?";
}

const char *lc_outcome_name(lc_outcome o)
{
    switch (o) {
    case LC_OK:
        return "ok";
    case LC_CONFLICT:
        return "conflict";
    case LC_NOTFOUND:
        return "notfound";
    case LC_UNKNOWN:
        return "unknown";
    }
    return "?";
}

static int is_write(const lc_op *op)
{
    return op->kind != LC_GET;
}

/* ---- resolving unknown operations ---- */

typedef struct vmap_entry {
    uint64_t key, version, time_ns; /* key: a value (for the value map) or a version */
    uint64_t value;
} vmap_entry;

static int cmp_key(const void *a, const void *b)
{
    const vmap_entry *x = a, *y = b;
    return x->key < y->key ? -1 : x->key > y->key;
}

static vmap_entry *vmap_find(vmap_entry *m, size_t n, uint64_t key)
{
    vmap_entry probe = {.key = key};
    return bsearch(&probe, m, n, sizeof *m, cmp_key);
}

/* Sorts (key, version, time) sightings by key and folds each key's into one: its version (a
 * value has one version: its one write's) and the earliest time it was seen. */
static size_t fold_sightings(vmap_entry *m, size_t n)
{
    qsort(m, n, sizeof *m, cmp_key);
    size_t out = 0;
    for (size_t i = 0; i < n; i++) {
        if (out > 0 && m[out - 1].key == m[i].key) {
            if (m[i].time_ns < m[out - 1].time_ns)
                m[out - 1].time_ns = m[i].time_ns;
            if (m[out - 1].version == LC_NOVER)
                m[out - 1].version = m[i].version;
            continue;
        }
        m[out++] = m[i];
    }
    return out;
}

size_t lc_prepare(lc_op *ops, size_t n, const lc_seen *seen, size_t nseen)
{
    /* What each value was seen as, and when first: done writes (their own answer: no cap),
     * reads, and the sightings from outside. A version seen is mapped back to its value. */
    vmap_entry *byval = calloc(n + nseen + 1, sizeof *byval);
    vmap_entry *byver = calloc(n + nseen + 1, sizeof *byver);
    size_t nv = 0, nr = 0;
    if (byval == NULL || byver == NULL) {
        free(byval);
        free(byver);
        return n; /* nothing resolved: the check is then only stricter about unknowns */
    }
    for (size_t i = 0; i < n; i++) {
        const lc_op *op = &ops[i];
        if (op->outcome == LC_OK && op->version != LC_NOVER && (is_write(op) || op->value != 0)) {
            uint64_t t = is_write(op) ? LC_NEVER : op->ret_ns;
            byval[nv++] = (vmap_entry){.key = op->value, .version = op->version, .time_ns = t};
            byver[nr++] = (vmap_entry){.key = op->version, .value = op->value, .time_ns = t};
        }
    }
    for (size_t i = 0; i < nseen; i++) {
        if (seen[i].value != 0)
            byval[nv++] = (vmap_entry){
                .key = seen[i].value, .version = seen[i].version, .time_ns = seen[i].time_ns};
        byver[nr++] = (vmap_entry){
            .key = seen[i].version, .value = seen[i].value, .time_ns = seen[i].time_ns};
    }
    nv = fold_sightings(byval, nv);
    nr = fold_sightings(byver, nr);
    /* A conflict names the version current at its place: the write of that version (when a
     * value is known for it) was applied before the conflict returned. */
    for (size_t i = 0; i < n; i++) {
        const lc_op *op = &ops[i];
        if (op->outcome != LC_CONFLICT || op->version == 0 || op->version == LC_NOVER)
            continue;
        vmap_entry *r = vmap_find(byver, nr, op->version);
        if (r == NULL || r->value == 0)
            continue;
        vmap_entry *v = vmap_find(byval, nv, r->value);
        if (v != NULL && op->ret_ns < v->time_ns)
            v->time_ns = op->ret_ns;
    }
    /* Unknown writes whose value was seen were applied: with that version, returning no later
     * than the first sighting. */
    for (size_t i = 0; i < n; i++) {
        lc_op *op = &ops[i];
        if (op->outcome != LC_UNKNOWN || op->kind == LC_REMOVE || op->kind == LC_GET)
            continue;
        vmap_entry *v = vmap_find(byval, nv, op->value);
        if (v == NULL)
            continue;
        op->outcome = LC_OK;
        op->version = v->version;
        op->ret_ns = v->time_ns;
    }
    /* An applied write of version V comes, in the model, before every operation that saw or made
     * a version above V (versions only grow along the order), so it returned no later than the
     * first of those returned. */
    {
        vmap_entry *byv = calloc(n + nseen + 1, sizeof *byv);
        size_t nb = 0;
        if (byv != NULL) {
            for (size_t i = 0; i < n; i++)
                if (ops[i].version != LC_NOVER && ops[i].outcome != LC_UNKNOWN &&
                    ops[i].outcome != LC_NOTFOUND && ops[i].ret_ns != LC_NEVER)
                    byv[nb++] = (vmap_entry){.key = ops[i].version, .time_ns = ops[i].ret_ns};
            for (size_t i = 0; i < nseen; i++)
                if (seen[i].time_ns != LC_NEVER)
                    byv[nb++] = (vmap_entry){.key = seen[i].version, .time_ns = seen[i].time_ns};
            qsort(byv, nb, sizeof *byv, cmp_key);
            for (size_t i = nb; i-- > 1;) /* suffix minimum of the times */
                if (byv[i].time_ns < byv[i - 1].time_ns)
                    byv[i - 1].time_ns = byv[i].time_ns;
            for (size_t i = 0; i < n; i++) {
                lc_op *op = &ops[i];
                /* likewise an unknown conditional put can only run while the key is at its
                 * expected version: not once a higher version was made or seen */
                uint64_t v = op->version;
                if (op->kind == LC_PUT_IF && op->outcome == LC_UNKNOWN)
                    v = op->expect;
                else if (!is_write(op) || op->outcome != LC_OK || op->version == LC_NOVER)
                    continue;
                /* the first entry with a version above v */
                size_t lo = 0, hi = nb;
                while (lo < hi) {
                    size_t mid = (lo + hi) / 2;
                    if (byv[mid].key <= v)
                        lo = mid + 1;
                    else
                        hi = mid;
                }
                if (lo < nb && byv[lo].time_ns < op->ret_ns && byv[lo].time_ns >= op->call_ns)
                    op->ret_ns = byv[lo].time_ns;
                else if (lo < nb && byv[lo].time_ns < op->call_ns && op->outcome == LC_UNKNOWN)
                    op->ret_ns = op->call_ns; /* its version was gone before it was called */
            }
            free(byv);
        }
    }
    /* Unknown writes nobody saw: dropped (taken as never applied) unless something in the
     * history could need them applied: a remove done after their call (it needs the key present)
     * or a conflict naming a version no known write has (it could be theirs). Nothing else can
     * tell them apart from never applied: no read returned their value and no conditional put
     * named their version, and every other operation accepts the state before them as well. */
    size_t out = 0;
    for (size_t i = 0; i < n; i++) {
        lc_op *op = &ops[i];
        int drop = 0;
        if (op->outcome == LC_UNKNOWN && op->kind != LC_REMOVE && op->kind != LC_GET) {
            drop = 1;
            for (size_t j = 0; j < n && drop; j++) {
                const lc_op *o = &ops[j];
                if (o->ret_ns <= op->call_ns)
                    continue;
                if (o->kind == LC_REMOVE && o->outcome == LC_OK)
                    drop = 0;
                if (o->outcome == LC_CONFLICT && o->version != 0 &&
                    vmap_find(byver, nr, o->version) == NULL)
                    drop = 0;
            }
        }
        if (op->kind == LC_GET && op->outcome == LC_UNKNOWN)
            drop = 1; /* a read with no answer says nothing */
        /* an unknown conditional put on a version no answer carries cannot have run: a chaos
         * client takes the version it expects from an answer */
        if (op->kind == LC_PUT_IF && op->outcome == LC_UNKNOWN && op->expect != 0 &&
            vmap_find(byver, nr, op->expect) == NULL)
            drop = 1;
        if (!drop)
            ops[out++] = *op;
    }
    free(byval);
    free(byver);
    return out;
}

/* ---- the model ---- */

/* A configuration's state: the register, and the highest version any write placed so far made
 * (so versions grow along the order even across writes of versions nobody saw). */
typedef struct mstate {
    lc_state reg;
    uint64_t maxver;    /* 0: none yet */
    uint32_t placed[3]; /* how many of each pool of unknown operations were placed (below) */
} mstate;

/* The value an unknown write nobody saw leaves: all of them alike, since nobody read theirs. */
#define LC_PHANTOM (UINT64_MAX - 1)
/* The state of a history that starts from what nobody knows (lc_check's any_start): the first
 * operation that says something of it decides it. */
#define LC_ANY (UINT64_MAX - 3)

static int version_fits(const mstate *s, uint64_t v)
{
    return v == LC_NOVER || s->maxver == 0 || v > s->maxver;
}

static void apply_write(mstate *s, uint64_t value, uint64_t version)
{
    s->reg.value = value;
    s->reg.version = version;
    if (version != LC_NOVER)
        s->maxver = version;
}

/* Places `op` at state `s`: 1 with the state after it in *s, or 0 when its outcome cannot happen
 * there. An unknown operation nobody saw applies when its condition holds and is a no-op
 * otherwise (whether it ran at all is the search's choice: it may never be placed). */
static int step(mstate *s, const lc_op *op)
{
    const lc_state *r = &s->reg;
    if (r->value == LC_ANY) {
        if (op->outcome == LC_UNKNOWN)
            return 1; /* whether it ran or not, nothing is known yet */
        if (op->kind == LC_GET || (op->kind == LC_REMOVE && op->outcome == LC_NOTFOUND)) {
            if (op->outcome == LC_OK && op->value != 0) {
                s->reg.value = op->value;
                s->reg.version = op->version;
            } else {
                s->reg.value = 0;
                s->reg.version = LC_NOVER;
            }
            return 1;
        }
        if (op->outcome == LC_CONFLICT)
            return 1; /* at some other version: still unknown */
        if (op->outcome == LC_OK) {
            apply_write(s, op->kind == LC_REMOVE ? 0 : op->value, op->version);
            return 1;
        }
        return 0;
    }
    int absent = r->value == 0;
    switch (op->kind) {
    case LC_GET:
        if (op->outcome == LC_NOTFOUND)
            return absent;
        if (op->outcome != LC_OK)
            return 0;
        if (op->value == 0)
            return absent;
        return r->value == op->value && (r->version == LC_NOVER || r->version == op->version);
    case LC_PUT:
        if (op->outcome == LC_UNKNOWN) {
            apply_write(s, LC_PHANTOM, LC_NOVER);
            return 1;
        }
        if (op->outcome != LC_OK || !version_fits(s, op->version))
            return 0;
        apply_write(s, op->value, op->version);
        return 1;
    case LC_PUT_IF:
    case LC_PUT_ABSENT: {
        int holds = op->kind == LC_PUT_ABSENT ? absent : r->version == op->expect;
        if (op->outcome == LC_UNKNOWN) {
            if (holds)
                apply_write(s, LC_PHANTOM, LC_NOVER);
            return 1;
        }
        if (op->outcome == LC_OK) {
            /* done: the key was at `expect`, which a state of a version nobody saw may be */
            if (op->kind == LC_PUT_IF && r->version == LC_NOVER && !absent &&
                (s->maxver == 0 || op->expect > s->maxver))
                holds = 1;
            if (!holds || !version_fits(s, op->version))
                return 0;
            apply_write(s, op->value, op->version);
            return 1;
        }
        if (op->outcome != LC_CONFLICT || holds)
            return 0;
        /* the member named the current version: it must be this state's (a state nobody saw
         * the version of may have any version no known write has) */
        if (op->version == LC_NOVER)
            return 1;
        if (r->version == LC_NOVER)
            return op->version > s->maxver || s->maxver == 0;
        return r->version == op->version;
    }
    case LC_REMOVE:
        if (op->outcome == LC_NOTFOUND)
            return absent;
        if (op->outcome == LC_UNKNOWN) {
            if (!absent)
                apply_write(s, 0, LC_NOVER);
            return 1;
        }
        if (op->outcome != LC_OK || absent || !version_fits(s, op->version))
            return 0;
        apply_write(s, 0, op->version);
        return 1;
    }
    return 0;
}

/* ---- the search within one segment ---- */

typedef struct entry {
    uint64_t time;
    uint32_t op; /* index into the segment */
    int is_call;
    struct entry *match; /* a call's return */
    struct entry *prev, *next;
} entry;

typedef struct frame {
    entry *call, *pre; /* pre: an unknown operation placed right before call, or NULL */
    int pool;          /* or >= 0: the next of that pool was placed right before call */
    mstate before;
} frame;

/* A configuration is kept as a 128-bit hash of (operations placed, state): two Zobrist hashes of
 * the set (the XOR of a random key per placed operation) mixed with the state. Keeping hashes
 * instead of the sets keeps a configuration at 24 bytes however long the segment; two different
 * configurations collide with a chance of about n^2 / 2^129 for n kept, and a collision could only
 * cut a branch (a false violation, never a false pass). */
typedef struct memo_slot {
    uint64_t h1, h2; /* h1 == 0: empty */
} memo_slot;

typedef struct search {
    const lc_op *ops; /* the segment's operations */
    size_t m;
    entry *ents;
    entry head;
    uint64_t *zob1, *zob2; /* random keys per operation */
    memo_slot *slots;
    size_t nslots, used, max_configs;
    int over; /* max_configs exceeded, or out of memory */
    /* Pools of unknown operations nobody saw that may run at any time after their call (no
     * answer bounds them): plain puts, puts if absent, removes. The members of a pool do the
     * same thing under the same condition and differ only in when they were called, so the
     * search takes them in call order (if some order uses k of them, one uses the k first
     * called), and a configuration counts how many of each it placed (mstate.placed). */
    const lc_op *pool[3];
    size_t pool_n[3];
    /* Where the search stands, so that it can go on for the next end state (search_next). */
    int has_pending; /* an end state found ahead (by close_segment), given next */
    mstate pending;
    frame *stack;
    size_t depth;
    entry *e, *pre_from;
    int pool_next, started;
    mstate s;
    uint64_t b1, b2;
} search;

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t state_hash(const mstate *s, uint64_t salt)
{
    return mix64(
        mix64(s->reg.value ^ salt) ^ mix64(s->reg.version * 3 + 1 + salt) ^
        mix64(s->maxver * 7 + 2 + salt) ^
        mix64(((uint64_t)s->placed[0] << 42 ^ (uint64_t)s->placed[1] << 21 ^ s->placed[2]) + salt));
}

static int memo_grow(search *se)
{
    size_t n = se->nslots == 0 ? 64 : se->nslots * 2;
    memo_slot *ns = calloc(n, sizeof *ns);
    if (ns == NULL)
        return -1;
    for (size_t i = 0; i < se->nslots; i++) {
        if (se->slots[i].h1 == 0)
            continue;
        size_t j = se->slots[i].h1 & (n - 1);
        while (ns[j].h1 != 0)
            j = (j + 1) & (n - 1);
        ns[j] = se->slots[i];
    }
    free(se->slots);
    se->slots = ns;
    se->nslots = n;
    return 0;
}

/* Adds the configuration (set hashes b1 b2, state s): 1 if new, 0 if seen, -1 over the limit. */
static int memo_add(search *se, uint64_t b1, uint64_t b2, const mstate *s)
{
    if (se->used >= se->max_configs) {
        se->over = 1;
        return -1;
    }
    if ((se->used + 1) * 2 > se->nslots && memo_grow(se) != 0) {
        se->over = 1;
        return -1;
    }
    uint64_t h1 = mix64(b1 ^ state_hash(s, 0)), h2 = mix64(b2 ^ state_hash(s, 0x5bd1e995));
    if (h1 == 0)
        h1 = 1;
    size_t j = h1 & (se->nslots - 1);
    for (; se->slots[j].h1 != 0; j = (j + 1) & (se->nslots - 1))
        if (se->slots[j].h1 == h1 && se->slots[j].h2 == h2)
            return 0;
    se->slots[j] = (memo_slot){.h1 = h1, .h2 = h2};
    se->used++;
    return 1;
}

static int cmp_entry(const void *a, const void *b)
{
    const entry *x = a, *y = b;
    if (x->time != y->time)
        return x->time < y->time ? -1 : 1;
    if (x->is_call != y->is_call)
        return x->is_call ? -1 : 1; /* at one instant, calls first: they count as concurrent */
    return x->op < y->op ? -1 : x->op > y->op;
}

static void lift(entry *call)
{
    call->prev->next = call->next;
    if (call->next)
        call->next->prev = call->prev;
    entry *ret = call->match;
    ret->prev->next = ret->next;
    if (ret->next)
        ret->next->prev = ret->prev;
}

static void unlift(entry *call)
{
    entry *ret = call->match;
    ret->prev->next = ret;
    if (ret->next)
        ret->next->prev = ret;
    call->prev->next = call;
    if (call->next)
        call->next->prev = call;
}

/* Builds the entry list of ops[0..m); 0 or -1 out of memory. */
static int search_init(search *se, const lc_op *ops, size_t m, size_t max_configs,
                       const lc_op *const pool[3], const size_t pool_n[3])
{
    memset(se, 0, sizeof *se);
    for (int k = 0; k < 3; k++) {
        se->pool[k] = pool[k];
        se->pool_n[k] = pool_n[k];
    }
    se->ops = ops;
    se->m = m;
    se->max_configs = max_configs;
    se->ents = calloc(2 * m, sizeof *se->ents);
    se->zob1 = calloc(m, sizeof *se->zob1);
    se->zob2 = calloc(m, sizeof *se->zob2);
    se->stack = calloc(m + 1, sizeof *se->stack);
    if (se->ents == NULL || se->zob1 == NULL || se->zob2 == NULL || se->stack == NULL)
        return -1;
    for (size_t i = 0; i < m; i++) {
        se->ents[2 * i] = (entry){.time = ops[i].call_ns, .op = (uint32_t)i, .is_call = 1};
        se->ents[2 * i + 1] = (entry){.time = ops[i].ret_ns, .op = (uint32_t)i, .is_call = 0};
        se->zob1[i] = mix64(i * 0x2545f4914f6cdd1dull + 12345);
        se->zob2[i] = mix64(i * 0x9e3779b97f4a7c15ull + 67890);
    }
    qsort(se->ents, 2 * m, sizeof *se->ents, cmp_entry);
    entry **ret_of = calloc(m, sizeof *ret_of);
    if (ret_of == NULL)
        return -1;
    for (size_t i = 0; i < 2 * m; i++)
        if (!se->ents[i].is_call)
            ret_of[se->ents[i].op] = &se->ents[i];
    for (size_t i = 0; i < 2 * m; i++)
        if (se->ents[i].is_call)
            se->ents[i].match = ret_of[se->ents[i].op];
    free(ret_of);
    return 0;
}

/* Rebuilds the linked list (all operations pending). */
static void search_reset(search *se)
{
    entry *prev = &se->head;
    se->head.prev = NULL;
    for (size_t i = 0; i < 2 * se->m; i++) {
        prev->next = &se->ents[i];
        se->ents[i].prev = prev;
        prev = &se->ents[i];
    }
    prev->next = NULL;
    if (se->m == 0)
        se->head.next = NULL;
}

static void search_free(search *se)
{
    free(se->ents);
    free(se->zob1);
    free(se->zob2);
    free(se->stack);
    free(se->slots);
    memset(se, 0, sizeof *se);
}

static int dominates(const mstate *a, const mstate *b) /* a can do all b can */
{
    if (a->reg.value != b->reg.value || a->reg.version != b->reg.version || a->maxver != b->maxver)
        return 0;
    for (int k = 0; k < 3; k++)
        if (a->placed[k] > b->placed[k])
            return 0;
    return 1;
}

/* The time before which an operation must have been called to be placed where e's is: the first
 * return still pending after e that is not an unknown operation's. */
static uint64_t pool_limit(const search *se, const entry *e)
{
    for (; e != NULL; e = e->next)
        if (!e->is_call && se->ops[e->op].outcome != LC_UNKNOWN)
            return e->time;
    return LC_NEVER;
}

/* Places the operation of call entry e, after the unknown one of entry u when u is not NULL (or
 * the next of pool `pool` when >= 0), if the model allows it and the configuration is new: 1
 * placed (pushed and lifted), 0 seen before, -2 refused by the model, -1 over the limit. */
static int try_place(search *se, frame *stack, size_t *depth, entry *e, entry *u, int pool,
                     mstate *s, uint64_t *b1, uint64_t *b2)
{
    mstate next = *s;
    if (u != NULL && !step(&next, &se->ops[u->op]))
        return -2;
    if (pool >= 0) {
        /* the next of the pool, if it was called by now and changes the state */
        size_t k = next.placed[pool];
        if (k >= se->pool_n[pool] || se->pool[pool][k].call_ns >= pool_limit(se, e))
            return -2;
        mstate before = next;
        step(&next, &se->pool[pool][k]);
        if (memcmp(&before.reg, &next.reg, sizeof next.reg) == 0)
            return -2;
        next.placed[pool]++;
    }
    if (!step(&next, &se->ops[e->op]))
        return -2;
    uint64_t n1 = *b1 ^ se->zob1[e->op], n2 = *b2 ^ se->zob2[e->op];
    if (u != NULL) {
        n1 ^= se->zob1[u->op];
        n2 ^= se->zob2[u->op];
    }
    int fresh = memo_add(se, n1, n2, &next);
    if (fresh <= 0)
        return fresh;
    stack[(*depth)++] = (frame){.call = e, .pre = u, .pool = pool, .before = *s};
    *b1 = n1;
    *b2 = n2;
    *s = next;
    if (u != NULL)
        lift(u);
    lift(e);
    return 1;
}

/* The search. Unknown operations nobody saw are never placed on their own, only right before a
 * done or refused operation that the model refuses at the state it would have alone: moved as
 * late as it goes, such an operation either ends right before something whose outcome needs its
 * effect, or is overwritten first and then changes nothing (nobody saw its value), or never
 * matters. This keeps the search from trying each one at every point. (Needing two of them in a
 * row before one outcome is not tried: a history that needs it is reported, never passed.) */
static void search_start(search *se, mstate start)
{
    search_reset(se);
    se->depth = 0;
    se->s = start;
    se->b1 = se->b2 = 0;
    se->e = se->head.next;
    se->pre_from = NULL;
    se->pool_next = -1;
    se->started = 0;
    se->has_pending = 0;
}

/* Runs the search on to its next end state (every operation placed): 1 with it in *end, 0 when
 * no order is left, -1 when it gave up (se->over). Call search_start first; each later call goes
 * on from where the last one found its end state. */
static int search_next(search *se, mstate *end)
{
    frame *stack = se->stack;
    size_t depth = se->depth;
    mstate s = se->s;
    uint64_t b1 = se->b1, b2 = se->b2;
    entry *e = se->e;
    /* What to try next for e: alone (pre_from NULL), then after each pending unknown entry
     * (those after pre_from), then after the next of each pool (pool_next 0..2). */
    entry *pre_from = se->pre_from;
    int pool_next = se->pool_next;
    int rc = 0;
    if (se->has_pending) {
        se->has_pending = 0;
        *end = se->pending;
        return 1;
    }
    if (se->started)
        goto backtrack; /* the last end state was given: look for another */
    se->started = 1;
    for (;;) {
        if (e == NULL) {
            /* every operation placed (the unknown ones left are taken as never run) */
            *end = s;
            rc = 1;
            break;
        }
        if (e->is_call) {
            if (se->ops[e->op].outcome == LC_UNKNOWN) {
                e = e->next;
                pre_from = NULL;
                pool_next = -1;
                continue;
            }
            int r = 0;
            if (pre_from == NULL && pool_next < 0) {
                r = try_place(se, stack, &depth, e, NULL, -1, &s, &b1, &b2);
                if (r == 0) { /* allowed alone, and tried before: nothing else to try */
                    e = e->next;
                    continue;
                }
                pre_from = &se->head;
            } else if (pool_next < 0) {
                entry *u = pre_from->next;
                while (u != e && !(u->is_call && se->ops[u->op].outcome == LC_UNKNOWN))
                    u = u->next;
                if (u == e) {
                    pool_next = 0;
                    continue;
                }
                pre_from = u;
                r = try_place(se, stack, &depth, e, u, -1, &s, &b1, &b2);
            } else if (pool_next < 3) {
                r = try_place(se, stack, &depth, e, NULL, pool_next, &s, &b1, &b2);
                pool_next++;
            } else {
                e = e->next;
                pre_from = NULL;
                pool_next = -1;
                continue;
            }
            if (r == -1) {
                rc = -1;
                break;
            }
            if (r > 0) {
                e = se->head.next;
                pre_from = NULL;
                pool_next = -1;
            }
            continue;
        }
        /* a return of an operation not placed yet: an unknown one may never have run (or ran as
         * a no-op); any other must be placed before this point, so this order is dead */
        if (se->ops[e->op].outcome == LC_UNKNOWN) {
            e = e->next;
            pre_from = NULL;
            pool_next = -1;
            continue;
        }
    backtrack:
        if (depth == 0) {
            rc = 0;
            break;
        }
        {
            frame f = stack[--depth];
            unlift(f.call);
            b1 ^= se->zob1[f.call->op];
            b2 ^= se->zob2[f.call->op];
            if (f.pre != NULL) {
                unlift(f.pre);
                b1 ^= se->zob1[f.pre->op];
                b2 ^= se->zob2[f.pre->op];
            }
            s = f.before;
            /* go on with the same operation, at the choice after the one just undone */
            e = f.call;
            if (f.pool >= 0) {
                pre_from = &se->head;
                pool_next = f.pool + 1;
            } else if (f.pre != NULL) {
                pre_from = f.pre;
                pool_next = -1;
            } else { /* it was allowed alone: no compounds for it */
                e = f.call->next;
                pre_from = NULL;
                pool_next = -1;
            }
        }
    }
    se->depth = depth;
    se->s = s;
    se->b1 = b1;
    se->b2 = b2;
    se->e = e;
    se->pre_from = pre_from;
    se->pool_next = pool_next;
    return rc;
}

typedef struct pools {
    const lc_op *op[3];
    size_t n[3];
} pools;

/* Whether ops[0..m) has no order from any of `from`: 1 none, 0 there is one, -1 gave up. */
static int segment_fails(const lc_op *ops, size_t m, const pools *pl, const mstate *from,
                         size_t nfrom, size_t max_configs, size_t *configs)
{
    search se;
    int rc = 1;
    if (search_init(&se, ops, m, max_configs, pl->op, pl->n) != 0) {
        search_free(&se);
        return -1;
    }
    for (size_t i = 0; i < nfrom && rc == 1; i++) {
        mstate end;
        search_start(&se, from[i]);
        int r = search_next(&se, &end);
        if (r < 0)
            rc = -1;
        else if (r > 0)
            rc = 0;
    }
    *configs += se.used;
    search_free(&se);
    return rc;
}

static int cmp_call(const void *a, const void *b)
{
    const lc_op *x = a, *y = b;
    if (x->call_ns != y->call_ns)
        return x->call_ns < y->call_ns ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Shrinks a failing segment: drops each operation in turn while the rest still fails from the
 * same start states. Leaves the smallest set found in res. */
static void minimize(const lc_op *seg, size_t m, const pools *pl, const mstate *from, size_t nfrom,
                     size_t max_configs, lc_result *res)
{
    lc_op *cur = malloc((m ? m : 1) * sizeof *cur);
    lc_op *trial = malloc((m ? m : 1) * sizeof *trial);
    size_t n = m, configs = 0;
    if (cur == NULL || trial == NULL)
        goto out;
    memcpy(cur, seg, m * sizeof *cur);
    if (m <= 400) {
        for (size_t i = 0; i < n;) {
            size_t k = 0;
            for (size_t j = 0; j < n; j++)
                if (j != i)
                    trial[k++] = cur[j];
            if (segment_fails(trial, k, pl, from, nfrom, max_configs, &configs) == 1) {
                memcpy(cur, trial, k * sizeof *cur);
                n = k;
            } else {
                i++;
            }
        }
    }
    res->bad_ids = malloc((n ? n : 1) * sizeof *res->bad_ids);
    if (res->bad_ids != NULL) {
        for (size_t i = 0; i < n; i++)
            res->bad_ids[i] = cur[i].id;
        res->bad_n = n;
    }
out:
    res->bad_nfrom = 0;
    for (size_t i = 0; i < nfrom && i < sizeof res->bad_from / sizeof res->bad_from[0]; i++)
        res->bad_from[res->bad_nfrom++] = from[i].reg;
    free(cur);
    free(trial);
}

#define LC_CLOSE_BUDGET 20000 /* configurations spent looking for a segment's second end state */

/* After a segment gave its first end state `first`: looks on, within a budget, for another one
 * that `first` cannot stand for (one that placed fewer unknown operations, or ends elsewhere). 1
 * when there is none (the segment is closed: from its start, ending at `first` is as good as any
 * end), 0 when there is one (kept to be given next) or the budget ran out. */
static int close_segment(search *se, const mstate *first)
{
    size_t limit = se->max_configs;
    if (se->used + LC_CLOSE_BUDGET < limit)
        se->max_configs = se->used + LC_CLOSE_BUDGET;
    mstate end;
    int r;
    while ((r = search_next(se, &end)) > 0 && dominates(first, &end))
        ;
    se->max_configs = limit;
    se->over = 0;
    if (r > 0) {
        se->has_pending = 1;
        se->pending = end;
    }
    return r == 0;
}

lc_verdict lc_check(lc_op *ops, size_t n, size_t max_configs, int any_start, lc_result *res)
{
    memset(res, 0, sizeof *res);
    if (max_configs == 0)
        max_configs = LC_DEFAULT_MAX_CONFIGS;
    qsort(ops, n, sizeof *ops, cmp_call);
    /* the unknown operations with no end go to their pools (call order kept), the rest stay */
    lc_op *pool_ops = malloc((n ? n : 1) * sizeof *pool_ops);
    if (pool_ops == NULL) {
        res->verdict = LC_UNDECIDED;
        return res->verdict;
    }
    pools pl = {{0}, {0}};
    size_t keep = 0, np = 0;
    for (int k = 0; k < 3; k++) {
        pl.op[k] = pool_ops + np;
        for (size_t i = 0; i < n; i++) {
            const lc_op *o = &ops[i];
            int cls = o->kind == LC_PUT          ? 0
                      : o->kind == LC_PUT_ABSENT ? 1
                      : o->kind == LC_REMOVE     ? 2
                                                 : -1;
            if (o->outcome == LC_UNKNOWN && o->ret_ns == LC_NEVER && cls == k) {
                pool_ops[np++] = *o;
                pl.n[k]++;
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        const lc_op *o = &ops[i];
        int pooled = o->outcome == LC_UNKNOWN && o->ret_ns == LC_NEVER &&
                     (o->kind == LC_PUT || o->kind == LC_PUT_ABSENT || o->kind == LC_REMOVE);
        if (!pooled)
            ops[keep++] = *o;
    }
    n = keep;
    /* the segments: runs of ops each called before every earlier one of the run returned */
    size_t *seg_at = malloc((n + 1) * sizeof *seg_at), nseg = 0;
    for (size_t i = 0; seg_at != NULL && i < n;) {
        size_t j = i + 1;
        uint64_t max_ret = ops[i].ret_ns;
        while (j < n && ops[j].call_ns <= max_ret) {
            if (ops[j].ret_ns > max_ret)
                max_ret = ops[j].ret_ns;
            j++;
        }
        seg_at[nseg++] = i;
        if (j - i > res->max_segment)
            res->max_segment = j - i;
        i = j;
    }
    /* per segment: its search (made when first entered, freed once the search can never come
     * back to it) and the start states it was entered from (all but the latest failed) */
    typedef struct segment {
        search se;
        mstate *tried;
        size_t ntried, cap;
    } segment;
    segment *sg = calloc(nseg + 1, sizeof *sg);
    size_t closed_configs = 0, spent = 0;
    if (seg_at == NULL || sg == NULL) {
        res->verdict = LC_UNDECIDED;
        goto done;
    }
    seg_at[nseg] = n;
    res->segments = nseg;
    res->verdict = LC_LINEARIZABLE;
    if (nseg == 0)
        goto done;
    /* A depth-first search over the chain of segments: each segment's search gives its end
     * states one at a time; the next segment starts from the latest, and when it has no order
     * from there the search comes back for another. A segment entered again from a state that a
     * state it already failed from can stand for is not searched again, so each segment is
     * searched once per distinct start. `low` is the first segment whose start is not known to
     * be forced: segments before it are closed (they end in one state only) and freed. */
    size_t k = 0, low = 0, worst = 0;
    mstate start = {.reg = {any_start ? LC_ANY : 0, any_start ? LC_NOVER : 0}, .maxver = 0};
    for (size_t nk = 0;; nk = k + 1) {
        /* enter segment nk from `start` (nk == k + 1 after an end state of k, or 0 first) */
        segment *g = &sg[nk];
        int known_bad = 0;
        for (size_t t = 0; t < g->ntried; t++)
            known_bad |= dominates(&g->tried[t], &start);
        if (!known_bad) {
            if (g->se.ents == NULL &&
                search_init(&g->se, ops + seg_at[nk], seg_at[nk + 1] - seg_at[nk], max_configs,
                            pl.op, pl.n) != 0) {
                res->verdict = LC_UNDECIDED;
                break;
            }
            if (g->ntried == g->cap) {
                size_t cap = g->cap ? g->cap * 2 : 2;
                mstate *t = realloc(g->tried, cap * sizeof *t);
                if (t == NULL) {
                    res->verdict = LC_UNDECIDED;
                    break;
                }
                g->tried = t;
                g->cap = cap;
            }
            g->tried[g->ntried++] = start;
            search_start(&g->se, start);
            k = nk;
        }
        /* on in segment k, for an end state; back to earlier segments while there is none */
        int r;
        for (;;) {
            search *se = &sg[k].se;
            size_t before = se->used;
            r = search_next(se, &start);
            spent += se->used - before;
            if (r < 0 || spent > LC_TOTAL_MAX_CONFIGS) {
                r = -1;
                break;
            }
            if (r > 0)
                break;
            if (k > worst || worst == 0)
                worst = k;
            if (k == low) /* its start was forced: no order exists */
                break;
            k--;
        }
        if (r < 0) {
            res->verdict = LC_UNDECIDED;
            break;
        }
        if (r == 0) {
            res->verdict = LC_VIOLATION;
            break;
        }
        if (k + 1 == nseg)
            break; /* an order for the whole history */
        /* a segment whose start was forced and that can end in one state only forces the next
         * one's start: the search never comes back to it */
        if (k == low && close_segment(&sg[k].se, &start)) {
            closed_configs += sg[k].se.used;
            search_free(&sg[k].se);
            low = k + 1;
        }
    }
    if (res->verdict == LC_VIOLATION) {
        segment *g = &sg[worst];
        minimize(ops + seg_at[worst], seg_at[worst + 1] - seg_at[worst], &pl, g->tried, g->ntried,
                 max_configs, res);
    }
done:
    res->configs = 0;
    if (sg != NULL) {
        for (size_t t = 0; t < nseg; t++) {
            res->configs += sg[t].se.used;
            search_free(&sg[t].se);
            free(sg[t].tried);
        }
        res->configs += closed_configs;
    }
    free(sg);
    free(seg_at);
    free(pool_ops);
    return res->verdict;
}

void lc_result_free(lc_result *res)
{
    free(res->bad_ids);
    res->bad_ids = NULL;
    res->bad_n = 0;
}
