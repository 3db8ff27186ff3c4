/* test_restart.c: the rule for restarting a group from its members' disks (a majority of the
 * last view, a whole-history holder of every persistent shard held in it) and the view file
 * (round trip, absent, damaged). */
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "config.h"
#include "persist/disk.h"
#include "squall.h"
#include "restart.h"
#include "test.h"

static struct sq_config cfg3(const char *subgroups)
{
    char text[2048], err[256] = "";
    snprintf(text, sizeof(text),
             "[group]\ndata_dir = /tmp/x\n[self]\nid = 10\n"
             "[member.10]\nhost = 127.0.0.1\nport = 1\n[member.11]\nhost = 127.0.0.1\nport = 2\n"
             "[member.12]\nhost = 127.0.0.1\nport = 3\n%s",
             subgroups);
    struct sq_config c;
    int rc = sq__config_parse_string(&c, "t.cfg", text, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "config: %s\n", err);
    }
    CHECK_EQ_INT(rc, 0);
    return c;
}

/* A member that was in view `view` (members mask), held `held`, whole history `mine`. */
static struct sq_log_tail vt(uint32_t view, uint32_t members, uint16_t held, uint16_t mine)
{
    struct sq_log_tail t;
    memset(&t, 0, sizeof(t));
    memset(t.shard, 0xFF, sizeof(t.shard));
    t.vf_view = view + 1;
    t.vf_members = members;
    t.vf_held = held;
    t.vf_mine = mine;
    return t;
}

static void test_rule(void)
{
    struct sq_config c = cfg3("[subgroup.orders]\ndelivery = persistent\n");
    char why[256];
    bool restart = true;
    struct sq_log_tail t[SQ_MAX_MEMBERS];
    memset(t, 0, sizeof(t));
    /* a group that never ran needs everyone */
    CHECK_EQ_INT(sq__restart_check(&c, 0x7, t, &restart, why, sizeof(why)), 1);
    CHECK(!restart);
    CHECK_EQ_INT(sq__restart_check(&c, 0x3, t, &restart, why, sizeof(why)), 0);
    CHECK_CONTAINS(why, "waiting for member(s) 12");
    /* every member was in view 4 = {10, 11, 12}: two of them restart it, one cannot */
    for (int r = 0; r < 3; r++) {
        t[r] = vt(4, 0x7, 0x1, 0x1);
    }
    CHECK_EQ_INT(sq__restart_check(&c, 0x5, t, &restart, why, sizeof(why)), 1);
    CHECK(restart);
    CHECK_EQ_INT(sq__restart_check(&c, 0x2, t, &restart, why, sizeof(why)), 0);
    CHECK_CONTAINS(why, "needs 2 of the 3 members of view 4");
    CHECK_CONTAINS(why, "missing: 10, 12");
    /* 12 left in view 5 = {10, 11}, which went on: 11 and 12 are a configured majority, not
     * one of view 5, and 12's older view changes nothing */
    t[0] = vt(5, 0x3, 0x1, 0x1);
    t[1] = vt(5, 0x3, 0x1, 0x1);
    CHECK_EQ_INT(sq__restart_check(&c, 0x6, t, &restart, why, sizeof(why)), 0);
    CHECK_CONTAINS(why, "needs 2 of the 2 members of view 5");
    CHECK_CONTAINS(why, "missing: 10");
    CHECK_EQ_INT(sq__restart_check(&c, 0x3, t, &restart, why, sizeof(why)), 1);
    CHECK_EQ_INT(sq__restart_check(&c, 0x7, t, &restart, why, sizeof(why)), 1);
    /* a member of view 5 that was still receiving the shard's log does not hold its history */
    t[1] = vt(5, 0x3, 0x1, 0x0);
    t[0] = vt(5, 0x3, 0x1, 0x0);
    CHECK_EQ_INT(sq__restart_check(&c, 0x7, t, &restart, why, sizeof(why)), 0);
    CHECK_CONTAINS(why, "whole history of shard 0 of subgroup orders in view 5");
    /* ... nor does a member that held it in an older view */
    t[2] = vt(4, 0x7, 0x1, 0x1);
    CHECK_EQ_INT(sq__restart_check(&c, 0x7, t, &restart, why, sizeof(why)), 0);
    t[0] = vt(5, 0x3, 0x1, 0x1);
    CHECK_EQ_INT(sq__restart_check(&c, 0x7, t, &restart, why, sizeof(why)), 1);
    /* a member whose disk was wiped knows no view: it does not count toward the majority */
    memset(&t[1], 0, sizeof(t[1]));
    CHECK_EQ_INT(sq__restart_check(&c, 0x3, t, &restart, why, sizeof(why)), 0);
    CHECK_CONTAINS(why, "needs 2 of the 2 members of view 5");
    CHECK_CONTAINS(why, "missing: 11");
}

