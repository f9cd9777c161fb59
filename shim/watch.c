#include "watch.h"

#include <errno.h>
#include <stdint.h>

struct watch_ctx {
	struct watch *w;
	struct stats *st;
	struct stats_session *ss;
};

static void on_event(void *ctx, const struct insp_event *ev)
{
	struct watch_ctx *c = ctx;
	struct watch *w = c->w;
	switch (ev->kind) {
	case INSP_EV_REQUEST:
		if (w->handed) {
			/* usbmuxd would take another request after a refused
			 * Connect; passed on as it is, it would skip the
			 * broker's filter and ID mapping. Clients open a new
			 * connection per Connect: this one is closed. */
			insp_refuse(&w->insp, "a request after a Connect on the same connection "
					      "(the broker takes one Connect per connection)");
			return;
		}
		stats_request(c->st, c->ss, ev->type, ev->version);
		if (ev->type == UMX_REQ_CONNECT)
			w->pending_port = ev->port;
		return;
	case INSP_EV_CONNECT_RESULT:
		stats_connect_result(c->st, w->pending_port, ev->result);
		return;
	case INSP_EV_PARSE_ERROR:
		stats_parse_error(c->st);
		return;
	case INSP_EV_REFUSED:
		stats_request_refused(c->st);
		return;
	}
}

void watch_init_handed(struct watch *w, bool on, struct umx_memo *memo, bool connect, uint32_t tag,
		       uint16_t port)
{
	*w = (struct watch){ .on = on, .handed = connect, .pending_port = port };
	if (!on)
		return;
	if (connect)
		insp_init_connect(&w->insp, on_event, NULL, tag);
	else
		insp_init(&w->insp, on_event, NULL);
	w->insp.memo = memo;
}

void watch_init(struct watch *w, bool on, struct umx_memo *memo)
{
	watch_init_handed(w, on, memo, false, 0, 0);
}

void watch_free(struct watch *w)
{
	if (w->on)
		insp_free(&w->insp);
}

size_t watch_client_room(const struct watch *w)
{
	return w->on ? insp_client_room(&w->insp) : SIZE_MAX;
}

bool watch_awaits_client(const struct watch *w, const struct stats_session *ss)
{
	if (ss->bytes_up == 0)
		return true;
	return w->on && insp_mid_request(&w->insp);
}

bool watch_done(const struct watch *w)
{
	return !w->on || insp_done(&w->insp);
}

const char *watch_refused(const struct watch *w)
{
	return w->on ? w->insp.refused : NULL;
}

int watch_client_bytes(struct watch *w, struct stats *st, struct stats_session *ss,
		       const uint8_t *p, size_t n)
{
	stats_bytes_up(st, ss, n);
	if (watch_done(w))
		return 0;
	struct watch_ctx c = { w, st, ss };
	w->insp.ctx = &c;
	int rc = insp_client_bytes(&w->insp, p, n);
	w->insp.ctx = NULL;
	return rc;
}

void watch_upstream_bytes(struct watch *w, struct stats *st, struct stats_session *ss,
			  const uint8_t *p, size_t n)
{
	stats_bytes_down(st, ss, n);
	if (watch_done(w))
		return;
	struct watch_ctx c = { w, st, ss };
	w->insp.ctx = &c;
	insp_upstream_bytes(&w->insp, p, n);
	w->insp.ctx = NULL;
}
