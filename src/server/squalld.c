/* squalld.c: the squall group member daemon. Runs one member from its config file; with the
 * workload options it also sends messages and reports a fingerprint of the delivered sequence,
 * which is how tests and benchmarks check that every member delivered the same order. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "squall.h"
#include "persist/plog.h"
#include "config.h"
#include "server/http.h"
#include "server/kvserver.h"

/* Exit statuses: documented in usage() and README.md. */
#define EXIT_DONE 0
#define EXIT_FAILED 1
#define EXIT_USAGE 2
#define EXIT_PARTITIONED 3
#define EXIT_REMOVED 4
/* After a finite run, members keep serving this long so that slower ones see our last updates. */
#define LINGER_MS 300
/* The end-of-workload marker of --finish: a message of exactly these bytes. */
static const char DONE_MARK[4] = {'D', 'O', 'N', 'E'};

static volatile sig_atomic_t g_stop;
static uint32_t g_id;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

/* SIGINT and SIGTERM ask for a clean leave; a closed socket is an error, not a signal. */
static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void log_line(int level, const char *line)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    fprintf(stderr, "%02d:%02d:%02d.%03ld squalld[%u] %s: %s\n", tm.tm_hour, tm.tm_min, tm.tm_sec,
            ts.tv_nsec / 1000000, g_id, level >= 0 && level < 4 ? names[level] : "?", line);
}

/* State shared by the delivery and view callbacks (loop thread) and main. */
struct run {
    uint64_t expect; /* stop after this many deliveries (0: no count) */
    bool finish;     /* stop once every member of the view delivered its DONE */
    bool print_each;
    uint64_t delivered;
    uint64_t bytes;
    uint64_t hash; /* fingerprint of the delivered sequence */
    uint64_t first_ns, last_ns;
    uint32_t *latency_us; /* per delivery position, when recording */
    uint64_t latency_cap;
    uint64_t done_from; /* member ids whose DONE was delivered (ids < 64) */
    uint64_t view_mask; /* member ids of the current view */
    uint32_t view_id;
    uint32_t sg;                /* the subgroup this run sends in and fingerprints */
    uint64_t replayed;          /* updates replayed from the log at a restart */
    _Atomic uint64_t count;     /* deliveries in that subgroup, for main to read */
    _Atomic uint64_t persisted; /* 1 + the highest version persisted at every member (0: none) */
    /* --persist-latency-file: my own messages waiting for the frontier, and their latencies */
    uint64_t *pend_version, *pend_sent_ns;
    uint64_t pend_head, pend_tail, pend_cap;
    uint32_t *plat_us;
    uint64_t nplat;
    uint64_t persisted_printed_ns;
    _Atomic bool my_done_delivered;
    _Atomic bool resend_done; /* a view change dropped my DONE: main sends it again */
    _Atomic bool finished;    /* --finish: the result is frozen */
};

/* --send fills messages above this in place (sq_member_reserve), as a zero-copy user would. */
#define ZERO_COPY_BYTES 65536

/* Folds a payload into the delivery hash with XXH3, which keeps up with large messages (a
 * word-serial FNV fold cost more CPU than the multicast). */
static uint64_t fold(uint64_t h, const void *data, size_t len)
{
    return XXH3_64bits_withSeed(data, len, h);
}

static void check_finished(struct run *r)
{
    if (r->finish && !atomic_load(&r->finished) && (r->view_mask & ~r->done_from) == 0) {
        atomic_store(&r->finished, true);
    }
}

static void on_deliver(void *arg, const sq_message *msg)
{
    struct run *r = arg;
    if (atomic_load(&r->finished) || msg->subgroup != r->sg) {
        return; /* frozen at the point every member agrees on, or another subgroup's */
    }
    if (msg->flags & SQ_MSG_REPLAYED) {
        /* A restart rebuilds the fingerprint from the log: it counts, the DONE marks of the
         * earlier run do not. */
        uint64_t h = r->hash;
        h = (h ^ msg->sender_id) * 0x100000001b3ull;
        h = (h ^ msg->version) * 0x100000001b3ull;
        h = (h ^ msg->size) * 0x100000001b3ull;
        r->hash = fold(h, msg->data, msg->size);
        r->replayed++;
        return;
    }
    uint64_t now = mono_ns();
    if (r->first_ns == 0) {
        r->first_ns = now; /* this process's first delivery (a joiner starts from a state) */
    }
    r->last_ns = now;
    uint64_t h = r->hash;
    h = (h ^ msg->sender_id) * 0x100000001b3ull;
    h = (h ^ msg->index) * 0x100000001b3ull;
    h = (h ^ msg->version) * 0x100000001b3ull;
    h = (h ^ msg->size) * 0x100000001b3ull;
    r->hash = fold(h, msg->data, msg->size);
    if (r->latency_us != NULL && r->delivered < r->latency_cap && msg->size >= 8) {
        uint64_t sent;
        memcpy(&sent, msg->data, 8);
        uint64_t us = now > sent ? (now - sent) / 1000u : 0;
        r->latency_us[r->delivered] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
    }
    if (r->print_each) {
        printf("deliver sender=%u index=%" PRIu64 " version=%" PRIu64 " size=%zu\n", msg->sender_id,
               msg->index, msg->version, msg->size);
    }
    if (r->pend_cap > 0 && msg->sender_id == g_id && msg->size >= 8 && r->pend_tail < r->pend_cap) {
        uint64_t sent;
        memcpy(&sent, msg->data, 8);
        r->pend_version[r->pend_tail] = msg->version;
        r->pend_sent_ns[r->pend_tail] = sent;
        r->pend_tail++;
    }
    r->delivered++;
    atomic_store(&r->count, r->delivered);
    r->bytes += msg->size;
    if (r->finish && msg->size == sizeof(DONE_MARK) && memcmp(msg->data, DONE_MARK, 4) == 0 &&
        msg->sender_id < 64) {
        r->done_from |= 1ull << msg->sender_id;
        if (msg->sender_id == g_id) {
            atomic_store(&r->my_done_delivered, true);
        }
        check_finished(r);
    }
}

