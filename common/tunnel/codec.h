/* The tunnel's wire format (docs/PROTOCOL.md): hello and frames, encoded
 * and decoded on byte buffers only. No sockets, no allocation, no logging.
 * Every multi-byte field is big-endian and read with explicit getters. */
#ifndef MUXSHIM_TUNNEL_CODEC_H
#define MUXSHIM_TUNNEL_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TUN_VERSION     2
#define TUN_HELLO_LEN   36
#define TUN_HDR_LEN     12
#define TUN_NONCE_LEN   16
#define TUN_MAC_LEN     32
#define TUN_REASON_MAX  256

#define TUN_MAX_FRAME_MIN 1024u
#define TUN_MAX_FRAME_MAX 1048576u
#define TUN_WINDOW_MIN    1024u
#define TUN_WINDOW_MAX    16777216u
#define TUN_STREAMS_MAX   65536u
#define TUN_SEND_WINDOW_LIMIT 0x7fffffffu

enum tun_role { TUN_ROLE_SHIM = 1, TUN_ROLE_HELPER = 2 };
enum { TUN_HELLO_AUTH = 0x0001 };

enum tun_type {
	TUN_DATA = 0,
	TUN_OPEN = 1,
	TUN_WINDOW = 2,
	TUN_RESET = 3,
	TUN_PING = 4,
	TUN_GOAWAY = 5,
	TUN_AUTH = 6,
};
enum { TUN_FLAG_FIN = 0x01, TUN_FLAG_ACK = 0x02 };

enum tun_reset_code {
	TUN_RESET_UPSTREAM = 1,
	TUN_RESET_REFUSED = 2,
	TUN_RESET_LOCAL_ERROR = 3,
	TUN_RESET_CANCEL = 4,
};

enum tun_goaway_code {
	TUN_GOAWAY_NORMAL = 0,
	TUN_GOAWAY_PROTOCOL = 1,
	TUN_GOAWAY_FLOW = 2,
	TUN_GOAWAY_TIMEOUT = 3,
	TUN_GOAWAY_AUTH = 4,
	TUN_GOAWAY_LIMIT = 5,
	TUN_GOAWAY_INTERNAL = 6,
};

/* Why a hello or frame was refused. Negative values, so that decoders can
 * return them beside byte counts. */
enum tun_err {
	TUN_E_MAGIC = -1,
	TUN_E_VERSION = -2,
	TUN_E_ROLE = -3,
	TUN_E_HELLO_FLAGS = -4,
	TUN_E_HELLO_LIMIT = -5,
	TUN_E_TYPE = -6,
	TUN_E_FLAGS = -7,
	TUN_E_RESERVED = -8,
	TUN_E_STREAM_ID = -9,
	TUN_E_LENGTH = -10,
	TUN_E_TOO_BIG = -11,
	TUN_E_AUTH_EXPECTED = -12,
	TUN_E_RECORD_LEN = -14,     /* record.h: a record length out of range */
	TUN_E_RECORD_AUTH = -15,    /* record.h: a record failed authentication */
	TUN_E_AUTH_MISMATCH = -13,
};
const char *tun_err_str(int err);
const char *tun_type_str(unsigned type);
const char *tun_goaway_str(uint32_t code);
const char *tun_reset_str(uint32_t code);

/* Big-endian byte access. */
static inline uint16_t tun_get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t tun_get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void tun_put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void tun_put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

struct tun_hello {
	uint8_t version;
	uint8_t role;
	uint16_t flags;
	uint32_t max_frame;
	uint32_t window;
	uint32_t max_streams;
	uint8_t nonce[TUN_NONCE_LEN];
};

void tun_hello_encode(const struct tun_hello *h, uint8_t out[TUN_HELLO_LEN]);
/* Checks in the order of PROTOCOL.md §1; `expect_role` is the peer's role.
 * Version is checked before anything else that a later version could change. */
int tun_hello_decode(const uint8_t in[TUN_HELLO_LEN], enum tun_role expect_role,
		     struct tun_hello *out);

struct tun_frame {
	uint8_t type;
	uint8_t flags;
	uint32_t stream;
	uint32_t len;
	const uint8_t *payload; /* points into the decoder's input */
};

/* Validates the header alone (the payload need not have arrived): 0 or a
 * tun_err. `max_frame` is what this side advertised. */
int tun_header_check(const uint8_t hdr[TUN_HDR_LEN], uint32_t max_frame, struct tun_frame *f);

/* Decodes one complete frame from p[0..n). Returns the bytes it spans
 * (> 0), 0 if more input is needed, or a tun_err: a bad header is reported
 * as soon as its 12 bytes are in, never after waiting for a huge payload. */
long tun_frame_decode(const uint8_t *p, size_t n, uint32_t max_frame, struct tun_frame *f);

void tun_header_encode(uint8_t out[TUN_HDR_LEN], uint8_t type, uint8_t flags, uint32_t stream,
		       uint32_t len);

/* Control frames, encoded whole. Return the frame's length. Reasons longer
 * than TUN_REASON_MAX are cut. */
#define TUN_CTRL_MAX (TUN_HDR_LEN + 8 + TUN_REASON_MAX)
size_t tun_encode_window(uint8_t *out, uint32_t stream, uint32_t increment);
size_t tun_encode_reset(uint8_t *out, uint32_t stream, uint32_t code, const char *reason);
size_t tun_encode_ping(uint8_t *out, bool ack, const uint8_t opaque[8]);
size_t tun_encode_goaway(uint8_t *out, uint32_t last_stream, uint32_t code, const char *reason);
size_t tun_encode_auth(uint8_t *out, const uint8_t mac[TUN_MAC_LEN]);

/* Payload accessors for frames that tun_frame_decode accepted. */
uint32_t tun_window_increment(const struct tun_frame *f);
uint32_t tun_reset_code(const struct tun_frame *f, const uint8_t **reason, size_t *reason_len);
uint32_t tun_goaway_fields(const struct tun_frame *f, uint32_t *last_stream,
			   const uint8_t **reason, size_t *reason_len);

#endif
