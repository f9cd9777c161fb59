#include "buf.h"
#include "unit.h"

#include <errno.h>
#include <string.h>

static void lazy_alloc_and_release(void)
{
	struct buf b;
	buf_init(&b, 16);
	CU_ASSERT_PTR_NULL(b.data);
	CU_ASSERT_EQUAL(buf_space(&b), 16);
	CU_ASSERT_EQUAL(buf_append(&b, "", 0), 0);
	CU_ASSERT_PTR_NULL(b.data); /* empty append allocates nothing */
	CU_ASSERT_EQUAL(buf_append(&b, "abc", 3), 0);
	CU_ASSERT_PTR_NOT_NULL(b.data);
	buf_consume(&b, 3);
	CU_ASSERT_PTR_NULL(b.data); /* drained: storage returned */
	CU_ASSERT_EQUAL(buf_len(&b), 0);
	buf_release(&b);
}

static void fifo_order_and_compaction(void)
{
	struct buf b;
	size_t n;
	buf_init(&b, 8);
	CU_ASSERT_EQUAL(buf_append(&b, "abcdef", 6), 0);
	buf_consume(&b, 4);
	/* 2 bytes live at offset 4: appending 5 forces a slide to the front. */
	CU_ASSERT_EQUAL(buf_append(&b, "ghijk", 5), 0);
	const uint8_t *p = buf_peek(&b, &n);
	CU_ASSERT_EQUAL(n, 7);
	CU_ASSERT_EQUAL(memcmp(p, "efghijk", 7), 0);
	buf_release(&b);
}

/* A growing buffer's storage follows what is held: a small block for a few
 * bytes, doubling up to the cap, contents kept in order across each growth;
 * a plain one takes its cap at once. */
static void grows_as_needed(void)
{
	struct buf b;
	buf_init_growing(&b, 100000);
	uint8_t chunk[3000];
	CU_ASSERT_EQUAL(buf_append(&b, "x", 1), 0);
	CU_ASSERT_EQUAL(b.size, BUF_MIN);
	buf_consume(&b, 1);
	size_t total = 0;
	for (int i = 0; total + sizeof(chunk) <= 100000; i++) {
		memset(chunk, i, sizeof(chunk));
		CU_ASSERT_EQUAL_FATAL(buf_append(&b, chunk, sizeof(chunk)), 0);
		total += sizeof(chunk);
		CU_ASSERT(b.size >= b.len && b.size <= 100000);
	}
	CU_ASSERT_EQUAL(b.size, 100000); /* capped, not the next power of two */
	CU_ASSERT_EQUAL(buf_append(&b, chunk, sizeof(chunk)), -ENOBUFS);
	size_t n;
	const uint8_t *p = buf_peek(&b, &n);
	CU_ASSERT_EQUAL(n, total);
	for (size_t i = 0; i < n; i += sizeof(chunk))
		CU_ASSERT_EQUAL(p[i], (uint8_t)(i / sizeof(chunk)));
	buf_release(&b);
	CU_ASSERT_EQUAL(b.size, 0);
	buf_init(&b, 100000);
	CU_ASSERT_EQUAL(buf_append(&b, "x", 1), 0);
	CU_ASSERT_EQUAL(b.size, 100000);
	buf_release(&b);
}

static void cap_is_hard(void)
{
	struct buf b;
	size_t n;
	buf_init(&b, 4);
	CU_ASSERT_EQUAL(buf_append(&b, "abc", 3), 0);
	CU_ASSERT_EQUAL(buf_append(&b, "de", 2), -ENOBUFS);
	/* all or nothing: the failed append left the contents alone */
	CU_ASSERT_EQUAL(buf_len(&b), 3);
	CU_ASSERT_EQUAL(buf_append(&b, "d", 1), 0);
	CU_ASSERT_EQUAL(buf_space(&b), 0);
	CU_ASSERT_EQUAL(memcmp(buf_peek(&b, &n), "abcd", 4), 0);
	CU_ASSERT_EQUAL(buf_append(&b, "e", 1), -ENOBUFS);
	buf_release(&b);
}

static void consume_more_than_held(void)
{
	struct buf b;
	size_t n;
	buf_init(&b, 4);
	CU_ASSERT_EQUAL(buf_append(&b, "ab", 2), 0);
	buf_consume(&b, 10);
	CU_ASSERT_EQUAL(buf_len(&b), 0);
	CU_ASSERT_PTR_NULL(buf_peek(&b, &n));
	CU_ASSERT_EQUAL(n, 0);
}

int unit_buf(void)
{
	static const struct unit_test t[] = {
		{ "lazy allocation and release", lazy_alloc_and_release },
		{ "fifo order and compaction", fifo_order_and_compaction },
		{ "cap is hard, append all or nothing", cap_is_hard },
		{ "storage grows as needed, up to the cap", grows_as_needed },
		{ "consume past the end empties", consume_more_than_held },
		{ NULL, NULL },
	};
	return unit_add_suite("buf", t);
}
