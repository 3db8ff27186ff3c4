/* mcast_bench.c: multicast throughput and latency of N squalld members on loopback, against a
 * plain TCP stream between two processes measured in the same run. Prints one line of key=value
 * pairs per case. Never part of `make test`: run `make bench` or build/bench/mcast-bench. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_MEMBERS 16
#define TCP_REF_SECONDS 2.0
#define TCP_REF_WRITE 65536
#define CASE_TIMEOUT_S 300

static const char *g_squalld = "build/squalld";
static char g_dir[256];
static int g_base_port;
/* the large-message path's settings, when given (0 / NULL: the subgroup's defaults) */
static int g_max_smc;
static long long g_ring;
static int g_block;
static const char *g_schedule;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A plain TCP stream on 127.0.0.1: a child process reads, we write `chunk`-byte writes for about
 * TCP_REF_SECONDS; returns MB/s as counted by the reader. */
static double tcp_stream_mb_per_s(size_t chunk)
{
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(ls, 1) != 0 ||
        getsockname(ls, (struct sockaddr *)&a, &alen) != 0) {
        perror("mcast-bench: tcp reference");
        return 0;
    }
    int pfd[2];
    if (pipe(pfd) != 0) {
        return 0;
    }
    pid_t pid = fork();
    if (pid == 0) {
        int c = accept(ls, NULL, NULL);
        char *buf = malloc(1 << 20);
        uint64_t total = 0;
        double t0 = 0;
        ssize_t n;
        while ((n = read(c, buf, 1 << 20)) > 0) {
            if (total == 0) {
                t0 = now_s();
            }
            total += (uint64_t)n;
        }
        double mbps = (double)total / (now_s() - t0) / 1e6;
        ssize_t w = write(pfd[1], &mbps, sizeof(mbps));
        (void)w;
        _exit(0);
    }
    close(ls);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(s, (struct sockaddr *)&a, sizeof(a)) != 0) {
        perror("mcast-bench: connect");
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return 0;
    }
    char *buf = calloc(1, chunk);
    double end = now_s() + TCP_REF_SECONDS;
    while (now_s() < end) {
        for (int i = 0; i < 64; i++) {
            if (write(s, buf, chunk) < 0) {
                break;
            }
        }
    }
    close(s);
    double mbps = 0;
    if (read(pfd[0], &mbps, sizeof(mbps)) != sizeof(mbps)) {
        mbps = 0;
    }
    waitpid(pid, NULL, 0);
    close(pfd[0]);
    close(pfd[1]);
    free(buf);
    return mbps;
}

