#include "daemon.h"

#include "plat.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void acceptor_set(struct acceptor *a)
{
	bool on = !a->paused && a->has_room(a->ctx);
	int rc = loop_watch_set(a->loop, &a->w, on ? LOOP_IN : 0);
	if (rc < 0)
		log_error("cannot watch the listening socket: %s", plat_strerror(-rc));
}

static void on_pause_end(struct loop_timer *t)
{
	struct acceptor *a = t->ctx;
	a->paused = false;
	acceptor_set(a);
}

void acceptor_pause(struct acceptor *a, int err)
{
	unsigned suppressed;
	if (a->paused)
		return;
	if (log_ratelimit_pass(&a->rl, loop_now(a->loop), &suppressed))
		log_warn("out of file descriptors (%s): not accepting for %d ms%s",
			 plat_strerror(-err), ACCEPT_PAUSE_MS, suppressed ? " (again)" : "");
	a->paused = true;
	loop_timer_arm(a->loop, &a->pause, ACCEPT_PAUSE_MS);
	acceptor_set(a);
}

static void on_readable(struct loop_watch *w, unsigned ev)
{
	struct acceptor *a = w->ctx;
	(void)ev;
	for (unsigned i = 0; i < a->per_wake && a->has_room(a->ctx); i++) {
		int fd;
		int rc = plat_accept(w->fd, &fd);
		if (rc == -EAGAIN)
			break;
		if (rc == -ECONNABORTED)
			continue;
		if (rc < 0) {
			acceptor_pause(a, rc);
			break;
		}
		a->accepted(a->ctx, fd);
	}
	acceptor_set(a);
}

void acceptor_start(struct acceptor *a, struct loop *l, int fd, unsigned per_wake,
		    bool (*has_room)(void *ctx), void (*accepted)(void *ctx, int fd), void *ctx)
{
	a->loop = l;
	a->paused = false;
	a->per_wake = per_wake;
	a->rl = (struct log_ratelimit){ .interval_ms = 10000 };
	a->has_room = has_room;
	a->accepted = accepted;
	a->ctx = ctx;
	loop_watch_init(&a->w, fd, on_readable, a);
	loop_timer_init(&a->pause, on_pause_end, a);
	acceptor_set(a);
}

void acceptor_update(struct acceptor *a)
{
	if (a->w.fd >= 0)
		acceptor_set(a);
}

void acceptor_stop(struct acceptor *a)
{
	loop_timer_cancel(a->loop, &a->pause);
	loop_watch_remove(a->loop, &a->w);
}

/* Room for a token of cap bytes plus the line ends an editor may add. */
#define TOKEN_FILE_SLACK 64

int daemon_read_token(const char *path, uint8_t *out, size_t cap, size_t *len)
{
	char *text;
	size_t size;
	int rc = plat_read_file(path, cap + TOKEN_FILE_SLACK, &text, &size);
	if (rc == -EFBIG)
		return -EINVAL;
	if (rc < 0)
		return rc;
	/* Every byte counts, NULs too: a token made with
	 * `head -c 32 /dev/urandom` is used whole, not up to its first NUL. */
	size_t n = size;
	while (n && (text[n - 1] == '\n' || text[n - 1] == '\r'))
		n--;
	rc = n == 0 || n > cap ? -EINVAL : 0;
	if (rc == 0) {
		memcpy(out, text, n);
		*len = n;
	}
	memset(text, 0, size);
	free(text);
	return rc;
}

#define TOKEN_MIN_BITS      128
#define TOKEN_MIN_DISTINCT  8
#define TOKEN_GEN_BYTES     32

