/* What a relay sees of the usbmuxd conversation it carries: the inspector
 * (inspect.h) with its request gate, and the statistics its events feed.
 * Each relayed session (session.c, tunnel.c) has one; the broker's own
 * clients have none, client.c decodes their requests with the usbmuxd codec
 * and counts them itself. Off (--no-inspect), a watch gates nothing and only
 * counts bytes. */
#ifndef MUXSHIM_WATCH_H
#define MUXSHIM_WATCH_H

#include "inspect.h"
#include "stats.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct watch {
	struct inspector insp;
	bool on;                 /* inspecting (the inspector is set up) */
	uint16_t pending_port;   /* the Connect awaiting its result */
	bool handed;             /* the broker handed the session over with a Connect:
				  * a request after it (the Connect failed) would
				  * bypass the broker */
};

/* A session relayed from its first byte. memo: the shim's, shared with
 * the broker. */
void watch_init(struct watch *w, bool on, struct umx_memo *memo);
/* A session the broker hands over after a request it has counted and sent
 * on. A Connect (tag, device port): its result is the first reply awaited,
 * and the client is not read before it. */
void watch_init_handed(struct watch *w, bool on, struct umx_memo *memo, bool connect, uint32_t tag,
		       uint16_t port);
void watch_free(struct watch *w);

/* How many client bytes may be read now (the gate: inspect.h). */
size_t watch_client_room(const struct watch *w);
/* Is the session waiting for its client to send (nothing yet, or the rest
 * of a request it started)? Drives --request-timeout. */
bool watch_awaits_client(const struct watch *w, const struct stats_session *ss);
/* Has the inspection finished (a Connect pipe, a Listen): bytes may move
 * unseen (splice). */
bool watch_done(const struct watch *w);
/* Client bytes, before they are forwarded: 0, or -EBADMSG when the client
 * is refused (watch_refused says why): forward nothing of them and close
 * the session. Then the upstream's, as relayed. */
int watch_client_bytes(struct watch *w, struct stats *st, struct stats_session *ss,
		       const uint8_t *p, size_t n);
void watch_upstream_bytes(struct watch *w, struct stats *st, struct stats_session *ss,
			  const uint8_t *p, size_t n);
const char *watch_refused(const struct watch *w);

#endif
