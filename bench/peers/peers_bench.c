/* peers_bench.c: one closed-loop load against squall, etcd, ZooKeeper or Redis (3 members each on
 * 127.0.0.1, started by bench/peers/run.sh): N client threads, each with its own connection kept
 * for the whole case, put or get random keys out of 1000 with S-byte values for T seconds after a
 * warm-up. Prints one line of key=value pairs (ops_per_s, p50/p90/p99 in microseconds, errors).
 * Never part of `make test`: run `make bench-peers`. */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zookeeper/zookeeper.h>

#include "squall.h"
#include "squall/client.h"

#define NKEYS 1000
#define MAX_CLIENTS 256
#define MAX_MEMBERS 7
#define MAX_SIZE_BYTES (1u << 20) /* ZooKeeper's largest znode (jute.maxbuffer) */
#define MAX_SECONDS 3600
/* Latencies kept per thread (4 bytes each); ops past it are counted but not timed. */
#define MAX_SAMPLES_PER_THREAD (1u << 22)
/* Puts each async thread keeps outstanding: at most the client library's own limit. */
#define MAX_INFLIGHT SQ_CLIENT_MAX_INFLIGHT
#define CALL_TIMEOUT_MS 10000
#define CONNECT_TIMEOUT_MS 5000
/* Redis: the replicas a durable put waits for, and how long WAIT may take. */
#define REDIS_REPLICAS 2
#define REDIS_WAIT_MS 1000
#define KEY_BYTES 64
#define ERR_BYTES 512
#define HOST_BYTES 64

enum sys { SYS_SQUALL, SYS_ETCD, SYS_ZOOKEEPER, SYS_REDIS, NSYS };
static const char *const g_sys_names[NSYS] = {"squall", "etcd", "zookeeper", "redis"};

/* The cases; `fill` writes every key once (so that gets hit), `ready` waits until a put works
 * through every member. */
enum op {
    OP_PUT_DURABLE,
    OP_PUT_VOLATILE,
    OP_PUT_NOWAIT,
    OP_GET,
    OP_GET_STABLE,
    OP_ASYNC,
    OP_FILL,
    OP_READY,
    NOPS
};
static const char *const g_op_names[NOPS] = {"put_durable", "put_volatile", "put_nowait", "get",
                                             "get_stable",  "async",        "fill",       "ready"};
/* The cases each system runs, a bit each. */
#define B(op) (1u << (op))
#define B_ALL (B(OP_PUT_DURABLE) | B(OP_GET) | B(OP_FILL) | B(OP_READY))
static const unsigned g_cases[NSYS] = {
    [SYS_SQUALL] = B_ALL | B(OP_PUT_VOLATILE) | B(OP_GET_STABLE) | B(OP_ASYNC),
    [SYS_ETCD] = B_ALL,
    [SYS_ZOOKEEPER] = B_ALL,
    [SYS_REDIS] = B_ALL | B(OP_PUT_VOLATILE) | B(OP_PUT_NOWAIT),
};
/* How clients are spread over the members, printed with each result. */
static const char *const g_route[NSYS] = {"round_robin", "round_robin_from_leader",
                                          "round_robin_from_leader", "master"};

struct options {
    int sys, op, clients, inflight;
    size_t size;
    double seconds, warmup_seconds, ready_seconds;
    int nmembers;
    char host[MAX_MEMBERS][HOST_BYTES];
    int port[MAX_MEMBERS];
    int leader; /* etcd and ZooKeeper: the member that leads, found at the start */
};

static struct options g_opt = {.clients = 1,
                               .inflight = 16,
                               .size = 256,
                               .seconds = 5,
                               .warmup_seconds = 0.5,
                               .ready_seconds = 60};
static unsigned char *g_value;
static char *g_value_b64; /* etcd's JSON carries values in base64 */

struct samples {
    uint32_t *us;
    size_t n, cap;
};

/* One connection to one system; only the fields of g_opt.sys are used. */
struct conn {
    int member;
    sq_client *sq;
    sq_kv_result r;
    CURL *curl;
    struct curl_slist *headers;
    char put_url[128], range_url[128];
    char *body, *resp;
    size_t resp_len, resp_cap;
    zhandle_t *zh;
    char *zbuf;
    redisContext *rc;
    long long wait_min; /* the fewest replicas a WAIT reported, -1 before the first */
};

struct async_slot {
    struct worker *w;
    double t0;
};

/* One closed-loop client thread. */
struct worker {
    int idx;
    pthread_t th;
    struct conn k;
    uint64_t state; /* its random number generator */
    uint64_t ops, errors, warmup_errors;
    struct samples lat;
    double t_start, t_end;
    bool setup_failed;
    char first_error[ERR_BYTES];
    /* the async case: puts outstanding, completed on the client's I/O thread */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int inflight;
    bool measuring;
    struct async_slot slots[MAX_INFLIGHT];
    int free_slots[MAX_INFLIGHT], nfree;
};

