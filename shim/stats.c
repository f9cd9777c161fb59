#include "stats.h"

#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Windows facts for the warning (docs/deploy-tunnel.md). */
#define WIN_DYNAMIC_PORTS 16384
#define WIN_TIME_WAIT_S   120
#define SEED_TCP_HOPS     2
#define WARN_EVERY_MS     60000

static const int fail_errnos[8] = { ENOENT, ECONNREFUSED, EACCES, EAGAIN, EMFILE,
				    ECONNRESET, ETIMEDOUT, 0 /* other */ };

void stats_init(struct stats *st, bool inspect, double warn_rate, uint64_t now_ms)
{
	memset(st, 0, sizeof(*st));
	st->started_ms = now_ms;
	st->inspect = inspect;
	st->warn_rate = warn_rate;
}

bool stats_read_comm(pid_t pid, char *out, size_t len)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%ld/comm", (long)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return false;
	char raw[64];
	size_t n = fread(raw, 1, sizeof(raw), f);
	bool ok = !ferror(f) && n > 0;
	fclose(f);
	if (!ok)
		return false;
	if (raw[n - 1] == '\n')
		n--; /* the kernel's line end; a newline inside the name is escaped */
	log_sanitize(out, len, raw, n);
	return true;
}

/* Advances a process's ring to the current second, zeroing skipped ones. */
static void window_advance(struct stats_proc *p, uint64_t sec)
{
	if (sec <= p->window_sec)
		return;
	uint64_t gap = sec - p->window_sec;
	for (uint64_t i = 1; i <= gap && i <= STATS_RATE_WINDOW; i++) {
		unsigned slot = (unsigned)((p->window_sec + i) % STATS_RATE_WINDOW);
		p->window[slot] = 0;
		p->window_up[slot] = 0;
		memset(p->window_types[slot], 0, sizeof(p->window_types[slot]));
	}
	p->window_sec = sec;
}

static double window_rate(const struct stats_proc *p, const uint32_t *ring, uint64_t now_ms)
{
	uint64_t sec = now_ms / 1000;
	uint64_t total = 0;
	for (unsigned i = 0; i < STATS_RATE_WINDOW; i++) {
		uint64_t s = sec - i;
		if (s > p->window_sec || p->window_sec - s >= STATS_RATE_WINDOW)
			continue;
		total += ring[s % STATS_RATE_WINDOW];
	}
	return (double)total / STATS_RATE_WINDOW;
}

double stats_proc_rate(const struct stats_proc *p, uint64_t now_ms)
{
	return window_rate(p, p->window, now_ms);
}

double stats_proc_upstream_rate(const struct stats_proc *p, uint64_t now_ms)
{
	return window_rate(p, p->window_up, now_ms);
}

