/* One Listen subscription and its device table (sub.h). */
#include "usbmuxd/sub.h"

#include "plat.h"
#include "usbmuxd/proto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TAG_BUID   1u
#define TAG_LIST   2u
#define TAG_LISTEN 3u
#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS   5000
/* An upstream that accepts and never answers must not hold requests that
 * wait for the table: after this they are answered from the empty table.
 * The connection stays (it may yet answer; dropping and redialling would
 * pile up half-open sessions behind a silent upstream). Generous: usbmuxd
 * answers in milliseconds. */
#define SYNC_TIMEOUT_MS  10000

static void start(struct umx_sub *s);

bool umx_sub_should_park(const struct umx_sub *s)
{
	/* IDLE: between attempts (the backoff after a loss). */
	return s->state != UMX_SUB_LIVE && !s->settled_empty;
}

static void attach(struct umx_sub *s, const struct umx_device *dev)
{
	bool known = umx_table_find_up(&s->table, 0, dev->id) != NULL;
	const struct umx_entry *e;
	int rc = umx_table_attach(&s->table, 0, dev, &e);
	if (rc < 0) {
		unsigned suppressed;
		if (log_ratelimit_pass(&s->rl, loop_now(s->loop), &suppressed))
			log_warn("%s: device %s not tracked: %s", s->cfg.who, dev->serial,
				 rc == -ENOSPC ? "the device table is full" : plat_strerror(-rc));
		return;
	}
	if (!known) {
		log_info("%s: device %s attached (DeviceID %u)", s->cfg.who, e->dev.serial,
			 e->dev.id);
		s->ops->device(s->ctx, UMX_SUB_ATTACHED, &e->dev);
	}
}

static void detach(struct umx_sub *s, uint32_t up_id)
{
	const struct umx_entry *e = umx_table_find_up(&s->table, 0, up_id);
	if (!e)
		return;
	struct umx_device d = e->dev; /* shallow: valid until detached */
	log_info("%s: device %s detached (DeviceID %u)", s->cfg.who, d.serial, d.id);
	s->ops->device(s->ctx, UMX_SUB_DETACHED, &d);
	uint32_t id;
	umx_table_detach(&s->table, 0, up_id, &id);
}

/* The connection and what it had queued. */
static void disconnect(struct umx_sub *s)
{
	loop_timer_cancel(s->loop, &s->sync);
	if (s->w.fd >= 0) {
		int fd = s->w.fd;
		loop_watch_remove(s->loop, &s->w);
		plat_close(fd);
	}
	buf_release(&s->in);
	buf_release(&s->out);
}

static void end(struct umx_sub *s, const char *why)
{
	bool was_live = s->state == UMX_SUB_LIVE;
	disconnect(s);
	s->state = UMX_SUB_IDLE;
	/* A live subscription that ends (usbmuxd restarted, the tunnel cut)
	 * is usually back within one attempt: requests that need the table
	 * wait for that attempt rather than get an empty one. Once an attempt
	 * has failed, the empty table is the truth. */
	s->settled_empty = !was_live || s->cfg.no_wait_after_loss;
	if (was_live) {
		s->losses++;
		log_warn("%s: subscription lost (%s); devices reported detached, resubscribing",
			 s->cfg.who, why);
		while (s->table.n)
			detach(s, s->table.e[s->table.n - 1].up_id);
		s->buid_known = false;
	} else {
		unsigned suppressed;
		if (log_ratelimit_pass(&s->rl, loop_now(s->loop), &suppressed))
			log_warn("%s: cannot subscribe to %s (%s); retrying", s->cfg.who, s->cfg.peer,
				 why);
	}
	unsigned jitter = 0;
	plat_random(&jitter, sizeof(jitter));
	loop_timer_arm(s->loop, &s->retry, s->backoff_ms / 2 + jitter % (s->backoff_ms / 2 + 1));
	s->backoff_ms = s->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : s->backoff_ms * 2;
	s->ops->changed(s->ctx);
}

