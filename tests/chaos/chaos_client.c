/* chaos_client.c: the clients of the chaos suite: concurrent workers doing puts, conditional
 * puts, removes, stable and plain gets on a few hot keys of a persistent and a volatile pool,
 * and watchers following the persistent pool, all recording what they did (a history, one line
 * per operation or event, CLOCK_MONOTONIC nanoseconds) for chaos_check.
 *
 *   chaos_client run --members LIST --out FILE [--seconds S] [--workers N] [--watchers W]
 *                    [--keys K] [--seed X] [--timeout-ms T] [--persistent /p] [--volatile /v]
 *   chaos_client dump --members LIST --out FILE [--keys K] [--persistent /p] [--volatile /v]
 *       after the run (members restarted from their disks): every version of each persistent
 *       key ("log" lines, from its history) and each volatile key's latest value
 *   chaos_client ready --members LIST [--seconds S]
 *       waits until a stable get through every member listed answers (exit 0), or S seconds
 *
 * History lines (fields separated by one space):
 *   op THREAD MEMBER KIND KEY VALUE EXPECT CALL_NS RET_NS OUTCOME RVALUE RVERSION RTIMESTAMP
 *      KIND put | cput | pabs | rm | sget | get; VALUE the value written (0 for rm and reads);
 *      EXPECT cput's expected version; OUTCOME ok | conflict | notfound | unknown | fail
 *      (unknown: a write with no answer, that may have been applied; fail: a read with none);
 *      RVALUE a read's value (0: absent); RVERSION the answer's version (0 when none)
 *   ev WATCHER KEY VERSION VALUE DELETED TIMESTAMP TIME_NS
 *   wend WATCHER LAST_VERSION REACHED (REACHED 1: it got to every acknowledged version)
 *   log KEY VERSION VALUE DELETED TIMESTAMP          (dump, persistent keys)
 *   final KEY VERSION VALUE                          (dump, volatile keys; VALUE 0 absent)
 * Values are unique: "v" and 16 hex digits, (thread + 1) << 40 | sequence, then padding. */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "squall/client.h"

#define MAX_THREADS 64
#define MAX_KEYS 64
#define VALUE_BYTES 48

static const char *g_members;
static const char *g_out;
static const char *g_ppool = "/p";
static const char *g_vpool = "/v";
static double g_seconds = 30;
static int g_workers = 6, g_watchers = 2, g_keys = 3, g_timeout_ms = 15000;
static uint64_t g_seed = 1;
static uint64_t g_deadline_ns;
static pthread_mutex_t g_out_lock = PTHREAD_MUTEX_INITIALIZER;
static FILE *g_file;
static atomic_ullong g_max_acked; /* the highest version of an acknowledged persistent write */
static atomic_long g_ops, g_ok;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void emit(const char *line)
{
    pthread_mutex_lock(&g_out_lock);
    fputs(line, g_file);
    pthread_mutex_unlock(&g_out_lock);
}

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* The value id in a value's bytes, or 0 when they are not one of ours. */
static uint64_t value_id(const void *v, size_t size)
{
    if (v == NULL || size < 17 || ((const char *)v)[0] != 'v')
        return 0;
    char hex[17];
    memcpy(hex, (const char *)v + 1, 16);
    hex[16] = 0;
    char *end;
    uint64_t id = strtoull(hex, &end, 16);
    return *end == 0 ? id : 0;
}

static size_t make_value(char *buf, uint64_t id)
{
    int n = snprintf(buf, VALUE_BYTES + 1, "v%016" PRIx64, id);
    memset(buf + n, '.', VALUE_BYTES - (size_t)n);
    return VALUE_BYTES;
}

static void key_name(char *buf, size_t size, const char *pool, int k)
{
    snprintf(buf, size, "%s/k%d", pool, k);
}

/* What a worker knows of a key: the version it last saw, to condition a put on. */
typedef struct seen {
    uint64_t version;
    int present;
} seen;

typedef struct worker {
    int id;
    pthread_t th;
} worker;

