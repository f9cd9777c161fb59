/* --upstream tunnel:HOST:PORT: every client session becomes a stream of one
 * persistent TCP connection to muxshim-host. The tunnel is dialled at start
 * and redialled with capped, jittered exponential backoff whenever it drops;
 * clients that arrive while it is down wait up to --tunnel-wait, then are
 * closed with a log line saying why. */
#include "shim.h"
#include "tunnel/link.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS   5000

/* A client session: its statistics (first, so that the stream's ctx is
 * both) and its --request-timeout clock, which runs once its stream is
 * open (waiting for the tunnel is not the client's doing). */
struct tsession {
	struct stats_session ss;
	struct loop_timer clock;
	struct link_stream *st;
};

struct pending {
	struct shim *s;
	int fd;
	struct stats_session *ss;
	uint8_t *pre;          /* handed over by the broker: sent first */
	size_t npre;
	struct loop_timer timer;
	struct pending *prev, *next;
};

enum tstate { T_DOWN, T_RESOLVING, T_CONNECTING, T_HANDSHAKE, T_UP };

static struct {
	struct shim *s;
	enum tstate state;
	struct link *link;
	struct loop_watch connect_w;
	struct loop_timer connect_timer; /* --connect-timeout for the dial */
	struct loop_timer retry;
	unsigned backoff_ms;
	struct pending *pending;
	unsigned npending;
	uint64_t connects;
	uint64_t last_dial_ms;
	bool stopping;
	uint64_t drops;
	struct log_ratelimit rl_down;
	struct log_ratelimit rl_wait;
	char name[ADDR_SPEC_MAX];
} tc;

static void tunnel_dial(void);

static void tsession_free(struct stats_session *ss)
{
	struct tsession *ts = (struct tsession *)ss;
	loop_timer_cancel(tc.s->loop, &ts->clock);
	free(ts);
}

static void on_request_timeout(struct loop_timer *t)
{
	struct tsession *ts = t->ctx;
	shim_request_timed_out(tc.s, &ts->ss);
	link_stream_reset(ts->st, TUN_RESET_CANCEL, "client request timeout");
}

static void schedule_redial(void)
{
	tc.state = T_DOWN;
	/* Half fixed, half random: many shims restarted together by a helper
	 * restart do not all knock at the same instant. */
	unsigned jitter = 0;
	plat_random(&jitter, sizeof(jitter));
	unsigned delay = tc.backoff_ms / 2 + jitter % (tc.backoff_ms / 2 + 1);
	loop_timer_arm(tc.s->loop, &tc.retry, delay);
	tc.backoff_ms = tc.backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : tc.backoff_ms * 2;
}

static void pending_drop(struct pending *p)
{
	if (p->prev)
		p->prev->next = p->next;
	else
		tc.pending = p->next;
	if (p->next)
		p->next->prev = p->prev;
	loop_timer_cancel(tc.s->loop, &p->timer);
	tc.npending--;
	free(p->pre);
	free(p);
}

static void pending_expired(struct loop_timer *t)
{
	struct pending *p = t->ctx;
	struct shim *s = p->s;
	unsigned suppressed;
	if (log_ratelimit_pass(&tc.rl_wait, loop_now(s->loop), &suppressed))
		log_warn("tunnel to %s is down: closed a client after waiting %u ms "
			 "(is muxshim-host running on the host?)%s",
			 tc.name, s->cfg.tunnel_wait_ms, suppressed ? " (more suppressed)" : "");
	s->upstream_failures++;
	stats_upstream_failure(&s->stats, -ENOTCONN);
	stats_session_close(&s->stats, p->ss);
	tsession_free(p->ss);
	plat_close(p->fd);
	pending_drop(p);
	s->nsessions--;
	shim_session_ended(s);
}