static bool is_hex(uint8_t c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool is_base64(uint8_t c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       c == '+' || c == '/' || c == '-' || c == '_';
}

const char *daemon_token_weakness(const uint8_t *t, size_t n)
{
	/* Padding carries nothing: "...==" counts as the characters before it. */
	size_t m = n;
	while (m && t[m - 1] == '=' && n - m < 2)
		m--;
	bool digits = true, hex = true, b64 = true, text = true;
	bool seen[256] = { false };
	unsigned distinct = 0;
	for (size_t i = 0; i < m; i++) {
		uint8_t c = t[i];
		digits &= c >= '0' && c <= '9';
		hex &= is_hex(c);
		b64 &= is_base64(c);
		text &= c >= 0x20 && c <= 0x7e;
		if (!seen[c]) {
			seen[c] = true;
			distinct++;
		}
	}
	/* Hundredths of a bit per byte: log2 10, log2 16, 6 (base64; printable
	 * text is counted the same, below its log2 95, to stay on the safe side),
	 * 8 for binary. */
	unsigned per = digits ? 332 : hex ? 400 : (b64 || text) ? 600 : 800;
	if ((uint64_t)m * per < TOKEN_MIN_BITS * 100u)
		return digits ? "it is too short: decimal digits need at least 39 of them" :
		       hex    ? "it is too short: hex digits need at least 32 of them" :
		       (b64 || text) ? "it is too short: text or base64 needs at least 22 characters" :
				       "it is too short: binary tokens need at least 16 bytes";
	if (distinct < TOKEN_MIN_DISTINCT)
		return "it uses fewer than 8 different characters: that is a pattern, not a random "
		       "token";
	for (size_t period = 1; period <= m / 2; period++) {
		size_t i = period;
		while (i < m && t[i] == t[i - period])
			i++;
		if (i == m)
			return "it repeats a shorter piece: that is a pattern, not a random token";
	}
	return NULL;
}

int daemon_load_token(const char *prog, const char *path, uint8_t *out, size_t cap, size_t *len,
		      char *err, size_t errlen)
{
	int rc = daemon_read_token(path, out, cap, len);
	if (rc == -EINVAL) {
		snprintf(err, errlen, "--token-file %s: the file must hold 1 to %zu bytes", path, cap);
		return rc;
	}
	if (rc < 0) {
		snprintf(err, errlen, "--token-file %s: %s", path, plat_strerror(-rc));
		return rc;
	}
	const char *weak = daemon_token_weakness(out, *len);
	if (weak) {
		memset(out, 0, cap);
		*len = 0;
		snprintf(err, errlen,
			 "--token-file %s: refusing this token: %s. A token needs at least 128 random "
			 "bits; make one with `%s --gen-token FILE` (or `openssl rand -hex 32 "
			 "> FILE`) and give the same file "
			 "to muxshim-host and every shim",
			 path, weak, prog);
		return -EINVAL;
	}
	return 0;
}

int daemon_gen_token(const char *prog, const char *path)
{
	static const char digits[] = "0123456789abcdef";
	uint8_t raw[TOKEN_GEN_BYTES];
	char text[2 * TOKEN_GEN_BYTES + 1];
	int rc = plat_random(raw, sizeof(raw));
	if (rc < 0) {
		fprintf(stderr, "%s: --gen-token: no random bytes from the system: %s\n", prog,
			plat_strerror(-rc));
		return 1;
	}
	for (size_t i = 0; i < sizeof(raw); i++) {
		text[2 * i] = digits[raw[i] >> 4];
		text[2 * i + 1] = digits[raw[i] & 15];
	}
	text[sizeof(text) - 1] = '\n';
	rc = plat_write_new_file(path, text, sizeof(text));
	memset(raw, 0, sizeof(raw));
	memset(text, 0, sizeof(text));
	if (rc < 0) {
		fprintf(stderr, "%s: --gen-token %s: %s%s\n", prog, path, plat_strerror(-rc),
			rc == -EEXIST ? " (an existing file is never overwritten: remove it "
					"first, or choose another name)" : "");
		return 1;
	}
	fprintf(stderr, "%s: wrote a new token (%d random bits, as hex) to %s, readable by its "
		"owner only; give the same file to muxshim-host (--token-file) and to every shim\n",
		prog, 8 * TOKEN_GEN_BYTES, path);
	return 0;
}

static void reopen_log(void)
{
	const char *path = log_file_path();
	int rc = log_reopen();
	if (rc == -ENOENT)
		log_info("SIGHUP: logging to stderr, no log file to reopen");
	else if (rc < 0)
		log_warn("SIGHUP: cannot reopen the log file %s: %s (still writing to the old one)",
			 path, plat_strerror(-rc));
	else
		log_info("SIGHUP: reopened the log file %s", path);
}

static void on_signal(struct loop_watch *w, unsigned ev)
{
	(void)ev;
	struct daemon_signals *ds = w->ctx;
	struct plat_signals got;
	plat_signals_take(w->fd, &got);
	if (got.hup) {
		reopen_log();
		if (ds->reload)
			ds->reload(ds->ctx);
	}
	if (got.usr1) {
		log_info("SIGUSR1: status");
		if (ds->status)
			ds->status(ds->ctx);
	}
	if (got.usr2)
		log_info("SIGUSR2: ignored (reserved)");
	ds->stop = got.stop;
}

int daemon_watch_signals(struct loop *l, struct daemon_signals *ds)
{
	int fd;
	int rc = plat_signals_init(&fd);
	if (rc < 0)
		return rc;
	ds->stop = 0;
	loop_watch_init(&ds->w, fd, on_signal, ds);
	return loop_watch_set(l, &ds->w, LOOP_IN);
}

int daemon_harden(const char *user, bool seccomp)
{
	if (user) {
		int rc = plat_drop_user(user);
		if (rc < 0) {
			log_error("--user %s: %s", user,
				  rc == -ESRCH   ? "no such user" :
				  rc == -ENOTSUP ? "not supported on this platform (run the service "
						   "under the account it should use)" :
				  rc == -EPERM   ? "only root can become another user" :
						   plat_strerror(-rc));
			return rc;
		}
		log_info("running as user %s", user);
	}
	const char *strict_env = getenv("MUXSHIM_SECCOMP_STRICT");
	bool strict = strict_env && strcmp(strict_env, "1") == 0;
	if (seccomp) {
		int rc = plat_sandbox_enter(strict, log_file_dirfd());
		if (rc == -ENOTSUP) {
			log_debug("no seccomp sandbox on this platform");
		} else if (rc < 0) {
			log_error("cannot enter the seccomp sandbox: %s (--no-seccomp runs without it)",
				  plat_strerror(-rc));
			return rc;
		} else {
			log_info("seccomp sandbox on: calls outside the allow-list %s",
				 strict ? "kill the process (strict)" : "fail with EPERM");
		}
	} else {
		log_warn("seccomp sandbox off (--no-seccomp)");
	}
	const char *probe = getenv("MUXSHIM_SECCOMP_PROBE");
	if (probe && strcmp(probe, "1") == 0) {
		int rc = plat_sandbox_probe();
		log_info("seccomp probe: execve %s (%s)", rc == -EPERM ? "was denied" : "was NOT denied",
			 plat_strerror(-rc));
	}
	return 0;
}
