#include "sha256.h"
#include "unit.h"

#include <stdio.h>
#include <string.h>

/* Digests are compared as hex so a failure shows both values readably. */
static void to_hex(const uint8_t *d, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static void check_sha256(const void *msg, size_t n, const char *want)
{
	struct sha256 c;
	uint8_t d[SHA256_DIGEST];
	char hex[2 * SHA256_DIGEST + 1];
	sha256_init(&c);
	sha256_update(&c, msg, n);
	sha256_final(&c, d);
	to_hex(d, sizeof d, hex);
	CU_ASSERT_STRING_EQUAL(hex, want);
}

static void nist_vectors(void)
{
	/* FIPS 180-4 examples: empty, one block, and 448 bits, which leaves no
	 * room for the length and forces a second padding block. */
	check_sha256("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	check_sha256(NULL, 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	check_sha256("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
	CU_ASSERT_EQUAL(strlen(m), 56);
	check_sha256(m, strlen(m), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

static void million_a_streamed(void)
{
	static uint8_t a[1000];
	struct sha256 c;
	uint8_t d[SHA256_DIGEST];
	char hex[2 * SHA256_DIGEST + 1];
	memset(a, 'a', sizeof a);
	sha256_init(&c);
	/* Odd chunk sizes so partial blocks are topped up at every offset. */
	static const size_t chunk[] = { 1, 7, 63, 64, 65, 127, 997 };
	size_t left = 1000000, i = 0;
	while (left) {
		size_t k = chunk[i++ % (sizeof chunk / sizeof chunk[0])];
		if (k > left)
			k = left;
		sha256_update(&c, a, k);
		left -= k;
	}
	sha256_final(&c, d);
	to_hex(d, sizeof d, hex);
	CU_ASSERT_STRING_EQUAL(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

static void padding_boundaries(void)
{
	/* Lengths on either side of the 55/56 and 64 byte padding edges. */
	static const struct { size_t n; const char *want; } v[] = {
		{ 55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318" },
		{ 63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34" },
		{ 64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb" },
		{ 65, "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0" },
		{ 119, "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb" },
		{ 128, "6836cf13bac400e9105071cd6af47084dfacad4e5e302c94bfed24e013afb73e" },
	};
	uint8_t a[128];
	memset(a, 'a', sizeof a);
	for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
		check_sha256(a, v[i].n, v[i].want);
}

static void bytewise_matches_oneshot(void)
{
	uint8_t msg[200];
	for (size_t i = 0; i < sizeof msg; i++)
		msg[i] = (uint8_t)(i * 131 + 7);
	for (size_t n = 0; n <= sizeof msg; n++) {
		struct sha256 one, bytes, split;
		uint8_t d1[SHA256_DIGEST], d2[SHA256_DIGEST], d3[SHA256_DIGEST];
		sha256_init(&one);
		sha256_update(&one, msg, n);
		sha256_final(&one, d1);
		sha256_init(&bytes);
		for (size_t i = 0; i < n; i++)
			sha256_update(&bytes, msg + i, 1);
		sha256_final(&bytes, d2);
		/* Also a two-part split with an empty update in between. */
		sha256_init(&split);
		sha256_update(&split, msg, n / 3);
		sha256_update(&split, msg, 0);
		sha256_update(&split, msg + n / 3, n - n / 3);
		sha256_final(&split, d3);
		CU_ASSERT_EQUAL(memcmp(d1, d2, sizeof d1), 0);
		CU_ASSERT_EQUAL(memcmp(d1, d3, sizeof d1), 0);
	}
}

static void check_hmac(const void *key, size_t keylen, const void *msg, size_t msglen,
		       size_t outlen, const char *want)
{
	uint8_t d[SHA256_DIGEST];
	char hex[2 * SHA256_DIGEST + 1];
	hmac_sha256(key, keylen, msg, msglen, d);
	to_hex(d, outlen, hex);
	CU_ASSERT_STRING_EQUAL(hex, want);
}

static void rfc4231_vectors(void)
{
	uint8_t k[131], m[50];

	memset(k, 0x0b, 20);
	check_hmac(k, 20, "Hi There", 8, 32,
		   "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");

	check_hmac("Jefe", 4, "what do ya want for nothing?", 28, 32,
		   "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");

	memset(k, 0xaa, 20);
	memset(m, 0xdd, 50);
	check_hmac(k, 20, m, 50, 32,
		   "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");

	for (int i = 0; i < 25; i++)
		k[i] = (uint8_t)(i + 1);
	memset(m, 0xcd, 50);
	check_hmac(k, 25, m, 50, 32,
		   "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");

	/* Case 5: the RFC gives only the first 128 bits. */
	memset(k, 0x0c, 20);
	check_hmac(k, 20, "Test With Truncation", 20, 16, "a3b6167473100ee06e0c796c2955552b");

	/* Cases 6 and 7: a 131-byte key, longer than a block, is hashed first. */
	memset(k, 0xaa, 131);
	check_hmac(k, 131, "Test Using Larger Than Block-Size Key - Hash Key First", 54, 32,
		   "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
	const char *m7 = "This is a test using a larger than block-size key and a larger "
			 "than block-size data. The key needs to be hashed before being "
			 "used by the HMAC algorithm.";
	check_hmac(k, 131, m7, strlen(m7), 32,
		   "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
}

static void hmac_key_length_edges(void)
{
	/* 64 bytes is used as is, 65 is hashed: both sides of the RFC 2104 rule. */
	static const struct { size_t n; const char *want; } v[] = {
		{ 63, "d79e5be3935a07c90e990507c8e2817eb68147076026e69d5486af74f6cad68e" },
		{ 64, "92977c4d6eb2543e5f3d6e7acf90591bba52a5f7304e5cbd88468d9d01b3225a" },
		{ 65, "2a12ef3aa0c2100bc0435eeb8d6ba92e4faf1d7ce33d1832392ee8b5eed3e4ce" },
	};
	uint8_t k[65];
	for (size_t i = 0; i < sizeof k; i++)
		k[i] = (uint8_t)(i * 37 + 1);
	for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
		check_hmac(k, v[i].n, "muxshim", 7, 32, v[i].want);
}

static void hmac_streaming_matches_oneshot(void)
{
	uint8_t k[131], msg[300], d1[SHA256_DIGEST], d2[SHA256_DIGEST];
	memset(k, 0x5a, sizeof k);
	for (size_t i = 0; i < sizeof msg; i++)
		msg[i] = (uint8_t)(i ^ 0xa5);
	hmac_sha256(k, sizeof k, msg, sizeof msg, d1);
	struct hmac_sha256 c;
	hmac_sha256_init(&c, k, sizeof k);
	for (size_t off = 0, step = 1; off < sizeof msg; off += step, step += 13) {
		size_t n = step < sizeof msg - off ? step : sizeof msg - off;
		hmac_sha256_update(&c, msg + off, n);
	}
	hmac_sha256_final(&c, d2);
	CU_ASSERT_EQUAL(memcmp(d1, d2, sizeof d1), 0);
	/* final wiped the context: no keyed state left behind */
	static const struct hmac_sha256 zero;
	CU_ASSERT_EQUAL(memcmp(&c, &zero, sizeof c), 0);
}

static void ct_equal_cases(void)
{
	uint8_t a[32], b[32];
	for (size_t i = 0; i < sizeof a; i++)
		a[i] = b[i] = (uint8_t)(i * 3);
	CU_ASSERT_TRUE(ct_equal(a, b, sizeof a));
	CU_ASSERT_TRUE(ct_equal(a, b, 0));
	CU_ASSERT_TRUE(ct_equal(NULL, NULL, 0));
	b[31] ^= 0x01; /* differs only in the last byte, one bit */
	CU_ASSERT_FALSE(ct_equal(a, b, sizeof a));
	CU_ASSERT_TRUE(ct_equal(a, b, sizeof a - 1));
	b[31] = a[31];
	b[0] ^= 0x80; /* only the first byte, top bit */
	CU_ASSERT_FALSE(ct_equal(a, b, sizeof a));
	CU_ASSERT_FALSE(ct_equal(a, b, 1));
	memset(b, 0xff, sizeof b); /* every byte */
	CU_ASSERT_FALSE(ct_equal(a, b, sizeof a));
}

int unit_sha256(void)
{
	static const struct unit_test t[] = {
		{ "FIPS 180-4 vectors", nist_vectors },
		{ "one million 'a' in odd chunks", million_a_streamed },
		{ "padding boundaries", padding_boundaries },
		{ "1-byte and split streaming match one-shot, 0..200", bytewise_matches_oneshot },
		{ "RFC 4231 HMAC-SHA256 cases 1-7", rfc4231_vectors },
		{ "HMAC key lengths 63/64/65", hmac_key_length_edges },
		{ "HMAC streaming matches one-shot and wipes", hmac_streaming_matches_oneshot },
		{ "ct_equal", ct_equal_cases },
		{ NULL, NULL },
	};
	return unit_add_suite("sha256", t);
}
