/* SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104) for the tunnel's
 * challenge-response authentication. Pure and dependency-free: no
 * allocation, no I/O, no global state. */
#ifndef MUXSHIM_SHA256_H
#define MUXSHIM_SHA256_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SHA256_BLOCK 64
#define SHA256_DIGEST 32

struct sha256 {
	uint32_t h[8];               /* chaining state */
	uint64_t len;                /* message bytes so far; len % 64 are in buf */
	uint8_t buf[SHA256_BLOCK];   /* partial block awaiting more input */
};

void sha256_init(struct sha256 *c);
void sha256_update(struct sha256 *c, const void *p, size_t n);
/* Writes the digest and wipes the context; init again before reuse. */
void sha256_final(struct sha256 *c, uint8_t out[SHA256_DIGEST]);

/* Both hashes are pre-keyed at init, so the key is not kept anywhere. */
struct hmac_sha256 {
	struct sha256 inner;   /* H((K ^ ipad) || ...) */
	struct sha256 outer;   /* H((K ^ opad) || ...) */
};

/* Keys longer than 64 bytes are hashed first (RFC 2104 section 2). */
void hmac_sha256_init(struct hmac_sha256 *c, const void *key, size_t keylen);
void hmac_sha256_update(struct hmac_sha256 *c, const void *p, size_t n);
/* Writes the MAC and wipes the context; init again before reuse. */
void hmac_sha256_final(struct hmac_sha256 *c, uint8_t out[SHA256_DIGEST]);

void hmac_sha256(const void *key, size_t keylen, const void *msg, size_t msglen,
		 uint8_t out[SHA256_DIGEST]);

/* True when the n bytes are equal. Time depends on n only, never on the
 * contents, so comparing a received MAC leaks nothing about the expected one. */
bool ct_equal(const void *a, const void *b, size_t n);

#endif
