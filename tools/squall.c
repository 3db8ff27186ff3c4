/* squall.c: the squall command-line tool: pools, puts, gets, lists, histories and watches of
 * squall's key-value store, through the public client library (include/squall/client.h). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kv/wire.h" /* the protocol's limits */
#include "squall.h"
#include "squall/client.h"
#include "squall_internal.h"

/* The client ports squall-local gives a three-member group with its default base port. */
#define DEFAULT_MEMBERS "127.0.0.1:7500,127.0.0.1:7501,127.0.0.1:7502"
/* The protocol's largest value: reading more from stdin would only be refused by the member,
 * after sending it all. */
#define MAX_VALUE_BYTES SQ_KV_MAX_VALUE
/* Text output shows this much of a value (watch), quoted and escaped; --json shows all of it. */
#define SHOW_VALUE_BYTES 120
/* Options every command accepts, before or after its name. */
#define GLOBAL_OPTS                                                                                \
    (BIT(OPT_MEMBER) | BIT(OPT_JSON) | BIT(OPT_TIMEOUT) | BIT(OPT_HELP) | BIT(OPT_TLS) |           \
     BIT(OPT_CACERT) | BIT(OPT_CERT) | BIT(OPT_KEY))
/* Options followed by a value (--opt V or --opt=V); the others are flags. */
#define VALUE_OPTS                                                                                 \
    (BIT(OPT_SHARDS) | BIT(OPT_IF_VERSION) | BIT(OPT_VERSION) | BIT(OPT_AT) | BIT(OPT_FROM) |      \
     BIT(OPT_COUNT) | BIT(OPT_MEMBER) | BIT(OPT_TIMEOUT) | BIT(OPT_CACERT) | BIT(OPT_CERT) |       \
     BIT(OPT_KEY))
static const char *const g_opts[NOPTS] = {
    "shards", "if-version", "if-absent", "version", "at",      "stable", "size",   "from", "count",
    "member", "json",       "timeout",   "help",    "metrics", "tls",    "cacert", "cert", "key"};

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
        "  status [--metrics]      the connected member's view of the group; --metrics: its\n"
        "                          metrics in Prometheus' text format (as HTTP /metrics)\n"
        "Keys are paths under a pool (/orders/42: no '//', no trailing '/', at most %u bytes);\n"
        "a PREFIX is one inside a pool (/orders/ or /orders/2026-).\n"
        "options:\n"
        "  --member LIST   the members' client addresses (client_port), comma-separated\n"
        "                  (default: $SQUALL_MEMBERS, else " DEFAULT_MEMBERS ")\n"
        "  --json          one JSON object a result line; an error is also printed as\n"
        "                  {\"error\":\"SQ_E...\",\"message\":...} on stdout\n"
        "  --timeout MS    bound on each call, retries on other members included (default 10000)\n"
        "  --tls           speak TLS to the members ([tls] in their configs); a member's\n"
        "                  certificate must be trusted and name the address it is reached at\n"
        "  --cacert FILE   trust member certificates signed by the CA in FILE (PEM; default:\n"
        "                  the system's trust store); implies --tls\n"
        "  --cert FILE, --key FILE  this client's certificate and key (PEM), for members that\n"
        "                  require one (require_client_cert); imply --tls\n"
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

/* ---- commands ---- */

static int run_pool_create(sq_client *c, const struct cli *cli, sq_kv_result *r)
{
    int rc = sq_client_pool_create(c, cli->args[0], cli->args[1], cli->shards, r);
    if (rc != 0) {
        return sq__cli_fail_call(c, cli, rc, r);
    }
    if (cli->json) {
        fputs("{\"path\":", stdout);
        sq__cli_json_str(cli->args[0], strlen(cli->args[0]));
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
    return rc == 0 ? EXIT_OK : sq__cli_fail(cli, rc, "a malformed item list", NULL);
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
        sq__cli_json_str(it->key, it->key_len);
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
    return rc != 0 ? sq__cli_fail_call(c, cli, rc, r) : each_item(cli, r, print_pool);
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
                return sq__cli_fail(cli, SQ_ENOMEM, "reading stdin", NULL);
            }
            buf = b;
        }
        len += fread(buf + len, 1, cap - len, stdin);
    }
    if (ferror(stdin) || len > MAX_VALUE_BYTES) {
        int rc = ferror(stdin) ? SQ_EIO : SQ_EMSGSIZE;
        free(buf);
        return sq__cli_fail(cli, rc,
                            rc == SQ_EIO
                                ? "reading stdin"
                                : "the value on stdin is over the limit of " SQ_KV_MAX_VALUE_TEXT,
                            NULL);
    }
    *out = buf;
    *size = len;
    return EXIT_OK;
}