static void on_list(struct umx_sub *s, const struct umx_event *ev)
{
	/* Devices the table has that the fresh list lacks are gone. */
	for (size_t i = s->table.n; i-- > 0;) {
		bool present = false;
		for (size_t j = 0; j < ev->n && !present; j++)
			present = ev->list[j].id == s->table.e[i].up_id;
		if (!present)
			detach(s, s->table.e[i].up_id);
	}
	for (size_t j = 0; j < ev->n; j++)
		attach(s, &ev->list[j]);
	if (s->state != UMX_SUB_LIVE) {
		s->state = UMX_SUB_LIVE;
		s->settled_empty = false;
		loop_timer_cancel(s->loop, &s->sync);
		s->backoff_ms = BACKOFF_FIRST_MS;
		log_info("%s: subscribed to %s (%u devices)", s->cfg.who, s->cfg.peer, (unsigned)s->table.n);
		s->ops->changed(s->ctx);
	}
}

/* One message; a reason when it ends the subscription. */
static const char *on_message(struct umx_sub *s, const struct umx_hdr *h, const uint8_t *body,
			      size_t len, char *why, size_t cap)
{
	struct umx_event ev;
	int rc = umx_event_decode(h, body, len, &ev);
	if (rc < 0)
		return rc == -E2BIG ? "a message the plist guard refuses" : "an unreadable message";
	const char *r = NULL;
	switch (ev.kind) {
	case UMX_EV_BUID:
		snprintf(s->buid, sizeof(s->buid), "%s", ev.text);
		s->buid_known = true;
		break;
	case UMX_EV_DEVICE_LIST:
		on_list(s, &ev);
		break;
	case UMX_EV_RESULT:
		/* ReadBUID may fail (then it is forwarded); Listen and
		 * ListDevices may not. */
		if ((ev.tag == TAG_LISTEN && ev.result != UMX_RESULT_OK) || ev.tag == TAG_LIST) {
			snprintf(why, cap, "%s refused %s", s->cfg.peer,
				 ev.tag == TAG_LIST ? "ListDevices" : "Listen");
			r = why;
		}
		break;
	case UMX_EV_ATTACHED:
		attach(s, &ev.dev);
		break;
	case UMX_EV_DETACHED:
		detach(s, ev.device_id);
		break;
	case UMX_EV_PAIRED: {
		const struct umx_entry *e = umx_table_find_up(&s->table, 0, ev.device_id);
		if (e)
			s->ops->device(s->ctx, UMX_SUB_PAIRED, &e->dev);
		break;
	}
	default:
		break;
	}
	umx_event_free(&ev);
	return r;
}

static void on_io(struct loop_watch *w, unsigned events)
{
	struct umx_sub *s = w->ctx;
	char why[128];
	if (!s->connected && (events & (LOOP_OUT | LOOP_ERR))) {
		int rc = plat_connect_result(w->fd);
		if (rc < 0) {
			end(s, plat_strerror(-rc));
			return;
		}
		s->connected = true;
	}
	size_t n;
	const uint8_t *p;
	while (s->connected && (p = buf_peek(&s->out, &n)) != NULL) {
		ssize_t r = plat_write(w->fd, p, n);
		if (r == -EAGAIN)
			break;
		if (r < 0) {
			end(s, plat_strerror((int)-r));
			return;
		}
		buf_consume(&s->out, (size_t)r);
	}
	for (int rounds = 0; s->connected && (events & (LOOP_IN | LOOP_ERR)) && rounds < 16; rounds++) {
		size_t room = buf_space(&s->in);
		ssize_t r = plat_read(w->fd, s->scratch, room < sizeof(s->scratch) ? room : sizeof(s->scratch));
		if (r == -EAGAIN)
			break;
		if (r <= 0) {
			snprintf(why, sizeof(why), "%s closed it", s->cfg.peer);
			end(s, r == 0 ? why : plat_strerror((int)-r));
			return;
		}
		if (buf_append(&s->in, s->scratch, (size_t)r) < 0) {
			end(s, "out of memory");
			return;
		}
		while ((p = buf_peek(&s->in, &n)) != NULL && n >= UMX_HDR_LEN) {
			struct umx_hdr h;
			if (umx_hdr_get_reply(p, &h) < 0) {
				end(s, "a message of impossible length");
				return;
			}
			if (n < h.length)
				break;
			const char *stop = on_message(s, &h, p + UMX_HDR_LEN, h.length - UMX_HDR_LEN,
						      why, sizeof(why));
			if (stop) {
				end(s, stop);
				return;
			}
			buf_consume(&s->in, h.length);
		}
	}
	unsigned want = s->connected ? LOOP_IN : 0;
	if (buf_len(&s->out) || !s->connected)
		want |= LOOP_OUT;
	int rc = loop_watch_set(s->loop, w, want);
	if (rc < 0)
		end(s, plat_strerror(-rc));
}

