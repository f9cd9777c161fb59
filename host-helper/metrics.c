#include "metrics.h"

#include "daemon.h"
#include "log.h"
#include "plat.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mconn {
	struct metrics *m;
	struct loop_watch w;
	struct loop_timer timeout;
	char req[METRICS_REQ_MAX + 1];
	size_t req_len;
	char *resp;
	size_t resp_len, resp_off;
	struct mconn *prev, *next, *next_dead;
};

struct metrics {
	struct loop *loop;
	int fd;
	struct acceptor acceptor;
	void (*render)(void *ctx, struct metrics_text *t);
	void *ctx;
	struct mconn *conns, *dead;
	unsigned nconns;
};

void metrics_put(struct metrics_text *t, const char *fmt, ...)
{
	if (t->failed)
		return;
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(t->p ? t->p + t->len : NULL, t->p ? t->cap - t->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0) {
			t->failed = true;
			return;
		}
		if (t->p && t->len + (size_t)n < t->cap) {
			t->len += (size_t)n;
			return;
		}
		size_t cap = t->cap ? t->cap * 2 : 4096;
		while (cap < t->len + (size_t)n + 1)
			cap *= 2;
		char *p = realloc(t->p, cap);
		if (!p) {
			free(t->p);
			t->p = NULL;
			t->failed = true;
			return;
		}
		t->p = p;
		t->cap = cap;
	}
}

static void conn_close(struct mconn *c)
{
	struct metrics *m = c->m;
	int fd = c->w.fd;
	loop_timer_cancel(m->loop, &c->timeout);
	loop_watch_remove(m->loop, &c->w);
	plat_close(fd);
	free(c->resp);
	c->resp = NULL;
	if (c->prev)
		c->prev->next = c->next;
	else
		m->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->w.ctx = NULL;
	c->next_dead = m->dead;
	m->dead = c;
	if (m->nconns-- == METRICS_CONNS_MAX)
		acceptor_update(&m->acceptor);
}

static char *answer(struct mconn *c)
{
	bool get = strncmp(c->req, "GET ", 4) == 0;
	struct metrics_text body = { 0 }, r = { 0 };
	if (get)
		c->m->render(c->m->ctx, &body);
	const char *status = !get ? "405 Method Not Allowed"
			     : body.failed ? "500 Internal Server Error" : "200 OK";
	size_t blen = body.failed ? 0 : body.len;
	metrics_put(&r, "HTTP/1.0 %s\r\nContent-Type: text/plain; version=0.0.4\r\n"
			"Content-Length: %lu\r\nConnection: close\r\n\r\n%.*s",
		    status, (unsigned long)blen, (int)blen, body.p ? body.p : "");
	free(body.p);
	return r.failed ? NULL : r.p;
}

static void on_timeout(struct loop_timer *t)
{
	conn_close(t->ctx);
}

static void on_conn(struct loop_watch *w, unsigned ev)
{
	struct mconn *c = w->ctx;
	if (!c)
		return;
	if (!c->resp && (ev & (LOOP_IN | LOOP_ERR))) {
		ssize_t r = plat_read(w->fd, c->req + c->req_len, METRICS_REQ_MAX - c->req_len);
		if (r == -EAGAIN)
			return;
		if (r <= 0 || (c->req_len += (size_t)r) >= METRICS_REQ_MAX) {
			conn_close(c); /* gone, or a request larger than any we answer */
			return;
		}
		c->req[c->req_len] = '\0';
		if (!strstr(c->req, "\r\n\r\n") && !strstr(c->req, "\n\n"))
			return;
		c->resp = answer(c);
		if (!c->resp || loop_watch_set(c->m->loop, &c->w, LOOP_OUT) < 0) {
			conn_close(c);
			return;
		}
		c->resp_len = strlen(c->resp);
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

/* A scraper flood must not take descriptors from tunnels. */
static bool has_room(void *ctx)
{
	struct metrics *m = ctx;
	return m->nconns < METRICS_CONNS_MAX;
}

static void accepted(void *ctx, int fd)
{
	struct metrics *m = ctx;
	struct mconn *c = calloc(1, sizeof(*c));
	if (!c) {
		plat_close(fd);
		return;
	}
	m->nconns++;
	c->m = m;
	c->next = m->conns;
	if (m->conns)
		m->conns->prev = c;
	m->conns = c;
	loop_watch_init(&c->w, fd, on_conn, c);
	loop_timer_init(&c->timeout, on_timeout, c);
	loop_timer_arm(m->loop, &c->timeout, METRICS_TIMEOUT_MS);
	if (loop_watch_set(m->loop, &c->w, LOOP_IN) < 0)
		conn_close(c);
}

int metrics_start(struct loop *loop, const char *host, uint16_t port,
		  void (*render)(void *ctx, struct metrics_text *t), void *ctx, struct metrics **out)
{
	struct metrics *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	int rc = plat_tcp_listen(host, port, 16, &m->fd);
	if (rc < 0) {
		log_error("cannot listen for metrics on %s:%u: %s", host, port, plat_strerror(-rc));
		free(m);
		return rc;
	}
	m->loop = loop;
	m->render = render;
	m->ctx = ctx;
	acceptor_start(&m->acceptor, loop, m->fd, 4, has_room, accepted, m);
	log_info("Prometheus metrics on http://%s:%u/metrics", host, port);
	*out = m;
	return 0;
}

void metrics_reap(struct metrics *m)
{
	while (m && m->dead) {
		struct mconn *c = m->dead;
		m->dead = c->next_dead;
		free(c);
	}
}

void metrics_stop(struct metrics *m)
{
	if (!m)
		return;
	while (m->conns)
		conn_close(m->conns);
	metrics_reap(m);
	acceptor_stop(&m->acceptor);
	plat_close(m->fd);
	free(m);
}
