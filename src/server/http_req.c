/* http_req.c: one HTTP request translated into a key-value operation (routes, query arguments,
 * conditional headers), and the parsing of versions, times, ETags and SSE event ids. No I/O:
 * the fuzz target (tests/fuzz/fuzz_http.c) drives it with arbitrary requests. */
#include <ctype.h>
#include <stdarg.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "server/http.h"

bool sq__http_parse_version(const char *s, uint64_t *out)
{
    if (s == NULL || *s == '\0') {
        return false;
    }
    int base = 10;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    if (!isxdigit((unsigned char)*s) || (base == 10 && !isdigit((unsigned char)*s))) {
        return false;
    }
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, base);
    if (errno != 0 || *end != '\0') {
        return false;
    }
    *out = v;
    return true;
}

bool sq__http_parse_etag(const char *s, uint64_t *out)
{
    if (s == NULL) {
        return false;
    }
    while (*s == ' ' || *s == '\t') {
        s++;
    }
    if (s[0] == 'W' && s[1] == '/') {
        s += 2;
    }
    char buf[40];
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t')) {
        n--;
    }
    if (n >= 2 && s[0] == '"' && s[n - 1] == '"') {
        s++;
        n -= 2;
    }
    if (n == 0 || n >= sizeof(buf)) {
        return false;
    }
    memcpy(buf, s, n);
    buf[n] = '\0';
    return sq__http_parse_version(buf, out);
}

bool sq__http_parse_time(const char *s, uint64_t *us)
{
    if (s == NULL || *s == '\0') {
        return false;
    }
    bool digits = true;
    for (const char *p = s; *p != '\0'; p++) {
        digits = digits && isdigit((unsigned char)*p);
    }
    if (digits) {
        return sq__http_parse_version(s, us);
    }
    /* RFC 3339: 2026-12-07T11:00:00[.ffffff](Z|+hh:mm|-hh:mm); a space for the T is allowed */
    if (strlen(s) > 64 || strlen(s) < 19 || (s[10] != 'T' && s[10] != 't' && s[10] != ' ')) {
        return false;
    }
    char buf[72];
    snprintf(buf, sizeof(buf), "%s", s);
    buf[10] = 'T';
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *p = strptime(buf, "%Y-%m-%dT%H:%M:%S", &tm);
    if (p == NULL || p != buf + 19) {
        return false; /* strptime accepts single digits: the fields must be the fixed width */
    }
    uint64_t frac = 0;
    if (*p == '.') {
        p++;
        int nd = 0;
        while (isdigit((unsigned char)*p)) {
            if (nd < 6) {
                frac = frac * 10 + (uint64_t)(*p - '0');
            }
            nd++;
            p++;
        }
        if (nd == 0 || nd > 9) {
            return false;
        }
        for (int i = nd; i < 6; i++) {
            frac *= 10;
        }
    }
    long offset_s = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1;
        p++;
        if (!isdigit((unsigned char)p[0]) || !isdigit((unsigned char)p[1])) {
            return false;
        }
        int hh = (p[0] - '0') * 10 + (p[1] - '0');
        p += 2;
        if (*p == ':') {
            p++;
        }
        if (!isdigit((unsigned char)p[0]) || !isdigit((unsigned char)p[1])) {
            return false;
        }
        int mm = (p[0] - '0') * 10 + (p[1] - '0');
        p += 2;
        if (hh > 23 || mm > 59) {
            return false;
        }
        offset_s = sign * (hh * 3600L + mm * 60L);
    } else {
        return false; /* a time without a zone would mean the member's: say which */
    }
    if (*p != '\0' || tm.tm_year < 70) {
        return false;
    }
    time_t t = timegm(&tm);
    if (t == (time_t)-1 || (long long)t - offset_s < 0) {
        return false;
    }
    *us = (uint64_t)((long long)t - offset_s) * 1000000u + frac;
    return true;
}

