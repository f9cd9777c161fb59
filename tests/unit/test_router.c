#include "usbmuxd/router.h"
#include "unit.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct umx_table table;
static struct umx_filter filter;
static const char *buids[2];
static struct router_view view;

static void add(unsigned up, uint32_t id, const char *serial, bool network)
{
	struct umx_device d;
	memset(&d, 0, sizeof(d));
	d.id = id;
	d.network = network;
	snprintf(d.serial, sizeof(d.serial), "%s", serial);
	d.props = plist_new_dict();
	plist_dict_set_item(d.props, "ConnectionType", plist_new_string(network ? "Network" : "USB"));
	plist_dict_set_item(d.props, "DeviceID", plist_new_uint(id));
	plist_dict_set_item(d.props, "SerialNumber", plist_new_string(serial));
	const struct umx_entry *e;
	CU_ASSERT_EQUAL(umx_table_attach(&table, up, &d, &e), 0);
	umx_device_free(&d);
}

/* Two upstreams: A (0) has phone-a as 1; B (1) has phone-b as 1 (seen here
 * as UMX_REMAP_BASE) and phone-a over Wi-Fi as 2. */
static void setup(void)
{
	umx_table_free(&table);
	umx_table_init(&table);
	umx_filter_init(&filter);
	add(0, 1, "phone-a", false);
	add(1, 1, "phone-b", false);
	add(1, 2, "phone-a", true);
	buids[0] = buids[1] = NULL;
	view = (struct router_view){ &table, &filter, 2, buids, NULL, NULL };
}

static bool strict_mode; /* route_xml routes with route_request_strict */

static int route_xml(const char *inner, uint32_t tag, struct route *r)
{
	char xml[1024];
	int n = snprintf(xml, sizeof(xml), "<plist version=\"1.0\"><dict>%s</dict></plist>", inner);
	struct umx_hdr h = { (uint32_t)(UMX_HDR_LEN + n), UMX_V_PLIST, UMX_MSG_PLIST, tag };
	struct umx_request rq;
	int rc = umx_request_decode(&h, (const uint8_t *)xml, (size_t)n, &rq);
	CU_ASSERT_EQUAL_FATAL(rc, 0);
	rc = strict_mode ? route_request_strict(&view, &rq, r) : route_request(&view, &rq, r);
	umx_request_free(&rq);
	return rc;
}

/* Decodes a routed message the way its receiver would. */
static void decode_msg(const struct route *r, struct umx_event *ev)
{
	struct umx_hdr h;
	CU_ASSERT_EQUAL_FATAL(umx_hdr_get(r->msg, &h), 0);
	CU_ASSERT_EQUAL_FATAL(h.length, r->len);
	CU_ASSERT_EQUAL_FATAL(umx_event_decode(&h, r->msg + UMX_HDR_LEN, r->len - UMX_HDR_LEN, ev), 0);
}

static uint64_t dict_u(plist_t d, const char *k)
{
	uint64_t v = UINT64_MAX;
	plist_t n = plist_dict_get_item(d, k);
	if (n && plist_get_node_type(n) == PLIST_UINT)
		plist_get_uint_val(n, &v);
	return v;
}

static void list_devices_local_and_filtered(void)
{
	setup();
	struct route r;
	struct umx_event ev;
	CU_ASSERT_EQUAL(route_xml("<key>MessageType</key><string>ListDevices</string>", 5, &r), 0);
	CU_ASSERT_EQUAL(r.kind, ROUTE_ANSWER);
	CU_ASSERT(r.local && !r.close);
	decode_msg(&r, &ev);
	CU_ASSERT_EQUAL(ev.tag, 5);
	CU_ASSERT_EQUAL_FATAL(ev.n, 3);
	CU_ASSERT_EQUAL(ev.list[1].id, UMX_REMAP_BASE);
	/* Clients read either DeviceID: both carry the ID seen here. */
	CU_ASSERT_EQUAL(dict_u(ev.list[1].props, "DeviceID"), UMX_REMAP_BASE);
	umx_event_free(&ev);
	route_free(&r);

	CU_ASSERT_EQUAL(umx_filter_add_list(&filter, "phone-a"), 0);
	CU_ASSERT_EQUAL(umx_filter_set_conn(&filter, "usb"), 0);
	CU_ASSERT_EQUAL(route_xml("<key>MessageType</key><string>ListDevices</string>", 6, &r), 0);
	decode_msg(&r, &ev);
	CU_ASSERT_EQUAL_FATAL(ev.n, 1);
	CU_ASSERT_STRING_EQUAL(ev.list[0].serial, "phone-a");
	CU_ASSERT_FALSE(ev.list[0].network);
	umx_event_free(&ev);
	route_free(&r);
}

