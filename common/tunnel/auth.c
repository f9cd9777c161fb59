#include "tunnel/auth.h"

#include "crypto.h"

static const char AUTH_LABEL[] = "muxshim-tunnel-v1";

int tun_auth_proof(const uint8_t *token, size_t token_len, uint8_t role,
		   const uint8_t first_nonce[TUN_NONCE_LEN],
		   const uint8_t second_nonce[TUN_NONCE_LEN], uint8_t out[TUN_MAC_LEN])
{
	struct crypto_part parts[] = {
		{ AUTH_LABEL, sizeof(AUTH_LABEL) - 1 },
		{ &role, 1 },
		{ first_nonce, TUN_NONCE_LEN },
		{ second_nonce, TUN_NONCE_LEN },
	};
	return crypto_hmac_sha256(token, token_len, parts, sizeof(parts) / sizeof(parts[0]), out);
}

size_t tun_auth_encode(uint8_t out[TUN_AUTH_FRAME_LEN], const uint8_t *token, size_t token_len,
		       const struct tun_hello *local, const struct tun_hello *peer)
{
	uint8_t mac[TUN_MAC_LEN];
	if (tun_auth_proof(token, token_len, local->role, local->nonce, peer->nonce, mac) < 0)
		return 0;
	return tun_encode_auth(out, mac);
}

long tun_auth_check(const uint8_t *p, size_t n, const uint8_t *token, size_t token_len,
		    const struct tun_hello *local, const struct tun_hello *peer,
		    struct tun_frame *f)
{
	long used = tun_frame_decode(p, n, local->max_frame, f);
	if (used <= 0)
		return used;
	if (f->type != TUN_AUTH)
		return TUN_E_AUTH_EXPECTED;
	uint8_t expect[TUN_MAC_LEN];
	if (tun_auth_proof(token, token_len, peer->role, peer->nonce, local->nonce, expect) < 0)
		return TUN_E_AUTH_MISMATCH;
	return crypto_equal(expect, f->payload, TUN_MAC_LEN) ? used : TUN_E_AUTH_MISMATCH;
}
