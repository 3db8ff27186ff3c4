/* test_plog.c: the persistent log: record format, segments, indexes by version and time, a torn
 * tail, damage before the tail, a full disk, a crash that loses unsynced writes, the zeros
 * written ahead of the records, and the same on the real file system. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <unistd.h>

#include "memdisk.h"
#include "persist/disk.h"
#include "persist/plog.h"
#include "test.h"

static uint8_t pb(uint64_t version, size_t i)
{
    return (uint8_t)(version * 31u + i * 7u);
}

/* Appends n records: versions (1 << 32) + 1 + k (view 1), sizes 0..99, timestamps 1000 + 10k. */
static void fill(struct sq__plog *log, uint64_t from, uint64_t n)
{
    uint8_t buf[128];
    for (uint64_t k = from; k < from + n; k++) {
        uint64_t v = (1ull << 32) + 1 + k;
        uint32_t size = (uint32_t)(k % 100);
        for (size_t i = 0; i < size; i++) {
            buf[i] = pb(v, i);
        }
        CHECK_EQ_INT(sq__plog_append(log, v, 1000 + 10 * k, (uint32_t)(k % 3), buf, size), 0);
    }
}

/* Records 0..n-1 are there with the right contents. */
static void verify(struct sq__plog *log, uint64_t n)
{
    CHECK(sq__plog_count(log) >= n);
    uint8_t buf[128];
    int bad = 0;
    for (uint64_t k = 0; k < n && bad < 3; k++) {
        struct sq__plog_entry e;
        uint64_t v = (1ull << 32) + 1 + k;
        if (sq__plog_find(log, v, SQ_PLOG_EXACT, &e, NULL) != 0 || e.size != k % 100 ||
            e.timestamp != 1000 + 10 * k || e.sender != k % 3) {
            bad++;
            continue;
        }
        ssize_t r = sq__plog_read(log, &e, buf, sizeof(buf));
        if (r != (ssize_t)(k % 100)) {
            bad++;
            continue;
        }
        for (size_t i = 0; i < (size_t)r; i++) {
            if (buf[i] != pb(v, i)) {
                bad++;
                break;
            }
        }
    }
    CHECK_EQ_INT(bad, 0);
}

static void test_roundtrip_and_indexes(void)
{
    struct memdisk md;
    md_init(&md);
    struct sq__plog *log;
    char err[256] = "";
    CHECK_EQ_INT(sq__plog_open(&log, &md.base, "/d", 4096, err, sizeof(err)), 0);
    fill(log, 0, 500);
    uint64_t durable = 0;
    CHECK_EQ_INT(sq__plog_flush(log, true, &durable), 0);
    CHECK_EQ_INT(durable, 500);
    CHECK(log->nsegs > 5); /* 4 KiB segments */
    /* a version that goes backwards is refused; a timestamp that does is raised */
    CHECK_EQ_INT(sq__plog_append(log, 5, 1, 0, NULL, 0), SQ_EINVAL);
    CHECK_EQ_INT(sq__plog_append(log, (2ull << 32) + 1, 3, 0, NULL, 0), 0);
    CHECK_EQ_INT(sq__plog_flush(log, true, NULL), 0);
    CHECK_EQ_INT((long long)sq__plog_last(log).timestamp, 1000 + 10 * 499);
    sq__plog_close(log);

    CHECK_EQ_INT(sq__plog_open(&log, &md.base, "/d", 4096, err, sizeof(err)), 0);
    CHECK(log->recovery[0] == '\0');
    verify(log, 500);                       /* the 500 of view 1 ... */
    CHECK_EQ_INT(sq__plog_count(log), 501); /* ... and the one of view 2 */
    struct sq__plog_entry e;
    uint64_t pos = 0;
    /* latest at or before a version: between views, and before the first */
    CHECK_EQ_INT(sq__plog_find(log, (2ull << 32), SQ_PLOG_AT_OR_BEFORE, &e, &pos), 0);
    CHECK_EQ_INT((long long)e.version, (long long)((1ull << 32) + 500));
    CHECK_EQ_INT(pos, 499);
    CHECK_EQ_INT(sq__plog_find(log, (2ull << 32), SQ_PLOG_EXACT, &e, NULL), SQ_ENOTFOUND);
    CHECK_EQ_INT(sq__plog_find(log, 7, SQ_PLOG_AT_OR_BEFORE, &e, NULL), SQ_ENOTFOUND);
    /* as of a time: timestamps are 1000 + 10k */
    CHECK_EQ_INT(sq__plog_find_time(log, 1000 + 10 * 42 + 9, &e, &pos), 0);
    CHECK_EQ_INT((long long)e.version, (long long)((1ull << 32) + 43));
    CHECK_EQ_INT(sq__plog_find_time(log, 999, &e, NULL), SQ_ENOTFOUND);
    /* iterate a range */
    uint64_t sum = 0;
    for (uint64_t p = pos; sq__plog_entry_at(log, p, &e) == 0 && e.version < (1ull << 32) + 53;
         p++) {
        sum += e.size;
    }
    CHECK_EQ_INT(sum, 42 + 43 + 44 + 45 + 46 + 47 + 48 + 49 + 50 + 51);
    sq__plog_close(log);
    md_free(&md);
}

