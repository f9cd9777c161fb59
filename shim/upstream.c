/* Opening the upstream connection for one session, and explaining failures. */
#include "diag.h"
#include "shim.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int upstream_connect(struct shim *s, int *fd)
{
	if (s->cfg.upstream.kind == ADDR_TCP) {
		/* -EAGAIN while the name resolves: the session retries, as
		 * for a full listen queue. */
		struct plat_addr a;
		int rc = resolver_get(s->resolver, &a);
		return rc < 0 ? rc : plat_tcp_connect_addr(&a, fd);
	}
	/* Opened afresh by path for every session, so a host usbmuxd that
	 * recreated its socket in a mounted directory is found again. */
	return plat_unix_connect(s->cfg.upstream.path, fd);
}

static bool path_is_mount_point(const char *path)
{
	char canon[PATH_MAX];
	char *mountinfo;
	size_t len;
	if (!realpath(path, canon))
		return false;
	if (plat_read_file("/proc/self/mountinfo", 1 << 20, &mountinfo, &len) < 0)
		return false;
	bool r = diag_is_mount_point(mountinfo, canon);
	free(mountinfo);
	return r;
}

int upstream_probe(struct shim *s, char *why, size_t cap)
{
	char up[ADDR_HOST_MAX + 16];
	addr_format(&s->cfg.upstream, up, sizeof(up));
	switch (s->cfg.upstream.kind) {
	case ADDR_TUNNEL:
		if (!s->stats.tunnel_up) {
			snprintf(why, cap, "upstream %s: the tunnel is down (%llu connects, "
				 "%llu drops so far)", up, (unsigned long long)s->stats.tunnel_connects,
				 (unsigned long long)s->stats.tunnel_drops);
			return -ENOTCONN;
		}
		snprintf(why, cap, "upstream %s: tunnel up", up);
		return 0;
	case ADDR_UNIX: {
		int fd;
		int rc = upstream_connect(s, &fd);
		if (rc == 0)
			plat_close(fd);
		if (rc == 0 || rc == -EAGAIN) { /* EAGAIN: alive, its queue full */
			snprintf(why, cap, "upstream %s accepts connections%s", up,
				 rc ? " (its listen queue is full right now)" : "");
			return 0;
		}
		char d[400];
		diag_unix_connect(d, sizeof(d), s->cfg.upstream.path, rc,
				  rc == -ECONNREFUSED && path_is_mount_point(s->cfg.upstream.path));
		snprintf(why, cap, "upstream %s: %s", up, d);
		return rc;
	}
	default:
		/* A TCP connect would have to wait; the legacy mode goes unprobed. */
		snprintf(why, cap, "upstream %s (tcp: not probed)", up);
		return 0;
	}
}

void upstream_report_failure(struct shim *s, int err)
{
	unsigned suppressed;
	if (s->resolver && err != -EAGAIN)
		resolver_retry(s->resolver); /* the address may have moved */
	s->upstream_failures++;
	stats_upstream_failure(&s->stats, err);
	if (!log_ratelimit_pass(&s->rl_upstream, loop_now(s->loop), &suppressed))
		return;
	char why[512];
	const char *path = s->cfg.upstream.path;
	if (s->cfg.upstream.kind == ADDR_TCP && err == -ETIMEDOUT)
		snprintf(why, sizeof(why), "cannot connect to %s:%u: no answer within %u ms "
			 "(--connect-timeout)", s->cfg.upstream.host, s->cfg.upstream.port,
			 s->cfg.connect_timeout_ms);
	else if (s->cfg.upstream.kind == ADDR_TCP)
		snprintf(why, sizeof(why), "cannot connect to %s:%u: %s", s->cfg.upstream.host,
			 s->cfg.upstream.port, strerror(-err));
	else
		diag_unix_connect(why, sizeof(why), path, err,
				  err == -ECONNREFUSED && path_is_mount_point(path));
	if (suppressed)
		log_warn("upstream unavailable, client closed: %s (%u more like this suppressed)", why,
			 suppressed);
	else
		log_warn("upstream unavailable, client closed: %s", why);
}
