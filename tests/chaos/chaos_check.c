/* chaos_check.c: checks what the chaos suite's clients recorded (chaos_client.c describes the
 * lines) against squall's promises, and prints a report.
 *
 *   chaos_check [--persistent /p] [--report FILE] [--recover-s 10] FILE...
 *
 * The files are read as one: the clients' history, the dump after the restart from disk, and
 * the nemesis's "fault NAME START_NS HEAL_NS" lines. Checks:
 *   linearizable: puts, conditional puts, removes and stable gets, per key (lincheck.c); for a
 *      persistent key the log read after the run says which unknown writes ran (and at which
 *      version): an unknown write not in the log did not run;
 *   plain gets: a value some write put that was called before the get returned, at that
 *      write's version, and per worker, member and key never older than the last one read;
 *   durability: every acknowledged persistent write is in the log with its version; the log
 *      holds only values some write put, each once, in version order, timestamps never going
 *      backwards along the versions (one shard per pool);
 *   watches: each watcher saw versions in increasing order, each once, each as the log has it,
 *      and every version the log holds up to the last version the watcher reached;
 *   availability (reported; a failure only when the group did not serve within --recover-s of
 *      a heal): per fault, how long no write or stable get succeeded.
 * Exit status 0 when nothing was found, 1 with anomalies (or undecided keys, or no operations),
 * 2 on bad input. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lincheck.h"

#define MAX_KEYS 256
#define MAX_WATCHERS 64

typedef enum { K_PUT, K_CPUT, K_PABS, K_RM, K_SGET, K_GET } op_kind;
typedef enum { O_OK, O_CONFLICT, O_NOTFOUND, O_UNKNOWN, O_FAIL } op_outcome;

typedef struct op {
    int thread;
    unsigned member;
    op_kind kind;
    int key;
    uint64_t value, expect, call, ret;
    op_outcome outcome;
    uint64_t rvalue, rversion, rts;
} op;

typedef struct logent {
    int key;
    uint64_t version, value, ts;
    int deleted;
} logent;

typedef struct event {
    int watcher, key;
    uint64_t version, value, ts, time;
    int deleted;
} event;

typedef struct fault {
    char name[96];
    uint64_t start, heal;
} fault;

#define VEC(T)                                                                                     \
    struct {                                                                                       \
        T *v;                                                                                      \
        size_t n, cap;                                                                             \
    }
#define PUSH(vec, x)                                                                               \
    do {                                                                                           \
        if ((vec).n == (vec).cap) {                                                                \
            (vec).cap = (vec).cap ? (vec).cap * 2 : 1024;                                          \
            (vec).v = realloc((vec).v, (vec).cap * sizeof *(vec).v);                               \
            if ((vec).v == NULL) {                                                                 \
                fprintf(stderr, "chaos_check: out of memory\n");                                   \
                exit(2);                                                                           \
            }                                                                                      \
        }                                                                                          \
        (vec).v[(vec).n++] = (x);                                                                  \
    } while (0)

static VEC(op) g_ops;
static VEC(logent) g_log;
static VEC(event) g_ev;
static VEC(fault) g_faults;
static VEC(fault) g_resets; /* times a volatile shard started empty (all its members gone) */
static char *g_keys[MAX_KEYS];
static int g_nkeys;
static struct {
    uint64_t last;
    int reached, present;
} g_wend[MAX_WATCHERS];
static int g_final_seen; /* a dump was read */
static const char *g_ppool = "/p";
static FILE *g_rep;
static int g_anomalies, g_undecided;
static double g_recover_s = 10;

static void report(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(g_rep, fmt, ap);
    va_end(ap);
}

static void anomaly(const char *fmt, ...)
{
    va_list ap;
    g_anomalies++;
    if (g_anomalies > 200)
        return;
    fputs("ANOMALY ", g_rep);
    va_start(ap, fmt);
    vfprintf(g_rep, fmt, ap);
    va_end(ap);
}

static int key_index(const char *k)
{
    for (int i = 0; i < g_nkeys; i++)
        if (strcmp(g_keys[i], k) == 0)
            return i;
    if (g_nkeys == MAX_KEYS) {
        fprintf(stderr, "chaos_check: more than %d keys\n", MAX_KEYS);
        exit(2);
    }
    g_keys[g_nkeys] = strdup(k);
    return g_nkeys++;
}

