/* Windows implementation of plat.h (Winsock 2), for muxshim-host.exe.
 *
 * The rest of the code calls sockets "int fd". A Winsock SOCKET is a kernel
 * handle value: a small multiple of 4 in practice, so it is carried in the
 * int unchanged; one that did not fit (never seen) would be refused with
 * -EMFILE rather than truncated. Winsock errors (WSAGetLastError) are mapped
 * to the negative errno values of plat.h's convention, so the daemons test
 * -EAGAIN, -ECONNREFUSED... exactly as on POSIX systems. */
#include "plat.h"

#include <winsock2.h>
#include <ws2tcpip.h>
#include <mstcpip.h>
#include <windows.h>
#include <bcrypt.h>
#include <sddl.h>

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- sockets and errors ------------------------------------------------ */

static int net_ready;

/* Winsock needs WSAStartup before the first socket call of the process. */
static int net_init(void)
{
	WSADATA wsa;
	if (net_ready)
		return 0;
	if (WSAStartup(MAKEWORD(2, 2), &wsa) != 0)
		return -EIO;
	net_ready = 1;
	return 0;
}

static SOCKET sock_of(int fd)
{
	return (SOCKET)(unsigned)fd;
}

static int errno_of_wsa(int e)
{
	switch (e) {
	case WSAEWOULDBLOCK:     return EAGAIN;
	case WSAEINPROGRESS:     return EINPROGRESS;
	case WSAEALREADY:        return EALREADY;
	case WSAEINTR:           return EINTR;
	case WSAEACCES:          return EACCES;
	case WSAEADDRINUSE:      return EADDRINUSE;
	case WSAEADDRNOTAVAIL:   return EADDRNOTAVAIL;
	case WSAECONNREFUSED:    return ECONNREFUSED;
	case WSAECONNRESET:      return ECONNRESET;
	case WSAENETRESET:       return ECONNRESET;
	case WSAECONNABORTED:    return ECONNABORTED;
	case WSAESHUTDOWN:       return EPIPE;
	case WSAENOTCONN:        return ENOTCONN;
	case WSAEISCONN:         return EISCONN;
	case WSAETIMEDOUT:       return ETIMEDOUT;
	case WSAEHOSTUNREACH:    return EHOSTUNREACH;
	case WSAEHOSTDOWN:       return EHOSTUNREACH;
	case WSAENETUNREACH:     return ENETUNREACH;
	case WSAENETDOWN:        return ENETDOWN;
	case WSAEMFILE:          return EMFILE;
	case WSAENOBUFS:         return ENOBUFS;
	case WSAEAFNOSUPPORT:    return EAFNOSUPPORT;
	case WSAEPROTONOSUPPORT: return EPROTONOSUPPORT;
	case WSAEOPNOTSUPP:      return ENOTSUP;
	case WSAEMSGSIZE:        return EMSGSIZE;
	case WSAENOTSOCK:        return ENOTSOCK;
	case WSAEINVAL:          return EINVAL;
	case WSAEFAULT:          return EFAULT;
	case WSANOTINITIALISED:  return EIO;
	default:                 return EIO;
	}
}

static int wsa_err(void)
{
	return -errno_of_wsa(WSAGetLastError());
}

/* A SOCKET as a non-blocking fd (closed on failure). */
static int fd_of_socket(SOCKET s, int *fd_out)
{
	u_long on = 1;
	if (s == INVALID_SOCKET)
		return wsa_err();
	if (s > (SOCKET)INT_MAX) {
		closesocket(s);
		return -EMFILE;
	}
	if (ioctlsocket(s, FIONBIO, &on) != 0) {
		int rc = wsa_err();
		closesocket(s);
		return rc;
	}
	*fd_out = (int)s;
	return 0;
}

