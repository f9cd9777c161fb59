/* libFuzzer target: the address parsers (addr.h), which read the command
 * line and USBMUXD_SOCKET_ADDRESS. Input: one control byte, then the text.
 * Control: bits 0-1 pick the parser (addr_parse, addr_parse_hostport,
 * addr_parse_usbmuxd_env), bits 2-4 the allowed kinds, bits 5-7 the size
 * of the caller's error buffer.
 *
 * Properties: an accepted address is in range, formats within ADDR_SPEC_MAX
 * and parses back to itself; a refused one is -EINVAL with a sentence that
 * fits the caller's buffer. */
#include "addr.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
	if (!ok)
		abort();
}

static void round_trip(const struct addr *a)
{
	char spec[ADDR_SPEC_MAX + 1], err[256];
	memset(spec, 'x', sizeof(spec));
	addr_format(a, spec, ADDR_SPEC_MAX);
	check(strlen(spec) < ADDR_SPEC_MAX - 1); /* nothing was cut */
	struct addr b;
	check(addr_parse(spec, ADDR_UNIX | ADDR_TCP | ADDR_TUNNEL, &b, err, sizeof(err)) == 0);
	check(b.kind == a->kind && b.port == a->port);
	check(strcmp(b.path, a->path) == 0 && strcmp(b.host, a->host) == 0);
}

static void check_valid(const struct addr *a)
{
	check(memchr(a->path, '\0', sizeof(a->path)) && memchr(a->host, '\0', sizeof(a->host)));
	if (a->kind == ADDR_UNIX) {
		check(a->path[0] == '/' && a->host[0] == '\0' && a->port == 0);
	} else {
		check(a->kind == ADDR_TCP || a->kind == ADDR_TUNNEL);
		check(a->host[0] != '\0' && a->port != 0 && a->path[0] == '\0');
	}
	round_trip(a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t ctl = data[0];
	/* The text is a C string: a copy of exactly its length plus NUL, so
	 * that ASan catches any read past the end. */
	char *text = malloc(size);
	check(text != NULL);
	memcpy(text, data + 1, size - 1);
	text[size - 1] = '\0';
	unsigned allowed = (ctl >> 2) & 7;
	size_t errlen = 1 + (size_t)((ctl >> 5) & 7) * 40;
	char *err = malloc(errlen);
	check(err != NULL);
	err[0] = '\0';
	struct addr a;
	int rc;
	switch (ctl & 3) {
	case 0:
		rc = addr_parse(text, allowed, &a, err, errlen);
		if (rc == 0) {
			check(a.kind & allowed);
			check_valid(&a);
		}
		break;
	case 1: {
		char host[ADDR_HOST_MAX];
		uint16_t port = 0;
		rc = addr_parse_hostport(text, host, sizeof(host), &port, err, errlen);
		if (rc == 0) {
			memset(&a, 0, sizeof(a));
			a.kind = ADDR_TCP;
			memcpy(a.host, host, sizeof(host));
			a.port = port;
			check_valid(&a);
		}
		break;
	}
	default:
		rc = addr_parse_usbmuxd_env(text, &a, err, errlen);
		if (rc == 0)
			check_valid(&a);
		break;
	}
	if (rc != 0) {
		check(rc == -EINVAL);
		check(memchr(err, '\0', errlen) != NULL);
		check(errlen == 1 || err[0] != '\0');
	}
	free(err);
	free(text);
	return 0;
}
