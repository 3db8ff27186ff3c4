/* http.c: a member's HTTP front end: the REST API under /v1 (versions as ETags), watches as
 * server-sent events, Prometheus metrics and the web console, served by libmicrohttpd with one
 * thread per connection. Each request is translated (http_req.c) into a call of the client
 * library on a connection to this member, which takes it the binary protocol's way. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "client/client_internal.h"
#include "common.h"
#include "config.h"
#include "kv/buf.h"
#include "log.h"
#include "server/http.h"
#include "server/kvserver.h"

#define CLIENT_TIMEOUT_MS 10000
/* A comment line at least this often keeps proxies and the idle timeout off an idle stream (a
 * third of [http] idle_timeout_s when that is shorter). */
#define SSE_KEEPALIVE_MS 15000
/* A stream whose buffer ([http] sse_buffer_bytes) is full and whose reader took nothing from it
 * for this long is dropped: its reader is not reading. Until then the watch waits (a catch-up
 * faster than the reader slows down to it: the member holds the rest, bounded, and the watch
 * resumes if it drops the connection). */
#define SSE_STALL_MS 10000
#define MAX_MEMBER_LIST 4096

extern const char sq__console_html[]; /* console.c, generated from src/server/console.html */
extern const size_t sq__console_html_len;

struct sse;

struct sq_http {
    struct MHD_Daemon *d;
    uint32_t my_id;
    char members[MAX_MEMBER_LIST]; /* client addresses, this member's first */
    char self[300];                /* this member's client address alone (status, metrics) */
    uint64_t max_body;
    uint64_t sse_buffer;
    uint64_t keepalive_ms;
    struct sq_config *cfg; /* pool list answers name subgroups */
    pthread_mutex_t mu;
    sq_client **idle; /* connections to the members not in use: reused by the next request */
    uint32_t nidle, max_idle;
    sq_client *local; /* to this member only: status and metrics are of this member */
    /* With [tls]: how it connects to the members' client ports (its certificate as the
     * client's), and its own HTTPS key and certificate in PEM, as libmicrohttpd takes them. */
    sq_client_tls tls_files;
    const sq_client_tls *tls; /* &tls_files, or NULL */
    char *https_key, *https_cert, *https_trust;
    struct sq_kv_server *kv; /* this member's service: requests go to it in-process, or NULL */
    struct sse *streams;
    atomic_bool stopping; /* streams end, connections are not kept */
    /* counters for /metrics */
    atomic_uint_fast64_t by_code[6]; /* 1xx..5xx */
    atomic_uint_fast64_t requests;
    atomic_int connections;
    atomic_int nstreams;
    atomic_uint_fast64_t sse_dropped, sse_events;
    atomic_uint_fast64_t inproc; /* requests handed to this member's service in-process */
};

/* One request: made when its request line is read (the raw URL, before decoding), freed when
 * the request completes. */
struct req {
    char *raw_url;
    bool started;
    bool answered; /* a response is queued, or one is pending (below) */
    /* An error found during the upload: libmicrohttpd takes a response only once the whole
     * request is in, so the rest of the body is read and dropped and this goes then. */
    int pend_status, pend_err;
    char pend_msg[200];
    struct sq_http_op op;
    struct sq__buf body;
};

/* ---- connections to the members ---- */

static int direct_request(void *arg, uint64_t conn, const uint8_t *frame, size_t len)
{
    struct sq_http *h = arg;
    int rc = sq__kv_server_inproc_request(h->kv, conn, frame, len);
    if (rc == 0) {
        atomic_fetch_add(&h->inproc, 1);
    }
    return rc;
}

static void direct_close(void *arg, uint64_t conn)
{
    struct sq_http *h = arg;
    sq__kv_server_inproc_close(h->kv, conn);
}

/* A client of this member's (the list's first) hands its blocking requests to the service on
 * this thread while that member is its member: no loopback hop, no service thread wake-up for
 * what this member answers itself (client_internal.h). Without it, the socket as before. */
static void use_direct(struct sq_http *h, sq_client *c)
{
    uint64_t id = 0;
    if (h->kv == NULL || sq__kv_server_inproc_open(h->kv, sq__client_direct_answer, c, &id) != 0) {
        return;
    }
    struct sq__client_direct d = {
        .request = direct_request, .close = direct_close, .arg = h, .conn = id};
    sq__client_set_direct(c, &d);
}

static sq_client *client_take(struct sq_http *h, char *err, size_t err_size)
{
    pthread_mutex_lock(&h->mu);
    sq_client *c = h->nidle > 0 ? h->idle[--h->nidle] : NULL;
    pthread_mutex_unlock(&h->mu);
    if (c == NULL) {
        if (sq__client_open_first(&c, h->members, CLIENT_TIMEOUT_MS, h->tls, err, err_size) != 0) {
            return NULL;
        }
        use_direct(h, c);
    }
    return c;
}

static void client_give(struct sq_http *h, sq_client *c)
{
    if (h->kv != NULL && c != NULL && !sq__client_on_first(c) && sq__kv_server_ready(h->kv) &&
        !atomic_load(&h->stopping)) {
        /* It went to another member while this one was out of the group, and this one serves
         * again: a new connection comes back here (and in-process). */
        sq_client_close(c);
        return;
    }
    pthread_mutex_lock(&h->mu);
    if (!h->stopping && h->nidle < h->max_idle) {
        h->idle[h->nidle++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&h->mu);
    sq_client_close(c);
}

/* ---- responses ---- */

/* A JSON string of bytes that may not be UTF-8 (keys are any bytes): invalid bytes become
 * U+FFFD. */
static json_t *jstr(const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    if (j != NULL) {
        return j;
    }
    char *buf = malloc(3 * n + 1);
    if (buf == NULL) {
        return json_string("");
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x80) {
            buf[o++] = (char)ch;
        } else {
            memcpy(buf + o, "\xEF\xBF\xBD", 3);
            o += 3;
        }
    }
    j = json_stringn(buf, o);
    free(buf);
    return j != NULL ? j : json_string("");
}

