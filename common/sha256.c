#include "sha256.h"

#include <string.h>

/* FIPS 180-4 4.2.2: first 32 bits of the fractional parts of the cube roots
 * of the first 64 primes. */
static const uint32_t K[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5,
	0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
	0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc,
	0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
	0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
	0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3,
	0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5,
	0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
	0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

/* FIPS 180-4 5.3.3: fractional parts of the square roots of the first 8 primes. */
static const uint32_t H0[8] = {
	0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
	0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
};

/* Byte-at-a-time big-endian access: independent of host order and
 * alignment, and compilers turn it into a single load/bswap anyway. */
static uint32_t load_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void store_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static void store_be64(uint8_t *p, uint64_t v)
{
	store_be32(p, (uint32_t)(v >> 32));
	store_be32(p + 4, (uint32_t)v);
}

/* n is always 1..31 here, so neither shift reaches the type's width. */
static uint32_t rotr(uint32_t x, unsigned n)
{
	return x >> n | x << (32 - n);
}

/* Through a volatile pointer so the stores survive dead-store elimination
 * even though the object is never read again. */
static void wipe(void *p, size_t n)
{
	volatile uint8_t *v = p;
	while (n--)
		*v++ = 0;
}

/* FIPS 180-4 6.2.2: one 64-byte block into the chaining state. */
static void compress(uint32_t h[8], const uint8_t *blk)
{
	uint32_t w[64];
	for (int t = 0; t < 16; t++)
		w[t] = load_be32(blk + 4 * t);
	for (int t = 16; t < 64; t++) {
		uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ w[t - 15] >> 3;
		uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ w[t - 2] >> 10;
		w[t] = s1 + w[t - 7] + s0 + w[t - 16];
	}

	uint32_t a = h[0], b = h[1], c = h[2], d = h[3];
	uint32_t e = h[4], f = h[5], g = h[6], hh = h[7];
	for (int t = 0; t < 64; t++) {
		uint32_t S1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
		uint32_t ch = (e & f) ^ (~e & g);
		uint32_t t1 = hh + S1 + ch + K[t] + w[t];
		uint32_t S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
		uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
		uint32_t t2 = S0 + maj;
		hh = g;
		g = f;
		f = e;
		e = d + t1;
		d = c;
		c = b;
		b = a;
		a = t1 + t2;
	}
	h[0] += a;
	h[1] += b;
	h[2] += c;
	h[3] += d;
	h[4] += e;
	h[5] += f;
	h[6] += g;
	h[7] += hh;
}

void sha256_init(struct sha256 *c)
{
	memcpy(c->h, H0, sizeof c->h);
	c->len = 0;
}

void sha256_update(struct sha256 *c, const void *p, size_t n)
{
	const uint8_t *in = p;
	if (n == 0)
		return; /* p may be NULL, and memcpy(NULL, 0) is still UB */
	size_t fill = (size_t)(c->len & (SHA256_BLOCK - 1));
	c->len += n;

	/* Top up a pending partial block first. */
	if (fill) {
		size_t take = SHA256_BLOCK - fill;
		if (take > n)
			take = n;
		memcpy(c->buf + fill, in, take);
		in += take;
		n -= take;
		if (fill + take < SHA256_BLOCK)
			return;
		compress(c->h, c->buf);
	}
	/* Whole blocks straight from the caller's memory, no copy. */
	for (; n >= SHA256_BLOCK; in += SHA256_BLOCK, n -= SHA256_BLOCK)
		compress(c->h, in);
	if (n)
		memcpy(c->buf, in, n);
}

void sha256_final(struct sha256 *c, uint8_t out[SHA256_DIGEST])
{
	/* FIPS 180-4 5.1.1: 0x80, zeros to 56 mod 64, then the bit length. */
	uint64_t bits = c->len << 3;
	size_t fill = (size_t)(c->len & (SHA256_BLOCK - 1));
	c->buf[fill++] = 0x80;
	if (fill > SHA256_BLOCK - 8) {
		/* No room for the length: it goes in one more block. */
		memset(c->buf + fill, 0, SHA256_BLOCK - fill);
		compress(c->h, c->buf);
		fill = 0;
	}
	memset(c->buf + fill, 0, SHA256_BLOCK - 8 - fill);
	store_be64(c->buf + SHA256_BLOCK - 8, bits);
	compress(c->h, c->buf);
	for (int i = 0; i < 8; i++)
		store_be32(out + 4 * i, c->h[i]);
	/* The state may be keyed (HMAC) or hold secret input. */
	wipe(c, sizeof *c);
}

void hmac_sha256_init(struct hmac_sha256 *c, const void *key, size_t keylen)
{
	uint8_t k[SHA256_BLOCK] = { 0 }; /* K zero-padded to the block size */
	uint8_t pad[SHA256_BLOCK];

	if (keylen > SHA256_BLOCK) {
		struct sha256 kh;
		sha256_init(&kh);
		sha256_update(&kh, key, keylen);
		sha256_final(&kh, k);
	} else if (keylen) {
		memcpy(k, key, keylen);
	}

	for (int i = 0; i < SHA256_BLOCK; i++)
		pad[i] = k[i] ^ 0x36;
	sha256_init(&c->inner);
	sha256_update(&c->inner, pad, sizeof pad);
	for (int i = 0; i < SHA256_BLOCK; i++)
		pad[i] = k[i] ^ 0x5c;
	sha256_init(&c->outer);
	sha256_update(&c->outer, pad, sizeof pad);

	wipe(k, sizeof k);
	wipe(pad, sizeof pad);
}

void hmac_sha256_update(struct hmac_sha256 *c, const void *p, size_t n)
{
	sha256_update(&c->inner, p, n);
}

void hmac_sha256_final(struct hmac_sha256 *c, uint8_t out[SHA256_DIGEST])
{
	uint8_t ih[SHA256_DIGEST];
	sha256_final(&c->inner, ih);
	sha256_update(&c->outer, ih, sizeof ih);
	sha256_final(&c->outer, out);
	/* Both halves were wiped by sha256_final; the inner digest is ours. */
	wipe(ih, sizeof ih);
}

void hmac_sha256(const void *key, size_t keylen, const void *msg, size_t msglen,
		 uint8_t out[SHA256_DIGEST])
{
	struct hmac_sha256 c;
	hmac_sha256_init(&c, key, keylen);
	hmac_sha256_update(&c, msg, msglen);
	hmac_sha256_final(&c, out);
}

bool ct_equal(const void *a, const void *b, size_t n)
{
	const uint8_t *x = a, *y = b;
	/* volatile: every byte is folded in, so the compiler cannot stop early
	 * once the accumulator is saturated. */
	volatile uint8_t d = 0;
	for (size_t i = 0; i < n; i++)
		d |= (uint8_t)(x[i] ^ y[i]);
	/* d == 0 gives 0xffffffff >> 8, any 1..255 gives 0: no branch on d. */
	return (((uint32_t)d - 1) >> 8) & 1;
}
