/* muxshim-host as a Windows service: the Service Control Manager (SCM)
 * glue, and --install-service / --uninstall-service.
 *
 * Threads: StartServiceCtrlDispatcher keeps the main thread to receive
 * control requests and calls service_main on a thread of its own, which
 * runs the helper's loop. A STOP or SHUTDOWN request raises SIGTERM, which
 * plat_win.c turns into a byte on the socket the loop watches: the loop ends
 * exactly as after Ctrl-C in a console, and service_main then reports
 * SERVICE_STOPPED with the helper's exit status. */
#include "service.h"

#include <windows.h>

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define DISPLAY_NAME "muxshim host helper"
#define DESCRIPTION  "Serves usbmuxd (Apple Mobile Device Service) to muxshim in Docker " \
		     "containers over one tunnel per container (127.0.0.1:27016)."
#define CMDLINE_MAX  8192

static SERVICE_STATUS_HANDLE status_handle;
static SERVICE_STATUS status;
static CRITICAL_SECTION lock; /* status, stop_requested, running */
static bool stop_requested, running, stop_raised;
static int (*service_body)(void);
static int body_rc;

/* Callers hold the lock. */
static void report(DWORD state, int exit_code, DWORD wait_hint)
{
	status.dwServiceType = SERVICE_WIN32_OWN_PROCESS;
	status.dwCurrentState = state;
	status.dwControlsAccepted =
		state == SERVICE_RUNNING ? SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN : 0;
	status.dwWin32ExitCode = exit_code ? ERROR_SERVICE_SPECIFIC_ERROR : NO_ERROR;
	status.dwServiceSpecificExitCode = (DWORD)exit_code;
	if (state == SERVICE_RUNNING || state == SERVICE_STOPPED)
		status.dwCheckPoint = 0;
	else
		status.dwCheckPoint++;
	status.dwWaitHint = wait_hint;
	SetServiceStatus(status_handle, &status);
}

/* Once the loop watches for it (running), a stop is one SIGTERM; before,
 * it is remembered and service_ready delivers it. Callers hold the lock. */
static void deliver_stop(void)
{
	if (stop_requested && running && !stop_raised) {
		stop_raised = true;
		raise(SIGTERM);
	}
}

static DWORD WINAPI on_control(DWORD control, DWORD type, LPVOID data, LPVOID ctx)
{
	(void)type, (void)data, (void)ctx;
	switch (control) {
	case SERVICE_CONTROL_STOP:
	case SERVICE_CONTROL_SHUTDOWN:
		EnterCriticalSection(&lock);
		stop_requested = true;
		report(SERVICE_STOP_PENDING, 0, 5000);
		deliver_stop();
		LeaveCriticalSection(&lock);
		return NO_ERROR;
	case SERVICE_CONTROL_INTERROGATE:
		return NO_ERROR;
	default:
		return ERROR_CALL_NOT_IMPLEMENTED;
	}
}

void service_ready(void)
{
	if (!status_handle)
		return;
	EnterCriticalSection(&lock);
	running = true;
	if (!stop_requested)
		report(SERVICE_RUNNING, 0, 0);
	deliver_stop();
	LeaveCriticalSection(&lock);
}

static void WINAPI service_main(DWORD argc, LPSTR *argv)
{
	(void)argc, (void)argv;
	status_handle = RegisterServiceCtrlHandlerExA(SERVICE_NAME, on_control, NULL);
	if (!status_handle) {
		body_rc = 1;
		return;
	}
	EnterCriticalSection(&lock);
	report(SERVICE_START_PENDING, 0, 10000);
	LeaveCriticalSection(&lock);
	body_rc = service_body();
	EnterCriticalSection(&lock);
	report(SERVICE_STOPPED, body_rc, 0);
	LeaveCriticalSection(&lock);
}

int service_run(int (*body)(void))
{
	SERVICE_TABLE_ENTRYA table[] = {
		{ (LPSTR)SERVICE_NAME, service_main },
		{ NULL, NULL },
	};
	InitializeCriticalSection(&lock);
	service_body = body;
	if (!StartServiceCtrlDispatcherA(table)) {
		DWORD e = GetLastError();
		if (e == ERROR_FAILED_SERVICE_CONTROLLER_CONNECT)
			fprintf(stderr, "muxshim-host: --service is for the Service Control Manager "
					"(install with --install-service, then `sc.exe start %s`); "
					"to run in this console, leave --service out\n",
				SERVICE_NAME);
		else
			fprintf(stderr, "muxshim-host: cannot talk to the Service Control Manager "
					"(error %lu)\n", (unsigned long)e);
		return 1;
	}
	return body_rc;
}

