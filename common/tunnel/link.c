#include "tunnel/link.h"

#include "log.h"
#include "plat.h"
#include "tunnel/auth.h"
#include "tunnel/record.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LINK_IN_CHUNK   (64 * 1024)
#define CLOSE_POLL_MS   5
#define CLOSE_WAIT_MS   2000
/* Sealed records waiting for the socket: a few, so that one write carries
 * several while the frames behind them wait as plaintext in l->out. They
 * count toward LINK_OUT_DATA_MAX, so a control frame never waits behind
 * more sealed data than it would wait behind plain data. */
#define LINK_WIRE_MAX   (4 * (TUN_REC_MAX + TUN_REC_OVERHEAD))

struct link_stream {
	struct link *link;
	struct tun_stream ts;
	struct loop_watch w;       /* the local socket; fd -1 until bound */
	struct buf inbound;        /* tunnel -> local, bounded by our window */
	bool local_eof;            /* the local socket said EOF; FIN sent */
	bool local_shut;           /* our write side of the local socket is done */
	bool waiting;              /* queued for room in the tunnel */
	bool abortive;             /* close the local socket with a reset */
	bool closing;              /* abortive close waits for the peer's ACKs */
	bool unanswered;           /* we wrote to the local socket after the last
				    * byte it sent us (see stream_local_fin) */
	bool dead;
	bool open_pending;         /* shim: OPEN goes out with the first bytes */
	uint64_t close_started_ms;
	struct loop_timer close_timer;
	struct link_stream *prev, *next;   /* all streams of the link */
	struct link_stream *wait_next;     /* streams waiting for room */
	struct loop_deferred reap;
	void *ctx;
};

struct link {
	struct loop *loop;
	struct link_config cfg;
	const struct link_ops *ops;
	void *ctx;
	enum link_state state;
	struct loop_watch w;
	struct buf in;
	struct buf out;
	struct tun_hello local_hello, peer_hello;
	bool hello_done, auth_sent, auth_done;
	/* With a token, every byte after a side's AUTH frame travels in
	 * records (record.h): frames queue as plaintext in out and are sealed
	 * into wire; received bytes gather in raw until a record is whole and
	 * opens into in. */
	struct tun_rec rec;
	bool rec_ready;            /* keys derived */
	bool tx_sealed, rx_sealed;
	bool rx_switch;            /* what follows the peer's AUTH in in is records */
	struct buf wire;
	struct buf raw;
	struct tun_mux mux;
	bool mux_ready;
	struct link_stream *streams;
	unsigned nstreams;
	struct link_stream *wait_head, *wait_tail;
	uint64_t last_rx_ms;
	bool ping_outstanding;
	bool peer_goaway;
	uint32_t peer_goaway_code;
	struct loop_timer timer;
	struct link_stats stats;
	uint8_t token[LINK_TOKEN_MAX];
	struct loop_deferred reap;
};

static uint8_t scratch[LINK_IN_CHUNK];

static void link_update(struct link *l);
static void stream_update(struct link_stream *st);
static void stream_finish(struct link_stream *st);

enum link_state link_state(const struct link *l) { return l->state; }
void *link_ctx(const struct link *l) { return l->ctx; }
unsigned link_stream_count(const struct link *l) { return l->nstreams; }
const struct link_stats *link_get_stats(const struct link *l) { return &l->stats; }

bool link_peer_goaway(const struct link *l, uint32_t *code)
{
	*code = l->peer_goaway_code;
	return l->peer_goaway;
}
void *link_stream_ctx(const struct link_stream *st) { return st->ctx; }
void link_stream_set_ctx(struct link_stream *st, void *ctx) { st->ctx = ctx; }
uint32_t link_stream_id(const struct link_stream *st) { return st->ts.id; }
void link_stream_set_abortive_close(struct link_stream *st, bool on) { st->abortive = on; }

/* ---- output ------------------------------------------------------------ */

/* Control frames always go in; a peer that lets LINK_OUT_MAX pile up is not
 * reading and loses the tunnel. */
static int out_append(struct link *l, const void *p, size_t n)
{
	int rc = buf_append(&l->out, p, n);
	if (rc < 0) {
		link_close(l, TUN_GOAWAY_INTERNAL, "peer is not reading the tunnel");
		return rc;
	}
	return 0;
}

static int out_ctrl(struct link *l, const uint8_t *frame, size_t n)
{
	if (l->state == LINK_DEAD)
		return -EPIPE;
	return out_append(l, frame, n);
}

static bool out_has_room(const struct link *l)
{
	return l->state == LINK_UP && buf_len(&l->out) + buf_len(&l->wire) < LINK_OUT_DATA_MAX;
}

/* Seals queued frames into records in l->wire, as far as it has room. */
static int seal_out(struct link *l)
{
	size_t n;
	const uint8_t *p;
	while ((p = buf_peek(&l->out, &n)) != NULL) {
		if (n > TUN_REC_MAX)
			n = TUN_REC_MAX;
		if (buf_space(&l->wire) < n + TUN_REC_OVERHEAD)
			return 0;
		uint8_t *rec = buf_tail(&l->wire, n + TUN_REC_OVERHEAD);
		if (!rec)
			return -ENOMEM;
		long w = tun_rec_seal(&l->rec.tx, p, n, rec);
		if (w < 0) {
			buf_commit(&l->wire, 0);
			return (int)w;
		}
		buf_commit(&l->wire, (size_t)w);
		buf_consume(&l->out, n);
	}
	return 0;
}

