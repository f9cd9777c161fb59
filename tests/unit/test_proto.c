#include "usbmuxd/proto.h"
#include "unit.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Splits an encoded message into its checked header and body. */
static const uint8_t *split(const uint8_t *m, size_t len, struct umx_hdr *h)
{
	CU_ASSERT_FATAL(len >= UMX_HDR_LEN);
	CU_ASSERT_EQUAL_FATAL(umx_hdr_get(m, h), 0);
	CU_ASSERT_EQUAL_FATAL(h->length, len);
	return m + UMX_HDR_LEN;
}

static int decode_xml_request(const char *dict_body, uint32_t tag, struct umx_request *rq)
{
	char xml[1024];
	int n = snprintf(xml, sizeof(xml),
			 "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\">%s</plist>",
			 dict_body);
	struct umx_hdr h = { (uint32_t)(UMX_HDR_LEN + n), UMX_V_PLIST, UMX_MSG_PLIST, tag };
	return umx_request_decode(&h, (const uint8_t *)xml, (size_t)n, rq);
}

static void header_bounds(void)
{
	uint8_t b[UMX_HDR_LEN];
	struct umx_hdr h = { 16, 1, 8, 0xdeadbeef }, g;
	umx_hdr_put(b, &h);
	CU_ASSERT_EQUAL(b[0], 16);
	CU_ASSERT_EQUAL(b[12], 0xef); /* little-endian on the wire */
	CU_ASSERT_EQUAL(umx_hdr_get(b, &g), 0);
	CU_ASSERT_EQUAL(g.tag, 0xdeadbeef);
	h.length = 15;
	umx_hdr_put(b, &h);
	CU_ASSERT_EQUAL(umx_hdr_get(b, &g), -EMSGSIZE);
	h.length = UMX_MSG_MAX + 1;
	umx_hdr_put(b, &h);
	CU_ASSERT_EQUAL(umx_hdr_get(b, &g), -EMSGSIZE);
	h.length = UMX_MSG_MAX;
	umx_hdr_put(b, &h);
	CU_ASSERT_EQUAL(umx_hdr_get(b, &g), 0);
}

static void plist_requests(void)
{
	struct umx_request rq;
	CU_ASSERT_EQUAL(decode_xml_request("<dict><key>MessageType</key><string>ListDevices</string>"
					   "<key>ProgName</key><string>t</string></dict>", 7, &rq), 0);
	CU_ASSERT_EQUAL(rq.type, UMX_REQ_LIST_DEVICES);
	CU_ASSERT_EQUAL(rq.tag, 7);
	CU_ASSERT_PTR_NOT_NULL(rq.dict);
	umx_request_free(&rq);

	/* PortNumber is htons(62078) = 32498 on little-endian hosts. */
	CU_ASSERT_EQUAL(decode_xml_request("<dict><key>MessageType</key><string>Connect</string>"
					   "<key>DeviceID</key><integer>3</integer>"
					   "<key>PortNumber</key><integer>32498</integer></dict>", 1, &rq), 0);
	CU_ASSERT_EQUAL(rq.type, UMX_REQ_CONNECT);
	CU_ASSERT(rq.has_device_id);
	CU_ASSERT_EQUAL(rq.device_id, 3);
	CU_ASSERT_EQUAL(rq.port, 62078);
	umx_request_free(&rq);

	/* Incomplete Connects are still Connects, answered as usbmuxd does. */
	CU_ASSERT_EQUAL(decode_xml_request("<dict><key>MessageType</key><string>Connect</string>"
					   "<key>DeviceID</key><integer>3</integer></dict>", 1, &rq), 0);
	CU_ASSERT_EQUAL(rq.type, UMX_REQ_CONNECT);
	CU_ASSERT_EQUAL(rq.malformed, UMX_RESULT_BADCOMMAND);
	umx_request_free(&rq);
	CU_ASSERT_EQUAL(decode_xml_request("<dict><key>MessageType</key><string>Connect</string>"
					   "<key>PortNumber</key><integer>3</integer></dict>", 1, &rq), 0);
	CU_ASSERT_EQUAL(rq.malformed, UMX_RESULT_BADDEV);
	umx_request_free(&rq);

	CU_ASSERT_EQUAL(decode_xml_request("<dict><key>MessageType</key><string>ReadPairRecord</string>"
					   "<key>PairRecordID</key><string>00008030-0011</string></dict>",
					   2, &rq), 0);
	CU_ASSERT_EQUAL(rq.type, UMX_REQ_READ_PAIR_RECORD);
	CU_ASSERT(rq.has_record_id);
	CU_ASSERT_STRING_EQUAL(rq.record_id, "00008030-0011");
	umx_request_free(&rq);

	/* Forward compatibility: an unknown type is a request of type Other,
	 * even one longer than every known name. */
	CU_ASSERT_EQUAL(decode_xml_request("<dict><key>MessageType</key><string>"
					   "SomethingNewFromCupertinoWithALongName</string></dict>",
					   3, &rq), 0);
	CU_ASSERT_EQUAL(rq.type, UMX_REQ_OTHER);
	umx_request_free(&rq);

	CU_ASSERT_EQUAL(decode_xml_request("<dict><key>Nothing</key><string>x</string></dict>", 0, &rq),
			-EPROTO);
	CU_ASSERT_EQUAL(decode_xml_request("<array><string>ListDevices</string></array>", 0, &rq),
			-EPROTO);
	CU_ASSERT_EQUAL(decode_xml_request("<dict><key>MessageType</key><integer>3</integer></dict>",
					   0, &rq), -EPROTO);
	CU_ASSERT_EQUAL(decode_xml_request("not a plist", 0, &rq), -EPROTO);
	CU_ASSERT_PTR_NULL(rq.dict); /* nothing to free after a failure */
}

