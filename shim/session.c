/* One client session: connect upstream, then relay bytes both ways.
 *
 * Each direction ("half") reads at most one chunk per wake-up into the
 * shim's scratch buffer and writes it straight on; only what the receiver
 * would not take is kept, in a bounded per-half buffer, and while anything is
 * kept the sender is not read. A slow reader therefore slows its own sender
 * through the kernel's socket buffers, and an idle session holds no memory
 * beyond this struct. EOF is forwarded as a shutdown of the write side once
 * the half's buffer is empty, so either direction can finish first. */
#include "shim.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define RETRY_FIRST_MS 5
#define RETRY_MAX_MS   100

static void session_update(struct session *ss);
static void session_teardown(struct session *ss, const char *why, int err);

static void half_init(struct half *h)
{
	buf_init(&h->pending, SHIM_PENDING_MAX);
	h->pipe[0] = h->pipe[1] = -1;
	h->piped = 0;
	h->splice_failed = false;
	h->eof = false;
	h->shut = false;
	h->bytes = 0;
}

/* The receiver of this half is gone (it closed its end): nothing more can
 * be delivered this way, so the half is over, but the other direction may
 * still have bytes in flight toward the side that is still there. */
static void half_release(struct half *h)
{
	buf_release(&h->pending);
	plat_close(h->pipe[0]);
	plat_close(h->pipe[1]);
	h->pipe[0] = h->pipe[1] = -1;
	h->piped = 0;
}

static int half_receiver_gone(struct half *h, ssize_t err)
{
	if (err != -EPIPE && err != -ECONNRESET)
		return (int)err;
	half_release(h);
	h->eof = true;
	h->shut = true;
	return 0;
}

/* Writes out what is pending; forwards EOF once nothing is. */
static int half_flush(struct half *h, int dst)
{
	size_t n;
	const uint8_t *p;
	while (h->piped) {
		ssize_t w = plat_splice_out(h->pipe[0], dst, h->piped);
		if (w == -EAGAIN)
			return 0;
		if (w < 0)
			return half_receiver_gone(h, w);
		h->piped -= (size_t)w;
	}
	while ((p = buf_peek(&h->pending, &n)) != NULL) {
		ssize_t w = plat_write(dst, p, n);
		if (w == -EAGAIN)
			return 0;
		if (w < 0)
			return half_receiver_gone(h, w);
		buf_consume(&h->pending, (size_t)w);
	}
	if (h->eof && !h->shut) {
		int rc = plat_shutdown_write(dst);
		/* The receiver may already be gone entirely; then there is
		 * nobody left to tell, which is not an error of this half. */
		if (rc < 0 && rc != -ENOTCONN)
			return rc;
		h->shut = true;
	}
	return 0;
}

/* Bulk halves move to a pipe once nothing is pending in user space. */
static void half_maybe_splice(struct shim *s, struct session *ss, struct half *h)
{
	/* Bytes spliced never pass through here: not while the inspector
	 * still reads them (it stops once a Connect pipe is up). */
	if (!s->cfg.splice || h->pipe[0] >= 0 || h->splice_failed ||
	    h->bytes < SHIM_SPLICE_AFTER || buf_len(&h->pending) ||
	    !watch_done(&ss->watch))
		return;
	if (plat_pipe_open(h->pipe) < 0) {
		h->pipe[0] = h->pipe[1] = -1;
		h->splice_failed = true; /* out of fds or no splice: keep copying */
	}
}

/* Splice mode: one splice into the (empty) pipe, then out as far as dst
 * takes it. The pipe is only filled when empty: a pipe counts buffers, not
 * bytes, and a "full" pipe with a readable socket would spin the loop. */
static int half_pump_splice(struct shim *s, struct session *ss, struct half *h, int src,
			    int dst)
{
	ssize_t r = plat_splice_in(src, h->pipe[1], SHIM_PENDING_MAX);
	if (r == -EAGAIN)
		return 0;
	if (r < 0)
		return (int)r;
	if (r == 0)
		h->eof = true;
	h->piped += (size_t)r;
	h->bytes += (uint64_t)r;
	/* Counted, not inspected: the inspector finished before splicing. */
	if (h == &ss->up)
		stats_bytes_up(&s->stats, &ss->stats, (size_t)r);
	else
		stats_bytes_down(&s->stats, &ss->stats, (size_t)r);
	return half_flush(h, dst);
}