/* A new socket, not inherited by child processes (the CLOEXEC of POSIX). */
static int new_socket(int family, int type, int protocol, int *fd_out)
{
	int rc = net_init();
	if (rc < 0)
		return rc;
	SOCKET s = WSASocketW(family, type, protocol, NULL, 0,
			      WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
	return fd_of_socket(s, fd_out);
}

/* The C runtime's strerror() has no text for the POSIX socket errors
 * (msvcrt says "Unknown error" for all of them). */
const char *plat_strerror(int err)
{
	static const struct {
		int err;
		const char *text;
	} texts[] = {
		{ EADDRINUSE, "Address already in use" },
		{ EADDRNOTAVAIL, "Cannot assign requested address" },
		{ ECONNREFUSED, "Connection refused" },
		{ ECONNRESET, "Connection reset by peer" },
		{ ECONNABORTED, "Connection aborted" },
		{ ETIMEDOUT, "Connection timed out" },
		{ EHOSTUNREACH, "No route to host (or name not found)" },
		{ ENETUNREACH, "Network is unreachable" },
		{ ENETDOWN, "Network is down" },
		{ ENOBUFS, "No buffer space available (out of sockets or ports)" },
		{ ENOTCONN, "Transport endpoint is not connected" },
		{ EISCONN, "Transport endpoint is already connected" },
		{ EINPROGRESS, "Operation now in progress" },
		{ EALREADY, "Operation already in progress" },
		{ ENOTSUP, "Operation not supported on this platform" },
		{ EAFNOSUPPORT, "Address family not supported" },
		{ EPROTONOSUPPORT, "Protocol not supported" },
		{ EMSGSIZE, "Message too long" },
		{ ENOTSOCK, "Not a socket" },
	};
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
		if (texts[i].err == err)
			return texts[i].text;
	return strerror(err);
}

bool plat_has_unix_sockets(void)
{
	/* Windows 10 has AF_UNIX, but Apple's usbmuxd listens on TCP here, and
	 * wine (where this build is tested) has no AF_UNIX at all. */
	return false;
}

const char *plat_default_usbmuxd(void)
{
	return "tcp:127.0.0.1:27015";
}

uint64_t plat_monotonic_ms(void)
{
	/* QueryPerformanceCounter: monotonic, and finer than GetTickCount64's
	 * 10-16 ms, which matters for the loop's millisecond timers. */
	static LARGE_INTEGER freq;
	LARGE_INTEGER now;
	if (freq.QuadPart == 0)
		QueryPerformanceFrequency(&freq);
	QueryPerformanceCounter(&now);
	uint64_t c = (uint64_t)now.QuadPart, f = (uint64_t)freq.QuadPart;
	return c / f * 1000u + c % f * 1000u / f;
}

/* ---- plat_socketpair's loopback pairs, closed without TIME_WAIT ----------
 *
 * Windows has no socketpair, so plat_socketpair makes a loopback TCP
 * connection; a TCP connection closed with a FIN each way leaves its
 * first closer's port in TIME_WAIT for two minutes: one port per gated
 * session (--tenants), the very leak this project exists to stop. Both ends
 * are in this process, so the pair is ended differently, and still loses
 * nothing:
 *
 * - Only the first FIN goes on the wire. An end whose owner ends its writing
 *   (plat_shutdown_write, or plat_close without it) after the other end sent
 *   a FIN withholds its own ("shut"); its reader is told EOF by plat_read
 *   once it has read every byte that end's owner wrote (the counters
 *   below: both owners are here, so "read" is known, not guessed), and
 *   plat_poll reports it readable then.
 * - The pair is then torn down with a reset (SO_LINGER 0), which leaves no
 *   TIME_WAIT on either end. A reset destroys what the receiving socket
 *   has not handed to its owner yet, so a shut end is reset only once its
 *   peer's owner has read all it wrote, or has closed its own end (and
 *   wants nothing more); until then the closed end's socket waits here, its
 *   owner's descriptor number still held. A reset that reaches an end whose
 *   peer was shut is reported as the EOF it stands for.
 * - An end closed while the other has sent nothing closes normally: its FIN
 *   is the first, and the other end, closing second, resets.
 *
 * The resolver's thread writes to a pair (common/resolver.c): the table is
 * guarded by a lock. */
struct pair_end {
	int fd;                   /* -1 once its socket is closed */
	struct pair_end *peer;
	uint64_t sent, recvd;     /* bytes its owner wrote, read */
	bool fin;                 /* a FIN went out (or a normal close) */
	bool shut;                /* its owner is done writing; FIN withheld */
	bool owner_closed;        /* plat_close was called */
	struct pair_end *hnext;
};
struct pair {
	struct pair_end e[2];
};

#define PAIR_BUCKETS 256
static struct pair_end *pair_table[PAIR_BUCKETS];
static SRWLOCK pair_lock = SRWLOCK_INIT;

static struct pair_end **pair_slot(int fd)
{
	struct pair_end **pp = &pair_table[((unsigned)fd >> 2) % PAIR_BUCKETS];
	while (*pp && (*pp)->fd != fd)
		pp = &(*pp)->hnext;
	return pp;
}

static struct pair_end *pair_find(int fd)
{
	return *pair_slot(fd);
}

/* Closes e's socket (with a reset, or normally); the pair is freed with the
 * second. */
static void pair_end_close(struct pair_end *e, bool reset)
{
	struct pair_end **pp = pair_slot(e->fd);
	*pp = e->hnext;
	if (reset) {
		struct linger lg = { .l_onoff = 1, .l_linger = 0 };
		setsockopt(sock_of(e->fd), SOL_SOCKET, SO_LINGER, (const char *)&lg, sizeof(lg));
	}
	closesocket(sock_of(e->fd));
	e->fd = -1;
	if (e->peer->fd < 0)
		free(e < e->peer ? e : e->peer);
}

/* Has e's owner read everything its peer's owner wrote before it was done? */
static bool pair_eof_due(const struct pair_end *e)
{
	return e->peer->shut && e->recvd == e->peer->sent;
}

/* A closed end that waited for its peer's owner to read: reset it now if
 * that is done (or that owner closed too). */
static void pair_settle(struct pair_end *e)
{
	if (e->fd >= 0 && e->owner_closed && (e->peer->fd < 0 || e->peer->owner_closed ||
					      e->peer->recvd == e->sent))
		pair_end_close(e, true);
}

static void pair_close(struct pair_end *e, bool abortive)
{
	struct pair_end *p = e->peer;
	e->owner_closed = true;
	if (abortive || p->fd < 0 || p->owner_closed) {
		/* Nobody reads from e any more, or its owner asked for a reset;
		 * a peer that waited for e's owner to read need not wait. (The
		 * second of the two closes frees the pair.) */
		if (p->fd >= 0 && p->owner_closed)
			pair_end_close(p, true);
		pair_end_close(e, true);
	} else if (p->fin || e->shut) {
		e->shut = true;
		pair_settle(e);
	} else {
		e->fin = true;
		pair_end_close(e, false);
	}
}

ssize_t plat_read(int fd, void *p, size_t n)
{
	AcquireSRWLockExclusive(&pair_lock);
	struct pair_end *e = pair_find(fd);
	if (e && pair_eof_due(e)) {
		ReleaseSRWLockExclusive(&pair_lock);
		return 0;
	}
	if (!e)
		ReleaseSRWLockExclusive(&pair_lock);
	int r = recv(sock_of(fd), p, n > INT_MAX ? INT_MAX : (int)n, 0);
	ssize_t rc = r >= 0 ? r : wsa_err();
	if (e) {
		if (r > 0) {
			e->recvd += (unsigned)r;
			pair_settle(e->peer);
		} else if ((rc == -ECONNRESET || rc == -ECONNABORTED) && e->peer->shut) {
			rc = 0; /* the reset that ends a pair whose peer was done */
		}
		ReleaseSRWLockExclusive(&pair_lock);
	}
	return rc;
}

ssize_t plat_write(int fd, const void *p, size_t n)
{
	AcquireSRWLockExclusive(&pair_lock);
	struct pair_end *e = pair_find(fd);
	if (!e)
		ReleaseSRWLockExclusive(&pair_lock);
	/* Windows has no SIGPIPE: a send to a closed peer just fails. */
	int r = send(sock_of(fd), p, n > INT_MAX ? INT_MAX : (int)n, 0);
	if (e) {
		if (r > 0)
			e->sent += (unsigned)r;
		ReleaseSRWLockExclusive(&pair_lock);
	}
	return r >= 0 ? r : wsa_err();
}

int plat_shutdown_write(int fd)
{
	int rc = 0;
	AcquireSRWLockExclusive(&pair_lock);
	struct pair_end *e = pair_find(fd);
	if (e && (e->fin || e->shut)) {
		/* already done */
	} else if (e && e->peer->fin) {
		e->shut = true; /* the second FIN: withheld (see above) */
	} else {
		rc = shutdown(sock_of(fd), SD_SEND) == 0 ? 0 : wsa_err();
		if (e && rc == 0)
			e->fin = true;
	}
	ReleaseSRWLockExclusive(&pair_lock);
	return rc;
}

static void close_wait_forget(int fd);

static void close_socket(int fd, bool abortive)
{
	if (fd < 0)
		return;
	close_wait_forget(fd);
	AcquireSRWLockExclusive(&pair_lock);
	struct pair_end *e = pair_find(fd);
	if (e) {
		pair_close(e, abortive);
	} else {
		if (abortive) {
			struct linger lg = { .l_onoff = 1, .l_linger = 0 };
			setsockopt(sock_of(fd), SOL_SOCKET, SO_LINGER, (const char *)&lg, sizeof(lg));
		}
		closesocket(sock_of(fd));
	}
	ReleaseSRWLockExclusive(&pair_lock);
}

void plat_close(int fd)
{
	close_socket(fd, false);
}

/* ---- UNIX sockets: not in this build ----------------------------------- */

int plat_unix_connect(const char *path, int *fd_out)
{
	(void)path, (void)fd_out;
	return -ENOTSUP;
}

int plat_unix_listen(const char *path, unsigned mode, const char *owner_group, int backlog,
		     int *fd_out, bool *replaced, struct plat_file_id *id)
{
	(void)path, (void)mode, (void)owner_group, (void)backlog, (void)fd_out, (void)id;
	*replaced = false;
	return -ENOTSUP;
}

bool plat_unix_is_ours(const char *path, const struct plat_file_id *id)
{
	(void)path, (void)id;
	return false;
}

void plat_unix_unlink_if_ours(const char *path, const struct plat_file_id *id)
{
	(void)path, (void)id;
}

int plat_peer_cred(int fd, pid_t *pid, uid_t *uid)
{
	(void)fd, (void)pid, (void)uid;
	return -ENOTSUP;
}

int plat_accept(int listen_fd, int *fd_out)
{
	SOCKET s = accept(sock_of(listen_fd), NULL, NULL);
	if (s == INVALID_SOCKET) {
		int e = WSAGetLastError();
		/* A pending connection that was reset before we took it: the
		 * caller skips it, as it does ECONNABORTED on POSIX systems. */
		if (e == WSAECONNRESET)
			return -ECONNABORTED;
		return -errno_of_wsa(e);
	}
	return fd_of_socket(s, fd_out);
}

int plat_peer_addr(int fd, char *out, size_t cap)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	if (getpeername(sock_of(fd), (struct sockaddr *)&ss, &len) != 0)
		return wsa_err();
	const void *a;
	if (ss.ss_family == AF_INET)
		a = &((struct sockaddr_in *)&ss)->sin_addr;
	else if (ss.ss_family == AF_INET6)
		a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
	else
		return -EAFNOSUPPORT;
	return inet_ntop(ss.ss_family, a, out, cap) ? 0 : wsa_err();
}

