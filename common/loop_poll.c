/* poll-style backend of loop.h, over plat_poll: WSAPoll on Windows, poll(2)
 * on POSIX systems without epoll (macOS). Level-triggered like the epoll
 * backend, with the same rules (see loop.h).
 *
 * The registered watches live in one array (and a parallel plat_pollfd
 * array handed to plat_poll); each watch knows its slot, so changing or
 * removing it is O(1): removal moves the last entry into the hole. Ready
 * watches are copied out before any callback runs, because callbacks add
 * and remove watches, which reorders the arrays. poll costs O(registered
 * fds) per wake-up: fine for a helper's few hundred sockets.
 *
 * One difference remains: WSAPoll reports a peer's half-close as POLLHUP
 * (LOOP_ERR) on every call, whatever was asked for, where poll(2) and epoll
 * report a hang-up only once both directions are closed. A watch that only
 * waits for room to write to such a socket is therefore woken at once, again
 * and again, until the write completes or fails. */
#include "loop_internal.h"
#include "plat.h"

#include <errno.h>
#include <stdlib.h>

struct ready {
	struct loop_watch *w;
	unsigned events;
};

struct poll_backend {
	struct plat_pollfd *fds;
	struct loop_watch **watches;
	size_t n, cap;
	struct ready *ready;   /* only resized between batches */
	size_t ready_cap;
};

int loop_new(struct loop **out)
{
	struct loop *l = calloc(1, sizeof(*l));
	struct poll_backend *b = calloc(1, sizeof(*b));
	if (!l || !b) {
		free(b);
		free(l);
		return -ENOMEM;
	}
	l->backend = b;
	l->deferred_tail = &l->deferred;
	l->now_ms = plat_monotonic_ms();
	*out = l;
	return 0;
}

void loop_free(struct loop *l)
{
	if (!l)
		return;
	loop_run_deferred(l);
	struct poll_backend *b = l->backend;
	free(b->fds);
	free(b->watches);
	free(b->ready);
	free(b);
	free(l);
}

static int grow(struct poll_backend *b)
{
	size_t cap = b->cap ? b->cap * 2 : 64;
	struct plat_pollfd *fds = realloc(b->fds, cap * sizeof(*fds));
	if (!fds)
		return -ENOMEM;
	b->fds = fds;
	struct loop_watch **ws = realloc(b->watches, cap * sizeof(*ws));
	if (!ws)
		return -ENOMEM;
	b->watches = ws;
	b->cap = cap;
	return 0;
}

static void unregister(struct poll_backend *b, struct loop_watch *w)
{
	size_t last = b->n - 1;
	if (w->slot != last) {
		b->fds[w->slot] = b->fds[last];
		b->watches[w->slot] = b->watches[last];
		b->watches[w->slot]->slot = w->slot;
	}
	b->n--;
	w->registered = false;
}

void loop_watch_close(struct loop *l, struct loop_watch *w)
{
	int fd = w->fd;
	loop_watch_remove(l, w);
	if (fd >= 0)
		plat_close(fd);
}

int loop_watch_set(struct loop *l, struct loop_watch *w, unsigned want)
{
	struct poll_backend *b = l->backend;
	if (w->fd < 0)
		return -EBADF;
	if (want == w->want && w->registered == (want != 0))
		return 0;
	if (want == 0) {
		if (w->registered)
			unregister(b, w);
		w->want = 0;
		return 0;
	}
	if (!w->registered) {
		if (b->n == b->cap) {
			int rc = grow(b);
			if (rc < 0)
				return rc;
		}
		w->slot = (unsigned)b->n++;
		b->watches[w->slot] = w;
		w->registered = true;
	}
	b->fds[w->slot] = (struct plat_pollfd){
		.fd = w->fd,
		.events = ((want & LOOP_IN) ? PLAT_POLL_IN : 0u) |
			  ((want & LOOP_OUT) ? PLAT_POLL_OUT : 0u),
	};
	w->want = want;
	return 0;
}

int loop_run_once(struct loop *l, int max_wait_ms)
{
	struct poll_backend *b = l->backend;
	if (b->ready_cap < b->n) {
		struct ready *r = realloc(b->ready, b->cap * sizeof(*r));
		if (!r)
			return -ENOMEM;
		b->ready = r;
		b->ready_cap = b->cap;
	}
	l->now_ms = plat_monotonic_ms();
	int n = plat_poll(b->fds, b->n, loop_timer_wait_ms(l, max_wait_ms));
	l->now_ms = plat_monotonic_ms();
	if (n < 0)
		return n == -EINTR ? 0 : n;
	size_t nready = 0;
	for (size_t i = 0; i < b->n && nready < (size_t)n; i++) {
		unsigned re = b->fds[i].revents, ev = 0;
		if (!re)
			continue;
		if (re & PLAT_POLL_IN)
			ev |= LOOP_IN;
		if (re & PLAT_POLL_OUT)
			ev |= LOOP_OUT;
		if (re & PLAT_POLL_ERR)
			ev |= LOOP_ERR;
		b->ready[nready++] = (struct ready){ .w = b->watches[i], .events = ev };
	}
	for (size_t i = 0; i < nready; i++) {
		struct loop_watch *w = b->ready[i].w;
		/* An earlier callback in this batch may have removed the watch
		 * or lost interest in what is being reported. */
		if (w->fd < 0 || !w->registered)
			continue;
		unsigned ev = b->ready[i].events & (w->want | LOOP_ERR);
		if (ev)
			w->cb(w, ev);
	}
	loop_timer_dispatch(l);
	loop_run_deferred(l);
	return 0;
}
