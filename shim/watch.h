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
	bool on;                 /* inspecting (until the inspector is done) */
	bool started;            /* the inspector is initialised */
	uint16_t pending_port;   /* the Connect awaiting its result */
	bool handed;             /* the broker handed the session over with a Connect:
				  * a request after it (the Connect failed) would
				  * bypass the broker */
	bool trailing;           /* bytes the client sent after that Connect went
				  * upstream with it, before its result */
};

/* A session relayed from its first byte. */
void watch_init(struct watch *w, bool on);
/* A session the broker hands over after a request it has counted and sent
 * on, with rest (nrest bytes: what the client sent after it) following it
 * upstream. A Connect (tag, device port): its result is the first reply
 * awaited, the client is not read before it, and rest is device data if it
 * succeeds (if it fails, rest was requests the broker never saw: the client
 * is refused). Another request: rest is inspected here as the start of what
 * follows. 0, or -EBADMSG when rest is refused (watch_refused says why). */
int watch_init_handed(struct watch *w, bool on, struct stats *st, struct stats_session *ss,
		      bool connect, uint32_t tag, uint16_t port, const uint8_t *rest,
		      size_t nrest);
void watch_free(struct watch *w);

/* How many client bytes may be read now (the gate: inspect.h). */
size_t watch_client_room(const struct watch *w);
/* Is the session waiting for its client to send (nothing yet, or the rest
 * of a request it started)? Drives --request-timeout. */
bool watch_awaits_client(const struct watch *w, const struct stats_session *ss);
/* Has the inspection finished (a Connect pipe, a Listen): bytes may move
 * unseen (splice). */
bool watch_done(const struct watch *w);
/* Bytes of each direction, before they are forwarded: 0, or -EBADMSG when
 * the client is refused (watch_refused says why): forward nothing of them
 * and close the session. */
int watch_client_bytes(struct watch *w, struct stats *st, struct stats_session *ss,
		       const uint8_t *p, size_t n);
int watch_upstream_bytes(struct watch *w, struct stats *st, struct stats_session *ss,
			 const uint8_t *p, size_t n);
const char *watch_refused(const struct watch *w);

#endif
