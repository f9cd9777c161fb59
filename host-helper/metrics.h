/* The helper's Prometheus endpoint (--metrics HOST:PORT): one HTTP GET,
 * one text answer, close; at most METRICS_CONNS_MAX scrapers at once, each
 * closed after METRICS_TIMEOUT_MS. What it says is the caller's (render). */
#ifndef MUXSHIM_HELPER_METRICS_H
#define MUXSHIM_HELPER_METRICS_H

#include "loop.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define METRICS_CONNS_MAX  8
#define METRICS_REQ_MAX    4096
#define METRICS_TIMEOUT_MS 5000

struct metrics;

/* A growing text buffer for render: put appends (printf-style); on
 * allocation failure the text is dropped and put does nothing more. */
struct metrics_text {
	char *p;
	size_t len, cap;
	bool failed;
};
void metrics_put(struct metrics_text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* render fills t with the exposition text. 0 or a negative errno (the
 * listen failed: logged). */
int metrics_start(struct loop *loop, const char *host, uint16_t port,
		  void (*render)(void *ctx, struct metrics_text *t), void *ctx, struct metrics **out);
void metrics_stop(struct metrics *m);
/* Frees connections that ended during the last loop iteration. */
void metrics_reap(struct metrics *m);

#endif
