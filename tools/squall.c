/* squall.c: the squall command-line tool: pools, puts, gets, lists, histories and watches of
 * squall's key-value store, through the public client library (include/squall/client.h). */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "kv/wire.h" /* the protocol's limits, and the frame codec for the hello that checks a
                      * member (probe_members) */
#include "squall.h"
#include "squall/client.h"

/* Exit statuses: documented in usage(). */
#define EXIT_OK 0
#define EXIT_ERROR 1
#define EXIT_USAGE 2
#define EXIT_NOTFOUND 3
#define EXIT_CONFLICT 4
#define EXIT_UNREACHABLE 5

/* The client ports squall-local gives a three-member group with its default base port. */
#define DEFAULT_MEMBERS "127.0.0.1:7500,127.0.0.1:7501,127.0.0.1:7502"
/* The protocol's largest value: reading more from stdin would only be refused by the member,
 * after sending it all. */
#define MAX_VALUE_BYTES SQ_KV_MAX_VALUE
/* A pool path's longest (MAX_POOL_PATH in src/server/kvserver.c). */
#define MAX_POOL_PATH_BYTES 255
/* Text output shows this much of a value (watch), quoted and escaped; --json shows all of it. */
#define SHOW_VALUE_BYTES 120
/* Checking the members before the first call: how long a connection and the answer to the
 * client hello may take before the member counts as unreachable (connection) or as slow
 * (answer: then the call goes ahead and its own timeout applies). */
#define PROBE_CONNECT_MS 1000
#define PROBE_ANSWER_MS 2000
/* Positional arguments after the command: "pool create PATH TYPE" has the most. */
#define MAX_ARGS 3

enum {
    OPT_SHARDS,
    OPT_IF_VERSION,
    OPT_IF_ABSENT,
    OPT_VERSION,
    OPT_AT,
    OPT_STABLE,
    OPT_SIZE,
    OPT_FROM,
    OPT_COUNT,
    OPT_MEMBER,
    OPT_JSON,
    OPT_TIMEOUT,
    OPT_HELP,
    NOPTS
};
#define BIT(o) (1u << (o))
/* Options every command accepts, before or after its name. */
#define GLOBAL_OPTS (BIT(OPT_MEMBER) | BIT(OPT_JSON) | BIT(OPT_TIMEOUT) | BIT(OPT_HELP))
/* Options followed by a value (--opt V or --opt=V); the others are flags. */
#define VALUE_OPTS                                                                                 \
    (BIT(OPT_SHARDS) | BIT(OPT_IF_VERSION) | BIT(OPT_VERSION) | BIT(OPT_AT) | BIT(OPT_FROM) |      \
     BIT(OPT_COUNT) | BIT(OPT_MEMBER) | BIT(OPT_TIMEOUT))
static const char *const g_opts[NOPTS] = {"shards", "if-version", "if-absent", "version", "at",
                                          "stable", "size",       "from",      "count",   "member",
                                          "json",   "timeout",    "help"};

struct command;

struct cli {
    const struct command *cmd;
    const char *name; /* "get", "pool create": the prefix of error messages */
    const char *args[MAX_ARGS];
    int nargs;
    const char *optval[NOPTS];
    unsigned seen; /* BIT(OPT_*) of the options given */
    const char *members;
    bool json;
    int timeout_ms;
    uint64_t if_version, version, at_us, from, count; /* the options' values, once parsed */
    uint32_t shards;
};

typedef int (*run_fn)(sq_client *c, const struct cli *cli, sq_kv_result *r);

struct command {
    const char *name;
    int min_args, max_args;
    unsigned opts;
    run_fn run;
};

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: squall [--member HOST:PORT[,HOST:PORT...]] [--json] [--timeout MS] COMMAND ...\n"
        "  Reads and writes a squall group's key-value store through any of its members.\n"
        "commands:\n"
        "  pool create PATH TYPE [--shards N]\n"
        "        create the pool PATH (/orders) on the subgroup whose store type is TYPE\n"
        "        (volatile, persistent, trigger) or whose name is TYPE; N shards (default all)\n"
        "  pool ls                 the pools: PATH store=TYPE subgroup=N shards=K\n"
        "  put KEY VALUE [--if-version V | --if-absent]\n"
        "        put VALUE under KEY ('-' reads the value from stdin, binary-safe);\n"
        "        --if-version 0 means the key must not exist\n"
        "  get KEY [--version V | --at TIME] [--stable] [--size]\n"
        "        print the value's bytes as stored (the latest, or the latest at or before V or\n"
        "        TIME; to a pipe or file nothing is added: get KEY > FILE saves them exactly);\n"
        "        --stable: only what every replica holds; --size: size=N version=... instead\n"
        "  rm KEY [--if-version V]  remove KEY (the removal gets a version of its own)\n"
        "  ls PREFIX [--at TIME]   keys under PREFIX: KEY version=... timestamp=... size=N\n"
        "  history KEY             every version of KEY, oldest first:\n"
        "                          version=... timestamp=... size=N, or ... removed\n"
        "  watch TARGET [--from V] [--count N]\n"
        "        print every update of a key, or of the keys under a prefix ending in '/',\n"
        "        from version V on, until SIGINT or SIGTERM, or until N updates are printed:\n"
        "        KEY version=... timestamp=... size=N value=\"...\" (quoted and escaped, the\n"
        "        first %d bytes; --json gives whole values), or KEY version=... ... removed\n"
        "  status                  the connected member's view of the group\n"
        "Keys are paths under a pool (/orders/42: no '//', no trailing '/', at most %u bytes);\n"
        "a PREFIX is one inside a pool (/orders/ or /orders/2026-).\n"
        "options:\n"
        "  --member LIST   the members' client addresses (client_port), comma-separated\n"
        "                  (default: $SQUALL_MEMBERS, else " DEFAULT_MEMBERS ")\n"
        "  --json          one JSON object a result line; an error is also printed as\n"
        "                  {\"error\":\"SQ_E...\",\"message\":...} on stdout\n"
        "  --timeout MS    bound on each call, retries on other members included (default 10000)\n"
        "  --              end of options (for a VALUE that starts with --)\n"
        "Versions print as 0x... and are accepted in hex (0x...) or decimal. TIME is ISO-8601\n"
        "UTC (2026-11-24T21:10:03.123456Z: fraction optional, Z or +00:00) or @MICROSECONDS\n"
        "since the epoch; timestamps print as ISO-8601 UTC with microseconds.\n"
        "exit status: 0 ok, 1 other error, 2 usage error (a bad command, option or argument,\n"
        "             found by squall or by the member: a path that is not a key, a pool given\n"
        "             as a key, an unknown store type), 3 not found (no such key or version, or\n"
        "             no pool holds the key), 4 conflict (not at the expected version, or already\n"
        "             exists), 5 cannot reach any member (each one's reason is given), or timed\n"
        "             out\n",
        SHOW_VALUE_BYTES, SQ_KV_MAX_KEY);
}