/* How many bytes the half may read from its source now: client bytes pass
 * the request gate (inspect.h), which stops reads at each request's end and
 * while a Connect result is awaited; once usbmuxd has closed, nothing it
 * could parse is left to protect and the client is read to notice its EOF. */
static size_t half_room(const struct session *ss, const struct half *h)
{
	if (h != &ss->up || ss->down.eof)
		return SIZE_MAX;
	return watch_client_room(&ss->watch);
}

/* Reads into the scratch buffer: one read, or under the gate several that
 * each stop where it says (a request's header, then its body), so that a
 * small request still goes out in one write. Every byte is shown to the
 * statistics (and so the inspector) before anything is forwarded. */
static int half_read(struct shim *s, struct session *ss, struct half *h, int src, size_t *got,
		     bool *eof)
{
	bool gated = h == &ss->up && s->stats.inspect;
	while (*got < sizeof(s->scratch)) {
		size_t want = sizeof(s->scratch) - *got, room = half_room(ss, h);
		if (room < want)
			want = room;
		if (want == 0)
			return 0;
		ssize_t r = plat_read(src, s->scratch + *got, want);
		if (r == -EAGAIN)
			return 0;
		if (r < 0)
			return (int)r;
		if (r == 0) {
			*eof = true;
			return 0;
		}
		h->bytes += (uint64_t)r;
		if (h == &ss->up) {
			int rc = watch_client_bytes(&ss->watch, &s->stats, &ss->stats, s->scratch + *got,
						    (size_t)r);
			if (rc < 0) {
				shim_request_refused(s, &ss->stats, watch_refused(&ss->watch));
				return rc; /* nothing of this read goes upstream */
			}
		} else {
			watch_upstream_bytes(&ss->watch, &s->stats, &ss->stats, s->scratch + *got,
					     (size_t)r);
		}
		*got += (size_t)r;
		if ((size_t)r < want || !gated)
			return 0;
	}
	return 0;
}

/* Reads from src, passes the bytes straight to dst; the remainder is kept. */
static int half_pump(struct shim *s, struct session *ss, struct half *h, int src, int dst)
{
	half_maybe_splice(s, ss, h);
	if (h->pipe[0] >= 0)
		return half_pump_splice(s, ss, h, src, dst);
	size_t got = 0;
	bool eof = false;
	int rc = half_read(s, ss, h, src, &got, &eof);
	if (h == &ss->up && (got || eof))
		shim_request_clock(s, watch_awaits_client(&ss->watch, &ss->stats), &ss->clock);
	if (rc < 0)
		return rc;
	if (got) {
		ssize_t w = plat_write(dst, s->scratch, got);
		if (w == -EAGAIN)
			w = 0;
		if (w < 0)
			return half_receiver_gone(h, w);
		/* Cannot exceed the cap: we only read while nothing is pending. */
		rc = buf_append(&h->pending, s->scratch + w, got - (size_t)w);
		if (rc < 0)
			return rc;
	}
	if (eof) {
		h->eof = true;
		return half_flush(h, dst);
	}
	return 0;
}

static bool half_wants_read(const struct session *ss, const struct half *h)
{
	return !h->eof && buf_len(&h->pending) == 0 && h->piped == 0 && half_room(ss, h) > 0;
}

static void on_client(struct loop_watch *w, unsigned ev)
{
	struct session *ss = w->ctx;
	int rc = 0;
	if ((ev & (LOOP_IN | LOOP_ERR)) && (w->want & LOOP_IN))
		rc = half_pump(ss->shim, ss, &ss->up, ss->client.fd, ss->upstream.fd);
	if (rc == 0 && (ev & (LOOP_OUT | LOOP_ERR)) && (w->want & LOOP_OUT))
		rc = half_flush(&ss->down, ss->client.fd);
	if (rc < 0)
		session_teardown(ss, "client side", rc);
	else
		session_update(ss);
}

static void session_connected(struct session *ss);