static struct stats_proc *proc_get(struct stats *st, pid_t pid, uid_t uid, uint64_t now_ms)
{
	struct stats_proc **pp = &st->procs, *p;
	for (p = st->procs; p; pp = &p->next, p = p->next) {
		if (p->pid == pid && p->uid == uid) {
			*pp = p->next; /* move to front: most recently seen first */
			p->next = st->procs;
			st->procs = p;
			return p;
		}
	}
	if (st->nprocs >= STATS_MAX_PROCS) {
		/* Forget the least recently seen that no open session points
		 * to: memory stays bounded however many short-lived processes
		 * come and go, and a long-lived session (a Listen) keeps its
		 * entry. With every entry in use, the new one is not counted. */
		struct stats_proc **victim = NULL;
		for (struct stats_proc **q = &st->procs; *q; q = &(*q)->next)
			if (!(*q)->open)
				victim = q;
		if (!victim)
			return NULL;
		struct stats_proc *dead = *victim;
		*victim = dead->next;
		free(dead);
		st->nprocs--;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->pid = pid;
	p->uid = uid;
	p->window_sec = now_ms / 1000;
	if (pid > 0 && stats_read_comm(pid, p->comm, sizeof(p->comm)))
		p->comm_visible = true;
	else
		snprintf(p->comm, sizeof(p->comm), "?");
	p->next = st->procs;
	st->procs = p;
	st->nprocs++;
	return p;
}

static void mix(const struct stats_proc *p, char *out, size_t len)
{
	uint64_t t[UMX_REQ_NTYPES] = { 0 }, total = 0;
	for (unsigned i = 0; i < STATS_RATE_WINDOW; i++)
		for (unsigned k = 0; k < UMX_REQ_NTYPES; k++)
			t[k] += p->window_types[i][k];
	for (unsigned k = 0; k < UMX_REQ_NTYPES; k++)
		total += t[k];
	size_t used = 0;
	out[0] = '\0';
	for (unsigned k = 0; k < UMX_REQ_NTYPES && total; k++) {
		if (!t[k])
			continue;
		int n = snprintf(out + used, len - used, "%s%s %.0f%%", used ? ", " : "",
				 umx_req_name((enum umx_req)k), 100.0 * (double)t[k] / (double)total);
		if (n < 0 || (size_t)n >= len - used)
			break;
		used += (size_t)n;
	}
	if (!total)
		snprintf(out, len, "no requests inspected");
}

static void maybe_warn(struct stats *st, struct stats_proc *p, uint64_t now_ms)
{
	double rate = stats_proc_rate(p, now_ms);
	if (st->warn_rate <= 0 || rate <= st->warn_rate)
		return;
	if (p->warned && now_ms - p->last_warn_ms < WARN_EVERY_MS)
		return;
	p->warned = true;
	p->last_warn_ms = now_ms;
	char m[256];
	mix(p, m, sizeof(m));
	/* The Windows arithmetic counts what reaches the host: with the
	 * broker, the questions it answers cost no port anywhere. */
	double up = stats_proc_upstream_rate(p, now_ms);
	double ports = up * WIN_TIME_WAIT_S * SEED_TCP_HOPS;
	char cost[256];
	if (up > 0)
		snprintf(cost, sizeof(cost), "%.1f/s of them reached the host. Over per-session TCP "
			 "on a Windows host those would hold about %.0f ports in TIME_WAIT (%.1f/s x "
			 "%d s x %d hops), %.0f%% of the %d dynamic ports", up, ports, up,
			 WIN_TIME_WAIT_S, SEED_TCP_HOPS, 100.0 * ports / WIN_DYNAMIC_PORTS,
			 WIN_DYNAMIC_PORTS);
	else
		snprintf(cost, sizeof(cost), "none of them reached the host (answered by the "
			 "broker): no TIME_WAIT anywhere, but the client still does needless work");
	log_warn("busy client: pid %ld (%s%s) uid %ld opens %.1f usbmuxd sessions/s (threshold %.1f; "
		 "last %d s: %s); %s",
		 (long)p->pid, p->comm, p->comm_visible ? "" : ": command not visible from here",
		 (long)p->uid, rate, st->warn_rate, STATS_RATE_WINDOW, m, cost);
}

void stats_session_open_internal(struct stats *st, struct stats_session *ss)
{
	memset(ss, 0, sizeof(*ss));
	ss->internal = true;
	st->sessions_internal++;
	st->internal_open++;
}

void stats_session_upstream(struct stats *st, struct stats_session *ss, uint64_t now_ms)
{
	st->sessions_up++;
	struct stats_proc *p = ss->proc;
	if (!p)
		return;
	p->sessions_up++;
	window_advance(p, now_ms / 1000);
	p->window_up[p->window_sec % STATS_RATE_WINDOW]++;
}

void stats_session_open(struct stats *st, struct stats_session *ss, pid_t pid, uid_t uid,
			uint64_t now_ms, bool upstream)
{
	memset(ss, 0, sizeof(*ss));
	st->sessions_total++;
	st->sessions_open++;
	ss->proc = proc_get(st, pid, uid, now_ms);
	if (ss->proc) {
		struct stats_proc *p = ss->proc;
		p->open++;
		p->sessions++;
		p->last_seen_ms = now_ms;
		window_advance(p, now_ms / 1000);
		p->window[p->window_sec % STATS_RATE_WINDOW]++;
		if (upstream)
			stats_session_upstream(st, ss, now_ms);
		maybe_warn(st, p, now_ms);
	}
}

static struct stats_port *port_slot(struct stats *st, uint16_t port)
{
	for (unsigned i = 0; i < st->nports; i++)
		if (st->ports[i].port == port)
			return &st->ports[i];
	if (st->nports == STATS_MAX_PORTS)
		return NULL; /* bounded: later ports are only in the totals */
	st->ports[st->nports].port = port;
	return &st->ports[st->nports++];
}

void stats_bytes_up(struct stats *st, struct stats_session *ss, size_t n)
{
	ss->bytes_up += n;
	st->bytes_up += n;
}

void stats_bytes_down(struct stats *st, struct stats_session *ss, size_t n)
{
	ss->bytes_down += n;
	st->bytes_down += n;
}

void stats_request(struct stats *st, struct stats_session *ss, enum umx_req type,
		   uint32_t version)
{
	if ((unsigned)type >= UMX_REQ_NTYPES)
		type = UMX_REQ_OTHER;
	st->by_type[type]++;
	st->by_version[version ? 1 : 0]++;
	struct stats_proc *p = ss->proc;
	if (p) {
		p->by_type[type]++;
		p->window_types[p->window_sec % STATS_RATE_WINDOW][type]++;
	}
}

void stats_connect_result(struct stats *st, uint16_t port, uint32_t result)
{
	struct stats_port *sp = port_slot(st, port);
	if (!sp)
		return;
	if (result == 0)
		sp->ok++;
	else
		sp->failed++;
}

void stats_parse_error(struct stats *st)
{
	st->parse_errors++;
}

void stats_request_refused(struct stats *st)
{
	st->requests_refused++;
}

void stats_session_close(struct stats *st, struct stats_session *ss)
{
	if (ss->internal)
		st->internal_open--;
	else
		st->sessions_open--;
	if (ss->proc)
		ss->proc->open--;
	ss->proc = NULL;
	if (!st->inspect)
		st->uninspected++;
}

void stats_upstream_failure(struct stats *st, int err)
{
	unsigned i;
	st->upstream_failures++;
	for (i = 0; i < 7 && fail_errnos[i] != -err; i++)
		;
	st->upstream_fail_by_errno[i]++;
}

/* ---- rendering ------------------------------------------------------------ */

struct out {
	char *buf;
	size_t len, cap;
	bool failed;
};

__attribute__((format(printf, 2, 3))) static void put(struct out *o, const char *fmt, ...)
{
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			o->failed = true;
			return;
		}
		if ((size_t)n < o->cap - o->len) {
			o->len += (size_t)n;
			return;
		}
		size_t cap = o->cap * 2 + (size_t)n;
		char *b = realloc(o->buf, cap);
		if (!b) {
			o->failed = true;
			return;
		}
		o->buf = b;
		o->cap = cap;
	}
}