static int fail_usage(const struct cli *cli, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "squall: ");
    if (cli->name != NULL) {
        fprintf(stderr, "%s: ", cli->name);
    }
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see squall --help)\n");
    return EXIT_USAGE;
}

/* ---- numbers and times ---- */

/* Strict: digits only (hex after 0x when allowed), no sign, no spaces, no overflow. Octal is
 * deliberately not accepted: a version typed as 010 means ten, not eight. */
static bool parse_u64(const char *s, bool allow_hex, uint64_t *out)
{
    int base = 10;
    if (allow_hex && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    if (base == 16 ? !isxdigit((unsigned char)s[0]) : !isdigit((unsigned char)s[0])) {
        return false;
    }
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, base);
    if (errno != 0 || *end != '\0') {
        return false;
    }
    *out = v;
    return true;
}

static int days_in_month(int year, int mon)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    return mon == 2 && leap ? 29 : days[mon - 1];
}

/* ISO-8601 UTC (YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|+00:00)) or @MICROSECONDS. Out-of-range fields
 * are refused rather than normalized by timegm, so a typo never reads another instant. */
static bool parse_time(const char *s, uint64_t *out_us)
{
    if (s[0] == '@') {
        return parse_u64(s + 1, false, out_us);
    }
    /* the shape first: sscanf alone would take signs and spaces */
    static const char shape[] = "dddd-dd-ddTdd:dd:dd";
    for (size_t i = 0; i < sizeof(shape) - 1; i++) {
        if (shape[i] == 'd' ? !isdigit((unsigned char)s[i]) : s[i] != shape[i]) {
            return false;
        }
    }
    int year, mon, day, hour, min, sec;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d", &year, &mon, &day, &hour, &min, &sec) != 6) {
        return false;
    }
    const char *p = s + sizeof(shape) - 1;
    uint64_t frac_us = 0;
    if (*p == '.') {
        p++;
        int ndigits = 0;
        while (isdigit((unsigned char)*p) && ndigits < 6) {
            frac_us = frac_us * 10 + (uint64_t)(*p - '0');
            p++;
            ndigits++;
        }
        if (ndigits == 0 || isdigit((unsigned char)*p)) {
            return false;
        }
        for (; ndigits < 6; ndigits++) {
            frac_us *= 10;
        }
    }
    if (strcmp(p, "Z") != 0 && strcmp(p, "+00:00") != 0) {
        return false;
    }
    if (year < 1970 || mon < 1 || mon > 12 || day < 1 || day > days_in_month(year, mon) ||
        hour > 23 || min > 59 || sec > 59) {
        return false;
    }
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = year - 1900, tm.tm_mon = mon - 1, tm.tm_mday = day;
    tm.tm_hour = hour, tm.tm_min = min, tm.tm_sec = sec;
    time_t t = timegm(&tm);
    if (t < 0) {
        return false;
    }
    *out_us = (uint64_t)t * 1000000u + frac_us;
    return true;
}

/* ISO-8601 UTC with microseconds; @MICROSECONDS for an instant gmtime cannot represent. */
static const char *fmt_time(uint64_t us, char *buf, size_t cap)
{
    time_t sec = (time_t)(us / 1000000u);
    struct tm tm;
    if ((uint64_t)sec != us / 1000000u || gmtime_r(&sec, &tm) == NULL) {
        snprintf(buf, cap, "@%" PRIu64, us);
        return buf;
    }
    snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%06uZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (unsigned)(us % 1000000u));
    return buf;
}

/* ---- text and JSON output ---- */

static bool utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            len = 2, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (n - i < len) {
            return false;
        }
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) {
                return false;
            }
            cp = (cp << 6) | (s[i + k] & 0x3Fu);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
            return false;
        }
        i += len;
    }
    return true;
}

/* Writes n bytes escaped for a double-quoted string: \" \\ \n \r \t, and the other control
 * bytes (DEL too in text), and every byte over 0x7F unless the bytes are UTF-8 `text`, as \u00XX
 * in JSON or \xHH in text. */
static void put_escaped(const unsigned char *s, size_t n, bool text, bool json)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c == '"' || c == '\\') {
            putchar('\\');
            putchar(c);
        } else if (c == '\n') {
            fputs("\\n", stdout);
        } else if (c == '\r') {
            fputs("\\r", stdout);
        } else if (c == '\t') {
            fputs("\\t", stdout);
        } else if (c < 0x20 || (c == 0x7F && !json) || (c >= 0x80 && !text)) {
            printf(json ? "\\u%04x" : "\\x%02x", c);
        } else {
            putchar(c);
        }
    }
}

/* A value in text output, on one line and never mistaken for another value or for the removal
 * marker: in double quotes, escaped (put_escaped). At most `max` bytes are shown, cut at a
 * character boundary, followed by how many there were. */
static void print_value_text(const void *value, size_t n, size_t max)
{
    const unsigned char *v = value;
    size_t shown = n <= max ? n : max;
    while (shown < n && shown > 0 && (v[shown] & 0xC0) == 0x80) {
        shown--; /* v[shown] continues a character: stop before that character */
    }
    fputs("value=\"", stdout);
    put_escaped(v, shown, utf8_valid(v, shown), false);
    putchar('"');
    if (shown < n) {
        printf("... (%zu of %zu bytes; --json shows all)", shown, n);
    }
}

/* A JSON string. Bytes that are not UTF-8 (never expected in keys, which are paths the user
 * typed) are written as \u00XX so the output stays valid JSON; values go through base64
 * instead (json_value). */
static void json_str(const void *data, size_t n)
{
    putchar('"');
    put_escaped(data, n, utf8_valid(data, n), true);
    putchar('"');
}

static void base64_out(const unsigned char *s, size_t n)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16;
        if (i + 1 < n) {
            v |= (uint32_t)s[i + 1] << 8;
        }
        if (i + 2 < n) {
            v |= s[i + 2];
        }
        putchar(abc[(v >> 18) & 63]);
        putchar(abc[(v >> 12) & 63]);
        putchar(i + 1 < n ? abc[(v >> 6) & 63] : '=');
        putchar(i + 2 < n ? abc[v & 63] : '=');
    }
}

