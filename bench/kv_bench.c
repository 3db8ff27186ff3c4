/* kv_bench.c: closed-loop throughput and latency of squall's key-value store (blocking put, get
 * or conditional put from N clients), against a loopback TCP request/response echo of the same
 * size, threads and duration measured in the same run. Prints one line of key=value pairs. Never
 * part of `make test`: run `make bench-kv` (bench/kv-bench.sh) or build/bench/kv-bench. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "squall.h"
#include "kv/wire.h"
#include "squall/client.h"

#define MAX_THREADS 256
#define MAX_SIZE_BYTES SQ_KV_MAX_VALUE /* the protocol's largest value */
#define MAX_SECONDS 3600
#define KEYS_PER_THREAD 1000
/* Every member keeps each key's latest value: 1000 keys of 1 MiB per thread would hold GBs in
 * each of the three members, so large values cycle over fewer keys. */
#define KEYSPACE_BYTES_PER_THREAD (16u << 20)
/* Latencies kept per thread (4 bytes each); ops past it are counted but not timed. */
#define MAX_SAMPLES_PER_THREAD (1u << 22)
/* Threads registering watches through the one watch client: each waits for one answer at a
 * time, so together they keep this many requests outstanding (within SQ_CLIENT_MAX_INFLIGHT). */
#define WATCH_SETUP_THREADS 8
#define MAX_WATCH_KEYS 1000000
#define CALL_TIMEOUT_MS 30000
/* Asynchronous puts outstanding per thread while filling keys: the client's own limit. */
#define WARMUP_INFLIGHT SQ_CLIENT_MAX_INFLIGHT
#define KEY_BYTES 160
#define ERR_BYTES 640

enum { OP_PUT, OP_GET, OP_CPUT };
static const char *const g_op_names[] = {"put", "get", "cput"};

struct options {
    const char *members;
    long trace; /* trace every Nth call (0: none) */
    const char *pool;
    int threads;
    size_t size;
    int op;
    double seconds;
    long watch_keys;
};

struct samples {
    uint32_t *us;
    size_t n, cap;
};

/* The stages of a traced call (--trace): from one time of sq_kv_trace to the next it reached. */
enum {
    ST_CLIENT_SEND,
    ST_TO_MEMBER,
    ST_TO_MULTICAST,
    ST_DELIVERED,
    ST_DURABLE_HERE,
    ST_FRONTIER,
    ST_TO_ANSWER,
    ST_TO_CLIENT,
    ST_CLIENT_RETURN,
    ST_TOTAL,
    NSTAGES
};
static const char *const g_stage_names[NSTAGES] = {
    "client_send", "to_member", "to_multicast", "delivered",     "durable_here",
    "frontier",    "to_answer", "to_client",    "client_return", "total"};
static const char *const g_stage_what[NSTAGES] = {
    "the call until its frame is in the socket (client I/O thread)",
    "socket to the member's service thread decoding it",
    "decoded to its op in the shard's multicast slot",
    "multicast until delivered here (every member has it)",
    "delivered until this member's log sync covered it (0: it was durable first)",
    "durable here until the shard's frontier passed it (every member durable)",
    "the last stage until the member queued the answer",
    "answer queued until the client's I/O thread read it",
    "read until the blocking call returned to the caller",
    "the whole call"};

/* One closed-loop client: a squall client or an echo socket. */
struct worker {
    int idx;
    pthread_t th;
    sq_client *c;
    int fd;
    uint32_t nkeys;
    uint64_t ops, errors;
    struct samples lat;
    struct samples stage[NSTAGES];
    double t_start, t_end;
    bool setup_failed;
    char first_error[ERR_BYTES];
};

static struct options g_opt = {.threads = 1, .size = 100, .op = OP_PUT, .seconds = 3};
/* --cacert, --cert, --key: TLS to the members (tls set when any is given) */
static sq_client_tls g_tls;
static bool g_use_tls;

