/* fabric_auth.c: session keys and seals of the members' handshake (see fabric_auth.h). */
#include "fabric_auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <string.h>

#include "le.h"
#include "squall/errors.h"

/* Tells these session keys from any other use of the group key. */
static const char SESSION_LABEL[] = "squall member session v1";

/* HMAC-SHA256(group key, label || digest || nc || na): a key no other session shares, since
 * the acceptor's nonce is fresh for every challenge and the connector's for every answer. */
static bool session_key(const uint8_t key[SQ_GROUP_KEY_BYTES], uint64_t digest,
                        const uint8_t nc[SQ_AUTH_NONCE_BYTES],
                        const uint8_t na[SQ_AUTH_NONCE_BYTES], uint8_t out[32])
{
    uint8_t msg[sizeof(SESSION_LABEL) + 8 + 2 * SQ_AUTH_NONCE_BYTES];
    size_t len = 0;
    memcpy(msg, SESSION_LABEL, sizeof(SESSION_LABEL));
    len += sizeof(SESSION_LABEL);
    sq__st64(msg + len, digest);
    len += 8;
    memcpy(msg + len, nc, SQ_AUTH_NONCE_BYTES);
    len += SQ_AUTH_NONCE_BYTES;
    memcpy(msg + len, na, SQ_AUTH_NONCE_BYTES);
    len += SQ_AUTH_NONCE_BYTES;
    unsigned int out_len = 0;
    bool ok = HMAC(EVP_sha256(), key, SQ_GROUP_KEY_BYTES, msg, len, out, &out_len) != NULL &&
              out_len == 32;
    return ok;
}

int sq__auth_nonce(uint8_t nonce[SQ_AUTH_NONCE_BYTES])
{
    return RAND_bytes(nonce, SQ_AUTH_NONCE_BYTES) == 1 ? 0 : SQ_EIO;
}

/* One ChaCha20-Poly1305 pass; `seal` encrypts and writes the tag, otherwise it decrypts and
 * checks it. The IV is the direction: each session key seals at most one hello each way. */
static bool aead(const uint8_t key[SQ_GROUP_KEY_BYTES], uint64_t digest,
                 const uint8_t nc[SQ_AUTH_NONCE_BYTES], const uint8_t na[SQ_AUTH_NONCE_BYTES],
                 enum sq_auth_dir dir, const void *aad, size_t aad_len, uint8_t *buf, size_t n,
                 uint8_t tag[SQ_AUTH_TAG_BYTES], bool seal)
{
    uint8_t skey[32];
    uint8_t iv[12] = {(uint8_t)dir};
    if (!session_key(key, digest, nc, na, skey)) {
        return false;
    }
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    bool ok = ctx != NULL;
    int len = 0;
    ok = ok && EVP_CipherInit_ex(ctx, EVP_chacha20_poly1305(), NULL, NULL, NULL, seal) == 1;
    ok = ok && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_IVLEN, sizeof(iv), NULL) == 1;
    ok = ok && EVP_CipherInit_ex(ctx, NULL, NULL, skey, iv, seal) == 1;
    ok = ok && EVP_CipherUpdate(ctx, NULL, &len, aad, (int)aad_len) == 1;
    ok = ok && EVP_CipherUpdate(ctx, buf, &len, buf, (int)n) == 1 && (size_t)len == n;
    if (ok && !seal) {
        ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, SQ_AUTH_TAG_BYTES, tag) == 1;
    }
    uint8_t rest[16];
    ok = ok && EVP_CipherFinal_ex(ctx, rest, &len) == 1 && len == 0;
    if (ok && seal) {
        ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, SQ_AUTH_TAG_BYTES, tag) == 1;
    }
    EVP_CIPHER_CTX_free(ctx);
    OPENSSL_cleanse(skey, sizeof(skey));
    return ok;
}

int sq__auth_seal(const uint8_t key[SQ_GROUP_KEY_BYTES], uint64_t digest,
                  const uint8_t nc[SQ_AUTH_NONCE_BYTES], const uint8_t na[SQ_AUTH_NONCE_BYTES],
                  enum sq_auth_dir dir, const void *aad, size_t aad_len, uint8_t *buf, size_t n,
                  uint8_t tag[SQ_AUTH_TAG_BYTES])
{
    return aead(key, digest, nc, na, dir, aad, aad_len, buf, n, tag, true) ? 0 : SQ_EIO;
}

bool sq__auth_open(const uint8_t key[SQ_GROUP_KEY_BYTES], uint64_t digest,
                   const uint8_t nc[SQ_AUTH_NONCE_BYTES], const uint8_t na[SQ_AUTH_NONCE_BYTES],
                   enum sq_auth_dir dir, const void *aad, size_t aad_len, uint8_t *buf, size_t n,
                   const uint8_t tag[SQ_AUTH_TAG_BYTES])
{
    uint8_t t[SQ_AUTH_TAG_BYTES];
    memcpy(t, tag, sizeof(t));
    return aead(key, digest, nc, na, dir, aad, aad_len, buf, n, t, false);
}
