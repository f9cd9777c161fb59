/* Turns upstream failures into sentences a user can act on. Pure code: the
 * caller supplies /proc/self/mountinfo, so tests can feed any mount table. */
#ifndef MUXSHIM_DIAG_H
#define MUXSHIM_DIAG_H

#include <stdbool.h>
#include <stddef.h>

/* Is `path` (already canonical) the mount point of some entry of a
 * /proc/PID/mountinfo text? Handles the kernel's octal escapes (\040). */
bool diag_is_mount_point(const char *mountinfo, const char *path);

/* Explains a failed connect (negative errno `err`) to the UNIX socket
 * `path`. `file_mounted` says whether path itself is a bind mount. */
void diag_unix_connect(char *out, size_t len, const char *path, int err, bool file_mounted);

#endif
