/* muxshim-run: an ENTRYPOINT for a user's image. Starts muxshim, waits until
 * its socket accepts, then runs the user's command as the main process:
 * forwards signals to it, reaps every zombie (it may be PID 1), exits with
 * its status and stops muxshim. A muxshim that dies meanwhile is restarted
 * (or, with --on-shim-exit exit, the container stops).
 *
 * No signal handlers: the signals it cares about are blocked and taken with
 * sigtimedwait(2) in one loop, so nothing runs asynchronously. Linux only
 * (PR_SET_CHILD_SUBREAPER, PR_SET_PDEATHSIG), like the containers it is for. */
#include "args.h"
#include "log.h"
#include "plat.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MUXSHIM_VERSION
#define MUXSHIM_VERSION "0.1.0"
#endif

#define EXIT_WRAPPER 125 /* muxshim-run or muxshim failed: the command never ran */
#define READY_POLL_MS 20
#define LIVED_LONG_MS 60000 /* a muxshim that ran this long restarts at once */

static const int forwarded[] = { SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH };

enum shim_state {
	SHIM_STARTING, /* started, its socket not accepting yet */
	SHIM_READY,
	SHIM_DOWN,     /* exited; restart due at restart_at */
	SHIM_STOPPING,
};

static struct {
	struct run_args args;
	char shim_path[PATH_MAX + 16];
	sigset_t waitset, origmask;
	pid_t shim, cmd;
	enum shim_state state;
	uint64_t shim_started, shim_deadline, restart_at;
	unsigned quick_restarts;
	bool late_warned;
	bool cmd_done;
	int cmd_status;
	bool shim_lost; /* --on-shim-exit exit did its job */
} g;

static void usage(FILE *f)
{
	fprintf(f,
		"usage: muxshim-run [options] [muxshim options] -- COMMAND [ARG...]\n"
		"Starts muxshim, waits until its socket accepts, then runs COMMAND as the main\n"
		"process: forwards TERM, INT, HUP, QUIT, USR1, USR2 and WINCH to it, reaps\n"
		"zombies, exits with its status (128+N if signal N killed it) and stops muxshim.\n"
		"Every option it does not know goes to muxshim (see muxshim --help).\n"
		"\n"
		"  --shim PATH             muxshim to run (default: the one next to muxshim-run,\n"
		"                          else muxshim on $PATH)\n"
		"  --ready-timeout MS      how long muxshim may take to accept (default 10000);\n"
		"                          then muxshim-run exits 125 without running COMMAND\n"
		"  --on-shim-exit WHAT     if muxshim dies while COMMAND runs: restart (default;\n"
		"                          logged, at once, then with backoff up to 30 s) or exit\n"
		"                          (stop COMMAND and exit 125)\n"
		"  --stop-timeout MS       how long muxshim, and COMMAND with --on-shim-exit exit,\n"
		"                          get after SIGTERM before SIGKILL (default 5000)\n"
		"  --help, --version\n"
		"\n"
		"Exit status: COMMAND's; 125 if muxshim could not be started; 126/127 if COMMAND\n"
		"could not be run / was not found.\n");
}

static const char *sig_name(int sig)
{
	const char *s = sigabbrev_np(sig);
	return s ? s : "?";
}

/* muxshim next to this program, else on $PATH (execvp's search). */
static const char *find_shim(void)
{
	if (g.args.shim)
		return g.args.shim;
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = '\0';
		char *slash = strrchr(self, '/');
		if (slash) {
			*slash = '\0';
			snprintf(g.shim_path, sizeof(g.shim_path), "%s/muxshim", self);
			if (access(g.shim_path, X_OK) == 0)
				return g.shim_path;
		}
	}
	return "muxshim";
}

/* In a child, before exec: the signal state the program expects. */
static void child_signals(void)
{
	signal(SIGPIPE, SIG_DFL);
	sigprocmask(SIG_SETMASK, &g.origmask, NULL);
}

static int start_shim(void)
{
	const char *path = find_shim();
	g.args.shim_argv[0] = (char *)path;
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		/* Its own process group: a terminal's ^C goes to the command, and
		 * muxshim stays up while the command shuts down. It dies with us. */
		setpgid(0, 0);
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != parent)
			_exit(EXIT_WRAPPER); /* we died before prctl took effect */
		int null = open("/dev/null", O_RDONLY);
		if (null >= 0) {
			dup2(null, STDIN_FILENO);
			if (null != STDIN_FILENO)
				close(null);
		}
		child_signals();
		execvp(path, g.args.shim_argv);
		log_error("cannot run %s: %s", path, strerror(errno));
		_exit(EXIT_WRAPPER);
	}
	g.shim = pid;
	g.state = SHIM_STARTING;
	g.late_warned = false;
	g.shim_started = plat_monotonic_ms();
	g.shim_deadline = g.shim_started + g.args.ready_timeout_ms;
	return 0;
}

