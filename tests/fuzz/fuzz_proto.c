/* libFuzzer target: the usbmuxd protocol module's decoders. The input is a
 * 16-byte header followed by a body; the low bit of the header's tag picks
 * the decoder (requests, as a client sends them, or replies and events, as
 * an upstream sends them). Whatever decodes is encoded again and must decode
 * to the same thing: the codec's encoders and decoders agree. Every decoded
 * request is routed against a small two-upstream table, and what the router
 * forwards must decode again as the same request type; routed strictly (the
 * helper's restricted tenants) with a filter of one phone, nothing that
 * concerns another phone, or no phone the router can name, is forwarded. */
#include "usbmuxd/router.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The broker's memo (kept across inputs, as the broker keeps it across
 * clients) gives what the codec gives, the first time and again. */
static struct umx_memo memo;

static void check_memo(const struct umx_hdr *h, const uint8_t *body, size_t blen, int rc,
		       const struct umx_request *plain)
{
	for (int pass = 0; pass < 2; pass++) {
		struct umx_request rq;
		int mrc = umx_request_decode_memo(&memo, h, body, blen, &rq);
		if (mrc != rc)
			abort();
		if (rc < 0)
			continue;
		if (rq.type != plain->type || rq.tag != plain->tag || rq.version != plain->version ||
		    rq.has_device_id != plain->has_device_id || rq.device_id != plain->device_id ||
		    rq.port != plain->port || rq.malformed != plain->malformed ||
		    rq.has_record_id != plain->has_record_id ||
		    strcmp(rq.record_id, plain->record_id) != 0 || !rq.dict != !plain->dict)
			abort();
		umx_request_free(&rq);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_event_round_trip(const struct umx_event *ev)
{
	uint8_t *m = NULL;
	size_t len = 0;
	int rc = -1;
	switch (ev->kind) {
	case UMX_EV_RESULT:
		rc = umx_encode_result(ev->version, ev->tag, ev->result, &m, &len);
		break;
	case UMX_EV_ATTACHED:
		rc = umx_encode_attached(ev->version, &ev->dev, &m, &len);
		break;
	case UMX_EV_DETACHED:
		rc = umx_encode_detached(ev->version, ev->device_id, &m, &len);
		break;
	case UMX_EV_DEVICE_LIST:
		rc = umx_encode_device_list(ev->tag, ev->list, ev->n, &m, &len);
		break;
	default:
		return;
	}
	if (rc < 0)
		return; /* a re-encoding larger than a message may be refused */
	struct umx_hdr h;
	struct umx_event back;
	if (umx_hdr_get_reply(m, &h) < 0 || h.length != len ||
	    umx_event_decode(&h, m + UMX_HDR_LEN, len - UMX_HDR_LEN, &back) < 0)
		abort();
	if (back.kind != ev->kind || back.n != ev->n || back.device_id != ev->device_id ||
	    (ev->kind == UMX_EV_RESULT && back.result != ev->result) ||
	    (ev->kind == UMX_EV_ATTACHED && strcmp(back.dev.serial, ev->dev.serial) != 0))
		abort();
	umx_event_free(&back);
	free(m);
}

static struct umx_table table;
static struct umx_filter filter;

static void setup_table(void)
{
	if (table.n)
		return;
	umx_table_init(&table);
	umx_filter_init(&filter);
	static const char *serials[] = { "phone-a", "phone-b", "phone-a" };
	for (unsigned i = 0; i < 3; i++) {
		struct umx_device d = { .id = 1 + i / 2, .network = i == 2 };
		strcpy(d.serial, serials[i]);
		const struct umx_entry *e;
		if (umx_table_attach(&table, i ? 1 : 0, &d, &e) < 0)
			abort();
	}
}

static void check_route(const struct umx_request *rq)
{
	static const char *buid[2] = { "BUID", NULL };
	struct router_view v = { &table, &filter, 2, buid, NULL, NULL };
	struct route r;
	if (route_request(&v, rq, &r) < 0)
		return;
	if (r.kind == ROUTE_FORWARD) {
		struct umx_hdr h;
		struct umx_request back;
		if (r.upstream >= 2 || umx_hdr_get(r.msg, &h) < 0 || h.length != r.len ||
		    umx_request_decode(&h, r.msg + UMX_HDR_LEN, r.len - UMX_HDR_LEN, &back) < 0 ||
		    back.type != rq->type || back.tag != rq->tag)
			abort();
		umx_request_free(&back);
	} else if (r.kind == ROUTE_ANSWER && (!r.msg || r.len < UMX_HDR_LEN)) {
		abort();
	}
	route_free(&r);
}

/* The helper's restricted tenants (route_request_strict), allowed phone-b
 * only: whatever is forwarded concerns phone-b, by what the table says. */
static void check_strict(const struct umx_request *rq)
{
	static struct umx_filter only_b;
	if (only_b.n == 0 && umx_filter_add_list(&only_b, "phone-b") < 0)
		abort();
	struct router_view v = { &table, &only_b, 2, NULL, NULL, NULL };
	struct route r;
	if (route_request_strict(&v, rq, &r) < 0)
		return;
	if (r.kind == ROUTE_FORWARD) {
		const struct umx_entry *e = umx_table_find(&table, rq->device_id);
		bool ok;
		switch (rq->type) {
		case UMX_REQ_CONNECT:
			ok = e && strcmp(e->dev.serial, "phone-b") == 0;
			break;
		case UMX_REQ_READ_PAIR_RECORD:
		case UMX_REQ_SAVE_PAIR_RECORD:
		case UMX_REQ_DELETE_PAIR_RECORD:
			ok = rq->has_record_id && strcasecmp(rq->record_id, "phone-b") == 0 &&
			     (!rq->has_device_id || !e || strcmp(e->dev.serial, "phone-b") == 0);
			break;
		case UMX_REQ_READ_BUID:
			ok = true; /* no BUID known here: asked of usbmuxd */
			break;
		default:
			ok = false;
		}
		if (!ok)
			abort();
	}
	route_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	setup_table();
	struct umx_hdr h;
	if (size < UMX_HDR_LEN || umx_hdr_get(data, &h) < 0)
		return 0;
	const uint8_t *body = data + UMX_HDR_LEN;
	size_t blen = size - UMX_HDR_LEN;
	if (h.tag & 1) {
		struct umx_event ev;
		if (umx_event_decode(&h, body, blen, &ev) == 0) {
			check_event_round_trip(&ev);
			umx_event_free(&ev);
		}
	} else {
		struct umx_request rq;
		int rc = umx_request_decode(&h, body, blen, &rq);
		if (rc == 0) {
			if (rq.type >= UMX_REQ_NTYPES || (rq.dict && rq.version != UMX_V_PLIST))
				abort();
			check_route(&rq);
			check_strict(&rq);
		}
		check_memo(&h, body, blen, rc, rc == 0 ? &rq : NULL);
		if (rc == 0)
			umx_request_free(&rq);
	}
	return 0;
}
