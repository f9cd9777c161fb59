#include "tunnel/record.h"

#include <errno.h>
#include <string.h>

static const char KEY_LABEL_S2H[] = "muxshim-tunnel-v2 shim to helper";
static const char KEY_LABEL_H2S[] = "muxshim-tunnel-v2 helper to shim";
static const char REKEY_LABEL[] = "muxshim-tunnel-v2 rekey";

int tun_rec_keys(const uint8_t *token, size_t token_len,
		 const uint8_t shim_nonce[TUN_NONCE_LEN], const uint8_t helper_nonce[TUN_NONCE_LEN],
		 uint8_t shim_to_helper[CRYPTO_AEAD_KEY_LEN],
		 uint8_t helper_to_shim[CRYPTO_AEAD_KEY_LEN])
{
	uint8_t salt[2 * TUN_NONCE_LEN], prk[CRYPTO_SHA256_LEN];
	memcpy(salt, shim_nonce, TUN_NONCE_LEN);
	memcpy(salt + TUN_NONCE_LEN, helper_nonce, TUN_NONCE_LEN);
	int rc = crypto_hkdf_extract(salt, sizeof(salt), token, token_len, prk);
	if (rc == 0)
		rc = crypto_hkdf_expand(prk, KEY_LABEL_S2H, sizeof(KEY_LABEL_S2H) - 1, shim_to_helper,
					CRYPTO_AEAD_KEY_LEN);
	if (rc == 0)
		rc = crypto_hkdf_expand(prk, KEY_LABEL_H2S, sizeof(KEY_LABEL_H2S) - 1, helper_to_shim,
					CRYPTO_AEAD_KEY_LEN);
	crypto_wipe(prk, sizeof(prk));
	return rc;
}

static int dir_set_key(struct tun_rec_dir *d, const uint8_t key[CRYPTO_AEAD_KEY_LEN])
{
	struct crypto_aead *a;
	int rc = crypto_aead_new(key, &a);
	if (rc < 0)
		return rc;
	crypto_aead_free(d->aead);
	d->aead = a;
	if (d->key != key)
		memcpy(d->key, key, CRYPTO_AEAD_KEY_LEN);
	return 0;
}

int tun_rec_init(struct tun_rec *r, enum tun_role role, const uint8_t *token, size_t token_len,
		 const uint8_t shim_nonce[TUN_NONCE_LEN],
		 const uint8_t helper_nonce[TUN_NONCE_LEN])
{
	uint8_t s2h[CRYPTO_AEAD_KEY_LEN], h2s[CRYPTO_AEAD_KEY_LEN];
	memset(r, 0, sizeof(*r));
	r->tx.rekey_every = r->rx.rekey_every = TUN_REC_REKEY;
	int rc = tun_rec_keys(token, token_len, shim_nonce, helper_nonce, s2h, h2s);
	bool shim = role == TUN_ROLE_SHIM;
	if (rc == 0)
		rc = dir_set_key(&r->tx, shim ? s2h : h2s);
	if (rc == 0)
		rc = dir_set_key(&r->rx, shim ? h2s : s2h);
	crypto_wipe(s2h, sizeof(s2h));
	crypto_wipe(h2s, sizeof(h2s));
	if (rc < 0)
		tun_rec_free(r);
	return rc;
}

void tun_rec_free(struct tun_rec *r)
{
	crypto_aead_free(r->tx.aead);
	crypto_aead_free(r->rx.aead);
	crypto_wipe(r, sizeof(*r));
}

static void nonce_of(uint64_t seq, uint8_t nonce[CRYPTO_AEAD_NONCE_LEN])
{
	memset(nonce, 0, 4);
	for (int i = 0; i < 8; i++)
		nonce[4 + i] = (uint8_t)(seq >> (56 - 8 * i));
}

/* One record done: count it, and move to the next key every rekey_every
 * records. The last record number is never used, so a nonce never repeats
 * (2^64 records: no tunnel gets there). */
static int dir_advance(struct tun_rec_dir *d)
{
	d->seq++;
	if (d->seq % d->rekey_every)
		return 0;
	uint8_t next[CRYPTO_AEAD_KEY_LEN];
	int rc = crypto_hkdf_expand(d->key, REKEY_LABEL, sizeof(REKEY_LABEL) - 1, next, sizeof(next));
	if (rc == 0)
		rc = dir_set_key(d, next);
	crypto_wipe(next, sizeof(next));
	return rc;
}

long tun_rec_seal(struct tun_rec_dir *d, const uint8_t *in, size_t n, uint8_t *out)
{
	if (n == 0 || n > TUN_REC_MAX)
		return -EINVAL;
	if (d->seq == UINT64_MAX)
		return -ERANGE;
	uint8_t nonce[CRYPTO_AEAD_NONCE_LEN];
	nonce_of(d->seq, nonce);
	out[0] = (uint8_t)(n >> 24);
	out[1] = (uint8_t)(n >> 16);
	out[2] = (uint8_t)(n >> 8);
	out[3] = (uint8_t)n;
	int rc = crypto_aead_seal(d->aead, nonce, out, TUN_REC_HDR, in, n, out + TUN_REC_HDR,
				  out + TUN_REC_HDR + n);
	if (rc == 0)
		rc = dir_advance(d);
	return rc < 0 ? rc : (long)(n + TUN_REC_OVERHEAD);
}

long tun_rec_span(const uint8_t *p, size_t n)
{
	if (n < TUN_REC_HDR)
		return 0;
	uint32_t len = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
	/* Checked before waiting for the rest: a corrupted length must not
	 * leave the tunnel waiting for gigabytes that never come. */
	if (len == 0 || len > TUN_REC_MAX)
		return TUN_E_RECORD_LEN;
	return (long)len + TUN_REC_OVERHEAD;
}

long tun_rec_open(struct tun_rec_dir *d, const uint8_t *p, size_t n, uint8_t *out,
		  size_t *plain_len)
{
	long span = tun_rec_span(p, n);
	if (span <= 0 || n < (size_t)span)
		return span < 0 ? span : 0;
	size_t len = (size_t)span - TUN_REC_OVERHEAD;
	if (d->seq == UINT64_MAX)
		return -ERANGE;
	uint8_t nonce[CRYPTO_AEAD_NONCE_LEN];
	nonce_of(d->seq, nonce);
	int rc = crypto_aead_open(d->aead, nonce, p, TUN_REC_HDR, p + TUN_REC_HDR, len, out,
				  p + TUN_REC_HDR + len);
	if (rc == -EBADMSG)
		return TUN_E_RECORD_AUTH;
	if (rc == 0)
		rc = dir_advance(d);
	if (rc < 0)
		return rc;
	*plain_len = len;
	return (long)(len + TUN_REC_OVERHEAD);
}
