#include "usbmuxd/plist_guard.h"
#include "unit.h"

#include <errno.h>
#include <plist/plist.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- a small bplist00 writer for hostile shapes ---------------------------
 * Objects are appended in index order; references are 1 or 2 bytes, offsets
 * 4 bytes (fine for anything below 4 GiB). */

#define W_MAX (1 << 20)

struct bw {
	uint8_t *p;
	size_t len;
	uint32_t offs[64];
	unsigned nobj;
	unsigned ref;
};

static void bw_init(struct bw *w, unsigned ref)
{
	w->p = malloc(W_MAX);
	memcpy(w->p, "bplist00", 8);
	w->len = 8;
	w->nobj = 0;
	w->ref = ref;
}

static void put_be(uint8_t *p, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
}

static unsigned bw_obj(struct bw *w)
{
	w->offs[w->nobj] = (uint32_t)w->len;
	return w->nobj++;
}

static void bw_marker(struct bw *w, unsigned type, uint64_t count)
{
	if (count < 15) {
		w->p[w->len++] = (uint8_t)(type << 4 | count);
		return;
	}
	w->p[w->len++] = (uint8_t)(type << 4 | 0xf);
	w->p[w->len++] = 0x12; /* a 4-byte length */
	put_be(w->p + w->len, count, 4);
	w->len += 4;
}

static unsigned bw_str(struct bw *w, const char *s)
{
	unsigned i = bw_obj(w);
	bw_marker(w, 0x5, strlen(s));
	memcpy(w->p + w->len, s, strlen(s));
	w->len += strlen(s);
	return i;
}

static unsigned bw_true(struct bw *w)
{
	unsigned i = bw_obj(w);
	w->p[w->len++] = 0x09;
	return i;
}

/* An array of n references, all to target. */
static unsigned bw_array_of(struct bw *w, uint64_t n, unsigned target)
{
	unsigned i = bw_obj(w);
	bw_marker(w, 0xA, n);
	for (uint64_t k = 0; k < n; k++, w->len += w->ref)
		put_be(w->p + w->len, target, w->ref);
	return i;
}

static unsigned bw_dict1(struct bw *w, unsigned key, unsigned val)
{
	unsigned i = bw_obj(w);
	bw_marker(w, 0xD, 1);
	put_be(w->p + w->len, key, w->ref);
	put_be(w->p + w->len + w->ref, val, w->ref);
	w->len += 2 * w->ref;
	return i;
}

/* Offset table and trailer; returns the body length. */
static size_t bw_finish(struct bw *w, unsigned root)
{
	size_t table = w->len;
	for (unsigned i = 0; i < w->nobj; i++, w->len += 4)
		put_be(w->p + w->len, w->offs[i], 4);
	memset(w->p + w->len, 0, 6);
	w->p[w->len + 6] = 4;
	w->p[w->len + 7] = (uint8_t)w->ref;
	put_be(w->p + w->len + 8, w->nobj, 8);
	put_be(w->p + w->len + 16, root, 8);
	put_be(w->p + w->len + 24, table, 8);
	w->len += 32;
	return w->len;
}

/* The attack of issue 17: a request dict whose value is an array of k
 * references to a second array of k references to one object: about
 * k^2 nodes for 2k bytes. Sized to `size` bytes. */
static size_t amplifying(struct bw *w, size_t size)
{
	bw_init(w, 1);
	unsigned t = bw_true(w);
	/* header, true, two array headers, the key, the dict, offsets, trailer */
	size_t fixed = 8 + 1 + 2 * 6 + 12 + 3 + 5 * 4 + 32;
	uint64_t k = (size - fixed) / 2;
	unsigned b = bw_array_of(w, k, t);
	unsigned a = bw_array_of(w, size - fixed - k, b);
	unsigned key = bw_str(w, "ListDevices");
	unsigned root = bw_dict1(w, key, a);
	(void)root;
	/* MessageType is absent: the shape matters, not the request. */
	return bw_finish(w, root);
}

static void amplifying_refused_at_4k_and_64k(void)
{
	size_t sizes[] = { 4056, 65520 };
	for (unsigned i = 0; i < 2; i++) {
		struct bw w;
		size_t n = amplifying(&w, sizes[i]);
		CU_ASSERT_EQUAL(n, sizes[i]);
		struct umx_plist_report r;
		CU_ASSERT_EQUAL(umx_plist_check(w.p, n, &r), -E2BIG);
		CU_ASSERT_PTR_NOT_NULL(r.why);
		free(w.p);
	}
}

