/* The broker's side toward the upstream: its one Listen subscription
 * (common/usbmuxd/sub.c, shared with the helper's gate: ReadBUID, ListDevices
 * and Listen on one connection, the device table, reconnecting), connected
 * through the relays like any client, and the events that go from it to this
 * shim's subscribers. When it ends (usbmuxd restarted, tunnel lost) every
 * device of the table is reported Detached to subscribers, who stay
 * connected; the next subscription's device list brings them back as
 * Attached. */
#include "shim.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool broker_synced(const struct shim *s)
{
	return s->broker.sub.state == UMX_SUB_LIVE;
}

bool broker_should_park(const struct shim *s)
{
	return umx_sub_should_park(&s->broker.sub);
}

void broker_view(const struct shim *s, bool listeners, struct router_view *v, const char **buid,
		 plist_t *ll)
{
	const struct broker *b = &s->broker;
	*buid = b->sub.buid_known ? b->sub.buid : NULL;
	*v = (struct router_view){ &b->sub.table, &s->cfg.filter, 1, buid, NULL, NULL };
	*ll = NULL;
	if (!listeners)
		return;
	plist_t arr = plist_new_array();
	for (const struct client *c = b->clients; c; c = c->next) {
		if (c->state != CLIENT_LISTEN)
			continue;
		plist_t d = plist_new_dict();
		char idstr[32];
		snprintf(idstr, sizeof(idstr), "muxshim client %llu", (unsigned long long)c->id);
		plist_dict_set_item(d, "Blacklisted", plist_new_bool(0));
		plist_dict_set_item(d, "ConnType", plist_new_uint(0));
		plist_dict_set_item(d, "ID String", plist_new_string(idstr));
		plist_dict_set_item(d, "ProgName", plist_new_string(c->progname));
		plist_array_append_item(arr, d);
	}
	*ll = v->listeners = arr;
}

/* ---- fan-out ------------------------------------------------------------ */

enum ev { EV_ATTACHED, EV_DETACHED, EV_PAIRED };

/* One event to every subscriber that may see the device, encoded once per
 * protocol version. */
static void fan_out(struct shim *s, enum ev kind, const struct umx_device *d)
{
	struct broker *b = &s->broker;
	if (!b->nlisteners || !umx_filter_allows(&s->cfg.filter, d))
		return;
	uint8_t *msg[2] = { NULL, NULL };
	size_t len[2] = { 0, 0 };
	struct client *next;
	for (struct client *c = b->clients; c; c = next) {
		next = c->next;
		if (c->state != CLIENT_LISTEN)
			continue;
		unsigned v = c->listen_version ? 1 : 0;
		if (!msg[v]) {
			int rc = kind == EV_ATTACHED ? umx_encode_attached(v, d, &msg[v], &len[v])
				 : kind == EV_DETACHED ? umx_encode_detached(v, d->id, &msg[v], &len[v])
						       : umx_encode_paired(v, d->id, &msg[v], &len[v]);
			if (rc < 0) {
				log_error("broker: cannot encode an event: %s", strerror(-rc));
				break;
			}
		}
		client_queue(c, msg[v], len[v]);
	}
	free(msg[0]);
	free(msg[1]);
}

/* ---- the subscription (common/usbmuxd/sub.c) ----------------------------- */

static void unpark_all(struct shim *s)
{
	struct client *next;
	for (struct client *c = s->broker.clients; c; c = next) {
		next = c->next;
		if (c->state == CLIENT_PARKED)
			client_resume(c);
	}
}

static void sync_numbers(struct broker *b)
{
	b->n->live = b->sub.state == UMX_SUB_LIVE;
	b->n->devices = (unsigned)b->sub.table.n;
	b->n->subscribes = b->sub.subscribes;
	b->n->sub_losses = b->sub.losses;
}

static void on_device(void *ctx, enum umx_sub_ev ev, const struct umx_device *d)
{
	struct shim *s = ctx;
	fan_out(s, ev == UMX_SUB_ATTACHED ? EV_ATTACHED : ev == UMX_SUB_DETACHED ? EV_DETACHED
											 : EV_PAIRED, d);
	sync_numbers(&s->broker);
}

static void on_changed(void *ctx)
{
	struct shim *s = ctx;
	sync_numbers(&s->broker);
	if (!umx_sub_should_park(&s->broker.sub))
		unpark_all(s);
}

/* The subscription is a client like any other to the relays: one end of a
 * socket pair goes to session_start / tunnel_accept, so it reaches the host
 * the way every session does (the helper sees one long-lived stream). */
static int sub_connect(void *ctx, int *fd)
{
	struct shim *s = ctx;
	int fds[2];
	int rc = plat_socketpair(fds);
	if (rc < 0)
		return rc;
	*fd = fds[0];
	if (s->cfg.upstream.kind == ADDR_TUNNEL)
		tunnel_accept(s, fds[1]);
	else
		session_start(s, fds[1]);
	return 0;
}

static const struct umx_sub_ops sub_ops = {
	.connect = sub_connect,
	.device = on_device,
	.changed = on_changed,
};

void broker_init(struct shim *s)
{
	struct broker *b = &s->broker;
	b->on = true;
	b->n = &s->stats.broker;
	b->n->on = true;
	b->rl.interval_ms = 10000;
	static const struct umx_sub_config cfg = {
		.who = "broker", .peer = "the upstream", .prog = "muxshim " MUXSHIM_VERSION,
	};
	umx_sub_start(&b->sub, s->loop, &cfg, &sub_ops, s);
}

void broker_shutdown(struct shim *s)
{
	struct broker *b = &s->broker;
	if (!b->on)
		return;
	while (b->clients)
		client_close(b->clients, NULL);
	umx_sub_stop(&b->sub);
	route_list_cache_free(&b->list_cache);
}
