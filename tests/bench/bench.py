#!/usr/bin/env python3
"""muxshim benchmarks (`make bench`), Python 3.11 stdlib only.

All paths are measured side by side in one run. A run is ROUNDS rounds
(--reps, default 7); in each round every path is measured once per metric,
the paths back to back, so that load from elsewhere on a shared machine hits
them alike. A figure is the MEDIAN of its rounds; a ratio or difference
between two paths is that of their medians.

A. The real usbmuxd (a private instance, see tests/lib/harness.py):
   ListDevices sessions/s, sequential and with 8 parallel clients
   (muxconn --list-loop), and the TIME_WAIT sockets a path leaves per 1,000
   sessions. Each path runs in a network namespace of its own, the client
   and every process of the path inside it, so that the TIME_WAIT count
   (`ss -tan state time-wait` before and after) is exactly that path's.
     direct          client -> usbmuxd
     muxshim         client -> muxshim -> usbmuxd
     socat           client -> socat UNIX-LISTEN,fork UNIX-CONNECT -> usbmuxd
     tunnel          client -> muxshim tunnel: -> muxshim-host unix: -> usbmuxd
     tunnel, encrypted  as tunnel, with a token on both sides: every tunnel
                     byte in AES-256-GCM records (docs/PROTOCOL.md §7)
     tunnel, TCP up  as tunnel, but muxshim-host's upstream is usbmuxd's TCP
                     listener (the Windows shape: build/tests/tcprelay on :27015
                     stands in, one event loop, no process per session)
     (stand-in)      client -> tcprelay :27015 -> usbmuxd, for reference:
                     the ceiling of the two rows that use the stand-in
     seed chain      client -> socat UNIX-LISTEN,fork TCP:23333 (the container
                     hop) -> socat reverse proxy :23333 -> :27015 -> tcprelay
                     (Apple's TCP listener)
B. A fake device (fakedev + devsvc): bulk MB/s through one Connect session
   (--recv: device to client, --send: client to device) and the round trip
   of a 1 KiB request/response (--rtt); then the round trip while another
   stream of the same path runs a saturating bulk transfer.
   The tunnel is measured both plain and encrypted (a token), side by side.
C. Idle RSS (VmRSS) of every muxshim and muxshim-host after start-up and
   after the runs.
D. The tunnel handshake, plain and with a token (authentication and the
   encryption keys): the time from connect until the helper is up, as a
   stdlib client that speaks the handshake measures it; and the helper's
   memory per idle tunnel (RSS with --tunnels open, less RSS before).

E. Several upstreams (one shim aggregating several hosts): ListDevices
   sessions/s and Connect sessions/s (the WebDriverAgent pattern, as in B),
   sequential and 8 parallel, through the broker over encrypted tunnels,
   each "host" a fakedev of 8 phones behind its own muxshim-host:
     1 upstream      one host of 8 phones
     1 upstream, 128 one host of 128 phones (the 16-host list's size, one tunnel)
     16 upstreams    16 hosts of 8 phones (128)
   Connect goes to a phone of the last host. --parts E runs this part alone.

Prints the tables and PASS/MISS against the targets and writes the same as
markdown to build/bench-results.md. Exit status 0 when everything could be
measured (a MISS does not fail the bench), 1 when something could not.
"""

import argparse
import datetime
import hashlib
import hmac
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import harness  # noqa: E402

MIB = 1 << 20
RESULTS_MD = os.path.join(harness.BUILD, "bench-results.md")

# Ports inside each path's private network namespace (the real numbers).
P_USBMUXD_TCP = 27015      # Apple's usbmuxd TCP listener on Windows
P_REVERSE_PROXY = 23333    # the seed's host reverse proxy
P_TUNNEL = 27016           # muxshim-host
HOP_NAMES = {P_USBMUXD_TCP: ":27015", P_REVERSE_PROXY: ":23333", P_TUNNEL: ":27016"}


class BenchError(Exception):
    pass


class Deadline(BaseException):   # not caught by the per-measurement handlers
    pass


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------