static void write_configs(int n, int window, int max_payload, bool persistent)
{
    for (int i = 0; i < n; i++) {
        char path[512];
        snprintf(path, sizeof(path), "%s/m%d.cfg", g_dir, i);
        FILE *f = fopen(path, "w");
        fprintf(f, "[group]\nprovider = tcp\nlog_level = warn\n[self]\nid = %d\n", i);
        for (int j = 0; j < n; j++) {
            fprintf(f, "[member.%d]\nhost = 127.0.0.1\nport = %d\n", j, g_base_port + j);
        }
        if (persistent) {
            fprintf(f, "[group]\ndata_dir = %s/data\n", g_dir);
        }
        fprintf(f, "[subgroup.bench]\nwindow_size = %d\nmax_payload = %d\n", window, max_payload);
        if (g_max_smc > 0) {
            fprintf(f, "max_smc_payload = %d\n", g_max_smc);
        }
        if (g_ring > 0) {
            fprintf(f, "large_buffer_bytes = %lld\n", g_ring);
        }
        if (g_block > 0) {
            fprintf(f, "block_size = %d\n", g_block);
        }
        if (g_schedule != NULL) {
            fprintf(f, "large_schedule = %s\n", g_schedule);
        }
        if (persistent) {
            fprintf(f, "delivery = persistent\n");
        }
        fclose(f);
    }
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

struct result {
    bool ok;
    double msgs_per_s[MAX_MEMBERS];
    double mb_per_s[MAX_MEMBERS];
    char hash[MAX_MEMBERS][40];
    uint32_t p50_us, p99_us;
    uint32_t persist_p50_us, persist_p99_us; /* send to persisted at every member */
    long rss_kb[MAX_MEMBERS];                /* peak resident set of each member */
    uint64_t large_bytes_sent[MAX_MEMBERS];  /* large-message bytes each wrote to the others */
};

static struct result run_case(int n, bool all_senders, int size, uint64_t total, int window,
                              bool persistent, int rate)
{
    struct result res;
    memset(&res, 0, sizeof(res));
    if (persistent) {
        char cmd[600];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s/data'", g_dir);
        if (system(cmd) != 0) {
            return res;
        }
    }
    write_configs(n, window, size, persistent);
    int senders = all_senders ? n : 1;
    pid_t pids[MAX_MEMBERS];
    for (int i = 0; i < n; i++) {
        uint64_t share = i < senders ? total / (uint64_t)senders : 0;
        if (i == 0) {
            share += total - (total / (uint64_t)senders) * (uint64_t)senders;
        }
        char cfg[512], out[512], lat[512], plat[512], send[32], sz[32], exp[32], rt[32];
        snprintf(plat, sizeof(plat), "%s/plat%d.bin", g_dir, i);
        snprintf(rt, sizeof(rt), "%d", rate);
        snprintf(cfg, sizeof(cfg), "%s/m%d.cfg", g_dir, i);
        snprintf(out, sizeof(out), "%s/out%d.txt", g_dir, i);
        snprintf(lat, sizeof(lat), "%s/lat%d.bin", g_dir, i);
        snprintf(send, sizeof(send), "%" PRIu64, share);
        snprintf(sz, sizeof(sz), "%d", size);
        snprintf(exp, sizeof(exp), "%" PRIu64, total);
        pids[i] = fork();
        if (pids[i] == 0) {
            if (freopen(out, "w", stdout) == NULL) {
                _exit(127);
            }
            const char *argv[24] = {"squalld", "--config",  cfg,        "--send", send,
                                    "--size",  sz,          "--expect", exp,      "--latency-file",
                                    lat,       "--timeout", "300"};
            int a = 13;
            if (persistent) {
                argv[a++] = "--persist-latency-file";
                argv[a++] = plat;
            }
            if (rate > 0) {
                argv[a++] = "--rate";
                argv[a++] = rt;
            }
            argv[a] = NULL;
            execv(g_squalld, (char *const *)argv);
            perror("exec squalld");
            _exit(127);
        }
    }
    bool ok = true;
    double deadline = now_s() + CASE_TIMEOUT_S;
    for (int i = 0; i < n; i++) {
        int st = 0;
        struct rusage ru;
        memset(&ru, 0, sizeof(ru));
        while (wait4(pids[i], &st, WNOHANG, &ru) == 0) {
            if (now_s() > deadline) {
                for (int k = 0; k < n; k++) {
                    kill(pids[k], SIGKILL);
                }
                wait4(pids[i], &st, 0, &ru);
                break;
            }
            usleep(20000);
        }
        res.rss_kb[i] = ru.ru_maxrss;
        ok &= WIFEXITED(st) && WEXITSTATUS(st) == 0;
    }
    uint32_t *lat = calloc(total, sizeof(uint32_t));
    uint32_t *one = calloc(total, sizeof(uint32_t));
    for (int i = 0; i < n && ok; i++) {
        char path[512], line[512];
        snprintf(path, sizeof(path), "%s/out%d.txt", g_dir, i);
        FILE *f = fopen(path, "r");
        ok = false;
        while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
            if (strncmp(line, "member=", 7) == 0) {
                ok = true; /* the result line; the others announce views */
                break;
            }
        }
        if (f != NULL) {
            fclose(f);
        }
        if (!ok) {
            break;
        }
        char *p = strstr(line, "msgs_per_s=");
        char *q = strstr(line, "mb_per_s=");
        char *h = strstr(line, "hash=");
        char *lb = strstr(line, "large_bytes_sent=");
        ok = p && q && h;
        if (ok) {
            res.msgs_per_s[i] = atof(p + 11);
            res.mb_per_s[i] = atof(q + 9);
            res.large_bytes_sent[i] = lb != NULL ? strtoull(lb + 17, NULL, 10) : 0;
            sscanf(h + 5, "%39s", res.hash[i]);
            ok = strcmp(res.hash[i], res.hash[0]) == 0;
        }
        /* Latency to delivery at all members: per message, the latest member's. */
        snprintf(path, sizeof(path), "%s/lat%d.bin", g_dir, i);
        f = fopen(path, "rb");
        size_t got = f != NULL ? fread(one, sizeof(uint32_t), total, f) : 0;
        if (f != NULL) {
            fclose(f);
        }
        for (size_t k = 0; k < got; k++) {
            lat[k] = one[k] > lat[k] ? one[k] : lat[k];
        }
    }
    if (ok) {
        qsort(lat, total, sizeof(uint32_t), cmp_u32);
        res.p50_us = lat[total / 2];
        res.p99_us = lat[(total * 99) / 100];
    }
    if (ok && persistent) {
        /* Each sender measured its own messages: pool them. */
        size_t have = 0;
        for (int i = 0; i < n; i++) {
            char path[512];
            snprintf(path, sizeof(path), "%s/plat%d.bin", g_dir, i);
            FILE *f = fopen(path, "rb");
            if (f != NULL) {
                have += fread(lat + have, sizeof(uint32_t), total - have, f);
                fclose(f);
            }
        }
        if (have > 0) {
            qsort(lat, have, sizeof(uint32_t), cmp_u32);
            res.persist_p50_us = lat[have / 2];
            res.persist_p99_us = lat[(have * 99) / 100];
        }
    }
    free(lat);
    free(one);
    res.ok = ok;
    return res;
}

