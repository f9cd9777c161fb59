#include "inspect.h"

#include "usbmuxd/plist_guard.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The usbmuxd codec's reasons, for the log line of a refused client. */
static const char *refusal(int rc)
{
	return rc == -E2BIG ? "a plist the guard refuses (expansion, nesting, references or a NUL "
			      "beyond its bounds)"
			    : "a request that cannot be held (out of memory)";
}

/* Inspection cannot follow the session any more (a reply it cannot read):
 * the bytes flow on uninspected; but while a Connect result is awaited,
 * whether the client may still send requests is unknown: it is refused. */
static void fail(struct inspector *in, const char *why)
{
	if (in->awaiting_connect) {
		insp_refuse(in, why);
		return;
	}
	struct insp_event ev = { .kind = INSP_EV_PARSE_ERROR, .error = why };
	in->state = INSP_DONE;
	in->cb(in->ctx, &ev);
	insp_free(in);
}

/* The client sent what must not reach usbmuxd: it is closed. */
void insp_refuse(struct inspector *in, const char *why)
{
	struct insp_event ev = { .kind = INSP_EV_REFUSED, .error = why };
	in->state = INSP_REFUSED;
	in->refused = why;
	in->cb(in->ctx, &ev);
	insp_free(in);
}

static void emit_request(struct inspector *in, enum umx_req type, unsigned version,
			 uint16_t port, uint32_t tag)
{
	struct insp_event ev = { .kind = INSP_EV_REQUEST, .type = type, .version = version,
				 .port = port };
	if (type == UMX_REQ_CONNECT && in->owed) {
		/* Its result could not be told from the replies before it
		 * (tags are the client's to choose): a reply owed to an
		 * earlier request, read as the Connect's success, would end
		 * the gate while usbmuxd still reads requests. libusbmuxd
		 * waits for each reply; usbmuxd would too. */
		insp_refuse(in, "a Connect sent before the replies to earlier requests");
		return;
	}
	in->cb(in->ctx, &ev);
	if (in->state != INSP_COMMANDS)
		return; /* the callback refused it */
	if (type == UMX_REQ_LISTEN) {
		in->state = INSP_DONE; /* from here on: a stream of events */
		insp_free(in);
	} else if (type == UMX_REQ_CONNECT) {
		in->awaiting_connect = true;
		in->connect_tag = tag;
	} else {
		in->owed++;
	}
}

static void hdr_of(const struct insp_reader *r, struct umx_hdr *h)
{
	umx_hdr_get(r->hdr, h); /* the length was checked when it arrived */
	h->length = UMX_HDR_LEN + r->body_len;
}

/* A complete request: header in r->hdr, body in r->body. Decoded by the
 * usbmuxd codec, as the broker decodes it. */
static void on_request(struct inspector *in, struct insp_reader *r)
{
	struct umx_hdr h;
	struct umx_request rq;
	hdr_of(r, &h);
	/* usbmuxd takes versions 0 and 1 alike and goes by the message: a
	 * plist under a version-0 header is parsed as a plist all the same,
	 * a binary Connect under version 1 is a Connect. Decoded as usbmuxd
	 * will read it. */
	if (h.version <= UMX_V_PLIST) {
		if (h.message == UMX_MSG_PLIST)
			h.version = UMX_V_PLIST;
		else if (h.message == UMX_MSG_CONNECT || h.message == UMX_MSG_LISTEN)
			h.version = UMX_V_BINARY;
	}
	int rc = in->memo ? umx_request_decode_memo(in->memo, &h, r->body, r->body_len, &rq)
			  : umx_request_decode(&h, r->body, r->body_len, &rq);
	if (rc == -EPROTO) {
		/* usbmuxd ignores it as well and keeps the connection in
		 * command mode: so does the inspection. */
		struct insp_event ev = { .kind = INSP_EV_PARSE_ERROR,
					 .error = "unparseable plist request" };
		in->cb(in->ctx, &ev);
		return;
	}
	if (rc < 0) {
		insp_refuse(in, refusal(rc));
		return;
	}
	emit_request(in, rq.type, rq.version, rq.port, rq.tag);
	umx_request_free(&rq);
}

