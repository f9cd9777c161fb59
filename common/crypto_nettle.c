/* crypto.h on GNU Nettle (Linux, macOS): see the README's dependency table
 * for why Nettle. Nettle reads no files and makes no system calls of its
 * own (its CPU feature detection runs at load time, before the sandbox),
 * so the seccomp allow-list needs nothing for it. */
#include "crypto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nettle/gcm.h>
#include <nettle/hkdf.h>
#include <nettle/hmac.h>
#include <nettle/memops.h>
#include <nettle/version.h>

struct crypto_aead {
	struct gcm_aes256_ctx gcm;
};

const char *crypto_backend(void)
{
	static char name[32];
	if (!name[0])
		snprintf(name, sizeof(name), "Nettle %d.%d", nettle_version_major(),
			 nettle_version_minor());
	return name;
}

int crypto_hmac_sha256(const void *key, size_t key_len, const struct crypto_part *parts,
		       size_t nparts, uint8_t out[CRYPTO_SHA256_LEN])
{
	struct hmac_sha256_ctx c;
	hmac_sha256_set_key(&c, key_len, key);
	for (size_t i = 0; i < nparts; i++)
		hmac_sha256_update(&c, parts[i].n, parts[i].p);
	hmac_sha256_digest(&c, CRYPTO_SHA256_LEN, out);
	crypto_wipe(&c, sizeof(c));
	return 0;
}

int crypto_hkdf_extract(const void *salt, size_t salt_len, const void *ikm, size_t ikm_len,
			uint8_t prk[CRYPTO_SHA256_LEN])
{
	struct hmac_sha256_ctx c;
	hmac_sha256_set_key(&c, salt_len, salt);
	hkdf_extract(&c, (nettle_hash_update_func *)hmac_sha256_update,
		     (nettle_hash_digest_func *)hmac_sha256_digest, SHA256_DIGEST_SIZE, ikm_len, ikm,
		     prk);
	crypto_wipe(&c, sizeof(c));
	return 0;
}

int crypto_hkdf_expand(const uint8_t prk[CRYPTO_SHA256_LEN], const void *info, size_t info_len,
		       uint8_t *out, size_t out_len)
{
	if (out_len > 255 * CRYPTO_SHA256_LEN)
		return -EINVAL;
	struct hmac_sha256_ctx c;
	hmac_sha256_set_key(&c, CRYPTO_SHA256_LEN, prk);
	hkdf_expand(&c, (nettle_hash_update_func *)hmac_sha256_update,
		    (nettle_hash_digest_func *)hmac_sha256_digest, SHA256_DIGEST_SIZE, info_len, info,
		    out_len, out);
	crypto_wipe(&c, sizeof(c));
	return 0;
}

int crypto_aead_new(const uint8_t key[CRYPTO_AEAD_KEY_LEN], struct crypto_aead **out)
{
	struct crypto_aead *a = malloc(sizeof(*a));
	if (!a)
		return -ENOMEM;
	gcm_aes256_set_key(&a->gcm, key);
	*out = a;
	return 0;
}

void crypto_aead_free(struct crypto_aead *a)
{
	if (!a)
		return;
	crypto_wipe(a, sizeof(*a));
	free(a);
}

int crypto_aead_seal(struct crypto_aead *a, const uint8_t nonce[CRYPTO_AEAD_NONCE_LEN],
		     const uint8_t *ad, size_t ad_len, const uint8_t *in, size_t n, uint8_t *out,
		     uint8_t tag[CRYPTO_AEAD_TAG_LEN])
{
	gcm_aes256_set_iv(&a->gcm, CRYPTO_AEAD_NONCE_LEN, nonce);
	gcm_aes256_update(&a->gcm, ad_len, ad);
	gcm_aes256_encrypt(&a->gcm, n, out, in);
	gcm_aes256_digest(&a->gcm, CRYPTO_AEAD_TAG_LEN, tag);
	return 0;
}

int crypto_aead_open(struct crypto_aead *a, const uint8_t nonce[CRYPTO_AEAD_NONCE_LEN],
		     const uint8_t *ad, size_t ad_len, const uint8_t *in, size_t n, uint8_t *out,
		     const uint8_t tag[CRYPTO_AEAD_TAG_LEN])
{
	uint8_t want[CRYPTO_AEAD_TAG_LEN];
	gcm_aes256_set_iv(&a->gcm, CRYPTO_AEAD_NONCE_LEN, nonce);
	gcm_aes256_update(&a->gcm, ad_len, ad);
	gcm_aes256_decrypt(&a->gcm, n, out, in);
	gcm_aes256_digest(&a->gcm, CRYPTO_AEAD_TAG_LEN, want);
	return memeql_sec(want, tag, CRYPTO_AEAD_TAG_LEN) ? 0 : -EBADMSG;
}

bool crypto_equal(const void *a, const void *b, size_t n)
{
	return memeql_sec(a, b, n) != 0;
}

void crypto_wipe(void *p, size_t n)
{
	/* A call through a volatile pointer cannot be dropped as a dead store. */
	static void *(*const volatile set)(void *, int, size_t) = memset;
	set(p, 0, n);
}
