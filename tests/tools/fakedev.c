/*
 * fakedev - a fake usbmuxd with N fake devices, for muxshim tests.
 *
 *   fakedev --socket PATH [--devices N] [--tcp-host HOST] [--no-splice] [--verbose]
 *
 * Listens on the UNIX stream socket PATH and speaks the usbmuxd protocol
 * (version 1 plist and version 0 binary) through the project's codec
 * (common/usbmuxd/proto.h), so its replies are the bytes the shim's broker
 * and usbmuxd send, and a malformed request gets usbmuxd's answer: none for
 * a body that is not a dict with a string MessageType, BADDEV for a Connect
 * without a DeviceID. A plist the codec's guard refuses (one that would
 * expand in libplist) closes the connection. Connect(DeviceID, port) opens a TCP
 * connection to HOST:port (default 127.0.0.1) and from then on the client
 * socket is a raw, byte-exact, half-close-preserving pipe to it: one thread
 * per direction; device->client uses splice() through a pipe (read()/write()
 * fallback, or always with --no-splice), client->device uses read()/write().
 *
 * Prints "fakedev ready PATH" on stdout once listening. SIGTERM/SIGINT remove
 * the socket and exit 0. Exit 2 on usage errors, 1 on setup failures.
 *
 * Plug and unplug at run time: SIGUSR1 unplugs the present device with the
 * highest DeviceID, SIGUSR2 plugs back the absent one with the lowest; Listen
 * clients get Detached / Attached (or the binary records), ListDevices and
 * Connect follow. Each logs "fakedev: unplugged N" / "fakedev: plugged N".
 */
#include "toolutil.h"

#include <arpa/inet.h>
#include <getopt.h>
#include <netdb.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/un.h>

#define FD_MAX_DEVICES 1000u
#define FD_PRODUCT_ID 0x12a8u
#define FD_LOCATION_ID 0u
#define FD_BUID "FAKEDEV0-0000-0000-0000-000000000000"
#define FD_THREAD_STACK (512u * 1024u)

static struct {
    const char *sock_path;
    uint32_t ndev;
    const char *tcp_host;
    const char *prefix;   /* serials: PREFIX-0001 ... */
    const char *buid;
    bool verbose;
    bool no_splice;
    struct sockaddr_storage tcp_addr; /* resolved tcp-host, port filled per connect */
    socklen_t tcp_addrlen;
} g = {.ndev = 1, .tcp_host = "127.0.0.1", .prefix = "fakedev", .buid = FD_BUID};

/* Pair records, kept in memory as a host's usbmuxd keeps them on disk:
 * SavePairRecord stores, ReadPairRecord returns, DeletePairRecord removes
 * (under g_mu). Bounded: a test saves a handful. */
#define FD_MAX_RECORDS 64u
#define FD_RECORD_MAX (64u * 1024u)
static struct {
    char id[UMX_SERIAL_MAX + 1];
    char *data;
    uint64_t len;
} g_records[FD_MAX_RECORDS];

static atomic_ulong g_conn_id;

/* Presence and the Listen connections events go to, under g_mu. */
#define FD_MAX_LISTENERS 256u
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static bool g_absent[FD_MAX_DEVICES + 1];
static struct {
    int fd;
    bool plist;
} g_listeners[FD_MAX_LISTENERS];

static bool device_present(uint32_t id)
{
    pthread_mutex_lock(&g_mu);
    bool p = id >= 1 && id <= g.ndev && !g_absent[id];
    pthread_mutex_unlock(&g_mu);
    return p;
}

#define LOG(...)                                                                                   \
    do {                                                                                           \
        fprintf(stderr, "fakedev: " __VA_ARGS__);                                                  \
        fputc('\n', stderr);                                                                       \
    } while (0)
#define VLOG(...)                                                                                  \
    do {                                                                                           \
        if (g.verbose)                                                                             \
            LOG(__VA_ARGS__);                                                                      \
    } while (0)

