/* kv_check.c: client-side workloads and checks for the key-value integration tests, through
 * the client library (include/squall/client.h).
 *   kv_check counter MEMBERS KEY CLIENTS INCREMENTS
 *       CLIENTS threads each add 1 to the counter at KEY INCREMENTS times with conditional puts
 *       (retrying on conflict) while a watch from version 0 follows the key; checks the final
 *       value, the history and that the watch saw every version in order.
 *   kv_check writer MEMBERS PREFIX COUNT ACKED_FILE
 *       puts PREFIXi = "value-i" for i < COUNT one after the other, appending "KEY VERSION" to
 *       ACKED_FILE once each put is acknowledged; keeps going through member failures.
 *   kv_check verify MEMBERS ACKED_FILE
 *       every acknowledged put is there: a stable get returns its version and value.
 *   kv_check mixed MEMBERS PERSISTENT_POOL VOLATILE_POOL
 *       one client shared by a thread making blocking calls (which read their own answers), a
 *       thread making asynchronous puts and a watch: every call answered once and right, every
 *       asynchronous callback and watch event on the client's I/O thread (never a caller's),
 *       the watch sees every put in order; then traced puts and gets: their stage times in
 *       order, durability only for the persistent pool.
 *   kv_check call MEMBERS OP KEY [VALUE]
 *       one call (OP: put, get, rm, ls) through the library alone, with a 10 s timeout; prints
 *       "status=SQ_... ms=ELAPSED message=..." (what the library and the member say, without the
 *       CLI's own checks) and exits 0 whatever the status. */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "squall/client.h"

static const char *g_members;
static const char *g_key;
static long g_increments;
static atomic_long g_conflicts;

static int fail(const char *what, const sq_kv_result *r)
{
    fprintf(stderr, "kv_check: %s: %s (%s) %s\n", what, sq_err_name(r->status),
            sq_strerror(r->status), r->message);
    return 1;
}

static void *incrementer(void *arg)
{
    (void)arg;
    sq_client *c = NULL;
    char err[256];
    if (sq_client_open(&c, g_members, 30000, err, sizeof(err)) != 0) {
        fprintf(stderr, "kv_check: %s\n", err);
        return (void *)1;
    }
    sq_kv_result r = {0};
    long done = 0;
    while (done < g_increments) {
        long value = 0;
        uint64_t version = 0;
        int rc = sq_client_get(c, g_key, NULL, &r);
        if (rc == 0) {
            char buf[32] = "";
            memcpy(buf, r.value, r.size < sizeof(buf) - 1 ? r.size : sizeof(buf) - 1);
            value = strtol(buf, NULL, 10);
            version = r.version;
        } else if (rc != SQ_ENOTFOUND) {
            fail("get", &r);
            sq_kv_result_free(&r);
            sq_client_close(c);
            return (void *)1;
        }
        char next[32];
        int n = snprintf(next, sizeof(next), "%ld", value + 1);
        sq_put_opts o = {.if_version = 1, .version = version};
        rc = sq_client_put(c, g_key, next, (size_t)n, &o, &r);
        if (rc == SQ_ECONFLICT) {
            atomic_fetch_add(&g_conflicts, 1);
            continue;
        }
        if (rc != 0) {
            fail("conditional put", &r);
            sq_kv_result_free(&r);
            sq_client_close(c);
            return (void *)1;
        }
        done++;
    }
    sq_kv_result_free(&r);
    sq_client_close(c);
    return NULL;
}

struct watched {
    pthread_mutex_t mu;
    long events;
    uint64_t last_version;
    long bad;
};

static void on_event(void *arg, const sq_kv_event *ev)
{
    struct watched *w = arg;
    char buf[32] = "";
    memcpy(buf, ev->value, ev->size < sizeof(buf) - 1 ? ev->size : sizeof(buf) - 1);
    pthread_mutex_lock(&w->mu);
    w->events++;
    if (ev->version <= w->last_version || strtol(buf, NULL, 10) != w->events || ev->deleted) {
        if (w->bad++ < 5) {
            fprintf(stderr,
                    "kv_check: watch event %ld: version 0x%" PRIx64 " after 0x%" PRIx64
                    ", value '%s'\n",
                    w->events, ev->version, w->last_version, buf);
        }
    }
    w->last_version = ev->version;
    pthread_mutex_unlock(&w->mu);
}

