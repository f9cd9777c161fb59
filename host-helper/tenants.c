#include "tenants.h"

#include "daemon.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define FIELD_MAX 4096 /* a token path, or a device list of TENANT_DEVICES_MAX UDIDs */

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return rc;
}

static bool name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == '-';
}

/* The characters --device accepts (devtable.c): UDIDs are hex and dashes;
 * letters beyond f are allowed for odd serials, nothing else. */
static bool udid_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
}

static bool blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static bool is_absolute(const char *p)
{
	return p[0] == '/' || p[0] == '\\' ||
	       (((p[0] >= 'a' && p[0] <= 'z') || (p[0] >= 'A' && p[0] <= 'Z')) && p[1] == ':');
}

void tenants_dir_of(const char *path, char *out, size_t cap)
{
	const char *slash = strrchr(path, '/'), *bs = strrchr(path, '\\');
	if (bs && (!slash || bs > slash))
		slash = bs;
	size_t n = slash ? (size_t)(slash - path) + 1 : 0;
	if (cap == 0)
		return;
	if (n >= cap)
		n = 0; /* cannot happen for a path we could open; be safe */
	memcpy(out, path, n);
	out[n] = 0;
}

void tenant_def_free(struct tenant_def *t)
{
	free(t->devices);
	t->devices = NULL;
	memset(t->token, 0, sizeof(t->token));
}

void tenants_free(struct tenant_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		tenant_def_free(&l->t[i]);
	free(l->t);
	l->t = NULL;
	l->n = 0;
}

const struct tenant_def *tenants_find(const struct tenant_list *l, const char *name)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->t[i].name, name) == 0)
			return &l->t[i];
	return NULL;
}

bool tenant_allows(const struct tenant_def *t, const char *udid)
{
	if (t->all)
		return true;
	for (size_t i = 0; i < t->ndevices; i++)
		if (strcasecmp(t->devices[i], udid) == 0)
			return true;
	return false;
}

static int parse_devices(struct tenant_def *t, const char *f, unsigned line, char *err,
			 size_t errlen);

int tenant_def_devices(struct tenant_def *t, const char *name, const char *list, char *err,
		       size_t errlen)
{
	memset(t, 0, sizeof(*t));
	snprintf(t->name, sizeof(t->name), "%s", name);
	char why[300];
	if (strlen(list) > FIELD_MAX)
		return fail(err, errlen, -EINVAL, "longer than %u bytes", FIELD_MAX);
	int rc = parse_devices(t, list, 0, why, sizeof(why));
	if (rc < 0) {
		tenant_def_free(t);
		/* Drop the "line 0: tenant 'x': " the file parser puts first. */
		const char *p = strstr(why, "': ");
		return fail(err, errlen, rc, "%s", p ? p + 3 : why);
	}
	return 0;
}

static int parse_devices(struct tenant_def *t, const char *f, unsigned line, char *err,
			 size_t errlen)
{
	if (strcmp(f, "*") == 0) {
		t->all = true;
		return 0;
	}
	size_t n = 1;
	for (const char *p = f; *p; p++)
		n += *p == ',';
	if (n > TENANT_DEVICES_MAX)
		return fail(err, errlen, -EINVAL, "line %u: tenant '%s': %u devices, at most %u",
			    line, t->name, (unsigned)n, TENANT_DEVICES_MAX);
	t->devices = calloc(n, sizeof(*t->devices));
	if (!t->devices)
		return fail(err, errlen, -ENOMEM, "line %u: out of memory", line);
	const char *p = f;
	for (size_t i = 0; i < n; i++) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		if (len == 0 || len > TENANT_UDID_MAX)
			return fail(err, errlen, -EINVAL,
				    "line %u: tenant '%s': device %u of the list is %s", line,
				    t->name, (unsigned)i + 1, len ? "too long for a UDID" : "empty");
		for (size_t j = 0; j < len; j++)
			if (!udid_char(p[j]))
				return fail(err, errlen, -EINVAL,
					    "line %u: tenant '%s': device %u of the list has a "
					    "character a UDID never has (use `*` for every device, "
					    "or UDIDs separated by commas, no blanks)",
					    line, t->name, (unsigned)i + 1);
		memcpy(t->devices[i], p, len);
		t->devices[i][len] = 0;
		p = end ? end + 1 : p + len;
	}
	t->ndevices = n;
	return 0;
}

