/* The record layer (common/tunnel/record.c, PROTOCOL.md §7): keys and the
 * first records pinned to values computed elsewhere (Python's hmac and
 * cryptography modules), round trips, and every way a record can be
 * changed on the way: each one refused. */
#include "tunnel/record.h"
#include "unit.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t TOKEN[] = "secret";
#define TOKEN_LEN (sizeof(TOKEN) - 1)

static void nonces(uint8_t shim[TUN_NONCE_LEN], uint8_t helper[TUN_NONCE_LEN])
{
	for (int i = 0; i < TUN_NONCE_LEN; i++) {
		shim[i] = (uint8_t)(0xa0 + i);
		helper[i] = (uint8_t)(0xb0 + i);
	}
}

/* A shim and a helper with the same token and nonces. */
static void pair(struct tun_rec *shim, struct tun_rec *helper)
{
	uint8_t sn[TUN_NONCE_LEN], hn[TUN_NONCE_LEN];
	nonces(sn, hn);
	CU_ASSERT_EQUAL_FATAL(tun_rec_init(shim, TUN_ROLE_SHIM, TOKEN, TOKEN_LEN, sn, hn), 0);
	CU_ASSERT_EQUAL_FATAL(tun_rec_init(helper, TUN_ROLE_HELPER, TOKEN, TOKEN_LEN, sn, hn), 0);
}

static const uint8_t HELLO[] = "hello, helper";
#define HELLO_LEN (sizeof(HELLO) - 1)
static const uint8_t REC0[] = {
	0x00, 0x00, 0x00, 0x0d, 0xa5, 0x1d, 0xff, 0xe3, 0xa1, 0x88, 0x16, 0xd5, 0x4c, 0x1d, 0xe0,
	0x24, 0x4a, 0x8c, 0x10, 0x0d, 0xdc, 0xf2, 0xa7, 0x9d, 0x0c, 0x57, 0xa9, 0xbc, 0xf8, 0xb2,
	0x64, 0xc1, 0x82,
};

static void keys_and_first_record_known_answer(void)
{
	static const uint8_t want_s2h[32] = {
		0xb6, 0xa6, 0xf7, 0x22, 0xde, 0x7f, 0x6d, 0xc4, 0xff, 0x41, 0x14, 0xae, 0x03, 0xb2, 0xae, 0x62,
		0x9f, 0x72, 0x87, 0xc6, 0x21, 0x03, 0x08, 0xf0, 0x02, 0x56, 0x39, 0xff, 0x87, 0x93, 0x1e, 0x49,
	};
	static const uint8_t want_h2s[32] = {
		0xa4, 0xe0, 0xc3, 0xcb, 0x24, 0xbd, 0xcf, 0x01, 0x33, 0xe5, 0x19, 0x38, 0x28, 0xe6, 0x13, 0x44,
		0x0b, 0x06, 0x9b, 0x35, 0x6e, 0xdc, 0xa7, 0x5b, 0xb7, 0x84, 0x08, 0xae, 0xea, 0x15, 0xbd, 0x17,
	};
	uint8_t sn[TUN_NONCE_LEN], hn[TUN_NONCE_LEN], s2h[32], h2s[32];
	nonces(sn, hn);
	CU_ASSERT_EQUAL(tun_rec_keys(TOKEN, TOKEN_LEN, sn, hn, s2h, h2s), 0);
	CU_ASSERT_EQUAL(memcmp(s2h, want_s2h, 32), 0);
	CU_ASSERT_EQUAL(memcmp(h2s, want_h2s, 32), 0);

	struct tun_rec shim, helper;
	pair(&shim, &helper);
	uint8_t rec[64], plain[TUN_REC_MAX];
	size_t plain_len = 0;
	CU_ASSERT_EQUAL(tun_rec_seal(&shim.tx, HELLO, HELLO_LEN, rec), (long)sizeof(REC0));
	CU_ASSERT_EQUAL(memcmp(rec, REC0, sizeof(REC0)), 0);
	CU_ASSERT_EQUAL(tun_rec_open(&helper.rx, REC0, sizeof(REC0), plain, &plain_len),
			(long)sizeof(REC0));
	CU_ASSERT_EQUAL(plain_len, HELLO_LEN);
	CU_ASSERT_EQUAL(memcmp(plain, HELLO, HELLO_LEN), 0);
	/* The other direction has its own key: the same record is refused. */
	CU_ASSERT_EQUAL(tun_rec_open(&shim.rx, REC0, sizeof(REC0), plain, &plain_len),
			TUN_E_RECORD_AUTH);
	tun_rec_free(&shim);
	tun_rec_free(&helper);
}