static const char *outcome_of(int rc, int is_read)
{
    if (rc == 0)
        return "ok";
    if (rc == SQ_ECONFLICT)
        return "conflict";
    if (rc == SQ_ENOTFOUND)
        return "notfound";
    return is_read ? "fail" : "unknown";
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    uint64_t rs = g_seed * 0x9e3779b97f4a7c15ull + (uint64_t)w->id * 7919 + 1;
    char err[256];
    sq_client *c = NULL;
    /* each worker starts at another member: rotate the list */
    char members[4096];
    {
        char tmp[4096], *parts[64];
        int np = 0;
        snprintf(tmp, sizeof tmp, "%s", g_members);
        for (char *t = strtok(tmp, ","); t && np < 64; t = strtok(NULL, ","))
            parts[np++] = t;
        members[0] = 0;
        for (int i = 0; i < np; i++) {
            if (i)
                strncat(members, ",", sizeof members - strlen(members) - 1);
            strncat(members, parts[(i + w->id) % np], sizeof members - strlen(members) - 1);
        }
    }
    while (sq_client_open(&c, members, g_timeout_ms, err, sizeof err) != 0) {
        if (now_ns() > g_deadline_ns) {
            fprintf(stderr, "chaos_client: worker %d: %s\n", w->id, err);
            return NULL;
        }
        usleep(200000);
    }
    seen known[2][MAX_KEYS];
    memset(known, 0, sizeof known);
    uint64_t seq = 0;
    sq_kv_result r = {0};
    char line[512], key[128], value[VALUE_BYTES + 1];
    while (now_ns() < g_deadline_ns) {
        int pi = (int)(rnd(&rs) % 2); /* 0 persistent, 1 volatile */
        int k = (int)(rnd(&rs) % (uint64_t)g_keys);
        key_name(key, sizeof key, pi == 0 ? g_ppool : g_vpool, k);
        seen *kn = &known[pi][k];
        unsigned dice = (unsigned)(rnd(&rs) % 100);
        const char *kind;
        uint64_t vid = 0, expect = 0;
        sq_put_opts po = {0};
        sq_get_opts go = {0};
        int rc;
        uint32_t member = sq_client_member(c);
        uint64_t t0 = now_ns();
        if (dice < 22) {
            kind = "put";
        } else if (dice < 42) {
            if (kn->present && kn->version != 0) {
                kind = "cput";
                po.if_version = 1;
                po.version = expect = kn->version;
            } else {
                kind = "pabs";
                po.if_absent = 1;
            }
        } else if (dice < 46) {
            kind = "pabs";
            po.if_absent = 1;
        } else if (dice < 51) {
            kind = "rm";
        } else if (dice < 75) {
            kind = "sget";
            go.stable = 1;
        } else {
            kind = "get";
        }
        int is_read = kind[0] == 's' || strcmp(kind, "get") == 0;
        if (strcmp(kind, "rm") == 0) {
            rc = sq_client_remove(c, key, NULL, &r);
        } else if (is_read) {
            rc = sq_client_get(c, key, &go, &r);
        } else {
            vid = ((uint64_t)(w->id + 1) << 40) | ++seq;
            size_t n = make_value(value, vid);
            rc = sq_client_put(c, key, value, n, &po, &r);
        }
        uint64_t t1 = now_ns();
        uint64_t rvalue = 0, rversion = 0, rts = 0;
        if (rc == 0 || rc == SQ_ECONFLICT) {
            rversion = r.version;
            rts = r.timestamp;
        }
        if (rc == 0 && is_read) {
            rvalue = value_id(r.value, r.size);
            if (rvalue == 0 && r.size > 0) {
                /* not a value of ours: record it as one no write has, for the checker */
                rvalue = UINT64_MAX - 2;
            }
        }
        atomic_fetch_add(&g_ops, 1);
        if (rc == 0)
            atomic_fetch_add(&g_ok, 1);
        snprintf(line, sizeof line,
                 "op %d %u %s %s %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %s %" PRIu64
                 " %" PRIu64 " %" PRIu64 "\n",
                 w->id, member == UINT32_MAX ? 999u : member, kind, key, vid, expect, t0, t1,
                 outcome_of(rc, is_read), rvalue, rversion, rts);
        emit(line);
        /* what the worker now knows of the key */
        if (rc == 0 && (is_read || strcmp(kind, "rm") != 0)) {
            kn->present = is_read ? rvalue != 0 : 1;
            kn->version = r.version;
        } else if (!(is_read && rc != 0 && rc != SQ_ENOTFOUND)) {
            /* removed, absent, refused or unanswered (a read with no answer tells nothing):
             * read it again before the next conditional put */
            kn->present = 0;
        }
        if (rc == 0 && !is_read && pi == 0) { /* the watchers must get this far */
            unsigned long long cur = atomic_load(&g_max_acked);
            while (r.version > cur && !atomic_compare_exchange_weak(&g_max_acked, &cur, r.version))
                ;
        }
        if (rc != 0 && rc != SQ_ECONFLICT && rc != SQ_ENOTFOUND)
            usleep(50000); /* no member answering: do not spin through errors */
    }
    sq_kv_result_free(&r);
    sq_client_close(c);
    return NULL;
}

typedef struct watcher {
    int id;
    sq_client *c;
    uint64_t watch_id;
    atomic_ullong last; /* the highest version delivered */
} watcher;