/* The disk's own cost: append 1 KiB and fdatasync, `n` times, in the same directory the logs
 * go to. */
static void fdatasync_us(int n, uint32_t *p50, uint32_t *p99)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/fdatasync.ref", g_dir);
    int fd = open(path, O_CREAT | O_RDWR | O_TRUNC, 0644);
    uint32_t *t = calloc((size_t)n, sizeof(uint32_t));
    char buf[1024];
    memset(buf, 'x', sizeof(buf));
    for (int i = 0; fd >= 0 && t != NULL && i < n; i++) {
        double a = now_s();
        if (write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf) || fdatasync(fd) != 0) {
            break;
        }
        t[i] = (uint32_t)((now_s() - a) * 1e6);
    }
    if (t != NULL) {
        qsort(t, (size_t)n, sizeof(uint32_t), cmp_u32);
        *p50 = t[n / 2];
        *p99 = t[(n * 99) / 100];
    }
    free(t);
    if (fd >= 0) {
        close(fd);
    }
    unlink(path);
}

/* Persistent against atomic delivery, with the raw fdatasync cost as the reference. */
static int persist_suite(int members, int window)
{
    uint32_t fs50 = 0, fs99 = 0;
    fdatasync_us(2000, &fs50, &fs99);
    printf("case=fdatasync size=1024 samples=2000 p50_us=%u p99_us=%u\n", fs50, fs99);
    fflush(stdout);
    int failures = 0;
    /* one sender at a steady 2,000/s: latency; every sender flat out: throughput */
    const struct {
        const char *senders;
        int rate;
        uint64_t total;
    } cases[2] = {{"one", 2000, 20000}, {"all", 0, 150000}};
    for (int c = 0; c < 2; c++) {
        bool all = strcmp(cases[c].senders, "all") == 0;
        struct result a =
            run_case(members, all, 1024, cases[c].total, window, false, cases[c].rate);
        g_base_port += members;
        struct result p = run_case(members, all, 1024, cases[c].total, window, true, cases[c].rate);
        g_base_port += members;
        if (!a.ok || !p.ok) {
            printf("case=persist members=%d senders=%s size=1024 ok=0 error=see_%s\n", members,
                   cases[c].senders, g_dir);
            failures++;
            continue;
        }
        double am = a.msgs_per_s[0], pm = p.msgs_per_s[0];
        for (int i = 1; i < members; i++) {
            am = a.msgs_per_s[i] < am ? a.msgs_per_s[i] : am;
            pm = p.msgs_per_s[i] < pm ? p.msgs_per_s[i] : pm;
        }
        printf("case=persist members=%d senders=%s size=1024 messages=%" PRIu64 " rate=%d ok=1 "
               "atomic_msgs_per_s=%.0f persistent_msgs_per_s=%.0f throughput_ratio=%.3f "
               "atomic_delivery_p50_us=%u persistent_delivery_p50_us=%u persist_p50_us=%u "
               "persist_p99_us=%u fdatasync_p50_us=%u fdatasync_p99_us=%u "
               "persist_p50_per_fdatasync_p50=%.2f\n",
               members, cases[c].senders, cases[c].total, cases[c].rate, am, pm,
               am > 0 ? pm / am : 0, a.p50_us, p.p50_us, p.persist_p50_us, p.persist_p99_us, fs50,
               fs99, fs50 > 0 ? (double)p.persist_p50_us / fs50 : 0);
        fflush(stdout);
    }
    return failures;
}