static void round_trip_in_place_and_sizes(void)
{
	struct tun_rec shim, helper;
	pair(&shim, &helper);
	static uint8_t msg[TUN_REC_MAX], rec[TUN_REC_MAX + TUN_REC_OVERHEAD], plain[TUN_REC_MAX];
	for (size_t i = 0; i < sizeof(msg); i++)
		msg[i] = (uint8_t)(i * 7 + 3);
	static const size_t sizes[] = { 1, 2, 15, 16, 17, 1000, TUN_REC_MAX - 1, TUN_REC_MAX };
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		size_t n = sizes[i], got = 0;
		/* In place, as link.c may: the plaintext already sits after the header. */
		memcpy(rec + TUN_REC_HDR, msg, n);
		struct tun_rec_dir *tx = i % 2 ? &shim.tx : &helper.tx;
		struct tun_rec_dir *rx = i % 2 ? &helper.rx : &shim.rx;
		CU_ASSERT_EQUAL(tun_rec_seal(tx, rec + TUN_REC_HDR, n, rec), (long)(n + TUN_REC_OVERHEAD));
		if (n >= 16)
			CU_ASSERT_NOT_EQUAL(memcmp(rec + TUN_REC_HDR, msg, 16), 0);
		/* Every prefix asks for more. */
		for (size_t k = 0; k < n + TUN_REC_OVERHEAD; k += 1 + k / 3)
			CU_ASSERT_EQUAL(tun_rec_open(rx, rec, k, plain, &got), 0);
		CU_ASSERT_EQUAL(tun_rec_open(rx, rec, n + TUN_REC_OVERHEAD, plain, &got),
				(long)(n + TUN_REC_OVERHEAD));
		CU_ASSERT_EQUAL(got, n);
		CU_ASSERT_EQUAL(memcmp(plain, msg, n), 0);
	}
	CU_ASSERT_EQUAL(tun_rec_seal(&shim.tx, msg, 0, rec), -EINVAL);
	CU_ASSERT_EQUAL(tun_rec_seal(&shim.tx, msg, TUN_REC_MAX + 1, rec), -EINVAL);
	tun_rec_free(&shim);
	tun_rec_free(&helper);
}

static void impossible_lengths_refused_at_once(void)
{
	struct tun_rec shim, helper;
	pair(&shim, &helper);
	uint8_t plain[TUN_REC_MAX];
	size_t got;
	static const uint8_t zero[4] = { 0, 0, 0, 0 }, big[4] = { 0, 0, 0x40, 0x01 },
			     huge[4] = { 0xff, 0xff, 0xff, 0xff };
	CU_ASSERT_EQUAL(tun_rec_open(&helper.rx, zero, 4, plain, &got), TUN_E_RECORD_LEN);
	CU_ASSERT_EQUAL(tun_rec_open(&helper.rx, big, 4, plain, &got), TUN_E_RECORD_LEN);
	CU_ASSERT_EQUAL(tun_rec_open(&helper.rx, huge, 4, plain, &got), TUN_E_RECORD_LEN);
	tun_rec_free(&shim);
	tun_rec_free(&helper);
}

/* Every single-bit change anywhere in a record is refused: the length (in
 * the associated data), the ciphertext and the tag. Trailing bytes stand in
 * for the records after it, so that a longer length is not "wait for more". */
static void every_bit_flip_refused(void)
{
	struct tun_rec shim, helper;
	pair(&shim, &helper);
	static uint8_t buf[sizeof(REC0) + TUN_REC_MAX + TUN_REC_OVERHEAD], plain[TUN_REC_MAX];
	memset(buf, 0x55, sizeof(buf));
	size_t got;
	for (size_t bit = 0; bit < 8 * sizeof(REC0); bit++) {
		memcpy(buf, REC0, sizeof(REC0));
		buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		helper.rx.seq = 0;
		long rc = tun_rec_open(&helper.rx, buf, sizeof(buf), plain, &got);
		CU_ASSERT_TRUE(rc == TUN_E_RECORD_AUTH || rc == TUN_E_RECORD_LEN);
	}
	tun_rec_free(&shim);
	tun_rec_free(&helper);
}

