/* The backend-independent half of the loop: starting and forgetting a watch,
 * and timers, kept in a list sorted by deadline. Daemons arm a handful
 * (backoff, pauses, per-session connect retries), so a list beats a heap on
 * simplicity at no measurable cost. */
#include "loop_internal.h"

#include <stddef.h>

void loop_timer_init(struct loop_timer *t, loop_timer_cb cb, void *ctx)
{
	t->deadline_ms = 0;
	t->prev = t->next = NULL;
	t->armed = false;
	t->cb = cb;
	t->ctx = ctx;
}

void loop_timer_cancel(struct loop *l, struct loop_timer *t)
{
	if (!t->armed)
		return;
	if (t->prev)
		t->prev->next = t->next;
	else
		l->timers = t->next;
	if (t->next)
		t->next->prev = t->prev;
	t->prev = t->next = NULL;
	t->armed = false;
}

void loop_timer_arm(struct loop *l, struct loop_timer *t, uint64_t delay_ms)
{
	loop_timer_cancel(l, t);
	t->deadline_ms = loop_now(l) + delay_ms;
	t->seq = l->timer_seq++;
	struct loop_timer **pp = &l->timers, *prev = NULL;
	while (*pp && (*pp)->deadline_ms <= t->deadline_ms) {
		prev = *pp;
		pp = &(*pp)->next;
	}
	t->next = *pp;
	t->prev = prev;
	if (*pp)
		(*pp)->prev = t;
	*pp = t;
	t->armed = true;
}

int loop_timer_wait_ms(struct loop *l, int max_wait_ms)
{
	if (!l->timers)
		return max_wait_ms;
	uint64_t now = loop_now(l);
	uint64_t due = l->timers->deadline_ms;
	uint64_t wait = due > now ? due - now : 0;
	if (max_wait_ms >= 0 && wait > (uint64_t)max_wait_ms)
		return max_wait_ms;
	return (int)wait;
}

void loop_timer_dispatch(struct loop *l)
{
	uint64_t now = loop_now(l);
	/* Only timers armed before this dispatch run: a callback that re-arms
	 * for "now" lands behind every due timer (ties keep arming order) and
	 * waits for the next iteration, so timers can never starve the fds. */
	uint64_t limit = l->timer_seq;
	while (l->timers && l->timers->deadline_ms <= now && l->timers->seq < limit) {
		struct loop_timer *t = l->timers;
		loop_timer_cancel(l, t);
		t->cb(t);
	}
}

uint64_t loop_now(struct loop *l)
{
	return l->now_ms;
}

void loop_watch_remove(struct loop *l, struct loop_watch *w)
{
	if (w->fd >= 0 && w->registered)
		loop_watch_set(l, w, 0);
	w->fd = -1;
	w->want = 0;
	w->registered = false;
}

void loop_watch_init(struct loop_watch *w, int fd, loop_watch_cb cb, void *ctx)
{
	w->fd = fd;
	w->want = 0;
	w->registered = false;
	w->slot = 0;
	w->cb = cb;
	w->ctx = ctx;
}
