/* The request gate of the helper's tenants (gate.h). Two parts: the
 * subscription (common/usbmuxd/sub.c, the shim's broker's too: one Listen
 * connection to usbmuxd feeding the device table) and the gated streams
 * (struct gclient: one per tunnel stream of a tenant, reading usbmuxd
 * requests from the stream's socket pair and answering, forwarding or
 * relaying them). */
#include "gate.h"

#include "buf.h"
#include "log.h"
#include "plat.h"
#include "resolver.h"
#include "usbmuxd/router.h"
#include "usbmuxd/sub.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef MUXSHIM_VERSION
#define MUXSHIM_VERSION "0.1.0"
#endif

#define PIPE_CHUNK       (64 * 1024)   /* each pipe direction holds at most this */
#define EVENTS_MAX       (512 * 1024)  /* events queued for a subscriber that does not read */
#define RETRY_FIRST_MS   5
#define RETRY_MAX_MS     100
#define CLOSE_POLL_MS    5     /* as link.c: asking for usbmuxd's acknowledgements */
#define CLOSE_WAIT_MS    2000  /* then the connection is closed normally */

enum gc_state {
	GC_COMMAND,  /* reading requests */
	GC_FORWARD,  /* a request is with usbmuxd; relaying its one reply */
	GC_LISTEN,   /* a subscriber: events only */
	GC_PIPE,     /* a Connect that succeeded (or a `*` tenant's unknown request): relayed */
	GC_DEAD,
};

struct gclient {
	struct gate *g;
	struct tenant *t;
	enum gc_state state;
	struct loop_watch a;         /* the stream's socket pair end */
	struct loop_watch u;         /* usbmuxd, while connected or connecting */
	struct loop_timer retry;     /* connecting to usbmuxd */
	uint64_t connect_started;
	unsigned retry_ms;
	bool u_connecting;
	bool u_closing;              /* waiting for usbmuxd's ACKs before a reset */
	bool unanswered;             /* we wrote to usbmuxd after the last byte it sent */
	uint64_t close_started;
	struct buf ain;              /* from the stream: requests (COMMAND) */
	struct buf aout;             /* to the stream: replies, events, device bytes */
	struct buf uin;              /* from usbmuxd: a reply (FORWARD) */
	struct buf uout;             /* to usbmuxd: a request, client bytes (PIPE) */
	bool a_eof, u_eof;           /* that side sent all it will */
	bool a_shut, u_shut;         /* we half-closed toward that side */
	bool close_after;            /* close once aout is written */
	bool parked;                 /* a request waits for the table */
	bool fwd_connect;            /* FORWARD: the request was a Connect */
	char pipe_udid[UMX_SERIAL_MAX + 1]; /* PIPE to this device; "" for any */
	uint32_t listen_version;
	struct gclient *prev, *next;
};

struct gate {
	struct loop *loop;
	struct addr upstream;
	struct resolver *resolver;   /* a TCP upstream's address (the helper's) */
	unsigned connect_timeout_ms;
	struct umx_sub sub;          /* usbmuxd's device table (common/usbmuxd/sub.c) */
	struct log_ratelimit rl;
	/* The gated streams. */
	struct gclient *clients;
	struct gclient *dead;
	uint8_t scratch[PIPE_CHUNK];
};

static void gc_update(struct gclient *c);
static void gc_process(struct gclient *c);
static bool gc_can_reset(const struct gclient *c);
static bool gc_reset_upstream(struct gclient *c);

const char *gate_refusal_name(enum gate_refusal r)
{
	static const char *const names[GATE_REFUSED_N] = { "device", "pair_record", "command",
							    "protocol" };
	return (unsigned)r < GATE_REFUSED_N ? names[r] : "?";
}

int gate_tenant_set(struct tenant *t)
{
	struct umx_filter *f = t->filter ? t->filter : malloc(sizeof(*f));
	if (!f)
		return -ENOMEM;
	umx_filter_init(f);
	/* The parser allowed only what a filter takes: this cannot fail. */
	for (size_t i = 0; i < t->def.ndevices; i++)
		if (umx_filter_add_list(f, t->def.devices[i]) < 0)
			log_error("tenant %s: device %s not taken", t->def.name, t->def.devices[i]);
	t->filter = f;
	return 0;
}

