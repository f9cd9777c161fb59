/*
 * leaky - a stand-in daemon with known memory faults, so that the valgrind
 * pass can prove it catches them (tests/integration/test_valgrind.py).
 *
 *   leaky [--lose N] [--uninit]
 *
 * Prints "leaky ready", then waits for SIGTERM and exits 0. Before it does,
 * --lose N allocates N bytes and drops the pointer (a definite leak), and
 * --uninit branches on a byte never written (an error memcheck reports).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The block's only pointer lives in this frame, which is gone (and then
 * overwritten by scrub_stack) before the leak check looks for pointers. */
static __attribute__((noinline)) int lose_bytes(size_t n)
{
	char *volatile p = malloc(n);
	if (!p)
		return -1;
	memset(p, 0x5a, n);
	p = NULL;
	return 0;
}

static __attribute__((noinline)) void scrub_stack(void)
{
	volatile char junk[8192];
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = 0;
}

int main(int argc, char **argv)
{
	size_t lose = 0;
	int uninit = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--lose") == 0 && i + 1 < argc)
			lose = strtoul(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--uninit") == 0)
			uninit = 1;
		else {
			fprintf(stderr, "usage: leaky [--lose N] [--uninit]\n");
			return 2;
		}
	}
	/* SIGTERM stays blocked and is taken by sigwait: no window between a
	 * check and a wait in which it could be missed. */
	sigset_t term;
	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	sigprocmask(SIG_BLOCK, &term, NULL);
	if (lose && lose_bytes(lose) < 0)
		return 1;
	scrub_stack();
	if (uninit) {
		/* volatile: read it for real, and keep the compiler from
		 * refusing a read it can see is of nothing */
		volatile char *q = malloc(16);
		if (!q)
			return 1;
		if (q[3] == 'x') /* never written */
			puts("x");
		free((void *)q);
	}
	printf("leaky ready\n");
	fflush(stdout);
	int sig;
	sigwait(&term, &sig);
	return 0;
}