static void flush_out(struct link *l)
{
	struct buf *q = l->tx_sealed ? &l->wire : &l->out;
	for (;;) {
		int rc = l->tx_sealed ? seal_out(l) : 0;
		if (rc < 0) {
			log_warn("tunnel %s: cannot encrypt: %s; closing the tunnel", l->cfg.peer_name,
				 strerror(-rc));
			link_close(l, TUN_GOAWAY_INTERNAL, "encryption failed");
			return;
		}
		size_t n;
		const uint8_t *p = buf_peek(q, &n);
		if (!p)
			break;
		ssize_t w = plat_write(l->w.fd, p, n);
		if (w == -EAGAIN)
			break;
		if (w < 0) {
			link_close(l, TUN_GOAWAY_NORMAL, w == -EPIPE || w == -ECONNRESET
								 ? "connection closed by peer"
								 : "write error");
			return;
		}
		buf_consume(q, (size_t)w);
	}
	/* Room again: wake the streams that queued for it, oldest first. */
	while (out_has_room(l) && l->wait_head) {
		struct link_stream *st = l->wait_head;
		l->wait_head = st->wait_next;
		if (!l->wait_head)
			l->wait_tail = NULL;
		st->waiting = false;
		st->wait_next = NULL;
		stream_update(st);
	}
}

/* ---- streams ----------------------------------------------------------- */

static struct link_stream *stream_new(struct link *l, void *ctx)
{
	struct link_stream *st = calloc(1, sizeof(*st));
	if (!st)
		return NULL;
	st->link = l;
	st->ctx = ctx;
	buf_init(&st->inbound, l->cfg.window);
	loop_watch_init(&st->w, -1, NULL, st);
	st->next = l->streams;
	if (l->streams)
		l->streams->prev = st;
	l->streams = st;
	l->nstreams++;
	return st;
}

/* The one teardown path of a stream. */
static void stream_free(struct link_stream *st, bool abortive)
{
	struct link *l = st->link;
	if (st->dead)
		return;
	st->dead = true;
	loop_timer_cancel(l->loop, &st->close_timer);
	int fd = st->w.fd;
	loop_watch_remove(l->loop, &st->w);
	if (fd >= 0) {
		if (abortive)
			plat_close_abortive(fd);
		else
			plat_close(fd);
	}
	buf_release(&st->inbound);
	if (st->waiting) {
		struct link_stream **pp = &l->wait_head, *prev = NULL;
		while (*pp && *pp != st) {
			prev = *pp;
			pp = &(*pp)->wait_next;
		}
		if (*pp)
			*pp = st->wait_next;
		if (l->wait_tail == st)
			l->wait_tail = prev;
		st->waiting = false;
	}
	if (l->mux_ready && st->ts.id && tun_mux_find(&l->mux, st->ts.id) == &st->ts)
		tun_mux_remove(&l->mux, &st->ts);
	if (st->prev)
		st->prev->next = st->next;
	else
		l->streams = st->next;
	if (st->next)
		st->next->prev = st->prev;
	l->nstreams--;
	if (l->ops->stream_closed)
		l->ops->stream_closed(l, st);
	loop_defer(l->loop, &st->reap, free, st);
}

void link_stream_reset(struct link_stream *st, uint32_t code, const char *reason)
{
	struct link *l = st->link;
	if (st->dead)
		return;
	/* A stream the peer never heard of needs no RESET. */
	if (!st->ts.reset && !st->open_pending && l->state == LINK_UP) {
		uint8_t f[TUN_CTRL_MAX];
		st->ts.reset = true;
		out_ctrl(l, f, tun_encode_reset(f, st->ts.id, code, reason));
	}
	stream_free(st, st->abortive);
	link_update(l);
}

/* Shim: the stream's first frame is an OPEN carrying the client's first
 * bytes (or its FIN), which saves a frame per session. The id is taken
 * now, so ids rise in the order OPENs go out, as the protocol requires. */
static int stream_announce(struct link_stream *st, uint8_t *type)
{
	struct link *l = st->link;
	*type = TUN_DATA;
	if (!st->open_pending)
		return 0;
	int rc = tun_mux_open(&l->mux, &st->ts, st);
	if (rc < 0) {
		static struct log_ratelimit rl = { .interval_ms = 10000 };
		unsigned suppressed;
		if (log_ratelimit_pass(&rl, loop_now(l->loop), &suppressed))
			log_warn("tunnel %s: cannot open a stream: the helper's limit of %u streams is "
				 "reached", l->cfg.peer_name, l->peer_hello.max_streams);
		return rc;
	}
	st->open_pending = false;
	l->stats.streams_opened++;
	*type = TUN_OPEN;
	return 0;
}

static int stream_send_fin(struct link_stream *st)
{
	uint8_t h[TUN_HDR_LEN], type;
	int rc = stream_announce(st, &type);
	if (rc < 0)
		return rc;
	tun_header_encode(h, type, TUN_FLAG_FIN, st->ts.id, 0);
	if (out_ctrl(st->link, h, sizeof(h)) == 0)
		tun_stream_sent(&st->ts, 0, true);
	return 0;
}

/* How much the local socket may be read now. Once the peer has finished
 * (the upstream closed), the gate has nothing left to protect: the socket is
 * read to see its EOF. */
static size_t stream_local_room(struct link_stream *st)
{
	struct link *l = st->link;
	if (!l->ops->local_room || st->ts.fin_recvd)
		return SIZE_MAX;
	return l->ops->local_room(st);
}

/* Reads up to cap bytes of the local socket into scratch for one frame:
 * one read, or with a gate several that each stop where it says. Every
 * byte is shown to ops->local_bytes before it may be sent. */
static int stream_read_local(struct link_stream *st, size_t cap, size_t *got, bool *eof)
{
	struct link *l = st->link;
	while (*got < cap) {
		size_t want = cap - *got, room = stream_local_room(st);
		if (room < want)
			want = room;
		if (want == 0)
			return 0;
		ssize_t r = plat_read(st->w.fd, scratch + *got, want);
		if (r == -EAGAIN)
			return 0;
		if (r < 0)
			return (int)r;
		if (r == 0) {
			*eof = true;
			return 0;
		}
		st->unanswered = false;
		if (l->ops->local_bytes) {
			int rc = l->ops->local_bytes(st, scratch + *got, (size_t)r);
			if (rc < 0)
				return rc;
		}
		*got += (size_t)r;
		if ((size_t)r < want || !l->ops->local_room)
			return 0;
	}
	return 0;
}

/* Reads the local socket into DATA frames: up to LINK_IN_CHUNK bytes per
 * wake-up (several frames of at most the peer's max_frame), as far as the
 * stream's credit and the tunnel's room allow. */
