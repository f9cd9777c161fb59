/* Micro-benchmark of the helper's stream table (common/tunnel/mux.c), the
 * way a hostile shim would load it: N streams opened with ids it chose,
 * then WINDOW frames round-robin over them, through tun_mux_input as the
 * helper processes them. Two id sets: sequential odd ids (what a real shim
 * sends) and ids that all land in one slot of the table under the unkeyed
 * multiplicative hash the table used before it was keyed. Prints the cost
 * per frame of each and their ratio: about 1 when the lookup cost does not
 * depend on the peer's choice of ids.
 *
 *   make bench-mux            # build/tests/bench_mux [STREAMS [FRAMES]]
 *   make bench-mux MUX_SRC=/tmp/old_mux.c   # the same against another mux.c
 *
 * A measurement printed for a person, not a test: nothing here passes or
 * fails on timings. */
#include "../unit/hostile_ids.h"
#include "tunnel/mux.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

/* Absent from a mux.c without a keyed table (MUX_SRC=old): then not called. */
__attribute__((weak)) void tun_mux_set_key(const uint8_t key[16]);

#define MAX_STREAMS TUN_STREAMS_MAX /* the largest --max-streams */

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	fprintf(stderr, "bench_mux: %s\n", what);
	exit(1);
}

static void feed(struct tun_mux *m, struct tun_frame f, struct tun_event *ev)
{
	const char *why;
	if (tun_mux_input(m, &f, ev, &why) != 0)
		die(why);
}

/* ns per WINDOW frame; *open_ns, *remove_ns: per OPEN (insertion) and
 * per removal. */
static double run(const uint32_t *ids, uint32_t n, uint32_t frames, double *open_ns,
		  double *remove_ns)
{
	struct tun_hello local = { .version = TUN_VERSION, .role = TUN_ROLE_HELPER, .max_frame = 16384,
				   .window = 262144, .max_streams = MAX_STREAMS };
	struct tun_hello peer = local;
	peer.role = TUN_ROLE_SHIM;
	struct tun_mux m;
	struct tun_stream *st = calloc(n, sizeof(*st));
	if (!st || tun_mux_init(&m, TUN_ROLE_HELPER, &local, &peer) < 0)
		die("out of memory");
	struct tun_event ev;
	double t0 = now_s();
	for (uint32_t i = 0; i < n; i++) {
		feed(&m, (struct tun_frame){ .type = TUN_OPEN, .stream = ids[i] }, &ev);
		if (ev.kind != TE_OPEN)
			die("OPEN refused");
		tun_mux_accept(&m, &st[i], &ev, NULL);
	}
	double t1 = now_s();
	uint8_t inc[4] = { 0, 0, 0, 1 };
	for (uint32_t f = 0; f < frames; f++) {
		feed(&m, (struct tun_frame){ .type = TUN_WINDOW, .stream = ids[f % n], .len = 4,
					     .payload = inc }, &ev);
		if (ev.kind != TE_WINDOW)
			die("WINDOW not applied");
	}
	double t2 = now_s();
	for (uint32_t i = 0; i < n; i++)
		tun_mux_remove(&m, &st[i]);
	double t3 = now_s();
	tun_mux_free(&m);
	free(st);
	*open_ns = (t1 - t0) * 1e9 / n;
	*remove_ns = (t3 - t2) * 1e9 / n;
	return (t2 - t1) * 1e9 / frames;
}

int main(int argc, char **argv)
{
	uint32_t n = argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 10) : 1000;
	uint32_t frames = argc > 2 ? (uint32_t)strtoul(argv[2], NULL, 10) : 409600;
	if (n < 1 || n > 16384 || frames < 1)
		die("usage: bench_mux [STREAMS 1..16384 [FRAMES]]");
	if (tun_mux_set_key) {
		uint8_t key[16];
		if (getrandom(key, sizeof(key), 0) != (ssize_t)sizeof(key))
			die("no randomness");
		tun_mux_set_key(key);
	}
	uint32_t *seq = malloc(n * sizeof(*seq)), *bad = malloc(16384 * sizeof(*bad));
	if (!seq || !bad)
		die("out of memory");
	for (uint32_t i = 0; i < n; i++)
		seq[i] = 2 * i + 1;
	hostile_stream_ids(bad, n);
	double seq_open, bad_open, seq_rm, bad_rm;
	run(seq, n, frames, &seq_open, &seq_rm); /* warm-up: page faults, caches */
	double seq_ns = run(seq, n, frames, &seq_open, &seq_rm);
	double bad_ns = run(bad, n, frames, &bad_open, &bad_rm);
	printf("table: %s, max_streams %u, %u streams, %u WINDOW frames\n",
	       tun_mux_set_key ? "keyed" : "unkeyed", MAX_STREAMS, n, frames);
	printf("sequential ids: %10.1f ns/frame %10.1f ns/OPEN %10.1f ns/removal\n", seq_ns,
	       seq_open, seq_rm);
	printf("colliding ids:  %10.1f ns/frame %10.1f ns/OPEN %10.1f ns/removal\n", bad_ns,
	       bad_open, bad_rm);
	printf("ratio colliding/sequential: %.2f per frame, %.2f per OPEN, %.2f per removal\n",
	       bad_ns / seq_ns, bad_open / seq_open, bad_rm / seq_rm);
	free(seq);
	free(bad);
	return 0;
}
