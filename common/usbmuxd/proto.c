#include "usbmuxd/proto.h"
#include "usbmuxd/plist_guard.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t get_le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

static void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static void put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

void umx_hdr_put(uint8_t out[UMX_HDR_LEN], const struct umx_hdr *h)
{
	put_le32(out, h->length);
	put_le32(out + 4, h->version);
	put_le32(out + 8, h->message);
	put_le32(out + 12, h->tag);
}

int umx_hdr_get(const uint8_t in[UMX_HDR_LEN], struct umx_hdr *h)
{
	h->length = get_le32(in);
	h->version = get_le32(in + 4);
	h->message = get_le32(in + 8);
	h->tag = get_le32(in + 12);
	return h->length < UMX_HDR_LEN || h->length > UMX_MSG_MAX ? -EMSGSIZE : 0;
}

int umx_hdr_get_reply(const uint8_t in[UMX_HDR_LEN], struct umx_hdr *h)
{
	int rc = umx_hdr_get(in, h);
	return rc == 0 || (h->length >= UMX_HDR_LEN && h->length <= UMX_REPLY_MAX) ? 0 : rc;
}

static const struct {
	const char *name;
	enum umx_req type;
} req_names[] = {
	{ "ListDevices", UMX_REQ_LIST_DEVICES },
	{ "Listen", UMX_REQ_LISTEN },
	{ "Connect", UMX_REQ_CONNECT },
	{ "ReadBUID", UMX_REQ_READ_BUID },
	{ "ReadPairRecord", UMX_REQ_READ_PAIR_RECORD },
	{ "SavePairRecord", UMX_REQ_SAVE_PAIR_RECORD },
	{ "DeletePairRecord", UMX_REQ_DELETE_PAIR_RECORD },
	{ "ListListeners", UMX_REQ_LIST_LISTENERS },
};
#define NREQ (sizeof(req_names) / sizeof(req_names[0]))

const char *umx_req_name(enum umx_req t)
{
	for (size_t i = 0; i < NREQ; i++)
		if (req_names[i].type == t)
			return req_names[i].name;
	return "Other";
}

#define UMX_DEPTH_MAX 32 /* far deeper than any usbmuxd message nests */

/* True if every string in the tree is free of NUL bytes: libplist 2.2
 * overruns its buffer writing such a string back as XML (found by
 * fuzz_proto), and a broker writes back what it forwards. */
static bool tree_clean(plist_t node, unsigned depth)
{
	if (depth > UMX_DEPTH_MAX)
		return false;
	switch (plist_get_node_type(node)) {
	case PLIST_STRING: {
		uint64_t n = 0;
		const char *sv = plist_get_string_ptr(node, &n);
		return sv && !memchr(sv, 0, n);
	}
	case PLIST_ARRAY:
		for (uint32_t i = 0, n = plist_array_get_size(node); i < n; i++)
			if (!tree_clean(plist_array_get_item(node, i), depth + 1))
				return false;
		return true;
	case PLIST_DICT: {
		plist_dict_iter it = NULL;
		plist_dict_new_iter(node, &it);
		bool ok = true;
		for (;;) {
			char *key = NULL;
			plist_t val = NULL;
			plist_dict_next_item(node, it, &key, &val);
			free(key);
			if (!val)
				break;
			if (!tree_clean(val, depth + 1)) {
				ok = false;
				break;
			}
		}
		free(it);
		return ok;
	}
	default:
		return true;
	}
}

/* The one place plist bodies are parsed: only after the guard has bounded
 * what libplist may build from them (plist_guard.h). A client's request
 * gets every check; a reply from the upstream (usbmuxd, or the helper that
 * relays it) the binary expansion check only: its XML cannot amplify, and a
 * DeviceList of many devices rightly has more keys and containers than the
 * guard allows a request. */
