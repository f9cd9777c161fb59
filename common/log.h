/* Levelled logging to stderr (or a file), one write(2) per line, with rate
 * limiting for messages that a misbehaving peer could otherwise repeat
 * without bound. */
#ifndef MUXSHIM_LOG_H
#define MUXSHIM_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

void log_init(const char *prog, enum log_level level);
/* From now on, lines are appended to this file instead of stderr (a Windows
 * service has no console). 0 or -errno; stderr stays on failure. */
int log_open_file(const char *path);
/* The file opened again by name (SIGHUP, after logrotate renamed it): new
 * lines go to the new file. 0, -ENOENT when logging to stderr, or -errno
 * (the old file stays in use). */
int log_reopen(void);
const char *log_file_path(void); /* NULL: stderr */
/* The log file's directory (held open for log_reopen), or -1. */
int log_file_dirfd(void);
int log_parse_level(const char *s, enum log_level *out);
bool log_enabled(enum log_level level);

void log_msg(enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) do { if (log_enabled(LOG_DEBUG)) log_msg(LOG_DEBUG, __VA_ARGS__); } while (0)

/* Untrusted text (process names, a peer's reason strings) made safe to
 * show: copies in[0..n) to out (always NUL-terminated, cap >= 1) with every
 * byte a terminal could act on or that is not valid UTF-8 written as \xNN:
 * C0 controls, DEL, C1 controls (U+0080-U+009F), and bytes of invalid,
 * overlong or surrogate sequences. Valid UTF-8 otherwise passes unchanged.
 * Stops before a character that would not fit whole. Returns the length.
 * Every log line goes through it. */
size_t log_sanitize(char *out, size_t cap, const char *in, size_t n);

/* At most one message per interval; the next one that passes reports how
 * many were suppressed in between. */
struct log_ratelimit {
	uint64_t interval_ms;
	uint64_t last_ms;
	unsigned suppressed;
	bool primed;
};

/* Returns true if a message may be logged now; *suppressed receives the
 * number dropped since the last one that passed. Pure: time is an input. */
bool log_ratelimit_pass(struct log_ratelimit *rl, uint64_t now_ms, unsigned *suppressed);

#endif
