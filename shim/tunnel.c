/* The tunnel kind of upstream (upstream.h), --upstream tunnel:HOST:PORT:
 * every client session becomes a stream of one persistent TCP connection
 * to muxshim-host, one such connection per tunnel upstream. The tunnel is
 * dialled at start and redialled with capped, jittered exponential backoff
 * whenever it drops; clients that arrive while it is down wait up to
 * --tunnel-wait, then are closed with a log line saying why. */
#include "shim.h"
#include "tunnel/link.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS   5000

/* A client session: its statistics (first, so that the stream's ctx is
 * both), what it carries (watch.h) and its --request-timeout clock, which
 * runs once its stream is open (waiting for the tunnel is not the client's
 * doing). */
struct tsession {
	struct stats_session ss;
	struct watch w;
	struct tunnel *t;
	struct loop_timer clock;
	struct link_stream *st;
};

struct pending {
	struct tunnel *t;
	int fd;
	struct stats_session *ss;
	uint8_t *pre;          /* handed over by the broker: sent first */
	size_t npre;
	struct loop_timer timer;
	struct pending *prev, *next;
};

enum tstate { T_DOWN, T_RESOLVING, T_CONNECTING, T_HANDSHAKE, T_UP };

struct tunnel {
	struct shim *s;
	struct upstream *u;
	enum tstate state;
	struct link *link;
	struct loop_watch connect_w;
	struct loop_timer connect_timer; /* --connect-timeout for the dial */
	struct loop_timer retry;
	unsigned backoff_ms;
	struct pending *pending;
	unsigned npending;
	uint64_t connects;
	uint64_t dial_failures; /* redials scheduled: a dial or the link failed */
	uint64_t last_dial_ms;
	bool stopping;
	uint64_t drops;
	struct log_ratelimit rl_down;
	struct log_ratelimit rl_wait;
	char name[ADDR_SPEC_MAX];
};
static void tunnel_dial(struct tunnel *tc);

static void tsession_free(struct stats_session *ss)
{
	struct tsession *ts = (struct tsession *)ss;
	loop_timer_cancel(ts->t->s->loop, &ts->clock);
	watch_free(&ts->w);
	free(ts);
}

static void on_request_timeout(struct loop_timer *t)
{
	struct tsession *ts = t->ctx;
	shim_request_timed_out(ts->t->s, &ts->ss);
	link_stream_reset(ts->st, TUN_RESET_CANCEL, "client request timeout");
}

static void schedule_redial(struct tunnel *tc)
{
	tc->state = T_DOWN;
	tc->dial_failures++;
	/* Half fixed, half random: many shims restarted together by a helper
	 * restart do not all knock at the same instant. */
	unsigned jitter = 0;
	plat_random(&jitter, sizeof(jitter));
	unsigned delay = tc->backoff_ms / 2 + jitter % (tc->backoff_ms / 2 + 1);
	loop_timer_arm(tc->s->loop, &tc->retry, delay);
	tc->backoff_ms = tc->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : tc->backoff_ms * 2;
}

static void pending_drop(struct pending *p)
{
	struct tunnel *tc = p->t;
	if (p->prev)
		p->prev->next = p->next;
	else
		tc->pending = p->next;
	if (p->next)
		p->next->prev = p->prev;
	loop_timer_cancel(tc->s->loop, &p->timer);
	tc->npending--;
	free(p->pre);
	free(p);
}

static void pending_expired(struct loop_timer *t)
{
	struct pending *p = t->ctx;
	struct tunnel *tc = p->t;
	struct shim *s = tc->s;
	unsigned suppressed;
	if (log_ratelimit_pass(&tc->rl_wait, loop_now(s->loop), &suppressed))
		log_warn("tunnel to %s is down: closed a client after waiting %u ms "
			 "(is muxshim-host running on the host?)%s",
			 tc->name, s->cfg.tunnel_wait_ms, suppressed ? " (more suppressed)" : "");
	s->upstream_failures++;
	tc->u->n->failures++;
	stats_upstream_failure(&s->stats, -ENOTCONN);
	stats_session_close(&s->stats, p->ss);
	tsession_free(p->ss);
	plat_close(p->fd);
	pending_drop(p);
	s->nsessions--;
	shim_session_ended(s);
}

