#include "diag.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* Copies one space-separated mountinfo field, undoing octal escapes.
 * Returns the position after the field, or NULL on malformed input. */
static const char *field_unescape(const char *p, char *out, size_t outlen)
{
	size_t n = 0;
	while (*p && *p != ' ' && *p != '\n') {
		char c = *p++;
		if (c == '\\' && p[0] >= '0' && p[0] <= '3' && p[1] >= '0' && p[1] <= '7' &&
		    p[2] >= '0' && p[2] <= '7') {
			c = (char)((p[0] - '0') * 64 + (p[1] - '0') * 8 + (p[2] - '0'));
			p += 3;
		}
		if (n + 1 >= outlen)
			return NULL;
		out[n++] = c;
	}
	out[n] = '\0';
	return p;
}

bool diag_is_mount_point(const char *mountinfo, const char *path)
{
	/* Line: ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS ... */
	for (const char *line = mountinfo; line && *line;) {
		const char *p = line;
		for (int skip = 0; skip < 4 && p; skip++) {
			p = strchr(p, ' ');
			if (p)
				p++;
		}
		const char *eol = strchr(line, '\n');
		if (p && (!eol || p < eol)) {
			char mp[4096];
			if (field_unescape(p, mp, sizeof(mp)) && strcmp(mp, path) == 0)
				return true;
		}
		line = eol ? eol + 1 : NULL;
	}
	return false;
}

void diag_unix_connect(char *out, size_t len, const char *path, int err, bool file_mounted)
{
	switch (-err) {
	case ENOENT:
		snprintf(out, len,
			 "no socket at %s: the host's usbmuxd is not running, or the host directory "
			 "that holds its socket is not mounted there (docker run -v /var/run:DIR, "
			 "then --upstream unix:DIR/usbmuxd)", path);
		return;
	case ECONNREFUSED:
		if (file_mounted)
			snprintf(out, len,
				 "connection refused by %s, which is a single-file bind mount: the "
				 "host's usbmuxd was probably restarted after this container started "
				 "and made a new socket file that this mount cannot see. Mount the "
				 "directory, not the file (-v /var/run:/run/host with --upstream "
				 "unix:/run/host/usbmuxd); restarting the container also helps, "
				 "until the next usbmuxd restart", path);
		else
			snprintf(out, len,
				 "connection refused by %s: the socket file exists but nothing "
				 "listens on it; the host's usbmuxd is stopped or restarting", path);
		return;
	case EACCES:
	case EPERM:
		snprintf(out, len,
			 "permission denied connecting to %s: the socket or a directory above it "
			 "is not accessible to this user (check modes, or run with the host "
			 "socket's group)", path);
		return;
	case EAGAIN:
		snprintf(out, len,
			 "%s did not accept the connection in time: its listen queue stayed full "
			 "(the host's usbmuxd is overloaded or hung)", path);
		return;
	case ENOTSOCK:
		snprintf(out, len, "%s is not a socket", path);
		return;
	default:
		snprintf(out, len, "cannot connect to %s: %s", path, strerror(-err));
		return;
	}
}
