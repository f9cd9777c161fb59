/* muxshim: presents the usbmuxd socket inside a container and answers it:
 * the broker (client.c, broker.c) answers what it can from one upstream
 * subscription and hands the rest to the relays (session.c for unix: and
 * tcp:, tunnel.c for tunnel:); --passthrough relays every session as it
 * is. Setup, options, listener, loop. */
#include "shim.h"
#include "daemon.h"
#include "tunnel/link.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef MUXSHIM_VERSION
#define MUXSHIM_VERSION "0.1.0"
#endif

#define DEFAULT_LISTEN   "/var/run/usbmuxd"
#define DEFAULT_UPSTREAM "unix:/run/host/usbmuxd"
#define LISTEN_BACKLOG   512
#define ACCEPTS_PER_WAKE 64

static void usage(FILE *f)
{
	fprintf(f,
		"usage: muxshim [options]\n"
		"Presents a usbmuxd socket to containers and brokers it to the host's usbmuxd.\n"
		"\n"
		"  --listen PATH           socket to serve (default " DEFAULT_LISTEN ")\n"
		"  --socket-mode MODE      octal mode of that socket (default 0666)\n"
		"  --socket-owner O[:G]    owner and group of that socket (names or numbers)\n"
		"  --user NAME             run as this user once the sockets exist (from root)\n"
		"  --no-seccomp            do not enter the seccomp sandbox (Linux)\n"
		"  --upstream ADDR         where sessions go; repeatable (up to 64: the broker\n"
		"                          lists every upstream's devices as one); default\n"
		"                          $MUXSHIM_UPSTREAM (comma-separated), else\n"
		"                          " DEFAULT_UPSTREAM ":\n"
		"                            unix:PATH          the host's socket, mounted by directory\n"
		"                            tunnel:HOST:PORT   muxshim-host, all sessions over one TCP\n"
		"                                               connection (Windows/macOS hosts)\n"
		"                            tcp:HOST:PORT      one TCP connection per session (legacy:\n"
		"                                               spends a host port per session)\n"
		"  --token-file FILE       tunnel: shared secret, the same file as muxshim-host's\n"
		"                          (one token for every tunnel: upstream)\n"
		"                          (at least 128 random bits: see --gen-token)\n"
		"  --gen-token FILE        write a new random token to FILE (a new file, mode\n"
		"                          0600) and exit\n"
		"  --tunnel-wait MS        tunnel: how long a new client waits for a tunnel that is\n"
		"                          down before it is closed (default 2000)\n"
		"  --keepalive MS          tunnel: ping after MS without traffic (default 15000)\n"
		"  --max-sessions N        concurrent client sessions (default 1024); more wait\n"
		"                          in the listen queue\n"
		"  --connect-timeout MS    how long a session waits for a busy upstream (default 2000)\n"
		"  --request-timeout MS    close a client that sends nothing, or stops in the middle\n"
		"                          of a request, for MS (default 10000; 0 off)\n"
		"  --log-level LEVEL       error, warn, info or debug (default info)\n"
		"  --log-file PATH         append log lines to PATH instead of stderr (reopened\n"
		"                          on SIGHUP)\n"
		"  --no-splice             always copy through user space (for comparison)\n"
		"  --control PATH          statistics socket for `muxshim stats` (default LISTEN.ctl;\n"
		"                          \"none\" disables it)\n"
		"  --metrics HOST:PORT     serve Prometheus metrics over HTTP (default: off)\n"
		"  --stats-interval S      log a one-line summary every S seconds (default 300; 0 off)\n"
		"  --warn-rate N           warn when one process opens more than N sessions/s over\n"
		"                          10 s (default 5; 0 off)\n"
		"  --passthrough           relay every client session to the upstream as it is,\n"
		"                          instead of the broker (docs/BROKER.md): one upstream\n"
		"                          Listen and a device table that answer ListDevices,\n"
		"                          Listen, ReadBUID and ListListeners here (the default)\n"
		"  --no-inspect            passthrough: do not read requests (counts stay per process)\n"
		"  --device UDID[,UDID]    broker: only these devices exist for this shim's clients\n"
		"                          (repeatable; default $MUXSHIM_DEVICES, else every device)\n"
		"  --connection KIND       broker: usb, network or any (default any)\n"
		"  --event-queue BYTES     broker: Listen events queued for a client that does not\n"
		"                          read them before it is disconnected (default 524288)\n"
		"\n"
		"muxshim stats [--json] [--control PATH | --listen PATH]\n"
		"  asks a running muxshim who is using usbmuxd, how often and for what\n"
		"muxshim health [--live | --all] [--control PATH | --listen PATH]\n"
		"  exits 0 if a running muxshim still serves its socket and at least one\n"
		"  upstream is usable (UNIX: accepts a connection; tunnel: up), else 1;\n"
		"  prints why, per upstream.\n"
		"  --live: the daemon and its socket only, not the upstreams\n"
		"  --all: every upstream must be usable\n"
		"  --help, --version\n");
}