static int stream_pump_local(struct link_stream *st)
{
	struct link *l = st->link;
	size_t budget = LINK_IN_CHUNK;
	while (budget && out_has_room(l)) {
		uint32_t can = tun_stream_sendable(&l->mux, &st->ts);
		if (can > budget)
			can = (uint32_t)budget;
		if (can == 0)
			return 0;
		size_t got = 0;
		bool eof = false;
		int rc = stream_read_local(st, can, &got, &eof);
		if (rc < 0)
			return rc;
		if (got) {
			uint8_t h[TUN_HDR_LEN], type;
			rc = stream_announce(st, &type);
			if (rc < 0)
				return rc;
			tun_header_encode(h, type, 0, st->ts.id, (uint32_t)got);
			if (out_append(l, h, sizeof(h)) < 0 || out_append(l, scratch, got) < 0)
				return -EPIPE;
			tun_stream_sent(&st->ts, (uint32_t)got, false);
			l->stats.bytes_out += (uint64_t)got;
			budget -= got;
		}
		if (eof) {
			st->local_eof = true;
			return stream_send_fin(st);
		}
		if (got < can)
			return 0; /* drained for now, or the gate says wait */
	}
	return 0;
}

/* Frames n bytes as this stream's DATA (the first one its OPEN). */
static int stream_send(struct link_stream *st, const uint8_t *p, size_t n)
{
	struct link *l = st->link;
	while (n) {
		uint32_t can = tun_stream_sendable(&l->mux, &st->ts);
		if (can == 0)
			return -ENOBUFS;
		if (can > n)
			can = (uint32_t)n;
		uint8_t h[TUN_HDR_LEN], type;
		int rc = stream_announce(st, &type);
		if (rc < 0)
			return rc;
		tun_header_encode(h, type, 0, st->ts.id, can);
		if (out_append(l, h, sizeof(h)) < 0 || out_append(l, p, can) < 0)
			return -EPIPE;
		tun_stream_sent(&st->ts, can, false);
		l->stats.bytes_out += can;
		p += can;
		n -= can;
	}
	return 0;
}

int link_stream_write(struct link_stream *st, const uint8_t *p, size_t n)
{
	struct link *l = st->link;
	size_t frames = n / l->mux.peer.max_frame + 1;
	if (l->state != LINK_UP || buf_space(&l->out) < n + frames * TUN_HDR_LEN ||
	    n > st->ts.send_window)
		return -ENOBUFS; /* never a reason to drop the whole tunnel */
	int rc = stream_send(st, p, n);
	link_update(st->link);
	return rc;
}

/* Bytes reached the local socket: return credit when it is worth a frame. */
static void stream_consumed(struct link_stream *st, size_t n)
{
	uint32_t inc = tun_stream_consumed(&st->link->mux, &st->ts, (uint32_t)n);
	if (inc) {
		uint8_t f[TUN_HDR_LEN + 4];
		out_ctrl(st->link, f, tun_encode_window(f, st->ts.id, inc));
	}
}

static int stream_flush_local(struct link_stream *st)
{
	size_t n;
	const uint8_t *p;
	while ((p = buf_peek(&st->inbound, &n)) != NULL) {
		ssize_t w = plat_write(st->w.fd, p, n);
		if (w == -EAGAIN)
			return 0;
		if (w < 0)
			return (int)w;
		if (w > 0)
			st->unanswered = true;
		buf_consume(&st->inbound, (size_t)w);
		stream_consumed(st, (size_t)w);
	}
	return 0;
}

static void on_close_poll(struct loop_timer *t)
{
	struct link_stream *st = t->ctx;
	stream_update(st);
}

/* The peer finished sending and everything reached the local socket. */
static void stream_local_fin(struct link_stream *st)
{
	if (!st->abortive) {
		int rc = plat_shutdown_write(st->w.fd);
		(void)rc; /* a local peer that is gone entirely changes nothing */
		st->local_shut = true;
		return;
	}
	/* A TCP upstream: a FIN from us would leave this host's port in
	 * TIME_WAIT for a minute or more, per session: the very leak this
	 * project exists to stop. usbmuxd ends a session at the client's EOF
	 * anyway, so end it with a reset instead, but only once the upstream
	 * has acknowledged every byte we wrote, so that nothing is lost.
	 * Acknowledged is not read, though: bytes its kernel holds for an
	 * application that is behind (usbmuxd waiting on a slow device) die
	 * with a reset. So the reset is kept for sessions the upstream
	 * answered after our last byte (the request/response sessions that
	 * make up the load), which shows it read what we sent; a session
	 * whose last bytes went unanswered ends with a FIN, and its one port
	 * may wait in TIME_WAIT. (On Windows plat_tcp_unacked itself waits a
	 * grace period for the reader, and the reset stays.) */
	struct link *l = st->link;
	if (st->unanswered && !st->closing && !plat_tcp_unacked_waits_for_reader()) {
		log_debug("tunnel %s: stream %u: the upstream has not answered our last bytes: "
			  "ending it with a FIN", l->cfg.peer_name, st->ts.id);
		l->stats.graceful_closes++;
		st->abortive = false;
		int rc = plat_shutdown_write(st->w.fd);
		(void)rc; /* a local peer that is gone entirely changes nothing */
		st->local_shut = true;
		return;
	}
	if (!st->closing) {
		st->closing = true;
		st->close_started_ms = loop_now(l->loop);
	}
	int unacked = plat_tcp_unacked(st->w.fd);
	if (unacked > 0 && loop_now(l->loop) - st->close_started_ms < CLOSE_WAIT_MS) {
		loop_timer_arm(l->loop, &st->close_timer, CLOSE_POLL_MS);
		return;
	}
	if (!st->ts.fin_sent)
		stream_send_fin(st);
	/* Still unacknowledged after CLOSE_WAIT_MS (a loaded upstream), or
	 * unknown: a reset could lose those bytes, so this one ends with a
	 * FIN too, and is counted as such. */
	if (unacked != 0)
		l->stats.graceful_closes++;
	stream_free(st, unacked == 0);
	link_update(l);
}