static void open_stream(struct shim *s, int fd, struct stats_session *ss, const uint8_t *pre,
			size_t npre)
{
	int err = 0;
	struct tsession *ts = (struct tsession *)ss;
	ts->st = link_stream_open(tc.link, fd, ss, &err);
	if (ts->st) {
		if (npre && (err = link_stream_write(ts->st, pre, npre)) < 0) {
			log_warn("tunnel to %s: cannot forward a request: %s", tc.name, strerror(-err));
			link_stream_reset(ts->st, TUN_RESET_LOCAL_ERROR, "cannot forward the request");
			return; /* stream_closed frees the session */
		}
		shim_request_clock(s, ss, &ts->clock);
		return;
	}
	stats_session_close(&s->stats, ss);
	tsession_free(ss);
	log_warn("tunnel to %s: cannot open a stream: %s", tc.name,
		 err == -ENOSPC ? "the helper's stream limit is reached" : strerror(-err));
	s->upstream_failures++;
	plat_close(fd);
	s->nsessions--;
	shim_session_ended(s);
}

static void link_up(struct link *l)
{
	(void)l;
	tc.state = T_UP;
	tc.backoff_ms = BACKOFF_FIRST_MS;
	log_info("tunnel to %s: up", tc.name);
	tc.s->stats.tunnel_up = true;
	tc.s->stats.tunnel_connects++;
	while (tc.pending && tc.state == T_UP) {
		struct pending *p = tc.pending;
		int fd = p->fd;
		struct stats_session *ss = p->ss;
		uint8_t *pre = p->pre;
		size_t npre = p->npre;
		p->pre = NULL;
		pending_drop(p);
		open_stream(tc.s, fd, ss, pre, npre);
		free(pre);
	}
}

static void link_down(struct link *l, const char *why)
{
	bool was_up = tc.state == T_UP;
	tc.link = NULL;
	tc.s->stats.tunnel_up = false;
	if (tc.stopping)
		return;
	if (was_up) {
		tc.drops++;
		tc.s->stats.tunnel_drops++;
	}
	unsigned suppressed;
	uint32_t code;
	if (was_up && link_peer_goaway(l, &code) && code == TUN_GOAWAY_NORMAL)
		/* The helper stopped or restarts, and said so: not a fault. */
		log_info("tunnel to %s: closed by the helper (%s); open sessions were closed, "
			 "reconnecting", tc.name, why);
	else if (was_up)
		log_warn("tunnel to %s: lost (%s); open sessions were closed, reconnecting", tc.name, why);
	else if (log_ratelimit_pass(&tc.rl_down, loop_now(tc.s->loop), &suppressed))
		log_warn("tunnel to %s: handshake failed (%s)", tc.name, why);
	schedule_redial();
}

static void link_stream_closed(struct link *l, struct link_stream *st)
{
	struct stats_session *ss = link_stream_ctx(st);
	(void)l;
	stats_session_close(&tc.s->stats, ss);
	tsession_free(ss);
	tc.s->nsessions--;
	shim_session_ended(tc.s);
}

static void link_rtt(struct link *l, unsigned ms)
{
	(void)l;
	tc.s->stats.tunnel_rtt_ms = ms;
	tc.s->stats.tunnel_rtt_known = true;
}

static size_t client_room(struct link_stream *st)
{
	struct tsession *ts = link_stream_ctx(st);
	return stats_client_room(&tc.s->stats, &ts->ss);
}

/* A refused request: the link resets the stream without sending this read
 * (and if it was the stream's first, the helper never hears of it). */
static int client_bytes(struct link_stream *st, const uint8_t *p, size_t n)
{
	struct tsession *ts = link_stream_ctx(st);
	int rc = stats_client_bytes(&tc.s->stats, &ts->ss, p, n);
	if (rc < 0) {
		shim_request_refused(tc.s, &ts->ss);
		return rc;
	}
	shim_request_clock(tc.s, &ts->ss, &ts->clock);
	return 0;
}

