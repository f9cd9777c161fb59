/* muxshim-host: the host side of the tunnel. Accepts one TCP connection per
 * container (a tunnel), and for every stream a shim opens, connects to the
 * local usbmuxd. Nothing but the tunnel port is exposed. */
#include "addr.h"
#include "authlimit.h"
#include "daemon.h"
#include "gate.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "plat.h"
#include "resolver.h"
#include "service.h"
#include "tenants.h"
#include "tunnel/auth.h"
#include "crypto.h"
#include "tunnel/link.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef MUXSHIM_VERSION
#define MUXSHIM_VERSION "0.1.0"
#endif

#define ACCEPTS_PER_WAKE 16

struct helper_config {
	char listen_host[ADDR_HOST_MAX];
	uint16_t listen_port;
	struct addr upstream;
	const char *upstream_source; /* where the upstream came from, for the log */
	uint8_t token[LINK_TOKEN_MAX];
	size_t token_len;
	bool has_token;
	bool allow_remote;
	unsigned max_tunnels;
	unsigned max_pending;
	uint32_t max_streams;
	uint32_t window;
	uint32_t max_frame;
	unsigned keepalive_ms;
	unsigned stats_interval_s;
	unsigned handshake_ms;
	unsigned connect_timeout_ms; /* usbmuxd: retries of a full queue, a TCP connect */
	enum log_level log_level;
	const char *log_file;        /* NULL: stderr */
	bool service;                /* --service: under the Service Control Manager */
	const char *user;            /* --user: drop to it after setup */
	bool seccomp;
	const char *tenants_path;    /* --tenants: NULL without */
	unsigned tenants_watch_s;    /* --tenants-watch: 0 off */
	const char *serve_path;      /* --serve: a UNIX socket for one container, no tunnel */
	const char *serve_devices;   /* --devices */
	const char *serve_name;      /* --name */
	unsigned socket_mode;        /* --socket-mode */
	const char *socket_owner;    /* --socket-owner */
	bool listen_given;
	char metrics_host[ADDR_HOST_MAX]; /* --metrics */
	uint16_t metrics_port;       /* 0: off */
	enum { RUN, INSTALL_SERVICE, UNINSTALL_SERVICE } action;
};

struct helper {
	struct helper_config cfg;
	struct loop *loop;
	int listen_fd;
	struct acceptor acceptor;
	unsigned ntunnels;           /* authenticated (up), at most --max-tunnels */
	unsigned npending;           /* in the handshake, at most --max-pending */
	struct tunnel *tunnels;      /* both kinds, newest first */
	struct loop_timer summary;
	uint64_t tunnels_total;
	uint64_t next_tunnel_id;
	uint64_t pending_evicted;
	uint64_t auth_failed, auth_unchecked;
	struct authlimit authlimit;
	struct log_ratelimit rl_upstream;
	struct log_ratelimit rl_no_handshake;
	struct log_ratelimit rl_auth;
	struct log_ratelimit rl_limit;
	/* --tenants */
	struct tenant *tenants;      /* in file order; NULL without a tenants file */
	struct tenant *candidate;    /* the tenant whose token a proof in flight was made with */
	struct gate *gate;           /* with --tenants or --serve */
	struct resolver *resolver;   /* a TCP upstream's address (common/resolver.c) */
	char *tenants_text;          /* the file as last loaded, for --tenants-watch */
	size_t tenants_len;
	struct loop_timer tenants_watch;
	struct metrics *metrics;     /* --metrics, or NULL */
	struct plat_file_id serve_id; /* --serve: our socket file */
};

struct tunnel {
	struct helper *h;
	struct link *link;
	bool pending;                /* counted in npending, else in ntunnels */
	bool was_up;
	char name[64];
	char addr[AUTHLIMIT_ADDR_MAX]; /* the peer's address, for the guess limit */
	uint64_t upstream_connects;
	uint64_t upstream_failures;
	struct tenant *tenant;       /* --tenants: whose token it proved, for its whole life */
	struct tunnel *prev, *next;  /* all open tunnels, for the summary */
};

/* One stream's upstream connection while it is being established. */
struct upstream {
	struct tunnel *t;
	struct link_stream *st;
	struct loop_watch w;
	struct loop_timer retry;
	uint64_t started_ms;
	unsigned delay_ms;
};

#define RETRY_FIRST_MS   5
#define RETRY_MAX_MS     100

static void upstream_try(struct upstream *u);

static struct helper helper;
static struct tenant_list initial_tenants; /* --tenants, as loaded by parse_args */


/* What an operator can do about a failed usbmuxd connection. */
static const char *upstream_hint(int err)
{
	switch (err) {
	case -ECONNREFUSED:
	case -ENOENT:
		return "is usbmuxd (on Windows: the Apple Mobile Device Service, part of iTunes "
		       "or Apple Devices) running?";
	case -EACCES:
	case -EPERM:
	case -ETIMEDOUT:
		return "refused or dropped: a firewall or security software may block it";
	case -EADDRINUSE:
	case -EADDRNOTAVAIL:
	case -ENOBUFS:
		return "this host is out of ephemeral ports or sockets: count TIME_WAIT with "
		       "netstat -ano";
	default:
		return "is usbmuxd running, and is this its address?";
	}
}

static void upstream_failed(struct upstream *u, int err)
{
	struct helper *h = u->t->h;
	char up[ADDR_SPEC_MAX], reason[600];
	unsigned suppressed;
	addr_format(&h->cfg.upstream, up, sizeof(up));
	if (h->resolver && err != -EAGAIN)
		resolver_retry(h->resolver); /* the address may have moved */
	if (err == -EAGAIN && h->resolver)
		snprintf(reason, sizeof(reason), "cannot connect to usbmuxd at %s: its name did "
			 "not resolve within %u ms (--connect-timeout; DNS is slow or unreachable)",
			 up, h->cfg.connect_timeout_ms);
	else if (err == -ETIMEDOUT)
		snprintf(reason, sizeof(reason), "cannot connect to usbmuxd at %s: no answer "
			 "within %u ms (--connect-timeout)", up, h->cfg.connect_timeout_ms);
	else
		snprintf(reason, sizeof(reason), "cannot connect to usbmuxd at %s: %s", up,
			 plat_strerror(-err));
	u->t->upstream_failures++;
	if (u->t->tenant)
		u->t->tenant->st.upstream_failures++;
	if (log_ratelimit_pass(&h->rl_upstream, loop_now(h->loop), &suppressed))
		log_warn("tunnel %s: %s (%s); retried with the next session%s", u->t->name, reason,
			 upstream_hint(err), suppressed ? " (more suppressed)" : "");
	link_stream_reset(u->st, TUN_RESET_UPSTREAM, reason);
}

static void upstream_connected(struct upstream *u, int fd)
{
	struct link_stream *st = u->st;
	u->t->upstream_connects++;
	if (u->t->tenant)
		u->t->tenant->st.upstream_connects++;
	link_stream_set_ctx(st, NULL);
	/* TCP upstreams end with a reset, never a FIN from us: no TIME_WAIT
	 * port per session on this host (see link.c, stream_local_fin). */
	link_stream_set_abortive_close(st, u->t->h->cfg.upstream.kind == ADDR_TCP);
	free(u);
	link_stream_bind(st, fd);
}

