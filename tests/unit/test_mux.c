#include "hostile_ids.h"
#include "tunnel/mux.h"
#include "unit.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define WIN 4096u
#define MAXF 1024u

static struct tun_hello hello(enum tun_role role, uint32_t max_streams)
{
	return (struct tun_hello){ .version = TUN_VERSION, .role = (uint8_t)role,
				   .max_frame = MAXF, .window = WIN, .max_streams = max_streams };
}

/* A helper-side mux (accepts OPENs) and a shim-side mux (opens). */
static void pair(struct tun_mux *helper, struct tun_mux *shim, uint32_t helper_max)
{
	struct tun_hello h = hello(TUN_ROLE_HELPER, helper_max), s = hello(TUN_ROLE_SHIM, 64);
	CU_ASSERT_EQUAL_FATAL(tun_mux_init(helper, TUN_ROLE_HELPER, &h, &s), 0);
	CU_ASSERT_EQUAL_FATAL(tun_mux_init(shim, TUN_ROLE_SHIM, &s, &h), 0);
}

static struct tun_frame frame(uint8_t type, uint8_t flags, uint32_t stream, const void *p,
			      uint32_t len)
{
	return (struct tun_frame){ .type = type, .flags = flags, .stream = stream, .len = len,
				   .payload = p };
}

static int feed(struct tun_mux *m, struct tun_frame f, struct tun_event *ev)
{
	const char *why = NULL;
	int rc = tun_mux_input(m, &f, ev, &why);
	if (rc)
		CU_ASSERT_PTR_NOT_NULL(why);
	return rc;
}

static void open_accept_and_ids(void)
{
	struct tun_mux h, s;
	struct tun_stream a, b, ha;
	struct tun_event ev;
	pair(&h, &s, 8);
	CU_ASSERT_EQUAL(tun_mux_open(&s, &a, NULL), 0);
	CU_ASSERT_EQUAL(tun_mux_open(&s, &b, NULL), 0);
	CU_ASSERT_EQUAL(a.id, 1);
	CU_ASSERT_EQUAL(b.id, 3);
	CU_ASSERT_EQUAL(a.send_window, WIN);
	CU_ASSERT_EQUAL(tun_mux_count(&s), 2);

	CU_ASSERT_EQUAL(feed(&h, frame(TUN_OPEN, 0, 1, "hi", 2), &ev), 0);
	CU_ASSERT_EQUAL(ev.kind, TE_OPEN);
	CU_ASSERT_EQUAL(ev.len, 2);
	CU_ASSERT_FALSE(ev.fin);
	tun_mux_accept(&h, &ha, &ev, &ha);
	CU_ASSERT_EQUAL(ha.recv_window, WIN - 2); /* OPEN's data consumes window */
	CU_ASSERT_PTR_EQUAL(tun_mux_find(&h, 1), &ha);
	CU_ASSERT_PTR_NULL(tun_mux_find(&h, 3));
	tun_mux_free(&h);
	tun_mux_free(&s);
}

static void open_violations(void)
{
	struct tun_mux h, s;
	struct tun_event ev;
	pair(&h, &s, 8);
	CU_ASSERT_EQUAL(feed(&h, frame(TUN_OPEN, 0, 2, NULL, 0), &ev), TUN_GOAWAY_PROTOCOL); /* even */
	CU_ASSERT_EQUAL(feed(&h, frame(TUN_OPEN, 0, 5, NULL, 0), &ev), 0); /* gaps are fine */
	CU_ASSERT_EQUAL(feed(&h, frame(TUN_OPEN, 0, 5, NULL, 0), &ev), TUN_GOAWAY_PROTOCOL); /* reuse */
	CU_ASSERT_EQUAL(feed(&h, frame(TUN_OPEN, 0, 3, NULL, 0), &ev), TUN_GOAWAY_PROTOCOL); /* backwards */
	static uint8_t big[WIN + 1];
	CU_ASSERT_EQUAL(feed(&h, frame(TUN_OPEN, 0, 7, big, WIN + 1), &ev), TUN_GOAWAY_FLOW);
	/* the shim never accepts OPEN */
	CU_ASSERT_EQUAL(feed(&s, frame(TUN_OPEN, 0, 1, NULL, 0), &ev), TUN_GOAWAY_PROTOCOL);
	tun_mux_free(&h);
	tun_mux_free(&s);
}