static void upstream_bytes(struct link_stream *st, const uint8_t *p, size_t n)
{
	stats_upstream_bytes(&tc.s->stats, link_stream_ctx(st), p, n);
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

static void start_link(int fd)
{
	struct shim *s = tc.s;
	struct link_config lc = {
		.role = TUN_ROLE_SHIM,
		.max_frame = 16 * 1024,
		.window = 256 * 1024,
		.max_streams = 1,
		.token = s->cfg.token_len ? s->cfg.token : NULL,
		.token_len = s->cfg.token_len,
		.keepalive_ms = s->cfg.keepalive_ms,
		.handshake_ms = 10000,
		.peer_name = tc.name,
	};
	tc.state = T_HANDSHAKE;
	tc.connects++;
	int rc = link_new(s->loop, fd, &lc, &ops, NULL, &tc.link);
	if (rc == -EPIPE)
		return; /* closed at once; link_down scheduled the redial */
	if (rc < 0) {
		log_error("tunnel to %s: %s", tc.name, strerror(-rc));
		plat_close(fd);
		schedule_redial();
	}
}

static void on_connect(struct loop_watch *w, unsigned ev)
{
	(void)ev;
	int fd = w->fd;
	int rc = plat_connect_result(fd);
	loop_timer_cancel(tc.s->loop, &tc.connect_timer);
	loop_watch_remove(tc.s->loop, w);
	if (rc < 0) {
		unsigned suppressed;
		if (log_ratelimit_pass(&tc.rl_down, loop_now(tc.s->loop), &suppressed))
			log_warn("tunnel to %s: cannot connect: %s (retrying)", tc.name, strerror(-rc));
		plat_close(fd);
		resolver_retry(tc.s->resolver);
		schedule_redial();
		return;
	}
	start_link(fd);
}

/* A SYN nobody answers (a helper whose listen queue overflowed, a host
 * that drops packets) would otherwise sit out the kernel's own retries, a
 * minute or more; dialling again is what gets through. */
static void on_connect_timeout(struct loop_timer *t)
{
	(void)t;
	int fd = tc.connect_w.fd;
	unsigned suppressed;
	loop_watch_remove(tc.s->loop, &tc.connect_w);
	plat_close(fd);
	if (log_ratelimit_pass(&tc.rl_down, loop_now(tc.s->loop), &suppressed))
		log_warn("tunnel to %s: cannot connect: no answer within %u ms (--connect-timeout; "
			 "retrying)", tc.name, tc.s->cfg.connect_timeout_ms);
	resolver_retry(tc.s->resolver);
	schedule_redial();
}

static void tunnel_dial(void)
{
	struct shim *s = tc.s;
	int fd;
	struct plat_addr a;
	int rc = resolver_get(s->resolver, &a);
	if (rc == -EAGAIN) {
		tc.state = T_RESOLVING; /* tunnel_resolved dials */
		return;
	}
	tc.state = T_CONNECTING;
	tc.last_dial_ms = loop_now(s->loop);
	bool resolved = rc == 0;
	if (resolved)
		rc = plat_tcp_connect_addr(&a, &fd);
	if (rc == 0) {
		start_link(fd);
		return;
	}
	if (rc == -EINPROGRESS) {
		loop_watch_init(&tc.connect_w, fd, on_connect, NULL);
		if (loop_watch_set(s->loop, &tc.connect_w, LOOP_OUT) == 0) {
			if (s->cfg.connect_timeout_ms)
				loop_timer_arm(s->loop, &tc.connect_timer, s->cfg.connect_timeout_ms);
			return;
		}
		loop_watch_remove(s->loop, &tc.connect_w);
		plat_close(fd);
	}
	unsigned suppressed;
	if (log_ratelimit_pass(&tc.rl_down, loop_now(s->loop), &suppressed))
		log_warn("tunnel to %s: cannot %s: %s (retrying)", tc.name,
			 resolved ? "connect" : "resolve the name", strerror(-rc));
	resolver_retry(s->resolver);
	schedule_redial();
}

static void on_retry(struct loop_timer *t)
{
	(void)t;
	tunnel_dial();
}

void tunnel_resolved(struct shim *s)
{
	(void)s;
	if (tc.state == T_RESOLVING)
		tunnel_dial();
}

void tunnel_init(struct shim *s)
{
	tc.s = s;
	tc.backoff_ms = BACKOFF_FIRST_MS;
	tc.rl_down.interval_ms = 10000;
	tc.rl_wait.interval_ms = 10000;
	addr_format(&s->cfg.upstream, tc.name, sizeof(tc.name));
	memmove(tc.name, tc.name + strlen("tunnel:"), strlen(tc.name) - strlen("tunnel:") + 1);
	loop_timer_init(&tc.retry, on_retry, NULL);
	loop_timer_init(&tc.connect_timer, on_connect_timeout, NULL);
	tunnel_dial();
}

/* A client for the tunnel: a stream now, or a place in the queue of those
 * waiting for it (unread, up to --tunnel-wait). pre: what goes first. */
static int tunnel_enter(struct shim *s, int fd, struct tsession *ts, const uint8_t *pre,
			size_t npre)
{
	struct stats_session *ss = &ts->ss;
	if (tc.state == T_UP) {
		open_stream(s, fd, ss, pre, npre);
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
	p->s = s;
	p->fd = fd;
	p->ss = ss;
	loop_timer_init(&p->timer, pending_expired, p);
	loop_timer_arm(s->loop, &p->timer, s->cfg.tunnel_wait_ms);
	struct pending **pp = &tc.pending, *prev = NULL;
	while (*pp) {
		prev = *pp;
		pp = &(*pp)->next;
	}
	p->prev = prev;
	*pp = p;
	tc.npending++;
	if (tc.state == T_DOWN && loop_now(s->loop) - tc.last_dial_ms >= BACKOFF_FIRST_MS) {
		/* A client is waiting: do not sit out the rest of a long backoff
		 * (but do not dial more often than the first backoff step). */
		loop_timer_cancel(s->loop, &tc.retry);
		tunnel_dial();
	}
	return 0;
}

void tunnel_accept(struct shim *s, int fd)
{
	struct tsession *ts = calloc(1, sizeof(*ts));
	if (!ts) {
		plat_close(fd);
		return;
	}
	loop_timer_init(&ts->clock, on_request_timeout, ts);
	s->nsessions++;
	s->sessions_total++;
	shim_attribute(s, &ts->ss, fd);
	if (tunnel_enter(s, fd, ts, NULL, 0) < 0) {
		stats_session_close(&s->stats, &ts->ss);
		free(ts);
		plat_close(fd);
		s->nsessions--;
		shim_session_ended(s);
	}
}

int tunnel_adopt(struct shim *s, int fd, struct stats_session *moved, const uint8_t *pre,
		 size_t n)
{
	if (n > SHIM_ADOPT_MAX)
		return -EMSGSIZE;
	struct tsession *ts = calloc(1, sizeof(*ts));
	if (!ts)
		return -ENOMEM;
	loop_timer_init(&ts->clock, on_request_timeout, ts);
	ts->ss = *moved;
	int rc = tunnel_enter(s, fd, ts, pre, n);
	if (rc < 0)
		free(ts);
	return rc;
}

void tunnel_shutdown(void)
{
	tc.stopping = true;
	loop_timer_cancel(tc.s->loop, &tc.retry);
	loop_timer_cancel(tc.s->loop, &tc.connect_timer);
	while (tc.pending) {
		plat_close(tc.pending->fd);
		stats_session_close(&tc.s->stats, tc.pending->ss);
		tsession_free(tc.pending->ss);
		pending_drop(tc.pending);
	}
	if (tc.link)
		link_close(tc.link, TUN_GOAWAY_NORMAL, "shim shutting down");
}