static void on_upstream_writable(struct loop_watch *w, unsigned ev)
{
	struct upstream *u = w->ctx;
	(void)ev;
	loop_timer_cancel(u->t->h->loop, &u->retry);
	int fd = w->fd;
	int rc = plat_connect_result(fd);
	loop_watch_remove(u->t->h->loop, w);
	if (rc < 0) {
		plat_close(fd);
		upstream_failed(u, rc);
		return;
	}
	upstream_connected(u, fd);
}

static void on_upstream_retry(struct loop_timer *t)
{
	struct upstream *u = t->ctx;
	if (u->w.fd >= 0) { /* a TCP connect that got no answer in time */
		int fd = u->w.fd;
		loop_watch_remove(u->t->h->loop, &u->w);
		plat_close(fd);
		upstream_failed(u, -ETIMEDOUT);
		return;
	}
	upstream_try(u);
}

static void upstream_try(struct upstream *u)
{
	struct helper *h = u->t->h;
	int fd, rc = helper_upstream_connect(&h->cfg.upstream, h->resolver, &fd);
	if (rc == 0) {
		upstream_connected(u, fd);
		return;
	}
	uint64_t waited = loop_now(h->loop) - u->started_ms;
	if (rc == -EINPROGRESS) {
		loop_watch_init(&u->w, fd, on_upstream_writable, u);
		rc = loop_watch_set(h->loop, &u->w, LOOP_OUT);
		if (rc == 0) {
			/* A usbmuxd port that never answers (queue full, SYNs
			 * dropped) would hold the stream for the kernel's SYN
			 * retries, two minutes: bounded by --connect-timeout. */
			unsigned limit = h->cfg.connect_timeout_ms;
			loop_timer_arm(h->loop, &u->retry, waited < limit ? limit - waited : 0);
			return;
		}
		loop_watch_remove(h->loop, &u->w);
		plat_close(fd);
	}
	/* usbmuxd listens with a backlog of 5: a burst of sessions meets a
	 * full queue (EAGAIN), which a moment later has room again. So does
	 * a helper briefly out of descriptors, or one whose upstream name is
	 * still being resolved (EAGAIN too). Retry those, briefly. */
	bool transient = rc == -EAGAIN || rc == -EMFILE || rc == -ENFILE;
	if (transient && waited < h->cfg.connect_timeout_ms) {
		if (rc != -EAGAIN)
			acceptor_pause(&h->acceptor, rc);
		loop_timer_arm(h->loop, &u->retry, u->delay_ms);
		u->delay_ms = u->delay_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : u->delay_ms * 2;
		return;
	}
	struct link_stream *st = u->st;
	link_stream_set_ctx(st, NULL);
	upstream_failed(u, rc);
	free(u);
}

static void tunnel_open(struct link *l, struct link_stream *st)
{
	struct tunnel *t = link_ctx(l);
	if (t->tenant && t->h->gate) {
		/* The gate answers the tenant's requests (gate.h). */
		int rc = gate_stream(t->h->gate, t->tenant, st);
		if (rc < 0)
			link_stream_reset(st, TUN_RESET_LOCAL_ERROR, "helper cannot gate the stream");
		return;
	}
	if (t->tenant)
		t->tenant->st.streams++;
	struct upstream *u = calloc(1, sizeof(*u));
	if (!u) {
		link_stream_reset(st, TUN_RESET_LOCAL_ERROR, "helper out of memory");
		return;
	}
	u->t = t;
	u->st = st;
	u->started_ms = loop_now(t->h->loop);
	u->delay_ms = RETRY_FIRST_MS;
	loop_watch_init(&u->w, -1, on_upstream_writable, u);
	loop_timer_init(&u->retry, on_upstream_retry, u);
	link_stream_set_ctx(st, u);
	upstream_try(u);
}

static void tunnel_stream_closed(struct link *l, struct link_stream *st)
{
	struct upstream *u = link_stream_ctx(st);
	(void)l;
	if (u) { /* closed while its upstream was still connecting */
		int fd = u->w.fd;
		loop_timer_cancel(u->t->h->loop, &u->retry);
		loop_watch_remove(u->t->h->loop, &u->w);
		plat_close(fd);
		free(u);
	}
}

static void tunnel_up(struct link *l)
{
	struct tunnel *t = link_ctx(l);
	struct helper *h = t->h;
	unsigned suppressed;
	t->pending = false;
	h->npending--;
	if (h->ntunnels >= h->cfg.max_tunnels) {
		if (log_ratelimit_pass(&h->rl_limit, loop_now(h->loop), &suppressed))
			log_warn("tunnel %s: refused: %u tunnels are up, the limit (--max-tunnels); "
				 "%u more refused since the last such line", t->name, h->ntunnels,
				 suppressed);
		link_close(l, TUN_GOAWAY_LIMIT, "too many tunnels on the helper (--max-tunnels)");
		return;
	}
	h->ntunnels++;
	t->was_up = true;
	if (h->tenants) {
		/* The proof just checked was made with the candidate's token. */
		t->tenant = h->candidate;
		h->candidate = NULL;
		if (!t->tenant) { /* cannot happen: a proof that matched picked one */
			link_close(l, TUN_GOAWAY_AUTH, "no tenant");
			return;
		}
		t->tenant->st.tunnels_total++;
		t->tenant->st.tunnels_open++;
		size_t len = strlen(t->name);
		snprintf(t->name + len, sizeof(t->name) - len, " (tenant %s)", t->tenant->def.name);
	}
	log_info("tunnel %s: up", t->name);
}

/* --tenants: which tenant's token made this proof? Every token is tried,
 * whether or not an earlier one matched, so the time taken does not tell
 * which tenant (or how many) a guess came close to. */
static bool tunnel_auth_pick(struct link *l, const struct tun_hello *local,
			     const struct tun_hello *peer, const uint8_t proof[TUN_MAC_LEN],
			     uint8_t *token, size_t *len)
{
	struct tunnel *t = link_ctx(l);
	struct helper *h = t->h;
	struct tenant *found = NULL;
	for (struct tenant *tn = h->tenants; tn; tn = tn->next) {
		uint8_t expect[TUN_MAC_LEN];
		if (tun_auth_proof(tn->def.token, tn->def.token_len, peer->role, peer->nonce,
				   local->nonce, expect) < 0)
			continue;
		if (crypto_equal(expect, proof, TUN_MAC_LEN) && !found)
			found = tn;
	}
	h->candidate = found;
	if (!found)
		return false;
	memcpy(token, found->def.token, found->def.token_len);
	*len = found->def.token_len;
	return true;
}

/* Guessing the token online: an address that keeps failing waits longer
 * and longer before its next proof is even checked (authlimit.h). */
static bool tunnel_auth_allowed(struct link *l)
{
	struct tunnel *t = link_ctx(l);
	struct helper *h = t->h;
	uint64_t wait;
	unsigned suppressed;
	if (authlimit_allowed(&h->authlimit, t->addr, loop_now(h->loop), &wait))
		return true;
	h->auth_unchecked++;
	if (log_ratelimit_pass(&h->rl_auth, loop_now(h->loop), &suppressed))
		log_warn("tunnel %s: refused unchecked: %s has failed to authenticate too often; its "
			 "next proof is checked in %llu ms (%llu failed, %llu refused unchecked so far)",
			 t->name, t->addr, (unsigned long long)wait, (unsigned long long)h->auth_failed,
			 (unsigned long long)h->auth_unchecked);
	return false;
}