static void usage(FILE *f)
{
    fprintf(f, "usage: fakedev --socket PATH [--devices N] [--tcp-host HOST] [--no-splice] [--verbose]\n"
               "  --socket PATH    UNIX socket to listen on (stale file is removed, mode 0666)\n"
               "  --devices N      number of fake devices, DeviceID 1..N (default 1, max %u)\n"
               "  --tcp-host HOST  where Connect(port) goes: HOST:port (default 127.0.0.1)\n"
               "  --no-splice      never use splice() in the bridge (read()/write() only)\n"
               "  --serial-prefix P serials P-0001 ... (default fakedev)\n"
               "  --buid BUID      what ReadBUID answers (default " FD_BUID ")\n"
               "  --verbose        log every request on stderr\n",
               FD_MAX_DEVICES);
}

/* ------------------------------------------------------------------ */
/* Device model                                                        */
/* ------------------------------------------------------------------ */

/* A fake device as the codec encodes it. Without a Properties dict of its
 * own it gets the ones usbmuxd lists for a USB device (ConnectionSpeed
 * 480000000, ConnectionType USB, DeviceID, LocationID, ProductID,
 * SerialNumber), and the same 268-byte record in version 0. */
static struct umx_device device_model(uint32_t id)
{
    struct umx_device d = {.id = id, .product_id = FD_PRODUCT_ID, .location_id = FD_LOCATION_ID};
    snprintf(d.serial, sizeof d.serial, "%s-%04u", g.prefix, id);
    return d;
}

/* Connect to the "device" port. Returns a UMX_RESULT_* and *out_fd on OK. */
static uint32_t device_connect(uint32_t devid, uint16_t port, int *out_fd)
{
    *out_fd = -1;
    if (!device_present(devid))
        return UMX_RESULT_BADDEV;
    struct sockaddr_storage ss = g.tcp_addr;
    if (ss.ss_family == AF_INET)
        ((struct sockaddr_in *)&ss)->sin_port = htons(port);
    else
        ((struct sockaddr_in6 *)&ss)->sin6_port = htons(port);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        LOG("socket: %s", strerror(errno));
        return UMX_RESULT_CONNREFUSED;
    }
    int rc;
    do
        rc = connect(fd, (struct sockaddr *)&ss, g.tcp_addrlen);
    while (rc < 0 && errno == EINTR);
    if (rc < 0) {
        VLOG("connect %s:%u: %s", g.tcp_host, port, strerror(errno));
        close(fd);
        return UMX_RESULT_CONNREFUSED;
    }
    tu_set_nodelay(fd);
    *out_fd = fd;
    return UMX_RESULT_OK;
}

/* ------------------------------------------------------------------ */
/* Raw bridge                                                          */
/* ------------------------------------------------------------------ */

struct pump {
    int from, to;
    bool splice; /* try splice() for this direction */
    const char *name;
    unsigned long cid;
    int err; /* 0 = clean EOF carried as shutdown(SHUT_WR) */
};

static void pump_fail(struct pump *p, int err)
{
    p->err = err;
    VLOG("conn %lu: %s: %s", p->cid, p->name, strerror(err));
    (void)shutdown(p->from, SHUT_RDWR);
    (void)shutdown(p->to, SHUT_RDWR);
}

/* read()/write() copy loop. Returns when done; errors via pump_fail. */
static void pump_copy(struct pump *p)
{
    uint8_t *buf = malloc(TU_IO_BUF);
    if (buf == NULL) {
        pump_fail(p, ENOMEM);
        return;
    }
    for (;;) {
        ssize_t r = tu_read_some(p->from, buf, TU_IO_BUF);
        if (r == 0) {
            (void)shutdown(p->to, SHUT_WR);
            break;
        }
        if (r < 0 || tu_write_all(p->to, buf, (size_t)r) < 0) {
            pump_fail(p, errno);
            break;
        }
    }
    free(buf);
}

/*
 * splice() loop through a private pipe (saves two user-space copies).
 * Returns false without having moved any byte if splice is unsupported
 * for this socket pair, so the caller can fall back to pump_copy().
 */
