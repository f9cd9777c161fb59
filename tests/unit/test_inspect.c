#include "inspect.h"
#include "unit.h"

#include <stdio.h>
#include <string.h>

static struct insp_event evs[16];
static int nev;

static void record(void *ctx, const struct insp_event *ev)
{
	(void)ctx;
	if (nev < 16)
		evs[nev++] = *ev;
}

static size_t msg(uint8_t *out, uint32_t version, uint32_t message, uint32_t tag,
		  const void *body, size_t blen)
{
	uint32_t len = (uint32_t)(16 + blen);
	uint32_t f[4] = { len, version, message, tag };
	for (int i = 0; i < 4; i++)
		for (int b = 0; b < 4; b++)
			out[i * 4 + b] = (uint8_t)(f[i] >> (8 * b));
	if (blen)
		memcpy(out + 16, body, blen);
	return len;
}

static size_t plist_req(uint8_t *out, uint32_t tag, const char *type, int port)
{
	char body[512];
	int n = snprintf(body, sizeof(body),
			 "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><dict>"
			 "<key>MessageType</key><string>%s</string>%s</dict></plist>", type, "");
	if (port >= 0) {
		int swapped = ((port & 0xff) << 8) | (port >> 8 & 0xff);
		n = snprintf(body, sizeof(body),
			     "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><dict>"
			     "<key>MessageType</key><string>%s</string><key>DeviceID</key>"
			     "<integer>1</integer><key>PortNumber</key><integer>%d</integer>"
			     "</dict></plist>", type, swapped);
	}
	return msg(out, 1, 8, tag, body, (size_t)n);
}

static size_t plist_result(uint8_t *out, uint32_t tag, int number)
{
	char body[256];
	int n = snprintf(body, sizeof(body),
			 "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><dict>"
			 "<key>MessageType</key><string>Result</string><key>Number</key>"
			 "<integer>%d</integer></dict></plist>", number);
	return msg(out, 1, 8, tag, body, (size_t)n);
}

static void requests_in_any_chunking(void)
{
	uint8_t buf[2048];
	size_t n = plist_req(buf, 1, "ListDevices", -1);
	n += plist_req(buf + n, 2, "ReadBUID", -1); /* pipelined */
	for (size_t chunk = 1; chunk <= n; chunk = chunk * 3 + 1) {
		struct inspector in;
		nev = 0;
		insp_init(&in, record, NULL);
		for (size_t off = 0; off < n; off += chunk)
			insp_client_bytes(&in, buf + off, off + chunk > n ? n - off : chunk);
		CU_ASSERT_EQUAL(nev, 2);
		CU_ASSERT_EQUAL(evs[0].type, INSP_LIST_DEVICES);
		CU_ASSERT_EQUAL(evs[0].version, 1);
		CU_ASSERT_EQUAL(evs[1].type, INSP_READ_BUID);
		CU_ASSERT_FALSE(insp_done(&in));
		insp_free(&in);
	}
}

static void connect_success_ends_inspection(void)
{
	uint8_t req[1024], rep[1024];
	struct inspector in;
	nev = 0;
	insp_init(&in, record, NULL);
	size_t rn = plist_req(req, 7, "Connect", 62078);
	insp_client_bytes(&in, req, rn);
	CU_ASSERT_EQUAL(nev, 1);
	CU_ASSERT_EQUAL(evs[0].type, INSP_CONNECT);
	CU_ASSERT_EQUAL(evs[0].port, 62078);
	size_t pn = plist_result(rep, 7, 0);
	insp_upstream_bytes(&in, rep, pn);
	CU_ASSERT_EQUAL(nev, 2);
	CU_ASSERT_EQUAL(evs[1].kind, INSP_EV_CONNECT_RESULT);
	CU_ASSERT_EQUAL(evs[1].result, 0);
	CU_ASSERT_TRUE(insp_done(&in));
	/* raw device bytes afterwards are not looked at */
	insp_client_bytes(&in, (const uint8_t *)"\xff\xff\xff\xff garbage", 12);
	CU_ASSERT_EQUAL(nev, 2);
	insp_free(&in);
}

