#include "addr.h"
#include "unit.h"

#include <errno.h>
#include <string.h>

static const unsigned ALL = ADDR_UNIX | ADDR_TCP | ADDR_TUNNEL;

static void parses_each_kind(void)
{
	struct addr a;
	char err[256];
	CU_ASSERT_EQUAL(addr_parse("unix:/run/host/usbmuxd", ALL, &a, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL(a.kind, ADDR_UNIX);
	CU_ASSERT_STRING_EQUAL(a.path, "/run/host/usbmuxd");

	CU_ASSERT_EQUAL(addr_parse("tcp:127.0.0.1:27015", ALL, &a, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL(a.kind, ADDR_TCP);
	CU_ASSERT_STRING_EQUAL(a.host, "127.0.0.1");
	CU_ASSERT_EQUAL(a.port, 27015);

	CU_ASSERT_EQUAL(addr_parse("tunnel:host.docker.internal:27016", ALL, &a, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL(a.kind, ADDR_TUNNEL);
	CU_ASSERT_STRING_EQUAL(a.host, "host.docker.internal");
	CU_ASSERT_EQUAL(a.port, 27016);

	CU_ASSERT_EQUAL(addr_parse("tcp:[::1]:65535", ALL, &a, err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(a.host, "::1");
	CU_ASSERT_EQUAL(a.port, 65535);
}

static void expect_bad(const char *spec, unsigned allowed, const char *needle)
{
	struct addr a;
	char err[256] = "";
	CU_ASSERT_EQUAL(addr_parse(spec, allowed, &a, err, sizeof(err)), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, needle));
}

static void rejects_with_reasons(void)
{
	expect_bad("", ALL, "unknown address");
	expect_bad("/var/run/usbmuxd", ALL, "unknown address");
	expect_bad("unix:", ALL, "empty socket path");
	expect_bad("unix:relative/path", ALL, "absolute");
	expect_bad("tcp:localhost", ALL, "HOST:PORT");
	expect_bad("tcp::27015", ALL, "empty host");
	expect_bad("tcp:host:", ALL, "empty port");
	expect_bad("tcp:host:0", ALL, "port 0");
	expect_bad("tcp:host:65536", ALL, "out of range");
	expect_bad("tcp:host:99999999999999999999", ALL, "out of range");
	expect_bad("tcp:host:12a", ALL, "number");
	expect_bad("tcp:host:-1", ALL, "number");
	expect_bad("tcp:::1:80", ALL, "brackets");
	expect_bad("tcp:[::1:80", ALL, "missing ']'");
	expect_bad("tcp:[::1]80", ALL, "':PORT'");
	/* fuzz_addr: "[[1]" parsed as host "[1", which formats as
	 * "tcp:[1:65535", which does not parse (tests/fuzz/regress/addr/) */
	expect_bad("tcp:[[1]:65535", ALL, "'[' or ']' inside a host");
	expect_bad("tcp:a]:1", ALL, "'[' or ']' inside a host");
	expect_bad("tunnel:[a[b]:1", ALL, "'[' or ']' inside a host");
	expect_bad("tcp:127.0.0.1:27015", ADDR_UNIX, "not supported here");
	expect_bad("tunnel:h:1", ADDR_UNIX | ADDR_TCP, "use unix:..., tcp:...");
}

static void path_length_limit(void)
{
	char spec[200] = "unix:/";
	memset(spec + 6, 'a', 102);
	spec[108] = '\0'; /* path of 103 bytes: fits in sun_path */
	struct addr a;
	char err[256];
	CU_ASSERT_EQUAL(addr_parse(spec, ALL, &a, err, sizeof(err)), 0);
	memset(spec + 6, 'a', 150);
	spec[156] = '\0';
	CU_ASSERT_EQUAL(addr_parse(spec, ALL, &a, err, sizeof(err)), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "too long"));
}

static void format_round_trip(void)
{
	const char *specs[] = { "unix:/var/run/usbmuxd", "tcp:127.0.0.1:27015", "tunnel:[::1]:27016",
				"tunnel:host.docker.internal:27016" };
	for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
		struct addr a;
		char err[256], out[300];
		CU_ASSERT_EQUAL_FATAL(addr_parse(specs[i], ALL, &a, err, sizeof(err)), 0);
		addr_format(&a, out, sizeof(out));
		CU_ASSERT_STRING_EQUAL(out, specs[i]);
	}
}

static void hostport_alone(void)
{
	char host[64], err[128];
	uint16_t port;
	CU_ASSERT_EQUAL(addr_parse_hostport("127.0.0.1:27016", host, sizeof(host), &port, err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(host, "127.0.0.1");
	CU_ASSERT_EQUAL(port, 27016);
	/* host buffer too small is an error, never a truncation */
	char tiny[4];
	CU_ASSERT_EQUAL(addr_parse_hostport("localhost:1", tiny, sizeof(tiny), &port, err, sizeof(err)), -EINVAL);
}

int unit_addr(void)
{
	static const struct unit_test t[] = {
		{ "parses unix, tcp, tunnel, ipv6", parses_each_kind },
		{ "rejects bad specs with a reason", rejects_with_reasons },
		{ "unix path length limit", path_length_limit },
		{ "format round trip", format_round_trip },
		{ "host:port alone", hostport_alone },
		{ NULL, NULL },
	};
	return unit_add_suite("addr", t);
}