static json_t *jver(uint64_t v)
{
    char b[24];
    snprintf(b, sizeof(b), "0x%" PRIx64, v);
    return json_string(b);
}

static json_t *jtime(uint64_t us)
{
    char b[48];
    sq__http_iso_time(b, sizeof(b), us);
    return json_string(b);
}

static void count(struct sq_http *h, int status)
{
    atomic_fetch_add(&h->requests, 1);
    if (status >= 100 && status < 600) {
        atomic_fetch_add(&h->by_code[status / 100], 1);
    }
}

static enum MHD_Result queue(struct sq_http *h, struct MHD_Connection *conn, int status,
                             struct MHD_Response *resp)
{
    if (resp == NULL) {
        return MHD_NO;
    }
    count(h, status);
    enum MHD_Result r = MHD_queue_response(conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return r;
}

static struct MHD_Response *json_response(json_t *j)
{
    char *text = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (text == NULL) {
        return NULL;
    }
    size_t n = strlen(text);
    char *grown = realloc(text, n + 2);
    if (grown == NULL) {
        free(text);
        return NULL;
    }
    text = grown;
    text[n] = '\n';
    text[n + 1] = '\0';
    struct MHD_Response *r = MHD_create_response_from_buffer(n + 1, text, MHD_RESPMEM_MUST_FREE);
    if (r == NULL) {
        free(text);
        return NULL;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    return r;
}

static void add_etag(struct MHD_Response *r, uint64_t version)
{
    char tag[32];
    snprintf(tag, sizeof(tag), "\"0x%" PRIx64 "\"", version);
    MHD_add_response_header(r, MHD_HTTP_HEADER_ETAG, tag);
}

/* An error as JSON: {"error": "SQ_...", "message": ...}, with Retry-After on a 503. */
static enum MHD_Result send_error(struct sq_http *h, struct MHD_Connection *conn, int status,
                                  int err, const char *msg, const char *allow, json_t *extra)
{
    json_t *j = extra != NULL ? extra : json_object();
    json_object_set_new(j, "error", json_string(sq_err_name(err)));
    json_object_set_new(j, "message", jstr(msg, strlen(msg)));
    struct MHD_Response *r = json_response(j);
    if (r == NULL) {
        return MHD_NO;
    }
    if (status == 503) {
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    }
    if (allow != NULL && allow[0] != '\0') {
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    }
    return queue(h, conn, status, r);
}

/* The error of a failed client call. */
static enum MHD_Result send_result_error(struct sq_http *h, struct MHD_Connection *conn,
                                         const sq_kv_result *res)
{
    int status = sq__http_status_of(res->status);
    json_t *extra = NULL;
    if (res->status == SQ_ECONFLICT) {
        extra = json_object();
        json_object_set_new(extra, "current_version", jver(res->version));
    }
    const char *msg = res->message[0] != '\0' ? res->message : sq_strerror(res->status);
    if (res->status == SQ_ECONFLICT) {
        /* the key's current version as the ETag, so that a client can retry with it */
        json_t *j = extra;
        json_object_set_new(j, "error", json_string(sq_err_name(res->status)));
        json_object_set_new(j, "message", jstr(msg, strlen(msg)));
        struct MHD_Response *r = json_response(j);
        if (r == NULL) {
            return MHD_NO;
        }
        if (res->version != 0) {
            add_etag(r, res->version);
        }
        return queue(h, conn, status, r);
    }
    return send_error(h, conn, status, res->status, msg, NULL, extra);
}

/* ---- the routes ---- */

static enum MHD_Result do_put(struct sq_http *h, struct MHD_Connection *conn, sq_client *c,
                              struct req *q)
{
    sq_kv_result r = {0};
    int rc = q->op.kind == SQ_HTTP_KV_PUT
                 ? sq_client_put(c, q->op.key, q->body.p, q->body.len, &q->op.put, &r)
                 : sq_client_remove(c, q->op.key, &q->op.put, &r);
    enum MHD_Result out;
    if (rc != 0) {
        out = send_result_error(h, conn, &r);
    } else {
        json_t *j = json_object();
        json_object_set_new(j, "key", jstr(q->op.key, strlen(q->op.key)));
        json_object_set_new(j, "version", jver(r.version));
        json_object_set_new(j, "timestamp", json_integer((json_int_t)r.timestamp));
        json_object_set_new(j, "time", jtime(r.timestamp));
        if (q->op.kind == SQ_HTTP_KV_DELETE) {
            json_object_set_new(j, "deleted", json_true());
        }
        struct MHD_Response *resp = json_response(j);
        if (resp != NULL) {
            add_etag(resp, r.version);
        }
        /* a put that had to be a creation (If-None-Match: *) created it */
        out = queue(h, conn, q->op.put.if_absent ? 201 : 200, resp);
    }
    sq_kv_result_free(&r);
    return out;
}

static ssize_t no_body(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)cls;
    (void)pos;
    (void)buf;
    (void)max;
    return MHD_CONTENT_READER_END_OF_STREAM;
}

static void add_version_headers(struct MHD_Response *resp, uint64_t version, uint64_t ts)
{
    add_etag(resp, version);
    char b[64];
    time_t t = (time_t)(ts / 1000000u);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(b, sizeof(b), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_LAST_MODIFIED, b);
    snprintf(b, sizeof(b), "0x%" PRIx64, version);
    MHD_add_response_header(resp, "X-Squall-Version", b);
    snprintf(b, sizeof(b), "%" PRIu64, ts);
    MHD_add_response_header(resp, "X-Squall-Timestamp", b);
}

static enum MHD_Result do_get(struct sq_http *h, struct MHD_Connection *conn, sq_client *c,
                              struct req *q)
{
    sq_kv_result r = {0};
    int rc = sq_client_get(c, q->op.key, &q->op.get, &r);
    enum MHD_Result out;
    if (rc == SQ_ENOTFOUND && r.deleted) {
        json_t *j = json_object();
        json_object_set_new(j, "removed_version", jver(r.version));
        char msg[200];
        snprintf(msg, sizeof(msg), "the key was removed at version 0x%" PRIx64, r.version);
        out = send_error(h, conn, 404, SQ_ENOTFOUND, msg, NULL, j);
    } else if (rc != 0) {
        out = send_result_error(h, conn, &r);
    } else if (q->op.if_none_match &&
               (q->op.inm_version == UINT64_MAX || q->op.inm_version == r.version)) {
        struct MHD_Response *resp =
            MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
        if (resp != NULL) {
            add_version_headers(resp, r.version, r.timestamp);
        }
        out = queue(h, conn, 304, resp);
    } else {
        struct MHD_Response *resp =
            q->op.head ? MHD_create_response_from_callback(r.count, 4096, no_body, NULL, NULL)
                       : MHD_create_response_from_buffer(r.size, r.value, MHD_RESPMEM_MUST_COPY);
        if (resp != NULL) {
            add_version_headers(resp, r.version, r.timestamp);
            MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
        }
        out = queue(h, conn, 200, resp);
    }
    sq_kv_result_free(&r);
    return out;
}

static enum MHD_Result do_items(struct sq_http *h, struct MHD_Connection *conn, sq_client *c,
                                struct req *q)
{
    sq_kv_result r = {0};
    bool list = q->op.kind == SQ_HTTP_KV_LIST;
    int rc = list ? sq_client_list(c, q->op.key, q->op.list_at, q->op.list_at_us, &r)
                  : sq_client_history(c, q->op.key, &r);
    if (rc != 0) {
        enum MHD_Result out = send_result_error(h, conn, &r);
        sq_kv_result_free(&r);
        return out;
    }
    json_t *j = json_object();
    json_t *items = json_array();
    json_object_set_new(j, list ? "prefix" : "key", jstr(q->op.key, strlen(q->op.key)));
    size_t pos = 0;
    sq_kv_item it;
    int more;
    while ((more = sq_kv_next_item(&r, &pos, &it)) == 1) {
        json_t *o = json_object();
        if (list) {
            json_object_set_new(o, "key", jstr(it.key, it.key_len));
        }
        json_object_set_new(o, "version", jver(it.version));
        json_object_set_new(o, "timestamp", json_integer((json_int_t)it.timestamp));
        json_object_set_new(o, "time", jtime(it.timestamp));
        json_object_set_new(o, "size", json_integer(it.size));
        if (!list) {
            json_object_set_new(o, "deleted", json_boolean(it.deleted));
        }
        json_array_append_new(items, o);
    }
    json_object_set_new(j, "count", json_integer((json_int_t)json_array_size(items)));
    json_object_set_new(j, list ? "keys" : "versions", items);
    sq_kv_result_free(&r);
    if (more < 0) {
        json_decref(j);
        return send_error(h, conn, 502, SQ_EPROTO, "the member's answer did not decode", NULL,
                          NULL);
    }
    return queue(h, conn, 200, json_response(j));
}

static const char *store_name(uint64_t t)
{
    return t == SQ_STORE_PERSISTENT ? "persistent" : t == SQ_STORE_TRIGGER ? "trigger" : "volatile";
}

static enum MHD_Result do_pools(struct sq_http *h, struct MHD_Connection *conn, sq_client *c)
{
    sq_kv_result r = {0};
    if (sq_client_pool_list(c, &r) != 0) {
        enum MHD_Result out = send_result_error(h, conn, &r);
        sq_kv_result_free(&r);
        return out;
    }
    json_t *arr = json_array();
    size_t pos = 0;
    sq_kv_item it;
    while (sq_kv_next_item(&r, &pos, &it) == 1) {
        json_t *o = json_object();
        json_object_set_new(o, "path", jstr(it.key, it.key_len));
        json_object_set_new(o, "store", json_string(store_name(it.timestamp)));
        if (it.version < h->cfg->nsubgroups) {
            json_object_set_new(o, "subgroup", json_string(h->cfg->subgroups[it.version].name));
        }
        json_object_set_new(o, "shards", json_integer(it.size));
        json_array_append_new(arr, o);
    }
    sq_kv_result_free(&r);
    json_t *j = json_object();
    json_object_set_new(j, "pools", arr);
    return queue(h, conn, 200, json_response(j));
}

static enum MHD_Result do_pool_create(struct sq_http *h, struct MHD_Connection *conn, sq_client *c,
                                      struct req *q)
{
    json_error_t jerr;
    json_t *in = json_loadb((const char *)q->body.p, q->body.len, 0, &jerr);
    if (in == NULL) {
        char msg[300];
        snprintf(msg, sizeof(msg),
                 "the body is not JSON (%s, at line %d column %d); send "
                 "{\"path\": \"/orders\", \"store\": \"persistent\", \"shards\": 0}",
                 jerr.text, jerr.line, jerr.column);
        return send_error(h, conn, 400, SQ_EINVAL, msg, NULL, NULL);
    }
    const char *path = NULL, *store = NULL;
    json_int_t shards = 0;
    json_error_t perr;
    if (!json_is_object(in) || json_unpack_ex(in, &perr, JSON_STRICT, "{s:s, s:s, s?I}", "path",
                                              &path, "store", &store, "shards", &shards) != 0) {
        char msg[300];
        snprintf(msg, sizeof(msg),
                 "%s; send {\"path\": \"/orders\", \"store\": \"persistent\" (or volatile, "
                 "trigger, a subgroup's name), \"shards\": 0 (all)}",
                 json_is_object(in) ? perr.text : "the body is not a JSON object");
        json_decref(in);
        return send_error(h, conn, 400, SQ_EINVAL, msg, NULL, NULL);
    }
    if (shards < 0 || shards > 1024) {
        json_decref(in);
        return send_error(h, conn, 400, SQ_EINVAL, "shards must be 0 (all) or a shard count", NULL,
                          NULL);
    }
    sq_kv_result r = {0};
    enum MHD_Result out;
    if (sq_client_pool_create(c, path, store, (uint32_t)shards, &r) != 0) {
        out = send_result_error(h, conn, &r);
    } else {
        json_t *j = json_object();
        json_object_set_new(j, "path", json_string(path));
        json_object_set_new(j, "store", json_string(store));
        json_object_set_new(j, "version", jver(r.version));
        out = queue(h, conn, 201, json_response(j));
    }
    json_decref(in);
    sq_kv_result_free(&r);
    return out;
}

/* Status and metrics are this member's: asked on the connection to it alone. */
static int ask_local(struct sq_http *h, int format, sq_kv_result *r)
{
    pthread_mutex_lock(&h->mu);
    sq_client *c = h->local;
    h->local = NULL;
    pthread_mutex_unlock(&h->mu);
    char err[256];
    if (c == NULL) {
        if (sq_client_open_tls(&c, h->self, 3000, h->tls, err, sizeof(err)) != 0) {
            snprintf(r->message, sizeof(r->message), "%s", err);
            r->status = SQ_EPEER;
            return r->status;
        }
        use_direct(h, c);
    }
    int rc = sq_client_status(c, format, r);
    pthread_mutex_lock(&h->mu);
    if (h->local == NULL && !h->stopping) {
        h->local = c;
        c = NULL;
    }
    pthread_mutex_unlock(&h->mu);
    sq_client_close(c);
    return rc;
}

static enum MHD_Result do_status(struct sq_http *h, struct MHD_Connection *conn)
{
    sq_kv_result r = {0};
    enum MHD_Result out;
    if (ask_local(h, 1, &r) != 0) {
        out = send_result_error(h, conn, &r);
    } else {
        struct MHD_Response *resp =
            MHD_create_response_from_buffer(r.size, r.value, MHD_RESPMEM_MUST_COPY);
        if (resp != NULL) {
            MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
        }
        out = queue(h, conn, 200, resp);
    }
    sq_kv_result_free(&r);
    return out;
}

static enum MHD_Result do_metrics(struct sq_http *h, struct MHD_Connection *conn)
{
    sq_kv_result r = {0};
    int rc = ask_local(h, 2, &r);
    struct sq__buf b = {0};
    if (rc == 0) {
        sq__buf_add(&b, r.value, r.size);
    } else {
        /* the member does not answer: say so in the metrics rather than fail the scrape */
        char line[200];
        int n = snprintf(line, sizeof(line),
                         "# HELP squall_member_up Whether the member answered this scrape.\n"
                         "# TYPE squall_member_up gauge\nsquall_member_up 0\n");
        sq__buf_add(&b, line, (size_t)n);
    }
    sq_kv_result_free(&r);
    char t[2048];
    int n = snprintf(t, sizeof(t),
                     "# HELP squall_http_requests_total HTTP requests answered, by status class.\n"
                     "# TYPE squall_http_requests_total counter\n");
    sq__buf_add(&b, t, (size_t)n);
    for (int k = 1; k <= 5; k++) {
        n = snprintf(t, sizeof(t), "squall_http_requests_total{code=\"%dxx\"} %" PRIu64 "\n", k,
                     (uint64_t)atomic_load(&h->by_code[k]));
        sq__buf_add(&b, t, (size_t)n);
    }
    n = snprintf(t, sizeof(t),
                 "# HELP squall_http_connections Open HTTP connections.\n"
                 "# TYPE squall_http_connections gauge\n"
                 "squall_http_connections %d\n"
                 "# HELP squall_http_sse_streams Open server-sent event streams (watches).\n"
                 "# TYPE squall_http_sse_streams gauge\n"
                 "squall_http_sse_streams %d\n"
                 "# HELP squall_http_sse_events_total Events written to SSE streams.\n"
                 "# TYPE squall_http_sse_events_total counter\n"
                 "squall_http_sse_events_total %" PRIu64 "\n"
                 "# HELP squall_http_sse_dropped_total SSE streams closed because their reader "
                 "fell more than sse_buffer_bytes behind.\n"
                 "# TYPE squall_http_sse_dropped_total counter\n"
                 "squall_http_sse_dropped_total %" PRIu64 "\n"
                 "# HELP squall_http_inprocess_requests_total Key-value requests handed to this "
                 "member's service in-process (the others went over a client port).\n"
                 "# TYPE squall_http_inprocess_requests_total counter\n"
                 "squall_http_inprocess_requests_total %" PRIu64 "\n",
                 atomic_load(&h->connections), atomic_load(&h->nstreams),
                 (uint64_t)atomic_load(&h->sse_events), (uint64_t)atomic_load(&h->sse_dropped),
                 (uint64_t)atomic_load(&h->inproc));
    sq__buf_add(&b, t, (size_t)n);
    struct MHD_Response *resp = MHD_create_response_from_buffer(b.len, b.p, MHD_RESPMEM_MUST_COPY);
    sq__buf_free(&b);
    if (resp != NULL) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                                "text/plain; version=0.0.4; charset=utf-8");
    }
    return queue(h, conn, 200, resp);
}

