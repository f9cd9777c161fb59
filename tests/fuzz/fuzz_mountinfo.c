/* libFuzzer target: the /proc/self/mountinfo reader behind the shim's
 * "single-file bind mount" diagnosis (diag_is_mount_point). Input: the path
 * asked about, a NUL, then the mount table. Its answer is compared with a
 * plain reference reading of the format: line by line, the fifth
 * space-separated field, octal escapes undone. */
#include "diag.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MP_MAX 4095 /* the longest mount point diag.c compares */

static bool odigit(char c, char hi)
{
	return c >= '0' && c <= hi;
}

/* Mount point field of the line [p, end): true and its unescaped text in
 * out (n bytes) if the line has one. */
static bool field5(const char *p, const char *end, char *out, size_t *n)
{
	for (int skip = 0; skip < 4; skip++) {
		const char *sp = memchr(p, ' ', (size_t)(end - p));
		if (!sp)
			return false;
		p = sp + 1;
	}
	*n = 0;
	while (p < end && *p != ' ') {
		char c = *p++;
		if (c == '\\' && end - p >= 3 && odigit(p[0], '3') && odigit(p[1], '7') &&
		    odigit(p[2], '7')) {
			c = (char)((p[0] - '0') * 64 + (p[1] - '0') * 8 + (p[2] - '0'));
			p += 3;
		}
		if (*n == MP_MAX)
			return false;
		out[(*n)++] = c;
	}
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul = memchr(data, 0, size);
	if (!nul || nul == data)
		return 0; /* the daemon asks about a canonical path, never "" */
	size_t plen = (size_t)(nul - data);
	char *path = malloc(plen + 1);
	size_t tlen = size - plen - 1;
	char *table = malloc(tlen + 1);
	if (!path || !table)
		abort();
	memcpy(path, data, plen + 1);
	memcpy(table, nul + 1, tlen);
	table[tlen] = '\0';
	tlen = strlen(table); /* the daemon reads a C string */

	bool got = diag_is_mount_point(table, path);

	bool want = false, unsure = false;
	static char mp[MP_MAX];
	for (const char *line = table; line < table + tlen;) {
		const char *end = memchr(line, '\n', (size_t)(table + tlen - line));
		if (!end)
			end = table + tlen;
		size_t n;
		if (field5(line, end, mp, &n)) {
			if (memchr(mp, '\0', n))
				unsure = true; /* "\000": the kernel never writes it */
			else if (n == plen && memcmp(mp, path, n) == 0)
				want = true;
		}
		line = end + 1;
	}
	if (!unsure && got != want)
		abort();
	free(table);
	free(path);
	return 0;
}