/* The directory of this executable, with a trailing backslash. */
static bool exe_path(char *buf, size_t cap)
{
	DWORD n = GetModuleFileNameA(NULL, buf, (DWORD)cap);
	return n > 0 && n < cap; /* n == cap: truncated */
}

const char *service_default_log_file(void)
{
	static char path[MAX_PATH + 32];
	static const char name[] = "muxshim-host.log";
	if (!exe_path(path, MAX_PATH))
		return NULL;
	char *slash = strrchr(path, '\\');
	size_t dir = slash ? (size_t)(slash - path) + 1 : 0;
	if (dir + sizeof(name) > sizeof(path))
		return NULL;
	memcpy(path + dir, name, sizeof(name));
	return path;
}

/* Appends one argument to a command line, quoted the way the C runtime
 * splits it again (backslashes are literal except before a quote). */
static bool append_arg(char *cmd, size_t cap, size_t *len, const char *arg)
{
	size_t n = *len;
#define PUT(c) do { if (n + 1 >= cap) return false; cmd[n++] = (c); } while (0)
	if (n)
		PUT(' ');
	if (*arg && !strpbrk(arg, " \t\"")) {
		for (const char *p = arg; *p; p++)
			PUT(*p);
	} else {
		PUT('"');
		for (const char *p = arg;; p++) {
			size_t slashes = 0;
			while (*p == '\\') {
				slashes++;
				p++;
			}
			/* Before a quote or the closing quote, backslashes double. */
			size_t times = *p == '"' ? 2 * slashes + 1 : !*p ? 2 * slashes : slashes;
			for (size_t i = 0; i < times; i++)
				PUT('\\');
			if (!*p)
				break;
			PUT(*p);
		}
		PUT('"');
	}
#undef PUT
	cmd[n] = '\0';
	*len = n;
	return true;
}

/* The service starts in C:\Windows\System32: file options given relative to
 * where --install-service ran are made absolute now. */
static const char *const path_options[] = { "--token-file", "--log-file" };

static const char *path_option(const char *arg, size_t *name_len)
{
	for (size_t i = 0; i < sizeof(path_options) / sizeof(path_options[0]); i++) {
		size_t n = strlen(path_options[i]);
		if (strncmp(arg, path_options[i], n) == 0 && (arg[n] == '\0' || arg[n] == '=')) {
			*name_len = n;
			return path_options[i];
		}
	}
	return NULL;
}

static bool append_path(char *cmd, size_t cap, size_t *len, const char *prefix,
			const char *path)
{
	char full[MAX_PATH], arg[MAX_PATH + 32];
	DWORD n = GetFullPathNameA(path, sizeof(full), full, NULL);
	if (n == 0 || n >= sizeof(full))
		return false;
	if ((size_t)snprintf(arg, sizeof(arg), "%s%s", prefix, full) >= sizeof(arg))
		return false;
	return append_arg(cmd, cap, len, arg);
}

static bool build_cmdline(char *cmd, size_t cap, int argc, char **args)
{
	char exe[MAX_PATH];
	size_t len = 0;
	cmd[0] = '\0';
	if (!exe_path(exe, sizeof(exe)) || !append_arg(cmd, cap, &len, exe) ||
	    !append_arg(cmd, cap, &len, "--service"))
		return false;
	for (int i = 0; i < argc; i++) {
		size_t name_len;
		const char *opt = path_option(args[i], &name_len);
		bool ok;
		if (opt && args[i][name_len] == '=') {
			char prefix[32];
			snprintf(prefix, sizeof(prefix), "%s=", opt);
			ok = append_path(cmd, cap, &len, prefix, args[i] + name_len + 1);
		} else if (opt && i + 1 < argc) {
			ok = append_arg(cmd, cap, &len, args[i]) &&
			     append_path(cmd, cap, &len, "", args[i + 1]);
			i++;
		} else {
			ok = append_arg(cmd, cap, &len, args[i]);
		}
		if (!ok)
			return false;
	}
	return true;
}

