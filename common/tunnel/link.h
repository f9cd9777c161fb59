/* One tunnel connection and the streams it carries, on top of the pure
 * codec (codec.h) and bookkeeping (mux.h). Shared by both daemons: the shim
 * binds each stream to a client socket, the helper to an upstream socket.
 *
 * Rules it keeps (docs/PROTOCOL.md): the tunnel socket is always read;
 * control frames are queued ahead of bulk data (data is only queued while
 * less than LINK_OUT_DATA_MAX bytes wait); a local socket is read only while
 * its stream has credit and the tunnel has room, and streams that wait for
 * room are served in arrival order; credit is returned when bytes reach the
 * local socket; FIN follows a stream's queued data. */
#ifndef MUXSHIM_TUNNEL_LINK_H
#define MUXSHIM_TUNNEL_LINK_H

#include "buf.h"
#include "loop.h"
#include "tunnel/mux.h"

#define LINK_OUT_DATA_MAX (64 * 1024)   /* queue data frames only below this */
#define LINK_OUT_MAX      (1024 * 1024) /* beyond this the peer is not reading */
#define LINK_TOKEN_MAX    256

struct link;
struct link_stream;

enum link_state { LINK_HANDSHAKE, LINK_UP, LINK_DEAD };

struct link_config {
	enum tun_role role;
	uint32_t max_frame;
	uint32_t window;
	uint32_t max_streams;
	const uint8_t *token; /* NULL: no authentication */
	size_t token_len;
	unsigned keepalive_ms;
	unsigned handshake_ms;
	const char *peer_name; /* for log lines */
};

struct link_ops {
	void (*up)(struct link *l);
	/* Helper: the peer opened st. Bind it with link_stream_bind (now or once
	 * the upstream connects) or refuse it with link_stream_reset. */
	void (*open)(struct link *l, struct link_stream *st);
	/* The tunnel is gone; every stream was closed already. */
	void (*down)(struct link *l, const char *why);
	/* A stream ended (both ways done, reset, or the link died). */
	void (*stream_closed)(struct link *l, struct link_stream *st);
	void (*rtt)(struct link *l, unsigned rtt_ms);
	/* Optional (the shim's request gate): how many bytes may be read from
	 * a stream's local socket now (SIZE_MAX: any; 0: do not read it). With
	 * it, one frame may gather several reads that each stop there. */
	size_t (*local_room)(struct link_stream *st);
	/* Optional: a stream's bytes read from its local socket, before they
	 * are sent: 0, or a negative errno to reset the stream without sending
	 * them. And bytes received for it from the peer (the shim inspects
	 * both). */
	int (*local_bytes)(struct link_stream *st, const uint8_t *p, size_t n);
	void (*remote_bytes)(struct link_stream *st, const uint8_t *p, size_t n);
	/* Optional: may the peer's complete AUTH be checked now? False refuses
	 * it unchecked (GOAWAY AUTH, nothing logged here): the helper's limit
	 * on guesses from one address. */
	bool (*auth_allowed)(struct link *l);
	/* Optional: the peer's proof was checked: right (ok) or wrong. */
	void (*auth_result)(struct link *l, bool ok);
	/* Optional (the helper's tenants): the peer's AUTH proof, before it is
	 * checked against cfg.token. Copy the token it was made with into
	 * token/len (at most LINK_TOKEN_MAX bytes) to check it against that
	 * one instead (and prove with it), or return false to keep cfg.token. */
	bool (*auth_pick)(struct link *l, const struct tun_hello *local,
			  const struct tun_hello *peer, const uint8_t proof[TUN_MAC_LEN],
			  uint8_t *token, size_t *len);
};

struct link_stats {
	uint64_t streams_opened;
	uint64_t streams_refused;
	uint64_t bytes_in, bytes_out; /* payload through the tunnel */
	unsigned last_rtt_ms;
	uint64_t graceful_closes;   /* TCP upstreams ended with a FIN (stream_local_fin) */
};

/* Takes ownership of the connected, non-blocking fd. 0 or negative errno. */
int link_new(struct loop *loop, int fd, const struct link_config *cfg,
	     const struct link_ops *ops, void *ctx, struct link **out);
/* Closes the tunnel (GOAWAY with code and reason if it can still be sent),
 * closes every stream's local socket, then calls ops->down. */
void link_close(struct link *l, uint32_t goaway_code, const char *why);
enum link_state link_state(const struct link *l);
void *link_ctx(const struct link *l);
unsigned link_stream_count(const struct link *l);
const struct link_stats *link_get_stats(const struct link *l);
/* Did the link end because the peer sent GOAWAY? Its code in *code. Valid
 * until the end of the loop iteration it ended in, so in ops->down too. */
bool link_peer_goaway(const struct link *l, uint32_t *code);

/* Shim: opens a stream for a connected local socket; its OPEN goes out with
 * the client's first bytes. On success the link owns the fd and calls
 * ops->stream_closed once for it (also when the helper's stream limit turns
 * it away at that first frame); on failure (NULL, *err) the caller keeps both
 * the fd and ctx, and no callback is made. */
struct link_stream *link_stream_open(struct link *l, int local_fd, void *ctx, int *err);
/* Shim: queues n bytes on a stream just opened, ahead of anything its local
 * socket sends (a request the caller already read from it). They must fit
 * in the peer's initial window. 0, -ENOBUFS or -EPIPE. */
int link_stream_write(struct link_stream *st, const uint8_t *p, size_t n);
/* Helper: attaches the local socket of a stream announced by ops->open. */
void link_stream_bind(struct link_stream *st, int local_fd);
/* Aborts a stream: RESET to the peer, local socket closed. */
void link_stream_reset(struct link_stream *st, uint32_t code, const char *reason);
void *link_stream_ctx(const struct link_stream *st);
void link_stream_set_ctx(struct link_stream *st, void *ctx);
uint32_t link_stream_id(const struct link_stream *st);
/* Helper: how the local socket should be closed when the stream ends. The
 * default closes normally; see link_stream_set_abortive_close. */
void link_stream_set_abortive_close(struct link_stream *st, bool on);

#endif
