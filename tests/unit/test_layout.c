/* test_layout.c: shard layouts: balanced, deterministic, sticky across views, max_members leaves
 * members standing by, min_members makes a view inadequate. */
#include "config.h"
#include "layout.h"
#include "test.h"

static void load(struct sq_config *c, uint32_t n, const char *subgroups)
{
    char text[2048];
    size_t len = (size_t)snprintf(text, sizeof(text), "[self]\nid=0\n");
    for (uint32_t i = 0; i < n; i++) {
        len += (size_t)snprintf(text + len, sizeof(text) - len, "[member.%u]\nhost=h\nport=%u\n",
                                i, 100 + i);
    }
    snprintf(text + len, sizeof(text) - len, "%s", subgroups);
    char err[256] = "";
    int rc = sq__config_parse_string(c, "t.cfg", text, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "config: %s\n", err);
    }
    CHECK_EQ_INT(rc, 0);
}

/* Writes subgroup g's layout as a string of shard digits ('-': standing by). */
static const char *show(const struct sq__assign *a, uint32_t n, uint32_t g)
{
    static char buf[SQ_MAX_MEMBERS + 1];
    for (uint32_t r = 0; r < n; r++) {
        uint8_t k = a->shard[g][r];
        buf[r] = k == SQ_SHARD_NONE ? '-' : (char)('0' + k);
    }
    buf[n] = '\0';
    return buf;
}

static void test_first_view(void)
{
    struct sq_config c;
    load(&c, 5, "[subgroup.a]\nshards=2\n[subgroup.b]\nshards=2\nmax_members=1\n");
    struct sq__assign none, a;
    sq__assign_clear(&none);
    char why[128] = "";
    CHECK(sq__assign_shards(&c, 5, &none, &a, why, sizeof(why)));
    CHECK(strcmp(show(&a, 5, 0), "01010") == 0); /* balanced, in rank order */
    CHECK(strcmp(show(&a, 5, 1), "01---") == 0); /* the rest stand by */
    /* Deterministic: the same input gives the same layout. */
    struct sq__assign again;
    CHECK(sq__assign_shards(&c, 5, &none, &again, why, sizeof(why)));
    CHECK(memcmp(&a, &again, sizeof(a)) == 0);
}

static void test_sticky(void)
{
    struct sq_config c;
    load(&c, 5, "[subgroup.a]\nshards=2\nmin_members=2\n");
    struct sq__assign none, v0, kept, v1;
    sq__assign_clear(&none);
    char why[128] = "";
    CHECK(sq__assign_shards(&c, 5, &none, &v0, why, sizeof(why)));
    CHECK(strcmp(show(&v0, 5, 0), "01010") == 0);
    /* Rank 0 leaves: the survivors keep their shards under their new ranks. */
    uint32_t old_rank[4] = {1, 2, 3, 4};
    sq__assign_move(&v0, 4, old_rank, &kept);
    CHECK(sq__assign_shards(&c, 4, &kept, &v1, why, sizeof(why)));
    CHECK(strcmp(show(&v1, 4, 0), "1010") == 0);
    /* A joiner (new rank 4) goes to the shard with fewer members: shard 0. */
    uint32_t old2[5] = {0, 1, 2, 3, UINT32_MAX};
    struct sq__assign kept2, v2;
    sq__assign_move(&v1, 5, old2, &kept2);
    CHECK(sq__assign_shards(&c, 5, &kept2, &v2, why, sizeof(why)));
    CHECK(strcmp(show(&v2, 5, 0), "10100") == 0);
}

static void test_inadequate(void)
{
    struct sq_config c;
    load(&c, 4, "[subgroup.kv]\nshards=2\nmin_members=2\n");
    struct sq__assign none, v0, kept, v1;
    sq__assign_clear(&none);
    char why[128] = "";
    CHECK(sq__assign_shards(&c, 4, &none, &v0, why, sizeof(why)));
    CHECK(strcmp(show(&v0, 4, 0), "0101") == 0);
    /* Rank 0 (shard 0) fails: shard 0 keeps one member, below its minimum of 2. */
    uint32_t old_rank[3] = {1, 2, 3};
    sq__assign_move(&v0, 3, old_rank, &kept);
    CHECK(!sq__assign_shards(&c, 3, &kept, &v1, why, sizeof(why)));
    CHECK(strcmp(show(&v1, 3, 0), "101") == 0);
    CHECK_CONTAINS(why, "shard 0 of subgroup kv has 1 of its 2 minimum members");
    /* The next joiner fills shard 0 again. */
    uint32_t old2[4] = {0, 1, 2, UINT32_MAX};
    struct sq__assign kept2, v2;
    sq__assign_move(&v1, 4, old2, &kept2);
    CHECK(sq__assign_shards(&c, 4, &kept2, &v2, why, sizeof(why)));
    CHECK(strcmp(show(&v2, 4, 0), "1010") == 0);
    uint32_t ranks[SQ_MAX_MEMBERS];
    CHECK_EQ_INT(sq__assign_members(&v2, 4, 0, 0, ranks), 2);
    CHECK_EQ_INT(ranks[0], 1);
    CHECK_EQ_INT(ranks[1], 3);
}

static void test_standby_fills_in(void)
{
    struct sq_config c;
    load(&c, 4, "[subgroup.a]\nshards=1\nmin_members=2\nmax_members=2\n");
    struct sq__assign none, v0, kept, v1;
    sq__assign_clear(&none);
    char why[128] = "";
    CHECK(sq__assign_shards(&c, 4, &none, &v0, why, sizeof(why)));
    CHECK(strcmp(show(&v0, 4, 0), "00--") == 0);
    /* A shard member leaves: the first member standing by takes its place. */
    uint32_t old_rank[3] = {1, 2, 3};
    sq__assign_move(&v0, 3, old_rank, &kept);
    CHECK(sq__assign_shards(&c, 3, &kept, &v1, why, sizeof(why)));
    CHECK(strcmp(show(&v1, 3, 0), "00-") == 0);
}

int main(void)
{
    test_first_view();
    test_sticky();
    test_inadequate();
    test_standby_fills_in();
    return sq_test_done("test_layout");
}
