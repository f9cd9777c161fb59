/*
 * lmclient - a fixed sequence of real libusbmuxd calls, for muxshim tests.
 *
 *   lmclient all [--expect-devices N] [--connect-port P] [--udid ID] [--events-ms MS]
 *                [--no-pair-check] [--keep-record]
 *
 * Talks to whatever USBMUXD_SOCKET_ADDRESS names (libusbmuxd reads it itself).
 * Prints one normalised line per step on stdout: return codes and data, never
 * timings, pids or fds, so that the output obtained directly from usbmuxd and
 * the output obtained through muxshim can be compared byte for byte. The BUID
 * differs between daemon instances; compare runs against the same daemon.
 *
 * Steps:
 *   list        usbmuxd_get_device_list: count and sorted serials
 *   buid        usbmuxd_read_buid
 *   save        usbmuxd_save_pair_record_with_device_id(ID, 0, fixed plist whose
 *               SystemBUID is what buid read, as a pairing client records it)
 *   read        usbmuxd_read_pair_record(ID), compared with what was saved
 *               (usbmuxd re-encodes the record, so the comparison is on the
 *               parsed plist, not on the bytes)
 *   delete      usbmuxd_delete_pair_record(ID)
 *   reread      usbmuxd_read_pair_record(ID) again: must fail
 *               (--keep-record: neither delete nor reread; the record stays)
 *   events      usbmuxd_events_subscribe, events seen within --events-ms
 *               (default 1000; longer, up to LM_EVENTS_MAX_MS, while fewer
 *               than --expect-devices adds have come), sorted; then
 *               usbmuxd_events_unsubscribe
 *   connect     usbmuxd_connect(12345, 22): -19 (ENODEV) without such a device
 *   connect1    only with --connect-port P: usbmuxd_connect(1, P), then an
 *               "ECHO" exchange with devsvc through the pipe
 *
 * Expectations (exit 0 when all hold): the list and the events hold
 * --expect-devices devices (default 0), every call but the reread succeeds,
 * the record reads back equal, connect(12345, 22) == -19, and with
 * --connect-port the echo comes back intact. --no-pair-check still runs and
 * prints the pair-record steps but does not judge them (for test doubles
 * that do not store records). Otherwise exit 1 with a
 * "lmclient: FAIL ..." line per broken expectation on stderr; exit 2 on usage
 * errors.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <plist/plist.h>
#include <usbmuxd.h>

#define LM_DEFAULT_UDID "00008030-00FA4E5A0C1D002E"
#define LM_MAX_EVENTS 4096
#define LM_EVENT_LEN 80
#define LM_ECHO_PAYLOAD "lmclient-echo-0123456789-abcdefghijklmnopqrstuvwxyz\n"
/* Generous bounds, for a busy machine: each is two orders of magnitude
 * above what the step takes on an idle one. */
#define LM_ECHO_TIMEOUT_MS 30000
#define LM_EVENTS_MAX_MS 30000

static int g_failures;
static bool g_no_pair_check;