static void binary_requests(void)
{
	struct umx_request rq;
	uint8_t c[UMX_V0_CONNECT_LEN] = { 5, 0, 0, 0, 0xf2, 0x7e, 0, 0 };
	struct umx_hdr h = { UMX_HDR_LEN + sizeof(c), UMX_V_BINARY, UMX_MSG_CONNECT, 9 };
	CU_ASSERT_EQUAL(umx_request_decode(&h, c, sizeof(c), &rq), 0);
	CU_ASSERT_EQUAL(rq.type, UMX_REQ_CONNECT);
	CU_ASSERT_EQUAL(rq.device_id, 5);
	CU_ASSERT_EQUAL(rq.port, 62078);
	CU_ASSERT_EQUAL(rq.version, 0);
	CU_ASSERT_EQUAL(umx_request_decode(&h, c, 5, &rq), 0);
	CU_ASSERT_EQUAL(rq.malformed, UMX_RESULT_BADCOMMAND);

	h.message = UMX_MSG_LISTEN;
	CU_ASSERT_EQUAL(umx_request_decode(&h, NULL, 0, &rq), 0);
	CU_ASSERT_EQUAL(rq.type, UMX_REQ_LISTEN);
	h.message = 77;
	CU_ASSERT_EQUAL(umx_request_decode(&h, NULL, 0, &rq), 0);
	CU_ASSERT_EQUAL(rq.type, UMX_REQ_OTHER);
}

static void results_round_trip(void)
{
	for (uint32_t v = 0; v <= 1; v++) {
		uint8_t *m;
		size_t len;
		struct umx_hdr h;
		struct umx_event ev;
		CU_ASSERT_EQUAL_FATAL(umx_encode_result(v, 42, UMX_RESULT_BADDEV, &m, &len), 0);
		const uint8_t *body = split(m, len, &h);
		CU_ASSERT_EQUAL(h.version, v);
		CU_ASSERT_EQUAL(h.message, v ? UMX_MSG_PLIST : UMX_MSG_RESULT);
		CU_ASSERT_EQUAL(h.tag, 42);
		CU_ASSERT_EQUAL(umx_event_decode(&h, body, len - UMX_HDR_LEN, &ev), 0);
		CU_ASSERT_EQUAL(ev.kind, UMX_EV_RESULT);
		CU_ASSERT_EQUAL(ev.result, UMX_RESULT_BADDEV);
		CU_ASSERT_EQUAL(ev.tag, 42);
		umx_event_free(&ev);
		free(m);

		CU_ASSERT_EQUAL_FATAL(umx_encode_detached(v, 11, &m, &len), 0);
		body = split(m, len, &h);
		CU_ASSERT_EQUAL(h.tag, 0);
		CU_ASSERT_EQUAL(umx_event_decode(&h, body, len - UMX_HDR_LEN, &ev), 0);
		CU_ASSERT_EQUAL(ev.kind, UMX_EV_DETACHED);
		CU_ASSERT_EQUAL(ev.device_id, 11);
		umx_event_free(&ev);
		free(m);

		CU_ASSERT_EQUAL_FATAL(umx_encode_paired(v, 12, &m, &len), 0);
		body = split(m, len, &h);
		CU_ASSERT_EQUAL(umx_event_decode(&h, body, len - UMX_HDR_LEN, &ev), 0);
		CU_ASSERT_EQUAL(ev.kind, UMX_EV_PAIRED);
		CU_ASSERT_EQUAL(ev.device_id, 12);
		umx_event_free(&ev);
		free(m);
	}
}

