/* Every ordering of the two owners of a plat_socketpair pair (on Windows a
 * loopback TCP pair closed without TIME_WAIT, common/plat_win.c): each owner
 * runs one script (write, shut down its writing, read to EOF, close or
 * close abortively, in the orders the gate and link.c use), and every
 * interleaving of the two scripts is run on a fresh pair. Checked: a reader
 * that reads to EOF gets exactly the bytes the other owner wrote, never an
 * error, and once both owners closed (and nothing is left to read) both
 * sockets are gone: a pair left open is a leak of two sockets. Prints the
 * pairs' ports (the caller counts TIME_WAIT on them) and "ok N"; exit 1 on
 * the first failure, with the scenario. Built for Windows (test_windows.py
 * runs it under wine); POSIX's socketpair passes it trivially. */
#include "plat.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <winsock2.h>

enum op { W, SHUT, READ, CLOSE, ABORT, END };

static const enum op scripts[][5] = {
	{ W, SHUT, READ, CLOSE, END },  /* link.c: FIN relayed, then EOF, close */
	{ READ, W, SHUT, CLOSE, END },  /* a peer that answers after EOF */
	{ W, READ, CLOSE, END },        /* gate: answer, read to EOF, close */
	{ W, CLOSE, END },              /* done without reading */
	{ W, ABORT, END },              /* a session ended on error */
	{ READ, CLOSE, END },
	{ W, SHUT, CLOSE, END },
	{ READ, ABORT, END },
	{ CLOSE, END },
	{ ABORT, END },
};
#define NSCRIPTS (sizeof(scripts) / sizeof(scripts[0]))
#define PAYLOAD  3000

struct end {
	int fd;
	const enum op *s;
	size_t pc;
	size_t sent, got;
	bool eof, closed, abortive;
};

static const char *opname(enum op o)
{
	static const char *const n[] = { "write", "shut", "read-eof", "close", "abort", "end" };
	return n[o];
}

static int sock_gone(int fd)
{
	int type, len = sizeof(type);
	return getsockopt((SOCKET)(intptr_t)fd, SOL_SOCKET, SO_TYPE, (char *)&type, &len) != 0;
}

/* One step of e's script; false if it must wait (a read before EOF). */
static int step(struct end *e, struct end *peer, char *why, size_t cap)
{
	static unsigned char buf[PAYLOAD];
	switch (e->s[e->pc]) {
	case W: {
		memset(buf, 'a' + (int)(e - peer > 0), sizeof(buf));
		size_t off = 0;
		while (off < PAYLOAD) {
			ssize_t r = plat_write(e->fd, buf + off, PAYLOAD - off);
			if (r < 0 && r != -EAGAIN) {
				if (peer->closed)
					break; /* a send to a closed peer fails */
				snprintf(why, cap, "write failed: %s", strerror((int)-r));
				return -1;
			}
			if (r > 0)
				off += (size_t)r;
		}
		e->sent = off;
		break;
	}
	case SHUT:
		plat_shutdown_write(e->fd);
		break;
	case READ:
		for (;;) {
			struct plat_pollfd p = { .fd = e->fd, .events = PLAT_POLL_IN };
			if (plat_poll(&p, 1, 0) <= 0)
				return 0; /* nothing yet: the other owner's turn */
			ssize_t r = plat_read(e->fd, buf, sizeof(buf));
			if (r == -EAGAIN)
				return 0;
			if (r < 0) {
				/* A reset the other owner asked for (abortive), or
				 * its socket closed over bytes it never read (the
				 * reset TCP sends then): the session failed, as it
				 * chose. Anything else loses bytes. */
				if (peer->closed && (peer->abortive || (e->sent && !peer->eof)))
					break;
				snprintf(why, cap, "read failed after %zu of %zu bytes: %s", e->got,
					 peer->sent, strerror((int)-r));
				return -1;
			}
			if (r == 0)
				break;
			e->got += (size_t)r;
		}
		if (!peer->abortive && !(e->sent && !peer->eof && peer->closed) && e->got != peer->sent) {
			snprintf(why, cap, "EOF after %zu of %zu bytes", e->got, peer->sent);
			return -1;
		}
		e->eof = true;
		break;
	case CLOSE:
		plat_close(e->fd);
		e->closed = true;
		break;
	case ABORT:
		plat_close_abortive(e->fd);
		e->closed = e->abortive = true;
		break;
	case END:
		return 0;
	}
	e->pc++;
	return 1;
}