/* ,"value":"..." for UTF-8 text, else ,"value_base64":"..." so binary survives the round trip. */
static void json_value(const void *value, size_t size)
{
    if (utf8_valid(value, size)) {
        fputs(",\"value\":", stdout);
        json_str(value, size);
    } else {
        fputs(",\"value_base64\":\"", stdout);
        base64_out(value, size);
        putchar('"');
    }
}

/* Opens a JSON object with the fields every entry has. */
static void json_entry(const char *key, size_t key_len, uint64_t version, uint64_t ts)
{
    char tbuf[48];
    fputs("{\"key\":", stdout);
    json_str(key, key_len);
    printf(",\"version\":\"0x%" PRIx64 "\",\"version_u64\":%" PRIu64 ",\"timestamp\":\"%s\","
           "\"timestamp_us\":%" PRIu64,
           version, version, fmt_time(ts, tbuf, sizeof(tbuf)), ts);
}

static void human_entry(uint64_t version, uint64_t ts)
{
    char tbuf[48];
    printf("version=0x%" PRIx64 " timestamp=%s", version, fmt_time(ts, tbuf, sizeof(tbuf)));
}

/* ---- errors ---- */

static int exit_status_of(int rc)
{
    switch (rc) {
    case SQ_EINVAL: /* a bad argument, whether squall or the member found it */
        return EXIT_USAGE;
    case SQ_ENOTFOUND:
    case SQ_ENOPOOL:
        return EXIT_NOTFOUND;
    case SQ_ECONFLICT:
    case SQ_EEXIST:
        return EXIT_CONFLICT;
    case SQ_ETIMEDOUT:
    case SQ_ECLOSED:
    case SQ_ETRANSPORT:
        return EXIT_UNREACHABLE;
    default:
        return EXIT_ERROR;
    }
}

/* One line on stderr, and a JSON object on stdout with --json; returns rc's exit status. */
static int report(const struct cli *cli, int rc, const char *reason, const sq_kv_result *conflict)
{
    fprintf(stderr, "squall: %s: %s\n", cli->name, reason);
    if (cli->json) {
        printf("{\"error\":\"%s\",\"message\":", sq_err_name(rc));
        json_str(reason, strlen(reason));
        if (rc == SQ_ECONFLICT && conflict != NULL) {
            if (conflict->version != 0) {
                printf(",\"current_version\":\"0x%" PRIx64 "\"", conflict->version);
            } else {
                fputs(",\"current_version\":null", stdout);
            }
        }
        fputs("}\n", stdout);
    }
    return exit_status_of(rc);
}

/* The error's text, the detail (the member's message), and for a conflict the key's current
 * version (0: it does not exist). */
static int fail(const struct cli *cli, int rc, const char *detail, const sq_kv_result *conflict)
{
    char reason[512];
    int n = snprintf(reason, sizeof(reason), "%s", sq_strerror(rc));
    if (detail != NULL && detail[0] != '\0' && strcmp(detail, sq_strerror(rc)) != 0 &&
        n < (int)sizeof(reason)) {
        n += snprintf(reason + n, sizeof(reason) - (size_t)n, ": %s", detail);
    }
    if (rc == SQ_ECONFLICT && conflict != NULL && (detail == NULL || detail[0] == 0) &&
        n < (int)sizeof(reason)) {
        if (conflict->version != 0) {
            snprintf(reason + n, sizeof(reason) - (size_t)n, "; current version 0x%" PRIx64,
                     conflict->version);
        } else {
            snprintf(reason + n, sizeof(reason) - (size_t)n, "; key does not exist");
        }
    }
    return report(cli, rc, reason, conflict);
}

/* ---- paths ---- */

enum path_kind { PATH_KEY, PATH_PREFIX, PATH_POOL };

/* The store's path rules (README, "Pools"), checked before asking the group so that a typo gets
 * its exact reason. A path too long to quote whole is cut in the message. */
static bool check_path(const char *p, enum path_kind kind, char *why, size_t cap)
{
    static const char *const what[] = {"a key", "a prefix", "a pool path"};
    static const char *const like[] = {"/orders/42", "/orders/", "/orders"};
    size_t len = strlen(p), max = kind == PATH_POOL ? MAX_POOL_PATH_BYTES : SQ_KV_MAX_KEY;
    int show = len > 60 ? 60 : (int)len;
    const char *more = len > 60 ? "..." : "";
    if (p[0] != '/') {
        snprintf(why, cap, "'%.*s%s' is not %s: paths start with '/' (such as %s)", show, p, more,
                 what[kind], like[kind]);
    } else if (len == 1 && kind == PATH_PREFIX) {
        snprintf(why, cap,
                 "'/' is not a prefix inside a pool: ls and watch take one pool's keys, "
                 "such as /orders/ (squall pool ls lists the pools)");
    } else if (len == 1) {
        snprintf(why, cap, "'/' is not %s: such as %s", what[kind], like[kind]);
    } else if (strstr(p, "//") != NULL) {
        snprintf(why, cap, "'%.*s%s' is not %s: it has an empty segment ('//')", show, p, more,
                 what[kind]);
    } else if (kind == PATH_KEY && p[len - 1] == '/') {
        snprintf(why, cap,
                 "'%.*s%s' is not a key: a key does not end in '/' (the keys under it: "
                 "squall ls %.*s%s)",
                 show, p, more, show, p, more);
    } else if (kind == PATH_POOL && p[len - 1] == '/') {
        snprintf(why, cap,
                 "'%.*s%s' is not a pool path: a pool path does not end in '/' (such "
                 "as /orders)",
                 show, p, more);
    } else if (len > max) {
        snprintf(why, cap, "'%.*s%s' is not %s: it is %zu bytes, and at most %zu bytes are allowed",
                 show, p, more, what[kind], len, max);
    } else {
        return true;
    }
    return false;
}

/* The kind of path a command's first argument is (watch: a prefix when it ends in '/'). */
static enum path_kind path_kind_of(const struct cli *cli, const char *path)
{
    if (strcmp(cli->name, "pool create") == 0) {
        return PATH_POOL;
    }
    if (strcmp(cli->name, "ls") == 0 ||
        (strcmp(cli->name, "watch") == 0 && path[0] != '\0' && path[strlen(path) - 1] == '/')) {
        return PATH_PREFIX;
    }
    return PATH_KEY;
}

/* After SQ_ENOPOOL (or, for a watch, whose reason the library does not keep, SQ_EINVAL): the
 * reason made exact with the pool table. PATH may be a pool itself (its keys go under it: a bad
 * argument), or no pool holds it (the pools there are named). */
