/* The loop against the real epoll backend, driven with socketpairs. */
#include "loop.h"
#include "loop_internal.h"
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static int order[8], norder;

static void record(struct loop_timer *t)
{
	order[norder++] = (int)(long)t->ctx;
}

static void timers_fire_in_deadline_order(void)
{
	struct loop *l;
	CU_ASSERT_EQUAL_FATAL(loop_new(&l), 0);
	struct loop_timer a, b, c;
	loop_timer_init(&a, record, (void *)1L);
	loop_timer_init(&b, record, (void *)2L);
	loop_timer_init(&c, record, (void *)3L);
	norder = 0;
	loop_timer_arm(l, &a, 30);
	loop_timer_arm(l, &b, 10);
	loop_timer_arm(l, &c, 20);
	loop_timer_cancel(l, &c);
	loop_timer_cancel(l, &c); /* twice is harmless */
	for (int i = 0; i < 100 && norder < 2; i++)
		CU_ASSERT_EQUAL(loop_run_once(l, 100), 0);
	CU_ASSERT_EQUAL(norder, 2);
	CU_ASSERT_EQUAL(order[0], 2);
	CU_ASSERT_EQUAL(order[1], 1);
	CU_ASSERT_FALSE(a.armed);
	loop_free(l);
}

static struct loop *rearm_loop;
static int rearm_count;

static void rearm_now(struct loop_timer *t)
{
	rearm_count++;
	loop_timer_arm(rearm_loop, t, 0);
}

static void rearm_to_now_waits_for_next_iteration(void)
{
	struct loop *l;
	CU_ASSERT_EQUAL_FATAL(loop_new(&l), 0);
	rearm_loop = l;
	rearm_count = 0;
	struct loop_timer t;
	loop_timer_init(&t, rearm_now, NULL);
	loop_timer_arm(l, &t, 0);
	CU_ASSERT_EQUAL(loop_run_once(l, 0), 0);
	CU_ASSERT_EQUAL(rearm_count, 1); /* not an endless loop within one dispatch */
	CU_ASSERT_EQUAL(loop_run_once(l, 0), 0);
	CU_ASSERT_EQUAL(rearm_count, 2);
	loop_timer_cancel(l, &t);
	loop_free(l);
}

struct pair_ctx {
	struct loop *l;
	struct loop_watch *other;
	int calls;
	unsigned last;
};

static void remove_other(struct loop_watch *w, unsigned ev)
{
	struct pair_ctx *c = w->ctx;
	c->calls++;
	c->last = ev;
	if (c->other)
		loop_watch_remove(c->l, c->other);
}

static void removed_watch_is_not_called(void)
{
	struct loop *l;
	CU_ASSERT_EQUAL_FATAL(loop_new(&l), 0);
	int a[2], b[2];
	CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, a), 0);
	CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, b), 0);
	struct loop_watch wa, wb;
	struct pair_ctx ca = { l, &wb, 0, 0 }, cb = { l, &wa, 0, 0 };
	loop_watch_init(&wa, a[0], remove_other, &ca);
	loop_watch_init(&wb, b[0], remove_other, &cb);
	CU_ASSERT_EQUAL(loop_watch_set(l, &wa, LOOP_IN), 0);
	CU_ASSERT_EQUAL(loop_watch_set(l, &wb, LOOP_IN), 0);
	CU_ASSERT_EQUAL(write(a[1], "x", 1), 1);
	CU_ASSERT_EQUAL(write(b[1], "x", 1), 1);
	CU_ASSERT_EQUAL(loop_run_once(l, 1000), 0);
	/* both were ready; whichever ran first removed the other */
	CU_ASSERT_EQUAL(ca.calls + cb.calls, 1);
	for (int i = 0; i < 2; i++) {
		close(a[i]);
		close(b[i]);
	}
	loop_free(l);
}

static void close_other(struct loop_watch *w, unsigned ev)
{
	struct pair_ctx *c = w->ctx;
	c->calls++;
	c->last = ev;
	if (c->other)
		loop_watch_close(c->l, c->other);
}

/* loop_watch_close: skipped mid-batch like a removed watch, its fd closed,
 * and the registration gone with it (epoll would refuse to add the same fd
 * number again with EEXIST if it were not). */
