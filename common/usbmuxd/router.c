#include "usbmuxd/router.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int answer_result(struct route *r, uint32_t version, uint32_t tag, uint32_t number)
{
	r->kind = ROUTE_ANSWER;
	r->local = true;
	r->result = number;
	return umx_encode_result(version, tag, number, &r->msg, &r->len);
}

static bool list_cached(const struct router_view *v)
{
	const struct route_list_cache *c = v->list_cache;
	return c && c->msg && c->table == v->table && c->filter == v->filter &&
	       c->gen == v->table->gen;
}

/* The cached reply under this request's tag. */
static int list_reuse(const struct route_list_cache *c, uint32_t tag, struct route *r)
{
	uint8_t *m = malloc(c->len);
	if (!m)
		return -ENOMEM;
	memcpy(m, c->msg, c->len);
	struct umx_hdr h = { (uint32_t)c->len, UMX_V_PLIST, UMX_MSG_PLIST, tag };
	umx_hdr_put(m, &h);
	r->kind = ROUTE_ANSWER;
	r->local = true;
	r->msg = m;
	r->len = c->len;
	return 0;
}

/* Keeps a copy of a fresh reply (without one, the next is encoded anew). */
static void list_keep(const struct router_view *v, const struct route *r)
{
	struct route_list_cache *c = v->list_cache;
	route_list_cache_free(c);
	uint8_t *m = malloc(r->len);
	if (!m)
		return;
	memcpy(m, r->msg, r->len);
	*c = (struct route_list_cache){ v->table, v->filter, v->table->gen, m, r->len };
}

static int list_devices(const struct router_view *v, const struct umx_request *rq,
			struct route *r)
{
	const struct umx_table *t = v->table;
	if (list_cached(v))
		return list_reuse(v->list_cache, rq->tag, r);
	struct umx_device *vis = t->n ? malloc(t->n * sizeof(*vis)) : NULL;
	if (t->n && !vis)
		return -ENOMEM;
	size_t n = 0;
	for (size_t i = 0; i < t->n; i++)
		if (umx_filter_allows(v->filter, &t->e[i].dev))
			vis[n++] = t->e[i].dev; /* shallow: encoding only reads */
	r->kind = ROUTE_ANSWER;
	r->local = true;
	int rc = umx_encode_device_list(rq->tag, vis, n, &r->msg, &r->len);
	free(vis);
	if (rc == 0 && v->list_cache)
		list_keep(v, r);
	return rc;
}

static int encode_dict(struct route *r, plist_t d, uint32_t tag)
{
	if (!d)
		return -ENOMEM;
	int rc = umx_encode_plist(tag, d, &r->msg, &r->len);
	plist_free(d);
	return rc;
}

/* The request as the upstream must see it: its own DeviceID for ours. */
static int forward(struct route *r, const struct umx_request *rq, unsigned upstream,
		   const struct umx_entry *e)
{
	r->kind = ROUTE_FORWARD;
	r->upstream = upstream;
	if (rq->version == UMX_V_BINARY) { /* only Connect is forwarded in v0 */
		uint8_t b[UMX_V0_CONNECT_LEN] = { 0 };
		uint32_t id = e ? e->up_id : rq->device_id;
		b[0] = (uint8_t)id;
		b[1] = (uint8_t)(id >> 8);
		b[2] = (uint8_t)(id >> 16);
		b[3] = (uint8_t)(id >> 24);
		b[4] = (uint8_t)(rq->port >> 8); /* network order */
		b[5] = (uint8_t)rq->port;
		uint8_t *m = malloc(UMX_HDR_LEN + sizeof(b));
		if (!m)
			return -ENOMEM;
		struct umx_hdr h = { UMX_HDR_LEN + sizeof(b), UMX_V_BINARY, UMX_MSG_CONNECT, rq->tag };
		umx_hdr_put(m, &h);
		memcpy(m + UMX_HDR_LEN, b, sizeof(b));
		r->msg = m;
		r->len = UMX_HDR_LEN + sizeof(b);
		return 0;
	}
	plist_t d = plist_copy(rq->dict);
	if (d && e && rq->has_device_id)
		plist_dict_set_item(d, "DeviceID", plist_new_uint(e->up_id));
	int rc = encode_dict(r, d, rq->tag);
	if (rc == 0 && r->len > UMX_MSG_MAX) {
		/* Re-encoded as XML it would exceed what usbmuxd accepts. */
		route_free(r);
		rc = -EMSGSIZE;
	}
	return rc;
}

/* The host whose BUID a pairing client should record is the one that will
 * keep the pair record: the upstream of the phone. ReadBUID names no
 * phone, so: the upstream that holds every device this client may see
 * (a container limited to its phones, all on one host), else the first
 * upstream whose BUID is known (docs/BROKER.md, "Several upstreams"). */