static int counter(int clients)
{
    sq_client *c = NULL;
    char err[256];
    if (sq_client_open(&c, g_members, 30000, err, sizeof(err)) != 0) {
        fprintf(stderr, "kv_check: %s\n", err);
        return 1;
    }
    struct watched w = {.mu = PTHREAD_MUTEX_INITIALIZER};
    uint64_t wid = 0;
    int rc = sq_client_watch(c, g_key, 0, on_event, &w, &wid);
    if (rc != 0) {
        fprintf(stderr, "kv_check: watch: %s\n", sq_strerror(rc));
        return 1;
    }
    pthread_t th[64];
    for (int i = 0; i < clients; i++) {
        pthread_create(&th[i], NULL, incrementer, NULL);
    }
    int bad = 0;
    for (int i = 0; i < clients; i++) {
        void *res;
        pthread_join(th[i], &res);
        bad |= res != NULL;
    }
    if (bad) {
        return 1;
    }
    sq_kv_result r = {0};
    sq_get_opts stable = {.stable = 1};
    if (sq_client_get(c, g_key, &stable, &r) != 0) {
        return fail("final get", &r);
    }
    char buf[32] = "";
    memcpy(buf, r.value, r.size < sizeof(buf) - 1 ? r.size : sizeof(buf) - 1);
    long final = strtol(buf, NULL, 10);
    if (sq_client_history(c, g_key, &r) != 0) {
        return fail("history", &r);
    }
    long versions = 0;
    size_t pos = 0;
    sq_kv_item it;
    uint64_t prev = 0;
    while (sq_kv_next_item(&r, &pos, &it) == 1) {
        if (it.version <= prev) {
            fprintf(stderr, "kv_check: history not in version order\n");
            return 1;
        }
        prev = it.version;
        versions++;
    }
    /* The watch may trail the last put by a moment. */
    long expect = (long)clients * g_increments;
    for (int i = 0; i < 500; i++) {
        pthread_mutex_lock(&w.mu);
        long got = w.events;
        pthread_mutex_unlock(&w.mu);
        if (got >= expect) {
            break;
        }
        usleep(10000);
    }
    sq_client_unwatch(c, wid);
    printf("counter final=%ld versions=%ld watched=%ld watch_out_of_order=%ld conflicts=%ld\n",
           final, versions, w.events, w.bad, atomic_load(&g_conflicts));
    sq_kv_result_free(&r);
    sq_client_close(c);
    return final == expect && versions == expect && w.events == expect && w.bad == 0 ? 0 : 1;
}

static int writer(const char *prefix, long count, const char *acked)
{
    FILE *f = fopen(acked, "w");
    sq_client *c = NULL;
    char err[256];
    if (f == NULL || sq_client_open(&c, g_members, 30000, err, sizeof(err)) != 0) {
        fprintf(stderr, "kv_check: cannot start the writer: %s\n", f == NULL ? acked : err);
        return 1;
    }
    sq_kv_result r = {0};
    long acks = 0, errors = 0;
    for (long i = 0; i < count; i++) {
        char key[256], val[64];
        snprintf(key, sizeof(key), "%s%ld", prefix, i);
        int n = snprintf(val, sizeof(val), "value-%ld", i);
        if (sq_client_put(c, key, val, (size_t)n, NULL, &r) == 0) {
            fprintf(f, "%s 0x%" PRIx64 "\n", key, r.version);
            fflush(f);
            acks++;
        } else if (errors++ < 5) {
            fail(key, &r);
        }
    }
    printf("writer acked=%ld errors=%ld\n", acks, errors);
    fclose(f);
    sq_kv_result_free(&r);
    sq_client_close(c);
    return 0;
}

