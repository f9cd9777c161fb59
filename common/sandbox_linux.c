/* The Linux sandbox: a seccomp allow-list (libseccomp), entered once a
 * daemon has bound its sockets and opened its files. What is left is what
 * relaying needs: moving bytes, accepting, connecting (and resolving names
 * for the tunnel), reading small files (/proc/PID/comm, /etc/hosts),
 * removing our own socket files at exit. Not allowed, among everything
 * else: execve, fork, ptrace, listen, opening files for writing, chmod,
 * mount, module and keyring calls. A call outside the list fails with EPERM
 * (the daemon's normal error path reports it) or, in strict mode, kills the
 * process: the test suites run strict so that a missing entry is found. */
#include "plat.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <seccomp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

/* Names, not numbers: libseccomp maps them for the running architecture
 * and a name this architecture lacks (e.g. "open" on arm64) is skipped. */
static const char *const allowed[] = {
	/* bytes and sockets */
	"read", "write", "readv", "writev", "pread64", "recvfrom", "sendto", "recvmsg",
	"sendmsg", "recvmmsg", "sendmmsg", "close", "shutdown", "splice", "pipe2",
	"connect", "accept4", "accept", "getsockopt", "setsockopt", "getsockname",
	"getpeername", "fcntl", "bind", /* bind: the resolver's netlink socket */
	/* the event loop */
	"epoll_wait", "epoll_pwait", "epoll_ctl", "poll", "ppoll",
	/* memory */
	"brk", "mmap", "munmap", "mremap", "madvise", "mprotect",
	/* files: read-only opens are checked below */
	"fstat", "newfstatat", "stat", "lstat", "statx", "lseek", "unlink", "unlinkat",
	"readlink", "readlinkat", "getcwd", /* realpath() in the mount diagnosis */
	/* time, randomness, identity */
	"clock_gettime", "gettimeofday", "time", "clock_nanosleep", "nanosleep", "getrandom",
	"getpid", "gettid", "getuid", "geteuid", "getgid", "getegid", "uname",
	/* signals, exit, libc internals; tgkill is abort() raising SIGABRT */
	"rt_sigreturn", "rt_sigprocmask", "restart_syscall", "exit", "exit_group",
	"futex", "sched_yield", "tgkill",
};

/* What the sanitizer runtimes need for their reports and the leak check at
 * exit (LeakSanitizer stops the world with a ptrace'ing clone). */
static const char *const sanitizer_extra[] = {
	"clone", "clone3", "ptrace", "wait4", "waitpid", "prctl", "sigaltstack",
	"rt_sigaction", "getdents", "getdents64", "sched_getaffinity",
	"kill", "getppid", "prlimit64", "getrlimit", "setrlimit",
	"arch_prctl", "set_robust_list", "rseq", "dup2", "dup3", "pipe",
	"sched_setaffinity", "munlock", "mlock",
};

#ifdef MUXSHIM_SANITIZED
static const bool sanitized = true;
#else
static const bool sanitized = false;
#endif

static int allow(scmp_filter_ctx ctx, const char *name, unsigned n, const struct scmp_arg_cmp *a)
{
	int nr = seccomp_syscall_resolve_name(name);
	if (nr == __NR_SCMP_ERROR)
		return 0; /* not a call on this architecture */
	int rc = seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, nr, n, a);
	return rc == -EEXIST ? 0 : rc;
}

static struct scmp_arg_cmp arg_cmp(unsigned arg, enum scmp_compare op, scmp_datum_t a,
				   scmp_datum_t b)
{
	return (struct scmp_arg_cmp){ .arg = arg, .op = op, .datum_a = a, .datum_b = b };
}

