#include "buf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void buf_init(struct buf *b, size_t cap)
{
	b->data = NULL;
	b->cap = cap;
	b->size = 0;
	b->grow = false;
	b->off = 0;
	b->len = 0;
}

void buf_init_growing(struct buf *b, size_t cap)
{
	buf_init(b, cap);
	b->grow = true;
}

void buf_release(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->size = 0;
	b->off = 0;
	b->len = 0;
}

uint8_t *buf_tail(struct buf *b, size_t n)
{
	if (n > b->cap - b->len)
		return NULL;
	if (b->len + n > b->size) {
		size_t size = b->cap;
		if (b->grow) {
			size = b->size ? b->size : BUF_MIN;
			while (size < b->len + n)
				size *= 2;
			if (size > b->cap)
				size = b->cap;
		}
		uint8_t *d = malloc(size ? size : 1);
		if (!d)
			return NULL;
		if (b->len)
			memcpy(d, b->data + b->off, b->len);
		free(b->data);
		b->data = d;
		b->size = size;
		b->off = 0;
	} else if (b->off + b->len + n > b->size) {
		/* Not enough room at the tail: slide the live bytes down. */
		memmove(b->data, b->data + b->off, b->len);
		b->off = 0;
	}
	return b->data + b->off + b->len;
}

void buf_commit(struct buf *b, size_t n)
{
	b->len += n;
	if (b->len == 0)
		buf_release(b); /* nothing came: an idle buffer holds no memory */
}

int buf_append(struct buf *b, const void *p, size_t n)
{
	if (n > b->cap - b->len)
		return -ENOBUFS;
	if (n == 0)
		return 0;
	uint8_t *t = buf_tail(b, n);
	if (!t)
		return -ENOMEM;
	memcpy(t, p, n);
	b->len += n;
	return 0;
}

const uint8_t *buf_peek(const struct buf *b, size_t *n)
{
	*n = b->len;
	return b->len ? b->data + b->off : NULL;
}

void buf_consume(struct buf *b, size_t n)
{
	if (n >= b->len) {
		buf_release(b);
		return;
	}
	b->off += n;
	b->len -= n;
}