static pthread_barrier_t g_opened, g_warmed;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t next_rand(uint64_t *s)
{
    /* xorshift64*: each thread its own sequence */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}

static void samples_add(struct samples *s, double seconds)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 65536;
        cap = cap > MAX_SAMPLES_PER_THREAD ? MAX_SAMPLES_PER_THREAD : cap;
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

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Keeps the first error of a thread, printed after the run. */
static void note_error(struct worker *w, const char *prefix, const char *msg)
{
    if (w->first_error[0] == '\0') {
        snprintf(w->first_error, sizeof(w->first_error), "%.16s%.480s", prefix, msg);
    }
}

static void base64(char *out, const unsigned char *in, size_t n)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        v |= i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0;
        v |= i + 2 < n ? in[i + 2] : 0;
        out[o++] = t[v >> 18 & 63];
        out[o++] = t[v >> 12 & 63];
        out[o++] = i + 1 < n ? t[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? t[v & 63] : '=';
    }
    out[o] = '\0';
}

/* The name of key `i` in the system's namespace ("ready" for the readiness probe). */
static void key_name(char *out, int op, long i)
{
    char leaf[16];
    snprintf(leaf, sizeof(leaf), i < 0 ? "ready" : "k%ld", i);
    switch (g_opt.sys) {
    case SYS_SQUALL:
        snprintf(out, KEY_BYTES, "%s/peers/%s", op == OP_PUT_VOLATILE ? "/bv" : "/bp", leaf);
        break;
    case SYS_ETCD:
        snprintf(out, KEY_BYTES, "peers/%s", leaf);
        break;
    case SYS_ZOOKEEPER:
        snprintf(out, KEY_BYTES, "/%s", leaf);
        break;
    default:
        snprintf(out, KEY_BYTES, "%s", leaf);
        break;
    }
}

static void conn_close(struct conn *k);

/* ---- etcd: its gRPC JSON gateway over HTTP/1.1 keep-alive ---- */

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    struct conn *k = arg;
    size_t len = size * n;
    if (k->resp_len + len + 1 > k->resp_cap) {
        size_t cap = (k->resp_len + len + 1) * 2;
        char *q = realloc(k->resp, cap);
        if (q == NULL) {
            return 0;
        }
        k->resp = q;
        k->resp_cap = cap;
    }
    memcpy(k->resp + k->resp_len, p, len);
    k->resp_len += len;
    k->resp[k->resp_len] = '\0';
    return len;
}

/* POSTs `body` to `url`: 0 when the answer is 200 with a "header" and, if `need` is set, that
 * field too; otherwise -1 and `err` holds the status and the answer's start. */
