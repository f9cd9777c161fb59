#include "usbmuxd/plist_guard.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define BPLIST_HDR     8  /* "bplist00" */
#define BPLIST_TRAILER 32

enum { T_BOOL = 0x0, T_INT = 0x1, T_REAL = 0x2, T_DATE = 0x3, T_DATA = 0x4, T_ASCII = 0x5,
       T_UTF16 = 0x6, T_UID = 0x8, T_ARRAY = 0xA, T_SET = 0xC, T_DICT = 0xD };

enum { WHITE, GREY, BLACK };

/* Per object, once opened: what one copy of it expands to. */
struct obj {
	uint64_t nodes, bytes;
	uint8_t state, type, height;
};

/* One open container on the walk: its object and the next reference. */
struct frame {
	uint32_t idx;
	uint64_t refs_at;   /* offset of its first reference */
	uint64_t nrefs;     /* dict: 2 x entries (keys first, then values) */
	uint64_t nkeys;     /* dict: references below this are keys */
	uint64_t next;
};

struct bplist {
	const uint8_t *p;
	uint64_t len;
	uint64_t table;     /* offset table offset; objects lie before it */
	uint64_t nobjs, root;
	unsigned off_size, ref_size;
	uint64_t max_nodes, max_bytes;
	struct obj *objs;
};

