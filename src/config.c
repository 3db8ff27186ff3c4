/* config.c: parses a member's INI file with libinih and checks every value, naming file, line
 * and key in each error. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "hash.h"
#include "keyfile.h"
#include "log.h"
#include "persist/plog.h"
#include "sst.h"

/* Default values of the keys that have one. Nothing that identifies a member has a default. */
#define DEFAULT_PROVIDER "tcp"
#define DEFAULT_WINDOW 256u
#define DEFAULT_MAX_PAYLOAD 10240u
#define DEFAULT_CONNECT_TIMEOUT_MS 30000
#define DEFAULT_RESTART_WAIT_MS 2000
#define DEFAULT_SPIN_US 0
#define DEFAULT_HEARTBEAT_TIMEOUT_MS 3000
#define DEFAULT_MAX_STATE_BYTES (1u << 20)
#define DEFAULT_FLUSH_INTERVAL_MS 100
#define DEFAULT_SEGMENT_BYTES (64u << 20)
#define DEFAULT_HTTP_MAX_CONNECTIONS 256u
#define DEFAULT_HTTP_IDLE_TIMEOUT_S 60u
#define DEFAULT_HTTP_MAX_BODY_BYTES (64u << 20) /* the largest value the protocol carries */
#define DEFAULT_HTTP_MAX_HEADER_BYTES (32u << 10)
#define DEFAULT_HTTP_SSE_BUFFER_BYTES (4u << 20)

struct parse_state {
    struct sq_config *c;
    const char *name;
    int line;         /* line the reader last returned */
    int section_line; /* line of the latest [section] header */
    int err_line;     /* first error, 0 if none */
    char *err;
    size_t err_size;
    bool explicit_subgroups; /* a [subgroup.NAME] section appeared */
    /* which keys of [group]/[self]/[subgroup] were already given, to reject duplicates */
    char seen[96][48];
    int nseen;
    /* reader state for string parsing */
    const char *text;
    FILE *file;
};