static int etcd_post(struct conn *k, const char *url, const char *body, const char *need, char *err,
                     size_t err_size)
{
    long status = 0;
    k->resp_len = 0;
    if (k->resp != NULL) {
        k->resp[0] = '\0';
    }
    curl_easy_setopt(k->curl, CURLOPT_URL, url);
    curl_easy_setopt(k->curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(k->curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    CURLcode cc = curl_easy_perform(k->curl);
    if (cc != CURLE_OK) {
        snprintf(err, err_size, "%s: %s", url, curl_easy_strerror(cc));
        return -1;
    }
    curl_easy_getinfo(k->curl, CURLINFO_RESPONSE_CODE, &status);
    const char *resp = k->resp != NULL ? k->resp : "";
    if (status != 200 || strstr(resp, "\"header\"") == NULL ||
        (need != NULL && strstr(resp, need) == NULL)) {
        snprintf(err, err_size, "%s: HTTP %ld: %.200s", url, status, resp);
        return -1;
    }
    return 0;
}

static int etcd_open(struct conn *k, char *err, size_t err_size)
{
    const char *h = g_opt.host[k->member];
    int p = g_opt.port[k->member];
    snprintf(k->put_url, sizeof(k->put_url), "http://%s:%d/v3/kv/put", h, p);
    snprintf(k->range_url, sizeof(k->range_url), "http://%s:%d/v3/kv/range", h, p);
    k->body = malloc(strlen(g_value_b64) + 2 * KEY_BYTES + 64);
    k->curl = curl_easy_init();
    /* Without an empty Expect, curl asks for 100-continue before a body over 1 KiB: one more
     * round trip etcd never needed. */
    k->headers = curl_slist_append(NULL, "Content-Type: application/json");
    k->headers = k->headers ? curl_slist_append(k->headers, "Expect:") : NULL;
    if (k->body == NULL || k->curl == NULL || k->headers == NULL) {
        snprintf(err, err_size, "out of memory");
        return -1;
    }
    curl_easy_setopt(k->curl, CURLOPT_HTTPHEADER, k->headers);
    curl_easy_setopt(k->curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(k->curl, CURLOPT_WRITEDATA, k);
    curl_easy_setopt(k->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(k->curl, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(k->curl, CURLOPT_TIMEOUT_MS, (long)CALL_TIMEOUT_MS);
    curl_easy_setopt(k->curl, CURLOPT_CONNECTTIMEOUT_MS, (long)CONNECT_TIMEOUT_MS);
    return 0;
}

static int etcd_op(struct conn *k, int op, const char *key, char *err, size_t err_size)
{
    char kb64[2 * KEY_BYTES];
    base64(kb64, (const unsigned char *)key, strlen(key));
    if (op == OP_GET) {
        sprintf(k->body, "{\"key\":\"%s\"}", kb64);
        return etcd_post(k, k->range_url, k->body, "\"kvs\"", err, err_size);
    }
    sprintf(k->body, "{\"key\":\"%s\",\"value\":\"%s\"}", kb64, g_value_b64);
    return etcd_post(k, k->put_url, k->body, NULL, err, err_size);
}

/* The member etcd's status names as leader (its own member_id equals the leader's), or -1. */
static int etcd_leader(void)
{
    for (int m = 0; m < g_opt.nmembers; m++) {
        struct conn k = {.member = m, .wait_min = -1};
        char url[128], err[ERR_BYTES];
        snprintf(url, sizeof(url), "http://%s:%d/v3/maintenance/status", g_opt.host[m],
                 g_opt.port[m]);
        bool leads = false;
        if (etcd_open(&k, err, sizeof(err)) == 0 &&
            etcd_post(&k, url, "{}", "\"leader\"", err, sizeof(err)) == 0) {
            const char *id = strstr(k.resp, "\"member_id\":\""),
                       *ld = strstr(k.resp, "\"leader\":\"");
            leads = id != NULL && ld != NULL &&
                    strtoull(id + strlen("\"member_id\":\""), NULL, 10) ==
                        strtoull(ld + strlen("\"leader\":\""), NULL, 10);
        }
        conn_close(&k);
        if (leads) {
            return m;
        }
    }
    return -1;
}

/* ---- ZooKeeper: the multi-threaded C client's synchronous calls ---- */

static void zk_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
    /* zk_open polls zoo_state() instead */
    (void)zh;
    (void)type;
    (void)state;
    (void)path;
    (void)ctx;
}

static int zk_open(struct conn *k, char *err, size_t err_size)
{
    char hp[HOST_BYTES + 8];
    snprintf(hp, sizeof(hp), "%s:%d", g_opt.host[k->member], g_opt.port[k->member]);
    k->zbuf = malloc(g_opt.size + 1);
    k->zh = k->zbuf ? zookeeper_init(hp, zk_watcher, CALL_TIMEOUT_MS, NULL, NULL, 0) : NULL;
    if (k->zh == NULL) {
        snprintf(err, err_size, "zookeeper_init %s: %s", hp, strerror(errno));
        return -1;
    }
    for (double end = now_s() + CONNECT_TIMEOUT_MS / 1e3;
         zoo_state(k->zh) != ZOO_CONNECTED_STATE;) {
        if (now_s() > end) {
            snprintf(err, err_size, "%s: no session after %d ms", hp, CONNECT_TIMEOUT_MS);
            return -1;
        }
        usleep(5000);
    }
    return 0;
}

static int zk_op(struct conn *k, int op, const char *key, char *err, size_t err_size)
{
    int rc;
    if (op == OP_GET) {
        int len = (int)g_opt.size + 1;
        struct Stat st;
        rc = zoo_get(k->zh, key, 0, k->zbuf, &len, &st);
        if (rc == ZOK && len != (int)g_opt.size) {
            snprintf(err, err_size, "get %s: %d bytes, %zu were put", key, len, g_opt.size);
            return -1;
        }
    } else if (op == OP_FILL || op == OP_READY) {
        /* the znodes the puts set are created here */
        rc = zoo_create(k->zh, key, (const char *)g_value, (int)g_opt.size, &ZOO_OPEN_ACL_UNSAFE,
                        ZOO_PERSISTENT, NULL, 0);
        if (rc == ZNODEEXISTS) {
            rc = zoo_set(k->zh, key, (const char *)g_value, (int)g_opt.size, -1);
        }
    } else {
        rc = zoo_set(k->zh, key, (const char *)g_value, (int)g_opt.size, -1);
    }
    if (rc != ZOK) {
        snprintf(err, err_size, "%s %s: %s", g_op_names[op], key, zerror(rc));
        return -1;
    }
    return 0;
}

/* The member whose `srvr` answer says "Mode: leader", or -1. */
static int zk_leader(void)
{
    for (int m = 0; m < g_opt.nmembers; m++) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_opt.port[m])};
        char buf[2048];
        size_t n = 0;
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || inet_pton(AF_INET, g_opt.host[m], &a.sin_addr) != 1 ||
            connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || write(fd, "srvr", 4) != 4) {
            if (fd >= 0) {
                close(fd);
            }
            continue;
        }
        ssize_t r;
        while (n + 1 < sizeof(buf) && (r = read(fd, buf + n, sizeof(buf) - 1 - n)) > 0) {
            n += (size_t)r;
        }
        buf[n] = '\0';
        close(fd);
        if (strstr(buf, "Mode: leader") != NULL) {
            return m;
        }
    }
    return -1;
}