int main(int argc, char **argv)
{
    int members = 3, size = 0, window = 256;
    const char *senders = NULL;
    uint64_t count = 0;
    static const struct option opts[] = {
        {"members", required_argument, NULL, 'n'},  {"senders", required_argument, NULL, 's'},
        {"size", required_argument, NULL, 'z'},     {"count", required_argument, NULL, 'c'},
        {"window", required_argument, NULL, 'w'},   {"squalld", required_argument, NULL, 'd'},
        {"persist", no_argument, NULL, 'p'},        {"data-dir", required_argument, NULL, 'D'},
        {"schedule", required_argument, NULL, 'S'}, {"max-smc", required_argument, NULL, 'M'},
        {"ring", required_argument, NULL, 'R'},     {"block", required_argument, NULL, 'B'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0}};
    bool persist = false;
    const char *data_parent = "/tmp";
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'n':
            members = atoi(optarg);
            break;
        case 's':
            senders = optarg;
            break;
        case 'z':
            size = atoi(optarg);
            break;
        case 'c':
            count = strtoull(optarg, NULL, 10);
            break;
        case 'w':
            window = atoi(optarg);
            break;
        case 'd':
            g_squalld = optarg;
            break;
        case 'p':
            persist = true;
            break;
        case 'D':
            data_parent = optarg;
            break;
        case 'S':
            g_schedule = optarg;
            break;
        case 'M':
            g_max_smc = atoi(optarg);
            break;
        case 'R':
            g_ring = atoll(optarg);
            break;
        case 'B':
            g_block = atoi(optarg);
            break;
        default:
            fprintf(c == 'h' ? stdout : stderr,
                    "usage: mcast-bench [--members N] [--senders all|one] [--size BYTES]\n"
                    "                   [--count MESSAGES] [--window SLOTS] [--squalld PATH]\n"
                    "                   [--schedule chain|star] [--max-smc BYTES] [--ring BYTES]\n"
                    "                   [--block BYTES]\n"
                    "       mcast-bench --persist [--data-dir DIR] [--members N] [--squalld PATH]\n"
                    "With no case options it runs every case: senders all and one, sizes 64,\n"
                    "1024, 10240, 1 MiB and 16 MiB, on --members (default 3) members. Messages\n"
                    "above --max-smc (the subgroup's max_smc_payload, default 10240) take the\n"
                    "large-message path: --schedule, --ring (large_buffer_bytes) and --block\n"
                    "(block_size) set it. --persist compares\n"
                    "persistent with atomic delivery and with the disk's own fdatasync, with the\n"
                    "logs in DIR (default /tmp).\n");
            return c == 'h' ? 0 : 2;
        }
    }
    if (members < 2 || members > MAX_MEMBERS || window < 1 ||
        (senders && strcmp(senders, "all") != 0 && strcmp(senders, "one") != 0) ||
        (size != 0 && (size < 8 || size > (256 << 20))) ||
        (g_schedule && strcmp(g_schedule, "chain") != 0 && strcmp(g_schedule, "star") != 0)) {
        fprintf(stderr,
                "mcast-bench: bad arguments (members 2..%d, senders all|one, size 8..256 MiB, "
                "schedule chain|star)\n",
                MAX_MEMBERS);
        return 2;
    }
    if (access(g_squalld, X_OK) != 0) {
        fprintf(stderr, "mcast-bench: cannot run %s (pass --squalld PATH)\n", g_squalld);
        return 2;
    }
    snprintf(g_dir, sizeof(g_dir), "%s/squall-bench-XXXXXX", data_parent);
    if (mkdtemp(g_dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    srand((unsigned)getpid());
    g_base_port = 20000 + (rand() % 20000);
    if (persist) {
        int f = persist_suite(members, window);
        if (f == 0) {
            char cmd[600];
            snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
            if (system(cmd) != 0) {
                fprintf(stderr, "mcast-bench: could not remove %s\n", g_dir);
            }
        }
        return f == 0 ? 0 : 1;
    }

    int sizes[5] = {64, 1024, 10240, 1 << 20, 16 << 20};
    int nsizes = 5;
    if (size != 0) {
        sizes[0] = size;
        nsizes = 1;
    }
    const char *modes[2] = {"all", "one"};
    int nmodes = 2;
    if (senders != NULL) {
        modes[0] = senders;
        nmodes = 1;
    }
    int failures = 0;
    for (int si = 0; si < nsizes; si++) {
        double ref = tcp_stream_mb_per_s(TCP_REF_WRITE);
        double ref_same = tcp_stream_mb_per_s((size_t)sizes[si]);
        for (int mi = 0; mi < nmodes; mi++) {
            uint64_t total = count                     ? count
                             : sizes[si] >= (16 << 20) ? 200
                             : sizes[si] >= (1 << 20)  ? 4000
                             : sizes[si] >= 10240      ? 300000
                                                       : 1000000;
            bool all = strcmp(modes[mi], "all") == 0;
            struct result r = run_case(members, all, sizes[si], total, window, false, 0);
            g_base_port += members; /* fresh ports: the previous case's may be in TIME_WAIT */
            if (!r.ok) {
                printf("case=mcast members=%d senders=%s size=%d ok=0 error=see_%s\n", members,
                       modes[mi], sizes[si], g_dir);
                failures++;
                continue;
            }
            /* The reference is the better of the two TCP streams: the stricter ratio. */
            double best = ref > ref_same ? ref : ref_same;
            double min_msgs = r.msgs_per_s[0], min_mb = r.mb_per_s[0];
            char per[256] = "", rss[256] = "", sent[512] = "";
            size_t len = 0, rlen = 0, slen = 0;
            long rss_max = 0;
            /* Bytes that crossed to receivers per second, summed: a member delivers its own
             * messages too, and with every member sending, 1/n of what each delivers is its own. */
            double recv_sum = 0;
            for (int i = 0; i < members; i++) {
                min_msgs = r.msgs_per_s[i] < min_msgs ? r.msgs_per_s[i] : min_msgs;
                min_mb = r.mb_per_s[i] < min_mb ? r.mb_per_s[i] : min_mb;
                recv_sum += all     ? r.mb_per_s[i] * (members - 1) / members
                            : i > 0 ? r.mb_per_s[i]
                                    : 0;
                rss_max = r.rss_kb[i] > rss_max ? r.rss_kb[i] : rss_max;
                len += (size_t)snprintf(per + len, sizeof(per) - len, "%s%.0f", i ? "," : "",
                                        r.msgs_per_s[i]);
                rlen += (size_t)snprintf(rss + rlen, sizeof(rss) - rlen, "%s%ld", i ? "," : "",
                                         r.rss_kb[i] / 1024);
                /* per byte of the messages it sent (all) or that were sent (one) */
                double own = (double)sizes[si] * (double)total / (all ? members : 1);
                slen += (size_t)snprintf(sent + slen, sizeof(sent) - slen, "%s%.2f", i ? "," : "",
                                         own > 0 ? (double)r.large_bytes_sent[i] / own : 0);
            }
            printf("case=mcast members=%d senders=%s size=%d messages=%" PRIu64 " ok=1 "
                   "large_path=%d schedule=%s msgs_per_s=%.0f mb_per_s=%.1f member_msgs_per_s=%s "
                   "recv_sum_mb_per_s=%.1f p50_us=%u p99_us=%u tcp_ref_mb_per_s=%.1f "
                   "tcp_same_size_mb_per_s=%.1f ratio_to_tcp=%.3f recv_sum_ratio_to_tcp_same=%.3f "
                   "member_large_sent_per_byte=%s member_rss_max_mb=%s rss_max_mb=%ld\n",
                   members, modes[mi], sizes[si], total,
                   sizes[si] > (g_max_smc > 0 ? g_max_smc : 10240),
                   g_schedule ? g_schedule : "auto", min_msgs, min_mb, per, recv_sum, r.p50_us,
                   r.p99_us, ref, ref_same, best > 0 ? min_mb / best : 0,
                   ref_same > 0 ? recv_sum / ref_same : 0, sent, rss, rss_max / 1024);
            fflush(stdout);
        }
    }
    if (failures == 0) {
        char cmd[600];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
        if (system(cmd) != 0) {
            fprintf(stderr, "mcast-bench: could not remove %s\n", g_dir);
        }
    }
    return failures == 0 ? 0 : 1;
}
