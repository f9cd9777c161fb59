/* One Listen subscription to a usbmuxd and the device table it keeps: the
 * I/O the shim's broker and the helper's gate share (the codec under it,
 * proto.c and devtable.c, is pure).
 *
 * On one connection: ReadBUID, ListDevices and Listen, pipelined. The list
 * fills the table (the subscription is then live); Listen's events keep it.
 * When the connection ends, a live table's devices are reported detached
 * and the next attempt follows a jittered backoff (100 ms doubling to 5 s,
 * back to 100 ms once live). Requests that need the table wait
 * (umx_sub_should_park) while a first attempt, or the first after a loss,
 * is on its way; once an attempt fails, or the list does not come within
 * 10 s, the (empty) table is the answer. */
#ifndef MUXSHIM_USBMUXD_SUB_H
#define MUXSHIM_USBMUXD_SUB_H

#include "buf.h"
#include "log.h"
#include "loop.h"
#include "usbmuxd/devtable.h"

#include <stdbool.h>
#include <stdint.h>

enum umx_sub_state { UMX_SUB_IDLE, UMX_SUB_SYNCING, UMX_SUB_LIVE };
enum umx_sub_ev { UMX_SUB_ATTACHED, UMX_SUB_DETACHED, UMX_SUB_PAIRED };

struct umx_sub_ops {
	/* A connection for the next attempt: 0 when connected, -EINPROGRESS
	 * while connecting (both with *fd), else a negative errno. */
	int (*connect)(void *ctx, int *fd);
	/* A device came (in the table now), goes (still in it) or paired. */
	void (*device)(void *ctx, enum umx_sub_ev ev, const struct umx_device *d);
	/* Live, lost, or done waiting: requests parked for the table may
	 * look again. */
	void (*changed)(void *ctx);
};

struct umx_sub_config {
	const char *who;   /* log prefix: "broker", "gate" */
	const char *peer;  /* in log lines: "the upstream", "usbmuxd" */
	const char *prog;  /* the requests' ProgName and ClientVersionString */
	/* After a loss, answer from the table at once instead of waiting for
	 * the next attempt (a broker of several upstreams: the others' devices
	 * are the answer, the lost one's are reported detached). */
	bool no_wait_after_loss;
};

struct umx_sub {
	struct umx_sub_config cfg;
	const struct umx_sub_ops *ops;
	void *ctx;
	struct loop *loop;
	enum umx_sub_state state;
	bool settled_empty;    /* answer from the table rather than wait */
	bool connected;        /* the connect is done; reading */
	unsigned backoff_ms;
	struct loop_watch w;
	struct buf out, in;
	struct loop_timer retry, sync;
	struct umx_table table;
	char buid[UMX_SERIAL_MAX + 1];
	bool buid_known;
	uint64_t subscribes, losses;
	struct log_ratelimit rl;
	uint8_t scratch[16 * 1024];
};

/* Starts the first attempt. */
void umx_sub_start(struct umx_sub *s, struct loop *loop, const struct umx_sub_config *cfg,
		   const struct umx_sub_ops *ops, void *ctx);
/* Closes the connection and frees the table (no events). */
void umx_sub_stop(struct umx_sub *s);
/* The way to the peer is back (a tunnel came up): if the subscription
 * is between attempts, attempt now, with the backoff reset. */
void umx_sub_kick(struct umx_sub *s);
/* A request that needs the table should wait for it now. */
bool umx_sub_should_park(const struct umx_sub *s);

#endif