/* ---- Redis: hiredis, one master and two replicas ---- */

static int redis_connect(redisContext **out, int member, char *err, size_t err_size)
{
    struct timeval ct = {.tv_sec = CONNECT_TIMEOUT_MS / 1000};
    struct timeval ot = {.tv_sec = CALL_TIMEOUT_MS / 1000};
    redisContext *c = redisConnectWithTimeout(g_opt.host[member], g_opt.port[member], ct);
    *out = c;
    if (c == NULL || c->err != 0) {
        snprintf(err, err_size, "%s:%d: %s", g_opt.host[member], g_opt.port[member],
                 c ? c->errstr : "out of memory");
        return -1;
    }
    redisSetTimeout(c, ot);
    return 0;
}

/* Reads one reply: 0 unless the connection failed or Redis answered an error. */
static int redis_reply(redisContext *c, redisReply **out, const char *what, char *err,
                       size_t err_size)
{
    void *p = NULL;
    *out = NULL;
    if (redisGetReply(c, &p) != REDIS_OK || p == NULL) {
        snprintf(err, err_size, "%s: %s", what, c->errstr[0] ? c->errstr : "no reply");
        return -1;
    }
    *out = p;
    if ((*out)->type == REDIS_REPLY_ERROR) {
        snprintf(err, err_size, "%s: %.200s", what, (*out)->str);
        return -1;
    }
    return 0;
}

static int redis_op(struct conn *k, int op, const char *key, char *err, size_t err_size)
{
    redisReply *r1 = NULL, *r2 = NULL;
    int rc = -1;
    if (k->rc == NULL || k->rc->err != 0) {
        /* a broken connection cannot be used again: this call makes a new one */
        if (k->rc != NULL) {
            redisFree(k->rc);
            k->rc = NULL;
        }
        if (redis_connect(&k->rc, k->member, err, err_size) != 0) {
            usleep(100 * 1000); /* not a busy loop of refused connections */
            return -1;
        }
    }
    if (op == OP_GET) {
        redisAppendCommand(k->rc, "GET %s", key);
    } else {
        redisAppendCommand(k->rc, "SET %s %b", key, g_value, g_opt.size);
    }
    /* A durable put is SET and WAIT in one round trip: WAIT answers once the replicas have
     * acknowledged everything this connection wrote before it. */
    bool wait = op == OP_PUT_DURABLE || op == OP_PUT_VOLATILE || op == OP_READY;
    if (wait) {
        redisAppendCommand(k->rc, "WAIT %d %d", REDIS_REPLICAS, REDIS_WAIT_MS);
    }
    if (redis_reply(k->rc, &r1, op == OP_GET ? "GET" : "SET", err, err_size) != 0 ||
        (wait && redis_reply(k->rc, &r2, "WAIT", err, err_size) != 0)) {
        goto out;
    }
    if (op == OP_GET && (r1->type != REDIS_REPLY_STRING || r1->len != g_opt.size)) {
        snprintf(err, err_size, "GET %s: %s", key,
                 r1->type == REDIS_REPLY_NIL ? "no such key" : "not the value put");
        goto out;
    }
    if (wait && r2->type == REDIS_REPLY_INTEGER && (k->wait_min < 0 || r2->integer < k->wait_min)) {
        k->wait_min = r2->integer;
    }
    if (wait && (r2->type != REDIS_REPLY_INTEGER || r2->integer < REDIS_REPLICAS)) {
        snprintf(err, err_size, "WAIT %d %d: %lld replicas acknowledged", REDIS_REPLICAS,
                 REDIS_WAIT_MS, r2->type == REDIS_REPLY_INTEGER ? r2->integer : -1LL);
        goto out;
    }
    rc = 0;
out:
    if (r1 != NULL) {
        freeReplyObject(r1);
    }
    if (r2 != NULL) {
        freeReplyObject(r2);
    }
    if (rc != 0 && k->rc->err == 0 && wait && r2 == NULL) {
        /* SET was refused: WAIT's answer is still to be read */
        redisReply *left = NULL;
        char ignored[8];
        redis_reply(k->rc, &left, "", ignored, sizeof(ignored));
        if (left != NULL) {
            freeReplyObject(left);
        }
    }
    return rc;
}

/* Sets appendfsync on every member: "no" for put_volatile, "always" otherwise. */
static int redis_set_fsync(const char *mode)
{
    for (int m = 0; m < g_opt.nmembers; m++) {
        redisContext *c = NULL;
        redisReply *r = NULL;
        char err[ERR_BYTES];
        int rc = redis_connect(&c, m, err, sizeof(err));
        if (rc == 0) {
            redisAppendCommand(c, "CONFIG SET appendfsync %s", mode);
            rc = redis_reply(c, &r, "CONFIG SET appendfsync", err, sizeof(err));
        }
        if (r != NULL) {
            freeReplyObject(r);
        }
        if (c != NULL) {
            redisFree(c);
        }
        if (rc != 0) {
            fprintf(stderr, "peers-bench: redis member %d: %s\n", m, err);
            return -1;
        }
    }
    return 0;
}