static void make_device(struct umx_device *d, uint32_t id, const char *serial, bool network)
{
	memset(d, 0, sizeof(*d));
	d->id = id;
	d->product_id = 0x12a8;
	d->location_id = 0x1234;
	snprintf(d->serial, sizeof(d->serial), "%s", serial);
	d->props = plist_new_dict();
	plist_dict_set_item(d->props, "ConnectionSpeed", plist_new_uint(480000000));
	plist_dict_set_item(d->props, "ConnectionType", plist_new_string(network ? "Network" : "USB"));
	plist_dict_set_item(d->props, "DeviceID", plist_new_uint(id));
	plist_dict_set_item(d->props, "LocationID", plist_new_uint(d->location_id));
	plist_dict_set_item(d->props, "ProductID", plist_new_uint(d->product_id));
	plist_dict_set_item(d->props, "SerialNumber", plist_new_string(serial));
	if (network) {
		static const char sa[16] = { 16, 2 };
		plist_dict_set_item(d->props, "NetworkAddress", plist_new_data(sa, sizeof(sa)));
	}
	d->network = network;
}

static void attached_round_trip(void)
{
	struct umx_device d;
	make_device(&d, 4, "00008030-001A2B3C4D5E6F70", true);
	uint8_t *m;
	size_t len;
	struct umx_hdr h;
	struct umx_event ev;

	/* A device renumbered (as the aggregate does): both DeviceIDs change. */
	struct umx_device r;
	CU_ASSERT_EQUAL_FATAL(umx_device_copy(&r, &d), 0);
	r.id = 0x01000004;
	CU_ASSERT_EQUAL_FATAL(umx_encode_attached(UMX_V_PLIST, &r, &m, &len), 0);
	const uint8_t *body = split(m, len, &h);
	CU_ASSERT_EQUAL(umx_event_decode(&h, body, len - UMX_HDR_LEN, &ev), 0);
	CU_ASSERT_EQUAL(ev.kind, UMX_EV_ATTACHED);
	CU_ASSERT_EQUAL(ev.dev.id, 0x01000004);
	CU_ASSERT_STRING_EQUAL(ev.dev.serial, d.serial);
	CU_ASSERT(ev.dev.network);
	uint64_t inner = 0;
	plist_get_uint_val(plist_dict_get_item(ev.dev.props, "DeviceID"), &inner);
	CU_ASSERT_EQUAL(inner, 0x01000004);
	CU_ASSERT_PTR_NOT_NULL(plist_dict_get_item(ev.dev.props, "NetworkAddress"));
	umx_event_free(&ev);
	free(m);
	umx_device_free(&r);

	CU_ASSERT_EQUAL_FATAL(umx_encode_attached(UMX_V_BINARY, &d, &m, &len), 0);
	body = split(m, len, &h);
	CU_ASSERT_EQUAL(len, UMX_HDR_LEN + UMX_DEVREC_LEN);
	CU_ASSERT_EQUAL(h.message, UMX_MSG_DEVICE_ADD);
	CU_ASSERT_EQUAL(umx_event_decode(&h, body, len - UMX_HDR_LEN, &ev), 0);
	CU_ASSERT_EQUAL(ev.dev.id, 4);
	CU_ASSERT_EQUAL(ev.dev.product_id, 0x12a8);
	CU_ASSERT_EQUAL(ev.dev.location_id, 0x1234);
	CU_ASSERT_STRING_EQUAL(ev.dev.serial, d.serial);
	CU_ASSERT_PTR_NULL(ev.dev.props);
	umx_event_free(&ev);
	free(m);
	umx_device_free(&d);
}