/* A view change that members accepted but only members missing now installed. View 4 was
 * {10, 11, 12}; 10, 11 and 12 accepted view 5 = {10, 11}; 10 and 11 installed it and went on,
 * 12 crashed first. 12 with a member that knows only view 4 is a majority of view 4, but not of
 * view 5, which 12 accepted: they must wait. */
static void test_accepted(void)
{
    struct sq_config c = cfg3("[subgroup.orders]\ndelivery = persistent\n");
    char why[256];
    bool restart;
    struct sq_log_tail t[SQ_MAX_MEMBERS];
    memset(t, 0, sizeof(t));
    t[0] = vt(4, 0x7, 0x1, 0x1);
    t[1] = vt(5, 0x3, 0x1, 0x1);
    t[2] = vt(4, 0x7, 0x1, 0x1);
    t[2].vf_acc_view = 6; /* accepted view 5 */
    t[2].vf_acc_members = 0x3;
    t[0].vf_acc_view = 6;
    t[0].vf_acc_members = 0x3;
    /* 11 installed view 5: it is the last view, 10 (accepted) and 11 are a majority of it */
    CHECK_EQ_INT(sq__restart_check(&c, 0x3, t, &restart, why, sizeof(why)), 1);
    /* without 11, only 10 and 12 know view 4; both accepted view 5 = {10, 11}: 10 is one of 2 */
    CHECK_EQ_INT(sq__restart_check(&c, 0x5, t, &restart, why, sizeof(why)), 0);
    CHECK_CONTAINS(why, "accepted view 5");
    CHECK_CONTAINS(why, "needs 2 of its 2 members (missing: 11)");
    t[0] = vt(4, 0x7, 0x1, 0x1);
    t[1] = vt(5, 0x3, 0x1, 0x1);
    t[2] = vt(4, 0x7, 0x1, 0x1);
    t[2].vf_acc_view = 6;
    t[2].vf_acc_members = 0x3;
    /* an accepted view that is already installed adds nothing */
    t[1].vf_acc_view = 6;
    t[1].vf_acc_members = 0x3;
    CHECK_EQ_INT(sq__restart_check(&c, 0x3, t, &restart, why, sizeof(why)), 1);
}

/* 7 members, a persistent shard of at most 2 (10 and 11 in view 4). View 5 removed 10; 11 kept
 * the shard and 12 joined it; 11 and 12 installed view 5 and may have persisted updates there,
 * then everyone crashed before the others installed it. 10 (the shard's whole history in view
 * 4) with 13..16 (which accepted view 5) are a majority of both views, yet none of them has what
 * was persisted in view 5: 10 must not count as the shard's holder, since view 5 removed it. */
static void test_removed_holder(void)
{
    char text[2048], err[256] = "";
    size_t len = (size_t)snprintf(text, sizeof(text),
                                  "[group]\ndata_dir = /tmp/x\n[self]\nid = 10\n"
                                  "[subgroup.orders]\ndelivery = persistent\nmax_members = 2\n");
    for (int i = 0; i < 7; i++) {
        len += (size_t)snprintf(text + len, sizeof(text) - len,
                                "[member.%d]\nhost = 127.0.0.1\nport = %d\n", 10 + i, 1 + i);
    }
    struct sq_config c;
    CHECK_EQ_INT(sq__config_parse_string(&c, "t.cfg", text, err, sizeof(err)), 0);
    char why[256];
    bool restart;
    struct sq_log_tail t[SQ_MAX_MEMBERS];
    memset(t, 0, sizeof(t));
    t[0] = vt(4, 0x7f, 0x1, 0x1);
    for (int r = 3; r < 7; r++) {
        t[r] = vt(4, 0x7f, 0x1, 0x0);
        t[r].vf_acc_view = 6;
        t[r].vf_acc_members = 0x7e;
    }
    CHECK_EQ_INT(sq__restart_check(&c, 0x79, t, &restart, why, sizeof(why)), 0);
    CHECK_CONTAINS(why, "whole history of shard 0 of subgroup orders in view 4");
    /* with 11, which installed view 5, that view is the last one and 11 holds the shard */
    t[1] = vt(5, 0x7e, 0x1, 0x1);
    CHECK_EQ_INT(sq__restart_check(&c, 0x7b, t, &restart, why, sizeof(why)), 1);
    /* had 13 held the shard in view 4 too, it would count: it is in view 5 and did not install
     * it, so the shard persisted nothing there */
    memset(&t[1], 0, sizeof(t[1]));
    t[3].vf_mine = 0x1;
    CHECK_EQ_INT(sq__restart_check(&c, 0x79, t, &restart, why, sizeof(why)), 1);
}