void gate_tenant_clear(struct tenant *t)
{
	free(t->filter);
	t->filter = NULL;
}

static bool visible(const struct tenant *t, const struct umx_device *d)
{
	return umx_filter_allows(t->filter, d);
}

/* ---- connecting to usbmuxd ------------------------------------------------ */

int helper_upstream_connect(const struct addr *a, struct resolver *r, int *fd)
{
	if (a->kind == ADDR_UNIX)
		return plat_unix_connect(a->path, fd);
	return resolver_connect(r, fd);
}

static int upstream_connect(struct gate *g, int *fd)
{
	return helper_upstream_connect(&g->upstream, g->resolver, fd);
}

/* ---- a gated stream ----------------------------------------------------- */

static void gc_close(struct gclient *c, const char *why)
{
	struct gate *g = c->g;
	if (c->state == GC_DEAD)
		return;
	if (why)
		log_debug("tenant %s: gated stream closed (%s)", c->t->def.name, why);
	c->state = GC_DEAD;
	loop_timer_cancel(g->loop, &c->retry);
	int fd = c->a.fd;
	loop_watch_remove(g->loop, &c->a);
	plat_close(fd);
	if (c->u.fd >= 0) {
		fd = c->u.fd;
		loop_watch_remove(g->loop, &c->u);
		plat_close(fd);
	}
	buf_release(&c->ain);
	buf_release(&c->aout);
	buf_release(&c->uin);
	buf_release(&c->uout);
	if (c->prev)
		c->prev->next = c->next;
	else
		g->clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->next = g->dead;
	g->dead = c;
}

static void refused(struct gclient *c, enum gate_refusal r, const char *what)
{
	struct gate *g = c->g;
	unsigned suppressed;
	c->t->st.refused[r]++;
	if (log_ratelimit_pass(&g->rl, loop_now(g->loop), &suppressed))
		log_info("tenant %s: refused %s (%s; %llu such refusals for this tenant)%s",
			 c->t->def.name, what, gate_refusal_name(r),
			 (unsigned long long)c->t->st.refused[r],
			 suppressed ? " (more suppressed)" : "");
}

/* A whole message to the stream. A subscriber that lets events pile up
 * beyond EVENTS_MAX is dropped, as the broker drops one. */
static void gc_queue(struct gclient *c, const uint8_t *m, size_t len)
{
	if (c->state == GC_DEAD)
		return;
	if (buf_append(&c->aout, m, len) < 0) {
		gc_close(c, "events not read");
		return;
	}
	gc_update(c);
}

static void gc_answer_result(struct gclient *c, uint32_t version, uint32_t tag, uint32_t number)
{
	uint8_t *m;
	size_t len;
	if (umx_encode_result(version, tag, number, &m, &len) < 0) {
		gc_close(c, "out of memory");
		return;
	}
	gc_queue(c, m, len);
	free(m);
}

