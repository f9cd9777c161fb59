/*
 * tcprelay - an event-loop TCP-to-UNIX relay for muxshim tests.
 *
 *   tcprelay LISTEN_HOST:PORT UNIX_PATH
 *
 * Accepts TCP connections on LISTEN_HOST:PORT (PORT 0 picks one) and relays
 * each, byte for byte and in both directions, to a new connection to the
 * UNIX socket UNIX_PATH: the stand-in for Apple's usbmuxd on Windows, which
 * listens on 127.0.0.1:27015, in front of Debian's usbmuxd. One thread, one
 * epoll set, non-blocking sockets: unlike `socat ... fork` it costs no process
 * per session, so a test counting thousands of sessions measures the daemons
 * under test, not the stand-in.
 *
 * Prints "tcprelay ready PORT" on stdout once it listens; runs until killed.
 *
 * Closing, as a server would: EOF from one side becomes a half-close
 * (shutdown SHUT_WR) toward the other, and a connection is closed once both
 * directions ended; an error or reset reading either side closes both (a
 * side that fails to take our bytes only ends that direction: what it sent
 * first still goes the other way). So when the
 * TCP client (muxshim-host) ends a session first, with its reset, no side
 * keeps TIME_WAIT; when usbmuxd ends one first, the FIN goes out from here
 * and TIME_WAIT (if any) lands on this side, never the client's.
 *
 * A UNIX connect that finds usbmuxd's short listen queue full (EAGAIN), or
 * the socket missing or refusing while usbmuxd restarts (ENOENT,
 * ECONNREFUSED), is retried every RETRY_MS for up to RETRY_LIMIT_S, a bound
 * an order of magnitude above any restart or burst seen on a busy machine;
 * only then is the TCP client's connection closed.
 */
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define BUF_LEN (64u * 1024u)
#define MAX_EVENTS 256
#define RETRY_MS 5
#define RETRY_LIMIT_S 60.0

enum { TCP_SIDE, UNIX_SIDE };

/* One direction: bytes read from `from` waiting to be written to the other side. */
struct dir {
    uint8_t buf[BUF_LEN];
    size_t off, len;
    bool eof;  /* the source said EOF */
    bool shut; /* the EOF was passed on (SHUT_WR) */
};

struct conn;

/* What an epoll event points at: the listener (conn NULL) or one side. */
struct end {
    struct conn *c;
    int side;
    int fd;
    uint32_t events; /* registered interest */
    bool in_ep;      /* in the epoll set */
};

struct conn {
    struct end end[2];
    struct dir dir[2]; /* dir[s]: read from side s, written to side !s */
    double connect_deadline; /* UNIX side not connected yet while > 0 */
    struct conn *next_wait;  /* on the retry list */
    bool dead;
};

