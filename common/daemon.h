/* Pieces both daemons need around their loop: an accepting listener that
 * survives descriptor exhaustion, the token file, and signals as events. */
#ifndef MUXSHIM_DAEMON_H
#define MUXSHIM_DAEMON_H

#include "log.h"
#include "loop.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ACCEPT_PAUSE_MS 1000

/* Accepts while its owner has room; when accept fails (EMFILE, ENFILE, ...)
 * it stops for ACCEPT_PAUSE_MS instead of spinning on a listener that stays
 * readable: pending peers wait in the listen queue meanwhile. */
struct acceptor {
	struct loop *loop;
	struct loop_watch w;
	struct loop_timer pause;
	bool paused;
	unsigned per_wake;
	struct log_ratelimit rl;
	bool (*has_room)(void *ctx);
	void (*accepted)(void *ctx, int fd);
	void *ctx;
};

void acceptor_start(struct acceptor *a, struct loop *l, int fd, unsigned per_wake,
		    bool (*has_room)(void *ctx), void (*accepted)(void *ctx, int fd), void *ctx);
/* The owner ran out of descriptors elsewhere (e.g. opening an upstream
 * connection): stop accepting for ACCEPT_PAUSE_MS, with a log line. */
void acceptor_pause(struct acceptor *a, int err);
/* Call when the owner's room changed (a session ended). */
void acceptor_update(struct acceptor *a);
void acceptor_stop(struct acceptor *a);

/* A token file holds one secret of 1..cap bytes, any bytes (binary is
 * fine); trailing newlines (LF or CR) are not part of it. 0, -EINVAL (empty
 * or too long) or a read error. */
int daemon_read_token(const char *path, uint8_t *out, size_t cap, size_t *len);

/* Does a token carry at least 128 bits, as far as its bytes can tell?
 * Each byte counts for what its alphabet allows: decimal digits only 3.3
 * bits, hex digits 4, base64 or other printable text 6, anything else 8;
 * so at least 39 digits, 32 hex digits, 22 base64 or text characters or
 * 16 binary bytes. Obviously patterned tokens (fewer than 8 different
 * bytes, or a shorter piece repeated) are refused whatever their length.
 * No rule can tell a random token from a chosen one: --gen-token makes
 * random ones. NULL if acceptable, else why not (static text). Pure. */
const char *daemon_token_weakness(const uint8_t *t, size_t n);

/* Reads a token file (daemon_read_token) and refuses a weak token. 0 or a
 * negative errno with a message for the user in err, which says how to
 * make a good one. */
int daemon_load_token(const char *prog, const char *path, uint8_t *out, size_t cap, size_t *len,
		      char *err, size_t errlen);

/* --gen-token FILE: writes a fresh token (32 bytes from the platform's
 * random generator, as 64 hex digits and a line end) to a new file that
 * only its owner can read; an existing file is never overwritten. Prints
 * what it did and returns the exit status. */
int daemon_gen_token(const char *prog, const char *path);

/* Signals, handled in the loop (the handlers only count): SIGTERM, SIGINT
 * and every other signal that would end the process set stop to its number;
 * SIGHUP reopens the log file (logrotate's convention), then calls reload; SIGUSR1 calls
 * status (a status line in the log); SIGUSR2 is logged and ignored. */
struct daemon_signals {
	struct loop_watch w;
	int stop;                  /* 0 until a signal asks the daemon to end */
	void (*status)(void *ctx); /* SIGUSR1; may be NULL */
	void (*reload)(void *ctx); /* SIGHUP, after the log file; may be NULL */
	void *ctx;
};
int daemon_watch_signals(struct loop *l, struct daemon_signals *ds);

/* The last step of setup, once sockets are bound and files open: become
 * `user` (NULL: stay), then enter the sandbox unless seccomp is false.
 * Environment, for the test suites: MUXSHIM_SECCOMP_STRICT=1 makes a call
 * outside the allow-list kill the process; MUXSHIM_SECCOMP_PROBE=1 makes one
 * such call afterwards and logs whether it was denied. 0, or a negative
 * errno after an error line was logged. */
int daemon_harden(const char *user, bool seccomp);
#endif