/* Interest follows credit and room; a finished stream is torn down here. */
static void stream_update(struct link_stream *st)
{
	struct link *l = st->link;
	if (st->dead || st->w.fd < 0)
		return;
	if (st->ts.fin_recvd && !st->local_shut && buf_len(&st->inbound) == 0) {
		stream_local_fin(st);
		if (st->dead || st->closing)
			return;
	}
	if (st->ts.fin_sent && st->local_shut && buf_len(&st->inbound) == 0) {
		stream_finish(st);
		return;
	}
	unsigned want = 0;
	if (!st->local_eof && !st->ts.fin_sent && tun_stream_sendable(&l->mux, &st->ts) > 0 &&
	    stream_local_room(st) > 0) {
		if (out_has_room(l)) {
			want |= LOOP_IN;
		} else if (!st->waiting) {
			st->waiting = true;
			if (l->wait_tail)
				l->wait_tail->wait_next = st;
			else
				l->wait_head = st;
			l->wait_tail = st;
		}
	}
	if (buf_len(&st->inbound))
		want |= LOOP_OUT;
	if (loop_watch_set(l->loop, &st->w, want) < 0)
		link_stream_reset(st, TUN_RESET_LOCAL_ERROR, "event registration failed");
}

static void stream_finish(struct link_stream *st)
{
	struct link *l = st->link;
	stream_free(st, false);
	link_update(l);
}

static void on_local(struct loop_watch *w, unsigned ev)
{
	struct link_stream *st = w->ctx;
	struct link *l = st->link;
	int rc = 0;
	if ((ev & (LOOP_IN | LOOP_ERR)) && (w->want & LOOP_IN))
		rc = stream_pump_local(st);
	if (rc == 0 && (ev & (LOOP_OUT | LOOP_ERR)) && (w->want & LOOP_OUT))
		rc = stream_flush_local(st);
	if (l->state == LINK_DEAD || st->dead)
		return;
	if (rc == -EBADMSG) {
		link_stream_reset(st, TUN_RESET_CANCEL, "request refused");
		return;
	}
	if (rc < 0) {
		bool gone = rc == -EPIPE || rc == -ECONNRESET;
		link_stream_reset(st, gone ? TUN_RESET_CANCEL : TUN_RESET_LOCAL_ERROR,
				  gone ? "local socket closed" : "local socket error");
		return;
	}
	stream_update(st);
	link_update(l);
}

void link_stream_bind(struct link_stream *st, int local_fd)
{
	st->w.fd = local_fd;
	st->w.cb = on_local;
	/* Whatever arrived while the upstream was connecting goes out first. */
	if (stream_flush_local(st) < 0) {
		link_stream_reset(st, TUN_RESET_UPSTREAM, "upstream closed at once");
		return;
	}
	stream_update(st);
	link_update(st->link);
}

struct link_stream *link_stream_open(struct link *l, int local_fd, void *ctx, int *err)
{
	if (l->state != LINK_UP) {
		*err = -ENOTCONN;
		return NULL;
	}
	struct link_stream *st = stream_new(l, ctx);
	if (!st) {
		*err = -ENOMEM;
		return NULL;
	}
	loop_timer_init(&st->close_timer, on_close_poll, st);
	/* Not on the wire yet (see stream_announce): the credit it may use
	 * for its first frame is the peer's initial window. */
	st->open_pending = true;
	st->ts.send_window = l->peer_hello.window;
	link_stream_bind(st, local_fd);
	return st;
}

/* ---- input ------------------------------------------------------------- */

static void on_data(struct link *l, struct tun_event *ev)
{
	struct link_stream *st = ev->stream->owner;
	l->stats.bytes_in += ev->len;
	if (l->ops->remote_bytes && ev->len)
		l->ops->remote_bytes(st, ev->data, ev->len);
	size_t off = 0;
	/* Straight to the local socket when nothing is queued before it. */
	if (st->w.fd >= 0 && buf_len(&st->inbound) == 0 && ev->len) {
		ssize_t w = plat_write(st->w.fd, ev->data, ev->len);
		if (w < 0 && w != -EAGAIN) {
			link_stream_reset(st, w == -EPIPE || w == -ECONNRESET ? TUN_RESET_CANCEL
									      : TUN_RESET_LOCAL_ERROR,
					  "local socket closed");
			return;
		}
		if (w > 0) {
			st->unanswered = true;
			off = (size_t)w;
			stream_consumed(st, off);
		}
	}
	/* The window bounds this: the peer cannot send more than we granted. */
	if (buf_append(&st->inbound, ev->data + off, ev->len - off) < 0) {
		link_stream_reset(st, TUN_RESET_LOCAL_ERROR, "out of memory");
		return;
	}
	stream_update(st);
}

static void on_open(struct link *l, struct tun_event *ev)
{
	struct link_stream *st = stream_new(l, NULL);
	if (!st) {
		uint8_t f[TUN_CTRL_MAX];
		out_ctrl(l, f, tun_encode_reset(f, ev->id, TUN_RESET_LOCAL_ERROR, "out of memory"));
		return;
	}
	loop_timer_init(&st->close_timer, on_close_poll, st);
	tun_mux_accept(&l->mux, &st->ts, ev, st);
	l->stats.streams_opened++;
	if (ev->len && buf_append(&st->inbound, ev->data, ev->len) < 0) {
		link_stream_reset(st, TUN_RESET_LOCAL_ERROR, "out of memory");
		return;
	}
	l->stats.bytes_in += ev->len;
	l->ops->open(l, st);
}

static void send_ping(struct link *l, bool ack, const uint8_t opaque[8])
{
	uint8_t f[TUN_HDR_LEN + 8];
	out_ctrl(l, f, tun_encode_ping(f, ack, opaque));
}