static void connect_failure_keeps_command_mode(void)
{
	uint8_t req[1024], rep[1024];
	struct inspector in;
	nev = 0;
	insp_init(&in, record, NULL);
	/* a ListDevices reply with another tag comes first and is skipped */
	insp_client_bytes(&in, req, plist_req(req, 1, "ListDevices", -1));
	insp_client_bytes(&in, req, plist_req(req, 2, "Connect", 8100));
	insp_upstream_bytes(&in, rep, plist_result(rep, 1, 0));
	CU_ASSERT_EQUAL(nev, 2);
	insp_upstream_bytes(&in, rep, plist_result(rep, 2, 3));
	CU_ASSERT_EQUAL(nev, 3);
	CU_ASSERT_EQUAL(evs[2].result, 3);
	CU_ASSERT_FALSE(insp_done(&in));
	insp_client_bytes(&in, req, plist_req(req, 3, "Connect", 9100));
	CU_ASSERT_EQUAL(nev, 4);
	CU_ASSERT_EQUAL(evs[3].port, 9100);
	insp_free(&in);
}

static void binary_version_zero(void)
{
	uint8_t req[64], rep[64];
	struct inspector in;
	nev = 0;
	insp_init(&in, record, NULL);
	uint8_t payload[8] = { 1, 0, 0, 0, 0x1f, 0x90, 0, 0 }; /* device 1, port 8080 */
	insp_client_bytes(&in, req, msg(req, 0, 2, 5, payload, sizeof(payload)));
	CU_ASSERT_EQUAL(nev, 1);
	CU_ASSERT_EQUAL(evs[0].type, INSP_CONNECT);
	CU_ASSERT_EQUAL(evs[0].version, 0);
	CU_ASSERT_EQUAL(evs[0].port, 8080);
	uint8_t res[4] = { 0, 0, 0, 0 };
	insp_upstream_bytes(&in, rep, msg(rep, 0, 1, 5, res, 4));
	CU_ASSERT_EQUAL(evs[1].result, 0);
	CU_ASSERT_TRUE(insp_done(&in));
	insp_free(&in);

	nev = 0;
	insp_init(&in, record, NULL);
	insp_client_bytes(&in, req, msg(req, 0, 3, 1, NULL, 0));
	CU_ASSERT_EQUAL(evs[0].type, INSP_LISTEN);
	CU_ASSERT_TRUE(insp_done(&in)); /* a Listen session is an event stream */
	insp_free(&in);
}

static void bad_input_is_an_event_not_a_crash(void)
{
	uint8_t buf[64];
	struct inspector in;
	nev = 0;
	insp_init(&in, record, NULL);
	insp_client_bytes(&in, (const uint8_t *)"GET / HTTP/1.1\r\n\r\n", 18);
	CU_ASSERT_EQUAL(nev, 1);
	CU_ASSERT_EQUAL(evs[0].kind, INSP_EV_PARSE_ERROR);
	CU_ASSERT_TRUE(insp_done(&in));
	insp_free(&in);

	nev = 0;
	insp_init(&in, record, NULL);
	insp_client_bytes(&in, buf, msg(buf, 1, 8, 1, "not a plist", 11));
	CU_ASSERT_EQUAL(evs[0].kind, INSP_EV_PARSE_ERROR);
	insp_free(&in);

	nev = 0;
	insp_init(&in, record, NULL);
	uint8_t huge[16] = { 0xff, 0xff, 0x01, 0x00, 1, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0 };
	insp_client_bytes(&in, huge, 16); /* 0x1ffff > 64 KiB: refused before any allocation */
	CU_ASSERT_EQUAL(evs[0].kind, INSP_EV_PARSE_ERROR);
	insp_free(&in);
}