static void on_view(void *arg, const sq_view *v)
{
    struct run *r = arg;
    if (atomic_load(&r->finished)) {
        return; /* the run is over: members leaving now are its end, not part of it */
    }
    r->view_id = v->view_id;
    r->view_mask = 0;
    char list[256] = "";
    size_t len = 0;
    uint32_t mine = v->my_shard[r->sg];
    for (uint32_t i = 0; i < v->nmembers; i++) {
        /* --finish waits for the DONE of every member of my shard */
        if (v->member_ids[i] < 64 && v->shard_of[r->sg * v->nmembers + i] == mine) {
            r->view_mask |= 1ull << v->member_ids[i];
        }
        if (len < sizeof(list) - 16) {
            len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%u", i ? "," : "",
                                    v->member_ids[i]);
        }
    }
    char shard[32];
    if (mine == SQ_NO_SHARD) {
        snprintf(shard, sizeof(shard), "none");
    } else {
        snprintf(shard, sizeof(shard), "%u", mine);
    }
    printf("view=%u members=%s my_rank=%u shard=%s adequate=%d installed_at_ms=%" PRIu64
           " dropped=%" PRIu64 "\n",
           v->view_id, list, v->my_rank, shard, v->adequate, wall_ms(), v->dropped);
    if (v->dropped > 0 && r->finish && !atomic_load(&r->my_done_delivered)) {
        atomic_store(&r->resend_done, true);
    }
    check_finished(r);
}

/* Persistent subgroups: prints the frontier as it advances (at most every 10 ms, and always
 * before a run's result), so a test that kills the member knows what it was told. */
