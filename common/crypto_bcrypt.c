/* crypto.h on Windows' own CNG (bcrypt.dll, already linked for random
 * numbers): nothing to ship. CNG has no HKDF before Windows 10 (and wine
 * has none at all), so HKDF is composed from CNG's HMAC as RFC 5869 says. */
#include "crypto.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <windows.h>
#include <bcrypt.h>

#ifndef STATUS_AUTH_TAG_MISMATCH
#define STATUS_AUTH_TAG_MISMATCH ((NTSTATUS)0xC000A002L)
#endif

struct crypto_aead {
	BCRYPT_KEY_HANDLE key;
};

/* The two algorithm providers, opened once per process. */
static BCRYPT_ALG_HANDLE hmac_alg, aes_alg;
static INIT_ONCE providers_once = INIT_ONCE_STATIC_INIT;
static bool providers_ok;

static BOOL CALLBACK open_providers(PINIT_ONCE once, PVOID param, PVOID *ctx)
{
	(void)once, (void)param, (void)ctx;
	if (BCryptOpenAlgorithmProvider(&hmac_alg, BCRYPT_SHA256_ALGORITHM, NULL,
					BCRYPT_ALG_HANDLE_HMAC_FLAG) != 0)
		return TRUE;
	if (BCryptOpenAlgorithmProvider(&aes_alg, BCRYPT_AES_ALGORITHM, NULL, 0) != 0)
		return TRUE;
	if (BCryptSetProperty(aes_alg, BCRYPT_CHAINING_MODE, (PUCHAR)BCRYPT_CHAIN_MODE_GCM,
			      sizeof(BCRYPT_CHAIN_MODE_GCM), 0) != 0)
		return TRUE;
	providers_ok = true;
	return TRUE;
}

static int providers(void)
{
	InitOnceExecuteOnce(&providers_once, open_providers, NULL, NULL);
	return providers_ok ? 0 : -ENOSYS;
}

const char *crypto_backend(void)
{
	return "Windows CNG (bcrypt)";
}

int crypto_hmac_sha256(const void *key, size_t key_len, const struct crypto_part *parts,
		       size_t nparts, uint8_t out[CRYPTO_SHA256_LEN])
{
	static const uint8_t zero_key[CRYPTO_SHA256_LEN];
	int rc = providers();
	if (rc < 0)
		return rc;
	/* An empty HMAC key is the same key as zeros (it is padded with them);
	 * CNG wants a non-empty one. */
	if (key_len == 0) {
		key = zero_key;
		key_len = sizeof(zero_key);
	}
	if (key_len > ULONG_MAX)
		return -EINVAL;
	BCRYPT_HASH_HANDLE h;
	if (BCryptCreateHash(hmac_alg, &h, NULL, 0, (PUCHAR)key, (ULONG)key_len, 0) != 0)
		return -EIO;
	rc = 0;
	for (size_t i = 0; i < nparts && rc == 0; i++) {
		if (parts[i].n > ULONG_MAX ||
		    (parts[i].n && BCryptHashData(h, (PUCHAR)parts[i].p, (ULONG)parts[i].n, 0) != 0))
			rc = -EIO;
	}
	if (rc == 0 && BCryptFinishHash(h, out, CRYPTO_SHA256_LEN, 0) != 0)
		rc = -EIO;
	BCryptDestroyHash(h);
	return rc;
}

int crypto_hkdf_extract(const void *salt, size_t salt_len, const void *ikm, size_t ikm_len,
			uint8_t prk[CRYPTO_SHA256_LEN])
{
	struct crypto_part part = { ikm, ikm_len };
	return crypto_hmac_sha256(salt, salt_len, &part, 1, prk);
}

