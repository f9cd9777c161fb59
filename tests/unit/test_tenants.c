#include "tenants.h"
#include "unit.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Token files, without files: "ok-A" ... name distinct strong tokens,
 * "weak" a short one, "missing" does not exist, "empty" is empty. */
static int fake_reader(void *ctx, const char *path, uint8_t *out, size_t cap, size_t *len)
{
	char *last = ctx;
	snprintf(last, 256, "%s", path);
	const char *base = path;
	for (const char *p = path; *p; p++)
		if (*p == '/' || *p == '\\')
			base = p + 1;
	if (strcmp(base, "missing") == 0)
		return -ENOENT;
	if (strcmp(base, "empty") == 0)
		return -EINVAL;
	if (strcmp(base, "weak") == 0) {
		memcpy(out, "abc", 3);
		*len = 3;
		return 0;
	}
	if (strncmp(base, "ok-", 3) == 0) {
		/* 64 hex digits, different per name. */
		char t[65];
		unsigned h = 2166136261u;
		for (const char *p = base; *p; p++)
			h = (h ^ (uint8_t)*p) * 16777619u;
		for (int i = 0; i < 64; i++) {
			h = h * 1103515245u + 12345u;
			t[i] = "0123456789abcdef"[(h >> 16) & 15];
		}
		if (cap < 64)
			return -EINVAL;
		memcpy(out, t, 64);
		*len = 64;
		return 0;
	}
	return -EACCES;
}

static int parse(const char *text, struct tenant_list *l, char *err)
{
	char last[256];
	return tenants_parse(text, strlen(text), "/etc/muxshim/", fake_reader, last, l, err, 256);
}

static void good_file(void)
{
	struct tenant_list l;
	char err[256] = "";
	const char *text = "# tenants\n"
			   "\n"
			   "team-a  ok-a  00008030-001A2B3C4D5E6F70,abc-def   # two phones\n"
			   "\tci\t/abs/ok-ci\t*\r\n"
			   "   # indented comment\n"
			   "x.y_z ok-x DEAD";
	CU_ASSERT_EQUAL_FATAL(parse(text, &l, err), 0);
	CU_ASSERT_EQUAL_FATAL(l.n, 3);
	CU_ASSERT_STRING_EQUAL(l.t[0].name, "team-a");
	CU_ASSERT_EQUAL(l.t[0].line, 3);
	CU_ASSERT_FALSE(l.t[0].all);
	CU_ASSERT_EQUAL(l.t[0].ndevices, 2);
	CU_ASSERT_TRUE(tenant_allows(&l.t[0], "00008030-001a2b3c4d5e6f70")); /* any case */
	CU_ASSERT_TRUE(tenant_allows(&l.t[0], "abc-def"));
	CU_ASSERT_FALSE(tenant_allows(&l.t[0], "abc"));
	CU_ASSERT_FALSE(tenant_allows(&l.t[0], "dead"));
	CU_ASSERT_TRUE(l.t[1].all);
	CU_ASSERT_TRUE(tenant_allows(&l.t[1], "anything"));
	CU_ASSERT_EQUAL(l.t[1].line, 4);
	CU_ASSERT_EQUAL(l.t[0].token_len, 64);
	CU_ASSERT_PTR_NOT_NULL(tenants_find(&l, "x.y_z"));
	CU_ASSERT_PTR_NULL(tenants_find(&l, "X.Y_Z"));
	tenants_free(&l);
	CU_ASSERT_EQUAL(parse("# nothing\n\n", &l, err), 0);
	CU_ASSERT_EQUAL(l.n, 0);
	tenants_free(&l);
}

