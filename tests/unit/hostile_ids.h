/* Stream ids a hostile shim would send: odd ids that all fell into slot 0
 * of the largest table under the unkeyed hash the table once used,
 * ((id * 2654435761) >> 7) & (2^17 - 1). The multiplier is invertible mod
 * 2^32, so every odd product with bits 7..23 zero gives one (16,384 of
 * them). Ascending, as OPENs must be. Shared by the unit tests and
 * make bench-mux. */
#ifndef MUXSHIM_TESTS_HOSTILE_IDS_H
#define MUXSHIM_TESTS_HOSTILE_IDS_H

#include <stdint.h>
#include <stdlib.h>

static int hostile_cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static inline uint32_t hostile_stream_ids(uint32_t *ids, uint32_t n)
{
	uint32_t inv = 2654435761u;
	for (int i = 0; i < 5; i++)
		inv *= 2u - 2654435761u * inv; /* Newton: inverse mod 2^32 */
	uint32_t k = 0;
	for (uint32_t hi = 0; hi < 256 && k < n; hi++)
		for (uint32_t lo = 1; lo < 128 && k < n; lo += 2)
			ids[k++] = (hi << 24 | lo) * inv;
	qsort(ids, k, sizeof(*ids), hostile_cmp_u32);
	return k;
}

#endif
