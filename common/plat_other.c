/* Portable fallbacks for the Linux-only parts of plat.h (macOS, others). */
#include "plat.h"
#include "plat_internal.h"

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

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

bool plat_tcp_unacked_waits_for_reader(void)
{
	return false;
}

int plat_tcp_unacked(int fd)
{
	(void)fd;
	return -ENOTSUP;
}

int plat_socketpair(int fds[2])
{
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) < 0)
		return -errno;
	int rc = plat_set_nb_cloexec(fds[0]);
	if (rc == 0)
		rc = plat_set_nb_cloexec(fds[1]);
	if (rc < 0) {
		close(fds[0]);
		close(fds[1]);
	}
	return rc;
}

int plat_socket_nb(int domain, int type, int protocol)
{
	int fd = socket(domain, type, protocol);
	if (fd < 0)
		return -errno;
	int rc = plat_set_nb_cloexec(fd);
	if (rc < 0) {
		close(fd);
		return rc;
	}
	return fd;
}

int plat_accept_nb(int listen_fd)
{
	int fd = accept(listen_fd, NULL, NULL);
	if (fd < 0)
		return -errno;
	int rc = plat_set_nb_cloexec(fd);
	if (rc < 0) {
		close(fd);
		return rc;
	}
	return fd;
}

int plat_peer_cred(int fd, pid_t *pid, uid_t *uid)
{
	(void)fd;
	*pid = 0;
	*uid = (uid_t)-1;
	return -ENOTSUP;
}

/* No seccomp here. (macOS has its own sandbox, not used yet.) */
int plat_sandbox_enter(bool strict, int log_dirfd)
{
	(void)strict, (void)log_dirfd;
	return -ENOTSUP;
}

int plat_sandbox_probe(void)
{
	return -ENOTSUP;
}