static int add_rules(scmp_filter_ctx ctx, int log_dirfd)
{
	int rc = 0;
	for (size_t i = 0; rc == 0 && i < sizeof(allowed) / sizeof(allowed[0]); i++)
		rc = allow(ctx, allowed[i], 0, NULL);
	if (sanitized)
		for (size_t i = 0; rc == 0 && i < sizeof(sanitizer_extra) / sizeof(sanitizer_extra[0]); i++)
			rc = allow(ctx, sanitizer_extra[i], 0, NULL);
	if (rc < 0)
		return rc;

	/* Files are opened for reading only. */
	const scmp_datum_t wmask = O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND;
	struct scmp_arg_cmp ro = arg_cmp(2, SCMP_CMP_MASKED_EQ, wmask, 0);
	rc = allow(ctx, "openat", 1, &ro);
	ro = arg_cmp(1, SCMP_CMP_MASKED_EQ, wmask, 0);
	if (rc == 0)
		rc = allow(ctx, "open", 1, &ro);
	/* The one exception: the log file reopened on SIGHUP, relative to its
	 * directory's descriptor, for appending (docs/SECURITY.md). */
	if (rc == 0 && log_dirfd >= 0) {
		struct scmp_arg_cmp reopen[2] = {
			arg_cmp(0, SCMP_CMP_EQ, (scmp_datum_t)log_dirfd, 0),
			arg_cmp(2, SCMP_CMP_MASKED_EQ, wmask, O_WRONLY | O_APPEND | O_CREAT),
		};
		rc = allow(ctx, "openat", 2, reopen);
	}

	/* Sockets of the families the daemons use: UNIX, IP, and netlink for
	 * getaddrinfo's address-configuration query. No raw or packet sockets. */
	static const int families[] = { AF_UNIX, AF_INET, AF_INET6, AF_NETLINK };
	for (size_t i = 0; rc == 0 && i < sizeof(families) / sizeof(families[0]); i++) {
		struct scmp_arg_cmp fam = arg_cmp(0, SCMP_CMP_EQ, (scmp_datum_t)families[i], 0);
		rc = allow(ctx, "socket", 1, &fam);
	}
	/* socketpair: the broker's own usbmuxd subscription (UNIX only). */
	if (rc == 0) {
		struct scmp_arg_cmp fam = arg_cmp(0, SCMP_CMP_EQ, (scmp_datum_t)AF_UNIX, 0);
		rc = allow(ctx, "socketpair", 1, &fam);
	}

	/* ioctl: unacknowledged bytes (SIOCOUTQ), readable bytes (FIONREAD),
	 * non-blocking mode (FIONBIO). */
	static const unsigned long requests[] = { SIOCOUTQ, FIONREAD, FIONBIO };
	for (size_t i = 0; rc == 0 && i < sizeof(requests) / sizeof(requests[0]); i++) {
		struct scmp_arg_cmp req = arg_cmp(1, SCMP_CMP_EQ, (scmp_datum_t)requests[i], 0);
		rc = allow(ctx, "ioctl", 1, &req);
	}
	return rc;
}

int plat_sandbox_enter(bool strict, int log_dirfd)
{
	/* EPERM rather than death by default: a libc path we did not foresee
	 * (another image's glibc, say) degrades into an error the daemon logs. */
	uint32_t deny = strict ? SCMP_ACT_KILL_PROCESS : SCMP_ACT_ERRNO(EPERM);
	scmp_filter_ctx ctx = seccomp_init(deny);
	if (!ctx)
		return -ENOMEM;
	/* no_new_privs: set by libseccomp at load (SCMP_FLTATR_CTL_NNP, on by
	 * default); set here too so that it holds even if loading fails. */
	int rc = prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 ? 0 : -errno;
	if (rc == 0)
		rc = add_rules(ctx, log_dirfd);
	/* Every thread, not only the caller (the resolver's thread, resolver.c). */
	if (rc == 0)
		rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
	if (rc == 0)
		rc = seccomp_load(ctx);
	seccomp_release(ctx);
	return rc;
}

int plat_sandbox_probe(void)
{
	/* A call outside the list, harmless if it were allowed: the file does
	 * not exist, so an unfiltered execve fails with ENOENT. */
	char *const argv[] = { (char *)"muxshim-seccomp-probe", NULL };
	execve("/nonexistent/muxshim-seccomp-probe", argv, argv + 1);
	return -errno;
}
