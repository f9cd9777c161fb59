/* The upstream's address without blocking the loop (resolver.c; both
 * daemons). */
#ifndef MUXSHIM_RESOLVER_H
#define MUXSHIM_RESOLVER_H

#include "addr.h"
#include "loop.h"
#include "plat.h"

#include <stdbool.h>
#include <stdint.h>

struct resolver;

/* host:port, a literal address (resolved now) or a name (resolved by a
 * thread; start this before the sandbox). ready(ctx) runs on the loop each
 * time an answer arrives. 0 or a negative errno. */
int resolver_start(struct resolver **out, struct loop *loop, const char *host, uint16_t port,
		   void (*ready)(void *ctx), void *ctx);
/* The current answer: 0 and *a; else the last failure, or -EAGAIN, while
 * a resolution is on its way (ready follows). A stale answer is returned
 * and refreshed in the background. */
int resolver_get(struct resolver *r, struct plat_addr *a);
/* plat_tcp_connect_addr to the current answer: 0, -EINPROGRESS (wait for
 * writability, then plat_connect_result) or resolver_get's failure (-EAGAIN:
 * no answer yet; callers retry as for a full listen queue). */
int resolver_connect(struct resolver *r, int *fd);
/* A connect to the answer failed: resolve again. */
void resolver_retry(struct resolver *r);
void resolver_stop(struct resolver *r);

#endif