static int is_persistent(int key)
{
    size_t n = strlen(g_ppool);
    return strncmp(g_keys[key], g_ppool, n) == 0 && g_keys[key][n] == '/';
}

static const char *kind_names[] = {"put", "cput", "pabs", "rm", "sget", "get"};
static const char *outcome_names[] = {"ok", "conflict", "notfound", "unknown", "fail"};

static int parse_name(const char *s, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

static void read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        perror(path);
        exit(2);
    }
    char line[1024], kind[16], key[256], outcome[16], name[96];
    size_t lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (strncmp(line, "op ", 3) == 0) {
            op o = {0};
            if (sscanf(line,
                       "op %d %u %15s %255s %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64
                       " %15s %" SCNu64 " %" SCNu64 " %" SCNu64,
                       &o.thread, &o.member, kind, key, &o.value, &o.expect, &o.call, &o.ret,
                       outcome, &o.rvalue, &o.rversion, &o.rts) != 12)
                goto bad;
            int k = parse_name(kind, kind_names, 6), oc = parse_name(outcome, outcome_names, 5);
            if (k < 0 || oc < 0)
                goto bad;
            o.kind = (op_kind)k;
            o.outcome = (op_outcome)oc;
            o.key = key_index(key);
            PUSH(g_ops, o);
        } else if (strncmp(line, "ev ", 3) == 0) {
            event e = {0};
            if (sscanf(line, "ev %d %255s %" SCNu64 " %" SCNu64 " %d %" SCNu64 " %" SCNu64,
                       &e.watcher, key, &e.version, &e.value, &e.deleted, &e.ts, &e.time) != 7 ||
                e.watcher < 0 || e.watcher >= MAX_WATCHERS)
                goto bad;
            e.key = key_index(key);
            PUSH(g_ev, e);
        } else if (strncmp(line, "wend ", 5) == 0) {
            int w, reached;
            uint64_t last;
            if (sscanf(line, "wend %d %" SCNu64 " %d", &w, &last, &reached) != 3 || w < 0 ||
                w >= MAX_WATCHERS)
                goto bad;
            g_wend[w].last = last;
            g_wend[w].reached = reached;
            g_wend[w].present = 1;
        } else if (strncmp(line, "log ", 4) == 0) {
            logent l = {0};
            if (sscanf(line, "log %255s %" SCNu64 " %" SCNu64 " %d %" SCNu64, key, &l.version,
                       &l.value, &l.deleted, &l.ts) != 5)
                goto bad;
            l.key = key_index(key);
            PUSH(g_log, l);
            g_final_seen = 1;
        } else if (strncmp(line, "final ", 6) == 0) {
            g_final_seen = 1;
        } else if (strncmp(line, "reset ", 6) == 0 || strncmp(line, "fault ", 6) == 0) {
            /* "fault NAME START HEAL" from the nemesis, "reset NAME T T" from the supervisor */
            fault ft = {0};
            if (sscanf(line + 6, "%95s %" SCNu64 " %" SCNu64, name, &ft.start, &ft.heal) != 3)
                goto bad;
            snprintf(ft.name, sizeof ft.name, "%s", name);
            if (line[0] == 'r')
                PUSH(g_resets, ft);
            else
                PUSH(g_faults, ft);
        } else if (line[0] != '#' && line[0] != '\n') {
            goto bad;
        }
        continue;
    bad:
        fprintf(stderr, "chaos_check: %s:%zu: cannot read: %s", path, lineno, line);
        exit(2);
    }
    fclose(f);
}

static void print_op(const char *indent, const op *o)
{
    report("%s%s %s worker %d via member %u value %" PRIx64 " expect %" PRIu64
           " call %.6f ret %.6f -> %s value %" PRIx64 " version %" PRIu64 "\n",
           indent, kind_names[o->kind], g_keys[o->key], o->thread, o->member, o->value, o->expect,
           o->call / 1e9, o->outcome == O_UNKNOWN ? -1.0 : o->ret / 1e9, outcome_names[o->outcome],
           o->rvalue, o->rversion);
}

/* ---- linearizability, per key ---- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_log(const void *a, const void *b)
{
    const logent *x = a, *y = b;
    if (x->key != y->key)
        return x->key - y->key;
    return x->version < y->version ? -1 : x->version > y->version;
}

/* Checks key's operations called in [from, to) (the rest of the history for to = UINT64_MAX).
 * A write still running at `to` may have run or not; one called before `from` and still
 * running then may run after it. any_start: the state at `from` is not known. */