static int read_buid(const struct router_view *v, const struct umx_request *rq, struct route *r)
{
	int owner = -1;
	for (size_t i = 0; i < v->table->n; i++) {
		const struct umx_entry *e = &v->table->e[i];
		if (!umx_filter_allows(v->filter, &e->dev))
			continue;
		if (owner >= 0 && (unsigned)owner != e->upstream) {
			owner = -2; /* on several upstreams */
			break;
		}
		owner = (int)e->upstream;
	}
	unsigned up = 0;
	if (owner >= 0 && (unsigned)owner < v->nupstreams) {
		up = (unsigned)owner;
	} else {
		for (unsigned i = 0; i < v->nupstreams; i++)
			if (v->buid && v->buid[i]) {
				up = i;
				break;
			}
	}
	if (v->buid && v->buid[up]) {
		r->kind = ROUTE_ANSWER;
		r->local = true;
		return umx_encode_buid(rq->tag, v->buid[up], &r->msg, &r->len);
	}
	return forward(r, rq, up, NULL);
}

static int route_connect(const struct router_view *v, const struct umx_request *rq, struct route *r)
{
	if (rq->malformed)
		return answer_result(r, rq->version, rq->tag, rq->malformed);
	const struct umx_entry *e = umx_table_find(v->table, rq->device_id);
	if (!e || !umx_filter_allows(v->filter, &e->dev)) {
		r->refusal = e ? ROUTE_REFUSED_DEVICE : ROUTE_REFUSED_NONE;
		return answer_result(r, rq->version, rq->tag, UMX_RESULT_BADDEV);
	}
	return forward(r, rq, e->upstream, e);
}

static int pair_record(const struct router_view *v, bool strict, const struct umx_request *rq,
		       struct route *r)
{
	if ((rq->has_record_id && !umx_filter_allows_udid(v->filter, rq->record_id)) ||
	    (strict && !rq->has_record_id)) {
		r->refusal = ROUTE_REFUSED_RECORD;
		return answer_result(r, rq->version, rq->tag, UMX_RESULT_NO_RECORD);
	}
	/* Pair records live per host: the one the phone hangs off. */
	const struct umx_entry *e = rq->has_record_id ? umx_table_find_serial(v->table, rq->record_id)
						      : NULL;
	/* SavePairRecord names the device by our DeviceID too: map it back
	 * when it is that same device. */
	const struct umx_entry *by_id = rq->has_device_id ? umx_table_find(v->table, rq->device_id)
							  : NULL;
	if (strict && by_id && !umx_filter_allows(v->filter, &by_id->dev)) {
		r->refusal = ROUTE_REFUSED_RECORD;
		return answer_result(r, rq->version, rq->tag, UMX_RESULT_NO_RECORD);
	}
	unsigned up = e ? e->upstream : by_id ? by_id->upstream : 0;
	if (by_id && by_id->upstream != up)
		by_id = NULL;
	return forward(r, rq, up, by_id);
}

static int route(const struct router_view *v, bool strict, const struct umx_request *rq,
		 struct route *r)
{
	memset(r, 0, sizeof(*r));
	if (rq->version > UMX_V_PLIST) {
		/* usbmuxd: a binary BADVERSION, then the connection closes. */
		r->close = true;
		return answer_result(r, UMX_V_BINARY, rq->tag, UMX_RESULT_BADVERSION);
	}
	if (rq->version == UMX_V_BINARY) {
		if (rq->type == UMX_REQ_LISTEN) {
			r->kind = ROUTE_LISTEN;
			r->local = true;
			return 0;
		}
		if (rq->type == UMX_REQ_CONNECT)
			return route_connect(v, rq, r);
		return answer_result(r, UMX_V_BINARY, rq->tag, UMX_RESULT_BADCOMMAND);
	}
	if (rq->message != UMX_MSG_PLIST)
		return answer_result(r, UMX_V_PLIST, rq->tag, UMX_RESULT_BADCOMMAND);
	switch (rq->type) {
	case UMX_REQ_LIST_DEVICES:
		return list_devices(v, rq, r);
	case UMX_REQ_LISTEN:
		r->kind = ROUTE_LISTEN;
		r->local = true;
		return 0;
	case UMX_REQ_CONNECT:
		return route_connect(v, rq, r);
	case UMX_REQ_READ_BUID:
		return read_buid(v, rq, r);
	case UMX_REQ_LIST_LISTENERS: {
		plist_t d = plist_new_dict();
		plist_dict_set_item(d, "ListenerList",
				    v->listeners ? plist_copy(v->listeners) : plist_new_array());
		r->kind = ROUTE_ANSWER;
		r->local = true;
		return encode_dict(r, d, rq->tag);
	}
	case UMX_REQ_READ_PAIR_RECORD:
	case UMX_REQ_SAVE_PAIR_RECORD:
	case UMX_REQ_DELETE_PAIR_RECORD:
		return pair_record(v, strict, rq, r);
	default:
		if (strict) {
			r->refusal = ROUTE_REFUSED_COMMAND;
			return answer_result(r, UMX_V_PLIST, rq->tag, UMX_RESULT_BADCOMMAND);
		}
		return forward(r, rq, 0, NULL);
	}
}

int route_request(const struct router_view *v, const struct umx_request *rq, struct route *r)
{
	return route(v, false, rq, r);
}

int route_request_strict(const struct router_view *v, const struct umx_request *rq,
			 struct route *r)
{
	return route(v, true, rq, r);
}

void route_free(struct route *r)
{
	free(r->msg);
	r->msg = NULL;
	r->len = 0;
}

void route_list_cache_free(struct route_list_cache *c)
{
	free(c->msg);
	memset(c, 0, sizeof(*c));
}