/* Cutting a suffix: within a segment, at a segment's start, and everything; the cut is durable
 * (it holds across a crash that loses unsynced writes) and the log goes on after it. */
static void test_truncate(void)
{
    struct memdisk md;
    md_init(&md);
    struct sq__plog *log;
    char err[256] = "";
    CHECK_EQ_INT(sq__plog_open(&log, &md.base, "/c", 4096, err, sizeof(err)), 0);
    fill(log, 0, 300);
    CHECK_EQ_INT(sq__plog_flush(log, true, NULL), 0);
    fill(log, 300, 20); /* appended, not yet written: the cut writes them out first */
    uint32_t segs_before = log->nsegs;
    CHECK(segs_before > 4);
    CHECK_EQ_INT(sq__plog_truncate(log, 310), 0);
    CHECK_EQ_INT(sq__plog_count(log), 310);
    CHECK_EQ_INT(sq__plog_truncate(log, 400), 0); /* beyond the end: nothing to do */
    CHECK_EQ_INT(sq__plog_count(log), 310);
    CHECK_EQ_INT(sq__plog_truncate(log, 120), 0);
    CHECK_EQ_INT(sq__plog_count(log), 120);
    CHECK(log->nsegs < segs_before);
    CHECK_EQ_INT((long long)sq__plog_last(log).version, (long long)((1ull << 32) + 120));
    struct sq__plog_entry e;
    CHECK_EQ_INT(sq__plog_find(log, (1ull << 32) + 121, SQ_PLOG_EXACT, &e, NULL), SQ_ENOTFOUND);
    CHECK_EQ_INT(sq__plog_find_time(log, 1000000, &e, NULL), 0);
    CHECK_EQ_INT((long long)e.version, (long long)((1ull << 32) + 120));
    /* a new history goes on from the cut, in a later view */
    CHECK_EQ_INT(sq__plog_append(log, (5ull << 32) + 1, 5000, 1, "new", 3), 0);
    CHECK_EQ_INT(sq__plog_flush(log, true, NULL), 0);
    sq__plog_close(log);
    md_crash(&md, 0);
    CHECK_EQ_INT(sq__plog_open(&log, &md.base, "/c", 4096, err, sizeof(err)), 0);
    CHECK(log->recovery[0] == '\0');
    CHECK_EQ_INT(sq__plog_count(log), 121);
    verify(log, 120);
    CHECK_EQ_INT((long long)sq__plog_last(log).version, (long long)((5ull << 32) + 1));
    /* a cut at a segment's first record removes that segment's file too */
    uint32_t s = log->idx[120].segment;
    uint64_t first_of_seg = 0;
    while (first_of_seg < 120 && log->idx[first_of_seg].segment != s) {
        first_of_seg++;
    }
    if (log->idx[120].offset == 0) {
        first_of_seg = 120;
    }
    CHECK_EQ_INT(sq__plog_truncate(log, first_of_seg), 0);
    CHECK_EQ_INT(log->nsegs, s);
    CHECK_EQ_INT(sq__plog_truncate(log, 0), 0);
    CHECK_EQ_INT(sq__plog_count(log), 0);
    CHECK_EQ_INT(log->nsegs, 0);
    fill(log, 0, 3);
    CHECK_EQ_INT(sq__plog_flush(log, true, NULL), 0);
    sq__plog_close(log);
    md_crash(&md, 0);
    CHECK_EQ_INT(sq__plog_open(&log, &md.base, "/c", 4096, err, sizeof(err)), 0);
    CHECK(log->recovery[0] == '\0');
    CHECK_EQ_INT(sq__plog_count(log), 3);
    verify(log, 3);
    sq__plog_close(log);
    md_free(&md);
}