static void check_linearizable(int key, uint64_t from, uint64_t to, int any_start)
{
    int persistent = is_persistent(key);
    size_t n = 0;
    for (size_t i = 0; i < g_ops.n; i++)
        n += g_ops.v[i].key == key;
    lc_op *ops = calloc(n + 1, sizeof *ops);
    lc_seen *seen = calloc(n + g_log.n + 1, sizeof *seen);
    size_t m = 0, ns = 0;
    /* the log's versions of this key: values and tombstones */
    size_t log_from = g_log.n, log_to = g_log.n;
    for (size_t i = 0; i < g_log.n; i++)
        if (g_log.v[i].key == key) {
            if (log_from == g_log.n)
                log_from = i;
            log_to = i + 1;
        }
    /* tombstones in the log that no acknowledged remove claims go to unknown removes, in call
     * order (removes are alike: which one made a tombstone only bounds when it ran) */
    size_t nt = 0, nacked = 0;
    uint64_t *tombs = calloc(log_to - log_from + 1, sizeof *tombs);
    uint64_t *acked_rm = calloc(n + 1, sizeof *acked_rm); /* versions of acknowledged removes */
    for (size_t i = 0; persistent && i < g_ops.n; i++)
        if (g_ops.v[i].key == key && g_ops.v[i].kind == K_RM && g_ops.v[i].outcome == O_OK)
            acked_rm[nacked++] = g_ops.v[i].rversion;
    qsort(acked_rm, nacked, sizeof *acked_rm, cmp_u64);
    for (size_t i = log_from; persistent && i < log_to; i++) {
        const logent *l = &g_log.v[i];
        if (!l->deleted)
            seen[ns++] = (lc_seen){l->value, l->version, LC_NEVER};
        else if (!bsearch(&l->version, acked_rm, nacked, sizeof *acked_rm, cmp_u64))
            tombs[nt++] = l->version;
    }
    free(acked_rm);
    size_t ti = 0;
    for (size_t i = 0; i < g_ops.n; i++) {
        const op *o = &g_ops.v[i];
        if (o->key != key || o->call >= to)
            continue;
        int is_write = o->kind != K_GET && o->kind != K_SGET;
        int cut = 0; /* across a bound: only a write, and as unknown */
        if (o->call < from) {
            if (!is_write || o->ret < from)
                continue;
            cut = 1;
        } else if (to != UINT64_MAX && o->ret >= to) {
            if (!is_write)
                continue;
            cut = 1;
        }
        if (o->kind == K_GET) {
            if (o->outcome == O_OK && o->rvalue != 0)
                seen[ns++] = (lc_seen){o->rvalue, o->rversion, o->ret};
            continue;
        }
        if (o->outcome == O_FAIL)
            continue;
        static const lc_kind lc_kinds[] = {[K_PUT] = LC_PUT,
                                           [K_CPUT] = LC_PUT_IF,
                                           [K_PABS] = LC_PUT_ABSENT,
                                           [K_RM] = LC_REMOVE,
                                           [K_SGET] = LC_GET};
        lc_op l = {.call_ns = o->call < from ? from : o->call, .ret_ns = o->ret, .id = (uint32_t)i};
        l.kind = lc_kinds[o->kind];
        l.value = l.kind == LC_GET ? o->rvalue : o->value;
        l.expect = o->expect;
        l.version = o->rversion;
        switch (o->outcome) {
        case O_OK:
            l.outcome = LC_OK;
            break;
        case O_CONFLICT:
            l.outcome = LC_CONFLICT;
            break;
        case O_NOTFOUND:
            l.outcome = LC_NOTFOUND;
            l.version = LC_NOVER;
            break;
        default:
            l.outcome = LC_UNKNOWN;
            l.version = LC_NOVER;
            l.ret_ns = LC_NEVER;
            break;
        }
        if (l.kind == LC_GET && l.outcome == LC_OK && l.value == 0)
            l.outcome = LC_NOTFOUND;
        if (cut) {
            l.outcome = LC_UNKNOWN;
            l.version = LC_NOVER;
            l.ret_ns = LC_NEVER;
        }
        if (persistent && l.outcome == LC_UNKNOWN && g_final_seen) {
            if (l.kind == LC_REMOVE) {
                if (ti < nt) {
                    l.outcome = LC_OK;
                    l.version = tombs[ti++];
                } else {
                    continue; /* not in the log: it did not run */
                }
            } else {
                int in_log = 0;
                for (size_t j = log_from; j < log_to && !in_log; j++)
                    in_log = !g_log.v[j].deleted && g_log.v[j].value == l.value;
                if (!in_log)
                    continue; /* not in the log: it did not run */
            }
        }
        ops[m++] = l;
    }
    free(tombs);
    m = lc_prepare(ops, m, seen, ns);
    lc_result res;
    lc_verdict v = lc_check(ops, m, 0, any_start, &res);
    if (from != 0 || to != UINT64_MAX)
        report("[%.3f s .. %s%s] ", from / 1e9, to == UINT64_MAX ? "end" : "a majority killed",
               any_start ? ", from any state (a majority was killed before)" : "");
    report("key %s: %zu operations checked, %zu segments (largest %zu), %zu configurations: %s\n",
           g_keys[key], m, res.segments, res.max_segment, res.configs,
           v == LC_LINEARIZABLE ? "linearizable"
           : v == LC_VIOLATION  ? "NOT linearizable"
                                : "UNDECIDED (search limit)");
    if (v == LC_VIOLATION) {
        anomaly("not linearizable: key %s; a smallest history that shows it (%zu operations), "
                "from the state(s):",
                g_keys[key], res.bad_n);
        for (size_t i = 0; i < res.bad_nfrom; i++)
            report(" value %" PRIx64 " version %" PRIu64, res.bad_from[i].value,
                   res.bad_from[i].version);
        report("\n");
        for (size_t i = 0; i < res.bad_n; i++)
            print_op("    ", &g_ops.v[res.bad_ids[i]]);
    }
    if (v == LC_UNDECIDED)
        g_undecided++;
    lc_result_free(&res);
    free(ops);
    free(seen);
}