static int fail_no_pool(sq_client *c, const struct cli *cli, int rc, const char *detail)
{
    const char *path = cli->args[0];
    size_t len = strlen(path);
    sq_kv_result pl;
    memset(&pl, 0, sizeof(pl));
    if (sq_client_pool_list(c, &pl) != 0) {
        sq_kv_result_free(&pl);
        return fail(cli, rc, detail, NULL);
    }
    char why[512], pools[256] = "";
    size_t pos = 0, n = 0, np = 0;
    sq_kv_item it;
    bool is_pool = false;
    while (sq_kv_next_item(&pl, &pos, &it) == 1) {
        is_pool |= it.key_len == len && memcmp(it.key, path, len) == 0;
        if (np++ < 5 && n < sizeof(pools)) {
            n += (size_t)snprintf(pools + n, sizeof(pools) - n, "%s%.*s", n ? ", " : "",
                                  (int)it.key_len, it.key);
        }
    }
    sq_kv_result_free(&pl);
    if (is_pool) {
        if (strcmp(cli->name, "ls") == 0 || strcmp(cli->name, "watch") == 0) {
            snprintf(why, sizeof(why), "'%s' is a pool: its keys are under '%s/' (squall %s %s/)",
                     path, path, cli->name, path);
        } else {
            snprintf(why, sizeof(why),
                     "'%s' is a pool, not a key: its keys go under it, such "
                     "as %s/42",
                     path, path);
        }
        return fail(cli, SQ_EINVAL, why, NULL);
    }
    if (rc != SQ_ENOPOOL) {
        return fail(cli, rc, detail, NULL);
    }
    if (np == 0) {
        snprintf(why, sizeof(why),
                 "no pool holds '%s', and there are no pools yet (create one "
                 "with: squall pool create PATH TYPE)",
                 path);
    } else {
        snprintf(why, sizeof(why),
                 "no pool holds '%s' (the pools: %s%s; create one with: squall "
                 "pool create PATH TYPE)",
                 path, pools, np > 5 ? ", ..." : "");
    }
    return report(cli, SQ_ENOPOOL, why, NULL);
}

/* A failed call: r->message is the member's (or the library's) reason, made exact for a pool
 * given as a key, and naming the key when the member did not. */
static int fail_call(sq_client *c, const struct cli *cli, int rc, const sq_kv_result *r)
{
    char msg[sizeof(r->message) + 1];
    size_t len = strnlen(r->message, sizeof(r->message));
    memcpy(msg, r->message, len);
    msg[len] = '\0';
    bool has_path = cli->nargs > 0 && strcmp(cli->name, "pool create") != 0;
    if (rc == SQ_ENOPOOL && has_path) {
        return fail_no_pool(c, cli, rc, msg);
    }
    if (rc == SQ_ENOTFOUND && has_path && strstr(msg, cli->args[0]) == NULL) {
        char detail[sizeof(msg) + 210];
        snprintf(detail, sizeof(detail), "%.200s: %s", cli->args[0], msg);
        return fail(cli, rc, detail, r);
    }
    return fail(cli, rc, msg, r);
}

/* ---- commands ---- */

static int run_pool_create(sq_client *c, const struct cli *cli, sq_kv_result *r)
{
    int rc = sq_client_pool_create(c, cli->args[0], cli->args[1], cli->shards, r);
    if (rc != 0) {
        return fail_call(c, cli, rc, r);
    }
    if (cli->json) {
        fputs("{\"path\":", stdout);
        json_str(cli->args[0], strlen(cli->args[0]));
        fputs(",\"created\":true}\n", stdout);
    } else {
        printf("created %s\n", cli->args[0]);
    }
    return EXIT_OK;
}

/* Walks r's items; `print` writes one. A malformed list stops with SQ_EPROTO. */
static int each_item(const struct cli *cli, sq_kv_result *r,
                     void (*print)(const struct cli *cli, const sq_kv_item *it))
{
    size_t pos = 0;
    sq_kv_item it;
    int rc;
    while ((rc = sq_kv_next_item(r, &pos, &it)) == 1) {
        print(cli, &it);
    }
    return rc == 0 ? EXIT_OK : fail(cli, rc, "a malformed item list", NULL);
}

static void print_pool(const struct cli *cli, const sq_kv_item *it)
{
    static const char *stores[] = {"volatile", "persistent", "trigger"};
    char unknown[32];
    const char *store = unknown;
    if (it->timestamp < sizeof(stores) / sizeof(stores[0])) {
        store = stores[it->timestamp];
    } else {
        snprintf(unknown, sizeof(unknown), "unknown-%" PRIu64, it->timestamp);
    }
    if (cli->json) {
        fputs("{\"path\":", stdout);
        json_str(it->key, it->key_len);
        printf(",\"store\":\"%s\",\"subgroup\":%" PRIu64 ",\"shards\":%" PRIu32 "}\n", store,
               it->version, it->size);
    } else {
        printf("%.*s store=%s subgroup=%" PRIu64 " shards=%" PRIu32 "\n", (int)it->key_len, it->key,
               store, it->version, it->size);
    }
}

static int run_pool_ls(sq_client *c, const struct cli *cli, sq_kv_result *r)
{
    int rc = sq_client_pool_list(c, r);
    return rc != 0 ? fail_call(c, cli, rc, r) : each_item(cli, r, print_pool);
}

/* The whole of stdin, up to MAX_VALUE_BYTES. The caller frees *out. */
static int read_stdin(const struct cli *cli, void **out, size_t *size)
{
    size_t cap = 0, len = 0;
    unsigned char *buf = NULL;
    /* one byte over the limit tells a value at the limit from a larger one */
    while (len <= MAX_VALUE_BYTES && !feof(stdin) && !ferror(stdin)) {
        if (len == cap) {
            cap = cap == 0 ? 64 * 1024 : cap * 2;
            unsigned char *b = realloc(buf, cap);
            if (b == NULL) {
                free(buf);
                return fail(cli, SQ_ENOMEM, "reading stdin", NULL);
            }
            buf = b;
        }
        len += fread(buf + len, 1, cap - len, stdin);
    }
    if (ferror(stdin) || len > MAX_VALUE_BYTES) {
        int rc = ferror(stdin) ? SQ_EIO : SQ_EMSGSIZE;
        free(buf);
        return fail(cli, rc, rc == SQ_EIO ? "reading stdin" : "the value on stdin is over 16 MiB",
                    NULL);
    }
    *out = buf;
    *size = len;
    return EXIT_OK;
}