static void gc_update(struct gclient *c)
{
	struct gate *g = c->g;
	if (c->state == GC_DEAD)
		return;
	unsigned aw = 0, uw = 0;
	bool pipe = c->state == GC_PIPE;
	if (buf_len(&c->aout))
		aw |= LOOP_OUT;
	if (!c->a_eof) {
		if (pipe ? buf_len(&c->uout) == 0 && c->u.fd >= 0 && !c->u_connecting
			 : c->state != GC_FORWARD && buf_space(&c->ain) > 0 && !c->parked)
			aw |= LOOP_IN;
	}
	if (c->u.fd >= 0) {
		if (c->u_connecting || buf_len(&c->uout))
			uw |= LOOP_OUT;
		if (!c->u_eof && !c->u_connecting &&
		    (c->state == GC_FORWARD || (pipe && buf_len(&c->aout) < PIPE_CHUNK)))
			uw |= LOOP_IN;
	}
	/* Half-closes once what went before them is out; toward a TCP
	 * usbmuxd, a reset instead (gc_can_reset). */
	if (pipe && c->a_eof && !c->u_shut && c->u.fd >= 0 && !buf_len(&c->uout) && !c->u_connecting) {
		if (!gc_can_reset(c)) {
			plat_shutdown_write(c->u.fd);
			c->u_shut = true;
		} else {
			gc_reset_upstream(c);
		}
	}
	if (pipe && c->u_eof && !c->a_shut && !buf_len(&c->aout)) {
		plat_shutdown_write(c->a.fd);
		c->a_shut = true;
	}
	if (pipe && c->a_shut && c->u_shut) {
		gc_close(c, NULL);
		return;
	}
	if (!pipe && !buf_len(&c->aout) &&
	    (c->close_after || (c->a_eof && c->state != GC_FORWARD && !c->parked))) {
		/* A usbmuxd connection left from a forwarded request: as above. */
		if (c->u.fd < 0 || !gc_can_reset(c) || gc_reset_upstream(c)) {
			gc_close(c, NULL);
			return;
		}
	}
	if (loop_watch_set(g->loop, &c->a, aw) < 0 ||
	    (c->u.fd >= 0 && loop_watch_set(g->loop, &c->u, uw) < 0))
		gc_close(c, "cannot watch a socket");
}

/* May the usbmuxd connection end with a reset? A FIN from us would leave
 * this host's port in TIME_WAIT per session (the leak this project exists to
 * stop), and usbmuxd ends a session at its client's EOF anyway. So a TCP
 * one ends with a reset once usbmuxd has acknowledged every byte, kept (as
 * link.c's stream_local_fin keeps it for the ungated streams) to
 * connections usbmuxd answered after our last byte, where acknowledged is
 * not read; on Windows plat_tcp_unacked waits for the reader itself. */
static bool gc_can_reset(const struct gclient *c)
{
	return c->g->upstream.kind == ADDR_TCP && !c->u_connecting &&
	       (!c->unanswered || plat_tcp_unacked_waits_for_reader());
}

/* The client is done and all it sent went to usbmuxd: closes the usbmuxd
 * connection with a reset once acknowledged (normally after CLOSE_WAIT_MS
 * without). False while it waits (the retry timer asks again). */
static bool gc_reset_upstream(struct gclient *c)
{
	struct gate *g = c->g;
	if (!c->u_closing) {
		c->u_closing = true;
		c->close_started = loop_now(g->loop);
	}
	int unacked = plat_tcp_unacked(c->u.fd);
	if (unacked > 0 && loop_now(g->loop) - c->close_started < CLOSE_WAIT_MS) {
		loop_timer_arm(g->loop, &c->retry, CLOSE_POLL_MS);
		return false;
	}
	int fd = c->u.fd;
	loop_watch_remove(g->loop, &c->u);
	if (unacked == 0)
		plat_close_abortive(fd);
	else
		plat_close(fd);
	c->u_closing = false;
	c->u_eof = c->u_shut = true;
	return true;
}

static void gc_upstream_failed(struct gclient *c, int err)
{
	struct gate *g = c->g;
	unsigned suppressed;
	c->t->st.upstream_failures++;
	if (g->resolver && err != -EAGAIN)
		resolver_retry(g->resolver); /* the address may have moved */
	if (log_ratelimit_pass(&g->rl, loop_now(g->loop), &suppressed))
		log_warn("tenant %s: cannot connect to usbmuxd: %s", c->t->def.name,
			 err == -EAGAIN && g->resolver ? "its name did not resolve in time"
						       : plat_strerror(-err));
	gc_close(c, "usbmuxd unreachable");
}