static enum MHD_Result do_console(struct sq_http *h, struct MHD_Connection *conn)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        sq__console_html_len, (void *)sq__console_html, MHD_RESPMEM_PERSISTENT);
    if (resp != NULL) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/html; charset=utf-8");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    }
    return queue(h, conn, 200, resp);
}

/* ---- server-sent events ---- */

struct sse {
    struct sse *next;
    struct sq_http *h;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct sq__buf q; /* event text not yet written: [off, len) */
    bool overflow;
    bool closing; /* the connection is gone: the watch callback stops waiting for room */
    bool ended;   /* the watch failed: the stream ends once its buffer is written */
    sq_client *c;
    char key[SQ_HTTP_MAX_KEY + 1];
    uint64_t start_from[SQ_CLIENT_WATCH_SHARDS];
    pthread_t thread; /* sse_watcher */
    bool thread_started;
    uint64_t wid;
    uint32_t nshards; /* of the pool: event ids carry every shard's position when > 1 */
    uint64_t next_from[SQ_CLIENT_WATCH_SHARDS]; /* per shard, after the last event */
    uint64_t progress_ms;                       /* the reader last took something from the buffer */
};

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Base64 of a value that is not UTF-8 text (RFC 4648, with padding). */
static json_t *jbase64(const uint8_t *p, size_t n)
{
    size_t m = 4 * ((n + 2) / 3);
    char *o = malloc(m + 1);
    if (o == NULL) {
        return json_string("");
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        o[k++] = b64[v >> 18 & 63];
        o[k++] = b64[v >> 12 & 63];
        o[k++] = i + 1 < n ? b64[v >> 6 & 63] : '=';
        o[k++] = i + 2 < n ? b64[v & 63] : '=';
    }
    json_t *j = json_stringn(o, k);
    free(o);
    return j;
}

