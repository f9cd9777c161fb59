/* One client of the broker: a usbmuxd conversation, request by request.
 *
 *   COMMAND --(ListDevices, ReadBUID, ListListeners, refused Connect)--> COMMAND
 *   COMMAND --(a request that needs the table while it is syncing)--> PARKED
 *   COMMAND --(pair records; ReadBUID not yet known)--> EXCHANGE --(reply)--> COMMAND
 *   COMMAND --(Listen)--> LISTEN (events until the client goes)
 *   COMMAND --(Connect, unknown)--> handed to a relay
 *
 * Flow control: the client is read only while nothing waits to be written
 * to it and it is in COMMAND, and never past the end of the request in hand
 * (as usbmuxd reads): what it sends after a Connect or a Listen stays in its
 * socket until the relay or the subscription decides what it is, and a
 * client that does not read its replies stops being read.
 * Subscribers are not read at all (anything they send ends them, as with
 * usbmuxd); one whose queued events exceed --event-queue is dropped.
 *
 * Requests are decoded here, once, with the usbmuxd codec (its plist guard
 * bounds what any body may cost) and counted in the statistics as decoded:
 * the relays' inspector (watch.h) plays no part until a client is handed
 * over. */
#include "shim.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void client_update(struct client *c);
static void client_process(struct client *c);
static void exchange_end(struct client *c);
static bool awaits_client(struct client *c);

void client_queue(struct client *c, const uint8_t *msg, size_t len)
{
	struct shim *s = c->shim;
	if (c->state == CLIENT_DEAD)
		return;
	/* Straight to the socket when nothing waits before it: only what the
	 * kernel does not take is queued. */
	if (!buf_len(&c->out)) {
		ssize_t w = plat_write(c->w.fd, msg, len);
		if (w < 0 && w != -EAGAIN) {
			client_close(c, "write failed");
			return;
		}
		if (w > 0) {
			msg += w;
			len -= (size_t)w;
		}
		if (!len) {
			client_update(c);
			return;
		}
	}
	/* A subscriber's queue is bounded by --event-queue; a command
	 * client has one reply at a time, at most UMX_REPLY_MAX. */
	bool listener = c->state == CLIENT_LISTEN;
	bool over = listener && buf_len(&c->out) + len > s->cfg.event_queue;
	if (over || buf_append(&c->out, msg, len) < 0) {
		struct broker *b = &s->broker;
		unsigned suppressed;
		if (!listener) {
			log_warn("broker: client %llu: cannot queue a reply of %zu bytes",
				 (unsigned long long)c->id, len);
			client_close(c, "reply not queued");
			return;
		}
		b->n->listeners_dropped++;
		if (log_ratelimit_pass(&b->rl, loop_now(s->loop), &suppressed))
			log_warn("broker: client %llu (pid %d, %s) does not read its events: "
				 "more than %u bytes queued, disconnected",
				 (unsigned long long)c->id, c->stats.proc ? (int)c->stats.proc->pid : 0,
				 c->stats.proc ? c->stats.proc->comm : "?", s->cfg.event_queue);
		client_close(c, "events not read");
		return;
	}
	client_update(c);
}

static void answer(struct client *c, const uint8_t *msg, size_t len)
{
	stats_bytes_down(&c->shim->stats, &c->stats, len);
	client_queue(c, msg, len);
}

/* Off the live list; freed once this loop iteration is done. */
static void client_retire(struct client *c)
{
	struct broker *b = &c->shim->broker;
	if (c->prev)
		c->prev->next = c->next;
	else
		b->clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	loop_defer(c->shim->loop, &c->reap, free, c);
}

void client_close(struct client *c, const char *why)
{
	struct shim *s = c->shim;
	struct broker *b = &s->broker;
	if (c->state == CLIENT_DEAD)
		return;
	if (why)
		log_debug("client %llu: closed (%s)", (unsigned long long)c->id, why);
	if (c->state == CLIENT_LISTEN)
		b->n->listeners = --b->nlisteners;
	c->state = CLIENT_DEAD;
	loop_timer_cancel(s->loop, &c->clock);
	exchange_end(c);
	loop_watch_close(s->loop, &c->w); /* the client's socket is not shared */
	buf_release(&c->in);
	buf_release(&c->out);
	stats_session_close(&s->stats, &c->stats);
	client_retire(c);
	s->nsessions--;
	shim_session_ended(s);
}

/* The client leaves the broker for a relay (upstream.h: struct handover).
 * Its session slot and statistics go with it. */