/* Ready when a connection to the socket reaches *our* muxshim: the
 * listener's credentials (SO_PEERCRED) name its pid, so a stale socket file
 * or another process's listener does not count. The probe is one session
 * with no request; muxshim counts it like any other. */
static bool shim_accepting(void)
{
	int fd;
	if (plat_unix_connect(g.args.listen, &fd) < 0)
		return false;
	pid_t pid = 0;
	uid_t uid;
	bool ours = plat_peer_cred(fd, &pid, &uid) == 0 && pid == g.shim;
	plat_close(fd);
	return ours;
}

static int start_cmd(void)
{
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		/* Like tini: the command gets its own process group and, on a
		 * terminal, the foreground (SIGTTOU is still blocked here, so
		 * tcsetpgrp does not stop us). */
		setpgid(0, 0);
		if (isatty(STDIN_FILENO))
			tcsetpgrp(STDIN_FILENO, getpid());
		child_signals();
		execvp(g.args.cmd[0], g.args.cmd);
		int e = errno;
		log_error("cannot run %s: %s", g.args.cmd[0], strerror(e));
		_exit(e == ENOENT ? 127 : 126);
	}
	setpgid(pid, pid); /* either side may win the race; both ask the same */
	g.cmd = pid;
	return 0;
}

static void describe_status(int st, char *out, size_t cap)
{
	if (WIFSIGNALED(st))
		snprintf(out, cap, "was killed by SIG%s", sig_name(WTERMSIG(st)));
	else
		snprintf(out, cap, "exited with status %d", WEXITSTATUS(st));
}

static void shim_exited(int st, uint64_t now)
{
	char how[64];
	describe_status(st, how, sizeof(how));
	g.shim = 0;
	if (g.state == SHIM_STOPPING)
		return;
	if (g.state == SHIM_STARTING && !g.cmd) {
		log_error("muxshim %s before it accepted on %s; not running %s", how,
			  g.args.listen, g.args.cmd[0]);
		g.state = SHIM_DOWN;
		return;
	}
	if (g.args.on_shim_exit == RUN_SHIM_EXIT) {
		log_error("muxshim %s while %s was running: stopping %s (--on-shim-exit exit)", how,
			  g.args.cmd[0], g.args.cmd[0]);
		g.state = SHIM_DOWN;
		return;
	}
	if (now - g.shim_started >= LIVED_LONG_MS)
		g.quick_restarts = 0;
	unsigned delay = run_restart_delay_ms(++g.quick_restarts);
	log_warn("muxshim %s while %s was running; %s stays unavailable until it is back: "
		 "restarting it in %u ms (restart #%u)", how, g.args.cmd[0], g.args.listen,
		 delay, g.quick_restarts);
	g.state = SHIM_DOWN;
	g.restart_at = now + delay;
}

/* Every child that has exited: the command, muxshim, or an orphan that the
 * kernel handed to us as PID 1 or subreaper. */
static void reap(void)
{
	for (;;) {
		int st;
		pid_t pid = waitpid(-1, &st, WNOHANG);
		if (pid <= 0)
			return;
		if (pid == g.cmd) {
			g.cmd = 0;
			g.cmd_done = true;
			g.cmd_status = st;
		} else if (pid == g.shim) {
			shim_exited(st, plat_monotonic_ms());
		} else {
			log_debug("reaped orphan pid %ld", (long)pid);
		}
	}
}

/* Waits up to ms (-1: no limit) for one signal; reaps on SIGCHLD. Returns
 * the signal taken, 0 on timeout. */
static int wait_signal(long ms)
{
	siginfo_t si;
	int sig;
	if (ms < 0) {
		sig = sigwaitinfo(&g.waitset, &si);
	} else {
		struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
		sig = sigtimedwait(&g.waitset, &si, &ts);
	}
	if (sig < 0)
		return 0; /* EAGAIN (timeout) or EINTR */
	if (sig == SIGCHLD)
		reap();
	return sig;
}

static bool is_forwarded(int sig)
{
	for (size_t i = 0; i < sizeof(forwarded) / sizeof(forwarded[0]); i++)
		if (forwarded[i] == sig)
			return true;
	return false;
}

/* SIGTERM to a child, SIGKILL after the stop timeout; reaps meanwhile. */
static void stop_child(pid_t *pid)
{
	if (*pid <= 0)
		return;
	kill(*pid, SIGTERM);
	uint64_t deadline = plat_monotonic_ms() + g.args.stop_timeout_ms;
	while (*pid > 0) {
		uint64_t now = plat_monotonic_ms();
		if (now >= deadline) {
			log_warn("pid %ld still running %u ms after SIGTERM: SIGKILL", (long)*pid,
				 g.args.stop_timeout_ms);
			kill(*pid, SIGKILL);
			deadline = UINT64_MAX;
		}
		wait_signal(deadline == UINT64_MAX ? -1 : (long)(deadline - now));
	}
}

static void stop_shim(void)
{
	if (g.shim <= 0)
		return;
	g.state = SHIM_STOPPING;
	stop_child(&g.shim);
}