/* Sharing leaves (what libplist's and Apple's writers do with keys) is
 * fine; sharing one container a few times within the node budget is too. */
static void modest_sharing_passes(void)
{
	struct bw w;
	bw_init(&w, 1);
	unsigned t = bw_true(&w);
	unsigned b = bw_array_of(&w, 3, t);
	unsigned a = bw_array_of(&w, 3, b);
	size_t n = bw_finish(&w, a);
	struct umx_plist_report r;
	CU_ASSERT_EQUAL(umx_plist_check(w.p, n, &r), 0);
	CU_ASSERT_EQUAL(r.nodes, 1 + 3 * (1 + 3));
	CU_ASSERT_EQUAL(r.depth, 3);
	plist_t p = NULL;
	plist_from_memory((const char *)w.p, (uint32_t)n, &p);
	CU_ASSERT_PTR_NOT_NULL(p);
	plist_free(p);
	free(w.p);
}

/* Doubling at every level: 2^40 nodes in a few hundred bytes. The
 * saturating totals and the depth bound both stop it. */
static void exponential_chain_refused(void)
{
	for (unsigned levels = 20; levels <= 40; levels += 20) {
		struct bw w;
		bw_init(&w, 1);
		unsigned prev = bw_true(&w);
		for (unsigned i = 0; i < levels; i++)
			prev = bw_array_of(&w, 2, prev);
		size_t n = bw_finish(&w, prev);
		int rc = umx_plist_check(w.p, n, NULL);
		CU_ASSERT(rc == -E2BIG || rc == -ELOOP);
		free(w.p);
	}
}

static void cycles_refused(void)
{
	struct bw w;
	bw_init(&w, 1);
	unsigned a = bw_array_of(&w, 1, 0); /* contains itself */
	size_t n = bw_finish(&w, a);
	CU_ASSERT_EQUAL(umx_plist_check(w.p, n, NULL), -ELOOP);
	free(w.p);

	bw_init(&w, 1);
	bw_array_of(&w, 2, 1);        /* 0 -> 1 */
	bw_array_of(&w, 1, 2);        /* 1 -> 2 */
	bw_array_of(&w, 1, 0);        /* 2 -> 0 */
	n = bw_finish(&w, 0);
	CU_ASSERT_EQUAL(umx_plist_check(w.p, n, NULL), -ELOOP);
	free(w.p);
}

static void depth_bounded(void)
{
	for (unsigned levels = UMX_PLIST_MAX_DEPTH - 1; levels <= UMX_PLIST_MAX_DEPTH; levels++) {
		struct bw w;
		bw_init(&w, 1);
		unsigned prev = bw_true(&w);
		for (unsigned i = 0; i < levels; i++)
			prev = bw_array_of(&w, 1, prev);
		size_t n = bw_finish(&w, prev);
		/* levels arrays plus the leaf: depth levels + 1. */
		CU_ASSERT_EQUAL(umx_plist_check(w.p, n, NULL),
				levels + 1 <= UMX_PLIST_MAX_DEPTH ? 0 : -ELOOP);
		free(w.p);
	}
}

/* A valid little plist, then every kind of broken header or reference. */
static size_t small_valid(struct bw *w)
{
	bw_init(w, 1);
	unsigned k = bw_str(w, "MessageType");
	unsigned v = bw_str(w, "ListDevices");
	return bw_finish(w, bw_dict1(w, k, v));
}