static int request(struct umx_sub *s, const char *type, uint32_t tag)
{
	plist_t d = plist_new_dict();
	plist_dict_set_item(d, "MessageType", plist_new_string(type));
	plist_dict_set_item(d, "ClientVersionString", plist_new_string(s->cfg.prog));
	plist_dict_set_item(d, "ProgName", plist_new_string(s->cfg.prog));
	plist_dict_set_item(d, "kLibUSBMuxVersion", plist_new_uint(3));
	uint8_t *m;
	size_t len;
	int rc = umx_encode_plist(tag, d, &m, &len);
	plist_free(d);
	if (rc < 0)
		return rc;
	rc = buf_append(&s->out, m, len);
	free(m);
	return rc;
}

static void start(struct umx_sub *s)
{
	int fd = -1;
	s->state = UMX_SUB_SYNCING;
	s->subscribes++;
	buf_init_growing(&s->in, UMX_REPLY_MAX);
	buf_init_growing(&s->out, UMX_MSG_MAX);
	int rc = s->ops->connect(s->ctx, &fd);
	s->connected = rc == 0;
	loop_watch_init(&s->w, rc == 0 || rc == -EINPROGRESS ? fd : -1, on_io, s);
	if (rc < 0 && rc != -EINPROGRESS) {
		end(s, plat_strerror(-rc));
		return;
	}
	loop_timer_arm(s->loop, &s->sync, SYNC_TIMEOUT_MS);
	if ((rc = request(s, "ReadBUID", TAG_BUID)) < 0 ||
	    (rc = request(s, "ListDevices", TAG_LIST)) < 0 ||
	    (rc = request(s, "Listen", TAG_LISTEN)) < 0 ||
	    (rc = loop_watch_set(s->loop, &s->w, LOOP_OUT)) < 0)
		end(s, plat_strerror(-rc));
}

static void on_retry(struct loop_timer *t)
{
	start(t->ctx);
}

void umx_sub_kick(struct umx_sub *s)
{
	if (!s->loop || s->state != UMX_SUB_IDLE)
		return;
	loop_timer_cancel(s->loop, &s->retry);
	s->backoff_ms = BACKOFF_FIRST_MS;
	start(s);
}

static void on_sync_timeout(struct loop_timer *t)
{
	struct umx_sub *s = t->ctx;
	log_warn("%s: no device list from %s within %u s; answering from the empty table until "
		 "it comes", s->cfg.who, s->cfg.peer, SYNC_TIMEOUT_MS / 1000);
	s->settled_empty = true;
	s->ops->changed(s->ctx);
}

void umx_sub_start(struct umx_sub *s, struct loop *loop, const struct umx_sub_config *cfg,
		   const struct umx_sub_ops *ops, void *ctx)
{
	memset(s, 0, sizeof(*s));
	s->cfg = *cfg;
	s->ops = ops;
	s->ctx = ctx;
	s->loop = loop;
	s->backoff_ms = BACKOFF_FIRST_MS;
	s->rl.interval_ms = 10000;
	umx_table_init(&s->table);
	loop_watch_init(&s->w, -1, on_io, s);
	loop_timer_init(&s->retry, on_retry, s);
	loop_timer_init(&s->sync, on_sync_timeout, s);
	start(s);
}

void umx_sub_stop(struct umx_sub *s)
{
	if (!s->loop)
		return;
	loop_timer_cancel(s->loop, &s->retry);
	disconnect(s);
	umx_table_free(&s->table);
	s->loop = NULL;
}