static void test_torn_tail(void)
{
    struct memdisk md;
    md_init(&md);
    struct sq__plog *log;
    char err[256] = "";
    CHECK_EQ_INT(sq__plog_open(&log, &md.base, "/t", 1 << 20, err, sizeof(err)), 0);
    fill(log, 0, 50);
    CHECK_EQ_INT(sq__plog_flush(log, true, NULL), 0);
    fill(log, 50, 5);
    CHECK_EQ_INT(sq__plog_flush(log, false, NULL), 0); /* written, not synced */
    sq__plog_close(log);
    md_crash(&md, 124); /* the unsynced write survives in part: 104 + 20 bytes */
    CHECK_EQ_INT(sq__plog_open(&log, &md.base, "/t", 1 << 20, err, sizeof(err)), 0);
    CHECK_CONTAINS(log->recovery, "cut a torn record at offset");
    CHECK_CONTAINS(log->recovery, "/t/seg-0000000100000001.sqlog");
    CHECK_EQ_INT(sq__plog_count(log),
                 51); /* the 50 synced, and one whole record of the torn write */
    verify(log, 51);
    /* the cut is durable and the log goes on from there */
    fill(log, 51, 10);
    CHECK_EQ_INT(sq__plog_flush(log, true, NULL), 0);
    sq__plog_close(log);
    CHECK_EQ_INT(sq__plog_open(&log, &md.base, "/t", 1 << 20, err, sizeof(err)), 0);
    CHECK(log->recovery[0] == '\0');
    CHECK_EQ_INT(sq__plog_count(log), 61);
    verify(log, 61);
    sq__plog_close(log);
    md_free(&md);
}

/* The last segment's file is kept written with zeros ahead of its records; every other segment
 * is cut to its records before the next one gets a byte; a reopen takes the zeros for the end,
 * quietly, and goes on writing right after the last record. */
static void test_zero_ahead(void)
{
    struct memdisk md;
    md_init(&md);
    struct sq__plog *log;
    char err[256] = "";
    CHECK_EQ_INT(sq__plog_open(&log, &md.base, "/a", 1 << 20, err, sizeof(err)), 0);
    fill(log, 0, 20);
    CHECK_EQ_INT(sq__plog_flush(log, true, NULL), 0);
    uint64_t records = log->segs[0].size;
    struct md_file *f = &md.files[md_find(&md, "/a/seg-0000000100000001.sqlog")];
    CHECK(f->synced_size >= records + SQ_PLOG_ZERO_LOW); /* written ahead, and synced */
    bool zeros = true;
    for (uint64_t o = records; o < f->size; o++) {
        zeros &= f->data[o] == 0;
    }
    CHECK(zeros);
    sq__plog_close(log);
    md_crash(&md, 0);
    CHECK_EQ_INT(sq__plog_open(&log, &md.base, "/a", 1 << 20, err, sizeof(err)), 0);
    CHECK(log->recovery[0] == '\0'); /* not taken for a torn tail */
    CHECK_EQ_INT(sq__plog_count(log), 20);
    CHECK_EQ_INT(log->segs[0].size, records);
    fill(log, 20, 10);
    CHECK_EQ_INT(sq__plog_flush(log, true, NULL), 0);
    CHECK_EQ_INT(log->idx[20].offset, records); /* right after the last record */
    sq__plog_close(log);
    CHECK_EQ_INT(sq__plog_open(&log, &md.base, "/a", 1 << 20, err, sizeof(err)), 0);
    CHECK(log->recovery[0] == '\0');
    verify(log, 30);
    sq__plog_close(log);
    md_free(&md);

    /* small segments: each full one is cut to its records, only the last ends in zeros */
    md_init(&md);
    CHECK_EQ_INT(sq__plog_open(&log, &md.base, "/s", 4096, err, sizeof(err)), 0);
    for (uint64_t k = 0; k < 200; k += 10) {
        fill(log, k, 10);
        CHECK_EQ_INT(sq__plog_flush(log, true, NULL), 0);
    }
    CHECK(log->nsegs > 3);
    for (uint32_t s = 0; s < log->nsegs; s++) {
        char path[600];
        snprintf(path, sizeof(path), "/s/seg-%016" PRIx64 ".sqlog", log->segs[s].first_version);
        int h = md_find(&md, path);
        CHECK(h >= 0);
        if (s + 1 < log->nsegs) {
            CHECK_EQ_INT(md.files[h].size, log->segs[s].size);
        } else {
            CHECK(md.files[h].size >= log->segs[s].size);
        }
    }
    sq__plog_close(log);
    md_crash(&md, 0);
    CHECK_EQ_INT(sq__plog_open(&log, &md.base, "/s", 4096, err, sizeof(err)), 0);
    CHECK(log->recovery[0] == '\0');
    verify(log, 200);
    sq__plog_close(log);
    md_free(&md);
}