static int print_written(const struct cli *cli, sq_kv_result *r)
{
    if (cli->json) {
        json_entry(cli->args[0], strlen(cli->args[0]), r->version, r->timestamp);
        fputs("}\n", stdout);
    } else {
        human_entry(r->version, r->timestamp);
        putchar('\n');
    }
    return EXIT_OK;
}

static int run_put(sq_client *c, const struct cli *cli, sq_kv_result *r)
{
    sq_put_opts opts = {.if_version = (cli->seen & BIT(OPT_IF_VERSION)) != 0,
                        .version = cli->if_version,
                        .if_absent = (cli->seen & BIT(OPT_IF_ABSENT)) != 0};
    void *buf = NULL;
    const void *value = cli->args[1];
    size_t size = strlen(cli->args[1]);
    if (strcmp(cli->args[1], "-") == 0) {
        int st = read_stdin(cli, &buf, &size);
        if (st != EXIT_OK) {
            return st;
        }
        value = buf;
    }
    int rc = sq_client_put(c, cli->args[0], value, size, &opts, r);
    free(buf);
    return rc != 0 ? fail_call(c, cli, rc, r) : print_written(cli, r);
}

static int run_rm(sq_client *c, const struct cli *cli, sq_kv_result *r)
{
    sq_put_opts opts = {.if_version = (cli->seen & BIT(OPT_IF_VERSION)) != 0,
                        .version = cli->if_version};
    int rc = sq_client_remove(c, cli->args[0], &opts, r);
    return rc != 0 ? fail_call(c, cli, rc, r) : print_written(cli, r);
}

static int run_get(sq_client *c, const struct cli *cli, sq_kv_result *r)
{
    const char *key = cli->args[0];
    sq_get_opts opts = {.at_version = (cli->seen & BIT(OPT_VERSION)) != 0,
                        .version = cli->version,
                        .at_time = (cli->seen & BIT(OPT_AT)) != 0,
                        .time_us = cli->at_us,
                        .stable = (cli->seen & BIT(OPT_STABLE)) != 0,
                        .size_only = (cli->seen & BIT(OPT_SIZE)) != 0};
    int rc = sq_client_get(c, key, &opts, r);
    if (rc != 0) {
        return fail_call(c, cli, rc, r);
    }
    if (r->deleted) {
        /* A read at a version or time that finds the removal: there is no value to show. */
        char detail[96], tbuf[48];
        snprintf(detail, sizeof(detail), "removed at version 0x%" PRIx64 " (%s)", r->version,
                 fmt_time(r->timestamp, tbuf, sizeof(tbuf)));
        return fail(cli, SQ_ENOTFOUND, detail, NULL);
    }
    if (opts.size_only) {
        if (cli->json) {
            json_entry(key, strlen(key), r->version, r->timestamp);
            printf(",\"size\":%" PRIu32 "}\n", r->count);
        } else {
            printf("size=%" PRIu32 " ", r->count);
            human_entry(r->version, r->timestamp);
            putchar('\n');
        }
        return EXIT_OK;
    }
    if (cli->json) {
        json_entry(key, strlen(key), r->version, r->timestamp);
        printf(",\"size\":%zu", r->size);
        json_value(r->value, r->size);
        fputs("}\n", stdout);
        return EXIT_OK;
    }
    if (r->size > 0) {
        fwrite(r->value, 1, r->size, stdout);
    }
    /* The raw bytes are the output (pipes get exactly the value); only a terminal gets a newline
     * so that the prompt does not follow the value on its last line. */
    if (isatty(STDOUT_FILENO) && (r->size == 0 || ((const char *)r->value)[r->size - 1] != '\n')) {
        putchar('\n');
    }
    return EXIT_OK;
}

static void print_listed(const struct cli *cli, const sq_kv_item *it)
{
    if (cli->json) {
        json_entry(it->key, it->key_len, it->version, it->timestamp);
        printf(",\"size\":%" PRIu32 "}\n", it->size);
    } else {
        printf("%.*s ", (int)it->key_len, it->key);
        human_entry(it->version, it->timestamp);
        printf(" size=%" PRIu32 "\n", it->size);
    }
}

static int run_ls(sq_client *c, const struct cli *cli, sq_kv_result *r)
{
    int rc = sq_client_list(c, cli->args[0], (cli->seen & BIT(OPT_AT)) != 0, cli->at_us, r);
    return rc != 0 ? fail_call(c, cli, rc, r) : each_item(cli, r, print_listed);
}

static void print_version(const struct cli *cli, const sq_kv_item *it)
{
    if (cli->json) {
        /* the items of a history may carry no key: it is the one asked about */
        json_entry(cli->args[0], strlen(cli->args[0]), it->version, it->timestamp);
        printf(",\"size\":%" PRIu32 ",\"deleted\":%s}\n", it->size, it->deleted ? "true" : "false");
    } else {
        human_entry(it->version, it->timestamp);
        if (it->deleted) {
            fputs(" removed\n", stdout);
        } else {
            printf(" size=%" PRIu32 "\n", it->size);
        }
    }
}

static int run_history(sq_client *c, const struct cli *cli, sq_kv_result *r)
{
    int rc = sq_client_history(c, cli->args[0], r);
    return rc != 0 ? fail_call(c, cli, rc, r) : each_item(cli, r, print_version);
}

static int run_status(sq_client *c, const struct cli *cli, sq_kv_result *r)
{
    int rc = sq_client_status(c, cli->json, r);
    if (rc != 0) {
        return fail_call(c, cli, rc, r);
    }
    if (r->size > 0) {
        fwrite(r->value, 1, r->size, stdout);
    }
    if (r->size == 0 || ((const char *)r->value)[r->size - 1] != '\n') {
        putchar('\n');
    }
    return EXIT_OK;
}

/* Watch: the callback prints on the client's I/O thread; the main thread sleeps in read() on a
 * pipe that the signal handler and the callback (once --count events are printed) write to. */
static volatile sig_atomic_t g_stop;
static int g_wake[2] = {-1, -1};
/* errno of the first failed write of the output on the I/O thread (errno is per thread): the
 * watch ends, and main says why. */
static atomic_int g_out_errno;

struct watch_state {
    const struct cli *cli;
    atomic_uint_fast64_t printed;
};

static void wake_main(void)
{
    if (write(g_wake[1], "w", 1) < 0) {
        /* the pipe is full (the main thread is woken already) or gone (it is leaving) */
    }
}

static void on_signal(int sig)
{
    (void)sig;
    int saved = errno;
    g_stop = 1;
    wake_main();
    errno = saved;
}

