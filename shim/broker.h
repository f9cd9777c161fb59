/* The broker (the default; docs/BROKER.md): muxshim speaks usbmuxd itself.
 *
 * broker.c holds one Listen subscription per upstream (over the same relay
 * a client would use: a session, or a tunnel stream), the device table
 * across them (DeviceIDs unique over all upstreams), and fans events out to
 * this shim's own Listen clients.
 * client.c is the per-client state machine: requests are read and decoded
 * here; ListDevices, Listen, ReadBUID and ListListeners are answered from the
 * table; pair records (and ReadBUID before the BUID is known) are exchanged
 * with the upstream over a relay session of their own while the client
 * stays here, so that the filter and ID mapping apply to every request of a
 * connection; Connect and unknown requests are handed, rewritten, to a relay
 * (session_adopt / tunnel_adopt), which the client then is. */
#ifndef MUXSHIM_BROKER_H
#define MUXSHIM_BROKER_H

#include "buf.h"
#include "log.h"
#include "loop.h"
#include "stats.h"
#include "usbmuxd/router.h"
#include "usbmuxd/sub.h"
#include "upstream.h"

#define CLIENT_EVENTS_DEFAULT (512 * 1024) /* --event-queue: events queued per subscriber */

enum client_state {
	CLIENT_COMMAND,  /* reading requests */
	CLIENT_PARKED,   /* a request waits for the table (subscription syncing) */
	CLIENT_EXCHANGE, /* a forwarded request waits for its one reply */
	CLIENT_LISTEN,   /* a subscriber: events only */
	CLIENT_DEAD,
};

struct shim;

struct client {
	struct shim *shim;
	uint64_t id;
	enum client_state state;
	struct loop_watch w;
	struct buf in;            /* at most one whole request */
	struct buf out;           /* replies and events, bounded */
	bool close_after;         /* close once out is written */
	uint32_t listen_version;
	char progname[64];        /* ListListeners */
	struct loop_timer clock;  /* --request-timeout */
	struct stats_session stats;
	/* CLIENT_EXCHANGE: our end of a socket pair whose other end is a
	 * relay client, like the subscription's; the request goes out, one
	 * reply comes back, and the pair is closed. */
	struct loop_watch ex;
	struct buf ex_out, ex_in;
	struct client *prev, *next;
	struct loop_deferred reap;
};

struct broker {
	bool on;
	struct umx_table table;   /* every upstream's devices, under the IDs clients see */
	const char *buid[UPSTREAM_MAX]; /* per upstream, for the router */
	struct client *clients;
	unsigned nlisteners;
	struct stats_broker *n;   /* its numbers, in the shim's statistics */
	struct log_ratelimit rl;
	struct route_list_cache list_cache; /* the last ListDevices reply (client.c) */
};

/* broker.c */
void broker_init(struct shim *s);
void broker_shutdown(struct shim *s);
/* u's way to its host is back (its tunnel came up): resubscribe now. */
void broker_upstream_up(struct upstream *u);
/* A request needs the table and a subscription is on its way: wait. */
bool broker_should_park(const struct shim *s);
/* The router's view of the broker's state (borrowed pointers). The list of
 * this shim's Listen clients is built only when asked for (ListListeners);
 * the caller frees *ll. */
void broker_view(struct shim *s, bool listeners, struct router_view *v, plist_t *ll);

/* client.c */
void client_start(struct shim *s, int fd);
/* Queues a whole message for a client; a subscriber that cannot take it is
 * dropped. */
void client_queue(struct client *c, const uint8_t *msg, size_t len);
/* Sends a new subscriber Result 0 and the devices it may see. */
void client_resume(struct client *c);
void client_close(struct client *c, const char *why);

#endif
