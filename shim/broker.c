/* The broker's side toward the upstream: one Listen subscription feeding the
 * device table, and the events that go from it to this shim's subscribers.
 *
 * The subscription is a client like any other to the relays: one end of a
 * socket pair goes to session_start / tunnel_accept, so it reaches the host
 * the way every session does (and the helper sees one long-lived stream).
 * On it: ReadBUID (cached for ReadBUID requests), ListDevices (the table,
 * whole: then the broker is in sync), Listen (live changes), pipelined.
 * When it ends (usbmuxd restarted, tunnel lost) every device of the table
 * is reported Detached to subscribers, who stay connected; the next
 * subscription's device list brings them back as Attached. */
#include "shim.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SUB_TAG_BUID   1u
#define SUB_TAG_LIST   2u
#define SUB_TAG_LISTEN 3u
#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS   5000
/* An upstream that accepts and never answers must not hold clients that
 * wait for the table: after this they are answered from the empty table.
 * The subscription itself stays: it may yet answer, and giving it up would
 * leave a relay session half-closed behind a silent upstream on every
 * retry. Generous: usbmuxd answers in milliseconds, a tunnel that is down
 * gives up after --tunnel-wait. */
#define SYNC_TIMEOUT_MS  10000

static void sub_start(struct shim *s);

bool broker_synced(const struct shim *s)
{
	return s->broker.state == SUB_LIVE;
}

bool broker_should_park(const struct shim *s)
{
	/* IDLE: between attempts (the backoff after a loss). */
	return s->broker.state != SUB_LIVE && !s->broker.settled_empty;
}