static void on_event(void *arg, const sq_kv_event *ev)
{
    struct watch_state *st = arg;
    const struct cli *cli = st->cli;
    bool limited = (cli->seen & BIT(OPT_COUNT)) != 0;
    /* Events racing with the unwatch once --count is reached are dropped, not printed. */
    if (limited && atomic_load(&st->printed) >= cli->count) {
        return;
    }
    if (cli->json) {
        json_entry(ev->key, ev->key_len, ev->version, ev->timestamp);
        printf(",\"deleted\":%s", ev->deleted ? "true" : "false");
        if (!ev->deleted) {
            printf(",\"size\":%zu", ev->size);
            json_value(ev->value, ev->size);
        }
        fputs("}\n", stdout);
    } else {
        /* KEY version=... timestamp=... size=N value="..." | removed: a value is always quoted,
         * so the bare word is the removal */
        printf("%.*s ", (int)ev->key_len, ev->key);
        human_entry(ev->version, ev->timestamp);
        if (ev->deleted) {
            fputs(" removed", stdout);
        } else {
            printf(" size=%zu ", ev->size);
            print_value_text(ev->value, ev->size, SHOW_VALUE_BYTES);
        }
        putchar('\n');
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        int zero = 0;
        atomic_compare_exchange_strong(&g_out_errno, &zero, errno != 0 ? errno : EIO);
        wake_main(); /* a closed pipe (SIGPIPE ignored) or a full disk: stop watching */
        return;
    }
    if (limited && atomic_fetch_add(&st->printed, 1) + 1 >= cli->count) {
        wake_main();
    }
}

/* Before the client starts its I/O thread: SIGINT and SIGTERM are blocked there (the thread
 * inherits the mask) so that the handler always runs on the main thread, which unblocks them. */
static int watch_prepare(const struct cli *cli, sigset_t *sigs)
{
    if (pipe(g_wake) != 0 || fcntl(g_wake[1], F_SETFL, O_NONBLOCK) != 0 ||
        fcntl(g_wake[0], F_SETFD, FD_CLOEXEC) != 0 || fcntl(g_wake[1], F_SETFD, FD_CLOEXEC) != 0) {
        return fail(cli, SQ_EIO, strerror(errno), NULL);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal; /* no SA_RESTART: read() in the wait loop returns EINTR */
    sigemptyset(&sa.sa_mask);
    sigemptyset(sigs);
    sigaddset(sigs, SIGINT);
    sigaddset(sigs, SIGTERM);
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0 ||
        pthread_sigmask(SIG_BLOCK, sigs, NULL) != 0) {
        return fail(cli, SQ_EIO, strerror(errno), NULL);
    }
    return EXIT_OK;
}

static int run_watch(sq_client *c, const struct cli *cli, sq_kv_result *r)
{
    (void)r;
    struct watch_state st = {.cli = cli};
    atomic_init(&st.printed, 0);
    uint64_t id = 0;
    int rc = sq_client_watch(c, cli->args[0], cli->from, on_event, &st, &id);
    if (rc != 0) {
        /* the library keeps no reason for a watch: an unknown pool or a pool's own path gets
         * squall's own */
        return rc == SQ_ENOPOOL || rc == SQ_EINVAL ? fail_no_pool(c, cli, rc, NULL)
                                                   : fail(cli, rc, NULL, NULL);
    }
    bool limited = (cli->seen & BIT(OPT_COUNT)) != 0;
    int status = EXIT_OK;
    while (status == EXIT_OK && !g_stop && atomic_load(&g_out_errno) == 0 &&
           !(limited && atomic_load(&st.printed) >= cli->count)) {
        char buf[16];
        if (read(g_wake[0], buf, sizeof(buf)) < 0 && errno != EINTR) {
            status = fail(cli, SQ_EIO, strerror(errno), NULL);
        }
    }
    /* The result does not matter: we leave either way, and closing the client ends the watch with
     * its connection. */
    (void)sq_client_unwatch(c, id);
    return status;
}

static const struct command g_commands[] = {
    {"pool create", 2, 2, BIT(OPT_SHARDS), run_pool_create},
    {"pool ls", 0, 0, 0, run_pool_ls},
    {"put", 2, 2, BIT(OPT_IF_VERSION) | BIT(OPT_IF_ABSENT), run_put},
    {"get", 1, 1, BIT(OPT_VERSION) | BIT(OPT_AT) | BIT(OPT_STABLE) | BIT(OPT_SIZE), run_get},
    {"rm", 1, 1, BIT(OPT_IF_VERSION), run_rm},
    {"ls", 1, 1, BIT(OPT_AT), run_ls},
    {"history", 1, 1, 0, run_history},
    {"watch", 1, 1, BIT(OPT_FROM) | BIT(OPT_COUNT), run_watch},
    {"status", 0, 0, 0, run_status},
};

/* ---- argument parsing ---- */

static int parse_option(struct cli *cli, int argc, char **argv, int *i)
{
    const char *arg = argv[*i] + 2;
    const char *eq = strchr(arg, '=');
    size_t len = eq != NULL ? (size_t)(eq - arg) : strlen(arg);
    int o = 0;
    while (o < NOPTS && (strlen(g_opts[o]) != len || strncmp(g_opts[o], arg, len) != 0)) {
        o++;
    }
    if (o == NOPTS && len == 7 && strncmp(arg, "members", 7) == 0) {
        o = OPT_MEMBER; /* the spelling of SQUALL_MEMBERS */
    }
    if (o == NOPTS) {
        return fail_usage(cli, "unknown option '%s'", argv[*i]);
    }
    if (cli->seen & BIT(o)) {
        return fail_usage(cli, "--%s given twice", g_opts[o]);
    }
    cli->seen |= BIT(o);
    if (!(VALUE_OPTS & BIT(o))) {
        if (eq != NULL) {
            return fail_usage(cli, "--%s takes no value", g_opts[o]);
        }
    } else if (eq != NULL) {
        cli->optval[o] = eq + 1;
    } else if (*i + 1 < argc) {
        cli->optval[o] = argv[++*i];
    } else {
        return fail_usage(cli, "--%s needs a value", g_opts[o]);
    }
    return EXIT_OK;
}

static int bad_value(const struct cli *cli, int o, const char *what)
{
    return fail_usage(cli, "--%s: '%s' is not %s", g_opts[o], cli->optval[o], what);
}

