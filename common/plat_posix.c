/* POSIX implementation of plat.h (Linux and macOS). */
#include "plat.h"
#include "plat_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0 /* macOS: SIGPIPE is ignored process-wide instead */
#endif

const char *plat_default_usbmuxd(void)
{
	return "unix:/var/run/usbmuxd";
}

uint64_t plat_monotonic_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

ssize_t plat_read(int fd, void *p, size_t n)
{
	for (;;) {
		ssize_t r = recv(fd, p, n, 0);
		if (r >= 0)
			return r;
		if (errno == EINTR)
			continue;
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	}
}

ssize_t plat_write(int fd, const void *p, size_t n)
{
	for (;;) {
		ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
		if (r >= 0)
			return r;
		if (errno == EINTR)
			continue;
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	}
}

int plat_shutdown_write(int fd)
{
	return shutdown(fd, SHUT_WR) == 0 ? 0 : -errno;
}

void plat_close(int fd)
{
	if (fd >= 0)
		close(fd);
}

int plat_set_nb_cloexec(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
		return -errno;
	return 0;
}

static int unix_sockaddr(const char *path, struct sockaddr_un *sa)
{
	size_t n = strlen(path);
	if (n >= sizeof(sa->sun_path))
		return -ENAMETOOLONG;
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	memcpy(sa->sun_path, path, n + 1);
	return 0;
}

int plat_unix_connect(const char *path, int *fd_out)
{
	struct sockaddr_un sa;
	int rc = unix_sockaddr(path, &sa);
	if (rc < 0)
		return rc;
	int fd = plat_socket_nb(AF_UNIX, SOCK_STREAM, 0);
	if (fd < 0)
		return fd;
	/* A UNIX connect completes at once or fails at once; EAGAIN means the
	 * listener's backlog is full and the caller may retry later. */
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		rc = errno == EWOULDBLOCK ? -EAGAIN : -errno;
		goto out_close;
	}
	*fd_out = fd;
	return 0;
out_close:
	close(fd);
	return rc;
}

static int lookup_user(const char *s, uid_t *uid, gid_t *gid, bool *named);
static int lookup_group(const char *s, gid_t *gid);

/* Is something accepting on this socket file right now? */
static int probe_live(const struct sockaddr_un *sa)
{
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (fd < 0)
		return -errno;
	int rc = connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0 ? 1 : -errno;
	close(fd);
	if (rc == -ECONNREFUSED)
		return 0;
	/* EAGAIN: a live listener with a full backlog. */
	return rc == -EAGAIN ? 1 : rc;
}

/* OWNER[:GROUP], :GROUP or OWNER into ids; (uid_t)-1 / (gid_t)-1 leave one
 * unchanged. -ESRCH for an unknown name or an empty spec. */
static int parse_owner(const char *owner_group, uid_t *uid, gid_t *gid)
{
	char owner[256];
	const char *colon = strchr(owner_group, ':');
	size_t n = colon ? (size_t)(colon - owner_group) : strlen(owner_group);
	if (n >= sizeof(owner))
		return -ESRCH;
	memcpy(owner, owner_group, n);
	owner[n] = 0;
	*uid = (uid_t)-1;
	*gid = (gid_t)-1;
	bool named;
	int rc = 0;
	if (n)
		rc = lookup_user(owner, uid, gid, &named);
	if (rc == 0 && colon)
		rc = colon[1] ? lookup_group(colon + 1, gid) : -ESRCH;
	if (rc == 0 && !n && !colon)
		rc = -ESRCH;
	return rc;
}

/* Binds, sets mode and owner, and listens inside a fresh private directory
 * (mkdtemp, 0700) next to path, then links the finished socket into place.
 * Every step after bind works on that directory's descriptor, where nobody
 * else can create or swap an entry: a symlink planted at path (the parent
 * may be writable by others) can neither redirect chmod/chown to another
 * file nor be replaced (link() refuses an existing name), and no client can
 * connect before mode and owner are what was asked. */