/* A JSON string's contents. Command names are valid UTF-8 without controls
 * already (stats_read_comm); controls are escaped all the same. */
static void put_json_str(struct out *o, const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			put(o, "\\%c", c);
		else if (c < 0x20)
			put(o, "\\u%04x", c);
		else
			put(o, "%c", c);
	}
}

/* A Prometheus label value, escaped exactly as the text exposition format
 * defines: backslash, double quote and line feed, nothing else (the value
 * is UTF-8, which stats_read_comm guarantees). */
static void put_label(struct out *o, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			put(o, "\\%c", *s);
		else if (*s == '\n')
			put(o, "\\n");
		else
			put(o, "%c", *s);
	}
}

static const char *errno_label(unsigned i)
{
	static const char *const l[8] = { "no_socket", "refused", "permission", "busy",
					  "out_of_fds", "reset", "timeout", "other" };
	return l[i];
}

/* The tunnel and subscription figures over all upstreams; with one
 * upstream they are its own. */
struct ups_sum {
	unsigned tunnels, tunnels_up, live;
	uint64_t connects, drops, subscribes, losses;
	unsigned rtt_ms;           /* the largest measured */
	bool rtt_known;
};

static struct ups_sum ups_sum(const struct stats *st)
{
	struct ups_sum u = { 0 };
	for (unsigned i = 0; i < st->nups; i++) {
		const struct stats_upstream *n = &st->ups[i];
		u.live += n->live;
		u.subscribes += n->subscribes;
		u.losses += n->sub_losses;
		if (!n->tunnel)
			continue;
		u.tunnels++;
		u.tunnels_up += n->up;
		u.connects += n->connects;
		u.drops += n->drops;
		if (n->rtt_known && (!u.rtt_known || n->rtt_ms > u.rtt_ms))
			u.rtt_ms = n->rtt_ms;
		u.rtt_known |= n->rtt_known;
	}
	return u;
}

