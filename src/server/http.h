/* http.h: the HTTP front end of a member (REST under /v1, server-sent events, /metrics, the
 * console), and the translation of one HTTP request into a key-value operation that it and its
 * fuzz target share.
 *
 *   http_req.c  pure translation: method, URL, query arguments and headers -> struct sq_http_op,
 *               or the 4xx that the request earns; parsing of versions, times and ETags
 *   http.c      the server (libmicrohttpd, one thread per connection), the pool of client
 *               connections to the members, answers as JSON (jansson), SSE streams, metrics
 *
 * HTTP requests take the binary protocol's path: a translated op is a call of the client library
 * (include/squall/client.h) on a connection to this member (then the others, when this one is
 * out of the group), so routing, relaying, at-most-once and the errors are the same. While this
 * member is the connection's member, a blocking call skips the socket: the library hands the
 * encoded request to this member's service on the HTTP thread (sq__kv_server_inproc_request),
 * and the service hands the answer back (sq__client_direct_answer). */
#ifndef SQ_HTTP_H
#define SQ_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "squall/client.h"

struct sq_config;
struct sq_kv_server;

/* ---- http.c ---- */

struct sq_http;

/* Starts serving HTTP on the member's [member.ID] http_port (of the config loaded in `cfg`, whose
 * self is this member), answering through the client ports of the members (this one first);
 * requests to this member go to its service `kv` in-process (kvserver.h) when it is not NULL.
 * Stop it before `kv`. SQ_EIO with the reason in `err` when the port cannot be listened on. */
int sq__http_start(struct sq_http **out, const struct sq_config *cfg, struct sq_kv_server *kv,
                   char *err, size_t err_size);

/* Stops the server: open streams end, connections close; frees everything. Safe on NULL. */
void sq__http_stop(struct sq_http *h);

/* http_tls.c. With [tls] cert_file: reads the PEM key, certificate and (require_client_cert)
 * CA into strings the caller frees; nothing without. SQ_ECONFIG naming a bad file. */
int sq__http_tls_load(const struct sq_config *cfg, char **key, char **cert, char **trust,
                      char *err, size_t err_size);
/* With require_client_cert: whether the HTTPS client on `conn` presented a certificate that
 * its CA signed and that is valid now; false with the reason in `why`. */
struct MHD_Connection;
bool sq__http_tls_client_ok(struct MHD_Connection *conn, char *why, size_t why_size);

/* ---- http_req.c ---- */

/* What a request asks for. */
enum {
    SQ_HTTP_KV_PUT = 1,  /* PUT /v1/kv/KEY */
    SQ_HTTP_KV_GET,      /* GET|HEAD /v1/kv/KEY */
    SQ_HTTP_KV_DELETE,   /* DELETE /v1/kv/KEY */
    SQ_HTTP_KV_LIST,     /* GET /v1/kv/PREFIX/ (or ?list) */
    SQ_HTTP_HISTORY,     /* GET /v1/history/KEY */
    SQ_HTTP_WATCH,       /* GET /v1/watch/KEY or PREFIX/ */
    SQ_HTTP_POOLS,       /* GET /v1/pools */
    SQ_HTTP_POOL_CREATE, /* POST /v1/pools */
    SQ_HTTP_STATUS,      /* GET /v1/status */
    SQ_HTTP_METRICS,     /* GET /metrics */
    SQ_HTTP_CONSOLE,     /* GET / (the web console) */
};

#define SQ_HTTP_MAX_KEY 1024 /* the protocol's SQ_KV_MAX_KEY */

struct sq_http_op {
    int kind;                      /* SQ_HTTP_* */
    bool head;                     /* HEAD: headers only */
    char key[SQ_HTTP_MAX_KEY + 1]; /* "/orders/42", the prefix "/orders/", NUL-terminated */
    sq_put_opts put;               /* PUT, DELETE: If-Match, If-None-Match: * */
    sq_get_opts get;               /* GET: ?version=, ?at=, ?stable= */
    bool if_none_match;            /* GET: If-None-Match with a version: 304 when it is current */
    uint64_t inm_version;
    bool list_at; /* list: ?at= */
    uint64_t list_at_us;
    /* watch: the first version wanted per shard (from ?from= or Last-Event-ID) */
    uint64_t from[SQ_CLIENT_WATCH_SHARDS];
    uint32_t nfrom;
};

/* Looks up a query argument or a request header by name (headers case-insensitively); NULL when
 * absent. `arg` is the caller's. */
enum { SQ_HTTP_ARG, SQ_HTTP_HEADER };
typedef const char *(*sq_http_lookup_fn)(void *arg, int kind, const char *name);
/* Calls fn(name, ctx) for each query argument; returns the first name fn refused, or NULL. */
typedef const char *(*sq_http_args_fn)(void *arg, bool (*fn)(const char *name, void *ctx),
                                       void *ctx);

/* Translates a request: `method`, `raw_url` as it came on the request line (path and query,
 * still percent-encoded: checked for bad escapes), `path` the decoded path. On success returns 0
 * and fills *op; else returns the HTTP status (400, 404, 405, 414) and writes the reason to `why`
 * and, for 405, the methods allowed to `allow` (at least 32 bytes). */
int sq__http_translate(const char *method, const char *raw_url, const char *path,
                       sq_http_lookup_fn lookup, sq_http_args_fn each_arg, void *arg,
                       struct sq_http_op *op, char *why, size_t why_size, char *allow);

/* Parses a version: "0x" hex or decimal digits, whole. */
bool sq__http_parse_version(const char *s, uint64_t *out);

/* Parses an ETag value: "0x..." in double quotes (or bare, or weak W/"..."). */
bool sq__http_parse_etag(const char *s, uint64_t *out);

/* Parses a time: microseconds since the epoch (digits), or ISO 8601 / RFC 3339
 * (2026-12-07T11:00:00Z, with optional .fraction and a Z or +hh:mm / -hh:mm offset). */
bool sq__http_parse_time(const char *s, uint64_t *us);

/* Parses a Last-Event-ID written by the SSE stream (sq__http_event_id) into the first version
 * wanted per shard. */
bool sq__http_parse_event_id(const char *s, uint64_t *from, uint32_t *nfrom);

/* Writes the id of an SSE event: the event's version "0x..." when the watch covers one shard;
 * for several, that and ";" then the next version wanted per shard, so that sending it back as
 * Last-Event-ID resumes just after this event in every shard. Returns the length. */
size_t sq__http_event_id(char *buf, size_t size, uint64_t version, const uint64_t *next,
                         uint32_t nshards);

/* Writes microseconds since the epoch as RFC 3339 UTC with microseconds. */
void sq__http_iso_time(char *buf, size_t size, uint64_t us);

/* The HTTP status of a client-library error code, and whether it is worth retrying (503). */
int sq__http_status_of(int err);

#endif