static int listen_private(const char *path, unsigned mode, const char *owner_group,
			  int backlog, int fd, struct stat *st)
{
	uid_t uid = (uid_t)-1;
	gid_t gid = (gid_t)-1;
	int rc = owner_group ? parse_owner(owner_group, &uid, &gid) : 0;
	if (rc < 0)
		return rc;
	const char *slash = strrchr(path, '/');
	size_t dlen = slash ? (size_t)(slash - path) : 0;
	char tmpl[PATH_MAX];
	if (snprintf(tmpl, sizeof(tmpl), "%.*s/.muxshim-XXXXXX", (int)dlen, path) >=
	    (int)sizeof(tmpl))
		return -ENAMETOOLONG;
	if (!mkdtemp(tmpl))
		return -errno;
	int cwd = -1;
	/* The directory is ours only if it is still the one mkdtemp made: a
	 * neighbour may rename entries of a directory without the sticky bit. */
	int dir = open(tmpl, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct stat dst;
	if (dir < 0 || fstat(dir, &dst) < 0) {
		rc = -errno;
		goto out_rmdir;
	}
	if (dst.st_uid != geteuid() || (dst.st_mode & 07777) != 0700) {
		rc = -EEXIST;
		goto out_close_dir;
	}
	/* bind() takes a path; a relative one from inside the directory names
	 * exactly the directory we hold, whatever is renamed around it, and has
	 * no length issue. The daemon is single-threaded during setup. */
	cwd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fchdir(dir) < 0) {
		rc = -errno;
		goto out_close_dir;
	}
	struct sockaddr_un sa;
	unix_sockaddr("s", &sa);
	rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 ? 0 : -errno;
	if (cwd < 0 || fchdir(cwd) < 0)
		rc = chdir("/") == 0 || rc < 0 ? rc : -errno; /* never stay in the temp dir */
	if (rc < 0)
		goto out_close_dir;
	/* chmod after bind: the mode must not depend on the caller's umask. */
	if (fchmodat(dir, "s", (mode_t)mode, 0) < 0 ||
	    (owner_group && fchownat(dir, "s", uid, gid, AT_SYMLINK_NOFOLLOW) < 0) ||
	    fstatat(dir, "s", st, AT_SYMLINK_NOFOLLOW) < 0 || listen(fd, backlog) < 0) {
		rc = -errno;
		goto out_unlink;
	}
	if (linkat(dir, "s", AT_FDCWD, path, 0) < 0) {
		rc = errno == EEXIST ? -EADDRINUSE : -errno;
		goto out_unlink;
	}
	rc = 0;
out_unlink:
	unlinkat(dir, "s", 0);
out_close_dir:
	if (dir >= 0)
		close(dir);
	if (cwd >= 0)
		close(cwd);
out_rmdir:
	/* By name: if a neighbour renamed ours away, this fails on theirs
	 * (rmdir removes only empty directories) and ours stays, empty. */
	rmdir(tmpl);
	return rc;
}

int plat_unix_listen(const char *path, unsigned mode, const char *owner_group, int backlog,
		     int *fd_out, bool *replaced, struct plat_file_id *id)
{
	struct sockaddr_un sa;
	struct stat st;
	int rc = unix_sockaddr(path, &sa);
	if (rc < 0)
		return rc;
	*replaced = false;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return -EEXIST;
		rc = probe_live(&sa);
		if (rc == 1)
			return -EADDRINUSE;
		if (rc < 0)
			return rc;
		if (unlink(path) < 0 && errno != ENOENT)
			return -errno;
		*replaced = true;
	} else if (errno != ENOENT) {
		return -errno;
	}

	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (fd < 0)
		return -errno;
	rc = plat_set_nb_cloexec(fd);
	if (rc == 0)
		rc = listen_private(path, mode, owner_group, backlog, fd, &st);
	if (rc < 0) {
		close(fd);
		return rc;
	}
	id->dev = (uint64_t)st.st_dev;
	id->ino = (uint64_t)st.st_ino;
	*fd_out = fd;
	return 0;
}

bool plat_unix_is_ours(const char *path, const struct plat_file_id *id)
{
	struct stat st;
	return lstat(path, &st) == 0 && (uint64_t)st.st_dev == id->dev &&
	       (uint64_t)st.st_ino == id->ino;
}

void plat_unix_unlink_if_ours(const char *path, const struct plat_file_id *id)
{
	if (plat_unix_is_ours(path, id))
		unlink(path);
}

int plat_accept(int listen_fd, int *fd_out)
{
	for (;;) {
		int fd = plat_accept_nb(listen_fd);
		if (fd >= 0) {
			*fd_out = fd;
			return 0;
		}
		if (fd == -EINTR)
			continue;
		return fd == -EWOULDBLOCK ? -EAGAIN : fd;
	}
}