static void dispatch(struct link *l, const struct tun_frame *f)
{
	struct tun_event ev;
	const char *why;
	int code = tun_mux_input(&l->mux, f, &ev, &why);
	if (code) {
		log_warn("tunnel %s: %s: %s; closing the tunnel", l->cfg.peer_name,
			 tun_goaway_str((uint32_t)code), why);
		link_close(l, (uint32_t)code, why);
		return;
	}
	switch (ev.kind) {
	case TE_IGNORE:
		return;
	case TE_OPEN:
		on_open(l, &ev);
		return;
	case TE_REFUSE: {
		uint8_t fr[TUN_CTRL_MAX];
		l->stats.streams_refused++;
		out_ctrl(l, fr, tun_encode_reset(fr, ev.id, TUN_RESET_REFUSED, "too many streams"));
		return;
	}
	case TE_DATA:
		on_data(l, &ev);
		return;
	case TE_WINDOW:
		stream_update(ev.stream->owner);
		return;
	case TE_RESET: {
		static struct log_ratelimit rl = { .interval_ms = 10000 };
		struct link_stream *st = ev.stream->owner;
		unsigned suppressed;
		/* The helper could not reach usbmuxd: the user needs to know. */
		if (ev.code == TUN_RESET_UPSTREAM &&
		    log_ratelimit_pass(&rl, loop_now(l->loop), &suppressed))
			log_warn("tunnel %s: session closed: the host side says: %.*s%s",
				 l->cfg.peer_name, (int)ev.reason_len, (const char *)ev.reason,
				 suppressed ? " (more suppressed)" : "");
		else
			log_debug("tunnel %s: stream %u reset by peer: %s (%.*s)", l->cfg.peer_name,
				  (unsigned)ev.id, tun_reset_str(ev.code), (int)ev.reason_len,
				  (const char *)ev.reason);
		stream_free(st, st->abortive);
		return;
	}
	case TE_PING:
		send_ping(l, true, ev.data);
		return;
	case TE_PONG: {
		uint64_t sent = 0;
		for (int i = 0; i < 8; i++)
			sent = sent << 8 | ev.data[i];
		l->ping_outstanding = false;
		uint64_t now = loop_now(l->loop);
		if (sent <= now) {
			l->stats.last_rtt_ms = (unsigned)(now - sent);
			if (l->ops->rtt)
				l->ops->rtt(l, l->stats.last_rtt_ms);
		}
		return;
	}
	case TE_GOAWAY: {
		char why_buf[300];
		snprintf(why_buf, sizeof(why_buf), "peer going away: %s%s%.*s",
			 tun_goaway_str(ev.code), ev.reason_len ? ": " : "", (int)ev.reason_len,
			 (const char *)ev.reason);
		l->peer_goaway = true;
		l->peer_goaway_code = ev.code;
		link_close(l, TUN_GOAWAY_NORMAL, why_buf);
		return;
	}
	}
}

static void become_up(struct link *l)
{
	if (tun_mux_init(&l->mux, l->cfg.role, &l->local_hello, &l->peer_hello) < 0) {
		link_close(l, TUN_GOAWAY_INTERNAL, "out of memory");
		return;
	}
	l->mux_ready = true;
	l->state = LINK_UP;
	if (l->rec_ready)
		log_info("tunnel %s: encrypted: AES-256-GCM records, keys from the token and this "
			 "connection's nonces (%s)", l->cfg.peer_name, crypto_backend());
	/* From now on the timer watches liveness, not the handshake. */
	loop_timer_arm(l->loop, &l->timer, l->cfg.keepalive_ms / 2 ? l->cfg.keepalive_ms / 2 : 1);
	if (l->cfg.role == TUN_ROLE_SHIM) {
		/* One ping at once, so the round-trip time is known from the start. */
		uint8_t opaque[8];
		uint64_t now = loop_now(l->loop);
		for (int i = 0; i < 8; i++)
			opaque[i] = (uint8_t)(now >> (56 - 8 * i));
		send_ping(l, false, opaque);
		l->ping_outstanding = true;
	}
	if (l->ops->up)
		l->ops->up(l);
}

/* Refusals a peer can repeat at will get one line per interval, with a
 * count, instead of one per attempt: a peer with the wrong token, or none,
 * may knock again and again (a misconfigured shim redials with backoff, and
 * each of its clients makes it dial early; anyone who reaches the port can
 * try proofs), and anyone can open connections that never finish the
 * handshake. */
static void log_refusal(const struct link *l, struct log_ratelimit *rl, const char *what,
			const char *counted)
{
	unsigned suppressed;
	if (!log_ratelimit_pass(rl, loop_now(l->loop), &suppressed))
		return;
	if (suppressed)
		log_warn("tunnel %s: %s (and %u more %s since the last such line)", l->cfg.peer_name,
			 what, suppressed, counted);
	else
		log_warn("tunnel %s: %s", l->cfg.peer_name, what);
}

static void log_auth_refused(const struct link *l, const char *why)
{
	static struct log_ratelimit rl = { .interval_ms = 10000 };
	char what[160];
	snprintf(what, sizeof(what), "refused: %s", why);
	log_refusal(l, &rl, what, "refused for authentication");
}

/* Derives both directions' keys (PROTOCOL.md §7) once the hellos are in. */
static int rec_setup(struct link *l)
{
	if (l->rec_ready)
		return 0;
	bool shim = l->cfg.role == TUN_ROLE_SHIM;
	int rc = tun_rec_init(&l->rec, l->cfg.role, l->token, l->cfg.token_len,
			      shim ? l->local_hello.nonce : l->peer_hello.nonce,
			      shim ? l->peer_hello.nonce : l->local_hello.nonce);
	l->rec_ready = rc == 0;
	return rc;
}

/* Our AUTH frame, the last bytes we send in the clear: from here on what
 * we send is sealed (the hello and AUTH still queued go out as they are). */