/* ---- one connection, whatever the system ---- */

static int conn_open(struct conn *k, char *err, size_t err_size)
{
    switch (g_opt.sys) {
    case SYS_SQUALL: {
        /* the member list starting at this client's member, so that it fails over in order */
        char list[MAX_MEMBERS * (HOST_BYTES + 8)];
        size_t n = 0;
        for (int i = 0; i < g_opt.nmembers; i++) {
            int m = (k->member + i) % g_opt.nmembers;
            n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%s:%d", i ? "," : "",
                                  g_opt.host[m], g_opt.port[m]);
        }
        return sq_client_open(&k->sq, list, CALL_TIMEOUT_MS, err, err_size) == 0 ? 0 : -1;
    }
    case SYS_ETCD:
        return etcd_open(k, err, err_size);
    case SYS_ZOOKEEPER:
        return zk_open(k, err, err_size);
    default:
        return redis_connect(&k->rc, k->member, err, err_size);
    }
}

static void conn_close(struct conn *k)
{
    sq_client_close(k->sq);
    sq_kv_result_free(&k->r);
    if (k->curl != NULL) {
        curl_easy_cleanup(k->curl);
    }
    curl_slist_free_all(k->headers);
    free(k->body);
    free(k->resp);
    if (k->zh != NULL) {
        zookeeper_close(k->zh);
    }
    free(k->zbuf);
    if (k->rc != NULL) {
        redisFree(k->rc);
    }
    *k = (struct conn){.member = k->member, .wait_min = -1};
}

/* One blocking call: 0, or -1 with `err` filled. */
static int conn_op(struct conn *k, int op, long key_index, char *err, size_t err_size)
{
    char key[KEY_BYTES];
    key_name(key, op, key_index);
    if (g_opt.sys == SYS_ETCD) {
        return etcd_op(k, op, key, err, err_size);
    }
    if (g_opt.sys == SYS_ZOOKEEPER) {
        return zk_op(k, op, key, err, err_size);
    }
    if (g_opt.sys == SYS_REDIS) {
        return redis_op(k, op, key, err, err_size);
    }
    int rc;
    if (op == OP_GET || op == OP_GET_STABLE) {
        sq_get_opts go = {.stable = op == OP_GET_STABLE};
        rc = sq_client_get(k->sq, key, &go, &k->r);
        if (rc == 0 && k->r.size != g_opt.size) {
            snprintf(err, err_size, "get %s: %zu bytes, %zu were put", key, k->r.size, g_opt.size);
            return -1;
        }
    } else {
        rc = sq_client_put(k->sq, key, g_value, g_opt.size, NULL, &k->r);
    }
    if (rc != 0) {
        snprintf(err, err_size, "%s %s: %s (%.256s)", g_op_names[op], key, sq_err_name(rc),
                 k->r.message);
        return -1;
    }
    return 0;
}

/* ---- the load ---- */

/* The closed loop until `end`: latencies kept only when `record`. */
static void run_blocking(struct worker *w, double end, bool record)
{
    char err[ERR_BYTES];
    for (double t = now_s(); t < end;) {
        long key = (long)(next_rand(&w->state) % NKEYS);
        int rc = conn_op(&w->k, g_opt.op, key, err, sizeof(err));
        double t1 = now_s();
        if (rc == 0 && record) {
            w->ops++;
            samples_add(&w->lat, t1 - t);
        } else if (rc != 0) {
            *(record ? &w->errors : &w->warmup_errors) += 1;
            note_error(w, record ? "" : "warm-up: ", err);
        }
        t = t1;
    }
}

