/* The one narrow header behind which the operating system lives. Everything
 * the daemons need from the OS beyond the event loop is here; each OS gets
 * its own implementation files (plat_posix.c and friends, plat_win.c). All
 * functions that act return 0 (or a non-negative value) on success and a
 * negative errno on failure; callers never read errno. */
#ifndef MUXSHIM_PLAT_H
#define MUXSHIM_PLAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

uint64_t plat_monotonic_ms(void);

/* Where this OS's usbmuxd listens: "unix:/var/run/usbmuxd" on Linux and
 * macOS, "tcp:127.0.0.1:27015" on Windows. */
const char *plat_default_usbmuxd(void);

/* Byte I/O on non-blocking sockets: bytes moved, 0 on EOF (read), or a
 * negative errno (-EAGAIN when the call would block). Never raises SIGPIPE. */
ssize_t plat_read(int fd, void *p, size_t n);
ssize_t plat_write(int fd, const void *p, size_t n);
int plat_shutdown_write(int fd);
void plat_close(int fd);

/* UNIX stream sockets. */
int plat_unix_connect(const char *path, int *fd_out);      /* non-blocking fd */
/* A connected pair of non-blocking UNIX stream sockets (Windows: loopback TCP,
 * closed without TIME_WAIT: see plat_win.c, struct pair). */
int plat_socketpair(int fds[2]);
/* A stale socket file (nothing listening) is replaced; a live one or a file
 * that is not a socket is refused with -EADDRINUSE / -EEXIST. *replaced is
 * set when a stale file was removed. The socket appears at path only once it
 * has its mode (umask does not matter) and, unless owner_group is NULL, its
 * owner OWNER[:GROUP] (names or numbers; GROUP defaults to OWNER's primary
 * group, OWNER may be empty as in ":GROUP"; -ESRCH for an unknown one); no
 * path lookup after bind can be redirected by a symlink planted at path. */
struct plat_file_id {
	uint64_t dev, ino;
};
int plat_unix_listen(const char *path, unsigned mode, const char *owner_group, int backlog,
		     int *fd_out, bool *replaced, struct plat_file_id *id);
/* Is path still the socket file we created (not removed or replaced)? */
bool plat_unix_is_ours(const char *path, const struct plat_file_id *id);
/* Removes path only if it is still the socket file we created. */
void plat_unix_unlink_if_ours(const char *path, const struct plat_file_id *id);
/* The process at the other end of a UNIX socket: pid (0 when it is not
 * visible from this pid namespace) and uid. -ENOTSUP where unknown. */
int plat_peer_cred(int fd, pid_t *pid, uid_t *uid);
/* Accepts one connection as a non-blocking fd. */
int plat_accept(int listen_fd, int *fd_out);
/* The numeric address (no port) of a connected TCP socket's peer, e.g.
 * "127.0.0.1" or "::1". 0 or a negative errno. */
int plat_peer_addr(int fd, char *out, size_t cap);

/* Signals become readable bytes on the returned fd, so the loop notices
 * them without races; the handlers only count. Caught: the signals whose
 * default action would end the process (SIGTERM, SIGINT, SIGQUIT, SIGALRM,
 * SIGVTALRM, SIGPROF, SIGXCPU), SIGHUP, SIGUSR1, SIGUSR2. Ignored: SIGPIPE
 * and SIGXFSZ (the write fails instead). Windows: console events and service
 * stops arrive as SIGINT/SIGTERM. */
int plat_signals_init(int *fd_out);
struct plat_signals {
	int stop;              /* a signal that asks the daemon to end, 0 if none */
	unsigned hup, usr1, usr2; /* how many arrived since the last call */
};
/* What arrived since the last call (drains the fd). */
void plat_signals_take(int fd, struct plat_signals *out);

/* The log file's reopening (SIGHUP, after logrotate renamed it): the
 * directory is opened once at start, and the file is opened again relative
 * to it, for appending, created if missing; the sandbox allows exactly that
 * open (plat_sandbox_enter). -ENOTSUP where there is no SIGHUP (Windows). */
int plat_log_dir_open(const char *path, int *dirfd_out);
int plat_log_reopen(int dirfd, const char *path, int *fd_out);

/* A resolved socket address, opaque outside the platform files. */
struct plat_addr {
	uint32_t len;
	uint8_t raw[128]; /* a struct sockaddr_storage */
};
/* host (a name or a literal address) and port to the first address.
 * plat_resolve_literal never blocks: -EAGAIN when host is a name.
 * plat_resolve may wait for DNS: never on an event loop (common/resolver.c). */