/* The client's I/O thread: one update, queued as one event for the connection's thread. */
static void sse_event(void *arg, const sq_kv_event *ev)
{
    struct sse *s = arg;
    json_t *j = json_object();
    json_object_set_new(j, "key", jstr(ev->key, ev->key_len));
    json_object_set_new(j, "version", jver(ev->version));
    json_object_set_new(j, "timestamp", json_integer((json_int_t)ev->timestamp));
    json_object_set_new(j, "time", jtime(ev->timestamp));
    json_object_set_new(j, "deleted", json_boolean(ev->deleted));
    json_object_set_new(j, "shard", json_integer(ev->shard));
    if (!ev->deleted) {
        json_t *v = json_stringn(ev->value, ev->size);
        json_object_set_new(j, v != NULL ? "value" : "value_base64",
                            v != NULL ? v : jbase64(ev->value, ev->size));
        json_object_set_new(j, "size", json_integer((json_int_t)ev->size));
    }
    char *data = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (data == NULL) {
        return;
    }
    pthread_mutex_lock(&s->mu);
    if (ev->shard < SQ_CLIENT_WATCH_SHARDS) {
        s->next_from[ev->shard] = ev->version + 1;
    }
    char id[40 * SQ_CLIENT_WATCH_SHARDS];
    sq__http_event_id(id, sizeof(id), ev->version, s->next_from, s->nshards);
    size_t need = strlen(data) + strlen(id) + 40;
    while (!s->overflow && !s->closing && !atomic_load(&s->h->stopping) && s->q.len > s->q.off &&
           s->q.len - s->q.off + need > s->h->sse_buffer) {
        if (sq__mono_ms() >= s->progress_ms + SSE_STALL_MS) {
            s->overflow = true; /* the reader is not reading: its stream ends, it resumes */
            break;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    if (s->overflow || s->closing) {
        /* nothing more goes to this stream */
    } else if (sq__buf_reserve(&s->q, need) == 0) {
        int n = snprintf((char *)s->q.p + s->q.len, need, "id: %s\nevent: %s\ndata: %s\n\n", id,
                         ev->deleted ? "delete" : "put", data);
        s->q.len += (size_t)n;
        atomic_fetch_add(&s->h->sse_events, 1);
    } else {
        s->overflow = true;
    }
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    free(data);
}

/* The connection's thread: writes queued events, a comment when idle, ends on overflow. */
static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    struct sse *s = cls;
    pthread_mutex_lock(&s->mu);
    uint64_t until = sq__mono_ms() + s->h->keepalive_ms;
    while (s->q.len == s->q.off && !s->overflow && !s->ended && !atomic_load(&s->h->stopping) &&
           sq__mono_ms() < until) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    ssize_t n;
    if (s->q.len > s->q.off) {
        size_t k = SQ_MIN(max, s->q.len - s->q.off);
        memcpy(buf, s->q.p + s->q.off, k);
        s->q.off += k;
        if (s->q.off == s->q.len) {
            s->q.off = s->q.len = 0;
        }
        n = (ssize_t)k;
        s->progress_ms = sq__mono_ms();
        pthread_cond_broadcast(&s->cv); /* room for a watch callback waiting for it */
    } else if (s->overflow) {
        atomic_fetch_add(&s->h->sse_dropped, 1);
        sq__log(SQ_LOG_WARN,
                "http: dropping an event stream whose reader took nothing for %d s of a full "
                "%" PRIu64 "-byte buffer (it resumes with Last-Event-ID)",
                SSE_STALL_MS / 1000, s->h->sse_buffer);
        n = MHD_CONTENT_READER_END_WITH_ERROR;
    } else if (atomic_load(&s->h->stopping) || s->ended) {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    } else {
        static const char ping[] = ": keep-alive\n\n";
        n = (ssize_t)SQ_MIN(max, sizeof(ping) - 1);
        memcpy(buf, ping, (size_t)n);
    }
    pthread_mutex_unlock(&s->mu);
    return n;
}

static void sse_free(void *cls)
{
    struct sse *s = cls;
    struct sq_http *h = s->h;
    pthread_mutex_lock(&s->mu);
    s->closing = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (s->thread_started) {
        pthread_join(s->thread, NULL); /* its callbacks no longer wait: the watch call returns */
    }
    if (s->wid != 0) {
        (void)sq_client_unwatch(s->c, s->wid);
    }
    pthread_mutex_lock(&h->mu);
    for (struct sse **p = &h->streams; *p != NULL; p = &(*p)->next) {
        if (*p == s) {
            *p = s->next;
            break;
        }
    }
    pthread_mutex_unlock(&h->mu);
    atomic_fetch_sub(&h->nstreams, 1);
    /* Never back to the pool: should the member have missed the unwatch (or registered a watch
     * whose answer came too late), closing the connection is what ends the watch there. */
    sq_client_close(s->c);
    sq__buf_free(&s->q);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* The shards of the pool that holds `target` (0 when no pool does), or the error of the pool
 * list in *r. */
static uint32_t shards_of(sq_client *c, const char *target, sq_kv_result *r_out)
{
    sq_kv_result r = {0};
    uint32_t shards = 0;
    size_t best = 0;
    r_out->status = sq_client_pool_list(c, &r);
    if (r_out->status != 0) {
        memcpy(r_out->message, r.message, sizeof(r.message));
    } else {
        size_t pos = 0;
        sq_kv_item it;
        while (sq_kv_next_item(&r, &pos, &it) == 1) {
            if (it.key_len > best && strncmp(target, it.key, it.key_len) == 0 &&
                target[it.key_len] == '/') {
                best = it.key_len;
                shards = it.size;
            }
        }
    }
    sq_kv_result_free(&r);
    return shards;
}

/* The stream's watch, started on a thread of its own: the replay of what the stream missed
 * fills its buffer while the connection's thread already writes it out (the watch's events may
 * come before its answer, and a callback waiting for room holds the client's I/O thread, so the
 * call must not be made by the thread that drains the buffer). An error after the headers went ends
 * the stream with an "error" event; an EventSource then reconnects with Last-Event-ID. */
static void *sse_watcher(void *arg)
{
    struct sse *s = arg;
    uint64_t wid = 0;
    int rc = sq_client_watch_shards(s->c, s->key, s->start_from, SQ_CLIENT_WATCH_SHARDS, sse_event,
                                    s, &wid);
    pthread_mutex_lock(&s->mu);
    if (rc == 0) {
        s->wid = wid;
    } else {
        json_t *j = json_object();
        json_object_set_new(j, "error", json_string(sq_err_name(rc)));
        char msg[300];
        snprintf(msg, sizeof(msg), "the watch of %.200s failed: %s", s->key, sq_strerror(rc));
        json_object_set_new(j, "message", jstr(msg, strlen(msg)));
        char *data = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        if (data != NULL) {
            size_t need = strlen(data) + 32;
            if (sq__buf_reserve(&s->q, need) == 0) {
                int n =
                    snprintf((char *)s->q.p + s->q.len, need, "event: error\ndata: %s\n\n", data);
                s->q.len += (size_t)n;
            }
            free(data);
        }
        s->ended = true;
    }
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static enum MHD_Result do_watch(struct sq_http *h, struct MHD_Connection *conn, sq_client *c,
                                struct req *q)
{
    size_t klen = strlen(q->op.key);
    bool prefix = q->op.key[klen - 1] == '/';
    sq_kv_result pr = {0};
    uint32_t shards = shards_of(c, q->op.key, &pr);
    if (pr.status != 0) {
        client_give(h, c);
        return send_result_error(h, conn, &pr);
    }
    if (shards == 0) {
        char msg[300];
        snprintf(msg, sizeof(msg), "cannot watch %.200s: no object pool holds it", q->op.key);
        client_give(h, c);
        return send_error(h, conn, 404, SQ_ENOPOOL, msg, NULL, NULL);
    }
    struct sse *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        client_give(h, c);
        return MHD_NO;
    }
    s->h = h;
    s->c = c;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    memcpy(s->key, q->op.key, klen + 1);
    s->nshards = prefix ? shards : 1;
    s->progress_ms = sq__mono_ms();
    for (uint32_t k = 0; k < SQ_CLIENT_WATCH_SHARDS; k++) {
        s->next_from[k] = k < q->op.nfrom ? q->op.from[k] : 0;
        s->start_from[k] = s->next_from[k];
    }
    atomic_fetch_add(&h->nstreams, 1);
    pthread_mutex_lock(&h->mu);
    s->next = h->streams;
    h->streams = s;
    pthread_mutex_unlock(&h->mu);
    static const char hello[] = "retry: 1000\n: watching\n\n";
    sq__buf_add(&s->q, hello, sizeof(hello) - 1);
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, sse_read, s, sse_free);
    if (resp == NULL) {
        sse_free(s);
        return MHD_NO;
    }
    if (pthread_create(&s->thread, NULL, sse_watcher, s) != 0) {
        MHD_destroy_response(resp); /* frees s through sse_free */
        return send_error(h, conn, 503, SQ_ENOMEM, "cannot start the watch", NULL, NULL);
    }
    s->thread_started = true;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    return queue(h, conn, 200, resp);
}

/* ---- the request handler ---- */

struct lookup_ctx {
    struct MHD_Connection *conn;
};

struct find_arg {
    const char *name;
    const char *value;
    bool found;
};

static enum MHD_Result find_arg_it(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    (void)kind;
    struct find_arg *f = cls;
    if (key != NULL && strcmp(key, f->name) == 0) {
        f->found = true;
        f->value = value != NULL ? value : "";
        return MHD_NO;
    }
    return MHD_YES;
}

static const char *lookup(void *arg, int kind, const char *name)
{
    struct MHD_Connection *conn = arg;
    if (kind == SQ_HTTP_HEADER) {
        return MHD_lookup_connection_value(conn, MHD_HEADER_KIND, name);
    }
    /* "?list" has no value: MHD's lookup would say NULL, as for an absent argument */
    struct find_arg f = {.name = name};
    MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, find_arg_it, &f);
    return f.found ? f.value : NULL;
}