static void hand_over(struct client *c, struct upstream *u, struct handover *h)
{
	struct shim *s = c->shim;
	int fd = c->w.fd;
	loop_watch_remove(s->loop, &c->w);
	loop_timer_cancel(s->loop, &c->clock);
	h->stats = &c->stats;
	int rc = u->ops->adopt(u, fd, h);
	if (rc < 0) {
		loop_watch_init(&c->w, fd, NULL, c); /* client_close closes it */
		log_warn("broker: cannot forward a request: %s", strerror(-rc));
		client_close(c, "hand-over failed");
		return;
	}
	/* Gone from here without a close: the relay owns fd and statistics. */
	buf_release(&c->in);
	buf_release(&c->out);
	c->state = CLIENT_DEAD;
	client_retire(c);
}

/* A subscriber sent something. usbmuxd answers a command on a Listen
 * connection with BADCOMMAND (its tag, the subscriber's version) once its
 * header is whole, and closes; EOF or an error just ends it. A header that
 * comes in pieces waits in c->in, events flowing meanwhile. */
static void listener_input(struct client *c)
{
	uint8_t hdr[UMX_HDR_LEN];
	size_t have = buf_len(&c->in);
	ssize_t r = plat_read(c->w.fd, c->shim->scratch, UMX_HDR_LEN - have);
	if (r == -EAGAIN)
		return;
	if (r <= 0 || buf_append(&c->in, c->shim->scratch, (size_t)r) < 0) {
		client_close(c, r == 0 ? NULL : "subscriber read failed");
		return;
	}
	if (buf_len(&c->in) < UMX_HDR_LEN)
		return;
	size_t n;
	memcpy(hdr, buf_peek(&c->in, &n), sizeof(hdr));
	buf_consume(&c->in, sizeof(hdr));
	struct umx_hdr h;
	umx_hdr_get(hdr, &h); /* any length: only the tag is answered */
	/* Take in what else it sent, so that closing does not reset the
	 * connection before the client has read the answer. */
	for (size_t drained = 0; drained < UMX_MSG_MAX;) {
		ssize_t d = plat_read(c->w.fd, c->shim->scratch, sizeof(c->shim->scratch));
		if (d <= 0)
			break;
		drained += (size_t)d;
	}
	uint8_t *m;
	size_t len;
	if (umx_encode_result(c->listen_version, h.tag, UMX_RESULT_BADCOMMAND, &m, &len) == 0) {
		c->shim->broker.n->listeners = --c->shim->broker.nlisteners;
		c->state = CLIENT_COMMAND; /* no more events: this is its last message */
		c->close_after = true;
		client_queue(c, m, len);
		free(m);
	}
	if (c->state != CLIENT_DEAD)
		client_update(c);
}

/* ---- forwarded requests with one reply ---------------------------------- */

/* Closing our end is all the relay needs: it sees EOF and ends the
 * upstream session. */
static void exchange_end(struct client *c)
{
	if (c->ex.fd < 0)
		return;
	int fd = c->ex.fd;
	loop_watch_remove(c->shim->loop, &c->ex);
	plat_close(fd);
	buf_release(&c->ex_out);
	buf_release(&c->ex_in);
}

static void exchange_update(struct client *c)
{
	unsigned want = buf_len(&c->ex_out) ? LOOP_IN | LOOP_OUT : LOOP_IN;
	if (loop_watch_set(c->shim->loop, &c->ex, want) < 0)
		client_close(c, "event registration failed");
}

/* The upstream's answer, whole: to the client as it came (pair-record
 * replies name no DeviceID), and the client reads its next request. */
static void exchange_done(struct client *c, size_t len)
{
	size_t n;
	const uint8_t *p = buf_peek(&c->ex_in, &n);
	c->state = CLIENT_COMMAND;
	answer(c, p, len);
	exchange_end(c);
	if (c->state == CLIENT_COMMAND)
		client_process(c);
}

