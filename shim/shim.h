/* muxshim: the in-container daemon, read in the order a client travels:
 *
 *   listener (main.c) -> client (client.c: the usbmuxd conversation)
 *     -> router (common/usbmuxd/router.c: answer, subscribe or forward)
 *     -> upstream (upstream.h: a unix:/tcp: usbmuxd or a tunnel:)
 *     -> relay (session.c fd to fd; tunnel streams in common/tunnel/link.c)
 *
 * The broker (broker.c) keeps one subscription per upstream and the device
 * table across them; the loop (common/loop.h) owns timers and deferred
 * frees. With --passthrough the listener hands clients straight to the
 * upstream's relay. */
#ifndef MUXSHIM_SHIM_H
#define MUXSHIM_SHIM_H

#include "addr.h"
#include "daemon.h"
#include "buf.h"
#include "log.h"
#include "loop.h"
#include "plat.h"
#include "stats.h"
#include "broker.h"
#include "resolver.h"
#include "upstream.h"
#include "watch.h"

#include <stdbool.h>
#include <stdint.h>

#define SHIM_IO_CHUNK    (64 * 1024) /* one read per wake-up, at most */
#define SHIM_PENDING_MAX SHIM_IO_CHUNK /* per direction, what the reader would not take */
/* A client the broker hands to a relay: the request it forwards (at most a
 * whole usbmuxd message) and what the client sent after it (the rest of the
 * broker's 64 KiB read buffer). */
#define SHIM_ADOPT_MAX   (2 * 65536)

struct shim_config {
	const char *listen_path;
	unsigned socket_mode;
	struct addr upstream[UPSTREAM_MAX];
	unsigned nupstreams;
	unsigned max_sessions;
	unsigned connect_timeout_ms;
	enum log_level log_level;
	const char *log_file;        /* NULL: stderr */
	bool splice;
	unsigned tunnel_wait_ms;
	unsigned keepalive_ms;
	uint8_t token[256];
	size_t token_len;
	bool inspect;
	double warn_rate;
	unsigned stats_interval_s;
	const char *control_path;   /* NULL: no control socket */
	char metrics_host[ADDR_HOST_MAX];
	uint16_t metrics_port;      /* 0: no Prometheus endpoint */
	unsigned request_timeout_ms; /* 0: clients may stay silent */
	const char *user;           /* --user: drop to it after setup */
	const char *socket_owner;   /* --socket-owner OWNER[:GROUP] */
	bool seccomp;
	bool broker;                /* --broker: answer usbmuxd here (broker.h) */
	unsigned event_queue;       /* --event-queue: bytes per subscriber */
	struct umx_filter filter;   /* --device, --connection */
};

enum session_state { SESSION_CONNECTING, SESSION_RELAY, SESSION_DEAD };

/* A half switches from copying to splice(2) once it has carried this much:
 * bulk streams (screen mirroring, app installs) gain, request/response
 * sessions never pay the two extra descriptors of a pipe. */
#define SHIM_SPLICE_AFTER (256 * 1024)

/* Bytes flowing from one socket to the other. */
struct half {
	struct buf pending; /* read from src, not yet taken by dst */
	int pipe[2];        /* splice mode when pipe[0] >= 0 */
	size_t piped;       /* bytes in the pipe */
	bool splice_failed; /* do not try again */
	bool eof;           /* src reached end of stream */
	bool shut;          /* dst's write side is shut down */
	uint64_t bytes;
};

struct session {
	struct shim *shim;
	struct upstream *u;
	uint64_t id;
	enum session_state state;
	struct loop_watch client;
	struct loop_watch upstream;
	struct half up;   /* client -> upstream */
	struct half down; /* upstream -> client */
	struct loop_timer retry;
	struct loop_timer clock; /* --request-timeout */
	uint64_t started_ms;
	unsigned retry_delay_ms;
	struct stats_session stats;
	struct watch watch;      /* what it carries (watch.h) */
	struct session *prev, *next;
	struct loop_deferred reap;
};

struct shim {
	struct shim_config cfg;
	struct loop *loop;
	int listen_fd;
	struct plat_file_id listen_id;
	struct acceptor acceptor;
	struct session *live;
	unsigned nsessions;
	uint64_t next_id;
	struct log_ratelimit rl_upstream;
	struct log_ratelimit rl_timeout;
	struct log_ratelimit rl_refused;
	struct stats stats;
	struct acceptor control, metrics;
	int control_fd, metrics_fd;
	struct plat_file_id control_id;
	struct loop_timer summary;
	uint64_t sessions_total;
	uint64_t upstream_failures;
	pid_t self_pid;             /* sessions from it are the broker's own */
	struct upstream *up[UPSTREAM_MAX];
	unsigned nup;
	struct broker broker;
	struct umx_memo memo;    /* repeated requests' decode: the broker's and the relays' */
	uint8_t scratch[SHIM_IO_CHUNK];
};

/* session.c: the relay of direct upstreams (upstream_ops, upstream.c). */
void session_start(struct upstream *u, int client_fd);
int session_adopt(struct upstream *u, int client_fd, const struct handover *h);
void session_close_all(struct shim *s);

/* control.c: `muxshim stats` and the Prometheus endpoint */
int control_start(struct shim *s);
void control_stop(struct shim *s);
int control_query(const char *path, const char *format);
/* live: the daemon only; all: every upstream must be healthy (else one). */
int control_health(const char *path, bool live, bool all);

/* account.c: what every client connection shares. */
/* Attribution of a newly accepted client (SO_PEERCRED). */
void shim_attribute(struct shim *s, struct stats_session *ss, int client_fd);
/* --request-timeout: (re)arms clock while the session waits for its client
 * to send (awaits), cancels it otherwise; shim_request_timed_out logs the
 * closing. */
void shim_request_clock(struct shim *s, bool awaits, struct loop_timer *clock);
void shim_request_timed_out(struct shim *s, const struct stats_session *ss);
/* A request gate refused a client (why: the reason): logs it, rate-limited;
 * the caller closes the client. */
void shim_request_refused(struct shim *s, const struct stats_session *ss, const char *why);

/* A client connection ended, the listener may resume. */
void shim_session_ended(struct shim *s);

#endif
