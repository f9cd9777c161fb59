/* The two ways to read the statistics from outside: the control socket
 * (`muxshim stats`: one request line "json" or "table", one answer, close;
 * `muxshim health`: "health" or "live", answered "ok: ..." or "fail: ...")
 * and the Prometheus endpoint (one HTTP GET, one text answer, close).
 * Each connection is small, bounded and timed out, and never blocks the
 * loop that relays sessions. */
#include "shim.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CTL_REQ_MAX    4096
#define CTL_TIMEOUT_MS 5000
#define CTL_CONNS_MAX  16   /* at once, control and metrics together */

struct ctl_conn {
	struct shim *s;
	struct ctl_conn *prev, *next;   /* the open ones */
	struct loop_deferred reap;
	bool http;
	struct loop_watch w;
	struct loop_timer timeout;
	char req[CTL_REQ_MAX + 1];
	size_t req_len;
	char *resp;
	size_t resp_len, resp_off;
};

static struct ctl_conn *open_conns;
static unsigned nconns;

static void conn_close(struct ctl_conn *c)
{
	int fd = c->w.fd;
	loop_timer_cancel(c->s->loop, &c->timeout);
	loop_watch_remove(c->s->loop, &c->w);
	plat_close(fd);
	free(c->resp);
	c->resp = NULL;
	if (c->prev)
		c->prev->next = c->next;
	else
		open_conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	/* Freed after this loop iteration: an event for it may be pending. */
	c->w.ctx = NULL;
	loop_defer(c->s->loop, &c->reap, free, c);
	/* A scraper flood must not take descriptors from client sessions. */
	if (nconns-- == CTL_CONNS_MAX) {
		if (c->s->cfg.control_path)
			acceptor_update(&c->s->control);
		if (c->s->cfg.metrics_port)
			acceptor_update(&c->s->metrics);
	}
}


static void on_timeout(struct loop_timer *t)
{
	conn_close(t->ctx);
}

static bool request_complete(struct ctl_conn *c)
{
	if (c->http)
		return strstr(c->req, "\r\n\r\n") || strstr(c->req, "\n\n");
	return strchr(c->req, '\n') != NULL;
}

/* Live: our socket is still where clients look for it. Healthy: that, and
 * a session opened now could reach the upstream. */
static char *health_answer(struct shim *s, bool upstream, bool all)
{
	char why[2048];
	const size_t cap = sizeof(why) + 512;
	char *r = malloc(cap);
	if (!r)
		return NULL;
	if (!plat_unix_is_ours(s->cfg.listen_path, &s->listen_id)) {
		snprintf(r, cap, "fail: %s is no longer this daemon's socket (removed or replaced): "
				 "clients cannot reach it; restart muxshim\n", s->cfg.listen_path);
		return r;
	}
	if (!upstream) {
		snprintf(r, cap, "ok: serving %s\n", s->cfg.listen_path);
		return r;
	}
	int rc = upstreams_probe(s, all, why, sizeof(why));
	snprintf(r, cap, "%s: serving %s, %s\n", rc == 0 ? "ok" : "fail", s->cfg.listen_path, why);
	return r;
}

static char *answer(struct ctl_conn *c)
{
	struct shim *s = c->s;
	uint64_t now = loop_now(s->loop);
	if (c->http) {
		bool get = strncmp(c->req, "GET ", 4) == 0;
		char *body = get ? stats_render(&s->stats, "prometheus", now) : NULL;
		const char *status = get ? "200 OK" : "405 Method Not Allowed";
		size_t blen = body ? strlen(body) : 0;
		size_t cap = blen + 256;
		char *r = malloc(cap);
		if (r)
			snprintf(r, cap, "HTTP/1.0 %s\r\nContent-Type: text/plain; version=0.0.4\r\n"
					 "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
				 status, blen, body ? body : "");
		free(body);
		return r;
	}
	c->req[strcspn(c->req, "\r\n")] = '\0';
	if (strcmp(c->req, "health") == 0 || strcmp(c->req, "health-all") == 0 ||
	    strcmp(c->req, "live") == 0)
		return health_answer(s, c->req[0] == 'h', strcmp(c->req, "health-all") == 0);
	if (strcmp(c->req, "json") != 0 && strcmp(c->req, "table") != 0) {
		char *r = malloc(128);
		if (r)
			snprintf(r, 128, "error: unknown request (send \"json\", \"table\", "
					 "\"health\" or \"live\")\n");
		return r;
	}
	return stats_render(&s->stats, c->req, now);
}