static void open_beyond_limit_is_refused(void)
{
	struct tun_mux h, s;
	struct tun_stream st[3];
	struct tun_event ev;
	pair(&h, &s, 2);
	for (uint32_t i = 0; i < 2; i++) {
		CU_ASSERT_EQUAL(feed(&h, frame(TUN_OPEN, 0, 2 * i + 1, NULL, 0), &ev), 0);
		CU_ASSERT_EQUAL(ev.kind, TE_OPEN);
		tun_mux_accept(&h, &st[i], &ev, NULL);
	}
	CU_ASSERT_EQUAL(feed(&h, frame(TUN_OPEN, 0, 5, NULL, 0), &ev), 0);
	CU_ASSERT_EQUAL(ev.kind, TE_REFUSE);
	/* the refused id counts as used: its late frames are ignored */
	CU_ASSERT_EQUAL(feed(&h, frame(TUN_DATA, 0, 5, "x", 1), &ev), 0);
	CU_ASSERT_EQUAL(ev.kind, TE_IGNORE);
	/* the shim side also stops at the helper's limit */
	CU_ASSERT_EQUAL(tun_mux_open(&s, &st[0], NULL), 0);
	CU_ASSERT_EQUAL(tun_mux_open(&s, &st[1], NULL), 0);
	CU_ASSERT_EQUAL(tun_mux_open(&s, &st[2], NULL), -ENOSPC);
	tun_mux_free(&h);
	tun_mux_free(&s);
}

static void data_window_and_credit(void)
{
	struct tun_mux h, s;
	struct tun_stream a, ha;
	struct tun_event ev;
	static uint8_t blob[MAXF];
	pair(&h, &s, 8);
	CU_ASSERT_EQUAL(tun_mux_open(&s, &a, NULL), 0);
	CU_ASSERT_EQUAL(feed(&h, frame(TUN_OPEN, 0, 1, NULL, 0), &ev), 0);
	tun_mux_accept(&h, &ha, &ev, NULL);

	/* the sender is limited by max_frame, then by the window */
	CU_ASSERT_EQUAL(tun_stream_sendable(&s, &a), MAXF);
	for (int i = 0; i < 4; i++) {
		tun_stream_sent(&a, MAXF, false);
		CU_ASSERT_EQUAL(feed(&h, frame(TUN_DATA, 0, 1, blob, MAXF), &ev), 0);
		CU_ASSERT_EQUAL(ev.kind, TE_DATA);
		CU_ASSERT_PTR_EQUAL(ev.stream, &ha);
	}
	CU_ASSERT_EQUAL(tun_stream_sendable(&s, &a), 0);
	CU_ASSERT_EQUAL(ha.recv_window, 0);
	/* one byte more than the window is a flow violation */
	CU_ASSERT_EQUAL(feed(&h, frame(TUN_DATA, 0, 1, blob, 1), &ev), TUN_GOAWAY_FLOW);

	/* credit comes back only once half the window was really consumed */
	CU_ASSERT_EQUAL(tun_stream_consumed(&h, &ha, WIN / 2 - 1), 0);
	uint32_t inc = tun_stream_consumed(&h, &ha, 1);
	CU_ASSERT_EQUAL(inc, WIN / 2);
	CU_ASSERT_EQUAL(ha.recv_window, WIN / 2);
	uint8_t w[4];
	tun_put32(w, inc);
	CU_ASSERT_EQUAL(feed(&s, frame(TUN_WINDOW, 0, 1, w, 4), &ev), 0);
	CU_ASSERT_EQUAL(ev.kind, TE_WINDOW);
	CU_ASSERT_EQUAL(tun_stream_sendable(&s, &a), MAXF);
	CU_ASSERT_EQUAL(a.send_window, WIN / 2);
	tun_mux_free(&h);
	tun_mux_free(&s);
}

static void window_overflow(void)
{
	struct tun_mux h, s;
	struct tun_stream a;
	struct tun_event ev;
	pair(&h, &s, 8);
	CU_ASSERT_EQUAL(tun_mux_open(&s, &a, NULL), 0);
	uint8_t w[4];
	tun_put32(w, TUN_SEND_WINDOW_LIMIT - WIN);
	CU_ASSERT_EQUAL(feed(&s, frame(TUN_WINDOW, 0, 1, w, 4), &ev), 0);
	CU_ASSERT_EQUAL(a.send_window, TUN_SEND_WINDOW_LIMIT);
	tun_put32(w, 1);
	CU_ASSERT_EQUAL(feed(&s, frame(TUN_WINDOW, 0, 1, w, 4), &ev), TUN_GOAWAY_FLOW);
	tun_put32(w, 0xffffffffu);
	CU_ASSERT_EQUAL(feed(&s, frame(TUN_WINDOW, 0, 1, w, 4), &ev), TUN_GOAWAY_FLOW);
	tun_mux_free(&h);
	tun_mux_free(&s);
}

