/* http_bench.c: one client's closed-loop get and put over HTTP (libcurl, one keep-alive
 * connection) against the same calls over the binary protocol (the client library), measured in
 * the same run, alternating rounds so that a noisy machine weighs on both alike. Prints one
 * key=value line per case and one with the ratios. Never part of `make test`: `make bench-http`
 * (bench/http-bench.sh) or build/bench/http-bench --http URL --members LIST --pool /PATH. */
#include <curl/curl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "squall/client.h"

#define KEYS 1000
#define ROUNDS 6
#define MAX_SAMPLES (1u << 22)

enum { BIN_GET, HTTP_GET, BIN_PUT, HTTP_PUT, NCASES };
static const char *const names[NCASES] = {"binary_get", "http_get", "binary_put", "http_put"};

struct samples {
    uint32_t *us;
    size_t n;
    double seconds;
    long errors;
};

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static size_t sink(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return size * n;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void usage(void)
{
    fprintf(stderr, "usage: http-bench --http http://HOST:PORT --members HOST:PORT[,...] --pool "
                    "/PATH [--seconds S (per case, default 6)] [--size BYTES (default 256)]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *http = NULL, *members = NULL, *pool = NULL;
    double seconds = 6;
    size_t size = 256;
    static const struct option opts[] = {
        {"http", required_argument, 0, 'h'}, {"members", required_argument, 0, 'm'},
        {"pool", required_argument, 0, 'p'}, {"seconds", required_argument, 0, 's'},
        {"size", required_argument, 0, 'z'}, {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'h':
            http = optarg;
            break;
        case 'm':
            members = optarg;
            break;
        case 'p':
            pool = optarg;
            break;
        case 's':
            seconds = atof(optarg);
            break;
        case 'z':
            size = (size_t)strtoul(optarg, NULL, 10);
            break;
        default:
            usage();
        }
    }
    if (http == NULL || members == NULL || pool == NULL || seconds <= 0 || size == 0 ||
        size > (1u << 20)) {
        usage();
    }
    char err[512];
    sq_client *c = NULL;
    if (sq_client_open(&c, members, 10000, err, sizeof(err)) != 0) {
        fprintf(stderr, "http-bench: %s\n", err);
        return 1;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURL *h = curl_easy_init();
    char *value = malloc(size);
    memset(value, 'v', size);
    struct samples s[NCASES];
    for (int k = 0; k < NCASES; k++) {
        s[k] = (struct samples){.us = malloc(MAX_SAMPLES * sizeof(uint32_t))};
    }
    sq_kv_result r = {0};
    char key[256], url[512];
    for (int i = 0; i < KEYS; i++) { /* every key exists before the gets */
        snprintf(key, sizeof(key), "%s/k%d", pool, i);
        if (sq_client_put(c, key, value, size, NULL, &r) != 0) {
            fprintf(stderr, "http-bench: put %s: %s\n", key, r.message);
            return 1;
        }
    }
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    unsigned seed = 1;
    for (int round = 0; round < ROUNDS; round++) {
        for (int k = 0; k < NCASES; k++) {
            uint64_t start = now_us(), until = start + (uint64_t)(seconds / ROUNDS * 1e6);
            while (now_us() < until) {
                snprintf(key, sizeof(key), "%s/k%d", pool, rand_r(&seed) % KEYS);
                uint64_t t0 = now_us();
                int rc = 0;
                if (k == BIN_GET || k == BIN_PUT) {
                    rc = k == BIN_GET ? sq_client_get(c, key, NULL, &r)
                                      : sq_client_put(c, key, value, size, NULL, &r);
                } else {
                    snprintf(url, sizeof(url), "%s/v1/kv%s", http, key);
                    curl_easy_setopt(h, CURLOPT_URL, url);
                    if (k == HTTP_PUT) {
                        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "PUT");
                        curl_easy_setopt(h, CURLOPT_POSTFIELDS, value);
                        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)size);
                    } else {
                        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, NULL);
                        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
                    }
                    long code = 0;
                    rc = curl_easy_perform(h) == CURLE_OK ? 0 : -1;
                    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
                    rc = rc == 0 && code == 200 ? 0 : -1;
                }
                uint32_t us = (uint32_t)(now_us() - t0);
                if (rc != 0) {
                    s[k].errors++;
                } else if (s[k].n < MAX_SAMPLES) {
                    s[k].us[s[k].n++] = us;
                }
            }
            s[k].seconds += (double)(now_us() - start) / 1e6;
        }
    }
    double p50[NCASES], rate[NCASES];
    for (int k = 0; k < NCASES; k++) {
        qsort(s[k].us, s[k].n, sizeof(uint32_t), cmp_u32);
        p50[k] = s[k].n ? s[k].us[s[k].n / 2] : 0;
        double p99 = s[k].n ? s[k].us[s[k].n * 99 / 100] : 0;
        rate[k] = (double)s[k].n / s[k].seconds;
        printf("case=%s clients=1 size=%zu ops=%zu seconds=%.1f ops_per_s=%.0f p50_us=%.0f "
               "p99_us=%.0f errors=%ld\n",
               names[k], size, s[k].n, s[k].seconds, rate[k], p50[k], p99, s[k].errors);
    }
    printf("case=ratio http_get_vs_binary=%.2f http_put_vs_binary=%.2f (throughput, 1 client; "
           "target for gets >= 0.5)\n",
           rate[BIN_GET] > 0 ? rate[HTTP_GET] / rate[BIN_GET] : 0,
           rate[BIN_PUT] > 0 ? rate[HTTP_PUT] / rate[BIN_PUT] : 0);
    sq_kv_result_free(&r);
    curl_easy_cleanup(h);
    curl_global_cleanup();
    sq_client_close(c);
    free(value);
    for (int k = 0; k < NCASES; k++) {
        free(s[k].us);
    }
    int bad = 0;
    for (int k = 0; k < NCASES; k++) {
        bad |= s[k].errors > 0 || s[k].n == 0;
    }
    return bad;
}