/* ---- plain gets ---- */

typedef struct vinfo {
    uint64_t value, version, call;
    int key;
} vinfo;

static int cmp_vinfo(const void *a, const void *b)
{
    const vinfo *x = a, *y = b;
    return x->value < y->value ? -1 : x->value > y->value;
}

static vinfo *g_writes; /* every write's value: its key, first call, version when known */
static size_t g_nwrites;

static vinfo *find_write(uint64_t value)
{
    vinfo probe = {.value = value};
    return bsearch(&probe, g_writes, g_nwrites, sizeof *g_writes, cmp_vinfo);
}

static void index_writes(void)
{
    g_writes = calloc(g_ops.n + 1, sizeof *g_writes);
    for (size_t i = 0; i < g_ops.n; i++) {
        const op *o = &g_ops.v[i];
        if (o->kind == K_PUT || o->kind == K_CPUT || o->kind == K_PABS)
            g_writes[g_nwrites++] =
                (vinfo){o->value, o->outcome == O_OK ? o->rversion : 0, o->call, o->key};
    }
    qsort(g_writes, g_nwrites, sizeof *g_writes, cmp_vinfo);
    for (size_t i = 1; i < g_nwrites; i++)
        if (g_writes[i].value == g_writes[i - 1].value) {
            fprintf(stderr, "chaos_check: value %" PRIx64 " written twice\n", g_writes[i].value);
            exit(2);
        }
    /* versions from the log, for writes whose answer was lost */
    for (size_t i = 0; i < g_log.n; i++) {
        vinfo *w = g_log.v[i].deleted ? NULL : find_write(g_log.v[i].value);
        if (w != NULL && w->version == 0)
            w->version = g_log.v[i].version;
    }
}