static void gc_try_connect(struct gclient *c)
{
	struct gate *g = c->g;
	int fd;
	int rc = upstream_connect(g, &fd);
	uint64_t waited = loop_now(g->loop) - c->connect_started;
	if (rc == 0 || rc == -EINPROGRESS) {
		loop_watch_init(&c->u, fd, c->u.cb, c);
		c->u_connecting = rc == -EINPROGRESS;
		if (c->u_connecting)
			loop_timer_arm(g->loop, &c->retry, waited < g->connect_timeout_ms
							       ? g->connect_timeout_ms - waited : 0);
		else
			c->t->st.upstream_connects++;
		gc_update(c);
		return;
	}
	/* usbmuxd's backlog of 5: a burst meets a full queue for a moment
	 * (EAGAIN; also while the upstream's name resolves). */
	if ((rc == -EAGAIN || rc == -EMFILE || rc == -ENFILE) && waited < g->connect_timeout_ms) {
		loop_timer_arm(g->loop, &c->retry, c->retry_ms);
		c->retry_ms = c->retry_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : c->retry_ms * 2;
		return;
	}
	gc_upstream_failed(c, rc);
}

static void gc_on_retry(struct loop_timer *tm)
{
	struct gclient *c = tm->ctx;
	if (c->u_closing) { /* asking for usbmuxd's acknowledgements again */
		gc_update(c);
		return;
	}
	if (c->u_connecting) { /* no answer in time */
		int fd = c->u.fd;
		loop_watch_remove(c->g->loop, &c->u);
		plat_close(fd);
		c->u_connecting = false;
		gc_upstream_failed(c, -ETIMEDOUT);
		return;
	}
	gc_try_connect(c);
}

/* Sends msg to usbmuxd (connecting first if need be) and waits for its
 * reply. */
static void gc_forward(struct gclient *c, const uint8_t *msg, size_t len, bool connect)
{
	if (buf_append(&c->uout, msg, len) < 0) {
		gc_close(c, "out of memory");
		return;
	}
	c->state = GC_FORWARD;
	c->fwd_connect = connect;
	if (c->u.fd < 0 && !c->u_eof) {
		c->connect_started = loop_now(c->g->loop);
		c->retry_ms = RETRY_FIRST_MS;
		gc_try_connect(c);
		return;
	}
	if (c->u_eof) { /* usbmuxd closed this connection: as it would, so do we */
		gc_close(c, "usbmuxd closed the connection");
		return;
	}
	gc_update(c);
}

static void gc_subscribe(struct gclient *c, const struct umx_request *rq)
{
	struct gate *g = c->g;
	c->state = GC_LISTEN;
	c->listen_version = rq->version;
	gc_answer_result(c, rq->version, rq->tag, UMX_RESULT_OK);
	for (size_t i = 0; i < g->sub.table.n && c->state == GC_LISTEN; i++) {
		const struct umx_device *d = &g->sub.table.e[i].dev;
		uint8_t *m;
		size_t len;
		if (visible(c->t, d) && umx_encode_attached(rq->version, d, &m, &len) == 0) {
			gc_queue(c, m, len);
			free(m);
		}
	}
}

static bool needs_table(const struct umx_request *rq)
{
	return rq->type == UMX_REQ_LIST_DEVICES || rq->type == UMX_REQ_CONNECT ||
	       rq->type == UMX_REQ_READ_PAIR_RECORD || rq->type == UMX_REQ_SAVE_PAIR_RECORD ||
	       rq->type == UMX_REQ_DELETE_PAIR_RECORD || rq->type == UMX_REQ_LISTEN;
}

