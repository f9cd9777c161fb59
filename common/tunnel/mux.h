/* Stream bookkeeping of one tunnel (docs/PROTOCOL.md §3-5): ids, credit
 * windows, half-close flags, and the validation of every incoming frame
 * against them. Pure: frames in, events and decisions out; the daemons do
 * the I/O. Streams are embedded in the daemons' own per-stream objects. */
#ifndef MUXSHIM_TUNNEL_MUX_H
#define MUXSHIM_TUNNEL_MUX_H

#include "codec.h"

struct tun_stream {
	uint32_t id;
	uint32_t send_window;   /* bytes we may still send */
	uint32_t recv_window;   /* bytes the peer may still send */
	uint32_t recv_consumed; /* delivered locally, not yet credited back */
	bool fin_sent;
	bool fin_recvd;
	bool reset;             /* sent or received: both directions over */
	void *owner;
};

/* Open-addressing table of live streams (linear probing, at most half
 * full), placed by a keyed hash of the id (mux.c). */
struct tun_table {
	struct tun_stream **slots;
	uint32_t mask;
	uint32_t count;
};

struct tun_mux {
	enum tun_role role;
	struct tun_hello local;
	struct tun_hello peer;
	uint32_t last_id;   /* highest stream id opened on this tunnel */
	uint32_t next_id;   /* shim: the next id to open */
	struct tun_table table;
};

enum tun_event_kind {
	TE_IGNORE,  /* a frame for a finished stream: drop it */
	TE_OPEN,    /* helper: a new stream; call tun_mux_accept() */
	TE_REFUSE,  /* helper: an OPEN beyond max_streams; answer RESET REFUSED */
	TE_DATA,    /* bytes (maybe none) and/or FIN for ev.stream */
	TE_WINDOW,  /* ev.stream may send more */
	TE_RESET,   /* ev.stream was reset by the peer */
	TE_PING,    /* answer with PING ACK carrying ev.data */
	TE_PONG,    /* our PING came back */
	TE_GOAWAY,  /* the peer is closing the tunnel */
};

struct tun_event {
	enum tun_event_kind kind;
	struct tun_stream *stream; /* TE_DATA, TE_WINDOW, TE_RESET */
	uint32_t id;
	const uint8_t *data;
	size_t len;
	bool fin;
	uint32_t code;             /* TE_RESET, TE_GOAWAY */
	uint32_t last_stream;      /* TE_GOAWAY */
	const uint8_t *reason;
	size_t reason_len;
};

/* `local` and `peer` are the two hellos. 0 or -ENOMEM. */
int tun_mux_init(struct tun_mux *m, enum tun_role role, const struct tun_hello *local,
		 const struct tun_hello *peer);
void tun_mux_free(struct tun_mux *m);
static inline uint32_t tun_mux_count(const struct tun_mux *m) { return m->table.count; }

/* Validates a decoded frame against the tunnel's state and applies it.
 * Returns 0 with *ev filled, or a positive GOAWAY code (the tunnel must be
 * closed) with *why set to a static sentence. AUTH frames are the
 * handshake's business and are a violation here. */
int tun_mux_input(struct tun_mux *m, const struct tun_frame *f, struct tun_event *ev,
		  const char **why);

/* Shim: assigns the next id to s. 0, or -ENOSPC when ids ran out (dial a new
 * tunnel) or the helper's max_streams is reached. */
int tun_mux_open(struct tun_mux *m, struct tun_stream *s, void *owner);
/* Helper: registers the stream a TE_OPEN announced, charging its initial
 * data (ev.len) and FIN. */
void tun_mux_accept(struct tun_mux *m, struct tun_stream *s, const struct tun_event *ev,
		    void *owner);
/* Forgets a finished or reset stream. */
void tun_mux_remove(struct tun_mux *m, struct tun_stream *s);
struct tun_stream *tun_mux_find(const struct tun_mux *m, uint32_t id);
/* The process-wide secret that places ids in every stream table (random,
 * from the platform; link.c sets it before the first tunnel). Unset, the key
 * is all zeros: correct, but a peer could then choose colliding ids. */
void tun_mux_set_key(const uint8_t key[16]);
/* Slots a lookup of id visits (1 when it sits in its home slot or that slot
 * is empty): for the unit tests and the benchmark. */
uint32_t tun_mux_probes(const struct tun_mux *m, uint32_t id);

/* Sending: how much one DATA frame may carry now, and accounting for it. */
uint32_t tun_stream_sendable(const struct tun_mux *m, const struct tun_stream *s);
void tun_stream_sent(struct tun_stream *s, uint32_t n, bool fin);
/* Receiving: n bytes were written to the local socket. Returns the credit to
 * send back in a WINDOW frame now, or 0 to wait for more. */
uint32_t tun_stream_consumed(const struct tun_mux *m, struct tun_stream *s, uint32_t n);

#endif
