/* muxshim-run's command line, parsed without side effects (unit-tested):
 *
 *   muxshim-run [wrapper options] [muxshim options] -- COMMAND [ARG...]
 *
 * The wrapper takes its own few options out; every other argument before
 * "--" goes to muxshim unchanged. */
#ifndef MUXSHIM_RUN_ARGS_H
#define MUXSHIM_RUN_ARGS_H

#include "log.h"

#include <stdbool.h>
#include <stddef.h>

#define RUN_DEFAULT_LISTEN      "/var/run/usbmuxd"
#define RUN_DEFAULT_READY_MS    10000u
#define RUN_DEFAULT_STOP_MS     5000u
#define RUN_RESTART_MAX_MS      30000u

enum run_on_shim_exit {
	RUN_SHIM_RESTART, /* log it and start muxshim again, with backoff */
	RUN_SHIM_EXIT,    /* stop the command and exit 125 */
};

struct run_args {
	const char *shim;          /* --shim; NULL: next to muxshim-run, else $PATH */
	unsigned ready_timeout_ms; /* --ready-timeout */
	unsigned stop_timeout_ms;  /* --stop-timeout */
	enum run_on_shim_exit on_shim_exit;
	bool help, version;
	/* Read from muxshim's own options (last one wins, as in muxshim). */
	const char *listen;
	enum log_level log_level;
	/* argv for muxshim: [0] is left NULL for the caller, NULL-terminated. */
	char **shim_argv;
	/* The command after "--", NULL-terminated (points into argv). */
	char **cmd;
};

/* 0, or -EINVAL with a one-line reason in err; -ENOMEM. On success
 * shim_argv is allocated (run_args_free). help/version end parsing early. */
int run_args_parse(int argc, char **argv, struct run_args *a, char *err, size_t errlen);
void run_args_free(struct run_args *a);

/* How long to wait before restart number n (1, 2, ...) of a muxshim that
 * keeps dying quickly: at once, then 250 ms doubling up to 30 s. */
unsigned run_restart_delay_ms(unsigned n);

#endif