/* The reply a router without a cache gives now, under tag. */
static void list_uncached(uint32_t tag, struct route *r)
{
	struct route_list_cache *keep = view.list_cache;
	view.list_cache = NULL;
	CU_ASSERT_EQUAL(route_xml("<key>MessageType</key><string>ListDevices</string>", tag, r), 0);
	view.list_cache = keep;
}

/* A cached reply is byte for byte the fresh one under the request's tag,
 * and any change of the table or the filter shows in the next reply. */
static void list_devices_cache_follows_changes(void)
{
	setup();
	struct route_list_cache cache = { 0 };
	view.list_cache = &cache;
	struct route r, fresh;
	const char *ld = "<key>MessageType</key><string>ListDevices</string>";
	uint64_t gen = table.gen;
	/* Each step changes what is listed: attach, replace in place (the
	 * same ID, another serial), detach, a whole upstream gone, free. */
	for (int step = 0; step < 6; step++) {
		const uint8_t *kept = NULL;
		for (uint32_t tag = 10; tag < 13; tag++) { /* encode, then reuse twice */
			CU_ASSERT_EQUAL_FATAL(route_xml(ld, tag, &r), 0);
			CU_ASSERT_EQUAL(r.kind, ROUTE_ANSWER);
			CU_ASSERT(r.local && !r.close);
			list_uncached(tag, &fresh);
			CU_ASSERT_EQUAL_FATAL(r.len, fresh.len);
			CU_ASSERT(memcmp(r.msg, fresh.msg, r.len) == 0);
			route_free(&r);
			route_free(&fresh);
			if (tag == 10)
				kept = cache.msg;
			CU_ASSERT_PTR_NOT_NULL(cache.msg);
			CU_ASSERT(cache.msg == kept); /* reused, not encoded again */
		}
		uint32_t id;
		uint32_t ids[4];
		switch (step) {
		case 0:
			add(0, 7, "phone-c", false);
			break;
		case 1:
			add(0, 7, "phone-d", false);
			break;
		case 2:
			CU_ASSERT_EQUAL(umx_table_detach(&table, 0, 1, &id), 0);
			break;
		case 3:
			CU_ASSERT_EQUAL(umx_table_detach_upstream(&table, 1, ids, 4), 2);
			break;
		case 4:
			umx_table_free(&table); /* empty, and its gen moves on */
			break;
		case 5:
			break;
		}
		if (step < 5) {
			CU_ASSERT(table.gen > gen);
			gen = table.gen;
		}
	}
	/* Another filter (a helper's tenant) is not answered from this one's. */
	struct umx_filter other;
	umx_filter_init(&other);
	CU_ASSERT_EQUAL(umx_filter_add_list(&other, "phone-z"), 0);
	add(0, 1, "phone-a", false);
	CU_ASSERT_EQUAL(route_xml(ld, 20, &r), 0); /* cached for &filter */
	route_free(&r);
	view.filter = &other;
	struct umx_event ev;
	CU_ASSERT_EQUAL(route_xml(ld, 21, &r), 0);
	decode_msg(&r, &ev);
	CU_ASSERT_EQUAL(ev.n, 0);
	umx_event_free(&ev);
	route_free(&r);
	route_list_cache_free(&cache);
	CU_ASSERT_PTR_NULL(cache.msg);
	umx_table_free(&table);
}