def log(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


def killpg(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run(argv, timeout):
    """Run argv in its own session; kill its group on timeout. (rc, out, err)."""
    p = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        killpg(p.pid)
        out, err = p.communicate()
        raise BenchError("%s timed out after %.0f s; stderr: %s"
                         % (" ".join(map(str, argv)), timeout,
                            err.decode("utf-8", "replace")[-1000:]))
    finally:
        killpg(p.pid)
    return p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


class NetNS:
    """A fresh network namespace with lo up, held open by a sleeping process.
    wrap(argv) runs argv inside it (nsenter execs, so the pid is the
    program's own)."""

    def __init__(self, name, logdir):
        self.name = name
        self.holder = harness.Proc(
            ["unshare", "--net", "sh", "-c",
             "ip link set lo up && echo netns ready && exec sleep infinity"],
            name=name + "-netns", logdir=logdir, ready_line=r"^netns ready$")

    def start(self):
        self.holder.start()
        self.pid = self.holder.pid
        return self

    def wrap(self, argv):
        return ["nsenter", "--net=/proc/%d/ns/net" % self.pid, "--"] + [str(a) for a in argv]

    def listening(self, port):
        for table in ("tcp", "tcp6"):
            try:
                with open("/proc/%d/net/%s" % (self.pid, table)) as f:
                    next(f)
                    for line in f:
                        fields = line.split()
                        if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                            return True
            except (OSError, StopIteration):
                continue
        return False

    def time_wait(self):
        """TIME_WAIT sockets in this namespace: (total, {port of a hop: count})."""
        rc, out, err = run(self.wrap(["ss", "-Htan", "state", "time-wait"]), 30)
        if rc != 0:
            raise BenchError("ss failed in %s: %s" % (self.name, err))
        total, by_port = 0, {}
        for line in out.splitlines():
            f = line.split()
            if len(f) < 4:
                continue
            total += 1
            local, peer = int(f[-2].rsplit(":", 1)[1]), int(f[-1].rsplit(":", 1)[1])
            for port in (local, peer):
                if port in HOP_NAMES:
                    by_port[port] = by_port.get(port, 0) + 1
                    break
        return total, by_port

    def stop(self):
        self.holder.stop(timeout=2)


def muxconn(args, ns=None, timeout=90):
    argv = [harness.tool("muxconn")] + [str(a) for a in args]
    if ns is not None:
        argv = ns.wrap(argv)
    rc, out, err = run(argv, timeout)
    lines = [l for l in out.splitlines() if l.strip()]
    try:
        r = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise BenchError("muxconn %s: rc=%d, no JSON line; stderr: %s"
                         % (" ".join(map(str, args)), rc, err.strip()[-800:]))
    if rc != 0 or not r.get("ok"):
        raise BenchError("muxconn %s failed (rc=%d): %s"
                         % (" ".join(map(str, args)), rc,
                            r.get("error") or err.strip()[-800:] or "no reason given"))
    return r


class Path:
    """One way from a client to the server side, with the daemons it needs."""

    def __init__(self, key, label, logdir, netns=False):
        self.key = key
        self.label = label
        self.logdir = logdir
        self.ns = NetNS(key, logdir) if netns else None
        self.socket = None     # the client connects here (a UNIX socket) ...
        self.tcp = None        # ... or here (HOST:PORT)
        self.procs = []
        self.daemons = {}      # display name -> Proc, for RSS
        self.error = None
        self.sessions = 0      # usbmuxd sessions run through it

    def spawn(self, argv, name, **ready):
        if self.ns is not None:
            argv = self.ns.wrap(argv)
        p = harness.Proc(argv, name=self.key + "-" + name, logdir=self.logdir, **ready)
        self.procs.append(p)
        p.start()
        return p

    def shim(self, listen, upstream, *extra, name="muxshim", binary=None):
        # The relay rows measure the relay: the broker is muxshim's default,
        # so they ask for --passthrough; the broker's rows say --broker.
        mode = [] if "--broker" in extra else ["--passthrough"]
        argv = [binary or harness.shim_binary(), "--listen", listen, "--upstream", upstream,
                "--log-level", "warn"] + mode + list(extra)
        return self.spawn(argv, name, ready_socket=listen)

    def helper(self, port, upstream, *extra):
        argv = [os.path.join(harness.BUILD, "muxshim-host"), "--listen", "127.0.0.1:%d" % port,
                "--upstream", upstream, "--log-level", "warn"] + list(extra)
        return self.spawn(argv, "muxshim-host", ready_fn=self.tcp_ready(port))

    def tcp_ready(self, port):
        if self.ns is not None:
            return lambda: self.ns.listening(port)
        return lambda: harness.tcp_listening(port)

    def logs(self, lines=12):
        return "\n".join(p.log_tail(lines) for p in self.procs)

    def last_warning(self):
        """The newest warn/error line any daemon of the path logged."""
        best = None
        for p in self.procs:
            for line in p.stderr_text().splitlines():
                if " warn: " in line or " error: " in line:
                    if best is None or line[:24] > best[:24]:
                        best = line
        if best is None:
            return None
        m = best.split("]", 1)     # drop the timestamp and "name[pid]"
        return (best.split(" ", 1)[1].split("[")[0] + ":" + m[1])[:300] if len(m) == 2 else best

    def dead(self):
        return [p.name for p in self.procs if not p.alive()]

    def fail(self, what, exc, res, metric=None):
        """Record a failed measurement. The path is given up only when one of
        its daemons is gone; otherwise only `metric` is not measured again."""
        dead = self.dead()
        full = str(exc).strip()
        first = full.split("\n--- ")[0].split("\n")[0][:400]   # before any log tail
        msg = "%s: %s: %s" % (self.label, what, first)
        if dead:
            msg += " [not running any more: %s]" % ", ".join(dead)
            self.error = msg
        said = self.last_warning()
        res["errors"].append(msg + (" — %s" % said if said else "") + " (details on stderr)")
        if metric is not None:
            res["failed"][(self.key,) + tuple(metric)] = msg
        log("ERROR %s: %s: %s\n%s" % (self.label, what, full, self.logs()))

    def stop(self):
        for p in reversed(self.procs):
            try:
                p.stop(timeout=2)
            except Exception as e:  # cleanup goes on
                log("stopping %s: %s" % (p.name, e))
        if self.ns is not None:
            self.ns.stop()


def rss(proc):
    try:
        return harness.proc_rss_kib(proc.pid)
    except (OSError, TypeError):
        return None


class Samples:
    """metric key -> {round: value}; medians and comparisons of medians."""

    def __init__(self):
        self.d = {}

    def add(self, key, rnd, value):
        self.d.setdefault(key, {})[rnd] = value

    def get(self, key):
        v = list(self.d.get(key, {}).values())
        return statistics.median(v) if v else None

    def ratio(self, key, base):
        """Ratio of the medians (so that it matches the figures shown)."""
        a, b = self.get(key), self.get(base)
        return None if a is None or not b else a / b

    def diff(self, key, base):
        a, b = self.get(key), self.get(base)
        return None if a is None or b is None else a - b

    def best(self, key):
        """The lowest value (for latencies on a noisy machine, where load
        from elsewhere only ever adds)."""
        v = list(self.d.get(key, {}).values())
        return min(v) if v else None

    def diff_best(self, key, base):
        a, b = self.best(key), self.best(base)
        return None if a is None or b is None else a - b


# --------------------------------------------------------------------------
# Part A: the real usbmuxd
# --------------------------------------------------------------------------

def build_paths_a(mux, logdir, res, only=None, baseline=None):
    paths = []

    def make(key, label, setup):
        if only and key not in only:
            return
        p = Path(key, label, os.path.join(logdir, key), netns=True)
        os.makedirs(p.logdir, exist_ok=True)
        paths.append(p)
        try:
            p.ns.start()
            setup(p)
        except Exception as e:
            p.fail("start-up", e, res)
            p.error = p.error or "start-up failed"

    def direct(p):
        p.socket = mux.socket

    def shim(p):
        p.socket = os.path.join(p.logdir, "client.sock")
        p.daemons["muxshim (unix:)"] = p.shim(p.socket, "unix:" + mux.socket)

    def socat(p):
        p.socket = os.path.join(p.logdir, "client.sock")
        p.spawn(["socat", "UNIX-LISTEN:%s,fork" % p.socket, "UNIX-CONNECT:" + mux.socket],
                "socat", ready_socket=p.socket)

    def usbmuxd_tcp(p):
        # Apple's listener: tcprelay, one event loop, so that the rows behind
        # it measure themselves rather than a process forked per session.
        p.spawn([harness.tool("tcprelay"), "127.0.0.1:%d" % P_USBMUXD_TCP, mux.socket],
                "usbmuxd-tcp", ready_fn=p.tcp_ready(P_USBMUXD_TCP))

    def tunnel(p):
        p.daemons["muxshim-host (unix: upstream)"] = p.helper(P_TUNNEL, "unix:" + mux.socket)
        p.socket = os.path.join(p.logdir, "client.sock")
        p.daemons["muxshim (tunnel:)"] = p.shim(p.socket, "tunnel:127.0.0.1:%d" % P_TUNNEL)

    def tunnel_enc(p):
        token = token_file(p.logdir)
        p.daemons["muxshim-host (unix: upstream, token)"] = p.helper(
            P_TUNNEL, "unix:" + mux.socket, "--token-file", token)
        p.socket = os.path.join(p.logdir, "client.sock")
        p.daemons["muxshim (tunnel:, token)"] = p.shim(
            p.socket, "tunnel:127.0.0.1:%d" % P_TUNNEL, "--token-file", token)

    def tunnel_tcp(p):
        usbmuxd_tcp(p)
        p.daemons["muxshim-host (tcp: upstream)"] = p.helper(
            P_TUNNEL, "tcp:127.0.0.1:%d" % P_USBMUXD_TCP)
        p.socket = os.path.join(p.logdir, "client.sock")
        p.daemons["muxshim (tunnel:, for tcp: upstream)"] = p.shim(
            p.socket, "tunnel:127.0.0.1:%d" % P_TUNNEL)

    def standin(p):
        usbmuxd_tcp(p)
        p.tcp = "127.0.0.1:%d" % P_USBMUXD_TCP

    def chain(p):
        usbmuxd_tcp(p)
        p.spawn(["socat", "TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork" % P_REVERSE_PROXY,
                 "TCP:127.0.0.1:%d" % P_USBMUXD_TCP], "reverse-proxy",
                ready_fn=p.tcp_ready(P_REVERSE_PROXY))
        p.socket = os.path.join(p.logdir, "client.sock")
        p.spawn(["socat", "UNIX-LISTEN:%s,fork" % p.socket, "TCP:127.0.0.1:%d" % P_REVERSE_PROXY],
                "container-hop", ready_socket=p.socket)

    def broker(p):
        p.socket = os.path.join(p.logdir, "client.sock")
        p.daemons["muxshim --broker (unix:)"] = p.shim(p.socket, "unix:" + mux.socket, "--broker")

    def broker_tunnel(p):
        p.daemons["muxshim-host (for the broker)"] = p.helper(P_TUNNEL, "unix:" + mux.socket)
        p.socket = os.path.join(p.logdir, "client.sock")
        p.daemons["muxshim --broker (tunnel:)"] = p.shim(p.socket, "tunnel:127.0.0.1:%d" % P_TUNNEL,
                                                         "--broker")

    def shim_noinspect(p):
        p.socket = os.path.join(p.logdir, "client.sock")
        p.daemons["muxshim --no-inspect"] = p.shim(p.socket, "unix:" + mux.socket,
                                                   "--no-inspect")

    def broker_baseline(p):
        p.socket = os.path.join(p.logdir, "client.sock")
        p.shim(p.socket, "unix:" + mux.socket, "--broker", binary=baseline)

    make("direct", "direct", direct)
    if baseline:
        make("broker_baseline", "muxshim --broker (baseline)", broker_baseline)
    make("muxshim", "muxshim", shim)
    make("noinspect", "muxshim --no-inspect", shim_noinspect)
    make("broker", "muxshim --broker", broker)
    make("broker_tunnel", "muxshim --broker, tunnel", broker_tunnel)
    make("socat", "socat", socat)
    make("tunnel", "muxshim tunnel", tunnel)
    make("tunnel_enc", "muxshim tunnel, encrypted", tunnel_enc)
    make("tunnel_tcp", "muxshim tunnel, TCP upstream", tunnel_tcp)
    make("standin", "(TCP stand-in alone: client -> tcprelay :27015)", standin)
    make("chain", "seed chain", chain)
    return paths


def list_loop(p, count, parallel):
    args = (["--tcp", p.tcp] if p.tcp else ["--socket", p.socket])
    args += ["--list-loop", count, "--timeout", 60]
    if parallel > 1:
        args += ["--parallel", parallel]
    r = muxconn(args, ns=p.ns, timeout=75)
    if r.get("list_sessions") != count:
        raise BenchError("ran %s of %d sessions" % (r.get("list_sessions"), count))
    p.sessions += count
    return r["sessions_per_s"]


def part_a(paths, args, res):
    S, failed = res["samples"], res["failed"]
    live = [p for p in paths if p.error is None]
    # 1. TIME_WAIT per 1,000 sessions, in each path's own namespace, before
    #    anything else ran through it (except the start-up checks, which the
    #    before/after difference takes out).
    n = args.tw_sessions
    for p in live:
        try:
            before, hop_before = p.ns.time_wait()
            list_loop(p, n, 1)
            time.sleep(0.3)         # let the last closes complete
            after, hop_after = p.ns.time_wait()
            res["tw"][p.key] = {
                "total": (after - before) * 1000.0 / n,
                "hops": {port: (hop_after.get(port, 0) - hop_before.get(port, 0)) * 1000.0 / n
                         for port in set(hop_after) | set(hop_before)}}
        except Exception as e:
            p.fail("TIME_WAIT run (%d sequential sessions)" % n, e, res, ("tw",))
    # 2. Warm up, and size each path's samples to take about --sample-seconds.
    counts = {}
    for p in live:
        for par in (1, 8):
            if p.error:
                break
            try:
                rate = list_loop(p, 400, par)
                counts[(p.key, par)] = max(400, min(40000,
                                                    int(rate * args.sample_seconds / 100) * 100))
            except Exception as e:
                p.fail("warm-up, 400 sessions, parallel %d" % par, e, res, ("list", par))
    # 3. The rounds.
    for rnd in range(args.reps):
        for par in (1, 8):
            for p in live:
                if p.error or (p.key, "list", par) in failed:
                    continue
                n = counts[(p.key, par)]
                try:
                    S.add(("list", p.key, par), rnd, list_loop(p, n, par))
                except Exception as e:
                    p.fail("%d sessions, parallel %d" % (n, par), e, res, ("list", par))
        log("part A round %d/%d done" % (rnd + 1, args.reps))
    # 4. What all those sessions cost the host through the broker: its
    #    upstream connections are its subscriptions and what it forwarded.
    for p in live:
        if p.key.startswith("broker") and not p.error:
            try:
                out = subprocess.run([harness.shim_binary(), "stats", "--json", "--listen",
                                      p.socket], capture_output=True, text=True, timeout=30)
                b = json.loads(out.stdout)["broker"]
                res["broker_up"][p.key] = (b["subscribes"] + sum(b["forwarded"].values()),
                                           p.sessions)
            except Exception as e:
                log("broker statistics for %s: %s" % (p.label, e))
    # 5. TIME_WAIT on each hop after everything that ran through the path.
    for p in live:
        if p.key in res["tw"]:
            try:
                total, hops = p.ns.time_wait()
                res["tw_end"][p.key] = {"total": total, "hops": hops, "sessions": p.sessions}
            except Exception as e:
                log("TIME_WAIT count for %s: %s" % (p.label, e))


# --------------------------------------------------------------------------
# Part B: a fake device
# --------------------------------------------------------------------------

def build_paths_b(fd, logdir, res):
    paths = []

    def make(key, label, setup):
        p = Path(key, label, os.path.join(logdir, key))
        os.makedirs(p.logdir, exist_ok=True)
        paths.append(p)
        try:
            setup(p)
        except Exception as e:
            p.fail("start-up", e, res)
            p.error = p.error or "start-up failed"

    def direct(p):
        p.socket = fd.socket

    def shim(p):
        p.socket = os.path.join(p.logdir, "client.sock")
        p.daemons["muxshim (unix:) [B]"] = p.shim(p.socket, "unix:" + fd.socket)

    def shim_nosplice(p):
        p.socket = os.path.join(p.logdir, "client.sock")
        p.daemons["muxshim --no-splice [B]"] = p.shim(p.socket, "unix:" + fd.socket,
                                                      "--no-splice")

    def socat(p):
        p.socket = os.path.join(p.logdir, "client.sock")
        p.spawn(["socat", "UNIX-LISTEN:%s,fork" % p.socket, "UNIX-CONNECT:" + fd.socket],
                "socat", ready_socket=p.socket)

    def tunnel(p):
        port = harness.free_tcp_port()
        p.daemons["muxshim-host [B]"] = p.helper(port, "unix:" + fd.socket)
        p.socket = os.path.join(p.logdir, "client.sock")
        p.daemons["muxshim (tunnel:) [B]"] = p.shim(p.socket, "tunnel:127.0.0.1:%d" % port)

    def broker(p):
        p.socket = os.path.join(p.logdir, "client.sock")
        p.daemons["muxshim --broker [B]"] = p.shim(p.socket, "unix:" + fd.socket, "--broker")

    def broker_tunnel(p):
        port = harness.free_tcp_port()
        p.daemons["muxshim-host (for the broker) [B]"] = p.helper(port, "unix:" + fd.socket)
        p.socket = os.path.join(p.logdir, "client.sock")
        p.daemons["muxshim --broker (tunnel:) [B]"] = p.shim(
            p.socket, "tunnel:127.0.0.1:%d" % port, "--broker")

    def tunnel_enc(p):
        port = harness.free_tcp_port()
        token = token_file(p.logdir)
        p.daemons["muxshim-host, token [B]"] = p.helper(port, "unix:" + fd.socket,
                                                        "--token-file", token)
        p.socket = os.path.join(p.logdir, "client.sock")
        p.daemons["muxshim (tunnel:, token) [B]"] = p.shim(
            p.socket, "tunnel:127.0.0.1:%d" % port, "--token-file", token)

    make("direct", "direct", direct)
    make("muxshim", "muxshim --passthrough (splice)", shim)
    make("nosplice", "muxshim --passthrough --no-splice", shim_nosplice)
    make("broker", "muxshim (broker)", broker)
    make("socat", "socat", socat)
    make("tunnel", "muxshim --passthrough, tunnel", tunnel)
    make("broker_tunnel", "muxshim (broker), tunnel", broker_tunnel)
    make("tunnel_enc", "muxshim --passthrough, tunnel, encrypted", tunnel_enc)
    return paths


def connect_loop(p, port, n, par, device=1):
    """The WebDriverAgent pattern: n sessions of connect, Connect to a device
    port, a 1 KiB request and its 1 KiB answer, close."""
    r = muxconn(["--socket", p.socket, "--port", port, "--connect-loop", n, "--parallel", par,
                 "--size", 1024, "--device", device, "--timeout", 300], timeout=330)
    return r["sessions_per_s"]


def rtt(p, port, count, size=1024):
    r = muxconn(["--socket", p.socket, "--port", port, "--rtt", count, "--size", size,
                 "--timeout", 60], timeout=75)
    return r["p50_us"], r["p99_us"]


def part_b(paths, devport, args, res):
    S, failed = res["samples"], res["failed"]
    live = [p for p in paths if p.error is None]

    def bulk(p, mode, n, seed):
        r = muxconn(["--socket", p.socket, "--port", devport, "--" + mode, n, "--seed", seed,
                     "--timeout", 60], timeout=75)
        return r["mbps"]

    def measure(p, mode, rnd, fn):
        if p.error or (p.key, mode) in failed:
            return
        try:
            fn()
        except Exception as e:
            p.fail("--%s" % mode if rnd is not None else "warm-up --%s" % mode, e, res, (mode,))

    for p in live:      # warm-up: a small transfer each way and a few round trips
        measure(p, "recv", None, lambda: bulk(p, "recv", 4 * MIB, 99))
        measure(p, "send", None, lambda: bulk(p, "send", 4 * MIB, 99))
        measure(p, "rtt", None, lambda: rtt(p, devport, 200))
        measure(p, "connect", None, lambda: connect_loop(p, devport, 200, 1))
    nbytes = args.bulk_mib * MIB
    for rnd in range(args.reps):
        for mode in ("recv", "send"):
            for p in live:
                measure(p, mode, rnd, lambda: S.add((mode, p.key), rnd,
                                                    bulk(p, mode, nbytes, rnd + 1)))
        for par in (1, 8):
            for p in live:
                measure(p, "connect", rnd, lambda: S.add(("connect", p.key, par), rnd,
                                                         connect_loop(p, devport,
                                                                      args.connects, par)))
        for p in live:
            def one():
                p50, p99 = rtt(p, devport, args.rtt)
                S.add(("p50", p.key), rnd, p50)
                S.add(("p99", p.key), rnd, p99)
            measure(p, "rtt", rnd, one)
        log("part B round %d/%d done" % (rnd + 1, args.reps))
    # Round trips while another stream of the same path saturates it.
    for p in live:
        if p.error or p.key not in args.load_paths:
            continue
        load = harness.Proc([harness.tool("muxconn"), "--socket", p.socket, "--port", devport,
                             "--recv", 1 << 42, "--timeout", 120],
                            name=p.key + "-bulk", logdir=p.logdir, ready_fn=lambda: True)
        try:
            load.start()
            time.sleep(0.5)                 # let the transfer ramp up
            for rnd in range(args.reps):
                if not load.alive():
                    raise BenchError("the background bulk transfer ended early: "
                                     + load.log_tail(5))
                p50, p99 = rtt(p, devport, args.load_rtt)
                S.add(("p50_load", p.key), rnd, p50)
                S.add(("p99_load", p.key), rnd, p99)
            if not load.alive():
                raise BenchError("the background bulk transfer ended during the round trips: "
                                 + load.log_tail(5))
        except Exception as e:
            p.fail("round trips under bulk load", e, res, ("rtt_load",))
        finally:
            load.kill()


# --------------------------------------------------------------------------
# Part D: the tunnel handshake and memory per tunnel, plain and encrypted
# --------------------------------------------------------------------------

def token_file(d):
    path = os.path.join(d, "token")
    if not os.path.exists(path):
        harness.write_token(path)
    return path


class RawShim:
    """The shim's side of the handshake (docs/PROTOCOL.md §1, §6) in
    Python: hello, then with a token our AUTH, until the helper is up (its
    hello; with a token its AUTH, after which the keys are in use)."""

    LABEL = b"muxshim-tunnel-v1"

    def __init__(self, port, token):
        self.port = port
        self.token = token

    def connect(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=20)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mine = os.urandom(16)
        s.sendall(b"MXTN" + bytes([2, 1]) + struct.pack(">HIII", 1 if self.token else 0, 16384,
                                                          262144, 64) + mine)
        theirs = self.recv(s, 36)
        if theirs[:6] != b"MXTN\x02\x02":
            raise BenchError("not a version-2 helper: %r" % theirs[:6])
        if self.token:
            proof = hmac.new(self.token, self.LABEL + b"\x01" + mine + theirs[20:36],
                             hashlib.sha256).digest()
            s.sendall(struct.pack(">BBHII", 6, 0, 0, 0, 32) + proof)
            if self.recv(s, 44)[0] != 6:
                raise BenchError("the helper did not prove itself")
        return s

    @staticmethod
    def recv(s, n):
        b = b""
        while len(b) < n:
            c = s.recv(n - len(b))
            if not c:
                raise BenchError("the helper closed the connection in the handshake")
            b += c
        return b


def part_d(fd, logdir, args, res):
    S = res["samples"]
    helpers = {}
    for key, with_token in (("plain", False), ("enc", True)):
        port = harness.free_tcp_port()
        p = Path("hs_" + key, "handshake " + key, os.path.join(logdir, "d-" + key))
        os.makedirs(p.logdir, exist_ok=True)
        token = token_file(p.logdir) if with_token else None
        extra = ["--max-tunnels", args.tunnels + 16, "--max-pending", args.tunnels + 16]
        if token:
            extra += ["--token-file", token]
        helper = p.helper(port, "unix:" + fd.socket, *[str(a) for a in extra])
        tok = None
        if token:
            with open(token, "rb") as f:
                tok = f.read().rstrip(b"\r\n")
        helpers[key] = (p, helper, RawShim(port, tok))
    try:
        for key, (_, _, raw) in helpers.items():       # warm-up
            for _ in range(20):
                raw.connect().close()
        for rnd in range(args.reps):
            for key, (_, _, raw) in helpers.items():
                t0 = time.perf_counter()
                for _ in range(args.handshakes):
                    raw.connect().close()
                S.add(("hs_us", key), rnd, (time.perf_counter() - t0) * 1e6 / args.handshakes)
        log("part D: handshakes done")
        for key, (p, helper, raw) in helpers.items():
            before = rss(helper)
            socks = [raw.connect() for _ in range(args.tunnels)]
            time.sleep(0.3)          # the helper has set every one up (no more input)
            after = rss(helper)
            for c in socks:
                c.close()
            if before is not None and after is not None:
                S.add(("tunnel_kib", key), 0, (after - before) / args.tunnels)
    except (OSError, BenchError) as e:
        res["errors"].append("part D: %s" % e)
    finally:
        for p, _, _ in helpers.values():
            p.stop()


# --------------------------------------------------------------------------
# Part E: several upstreams (one shim aggregating several hosts)
# --------------------------------------------------------------------------

E_DEVICES = 8
E_HOSTS = 16
E_PATHS = (("agg1", "1 upstream, %d phones" % E_DEVICES, 1, E_DEVICES),
           ("agg1big", "1 upstream, %d phones" % (E_HOSTS * E_DEVICES), 1, E_HOSTS * E_DEVICES),
           ("agg16", "%d upstreams, %d phones each" % (E_HOSTS, E_DEVICES), E_HOSTS, E_DEVICES))


def build_paths_e(logdir, res):
    """Each path: its hosts (fakedev + muxshim-host with a token on a free
    loopback port) and one shim --broker with an --upstream per host."""
    paths = []
    for key, label, nhosts, ndev in E_PATHS:
        p = Path(key, label, os.path.join(logdir, key))
        os.makedirs(p.logdir, exist_ok=True)
        paths.append(p)
        try:
            token = token_file(p.logdir)
            ups = []
            for i in range(nhosts):
                sock = os.path.join(p.logdir, "host%02d.sock" % i)
                p.spawn([harness.tool("fakedev"), "--socket", sock, "--devices", ndev,
                         "--serial-prefix", "host%02d" % i], "fakedev%02d" % i,
                        ready_line=r"^fakedev ready ")
                port = harness.free_tcp_port()
                p.helper(port, "unix:" + sock, "--token-file", token)
                ups.append("tunnel:127.0.0.1:%d" % port)
            p.socket = os.path.join(p.logdir, "client.sock")
            more = [a for u in ups[1:] for a in ("--upstream", u)]
            p.daemons["muxshim, %s [E]" % label] = p.shim(p.socket, ups[0], *more, "--broker",
                                                          "--token-file", token)
            want = "host%02d-0001" % (nhosts - 1)
            harness.wait_for(lambda: len(list_devices(p.socket)) == nhosts * ndev,
                             harness.WAIT_MIN_S, what="%s: every phone listed" % label)
            p.device = {d["Properties"]["SerialNumber"]: d["DeviceID"]
                        for d in list_devices(p.socket)}[want]
        except Exception as e:
            p.fail("start-up", e, res)
            p.error = p.error or "start-up failed"
    return paths


def list_devices(path):
    """One ListDevices through the shim at path: the device list."""
    import plistlib
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(path)
        body = plistlib.dumps({"MessageType": "ListDevices", "ProgName": "bench"})
        s.sendall(struct.pack("<IIII", 16 + len(body), 1, 8, 1) + body)
        hdr = RawShim.recv(s, 16)
        n = struct.unpack("<I", hdr[:4])[0]
        return plistlib.loads(RawShim.recv(s, n - 16))["DeviceList"]


def part_e(paths, devport, args, res):
    S, failed = res["samples"], res["failed"]
    live = [p for p in paths if p.error is None]
    counts = {}
    for p in live:          # warm-up, and each path's ListDevices sample size
        for par in (1, 8):
            try:
                rate = list_loop(p, 200, par)
                counts[(p.key, par)] = max(200, min(40000,
                                                    int(rate * args.sample_seconds / 100) * 100))
                connect_loop(p, devport, 100, par, p.device)
            except Exception as e:
                p.fail("warm-up, parallel %d" % par, e, res, ("list", par))
    for rnd in range(args.reps):
        for par in (1, 8):
            for p in live:
                if p.error or (p.key, "list", par) in failed:
                    continue
                try:
                    S.add(("list", p.key, par), rnd, list_loop(p, counts[(p.key, par)], par))
                except Exception as e:
                    p.fail("ListDevices, parallel %d" % par, e, res, ("list", par))
            for p in live:
                if p.error or (p.key, "connect", par) in failed:
                    continue
                try:
                    S.add(("connect", p.key, par), rnd,
                          connect_loop(p, devport, args.connects, par, p.device))
                except Exception as e:
                    p.fail("Connect sessions, parallel %d" % par, e, res, ("connect", par))
        log("part E round %d/%d done" % (rnd + 1, args.reps))


def report_e(res, args):
    S = res["samples"]
    base = E_PATHS[0][0]
    out = ["\n## E. Several upstreams: one shim aggregating %d hosts\n" % E_HOSTS]
    rows = []
    for key, label, _, _ in E_PATHS:
        row = [label]
        for metric in (("list", 1), ("list", 8), ("connect", 1), ("connect", 8)):
            k = (metric[0], key, metric[1])
            row += [f0(S.get(k)), fx(S.ratio(k, (metric[0], base, metric[1])))]
        rows.append(row)
    out.append(table(["shim", "ListDevices/s", "vs 1x%d" % E_DEVICES, "8 parallel",
                      "vs 1x%d" % E_DEVICES, "Connect sessions/s", "vs 1x%d" % E_DEVICES,
                      "8 parallel", "vs 1x%d" % E_DEVICES], rows))
    big, agg = ("list", "agg1big"), ("list", "agg16")
    out.append("\nThe broker answers ListDevices from its table; every upstream is a "
               "muxshim-host with a token (encrypted tunnel) over a fakedev. 16 upstreams "
               "against 1 upstream of the same 128 phones (the cost of the upstreams "
               "themselves, not of the longer list): ListDevices %s sequential, %s 8 "
               "parallel. Connect sessions: %d per sample to a phone of the last host (a "
               "remapped DeviceID in the 16-upstream shim), as in B."
               % (fx(S.ratio(agg + (1,), big + (1,))), fx(S.ratio(agg + (8,), big + (8,))),
                  args.connects))
    return "\n".join(out)


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

def table(header, rows):
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def fmt(r):
        return "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(r, widths))) + " |"
    sep = "|" + "|".join(("-" * (w + 1) + ":") if i else (":" + "-" * (w + 1))
                         for i, w in enumerate(widths)) + "|"
    return "\n".join([fmt(cells[0]), sep] + [fmt(r) for r in cells[1:]])


def f0(x):
    return "FAIL" if x is None else "{:,.0f}".format(x)


def f1(x):
    return "FAIL" if x is None else "{:,.1f}".format(x)


def fx(r):
    return "—" if r is None else "%.2fx" % r


def fdiff(d):
    return "FAIL" if d is None else "%+.0f" % d


def verdict(ok):
    """None: the figure could not be measured (see Errors)."""
    return "FAIL" if ok is None else ("PASS" if ok else "MISS")


def report(env, paths_a, paths_b, res, rss_start, rss_end, args, elapsed):
    S = res["samples"]
    out = []

    # A
    if "A" in args.parts:
        out.append("## A. Real usbmuxd: ListDevices sessions\n")
        rows = []
        for p in paths_a:
            tw, te = res["tw"].get(p.key), res["tw_end"].get(p.key)
            if tw is None:
                twc = "FAIL"
            else:
                twc = f0(tw["total"])
                hops = {k: v for k, v in tw["hops"].items() if v}
                if hops:
                    twc += " (" + ", ".join("%s %s" % (HOP_NAMES[k], f0(v))
                                            for k, v in sorted(hops.items())) + ")"
            end = "—"
            if te is not None and p.key.startswith("tunnel"):
                end = "%d on :27016, %d on :27015 after %s sessions" % (
                    te["hops"].get(P_TUNNEL, 0), te["hops"].get(P_USBMUXD_TCP, 0),
                    "{:,}".format(te["sessions"]))
            row = [p.label]
            for par in (1, 8):
                k = ("list", p.key, par)
                row += [f0(S.get(k)), fx(S.ratio(k, ("list", "direct", par)))]
            rows.append(row + [twc, end])
        out.append(table(["path", "sessions/s", "vs direct", "8 parallel: sessions/s", "vs direct",
                          "TIME_WAIT / 1,000 sessions (by hop)", "TIME_WAIT on tunnel hops, end"],
                         rows))

    # B
    if "B" in args.parts:
        out.append("\n## B. Fake device: one Connect session\n")
        rows = []
        for p in paths_b:
            row = [p.label]
            for mode in ("recv", "send"):
                row += [f0(S.get((mode, p.key))), fx(S.ratio((mode, p.key), (mode, "direct")))]
            rows.append(row)
        out.append(table(["path", "recv MB/s", "vs direct", "send MB/s", "vs direct"], rows))
        out.append("\nBulk: %d MiB per transfer, MB = 10^6 bytes.\n" % args.bulk_mib)
        rows = []
        for p in paths_b:
            row = [p.label]
            for par in (1, 8):
                k = ("connect", p.key, par)
                row += [f0(S.get(k)), fx(S.ratio(k, ("connect", "direct", par)))]
            rows.append(row)
        out.append(table(["path", "Connect sessions/s", "vs direct", "8 parallel: sessions/s",
                          "vs direct"], rows))
        out.append("\nConnect sessions: the WebDriverAgent pattern, %d per sample: connect, "
                   "Connect to a device port, a 1 KiB request, its 1 KiB answer, close.\n"
                   % args.connects)
        rows = []
        for p in paths_b:
            k = ("p99", p.key)
            direct = p.key == "direct"
            rows.append([p.label, f0(S.get(("p50", p.key))), f0(S.get(k)),
                         "—" if direct else fdiff(S.diff(k, ("p99", "direct"))),
                         f0(S.best(k)),
                         "—" if direct else fdiff(S.diff_best(k, ("p99", "direct")))])
        out.append(table(["path", "RTT p50 us", "RTT p99 us", "p99 added us", "best p99 us",
                          "best p99 added us"], rows))
        out.append("\nRTT: %d round trips of a 1 KiB request/response per sample; \"best\" is the "
                   "lowest of the %d rounds." % (args.rtt, args.reps))
        rows = []
        for p in paths_b:
            if p.key in args.load_paths:
                rows.append([p.label + ", under bulk", f0(S.get(("p50_load", p.key))),
                             f0(S.get(("p99_load", p.key))), f0(S.best(("p99_load", p.key)))])
        out.append("\nRTT while another stream of the same path runs a saturating `--recv` "
                   "(%d round trips per sample):\n" % args.load_rtt)
        out.append(table(["path", "RTT p50 us", "RTT p99 us", "best p99 us"], rows))

    # B': the encrypted tunnel beside the plain one
    if set("ABD") <= set(args.parts):
        out.append("\n### The tunnel encrypted (a token) beside the tunnel plain\n")
        rows = []
        for metric, lbl, fmt in ((("list", 1), "ListDevices sessions/s, sequential", f0),
                                 (("list", 8), "ListDevices sessions/s, 8 parallel", f0),
                                 (("recv",), "Connect bulk, device -> client, MB/s", f0),
                                 (("send",), "Connect bulk, client -> device, MB/s", f0),
                                 (("p50",), "Connect RTT p50 us (1 KiB)", f0),
                                 (("p99",), "Connect RTT p99 us (1 KiB)", f0)):
            if metric[0] == "list":
                kp, ke = ("list", "tunnel", metric[1]), ("list", "tunnel_enc", metric[1])
            else:
                kp, ke = (metric[0], "tunnel"), (metric[0], "tunnel_enc")
            rows.append([lbl, fmt(S.get(kp)), fmt(S.get(ke)), fx(S.ratio(ke, kp))])
        rows.append(["handshake until the helper is up, us", f0(S.get(("hs_us", "plain"))),
                     f0(S.get(("hs_us", "enc"))),
                     fx(S.ratio(("hs_us", "enc"), ("hs_us", "plain")))])
        rows.append(["helper memory per idle tunnel, KiB", f1(S.get(("tunnel_kib", "plain"))),
                     f1(S.get(("tunnel_kib", "enc"))), "—"])
        out.append(table(["metric", "plain", "encrypted", "encrypted / plain"], rows))
        out.append("\nHandshake: %d sequential connections per sample by a Python client (its "
                   "HMAC included); plain is hello only, encrypted adds the AUTH round trip and "
                   "the "
                   "key derivation. Memory: %d tunnels held open, (RSS after - RSS before) / %d; "
                   "buffers are allocated only while bytes wait, so a busy encrypted tunnel holds "
                   "up to %d KiB more (sealed records queued, a partial record received)."
                   % (args.handshakes, args.tunnels, args.tunnels,
                      (4 * (16384 + 20) + 16384 + 12 + 65536) // 1024))

    # C
    if rss_start:
        out.append("\n## C. Idle RSS (VmRSS, KiB)\n")
        rows = [[name, f0(rss_start.get(name)), f0(rss_end.get(name))] for name in rss_start]
        out.append(table(["process", "after start-up", "after the runs"], rows))

    # E
    if "E" in args.parts:
        out.append(report_e(res, args))

    # Targets
    tg = []
    if set("ABD") <= set(args.parts):    # the targets need a full run

        def target(what, value, ok):
            tg.append([what, value, verdict(ok)])

        def ge(r, t):
            return None if r is None else r >= t

        def fx3(r):     # the targets table shows one more digit
            return "—" if r is None else "%.3fx" % r

        for par, lbl in ((1, "sequential"), (8, "8 parallel")):
            r = S.ratio(("list", "muxshim", par), ("list", "direct", par))
            target("muxshim sessions/s >= 0.5x direct, %s" % lbl, fx3(r), ge(r, 0.5))
            r = S.ratio(("list", "muxshim", par), ("list", "socat", par))
            target("muxshim sessions/s >= 3x socat, %s" % lbl, fx3(r), ge(r, 3))
        for par, lbl in ((1, "sequential"), (8, "8 parallel")):
            r = S.ratio(("list", "muxshim", par), ("list", "noinspect", par))
            target("cost of request inspection <= 10%% (inspecting vs --no-inspect), %s" % lbl,
                   "—" if r is None else "%.1f%%" % (100 * (1 - r)),
                   None if r is None else r >= 0.9)
        for key, lbl in (("muxshim", "muxshim"), ("nosplice", "muxshim --no-splice")):
            for mode in ("recv", "send"):
                r = S.ratio((mode, key), (mode, "direct"))
                target("%s bulk >= 0.7x direct, --%s" % (lbl, mode), fx3(r), ge(r, 0.7))
        for key, lbl in (("muxshim", "muxshim"), ("nosplice", "muxshim --no-splice")):
            d = S.diff(("p99", key), ("p99", "direct"))
            db = S.diff_best(("p99", key), ("p99", "direct"))
            target("%s added p99 RTT <= 100 us" % lbl,
                   "FAIL" if d is None else "%s us (best of rounds: %s us)" % (fdiff(d), fdiff(db)),
                   None if d is None else d <= 100)
        for name in rss_start:
            vals = [v for v in (rss_start.get(name), rss_end.get(name)) if v is not None]
            target("idle RSS <= 4 MiB: %s" % name, "%s KiB" % f0(max(vals)) if vals else "FAIL",
                   (max(vals) <= 4096) if vals else None)
        for key, lbl in (("broker", "unix:"), ("broker_tunnel", "tunnel")):
            v = res["broker_up"].get(key)
            target("broker: upstream connections for all its ListDevices sessions <= 2 (%s)" % lbl,
                   "FAIL" if v is None else "%d for %s sessions" % (v[0], "{:,}".format(v[1])),
                   None if v is None else v[0] <= 2)
        for par, lbl in ((1, "sequential"), (8, "8 parallel")):
            r = S.ratio(("list", "broker", par), ("list", "direct", par))
            target("broker ListDevices sessions/s >= 1.5x direct, %s" % lbl, fx3(r), ge(r, 1.5))
            r = S.ratio(("list", "broker_tunnel", par), ("list", "direct", par))
            target("broker through the tunnel >= 1.0x direct, %s" % lbl, fx3(r), ge(r, 1.0))
        for par, lbl in ((1, "sequential"), (8, "8 parallel")):
            r = S.ratio(("list", "tunnel", par), ("list", "direct", par))
            target("tunnel sessions/s >= 0.4x direct, %s" % lbl, fx3(r), ge(r, 0.4))
            r = S.ratio(("list", "tunnel", par), ("list", "chain", par))
            target("tunnel sessions/s >= 5x seed chain, %s" % lbl, fx3(r), ge(r, 5))
        for mode in ("recv", "send"):
            r = S.ratio((mode, "tunnel"), (mode, "direct"))
            target("tunnel bulk >= 0.5x direct, --%s" % mode, fx3(r), ge(r, 0.5))
        for par, lbl in ((1, "sequential"), (8, "8 parallel")):
            r = S.ratio(("connect", "broker", par), ("connect", "direct", par))
            target("Connect sessions (WDA pattern) through muxshim >= 0.5x direct, %s" % lbl,
                   fx3(r), ge(r, 0.5))
            r = S.ratio(("connect", "broker_tunnel", par), ("connect", "direct", par))
            target("Connect sessions (WDA pattern) through the tunnel >= 0.4x direct, %s" % lbl,
                   fx3(r), ge(r, 0.4))
            r = S.ratio(("list", "tunnel_enc", par), ("list", "tunnel", par))
            target("encrypted tunnel sessions/s >= 0.8x plain tunnel, %s" % lbl, fx3(r), ge(r, 0.8))
        for mode in ("recv", "send"):
            r = S.ratio((mode, "tunnel_enc"), (mode, "tunnel"))
            target("encrypted tunnel bulk >= 0.8x plain tunnel, --%s" % mode, fx3(r), ge(r, 0.8))
        v = S.get(("p99_load", "tunnel"))
        target("tunnel p99 RTT under saturating bulk <= 5 ms",
               "FAIL" if v is None else "%.2f ms" % (v / 1000), None if v is None else v <= 5000)
        for key, lbl in (("tunnel", "unix: upstream"), ("tunnel_tcp", "TCP upstream")):
            te = res["tw_end"].get(key)
            n = None if te is None else te["hops"].get(P_TUNNEL, 0)
            target("zero TIME_WAIT on the tunnel hop (%s)" % lbl,
                   "FAIL" if te is None
                   else "%d after %s sessions" % (n, "{:,}".format(te["sessions"])),
                   None if te is None else n == 0)
        te, tw = res["tw_end"].get("tunnel_tcp"), res["tw"].get("tunnel_tcp")
        if te is None or tw is None:
            target("no TIME_WAIT per session on the tunnel's upstream hop (TCP upstream)",
                   "FAIL", None)
        else:
            per = tw["hops"].get(P_USBMUXD_TCP, 0)
            n = te["hops"].get(P_USBMUXD_TCP, 0)
            target("no TIME_WAIT per session on the tunnel's upstream hop (TCP upstream)",
                   "%s per 1,000; %d after %s sessions"
                   % (f0(per), n, "{:,}".format(te["sessions"])),
                   per < 1 and n < 10)
        out.append("\n## Targets\n")
        out.append(table(["target", "measured", ""], tg))
        out.append("\nFAIL = could not be measured (see Errors).")

    errors = res["errors"]
    if errors:
        out.append("\n## Errors\n")
        out.extend("- " + " ".join(e.split()) for e in errors)
    body = "\n".join(out) + "\n"

    header = ("# muxshim benchmark results\n\n"
              "- date: %s\n- kernel: %s\n- CPU: %s, %s CPUs (nproc)\n- commit: %s\n"
              "- load average (1, 5, 15 min) at start: %s; at end: %s\n"
              "- statistic: median of %d rounds (all paths measured back to back in each "
              "round); ratios and differences are those of the medians\n"
              "- bench wall time: %.0f s\n\n"
              % (env["date"], env["kernel"], env["cpu"], env["nproc"], env["commit"],
                 env["load_start"], loadavg(), args.reps, elapsed))
    raw = ["\n## Raw samples (one per round)\n", "```"]
    for key in sorted(S.d, key=str):
        vals = S.d[key]
        raw.append("%-20s %s" % (" ".join(map(str, key)),
                                 " ".join("%9s" % f1(vals[r]) for r in sorted(vals))))
    raw.append("```")
    md = header + body + "\n".join(raw) + "\n"
    misses = [r for r in tg if r[2] != "PASS"]
    return body, md, misses, errors


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "unknown"


def environment():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "-C", harness.ROOT, "describe", "--always", "--dirty"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "kernel": platform.release(), "cpu": cpu, "nproc": os.cpu_count(),
            "commit": commit or "unknown", "load_start": loadavg()}


def list_only(args):
    """--list-only: part A's rounds for a few paths, then their medians."""
    logdir = harness.tempdir("bench")
    res = {"samples": Samples(), "tw": {}, "tw_end": {}, "broker_up": {}, "failed": {},
           "errors": []}
    paths = []
    try:
        mux = harness.PrivateUsbmuxd(os.path.join(logdir, "usbmuxd"), verbose=0).start()
        paths = build_paths_a(mux, os.path.join(logdir, "a"), res,
                              only=("direct", "broker_baseline", "muxshim", "broker",
                                    "broker_tunnel"), baseline=args.baseline_shim)
        part_a(paths, args, res)
    finally:
        for p in paths:
            p.stop()
        harness.cleanup_all()
    S = res["samples"]
    print("ListDevices sessions/s, median of %d rounds (load %s at the end)" % (args.reps, loadavg()))
    for par in (1, 8):
        for p in paths:
            key = ("list", p.key, par)
            v, r = S.get(key), S.ratio(key, ("list", "direct", par))
            rounds = [round(x) for x in S.d.get(key, {}).values()]
            print("  %-28s parallel %d: %9s  %6s  rounds %s"
                  % (p.label, par, "%.0f" % v if v else "-", "%.3fx" % r if r else "-", rounds))
    for e in res["errors"]:
        print("ERROR: " + e)
    return 1 if res["errors"] else 0


def main():
    ap = argparse.ArgumentParser(description="muxshim benchmarks (see the module docstring)")
    ap.add_argument("--reps", type=int, default=7, help="rounds; figures are their median")
    ap.add_argument("--sample-seconds", type=float, default=0.5,
                    help="about how long one ListDevices sample runs")
    ap.add_argument("--tw-sessions", type=int, default=1000,
                    help="sequential sessions of the TIME_WAIT count (reported per 1,000)")
    ap.add_argument("--bulk-mib", type=int, default=256, help="size of one bulk transfer")
    ap.add_argument("--rtt", type=int, default=5000, help="round trips per RTT sample")
    ap.add_argument("--load-rtt", type=int, default=2000,
                    help="round trips per sample under bulk load")
    ap.add_argument("--connects", type=int, default=1000,
                    help="Connect sessions (WDA pattern) per sample")
    ap.add_argument("--handshakes", type=int, default=200,
                    help="tunnel handshakes per sample (part D)")
    ap.add_argument("--tunnels", type=int, default=200,
                    help="idle tunnels held open for the memory per tunnel (part D)")
    ap.add_argument("--time-limit", type=int, default=1200, help="abort after this many seconds")
    ap.add_argument("--out", default=RESULTS_MD, help="markdown results (default %(default)s)")
    ap.add_argument("--parts", default="ABDE",
                    help="which parts to run (letters of the docstring; C, the idle RSS, comes "
                         "with A and B; the targets are judged when A, B and D run); "
                         "default %(default)s")
    ap.add_argument("--list-only", action="store_true",
                    help="only part A's ListDevices sessions of direct, the relay and the broker "
                         "(the broker's target, quickly); prints the medians, writes nothing")
    ap.add_argument("--baseline-shim", metavar="BINARY",
                    help="with --list-only: also a broker row run by BINARY (another build), "
                         "measured in the same rounds")
    args = ap.parse_args()
    args.parts = args.parts.upper()
    if not args.parts or set(args.parts) - set("ABDE"):
        sys.exit("bench: --parts: letters of A, B, D, E")
    args.load_paths = ("direct", "tunnel", "tunnel_enc")

    if os.geteuid() != 0:
        sys.exit("bench: needs root (namespaces, a private usbmuxd)")
    try:
        for b in (harness.shim_binary(), os.path.join(harness.BUILD, "muxshim-host")):
            harness.require_binary(b, "run `make all tools`")
        for t in ("muxconn", "fakedev", "devsvc"):
            harness.tool(t)
    except harness.HarnessError as e:
        sys.exit("bench: %s" % e)
    for cmd in ("socat", "ss", "nsenter", "unshare", "ip"):
        if not shutil.which(cmd):
            sys.exit("bench: %s not found (`make deps` installs it)" % cmd)

    def on_alarm(signum, frame):
        raise Deadline("the bench ran longer than %d s (--time-limit)" % args.time_limit)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(args.time_limit)

    if args.list_only:
        return list_only(args)
    t0 = time.monotonic()
    env = environment()
    logdir = harness.tempdir("bench")
    res = {"samples": Samples(), "tw": {}, "tw_end": {}, "broker_up": {}, "failed": {},
           "errors": []}
    paths_a, paths_b, paths_e = [], [], []
    rss_start, rss_end = {}, {}
    fatal = None
    try:
        if "A" in args.parts:
            log("part A: a private usbmuxd; 11 paths, each in its own network namespace")
            mux = harness.PrivateUsbmuxd(os.path.join(logdir, "usbmuxd"), verbose=0).start()
            paths_a = build_paths_a(mux, os.path.join(logdir, "a"), res)
            for p in paths_a:
                rss_start.update({n: rss(d) for n, d in p.daemons.items()})
            part_a(paths_a, args, res)
            time.sleep(0.5)
            for p in paths_a:
                rss_end.update({n: rss(d) if d.alive() else None for n, d in p.daemons.items()})
                p.stop()
            mux.stop()

        fdev = harness.FakeDev(os.path.join(logdir, "fakedev.sock"), logdir=logdir).start()
        dsvc = harness.DevSvc(logdir=logdir).start()
        if "B" in args.parts:
            log("part B: fakedev + devsvc; 6 paths")
            paths_b = build_paths_b(fdev, os.path.join(logdir, "b"), res)
            for p in paths_b:
                rss_start.update({n: rss(d) for n, d in p.daemons.items()})
            part_b(paths_b, dsvc.port, args, res)
            time.sleep(0.5)
            for p in paths_b:
                rss_end.update({n: rss(d) if d.alive() else None for n, d in p.daemons.items()})
            if not fdev.alive() or not dsvc.alive():
                raise BenchError("fakedev or devsvc died during the runs\n%s\n%s"
                                 % (fdev.log_tail(10), dsvc.log_tail(10)))

        if "D" in args.parts:
            log("part D: tunnel handshakes and memory per tunnel, plain and encrypted")
            part_d(fdev, logdir, args, res)

        if "E" in args.parts:
            log("part E: one shim aggregating %d hosts against one host" % E_HOSTS)
            paths_e = build_paths_e(os.path.join(logdir, "e"), res)
            part_e(paths_e, dsvc.port, args, res)
            for p in paths_e:
                p.stop()
    except (Deadline, harness.HarnessError, BenchError) as e:
        fatal = str(e)
        log("FATAL: " + fatal)
    except KeyboardInterrupt:
        fatal = "interrupted"
        log("interrupted")
    finally:
        signal.alarm(0)
        for p in paths_a + paths_b + paths_e:
            p.stop()
        harness.cleanup_all()

    body, md, misses, errors = report(env, paths_a, paths_b, res, rss_start, rss_end, args,
                                      time.monotonic() - t0)
    if fatal:
        body += "\nFATAL: %s\n" % fatal
        md += "\nFATAL: %s\n" % fatal
    print()
    print("muxshim benchmarks — %s — kernel %s — %s x%s — load %s (start), %s (end) — "
          "median of %d rounds" % (env["date"], env["kernel"], env["cpu"], env["nproc"],
                                   env["load_start"], loadavg(), args.reps))
    print()
    print(body)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(md)
    print("written to %s; %d target(s) not met; %.0f s"
          % (os.path.relpath(args.out, harness.ROOT), len(misses), time.monotonic() - t0))
    return 1 if (fatal or errors) else 0


if __name__ == "__main__":
    sys.exit(main())
