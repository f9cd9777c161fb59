/* libFuzzer target: the tunnel handshake, hello and AUTH, as either side
 * meets it (link.c's handshake_input, minus the I/O).
 *
 * Input: one control byte, this side's 16-byte nonce, a token length byte
 * and that many token bytes (0: no token), then the bytes the peer sent.
 * Control bits: 0 = we are the helper (else the shim); 1 = splice the
 * peer's correct AUTH frame in after its hello, so that the accepting path
 * is reached too; 2 = then flip one bit of it, chosen by the next byte;
 * 3 = add 1 to the token length (so 1..256 bytes, link.c's range).
 *
 * Beyond "no crash", it checks properties: an accepted hello re-encodes to
 * the same bytes and has its limits in range; our own AUTH frame is
 * accepted by the peer's check; the peer's AUTH is accepted exactly when its
 * MAC equals HMAC-SHA256 as PROTOCOL.md §6 defines it, computed here
 * independently of auth.c. */
#include "crypto.h"
#include "tunnel/auth.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
	if (!ok)
		abort();
}

/* The peer's proof, from the spec rather than from auth.c. */
static void spec_proof(const uint8_t *token, size_t token_len, const struct tun_hello *sender,
		       const struct tun_hello *receiver, uint8_t out[TUN_MAC_LEN])
{
	static const char label[] = "muxshim-tunnel-v1";
	uint8_t msg[sizeof(label) - 1 + 1 + 2 * TUN_NONCE_LEN];
	memcpy(msg, label, sizeof(label) - 1);
	msg[sizeof(label) - 1] = sender->role;
	memcpy(msg + sizeof(label), sender->nonce, TUN_NONCE_LEN);
	memcpy(msg + sizeof(label) + TUN_NONCE_LEN, receiver->nonce, TUN_NONCE_LEN);
	struct crypto_part whole = { msg, sizeof(msg) };
	check(crypto_hmac_sha256(token, token_len, &whole, 1, out) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 + TUN_NONCE_LEN + 1)
		return 0;
	uint8_t ctl = data[0];
	enum tun_role me = ctl & 1 ? TUN_ROLE_HELPER : TUN_ROLE_SHIM;
	enum tun_role them = me == TUN_ROLE_SHIM ? TUN_ROLE_HELPER : TUN_ROLE_SHIM;
	struct tun_hello local = { .version = TUN_VERSION, .role = (uint8_t)me,
				   .max_frame = 16384, .window = 262144, .max_streams = 64 };
	memcpy(local.nonce, data + 1, TUN_NONCE_LEN);
	size_t token_len = data[1 + TUN_NONCE_LEN] + (ctl & 8 ? 1u : 0u); /* 0..256 */
	data += 2 + TUN_NONCE_LEN;
	size -= 2 + TUN_NONCE_LEN;
	if (token_len > size)
		token_len = size;
	/* A copy, so that ASan sees any read beyond the token. */
	uint8_t *token = token_len ? malloc(token_len) : NULL;
	if (token_len) {
		check(token != NULL);
		memcpy(token, data, token_len);
		local.flags = TUN_HELLO_AUTH;
	}
	data += token_len;
	size -= token_len;
	if (size < TUN_HELLO_LEN)
		goto out;

	struct tun_hello peer;
	int rc = tun_hello_decode(data, them, &peer);
	if (rc < 0) {
		check(rc >= TUN_E_HELLO_LIMIT && rc <= TUN_E_MAGIC);
		goto out;
	}
	uint8_t again[TUN_HELLO_LEN];
	tun_hello_encode(&peer, again);
	check(memcmp(again, data, TUN_HELLO_LEN) == 0);
	check(peer.version == TUN_VERSION && peer.role == them);
	check(peer.max_frame >= TUN_MAX_FRAME_MIN && peer.max_frame <= TUN_MAX_FRAME_MAX);
	check(peer.window >= TUN_WINDOW_MIN && peer.window <= TUN_WINDOW_MAX);
	check(peer.max_streams >= 1 && peer.max_streams <= TUN_STREAMS_MAX);
	data += TUN_HELLO_LEN;
	size -= TUN_HELLO_LEN;

	/* A token on one side only ends the handshake in link.c. */
	if (!token_len != !(peer.flags & TUN_HELLO_AUTH) || !token_len)
		goto out;

	/* What we send must convince a peer holding the same token. */
	uint8_t mine[TUN_AUTH_FRAME_LEN];
	struct tun_frame f;
	check(tun_auth_encode(mine, token, token_len, &local, &peer) == TUN_AUTH_FRAME_LEN);
	check(tun_auth_check(mine, sizeof(mine), token, token_len, &peer, &local, &f) ==
	      TUN_AUTH_FRAME_LEN);

	uint8_t *in = malloc(size ? size : 1);
	check(in != NULL);
	memcpy(in, data, size);
	uint8_t want[TUN_MAC_LEN];
	spec_proof(token, token_len, &peer, &local, want);
	if ((ctl & 2) && size >= TUN_AUTH_FRAME_LEN) {
		tun_encode_auth(in, want);
		if ((ctl & 4) && size > TUN_AUTH_FRAME_LEN) {
			uint8_t bit = in[TUN_AUTH_FRAME_LEN];
			in[TUN_HDR_LEN + (bit >> 3) % TUN_MAC_LEN] ^= (uint8_t)(1u << (bit & 7));
		}
	}
	long used = tun_auth_check(in, size, token, token_len, &local, &peer, &f);
	if (used > 0) {
		check(used == TUN_AUTH_FRAME_LEN && f.type == TUN_AUTH);
		check(f.payload == in + TUN_HDR_LEN);
		check(memcmp(f.payload, want, TUN_MAC_LEN) == 0);
	} else if (used == TUN_E_AUTH_MISMATCH) {
		check(f.type == TUN_AUTH && memcmp(f.payload, want, TUN_MAC_LEN) != 0);
	} else if (used == TUN_E_AUTH_EXPECTED) {
		check(f.type != TUN_AUTH);
	} else if (used == 0) {
		check(size < TUN_HDR_LEN || f.len > size - TUN_HDR_LEN);
	} else {
		check(used >= TUN_E_TOO_BIG && used <= TUN_E_TYPE);
	}
	if ((ctl & 6) == 2 && size >= TUN_AUTH_FRAME_LEN)
		check(used == TUN_AUTH_FRAME_LEN);
	if ((ctl & 6) == 6 && size > TUN_AUTH_FRAME_LEN)
		check(used == TUN_E_AUTH_MISMATCH);
	free(in);
out:
	free(token);
	return 0;
}
