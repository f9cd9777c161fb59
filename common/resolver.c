/* The upstream's address, resolved off the loop (both daemons: the shim's
 * tunnel or TCP upstream, the helper's TCP usbmuxd).
 *
 * getaddrinfo on a name waits for DNS (seconds when a resolver is slow or
 * gone), and the loop serves every client: it must never wait. A literal
 * address is resolved in place (that never blocks). A name is resolved by
 * one thread, started before the sandbox (which then covers it too: the
 * filter is synchronised to every thread) and woken through a socket pair;
 * the loop reads the answer when that socket turns readable. The thread is
 * POSIX threads on every platform: the Windows build links mingw-w64's
 * winpthreads statically (Makefile), and everything else it does goes
 * through plat.h.
 *
 * Callers take the last answer (resolver_get); a name is resolved again when
 * that answer is older than RESOLVE_FRESH_MS or a connect to it failed, so a
 * container whose host.docker.internal moves follows it. */
#include "resolver.h"
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#define RESOLVE_FRESH_MS 30000

struct resolver {
	char host[ADDR_HOST_MAX];
	uint16_t port;
	bool literal;
	struct loop *loop;
	void (*ready)(void *ctx);
	void *ctx;
	struct loop_watch w;      /* our end of the wake-up pair */
	int thread_fd;            /* the thread's end */
	uint64_t got_ms;          /* when the current answer came */
	bool asked;               /* a request is with the thread */
	int last_rc;              /* 0, or why the last resolution failed */
	struct plat_addr addr;    /* valid when last_rc == 0 and have */
	bool have;

	pthread_t thread;
	bool thread_up;
	pthread_mutex_t mu;       /* guards the fields below */
	pthread_cond_t cv;
	bool started, want, quit, busy;
	int t_rc;
	struct plat_addr t_addr;
};

static void *resolver_main(void *arg)
{
	struct resolver *r = arg;
	pthread_mutex_lock(&r->mu);
	/* The thread's own set-up (on Linux: rseq, robust futexes) is done:
	 * the sandbox may come now, which would refuse those calls. */
	r->started = true;
	pthread_cond_broadcast(&r->cv);
	for (;;) {
		while (!r->want && !r->quit)
			pthread_cond_wait(&r->cv, &r->mu);
		if (r->quit)
			break;
		r->want = false;
		r->busy = true;
		pthread_mutex_unlock(&r->mu);
		struct plat_addr a;
		int rc = plat_resolve(r->host, r->port, &a);
		pthread_mutex_lock(&r->mu);
		r->busy = false;
		r->t_rc = rc;
		if (rc == 0)
			r->t_addr = a;
		/* One byte says "an answer is there"; a full pair only means a
		 * wake-up is already pending. */
		uint8_t one = 1;
		(void)plat_write(r->thread_fd, &one, 1);
	}
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

static void on_answer(struct loop_watch *w, unsigned events)
{
	struct resolver *r = w->ctx;
	(void)events;
	uint8_t drain[16];
	while (plat_read(w->fd, drain, sizeof(drain)) > 0)
		;
	pthread_mutex_lock(&r->mu);
	r->last_rc = r->t_rc;
	if (r->t_rc == 0) {
		r->addr = r->t_addr;
		r->have = true;
	}
	pthread_mutex_unlock(&r->mu);
	r->asked = false;
	r->got_ms = loop_now(r->loop);
	if (r->last_rc < 0)
		log_debug("resolving %s: %s", r->host, plat_strerror(-r->last_rc));
	if (r->ready)
		r->ready(r->ctx);
}

static void ask(struct resolver *r)
{
	if (r->asked)
		return;
	r->asked = true;
	pthread_mutex_lock(&r->mu);
	r->want = true;
	pthread_cond_signal(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

int resolver_start(struct resolver **out, struct loop *loop, const char *host, uint16_t port,
		   void (*ready)(void *ctx), void *ctx)
{
	struct resolver *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	snprintf(r->host, sizeof(r->host), "%s", host);
	r->port = port;
	r->loop = loop;
	r->ready = ready;
	r->ctx = ctx;
	loop_watch_init(&r->w, -1, on_answer, r);
	r->thread_fd = -1;
	int rc = plat_resolve_literal(host, port, &r->addr);
	if (rc == 0) {
		r->literal = r->have = true;
		*out = r;
		return 0;
	}
	if (rc != -EAGAIN) {
		free(r);
		return rc;
	}
	int fds[2];
	if ((rc = plat_socketpair(fds)) < 0) {
		free(r);
		return rc;
	}
	loop_watch_init(&r->w, fds[0], on_answer, r);
	r->thread_fd = fds[1];
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
	if ((rc = loop_watch_set(loop, &r->w, LOOP_IN)) < 0 ||
	    (rc = -pthread_create(&r->thread, NULL, resolver_main, r)) < 0) {
		loop_watch_remove(loop, &r->w);
		plat_close(fds[0]);
		plat_close(fds[1]);
		pthread_cond_destroy(&r->cv);
		pthread_mutex_destroy(&r->mu);
		free(r);
		return rc;
	}
	r->thread_up = true;
	pthread_mutex_lock(&r->mu);
	while (!r->started)
		pthread_cond_wait(&r->cv, &r->mu);
	pthread_mutex_unlock(&r->mu);
	ask(r);
	*out = r;
	return 0;
}

int resolver_get(struct resolver *r, struct plat_addr *a)
{
	if (r->literal) {
		*a = r->addr;
		return 0;
	}
	if (!r->have || loop_now(r->loop) - r->got_ms >= RESOLVE_FRESH_MS)
		ask(r);
	if (!r->have)
		return r->last_rc ? r->last_rc : -EAGAIN; /* and an attempt is on its way */
	*a = r->addr; /* possibly stale for one refresh: better than waiting */
	return 0;
}

int resolver_connect(struct resolver *r, int *fd)
{
	struct plat_addr a;
	int rc = resolver_get(r, &a);
	return rc < 0 ? rc : plat_tcp_connect_addr(&a, fd);
}

void resolver_retry(struct resolver *r)
{
	if (!r->literal)
		ask(r);
}

void resolver_stop(struct resolver *r)
{
	if (!r)
		return;
	if (r->thread_up) {
		pthread_mutex_lock(&r->mu);
		r->quit = true;
		bool busy = r->busy;
		pthread_cond_signal(&r->cv);
		pthread_mutex_unlock(&r->mu);
		if (busy) {
			/* A lookup DNS is still answering: exiting ends it; waiting
			 * would hold the shutdown for the resolver's timeouts. */
			log_debug("resolving %s: still waiting for DNS at exit", r->host);
			return;
		}
		pthread_join(r->thread, NULL);
		pthread_cond_destroy(&r->cv);
		pthread_mutex_destroy(&r->mu);
	}
	if (r->w.fd >= 0) {
		int fd = r->w.fd;
		loop_watch_remove(r->loop, &r->w);
		plat_close(fd);
	}
	if (r->thread_fd >= 0)
		plat_close(r->thread_fd);
	free(r);
}