static void send_auth(struct link *l)
{
	uint8_t f[TUN_AUTH_FRAME_LEN];
	size_t n = tun_auth_encode(f, l->token, l->cfg.token_len, &l->local_hello, &l->peer_hello);
	int rc = n ? rec_setup(l) : -EIO;
	if (rc < 0) {
		log_warn("tunnel %s: the crypto library failed (%s): %s; closing the tunnel",
			 l->cfg.peer_name, crypto_backend(), strerror(-rc));
		link_close(l, TUN_GOAWAY_INTERNAL, "crypto library failed");
		return;
	}
	if (out_ctrl(l, f, n) < 0)
		return;
	l->auth_sent = true;
	size_t clear;
	const uint8_t *p = buf_peek(&l->out, &clear);
	if (p && buf_append(&l->wire, p, clear) < 0) {
		link_close(l, TUN_GOAWAY_INTERNAL, "out of memory");
		return;
	}
	buf_consume(&l->out, clear);
	l->tx_sealed = true;
}

/* Hello, then (with tokens) AUTH. Returns bytes consumed, 0 for more, <0 dead. */
static long handshake_input(struct link *l, const uint8_t *p, size_t n)
{
	if (!l->hello_done) {
		if (n < TUN_HELLO_LEN) {
			/* Refuse garbage early (HTTP, scanners) without waiting for 36 bytes. */
			if (n >= 4 && memcmp(p, "MXTN", 4) != 0) {
				log_warn("tunnel %s: refused: not a muxshim tunnel peer (first bytes %02x %02x %02x %02x)",
					 l->cfg.peer_name, p[0], p[1], p[2], p[3]);
				link_close(l, TUN_GOAWAY_PROTOCOL, NULL);
				return -1;
			}
			return 0;
		}
		enum tun_role peer_role = l->cfg.role == TUN_ROLE_SHIM ? TUN_ROLE_HELPER : TUN_ROLE_SHIM;
		int rc = tun_hello_decode(p, peer_role, &l->peer_hello);
		if (rc < 0) {
			if (rc == TUN_E_VERSION)
				log_warn("tunnel %s: refused: peer speaks tunnel version %u, this side "
					 "speaks %u: upgrade %s (muxshim and muxshim-host must come from "
					 "releases with the same tunnel version)",
					 l->cfg.peer_name, p[4], TUN_VERSION,
					 p[4] < TUN_VERSION ? "the peer" : "this side");
			else
				log_warn("tunnel %s: refused: %s (first bytes %02x %02x %02x %02x)",
					 l->cfg.peer_name, tun_err_str(rc), p[0], p[1], p[2], p[3]);
			link_close(l, TUN_GOAWAY_PROTOCOL, NULL);
			return -1;
		}
		l->hello_done = true;
		bool mine = l->cfg.token != NULL, theirs = l->peer_hello.flags & TUN_HELLO_AUTH;
		if (mine != theirs) {
			log_auth_refused(l, mine ? "peer has no token (start it with --token-file)"
						 : "peer requires a token (start this side with "
						   "--token-file)");
			link_close(l, TUN_GOAWAY_AUTH, mine ? "peer has no token" : "token required");
			return -1;
		}
		/* The shim, which dials, proves first. The helper proves only
		 * once the shim's proof has checked out: a helper that answered
		 * at once would hand anyone who connects an HMAC of the token
		 * over a nonce of their choosing, to test guesses against
		 * offline. */
		if (!mine)
			become_up(l);
		else if (l->cfg.role == TUN_ROLE_SHIM)
			send_auth(l);
		return l->state == LINK_DEAD ? -1 : TUN_HELLO_LEN;
	}
	/* Waiting for the peer's AUTH. */
	struct tun_frame f;
	if (l->ops->auth_pick && tun_frame_decode(p, n, l->local_hello.max_frame, &f) > 0 &&
	    f.type == TUN_AUTH) {
		size_t len = 0;
		if (l->ops->auth_pick(l, &l->local_hello, &l->peer_hello, f.payload, l->token, &len))
			l->cfg.token_len = len;
	}
	long n2 = tun_auth_check(p, n, l->token, l->cfg.token_len, &l->local_hello, &l->peer_hello,
				 &f);
	if (n2 == 0)
		return 0;
	if ((n2 > 0 || n2 == TUN_E_AUTH_MISMATCH) && l->ops->auth_allowed &&
	    !l->ops->auth_allowed(l)) {
		link_close(l, TUN_GOAWAY_AUTH, "too many failed authentications from this address; "
					       "retry later");
		return -1;
	}
	if ((n2 > 0 || n2 == TUN_E_AUTH_MISMATCH) && l->ops->auth_result)
		l->ops->auth_result(l, n2 > 0);
	if (n2 == TUN_E_AUTH_MISMATCH) {
		log_auth_refused(l, "token mismatch (both sides must use the same token file)");
		link_close(l, TUN_GOAWAY_AUTH, "token mismatch");
		return -1;
	}
	if (n2 == TUN_E_AUTH_EXPECTED && f.type == TUN_GOAWAY) {
		/* The helper refuses a wrong proof with GOAWAY AUTH instead of
		 * its own proof: say what it said. */
		const uint8_t *reason;
		size_t reason_len;
		uint32_t last, code = tun_goaway_fields(&f, &last, &reason, &reason_len);
		char why[320];
		snprintf(why, sizeof(why), "%.*s%sGOAWAY %s from the peer%s", (int)reason_len,
			 (const char *)reason, reason_len ? " (" : "", tun_goaway_str(code),
			 reason_len ? ")" : "");
		log_auth_refused(l, why);
		l->peer_goaway = true;
		l->peer_goaway_code = code;
		link_close(l, TUN_GOAWAY_NORMAL, why);
		return -1;
	}
	if (n2 < 0) {
		char why[128];
		snprintf(why, sizeof(why), "expected authentication, got %s",
			 n2 == TUN_E_AUTH_EXPECTED ? tun_type_str(f.type) : tun_err_str((int)n2));
		log_auth_refused(l, why);
		link_close(l, TUN_GOAWAY_AUTH, "authentication expected");
		return -1;
	}
	l->auth_done = true;
	l->rx_switch = true; /* the peer's bytes after its AUTH are records */
	if (!l->auth_sent)
		send_auth(l);
	if (l->state == LINK_DEAD)
		return -1;
	become_up(l);
	return n2;
}