static void on_exchange_io(struct loop_watch *w, unsigned events)
{
	struct client *c = w->ctx;
	struct shim *s = c->shim;
	size_t n;
	const uint8_t *p;
	if ((events & (LOOP_OUT | LOOP_ERR)) && (p = buf_peek(&c->ex_out, &n)) != NULL) {
		ssize_t wr = plat_write(w->fd, p, n);
		if (wr < 0 && wr != -EAGAIN) {
			client_close(c, "upstream exchange failed");
			return;
		}
		if (wr > 0)
			buf_consume(&c->ex_out, (size_t)wr);
	}
	if (events & (LOOP_IN | LOOP_ERR)) {
		size_t room = buf_space(&c->ex_in);
		ssize_t r = plat_read(w->fd, s->scratch, room < sizeof(s->scratch) ? room : sizeof(s->scratch));
		if (r == 0 || (r < 0 && r != -EAGAIN) || (r > 0 && buf_append(&c->ex_in, s->scratch, (size_t)r) < 0)) {
			/* The upstream ended the session without answering: the
			 * client sees what it would have seen directly. */
			client_close(c, "the upstream did not answer a forwarded request");
			return;
		}
		p = buf_peek(&c->ex_in, &n);
		struct umx_hdr h;
		if (p && n >= UMX_HDR_LEN) {
			if (umx_hdr_get_reply(p, &h) < 0) {
				client_close(c, "the upstream sent a reply of impossible length");
				return;
			}
			if (n >= h.length) {
				exchange_done(c, h.length);
				return;
			}
		}
	}
	exchange_update(c);
}

/* msg goes to the upstream on a relay session of its own; the client waits
 * here for the reply, unread, as it would wait on usbmuxd. */
static void exchange_start(struct client *c, struct upstream *u, const uint8_t *msg, size_t len)
{
	struct shim *s = c->shim;
	int fds[2];
	int rc = plat_socketpair(fds);
	if (rc < 0) {
		log_warn("broker: cannot forward a request: %s", strerror(-rc));
		client_close(c, "socket pair failed");
		return;
	}
	loop_watch_init(&c->ex, fds[0], on_exchange_io, c);
	buf_init_growing(&c->ex_out, UMX_MSG_MAX);
	buf_init_growing(&c->ex_in, UMX_REPLY_MAX);
	if (buf_append(&c->ex_out, msg, len) < 0) {
		plat_close(fds[1]);
		client_close(c, "out of memory");
		return;
	}
	c->state = CLIENT_EXCHANGE;
	loop_timer_cancel(s->loop, &c->clock);
	stats_session_upstream(&s->stats, &c->stats, loop_now(s->loop));
	/* The other end is a client of the relay (the session the upstream
	 * sees), as for the subscription. */
	u->ops->accept(u, fds[1]);
	on_exchange_io(&c->ex, LOOP_OUT);
}

/* Result 0, then an Attached for each device the client may see. */
static void subscribe(struct client *c, const struct umx_request *rq)
{
	struct shim *s = c->shim;
	struct broker *b = &s->broker;
	plist_t pn = rq->dict ? plist_dict_get_item(rq->dict, "ProgName") : NULL;
	uint64_t plen = 0;
	const char *ps = pn && plist_get_node_type(pn) == PLIST_STRING
				 ? plist_get_string_ptr(pn, &plen) : NULL;
	snprintf(c->progname, sizeof(c->progname), "%.*s", ps ? (int)(plen < 63 ? plen : 63) : 0,
		 ps ? ps : "");
	c->state = CLIENT_LISTEN;
	c->listen_version = rq->version;
	b->n->listeners = ++b->nlisteners;
	loop_timer_cancel(s->loop, &c->clock);
	uint8_t *m;
	size_t len;
	if (umx_encode_result(rq->version, rq->tag, UMX_RESULT_OK, &m, &len) == 0) {
		answer(c, m, len);
		free(m);
	}
	for (size_t i = 0; i < b->table.n && c->state == CLIENT_LISTEN; i++) {
		const struct umx_device *d = &b->table.e[i].dev;
		if (!umx_filter_allows(&s->cfg.filter, d))
			continue;
		if (umx_encode_attached(rq->version, d, &m, &len) == 0) {
			client_queue(c, m, len);
			free(m);
		}
	}
}

static bool needs_table(const struct umx_request *rq)
{
	return rq->type == UMX_REQ_LIST_DEVICES || rq->type == UMX_REQ_CONNECT ||
	       rq->type == UMX_REQ_READ_PAIR_RECORD || rq->type == UMX_REQ_SAVE_PAIR_RECORD ||
	       rq->type == UMX_REQ_DELETE_PAIR_RECORD;
}

/* The client sent what must reach nobody: counted, logged, closed. */
static void refuse(struct client *c, const char *why)
{
	struct shim *s = c->shim;
	s->broker.n->refused++;
	stats_request_refused(&s->stats);
	shim_request_refused(s, &c->stats, why);
	client_close(c, "request refused");
}

/* One whole request at the front of c->in (h.length bytes). Returns false
 * when the client must not be processed further now. */
