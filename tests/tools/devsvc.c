/*
 * devsvc - the TCP service on the "device" side for muxshim tests.
 *
 *   devsvc --port P [--host 127.0.0.1] [--verbose]
 *
 * Prints "devsvc ready P" once listening (P = the bound port, also for
 * --port 0). One thread per connection. Each connection starts with one ASCII
 * command line:
 *
 *   SNK <nbytes> <seed>  read until EOF, verify == PRNG(seed)[0..nbytes), then
 *                        write "OK <count>\n" or "BAD <count> <first-bad>\n", close
 *   SRC <nbytes> <seed>  write PRNG(seed)[0..nbytes), shutdown(WR), drain to EOF, close
 *   ECHO                 echo everything until EOF, then shutdown(WR), close
 *   FLOOD                write PRNG(0) until the write fails (SO_SNDBUF capped to 256 KiB)
 *   BOTH <nbytes> <seed> concurrently write PRNG(seed^0x5a5a)[0..nbytes) and verify
 *                        nbytes of PRNG(seed) until EOF; shutdown(WR)+close when
 *                        good, close with RST (SO_LINGER 0) when not
 *
 * Unknown commands get "ERR <reason>\n" and a close.
 * Exit 2 on usage errors, 1 on setup failures.
 */
#include "toolutil.h"

#include <getopt.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>

#define DS_THREAD_STACK (256u * 1024u)
#define DS_MAX_LINE 256u
#define DS_FLOOD_SNDBUF (256 * 1024)

static bool g_verbose;
static atomic_ulong g_conn_id;

#define LOG(...)                                                                                   \
    do {                                                                                           \
        fprintf(stderr, "devsvc: " __VA_ARGS__);                                                   \
        fputc('\n', stderr);                                                                       \
    } while (0)
#define VLOG(...)                                                                                  \
    do {                                                                                           \
        if (g_verbose)                                                                             \
            LOG(__VA_ARGS__);                                                                      \
    } while (0)

static void usage(FILE *f)
{
    fprintf(f, "usage: devsvc --port P [--host HOST] [--verbose]\n"
               "  --port P     TCP port to listen on (0 = pick one; printed as \"devsvc ready P\")\n"
               "  --host HOST  address to bind (default 127.0.0.1)\n"
               "  --verbose    log every connection on stderr\n"
               "commands (first line of a connection): SNK n seed | SRC n seed | ECHO | FLOOD |"
               " BOTH n seed\n");
}

struct conn {
    int fd;
    unsigned long id;
    uint8_t *buf; /* TU_IO_BUF bytes */
};

/* Write PRNG(seed) bytes [0, n) to fd. Returns 0 or -1 (errno). */
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

/* Incremental verifier of PRNG(seed)[0, n). */
struct verifier {
    tu_prng r;
    uint64_t n, count, first_bad; /* first_bad == UINT64_MAX: none yet */
};

static void verifier_init(struct verifier *v, uint64_t n, uint64_t seed)
{
    tu_prng_init(&v->r, seed);
    v->n = n;
    v->count = 0;
    v->first_bad = UINT64_MAX;
}

static void verifier_feed(struct verifier *v, const uint8_t *p, size_t len)
{
    if (v->first_bad == UINT64_MAX && v->count < v->n) {
        uint64_t left = v->n - v->count;
        size_t cl = left < len ? (size_t)left : len;
        size_t ok = tu_prng_check(&v->r, p, cl);
        if (ok != cl)
            v->first_bad = v->count + ok;
    }
    v->count += len;
}

/* Final verdict; returns true when exactly n correct bytes were seen. */
static bool verifier_done(struct verifier *v)
{
    if (v->first_bad == UINT64_MAX && v->count != v->n)
        v->first_bad = v->count < v->n ? v->count : v->n;
    return v->first_bad == UINT64_MAX;
}

/* Read until EOF, feeding the verifier. Returns 0 at EOF, -1 on error. */
static int read_verify(struct conn *c, struct verifier *v, size_t have)
{
    verifier_feed(v, c->buf, have);
    for (;;) {
        ssize_t r = tu_read_some(c->fd, c->buf, TU_IO_BUF);
        if (r == 0)
            return 0;
        if (r < 0)
            return -1;
        verifier_feed(v, c->buf, (size_t)r);
    }
}

static void drain(int fd, uint8_t *buf)
{
    while (tu_read_some(fd, buf, TU_IO_BUF) > 0)
        ;
}

static void do_snk(struct conn *c, uint64_t n, uint64_t seed, size_t have)
{
    struct verifier v;
    verifier_init(&v, n, seed);
    if (read_verify(c, &v, have) < 0) {
        LOG("conn %lu: SNK read error after %llu bytes: %s", c->id, (unsigned long long)v.count,
            strerror(errno));
        return;
    }
    char line[96];
    if (verifier_done(&v)) {
        snprintf(line, sizeof line, "OK %llu\n", (unsigned long long)v.count);
        VLOG("conn %lu: SNK OK %llu", c->id, (unsigned long long)v.count);
    } else {
        snprintf(line, sizeof line, "BAD %llu %llu\n", (unsigned long long)v.count,
                 (unsigned long long)v.first_bad);
        LOG("conn %lu: SNK expected %llu bytes: %s", c->id, (unsigned long long)n, line);
    }
    if (tu_write_all(c->fd, line, strlen(line)) < 0)
        LOG("conn %lu: SNK verdict write: %s", c->id, strerror(errno));
}