static void on_event(void *arg, const sq_kv_event *ev)
{
    watcher *w = arg;
    char line[512];
    snprintf(line, sizeof line, "ev %d %.*s %" PRIu64 " %" PRIu64 " %d %" PRIu64 " %" PRIu64 "\n",
             w->id, (int)ev->key_len, ev->key, ev->version, value_id(ev->value, ev->size),
             ev->deleted, ev->timestamp, now_ns());
    emit(line);
    if (ev->version > atomic_load(&w->last))
        atomic_store(&w->last, ev->version);
}

static int open_or_wait(sq_client **c, const char *members, uint64_t until_ns)
{
    char err[256];
    while (sq_client_open(c, members, g_timeout_ms, err, sizeof err) != 0) {
        if (now_ns() > until_ns) {
            fprintf(stderr, "chaos_client: %s\n", err);
            return -1;
        }
        usleep(200000);
    }
    return 0;
}

static int cmd_run(void)
{
    g_file = fopen(g_out, "w");
    if (g_file == NULL) {
        perror(g_out);
        return 1;
    }
    setvbuf(g_file, NULL, _IOFBF, 1 << 20);
    uint64_t start = now_ns();
    g_deadline_ns = start + (uint64_t)(g_seconds * 1e9);
    watcher ws[MAX_THREADS];
    char prefix[128];
    snprintf(prefix, sizeof prefix, "%s/", g_ppool);
    for (int i = 0; i < g_watchers; i++) {
        ws[i].id = i;
        atomic_init(&ws[i].last, 0);
        if (open_or_wait(&ws[i].c, g_members, g_deadline_ns) != 0)
            return 1;
        int rc;
        while ((rc = sq_client_watch(ws[i].c, prefix, 0, on_event, &ws[i], &ws[i].watch_id)) != 0) {
            if (now_ns() > g_deadline_ns) {
                fprintf(stderr, "chaos_client: watch: %s\n", sq_strerror(rc));
                return 1;
            }
            usleep(200000);
        }
    }
    worker wk[MAX_THREADS];
    for (int i = 0; i < g_workers; i++) {
        wk[i].id = i;
        pthread_create(&wk[i].th, NULL, worker_main, &wk[i]);
    }
    for (int i = 0; i < g_workers; i++)
        pthread_join(wk[i].th, NULL);
    /* the watchers catch up with every acknowledged version, or are cut off after 60 s */
    uint64_t target = atomic_load(&g_max_acked), until = now_ns() + 60000000000ull;
    for (int i = 0; i < g_watchers; i++) {
        while (atomic_load(&ws[i].last) < target && now_ns() < until)
            usleep(50000);
        sq_client_unwatch(ws[i].c, ws[i].watch_id);
        sq_client_close(ws[i].c);
        char line[128];
        uint64_t last = atomic_load(&ws[i].last);
        snprintf(line, sizeof line, "wend %d %" PRIu64 " %d\n", i, last, last >= target);
        emit(line);
    }
    fclose(g_file);
    printf("chaos_client: %ld operations, %ld ok, in %.1f s\n", atomic_load(&g_ops),
           atomic_load(&g_ok), (double)(now_ns() - start) / 1e9);
    return 0;
}

