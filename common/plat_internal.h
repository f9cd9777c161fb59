/* Between the POSIX platform files only: what differs from one POSIX system
 * to another (Linux can create sockets non-blocking in one call). */
#ifndef MUXSHIM_PLAT_INTERNAL_H
#define MUXSHIM_PLAT_INTERNAL_H

int plat_set_nb_cloexec(int fd);
/* A non-blocking, close-on-exec socket / accepted connection, or -errno. */
int plat_socket_nb(int domain, int type, int protocol);
int plat_accept_nb(int listen_fd);

/* plat_log_reopen's open flags, which the sandbox checks for. */
#define PLAT_LOG_OPEN_FLAGS (O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC)

#endif