static void device_list_round_trip(void)
{
	struct umx_device d[3];
	make_device(&d[0], 1, "serial-one", false);
	make_device(&d[1], 2, "serial-two", true);
	make_device(&d[2], 3, "serial-three", false);
	uint8_t *m;
	size_t len;
	struct umx_hdr h;
	struct umx_event ev;
	CU_ASSERT_EQUAL_FATAL(umx_encode_device_list(5, d, 3, &m, &len), 0);
	const uint8_t *body = split(m, len, &h);
	CU_ASSERT_EQUAL(umx_event_decode(&h, body, len - UMX_HDR_LEN, &ev), 0);
	CU_ASSERT_EQUAL(ev.kind, UMX_EV_DEVICE_LIST);
	CU_ASSERT_EQUAL_FATAL(ev.n, 3);
	for (int i = 0; i < 3; i++) {
		CU_ASSERT_EQUAL(ev.list[i].id, d[i].id);
		CU_ASSERT_STRING_EQUAL(ev.list[i].serial, d[i].serial);
		CU_ASSERT_EQUAL(ev.list[i].network, d[i].network);
	}
	umx_event_free(&ev);
	free(m);
	for (int i = 0; i < 3; i++)
		umx_device_free(&d[i]);

	/* An entry without a serial cannot be tracked: it is left out, the
	 * rest of the list stands. */
	char xml[] = "<plist version=\"1.0\"><dict><key>DeviceList</key><array><dict>"
		     "<key>MessageType</key><string>Attached</string><key>DeviceID</key><integer>1</integer>"
		     "<key>Properties</key><dict><key>DeviceID</key><integer>1</integer></dict>"
		     "</dict></array></dict></plist>";
	h = (struct umx_hdr){ (uint32_t)(UMX_HDR_LEN + strlen(xml)), 1, UMX_MSG_PLIST, 1 };
	CU_ASSERT_EQUAL(umx_event_decode(&h, (uint8_t *)xml, strlen(xml), &ev), 0);
	CU_ASSERT_EQUAL(ev.kind, UMX_EV_DEVICE_LIST);
	CU_ASSERT_EQUAL(ev.n, 0);
	CU_ASSERT_EQUAL(ev.skipped, 1);
	umx_event_free(&ev);
}

/* The exact reply of Debian's usbmuxd 1.1.1 to ListDevices with no device
 * (237 bytes with the header), captured from the real daemon. */
static void empty_list_matches_usbmuxd(void)
{
	static const char want[] =
		"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		"<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" "
		"\"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n"
		"<plist version=\"1.0\">\n<dict>\n\t<key>DeviceList</key>\n\t<array/>\n</dict>\n</plist>\n";
	uint8_t *m;
	size_t len;
	CU_ASSERT_EQUAL_FATAL(umx_encode_device_list(1, NULL, 0, &m, &len), 0);
	CU_ASSERT_EQUAL(len, 237);
	CU_ASSERT_EQUAL_FATAL(len - UMX_HDR_LEN, strlen(want));
	CU_ASSERT(memcmp(m + UMX_HDR_LEN, want, strlen(want)) == 0);
	free(m);
}

#define XML_HEAD "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist PUBLIC " \
	"\"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n" \
	"<plist version=\"1.0\">\n<dict>\n"

/* Result and BUID replies byte for byte as the real usbmuxd sent them. */
static void replies_match_usbmuxd(void)
{
	static const char result[] = XML_HEAD "\t<key>MessageType</key>\n\t<string>Result</string>\n"
				     "\t<key>Number</key>\n\t<integer>2</integer>\n</dict>\n</plist>\n";
	static const char buid[] = XML_HEAD "\t<key>BUID</key>\n"
				   "\t<string>41A8CD95-05A8-BB46-DE5F-BEEF1B3F056A</string>\n</dict>\n</plist>\n";
	uint8_t *m;
	size_t len;
	CU_ASSERT_EQUAL_FATAL(umx_encode_result(UMX_V_PLIST, 3, UMX_RESULT_BADDEV, &m, &len), 0);
	CU_ASSERT_EQUAL(len, 294);
	CU_ASSERT_EQUAL_FATAL(len - UMX_HDR_LEN, strlen(result));
	CU_ASSERT(memcmp(m + UMX_HDR_LEN, result, strlen(result)) == 0);
	free(m);
	CU_ASSERT_EQUAL_FATAL(umx_encode_buid(4, "41A8CD95-05A8-BB46-DE5F-BEEF1B3F056A", &m, &len), 0);
	CU_ASSERT_EQUAL(len, 276);
	CU_ASSERT_EQUAL_FATAL(len - UMX_HDR_LEN, strlen(buid));
	CU_ASSERT(memcmp(m + UMX_HDR_LEN, buid, strlen(buid)) == 0);
	free(m);
}