static void on_persisted(void *arg, uint32_t subgroup, uint32_t shard, uint64_t version)
{
    struct run *r = arg;
    (void)shard;
    if (subgroup != r->sg) {
        return;
    }
    atomic_store(&r->persisted, version + 1);
    uint64_t now = mono_ns();
    while (r->pend_head < r->pend_tail && r->pend_version[r->pend_head] <= version) {
        uint64_t sent = r->pend_sent_ns[r->pend_head++];
        uint64_t us = now > sent ? (now - sent) / 1000u : 0;
        r->plat_us[r->nplat++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
    }
    if (now - r->persisted_printed_ns >= 10000000u) {
        r->persisted_printed_ns = now;
        printf("persisted version=0x%" PRIx64 "\n", version);
    }
}

/* --dump-log: recovers this member's log of the subgroup and prints what it holds. */
static int dump_log(sq_member *m, uint32_t sg, const char *name, uint64_t upto)
{
    int n = sq_member_open_logs(m);
    if (n < 0) {
        fprintf(stderr, "squalld: %s\n", sq_member_errmsg(m));
        return EXIT_FAILED;
    }
    /* A record of the largest size the log takes; pages are touched only as records need. */
    const size_t cap = SQ_PLOG_MAX_RECORD;
    uint8_t *buf = malloc(cap);
    if (buf == NULL) {
        fprintf(stderr, "squalld: out of memory for a %zu-byte record buffer\n", cap);
        return EXIT_FAILED;
    }
    sq_record rec;
    uint64_t records = 0, upto_records = 0, first = 0, last = 0;
    uint64_t hash = 0xcbf29ce484222325ull;
    bool has_upto = false;
    int rc = sq_member_log_get(m, sg, SQ_LOG_FIRST, 0, &rec, buf, cap);
    while (rc == 0) {
        if (records == 0) {
            first = rec.version;
        }
        last = rec.version;
        records++;
        if (rec.version <= upto) {
            upto_records++;
            has_upto |= rec.version == upto;
            uint64_t h = hash;
            h = (h ^ rec.version) * 0x100000001b3ull;
            h = (h ^ rec.timestamp) * 0x100000001b3ull;
            h = (h ^ rec.sender_id) * 0x100000001b3ull;
            hash = fold(h, buf, rec.size);
        }
        rc = sq_member_log_get(m, sg, SQ_LOG_AFTER, rec.version, &rec, buf, cap);
    }
    free(buf);
    if (rc != SQ_ENOTFOUND && rc != SQ_ENOTSUP) {
        fprintf(stderr, "squalld: reading the log: %s\n", sq_strerror(rc));
        return EXIT_FAILED;
    }
    printf("log member=%u subgroup=%s records=%" PRIu64 " first=0x%" PRIx64 " last=0x%" PRIx64
           " upto_records=%" PRIu64 " upto_hash=0x%016" PRIx64 " has_upto=%d\n",
           g_id, name, records, first, last, upto_records, hash, has_upto ? 1 : 0);
    return EXIT_DONE;
}

/* The application state a joiner receives: everything the fingerprint depends on, so a member
 * that rejoins ends with the same hash as the others. Little-endian u64s. */
struct saved {
    uint64_t delivered, bytes, hash, done_from;
};

static int save_state(void *arg, uint32_t subgroup, uint32_t shard, void **buf, size_t *size)
{
    struct run *r = arg;
    (void)shard;
    if (subgroup != r->sg) {
        *buf = NULL;
        *size = 0;
        return 0;
    }
    struct saved *s = malloc(sizeof(*s));
    if (s == NULL) {
        return -1;
    }
    *s = (struct saved){r->delivered, r->bytes, r->hash, r->done_from};
    *buf = s;
    *size = sizeof(*s);
    return 0;
}

static void load_state(void *arg, uint32_t subgroup, uint32_t shard, const void *buf, size_t size)
{
    struct run *r = arg;
    (void)shard;
    if (subgroup != r->sg) {
        return;
    }
    if (size != sizeof(struct saved)) {
        fprintf(stderr, "squalld: ignoring a state of %zu bytes (expected %zu)\n", size,
                sizeof(struct saved));
        return;
    }
    struct saved s;
    memcpy(&s, buf, sizeof(s));
    r->delivered = s.delivered;
    r->bytes = s.bytes;
    r->hash = s.hash;
    r->done_from = s.done_from;
}

/* Answers a query with this member's fingerprint, as in its result line. */
static int on_query(void *arg, uint32_t from_id, const void *req, size_t req_size, void *reply,
                    size_t reply_cap, size_t *reply_len)
{
    struct run *r = arg;
    (void)from_id;
    (void)req;
    (void)req_size;
    int n = snprintf(reply, reply_cap, "delivered=%" PRIu64 " hash=0x%016" PRIx64 " view=%u",
                     r->delivered, r->hash, r->view_id);
    *reply_len = n > 0 ? (size_t)n : 0;
    return 0;
}

/* Answers an ordered call with the fingerprint at the call's place in the total order: every
 * member answers the same. */
static int on_call(void *arg, const sq_message *call, void *reply, size_t reply_cap,
                   size_t *reply_len)
{
    (void)call;
    return on_query(arg, 0, NULL, 0, reply, reply_cap, reply_len);
}

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: squalld --config FILE [options]\n"
        "       squalld --gen-key FILE   write a new group key to FILE (mode 0600, never\n"
        "                                over an existing file), for [group] key_file\n"
        "  Runs one squall group member as described by FILE (see README.md). When the\n"
        "  member's [member.ID] has a client_port, it serves the key-value store to clients\n"
        "  (the squall tool, include/squall/client.h) there and prints \"kv ready\" once it\n"
        "  does; --send, --expect, --finish, --print, --latency-file, --persist-latency-file,\n"
        "  --query and --call-at are then refused (--join and --dump-log still work).\n"
        "workload options (tests, benchmarks, demos):\n"
        "  --send N          send N messages from this member (above 64 KiB, filled in\n"
        "                    place with sq_member_reserve: zero-copy)\n"
        "  --size BYTES      payload size of each message (default 1024; >= 8 carries a\n"
        "                    send timestamp for latency)\n"
        "  --rate R          send at most R messages per second (default: as fast as possible)\n"
        "  --expect M        exit once M messages (from all senders) are delivered\n"
        "  --finish          after sending, multicast DONE; exit once every member of the\n"
        "                    current view has delivered its DONE (survives view changes)\n"
        "  --latency-file F  write each delivery's send-to-delivery latency (u32 microseconds,\n"
        "                    little-endian, in delivery order) to F\n"
        "  --print           print every delivered message\n"
        "  --persist-latency-file F  persistent subgroups: write the latency from sending\n"
        "                    each of this member's messages to its being persisted at every\n"
        "                    member (u32 microseconds, little-endian) to F\n"
        "  --subgroup NAME   send in, count and fingerprint this subgroup (default: the\n"
        "                    first); results then cover this member's shard of it\n"
        "  --dump-log        do not join: recover this member's log of the subgroup (a\n"
        "                    persistent one) and print records=N first=... last=...\n"
        "  --upto V          with --dump-log: also hash the records up to version V\n"
        "  --join            join a running group (a restarted member) instead of forming\n"
        "                    the first view; it receives the others' state\n"
        "  --query ID        at the end of the run, ask member ID for its fingerprint\n"
        "                    (a point-to-point query) and print it\n"
        "  --call-at K       after sending K messages, make an ordered call: every member\n"
        "                    answers with its fingerprint at that place in the order\n"
        "  --timeout S       give up after S seconds (default 600 with --expect or --finish)\n"
        "With --expect or --finish it prints one line: member=ID delivered=N hash=0x... ...\n"
        "It prints view=V members=... on every view installed.\n"
        "SIGINT or SIGTERM makes the member leave the group cleanly.\n"
        "A key-value member that the group removed (it stalled, or was cut off) or that\n"
        "stopped on the minority side of a partition joins again by itself, with growing\n"
        "pauses, and answers its clients SQ_ENOQUORUM meanwhile; [group] rejoin = false\n"
        "makes it exit instead (3 or 4), for those who supervise it themselves.\n"
        "exit status: 0 done, 1 the member failed, 2 bad usage or configuration,\n"
        "             3 on the minority side of a partition, 4 removed from the group\n");
}