static int parse_body(const uint8_t *body, size_t len, bool request, plist_t *out)
{
	*out = NULL;
	if (len == 0 || len > UMX_REPLY_MAX)
		return -EPROTO;
	int rc = request || plist_is_binary((const char *)body, (uint32_t)len)
			 ? umx_plist_check(body, len, NULL) : 0;
	if (rc == -ENOMEM)
		return rc;
	if (rc < 0)
		return -E2BIG;  /* the guard refuses it: so does the caller */
	plist_from_memory((const char *)body, (uint32_t)len, out);
	if (!*out)
		return -EPROTO;
	if (!tree_clean(*out, 0)) {
		/* A NUL inside a string: libplist's readers abort on it
		 * (usbmuxd's among them): refused, never passed on. */
		plist_free(*out);
		*out = NULL;
		return -E2BIG;
	}
	return 0;
}

/* A string value without plist_get_string_val, which asserts (aborts) on an
 * embedded NUL in libplist 2.2. Returns its length, or -1 when absent, not
 * a string, or too long for cap (NUL included). */
static long dict_string(plist_t dict, const char *key, char *dst, size_t cap)
{
	plist_t n = plist_dict_get_item(dict, key);
	if (!n || plist_get_node_type(n) != PLIST_STRING)
		return -1;
	uint64_t slen = 0;
	const char *s = plist_get_string_ptr(n, &slen);
	if (!s || slen >= cap || memchr(s, 0, slen))
		return -1;
	memcpy(dst, s, slen);
	dst[slen] = 0;
	return (long)slen;
}

static bool dict_uint(plist_t dict, const char *key, uint64_t *v)
{
	plist_t n = plist_dict_get_item(dict, key);
	if (!n || plist_get_node_type(n) != PLIST_UINT)
		return false;
	plist_get_uint_val(n, v);
	return true;
}

static int decode_plist_request(const uint8_t *body, size_t len, struct umx_request *rq)
{
	int rc = parse_body(body, len, true, &rq->dict);
	if (rc < 0)
		return rc;
	if (plist_get_node_type(rq->dict) != PLIST_DICT)
		return -EPROTO;
	plist_t n = plist_dict_get_item(rq->dict, "MessageType");
	if (!n || plist_get_node_type(n) != PLIST_STRING)
		return -EPROTO;
	/* A type longer than any known name is still a request: Other. */
	char mt[32];
	rq->type = UMX_REQ_OTHER;
	if (dict_string(rq->dict, "MessageType", mt, sizeof(mt)) < 0)
		return 0;
	for (size_t i = 0; i < NREQ; i++)
		if (strcmp(mt, req_names[i].name) == 0)
			rq->type = req_names[i].type;
	uint64_t v;
	if (dict_uint(rq->dict, "DeviceID", &v) && v <= UINT32_MAX) {
		rq->has_device_id = true;
		rq->device_id = (uint32_t)v;
	}
	if (rq->type == UMX_REQ_CONNECT) {
		/* PortNumber holds htons(port) in a little-endian integer.
		 * Without a DeviceID usbmuxd answers BADDEV, without a port
		 * BADCOMMAND: still a Connect, answered as such. */
		if (!rq->has_device_id)
			rq->malformed = UMX_RESULT_BADDEV;
		else if (!dict_uint(rq->dict, "PortNumber", &v) || v > UINT16_MAX)
			rq->malformed = UMX_RESULT_BADCOMMAND;
		else
			rq->port = (uint16_t)((v & 0xff) << 8 | (v >> 8 & 0xff));
	}
	if (rq->type == UMX_REQ_READ_PAIR_RECORD || rq->type == UMX_REQ_SAVE_PAIR_RECORD ||
	    rq->type == UMX_REQ_DELETE_PAIR_RECORD)
		rq->has_record_id = dict_string(rq->dict, "PairRecordID", rq->record_id,
						sizeof(rq->record_id)) >= 0;
	return 0;
}

