/* The loop against the real epoll backend, driven with socketpairs. */
#include "loop.h"
#include "unit.h"

#include <errno.h>
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

int unit_loop(void)
{
	static const struct unit_test t[] = {
		{ "timers fire in deadline order", timers_fire_in_deadline_order },
		{ "re-armed timer waits for the next iteration", rearm_to_now_waits_for_next_iteration },
		{ "a watch removed mid-batch is skipped", removed_watch_is_not_called },
		{ "zero interest silences a hang-up", zero_interest_silences_hangup },
		{ NULL, NULL },
	};
	return unit_add_suite("loop", t);
}
