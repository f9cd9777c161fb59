/* Linux-only parts of plat.h: splice(2), TCP send-queue inspection. */
#include "plat.h"
#include "plat_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

int plat_socketpair(int fds[2])
{
	return socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0 ? 0 : -errno;
}

int plat_pipe_open(int p[2])
{
	return pipe2(p, O_NONBLOCK | O_CLOEXEC) == 0 ? 0 : -errno;
}

static ssize_t do_splice(int in, int out, size_t n)
{
	for (;;) {
		ssize_t r = splice(in, NULL, out, NULL, n, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
		if (r >= 0)
			return r;
		if (errno == EINTR)
			continue;
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	}
}

ssize_t plat_splice_in(int sock, int pipe_w, size_t n)
{
	return do_splice(sock, pipe_w, n);
}

ssize_t plat_splice_out(int pipe_r, int sock, size_t n)
{
	return do_splice(pipe_r, sock, n);
}

bool plat_tcp_unacked_waits_for_reader(void)
{
	return false;
}

int plat_tcp_unacked(int fd)
{
	int n;
	return ioctl(fd, SIOCOUTQ, &n) == 0 ? n : -errno;
}

/* One system call where other systems need three (socket, fcntl, fcntl). */
int plat_socket_nb(int domain, int type, int protocol)
{
	int fd = socket(domain, type | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);
	return fd >= 0 ? fd : -errno;
}

int plat_accept_nb(int listen_fd)
{
	int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	return fd >= 0 ? fd : -errno;
}

int plat_peer_cred(int fd, pid_t *pid, uid_t *uid)
{
	struct ucred cr;
	socklen_t len = sizeof(cr);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0)
		return -errno;
	*pid = cr.pid;
	*uid = cr.uid;
	return 0;
}