/* A client of the members in --members, over TLS when asked. */
static int open_client(sq_client **out, char *err, size_t err_size)
{
    return g_use_tls
               ? sq_client_open_tls(out, g_opt.members, CALL_TIMEOUT_MS, &g_tls, err, err_size)
               : sq_client_open(out, g_opt.members, CALL_TIMEOUT_MS, err, err_size);
}
static pthread_barrier_t g_start;
static unsigned char *g_value;
static char g_tag[32]; /* this run's keys differ from an earlier run's on the same pool */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void samples_add(struct samples *s, double seconds)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 65536;
        if (cap > MAX_SAMPLES_PER_THREAD) {
            cap = MAX_SAMPLES_PER_THREAD;
        }
        uint32_t *p = cap > s->cap ? realloc(s->us, cap * sizeof(*p)) : NULL;
        if (p == NULL) {
            return;
        }
        s->us = p;
        s->cap = cap;
    }
    double us = seconds * 1e6;
    s->us[s->n++] = us >= (double)UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

/* Adds one traced call's stages: each from the last time before it that the call reached. */
static void trace_add(struct worker *w, const sq_kv_trace *t)
{
    const uint64_t at[] = {t->call,    t->sent,      t->received, t->multicast, t->delivered,
                           t->durable, t->persisted, t->answered, t->answer_in, t->returned};
    static const int stage_to[] = {ST_CLIENT_SEND, ST_TO_MEMBER,    ST_TO_MULTICAST,
                                   ST_DELIVERED,   ST_DURABLE_HERE, ST_FRONTIER,
                                   ST_TO_ANSWER,   ST_TO_CLIENT,    ST_CLIENT_RETURN};
    if (t->call == 0 || t->returned == 0 || t->received == 0 || t->answered == 0) {
        return; /* not traced end to end (an older member, or an error) */
    }
    uint64_t last = t->call;
    for (int i = 1; i < 10; i++) {
        if (at[i] == 0) {
            continue;
        }
        /* a stage a call skipped (volatile: durability) folds into the next one reached; the
         * answer stage starts at the last member stage */
        int st = stage_to[i - 1];
        samples_add(&w->stage[st], at[i] >= last ? (double)(at[i] - last) / 1e6 : 0);
        last = at[i] > last ? at[i] : last; /* a persistent update may be durable before delivery */
    }
    samples_add(&w->stage[ST_TOTAL], (double)(t->returned - t->call) / 1e6);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

struct summary {
    uint64_t ops, errors;
    double ops_per_s;
    uint32_t p50_us, p99_us;
};

/* Pools the workers' counts and latencies. The rate is over the span from the first start to
 * the last end, so a thread that finished its last call late is not credited extra time. */
static struct summary summarize(struct worker *ws, int n)
{
    struct summary sm = {0};
    size_t total = 0;
    double t0 = ws[0].t_start, t1 = ws[0].t_end;
    for (int i = 0; i < n; i++) {
        sm.ops += ws[i].ops;
        sm.errors += ws[i].errors;
        total += ws[i].lat.n;
        t0 = ws[i].t_start < t0 ? ws[i].t_start : t0;
        t1 = ws[i].t_end > t1 ? ws[i].t_end : t1;
    }
    sm.ops_per_s = t1 > t0 ? (double)sm.ops / (t1 - t0) : 0;
    uint32_t *all = total > 0 ? malloc(total * sizeof(*all)) : NULL;
    if (all != NULL) {
        size_t k = 0;
        for (int i = 0; i < n; i++) {
            memcpy(all + k, ws[i].lat.us, ws[i].lat.n * sizeof(*all));
            k += ws[i].lat.n;
        }
        qsort(all, total, sizeof(*all), cmp_u32);
        sm.p50_us = all[total / 2];
        sm.p99_us = all[(total * 99) / 100];
    }
    free(all);
    return sm;
}

/* Starts a worker or exits: one that never started would leave the others at the barrier. */
static void start_thread(pthread_t *th, void *(*fn)(void *), void *arg)
{
    if (pthread_create(th, NULL, fn, arg) != 0) {
        fprintf(stderr, "kv-bench: cannot start a thread\n");
        exit(1);
    }
}

/* ---- the reference: a loopback TCP echo of frames of the same size ---- */

struct echo_server {
    int listen_fd;
    int stop[2]; /* written once every client is done */
    pthread_t th;
};

struct echo_conn {
    int fd;
    unsigned char *buf;
    size_t done;
    bool writing; /* the whole frame is in: send it back */
};

static void set_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* One thread, one poll loop over every connection, as a member's service thread. Each frame is
 * read whole before it is echoed, so a client writing a large frame never waits on its own
 * unread echo. */
static void *echo_main(void *arg)
{
    struct echo_server *e = arg;
    struct echo_conn conns[MAX_THREADS];
    struct pollfd pf[MAX_THREADS + 2];
    int n = 0;
    for (;;) {
        pf[0] = (struct pollfd){.fd = e->stop[0], .events = POLLIN};
        pf[1] = (struct pollfd){.fd = e->listen_fd, .events = n < MAX_THREADS ? POLLIN : 0};
        for (int i = 0; i < n; i++) {
            pf[2 + i] =
                (struct pollfd){.fd = conns[i].fd, .events = conns[i].writing ? POLLOUT : POLLIN};
        }
        if (poll(pf, (nfds_t)(2 + n), -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        if (pf[0].revents != 0) {
            break;
        }
        for (int i = 0; i < n; i++) {
            struct echo_conn *k = &conns[i];
            if (pf[2 + i].revents == 0 || k->fd < 0) {
                continue;
            }
            ssize_t r = k->writing ? write(k->fd, k->buf + k->done, g_opt.size - k->done)
                                   : read(k->fd, k->buf + k->done, g_opt.size - k->done);
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
                continue;
            }
            if (r <= 0) {
                close(k->fd);
                k->fd = -1; /* the client is done; its slot stays (there are few) */
                continue;
            }
            k->done += (size_t)r;
            if (k->done == g_opt.size) {
                k->done = 0;
                k->writing = !k->writing;
            }
        }
        if (pf[1].revents & POLLIN) {
            int fd = accept(e->listen_fd, NULL, NULL);
            unsigned char *buf = fd >= 0 ? malloc(g_opt.size) : NULL;
            if (buf == NULL) {
                if (fd >= 0) {
                    close(fd);
                }
                continue;
            }
            fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
            set_nodelay(fd);
            conns[n++] = (struct echo_conn){.fd = fd, .buf = buf};
        }
    }
    for (int i = 0; i < n; i++) {
        if (conns[i].fd >= 0) {
            close(conns[i].fd);
        }
        free(conns[i].buf);
    }
    return NULL;
}

static bool io_full(int fd, unsigned char *p, size_t n, bool writing)
{
    while (n > 0) {
        ssize_t r = writing ? write(fd, p, n) : read(fd, p, n);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return false;
        }
        p += r;
        n -= (size_t)r;
    }
    return true;
}

static void *echo_worker(void *arg)
{
    struct worker *w = arg;
    unsigned char *in = malloc(g_opt.size);
    w->setup_failed = in == NULL;
    pthread_barrier_wait(&g_start);
    w->t_start = now_s();
    w->t_end = w->t_start;
    if (w->setup_failed) {
        return NULL;
    }
    double end = w->t_start + g_opt.seconds;
    double t = w->t_start;
    while (t < end) {
        errno = 0; /* a closed connection leaves none */
        if (!io_full(w->fd, g_value, g_opt.size, true) || !io_full(w->fd, in, g_opt.size, false)) {
            w->errors++;
            snprintf(w->first_error, sizeof(w->first_error), "echo: %s",
                     errno != 0 ? strerror(errno) : "connection closed");
            break;
        }
        double t1 = now_s();
        w->ops++;
        samples_add(&w->lat, t1 - t);
        t = t1;
    }
    w->t_end = now_s();
    free(in);
    return NULL;
}

static int run_echo(struct summary *out)
{
    int rc = 1;
    struct echo_server e = {.listen_fd = -1, .stop = {-1, -1}};
    struct worker *ws = calloc((size_t)g_opt.threads, sizeof(*ws));
    bool server = false;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    if (ws == NULL) {
        goto out;
    }
    for (int i = 0; i < g_opt.threads; i++) {
        ws[i].idx = i;
        ws[i].fd = -1;
    }
    e.listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    if (e.listen_fd < 0 || bind(e.listen_fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        listen(e.listen_fd, MAX_THREADS) != 0 ||
        getsockname(e.listen_fd, (struct sockaddr *)&a, &alen) != 0 || pipe(e.stop) != 0) {
        perror("kv-bench: echo reference");
        goto out;
    }
    start_thread(&e.th, echo_main, &e);
    server = true;
    for (int i = 0; i < g_opt.threads; i++) {
        ws[i].fd = socket(AF_INET, SOCK_STREAM, 0);
        if (ws[i].fd < 0 || connect(ws[i].fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
            perror("kv-bench: echo connect");
            goto close_fds;
        }
        set_nodelay(ws[i].fd);
    }
    pthread_barrier_init(&g_start, NULL, (unsigned)g_opt.threads);
    for (int i = 0; i < g_opt.threads; i++) {
        start_thread(&ws[i].th, echo_worker, &ws[i]);
    }
    rc = 0;
    for (int i = 0; i < g_opt.threads; i++) {
        pthread_join(ws[i].th, NULL);
        if (ws[i].setup_failed || ws[i].errors > 0) {
            fprintf(stderr, "kv-bench: echo thread %d: %s\n", i,
                    ws[i].setup_failed ? "out of memory" : ws[i].first_error);
            rc = 1;
        }
    }
    pthread_barrier_destroy(&g_start);
    if (rc == 0) {
        *out = summarize(ws, g_opt.threads);
    }
close_fds:
    for (int i = 0; i < g_opt.threads; i++) {
        if (ws[i].fd >= 0) {
            close(ws[i].fd);
        }
        free(ws[i].lat.us);
    }
out:
    if (server) {
        ssize_t wr = write(e.stop[1], "x", 1);
        (void)wr;
        pthread_join(e.th, NULL);
    }
    for (int i = 0; i < 2; i++) {
        if (e.stop[i] >= 0) {
            close(e.stop[i]);
        }
    }
    if (e.listen_fd >= 0) {
        close(e.listen_fd);
    }
    free(ws);
    return rc;
}

/* ---- the key-value store ---- */

static void key_name(char *out, int thread, uint32_t i)
{
    const char *kind = g_opt.op == OP_CPUT ? "c" : "k";
    if (g_opt.op == OP_CPUT) {
        snprintf(out, KEY_BYTES, "%s/kvb-%s/%s/t%d", g_opt.pool, g_tag, kind, thread);
    } else {
        snprintf(out, KEY_BYTES, "%s/kvb-%s/%s/t%d/%" PRIu32, g_opt.pool, g_tag, kind, thread, i);
    }
}

struct warmup {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int inflight;
    uint64_t errors;
    char msg[ERR_BYTES];
};

static void warm_done(void *arg, const sq_kv_result *r)
{
    struct warmup *wu = arg;
    pthread_mutex_lock(&wu->mu);
    wu->inflight--;
    if (r->status != 0 && wu->errors++ == 0) {
        snprintf(wu->msg, sizeof(wu->msg), "warm-up put: %s (%s)", sq_err_name(r->status),
                 r->message);
    }
    pthread_cond_signal(&wu->cv);
    pthread_mutex_unlock(&wu->mu);
}

/* Writes the keys a get run reads, WARMUP_INFLIGHT at a time: one by one, a persistent pool
 * would make the warm-up longer than the run. */
static int fill_keys(struct worker *w)
{
    struct warmup wu = {.inflight = 0};
    pthread_mutex_init(&wu.mu, NULL);
    pthread_cond_init(&wu.cv, NULL);
    char key[KEY_BYTES];
    for (uint32_t i = 0; i < w->nkeys; i++) {
        key_name(key, w->idx, i);
        pthread_mutex_lock(&wu.mu);
        while (wu.inflight >= WARMUP_INFLIGHT) {
            pthread_cond_wait(&wu.cv, &wu.mu);
        }
        wu.inflight++;
        pthread_mutex_unlock(&wu.mu);
        int rc = sq_client_put_async(w->c, key, g_value, g_opt.size, NULL, warm_done, &wu);
        if (rc != 0) {
            pthread_mutex_lock(&wu.mu);
            wu.inflight--;
            if (wu.errors++ == 0) {
                snprintf(wu.msg, sizeof(wu.msg), "warm-up put: %s", sq_err_name(rc));
            }
            pthread_mutex_unlock(&wu.mu);
        }
    }
    pthread_mutex_lock(&wu.mu);
    while (wu.inflight > 0) {
        pthread_cond_wait(&wu.cv, &wu.mu);
    }
    pthread_mutex_unlock(&wu.mu);
    if (wu.errors > 0) {
        snprintf(w->first_error, sizeof(w->first_error), "%" PRIu64 " of %" PRIu32 " %.400s",
                 wu.errors, w->nkeys, wu.msg);
    }
    pthread_mutex_destroy(&wu.mu);
    pthread_cond_destroy(&wu.cv);
    return wu.errors > 0 ? -1 : 0;
}

static void *kv_worker(void *arg)
{
    struct worker *w = arg;
    sq_kv_result r = {0};
    char key[KEY_BYTES];
    uint64_t version = 0;
    /* Setup before the barrier, so that no thread's warm-up overlaps another's timed run. */
    if (g_opt.op == OP_GET) {
        w->setup_failed = fill_keys(w) != 0;
    } else if (g_opt.op == OP_CPUT) {
        key_name(key, w->idx, 0);
        int rc = sq_client_put(w->c, key, g_value, g_opt.size, NULL, &r);
        version = r.version;
        if (rc != 0) {
            w->setup_failed = true;
            snprintf(w->first_error, sizeof(w->first_error), "first put of %s: %s (%s)", key,
                     sq_err_name(rc), r.message);
        }
    }
    pthread_barrier_wait(&g_start);
    w->t_start = now_s();
    w->t_end = w->t_start;
    if (w->setup_failed) {
        goto out;
    }
    double end = w->t_start + g_opt.seconds;
    double t = w->t_start;
    uint32_t i = 0;
    uint64_t calls = 0;
    while (t < end) {
        int rc = 0;
        key_name(key, w->idx, i);
        i = (i + 1) % w->nkeys;
        bool traced = g_opt.trace > 0 && calls++ % (uint64_t)g_opt.trace == 0;
        if (g_opt.op == OP_PUT) {
            sq_put_opts po = {.trace = traced};
            rc = sq_client_put(w->c, key, g_value, g_opt.size, &po, &r);
        } else if (g_opt.op == OP_GET) {
            sq_get_opts go = {.trace = traced};
            rc = sq_client_get(w->c, key, &go, &r);
            if (rc == 0 && r.size != g_opt.size) {
                rc = SQ_EPROTO;
                snprintf(r.message, sizeof(r.message), "got %zu bytes, %zu were put", r.size,
                         g_opt.size);
            }
        } else {
            sq_put_opts po = {.if_version = 1, .version = version, .trace = traced};
            rc = sq_client_put(w->c, key, g_value, g_opt.size, &po, &r);
            if (rc == 0 || rc == SQ_ECONFLICT) {
                version = r.version; /* a conflict says where the key is now */
            }
        }
        double t1 = now_s();
        if (rc == 0) {
            w->ops++;
            samples_add(&w->lat, t1 - t);
            if (traced) {
                trace_add(w, &r.trace);
            }
        } else {
            w->errors++;
            if (w->first_error[0] == '\0') {
                snprintf(w->first_error, sizeof(w->first_error), "%s %s after %.3f s: %s (%.256s)",
                         g_op_names[g_opt.op], key, t1 - w->t_start, sq_err_name(rc), r.message);
            }
        }
        t = t1;
    }
    w->t_end = now_s();
out:
    sq_kv_result_free(&r);
    return NULL;
}

static uint32_t keys_per_thread(void)
{
    if (g_opt.op == OP_CPUT) {
        return 1;
    }
    size_t n = KEYSPACE_BYTES_PER_THREAD / g_opt.size;
    return n >= KEYS_PER_THREAD ? KEYS_PER_THREAD : n > 0 ? (uint32_t)n : 1;
}

static struct worker *g_traces; /* the last run's workers, for --trace */

static void free_workers(struct worker *ws)
{
    for (int i = 0; i < g_opt.threads; i++) {
        sq_client_close(ws[i].c);
        free(ws[i].lat.us);
        for (int st = 0; st < NSTAGES; st++) {
            free(ws[i].stage[st].us);
        }
    }
    free(ws);
}

/* One line per stage of the traced calls: percentiles in microseconds. */
static void print_trace(const char *type, struct worker *ws)
{
    for (int st = 0; st < NSTAGES; st++) {
        size_t total = 0;
        for (int i = 0; i < g_opt.threads; i++) {
            total += ws[i].stage[st].n;
        }
        if (total == 0) {
            continue;
        }
        uint32_t *all = malloc(total * sizeof(*all));
        if (all == NULL) {
            return;
        }
        size_t k = 0;
        double sum = 0;
        for (int i = 0; i < g_opt.threads; i++) {
            memcpy(all + k, ws[i].stage[st].us, ws[i].stage[st].n * sizeof(*all));
            k += ws[i].stage[st].n;
        }
        for (size_t j = 0; j < total; j++) {
            sum += all[j];
        }
        qsort(all, total, sizeof(*all), cmp_u32);
        printf("case=trace pool=%s op=%s threads=%d size=%zu stage=%s n=%zu p50_us=%" PRIu32
               " p90_us=%" PRIu32 " p99_us=%" PRIu32 " mean_us=%.1f what=\"%s\"\n",
               type, g_op_names[g_opt.op], g_opt.threads, g_opt.size, g_stage_names[st], total,
               all[total / 2], all[(total * 9) / 10], all[(total * 99) / 100], sum / (double)total,
               g_stage_what[st]);
        free(all);
    }
}

static int run_kv(struct summary *out)
{
    int rc = 1;
    struct worker *ws = calloc((size_t)g_opt.threads, sizeof(*ws));
    if (ws == NULL) {
        return 1;
    }
    for (int i = 0; i < g_opt.threads; i++) {
        char err[256];
        ws[i].idx = i;
        ws[i].nkeys = keys_per_thread();
        if (open_client(&ws[i].c, err, sizeof(err)) != 0) {
            fprintf(stderr, "kv-bench: %s\n", err);
            goto close_clients;
        }
    }
    pthread_barrier_init(&g_start, NULL, (unsigned)g_opt.threads);
    for (int i = 0; i < g_opt.threads; i++) {
        start_thread(&ws[i].th, kv_worker, &ws[i]);
    }
    rc = 0;
    for (int i = 0; i < g_opt.threads; i++) {
        pthread_join(ws[i].th, NULL);
        if (ws[i].setup_failed) {
            rc = 1;
        }
        if (ws[i].first_error[0] != '\0') {
            fprintf(stderr, "kv-bench: thread %d (member %" PRIu32 ")%s: %s\n", i,
                    sq_client_member(ws[i].c), ws[i].setup_failed ? " setup" : "",
                    ws[i].first_error);
        }
    }
    pthread_barrier_destroy(&g_start);
    if (rc == 0) {
        *out = summarize(ws, g_opt.threads);
        g_traces = ws; /* printed after the summary line, then freed */
        return 0;
    }
close_clients:
    free_workers(ws);
    free(ws);
    return rc;
}

/* ---- watches on keys nobody writes ---- */

static atomic_uint_fast64_t g_events;

static void on_event(void *arg, const sq_kv_event *ev)
{
    (void)arg;
    (void)ev;
    atomic_fetch_add(&g_events, 1);
}

struct watcher {
    sq_client *c; /* shared by every watcher */
    pthread_t th;
    long first, count;
    int rc;
    char err[ERR_BYTES];
};

static void *watch_main(void *arg)
{
    struct watcher *wt = arg;
    char key[KEY_BYTES];
    for (long i = wt->first; i < wt->first + wt->count; i++) {
        snprintf(key, sizeof(key), "%s/watched/%ld", g_opt.pool, i);
        uint64_t id = 0;
        int rc = sq_client_watch(wt->c, key, 0, on_event, NULL, &id);
        if (rc != 0) {
            wt->rc = rc;
            snprintf(wt->err, sizeof(wt->err), "watch %s (after %ld of this thread's): %s", key,
                     i - wt->first, sq_err_name(rc));
            break;
        }
    }
    return NULL;
}

/* Registers g_opt.watch_keys exact-key watches through one more client, from
 * WATCH_SETUP_THREADS threads at once (the blocking API has one answer outstanding per thread).
 * The watches stay until the client is closed. */
static int open_watches(sq_client **out, double *setup_s)
{
    struct watcher wt[WATCH_SETUP_THREADS];
    char err[256];
    int rc = 0;
    double t0 = now_s();
    if (open_client(out, err, sizeof(err)) != 0) {
        fprintf(stderr, "kv-bench: watch client: %s\n", err);
        return 1;
    }
    long per = (g_opt.watch_keys + WATCH_SETUP_THREADS - 1) / WATCH_SETUP_THREADS;
    for (int i = 0; i < WATCH_SETUP_THREADS; i++) {
        long first = per * i;
        wt[i] = (struct watcher){.c = *out, .first = first};
        long left = first < g_opt.watch_keys ? g_opt.watch_keys - first : 0;
        wt[i].count = left < per ? left : per;
        start_thread(&wt[i].th, watch_main, &wt[i]);
    }
    for (int i = 0; i < WATCH_SETUP_THREADS; i++) {
        pthread_join(wt[i].th, NULL);
        if (wt[i].rc != 0) {
            fprintf(stderr, "kv-bench: watch client (member %" PRIu32 "): %s\n",
                    sq_client_member(*out), wt[i].err);
            rc = 1;
        }
    }
    *setup_s = now_s() - t0;
    return rc;
}

/* The store type of pool `path` ("volatile", "persistent", "trigger"), or NULL. */
static const char *pool_type(char *err, size_t err_size)
{
    static const char *const types[] = {"volatile", "persistent", "trigger"};
    const char *found = NULL;
    sq_client *c = NULL;
    sq_kv_result r = {0};
    int rc = open_client(&c, err, err_size);
    if (rc != 0) {
        return NULL;
    }
    rc = sq_client_pool_list(c, &r);
    if (rc != 0) {
        snprintf(err, err_size, "pool list: %s (%s)", sq_err_name(rc), r.message);
        goto out;
    }
    size_t pos = 0, plen = strlen(g_opt.pool);
    sq_kv_item it;
    while ((rc = sq_kv_next_item(&r, &pos, &it)) == 1) {
        if (it.key_len == plen && memcmp(it.key, g_opt.pool, plen) == 0) {
            found = it.timestamp < 3 ? types[it.timestamp] : "unknown";
            break;
        }
    }
    if (found == NULL) {
        snprintf(err, err_size, "no pool %s (create it: squall pool create %s persistent)",
                 g_opt.pool, g_opt.pool);
    }
out:
    sq_kv_result_free(&r);
    sq_client_close(c);
    return found;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: kv-bench --members LIST --pool /PATH --ops put|get|cput [--threads N]\n"
            "                [--size BYTES] [--seconds S] [--watch-keys K] [--trace N]\n"
            "                [--cacert FILE [--cert FILE --key FILE]]\n"
            "--cacert (and a client certificate) speak TLS to members with [tls].\n"
            "Each of N threads has its own client and runs blocking calls back to back for S\n"
            "seconds on its own keys: put cycles over up to %d keys, get reads keys it wrote\n"
            "first, cput puts one key conditionally on the version it last got. The reference\n"
            "is a loopback TCP echo of BYTES-byte frames with the same threads and duration;\n"
            "ratio = ops_per_s / ref_ops_per_s. --watch-keys K first registers K watches on\n"
            "keys nobody writes (PATH/watched/I) from one more client. Defaults: 1 thread, 100\n"
            "bytes, 3 seconds, no watches. --trace N traces every Nth call and prints, after\n"
            "the summary, one case=trace line per stage of a call (client send, to the member,\n"
            "multicast, delivered, durable here, frontier, answer, back to the client) with\n"
            "its percentiles; member and client must share a machine (one clock).\n",
            KEYS_PER_THREAD);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"members", required_argument, NULL, 'm'},
                                         {"pool", required_argument, NULL, 'p'},
                                         {"threads", required_argument, NULL, 't'},
                                         {"size", required_argument, NULL, 'z'},
                                         {"ops", required_argument, NULL, 'o'},
                                         {"seconds", required_argument, NULL, 's'},
                                         {"watch-keys", required_argument, NULL, 'w'},
                                         {"trace", required_argument, NULL, 'T'},
                                         {"cacert", required_argument, NULL, 'A'},
                                         {"cert", required_argument, NULL, 'C'},
                                         {"key", required_argument, NULL, 'K'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *op = "put";
    long size = (long)g_opt.size;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            g_opt.members = optarg;
            break;
        case 'p':
            g_opt.pool = optarg;
            break;
        case 't':
            g_opt.threads = atoi(optarg);
            break;
        case 'z':
            size = atol(optarg);
            break;
        case 'o':
            op = optarg;
            break;
        case 's':
            g_opt.seconds = atof(optarg);
            break;
        case 'w':
            g_opt.watch_keys = atol(optarg);
            break;
        case 'T':
            g_opt.trace = atol(optarg);
            break;
        case 'A':
            g_tls.ca_file = optarg;
            g_use_tls = true;
            break;
        case 'C':
            g_tls.cert_file = optarg;
            g_use_tls = true;
            break;
        case 'K':
            g_tls.key_file = optarg;
            g_use_tls = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    g_opt.op = -1;
    for (int i = 0; i < 3; i++) {
        if (strcmp(op, g_op_names[i]) == 0) {
            g_opt.op = i;
        }
    }
    if (optind != argc || g_opt.members == NULL || g_opt.pool == NULL || g_opt.pool[0] != '/' ||
        strlen(g_opt.pool) > 64 || g_opt.op < 0 || g_opt.threads < 1 ||
        g_opt.threads > MAX_THREADS || size < 1 || size > (long)MAX_SIZE_BYTES ||
        !(g_opt.seconds > 0 && g_opt.seconds <= MAX_SECONDS) || g_opt.watch_keys < 0 ||
        g_opt.watch_keys > MAX_WATCH_KEYS || g_opt.trace < 0) {
        fprintf(stderr,
                "kv-bench: bad arguments (need --members and --pool /PATH; ops put|get|cput, "
                "threads 1..%d, size 1..%u, seconds 0..%d, watch-keys 0..%d)\n",
                MAX_THREADS, MAX_SIZE_BYTES, MAX_SECONDS, MAX_WATCH_KEYS);
        usage(stderr);
        return 2;
    }
    g_opt.size = (size_t)size;
    snprintf(g_tag, sizeof(g_tag), "%ld-%ld", (long)getpid(), (long)time(NULL));
    g_value = malloc(g_opt.size);
    if (g_value == NULL) {
        fprintf(stderr, "kv-bench: no memory for a %zu-byte value\n", g_opt.size);
        return 1;
    }
    for (size_t i = 0; i < g_opt.size; i++) {
        g_value[i] = (unsigned char)('a' + i % 26);
    }

    int rc = 1;
    char err[ERR_BYTES];
    sq_client *watch_client = NULL;
    double watch_setup_s = 0;
    struct summary ref = {0}, kv = {0};
    const char *type = pool_type(err, sizeof(err));
    if (type == NULL) {
        fprintf(stderr, "kv-bench: %s\n", err);
        goto out;
    }
    if (run_echo(&ref) != 0) {
        fprintf(stderr, "kv-bench: the echo reference failed\n");
        goto out;
    }
    if (g_opt.watch_keys > 0 && open_watches(&watch_client, &watch_setup_s) != 0) {
        fprintf(stderr, "kv-bench: could not register %ld watches\n", g_opt.watch_keys);
        goto close_watches;
    }
    if (run_kv(&kv) != 0) {
        fprintf(stderr, "kv-bench: the key-value run failed to start\n");
        goto close_watches;
    }
    printf("case=kv pool=%s op=%s threads=%d size=%zu ops=%" PRIu64 " ops_per_s=%.0f "
           "p50_us=%" PRIu32 " p99_us=%" PRIu32 " errors=%" PRIu64 " ref_ops_per_s=%.0f "
           "ratio=%.4f watch_keys=%ld keys_per_thread=%" PRIu32 " seconds=%g ref_p50_us=%" PRIu32,
           type, g_op_names[g_opt.op], g_opt.threads, g_opt.size, kv.ops, kv.ops_per_s, kv.p50_us,
           kv.p99_us, kv.errors, ref.ops_per_s,
           ref.ops_per_s > 0 ? kv.ops_per_s / ref.ops_per_s : 0, g_opt.watch_keys,
           keys_per_thread(), g_opt.seconds, ref.p50_us);
    if (g_opt.watch_keys > 0) {
        /* Nobody writes the watched keys: any event is a bug worth seeing. */
        printf(" watch_setup_s=%.1f watch_events=%" PRIu64, watch_setup_s,
               (uint64_t)atomic_load(&g_events));
    }
    printf("\n");
    if (g_traces != NULL) {
        print_trace(type, g_traces);
        free_workers(g_traces);
        g_traces = NULL;
    }
    fflush(stdout);
    rc = kv.errors > 0 || atomic_load(&g_events) > 0 ? 1 : 0;
close_watches:
    /* Closing the client drops its watches with its connection: one pass on the member, where
     * unwatching them one at a time would be a call each. */
    sq_client_close(watch_client);
out:
    free(g_value);
    return rc;
}