static void closed_watch_is_gone(void)
{
	struct loop *l;
	CU_ASSERT_EQUAL_FATAL(loop_new(&l), 0);
	int a[2], b[2];
	CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, a), 0);
	CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, b), 0);
	struct loop_watch wa, wb;
	struct pair_ctx ca = { l, &wb, 0, 0 }, cb = { l, &wa, 0, 0 };
	loop_watch_init(&wa, a[0], close_other, &ca);
	loop_watch_init(&wb, b[0], close_other, &cb);
	CU_ASSERT_EQUAL(loop_watch_set(l, &wa, LOOP_IN), 0);
	CU_ASSERT_EQUAL(loop_watch_set(l, &wb, LOOP_IN), 0);
	CU_ASSERT_EQUAL(write(a[1], "x", 1), 1);
	CU_ASSERT_EQUAL(write(b[1], "x", 1), 1);
	CU_ASSERT_EQUAL(loop_run_once(l, 1000), 0);
	CU_ASSERT_EQUAL_FATAL(ca.calls + cb.calls, 1);
	struct loop_watch *gone = ca.calls ? &wb : &wa, *left = ca.calls ? &wa : &wb;
	int gone_fd = ca.calls ? b[0] : a[0];
	CU_ASSERT_EQUAL(gone->fd, -1);
	CU_ASSERT_FALSE(gone->registered);
	errno = 0;
	CU_ASSERT_EQUAL(fcntl(gone_fd, F_GETFD), -1);
	CU_ASSERT_EQUAL(errno, EBADF);
	/* The lowest free number: the one just closed. */
	int c[2];
	CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, c), 0);
	CU_ASSERT_EQUAL(c[0], gone_fd);
	struct loop_watch wc;
	struct pair_ctx cc = { l, NULL, 0, 0 };
	loop_watch_init(&wc, c[0], close_other, &cc);
	CU_ASSERT_EQUAL(loop_watch_set(l, &wc, LOOP_IN), 0);
	CU_ASSERT_EQUAL(write(c[1], "y", 1), 1);
	/* The survivor is still readable: counted apart. */
	struct pair_ctx cl = { l, NULL, 0, 0 };
	left->ctx = &cl;
	CU_ASSERT_EQUAL(loop_run_once(l, 1000), 0);
	CU_ASSERT_EQUAL(cc.calls, 1);
	loop_watch_close(l, &wc);
	loop_watch_close(l, left);
	close(a[1]);
	close(b[1]);
	close(c[1]);
	loop_free(l);
}

static void zero_interest_silences_hangup(void)
{
	struct loop *l;
	CU_ASSERT_EQUAL_FATAL(loop_new(&l), 0);
	int p[2];
	CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, p), 0);
	struct loop_watch w;
	struct pair_ctx c = { l, NULL, 0, 0 };
	loop_watch_init(&w, p[0], remove_other, &c);
	CU_ASSERT_EQUAL(loop_watch_set(l, &w, LOOP_IN), 0);
	close(p[1]); /* peer gone: readable (EOF) and hung up */
	CU_ASSERT_EQUAL(loop_run_once(l, 1000), 0);
	CU_ASSERT_EQUAL(c.calls, 1);
	CU_ASSERT_TRUE(c.last & LOOP_IN);
	CU_ASSERT_EQUAL(loop_watch_set(l, &w, 0), 0);
	CU_ASSERT_FALSE(w.registered);
	CU_ASSERT_EQUAL(loop_run_once(l, 50), 0);
	CU_ASSERT_EQUAL(c.calls, 1); /* the hang-up is not reported again */
	CU_ASSERT_EQUAL(loop_watch_set(l, &w, LOOP_OUT), 0);
	CU_ASSERT_EQUAL(loop_run_once(l, 1000), 0);
	CU_ASSERT_EQUAL(c.calls, 2);
	loop_watch_remove(l, &w);
	CU_ASSERT_EQUAL(w.fd, -1);
	CU_ASSERT_EQUAL(loop_watch_set(l, &w, LOOP_IN), -EBADF);
	close(p[0]);
	loop_free(l);
}

/* The heap against a plain model: random arms, re-arms and cancels of many
 * timers, then dispatch at chosen clock values (the clock is set by hand:
 * loop_timer_dispatch reads only l->now_ms). Every timer that fires must be
 * due, armed, and the earliest (deadline, arming order) of those left. */
#define HEAP_N 600
static struct loop_timer heap_t[HEAP_N];
static int heap_fired[HEAP_N * 4], heap_nfired;

static void heap_record(struct loop_timer *t)
{
	heap_fired[heap_nfired++] = (int)(t - heap_t);
}

