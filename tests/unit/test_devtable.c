#include "usbmuxd/devtable.h"
#include "unit.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static struct umx_device dev(uint32_t id, const char *serial, bool network)
{
	struct umx_device d;
	memset(&d, 0, sizeof(d));
	d.id = id;
	d.network = network;
	snprintf(d.serial, sizeof(d.serial), "%s", serial);
	d.props = plist_new_dict();
	plist_dict_set_item(d.props, "DeviceID", plist_new_uint(id));
	plist_dict_set_item(d.props, "SerialNumber", plist_new_string(serial));
	return d;
}

static const struct umx_entry *attach(struct umx_table *t, unsigned up, uint32_t id,
				      const char *serial, bool network)
{
	struct umx_device d = dev(id, serial, network);
	const struct umx_entry *e = NULL;
	CU_ASSERT_EQUAL(umx_table_attach(t, up, &d, &e), 0);
	umx_device_free(&d);
	return e;
}

static void single_upstream_keeps_ids(void)
{
	struct umx_table t;
	umx_table_init(&t);
	CU_ASSERT_EQUAL(attach(&t, 0, 1, "aaaa", false)->dev.id, 1);
	CU_ASSERT_EQUAL(attach(&t, 0, 2, "bbbb", false)->dev.id, 2);
	/* Properties carry the client-side ID too, and the table owns a copy. */
	const struct umx_entry *e = umx_table_find(&t, 2);
	CU_ASSERT_PTR_NOT_NULL_FATAL(e);
	CU_ASSERT_STRING_EQUAL(e->dev.serial, "bbbb");
	CU_ASSERT_EQUAL(e->up_id, 2);
	uint32_t id = 0;
	CU_ASSERT_EQUAL(umx_table_detach(&t, 0, 1, &id), 0);
	CU_ASSERT_EQUAL(id, 1);
	CU_ASSERT_EQUAL(umx_table_detach(&t, 0, 1, &id), -ENOENT);
	CU_ASSERT_PTR_NULL(umx_table_find(&t, 1));
	CU_ASSERT_EQUAL(t.n, 1);
	/* The same upstream ID again (usbmuxd restarted): the same ID here. */
	CU_ASSERT_EQUAL(attach(&t, 0, 1, "aaaa", false)->dev.id, 1);
	/* A repeated Attached replaces, it does not duplicate. */
	CU_ASSERT_EQUAL(attach(&t, 0, 1, "aaaa", false)->dev.id, 1);
	CU_ASSERT_EQUAL(t.n, 2);
	umx_table_free(&t);
}

static void upstreams_collide(void)
{
	struct umx_table t;
	umx_table_init(&t);
	attach(&t, 0, 1, "host-a-phone", false);
	const struct umx_entry *b = attach(&t, 1, 1, "host-b-phone", false);
	CU_ASSERT_EQUAL(b->dev.id, UMX_REMAP_BASE);
	/* The same UDID on two upstreams (USB here, Wi-Fi there): two entries. */
	const struct umx_entry *w = attach(&t, 1, 2, "host-a-phone", true);
	CU_ASSERT_EQUAL(w->dev.id, 2);
	CU_ASSERT_EQUAL(t.n, 3);
	const struct umx_entry *e = umx_table_find(&t, UMX_REMAP_BASE);
	CU_ASSERT_PTR_NOT_NULL_FATAL(e);
	CU_ASSERT_EQUAL(e->upstream, 1);
	CU_ASSERT_EQUAL(e->up_id, 1);
	CU_ASSERT_PTR_EQUAL(umx_table_find_up(&t, 1, 1), e);
	CU_ASSERT_EQUAL(umx_table_find_serial(&t, "HOST-A-PHONE")->upstream, 0);

	/* Upstream 1 goes away: only its entries, and their IDs are reported. */
	uint32_t ids[4];
	CU_ASSERT_EQUAL(umx_table_detach_upstream(&t, 1, ids, 4), 2);
	CU_ASSERT_EQUAL(ids[0], UMX_REMAP_BASE);
	CU_ASSERT_EQUAL(ids[1], 2);
	CU_ASSERT_EQUAL(t.n, 1);
	CU_ASSERT_EQUAL(t.e[0].dev.id, 1);
	/* Back again: a remapped ID is never reused while another holds it,
	 * and IDs move on rather than being recycled at once. */
	CU_ASSERT_EQUAL(attach(&t, 1, 1, "host-b-phone", false)->dev.id, UMX_REMAP_BASE + 1);
	umx_table_free(&t);
}

