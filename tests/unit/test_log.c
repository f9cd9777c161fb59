#include "log.h"
#include "unit.h"

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

static void ratelimit_windows(void)
{
	struct log_ratelimit rl = { .interval_ms = 1000 };
	unsigned sup = 99;
	CU_ASSERT_TRUE(log_ratelimit_pass(&rl, 5000, &sup));
	CU_ASSERT_EQUAL(sup, 0);
	CU_ASSERT_FALSE(log_ratelimit_pass(&rl, 5001, &sup));
	CU_ASSERT_FALSE(log_ratelimit_pass(&rl, 5999, &sup));
	CU_ASSERT_TRUE(log_ratelimit_pass(&rl, 6000, &sup));
	CU_ASSERT_EQUAL(sup, 2); /* reports what it swallowed */
	CU_ASSERT_TRUE(log_ratelimit_pass(&rl, 9000, &sup));
	CU_ASSERT_EQUAL(sup, 0);
}

static void ratelimit_first_at_time_zero(void)
{
	struct log_ratelimit rl = { .interval_ms = 1000 };
	unsigned sup;
	CU_ASSERT_TRUE(log_ratelimit_pass(&rl, 0, &sup));
	CU_ASSERT_FALSE(log_ratelimit_pass(&rl, 10, &sup));
}

static void level_names(void)
{
	enum log_level l;
	CU_ASSERT_EQUAL(log_parse_level("debug", &l), 0);
	CU_ASSERT_EQUAL(l, LOG_DEBUG);
	CU_ASSERT_EQUAL(log_parse_level("WARN", &l), 0);
	CU_ASSERT_EQUAL(l, LOG_WARN);
	CU_ASSERT_EQUAL(log_parse_level("verbose", &l), -1);
	CU_ASSERT_EQUAL(log_parse_level("", &l), -1);
}

static size_t drain(int fd, char *out, size_t cap)
{
	ssize_t r = read(fd, out, cap - 1);
	out[r > 0 ? r : 0] = 0;
	return r > 0 ? (size_t)r : 0;
}

/* A log file on a full disk falls back to stderr; when nothing takes a
 * line, the next line that gets through says how many were lost. */