static void tunnel_auth_result(struct link *l, bool ok)
{
	struct tunnel *t = link_ctx(l);
	struct helper *h = t->h;
	unsigned backoff, suppressed;
	unsigned failures = authlimit_result(&h->authlimit, t->addr, ok, loop_now(h->loop), &backoff);
	if (ok)
		return;
	h->auth_failed++;
	if (backoff && log_ratelimit_pass(&h->rl_auth, loop_now(h->loop), &suppressed))
		log_warn("tunnel %s: %s failed to authenticate %u times in a row: its next proof is "
			 "checked in %u ms (%llu failed, %llu refused unchecked so far)", t->name,
			 t->addr, failures, backoff, (unsigned long long)h->auth_failed,
			 (unsigned long long)h->auth_unchecked);
}

static void tunnel_unlink(struct tunnel *t)
{
	if (t->prev)
		t->prev->next = t->next;
	else
		t->h->tunnels = t->next;
	if (t->next)
		t->next->prev = t->prev;
}

/* Per-tunnel counters in the log, every --stats-interval seconds and on
 * SIGUSR1. */
static void helper_status(void *ctx)
{
	struct helper *h = ctx;
	log_info("stats: %u tunnels open, %llu served; %u in the handshake, %llu evicted from "
		 "it, %llu failed authentications, %llu proofs refused unchecked", h->ntunnels,
		 (unsigned long long)h->tunnels_total, h->npending,
		 (unsigned long long)h->pending_evicted, (unsigned long long)h->auth_failed,
		 (unsigned long long)h->auth_unchecked);
	for (struct tunnel *t = h->tunnels; t; t = t->next) {
		if (!t->was_up)
			continue; /* in its handshake: counted above */
		const struct link_stats *s = link_get_stats(t->link);
		log_info("stats: tunnel %s: %u streams open, %llu opened, %llu refused, "
			 "%llu upstream connects, %llu upstream failures, rtt %u ms, "
			 "%llu TCP upstreams ended with a FIN", t->name,
			 link_stream_count(t->link), (unsigned long long)s->streams_opened,
			 (unsigned long long)s->streams_refused,
			 (unsigned long long)t->upstream_connects,
			 (unsigned long long)t->upstream_failures, s->last_rtt_ms,
			 (unsigned long long)s->graceful_closes);
	}
	for (struct tenant *tn = h->tenants; tn; tn = tn->next) {
		uint64_t in = tn->st.bytes_in, out = tn->st.bytes_out;
		for (struct tunnel *t = h->tunnels; t; t = t->next)
			if (t->tenant == tn) {
				in += link_get_stats(t->link)->bytes_in;
				out += link_get_stats(t->link)->bytes_out;
			}
		log_info("stats: tenant %s: %u tunnels open, %llu served; %llu streams; refused: "
			 "%llu device, %llu pair_record, %llu command, %llu protocol; %llu answered "
			 "here; %llu upstream connects, %llu upstream failures; %llu bytes in, %llu out",
			 tn->def.name, tn->st.tunnels_open, (unsigned long long)tn->st.tunnels_total,
			 (unsigned long long)tn->st.streams,
			 (unsigned long long)tn->st.refused[GATE_REFUSED_DEVICE],
			 (unsigned long long)tn->st.refused[GATE_REFUSED_RECORD],
			 (unsigned long long)tn->st.refused[GATE_REFUSED_COMMAND],
			 (unsigned long long)tn->st.refused[GATE_REFUSED_PROTOCOL],
			 (unsigned long long)tn->st.local_answers,
			 (unsigned long long)tn->st.upstream_connects,
			 (unsigned long long)tn->st.upstream_failures, (unsigned long long)in,
			 (unsigned long long)out);
	}
}

/* --metrics: the same numbers in the Prometheus text format. Tenant names
 * are letters, digits and ".-_" (tenants.h): no label escaping needed. */
static void helper_metrics(void *ctx, struct metrics_text *o)
{
	struct helper *h = ctx;
	metrics_put(o, "# HELP muxshim_host_tunnels_open Tunnels up now.\n"
		       "# TYPE muxshim_host_tunnels_open gauge\nmuxshim_host_tunnels_open %u\n"
		       "# HELP muxshim_host_tunnels_total Tunnel connections accepted.\n"
		       "# TYPE muxshim_host_tunnels_total counter\nmuxshim_host_tunnels_total %llu\n"
		       "# HELP muxshim_host_auth_failed_total Wrong tunnel proofs.\n"
		       "# TYPE muxshim_host_auth_failed_total counter\n"
		       "muxshim_host_auth_failed_total %llu\n",
		    h->ntunnels, (unsigned long long)h->tunnels_total,
		    (unsigned long long)h->auth_failed);
	if (!h->tenants)
		return;
	bool live = false;
	size_t ndev = h->gate ? gate_devices(h->gate, &live) : 0;
	metrics_put(o, "# HELP muxshim_host_devices Devices in the helper's table (--tenants).\n"
		       "# TYPE muxshim_host_devices gauge\nmuxshim_host_devices %lu\n"
		       "# HELP muxshim_host_subscribed 1 while the helper's usbmuxd subscription is live.\n"
		       "# TYPE muxshim_host_subscribed gauge\nmuxshim_host_subscribed %d\n",
		    (unsigned long)ndev, live ? 1 : 0);
	static const struct { const char *name, *type, *help; } fam[] = {
		{ "tunnels_open", "gauge", "Tunnels up now, per tenant." },
		{ "tunnels_total", "counter", "Tunnels that proved the tenant's token." },
		{ "streams_total", "counter", "Streams (client sessions) opened." },
		{ "refused_total", "counter", "Requests refused, by reason." },
		{ "answered_here_total", "counter", "Requests the helper answered without usbmuxd." },
		{ "upstream_connects_total", "counter", "Connections opened to usbmuxd." },
		{ "upstream_failures_total", "counter", "Connections to usbmuxd that failed." },
		{ "bytes_total", "counter", "Tunnel payload bytes (in: from the shim)." },
	};
	for (size_t f = 0; f < sizeof(fam) / sizeof(fam[0]); f++) {
		metrics_put(o, "# HELP muxshim_host_tenant_%s %s\n# TYPE muxshim_host_tenant_%s %s\n",
			    fam[f].name, fam[f].help, fam[f].name, fam[f].type);
		for (struct tenant *tn = h->tenants; tn; tn = tn->next) {
			const char *n = tn->def.name;
			const struct tenant_stats *st = &tn->st;
			uint64_t in = st->bytes_in, out = st->bytes_out;
			switch (f) {
			case 0:
				metrics_put(o, "muxshim_host_tenant_tunnels_open{tenant=\"%s\"} %u\n", n,
					    st->tunnels_open);
				break;
			case 1:
			case 2:
			case 4:
			case 5:
			case 6: {
				uint64_t v = f == 1 ? st->tunnels_total : f == 2 ? st->streams
					     : f == 4 ? st->local_answers : f == 5 ? st->upstream_connects
					     : st->upstream_failures;
				metrics_put(o, "muxshim_host_tenant_%s{tenant=\"%s\"} %llu\n",
					    fam[f].name, n, (unsigned long long)v);
				break;
			}
			case 3:
				for (unsigned r = 0; r < GATE_REFUSED_N; r++)
					metrics_put(o, "muxshim_host_tenant_refused_total{tenant=\"%s\","
						       "reason=\"%s\"} %llu\n", n, gate_refusal_name(r),
						    (unsigned long long)st->refused[r]);
				break;
			case 7:
				for (struct tunnel *t = h->tunnels; t; t = t->next)
					if (t->tenant == tn) {
						in += link_get_stats(t->link)->bytes_in;
						out += link_get_stats(t->link)->bytes_out;
					}
				metrics_put(o, "muxshim_host_tenant_bytes_total{tenant=\"%s\","
					       "direction=\"in\"} %llu\n"
					       "muxshim_host_tenant_bytes_total{tenant=\"%s\","
					       "direction=\"out\"} %llu\n",
					    n, (unsigned long long)in, n, (unsigned long long)out);
				break;
			}
		}
	}
}

