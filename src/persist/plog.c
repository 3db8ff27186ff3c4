/* plog.c: the persistent versioned log. See plog.h. */
#include "persist/plog.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "log.h"

#define REC_MAGIC 0x524c5153u /* "SQLR" */

static uint32_t ld32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static uint64_t ld64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static void st32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}

static void st64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, 8);
}

static size_t rec_bytes(uint32_t size)
{
    return SQ_PLOG_HEADER_BYTES + SQ_ALIGN8((size_t)size);
}

static void seg_path(const struct sq__plog *log, uint64_t first, char *out, size_t cap)
{
    snprintf(out, cap, "%s/seg-%016" PRIx64 ".sqlog", log->dir, first);
}

static void fmt_err(char *err, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fmt_err(char *err, size_t size, const char *fmt, ...)
{
    if (err != NULL && size > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, size, fmt, ap);
        va_end(ap);
    }
}

static int add_segment(struct sq__plog *log, uint64_t first, int handle, uint64_t size)
{
    if (log->nsegs == log->capsegs) {
        uint32_t cap = log->capsegs ? log->capsegs * 2 : 8;
        struct sq__plog_segment *s = realloc(log->segs, cap * sizeof(*s));
        if (s == NULL) {
            return SQ_ENOMEM;
        }
        log->segs = s;
        log->capsegs = cap;
    }
    log->segs[log->nsegs++] = (struct sq__plog_segment){first, handle, size, false, size};
    return 0;
}

static int add_entry(struct sq__plog *log, const struct sq__plog_entry *e)
{
    if (log->n == log->cap) {
        uint64_t cap = log->cap ? log->cap * 2 : 1024;
        struct sq__plog_entry *x = realloc(log->idx, cap * sizeof(*x));
        if (x == NULL) {
            return SQ_ENOMEM;
        }
        log->idx = x;
        log->cap = cap;
    }
    log->idx[log->n++] = *e;
    return 0;
}

/* Checks the record at `off` of a segment of `size` bytes. Returns 1 and fills *e when valid,
 * 0 when not (why in `why`), or an I/O error. `buf` grows as needed. */
static int check_record(struct sq__plog *log, int h, uint64_t off, uint64_t size, uint8_t **buf,
                        size_t *cap, struct sq__plog_entry *e, const char **why)
{
    uint8_t hdr[SQ_PLOG_HEADER_BYTES];
    if (size - off < SQ_PLOG_HEADER_BYTES) {
        *why = "a record header is cut short";
        return 0;
    }
    ssize_t r = log->disk->vt->pread(log->disk, h, hdr, sizeof(hdr), off);
    if (r < 0) {
        return (int)r;
    }
    if ((size_t)r != sizeof(hdr)) {
        *why = "a record header is cut short";
        return 0;
    }
    if (ld32(hdr) != REC_MAGIC || hdr[4] != SQ_PLOG_FORMAT || hdr[5] != 0 ||
        hdr[6] != SQ_PLOG_HEADER_BYTES || hdr[7] != 0) {
        *why = "no record header (bad magic or format)";
        return 0;
    }
    uint32_t len = ld32(hdr + 8);
    if (len > SQ_PLOG_MAX_RECORD) {
        *why = "a record length is out of range";
        return 0;
    }
    if (size - off < rec_bytes(len)) {
        *why = "a record is cut short";
        return 0;
    }
    if (*cap < len) {
        uint8_t *b = realloc(*buf, len);
        if (b == NULL) {
            return SQ_ENOMEM;
        }
        *buf = b;
        *cap = len;
    }
    if (len > 0) {
        r = log->disk->vt->pread(log->disk, h, *buf, len, off + SQ_PLOG_HEADER_BYTES);
        if (r < 0) {
            return (int)r;
        }
        if ((size_t)r != len) {
            *why = "a record is cut short";
            return 0;
        }
    }
    uint32_t crc = sq__crc32c(sq__crc32c(0, hdr, 40), *buf, len);
    if (crc != ld32(hdr + 40)) {
        *why = "a record checksum does not match";
        return 0;
    }
    e->version = ld64(hdr + 16);
    e->timestamp = ld64(hdr + 24);
    e->sender = ld32(hdr + 12);
    e->size = len;
    e->offset = off;
    return 1;
}

