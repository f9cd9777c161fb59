/* Linux backend of loop.h: level-triggered epoll. */
#include "loop_internal.h"
#include "plat.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#define LOOP_BATCH 256

struct epoll_backend {
	int epfd;
	struct epoll_event events[LOOP_BATCH];
};

int loop_new(struct loop **out)
{
	struct loop *l = calloc(1, sizeof(*l));
	struct epoll_backend *b = calloc(1, sizeof(*b));
	if (!l || !b)
		goto out_nomem;
	b->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (b->epfd < 0) {
		int rc = -errno;
		free(b);
		free(l);
		return rc;
	}
	l->backend = b;
	l->deferred_tail = &l->deferred;
	l->now_ms = plat_monotonic_ms();
	*out = l;
	return 0;
out_nomem:
	free(b);
	free(l);
	return -ENOMEM;
}

void loop_free(struct loop *l)
{
	if (!l)
		return;
	loop_run_deferred(l);
	struct epoll_backend *b = l->backend;
	close(b->epfd);
	free(b);
	free(l);
}

int loop_watch_set(struct loop *l, struct loop_watch *w, unsigned want)
{
	struct epoll_backend *b = l->backend;
	if (w->fd < 0)
		return -EBADF;
	if (want == w->want && w->registered == (want != 0))
		return 0;
	if (want == 0) {
		if (w->registered && epoll_ctl(b->epfd, EPOLL_CTL_DEL, w->fd, NULL) < 0)
			return -errno;
		w->registered = false;
		w->want = 0;
		return 0;
	}
	struct epoll_event ev = { .events = 0, .data.ptr = w };
	if (want & LOOP_IN)
		ev.events |= EPOLLIN;
	if (want & LOOP_OUT)
		ev.events |= EPOLLOUT;
	if (epoll_ctl(b->epfd, w->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, w->fd, &ev) < 0)
		return -errno;
	w->registered = true;
	w->want = want;
	return 0;
}

void loop_watch_close(struct loop *l, struct loop_watch *w)
{
	(void)l;
	int fd = w->fd;
	/* The kernel forgets a registration when the last descriptor of its
	 * file closes: no EPOLL_CTL_DEL. An event of this fd still in the
	 * current batch is skipped, as for a removed watch (fd < 0). */
	w->fd = -1;
	w->want = 0;
	w->registered = false;
	if (fd >= 0)
		plat_close(fd);
}

int loop_run_once(struct loop *l, int max_wait_ms)
{
	struct epoll_backend *b = l->backend;
	l->now_ms = plat_monotonic_ms();
	int n = epoll_wait(b->epfd, b->events, LOOP_BATCH, loop_timer_wait_ms(l, max_wait_ms));
	l->now_ms = plat_monotonic_ms();
	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	for (int i = 0; i < n; i++) {
		struct loop_watch *w = b->events[i].data.ptr;
		uint32_t e = b->events[i].events;
		unsigned ev = 0;
		if (e & EPOLLIN)
			ev |= LOOP_IN;
		if (e & EPOLLOUT)
			ev |= LOOP_OUT;
		if (e & (EPOLLERR | EPOLLHUP))
			ev |= LOOP_ERR;
		/* An earlier callback in this batch may have removed the watch
		 * or lost interest in what is being reported. */
		if (w->fd < 0 || !w->registered)
			continue;
		ev &= w->want | LOOP_ERR;
		if (ev)
			w->cb(w, ev);
	}
	loop_timer_dispatch(l);
	loop_run_deferred(l);
	return 0;
}
