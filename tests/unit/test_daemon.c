#include "daemon.h"
#include "unit.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/tmp/muxshim-unit.XXXXXX";

static const char *put(const void *p, size_t n)
{
	static char path[64];
	snprintf(path, sizeof(path), "%s/token", dir);
	FILE *f = fopen(path, "wb");
	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	CU_ASSERT_EQUAL(fwrite(p, 1, n, f), n);
	fclose(f);
	return path;
}

static int read_token(const void *p, size_t n, uint8_t *out, size_t *len)
{
	return daemon_read_token(put(p, n), out, 256, len);
}

static void token_text_and_line_ends(void)
{
	uint8_t tok[256];
	size_t len = 0;
	CU_ASSERT_EQUAL(read_token("s3cret\n", 7, tok, &len), 0);
	CU_ASSERT_EQUAL(len, 6);
	CU_ASSERT_EQUAL(memcmp(tok, "s3cret", 6), 0);
	CU_ASSERT_EQUAL(read_token("s3cret\r\n\r\n", 10, tok, &len), 0);
	CU_ASSERT_EQUAL(len, 6);
	CU_ASSERT_EQUAL(read_token("a\nb", 3, tok, &len), 0); /* inner newline kept */
	CU_ASSERT_EQUAL(len, 3);
	CU_ASSERT_EQUAL(read_token("", 0, tok, &len), -EINVAL);
	CU_ASSERT_EQUAL(read_token("\n\r\n", 3, tok, &len), -EINVAL);
	char missing[80];
	snprintf(missing, sizeof(missing), "%s/nothing-here", dir);
	CU_ASSERT_EQUAL(daemon_read_token(missing, tok, sizeof(tok), &len), -ENOENT);
}

/* A binary token was cut at its first NUL: a 32-byte random token from
 * /dev/urandom with a NUL at byte 2 became a 2-byte secret, silently. */
static void binary_token_used_whole(void)
{
	uint8_t tok[256], bin[32];
	size_t len = 0;
	for (size_t i = 0; i < sizeof(bin); i++)
		bin[i] = (uint8_t)(i * 37 + 1);
	bin[2] = 0;
	bin[20] = 0;
	CU_ASSERT_EQUAL(read_token(bin, sizeof(bin), tok, &len), 0);
	CU_ASSERT_EQUAL(len, sizeof(bin));
	CU_ASSERT_EQUAL(memcmp(tok, bin, sizeof(bin)), 0);
	bin[0] = 0; /* starts with a NUL: was "empty" */
	CU_ASSERT_EQUAL(read_token(bin, sizeof(bin), tok, &len), 0);
	CU_ASSERT_EQUAL(len, sizeof(bin));
}

/* The file was read only to 258 bytes, so a longer file whose bytes 257-258
 * were a line end passed as its first 256 bytes. */
static void long_files_refused_not_cut(void)
{
	uint8_t tok[256];
	char text[400];
	size_t len = 0;
	memset(text, 'k', sizeof(text));
	CU_ASSERT_EQUAL(read_token(text, 256, tok, &len), 0);
	CU_ASSERT_EQUAL(len, 256);
	memcpy(text + 256, "\r\n", 2);
	CU_ASSERT_EQUAL(read_token(text, 258, tok, &len), 0);
	CU_ASSERT_EQUAL(len, 256);
	CU_ASSERT_EQUAL(read_token(text, 300, tok, &len), -EINVAL); /* was accepted, cut */
	memset(text, 'k', sizeof(text));
	CU_ASSERT_EQUAL(read_token(text, 257, tok, &len), -EINVAL);
	CU_ASSERT_EQUAL(read_token(text, sizeof(text), tok, &len), -EINVAL);
}

static const char *weak(const char *t)
{
	return daemon_token_weakness((const uint8_t *)t, strlen(t));
}

/* Tokens of any length were accepted ("s3cret"): one short enough to guess
 * offline from a single recorded proof. */
