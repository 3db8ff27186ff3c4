/* test_config.c: the configuration parser, good files and every kind of bad input. */
#include "config.h"

#include "log.h"
#include "squall.h"
#include "test.h"

#include <stdlib.h>

static const char *GOOD = "; a three member group\n"
                          "[group]\n"
                          "provider = tcp\n"
                          "log_level = debug\n"
                          "\n"
                          "[self]\n"
                          "id = 2\n"
                          "[member.2]\n"
                          "host = 127.0.0.1\n"
                          "port = 7102\n"
                          "[member.0]\n"
                          "host = 127.0.0.1\n"
                          "port = 7100\n"
                          "[member.1]\n"
                          "host = 127.0.0.1\n"
                          "port = 7101\n"
                          "[subgroup.main]\n"
                          "window_size = 64\n"
                          "max_payload = 1024\n";

static void test_good(void)
{
    struct sq_config c;
    char err[256];
    CHECK_EQ_INT(sq__config_parse_string(&c, "good.cfg", GOOD, err, sizeof(err)), 0);
    CHECK_EQ_INT(c.nmembers, 3);
    CHECK_EQ_INT(c.members[0].id, 0); /* sorted by id */
    CHECK_EQ_INT(c.members[2].port, 7102);
    CHECK_EQ_INT(c.self_id, 2);
    CHECK_EQ_INT(sq__config_rank_of(&c, 2), 2);
    CHECK_EQ_INT(sq__config_rank_of(&c, 9), -1);
    CHECK(strcmp(c.provider, "tcp") == 0);
    CHECK_EQ_INT(c.log_level, SQ_LOG_DEBUG);
    CHECK_EQ_INT(c.nsubgroups, 1);
    CHECK_EQ_INT(c.subgroups[0].window_size, 64);
    CHECK_EQ_INT(c.subgroups[0].max_payload, 1024);
    CHECK(strcmp(c.subgroups[0].name, "main") == 0);
    CHECK_EQ_INT(c.subgroups[0].shards, 1);
}

static void test_subgroups(void)
{
    const char *text = "[self]\nid=0\n"
                       "[member.0]\nhost=h\nport=1\n[member.1]\nhost=h\nport=2\n"
                       "[member.2]\nhost=h\nport=3\n[member.3]\nhost=h\nport=4\n"
                       "[subgroup.kv]\nshards=2\nmin_members=2\nmax_members=2\n"
                       "[subgroup.meta]\nwindow_size=16\n";
    struct sq_config c;
    char err[256];
    CHECK_EQ_INT(sq__config_parse_string(&c, "sg.cfg", text, err, sizeof(err)), 0);
    CHECK_EQ_INT(c.nsubgroups, 2);
    CHECK_EQ_INT(c.nshards, 3);
    CHECK(strcmp(c.subgroups[1].name, "meta") == 0);
    CHECK_EQ_INT(c.subgroups[0].shards, 2);
    CHECK_EQ_INT(c.subgroups[0].min_members, 2);
    CHECK_EQ_INT(sq__config_shard_rows(&c, 0), 2);
    CHECK_EQ_INT(sq__config_shard_rows(&c, 1), 4); /* no max: every member */
    CHECK_EQ_INT(c.subgroups[1].window_size, 16);
    CHECK_EQ_INT(c.subgroups[1].max_payload, 10240);
    CHECK_EQ_INT(sq__config_subgroup(&c, "meta"), 1);
    CHECK_EQ_INT(sq__config_subgroup(&c, "nope"), -1);
    /* a subgroup whose section sets nothing exists all the same, with the defaults */
    const char *empty = "[self]\nid=0\n[member.0]\nhost=h\nport=1\n[member.1]\nhost=h\nport=2\n"
                        "[subgroup.cache]\n[subgroup.orders]\nshards=2\n[subgroup.last]\n";
    CHECK_EQ_INT(sq__config_parse_string(&c, "sg.cfg", empty, err, sizeof(err)), 0);
    CHECK_EQ_INT(c.nsubgroups, 3);
    CHECK_EQ_INT(c.nshards, 4);
    CHECK(strcmp(c.subgroups[0].name, "cache") == 0 && c.subgroups[0].shards == 1);
    CHECK(strcmp(c.subgroups[2].name, "last") == 0);
}