static bool parse_count(const char *s, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-') {
        return false;
    }
    *out = v;
    return true;
}

static int exit_status_of(sq_member *m)
{
    switch (sq_member_failure(m)) {
    case SQ_EPARTITIONED:
        return EXIT_PARTITIONED;
    case SQ_EREMOVED:
        return EXIT_REMOVED;
    case SQ_ELEFT:
        return EXIT_DONE;
    default:
        return EXIT_FAILED;
    }
}

/* Fills one workload message: a timestamp, then a pattern unique to (member, message). */
static void fill(void *buf, uint64_t size, uint64_t i)
{
    unsigned char *p = buf;
    uint64_t *w = buf;
    uint64_t seed = (i << 20) ^ ((uint64_t)g_id << 48);
    for (uint64_t k = 1; k < size / 8; k++) {
        w[k] = seed ^ k;
    }
    for (uint64_t k = (size / 8) * 8; k < size; k++) {
        p[k] = (unsigned char)(seed >> (k & 7));
    }
    if (size >= 8) {
        uint64_t t = mono_ns();
        memcpy(p, &t, 8);
    } else {
        memset(p, (int)(i & 0xff), size);
    }
}

/* Starts (or joins) the group; on failure says why, closes the member and returns the exit
 * status. */
static int start_or_join(sq_member *m, bool join)
{
    int rc = join ? sq_member_join(m, -1) : sq_member_start(m, -1);
    if (rc == 0) {
        return 0;
    }
    fprintf(stderr, "squalld: member %u cannot %s: %s\n", g_id, join ? "join" : "start",
            sq_member_errmsg(m));
    sq_member_close(m);
    return rc == SQ_ECONFIG ? EXIT_USAGE : EXIT_FAILED;
}

/* Whether a member that failed this way may join the group again as a new incarnation: it was
 * removed or stopped on a minority side, or could not get back in yet. A broken disk, a bad
 * configuration or a clean leave end the process instead, for an operator to see. */
static bool may_rejoin(int failure)
{
    switch (failure) {
    case SQ_EREMOVED:
    case SQ_EPARTITIONED:
    case SQ_ETIMEDOUT:
    case SQ_EPEER:
    case SQ_ETRANSPORT:
    case SQ_ESTATE:
    case SQ_ECLOSED:
        return true;
    default:
        return false;
    }
}

/* Sleeps up to `ms`, in short steps so that SIGINT/SIGTERM end the wait. */
static void sleep_unless_stopped(uint32_t ms)
{
    for (uint32_t t = 0; t < ms && !g_stop; t += 20) {
        usleep(20000);
    }
}

/* Waits until the service holds the pool table and the state of its shards: "ready" (a member
 * that joined receives them just after the join; requests before that are answered SQ_ESTATE,
 * which clients retry). */
static void wait_kv_ready(struct sq_kv_server *kv, sq_member *m)
{
    for (int i = 0; i < 3000 && !sq__kv_server_ready(kv) && !g_stop; i++) {
        usleep(10000);
    }
    printf("kv ready member=%u members=%u\n", g_id, sq_member_count(m));
}

/* After the member failed in a way it may come back from: the service answers SQ_ENOQUORUM
 * meanwhile, and new incarnations try to join (or restart the group with a majority of its last
 * view) with growing pauses, until one gets in. Returns the new member, or NULL when stopped by
 * a signal or by a failure that ends the process (*status says which). */