/* One whole request at the front of ain. False: stop processing now. */
static bool gc_request(struct gclient *c, const struct umx_hdr *h, const uint8_t *msg)
{
	struct gate *g = c->g;
	struct umx_request rq;
	int rc = umx_request_decode(h, msg + UMX_HDR_LEN, h->length - UMX_HDR_LEN, &rq);
	if (rc == -E2BIG) {
		refused(c, GATE_REFUSED_PROTOCOL, "a request the plist guard refuses; stream closed");
		gc_close(c, "request refused");
		return false;
	}
	if (rc < 0) {
		/* usbmuxd ignores a request it cannot parse and reads on. */
		buf_consume(&c->ain, h->length);
		return true;
	}
	if (needs_table(&rq) && umx_sub_should_park(&g->sub)) {
		c->parked = true;
		umx_request_free(&rq);
		return false;
	}
	struct route r;
	const char *buid = g->sub.buid_known ? g->sub.buid : NULL;
	struct router_view v = { &g->sub.table, c->t->filter, 1, &buid, NULL, NULL };
	rc = c->t->def.all ? route_request(&v, &rq, &r) : route_request_strict(&v, &rq, &r);
	enum umx_req type = rq.type;
	if (rc < 0) {
		umx_request_free(&rq);
		log_warn("tenant %s: cannot answer a %s request: %s", c->t->def.name,
			 umx_req_name(type), plat_strerror(-rc));
		gc_close(c, "routing failed");
		return false;
	}
	buf_consume(&c->ain, h->length);
	switch (r.kind) {
	case ROUTE_ANSWER:
		c->t->st.local_answers++;
		if (r.refusal)
			refused(c, r.refusal == ROUTE_REFUSED_DEVICE ? GATE_REFUSED_DEVICE
				   : r.refusal == ROUTE_REFUSED_RECORD ? GATE_REFUSED_RECORD
								       : GATE_REFUSED_COMMAND,
				umx_req_name(type));
		gc_queue(c, r.msg, r.len);
		if (r.close)
			c->close_after = true;
		break;
	case ROUTE_LISTEN:
		c->t->st.local_answers++;
		if (c->state != GC_DEAD)
			gc_subscribe(c, &rq);
		break;
	case ROUTE_FORWARD: {
		const struct umx_entry *e = type == UMX_REQ_CONNECT
						    ? umx_table_find(&g->sub.table, rq.device_id) : NULL;
		snprintf(c->pipe_udid, sizeof(c->pipe_udid), "%s", e ? e->dev.serial : "");
		if (type != UMX_REQ_OTHER) {
			gc_forward(c, r.msg, r.len, type == UMX_REQ_CONNECT);
			break;
		}
		/* A `*` tenant's request the gate does not know: how many
		 * replies it has is usbmuxd's business, so the stream becomes
		 * a relay (the tenant may reach everything, and a reload that
		 * narrows it closes the relay). */
		if (buf_append(&c->uout, r.msg, r.len) < 0) {
			gc_close(c, "out of memory");
			break;
		}
		size_t n;
		const uint8_t *p = buf_peek(&c->ain, &n);
		if (n && buf_append(&c->uout, p, n) == 0)
			buf_consume(&c->ain, n);
		c->state = GC_PIPE;
		c->connect_started = loop_now(g->loop);
		c->retry_ms = RETRY_FIRST_MS;
		gc_try_connect(c);
		break;
	}
	}
	umx_request_free(&rq);
	route_free(&r);
	return c->state == GC_COMMAND;
}

static void gc_process(struct gclient *c)
{
	c->parked = false;
	while (c->state == GC_COMMAND && !c->close_after && buf_len(&c->aout) == 0) {
		size_t n;
		const uint8_t *p = buf_peek(&c->ain, &n);
		if (!p || n < UMX_HDR_LEN)
			break;
		struct umx_hdr h;
		if (umx_hdr_get(p, &h) < 0) {
			/* usbmuxd closes a connection whose length it cannot take. */
			refused(c, GATE_REFUSED_PROTOCOL, "a request of impossible length");
			gc_close(c, "bad request length");
			return;
		}
		if (n < h.length)
			break;
		if (!gc_request(c, &h, p))
			break;
	}
	gc_update(c);
}

