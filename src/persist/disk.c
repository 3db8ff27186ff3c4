/* disk.c: the POSIX disk, and CRC-32C. */
#include "persist/disk.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "squall.h"

/* What this process wrote and synced through the POSIX disk (a squalld runs one member). */
static atomic_uint_fast64_t g_bytes_written, g_syncs;

void sq__disk_posix_stats(uint64_t *bytes_written, uint64_t *syncs)
{
    *bytes_written = atomic_load_explicit(&g_bytes_written, memory_order_relaxed);
    *syncs = atomic_load_explicit(&g_syncs, memory_order_relaxed);
}

static int err_of(int e)
{
    return e == ENOSPC || e == EDQUOT ? SQ_ENOSPC : SQ_EIO;
}

static int px_mkdirs(struct sq_disk *d, const char *path)
{
    (void)d;
    char tmp[1024];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(tmp)) {
        return SQ_EINVAL;
    }
    memcpy(tmp, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (tmp[i] == '/' || tmp[i] == '\0') {
            char c = tmp[i];
            tmp[i] = '\0';
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST) {
                return err_of(errno);
            }
            tmp[i] = c;
        }
    }
    return 0;
}

static int px_list(struct sq_disk *d, const char *path, void (*fn)(void *, const char *), void *arg)
{
    (void)d;
    DIR *dir = opendir(path);
    if (dir == NULL) {
        return err_of(errno);
    }
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            fn(arg, e->d_name);
        }
    }
    closedir(dir);
    return 0;
}

static int px_open(struct sq_disk *d, const char *path, bool create)
{
    (void)d;
    int fd = open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0644);
    return fd >= 0 ? fd : err_of(errno);
}

static int px_close(struct sq_disk *d, int h)
{
    (void)d;
    return close(h) == 0 ? 0 : err_of(errno);
}

static ssize_t px_pread(struct sq_disk *d, int h, void *buf, size_t len, uint64_t off)
{
    (void)d;
    size_t got = 0;
    while (got < len) {
        ssize_t r = pread(h, (char *)buf + got, len - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            return err_of(errno);
        }
        if (r == 0) {
            break;
        }
        got += (size_t)r;
    }
    return (ssize_t)got;
}

static ssize_t px_pwrite(struct sq_disk *d, int h, const void *buf, size_t len, uint64_t off)
{
    (void)d;
    size_t put = 0;
    while (put < len) {
        ssize_t r = pwrite(h, (const char *)buf + put, len - put, (off_t)(off + put));
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            return err_of(errno);
        }
        put += (size_t)r;
    }
    atomic_fetch_add_explicit(&g_bytes_written, put, memory_order_relaxed);
    return (ssize_t)put;
}

static int px_datasync(struct sq_disk *d, int h)
{
    (void)d;
    atomic_fetch_add_explicit(&g_syncs, 1, memory_order_relaxed);
    return fdatasync(h) == 0 ? 0 : err_of(errno);
}

static int px_truncate(struct sq_disk *d, int h, uint64_t len)
{
    (void)d;
    return ftruncate(h, (off_t)len) == 0 ? 0 : err_of(errno);
}

static int px_size(struct sq_disk *d, int h, uint64_t *len)
{
    (void)d;
    struct stat st;
    if (fstat(h, &st) != 0) {
        return err_of(errno);
    }
    *len = (uint64_t)st.st_size;
    return 0;
}

static int px_syncdir(struct sq_disk *d, const char *path)
{
    (void)d;
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return err_of(errno);
    }
    int rc = fsync(fd) == 0 ? 0 : err_of(errno);
    close(fd);
    return rc;
}

static int px_unlink(struct sq_disk *d, const char *path)
{
    (void)d;
    return unlink(path) == 0 || errno == ENOENT ? 0 : err_of(errno);
}

static int px_lock(struct sq_disk *d, const char *path)
{
    (void)d;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        return err_of(errno);
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(fd);
        return e == EWOULDBLOCK ? SQ_EBUSY : err_of(e);
    }
    return fd;
}

static const struct sq_disk_vtable posix_vtable = {
    .mkdirs = px_mkdirs,
    .list = px_list,
    .open = px_open,
    .close = px_close,
    .pread = px_pread,
    .pwrite = px_pwrite,
    .datasync = px_datasync,
    .truncate = px_truncate,
    .size = px_size,
    .syncdir = px_syncdir,
    .unlink = px_unlink,
    .lock = px_lock,
};

static struct sq_disk posix_disk = {.vt = &posix_vtable};

struct sq_disk *sq__disk_posix(void)
{
    return &posix_disk;
}

/* CRC-32C, reflected polynomial 0x82F63B78: the SSE4.2 crc32 instruction, 8 bytes at a time,
 * where the CPU has it (x86-64 since 2008), else one table lookup per byte. Both give the same
 * values (sq__crc32c_table is the reference the unit test compares with). */
static uint32_t crc_table[256];
static int crc_ready;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) {
            c = (c & 1u) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        }
        crc_table[i] = c;
    }
    __atomic_store_n(&crc_ready, 1, __ATOMIC_RELEASE);
}

uint32_t sq__crc32c_table(uint32_t crc, const void *data, size_t len)
{
    if (!__atomic_load_n(&crc_ready, __ATOMIC_ACQUIRE)) {
        crc_init(); /* idempotent: racing initializers write the same table */
    }
    const uint8_t *p = data;
    crc = ~crc;
    for (size_t i = 0; i < len; i++) {
        crc = crc_table[(crc ^ p[i]) & 0xffu] ^ (crc >> 8);
    }
    return ~crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("sse4.2"))) static uint32_t crc32c_sse42(uint32_t crc, const void *data,
                                                               size_t len)
{
    const uint8_t *p = data;
    uint64_t c = ~crc;
    for (; len >= 8; p += 8, len -= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = __builtin_ia32_crc32di(c, w);
    }
    uint32_t c32 = (uint32_t)c;
    for (; len > 0; p++, len--) {
        c32 = __builtin_ia32_crc32qi(c32, *p);
    }
    return ~c32;
}

uint32_t sq__crc32c(uint32_t crc, const void *data, size_t len)
{
    static int have = -1; /* racing first calls find the same answer */
    int h = __atomic_load_n(&have, __ATOMIC_RELAXED);
    if (h < 0) {
        __builtin_cpu_init();
        h = __builtin_cpu_supports("sse4.2") ? 1 : 0;
        __atomic_store_n(&have, h, __ATOMIC_RELAXED);
    }
    return h ? crc32c_sse42(crc, data, len) : sq__crc32c_table(crc, data, len);
}
#else
uint32_t sq__crc32c(uint32_t crc, const void *data, size_t len)
{
    return sq__crc32c_table(crc, data, len);
}
#endif