static int verify(const char *acked)
{
    FILE *f = fopen(acked, "r");
    sq_client *c = NULL;
    char err[256];
    if (f == NULL || sq_client_open(&c, g_members, 30000, err, sizeof(err)) != 0) {
        fprintf(stderr, "kv_check: cannot verify: %s\n", f == NULL ? acked : err);
        return 1;
    }
    sq_kv_result r = {0};
    char key[256];
    uint64_t version;
    long checked = 0, lost = 0;
    sq_get_opts stable = {.stable = 1};
    while (fscanf(f, "%255s %" SCNx64, key, &version) == 2) {
        char want[300];
        /* the index is what follows the prefix's last non-digit */
        const char *d = key + strlen(key);
        while (d > key && d[-1] >= '0' && d[-1] <= '9') {
            d--;
        }
        int n = snprintf(want, sizeof(want), "value-%s", d);
        int rc = sq_client_get(c, key, &stable, &r);
        if (rc != 0 || r.version != version || r.size != (size_t)n ||
            memcmp(r.value, want, (size_t)n) != 0) {
            if (lost++ < 5) {
                fprintf(stderr,
                        "kv_check: acknowledged %s at 0x%" PRIx64 " but got %s at 0x%" PRIx64 "\n",
                        key, version, sq_err_name(rc), r.version);
            }
        }
        checked++;
    }
    printf("verify checked=%ld lost=%ld\n", checked, lost);
    fclose(f);
    sq_kv_result_free(&r);
    sq_client_close(c);
    return lost == 0 && checked > 0 ? 0 : 1;
}

/* ---- mixed: blocking, asynchronous and watch traffic on one client ---- */

#define MIXED_PUTS 400

struct mixed {
    sq_client *c;
    const char *pool;
    pthread_t blocking_th, async_th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    long async_done, async_bad, events, events_bad;
    uint64_t last_event_version;
    pthread_t cb_thread; /* the one thread callbacks ran on (set by the first) */
    bool cb_thread_set;
    long wrong_thread;
    char why[256];
};

static void mixed_note_thread(struct mixed *x)
{
    pthread_t self = pthread_self();
    if (pthread_equal(self, x->blocking_th) || pthread_equal(self, x->async_th)) {
        x->wrong_thread++;
    } else if (!x->cb_thread_set) {
        x->cb_thread = self;
        x->cb_thread_set = true;
    } else if (!pthread_equal(self, x->cb_thread)) {
        x->wrong_thread++;
    }
}

static void mixed_async_done(void *arg, const sq_kv_result *r)
{
    struct mixed *x = arg;
    pthread_mutex_lock(&x->mu);
    mixed_note_thread(x);
    if (r->status != 0 || r->version == 0) {
        if (x->async_bad++ == 0) {
            snprintf(x->why, sizeof(x->why), "async put: %s %.200s", sq_err_name(r->status),
                     r->message);
        }
    }
    x->async_done++;
    pthread_cond_signal(&x->cv);
    pthread_mutex_unlock(&x->mu);
}

static void mixed_event(void *arg, const sq_kv_event *ev)
{
    struct mixed *x = arg;
    pthread_mutex_lock(&x->mu);
    mixed_note_thread(x);
    if (ev->version <= x->last_event_version) {
        x->events_bad++;
    }
    x->last_event_version = ev->version;
    x->events++;
    pthread_cond_signal(&x->cv);
    pthread_mutex_unlock(&x->mu);
}

static void *mixed_blocking(void *arg)
{
    struct mixed *x = arg;
    sq_kv_result r = {0};
    char key[128], val[64];
    long bad = 0;
    for (int i = 0; i < MIXED_PUTS && bad == 0; i++) {
        snprintf(key, sizeof(key), "%s/mixed/b%d", x->pool, i % 50);
        int n = snprintf(val, sizeof(val), "blocking-%d", i);
        if (sq_client_put(x->c, key, val, (size_t)n, NULL, &r) != 0) {
            bad++;
            fail("blocking put", &r);
        } else if (sq_client_get(x->c, key, NULL, &r) != 0 || r.size != (size_t)n ||
                   memcmp(r.value, val, (size_t)n) != 0) {
            bad++;
            fprintf(stderr, "kv_check: mixed: get %s did not return its put (%s)\n", key,
                    sq_err_name(r.status));
        }
    }
    sq_kv_result_free(&r);
    return (void *)bad;
}

static void *mixed_async(void *arg)
{
    struct mixed *x = arg;
    char key[128];
    long bad = 0;
    for (int i = 0; i < MIXED_PUTS && bad == 0; i++) {
        snprintf(key, sizeof(key), "%s/mixed/a%d", x->pool, i % 50);
        int rc;
        while ((rc = sq_client_put_async(x->c, key, "async", 5, NULL, mixed_async_done, x)) ==
               SQ_EAGAIN) {
            usleep(500);
        }
        if (rc != 0) {
            fprintf(stderr, "kv_check: mixed: put_async: %s\n", sq_err_name(rc));
            bad++;
        }
    }
    return (void *)bad;
}

