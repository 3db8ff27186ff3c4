/* test_auth.c: the group key file (keyfile.c) and the handshake's seals (fabric_auth.c). */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "keyfile.h"
#include "squall/errors.h"
#include "test.h"
#include "transport/fabric/fabric_auth.h"

static char g_dir[] = "/tmp/sq-test-auth-XXXXXX";

static void write_file(const char *path, const char *text, mode_t mode)
{
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
        CHECK(fchmod(fd, mode) == 0);
        close(fd);
    }
}

static void test_key_files(void)
{
    char path[128], err[700];
    uint8_t key[SQ_GROUP_KEY_BYTES], again[SQ_GROUP_KEY_BYTES];
    snprintf(path, sizeof(path), "%s/group.key", g_dir);

    CHECK_EQ_INT(sq__key_generate(path, err, sizeof(err)), 0);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600 && st.st_size == 65);
    CHECK_EQ_INT(sq__key_load(path, key, err, sizeof(err)), 0);
    CHECK_EQ_INT(sq__key_load(path, again, err, sizeof(err)), 0);
    CHECK(memcmp(key, again, sizeof(key)) == 0);
    /* Never over an existing key. */
    CHECK_EQ_INT(sq__key_generate(path, err, sizeof(err)), SQ_EEXIST);
    CHECK_CONTAINS(err, "never overwritten");
    CHECK_EQ_INT(sq__key_load(path, again, err, sizeof(err)), 0);
    CHECK(memcmp(key, again, sizeof(key)) == 0);
    /* Two keys made apart differ. */
    char other[128];
    snprintf(other, sizeof(other), "%s/other.key", g_dir);
    CHECK_EQ_INT(sq__key_generate(other, err, sizeof(err)), 0);
    CHECK_EQ_INT(sq__key_load(other, again, err, sizeof(err)), 0);
    CHECK(memcmp(key, again, sizeof(key)) != 0);

    /* Exactly 64 hex digits, blanks around them allowed, upper case too. */
    write_file(path, "  00112233445566778899AABBCCDDEEFF00112233445566778899aabbccddeeff \r\n",
               0600);
    CHECK_EQ_INT(sq__key_load(path, key, err, sizeof(err)), 0);
    CHECK(key[0] == 0x00 && key[1] == 0x11 && key[10] == 0xaa && key[31] == 0xff);
    write_file(path, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeef\n", 0600);
    CHECK_EQ_INT(sq__key_load(path, key, err, sizeof(err)), SQ_ECONFIG);
    CHECK_CONTAINS(err, "64 hex digits");
    write_file(path, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff0\n", 0600);
    CHECK_EQ_INT(sq__key_load(path, key, err, sizeof(err)), SQ_ECONFIG);
    write_file(path, "g0112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n", 0600);
    CHECK_EQ_INT(sq__key_load(path, key, err, sizeof(err)), SQ_ECONFIG);
    write_file(path, "0011223344556677 8899aabbccddeeff00112233445566778899aabbccddee\n", 0600);
    CHECK_EQ_INT(sq__key_load(path, key, err, sizeof(err)), SQ_ECONFIG);
    write_file(path, "", 0600);
    CHECK_EQ_INT(sq__key_load(path, key, err, sizeof(err)), SQ_ECONFIG);
    /* Readable by others: refused, with the fix named. */
    write_file(path, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n", 0640);
    CHECK_EQ_INT(sq__key_load(path, key, err, sizeof(err)), SQ_ECONFIG);
    CHECK_CONTAINS(err, "chmod 600");
    /* Missing, a directory, a symbolic link. */
    CHECK_EQ_INT(sq__key_load("/nonexistent/group.key", key, err, sizeof(err)), SQ_ECONFIG);
    CHECK_CONTAINS(err, "No such file");
    CHECK_EQ_INT(sq__key_load(g_dir, key, err, sizeof(err)), SQ_ECONFIG);
    char link[128];
    snprintf(link, sizeof(link), "%s/link.key", g_dir);
    CHECK(symlink(other, link) == 0);
    CHECK_EQ_INT(sq__key_load(link, key, err, sizeof(err)), SQ_ECONFIG);
    CHECK_CONTAINS(err, "symbolic link");
    unlink(link);
    unlink(other);
    unlink(path);
}

/* key_file in [group] is read while the configuration is parsed: its errors carry the line. */
static void test_config_key(void)
{
    char path[128], text[1024], err[800];
    snprintf(path, sizeof(path), "%s/cfg.key", g_dir);
    CHECK_EQ_INT(sq__key_generate(path, err, sizeof(err)), 0);
    struct sq_config *c = calloc(1, sizeof(*c));
    const char *members = "[self]\nid = 0\n[member.0]\nhost = 127.0.0.1\nport = 7400\n";
    snprintf(text, sizeof(text), "[group]\nprovider = tcp\nkey_file = %s\n%s", path, members);
    CHECK_EQ_INT(sq__config_parse_string(c, "t.cfg", text, err, sizeof(err)), 0);
    CHECK(c->has_key);
    uint8_t key[SQ_GROUP_KEY_BYTES];
    CHECK_EQ_INT(sq__key_load(path, key, err, sizeof(err)), 0);
    CHECK(memcmp(key, c->group_key, sizeof(key)) == 0);

    memset(c, 0, sizeof(*c));
    snprintf(text, sizeof(text), "[group]\nprovider = tcp\n%s", members);
    CHECK_EQ_INT(sq__config_parse_string(c, "t.cfg", text, err, sizeof(err)), 0);
    CHECK(!c->has_key);

    memset(c, 0, sizeof(*c));
    snprintf(text, sizeof(text), "[group]\nprovider = tcp\nkey_file = %s/none.key\n%s", g_dir,
             members);
    CHECK(sq__config_parse_string(c, "t.cfg", text, err, sizeof(err)) != 0);
    CHECK_CONTAINS(err, "t.cfg:3: key 'key_file' in [group]: cannot open the group key file");
    free(c);
    unlink(path);
}

static void fill(uint8_t *p, size_t n, uint8_t seed)
{
    for (size_t i = 0; i < n; i++) {
        p[i] = (uint8_t)(seed + 7 * i);
    }
}

struct msg {
    uint8_t aad[40];
    uint8_t secret[16];
    uint8_t tag[SQ_AUTH_TAG_BYTES];
};

static struct msg sealed(const uint8_t *key, uint64_t digest, const uint8_t *nc, const uint8_t *na,
                         enum sq_auth_dir dir)
{
    struct msg m;
    fill(m.aad, sizeof(m.aad), 3);
    fill(m.secret, sizeof(m.secret), 100);
    CHECK_EQ_INT(sq__auth_seal(key, digest, nc, na, dir, m.aad, sizeof(m.aad), m.secret,
                               sizeof(m.secret), m.tag),
                 0);
    return m;
}

static bool opens(const uint8_t *key, uint64_t digest, const uint8_t *nc, const uint8_t *na,
                  enum sq_auth_dir dir, struct msg m)
{
    bool ok = sq__auth_open(key, digest, nc, na, dir, m.aad, sizeof(m.aad), m.secret,
                            sizeof(m.secret), m.tag);
    if (ok) {
        uint8_t plain[16];
        fill(plain, sizeof(plain), 100);
        CHECK(memcmp(plain, m.secret, sizeof(plain)) == 0);
    }
    return ok;
}

static void test_seals(void)
{
    uint8_t key[SQ_GROUP_KEY_BYTES], wrong[SQ_GROUP_KEY_BYTES];
    uint8_t nc[SQ_AUTH_NONCE_BYTES], na[SQ_AUTH_NONCE_BYTES], other[SQ_AUTH_NONCE_BYTES];
    fill(key, sizeof(key), 1);
    memcpy(wrong, key, sizeof(wrong));
    wrong[31] ^= 1;
    CHECK_EQ_INT(sq__auth_nonce(nc), 0);
    CHECK_EQ_INT(sq__auth_nonce(na), 0);
    CHECK_EQ_INT(sq__auth_nonce(other), 0);
    CHECK(memcmp(nc, na, sizeof(nc)) != 0);
    const uint64_t digest = 0x1234567890abcdefull;

    struct msg m = sealed(key, digest, nc, na, SQ_AUTH_CONNECT);
    uint8_t plain[16];
    fill(plain, sizeof(plain), 100);
    CHECK(memcmp(plain, m.secret, sizeof(plain)) != 0); /* the memory key travels encrypted */
    CHECK(opens(key, digest, nc, na, SQ_AUTH_CONNECT, m));
    /* A wrong key, digest, nonce or direction: refused. */
    CHECK(!opens(wrong, digest, nc, na, SQ_AUTH_CONNECT, m));
    CHECK(!opens(key, digest ^ 1, nc, na, SQ_AUTH_CONNECT, m));
    CHECK(!opens(key, digest, other, na, SQ_AUTH_CONNECT, m));
    CHECK(!opens(key, digest, nc, other, SQ_AUTH_CONNECT, m));
    CHECK(!opens(key, digest, na, nc, SQ_AUTH_CONNECT, m));
    CHECK(!opens(key, digest, nc, na, SQ_AUTH_ACCEPT, m)); /* a connect seal is no answer */
    /* Any bit changed in the public fields, the secret or the tag: refused. */
    for (size_t i = 0; i < sizeof(m); i++) {
        struct msg bad = m;
        ((uint8_t *)&bad)[i] ^= 0x20;
        CHECK(!opens(key, digest, nc, na, SQ_AUTH_CONNECT, bad));
    }
    /* The same secret under another challenge looks different (no two sessions share a key). */
    struct msg m2 = sealed(key, digest, nc, other, SQ_AUTH_CONNECT);
    CHECK(memcmp(m.secret, m2.secret, sizeof(m.secret)) != 0);
    CHECK(memcmp(m.tag, m2.tag, sizeof(m.tag)) != 0);
    struct msg back = sealed(key, digest, nc, na, SQ_AUTH_ACCEPT);
    CHECK(opens(key, digest, nc, na, SQ_AUTH_ACCEPT, back));
    CHECK(memcmp(back.secret, m.secret, sizeof(m.secret)) != 0);
}

int main(void)
{
    if (mkdtemp(g_dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    test_key_files();
    test_config_key();
    test_seals();
    rmdir(g_dir);
    return sq_test_done("test_auth");
}