static void do_src(struct conn *c, uint64_t n, uint64_t seed)
{
    if (write_stream(c->fd, c->buf, n, seed) < 0) {
        LOG("conn %lu: SRC write: %s", c->id, strerror(errno));
        return;
    }
    shutdown(c->fd, SHUT_WR);
    drain(c->fd, c->buf);
    VLOG("conn %lu: SRC %llu done", c->id, (unsigned long long)n);
}

static void do_echo(struct conn *c, size_t have)
{
    uint64_t total = have;
    if (have > 0 && tu_write_all(c->fd, c->buf, have) < 0)
        goto err;
    for (;;) {
        ssize_t r = tu_read_some(c->fd, c->buf, TU_IO_BUF);
        if (r == 0)
            break;
        if (r < 0 || tu_write_all(c->fd, c->buf, (size_t)r) < 0)
            goto err;
        total += (uint64_t)r;
    }
    shutdown(c->fd, SHUT_WR);
    VLOG("conn %lu: ECHO %llu bytes", c->id, (unsigned long long)total);
    return;
err:
    VLOG("conn %lu: ECHO error after %llu bytes: %s", c->id, (unsigned long long)total,
         strerror(errno));
}

static void do_flood(struct conn *c)
{
    /* Cap the kernel send buffer: with autotuning a stalled FLOOD pins ~4 MB
     * per connection here, which makes 500-way stall tests needlessly heavy. */
    int sndbuf = DS_FLOOD_SNDBUF;
    (void)setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    tu_prng r;
    tu_prng_init(&r, 0);
    for (;;) {
        tu_prng_fill(&r, c->buf, TU_IO_BUF);
        if (tu_write_all(c->fd, c->buf, TU_IO_BUF) < 0)
            break;
    }
    VLOG("conn %lu: FLOOD stopped after ~%llu bytes: %s", c->id, (unsigned long long)r.pos,
         strerror(errno));
}

struct both_writer {
    int fd;
    uint64_t n, seed;
    int err;
};

static void *both_writer_thread(void *arg)
{
    struct both_writer *w = arg;
    uint8_t *buf = malloc(TU_IO_BUF);
    if (buf == NULL) {
        w->err = ENOMEM;
        return NULL;
    }
    if (write_stream(w->fd, buf, w->n, w->seed) < 0)
        w->err = errno;
    free(buf);
    return NULL;
}

/* Returns true if the socket must be closed with RST. */
static bool do_both(struct conn *c, uint64_t n, uint64_t seed, size_t have)
{
    struct both_writer w = {.fd = c->fd, .n = n, .seed = seed ^ 0x5a5a, .err = 0};
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, DS_THREAD_STACK);
    pthread_t th;
    int rc = pthread_create(&th, &attr, both_writer_thread, &w);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        LOG("conn %lu: BOTH pthread_create: %s", c->id, strerror(rc));
        return true;
    }
    struct verifier v;
    verifier_init(&v, n, seed);
    int rr = read_verify(c, &v, have);
    int rerr = errno;
    if (rr < 0) /* unblock the writer */
        shutdown(c->fd, SHUT_RDWR);
    pthread_join(th, NULL);
    bool good = verifier_done(&v);
    if (rr < 0) {
        LOG("conn %lu: BOTH read error after %llu bytes: %s", c->id, (unsigned long long)v.count,
            strerror(rerr));
        return true;
    }
    if (w.err != 0) {
        LOG("conn %lu: BOTH write error: %s", c->id, strerror(w.err));
        return true;
    }
    if (!good) {
        LOG("conn %lu: BOTH BAD count %llu first mismatch %llu (expected %llu)", c->id,
            (unsigned long long)v.count, (unsigned long long)v.first_bad, (unsigned long long)n);
        return true;
    }
    shutdown(c->fd, SHUT_WR);
    VLOG("conn %lu: BOTH %llu OK", c->id, (unsigned long long)n);
    return false;
}

/*
 * Read the command line into `line` (NUL-terminated, without the newline).
 * Returns its length, or -1 on EOF/error/overlong line. Payload bytes that
 * arrived after the newline are moved to the start of c->buf; *have = count.
 */