static sq_member *rejoin(struct sq_kv_server *kv, sq_member *m, const char *config, int *status)
{
    int failure = sq_member_failure(m);
    char why[200];
    snprintf(why, sizeof(why),
             "member %u is not in the group now (%s); it is joining again, "
             "another member can answer",
             g_id, sq_strerror(failure));
    sq__kv_server_detach(kv, why);
    sq_member_close(m);
    uint32_t pause_ms = 500;
    for (uint32_t attempt = 1; !g_stop; attempt++) {
        /* Spread the members that lost the group together, so that they do not knock at once. */
        uint32_t wait_ms = pause_ms / 2 + (uint32_t)(rand() % (int)(pause_ms / 2 + 1));
        fprintf(stderr, "squalld: member %u rejoins the group in %u ms (attempt %u)\n", g_id,
                wait_ms, attempt);
        sleep_unless_stopped(wait_ms);
        pause_ms = pause_ms * 2 > 10000 ? 10000 : pause_ms * 2;
        if (g_stop) {
            break;
        }
        char err[512] = "";
        m = NULL;
        int rc = sq_member_open(&m, config, err, sizeof(err));
        if (rc != 0) {
            fprintf(stderr, "squalld: %s\n", err[0] ? err : sq_strerror(rc));
            *status = EXIT_USAGE;
            return NULL;
        }
        sq__kv_server_attach(kv, m);
        /* Short attempts first, longer ones later (up to connect_timeout_ms): an attempt that
         * reached a member just as it stopped too (told "the group runs", it waits to be
         * added by a member that can no longer add anyone) should not hold the rejoin for the
         * whole timeout, while a large state transfer still gets its time. */
        uint64_t want_ms = 10000ull * attempt;
        int limit_ms = sq__kv_server_connect_timeout_ms(kv);
        rc = sq_member_start(m, want_ms < (uint64_t)limit_ms ? (int)want_ms : limit_ms);
        if (rc == 0) {
            fprintf(stderr,
                    "squalld: member %u rejoined the group as a new incarnation "
                    "(attempt %u, view %u)\n",
                    g_id, attempt, sq_member_view_id(m));
            return m;
        }
        fprintf(stderr, "squalld: member %u: rejoin attempt %u failed: %s\n", g_id, attempt,
                sq_member_errmsg(m));
        bool again = may_rejoin(rc) || may_rejoin(sq_member_failure(m));
        sq__kv_server_detach(kv, why);
        sq_member_close(m);
        if (!again) {
            *status = rc == SQ_ECONFIG ? EXIT_USAGE : EXIT_FAILED;
            return NULL;
        }
    }
    *status = EXIT_DONE;
    return NULL;
}

/* Key-value mode: the member serves clients on its client port until SIGINT or SIGTERM (a clean
 * leave) or until it fails. Prints "kv ready member=ID members=N" each time it serves (again).
 * A member the group removed, or one on a minority side, joins again by itself ([group] rejoin,
 * on by default); the service keeps its client port open meanwhile. */
static int serve_kv(sq_member *m, const char *config, bool join)
{
    char err[512] = "";
    struct sq_kv_server *kv = NULL;
    int rc = sq__kv_server_create(&kv, m, config, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "squalld: %s\n", err[0] ? err : sq_strerror(rc));
        sq_member_close(m);
        return EXIT_USAGE;
    }
    install_signals();
    srand((unsigned)(getpid() ^ (pid_t)mono_ns()));
    rc = start_or_join(m, join);
    if (rc != 0) {
        sq__kv_server_destroy(kv);
        return rc;
    }
    rc = sq__kv_server_start(kv, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "squalld: %s\n", err);
        (void)sq_member_leave(m, 5000);
        sq_member_close(m);
        sq__kv_server_destroy(kv);
        return EXIT_FAILED;
    }
    /* HTTP ([member.ID] http_port) answers through the client port, which listens now. */
    struct sq_http *http = NULL;
    struct sq_config *hcfg = malloc(sizeof(*hcfg));
    rc = hcfg == NULL ? SQ_ENOMEM : sq__config_load(hcfg, config, err, sizeof(err));
    int hr = rc == 0 ? sq__config_rank_of(hcfg, hcfg->self_id) : -1;
    if (rc == 0 && hr >= 0 && hcfg->members[hr].http_port != 0) {
        rc = sq__http_start(&http, hcfg, kv, err, sizeof(err));
        if (rc == 0) {
            fprintf(stderr,
                    "squalld: member %u: HTTP on http%s://%s:%u/ (REST under /v1, /metrics)\n",
                    g_id, hcfg->tls_cert_file[0] != '\0' ? "s" : "", hcfg->members[hr].host,
                    hcfg->members[hr].http_port);
        }
    }
    free(hcfg);
    if (rc != 0) {
        fprintf(stderr, "squalld: %s\n", err[0] ? err : sq_strerror(rc));
        (void)sq_member_leave(m, 5000);
        sq__kv_server_stop(kv);
        sq_member_close(m);
        sq__kv_server_destroy(kv);
        return EXIT_FAILED;
    }
    wait_kv_ready(kv, m);
    int status = EXIT_DONE;
    while (!g_stop) {
        if (sq_member_failure(m) != 0) {
            fprintf(stderr, "squalld: %s\n", sq_member_errmsg(m));
            if (!sq__kv_server_rejoins(kv) || !may_rejoin(sq_member_failure(m))) {
                status = exit_status_of(m);
                break;
            }
            m = rejoin(kv, m, config, &status);
            if (m == NULL) {
                break;
            }
            wait_kv_ready(kv, m);
            continue;
        }
        usleep(100000);
    }
    sq__http_stop(http);
    sq__kv_server_stop(kv);
    if (m != NULL && g_stop && sq_member_failure(m) == 0) {
        rc = sq_member_leave(m, 5000);
        if (rc != 0) {
            fprintf(stderr, "squalld: member %u: clean leave: %s\n", g_id, sq_strerror(rc));
        }
    }
    if (m != NULL) {
        sq_member_close(m);
    }
    sq__kv_server_destroy(kv);
    return status;
}

