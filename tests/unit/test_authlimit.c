#include "authlimit.h"
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>

/* 2,000 wrong proofs from one address were all checked, in 0.7 s. */
static void guesses_back_off(void)
{
	struct authlimit *a = calloc(1, sizeof(*a));
	uint64_t now = 1000000, wait;
	unsigned backoff, checked = 0;
	CU_ASSERT_PTR_NOT_NULL_FATAL(a);
	/* As fast as possible for 60 s of the limiter's time, 1 ms apart. */
	for (uint64_t end = now + 60000; now < end; now++) {
		if (!authlimit_allowed(a, "127.0.0.1", now, &wait))
			continue;
		checked++;
		authlimit_result(a, "127.0.0.1", false, now, &backoff);
	}
	/* 5 free, then waits of 1, 2, 4, 8, 16, 16, 16 s: about a dozen. */
	CU_ASSERT(checked >= AUTHLIMIT_FREE + 5 && checked <= AUTHLIMIT_FREE + 10);
	CU_ASSERT_FALSE(authlimit_allowed(a, "127.0.0.1", now, &wait));
	CU_ASSERT(wait > 0 && wait <= AUTHLIMIT_MAX_BACKOFF_MS);
	/* Another address is not affected. */
	CU_ASSERT_TRUE(authlimit_allowed(a, "192.0.2.7", now, &wait));
	/* Once the wait is over, one proof is checked; a right one clears it. */
	now += AUTHLIMIT_MAX_BACKOFF_MS;
	CU_ASSERT_TRUE(authlimit_allowed(a, "127.0.0.1", now, &wait));
	CU_ASSERT_EQUAL(authlimit_result(a, "127.0.0.1", true, now, &backoff), 0);
	for (unsigned i = 0; i < AUTHLIMIT_FREE; i++) {
		CU_ASSERT_TRUE(authlimit_allowed(a, "127.0.0.1", now, &wait));
		CU_ASSERT_EQUAL(authlimit_result(a, "127.0.0.1", false, now, &backoff), i + 1);
		CU_ASSERT_EQUAL(backoff, 0);
	}
	CU_ASSERT_EQUAL(authlimit_result(a, "127.0.0.1", false, now, &backoff), AUTHLIMIT_FREE + 1);
	CU_ASSERT_EQUAL(backoff, AUTHLIMIT_FIRST_BACKOFF_MS);
	free(a);
}

static void forgotten_after_quiet(void)
{
	struct authlimit *a = calloc(1, sizeof(*a));
	uint64_t now = 5000, wait;
	unsigned backoff;
	CU_ASSERT_PTR_NOT_NULL_FATAL(a);
	for (unsigned i = 0; i < AUTHLIMIT_FREE + 1; i++)
		authlimit_result(a, "::1", false, now, &backoff);
	CU_ASSERT_FALSE(authlimit_allowed(a, "::1", now + 1, &wait));
	now += AUTHLIMIT_FORGET_MS + 1;
	CU_ASSERT_TRUE(authlimit_allowed(a, "::1", now, &wait));
	CU_ASSERT_EQUAL(authlimit_result(a, "::1", false, now, &backoff), 1);
	free(a);
}

/* Bounded memory: more addresses than slots evict the least recent. */
static void table_bounded(void)
{
	struct authlimit *a = calloc(1, sizeof(*a));
	uint64_t now = 1, wait;
	unsigned backoff;
	char addr[32];
	CU_ASSERT_PTR_NOT_NULL_FATAL(a);
	for (unsigned i = 0; i < AUTHLIMIT_FREE + 1; i++)
		authlimit_result(a, "10.0.0.1", false, now, &backoff);
	for (unsigned i = 0; i < 3 * AUTHLIMIT_SOURCES; i++) {
		snprintf(addr, sizeof(addr), "10.1.%u.%u", i / 256, i % 256);
		authlimit_result(a, addr, false, ++now, &backoff);
	}
	/* The first address was the least recent: forgotten, checked again. */
	CU_ASSERT_TRUE(authlimit_allowed(a, "10.0.0.1", now, &wait));
	free(a);
}

int unit_authlimit(void)
{
	static const struct unit_test t[] = {
		{ "authlimit: wrong proofs from one address back off (all were checked)", guesses_back_off },
		{ "authlimit: an address is forgotten after a quiet while", forgotten_after_quiet },
		{ "authlimit: bounded table, least recent evicted", table_bounded },
		{ NULL, NULL },
	};
	return unit_add_suite("authlimit", t);
}
