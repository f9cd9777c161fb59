#include "args.h"
#include "unit.h"

#include <errno.h>
#include <string.h>

#define ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])) - 1)

static void splits_wrapper_shim_and_command(void)
{
	char *argv[] = { "muxshim-run", "--upstream", "tunnel:h:1", "--shim", "/x/muxshim",
			 "--listen=/run/s", "--log-level", "debug", "--ready-timeout", "250",
			 "--", "app", "--listen", "-x", NULL };
	struct run_args a;
	char err[128];
	CU_ASSERT_EQUAL_FATAL(run_args_parse(ARGC(argv), argv, &a, err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(a.shim, "/x/muxshim");
	CU_ASSERT_EQUAL(a.ready_timeout_ms, 250);
	CU_ASSERT_STRING_EQUAL(a.listen, "/run/s");
	CU_ASSERT_EQUAL(a.log_level, LOG_DEBUG);
	CU_ASSERT_EQUAL(a.on_shim_exit, RUN_SHIM_RESTART);
	/* muxshim gets its options as written, wrapper options taken out */
	CU_ASSERT_PTR_NULL(a.shim_argv[0]);
	CU_ASSERT_STRING_EQUAL(a.shim_argv[1], "--upstream");
	CU_ASSERT_STRING_EQUAL(a.shim_argv[2], "tunnel:h:1");
	CU_ASSERT_STRING_EQUAL(a.shim_argv[3], "--listen=/run/s");
	CU_ASSERT_STRING_EQUAL(a.shim_argv[4], "--log-level");
	CU_ASSERT_STRING_EQUAL(a.shim_argv[5], "debug");
	CU_ASSERT_PTR_NULL(a.shim_argv[6]);
	/* everything after the first "--" is the command's, untouched */
	CU_ASSERT_STRING_EQUAL(a.cmd[0], "app");
	CU_ASSERT_STRING_EQUAL(a.cmd[1], "--listen");
	CU_ASSERT_STRING_EQUAL(a.cmd[2], "-x");
	CU_ASSERT_PTR_NULL(a.cmd[3]);
	run_args_free(&a);
}

static void defaults_and_last_listen_wins(void)
{
	char *argv1[] = { "muxshim-run", "--", "app", NULL };
	struct run_args a;
	char err[128];
	CU_ASSERT_EQUAL_FATAL(run_args_parse(ARGC(argv1), argv1, &a, err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(a.listen, RUN_DEFAULT_LISTEN);
	CU_ASSERT_PTR_NULL(a.shim);
	CU_ASSERT_EQUAL(a.ready_timeout_ms, RUN_DEFAULT_READY_MS);
	CU_ASSERT_EQUAL(a.stop_timeout_ms, RUN_DEFAULT_STOP_MS);
	CU_ASSERT_PTR_NULL(a.shim_argv[1]);
	run_args_free(&a);

	char *argv2[] = { "muxshim-run", "--listen", "/a", "--listen", "/b",
			  "--on-shim-exit=exit", "--stop-timeout", "0", "--", "app", NULL };
	CU_ASSERT_EQUAL_FATAL(run_args_parse(ARGC(argv2), argv2, &a, err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(a.listen, "/b");
	CU_ASSERT_EQUAL(a.on_shim_exit, RUN_SHIM_EXIT);
	CU_ASSERT_EQUAL(a.stop_timeout_ms, 0);
	run_args_free(&a);
}

static void rejects_what_it_cannot_run(void)
{
	char *no_dashes[] = { "muxshim-run", "--upstream", "unix:/x", "app", NULL };
	char *no_cmd[] = { "muxshim-run", "--", NULL };
	char *bad_exit[] = { "muxshim-run", "--on-shim-exit", "later", "--", "app", NULL };
	char *bad_ms[] = { "muxshim-run", "--ready-timeout", "-5", "--", "app", NULL };
	char *no_value[] = { "muxshim-run", "--shim", "--", "app", NULL };
	struct run_args a;
	char err[128];
	CU_ASSERT_EQUAL(run_args_parse(ARGC(no_dashes), no_dashes, &a, err, sizeof(err)), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "no \"--\""));
	CU_ASSERT_EQUAL(run_args_parse(ARGC(no_cmd), no_cmd, &a, err, sizeof(err)), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "no command"));
	CU_ASSERT_EQUAL(run_args_parse(ARGC(bad_exit), bad_exit, &a, err, sizeof(err)), -EINVAL);
	CU_ASSERT_EQUAL(run_args_parse(ARGC(bad_ms), bad_ms, &a, err, sizeof(err)), -EINVAL);
	CU_ASSERT_EQUAL(run_args_parse(ARGC(no_value), no_value, &a, err, sizeof(err)), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "--shim needs a value"));
	CU_ASSERT_PTR_NULL(a.shim_argv); /* freed on failure */

	char *help[] = { "muxshim-run", "--upstream", "x", "--help", NULL };
	CU_ASSERT_EQUAL(run_args_parse(ARGC(help), help, &a, err, sizeof(err)), 0);
	CU_ASSERT_TRUE(a.help);
	run_args_free(&a);
}

static void restart_backoff(void)
{
	CU_ASSERT_EQUAL(run_restart_delay_ms(1), 0);
	CU_ASSERT_EQUAL(run_restart_delay_ms(2), 250);
	CU_ASSERT_EQUAL(run_restart_delay_ms(3), 500);
	CU_ASSERT_EQUAL(run_restart_delay_ms(8), 16000);
	CU_ASSERT_EQUAL(run_restart_delay_ms(9), RUN_RESTART_MAX_MS);
	CU_ASSERT_EQUAL(run_restart_delay_ms(1000), RUN_RESTART_MAX_MS);
}

int unit_run_args(void)
{
	static const struct unit_test tests[] = {
		{ "splits wrapper, shim and command", splits_wrapper_shim_and_command },
		{ "defaults, last --listen wins", defaults_and_last_listen_wins },
		{ "rejects what it cannot run", rejects_what_it_cannot_run },
		{ "restart backoff", restart_backoff },
		{ NULL, NULL },
	};
	return unit_add_suite("run_args", tests);
}
