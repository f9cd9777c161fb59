/* Watches a usbmuxd session's bytes, without changing or holding them, to
 * learn what the client asked for: message types (binary version 0 and plist
 * version 1), Connect ports and their results. It stops when the session
 * becomes a raw Connect pipe or a Listen subscription. Pure: bytes in,
 * events out; a parse failure ends inspection and is only counted. */
#ifndef MUXSHIM_INSPECT_H
#define MUXSHIM_INSPECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define INSP_MSG_MAX 65536 /* usbmuxd's own limit on one message */

enum insp_type {
	INSP_LIST_DEVICES,
	INSP_LISTEN,
	INSP_CONNECT,
	INSP_READ_BUID,
	INSP_READ_PAIR_RECORD,
	INSP_SAVE_PAIR_RECORD,
	INSP_DELETE_PAIR_RECORD,
	INSP_LIST_LISTENERS,
	INSP_OTHER,
	INSP_NTYPES
};
const char *insp_type_name(enum insp_type t);

enum insp_event_kind { INSP_EV_REQUEST, INSP_EV_CONNECT_RESULT, INSP_EV_PARSE_ERROR };

struct insp_event {
	enum insp_event_kind kind;
	enum insp_type type;   /* REQUEST */
	unsigned version;      /* REQUEST: 0 binary, 1 plist */
	uint16_t port;         /* REQUEST of CONNECT: device port, host order */
	uint32_t result;       /* CONNECT_RESULT: 0 = now a raw pipe */
	const char *error;     /* PARSE_ERROR */
};

typedef void (*insp_cb)(void *ctx, const struct insp_event *ev);

enum insp_state { INSP_COMMANDS, INSP_DONE };

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
	insp_cb cb;
	void *ctx;
};

void insp_init(struct inspector *in, insp_cb cb, void *ctx);
void insp_free(struct inspector *in);
static inline bool insp_done(const struct inspector *in) { return in->state == INSP_DONE; }
/* Has the client started a request it has not finished sending? */
static inline bool insp_mid_request(const struct inspector *in)
{
	return in->state == INSP_COMMANDS &&
	       (in->req.hdr_have > 0 || in->req.body_have < in->req.body_len);
}
/* Bytes the client sent / usbmuxd answered, in order, as relayed. */
void insp_client_bytes(struct inspector *in, const uint8_t *p, size_t n);
void insp_upstream_bytes(struct inspector *in, const uint8_t *p, size_t n);

/* Classifies a plist request body (XML or binary plist): 0, or -1 when it
 * cannot be parsed. Exposed for tests. */
int insp_parse_plist_request(const uint8_t *body, size_t len, enum insp_type *type,
			     uint16_t *port);

#endif
