/* test_http_req.c: the HTTP front end's translation of requests (src/server/http_req.c): routes
 * and methods, query arguments, conditional headers, keys that are refused, and the parsers of
 * versions, ETags, times and SSE event ids, on known inputs and answers. */
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "server/http.h"
#include "test.h"

/* A request's arguments and headers, "name=value" and "Name: value" strings. */
struct fake {
    const char *args[8];
    const char *hdrs[8];
};

static char found[256];

static const char *lookup(void *arg, int kind, const char *name)
{
    struct fake *f = arg;
    const char *const *list = kind == SQ_HTTP_ARG ? f->args : f->hdrs;
    size_t n = strlen(name);
    for (int i = 0; i < 8 && list[i] != NULL; i++) {
        const char *e = list[i];
        bool same = kind == SQ_HTTP_ARG ? strncmp(e, name, n) == 0 : strncasecmp(e, name, n) == 0;
        char sep = kind == SQ_HTTP_ARG ? '=' : ':';
        if (same && (e[n] == sep || (kind == SQ_HTTP_ARG && e[n] == '\0'))) {
            const char *v = e[n] == '\0' ? "" : e + n + 1;
            while (*v == ' ') {
                v++;
            }
            snprintf(found, sizeof(found), "%s", v);
            return found;
        }
    }
    return NULL;
}

static const char *each_arg(void *arg, bool (*fn)(const char *name, void *ctx), void *ctx)
{
    struct fake *f = arg;
    static char name[64];
    for (int i = 0; i < 8 && f->args[i] != NULL; i++) {
        size_t n = strcspn(f->args[i], "=");
        snprintf(name, sizeof(name), "%.*s", (int)n, f->args[i]);
        if (!fn(name, ctx)) {
            return name;
        }
    }
    return NULL;
}

static struct sq_http_op op;
static char why[400], allow[32];

static int tr(const char *method, const char *path, struct fake f)
{
    return sq__http_translate(method, path, path, lookup, each_arg, &f, &op, why, sizeof(why),
                              allow);
}

static void test_routes(void)
{
    CHECK_EQ_INT(tr("PUT", "/v1/kv/orders/42", (struct fake){0}), 0);
    CHECK_EQ_INT(op.kind, SQ_HTTP_KV_PUT);
    CHECK(strcmp(op.key, "/orders/42") == 0);
    CHECK_EQ_INT(tr("GET", "/v1/kv/orders/42", (struct fake){0}), 0);
    CHECK_EQ_INT(op.kind, SQ_HTTP_KV_GET);
    CHECK_EQ_INT(tr("HEAD", "/v1/kv/orders/42", (struct fake){0}), 0);
    CHECK(op.head && op.get.size_only);
    CHECK_EQ_INT(tr("DELETE", "/v1/kv/orders/42", (struct fake){0}), 0);
    CHECK_EQ_INT(op.kind, SQ_HTTP_KV_DELETE);
    CHECK_EQ_INT(tr("GET", "/v1/kv/orders/", (struct fake){0}), 0);
    CHECK_EQ_INT(op.kind, SQ_HTTP_KV_LIST);
    CHECK(strcmp(op.key, "/orders/") == 0);
    CHECK_EQ_INT(tr("GET", "/v1/kv/orders", (struct fake){.args = {"list"}}), 0);
    CHECK_EQ_INT(op.kind, SQ_HTTP_KV_LIST);
    CHECK(strcmp(op.key, "/orders/") == 0);
    CHECK_EQ_INT(tr("GET", "/v1/history/orders/42", (struct fake){0}), 0);
    CHECK_EQ_INT(op.kind, SQ_HTTP_HISTORY);
    CHECK_EQ_INT(tr("GET", "/v1/watch/orders/", (struct fake){0}), 0);
    CHECK_EQ_INT(op.kind, SQ_HTTP_WATCH);
    CHECK_EQ_INT(op.nfrom, 0);
    CHECK_EQ_INT(tr("POST", "/v1/pools", (struct fake){0}), 0);
    CHECK_EQ_INT(op.kind, SQ_HTTP_POOL_CREATE);
    CHECK_EQ_INT(tr("GET", "/v1/pools", (struct fake){0}), 0);
    CHECK_EQ_INT(op.kind, SQ_HTTP_POOLS);
    CHECK_EQ_INT(tr("GET", "/v1/status", (struct fake){0}), 0);
    CHECK_EQ_INT(tr("GET", "/metrics", (struct fake){0}), 0);
    CHECK_EQ_INT(op.kind, SQ_HTTP_METRICS);
    CHECK_EQ_INT(tr("GET", "/", (struct fake){0}), 0);
    CHECK_EQ_INT(op.kind, SQ_HTTP_CONSOLE);
    /* wrong methods name what is allowed */
    CHECK_EQ_INT(tr("POST", "/v1/kv/orders/42", (struct fake){0}), 405);
    CHECK(strcmp(allow, "GET, HEAD, PUT, DELETE") == 0);
    CHECK_EQ_INT(tr("PUT", "/v1/watch/orders/", (struct fake){0}), 405);
    CHECK(strcmp(allow, "GET") == 0);
    CHECK_EQ_INT(tr("DELETE", "/v1/pools", (struct fake){0}), 405);
    CHECK_EQ_INT(tr("GET", "/v2/kv/x", (struct fake){0}), 404);
    CHECK_EQ_INT(tr("GET", "/v1/kvx/a", (struct fake){0}), 404);
}