/* ---- tenants ------------------------------------------------------------ */

static int read_token_file(void *ctx, const char *path, uint8_t *out, size_t cap, size_t *len)
{
	(void)ctx;
	return daemon_read_token(path, out, cap, len);
}

/* Reads and parses the tenants file: 0 and the list, or -EINVAL with why
 * in err. *text keeps the file's bytes (the caller frees them). */
static int tenants_load(const char *path, struct tenant_list *l, char **text, size_t *len,
			char *err, size_t errlen)
{
	int rc = plat_read_file(path, TENANTS_FILE_MAX, text, len);
	if (rc < 0) {
		snprintf(err, errlen, "%s: %s", path, rc == -EFBIG ? "longer than 1 MiB"
								  : plat_strerror(-rc));
		return -EINVAL;
	}
	char dir[1024];
	tenants_dir_of(path, dir, sizeof(dir));
	char why[600];
	rc = tenants_parse(*text, *len, dir, read_token_file, NULL, l, why, sizeof(why));
	if (rc == 0 && l->n == 0) {
		tenants_free(l);
		snprintf(why, sizeof(why), "no tenants in it: at least one is needed");
		rc = -EINVAL;
	}
	if (rc < 0) {
		snprintf(err, errlen, "%s: %s", path, why);
		free(*text);
		*text = NULL;
	}
	return rc;
}

static bool same_devices(const struct tenant_def *a, const struct tenant_def *b)
{
	if (a->all != b->all || a->ndevices != b->ndevices)
		return false;
	for (size_t i = 0; i < a->ndevices; i++)
		if (!tenant_allows(b, a->devices[i]))
			return false;
	return true;
}

/* Takes over the parsed list l (emptied): tenants are matched by name;
 * one that stays keeps its tunnels, streams and counters and gets its new
 * device list (and token, for tunnels from now on); one that is new is
 * added; one that is gone has its tunnels closed. */
static int tenants_apply(struct helper *h, struct tenant_list *l)
{
	struct tenant *fresh = NULL, **tail = &fresh;
	unsigned added = 0, changed = 0, removed = 0;
	for (size_t i = 0; i < l->n; i++) {
		struct tenant *t = NULL, **pp;
		for (pp = &h->tenants; *pp; pp = &(*pp)->next)
			if (strcmp((*pp)->def.name, l->t[i].name) == 0) {
				t = *pp;
				*pp = t->next; /* out of the old list */
				break;
			}
		if (!t) {
			t = calloc(1, sizeof(*t));
			if (!t) {
				free(t);
				log_error("tenants: out of memory; tenant %s not added", l->t[i].name);
				continue;
			}
			t->def = l->t[i];
			memset(&l->t[i], 0, sizeof(l->t[i]));
			if (gate_tenant_set(t) < 0) {
				log_error("tenants: out of memory; tenant %s not added", t->def.name);
				tenant_def_free(&t->def);
				free(t);
				continue;
			}
			added++;
			log_info("tenants: %s added (%s)", t->def.name,
				 t->def.all ? "every device" : "a device list");
		} else {
			struct tenant_def old = t->def;
			bool devices = !same_devices(&old, &l->t[i]);
			bool token = old.token_len != l->t[i].token_len ||
				     memcmp(old.token, l->t[i].token, old.token_len) != 0;
			t->def = l->t[i];
			memset(&l->t[i], 0, sizeof(l->t[i]));
			if (devices) {
				changed++;
				if (gate_tenant_set(t) < 0) {
					log_error("tenants: out of memory; closing tenant %s's streams",
						  t->def.name);
					gate_tenant_gone(h->gate, t);
				} else if (h->gate) {
					gate_tenant_changed(h->gate, t, &old);
				}
				log_info("tenants: %s now has %s", t->def.name,
					 t->def.all ? "every device" : "a new device list");
			}
			if (token)
				log_info("tenants: %s has a new token: its open tunnels stay, new ones "
					 "need the new token", t->def.name);
			tenant_def_free(&old);
		}
		t->next = NULL; /* it may still point into the old list */
		*tail = t;
		tail = &t->next;
	}
	/* What is left of the old list is gone from the file. */
	while (h->tenants) {
		struct tenant *t = h->tenants;
		h->tenants = t->next;
		removed++;
		log_info("tenants: %s removed: its tunnels are closed", t->def.name);
		if (h->gate)
			gate_tenant_gone(h->gate, t);
		struct tunnel *next;
		for (struct tunnel *tu = h->tunnels; tu; tu = next) {
			next = tu->next;
			if (tu->tenant == t)
				link_close(tu->link, TUN_GOAWAY_AUTH, "tenant removed from the helper");
		}
		gate_tenant_clear(t);
		tenant_def_free(&t->def);
		free(t);
	}
	h->tenants = fresh;
	tenants_free(l);
	log_info("tenants: %u added, %u with new devices, %u removed", added, changed, removed);
	return 0;
}

static void tenants_reload(void *ctx)
{
	struct helper *h = ctx;
	if (!h->cfg.tenants_path)
		return;
	struct tenant_list l;
	char *text, err[800];
	size_t len;
	if (tenants_load(h->cfg.tenants_path, &l, &text, &len, err, sizeof(err)) < 0) {
		log_warn("tenants: reload refused, nothing changed: %s", err);
		return;
	}
	free(h->tenants_text);
	h->tenants_text = text;
	h->tenants_len = len;
	log_info("tenants: reloading %s (%u tenants)", h->cfg.tenants_path, (unsigned)l.n);
	tenants_apply(h, &l);
}

/* --tenants-watch: the file's bytes are compared every S seconds (the
 * way to reload on Windows, which has no SIGHUP). */
static void on_tenants_watch(struct loop_timer *tm)
{
	struct helper *h = tm->ctx;
	char *text;
	size_t len;
	if (plat_read_file(h->cfg.tenants_path, TENANTS_FILE_MAX, &text, &len) == 0) {
		bool same = len == h->tenants_len && h->tenants_text &&
			    memcmp(text, h->tenants_text, len) == 0;
		free(text);
		if (!same) {
			log_info("tenants: %s changed", h->cfg.tenants_path);
			/* A file that fails to parse is remembered too: it is
			 * reported once, not every S seconds. */
			tenants_reload(h);
			if (plat_read_file(h->cfg.tenants_path, TENANTS_FILE_MAX, &text, &len) == 0) {
				free(h->tenants_text);
				h->tenants_text = text;
				h->tenants_len = len;
			}
		}
	}
	loop_timer_arm(h->loop, tm, (uint64_t)h->cfg.tenants_watch_s * 1000);
}