static bool pump_splice(struct pump *p)
{
    int pp[2];
    if (pipe2(pp, O_CLOEXEC) < 0)
        return false;
    (void)fcntl(pp[1], F_SETPIPE_SZ, (int)TU_IO_BUF);
    bool moved = false;
    for (;;) {
        ssize_t n = splice(p->from, NULL, pp[1], NULL, TU_IO_BUF, SPLICE_F_MOVE);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && !moved && (errno == EINVAL || errno == ENOSYS)) {
            close(pp[0]);
            close(pp[1]);
            return false;
        }
        if (n == 0) {
            (void)shutdown(p->to, SHUT_WR);
            break;
        }
        if (n < 0) {
            pump_fail(p, errno);
            break;
        }
        moved = true;
        while (n > 0) {
            ssize_t m = splice(pp[0], NULL, p->to, NULL, (size_t)n, SPLICE_F_MOVE);
            if (m < 0 && errno == EINTR)
                continue;
            if (m <= 0) {
                pump_fail(p, m < 0 ? errno : EPIPE);
                goto out;
            }
            n -= m;
        }
    }
out:
    close(pp[0]);
    close(pp[1]);
    return true;
}

/*
 * Copy from -> to until EOF (then half-close `to`) or error (then shut both
 * sockets down completely so the opposite direction unblocks too).
 */
static void pump_run(struct pump *p)
{
    if (p->splice && !g.no_splice && pump_splice(p))
        return;
    pump_copy(p);
}

static void *pump_thread(void *arg)
{
    pump_run(arg);
    return NULL;
}

static void bridge(unsigned long cid, int cfd, int tfd)
{
    /* Measured here (fakedev CPU per GiB): splice TCP->UNIX costs about half
     * of read/write, while UNIX->TCP is slightly cheaper with read/write. */
    struct pump up = {
        .from = cfd, .to = tfd, .splice = false, .name = "client->device", .cid = cid};
    struct pump down = {
        .from = tfd, .to = cfd, .splice = true, .name = "device->client", .cid = cid};
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, FD_THREAD_STACK);
    pthread_t th;
    int rc = pthread_create(&th, &attr, pump_thread, &down);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        LOG("conn %lu: pthread_create: %s; dropping bridge", cid, strerror(rc));
        close(tfd);
        return;
    }
    pump_run(&up);
    pthread_join(th, NULL);
    close(tfd);
    VLOG("conn %lu: bridge done", cid);
}

/* ------------------------------------------------------------------ */
/* Command handling                                                    */
/* ------------------------------------------------------------------ */

enum action { ACT_CONTINUE, ACT_CLOSE, ACT_LISTEN, ACT_BRIDGE };

/* Each send returns 0 or a negative errno. */
static int send_result(int fd, bool plist, uint32_t tag, uint32_t number)
{
    uint8_t *m = NULL;
    size_t n = 0;
    int rc = umx_encode_result(plist ? UMX_V_PLIST : UMX_V_BINARY, tag, number, &m, &n);
    return tu_mux_send(fd, rc, m, n);
}

/* Sends a dict (freed here) as a v1 reply. */
static int send_plist_owned(int fd, uint32_t tag, plist_t d)
{
    uint8_t *m = NULL;
    size_t n = 0;
    int rc = umx_encode_plist(tag, d, &m, &n);
    plist_free(d);
    return tu_mux_send(fd, rc, m, n);
}

static int send_event(int fd, bool plist, bool attached, uint32_t id)
{
    uint32_t v = plist ? UMX_V_PLIST : UMX_V_BINARY;
    uint8_t *m = NULL;
    size_t n = 0;
    int rc;
    if (attached) {
        struct umx_device d = device_model(id);
        rc = umx_encode_attached(v, &d, &m, &n);
    } else {
        rc = umx_encode_detached(v, id, &m, &n);
    }
    return tu_mux_send(fd, rc, m, n);
}

static int send_device_list(int fd, uint32_t tag)
{
    struct umx_device *devs = calloc(g.ndev ? g.ndev : 1, sizeof *devs);
    if (devs == NULL)
        return -ENOMEM;
    size_t n = 0;
    pthread_mutex_lock(&g_mu);
    for (uint32_t id = 1; id <= g.ndev; id++)
        if (!g_absent[id])
            devs[n++] = device_model(id);
    pthread_mutex_unlock(&g_mu);
    uint8_t *m = NULL;
    size_t len = 0;
    int rc = umx_encode_device_list(tag, devs, n, &m, &len);
    free(devs);
    return tu_mux_send(fd, rc, m, len);
}