static void bad_structure_refused(void)
{
	struct bw w;
	size_t n = small_valid(&w);
	uint8_t *p = w.p;
	CU_ASSERT_EQUAL(umx_plist_check(p, n, NULL), 0);
	size_t t = n - 32;
	uint8_t save[32];
	memcpy(save, p + t, 32);
#define RESTORE() memcpy(p + t, save, 32)
	/* truncated trailers: every shorter length */
	for (size_t cut = 1; cut <= 40 && cut < n; cut++)
		CU_ASSERT_NOT_EQUAL(umx_plist_check(p, n - cut, NULL), 0);
	/* huge object count, top object beyond it, table outside */
	put_be(p + t + 8, UINT64_MAX, 8);
	CU_ASSERT_EQUAL(umx_plist_check(p, n, NULL), -EBADMSG);
	RESTORE();
	put_be(p + t + 16, 3, 8);
	CU_ASSERT_EQUAL(umx_plist_check(p, n, NULL), -EBADMSG);
	RESTORE();
	put_be(p + t + 24, n, 8);
	CU_ASSERT_EQUAL(umx_plist_check(p, n, NULL), -EBADMSG);
	RESTORE();
	put_be(p + t + 24, 2, 8);
	CU_ASSERT_EQUAL(umx_plist_check(p, n, NULL), -EBADMSG);
	RESTORE();
	p[t + 6] = 0;
	CU_ASSERT_EQUAL(umx_plist_check(p, n, NULL), -EBADMSG);
	RESTORE();
	p[t + 7] = 9;
	CU_ASSERT_EQUAL(umx_plist_check(p, n, NULL), -EBADMSG);
	RESTORE();
	/* an object offset into the trailer, into the header */
	size_t table = (size_t)(save[31] | save[30] << 8);
	put_be(p + table, n - 8, 4);
	CU_ASSERT_EQUAL(umx_plist_check(p, n, NULL), -EBADMSG);
	put_be(p + table, 2, 4);
	CU_ASSERT_EQUAL(umx_plist_check(p, n, NULL), -EBADMSG);
	put_be(p + table, 8, 4);
	CU_ASSERT_EQUAL(umx_plist_check(p, n, NULL), 0);
	/* a dict referencing an object that does not exist */
	size_t dict = w.offs[2];
	p[dict + 1] = 7;
	CU_ASSERT_EQUAL(umx_plist_check(p, n, NULL), -EBADMSG);
	p[dict + 1] = 0;
	/* a key that is not a string: the dict itself */
	p[dict + 1] = 2;
	CU_ASSERT_EQUAL(umx_plist_check(p, n, NULL), -ELOOP);
	p[dict + 1] = 0;
	/* a string whose length runs into the offset table, a huge count */
	p[w.offs[1]] = 0x5e;
	CU_ASSERT_EQUAL(umx_plist_check(p, n, NULL), 0);
	p[w.offs[1]] = 0x5f;
	CU_ASSERT_EQUAL(umx_plist_check(p, n, NULL), -EBADMSG);
	CU_ASSERT_EQUAL(umx_plist_check(p, 8, NULL), -EBADMSG);
#undef RESTORE
	free(w.p);

	/* a UTF-16 key holding U+0000 (fuzz_plist find: libplist's key getter
	 * aborts on it) */
	bw_init(&w, 1);
	unsigned u = bw_obj(&w);
	bw_marker(&w, 0x6, 2);
	memcpy(w.p + w.len, "\0A\0\0", 4);
	w.len += 4;
	unsigned tv = bw_true(&w);
	n = bw_finish(&w, bw_dict1(&w, u, tv));
	CU_ASSERT_EQUAL(umx_plist_check(w.p, n, NULL), -EBADMSG);
	w.p[w.offs[0] + 4] = 'B';
	CU_ASSERT_EQUAL(umx_plist_check(w.p, n, NULL), 0);
	free(w.p);

	/* an array claiming 2^32-1 references */
	bw_init(&w, 1);
	unsigned a = bw_obj(&w);
	bw_marker(&w, 0xA, 0xffffffffu);
	n = bw_finish(&w, a);
	CU_ASSERT_EQUAL(umx_plist_check(w.p, n, NULL), -EBADMSG);
	free(w.p);
}

/* ---- real requests, as clients send them and as binary plists ------------ */

static char *xml_request(const char *type, const char *extra)
{
	static char buf[16384];
	snprintf(buf, sizeof(buf),
		 "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		 "<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" "
		 "\"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n"
		 "<plist version=\"1.0\">\n<dict>\n"
		 "\t<key>ClientVersionString</key>\n\t<string>libusbmuxd 2.0.2</string>\n"
		 "\t<key>MessageType</key>\n\t<string>%s</string>\n"
		 "\t<key>ProgName</key>\n\t<string>idevice_id</string>\n"
		 "\t<key>kLibUSBMuxVersion</key>\n\t<integer>3</integer>\n%s"
		 "</dict>\n</plist>\n", type, extra);
	return buf;
}

