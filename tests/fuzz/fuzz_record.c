/* libFuzzer target: the encrypted record layer (common/tunnel/record.c).
 *
 * Input: ctl, then plaintext chunks, then an optional 0xff marker and edits.
 *   ctl bit 0:    raw mode: everything after ctl is fed to the receiver as
 *                 it arrived from the network (garbage, truncated records);
 *   ctl bits 1-2: both sides change keys every 1, 2, 4 or (3) the default
 *                 number of records;
 *   ctl bits 3-7: the receiver gets the stream in reads of 1 + this many
 *                 bytes times 37 (record boundaries fall anywhere).
 *   chunk:        a length byte L (not 0xff), then L + 1 plaintext bytes
 *                 (fewer if the input ends), sealed in order by a shim;
 *   edits:        after 0xff, groups of (u16 position, u8 xor) applied to
 *                 the sealed stream.
 * The invariant: the helper opens exactly the records it was sent, in order,
 * and stops at the first changed one; a changed record is never accepted. */
#include "tunnel/record.h"

#include <stdlib.h>
#include <string.h>

static void check(int ok)
{
	if (!ok)
		abort();
}

static uint8_t stream[1 << 16];
static uint8_t sealed[1 << 16];
static uint8_t touched[1 << 16];
static uint8_t plain[TUN_REC_MAX];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t ctl = data[0];
	data++;
	size--;
	static const uint8_t token[] = "fuzz token", sn[TUN_NONCE_LEN] = { 1 },
			     hn[TUN_NONCE_LEN] = { 2 };
	struct tun_rec shim, helper;
	check(tun_rec_init(&shim, TUN_ROLE_SHIM, token, sizeof(token) - 1, sn, hn) == 0);
	check(tun_rec_init(&helper, TUN_ROLE_HELPER, token, sizeof(token) - 1, sn, hn) == 0);
	unsigned rk = (ctl >> 1) & 3;
	if (rk != 3)
		shim.tx.rekey_every = helper.rx.rekey_every = 1ull << rk;
	size_t step = 1 + (size_t)(ctl >> 3) * 37;

	/* Where each sealed record starts and what it carried. */
	enum { MAXREC = 512 };
	static size_t rec_off[MAXREC + 1];
	static const uint8_t *rec_plain[MAXREC];
	static size_t rec_len[MAXREC];
	size_t nrec = 0, len = 0;
	if (ctl & 1) {
		if (size > sizeof(stream))
			size = sizeof(stream);
		memcpy(stream, data, size);
		len = size;
	} else {
		size_t i = 0;
		while (i < size && data[i] != 0xff && nrec < MAXREC) {
			size_t n = (size_t)data[i] + 1;
			i++;
			if (n > size - i)
				n = size - i;
			if (n == 0 || len + n + TUN_REC_OVERHEAD > sizeof(stream))
				break;
			rec_off[nrec] = len;
			rec_plain[nrec] = data + i;
			rec_len[nrec] = n;
			long w = tun_rec_seal(&shim.tx, data + i, n, stream + len);
			check(w == (long)(n + TUN_REC_OVERHEAD));
			len += (size_t)w;
			nrec++;
			i += n;
		}
		rec_off[nrec] = len;
		memcpy(sealed, stream, len);
		if (i < size && data[i] == 0xff && len) {
			for (i++; i + 3 <= size; i += 3)
				stream[((size_t)data[i] << 8 | data[i + 1]) % len] ^= data[i + 2];
		}
		/* Two edits of one byte may cancel out: compare, not count. */
		for (size_t k = 0; k < len; k++)
			touched[k] = stream[k] != sealed[k];
	}

	/* The receiver: bytes arrive step at a time; every whole record is
	 * opened as soon as it is there, as link.c does. */
	size_t have = 0, at = 0, opened = 0;
	long rc = 0;
	while (rc >= 0 && at < len) {
		have = have + step < len ? have + step : len;
		for (;;) {
			size_t got = 0;
			rc = tun_rec_open(&helper.rx, stream + at, have - at, plain, &got);
			if (rc <= 0)
				break;
			check(got >= 1 && got <= TUN_REC_MAX && (size_t)rc == got + TUN_REC_OVERHEAD);
			check(at + (size_t)rc <= have);
			if (!(ctl & 1)) {
				/* Only what was sealed, whole and unchanged, in order. */
				check(opened < nrec && rec_off[opened] == at && rec_len[opened] == got);
				check(memcmp(plain, rec_plain[opened], got) == 0);
				for (size_t k = at; k < at + (size_t)rc; k++)
					check(!touched[k]);
			}
			opened++;
			at += (size_t)rc;
		}
		if (have == len)
			break;
	}
	if (!(ctl & 1)) {
		/* Every record before the first changed one was accepted. */
		size_t first_bad = nrec;
		for (size_t r = 0; r < nrec && first_bad == nrec; r++)
			for (size_t k = rec_off[r]; k < rec_off[r + 1]; k++)
				if (touched[k]) {
					first_bad = r;
					break;
				}
		check(opened == first_bad);
		check(first_bad == nrec || rc < 0 || at + TUN_REC_OVERHEAD > len ||
		      rc == 0 /* a longer length now waits for bytes that never come */);
	}
	tun_rec_free(&shim);
	tun_rec_free(&helper);
	return 0;
}