static void open_stream(struct tunnel *tc, int fd, struct stats_session *ss, const uint8_t *pre,
			size_t npre)
{
	struct shim *s = tc->s;
	int err = 0;
	struct tsession *ts = (struct tsession *)ss;
	ts->st = link_stream_open(tc->link, fd, ss, &err);
	if (ts->st) {
		if (npre && (err = link_stream_write(ts->st, pre, npre)) < 0) {
			log_warn("tunnel to %s: cannot forward a request: %s", tc->name, strerror(-err));
			link_stream_reset(ts->st, TUN_RESET_LOCAL_ERROR, "cannot forward the request");
			return; /* stream_closed frees the session */
		}
		shim_request_clock(s, watch_awaits_client(&ts->w, ss), &ts->clock);
		return;
	}
	stats_session_close(&s->stats, ss);
	tsession_free(ss);
	log_warn("tunnel to %s: cannot open a stream: %s", tc->name,
		 err == -ENOSPC ? "the helper's stream limit is reached" : strerror(-err));
	s->upstream_failures++;
	tc->u->n->failures++;
	plat_close(fd);
	s->nsessions--;
	shim_session_ended(s);
}

static void link_up(struct link *l)
{
	struct tunnel *tc = link_ctx(l);
	tc->state = T_UP;
	tc->backoff_ms = BACKOFF_FIRST_MS;
	log_info("tunnel to %s: up", tc->name);
	tc->u->n->up = true;
	tc->u->n->connects++;
	broker_upstream_up(tc->u);
	while (tc->pending && tc->state == T_UP) {
		struct pending *p = tc->pending;
		int fd = p->fd;
		struct stats_session *ss = p->ss;
		uint8_t *pre = p->pre;
		size_t npre = p->npre;
		p->pre = NULL;
		pending_drop(p);
		open_stream(tc, fd, ss, pre, npre);
		free(pre);
	}
}

static void link_down(struct link *l, const char *why)
{
	struct tunnel *tc = link_ctx(l);
	bool was_up = tc->state == T_UP;
	tc->link = NULL;
	tc->u->n->up = false;
	if (tc->stopping)
		return;
	if (was_up) {
		tc->drops++;
		tc->u->n->drops++;
	}
	unsigned suppressed;
	uint32_t code;
	if (was_up && link_peer_goaway(l, &code) && code == TUN_GOAWAY_NORMAL)
		/* The helper stopped or restarts, and said so: not a fault. */
		log_info("tunnel to %s: closed by the helper (%s); open sessions were closed, "
			 "reconnecting", tc->name, why);
	else if (was_up)
		log_warn("tunnel to %s: lost (%s); open sessions were closed, reconnecting", tc->name,
			 why);
	else if (log_ratelimit_pass(&tc->rl_down, loop_now(tc->s->loop), &suppressed))
		log_warn("tunnel to %s: handshake failed (%s)", tc->name, why);
	schedule_redial(tc);
}

static void link_stream_closed(struct link *l, struct link_stream *st)
{
	struct tunnel *tc = link_ctx(l);
	struct stats_session *ss = link_stream_ctx(st);
	stats_session_close(&tc->s->stats, ss);
	tsession_free(ss);
	tc->s->nsessions--;
	shim_session_ended(tc->s);
}

static void link_rtt(struct link *l, unsigned ms)
{
	struct tunnel *tc = link_ctx(l);
	tc->u->n->rtt_ms = ms;
	tc->u->n->rtt_known = true;
}

static size_t client_room(struct link_stream *st)
{
	struct tsession *ts = link_stream_ctx(st);
	return watch_client_room(&ts->w);
}

/* A refused request: the link resets the stream without sending this read
 * (and if it was the stream's first, the helper never hears of it). */
static int client_bytes(struct link_stream *st, const uint8_t *p, size_t n)
{
	struct tsession *ts = link_stream_ctx(st);
	struct shim *s = ts->t->s;
	int rc = watch_client_bytes(&ts->w, &s->stats, &ts->ss, p, n);
	if (rc < 0) {
		shim_request_refused(s, &ts->ss, watch_refused(&ts->w));
		return rc;
	}
	shim_request_clock(s, watch_awaits_client(&ts->w, &ts->ss), &ts->clock);
	return 0;
}

static void upstream_bytes(struct link_stream *st, const uint8_t *p, size_t n)
{
	struct tsession *ts = link_stream_ctx(st);
	watch_upstream_bytes(&ts->w, &ts->t->s->stats, &ts->ss, p, n);
}

static const struct link_ops ops = {
	.up = link_up,
	.down = link_down,
	.stream_closed = link_stream_closed,
	.rtt = link_rtt,
	.local_room = client_room,
	.local_bytes = client_bytes,
	.remote_bytes = upstream_bytes,
};

static void start_link(struct tunnel *tc, int fd)
{
	struct shim *s = tc->s;
	struct link_config lc = {
		.role = TUN_ROLE_SHIM,
		.max_frame = 16 * 1024,
		.window = 256 * 1024,
		.max_streams = 1,
		.token = s->cfg.token_len ? s->cfg.token : NULL,
		.token_len = s->cfg.token_len,
		.keepalive_ms = s->cfg.keepalive_ms,
		.handshake_ms = 10000,
		.peer_name = tc->name,
	};
	tc->state = T_HANDSHAKE;
	tc->connects++;
	int rc = link_new(s->loop, fd, &lc, &ops, tc, &tc->link);
	if (rc == -EPIPE)
		return; /* closed at once; link_down scheduled the redial */
	if (rc < 0) {
		log_error("tunnel to %s: %s", tc->name, strerror(-rc));
		plat_close(fd);
		schedule_redial(tc);
	}
}

