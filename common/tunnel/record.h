/* The tunnel's record layer (docs/PROTOCOL.md §7): with a token, every byte
 * after a side's AUTH frame travels in AES-256-GCM records, one key and one
 * sequence of implicit nonces per direction, keys derived with HKDF-SHA256
 * from the token and both hellos' nonces. Pure like the codec: it seals and
 * opens buffers with explicit lengths; link.c does the I/O around it.
 *
 * record = length (u32, plaintext bytes, 1 .. TUN_REC_MAX)
 *          || ciphertext (length bytes) || tag (16 bytes)
 * nonce  = 4 zero bytes || record number (u64), from 0 in each direction;
 *          the length field is the associated data.
 * Every TUN_REC_REKEY records a direction's key is replaced by
 * HKDF-Expand(key, "muxshim-tunnel-v2 rekey", 32) on both sides. */
#ifndef MUXSHIM_TUNNEL_RECORD_H
#define MUXSHIM_TUNNEL_RECORD_H

#include "crypto.h"
#include "tunnel/codec.h"

#define TUN_REC_HDR      4
#define TUN_REC_TAG      CRYPTO_AEAD_TAG_LEN
#define TUN_REC_OVERHEAD (TUN_REC_HDR + TUN_REC_TAG)
#define TUN_REC_MAX      16384u          /* plaintext bytes in one record */
#define TUN_REC_REKEY    (1ull << 24)    /* records under one key (256 GiB at most) */

struct tun_rec_dir {
	struct crypto_aead *aead;
	uint8_t key[CRYPTO_AEAD_KEY_LEN]; /* the current key, for the next one */
	uint64_t seq;                     /* records sealed or opened so far */
	uint64_t rekey_every;             /* TUN_REC_REKEY; smaller in tests */
};

struct tun_rec {
	struct tun_rec_dir tx, rx;
};

/* The two directions' first keys, as PROTOCOL.md §7 derives them. */
int tun_rec_keys(const uint8_t *token, size_t token_len,
		 const uint8_t shim_nonce[TUN_NONCE_LEN], const uint8_t helper_nonce[TUN_NONCE_LEN],
		 uint8_t shim_to_helper[CRYPTO_AEAD_KEY_LEN],
		 uint8_t helper_to_shim[CRYPTO_AEAD_KEY_LEN]);

/* Sets up both directions for a side of this role. 0 or a negative errno;
 * on failure nothing needs freeing. */
int tun_rec_init(struct tun_rec *r, enum tun_role role, const uint8_t *token, size_t token_len,
		 const uint8_t shim_nonce[TUN_NONCE_LEN],
		 const uint8_t helper_nonce[TUN_NONCE_LEN]);
/* Wipes the keys. */
void tun_rec_free(struct tun_rec *r);

/* Seals n plaintext bytes (1 .. TUN_REC_MAX) into one record of
 * n + TUN_REC_OVERHEAD bytes at out; in may be out + TUN_REC_HDR (sealing in
 * place), otherwise the two must not overlap. Returns the record's length,
 * or a negative errno. */
long tun_rec_seal(struct tun_rec_dir *d, const uint8_t *in, size_t n, uint8_t *out);

/* The length of the record at the front of p[0 .. n) once its header is
 * there: > 0, 0 if fewer than TUN_REC_HDR bytes, or TUN_E_RECORD_LEN. */
long tun_rec_span(const uint8_t *p, size_t n);

/* Opens the record at the front of p[0 .. n): its plaintext goes to out
 * (room for TUN_REC_MAX bytes) and its length to *plain_len. Returns the
 * bytes the record spans (> 0), 0 if more input is needed, TUN_E_RECORD_LEN,
 * TUN_E_RECORD_AUTH (changed, replayed, reordered or dropped: the
 * expected record number did not match), or a negative errno. After an
 * error the direction is unusable. */
long tun_rec_open(struct tun_rec_dir *d, const uint8_t *p, size_t n, uint8_t *out,
		  size_t *plain_len);

#endif
