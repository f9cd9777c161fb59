/* AES-256-GCM through crypto.h as the record layer uses it: 16 KiB records
 * sealed in place, then opened. Prints MB/s (10^6 bytes) for each. With
 * Nettle, NETTLE_FAT_OVERRIDE=none measures it without AES-NI and PCLMUL
 * (`make bench-crypto` runs both). */
#include "crypto.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	size_t mib = argc > 1 ? (size_t)atoi(argv[1]) : 512;
	enum { REC = 16384 };
	static uint8_t buf[REC];
	uint8_t key[CRYPTO_AEAD_KEY_LEN] = { 1 }, nonce[CRYPTO_AEAD_NONCE_LEN] = { 0 }, ad[4] = { 0 },
		tag[CRYPTO_AEAD_TAG_LEN];
	struct crypto_aead *a;
	if (crypto_aead_new(key, &a) < 0)
		return 1;
	size_t n = mib * 1024 * 1024 / REC;
	double t0 = now_s();
	for (size_t i = 0; i < n; i++) {
		nonce[11] = (uint8_t)i;
		crypto_aead_seal(a, nonce, ad, sizeof(ad), buf, REC, buf, tag);
	}
	double seal = now_s() - t0;
	/* Open the last record sealed, again and again (into another buffer,
	 * so that it stays valid). */
	t0 = now_s();
	int bad = 0;
	for (size_t i = 0; i < n; i++) {
		uint8_t c[REC];
		bad += crypto_aead_open(a, nonce, ad, sizeof(ad), buf, REC, c, tag) < 0;
	}
	double open = now_s() - t0;
	crypto_aead_free(a);
	printf("%s AES-256-GCM, 16 KiB records, %zu MiB: seal %.0f MB/s, open %.0f MB/s%s\n",
	       crypto_backend(), mib, (double)n * REC / seal / 1e6, (double)n * REC / open / 1e6,
	       bad ? " (tag errors)" : "");
	return 0;
}