static void test_defaults_and_digest(void)
{
    const char *min = "[self]\nid=0\n[member.0]\nhost=127.0.0.1\nport=7000\n";
    struct sq_config a, b;
    char err[256];
    CHECK_EQ_INT(sq__config_parse_string(&a, "min.cfg", min, err, sizeof(err)), 0);
    CHECK(strcmp(a.provider, "tcp") == 0);
    CHECK_EQ_INT(a.nsubgroups, 1);
    CHECK(strcmp(a.subgroups[0].name, "default") == 0);
    CHECK_EQ_INT(a.subgroups[0].window_size, 256);
    CHECK_EQ_INT(a.subgroups[0].max_payload, 10240);
    CHECK_EQ_INT(a.log_level, SQ_LOG_INFO);
    CHECK_EQ_INT(a.heartbeat_timeout_ms, 3000);
    CHECK(a.rejoin);
    {
        struct sq_config r;
        const char *no = "[self]\nid=0\n[member.0]\nhost=h\nport=5\n[group]\nrejoin=false\n";
        CHECK_EQ_INT(sq__config_parse_string(&r, "r.cfg", no, err, sizeof(err)), 0);
        CHECK(!r.rejoin);
    }
    /* Members that differ only in [self] share a digest; a different layout does not. */
    const char *other = "[self]\nid=0\n[member.0]\nhost=127.0.0.1\nport=7000\n"
                        "[subgroup.x]\nwindow_size=8\n";
    CHECK_EQ_INT(sq__config_parse_string(&b, "b.cfg", min, err, sizeof(err)), 0);
    CHECK(sq__config_group_digest(&a) == sq__config_group_digest(&b));
    CHECK_EQ_INT(sq__config_parse_string(&b, "b.cfg", other, err, sizeof(err)), 0);
    CHECK(sq__config_group_digest(&a) != sq__config_group_digest(&b));
}

struct bad_case {
    const char *text;
    const char *expect; /* substring of the error, which always starts with file:line */
};