int plat_resolve_literal(const char *host, uint16_t port, struct plat_addr *out);
int plat_resolve(const char *host, uint16_t port, struct plat_addr *out);
/* plat_tcp_connect to a resolved address. */
int plat_tcp_connect_addr(const struct plat_addr *a, int *fd_out);

/* TCP. Hosts are names or literal addresses (resolution may block briefly).
 * plat_tcp_connect returns 0 when connected at once, -EINPROGRESS when the
 * caller must wait for writability and then ask plat_connect_result. */
int plat_tcp_listen(const char *host, uint16_t port, int backlog, int *fd_out);
int plat_tcp_connect(const char *host, uint16_t port, int *fd_out);
int plat_connect_result(int fd);
int plat_tcp_nodelay(int fd);
/* Closes with a reset (SO_LINGER 0): no TIME_WAIT is left on this host. Only
 * for sockets whose peer has everything it needs. */
void plat_close_abortive(int fd);
/* Bytes written to a TCP socket that its peer has not acknowledged yet;
 * -ENOTSUP where the OS cannot tell. */
int plat_tcp_unacked(int fd);
/* Does plat_tcp_unacked also wait for the peer to read (Windows: a grace
 * period while the socket stays writable), so that a reset after it loses
 * nothing a reader that keeps up would have taken? Else unacked 0 means
 * acknowledged, not read. */
bool plat_tcp_unacked_waits_for_reader(void);
/* Is this a loopback address (127.0.0.0/8, ::1, "localhost")? */
bool plat_is_loopback(const char *host);

/* Cryptographically random bytes (nonces, generated tokens). */
int plat_random(void *p, size_t n);

/* Creates path, which must not exist yet (-EEXIST; a symlink there counts),
 * readable and writable by its owner only (POSIX: mode 0600; Windows: a
 * protected ACL for the owner, SYSTEM and Administrators), and writes n
 * bytes to it. A file that could not be written whole is removed. */
int plat_write_new_file(const char *path, const void *p, size_t n);

/* Moving bytes between sockets through a kernel pipe without copying them
 * to user space (Linux splice). Where the OS has no such call, plat_pipe_open
 * returns -ENOTSUP and callers keep copying. */
int plat_pipe_open(int p[2]);
ssize_t plat_splice_in(int sock, int pipe_w, size_t n);  /* 0 on EOF */
ssize_t plat_splice_out(int pipe_r, int sock, size_t n);

/* Reads a small file (e.g. /proc/self/mountinfo) whole into a malloc'd
 * buffer: *len bytes, which may include NULs, then a NUL. -EFBIG if the
 * file holds more than max bytes: never a silently shortened file. */
int plat_read_file(const char *path, size_t max, char **out, size_t *len);

/* strerror() for the errno values these functions return (pass -rc), with
 * texts for the socket errors that Windows' C runtime has none for. */
const char *plat_strerror(int err);
/* False where UNIX-domain sockets are not available (the Windows build). */
bool plat_has_unix_sockets(void);

/* Would a short write to fd (a log line, < PIPE_BUF) complete now without
 * blocking? False for a pipe or socket nobody drains; true for files. */
bool plat_fd_writable_now(int fd);

/* Makes sure descriptors 0-2 are open (on /dev/null where they were
 * closed), so that no socket the daemon opens becomes "stderr" and
 * receives log lines. First thing in main. */
void plat_std_fds(void);

/* Privileges, once sockets are bound and files opened: becomes that
 * account (name or number: its uid, primary gid, and its supplementary
 * groups). -ENOTSUP where the OS has no such thing; -ESRCH for an unknown
 * user. */
int plat_drop_user(const char *user);

/* The sandbox (Linux: a seccomp allow-list with no_new_privs), entered last
 * in setup. With a log directory, the one open for writing it allows is
 * plat_log_reopen's, relative to that directory. strict: a call outside the list kills the process instead of
 * failing with EPERM (the test suites run strict). plat_sandbox_probe makes
 * one call outside the list and returns what it got (-EPERM when denied). */
int plat_sandbox_enter(bool strict, int log_dirfd); /* log_dirfd: -1 or plat_log_dir_open's */
int plat_sandbox_probe(void);

/* poll(2), or WSAPoll on Windows: for the poll backend of the loop. */
enum { PLAT_POLL_IN = 1, PLAT_POLL_OUT = 2, PLAT_POLL_ERR = 4 /* error or hang-up */ };
struct plat_pollfd {
	int fd;
	unsigned events;   /* PLAT_POLL_IN | PLAT_POLL_OUT */
	unsigned revents;  /* set by plat_poll */
};
/* Entries with revents set, 0 on timeout (timeout_ms < 0: none), or -errno. */
int plat_poll(struct plat_pollfd *fds, size_t n, int timeout_ms);

#endif
