#include "inspect.h"
#include "unit.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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
		CU_ASSERT_EQUAL(evs[0].type, UMX_REQ_LIST_DEVICES);
		CU_ASSERT_EQUAL(evs[0].version, 1);
		CU_ASSERT_EQUAL(evs[1].type, UMX_REQ_READ_BUID);
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
	CU_ASSERT_EQUAL(evs[0].type, UMX_REQ_CONNECT);
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
	/* a ListDevices answered first, then the Connect */
	insp_client_bytes(&in, req, plist_req(req, 1, "ListDevices", -1));
	insp_upstream_bytes(&in, rep, plist_result(rep, 1, 0));
	insp_client_bytes(&in, req, plist_req(req, 2, "Connect", 8100));
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

/* Tags are the client's: a Connect pipelined behind a request usbmuxd has
 * not answered yet (here a SavePairRecord-like request under the same tag,
 * whose Result 0 would read as the Connect's success and end the gate) is
 * refused before anything of it goes on. One after the reply is fine. */
static void connect_behind_unanswered_requests_refused(void)
{
	uint8_t req[1024], rep[1024];
	struct inspector in;
	nev = 0;
	insp_init(&in, record, NULL);
	CU_ASSERT_EQUAL(insp_client_bytes(&in, req, plist_req(req, 7, "SavePairRecord", -1)), 0);
	CU_ASSERT_EQUAL(insp_client_bytes(&in, req, plist_req(req, 7, "Connect", 8100)), -EBADMSG);
	CU_ASSERT_EQUAL_FATAL(nev, 2);
	CU_ASSERT_EQUAL(evs[1].kind, INSP_EV_REFUSED);
	CU_ASSERT_EQUAL(insp_client_room(&in), 0);
	insp_free(&in);

	nev = 0;
	insp_init(&in, record, NULL);
	insp_client_bytes(&in, req, plist_req(req, 7, "SavePairRecord", -1));
	insp_upstream_bytes(&in, rep, plist_result(rep, 7, 0));
	CU_ASSERT_EQUAL(insp_client_bytes(&in, req, plist_req(req, 7, "Connect", 8100)), 0);
	CU_ASSERT_EQUAL(insp_client_room(&in), 0); /* its result is awaited */
	insp_upstream_bytes(&in, rep, plist_result(rep, 7, 0));
	CU_ASSERT_TRUE(insp_done(&in));
	insp_free(&in);
}

/* usbmuxd goes by the message, not the version: a plist under a version-0
 * header is parsed as a plist (and checked here as one: a NUL in it is
 * refused), a binary Connect record under version 1 is a Connect. */
static void message_decides_not_version(void)
{
	static const char nul[] =
		"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><dict>"
		"<key>MessageType</key><string>List\0Devices</string></dict></plist>";
	uint8_t m[512];
	struct inspector in;
	nev = 0;
	insp_init(&in, record, NULL);
	size_t n = msg(m, 0, 8, 3, nul, sizeof(nul) - 1);
	CU_ASSERT_EQUAL(insp_client_bytes(&in, m, n), -EBADMSG);
	CU_ASSERT_EQUAL(evs[0].kind, INSP_EV_REFUSED);
	insp_free(&in);

	nev = 0;
	insp_init(&in, record, NULL);
	n = plist_req(m, 4, "ListDevices", -1);
	m[4] = 0; /* version 0, message 8 */
	CU_ASSERT_EQUAL(insp_client_bytes(&in, m, n), 0);
	CU_ASSERT_EQUAL(evs[0].type, UMX_REQ_LIST_DEVICES);
	insp_free(&in);

	static const uint8_t rec[8] = { 1, 0, 0, 0, 0x1f, 0x90, 0, 0 }; /* device 1, port 8080 */
	nev = 0;
	insp_init(&in, record, NULL);
	n = msg(m, 1, 2, 5, (const char *)rec, sizeof(rec));
	CU_ASSERT_EQUAL(insp_client_bytes(&in, m, n), 0);
	CU_ASSERT_EQUAL(evs[0].type, UMX_REQ_CONNECT);
	CU_ASSERT_EQUAL(evs[0].port, 8080);
	CU_ASSERT_EQUAL(insp_client_room(&in), 0);
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
	CU_ASSERT_EQUAL(evs[0].type, UMX_REQ_CONNECT);
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
	CU_ASSERT_EQUAL(evs[0].type, UMX_REQ_LISTEN);
	CU_ASSERT_TRUE(insp_done(&in)); /* a Listen session is an event stream */
	insp_free(&in);
}