static uint64_t get_be(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static int refuse(struct umx_plist_report *rep, int err, const char *why)
{
	rep->why = why;
	return err;
}

/* Where object idx starts, as libplist finds it (and never in the header). */
static int obj_offset(const struct bplist *b, uint64_t idx, uint64_t *off)
{
	*off = get_be(b->p + b->table + idx * b->off_size, b->off_size);
	return *off >= BPLIST_HDR && *off < b->table ? 0 : -EBADMSG;
}

/* Reads an object's marker (and a following length integer) the way
 * libplist's parse_bin_node does; fills what one copy costs and, for a
 * container, where its references are. */
static int obj_open(struct bplist *b, uint64_t idx, struct frame *f, const char **why)
{
	struct obj *o = &b->objs[idx];
	uint64_t pos;
	*why = "an object offset points outside the object area";
	if (obj_offset(b, idx, &pos) < 0)
		return -EBADMSG;
	uint8_t m = b->p[pos++];
	unsigned type = m >> 4, nib = m & 0xf;
	uint64_t count = nib, room;
	bool sized = type == T_DATA || type == T_ASCII || type == T_UTF16 || type == T_ARRAY ||
		     type == T_SET || type == T_DICT;
	*why = "an object's length runs past the object area";
	if (sized && nib == 0xf) {
		if (pos >= b->table || b->p[pos] >> 4 != T_INT || (b->p[pos] & 0xf) > 3)
			return -EBADMSG;
		unsigned n = 1u << (b->p[pos] & 0xf);
		pos++;
		if (b->table - pos < n)
			return -EBADMSG;
		count = get_be(b->p + pos, n);
		pos += n;
	}
	room = b->table - pos;
	o->type = (uint8_t)type;
	o->nodes = 1;
	o->bytes = 0;
	o->height = 1;
	f->idx = (uint32_t)idx;
	f->nrefs = f->nkeys = f->next = 0;
	f->refs_at = pos;
	switch (type) {
	case T_BOOL:
		*why = "a null or fill object (libplist refuses them)";
		return nib == 8 || nib == 9 ? 0 : -EBADMSG;
	case T_INT:
		return nib <= 4 && room >= (1u << nib) ? 0 : -EBADMSG;
	case T_REAL:
		return (nib == 2 || nib == 3) && room >= (1u << nib) ? 0 : -EBADMSG;
	case T_DATE:
		return nib == 3 && room >= 8 ? 0 : -EBADMSG;
	case T_UID:
		return room >= nib + 1u ? 0 : -EBADMSG;
	case T_DATA:
	case T_ASCII:
		if (count > room)
			return -EBADMSG;
		o->bytes = type == T_ASCII ? count + 1 : count;
		return 0;
	case T_UTF16:
		/* libplist allocates 4 bytes per UTF-16 unit, plus one. */
		if (count == 0 || count > room / 2)
			return -EBADMSG;
		/* U+0000 survives into libplist's UTF-8 and makes its string and
		 * key getters abort (an ASCII string is cut at a NUL instead). */
		*why = "a NUL inside a string";
		for (uint64_t i = 0; i < count; i++)
			if (b->p[pos + 2 * i] == 0 && b->p[pos + 2 * i + 1] == 0)
				return -EBADMSG;
		o->bytes = 4 * (count + 1);
		return 0;
	case T_ARRAY:
	case T_SET:
		if (count > room / b->ref_size)
			return -EBADMSG;
		f->nrefs = count;
		return 0;
	case T_DICT:
		if (count > room / b->ref_size / 2)
			return -EBADMSG;
		f->nrefs = 2 * count;
		f->nkeys = count;
		return 0;
	default:
		*why = "an object of unknown type";
		return -EBADMSG;
	}
}

/* Adds one copy of child to its parent's totals; refuses as soon as any
 * object's expansion passes the bounds (the root's is at least as large). */
static int account(struct bplist *b, struct obj *parent, const struct obj *child,
		   unsigned depth, const char **why)
{
	parent->nodes = sat_add(parent->nodes, child->nodes);
	parent->bytes = sat_add(parent->bytes, child->bytes);
	if (child->height + 1u > parent->height)
		parent->height = (uint8_t)(child->height + 1);
	if (depth + child->height > UMX_PLIST_MAX_DEPTH) {
		*why = "nested deeper than the limit";
		return -ELOOP;
	}
	if (parent->nodes > b->max_nodes) {
		*why = "shared objects expand to more nodes than the body has bytes";
		return -E2BIG;
	}
	if (parent->bytes > b->max_bytes) {
		*why = "shared strings or data expand beyond the byte bound";
		return -E2BIG;
	}
	return 0;
}

/* Depth-first from the top object with an explicit stack of at most
 * UMX_PLIST_MAX_DEPTH frames; each object is opened once (grey while on the
 * stack: meeting it again is a cycle), then reused from its totals. */
static int walk(struct bplist *b, struct umx_plist_report *rep)
{
	struct frame stack[UMX_PLIST_MAX_DEPTH];
	unsigned sp = 0;
	const char *why = NULL;
	int rc = obj_open(b, b->root, &stack[0], &why);
	if (rc < 0)
		return refuse(rep, rc, why);
	b->objs[b->root].state = GREY;
	sp = 1;
	while (sp) {
		struct frame *f = &stack[sp - 1];
		struct obj *o = &b->objs[f->idx];
		if (f->next == f->nrefs) {
			o->state = BLACK;
			if (--sp && (rc = account(b, &b->objs[stack[sp - 1].idx], o, sp, &why)) < 0)
				return refuse(rep, rc, why);
			continue;
		}
		bool is_key = f->next < f->nkeys;
		uint64_t child = get_be(b->p + f->refs_at + f->next * b->ref_size, b->ref_size);
		f->next++;
		if (child >= b->nobjs)
			return refuse(rep, -EBADMSG, "a reference to an object that does not exist");
		struct obj *c = &b->objs[child];
		if (c->state == GREY)
			return refuse(rep, -ELOOP, "a container that contains itself");
		if (c->state == WHITE) {
			if (sp == UMX_PLIST_MAX_DEPTH)
				return refuse(rep, -ELOOP, "nested deeper than the limit");
			if ((rc = obj_open(b, child, &stack[sp], &why)) < 0)
				return refuse(rep, rc, why);
			c->state = GREY;
			sp++;
		} else if ((rc = account(b, o, c, sp, &why)) < 0) {
			return refuse(rep, rc, why);
		}
		/* libplist refuses a dict whose key is not a string. */
		if (is_key && c->type != T_ASCII && c->type != T_UTF16)
			return refuse(rep, -EBADMSG, "a dict key that is not a string");
	}
	const struct obj *r = &b->objs[b->root];
	rep->nodes = r->nodes;
	rep->bytes = r->bytes;
	rep->depth = r->height;
	return 0;
}

static int check_binary(const uint8_t *p, size_t len, struct umx_plist_report *rep)
{
	struct bplist b = { .p = p, .len = len };
	if (len < BPLIST_HDR + BPLIST_TRAILER)
		return refuse(rep, -EBADMSG, "too short for a binary plist");
	const uint8_t *t = p + len - BPLIST_TRAILER;
	b.off_size = t[6];
	b.ref_size = t[7];
	b.nobjs = get_be(t + 8, 8);
	b.root = get_be(t + 16, 8);
	b.table = get_be(t + 24, 8);
	uint64_t table_end = len - BPLIST_TRAILER;
	if (b.off_size < 1 || b.off_size > 8 || b.ref_size < 1 || b.ref_size > 8)
		return refuse(rep, -EBADMSG, "offset or reference size not 1 to 8 bytes");
	if (b.table < BPLIST_HDR || b.table >= table_end)
		return refuse(rep, -EBADMSG, "the offset table lies outside the body");
	if (b.nobjs == 0 || b.nobjs > (table_end - b.table) / b.off_size)
		return refuse(rep, -EBADMSG, "the object count does not fit the offset table");
	if (b.root >= b.nobjs)
		return refuse(rep, -EBADMSG, "the top object does not exist");
	b.max_nodes = len;
	b.max_bytes = (uint64_t)len * UMX_PLIST_BYTES_FACTOR;
	/* nobjs <= len here, so this is at most 24 bytes per body byte. */
	b.objs = calloc((size_t)b.nobjs, sizeof(*b.objs));
	if (!b.objs)
		return refuse(rep, -ENOMEM, "out of memory");
	int rc = walk(&b, rep);
	free(b.objs);
	return rc;
}

/* Does p (n bytes left) start a tag named name, as libplist 2.2 ends a tag
 * name (at whitespace, '<', '>' or a trailing '/')? */
static bool tag_at(const uint8_t *p, size_t n, const char *name)
{
	size_t k = strlen(name);
	if (n < k + 2 || p[0] != '<' || memcmp(p + 1, name, k) != 0)
		return false;
	uint8_t c = p[k + 1];
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '<' || c == '>' || c == '/';
}

/* Upper bounds by counting, with no tokenizer to disagree with libplist's:
 * every container or key libplist sees starts with one of these tags. */
static int check_xml(const uint8_t *p, size_t len, struct umx_plist_report *rep)
{
	size_t end = len, containers = 0, keys = 0, tags = 0;
	/* A C string's terminator after the document is harmless; libplist
	 * stops at the end of the top element. */
	while (end && p[end - 1] == 0)
		end--;
	if (end == 0)
		return 0; /* nothing for libplist to build (and p may be NULL) */
	if (memchr(p, 0, end))
		return refuse(rep, -EBADMSG, "a NUL byte inside an XML plist");
	for (const uint8_t *q = memchr(p, '<', end); q; q = memchr(q + 1, '<', end - (size_t)(q + 1 - p))) {
		size_t n = end - (size_t)(q - p);
		tags++;
		if (tag_at(q, n, "dict") || tag_at(q, n, "array"))
			containers++;
		else if (tag_at(q, n, "key"))
			keys++;
	}
	rep->nodes = tags;
	rep->depth = (unsigned)(containers > UINT32_MAX ? UINT32_MAX : containers);
	if (containers > UMX_PLIST_XML_MAX_CONTAINERS)
		return refuse(rep, -E2BIG, "more dict and array tags than the limit");
	if (keys > UMX_PLIST_XML_MAX_KEYS)
		return refuse(rep, -E2BIG, "more keys than the limit");
	return 0;
}

int umx_plist_check(const uint8_t *body, size_t len, struct umx_plist_report *rep)
{
	struct umx_plist_report dummy;
	if (!rep)
		rep = &dummy;
	memset(rep, 0, sizeof(*rep));
	if (len > UMX_PLIST_MAX_BODY)
		return refuse(rep, -EMSGSIZE, "longer than any plist accepted");
	/* The same test as libplist's plist_from_memory. */
	if (len >= BPLIST_HDR && memcmp(body, "bplist00", BPLIST_HDR) == 0)
		return check_binary(body, len, rep);
	return check_xml(body, len, rep);
}
