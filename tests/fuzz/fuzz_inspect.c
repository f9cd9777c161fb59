/* libFuzzer target: the usbmuxd request inspector. The input is cut into
 * chunks, each prefixed by one control byte that says which direction it is
 * (client or usbmuxd) and how long it is, so that framing across arbitrary
 * chunk boundaries and both directions interleaved are explored. */
#include "inspect.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned events;
/* As in the shim: one memo across every session (inputs here). */
static struct umx_memo memo;

static void count(void *ctx, const struct insp_event *ev)
{
	(void)ctx;
	if (ev->kind == INSP_EV_REQUEST && ev->type >= UMX_REQ_NTYPES)
		abort();
	events++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct inspector in;
	insp_init(&in, count, NULL);
	in.memo = &memo;
	while (size) {
		uint8_t ctl = data[0];
		data++;
		size--;
		size_t n = (size_t)(ctl & 0x7f) * 8 + 1;
		if (n > size)
			n = size;
		if (ctl & 0x80)
			insp_upstream_bytes(&in, data, n);
		else
			insp_client_bytes(&in, data, n);
		data += n;
		size -= n;
	}
	insp_free(&in);
	return 0;
}