static const struct bad_case BAD[] = {
    {"[self]\nid=0\n[member.0]\nhost=h\nport=1\n[group]\nbogus = 1\n",
     "bad.cfg:7: unknown key 'bogus' in [group]"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=1\n[nosuch]\nx=1\n",
     "bad.cfg:6: unknown section [nosuch]"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=1\n[nosuch]\n", "bad.cfg:6: unknown section [nosuch]"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=1\n[group]\nrestart_wait_ms = -1\n",
     "bad.cfg:7: key 'restart_wait_ms' in [group]"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=70000\n",
     "bad.cfg:5: key 'port' in [member.0]: '70000' is not a port number"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=-1\n", "key 'port'"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=12ab\n", "'12ab' is not a port number"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=\n", "key 'port'"},
    {"[self]\nid=0\n[member.0]\nhost=h\n",
     "bad.cfg:3: section [member.0] is missing required key 'port'"},
    {"[self]\nid=0\n[member.0]\nport=5\n", "missing required key 'host'"},
    {"[self]\nid=1\n[member.0]\nhost=h\nport=5\n",
     "key 'id' in [self]: 1 is not one of the [member.ID] sections"},
    {"[member.0]\nhost=h\nport=5\n", "missing required key 'id' in section [self]"},
    {"[self]\nid=0\n", "no [member.ID] section"},
    {"[self]\nid=x\n[member.0]\nhost=h\nport=5\n",
     "bad.cfg:2: key 'id' in [self]: 'x' is not a member id"},
    {"[self]\nid=0\nid=0\n[member.0]\nhost=h\nport=5\n",
     "bad.cfg:3: key 'id' in [self] given twice"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=5\nport=6\n", "key 'port' in [member.0] given twice"},
    {"[self]\nid=0\n[member.zero]\nhost=h\nport=5\n", "member id 'zero' is not a number"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=5\n[member.1]\nhost=h\nport=5\n",
     "same host:port (h:5) as [member.0]"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=5\n[subgroup.a]\nwindow_size=0\n",
     "bad.cfg:7: key 'window_size' in [subgroup.a]: '0'"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=5\n[subgroup.a]\nwindow_size=99999999\n",
     "key 'window_size'"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=5\n[subgroup.a]\nmax_payload=0\n",
     "key 'max_payload'"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=5\n[subgroup.a]\nmax_payload=99999999999\n",
     "key 'max_payload'"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=5\n[subgroup.a]\nwindow_size=65536\nmax_payload="
     "16777216\n",
     "shared state table"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=5\n[subgroup.a]\nshards=2\n",
     "bad.cfg:6: [subgroup.a]: 2 shards of at least 1 members need 2 members, but only 1 are "
     "configured"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=5\n[subgroup.a]\nshards=0\n",
     "key 'shards' in [subgroup.a]"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=5\n[subgroup.a]\nshards=17\n",
     "key 'shards' in [subgroup.a]"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=5\n[subgroup.a]\nmin_members=0\n",
     "key 'min_members'"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=5\n[subgroup.a]\nmin_members=2\nmax_members=1\n",
     "max_members 1 is below min_members 2"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=5\n[subgroup.a]\nshards=1\nshards=1\n",
     "key 'shards' in [subgroup.a] given twice"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=5\n[subgroup.a/b]\nshards=1\n",
     "subgroup names use letters"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=5\n[subgroup.a]\ncolour=red\n",
     "unknown key 'colour' in [subgroup.a]"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=5\n[group]\nprovider=tcp udp\n",
     "is not a libfabric provider name"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=5\n[group]\nlog_level=loud\n",
     "'loud' is not one of error, warn, info, debug"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=5\n[group]\nconnect_timeout_ms=0\n",
     "key 'connect_timeout_ms'"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=5\n[group]\nspin_us=lots\n", "key 'spin_us'"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=5\n[group]\nheartbeat_timeout_ms=5\n",
     "bad.cfg:7: key 'heartbeat_timeout_ms' in [group]: '5' is not a number of milliseconds in "
     "10..600000"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=5\n[group]\nrejoin=maybe\n",
     "bad.cfg:7: key 'rejoin' in [group]: 'maybe' is not true or false"},
    {"x = 1\n[self]\nid=0\n", "bad.cfg:1: key 'x' is outside any section"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=5\nthis line is not ini\n", "bad.cfg:6: syntax error"},
    {"[self\nid=0\n", "bad.cfg:1: syntax error"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=5\n[subgroup.s]\nmax_payload=300000000\n",
     "key 'max_payload'"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=5\n[subgroup.s]\nmax_smc_payload=4\n",
     "key 'max_smc_payload'"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=5\n[subgroup.s]\nblock_size=100\n",
     "key 'block_size'"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=5\n[subgroup.s]\nlarge_schedule=tree\n",
     "'tree' is not auto, chain or star"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=5\n[subgroup.s]\nmax_payload=1048576\nlarge_buffer_"
     "bytes=65536\n",
     "large_buffer_bytes 65536 is below max_payload 1048576"},
    {"[self]\nid=0\n[group]\ndata_dir=/"
     "tmp\n[member.0]\nhost=h\nport=5\n[subgroup.s]\ndelivery=persistent\nmax_payload=2097152\n",
     "max_state_bytes (1048576) must hold one log record"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=5\nhttp_port=6\n",
     "has an http_port but no client_port"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=5\nclient_port=6\nhttp_port=6\n",
     "http_port 6 is also its client_port"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=5\nclient_port=6\nhttp_port=99999\n",
     "bad.cfg:7: key 'http_port' in [member.0]: '99999' is not a port number"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=5\n[http]\nidle_timeout_s=5\n",
     "bad.cfg:7: key 'idle_timeout_s' in [http]: '5' is not a number of seconds in 15..86400"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=5\n[http]\nmax_body_bytes=0\n",
     "key 'max_body_bytes' in [http]"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=5\n[http]\nsse_buffer_bytes=10\n",
     "key 'sse_buffer_bytes' in [http]"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=5\n[http]\nmax_connections=1\nmax_connections=2\n",
     "bad.cfg:8: key 'max_connections' in [http] given twice"},
    {"[self]\nid=0\n[member.0]\nhost=h\nport=5\n[http]\nport=80\n",
     "unknown key 'port' in [http] (known: max_connections"},
};

static void test_http(void)
{
    struct sq_config c;
    char err[512] = "";
    const char *text = "[self]\nid=0\n[member.0]\nhost=h\nport=5\nclient_port=6\nhttp_port=7\n"
                       "[http]\nmax_connections=9\nidle_timeout_s=20\nmax_body_bytes=1000\n"
                       "max_header_bytes=8192\nsse_buffer_bytes=65536\n";
    CHECK_EQ_INT(sq__config_parse_string(&c, "h.cfg", text, err, sizeof(err)), 0);
    CHECK_EQ_INT(c.members[0].http_port, 7);
    CHECK_EQ_INT(c.http_max_connections, 9);
    CHECK_EQ_INT(c.http_idle_timeout_s, 20);
    CHECK_EQ_INT(c.http_max_body_bytes, 1000);
    CHECK_EQ_INT(c.http_max_header_bytes, 8192);
    CHECK_EQ_INT(c.http_sse_buffer_bytes, 65536);
    CHECK_EQ_INT(sq__config_parse_string(&c, "h.cfg", GOOD, err, sizeof(err)), 0);
    CHECK_EQ_INT(c.members[0].http_port, 0); /* no HTTP unless asked */
    CHECK_EQ_INT(c.http_max_connections, 256);
    CHECK_EQ_INT(c.http_idle_timeout_s, 60);
    CHECK_EQ_INT(c.http_max_body_bytes, 64u << 20);
    CHECK_EQ_INT(c.http_sse_buffer_bytes, 4u << 20);
}

static void test_bad(void)
{
    for (size_t i = 0; i < sizeof(BAD) / sizeof(BAD[0]); i++) {
        struct sq_config c;
        char err[512] = "";
        int rc = sq__config_parse_string(&c, "bad.cfg", BAD[i].text, err, sizeof(err));
        CHECK_EQ_INT(rc, SQ_ECONFIG);
        CHECK_CONTAINS(err, BAD[i].expect);
        CHECK(strncmp(err, "bad.cfg:", 8) == 0);
    }
}

static void test_file(void)
{
    struct sq_config c;
    char err[512];
    CHECK_EQ_INT(sq__config_load(&c, "/nonexistent/squall.cfg", err, sizeof(err)), SQ_EIO);
    CHECK_CONTAINS(err, "/nonexistent/squall.cfg: cannot open");
    char path[] = "/tmp/sq_test_config_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs(GOOD, f);
    fputs("[group]\nwhat = 3\n", f);
    fclose(f);
    CHECK_EQ_INT(sq__config_load(&c, path, err, sizeof(err)), SQ_ECONFIG);
    CHECK_CONTAINS(err, ":21: unknown key 'what' in [group]");
    CHECK_CONTAINS(err, path);
    remove(path);
}

/* Messages above max_smc_payload take the large path; its schedule follows where members are. */
static void test_large(void)
{
    struct sq_config c;
    char err[512] = "";
    const char *local = "[self]\nid=0\n[member.0]\nhost=127.0.0.1\nport=1\n"
                        "[member.1]\nhost=127.0.0.2\nport=2\n"
                        "[subgroup.big]\nmax_payload=67108864\n[subgroup.small]\n";
    CHECK_EQ_INT(sq__config_parse_string(&c, "l.cfg", local, err, sizeof(err)), 0);
    CHECK_EQ_INT(c.subgroups[0].max_smc_payload, 10240);
    CHECK_EQ_INT(c.subgroups[0].large_buffer_bytes, 67108864); /* at least one message */
    CHECK_EQ_INT(c.subgroups[0].block_size, 1048576);
    CHECK_EQ_INT(c.subgroups[0].large_schedule, SQ_SCHEDULE_STAR); /* one machine */
    CHECK_EQ_INT(c.subgroups[1].max_smc_payload, 10240); /* no large path: all fit a slot */
    CHECK_EQ_INT(c.subgroups[1].large_buffer_bytes, 0);
    const char *apart = "[self]\nid=0\n[member.0]\nhost=10.0.0.1\nport=1\n"
                        "[member.1]\nhost=10.0.0.2\nport=2\n"
                        "[subgroup.big]\nmax_payload=1048576\nmax_smc_payload=4096\n"
                        "[subgroup.star]\nmax_payload=1048576\nlarge_schedule=star\n";
    CHECK_EQ_INT(sq__config_parse_string(&c, "a.cfg", apart, err, sizeof(err)), 0);
    CHECK_EQ_INT(c.subgroups[0].max_smc_payload, 4096);
    CHECK_EQ_INT(c.subgroups[0].large_buffer_bytes, 16u << 20);
    CHECK_EQ_INT(c.subgroups[0].large_schedule, SQ_SCHEDULE_CHAIN); /* the sender's link */
    CHECK_EQ_INT(c.subgroups[1].large_schedule, SQ_SCHEDULE_STAR);  /* as configured */
}

static void test_errors(void)
{
    CHECK(strcmp(sq_err_name(SQ_EAGAIN), "SQ_EAGAIN") == 0);
    CHECK(strcmp(sq_strerror(SQ_EMSGSIZE), "message larger than the subgroup's max_payload") == 0);
    CHECK(strcmp(sq_strerror(12345), "unknown error") == 0);
    CHECK(strcmp(sq_err_name(0), "SQ_OK") == 0);
}

int main(void)
{
    test_good();
    test_subgroups();
    test_defaults_and_digest();
    test_bad();
    test_http();
    test_file();
    test_large();
    test_errors();
    return sq_test_done("test_config");
}
