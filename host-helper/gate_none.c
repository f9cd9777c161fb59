/* The gate where the usbmuxd protocol module is not built (the Windows
 * helper: there is no libplist for mingw here). Tenants with `*` work
 * (their own tokens, attribution, statistics; streams relayed as without
 * tenants); device lists are refused when the file is loaded, since
 * nothing here could enforce them. */
#include "gate.h"

#include <errno.h>

bool gate_available(void)
{
	return false;
}

const char *gate_refusal_name(enum gate_refusal r)
{
	static const char *const names[GATE_REFUSED_N] = { "device", "pair_record", "command",
							    "protocol" };
	return (unsigned)r < GATE_REFUSED_N ? names[r] : "?";
}

int gate_new(struct loop *loop, const struct addr *upstream, unsigned connect_timeout_ms,
	     struct gate **out)
{
	(void)loop;
	(void)upstream;
	(void)connect_timeout_ms;
	*out = NULL;
	return -ENOTSUP;
}

void gate_free(struct gate *g)
{
	(void)g;
}

int gate_tenant_set(struct tenant *t)
{
	(void)t;
	return 0;
}

void gate_tenant_clear(struct tenant *t)
{
	(void)t;
}

int gate_stream(struct gate *g, struct tenant *t, struct link_stream *st)
{
	(void)g;
	(void)t;
	(void)st;
	return -ENOTSUP;
}

int gate_client(struct gate *g, struct tenant *t, int fd)
{
	(void)g;
	(void)t;
	(void)fd;
	return -ENOTSUP;
}

void gate_tenant_changed(struct gate *g, struct tenant *t, const struct tenant_def *old)
{
	(void)g;
	(void)t;
	(void)old;
}

void gate_tenant_gone(struct gate *g, struct tenant *t)
{
	(void)g;
	(void)t;
}

size_t gate_devices(const struct gate *g, bool *live)
{
	(void)g;
	*live = false;
	return 0;
}

void gate_reap(struct gate *g)
{
	(void)g;
}
