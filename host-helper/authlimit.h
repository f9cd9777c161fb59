/* Failed tunnel authentications, per source address, with backoff: the
 * helper's limit on online token guessing. Pure bookkeeping (time is an
 * input): main.c asks before a peer's proof is checked and reports the
 * outcome.
 *
 * Each address may fail AUTHLIMIT_FREE times in a row at full speed (a shim
 * restarted with the wrong file, retried by hand). After that, every
 * failure makes the address wait before its next proof is checked: 1 s,
 * doubling up to AUTHLIMIT_MAX_BACKOFF_MS. Proofs that arrive while it waits
 * are refused unchecked (they neither count nor extend the wait), so one
 * address tests at most one guess per backoff. A right proof clears the
 * address; so do AUTHLIMIT_FORGET_MS without a failure. At most
 * AUTHLIMIT_SOURCES addresses are remembered, the least recently seen
 * forgotten first. */
#ifndef MUXSHIM_AUTHLIMIT_H
#define MUXSHIM_AUTHLIMIT_H

#include <stdbool.h>
#include <stdint.h>

#define AUTHLIMIT_SOURCES        256
#define AUTHLIMIT_FREE           5
#define AUTHLIMIT_FIRST_BACKOFF_MS 1000
#define AUTHLIMIT_MAX_BACKOFF_MS 16000
#define AUTHLIMIT_FORGET_MS      (10 * 60 * 1000)
#define AUTHLIMIT_ADDR_MAX       64

struct authlimit_source {
	char addr[AUTHLIMIT_ADDR_MAX]; /* "" : free slot */
	uint64_t last_ms;              /* last failure or refusal */
	uint64_t wait_until_ms;        /* no proof is checked before this */
	unsigned failures;             /* in a row */
	unsigned backoff_ms;
};

struct authlimit {
	struct authlimit_source src[AUTHLIMIT_SOURCES];
};

/* May a proof from addr be checked now? If not, *wait_ms says for how long
 * the address still waits. */
bool authlimit_allowed(struct authlimit *a, const char *addr, uint64_t now_ms, uint64_t *wait_ms);

/* A proof from addr was checked. For a failure, returns the failures in a
 * row so far and sets *backoff_ms to the wait it started (0: none yet). */
unsigned authlimit_result(struct authlimit *a, const char *addr, bool ok, uint64_t now_ms,
			  unsigned *backoff_ms);

#endif