int main(int argc, char **argv)
{
    const char *config = NULL, *latency_file = NULL, *subgroup = NULL;
    const char *persist_latency_file = NULL;
    uint64_t send = 0, size = 1024, expect = 0, timeout_s = 600, rate = 0, query = UINT64_MAX;
    uint64_t call_at = UINT64_MAX;
    bool print_each = false, finish = false, join = false, dump = false;
    uint64_t upto = UINT64_MAX;
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"send", required_argument, NULL, 's'},
                                         {"size", required_argument, NULL, 'z'},
                                         {"expect", required_argument, NULL, 'e'},
                                         {"latency-file", required_argument, NULL, 'l'},
                                         {"print", no_argument, NULL, 'p'},
                                         {"timeout", required_argument, NULL, 't'},
                                         {"rate", required_argument, NULL, 'r'},
                                         {"finish", no_argument, NULL, 'f'},
                                         {"help", no_argument, NULL, 'h'},
                                         {"join", no_argument, NULL, 'j'},
                                         {"query", required_argument, NULL, 'q'},
                                         {"call-at", required_argument, NULL, 'C'},
                                         {"subgroup", required_argument, NULL, 'g'},
                                         {"dump-log", no_argument, NULL, 'D'},
                                         {"upto", required_argument, NULL, 'u'},
                                         {"persist-latency-file", required_argument, NULL, 'P'},
                                         {"gen-key", required_argument, NULL, 'K'},
                                         {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        bool ok = true;
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 's':
            ok = parse_count(optarg, &send);
            break;
        case 'z':
            ok = parse_count(optarg, &size);
            break;
        case 'e':
            ok = parse_count(optarg, &expect);
            break;
        case 'l':
            latency_file = optarg;
            break;
        case 'p':
            print_each = true;
            break;
        case 'f':
            finish = true;
            break;
        case 'j':
            join = true;
            break;
        case 'g':
            subgroup = optarg;
            break;
        case 'D':
            dump = true;
            break;
        case 'P':
            persist_latency_file = optarg;
            break;
        case 'u': {
            char *end = NULL;
            errno = 0;
            upto = strtoull(optarg, &end, 0);
            ok = errno == 0 && end != optarg && *end == '\0';
            break;
        }
        case 'q':
            ok = parse_count(optarg, &query) && query <= UINT32_MAX;
            break;
        case 'C':
            ok = parse_count(optarg, &call_at);
            break;
        case 'r':
            ok = parse_count(optarg, &rate);
            break;
        case 't':
            ok = parse_count(optarg, &timeout_s) && timeout_s > 0;
            break;
        case 'K': {
            char why[600];
            if (sq__key_generate(optarg, why, sizeof(why)) != 0) {
                fprintf(stderr, "squalld: %s\n", why);
                return EXIT_FAILED;
            }
            printf("wrote a new group key to %s: name it in every member's [group] key_file "
                   "(and keep it secret: whoever holds it can join the group)\n",
                   optarg);
            return 0;
        }
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
        if (!ok) {
            fprintf(stderr, "squalld: bad value '%s' for --%s\n", optarg,
                    c == 's'   ? "send"
                    : c == 'z' ? "size"
                    : c == 'e' ? "expect"
                    : c == 'r' ? "rate"
                    : c == 'q' ? "query"
                    : c == 'C' ? "call-at"
                    : c == 'u' ? "upto"
                               : "timeout");
            return EXIT_USAGE;
        }
    }
    if (config == NULL || optind != argc) {
        fprintf(stderr, "squalld: %s\n",
                config == NULL ? "--config FILE is required" : "unexpected argument");
        usage(stderr);
        return EXIT_USAGE;
    }
    if (finish && expect > 0) {
        fprintf(stderr, "squalld: --finish and --expect are two ways to end a run: pick one\n");
        return EXIT_USAGE;
    }
    if (finish && size == sizeof(DONE_MARK)) {
        fprintf(stderr, "squalld: with --finish, --size 4 is reserved for the DONE marker\n");
        return EXIT_USAGE;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    sq_set_log(log_line, SQ_LOG_LEVEL_INFO);

    char err[512] = "";
    sq_member *m = NULL;
    int rc = sq_member_open(&m, config, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "squalld: %s\n", err[0] ? err : sq_strerror(rc));
        return EXIT_USAGE;
    }
    g_id = sq_member_id(m);
    struct run run = {.expect = expect,
                      .finish = finish,
                      .hash = 0xcbf29ce484222325ull,
                      .print_each = print_each};
    if (latency_file != NULL && expect > 0) {
        run.latency_cap = expect;
        run.latency_us = calloc(expect, sizeof(uint32_t));
        if (run.latency_us == NULL) {
            fprintf(stderr, "squalld: no memory for %" PRIu64 " latency samples\n", expect);
            return EXIT_FAILED;
        }
    }
    if (subgroup != NULL) {
        int sg = sq_member_subgroup(m, subgroup);
        if (sg < 0) {
            fprintf(stderr, "squalld: --subgroup %s: no [subgroup.%s] in %s\n", subgroup, subgroup,
                    config);
            sq_member_close(m);
            return EXIT_USAGE;
        }
        run.sg = (uint32_t)sg;
    }
    if (dump) {
        char index[16];
        snprintf(index, sizeof(index), "%u", run.sg);
        int st = dump_log(m, run.sg, subgroup != NULL ? subgroup : index, upto);
        sq_member_close(m);
        return st;
    }
    if (sq__kv_config_serves(config)) {
        if (send > 0 || expect > 0 || finish || latency_file != NULL || call_at != UINT64_MAX ||
            query != UINT64_MAX || persist_latency_file != NULL || print_each) {
            fprintf(stderr, "squalld: this member serves key-value clients (client_port is set): "
                            "the workload options are for plain groups\n");
            sq_member_close(m);
            return EXIT_USAGE;
        }
        int st = serve_kv(m, config, join);
        return st;
    }
    if (persist_latency_file != NULL && send > 0) {
        run.pend_cap = send;
        run.pend_version = calloc(send, sizeof(uint64_t));
        run.pend_sent_ns = calloc(send, sizeof(uint64_t));
        run.plat_us = calloc(send, sizeof(uint32_t));
        if (run.pend_version == NULL || run.pend_sent_ns == NULL || run.plat_us == NULL) {
            fprintf(stderr, "squalld: no memory for %" PRIu64 " latency samples\n", send);
            return EXIT_FAILED;
        }
    }
    sq_member_on_persisted(m, on_persisted, &run);
    sq_member_on_deliver(m, on_deliver, &run);
    sq_member_on_view(m, on_view, &run);
    sq_member_on_state(m, save_state, load_state, &run);
    sq_member_on_query(m, on_query, &run);
    sq_member_on_call(m, on_call, &run);
    install_signals();

    rc = start_or_join(m, join);
    if (rc != 0) {
        return rc;
    }
    uint64_t start_ns = mono_ns();
    bool bounded = expect > 0 || finish;
    uint64_t deadline_ns = bounded ? start_ns + timeout_s * 1000000000ull : UINT64_MAX;
    int status = EXIT_DONE;

    /* The workload: copying sends (they start over by themselves across view changes). */
    void *buf = size > 0 ? malloc(size) : NULL;
    for (uint64_t i = 0; i < send && !g_stop; i++) {
        if (i == call_at) {
            static sq_reply replies[64];
            uint32_t n = 0;
            rc = sq_member_ordered_call_in(m, run.sg, "fingerprint", 11, replies, 64, &n, 10000);
            printf("call at=%" PRIu64 " status=%s replies=%u", i, sq_err_name(rc), n);
            for (uint32_t k = 0; k < n; k++) {
                printf(" [%u:%d:%.*s]", replies[k].member_id, replies[k].status,
                       (int)replies[k].size, (const char *)replies[k].data);
            }
            printf("\n");
        }
        if (rate > 0) {
            uint64_t due = start_ns + i * 1000000000ull / rate;
            uint64_t now = mono_ns();
            if (due > now) {
                struct timespec ts = {(time_t)((due - now) / 1000000000u),
                                      (long)((due - now) % 1000000000u)};
                nanosleep(&ts, NULL);
            }
        }
        if (size > ZERO_COPY_BYTES) {
            /* Large messages are filled in place, as a zero-copy user would. */
            void *slot = NULL;
            do {
                rc = sq_member_reserve_in(m, run.sg, size, &slot, 0);
                if (rc == 0) {
                    fill(slot, size, i);
                    rc = sq_member_commit_in(m, run.sg);
                }
            } while (rc == SQ_EVIEWCHANGE);
        } else {
            fill(buf, size, i);
            rc = sq_member_send_in(m, run.sg, buf, size, 0);
        }
        if (rc != 0) {
            fprintf(stderr, "squalld: member %u: send %" PRIu64 " failed: %s (%s)\n", g_id, i,
                    sq_strerror(rc), sq_member_errmsg(m));
            status = exit_status_of(m);
            break;
        }
    }
    free(buf);
    if (finish && status == EXIT_DONE && !g_stop) {
        rc = sq_member_send_in(m, run.sg, DONE_MARK, sizeof(DONE_MARK), 0);
        if (rc != 0) {
            status = exit_status_of(m);
        }
    }

    /* Wait for the end of the run, a signal, or a failure. */
    uint64_t last_report = mono_ns();
    while (status == EXIT_DONE && !g_stop) {
        if ((expect > 0 && atomic_load(&run.count) >= expect) || atomic_load(&run.finished)) {
            break;
        }
        if (mono_ns() > deadline_ns) {
            fprintf(stderr, "squalld: member %u: timed out with %" PRIu64 " messages delivered\n",
                    g_id, atomic_load(&run.count));
            status = EXIT_FAILED;
            break;
        }
        if (sq_member_failure(m) != 0) {
            fprintf(stderr, "squalld: %s\n", sq_member_errmsg(m));
            status = exit_status_of(m);
            break;
        }
        if (atomic_exchange(&run.resend_done, false)) {
            (void)sq_member_send_in(m, run.sg, DONE_MARK, sizeof(DONE_MARK), 0);
        }
        usleep(bounded ? 1000 : 100000);
        if (!bounded && mono_ns() - last_report > 10ull * 1000000000ull) {
            last_report = mono_ns();
            fprintf(stderr, "squalld[%u]: %" PRIu64 " messages delivered\n", g_id,
                    atomic_load(&run.count));
        }
    }
    if (status == EXIT_DONE && bounded && !g_stop) {
        /* Everyone has our last counters before we go: wait for all to catch up, then linger. */
        if (expect > 0) {
            rc = sq_member_quiesce(m, 30000);
            if (rc != 0) {
                fprintf(stderr, "squalld: member %u: others did not catch up: %s\n", g_id,
                        sq_strerror(rc));
            }
        }
        double secs = run.last_ns > run.first_ns ? (double)(run.last_ns - run.first_ns) / 1e9 : 0;
        /* The callbacks stopped touching `run` (finished, or the expected count was reached). */
        printf("member=%u delivered=%" PRIu64 " hash=0x%016" PRIx64 " view=%u elapsed_s=%.3f "
               "msgs_per_s=%.0f mb_per_s=%.1f",
               g_id, run.delivered, run.hash, run.view_id, secs,
               secs > 0 ? (double)run.delivered / secs : 0,
               secs > 0 ? (double)run.bytes / secs / 1e6 : 0);
        uint64_t p = atomic_load(&run.persisted);
        if (p > 0) {
            printf(" persisted=0x%" PRIx64, p - 1);
        }
        printf(" large_bytes_sent=%" PRIu64 "\n", sq_member_large_bytes_sent(m));
        if (latency_file != NULL) {
            FILE *f = fopen(latency_file, "wb");
            uint64_t nlat = run.delivered < run.latency_cap ? run.delivered : run.latency_cap;
            if (f == NULL || fwrite(run.latency_us, sizeof(uint32_t), nlat, f) != nlat) {
                fprintf(stderr, "squalld: cannot write %s: %s\n", latency_file, strerror(errno));
                status = EXIT_FAILED;
            }
            if (f != NULL) {
                fclose(f);
            }
        }
        if (persist_latency_file != NULL) {
            /* Give the frontier a moment to cover my last messages. */
            for (int k = 0; k < 200 && run.pend_head < run.pend_tail; k++) {
                usleep(10000);
            }
            FILE *f = fopen(persist_latency_file, "wb");
            uint64_t n = run.nplat;
            if (f == NULL || fwrite(run.plat_us, sizeof(uint32_t), n, f) != n) {
                fprintf(stderr, "squalld: cannot write %s: %s\n", persist_latency_file,
                        strerror(errno));
                status = EXIT_FAILED;
            }
            if (f != NULL) {
                fclose(f);
            }
        }
        if (query != UINT64_MAX) {
            char answer[SQ_QUERY_MAX_BYTES + 1];
            size_t len = 0;
            rc = sq_member_query(m, (uint32_t)query, "fingerprint", 11, answer, SQ_QUERY_MAX_BYTES,
                                 &len, 5000);
            answer[rc == 0 ? (len < SQ_QUERY_MAX_BYTES ? len : SQ_QUERY_MAX_BYTES) : 0] = '\0';
            printf("query member=%" PRIu64 " status=%s reply=%s\n", query, sq_err_name(rc), answer);
            if (rc != 0) {
                status = EXIT_FAILED;
            }
        }
        /* Peers leaving from here on is the expected end of the run, not news. */
        sq_set_log(log_line, -1);
        usleep(LINGER_MS * 1000);
    }
    if (g_stop && sq_member_failure(m) == 0) {
        /* SIGINT/SIGTERM: leave cleanly, so the others go on at once instead of waiting for a
         * heartbeat timeout. */
        rc = sq_member_leave(m, 5000);
        if (rc != 0) {
            fprintf(stderr, "squalld: member %u: clean leave: %s\n", g_id, sq_strerror(rc));
        }
    }
    sq_member_close(m);
    free(run.latency_us);
    free(run.pend_version);
    free(run.pend_sent_ns);
    free(run.plat_us);
    return status;
}