static void relative_paths(void)
{
	struct tenant_list l;
	char last[256], err[256];
	const char *text = "a ok-a *\n";
	CU_ASSERT_EQUAL_FATAL(tenants_parse(text, strlen(text), "/etc/muxshim/", fake_reader, last,
					    &l, err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(last, "/etc/muxshim/ok-a");
	tenants_free(&l);
	text = "a C:\\keys\\ok-a *\n";
	CU_ASSERT_EQUAL_FATAL(tenants_parse(text, strlen(text), "/etc/muxshim/", fake_reader, last,
					    &l, err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(last, "C:\\keys\\ok-a");
	tenants_free(&l);
	char dir[64];
	tenants_dir_of("/etc/muxshim/tenants", dir, sizeof(dir));
	CU_ASSERT_STRING_EQUAL(dir, "/etc/muxshim/");
	tenants_dir_of("tenants", dir, sizeof(dir));
	CU_ASSERT_STRING_EQUAL(dir, "");
	tenants_dir_of("C:\\ProgramData\\muxshim\\tenants.txt", dir, sizeof(dir));
	CU_ASSERT_STRING_EQUAL(dir, "C:\\ProgramData\\muxshim\\");
}

/* Each bad file is refused with a sentence naming its line. */
static void bad_files(void)
{
	static const struct { const char *text, *expect; } cases[] = {
		{ "a ok-a\n", "line 1: expected NAME TOKEN_FILE DEVICES" },
		{ "\n\na ok-a * extra\n", "line 3: expected NAME TOKEN_FILE DEVICES" },
		{ "a ok-a *\na ok-b *\n", "line 2: tenant 'a' is already defined on line 1" },
		{ "a ok-a *\nb ok-a *\n", "line 2: tenant 'b' has the same token as tenant 'a'" },
		{ "a missing *\n", "line 1: tenant 'a': token file /etc/muxshim/missing:" },
		{ "a empty *\n", "line 1: tenant 'a': token file /etc/muxshim/empty: empty" },
		{ "a weak *\n", "line 1: tenant 'a': the token in /etc/muxshim/weak is too weak" },
		{ "a/b ok-a *\n", "line 1: the tenant name may hold only" },
		{ "abcdefghijabcdefghijabcdefghijabc ok-a *\n", "line 1: the tenant name must be 1 to 32" },
		{ "a ok-a x,,y\n", "line 1: tenant 'a': device 2 of the list is empty" },
		{ "a ok-a x,\n", "line 1: tenant 'a': device 2 of the list is empty" },
		{ "a ok-a x;y\n", "line 1: tenant 'a': device 1 of the list has a character" },
		{ "a ok-a **\n", "line 1: tenant 'a': device 1 of the list has a character" },
		{ "a ok-a *\nb ok-b x\0y\n", "line 2: a NUL byte" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct tenant_list l = { (void *)1, 99 }; /* untouched on error */
		char err[256] = "", last[256];
		size_t len = strlen(cases[i].text);
		if (strstr(cases[i].expect, "NUL"))
			len = sizeof("a ok-a *\nb ok-b x\0y\n") - 1;
		int rc = tenants_parse(cases[i].text, len, "/etc/muxshim/", fake_reader, last, &l, err,
				       sizeof(err));
		CU_ASSERT_EQUAL(rc, -EINVAL);
		CU_ASSERT_PTR_NOT_NULL(strstr(err, cases[i].expect));
		if (!strstr(err, cases[i].expect))
			fprintf(stderr, "case %zu: got '%s'\n", i, err);
		CU_ASSERT(l.t == (void *)1 && l.n == 99);
	}
}

static void limits(void)
{
	/* 257 devices; an over-long UDID; 257 tenants; a field longer than
	 * the bound; a tiny error buffer. */
	char *text = malloc(TENANTS_FILE_MAX + 2);
	char err[256];
	struct tenant_list l;
	CU_ASSERT_PTR_NOT_NULL_FATAL(text);
	size_t n = (size_t)sprintf(text, "a ok-a ");
	for (unsigned i = 0; i < TENANT_DEVICES_MAX + 1; i++)
		n += (size_t)sprintf(text + n, "%s%u", i ? "," : "", i);
	CU_ASSERT_EQUAL(parse(text, &l, err), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "257 devices, at most 256"));
	n = (size_t)sprintf(text, "a ok-a ");
	memset(text + n, 'a', 256);
	text[n + 256] = 0;
	CU_ASSERT_EQUAL(parse(text, &l, err), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "too long for a UDID"));
	n = 0;
	for (unsigned i = 0; i < TENANTS_MAX + 1; i++)
		n += (size_t)sprintf(text + n, "t%u ok-%u *\n", i, i);
	CU_ASSERT_EQUAL(parse(text, &l, err), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "line 257: more than 256 tenants"));
	memset(text, 'x', 5000);
	text[5000] = 0;
	CU_ASSERT_EQUAL(parse(text, &l, err), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "line 1: field 1 is longer"));
	memset(text, '\n', TENANTS_FILE_MAX + 1);
	char last[256];
	CU_ASSERT_EQUAL(tenants_parse(text, TENANTS_FILE_MAX + 1, "", fake_reader, last, &l, err,
				      sizeof(err)), -EINVAL);
	char tiny[4];
	CU_ASSERT_EQUAL(tenants_parse("a", 1, "", fake_reader, last, &l, tiny, sizeof(tiny)), -EINVAL);
	CU_ASSERT_EQUAL(strlen(tiny), 3);
	free(text);
}

int unit_tenants(void)
{
	static const struct unit_test t[] = {
		{ "tenants: a good file, comments, blanks, CRLF, case-insensitive UDIDs", good_file },
		{ "tenants: token paths relative to the file's directory", relative_paths },
		{ "tenants: each malformed file refused with its line number", bad_files },
		{ "tenants: limits on devices, UDIDs, tenants, fields, the file", limits },
		{ NULL, NULL },
	};
	return unit_add_suite("tenants", t);
}
