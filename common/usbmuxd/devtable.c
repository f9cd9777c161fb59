#include "usbmuxd/devtable.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void umx_table_init(struct umx_table *t)
{
	memset(t, 0, sizeof(*t));
	t->next_remap = UMX_REMAP_BASE;
}

void umx_table_free(struct umx_table *t)
{
	uint64_t gen = t->gen;
	for (size_t i = 0; i < t->n; i++)
		umx_device_free(&t->e[i].dev);
	free(t->e);
	umx_table_init(t);
	t->gen = gen + 1;
}

const struct umx_entry *umx_table_find(const struct umx_table *t, uint32_t id)
{
	for (size_t i = 0; i < t->n; i++)
		if (t->e[i].dev.id == id)
			return &t->e[i];
	return NULL;
}

const struct umx_entry *umx_table_find_up(const struct umx_table *t, unsigned upstream,
					  uint32_t up_id)
{
	for (size_t i = 0; i < t->n; i++)
		if (t->e[i].upstream == upstream && t->e[i].up_id == up_id)
			return &t->e[i];
	return NULL;
}

const struct umx_entry *umx_table_find_serial(const struct umx_table *t, const char *serial)
{
	for (size_t i = 0; i < t->n; i++)
		if (strcasecmp(t->e[i].dev.serial, serial) == 0)
			return &t->e[i];
	return NULL;
}

/* A client-side ID for a new entry: the upstream's own when free. The remap
 * range is searched from where it left off; with at most UMX_TABLE_MAX
 * entries a free ID is always found within that many steps. */
static uint32_t pick_id(struct umx_table *t, uint32_t up_id)
{
	if (up_id != 0 && up_id < UMX_REMAP_BASE && !umx_table_find(t, up_id))
		return up_id;
	for (;;) {
		uint32_t id = t->next_remap++;
		if (t->next_remap == 0)
			t->next_remap = UMX_REMAP_BASE;
		if (!umx_table_find(t, id))
			return id;
	}
}

int umx_table_attach(struct umx_table *t, unsigned upstream, const struct umx_device *dev,
		     const struct umx_entry **out)
{
	struct umx_device copy;
	int rc = umx_device_copy(&copy, dev);
	if (rc < 0)
		return rc;
	struct umx_entry *e = (struct umx_entry *)umx_table_find_up(t, upstream, dev->id);
	if (e) {
		copy.id = e->dev.id;
		umx_device_free(&e->dev);
		e->dev = copy;
		t->gen++;
		*out = e;
		return 0;
	}
	if (t->n == UMX_TABLE_MAX) {
		umx_device_free(&copy);
		return -ENOSPC;
	}
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 8;
		struct umx_entry *ne = realloc(t->e, cap * sizeof(*ne));
		if (!ne) {
			umx_device_free(&copy);
			return -ENOMEM;
		}
		t->e = ne;
		t->cap = cap;
	}
	e = &t->e[t->n];
	copy.id = pick_id(t, dev->id);
	*e = (struct umx_entry){ .upstream = upstream, .up_id = dev->id, .dev = copy };
	t->n++;
	t->gen++;
	*out = e;
	return 0;
}

static void remove_at(struct umx_table *t, size_t i)
{
	umx_device_free(&t->e[i].dev);
	memmove(&t->e[i], &t->e[i + 1], (t->n - i - 1) * sizeof(t->e[0]));
	t->n--;
	t->gen++;
}

int umx_table_detach(struct umx_table *t, unsigned upstream, uint32_t up_id, uint32_t *id)
{
	for (size_t i = 0; i < t->n; i++) {
		if (t->e[i].upstream == upstream && t->e[i].up_id == up_id) {
			*id = t->e[i].dev.id;
			remove_at(t, i);
			return 0;
		}
	}
	return -ENOENT;
}

size_t umx_table_detach_upstream(struct umx_table *t, unsigned upstream, uint32_t *ids,
				 size_t cap)
{
	size_t removed = 0;
	for (size_t i = 0; i < t->n;) {
		if (t->e[i].upstream != upstream) {
			i++;
			continue;
		}
		if (removed < cap)
			ids[removed] = t->e[i].dev.id;
		removed++;
		remove_at(t, i);
	}
	return removed;
}

void umx_filter_init(struct umx_filter *f)
{
	f->conn = UMX_CONN_ANY;
	f->n = 0;
}

static bool udid_char(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       c == '-';
}

int umx_filter_add_list(struct umx_filter *f, const char *list)
{
	size_t n = f->n;
	const char *p = list;
	for (;;) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		if (len == 0 || len > UMX_SERIAL_MAX)
			return -EINVAL;
		for (size_t i = 0; i < len; i++)
			if (!udid_char(p[i]))
				return -EINVAL;
		if (n == UMX_FILTER_MAX)
			return -ENOSPC;
		memcpy(f->udid[n], p, len);
		f->udid[n][len] = 0;
		n++;
		if (!end)
			break;
		p = end + 1;
	}
	f->n = n; /* only now: a bad list changes nothing */
	return 0;
}

int umx_filter_set_conn(struct umx_filter *f, const char *name)
{
	if (strcmp(name, "any") == 0)
		f->conn = UMX_CONN_ANY;
	else if (strcmp(name, "usb") == 0)
		f->conn = UMX_CONN_USB;
	else if (strcmp(name, "network") == 0)
		f->conn = UMX_CONN_NETWORK;
	else
		return -EINVAL;
	return 0;
}

/* UDIDs are hex (and a dash): compared without regard to case. */
bool umx_filter_allows_udid(const struct umx_filter *f, const char *udid)
{
	if (f->n == 0)
		return true;
	for (size_t i = 0; i < f->n; i++)
		if (strcasecmp(f->udid[i], udid) == 0)
			return true;
	return false;
}

bool umx_filter_allows(const struct umx_filter *f, const struct umx_device *d)
{
	if ((f->conn == UMX_CONN_USB && d->network) || (f->conn == UMX_CONN_NETWORK && !d->network))
		return false;
	return umx_filter_allows_udid(f, d->serial);
}
