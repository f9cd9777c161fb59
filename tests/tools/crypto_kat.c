/* The crypto.h known-answer tests as a program, for the backends the unit
 * suite cannot load: built with mingw against crypto_bcrypt.c and run under
 * wine by tests/integration/test_windows.py. Exit status 0: all passed. */
#include "../unit/crypto_kat.h"

#include <stdio.h>

int main(void)
{
	const char *fail = crypto_kat();
	if (fail) {
		printf("FAIL %s (%s)\n", fail, crypto_backend());
		return 1;
	}
	printf("ok: HMAC-SHA256, HKDF-SHA256, AES-256-GCM known answers (%s)\n", crypto_backend());
	return 0;
}