static int print_written(const struct cli *cli, sq_kv_result *r)
{
    if (cli->json) {
        sq__cli_json_entry(cli->args[0], strlen(cli->args[0]), r->version, r->timestamp);
        fputs("}\n", stdout);
    } else {
        sq__cli_human_entry(r->version, r->timestamp);
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
    return rc != 0 ? sq__cli_fail_call(c, cli, rc, r) : print_written(cli, r);
}

static int run_rm(sq_client *c, const struct cli *cli, sq_kv_result *r)
{
    sq_put_opts opts = {.if_version = (cli->seen & BIT(OPT_IF_VERSION)) != 0,
                        .version = cli->if_version};
    int rc = sq_client_remove(c, cli->args[0], &opts, r);
    return rc != 0 ? sq__cli_fail_call(c, cli, rc, r) : print_written(cli, r);
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
        return sq__cli_fail_call(c, cli, rc, r);
    }
    if (r->deleted) {
        /* A read at a version or time that finds the removal: there is no value to show. */
        char detail[96], tbuf[48];
        snprintf(detail, sizeof(detail), "removed at version 0x%" PRIx64 " (%s)", r->version,
                 sq__cli_fmt_time(r->timestamp, tbuf, sizeof(tbuf)));
        return sq__cli_fail(cli, SQ_ENOTFOUND, detail, NULL);
    }
    if (opts.size_only) {
        if (cli->json) {
            sq__cli_json_entry(key, strlen(key), r->version, r->timestamp);
            printf(",\"size\":%" PRIu32 "}\n", r->count);
        } else {
            printf("size=%" PRIu32 " ", r->count);
            sq__cli_human_entry(r->version, r->timestamp);
            putchar('\n');
        }
        return EXIT_OK;
    }
    if (cli->json) {
        sq__cli_json_entry(key, strlen(key), r->version, r->timestamp);
        printf(",\"size\":%zu", r->size);
        sq__cli_json_value(r->value, r->size);
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
        sq__cli_json_entry(it->key, it->key_len, it->version, it->timestamp);
        printf(",\"size\":%" PRIu32 "}\n", it->size);
    } else {
        printf("%.*s ", (int)it->key_len, it->key);
        sq__cli_human_entry(it->version, it->timestamp);
        printf(" size=%" PRIu32 "\n", it->size);
    }
}

static int run_ls(sq_client *c, const struct cli *cli, sq_kv_result *r)
{
    int rc = sq_client_list(c, cli->args[0], (cli->seen & BIT(OPT_AT)) != 0, cli->at_us, r);
    return rc != 0 ? sq__cli_fail_call(c, cli, rc, r) : each_item(cli, r, print_listed);
}