bool sq__http_parse_event_id(const char *s, uint64_t *from, uint32_t *nfrom)
{
    if (s == NULL || strlen(s) > 40 * SQ_CLIENT_WATCH_SHARDS) {
        return false;
    }
    char buf[40 * SQ_CLIENT_WATCH_SHARDS + 1];
    snprintf(buf, sizeof(buf), "%s", s);
    char *semi = strchr(buf, ';');
    if (semi != NULL) {
        *semi = '\0';
    }
    uint64_t v;
    if (!sq__http_parse_version(buf, &v) || v == UINT64_MAX) {
        return false;
    }
    if (semi == NULL) {
        for (uint32_t k = 0; k < SQ_CLIENT_WATCH_SHARDS; k++) {
            from[k] = v + 1;
        }
        *nfrom = SQ_CLIENT_WATCH_SHARDS;
        return true;
    }
    uint32_t n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(semi + 1, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        if (n == SQ_CLIENT_WATCH_SHARDS || !sq__http_parse_version(tok, &from[n])) {
            return false;
        }
        n++;
    }
    if (n == 0) {
        return false;
    }
    *nfrom = n;
    return true;
}

size_t sq__http_event_id(char *buf, size_t size, uint64_t version, const uint64_t *next,
                         uint32_t nshards)
{
    int n = snprintf(buf, size, "0x%" PRIx64, version);
    for (uint32_t k = 0; nshards > 1 && k < nshards && n >= 0 && (size_t)n < size; k++) {
        n += snprintf(buf + n, size - (size_t)n, "%s0x%" PRIx64, k ? "," : ";", next[k]);
    }
    return n < 0 ? 0 : (size_t)n < size ? (size_t)n : size - 1;
}

void sq__http_iso_time(char *buf, size_t size, uint64_t us)
{
    time_t t = (time_t)(us / 1000000u);
    struct tm tm;
    gmtime_r(&t, &tm);
    char date[40];
    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, size, "%s.%06uZ", date, (unsigned)(us % 1000000u));
}

int sq__http_status_of(int err)
{
    if (sq_err_transient(err)) {
        return 503;
    }
    switch (err) {
    case 0:
        return 200;
    case SQ_EINVAL:
    case SQ_ENOTSUP:
        return 400;
    case SQ_ENOTFOUND:
    case SQ_ENOPOOL:
        return 404;
    case SQ_EEXIST:
        return 409;
    case SQ_ECONFLICT:
        return 412;
    case SQ_EMSGSIZE:
        return 413;
    case SQ_ENOSPC:
        return 507;
    case SQ_EPROTO:
        return 502;
    default:
        return 500;
    }
}

/* ---- translation ---- */

struct args_ctx {
    const char *const *known;
    const char *bad;
};

static bool known_arg(const char *name, void *ctx)
{
    struct args_ctx *a = ctx;
    for (const char *const *k = a->known; *k != NULL; k++) {
        if (strcmp(name, *k) == 0) {
            return true;
        }
    }
    return false;
}

static int fail(char *why, size_t why_size, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *why, size_t why_size, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_size, fmt, ap);
    va_end(ap);
    return status;
}

/* Percent-escapes in the raw URL: each '%' starts two hex digits, and none is a NUL (which would
 * cut a key short after decoding). */
static int check_escapes(const char *raw, char *why, size_t why_size)
{
    for (const char *p = raw; *p != '\0'; p++) {
        if (*p != '%') {
            continue;
        }
        if (!isxdigit((unsigned char)p[1]) || !isxdigit((unsigned char)p[2])) {
            return fail(why, why_size, 400,
                        "bad percent-encoding at '%.3s' (a %% needs two hex "
                        "digits)",
                        p);
        }
        if (p[1] == '0' && p[2] == '0') {
            return fail(why, why_size, 400, "a key cannot hold a NUL byte (%%00)");
        }
        p += 2;
    }
    return 0;
}

/* A key (or a prefix ending in '/') under a route: a path with no empty, "." or ".." segment
 * (HTTP clients and proxies rewrite those, so such a key could not be reached reliably). */