static void on_summary(struct loop_timer *tm)
{
	struct helper *h = tm->ctx;
	helper_status(h);
	loop_timer_arm(h->loop, tm, (uint64_t)h->cfg.stats_interval_s * 1000);
}

static void tunnel_down(struct link *l, const char *why)
{
	struct tunnel *t = link_ctx(l);
	struct helper *h = t->h;
	const struct link_stats *s = link_get_stats(l);
	unsigned suppressed;
	if (t->was_up)
		log_info("tunnel %s: closed (%s); %llu streams, %llu upstream connects, %llu failures",
			 t->name, why, (unsigned long long)s->streams_opened,
			 (unsigned long long)t->upstream_connects,
			 (unsigned long long)t->upstream_failures);
	else if (log_ratelimit_pass(&h->rl_no_handshake, loop_now(h->loop), &suppressed))
		/* Scanners, abandoned connections and refused shims: one line per
		 * interval, not one per connection. */
		log_info("tunnel %s: closed before its handshake completed (%s); %u more like it "
			 "since the last such line", t->name, why, suppressed);
	if (t->tenant) {
		t->tenant->st.tunnels_open--;
		t->tenant->st.bytes_in += s->bytes_in;
		t->tenant->st.bytes_out += s->bytes_out;
	}
	tunnel_unlink(t);
	if (t->pending)
		h->npending--;
	else if (t->was_up)
		h->ntunnels--;
	free(t);
	acceptor_update(&h->acceptor);
}

static const struct link_ops tunnel_ops = {
	.up = tunnel_up,
	.open = tunnel_open,
	.down = tunnel_down,
	.stream_closed = tunnel_stream_closed,
	.auth_allowed = tunnel_auth_allowed,
	.auth_result = tunnel_auth_result,
	.auth_pick = tunnel_auth_pick,
};

/* The handshake budget is full: the oldest connection still in its
 * handshake makes room. A shim holding the token finishes in one round
 * trip, so to push it out a flood would have to open --max-pending
 * connections within that round trip; refusing new connections instead
 * would let a flood that re-opens as fast as slots free up keep it out for
 * as long as it lasts (and leave it in the listen queue, or its SYNs
 * dropped, in the meantime). */
static bool evict_oldest_pending(struct helper *h)
{
	struct tunnel *oldest = NULL;
	for (struct tunnel *t = h->tunnels; t; t = t->next)
		if (t->pending)
			oldest = t;
	if (!oldest)
		return false;
	h->pending_evicted++;
	link_close(oldest->link, TUN_GOAWAY_LIMIT,
		   "evicted: too many connections in the handshake (--max-pending)");
	return true;
}

static void tunnel_start(struct helper *h, int fd)
{
	struct tunnel *t = calloc(1, sizeof(*t));
	if (!t) {
		plat_close(fd);
		return;
	}
	t->h = h;
	snprintf(t->name, sizeof(t->name), "#%llu", (unsigned long long)++h->next_tunnel_id);
	if (plat_peer_addr(fd, t->addr, sizeof(t->addr)) < 0)
		snprintf(t->addr, sizeof(t->addr), "?");
	while (h->npending >= h->cfg.max_pending && evict_oldest_pending(h))
		;
	struct link_config lc = {
		.role = TUN_ROLE_HELPER,
		.max_frame = h->cfg.max_frame,
		.window = h->cfg.window,
		.max_streams = h->cfg.max_streams,
		.token = h->cfg.has_token ? h->cfg.token : NULL,
		.token_len = h->cfg.token_len,
		.keepalive_ms = h->cfg.keepalive_ms,
		.handshake_ms = h->cfg.handshake_ms,
		.peer_name = t->name,
	};
	h->npending++;
	t->pending = true;
	h->tunnels_total++;
	t->next = h->tunnels;
	if (h->tunnels)
		h->tunnels->prev = t;
	h->tunnels = t;
	log_debug("tunnel %s: connection accepted", t->name);
	int rc = link_new(h->loop, fd, &lc, &tunnel_ops, t, &t->link);
	if (rc < 0 && rc != -EPIPE) {
		log_error("tunnel %s: cannot start: %s", t->name, plat_strerror(-rc));
		plat_close(fd);
		tunnel_unlink(t);
		free(t);
		h->npending--;
	}
}

/* Always: a full handshake budget makes room by eviction, and a shim beyond
 * --max-tunnels is told so once it has authenticated. */
static bool helper_has_room(void *ctx)
{
	(void)ctx;
	return true;
}

static void helper_accepted(void *ctx, int fd)
{
	tunnel_start(ctx, fd);
}

/* --serve: a client of our UNIX socket is the one tenant's, answered by
 * the gate like a tunnel stream. */
static void serve_accepted(void *ctx, int fd)
{
	struct helper *h = ctx;
	if (gate_client(h->gate, h->tenants, fd) < 0)
		plat_close(fd);
}