static bool on_request(struct client *c, const struct umx_hdr *h, const uint8_t *msg)
{
	struct shim *s = c->shim;
	struct broker *b = &s->broker;
	struct umx_request rq;
	int rc = umx_request_decode_memo(&s->memo, h, msg + UMX_HDR_LEN, h->length - UMX_HDR_LEN, &rq);
	if (rc == -E2BIG) {
		refuse(c, "a plist request the guard refuses (expansion, nesting or references "
			  "beyond its bounds)");
		return false;
	}
	if (rc < 0) {
		/* usbmuxd ignores a request it cannot parse and reads on. */
		stats_parse_error(&s->stats);
		buf_consume(&c->in, h->length);
		return true;
	}
	/* While a subscription is on its way the table is about to be right:
	 * wait for it. Once an attempt has failed, the table is empty, and
	 * that is the truth a client can act on: no device is reachable
	 * (ListDevices lists none, Connect is refused as for an unknown
	 * device), as Listen clients are told by Detached events. */
	if (needs_table(&rq) && broker_should_park(s)) {
		b->n->parked++;
		c->state = CLIENT_PARKED;
		umx_request_free(&rq);
		return false;
	}
	stats_request(&s->stats, &c->stats, rq.type, rq.version);
	struct route r;
	struct router_view v;
	plist_t ll;
	broker_view(s, rq.type == UMX_REQ_LIST_LISTENERS, &v, &ll);
	v.list_cache = &b->list_cache;
	rc = route_request(&v, &rq, &r);
	plist_free(ll);
	enum umx_req type = rq.type;
	if (rc < 0) {
		umx_request_free(&rq);
		log_warn("broker: client %llu: cannot answer a %s request: %s",
			 (unsigned long long)c->id, umx_req_name(type), strerror(-rc));
		client_close(c, "routing failed");
		return false;
	}
	buf_consume(&c->in, h->length);
	switch (r.kind) {
	case ROUTE_ANSWER:
		b->n->local[type]++;
		if (type == UMX_REQ_CONNECT)
			stats_connect_result(&s->stats, rq.port, r.result);
		answer(c, r.msg, r.len);
		if (r.close)
			c->close_after = true;
		break;
	case ROUTE_LISTEN:
		b->n->local[type]++;
		subscribe(c, &rq);
		break;
	case ROUTE_FORWARD: {
		b->n->forwarded[type]++;
		struct upstream *u = s->up[r.upstream < s->nup ? r.upstream : 0];
		if (type != UMX_REQ_CONNECT && type != UMX_REQ_OTHER) {
			/* One reply, then the connection is the client's again. */
			exchange_start(c, u, r.msg, r.len);
			break;
		}
		/* The rewritten request; nothing the client sent after it
		 * was read (client_input). */
		struct handover ho = { .msg = r.msg, .len = r.len, .connect = type == UMX_REQ_CONNECT,
				       .tag = rq.tag, .port = rq.port };
		stats_session_upstream(&s->stats, &c->stats, loop_now(s->loop));
		hand_over(c, u, &ho);
		break;
	}
	}
	umx_request_free(&rq);
	route_free(&r);
	return c->state == CLIENT_COMMAND;
}

static void client_process(struct client *c)
{
	while (c->state == CLIENT_COMMAND && !c->close_after && buf_len(&c->out) == 0) {
		size_t n;
		const uint8_t *p = buf_peek(&c->in, &n);
		if (!p || n < UMX_HDR_LEN)
			break;
		struct umx_hdr h;
		if (umx_hdr_get(p, &h) < 0) {
			/* usbmuxd closes a connection whose length it cannot take. */
			refuse(c, "bad request length");
			return;
		}
		if (n < h.length)
			break;
		if (!on_request(c, &h, p))
			break;
	}
	/* What is left may be the start of the next request. */
	if (c->state == CLIENT_COMMAND)
		shim_request_clock(c->shim, awaits_client(c), &c->clock);
	client_update(c);
}

void client_resume(struct client *c)
{
	if (c->state != CLIENT_PARKED)
		return;
	c->state = CLIENT_COMMAND;
	client_process(c);
}

static size_t request_room(struct client *c);

/* --request-timeout runs while the client owes us bytes: nothing sent
 * yet, or a request begun and not finished. */
static bool awaits_client(struct client *c)
{
	return c->stats.bytes_up == 0 || (buf_len(&c->in) && request_room(c));
}

/* How far the client may be read now: to the end of the request in hand
 * (its header first), never past it. */
static size_t request_room(struct client *c)
{
	size_t n;
	const uint8_t *p = buf_peek(&c->in, &n);
	struct umx_hdr h;
	if (n < UMX_HDR_LEN)
		return UMX_HDR_LEN - n;
	if (umx_hdr_get(p, &h) < 0 || n >= h.length)
		return 0; /* client_process refuses it, or takes it */
	return h.length - n;
}

