/* The tunnel's challenge-response authentication (docs/PROTOCOL.md §6), as
 * pure as the codec: each side proves it holds the shared token with an
 * HMAC over both hellos' nonces, so the token never crosses the wire. No
 * sockets, no allocation, no logging: link.c does the I/O around it. */
#ifndef MUXSHIM_TUNNEL_AUTH_H
#define MUXSHIM_TUNNEL_AUTH_H

#include "tunnel/codec.h"

#define TUN_AUTH_FRAME_LEN (TUN_HDR_LEN + TUN_MAC_LEN)

/* HMAC-SHA256(token, "muxshim-tunnel-v1" || role || first || second): the
 * proof a side of that role sends, its own nonce first. 0 or a negative
 * errno (the crypto library failed). */
int tun_auth_proof(const uint8_t *token, size_t token_len, uint8_t role,
		   const uint8_t first_nonce[TUN_NONCE_LEN],
		   const uint8_t second_nonce[TUN_NONCE_LEN], uint8_t out[TUN_MAC_LEN]);

/* This side's AUTH frame for the hellos exchanged. Returns its length, or
 * 0 if the proof could not be computed. */
size_t tun_auth_encode(uint8_t out[TUN_AUTH_FRAME_LEN], const uint8_t *token, size_t token_len,
		       const struct tun_hello *local, const struct tun_hello *peer);

/* Decodes the peer's first frame after the hellos, which must be an AUTH
 * frame carrying the proof expected from it. Returns the bytes it spans
 * (> 0), 0 if more input is needed, or a tun_err: the frame's own error,
 * TUN_E_AUTH_EXPECTED (a valid frame of another type, described in *f) or
 * TUN_E_AUTH_MISMATCH. The comparison takes the same time for any proof. */
long tun_auth_check(const uint8_t *p, size_t n, const uint8_t *token, size_t token_len,
		    const struct tun_hello *local, const struct tun_hello *peer,
		    struct tun_frame *f);

#endif