static void test_zero_hole(void)
{
    /* A power cut wrote the later pages of an unsynced batch but not the first: zeros, then
     * valid records. Nothing from the hole on was synced: a torn tail, not damage. */
    struct memdisk md;
    md_init(&md);
    struct sq__plog *log;
    char err[256] = "";
    CHECK_EQ_INT(sq__plog_open(&log, &md.base, "/z", 1 << 20, err, sizeof(err)), 0);
    fill(log, 0, 50);
    CHECK_EQ_INT(sq__plog_flush(log, true, NULL), 0);
    fill(log, 50, 5);
    CHECK_EQ_INT(sq__plog_flush(log, false, NULL), 0);
    uint64_t off50 = log->idx[50].offset;
    sq__plog_close(log);
    int h = md_find(&md, "/z/seg-0000000100000001.sqlog");
    CHECK(h >= 0);
    struct md_file *f = &md.files[h];
    memset(f->data + off50, 0, 104); /* record 50 never reached the disk */
    CHECK_EQ_INT(sq__plog_open(&log, &md.base, "/z", 1 << 20, err, sizeof(err)), 0);
    CHECK_CONTAINS(log->recovery, "cut a torn record");
    CHECK_EQ_INT(sq__plog_count(log), 50);
    verify(log, 50);
    sq__plog_close(log);
    /* Garbage (not zeros) before valid records is damage. */
    CHECK_EQ_INT(sq__plog_open(&log, &md.base, "/z", 1 << 20, err, sizeof(err)), 0);
    fill(log, 50, 5);
    CHECK_EQ_INT(sq__plog_flush(log, true, NULL), 0);
    uint64_t off51 = log->idx[51].offset;
    sq__plog_close(log);
    f = &md.files[md_find(&md, "/z/seg-0000000100000001.sqlog")];
    f->data[off51 + 50] ^= 0x5a; /* records 52..54 follow it */
    CHECK_EQ_INT(sq__plog_open(&log, &md.base, "/z", 1 << 20, err, sizeof(err)), SQ_ECORRUPT);
    md_free(&md);
}