/* Opens the next whole record in l->raw into l->in: 1 when it did, 0 when
 * none is whole yet, -1 when the tunnel was closed. l->in has room: it holds
 * less than one frame after process_input, and its cap is a frame plus
 * LINK_IN_CHUNK >= TUN_REC_MAX. */
static int open_record(struct link *l)
{
	size_t n, plain = 0;
	const uint8_t *p = buf_peek(&l->raw, &n);
	long span = p ? tun_rec_span(p, n) : 0;
	if (span == 0 || (span > 0 && n < (size_t)span))
		return 0;
	uint64_t seq = l->rec.rx.seq;
	uint8_t *dst = span > 0 ? buf_tail(&l->in, TUN_REC_MAX) : NULL;
	long used = dst ? tun_rec_open(&l->rec.rx, p, n, dst, &plain) : span < 0 ? span : -ENOMEM;
	if (used <= 0) {
		if (dst)
			buf_commit(&l->in, 0);
		if (used == TUN_E_RECORD_AUTH || used == TUN_E_RECORD_LEN)
			log_warn("tunnel %s: encrypted record %llu %s: the byte stream was changed, "
				 "replayed, reordered or cut in transit; closing the tunnel",
				 l->cfg.peer_name, (unsigned long long)seq,
				 used == TUN_E_RECORD_LEN ? "has an impossible length"
							  : "failed authentication");
		else
			log_warn("tunnel %s: cannot decrypt: %s; closing the tunnel", l->cfg.peer_name,
				 strerror((int)-used));
		link_close(l, TUN_GOAWAY_PROTOCOL, used == TUN_E_RECORD_AUTH || used == TUN_E_RECORD_LEN
							   ? "record authentication failed"
							   : "decryption failed");
		return -1;
	}
	buf_commit(&l->in, plain);
	buf_consume(&l->raw, (size_t)used);
	return 1;
}

static void process_input(struct link *l)
{
	for (;;) {
		size_t n;
		const uint8_t *p = buf_peek(&l->in, &n);
		if (!p) {
			/* No frame bytes left: the next record, if one is whole. */
			if (l->rx_sealed && open_record(l) > 0)
				continue;
			return;
		}
		long used;
		if (l->state == LINK_HANDSHAKE) {
			used = handshake_input(l, p, n);
		} else {
			struct tun_frame f;
			used = tun_frame_decode(p, n, l->local_hello.max_frame, &f);
			if (used < 0) {
				log_warn("tunnel %s: protocol error: %s", l->cfg.peer_name,
					 tun_err_str((int)used));
				link_close(l, TUN_GOAWAY_PROTOCOL, tun_err_str((int)used));
				return;
			}
			if (used > 0)
				dispatch(l, &f);
		}
		if (l->state == LINK_DEAD)
			return;
		if (used == 0 && l->rx_sealed && open_record(l) > 0)
			continue; /* a frame continues in the next record */
		if (used <= 0)
			return;
		buf_consume(&l->in, (size_t)used);
		if (l->rx_switch) {
			/* Whatever followed the peer's AUTH is records. */
			const uint8_t *rest = buf_peek(&l->in, &n);
			if (rest && buf_append(&l->raw, rest, n) < 0) {
				link_close(l, TUN_GOAWAY_INTERNAL, "out of memory");
				return;
			}
			buf_consume(&l->in, n);
			l->rx_switch = false;
			l->rx_sealed = true;
		}
	}
}

static void on_link(struct loop_watch *w, unsigned ev)
{
	struct link *l = w->ctx;
	if (ev & (LOOP_IN | LOOP_ERR)) {
		/* Always read: memory is bounded by the windows we granted. */
		struct buf *q = l->rx_sealed ? &l->raw : &l->in;
		size_t room = buf_space(q);
		if (room > sizeof(scratch))
			room = sizeof(scratch);
		/* Records are read straight into raw: they are copied once, by
		 * the decryption into in. */
		uint8_t *dst = l->rx_sealed ? buf_tail(q, room) : scratch;
		if (!dst) {
			link_close(l, TUN_GOAWAY_INTERNAL, "out of memory");
			return;
		}
		ssize_t r = plat_read(w->fd, dst, room);
		if (l->rx_sealed)
			buf_commit(q, r > 0 ? (size_t)r : 0);
		if (r == 0 && l->rx_sealed && buf_len(&l->raw)) {
			log_warn("tunnel %s: connection closed in the middle of an encrypted record "
				 "(%lu bytes of it arrived): the stream was cut; closing the tunnel",
				 l->cfg.peer_name, (unsigned long)buf_len(&l->raw));
			link_close(l, TUN_GOAWAY_PROTOCOL, "truncated record");
			return;
		}
		if (r == 0 || (r < 0 && r != -EAGAIN)) {
			link_close(l, TUN_GOAWAY_NORMAL,
				   r == 0 ? "connection closed by peer" : "connection reset by peer");
			return;
		}
		if (r > 0) {
			l->last_rx_ms = loop_now(l->loop);
			if (!l->rx_sealed)
				buf_append(&l->in, scratch, (size_t)r); /* room was checked */
			process_input(l);
			if (l->state == LINK_DEAD)
				return;
		}
	}
	if (ev & LOOP_OUT)
		flush_out(l);
	if (l->state != LINK_DEAD)
		link_update(l);
}

static void link_update(struct link *l)
{
	if (l->state == LINK_DEAD)
		return;
	/* Write what queued up right away: most wake-ups end with an empty
	 * queue and no need to poll for writability at all. */
	if (buf_len(&l->out) || buf_len(&l->wire))
		flush_out(l);
	if (l->state == LINK_DEAD)
		return;
	unsigned want = LOOP_IN | (buf_len(&l->out) || buf_len(&l->wire) ? LOOP_OUT : 0);
	if (buf_space(&l->in) == 0)
		want &= ~LOOP_IN; /* cannot happen: a full frame always fits */
	if (loop_watch_set(l->loop, &l->w, want) < 0)
		link_close(l, TUN_GOAWAY_INTERNAL, "event registration failed");
}

