/* Upstream instances (upstream.h): creating them from the configuration,
 * the direct kind (unix:, tcp:: a fresh connection per session, relayed by
 * session.c), probing for `muxshim health`, and explaining failures. */
#include "diag.h"
#include "shim.h"
#include "tunnel/link.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int upstream_connect(struct upstream *u, int *fd)
{
	if (u->addr.kind == ADDR_TCP) {
		/* -EAGAIN while the name resolves: the session retries, as
		 * for a full listen queue. */
		struct plat_addr a;
		int rc = resolver_get(u->resolver, &a);
		return rc < 0 ? rc : plat_tcp_connect_addr(&a, fd);
	}
	/* Opened afresh by path for every session, so a host usbmuxd that
	 * recreated its socket in a mounted directory is found again. */
	return plat_unix_connect(u->addr.path, fd);
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

static int direct_probe(struct upstream *u, char *why, size_t cap)
{
	if (u->addr.kind == ADDR_TCP) {
		/* A TCP connect would have to wait; the legacy mode goes unprobed. */
		snprintf(why, cap, "upstream %s (tcp: not probed)", u->name);
		return 0;
	}
	int fd;
	int rc = upstream_connect(u, &fd);
	if (rc == 0)
		plat_close(fd);
	if (rc == 0 || rc == -EAGAIN) { /* EAGAIN: alive, its queue full */
		snprintf(why, cap, "upstream %s accepts connections%s", u->name,
			 rc ? " (its listen queue is full right now)" : "");
		return 0;
	}
	char d[400];
	diag_unix_connect(d, sizeof(d), u->addr.path, rc,
			  rc == -ECONNREFUSED && path_is_mount_point(u->addr.path));
	snprintf(why, cap, "upstream %s: %s", u->name, d);
	return rc;
}

void upstream_report_failure(struct upstream *u, int err)
{
	struct shim *s = u->shim;
	unsigned suppressed;
	if (u->resolver && err != -EAGAIN)
		resolver_retry(u->resolver); /* the address may have moved */
	s->upstream_failures++;
	u->n->failures++;
	stats_upstream_failure(&s->stats, err);
	if (!log_ratelimit_pass(&u->rl, loop_now(s->loop), &suppressed))
		return;
	char why[512];
	const char *path = u->addr.path;
	if (u->addr.kind == ADDR_TCP && err == -ETIMEDOUT)
		snprintf(why, sizeof(why), "cannot connect to %s:%u: no answer within %u ms "
			 "(--connect-timeout)", u->addr.host, u->addr.port, s->cfg.connect_timeout_ms);
	else if (u->addr.kind == ADDR_TCP)
		snprintf(why, sizeof(why), "cannot connect to %s:%u: %s", u->addr.host, u->addr.port,
			 strerror(-err));
	else
		diag_unix_connect(why, sizeof(why), path, err,
				  err == -ECONNREFUSED && path_is_mount_point(path));
	if (suppressed)
		log_warn("upstream unavailable, client closed: %s (%u more like this suppressed)", why,
			 suppressed);
	else
		log_warn("upstream unavailable, client closed: %s", why);
}

static void direct_nothing(struct upstream *u)
{
	(void)u;
}

static const struct upstream_ops direct_ops = {
	.start = direct_nothing,
	.resolved = direct_nothing, /* sessions waiting for it retry on their own */
	.accept = session_start,
	.adopt = session_adopt,
	.probe = direct_probe,
	.stop = direct_nothing,
};

/* ---- the set -------------------------------------------------------------- */

static void on_resolved(void *ctx)
{
	struct upstream *u = ctx;
	u->ops->resolved(u);
}

int upstreams_create(struct shim *s)
{
	for (unsigned i = 0; i < s->cfg.nupstreams; i++) {
		struct upstream *u = calloc(1, sizeof(*u));
		if (!u) {
			log_error("out of memory for upstream %u", i + 1);
			return -ENOMEM;
		}
		s->up[s->nup++] = u;
		u->shim = s;
		u->index = i;
		u->addr = s->cfg.upstream[i];
		addr_format(&u->addr, u->name, sizeof(u->name));
		u->ops = u->addr.kind == ADDR_TUNNEL ? &tunnel_ops : &direct_ops;
		u->rl.interval_ms = 10000;
		u->n = &s->stats.ups[i];
		snprintf(u->n->name, sizeof(u->n->name), "%s", u->name);
		u->n->tunnel = u->addr.kind == ADDR_TUNNEL;
		s->stats.nups = i + 1;
		/* Before the sandbox: a name is resolved by a thread the
		 * sandbox then covers as well (resolver.c). */
		if (u->addr.kind == ADDR_TCP || u->addr.kind == ADDR_TUNNEL) {
			int rc = resolver_start(&u->resolver, s->loop, u->addr.host, u->addr.port,
						on_resolved, u);
			if (rc < 0) {
				log_error("upstream %s: %s", u->name, strerror(-rc));
				return rc;
			}
		}
	}
	return 0;
}

void upstreams_start(struct shim *s)
{
	for (unsigned i = 0; i < s->nup; i++)
		s->up[i]->ops->start(s->up[i]);
}

void upstreams_stop(struct shim *s)
{
	for (unsigned i = 0; i < s->nup; i++)
		s->up[i]->ops->stop(s->up[i]);
}

void upstreams_free(struct shim *s)
{
	for (unsigned i = 0; i < s->nup; i++) {
		resolver_stop(s->up[i]->resolver);
		free(s->up[i]);
	}
	s->nup = 0;
}

int upstreams_probe(struct shim *s, bool all, char *why, size_t cap)
{
	int first_err = 0;
	unsigned ok = 0;
	size_t used = 0;
	why[0] = '\0';
	for (unsigned i = 0; i < s->nup; i++) {
		char one[512];
		int rc = s->up[i]->ops->probe(s->up[i], one, sizeof(one));
		if (rc == 0)
			ok++;
		else if (!first_err)
			first_err = rc;
		int n = snprintf(why + used, cap - used, "%s%s", i ? "; " : "", one);
		if (n > 0)
			used = (size_t)n >= cap - used ? cap - 1 : used + (size_t)n;
	}
	if (all ? ok == s->nup : ok > 0)
		return 0;
	return first_err ? first_err : -ENOTCONN;
}