int umx_request_decode(const struct umx_hdr *h, const uint8_t *body, size_t len,
		       struct umx_request *rq)
{
	memset(rq, 0, sizeof(*rq));
	rq->version = h->version;
	rq->message = h->message;
	rq->tag = h->tag;
	rq->type = UMX_REQ_OTHER;
	int rc = 0;
	if (len > UMX_MSG_MAX - UMX_HDR_LEN) {
		rc = -EMSGSIZE;
	} else if (h->version == UMX_V_PLIST && h->message == UMX_MSG_PLIST) {
		rc = decode_plist_request(body, len, rq);
	} else if (h->version == UMX_V_BINARY && h->message == UMX_MSG_CONNECT) {
		rq->type = UMX_REQ_CONNECT;
		if (len < UMX_V0_CONNECT_LEN) {
			rq->malformed = UMX_RESULT_BADCOMMAND;
		} else {
			rq->has_device_id = true;
			rq->device_id = get_le32(body);
			rq->port = (uint16_t)(body[4] << 8 | body[5]); /* network order */
		}
	} else if (h->version == UMX_V_BINARY && h->message == UMX_MSG_LISTEN) {
		rq->type = UMX_REQ_LISTEN;
	}
	if (rc < 0)
		umx_request_free(rq);
	return rc;
}

void umx_request_free(struct umx_request *rq)
{
	if (!rq->dict_borrowed)
		plist_free(rq->dict);
	rq->dict = NULL;
	rq->dict_borrowed = false;
}

static bool memo_kind(enum umx_req t)
{
	return t == UMX_REQ_LIST_DEVICES || t == UMX_REQ_READ_BUID || t == UMX_REQ_LISTEN ||
	       t == UMX_REQ_LIST_LISTENERS;
}

static void memo_slot_free(struct umx_memo_slot *sl)
{
	free(sl->body);
	plist_free(sl->rq.dict);
	memset(sl, 0, sizeof(*sl));
}

int umx_request_decode_memo(struct umx_memo *m, const struct umx_hdr *h, const uint8_t *body,
			    size_t len, struct umx_request *rq)
{
	bool kept = h->version == UMX_V_PLIST && h->message == UMX_MSG_PLIST &&
		    len <= UMX_MEMO_BODY_MAX; /* a body the memo may hold */
	if (kept) {
		for (unsigned i = 0; i < UMX_MEMO_SLOTS; i++) {
			const struct umx_memo_slot *sl = &m->slot[i];
			if (sl->body && sl->len == len && memcmp(sl->body, body, len) == 0) {
				*rq = sl->rq;
				rq->tag = h->tag;
				rq->dict_borrowed = true;
				m->hits++;
				return 0;
			}
		}
		m->misses++;
	}
	int rc = umx_request_decode(h, body, len, rq);
	if (rc < 0 || !kept || !memo_kind(rq->type))
		return rc;
	struct umx_memo_slot *sl = &m->slot[m->next];
	uint8_t *copy = malloc(len ? len : 1);
	if (!copy)
		return 0; /* decoded all the same, just not kept */
	memo_slot_free(sl);
	memcpy(copy, body, len);
	sl->version = h->version;
	sl->message = h->message;
	sl->len = len;
	sl->body = copy;
	sl->rq = *rq;               /* the memo owns the dict from here */
	sl->rq.dict_borrowed = false;
	rq->dict_borrowed = true;
	m->next = (m->next + 1) % UMX_MEMO_SLOTS;
	return 0;
}

void umx_memo_free(struct umx_memo *m)
{
	for (unsigned i = 0; i < UMX_MEMO_SLOTS; i++)
		memo_slot_free(&m->slot[i]);
	m->next = 0;
}

void umx_device_free(struct umx_device *d)
{
	plist_free(d->props);
	d->props = NULL;
}

int umx_device_copy(struct umx_device *dst, const struct umx_device *src)
{
	*dst = *src;
	if (src->props && !(dst->props = plist_copy(src->props)))
		return -ENOMEM;
	return 0;
}

/* A copy of an upstream's Properties for the table: scalars only (no known
 * property nests), keys as the iterator returns them (cut at a NUL), order
 * kept so that replies match the upstream's. Strings holding a NUL, which
 * libplist 2.2 cannot write back, never get this far (parse_body). */
static plist_t clean_props(plist_t props)
{
	plist_t out = plist_new_dict();
	plist_dict_iter it = NULL;
	plist_dict_new_iter(props, &it);
	for (;;) {
		char *key = NULL;
		plist_t val = NULL;
		plist_dict_next_item(props, it, &key, &val);
		if (!val) {
			free(key);
			break;
		}
		plist_type t = plist_get_node_type(val);
		if (key && *key && t != PLIST_DICT && t != PLIST_ARRAY)
			plist_dict_set_item(out, key, plist_copy(val));
		free(key);
	}
	free(it);
	return out;
}