static const char *sub_state(unsigned live, unsigned of)
{
	return live == of ? "live" : live ? "partial" : "down";
}

static void render_json(const struct stats *st, struct out *o, uint64_t now_ms)
{
	struct ups_sum u = ups_sum(st);
	put(o, "{\"uptime_s\":%.1f,\"sessions_total\":%llu,\"sessions_open\":%llu,"
	       "\"inspection\":%s,\"parse_errors\":%llu,\"bytes_up\":%llu,\"bytes_down\":%llu,",
	    (double)(now_ms - st->started_ms) / 1000.0, (unsigned long long)st->sessions_total,
	    (unsigned long long)st->sessions_open, st->inspect ? "true" : "false",
	    (unsigned long long)st->parse_errors, (unsigned long long)st->bytes_up,
	    (unsigned long long)st->bytes_down);
	put(o, "\"sessions_upstream\":%llu,\"sessions_internal\":%llu,",
	    (unsigned long long)st->sessions_up, (unsigned long long)st->sessions_internal);
	put(o, "\"requests\":{");
	for (unsigned k = 0; k < UMX_REQ_NTYPES; k++)
		put(o, "%s\"%s\":%llu", k ? "," : "", umx_req_name((enum umx_req)k),
		    (unsigned long long)st->by_type[k]);
	put(o, "},\"versions\":{\"binary\":%llu,\"plist\":%llu},\"connect_ports\":[",
	    (unsigned long long)st->by_version[0], (unsigned long long)st->by_version[1]);
	for (unsigned i = 0; i < st->nports; i++)
		put(o, "%s{\"port\":%u,\"ok\":%llu,\"failed\":%llu}", i ? "," : "", st->ports[i].port,
		    (unsigned long long)st->ports[i].ok, (unsigned long long)st->ports[i].failed);
	put(o, "],\"upstream_failures\":{\"total\":%llu", (unsigned long long)st->upstream_failures);
	for (unsigned i = 0; i < 8; i++)
		if (st->upstream_fail_by_errno[i])
			put(o, ",\"%s\":%llu", errno_label(i),
			    (unsigned long long)st->upstream_fail_by_errno[i]);
	put(o, "},\"request_timeouts\":%llu,\"requests_refused\":%llu",
	    (unsigned long long)st->request_timeouts, (unsigned long long)st->requests_refused);
	if (u.tunnels)
		put(o, ",\"tunnel\":{\"up\":%s,\"connects\":%llu,\"drops\":%llu,\"rtt_ms\":%u}",
		    u.tunnels_up == u.tunnels ? "true" : "false", (unsigned long long)u.connects,
		    (unsigned long long)u.drops, u.rtt_ms);
	put(o, ",\"upstreams\":[");
	for (unsigned i = 0; i < st->nups; i++) {
		const struct stats_upstream *n = &st->ups[i];
		put(o, "%s{\"name\":\"", i ? "," : "");
		put_label(o, n->name);
		put(o, "\",\"failures\":%llu", (unsigned long long)n->failures);
		if (n->tunnel)
			put(o, ",\"tunnel\":{\"up\":%s,\"connects\":%llu,\"drops\":%llu,\"rtt_ms\":%u}",
			    n->up ? "true" : "false", (unsigned long long)n->connects,
			    (unsigned long long)n->drops, n->rtt_ms);
		if (st->broker.on)
			put(o, ",\"subscription\":\"%s\",\"subscribes\":%llu,\"losses\":%llu,"
			       "\"devices\":%u",
			    n->live ? "live" : "down", (unsigned long long)n->subscribes,
			    (unsigned long long)n->sub_losses, n->devices);
		put(o, "}");
	}
	put(o, "]");
	if (st->broker.on) {
		const struct stats_broker *b = &st->broker;
		put(o, ",\"broker\":{\"subscription\":\"%s\",\"subscribes\":%llu,\"losses\":%llu,"
		       "\"devices\":%u,\"listeners\":%u,\"listeners_dropped\":%llu,\"refused\":%llu,"
		       "\"parked\":%llu,"
		       "\"local\":{",
		    sub_state(u.live, st->nups), (unsigned long long)u.subscribes,
		    (unsigned long long)u.losses, b->devices, b->listeners,
		    (unsigned long long)b->listeners_dropped, (unsigned long long)b->refused,
		    (unsigned long long)b->parked);
		for (unsigned k = 0; k < UMX_REQ_NTYPES; k++)
			put(o, "%s\"%s\":%llu", k ? "," : "", umx_req_name((enum umx_req)k),
			    (unsigned long long)b->local[k]);
		put(o, "},\"forwarded\":{");
		for (unsigned k = 0; k < UMX_REQ_NTYPES; k++)
			put(o, "%s\"%s\":%llu", k ? "," : "", umx_req_name((enum umx_req)k),
			    (unsigned long long)b->forwarded[k]);
		put(o, "}}");
	}
	put(o, ",\"warn_rate\":%.2f,\"processes\":[", st->warn_rate);
	unsigned i = 0;
	for (const struct stats_proc *p = st->procs; p; p = p->next, i++) {
		put(o, "%s{\"pid\":%ld,\"uid\":%ld,\"comm\":\"", i ? "," : "", (long)p->pid,
		    (long)p->uid);
		put_json_str(o, p->comm);
		put(o, "\",\"comm_visible\":%s,\"sessions\":%llu,\"rate_per_s\":%.2f,"
		       "\"upstream_sessions\":%llu,\"upstream_rate_per_s\":%.2f,\"warned\":%s,"
		       "\"requests\":{",
		    p->comm_visible ? "true" : "false", (unsigned long long)p->sessions,
		    stats_proc_rate(p, now_ms), (unsigned long long)p->sessions_up,
		    stats_proc_upstream_rate(p, now_ms), p->warned ? "true" : "false");
		for (unsigned k = 0; k < UMX_REQ_NTYPES; k++)
			put(o, "%s\"%s\":%llu", k ? "," : "", umx_req_name((enum umx_req)k),
			    (unsigned long long)p->by_type[k]);
		put(o, "}}");
	}
	put(o, "]}\n");
}