static void test_lost_unsynced(void)
{
    struct memdisk md;
    md_init(&md);
    struct sq__plog *log;
    char err[256] = "";
    CHECK_EQ_INT(sq__plog_open(&log, &md.base, "/u", 4096, err, sizeof(err)), 0);
    fill(log, 0, 100);
    uint64_t durable = 0;
    CHECK_EQ_INT(sq__plog_flush(log, true, &durable), 0);
    fill(log, 100, 100);
    CHECK_EQ_INT(sq__plog_flush(log, false, &durable), 0);
    CHECK_EQ_INT(sq__plog_synced(log), 100);
    sq__plog_close(log);
    md_crash(&md, 0); /* every unsynced byte is gone */
    CHECK_EQ_INT(sq__plog_open(&log, &md.base, "/u", 4096, err, sizeof(err)), 0);
    /* The synced 100 are there; of the rest, whole segments that were synced when the next one
     * began; the last segment lost what it had. */
    uint64_t n = log == NULL ? 0 : sq__plog_count(log);
    CHECK(n >= 100 && n < 200);
    if (log != NULL) {
        verify(log, n);
        fill(log, n, 200 - n); /* and it takes appends again, into a fresh segment */
        CHECK_EQ_INT(sq__plog_flush(log, true, NULL), 0);
        sq__plog_close(log);
        CHECK_EQ_INT(sq__plog_open(&log, &md.base, "/u", 4096, err, sizeof(err)), 0);
        CHECK_EQ_INT(sq__plog_count(log), 200);
        verify(log, 200);
        sq__plog_close(log);
    }
    md_free(&md);
}

static void test_damage(void)
{
    struct memdisk md;
    md_init(&md);
    struct sq__plog *log;
    char err[256] = "";
    CHECK_EQ_INT(sq__plog_open(&log, &md.base, "/x", 4096, err, sizeof(err)), 0);
    fill(log, 0, 300);
    CHECK_EQ_INT(sq__plog_flush(log, true, NULL), 0);
    uint32_t nsegs = log->nsegs;
    struct sq__plog_entry e;
    CHECK_EQ_INT(sq__plog_find(log, (1ull << 32) + 1 + 290, SQ_PLOG_EXACT, &e, NULL), 0);
    sq__plog_close(log);
    CHECK(nsegs >= 3);
    /* A flipped byte in a record of the last segment, with records after it. */
    int h = md_find(&md, "/x/seg-0000000100000001.sqlog");
    CHECK(h >= 0);
    char last[600];
    int hl = -1;
    for (int i = 0; i < MD_FILES; i++) {
        if (md.files[i].used && (hl < 0 || strcmp(md.files[i].path, md.files[hl].path) > 0)) {
            hl = i;
        }
    }
    snprintf(last, sizeof(last), "%s", md.files[hl].path);
    md.files[hl].data[e.offset + SQ_PLOG_HEADER_BYTES - 20] ^= 0x40; /* its timestamp */
    CHECK_EQ_INT(sq__plog_open(&log, &md.base, "/x", 4096, err, sizeof(err)), SQ_ECORRUPT);
    CHECK_CONTAINS(err, last);
    char where[64];
    snprintf(where, sizeof(where), "damaged at offset %llu", (unsigned long long)e.offset);
    CHECK_CONTAINS(err, where);
    md.files[hl].data[e.offset + SQ_PLOG_HEADER_BYTES - 20] ^= 0x40;
    /* Damage in an earlier segment is never a torn tail. */
    md.files[h].data[SQ_PLOG_HEADER_BYTES + 1] ^= 1; /* payload of the first record */
    md.files[h].data[SQ_PLOG_HEADER_BYTES + 200] ^= 1;
    CHECK_EQ_INT(sq__plog_open(&log, &md.base, "/x", 4096, err, sizeof(err)), SQ_ECORRUPT);
    CHECK_CONTAINS(err, "/x/seg-0000000100000001.sqlog: damaged at offset");
    md_free(&md);
}

static void test_full_disk(void)
{
    struct memdisk md;
    md_init(&md);
    struct sq__plog *log;
    char err[256] = "";
    CHECK_EQ_INT(sq__plog_open(&log, &md.base, "/f", 1 << 20, err, sizeof(err)), 0);
    fill(log, 0, 10);
    CHECK_EQ_INT(sq__plog_flush(log, true, NULL), 0);
    md.budget = 100; /* the disk fills up */
    fill(log, 10, 10);
    uint64_t durable = 0;
    CHECK_EQ_INT(sq__plog_flush(log, true, &durable), SQ_ENOSPC);
    CHECK_EQ_INT(durable, 10);
    /* the error sticks: nothing more is taken */
    CHECK_EQ_INT(sq__plog_append(log, 1ull << 40, 0, 0, NULL, 0), SQ_ENOSPC);
    CHECK_EQ_INT(sq__plog_flush(log, true, NULL), SQ_ENOSPC);
    sq__plog_close(log);
    md.budget = -1;
    CHECK_EQ_INT(sq__plog_open(&log, &md.base, "/f", 1 << 20, err, sizeof(err)), 0);
    CHECK_EQ_INT(sq__plog_count(log), 10);
    verify(log, 10);
    sq__plog_close(log);
    md_free(&md);
}