static void test_args_and_headers(void)
{
    CHECK_EQ_INT(tr("GET", "/v1/kv/o/1", (struct fake){.args = {"version=0x1f"}}), 0);
    CHECK(op.get.at_version && op.get.version == 0x1f);
    CHECK_EQ_INT(tr("GET", "/v1/kv/o/1", (struct fake){.args = {"version=31"}}), 0);
    CHECK(op.get.version == 31);
    CHECK_EQ_INT(tr("GET", "/v1/kv/o/1", (struct fake){.args = {"at=2026-12-07T11:00:00Z"}}), 0);
    CHECK(op.get.at_time && op.get.time_us == 1796641200000000ull);
    CHECK_EQ_INT(tr("GET", "/v1/kv/o/1", (struct fake){.args = {"stable=true"}}), 0);
    CHECK(op.get.stable);
    CHECK_EQ_INT(tr("GET", "/v1/kv/o/1", (struct fake){.args = {"stable=0"}}), 0);
    CHECK(!op.get.stable);
    CHECK_EQ_INT(tr("GET", "/v1/kv/o/1", (struct fake){.args = {"version=1", "at=5"}}), 400);
    CHECK_EQ_INT(tr("GET", "/v1/kv/o/1", (struct fake){.args = {"verison=1"}}), 400);
    CHECK_CONTAINS(why, "verison");
    CHECK_EQ_INT(tr("PUT", "/v1/kv/o/1", (struct fake){.args = {"version=1"}}), 400);
    CHECK_EQ_INT(tr("GET", "/v1/kv/o/1", (struct fake){.args = {"version=0x"}}), 400);
    CHECK_EQ_INT(tr("GET", "/v1/kv/o/1", (struct fake){.args = {"at=2026-12-07T11:00:00"}}), 400);
    CHECK_CONTAINS(why, "RFC 3339");
    CHECK_EQ_INT(tr("PUT", "/v1/kv/o/1", (struct fake){.hdrs = {"If-Match: \"0x2a\""}}), 0);
    CHECK(op.put.if_version && op.put.version == 0x2a);
    CHECK_EQ_INT(tr("PUT", "/v1/kv/o/1", (struct fake){.hdrs = {"if-match: W/\"0x2a\""}}), 0);
    CHECK(op.put.if_version && op.put.version == 0x2a);
    CHECK_EQ_INT(tr("PUT", "/v1/kv/o/1", (struct fake){.hdrs = {"If-None-Match: *"}}), 0);
    CHECK(op.put.if_absent && !op.put.if_version);
    CHECK_EQ_INT(tr("PUT", "/v1/kv/o/1", (struct fake){.hdrs = {"If-Match: *"}}), 400);
    CHECK_EQ_INT(
        tr("PUT", "/v1/kv/o/1", (struct fake){.hdrs = {"If-Match: \"0x1\"", "If-None-Match: *"}}),
        400);
    CHECK_EQ_INT(tr("DELETE", "/v1/kv/o/1", (struct fake){.hdrs = {"If-None-Match: *"}}), 400);
    CHECK_EQ_INT(tr("GET", "/v1/kv/o/1", (struct fake){.hdrs = {"If-None-Match: \"0x7\""}}), 0);
    CHECK(op.if_none_match && op.inm_version == 7);
    CHECK_EQ_INT(tr("GET", "/v1/watch/o/", (struct fake){.args = {"from=0x10"}}), 0);
    CHECK(op.nfrom == SQ_CLIENT_WATCH_SHARDS && op.from[0] == 16 && op.from[15] == 16);
    /* Last-Event-ID wins over ?from=: just after the event, per shard */
    CHECK_EQ_INT(tr("GET", "/v1/watch/o/",
                    (struct fake){.args = {"from=1"}, .hdrs = {"Last-Event-ID: 0x10"}}),
                 0);
    CHECK(op.from[0] == 17 && op.from[3] == 17);
    CHECK_EQ_INT(tr("GET", "/v1/watch/o/", (struct fake){.hdrs = {"Last-Event-ID: 0x5;0x9,0x2"}}),
                 0);
    CHECK(op.nfrom == 2 && op.from[0] == 9 && op.from[1] == 2);
    CHECK_EQ_INT(tr("GET", "/v1/watch/o/", (struct fake){.hdrs = {"Last-Event-ID: zz"}}), 400);
}