/* T(i) = HMAC(prk, T(i-1) || info || i), out = T(1) || T(2) || ... */
int crypto_hkdf_expand(const uint8_t prk[CRYPTO_SHA256_LEN], const void *info, size_t info_len,
		       uint8_t *out, size_t out_len)
{
	if (out_len > 255 * CRYPTO_SHA256_LEN)
		return -EINVAL;
	uint8_t t[CRYPTO_SHA256_LEN];
	size_t t_len = 0;
	int rc = 0;
	for (uint8_t i = 1; out_len > 0 && rc == 0; i++) {
		struct crypto_part parts[3] = { { t, t_len }, { info, info_len }, { &i, 1 } };
		rc = crypto_hmac_sha256(prk, CRYPTO_SHA256_LEN, parts, 3, t);
		t_len = CRYPTO_SHA256_LEN;
		size_t n = out_len < t_len ? out_len : t_len;
		memcpy(out, t, n);
		out += n;
		out_len -= n;
	}
	crypto_wipe(t, sizeof(t));
	return rc;
}

int crypto_aead_new(const uint8_t key[CRYPTO_AEAD_KEY_LEN], struct crypto_aead **out)
{
	int rc = providers();
	if (rc < 0)
		return rc;
	struct crypto_aead *a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	if (BCryptGenerateSymmetricKey(aes_alg, &a->key, NULL, 0, (PUCHAR)key, CRYPTO_AEAD_KEY_LEN,
				       0) != 0) {
		free(a);
		return -EIO;
	}
	*out = a;
	return 0;
}

void crypto_aead_free(struct crypto_aead *a)
{
	if (!a)
		return;
	BCryptDestroyKey(a->key);
	free(a);
}

static void mode_info(BCRYPT_AUTHENTICATED_CIPHER_MODE_INFO *info, const uint8_t *nonce,
		      const uint8_t *ad, size_t ad_len, const uint8_t *tag)
{
	BCRYPT_INIT_AUTH_MODE_INFO(*info);
	info->pbNonce = (PUCHAR)nonce;
	info->cbNonce = CRYPTO_AEAD_NONCE_LEN;
	info->pbAuthData = (PUCHAR)ad;
	info->cbAuthData = (ULONG)ad_len;
	info->pbTag = (PUCHAR)tag;
	info->cbTag = CRYPTO_AEAD_TAG_LEN;
}

int crypto_aead_seal(struct crypto_aead *a, const uint8_t nonce[CRYPTO_AEAD_NONCE_LEN],
		     const uint8_t *ad, size_t ad_len, const uint8_t *in, size_t n, uint8_t *out,
		     uint8_t tag[CRYPTO_AEAD_TAG_LEN])
{
	if (n > ULONG_MAX || ad_len > ULONG_MAX)
		return -EINVAL;
	BCRYPT_AUTHENTICATED_CIPHER_MODE_INFO info;
	mode_info(&info, nonce, ad, ad_len, tag);
	ULONG done = 0;
	NTSTATUS s = BCryptEncrypt(a->key, (PUCHAR)in, (ULONG)n, &info, NULL, 0, out, (ULONG)n,
				   &done, 0);
	return s == 0 && done == n ? 0 : -EIO;
}

int crypto_aead_open(struct crypto_aead *a, const uint8_t nonce[CRYPTO_AEAD_NONCE_LEN],
		     const uint8_t *ad, size_t ad_len, const uint8_t *in, size_t n, uint8_t *out,
		     const uint8_t tag[CRYPTO_AEAD_TAG_LEN])
{
	if (n > ULONG_MAX || ad_len > ULONG_MAX)
		return -EINVAL;
	BCRYPT_AUTHENTICATED_CIPHER_MODE_INFO info;
	mode_info(&info, nonce, ad, ad_len, tag);
	ULONG done = 0;
	NTSTATUS s = BCryptDecrypt(a->key, (PUCHAR)in, (ULONG)n, &info, NULL, 0, out, (ULONG)n,
				   &done, 0);
	if (s == STATUS_AUTH_TAG_MISMATCH)
		return -EBADMSG;
	return s == 0 && done == n ? 0 : -EIO;
}

bool crypto_equal(const void *a, const void *b, size_t n)
{
	const volatile uint8_t *x = a, *y = b;
	uint8_t d = 0;
	for (size_t i = 0; i < n; i++)
		d |= x[i] ^ y[i];
	return d == 0;
}

void crypto_wipe(void *p, size_t n)
{
	SecureZeroMemory(p, n);
}
