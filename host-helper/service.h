/* Running muxshim-host as a system service. Windows has the Service Control
 * Manager (service_win.c); elsewhere the entry points only explain that
 * services are a Windows feature (service_posix.c): on Linux and macOS the
 * helper runs in the foreground under systemd or launchd. */
#ifndef MUXSHIM_SERVICE_H
#define MUXSHIM_SERVICE_H

#define SERVICE_NAME "muxshim-host"

/* Runs body() as the service (--service): returns when body does, with its
 * exit status, after telling the service manager that the service stopped.
 * A stop request reaches body as SIGTERM does (see plat_signals_init).
 * Returns non-zero at once when the process was not started as a service. */
int service_run(int (*body)(void));

/* body calls this once it serves (listening): the service is "running".
 * Does nothing outside a service. */
void service_ready(void);

/* Where a service logs when no --log-file was given (it has no console):
 * muxshim-host.log next to the executable. NULL where there is none. */
const char *service_default_log_file(void);

/* --install-service: registers this executable, started with --service and
 * args (the user's other options), to start at boot. --uninstall-service
 * stops and removes it. Both print what they did; they return the process
 * exit status. */
int service_install(int argc, char **args);
int service_uninstall(void);

#endif