/* Result 0 and the present devices, and registration for later events, in
 * one step under the lock, so that no event falls between the two. */
static int listen_start(int fd, uint32_t tag, bool plist)
{
    pthread_mutex_lock(&g_mu);
    int rc = send_result(fd, plist, tag, UMX_RESULT_OK);
    for (uint32_t id = 1; rc == 0 && id <= g.ndev; id++)
        if (!g_absent[id])
            rc = send_event(fd, plist, true, id);
    bool registered = false;
    for (unsigned i = 0; rc == 0 && i < FD_MAX_LISTENERS && !registered; i++) {
        if (g_listeners[i].fd == 0) {
            g_listeners[i].fd = fd + 1; /* 0 marks a free slot */
            g_listeners[i].plist = plist;
            registered = true;
        }
    }
    pthread_mutex_unlock(&g_mu);
    return rc;
}

static void listen_end(int fd)
{
    pthread_mutex_lock(&g_mu);
    for (unsigned i = 0; i < FD_MAX_LISTENERS; i++)
        if (g_listeners[i].fd == fd + 1)
            g_listeners[i].fd = 0;
    pthread_mutex_unlock(&g_mu);
}

/* SIGUSR1: unplug the highest present; SIGUSR2: plug the lowest absent. */
static void plug_event(bool plug)
{
    pthread_mutex_lock(&g_mu);
    uint32_t id = 0;
    if (plug) {
        for (uint32_t i = 1; i <= g.ndev && !id; i++)
            if (g_absent[i])
                id = i;
    } else {
        for (uint32_t i = g.ndev; i >= 1 && !id; i--)
            if (!g_absent[i])
                id = i;
    }
    if (id) {
        g_absent[id] = !plug;
        for (unsigned i = 0; i < FD_MAX_LISTENERS; i++)
            if (g_listeners[i].fd)
                (void)send_event(g_listeners[i].fd - 1, g_listeners[i].plist, plug, id);
        LOG("%s %u", plug ? "plugged" : "unplugged", id);
    } else {
        LOG("nothing to %s", plug ? "plug" : "unplug");
    }
    pthread_mutex_unlock(&g_mu);
}

/* Answers one decoded request. Replies are plist ones for a plist message,
 * binary ones otherwise. */
static int record_slot(const char *id, bool create)
{
    int free_slot = -1;
    for (unsigned i = 0; i < FD_MAX_RECORDS; i++) {
        if (g_records[i].data && strcmp(g_records[i].id, id) == 0)
            return (int)i;
        if (!g_records[i].data && free_slot < 0)
            free_slot = (int)i;
    }
    return create ? free_slot : -1;
}

static int pair_record(unsigned long cid, int fd, const struct umx_request *rq, bool plist,
                       uint32_t tag)
{
    if (!rq->has_record_id)
        return send_result(fd, plist, tag, UMX_RESULT_BADCOMMAND);
    pthread_mutex_lock(&g_mu);
    int i = record_slot(rq->record_id, rq->type == UMX_REQ_SAVE_PAIR_RECORD);
    uint32_t res = UMX_RESULT_OK;
    plist_t reply = NULL;
    if (rq->type == UMX_REQ_SAVE_PAIR_RECORD) {
        plist_t data = rq->dict ? plist_dict_get_item(rq->dict, "PairRecordData") : NULL;
        char *copy = NULL;
        uint64_t len = 0;
        if (data && plist_get_node_type(data) == PLIST_DATA) {
            const char *p = plist_get_data_ptr(data, &len);
            if (p && len <= FD_RECORD_MAX && (copy = malloc(len ? len : 1)))
                memcpy(copy, p, len);
        }
        if (!copy || i < 0) {
            free(copy);
            res = UMX_RESULT_BADCOMMAND;
        } else {
            free(g_records[i].data);
            snprintf(g_records[i].id, sizeof g_records[i].id, "%s", rq->record_id);
            g_records[i].data = copy;
            g_records[i].len = len;
        }
    } else if (i < 0) {
        res = UMX_RESULT_NO_RECORD;
    } else if (rq->type == UMX_REQ_DELETE_PAIR_RECORD) {
        free(g_records[i].data);
        g_records[i].data = NULL;
    } else {
        reply = plist_new_dict();
        plist_dict_set_item(reply, "PairRecordData",
                            plist_new_data(g_records[i].data, g_records[i].len));
    }
    pthread_mutex_unlock(&g_mu);
    VLOG("conn %lu: %s %s -> %u", cid, umx_req_name(rq->type), rq->record_id, res);
    if (reply)
        return send_plist_owned(fd, tag, reply);
    return send_result(fd, plist, tag, res);
}

