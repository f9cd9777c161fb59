#include "tunnel/auth.h"
#include "unit.h"

#include <string.h>

static const uint8_t TOKEN[] = "secret";
#define TOKEN_LEN (sizeof(TOKEN) - 1)

/* A shim and a helper that exchanged hellos. */
static void pair(struct tun_hello *shim, struct tun_hello *helper)
{
	*shim = (struct tun_hello){ .version = TUN_VERSION, .role = TUN_ROLE_SHIM,
				    .flags = TUN_HELLO_AUTH, .max_frame = 16384, .window = 65536,
				    .max_streams = 16 };
	*helper = *shim;
	helper->role = TUN_ROLE_HELPER;
	for (int i = 0; i < TUN_NONCE_LEN; i++) {
		shim->nonce[i] = (uint8_t)(0xa0 + i);
		helper->nonce[i] = (uint8_t)(0xb0 + i);
	}
}

/* Pins the formula of PROTOCOL.md §6 to a value computed elsewhere
 * (Python's hmac module). */
static void proof_known_answer(void)
{
	static const uint8_t want[TUN_MAC_LEN] = {
		0x90, 0xf2, 0xef, 0x0a, 0x94, 0x77, 0x3a, 0x57, 0x33, 0x2d, 0x43, 0xa1, 0x3b, 0x06, 0xae, 0xda,
		0xf4, 0xb4, 0x37, 0xa3, 0x7f, 0x84, 0xfb, 0xb0, 0xe6, 0x59, 0x88, 0x87, 0x2f, 0x39, 0xdd, 0x5a,
	};
	struct tun_hello shim, helper;
	uint8_t frame[TUN_AUTH_FRAME_LEN];
	pair(&shim, &helper);
	CU_ASSERT_EQUAL(tun_auth_encode(frame, TOKEN, TOKEN_LEN, &shim, &helper), TUN_AUTH_FRAME_LEN);
	CU_ASSERT_EQUAL(frame[0], TUN_AUTH);
	CU_ASSERT_EQUAL(memcmp(frame + TUN_HDR_LEN, want, TUN_MAC_LEN), 0);
}

static void each_side_accepts_the_other(void)
{
	struct tun_hello shim, helper;
	struct tun_frame f;
	uint8_t a[TUN_AUTH_FRAME_LEN], b[TUN_AUTH_FRAME_LEN];
	pair(&shim, &helper);
	tun_auth_encode(a, TOKEN, TOKEN_LEN, &shim, &helper);
	tun_auth_encode(b, TOKEN, TOKEN_LEN, &helper, &shim);
	CU_ASSERT_EQUAL(tun_auth_check(a, sizeof(a), TOKEN, TOKEN_LEN, &helper, &shim, &f),
			TUN_AUTH_FRAME_LEN);
	CU_ASSERT_EQUAL(tun_auth_check(b, sizeof(b), TOKEN, TOKEN_LEN, &shim, &helper, &f),
			TUN_AUTH_FRAME_LEN);
	/* The two proofs differ: one cannot be reflected back as the other. */
	CU_ASSERT_NOT_EQUAL(memcmp(a, b, sizeof(a)), 0);
	CU_ASSERT_EQUAL(tun_auth_check(a, sizeof(a), TOKEN, TOKEN_LEN, &shim, &helper, &f),
			TUN_E_AUTH_MISMATCH);
}

static void every_wrong_proof_is_refused(void)
{
	struct tun_hello shim, helper;
	struct tun_frame f;
	uint8_t a[TUN_AUTH_FRAME_LEN];
	pair(&shim, &helper);
	tun_auth_encode(a, TOKEN, TOKEN_LEN, &shim, &helper);
	for (size_t bit = 0; bit < TUN_MAC_LEN * 8; bit++) {
		a[TUN_HDR_LEN + bit / 8] ^= (uint8_t)(1u << (bit % 8));
		CU_ASSERT_EQUAL(tun_auth_check(a, sizeof(a), TOKEN, TOKEN_LEN, &helper, &shim, &f),
				TUN_E_AUTH_MISMATCH);
		a[TUN_HDR_LEN + bit / 8] ^= (uint8_t)(1u << (bit % 8));
	}
	/* Another token, or another connection's nonces. */
	CU_ASSERT_EQUAL(tun_auth_check(a, sizeof(a), (const uint8_t *)"secreT", 6, &helper, &shim, &f),
			TUN_E_AUTH_MISMATCH);
	helper.nonce[15] ^= 1;
	CU_ASSERT_EQUAL(tun_auth_check(a, sizeof(a), TOKEN, TOKEN_LEN, &helper, &shim, &f),
			TUN_E_AUTH_MISMATCH);
}

static void other_frames_and_partial_input(void)
{
	struct tun_hello shim, helper;
	struct tun_frame f;
	uint8_t a[TUN_AUTH_FRAME_LEN];
	pair(&shim, &helper);
	tun_auth_encode(a, TOKEN, TOKEN_LEN, &shim, &helper);
	for (size_t n = 0; n < sizeof(a); n++)
		CU_ASSERT_EQUAL(tun_auth_check(a, n, TOKEN, TOKEN_LEN, &helper, &shim, &f), 0);
	uint8_t ping[TUN_HDR_LEN + 8] = { 0 };
	tun_encode_ping(ping, false, ping + TUN_HDR_LEN);
	CU_ASSERT_EQUAL(tun_auth_check(ping, sizeof(ping), TOKEN, TOKEN_LEN, &helper, &shim, &f),
			TUN_E_AUTH_EXPECTED);
	CU_ASSERT_EQUAL(f.type, TUN_PING);
	/* A bad header is refused at once, with the codec's reason. */
	a[2] = 1;
	CU_ASSERT_EQUAL(tun_auth_check(a, TUN_HDR_LEN, TOKEN, TOKEN_LEN, &helper, &shim, &f),
			TUN_E_RESERVED);
	CU_ASSERT_STRING_EQUAL(tun_err_str(TUN_E_AUTH_MISMATCH), "token mismatch");
}

int unit_auth(void)
{
	static const struct unit_test t[] = {
		{ "proof known answer", proof_known_answer },
		{ "each side accepts the other's proof, not its own", each_side_accepts_the_other },
		{ "any flipped bit, other token or nonce is refused", every_wrong_proof_is_refused },
		{ "other frames and partial input", other_frames_and_partial_input },
		{ NULL, NULL },
	};
	return unit_add_suite("tunnel auth", t);
}