static void connect_routed_and_rewritten(void)
{
	setup();
	struct route r;
	char req[256];
	snprintf(req, sizeof(req), "<key>MessageType</key><string>Connect</string><key>DeviceID</key>"
		 "<integer>%u</integer><key>PortNumber</key><integer>32498</integer>", UMX_REMAP_BASE);
	CU_ASSERT_EQUAL(route_xml(req, 9, &r), 0);
	CU_ASSERT_EQUAL(r.kind, ROUTE_FORWARD);
	CU_ASSERT_EQUAL(r.upstream, 1);
	CU_ASSERT_FALSE(r.local);
	struct umx_hdr h;
	CU_ASSERT_EQUAL_FATAL(umx_hdr_get(r.msg, &h), 0);
	struct umx_request fw;
	CU_ASSERT_EQUAL_FATAL(umx_request_decode(&h, r.msg + UMX_HDR_LEN, r.len - UMX_HDR_LEN, &fw), 0);
	CU_ASSERT_EQUAL(fw.type, UMX_REQ_CONNECT);
	CU_ASSERT_EQUAL(fw.tag, 9);
	CU_ASSERT_EQUAL(fw.device_id, 1); /* upstream B's own ID */
	CU_ASSERT_EQUAL(fw.port, 62078);
	umx_request_free(&fw);
	route_free(&r);

	/* Unknown device: usbmuxd's answer, without asking anyone. */
	struct umx_event ev;
	CU_ASSERT_EQUAL(route_xml("<key>MessageType</key><string>Connect</string><key>DeviceID</key>"
				  "<integer>77</integer><key>PortNumber</key><integer>32498</integer>", 3, &r), 0);
	CU_ASSERT_EQUAL(r.kind, ROUTE_ANSWER);
	decode_msg(&r, &ev);
	CU_ASSERT_EQUAL(ev.kind, UMX_EV_RESULT);
	CU_ASSERT_EQUAL(ev.result, UMX_RESULT_BADDEV);
	umx_event_free(&ev);
	route_free(&r);

	/* Filtered out: exactly the same answer as for a device that does not exist. */
	CU_ASSERT_EQUAL(umx_filter_add_list(&filter, "phone-a"), 0);
	CU_ASSERT_EQUAL(route_xml(req, 9, &r), 0);
	CU_ASSERT_EQUAL(r.kind, ROUTE_ANSWER);
	decode_msg(&r, &ev);
	CU_ASSERT_EQUAL(ev.result, UMX_RESULT_BADDEV);
	umx_event_free(&ev);
	route_free(&r);

	/* Binary (v0) Connect: rewritten in the binary record. */
	umx_filter_init(&filter);
	uint8_t c[UMX_V0_CONNECT_LEN] = { 0 };
	uint32_t id = UMX_REMAP_BASE;
	memcpy(c, &(uint8_t[4]){ (uint8_t)id, (uint8_t)(id >> 8), (uint8_t)(id >> 16), (uint8_t)(id >> 24) }, 4);
	c[4] = 0xf2;
	c[5] = 0x7e;
	struct umx_hdr h0 = { UMX_HDR_LEN + sizeof(c), UMX_V_BINARY, UMX_MSG_CONNECT, 4 };
	struct umx_request rq;
	CU_ASSERT_EQUAL_FATAL(umx_request_decode(&h0, c, sizeof(c), &rq), 0);
	CU_ASSERT_EQUAL(route_request(&view, &rq, &r), 0);
	CU_ASSERT_EQUAL(r.kind, ROUTE_FORWARD);
	CU_ASSERT_EQUAL(r.upstream, 1);
	CU_ASSERT_EQUAL_FATAL(r.len, UMX_HDR_LEN + UMX_V0_CONNECT_LEN);
	CU_ASSERT_EQUAL(r.msg[UMX_HDR_LEN], 1);
	CU_ASSERT_EQUAL(r.msg[UMX_HDR_LEN + 3], 0);
	CU_ASSERT_EQUAL(r.msg[UMX_HDR_LEN + 4], 0xf2);
	CU_ASSERT_EQUAL(r.msg[UMX_HDR_LEN + 5], 0x7e);
	route_free(&r);
}

