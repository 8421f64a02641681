/* sha256: SHA-256 (FIPS 180-4), streaming and over a whole file.
 *
 * Used to identify model files (a sidecar records the hash of the model it was
 * planned for) and corpora. No dependency: the hash is small and fixed, and the
 * sidecar's provenance must not depend on which crypto library a machine has.
 *
 *   struct sha256_ctx c;
 *   sha256_init(&c);
 *   sha256_update(&c, data, n);     any number of times, any lengths
 *   sha256_final(&c, digest);       digest: 32 bytes, big-endian words as FIPS prints them
 */
#ifndef HEARTH_SHA256_H
#define HEARTH_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_DIGEST_SIZE 32
#define SHA256_HEX_SIZE 65 /* 64 lowercase hex digits + NUL */

struct sha256_ctx {
    uint32_t h[8];      /* chaining state */
    uint64_t n_bytes;   /* message bytes hashed so far */
    uint8_t buf[64];    /* pending partial block */
    size_t n_buf;       /* bytes in buf, 0..63 */
};

void sha256_init(struct sha256_ctx *c);
void sha256_update(struct sha256_ctx *c, const void *data, size_t n);
/* Pads, writes the digest, and leaves c unusable until the next sha256_init. */
void sha256_final(struct sha256_ctx *c, uint8_t out[SHA256_DIGEST_SIZE]);

/* One-shot digest of a buffer. */
void sha256_buf(const void *data, size_t n, uint8_t out[SHA256_DIGEST_SIZE]);

/* Digest of a file's whole contents, read in 1 MiB chunks. Returns 0, or -1 with
 * err naming the path and the failing call (open/read) and errno's text. */
int sha256_file(const char *path, uint8_t out[SHA256_DIGEST_SIZE], char *err, size_t errlen);

/* Lowercase hex of a digest into hex (64 digits + NUL). Returns hex. */
char *sha256_hex(const uint8_t digest[SHA256_DIGEST_SIZE], char hex[SHA256_HEX_SIZE]);

#endif
