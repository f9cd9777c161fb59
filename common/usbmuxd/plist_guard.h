/* Bounds what parsing an untrusted plist body with libplist 2.2 can cost,
 * before libplist sees it (docs/SECURITY.md, "Amplifying plists").
 *
 * libplist's binary parser builds a fresh copy of an object for every
 * reference to it, so a few KiB whose containers share each other's objects
 * expand to millions of nodes. This check walks the object graph of a
 * bplist00 body the way libplist would (same header, trailer, offset and
 * object rules, stricter where cheaper), with an explicit stack and memoised
 * per-object totals, and refuses a body whose fully expanded tree would
 * exceed a bound proportional to its size:
 *   - nodes <= body length: without shared containers every node but the
 *     root is one reference of at least one byte, so every plist a real
 *     writer produces (libplist and CoreFoundation share only leaves:
 *     strings, numbers, data) passes; a shared container gets no more
 *     nodes than writing it out would have cost in bytes;
 *   - payload bytes (strings, data) <= UMX_PLIST_BYTES_FACTOR x body length:
 *     sharing short keys is normal, sharing long strings thousands of
 *     times is not;
 *   - depth <= UMX_PLIST_MAX_DEPTH and no cycles (libplist recurses per
 *     level and searches its path at every node);
 *   - no U+0000 in a UTF-16 string (libplist keeps it, and its string and
 *     key getters then abort the process).
 * XML bodies: libplist 2.2's XML parser is iterative, knows only the five
 * predefined entities and numeric references (no entity declarations: no
 * expansion), and every node costs at least 7 bytes ("<true/>"), so memory
 * is linear. What it can do is bounded here by cheap upper-bound counts:
 * container tags (hence depth), <key> tags (a dict's key lookup is linear up
 * to 500 entries, then a 4096-bucket djb2 table that colliding keys defeat:
 * 2,561 colliding keys cost 39 ms), and NUL bytes inside the document
 * (libplist keeps them inside strings and then aborts in
 * plist_get_string_val, which usbmuxd 1.1.1 calls on MessageType).
 *
 * Pure: bytes in, verdict out; the only allocation is one per-object table
 * for binary bodies (at most 24 bytes per object), freed before returning. */
#ifndef MUXSHIM_USBMUXD_PLIST_GUARD_H
#define MUXSHIM_USBMUXD_PLIST_GUARD_H

#include <stddef.h>
#include <stdint.h>

#define UMX_PLIST_MAX_DEPTH      32      /* containers nested, root = 1 */
#define UMX_PLIST_BYTES_FACTOR   16      /* payload bytes per body byte */
#define UMX_PLIST_XML_MAX_CONTAINERS 64  /* <dict>/<array> tags in an XML body */
#define UMX_PLIST_XML_MAX_KEYS   512     /* <key> tags in an XML body */
#define UMX_PLIST_MAX_BODY       (16u * 1024 * 1024) /* larger is refused outright */

struct umx_plist_report {
	const char *why;  /* refusal: one phrase; NULL when accepted */
	uint64_t nodes;   /* expanded nodes (saturating; XML: an upper bound) */
	uint64_t bytes;   /* expanded payload bytes (binary only) */
	unsigned depth;   /* deepest nesting seen (binary; XML: containers) */
};

/* 0 when libplist may parse body within the bounds above, otherwise
 * -EBADMSG (malformed: libplist would reject it too, or it breaks a rule the
 * check keeps stricter), -ELOOP (a cycle or nesting beyond the depth bound),
 * -E2BIG (expands beyond the bounds), -EMSGSIZE (longer than
 * UMX_PLIST_MAX_BODY) or -ENOMEM. rep may be NULL. */
int umx_plist_check(const uint8_t *body, size_t len, struct umx_plist_report *rep);

#endif