struct each_ctx {
    bool (*fn)(const char *name, void *ctx);
    void *ctx;
    const char *bad;
};

static enum MHD_Result each_it(void *cls, enum MHD_ValueKind kind, const char *key,
                               const char *value)
{
    (void)kind;
    (void)value;
    struct each_ctx *e = cls;
    if (key != NULL && !e->fn(key, e->ctx)) {
        e->bad = key;
        return MHD_NO;
    }
    return MHD_YES;
}

static const char *each_arg(void *arg, bool (*fn)(const char *name, void *ctx), void *ctx)
{
    struct each_ctx e = {.fn = fn, .ctx = ctx};
    MHD_get_connection_values((struct MHD_Connection *)arg, MHD_GET_ARGUMENT_KIND, each_it, &e);
    return e.bad;
}

static enum MHD_Result execute(struct sq_http *h, struct MHD_Connection *conn, struct req *q)
{
    switch (q->op.kind) {
    case SQ_HTTP_STATUS:
        return do_status(h, conn);
    case SQ_HTTP_METRICS:
        return do_metrics(h, conn);
    case SQ_HTTP_CONSOLE:
        return do_console(h, conn);
    default:
        break;
    }
    char err[300];
    sq_client *c = client_take(h, err, sizeof(err));
    if (c == NULL) {
        char msg[400];
        snprintf(msg, sizeof(msg), "no member answers: %s", err);
        return send_error(h, conn, 503, SQ_ENOQUORUM, msg, NULL, NULL);
    }
    enum MHD_Result out;
    switch (q->op.kind) {
    case SQ_HTTP_KV_PUT:
    case SQ_HTTP_KV_DELETE:
        out = do_put(h, conn, c, q);
        break;
    case SQ_HTTP_KV_GET:
        out = do_get(h, conn, c, q);
        break;
    case SQ_HTTP_KV_LIST:
    case SQ_HTTP_HISTORY:
        out = do_items(h, conn, c, q);
        break;
    case SQ_HTTP_POOLS:
        out = do_pools(h, conn, c);
        break;
    case SQ_HTTP_POOL_CREATE:
        out = do_pool_create(h, conn, c, q);
        break;
    case SQ_HTTP_WATCH:
        return do_watch(h, conn, c, q); /* the stream keeps the client until it ends */
    default:
        out = send_error(h, conn, 500, SQ_EINVAL, "unknown route", NULL, NULL);
        break;
    }
    client_give(h, c);
    return out;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)version;
    struct sq_http *h = cls;
    struct req *q = *con_cls;
    if (q == NULL) {
        return MHD_NO; /* the URI callback could not allocate */
    }
    if (!q->started) {
        q->started = true;
        char why[400], allow[32];
        if (h->https_trust != NULL && !sq__http_tls_client_ok(conn, why, sizeof(why))) {
            q->answered = true;
            return send_error(h, conn, 403, SQ_EPERM, why, NULL, NULL);
        }
        int st = sq__http_translate(method, q->raw_url != NULL ? q->raw_url : url, url, lookup,
                                    each_arg, conn, &q->op, why, sizeof(why), allow);
        if (st != 0) {
            q->answered = true;
            return send_error(h, conn, st,
                              st == 405   ? SQ_ENOTSUP
                              : st == 404 ? SQ_ENOTFOUND
                                          : SQ_EINVAL,
                              why, allow, NULL);
        }
        const char *cl =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        bool takes_body = q->op.kind == SQ_HTTP_KV_PUT || q->op.kind == SQ_HTTP_POOL_CREATE;
        uint64_t limit = q->op.kind == SQ_HTTP_POOL_CREATE ? 65536 : h->max_body;
        uint64_t len = 0;
        if (takes_body && cl != NULL && sq__http_parse_version(cl, &len) && len > limit) {
            q->answered = true;
            char msg[200];
            snprintf(msg, sizeof(msg),
                     "the body is %" PRIu64 " bytes, more than the %" PRIu64
                     " this member takes ([http] max_body_bytes)",
                     len, limit);
            return send_error(h, conn, 413, SQ_EMSGSIZE, msg, NULL, NULL);
        }
        return MHD_YES; /* a body where none is taken is read and dropped */
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (q->answered) {
            return MHD_YES;
        }
        bool takes_body = q->op.kind == SQ_HTTP_KV_PUT || q->op.kind == SQ_HTTP_POOL_CREATE;
        uint64_t limit = q->op.kind == SQ_HTTP_POOL_CREATE ? 65536 : h->max_body;
        if (!takes_body) {
            return MHD_YES;
        }
        if (q->body.len + n > limit) {
            q->answered = true;
            q->pend_status = 413;
            q->pend_err = SQ_EMSGSIZE;
            snprintf(q->pend_msg, sizeof(q->pend_msg),
                     "the body is more than the %" PRIu64
                     " bytes this member takes ([http] max_body_bytes)",
                     limit);
            sq__buf_free(&q->body);
        } else if (sq__buf_add(&q->body, upload_data, n) != 0) {
            q->answered = true;
            q->pend_status = 503;
            q->pend_err = SQ_ENOMEM;
            snprintf(q->pend_msg, sizeof(q->pend_msg), "no memory for the body");
            sq__buf_free(&q->body);
        }
        return MHD_YES;
    }
    if (q->pend_status != 0) {
        int st = q->pend_status;
        q->pend_status = 0;
        return send_error(h, conn, st, q->pend_err, q->pend_msg, NULL, NULL);
    }
    if (q->answered) {
        return MHD_YES;
    }
    q->answered = true;
    return execute(h, conn, q);
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)cls;
    (void)conn;
    struct req *q = calloc(1, sizeof(*q));
    if (q != NULL) {
        q->raw_url = strdup(uri != NULL ? uri : "/");
    }
    return q;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    struct req *q = *con_cls;
    if (q != NULL) {
        free(q->raw_url);
        sq__buf_free(&q->body);
        free(q);
        *con_cls = NULL;
    }
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    (void)conn;
    (void)socket_context;
    struct sq_http *h = cls;
    atomic_fetch_add(&h->connections, toe == MHD_CONNECTION_NOTIFY_STARTED ? 1 : -1);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[400];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && msg[n - 1] == '\n') {
        msg[--n] = '\0';
    }
    sq__log(SQ_LOG_DEBUG, "http: %s", msg);
}

