#include "codec.h"

#include <string.h>

static const uint8_t MAGIC[4] = { 'M', 'X', 'T', 'N' };

const char *tun_err_str(int err)
{
	switch (err) {
	case TUN_E_MAGIC: return "not a muxshim tunnel peer (bad magic)";
	case TUN_E_VERSION: return "unsupported tunnel version";
	case TUN_E_ROLE: return "peer has the wrong role";
	case TUN_E_HELLO_FLAGS: return "unknown hello flags";
	case TUN_E_HELLO_LIMIT: return "hello limit out of range";
	case TUN_E_TYPE: return "unknown frame type";
	case TUN_E_FLAGS: return "invalid flags for the frame type";
	case TUN_E_RESERVED: return "reserved header bits set";
	case TUN_E_STREAM_ID: return "stream id not allowed for the frame type";
	case TUN_E_LENGTH: return "invalid length for the frame type";
	case TUN_E_TOO_BIG: return "frame larger than the advertised maximum";
	case TUN_E_AUTH_EXPECTED: return "authentication expected";
	case TUN_E_AUTH_MISMATCH: return "token mismatch";
	case TUN_E_RECORD_LEN: return "encrypted record with an impossible length";
	case TUN_E_RECORD_AUTH: return "encrypted record failed authentication";
	}
	return "unknown error";
}

const char *tun_type_str(unsigned type)
{
	static const char *const names[] = { "DATA", "OPEN", "WINDOW", "RESET", "PING", "GOAWAY",
					     "AUTH" };
	return type < sizeof(names) / sizeof(names[0]) ? names[type] : "UNKNOWN";
}

const char *tun_goaway_str(uint32_t code)
{
	static const char *const names[] = { "normal", "protocol error", "flow-control error",
					     "timeout", "authentication failed",
					     "too many tunnels", "internal error" };
	return code < sizeof(names) / sizeof(names[0]) ? names[code] : "unknown code";
}

const char *tun_reset_str(uint32_t code)
{
	static const char *const names[] = { "?", "upstream unavailable", "refused (too many streams)",
					     "local socket error", "cancelled" };
	return code >= 1 && code < sizeof(names) / sizeof(names[0]) ? names[code] : "unknown code";
}

void tun_hello_encode(const struct tun_hello *h, uint8_t out[TUN_HELLO_LEN])
{
	memcpy(out, MAGIC, 4);
	out[4] = h->version;
	out[5] = h->role;
	tun_put16(out + 6, h->flags);
	tun_put32(out + 8, h->max_frame);
	tun_put32(out + 12, h->window);
	tun_put32(out + 16, h->max_streams);
	memcpy(out + 20, h->nonce, TUN_NONCE_LEN);
}

int tun_hello_decode(const uint8_t in[TUN_HELLO_LEN], enum tun_role expect_role,
		     struct tun_hello *out)
{
	if (memcmp(in, MAGIC, 4) != 0)
		return TUN_E_MAGIC;
	out->version = in[4];
	if (out->version != TUN_VERSION)
		return TUN_E_VERSION;
	out->role = in[5];
	if (out->role != expect_role)
		return TUN_E_ROLE;
	out->flags = tun_get16(in + 6);
	if (out->flags & ~TUN_HELLO_AUTH)
		return TUN_E_HELLO_FLAGS;
	out->max_frame = tun_get32(in + 8);
	out->window = tun_get32(in + 12);
	out->max_streams = tun_get32(in + 16);
	if (out->max_frame < TUN_MAX_FRAME_MIN || out->max_frame > TUN_MAX_FRAME_MAX ||
	    out->window < TUN_WINDOW_MIN || out->window > TUN_WINDOW_MAX ||
	    out->max_streams < 1 || out->max_streams > TUN_STREAMS_MAX)
		return TUN_E_HELLO_LIMIT;
	memcpy(out->nonce, in + 20, TUN_NONCE_LEN);
	return 0;
}

/* Per type: allowed flags, whether it names a stream, length bounds. */
static const struct {
	uint8_t flags;
	bool stream;
	uint32_t min_len, max_len; /* max_len 0: bounded by max_frame */
} rules[] = {
	[TUN_DATA] = { TUN_FLAG_FIN, true, 0, 0 },
	[TUN_OPEN] = { TUN_FLAG_FIN, true, 0, 0 },
	[TUN_WINDOW] = { 0, true, 4, 4 },
	[TUN_RESET] = { 0, true, 4, 4 + TUN_REASON_MAX },
	[TUN_PING] = { TUN_FLAG_ACK, false, 8, 8 },
	[TUN_GOAWAY] = { 0, false, 8, 8 + TUN_REASON_MAX },
	[TUN_AUTH] = { 0, false, TUN_MAC_LEN, TUN_MAC_LEN },
};

