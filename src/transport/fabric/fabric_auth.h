/* fabric_auth.h: the cryptography of the members' connection handshake (fabric_connect.c): a
 * session key from the group key and both sides' nonces, and the seal (ChaCha20-Poly1305, from
 * OpenSSL's libcrypto) that proves a hello came from a holder of the group key and hides its
 * memory key from anyone else. */
#ifndef SQ_FABRIC_AUTH_H
#define SQ_FABRIC_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyfile.h"

#define SQ_AUTH_NONCE_BYTES 16
#define SQ_AUTH_TAG_BYTES 16

/* Which hello a seal is on: the connector's (answering the acceptor's challenge) or the
 * acceptor's answer. Each session key seals one of each, never two of one kind. */
enum sq_auth_dir { SQ_AUTH_CONNECT = 1, SQ_AUTH_ACCEPT = 2 };

/* Fills `nonce` with fresh random bytes; returns 0 or SQ_EIO. */
int sq__auth_nonce(uint8_t nonce[SQ_AUTH_NONCE_BYTES]);

/* Encrypts the `n` bytes at `buf` in place and writes the tag that authenticates them and the
 * `aad_len` bytes at `aad` (the hello's public fields) under the session key of (key, digest,
 * connector's nonce `nc`, acceptor's nonce `na`) and direction `dir`. Returns 0 or SQ_EIO (the
 * library failed). `digest` is the sealer's configuration digest (the hello carries it too). */
int sq__auth_seal(const uint8_t key[SQ_GROUP_KEY_BYTES], uint64_t digest,
                  const uint8_t nc[SQ_AUTH_NONCE_BYTES], const uint8_t na[SQ_AUTH_NONCE_BYTES],
                  enum sq_auth_dir dir, const void *aad, size_t aad_len, uint8_t *buf, size_t n,
                  uint8_t tag[SQ_AUTH_TAG_BYTES]);

/* The reverse: true, with `buf` decrypted in place, only if `tag` is right for these bytes,
 * `aad`, the key, both nonces and the direction; false otherwise (`buf` then holds nothing
 * usable). */
bool sq__auth_open(const uint8_t key[SQ_GROUP_KEY_BYTES], uint64_t digest,
                   const uint8_t nc[SQ_AUTH_NONCE_BYTES], const uint8_t na[SQ_AUTH_NONCE_BYTES],
                   enum sq_auth_dir dir, const void *aad, size_t aad_len, uint8_t *buf, size_t n,
                   const uint8_t tag[SQ_AUTH_TAG_BYTES]);

#endif