static int parse_uint(const char *s, unsigned base, unsigned long min, unsigned long max,
		      unsigned *out)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, (int)base);
	if (errno || end == s || *end || s[0] == '-' || v < min || v > max)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

static void die_usage(const char *fmt, const char *arg)
{
	fprintf(stderr, "muxshim: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\nTry 'muxshim --help'.\n");
	exit(2);
}

static void parse_args(int argc, char **argv, struct shim_config *cfg)
{
	enum { O_LISTEN = 256, O_MODE, O_UPSTREAM, O_MAXSESS, O_CTIMEOUT, O_LOGLEVEL, O_HELP,
	       O_VERSION, O_NOSPLICE, O_TOKEN, O_TWAIT, O_KEEPALIVE, O_CONTROL, O_METRICS,
	       O_INTERVAL, O_WARNRATE, O_NOINSPECT, O_RTIMEOUT, O_USER, O_OWNER, O_NOSECCOMP,
	       O_GENTOKEN, O_LOGFILE, O_BROKER, O_PASSTHROUGH, O_DEVICE, O_CONNECTION, O_EVQUEUE };
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, O_LISTEN },
		{ "socket-mode", required_argument, NULL, O_MODE },
		{ "upstream", required_argument, NULL, O_UPSTREAM },
		{ "max-sessions", required_argument, NULL, O_MAXSESS },
		{ "connect-timeout", required_argument, NULL, O_CTIMEOUT },
		{ "log-level", required_argument, NULL, O_LOGLEVEL },
		{ "no-splice", no_argument, NULL, O_NOSPLICE },
		{ "token-file", required_argument, NULL, O_TOKEN },
		{ "gen-token", required_argument, NULL, O_GENTOKEN },
		{ "tunnel-wait", required_argument, NULL, O_TWAIT },
		{ "keepalive", required_argument, NULL, O_KEEPALIVE },
		{ "control", required_argument, NULL, O_CONTROL },
		{ "metrics", required_argument, NULL, O_METRICS },
		{ "stats-interval", required_argument, NULL, O_INTERVAL },
		{ "warn-rate", required_argument, NULL, O_WARNRATE },
		{ "no-inspect", no_argument, NULL, O_NOINSPECT },
		{ "request-timeout", required_argument, NULL, O_RTIMEOUT },
		{ "user", required_argument, NULL, O_USER },
		{ "socket-owner", required_argument, NULL, O_OWNER },
		{ "no-seccomp", no_argument, NULL, O_NOSECCOMP },
		{ "log-file", required_argument, NULL, O_LOGFILE },
		{ "broker", no_argument, NULL, O_BROKER },
		{ "passthrough", no_argument, NULL, O_PASSTHROUGH },
		{ "device", required_argument, NULL, O_DEVICE },
		{ "connection", required_argument, NULL, O_CONNECTION },
		{ "event-queue", required_argument, NULL, O_EVQUEUE },
		{ "help", no_argument, NULL, O_HELP },
		{ "version", no_argument, NULL, O_VERSION },
		{ NULL, 0, NULL, 0 },
	};
	/* --upstream (repeatable) replaces MUXSHIM_UPSTREAM (comma-separated). */
	const char *upstreams[UPSTREAM_MAX];
	unsigned nup = 0;
	char *env_up = getenv("MUXSHIM_UPSTREAM");
	bool up_given = false;

	cfg->listen_path = DEFAULT_LISTEN;
	cfg->socket_mode = 0666;
	cfg->max_sessions = 1024;
	cfg->connect_timeout_ms = 2000;
	cfg->log_level = LOG_INFO;
	cfg->splice = true;
	cfg->tunnel_wait_ms = 2000;
	cfg->keepalive_ms = 15000;
	cfg->inspect = true;
	cfg->warn_rate = 5.0;
	cfg->stats_interval_s = 300;
	cfg->request_timeout_ms = 10000;
	cfg->seccomp = true;
	cfg->broker = true;
	umx_filter_init(&cfg->filter);
	cfg->event_queue = CLIENT_EVENTS_DEFAULT;
	bool devices_given = false, passthrough = false;
	const char *control = NULL;

	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case O_LISTEN:
			if (optarg[0] != '/' || strlen(optarg) >= ADDR_PATH_MAX)
				die_usage("--listen '%s': need an absolute path shorter than 108 bytes",
					  optarg);
			cfg->listen_path = optarg;
			break;
		case O_MODE:
			if (parse_uint(optarg, 8, 0, 0777, &cfg->socket_mode) < 0)
				die_usage("--socket-mode '%s': need an octal mode such as 0660", optarg);
			break;
		case O_UPSTREAM:
			if (!up_given)
				nup = 0;
			up_given = true;
			if (nup == UPSTREAM_MAX)
				die_usage("--upstream %s: at most 64 upstreams", optarg);
			upstreams[nup++] = optarg;
			break;
		case O_MAXSESS:
			if (parse_uint(optarg, 10, 1, 1000000, &cfg->max_sessions) < 0)
				die_usage("--max-sessions '%s': need a number from 1 to 1000000", optarg);
			break;
		case O_CTIMEOUT:
			if (parse_uint(optarg, 10, 0, 600000, &cfg->connect_timeout_ms) < 0)
				die_usage("--connect-timeout '%s': need milliseconds, 0 to 600000", optarg);
			break;
		case O_LOGLEVEL:
			if (log_parse_level(optarg, &cfg->log_level) < 0)
				die_usage("--log-level '%s': need error, warn, info or debug", optarg);
			break;
		case O_TOKEN:
		{
			char err[512];
			if (daemon_load_token("muxshim", optarg, cfg->token, sizeof(cfg->token),
					      &cfg->token_len, err, sizeof(err)) < 0)
				die_usage("%s", err);
			break;
		}
		case O_GENTOKEN:
			exit(daemon_gen_token("muxshim", optarg));
		case O_TWAIT:
			if (parse_uint(optarg, 10, 0, 600000, &cfg->tunnel_wait_ms) < 0)
				die_usage("--tunnel-wait '%s': need milliseconds, 0 to 600000", optarg);
			break;
		case O_KEEPALIVE:
			if (parse_uint(optarg, 10, 100, 3600000, &cfg->keepalive_ms) < 0)
				die_usage("--keepalive '%s': need 100 to 3600000 ms", optarg);
			break;
		case O_CONTROL:
			control = optarg;
			break;
		case O_METRICS: {
			char err[256];
			if (addr_parse_hostport(optarg, cfg->metrics_host, sizeof(cfg->metrics_host),
						&cfg->metrics_port, err, sizeof(err)) < 0)
				die_usage("--metrics: %s", err);
			break;
		}
		case O_INTERVAL:
			if (parse_uint(optarg, 10, 0, 86400, &cfg->stats_interval_s) < 0)
				die_usage("--stats-interval '%s': need seconds, 0 to 86400", optarg);
			break;
		case O_WARNRATE: {
			char *end;
			errno = 0;
			cfg->warn_rate = strtod(optarg, &end);
			if (errno || end == optarg || *end || cfg->warn_rate < 0 || cfg->warn_rate > 1e6)
				die_usage("--warn-rate '%s': need sessions per second, 0 to 1000000", optarg);
			break;
		}
		case O_NOINSPECT:
			cfg->inspect = false;
			break;
		case O_RTIMEOUT:
			if (parse_uint(optarg, 10, 0, 3600000, &cfg->request_timeout_ms) < 0)
				die_usage("--request-timeout '%s': need milliseconds, 0 to 3600000", optarg);
			break;
		case O_USER:
			if (!*optarg)
				die_usage("--user '%s': need a user name or number", optarg);
			cfg->user = optarg;
			break;
		case O_OWNER:
			if (!*optarg || strcmp(optarg, ":") == 0)
				die_usage("--socket-owner '%s': need OWNER, OWNER:GROUP or :GROUP", optarg);
			cfg->socket_owner = optarg;
			break;
		case O_NOSECCOMP:
			cfg->seccomp = false;
			break;
		case O_LOGFILE:
			if (!*optarg)
				die_usage("--log-file '%s': need a path", optarg);
			cfg->log_file = optarg;
			break;
		case O_NOSPLICE:
			cfg->splice = false;
			break;
		case O_BROKER: /* the default; kept for command lines of 0.1 */
			passthrough = false;
			break;
		case O_PASSTHROUGH:
			passthrough = true;
			break;
		case O_DEVICE:
			if (umx_filter_add_list(&cfg->filter, optarg) < 0)
				die_usage("--device '%s': need UDIDs (letters, digits, '-'), separated by "
					  "commas, at most 256 in all", optarg);
			devices_given = true;
			break;
		case O_EVQUEUE:
			if (parse_uint(optarg, 10, 4096, 64u << 20, &cfg->event_queue) < 0)
				die_usage("--event-queue '%s': need bytes, 4096 to 67108864", optarg);
			break;
		case O_CONNECTION:
			if (umx_filter_set_conn(&cfg->filter, optarg) < 0)
				die_usage("--connection '%s': need usb, network or any", optarg);
			break;
		case O_HELP:
			usage(stdout);
			exit(0);
		case O_VERSION:
			printf("muxshim %s\n", MUXSHIM_VERSION);
			exit(0);
		default:
			die_usage("unknown or incomplete option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		die_usage("unexpected argument '%s'", argv[optind]);

	const char *env_devices = getenv("MUXSHIM_DEVICES");
	if (!devices_given && env_devices && *env_devices &&
	    umx_filter_add_list(&cfg->filter, env_devices) < 0)
		die_usage("MUXSHIM_DEVICES '%s': need UDIDs (letters, digits, '-'), separated by "
			  "commas, at most 256", env_devices);
	cfg->broker = !passthrough;
	if (!cfg->broker && (cfg->filter.n || cfg->filter.conn != UMX_CONN_ANY))
		die_usage("%s: a device filter needs the broker (--passthrough relays requests "
			  "unread)", cfg->filter.n ? "--device/MUXSHIM_DEVICES" : "--connection");
	if (cfg->broker && !cfg->inspect)
		die_usage("%s applies to --passthrough (the broker reads every request)",
			  "--no-inspect");

	if (!up_given && env_up && *env_up) {
		static char env_copy[4096];
		if (strlen(env_up) >= sizeof(env_copy))
			die_usage("MUXSHIM_UPSTREAM: longer than %s bytes", "4095");
		strcpy(env_copy, env_up);
		for (char *save = NULL, *item = strtok_r(env_copy, ",", &save); item;
		     item = strtok_r(NULL, ",", &save)) {
			if (nup == UPSTREAM_MAX)
				die_usage("MUXSHIM_UPSTREAM %s...: at most 64 upstreams", item);
			upstreams[nup++] = item;
		}
	}
	if (!nup)
		upstreams[nup++] = DEFAULT_UPSTREAM;
	bool any_tunnel = false;
	for (unsigned i = 0; i < nup; i++) {
		char err[256];
		struct addr *a = &cfg->upstream[i];
		if (addr_parse(upstreams[i], ADDR_UNIX | ADDR_TCP | ADDR_TUNNEL, a, err, sizeof(err)) < 0)
			die_usage("--upstream: %s", err);
		any_tunnel |= a->kind == ADDR_TUNNEL;
		for (unsigned j = 0; j < i; j++) {
			char x[ADDR_SPEC_MAX], y[ADDR_SPEC_MAX];
			addr_format(a, x, sizeof(x));
			addr_format(&cfg->upstream[j], y, sizeof(y));
			if (strcmp(x, y) == 0)
				die_usage("--upstream %s: given twice", x);
		}
	}
	cfg->nupstreams = nup;
	if (cfg->token_len && !any_tunnel)
		die_usage("--token-file applies to tunnel: upstreams only (%s)", upstreams[0]);
	if (!cfg->broker && nup > 1)
		die_usage("--passthrough relays to one upstream: several (%s, ...) need the broker",
			  upstreams[0]);

	static char control_default[ADDR_PATH_MAX + 8];
	if (!control) {
		snprintf(control_default, sizeof(control_default), "%s.ctl", cfg->listen_path);
		control = control_default;
	}
	if (strcmp(control, "none") == 0)
		cfg->control_path = NULL;
	else if (control[0] != '/' || strlen(control) >= ADDR_PATH_MAX)
		die_usage("--control '%s': need an absolute path shorter than 108 bytes, or none",
			  control);
	else
		cfg->control_path = control;
}

