/* disk.h: the file operations the persistent log needs, as a vtable, so that tests can run the
 * log on a disk that fills up, loses what was not synced, or tears the last write.
 *
 * Every call returns 0 (or a byte count) on success and a negative SQ_E* code on failure, with
 * the system's reason in `errno` for the real disk. Paths are full paths. */
#ifndef SQ_DISK_H
#define SQ_DISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct sq_disk;

struct sq_disk_vtable {
    int (*mkdirs)(struct sq_disk *d, const char *path); /* like mkdir -p */
    /* Calls fn for every entry name of directory `path` (not . and ..). */
    int (*list)(struct sq_disk *d, const char *path, void (*fn)(void *arg, const char *name),
                void *arg);
    int (*open)(struct sq_disk *d, const char *path, bool create); /* returns a handle >= 0 */
    int (*close)(struct sq_disk *d, int h);
    ssize_t (*pread)(struct sq_disk *d, int h, void *buf, size_t len, uint64_t off);
    ssize_t (*pwrite)(struct sq_disk *d, int h, const void *buf, size_t len, uint64_t off);
    int (*datasync)(struct sq_disk *d, int h);
    int (*truncate)(struct sq_disk *d, int h, uint64_t len);
    int (*size)(struct sq_disk *d, int h, uint64_t *len);
    int (*syncdir)(struct sq_disk *d, const char *path); /* makes a new file's name durable */
    int (*unlink)(struct sq_disk *d, const char *path);
    /* Takes an exclusive lock on `path` (created if needed) for as long as the returned handle
     * is open (close it with close()); SQ_EBUSY when another process holds it. */
    int (*lock)(struct sq_disk *d, const char *path);
};

struct sq_disk {
    const struct sq_disk_vtable *vt;
};

/* The real file system (POSIX calls). A single shared instance. */
struct sq_disk *sq__disk_posix(void);

/* Bytes written and data syncs done through the POSIX disk by this process since it started. */
void sq__disk_posix_stats(uint64_t *bytes_written, uint64_t *syncs);

/* CRC-32C (Castagnoli) of `len` bytes, continuing from `crc` (start with 0). */
uint32_t sq__crc32c(uint32_t crc, const void *data, size_t len);
/* The same, one table lookup per byte (the reference for the fast one). */
uint32_t sq__crc32c_table(uint32_t crc, const void *data, size_t len);

#endif
