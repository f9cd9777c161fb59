/* Known-answer tests for crypto.h, run against every backend: the POSIX one
 * in the unit suite (test_crypto.c), CNG under wine (tests/tools/crypto_kat.c,
 * make integration-windows). Vectors: RFC 4231 (HMAC-SHA256), RFC 5869
 * (HKDF-SHA256) and the GCM specification's test case 16 (AES-256-GCM with
 * associated data). Returns NULL when every vector passes, or the name of
 * the first that fails. */
#ifndef MUXSHIM_CRYPTO_KAT_H
#define MUXSHIM_CRYPTO_KAT_H

#include "crypto.h"

#include <errno.h>
#include <string.h>

static size_t kat_hex(const char *hex, uint8_t *out)
{
	size_t n = 0;
	for (; hex[0] && hex[1]; hex += 2) {
		unsigned v = 0;
		for (int i = 0; i < 2; i++) {
			char c = hex[i];
			v = v << 4 | (unsigned)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
		}
		out[n++] = (uint8_t)v;
	}
	return n;
}

static int kat_hmac(const char *key_hex, size_t key_repeat, const char *msg, const char *want_hex)
{
	uint8_t key[256], want[32], out[32];
	size_t kn = kat_hex(key_hex, key);
	for (size_t i = kn; i < key_repeat; i++)
		key[i] = key[0];
	if (key_repeat)
		kn = key_repeat;
	kat_hex(want_hex, want);
	/* In two parts, so that a backend's concatenation is tested too. */
	size_t half = strlen(msg) / 2;
	struct crypto_part parts[2] = { { msg, half }, { msg + half, strlen(msg) - half } };
	return crypto_hmac_sha256(key, kn, parts, 2, out) == 0 && memcmp(out, want, 32) == 0;
}

static int kat_hkdf(const char *ikm_hex, const char *salt_hex, const char *info_hex,
		    const char *prk_hex, const char *okm_hex)
{
	uint8_t ikm[128], salt[128], info[128], prk[32], want_prk[32], okm[128], want_okm[128];
	size_t in = kat_hex(ikm_hex, ikm), sn = kat_hex(salt_hex, salt), nn = kat_hex(info_hex, info);
	kat_hex(prk_hex, want_prk);
	size_t on = kat_hex(okm_hex, want_okm);
	return crypto_hkdf_extract(salt, sn, ikm, in, prk) == 0 && memcmp(prk, want_prk, 32) == 0 &&
	       crypto_hkdf_expand(prk, info, nn, okm, on) == 0 && memcmp(okm, want_okm, on) == 0;
}

static const char *kat_gcm(void)
{
	uint8_t key[32], iv[12], ad[20], pt[60], want_ct[60], want_tag[16], buf[60], tag[16];
	kat_hex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308", key);
	kat_hex("cafebabefacedbaddecaf888", iv);
	kat_hex("feedfacedeadbeeffeedfacedeadbeefabaddad2", ad);
	kat_hex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
		"1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39", pt);
	kat_hex("522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
		"8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662", want_ct);
	kat_hex("76fc6ece0f4e1768cddf8853bb2d551b", want_tag);
	struct crypto_aead *a;
	if (crypto_aead_new(key, &a) < 0)
		return "AES-256-GCM key";
	const char *fail = NULL;
	/* In place, as the record layer seals. */
	memcpy(buf, pt, sizeof(pt));
	if (crypto_aead_seal(a, iv, ad, sizeof(ad), buf, sizeof(buf), buf, tag) < 0 ||
	    memcmp(buf, want_ct, sizeof(buf)) || memcmp(tag, want_tag, sizeof(tag)))
		fail = "AES-256-GCM seal (test case 16)";
	else if (crypto_aead_open(a, iv, ad, sizeof(ad), buf, sizeof(buf), buf, tag) < 0 ||
		 memcmp(buf, pt, sizeof(pt)))
		fail = "AES-256-GCM open (test case 16)";
	else {
		/* One flipped bit each in the tag, the data and the associated
		 * data: all refused. */
		memcpy(buf, want_ct, sizeof(buf));
		tag[15] ^= 1;
		if (crypto_aead_open(a, iv, ad, sizeof(ad), buf, sizeof(buf), buf, tag) != -EBADMSG)
			fail = "AES-256-GCM open accepted a wrong tag";
		tag[15] ^= 1;
		memcpy(buf, want_ct, sizeof(buf));
		buf[7] ^= 0x40;
		if (!fail && crypto_aead_open(a, iv, ad, sizeof(ad), buf, sizeof(buf), buf, tag) != -EBADMSG)
			fail = "AES-256-GCM open accepted changed data";
		memcpy(buf, want_ct, sizeof(buf));
		ad[0] ^= 1;
		if (!fail && crypto_aead_open(a, iv, ad, sizeof(ad), buf, sizeof(buf), buf, tag) != -EBADMSG)
			fail = "AES-256-GCM open accepted changed associated data";
	}
	crypto_aead_free(a);
	return fail;
}

static const char *crypto_kat(void)
{
	if (!kat_hmac("0b", 20, "Hi There",
		      "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"))
		return "HMAC-SHA256 RFC 4231 case 1";
	if (!kat_hmac("4a656665", 0, "what do ya want for nothing?",
		      "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"))
		return "HMAC-SHA256 RFC 4231 case 2";
	if (!kat_hmac("aa", 131, "Test Using Larger Than Block-Size Key - Hash Key First",
		      "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"))
		return "HMAC-SHA256 RFC 4231 case 6 (key longer than a block)";
	if (!kat_hkdf("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "000102030405060708090a0b0c",
		      "f0f1f2f3f4f5f6f7f8f9",
		      "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
		      "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"))
		return "HKDF-SHA256 RFC 5869 case 1";
	if (!kat_hkdf("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
		      "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
		      "404142434445464748494a4b4c4d4e4f",
		      "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
		      "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
		      "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
		      "b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecf"
		      "d0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeef"
		      "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
		      "06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244",
		      "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
		      "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
		      "cc30c58179ec3e87c14c01d5c1f3434f1d87"))
		return "HKDF-SHA256 RFC 5869 case 2 (long inputs)";
	if (!kat_hkdf("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "", "",
		      "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
		      "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"))
		return "HKDF-SHA256 RFC 5869 case 3 (no salt, no info)";
	return kat_gcm();
}

#endif