static void print_version(const struct cli *cli, const sq_kv_item *it)
{
    if (cli->json) {
        /* the items of a history may carry no key: it is the one asked about */
        sq__cli_json_entry(cli->args[0], strlen(cli->args[0]), it->version, it->timestamp);
        printf(",\"size\":%" PRIu32 ",\"deleted\":%s}\n", it->size, it->deleted ? "true" : "false");
    } else {
        sq__cli_human_entry(it->version, it->timestamp);
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
    return rc != 0 ? sq__cli_fail_call(c, cli, rc, r) : each_item(cli, r, print_version);
}

static int run_status(sq_client *c, const struct cli *cli, sq_kv_result *r)
{
    /* 2: the member's metrics in Prometheus' text format, as its HTTP /metrics serves them */
    int rc = sq_client_status(c, (cli->seen & BIT(OPT_METRICS)) ? 2 : cli->json, r);
    if (rc != 0) {
        return sq__cli_fail_call(c, cli, rc, r);
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
        sq__cli_json_entry(ev->key, ev->key_len, ev->version, ev->timestamp);
        printf(",\"deleted\":%s", ev->deleted ? "true" : "false");
        if (!ev->deleted) {
            printf(",\"size\":%zu", ev->size);
            sq__cli_json_value(ev->value, ev->size);
        }
        fputs("}\n", stdout);
    } else {
        /* KEY version=... timestamp=... size=N value="..." | removed: a value is always quoted,
         * so the bare word is the removal */
        printf("%.*s ", (int)ev->key_len, ev->key);
        sq__cli_human_entry(ev->version, ev->timestamp);
        if (ev->deleted) {
            fputs(" removed", stdout);
        } else {
            printf(" size=%zu ", ev->size);
            sq__cli_print_value_text(ev->value, ev->size, SHOW_VALUE_BYTES);
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
        return sq__cli_fail(cli, SQ_EIO, strerror(errno), NULL);
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
        return sq__cli_fail(cli, SQ_EIO, strerror(errno), NULL);
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
        return rc == SQ_ENOPOOL || rc == SQ_EINVAL ? sq__cli_fail_no_pool(c, cli, rc, NULL)
                                                   : sq__cli_fail(cli, rc, NULL, NULL);
    }
    bool limited = (cli->seen & BIT(OPT_COUNT)) != 0;
    int status = EXIT_OK;
    while (status == EXIT_OK && !g_stop && atomic_load(&g_out_errno) == 0 &&
           !(limited && atomic_load(&st.printed) >= cli->count)) {
        char buf[16];
        if (read(g_wake[0], buf, sizeof(buf)) < 0 && errno != EINTR) {
            status = sq__cli_fail(cli, SQ_EIO, strerror(errno), NULL);
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
    {"status", 0, 0, BIT(OPT_METRICS), run_status},
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
        !sq__cli_parse_u64(cli->optval[OPT_VERSION], true, &cli->version)) {
        return bad_value(cli, OPT_VERSION, version);
    }
    if ((cli->seen & BIT(OPT_IF_VERSION)) &&
        !sq__cli_parse_u64(cli->optval[OPT_IF_VERSION], true, &cli->if_version)) {
        return bad_value(cli, OPT_IF_VERSION, version);
    }
    if ((cli->seen & BIT(OPT_FROM)) &&
        !sq__cli_parse_u64(cli->optval[OPT_FROM], true, &cli->from)) {
        return bad_value(cli, OPT_FROM, version);
    }
    if ((cli->seen & BIT(OPT_AT)) && !sq__cli_parse_time(cli->optval[OPT_AT], &cli->at_us)) {
        return bad_value(cli, OPT_AT, when);
    }
    if ((cli->seen & BIT(OPT_COUNT)) &&
        (!sq__cli_parse_u64(cli->optval[OPT_COUNT], false, &cli->count) || cli->count == 0)) {
        return bad_value(cli, OPT_COUNT, "a count of at least 1");
    }
    if (cli->seen & BIT(OPT_SHARDS)) {
        if (!sq__cli_parse_u64(cli->optval[OPT_SHARDS], false, &v) || v == 0 || v > UINT32_MAX) {
            return bad_value(cli, OPT_SHARDS,
                             "a number of shards (1 or more; without --shards the pool takes "
                             "every shard of its subgroup)");
        }
        cli->shards = (uint32_t)v;
    }
    if (cli->seen & BIT(OPT_TIMEOUT)) {
        if (!sq__cli_parse_u64(cli->optval[OPT_TIMEOUT], false, &v) || v == 0 || v > INT_MAX) {
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
    if ((cli->seen & BIT(OPT_METRICS)) && (cli->seen & BIT(OPT_JSON))) {
        return fail_usage(cli, "--metrics (Prometheus' text format) and --json exclude each other");
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
    if (cli->nargs > 0 && !sq__cli_check_path(cli->args[0], sq__cli_path_kind_of(cli, cli->args[0]),
                                              why, sizeof(why))) {
        return sq__cli_fail(cli, SQ_EINVAL, why, NULL);
    }
    cli->tls = (cli->seen & (BIT(OPT_TLS) | BIT(OPT_CACERT) | BIT(OPT_CERT) | BIT(OPT_KEY))) != 0;
    cli->tls_files.ca_file = cli->optval[OPT_CACERT];
    cli->tls_files.cert_file = cli->optval[OPT_CERT];
    cli->tls_files.key_file = cli->optval[OPT_KEY];
    if (((cli->seen & BIT(OPT_CERT)) != 0) != ((cli->seen & BIT(OPT_KEY)) != 0)) {
        return fail_usage(cli, "--cert and --key go together (a certificate and its key)");
    }
    cli->members = cli->optval[OPT_MEMBER];
    if (cli->members == NULL) {
        const char *env = getenv("SQUALL_MEMBERS");
        cli->members = env != NULL && env[0] != '\0' ? env : DEFAULT_MEMBERS;
    }
    return EXIT_OK;
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
    /* The probe speaks the plain protocol; over TLS the library names each member's failure. */
    if (!cli.tls && (st = sq__cli_probe_members(&cli)) != EXIT_OK) {
        return st;
    }
    char err[1024] = "";
    sq_client *c = NULL;
    int rc = cli.tls ? sq_client_open_tls(&c, cli.members, cli.timeout_ms, &cli.tls_files, err,
                                          sizeof(err))
                     : sq_client_open(&c, cli.members, cli.timeout_ms, err, sizeof(err));
    if (rc != 0) {
        /* the library refuses a malformed member list with SQ_EINVAL: exit status 2 */
        return sq__cli_fail(&cli, rc, err, NULL);
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