/* Runs scripts a and b, the turn order given by the bits of order (1: b),
 * falling back to the other owner when the chosen one must wait. 1: ran,
 * 0: the order is not a distinct one (skipped), -1: failed. */
static int run(size_t a, size_t b, unsigned order, char *why, size_t cap)
{
	int fds[2];
	int rc = plat_socketpair(fds);
	if (rc < 0) {
		snprintf(why, cap, "plat_socketpair: %s", strerror(-rc));
		return -1;
	}
	struct end e[2] = { { .fd = fds[0], .s = scripts[a] }, { .fd = fds[1], .s = scripts[b] } };
	struct sockaddr_in sa;
	int len = sizeof(sa);
	if (getsockname((SOCKET)(intptr_t)fds[0], (struct sockaddr *)&sa, &len) == 0)
		printf("port %u\n", ntohs(sa.sin_port));
	len = sizeof(sa);
	if (getsockname((SOCKET)(intptr_t)fds[1], (struct sockaddr *)&sa, &len) == 0)
		printf("port %u\n", ntohs(sa.sin_port));
	unsigned turn = 0;
	uint64_t start = plat_monotonic_ms();
	while (e[0].s[e[0].pc] != END || e[1].s[e[1].pc] != END) {
		int who = (order >> (turn < 31 ? turn : 31)) & 1;
		if (e[who].s[e[who].pc] == END)
			who ^= 1;
		int r = step(&e[who], &e[who ^ 1], why, cap);
		if (r < 0)
			return -1;
		if (r > 0) {
			turn++;
			continue;
		}
		r = step(&e[who ^ 1], &e[who], why, cap);
		if (r < 0)
			return -1;
		if (r > 0) {
			turn++;
			continue;
		}
		/* Both owners wait for the other's EOF before ending their own
		 * writing: their own deadlock, not the pair's. */
		bool done_writing[2];
		for (int i = 0; i < 2; i++) {
			done_writing[i] = e[i].closed;
			for (size_t k = 0; k < e[i].pc; k++)
				done_writing[i] |= e[i].s[k] == SHUT;
		}
		if (e[0].s[e[0].pc] == READ && e[1].s[e[1].pc] == READ && !done_writing[0] &&
		    !done_writing[1]) {
			plat_close(fds[0]);
			plat_close(fds[1]);
			return 0;
		}
		/* Bytes or an EOF on their way: a bound only for a pair that never
		 * delivers (10 s; it takes microseconds). */
		if (plat_monotonic_ms() - start > 10000) {
			snprintf(why, cap, "stuck: end 0 at %s, end 1 at %s", opname(e[0].s[e[0].pc]),
				 opname(e[1].s[e[1].pc]));
			return -1;
		}
		Sleep(1);
	}
	/* Both owners closed: both sockets must go, at once or once the
	 * held-back end learns its reader is done (it is, here). */
	if (!sock_gone(fds[0]) || !sock_gone(fds[1])) {
		snprintf(why, cap, "a socket of the pair is still open after both closes (%s, %s)",
			 sock_gone(fds[0]) ? "gone" : "open", sock_gone(fds[1]) ? "gone" : "open");
		return -1;
	}
	return 1;
}

int main(void)
{
	unsigned n = 0;
	char why[200];
	for (size_t a = 0; a < NSCRIPTS; a++)
		for (size_t b = 0; b < NSCRIPTS; b++)
			for (unsigned order = 0; order < 32; order++) {
				int r = run(a, b, order, why, sizeof(why));
				if (r < 0) {
					printf("FAIL script %zu vs %zu, order %#x: %s\n", a, b, order, why);
					for (int i = 0; i < 2; i++) {
						size_t s = i ? b : a;
						printf("  end %d:", i);
						for (size_t k = 0; scripts[s][k] != END; k++)
							printf(" %s", opname(scripts[s][k]));
						printf("\n");
					}
					return 1;
				}
				n += (unsigned)r;
			}
	printf("ok %u\n", n);
	return 0;
}