/* ---- options ----------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: muxshim-host [options]\n"
		"The host side of muxshim's tunnel: serves containers' shims over TCP and\n"
		"opens a local usbmuxd connection for each of their sessions.\n"
		"\n"
		"  --listen HOST:PORT     tunnel port (default 127.0.0.1:27016)\n"
		"  --upstream ADDR        usbmuxd: unix:PATH or tcp:HOST:PORT (default\n"
		"                         $USBMUXD_SOCKET_ADDRESS, else %s)\n"
		"  --token-file FILE      shared secret; shims must present the same one (at\n"
		"                         least 128 random bits: see --gen-token)\n"
		"  --tenants FILE         one token per tenant, each with its devices (lines of\n"
		"                         NAME TOKEN_FILE DEVICES; instead of --token-file);\n"
		"                         SIGHUP reloads it\n"
		"  --tenants-watch S      also reload it when its contents change, checked every\n"
		"                         S seconds (default 0: off; the way on Windows)\n"
		"  --gen-token FILE       write a new random token to FILE (a new file, mode\n"
		"                         0600) and exit\n"
		"  --allow-remote         listen on a non-loopback address without a token\n"
		"  --serve PATH           no tunnel: serve one container at a UNIX socket with\n"
		"                         the devices of --devices only (Linux hosts; see\n"
		"                         docs/deploy-linux.md); --name names it in the log,\n"
		"                         --socket-mode (default 0666), --socket-owner O[:G]\n"
		"  --devices LIST         --serve: `*` or UDIDs separated by commas\n"
		"  --max-tunnels N        concurrent tunnels (containers), default 64\n"
		"  --max-pending N        connections still in their handshake, default 64;\n"
		"                         when full, the oldest of them is closed\n"
		"  --max-streams N        concurrent streams per tunnel, default 1024\n"
		"  --window BYTES         per-stream receive window, default 262144\n"
		"  --keepalive MS         ping an idle tunnel after MS, default 15000; a tunnel\n"
		"                         silent for 3 x MS is closed\n"
		"  --handshake-timeout MS close a connection that has not completed the\n"
		"                         tunnel handshake within MS, default 3000\n"
		"  --connect-timeout MS   how long a stream waits for usbmuxd: retries of a full\n"
		"                         listen queue, and a TCP connect (default 2000)\n"
		"  --user NAME            run as this user once the port is bound (from root)\n"
		"  --no-seccomp           do not enter the seccomp sandbox (Linux)\n"
		"  --stats-interval S     log per-tunnel counters every S seconds (default 300; 0 off)\n"
		"  --metrics HOST:PORT    Prometheus text format over HTTP (/metrics): tunnels,\n"
		"                         and per tenant streams, refusals, upstream, bytes\n"
		"  --log-level LEVEL      error, warn, info or debug (default info)\n"
		"  --log-file PATH        append log lines to PATH instead of stderr\n"
		"  --service              run under the Windows Service Control Manager\n"
		"  --install-service      install a Windows service running this program\n"
		"                         with the other options given; --uninstall-service\n"
		"                         stops and removes it\n"
		"  --help, --version\n",
		plat_default_usbmuxd());
}

static void die_usage(const char *fmt, const char *arg)
{
	fprintf(stderr, "muxshim-host: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\nTry 'muxshim-host --help'.\n");
	exit(2);
}

static int parse_u32(const char *s, unsigned long min, unsigned long max, uint32_t *out)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v < min || v > max)
		return -EINVAL;
	*out = (uint32_t)v;
	return 0;
}

static void parse_args(int argc, char **argv, struct helper_config *cfg)
{
	enum { O_LISTEN = 256, O_UPSTREAM, O_TOKEN, O_REMOTE, O_TUNNELS, O_STREAMS, O_WINDOW,
	       O_KEEPALIVE, O_INTERVAL, O_LOGLEVEL, O_LOGFILE, O_SERVICE, O_INSTALL, O_UNINSTALL, O_HELP,
	       O_VERSION, O_HANDSHAKE, O_USER, O_NOSECCOMP, O_GENTOKEN, O_PENDING, O_CTIMEOUT,
	       O_TENANTS, O_TWATCH, O_METRICS, O_SERVE, O_DEVICES, O_NAME, O_SMODE, O_SOWNER };
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, O_LISTEN },
		{ "upstream", required_argument, NULL, O_UPSTREAM },
		{ "token-file", required_argument, NULL, O_TOKEN },
		{ "gen-token", required_argument, NULL, O_GENTOKEN },
		{ "tenants", required_argument, NULL, O_TENANTS },
		{ "tenants-watch", required_argument, NULL, O_TWATCH },
		{ "metrics", required_argument, NULL, O_METRICS },
		{ "serve", required_argument, NULL, O_SERVE },
		{ "devices", required_argument, NULL, O_DEVICES },
		{ "name", required_argument, NULL, O_NAME },
		{ "socket-mode", required_argument, NULL, O_SMODE },
		{ "socket-owner", required_argument, NULL, O_SOWNER },
		{ "allow-remote", no_argument, NULL, O_REMOTE },
		{ "max-tunnels", required_argument, NULL, O_TUNNELS },
		{ "max-pending", required_argument, NULL, O_PENDING },
		{ "max-streams", required_argument, NULL, O_STREAMS },
		{ "window", required_argument, NULL, O_WINDOW },
		{ "keepalive", required_argument, NULL, O_KEEPALIVE },
		{ "stats-interval", required_argument, NULL, O_INTERVAL },
		{ "log-level", required_argument, NULL, O_LOGLEVEL },
		{ "log-file", required_argument, NULL, O_LOGFILE },
		{ "handshake-timeout", required_argument, NULL, O_HANDSHAKE },
		{ "user", required_argument, NULL, O_USER },
		{ "no-seccomp", no_argument, NULL, O_NOSECCOMP },
		{ "connect-timeout", required_argument, NULL, O_CTIMEOUT },
		{ "service", no_argument, NULL, O_SERVICE },
		{ "install-service", no_argument, NULL, O_INSTALL },
		{ "uninstall-service", no_argument, NULL, O_UNINSTALL },
		{ "help", no_argument, NULL, O_HELP },
		{ "version", no_argument, NULL, O_VERSION },
		{ NULL, 0, NULL, 0 },
	};
	char err[512];
	const char *listen = "127.0.0.1:27016";
	const char *upstream = NULL;
	uint32_t v;

	cfg->max_tunnels = 64;
	cfg->max_pending = 64;
	cfg->max_streams = 1024;
	cfg->window = 256 * 1024;
	cfg->max_frame = 16 * 1024;
	cfg->keepalive_ms = 15000;
	cfg->stats_interval_s = 300;
	cfg->handshake_ms = 3000;
	cfg->connect_timeout_ms = 2000;
	cfg->log_level = LOG_INFO;
	cfg->seccomp = true;
	cfg->socket_mode = 0666;

	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case O_LISTEN:
			listen = optarg;
			cfg->listen_given = true;
			break;
		case O_UPSTREAM:
			upstream = optarg;
			break;
		case O_TOKEN:
			if (daemon_load_token("muxshim-host", optarg, cfg->token, sizeof(cfg->token),
					      &cfg->token_len, err, sizeof(err)) < 0)
				die_usage("%s", err);
			cfg->has_token = true;
			break;
		case O_GENTOKEN:
			exit(daemon_gen_token("muxshim-host", optarg));
		case O_TENANTS:
			cfg->tenants_path = optarg;
			break;
		case O_SERVE:
			cfg->serve_path = optarg;
			break;
		case O_DEVICES:
			cfg->serve_devices = optarg;
			break;
		case O_NAME:
			cfg->serve_name = optarg;
			break;
		case O_SMODE: {
			char *end;
			unsigned long m = strtoul(optarg, &end, 8);
			if (!*optarg || *end || m > 07777)
				die_usage("--socket-mode '%s': need an octal mode such as 0660", optarg);
			cfg->socket_mode = (unsigned)m;
			break;
		}
		case O_SOWNER:
			cfg->socket_owner = optarg;
			break;
		case O_METRICS:
			if (addr_parse_hostport(optarg, cfg->metrics_host, sizeof(cfg->metrics_host),
						&cfg->metrics_port, err, sizeof(err)) < 0)
				die_usage("--metrics: %s", err);
			break;
		case O_TWATCH:
			if (parse_u32(optarg, 0, 86400, &v) < 0)
				die_usage("--tenants-watch '%s': need seconds, 0 to 86400", optarg);
			cfg->tenants_watch_s = v;
			break;
		case O_REMOTE:
			cfg->allow_remote = true;
			break;
		case O_TUNNELS:
			if (parse_u32(optarg, 1, 4096, &v) < 0)
				die_usage("--max-tunnels '%s': need 1 to 4096", optarg);
			cfg->max_tunnels = v;
			break;
		case O_PENDING:
			if (parse_u32(optarg, 1, 4096, &v) < 0)
				die_usage("--max-pending '%s': need 1 to 4096", optarg);
			cfg->max_pending = v;
			break;
		case O_STREAMS:
			if (parse_u32(optarg, 1, TUN_STREAMS_MAX, &cfg->max_streams) < 0)
				die_usage("--max-streams '%s': need 1 to 65536", optarg);
			break;
		case O_WINDOW:
			if (parse_u32(optarg, TUN_WINDOW_MIN, TUN_WINDOW_MAX, &cfg->window) < 0)
				die_usage("--window '%s': need 1024 to 16777216 bytes", optarg);
			break;
		case O_KEEPALIVE:
			if (parse_u32(optarg, 100, 3600000, &v) < 0)
				die_usage("--keepalive '%s': need 100 to 3600000 ms", optarg);
			cfg->keepalive_ms = v;
			break;
		case O_INTERVAL:
			if (parse_u32(optarg, 0, 86400, &v) < 0)
				die_usage("--stats-interval '%s': need seconds, 0 to 86400", optarg);
			cfg->stats_interval_s = v;
			break;
		case O_LOGLEVEL:
			if (log_parse_level(optarg, &cfg->log_level) < 0)
				die_usage("--log-level '%s': need error, warn, info or debug", optarg);
			break;
		case O_LOGFILE:
			cfg->log_file = optarg;
			break;
		case O_HANDSHAKE:
			if (parse_u32(optarg, 100, 600000, &v) < 0)
				die_usage("--handshake-timeout '%s': need 100 to 600000 ms", optarg);
			cfg->handshake_ms = v;
			break;
		case O_USER:
			if (!*optarg)
				die_usage("--user '%s': need a user name or number", optarg);
			cfg->user = optarg;
			break;
		case O_NOSECCOMP:
			cfg->seccomp = false;
			break;
		case O_CTIMEOUT:
			if (parse_u32(optarg, 0, 600000, &v) < 0)
				die_usage("--connect-timeout '%s': need milliseconds, 0 to 600000", optarg);
			cfg->connect_timeout_ms = v;
			break;
		case O_SERVICE:
			cfg->service = true;
			break;
		case O_INSTALL:
			cfg->action = INSTALL_SERVICE;
			break;
		case O_UNINSTALL:
			cfg->action = UNINSTALL_SERVICE;
			break;
		case O_HELP:
			usage(stdout);
			exit(0);
		case O_VERSION:
			printf("muxshim-host %s\n", MUXSHIM_VERSION);
			exit(0);
		default:
			die_usage("unknown or incomplete option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		die_usage("unexpected argument '%s'", argv[optind]);
	if (cfg->tenants_path) {
		if (cfg->has_token)
			die_usage("%s", "--tenants and --token-file: the tenants file names every "
				  "token; use one or the other");
		char *text, why[900];
		size_t len;
		if (tenants_load(cfg->tenants_path, &initial_tenants, &text, &len, why,
				 sizeof(why)) < 0)
			die_usage("--tenants %s", why);
		helper.tenants_text = text;
		helper.tenants_len = len;
		/* Every tunnel must prove a tenant's token (tunnel_auth_pick):
		 * what the link would check without a pick is a random one. */
		cfg->has_token = true;
		cfg->token_len = 32;
		plat_random(cfg->token, cfg->token_len);
	} else if (cfg->tenants_watch_s) {
		die_usage("%s", "--tenants-watch needs --tenants");
	}
	if (cfg->serve_path) {
		if (cfg->has_token || cfg->listen_given)
			die_usage("%s", "--serve opens no tunnel port: no --listen, --token-file or "
				  "--tenants with it");
		if (!plat_has_unix_sockets())
			die_usage("%s", "--serve: this build has no UNIX sockets to serve on (Linux and "
				  "macOS hosts only)");
		if (!cfg->serve_devices)
			die_usage("%s", "--serve needs --devices (`*` or UDIDs separated by commas)");
		struct tenant *t = calloc(1, sizeof(*t));
		const char *name = cfg->serve_name ? cfg->serve_name : "local";
		if (!t || strlen(name) > TENANT_NAME_MAX)
			die_usage("--name '%s': at most 32 characters", name);
		if (tenant_def_devices(&t->def, name, cfg->serve_devices, err, sizeof(err)) < 0)
			die_usage("--devices: %s", err);
		t->def.line = 0;
		if (gate_tenant_set(t) < 0)
			die_usage("%s", "out of memory");
		helper.tenants = t;
	} else if (cfg->serve_devices || cfg->serve_name) {
		die_usage("%s", "--devices and --name go with --serve");
	}

	if (addr_parse_hostport(listen, cfg->listen_host, sizeof(cfg->listen_host),
				&cfg->listen_port, err, sizeof(err)) < 0)
		die_usage("--listen: %s", err);
	if (upstream) {
		cfg->upstream_source = "--upstream";
		if (addr_parse(upstream, ADDR_UNIX | ADDR_TCP, &cfg->upstream, err, sizeof(err)) < 0)
			die_usage("--upstream: %s", err);
	} else if (getenv("USBMUXD_SOCKET_ADDRESS") && *getenv("USBMUXD_SOCKET_ADDRESS")) {
		cfg->upstream_source = "USBMUXD_SOCKET_ADDRESS";
		if (addr_parse_usbmuxd_env(getenv("USBMUXD_SOCKET_ADDRESS"), &cfg->upstream, err,
					   sizeof(err)) < 0)
			die_usage("USBMUXD_SOCKET_ADDRESS: %s", err);
	} else {
		cfg->upstream_source = "default";
		if (addr_parse(plat_default_usbmuxd(), ADDR_UNIX | ADDR_TCP, &cfg->upstream, err,
			       sizeof(err)) < 0)
			die_usage("%s", err);
	}
	if (cfg->upstream.kind == ADDR_UNIX && !plat_has_unix_sockets())
		die_usage("%s: UNIX-domain sockets are not supported by this build; usbmuxd "
			  "(Apple Mobile Device Service) listens on tcp:127.0.0.1:27015",
			  cfg->upstream_source);
	if (cfg->service && !cfg->log_file)
		cfg->log_file = service_default_log_file(); /* a service has no console */
}

