/* fuzz_http.c: libFuzzer target for the HTTP front end's translation of a request into an
 * operation (src/server/http_req.c): routes, query arguments, conditional headers, versions,
 * times and SSE event ids. Input: a method line, a raw URL line (path?query, percent-encoded),
 * then header lines "Name: value". Properties: translation never crashes, answers 0 or a 4xx
 * it documents, and a translated key is a clean path; event ids read back as written. */
#include <microhttpd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server/http.h"

#define MAX_ARGS 32
#define MAX_HEADERS 32

struct fake {
    char *arg_name[MAX_ARGS], *arg_value[MAX_ARGS];
    int nargs;
    char *hdr_name[MAX_HEADERS], *hdr_value[MAX_HEADERS];
    int nhdrs;
};

static const char *lookup(void *arg, int kind, const char *name)
{
    struct fake *f = arg;
    if (kind == SQ_HTTP_HEADER) {
        for (int i = 0; i < f->nhdrs; i++) {
            if (strcasecmp(f->hdr_name[i], name) == 0) {
                return f->hdr_value[i];
            }
        }
        return NULL;
    }
    for (int i = 0; i < f->nargs; i++) {
        if (strcmp(f->arg_name[i], name) == 0) {
            return f->arg_value[i] != NULL ? f->arg_value[i] : "";
        }
    }
    return NULL;
}

static const char *each_arg(void *arg, bool (*fn)(const char *name, void *ctx), void *ctx)
{
    struct fake *f = arg;
    for (int i = 0; i < f->nargs; i++) {
        if (!fn(f->arg_name[i], ctx)) {
            return f->arg_name[i];
        }
    }
    return NULL;
}

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "property failed: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 8192) {
        return 0;
    }
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    /* lines; a NUL in the input ends it, as it would a C string from the server */
    char *lines[2 + MAX_HEADERS] = {0};
    int nlines = 0;
    for (char *save = NULL, *l = strtok_r(text, "\n", &save); l != NULL && nlines < 2 + MAX_HEADERS;
         l = strtok_r(NULL, "\n", &save)) {
        lines[nlines++] = l;
    }
    if (nlines < 2) {
        free(text);
        return 0;
    }
    const char *method = lines[0];
    char *raw = strdup(lines[1]);
    char *url = strdup(lines[1]);
    struct fake f = {0};
    char *q = strchr(url, '?');
    if (q != NULL) {
        *q++ = '\0';
        for (char *save = NULL, *a = strtok_r(q, "&", &save); a != NULL && f.nargs < MAX_ARGS;
             a = strtok_r(NULL, "&", &save)) {
            char *eq = strchr(a, '=');
            if (eq != NULL) {
                *eq++ = '\0';
                MHD_http_unescape(eq);
            }
            MHD_http_unescape(a);
            f.arg_name[f.nargs] = a;
            f.arg_value[f.nargs++] = eq;
        }
    }
    MHD_http_unescape(url); /* what libmicrohttpd hands the handler as the path */
    for (int i = 2; i < nlines && f.nhdrs < MAX_HEADERS; i++) {
        char *colon = strchr(lines[i], ':');
        if (colon == NULL) {
            continue;
        }
        *colon = '\0';
        char *v = colon + 1;
        while (*v == ' ') {
            v++;
        }
        f.hdr_name[f.nhdrs] = lines[i];
        f.hdr_value[f.nhdrs++] = v;
    }
    struct sq_http_op op;
    char why[400], allow[32];
    int st =
        sq__http_translate(method, raw, url, lookup, each_arg, &f, &op, why, sizeof(why), allow);
    check(st == 0 || st == 400 || st == 404 || st == 405 || st == 414, "status is 0 or a 4xx");
    check(st == 0 || why[0] != '\0', "a refusal says why");
    check(st != 405 || allow[0] != '\0', "a 405 names the methods allowed");
    if (st == 0) {
        check(op.kind >= SQ_HTTP_KV_PUT && op.kind <= SQ_HTTP_CONSOLE, "a known kind");
        bool keyed = op.kind <= SQ_HTTP_WATCH;
        if (keyed) {
            size_t n = strnlen(op.key, sizeof(op.key));
            check(n < sizeof(op.key), "the key is NUL-terminated");
            check(n >= 2 && op.key[0] == '/', "a key is a path");
            check(strstr(op.key, "//") == NULL, "no empty segment");
            check(strstr(op.key, "/../") == NULL && strstr(op.key, "/./") == NULL,
                  "no dot segments");
            check(strchr(raw, '%') == NULL || strstr(raw, "%00") == NULL, "no NUL escape passes");
        }
        check(!(op.get.at_version && op.get.at_time), "one of version and time");
        check(!(op.put.if_version && op.put.if_absent), "one condition");
        check(op.nfrom <= SQ_CLIENT_WATCH_SHARDS, "bounded watch positions");
    }
    /* the parsers on their own, with each line as input */
    for (int i = 0; i < nlines; i++) {
        uint64_t v = 0, from[SQ_CLIENT_WATCH_SHARDS];
        uint32_t nfrom = 0;
        (void)sq__http_parse_version(lines[i], &v);
        (void)sq__http_parse_etag(lines[i], &v);
        /* (times past the year 9999 are taken as microseconds but have no RFC 3339 form) */
        if (sq__http_parse_time(lines[i], &v) && v < 253402300800000000ull) {
            char iso[64];
            uint64_t back = 0;
            sq__http_iso_time(iso, sizeof(iso), v);
            check(sq__http_parse_time(iso, &back) && back == v, "a time reads back");
        }
        if (sq__http_parse_event_id(lines[i], from, &nfrom)) {
            check(nfrom >= 1 && nfrom <= SQ_CLIENT_WATCH_SHARDS, "event id positions bounded");
            char id[40 * SQ_CLIENT_WATCH_SHARDS];
            uint64_t from2[SQ_CLIENT_WATCH_SHARDS];
            uint32_t n2 = 0;
            if (nfrom > 1) {
                sq__http_event_id(id, sizeof(id), 7, from, nfrom);
                check(sq__http_parse_event_id(id, from2, &n2) && n2 == nfrom &&
                          memcmp(from, from2, nfrom * sizeof(uint64_t)) == 0,
                      "an event id reads back");
            }
        }
    }
    free(raw);
    free(url);
    free(text);
    return 0;
}