static void table_is_bounded(void)
{
	struct umx_table t;
	umx_table_init(&t);
	for (uint32_t i = 1; i <= UMX_TABLE_MAX; i++) {
		char s[16];
		snprintf(s, sizeof(s), "d%u", i);
		attach(&t, i % 3, i, s, false);
	}
	/* Every ID unique. */
	for (size_t i = 0; i < t.n; i++)
		CU_ASSERT_PTR_EQUAL(umx_table_find(&t, t.e[i].dev.id), &t.e[i]);
	struct umx_device d = dev(99999, "one-too-many", false);
	const struct umx_entry *e = NULL;
	CU_ASSERT_EQUAL(umx_table_attach(&t, 0, &d, &e), -ENOSPC);
	umx_device_free(&d);
	CU_ASSERT_EQUAL(t.n, UMX_TABLE_MAX);
	umx_table_free(&t);
}

static void filter(void)
{
	static struct umx_filter f; /* 64 KiB: not on the stack */
	umx_filter_init(&f);
	struct umx_device usb = dev(1, "00008030-001A2B3C4D5E6F70", false);
	struct umx_device wifi = dev(2, "00008030-001A2B3C4D5E6F70", true);
	struct umx_device other = dev(3, "ffffffffffffffffffffffffffffffffffffffff", false);
	CU_ASSERT(umx_filter_allows(&f, &usb) && umx_filter_allows(&f, &other));
	CU_ASSERT_EQUAL(umx_filter_add_list(&f, "00008030-001a2b3c4d5e6f70,abc"), 0);
	CU_ASSERT_EQUAL(f.n, 2);
	CU_ASSERT(umx_filter_allows(&f, &usb));
	CU_ASSERT(umx_filter_allows(&f, &wifi));
	CU_ASSERT(!umx_filter_allows(&f, &other));
	CU_ASSERT(umx_filter_allows_udid(&f, "ABC"));
	CU_ASSERT(!umx_filter_allows_udid(&f, "abcd"));
	CU_ASSERT_EQUAL(umx_filter_set_conn(&f, "usb"), 0);
	CU_ASSERT(umx_filter_allows(&f, &usb));
	CU_ASSERT(!umx_filter_allows(&f, &wifi));
	CU_ASSERT_EQUAL(umx_filter_set_conn(&f, "network"), 0);
	CU_ASSERT(!umx_filter_allows(&f, &usb));
	CU_ASSERT(umx_filter_allows(&f, &wifi));
	CU_ASSERT_EQUAL(umx_filter_set_conn(&f, "wifi"), -EINVAL);
	/* Bad lists change nothing. */
	CU_ASSERT_EQUAL(umx_filter_add_list(&f, "good,,x"), -EINVAL);
	CU_ASSERT_EQUAL(umx_filter_add_list(&f, "good,bad/udid"), -EINVAL);
	CU_ASSERT_EQUAL(umx_filter_add_list(&f, ""), -EINVAL);
	CU_ASSERT_EQUAL(umx_filter_add_list(&f, "trailing,"), -EINVAL);
	CU_ASSERT_EQUAL(f.n, 2);
	CU_ASSERT(!umx_filter_allows_udid(&f, "good"));
	umx_filter_init(&f);
	for (unsigned i = 0; i < UMX_FILTER_MAX; i++)
		CU_ASSERT_EQUAL(umx_filter_add_list(&f, "x"), 0);
	CU_ASSERT_EQUAL(umx_filter_add_list(&f, "y"), -ENOSPC);
	umx_device_free(&usb);
	umx_device_free(&wifi);
	umx_device_free(&other);
}

int unit_devtable(void)
{
	static const struct unit_test t[] = {
		{ "one upstream: its IDs kept", single_upstream_keeps_ids },
		{ "several upstreams: IDs unique, loss per upstream", upstreams_collide },
		{ "table bounded", table_is_bounded },
		{ "device filter: UDIDs and connection type", filter },
		{ NULL, NULL },
	};
	return unit_add_suite("usbmuxd device table", t);
}