/* A traced put or get: its times in order; durable and persisted only for a persistent pool. */
static int check_trace(sq_client *c, const char *pool, bool persistent, bool get)
{
    char key[128];
    snprintf(key, sizeof(key), "%s/mixed/traced", pool);
    sq_kv_result r = {0};
    int rc;
    if (get) {
        sq_get_opts o = {.trace = 1};
        rc = sq_client_get(c, key, &o, &r);
    } else {
        sq_put_opts o = {.trace = 1};
        rc = sq_client_put(c, key, "t", 1, &o, &r);
    }
    if (rc != 0) {
        fail("traced call", &r);
        sq_kv_result_free(&r);
        return 1;
    }
    const sq_kv_trace *t = &r.trace;
    uint64_t at[] = {t->call,    t->sent,      t->received, t->multicast, t->delivered,
                     t->durable, t->persisted, t->answered, t->answer_in, t->returned};
    const char *names[] = {"call",    "sent",      "received", "multicast", "delivered",
                           "durable", "persisted", "answered", "answer_in", "returned"};
    int bad = 0;
    uint64_t last = 0;
    for (int i = 0; i < 10; i++) {
        bool want = true;
        if (get && i >= 3 && i <= 6) {
            want = false; /* a get from memory is answered where it was read */
        } else if (!persistent && (i == 5 || i == 6)) {
            want = false; /* a volatile store syncs nothing */
        }
        if (want != (at[i] != 0)) {
            fprintf(stderr, "kv_check: traced %s on %s: stage %s is %" PRIu64 "\n",
                    get ? "get" : "put", pool, names[i], at[i]);
            bad = 1;
        }
        if (at[i] != 0 && i != 5 && at[i] < last) {
            /* (durable here may come after the frontier's news: it is this member's sync) */
            fprintf(stderr,
                    "kv_check: traced %s on %s: stage %s (%" PRIu64 ") before the one before\n",
                    get ? "get" : "put", pool, names[i], at[i]);
            bad = 1;
        }
        if (at[i] != 0 && i != 5) {
            last = at[i];
        }
    }
    /* A member logs an update once it holds it in order, before it is delivered: its own sync
     * comes after the update went into the multicast, and before every member's (persisted). */
    if (persistent && !get && (t->durable < t->multicast || t->durable > t->persisted)) {
        fprintf(stderr,
                "kv_check: traced put: durable here %" PRIu64 " not between multicast %" PRIu64
                " and persisted %" PRIu64 "\n",
                t->durable, t->multicast, t->persisted);
        bad = 1;
    }
    if (r.message[0] != '\0') {
        fprintf(stderr, "kv_check: traced call left a message: %s\n", r.message);
        bad = 1;
    }
    sq_kv_result_free(&r);
    return bad;
}

static int mixed(const char *members, const char *ppool, const char *vpool)
{
    char err[256];
    struct mixed x = {.pool = ppool};
    pthread_mutex_init(&x.mu, NULL);
    pthread_cond_init(&x.cv, NULL);
    if (sq_client_open(&x.c, members, 30000, err, sizeof(err)) != 0) {
        fprintf(stderr, "kv_check: %s\n", err);
        return 1;
    }
    char prefix[128];
    snprintf(prefix, sizeof(prefix), "%s/mixed/", ppool);
    uint64_t wid = 0;
    int rc = sq_client_watch(x.c, prefix, 0, mixed_event, &x, &wid);
    if (rc != 0) {
        fprintf(stderr, "kv_check: mixed: watch: %s\n", sq_err_name(rc));
        return 1;
    }
    /* the callbacks compare against both threads: they exist before any callback can run */
    pthread_mutex_lock(&x.mu);
    pthread_create(&x.blocking_th, NULL, mixed_blocking, &x);
    pthread_create(&x.async_th, NULL, mixed_async, &x);
    pthread_mutex_unlock(&x.mu);
    void *b1 = NULL, *b2 = NULL;
    pthread_join(x.blocking_th, &b1);
    pthread_join(x.async_th, &b2);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 30;
    pthread_mutex_lock(&x.mu);
    while ((x.async_done < MIXED_PUTS || x.events < 2 * MIXED_PUTS) &&
           pthread_cond_timedwait(&x.cv, &x.mu, &until) == 0) {
    }
    long async_done = x.async_done, events = x.events;
    pthread_mutex_unlock(&x.mu);
    int bad = b1 != NULL || b2 != NULL;
    if (async_done != MIXED_PUTS || x.async_bad > 0) {
        fprintf(stderr, "kv_check: mixed: %ld of %d async puts answered, %ld bad (%s)\n",
                async_done, MIXED_PUTS, x.async_bad, x.why);
        bad = 1;
    }
    if (events != 2 * MIXED_PUTS || x.events_bad > 0) {
        fprintf(stderr, "kv_check: mixed: the watch saw %ld of %d puts, %ld out of order\n", events,
                2 * MIXED_PUTS, x.events_bad);
        bad = 1;
    }
    if (x.wrong_thread > 0) {
        fprintf(stderr, "kv_check: mixed: %ld callbacks ran off the client's I/O thread\n",
                x.wrong_thread);
        bad = 1;
    }
    sq_client_unwatch(x.c, wid);
    bad |= check_trace(x.c, ppool, true, false);
    bad |= check_trace(x.c, ppool, true, true);
    bad |= check_trace(x.c, vpool, false, false);
    printf("mixed async=%ld events=%ld wrong_thread=%ld bad=%d\n", async_done, events,
           x.wrong_thread, bad);
    sq_client_close(x.c);
    return bad;
}