int sq__http_start(struct sq_http **out, const struct sq_config *cfg, struct sq_kv_server *kv,
                   char *err, size_t err_size)
{
    *out = NULL;
    int r = sq__config_rank_of(cfg, cfg->self_id);
    if (r < 0 || cfg->members[r].http_port == 0) {
        snprintf(err, err_size, "this member has no http_port");
        return SQ_ECONFIG;
    }
    const struct sq_member_addr *me = &cfg->members[r];
    struct sq_http *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        return SQ_ENOMEM;
    }
    h->cfg = malloc(sizeof(*cfg));
    h->max_idle = cfg->http_max_connections;
    h->idle = calloc(h->max_idle, sizeof(*h->idle));
    if (h->cfg == NULL || h->idle == NULL) {
        free(h->cfg);
        free(h->idle);
        free(h);
        return SQ_ENOMEM;
    }
    memcpy(h->cfg, cfg, sizeof(*cfg));
    h->kv = kv;
    pthread_mutex_init(&h->mu, NULL);
    h->my_id = cfg->self_id;
    h->max_body = cfg->http_max_body_bytes;
    h->sse_buffer = cfg->http_sse_buffer_bytes;
    h->keepalive_ms = SQ_MIN((uint64_t)SSE_KEEPALIVE_MS, cfg->http_idle_timeout_s * 1000u / 3);
    snprintf(h->self, sizeof(h->self), "%s:%u", me->host, me->client_port);
    size_t o = (size_t)snprintf(h->members, sizeof(h->members), "%s", h->self);
    for (uint32_t i = 0; i < cfg->nmembers; i++) {
        const struct sq_member_addr *m = &cfg->members[i];
        if ((int)i != r && m->client_port != 0 && o + 300 < sizeof(h->members)) {
            o += (size_t)snprintf(h->members + o, sizeof(h->members) - o, ",%s:%u", m->host,
                                  m->client_port);
        }
    }
    char port[16];
    snprintf(port, sizeof(port), "%u", me->http_port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE},
                    *ai = NULL;
    int gai = getaddrinfo(me->host, port, &hints, &ai);
    if (gai != 0 || ai == NULL) {
        snprintf(err, err_size, "HTTP address %s:%s: %s", me->host, port, gai_strerror(gai));
        sq__http_stop(h);
        return SQ_ECONFIG;
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6) {
        flags |= MHD_USE_IPv6;
    }
    struct MHD_OptionItem tls_opts[4] = {{MHD_OPTION_END, 0, NULL}};
    if (cfg->tls_cert_file[0] != '\0') {
        int rc =
            sq__http_tls_load(cfg, &h->https_key, &h->https_cert, &h->https_trust, err, err_size);
        if (rc != 0) {
            freeaddrinfo(ai);
            sq__http_stop(h);
            return rc;
        }
        /* To the client ports, as a member relays: its own certificate, its CA. */
        h->tls_files = (sq_client_tls){.ca_file = h->cfg->tls_ca_file,
                                       .cert_file = h->cfg->tls_cert_file,
                                       .key_file = h->cfg->tls_key_file};
        h->tls = &h->tls_files;
        flags |= MHD_USE_TLS;
        tls_opts[0] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, h->https_key};
        tls_opts[1] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, h->https_cert};
        tls_opts[2] = h->https_trust != NULL
                          ? (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_TRUST, 0, h->https_trust}
                          : (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
        tls_opts[3] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    }
    h->d = MHD_start_daemon(flags, (uint16_t)me->http_port, NULL, NULL, on_request, h,
                            MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_LISTENING_ADDRESS_REUSE,
                            1u, MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->http_max_connections,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->http_idle_timeout_s,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)cfg->http_max_header_bytes,
                            MHD_OPTION_URI_LOG_CALLBACK, on_uri, h, MHD_OPTION_NOTIFY_COMPLETED,
                            on_completed, h, MHD_OPTION_NOTIFY_CONNECTION, on_connection, h,
                            MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h, MHD_OPTION_ARRAY,
                            tls_opts, MHD_OPTION_END);
    if (h->d == NULL) {
        snprintf(err, err_size, "cannot listen for HTTP on %s:%s (%s)", me->host, port,
                 errno != 0 ? strerror(errno) : "libmicrohttpd refused to start");
        freeaddrinfo(ai);
        sq__http_stop(h);
        return SQ_EIO;
    }
    freeaddrinfo(ai);
    *out = h;
    return 0;
}

void sq__http_stop(struct sq_http *h)
{
    if (h == NULL) {
        return;
    }
    pthread_mutex_lock(&h->mu);
    h->stopping = true;
    for (struct sse *s = h->streams; s != NULL; s = s->next) {
        pthread_mutex_lock(&s->mu);
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
    pthread_mutex_unlock(&h->mu);
    if (h->d != NULL) {
        MHD_stop_daemon(h->d);
    }
    for (uint32_t i = 0; i < h->nidle; i++) {
        sq_client_close(h->idle[i]);
    }
    sq_client_close(h->local);
    pthread_mutex_destroy(&h->mu);
    free(h->idle);
    if (h->cfg != NULL) {
        explicit_bzero(h->cfg->group_key, sizeof(h->cfg->group_key));
    }
    free(h->cfg);
    free(h->https_key);
    free(h->https_cert);
    free(h->https_trust);
    free(h);
}
