/* libFuzzer target: bytes arriving on the helper's tunnel port. The first
 * 36 bytes are the shim's hello; then frames are decoded one by one and fed
 * to a helper-side mux, which accepts streams, consumes and resets them the
 * way the daemon would, until a violation ends the tunnel. */
#include "tunnel/codec.h"
#include "tunnel/mux.h"

#include <stdlib.h>
#include <string.h>

#define MAX_STREAMS 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tun_hello peer, local = { .version = TUN_VERSION, .role = TUN_ROLE_HELPER,
					 .max_frame = 4096, .window = 8192,
					 .max_streams = MAX_STREAMS };
	if (size < TUN_HELLO_LEN || tun_hello_decode(data, TUN_ROLE_SHIM, &peer) < 0)
		return 0;
	data += TUN_HELLO_LEN;
	size -= TUN_HELLO_LEN;

	struct tun_mux m;
	if (tun_mux_init(&m, TUN_ROLE_HELPER, &local, &peer) < 0)
		return 0;
	struct tun_stream *streams[MAX_STREAMS] = { 0 };
	for (;;) {
		struct tun_frame f;
		struct tun_event ev;
		const char *why;
		long n = tun_frame_decode(data, size, local.max_frame, &f);
		if (n <= 0)
			break;
		if (f.payload && f.len && (f.payload < data || f.payload + f.len > data + size))
			abort(); /* the decoder pointed outside its input */
		data += n;
		size -= (size_t)n;
		if (tun_mux_input(&m, &f, &ev, &why) != 0)
			break;
		if (ev.kind == TE_OPEN) {
			for (int i = 0; i < MAX_STREAMS; i++) {
				if (!streams[i]) {
					streams[i] = malloc(sizeof(*streams[i]));
					if (!streams[i])
						abort();
					tun_mux_accept(&m, streams[i], &ev, NULL);
					break;
				}
			}
		} else if (ev.kind == TE_DATA) {
			tun_stream_consumed(&m, ev.stream, (uint32_t)ev.len);
			uint32_t can = tun_stream_sendable(&m, ev.stream);
			tun_stream_sent(ev.stream, can / 2, ev.fin);
		}
		/* Tear down what a daemon would: reset or finished both ways. */
		for (int i = 0; i < MAX_STREAMS; i++) {
			struct tun_stream *s = streams[i];
			if (s && (s->reset || (s->fin_recvd && s->fin_sent))) {
				tun_mux_remove(&m, s);
				free(s);
				streams[i] = NULL;
			}
		}
	}
	if (tun_mux_count(&m) > MAX_STREAMS)
		abort();
	for (int i = 0; i < MAX_STREAMS; i++) {
		if (streams[i]) {
			tun_mux_remove(&m, streams[i]);
			free(streams[i]);
		}
	}
	if (tun_mux_count(&m) != 0)
		abort();
	tun_mux_free(&m);
	return 0;
}