static void replay_reorder_drop_refused(void)
{
	struct tun_rec shim, helper;
	pair(&shim, &helper);
	uint8_t r[3][64], plain[TUN_REC_MAX];
	long len[3];
	size_t got;
	for (int i = 0; i < 3; i++)
		len[i] = tun_rec_seal(&shim.tx, HELLO, HELLO_LEN, r[i]);
	/* Reordered: record 1 first. */
	CU_ASSERT_EQUAL(tun_rec_open(&helper.rx, r[1], (size_t)len[1], plain, &got), TUN_E_RECORD_AUTH);
	helper.rx.seq = 0;
	/* Replayed: record 0 twice. */
	CU_ASSERT_EQUAL(tun_rec_open(&helper.rx, r[0], (size_t)len[0], plain, &got), len[0]);
	CU_ASSERT_EQUAL(tun_rec_open(&helper.rx, r[0], (size_t)len[0], plain, &got), TUN_E_RECORD_AUTH);
	/* Dropped: record 1 never arrives. */
	CU_ASSERT_EQUAL(tun_rec_open(&helper.rx, r[2], (size_t)len[2], plain, &got), TUN_E_RECORD_AUTH);
	CU_ASSERT_EQUAL(tun_rec_open(&helper.rx, r[1], (size_t)len[1], plain, &got), len[1]);
	CU_ASSERT_EQUAL(tun_rec_open(&helper.rx, r[2], (size_t)len[2], plain, &got), len[2]);
	/* Another connection (other nonces): none of these records opens. */
	uint8_t sn[TUN_NONCE_LEN], hn[TUN_NONCE_LEN];
	struct tun_rec other;
	nonces(sn, hn);
	hn[0] ^= 1;
	CU_ASSERT_EQUAL_FATAL(tun_rec_init(&other, TUN_ROLE_HELPER, TOKEN, TOKEN_LEN, sn, hn), 0);
	CU_ASSERT_EQUAL(tun_rec_open(&other.rx, r[0], (size_t)len[0], plain, &got), TUN_E_RECORD_AUTH);
	tun_rec_free(&other);
	tun_rec_free(&shim);
	tun_rec_free(&helper);
}

static void rekey_known_answer_and_agreement(void)
{
	static const uint8_t want_rec1[] = {
		0x00, 0x00, 0x00, 0x0d, 0x82, 0xcf, 0x50, 0x13, 0xb6, 0x0b, 0x74, 0x5b, 0x4d, 0x74, 0x02,
		0x64, 0x67, 0xd8, 0xde, 0xd8, 0x00, 0xfa, 0x5d, 0xd9, 0x0a, 0x85, 0x5c, 0x34, 0x08, 0xc2,
		0x2f, 0xfb, 0x84,
	};
	struct tun_rec shim, helper;
	pair(&shim, &helper);
	uint8_t rec[64], plain[TUN_REC_MAX];
	size_t got;
	/* A new key after every record: record 1 under the first rekeyed key. */
	shim.tx.rekey_every = 1;
	CU_ASSERT_EQUAL(tun_rec_seal(&shim.tx, HELLO, HELLO_LEN, rec), (long)sizeof(REC0));
	CU_ASSERT_EQUAL(memcmp(rec, REC0, sizeof(REC0)), 0);
	CU_ASSERT_EQUAL(tun_rec_seal(&shim.tx, HELLO, HELLO_LEN, rec), (long)sizeof(want_rec1));
	CU_ASSERT_EQUAL(memcmp(rec, want_rec1, sizeof(want_rec1)), 0);
	tun_rec_free(&shim);
	tun_rec_free(&helper);

	/* Both sides agree across several key changes; a receiver that does
	 * not change keys is refused at the first record under a new one. */
	pair(&shim, &helper);
	struct tun_rec stale;
	uint8_t sn[TUN_NONCE_LEN], hn[TUN_NONCE_LEN];
	nonces(sn, hn);
	CU_ASSERT_EQUAL_FATAL(tun_rec_init(&stale, TUN_ROLE_SHIM, TOKEN, TOKEN_LEN, sn, hn), 0);
	helper.tx.rekey_every = shim.rx.rekey_every = 3;
	for (int i = 0; i < 10; i++) {
		long n = tun_rec_seal(&helper.tx, HELLO, HELLO_LEN, rec);
		CU_ASSERT_EQUAL(tun_rec_open(&shim.rx, rec, (size_t)n, plain, &got), n);
		long s = tun_rec_open(&stale.rx, rec, (size_t)n, plain, &got);
		CU_ASSERT_EQUAL(s, i < 3 ? n : TUN_E_RECORD_AUTH);
		if (s < 0)
			stale.rx.seq = (uint64_t)i + 1; /* keep its numbering in step */
	}
	tun_rec_free(&stale);
	tun_rec_free(&shim);
	tun_rec_free(&helper);
}

int unit_record(void)
{
	static const struct unit_test tests[] = {
		{ "keys and first record: known answers", keys_and_first_record_known_answer },
		{ "round trips, in place, every size, prefixes wait", round_trip_in_place_and_sizes },
		{ "impossible lengths refused before the body", impossible_lengths_refused_at_once },
		{ "every single-bit change refused", every_bit_flip_refused },
		{ "replayed, reordered, dropped records refused", replay_reorder_drop_refused },
		{ "rekey: known answer, both sides agree", rekey_known_answer_and_agreement },
		{ NULL, NULL },
	};
	return unit_add_suite("record", tests);
}
