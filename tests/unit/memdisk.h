/* memdisk.h: an in-memory disk for tests. It remembers what was synced apart from what was only
 * written, so a test can "crash" it (lose every unsynced byte, or keep a torn part of the last
 * write), and it can run out of space after a byte budget. */
#ifndef SQ_MEMDISK_H
#define SQ_MEMDISK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "persist/disk.h"
#include "squall.h"

#define MD_FILES 64

struct md_file {
    char path[600];
    bool used;
    uint8_t *data; /* current contents (the page cache) */
    uint64_t size, cap;
    uint8_t *synced; /* contents as of the last datasync */
    uint64_t synced_size;
    uint64_t last_off, last_len; /* the last write, for tearing */
};

struct memdisk {
    struct sq_disk base;
    struct md_file files[MD_FILES];
    int64_t budget; /* bytes that may still be written; < 0: unlimited */
    uint64_t syncs;
};

static int md_find(struct memdisk *m, const char *path)
{
    for (int i = 0; i < MD_FILES; i++) {
        if (m->files[i].used && strcmp(m->files[i].path, path) == 0) {
            return i;
        }
    }
    return -1;
}

static int md_mkdirs(struct sq_disk *d, const char *path)
{
    (void)d;
    (void)path;
    return 0;
}

static int md_list(struct sq_disk *d, const char *path, void (*fn)(void *, const char *), void *arg)
{
    struct memdisk *m = (struct memdisk *)d;
    size_t n = strlen(path);
    for (int i = 0; i < MD_FILES; i++) {
        if (m->files[i].used && strncmp(m->files[i].path, path, n) == 0 &&
            m->files[i].path[n] == '/' && strchr(m->files[i].path + n + 1, '/') == NULL) {
            fn(arg, m->files[i].path + n + 1);
        }
    }
    return 0;
}

static int md_open(struct sq_disk *d, const char *path, bool create)
{
    struct memdisk *m = (struct memdisk *)d;
    int i = md_find(m, path);
    if (i >= 0) {
        return i;
    }
    if (!create) {
        return SQ_EIO;
    }
    for (i = 0; i < MD_FILES; i++) {
        if (!m->files[i].used) {
            memset(&m->files[i], 0, sizeof(m->files[i]));
            m->files[i].used = true;
            snprintf(m->files[i].path, sizeof(m->files[i].path), "%s", path);
            return i;
        }
    }
    return SQ_ENOSPC;
}

static int md_close(struct sq_disk *d, int h)
{
    (void)d;
    (void)h;
    return 0;
}

static ssize_t md_pread(struct sq_disk *d, int h, void *buf, size_t len, uint64_t off)
{
    struct md_file *f = &((struct memdisk *)d)->files[h];
    if (off >= f->size) {
        return 0;
    }
    size_t n = (size_t)(f->size - off < len ? f->size - off : len);
    memcpy(buf, f->data + off, n);
    return (ssize_t)n;
}

static void md_grow(uint8_t **p, uint64_t *cap, uint64_t need)
{
    if (need > *cap) {
        uint64_t c = *cap ? *cap : 4096;
        while (c < need) {
            c *= 2;
        }
        *p = realloc(*p, c);
        memset(*p + *cap, 0, c - *cap);
        *cap = c;
    }
}

static ssize_t md_pwrite(struct sq_disk *d, int h, const void *buf, size_t len, uint64_t off)
{
    struct memdisk *m = (struct memdisk *)d;
    struct md_file *f = &m->files[h];
    if (m->budget >= 0 && (int64_t)len > m->budget) {
        return SQ_ENOSPC;
    }
    if (m->budget >= 0) {
        m->budget -= (int64_t)len;
    }
    md_grow(&f->data, &f->cap, off + len);
    memcpy(f->data + off, buf, len);
    if (off + len > f->size) {
        f->size = off + len;
    }
    f->last_off = off;
    f->last_len = len;
    return (ssize_t)len;
}

static int md_datasync(struct sq_disk *d, int h)
{
    struct memdisk *m = (struct memdisk *)d;
    struct md_file *f = &m->files[h];
    free(f->synced);
    f->synced = malloc(f->size ? f->size : 1);
    memcpy(f->synced, f->data, f->size);
    f->synced_size = f->size;
    m->syncs++;
    return 0;
}

static int md_truncate(struct sq_disk *d, int h, uint64_t len)
{
    struct md_file *f = &((struct memdisk *)d)->files[h];
    if (len < f->size) {
        memset(f->data + len, 0, f->size - len); /* a file grown again reads zeros there */
        f->size = len;
    }
    return 0;
}

static int md_size(struct sq_disk *d, int h, uint64_t *len)
{
    *len = ((struct memdisk *)d)->files[h].size;
    return 0;
}

static int md_syncdir(struct sq_disk *d, const char *path)
{
    (void)d;
    (void)path;
    return 0;
}

static int md_unlink(struct sq_disk *d, const char *path)
{
    struct memdisk *m = (struct memdisk *)d;
    int i = md_find(m, path);
    if (i >= 0) {
        free(m->files[i].data);
        free(m->files[i].synced);
        memset(&m->files[i], 0, sizeof(m->files[i]));
    }
    return 0;
}

static int md_lock(struct sq_disk *d, const char *path)
{
    (void)d;
    (void)path;
    return SQ_ENOTSUP; /* one process: nothing to exclude (the log then keeps no lock handle) */
}

static const struct sq_disk_vtable md_vtable = {
    .mkdirs = md_mkdirs,
    .list = md_list,
    .open = md_open,
    .close = md_close,
    .pread = md_pread,
    .pwrite = md_pwrite,
    .datasync = md_datasync,
    .truncate = md_truncate,
    .size = md_size,
    .syncdir = md_syncdir,
    .unlink = md_unlink,
    .lock = md_lock,
};

static void md_init(struct memdisk *m)
{
    memset(m, 0, sizeof(*m));
    m->base.vt = &md_vtable;
    m->budget = -1;
}

static void md_free(struct memdisk *m)
{
    for (int i = 0; i < MD_FILES; i++) {
        free(m->files[i].data);
        free(m->files[i].synced);
    }
}

/* A power cut: every file goes back to its synced contents; with `tear`, the last write of each
 * file survives in part (its first `tear` bytes), as a disk may leave it. */
static void md_crash(struct memdisk *m, uint64_t tear)
{
    for (int i = 0; i < MD_FILES; i++) {
        struct md_file *f = &m->files[i];
        if (!f->used) {
            continue;
        }
        uint64_t keep_off = f->last_off, keep_len = tear < f->last_len ? tear : f->last_len;
        uint8_t *torn = NULL;
        /* (an overwrite of synced bytes may tear too: the log writes its records over the
         * zeros it synced ahead of them) */
        if (tear > 0 && f->last_len > 0) {
            torn = malloc(keep_len);
            memcpy(torn, f->data + keep_off, keep_len);
        }
        f->size = f->synced_size;
        if (f->synced_size > 0) {
            memcpy(f->data, f->synced, f->synced_size);
        }
        if (torn != NULL) {
            md_grow(&f->data, &f->cap, keep_off + keep_len);
            memcpy(f->data + keep_off, torn, keep_len);
            f->size = keep_off + keep_len > f->size ? keep_off + keep_len : f->size;
            free(torn);
        }
        f->last_len = 0;
    }
}

#endif
