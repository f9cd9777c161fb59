/* Upstreams: where this shim's sessions go. Each --upstream is an instance
 * (struct upstream) of one of two kinds behind the same operations:
 *
 *   direct (upstream.c + session.c): unix:PATH or tcp:HOST:PORT, a fresh
 *     connection per session, relayed fd to fd;
 *   tunnel (tunnel.c): tunnel:HOST:PORT, a stream of one persistent,
 *     multiplexed connection to muxshim-host per session.
 *
 * The client state machine (client.c) and the broker's subscriptions
 * (broker.c) hand a client descriptor to an upstream (accept, adopt); from
 * then on the upstream's relay owns it. */
#ifndef MUXSHIM_UPSTREAM_H
#define MUXSHIM_UPSTREAM_H

#include "addr.h"
#include "log.h"
#include "stats.h"
#include "usbmuxd/sub.h"

#include <stddef.h>
#include <stdint.h>

#define UPSTREAM_MAX 64u /* --upstream given this many times at most */

struct shim;
struct upstream;
struct tunnel;
struct resolver;

/* A client the broker hands to a relay: its statistics move into the
 * relay's session (already counted and attributed); msg goes upstream
 * first: the request the broker decided to forward, as rewritten for this
 * upstream. Nothing after it was read from the client. */
struct handover {
	struct stats_session *stats;
	const uint8_t *msg;
	size_t len;
	bool connect;     /* msg is a Connect (tag, device port): the relay
			   * awaits its result before it reads the client */
	uint32_t tag;
	uint16_t port;
};

struct upstream_ops {
	/* After the sandbox: start dialling (the tunnel). */
	void (*start)(struct upstream *u);
	/* The resolver has an answer. */
	void (*resolved)(struct upstream *u);
	/* A new client of its own (--passthrough, or the broker's end of a
	 * socket pair): attributed and relayed as it is. Takes the fd. */
	void (*accept)(struct upstream *u, int fd);
	/* The broker hands a client over (struct handover). 0 (the fd is
	 * taken), or a negative errno and the caller keeps the fd. */
	int (*adopt)(struct upstream *u, int fd, const struct handover *h);
	/* For `muxshim health`: 0 if a session opened now could reach it,
	 * else a negative errno; why receives one sentence either way. */
	int (*probe)(struct upstream *u, char *why, size_t cap);
	/* Known to be out of reach right now (a tunnel lost and not yet
	 * back), so that a new session would only wait to fail: the broker's
	 * subscription attempt then fails at once instead of holding the
	 * requests parked for it. NULL: never known in advance. */
	bool (*unreachable)(const struct upstream *u);
	/* Shutting down: close what it holds (sessions end elsewhere). */
	void (*stop)(struct upstream *u);
};

struct upstream {
	struct shim *shim;
	unsigned index;             /* in --upstream order; the device table's */
	struct addr addr;
	char name[ADDR_SPEC_MAX];   /* as shown in logs and statistics */
	const struct upstream_ops *ops;
	struct resolver *resolver;  /* tcp:, tunnel: */
	struct tunnel *tunnel;      /* tunnel: (tunnel.c) */
	struct stats_upstream *n;   /* its numbers, in the shim's statistics */
	struct log_ratelimit rl;
	struct umx_sub sub;         /* the broker's subscription to it (broker.c) */
};

/* upstream.c: one instance per configured address (cfg.upstream[]), with
 * its resolver started (before the sandbox). 0 or a negative errno, logged. */
int upstreams_create(struct shim *s);
void upstreams_start(struct shim *s);
void upstreams_stop(struct shim *s);
void upstreams_free(struct shim *s);
/* Healthy: every upstream (all) or at least one (!all) can be reached;
 * why receives a line per upstream. */
int upstreams_probe(struct shim *s, bool all, char *why, size_t cap);

/* direct upstreams (upstream.c): 0 and a connected (or connecting)
 * non-blocking fd, or a negative errno. */
int upstream_connect(struct upstream *u, int *fd);
/* A session could not reach u: counted, logged (rate-limited). */
void upstream_report_failure(struct upstream *u, int err);

/* tunnel.c */
extern const struct upstream_ops tunnel_ops;

#endif