/* One call, its status, time and message: for tests of what the library and the members say. */
static int call_once(const char *members, const char *op, const char *key, const char *value)
{
    char err[512] = "";
    sq_client *c = NULL;
    sq_kv_result r;
    memset(&r, 0, sizeof(r));
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = sq_client_open(&c, members, 10000, err, sizeof(err));
    if (rc == 0 && strcmp(op, "put") == 0) {
        rc = sq_client_put(c, key, value != NULL ? value : "", value != NULL ? strlen(value) : 0,
                           NULL, &r);
    } else if (rc == 0 && strcmp(op, "get") == 0) {
        rc = sq_client_get(c, key, NULL, &r);
    } else if (rc == 0 && strcmp(op, "rm") == 0) {
        rc = sq_client_remove(c, key, NULL, &r);
    } else if (rc == 0 && strcmp(op, "ls") == 0) {
        rc = sq_client_list(c, key, 0, 0, &r);
    } else if (rc == 0) {
        fprintf(stderr, "kv_check: call: OP is put, get, rm or ls\n");
        sq_client_close(c);
        return 2;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (long)(t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    printf("status=%s ms=%ld message=%s\n", rc == 0 ? "0" : sq_err_name(rc), ms,
           c == NULL ? err : r.message);
    sq_kv_result_free(&r);
    sq_client_close(c);
    return 0;
}

int main(int argc, char **argv)
{
    if ((argc == 5 || argc == 6) && strcmp(argv[1], "call") == 0) {
        return call_once(argv[2], argv[3], argv[4], argc == 6 ? argv[5] : NULL);
    }
    if (argc == 6 && strcmp(argv[1], "counter") == 0) {
        g_members = argv[2];
        g_key = argv[3];
        g_increments = atol(argv[5]);
        int clients = atoi(argv[4]);
        if (clients < 1 || clients > 64 || g_increments < 1) {
            fprintf(stderr, "kv_check: 1..64 clients and at least one increment\n");
            return 2;
        }
        return counter(clients);
    }
    if (argc == 6 && strcmp(argv[1], "writer") == 0) {
        g_members = argv[2];
        return writer(argv[3], atol(argv[4]), argv[5]);
    }
    if (argc == 5 && strcmp(argv[1], "mixed") == 0) {
        return mixed(argv[2], argv[3], argv[4]);
    }
    if (argc == 4 && strcmp(argv[1], "verify") == 0) {
        g_members = argv[2];
        return verify(argv[3]);
    }
    fprintf(stderr, "usage: kv_check counter MEMBERS KEY CLIENTS INCREMENTS\n"
                    "       kv_check writer MEMBERS PREFIX COUNT ACKED_FILE\n"
                    "       kv_check verify MEMBERS ACKED_FILE\n"
                    "       kv_check mixed MEMBERS PERSISTENT_POOL VOLATILE_POOL\n"
                    "       kv_check call MEMBERS OP KEY [VALUE]\n");
    return 2;
}