/* A complete reply: only the awaited Connect result matters. */
static void on_reply(struct inspector *in, struct insp_reader *r)
{
	struct umx_hdr h;
	hdr_of(r, &h);
	if (!in->awaiting_connect) {
		if (in->owed)
			in->owed--;
		return;
	}
	/* Nothing was owed before the Connect (emit_request), so this is its
	 * reply; one under another tag is not usbmuxd's: the client stays
	 * unread. */
	if (h.tag != in->connect_tag || !r->keep)
		return;
	struct umx_event ev;
	uint32_t result = UINT32_MAX;
	/* The codec guards only binary replies (a long DeviceList in XML has
	 * more keys than a request may); a Connect result is short either
	 * way, so it gets the request's bounds. */
	int rc = h.version == UMX_V_PLIST ? umx_plist_check(r->body, r->body_len, NULL) : 0;
	if (rc == 0)
		rc = umx_event_decode(&h, r->body, r->body_len, &ev);
	else
		rc = -E2BIG;
	if (rc == -E2BIG) {
		fail(in, "Connect reply refused by the plist guard");
		return;
	}
	if (rc == 0) {
		if (ev.kind == UMX_EV_RESULT)
			result = ev.result;
		umx_event_free(&ev);
	}
	in->awaiting_connect = false;
	struct insp_event cr = { .kind = INSP_EV_CONNECT_RESULT, .result = result };
	in->cb(in->ctx, &cr);
	if (result == 0) {
		in->state = INSP_DONE; /* a raw byte pipe to the device now */
		insp_free(in);
	}
}

/* Frames one direction. Bodies are kept only when they will be read
 * (requests always; replies only while a Connect result is awaited). */
static void feed(struct inspector *in, struct insp_reader *r, bool is_request,
		 const uint8_t *p, size_t n)
{
	while (n && in->state == INSP_COMMANDS) {
		if (r->hdr_have < 16) {
			size_t take = 16 - r->hdr_have < n ? 16 - r->hdr_have : n;
			memcpy(r->hdr + r->hdr_have, p, take);
			r->hdr_have += take;
			p += take;
			n -= take;
			if (r->hdr_have < 16)
				return;
			struct umx_hdr h;
			if ((is_request ? umx_hdr_get(r->hdr, &h) : umx_hdr_get_reply(r->hdr, &h)) < 0 ||
			    (!is_request && h.length > INSP_MSG_MAX)) {
				/* usbmuxd closes such a client itself. */
				if (is_request)
					insp_refuse(in, "bad request length");
				else
					fail(in, "bad reply length");
				return;
			}
			r->body_len = h.length - UMX_HDR_LEN;
			r->body_have = 0;
			r->keep = is_request || in->awaiting_connect;
			if (r->keep && r->body_len) {
				r->body = malloc(r->body_len);
				if (!r->body) {
					if (is_request)
						insp_refuse(in, "out of memory");
					else
						fail(in, "out of memory");
					return;
				}
			}
		}
		size_t want = r->body_len - r->body_have;
		size_t take = want < n ? want : n;
		if (r->keep && take)
			memcpy(r->body + r->body_have, p, take);
		r->body_have += (uint32_t)take;
		p += take;
		n -= take;
		if (r->body_have < r->body_len)
			return;
		if (is_request)
			on_request(in, r);
		else
			on_reply(in, r);
		if (in->state != INSP_COMMANDS)
			return;
		free(r->body);
		r->body = NULL;
		r->hdr_have = 0;
	}
}

void insp_init(struct inspector *in, insp_cb cb, void *ctx)
{
	memset(in, 0, sizeof(*in));
	in->state = INSP_COMMANDS;
	in->cb = cb;
	in->ctx = ctx;
}

void insp_init_connect(struct inspector *in, insp_cb cb, void *ctx, uint32_t tag)
{
	insp_init(in, cb, ctx);
	in->awaiting_connect = true;
	in->connect_tag = tag;
}

void insp_free(struct inspector *in)
{
	free(in->req.body);
	free(in->rep.body);
	in->req.body = in->rep.body = NULL;
}

size_t insp_client_room(const struct inspector *in)
{
	if (in->state == INSP_DONE)
		return SIZE_MAX;
	if (in->state == INSP_REFUSED || in->awaiting_connect)
		return 0;
	const struct insp_reader *r = &in->req;
	if (r->hdr_have < 16)
		return 16 - r->hdr_have;
	return r->body_len - r->body_have;
}

int insp_client_bytes(struct inspector *in, const uint8_t *p, size_t n)
{
	if (in->state == INSP_COMMANDS)
		feed(in, &in->req, true, p, n);
	return in->state == INSP_REFUSED ? -EBADMSG : 0;
}

void insp_upstream_bytes(struct inspector *in, const uint8_t *p, size_t n)
{
	if (in->state == INSP_COMMANDS)
		feed(in, &in->rep, false, p, n);
}