/* A length usbmuxd would refuse closes the client; a plist libplist cannot
 * read is only counted (usbmuxd ignores it and stays in command mode). */
static void bad_input_is_an_event_not_a_crash(void)
{
	uint8_t buf[256];
	struct inspector in;
	nev = 0;
	insp_init(&in, record, NULL);
	CU_ASSERT_EQUAL(insp_client_bytes(&in, (const uint8_t *)"GET / HTTP/1.1\r\n\r\n", 18),
			-EBADMSG);
	CU_ASSERT_EQUAL(nev, 1);
	CU_ASSERT_EQUAL(evs[0].kind, INSP_EV_REFUSED);
	CU_ASSERT_FALSE(insp_done(&in));
	CU_ASSERT_EQUAL(insp_client_room(&in), 0);
	CU_ASSERT_EQUAL(insp_client_bytes(&in, buf, 1), -EBADMSG);
	insp_free(&in);

	nev = 0;
	insp_init(&in, record, NULL);
	CU_ASSERT_EQUAL(insp_client_bytes(&in, buf, msg(buf, 1, 8, 1, "not a plist", 11)), 0);
	CU_ASSERT_EQUAL(evs[0].kind, INSP_EV_PARSE_ERROR);
	CU_ASSERT_FALSE(insp_done(&in)); /* still framing: the next request is seen */
	CU_ASSERT_EQUAL(insp_client_bytes(&in, buf, plist_req(buf, 2, "ListDevices", -1)), 0);
	CU_ASSERT_EQUAL(nev, 2);
	CU_ASSERT_EQUAL(evs[1].type, UMX_REQ_LIST_DEVICES);
	insp_free(&in);

	nev = 0;
	insp_init(&in, record, NULL);
	uint8_t huge[16] = { 0xff, 0xff, 0x01, 0x00, 1, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0 };
	/* 0x1ffff > 64 KiB: refused before any allocation */
	CU_ASSERT_EQUAL(insp_client_bytes(&in, huge, 16), -EBADMSG);
	CU_ASSERT_EQUAL(evs[0].kind, INSP_EV_REFUSED);
	insp_free(&in);
}

/* The gate: reads stop at each request's header and body end, and not at
 * all while a Connect result is awaited. */
static void gate_room(void)
{
	uint8_t req[1024], rep[1024];
	struct inspector in;
	nev = 0;
	insp_init(&in, record, NULL);
	size_t n = plist_req(req, 4, "Connect", 62078);
	CU_ASSERT_EQUAL(insp_client_room(&in), 16);
	CU_ASSERT_EQUAL(insp_client_bytes(&in, req, 10), 0);
	CU_ASSERT_EQUAL(insp_client_room(&in), 6);
	CU_ASSERT_EQUAL(insp_client_bytes(&in, req + 10, 6), 0);
	CU_ASSERT_EQUAL(insp_client_room(&in), n - 16);
	CU_ASSERT_EQUAL(insp_client_bytes(&in, req + 16, n - 16), 0);
	CU_ASSERT_EQUAL(insp_client_room(&in), 0); /* awaiting the result */
	insp_upstream_bytes(&in, rep, plist_result(rep, 4, 3));
	CU_ASSERT_EQUAL(insp_client_room(&in), 16); /* refused: command mode again */
	CU_ASSERT_EQUAL(insp_client_bytes(&in, req, plist_req(req, 5, "Connect", 62078)), 0);
	insp_upstream_bytes(&in, rep, plist_result(rep, 5, 0));
	CU_ASSERT_EQUAL(insp_client_room(&in), SIZE_MAX); /* a raw pipe now */
	insp_free(&in);
}