int tun_header_check(const uint8_t hdr[TUN_HDR_LEN], uint32_t max_frame, struct tun_frame *f)
{
	f->type = hdr[0];
	f->flags = hdr[1];
	f->stream = tun_get32(hdr + 4);
	f->len = tun_get32(hdr + 8);
	f->payload = NULL;
	if (f->type >= sizeof(rules) / sizeof(rules[0]))
		return TUN_E_TYPE;
	if (hdr[2] || hdr[3])
		return TUN_E_RESERVED;
	if (f->flags & ~rules[f->type].flags)
		return TUN_E_FLAGS;
	if ((f->stream != 0) != rules[f->type].stream)
		return TUN_E_STREAM_ID;
	if (rules[f->type].max_len == 0) {
		if (f->len > max_frame)
			return TUN_E_TOO_BIG;
	} else if (f->len < rules[f->type].min_len || f->len > rules[f->type].max_len) {
		return TUN_E_LENGTH;
	}
	return 0;
}

long tun_frame_decode(const uint8_t *p, size_t n, uint32_t max_frame, struct tun_frame *f)
{
	if (n < TUN_HDR_LEN)
		return 0;
	int rc = tun_header_check(p, max_frame, f);
	if (rc < 0)
		return rc;
	if (n - TUN_HDR_LEN < f->len)
		return 0;
	f->payload = p + TUN_HDR_LEN;
	return (long)(TUN_HDR_LEN + f->len);
}

void tun_header_encode(uint8_t out[TUN_HDR_LEN], uint8_t type, uint8_t flags, uint32_t stream,
		       uint32_t len)
{
	out[0] = type;
	out[1] = flags;
	out[2] = 0;
	out[3] = 0;
	tun_put32(out + 4, stream);
	tun_put32(out + 8, len);
}

size_t tun_encode_window(uint8_t *out, uint32_t stream, uint32_t increment)
{
	tun_header_encode(out, TUN_WINDOW, 0, stream, 4);
	tun_put32(out + TUN_HDR_LEN, increment);
	return TUN_HDR_LEN + 4;
}

static size_t reason_len(const char *reason)
{
	if (!reason)
		return 0;
	size_t n = strnlen(reason, TUN_REASON_MAX);
	return n;
}

size_t tun_encode_reset(uint8_t *out, uint32_t stream, uint32_t code, const char *reason)
{
	size_t rl = reason_len(reason);
	tun_header_encode(out, TUN_RESET, 0, stream, (uint32_t)(4 + rl));
	tun_put32(out + TUN_HDR_LEN, code);
	if (rl)
		memcpy(out + TUN_HDR_LEN + 4, reason, rl);
	return TUN_HDR_LEN + 4 + rl;
}

size_t tun_encode_ping(uint8_t *out, bool ack, const uint8_t opaque[8])
{
	tun_header_encode(out, TUN_PING, ack ? TUN_FLAG_ACK : 0, 0, 8);
	memcpy(out + TUN_HDR_LEN, opaque, 8);
	return TUN_HDR_LEN + 8;
}

size_t tun_encode_goaway(uint8_t *out, uint32_t last_stream, uint32_t code, const char *reason)
{
	size_t rl = reason_len(reason);
	tun_header_encode(out, TUN_GOAWAY, 0, 0, (uint32_t)(8 + rl));
	tun_put32(out + TUN_HDR_LEN, last_stream);
	tun_put32(out + TUN_HDR_LEN + 4, code);
	if (rl)
		memcpy(out + TUN_HDR_LEN + 8, reason, rl);
	return TUN_HDR_LEN + 8 + rl;
}

size_t tun_encode_auth(uint8_t *out, const uint8_t mac[TUN_MAC_LEN])
{
	tun_header_encode(out, TUN_AUTH, 0, 0, TUN_MAC_LEN);
	memcpy(out + TUN_HDR_LEN, mac, TUN_MAC_LEN);
	return TUN_HDR_LEN + TUN_MAC_LEN;
}

uint32_t tun_window_increment(const struct tun_frame *f)
{
	return tun_get32(f->payload);
}

uint32_t tun_reset_code(const struct tun_frame *f, const uint8_t **reason, size_t *rlen)
{
	*reason = f->payload + 4;
	*rlen = f->len - 4;
	return tun_get32(f->payload);
}

uint32_t tun_goaway_fields(const struct tun_frame *f, uint32_t *last_stream,
			   const uint8_t **reason, size_t *rlen)
{
	*last_stream = tun_get32(f->payload);
	*reason = f->payload + 8;
	*rlen = f->len - 8;
	return tun_get32(f->payload + 4);
}