static int take_key(struct sq_http_op *op, const char *rest, bool prefix_ok, char *why,
                    size_t why_size)
{
    size_t n = strlen(rest);
    if (n < 2 || rest[0] != '/') {
        return fail(why, why_size, 400, "name a key after the route: /v1/kv/POOL/KEY");
    }
    if (n > SQ_HTTP_MAX_KEY) {
        return fail(why, why_size, 414, "the key is %zu bytes, more than the %d a key may have", n,
                    SQ_HTTP_MAX_KEY);
    }
    if (rest[n - 1] == '/' && !prefix_ok) {
        return fail(why, why_size, 400, "'%s' is a prefix, not a key", rest);
    }
    for (const char *seg = rest + 1; *seg != '\0';) {
        const char *end = strchr(seg, '/');
        size_t len = end != NULL ? (size_t)(end - seg) : strlen(seg);
        if ((len == 0 && end != NULL) || (len == 1 && seg[0] == '.') ||
            (len == 2 && seg[0] == '.' && seg[1] == '.')) {
            return fail(why, why_size, 400,
                        "'%s' is not a key: no segment may be empty, '.' or '..'", rest);
        }
        seg = end != NULL ? end + 1 : seg + len;
    }
    memcpy(op->key, rest, n + 1);
    return 0;
}

static bool truthy(const char *v, bool *out)
{
    if (v == NULL || *v == '\0' || strcmp(v, "1") == 0 || strcasecmp(v, "true") == 0) {
        *out = true;
        return true;
    }
    if (strcmp(v, "0") == 0 || strcasecmp(v, "false") == 0) {
        *out = false;
        return true;
    }
    return false;
}

static int check_args(sq_http_args_fn each_arg, void *arg, const char *const *known,
                      const char *known_text, char *why, size_t why_size)
{
    struct args_ctx a = {.known = known};
    const char *bad = each_arg(arg, known_arg, &a);
    if (bad != NULL) {
        return fail(why, why_size, 400, "unknown query parameter '%.60s' (known here: %s)", bad,
                    known_text);
    }
    return 0;
}

/* ?at=: a time, or the 400 that says what a time looks like. */
static int take_time(const char *at, uint64_t *us, char *why, size_t why_size)
{
    if (!sq__http_parse_time(at, us)) {
        return fail(why, why_size, 400,
                    "?at=%.60s is not a time: microseconds since the epoch, or RFC 3339 "
                    "such as 2026-12-07T11:00:00Z",
                    at);
    }
    return 0;
}

static int kv_get_args(struct sq_http_op *op, sq_http_lookup_fn lookup, void *arg, char *why,
                       size_t why_size)
{
    const char *v = lookup(arg, SQ_HTTP_ARG, "version");
    const char *at = lookup(arg, SQ_HTTP_ARG, "at");
    const char *st = lookup(arg, SQ_HTTP_ARG, "stable");
    if (v != NULL && at != NULL) {
        return fail(why, why_size, 400, "give ?version= or ?at=, not both");
    }
    if (v != NULL) {
        if (!sq__http_parse_version(v, &op->get.version)) {
            return fail(why, why_size, 400, "?version=%.40s is not a version (0x... or decimal)",
                        v);
        }
        op->get.at_version = 1;
    }
    if (at != NULL) {
        int rc = take_time(at, &op->get.time_us, why, why_size);
        if (rc != 0) {
            return rc;
        }
        op->get.at_time = 1;
    }
    bool stable = false;
    if (st != NULL && !truthy(st, &stable)) {
        return fail(why, why_size, 400, "?stable=%.20s is not 1, 0, true or false", st);
    }
    op->get.stable = stable;
    const char *inm = lookup(arg, SQ_HTTP_HEADER, "If-None-Match");
    if (inm != NULL) {
        if (strcmp(inm, "*") == 0) {
            op->if_none_match = true;
            op->inm_version = UINT64_MAX; /* any current version matches */
        } else if (sq__http_parse_etag(inm, &op->inm_version)) {
            op->if_none_match = true;
        } else {
            return fail(why, why_size, 400,
                        "If-None-Match: %.40s is not an ETag of squall's "
                        "(\"0x...\")",
                        inm);
        }
    }
    return 0;
}

