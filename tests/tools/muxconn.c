/*
 * muxconn - usbmuxd client for muxshim tests and benchmarks.
 *
 *   muxconn (--socket PATH | --tcp HOST:PORT) MODE [options]
 *
 * Connect modes (plist Connect to DeviceID --device, device port --port, then
 * talk to devsvc through the raw pipe):
 *   --send N           SNK: send N bytes of PRNG(seed), half-close, expect "OK N"
 *   --recv N           SRC: receive and verify N bytes of PRNG(seed) until EOF
 *   --echo N           ECHO: send N bytes while reading them back concurrently
 *   --both N           BOTH: send PRNG(seed) and verify PRNG(seed^0x5a5a) concurrently
 *   --rtt COUNT        ECHO: COUNT sequential round trips of --size BYTES (default 1024)
 *   --stall SECONDS    FLOOD: read nothing for SECONDS (or until SIGUSR1), then close
 *   --connect-loop N   N sessions in total (split over --parallel workers), each a
 *                      new connection: Connect, ECHO of --size bytes once, close
 *                      (the WebDriverAgent pattern: a port forward per request)
 * usbmuxd-only modes (no Connect):
 *   --list-loop COUNT  COUNT sessions in total (split over --parallel workers), each
 *                      a new connection doing one ListDevices
 *   --list-once        one ListDevices, report the serial numbers
 * Options: --parallel K (K concurrent sessions, default 1), --device D (1),
 * --port P, --seed S (1; session i uses S+i), --timeout SEC (60).
 *
 * Prints exactly one JSON line on stdout ("ok":true|false); exit 0 on success,
 * 1 on any failure (reason on stderr), 2 on usage errors. Throughput "mbps" is
 * in megabytes (1e6 bytes) per second of wall time, all sessions together.
 * Every line, also the one printed when --timeout stops a run, counts the
 * operations (ListDevices sessions for --list-loop, sessions otherwise) that
 * succeeded ("ops_ok"), failed ("ops_failed") and never finished
 * ("ops_unfinished"), so that a run cut short still says how much it did.
 */
#include "toolutil.h"

#include <getopt.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/ioctl.h>
#include <sys/un.h>

#define MC_THREAD_STACK (256u * 1024u)
#define MC_ERR_LEN 256

enum mode { M_NONE, M_SEND, M_RECV, M_ECHO, M_BOTH, M_RTT, M_STALL, M_LIST_LOOP, M_LIST_ONCE,
            M_CONNECT_LOOP };

static const char *const mode_names[] = {
    [M_NONE] = "none",   [M_SEND] = "send",   [M_RECV] = "recv",
    [M_ECHO] = "echo",   [M_BOTH] = "both",   [M_RTT] = "rtt",
    [M_STALL] = "stall", [M_LIST_LOOP] = "list-loop", [M_LIST_ONCE] = "list-once",
    [M_CONNECT_LOOP] = "connect-loop",
};

static struct {
    const char *unix_path;
    const char *tcp_host;
    char tcp_port[8];
    enum mode mode;
    uint64_t n;      /* bytes (send/recv/echo/both), COUNT (rtt/list-loop), SECONDS (stall) */
    uint64_t size;   /* rtt message size */
    uint64_t seed;
    uint32_t device;
    int port;        /* devsvc port, -1 = unset */
    uint32_t parallel;
    double timeout;
} g = {.size = 1024, .seed = 1, .device = 1, .port = -1, .parallel = 1, .timeout = 60};

static atomic_int g_emitted;
/* Operations finished so far, for the line printed on a timeout. */
static atomic_ullong g_ops_ok, g_ops_failed;
static double g_t0;

static uint64_t ops_total(void)
{
    return g.mode == M_LIST_LOOP || g.mode == M_CONNECT_LOOP ? g.n : g.parallel;
}

/* "ops_ok":..,"ops_failed":..,"ops_unfinished":.. for counts read once. */
static int ops_fields_of(char *out, size_t cap, unsigned long long ok, unsigned long long bad)
{
    unsigned long long total = ops_total();
    unsigned long long left = ok + bad < total ? total - ok - bad : 0;
    return snprintf(out, cap, "\"ops_ok\":%llu,\"ops_failed\":%llu,\"ops_unfinished\":%llu", ok,
                    bad, left);
}

static int ops_fields(char *out, size_t cap)
{
    return ops_fields_of(out, cap, atomic_load(&g_ops_ok), atomic_load(&g_ops_failed));
}

/* Print the single JSON line (first caller wins) and return the exit code. */
static int emit(bool ok, const char *json_fields, const char *err)
{
    int expected = 0;
    if (!atomic_compare_exchange_strong(&g_emitted, &expected, 1))
        return ok ? 0 : 1;
    if (ok) {
        printf("{\"mode\":\"%s\",\"ok\":true,%s}\n", mode_names[g.mode], json_fields);
    } else {
        /* err is plain ASCII built by us; strip quotes/backslashes for JSON */
        char clean[MC_ERR_LEN];
        size_t j = 0;
        for (size_t i = 0; err != NULL && err[i] != '\0' && j + 1 < sizeof clean; i++)
            clean[j++] = (err[i] == '"' || err[i] == '\\' || (unsigned char)err[i] < 0x20)
                             ? '\''
                             : err[i];
        clean[j] = '\0';
        fprintf(stderr, "muxconn: FAILED: %s\n", err ? err : "unknown error");
        printf("{\"mode\":\"%s\",\"ok\":false,\"error\":\"%s\"%s%s}\n", mode_names[g.mode], clean,
               json_fields && *json_fields ? "," : "", json_fields ? json_fields : "");
    }
    fflush(stdout);
    return ok ? 0 : 1;
}

