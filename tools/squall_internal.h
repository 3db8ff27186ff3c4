/* squall_internal.h: what the pieces of the squall command-line tool (tools/squall*.c) share.
 *
 *   squall.c        usage, argument parsing, the commands and main
 *   squall_out.c    times, text and JSON output (escaping, base64), errors and exit statuses
 *   squall_check.c  what the user gives, checked before asking the group: numbers, times, the
 *                   path rules, and the member list (does a member answer the client hello?)
 *
 * Between them pass the parsed command line (struct cli) and the calls below; output goes to
 * stdout, errors to stderr (and stdout with --json). */
#ifndef SQ_TOOLS_SQUALL_INTERNAL_H
#define SQ_TOOLS_SQUALL_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "squall/client.h"

/* Exit statuses: documented in usage(). */
#define EXIT_OK 0
#define EXIT_ERROR 1
#define EXIT_USAGE 2
#define EXIT_NOTFOUND 3
#define EXIT_CONFLICT 4
#define EXIT_UNREACHABLE 5

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
    OPT_METRICS,
    OPT_TLS,
    OPT_CACERT,
    OPT_CERT,
    OPT_KEY,
    NOPTS
};
#define BIT(o) (1u << (o))

struct command;

struct cli {
    const struct command *cmd;
    const char *name; /* "get", "pool create": the prefix of error messages */
    const char *args[MAX_ARGS];
    int nargs;
    const char *optval[NOPTS];
    unsigned seen; /* BIT(OPT_*) of the options given */
    const char *members;
    bool tls; /* --tls, or any of --cacert, --cert, --key */
    sq_client_tls tls_files;
    bool json;
    int timeout_ms;
    uint64_t if_version, version, at_us, from, count; /* the options' values, once parsed */
    uint32_t shards;
};

enum path_kind { PATH_KEY, PATH_PREFIX, PATH_POOL };

/* ---- squall_out.c ---- */

/* ISO-8601 UTC with microseconds; @MICROSECONDS for an instant gmtime cannot represent. */
const char *sq__cli_fmt_time(uint64_t us, char *buf, size_t cap);

/* A value in text output: value="..." quoted and escaped, at most `max` bytes of it. */
void sq__cli_print_value_text(const void *value, size_t n, size_t max);

/* A JSON string (bytes that are not UTF-8 as \u00XX). */
void sq__cli_json_str(const void *data, size_t n);

/* ,"value":"..." for UTF-8 text, else ,"value_base64":"...". */
void sq__cli_json_value(const void *value, size_t size);

/* Opens a JSON object with the fields every entry has. */
void sq__cli_json_entry(const char *key, size_t key_len, uint64_t version, uint64_t ts);

/* version=0x... timestamp=... in text output. */
void sq__cli_human_entry(uint64_t version, uint64_t ts);

/* One line on stderr, and a JSON object on stdout with --json; returns rc's exit status. */
int sq__cli_report(const struct cli *cli, int rc, const char *reason, const sq_kv_result *conflict);

/* sq__cli_report with the error's text, the detail (the member's message), and for a conflict
 * the key's current version. */
int sq__cli_fail(const struct cli *cli, int rc, const char *detail, const sq_kv_result *conflict);

/* After SQ_ENOPOOL (or SQ_EINVAL for a watch): the reason made exact with the pool table. */
int sq__cli_fail_no_pool(sq_client *c, const struct cli *cli, int rc, const char *detail);

/* A failed call: r->message made exact for a pool given as a key, naming the key. */
int sq__cli_fail_call(sq_client *c, const struct cli *cli, int rc, const sq_kv_result *r);

/* ---- squall_check.c ---- */

/* A version or count: digits only (hex after 0x when allow_hex), no sign, no overflow. */
bool sq__cli_parse_u64(const char *s, bool allow_hex, uint64_t *out);

/* ISO-8601 UTC or @MICROSECONDS; out-of-range fields are refused. */
bool sq__cli_parse_time(const char *s, uint64_t *out_us);

/* The store's path rules: true, or false with the exact reason in `why`. */
bool sq__cli_check_path(const char *p, enum path_kind kind, char *why, size_t cap);

/* The kind of path a command's first argument is (watch: a prefix when it ends in '/'). */
enum path_kind sq__cli_path_kind_of(const struct cli *cli, const char *path);

/* Before the first call: EXIT_OK when a member of the list answers (or is only slow to), else
 * each one's reason, reported. */
int sq__cli_probe_members(const struct cli *cli);

#endif
