/* keyfile.h: the group key file that members authenticate each other with ([group] key_file):
 * 32 random bytes written as 64 hexadecimal digits on one line, readable by its owner only. */
#ifndef SQ_KEYFILE_H
#define SQ_KEYFILE_H

#include <stddef.h>
#include <stdint.h>

#define SQ_GROUP_KEY_BYTES 32

/* Reads the key at `path` into `key`. Refuses (SQ_ECONFIG, with the reason in `err`) a file
 * that is missing, not a regular file, readable or writable by its group or others (like ssh
 * with a private key), or that is not exactly 64 hex digits (a final newline and surrounding
 * blanks are allowed). Returns 0 or a negative SQ_E* code. */
int sq__key_load(const char *path, uint8_t key[SQ_GROUP_KEY_BYTES], char *err, size_t err_size);

/* Writes a new random key to `path`, created with mode 0600; never replaces an existing file
 * (SQ_EEXIST). Returns 0 or a negative SQ_E* code with the reason in `err`. */
int sq__key_generate(const char *path, char *err, size_t err_size);

#endif
