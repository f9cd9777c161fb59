/* The one narrow header behind which the cryptographic library lives, like
 * plat.h for the OS: HMAC-SHA256, HKDF-SHA256 (RFC 5869) and AES-256-GCM.
 * No primitive is implemented here: crypto_nettle.c calls GNU Nettle (Linux,
 * macOS), crypto_bcrypt.c Windows' own CNG (bcrypt.dll). Functions that act
 * return 0 or a negative errno; none reads a file or logs. */
#ifndef MUXSHIM_CRYPTO_H
#define MUXSHIM_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CRYPTO_SHA256_LEN 32
#define CRYPTO_AEAD_KEY_LEN 32   /* AES-256 */
#define CRYPTO_AEAD_NONCE_LEN 12
#define CRYPTO_AEAD_TAG_LEN 16

/* The library behind this header, for --version and log lines. */
const char *crypto_backend(void);

/* One piece of a message that is MACed as the concatenation of its parts. */
struct crypto_part {
	const void *p;
	size_t n;
};

/* HMAC-SHA256(key, parts[0] || parts[1] || ...). */
int crypto_hmac_sha256(const void *key, size_t key_len, const struct crypto_part *parts,
		       size_t nparts, uint8_t out[CRYPTO_SHA256_LEN]);

/* HKDF-Extract(salt, ikm) -> prk, and HKDF-Expand(prk, info, out_len <= 255 * 32). */
int crypto_hkdf_extract(const void *salt, size_t salt_len, const void *ikm, size_t ikm_len,
			uint8_t prk[CRYPTO_SHA256_LEN]);
int crypto_hkdf_expand(const uint8_t prk[CRYPTO_SHA256_LEN], const void *info, size_t info_len,
		       uint8_t *out, size_t out_len);

/* An AES-256-GCM key, expanded once; used from one thread. */
struct crypto_aead;
int crypto_aead_new(const uint8_t key[CRYPTO_AEAD_KEY_LEN], struct crypto_aead **out);
/* Wipes and frees; NULL is fine. */
void crypto_aead_free(struct crypto_aead *a);
/* Encrypts n bytes of in into out (the same buffer or not overlapping at
 * all) and writes the tag; ad is authenticated, not encrypted. */
int crypto_aead_seal(struct crypto_aead *a, const uint8_t nonce[CRYPTO_AEAD_NONCE_LEN],
		     const uint8_t *ad, size_t ad_len, const uint8_t *in, size_t n, uint8_t *out,
		     uint8_t tag[CRYPTO_AEAD_TAG_LEN]);
/* The reverse: 0, or -EBADMSG when the tag does not match, and then out
 * holds nothing usable (the caller discards it). */
int crypto_aead_open(struct crypto_aead *a, const uint8_t nonce[CRYPTO_AEAD_NONCE_LEN],
		     const uint8_t *ad, size_t ad_len, const uint8_t *in, size_t n, uint8_t *out,
		     const uint8_t tag[CRYPTO_AEAD_TAG_LEN]);

/* True when the n bytes are equal; the time taken depends on n only. */
bool crypto_equal(const void *a, const void *b, size_t n);
/* Zeroes memory in a way the compiler may not drop. */
void crypto_wipe(void *p, size_t n);

#endif