static void test_shards(void)
{
    /* flat shards: cache 0 (volatile), orders 1 and 2 (persistent, 2 shards) */
    struct sq_config c = cfg3("[subgroup.cache]\n[subgroup.orders]\ndelivery = persistent\n"
                              "shards = 2\nmin_members = 1\n");
    char why[256];
    bool restart;
    struct sq_log_tail t[SQ_MAX_MEMBERS];
    memset(t, 0, sizeof(t));
    t[0] = vt(7, 0x7, 0x6, 0x2); /* shard 0 of orders */
    t[1] = vt(7, 0x7, 0x6, 0x2);
    t[2] = vt(7, 0x7, 0x6, 0x4); /* shard 1 of orders */
    CHECK_EQ_INT(sq__restart_check(&c, 0x3, t, &restart, why, sizeof(why)), 0);
    CHECK_CONTAINS(why, "shard 1 of subgroup orders in view 7");
    CHECK_EQ_INT(sq__restart_check(&c, 0x6, t, &restart, why, sizeof(why)), 1);
    CHECK_EQ_INT(sq__restart_check(&c, 0x5, t, &restart, why, sizeof(why)), 1);
    CHECK_EQ_INT(sq__restart_check(&c, 0x4, t, &restart, why, sizeof(why)), 0);
    CHECK_CONTAINS(why, "needs 2 of the 3");
}