static int kv_write_headers(struct sq_http_op *op, sq_http_lookup_fn lookup, void *arg, char *why,
                            size_t why_size)
{
    const char *im = lookup(arg, SQ_HTTP_HEADER, "If-Match");
    const char *inm = lookup(arg, SQ_HTTP_HEADER, "If-None-Match");
    if (im != NULL && inm != NULL) {
        return fail(why, why_size, 400, "give If-Match or If-None-Match, not both");
    }
    if (im != NULL) {
        if (strcmp(im, "*") == 0) {
            return fail(why, why_size, 400,
                        "If-Match: * is not supported: give the version you read (ETag)");
        }
        if (!sq__http_parse_etag(im, &op->put.version)) {
            return fail(why, why_size, 400,
                        "If-Match: %.40s is not an ETag of squall's "
                        "(\"0x...\")",
                        im);
        }
        op->put.if_version = 1;
    }
    if (inm != NULL) {
        if (strcmp(inm, "*") != 0 || op->kind != SQ_HTTP_KV_PUT) {
            return fail(why, why_size, 400, "a %s takes only If-None-Match: * (must not exist)",
                        op->kind == SQ_HTTP_KV_PUT ? "PUT"
                                                   : "DELETE: If-None-Match makes no "
                                                     "sense here; it");
        }
        op->put.if_absent = 1;
    }
    return 0;
}

static int method_is(const char *method, const char *m)
{
    return strcmp(method, m) == 0;
}