/* The issue-17 attack through the inspector: refused when its last byte
 * arrives, never handed to libplist. */
static void amplifying_request_refused(void)
{
	/* {"ListDevices": A}, A = [B] x k, B = [true] x k (one-byte refs) */
	size_t k = 2000, blen = 8 + 1 + 2 * (6 + k) + 12 + 3 + 5 * 4 + 32;
	uint8_t *m = malloc(16 + blen), *b = m + 16, *p = b;
	uint32_t off[5];
	memcpy(p, "bplist00", 8);
	p += 8;
	off[0] = (uint32_t)(p - b);
	*p++ = 0x09;
	for (unsigned a = 1; a <= 2; a++) {
		off[a] = (uint32_t)(p - b);
		*p++ = 0xaf;
		*p++ = 0x12;
		*p++ = 0;
		*p++ = 0;
		*p++ = (uint8_t)(k >> 8);
		*p++ = (uint8_t)k;
		memset(p, a - 1, k);
		p += k;
	}
	off[3] = (uint32_t)(p - b);
	*p++ = 0x5b;
	memcpy(p, "ListDevices", 11);
	p += 11;
	off[4] = (uint32_t)(p - b);
	*p++ = 0xd1;
	*p++ = 3;
	*p++ = 2;
	size_t table = (size_t)(p - b);
	for (unsigned i = 0; i < 5; i++, p += 4) {
		p[0] = 0;
		p[1] = 0;
		p[2] = (uint8_t)(off[i] >> 8);
		p[3] = (uint8_t)off[i];
	}
	memset(p, 0, 32);
	p[6] = 4;
	p[7] = 1;
	p[15] = 5;
	p[23] = 4;
	p[30] = (uint8_t)(table >> 8);
	p[31] = (uint8_t)table;
	p += 32;
	CU_ASSERT_EQUAL((size_t)(p - b), blen);
	msg(m, 1, 8, 7, NULL, 0);
	m[0] = (uint8_t)(16 + blen);
	m[1] = (uint8_t)((16 + blen) >> 8);
	struct inspector in;
	nev = 0;
	insp_init(&in, record, NULL);
	CU_ASSERT_EQUAL(insp_client_bytes(&in, m, 16 + blen - 1), 0); /* all but the last byte */
	CU_ASSERT_EQUAL(insp_client_room(&in), 1);
	CU_ASSERT_EQUAL(nev, 0);
	CU_ASSERT_EQUAL(insp_client_bytes(&in, m + 16 + blen - 1, 1), -EBADMSG);
	CU_ASSERT_EQUAL(nev, 1);
	CU_ASSERT_EQUAL(evs[0].kind, INSP_EV_REFUSED);
	CU_ASSERT_PTR_NOT_NULL(in.refused);
	insp_free(&in);
	free(m);
}

static void unknown_and_plain_types(void)
{
	static const struct {
		const char *type;
		enum umx_req want;
	} cases[] = { { "SomethingNew", UMX_REQ_OTHER }, { "SavePairRecord", UMX_REQ_SAVE_PAIR_RECORD } };
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint8_t buf[1024];
		size_t n = plist_req(buf, 1, cases[i].type, -1);
		struct inspector in;
		nev = 0;
		insp_init(&in, record, NULL);
		CU_ASSERT_EQUAL(insp_client_bytes(&in, buf, n), 0);
		CU_ASSERT_EQUAL_FATAL(nev, 1);
		CU_ASSERT_EQUAL(evs[0].kind, INSP_EV_REQUEST);
		CU_ASSERT_EQUAL(evs[0].type, cases[i].want);
		insp_free(&in);
	}
	CU_ASSERT_STRING_EQUAL(umx_req_name(UMX_REQ_LIST_DEVICES), "ListDevices");
	CU_ASSERT_STRING_EQUAL(umx_req_name(UMX_REQ_OTHER), "Other");
}