static int cmd_dump(void)
{
    FILE *f = fopen(g_out, "w");
    if (f == NULL) {
        perror(g_out);
        return 1;
    }
    sq_client *c = NULL;
    if (open_or_wait(&c, g_members, now_ns() + 60000000000ull) != 0)
        return 1;
    sq_kv_result r = {0};
    char key[128];
    int bad = 0;
    for (int k = 0; k < g_keys; k++) {
        key_name(key, sizeof key, g_ppool, k);
        int rc = sq_client_history(c, key, &r);
        if (rc == SQ_ENOTFOUND)
            continue;
        if (rc != 0) {
            fprintf(stderr, "chaos_client: history %s: %s %s\n", key, sq_err_name(rc), r.message);
            bad = 1;
            continue;
        }
        size_t pos = 0;
        sq_kv_item it;
        /* the items carry no values: read each version's (as many as there are: a 10-minute
         * run makes a few hundred thousand a key) */
        size_t nv = 0, cap = 0;
        uint64_t *versions = NULL, *stamps = NULL;
        int *deleted = NULL;
        while (sq_kv_next_item(&r, &pos, &it) == 1) {
            if (nv == cap) {
                cap = cap ? cap * 2 : 4096;
                versions = realloc(versions, cap * sizeof *versions);
                stamps = realloc(stamps, cap * sizeof *stamps);
                deleted = realloc(deleted, cap * sizeof *deleted);
                if (versions == NULL || stamps == NULL || deleted == NULL) {
                    fprintf(stderr, "chaos_client: out of memory\n");
                    return 1;
                }
            }
            versions[nv] = it.version;
            deleted[nv] = it.deleted;
            stamps[nv++] = it.timestamp;
        }
        if (nv != r.count) {
            fprintf(stderr, "chaos_client: history %s: %zu items of %u\n", key, nv, r.count);
            bad = 1;
        }
        for (size_t i = 0; i < nv; i++) {
            uint64_t vid = 0;
            if (!deleted[i]) {
                sq_get_opts go = {.at_version = 1, .version = versions[i]};
                rc = sq_client_get(c, key, &go, &r);
                if (rc != 0) {
                    fprintf(stderr, "chaos_client: get %s at %" PRIu64 ": %s\n", key, versions[i],
                            sq_err_name(rc));
                    bad = 1;
                    continue;
                }
                vid = value_id(r.value, r.size);
            }
            fprintf(f, "log %s %" PRIu64 " %" PRIu64 " %d %" PRIu64 "\n", key, versions[i], vid,
                    deleted[i], stamps[i]);
        }
        free(versions);
        free(stamps);
        free(deleted);
    }
    for (int k = 0; k < g_keys; k++) {
        key_name(key, sizeof key, g_vpool, k);
        sq_get_opts go = {.stable = 1};
        int rc = sq_client_get(c, key, &go, &r);
        if (rc == 0)
            fprintf(f, "final %s %" PRIu64 " %" PRIu64 "\n", key, r.version,
                    value_id(r.value, r.size));
        else if (rc == SQ_ENOTFOUND)
            fprintf(f, "final %s 0 0\n", key);
        else {
            fprintf(stderr, "chaos_client: get %s: %s\n", key, sq_err_name(rc));
            bad = 1;
        }
    }
    sq_kv_result_free(&r);
    sq_client_close(c);
    fclose(f);
    return bad;
}

/* Until a stable get through each member answers. */
static int cmd_ready(void)
{
    uint64_t until = now_ns() + (uint64_t)(g_seconds * 1e9);
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", g_members);
    char key[128];
    key_name(key, sizeof key, g_ppool, 0);
    for (char *m = strtok(tmp, ","); m; m = strtok(NULL, ",")) {
        for (;;) {
            sq_client *c = NULL;
            char err[256];
            int ok = 0;
            if (sq_client_open(&c, m, 2000, err, sizeof err) == 0) {
                sq_kv_result r = {0};
                sq_get_opts go = {.stable = 1};
                int rc = sq_client_get(c, key, &go, &r);
                ok = (rc == 0 || rc == SQ_ENOTFOUND || rc == SQ_ENOPOOL) &&
                     sq_client_member(c) != UINT32_MAX;
                sq_kv_result_free(&r);
                sq_client_close(c);
            }
            if (ok)
                break;
            if (now_ns() > until) {
                fprintf(stderr, "chaos_client: member %s does not answer\n", m);
                return 1;
            }
            usleep(200000);
        }
    }
    return 0;
}

static int usage(void)
{
    fprintf(stderr, "usage: chaos_client run|dump|ready --members LIST [--out FILE] "
                    "[--seconds S] [--workers N] [--watchers W] [--keys K] [--seed X] "
                    "[--timeout-ms T] [--persistent /p] [--volatile /v]\n");
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage();
    const char *cmd = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL)
            return usage();
        if (strcmp(a, "--members") == 0)
            g_members = v;
        else if (strcmp(a, "--out") == 0)
            g_out = v;
        else if (strcmp(a, "--seconds") == 0)
            g_seconds = atof(v);
        else if (strcmp(a, "--workers") == 0)
            g_workers = atoi(v);
        else if (strcmp(a, "--watchers") == 0)
            g_watchers = atoi(v);
        else if (strcmp(a, "--keys") == 0)
            g_keys = atoi(v);
        else if (strcmp(a, "--seed") == 0)
            g_seed = strtoull(v, NULL, 10);
        else if (strcmp(a, "--timeout-ms") == 0)
            g_timeout_ms = atoi(v);
        else if (strcmp(a, "--persistent") == 0)
            g_ppool = v;
        else if (strcmp(a, "--volatile") == 0)
            g_vpool = v;
        else
            return usage();
        i++;
    }
    if (g_members == NULL || g_workers < 1 || g_workers > MAX_THREADS || g_watchers < 0 ||
        g_watchers > MAX_THREADS || g_keys < 1 || g_keys > MAX_KEYS)
        return usage();
    if (strcmp(cmd, "run") == 0 && g_out)
        return cmd_run();
    if (strcmp(cmd, "dump") == 0 && g_out)
        return cmd_dump();
    if (strcmp(cmd, "ready") == 0)
        return cmd_ready();
    return usage();
}