/* Fills d from an Attached dict (DeviceID at top level, the rest in
 * Properties). The serial is what identifies a phone across restarts:
 * an entry without one is refused. */
static int device_from_attached(plist_t dict, struct umx_device *d)
{
	memset(d, 0, sizeof(*d));
	uint64_t v;
	plist_t props = plist_dict_get_item(dict, "Properties");
	if (!props || plist_get_node_type(props) != PLIST_DICT)
		return -EPROTO;
	if ((!dict_uint(dict, "DeviceID", &v) && !dict_uint(props, "DeviceID", &v)) ||
	    v > UINT32_MAX)
		return -EPROTO;
	d->id = (uint32_t)v;
	if (dict_string(props, "SerialNumber", d->serial, sizeof(d->serial)) <= 0)
		return -EPROTO;
	if (dict_uint(props, "ProductID", &v))
		d->product_id = (uint16_t)v;
	if (dict_uint(props, "LocationID", &v))
		d->location_id = (uint32_t)v;
	char ct[16];
	d->network = dict_string(props, "ConnectionType", ct, sizeof(ct)) >= 0 &&
		     strcmp(ct, "Network") == 0;
	if (!(d->props = clean_props(props)))
		return -ENOMEM;
	return 0;
}

static int decode_device_list(plist_t arr, struct umx_event *ev)
{
	uint32_t n = plist_array_get_size(arr);
	if (n > UMX_LIST_MAX)
		return -EPROTO;
	if (n && !(ev->list = calloc(n, sizeof(*ev->list))))
		return -ENOMEM;
	/* An entry that cannot be tracked (no serial, no properties) is left
	 * out: one odd device must not hide the others. */
	for (uint32_t i = 0; i < n; i++) {
		plist_t item = plist_array_get_item(arr, i);
		if (!item || plist_get_node_type(item) != PLIST_DICT)
			continue;
		int rc = device_from_attached(item, &ev->list[ev->n]);
		if (rc == -ENOMEM) {
			umx_device_free(&ev->list[ev->n]);
			return rc;
		}
		if (rc < 0) {
			umx_device_free(&ev->list[ev->n]);
			ev->skipped++;
			continue;
		}
		ev->n++;
	}
	return 0;
}

static int decode_plist_event(const uint8_t *body, size_t len, struct umx_event *ev)
{
	int rc = parse_body(body, len, false, &ev->dict);
	if (rc < 0)
		return rc;
	if (plist_get_node_type(ev->dict) != PLIST_DICT)
		return -EPROTO;
	char mt[16];
	uint64_t v;
	ev->kind = UMX_EV_OTHER;
	if (dict_string(ev->dict, "MessageType", mt, sizeof(mt)) >= 0) {
		if (strcmp(mt, "Result") == 0) {
			if (!dict_uint(ev->dict, "Number", &v) || v > UINT32_MAX)
				return -EPROTO;
			ev->kind = UMX_EV_RESULT;
			ev->result = (uint32_t)v;
		} else if (strcmp(mt, "Attached") == 0) {
			ev->kind = UMX_EV_ATTACHED;
			if ((rc = device_from_attached(ev->dict, &ev->dev)) < 0)
				return rc;
			ev->device_id = ev->dev.id;
		} else if (strcmp(mt, "Detached") == 0 || strcmp(mt, "Paired") == 0) {
			if (!dict_uint(ev->dict, "DeviceID", &v) || v > UINT32_MAX)
				return -EPROTO;
			ev->kind = mt[0] == 'D' ? UMX_EV_DETACHED : UMX_EV_PAIRED;
			ev->device_id = (uint32_t)v;
		}
		return 0;
	}
	plist_t arr = plist_dict_get_item(ev->dict, "DeviceList");
	if (arr) {
		if (plist_get_node_type(arr) != PLIST_ARRAY)
			return -EPROTO;
		ev->kind = UMX_EV_DEVICE_LIST;
		return decode_device_list(arr, ev);
	}
	if (plist_dict_get_item(ev->dict, "BUID")) {
		if (dict_string(ev->dict, "BUID", ev->text, sizeof(ev->text)) < 0)
			return -EPROTO;
		ev->kind = UMX_EV_BUID;
	}
	return 0;
}