static void rtt_text(char *out, size_t cap, bool known, unsigned ms)
{
	if (!known)
		snprintf(out, cap, "not measured yet");
	else if (ms == 0)
		snprintf(out, cap, "< 1 ms");
	else
		snprintf(out, cap, "%u ms", ms);
}

static void render_table(const struct stats *st, struct out *o, uint64_t now_ms)
{
	struct ups_sum u = ups_sum(st);
	put(o, "sessions: %llu total, %llu open, %.1f/s since start; %llu reached the upstream, "
	       "%llu the broker's own; inspection %s, %llu unparseable\n",
	    (unsigned long long)st->sessions_total, (unsigned long long)st->sessions_open,
	    (double)st->sessions_total * 1000.0 / (double)(now_ms - st->started_ms + 1),
	    (unsigned long long)st->sessions_up, (unsigned long long)st->sessions_internal,
	    st->inspect ? "on" : "off", (unsigned long long)st->parse_errors);
	if (st->nups == 1 && u.tunnels) {
		char rtt[32];
		rtt_text(rtt, sizeof(rtt), u.rtt_known, u.rtt_ms);
		put(o, "tunnel: %s, %llu connects, %llu drops, rtt %s\n",
		    u.tunnels_up ? "up" : "DOWN", (unsigned long long)u.connects,
		    (unsigned long long)u.drops, rtt);
	}
	for (unsigned i = 0; st->nups > 1 && i < st->nups; i++) {
		const struct stats_upstream *n = &st->ups[i];
		char rtt[32];
		rtt_text(rtt, sizeof(rtt), n->rtt_known, n->rtt_ms);
		put(o, "upstream %s: ", n->name);
		if (n->tunnel)
			put(o, "tunnel %s, %llu connects, %llu drops, rtt %s; ", n->up ? "up" : "DOWN",
			    (unsigned long long)n->connects, (unsigned long long)n->drops, rtt);
		if (st->broker.on)
			put(o, "subscription %s, %u devices; ", n->live ? "live" : "DOWN", n->devices);
		put(o, "%llu failures\n", (unsigned long long)n->failures);
	}
	put(o, "upstream failures: %llu\n", (unsigned long long)st->upstream_failures);
	put(o, "clients closed by --request-timeout: %llu\n",
	    (unsigned long long)st->request_timeouts);
	put(o, "clients closed for a refused request: %llu\n",
	    (unsigned long long)st->requests_refused);
	if (st->broker.on) {
		const struct stats_broker *b = &st->broker;
		uint64_t local = 0, fwd = 0;
		for (unsigned k = 0; k < UMX_REQ_NTYPES; k++) {
			local += b->local[k];
			fwd += b->forwarded[k];
		}
		put(o, "broker: subscription %s (%llu subscribes, %llu losses), %u devices, "
		       "%u listeners (%llu dropped), requests answered here %llu, forwarded %llu, "
		       "refused %llu\n",
		    st->nups > 1 && u.live && u.live < st->nups ? "partial" : u.live ? "live" : "DOWN",
		    (unsigned long long)u.subscribes, (unsigned long long)u.losses, b->devices,
		    b->listeners,
		    (unsigned long long)b->listeners_dropped, (unsigned long long)local,
		    (unsigned long long)fwd, (unsigned long long)b->refused);
	}
	put(o, "\n%8s %6s %-16s %10s %10s  %s\n", "PID", "UID", "COMMAND", "SESSIONS", "RATE/s",
	    "REQUESTS");
	for (const struct stats_proc *p = st->procs; p; p = p->next) {
		put(o, "%8ld %6ld %-16s %10llu %10.1f ", (long)p->pid, (long)p->uid, p->comm,
		    (unsigned long long)p->sessions, stats_proc_rate(p, now_ms));
		bool any = false;
		for (unsigned k = 0; k < UMX_REQ_NTYPES; k++) {
			if (!p->by_type[k])
				continue;
			put(o, " %s=%llu", umx_req_name((enum umx_req)k),
			    (unsigned long long)p->by_type[k]);
			any = true;
		}
		put(o, "%s%s\n", any ? "" : " -", p->warned ? "  (warned)" : "");
	}
	if (st->nports) {
		put(o, "\n%8s %10s %10s\n", "PORT", "CONNECTED", "REFUSED");
		for (unsigned i = 0; i < st->nports; i++)
			put(o, "%8u %10llu %10llu\n", st->ports[i].port,
			    (unsigned long long)st->ports[i].ok, (unsigned long long)st->ports[i].failed);
	}
}

