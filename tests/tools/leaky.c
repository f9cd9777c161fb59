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
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_term(int sig)
{
	(void)sig;
	stop = 1;
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
	signal(SIGTERM, on_term);
	char *volatile p = lose ? malloc(lose) : NULL;
	if (lose && !p)
		return 1;
	p = NULL; /* the only pointer: now definitely lost */
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
	while (!stop)
		pause();
	return 0;
}