static void on_upstream(struct loop_watch *w, unsigned ev)
{
	struct session *ss = w->ctx;
	int rc = 0;
	if (ss->state == SESSION_CONNECTING) {
		/* A TCP upstream finished connecting, one way or the other. */
		loop_timer_cancel(ss->shim->loop, &ss->retry);
		rc = plat_connect_result(w->fd);
		if (rc < 0) {
			upstream_report_failure(ss->u, rc);
			session_teardown(ss, "upstream connect", rc);
			return;
		}
		session_connected(ss);
		return;
	}
	if ((ev & (LOOP_IN | LOOP_ERR)) && (w->want & LOOP_IN))
		rc = half_pump(ss->shim, ss, &ss->down, ss->upstream.fd, ss->client.fd);
	if (rc == 0 && (ev & (LOOP_OUT | LOOP_ERR)) && (w->want & LOOP_OUT))
		rc = half_flush(&ss->up, ss->upstream.fd);
	if (rc < 0)
		session_teardown(ss, "upstream side", rc);
	else
		session_update(ss);
}

/* Interest follows state: read a side only while its half can take data,
 * write a side only while something waits for it. */
static void session_update(struct session *ss)
{
	if (ss->state != SESSION_RELAY)
		return;
	if (ss->up.shut && ss->down.shut) {
		session_teardown(ss, NULL, 0);
		return;
	}
	struct loop *l = ss->shim->loop;
	unsigned cw = 0, uw = 0;
	if (half_wants_read(ss, &ss->up))
		cw |= LOOP_IN;
	if (buf_len(&ss->down.pending) || ss->down.piped)
		cw |= LOOP_OUT;
	if (half_wants_read(ss, &ss->down))
		uw |= LOOP_IN;
	if (buf_len(&ss->up.pending) || ss->up.piped)
		uw |= LOOP_OUT;
	int rc = loop_watch_set(l, &ss->client, cw);
	if (rc == 0)
		rc = loop_watch_set(l, &ss->upstream, uw);
	if (rc < 0)
		session_teardown(ss, "event registration", rc);
}

static void session_try_connect(struct session *ss)
{
	struct shim *s = ss->shim;
	int fd;
	int rc = upstream_connect(ss->u, &fd);
	if (rc == 0) {
		loop_watch_init(&ss->upstream, fd, on_upstream, ss);
		session_connected(ss);
		return;
	}
	uint64_t waited = loop_now(s->loop) - ss->started_ms;
	if (rc == -EINPROGRESS) {
		loop_watch_init(&ss->upstream, fd, on_upstream, ss);
		rc = loop_watch_set(s->loop, &ss->upstream, LOOP_OUT);
		if (rc < 0) {
			session_teardown(ss, "event registration", rc);
			return;
		}
		/* A TCP peer that never answers (its accept queue full, a
		 * firewall dropping SYNs) would leave the client waiting for
		 * the kernel's SYN retries, two minutes: bounded by the same
		 * --connect-timeout, counted from the session's start. */
		uint64_t left = waited < s->cfg.connect_timeout_ms ? s->cfg.connect_timeout_ms - waited : 0;
		loop_timer_arm(s->loop, &ss->retry, left);
		return;
	}
	bool no_fds = rc == -EMFILE || rc == -ENFILE;
	if (no_fds)
		acceptor_pause(&s->acceptor, rc); /* take no more clients for now */
	if ((rc == -EAGAIN || no_fds) && waited < s->cfg.connect_timeout_ms) {
		/* The upstream's listen queue is full, or we are out of
		 * descriptors: try again shortly rather than fail a client
		 * that a moment later can be served. */
		loop_timer_arm(s->loop, &ss->retry, ss->retry_delay_ms);
		ss->retry_delay_ms = ss->retry_delay_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS
									  : ss->retry_delay_ms * 2;
		return;
	}
	upstream_report_failure(ss->u, rc);
	session_teardown(ss, "upstream connect", rc);
}

static void session_connected(struct session *ss)
{
	ss->state = SESSION_RELAY;
	log_debug("session %llu: upstream connected", (unsigned long long)ss->id);
	session_update(ss);
}

static void on_retry(struct loop_timer *t)
{
	struct session *ss = t->ctx;
	if (ss->upstream.fd >= 0) { /* a TCP connect still in progress */
		upstream_report_failure(ss->u, -ETIMEDOUT);
		session_teardown(ss, "upstream connect", -ETIMEDOUT);
		return;
	}
	session_try_connect(ss);
}

static void on_request_timeout(struct loop_timer *t)
{
	struct session *ss = t->ctx;
	shim_request_timed_out(ss->shim, &ss->stats);
	session_teardown(ss, "request timeout", -ETIMEDOUT);
}

static void session_unlink(struct shim *s, struct session *ss)
{
	if (ss->prev)
		ss->prev->next = ss->next;
	else
		s->live = ss->next;
	if (ss->next)
		ss->next->prev = ss->prev;
	ss->prev = ss->next = NULL;
}