/* The subcommands' way to name the daemon: --control PATH, or --listen PATH
 * (its control socket is PATH.ctl). True when argv[*i] was that option. */
static bool control_arg(int argc, char **argv, int *i, const char **control)
{
	static char derived[ADDR_PATH_MAX + 8];
	if (strcmp(argv[*i], "--control") == 0 && *i + 1 < argc) {
		*control = argv[++*i];
		return true;
	}
	if (strcmp(argv[*i], "--listen") == 0 && *i + 1 < argc) {
		snprintf(derived, sizeof(derived), "%s.ctl", argv[++*i]);
		*control = derived;
		return true;
	}
	return false;
}

/* `muxshim stats [--json] [--control PATH | --listen PATH]` */
static int stats_main(int argc, char **argv)
{
	const char *format = "table", *control = DEFAULT_LISTEN ".ctl";
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0) {
			format = "json";
		} else if (!control_arg(argc, argv, &i, &control)) {
			fprintf(stderr, "usage: muxshim stats [--json] [--control PATH | --listen PATH]\n");
			return 2;
		}
	}
	return control_query(control, format);
}

/* `muxshim health [--live | --all] [--control PATH | --listen PATH]` (HEALTHCHECK) */
static int health_main(int argc, char **argv)
{
	const char *control = DEFAULT_LISTEN ".ctl";
	bool live = false, all = false;
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--live") == 0) {
			live = true;
		} else if (strcmp(argv[i], "--all") == 0) {
			all = true;
		} else if (!control_arg(argc, argv, &i, &control)) {
			fprintf(stderr, "usage: muxshim health [--live | --all] [--control PATH | "
					"--listen PATH]\n");
			return 2;
		}
	}
	return control_health(control, live, all);
}