/* ---- console events and service stops as a readable socket ------------- */

/* Windows has no signals to speak of: Ctrl-C, Ctrl-Break, closing the
 * console window and system shutdown arrive as console control events, on a
 * thread of their own; a service stop arrives on the service dispatcher's
 * thread, which raises SIGTERM (service_win.c). Both write a byte into a
 * connected pair of loopback sockets whose other end the loop watches: the
 * same shape as the POSIX self-pipe, and the only work done off the loop's
 * thread is one send(). */
static SOCKET signal_w = INVALID_SOCKET;
static volatile LONG last_signal;

static void note_signal(int sig)
{
	char c = 's';
	InterlockedExchange(&last_signal, sig);
	send(signal_w, &c, 1, 0); /* a full socket already holds a wake-up */
}

static BOOL WINAPI on_console_event(DWORD type)
{
	switch (type) {
	case CTRL_C_EVENT:
		note_signal(SIGINT);
		return TRUE;
	case CTRL_BREAK_EVENT:
		note_signal(SIGTERM);
		return TRUE;
	case CTRL_CLOSE_EVENT:
	case CTRL_SHUTDOWN_EVENT:
		note_signal(SIGTERM);
		/* Windows ends the process when this handler returns: wait here
		 * so that the loop can shut down cleanly first (its exit ends
		 * the process, this thread included). */
		Sleep(10000);
		return TRUE;
	case CTRL_LOGOFF_EVENT:
		/* Only services get this, for some user's logoff: not ours. */
		return TRUE;
	default:
		return FALSE;
	}
}