static void half_close_both_ways(void)
{
	struct tun_mux h, s;
	struct tun_stream a, ha;
	struct tun_event ev;
	pair(&h, &s, 8);
	CU_ASSERT_EQUAL(tun_mux_open(&s, &a, NULL), 0);
	/* OPEN with FIN: the client wrote a request and half-closed at once */
	tun_stream_sent(&a, 3, true);
	CU_ASSERT_EQUAL(tun_stream_sendable(&s, &a), 0); /* nothing after FIN */
	CU_ASSERT_EQUAL(feed(&h, frame(TUN_OPEN, TUN_FLAG_FIN, 1, "req", 3), &ev), 0);
	CU_ASSERT_TRUE(ev.fin);
	tun_mux_accept(&h, &ha, &ev, NULL);
	CU_ASSERT_TRUE(ha.fin_recvd);
	/* the helper still sends its answer, then FIN */
	CU_ASSERT_TRUE(tun_stream_sendable(&h, &ha) > 0);
	CU_ASSERT_EQUAL(feed(&s, frame(TUN_DATA, 0, 1, "answer", 6), &ev), 0);
	CU_ASSERT_EQUAL(ev.kind, TE_DATA);
	CU_ASSERT_FALSE(ev.fin);
	CU_ASSERT_EQUAL(feed(&s, frame(TUN_DATA, TUN_FLAG_FIN, 1, NULL, 0), &ev), 0);
	CU_ASSERT_EQUAL(ev.kind, TE_DATA);
	CU_ASSERT_TRUE(ev.fin);
	CU_ASSERT_TRUE(a.fin_recvd && a.fin_sent);
	/* anything after FIN is a violation */
	CU_ASSERT_EQUAL(feed(&s, frame(TUN_DATA, 0, 1, "x", 1), &ev), TUN_GOAWAY_PROTOCOL);
	CU_ASSERT_EQUAL(feed(&h, frame(TUN_DATA, TUN_FLAG_FIN, 1, NULL, 0), &ev), TUN_GOAWAY_PROTOCOL);
	/* no credit is returned to a peer that has finished sending */
	CU_ASSERT_EQUAL(tun_stream_consumed(&h, &ha, WIN), 0);
	tun_mux_remove(&s, &a);
	CU_ASSERT_EQUAL(tun_mux_count(&s), 0);
	/* a removed stream's late frames are ignored, not violations */
	CU_ASSERT_EQUAL(feed(&s, frame(TUN_DATA, 0, 1, "late", 4), &ev), 0);
	CU_ASSERT_EQUAL(ev.kind, TE_IGNORE);
	tun_mux_free(&h);
	tun_mux_free(&s);
}

static void reset_transitions(void)
{
	struct tun_mux h, s;
	struct tun_stream a;
	struct tun_event ev;
	pair(&h, &s, 8);
	CU_ASSERT_EQUAL(tun_mux_open(&s, &a, NULL), 0);
	uint8_t r[14];
	tun_put32(r, TUN_RESET_UPSTREAM);
	memcpy(r + 4, "no usbmuxd", 10);
	CU_ASSERT_EQUAL(feed(&s, frame(TUN_RESET, 0, 1, r, 14), &ev), 0);
	CU_ASSERT_EQUAL(ev.kind, TE_RESET);
	CU_ASSERT_EQUAL(ev.code, TUN_RESET_UPSTREAM);
	CU_ASSERT_EQUAL(ev.reason_len, 10);
	CU_ASSERT_TRUE(a.reset);
	CU_ASSERT_EQUAL(tun_stream_sendable(&s, &a), 0);
	/* a second RESET, data or window crossing it: ignored */
	CU_ASSERT_EQUAL(feed(&s, frame(TUN_RESET, 0, 1, r, 4), &ev), 0);
	CU_ASSERT_EQUAL(ev.kind, TE_IGNORE);
	CU_ASSERT_EQUAL(feed(&s, frame(TUN_DATA, 0, 1, "x", 1), &ev), 0);
	CU_ASSERT_EQUAL(ev.kind, TE_IGNORE);
	uint8_t w[4];
	tun_put32(w, 10);
	CU_ASSERT_EQUAL(feed(&s, frame(TUN_WINDOW, 0, 1, w, 4), &ev), 0);
	CU_ASSERT_EQUAL(ev.kind, TE_IGNORE);
	tun_mux_free(&h);
	tun_mux_free(&s);
}