static void check_plain_gets(void)
{
    size_t checked = 0;
    /* last version read per (worker, member, key) */
    typedef struct last {
        int thread, key;
        unsigned member;
        uint64_t version;
    } last;
    VEC(last) lasts = {0};
    for (size_t i = 0; i < g_ops.n; i++) {
        const op *o = &g_ops.v[i];
        if (o->kind != K_GET || o->outcome != O_OK)
            continue;
        checked++;
        if (o->rvalue != 0) {
            vinfo *w = find_write(o->rvalue);
            if (w == NULL || w->key != o->key) {
                anomaly("get returned a value never written to that key\n");
                print_op("    ", o);
            } else if (w->call > o->ret) {
                anomaly("get returned a value before it was written\n");
                print_op("    ", o);
            } else if (w->version != 0 && w->version != o->rversion) {
                anomaly("get returned value %" PRIx64 " at version %" PRIu64
                        ", its write made version %" PRIu64 "\n",
                        o->rvalue, o->rversion, w->version);
                print_op("    ", o);
            }
        }
        if (o->rvalue == 0)
            continue;
        size_t j;
        for (j = 0; j < lasts.n; j++)
            if (lasts.v[j].thread == o->thread && lasts.v[j].key == o->key &&
                lasts.v[j].member == o->member)
                break;
        if (j == lasts.n) {
            last l = {o->thread, o->key, o->member, o->rversion};
            PUSH(lasts, l);
        } else {
            if (o->rversion < lasts.v[j].version) {
                anomaly("get went backwards on one connection: version %" PRIu64 " after %" PRIu64
                        "\n",
                        o->rversion, lasts.v[j].version);
                print_op("    ", o);
            }
            if (o->rversion > lasts.v[j].version)
                lasts.v[j].version = o->rversion;
        }
    }
    free(lasts.v);
    report("plain gets: %zu answered, checked against the writes and per connection\n", checked);
}

/* ---- durability ---- */

static void check_durability(void)
{
    if (!g_final_seen) {
        anomaly("no dump of the members' logs after the restart: durability not checked\n");
        return;
    }
    qsort(g_log.v, g_log.n, sizeof *g_log.v, cmp_log);
    size_t acked = 0, missing = 0;
    for (size_t i = 0; i < g_ops.n; i++) {
        const op *o = &g_ops.v[i];
        if (!is_persistent(o->key) || o->outcome != O_OK ||
            (o->kind != K_PUT && o->kind != K_CPUT && o->kind != K_PABS && o->kind != K_RM))
            continue;
        acked++;
        logent probe = {.key = o->key, .version = o->rversion};
        logent *l = bsearch(&probe, g_log.v, g_log.n, sizeof *g_log.v, cmp_log);
        int good =
            l != NULL && (o->kind == K_RM ? l->deleted : !l->deleted && l->value == o->value);
        if (!good) {
            missing++;
            anomaly("acknowledged write lost after the restart (the log has %s at that version)\n",
                    l == NULL    ? "nothing"
                    : l->deleted ? "a removal"
                                 : "another value");
            print_op("    ", o);
        }
    }
    /* the log itself: values written, once, timestamps in version order */
    vinfo *vals = calloc(g_log.n + 1, sizeof *vals);
    size_t nv = 0;
    for (size_t i = 0; i < g_log.n; i++) {
        const logent *l = &g_log.v[i];
        if (!l->deleted) {
            vinfo *w = find_write(l->value);
            if (w == NULL || w->key != l->key)
                anomaly("the log of %s holds a value no client wrote there (%" PRIx64
                        " at version %" PRIu64 ")\n",
                        g_keys[l->key], l->value, l->version);
            vals[nv++] = (vinfo){.value = l->value, .version = l->version};
        }
        if (i > 0 && g_log.v[i - 1].key == l->key && g_log.v[i - 1].version == l->version)
            anomaly("the log of %s holds version %" PRIu64 " twice\n", g_keys[l->key], l->version);
    }
    qsort(vals, nv, sizeof *vals, cmp_vinfo);
    for (size_t i = 1; i < nv; i++)
        if (vals[i].value == vals[i - 1].value)
            anomaly("a write applied twice: value %" PRIx64 " at versions %" PRIu64 " and %" PRIu64
                    "\n",
                    vals[i].value, vals[i - 1].version, vals[i].version);
    free(vals);
    /* one shard per pool: along the versions of all its keys, time never goes back */
    logent *by_version = malloc((g_log.n + 1) * sizeof *by_version);
    memcpy(by_version, g_log.v, g_log.n * sizeof *by_version);
    for (size_t i = 0; i < g_log.n; i++)
        by_version[i].key = 0; /* one order for the pool */
    qsort(by_version, g_log.n, sizeof *by_version, cmp_log);
    size_t backwards = 0;
    for (size_t i = 1; i < g_log.n; i++)
        if (by_version[i].ts < by_version[i - 1].ts)
            backwards++;
    if (backwards)
        anomaly("timestamps went backwards along the versions %zu times in the persistent pool\n",
                backwards);
    free(by_version);
    report("durability: %zu acknowledged persistent writes, %zu missing after the restart; "
           "the log holds %zu versions\n",
           acked, missing, g_log.n);
}

