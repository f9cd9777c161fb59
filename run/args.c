#include "args.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse_ms(const char *s, unsigned max, unsigned *out)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v > max)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

/* "--name VALUE" or "--name=VALUE": the value, advancing *i past it; NULL
 * if argv[*i] is not this option. *missing is set when the value is absent. */
static const char *opt_value(int argc, char **argv, int *i, const char *name, bool *missing)
{
	size_t n = strlen(name);
	if (strncmp(argv[*i], name, n) != 0)
		return NULL;
	if (argv[*i][n] == '=')
		return argv[*i] + n + 1;
	if (argv[*i][n] != '\0')
		return NULL;
	if (*i + 1 >= argc || strcmp(argv[*i + 1], "--") == 0) {
		*missing = true;
		return NULL;
	}
	return argv[++*i];
}

int run_args_parse(int argc, char **argv, struct run_args *a, char *err, size_t errlen)
{
	memset(a, 0, sizeof(*a));
	a->ready_timeout_ms = RUN_DEFAULT_READY_MS;
	a->stop_timeout_ms = RUN_DEFAULT_STOP_MS;
	a->on_shim_exit = RUN_SHIM_RESTART;
	a->listen = RUN_DEFAULT_LISTEN;
	a->log_level = LOG_INFO;

	a->shim_argv = calloc((size_t)argc + 1, sizeof(char *));
	if (!a->shim_argv)
		return -ENOMEM;
	int n = 1; /* [0]: the caller's */

	int i;
	for (i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
		const char *v;
		bool missing = false;
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			a->help = true;
			return 0;
		}
		if (strcmp(argv[i], "--version") == 0) {
			a->version = true;
			return 0;
		}
		if ((v = opt_value(argc, argv, &i, "--shim", &missing))) {
			a->shim = v;
		} else if ((v = opt_value(argc, argv, &i, "--ready-timeout", &missing))) {
			if (parse_ms(v, 600000, &a->ready_timeout_ms) < 0 || !a->ready_timeout_ms) {
				snprintf(err, errlen, "--ready-timeout '%s': need 1 to 600000 ms", v);
				goto out_inval;
			}
		} else if ((v = opt_value(argc, argv, &i, "--stop-timeout", &missing))) {
			if (parse_ms(v, 600000, &a->stop_timeout_ms) < 0) {
				snprintf(err, errlen, "--stop-timeout '%s': need 0 to 600000 ms", v);
				goto out_inval;
			}
		} else if ((v = opt_value(argc, argv, &i, "--on-shim-exit", &missing))) {
			if (strcmp(v, "restart") == 0) {
				a->on_shim_exit = RUN_SHIM_RESTART;
			} else if (strcmp(v, "exit") == 0) {
				a->on_shim_exit = RUN_SHIM_EXIT;
			} else {
				snprintf(err, errlen, "--on-shim-exit '%s': need restart or exit", v);
				goto out_inval;
			}
		} else if (missing) {
			snprintf(err, errlen, "%s needs a value", argv[i]);
			goto out_inval;
		} else {
			/* muxshim's: passed on as written; two of them matter here. */
			int first = i;
			if ((v = opt_value(argc, argv, &i, "--listen", &missing))) {
				a->listen = v;
			} else if ((v = opt_value(argc, argv, &i, "--log-level", &missing))) {
				/* muxshim rejects a bad level itself, with its own message */
				log_parse_level(v, &a->log_level);
			}
			for (int k = first; k <= i; k++)
				a->shim_argv[n++] = argv[k];
		}
	}
	if (i >= argc) {
		snprintf(err, errlen, "no \"--\": write muxshim-run [options] -- COMMAND [ARG...]");
		goto out_inval;
	}
	if (i + 1 >= argc) {
		snprintf(err, errlen, "no command after \"--\"");
		goto out_inval;
	}
	a->cmd = argv + i + 1;
	return 0;

out_inval:
	run_args_free(a);
	return -EINVAL;
}

void run_args_free(struct run_args *a)
{
	free(a->shim_argv);
	a->shim_argv = NULL;
}

unsigned run_restart_delay_ms(unsigned n)
{
	if (n <= 1)
		return 0;
	if (n >= 2 + 7) /* 250 << 7 = 32000 */
		return RUN_RESTART_MAX_MS;
	unsigned d = 250u << (n - 2);
	return d > RUN_RESTART_MAX_MS ? RUN_RESTART_MAX_MS : d;
}
