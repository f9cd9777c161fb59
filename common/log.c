#include "log.h"
#include "plat.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static const char *log_prog = "muxshim";
static enum log_level log_level = LOG_INFO;
static int log_fd = STDERR_FILENO;
/* The --log-file: its stream as first opened, or after a reopen a plain
 * descriptor (log_fd), and its directory for the reopen. */
static FILE *log_file;
static char log_path[4096];
static int log_dirfd = -1;
/* Lines no destination took (full disk, closed stderr), and why: reported
 * by the next line that gets through. */
static unsigned long log_lost;
static int log_lost_errno;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

void log_init(const char *prog, enum log_level level)
{
	log_prog = prog;
	log_level = level;
}

int log_open_file(const char *path)
{
	/* stdio only to open: "a" means append on every system (O_APPEND),
	 * and text mode on Windows, so lines end in CRLF there. */
	if (strlen(path) >= sizeof(log_path))
		return -ENAMETOOLONG;
	FILE *f = fopen(path, "a");
	if (!f)
		return -errno;
	log_file = f;
	log_fd = fileno(f);
	strcpy(log_path, path);
	if (plat_log_dir_open(path, &log_dirfd) < 0)
		log_dirfd = -1; /* no reopening here: log_reopen says so */
	return 0;
}

int log_reopen(void)
{
	if (log_fd == STDERR_FILENO)
		return -ENOENT;
	if (log_dirfd < 0)
		return -ENOTSUP;
	int fd;
	int rc = plat_log_reopen(log_dirfd, log_path, &fd);
	if (rc < 0)
		return rc;
	if (log_file) {
		fclose(log_file);
		log_file = NULL;
	} else {
		close(log_fd);
	}
	log_fd = fd;
	return 0;
}

const char *log_file_path(void)
{
	return log_fd == STDERR_FILENO ? NULL : log_path;
}

int log_file_dirfd(void)
{
	return log_dirfd;
}

int log_parse_level(const char *s, enum log_level *out)
{
	for (unsigned i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcasecmp(s, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

bool log_enabled(enum log_level level)
{
	return level <= log_level;
}

/* One whole line to the log destination, else to stderr when the
 * destination is a file (a full disk should not silence the daemon).
 * A failure never takes the daemon down: the line is counted as lost. */
static int emit_to(int fd, const char *p, size_t len)
{
	/* A pipe nobody reads (a stuck log collector) would block the daemon
	 * in write(): such a line is lost instead, and counted. */
	if (!plat_fd_writable_now(fd)) {
		log_lost_errno = EAGAIN;
		return -1;
	}
	ssize_t w = write(fd, p, len);
	if (w == (ssize_t)len)
		return 0;
	log_lost_errno = w < 0 ? errno : ENOSPC;
	return -1;
}

static int emit(const char *p, size_t len)
{
	if (emit_to(log_fd, p, len) == 0)
		return 0;
	if (log_fd != STDERR_FILENO && emit_to(STDERR_FILENO, p, len) == 0)
		return 0;
	return -1;
}

/* "N log lines were lost", with the prefix (time, program, level) of the
 * line about to be written. */
static int emit_lost_note(const char *prefix, size_t prefix_len)
{
	char note[256];
	int n = snprintf(note, sizeof(note), "%.*s%lu log line%s lost (%s)\n", (int)prefix_len,
			 prefix, log_lost, log_lost == 1 ? " was" : "s were", strerror(log_lost_errno));
	if (n < 0 || (size_t)n >= sizeof(note))
		return -1;
	if (emit(note, (size_t)n) < 0)
		return -1;
	log_lost = 0;
	return 0;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	if (!log_enabled(level))
		return;

	char line[1024];
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s[%ld] %s: ",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
			 tm.tm_sec, ts.tv_nsec / 1000000, log_prog, (long)getpid(),
			 level_names[level]);
	if (n < 0)
		return;
	/* The message may carry untrusted text (process names, a peer's
	 * reasons): escaped, so that no byte reaches a terminal or a log
	 * viewer as a control, and a line stays one line. */
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	size_t mlen = m < 0 ? 0 : (size_t)m < sizeof(msg) ? (size_t)m : sizeof(msg) - 1;
	/* truncated if need be: still one whole line, room left for its end */
	size_t len = (size_t)n + log_sanitize(line + n, sizeof(line) - 1 - (size_t)n, msg, mlen);
	line[len++] = '\n';
	if (log_lost && emit_lost_note(line, (size_t)n) < 0) {
		log_lost++;
		return;
	}
	if (emit(line, len) < 0)
		log_lost++;
}

/* Length of the valid UTF-8 character at p (n bytes available) that is
 * safe to show, or 0 when p[0] must be escaped. */
static size_t safe_char(const unsigned char *p, size_t n)
{
	unsigned char b = p[0];
	if (b < 0x80)
		return b >= 0x20 && b != 0x7f;
	size_t len;
	unsigned char lo = 0x80, hi = 0xbf; /* range of the second byte */
	if (b >= 0xc2 && b <= 0xdf) {
		len = 2;
		if (b == 0xc2)
			lo = 0xa0; /* U+0080-U+009F: the C1 controls */
	} else if (b >= 0xe0 && b <= 0xef) {
		len = 3;
		if (b == 0xe0)
			lo = 0xa0; /* overlong */
		else if (b == 0xed)
			hi = 0x9f; /* surrogates */
	} else if (b >= 0xf0 && b <= 0xf4) {
		len = 4;
		if (b == 0xf0)
			lo = 0x90; /* overlong */
		else if (b == 0xf4)
			hi = 0x8f; /* beyond U+10FFFF */
	} else {
		return 0;
	}
	if (n < len || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return len;
}

size_t log_sanitize(char *out, size_t cap, const char *in, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)in;
	size_t o = 0;
	for (size_t i = 0; i < n;) {
		size_t k = safe_char(p + i, n - i);
		if (k) {
			if (o + k >= cap)
				break;
			memcpy(out + o, p + i, k);
			o += k;
			i += k;
			continue;
		}
		if (o + 4 >= cap)
			break;
		out[o++] = '\\';
		out[o++] = 'x';
		out[o++] = hex[p[i] >> 4];
		out[o++] = hex[p[i] & 15];
		i++;
	}
	out[o] = '\0';
	return o;
}

bool log_ratelimit_pass(struct log_ratelimit *rl, uint64_t now_ms, unsigned *suppressed)
{
	if (rl->primed && now_ms - rl->last_ms < rl->interval_ms) {
		rl->suppressed++;
		return false;
	}
	*suppressed = rl->suppressed;
	rl->suppressed = 0;
	rl->last_ms = now_ms;
	rl->primed = true;
	return true;
}