static int exit_status(int st)
{
	return WIFSIGNALED(st) ? 128 + WTERMSIG(st) : WEXITSTATUS(st);
}

/* Before the command runs: muxshim must accept. 0 when it does, else the
 * status to exit with. */
static int wait_ready(void)
{
	for (;;) {
		if (g.state == SHIM_DOWN)
			return EXIT_WRAPPER;
		if (shim_accepting()) {
			g.state = SHIM_READY;
			return 0;
		}
		uint64_t now = plat_monotonic_ms();
		if (now >= g.shim_deadline) {
			log_error("muxshim (pid %ld) did not accept on %s within %u ms; not running %s",
				  (long)g.shim, g.args.listen, g.args.ready_timeout_ms, g.args.cmd[0]);
			stop_shim();
			return EXIT_WRAPPER;
		}
		int sig = wait_signal(READY_POLL_MS);
		if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP || sig == SIGQUIT) {
			log_info("SIG%s before %s started: stopping muxshim", sig_name(sig),
				 g.args.cmd[0]);
			stop_shim();
			return 128 + sig;
		}
	}
}

/* While the command runs. Returns when it has exited. */
static void supervise(void)
{
	while (!g.cmd_done) {
		long timeout = -1;
		uint64_t now = plat_monotonic_ms();
		if (g.state == SHIM_DOWN && g.args.on_shim_exit == RUN_SHIM_EXIT) {
			stop_child(&g.cmd);
			g.shim_lost = true;
			return;
		}
		if (g.state == SHIM_DOWN) {
			if (now >= g.restart_at) {
				int rc = start_shim();
				if (rc < 0) {
					log_error("cannot start muxshim: %s", strerror(-rc));
					g.restart_at = now + RUN_RESTART_MAX_MS;
				}
				continue;
			}
			timeout = (long)(g.restart_at - now);
		} else if (g.state == SHIM_STARTING) {
			if (shim_accepting()) {
				g.state = SHIM_READY;
				log_info("muxshim (pid %ld) accepting again on %s", (long)g.shim,
					 g.args.listen);
				continue;
			}
			timeout = READY_POLL_MS;
			if (now >= g.shim_deadline) {
				if (!g.late_warned)
					log_warn("restarted muxshim (pid %ld) not accepting on %s after "
						 "%u ms; still waiting", (long)g.shim, g.args.listen,
						 g.args.ready_timeout_ms);
				g.late_warned = true;
				timeout = 1000;
			}
		}
		int sig = wait_signal(timeout);
		if (sig > 0 && is_forwarded(sig) && g.cmd > 0)
			kill(g.cmd, sig);
	}
}

static void init_signals(void)
{
	sigemptyset(&g.waitset);
	for (size_t i = 0; i < sizeof(forwarded) / sizeof(forwarded[0]); i++)
		sigaddset(&g.waitset, forwarded[i]);
	sigaddset(&g.waitset, SIGCHLD);
	sigset_t block = g.waitset;
	sigaddset(&block, SIGTTOU); /* see start_cmd */
	sigprocmask(SIG_BLOCK, &block, &g.origmask);
	signal(SIGPIPE, SIG_IGN); /* a closed stderr must not kill PID 1 */
}

int main(int argc, char **argv)
{
	char err[256];
	int rc = run_args_parse(argc, argv, &g.args, err, sizeof(err));
	if (rc < 0) {
		fprintf(stderr, "muxshim-run: %s\nTry 'muxshim-run --help'.\n",
			rc == -EINVAL ? err : strerror(-rc));
		return 2;
	}
	if (g.args.help) {
		usage(stdout);
		return 0;
	}
	if (g.args.version) {
		printf("muxshim-run %s\n", MUXSHIM_VERSION);
		return 0;
	}
	log_init("muxshim-run", g.args.log_level);
	init_signals();
	/* Orphans of the command's descendants come to us even when we are not
	 * PID 1 (e.g. under docker run --init), and are reaped. */
	if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0 && getpid() != 1)
		log_warn("cannot become a child subreaper: %s", strerror(errno));

	rc = start_shim();
	if (rc < 0) {
		log_error("cannot start muxshim: %s", strerror(-rc));
		return EXIT_WRAPPER;
	}
	int status = wait_ready();
	if (status) {
		reap();
		return status;
	}
	log_info("muxshim (pid %ld) accepting on %s; running %s", (long)g.shim, g.args.listen,
		 g.args.cmd[0]);
	rc = start_cmd();
	if (rc < 0) {
		log_error("cannot start %s: %s", g.args.cmd[0], strerror(-rc));
		stop_shim();
		return EXIT_WRAPPER;
	}
	supervise();
	if (g.shim_lost)
		return EXIT_WRAPPER;
	char how[64];
	describe_status(g.cmd_status, how, sizeof(how));
	log_info("%s %s; stopping muxshim", g.args.cmd[0], how);
	stop_shim();
	reap();
	run_args_free(&g.args);
	return exit_status(g.cmd_status);
}