static void full_disk_and_lost_lines(void)
{
	int p[2], saved = dup(STDERR_FILENO), full = open("/dev/full", O_WRONLY);
	char got[4096];
	CU_ASSERT_FATAL(saved >= 0 && full >= 0 && pipe(p) == 0);
	CU_ASSERT_FATAL(fcntl(p[0], F_SETFL, O_NONBLOCK) == 0);
	dup2(p[1], STDERR_FILENO);
	log_init("unit", LOG_INFO);
	CU_ASSERT_EQUAL(log_open_file("/dev/full"), 0);

	log_error("to the full disk");
	drain(p[0], got, sizeof(got));
	CU_ASSERT_PTR_NOT_NULL(strstr(got, "to the full disk")); /* via stderr */

	dup2(full, STDERR_FILENO); /* now nothing takes a line */
	log_error("lost one");
	log_warn("lost two");
	dup2(p[1], STDERR_FILENO);
	log_info("back");
	drain(p[0], got, sizeof(got));
	CU_ASSERT_PTR_NOT_NULL(strstr(got, "2 log lines were lost (No space left on device)\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(got, "back\n"));
	CU_ASSERT_PTR_NULL(strstr(got, "lost one"));
	log_info("again");
	drain(p[0], got, sizeof(got));
	CU_ASSERT_PTR_NULL(strstr(got, "were lost")); /* reported once */

	dup2(saved, STDERR_FILENO);
	CU_ASSERT_EQUAL(log_open_file("/dev/stderr"), 0);
	close(saved);
	close(full);
	close(p[0]);
	close(p[1]);
}

/* A pipe nobody drains must not block the daemon: the line is lost and
 * reported once the pipe has room again. */
static void undrained_pipe_does_not_block(void)
{
	int p[2], saved = dup(STDERR_FILENO);
	char got[4096];
	CU_ASSERT_FATAL(saved >= 0 && pipe(p) == 0);
	CU_ASSERT_FATAL(fcntl(p[0], F_SETFL, O_NONBLOCK) == 0);
	CU_ASSERT_FATAL(fcntl(p[1], F_SETFL, O_NONBLOCK) == 0); /* only to fill it here */
	while (write(p[1], got, sizeof(got)) > 0)
		;
	CU_ASSERT_FATAL(fcntl(p[1], F_SETFL, 0) == 0); /* blocking, as a daemon's stderr */
	dup2(p[1], STDERR_FILENO);
	CU_ASSERT_EQUAL(log_open_file("/dev/stderr"), 0);
	log_error("into a full pipe"); /* would block forever without the check */
	while (drain(p[0], got, sizeof(got)) > 0)
		;
	log_info("drained");
	drain(p[0], got, sizeof(got));
	CU_ASSERT_PTR_NOT_NULL(strstr(got, "1 log line was lost (Resource temporarily unavailable)"));
	CU_ASSERT_PTR_NOT_NULL(strstr(got, "drained\n"));
	dup2(saved, STDERR_FILENO);
	CU_ASSERT_EQUAL(log_open_file("/dev/stderr"), 0);
	close(saved);
	close(p[0]);
	close(p[1]);
}

static void sanitize_is(const char *in, size_t n, const char *want)
{
	char out[128];
	size_t len = log_sanitize(out, sizeof(out), in, n);
	CU_ASSERT_STRING_EQUAL(out, want);
	CU_ASSERT_EQUAL(len, strlen(want));
}

/* Untrusted names: controls and bytes that are not valid UTF-8 become \xNN;
 * valid UTF-8 (other than the C1 controls) passes unchanged; a character
 * that does not fit whole is not cut. */
static void sanitize_untrusted_text(void)
{
	sanitize_is("\x1b[31mEVIL\"", 10, "\\x1b[31mEVIL\"");
	sanitize_is("a\nb\rc\td\x7f", 8, "a\\x0ab\\x0dc\\x09d\\x7f");
	sanitize_is("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
	sanitize_is("\xc2\x9b" "1m", 4, "\\xc2\\x9b1m");          /* C1 CSI, UTF-8 encoded */
	sanitize_is("\xff\xfe", 2, "\\xff\\xfe");
	sanitize_is("\xc0\xaf", 2, "\\xc0\\xaf");                  /* overlong '/' */
	sanitize_is("\xed\xa0\x80", 3, "\\xed\\xa0\\x80");         /* a surrogate */
	sanitize_is("\xf4\x90\x80\x80", 4, "\\xf4\\x90\\x80\\x80"); /* beyond U+10FFFF */
	sanitize_is("ab\xe2\x82", 4, "ab\\xe2\\x82");              /* cut short */
	sanitize_is("a\0b", 3, "a\\x00b");
	char out[6];
	CU_ASSERT_EQUAL(log_sanitize(out, sizeof(out), "ab\x1b", 3), 2); /* \x1b does not fit */
	CU_ASSERT_STRING_EQUAL(out, "ab");
	CU_ASSERT_EQUAL(log_sanitize(out, 5, "abc\xc3\xa9", 5), 3); /* nor does half of U+00E9 */
	CU_ASSERT_STRING_EQUAL(out, "abc");
}

int unit_log(void)
{
	static const struct unit_test t[] = {
		{ "rate limit windows and counts", ratelimit_windows },
		{ "rate limit at time zero", ratelimit_first_at_time_zero },
		{ "level names", level_names },
		{ "full disk, lost lines reported", full_disk_and_lost_lines },
		{ "an undrained pipe does not block", undrained_pipe_does_not_block },
		{ "untrusted text is escaped", sanitize_untrusted_text },
		{ NULL, NULL },
	};
	return unit_add_suite("log", t);
}
