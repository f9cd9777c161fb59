/* Endpoint specifications as users write them on the command line:
 *   unix:/path/to/socket   tcp:HOST:PORT   tunnel:HOST:PORT
 * HOST may be a name, an IPv4 address or a bracketed IPv6 address. Pure code. */
#ifndef MUXSHIM_ADDR_H
#define MUXSHIM_ADDR_H

#include <stddef.h>
#include <stdint.h>

#define ADDR_PATH_MAX 108 /* sizeof(sun_path) on Linux */
#define ADDR_HOST_MAX 256
/* Room for any spec addr_format writes: "tunnel:[" HOST "]:65535" and NUL. */
#define ADDR_SPEC_MAX (ADDR_HOST_MAX + 16)

enum addr_kind { ADDR_UNIX = 1, ADDR_TCP = 2, ADDR_TUNNEL = 4 };

struct addr {
	enum addr_kind kind;
	char path[ADDR_PATH_MAX]; /* ADDR_UNIX */
	char host[ADDR_HOST_MAX]; /* ADDR_TCP, ADDR_TUNNEL, without brackets */
	uint16_t port;
};

/* Parses spec into *out if its kind is in the `allowed` mask. On failure
 * returns -EINVAL and writes a sentence for the user into err. */
int addr_parse(const char *spec, unsigned allowed, struct addr *out, char *err, size_t errlen);

/* Parses "HOST:PORT" (no scheme). Same conventions. */
int addr_parse_hostport(const char *s, char *host, size_t hostlen, uint16_t *port,
			char *err, size_t errlen);

/* Reads USBMUXD_SOCKET_ADDRESS the way libusbmuxd does: "UNIX:/path",
 * "host:port" or "[v6]:port". -EINVAL (with err) when it is unusable. */
int addr_parse_usbmuxd_env(const char *value, struct addr *out, char *err, size_t errlen);

/* Writes the canonical spec back ("tcp:[::1]:27015"). */
void addr_format(const struct addr *a, char *buf, size_t len);

#endif