static void unknown_and_plain_types(void)
{
	uint8_t buf[1024];
	enum insp_type t;
	uint16_t port;
	size_t n = plist_req(buf, 1, "SomethingNew", -1);
	CU_ASSERT_EQUAL(insp_parse_plist_request(buf + 16, n - 16, &t, &port), 0);
	CU_ASSERT_EQUAL(t, INSP_OTHER);
	n = plist_req(buf, 1, "SavePairRecord", -1);
	CU_ASSERT_EQUAL(insp_parse_plist_request(buf + 16, n - 16, &t, &port), 0);
	CU_ASSERT_EQUAL(t, INSP_SAVE_PAIR_RECORD);
	CU_ASSERT_STRING_EQUAL(insp_type_name(INSP_LIST_DEVICES), "ListDevices");
	CU_ASSERT_STRING_EQUAL(insp_type_name(INSP_OTHER), "Other");
	CU_ASSERT_EQUAL(insp_parse_plist_request(buf, 0, &t, &port), -1);
}

/* Found by fuzz_inspect: a MessageType string with an embedded NUL made
 * libplist's plist_get_string_val assert, killing the daemon. */
static void nul_in_message_type(void)
{
	static const char body[] =
		"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><dict>"
		"<key>MessageType</key><string>List&#0;Devices</string></dict></plist>";
	/* the XML parser may or may not accept the entity; a binary plist can
	 * carry a NUL for sure: bplist00, dict {MessageType: "A\0B"} */
	static const uint8_t bplist[] = {
		'b', 'p', 'l', 'i', 's', 't', '0', '0', 0xd1, 0x01, 0x02, 0x5b, 'M', 'e', 's', 's',
		'a', 'g', 'e', 'T', 'y', 'p', 'e', 0x53, 'A', 0x00, 'B', 0x08, 0x0b, 0x17,
		0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0,
		0, 0, 0, 0, 0, 0, 0, 0x1b };
	enum insp_type t = INSP_NTYPES;
	uint16_t port;
	insp_parse_plist_request((const uint8_t *)body, sizeof(body) - 1, &t, &port);
	CU_ASSERT_EQUAL(insp_parse_plist_request(bplist, sizeof(bplist), &t, &port), 0);
	CU_ASSERT_EQUAL(t, INSP_OTHER);
	FILE *f = fopen("tests/fuzz/regress/inspect/nul-in-messagetype", "rb");
	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	uint8_t buf[4096];
	size_t n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	struct inspector in;
	nev = 0;
	insp_init(&in, record, NULL);
	insp_client_bytes(&in, buf + 1, n - 1); /* the fuzzer's first byte is its control byte */
	CU_ASSERT_TRUE(nev >= 1); /* processed, and still alive: the old code aborted here */
	insp_free(&in);
}

/* Found by fuzz_inspect: a reply whose header came before the Connect
 * request, carrying the Connect's tag, was read from a body never kept. */
static void reply_begun_before_connect(void)
{
	uint8_t req[1024], rep[64];
	struct inspector in;
	nev = 0;
	insp_init(&in, record, NULL);
	uint8_t res[4] = { 0, 0, 0, 0 };
	size_t rn = msg(rep, 0, 1, 9, res, 4);
	insp_upstream_bytes(&in, rep, 16); /* header only, nothing awaited yet */
	insp_client_bytes(&in, req, plist_req(req, 9, "Connect", 22));
	insp_upstream_bytes(&in, rep + 16, rn - 16);
	CU_ASSERT_EQUAL(nev, 1); /* the request; no result taken from that reply */
	CU_ASSERT_FALSE(insp_done(&in));
	insp_free(&in);
}

int unit_inspect(void)
{
	static const struct unit_test t[] = {
		{ "requests in any chunking, pipelined", requests_in_any_chunking },
		{ "Connect success ends inspection", connect_success_ends_inspection },
		{ "Connect failure keeps command mode", connect_failure_keeps_command_mode },
		{ "binary version 0", binary_version_zero },
		{ "bad input is an event, not a crash", bad_input_is_an_event_not_a_crash },
		{ "unknown and plain types", unknown_and_plain_types },
		{ "NUL inside MessageType (fuzzer find)", nul_in_message_type },
		{ "reply begun before the Connect (fuzzer find)", reply_begun_before_connect },
		{ NULL, NULL },
	};
	return unit_add_suite("inspector", t);
}
