#include "tunnel/codec.h"
#include "unit.h"

#include <string.h>

static struct tun_hello sample_hello(enum tun_role role)
{
	struct tun_hello h = { .version = TUN_VERSION, .role = (uint8_t)role, .flags = TUN_HELLO_AUTH,
			       .max_frame = 16384, .window = 262144, .max_streams = 1024 };
	for (int i = 0; i < TUN_NONCE_LEN; i++)
		h.nonce[i] = (uint8_t)(0xa0 + i);
	return h;
}

static void hello_round_trip_and_byte_order(void)
{
	struct tun_hello h = sample_hello(TUN_ROLE_SHIM), d;
	uint8_t w[TUN_HELLO_LEN];
	tun_hello_encode(&h, w);
	static const uint8_t head[20] = { 'M', 'X', 'T', 'N', 2, 1, 0x00, 0x01, 0x00, 0x00, 0x40, 0x00,
					  0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00 };
	CU_ASSERT_EQUAL(memcmp(w, head, sizeof(head)), 0);
	CU_ASSERT_EQUAL(w[20], 0xa0);
	CU_ASSERT_EQUAL(tun_hello_decode(w, TUN_ROLE_SHIM, &d), 0);
	CU_ASSERT_EQUAL(d.max_frame, 16384);
	CU_ASSERT_EQUAL(d.window, 262144);
	CU_ASSERT_EQUAL(d.max_streams, 1024);
	CU_ASSERT_EQUAL(d.flags, TUN_HELLO_AUTH);
	CU_ASSERT_EQUAL(memcmp(d.nonce, h.nonce, TUN_NONCE_LEN), 0);
}

static int decode_mutated(size_t off, uint8_t val, enum tun_role expect)
{
	struct tun_hello h = sample_hello(TUN_ROLE_HELPER), d;
	uint8_t w[TUN_HELLO_LEN];
	tun_hello_encode(&h, w);
	w[off] = val;
	return tun_hello_decode(w, expect, &d);
}

static void hello_violations(void)
{
	CU_ASSERT_EQUAL(decode_mutated(0, 'G', TUN_ROLE_HELPER), TUN_E_MAGIC); /* "GET /" */
	CU_ASSERT_EQUAL(decode_mutated(4, 1, TUN_ROLE_HELPER), TUN_E_VERSION); /* before records */
	CU_ASSERT_EQUAL(decode_mutated(4, 3, TUN_ROLE_HELPER), TUN_E_VERSION);
	CU_ASSERT_EQUAL(decode_mutated(4, 0, TUN_ROLE_HELPER), TUN_E_VERSION);
	/* version is judged before role: a v3 shim gets "version", not "role" */
	struct tun_hello h = sample_hello(TUN_ROLE_SHIM), d;
	uint8_t w[TUN_HELLO_LEN];
	h.version = 3;
	tun_hello_encode(&h, w);
	CU_ASSERT_EQUAL(tun_hello_decode(w, TUN_ROLE_HELPER, &d), TUN_E_VERSION);
	CU_ASSERT_EQUAL(decode_mutated(0, 'M', TUN_ROLE_SHIM), TUN_E_ROLE);
	CU_ASSERT_EQUAL(decode_mutated(7, 0x03, TUN_ROLE_HELPER), TUN_E_HELLO_FLAGS);
	CU_ASSERT_EQUAL(decode_mutated(6, 0x80, TUN_ROLE_HELPER), TUN_E_HELLO_FLAGS);
	CU_ASSERT_EQUAL(decode_mutated(10, 0x00, TUN_ROLE_HELPER), TUN_E_HELLO_LIMIT); /* max_frame 0 */
	CU_ASSERT_EQUAL(decode_mutated(9, 0x20, TUN_ROLE_HELPER), TUN_E_HELLO_LIMIT);  /* 2 MiB frame */
	CU_ASSERT_EQUAL(decode_mutated(12, 0x01, TUN_ROLE_HELPER), TUN_E_HELLO_LIMIT); /* 16 MiB+ window */
	CU_ASSERT_EQUAL(decode_mutated(18, 0x00, TUN_ROLE_HELPER), TUN_E_HELLO_LIMIT); /* 0 streams */
	CU_ASSERT_EQUAL(decode_mutated(17, 0x02, TUN_ROLE_HELPER), TUN_E_HELLO_LIMIT); /* 128k streams */
}