static void on_timer(struct loop_timer *t)
{
	struct link *l = t->ctx;
	uint64_t now = loop_now(l->loop);
	if (l->state == LINK_HANDSHAKE) {
		static struct log_ratelimit rl = { .interval_ms = 10000 };
		char what[64];
		snprintf(what, sizeof(what), "no handshake within %u ms", l->cfg.handshake_ms);
		log_refusal(l, &rl, what, "connections timed out in the handshake");
		link_close(l, TUN_GOAWAY_TIMEOUT, "handshake timeout");
		return;
	}
	uint64_t idle = now - l->last_rx_ms;
	/* Any byte received proves the peer alive: a busy tunnel never pings,
	 * and a ping stuck behind bulk data cannot cause a false alarm. */
	if (idle >= 3ull * l->cfg.keepalive_ms) {
		log_warn("tunnel %s: nothing received for %llu ms", l->cfg.peer_name,
			 (unsigned long long)idle);
		link_close(l, TUN_GOAWAY_TIMEOUT, "keepalive timeout");
		return;
	}
	if (idle >= l->cfg.keepalive_ms && !l->ping_outstanding) {
		uint8_t opaque[8];
		for (int i = 0; i < 8; i++)
			opaque[i] = (uint8_t)(now >> (56 - 8 * i));
		send_ping(l, false, opaque);
		l->ping_outstanding = true;
		link_update(l);
	}
	loop_timer_arm(l->loop, &l->timer, l->cfg.keepalive_ms / 2 ? l->cfg.keepalive_ms / 2 : 1);
}

/* The stream tables' secret (mux.c: why), drawn once per process before the
 * first tunnel carries a stream. */
static int table_key_once(void)
{
	static bool keyed;
	uint8_t key[16];
	if (keyed)
		return 0;
	int rc = plat_random(key, sizeof(key));
	if (rc < 0)
		return rc;
	tun_mux_set_key(key);
	keyed = true;
	return 0;
}

int link_new(struct loop *loop, int fd, const struct link_config *cfg,
	     const struct link_ops *ops, void *ctx, struct link **out)
{
	struct link *l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	if (cfg->token && (cfg->token_len == 0 || cfg->token_len > LINK_TOKEN_MAX)) {
		free(l);
		return -EINVAL;
	}
	l->loop = loop;
	l->cfg = *cfg;
	if (cfg->token) {
		memcpy(l->token, cfg->token, cfg->token_len);
		l->cfg.token = l->token;
	}
	l->ops = ops;
	l->ctx = ctx;
	l->state = LINK_HANDSHAKE;
	/* Input holds at least one whole frame of the size we advertise. */
	buf_init(&l->in, cfg->max_frame + TUN_HDR_LEN + LINK_IN_CHUNK);
	buf_init(&l->out, LINK_OUT_MAX);
	buf_init(&l->wire, LINK_WIRE_MAX);
	/* As much as in: after the AUTH, in's rest moves here. */
	buf_init(&l->raw, cfg->max_frame + TUN_HDR_LEN + LINK_IN_CHUNK);
	l->local_hello = (struct tun_hello){ .version = TUN_VERSION, .role = (uint8_t)cfg->role,
					     .flags = cfg->token ? TUN_HELLO_AUTH : 0,
					     .max_frame = cfg->max_frame, .window = cfg->window,
					     .max_streams = cfg->max_streams };
	int rc = plat_random(l->local_hello.nonce, TUN_NONCE_LEN);
	if (rc == 0)
		rc = table_key_once();
	if (rc < 0) {
		free(l);
		return rc;
	}
	plat_tcp_nodelay(fd);
	loop_watch_init(&l->w, fd, on_link, l);
	loop_timer_init(&l->timer, on_timer, l);
	l->last_rx_ms = loop_now(loop);
	uint8_t hello[TUN_HELLO_LEN];
	tun_hello_encode(&l->local_hello, hello);
	buf_append(&l->out, hello, sizeof(hello));
	loop_timer_arm(loop, &l->timer, cfg->handshake_ms);
	*out = l;
	link_update(l);
	if (l->state == LINK_DEAD)
		return -EPIPE; /* already closed and reported through ops->down */
	return 0;
}

static void link_free(void *ctx)
{
	struct link *l = ctx;
	memset(l->token, 0, sizeof(l->token));
	free(l);
}

void link_close(struct link *l, uint32_t goaway_code, const char *why)
{
	if (l->state == LINK_DEAD)
		return;
	bool was_up = l->state == LINK_UP;
	l->state = LINK_DEAD;
	/* Clients see EOF on every session: never a hang. */
	while (l->streams)
		stream_free(l->streams, l->streams->abortive);
	if (was_up || goaway_code != TUN_GOAWAY_NORMAL) {
		/* Best effort: one non-blocking write of whatever is queued plus
		 * the GOAWAY, so the peer can log why. */
		uint8_t f[TUN_CTRL_MAX];
		size_t n = tun_encode_goaway(f, l->mux_ready ? l->mux.last_id : 0, goaway_code, why);
		if (l->hello_done && buf_append(&l->out, f, n) == 0) {
			struct buf *q = l->tx_sealed ? &l->wire : &l->out;
			int rc = l->tx_sealed ? seal_out(l) : 0;
			size_t len;
			const uint8_t *p = buf_peek(q, &len);
			if (rc == 0 && p) {
				ssize_t w = plat_write(l->w.fd, p, len);
				(void)w;
			}
		}
	}
	loop_timer_cancel(l->loop, &l->timer);
	int fd = l->w.fd;
	loop_watch_remove(l->loop, &l->w);
	plat_close(fd);
	buf_release(&l->in);
	buf_release(&l->out);
	buf_release(&l->wire);
	buf_release(&l->raw);
	if (l->rec_ready)
		tun_rec_free(&l->rec);
	l->rec_ready = false;
	if (l->mux_ready)
		tun_mux_free(&l->mux);
	l->mux_ready = false;
	if (l->ops->down)
		l->ops->down(l, why ? why : "closed");
	loop_defer(l->loop, &l->reap, link_free, l);
}