static void on_connect(struct loop_watch *w, unsigned ev)
{
	(void)ev;
	struct tunnel *tc = w->ctx;
	int fd = w->fd;
	int rc = plat_connect_result(fd);
	loop_timer_cancel(tc->s->loop, &tc->connect_timer);
	loop_watch_remove(tc->s->loop, w);
	if (rc < 0) {
		unsigned suppressed;
		if (log_ratelimit_pass(&tc->rl_down, loop_now(tc->s->loop), &suppressed))
			log_warn("tunnel to %s: cannot connect: %s (retrying)", tc->name, strerror(-rc));
		plat_close(fd);
		resolver_retry(tc->u->resolver);
		schedule_redial(tc);
		return;
	}
	start_link(tc, fd);
}

/* A SYN nobody answers (a helper whose listen queue overflowed, a host
 * that drops packets) would otherwise sit out the kernel's own retries, a
 * minute or more; dialling again is what gets through. */
static void on_connect_timeout(struct loop_timer *t)
{
	struct tunnel *tc = t->ctx;
	int fd = tc->connect_w.fd;
	unsigned suppressed;
	loop_watch_remove(tc->s->loop, &tc->connect_w);
	plat_close(fd);
	if (log_ratelimit_pass(&tc->rl_down, loop_now(tc->s->loop), &suppressed))
		log_warn("tunnel to %s: cannot connect: no answer within %u ms (--connect-timeout; "
			 "retrying)", tc->name, tc->s->cfg.connect_timeout_ms);
	resolver_retry(tc->u->resolver);
	schedule_redial(tc);
}

static void tunnel_dial(struct tunnel *tc)
{
	struct shim *s = tc->s;
	int fd;
	struct plat_addr a;
	int rc = resolver_get(tc->u->resolver, &a);
	if (rc == -EAGAIN) {
		tc->state = T_RESOLVING; /* tunnel_resolved dials */
		return;
	}
	tc->state = T_CONNECTING;
	tc->last_dial_ms = loop_now(s->loop);
	bool resolved = rc == 0;
	if (resolved)
		rc = plat_tcp_connect_addr(&a, &fd);
	if (rc == 0) {
		start_link(tc, fd);
		return;
	}
	if (rc == -EINPROGRESS) {
		loop_watch_init(&tc->connect_w, fd, on_connect, tc);
		if (loop_watch_set(s->loop, &tc->connect_w, LOOP_OUT) == 0) {
			if (s->cfg.connect_timeout_ms)
				loop_timer_arm(s->loop, &tc->connect_timer, s->cfg.connect_timeout_ms);
			return;
		}
		loop_watch_remove(s->loop, &tc->connect_w);
		plat_close(fd);
	}
	unsigned suppressed;
	if (log_ratelimit_pass(&tc->rl_down, loop_now(s->loop), &suppressed))
		log_warn("tunnel to %s: cannot %s: %s (retrying)", tc->name,
			 resolved ? "connect" : "resolve the name", strerror(-rc));
	resolver_retry(tc->u->resolver);
	schedule_redial(tc);
}

static void on_retry(struct loop_timer *t)
{
	tunnel_dial(t->ctx);
}

static void tunnel_resolved(struct upstream *u)
{
	struct tunnel *tc = u->tunnel;
	if (tc && tc->state == T_RESOLVING)
		tunnel_dial(tc);
}

static void tunnel_start(struct upstream *u)
{
	struct tunnel *tc = calloc(1, sizeof(*tc));
	if (!tc) {
		/* Sessions for it then fail at once (tunnel_enter). */
		log_error("tunnel to %s: out of memory", u->name);
		return;
	}
	u->tunnel = tc;
	tc->s = u->shim;
	tc->u = u;
	tc->backoff_ms = BACKOFF_FIRST_MS;
	tc->rl_down.interval_ms = 10000;
	tc->rl_wait.interval_ms = 10000;
	snprintf(tc->name, sizeof(tc->name), "%s", u->name + strlen("tunnel:"));
	loop_timer_init(&tc->retry, on_retry, tc);
	loop_timer_init(&tc->connect_timer, on_connect_timeout, tc);
	tunnel_dial(tc);
}

/* A client for the tunnel: a stream now, or a place in the queue of those
 * waiting for it (unread, up to --tunnel-wait). pre: what goes first. */