static void never_opened_ids(void)
{
	struct tun_mux h, s;
	struct tun_event ev;
	uint8_t w[4] = { 0, 0, 0, 1 };
	pair(&h, &s, 8);
	CU_ASSERT_EQUAL(feed(&s, frame(TUN_DATA, 0, 1, "x", 1), &ev), TUN_GOAWAY_PROTOCOL);
	CU_ASSERT_EQUAL(feed(&s, frame(TUN_WINDOW, 0, 9, w, 4), &ev), TUN_GOAWAY_PROTOCOL);
	CU_ASSERT_EQUAL(feed(&s, frame(TUN_RESET, 0, 9, w, 4), &ev), TUN_GOAWAY_PROTOCOL);
	CU_ASSERT_EQUAL(feed(&h, frame(TUN_DATA, 0, 3, "x", 1), &ev), TUN_GOAWAY_PROTOCOL);
	tun_mux_free(&h);
	tun_mux_free(&s);
}

static void connection_frames(void)
{
	struct tun_mux h, s;
	struct tun_event ev;
	pair(&h, &s, 8);
	CU_ASSERT_EQUAL(feed(&h, frame(TUN_PING, 0, 0, "12345678", 8), &ev), 0);
	CU_ASSERT_EQUAL(ev.kind, TE_PING);
	CU_ASSERT_EQUAL(memcmp(ev.data, "12345678", 8), 0);
	CU_ASSERT_EQUAL(feed(&s, frame(TUN_PING, TUN_FLAG_ACK, 0, "12345678", 8), &ev), 0);
	CU_ASSERT_EQUAL(ev.kind, TE_PONG);
	uint8_t g[12];
	tun_put32(g, 7);
	tun_put32(g + 4, TUN_GOAWAY_NORMAL);
	memcpy(g + 8, "bye!", 4);
	CU_ASSERT_EQUAL(feed(&s, frame(TUN_GOAWAY, 0, 0, g, 12), &ev), 0);
	CU_ASSERT_EQUAL(ev.kind, TE_GOAWAY);
	CU_ASSERT_EQUAL(ev.last_stream, 7);
	CU_ASSERT_EQUAL(ev.reason_len, 4);
	static uint8_t mac[TUN_MAC_LEN];
	CU_ASSERT_EQUAL(feed(&h, frame(TUN_AUTH, 0, 0, mac, TUN_MAC_LEN), &ev), TUN_GOAWAY_AUTH);
	CU_ASSERT_EQUAL(feed(&h, frame(42, 0, 0, NULL, 0), &ev), TUN_GOAWAY_PROTOCOL);
	tun_mux_free(&h);
	tun_mux_free(&s);
}

static void table_survives_churn(void)
{
	struct tun_mux h, s;
	static struct tun_stream st[64];
	struct tun_event ev;
	pair(&h, &s, 64);
	/* open 64, remove every other one, look up the rest, repeat */
	for (uint32_t round = 0; round < 4; round++) {
		for (uint32_t i = 0; i < 64; i++) {
			if (round && (i & 1) == 0)
				continue;
			uint32_t id = h.last_id ? h.last_id + 2 : 1;
			CU_ASSERT_EQUAL_FATAL(feed(&h, frame(TUN_OPEN, 0, id, NULL, 0), &ev), 0);
			CU_ASSERT_EQUAL_FATAL(ev.kind, TE_OPEN);
			tun_mux_accept(&h, &st[i], &ev, NULL);
		}
		for (uint32_t i = 1; i < 64; i += 2)
			tun_mux_remove(&h, &st[i]);
		CU_ASSERT_EQUAL(tun_mux_count(&h), 32);
		for (uint32_t i = 0; i < 64; i += 2)
			CU_ASSERT_PTR_EQUAL(tun_mux_find(&h, st[i].id), &st[i]);
		for (uint32_t i = 1; i < 64; i += 2)
			CU_ASSERT_PTR_NULL(tun_mux_find(&h, st[i].id));
	}
	tun_mux_free(&h);
	tun_mux_free(&s);
}

static void open_ids(struct tun_mux *h, struct tun_stream *st, const uint32_t *ids, uint32_t n)
{
	struct tun_event ev;
	for (uint32_t i = 0; i < n; i++) {
		CU_ASSERT_EQUAL_FATAL(feed(h, frame(TUN_OPEN, 0, ids[i], NULL, 0), &ev), 0);
		CU_ASSERT_EQUAL_FATAL(ev.kind, TE_OPEN);
		tun_mux_accept(h, &st[i], &ev, NULL);
	}
}

static uint32_t max_probes(const struct tun_mux *h, const uint32_t *ids, uint32_t n)
{
	uint32_t worst = 0;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t p = tun_mux_probes(h, ids[i]);
		worst = p > worst ? p : worst;
	}
	return worst;
}

