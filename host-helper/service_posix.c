/* Service entry points where there is no Windows Service Control Manager. */
#include "service.h"

#include <stdio.h>

static int only_on_windows(const char *what)
{
	fprintf(stderr,
		"muxshim-host: %s is only available on Windows. On Linux and macOS run "
		"muxshim-host in the foreground under your service manager (a systemd unit, "
		"a launchd job); it logs to stderr.\n",
		what);
	return 2;
}

int service_run(int (*body)(void))
{
	(void)body;
	return only_on_windows("--service");
}

void service_ready(void)
{
}

const char *service_default_log_file(void)
{
	return NULL;
}

int service_install(int argc, char **args)
{
	(void)argc, (void)args;
	return only_on_windows("--install-service");
}

int service_uninstall(void)
{
	return only_on_windows("--uninstall-service");
}
