/* The one narrow header behind which the operating system lives. Everything
 * the daemons need from the OS beyond the event loop is here; each OS gets
 * its own implementation file (plat_posix.c today). All functions that act
 * return 0 (or a non-negative value) on success and a negative errno on
 * failure; callers never read errno. */
#ifndef MUXSHIM_PLAT_H
#define MUXSHIM_PLAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

uint64_t plat_monotonic_ms(void);

/* Byte I/O on non-blocking sockets: bytes moved, 0 on EOF (read), or a
 * negative errno (-EAGAIN when the call would block). Never raises SIGPIPE. */
ssize_t plat_read(int fd, void *p, size_t n);
ssize_t plat_write(int fd, const void *p, size_t n);
int plat_shutdown_write(int fd);
void plat_close(int fd);

/* UNIX stream sockets. */
int plat_unix_connect(const char *path, int *fd_out);      /* non-blocking fd */
/* A stale socket file (nothing listening) is replaced; a live one or a file
 * that is not a socket is refused with -EADDRINUSE / -EEXIST. *replaced is
 * set when a stale file was removed. */
struct plat_file_id {
	uint64_t dev, ino;
};
int plat_unix_listen(const char *path, unsigned mode, int backlog, int *fd_out,
		     bool *replaced, struct plat_file_id *id);
/* Removes path only if it is still the socket file we created. */
void plat_unix_unlink_if_ours(const char *path, const struct plat_file_id *id);
/* Accepts one connection as a non-blocking fd. */
int plat_accept(int listen_fd, int *fd_out);

/* Signals: SIGTERM/SIGINT become readable bytes on the returned fd, so the
 * loop notices them without races; SIGPIPE is ignored. */
int plat_signals_init(int *fd_out);
/* Returns the last signal number noted, 0 if none (drains the fd). */
int plat_signals_take(int fd);

/* Moving bytes between sockets through a kernel pipe without copying them
 * to user space (Linux splice). Where the OS has no such call, plat_pipe_open
 * returns -ENOTSUP and callers keep copying. */
int plat_pipe_open(int p[2]);
ssize_t plat_splice_in(int sock, int pipe_w, size_t n);  /* 0 on EOF */
ssize_t plat_splice_out(int pipe_r, int sock, size_t n);

/* Reads a small text file (e.g. /proc/self/mountinfo) into a malloc'd,
 * NUL-terminated buffer of at most max bytes. */
int plat_read_file(const char *path, size_t max, char **out);

#endif
