#include "authlimit.h"

#include <string.h>

static struct authlimit_source *find(struct authlimit *a, const char *addr, uint64_t now_ms)
{
	for (unsigned i = 0; i < AUTHLIMIT_SOURCES; i++) {
		struct authlimit_source *s = &a->src[i];
		if (!s->addr[0] || strcmp(s->addr, addr) != 0)
			continue;
		if (now_ms - s->last_ms >= AUTHLIMIT_FORGET_MS) {
			s->addr[0] = '\0';
			return NULL;
		}
		return s;
	}
	return NULL;
}

/* A slot for a new address: a free one, else the least recently seen. */
static struct authlimit_source *take(struct authlimit *a, const char *addr)
{
	struct authlimit_source *victim = &a->src[0];
	for (unsigned i = 0; i < AUTHLIMIT_SOURCES; i++) {
		struct authlimit_source *s = &a->src[i];
		if (!s->addr[0]) {
			victim = s;
			break;
		}
		if (s->last_ms < victim->last_ms)
			victim = s;
	}
	memset(victim, 0, sizeof(*victim));
	size_t n = strlen(addr);
	if (n >= sizeof(victim->addr))
		n = sizeof(victim->addr) - 1;
	memcpy(victim->addr, addr, n);
	return victim;
}

bool authlimit_allowed(struct authlimit *a, const char *addr, uint64_t now_ms, uint64_t *wait_ms)
{
	struct authlimit_source *s = find(a, addr, now_ms);
	*wait_ms = 0;
	if (!s || now_ms >= s->wait_until_ms)
		return true;
	*wait_ms = s->wait_until_ms - now_ms;
	s->last_ms = now_ms;
	return false;
}

unsigned authlimit_result(struct authlimit *a, const char *addr, bool ok, uint64_t now_ms,
			  unsigned *backoff_ms)
{
	struct authlimit_source *s = find(a, addr, now_ms);
	*backoff_ms = 0;
	if (ok) {
		if (s)
			s->addr[0] = '\0';
		return 0;
	}
	if (!s)
		s = take(a, addr);
	s->last_ms = now_ms;
	s->failures++;
	if (s->failures > AUTHLIMIT_FREE) {
		s->backoff_ms = !s->backoff_ms ? AUTHLIMIT_FIRST_BACKOFF_MS
			      : s->backoff_ms * 2 > AUTHLIMIT_MAX_BACKOFF_MS ? AUTHLIMIT_MAX_BACKOFF_MS
									: s->backoff_ms * 2;
		s->wait_until_ms = now_ms + s->backoff_ms;
		*backoff_ms = s->backoff_ms;
	}
	return s->failures;
}
