#include "mux.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* The peer chooses stream ids (any increasing odd numbers), so a fixed hash
 * lets it pick ids that all land in one slot and turn every lookup into a
 * walk over the whole table. The slot is therefore a keyed pseudo-random
 * function of the id (SipHash-1-3, from its specification) under a key the
 * peer does not know: whatever ids it picks, they spread as random ones do
 * and the table (at most half full) keeps its short probe runs. */
static uint8_t table_key[16];

void tun_mux_set_key(const uint8_t key[16])
{
	memcpy(table_key, key, sizeof(table_key));
}

static uint64_t rotl64(uint64_t x, unsigned b)
{
	return x << b | x >> (64 - b);
}

static uint64_t le64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

#define SIPROUND()                                                          \
	do {                                                                \
		v0 += v1; v1 = rotl64(v1, 13); v1 ^= v0; v0 = rotl64(v0, 32); \
		v2 += v3; v3 = rotl64(v3, 16); v3 ^= v2;                    \
		v0 += v3; v3 = rotl64(v3, 21); v3 ^= v0;                    \
		v2 += v1; v1 = rotl64(v1, 17); v1 ^= v2; v2 = rotl64(v2, 32); \
	} while (0)

/* SipHash-1-3 of the id's 4 little-endian bytes: a single final block. */
static uint64_t keyed_hash(uint32_t id)
{
	uint64_t k0 = le64(table_key), k1 = le64(table_key + 8);
	uint64_t v0 = k0 ^ 0x736f6d6570736575ull, v1 = k1 ^ 0x646f72616e646f6dull;
	uint64_t v2 = k0 ^ 0x6c7967656e657261ull, v3 = k1 ^ 0x7465646279746573ull;
	uint64_t m = (uint64_t)4 << 56 | id;
	v3 ^= m;
	SIPROUND();
	v0 ^= m;
	v2 ^= 0xff;
	SIPROUND();
	SIPROUND();
	SIPROUND();
	return v0 ^ v1 ^ v2 ^ v3;
}

static uint32_t slot_of(const struct tun_table *t, uint32_t id)
{
	return (uint32_t)keyed_hash(id) & t->mask;
}

uint32_t tun_mux_probes(const struct tun_mux *m, uint32_t id)
{
	const struct tun_table *t = &m->table;
	uint32_t n = 1;
	for (uint32_t i = slot_of(t, id); t->slots[i] && t->slots[i]->id != id;
	     i = (i + 1) & t->mask)
		n++;
	return n;
}

static int table_init(struct tun_table *t, uint32_t max)
{
	uint32_t cap = 16;
	while (cap < 2 * max)
		cap <<= 1;
	t->slots = calloc(cap, sizeof(*t->slots));
	if (!t->slots)
		return -ENOMEM;
	t->mask = cap - 1;
	t->count = 0;
	return 0;
}

struct tun_stream *tun_mux_find(const struct tun_mux *m, uint32_t id)
{
	const struct tun_table *t = &m->table;
	for (uint32_t i = slot_of(t, id);; i = (i + 1) & t->mask) {
		struct tun_stream *s = t->slots[i];
		if (!s || s->id == id)
			return s;
	}
}

static void table_insert(struct tun_table *t, struct tun_stream *s)
{
	uint32_t i = slot_of(t, s->id);
	while (t->slots[i])
		i = (i + 1) & t->mask;
	t->slots[i] = s;
	t->count++;
}

void tun_mux_remove(struct tun_mux *m, struct tun_stream *s)
{
	struct tun_table *t = &m->table;
	uint32_t i = slot_of(t, s->id);
	while (t->slots[i] && t->slots[i] != s)
		i = (i + 1) & t->mask;
	if (!t->slots[i])
		return;
	t->slots[i] = NULL;
	t->count--;
	/* Backward-shift deletion: re-seat the entries of the same probe run
	 * so lookups never stop early at the hole. */
	for (uint32_t j = (i + 1) & t->mask; t->slots[j]; j = (j + 1) & t->mask) {
		struct tun_stream *x = t->slots[j];
		t->slots[j] = NULL;
		t->count--;
		table_insert(t, x);
	}
}

int tun_mux_init(struct tun_mux *m, enum tun_role role, const struct tun_hello *local,
		 const struct tun_hello *peer)
{
	m->role = role;
	m->local = *local;
	m->peer = *peer;
	m->last_id = 0;
	m->next_id = 1;
	/* The helper bounds what it accepts; the shim bounds what it opens by
	 * the helper's limit. Either way the table never holds more. */
	uint32_t max = role == TUN_ROLE_HELPER ? local->max_streams : peer->max_streams;
	return table_init(&m->table, max);
}

void tun_mux_free(struct tun_mux *m)
{
	free(m->table.slots);
	m->table.slots = NULL;
}

static void stream_init(struct tun_mux *m, struct tun_stream *s, uint32_t id, void *owner)
{
	s->id = id;
	s->send_window = m->peer.window;
	s->recv_window = m->local.window;
	s->recv_consumed = 0;
	s->fin_sent = false;
	s->fin_recvd = false;
	s->reset = false;
	s->owner = owner;
}

int tun_mux_open(struct tun_mux *m, struct tun_stream *s, void *owner)
{
	if (m->next_id == 0 || m->next_id > 0xfffffffdu)
		return -ENOSPC; /* ids exhausted: never reuse one */
	if (m->table.count >= m->peer.max_streams)
		return -ENOSPC;
	stream_init(m, s, m->next_id, owner);
	m->last_id = m->next_id;
	m->next_id += 2;
	table_insert(&m->table, s);
	return 0;
}

