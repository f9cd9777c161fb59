/* A small single-threaded event loop: fd watches and one-shot timers.
 *
 * The interface is deliberately narrow so that each OS gets one backend file
 * (loop_epoll.c on Linux; a poll/WSAPoll backend elsewhere) and the daemons'
 * logic never sees the difference.
 *
 * Ownership: watches and timers are embedded in the caller's objects. A
 * watch's fd is registered only while its interest mask is non-zero, so an
 * fd that hung up is not reported again and again while its owner cannot
 * act on it. Callbacks may change or remove any watch, including ones whose
 * events are already pending in the current batch: a removed watch (fd < 0)
 * or a watch whose interest no longer matches is skipped. Objects that own
 * watches must therefore not be freed inside a callback: loop_defer their
 * freeing, which runs once the iteration's callbacks are done. */
#ifndef MUXSHIM_LOOP_H
#define MUXSHIM_LOOP_H

#include <stdbool.h>
#include <stdint.h>

enum { LOOP_IN = 1, LOOP_OUT = 2, LOOP_ERR = 4 /* error or hang-up */ };

struct loop;
struct loop_watch;
typedef void (*loop_watch_cb)(struct loop_watch *w, unsigned events);

struct loop_watch {
	int fd;
	unsigned want;        /* LOOP_IN | LOOP_OUT, as last set */
	bool registered;      /* known to the backend */
	unsigned slot;        /* poll backends: index in their fd array */
	loop_watch_cb cb;
	void *ctx;
};

struct loop_timer;
typedef void (*loop_timer_cb)(struct loop_timer *t);

struct loop_timer {
	uint64_t deadline_ms;
	uint64_t seq;         /* arming order */
	struct loop_timer *child, *sibling, *prev; /* the loop's heap */
	bool armed;
	loop_timer_cb cb;
	void *ctx;
};

/* Work for the end of the iteration, embedded in the object it frees. */
struct loop_deferred {
	struct loop_deferred *next;
	void (*fn)(void *ctx);
	void *ctx;
};

int loop_new(struct loop **out);
void loop_free(struct loop *l);

void loop_watch_init(struct loop_watch *w, int fd, loop_watch_cb cb, void *ctx);
/* Sets the interest mask (0 unregisters). 0 or negative errno. */
int loop_watch_set(struct loop *l, struct loop_watch *w, unsigned want);
/* Unregisters and forgets the fd (sets w->fd = -1). Call before close(). */
void loop_watch_remove(struct loop *l, struct loop_watch *w);
/* loop_watch_remove, then closes the fd. Only for an fd that is the sole
 * descriptor of its file (not dup'ed, not inherited by a child): epoll then
 * drops the registration with the close, one system call less per
 * connection. */
void loop_watch_close(struct loop *l, struct loop_watch *w);

void loop_timer_init(struct loop_timer *t, loop_timer_cb cb, void *ctx);
void loop_timer_arm(struct loop *l, struct loop_timer *t, uint64_t delay_ms);
void loop_timer_cancel(struct loop *l, struct loop_timer *t);

/* fn(ctx) runs after every callback of the current iteration (at the end
 * of loop_run_once, or in loop_free): the place to free an object whose
 * watches may still be named in the batch being dispatched. d must stay
 * valid until then (it is usually inside the object). */
void loop_defer(struct loop *l, struct loop_deferred *d, void (*fn)(void *ctx), void *ctx);

/* Waits at most max_wait_ms (or until the next timer), dispatches ready
 * watches, then due timers, then deferred work. 0 or negative errno (EINTR
 * is not an error). */
int loop_run_once(struct loop *l, int max_wait_ms);

/* Monotonic milliseconds, cached per iteration. */
uint64_t loop_now(struct loop *l);

#endif
