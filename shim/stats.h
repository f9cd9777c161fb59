/* Who is using usbmuxd, how often, for what: per client process (pid, uid,
 * command) and in total. Fed by the broker's clients (client.c, which
 * decodes their requests) and the relays' watches (watch.h, which inspect
 * what they carry); read by `muxshim stats`, the Prometheus endpoint and
 * the periodic log line. It reads no protocol itself. */
#ifndef MUXSHIM_STATS_H
#define MUXSHIM_STATS_H

#include "usbmuxd/proto.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define STATS_RATE_WINDOW 10    /* seconds the per-process rate looks back */
#define STATS_MAX_PROCS   1024  /* least recently seen processes are forgotten beyond */
#define STATS_MAX_PORTS   64

struct stats_proc {
	pid_t pid;                /* 0: not visible from here */
	uid_t uid;
	char comm[64];   /* as shown: /proc comm (<= 15 bytes), made safe (log_sanitize) */
	bool comm_visible;
	uint64_t sessions;
	unsigned open;            /* sessions pointing here now: never forgotten while > 0 */
	uint64_t by_type[UMX_REQ_NTYPES];
	uint32_t window[STATS_RATE_WINDOW]; /* sessions per second, ring */
	uint64_t sessions_up;     /* of them, how many reached the upstream */
	uint32_t window_up[STATS_RATE_WINDOW];
	uint32_t window_types[STATS_RATE_WINDOW][UMX_REQ_NTYPES];
	uint64_t window_sec;      /* the second window[window_sec % N] counts */
	uint64_t last_seen_ms;
	uint64_t last_warn_ms;
	bool warned;
	struct stats_proc *next;
};

/* One session's account, embedded in the session (and moved with a
 * client the broker hands to a relay). */
struct stats_session {
	struct stats_proc *proc;
	bool internal;            /* the broker's own: not in sessions_* */
	uint64_t bytes_up, bytes_down;
};

struct stats_port {
	uint16_t port;
	uint64_t ok, failed;
};

/* The broker's own numbers (--broker; docs/BROKER.md), by request type. */
struct stats_broker {
	bool on;
	uint64_t local[UMX_REQ_NTYPES];       /* answered without the upstream */
	uint64_t forwarded[UMX_REQ_NTYPES];   /* handed to the upstream */
	uint64_t refused;                  /* requests refused, client closed */
	uint64_t listeners_dropped;        /* did not read their events */
	uint64_t parked;                   /* requests that waited for a subscription */
	unsigned listeners, devices;       /* devices: across upstreams */
};

/* One upstream's numbers (upstream.h). */
#define STATS_MAX_UPSTREAMS 64
struct stats_upstream {
	char name[300];
	bool tunnel;
	bool up;                  /* tunnel: the link is up */
	uint64_t connects, drops; /* tunnel */
	unsigned rtt_ms;
	bool rtt_known;
	uint64_t failures;        /* sessions that could not reach it */
	bool live;                /* the broker's subscription is in sync */
	unsigned devices;         /* in its subscription's table */
	uint64_t subscribes, sub_losses;
};

struct stats {
	uint64_t started_ms;
	uint64_t sessions_total;
	uint64_t sessions_up;       /* client sessions that reached the upstream */
	uint64_t sessions_internal; /* the broker's own (subscription, exchanges), */
	uint64_t internal_open;     /* not counted in sessions_total/_open */
	uint64_t sessions_open;
	uint64_t by_type[UMX_REQ_NTYPES];
	uint64_t by_version[2];
	uint64_t parse_errors;
	uint64_t uninspected;     /* sessions with inspection off */
	uint64_t bytes_up, bytes_down;
	struct stats_port ports[STATS_MAX_PORTS];
	unsigned nports;
	uint64_t upstream_failures;
	uint64_t request_timeouts; /* clients closed by --request-timeout */
	uint64_t requests_refused; /* clients closed by the request gate (inspect.h) */
	uint64_t upstream_fail_by_errno[8]; /* see stats.c: ENOENT, ECONNREFUSED, ... */
	unsigned nups;
	struct stats_upstream ups[STATS_MAX_UPSTREAMS];
	struct stats_broker broker;
	/* configuration */
	bool inspect;
	double warn_rate;
	unsigned nprocs;
	struct stats_proc *procs;
};

void stats_init(struct stats *st, bool inspect, double warn_rate, uint64_t now_ms);
/* A client connected: attribute it (SO_PEERCRED pid/uid, /proc comm). */
/* A session of muxshim's own (the broker's subscription and forwarded
 * requests): counted, attributed to no process (the client that caused an
 * exchange is counted by stats_session_upstream). */
void stats_session_open_internal(struct stats *st, struct stats_session *ss);
/* ss's client caused an upstream session (every session with
 * --passthrough; with the broker, a forwarded request). */
void stats_session_upstream(struct stats *st, struct stats_session *ss, uint64_t now_ms);
/* A client session; upstream: it goes to the upstream as it is (the relay). */
void stats_session_open(struct stats *st, struct stats_session *ss, pid_t pid, uid_t uid,
			uint64_t now_ms, bool upstream);
void stats_session_close(struct stats *st, struct stats_session *ss);
/* Bytes a session carried: from its client (up) and to it (down). */
void stats_bytes_up(struct stats *st, struct stats_session *ss, size_t n);
void stats_bytes_down(struct stats *st, struct stats_session *ss, size_t n);
/* A request the client sent (whole), in its protocol version. */
void stats_request(struct stats *st, struct stats_session *ss, enum umx_req type,
		   uint32_t version);
/* A Connect's result: 0 is a pipe to the device port now. */
void stats_connect_result(struct stats *st, uint16_t port, uint32_t result);
/* A request nobody could parse (usbmuxd ignores those and reads on). */
void stats_parse_error(struct stats *st);
/* A client closed by the request gate before its request went anywhere. */
void stats_request_refused(struct stats *st);
void stats_upstream_failure(struct stats *st, int err);

/* Sessions per second of a process over the window ending now. */
double stats_proc_rate(const struct stats_proc *p, uint64_t now_ms);
/* The same for the sessions of it that reached the upstream. */
double stats_proc_upstream_rate(const struct stats_proc *p, uint64_t now_ms);

/* Renders into a malloc'd string: "json", "table" or "prometheus". */
char *stats_render(const struct stats *st, const char *format, uint64_t now_ms);
/* One line for the log. */
void stats_summary(const struct stats *st, uint64_t now_ms, char *out, size_t len);

/* Reads a process's command name the way /proc shows it, made safe to show
 * (log_sanitize: a name is chosen by the process, prctl(PR_SET_NAME), and
 * may hold any bytes but NUL). Exposed for tests. */
bool stats_read_comm(pid_t pid, char *out, size_t len);

#endif