static void pair_records(void)
{
	setup();
	struct route r;
	struct umx_event ev;
	/* phone-b is attached to B only: its record lives there. */
	CU_ASSERT_EQUAL(route_xml("<key>MessageType</key><string>ReadPairRecord</string>"
				  "<key>PairRecordID</key><string>phone-b</string>", 2, &r), 0);
	CU_ASSERT_EQUAL(r.kind, ROUTE_FORWARD);
	CU_ASSERT_EQUAL(r.upstream, 1);
	route_free(&r);
	/* Attached nowhere: the first upstream. */
	CU_ASSERT_EQUAL(route_xml("<key>MessageType</key><string>DeletePairRecord</string>"
				  "<key>PairRecordID</key><string>elsewhere</string>", 2, &r), 0);
	CU_ASSERT_EQUAL(r.kind, ROUTE_FORWARD);
	CU_ASSERT_EQUAL(r.upstream, 0);
	route_free(&r);
	/* SavePairRecord's DeviceID is mapped back to the owner's ID. */
	char req[512];
	snprintf(req, sizeof(req), "<key>MessageType</key><string>SavePairRecord</string>"
		 "<key>PairRecordID</key><string>phone-b</string><key>DeviceID</key><integer>%u</integer>"
		 "<key>PairRecordData</key><data>AAEC</data>", UMX_REMAP_BASE);
	CU_ASSERT_EQUAL(route_xml(req, 3, &r), 0);
	CU_ASSERT_EQUAL(r.upstream, 1);
	struct umx_hdr h;
	CU_ASSERT_EQUAL_FATAL(umx_hdr_get(r.msg, &h), 0);
	struct umx_request fw;
	CU_ASSERT_EQUAL_FATAL(umx_request_decode(&h, r.msg + UMX_HDR_LEN, r.len - UMX_HDR_LEN, &fw), 0);
	CU_ASSERT_EQUAL(fw.device_id, 1);
	CU_ASSERT_PTR_NOT_NULL(plist_dict_get_item(fw.dict, "PairRecordData"));
	umx_request_free(&fw);
	route_free(&r);
	/* Filtered out: a missing record, answered here. */
	CU_ASSERT_EQUAL(umx_filter_add_list(&filter, "phone-a"), 0);
	CU_ASSERT_EQUAL(route_xml("<key>MessageType</key><string>ReadPairRecord</string>"
				  "<key>PairRecordID</key><string>phone-b</string>", 2, &r), 0);
	CU_ASSERT_EQUAL(r.kind, ROUTE_ANSWER);
	decode_msg(&r, &ev);
	CU_ASSERT_EQUAL(ev.result, UMX_RESULT_NO_RECORD);
	umx_event_free(&ev);
	route_free(&r);
}

static void buid_listen_listeners_other(void)
{
	setup();
	struct route r;
	struct umx_event ev;
	CU_ASSERT_EQUAL(route_xml("<key>MessageType</key><string>ReadBUID</string>", 1, &r), 0);
	CU_ASSERT_EQUAL(r.kind, ROUTE_FORWARD); /* not known yet */
	CU_ASSERT_EQUAL(r.upstream, 0);
	route_free(&r);
	buids[0] = "BUID-OF-A";
	CU_ASSERT_EQUAL(route_xml("<key>MessageType</key><string>ReadBUID</string>", 1, &r), 0);
	CU_ASSERT_EQUAL(r.kind, ROUTE_ANSWER);
	decode_msg(&r, &ev);
	CU_ASSERT_EQUAL(ev.kind, UMX_EV_BUID);
	CU_ASSERT_STRING_EQUAL(ev.text, "BUID-OF-A");
	umx_event_free(&ev);
	route_free(&r);

	CU_ASSERT_EQUAL(route_xml("<key>MessageType</key><string>Listen</string>", 1, &r), 0);
	CU_ASSERT_EQUAL(r.kind, ROUTE_LISTEN);
	CU_ASSERT_PTR_NULL(r.msg);

	CU_ASSERT_EQUAL(route_xml("<key>MessageType</key><string>ListListeners</string>", 8, &r), 0);
	CU_ASSERT_EQUAL(r.kind, ROUTE_ANSWER);
	decode_msg(&r, &ev);
	plist_t ll = plist_dict_get_item(ev.dict, "ListenerList");
	CU_ASSERT_PTR_NOT_NULL(ll);
	CU_ASSERT_EQUAL(plist_array_get_size(ll), 0);
	umx_event_free(&ev);
	route_free(&r);

	CU_ASSERT_EQUAL(route_xml("<key>MessageType</key><string>NewThing</string><key>X</key><integer>1</integer>", 8, &r), 0);
	CU_ASSERT_EQUAL(r.kind, ROUTE_FORWARD);
	CU_ASSERT_EQUAL(r.upstream, 0);
	route_free(&r);
}