/* ---- watches ---- */

static void check_watches(void)
{
    int watchers = 0;
    for (int w = 0; w < MAX_WATCHERS; w++) {
        if (!g_wend[w].present)
            continue;
        watchers++;
        size_t count = 0, dups = 0, order = 0, wrong = 0, gaps = 0;
        uint64_t prev = 0;
        /* versions this watcher saw, to look the log's up in */
        VEC(uint64_t) vs = {0};
        for (size_t i = 0; i < g_ev.n; i++) {
            const event *e = &g_ev.v[i];
            if (e->watcher != w)
                continue;
            count++;
            if (e->version == prev)
                dups++;
            else if (e->version < prev)
                order++;
            prev = e->version > prev ? e->version : prev;
            PUSH(vs, e->version);
            logent probe = {.key = e->key, .version = e->version};
            logent *l = bsearch(&probe, g_log.v, g_log.n, sizeof *g_log.v, cmp_log);
            if (l == NULL || l->deleted != e->deleted || (!e->deleted && l->value != e->value))
                wrong++;
        }
        if (dups)
            anomaly("watcher %d got %zu versions twice\n", w, dups);
        if (order)
            anomaly("watcher %d got %zu versions out of order\n", w, order);
        if (wrong)
            anomaly("watcher %d got %zu updates that the log does not hold as such\n", w, wrong);
        /* every version of the log up to where the watcher got */
        uint64_t *sorted = vs.v;
        size_t nsorted = vs.n;
        qsort(sorted, nsorted, sizeof *sorted, cmp_u64);
        for (size_t i = 0; i < g_log.n; i++) {
            if (g_log.v[i].version > g_wend[w].last)
                continue;
            int found = 0;
            size_t lo = 0, hi = nsorted;
            while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                if (sorted[mid] < g_log.v[i].version)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            found = lo < nsorted && sorted[lo] == g_log.v[i].version;
            if (!found) {
                if (gaps < 5)
                    anomaly("watcher %d missed %s version %" PRIu64 "\n", w, g_keys[g_log.v[i].key],
                            g_log.v[i].version);
                gaps++;
            }
        }
        if (gaps >= 5)
            anomaly("watcher %d missed %zu versions in all\n", w, gaps);
        if (!g_wend[w].reached)
            anomaly("watcher %d never got to the last acknowledged version (it stopped at %" PRIu64
                    ")\n",
                    w, g_wend[w].last);
        report("watcher %d: %zu updates, up to version %" PRIu64 "\n", w, count, g_wend[w].last);
        free(vs.v);
    }
    if (watchers == 0)
        report("watches: no watcher recorded\n");
}

/* ---- availability ---- */

static void check_availability(void)
{
    /* the times at which a write or a stable get succeeded */
    uint64_t *t = malloc((g_ops.n + 1) * sizeof *t);
    size_t n = 0;
    for (size_t i = 0; i < g_ops.n; i++) {
        const op *o = &g_ops.v[i];
        if (o->kind != K_GET &&
            (o->outcome == O_OK || o->outcome == O_CONFLICT || o->outcome == O_NOTFOUND))
            t[n++] = o->ret;
    }
    qsort(t, n, sizeof *t, cmp_u64);
    size_t late = 0;
    double worst = 0;
    for (size_t f = 0; f < g_faults.n; f++) {
        const fault *ft = &g_faults.v[f];
        /* the longest stretch with no success within the fault, and the wait after its heal */
        uint64_t prev = ft->start, gap = 0;
        size_t i = 0;
        while (i < n && t[i] < ft->start)
            i++;
        for (; i < n && t[i] <= ft->heal; i++) {
            if (t[i] - prev > gap)
                gap = t[i] - prev;
            prev = t[i];
        }
        double recover = i < n ? (double)(t[i] - ft->heal) / 1e9 : -1;
        if (ft->heal - prev > gap)
            gap = ft->heal - prev;
        /* served already during the fault's last second: no wait */
        if (prev + 1000000000ull >= ft->heal)
            recover = 0;
        /* the next fault starts: how long it had */
        uint64_t next = f + 1 < g_faults.n ? g_faults.v[f + 1].start : UINT64_MAX;
        int cut = recover < 0 || (recover > 0 && ft->heal + (uint64_t)(recover * 1e9) > next);
        report("fault %-28s %8.3f .. %8.3f: longest stretch without an answer %.2f s; served "
               "again %s%.2f s after the heal\n",
               ft->name, ft->start / 1e9, ft->heal / 1e9, gap / 1e9, cut ? "(cut short) " : "",
               recover < 0 ? 0.0 : recover);
        if (!cut && recover > worst)
            worst = recover;
        if (!cut && recover > g_recover_s)
            late++;
        if (recover < 0 && next == UINT64_MAX)
            late++; /* the last heal was never followed by an answer */
    }
    if (late)
        anomaly("%zu heals were not followed by an answer within %.0f s\n", late, g_recover_s);
    report("availability: %zu faults; the longest wait after a heal %.2f s\n", g_faults.n, worst);
    report("the volatile pool started empty %zu times (members' logs; each member logs it)\n",
           g_resets.n);
    free(t);
}