static enum action handle_request(unsigned long cid, int fd, const struct umx_request *rq,
                                  int *tcp_fd)
{
    bool plist = rq->message == UMX_MSG_PLIST;
    uint32_t tag = rq->tag;
    int rc = 0;
    enum action act = ACT_CONTINUE;
    /* The MessageType as sent, also for one the codec does not know (tests
     * count them at the upstream). */
    const char *name = umx_req_name(rq->type);
    plist_t mt = rq->dict ? plist_dict_get_item(rq->dict, "MessageType") : NULL;
    if (mt && plist_get_node_type(mt) == PLIST_STRING) {
        uint64_t len = 0;
        const char *str = plist_get_string_ptr(mt, &len);
        if (str)
            name = str;
    }
    VLOG("conn %lu: %s %s tag %u", cid, plist ? "plist" : "binary", name, tag);

    switch (rq->type) {
    case UMX_REQ_LIST_DEVICES:
        rc = send_device_list(fd, tag);
        break;
    case UMX_REQ_READ_BUID: {
        uint8_t *m = NULL;
        size_t n = 0;
        rc = umx_encode_buid(tag, g.buid, &m, &n);
        rc = tu_mux_send(fd, rc, m, n);
        break;
    }
    case UMX_REQ_LIST_LISTENERS: {
        plist_t d = plist_new_dict();
        plist_dict_set_item(d, "ListenerList", plist_new_array());
        rc = send_plist_owned(fd, tag, d);
        break;
    }
    case UMX_REQ_LISTEN:
        rc = listen_start(fd, tag, plist);
        act = ACT_LISTEN;
        break;
    case UMX_REQ_READ_PAIR_RECORD:
    case UMX_REQ_SAVE_PAIR_RECORD:
    case UMX_REQ_DELETE_PAIR_RECORD:
        rc = pair_record(cid, fd, rq, plist, tag);
        break;
    case UMX_REQ_CONNECT: {
        uint32_t res = rq->malformed ? rq->malformed
                                     : device_connect(rq->device_id, rq->port, tcp_fd);
        VLOG("conn %lu: Connect dev %u port %u -> %u", cid, rq->device_id, rq->port, res);
        rc = send_result(fd, plist, tag, res);
        if (res == UMX_RESULT_OK)
            act = ACT_BRIDGE;
        break;
    }
    default:
        rc = send_result(fd, plist, tag, UMX_RESULT_BADCOMMAND);
        break;
    }
    if (rc < 0) {
        VLOG("conn %lu: send: %s", cid, strerror(-rc));
        if (*tcp_fd >= 0) {
            close(*tcp_fd);
            *tcp_fd = -1;
        }
        return ACT_CLOSE;
    }
    return act;
}

/* Listener mode: stay silent until the client closes; any command -> BADCOMMAND + close. */
static void listen_mode(unsigned long cid, int fd, bool plist_client)
{
    struct umx_hdr h = {0};
    uint8_t *body = NULL;
    int r = tu_mux_recv(fd, false, &h, &body);
    listen_end(fd);
    if (r == 1) {
        VLOG("conn %lu: command on a Listen connection: BADCOMMAND", cid);
        (void)send_result(fd, plist_client, h.tag, UMX_RESULT_BADCOMMAND);
    }
    free(body);
}

struct conn {
    int fd;
    unsigned long id;
};