static void test_posix(void)
{
    char dir[] = "/tmp/squall-plog-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char sub[64];
    snprintf(sub, sizeof(sub), "%s/log/a.0", dir);
    struct sq__plog *log;
    char err[256] = "";
    CHECK_EQ_INT(sq__plog_open(&log, sq__disk_posix(), sub, 8192, err, sizeof(err)), 0);
    fill(log, 0, 400);
    CHECK_EQ_INT(sq__plog_flush(log, true, NULL), 0);
    /* A second opener of a log in use is refused (the lock is per open file description). */
    struct sq__plog *twice = NULL;
    CHECK_EQ_INT(sq__plog_open(&twice, sq__disk_posix(), sub, 8192, err, sizeof(err)), SQ_EBUSY);
    CHECK_CONTAINS(err, "another process is using this log");
    sq__plog_close(log);
    CHECK_EQ_INT(sq__plog_open(&log, sq__disk_posix(), sub, 8192, err, sizeof(err)), 0);
    CHECK_EQ_INT(sq__plog_count(log), 400);
    verify(log, 400);
    sq__plog_close(log);
    /* Append half a record to the last file by hand: a torn tail, cut on open. */
    char path[128];
    snprintf(path, sizeof(path), "%s/seg-%016llx.sqlog", sub, 0ull);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "ls %s | tail -1", sub);
    FILE *p = popen(cmd, "r");
    char name[64] = "";
    CHECK(p != NULL && fgets(name, sizeof(name), p) != NULL);
    if (p != NULL) {
        pclose(p);
    }
    name[strcspn(name, "\n")] = '\0';
    snprintf(path, sizeof(path), "%s/%s", sub, name);
    int fd = open(path, O_WRONLY | O_APPEND);
    CHECK(fd >= 0);
    CHECK(write(fd, "SQLR\1\0\60\0junk", 12) == 12);
    close(fd);
    CHECK_EQ_INT(sq__plog_open(&log, sq__disk_posix(), sub, 8192, err, sizeof(err)), 0);
    CHECK_CONTAINS(log->recovery, "cut a torn record");
    verify(log, 400);
    sq__plog_close(log);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

/* The CRC-32C the records carry: the known check value, and the fast path equal to the
 * byte-at-a-time reference at every length and alignment. */
static void test_crc32c(void)
{
    CHECK_EQ_INT(sq__crc32c(0, "123456789", 9), 0xE3069283u);
    CHECK_EQ_INT(sq__crc32c_table(0, "123456789", 9), 0xE3069283u);
    uint8_t buf[600];
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < sizeof(buf); i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = (uint8_t)x;
    }
    int bad = 0;
    for (size_t off = 0; off < 8; off++) {
        for (size_t len = 0; len + off <= sizeof(buf); len += 1 + len / 16) {
            uint32_t a = sq__crc32c(0x1234u, buf + off, len);
            uint32_t b = sq__crc32c_table(0x1234u, buf + off, len);
            bad += a != b;
        }
    }
    CHECK_EQ_INT(bad, 0);
    /* continuing a CRC over two pieces equals one pass */
    CHECK_EQ_INT(sq__crc32c(sq__crc32c(0, buf, 100), buf + 100, 333), sq__crc32c(0, buf, 433));
}

int main(void)
{
    test_crc32c();
    test_roundtrip_and_indexes();
    test_truncate();
    test_torn_tail();
    test_zero_ahead();
    test_lost_unsynced();
    test_zero_hole();
    test_damage();
    test_full_disk();
    test_posix();
    return sq_test_done("test_plog");
}