/* The reply to a forwarded request, whole at the front of uin. */
static void gc_reply(struct gclient *c, const uint8_t *msg, size_t len)
{
	bool ok = false;
	if (c->fwd_connect) {
		struct umx_hdr h;
		struct umx_event ev;
		if (umx_hdr_get_reply(msg, &h) == 0 &&
		    umx_event_decode(&h, msg + UMX_HDR_LEN, len - UMX_HDR_LEN, &ev) == 0) {
			ok = ev.kind == UMX_EV_RESULT && ev.result == UMX_RESULT_OK;
			umx_event_free(&ev);
		}
	}
	if (buf_append(&c->aout, msg, len) < 0) {
		gc_close(c, "out of memory");
		return;
	}
	buf_consume(&c->uin, len);
	if (ok) {
		/* Device bytes that came with the Result follow it. */
		size_t n;
		const uint8_t *p = buf_peek(&c->uin, &n);
		if (n && buf_append(&c->aout, p, n) < 0) {
			gc_close(c, "out of memory");
			return;
		}
		buf_release(&c->uin);
		c->state = GC_PIPE;
		/* Client bytes sent after the Connect go to the device. */
		p = buf_peek(&c->ain, &n);
		if (n && buf_append(&c->uout, p, n) == 0)
			buf_consume(&c->ain, n);
		buf_release(&c->ain);
		gc_update(c);
		return;
	}
	c->state = GC_COMMAND;
	c->pipe_udid[0] = 0;
	gc_process(c);
}

static void gc_on_a(struct loop_watch *w, unsigned ev)
{
	struct gclient *c = w->ctx;
	struct gate *g = c->g;
	if ((ev & LOOP_OUT) && buf_len(&c->aout)) {
		size_t n;
		const uint8_t *p = buf_peek(&c->aout, &n);
		ssize_t r = plat_write(w->fd, p, n);
		if (r < 0 && r != -EAGAIN) {
			gc_close(c, "the stream went away");
			return;
		}
		if (r > 0)
			buf_consume(&c->aout, (size_t)r);
	}
	if ((ev & (LOOP_IN | LOOP_ERR)) && (w->want & LOOP_IN)) {
		struct buf *dst = c->state == GC_PIPE ? &c->uout : &c->ain;
		size_t room = buf_space(dst);
		if (c->state == GC_PIPE && room > PIPE_CHUNK)
			room = PIPE_CHUNK;
		ssize_t r = plat_read(w->fd, g->scratch, room < sizeof(g->scratch) ? room : sizeof(g->scratch));
		if (r == 0 || (r < 0 && r != -EAGAIN)) {
			c->a_eof = true;
			if (r < 0 && c->state == GC_PIPE) {
				gc_close(c, "the stream failed");
				return;
			}
		} else if (r > 0) {
			if (buf_append(dst, g->scratch, (size_t)r) < 0) {
				gc_close(c, "out of memory");
				return;
			}
			if (c->state == GC_LISTEN) {
				/* A command on a Listen connection: usbmuxd drops it. */
				gc_close(c, "subscriber sent a command");
				return;
			}
		}
	}
	if (c->state == GC_COMMAND)
		gc_process(c);
	else
		gc_update(c);
}

static void gc_on_u(struct loop_watch *w, unsigned ev)
{
	struct gclient *c = w->ctx;
	struct gate *g = c->g;
	if (c->u_connecting) {
		if (!(ev & (LOOP_OUT | LOOP_ERR)))
			return;
		loop_timer_cancel(g->loop, &c->retry);
		int rc = plat_connect_result(w->fd);
		c->u_connecting = false;
		if (rc < 0) {
			int fd = w->fd;
			loop_watch_remove(g->loop, w);
			plat_close(fd);
			gc_upstream_failed(c, rc);
			return;
		}
		c->t->st.upstream_connects++;
	}
	if ((ev & LOOP_OUT) && buf_len(&c->uout)) {
		size_t n;
		const uint8_t *p = buf_peek(&c->uout, &n);
		ssize_t r = plat_write(w->fd, p, n);
		if (r < 0 && r != -EAGAIN) {
			gc_close(c, "usbmuxd went away");
			return;
		}
		if (r > 0) {
			buf_consume(&c->uout, (size_t)r);
			c->unanswered = true;
		}
	}
	if ((ev & (LOOP_IN | LOOP_ERR)) && (w->want & LOOP_IN)) {
		struct buf *dst = c->state == GC_PIPE ? &c->aout : &c->uin;
		size_t room = buf_space(dst);
		ssize_t r = plat_read(w->fd, g->scratch, room < sizeof(g->scratch) ? room : sizeof(g->scratch));
		if (r == 0 || (r < 0 && r != -EAGAIN)) {
			c->u_eof = true;
			if (c->state == GC_FORWARD) {
				/* usbmuxd closed without a (whole) reply. */
				c->close_after = true;
				c->state = GC_COMMAND;
			} else if (r < 0) {
				gc_close(c, "usbmuxd failed");
				return;
			}
		} else if (r > 0) {
			c->unanswered = false;
			if (buf_append(dst, g->scratch, (size_t)r) < 0) {
				gc_close(c, "out of memory");
				return;
			}
		}
		if (c->state == GC_FORWARD) {
			size_t n;
			const uint8_t *p = buf_peek(&c->uin, &n);
			struct umx_hdr h;
			if (p && n >= UMX_HDR_LEN) {
				if (umx_hdr_get_reply(p, &h) < 0) {
					gc_close(c, "usbmuxd sent a reply of impossible length");
					return;
				}
				if (n >= h.length) {
					gc_reply(c, p, h.length);
					return;
				}
			}
		}
	}
	gc_update(c);
}

