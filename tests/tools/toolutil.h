/*
 * toolutil.h - helpers shared by the muxshim test tools (fakedev, devsvc,
 * muxconn): deterministic byte-stream PRNG, usbmuxd header framing, blocking
 * socket I/O, plist messages, time and misc.
 *
 * Everything is `static inline` so each tool includes only what it uses
 * without unused-function warnings.
 */
#ifndef MUXSHIM_TOOLUTIL_H
#define MUXSHIM_TOOLUTIL_H

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <plist/plist.h>

#include "usbmuxd/proto.h"

/* ------------------------------------------------------------------ */
/* Misc                                                                */
/* ------------------------------------------------------------------ */

#define TU_IO_BUF (256u * 1024u) /* bulk I/O chunk size */

static inline double tu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Raise RLIMIT_NOFILE soft limit to the hard limit (many concurrent sockets). */
static inline void tu_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* Parse an unsigned decimal (or 0x hex) integer; false on junk/overflow. */
static inline bool tu_parse_u64(const char *s, uint64_t *out)
{
    if (s == NULL || *s == '\0' || *s == '-')
        return false;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno != 0 || end == s || *end != '\0')
        return false;
    *out = (uint64_t)v;
    return true;
}

static inline bool tu_parse_u32(const char *s, uint32_t *out)
{
    uint64_t v;
    if (!tu_parse_u64(s, &v) || v > UINT32_MAX)
        return false;
    *out = (uint32_t)v;
    return true;
}

/* ------------------------------------------------------------------ */
/* Little-endian getters / putters                                     */
/* ------------------------------------------------------------------ */

static inline uint16_t tu_get_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t tu_get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static inline uint64_t tu_get_le64(const uint8_t *p)
{
    return (uint64_t)tu_get_le32(p) | ((uint64_t)tu_get_le32(p + 4) << 32);
}

static inline void tu_put_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline void tu_put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline void tu_put_le64(uint8_t *p, uint64_t v)
{
    tu_put_le32(p, (uint32_t)v);
    tu_put_le32(p + 4, (uint32_t)(v >> 32));
}

/* Big-endian (network order) 16-bit, used for the binary CONNECT port. */
static inline uint16_t tu_get_be16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static inline void tu_put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/* ------------------------------------------------------------------ */
/* Deterministic byte-stream PRNG                                      */
/*                                                                     */
/* Stream(seed) is a sequence of 64-bit blocks, block i =              */
/* splitmix64_mix(key + (i+1) * golden), key = splitmix64_mix(seed),   */
/* each stored little-endian. Byte at offset o is byte (o % 8) of      */
/* block (o / 8), so the stream is random-access and position-exact.   */
/* ------------------------------------------------------------------ */

#define TU_GOLDEN UINT64_C(0x9E3779B97F4A7C15)

static inline uint64_t tu_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

typedef struct {
    uint64_t key; /* mixed seed */
    uint64_t pos; /* byte offset of the next byte */
} tu_prng;

static inline void tu_prng_init(tu_prng *r, uint64_t seed)
{
    r->key = tu_mix64(seed ^ UINT64_C(0x6D7578736869D00D));
    r->pos = 0;
}

static inline uint64_t tu_prng_block(const tu_prng *r, uint64_t idx)
{
    return tu_mix64(r->key + (idx + 1) * TU_GOLDEN);
}

/* Fill buf with the next n bytes of the stream. */
static inline void tu_prng_fill(tu_prng *r, uint8_t *buf, size_t n)
{
    size_t i = 0;
    /* unaligned head */
    while (i < n && (r->pos & 7u) != 0) {
        uint64_t b = tu_prng_block(r, r->pos >> 3);
        buf[i++] = (uint8_t)(b >> (8u * (r->pos & 7u)));
        r->pos++;
    }
    uint64_t idx = r->pos >> 3;
    size_t words = (n - i) / 8;
    for (size_t w = 0; w < words; w++)
        tu_put_le64(buf + i + 8 * w, tu_prng_block(r, idx + w));
    i += words * 8;
    r->pos += (uint64_t)words * 8;
    /* tail */
    while (i < n) {
        uint64_t b = tu_prng_block(r, r->pos >> 3);
        buf[i++] = (uint8_t)(b >> (8u * (r->pos & 7u)));
        r->pos++;
    }
}