int sq__http_translate(const char *method, const char *raw_url, const char *path,
                       sq_http_lookup_fn lookup, sq_http_args_fn each_arg, void *arg,
                       struct sq_http_op *op, char *why, size_t why_size, char *allow)
{
    memset(op, 0, sizeof(*op));
    allow[0] = '\0';
    int rc = check_escapes(raw_url, why, why_size);
    if (rc != 0) {
        return rc;
    }
    bool get = method_is(method, "GET"), head = method_is(method, "HEAD");
    op->head = head;
#define ALLOW(list)                                                                                \
    do {                                                                                           \
        snprintf(allow, 32, "%s", list);                                                           \
        return fail(why, why_size, 405, "%s is not allowed on %.100s (allowed: %s)", method, path, \
                    list);                                                                         \
    } while (0)
    static const char *const none[] = {NULL};
    if (strcmp(path, "/") == 0 || strcmp(path, "/console") == 0 ||
        strcmp(path, "/index.html") == 0) {
        if (!get && !head) {
            ALLOW("GET, HEAD");
        }
        op->kind = SQ_HTTP_CONSOLE;
        return check_args(each_arg, arg, none, "none", why, why_size);
    }
    if (strcmp(path, "/metrics") == 0) {
        if (!get && !head) {
            ALLOW("GET, HEAD");
        }
        op->kind = SQ_HTTP_METRICS;
        return check_args(each_arg, arg, none, "none", why, why_size);
    }
    if (strcmp(path, "/v1/status") == 0) {
        if (!get && !head) {
            ALLOW("GET, HEAD");
        }
        op->kind = SQ_HTTP_STATUS;
        return check_args(each_arg, arg, none, "none", why, why_size);
    }
    if (strcmp(path, "/v1/pools") == 0 || strcmp(path, "/v1/pools/") == 0) {
        if (method_is(method, "POST")) {
            op->kind = SQ_HTTP_POOL_CREATE;
        } else if (get || head) {
            op->kind = SQ_HTTP_POOLS;
        } else {
            ALLOW("GET, HEAD, POST");
        }
        return check_args(each_arg, arg, none, "none", why, why_size);
    }
    if (strncmp(path, "/v1/kv/", 7) == 0 || strcmp(path, "/v1/kv") == 0) {
        const char *rest = path + 6;
        bool list_arg = lookup(arg, SQ_HTTP_ARG, "list") != NULL;
        size_t n = strlen(rest);
        bool prefix = list_arg || (n > 0 && rest[n - 1] == '/');
        if (method_is(method, "PUT")) {
            op->kind = SQ_HTTP_KV_PUT;
        } else if (method_is(method, "DELETE")) {
            op->kind = SQ_HTTP_KV_DELETE;
        } else if (get || head) {
            op->kind = prefix ? SQ_HTTP_KV_LIST : SQ_HTTP_KV_GET;
        } else {
            ALLOW("GET, HEAD, PUT, DELETE");
        }
        if (op->kind == SQ_HTTP_KV_LIST) {
            /* ?list on a path without its '/' lists under it as a prefix */
            char pre[SQ_HTTP_MAX_KEY + 2];
            if (n > 0 && rest[n - 1] != '/' && n < SQ_HTTP_MAX_KEY) {
                snprintf(pre, sizeof(pre), "%s/", rest);
                rest = pre;
            }
            rc = take_key(op, rest, true, why, why_size);
            static const char *const known[] = {"list", "at", NULL};
            if (rc == 0) {
                rc = check_args(each_arg, arg, known, "list, at", why, why_size);
            }
            const char *at = lookup(arg, SQ_HTTP_ARG, "at");
            if (rc == 0 && at != NULL) {
                rc = take_time(at, &op->list_at_us, why, why_size);
                op->list_at = rc == 0;
            }
            return rc;
        }
        rc = take_key(op, rest, false, why, why_size);
        if (rc != 0) {
            return rc;
        }
        if (op->kind == SQ_HTTP_KV_GET) {
            static const char *const known[] = {"version", "at", "stable", NULL};
            rc = check_args(each_arg, arg, known, "version, at, stable", why, why_size);
            op->get.size_only = head;
            return rc != 0 ? rc : kv_get_args(op, lookup, arg, why, why_size);
        }
        rc = check_args(each_arg, arg, none, "none", why, why_size);
        return rc != 0 ? rc : kv_write_headers(op, lookup, arg, why, why_size);
    }
    if (strncmp(path, "/v1/history/", 12) == 0 || strcmp(path, "/v1/history") == 0) {
        if (!get && !head) {
            ALLOW("GET, HEAD");
        }
        op->kind = SQ_HTTP_HISTORY;
        rc = take_key(op, path + 11, false, why, why_size);
        return rc != 0 ? rc : check_args(each_arg, arg, none, "none", why, why_size);
    }
    if (strncmp(path, "/v1/watch/", 10) == 0 || strcmp(path, "/v1/watch") == 0) {
        if (!get) {
            ALLOW("GET");
        }
        op->kind = SQ_HTTP_WATCH;
        rc = take_key(op, path + 9, true, why, why_size);
        static const char *const known[] = {"from", NULL};
        if (rc == 0) {
            rc = check_args(each_arg, arg, known, "from", why, why_size);
        }
        if (rc != 0) {
            return rc;
        }
        const char *from = lookup(arg, SQ_HTTP_ARG, "from");
        const char *last = lookup(arg, SQ_HTTP_HEADER, "Last-Event-ID");
        uint64_t v = 0;
        if (last != NULL && *last != '\0') {
            /* a reconnecting EventSource: just after the last event it saw */
            if (!sq__http_parse_event_id(last, op->from, &op->nfrom)) {
                return fail(why, why_size, 400,
                            "Last-Event-ID: %.60s is not an event id of this stream", last);
            }
        } else if (from != NULL) {
            if (!sq__http_parse_version(from, &v)) {
                return fail(why, why_size, 400, "?from=%.40s is not a version (0x... or decimal)",
                            from);
            }
            for (uint32_t k = 0; k < SQ_CLIENT_WATCH_SHARDS; k++) {
                op->from[k] = v;
            }
            op->nfrom = SQ_CLIENT_WATCH_SHARDS;
        }
        return 0;
    }
#undef ALLOW
    return fail(why, why_size, 404,
                "no such route: %.100s (routes: /v1/kv/KEY, /v1/history/KEY, /v1/watch/KEY, "
                "/v1/pools, /v1/status, /metrics, /)",
                path);
}