int plat_peer_addr(int fd, char *out, size_t cap)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
		return -errno;
	const void *a;
	if (ss.ss_family == AF_INET)
		a = &((struct sockaddr_in *)&ss)->sin_addr;
	else if (ss.ss_family == AF_INET6)
		a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
	else
		return -EAFNOSUPPORT;
	return inet_ntop(ss.ss_family, a, out, (socklen_t)cap) ? 0 : -errno;
}

static int signal_pipe[2] = { -1, -1 };
/* Counters, not flags: the loop compares them with what it has seen, so a
 * signal that arrives while it reads them is never lost. Each is written by
 * one signal's handler only, and a handler is not re-entered for its own
 * signal. */
static volatile sig_atomic_t stop_signal, hup_count, usr1_count, usr2_count;

static const int stop_signals[] = { SIGTERM, SIGINT, SIGQUIT, SIGALRM, SIGVTALRM, SIGPROF,
				    SIGXCPU };

static void on_signal(int sig)
{
	int saved = errno;
	if (sig == SIGHUP)
		hup_count++;
	else if (sig == SIGUSR1)
		usr1_count++;
	else if (sig == SIGUSR2)
		usr2_count++;
	else
		stop_signal = sig;
	ssize_t w = write(signal_pipe[1], "s", 1);
	(void)w; /* a full pipe already holds a wake-up */
	errno = saved;
}

int plat_signals_init(int *fd_out)
{
	if (pipe(signal_pipe) < 0)
		return -errno;
	for (int i = 0; i < 2; i++) {
		int rc = plat_set_nb_cloexec(signal_pipe[i]);
		if (rc < 0)
			return rc;
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	for (size_t i = 0; i < sizeof(stop_signals) / sizeof(stop_signals[0]); i++)
		if (sigaction(stop_signals[i], &sa, NULL) < 0)
			return -errno;
	if (sigaction(SIGHUP, &sa, NULL) < 0 || sigaction(SIGUSR1, &sa, NULL) < 0 ||
	    sigaction(SIGUSR2, &sa, NULL) < 0)
		return -errno;
	signal(SIGPIPE, SIG_IGN);
	signal(SIGXFSZ, SIG_IGN);
	*fd_out = signal_pipe[0];
	return 0;
}

void plat_signals_take(int fd, struct plat_signals *out)
{
	static unsigned seen_hup, seen_usr1, seen_usr2;
	char drain[64];
	while (read(fd, drain, sizeof(drain)) > 0)
		;
	unsigned hup = (unsigned)hup_count, usr1 = (unsigned)usr1_count,
		 usr2 = (unsigned)usr2_count;
	out->stop = stop_signal;
	out->hup = hup - seen_hup;
	out->usr1 = usr1 - seen_usr1;
	out->usr2 = usr2 - seen_usr2;
	seen_hup = hup;
	seen_usr1 = usr1;
	seen_usr2 = usr2;
}

int plat_log_dir_open(const char *path, int *dirfd_out)
{
	const char *slash = strrchr(path, '/');
	char dir[PATH_MAX];
	if (!slash)
		strcpy(dir, ".");
	else if (slash == path)
		strcpy(dir, "/");
	else if ((size_t)(slash - path) >= sizeof(dir))
		return -ENAMETOOLONG;
	else
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	*dirfd_out = fd;
	return 0;
}

int plat_log_reopen(int dirfd, const char *path, int *fd_out)
{
	const char *slash = strrchr(path, '/');
	int fd = openat(dirfd, slash ? slash + 1 : path, PLAT_LOG_OPEN_FLAGS, 0666);
	if (fd < 0)
		return -errno;
	*fd_out = fd;
	return 0;
}

int plat_read_file(const char *path, size_t max, char **out, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	char *buf = malloc(max + 2);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	/* One byte beyond max tells a file that is too long. */
	size_t n = 0;
	int rc = 0;
	while (n <= max) {
		ssize_t r = read(fd, buf + n, max + 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			rc = -errno;
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	if (rc == 0 && n > max)
		rc = -EFBIG;
	if (rc < 0) {
		memset(buf, 0, n); /* it may have been a secret */
		free(buf);
		return rc;
	}
	buf[n] = '\0';
	*out = buf;
	*len = n;
	return 0;
}

static int resolve(const char *host, uint16_t port, bool passive, struct addrinfo **res)
{
	struct addrinfo hints;
	char service[8];
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = passive ? AI_PASSIVE : 0;
	snprintf(service, sizeof(service), "%u", port);
	int rc = getaddrinfo(host, service, &hints, res);
	if (rc == 0)
		return 0;
	return rc == EAI_SYSTEM ? -errno : -EHOSTUNREACH;
}

int plat_tcp_listen(const char *host, uint16_t port, int backlog, int *fd_out)
{
	struct addrinfo *res;
	int rc = resolve(host, port, true, &res);
	if (rc < 0)
		return rc;
	rc = -EADDRNOTAVAIL;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
		if (fd < 0) {
			rc = -errno;
			continue;
		}
		int one = 1;
		/* SO_REUSEADDR: a restarted helper must not wait for the old
		 * listener's TIME_WAIT connections to expire. */
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, backlog) < 0) {
			rc = -errno;
			close(fd);
			continue;
		}
		rc = plat_set_nb_cloexec(fd);
		if (rc < 0) {
			close(fd);
			continue;
		}
		*fd_out = fd;
		rc = 0;
		break;
	}
	freeaddrinfo(res);
	return rc;
}