/* One line's fields into t (its name already checked). */
static int parse_line(struct tenant_def *t, char *fields[3], unsigned line, const char *base_dir,
		      tenant_token_reader rd, void *ctx, char *err, size_t errlen)
{
	char path[FIELD_MAX + 512];
	size_t nlen = strlen(fields[0]);
	if (nlen == 0 || nlen > TENANT_NAME_MAX)
		return fail(err, errlen, -EINVAL, "line %u: the tenant name must be 1 to %u "
			    "characters", line, TENANT_NAME_MAX);
	for (size_t i = 0; i < nlen; i++)
		if (!name_char(fields[0][i]))
			return fail(err, errlen, -EINVAL, "line %u: the tenant name may hold only "
				    "letters, digits, '.', '_' and '-'", line);
	memcpy(t->name, fields[0], nlen + 1);
	t->line = line;
	if (is_absolute(fields[1]) || !base_dir[0])
		snprintf(path, sizeof(path), "%s", fields[1]);
	else
		snprintf(path, sizeof(path), "%s%s", base_dir, fields[1]);
	int rc = rd(ctx, path, t->token, sizeof(t->token), &t->token_len);
	if (rc < 0)
		return fail(err, errlen, -EINVAL, "line %u: tenant '%s': token file %s: %s", line,
			    t->name, path, rc == -EINVAL ? "empty, or longer than 256 bytes"
							 : strerror(-rc));
	const char *weak = daemon_token_weakness(t->token, t->token_len);
	if (weak)
		return fail(err, errlen, -EINVAL, "line %u: tenant '%s': the token in %s is too "
			    "weak: %s (make one with muxshim-host --gen-token FILE)", line, t->name,
			    path, weak);
	return parse_devices(t, fields[2], line, err, errlen);
}

static bool same_token(const struct tenant_def *a, const struct tenant_def *b)
{
	return a->token_len == b->token_len && memcmp(a->token, b->token, a->token_len) == 0;
}

int tenants_parse(const char *text, size_t len, const char *base_dir, tenant_token_reader rd,
		  void *ctx, struct tenant_list *out, char *err, size_t errlen)
{
	if (len > TENANTS_FILE_MAX)
		return fail(err, errlen, -EINVAL, "longer than %u bytes", TENANTS_FILE_MAX);
	struct tenant_list l = { NULL, 0 };
	char fbuf[3][FIELD_MAX + 1];
	unsigned line = 0;
	int rc = 0;
	size_t pos = 0;
	while (pos < len) {
		line++;
		const char *s = text + pos;
		const char *nl = memchr(s, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - s) : len - pos;
		pos += n + (nl ? 1 : 0);
		if (memchr(s, '\0', n)) {
			rc = fail(err, errlen, -EINVAL, "line %u: a NUL byte (not a text file?)", line);
			goto out_free;
		}
		const char *hash = memchr(s, '#', n);
		if (hash)
			n = (size_t)(hash - s);
		char *fields[3];
		unsigned nf = 0;
		for (size_t i = 0; i < n;) {
			while (i < n && blank(s[i]))
				i++;
			if (i == n)
				break;
			size_t start = i;
			while (i < n && !blank(s[i]))
				i++;
			if (nf == 3) {
				nf++;
				break;
			}
			if (i - start > FIELD_MAX) {
				rc = fail(err, errlen, -EINVAL, "line %u: field %u is longer than %u "
					  "bytes", line, nf + 1, FIELD_MAX);
				goto out_free;
			}
			memcpy(fbuf[nf], s + start, i - start);
			fbuf[nf][i - start] = 0;
			fields[nf] = fbuf[nf];
			nf++;
		}
		if (nf == 0)
			continue;
		if (nf != 3) {
			rc = fail(err, errlen, -EINVAL, "line %u: expected NAME TOKEN_FILE DEVICES "
				  "(DEVICES: `*` or UDIDs separated by commas), found %s", line,
				  nf < 3 ? "fewer fields" : "more fields");
			goto out_free;
		}
		if (l.n == TENANTS_MAX) {
			rc = fail(err, errlen, -EINVAL, "line %u: more than %u tenants", line,
				  TENANTS_MAX);
			goto out_free;
		}
		struct tenant_def *grown = realloc(l.t, (l.n + 1) * sizeof(*grown));
		if (!grown) {
			rc = fail(err, errlen, -ENOMEM, "line %u: out of memory", line);
			goto out_free;
		}
		l.t = grown;
		struct tenant_def *t = &l.t[l.n];
		memset(t, 0, sizeof(*t));
		rc = parse_line(t, fields, line, base_dir, rd, ctx, err, errlen);
		if (rc < 0) {
			tenant_def_free(t);
			goto out_free;
		}
		l.n++;
		for (size_t i = 0; i + 1 < l.n; i++) {
			if (strcmp(l.t[i].name, t->name) == 0) {
				rc = fail(err, errlen, -EINVAL, "line %u: tenant '%s' is already "
					  "defined on line %u", line, t->name, l.t[i].line);
				goto out_free;
			}
			if (same_token(&l.t[i], t)) {
				rc = fail(err, errlen, -EINVAL, "line %u: tenant '%s' has the same "
					  "token as tenant '%s' (line %u): every tenant needs its "
					  "own", line, t->name, l.t[i].name, l.t[i].line);
				goto out_free;
			}
		}
	}
	*out = l;
	return 0;

out_free:
	tenants_free(&l);
	return rc;
}