static void render_prometheus(const struct stats *st, struct out *o, uint64_t now_ms)
{
	struct ups_sum u = ups_sum(st);
	put(o, "# TYPE muxshim_sessions_total counter\nmuxshim_sessions_total %llu\n"
	       "# TYPE muxshim_sessions_open gauge\nmuxshim_sessions_open %llu\n"
	       "# TYPE muxshim_sessions_upstream_total counter\nmuxshim_sessions_upstream_total %llu\n"
	       "# TYPE muxshim_bytes_total counter\nmuxshim_bytes_total{direction=\"up\"} %llu\n"
	       "muxshim_bytes_total{direction=\"down\"} %llu\n"
	       "# TYPE muxshim_parse_errors_total counter\nmuxshim_parse_errors_total %llu\n",
	    (unsigned long long)st->sessions_total, (unsigned long long)st->sessions_open,
	    (unsigned long long)st->sessions_up,
	    (unsigned long long)st->bytes_up, (unsigned long long)st->bytes_down,
	    (unsigned long long)st->parse_errors);
	put(o, "# TYPE muxshim_requests_total counter\n");
	for (unsigned k = 0; k < UMX_REQ_NTYPES; k++)
		put(o, "muxshim_requests_total{type=\"%s\"} %llu\n", umx_req_name((enum umx_req)k),
		    (unsigned long long)st->by_type[k]);
	put(o, "# TYPE muxshim_connects_total counter\n");
	for (unsigned i = 0; i < st->nports; i++)
		put(o, "muxshim_connects_total{port=\"%u\",result=\"ok\"} %llu\n"
		       "muxshim_connects_total{port=\"%u\",result=\"refused\"} %llu\n",
		    st->ports[i].port, (unsigned long long)st->ports[i].ok, st->ports[i].port,
		    (unsigned long long)st->ports[i].failed);
	put(o, "# TYPE muxshim_upstream_failures_total counter\n");
	for (unsigned i = 0; i < 8; i++)
		put(o, "muxshim_upstream_failures_total{reason=\"%s\"} %llu\n", errno_label(i),
		    (unsigned long long)st->upstream_fail_by_errno[i]);
	put(o, "# TYPE muxshim_request_timeouts_total counter\nmuxshim_request_timeouts_total %llu\n",
	    (unsigned long long)st->request_timeouts);
	put(o, "# TYPE muxshim_requests_refused_total counter\nmuxshim_requests_refused_total %llu\n",
	    (unsigned long long)st->requests_refused);
	if (u.tunnels)
		put(o, "# TYPE muxshim_tunnel_up gauge\nmuxshim_tunnel_up %d\n"
		       "# TYPE muxshim_tunnel_connects_total counter\nmuxshim_tunnel_connects_total %llu\n"
		       "# TYPE muxshim_tunnel_rtt_seconds gauge\nmuxshim_tunnel_rtt_seconds %.3f\n",
		    u.tunnels_up == u.tunnels ? 1 : 0, (unsigned long long)u.connects,
		    u.rtt_ms / 1000.0);
	/* Per upstream (label upstream="unix:/var/run/usbmuxd", ...). */
	static const char *const per[] = { "muxshim_upstream_up gauge",
					   "muxshim_upstream_failures_total counter",
					   "muxshim_upstream_devices gauge" };
	for (unsigned m = 0; m < 3; m++) {
		put(o, "# TYPE %s\n", per[m]);
		for (unsigned i = 0; i < st->nups; i++) {
			const struct stats_upstream *n = &st->ups[i];
			put(o, "%.*s{upstream=\"", (int)strcspn(per[m], " "), per[m]);
			put_label(o, n->name);
			if (m == 0) /* tunnel: the link; else the subscription (broker) */
				put(o, "\"} %d\n", n->tunnel ? n->up : st->broker.on ? n->live : 1);
			else
				put(o, "\"} %llu\n", m == 1 ? (unsigned long long)n->failures
							    : (unsigned long long)n->devices);
		}
	}
	if (st->broker.on) {
		const struct stats_broker *b = &st->broker;
		put(o, "# TYPE muxshim_broker_requests_total counter\n");
		for (unsigned k = 0; k < UMX_REQ_NTYPES; k++)
			put(o, "muxshim_broker_requests_total{type=\"%s\",answered=\"local\"} %llu\n"
			       "muxshim_broker_requests_total{type=\"%s\",answered=\"forwarded\"} %llu\n",
			    umx_req_name((enum umx_req)k), (unsigned long long)b->local[k],
			    umx_req_name((enum umx_req)k), (unsigned long long)b->forwarded[k]);
		put(o, "# TYPE muxshim_broker_subscription_up gauge\nmuxshim_broker_subscription_up %d\n"
		       "# TYPE muxshim_broker_subscribes_total counter\nmuxshim_broker_subscribes_total %llu\n"
		       "# TYPE muxshim_broker_devices gauge\nmuxshim_broker_devices %u\n"
		       "# TYPE muxshim_broker_listeners gauge\nmuxshim_broker_listeners %u\n"
		       "# TYPE muxshim_broker_listeners_dropped_total counter\n"
		       "muxshim_broker_listeners_dropped_total %llu\n"
		       "# TYPE muxshim_broker_refused_total counter\nmuxshim_broker_refused_total %llu\n",
		    u.live == st->nups ? 1 : 0, (unsigned long long)u.subscribes, b->devices, b->listeners,
		    (unsigned long long)b->listeners_dropped, (unsigned long long)b->refused);
	}
	put(o, "# TYPE muxshim_client_sessions_total counter\n"
	       "# TYPE muxshim_client_session_rate gauge\n");
	for (const struct stats_proc *p = st->procs; p; p = p->next) {
		put(o, "muxshim_client_sessions_total{pid=\"%ld\",comm=\"", (long)p->pid);
		put_label(o, p->comm);
		put(o, "\"} %llu\nmuxshim_client_session_rate{pid=\"%ld\",comm=\"",
		    (unsigned long long)p->sessions, (long)p->pid);
		put_label(o, p->comm);
		put(o, "\"} %.2f\n", stats_proc_rate(p, now_ms));
	}
}