static int read_command(struct conn *c, char *line, size_t linecap, size_t *have)
{
    size_t got = 0;
    for (;;) {
        uint8_t *nl = memchr(c->buf, '\n', got);
        if (nl != NULL) {
            size_t ll = (size_t)(nl - c->buf);
            if (ll >= linecap)
                return -1;
            memcpy(line, c->buf, ll);
            line[ll] = '\0';
            if (ll > 0 && line[ll - 1] == '\r')
                line[ll - 1] = '\0';
            *have = got - ll - 1;
            memmove(c->buf, nl + 1, *have);
            return (int)ll;
        }
        if (got >= DS_MAX_LINE)
            return -1;
        ssize_t r = tu_read_some(c->fd, c->buf + got, TU_IO_BUF - got);
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
}

static bool parse_n_seed(const char *args, uint64_t *n, uint64_t *seed)
{
    char a[32], b[32], extra[2];
    if (sscanf(args, "%31s %31s %1s", a, b, extra) != 2)
        return false;
    return tu_parse_u64(a, n) && tu_parse_u64(b, seed);
}

static void *conn_thread(void *arg)
{
    struct conn *c = arg;
    bool rst = false;
    char line[DS_MAX_LINE + 1];
    size_t have = 0;
    uint64_t n = 0, seed = 0;
    const char *err = NULL;

    if (read_command(c, line, sizeof line, &have) < 0) {
        VLOG("conn %lu: no command line", c->id);
        goto out;
    }
    VLOG("conn %lu: command \"%s\"", c->id, line);
    if (strncmp(line, "SNK ", 4) == 0) {
        if (parse_n_seed(line + 4, &n, &seed))
            do_snk(c, n, seed, have);
        else
            err = "ERR usage: SNK <nbytes> <seed>\n";
    } else if (strncmp(line, "SRC ", 4) == 0) {
        if (parse_n_seed(line + 4, &n, &seed))
            do_src(c, n, seed);
        else
            err = "ERR usage: SRC <nbytes> <seed>\n";
    } else if (strncmp(line, "BOTH ", 5) == 0) {
        if (parse_n_seed(line + 5, &n, &seed))
            rst = do_both(c, n, seed, have);
        else
            err = "ERR usage: BOTH <nbytes> <seed>\n";
    } else if (strcmp(line, "ECHO") == 0) {
        do_echo(c, have);
    } else if (strcmp(line, "FLOOD") == 0) {
        do_flood(c);
    } else {
        err = "ERR unknown command\n";
    }
    if (err != NULL) {
        LOG("conn %lu: bad command \"%s\"", c->id, line);
        (void)tu_write_all(c->fd, err, strlen(err));
    }
out:
    if (rst)
        tu_close_rst(c->fd);
    else
        close(c->fd);
    free(c->buf);
    free(c);
    return NULL;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"port", required_argument, NULL, 'p'},
        {"host", required_argument, NULL, 'H'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *host = "127.0.0.1";
    const char *port = NULL;
    uint32_t portnum;
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'p':
            port = optarg;
            if (!tu_parse_u32(port, &portnum) || portnum > 65535) {
                fprintf(stderr, "devsvc: --port must be 0..65535\n");
                return 2;
            }
            break;
        case 'H':
            host = optarg;
            break;
        case 'v':
            g_verbose = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc || port == NULL) {
        usage(stderr);
        return 2;
    }
    tu_raise_nofile();
    signal(SIGPIPE, SIG_IGN);

    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "devsvc: cannot resolve %s: %s\n", host, gai_strerror(rc));
        return 2;
    }
    int lfd = -1;
    int last_err = 0;
    for (struct addrinfo *ai = res; ai != NULL && lfd < 0; ai = ai->ai_next) {
        lfd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (lfd < 0) {
            last_err = errno;
            continue;
        }
        int one = 1;
        setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(lfd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(lfd, 4096) < 0) {
            last_err = errno;
            close(lfd);
            lfd = -1;
        }
    }
    freeaddrinfo(res);
    if (lfd < 0) {
        fprintf(stderr, "devsvc: cannot listen on %s:%s: %s\n", host, port, strerror(last_err));
        return 1;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(lfd, (struct sockaddr *)&ss, &sl) < 0) {
        fprintf(stderr, "devsvc: getsockname: %s\n", strerror(errno));
        return 1;
    }
    unsigned bound = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                              : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    printf("devsvc ready %u\n", bound);
    fflush(stdout);

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, DS_THREAD_STACK);
    for (;;) {
        int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN)
                continue;
            LOG("accept: %s", strerror(errno));
            if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ENOBUFS)
                usleep(10000);
            continue;
        }
        tu_set_nodelay(cfd);
        struct conn *c = malloc(sizeof *c);
        uint8_t *buf = malloc(TU_IO_BUF);
        if (c == NULL || buf == NULL) {
            LOG("out of memory, dropping connection");
            free(c);
            free(buf);
            close(cfd);
            continue;
        }
        c->fd = cfd;
        c->id = atomic_fetch_add(&g_conn_id, 1) + 1;
        c->buf = buf;
        pthread_t th;
        rc = pthread_create(&th, &attr, conn_thread, c);
        if (rc != 0) {
            LOG("pthread_create: %s, dropping connection", strerror(rc));
            close(cfd);
            free(buf);
            free(c);
        }
    }
}