static void buid_and_other_replies(void)
{
	uint8_t *m;
	size_t len;
	struct umx_hdr h;
	struct umx_event ev;
	CU_ASSERT_EQUAL_FATAL(umx_encode_buid(8, "1D6B1D6B-0000-4000-8000-000000000001", &m, &len), 0);
	const uint8_t *body = split(m, len, &h);
	CU_ASSERT_EQUAL(umx_event_decode(&h, body, len - UMX_HDR_LEN, &ev), 0);
	CU_ASSERT_EQUAL(ev.kind, UMX_EV_BUID);
	CU_ASSERT_STRING_EQUAL(ev.text, "1D6B1D6B-0000-4000-8000-000000000001");
	umx_event_free(&ev);
	free(m);

	plist_t d = plist_new_dict();
	plist_dict_set_item(d, "PairRecordData", plist_new_data("abc", 3));
	CU_ASSERT_EQUAL_FATAL(umx_encode_plist(9, d, &m, &len), 0);
	plist_free(d);
	body = split(m, len, &h);
	CU_ASSERT_EQUAL(umx_event_decode(&h, body, len - UMX_HDR_LEN, &ev), 0);
	CU_ASSERT_EQUAL(ev.kind, UMX_EV_OTHER);
	CU_ASSERT_PTR_NOT_NULL(plist_dict_get_item(ev.dict, "PairRecordData"));
	umx_event_free(&ev);
	free(m);

	/* Version 2 does not exist: refused, not guessed at. */
	h = (struct umx_hdr){ UMX_HDR_LEN + 4, 2, UMX_MSG_RESULT, 0 };
	uint8_t zero[4] = { 0 };
	CU_ASSERT_EQUAL(umx_event_decode(&h, zero, 4, &ev), -EPROTO);
}

static size_t xml_request(char *out, size_t cap, const char *dict_body)
{
	int n = snprintf(out, cap,
			 "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\">%s</plist>",
			 dict_body);
	CU_ASSERT_FATAL(n > 0 && (size_t)n < cap);
	return (size_t)n;
}

/* The memo answers the same bytes with the same decode (the tag from the
 * header), keeps only the repeated kinds, stays bounded, and its dicts are
 * borrowed: freeing a request leaves them (ASan would see a double free). */