/* What aborts libplist's readers in usbmuxd (a raw NUL byte in an XML
 * document; a NUL inside a string, e.g. U+0000 in UTF-16) is refused at the
 * request's last byte, never shown to usbmuxd: the codec calls it hostile,
 * not merely unparseable (which usbmuxd ignores and the relay forwards). */
static void nul_plists_are_refused(void)
{
	static const char xml_nul[] =
		"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><dict>"
		"<key>MessageType</key><string>List\0Devices</string></dict></plist>";
	/* bplist00, dict {MessageType: UTF-16 "A\0"} */
	static const uint8_t utf16_nul[] = {
		'b', 'p', 'l', 'i', 's', 't', '0', '0', 0xd1, 0x01, 0x02, 0x5b, 'M', 'e', 's', 's',
		'a', 'g', 'e', 'T', 'y', 'p', 'e', 0x62, 0x00, 'A', 0x00, 0x00, 0x08, 0x0b, 0x17,
		0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0,
		0, 0, 0, 0, 0, 0, 0, 0x1c };
	const struct {
		const void *body;
		size_t len;
	} bad[] = { { xml_nul, sizeof(xml_nul) - 1 }, { utf16_nul, sizeof(utf16_nul) } };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint8_t m[512];
		msg(m, 1, 8, 1, bad[i].body, bad[i].len);
		struct umx_hdr h = { (uint32_t)(UMX_HDR_LEN + bad[i].len), 1, 8, 1 };
		struct umx_request rq;
		CU_ASSERT_EQUAL(umx_request_decode(&h, m + UMX_HDR_LEN, bad[i].len, &rq), -E2BIG);
		struct inspector in;
		nev = 0;
		insp_init(&in, record, NULL);
		CU_ASSERT_EQUAL(insp_client_bytes(&in, m, UMX_HDR_LEN + bad[i].len - 1), 0);
		CU_ASSERT_EQUAL(insp_client_bytes(&in, m + UMX_HDR_LEN + bad[i].len - 1, 1), -EBADMSG);
		CU_ASSERT_EQUAL_FATAL(nev, 1);
		CU_ASSERT_EQUAL(evs[0].kind, INSP_EV_REFUSED);
		insp_free(&in);
	}
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
	/* Neither is refused (usbmuxd reads them without harm: its binary
	 * parser cuts the string at the NUL) nor aborts anything here. */
	for (int i = 0; i < 2; i++) {
		uint8_t m[512];
		size_t blen = i ? sizeof(bplist) : sizeof(body) - 1;
		msg(m, 1, 8, 1, i ? (const void *)bplist : (const void *)body, blen);
		struct inspector in;
		nev = 0;
		insp_init(&in, record, NULL);
		insp_client_bytes(&in, m, UMX_HDR_LEN + blen);
		CU_ASSERT_EQUAL(nev, 1);
		CU_ASSERT_NOT_EQUAL(evs[0].kind, INSP_EV_REFUSED);
		insp_free(&in);
	}
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
		{ "a Connect behind unanswered requests is refused", connect_behind_unanswered_requests_refused },
		{ "the message decides, not the version", message_decides_not_version },
		{ "bad input is an event, not a crash", bad_input_is_an_event_not_a_crash },
		{ "unknown and plain types", unknown_and_plain_types },
		{ "the gate: room per request, none while a Connect is decided", gate_room },
		{ "an amplifying request is refused at its last byte", amplifying_request_refused },
		{ "NUL inside MessageType (fuzzer find)", nul_in_message_type },
		{ "NUL in an XML document or a UTF-16 string: refused", nul_plists_are_refused },
		{ "reply begun before the Connect (fuzzer find)", reply_begun_before_connect },
		{ NULL, NULL },
	};
	return unit_add_suite("inspector", t);
}
