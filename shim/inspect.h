/* Watches a usbmuxd session's bytes, without changing them, to learn what
 * the client asked for: message types (binary version 0 and plist version
 * 1), Connect ports and their results. It stops when the session becomes a
 * raw Connect pipe or a Listen subscription. Pure: bytes in, events out.
 * It frames the stream incrementally; each whole message is decoded by the
 * usbmuxd codec (common/usbmuxd/proto.h), as the broker decodes it.
 *
 * It is also the gate that keeps hostile requests from usbmuxd
 * (docs/SECURITY.md): the relay reads no further than the end of the
 * current request (insp_client_room), so a request's last byte is shown to
 * the inspector before it is forwarded; a plist body the plist guard
 * refuses, or a length usbmuxd would refuse, makes insp_client_bytes fail
 * and the relay closes the client without forwarding that read. usbmuxd only
 * parses a request once all of it has arrived, so the part already
 * forwarded is never parsed. While a Connect result is awaited the client
 * is not read at all (usbmuxd does not read it either; what follows is
 * either device data or another request, depending on the result). */
#ifndef MUXSHIM_INSPECT_H
#define MUXSHIM_INSPECT_H

#include "usbmuxd/proto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define INSP_MSG_MAX 65536 /* usbmuxd's own limit on one message */

/* PARSE_ERROR: a request libplist cannot read (usbmuxd ignores it too;
 * inspection goes on) or a reply that ends inspection. REFUSED: the client
 * must be closed (insp_client_bytes fails from now on). */
enum insp_event_kind { INSP_EV_REQUEST, INSP_EV_CONNECT_RESULT, INSP_EV_PARSE_ERROR,
		       INSP_EV_REFUSED };

struct insp_event {
	enum insp_event_kind kind;
	enum umx_req type;     /* REQUEST */
	unsigned version;      /* REQUEST: 0 binary, 1 plist */
	uint16_t port;         /* REQUEST of CONNECT: device port, host order */
	uint32_t result;       /* CONNECT_RESULT: 0 = now a raw pipe */
	const char *error;     /* PARSE_ERROR, REFUSED */
};

typedef void (*insp_cb)(void *ctx, const struct insp_event *ev);

enum insp_state { INSP_COMMANDS, INSP_DONE, INSP_REFUSED };

/* One direction's framing: header, then a body that is kept only when needed. */
struct insp_reader {
	uint8_t hdr[16];
	size_t hdr_have;
	uint32_t body_len;
	uint32_t body_have;
	bool keep;
	uint8_t *body;
};

struct inspector {
	enum insp_state state;
	struct insp_reader req;   /* client -> usbmuxd */
	struct insp_reader rep;   /* usbmuxd -> client */
	bool awaiting_connect;
	uint32_t connect_tag;
	uint32_t owed;            /* replies usbmuxd owes for requests before */
	const char *refused; /* why, once REFUSED */
	insp_cb cb;
	void *ctx;
	struct umx_memo *memo;    /* optional (set after insp_init): repeated
				   * requests decoded once */
};

void insp_init(struct inspector *in, insp_cb cb, void *ctx);
/* As insp_init, for a session whose Connect (tag) was read and sent by
 * someone else (the broker): its result is the first reply awaited. */
void insp_init_connect(struct inspector *in, insp_cb cb, void *ctx, uint32_t tag);
void insp_free(struct inspector *in);
/* From a REQUEST callback: the request must not go on; the client is closed
 * (why says so in the log). */
void insp_refuse(struct inspector *in, const char *why);
static inline bool insp_done(const struct inspector *in) { return in->state == INSP_DONE; }
/* Has the client started a request it has not finished sending? */
static inline bool insp_mid_request(const struct inspector *in)
{
	return in->state == INSP_COMMANDS &&
	       (in->req.hdr_have > 0 || in->req.body_have < in->req.body_len);
}
/* How many client bytes the relay may read now: up to the end of the
 * current request's header or body; 0 while a Connect result is awaited or
 * once refused; SIZE_MAX once inspection is over. */
size_t insp_client_room(const struct inspector *in);
/* Bytes the client sent, in order, before they are forwarded: 0, or
 * -EBADMSG when the client is refused (why in in->refused): forward
 * nothing more and close it. */
int insp_client_bytes(struct inspector *in, const uint8_t *p, size_t n);
/* Bytes usbmuxd answered, as relayed. */
void insp_upstream_bytes(struct inspector *in, const uint8_t *p, size_t n);

#endif