/* The summary line: every --stats-interval, and on SIGUSR1. */
static void shim_status(void *ctx)
{
	struct shim *s = ctx;
	char line[512];
	stats_summary(&s->stats, loop_now(s->loop), line, sizeof(line));
	log_info("%s", line);
}

static void on_summary(struct loop_timer *t)
{
	struct shim *s = t->ctx;
	shim_status(s);
	loop_timer_arm(s->loop, t, (uint64_t)s->cfg.stats_interval_s * 1000);
}

static bool shim_has_room(void *ctx)
{
	struct shim *s = ctx;
	return s->nsessions < s->cfg.max_sessions;
}

static void shim_accepted(void *ctx, int fd)
{
	struct shim *s = ctx;
	if (s->cfg.broker)
		client_start(s, fd);
	else
		s->up[0]->ops->accept(s->up[0], fd);
}


int main(int argc, char **argv)
{
	static struct shim shim; /* large scratch buffer: not on the stack */
	struct shim *s = &shim;
	plat_std_fds();
	if (argc >= 2 && strcmp(argv[1], "stats") == 0)
		return stats_main(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "health") == 0)
		return health_main(argc, argv);
	parse_args(argc, argv, &s->cfg);
	s->self_pid = getpid();
	log_init("muxshim", s->cfg.log_level);
	if (s->cfg.log_file) {
		int lrc = log_open_file(s->cfg.log_file);
		if (lrc < 0) {
			log_error("cannot open the log file %s: %s", s->cfg.log_file, strerror(-lrc));
			return 1;
		}
	}

	s->rl_upstream.interval_ms = 10000;
	s->rl_timeout.interval_ms = 10000;
	s->rl_refused.interval_ms = 10000;
	int rc = loop_new(&s->loop);
	if (rc < 0) {
		log_error("cannot create the event loop: %s", strerror(-rc));
		return 1;
	}
	static struct daemon_signals sig = { .status = shim_status };
	sig.ctx = s;
	rc = daemon_watch_signals(s->loop, &sig);
	if (rc < 0) {
		log_error("cannot install signal handlers: %s", strerror(-rc));
		return 1;
	}

	bool replaced;
	rc = plat_unix_listen(s->cfg.listen_path, s->cfg.socket_mode, s->cfg.socket_owner,
			      LISTEN_BACKLOG, &s->listen_fd, &replaced, &s->listen_id);
	if (rc == -ESRCH || (rc == -EPERM && s->cfg.socket_owner)) {
		log_error("--socket-owner %s: %s", s->cfg.socket_owner,
			  rc == -ESRCH ? "no such user or group" : strerror(-rc));
		return 1;
	}
	if (rc == -EADDRINUSE) {
		log_error("%s is in use: another process (a usbmuxd inside this container?) "
			  "is accepting connections on it. Refusing to take it over; stop that "
			  "process or choose another --listen path", s->cfg.listen_path);
		return 1;
	}
	if (rc == -EEXIST) {
		log_error("%s exists and is not a socket; refusing to replace it",
			  s->cfg.listen_path);
		return 1;
	}
	if (rc < 0) {
		log_error("cannot listen on %s: %s", s->cfg.listen_path, strerror(-rc));
		return 1;
	}
	if (replaced)
		log_info("replaced the stale socket file %s (nothing was listening on it)",
			 s->cfg.listen_path);

	char up[ADDR_SPEC_MAX * 4] = "";
	for (unsigned i = 0; i < s->cfg.nupstreams && i < 4; i++) {
		char one[ADDR_SPEC_MAX];
		addr_format(&s->cfg.upstream[i], one, sizeof(one));
		snprintf(up + strlen(up), sizeof(up) - strlen(up), "%s%s", i ? ", " : "", one);
	}
	log_info("muxshim %s listening on %s (mode %04o), upstream%s %s%s", MUXSHIM_VERSION,
		 s->cfg.listen_path, s->cfg.socket_mode, s->cfg.nupstreams > 1 ? "s" : "", up,
		 s->cfg.nupstreams > 4 ? ", ..." : "");

	acceptor_start(&s->acceptor, s->loop, s->listen_fd, ACCEPTS_PER_WAKE, shim_has_room,
		       shim_accepted, s);
	stats_init(&s->stats, s->cfg.inspect, s->cfg.warn_rate, loop_now(s->loop));
	if (control_start(s) < 0) {
		plat_unix_unlink_if_ours(s->cfg.listen_path, &s->listen_id);
		return 1;
	}
	loop_timer_init(&s->summary, on_summary, s);
	if (s->cfg.stats_interval_s)
		loop_timer_arm(s->loop, &s->summary, (uint64_t)s->cfg.stats_interval_s * 1000);

	/* Before the sandbox: resolvers' threads (upstreams_create). */
	if (upstreams_create(s) < 0 || daemon_harden(s->cfg.user, s->cfg.seccomp) < 0) {
		upstreams_free(s);
		control_stop(s);
		plat_unix_unlink_if_ours(s->cfg.listen_path, &s->listen_id);
		return 1;
	}
	upstreams_start(s);
	if (s->cfg.broker)
		broker_init(s);
	while (rc == 0 && !sig.stop) {
		rc = loop_run_once(s->loop, -1);
	}
	if (rc < 0)
		log_error("event loop failed: %s", strerror(-rc));
	else
		log_info("signal %d: shutting down (%u sessions open, %llu served)", sig.stop,
			 s->nsessions, (unsigned long long)s->sessions_total);

	acceptor_stop(&s->acceptor);
	control_stop(s);
	plat_unix_unlink_if_ours(s->cfg.listen_path, &s->listen_id);
	plat_close(s->listen_fd);
	broker_shutdown(s);
	session_close_all(s);
	upstreams_stop(s);
	upstreams_free(s);
	umx_memo_free(&s->memo);
	loop_free(s->loop);
	return rc < 0 ? 1 : 0;
}