static int first_addr(const char *host, uint16_t port, int flags, struct plat_addr *out)
{
	struct addrinfo hints, *res;
	char service[8];
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = flags;
	snprintf(service, sizeof(service), "%u", port);
	int rc = getaddrinfo(host, service, &hints, &res);
	if (rc == EAI_NONAME && (flags & AI_NUMERICHOST))
		return -EAGAIN;
	if (rc != 0)
		return rc == EAI_SYSTEM ? -errno : -EHOSTUNREACH;
	if (res->ai_addrlen > sizeof(out->raw)) {
		freeaddrinfo(res);
		return -EAFNOSUPPORT;
	}
	out->len = (uint32_t)res->ai_addrlen;
	memcpy(out->raw, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	return 0;
}

int plat_resolve_literal(const char *host, uint16_t port, struct plat_addr *out)
{
	return first_addr(host, port, AI_NUMERICHOST, out);
}

int plat_resolve(const char *host, uint16_t port, struct plat_addr *out)
{
	return first_addr(host, port, 0, out);
}

int plat_tcp_connect_addr(const struct plat_addr *a, int *fd_out)
{
	const struct sockaddr *sa = (const struct sockaddr *)a->raw;
	int fd = plat_socket_nb(sa->sa_family, SOCK_STREAM, 0);
	if (fd < 0)
		return fd;
	if (connect(fd, sa, a->len) == 0) {
		*fd_out = fd;
		return 0;
	}
	int rc = -errno;
	if (rc == -EINPROGRESS) {
		*fd_out = fd;
		return rc;
	}
	close(fd);
	return rc;
}

int plat_tcp_connect(const char *host, uint16_t port, int *fd_out)
{
	struct addrinfo *res;
	int rc = resolve(host, port, false, &res);
	if (rc < 0)
		return rc;
	rc = -EHOSTUNREACH;
	/* First address only: a non-blocking connect cannot walk the list
	 * without a state machine, and loopback/host.docker.internal have one. */
	struct addrinfo *ai = res;
	int fd = plat_socket_nb(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
	if (fd < 0) {
		rc = fd;
		goto out;
	}
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
		rc = 0;
	} else if (errno == EINPROGRESS) {
		rc = -EINPROGRESS;
	} else {
		rc = -errno;
		close(fd);
		goto out;
	}
	*fd_out = fd;
out:
	freeaddrinfo(res);
	return rc;
}

int plat_connect_result(int fd)
{
	int err = 0;
	socklen_t len = sizeof(err);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		return -errno;
	return -err;
}

int plat_tcp_nodelay(int fd)
{
	int one = 1;
	return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == 0 ? 0 : -errno;
}

void plat_close_abortive(int fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

bool plat_is_loopback(const char *host)
{
	struct in_addr a4;
	struct in6_addr a6;
	if (strcmp(host, "localhost") == 0)
		return true;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, host, &a6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&a6);
	return false;
}

int plat_random(void *p, size_t n)
{
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	size_t got = 0;
	while (got < n) {
		ssize_t r = read(fd, (char *)p + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			close(fd);
			return r < 0 ? -errno : -EIO;
		}
		got += (size_t)r;
	}
	close(fd);
	return 0;
}

int plat_write_new_file(const char *path, const void *p, size_t n)
{
	/* O_EXCL with O_CREAT also refuses a symlink planted at path. */
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	int rc = fchmod(fd, 0600) < 0 ? -errno : 0; /* whatever the umask */
	size_t done = 0;
	while (rc == 0 && done < n) {
		ssize_t w = write(fd, (const char *)p + done, n - done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			rc = w < 0 ? -errno : -EIO;
		else
			done += (size_t)w;
	}
	if (rc == 0 && fsync(fd) < 0)
		rc = -errno;
	if (close(fd) < 0 && rc == 0)
		rc = -errno;
	if (rc < 0)
		unlink(path);
	return rc;
}

const char *plat_strerror(int err)
{
	return strerror(err);
}

bool plat_has_unix_sockets(void)
{
	return true;
}

/* For loop_poll.c (systems without epoll). The caller's array is translated
 * into a scratch one that grows with the largest set seen. */
int plat_poll(struct plat_pollfd *fds, size_t n, int timeout_ms)
{
	static struct pollfd *scratch;
	static size_t cap;
	if (n > cap) {
		struct pollfd *p = realloc(scratch, n * sizeof(*p));
		if (!p)
			return -ENOMEM;
		scratch = p;
		cap = n;
	}
	for (size_t i = 0; i < n; i++) {
		scratch[i].fd = fds[i].fd;
		scratch[i].events = (short)(((fds[i].events & PLAT_POLL_IN) ? POLLIN : 0) |
					    ((fds[i].events & PLAT_POLL_OUT) ? POLLOUT : 0));
		scratch[i].revents = 0;
	}
	int r = poll(scratch, (nfds_t)n, timeout_ms);
	if (r < 0)
		return -errno;
	for (size_t i = 0; i < n; i++) {
		short re = scratch[i].revents;
		fds[i].revents = ((re & POLLIN) ? PLAT_POLL_IN : 0) |
				 ((re & POLLOUT) ? PLAT_POLL_OUT : 0) |
				 ((re & (POLLERR | POLLHUP | POLLNVAL)) ? PLAT_POLL_ERR : 0);
	}
	return r;
}

/* A user by name, or by number when no account has that name. */
static int lookup_user(const char *s, uid_t *uid, gid_t *gid, bool *named)
{
	struct passwd *pw = *s ? getpwnam(s) : NULL;
	if (pw) {
		*uid = pw->pw_uid;
		*gid = pw->pw_gid;
		*named = true;
		return 0;
	}
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (!*s || *end || errno || s[0] == '-' || v >= (uid_t)-1)
		return -ESRCH;
	*uid = (uid_t)v;
	pw = getpwuid(*uid);
	*gid = pw ? pw->pw_gid : (gid_t)v; /* no account: the group of that number */
	*named = false;
	return 0;
}

static int lookup_group(const char *s, gid_t *gid)
{
	struct group *gr = getgrnam(s);
	if (gr) {
		*gid = gr->gr_gid;
		return 0;
	}
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (!*s || *end || errno || s[0] == '-' || v >= (gid_t)-1)
		return -ESRCH;
	*gid = (gid_t)v;
	return 0;
}

int plat_drop_user(const char *user)
{
	uid_t uid;
	gid_t gid;
	bool named;
	int rc = lookup_user(user, &uid, &gid, &named);
	if (rc < 0)
		return rc;
	if (getuid() != 0 && geteuid() != 0)
		return uid == geteuid() ? 0 : -EPERM; /* already that user, or cannot be */
	/* Groups first, while we still may; then the uid, which ends it. */
	if (named ? initgroups(user, gid) < 0 : setgroups(0, NULL) < 0)
		return -errno;
	if (setgid(gid) < 0 || setuid(uid) < 0)
		return -errno;
	/* Paranoia: root must not be regainable. */
	if (uid != 0 && (setuid(0) == 0 || geteuid() != uid))
		return -EPERM;
	return 0;
}

void plat_std_fds(void)
{
	for (int fd = 0; fd <= 2; fd++) {
		if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
			continue;
		int n = open("/dev/null", O_RDWR);
		if (n >= 0 && n != fd)
			close(n); /* lower ones are open: n is fd itself normally */
	}
}

bool plat_fd_writable_now(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	/* An error or hang-up counts as "now": the write fails at once. */
	return poll(&p, 1, 0) == 1;
}