/* Turns the option strings into values, once the command is known (its name prefixes errors). */
static int check_options(struct cli *cli)
{
    static const char *version = "a version (0x... or decimal)";
    static const char *when = "a time (2026-11-24T21:10:03.123456Z or @MICROSECONDS)";
    uint64_t v;
    if ((cli->seen & BIT(OPT_VERSION)) &&
        !parse_u64(cli->optval[OPT_VERSION], true, &cli->version)) {
        return bad_value(cli, OPT_VERSION, version);
    }
    if ((cli->seen & BIT(OPT_IF_VERSION)) &&
        !parse_u64(cli->optval[OPT_IF_VERSION], true, &cli->if_version)) {
        return bad_value(cli, OPT_IF_VERSION, version);
    }
    if ((cli->seen & BIT(OPT_FROM)) && !parse_u64(cli->optval[OPT_FROM], true, &cli->from)) {
        return bad_value(cli, OPT_FROM, version);
    }
    if ((cli->seen & BIT(OPT_AT)) && !parse_time(cli->optval[OPT_AT], &cli->at_us)) {
        return bad_value(cli, OPT_AT, when);
    }
    if ((cli->seen & BIT(OPT_COUNT)) &&
        (!parse_u64(cli->optval[OPT_COUNT], false, &cli->count) || cli->count == 0)) {
        return bad_value(cli, OPT_COUNT, "a count of at least 1");
    }
    if (cli->seen & BIT(OPT_SHARDS)) {
        if (!parse_u64(cli->optval[OPT_SHARDS], false, &v) || v == 0 || v > UINT32_MAX) {
            return bad_value(cli, OPT_SHARDS,
                             "a number of shards (1 or more; without --shards the pool takes "
                             "every shard of its subgroup)");
        }
        cli->shards = (uint32_t)v;
    }
    if (cli->seen & BIT(OPT_TIMEOUT)) {
        if (!parse_u64(cli->optval[OPT_TIMEOUT], false, &v) || v == 0 || v > INT_MAX) {
            return bad_value(cli, OPT_TIMEOUT, "a timeout in milliseconds (1 or more)");
        }
        cli->timeout_ms = (int)v;
    }
    if ((cli->seen & BIT(OPT_IF_VERSION)) && (cli->seen & BIT(OPT_IF_ABSENT))) {
        return fail_usage(cli, "--if-version and --if-absent exclude each other");
    }
    if ((cli->seen & BIT(OPT_VERSION)) && (cli->seen & BIT(OPT_AT))) {
        return fail_usage(cli, "--version and --at exclude each other");
    }
    return EXIT_OK;
}

/* Options may come before or after the command; "--" ends them. */
static int parse_args(struct cli *cli, int argc, char **argv)
{
    const char *words[MAX_ARGS + 2];
    int nwords = 0;
    bool options = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (options && strcmp(a, "--") == 0) {
            options = false;
        } else if (options && strncmp(a, "--", 2) == 0) {
            int st = parse_option(cli, argc, argv, &i);
            if (st != EXIT_OK) {
                return st;
            }
        } else if (options && strcmp(a, "-h") == 0) {
            cli->seen |= BIT(OPT_HELP);
        } else if (nwords == MAX_ARGS + 2) {
            return fail_usage(cli, "too many arguments ('%s')", a);
        } else {
            words[nwords++] = a;
        }
    }
    if (cli->seen & BIT(OPT_HELP)) {
        usage(stdout);
        exit(EXIT_OK);
    }
    if (nwords == 0) {
        usage(stderr);
        return EXIT_USAGE;
    }
    /* "pool" takes a subcommand: the command's name is both words */
    static char pool_name[32];
    int first = 1;
    const char *name = words[0];
    if (strcmp(words[0], "pool") == 0) {
        if (nwords < 2) {
            return fail_usage(cli, "pool: a subcommand is needed: create or ls");
        }
        snprintf(pool_name, sizeof(pool_name), "pool %.20s", words[1]);
        name = pool_name;
        first = 2;
    }
    for (size_t k = 0; k < sizeof(g_commands) / sizeof(g_commands[0]); k++) {
        if (strcmp(g_commands[k].name, name) == 0) {
            cli->cmd = &g_commands[k];
        }
    }
    if (cli->cmd == NULL) {
        return fail_usage(cli, "unknown command '%s'", name);
    }
    cli->name = cli->cmd->name;
    cli->nargs = nwords - first;
    if (cli->nargs < cli->cmd->min_args || cli->nargs > cli->cmd->max_args) {
        return fail_usage(cli, "%s arguments",
                          cli->nargs < cli->cmd->min_args ? "missing" : "too many");
    }
    for (int k = 0; k < cli->nargs; k++) {
        cli->args[k] = words[first + k];
    }
    unsigned stray = cli->seen & ~(cli->cmd->opts | GLOBAL_OPTS);
    if (stray != 0) {
        int o = 0;
        while (!(stray & BIT(o))) {
            o++;
        }
        return fail_usage(cli, "--%s does not apply to %s", g_opts[o], cli->name);
    }
    int st = check_options(cli);
    if (st != EXIT_OK) {
        return st;
    }
    cli->json = (cli->seen & BIT(OPT_JSON)) != 0;
    /* keys, prefixes and pools are paths: a typo is caught before asking the group */
    char why[400];
    if (cli->nargs > 0 &&
        !check_path(cli->args[0], path_kind_of(cli, cli->args[0]), why, sizeof(why))) {
        return fail(cli, SQ_EINVAL, why, NULL);
    }
    cli->members = cli->optval[OPT_MEMBER];
    if (cli->members == NULL) {
        const char *env = getenv("SQUALL_MEMBERS");
        cli->members = env != NULL && env[0] != '\0' ? env : DEFAULT_MEMBERS;
    }
    return EXIT_OK;
}

/* ---- reaching the members ---- */