static void fail(struct parse_state *ps, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void fail(struct parse_state *ps, const char *fmt, ...)
{
    if (ps->err_line != 0) {
        return; /* keep the first error: later ones are often consequences */
    }
    ps->err_line = ps->line > 0 ? ps->line : 1;
    if (ps->err != NULL && ps->err_size > 0) {
        int n = snprintf(ps->err, ps->err_size, "%s:%d: ", ps->name, ps->err_line);
        if (n >= 0 && (size_t)n < ps->err_size) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(ps->err + n, ps->err_size - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
}

/* Whole-file checks have no line of their own. */
static void fail_file(struct parse_state *ps, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail_file(struct parse_state *ps, int line, const char *fmt, ...)
{
    if (ps->err_line != 0) {
        return;
    }
    ps->err_line = line > 0 ? line : 1;
    if (ps->err != NULL && ps->err_size > 0) {
        int n = line > 0 ? snprintf(ps->err, ps->err_size, "%s:%d: ", ps->name, line)
                         : snprintf(ps->err, ps->err_size, "%s: ", ps->name);
        if (n >= 0 && (size_t)n < ps->err_size) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(ps->err + n, ps->err_size - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
}

/* Parses a whole unsigned decimal number in [lo, hi]; false for anything else. */
static bool parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    if (*s == '\0' || !isdigit((unsigned char)*s)) {
        return false;
    }
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < lo || v > hi) {
        return false;
    }
    *out = v;
    return true;
}

static bool mark_seen(struct parse_state *ps, const char *section, const char *key)
{
    char k[48];
    snprintf(k, sizeof(k), "%.20s/%.26s", section, key);
    for (int i = 0; i < ps->nseen; i++) {
        if (strcmp(ps->seen[i], k) == 0) {
            return false;
        }
    }
    if (ps->nseen < (int)SQ_ARRAY_LEN(ps->seen)) {
        memcpy(ps->seen[ps->nseen++], k, sizeof(k));
    }
    return true;
}

static bool copy_string(char *dst, size_t dst_size, const char *v)
{
    size_t n = strlen(v);
    if (n == 0 || n >= dst_size) {
        return false;
    }
    memcpy(dst, v, n + 1);
    return true;
}

static struct sq_member_addr *member_slot(struct parse_state *ps, uint32_t id)
{
    struct sq_config *c = ps->c;
    for (uint32_t i = 0; i < c->nmembers; i++) {
        if (c->members[i].id == id) {
            return &c->members[i];
        }
    }
    if (c->nmembers == SQ_MAX_MEMBERS) {
        return NULL;
    }
    struct sq_member_addr *m = &c->members[c->nmembers++];
    memset(m, 0, sizeof(*m));
    m->id = id;
    m->line = ps->section_line;
    return m;
}

static void group_key(struct parse_state *ps, const char *key, const char *value)
{
    struct sq_config *c = ps->c;
    uint64_t v = 0;
    if (strcmp(key, "provider") == 0) {
        bool ok = copy_string(c->provider, sizeof(c->provider), value);
        for (const char *p = value; ok && *p; p++) {
            ok = isalnum((unsigned char)*p) || *p == '_' || *p == ';' || *p == '-';
        }
        if (!ok) {
            fail(ps,
                 "key 'provider' in [group]: '%s' is not a libfabric provider name "
                 "(for example tcp, sockets, verbs, tcp;ofi_rxm)",
                 value);
        }
    } else if (strcmp(key, "domain") == 0) {
        if (!copy_string(c->domain, sizeof(c->domain), value)) {
            fail(ps, "key 'domain' in [group]: '%s' must be 1-%zu characters", value,
                 sizeof(c->domain) - 1);
        }
    } else if (strcmp(key, "log_level") == 0) {
        int lvl = sq__log_level_parse(value);
        if (lvl < 0) {
            fail(ps, "key 'log_level' in [group]: '%s' is not one of error, warn, info, debug",
                 value);
        }
        c->log_level = lvl;
    } else if (strcmp(key, "connect_timeout_ms") == 0) {
        if (!parse_u64(value, 1, 3600000, &v)) {
            fail(ps,
                 "key 'connect_timeout_ms' in [group]: '%s' is not a number of "
                 "milliseconds in 1..3600000",
                 value);
        }
        c->connect_timeout_ms = (int)v;
    } else if (strcmp(key, "restart_wait_ms") == 0) {
        if (!parse_u64(value, 0, 3600000, &v)) {
            fail(ps,
                 "key 'restart_wait_ms' in [group]: '%s' is not a number of "
                 "milliseconds in 0..3600000",
                 value);
        }
        c->restart_wait_ms = (int)v;
    } else if (strcmp(key, "heartbeat_timeout_ms") == 0) {
        if (!parse_u64(value, 10, 600000, &v)) {
            fail(ps,
                 "key 'heartbeat_timeout_ms' in [group]: '%s' is not a number of "
                 "milliseconds in 10..600000",
                 value);
        }
        c->heartbeat_timeout_ms = (int)v;
    } else if (strcmp(key, "rejoin") == 0) {
        if (strcmp(value, "true") == 0) {
            c->rejoin = true;
        } else if (strcmp(value, "false") == 0) {
            c->rejoin = false;
        } else {
            fail(ps, "key 'rejoin' in [group]: '%s' is not true or false", value);
        }
    } else if (strcmp(key, "max_state_bytes") == 0) {
        if (!parse_u64(value, 0, 1ull << 30, &v)) {
            fail(ps,
                 "key 'max_state_bytes' in [group]: '%s' is not a size in bytes in "
                 "0..1073741824",
                 value);
        }
        c->max_state_bytes = v;
    } else if (strcmp(key, "spin_us") == 0) {
        if (!parse_u64(value, 0, 1000000, &v)) {
            fail(ps,
                 "key 'spin_us' in [group]: '%s' is not a number of microseconds in "
                 "0..1000000",
                 value);
        }
        c->spin_us = (int)v;
    } else if (strcmp(key, "data_dir") == 0) {
        if (!copy_string(c->data_dir, sizeof(c->data_dir), value)) {
            fail(ps, "key 'data_dir' in [group]: the path must be 1-%zu characters",
                 sizeof(c->data_dir) - 1);
        }
    } else if (strcmp(key, "key_file") == 0) {
        /* Read now, so that a bad key is a configuration error with its line, like any other. */
        char why[600];
        if (!copy_string(c->key_file, sizeof(c->key_file), value)) {
            fail(ps, "key 'key_file' in [group]: the path must be 1-%zu characters",
                 sizeof(c->key_file) - 1);
        } else if (sq__key_load(value, c->group_key, why, sizeof(why)) != 0) {
            fail(ps, "key 'key_file' in [group]: %s", why);
        } else {
            c->has_key = true;
        }
    } else if (strcmp(key, "flush") == 0) {
        if (strcmp(value, "group_commit") == 0) {
            c->flush_policy = SQ_FLUSH_GROUP_COMMIT;
        } else if (strcmp(value, "periodic") == 0) {
            c->flush_policy = SQ_FLUSH_PERIODIC;
        } else if (strcmp(value, "none") == 0) {
            c->flush_policy = SQ_FLUSH_NONE;
        } else {
            fail(ps, "key 'flush' in [group]: '%s' is not one of group_commit, periodic, none",
                 value);
        }
    } else if (strcmp(key, "flush_interval_ms") == 0) {
        if (!parse_u64(value, 1, 60000, &v)) {
            fail(ps,
                 "key 'flush_interval_ms' in [group]: '%s' is not a number of milliseconds "
                 "in 1..60000",
                 value);
        }
        c->flush_interval_ms = (int)v;
    } else if (strcmp(key, "segment_bytes") == 0) {
        if (!parse_u64(value, 1u << 20, 1ull << 32, &v)) {
            fail(ps,
                 "key 'segment_bytes' in [group]: '%s' is not a size in bytes in "
                 "1048576..4294967296",
                 value);
        }
        c->segment_bytes = v;
    } else {
        fail(ps,
             "unknown key '%s' in [group] (known: provider, domain, log_level, "
             "connect_timeout_ms, restart_wait_ms, heartbeat_timeout_ms, rejoin, "
             "max_state_bytes, spin_us, data_dir, key_file, flush, flush_interval_ms, "
             "segment_bytes)",
             key);
    }
}

static void member_key(struct parse_state *ps, const char *section, const char *key,
                       const char *value)
{
    uint64_t id = 0;
    if (!parse_u64(section + strlen("member."), 0, INT32_MAX, &id)) {
        fail(ps, "section [%s]: member id '%s' is not a number in 0..%d", section,
             section + strlen("member."), INT32_MAX);
        return;
    }
    struct sq_member_addr *m = member_slot(ps, (uint32_t)id);
    if (m == NULL) {
        fail(ps, "section [%s]: more than %d members", section, SQ_MAX_MEMBERS);
        return;
    }
    uint64_t v = 0;
    if (strcmp(key, "host") == 0) {
        if (m->host[0] != '\0') {
            fail(ps, "key 'host' in [%s] given twice", section);
        } else if (!copy_string(m->host, sizeof(m->host), value) || strchr(value, ' ')) {
            fail(ps, "key 'host' in [%s]: '%s' is not a host name or address", section, value);
        }
    } else if (strcmp(key, "port") == 0) {
        if (m->port != 0) {
            fail(ps, "key 'port' in [%s] given twice", section);
        } else if (!parse_u64(value, 1, 65535, &v)) {
            fail(ps, "key 'port' in [%s]: '%s' is not a port number (1-65535)", section, value);
        }
        m->port = (uint32_t)v;
    } else if (strcmp(key, "client_port") == 0) {
        if (m->client_port != 0) {
            fail(ps, "key 'client_port' in [%s] given twice", section);
        } else if (!parse_u64(value, 1, 65535, &v)) {
            fail(ps, "key 'client_port' in [%s]: '%s' is not a port number (1-65535)", section,
                 value);
        }
        m->client_port = (uint32_t)v;
    } else if (strcmp(key, "http_port") == 0) {
        if (m->http_port != 0) {
            fail(ps, "key 'http_port' in [%s] given twice", section);
        } else if (!parse_u64(value, 1, 65535, &v)) {
            fail(ps, "key 'http_port' in [%s]: '%s' is not a port number (1-65535)", section,
                 value);
        }
        m->http_port = (uint32_t)v;
    } else {
        fail(ps, "unknown key '%s' in [%s] (known: host, port, client_port, http_port)", key,
             section);
    }
}

static struct sq_subgroup_cfg *subgroup_slot(struct parse_state *ps, const char *section,
                                             const char *name)
{
    struct sq_config *c = ps->c;
    if (!ps->explicit_subgroups) {
        c->nsubgroups = 0; /* the implicit "default" gives way to the file's own */
        ps->explicit_subgroups = true;
    }
    for (uint32_t g = 0; g < c->nsubgroups; g++) {
        if (strcmp(c->subgroups[g].name, name) == 0) {
            return &c->subgroups[g];
        }
    }
    if (c->nsubgroups == SQ_MAX_SUBGROUPS) {
        fail(ps, "section [%s]: more than %d subgroups", section, SQ_MAX_SUBGROUPS);
        return NULL;
    }
    struct sq_subgroup_cfg *sg = &c->subgroups[c->nsubgroups];
    if (!copy_string(sg->name, sizeof(sg->name), name)) {
        fail(ps, "section [%s]: subgroup name must be 1-%zu characters", section,
             sizeof(sg->name) - 1);
        return NULL;
    }
    for (const char *q = name; *q; q++) {
        if (!isalnum((unsigned char)*q) && *q != '_' && *q != '-') {
            fail(ps, "section [%s]: subgroup names use letters, digits, '_' and '-'", section);
            return NULL;
        }
    }
    sg->window_size = DEFAULT_WINDOW;
    sg->max_payload = DEFAULT_MAX_PAYLOAD;
    sg->shards = 1;
    sg->min_members = 1;
    sg->max_members = 0;
    sg->line = ps->section_line;
    c->nsubgroups++;
    return sg;
}

static void subgroup_key(struct parse_state *ps, const char *section, const char *key,
                         const char *value)
{
    struct sq_subgroup_cfg *sg = subgroup_slot(ps, section, section + strlen("subgroup."));
    if (sg == NULL) {
        return;
    }
    uint64_t v = 0;
    if (strcmp(key, "window_size") == 0) {
        if (!parse_u64(value, 1, SQ_MAX_WINDOW, &v)) {
            fail(ps, "key 'window_size' in [%s]: '%s' is not a number of slots in 1..%u", section,
                 value, SQ_MAX_WINDOW);
        }
        sg->window_size = (uint32_t)v;
    } else if (strcmp(key, "max_payload") == 0) {
        if (!parse_u64(value, 1, SQ_MAX_PAYLOAD, &v)) {
            fail(ps, "key 'max_payload' in [%s]: '%s' is not a size in bytes in 1..%u", section,
                 value, SQ_MAX_PAYLOAD);
        }
        sg->max_payload = (uint32_t)v;
    } else if (strcmp(key, "max_smc_payload") == 0) {
        if (!parse_u64(value, 8, SQ_MAX_PAYLOAD, &v)) {
            fail(ps, "key 'max_smc_payload' in [%s]: '%s' is not a size in bytes in 8..%u", section,
                 value, SQ_MAX_PAYLOAD);
        }
        sg->max_smc_payload = (uint32_t)v;
    } else if (strcmp(key, "large_buffer_bytes") == 0) {
        if (!parse_u64(value, 4096, SQ_SST_MAX_RING_BYTES, &v)) {
            fail(ps, "key 'large_buffer_bytes' in [%s]: '%s' is not a size in bytes in 4096..%llu",
                 section, value, (unsigned long long)SQ_SST_MAX_RING_BYTES);
        }
        sg->large_buffer_bytes = v;
    } else if (strcmp(key, "block_size") == 0) {
        if (!parse_u64(value, 4096, 64u << 20, &v)) {
            fail(ps, "key 'block_size' in [%s]: '%s' is not a size in bytes in 4096..%u", section,
                 value, 64u << 20);
        }
        sg->block_size = (uint32_t)v;
    } else if (strcmp(key, "large_schedule") == 0) {
        if (strcmp(value, "chain") == 0) {
            sg->large_schedule = SQ_SCHEDULE_CHAIN;
        } else if (strcmp(value, "star") == 0) {
            sg->large_schedule = SQ_SCHEDULE_STAR;
        } else if (strcmp(value, "auto") == 0) {
            sg->large_schedule = SQ_SCHEDULE_AUTO;
        } else {
            fail(ps, "key 'large_schedule' in [%s]: '%s' is not auto, chain or star", section,
                 value);
        }
    } else if (strcmp(key, "shards") == 0) {
        if (!parse_u64(value, 1, SQ_MAX_SHARDS, &v)) {
            fail(ps, "key 'shards' in [%s]: '%s' is not a number of shards in 1..%d", section,
                 value, SQ_MAX_SHARDS);
        }
        sg->shards = (uint32_t)v;
    } else if (strcmp(key, "min_members") == 0) {
        if (!parse_u64(value, 1, SQ_MAX_MEMBERS, &v)) {
            fail(ps, "key 'min_members' in [%s]: '%s' is not a number of members in 1..%d", section,
                 value, SQ_MAX_MEMBERS);
        }
        sg->min_members = (uint32_t)v;
    } else if (strcmp(key, "max_members") == 0) {
        if (!parse_u64(value, 1, SQ_MAX_MEMBERS, &v)) {
            fail(ps, "key 'max_members' in [%s]: '%s' is not a number of members in 1..%d", section,
                 value, SQ_MAX_MEMBERS);
        }
        sg->max_members = (uint32_t)v;
    } else if (strcmp(key, "delivery") == 0) {
        if (strcmp(value, "atomic") == 0) {
            sg->persistent = false;
        } else if (strcmp(value, "persistent") == 0) {
            sg->persistent = true;
        } else {
            fail(ps, "key 'delivery' in [%s]: '%s' is not atomic or persistent", section, value);
        }
    } else if (strcmp(key, "store") == 0) {
        if (strcmp(value, "volatile") == 0) {
            sg->store = SQ_STORE_VOLATILE + 1;
        } else if (strcmp(value, "persistent") == 0) {
            sg->store = SQ_STORE_PERSISTENT + 1;
        } else if (strcmp(value, "trigger") == 0) {
            sg->store = SQ_STORE_TRIGGER + 1;
        } else {
            fail(ps, "key 'store' in [%s]: '%s' is not volatile, persistent or trigger", section,
                 value);
        }
    } else {
        fail(ps,
             "unknown key '%s' in [%s] (known: window_size, max_payload, max_smc_payload, "
             "large_buffer_bytes, block_size, large_schedule, shards, min_members, "
             "max_members, delivery, store)",
             key, section);
    }
}

/* [http]: the bounds of the HTTP front end (sizes in bytes). */
static void http_key(struct parse_state *ps, const char *key, const char *value)
{
    struct sq_config *c = ps->c;
    uint64_t v = 0;
    if (strcmp(key, "max_connections") == 0) {
        if (!parse_u64(value, 1, 10000, &v)) {
            fail(ps, "key 'max_connections' in [http]: '%s' is not a number in 1..10000", value);
        }
        c->http_max_connections = (uint32_t)v;
    } else if (strcmp(key, "idle_timeout_s") == 0) {
        /* at least 15 s: a request waits up to 10 s for the group, and libmicrohttpd counts
         * that wait as idle time */
        if (!parse_u64(value, 15, 86400, &v)) {
            fail(ps,
                 "key 'idle_timeout_s' in [http]: '%s' is not a number of seconds in 15..86400",
                 value);
        }
        c->http_idle_timeout_s = (uint32_t)v;
    } else if (strcmp(key, "max_body_bytes") == 0) {
        if (!parse_u64(value, 1, DEFAULT_HTTP_MAX_BODY_BYTES, &v)) {
            fail(ps, "key 'max_body_bytes' in [http]: '%s' is not a size in bytes in 1..%u",
                 value, DEFAULT_HTTP_MAX_BODY_BYTES);
        }
        c->http_max_body_bytes = v;
    } else if (strcmp(key, "max_header_bytes") == 0) {
        if (!parse_u64(value, 4096, 1u << 20, &v)) {
            fail(ps, "key 'max_header_bytes' in [http]: '%s' is not a size in bytes in 4096..%u",
                 value, 1u << 20);
        }
        c->http_max_header_bytes = (uint32_t)v;
    } else if (strcmp(key, "sse_buffer_bytes") == 0) {
        if (!parse_u64(value, 4096, 1u << 30, &v)) {
            fail(ps, "key 'sse_buffer_bytes' in [http]: '%s' is not a size in bytes in 4096..%u",
                 value, 1u << 30);
        }
        c->http_sse_buffer_bytes = v;
    } else {
        fail(ps,
             "unknown key '%s' in [http] (known: max_connections, idle_timeout_s, "
             "max_body_bytes, max_header_bytes, sse_buffer_bytes)",
             key);
    }
}

/* [kv]: the bounds of the client port (src/server/kv_conn.c). */
static void kv_key(struct parse_state *ps, const char *key, const char *value)
{
    struct sq_config *c = ps->c;
    uint64_t v = 0;
    if (strcmp(key, "max_connections") == 0) {
        if (!parse_u64(value, 1, 1000000, &v)) {
            fail(ps, "key 'max_connections' in [kv]: '%s' is not a number in 1..1000000", value);
        }
        c->kv_max_connections = (uint32_t)v;
    } else if (strcmp(key, "max_connections_per_host") == 0) {
        if (!parse_u64(value, 0, 1000000, &v)) {
            fail(ps,
                 "key 'max_connections_per_host' in [kv]: '%s' is not a number in 0..1000000 "
                 "(0: no bound)",
                 value);
        }
        c->kv_max_connections_per_host = (uint32_t)v;
    } else if (strcmp(key, "max_frame_bytes") == 0) {
        if (!parse_u64(value, SQ_CONFIG_MIN_FRAME_BYTES, SQ_CONFIG_MAX_FRAME_BYTES, &v)) {
            fail(ps, "key 'max_frame_bytes' in [kv]: '%s' is not a size in bytes in %u..%llu",
                 value, SQ_CONFIG_MIN_FRAME_BYTES, (unsigned long long)SQ_CONFIG_MAX_FRAME_BYTES);
        }
        c->kv_max_frame_bytes = v;
    } else if (strcmp(key, "max_output_bytes") == 0) {
        if (!parse_u64(value, 1u << 20, 1ull << 32, &v)) {
            fail(ps,
                 "key 'max_output_bytes' in [kv]: '%s' is not a size in bytes in "
                 "1048576..4294967296",
                 value);
        }
        c->kv_max_output_bytes = v;
    } else {
        fail(ps,
             "unknown key '%s' in [kv] (known: max_connections, max_connections_per_host, "
             "max_frame_bytes, max_output_bytes)",
             key);
    }
}

/* [tls]: the certificate the client and HTTP ports present, and whom they trust. The files are
 * read when the service starts (src/server/kv_tls.c), which names any that is bad. */
static void tls_key(struct parse_state *ps, const char *key, const char *value)
{
    struct sq_config *c = ps->c;
    char *dst = NULL;
    size_t size = 0;
    if (strcmp(key, "cert_file") == 0) {
        dst = c->tls_cert_file, size = sizeof(c->tls_cert_file);
    } else if (strcmp(key, "key_file") == 0) {
        dst = c->tls_key_file, size = sizeof(c->tls_key_file);
    } else if (strcmp(key, "ca_file") == 0) {
        dst = c->tls_ca_file, size = sizeof(c->tls_ca_file);
    } else if (strcmp(key, "require_client_cert") == 0) {
        if (strcmp(value, "true") == 0) {
            c->tls_require_client_cert = true;
        } else if (strcmp(value, "false") == 0) {
            c->tls_require_client_cert = false;
        } else {
            fail(ps, "key 'require_client_cert' in [tls]: '%s' is not true or false", value);
        }
        return;
    } else {
        fail(ps,
             "unknown key '%s' in [tls] (known: cert_file, key_file, ca_file, "
             "require_client_cert)",
             key);
        return;
    }
    if (!copy_string(dst, size, value)) {
        fail(ps, "key '%s' in [tls]: the path must be 1-%zu characters", key, size - 1);
    }
}

static int on_key(void *user, const char *section, const char *key, const char *value)
{
    struct parse_state *ps = user;
    if (strncmp(section, "member.", 7) != 0 && !mark_seen(ps, section, key)) {
        fail(ps, "key '%s' in [%s] given twice", key, section);
        return 0;
    }
    int before = ps->err_line;
    if (strcmp(section, "group") == 0) {
        group_key(ps, key, value);
    } else if (strcmp(section, "self") == 0) {
        uint64_t v = 0;
        if (strcmp(key, "id") != 0) {
            fail(ps, "unknown key '%s' in [self] (known: id)", key);
        } else if (!parse_u64(value, 0, INT32_MAX, &v)) {
            fail(ps, "key 'id' in [self]: '%s' is not a member id in 0..%d", value, INT32_MAX);
        } else {
            ps->c->self_id = (uint32_t)v;
            ps->c->has_self = true;
        }
    } else if (strncmp(section, "member.", 7) == 0) {
        member_key(ps, section, key, value);
    } else if (strncmp(section, "subgroup.", 9) == 0) {
        subgroup_key(ps, section, key, value);
    } else if (strcmp(section, "http") == 0) {
        http_key(ps, key, value);
    } else if (strcmp(section, "tls") == 0) {
        tls_key(ps, key, value);
    } else if (strcmp(section, "kv") == 0) {
        kv_key(ps, key, value);
    } else if (section[0] == '\0') {
        fail(ps, "key '%s' is outside any section", key);
    } else {
        fail(ps, "unknown section [%s] (known: group, self, http, kv, tls, member.ID, subgroup.NAME)",
             section);
    }
    return ps->err_line == before || before != 0 ? 1 : 0;
}

static struct sq_subgroup_cfg *subgroup_slot(struct parse_state *ps, const char *section,
                                             const char *name);

/* A section header: a subgroup exists even when its section sets nothing (the parser calls us
 * only for keys), and a section nobody knows is an error even when it is empty. */
static void note_section(struct parse_state *ps, const char *buf)
{
    char section[160];
    const char *end = strchr(buf, ']');
    if (end == NULL) {
        return; /* the parser reports the syntax error */
    }
    buf++;
    while (*buf == ' ' || *buf == '\t') {
        buf++;
    }
    size_t n = (size_t)(end - buf);
    while (n > 0 && (buf[n - 1] == ' ' || buf[n - 1] == '\t')) {
        n--;
    }
    if (n >= sizeof(section)) {
        fail(ps, "section name too long");
        return;
    }
    memcpy(section, buf, n);
    section[n] = '\0';
    if (strncmp(section, "subgroup.", 9) == 0) {
        (void)subgroup_slot(ps, section, section + 9);
    } else if (strcmp(section, "group") != 0 && strcmp(section, "self") != 0 &&
               strcmp(section, "http") != 0 && strcmp(section, "tls") != 0 &&
               strcmp(section, "kv") != 0 &&
               strncmp(section, "member.", 7) != 0) {
        fail(ps, "unknown section [%s] (known: group, self, http, kv, tls, member.ID, subgroup.NAME)",
             section);
    }
}

static void note_line(struct parse_state *ps, const char *buf)
{
    ps->line++;
    while (*buf == ' ' || *buf == '\t') {
        buf++;
    }
    if (*buf == '[') {
        ps->section_line = ps->line;
        note_section(ps, buf);
    }
}

/* Our own line reader so that errors can name the line: inih calls the handler before it reads
 * the next line. */
static char *read_string_line(char *buf, int size, void *stream)
{
    struct parse_state *ps = stream;
    if (*ps->text == '\0') {
        return NULL;
    }
    int n = 0;
    while (n < size - 1 && ps->text[n] != '\0' && ps->text[n] != '\n') {
        n++;
    }
    if (n < size - 1 && ps->text[n] == '\n') {
        n++;
    }
    memcpy(buf, ps->text, (size_t)n);
    buf[n] = '\0';
    ps->text += n;
    note_line(ps, buf);
    return buf;
}

static char *read_file_line(char *buf, int size, void *stream)
{
    struct parse_state *ps = stream;
    char *r = fgets(buf, size, ps->file);
    if (r != NULL) {
        note_line(ps, buf);
    }
    return r;
}

static int cmp_member(const void *a, const void *b)
{
    const struct sq_member_addr *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

static void set_defaults(struct sq_config *c)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->provider, sizeof(c->provider), "%s", DEFAULT_PROVIDER);
    c->log_level = SQ_LOG_INFO;
    c->connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
    c->restart_wait_ms = DEFAULT_RESTART_WAIT_MS;
    c->spin_us = DEFAULT_SPIN_US;
    c->heartbeat_timeout_ms = DEFAULT_HEARTBEAT_TIMEOUT_MS;
    c->rejoin = true;
    c->max_state_bytes = DEFAULT_MAX_STATE_BYTES;
    c->flush_policy = SQ_FLUSH_GROUP_COMMIT;
    c->flush_interval_ms = DEFAULT_FLUSH_INTERVAL_MS;
    c->segment_bytes = DEFAULT_SEGMENT_BYTES;
    c->http_max_connections = DEFAULT_HTTP_MAX_CONNECTIONS;
    c->kv_max_connections = SQ_CONFIG_DEFAULT_KV_CONNECTIONS;
    c->kv_max_frame_bytes = SQ_CONFIG_MAX_FRAME_BYTES;
    c->kv_max_output_bytes = SQ_CONFIG_DEFAULT_OUTPUT_BYTES;
    c->http_idle_timeout_s = DEFAULT_HTTP_IDLE_TIMEOUT_S;
    c->http_max_body_bytes = DEFAULT_HTTP_MAX_BODY_BYTES;
    c->http_max_header_bytes = DEFAULT_HTTP_MAX_HEADER_BYTES;
    c->http_sse_buffer_bytes = DEFAULT_HTTP_SSE_BUFFER_BYTES;
    c->nsubgroups = 1;
    struct sq_subgroup_cfg *sg = &c->subgroups[0];
    snprintf(sg->name, sizeof(sg->name), "default");
    sg->window_size = DEFAULT_WINDOW;
    sg->max_payload = DEFAULT_MAX_PAYLOAD;
    sg->shards = 1;
    sg->min_members = 1;
}

/* Every member on one machine: all on loopback, or all at the same host name or address. */
static bool one_host(const struct sq_config *c)
{
    bool loopback = true, same = true;
    for (uint32_t i = 0; i < c->nmembers; i++) {
        const char *h = c->members[i].host;
        loopback &=
            strncmp(h, "127.", 4) == 0 || strcmp(h, "localhost") == 0 || strcmp(h, "::1") == 0;
        same &= strcmp(h, c->members[0].host) == 0;
    }
    return loopback || same;
}

static void validate(struct parse_state *ps)
{
    struct sq_config *c = ps->c;
    if (c->nmembers == 0) {
        fail_file(ps, 0, "no [member.ID] section: the first view needs at least one member");
        return;
    }
    qsort(c->members, c->nmembers, sizeof(c->members[0]), cmp_member);
    for (uint32_t i = 0; i < c->nmembers; i++) {
        const struct sq_member_addr *m = &c->members[i];
        if (m->host[0] == '\0') {
            fail_file(ps, m->line, "section [member.%u] is missing required key 'host'", m->id);
        } else if (m->port == 0) {
            fail_file(ps, m->line, "section [member.%u] is missing required key 'port'", m->id);
        }
        if (m->http_port != 0 && m->client_port == 0) {
            fail_file(ps, m->line,
                      "section [member.%u] has an http_port but no client_port (HTTP requests "
                      "take the client protocol's path)",
                      m->id);
        } else if (m->http_port != 0 && (m->http_port == m->port || m->http_port == m->client_port)) {
            fail_file(ps, m->line, "section [member.%u]: http_port %u is also its %s", m->id,
                      m->http_port, m->http_port == m->port ? "port" : "client_port");
        }
        for (uint32_t j = 0; j < i; j++) {
            if (m->port == c->members[j].port && strcmp(m->host, c->members[j].host) == 0) {
                fail_file(ps, m->line,
                          "section [member.%u] has the same host:port (%s:%u) as "
                          "[member.%u]",
                          m->id, m->host, m->port, c->members[j].id);
            }
        }
    }
    if ((c->tls_cert_file[0] != '\0') != (c->tls_key_file[0] != '\0')) {
        fail_file(ps, 0, "[tls]: cert_file and key_file go together (the certificate and its key)");
    } else if (c->tls_cert_file[0] != '\0' && c->tls_ca_file[0] == '\0') {
        fail_file(ps, 0,
                  "[tls]: ca_file is required with cert_file (members check each other's "
                  "certificates against it when they relay requests)");
    } else if (c->tls_cert_file[0] == '\0' &&
               (c->tls_ca_file[0] != '\0' || c->tls_require_client_cert)) {
        fail_file(ps, 0, "[tls]: ca_file and require_client_cert need cert_file and key_file");
    }
    if (!c->has_self) {
        fail_file(ps, 0, "missing required key 'id' in section [self] (this member's id)");
    } else if (sq__config_rank_of(c, c->self_id) < 0) {
        fail_file(ps, 0, "key 'id' in [self]: %u is not one of the [member.ID] sections",
                  c->self_id);
    }
    uint64_t table = 0, large_bytes = 0;
    c->nshards = 0;
    for (uint32_t g = 0; g < c->nsubgroups && ps->err_line == 0; g++) {
        const struct sq_subgroup_cfg *sg = &c->subgroups[g];
        if (sg->max_members != 0 && sg->max_members < sg->min_members) {
            fail_file(ps, sg->line, "[subgroup.%s]: max_members %u is below min_members %u",
                      sg->name, sg->max_members, sg->min_members);
        } else if ((uint64_t)sg->shards * sg->min_members > c->nmembers) {
            fail_file(ps, sg->line,
                      "[subgroup.%s]: %u shards of at least %u members need %u "
                      "members, but only %u are configured",
                      sg->name, sg->shards, sg->min_members, sg->shards * sg->min_members,
                      c->nmembers);
        }
        c->nshards += sg->shards;
        struct sq_subgroup_cfg *w = &c->subgroups[g];
        /* store is kept +1 while parsing so that 0 means "not given" */
        if (w->store == 0) {
            w->store = w->persistent ? SQ_STORE_PERSISTENT : SQ_STORE_VOLATILE;
        } else {
            w->store -= 1;
        }
        if (w->store == SQ_STORE_PERSISTENT && !w->persistent && ps->err_line == 0) {
            fail_file(ps, sg->line,
                      "[subgroup.%s]: store = persistent needs delivery = "
                      "persistent",
                      sg->name);
        }
        if (sg->persistent && c->data_dir[0] == '\0' && ps->err_line == 0) {
            fail_file(ps, sg->line,
                      "[subgroup.%s] is persistent: [group] data_dir (where its "
                      "log goes) is required",
                      sg->name);
        }
        if (sg->persistent && sg->max_payload > SQ_PLOG_MAX_RECORD) {
            fail_file(ps, sg->line,
                      "[subgroup.%s]: max_payload %u is above the log's record "
                      "limit (%u bytes)",
                      sg->name, sg->max_payload, SQ_PLOG_MAX_RECORD);
        }
        if (sg->persistent && ps->err_line == 0 &&
            c->max_state_bytes < sq__plog_record_bytes(sg->max_payload)) {
            /* A member new to the shard gets its log in chunks of max_state_bytes, at least a
             * record each. */
            fail_file(ps, sg->line,
                      "[subgroup.%s] is persistent with max_payload %u: [group] "
                      "max_state_bytes (%llu) must hold one log record of that size (%zu bytes) "
                      "to hand the log to a new member",
                      sg->name, sg->max_payload, (unsigned long long)c->max_state_bytes,
                      sq__plog_record_bytes(sg->max_payload));
        }
        /* Messages above max_smc_payload take the large path; without one given, slots stay
         * small and a subgroup whose messages are all small (the default) has no large path. */
        if (w->max_smc_payload == 0) {
            w->max_smc_payload = SQ_MIN(sg->max_payload, SQ_DEFAULT_MAX_SMC_PAYLOAD);
        }
        w->max_smc_payload = SQ_MIN(w->max_smc_payload, sg->max_payload);
        bool large = sg->max_smc_payload < sg->max_payload;
        if (large && w->large_buffer_bytes == 0) {
            w->large_buffer_bytes =
                SQ_MAX((uint64_t)sg->max_payload, (uint64_t)SQ_DEFAULT_LARGE_BUFFER_BYTES);
        }
        if (w->block_size == 0) {
            w->block_size = SQ_DEFAULT_BLOCK_SIZE;
        }
        if (w->large_schedule == SQ_SCHEDULE_AUTO) {
            /* Across machines the sender's link is the limit: a chain sends each byte from it
             * once. On one machine every copy costs the same cores whatever the schedule, and a
             * star saves the hops (measured: README, "Large messages and values"). */
            w->large_schedule = one_host(c) ? SQ_SCHEDULE_STAR : SQ_SCHEDULE_CHAIN;
        }
        if (large && sg->large_buffer_bytes < sg->max_payload && ps->err_line == 0) {
            fail_file(ps, sg->line,
                      "[subgroup.%s]: large_buffer_bytes %llu is below max_payload "
                      "%u (a sender's ring must hold its largest message)",
                      sg->name, (unsigned long long)sg->large_buffer_bytes, sg->max_payload);
        }
        uint64_t rows = sq__config_shard_rows(c, g);
        uint64_t slot = SQ_ALIGN8((uint64_t)sg->max_smc_payload) + 64;
        table += 2 * rows * (slot * sg->window_size + 1024);
        if (large) {
            large_bytes += 2 * rows * (sg->large_buffer_bytes + 4096);
        }
    }
    if (ps->err_line == 0 && large_bytes > SQ_MAX_LARGE_BYTES) {
        fail_file(ps, 0,
                  "the subgroups' large_buffer_bytes x members need %llu MiB of rings for "
                  "large messages, more than the %llu MiB limit",
                  (unsigned long long)(large_bytes >> 20),
                  (unsigned long long)(SQ_MAX_LARGE_BYTES >> 20));
    }
    if (ps->err_line == 0 && c->nshards > SQ_MAX_SHARDS) {
        fail_file(ps, 0, "the subgroups have %u shards in all, more than the %d supported",
                  c->nshards, SQ_MAX_SHARDS);
    }
    table += 2 * (uint64_t)c->nsubgroups * c->max_state_bytes;
    if (ps->err_line == 0 && table > SQ_MAX_TABLE_BYTES) {
        fail_file(ps, 0,
                  "the subgroups' window_size x max_smc_payload x members (and max_state_bytes "
                  "per subgroup) need %llu MiB of shared state table, more than the %llu "
                  "MiB limit",
                  (unsigned long long)(table >> 20),
                  (unsigned long long)(SQ_MAX_TABLE_BYTES >> 20));
    }
}

static int finish(struct parse_state *ps, int rc)
{
    if (rc > 0 && (ps->err_line == 0 || rc < ps->err_line)) {
        /* A syntax error explains whatever our handler made of the lines after it. */
        ps->err_line = 0;
        ps->line = rc;
        fail(ps, "syntax error (expected [section], key = value, or a ; comment)");
    } else if (rc < 0 && ps->err_line == 0) {
        fail_file(ps, 0, "out of memory while parsing");
    }
    if (ps->err_line == 0) {
        validate(ps);
    }
    return ps->err_line == 0 ? 0 : SQ_ECONFIG;
}

int sq__config_parse_string(struct sq_config *c, const char *name, const char *text, char *err,
                            size_t err_size)
{
    set_defaults(c);
    snprintf(c->path, sizeof(c->path), "%s", name);
    struct parse_state ps = {.c = c, .name = name, .err = err, .err_size = err_size, .text = text};
    if (err != NULL && err_size > 0) {
        err[0] = '\0';
    }
    int rc = ini_parse_stream(read_string_line, &ps, on_key, &ps);
    return finish(&ps, rc);
}

int sq__config_load(struct sq_config *c, const char *path, char *err, size_t err_size)
{
    set_defaults(c);
    snprintf(c->path, sizeof(c->path), "%s", path);
    if (err != NULL && err_size > 0) {
        err[0] = '\0';
    }
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        if (err != NULL) {
            snprintf(err, err_size, "%s: cannot open: %s", path, strerror(errno));
        }
        return SQ_EIO;
    }
    struct parse_state ps = {.c = c, .name = path, .err = err, .err_size = err_size, .file = f};
    int rc = ini_parse_stream(read_file_line, &ps, on_key, &ps);
    fclose(f);
    return finish(&ps, rc);
}

int sq__config_rank_of(const struct sq_config *c, uint32_t id)
{
    for (uint32_t i = 0; i < c->nmembers; i++) {
        if (c->members[i].id == id) {
            return (int)i;
        }
    }
    return -1;
}

int sq__config_subgroup(const struct sq_config *c, const char *name)
{
    for (uint32_t g = 0; g < c->nsubgroups; g++) {
        if (strcmp(c->subgroups[g].name, name) == 0) {
            return (int)g;
        }
    }
    return -1;
}

uint32_t sq__config_shard_rows(const struct sq_config *c, uint32_t g)
{
    uint32_t m = c->subgroups[g].max_members;
    return m == 0 || m > c->nmembers ? c->nmembers : m;
}

uint64_t sq__config_group_digest(const struct sq_config *c)
{
    uint64_t h = SQ_FNV_INIT;
    h = sq__fnv1a_u64(h, c->nmembers);
    for (uint32_t i = 0; i < c->nmembers; i++) {
        h = sq__fnv1a_u64(h, c->members[i].id);
        h = sq__fnv1a(h, c->members[i].host, strlen(c->members[i].host));
        h = sq__fnv1a_u64(h, c->members[i].port);
    }
    h = sq__fnv1a_u64(h, c->nsubgroups);
    for (uint32_t g = 0; g < c->nsubgroups; g++) {
        const struct sq_subgroup_cfg *sg = &c->subgroups[g];
        h = sq__fnv1a(h, sg->name, strlen(sg->name));
        h = sq__fnv1a_u64(h, sg->window_size);
        h = sq__fnv1a_u64(h, sg->max_payload);
        h = sq__fnv1a_u64(h, sg->max_smc_payload);
        h = sq__fnv1a_u64(h, sg->large_buffer_bytes);
        h = sq__fnv1a_u64(h, sg->block_size);
        h = sq__fnv1a_u64(h, (uint64_t)sg->large_schedule);
        h = sq__fnv1a_u64(h, sg->shards);
        h = sq__fnv1a_u64(h, sg->min_members);
        h = sq__fnv1a_u64(h, sg->max_members);
        h = sq__fnv1a_u64(h, sg->persistent);
        h = sq__fnv1a_u64(h, (uint64_t)sg->store);
    }
    h = sq__fnv1a_u64(h, c->max_state_bytes);
    return h;
}