int main(int argc, char **argv)
{
    const char *rep = NULL;
    int nfiles = 0;
    const char *files[64];
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--persistent") == 0 && i + 1 < argc)
            g_ppool = argv[++i];
        else if (strcmp(argv[i], "--report") == 0 && i + 1 < argc)
            rep = argv[++i];
        else if (strcmp(argv[i], "--recover-s") == 0 && i + 1 < argc)
            g_recover_s = atof(argv[++i]);
        else if (argv[i][0] == '-' || nfiles == 64) {
            fprintf(stderr, "usage: chaos_check [--persistent /p] [--report FILE] "
                            "[--recover-s S] FILE...\n");
            return 2;
        } else
            files[nfiles++] = argv[i];
    }
    g_rep = stdout;
    if (rep != NULL && (g_rep = fopen(rep, "w")) == NULL) {
        perror(rep);
        return 2;
    }
    for (int i = 0; i < nfiles; i++)
        read_file(files[i]);
    qsort(g_log.v, g_log.n, sizeof *g_log.v, cmp_log);
    index_writes();

    size_t by[6][5] = {{0}};
    for (size_t i = 0; i < g_ops.n; i++)
        by[g_ops.v[i].kind][g_ops.v[i].outcome]++;
    report("operations: %zu\n", g_ops.n);
    for (int k = 0; k < 6; k++) {
        report("  %-5s", kind_names[k]);
        for (int o = 0; o < 5; o++)
            report(" %s=%zu", outcome_names[o], by[k][o]);
        report("\n");
    }
    size_t ok = 0;
    for (int k = 0; k < 6; k++)
        ok += by[k][O_OK];
    if (ok == 0)
        anomaly("no operation succeeded: nothing was tested\n");

    for (int k = 0; k < g_nkeys; k++) {
        int has_ops = 0;
        for (size_t i = 0; i < g_ops.n && !has_ops; i++)
            has_ops = g_ops.v[i].key == k;
        if (!has_ops)
            continue;
        if (is_persistent(k)) {
            check_linearizable(k, 0, UINT64_MAX, 0);
            continue;
        }
        /* a volatile pool keeps its keys only while some member of its shard does: once a
         * member logged that the shard starts empty (every earlier member gone), its history
         * starts again from a state nobody knows (each member logs it: one cut for them all) */
        uint64_t from = 0;
        for (size_t f = 0; f < g_resets.n; f++) {
            const fault *ft = &g_resets.v[f];
            if (from != 0 && ft->start < from + 2000000000ull)
                continue; /* the same start, logged by another member */
            check_linearizable(k, from, ft->start, from != 0);
            from = ft->start;
        }
        check_linearizable(k, from, UINT64_MAX, from != 0);
    }
    check_plain_gets();
    check_durability();
    check_watches();
    check_availability();
    if (g_undecided)
        report("undecided keys: %d (the search gave up: neither proven nor refuted)\n",
               g_undecided);
    report("anomalies: %d\n", g_anomalies);
    if (g_rep != stdout)
        fclose(g_rep);
    return g_anomalies || g_undecided ? 1 : 0;
}
