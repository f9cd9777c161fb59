/* The bookkeeping every client connection shares, whichever part of the shim
 * holds it (client.c, session.c, tunnel.c): who it is (attribution), its
 * session slot, its request clock (--request-timeout) and the log lines for
 * clients closed on its account. Kept apart from main.c so that the relays
 * depend on this, never on the daemon's entry point. */
#include "shim.h"

void shim_attribute(struct shim *s, struct stats_session *ss, int client_fd)
{
	pid_t pid = 0;
	uid_t uid = (uid_t)-1;
	plat_peer_cred(client_fd, &pid, &uid); /* unknown stays pid 0 */
	if (pid > 0 && pid == s->self_pid) {
		/* The broker's own end of a socket pair: not a client. */
		stats_session_open_internal(&s->stats, ss);
		return;
	}
	/* With the broker a client reaches the upstream only when it
	 * forwards a request (client.c counts it then). */
	stats_session_open(&s->stats, ss, pid, uid, loop_now(s->loop), !s->cfg.broker);
}

/* A client that connects and sends nothing, or stops in the middle of a
 * request, holds a session slot (and in unix: mode an upstream connection)
 * for nothing. Once its requests are whole, waiting is its right: replies,
 * Listen events and Connect pipes take as long as they take. */
void shim_request_clock(struct shim *s, bool awaits, struct loop_timer *clock)
{
	if (!s->cfg.request_timeout_ms)
		return;
	if (awaits)
		loop_timer_arm(s->loop, clock, s->cfg.request_timeout_ms);
	else
		loop_timer_cancel(s->loop, clock);
}

void shim_request_timed_out(struct shim *s, const struct stats_session *ss)
{
	const struct stats_proc *p = ss->proc;
	unsigned suppressed;
	if (log_ratelimit_pass(&s->rl_timeout, loop_now(s->loop), &suppressed))
		log_warn("closed a client (pid %ld, %s) that %s for %u ms (--request-timeout)%s",
			 p ? (long)p->pid : 0L, p && p->comm_visible ? p->comm : "?",
			 ss->bytes_up ? "stopped in the middle of a request" : "sent nothing",
			 s->cfg.request_timeout_ms, suppressed ? " (more suppressed)" : "");
	s->stats.request_timeouts++;
}

void shim_request_refused(struct shim *s, const struct stats_session *ss, const char *why)
{
	const struct stats_proc *p = ss->proc;
	unsigned suppressed;
	if (log_ratelimit_pass(&s->rl_refused, loop_now(s->loop), &suppressed))
		log_warn("closed a client (pid %ld, %s, uid %ld): request refused before it reached "
			 "usbmuxd: %s%s",
			 p ? (long)p->pid : 0L, p && p->comm_visible ? p->comm : "?",
			 p ? (long)p->uid : -1L, why ? why : "?",
			 suppressed ? " (more suppressed)" : "");
}

/* A client connection ended: the listener may resume if it had paused at
 * --max-sessions. */
void shim_session_ended(struct shim *s)
{
	if (s->nsessions + 1 == s->cfg.max_sessions)
		acceptor_update(&s->acceptor);
}
