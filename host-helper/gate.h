/* Tenants at run time, and the request gate that confines them
 * (--tenants; docs/deploy-tunnel.md#tenants).
 *
 * With a tenants file, every stream of a tunnel is answered by the gate
 * instead of being relayed to usbmuxd blindly: the stream's bytes reach a
 * socket pair whose other end the gate reads as usbmuxd would. The gate
 * holds one Listen subscription of its own to usbmuxd and the device table
 * it feeds (common/usbmuxd, as the shim's broker does), so what a tenant may
 * reach is decided from what usbmuxd said, never from what the container
 * says:
 * - ListDevices, Listen, ListListeners, ReadBUID: answered from the table,
 *   with the tenant's devices only; Listen events likewise;
 * - Connect: forwarded for the tenant's devices, else answered as usbmuxd
 *   answers an unknown device (BADDEV); a Connect that succeeds becomes a
 *   pipe, closed if a reload takes its device away;
 * - Read/Save/DeletePairRecord: forwarded for the tenant's UDIDs, else
 *   answered as a missing record; each reply is relayed and the gate reads
 *   the next request itself;
 * - any other MessageType: refused (BADCOMMAND) for a tenant with a device
 *   list, forwarded (and the stream then relayed as is) for a `*` tenant.
 * Every build has it (Windows: over libplist built from Debian's source). */
#ifndef MUXSHIM_HELPER_GATE_H
#define MUXSHIM_HELPER_GATE_H

#include "addr.h"
#include "loop.h"
#include "tenants.h"
#include "tunnel/link.h"

struct resolver;

enum gate_refusal {
	GATE_REFUSED_DEVICE,   /* Connect to a device not the tenant's */
	GATE_REFUSED_RECORD,   /* a pair record not the tenant's */
	GATE_REFUSED_COMMAND,  /* a MessageType the gate does not know (restricted tenant) */
	GATE_REFUSED_PROTOCOL, /* unparseable, or refused by the plist guard: stream closed */
	GATE_REFUSED_N
};
const char *gate_refusal_name(enum gate_refusal r);

/* What the helper counts per tenant (docs/deploy-tunnel.md#tenants). */
struct tenant_stats {
	uint64_t tunnels_total;
	unsigned tunnels_open;
	uint64_t streams;
	uint64_t refused[GATE_REFUSED_N];
	uint64_t local_answers;       /* requests the gate answered without usbmuxd */
	uint64_t upstream_connects, upstream_failures;
	uint64_t bytes_in, bytes_out; /* tunnel payload of closed tunnels (open ones: link stats) */
};

struct tenant {
	struct tenant_def def;        /* as last loaded */
	struct tenant_stats st;
	void *filter;                 /* the gate's form of def's device list */
	bool gone;                    /* removed by a reload: its tunnels are closing */
	struct tenant *next;
};

struct gate;

/* upstream: usbmuxd; a TCP one's address comes from resolver (NULL for a
 * UNIX one), which outlives the gate. */
int gate_new(struct loop *loop, const struct addr *upstream, struct resolver *resolver,
	     unsigned connect_timeout_ms, struct gate **out);
/* A new connection to usbmuxd, for the gate and main.c's ungated streams:
 * 0, -EINPROGRESS or a negative errno; -EAGAIN while a TCP upstream's name
 * has no address yet (callers retry it as a full listen queue). */
int helper_upstream_connect(const struct addr *a, struct resolver *r, int *fd);
void gate_free(struct gate *g);
/* (Re)builds t->filter from t->def. 0 or -ENOMEM. */
int gate_tenant_set(struct tenant *t);
void gate_tenant_clear(struct tenant *t);
/* Takes over a new stream of tenant t: binds it to the gate. 0, or a
 * negative errno (the caller resets the stream). */
int gate_stream(struct gate *g, struct tenant *t, struct link_stream *st);
/* Takes over a connected, non-blocking socket of tenant t (--serve: a
 * client of the helper's own UNIX socket). 0, or a negative errno (the
 * caller still owns fd). */
int gate_client(struct gate *g, struct tenant *t, int fd);
/* t's device list changed from old to t->def: its subscribers get Detached
 * and Attached for the difference, its pipes to devices it lost are
 * closed. */
void gate_tenant_changed(struct gate *g, struct tenant *t, const struct tenant_def *old);
/* t is going away: every stream of it the gate holds is closed. */
void gate_tenant_gone(struct gate *g, struct tenant *t);
/* Devices in the table, and whether it is the upstream's (for the log). */
size_t gate_devices(const struct gate *g, bool *live);
/* Frees what ended during the last loop iteration. */
void gate_reap(struct gate *g);

#endif