static void test_viewfile(void)
{
    char dir[] = "/tmp/squall-vf-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256], err[512] = "";
    snprintf(path, sizeof(path), "%s/view", dir);
    struct sq__viewfile in = {.view_next = 42,
                              .members = 0x5,
                              .held = 0x3,
                              .mine = 0x1,
                              .acc_view = 43,
                              .acc_members = 0x4,
                              .prev = {.view_next = 40,
                                       .members = 0x7,
                                       .held = 0x3,
                                       .mine = 0x2,
                                       .acc_view = 41,
                                       .acc_members = 0x6}},
                        out;
    memset(&out, 0, sizeof(out));
    CHECK_EQ_INT(sq__viewfile_read(path, &out, err, sizeof(err)), 0); /* none yet */
    CHECK_EQ_INT(sq__viewfile_write(path, &in, err, sizeof(err)), 0);
    CHECK_EQ_INT(sq__viewfile_read(path, &out, err, sizeof(err)), 1);
    CHECK(memcmp(&in, &out, sizeof(in)) == 0);
    in.view_next = 43;
    CHECK_EQ_INT(sq__viewfile_write(path, &in, err, sizeof(err)), 0); /* replaced */
    CHECK_EQ_INT(sq__viewfile_read(path, &out, err, sizeof(err)), 1);
    CHECK_EQ_INT(out.view_next, 43);
    CHECK_EQ_INT(out.prev.view_next, 40);
    CHECK_EQ_INT(out.prev.mine, 0x2);
    /* every flipped byte is caught */
    for (int off = 0; off < 56; off++) {
        int fd = open(path, O_RDWR);
        uint8_t b;
        CHECK(pread(fd, &b, 1, off) == 1);
        b ^= 0x10;
        CHECK(pwrite(fd, &b, 1, off) == 1);
        CHECK_EQ_INT(sq__viewfile_read(path, &out, err, sizeof(err)), SQ_ECORRUPT);
        b ^= 0x10;
        CHECK(pwrite(fd, &b, 1, off) == 1);
        close(fd);
    }
    CHECK_CONTAINS(err, "the view file is damaged");
    /* a file of format 1 (32 bytes, no prev), as earlier versions wrote it, still reads */
    {
        uint8_t b[32] = {0};
        const uint32_t v1[] = {0x46565153u, 1u | (32u << 16), 9, 0x7};
        memcpy(b, v1, sizeof(v1));
        b[16] = 0x1; /* held */
        b[18] = 0x1; /* mine */
        uint32_t crc = sq__crc32c(0, b, 28);
        memcpy(b + 28, &crc, 4);
        int fd = open(path, O_WRONLY | O_TRUNC);
        CHECK(write(fd, b, sizeof(b)) == (ssize_t)sizeof(b));
        close(fd);
        CHECK_EQ_INT(sq__viewfile_read(path, &out, err, sizeof(err)), 1);
        CHECK_EQ_INT(out.view_next, 9);
        CHECK_EQ_INT(out.members, 0x7);
        CHECK_EQ_INT(out.mine, 0x1);
        CHECK_EQ_INT(out.prev.view_next, 0);
    }
    CHECK(truncate(path, 20) == 0);
    CHECK_EQ_INT(sq__viewfile_read(path, &out, err, sizeof(err)), SQ_ECORRUPT);
    /* a member directory not there yet (a member in no persistent shard) is made */
    snprintf(path, sizeof(path), "%s/member-7/view", dir);
    CHECK_EQ_INT(sq__viewfile_write(path, &in, err, sizeof(err)), 0);
    CHECK_EQ_INT(sq__viewfile_read(path, &out, err, sizeof(err)), 1);
    /* a path that cannot be a directory: the write says so */
    snprintf(path, sizeof(path), "%s/member-7/view/x/view", dir);
    CHECK(sq__viewfile_write(path, &in, err, sizeof(err)) < 0);
    CHECK_CONTAINS(err, "cannot write the view file");
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

/* The first view of a restart that never completed: its holder died before it recorded the
 * view, every other member awaited its handover (none holds the view's whole history). Once a
 * member of that view is back with its older file, the view counts as never proposed. */
static void test_void_restart_view(void)
{
    struct sq_config c = cfg3("[subgroup.orders]\ndelivery = persistent\n");
    char why[256];
    bool restart = false;
    struct sq_log_tail t[SQ_MAX_MEMBERS], e[SQ_MAX_MEMBERS];
    memset(t, 0, sizeof(t));
    /* view 5 = {10, 11, 12}, every member whole; the restart's first view 7: 11 and 12 took it
     * (mine 0: awaiting 10's handover), 10 (the holder) died first: its file still says 5 */
    t[0] = vt(5, 0x7, 0x1, 0x1);
    for (int r = 1; r < 3; r++) {
        t[r] = vt(7, 0x7, 0x1, 0x0);
        t[r].vf_prev_view = 6; /* view 5 */
        t[r].vf_prev_members = 0x7;
        t[r].vf_prev_held = 0x1;
        t[r].vf_prev_mine = 0x1;
    }
    /* without 10, nothing proves that 7 never completed: wait (as before) */
    CHECK_EQ_INT(sq__restart_check(&c, 0x6, t, &restart, why, sizeof(why)), 0);
    CHECK_CONTAINS(why, "no member here held the whole history of shard 0 of subgroup orders in "
                        "view 7");
    /* with 10 back (file at 5 < 7): 7 is void, view 5's rule holds, and 10 is its holder */
    CHECK_EQ_INT(sq__restart_check(&c, 0x7, t, &restart, why, sizeof(why)), 1);
    CHECK(restart);
    sq__restart_effective_tails(&c, 0x7, t, e);
    for (int r = 0; r < 3; r++) {
        CHECK_EQ_INT(e[r].vf_view, 6);
        CHECK_EQ_INT(e[r].vf_mine, 0x1);
    }
    /* 10 and 11 alone do too: a majority of view 5, 10 whole there */
    CHECK_EQ_INT(sq__restart_check(&c, 0x3, t, &restart, why, sizeof(why)), 1);
    /* a first view every member recorded is not void: 7's rule (no whole holder) stands */
    t[0] = t[1];
    CHECK_EQ_INT(sq__restart_check(&c, 0x7, t, &restart, why, sizeof(why)), 0);
    /* nor a view that is no restart's first view (no prev): 10's older file proves nothing */
    t[0] = vt(5, 0x7, 0x1, 0x1);
    t[1].vf_prev_view = 0;
    CHECK_EQ_INT(sq__restart_check(&c, 0x7, t, &restart, why, sizeof(why)), 0);
    /* a member outside view 7 with an older file proves nothing either */
    t[1].vf_prev_view = 6;
    for (int r = 1; r < 3; r++) {
        t[r].vf_members = 0x6;
    }
    CHECK_EQ_INT(sq__restart_check(&c, 0x7, t, &restart, why, sizeof(why)), 0);
}

int main(void)
{
    test_rule();
    test_accepted();
    test_removed_holder();
    test_shards();
    test_viewfile();
    test_void_restart_view();
    return sq_test_done("test_restart");
}
