/* plog.h: the persistent, versioned log of one shard at one member.
 *
 * A directory of append-only segment files, seg-<first version, 16 hex digits>.sqlog. Each
 * record, all fields little-endian, 8-byte aligned:
 *   0  u32 magic "SQLR"          16 u64 version (view id << 32 | sequence in the view)
 *   4  u16 format version (1)    24 u64 timestamp: hybrid logical clock, microseconds since
 *   6  u16 header bytes (48)            the Unix epoch, never decreasing within the log
 *   8  u32 payload bytes         32 u32 flags (0)
 *   12 u32 sender id             36 u32 reserved (0)
 *   40 u32 CRC-32C of bytes 0..39 and the payload     44 u32 reserved (0)
 *   48 payload, zero-padded to a multiple of 8
 * Versions strictly increase through the log; timestamps never decrease.
 *
 * Opening a log checks every record. A damaged record at the very end (a write the machine did
 * not finish) is cut off and reported; damage anywhere else makes the open fail with the file and
 * offset, and nothing is dropped silently.
 *
 * Threads: one thread appends (the member's event loop), one flushes (the persistence thread),
 * any may read; a mutex inside makes that safe. Indexes by version and by time live in memory and
 * are rebuilt from the records on open. */
#ifndef SQ_PLOG_H
#define SQ_PLOG_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "persist/disk.h"

#define SQ_PLOG_HEADER_BYTES 48u
#define SQ_PLOG_FORMAT 1u
#define SQ_PLOG_MAX_RECORD (256u << 20)
/* Append buffers up to this size are kept for reuse after a flush; larger ones are freed. */
#define SQ_PLOG_KEEP_BUFFER_BYTES (4u << 20)

/* One record's place in the log. */
struct sq__plog_entry {
    uint64_t version;
    uint64_t timestamp;
    uint32_t sender;
    uint32_t size;    /* payload bytes */
    uint32_t segment; /* index into the log's segments */
    uint64_t offset;  /* of the record header in that segment */
};

struct sq__plog_segment {
    uint64_t first_version;
    int handle;    /* -1 until the flusher creates the file */
    uint64_t size; /* bytes planned (appended) in this segment */
    bool dirty;    /* written since the last sync */
    /* The file's length: the last segment is written with zeros ahead of its records
     * (SQ_PLOG_ZERO_AHEAD), so that a sync after an append does not also have to commit a new
     * file length to the file system's journal (a third less time per sync on ext4). A file
     * that ends in zeros after its last record is such a segment, not a torn one. Any other
     * segment is cut to its records before the next one gets a byte. */
    uint64_t file_bytes;
};

/* How far ahead of its records the last segment's file is kept written (with zeros), and how
 * much room left makes the flusher extend it again. */
#define SQ_PLOG_ZERO_AHEAD (1u << 20)
#define SQ_PLOG_ZERO_LOW (256u << 10)

struct sq__plog {
    struct sq_disk *disk;
    char dir[512];
    uint64_t segment_bytes;
    pthread_mutex_t mu;
    pthread_mutex_t flush_mu; /* one flush at a time */
    struct sq__plog_segment *segs;
    uint32_t nsegs, capsegs;
    struct sq__plog_entry *idx;
    uint64_t n, cap;
    uint64_t written; /* entries whose bytes are in the files (readable) */
    uint64_t synced;  /* entries made durable by a sync */
    uint8_t *pend;    /* appended records not yet written, in order */
    size_t pend_len, pend_cap;
    uint64_t pend_first; /* index of the first entry in pend */
    uint8_t *spare;      /* the flusher's buffer, swapped with pend */
    size_t spare_cap;
    int failed;       /* first write error: sticky */
    int lock_handle;  /* the directory's lock (-1: none) */
    int *cut_handles; /* files of segments a cut removed: open until close, so that a reader
                       * holding an entry of theirs reads old bytes, never another file */
    uint32_t ncut;
    uint32_t cuts;      /* sq__plog_truncate calls that cut something: reads then check */
    char recovery[768]; /* what opening found and did ("" when the log was clean) */
};

