/* What a broker does with one client request: answer it from its device
 * table, make the client a Listen subscriber, forward it (rewritten for
 * the upstream that owns the device) or refuse it. Pure: the decision and
 * the bytes to send, no I/O; the caller carries them out.
 *
 * Rules (docs/BROKER.md):
 * - ListDevices, ListListeners: answered here; ReadBUID too once the
 *   upstream's BUID is known (else forwarded to it): with several upstreams,
 *   that of the upstream holding every device the client may see, else the
 *   first whose BUID is known.
 * - Listen: the caller sends Result 0 and one Attached per visible device.
 * - Connect: forwarded to the upstream that owns the DeviceID, with that
 *   upstream's own ID; a device that is unknown or filtered out is answered
 *   as usbmuxd answers an unknown device (Result BADDEV).
 * - Read/Save/DeletePairRecord: forwarded to the upstream where that UDID
 *   is attached, else the first; a filtered-out UDID is answered as a
 *   missing record.
 * - Anything else: forwarded to the first upstream (forward compatibility),
 *   or refused with BADCOMMAND in strict mode.
 * Forwarded plist requests are re-encoded from the bounded parse, never
 * passed on as the client's bytes, so the upstream's parser sees only what
 * the guard accepted. */
#ifndef MUXSHIM_USBMUXD_ROUTER_H
#define MUXSHIM_USBMUXD_ROUTER_H

#include "usbmuxd/devtable.h"

enum route_kind {
	ROUTE_ANSWER,   /* send msg to the client; close after it if close */
	ROUTE_LISTEN,   /* the client subscribes (reply and events: the caller) */
	ROUTE_FORWARD,  /* send msg to upstream; relay its reply */
};

/* Why an ANSWER refused the request (statistics of the helper's tenants). */
enum route_refusal {
	ROUTE_REFUSED_NONE,
	ROUTE_REFUSED_DEVICE,  /* Connect to an attached device the filter hides */
	ROUTE_REFUSED_RECORD,  /* a pair record the filter hides */
	ROUTE_REFUSED_COMMAND, /* strict: a request the router does not know */
};

struct route {
	enum route_kind kind;
	enum route_refusal refusal;
	bool close;          /* ANSWER: usbmuxd closes after this reply */
	bool local;          /* answered without the upstream (for statistics) */
	uint32_t result;     /* ANSWER that is a Result: its number */
	unsigned upstream;   /* FORWARD */
	uint8_t *msg;        /* ANSWER, FORWARD: a whole message (owned) */
	size_t len;
};

/* The last ListDevices reply, reused while neither the table (its gen)
 * nor the filter changed: replies differ only in their tag, which is in the
 * header. The filter's contents must not change while it is cached (the
 * shim's is fixed at start-up). Zeroed to start; route_list_cache_free. */
struct route_list_cache {
	const struct umx_table *table;
	const struct umx_filter *filter;
	uint64_t gen;
	uint8_t *msg;                   /* the whole message; NULL while empty */
	size_t len;
};

/* What the router may read of the broker's state. */
struct router_view {
	const struct umx_table *table;
	const struct umx_filter *filter;
	unsigned nupstreams;            /* >= 1 */
	const char *const *buid;        /* per upstream: its BUID, or NULL while unknown */
	plist_t listeners;              /* ListListeners' array (borrowed), or NULL for none */
	struct route_list_cache *list_cache; /* the caller's, or NULL: encode every reply */
};

/* 0 and *r filled, or a negative errno (-ENOMEM, -EMSGSIZE). */
int route_request(const struct router_view *v, const struct umx_request *rq, struct route *r);
/* The same for the helper's restricted tenants: what the router cannot
 * tell is within the filter is refused instead of forwarded (a MessageType
 * it does not know: BADCOMMAND; a pair record request without a
 * PairRecordID, or naming a DeviceID the filter hides: no record). */
int route_request_strict(const struct router_view *v, const struct umx_request *rq,
			 struct route *r);
void route_free(struct route *r);
void route_list_cache_free(struct route_list_cache *c);

#endif