static void print_error(const char *what, DWORD e)
{
	char msg[256] = "";
	FormatMessageA(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, NULL, e, 0,
		       msg, sizeof(msg), NULL);
	msg[strcspn(msg, "\r\n")] = '\0';
	fprintf(stderr, "muxshim-host: %s: %s (error %lu)%s\n", what, msg, (unsigned long)e,
		e == ERROR_ACCESS_DENIED ? ": run this from an administrator command prompt" : "");
}

int service_install(int argc, char **args)
{
	static char cmd[CMDLINE_MAX];
	if (!build_cmdline(cmd, sizeof(cmd), argc, args)) {
		fprintf(stderr, "muxshim-host: the service command line is too long\n");
		return 1;
	}
	SC_HANDLE scm = OpenSCManagerA(NULL, NULL, SC_MANAGER_CREATE_SERVICE);
	if (!scm) {
		print_error("cannot open the Service Control Manager", GetLastError());
		return 1;
	}
	/* LocalSystem, like Apple Mobile Device Service; starts at boot. */
	SC_HANDLE svc = CreateServiceA(scm, SERVICE_NAME, DISPLAY_NAME,
				       SERVICE_CHANGE_CONFIG | SERVICE_START,
				       SERVICE_WIN32_OWN_PROCESS, SERVICE_AUTO_START,
				       SERVICE_ERROR_NORMAL, cmd, NULL, NULL, NULL, NULL, NULL);
	if (!svc) {
		DWORD e = GetLastError();
		if (e == ERROR_SERVICE_EXISTS)
			fprintf(stderr, "muxshim-host: service %s is already installed; to change "
					"its options, run --uninstall-service first\n", SERVICE_NAME);
		else
			print_error("cannot create the service", e);
		CloseServiceHandle(scm);
		return 1;
	}
	SERVICE_DESCRIPTIONA desc = { .lpDescription = (LPSTR)DESCRIPTION };
	ChangeServiceConfig2A(svc, SERVICE_CONFIG_DESCRIPTION, &desc);
	/* Restart after a crash (5 s, three times; the count resets daily). */
	SC_ACTION actions[3] = {
		{ SC_ACTION_RESTART, 5000 }, { SC_ACTION_RESTART, 5000 }, { SC_ACTION_RESTART, 5000 },
	};
	SERVICE_FAILURE_ACTIONSA fa = { .dwResetPeriod = 86400, .cActions = 3, .lpsaActions = actions };
	ChangeServiceConfig2A(svc, SERVICE_CONFIG_FAILURE_ACTIONS, &fa);
	printf("installed service %s (starts at boot): %s\n"
	       "start it now with: sc.exe start %s\n",
	       SERVICE_NAME, cmd, SERVICE_NAME);
	CloseServiceHandle(svc);
	CloseServiceHandle(scm);
	return 0;
}

int service_uninstall(void)
{
	SC_HANDLE scm = OpenSCManagerA(NULL, NULL, SC_MANAGER_CONNECT);
	if (!scm) {
		print_error("cannot open the Service Control Manager", GetLastError());
		return 1;
	}
	SC_HANDLE svc = OpenServiceA(scm, SERVICE_NAME, SERVICE_STOP | SERVICE_QUERY_STATUS | DELETE);
	if (!svc) {
		DWORD e = GetLastError();
		if (e == ERROR_SERVICE_DOES_NOT_EXIST)
			fprintf(stderr, "muxshim-host: service %s is not installed\n", SERVICE_NAME);
		else
			print_error("cannot open the service", e);
		CloseServiceHandle(scm);
		return 1;
	}
	SERVICE_STATUS st;
	if (ControlService(svc, SERVICE_CONTROL_STOP, &st)) {
		/* The helper closes its tunnels and exits within a second. */
		for (int i = 0; i < 100 && st.dwCurrentState != SERVICE_STOPPED; i++) {
			Sleep(100);
			if (!QueryServiceStatus(svc, &st))
				break;
		}
		printf("stopped service %s\n", SERVICE_NAME);
	}
	int rc = 0;
	if (DeleteService(svc)) {
		printf("removed service %s\n", SERVICE_NAME);
	} else {
		print_error("cannot remove the service", GetLastError());
		rc = 1;
	}
	CloseServiceHandle(svc);
	CloseServiceHandle(scm);
	return rc;
}