/* A pair record the size of a real one (~3 KB): certificates and keys as
 * data, as SavePairRecord carries it (itself a binary plist inside data). */
static plist_t pair_record(void)
{
	plist_t d = plist_new_dict();
	const char *keys[] = { "DeviceCertificate", "HostCertificate", "HostPrivateKey",
			       "RootCertificate", "RootPrivateKey" };
	uint8_t blob[600];
	for (size_t i = 0; i < sizeof(blob); i++)
		blob[i] = (uint8_t)(i * 7);
	for (unsigned i = 0; i < 5; i++)
		plist_dict_set_item(d, keys[i], plist_new_data((const char *)blob, sizeof(blob)));
	plist_dict_set_item(d, "HostID", plist_new_string("6E1F4A0C-9B3D-4C57-8E2A-1D0F3B5C7A9E"));
	plist_dict_set_item(d, "SystemBUID", plist_new_string("5B2C8D1E-3F4A-4B6C-9D7E-8F0A1B2C3D4E"));
	plist_dict_set_item(d, "WiFiMACAddress", plist_new_string("aa:bb:cc:dd:ee:ff"));
	plist_dict_set_item(d, "EscrowBag", plist_new_data((const char *)blob, 96));
	return d;
}

static void check_both_forms(const char *xml)
{
	struct umx_plist_report r;
	CU_ASSERT_EQUAL(umx_plist_check((const uint8_t *)xml, strlen(xml), &r), 0);
	plist_t p = NULL;
	plist_from_xml(xml, (uint32_t)strlen(xml), &p);
	CU_ASSERT_PTR_NOT_NULL_FATAL(p);
	char *bin = NULL;
	uint32_t blen = 0;
	plist_to_bin(p, &bin, &blen); /* libplist's writer shares equal strings */
	int rc = umx_plist_check((const uint8_t *)bin, blen, &r);
	CU_ASSERT_EQUAL(rc, 0);
	if (rc)
		fprintf(stderr, "refused (%s) a %u-byte binary form\n", r.why, blen);
	free(bin);
	plist_free(p);
}

static void real_requests_pass(void)
{
	check_both_forms(xml_request("ListDevices", ""));
	check_both_forms(xml_request("ReadBUID", ""));
	check_both_forms(xml_request("Listen", ""));
	check_both_forms(xml_request("Connect", "\t<key>DeviceID</key>\n\t<integer>3</integer>\n"
						"\t<key>PortNumber</key>\n\t<integer>32498</integer>\n"));
	check_both_forms(xml_request("ReadPairRecord",
				     "\t<key>PairRecordID</key>\n"
				     "\t<string>00008030-001A2B3C4D5E6F70</string>\n"));

	/* SavePairRecord: the record as a binary plist inside <data>. */
	plist_t rec = pair_record();
	char *rbin = NULL;
	uint32_t rlen = 0;
	plist_to_bin(rec, &rbin, &rlen);
	CU_ASSERT(rlen > 2500);
	CU_ASSERT_EQUAL(umx_plist_check((const uint8_t *)rbin, rlen, NULL), 0);
	plist_t req = plist_new_dict();
	plist_dict_set_item(req, "MessageType", plist_new_string("SavePairRecord"));
	plist_dict_set_item(req, "PairRecordID", plist_new_string("00008030-001A2B3C4D5E6F70"));
	plist_dict_set_item(req, "DeviceID", plist_new_uint(3));
	plist_dict_set_item(req, "PairRecordData", plist_new_data(rbin, rlen));
	char *xml = NULL;
	uint32_t xlen = 0;
	plist_to_xml(req, &xml, &xlen);
	check_both_forms(xml);
	free(xml);
	free(rbin);
	plist_free(req);
	plist_free(rec);
}

/* A reply the size of a busy host's device list: the same keys shared by
 * every entry, as libplist's writer does. */