/*
 * Compare buf against the next n bytes of the stream and advance by n.
 * Returns n if everything matched, else the index (within buf) of the first
 * mismatching byte.
 */
static inline size_t tu_prng_check(tu_prng *r, const uint8_t *buf, size_t n)
{
    size_t i = 0;
    size_t bad = n;
    while (i < n && (r->pos & 7u) != 0) {
        uint64_t b = tu_prng_block(r, r->pos >> 3);
        if (buf[i] != (uint8_t)(b >> (8u * (r->pos & 7u)))) {
            bad = i;
            goto out;
        }
        i++;
        r->pos++;
    }
    {
        uint64_t idx = r->pos >> 3;
        size_t words = (n - i) / 8;
        for (size_t w = 0; w < words; w++) {
            uint64_t want = tu_prng_block(r, idx + w);
            uint64_t got = tu_get_le64(buf + i + 8 * w);
            if (want != got) {
                size_t k = 0;
                while ((uint8_t)(want >> (8 * k)) == (uint8_t)(got >> (8 * k)))
                    k++;
                bad = i + 8 * w + k;
                goto out;
            }
        }
        i += words * 8;
        r->pos += (uint64_t)words * 8;
    }
    while (i < n) {
        uint64_t b = tu_prng_block(r, r->pos >> 3);
        if (buf[i] != (uint8_t)(b >> (8u * (r->pos & 7u)))) {
            bad = i;
            goto out;
        }
        i++;
        r->pos++;
    }
    return n;
out:
    r->pos += (uint64_t)(n - i); /* keep the contract: advance by n overall */
    return bad;
}

/* ------------------------------------------------------------------ */
/* Blocking socket I/O                                                 */
/* ------------------------------------------------------------------ */