static const char *listen_hint(int err)
{
	if (err == -EADDRINUSE)
		return " (another muxshim-host, or another program, has that port: stop it or "
		       "choose another --listen port)";
	if (err == -EACCES)
		return " (the port is reserved or blocked: on Windows see `netsh int ipv4 show "
		       "excludedportrange protocol=tcp`, where Hyper-V, WSL and Docker reserve "
		       "ranges; choose another --listen port)";
	return "";
}

/* The helper itself: from the options to a clean exit (status 0), in a
 * console or as a service. */
static int helper_run(void)
{
	struct helper *h = &helper;
	log_init("muxshim-host", h->cfg.log_level);
	if (h->cfg.log_file) {
		int rc = log_open_file(h->cfg.log_file);
		if (rc < 0) {
			log_error("cannot open the log file %s: %s", h->cfg.log_file,
				  plat_strerror(-rc));
			return 1;
		}
	}

	bool loopback = plat_is_loopback(h->cfg.listen_host);
	if (!loopback && !h->cfg.has_token && !h->cfg.serve_path) {
		if (!h->cfg.allow_remote) {
			log_error("refusing to listen on %s without a token: anyone who reaches that "
				  "address could use every iPhone on this host. Use --token-file "
				  "(and the same file for the shims), or --allow-remote to force it",
				  h->cfg.listen_host);
			return 2;
		}
		log_warn("listening on %s WITHOUT a token (--allow-remote): anyone who can reach "
			 "it can pair with, install on and read from the iPhones on this host",
			 h->cfg.listen_host);
	}

	h->rl_upstream.interval_ms = 10000;
	h->rl_no_handshake.interval_ms = 10000;
	h->rl_auth.interval_ms = 10000;
	h->rl_limit.interval_ms = 10000;
	int rc = loop_new(&h->loop);
	if (rc < 0) {
		log_error("cannot create the event loop: %s", plat_strerror(-rc));
		return 1;
	}
	static struct daemon_signals sig = { .status = helper_status, .reload = tenants_reload };
	sig.ctx = h;
	rc = daemon_watch_signals(h->loop, &sig);
	if (rc < 0) {
		log_error("cannot install signal handlers: %s", plat_strerror(-rc));
		return 1;
	}
	char up[ADDR_SPEC_MAX];
	addr_format(&h->cfg.upstream, up, sizeof(up));
	/* A TCP upstream named by a host name is resolved by a thread, never
	 * on the loop (getaddrinfo waits for DNS); started before the sandbox,
	 * which then covers it too. A literal address needs no thread. */
	if (h->cfg.upstream.kind == ADDR_TCP &&
	    (rc = resolver_start(&h->resolver, h->loop, h->cfg.upstream.host, h->cfg.upstream.port,
				 NULL, NULL)) < 0) {
		log_error("cannot resolve the upstream %s: %s", up, plat_strerror(-rc));
		return 1;
	}
	if (h->cfg.serve_path) {
		bool replaced = false;
		rc = plat_unix_listen(h->cfg.serve_path, h->cfg.socket_mode, h->cfg.socket_owner, 512,
				      &h->listen_fd, &replaced, &h->serve_id);
		if (rc < 0) {
			log_error("cannot serve %s: %s", h->cfg.serve_path,
				  rc == -EADDRINUSE ? "something is listening there already"
				  : rc == -EEXIST ? "a file that is not a socket is in the way"
						  : plat_strerror(-rc));
			return 1;
		}
		if ((rc = gate_new(h->loop, &h->cfg.upstream, h->resolver, h->cfg.connect_timeout_ms,
				   &h->gate)) < 0) {
			log_error("cannot start the gate: %s", plat_strerror(-rc));
			plat_unix_unlink_if_ours(h->cfg.serve_path, &h->serve_id);
			plat_close(h->listen_fd);
			return 1;
		}
		log_info("muxshim-host %s serving %s for %s (%s)%s, upstream %s (%s)", MUXSHIM_VERSION,
			 h->cfg.serve_path, h->tenants->def.name, h->cfg.serve_devices,
			 replaced ? ", a stale socket file replaced" : "", up, h->cfg.upstream_source);
	} else {
		rc = plat_tcp_listen(h->cfg.listen_host, h->cfg.listen_port, 64, &h->listen_fd);
		if (rc < 0) {
			log_error("cannot listen on %s:%u: %s%s", h->cfg.listen_host,
				  h->cfg.listen_port, plat_strerror(-rc), listen_hint(rc));
			return 1;
		}
		log_info("muxshim-host %s listening on %s:%u, upstream %s (%s)%s", MUXSHIM_VERSION,
			 h->cfg.listen_host, h->cfg.listen_port, up, h->cfg.upstream_source,
			 h->cfg.has_token ? ", token required" : "");
	}

	if (h->cfg.tenants_path) {
		if ((rc = gate_new(h->loop, &h->cfg.upstream, h->resolver, h->cfg.connect_timeout_ms,
				   &h->gate)) < 0) {
			log_error("cannot start the tenants' gate: %s", plat_strerror(-rc));
			plat_close(h->listen_fd);
			return 1;
		}
		log_info("tenants: %u from %s", (unsigned)initial_tenants.n, h->cfg.tenants_path);
		tenants_apply(h, &initial_tenants);
		loop_timer_init(&h->tenants_watch, on_tenants_watch, h);
		if (h->cfg.tenants_watch_s)
			loop_timer_arm(h->loop, &h->tenants_watch,
				       (uint64_t)h->cfg.tenants_watch_s * 1000);
	}
	if (h->cfg.metrics_port &&
	    metrics_start(h->loop, h->cfg.metrics_host, h->cfg.metrics_port, helper_metrics, h,
			  &h->metrics) < 0) {
		plat_close(h->listen_fd);
		return 1;
	}
	acceptor_start(&h->acceptor, h->loop, h->listen_fd, ACCEPTS_PER_WAKE, helper_has_room,
		       h->cfg.serve_path ? serve_accepted : helper_accepted, h);
	if (daemon_harden(h->cfg.user, h->cfg.seccomp) < 0) {
		plat_close(h->listen_fd);
		return 1;
	}
	loop_timer_init(&h->summary, on_summary, h);
	if (h->cfg.stats_interval_s)
		loop_timer_arm(h->loop, &h->summary, (uint64_t)h->cfg.stats_interval_s * 1000);
	service_ready();
	while (rc == 0 && !sig.stop) {
		rc = loop_run_once(h->loop, -1);
		if (h->gate)
			gate_reap(h->gate);
		metrics_reap(h->metrics);
	}
	log_info("signal %d: shutting down (%u tunnels open, %llu served)", sig.stop, h->ntunnels,
		 (unsigned long long)h->tunnels_total);
	/* Each shim hears why (GOAWAY NORMAL, docs/PROTOCOL.md §5) instead of
	 * seeing its connection drop. */
	while (h->tunnels)
		link_close(h->tunnels->link, TUN_GOAWAY_NORMAL, "helper shutting down");
	gate_free(h->gate);
	h->gate = NULL;
	resolver_stop(h->resolver);
	h->resolver = NULL;
	metrics_stop(h->metrics);
	h->metrics = NULL;
	while (h->tenants) {
		struct tenant *t = h->tenants;
		h->tenants = t->next;
		gate_tenant_clear(t);
		tenant_def_free(&t->def);
		free(t);
	}
	free(h->tenants_text);
	loop_timer_cancel(h->loop, &h->tenants_watch);
	acceptor_stop(&h->acceptor);
	if (h->cfg.serve_path)
		plat_unix_unlink_if_ours(h->cfg.serve_path, &h->serve_id);
	plat_close(h->listen_fd);
	loop_free(h->loop); /* frees what the closes deferred */
	return rc < 0 ? 1 : 0;
}

/* Is arg this long option, possibly abbreviated as getopt_long allows? */
static bool is_option(const char *arg, const char *name)
{
	size_t n = strlen(arg);
	return n > 2 && n <= strlen(name) && strncmp(arg, name, n) == 0;
}

int main(int argc, char **argv)
{
	plat_std_fds();
	parse_args(argc, argv, &helper.cfg);
	if (helper.cfg.action == UNINSTALL_SERVICE)
		return service_uninstall();
	if (helper.cfg.action == INSTALL_SERVICE) {
		/* The service runs with the options given here, minus this one. */
		char **args = calloc((size_t)argc, sizeof(*args));
		int n = 0;
		if (!args)
			return 1;
		for (int i = 1; i < argc; i++)
			if (!is_option(argv[i], "--install-service") && !is_option(argv[i], "--service"))
				args[n++] = argv[i];
		int rc = service_install(n, args);
		free(args);
		return rc;
	}
	return helper.cfg.service ? service_run(helper_run) : helper_run();
}
