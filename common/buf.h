/* A bounded FIFO of bytes. Storage is allocated on first use and released
 * when the buffer drains, so an idle session costs no buffer memory. The
 * relay's buffers take their whole cap at once (one allocation per fill:
 * bulk streams fill them again and again); a growing buffer starts at
 * BUF_MIN and doubles as far as its cap, for queues whose cap is far above
 * what they usually hold (the broker's replies and events). */
#ifndef MUXSHIM_BUF_H
#define MUXSHIM_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf {
	uint8_t *data;
	size_t cap;   /* hard limit, fixed at init */
	size_t size;  /* allocated now */
	bool grow;    /* buf_init_growing */
	size_t off;   /* first unread byte */
	size_t len;   /* bytes held */
};

#define BUF_MIN 4096

void buf_init(struct buf *b, size_t cap);
void buf_init_growing(struct buf *b, size_t cap);
void buf_release(struct buf *b);

static inline size_t buf_len(const struct buf *b) { return b->len; }
static inline size_t buf_space(const struct buf *b) { return b->cap - b->len; }

/* Appends all n bytes or nothing: 0, -ENOBUFS past the cap, -ENOMEM. */
int buf_append(struct buf *b, const void *p, size_t n);
/* n contiguous writable bytes at the back, to fill in place (a read, a
 * decryption) and then keep with buf_commit: NULL if n exceeds the space
 * left (or memory is short). */
uint8_t *buf_tail(struct buf *b, size_t n);
/* Keeps n (<= what buf_tail was asked for) bytes written at the back. */
void buf_commit(struct buf *b, size_t n);
/* Contiguous readable bytes at the front. */
const uint8_t *buf_peek(const struct buf *b, size_t *n);
/* Drops n bytes from the front (n <= len); frees storage when empty. */
void buf_consume(struct buf *b, size_t n);

#endif