static void fail(const char *step, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fail(const char *step, const char *fmt, ...)
{
    va_list ap;
    if (g_no_pair_check && (strcmp(step, "save") == 0 || strcmp(step, "read") == 0 ||
                            strcmp(step, "delete") == 0 || strcmp(step, "reread") == 0))
        return;
    va_start(ap, fmt);
    fprintf(stderr, "lmclient: FAIL %s: ", step);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    g_failures++;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_event(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

/* ------------------------------------------------------------------ */

static int step_list(int expect_devices)
{
    usbmuxd_device_info_t *list = NULL;
    int rc = usbmuxd_get_device_list(&list);
    if (rc < 0) {
        printf("list rc=%d\n", rc);
        fail("list", "usbmuxd_get_device_list returned %d", rc);
        return rc;
    }
    char **serials = calloc((size_t)rc + 1, sizeof *serials);
    if (serials == NULL) {
        fail("list", "out of memory");
        usbmuxd_device_list_free(&list);
        return -ENOMEM;
    }
    for (int i = 0; i < rc; i++)
        serials[i] = list[i].udid;
    qsort(serials, (size_t)rc, sizeof *serials, cmp_str);
    printf("list rc=ok count=%d serials=", rc);
    for (int i = 0; i < rc; i++)
        printf("%s%s", i ? "," : "", serials[i]);
    printf("\n");
    free(serials);
    usbmuxd_device_list_free(&list);
    if (rc != expect_devices)
        fail("list", "expected %d devices, got %d", expect_devices, rc);
    return 0;
}

/* What ReadBUID said: the record saved next names it as its SystemBUID,
 * as a pairing client does (libimobiledevice's lockdownd pairing). */
static char g_buid[256];
static bool g_keep; /* --keep-record: leave the saved record where it went */

static void step_buid(void)
{
    char *buid = NULL;
    int rc = usbmuxd_read_buid(&buid);
    if (rc == 0 && buid)
        snprintf(g_buid, sizeof g_buid, "%s", buid);
    printf("buid rc=%d value=%s\n", rc, (rc == 0 && buid) ? buid : "-");
    if (rc != 0)
        fail("buid", "usbmuxd_read_buid returned %d", rc);
    else if (buid == NULL || buid[0] == '\0')
        fail("buid", "empty BUID");
    free(buid);
}

/* A fixed pair record; the keys look like a real one, the values are fake. */
static plist_t make_record(void)
{
    static const char cert[] = "-----BEGIN CERTIFICATE-----\nmuxshim-test\n-----END CERTIFICATE-----\n";
    plist_t d = plist_new_dict();
    plist_dict_set_item(d, "DeviceCertificate", plist_new_data(cert, sizeof cert - 1));
    plist_dict_set_item(d, "HostCertificate", plist_new_data(cert, sizeof cert - 1));
    plist_dict_set_item(d, "HostID", plist_new_string("5C4B0F1E-0000-4000-8000-00000000CAFE"));
    plist_dict_set_item(d, "SystemBUID",
                        plist_new_string(g_buid[0] ? g_buid : "00000000-0000-0000-0000-000000000000"));
    plist_dict_set_item(d, "WiFiMACAddress", plist_new_string("00:00:00:00:00:00"));
    plist_dict_set_item(d, "EscrowBag", plist_new_data("\x00\x01\x02\x03\xfe\xff", 6));
    return d;
}

/* Canonical XML of a plist given as bytes (XML or binary), or NULL. */
static char *canonical_xml(const char *data, uint32_t size)
{
    plist_t p = NULL;
    plist_from_memory(data, size, &p);
    if (p == NULL)
        return NULL;
    char *xml = NULL;
    uint32_t len = 0;
    plist_to_xml(p, &xml, &len);
    plist_free(p);
    return xml;
}

static void step_pair_records(const char *udid)
{
    plist_t rec = make_record();
    char *xml = NULL;
    uint32_t xml_len = 0;
    plist_to_xml(rec, &xml, &xml_len);
    plist_free(rec);
    if (xml == NULL) {
        fail("save", "cannot encode the record");
        return;
    }

    int rc = usbmuxd_save_pair_record_with_device_id(udid, 0, xml, xml_len);
    printf("save rc=%d\n", rc);
    if (rc != 0)
        fail("save", "usbmuxd_save_pair_record_with_device_id returned %d", rc);

    char *data = NULL;
    uint32_t size = 0;
    rc = usbmuxd_read_pair_record(udid, &data, &size);
    if (rc == 0) {
        char *got = canonical_xml(data, size);
        char *want = canonical_xml(xml, xml_len);
        bool match = got != NULL && want != NULL && strcmp(got, want) == 0;
        printf("read rc=0 size=%" PRIu32 " match=%s\n", size, match ? "yes" : "no");
        if (!match)
            fail("read", "record read back differs from the one saved");
        free(got);
        free(want);
    } else {
        printf("read rc=%d\n", rc);
        fail("read", "usbmuxd_read_pair_record returned %d", rc);
    }
    free(data);
    data = NULL;
    if (g_keep) {
        free(xml);
        return;
    }

    rc = usbmuxd_delete_pair_record(udid);
    printf("delete rc=%d\n", rc);
    if (rc != 0)
        fail("delete", "usbmuxd_delete_pair_record returned %d", rc);

    size = 0;
    rc = usbmuxd_read_pair_record(udid, &data, &size);
    printf("reread rc=%d\n", rc);
    if (rc >= 0)
        fail("reread", "reading a deleted record returned %d", rc);
    free(data);
    free(xml);
}

/* Events are collected by libusbmuxd's listener thread. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* signalled on every event */
    bool recording;
    size_t n;
    size_t adds;
    size_t dropped;
    char ev[LM_MAX_EVENTS][LM_EVENT_LEN];
} g_events = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static void on_event(const usbmuxd_event_t *event, void *user_data)
{
    (void)user_data;
    const char *kind = event->event == UE_DEVICE_ADD      ? "add"
                       : event->event == UE_DEVICE_REMOVE ? "remove"
                       : event->event == UE_DEVICE_PAIRED ? "paired"
                                                          : "unknown";
    pthread_mutex_lock(&g_events.lock);
    if (g_events.recording) {
        if (event->event == UE_DEVICE_ADD)
            g_events.adds++;
        pthread_cond_broadcast(&g_events.cond);
        if (g_events.n < LM_MAX_EVENTS) {
            /* Removal events carry only the handle; add/paired carry the serial. */
            if (event->event == UE_DEVICE_REMOVE)
                snprintf(g_events.ev[g_events.n], LM_EVENT_LEN, "%s:#%" PRIu32, kind,
                         event->device.handle);
            else
                snprintf(g_events.ev[g_events.n], LM_EVENT_LEN, "%s:%.44s", kind,
                         event->device.udid);
            g_events.n++;
        } else {
            g_events.dropped++;
        }
    }
    pthread_mutex_unlock(&g_events.lock);
}

static struct timespec after_ms(const struct timespec *t0, long ms)
{
    struct timespec t = {.tv_sec = t0->tv_sec + ms / 1000,
                         .tv_nsec = t0->tv_nsec + (ms % 1000) * 1000000L};
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

/*
 * Records events for wait_ms, and beyond it, up to LM_EVENTS_MAX_MS, until
 * the expected adds have come: how soon they come depends on the machine,
 * and the output must not. (Extra events are looked for during wait_ms.)
 */
static void wait_events(size_t expect_adds, long wait_ms)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct timespec min_end = after_ms(&t0, wait_ms);
    struct timespec max_end = after_ms(&t0, wait_ms > LM_EVENTS_MAX_MS ? wait_ms : LM_EVENTS_MAX_MS);
    pthread_mutex_lock(&g_events.lock);
    /* at least wait_ms, then only while adds are missing */
    while (pthread_cond_timedwait(&g_events.cond, &g_events.lock, &min_end) != ETIMEDOUT)
        ;
    while (g_events.adds + g_events.dropped < expect_adds &&
           pthread_cond_timedwait(&g_events.cond, &g_events.lock, &max_end) != ETIMEDOUT)
        ;
    pthread_mutex_unlock(&g_events.lock);
}

static void step_events(int expect_devices, long wait_ms)
{
    usbmuxd_subscription_context_t ctx = NULL;
    /* the deadlines are CLOCK_MONOTONIC; set before the listener thread exists */
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_destroy(&g_events.cond);
    pthread_cond_init(&g_events.cond, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_lock(&g_events.lock);
    g_events.recording = true;
    pthread_mutex_unlock(&g_events.lock);

    int rc = usbmuxd_events_subscribe(&ctx, on_event, NULL);
    if (rc != 0) {
        printf("events rc=%d\n", rc);
        fail("events", "usbmuxd_events_subscribe returned %d", rc);
        return;
    }
    wait_events((size_t)expect_devices, wait_ms);

    /* Stop recording before unsubscribing: tearing the listener down may
     * synthesise removals, and those are not what the daemon said. */
    pthread_mutex_lock(&g_events.lock);
    g_events.recording = false;
    size_t n = g_events.n;
    size_t dropped = g_events.dropped;
    pthread_mutex_unlock(&g_events.lock);

    qsort(g_events.ev, n, LM_EVENT_LEN, cmp_event);
    printf("events rc=0 count=%zu list=", n + dropped);
    for (size_t i = 0; i < n; i++)
        printf("%s%s", i ? "," : "", g_events.ev[i]);
    printf("\n");

    rc = usbmuxd_events_unsubscribe(ctx);
    printf("unsubscribe rc=%d\n", rc);
    if (rc != 0)
        fail("unsubscribe", "usbmuxd_events_unsubscribe returned %d", rc);

    size_t adds = 0, others = 0;
    for (size_t i = 0; i < n; i++) {
        if (strncmp(g_events.ev[i], "add:", 4) == 0)
            adds++;
        else
            others++;
    }
    if (adds + dropped != (size_t)expect_devices || others != 0)
        fail("events", "expected %d add events and nothing else, got %zu adds and %zu others",
             expect_devices, adds, others);
}

static void step_connect_nodev(void)
{
    int rc = usbmuxd_connect(12345, 22);
    if (rc >= 0) {
        printf("connect dev=12345 port=22 rc=ok\n");
        fail("connect", "usbmuxd_connect(12345, 22) succeeded");
        usbmuxd_disconnect(rc);
        return;
    }
    printf("connect dev=12345 port=22 rc=%d\n", rc);
    if (rc != -ENODEV)
        fail("connect", "usbmuxd_connect(12345, 22) returned %d, expected %d", rc, -ENODEV);
}

/* Read exactly len bytes or fail; returns bytes read. */
static size_t recv_all(int fd, char *buf, size_t len, int timeout_ms)
{
    size_t got = 0;
    while (got < len) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int pr = poll(&p, 1, timeout_ms);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            break;
        ssize_t r = recv(fd, buf + got, len - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    return got;
}

static bool send_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = send(fd, buf, len, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        buf += w;
        len -= (size_t)w;
    }
    return true;
}

static void step_connect_dev1(int port)
{
    int fd = usbmuxd_connect(1, (unsigned short)port);
    if (fd < 0) {
        printf("connect1 dev=1 port=%d rc=%d\n", port, fd);
        fail("connect1", "usbmuxd_connect(1, %d) returned %d", port, fd);
        return;
    }
    printf("connect1 dev=1 port=%d rc=ok\n", port);

    static const char payload[] = LM_ECHO_PAYLOAD;
    const size_t plen = sizeof payload - 1;
    char back[sizeof payload];
    size_t got = 0;
    bool sent = send_all(fd, "ECHO\n", 5) && send_all(fd, payload, plen);
    if (sent) {
        got = recv_all(fd, back, plen, LM_ECHO_TIMEOUT_MS);
        shutdown(fd, SHUT_WR);
        /* After our half-close, devsvc finishes with EOF. */
        char extra;
        size_t tail = recv_all(fd, &extra, 1, LM_ECHO_TIMEOUT_MS);
        bool ok = got == plen && memcmp(back, payload, plen) == 0 && tail == 0;
        printf("echo sent=%zu received=%zu match=%s eof=%s\n", plen, got,
               (got == plen && memcmp(back, payload, plen) == 0) ? "yes" : "no",
               tail == 0 ? "yes" : "no");
        if (!ok)
            fail("echo", "echo through device 1 port %d broken (got %zu of %zu bytes)", port, got,
                 plen);
    } else {
        printf("echo sent=error\n");
        fail("echo", "send failed: %s", strerror(errno));
    }
    usbmuxd_disconnect(fd);
}

/* ------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f, "usage: lmclient all [--expect-devices N] [--connect-port P] [--udid ID]"
               " [--events-ms MS] [--no-pair-check] [--keep-record]\n"
               "  talks to USBMUXD_SOCKET_ADDRESS (UNIX:/path or host:port) or /var/run/usbmuxd\n");
}

static bool parse_long(const char *s, long lo, long hi, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

int main(int argc, char **argv)
{
    long expect_devices = 0, connect_port = -1, events_ms = 1000;
    const char *udid = LM_DEFAULT_UDID;

    if (argc < 2 || strcmp(argv[1], "all") != 0) {
        usage(stderr);
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = v != NULL;
        if (strcmp(a, "--expect-devices") == 0)
            ok = ok && parse_long(v, 0, 100000, &expect_devices);
        else if (strcmp(a, "--connect-port") == 0)
            ok = ok && parse_long(v, 1, 65535, &connect_port);
        else if (strcmp(a, "--events-ms") == 0)
            ok = ok && parse_long(v, 0, 60000, &events_ms);
        else if (strcmp(a, "--udid") == 0)
            udid = v;
        else if (strcmp(a, "--no-pair-check") == 0) {
            g_no_pair_check = true;
            continue;
        } else if (strcmp(a, "--keep-record") == 0) {
            g_keep = true;
            continue;
        } else
            ok = false;
        if (!ok || udid == NULL || udid[0] == '\0') {
            fprintf(stderr, "lmclient: bad argument %s\n", a);
            usage(stderr);
            return 2;
        }
        i++;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);

    step_list((int)expect_devices);
    step_buid();
    step_pair_records(udid);
    step_events((int)expect_devices, events_ms);
    step_connect_nodev();
    if (connect_port > 0)
        step_connect_dev1((int)connect_port);

    if (g_failures > 0) {
        fprintf(stderr, "lmclient: %d step(s) failed\n", g_failures);
        return 1;
    }
    return 0;
}