static void memo_same_bytes_same_decode(void)
{
	struct umx_memo m;
	memset(&m, 0, sizeof(m));
	char list[512], buid[512], conn[512], other[512];
	size_t nl = xml_request(list, sizeof(list), "<dict><key>MessageType</key><string>ListDevices"
				"</string><key>ProgName</key><string>t</string></dict>");
	size_t nb = xml_request(buid, sizeof(buid), "<dict><key>MessageType</key><string>ReadBUID"
				"</string></dict>");
	size_t nc = xml_request(conn, sizeof(conn), "<dict><key>MessageType</key><string>Connect"
				"</string><key>DeviceID</key><integer>7</integer><key>PortNumber"
				"</key><integer>32498</integer></dict>");
	struct umx_request rq, plain;
	for (uint32_t tag = 1; tag <= 5; tag++) {
		struct umx_hdr h = { (uint32_t)(UMX_HDR_LEN + nl), UMX_V_PLIST, UMX_MSG_PLIST, tag };
		CU_ASSERT_EQUAL(umx_request_decode_memo(&m, &h, (const uint8_t *)list, nl, &rq), 0);
		CU_ASSERT_EQUAL(umx_request_decode(&h, (const uint8_t *)list, nl, &plain), 0);
		CU_ASSERT_EQUAL(rq.type, UMX_REQ_LIST_DEVICES);
		CU_ASSERT_EQUAL(rq.tag, tag);
		CU_ASSERT_EQUAL(rq.version, plain.version);
		CU_ASSERT_EQUAL(rq.has_device_id, plain.has_device_id);
		CU_ASSERT_TRUE(rq.dict_borrowed);
		char *a = NULL, *b = NULL;
		uint32_t na = 0, nb2 = 0;
		plist_to_xml(rq.dict, &a, &na);
		plist_to_xml(plain.dict, &b, &nb2);
		CU_ASSERT_TRUE(a && b && na == nb2 && memcmp(a, b, na) == 0);
		free(a);
		free(b);
		umx_request_free(&rq);
		umx_request_free(&plain);
	}
	CU_ASSERT_EQUAL(m.misses, 1);
	CU_ASSERT_EQUAL(m.hits, 4);
	/* One byte different: decoded afresh (here: another request kind). */
	struct umx_hdr h = { (uint32_t)(UMX_HDR_LEN + nb), UMX_V_PLIST, UMX_MSG_PLIST, 9 };
	CU_ASSERT_EQUAL(umx_request_decode_memo(&m, &h, (const uint8_t *)buid, nb, &rq), 0);
	CU_ASSERT_EQUAL(rq.type, UMX_REQ_READ_BUID);
	umx_request_free(&rq);
	CU_ASSERT_EQUAL(m.misses, 2);
	/* A Connect is decoded each time, never kept: its dict is the
	 * caller's. */
	h = (struct umx_hdr){ (uint32_t)(UMX_HDR_LEN + nc), UMX_V_PLIST, UMX_MSG_PLIST, 10 };
	for (int i = 0; i < 2; i++) {
		CU_ASSERT_EQUAL(umx_request_decode_memo(&m, &h, (const uint8_t *)conn, nc, &rq), 0);
		CU_ASSERT_EQUAL(rq.type, UMX_REQ_CONNECT);
		CU_ASSERT_EQUAL(rq.device_id, 7);
		CU_ASSERT_FALSE(rq.dict_borrowed);
		umx_request_free(&rq);
	}
	CU_ASSERT_EQUAL(m.hits, 4);
	/* Many different bodies: the oldest are replaced, at most
	 * UMX_MEMO_SLOTS kept; the first one is decoded afresh again. */
	for (unsigned i = 0; i < 3 * UMX_MEMO_SLOTS; i++) {
		char body[160];
		snprintf(body, sizeof(body), "<dict><key>MessageType</key><string>ListDevices</string>"
			 "<key>ProgName</key><string>p%u</string></dict>", i);
		size_t n = xml_request(other, sizeof(other), body);
		h = (struct umx_hdr){ (uint32_t)(UMX_HDR_LEN + n), UMX_V_PLIST, UMX_MSG_PLIST, i };
		CU_ASSERT_EQUAL(umx_request_decode_memo(&m, &h, (const uint8_t *)other, n, &rq), 0);
		umx_request_free(&rq);
	}
	unsigned kept = 0;
	for (unsigned i = 0; i < UMX_MEMO_SLOTS; i++)
		kept += m.slot[i].body != NULL;
	CU_ASSERT_EQUAL(kept, UMX_MEMO_SLOTS);
	uint64_t misses = m.misses;
	h = (struct umx_hdr){ (uint32_t)(UMX_HDR_LEN + nl), UMX_V_PLIST, UMX_MSG_PLIST, 1 };
	CU_ASSERT_EQUAL(umx_request_decode_memo(&m, &h, (const uint8_t *)list, nl, &rq), 0);
	umx_request_free(&rq);
	CU_ASSERT_EQUAL(m.misses, misses + 1);
	/* What the codec refuses, the memo refuses: never kept. */
	static const char bad[] = "<?xml version=\"1.0\"?><plist><dict><key>MessageType</key>";
	h = (struct umx_hdr){ (uint32_t)(UMX_HDR_LEN + sizeof(bad) - 1), UMX_V_PLIST, UMX_MSG_PLIST, 2 };
	for (int i = 0; i < 2; i++)
		CU_ASSERT_TRUE(umx_request_decode_memo(&m, &h, (const uint8_t *)bad, sizeof(bad) - 1,
						       &rq) < 0);
	umx_memo_free(&m);
	for (unsigned i = 0; i < UMX_MEMO_SLOTS; i++)
		CU_ASSERT_PTR_NULL(m.slot[i].body);
}

int unit_proto(void)
{
	static const struct unit_test t[] = {
		{ "header bounds, little-endian", header_bounds },
		{ "plist requests", plist_requests },
		{ "binary (v0) requests", binary_requests },
		{ "Result, Detached, Paired in v0 and v1", results_round_trip },
		{ "Attached in v0 and v1, renumbered", attached_round_trip },
		{ "DeviceList round trip; entries need a serial", device_list_round_trip },
		{ "empty DeviceList as usbmuxd sends it", empty_list_matches_usbmuxd },
		{ "Result and BUID as usbmuxd sends them", replies_match_usbmuxd },
		{ "BUID and other replies", buid_and_other_replies },
		{ "request memo: same bytes, same decode; bounded", memo_same_bytes_same_decode },
		{ NULL, NULL },
	};
	return unit_add_suite("usbmuxd protocol", t);
}
