/* libFuzzer target: the plist guard (common/usbmuxd/plist_guard.c). The
 * input is a plist body. Whatever the guard accepts is then parsed by
 * libplist itself, so a guard that lets an amplifying plist through blows
 * the memory limit fuzz-smoke sets (-rss_limit_mb, -malloc_limit_mb); and
 * for a binary plist libplist parses, the tree it built must have exactly
 * the node count the guard computed (an XML one at most as many). */
#include "usbmuxd/plist_guard.h"

#include <plist/plist.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Recursion is fine here: the guard bounds the depth of what gets this far. */
static uint64_t count_nodes(plist_t n)
{
	uint64_t total = 1;
	plist_type t = plist_get_node_type(n);
	if (t == PLIST_ARRAY) {
		for (uint32_t i = 0; i < plist_array_get_size(n); i++)
			total += count_nodes(plist_array_get_item(n, i));
	} else if (t == PLIST_DICT) {
		plist_dict_iter it = NULL;
		plist_dict_new_iter(n, &it);
		for (;;) {
			char *key = NULL;
			plist_t v = NULL;
			plist_dict_next_item(n, it, &key, &v);
			if (!v)
				break;
			free(key);
			total += 1 + count_nodes(v); /* the key is a node too */
		}
		free(it);
	}
	return total;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct umx_plist_report rep;
	int rc = umx_plist_check(data, size, &rep);
	if (rc < 0) {
		if (!rep.why)
			abort(); /* every refusal says why */
		return 0;
	}
	plist_t p = NULL;
	plist_from_memory((const char *)data, (uint32_t)size, &p);
	if (!p)
		return 0;
	uint64_t nodes = count_nodes(p);
	bool binary = size >= 8 && memcmp(data, "bplist00", 8) == 0;
	if (binary ? nodes != rep.nodes : nodes > rep.nodes)
		abort();
	plist_free(p);
	return 0;
}