static void test_bad_keys(void)
{
    const char *bad[] = {"/v1/kv/orders/%zz",
                         "/v1/kv/orders/a%0",
                         "/v1/kv/orders/a%00b",
                         "/v1/kv/orders/../x",
                         "/v1/kv/orders/./x",
                         "/v1/kv/orders//x",
                         "/v1/kv/",
                         "/v1/kv",
                         "/v1/kv/orders/..",
                         "/v1/history/orders/"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int st = tr("GET", bad[i], (struct fake){0});
        CHECK_EQ_INT(st, 400);
        if (st != 400) {
            fprintf(stderr, "  for %s\n", bad[i]);
        }
    }
    char longkey[1200] = "/v1/kv/o/";
    memset(longkey + 9, 'k', 1100);
    CHECK_EQ_INT(tr("GET", longkey, (struct fake){0}), 414);
    CHECK_EQ_INT(tr("GET", "/v1/kv/orders/a%20b", (struct fake){0}), 0); /* escapes are fine */
}

static void test_parsers(void)
{
    uint64_t v = 0;
    CHECK(sq__http_parse_version("0x10", &v) && v == 16);
    CHECK(sq__http_parse_version("10", &v) && v == 10);
    CHECK(!sq__http_parse_version("", &v));
    CHECK(!sq__http_parse_version("0x", &v));
    CHECK(!sq__http_parse_version("1a", &v));
    CHECK(!sq__http_parse_version("-1", &v));
    CHECK(!sq__http_parse_version("0x10000000000000000", &v)); /* over 64 bits */
    CHECK(sq__http_parse_etag("\"0x5\"", &v) && v == 5);
    CHECK(sq__http_parse_etag(" W/\"0x6\" ", &v) && v == 6);
    CHECK(!sq__http_parse_etag("\"\"", &v));
    CHECK(sq__http_parse_time("1796641200000000", &v) && v == 1796641200000000ull);
    CHECK(sq__http_parse_time("2026-12-07T11:00:00.5Z", &v) && v == 1796641200500000ull);
    CHECK(sq__http_parse_time("2026-12-07 12:00:00.000001+01:00", &v) && v == 1796641200000001ull);
    CHECK(sq__http_parse_time("2026-12-07T10:30:00-0030", &v) && v == 1796641200000000ull);
    CHECK(!sq__http_parse_time("2026-12-7T11:00:00Z", &v));
    CHECK(!sq__http_parse_time("2026-12-07T11:00:00.Z", &v));
    CHECK(!sq__http_parse_time("2026-12-07T11:00:00+25:00", &v));
    CHECK(!sq__http_parse_time("1969-12-31T23:59:59Z", &v));
    char iso[64];
    sq__http_iso_time(iso, sizeof(iso), 1796641200000042ull);
    CHECK(strcmp(iso, "2026-12-07T11:00:00.000042Z") == 0);
    char id[200];
    uint64_t next[3] = {0x10, 0x0, 0x1234};
    sq__http_event_id(id, sizeof(id), 0xf, next, 3);
    CHECK(strcmp(id, "0xf;0x10,0x0,0x1234") == 0);
    sq__http_event_id(id, sizeof(id), 0xf, next, 1);
    CHECK(strcmp(id, "0xf") == 0);
    uint64_t from[SQ_CLIENT_WATCH_SHARDS];
    uint32_t n = 0;
    CHECK(sq__http_parse_event_id("0xf;0x10,0x0,0x1234", from, &n) && n == 3 && from[2] == 0x1234);
    CHECK(!sq__http_parse_event_id("0xf;", from, &n));
    CHECK(!sq__http_parse_event_id("0x1;1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17", from,
                                   &n)); /* more shards than exist */
    CHECK_EQ_INT(sq__http_status_of(SQ_ECONFLICT), 412);
    CHECK_EQ_INT(sq__http_status_of(SQ_ENOPOOL), 404);
    CHECK_EQ_INT(sq__http_status_of(SQ_ENOQUORUM), 503);
    CHECK_EQ_INT(sq__http_status_of(SQ_EMSGSIZE), 413);
    CHECK_EQ_INT(sq__http_status_of(SQ_EEXIST), 409);
}

int main(void)
{
    test_routes();
    test_args_and_headers();
    test_bad_keys();
    test_parsers();
    return sq_test_done("test_http_req");
}