char *stats_render(const struct stats *st, const char *format, uint64_t now_ms)
{
	struct out o = { .buf = malloc(4096), .cap = 4096 };
	if (!o.buf)
		return NULL;
	o.buf[0] = '\0';
	if (strcmp(format, "json") == 0)
		render_json(st, &o, now_ms);
	else if (strcmp(format, "prometheus") == 0)
		render_prometheus(st, &o, now_ms);
	else
		render_table(st, &o, now_ms);
	if (o.failed) {
		free(o.buf);
		return NULL;
	}
	return o.buf;
}

void stats_summary(const struct stats *st, uint64_t now_ms, char *out, size_t len)
{
	const struct stats_proc *top = NULL;
	double top_rate = 0;
	for (const struct stats_proc *p = st->procs; p; p = p->next) {
		double r = stats_proc_rate(p, now_ms);
		if (r > top_rate) {
			top_rate = r;
			top = p;
		}
	}
	int n = snprintf(out, len, "stats: %llu sessions (%llu open), %llu upstream failures",
			 (unsigned long long)st->sessions_total, (unsigned long long)st->sessions_open,
			 (unsigned long long)st->upstream_failures);
	if (top && n > 0 && (size_t)n < len)
		snprintf(out + n, len - (size_t)n, "; busiest now: pid %ld (%s) %.1f sessions/s",
			 (long)top->pid, top->comm, top_rate);
}
