/* The helper's tenants file (--tenants FILE, docs/deploy-tunnel.md#tenants):
 * which token is which tenant, and which devices each may reach.
 *
 *   # NAME      TOKEN_FILE          DEVICES
 *   team-a      /etc/muxshim/a.key  00008030-001A2B3C4D5E6F70,00008101-0011223344556677
 *   ci          ci.key              *
 *
 * One tenant a line, three fields separated by blanks; `#` starts a comment
 * (a whole line or the rest of one). NAME: 1 to TENANT_NAME_MAX letters,
 * digits, '.', '_' or '-'. TOKEN_FILE: a path without blanks, relative to
 * the tenants file's directory unless absolute; its token must pass the same
 * strength rule as --token-file. DEVICES: `*` (every device) or UDIDs
 * separated by commas (the characters --device allows). Names and tokens
 * must be unique.
 *
 * Pure: text in, tenants out; token files are read through the caller's
 * reader, so the parser can be tested and fuzzed without files. */
#ifndef MUXSHIM_HELPER_TENANTS_H
#define MUXSHIM_HELPER_TENANTS_H

#include "tunnel/link.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TENANT_NAME_MAX    32
#define TENANTS_MAX        256
#define TENANT_DEVICES_MAX 256
#define TENANT_UDID_MAX    255
#define TENANTS_FILE_MAX   (1024 * 1024)  /* a longer file is refused */

struct tenant_def {
	char name[TENANT_NAME_MAX + 1];
	uint8_t token[LINK_TOKEN_MAX];
	size_t token_len;
	bool all;                 /* DEVICES `*` */
	size_t ndevices;
	char (*devices)[TENANT_UDID_MAX + 1]; /* owned */
	unsigned line;
};

struct tenant_list {
	struct tenant_def *t;     /* owned, in file order */
	size_t n;
};

/* Reads the token file at path: 0 and the token in out/len, or a negative
 * errno (-EINVAL: empty or longer than cap). daemon_read_token fits. */
typedef int (*tenant_token_reader)(void *ctx, const char *path, uint8_t *out, size_t cap,
				   size_t *len);

/* Parses a whole tenants file. base_dir ("" for none) is prefixed to
 * relative token paths. 0 and *out filled (an empty file is no tenants:
 * the caller decides), or -EINVAL / -ENOMEM with one sentence in err that
 * names the line ("line 3: ..."); *out is untouched on error. */
int tenants_parse(const char *text, size_t len, const char *base_dir, tenant_token_reader rd,
		  void *ctx, struct tenant_list *out, char *err, size_t errlen);
void tenants_free(struct tenant_list *l);
/* Frees one tenant's device list and wipes its token. */
void tenant_def_free(struct tenant_def *t);
const struct tenant_def *tenants_find(const struct tenant_list *l, const char *name);
/* May tenant t reach the device with this UDID (case-insensitive)? */
bool tenant_allows(const struct tenant_def *t, const char *udid);
/* A tenant without a file (--serve): name and DEVICES (`*` or UDIDs
 * separated by commas) into *t, no token. 0, or -EINVAL / -ENOMEM with why
 * in err. */
int tenant_def_devices(struct tenant_def *t, const char *name, const char *list, char *err,
		       size_t errlen);
/* The directory part of path ("" if none), for tenants_parse's base_dir. */
void tenants_dir_of(const char *path, char *out, size_t cap);

#endif