static void *watchdog(void *arg)
{
    (void)arg;
    struct timespec ts = {.tv_sec = (time_t)g.timeout};
    ts.tv_nsec = (long)((g.timeout - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
    char msg[96], f[512];
    snprintf(msg, sizeof msg, "timeout after %.1f s", g.timeout);
    double secs = tu_now() - g_t0;
    int n = snprintf(f, sizeof f, "\"timed_out\":true,\"seconds\":%.6f,", secs);
    /* One reading of the counters for every field: the workers go on. */
    unsigned long long ok = atomic_load(&g_ops_ok), bad = atomic_load(&g_ops_failed);
    n += ops_fields_of(f + n, sizeof f - (size_t)n, ok, bad);
    if (g.mode == M_LIST_LOOP || g.mode == M_CONNECT_LOOP) {
        snprintf(f + n, sizeof f - (size_t)n, ",\"list_sessions\":%llu,\"sessions_per_s\":%.1f", ok,
                 secs > 0 ? (double)ok / secs : 0);
    }
    emit(false, f, msg);
    fflush(stderr);
    _exit(1);
}

/* ------------------------------------------------------------------ */
/* usbmuxd connection                                                  */
/* ------------------------------------------------------------------ */

struct session {
    uint32_t index;
    int fd;
    uint64_t seed;
    uint8_t *buf;
    /* results */
    bool ok;
    char err[MC_ERR_LEN];
    uint64_t bytes;     /* payload bytes moved (send+recv for echo/both: per direction) */
    double *lat_us;     /* rtt / list-loop latencies */
    size_t nlat;
    uint64_t iterations; /* list-loop sessions done by this worker */
    long pending;        /* stall: FIONREAD at the end */
    char verdict[64];
    char *serials_json; /* list-once */
    size_t ndevices;
};

static void fail(struct session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(struct session *s, const char *fmt, ...)
{
    if (s->err[0] != '\0')
        return; /* keep the first error */
    int off = snprintf(s->err, sizeof s->err, "session %u: ", s->index);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err + off, sizeof s->err - (size_t)off, fmt, ap);
    va_end(ap);
    s->ok = false;
}

static int open_mux(struct session *s)
{
    if (g.unix_path != NULL) {
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        strcpy(sun.sun_path, g.unix_path); /* length checked in main */
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            fail(s, "socket: %s", strerror(errno));
            return -1;
        }
        if (connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
            fail(s, "connect %s: %s", g.unix_path, strerror(errno));
            close(fd);
            return -1;
        }
        return fd;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(g.tcp_host, g.tcp_port, &hints, &res);
    if (rc != 0) {
        fail(s, "resolve %s: %s", g.tcp_host, gai_strerror(rc));
        return -1;
    }
    int fd = -1, last = 0;
    for (struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            last = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
            last = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) {
        fail(s, "connect %s:%s: %s", g.tcp_host, g.tcp_port, strerror(last));
        return -1;
    }
    tu_set_nodelay(fd);
    return fd;
}

static plist_t new_request(const char *type)
{
    plist_t d = plist_new_dict();
    plist_dict_set_item(d, "MessageType", plist_new_string(type));
    plist_dict_set_item(d, "ClientVersionString", plist_new_string("muxconn"));
    plist_dict_set_item(d, "ProgName", plist_new_string("muxconn"));
    plist_dict_set_item(d, "kLibUSBMuxVersion", plist_new_uint(3));
    return d;
}

/* Encodes a request dict (freed here) as a v1 message and sends it. 0 or a negative errno. */
static int send_request(int fd, uint32_t tag, plist_t req)
{
    uint8_t *msg = NULL;
    size_t len = 0;
    int rc = umx_encode_plist(tag, req, &msg, &len);
    plist_free(req);
    return tu_mux_send(fd, rc, msg, len);
}

/* Reads one reply header and body; checks that it is a version-1 plist with
 * this tag. 0, or -1 after fail(). */
static int read_reply_raw(struct session *s, uint32_t tag, struct umx_hdr *h, uint8_t **body)
{
    int r = tu_mux_recv(s->fd, true, h, body);
    if (r == 0)
        fail(s, "usbmuxd closed the connection without a reply");
    else if (r == -EMSGSIZE)
        fail(s, "bad reply header length %u", h->length);
    else if (r == -EPIPE)
        fail(s, "truncated reply");
    else if (r < 0)
        fail(s, "reading reply: %s", strerror(-r));
    else if (h->version != UMX_V_PLIST || h->message != UMX_MSG_PLIST)
        fail(s, "reply is not a plist (version %u message %u)", h->version, h->message);
    else if (h->tag != tag)
        fail(s, "reply tag %u, expected %u", h->tag, tag);
    else
        return 0;
    free(*body);
    *body = NULL;
    return -1;
}

/* Reads and decodes one reply (umx_event_decode). 0 (the caller frees *ev), or -1 after fail(). */
static int read_reply(struct session *s, uint32_t tag, struct umx_event *ev)
{
    struct umx_hdr h = {0};
    uint8_t *body = NULL;
    if (read_reply_raw(s, tag, &h, &body) < 0)
        return -1;
    int rc = umx_event_decode(&h, body, h.length - UMX_HDR_LEN, ev);
    free(body);
    if (rc < 0) {
        fail(s, "undecodable plist reply: %s", strerror(-rc));
        return -1;
    }
    return 0;
}

/* Open a usbmuxd connection and Connect to the device port. 0 on success. */
static int mux_connect_session(struct session *s)
{
    s->fd = open_mux(s);
    if (s->fd < 0)
        return -1;
    plist_t req = new_request("Connect");
    plist_dict_set_item(req, "DeviceID", plist_new_uint(g.device));
    plist_dict_set_item(req, "PortNumber", plist_new_uint(htons((uint16_t)g.port)));
    uint32_t tag = s->index + 1;
    int rc = send_request(s->fd, tag, req);
    if (rc < 0) {
        fail(s, "sending Connect: %s", strerror(-rc));
        return -1;
    }
    struct umx_event ev;
    if (read_reply(s, tag, &ev) < 0)
        return -1;
    enum umx_ev_kind kind = ev.kind;
    uint32_t num = ev.result;
    umx_event_free(&ev);
    if (kind != UMX_EV_RESULT) {
        fail(s, "Connect reply is not a Result");
        return -1;
    }
    if (num != UMX_RESULT_OK) {
        const char *why = num == UMX_RESULT_BADDEV        ? " (BADDEV)"
                          : num == UMX_RESULT_CONNREFUSED ? " (CONNREFUSED)"
                                                          : "";
        fail(s, "Connect to device %u port %d: Result %u%s", g.device, g.port, num, why);
        return -1;
    }
    return 0;
}

static int send_line(struct session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int send_line(struct session *s, const char *fmt, ...)
{
    char line[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (tu_write_all(s->fd, line, (size_t)n) < 0) {
        fail(s, "sending command: %s", strerror(errno));
        return -1;
    }
    return 0;
}

/* Write PRNG(seed) bytes [0, n). */
static int write_stream(int fd, uint8_t *buf, uint64_t n, uint64_t seed)
{
    tu_prng r;
    tu_prng_init(&r, seed);
    while (n > 0) {
        size_t chunk = n < TU_IO_BUF ? (size_t)n : TU_IO_BUF;
        tu_prng_fill(&r, buf, chunk);
        if (tu_write_all(fd, buf, chunk) < 0)
            return -1;
        n -= chunk;
    }
    return 0;
}

/* Read until EOF verifying PRNG(seed)[0, n). 0 if exactly n correct bytes. */
static int read_verify(struct session *s, uint64_t n, uint64_t seed, const char *what)
{
    tu_prng r;
    tu_prng_init(&r, seed);
    uint64_t count = 0;
    for (;;) {
        ssize_t got = tu_read_some(s->fd, s->buf, TU_IO_BUF);
        if (got == 0)
            break;
        if (got < 0) {
            fail(s, "%s: read error after %llu bytes: %s", what, (unsigned long long)count,
                 strerror(errno));
            return -1;
        }
        if (count < n) {
            uint64_t left = n - count;
            size_t cl = left < (uint64_t)got ? (size_t)left : (size_t)got;
            size_t okb = tu_prng_check(&r, s->buf, cl);
            if (okb != cl) {
                fail(s, "%s: data mismatch at offset %llu", what,
                     (unsigned long long)(count + okb));
                return -1;
            }
        }
        count += (uint64_t)got;
        s->bytes = count;
    }
    if (count != n) {
        fail(s, "%s: got %llu bytes before EOF, expected %llu", what, (unsigned long long)count,
             (unsigned long long)n);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Modes                                                               */
/* ------------------------------------------------------------------ */

static void run_send(struct session *s)
{
    if (send_line(s, "SNK %llu %llu\n", (unsigned long long)g.n, (unsigned long long)s->seed) < 0)
        return;
    if (write_stream(s->fd, s->buf, g.n, s->seed) < 0) {
        fail(s, "send: write: %s", strerror(errno));
        return;
    }
    shutdown(s->fd, SHUT_WR);
    char v[sizeof s->verdict];
    ssize_t r = tu_read_full(s->fd, v, sizeof v - 1);
    if (r < 0) {
        fail(s, "send: reading verdict: %s", strerror(errno));
        return;
    }
    v[r] = '\0';
    v[strcspn(v, "\r\n")] = '\0';
    snprintf(s->verdict, sizeof s->verdict, "%s", v);
    char want[40];
    snprintf(want, sizeof want, "OK %llu", (unsigned long long)g.n);
    if (strcmp(v, want) != 0) {
        fail(s, "send: verdict \"%s\", expected \"%s\"", v, want);
        return;
    }
    s->bytes = g.n;
    s->ok = true;
}

static void run_recv(struct session *s)
{
    if (send_line(s, "SRC %llu %llu\n", (unsigned long long)g.n, (unsigned long long)s->seed) < 0)
        return;
    if (read_verify(s, g.n, s->seed, "recv") < 0)
        return;
    s->ok = true;
}

struct writer {
    int fd;
    uint64_t n, seed;
    int err;
    int sent_ok;
};

static void *writer_thread(void *arg)
{
    struct writer *w = arg;
    uint8_t *buf = malloc(TU_IO_BUF);
    if (buf == NULL) {
        w->err = ENOMEM;
        return NULL;
    }
    if (write_stream(w->fd, buf, w->n, w->seed) < 0) {
        w->err = errno;
        /* unblock the reader */
        shutdown(w->fd, SHUT_RDWR);
    } else {
        w->sent_ok = 1;
        shutdown(w->fd, SHUT_WR);
    }
    free(buf);
    return NULL;
}

/* Send PRNG(seed) on a thread while verifying PRNG(rseed) coming back. */
static void run_duplex(struct session *s, const char *cmdname, uint64_t rseed)
{
    struct writer w = {.fd = s->fd, .n = g.n, .seed = s->seed};
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, MC_THREAD_STACK);
    pthread_t th;
    int rc = pthread_create(&th, &attr, writer_thread, &w);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        fail(s, "%s: pthread_create: %s", cmdname, strerror(rc));
        return;
    }
    int vr = read_verify(s, g.n, rseed, cmdname);
    if (vr < 0)
        shutdown(s->fd, SHUT_RDWR); /* unblock the writer */
    pthread_join(th, NULL);
    if (vr < 0)
        return;
    if (!w.sent_ok) {
        fail(s, "%s: write: %s", cmdname, strerror(w.err));
        return;
    }
    s->ok = true;
}

static void run_echo(struct session *s)
{
    if (send_line(s, "ECHO\n") < 0)
        return;
    run_duplex(s, "echo", s->seed);
}

static void run_both(struct session *s)
{
    if (send_line(s, "BOTH %llu %llu\n", (unsigned long long)g.n, (unsigned long long)s->seed) <
        0)
        return;
    run_duplex(s, "both", s->seed ^ 0x5a5a);
}

static void run_rtt(struct session *s)
{
    if (send_line(s, "ECHO\n") < 0)
        return;
    s->lat_us = malloc(sizeof(double) * (g.n ? g.n : 1));
    uint8_t *out = malloc(g.size ? g.size : 1);
    uint8_t *in = malloc(g.size ? g.size : 1);
    if (s->lat_us == NULL || out == NULL || in == NULL) {
        fail(s, "rtt: out of memory");
        goto out;
    }
    tu_prng wr, rd;
    tu_prng_init(&wr, s->seed);
    tu_prng_init(&rd, s->seed);
    for (uint64_t i = 0; i < g.n; i++) {
        tu_prng_fill(&wr, out, g.size);
        double t0 = tu_now();
        if (tu_write_all(s->fd, out, g.size) < 0) {
            fail(s, "rtt: write #%llu: %s", (unsigned long long)i, strerror(errno));
            goto out;
        }
        ssize_t r = tu_read_full(s->fd, in, g.size);
        double t1 = tu_now();
        if (r < 0 || (uint64_t)r != g.size) {
            fail(s, "rtt: round trip #%llu: %s", (unsigned long long)i,
                 r < 0 ? strerror(errno) : "EOF");
            goto out;
        }
        if (tu_prng_check(&rd, in, g.size) != g.size) {
            fail(s, "rtt: echo mismatch in round trip #%llu", (unsigned long long)i);
            goto out;
        }
        s->lat_us[s->nlat++] = (t1 - t0) * 1e6;
        s->bytes += g.size;
    }
    shutdown(s->fd, SHUT_WR);
    ssize_t r = tu_read_some(s->fd, in, 1);
    if (r != 0) {
        fail(s, "rtt: expected EOF after half-close, got %s", r < 0 ? strerror(errno) : "data");
        goto out;
    }
    s->ok = true;
out:
    free(out);
    free(in);
}

/* SIGUSR1 ends --stall early: a test stalls "until it is done measuring",
 * which no fixed number of seconds can say on a busy machine. */
static volatile sig_atomic_t g_stall_end;

static void on_sigusr1(int sig)
{
    (void)sig;
    g_stall_end = 1;
}

static void run_stall(struct session *s)
{
    if (send_line(s, "FLOOD\n") < 0)
        return;
    double end = tu_now() + (double)g.n;
    while (!g_stall_end && tu_now() < end) {
        struct timespec ts = {.tv_nsec = 20 * 1000 * 1000}; /* the flag is polled */
        nanosleep(&ts, NULL);
    }
    int pending = 0;
    if (ioctl(s->fd, FIONREAD, &pending) == 0)
        s->pending = pending;
    s->ok = true;
}

/* ---- ListDevices ---- */

static uint8_t *g_listreq; /* prebuilt ListDevices request, tag patched per use */
static size_t g_listreq_len;

static int build_listreq(void)
{
    plist_t req = new_request("ListDevices");
    int rc = umx_encode_plist(0, req, &g_listreq, &g_listreq_len);
    plist_free(req);
    return rc;
}

/* Tiny growable string for the serial list. */
struct sbuf {
    char *p;
    size_t len, cap;
};

static void sb_putc(struct sbuf *b, char c)
{
    if (b->len + 2 > b->cap) {
        b->cap = b->cap * 2 + 64;
        char *n = realloc(b->p, b->cap);
        if (n == NULL) {
            fprintf(stderr, "muxconn: out of memory\n");
            _exit(1);
        }
        b->p = n;
    }
    b->p[b->len++] = c;
    b->p[b->len] = '\0';
}

/* Append src as a JSON string literal. */
static void sb_json_string(struct sbuf *b, const char *src)
{
    static const char hex[] = "0123456789abcdef";
    sb_putc(b, '"');
    for (const unsigned char *q = (const unsigned char *)src; *q; q++) {
        if (*q == '"' || *q == '\\') {
            sb_putc(b, '\\');
            sb_putc(b, (char)*q);
        } else if (*q < 0x20) {
            sb_putc(b, '\\');
            sb_putc(b, 'u');
            sb_putc(b, '0');
            sb_putc(b, '0');
            sb_putc(b, hex[*q >> 4]);
            sb_putc(b, hex[*q & 15]);
        } else {
            sb_putc(b, (char)*q);
        }
    }
    sb_putc(b, '"');
}

/*
 * One ListDevices session on a new connection. `full` parses the reply and
 * checks the DeviceList (and collects serials when `serials` is set);
 * otherwise only the framing is checked, to keep client CPU low.
 */
static int list_devices_once(struct session *s, uint32_t tag, bool full, bool serials)
{
    s->fd = open_mux(s);
    if (s->fd < 0)
        return -1;
    /* per-session copy: the prebuilt request is shared by all workers */
    memcpy(s->buf, g_listreq, g_listreq_len);
    struct umx_hdr h;
    (void)umx_hdr_get(s->buf, &h); /* built by umx_encode_plist: in bounds */
    h.tag = tag;
    umx_hdr_put(s->buf, &h);
    int rc = -1;
    if (tu_write_all(s->fd, s->buf, g_listreq_len) < 0) {
        fail(s, "sending ListDevices: %s", strerror(errno));
        goto out;
    }
    if (!full) {
        uint8_t *body = NULL;
        if (read_reply_raw(s, tag, &h, &body) == 0)
            rc = 0;
        free(body);
        goto out;
    }
    struct umx_event ev;
    if (read_reply(s, tag, &ev) < 0)
        goto out;
    if (ev.kind != UMX_EV_DEVICE_LIST) {
        fail(s, "ListDevices reply has no DeviceList array");
        umx_event_free(&ev);
        goto out;
    }
    /* Entries the codec cannot track (no serial) are counted, not listed. */
    s->ndevices = ev.n + ev.skipped;
    if (serials) {
        struct sbuf b = {0};
        sb_putc(&b, '[');
        for (size_t i = 0; i < ev.n; i++) {
            if (i > 0)
                sb_putc(&b, ',');
            sb_json_string(&b, ev.list[i].serial);
        }
        sb_putc(&b, ']');
        s->serials_json = b.p;
    }
    umx_event_free(&ev);
    rc = 0;
out:
    close(s->fd);
    s->fd = -1;
    return rc;
}

static uint64_t list_share(uint32_t worker)
{
    uint64_t base = g.n / g.parallel;
    return base + (worker < g.n % g.parallel ? 1 : 0);
}

static void run_list_loop(struct session *s)
{
    uint64_t count = list_share(s->index);
    s->lat_us = malloc(sizeof(double) * (count ? count : 1));
    if (s->lat_us == NULL) {
        fail(s, "out of memory");
        return;
    }
    for (uint64_t i = 0; i < count; i++) {
        double t0 = tu_now();
        /* full parse on the first session of each worker, framing checks after */
        if (list_devices_once(s, (uint32_t)(i + 1), i == 0, false) < 0) {
            atomic_fetch_add(&g_ops_failed, 1);
            return;
        }
        atomic_fetch_add(&g_ops_ok, 1);
        s->lat_us[s->nlat++] = (tu_now() - t0) * 1e6;
        s->iterations++;
    }
    s->ok = true;
}

/* One short Connect session: the request, one echo of --size bytes, close. */
static int connect_once(struct session *s, uint8_t *out, uint8_t *in)
{
    if (mux_connect_session(s) < 0)
        return -1;
    int rc = -1;
    tu_prng wr, rd;
    tu_prng_init(&wr, s->seed + s->iterations);
    tu_prng_init(&rd, s->seed + s->iterations);
    tu_prng_fill(&wr, out, g.size);
    if (send_line(s, "ECHO\n") < 0)
        goto out;
    if (tu_write_all(s->fd, out, g.size) < 0) {
        fail(s, "connect-loop: write: %s", strerror(errno));
        goto out;
    }
    ssize_t r = tu_read_full(s->fd, in, g.size);
    if (r < 0 || (uint64_t)r != g.size) {
        fail(s, "connect-loop: answer: %s", r < 0 ? strerror(errno) : "EOF");
        goto out;
    }
    if (tu_prng_check(&rd, in, g.size) != g.size) {
        fail(s, "connect-loop: echo mismatch");
        goto out;
    }
    s->bytes += g.size;
    rc = 0;
out:
    close(s->fd);
    s->fd = -1;
    return rc;
}

static void run_connect_loop(struct session *s)
{
    uint64_t count = list_share(s->index);
    s->lat_us = malloc(sizeof(double) * (count ? count : 1));
    uint8_t *out = malloc(g.size), *in = malloc(g.size);
    if (s->lat_us == NULL || out == NULL || in == NULL) {
        fail(s, "out of memory");
        goto done;
    }
    for (uint64_t i = 0; i < count; i++) {
        double t0 = tu_now();
        if (connect_once(s, out, in) < 0) {
            atomic_fetch_add(&g_ops_failed, 1);
            goto done;
        }
        atomic_fetch_add(&g_ops_ok, 1);
        s->lat_us[s->nlat++] = (tu_now() - t0) * 1e6;
        s->iterations++;
    }
    s->ok = true;
done:
    free(out);
    free(in);
}

/* ------------------------------------------------------------------ */
/* Session driver                                                      */
/* ------------------------------------------------------------------ */

static void *session_thread(void *arg)
{
    struct session *s = arg;
    s->fd = -1;
    s->buf = malloc(TU_IO_BUF);
    if (s->buf == NULL) {
        fail(s, "out of memory");
        atomic_fetch_add(&g_ops_failed, 1);
        return NULL;
    }
    if (g.mode == M_LIST_LOOP) {
        run_list_loop(s);
    } else if (g.mode == M_CONNECT_LOOP) {
        run_connect_loop(s);
    } else if (g.mode == M_LIST_ONCE) {
        if (list_devices_once(s, 1, true, true) == 0)
            s->ok = true;
    } else if (mux_connect_session(s) == 0) {
        switch (g.mode) {
        case M_SEND:
            run_send(s);
            break;
        case M_RECV:
            run_recv(s);
            break;
        case M_ECHO:
            run_echo(s);
            break;
        case M_BOTH:
            run_both(s);
            break;
        case M_RTT:
            run_rtt(s);
            break;
        case M_STALL:
            run_stall(s);
            break;
        default:
            fail(s, "internal: bad mode");
        }
    }
    if (g.mode != M_LIST_LOOP && g.mode != M_CONNECT_LOOP) /* the loops count each session */
        atomic_fetch_add(s->ok ? &g_ops_ok : &g_ops_failed, 1);
    if (s->fd >= 0)
        close(s->fd);
    free(s->buf);
    s->buf = NULL;
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(const double *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    /* nearest rank: ceil(p * n) - 1 */
    double r = p * (double)n;
    size_t idx = (size_t)r;
    if ((double)idx < r)
        idx++;
    idx = idx == 0 ? 0 : idx - 1;
    return v[idx < n ? idx : n - 1];
}

/* Append "p50_us":..,"p99_us":..,"max_us":..,"mean_us":.. for all sessions' latencies. */
static int latency_fields(struct session *ss, char *out, size_t cap)
{
    size_t total = 0;
    for (uint32_t i = 0; i < g.parallel; i++)
        total += ss[i].nlat;
    double *all = malloc(sizeof(double) * (total ? total : 1));
    if (all == NULL)
        return snprintf(out, cap, "\"p50_us\":null");
    size_t k = 0;
    double sum = 0;
    for (uint32_t i = 0; i < g.parallel; i++)
        for (size_t j = 0; j < ss[i].nlat; j++) {
            all[k++] = ss[i].lat_us[j];
            sum += ss[i].lat_us[j];
        }
    qsort(all, total, sizeof(double), cmp_double);
    int n = snprintf(out, cap, "\"p50_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f,\"mean_us\":%.1f",
                     pct(all, total, 0.50), pct(all, total, 0.99), total ? all[total - 1] : 0,
                     total ? sum / (double)total : 0);
    free(all);
    return n;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: muxconn (--socket PATH | --tcp HOST:PORT) MODE [options]\n"
            "modes (exactly one):\n"
            "  --send N          SNK: send N bytes, half-close, expect \"OK N\"\n"
            "  --recv N          SRC: receive and verify N bytes until EOF\n"
            "  --echo N          ECHO: send N bytes, read them back concurrently\n"
            "  --both N          BOTH: full-duplex N bytes each way, both verified\n"
            "  --rtt COUNT       ECHO: COUNT sequential round trips of --size BYTES\n"
            "  --stall SECONDS   FLOOD: read nothing for SECONDS (or until SIGUSR1), then close\n"
            "  --list-loop COUNT COUNT ListDevices sessions (total, split over --parallel)\n"
            "  --list-once       one ListDevices; prints the serial numbers\n"
            "  --connect-loop N  N short Connect sessions (total, split over --parallel):\n"
            "                    Connect, one ECHO of --size bytes, close\n"
            "options:\n"
            "  --port P          device (devsvc) TCP port, required for Connect modes\n"
            "  --device D        DeviceID (default 1)\n"
            "  --size BYTES      rtt message size (default 1024)\n"
            "  --seed S          PRNG seed (default 1; session i uses S+i)\n"
            "  --parallel K      K concurrent sessions (default 1)\n"
            "  --timeout SEC     overall limit (default 60); a run it stops still\n"
            "                    reports ops_ok / ops_failed / ops_unfinished\n"
            "output: one JSON line; exit 0 ok, 1 failure, 2 usage. mbps = 1e6 bytes/s.\n");
}

static bool set_mode(enum mode m, const char *arg)
{
    if (g.mode != M_NONE) {
        fprintf(stderr, "muxconn: only one mode allowed\n");
        return false;
    }
    g.mode = m;
    if (arg != NULL && !tu_parse_u64(arg, &g.n)) {
        fprintf(stderr, "muxconn: bad number for --%s: %s\n", mode_names[m], arg);
        return false;
    }
    return true;
}

int main(int argc, char **argv)
{
    enum { O_SOCKET = 256, O_TCP, O_SEND, O_RECV, O_ECHO, O_BOTH, O_RTT, O_SIZE, O_STALL,
           O_PARALLEL, O_PORT, O_DEVICE, O_SEED, O_LIST_LOOP, O_LIST_ONCE, O_TIMEOUT, O_HELP,
           O_CONNECT_LOOP };
    static const struct option opts[] = {
        {"socket", required_argument, NULL, O_SOCKET},
        {"tcp", required_argument, NULL, O_TCP},
        {"send", required_argument, NULL, O_SEND},
        {"recv", required_argument, NULL, O_RECV},
        {"echo", required_argument, NULL, O_ECHO},
        {"both", required_argument, NULL, O_BOTH},
        {"rtt", required_argument, NULL, O_RTT},
        {"size", required_argument, NULL, O_SIZE},
        {"stall", required_argument, NULL, O_STALL},
        {"parallel", required_argument, NULL, O_PARALLEL},
        {"port", required_argument, NULL, O_PORT},
        {"device", required_argument, NULL, O_DEVICE},
        {"seed", required_argument, NULL, O_SEED},
        {"list-loop", required_argument, NULL, O_LIST_LOOP},
        {"connect-loop", required_argument, NULL, O_CONNECT_LOOP},
        {"list-once", no_argument, NULL, O_LIST_ONCE},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    int o;
    bool okargs = true;
    uint32_t u32;
    while (okargs && (o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case O_SOCKET:
            g.unix_path = optarg;
            break;
        case O_TCP: {
            static char host[256];
            const char *colon = strrchr(optarg, ':');
            size_t hl = colon ? (size_t)(colon - optarg) : 0;
            if (colon == NULL || hl == 0 || hl >= sizeof host || !tu_parse_u32(colon + 1, &u32) ||
                u32 == 0 || u32 > 65535) {
                fprintf(stderr, "muxconn: --tcp wants HOST:PORT\n");
                okargs = false;
                break;
            }
            memcpy(host, optarg, hl);
            host[hl] = '\0';
            if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') { /* [v6]:port */
                host[hl - 1] = '\0';
                memmove(host, host + 1, hl - 1);
            }
            g.tcp_host = host;
            snprintf(g.tcp_port, sizeof g.tcp_port, "%u", u32);
            break;
        }
        case O_SEND:
            okargs = set_mode(M_SEND, optarg);
            break;
        case O_RECV:
            okargs = set_mode(M_RECV, optarg);
            break;
        case O_ECHO:
            okargs = set_mode(M_ECHO, optarg);
            break;
        case O_BOTH:
            okargs = set_mode(M_BOTH, optarg);
            break;
        case O_RTT:
            okargs = set_mode(M_RTT, optarg);
            break;
        case O_STALL:
            okargs = set_mode(M_STALL, optarg);
            break;
        case O_LIST_LOOP:
            okargs = set_mode(M_LIST_LOOP, optarg);
            break;
        case O_CONNECT_LOOP:
            okargs = set_mode(M_CONNECT_LOOP, optarg);
            break;
        case O_LIST_ONCE:
            okargs = set_mode(M_LIST_ONCE, NULL);
            break;
        case O_SIZE:
            if (!tu_parse_u64(optarg, &g.size) || g.size == 0 || g.size > (64u << 20)) {
                fprintf(stderr, "muxconn: --size must be 1..67108864\n");
                okargs = false;
            }
            break;
        case O_PARALLEL:
            if (!tu_parse_u32(optarg, &g.parallel) || g.parallel == 0 || g.parallel > 100000) {
                fprintf(stderr, "muxconn: --parallel must be 1..100000\n");
                okargs = false;
            }
            break;
        case O_PORT:
            if (!tu_parse_u32(optarg, &u32) || u32 > 65535) {
                fprintf(stderr, "muxconn: --port must be 0..65535\n");
                okargs = false;
            }
            g.port = (int)u32;
            break;
        case O_DEVICE:
            if (!tu_parse_u32(optarg, &g.device)) {
                fprintf(stderr, "muxconn: bad --device\n");
                okargs = false;
            }
            break;
        case O_SEED:
            if (!tu_parse_u64(optarg, &g.seed)) {
                fprintf(stderr, "muxconn: bad --seed\n");
                okargs = false;
            }
            break;
        case O_TIMEOUT: {
            char *end = NULL;
            g.timeout = strtod(optarg, &end);
            if (end == optarg || *end != '\0' || !(g.timeout > 0) || g.timeout > 1e6) {
                fprintf(stderr, "muxconn: bad --timeout\n");
                okargs = false;
            }
            break;
        }
        case O_HELP:
            usage(stdout);
            return 0;
        default:
            okargs = false;
        }
    }
    if (okargs && optind != argc) {
        fprintf(stderr, "muxconn: unexpected argument %s\n", argv[optind]);
        okargs = false;
    }
    if (okargs && (g.unix_path == NULL) == (g.tcp_host == NULL)) {
        fprintf(stderr, "muxconn: give exactly one of --socket PATH or --tcp HOST:PORT\n");
        okargs = false;
    }
    if (okargs && g.unix_path != NULL &&
        strlen(g.unix_path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        fprintf(stderr, "muxconn: socket path too long\n");
        okargs = false;
    }
    if (okargs && g.mode == M_NONE) {
        fprintf(stderr, "muxconn: no mode given\n");
        okargs = false;
    }
    if (okargs && g.mode != M_LIST_LOOP && g.mode != M_LIST_ONCE && g.port < 0) {
        fprintf(stderr, "muxconn: --port P (device port) is required for --%s\n",
                mode_names[g.mode]);
        okargs = false;
    }
    if (okargs && g.mode == M_LIST_ONCE && g.parallel != 1) {
        fprintf(stderr, "muxconn: --list-once does not take --parallel\n");
        okargs = false;
    }
    if (!okargs) {
        usage(stderr);
        return 2;
    }

    tu_raise_nofile();
    signal(SIGPIPE, SIG_IGN);
    signal(SIGUSR1, on_sigusr1);
    if ((g.mode == M_LIST_LOOP || g.mode == M_LIST_ONCE) && build_listreq() < 0)
        return emit(false, "", "cannot build ListDevices request");

    g_t0 = tu_now();
    pthread_t wd;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, MC_THREAD_STACK);
    if (pthread_create(&wd, &attr, watchdog, NULL) != 0)
        return emit(false, "", "cannot start watchdog thread");

    struct session *ss = calloc(g.parallel, sizeof *ss);
    pthread_t *th = calloc(g.parallel, sizeof *th);
    if (ss == NULL || th == NULL)
        return emit(false, "", "out of memory");
    double t0 = tu_now();
    uint32_t started = 0;
    for (uint32_t i = 0; i < g.parallel; i++) {
        ss[i].index = i;
        ss[i].seed = g.seed + i;
        int rc = pthread_create(&th[i], &attr, session_thread, &ss[i]);
        if (rc != 0) {
            fail(&ss[i], "pthread_create: %s", strerror(rc));
            break;
        }
        started++;
    }
    for (uint32_t i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    double secs = tu_now() - t0;

    uint32_t nok = 0;
    const char *first_err = NULL;
    uint64_t bytes = 0, iters = 0;
    long pending_max = 0;
    for (uint32_t i = 0; i < g.parallel; i++) {
        if (ss[i].ok)
            nok++;
        else if (first_err == NULL)
            first_err = ss[i].err[0] ? ss[i].err : "session did not complete";
        bytes += ss[i].bytes;
        iters += ss[i].iterations;
        if (ss[i].pending > pending_max)
            pending_max = ss[i].pending;
    }
    bool ok = (nok == g.parallel);
    char f[1024];
    int n = snprintf(f, sizeof f, "\"sessions\":%u,\"failed\":%u,\"seconds\":%.6f,", g.parallel,
                     g.parallel - nok, secs);
    n += ops_fields(f + n, sizeof f - (size_t)n);
    switch (g.mode) {
    case M_SEND:
    case M_RECV:
    case M_ECHO:
    case M_BOTH:
        n += snprintf(f + n, sizeof f - (size_t)n, ",\"bytes\":%llu,\"mbps\":%.1f",
                      (unsigned long long)bytes, secs > 0 ? (double)bytes / secs / 1e6 : 0);
        if (g.mode == M_SEND) {
            char v[sizeof ss[0].verdict + 8];
            const char *vs = ss[0].verdict;
            for (uint32_t i = 0; i < g.parallel; i++)
                if (!ss[i].ok) {
                    vs = ss[i].verdict;
                    break;
                }
            size_t j = 0;
            for (size_t i = 0; vs[i] && j + 1 < sizeof v; i++)
                v[j++] = (vs[i] == '"' || vs[i] == '\\' || (unsigned char)vs[i] < 0x20) ? '?'
                                                                                        : vs[i];
            v[j] = '\0';
            n += snprintf(f + n, sizeof f - (size_t)n, ",\"verdict\":\"%s\"", v);
        }
        break;
    case M_RTT:
        n += snprintf(f + n, sizeof f - (size_t)n, ",\"count\":%llu,\"size\":%llu,",
                      (unsigned long long)g.n, (unsigned long long)g.size);
        n += latency_fields(ss, f + n, sizeof f - (size_t)n);
        break;
    case M_STALL:
        n += snprintf(f + n, sizeof f - (size_t)n, ",\"stall_seconds\":%llu,\"pending_max\":%ld",
                      (unsigned long long)g.n, pending_max);
        break;
    case M_LIST_LOOP:
        n += snprintf(f + n, sizeof f - (size_t)n,
                      ",\"parallel\":%u,\"list_sessions\":%llu,\"sessions_per_s\":%.1f,", g.parallel,
                      (unsigned long long)iters, secs > 0 ? (double)iters / secs : 0);
        n += latency_fields(ss, f + n, sizeof f - (size_t)n);
        break;
    case M_CONNECT_LOOP:
        n += snprintf(f + n, sizeof f - (size_t)n,
                      ",\"parallel\":%u,\"connect_sessions\":%llu,\"sessions_per_s\":%.1f,",
                      g.parallel, (unsigned long long)iters, secs > 0 ? (double)iters / secs : 0);
        n += latency_fields(ss, f + n, sizeof f - (size_t)n);
        break;
    case M_LIST_ONCE:
        break;
    default:
        break;
    }
    int rc;
    if (g.mode == M_LIST_ONCE && ok) {
        size_t need = strlen(f) + strlen(ss[0].serials_json) + 64;
        char *big = malloc(need);
        if (big == NULL)
            return emit(false, "", "out of memory");
        snprintf(big, need, "%s,\"devices\":%zu,\"serials\":%s", f, ss[0].ndevices,
                 ss[0].serials_json);
        rc = emit(true, big, NULL);
        free(big);
    } else {
        rc = emit(ok, f, first_err);
    }
    fflush(stderr);
    _exit(rc); /* don't wait for the watchdog */
}
