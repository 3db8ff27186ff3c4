/* squall_out.c: the squall tool's output: times, values and entries as text or JSON (escaped,
 * base64 for binary values), and errors with their exit statuses. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "squall.h"
#include "squall_internal.h"

/* ISO-8601 UTC with microseconds; @MICROSECONDS for an instant gmtime cannot represent. */
const char *sq__cli_fmt_time(uint64_t us, char *buf, size_t cap)
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
void sq__cli_print_value_text(const void *value, size_t n, size_t max)
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
 * instead (sq__cli_json_value). */
void sq__cli_json_str(const void *data, size_t n)
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
void sq__cli_json_value(const void *value, size_t size)
{
    if (utf8_valid(value, size)) {
        fputs(",\"value\":", stdout);
        sq__cli_json_str(value, size);
    } else {
        fputs(",\"value_base64\":\"", stdout);
        base64_out(value, size);
        putchar('"');
    }
}

/* Opens a JSON object with the fields every entry has. */
void sq__cli_json_entry(const char *key, size_t key_len, uint64_t version, uint64_t ts)
{
    char tbuf[48];
    fputs("{\"key\":", stdout);
    sq__cli_json_str(key, key_len);
    printf(",\"version\":\"0x%" PRIx64 "\",\"version_u64\":%" PRIu64 ",\"timestamp\":\"%s\","
           "\"timestamp_us\":%" PRIu64,
           version, version, sq__cli_fmt_time(ts, tbuf, sizeof(tbuf)), ts);
}

void sq__cli_human_entry(uint64_t version, uint64_t ts)
{
    char tbuf[48];
    printf("version=0x%" PRIx64 " timestamp=%s", version, sq__cli_fmt_time(ts, tbuf, sizeof(tbuf)));
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
    case SQ_ENOQUORUM: /* the members given are out of the group for now */
        return EXIT_UNREACHABLE;
    default:
        return EXIT_ERROR;
    }
}

/* One line on stderr, and a JSON object on stdout with --json; returns rc's exit status. */
int sq__cli_report(const struct cli *cli, int rc, const char *reason, const sq_kv_result *conflict)
{
    fprintf(stderr, "squall: %s: %s\n", cli->name, reason);
    if (cli->json) {
        printf("{\"error\":\"%s\",\"message\":", sq_err_name(rc));
        sq__cli_json_str(reason, strlen(reason));
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
int sq__cli_fail(const struct cli *cli, int rc, const char *detail, const sq_kv_result *conflict)
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
    return sq__cli_report(cli, rc, reason, conflict);
}

/* After SQ_ENOPOOL (or, for a watch, whose reason the library does not keep, SQ_EINVAL): the
 * reason made exact with the pool table. PATH may be a pool itself (its keys go under it: a bad
 * argument), or no pool holds it (the pools there are named). */
int sq__cli_fail_no_pool(sq_client *c, const struct cli *cli, int rc, const char *detail)
{
    const char *path = cli->args[0];
    size_t len = strlen(path);
    sq_kv_result pl;
    memset(&pl, 0, sizeof(pl));
    if (sq_client_pool_list(c, &pl) != 0) {
        sq_kv_result_free(&pl);
        return sq__cli_fail(cli, rc, detail, NULL);
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
        return sq__cli_fail(cli, SQ_EINVAL, why, NULL);
    }
    if (rc != SQ_ENOPOOL) {
        return sq__cli_fail(cli, rc, detail, NULL);
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
    return sq__cli_report(cli, SQ_ENOPOOL, why, NULL);
}

/* A failed call: r->message is the member's (or the library's) reason, made exact for a pool
 * given as a key, and naming the key when the member did not. */
int sq__cli_fail_call(sq_client *c, const struct cli *cli, int rc, const sq_kv_result *r)
{
    char msg[sizeof(r->message) + 1];
    size_t len = strnlen(r->message, sizeof(r->message));
    memcpy(msg, r->message, len);
    msg[len] = '\0';
    bool has_path = cli->nargs > 0 && strcmp(cli->name, "pool create") != 0;
    if (rc == SQ_ENOPOOL && has_path) {
        return sq__cli_fail_no_pool(c, cli, rc, msg);
    }
    if (rc == SQ_ENOTFOUND && has_path && strstr(msg, cli->args[0]) == NULL) {
        char detail[sizeof(msg) + 210];
        snprintf(detail, sizeof(detail), "%.200s: %s", cli->args[0], msg);
        return sq__cli_fail(cli, rc, detail, r);
    }
    return sq__cli_fail(cli, rc, msg, r);
}