enum probe { PROBE_OK, PROBE_SLOW, PROBE_BAD };

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Connects to host:port within PROBE_CONNECT_MS: a socket, or -1 with the reason in `why`. */
static int probe_connect(const char *host, const char *port, char *why, size_t cap)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    int e = getaddrinfo(host, port, &hints, &ai);
    if (e != 0 || ai == NULL) {
        snprintf(why, cap, "cannot resolve '%s': %s", host,
                 e == EAI_SYSTEM ? strerror(errno) : gai_strerror(e));
        return -1;
    }
    /* the first address only, like the client library */
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int rc = fd < 0 ? -1 : connect(fd, ai->ai_addr, ai->ai_addrlen);
    int err = rc == 0 ? 0 : errno;
    freeaddrinfo(ai);
    if (rc != 0 && fd >= 0 && err == EINPROGRESS) {
        struct pollfd pf = {.fd = fd, .events = POLLOUT};
        socklen_t len = sizeof(err);
        int n = poll(&pf, 1, PROBE_CONNECT_MS);
        if (n == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0) {
            rc = 0;
        } else if (n == 0) {
            err = ETIMEDOUT;
        }
    }
    if (rc == 0) {
        return fd;
    }
    if (err == ECONNREFUSED) {
        snprintf(why, cap,
                 "%s:%s refuses connections: no member listens there (is it running, "
                 "and is %s its client_port?)",
                 host, port, port);
    } else if (err == ETIMEDOUT) {
        snprintf(why, cap, "%s:%s: no answer to the connection within %d ms", host, port,
                 PROBE_CONNECT_MS);
    } else {
        snprintf(why, cap, "%s:%s: %s", host, port, strerror(err));
    }
    if (fd >= 0) {
        close(fd);
    }
    return -1;
}

/* Does the member at host:port speak the client protocol? It answers the client hello with
 * member=ID. A peer that closes the connection or answers something else does not (a member's
 * group port, say); one that is silent for PROBE_ANSWER_MS is only slow, and the call goes ahead.
 */
static enum probe probe_member(const char *host, const char *port, char *why, size_t cap)
{
    int fd = probe_connect(host, port, why, cap);
    if (fd < 0) {
        return PROBE_BAD;
    }
    unsigned char buf[1024];
    struct sq_kv_frame hello = {.op = SQ_KV_OP_HELLO, .client = ((uint64_t)getpid() << 1) | 1};
    long n = sq__kv_encode(&hello, buf, sizeof(buf));
    enum probe res = PROBE_SLOW;
    if (n <= 0) {
        close(fd); /* cannot happen: a hello has no key, string or value */
        return PROBE_SLOW;
    }
    if (send(fd, buf, (size_t)n, MSG_NOSIGNAL) != n) {
        res = PROBE_BAD; /* a fresh connection takes 60 bytes at once unless it was reset */
    }
    size_t have = 0;
    uint64_t deadline = mono_ms() + PROBE_ANSWER_MS;
    while (res == PROBE_SLOW && mono_ms() < deadline) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, (int)(deadline - mono_ms())) <= 0) {
            continue; /* silent (or EINTR): the loop ends at the deadline */
        }
        ssize_t got = recv(fd, buf + have, sizeof(buf) - have, 0);
        if (got < 0 && (errno == EINTR || errno == EAGAIN)) {
            continue;
        }
        if (got <= 0) {
            res = PROBE_BAD;
            break;
        }
        have += (size_t)got;
        long need = sq__kv_frame_need(buf, have);
        struct sq_kv_frame f;
        if (need < 0 || (size_t)need > sizeof(buf)) {
            res = PROBE_BAD;
        } else if (need > 0 && (size_t)need <= have) {
            res = sq__kv_decode(buf, (size_t)need, &f, NULL, 0) == 0 && f.op == SQ_KV_OP_HELLO
                      ? PROBE_OK
                      : PROBE_BAD;
        }
    }
    close(fd);
    if (res == PROBE_BAD) {
        snprintf(why, cap,
                 "%s:%s does not speak squall's client protocol (it %s the client "
                 "hello): is %s a member's group port? Clients connect to its client_port "
                 "(squall-local: port + 100)",
                 host, port, have == 0 ? "closed the connection at" : "answered something else to",
                 port);
    }
    return res;
}

/* Before the first call: the members in the list, in order, until one answers the client hello
 * (or is only slow to). When none can (a name that does not resolve, a port nobody listens on, a
 * port that is not a client port), squall says why for each at once, instead of a timeout. A list
 * the library would refuse as malformed is left to it. */
static int probe_members(const struct cli *cli)
{
    char reasons[2048] = "";
    size_t used = 0;
    const char *p = cli->members;
    while (*p != '\0') {
        size_t len = strcspn(p, ",");
        const char *colon = memrchr(p, ':', len);
        char host[256], port[8];
        size_t hlen = colon != NULL ? (size_t)(colon - p) : 0;
        size_t plen = colon != NULL ? len - hlen - 1 : 0;
        if (colon == NULL || hlen == 0 || hlen >= sizeof(host) || plen == 0 ||
            plen >= sizeof(port)) {
            return EXIT_OK; /* malformed: sq_client_open says so */
        }
        memcpy(host, p, hlen);
        host[hlen] = '\0';
        memcpy(port, colon + 1, plen);
        port[plen] = '\0';
        char why[800];
        if (probe_member(host, port, why, sizeof(why)) != PROBE_BAD) {
            return EXIT_OK;
        }
        if (used < sizeof(reasons)) {
            used += (size_t)snprintf(reasons + used, sizeof(reasons) - used, "%s%s",
                                     used > 0 ? "; " : "", why);
        }
        p += len + (p[len] == ',');
    }
    if (used == 0) {
        return EXIT_OK;
    }
    char reason[sizeof(reasons) + 32];
    snprintf(reason, sizeof(reason), "cannot reach any member: %s", reasons);
    return report(cli, SQ_ECLOSED, reason, NULL);
}

int main(int argc, char **argv)
{
    struct cli cli;
    memset(&cli, 0, sizeof(cli));
    int st = parse_args(&cli, argc, argv);
    if (st != EXIT_OK) {
        return st;
    }
    sigset_t sigs;
    if (cli.cmd->run == run_watch && (st = watch_prepare(&cli, &sigs)) != EXIT_OK) {
        return st;
    }
    if ((st = probe_members(&cli)) != EXIT_OK) {
        return st;
    }
    char err[256] = "";
    sq_client *c = NULL;
    int rc = sq_client_open(&c, cli.members, cli.timeout_ms, err, sizeof(err));
    if (rc != 0) {
        /* the library refuses a malformed member list with SQ_EINVAL: exit status 2 */
        return fail(&cli, rc, err, NULL);
    }
    if (cli.cmd->run == run_watch) {
        pthread_sigmask(SIG_UNBLOCK, &sigs, NULL);
    }
    sq_kv_result r;
    memset(&r, 0, sizeof(r));
    st = cli.cmd->run(c, &cli, &r);
    sq_kv_result_free(&r);
    sq_client_close(c);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        int e = atomic_load(&g_out_errno) != 0 ? atomic_load(&g_out_errno) : errno;
        fprintf(stderr, "squall: %s: writing the output: %s\n", cli.name, strerror(e));
        return st != EXIT_OK ? st : EXIT_ERROR;
    }
    return st;
}