struct name_list {
    uint64_t *firsts;
    uint32_t n, cap;
    int rc;
};

static void collect(void *arg, const char *name)
{
    struct name_list *l = arg;
    unsigned long long first;
    char tail[16];
    if (sscanf(name, "seg-%16llx.%15s", &first, tail) != 2 || strcmp(tail, "sqlog") != 0 ||
        strlen(name) != 4 + 16 + 6) {
        return; /* not ours */
    }
    if (l->n == l->cap) {
        uint32_t cap = l->cap ? l->cap * 2 : 16;
        uint64_t *f = realloc(l->firsts, cap * sizeof(*f));
        if (f == NULL) {
            l->rc = SQ_ENOMEM;
            return;
        }
        l->firsts = f;
        l->cap = cap;
    }
    l->firsts[l->n++] = first;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* After a bad record at `off` of the last segment: is there a valid record further on, with
 * something other than zeros before it? (Returns 1.) A run of zeros up to the next valid record
 * is what a power cut leaves when the pages of an unsynced write reach the disk out of order:
 * nothing from `off` on was ever synced, so it is a torn tail, not damage (returns 0). */
static int valid_after(struct sq__plog *log, int h, uint64_t off, uint64_t size, uint8_t **buf,
                       size_t *cap)
{
    bool zeros = true;
    for (uint64_t o = off; o + SQ_PLOG_HEADER_BYTES <= size; o += 8) {
        struct sq__plog_entry e;
        const char *why;
        int rc = o == off ? 0 : check_record(log, h, o, size, buf, cap, &e, &why);
        if (rc < 0) {
            return rc;
        }
        if (rc == 1) {
            return zeros ? 0 : 1;
        }
        uint64_t word = 0;
        ssize_t r = log->disk->vt->pread(log->disk, h, &word, 8, o);
        if (r < 0) {
            return (int)r;
        }
        zeros &= word == 0;
    }
    return 0;
}

/* Whether bytes [off, size) of a segment are all zeros: 1, 0, or a read error. */
static int zeros_from(struct sq__plog *log, int h, uint64_t off, uint64_t size)
{
    uint8_t b[4096];
    while (off < size) {
        size_t n = (size_t)SQ_MIN((uint64_t)sizeof(b), size - off);
        ssize_t r = log->disk->vt->pread(log->disk, h, b, n, off);
        if (r < 0) {
            return (int)r;
        }
        if (r == 0) {
            return 1;
        }
        for (ssize_t i = 0; i < r; i++) {
            if (b[i] != 0) {
                return 0;
            }
        }
        off += (uint64_t)r;
    }
    return 1;
}

/* Reads every segment, rebuilds the index, cuts a torn tail. */
static int recover(struct sq__plog *log, char *err, size_t err_size)
{
    struct name_list names = {0};
    int rc = log->disk->vt->list(log->disk, log->dir, collect, &names);
    if (rc == 0) {
        rc = names.rc;
    }
    if (rc != 0) {
        free(names.firsts);
        fmt_err(err, err_size, "%s: cannot list the log directory: %s", log->dir, sq_strerror(rc));
        return rc;
    }
    if (names.n > 1) {
        qsort(names.firsts, names.n, sizeof(uint64_t), cmp_u64);
    }
    uint8_t *buf = NULL;
    size_t cap = 0;
    uint64_t last_version = 0, last_ts = 0;
    for (uint32_t s = 0; s < names.n && rc == 0; s++) {
        char path[600];
        seg_path(log, names.firsts[s], path, sizeof(path));
        int h = log->disk->vt->open(log->disk, path, false);
        uint64_t size = 0;
        if (h < 0 || (rc = log->disk->vt->size(log->disk, h, &size)) != 0) {
            rc = h < 0 ? h : rc;
            fmt_err(err, err_size, "%s: cannot open: %s", path, sq_strerror(rc));
            if (h >= 0) {
                log->disk->vt->close(log->disk, h);
            }
            break;
        }
        bool last = s + 1 == names.n;
        if ((rc = add_segment(log, names.firsts[s], h, 0)) != 0) {
            log->disk->vt->close(log->disk, h);
            break;
        }
        uint64_t off = 0;
        bool first_rec = true;
        while (off < size) {
            struct sq__plog_entry e;
            const char *why = "";
            int ok = check_record(log, h, off, size, &buf, &cap, &e, &why);
            if (ok < 0) {
                rc = ok;
                fmt_err(err, err_size, "%s: read error at offset %" PRIu64 ": %s", path, off,
                        sq_strerror(rc));
                break;
            }
            bool backwards = log->n > 0 && (e.version <= last_version || e.timestamp < last_ts);
            if (ok == 1 && (backwards || (first_rec && e.version != names.firsts[s]))) {
                ok = 0;
                why = "versions or timestamps go backwards";
                if (!backwards) {
                    why = "the first record does not match the file name";
                }
                /* Out of order is never a torn write: always damage. */
                rc = SQ_ECORRUPT;
                fmt_err(err, err_size, "%s: damaged at offset %" PRIu64 ": %s", path, off, why);
                break;
            }
            if (ok == 0 && last) {
                int z = zeros_from(log, h, off, size);
                if (z < 0) {
                    rc = z;
                    fmt_err(err, err_size, "%s: read error: %s", path, sq_strerror(rc));
                    break;
                }
                if (z == 1) {
                    /* the zeros written ahead of the records (see file_bytes): the end */
                    log->segs[log->nsegs - 1].file_bytes = size;
                    size = off;
                    break;
                }
            }
            if (ok == 0) {
                int later = last ? valid_after(log, h, off, size, &buf, &cap) : 1;
                if (later < 0) {
                    rc = later;
                    fmt_err(err, err_size, "%s: read error: %s", path, sq_strerror(rc));
                } else if (later == 1) {
                    rc = SQ_ECORRUPT;
                    fmt_err(err, err_size,
                            "%s: damaged at offset %" PRIu64 " (%s) with records "
                            "after it; refusing to start (restore the file, or remove this "
                            "member's log and let it rejoin)",
                            path, off, why);
                } else {
                    /* A torn last write: nothing after it was ever acknowledged as durable. */
                    rc = log->disk->vt->truncate(log->disk, h, off);
                    if (rc == 0) {
                        rc = log->disk->vt->datasync(log->disk, h);
                    }
                    snprintf(log->recovery, sizeof(log->recovery),
                             "%s: cut a torn record at offset %" PRIu64 " (%" PRIu64 " bytes: %s)",
                             path, off, size - off, why);
                    if (rc != 0) {
                        fmt_err(err, err_size, "%s: cannot cut the torn tail: %s", path,
                                sq_strerror(rc));
                    }
                    size = off;
                    log->segs[log->nsegs - 1].file_bytes = size;
                }
                break;
            }
            e.segment = log->nsegs - 1;
            if ((rc = add_entry(log, &e)) != 0) {
                break;
            }
            last_version = e.version;
            last_ts = e.timestamp;
            first_rec = false;
            off += rec_bytes(e.size);
        }
        log->segs[log->nsegs - 1].size = size;
        if (log->segs[log->nsegs - 1].file_bytes < size) {
            log->segs[log->nsegs - 1].file_bytes = size;
        }
        if (rc == 0 && size == 0 && !last) {
            rc = SQ_ECORRUPT;
            fmt_err(err, err_size, "%s: an empty segment before the last one", path);
        } else if (rc == 0 && size == 0) {
            /* Created, but its first record never made it: the next append starts afresh
             * (a segment is named after its first record). */
            log->disk->vt->close(log->disk, h);
            log->nsegs--;
            rc = log->disk->vt->unlink(log->disk, path);
            if (rc == 0) {
                rc = log->disk->vt->syncdir(log->disk, log->dir);
            }
        }
    }
    free(buf);
    free(names.firsts);
    /* What survived a process crash may still sit in the page cache: make it durable, since it
     * is counted as such from here on. */
    if (rc == 0 && log->nsegs > 0) {
        rc = log->disk->vt->datasync(log->disk, log->segs[log->nsegs - 1].handle);
    }
    log->written = log->synced = log->n;
    log->pend_first = log->n;
    return rc;
}

int sq__plog_open(struct sq__plog **out, struct sq_disk *disk, const char *dir,
                  uint64_t segment_bytes, char *err, size_t err_size)
{
    *out = NULL;
    struct sq__plog *log = calloc(1, sizeof(*log));
    if (log == NULL) {
        return SQ_ENOMEM;
    }
    log->disk = disk;
    log->segment_bytes = segment_bytes < 4096 ? 4096 : segment_bytes;
    if (snprintf(log->dir, sizeof(log->dir), "%s", dir) >= (int)sizeof(log->dir)) {
        free(log);
        fmt_err(err, err_size, "%s: log directory path too long", dir);
        return SQ_EINVAL;
    }
    pthread_mutex_init(&log->mu, NULL);
    pthread_mutex_init(&log->flush_mu, NULL);
    log->lock_handle = -1;
    int rc = disk->vt->mkdirs(disk, dir);
    if (rc != 0) {
        fmt_err(err, err_size, "%s: cannot create the log directory: %s", dir, sq_strerror(rc));
    } else {
        /* One process per log: a second one (a member started twice, or a tool reading a live
         * member's log) would cut or extend what the other writes. */
        char lock[600];
        snprintf(lock, sizeof(lock), "%s/LOCK", dir);
        int h = disk->vt->lock(disk, lock);
        if (h == SQ_EBUSY) {
            rc = SQ_EBUSY;
            fmt_err(err, err_size, "%s: another process is using this log (stop it first)", dir);
        } else if (h >= 0) {
            log->lock_handle = h;
        }
        if (rc == 0) {
            rc = recover(log, err, err_size);
        }
    }
    if (rc != 0) {
        sq__plog_close(log);
        return rc;
    }
    *out = log;
    return 0;
}

void sq__plog_close(struct sq__plog *log)
{
    if (log == NULL) {
        return;
    }
    for (uint32_t s = 0; s < log->nsegs; s++) {
        if (log->segs[s].handle >= 0) {
            log->disk->vt->close(log->disk, log->segs[s].handle);
        }
    }
    for (uint32_t k = 0; k < log->ncut; k++) {
        log->disk->vt->close(log->disk, log->cut_handles[k]);
    }
    free(log->cut_handles);
    if (log->lock_handle >= 0) {
        log->disk->vt->close(log->disk, log->lock_handle);
    }
    pthread_mutex_destroy(&log->mu);
    pthread_mutex_destroy(&log->flush_mu);
    free(log->segs);
    free(log->idx);
    free(log->pend);
    free(log->spare);
    free(log);
}

size_t sq__plog_record_bytes(uint32_t size)
{
    return rec_bytes(size);
}

size_t sq__plog_encode(uint8_t *dst, uint64_t version, uint64_t timestamp, uint32_t sender,
                       const void *data, uint32_t size)
{
    size_t need = rec_bytes(size);
    memset(dst, 0, SQ_PLOG_HEADER_BYTES);
    memset(dst + need - 8, 0, 8); /* the padding */
    st32(dst, REC_MAGIC);
    dst[4] = SQ_PLOG_FORMAT;
    dst[6] = SQ_PLOG_HEADER_BYTES;
    st32(dst + 8, size);
    st32(dst + 12, sender);
    st64(dst + 16, version);
    st64(dst + 24, timestamp);
    if (size > 0) {
        memcpy(dst + SQ_PLOG_HEADER_BYTES, data, size);
    }
    st32(dst + 40, sq__crc32c(sq__crc32c(0, dst, 40), dst + SQ_PLOG_HEADER_BYTES, size));
    return need;
}

size_t sq__plog_decode(const uint8_t *p, size_t avail, struct sq__plog_entry *e,
                       const uint8_t **payload)
{
    if (avail < SQ_PLOG_HEADER_BYTES || ld32(p) != REC_MAGIC || p[4] != SQ_PLOG_FORMAT ||
        p[6] != SQ_PLOG_HEADER_BYTES) {
        return 0;
    }
    uint32_t len = ld32(p + 8);
    if (len > SQ_PLOG_MAX_RECORD || avail < rec_bytes(len) ||
        sq__crc32c(sq__crc32c(0, p, 40), p + SQ_PLOG_HEADER_BYTES, len) != ld32(p + 40)) {
        return 0;
    }
    *e = (struct sq__plog_entry){
        .version = ld64(p + 16), .timestamp = ld64(p + 24), .sender = ld32(p + 12), .size = len};
    *payload = p + SQ_PLOG_HEADER_BYTES;
    return rec_bytes(len);
}

int sq__plog_append(struct sq__plog *log, uint64_t version, uint64_t timestamp, uint32_t sender,
                    const void *data, uint32_t size)
{
    if (size > SQ_PLOG_MAX_RECORD) {
        return SQ_EMSGSIZE;
    }
    pthread_mutex_lock(&log->mu);
    int rc = log->failed;
    struct sq__plog_entry last = log->n ? log->idx[log->n - 1] : (struct sq__plog_entry){0};
    if (rc == 0 && log->n > 0 && version <= last.version) {
        rc = SQ_EINVAL;
    }
    size_t need = rec_bytes(size);
    if (rc == 0 && log->pend_len + need > log->pend_cap) {
        size_t cap = log->pend_cap ? log->pend_cap : 65536;
        while (cap < log->pend_len + need) {
            cap *= 2;
        }
        uint8_t *p = realloc(log->pend, cap);
        if (p == NULL) {
            rc = SQ_ENOMEM;
        } else {
            log->pend = p;
            log->pend_cap = cap;
        }
    }
    if (rc == 0 &&
        (log->nsegs == 0 || (log->segs[log->nsegs - 1].size > 0 &&
                             log->segs[log->nsegs - 1].size + need > log->segment_bytes))) {
        rc = add_segment(log, version, -1, 0); /* the flusher creates the file */
    }
    if (rc != 0) {
        pthread_mutex_unlock(&log->mu);
        return rc;
    }
    if (log->n > 0 && timestamp < last.timestamp) {
        timestamp = last.timestamp;
    }
    sq__plog_encode(log->pend + log->pend_len, version, timestamp, sender, data, size);
    struct sq__plog_segment *seg = &log->segs[log->nsegs - 1];
    struct sq__plog_entry e = {.version = version,
                               .timestamp = timestamp,
                               .sender = sender,
                               .size = size,
                               .segment = log->nsegs - 1,
                               .offset = seg->size};
    rc = add_entry(log, &e);
    if (rc == 0) {
        seg->size += need;
        log->pend_len += need;
    }
    pthread_mutex_unlock(&log->mu);
    return rc;
}

/* The flusher, before it writes a segment up to `end`: when less than SQ_PLOG_ZERO_LOW of the
 * file is left past it, writes zeros up to SQ_PLOG_ZERO_AHEAD past it (within the segment's
 * size), so that most syncs find the file's length unchanged. */
static int zero_ahead(struct sq__plog *log, uint32_t segment, int h, uint64_t end)
{
    static const uint8_t zeros[65536];
    pthread_mutex_lock(&log->mu);
    uint64_t have = log->segs[segment].file_bytes;
    bool last = segment + 1 == log->nsegs;
    pthread_mutex_unlock(&log->mu);
    if (!last || have >= end + SQ_PLOG_ZERO_LOW) {
        return 0;
    }
    uint64_t want = SQ_MIN(end + SQ_PLOG_ZERO_AHEAD, SQ_MAX(log->segment_bytes, end));
    for (uint64_t off = SQ_MAX(have, end); off < want;) {
        size_t n = (size_t)SQ_MIN((uint64_t)sizeof(zeros), want - off);
        ssize_t w = log->disk->vt->pwrite(log->disk, h, zeros, n, off);
        if (w < 0) {
            return (int)w;
        }
        off += (uint64_t)w;
    }
    pthread_mutex_lock(&log->mu);
    if (want > log->segs[segment].file_bytes) {
        log->segs[segment].file_bytes = want;
    }
    log->segs[segment].dirty = true;
    pthread_mutex_unlock(&log->mu);
    return 0;
}

int sq__plog_flush(struct sq__plog *log, bool sync, uint64_t *durable)
{
    pthread_mutex_lock(&log->flush_mu);
    pthread_mutex_lock(&log->mu);
    int rc = log->failed;
    uint64_t first = log->pend_first, end = log->n;
    size_t len = log->pend_len;
    uint8_t *batch = log->pend;
    size_t batch_cap = log->pend_cap;
    /* The next appends go to the spare buffer while this batch is written. */
    log->pend = log->spare;
    log->pend_cap = log->spare_cap;
    log->spare = NULL;
    log->spare_cap = 0;
    log->pend_len = 0;
    log->pend_first = end;
    pthread_mutex_unlock(&log->mu);

    /* Write the batch segment by segment; create files as needed. */
    size_t pos = 0;
    for (uint64_t k = first; rc == 0 && k < end;) {
        pthread_mutex_lock(&log->mu);
        struct sq__plog_entry e = log->idx[k];
        struct sq__plog_segment seg = log->segs[e.segment];
        uint64_t k2 = k;
        size_t chunk = 0;
        while (k2 < end && log->idx[k2].segment == e.segment) {
            chunk += rec_bytes(log->idx[k2].size);
            k2++;
        }
        pthread_mutex_unlock(&log->mu);
        if (e.segment > 0) {
            /* A segment is synced before the next one gets a byte, so that after a crash only
             * the last segment can be short: damage anywhere else is real damage. */
            pthread_mutex_lock(&log->mu);
            struct sq__plog_segment prev = log->segs[e.segment - 1];
            pthread_mutex_unlock(&log->mu);
            if (prev.handle >= 0 && prev.file_bytes > prev.size) {
                /* only the last segment may end in zeros (see file_bytes) */
                rc = log->disk->vt->truncate(log->disk, prev.handle, prev.size);
                if (rc != 0) {
                    break;
                }
                prev.dirty = true;
                pthread_mutex_lock(&log->mu);
                log->segs[e.segment - 1].file_bytes = prev.size;
                pthread_mutex_unlock(&log->mu);
            }
            if (prev.dirty && prev.handle >= 0) {
                rc = log->disk->vt->datasync(log->disk, prev.handle);
                if (rc != 0) {
                    break;
                }
                pthread_mutex_lock(&log->mu);
                log->segs[e.segment - 1].dirty = false;
                pthread_mutex_unlock(&log->mu);
            }
        }
        int h = seg.handle;
        if (h < 0) {
            char path[600];
            seg_path(log, seg.first_version, path, sizeof(path));
            h = log->disk->vt->open(log->disk, path, true);
            if (h < 0) {
                rc = h;
                break;
            }
            rc = log->disk->vt->syncdir(log->disk, log->dir);
            pthread_mutex_lock(&log->mu);
            log->segs[e.segment].handle = h;
            pthread_mutex_unlock(&log->mu);
            if (rc != 0) {
                break;
            }
        }
        rc = zero_ahead(log, e.segment, h, e.offset + chunk);
        if (rc != 0) {
            break;
        }
        ssize_t w = log->disk->vt->pwrite(log->disk, h, batch + pos, chunk, e.offset);
        if (w < 0) {
            rc = (int)w;
            break;
        }
        pthread_mutex_lock(&log->mu);
        log->segs[e.segment].dirty = true;
        pthread_mutex_unlock(&log->mu);
        pos += chunk;
        k = k2;
    }
    SQ_ASSERT(rc != 0 || pos == len);
    uint64_t synced_now = 0;
    pthread_mutex_lock(&log->mu);
    if (rc == 0) {
        log->written = end;
    }
    /* Sync every segment written since the last sync, oldest first. */
    for (uint32_t s = 0; rc == 0 && sync && s < log->nsegs; s++) {
        if (log->segs[s].dirty && log->segs[s].handle >= 0) {
            int h = log->segs[s].handle;
            pthread_mutex_unlock(&log->mu);
            rc = log->disk->vt->datasync(log->disk, h);
            pthread_mutex_lock(&log->mu);
            if (rc == 0) {
                log->segs[s].dirty = false;
            }
        }
    }
    if (rc == 0 && sync) {
        log->synced = end;
    } else if (rc != 0 && log->failed == 0) {
        log->failed = rc; /* a failed write leaves the file in doubt: stop appending */
    }
    synced_now = log->synced;
    /* Keep the buffer for the next swap, unless a large record grew it: a log of large values
     * holds each one in memory only until it is written, not for the rest of its life. */
    if (log->spare == NULL && batch_cap <= SQ_PLOG_KEEP_BUFFER_BYTES) {
        log->spare = batch;
        log->spare_cap = batch_cap;
        batch = NULL;
    }
    pthread_mutex_unlock(&log->mu);
    pthread_mutex_unlock(&log->flush_mu);
    free(batch);
    if (durable != NULL) {
        *durable = synced_now;
    }
    return rc;
}

int sq__plog_truncate(struct sq__plog *log, uint64_t keep)
{
    int rc = sq__plog_flush(log, false, NULL); /* nothing stays pending: files hold it all */
    if (rc != 0) {
        return rc;
    }
    pthread_mutex_lock(&log->flush_mu);
    pthread_mutex_lock(&log->mu);
    if (keep >= log->n) {
        pthread_mutex_unlock(&log->mu);
        pthread_mutex_unlock(&log->flush_mu);
        return 0;
    }
    SQ_ASSERT(log->pend_len == 0 && log->written == log->n);
    const struct sq__plog_entry cut = log->idx[keep];
    /* Segments after the cut go; the cut's own segment is shortened, or goes too when the cut
     * is at its start (a segment's file name is its first version). */
    uint32_t first_gone = cut.offset == 0 ? cut.segment : cut.segment + 1;
    bool unlinked = false;
    for (uint32_t s = log->nsegs; rc == 0 && s-- > first_gone;) {
        struct sq__plog_segment *seg = &log->segs[s];
        if (seg->handle >= 0) {
            int *h = realloc(log->cut_handles, (log->ncut + 1) * sizeof(int));
            if (h == NULL) {
                rc = SQ_ENOMEM;
                break;
            }
            log->cut_handles = h;
            log->cut_handles[log->ncut++] = seg->handle;
            seg->handle = -1;
            char path[600];
            seg_path(log, seg->first_version, path, sizeof(path));
            rc = log->disk->vt->unlink(log->disk, path);
            unlinked = true;
        }
    }
    if (rc == 0) {
        log->nsegs = first_gone;
    }
    if (rc == 0 && cut.offset > 0) {
        struct sq__plog_segment *seg = &log->segs[cut.segment];
        if (seg->handle >= 0) {
            rc = log->disk->vt->truncate(log->disk, seg->handle, cut.offset);
            if (rc == 0) {
                rc = log->disk->vt->datasync(log->disk, seg->handle);
            }
        }
        seg->size = cut.offset;
        seg->file_bytes = cut.offset;
        seg->dirty = false;
    }
    if (rc == 0 && unlinked) {
        rc = log->disk->vt->syncdir(log->disk, log->dir);
    }
    if (rc == 0) {
        log->cuts++;
        log->n = keep;
        log->written = keep;
        log->synced = SQ_MIN(log->synced, keep);
        log->pend_first = keep;
    } else if (log->failed == 0) {
        log->failed = rc;
    }
    pthread_mutex_unlock(&log->mu);
    pthread_mutex_unlock(&log->flush_mu);
    return rc;
}

uint64_t sq__plog_count(struct sq__plog *log)
{
    pthread_mutex_lock(&log->mu);
    uint64_t n = log->n;
    pthread_mutex_unlock(&log->mu);
    return n;
}

uint64_t sq__plog_written(struct sq__plog *log)
{
    pthread_mutex_lock(&log->mu);
    uint64_t n = log->written;
    pthread_mutex_unlock(&log->mu);
    return n;
}

uint64_t sq__plog_synced(struct sq__plog *log)
{
    pthread_mutex_lock(&log->mu);
    uint64_t n = log->synced;
    pthread_mutex_unlock(&log->mu);
    return n;
}

uint64_t sq__plog_version_at(struct sq__plog *log, uint64_t k)
{
    pthread_mutex_lock(&log->mu);
    uint64_t v = k < log->n ? log->idx[k].version : 0;
    pthread_mutex_unlock(&log->mu);
    return v;
}

struct sq__plog_entry sq__plog_last(struct sq__plog *log)
{
    pthread_mutex_lock(&log->mu);
    struct sq__plog_entry e = log->n ? log->idx[log->n - 1] : (struct sq__plog_entry){0};
    pthread_mutex_unlock(&log->mu);
    return e;
}

/* Under the lock: how many written entries have a key (version, or timestamp) <= `key`. Both
 * keys only grow along the log, so this is a binary search. */
static uint64_t count_upto(const struct sq__plog *log, uint64_t key, bool by_time)
{
    uint64_t lo = 0, hi = log->written;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        uint64_t k = by_time ? log->idx[mid].timestamp : log->idx[mid].version;
        if (k <= key) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

int sq__plog_find(struct sq__plog *log, uint64_t version, enum sq__plog_match how,
                  struct sq__plog_entry *out, uint64_t *pos)
{
    pthread_mutex_lock(&log->mu);
    uint64_t n = count_upto(log, version, false);
    int rc = SQ_ENOTFOUND;
    if (n > 0 && (how == SQ_PLOG_AT_OR_BEFORE || log->idx[n - 1].version == version)) {
        *out = log->idx[n - 1];
        if (pos != NULL) {
            *pos = n - 1;
        }
        rc = 0;
    }
    pthread_mutex_unlock(&log->mu);
    return rc;
}

int sq__plog_find_time(struct sq__plog *log, uint64_t ts, struct sq__plog_entry *out, uint64_t *pos)
{
    pthread_mutex_lock(&log->mu);
    uint64_t n = count_upto(log, ts, true);
    int rc = SQ_ENOTFOUND;
    if (n > 0) {
        *out = log->idx[n - 1];
        if (pos != NULL) {
            *pos = n - 1;
        }
        rc = 0;
    }
    pthread_mutex_unlock(&log->mu);
    return rc;
}

int sq__plog_entry_at(struct sq__plog *log, uint64_t pos, struct sq__plog_entry *out)
{
    pthread_mutex_lock(&log->mu);
    int rc = pos < log->written ? 0 : SQ_ENOTFOUND;
    if (rc == 0) {
        *out = log->idx[pos];
    }
    pthread_mutex_unlock(&log->mu);
    return rc;
}

ssize_t sq__plog_read(struct sq__plog *log, const struct sq__plog_entry *e, void *buf, size_t cap)
{
    pthread_mutex_lock(&log->mu);
    int h = e->segment < log->nsegs ? log->segs[e->segment].handle : -1;
    bool was_cut = log->cuts > 0;
    pthread_mutex_unlock(&log->mu);
    if (h < 0) {
        return SQ_ENOTFOUND;
    }
    if (was_cut) {
        /* An entry taken before a cut may name a place that holds another record now. */
        uint8_t hdr[SQ_PLOG_HEADER_BYTES];
        ssize_t r = log->disk->vt->pread(log->disk, h, hdr, sizeof(hdr), e->offset);
        if (r != (ssize_t)sizeof(hdr) || ld64(hdr + 16) != e->version || ld32(hdr + 8) != e->size) {
            return SQ_ENOTFOUND;
        }
    }
    size_t n = SQ_MIN(cap, (size_t)e->size);
    if (n > 0) {
        ssize_t r = log->disk->vt->pread(log->disk, h, buf, n, e->offset + SQ_PLOG_HEADER_BYTES);
        if (r < 0) {
            return r;
        }
        if ((size_t)r != n) {
            return SQ_EIO;
        }
    }
    return (ssize_t)e->size;
}
