/* squall_check.c: what the user gives the squall tool, checked before asking the group:
 * numbers and times, the store's path rules, and whether any member of the list answers. */
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "kv/wire.h" /* the protocol's limits, and the frame codec for the hello that checks a
                      * member (sq__cli_probe_members) */
#include "squall_internal.h"

/* A pool path's longest (MAX_POOL_PATH in src/server/kv_internal.h). */
#define MAX_POOL_PATH_BYTES 255
/* Checking the members before the first call: how long a connection and the answer to the
 * client hello may take before the member counts as unreachable (connection) or as slow
 * (answer: then the call goes ahead and its own timeout applies). */
#define PROBE_CONNECT_MS 1000
#define PROBE_ANSWER_MS 2000

/* ---- numbers and times ---- */

/* Strict: digits only (hex after 0x when allowed), no sign, no spaces, no overflow. Octal is
 * deliberately not accepted: a version typed as 010 means ten, not eight. */
bool sq__cli_parse_u64(const char *s, bool allow_hex, uint64_t *out)
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
bool sq__cli_parse_time(const char *s, uint64_t *out_us)
{
    if (s[0] == '@') {
        return sq__cli_parse_u64(s + 1, false, out_us);
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

/* ---- paths ---- */

/* The store's path rules (README, "Pools"), checked before asking the group so that a typo gets
 * its exact reason. A path too long to quote whole is cut in the message. */
bool sq__cli_check_path(const char *p, enum path_kind kind, char *why, size_t cap)
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
enum path_kind sq__cli_path_kind_of(const struct cli *cli, const char *path)
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
                 "(squall-local: port + 100). Or does the member require TLS (--tls, "
                 "--cacert FILE)?",
                 host, port, have == 0 ? "closed the connection at" : "answered something else to",
                 port);
    }
    return res;
}

/* Before the first call: the members in the list, in order, until one answers the client hello
 * (or is only slow to). When none can (a name that does not resolve, a port nobody listens on, a
 * port that is not a client port), squall says why for each at once, instead of a timeout. A list
 * the library would refuse as malformed is left to it. */
int sq__cli_probe_members(const struct cli *cli)
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
    return sq__cli_report(cli, SQ_ECLOSED, reason, NULL);
}