int gate_client(struct gate *g, struct tenant *t, int fd)
{
	struct gclient *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->g = g;
	c->t = t;
	c->state = GC_COMMAND;
	loop_watch_init(&c->a, fd, gc_on_a, c);
	loop_watch_init(&c->u, -1, gc_on_u, c);
	loop_timer_init(&c->retry, gc_on_retry, c);
	buf_init(&c->ain, UMX_MSG_MAX);
	buf_init_growing(&c->aout, EVENTS_MAX);
	buf_init_growing(&c->uin, UMX_REPLY_MAX);
	buf_init(&c->uout, UMX_MSG_MAX > PIPE_CHUNK ? UMX_MSG_MAX : PIPE_CHUNK);
	c->next = g->clients;
	if (g->clients)
		g->clients->prev = c;
	g->clients = c;
	t->st.streams++;
	gc_update(c);
	return 0;
}

int gate_stream(struct gate *g, struct tenant *t, struct link_stream *st)
{
	int fds[2];
	int rc = plat_socketpair(fds);
	if (rc < 0)
		return rc;
	rc = gate_client(g, t, fds[0]);
	if (rc < 0) {
		plat_close(fds[0]);
		plat_close(fds[1]);
		return rc;
	}
	link_stream_set_ctx(st, NULL);
	link_stream_bind(st, fds[1]);
	return 0;
}

/* ---- events to subscribers ------------------------------------------------- */

enum ev { EV_ATTACHED, EV_DETACHED, EV_PAIRED };

static void send_event(struct gclient *c, enum ev kind, const struct umx_device *d)
{
	uint8_t *m;
	size_t len;
	unsigned v = c->listen_version ? 1 : 0;
	int rc = kind == EV_ATTACHED ? umx_encode_attached(v, d, &m, &len)
		 : kind == EV_DETACHED ? umx_encode_detached(v, d->id, &m, &len)
				       : umx_encode_paired(v, d->id, &m, &len);
	if (rc < 0) {
		log_error("gate: cannot encode an event: %s", plat_strerror(-rc));
		return;
	}
	gc_queue(c, m, len);
	free(m);
}

/* Only a tenant's own devices reach its subscribers (only = NULL: every
 * tenant that may see d). */
static void fan_out(struct gate *g, enum ev kind, const struct umx_device *d,
		    const struct tenant *only)
{
	struct gclient *next;
	for (struct gclient *c = g->clients; c; c = next) {
		next = c->next;
		if (c->state == GC_LISTEN && (only ? c->t == only : visible(c->t, d)))
			send_event(c, kind, d);
	}
}

