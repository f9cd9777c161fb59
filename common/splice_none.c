/* Systems without splice(2): callers fall back to copying (see plat.h). */
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