static void on_conn(struct loop_watch *w, unsigned ev)
{
	struct ctl_conn *c = w->ctx;
	if (!c)
		return;
	if (!c->resp && (ev & (LOOP_IN | LOOP_ERR))) {
		ssize_t r = plat_read(w->fd, c->req + c->req_len, CTL_REQ_MAX - c->req_len);
		if (r == -EAGAIN)
			return;
		if (r <= 0 || (c->req_len += (size_t)r) >= CTL_REQ_MAX) {
			conn_close(c); /* gone, or a request larger than any we answer */
			return;
		}
		c->req[c->req_len] = '\0';
		if (!request_complete(c))
			return;
		c->resp = answer(c);
		if (!c->resp) {
			conn_close(c);
			return;
		}
		c->resp_len = strlen(c->resp);
		if (loop_watch_set(c->s->loop, &c->w, LOOP_OUT) < 0) {
			conn_close(c);
			return;
		}
	}
	if (c->resp && (ev & (LOOP_OUT | LOOP_ERR))) {
		ssize_t r = plat_write(w->fd, c->resp + c->resp_off, c->resp_len - c->resp_off);
		if (r == -EAGAIN)
			return;
		if (r < 0 || (c->resp_off += (size_t)r) == c->resp_len) {
			plat_shutdown_write(w->fd);
			conn_close(c);
		}
	}
}

static bool ctl_has_room(void *ctx)
{
	(void)ctx;
	return nconns < CTL_CONNS_MAX;
}

static void start_conn(struct shim *s, int fd, bool http)
{
	struct ctl_conn *c = calloc(1, sizeof(*c));
	if (!c) {
		plat_close(fd);
		return;
	}
	nconns++;
	c->s = s;
	c->http = http;
	c->next = open_conns;
	if (open_conns)
		open_conns->prev = c;
	open_conns = c;
	loop_watch_init(&c->w, fd, on_conn, c);
	loop_timer_init(&c->timeout, on_timeout, c);
	loop_timer_arm(s->loop, &c->timeout, CTL_TIMEOUT_MS);
	if (loop_watch_set(s->loop, &c->w, LOOP_IN) < 0)
		conn_close(c);
}

static void ctl_accepted(void *ctx, int fd)
{
	start_conn(ctx, fd, false);
}

static void http_accepted(void *ctx, int fd)
{
	start_conn(ctx, fd, true);
}

int control_start(struct shim *s)
{
	if (s->cfg.control_path) {
		bool replaced;
		int rc = plat_unix_listen(s->cfg.control_path, 0600, NULL, 16, &s->control_fd, &replaced,
					  &s->control_id);
		if (rc < 0) {
			/* Statistics are not worth refusing service for. */
			log_warn("no control socket at %s (%s): `muxshim stats` will not reach this "
				 "daemon", s->cfg.control_path, strerror(-rc));
			s->cfg.control_path = NULL;
		} else {
			acceptor_start(&s->control, s->loop, s->control_fd, 4, ctl_has_room,
				       ctl_accepted, s);
		}
	}
	if (s->cfg.metrics_port) {
		int rc = plat_tcp_listen(s->cfg.metrics_host, s->cfg.metrics_port, 16, &s->metrics_fd);
		if (rc < 0) {
			log_error("cannot listen for metrics on %s:%u: %s", s->cfg.metrics_host,
				  s->cfg.metrics_port, strerror(-rc));
			return rc;
		}
		acceptor_start(&s->metrics, s->loop, s->metrics_fd, 4, ctl_has_room, http_accepted,
			       s);
		log_info("Prometheus metrics on http://%s:%u/metrics", s->cfg.metrics_host,
			 s->cfg.metrics_port);
	}
	return 0;
}

