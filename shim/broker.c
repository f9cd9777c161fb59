/* The broker's side toward the upstreams: one Listen subscription per
 * upstream (common/usbmuxd/sub.c, shared with the helper's gate: ReadBUID,
 * ListDevices and Listen on one connection, that upstream's device table,
 * reconnecting), connected through the upstream's relay like any client, and
 * the device table across upstreams that clients see: every device under a
 * DeviceID unique over all of them (devtable.c keeps an upstream's own ID
 * when no other upstream uses it). When a subscription ends (usbmuxd
 * restarted, tunnel lost) that upstream's devices are reported Detached to
 * subscribers, who stay connected; the next subscription's device list
 * brings them back as Attached. The other upstreams are not touched. */
#include "shim.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool broker_should_park(const struct shim *s)
{
	for (unsigned i = 0; i < s->nup; i++)
		if (umx_sub_should_park(&s->up[i]->sub))
			return true;
	return false;
}

void broker_view(struct shim *s, bool listeners, struct router_view *v, plist_t *ll)
{
	struct broker *b = &s->broker;
	for (unsigned i = 0; i < s->nup; i++) {
		const struct umx_sub *sub = &s->up[i]->sub;
		b->buid[i] = sub->buid_known ? sub->buid : NULL;
	}
	*v = (struct router_view){ &b->table, &s->cfg.filter, s->nup, b->buid, NULL, NULL };
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

/* One event to every subscriber that may see the device (d as clients
 * see it), encoded once per protocol version. */
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

/* ---- the subscriptions (common/usbmuxd/sub.c) ----------------------------- */

static void unpark_all(struct shim *s)
{
	struct client *next;
	for (struct client *c = s->broker.clients; c; c = next) {
		next = c->next;
		if (c->state == CLIENT_PARKED)
			client_resume(c);
	}
}

static void sync_numbers(struct upstream *u)
{
	struct shim *s = u->shim;
	u->n->live = u->sub.state == UMX_SUB_LIVE;
	u->n->devices = (unsigned)u->sub.table.n;
	u->n->subscribes = u->sub.subscribes;
	u->n->sub_losses = u->sub.losses;
	s->broker.n->devices = (unsigned)s->broker.table.n;
}

/* d carries the upstream's own DeviceID; clients see the table's. */
static void on_device(void *ctx, enum umx_sub_ev ev, const struct umx_device *d)
{
	struct upstream *u = ctx;
	struct shim *s = u->shim;
	struct umx_table *t = &s->broker.table;
	const struct umx_entry *e;
	switch (ev) {
	case UMX_SUB_ATTACHED: {
		int rc = umx_table_attach(t, u->index, d, &e);
		if (rc < 0) {
			log_warn("broker: upstream %s: device %s not listed: %s", u->name, d->serial,
				 rc == -ENOSPC ? "the device table is full" : strerror(-rc));
			break;
		}
		fan_out(s, EV_ATTACHED, &e->dev);
		break;
	}
	case UMX_SUB_DETACHED: {
		e = umx_table_find_up(t, u->index, d->id);
		if (!e)
			break; /* never listed (the table was full) */
		struct umx_device gone = e->dev;
		uint32_t id;
		umx_table_detach(t, u->index, d->id, &id);
		fan_out(s, EV_DETACHED, &gone);
		break;
	}
	case UMX_SUB_PAIRED:
		e = umx_table_find_up(t, u->index, d->id);
		if (e)
			fan_out(s, EV_PAIRED, &e->dev);
		break;
	}
	sync_numbers(u);
}

static void on_changed(void *ctx)
{
	struct upstream *u = ctx;
	sync_numbers(u);
	if (!broker_should_park(u->shim))
		unpark_all(u->shim);
}

/* The subscription is a client like any other to the relays: one end of a
 * socket pair goes to the upstream's relay, so it reaches the host the way
 * every session does (the helper sees one long-lived stream). */
static int sub_connect(void *ctx, int *fd)
{
	struct upstream *u = ctx;
	/* With one upstream, requests may as well wait for it to come back
	 * (--tunnel-wait); in an aggregate they must not wait on the host
	 * that is gone: the attempt fails now, and the next comes when the
	 * tunnel is up again (broker_upstream_up) or after the backoff. */
	if (u->shim->nup > 1 && u->ops->unreachable && u->ops->unreachable(u))
		return -ENOTCONN;
	int fds[2];
	int rc = plat_socketpair(fds);
	if (rc < 0)
		return rc;
	*fd = fds[0];
	u->ops->accept(u, fds[1]);
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
	umx_table_init(&b->table);
	for (unsigned i = 0; i < s->nup; i++) {
		struct upstream *u = s->up[i];
		/* Log lines name the upstream once there are several. */
		struct umx_sub_config cfg = {
			.who = "broker", .peer = s->nup > 1 ? u->name : "the upstream",
			.prog = "muxshim " MUXSHIM_VERSION, .no_wait_after_loss = s->nup > 1,
		};
		umx_sub_start(&u->sub, s->loop, &cfg, &sub_ops, u);
	}
}

void broker_upstream_up(struct upstream *u)
{
	if (u->shim->broker.on)
		umx_sub_kick(&u->sub);
}

void broker_shutdown(struct shim *s)
{
	struct broker *b = &s->broker;
	if (!b->on)
		return;
	while (b->clients)
		client_close(b->clients, NULL);
	for (unsigned i = 0; i < s->nup; i++)
		umx_sub_stop(&s->up[i]->sub);
	umx_table_free(&b->table);
	route_list_cache_free(&b->list_cache);
}