static void device_list_passes(void)
{
	plist_t list = plist_new_array();
	for (unsigned i = 0; i < 40; i++) {
		plist_t props = plist_new_dict();
		char serial[48];
		snprintf(serial, sizeof(serial), "00008030-%016X", i * 7919u);
		plist_dict_set_item(props, "ConnectionSpeed", plist_new_uint(480000000));
		plist_dict_set_item(props, "ConnectionType", plist_new_string("USB"));
		plist_dict_set_item(props, "DeviceID", plist_new_uint(i + 1));
		plist_dict_set_item(props, "LocationID", plist_new_uint(0));
		plist_dict_set_item(props, "ProductID", plist_new_uint(0x12a8));
		plist_dict_set_item(props, "SerialNumber", plist_new_string(serial));
		plist_t dev = plist_new_dict();
		plist_dict_set_item(dev, "DeviceID", plist_new_uint(i + 1));
		plist_dict_set_item(dev, "MessageType", plist_new_string("Attached"));
		plist_dict_set_item(dev, "Properties", props);
		plist_array_append_item(list, dev);
	}
	plist_t d = plist_new_dict();
	plist_dict_set_item(d, "DeviceList", list);
	char *bin = NULL;
	uint32_t blen = 0;
	plist_to_bin(d, &bin, &blen);
	struct umx_plist_report r;
	CU_ASSERT_EQUAL(umx_plist_check((const uint8_t *)bin, blen, &r), 0);
	CU_ASSERT(r.nodes <= blen);
	free(bin);
	plist_free(d);
}

static void xml_bounds(void)
{
	char *x = xml_request("ListDevices", "");
	size_t n = strlen(x);
	/* A C string's terminator after the document is tolerated... */
	char buf[20000];
	memcpy(buf, x, n);
	buf[n] = 0;
	CU_ASSERT_EQUAL(umx_plist_check((const uint8_t *)buf, n + 1, NULL), 0);
	/* ...a NUL inside it is not (libplist 2.2 then aborts usbmuxd). */
	char *mt = strstr(buf, "ListDevices");
	mt[4] = 0;
	CU_ASSERT_EQUAL(umx_plist_check((const uint8_t *)buf, n, NULL), -EBADMSG);

	/* Containers and keys: at the limit, then one past it. */
	for (unsigned extra = 0; extra <= 1; extra++) {
		size_t m = (size_t)snprintf(buf, sizeof(buf), "<plist><array>");
		for (unsigned i = 1; i < UMX_PLIST_XML_MAX_CONTAINERS + extra; i++)
			m += (size_t)snprintf(buf + m, sizeof(buf) - m, "<dict/>");
		m += (size_t)snprintf(buf + m, sizeof(buf) - m, "</array></plist>");
		CU_ASSERT_EQUAL(umx_plist_check((const uint8_t *)buf, m, NULL), extra ? -E2BIG : 0);
	}
	static char big[65536];
	for (unsigned extra = 0; extra <= 1; extra++) {
		size_t m = (size_t)snprintf(big, sizeof(big), "<plist><dict>");
		for (unsigned i = 0; i < UMX_PLIST_XML_MAX_KEYS + extra; i++)
			m += (size_t)snprintf(big + m, sizeof(big) - m, "<key>k%u</key><true/>", i);
		m += (size_t)snprintf(big + m, sizeof(big) - m, "</dict></plist>");
		CU_ASSERT_EQUAL(umx_plist_check((const uint8_t *)big, m, NULL), extra ? -E2BIG : 0);
	}
	/* Tag names end where libplist ends them. */
	const char *spaced = "<plist><array\n><key >a</key></array></plist>";
	struct umx_plist_report r;
	CU_ASSERT_EQUAL(umx_plist_check((const uint8_t *)spaced, strlen(spaced), &r), 0);
	CU_ASSERT_EQUAL(r.depth, 1);
}

int unit_plist_guard(void)
{
	static const struct unit_test t[] = {
		{ "amplifying bplist refused at 4 KB and 64 KiB", amplifying_refused_at_4k_and_64k },
		{ "modest sharing passes", modest_sharing_passes },
		{ "exponential chain refused", exponential_chain_refused },
		{ "cycles refused", cycles_refused },
		{ "depth bounded", depth_bounded },
		{ "bad offsets, truncated trailers, huge counts", bad_structure_refused },
		{ "real requests pass, XML and binary", real_requests_pass },
		{ "a 40-device list passes", device_list_passes },
		{ "XML: NUL, containers, keys", xml_bounds },
		{ NULL, NULL },
	};
	return unit_add_suite("plist guard", t);
}