static void on_crt_signal(int sig)
{
	signal(sig, on_crt_signal); /* the C runtime resets it to SIG_DFL */
	note_signal(sig);
}

/* A connected pair of loopback TCP sockets (Windows has no socketpair),
 * not inherited by child processes (the listener's flag passes to the
 * accepted end). The accepted end must be the socket we connected, not some other local
 * process that raced to the temporary port: compare the addresses. */
static int socket_pair(SOCKET sv[2])
{
	struct sockaddr_in a = { .sin_family = AF_INET }, mine, theirs;
	int len = sizeof(a), rc = -EIO;
	SOCKET l = INVALID_SOCKET, c = INVALID_SOCKET, s = INVALID_SOCKET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	l = WSASocketW(AF_INET, SOCK_STREAM, 0, NULL, 0, WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
	if (l == INVALID_SOCKET || bind(l, (struct sockaddr *)&a, sizeof(a)) != 0 ||
	    getsockname(l, (struct sockaddr *)&a, &len) != 0 || listen(l, 1) != 0)
		goto out_err;
	c = WSASocketW(AF_INET, SOCK_STREAM, 0, NULL, 0, WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
	if (c == INVALID_SOCKET || connect(c, (struct sockaddr *)&a, sizeof(a)) != 0)
		goto out_err;
	s = accept(l, NULL, NULL);
	len = sizeof(mine);
	if (s == INVALID_SOCKET || getsockname(c, (struct sockaddr *)&mine, &len) != 0)
		goto out_err;
	len = sizeof(theirs);
	if (getpeername(s, (struct sockaddr *)&theirs, &len) != 0)
		goto out_err;
	if (mine.sin_port != theirs.sin_port || mine.sin_addr.s_addr != theirs.sin_addr.s_addr) {
		rc = -EACCES;
		goto out_close;
	}
	closesocket(l);
	sv[0] = s;
	sv[1] = c;
	return 0;
out_err:
	rc = wsa_err();
out_close:
	if (s != INVALID_SOCKET)
		closesocket(s);
	if (c != INVALID_SOCKET)
		closesocket(c);
	if (l != INVALID_SOCKET)
		closesocket(l);
	return rc;
}

int plat_signals_init(int *fd_out)
{
	SOCKET sv[2];
	u_long on = 1;
	int rc = net_init();
	if (rc < 0)
		return rc;
	rc = socket_pair(sv);
	if (rc < 0)
		return rc;
	if (ioctlsocket(sv[0], FIONBIO, &on) != 0 || ioctlsocket(sv[1], FIONBIO, &on) != 0 ||
	    sv[0] > (SOCKET)INT_MAX) {
		closesocket(sv[0]);
		closesocket(sv[1]);
		return -EIO;
	}
	signal_w = sv[1];
	signal(SIGTERM, on_crt_signal);
	if (!SetConsoleCtrlHandler(on_console_event, TRUE))
		return -EIO;
	*fd_out = (int)sv[0];
	return 0;
}

/* Windows has no socketpair: the gate's streams get a loopback TCP pair,
 * Nagle off on both ends (its small requests and replies would otherwise
 * wait for the peer's delayed ACK), closed without TIME_WAIT (struct pair,
 * above). */
int plat_socketpair(int fds[2])
{
	SOCKET sv[2];
	int rc = net_init();
	if (rc < 0)
		return rc;
	struct pair *pr = calloc(1, sizeof(*pr));
	if (!pr)
		return -ENOMEM;
	rc = socket_pair(sv);
	if (rc < 0)
		goto out_free;
	rc = fd_of_socket(sv[0], &fds[0]);
	if (rc < 0) {
		closesocket(sv[1]);
		goto out_free;
	}
	rc = fd_of_socket(sv[1], &fds[1]);
	if (rc < 0) {
		closesocket(sv[0]);
		goto out_free;
	}
	if ((rc = plat_tcp_nodelay(fds[0])) < 0 || (rc = plat_tcp_nodelay(fds[1])) < 0) {
		closesocket(sv[0]);
		closesocket(sv[1]);
		goto out_free;
	}
	AcquireSRWLockExclusive(&pair_lock);
	for (int i = 0; i < 2; i++) {
		struct pair_end **pp = pair_slot(fds[i]);
		pr->e[i] = (struct pair_end){ .fd = fds[i], .peer = &pr->e[1 - i], .hnext = *pp };
		*pp = &pr->e[i];
	}
	ReleaseSRWLockExclusive(&pair_lock);
	return 0;
out_free:
	free(pr);
	return rc;
}

void plat_signals_take(int fd, struct plat_signals *out)
{
	char drain[64];
	while (recv(sock_of(fd), drain, sizeof(drain), 0) > 0)
		;
	*out = (struct plat_signals){ .stop = (int)InterlockedCompareExchange(&last_signal, 0, 0) };
}

/* No SIGHUP on Windows: the log file is opened once. */
int plat_log_dir_open(const char *path, int *dirfd_out)
{
	(void)path, (void)dirfd_out;
	return -ENOTSUP;
}

int plat_log_reopen(int dirfd, const char *path, int *fd_out)
{
	(void)dirfd, (void)path, (void)fd_out;
	return -ENOTSUP;
}

/* ---- TCP ---------------------------------------------------------------- */

static int resolve(const char *host, uint16_t port, bool passive, struct addrinfo **res)
{
	struct addrinfo hints;
	char service[8];
	int rc = net_init();
	if (rc < 0)
		return rc;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = passive ? AI_PASSIVE : 0;
	snprintf(service, sizeof(service), "%u", port);
	return getaddrinfo(host, service, &hints, res) == 0 ? 0 : -EHOSTUNREACH;
}

int plat_tcp_listen(const char *host, uint16_t port, int backlog, int *fd_out)
{
	struct addrinfo *res;
	int rc = resolve(host, port, true, &res);
	if (rc < 0)
		return rc;
	rc = -EADDRNOTAVAIL;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		int fd;
		rc = new_socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol, &fd);
		if (rc < 0)
			continue;
		/* No SO_REUSEADDR: on Windows it would let another socket bind
		 * the same port and steal connections, and a plain bind already
		 * succeeds while old connections sit in TIME_WAIT. */
		if (bind(sock_of(fd), ai->ai_addr, (int)ai->ai_addrlen) != 0 ||
		    listen(sock_of(fd), backlog) != 0) {
			rc = wsa_err();
			closesocket(sock_of(fd));
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
	int rc = net_init();
	if (rc < 0)
		return rc;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = flags;
	snprintf(service, sizeof(service), "%u", port);
	rc = getaddrinfo(host, service, &hints, &res);
	if (rc == EAI_NONAME && (flags & AI_NUMERICHOST))
		return -EAGAIN; /* a name: plat_resolve's business */
	if (rc != 0)
		return -EHOSTUNREACH;
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
	int fd, rc = new_socket(sa->sa_family, SOCK_STREAM, IPPROTO_TCP, &fd);
	if (rc < 0)
		return rc;
	if (connect(sock_of(fd), sa, (int)a->len) == 0) {
		*fd_out = fd;
		return 0;
	}
	rc = WSAGetLastError() == WSAEWOULDBLOCK ? -EINPROGRESS : wsa_err();
	if (rc == -EINPROGRESS) {
		*fd_out = fd; /* Winsock's word for a connect under way */
		return rc;
	}
	closesocket(sock_of(fd));
	return rc;
}

int plat_tcp_connect(const char *host, uint16_t port, int *fd_out)
{
	struct addrinfo *res;
	int fd, rc = resolve(host, port, false, &res);
	if (rc < 0)
		return rc;
	/* First address only, as on POSIX systems. */
	struct addrinfo *ai = res;
	rc = new_socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol, &fd);
	if (rc < 0)
		goto out;
	if (connect(sock_of(fd), ai->ai_addr, (int)ai->ai_addrlen) == 0) {
		rc = 0;
	} else if (WSAGetLastError() == WSAEWOULDBLOCK) {
		/* Winsock's word for a connect under way. */
		rc = -EINPROGRESS;
	} else {
		rc = wsa_err();
		closesocket(sock_of(fd));
		goto out;
	}
	*fd_out = fd;
out:
	freeaddrinfo(res);
	return rc;
}

int plat_connect_result(int fd)
{
	int err = 0, len = sizeof(err);
	if (getsockopt(sock_of(fd), SOL_SOCKET, SO_ERROR, (char *)&err, &len) != 0)
		return wsa_err();
	return err ? -errno_of_wsa(err) : 0;
}

int plat_tcp_nodelay(int fd)
{
	BOOL one = TRUE;
	return setsockopt(sock_of(fd), IPPROTO_TCP, TCP_NODELAY, (const char *)&one,
			  sizeof(one)) == 0 ? 0 : wsa_err();
}

void plat_close_abortive(int fd)
{
	close_socket(fd, true);
}

/* Is the socket's send buffer full (the peer is not taking our bytes)?
 * Not when the connection failed: nothing to wait for then. (A hang-up
 * alone may be the peer's half-close: it can still be reading.) */
static bool send_blocked(int fd)
{
	WSAPOLLFD p = { .fd = sock_of(fd), .events = POLLWRNORM };
	if (WSAPoll(&p, 1, 0) < 0)
		return false;
	return !(p.revents & (POLLWRNORM | POLLERR)); /* none: not writable */
}

/* Sockets the caller is waiting to close: it asks plat_tcp_unacked every
 * few milliseconds until it hears 0 (at most 2 s, link.c). The first
 * question shrinks the socket's send buffer to CLOSE_SNDBUF: queued bytes
 * stay, but from then on "writable" means "at most a few KiB still queued"
 * rather than "the buffer is a third empty" (megabytes, with autotuning).
 * Few sockets are ever waiting at once, so a short list will do. */
#define CLOSE_SNDBUF   4096
#define CLOSE_GRACE_MS 100

static struct close_wait {
	int fd;
	uint64_t blocked_ms; /* last seen not writable, or first asked */
} *close_waits;
static size_t nclose_waits, close_waits_cap;

static struct close_wait *close_wait_begin(int fd)
{
	for (size_t i = 0; i < nclose_waits; i++)
		if (close_waits[i].fd == fd)
			return &close_waits[i];
	if (nclose_waits == close_waits_cap) {
		size_t cap = close_waits_cap ? close_waits_cap * 2 : 16;
		struct close_wait *p = realloc(close_waits, cap * sizeof(*p));
		if (!p)
			return NULL;
		close_waits = p;
		close_waits_cap = cap;
	}
	int small = CLOSE_SNDBUF;
	setsockopt(sock_of(fd), SOL_SOCKET, SO_SNDBUF, (const char *)&small, sizeof(small));
	close_waits[nclose_waits] = (struct close_wait){ .fd = fd, .blocked_ms = plat_monotonic_ms() };
	return &close_waits[nclose_waits++];
}

static void close_wait_forget(int fd)
{
	for (size_t i = 0; i < nclose_waits; i++) {
		if (close_waits[i].fd == fd) {
			close_waits[i] = close_waits[--nclose_waits];
			return;
		}
	}
}

/* Windows has no SIOCOUTQ. Windows 10 1703 and later report the bytes sent
 * and not yet acknowledged (SIO_TCP_INFO, TCP_INFO_v0.BytesInFlight); bytes
 * still queued behind them are not "in flight", so a socket that is not
 * writable (see close_wait_begin) counts as outstanding too. Where
 * SIO_TCP_INFO is missing (older Windows; wine 8 answers WSAEOPNOTSUPP),
 * nothing reports acknowledgements, and the answer is an estimate: 1 until
 * the socket has stayed writable for CLOSE_GRACE_MS (a few KiB at most were
 * left: time enough for a loopback peer that reads), then 0. */
bool plat_tcp_unacked_waits_for_reader(void)
{
	return true;
}

int plat_tcp_unacked(int fd)
{
	static bool no_tcp_info;
	struct close_wait *cw = close_wait_begin(fd);
	bool blocked = send_blocked(fd);
	if (!no_tcp_info) {
		TCP_INFO_v0 ti;
		DWORD version = 0, got = 0;
		if (WSAIoctl(sock_of(fd), SIO_TCP_INFO, &version, sizeof(version), &ti, sizeof(ti),
			     &got, NULL, NULL) == 0) {
			if (ti.BytesInFlight > INT_MAX)
				return INT_MAX;
			if (ti.BytesInFlight > 0)
				return (int)ti.BytesInFlight;
			return blocked ? 1 : 0;
		}
		int e = WSAGetLastError();
		if (e != WSAEOPNOTSUPP && e != WSAEINVAL)
			return -errno_of_wsa(e); /* e.g. not connected any more */
		no_tcp_info = true;
	}
	uint64_t now = plat_monotonic_ms();
	if (!cw) /* no memory for the grace period */
		return blocked ? 1 : 0;
	if (blocked)
		cw->blocked_ms = now;
	return now - cw->blocked_ms < CLOSE_GRACE_MS ? 1 : 0;
}

bool plat_is_loopback(const char *host)
{
	struct in_addr a4;
	struct in6_addr a6;
	static const uint8_t v6_loopback[16] = { [15] = 1 };
	if (strcmp(host, "localhost") == 0)
		return true;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, host, &a6) == 1)
		return memcmp(&a6, v6_loopback, sizeof(v6_loopback)) == 0;
	return false;
}