static struct session *session_new(struct upstream *u, int client_fd)
{
	struct shim *s = u->shim;
	struct session *ss = calloc(1, sizeof(*ss));
	if (!ss)
		return NULL;
	ss->shim = s;
	ss->u = u;
	ss->id = ++s->next_id;
	ss->state = SESSION_CONNECTING;
	ss->started_ms = loop_now(s->loop);
	ss->retry_delay_ms = RETRY_FIRST_MS;
	loop_watch_init(&ss->client, client_fd, on_client, ss);
	loop_watch_init(&ss->upstream, -1, on_upstream, ss);
	loop_timer_init(&ss->retry, on_retry, ss);
	loop_timer_init(&ss->clock, on_request_timeout, ss);
	half_init(&ss->up);
	half_init(&ss->down);
	watch_init(&ss->watch, s->stats.inspect, &s->memo);
	ss->next = s->live;
	if (s->live)
		s->live->prev = ss;
	s->live = ss;
	return ss;
}

void session_start(struct upstream *u, int client_fd)
{
	struct shim *s = u->shim;
	struct session *ss = session_new(u, client_fd);
	if (!ss) {
		log_error("out of memory: refusing a client");
		plat_close(client_fd);
		return;
	}
	s->nsessions++;
	s->sessions_total++;
	shim_attribute(s, &ss->stats, client_fd);
	log_debug("session %llu: client accepted", (unsigned long long)ss->id);
	shim_request_clock(s, watch_awaits_client(&ss->watch, &ss->stats), &ss->clock);
	session_try_connect(ss);
}

int session_adopt(struct upstream *u, int client_fd, const struct handover *h)
{
	struct shim *s = u->shim;
	if (h->len > SHIM_ADOPT_MAX)
		return -EMSGSIZE;
	struct session *ss = session_new(u, client_fd);
	if (!ss)
		return -ENOMEM;
	ss->stats = *h->stats;
	/* What the broker read and decided goes out first; the client is not
	 * read again before it has (a half reads only when nothing waits). */
	buf_init(&ss->up.pending, SHIM_ADOPT_MAX);
	watch_init_handed(&ss->watch, s->stats.inspect, &s->memo, h->connect, h->tag, h->port);
	int rc = buf_append(&ss->up.pending, h->msg, h->len);
	if (rc < 0) {
		watch_free(&ss->watch);
		buf_release(&ss->up.pending);
		session_unlink(s, ss);
		free(ss);
		return rc;
	}
	log_debug("session %llu: handed over by the broker (%zu bytes first)",
		  (unsigned long long)ss->id, h->len);
	shim_request_clock(s, watch_awaits_client(&ss->watch, &ss->stats), &ss->clock);
	session_try_connect(ss);
	return 0;
}

/* The one way a session ends: both fds closed, memory queued for release. */
static void session_teardown(struct session *ss, const char *why, int err)
{
	struct shim *s = ss->shim;
	if (ss->state == SESSION_DEAD)
		return;
	if (why)
		log_debug("session %llu: closed on %s error: %s (%llu bytes up, %llu down)",
			  (unsigned long long)ss->id, why, strerror(-err),
			  (unsigned long long)ss->up.bytes, (unsigned long long)ss->down.bytes);
	else
		log_debug("session %llu: finished (%llu bytes up, %llu down)",
			  (unsigned long long)ss->id, (unsigned long long)ss->up.bytes,
			  (unsigned long long)ss->down.bytes);
	ss->state = SESSION_DEAD;
	loop_timer_cancel(s->loop, &ss->retry);
	loop_timer_cancel(s->loop, &ss->clock);
	int cfd = ss->client.fd, ufd = ss->upstream.fd;
	loop_watch_remove(s->loop, &ss->client);
	loop_watch_remove(s->loop, &ss->upstream);
	plat_close(cfd);
	plat_close(ufd);
	half_release(&ss->up);
	half_release(&ss->down);
	stats_session_close(&s->stats, &ss->stats);
	watch_free(&ss->watch);

	session_unlink(s, ss);
	loop_defer(s->loop, &ss->reap, free, ss);
	s->nsessions--;
	shim_session_ended(s);
}

void session_close_all(struct shim *s)
{
	while (s->live)
		session_teardown(s->live, NULL, 0);
}
