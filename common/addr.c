#include "addr.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAIL(...) do { snprintf(err, errlen, __VA_ARGS__); return -EINVAL; } while (0)

int addr_parse_hostport(const char *s, char *host, size_t hostlen, uint16_t *port,
			char *err, size_t errlen)
{
	const char *colon;
	size_t hlen;

	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close)
			FAIL("'%s': missing ']' after IPv6 address", s);
		if (close[1] != ':')
			FAIL("'%s': expected ':PORT' after ']'", s);
		hlen = (size_t)(close - s - 1);
		s++;
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			FAIL("'%s': expected HOST:PORT", s);
		if (memchr(s, ':', (size_t)(colon - s)))
			FAIL("'%s': IPv6 addresses must be written in brackets, e.g. [::1]:27015", s);
		hlen = (size_t)(colon - s);
	}
	if (hlen == 0)
		FAIL("'%s': empty host", s);
	/* No host name or address has them, and addr_format could not write
	 * such a host back in a form that parses again. */
	if (memchr(s, '[', hlen) || memchr(s, ']', hlen))
		FAIL("'%.*s': '[' or ']' inside a host name", (int)hlen, s);
	if (hlen >= hostlen)
		FAIL("host name too long (%zu bytes, at most %zu)", hlen, hostlen - 1);

	const char *p = colon + 1;
	if (*p == '\0')
		FAIL("'%s': empty port", s);
	unsigned long v = 0;
	for (; *p; p++) {
		if (*p < '0' || *p > '9')
			FAIL("'%s': port must be a number", colon + 1);
		v = v * 10 + (unsigned long)(*p - '0');
		if (v > 65535)
			FAIL("port %s out of range (1-65535)", colon + 1);
	}
	if (v == 0)
		FAIL("port 0 is not allowed");
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	*port = (uint16_t)v;
	return 0;
}

static const struct {
	const char *prefix;
	enum addr_kind kind;
} schemes[] = {
	{ "unix:", ADDR_UNIX },
	{ "tcp:", ADDR_TCP },
	{ "tunnel:", ADDR_TUNNEL },
};

static void allowed_list(unsigned allowed, char *buf, size_t len)
{
	buf[0] = '\0';
	for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
		if (!(allowed & schemes[i].kind))
			continue;
		size_t used = strlen(buf);
		snprintf(buf + used, len - used, "%s%s...", used ? ", " : "", schemes[i].prefix);
	}
}

int addr_parse(const char *spec, unsigned allowed, struct addr *out, char *err, size_t errlen)
{
	char kinds[64];
	allowed_list(allowed, kinds, sizeof(kinds));

	memset(out, 0, sizeof(*out));
	for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
		size_t plen = strlen(schemes[i].prefix);
		if (strncmp(spec, schemes[i].prefix, plen) != 0)
			continue;
		if (!(allowed & schemes[i].kind))
			FAIL("'%s': %s addresses are not supported here (use %s)", spec,
			     schemes[i].prefix, kinds);
		out->kind = schemes[i].kind;
		const char *rest = spec + plen;
		if (out->kind == ADDR_UNIX) {
			size_t n = strlen(rest);
			if (n == 0)
				FAIL("'%s': empty socket path", spec);
			if (rest[0] != '/')
				FAIL("'%s': the socket path must be absolute", spec);
			if (n >= sizeof(out->path))
				FAIL("'%s': socket path too long (%zu bytes, at most %zu)", spec, n,
				     sizeof(out->path) - 1);
			memcpy(out->path, rest, n + 1);
			return 0;
		}
		return addr_parse_hostport(rest, out->host, sizeof(out->host), &out->port, err,
					   errlen);
	}
	FAIL("'%s': unknown address, expected %s", spec, kinds);
}

int addr_parse_usbmuxd_env(const char *value, struct addr *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	if (strncmp(value, "UNIX:", 5) == 0) {
		char spec[ADDR_PATH_MAX + 8];
		if (strlen(value + 5) >= ADDR_PATH_MAX)
			FAIL("USBMUXD_SOCKET_ADDRESS: socket path too long");
		snprintf(spec, sizeof(spec), "unix:%s", value + 5);
		return addr_parse(spec, ADDR_UNIX, out, err, errlen);
	}
	out->kind = ADDR_TCP;
	int rc = addr_parse_hostport(value, out->host, sizeof(out->host), &out->port, err, errlen);
	return rc;
}

void addr_format(const struct addr *a, char *buf, size_t len)
{
	switch (a->kind) {
	case ADDR_UNIX:
		snprintf(buf, len, "unix:%s", a->path);
		return;
	case ADDR_TCP:
	case ADDR_TUNNEL: {
		const char *scheme = a->kind == ADDR_TCP ? "tcp" : "tunnel";
		if (strchr(a->host, ':'))
			snprintf(buf, len, "%s:[%s]:%u", scheme, a->host, a->port);
		else
			snprintf(buf, len, "%s:%s:%u", scheme, a->host, a->port);
		return;
	}
	}
	snprintf(buf, len, "?");
}
