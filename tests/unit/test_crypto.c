/* crypto.h through the POSIX backend (Nettle): the shared known answers
 * (crypto_kat.h, also run against CNG under wine) and the header's edges. */
#include "crypto_kat.h"
#include "unit.h"

static void known_answers(void)
{
	const char *fail = crypto_kat();
	if (fail)
		CU_FAIL(fail);
}

static void hmac_parts_are_concatenated(void)
{
	static const char msg[] = "the quick brown fox jumps over the lazy dog";
	uint8_t one[32], split[32], empty_parts[32];
	struct crypto_part whole = { msg, sizeof(msg) - 1 };
	CU_ASSERT_EQUAL(crypto_hmac_sha256("k", 1, &whole, 1, one), 0);
	struct crypto_part parts[4] = { { msg, 3 }, { msg + 3, 0 }, { msg + 3, 10 },
					{ msg + 13, sizeof(msg) - 14 } };
	CU_ASSERT_EQUAL(crypto_hmac_sha256("k", 1, parts, 4, split), 0);
	CU_ASSERT_EQUAL(memcmp(one, split, 32), 0);
	/* No parts at all is the MAC of the empty message. */
	struct crypto_part none = { NULL, 0 };
	CU_ASSERT_EQUAL(crypto_hmac_sha256("k", 1, NULL, 0, empty_parts), 0);
	CU_ASSERT_EQUAL(crypto_hmac_sha256("k", 1, &none, 1, one), 0);
	CU_ASSERT_EQUAL(memcmp(one, empty_parts, 32), 0);
}

static void hkdf_expand_length_limit(void)
{
	uint8_t prk[32] = { 1 }, out[255 * 32 + 1];
	CU_ASSERT_EQUAL(crypto_hkdf_expand(prk, "i", 1, out, 255 * 32), 0);
	CU_ASSERT_EQUAL(crypto_hkdf_expand(prk, "i", 1, out, 255 * 32 + 1), -EINVAL);
	/* A prefix of a longer output is the shorter output. */
	uint8_t a[40], b[7];
	CU_ASSERT_EQUAL(crypto_hkdf_expand(prk, "i", 1, a, sizeof(a)), 0);
	CU_ASSERT_EQUAL(crypto_hkdf_expand(prk, "i", 1, b, sizeof(b)), 0);
	CU_ASSERT_EQUAL(memcmp(a, b, sizeof(b)), 0);
}

static void aead_empty_and_separate_buffers(void)
{
	uint8_t key[32] = { 0 }, nonce[12] = { 0 }, tag[16], want[16];
	struct crypto_aead *a;
	CU_ASSERT_EQUAL_FATAL(crypto_aead_new(key, &a), 0);
	/* GCM spec test case 13 (AES-256): empty text, zero key and nonce. */
	kat_hex("530f8afbc74536b9a963b4f1c4cb738b", want);
	uint8_t none[1];
	CU_ASSERT_EQUAL(crypto_aead_seal(a, nonce, NULL, 0, none, 0, none, tag), 0);
	CU_ASSERT_EQUAL(memcmp(tag, want, 16), 0);
	/* Test case 14: one zero block, out of place. */
	uint8_t pt[16] = { 0 }, ct[16], back[16], want_ct[16];
	kat_hex("cea7403d4d606b6e074ec5d3baf39d18", want_ct);
	kat_hex("d0d1c8a799996bf0265b98b5d48ab919", want);
	CU_ASSERT_EQUAL(crypto_aead_seal(a, nonce, NULL, 0, pt, 16, ct, tag), 0);
	CU_ASSERT_EQUAL(memcmp(ct, want_ct, 16), 0);
	CU_ASSERT_EQUAL(memcmp(tag, want, 16), 0);
	CU_ASSERT_EQUAL(crypto_aead_open(a, nonce, NULL, 0, ct, 16, back, tag), 0);
	CU_ASSERT_EQUAL(memcmp(back, pt, 16), 0);
	/* Another nonce: refused. */
	nonce[11] = 1;
	CU_ASSERT_EQUAL(crypto_aead_open(a, nonce, NULL, 0, ct, 16, back, tag), -EBADMSG);
	crypto_aead_free(a);
	crypto_aead_free(NULL);
}

static void equal_and_wipe(void)
{
	uint8_t a[32], b[32];
	for (size_t i = 0; i < sizeof a; i++)
		a[i] = b[i] = (uint8_t)(i * 3);
	CU_ASSERT_TRUE(crypto_equal(a, b, sizeof a));
	CU_ASSERT_TRUE(crypto_equal(a, b, 0));
	b[31] ^= 0x01; /* only the last byte, one bit */
	CU_ASSERT_FALSE(crypto_equal(a, b, sizeof a));
	CU_ASSERT_TRUE(crypto_equal(a, b, sizeof a - 1));
	b[31] = a[31];
	b[0] ^= 0x80; /* only the first byte, top bit */
	CU_ASSERT_FALSE(crypto_equal(a, b, sizeof a));
	crypto_wipe(a, sizeof a);
	static const uint8_t zero[32];
	CU_ASSERT_EQUAL(memcmp(a, zero, sizeof a), 0);
	CU_ASSERT_PTR_NOT_NULL(crypto_backend());
}

int unit_crypto(void)
{
	static const struct unit_test tests[] = {
		{ "known answers: RFC 4231, RFC 5869, GCM test case 16", known_answers },
		{ "HMAC over parts is HMAC over their concatenation", hmac_parts_are_concatenated },
		{ "HKDF-Expand length limit and prefixes", hkdf_expand_length_limit },
		{ "AEAD: empty text, out of place, wrong nonce", aead_empty_and_separate_buffers },
		{ "constant-time equal and wipe", equal_and_wipe },
		{ NULL, NULL },
	};
	return unit_add_suite("crypto", tests);
}