static int decode_binary_event(const struct umx_hdr *h, const uint8_t *body, size_t len,
			       struct umx_event *ev)
{
	switch (h->message) {
	case UMX_MSG_RESULT:
	case UMX_MSG_DEVICE_REMOVE:
	case UMX_MSG_DEVICE_PAIRED:
		if (len < 4)
			return -EPROTO;
		ev->kind = h->message == UMX_MSG_RESULT	       ? UMX_EV_RESULT
			   : h->message == UMX_MSG_DEVICE_REMOVE ? UMX_EV_DETACHED
								 : UMX_EV_PAIRED;
		ev->result = ev->device_id = get_le32(body);
		return 0;
	case UMX_MSG_DEVICE_ADD:
		if (len < UMX_DEVREC_LEN)
			return -EPROTO;
		ev->kind = UMX_EV_ATTACHED;
		ev->dev.id = ev->device_id = get_le32(body);
		ev->dev.product_id = get_le16(body + 4);
		memcpy(ev->dev.serial, body + 6, UMX_SERIAL_MAX);
		ev->dev.serial[UMX_SERIAL_MAX] = 0;
		ev->dev.location_id = get_le32(body + 264);
		return ev->dev.serial[0] ? 0 : -EPROTO;
	default:
		ev->kind = UMX_EV_OTHER;
		return 0;
	}
}

int umx_event_decode(const struct umx_hdr *h, const uint8_t *body, size_t len,
		     struct umx_event *ev)
{
	memset(ev, 0, sizeof(*ev));
	ev->version = h->version;
	ev->tag = h->tag;
	int rc;
	if (h->version == UMX_V_PLIST && h->message == UMX_MSG_PLIST)
		rc = decode_plist_event(body, len, ev);
	else if (h->version == UMX_V_BINARY)
		rc = decode_binary_event(h, body, len, ev);
	else
		rc = -EPROTO;
	if (rc < 0)
		umx_event_free(ev);
	return rc;
}

void umx_event_free(struct umx_event *ev)
{
	umx_device_free(&ev->dev);
	for (size_t i = 0; i < ev->n; i++)
		umx_device_free(&ev->list[i]);
	free(ev->list);
	ev->list = NULL;
	ev->n = 0;
	plist_free(ev->dict);
	ev->dict = NULL;
}

/* ---- encoders ---- */

static int frame(uint32_t version, uint32_t message, uint32_t tag, const void *body,
		 size_t blen, uint8_t **out, size_t *len)
{
	if (blen > UMX_REPLY_MAX - UMX_HDR_LEN)
		return -EMSGSIZE;
	uint8_t *m = malloc(UMX_HDR_LEN + blen);
	if (!m)
		return -ENOMEM;
	struct umx_hdr h = { (uint32_t)(UMX_HDR_LEN + blen), version, message, tag };
	umx_hdr_put(m, &h);
	if (blen)
		memcpy(m + UMX_HDR_LEN, body, blen);
	*out = m;
	*len = UMX_HDR_LEN + blen;
	return 0;
}

int umx_encode_plist(uint32_t tag, plist_t dict, uint8_t **out, size_t *len)
{
	char *xml = NULL;
	uint32_t xlen = 0;
	plist_to_xml(dict, &xml, &xlen);
	if (!xml)
		return -ENOMEM;
	int rc = frame(UMX_V_PLIST, UMX_MSG_PLIST, tag, xml, xlen, out, len);
	plist_to_xml_free(xml);
	return rc;
}

/* Builds a one-key-or-more dict, encodes it and frees it. */
static int encode_owned(uint32_t tag, plist_t dict, uint8_t **out, size_t *len)
{
	if (!dict)
		return -ENOMEM;
	int rc = umx_encode_plist(tag, dict, out, len);
	plist_free(dict);
	return rc;
}