/* Reads what the client sent, up to the end of its request: the header,
 * then at once the body, which usually came with it. Returns false when
 * the client was closed. */
static bool client_input(struct client *c)
{
	struct shim *s = c->shim;
	for (;;) {
		size_t room = request_room(c);
		if (room > sizeof(s->scratch))
			room = sizeof(s->scratch);
		if (room == 0)
			return true;
		ssize_t r = plat_read(c->w.fd, s->scratch, room);
		if (r == -EAGAIN)
			return true;
		if (r <= 0) {
			client_close(c, r == 0 ? NULL : "read failed");
			return false;
		}
		stats_bytes_up(&s->stats, &c->stats, (size_t)r);
		if (buf_append(&c->in, s->scratch, (size_t)r) < 0) {
			client_close(c, "out of memory");
			return false;
		}
		shim_request_clock(s, awaits_client(c), &c->clock);
		if ((size_t)r < room)
			return true; /* drained: asking again would hear EAGAIN */
	}
}

static void on_client_io(struct loop_watch *w, unsigned events)
{
	struct client *c = w->ctx;
	if ((events & (LOOP_OUT | LOOP_ERR)) && (w->want & LOOP_OUT)) {
		size_t n;
		const uint8_t *p;
		while ((p = buf_peek(&c->out, &n)) != NULL) {
			ssize_t wr = plat_write(w->fd, p, n);
			if (wr == -EAGAIN)
				break;
			if (wr < 0) {
				client_close(c, "write failed");
				return;
			}
			buf_consume(&c->out, (size_t)wr);
		}
		if (!buf_len(&c->out) && c->close_after) {
			client_close(c, NULL);
			return;
		}
	}
	if ((events & (LOOP_IN | LOOP_ERR)) && (w->want & LOOP_IN)) {
		if (c->state == CLIENT_LISTEN) {
			listener_input(c);
			return;
		}
		if (!client_input(c))
			return;
	}
	client_process(c);
}

/* Interest follows state (see the top of this file). */
static void client_update(struct client *c)
{
	if (c->state == CLIENT_DEAD)
		return;
	if (c->close_after && !buf_len(&c->out)) {
		client_close(c, NULL); /* the last reply is out (BADVERSION, BADCOMMAND) */
		return;
	}
	unsigned want = 0;
	if (buf_len(&c->out))
		want |= LOOP_OUT;
	if (c->state == CLIENT_LISTEN ||
	    (c->state == CLIENT_COMMAND && !c->close_after && !buf_len(&c->out) && request_room(c)))
		want |= LOOP_IN;
	if (!want && c->state == CLIENT_COMMAND) {
		/* Nothing to write and nothing to read: a whole request in
		 * hand that client_process did not take. Never wait for
		 * nothing. */
		log_warn("broker: client %llu: nothing left to wait for; closed",
			 (unsigned long long)c->id);
		client_close(c, "stalled");
		return;
	}
	int rc = loop_watch_set(c->shim->loop, &c->w, want);
	if (rc < 0)
		client_close(c, "event registration failed");
}

static void on_request_timeout(struct loop_timer *t)
{
	struct client *c = t->ctx;
	shim_request_timed_out(c->shim, &c->stats);
	client_close(c, "request timeout");
}

void client_start(struct shim *s, int fd)
{
	struct broker *b = &s->broker;
	struct client *c = calloc(1, sizeof(*c));
	if (!c) {
		log_error("out of memory: refusing a client");
		plat_close(fd);
		return;
	}
	c->shim = s;
	c->id = ++s->next_id;
	c->state = CLIENT_COMMAND;
	buf_init_growing(&c->in, UMX_MSG_MAX);
	buf_init_growing(&c->out, s->cfg.event_queue > UMX_REPLY_MAX ? s->cfg.event_queue : UMX_REPLY_MAX);
	loop_watch_init(&c->w, fd, on_client_io, c);
	loop_watch_init(&c->ex, -1, on_exchange_io, c);
	loop_timer_init(&c->clock, on_request_timeout, c);
	c->next = b->clients;
	if (b->clients)
		b->clients->prev = c;
	b->clients = c;
	s->nsessions++;
	s->sessions_total++;
	shim_attribute(s, &c->stats, fd);
	shim_request_clock(s, true, &c->clock);
	/* Clients send their request as soon as they are connected: it is
	 * usually here already, and answering it now spares the loop a
	 * registration and a wake-up before the reply. */
	if (client_input(c))
		client_process(c);
}

