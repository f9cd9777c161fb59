/* libFuzzer target: the helper's tenants file parser (host-helper/tenants.h).
 * Input: the file's text. Token files are answered without files: a path
 * whose last byte is even yields a strong token derived from the path, an
 * odd one a missing file, so duplicates, weak and missing tokens all occur.
 *
 * Properties: an accepted file gives tenants with valid, unique names and
 * unique tokens, device lists within their bounds, lines in order; a
 * refused one gives -EINVAL with a sentence starting "line N:" (or naming
 * the length) that fits the buffer. */
#include "tenants.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
	if (!ok)
		abort();
}

static int reader(void *ctx, const char *path, uint8_t *out, size_t cap, size_t *len)
{
	(void)ctx;
	size_t n = strlen(path);
	check(n > 0);
	if ((uint8_t)path[n - 1] & 1)
		return -ENOENT;
	if (path[n - 1] == 'w') { /* a weak one */
		out[0] = 'x';
		*len = 1;
		return 0;
	}
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (uint8_t)path[i]) * 16777619u;
	check(cap >= 32);
	for (size_t i = 0; i < 32; i++) {
		h = h * 1103515245u + 12345u;
		out[i] = (uint8_t)(h >> 16);
	}
	*len = 32;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exact-size copy: ASan sees any read past the end. */
	char *text = malloc(size ? size : 1);
	check(text != NULL);
	memcpy(text, data, size);
	struct tenant_list l;
	char err[160];
	memset(err, 'x', sizeof(err));
	int rc = tenants_parse(text, size, "base/", reader, NULL, &l, err, sizeof(err));
	if (rc < 0) {
		check(rc == -EINVAL || rc == -ENOMEM);
		check(memchr(err, 0, sizeof(err)) != NULL);
		check(strncmp(err, "line ", 5) == 0 || strncmp(err, "longer", 6) == 0);
		free(text);
		return 0;
	}
	check(rc == 0 && l.n <= TENANTS_MAX);
	for (size_t i = 0; i < l.n; i++) {
		const struct tenant_def *t = &l.t[i];
		size_t nl = strlen(t->name);
		check(nl >= 1 && nl <= TENANT_NAME_MAX);
		check(t->token_len >= 16 && t->token_len <= LINK_TOKEN_MAX);
		check(t->all ? t->ndevices == 0 : t->ndevices >= 1 && t->ndevices <= TENANT_DEVICES_MAX);
		for (size_t d = 0; d < t->ndevices; d++) {
			size_t ul = strlen(t->devices[d]);
			check(ul >= 1 && ul <= TENANT_UDID_MAX);
			check(tenant_allows(t, t->devices[d]));
		}
		check(i == 0 || t->line > l.t[i - 1].line);
		check(tenants_find(&l, t->name) == t);
		for (size_t j = 0; j < i; j++)
			check(t->token_len != l.t[j].token_len ||
			      memcmp(t->token, l.t[j].token, t->token_len) != 0);
	}
	tenants_free(&l);
	free(text);
	return 0;
}