static int g_ep;
static struct sockaddr_un g_unix;
static struct conn *g_wait; /* connections whose UNIX connect is retried */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
    fprintf(stderr, "tcprelay: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void set_interest(struct end *e, uint32_t want)
{
    if (e->fd < 0 || !e->in_ep || e->events == want)
        return;
    struct epoll_event ev = {.events = want, .data.ptr = e};
    if (epoll_ctl(g_ep, EPOLL_CTL_MOD, e->fd, &ev) < 0)
        die("epoll_ctl MOD");
    e->events = want;
}

static void add_end(struct end *e)
{
    struct epoll_event ev = {.events = 0, .data.ptr = e};
    if (epoll_ctl(g_ep, EPOLL_CTL_ADD, e->fd, &ev) < 0)
        die("epoll_ctl ADD");
    e->events = 0;
    e->in_ep = true;
}

/*
 * Side s hung up entirely (EPOLLHUP) and all it sent was read: nothing can
 * reach it any more. It leaves the epoll set (a hang-up is reported at every
 * wait), the direction toward it ends, and the connection closes once what it
 * sent has been delivered to the other side.
 */
static void side_gone(struct conn *c, int s)
{
    struct end *e = &c->end[s];
    if (e->in_ep && epoll_ctl(g_ep, EPOLL_CTL_DEL, e->fd, NULL) < 0)
        die("epoll_ctl DEL");
    e->in_ep = false;
    struct dir *toward = &c->dir[!s];
    toward->eof = toward->shut = true;
    toward->off = toward->len = 0;
}

/* The one teardown path. Freed at the end of the event batch (dead), since
 * later events of the same batch may still point at it. */
static void conn_close(struct conn *c)
{
    for (int s = 0; s < 2; s++)
        if (c->end[s].fd >= 0) {
            close(c->end[s].fd); /* also leaves the epoll set */
            c->end[s].fd = -1;
        }
    c->dead = true;
}

/* Recompute what each side waits for. */
static void conn_interest(struct conn *c)
{
    if (c->connect_deadline > 0) {
        set_interest(&c->end[TCP_SIDE], 0);
        return;
    }
    for (int s = 0; s < 2; s++) {
        struct dir *in = &c->dir[s], *out = &c->dir[!s];
        uint32_t want = 0;
        if (!in->eof && in->len == 0)
            want |= EPOLLIN;
        if (out->off < out->len)
            want |= EPOLLOUT;
        set_interest(&c->end[s], want);
    }
}

/* Move what can move without blocking. False when the connection is gone. */
static bool conn_pump(struct conn *c)
{
    for (int s = 0; s < 2; s++) {
        struct dir *d = &c->dir[s];
        int src = c->end[s].fd, dst = c->end[!s].fd;
        for (;;) {
            if (d->off < d->len) {
                ssize_t w = send(dst, d->buf + d->off, d->len - d->off, MSG_NOSIGNAL);
                if (w < 0) {
                    if (errno == EINTR)
                        continue;
                    if (errno == EAGAIN || errno == EWOULDBLOCK)
                        break;
                    /* The receiver is gone: this direction is over, but
                     * what it sent before it went is still relayed the
                     * other way (a server that answers and closes at once
                     * without reading us); its EOF or error ends the rest. */
                    d->off = d->len = 0;
                    d->eof = d->shut = true;
                    break;
                }
                d->off += (size_t)w;
                if (d->off == d->len)
                    d->off = d->len = 0;
                continue;
            }
            if (d->eof)
                break;
            ssize_t r = recv(src, d->buf, sizeof d->buf, 0);
            if (r < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    break;
                conn_close(c);
                return false;
            }
            if (r == 0) {
                d->eof = true;
                break;
            }
            d->len = (size_t)r;
        }
        if (d->eof && d->len == 0 && !d->shut) {
            shutdown(dst, SHUT_WR);
            d->shut = true;
        }
    }
    if (c->dir[0].shut && c->dir[1].shut) {
        conn_close(c);
        return false;
    }
    conn_interest(c);
    return true;
}

/* Try the UNIX side once. 1 connected, 0 retry later, -1 given up. */
static int try_unix(struct conn *c)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return errno == EMFILE || errno == ENFILE ? 0 : -1;
    if (connect(fd, (struct sockaddr *)&g_unix, sizeof g_unix) == 0 || errno == EINPROGRESS) {
        c->end[UNIX_SIDE].fd = fd;
        add_end(&c->end[UNIX_SIDE]);
        c->connect_deadline = 0;
        return 1;
    }
    int err = errno;
    close(fd);
    /* A full queue, or usbmuxd between stop and start. */
    bool transient = err == EAGAIN || err == ECONNREFUSED || err == ENOENT;
    if (transient && now_s() < c->connect_deadline)
        return 0;
    fprintf(stderr, "tcprelay: connect %s: %s%s\n", g_unix.sun_path, strerror(err),
            transient ? " (gave up retrying)" : "");
    return -1;
}