void control_stop(struct shim *s)
{
	/* Connections still open at exit (a `muxshim stats` in flight) are
	 * closed and freed like any other. */
	while (open_conns)
		conn_close(open_conns);
	if (s->cfg.control_path) {
		acceptor_stop(&s->control);
		plat_unix_unlink_if_ours(s->cfg.control_path, &s->control_id);
		plat_close(s->control_fd);
	}
	if (s->cfg.metrics_port) {
		acceptor_stop(&s->metrics);
		plat_close(s->metrics_fd);
	}
}

/* One request to a running daemon; its answer goes to sink() as it comes.
 * 0 if an answer came, 1 otherwise (reported on stderr). Blocking I/O is
 * fine here. */
static int ctl_exchange(const char *cmd, const char *path, const char *request,
			void (*sink)(const char *p, size_t n, void *ctx), void *ctx)
{
	int fd;
	int rc = plat_unix_connect(path, &fd);
	if (rc < 0) {
		fprintf(stderr, "muxshim %s: cannot reach the daemon at %s: %s\n"
				"(is muxshim running? see --control)\n", cmd, path, strerror(-rc));
		return 1;
	}
	char req[16];
	snprintf(req, sizeof(req), "%s\n", request);
	size_t off = 0, len = strlen(req);
	uint64_t deadline = plat_monotonic_ms() + CTL_TIMEOUT_MS;
	char buf[65536];
	bool got = false;
	while (plat_monotonic_ms() < deadline) {
		ssize_t r;
		if (off < len) {
			r = plat_write(fd, req + off, len - off);
			if (r > 0)
				off += (size_t)r;
		}
		r = plat_read(fd, buf, sizeof(buf));
		if (r == 0)
			break;
		if (r > 0) {
			sink(buf, (size_t)r, ctx);
			got = true;
			continue;
		}
		if (r != -EAGAIN) {
			fprintf(stderr, "muxshim %s: %s\n", cmd, strerror((int)-r));
			plat_close(fd);
			return 1;
		}
		struct timespec ts = { 0, 2000000 };
		nanosleep(&ts, NULL);
	}
	plat_close(fd);
	if (!got)
		fprintf(stderr, "muxshim %s: no answer from the daemon at %s\n", cmd, path);
	return got ? 0 : 1;
}

static void to_stdout(const char *p, size_t n, void *ctx)
{
	(void)ctx;
	fwrite(p, 1, n, stdout);
}

/* `muxshim stats` */
int control_query(const char *path, const char *format)
{
	return ctl_exchange("stats", path, format, to_stdout, NULL);
}

struct health_reply {
	char text[4096];
	size_t len;
};

static void to_reply(const char *p, size_t n, void *ctx)
{
	struct health_reply *h = ctx;
	if (n > sizeof(h->text) - 1 - h->len)
		n = sizeof(h->text) - 1 - h->len;
	memcpy(h->text + h->len, p, n);
	h->len += n;
	h->text[h->len] = '\0';
}

/* `muxshim health`: 0 only if the daemon answered "ok". The answer is
 * printed either way (Docker keeps it in the container's health log). */
int control_health(const char *path, bool live, bool all)
{
	struct health_reply h = { .len = 0 };
	h.text[0] = '\0';
	if (ctl_exchange("health", path, live ? "live" : all ? "health-all" : "health", to_reply, &h) != 0)
		return 1;
	fputs(h.text, stdout);
	if (h.len && h.text[h.len - 1] != '\n')
		putchar('\n');
	return strncmp(h.text, "ok:", 3) == 0 ? 0 : 1;
}