static const char *buid_answer(void)
{
	static char got[64];
	struct route r;
	struct umx_event ev;
	got[0] = '\0';
	CU_ASSERT_EQUAL_FATAL(route_xml("<key>MessageType</key><string>ReadBUID</string>", 3, &r), 0);
	if (r.kind == ROUTE_FORWARD) {
		snprintf(got, sizeof(got), "forward %u", r.upstream);
	} else {
		decode_msg(&r, &ev);
		snprintf(got, sizeof(got), "%s", ev.text);
		umx_event_free(&ev);
	}
	route_free(&r);
	return got;
}

/* A pairing client records the BUID it reads; the record is kept by the
 * phone's host: a client that can see phones of one host only gets that
 * host's BUID (or its question goes there), else the first known. */
static void buid_of_the_phones_host(void)
{
	setup();
	CU_ASSERT_STRING_EQUAL(buid_answer(), "forward 0"); /* phones on both, none known */
	buids[1] = "BUID-OF-B";
	CU_ASSERT_STRING_EQUAL(buid_answer(), "BUID-OF-B"); /* the first known */
	buids[0] = "BUID-OF-A";
	CU_ASSERT_STRING_EQUAL(buid_answer(), "BUID-OF-A");
	CU_ASSERT_EQUAL(umx_filter_add_list(&filter, "phone-b"), 0); /* only on B */
	CU_ASSERT_STRING_EQUAL(buid_answer(), "BUID-OF-B");
	buids[1] = NULL;
	CU_ASSERT_STRING_EQUAL(buid_answer(), "forward 1");
	umx_filter_init(&filter);
	CU_ASSERT_EQUAL(umx_filter_set_conn(&filter, "network"), 0); /* phone-a over Wi-Fi: B */
	CU_ASSERT_STRING_EQUAL(buid_answer(), "forward 1");
	CU_ASSERT_EQUAL(umx_filter_add_list(&filter, "phone-x"), 0); /* sees nothing */
	CU_ASSERT_STRING_EQUAL(buid_answer(), "BUID-OF-A");
}

static void versions(void)
{
	setup();
	struct route r;
	struct umx_request rq;
	struct umx_hdr h = { UMX_HDR_LEN, 2, UMX_MSG_PLIST, 6 };
	CU_ASSERT_EQUAL_FATAL(umx_request_decode(&h, NULL, 0, &rq), 0);
	CU_ASSERT_EQUAL(route_request(&view, &rq, &r), 0);
	CU_ASSERT_EQUAL(r.kind, ROUTE_ANSWER);
	CU_ASSERT(r.close);
	CU_ASSERT_EQUAL(r.msg[4], 0);              /* a binary reply */
	CU_ASSERT_EQUAL(r.msg[8], UMX_MSG_RESULT);
	CU_ASSERT_EQUAL(r.msg[UMX_HDR_LEN], UMX_RESULT_BADVERSION);
	route_free(&r);

	h = (struct umx_hdr){ UMX_HDR_LEN, UMX_V_BINARY, UMX_MSG_LISTEN, 6 };
	CU_ASSERT_EQUAL_FATAL(umx_request_decode(&h, NULL, 0, &rq), 0);
	CU_ASSERT_EQUAL(route_request(&view, &rq, &r), 0);
	CU_ASSERT_EQUAL(r.kind, ROUTE_LISTEN);
	h.message = 42;
	CU_ASSERT_EQUAL_FATAL(umx_request_decode(&h, NULL, 0, &rq), 0);
	CU_ASSERT_EQUAL(route_request(&view, &rq, &r), 0);
	CU_ASSERT_EQUAL(r.kind, ROUTE_ANSWER);
	CU_ASSERT_EQUAL(r.msg[UMX_HDR_LEN], UMX_RESULT_BADCOMMAND);
	route_free(&r);
	umx_table_free(&table);
}

static uint32_t answered(const char *inner, enum route_refusal why)
{
	struct route r;
	struct umx_event ev;
	uint32_t result = UINT32_MAX;
	CU_ASSERT_EQUAL_FATAL(route_xml(inner, 4, &r), 0);
	CU_ASSERT_EQUAL(r.kind, ROUTE_ANSWER);
	CU_ASSERT_EQUAL(r.refusal, why);
	if (r.kind == ROUTE_ANSWER) {
		decode_msg(&r, &ev);
		result = ev.result;
		umx_event_free(&ev);
	}
	route_free(&r);
	return result;
}

