/* Portable fallbacks for the Linux-only parts of plat.h (macOS, others). */
#include "plat.h"

#include <errno.h>

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

int plat_tcp_unacked(int fd)
{
	(void)fd;
	return -ENOTSUP;
}