int plat_random(void *p, size_t n)
{
	/* The system's preferred RNG (bcrypt.dll, Windows Vista and later). */
	while (n) {
		ULONG chunk = n > ULONG_MAX ? ULONG_MAX : (ULONG)n;
		if (BCryptGenRandom(NULL, p, chunk, BCRYPT_USE_SYSTEM_PREFERRED_RNG) != 0)
			return -EIO;
		p = (char *)p + chunk;
		n -= chunk;
	}
	return 0;
}

int plat_write_new_file(const char *path, const void *p, size_t n)
{
	/* The Windows counterpart of mode 0600: a protected DACL (nothing
	 * inherited from the directory) for the file's owner, SYSTEM (which
	 * runs the service) and Administrators. */
	PSECURITY_DESCRIPTOR sd = NULL;
	if (!ConvertStringSecurityDescriptorToSecurityDescriptorA(
		    "D:P(A;;FA;;;OW)(A;;FA;;;SY)(A;;FA;;;BA)", SDDL_REVISION_1, &sd, NULL))
		return -EIO;
	SECURITY_ATTRIBUTES sa = { sizeof(sa), sd, FALSE };
	HANDLE f = CreateFileA(path, GENERIC_WRITE, 0, &sa, CREATE_NEW, FILE_ATTRIBUTE_NORMAL, NULL);
	DWORD e = GetLastError();
	LocalFree(sd);
	if (f == INVALID_HANDLE_VALUE)
		return e == ERROR_FILE_EXISTS || e == ERROR_ALREADY_EXISTS ? -EEXIST
		       : e == ERROR_ACCESS_DENIED			  ? -EACCES
		       : e == ERROR_PATH_NOT_FOUND			  ? -ENOENT
									  : -EIO;
	int rc = 0;
	while (n) {
		DWORD chunk = n > 1u << 20 ? 1u << 20 : (DWORD)n, done = 0;
		if (!WriteFile(f, p, chunk, &done, NULL) || done == 0) {
			rc = -EIO;
			break;
		}
		p = (const char *)p + done;
		n -= done;
	}
	if (!FlushFileBuffers(f) && rc == 0)
		rc = -EIO;
	CloseHandle(f);
	if (rc < 0)
		DeleteFileA(path);
	return rc;
}