/* The helper's restricted tenants: what cannot be shown to be within the
 * filter is refused, and each refusal says why. */
static void strict_refusals(void)
{
	setup();
	CU_ASSERT_EQUAL(umx_filter_add_list(&filter, "phone-b"), 0);
	strict_mode = true;
	CU_ASSERT_EQUAL(answered("<key>MessageType</key><string>SomethingNew</string>",
				 ROUTE_REFUSED_COMMAND), UMX_RESULT_BADCOMMAND);
	CU_ASSERT_EQUAL(answered("<key>MessageType</key><string>ReadPairRecord</string>",
				 ROUTE_REFUSED_RECORD), UMX_RESULT_NO_RECORD);
	CU_ASSERT_EQUAL(answered("<key>MessageType</key><string>ReadPairRecord</string>"
				 "<key>PairRecordID</key><string>phone-a</string>",
				 ROUTE_REFUSED_RECORD), UMX_RESULT_NO_RECORD);
	/* Its own UDID, but phone-a's DeviceID (1 on upstream A). */
	CU_ASSERT_EQUAL(answered("<key>MessageType</key><string>SavePairRecord</string>"
				 "<key>PairRecordID</key><string>phone-b</string>"
				 "<key>DeviceID</key><integer>1</integer>"
				 "<key>PairRecordData</key><data>AAEC</data>",
				 ROUTE_REFUSED_RECORD), UMX_RESULT_NO_RECORD);
	CU_ASSERT_EQUAL(answered("<key>MessageType</key><string>Connect</string>"
				 "<key>DeviceID</key><integer>1</integer>"
				 "<key>PortNumber</key><integer>32498</integer>",
				 ROUTE_REFUSED_DEVICE), UMX_RESULT_BADDEV);
	/* Not attached at all: BADDEV too, but no device was hidden. */
	CU_ASSERT_EQUAL(answered("<key>MessageType</key><string>Connect</string>"
				 "<key>DeviceID</key><integer>77</integer>"
				 "<key>PortNumber</key><integer>32498</integer>",
				 ROUTE_REFUSED_NONE), UMX_RESULT_BADDEV);
	/* Its own device and record still go through. */
	struct route r;
	char req[256];
	snprintf(req, sizeof(req), "<key>MessageType</key><string>SavePairRecord</string>"
		 "<key>PairRecordID</key><string>phone-b</string><key>DeviceID</key>"
		 "<integer>%u</integer><key>PairRecordData</key><data>AAEC</data>", UMX_REMAP_BASE);
	CU_ASSERT_EQUAL(route_xml(req, 5, &r), 0);
	CU_ASSERT_EQUAL(r.kind, ROUTE_FORWARD);
	route_free(&r);
	/* Without strict, the unknown request and the record without an ID
	 * are forwarded, as before. */
	strict_mode = false;
	CU_ASSERT_EQUAL(route_xml("<key>MessageType</key><string>SomethingNew</string>", 6, &r), 0);
	CU_ASSERT_EQUAL(r.kind, ROUTE_FORWARD);
	route_free(&r);
	CU_ASSERT_EQUAL(route_xml("<key>MessageType</key><string>ReadPairRecord</string>", 6, &r), 0);
	CU_ASSERT_EQUAL(r.kind, ROUTE_FORWARD);
	route_free(&r);
	umx_table_free(&table);
}

int unit_router(void)
{
	static const struct unit_test t[] = {
		{ "ListDevices answered here, filtered", list_devices_local_and_filtered },
		{ "ListDevices reply cache: same bytes, stale on any change", list_devices_cache_follows_changes },
		{ "Connect routed to the owner, IDs mapped back", connect_routed_and_rewritten },
		{ "pair records go where the phone is", pair_records },
		{ "ReadBUID, Listen, ListListeners, unknown types", buid_listen_listeners_other },
		{ "ReadBUID: the BUID of the phones' host", buid_of_the_phones_host },
		{ "versions: 2 refused, v0 Listen/Connect only", versions },
		{ "strict (the helper's tenants): unknown, unnamed or hidden refused", strict_refusals },
		{ NULL, NULL },
	};
	return unit_add_suite("usbmuxd router", t);
}
