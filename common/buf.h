/* A bounded FIFO of bytes. Storage is allocated on first use, grows by
 * doubling (from BUF_MIN) as far as the cap, and is released when the
 * buffer drains: an idle session costs no buffer memory, and a few hundred
 * bytes waiting cost a small block, not the cap. */
#ifndef MUXSHIM_BUF_H
#define MUXSHIM_BUF_H

#include <stddef.h>
#include <stdint.h>

struct buf {
	uint8_t *data;
	size_t cap;   /* hard limit, fixed at init */
	size_t size;  /* allocated now */
	size_t off;   /* first unread byte */
	size_t len;   /* bytes held */
};

#define BUF_MIN 4096

void buf_init(struct buf *b, size_t cap);
void buf_release(struct buf *b);

static inline size_t buf_len(const struct buf *b) { return b->len; }
static inline size_t buf_space(const struct buf *b) { return b->cap - b->len; }

/* Appends all n bytes or nothing: 0, -ENOBUFS past the cap, -ENOMEM. */
int buf_append(struct buf *b, const void *p, size_t n);
/* Contiguous readable bytes at the front. */
const uint8_t *buf_peek(const struct buf *b, size_t *n);
/* Drops n bytes from the front (n <= len); frees storage when empty. */
void buf_consume(struct buf *b, size_t n);

#endif