void broker_view(const struct shim *s, bool listeners, struct router_view *v, const char **buid,
		 plist_t *ll)
{
	const struct broker *b = &s->broker;
	*buid = b->buid_known ? b->buid : NULL;
	*v = (struct router_view){ &b->table, &s->cfg.filter, 1, buid, NULL };
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

/* The table takes dev; new devices are announced, known ones updated. */
static void table_attach(struct shim *s, const struct umx_device *dev)
{
	struct broker *b = &s->broker;
	bool known = umx_table_find_up(&b->table, 0, dev->id) != NULL;
	const struct umx_entry *e;
	int rc = umx_table_attach(&b->table, 0, dev, &e);
	if (rc < 0) {
		unsigned suppressed;
		if (log_ratelimit_pass(&b->rl, loop_now(s->loop), &suppressed))
			log_warn("broker: device %s not tracked: %s", dev->serial,
				 rc == -ENOSPC ? "the device table is full" : strerror(-rc));
		return;
	}
	b->n->devices = (unsigned)b->table.n;
	if (!known) {
		log_info("broker: device %s attached (DeviceID %u)", e->dev.serial, e->dev.id);
		fan_out(s, EV_ATTACHED, &e->dev);
	}
}

static void table_detach(struct shim *s, uint32_t up_id)
{
	struct broker *b = &s->broker;
	const struct umx_entry *e = umx_table_find_up(&b->table, 0, up_id);
	if (!e)
		return;
	struct umx_device d = e->dev; /* shallow: valid until detached */
	log_info("broker: device %s detached (DeviceID %u)", d.serial, d.id);
	fan_out(s, EV_DETACHED, &d);
	uint32_t id;
	umx_table_detach(&b->table, 0, up_id, &id);
	b->n->devices = (unsigned)b->table.n;
}

/* The upstream is gone: its devices are, as far as anyone here can tell. */
static void table_lost(struct shim *s)
{
	struct broker *b = &s->broker;
	while (b->table.n) {
		struct umx_entry *e = &b->table.e[b->table.n - 1];
		table_detach(s, e->up_id);
	}
	b->buid_known = false;
}

/* ---- the subscription --------------------------------------------------- */

static void unpark_all(struct shim *s)
{
	struct client *next;
	for (struct client *c = s->broker.clients; c; c = next) {
		next = c->next;
		if (c->state == CLIENT_PARKED)
			client_resume(c);
	}
}

static void sub_end(struct shim *s, const char *why)
{
	struct broker *b = &s->broker;
	bool was_live = b->state == SUB_LIVE;
	loop_timer_cancel(s->loop, &b->sync);
	int fd = b->w.fd;
	loop_watch_remove(s->loop, &b->w);
	plat_close(fd);
	buf_release(&b->in);
	b->state = SUB_IDLE;
	b->n->live = false;
	/* A live subscription that ends (usbmuxd restarted, the tunnel cut)
	 * is usually back within one attempt: requests that need the table
	 * wait for that attempt rather than get an empty one. Once an attempt
	 * has failed, the empty table is the truth clients get. */
	b->settled_empty = !was_live;
	if (was_live) {
		b->n->sub_losses++;
		log_warn("broker: upstream subscription lost (%s); devices reported detached, "
			 "resubscribing", why);
		table_lost(s);
	} else {
		unsigned suppressed;
		if (log_ratelimit_pass(&b->rl, loop_now(s->loop), &suppressed))
			log_warn("broker: cannot subscribe to the upstream (%s); retrying", why);
	}
	if (b->settled_empty)
		unpark_all(s); /* answered from the (now empty) table */
	unsigned jitter = 0;
	plat_random(&jitter, sizeof(jitter));
	loop_timer_arm(s->loop, &b->retry, b->backoff_ms / 2 + jitter % (b->backoff_ms / 2 + 1));
	b->backoff_ms = b->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : b->backoff_ms * 2;
}

static void on_list(struct shim *s, const struct umx_event *ev)
{
	struct broker *b = &s->broker;
	/* Devices the table has that the fresh list lacks are gone. */
	for (size_t i = b->table.n; i-- > 0;) {
		bool present = false;
		for (size_t j = 0; j < ev->n && !present; j++)
			present = ev->list[j].id == b->table.e[i].up_id;
		if (!present)
			table_detach(s, b->table.e[i].up_id);
	}
	for (size_t j = 0; j < ev->n; j++)
		table_attach(s, &ev->list[j]);
	if (b->state != SUB_LIVE) {
		b->state = SUB_LIVE;
		b->n->live = true;
		b->settled_empty = false;
		loop_timer_cancel(s->loop, &b->sync);
		b->backoff_ms = BACKOFF_FIRST_MS;
		log_info("broker: subscribed to the upstream (%zu devices)", b->table.n);
		unpark_all(s);
	}
}

/* One message from the upstream; a reason when it ends the subscription. */
static const char *on_message(struct shim *s, const struct umx_hdr *h, const uint8_t *body,
			      size_t len)
{
	struct broker *b = &s->broker;
	struct umx_event ev;
	int rc = umx_event_decode(h, body, len, &ev);
	if (rc < 0)
		return rc == -E2BIG ? "a message the plist guard refuses" : "an unreadable message";
	const char *why = NULL;
	switch (ev.kind) {
	case UMX_EV_BUID:
		snprintf(b->buid, sizeof(b->buid), "%s", ev.text);
		b->buid_known = true;
		break;
	case UMX_EV_DEVICE_LIST:
		on_list(s, &ev);
		break;
	case UMX_EV_RESULT:
		/* ReadBUID may fail (then it is forwarded); Listen and
		 * ListDevices may not. */
		if (ev.tag == SUB_TAG_LISTEN && ev.result != UMX_RESULT_OK)
			why = "the upstream refused Listen";
		else if (ev.tag == SUB_TAG_LIST)
			why = "the upstream refused ListDevices";
		break;
	case UMX_EV_ATTACHED:
		table_attach(s, &ev.dev);
		break;
	case UMX_EV_DETACHED:
		table_detach(s, ev.device_id);
		break;
	case UMX_EV_PAIRED: {
		const struct umx_entry *e = umx_table_find_up(&b->table, 0, ev.device_id);
		if (e)
			fan_out(s, EV_PAIRED, &e->dev);
		break;
	}
	default:
		break;
	}
	umx_event_free(&ev);
	return why;
}

static void on_sub(struct loop_watch *w, unsigned events)
{
	struct shim *s = w->ctx;
	struct broker *b = &s->broker;
	(void)events;
	for (int rounds = 0; rounds < 16; rounds++) {
		size_t room = buf_space(&b->in);
		ssize_t r = plat_read(w->fd, s->scratch, room < sizeof(s->scratch) ? room : sizeof(s->scratch));
		if (r == -EAGAIN)
			return;
		if (r <= 0) {
			sub_end(s, r == 0 ? "the upstream closed it" : strerror((int)-r));
			return;
		}
		if (buf_append(&b->in, s->scratch, (size_t)r) < 0) {
			sub_end(s, "out of memory");
			return;
		}
		size_t n;
		const uint8_t *p;
		while ((p = buf_peek(&b->in, &n)) != NULL && n >= UMX_HDR_LEN) {
			struct umx_hdr h;
			if (umx_hdr_get_reply(p, &h) < 0) {
				sub_end(s, "a message of impossible length");
				return;
			}
			if (n < h.length)
				break;
			const char *why = on_message(s, &h, p + UMX_HDR_LEN, h.length - UMX_HDR_LEN);
			if (why) {
				sub_end(s, why);
				return;
			}
			buf_consume(&b->in, h.length);
		}
	}
}

static int send_request(int fd, const char *type, uint32_t tag)
{
	plist_t d = plist_new_dict();
	plist_dict_set_item(d, "MessageType", plist_new_string(type));
	plist_dict_set_item(d, "ClientVersionString", plist_new_string("muxshim " MUXSHIM_VERSION));
	plist_dict_set_item(d, "ProgName", plist_new_string("muxshim"));
	plist_dict_set_item(d, "kLibUSBMuxVersion", plist_new_uint(3));
	uint8_t *m;
	size_t len;
	int rc = umx_encode_plist(tag, d, &m, &len);
	plist_free(d);
	if (rc < 0)
		return rc;
	/* A fresh socket pair's buffer takes these few hundred bytes at once. */
	ssize_t w = plat_write(fd, m, len);
	free(m);
	return w == (ssize_t)len ? 0 : w < 0 ? (int)w : -EIO;
}

static void sub_start(struct shim *s)
{
	struct broker *b = &s->broker;
	int fds[2];
	int rc = plat_socketpair(fds);
	if (rc < 0) {
		loop_watch_init(&b->w, -1, on_sub, s);
		b->state = SUB_SYNCING;
		sub_end(s, strerror(-rc));
		return;
	}
	loop_watch_init(&b->w, fds[0], on_sub, s);
	b->state = SUB_SYNCING;
	b->n->subscribes++;
	loop_timer_arm(s->loop, &b->sync, SYNC_TIMEOUT_MS);
	if ((rc = send_request(fds[0], "ReadBUID", SUB_TAG_BUID)) < 0 ||
	    (rc = send_request(fds[0], "ListDevices", SUB_TAG_LIST)) < 0 ||
	    (rc = send_request(fds[0], "Listen", SUB_TAG_LISTEN)) < 0 ||
	    (rc = loop_watch_set(s->loop, &b->w, LOOP_IN)) < 0) {
		plat_close(fds[1]);
		sub_end(s, strerror(-rc));
		return;
	}
	/* The other end is a client of the relay, counted as one session. */
	if (s->cfg.upstream.kind == ADDR_TUNNEL)
		tunnel_accept(s, fds[1]);
	else
		session_start(s, fds[1]);
}

static void on_retry(struct loop_timer *t)
{
	sub_start(t->ctx);
}

static void on_sync_timeout(struct loop_timer *t)
{
	struct shim *s = t->ctx;
	log_warn("broker: no device list from the upstream within 10 s; answering from the "
		 "empty table until it comes");
	s->broker.settled_empty = true;
	unpark_all(s);
}

void broker_init(struct shim *s)
{
	struct broker *b = &s->broker;
	b->on = true;
	b->n = &s->stats.broker;
	b->n->on = true;
	b->state = SUB_IDLE;
	b->backoff_ms = BACKOFF_FIRST_MS;
	b->rl.interval_ms = 10000;
	buf_init_growing(&b->in, UMX_REPLY_MAX);
	umx_table_init(&b->table);
	loop_watch_init(&b->w, -1, on_sub, s);
	loop_timer_init(&b->retry, on_retry, s);
	loop_timer_init(&b->sync, on_sync_timeout, s);
	sub_start(s);
}

void broker_shutdown(struct shim *s)
{
	struct broker *b = &s->broker;
	if (!b->on)
		return;
	loop_timer_cancel(s->loop, &b->retry);
	loop_timer_cancel(s->loop, &b->sync);
	while (b->clients)
		client_close(b->clients, NULL);
	if (b->w.fd >= 0) {
		int fd = b->w.fd;
		loop_watch_remove(s->loop, &b->w);
		plat_close(fd);
	}
	buf_release(&b->in);
	umx_table_free(&b->table);
}