static void heap_matches_a_sorted_model(void)
{
	struct loop *l;
	CU_ASSERT_EQUAL_FATAL(loop_new(&l), 0);
	srand(7);
	uint64_t base = l->now_ms;
	for (int i = 0; i < HEAP_N; i++)
		loop_timer_init(&heap_t[i], heap_record, NULL);
	for (int round = 0; round < 40; round++) {
		for (int k = 0; k < 300; k++) {
			struct loop_timer *t = &heap_t[rand() % HEAP_N];
			if (rand() % 4 == 0)
				loop_timer_cancel(l, t);
			else
				loop_timer_arm(l, t, (uint64_t)(rand() % 50)); /* many ties */
		}
		unsigned armed = 0;
		for (int i = 0; i < HEAP_N; i++)
			armed += heap_t[i].armed;
		CU_ASSERT_EQUAL(l->ntimers, armed);
		/* Expected: the armed timers due by now, by (deadline, seq). */
		l->now_ms += 20;
		int want[HEAP_N], nwant = 0;
		for (int i = 0; i < HEAP_N; i++)
			if (heap_t[i].armed && heap_t[i].deadline_ms <= l->now_ms)
				want[nwant++] = i;
		for (int a = 1; a < nwant; a++) /* insertion sort: small n */
			for (int b = a; b > 0; b--) {
				struct loop_timer *x = &heap_t[want[b - 1]], *y = &heap_t[want[b]];
				if (x->deadline_ms < y->deadline_ms ||
				    (x->deadline_ms == y->deadline_ms && x->seq < y->seq))
					break;
				int tmp = want[b];
				want[b] = want[b - 1];
				want[b - 1] = tmp;
			}
		heap_nfired = 0;
		loop_timer_dispatch(l);
		CU_ASSERT_EQUAL_FATAL(heap_nfired, nwant);
		for (int i = 0; i < nwant; i++)
			CU_ASSERT_EQUAL(heap_fired[i], want[i]);
		for (int i = 0; i < HEAP_N; i++)
			CU_ASSERT_FALSE(heap_t[i].armed && heap_t[i].deadline_ms <= l->now_ms);
		CU_ASSERT(l->timers == NULL || l->timers->deadline_ms > l->now_ms);
	}
	CU_ASSERT(l->now_ms > base);
	for (int i = 0; i < HEAP_N; i++)
		loop_timer_cancel(l, &heap_t[i]);
	CU_ASSERT_EQUAL(l->ntimers, 0);
	CU_ASSERT_PTR_NULL(l->timers);
	loop_free(l);
}

struct deferred_obj {
	struct loop_deferred d;
	struct loop *l;
	int *log, *nlog, id;
	struct deferred_obj *chain; /* deferred from inside this one's fn */
};

static void deferred_run(void *ctx)
{
	struct deferred_obj *o = ctx;
	o->log[(*o->nlog)++] = o->id;
	if (o->chain)
		loop_defer(o->l, &o->chain->d, deferred_run, o->chain);
}

struct defer_from_cb {
	struct loop *l;
	struct deferred_obj *obj;
	bool obj_ran_inside;
	int *nlog;
};

static void defer_in_callback(struct loop_watch *w, unsigned ev)
{
	(void)ev;
	struct defer_from_cb *c = w->ctx;
	loop_defer(c->l, &c->obj->d, deferred_run, c->obj);
	c->obj_ran_inside = *c->nlog != 0;
	loop_watch_set(c->l, w, 0);
}

static void deferred_work_runs_after_the_callbacks(void)
{
	struct loop *l;
	CU_ASSERT_EQUAL_FATAL(loop_new(&l), 0);
	int log[4], nlog = 0;
	struct deferred_obj b = { .l = l, .log = log, .nlog = &nlog, .id = 2 };
	struct deferred_obj a = { .l = l, .log = log, .nlog = &nlog, .id = 1, .chain = &b };
	int p[2];
	CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, p), 0);
	struct defer_from_cb c = { l, &a, false, &nlog };
	struct loop_watch w;
	loop_watch_init(&w, p[0], defer_in_callback, &c);
	CU_ASSERT_EQUAL(loop_watch_set(l, &w, LOOP_IN), 0);
	CU_ASSERT_EQUAL(write(p[1], "x", 1), 1);
	CU_ASSERT_EQUAL(loop_run_once(l, 1000), 0);
	CU_ASSERT_FALSE(c.obj_ran_inside);
	/* both ran in that iteration: the one deferred from a deferred fn too */
	CU_ASSERT_EQUAL(nlog, 2);
	CU_ASSERT_EQUAL(log[0], 1);
	CU_ASSERT_EQUAL(log[1], 2);
	/* work deferred outside the loop runs at loop_free */
	a.chain = NULL;
	loop_defer(l, &a.d, deferred_run, &a);
	loop_watch_remove(l, &w);
	close(p[0]);
	close(p[1]);
	loop_free(l);
	CU_ASSERT_EQUAL(nlog, 3);
}

int unit_loop(void)
{
	static const struct unit_test t[] = {
		{ "timers fire in deadline order", timers_fire_in_deadline_order },
		{ "re-armed timer waits for the next iteration", rearm_to_now_waits_for_next_iteration },
		{ "a watch removed mid-batch is skipped", removed_watch_is_not_called },
		{ "a watch closed mid-batch is skipped, its fd and registration gone", closed_watch_is_gone },
		{ "zero interest silences a hang-up", zero_interest_silences_hangup },
		{ "timer heap matches a sorted model", heap_matches_a_sorted_model },
		{ "deferred work runs after the callbacks", deferred_work_runs_after_the_callbacks },
		{ NULL, NULL },
	};
	return unit_add_suite("loop", t);
}