/* Write all n bytes. Returns 0, or -1 with errno set. Never raises SIGPIPE. */
static inline int tu_write_all(int fd, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* One read, retrying EINTR. Returns bytes, 0 on EOF, -1 on error. */
static inline ssize_t tu_read_some(int fd, void *buf, size_t n)
{
    for (;;) {
        ssize_t r = recv(fd, buf, n, 0);
        if (r < 0 && errno == EINTR)
            continue;
        return r;
    }
}

/*
 * Read exactly n bytes. Returns n on success, the (short) count on EOF
 * (0 = clean EOF before any byte), or -1 on error.
 */
static inline ssize_t tu_read_full(int fd, void *buf, size_t n)
{
    uint8_t *p = buf;
    size_t got = 0;
    while (got < n) {
        ssize_t r = tu_read_some(fd, p + got, n - got);
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

static inline void tu_set_nodelay(int fd)
{
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* Abortive close: RST instead of FIN. */
static inline void tu_close_rst(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

/* ------------------------------------------------------------------ */
/* usbmuxd framing                                                     */
/* ------------------------------------------------------------------ */

#define MUX_HDR_LEN 16u
#define MUX_MAX_MSG (64u * 1024u) /* total length incl. header */

enum {
    MUX_MSG_RESULT = 1,
    MUX_MSG_CONNECT = 2,
    MUX_MSG_LISTEN = 3,
    MUX_MSG_DEVICE_ADD = 4,
    MUX_MSG_DEVICE_REMOVE = 5,
    MUX_MSG_DEVICE_PAIRED = 6,
    MUX_MSG_PLIST = 8,
};

enum {
    MUX_RESULT_OK = 0,
    MUX_RESULT_BADCOMMAND = 1,
    MUX_RESULT_BADDEV = 2,
    MUX_RESULT_CONNREFUSED = 3,
    MUX_RESULT_BADVERSION = 6,
};

/* Binary DEVICE_ADD record: u32 id, u16 product, char serial[256], u16 pad, u32 location */
#define MUX_DEVREC_LEN (4u + 2u + 256u + 2u + 4u) /* 268 */
/* Binary CONNECT payload: u32 device_id, u16 port (network order), u16 reserved */
#define MUX_CONNECT_LEN 8u

typedef struct {
    uint32_t length; /* total, including the 16-byte header */
    uint32_t version;
    uint32_t message;
    uint32_t tag;
} mux_hdr;

static inline void mux_hdr_put(uint8_t out[MUX_HDR_LEN], const mux_hdr *h)
{
    tu_put_le32(out + 0, h->length);
    tu_put_le32(out + 4, h->version);
    tu_put_le32(out + 8, h->message);
    tu_put_le32(out + 12, h->tag);
}

static inline void mux_hdr_get(const uint8_t in[MUX_HDR_LEN], mux_hdr *h)
{
    h->length = tu_get_le32(in + 0);
    h->version = tu_get_le32(in + 4);
    h->message = tu_get_le32(in + 8);
    h->tag = tu_get_le32(in + 12);
}

/* Send one framed message (header + payload) with a single write. */
static inline int mux_send(int fd, uint32_t version, uint32_t message, uint32_t tag,
                           const void *payload, size_t plen)
{
    if (plen > MUX_MAX_MSG - MUX_HDR_LEN) {
        errno = EMSGSIZE;
        return -1;
    }
    uint8_t stackbuf[1024];
    uint8_t *buf = stackbuf;
    size_t total = MUX_HDR_LEN + plen;
    if (total > sizeof stackbuf) {
        buf = malloc(total);
        if (buf == NULL)
            return -1;
    }
    mux_hdr h = {.length = (uint32_t)total, .version = version, .message = message, .tag = tag};
    mux_hdr_put(buf, &h);
    if (plen > 0)
        memcpy(buf + MUX_HDR_LEN, payload, plen);
    int rc = tu_write_all(fd, buf, total);
    int saved = errno;
    if (buf != stackbuf)
        free(buf);
    errno = saved;
    return rc;
}

/* Serialize a plist to XML and send it as a version-1 PLIST message. */
static inline int mux_send_plist(int fd, uint32_t tag, plist_t dict)
{
    char *xml = NULL;
    uint32_t xlen = 0;
    plist_to_xml(dict, &xml, &xlen);
    if (xml == NULL) {
        errno = EINVAL;
        return -1;
    }
    int rc = mux_send(fd, 1, MUX_MSG_PLIST, tag, xml, xlen);
    int saved = errno;
    plist_to_xml_free(xml);
    errno = saved;
    return rc;
}

/*
 * Read one framed message. On success returns 1 and sets *h and *payload
 * (malloc'd, NUL-terminated, h->length - 16 bytes; caller frees).
 * Returns 0 on clean EOF before a header, -1 on error/short read/bad length
 * (errno EPROTO for a bad length, EPIPE for a truncated message).
 */
static inline int mux_recv(int fd, mux_hdr *h, uint8_t **payload)
{
    uint8_t hb[MUX_HDR_LEN];
    *payload = NULL;
    ssize_t r = tu_read_full(fd, hb, sizeof hb);
    if (r == 0)
        return 0;
    if (r < 0)
        return -1;
    if ((size_t)r < sizeof hb) {
        errno = EPIPE;
        return -1;
    }
    mux_hdr_get(hb, h);
    if (h->length < MUX_HDR_LEN || h->length > MUX_MAX_MSG) {
        errno = EPROTO;
        return -1;
    }
    size_t plen = h->length - MUX_HDR_LEN;
    uint8_t *p = malloc(plen + 1);
    if (p == NULL)
        return -1;
    r = tu_read_full(fd, p, plen);
    if (r < 0 || (size_t)r < plen) {
        int saved = (r < 0) ? errno : EPIPE;
        free(p);
        errno = saved;
        return -1;
    }
    p[plen] = '\0';
    *payload = p;
    return 1;
}

/* Parse an XML or binary plist payload; NULL if unparseable. */
static inline plist_t mux_parse_plist(const uint8_t *payload, size_t plen)
{
    plist_t pl = NULL;
    if (plen == 0 || plen > UINT32_MAX)
        return NULL;
    plist_from_memory((const char *)payload, (uint32_t)plen, &pl);
    return pl;
}

/* Fetch a string value of a dict key as a malloc'd copy (caller frees), or NULL. */
static inline char *tu_plist_strdup(plist_t dict, const char *key)
{
    if (dict == NULL || plist_get_node_type(dict) != PLIST_DICT)
        return NULL;
    plist_t n = plist_dict_get_item(dict, key);
    if (n == NULL || plist_get_node_type(n) != PLIST_STRING)
        return NULL;
    char *s = NULL;
    plist_get_string_val(n, &s);
    return s;
}

/* Fetch an unsigned integer value of a dict key. */
static inline bool tu_plist_uint(plist_t dict, const char *key, uint64_t *out)
{
    if (dict == NULL || plist_get_node_type(dict) != PLIST_DICT)
        return false;
    plist_t n = plist_dict_get_item(dict, key);
    if (n == NULL || plist_get_node_type(n) != PLIST_UINT)
        return false;
    plist_get_uint_val(n, out);
    return true;
}

/* ------------------------------------------------------------------ */
/* Whole usbmuxd messages on blocking sockets (framing: proto.h)       */
/* ------------------------------------------------------------------ */

/* Writes a message an umx_encode_* call built, given that call's return
 * value as rc, and frees it. 0, or a negative errno (rc itself if the
 * encoder failed). */
static inline int tu_mux_send(int fd, int rc, uint8_t *msg, size_t len)
{
    if (rc < 0)
        return rc;
    rc = tu_write_all(fd, msg, len) < 0 ? -errno : 0;
    free(msg);
    return rc;
}

/*
 * Reads one whole message: the header checked as a request (umx_hdr_get: at
 * most UMX_MSG_MAX) or, with reply set, as what a usbmuxd sends
 * (umx_hdr_get_reply: a DeviceList may be longer). The body goes to *body
 * (malloc'd, h->length - 16 bytes plus a NUL; the caller frees).
 * Returns 1 for a message, 0 for EOF before a header, or a negative errno:
 * -EMSGSIZE for a length outside the bounds (*h holds it), -EPIPE for EOF
 * inside a message, -ENOMEM, or the socket's error.
 */
static inline int tu_mux_recv(int fd, bool reply, struct umx_hdr *h, uint8_t **body)
{
    uint8_t hb[UMX_HDR_LEN];
    *body = NULL;
    ssize_t r = tu_read_full(fd, hb, sizeof hb);
    if (r <= 0)
        return r < 0 ? -errno : 0;
    if ((size_t)r < sizeof hb)
        return -EPIPE;
    int rc = reply ? umx_hdr_get_reply(hb, h) : umx_hdr_get(hb, h);
    if (rc < 0)
        return rc;
    size_t blen = h->length - UMX_HDR_LEN;
    uint8_t *p = malloc(blen + 1);
    if (p == NULL)
        return -ENOMEM;
    r = tu_read_full(fd, p, blen);
    if (r < 0 || (size_t)r < blen) {
        rc = r < 0 ? -errno : -EPIPE;
        free(p);
        return rc;
    }
    p[blen] = '\0';
    *body = p;
    return 1;
}

#endif /* MUXSHIM_TOOLUTIL_H */
