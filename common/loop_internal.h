/* Shared between the loop's timer code and its OS backends only. */
#ifndef MUXSHIM_LOOP_INTERNAL_H
#define MUXSHIM_LOOP_INTERNAL_H

#include "loop.h"

struct loop {
	uint64_t now_ms;
	struct loop_timer *timers; /* the heap's root */
	unsigned ntimers;
	uint64_t timer_seq;
	struct loop_deferred *deferred, **deferred_tail;
	void *backend;
};

int loop_timer_wait_ms(struct loop *l, int max_wait_ms);
void loop_timer_dispatch(struct loop *l);
/* End of an iteration (and loop_free): the deferred work, in order. */
void loop_run_deferred(struct loop *l);

#endif