static void *conn_thread(void *arg)
{
    struct conn *c = arg;
    int fd = c->fd;
    unsigned long cid = c->id;
    free(c);
    VLOG("conn %lu: open", cid);

    for (;;) {
        struct umx_hdr h = {0};
        uint8_t *body = NULL;
        int r = tu_mux_recv(fd, false, &h, &body);
        if (r == 0)
            break;
        if (r < 0) {
            if (r == -EMSGSIZE)
                LOG("conn %lu: bad header length %u, closing", cid, h.length);
            else if (r == -EPIPE)
                VLOG("conn %lu: truncated message, closing", cid);
            else
                VLOG("conn %lu: read: %s", cid, strerror(-r));
            break;
        }
        if (h.version != UMX_V_BINARY && h.version != UMX_V_PLIST) {
            LOG("conn %lu: unsupported version %u, BADVERSION and close", cid, h.version);
            free(body);
            (void)send_result(fd, false, h.tag, UMX_RESULT_BADVERSION);
            break;
        }
        /* Like usbmuxd, fakedev goes by the message, whatever version the
         * header says: a PLIST message is decoded as a plist, any other
         * as a binary one. */
        struct umx_hdr dh = h;
        dh.version = h.message == UMX_MSG_PLIST ? UMX_V_PLIST : UMX_V_BINARY;
        struct umx_request rq;
        int rc = umx_request_decode(&dh, body, h.length - UMX_HDR_LEN, &rq);
        free(body);
        if (rc == -E2BIG) {
            LOG("conn %lu: request refused by the plist guard, closing", cid);
            break;
        }
        if (rc < 0) {
            /* Unparseable, or no MessageType: like usbmuxd, no reply, read on. */
            VLOG("conn %lu: undecodable request (%u bytes): %s, ignored", cid, h.length,
                 strerror(-rc));
            continue;
        }
        int tcp_fd = -1;
        enum action act = handle_request(cid, fd, &rq, &tcp_fd);
        bool plist_msg = rq.message == UMX_MSG_PLIST;
        umx_request_free(&rq);

        if (act == ACT_CONTINUE)
            continue;
        if (act == ACT_LISTEN)
            listen_mode(cid, fd, plist_msg);
        else if (act == ACT_BRIDGE)
            bridge(cid, fd, tcp_fd);
        break;
    }
    close(fd);
    VLOG("conn %lu: closed", cid);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Main                                                                */
/* ------------------------------------------------------------------ */

static int resolve_tcp_host(const char *host)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, "0", &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "fakedev: cannot resolve --tcp-host %s: %s\n", host, gai_strerror(rc));
        return -1;
    }
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if ((ai->ai_family == AF_INET || ai->ai_family == AF_INET6) &&
            ai->ai_addrlen <= sizeof g.tcp_addr) {
            memcpy(&g.tcp_addr, ai->ai_addr, ai->ai_addrlen);
            g.tcp_addrlen = ai->ai_addrlen;
            freeaddrinfo(res);
            return 0;
        }
    }
    freeaddrinfo(res);
    fprintf(stderr, "fakedev: --tcp-host %s has no IPv4/IPv6 address\n", host);
    return -1;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"socket", required_argument, NULL, 's'},
        {"devices", required_argument, NULL, 'n'},
        {"tcp-host", required_argument, NULL, 'H'},
        {"verbose", no_argument, NULL, 'v'},
        {"no-splice", no_argument, NULL, 'S'},
        {"serial-prefix", required_argument, NULL, 'P'},
        {"buid", required_argument, NULL, 'B'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 's':
            g.sock_path = optarg;
            break;
        case 'n':
            if (!tu_parse_u32(optarg, &g.ndev) || g.ndev > FD_MAX_DEVICES) {
                fprintf(stderr, "fakedev: --devices must be 0..%u\n", FD_MAX_DEVICES);
                return 2;
            }
            break;
        case 'H':
            g.tcp_host = optarg;
            break;
        case 'v':
            g.verbose = true;
            break;
        case 'S':
            g.no_splice = true;
            break;
        case 'P':
            if (!*optarg || strlen(optarg) > 200) {
                fprintf(stderr, "fakedev: --serial-prefix: 1 to 200 characters\n");
                return 2;
            }
            g.prefix = optarg;
            break;
        case 'B':
            if (!*optarg || strlen(optarg) > UMX_SERIAL_MAX) {
                fprintf(stderr, "fakedev: --buid: 1 to %u characters\n", UMX_SERIAL_MAX);
                return 2;
            }
            g.buid = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc || g.sock_path == NULL) {
        usage(stderr);
        return 2;
    }
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(g.sock_path) >= sizeof sun.sun_path) {
        fprintf(stderr, "fakedev: socket path too long (max %zu): %s\n",
                sizeof sun.sun_path - 1, g.sock_path);
        return 2;
    }
    strcpy(sun.sun_path, g.sock_path);
    if (resolve_tcp_host(g.tcp_host) < 0)
        return 2;

    tu_raise_nofile();
    signal(SIGPIPE, SIG_IGN);
    /* Block termination signals in every thread; the main loop takes them via signalfd. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGUSR1);
    sigaddset(&sigs, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    int sfd = signalfd(-1, &sigs, SFD_CLOEXEC);
    if (sfd < 0) {
        fprintf(stderr, "fakedev: signalfd: %s\n", strerror(errno));
        return 1;
    }

    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0) {
        fprintf(stderr, "fakedev: socket: %s\n", strerror(errno));
        return 1;
    }
    if (unlink(g.sock_path) < 0 && errno != ENOENT) {
        fprintf(stderr, "fakedev: cannot remove stale %s: %s\n", g.sock_path, strerror(errno));
        return 1;
    }
    if (bind(lfd, (struct sockaddr *)&sun, sizeof sun) < 0) {
        fprintf(stderr, "fakedev: bind %s: %s\n", g.sock_path, strerror(errno));
        return 1;
    }
    struct stat st;
    if (chmod(g.sock_path, 0666) < 0 || stat(g.sock_path, &st) < 0) {
        fprintf(stderr, "fakedev: chmod/stat %s: %s\n", g.sock_path, strerror(errno));
        unlink(g.sock_path);
        return 1;
    }
    if (listen(lfd, 4096) < 0) {
        fprintf(stderr, "fakedev: listen: %s\n", strerror(errno));
        unlink(g.sock_path);
        return 1;
    }
    printf("fakedev ready %s\n", g.sock_path);
    fflush(stdout);

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, FD_THREAD_STACK);

    struct pollfd pfd[2] = {{.fd = lfd, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
    for (;;) {
        int n = poll(pfd, 2, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "fakedev: poll: %s\n", strerror(errno));
            break;
        }
        if (pfd[1].revents & POLLIN) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof si) != (ssize_t)sizeof si)
                continue;
            if (si.ssi_signo == SIGUSR1 || si.ssi_signo == SIGUSR2) {
                plug_event(si.ssi_signo == SIGUSR2);
                continue;
            }
            VLOG("signal %u, exiting", si.ssi_signo);
            break;
        }
        if (!(pfd[0].revents & POLLIN))
            continue;
        int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN)
                continue;
            LOG("accept: %s", strerror(errno));
            if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ENOBUFS)
                usleep(10000); /* don't spin while out of resources */
            continue;
        }
        struct conn *c = malloc(sizeof *c);
        if (c == NULL) {
            LOG("out of memory, dropping connection");
            close(cfd);
            continue;
        }
        c->fd = cfd;
        c->id = atomic_fetch_add(&g_conn_id, 1) + 1;
        pthread_t th;
        int rc = pthread_create(&th, &attr, conn_thread, c);
        if (rc != 0) {
            LOG("pthread_create: %s, dropping connection", strerror(rc));
            close(cfd);
            free(c);
        }
    }

    /* Remove the socket only if it is still ours. */
    struct stat now;
    if (stat(g.sock_path, &now) == 0 && now.st_ino == st.st_ino && now.st_dev == st.st_dev)
        unlink(g.sock_path);
    close(lfd);
    fflush(stdout);
    fflush(stderr);
    _exit(0);
}