static int encode_u32(uint32_t version, uint32_t message, uint32_t tag, const char *mt,
		      const char *key, uint32_t v, uint8_t **out, size_t *len)
{
	if (version == UMX_V_BINARY) {
		uint8_t b[4];
		put_le32(b, v);
		return frame(UMX_V_BINARY, message, tag, b, sizeof(b), out, len);
	}
	plist_t d = plist_new_dict();
	plist_dict_set_item(d, "MessageType", plist_new_string(mt));
	plist_dict_set_item(d, key, plist_new_uint(v));
	return encode_owned(tag, d, out, len);
}

int umx_encode_result(uint32_t version, uint32_t tag, uint32_t number, uint8_t **out, size_t *len)
{
	return encode_u32(version, UMX_MSG_RESULT, tag, "Result", "Number", number, out, len);
}

int umx_encode_detached(uint32_t version, uint32_t device_id, uint8_t **out, size_t *len)
{
	return encode_u32(version, UMX_MSG_DEVICE_REMOVE, 0, "Detached", "DeviceID", device_id,
			  out, len);
}

int umx_encode_paired(uint32_t version, uint32_t device_id, uint8_t **out, size_t *len)
{
	return encode_u32(version, UMX_MSG_DEVICE_PAIRED, 0, "Paired", "DeviceID", device_id,
			  out, len);
}

/* Properties as usbmuxd lists them; the upstream's own dict when there is
 * one, with its DeviceID set to the id this device has here. */
static plist_t properties(const struct umx_device *d)
{
	plist_t p;
	if (d->props) {
		p = plist_copy(d->props);
	} else {
		p = plist_new_dict();
		/* usbmuxd's figure for a USB 2 high-speed link; a v0 record
		 * does not carry one. */
		plist_dict_set_item(p, "ConnectionSpeed", plist_new_uint(480000000));
		plist_dict_set_item(p, "ConnectionType", plist_new_string("USB"));
		plist_dict_set_item(p, "DeviceID", plist_new_uint(d->id));
		plist_dict_set_item(p, "LocationID", plist_new_uint(d->location_id));
		plist_dict_set_item(p, "ProductID", plist_new_uint(d->product_id));
		plist_dict_set_item(p, "SerialNumber", plist_new_string(d->serial));
	}
	if (p && plist_dict_get_item(p, "DeviceID"))
		plist_dict_set_item(p, "DeviceID", plist_new_uint(d->id));
	return p;
}

static plist_t attached_dict(const struct umx_device *d)
{
	plist_t props = properties(d);
	if (!props)
		return NULL;
	plist_t a = plist_new_dict();
	plist_dict_set_item(a, "MessageType", plist_new_string("Attached"));
	plist_dict_set_item(a, "DeviceID", plist_new_uint(d->id));
	plist_dict_set_item(a, "Properties", props);
	return a;
}

int umx_encode_attached(uint32_t version, const struct umx_device *d, uint8_t **out, size_t *len)
{
	if (version == UMX_V_BINARY) {
		uint8_t rec[UMX_DEVREC_LEN] = { 0 };
		put_le32(rec, d->id);
		put_le16(rec + 4, d->product_id);
		memcpy(rec + 6, d->serial, strnlen(d->serial, UMX_SERIAL_MAX));
		put_le32(rec + 264, d->location_id);
		return frame(UMX_V_BINARY, UMX_MSG_DEVICE_ADD, 0, rec, sizeof(rec), out, len);
	}
	return encode_owned(0, attached_dict(d), out, len);
}

int umx_encode_device_list(uint32_t tag, const struct umx_device *devs, size_t n,
			   uint8_t **out, size_t *len)
{
	plist_t arr = plist_new_array();
	for (size_t i = 0; i < n; i++) {
		plist_t a = attached_dict(&devs[i]);
		if (!a) {
			plist_free(arr);
			return -ENOMEM;
		}
		plist_array_append_item(arr, a);
	}
	plist_t d = plist_new_dict();
	plist_dict_set_item(d, "DeviceList", arr);
	return encode_owned(tag, d, out, len);
}

int umx_encode_buid(uint32_t tag, const char *buid, uint8_t **out, size_t *len)
{
	plist_t d = plist_new_dict();
	plist_dict_set_item(d, "BUID", plist_new_string(buid));
	return encode_owned(tag, d, out, len);
}
