/* keyfile.c: reading and writing the group key file (see keyfile.h). */
#include "keyfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "squall/errors.h"

/* The file holds the hex digits, a newline, and perhaps blanks: anything longer is not a key. */
#define KEY_FILE_MAX 256

static int hex_value(char ch)
{
    if (ch >= '0' && ch <= '9') {
        return ch - '0';
    }
    if (ch >= 'a' && ch <= 'f') {
        return ch - 'a' + 10;
    }
    if (ch >= 'A' && ch <= 'F') {
        return ch - 'A' + 10;
    }
    return -1;
}

static bool blank(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

int sq__key_load(const char *path, uint8_t key[SQ_GROUP_KEY_BYTES], char *err, size_t err_size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        snprintf(err, err_size, "cannot open the group key file %s: %s%s", path, strerror(errno),
                 errno == ELOOP ? " (a symbolic link: name the file itself)" : "");
        return SQ_ECONFIG;
    }
    struct stat st;
    int rc = SQ_ECONFIG;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, err_size, "the group key file %s is not a regular file", path);
        goto out;
    }
    if ((st.st_mode & 077) != 0) {
        snprintf(err, err_size,
                 "the group key file %s is accessible by others (mode %03o): it must be "
                 "readable by its owner only (chmod 600 %s)",
                 path, (unsigned)(st.st_mode & 0777), path);
        goto out;
    }
    char buf[KEY_FILE_MAX + 1];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0) {
        snprintf(err, err_size, "cannot read the group key file %s: %s", path, strerror(errno));
        rc = SQ_EIO;
        goto out;
    }
    if (n > KEY_FILE_MAX) {
        snprintf(err, err_size,
                 "the group key file %s is too long: it holds %d hex digits on one line "
                 "(squalld --gen-key FILE writes one)",
                 path, 2 * SQ_GROUP_KEY_BYTES);
        goto out;
    }
    size_t lo = 0, hi = (size_t)n;
    while (lo < hi && blank(buf[lo])) {
        lo++;
    }
    while (hi > lo && blank(buf[hi - 1])) {
        hi--;
    }
    bool ok = hi - lo == 2 * SQ_GROUP_KEY_BYTES;
    for (size_t i = 0; ok && i < SQ_GROUP_KEY_BYTES; i++) {
        int a = hex_value(buf[lo + 2 * i]), b = hex_value(buf[lo + 2 * i + 1]);
        ok = a >= 0 && b >= 0;
        if (ok) {
            key[i] = (uint8_t)((unsigned)a << 4 | (unsigned)b);
        }
    }
    explicit_bzero(buf, sizeof(buf));
    if (!ok) {
        explicit_bzero(key, SQ_GROUP_KEY_BYTES);
        snprintf(err, err_size,
                 "the group key file %s does not hold a key: it must be %d hex digits on one "
                 "line (squalld --gen-key FILE writes one)",
                 path, 2 * SQ_GROUP_KEY_BYTES);
        goto out;
    }
    rc = 0;
out:
    close(fd);
    return rc;
}

int sq__key_generate(const char *path, char *err, size_t err_size)
{
    uint8_t key[SQ_GROUP_KEY_BYTES];
    if (getrandom(key, sizeof(key), 0) != (ssize_t)sizeof(key)) {
        snprintf(err, err_size, "cannot get random bytes for a key: %s", strerror(errno));
        return SQ_EIO;
    }
    char text[2 * SQ_GROUP_KEY_BYTES + 2];
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof(key); i++) {
        text[2 * i] = digits[key[i] >> 4];
        text[2 * i + 1] = digits[key[i] & 0xf];
    }
    text[2 * SQ_GROUP_KEY_BYTES] = '\n';
    text[2 * SQ_GROUP_KEY_BYTES + 1] = '\0';
    explicit_bzero(key, sizeof(key));
    int rc = 0;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        rc = errno == EEXIST ? SQ_EEXIST : SQ_EIO;
        snprintf(err, err_size, "cannot create the key file %s: %s%s", path, strerror(errno),
                 errno == EEXIST ? " (a key is never overwritten: remove it first)" : "");
        goto out;
    }
    /* The mode asked for may have been narrowed by the umask, never widened: set it exactly. */
    size_t len = 2 * SQ_GROUP_KEY_BYTES + 1;
    if (fchmod(fd, 0600) != 0 || write(fd, text, len) != (ssize_t)len || fsync(fd) != 0) {
        snprintf(err, err_size, "cannot write the key file %s: %s", path, strerror(errno));
        rc = SQ_EIO;
        close(fd);
        unlink(path);
        goto out;
    }
    if (close(fd) != 0) {
        snprintf(err, err_size, "cannot write the key file %s: %s", path, strerror(errno));
        rc = SQ_EIO;
        unlink(path);
    }
out:
    explicit_bzero(text, sizeof(text));
    return rc;
}