static void token_needs_128_bits(void)
{
	/* Hex: 4 bits a digit, 32 needed. */
	CU_ASSERT_PTR_NULL(weak("213a48970376677a14c03e52e199c3e0"));
	CU_ASSERT_PTR_NOT_NULL(weak("213a48970376677a14c03e52e199c3e"));
	/* Decimal digits: 39 needed. */
	CU_ASSERT_PTR_NULL(weak("814723905612837465019283746501928374651"));
	CU_ASSERT_PTR_NOT_NULL(weak("81472390561283746501928374650192837465"));
	/* Base64 (padding does not count) and other text: 22 needed. */
	CU_ASSERT_PTR_NULL(weak("q3Zx9L+aP0v/Wm2TbK7cYd"));
	CU_ASSERT_PTR_NOT_NULL(weak("q3Zx9L+aP0v/Wm2TbK7cY=="));
	CU_ASSERT_PTR_NULL(weak("Ijx6n8Zq1mC3rWb0pK9sTe4vYh2uGd7aLf5oN1xQ8kE=")); /* 32 bytes, base64 */
	CU_ASSERT_PTR_NOT_NULL(weak("correct horse battery"));
	CU_ASSERT_PTR_NULL(weak("correct horse battery staple"));
	CU_ASSERT_PTR_NOT_NULL(weak("s3cret"));
	/* Binary: 16 bytes. */
	uint8_t bin[16];
	for (size_t i = 0; i < sizeof(bin); i++)
		bin[i] = (uint8_t)(i * 37 + 129);
	CU_ASSERT_PTR_NULL(daemon_token_weakness(bin, 16));
	CU_ASSERT_PTR_NOT_NULL(daemon_token_weakness(bin, 15));
}

static void token_patterns_refused(void)
{
	CU_ASSERT_PTR_NOT_NULL(weak("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
	CU_ASSERT_PTR_NOT_NULL(weak("abababababababababababababababababababab"));
	CU_ASSERT_PTR_NOT_NULL(weak("0123456789abcdef0123456789abcdef")); /* a repeated piece */
	CU_ASSERT_PTR_NOT_NULL(weak("0123456789abcdef0123456789abcdef0123")); /* and a partial one */
	CU_ASSERT_PTR_NOT_NULL(weak("1111111111222222222233333333334444444444"));
	uint8_t zeros[64] = { 0 };
	CU_ASSERT_PTR_NOT_NULL(daemon_token_weakness(zeros, sizeof(zeros)));
}

/* --gen-token: a new 0600 file holding a token the rule accepts; never
 * over an existing file. */
static void token_generated(void)
{
	char path[80];
	snprintf(path, sizeof(path), "%s/generated", dir);
	unlink(path);
	CU_ASSERT_EQUAL_FATAL(daemon_gen_token("unit", path), 0);
	struct stat st;
	CU_ASSERT_EQUAL_FATAL(stat(path, &st), 0);
	CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
	uint8_t tok[256];
	size_t len = 0;
	char err[512];
	CU_ASSERT_EQUAL(daemon_load_token("unit", path, tok, sizeof(tok), &len, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL(len, 64);
	uint8_t first[64];
	memcpy(first, tok, sizeof(first));
	CU_ASSERT_NOT_EQUAL(daemon_gen_token("unit", path), 0); /* exists: not overwritten */
	CU_ASSERT_EQUAL(daemon_load_token("unit", path, tok, sizeof(tok), &len, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL(memcmp(tok, first, sizeof(first)), 0);
	unlink(path);
	CU_ASSERT_EQUAL(daemon_gen_token("unit", path), 0);
	CU_ASSERT_EQUAL(daemon_load_token("unit", path, tok, sizeof(tok), &len, err, sizeof(err)), 0);
	CU_ASSERT_NOT_EQUAL(memcmp(tok, first, sizeof(first)), 0); /* fresh each time */
	unlink(path);
	CU_ASSERT_EQUAL(daemon_load_token("unit", put("s3cret\n", 7), tok, sizeof(tok), &len, err,
					  sizeof(err)), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "--gen-token"));
}

static int setup(void)
{
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void)
{
	char path[64];
	snprintf(path, sizeof(path), "%s/token", dir);
	unlink(path);
	return rmdir(dir);
}

int unit_daemon(void)
{
	static const struct unit_test t[] = {
		{ "token: text and line ends", token_text_and_line_ends },
		{ "token: binary, NULs included (was cut at the first NUL)", binary_token_used_whole },
		{ "token: longer files refused, not cut", long_files_refused_not_cut },
		{ "token: at least 128 bits by its alphabet (any length was taken)", token_needs_128_bits },
		{ "token: repeated characters and pieces refused", token_patterns_refused },
		{ "token: --gen-token writes a new 0600 file, never over one", token_generated },
		{ NULL, NULL },
	};
	CU_pSuite s = CU_add_suite("daemon", setup, teardown);
	if (!s)
		return -1;
	for (const struct unit_test *u = t; u->name; u++)
		if (!CU_add_test(s, u->name, u->fn))
			return -1;
	return 0;
}
