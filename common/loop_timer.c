/* The backend-independent half of the loop: starting and forgetting a watch,
 * timers, and deferred work.
 *
 * Timers live in an intrusive pairing heap ordered by (deadline, arming
 * order): every client session arms its own request clock and re-arms it as
 * its requests arrive, so arming must not cost a walk over every other
 * session's timer. Arming is O(1), cancelling and firing O(log n)
 * amortized, and nothing is allocated, so arming cannot fail. */
#include "loop_internal.h"

#include <stddef.h>

void loop_timer_init(struct loop_timer *t, loop_timer_cb cb, void *ctx)
{
	t->deadline_ms = 0;
	t->seq = 0;
	t->child = t->sibling = t->prev = NULL;
	t->armed = false;
	t->cb = cb;
	t->ctx = ctx;
}

static bool earlier(const struct loop_timer *a, const struct loop_timer *b)
{
	return a->deadline_ms < b->deadline_ms ||
	       (a->deadline_ms == b->deadline_ms && a->seq < b->seq);
}

/* Two heaps (roots without siblings) into one: the later root becomes the
 * first child of the earlier. */
static struct loop_timer *meld(struct loop_timer *a, struct loop_timer *b)
{
	if (!a)
		return b;
	if (!b)
		return a;
	if (earlier(b, a)) {
		struct loop_timer *t = a;
		a = b;
		b = t;
	}
	b->prev = a;
	b->sibling = a->child;
	if (a->child)
		a->child->prev = b;
	a->child = b;
	return a;
}

/* A root's children into one heap: meld them in pairs left to right, then
 * the pairs right to left (the two passes that give the amortized bound). */
static struct loop_timer *merge_pairs(struct loop_timer *first)
{
	struct loop_timer *stack = NULL; /* melded pairs, linked through sibling */
	while (first) {
		struct loop_timer *a = first, *b = a->sibling;
		first = b ? b->sibling : NULL;
		a->sibling = a->prev = NULL;
		if (b)
			b->sibling = b->prev = NULL;
		struct loop_timer *m = meld(a, b);
		m->sibling = stack;
		stack = m;
	}
	struct loop_timer *root = NULL;
	while (stack) {
		struct loop_timer *next = stack->sibling;
		stack->sibling = NULL;
		root = meld(root, stack);
		stack = next;
	}
	return root;
}

void loop_timer_cancel(struct loop *l, struct loop_timer *t)
{
	if (!t->armed)
		return;
	if (t == l->timers) {
		l->timers = merge_pairs(t->child);
	} else {
		/* prev is the parent when t is its first child, else the
		 * sibling before t. */
		if (t->prev->child == t)
			t->prev->child = t->sibling;
		else
			t->prev->sibling = t->sibling;
		if (t->sibling)
			t->sibling->prev = t->prev;
		l->timers = meld(l->timers, merge_pairs(t->child));
	}
	t->child = t->sibling = t->prev = NULL;
	t->armed = false;
	l->ntimers--;
}

void loop_timer_arm(struct loop *l, struct loop_timer *t, uint64_t delay_ms)
{
	loop_timer_cancel(l, t);
	t->deadline_ms = loop_now(l) + delay_ms;
	t->seq = l->timer_seq++;
	t->child = t->sibling = t->prev = NULL;
	l->timers = meld(l->timers, t);
	t->armed = true;
	l->ntimers++;
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
	 * for "now" sorts behind every due timer (ties keep arming order) and
	 * waits for the next iteration, so timers can never starve the fds. */
	uint64_t limit = l->timer_seq;
	while (l->timers && l->timers->deadline_ms <= now && l->timers->seq < limit) {
		struct loop_timer *t = l->timers;
		loop_timer_cancel(l, t);
		t->cb(t);
	}
}

void loop_defer(struct loop *l, struct loop_deferred *d, void (*fn)(void *ctx), void *ctx)
{
	d->fn = fn;
	d->ctx = ctx;
	d->next = NULL;
	*l->deferred_tail = d;
	l->deferred_tail = &d->next;
}

void loop_run_deferred(struct loop *l)
{
	/* fn may defer more (a link freeing its streams): they run in this
	 * same pass, in order. */
	while (l->deferred) {
		struct loop_deferred *d = l->deferred;
		l->deferred = d->next;
		if (!l->deferred)
			l->deferred_tail = &l->deferred;
		d->fn(d->ctx);
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