static void frame_round_trip_each_type(void)
{
	uint8_t buf[TUN_CTRL_MAX + 64];
	struct tun_frame f;
	const uint8_t *reason;
	size_t rl;

	size_t n = tun_encode_window(buf, 7, 65536);
	CU_ASSERT_EQUAL(tun_frame_decode(buf, n, 16384, &f), (long)n);
	CU_ASSERT_EQUAL(f.type, TUN_WINDOW);
	CU_ASSERT_EQUAL(f.stream, 7);
	CU_ASSERT_EQUAL(tun_window_increment(&f), 65536);
	CU_ASSERT_EQUAL(buf[4 + 3], 7); /* big-endian stream id */

	n = tun_encode_reset(buf, 9, TUN_RESET_UPSTREAM, "no usbmuxd");
	CU_ASSERT_EQUAL(tun_frame_decode(buf, n, 16384, &f), (long)n);
	CU_ASSERT_EQUAL(tun_reset_code(&f, &reason, &rl), TUN_RESET_UPSTREAM);
	CU_ASSERT_EQUAL(rl, 10);
	CU_ASSERT_EQUAL(memcmp(reason, "no usbmuxd", 10), 0);

	uint8_t opaque[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	n = tun_encode_ping(buf, true, opaque);
	CU_ASSERT_EQUAL(tun_frame_decode(buf, n, 16384, &f), (long)n);
	CU_ASSERT_EQUAL(f.type, TUN_PING);
	CU_ASSERT_EQUAL(f.flags, TUN_FLAG_ACK);
	CU_ASSERT_EQUAL(memcmp(f.payload, opaque, 8), 0);

	n = tun_encode_goaway(buf, 41, TUN_GOAWAY_TIMEOUT, NULL);
	CU_ASSERT_EQUAL(tun_frame_decode(buf, n, 16384, &f), (long)n);
	uint32_t last;
	CU_ASSERT_EQUAL(tun_goaway_fields(&f, &last, &reason, &rl), TUN_GOAWAY_TIMEOUT);
	CU_ASSERT_EQUAL(last, 41);
	CU_ASSERT_EQUAL(rl, 0);

	uint8_t mac[TUN_MAC_LEN];
	memset(mac, 0x5c, sizeof(mac));
	n = tun_encode_auth(buf, mac);
	CU_ASSERT_EQUAL(tun_frame_decode(buf, n, 16384, &f), (long)n);
	CU_ASSERT_EQUAL(f.type, TUN_AUTH);
	CU_ASSERT_EQUAL(memcmp(f.payload, mac, TUN_MAC_LEN), 0);

	tun_header_encode(buf, TUN_DATA, TUN_FLAG_FIN, 3, 5);
	memcpy(buf + TUN_HDR_LEN, "hello", 5);
	CU_ASSERT_EQUAL(tun_frame_decode(buf, TUN_HDR_LEN + 5, 16384, &f), TUN_HDR_LEN + 5);
	CU_ASSERT_EQUAL(f.flags, TUN_FLAG_FIN);
	CU_ASSERT_EQUAL(memcmp(f.payload, "hello", 5), 0);

	tun_header_encode(buf, TUN_OPEN, 0, 1, 0); /* open without data */
	CU_ASSERT_EQUAL(tun_frame_decode(buf, TUN_HDR_LEN, 16384, &f), TUN_HDR_LEN);
	CU_ASSERT_EQUAL(f.type, TUN_OPEN);
}

static void long_reason_is_cut(void)
{
	char reason[400];
	memset(reason, 'r', sizeof(reason) - 1);
	reason[sizeof(reason) - 1] = '\0';
	uint8_t buf[TUN_CTRL_MAX];
	struct tun_frame f;
	size_t n = tun_encode_goaway(buf, 1, 0, reason);
	CU_ASSERT_EQUAL(n, TUN_HDR_LEN + 8 + TUN_REASON_MAX);
	CU_ASSERT_EQUAL(tun_frame_decode(buf, n, 16384, &f), (long)n);
	n = tun_encode_reset(buf, 1, 1, reason);
	CU_ASSERT_EQUAL(n, TUN_HDR_LEN + 4 + TUN_REASON_MAX);
	CU_ASSERT_EQUAL(tun_frame_decode(buf, n, 16384, &f), (long)n);
}

static void partial_input_needs_more(void)
{
	uint8_t buf[64];
	struct tun_frame f;
	tun_header_encode(buf, TUN_DATA, 0, 1, 10);
	for (size_t n = 0; n < TUN_HDR_LEN + 10; n++)
		CU_ASSERT_EQUAL(tun_frame_decode(buf, n, 16384, &f), 0);
	CU_ASSERT_EQUAL(tun_frame_decode(buf, TUN_HDR_LEN + 10, 16384, &f), TUN_HDR_LEN + 10);
	/* two frames back to back: one at a time */
	tun_encode_window(buf + 22, 3, 1);
	CU_ASSERT_EQUAL(tun_frame_decode(buf, 22 + 16, 16384, &f), 22);
	CU_ASSERT_EQUAL(tun_frame_decode(buf + 22, 16, 16384, &f), 16);
}

static long hdr(uint8_t type, uint8_t flags, uint32_t stream, uint32_t len)
{
	uint8_t b[TUN_HDR_LEN];
	struct tun_frame f;
	tun_header_encode(b, type, flags, stream, len);
	return tun_frame_decode(b, sizeof(b), 16384, &f);
}

static void header_violations(void)
{
	CU_ASSERT_EQUAL(hdr(7, 0, 0, 0), TUN_E_TYPE);
	CU_ASSERT_EQUAL(hdr(0xff, 0, 1, 0), TUN_E_TYPE);
	CU_ASSERT_EQUAL(hdr(TUN_DATA, TUN_FLAG_ACK, 1, 0), TUN_E_FLAGS);
	CU_ASSERT_EQUAL(hdr(TUN_OPEN, 0x80, 1, 0), TUN_E_FLAGS);
	CU_ASSERT_EQUAL(hdr(TUN_WINDOW, TUN_FLAG_FIN, 1, 4), TUN_E_FLAGS);
	CU_ASSERT_EQUAL(hdr(TUN_PING, TUN_FLAG_FIN, 0, 8), TUN_E_FLAGS);
	CU_ASSERT_EQUAL(hdr(TUN_DATA, 0, 0, 1), TUN_E_STREAM_ID);
	CU_ASSERT_EQUAL(hdr(TUN_OPEN, 0, 0, 0), TUN_E_STREAM_ID);
	CU_ASSERT_EQUAL(hdr(TUN_WINDOW, 0, 0, 4), TUN_E_STREAM_ID);
	CU_ASSERT_EQUAL(hdr(TUN_RESET, 0, 0, 4), TUN_E_STREAM_ID);
	CU_ASSERT_EQUAL(hdr(TUN_PING, 0, 1, 8), TUN_E_STREAM_ID);
	CU_ASSERT_EQUAL(hdr(TUN_GOAWAY, 0, 3, 8), TUN_E_STREAM_ID);
	CU_ASSERT_EQUAL(hdr(TUN_AUTH, 0, 1, 32), TUN_E_STREAM_ID);
	CU_ASSERT_EQUAL(hdr(TUN_DATA, 0, 1, 16385), TUN_E_TOO_BIG);
	CU_ASSERT_EQUAL(hdr(TUN_OPEN, 0, 1, 0xffffffffu), TUN_E_TOO_BIG);
	CU_ASSERT_EQUAL(hdr(TUN_WINDOW, 0, 1, 3), TUN_E_LENGTH);
	CU_ASSERT_EQUAL(hdr(TUN_WINDOW, 0, 1, 5), TUN_E_LENGTH);
	CU_ASSERT_EQUAL(hdr(TUN_RESET, 0, 1, 3), TUN_E_LENGTH);
	CU_ASSERT_EQUAL(hdr(TUN_RESET, 0, 1, 4 + TUN_REASON_MAX + 1), TUN_E_LENGTH);
	CU_ASSERT_EQUAL(hdr(TUN_PING, 0, 0, 7), TUN_E_LENGTH);
	CU_ASSERT_EQUAL(hdr(TUN_GOAWAY, 0, 0, 7), TUN_E_LENGTH);
	CU_ASSERT_EQUAL(hdr(TUN_GOAWAY, 0, 0, 8 + TUN_REASON_MAX + 1), TUN_E_LENGTH);
	CU_ASSERT_EQUAL(hdr(TUN_AUTH, 0, 0, 31), TUN_E_LENGTH);
	uint8_t b[TUN_HDR_LEN];
	struct tun_frame f;
	tun_header_encode(b, TUN_DATA, 0, 1, 0);
	b[2] = 1;
	CU_ASSERT_EQUAL(tun_frame_decode(b, sizeof(b), 16384, &f), TUN_E_RESERVED);
	/* the error is known from the header alone, before any payload */
	CU_ASSERT_EQUAL(hdr(TUN_DATA, 0, 1, 0x7fffffff), TUN_E_TOO_BIG);
}

static void strings_cover_codes(void)
{
	for (int e = TUN_E_AUTH_MISMATCH; e <= TUN_E_MAGIC; e++)
		CU_ASSERT_STRING_NOT_EQUAL(tun_err_str(e), "unknown error");
	CU_ASSERT_STRING_EQUAL(tun_type_str(TUN_GOAWAY), "GOAWAY");
	CU_ASSERT_STRING_EQUAL(tun_type_str(99), "UNKNOWN");
	CU_ASSERT_STRING_EQUAL(tun_goaway_str(TUN_GOAWAY_AUTH), "authentication failed");
	CU_ASSERT_STRING_EQUAL(tun_reset_str(TUN_RESET_REFUSED), "refused (too many streams)");
	CU_ASSERT_STRING_EQUAL(tun_reset_str(0), "unknown code");
}

int unit_codec(void)
{
	static const struct unit_test t[] = {
		{ "hello round trip, big-endian layout", hello_round_trip_and_byte_order },
		{ "hello violations", hello_violations },
		{ "every frame type round trips", frame_round_trip_each_type },
		{ "long reasons are cut to the limit", long_reason_is_cut },
		{ "partial input needs more", partial_input_needs_more },
		{ "header violations", header_violations },
		{ "error and code names", strings_cover_codes },
		{ NULL, NULL },
	};
	return unit_add_suite("tunnel codec", t);
}
