/*
 * toolutil.h - helpers shared by the muxshim test tools (fakedev, devsvc,
 * muxconn): deterministic byte-stream PRNG, blocking socket I/O, whole usbmuxd
 * messages on blocking sockets, time and misc. The usbmuxd protocol itself
 * (header, requests, replies, events) is the project's codec,
 * common/usbmuxd/proto.h, which the tools link.
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
/* Little-endian getters / putters (the PRNG's blocks)                 */
/* ------------------------------------------------------------------ */

static inline uint32_t tu_get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static inline uint64_t tu_get_le64(const uint8_t *p)
{
    return (uint64_t)tu_get_le32(p) | ((uint64_t)tu_get_le32(p + 4) << 32);
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