void gate_tenant_changed(struct gate *g, struct tenant *t, const struct tenant_def *old)
{
	struct umx_filter *was = calloc(1, sizeof(*was));
	if (!was) {
		log_error("tenant %s: out of memory applying the new device list; its streams are "
			  "closed", t->def.name);
		gate_tenant_gone(g, t);
		return;
	}
	umx_filter_init(was);
	for (size_t i = 0; i < old->ndevices; i++)
		umx_filter_add_list(was, old->devices[i]);
	for (size_t i = 0; i < g->sub.table.n; i++) {
		const struct umx_device *d = &g->sub.table.e[i].dev;
		bool before = umx_filter_allows(was, d), now = visible(t, d);
		if (before == now)
			continue;
		log_info("tenant %s: device %s %s by the reload", t->def.name, d->serial,
			 now ? "given" : "taken away");
		fan_out(g, now ? EV_ATTACHED : EV_DETACHED, d, t);
	}
	free(was);
	/* Pipes to devices the tenant no longer has; relays of unknown
	 * requests, allowed only while it had every device. */
	struct gclient *next;
	for (struct gclient *c = g->clients; c; c = next) {
		next = c->next;
		if (c->t != t || (c->state != GC_PIPE && c->state != GC_FORWARD))
			continue;
		bool keep = c->pipe_udid[0] ? tenant_allows(&t->def, c->pipe_udid) : t->def.all;
		if (c->state == GC_FORWARD && !c->fwd_connect && c->pipe_udid[0] == 0)
			keep = true; /* a pair record or ReadBUID reply: the request was allowed */
		if (!keep) {
			log_info("tenant %s: closing a connection to %s: the device is no longer the "
				 "tenant's", t->def.name, c->pipe_udid[0] ? c->pipe_udid : "usbmuxd");
			gc_close(c, "device taken away");
		}
	}
}

void gate_tenant_gone(struct gate *g, struct tenant *t)
{
	struct gclient *next;
	for (struct gclient *c = g->clients; c; c = next) {
		next = c->next;
		if (c->t == t)
			gc_close(c, "tenant removed");
	}
}

/* ---- the subscription (common/usbmuxd/sub.c) ------------------------------ */

static void unpark_all(struct gate *g)
{
	struct gclient *next;
	for (struct gclient *c = g->clients; c; c = next) {
		next = c->next;
		if (c->state == GC_COMMAND && c->parked)
			gc_process(c);
	}
}

static void on_device(void *ctx, enum umx_sub_ev ev, const struct umx_device *d)
{
	fan_out(ctx, ev == UMX_SUB_ATTACHED ? EV_ATTACHED : ev == UMX_SUB_DETACHED ? EV_DETACHED
										      : EV_PAIRED,
		d, NULL);
}

static void on_changed(void *ctx)
{
	struct gate *g = ctx;
	if (!umx_sub_should_park(&g->sub))
		unpark_all(g);
}

static int sub_connect(void *ctx, int *fd)
{
	struct gate *g = ctx;
	return upstream_connect(g, fd);
}

static const struct umx_sub_ops sub_ops = {
	.connect = sub_connect,
	.device = on_device,
	.changed = on_changed,
};

size_t gate_devices(const struct gate *g, bool *live)
{
	*live = g->sub.state == UMX_SUB_LIVE;
	return g->sub.table.n;
}

int gate_new(struct loop *loop, const struct addr *upstream, struct resolver *resolver,
	     unsigned connect_timeout_ms, struct gate **out)
{
	struct gate *g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	g->loop = loop;
	g->upstream = *upstream;
	g->resolver = resolver;
	g->connect_timeout_ms = connect_timeout_ms;
	g->rl.interval_ms = 10000;
	static const struct umx_sub_config cfg = {
		.who = "gate", .peer = "usbmuxd", .prog = "muxshim-host " MUXSHIM_VERSION,
	};
	umx_sub_start(&g->sub, loop, &cfg, &sub_ops, g);
	*out = g;
	return 0;
}

void gate_reap(struct gate *g)
{
	while (g->dead) {
		struct gclient *c = g->dead;
		g->dead = c->next;
		free(c);
	}
}

void gate_free(struct gate *g)
{
	if (!g)
		return;
	while (g->clients)
		gc_close(g->clients, NULL);
	gate_reap(g);
	umx_sub_stop(&g->sub);
	free(g);
}