/* ---- no splice ----------------------------------------------------------- */

int plat_pipe_open(int p[2])
{
	(void)p;
	return -ENOTSUP;
}

ssize_t plat_splice_in(int sock, int pipe_w, size_t n)
{
	(void)sock, (void)pipe_w, (void)n;
	return -ENOTSUP;
}

ssize_t plat_splice_out(int pipe_r, int sock, size_t n)
{
	(void)pipe_r, (void)sock, (void)n;
	return -ENOTSUP;
}

/* ---- files and polling ---------------------------------------------------- */

int plat_read_file(const char *path, size_t max, char **out, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return -errno;
	char *buf = malloc(max + 2);
	if (!buf) {
		fclose(f);
		return -ENOMEM;
	}
	/* One byte beyond max tells a file that is too long. */
	size_t n = fread(buf, 1, max + 1, f);
	int rc = ferror(f) ? -EIO : n > max ? -EFBIG : 0;
	fclose(f);
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

/* WSAPoll on a scratch array that grows with the largest set seen. WSAPoll
 * refuses an empty set, so an empty wait is a plain sleep. Only
 * POLLRDNORM/POLLWRNORM are asked for: WSAPoll rejects some other bits. */
int plat_poll(struct plat_pollfd *fds, size_t n, int timeout_ms)
{
	static WSAPOLLFD *scratch;
	static size_t cap;
	if (n == 0) {
		Sleep(timeout_ms < 0 ? INFINITE : (DWORD)timeout_ms);
		return 0;
	}
	if (n > cap) {
		WSAPOLLFD *p = realloc(scratch, n * sizeof(*p));
		if (!p)
			return -ENOMEM;
		scratch = p;
		cap = n;
	}
	/* A pair end whose EOF is due (its peer's FIN withheld, see struct
	 * pair) is readable without anything on the wire. */
	bool eof_due = false;
	AcquireSRWLockExclusive(&pair_lock);
	for (size_t i = 0; i < n; i++) {
		struct pair_end *e = (fds[i].events & PLAT_POLL_IN) ? pair_find(fds[i].fd) : NULL;
		fds[i].revents = e && pair_eof_due(e) ? PLAT_POLL_IN : 0;
		eof_due |= fds[i].revents != 0;
		scratch[i].fd = sock_of(fds[i].fd);
		scratch[i].events = (SHORT)(((fds[i].events & PLAT_POLL_IN) ? POLLRDNORM : 0) |
					    ((fds[i].events & PLAT_POLL_OUT) ? POLLWRNORM : 0));
		scratch[i].revents = 0;
	}
	ReleaseSRWLockExclusive(&pair_lock);
	int r = WSAPoll(scratch, (ULONG)n, eof_due ? 0 : timeout_ms);
	if (r < 0)
		return wsa_err();
	r = 0;
	for (size_t i = 0; i < n; i++) {
		SHORT re = scratch[i].revents;
		fds[i].revents |= ((re & (POLLRDNORM | POLLRDBAND)) ? PLAT_POLL_IN : 0) |
				  ((re & POLLWRNORM) ? PLAT_POLL_OUT : 0) |
				  ((re & (POLLERR | POLLHUP | POLLNVAL)) ? PLAT_POLL_ERR : 0);
		r += fds[i].revents != 0;
	}
	return r;
}

/* A Windows service runs as the account it was installed under (use a
 * low-privilege one); there is no seccomp. */
int plat_drop_user(const char *user)
{
	(void)user;
	return -ENOTSUP;
}

int plat_sandbox_enter(bool strict, int log_dirfd)
{
	(void)strict, (void)log_dirfd;
	return -ENOTSUP;
}

int plat_sandbox_probe(void)
{
	return -ENOTSUP;
}

void plat_std_fds(void)
{
	/* Windows never hands a socket a C runtime descriptor number. */
}

bool plat_fd_writable_now(int fd)
{
	(void)fd; /* a console or a file: writes do not wait on a reader */
	return true;
}