static int tunnel_enter(struct upstream *u, int fd, struct tsession *ts, const uint8_t *pre,
			size_t npre)
{
	struct tunnel *tc = u->tunnel;
	struct shim *s = u->shim;
	struct stats_session *ss = &ts->ss;
	if (!tc)
		return -ENOMEM;
	ts->t = tc;
	if (tc->state == T_UP) {
		open_stream(tc, fd, ss, pre, npre);
		return 0;
	}
	struct pending *p = calloc(1, sizeof(*p));
	if (!p || (npre && !(p->pre = malloc(npre)))) {
		free(p);
		return -ENOMEM;
	}
	if (npre)
		memcpy(p->pre, pre, npre);
	p->npre = npre;
	p->t = tc;
	p->fd = fd;
	p->ss = ss;
	loop_timer_init(&p->timer, pending_expired, p);
	loop_timer_arm(s->loop, &p->timer, s->cfg.tunnel_wait_ms);
	struct pending **pp = &tc->pending, *prev = NULL;
	while (*pp) {
		prev = *pp;
		pp = &(*pp)->next;
	}
	p->prev = prev;
	*pp = p;
	tc->npending++;
	if (tc->state == T_DOWN && loop_now(s->loop) - tc->last_dial_ms >= BACKOFF_FIRST_MS) {
		/* A client is waiting: do not sit out the rest of a long backoff
		 * (but do not dial more often than the first backoff step). */
		loop_timer_cancel(s->loop, &tc->retry);
		tunnel_dial(tc);
	}
	return 0;
}

static void tunnel_accept(struct upstream *u, int fd)
{
	struct shim *s = u->shim;
	struct tsession *ts = calloc(1, sizeof(*ts));
	if (!ts) {
		plat_close(fd);
		return;
	}
	loop_timer_init(&ts->clock, on_request_timeout, ts);
	watch_init(&ts->w, s->stats.inspect, &s->memo);
	s->nsessions++;
	s->sessions_total++;
	shim_attribute(s, &ts->ss, fd);
	if (tunnel_enter(u, fd, ts, NULL, 0) < 0) {
		stats_session_close(&s->stats, &ts->ss);
		free(ts);
		plat_close(fd);
		s->nsessions--;
		shim_session_ended(s);
	}
}

static int tunnel_adopt(struct upstream *u, int fd, const struct handover *h)
{
	struct shim *s = u->shim;
	if (h->len > SHIM_ADOPT_MAX)
		return -EMSGSIZE;
	struct tsession *ts = calloc(1, sizeof(*ts));
	if (!ts)
		return -ENOMEM;
	loop_timer_init(&ts->clock, on_request_timeout, ts);
	ts->ss = *h->stats;
	watch_init_handed(&ts->w, s->stats.inspect, &s->memo, h->connect, h->tag, h->port);
	int rc = tunnel_enter(u, fd, ts, h->msg, h->len);
	if (rc < 0) {
		watch_free(&ts->w);
		free(ts);
	}
	return rc;
}

static int tunnel_probe(struct upstream *u, char *why, size_t cap)
{
	const struct stats_upstream *n = u->n;
	if (!n->up) {
		snprintf(why, cap, "upstream %s: the tunnel is down (%llu connects, %llu drops so far)",
			 u->name, (unsigned long long)n->connects, (unsigned long long)n->drops);
		return -ENOTCONN;
	}
	snprintf(why, cap, "upstream %s: tunnel up", u->name);
	return 0;
}

/* Not up, and not in the first dial at start (whose outcome is worth
 * waiting for): lost, or every dial so far failed. */
static bool tunnel_unreachable(const struct upstream *u)
{
	const struct tunnel *tc = u->tunnel;
	return !tc || (tc->state != T_UP && tc->connects + tc->dial_failures > 0);
}

static void tunnel_stop(struct upstream *u)
{
	struct tunnel *tc = u->tunnel;
	if (!tc)
		return;
	tc->stopping = true;
	loop_timer_cancel(tc->s->loop, &tc->retry);
	loop_timer_cancel(tc->s->loop, &tc->connect_timer);
	if (tc->state == T_CONNECTING && tc->connect_w.fd >= 0) {
		int fd = tc->connect_w.fd;
		loop_watch_remove(tc->s->loop, &tc->connect_w);
		plat_close(fd);
	}
	while (tc->pending) {
		plat_close(tc->pending->fd);
		stats_session_close(&tc->s->stats, tc->pending->ss);
		tsession_free(tc->pending->ss);
		pending_drop(tc->pending);
	}
	if (tc->link)
		link_close(tc->link, TUN_GOAWAY_NORMAL, "shim shutting down");
	u->tunnel = NULL;
	free(tc);
}

const struct upstream_ops tunnel_ops = {
	.start = tunnel_start,
	.resolved = tunnel_resolved,
	.accept = tunnel_accept,
	.adopt = tunnel_adopt,
	.probe = tunnel_probe,
	.unreachable = tunnel_unreachable,
	.stop = tunnel_stop,
};