/* Opens (creating if needed) the log in `dir` and checks it. Returns 0, SQ_ECORRUPT (damage
 * before the tail: `err` names the file and offset), or SQ_EIO/SQ_ENOSPC. */
int sq__plog_open(struct sq__plog **out, struct sq_disk *disk, const char *dir,
                  uint64_t segment_bytes, char *err, size_t err_size);
void sq__plog_close(struct sq__plog *log);

/* Appends a record in memory (the flusher writes it). SQ_EINVAL unless the version is above the
 * last one; the timestamp is raised to the last one if it is below; SQ_EMSGSIZE above
 * SQ_PLOG_MAX_RECORD; the sticky write error after a failed flush. */
int sq__plog_append(struct sq__plog *log, uint64_t version, uint64_t timestamp, uint32_t sender,
                    const void *data, uint32_t size);

/* Writes what was appended to the files and, if `sync`, makes it durable (one fdatasync per
 * segment touched). Returns 0 or the (sticky) error. *durable gets the number of entries that
 * are durable (synced) now. */
int sq__plog_flush(struct sq__plog *log, bool sync, uint64_t *durable);

/* Cuts the log back to its first `keep` entries (a suffix that the group's history does not
 * hold: records a member delivered but the group, restarted without it, never persisted). Writes
 * out what was appended first, then shortens or removes the segment files and makes that
 * durable. Called by the appending thread. Returns 0 or an error (the log is then failed). */
int sq__plog_truncate(struct sq__plog *log, uint64_t keep);

/* The record format, for moving records between members: encodes one record into `dst` (which
 * has room for SQ_PLOG_HEADER_BYTES + align8(size) bytes) and returns its length; decodes the
 * record at `p` (at most `avail` bytes), checking its checksum, and returns its length (0 when
 * it is not a whole valid record). */
size_t sq__plog_encode(uint8_t *dst, uint64_t version, uint64_t timestamp, uint32_t sender,
                       const void *data, uint32_t size);
size_t sq__plog_decode(const uint8_t *p, size_t avail, struct sq__plog_entry *e,
                       const uint8_t **payload);
/* Bytes a record of `size` payload bytes takes. */
size_t sq__plog_record_bytes(uint32_t size);

/* Counts and bounds. */
uint64_t sq__plog_count(struct sq__plog *log);
uint64_t sq__plog_synced(struct sq__plog *log);
uint64_t sq__plog_written(struct sq__plog *log); /* in the files, perhaps not synced */
/* Version of entry number k (0-based), or 0 past the end. */
uint64_t sq__plog_version_at(struct sq__plog *log, uint64_t k);
/* The last entry (version 0 when the log is empty). */
struct sq__plog_entry sq__plog_last(struct sq__plog *log);

/* Lookups over written entries. SQ_ENOTFOUND when there is none. */
enum sq__plog_match { SQ_PLOG_EXACT, SQ_PLOG_AT_OR_BEFORE };
int sq__plog_find(struct sq__plog *log, uint64_t version, enum sq__plog_match how,
                  struct sq__plog_entry *out, uint64_t *pos);
/* The latest entry whose timestamp is at or before `ts`. */
int sq__plog_find_time(struct sq__plog *log, uint64_t ts, struct sq__plog_entry *out,
                       uint64_t *pos);
/* Entry number `pos` (for iteration: find the first, then pos + 1, ...). */
int sq__plog_entry_at(struct sq__plog *log, uint64_t pos, struct sq__plog_entry *out);
/* Reads an entry's payload (up to cap bytes; returns the full size or an error). */
ssize_t sq__plog_read(struct sq__plog *log, const struct sq__plog_entry *e, void *buf, size_t cap);

#endif