/* Ids chosen to collide under a fixed hash: with the keyed table every
 * lookup stays a few probes (unkeyed, the worst one walked all 16,384). The
 * bound, 40, is far above what 16,384 random keys in 131,072 slots produce
 * (a run that long has a probability below 2^-40) and far below a pile-up. */
static void table_adversarial_ids(void)
{
	static const uint8_t key[16] = "muxshim unit key";
	tun_mux_set_key(key);
	enum { N = 16384 };
	static uint32_t ids[N];
	static struct tun_stream st[N];
	CU_ASSERT_EQUAL_FATAL(hostile_stream_ids(ids, N), N);
	struct tun_mux h, s;
	pair(&h, &s, TUN_STREAMS_MAX);
	open_ids(&h, st, ids, N);
	CU_ASSERT_EQUAL(tun_mux_count(&h), N);
	CU_ASSERT(max_probes(&h, ids, N) <= 40);
	for (uint32_t i = 0; i < N; i++)
		CU_ASSERT_PTR_EQUAL(tun_mux_find(&h, ids[i]), &st[i]);
	/* Remove every third, in the order a peer would pick: the rest is
	 * still found, the removed are gone, runs stay short. */
	for (uint32_t i = 0; i < N; i += 3)
		tun_mux_remove(&h, &st[i]);
	for (uint32_t i = 0; i < N; i++) {
		struct tun_stream *want = i % 3 == 0 ? NULL : &st[i];
		CU_ASSERT_PTR_EQUAL(tun_mux_find(&h, ids[i]), want);
	}
	CU_ASSERT_EQUAL(tun_mux_count(&h), N - (N + 2) / 3);
	CU_ASSERT(max_probes(&h, ids, N) <= 40);
	tun_mux_free(&h);
	tun_mux_free(&s);
}

/* A full table of colliding ids: the next OPEN is refused, a removal makes
 * room for exactly one more, and every live id is still found. */
static void table_full(void)
{
	enum { N = 64 };
	uint32_t ids[N + 2];
	static struct tun_stream st[N + 2];
	struct tun_event ev;
	CU_ASSERT_EQUAL_FATAL(hostile_stream_ids(ids, N + 2), N + 2);
	struct tun_mux h, s;
	pair(&h, &s, N);
	open_ids(&h, st, ids, N);
	CU_ASSERT_EQUAL(feed(&h, frame(TUN_OPEN, 0, ids[N], NULL, 0), &ev), 0);
	CU_ASSERT_EQUAL(ev.kind, TE_REFUSE);
	tun_mux_remove(&h, &st[N / 2]);
	CU_ASSERT_PTR_NULL(tun_mux_find(&h, ids[N / 2]));
	CU_ASSERT_EQUAL(feed(&h, frame(TUN_OPEN, 0, ids[N + 1], NULL, 0), &ev), 0);
	CU_ASSERT_EQUAL_FATAL(ev.kind, TE_OPEN);
	tun_mux_accept(&h, &st[N + 1], &ev, NULL);
	CU_ASSERT_EQUAL(tun_mux_count(&h), N);
	for (uint32_t i = 0; i < N + 2; i++) {
		struct tun_stream *want = i == N / 2 || i == N ? NULL : &st[i];
		CU_ASSERT_PTR_EQUAL(tun_mux_find(&h, ids[i]), want);
	}
	for (uint32_t i = 0; i < N + 2; i++)
		if (i != N / 2 && i != N)
			tun_mux_remove(&h, &st[i]);
	CU_ASSERT_EQUAL(tun_mux_count(&h), 0);
	tun_mux_free(&h);
	tun_mux_free(&s);
}

int unit_mux(void)
{
	static const struct unit_test t[] = {
		{ "open, accept, sequential odd ids", open_accept_and_ids },
		{ "OPEN violations", open_violations },
		{ "OPEN beyond max_streams is refused", open_beyond_limit_is_refused },
		{ "data, window and credit", data_window_and_credit },
		{ "window overflow", window_overflow },
		{ "half-close both ways", half_close_both_ways },
		{ "reset and what crosses it", reset_transitions },
		{ "frames for never-opened ids", never_opened_ids },
		{ "ping, pong, goaway, auth, unknown", connection_frames },
		{ "stream table survives churn", table_survives_churn },
		{ "stream table: adversarial ids stay cheap", table_adversarial_ids },
		{ "stream table: full, refused, room again", table_full },
		{ NULL, NULL },
	};
	return unit_add_suite("tunnel mux", t);
}