void tun_mux_accept(struct tun_mux *m, struct tun_stream *s, const struct tun_event *ev,
		    void *owner)
{
	stream_init(m, s, ev->id, owner);
	s->recv_window -= (uint32_t)ev->len; /* checked in tun_mux_input */
	s->fin_recvd = ev->fin;
	table_insert(&m->table, s);
}

#define VIOLATION(code, text) do { *why = text; return code; } while (0)

/* A frame for a stream that is not live: ignorable if the id was used
 * (it crossed a RESET or our teardown), a violation if never opened. */
static int unknown_stream(const struct tun_mux *m, uint32_t id, struct tun_event *ev,
			  const char **why)
{
	if (id <= m->last_id) {
		ev->kind = TE_IGNORE;
		return 0;
	}
	VIOLATION(TUN_GOAWAY_PROTOCOL, "frame for a stream that was never opened");
}

static int input_open(struct tun_mux *m, const struct tun_frame *f, struct tun_event *ev,
		      const char **why)
{
	if (m->role != TUN_ROLE_HELPER)
		VIOLATION(TUN_GOAWAY_PROTOCOL, "OPEN from the helper (only the shim opens streams)");
	if (!(f->stream & 1) || f->stream <= m->last_id)
		VIOLATION(TUN_GOAWAY_PROTOCOL, "OPEN with an even or non-increasing stream id");
	if (f->len > m->local.window)
		VIOLATION(TUN_GOAWAY_FLOW, "OPEN carries more than the initial window");
	m->last_id = f->stream;
	ev->id = f->stream;
	ev->data = f->payload;
	ev->len = f->len;
	ev->fin = f->flags & TUN_FLAG_FIN;
	ev->kind = m->table.count >= m->local.max_streams ? TE_REFUSE : TE_OPEN;
	return 0;
}

static int input_data(struct tun_mux *m, const struct tun_frame *f, struct tun_event *ev,
		      const char **why)
{
	struct tun_stream *s = tun_mux_find(m, f->stream);
	if (!s)
		return unknown_stream(m, f->stream, ev, why);
	if (s->reset) {
		ev->kind = TE_IGNORE; /* we reset it; the peer had not heard yet */
		return 0;
	}
	if (s->fin_recvd)
		VIOLATION(TUN_GOAWAY_PROTOCOL, "DATA after FIN on the same stream");
	if (f->len > s->recv_window)
		VIOLATION(TUN_GOAWAY_FLOW, "DATA beyond the stream's receive window");
	s->recv_window -= f->len;
	s->fin_recvd = f->flags & TUN_FLAG_FIN;
	ev->kind = TE_DATA;
	ev->stream = s;
	ev->data = f->payload;
	ev->len = f->len;
	ev->fin = s->fin_recvd;
	return 0;
}

static int input_window(struct tun_mux *m, const struct tun_frame *f, struct tun_event *ev,
			const char **why)
{
	struct tun_stream *s = tun_mux_find(m, f->stream);
	if (!s)
		return unknown_stream(m, f->stream, ev, why);
	uint32_t inc = tun_window_increment(f);
	if (inc > TUN_SEND_WINDOW_LIMIT - s->send_window)
		VIOLATION(TUN_GOAWAY_FLOW, "WINDOW raises the send window beyond 2^31-1");
	s->send_window += inc;
	ev->kind = s->reset ? TE_IGNORE : TE_WINDOW;
	ev->stream = s;
	return 0;
}

static int input_reset(struct tun_mux *m, const struct tun_frame *f, struct tun_event *ev,
		       const char **why)
{
	struct tun_stream *s = tun_mux_find(m, f->stream);
	if (!s)
		return unknown_stream(m, f->stream, ev, why);
	ev->code = tun_reset_code(f, &ev->reason, &ev->reason_len);
	ev->kind = s->reset ? TE_IGNORE : TE_RESET;
	s->reset = true;
	ev->stream = s;
	return 0;
}

int tun_mux_input(struct tun_mux *m, const struct tun_frame *f, struct tun_event *ev,
		  const char **why)
{
	*ev = (struct tun_event){ .kind = TE_IGNORE, .id = f->stream };
	switch (f->type) {
	case TUN_OPEN:
		return input_open(m, f, ev, why);
	case TUN_DATA:
		return input_data(m, f, ev, why);
	case TUN_WINDOW:
		return input_window(m, f, ev, why);
	case TUN_RESET:
		return input_reset(m, f, ev, why);
	case TUN_PING:
		ev->kind = f->flags & TUN_FLAG_ACK ? TE_PONG : TE_PING;
		ev->data = f->payload;
		ev->len = f->len;
		return 0;
	case TUN_GOAWAY:
		ev->kind = TE_GOAWAY;
		ev->code = tun_goaway_fields(f, &ev->last_stream, &ev->reason, &ev->reason_len);
		return 0;
	case TUN_AUTH:
		VIOLATION(TUN_GOAWAY_AUTH, "AUTH after the handshake");
	}
	VIOLATION(TUN_GOAWAY_PROTOCOL, "unknown frame type");
}

uint32_t tun_stream_sendable(const struct tun_mux *m, const struct tun_stream *s)
{
	if (s->fin_sent || s->reset)
		return 0;
	return s->send_window < m->peer.max_frame ? s->send_window : m->peer.max_frame;
}

void tun_stream_sent(struct tun_stream *s, uint32_t n, bool fin)
{
	s->send_window -= n;
	if (fin)
		s->fin_sent = true;
}

uint32_t tun_stream_consumed(const struct tun_mux *m, struct tun_stream *s, uint32_t n)
{
	s->recv_consumed += n;
	/* No credit once the peer has finished sending: it cannot use it. */
	if (s->fin_recvd || s->reset || s->recv_consumed < m->local.window / 2)
		return 0;
	uint32_t inc = s->recv_consumed;
	s->recv_window += inc;
	s->recv_consumed = 0;
	return inc;
}
