#include "inspect.h"

#include "usbmuxd/plist_guard.h"

#include <errno.h>
#include <plist/plist.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { MSG_RESULT = 1, MSG_CONNECT = 2, MSG_LISTEN = 3, MSG_PLIST = 8 };

static const struct {
	const char *name;
	enum insp_type type;
} names[] = {
	{ "ListDevices", INSP_LIST_DEVICES },
	{ "Listen", INSP_LISTEN },
	{ "Connect", INSP_CONNECT },
	{ "ReadBUID", INSP_READ_BUID },
	{ "ReadPairRecord", INSP_READ_PAIR_RECORD },
	{ "SavePairRecord", INSP_SAVE_PAIR_RECORD },
	{ "DeletePairRecord", INSP_DELETE_PAIR_RECORD },
	{ "ListListeners", INSP_LIST_LISTENERS },
};

const char *insp_type_name(enum insp_type t)
{
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (names[i].type == t)
			return names[i].name;
	return "Other";
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* libplist sees nothing the plist guard has not bounded (a binary plist's
 * shared objects would otherwise be copied per reference: a 4 KB request
 * cost 96 MB). */
static plist_t parse_guarded(const uint8_t *body, size_t len, int *rc, const char **why)
{
	struct umx_plist_report rep;
	plist_t p = NULL;
	*rc = umx_plist_check(body, len, &rep);
	if (*rc < 0) {
		*why = rep.why;
		return NULL;
	}
	plist_from_memory((const char *)body, (uint32_t)len, &p);
	return p;
}

int insp_parse_plist_request(const uint8_t *body, size_t len, enum insp_type *type,
			     uint16_t *port, const char **why)
{
	int rc;
	if (len == 0 || len > INSP_MSG_MAX)
		return -EINVAL;
	plist_t dict = parse_guarded(body, len, &rc, why);
	if (rc < 0)
		return rc;
	if (!dict || plist_get_node_type(dict) != PLIST_DICT) {
		plist_free(dict);
		return -EINVAL;
	}
	rc = -EINVAL;
	plist_t mt = plist_dict_get_item(dict, "MessageType");
	const char *s = NULL;
	uint64_t slen = 0;
	/* Not plist_get_string_val: libplist 2.2 asserts (aborts the daemon)
	 * on a string with an embedded NUL, which any client can send. */
	if (mt && plist_get_node_type(mt) == PLIST_STRING)
		s = plist_get_string_ptr(mt, &slen);
	if (s) {
		*type = INSP_OTHER;
		for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			if (slen == strlen(names[i].name) && memcmp(s, names[i].name, slen) == 0)
				*type = names[i].type;
		*port = 0;
		plist_t pn = plist_dict_get_item(dict, "PortNumber");
		if (*type == INSP_CONNECT && pn && plist_get_node_type(pn) == PLIST_UINT) {
			uint64_t v = 0;
			plist_get_uint_val(pn, &v);
			/* Clients send htons(port) in a little-endian integer. */
			*port = (uint16_t)((v & 0xff) << 8 | (v >> 8 & 0xff));
		}
		rc = 0;
	}
	plist_free(dict);
	return rc;
}

/* Inspection cannot follow the session any more (a reply it cannot read):
 * the bytes flow on uninspected. */
static void fail(struct inspector *in, const char *why)
{
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

static void emit_request(struct inspector *in, enum insp_type type, unsigned version,
			 uint16_t port, uint32_t tag)
{
	struct insp_event ev = { .kind = INSP_EV_REQUEST, .type = type, .version = version,
				 .port = port };
	in->cb(in->ctx, &ev);
	if (in->state != INSP_COMMANDS)
		return; /* the callback refused it */
	if (type == INSP_LISTEN) {
		in->state = INSP_DONE; /* from here on: a stream of events */
		insp_free(in);
	} else if (type == INSP_CONNECT) {
		in->awaiting_connect = true;
		in->connect_tag = tag;
	}
}

/* A complete request: header in r->hdr, body (if kept) in r->body. */
static void on_request(struct inspector *in, struct insp_reader *r)
{
	uint32_t version = get_le32(r->hdr + 4), message = get_le32(r->hdr + 8);
	uint32_t tag = get_le32(r->hdr + 12);
	if (version == 1 && message == MSG_PLIST) {
		enum insp_type type;
		uint16_t port;
		const char *why = NULL;
		int rc = insp_parse_plist_request(r->body, r->body_len, &type, &port, &why);
		if (rc == -EINVAL) {
			/* usbmuxd ignores it as well and keeps the connection
			 * in command mode: so does the inspection. */
			struct insp_event ev = { .kind = INSP_EV_PARSE_ERROR,
						 .error = "unparseable plist request" };
			in->cb(in->ctx, &ev);
			return;
		}
		if (rc < 0) {
			insp_refuse(in, why ? why : "plist request refused");
			return;
		}
		emit_request(in, type, 1, port, tag);
	} else if (version == 0 && message == MSG_CONNECT && r->body_len >= 6) {
		uint16_t port = (uint16_t)(r->body[4] << 8 | r->body[5]); /* network order */
		emit_request(in, INSP_CONNECT, 0, port, tag);
	} else if (version == 0 && message == MSG_LISTEN) {
		emit_request(in, INSP_LISTEN, 0, 0, tag);
	} else {
		emit_request(in, INSP_OTHER, version, 0, tag);
	}
}

/* A complete reply: only the awaited Connect result matters. */
static void on_reply(struct inspector *in, struct insp_reader *r)
{
	uint32_t version = get_le32(r->hdr + 4), message = get_le32(r->hdr + 8);
	uint32_t tag = get_le32(r->hdr + 12);
	/* A reply that began before the Connect was sent cannot answer it
	 * (and its body was not kept). */
	if (!in->awaiting_connect || tag != in->connect_tag || !r->keep)
		return;
	uint32_t result = UINT32_MAX;
	if (version == 0 && message == MSG_RESULT && r->body_len >= 4) {
		result = get_le32(r->body);
	} else if (version == 1 && message == MSG_PLIST) {
		int rc;
		const char *why;
		plist_t dict = parse_guarded(r->body, r->body_len, &rc, &why);
		if (rc < 0) {
			fail(in, "Connect reply refused by the plist guard");
			return;
		}
		plist_t n = dict && plist_get_node_type(dict) == PLIST_DICT
				    ? plist_dict_get_item(dict, "Number") : NULL;
		if (n && plist_get_node_type(n) == PLIST_UINT) {
			uint64_t v;
			plist_get_uint_val(n, &v);
			result = (uint32_t)v;
		}
		plist_free(dict);
	}
	in->awaiting_connect = false;
	struct insp_event ev = { .kind = INSP_EV_CONNECT_RESULT, .result = result };
	in->cb(in->ctx, &ev);
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
			uint32_t len = get_le32(r->hdr);
			if (len < 16 || len > INSP_MSG_MAX) {
				/* usbmuxd closes such a client itself. */
				if (is_request)
					insp_refuse(in, "bad request length");
				else
					fail(in, "bad reply length");
				return;
			}
			r->body_len = len - 16;
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
