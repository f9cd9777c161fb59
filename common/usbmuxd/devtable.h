/* The device table of a broker: every device its upstreams' Listen
 * subscriptions reported, under the DeviceID its clients see, and the
 * filter that decides which of them a client may know of. Pure: no I/O.
 *
 * DeviceIDs: an upstream's own ID is kept when no other entry uses it, so
 * that through a single upstream clients see exactly what usbmuxd says;
 * otherwise (the same ID on two upstreams: usbmuxd's IDs start at 1 on
 * every host) a fresh ID from a range usbmuxd does not reach in practice.
 * An ID is stable while its device stays attached and unique at any time. */
#ifndef MUXSHIM_USBMUXD_DEVTABLE_H
#define MUXSHIM_USBMUXD_DEVTABLE_H

#include "usbmuxd/proto.h"

#define UMX_TABLE_MAX 256u            /* entries across all upstreams */
#define UMX_REMAP_BASE 0x01000000u    /* first ID handed out on a collision */

struct umx_entry {
	unsigned upstream;        /* index of the upstream that reported it */
	uint32_t up_id;           /* that upstream's DeviceID */
	struct umx_device dev;    /* dev.id is the DeviceID clients see */
};

struct umx_table {
	struct umx_entry *e;      /* in attach order, as usbmuxd lists them */
	size_t n, cap;
	uint32_t next_remap;
	/* Bumped by every change (and never reset, even by free), so that
	 * what is derived from the table, such as the broker's encoded
	 * ListDevices reply (router.h), can tell that it is stale. */
	uint64_t gen;
};

void umx_table_init(struct umx_table *t);
void umx_table_free(struct umx_table *t);

/* Records dev (dev->id being the upstream's ID); the entry in *out.
 * An (upstream, ID) pair already present is replaced in place (keeping its
 * client-side ID). -ENOSPC when the table is full, -ENOMEM. */
int umx_table_attach(struct umx_table *t, unsigned upstream, const struct umx_device *dev,
		     const struct umx_entry **out);
/* Removes the entry of (upstream, up_id); its client-side ID in *id.
 * -ENOENT if there is none. */
int umx_table_detach(struct umx_table *t, unsigned upstream, uint32_t up_id, uint32_t *id);
/* Removes every entry of one upstream (it went away); their client-side
 * IDs in ids (at most cap of them; the rest are removed all the same).
 * Returns how many were removed. */
size_t umx_table_detach_upstream(struct umx_table *t, unsigned upstream, uint32_t *ids,
				 size_t cap);
const struct umx_entry *umx_table_find(const struct umx_table *t, uint32_t id);
const struct umx_entry *umx_table_find_up(const struct umx_table *t, unsigned upstream,
					  uint32_t up_id);
/* The first entry with this serial (UDID), or NULL. */
const struct umx_entry *umx_table_find_serial(const struct umx_table *t, const char *serial);

/* Which devices a shim's clients may know of. */
enum umx_conn { UMX_CONN_ANY, UMX_CONN_USB, UMX_CONN_NETWORK };

#define UMX_FILTER_MAX 256u

struct umx_filter {
	enum umx_conn conn;
	size_t n;                 /* 0: every UDID */
	char udid[UMX_FILTER_MAX][UMX_SERIAL_MAX + 1];
};

void umx_filter_init(struct umx_filter *f);
/* Adds UDIDs from a comma-separated list (a command line option or
 * MUXSHIM_DEVICES). -EINVAL for an empty or over-long item or a character
 * a UDID never has, -ENOSPC beyond UMX_FILTER_MAX; the filter is unchanged
 * on error. */
int umx_filter_add_list(struct umx_filter *f, const char *list);
/* "usb", "network" or "any"; -EINVAL otherwise. */
int umx_filter_set_conn(struct umx_filter *f, const char *name);
bool umx_filter_allows_udid(const struct umx_filter *f, const char *udid);
bool umx_filter_allows(const struct umx_filter *f, const struct umx_device *d);

#endif