static void on_accept(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EMFILE || errno == ENFILE)
                return; /* out of descriptors: the backlog keeps it */
            die("accept");
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        if (c == NULL) {
            close(fd);
            continue;
        }
        for (int s = 0; s < 2; s++) {
            c->end[s].c = c;
            c->end[s].side = s;
            c->end[s].fd = -1;
        }
        c->end[TCP_SIDE].fd = fd;
        add_end(&c->end[TCP_SIDE]);
        c->connect_deadline = now_s() + RETRY_LIMIT_S;
        int rc = try_unix(c);
        if (rc < 0) {
            conn_close(c);
            free(c);
        } else if (rc == 0) {
            c->next_wait = g_wait;
            g_wait = c;
        } else {
            conn_pump(c);
            if (c->dead)
                free(c);
        }
    }
}

/* Retry the waiting UNIX connects; frees the ones that end here. */
static void retry_waiting(void)
{
    struct conn **pp = &g_wait;
    while (*pp != NULL) {
        struct conn *c = *pp;
        int rc = c->dead ? -1 : try_unix(c);
        if (rc == 0) {
            pp = &c->next_wait;
            continue;
        }
        *pp = c->next_wait;
        if (rc < 0)
            conn_close(c);
        else
            conn_pump(c);
        if (c->dead)
            free(c);
    }
}

static int listen_tcp(const char *spec, unsigned *port_out)
{
    char host[256];
    const char *colon = strrchr(spec, ':');
    if (colon == NULL || (size_t)(colon - spec) >= sizeof host || colon == spec)
        return -1;
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = '\0';
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    if (getaddrinfo(host, colon + 1, &hints, &res) != 0 || res == NULL)
        return -1;
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 4096) < 0)
        die("listen");
    freeaddrinfo(res);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
        die("getsockname");
    *port_out = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                               : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: tcprelay LISTEN_HOST:PORT UNIX_PATH\n");
        return 2;
    }
    if (strlen(argv[2]) >= sizeof g_unix.sun_path) {
        fprintf(stderr, "tcprelay: UNIX path too long\n");
        return 2;
    }
    g_unix.sun_family = AF_UNIX;
    strcpy(g_unix.sun_path, argv[2]);
    signal(SIGPIPE, SIG_IGN);
    unsigned port;
    int lfd = listen_tcp(argv[1], &port);
    if (lfd < 0) {
        fprintf(stderr, "tcprelay: bad listen address %s (want HOST:PORT)\n", argv[1]);
        return 2;
    }
    g_ep = epoll_create1(EPOLL_CLOEXEC);
    if (g_ep < 0)
        die("epoll_create1");
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(g_ep, EPOLL_CTL_ADD, lfd, &lev) < 0)
        die("epoll_ctl listener");
    printf("tcprelay ready %u\n", port);
    fflush(stdout);

    struct epoll_event evs[MAX_EVENTS];
    struct conn *dead[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(g_ep, evs, MAX_EVENTS, g_wait != NULL ? RETRY_MS : -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        int ndead = 0;
        for (int i = 0; i < n; i++) {
            struct end *e = evs[i].data.ptr;
            if (e == NULL) {
                on_accept(lfd);
                continue;
            }
            struct conn *c = e->c;
            if (c->dead)
                continue; /* closed earlier in this batch */
            if (c->connect_deadline > 0) {
                /* the TCP client hung up while its UNIX connect waits: the
                 * retry list frees it */
                conn_close(c);
                continue;
            }
            if (conn_pump(c) && (evs[i].events & EPOLLERR))
                conn_close(c);
            else if (!c->dead && (evs[i].events & EPOLLHUP) && c->dir[e->side].eof) {
                side_gone(c, e->side);
                conn_pump(c);
            }
            if (c->dead)
                dead[ndead++] = c;
        }
        for (int i = 0; i < ndead; i++)
            free(dead[i]);
        if (g_wait != NULL)
            retry_waiting();
    }
}