static void async_done(void *arg, const sq_kv_result *r)
{
    struct async_slot *s = arg;
    struct worker *w = s->w;
    double t1 = now_s();
    pthread_mutex_lock(&w->mu);
    if (r->status == 0 && w->measuring) {
        w->ops++;
        samples_add(&w->lat, t1 - s->t0);
    } else if (r->status != 0) {
        *(w->measuring ? &w->errors : &w->warmup_errors) += 1;
        char err[ERR_BYTES];
        snprintf(err, sizeof(err), "async put: %s (%.256s)", sq_err_name(r->status), r->message);
        note_error(w, w->measuring ? "" : "warm-up: ", err);
    }
    w->free_slots[w->nfree++] = (int)(s - w->slots);
    w->inflight--;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Keeps g_opt.inflight asynchronous puts outstanding until `end`, then waits for them all. */
static void run_async(struct worker *w, double end, bool record)
{
    char key[KEY_BYTES];
    pthread_mutex_lock(&w->mu);
    w->measuring = record;
    while (now_s() < end) {
        while (w->inflight >= g_opt.inflight) {
            pthread_cond_wait(&w->cv, &w->mu);
        }
        struct async_slot *s = &w->slots[w->free_slots[--w->nfree]];
        s->w = w;
        s->t0 = now_s();
        w->inflight++;
        pthread_mutex_unlock(&w->mu);
        key_name(key, OP_PUT_DURABLE, (long)(next_rand(&w->state) % NKEYS));
        int rc = sq_client_put_async(w->k.sq, key, g_value, g_opt.size, NULL, async_done, s);
        pthread_mutex_lock(&w->mu);
        if (rc != 0) {
            /* no callback will come for this one */
            w->free_slots[w->nfree++] = (int)(s - w->slots);
            w->inflight--;
            *(record ? &w->errors : &w->warmup_errors) += 1;
            note_error(w, "async put: ", sq_err_name(rc));
        }
    }
    while (w->inflight > 0) {
        pthread_cond_wait(&w->cv, &w->mu);
    }
    pthread_mutex_unlock(&w->mu);
}

/* Fill: this thread's share of the keys, once each. */
static void run_fill(struct worker *w)
{
    char err[ERR_BYTES];
    for (long i = w->idx; i < NKEYS; i += g_opt.clients) {
        if (conn_op(&w->k, OP_FILL, i, err, sizeof(err)) != 0) {
            w->errors++;
            note_error(w, "", err);
        }
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    /* Connections first, so that no thread's connecting overlaps another's load. */
    char err[ERR_BYTES];
    if (conn_open(&w->k, err, sizeof(err)) != 0) {
        w->setup_failed = true;
        note_error(w, "connect: ", err);
    }
    pthread_barrier_wait(&g_opened);
    if (!w->setup_failed && g_opt.op == OP_FILL) {
        run_fill(w);
    } else if (!w->setup_failed) {
        double warm_end = now_s() + g_opt.warmup_seconds;
        if (g_opt.op == OP_ASYNC) {
            run_async(w, warm_end, false);
        } else {
            run_blocking(w, warm_end, false);
        }
    }
    pthread_barrier_wait(&g_warmed);
    w->t_start = now_s();
    w->t_end = w->t_start;
    if (w->setup_failed || g_opt.op == OP_FILL) {
        return NULL;
    }
    if (g_opt.op == OP_ASYNC) {
        run_async(w, w->t_start + g_opt.seconds, true);
    } else {
        run_blocking(w, w->t_start + g_opt.seconds, true);
    }
    w->t_end = now_s();
    return NULL;
}

/* Waits until a put (a durable one: for Redis, SET and WAIT for both replicas) and, where the
 * system reads per member, a get work through every member, or g_opt.ready_seconds pass. */
static int wait_ready(void)
{
    char err[ERR_BYTES] = "";
    double end = now_s() + g_opt.ready_seconds;
    int ok = 0;
    while (ok < g_opt.nmembers && now_s() < end) {
        int m = g_opt.sys == SYS_REDIS ? 0 : ok; /* Redis: only the master takes writes */
        struct conn k = {.member = m, .wait_min = -1};
        int rc = conn_open(&k, err, sizeof(err));
        if (rc == 0) {
            rc = conn_op(&k, OP_READY, -1, err, sizeof(err));
        }
        conn_close(&k);
        if (rc == 0) {
            ok = g_opt.sys == SYS_REDIS ? g_opt.nmembers : ok + 1;
        } else {
            usleep(200 * 1000);
        }
    }
    if (ok < g_opt.nmembers) {
        fprintf(stderr, "peers-bench: %s not ready after %.0f s: %s\n", g_sys_names[g_opt.sys],
                g_opt.ready_seconds, err);
        return 3;
    }
    return 0;
}

static uint32_t pct(const uint32_t *all, size_t n, int p)
{
    return n > 0 ? all[(n * (size_t)p) / 100] : 0;
}

static int run(void)
{
    int rc = 3;
    int n = g_opt.clients;
    struct worker *ws = calloc((size_t)n, sizeof(*ws));
    if (ws == NULL) {
        return 3;
    }
    int first = g_opt.sys == SYS_ETCD || g_opt.sys == SYS_ZOOKEEPER ? g_opt.leader : 0;
    for (int i = 0; i < n; i++) {
        ws[i].idx = i;
        ws[i].k.member = g_opt.sys == SYS_REDIS ? 0 : (first + i) % g_opt.nmembers;
        ws[i].k.wait_min = -1;
        ws[i].state = 0x9E3779B97F4A7C15ULL * (uint64_t)(i + 1) ^ (uint64_t)time(NULL);
        pthread_mutex_init(&ws[i].mu, NULL);
        pthread_cond_init(&ws[i].cv, NULL);
        for (int s = 0; s < MAX_INFLIGHT; s++) {
            ws[i].free_slots[s] = s;
        }
        ws[i].nfree = MAX_INFLIGHT;
    }
    pthread_barrier_init(&g_opened, NULL, (unsigned)n);
    pthread_barrier_init(&g_warmed, NULL, (unsigned)n);
    int started = 0;
    for (; started < n; started++) {
        if (pthread_create(&ws[started].th, NULL, worker_main, &ws[started]) != 0) {
            /* the others wait at a barrier for a thread that will never come */
            fprintf(stderr, "peers-bench: cannot start thread %d\n", started);
            exit(3);
        }
    }
    bool setup_failed = false;
    uint64_t ops = 0, errors = 0;
    long long wait_min = -1;
    size_t total = 0;
    double t0 = 0, t1 = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(ws[i].th, NULL);
        if (ws[i].k.wait_min >= 0 && (wait_min < 0 || ws[i].k.wait_min < wait_min)) {
            wait_min = ws[i].k.wait_min;
        }
        conn_close(&ws[i].k);
        setup_failed |= ws[i].setup_failed;
        if (ws[i].first_error[0] != '\0') {
            fprintf(stderr, "peers-bench: %s %s thread %d (member %d): %s\n",
                    g_sys_names[g_opt.sys], g_op_names[g_opt.op], i, ws[i].k.member,
                    ws[i].first_error);
        }
        ops += ws[i].ops;
        errors += ws[i].errors;
        total += ws[i].lat.n;
        t0 = i == 0 || ws[i].t_start < t0 ? ws[i].t_start : t0;
        t1 = i == 0 || ws[i].t_end > t1 ? ws[i].t_end : t1;
    }
    if (setup_failed) {
        goto out;
    }
    rc = errors > 0 ? 1 : 0;
    if (g_opt.op == OP_FILL) {
        goto out;
    }
    uint32_t *all = total > 0 ? malloc(total * sizeof(*all)) : NULL;
    size_t k = 0;
    for (int i = 0; i < n && all != NULL; i++) {
        memcpy(all + k, ws[i].lat.us, ws[i].lat.n * sizeof(*all));
        k += ws[i].lat.n;
    }
    if (all != NULL) {
        qsort(all, k, sizeof(*all), cmp_u32);
    }
    printf("system=%s case=%s clients=%d size=%zu ops_per_s=%.0f p50_us=%" PRIu32 " p90_us=%" PRIu32
           " p99_us=%" PRIu32 " errors=%" PRIu64 " ops=%" PRIu64 " seconds=%.2f route=%s",
           g_sys_names[g_opt.sys], g_op_names[g_opt.op], n, g_opt.size,
           t1 > t0 ? (double)ops / (t1 - t0) : 0, pct(all, k, 50), pct(all, k, 90), pct(all, k, 99),
           errors, ops, t1 - t0, g_route[g_opt.sys]);
    if (g_opt.op == OP_ASYNC) {
        printf(" inflight=%d", g_opt.inflight);
    }
    if (wait_min >= 0) {
        printf(" wait_replicas_min=%lld", wait_min); /* Redis: the fewest a WAIT acknowledged */
    }
    printf("\n");
    fflush(stdout);
    free(all);
out:
    pthread_barrier_destroy(&g_opened);
    pthread_barrier_destroy(&g_warmed);
    for (int i = 0; i < n; i++) {
        free(ws[i].lat.us);
        pthread_mutex_destroy(&ws[i].mu);
        pthread_cond_destroy(&ws[i].cv);
    }
    free(ws);
    return rc;
}

/* "host:port,host:port,...": 0 or -1. */
static int parse_members(const char *s)
{
    while (*s != '\0' && g_opt.nmembers < MAX_MEMBERS) {
        const char *colon = strchr(s, ':');
        const char *comma = strchr(s, ',');
        comma = comma ? comma : s + strlen(s);
        if (colon == NULL || colon > comma || colon - s >= HOST_BYTES) {
            return -1;
        }
        memcpy(g_opt.host[g_opt.nmembers], s, (size_t)(colon - s));
        g_opt.host[g_opt.nmembers][colon - s] = '\0';
        g_opt.port[g_opt.nmembers] = atoi(colon + 1);
        if (g_opt.port[g_opt.nmembers] <= 0 || g_opt.port[g_opt.nmembers] > 65535) {
            return -1;
        }
        g_opt.nmembers++;
        s = *comma ? comma + 1 : comma;
    }
    return *s == '\0' && g_opt.nmembers > 0 ? 0 : -1;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: peers-bench --system squall|etcd|zookeeper|redis --members H:P,H:P,H:P\n"
            "                   --case CASE [--clients N] [--size BYTES] [--seconds S]\n"
            "                   [--warmup S] [--inflight K] [--ready-timeout S]\n"
            "CASE: put_durable, get (every system); put_volatile (squall, redis); put_nowait\n"
            "(redis); get_stable, async (squall); fill (write the %d keys once, so that gets\n"
            "hit); ready (wait until a put works through every member). N threads, each with its\n"
            "own connection, run calls back to back on random keys out of %d; async keeps K puts\n"
            "in flight per thread. Members: squall's client ports; etcd's client URLs' host:port;\n"
            "ZooKeeper's client ports; Redis: the master first, then the replicas. Defaults: 1\n"
            "client, 256 bytes, 5 s after a 0.5 s warm-up, K = 16.\n",
            NKEYS, NKEYS);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"system", required_argument, NULL, 'y'},
                                         {"members", required_argument, NULL, 'm'},
                                         {"case", required_argument, NULL, 'c'},
                                         {"clients", required_argument, NULL, 'n'},
                                         {"size", required_argument, NULL, 'z'},
                                         {"seconds", required_argument, NULL, 's'},
                                         {"warmup", required_argument, NULL, 'w'},
                                         {"inflight", required_argument, NULL, 'i'},
                                         {"ready-timeout", required_argument, NULL, 'r'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *sys = NULL, *op = NULL, *members = NULL;
    long size = (long)g_opt.size;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'y':
            sys = optarg;
            break;
        case 'm':
            members = optarg;
            break;
        case 'c':
            op = optarg;
            break;
        case 'n':
            g_opt.clients = atoi(optarg);
            break;
        case 'z':
            size = atol(optarg);
            break;
        case 's':
            g_opt.seconds = atof(optarg);
            break;
        case 'w':
            g_opt.warmup_seconds = atof(optarg);
            break;
        case 'i':
            g_opt.inflight = atoi(optarg);
            break;
        case 'r':
            g_opt.ready_seconds = atof(optarg);
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    g_opt.sys = g_opt.op = -1;
    for (int i = 0; sys != NULL && i < NSYS; i++) {
        g_opt.sys = strcmp(sys, g_sys_names[i]) == 0 ? i : g_opt.sys;
    }
    for (int i = 0; op != NULL && i < NOPS; i++) {
        g_opt.op = strcmp(op, g_op_names[i]) == 0 ? i : g_opt.op;
    }
    if (optind != argc || g_opt.sys < 0 || g_opt.op < 0 || members == NULL ||
        parse_members(members) != 0 || g_opt.clients < 1 || g_opt.clients > MAX_CLIENTS ||
        size < 1 || size > (long)MAX_SIZE_BYTES ||
        !(g_opt.seconds > 0 && g_opt.seconds <= MAX_SECONDS) ||
        !(g_opt.warmup_seconds >= 0 && g_opt.warmup_seconds <= MAX_SECONDS) ||
        !(g_opt.ready_seconds > 0 && g_opt.ready_seconds <= MAX_SECONDS) || g_opt.inflight < 1 ||
        g_opt.inflight > MAX_INFLIGHT) {
        fprintf(stderr, "peers-bench: bad arguments (clients 1..%d, size 1..%u, inflight 1..%d)\n",
                MAX_CLIENTS, MAX_SIZE_BYTES, MAX_INFLIGHT);
        usage(stderr);
        return 2;
    }
    if ((g_cases[g_opt.sys] & B(g_opt.op)) == 0) {
        fprintf(stderr, "peers-bench: %s has no case %s\n", sys, op);
        return 2;
    }
    g_opt.size = (size_t)size;
    g_value = malloc(g_opt.size);
    g_value_b64 = malloc(4 * (g_opt.size / 3 + 1) + 1);
    if (g_value == NULL || g_value_b64 == NULL) {
        fprintf(stderr, "peers-bench: out of memory\n");
        return 3;
    }
    for (size_t i = 0; i < g_opt.size; i++) {
        g_value[i] = (unsigned char)('a' + i % 26);
    }
    base64(g_value_b64, g_value, g_opt.size);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    zoo_set_debug_level(ZOO_LOG_LEVEL_ERROR);

    int rc = 0;
    if (g_opt.op == OP_READY) {
        /* refused connections while the servers come up are expected: ZooKeeper logs each */
        zoo_set_debug_level((ZooLogLevel)0);
        rc = wait_ready();
        goto out;
    }
    if (g_opt.sys == SYS_ETCD || g_opt.sys == SYS_ZOOKEEPER) {
        g_opt.leader = g_opt.sys == SYS_ETCD ? etcd_leader() : zk_leader();
        if (g_opt.leader < 0) {
            fprintf(stderr, "peers-bench: no %s member says it leads\n", sys);
            rc = 3;
            goto out;
        }
    }
    if (g_opt.sys == SYS_REDIS && redis_set_fsync(g_opt.op == OP_PUT_VOLATILE ? "no" : "always")) {
        rc = 3;
        goto out;
    }
    rc = run();
    if (g_opt.sys == SYS_REDIS && g_opt.op == OP_PUT_VOLATILE && redis_set_fsync("always") != 0) {
        rc = 3;
    }
out:
    curl_global_cleanup();
    free(g_value);
    free(g_value_b64);
    return rc;
}
