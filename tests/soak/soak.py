#!/usr/bin/env python3
"""make soak: a long run of mixed traffic through the tunnel, with periodic
restarts of muxshim-host and of the real usbmuxd, ending in a verdict on
flat memory, flat descriptors and zero unexplained failures.

    python3 tests/soak/soak.py [--minutes 10] [--out DIR] [options]
    make soak [SOAK_MINUTES=10] [SOAK_ARGS="--helper-every 30 ..."]

Two chains, both through the tunnel (docs/SOAK.md has the picture):

  real: clients -> muxshim (tunnel:) -> muxshim-host -> the real usbmuxd (PrivateUsbmuxd)
        idevice_id -l, lmclient all, muxconn --list-loop bursts, raw ReadBUID,
        ListListeners, Connect to a missing device, pair record save/read/delete,
        Listen subscriptions held for 5-30 s
  dev:  clients -> muxshim (tunnel:) -> muxshim-host -> fakedev -> devsvc
        Connect data sessions: muxconn send/recv/both/echo of PRNG data verified
        byte for byte (1 B .. 8 MiB), 8 parallel echo sessions, round trips, and
        SHA-256-checked echoes from Python

Each muxshim-host is restarted every --helper-every seconds (the dev one half
a period later; every third restart is a SIGKILL, the others SIGTERM, which
must exit 0), usbmuxd every --usbmuxd-every seconds (every third a SIGKILL).
Every --quiet-every seconds traffic pauses: once the workers are idle and the
shims report no open session, descriptor counts and RSS are taken ("quiet
points"). RSS and descriptor counts of every daemon are sampled every
--sample-every seconds into samples.csv.

Verdict (exit 0 = PASS, 1 = FAIL, 2 = could not set up), see docs/SOAK.md:
  - no unexplained failure: a failed operation is explained only if it was
    detected inside a restart window of a service its chain goes through,
    [restart begins - --pre, service answers again + --grace]; anything
    else (a failure outside the windows, a daemon that died on its own or
    did not exit 0 on SIGTERM, a chain that did not recover within
    --recovery-timeout) is unexplained;
  - flat memory: for each shim (they never restart), the highest RSS in the
    last quarter of the traffic is at most the highest in the first quarter
    plus max(10 %, 512 KiB); for each helper, which restarts, the growth
    within a life (highest RSS in the last quarter of an incarnation's life
    minus the highest in its first half), averaged over the incarnations
    that lived >= --min-life-samples samples, is at most the same margin
    (with --helper-every 0 the helpers get the shims' rule over the run);
  - flat descriptors: at every quiet point each shim and each helper holds
    exactly as many descriptors as at the first quiet point (taken before
    traffic starts);
  - every operation kind succeeded at least once and at least 2 quiet points
    were taken (otherwise nothing was shown).

Before traffic starts, each shim's per-process table (shim/stats.h
STATS_MAX_PROCS, a designed bound) is filled with short sessions from as many
forked processes, so that filling a bounded cache is not mistaken for a leak.
"""

import argparse
import csv
import datetime
import hashlib
import json
import os
import platform
import plistlib
import random
import re
import signal
import socket
import statistics
import sys
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import harness  # noqa: E402
from tunnel_util import Helper, connect_device, plist_msg, recv_msg, usbmuxd_request  # noqa: E402

KiB = 1024
MiB = 1 << 20

DAEMONS = ("shim-real", "shim-dev", "helper-real", "helper-dev", "usbmuxd")
# Which restartable services each chain's operations go through.
CHAIN_SERVICES = {"real": ("helper-real", "usbmuxd"), "dev": ("helper-dev",)}

MEM_MARGIN_FRACTION = 0.10
MEM_MARGIN_KIB = 512


class OpError(Exception):
    """An operation did not do what it must; the message says what."""


def log(msg):
    sys.stdout.write("%s soak: %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stdout.flush()


# --------------------------------------------------------------------------
# Bookkeeping
# --------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.t0 = time.monotonic()

    def now(self):
        return time.monotonic() - self.t0


class Window:
    """A restart of one service: [start, back]; back is None until the chain
    answered again (or forever, if it never did)."""

    def __init__(self, service, start, sig):
        self.service = service
        self.start = start
        self.sig = sig
        self.stopped_rc = None
        self.back = None
        self.recovered = False


class Recorder:
    def __init__(self, clock, outdir):
        self.clock = clock
        self.lock = threading.Lock()
        self.kinds = {}          # kind -> dict(chain, ops, ok, bytes)
        self.failures = []       # dict(t, kind, chain, error, start)
        self.anomalies = []      # dict(t, what, error): always unexplained
        self.windows = []
        self.restarts = {d: 0 for d in DAEMONS}
        self.events_f = open(os.path.join(outdir, "events.csv"), "w", newline="")
        self.events = csv.writer(self.events_f)
        self.events.writerow(["t_s", "event", "service", "detail"])

    def event(self, what, service, detail=""):
        with self.lock:
            self.events.writerow(["%.2f" % self.clock.now(), what, service, detail])
            self.events_f.flush()

    def kind(self, kind, chain):
        with self.lock:
            return self.kinds.setdefault(kind, {"chain": chain, "ops": 0, "ok": 0, "bytes": 0})

    def op_done(self, kind, chain, start, ok, nbytes=0, error=None):
        with self.lock:
            k = self.kinds.setdefault(kind, {"chain": chain, "ops": 0, "ok": 0, "bytes": 0})
            k["ops"] += 1
            if ok:
                k["ok"] += 1
                k["bytes"] += nbytes
            else:
                self.failures.append({"t": self.clock.now(), "start": start, "kind": kind,
                                      "chain": chain, "error": str(error)[:400]})

    def anomaly(self, what, error):
        t = self.clock.now()
        with self.lock:
            self.anomalies.append({"t": t, "what": what, "error": str(error)[:400]})
        log("ANOMALY %s: %s" % (what, str(error)[:400]))
        self.event("anomaly", what, str(error).splitlines()[0][:200])

    def explain(self, failure, pre, grace, end):
        """The window that explains a failure, or None."""
        for w in self.windows:
            if w.service not in CHAIN_SERVICES[failure["chain"]]:
                continue
            back = w.back if w.back is not None else end
            if w.start - pre <= failure["t"] <= back + grace:
                return w
        return None


class Gate:
    """Workers pass through enter()/leave() around each operation; pause()
    stops new operations and waits until none is in progress."""

    def __init__(self):
        self.cond = threading.Condition()
        self.open = True
        self.active = 0
        self.stopping = False

    def enter(self):
        with self.cond:
            while not self.open and not self.stopping:
                self.cond.wait()
            if self.stopping:
                return False
            self.active += 1
            return True

    def leave(self):
        with self.cond:
            self.active -= 1
            self.cond.notify_all()

    @property
    def pausing(self):
        return not self.open or self.stopping

    def pause(self, timeout):
        with self.cond:
            self.open = False
            self.cond.notify_all()
            return self.cond.wait_for(lambda: self.active == 0, timeout)

    def resume(self):
        with self.cond:
            self.open = True
            self.cond.notify_all()

    def stop(self):
        with self.cond:
            self.stopping = True
            self.cond.notify_all()


# --------------------------------------------------------------------------
# The daemons
# --------------------------------------------------------------------------

def stats_max_procs():
    """shim/stats.h's STATS_MAX_PROCS (the per-process table's bound)."""
    with open(os.path.join(harness.ROOT, "shim", "stats.h")) as f:
        m = re.search(r"#define\s+STATS_MAX_PROCS\s+(\d+)", f.read())
    if not m:
        raise harness.HarnessError("STATS_MAX_PROCS not found in shim/stats.h")
    return int(m.group(1))


class Chain:
    def __init__(self, name, helper, shim, path):
        self.name = name
        self.helper = helper
        self.shim = shim
        self.path = path


class Setup:
    def __init__(self, outdir, args):
        self.outdir = outdir
        d = lambda n: os.path.join(outdir, n)  # noqa: E731
        for n in ("helper-real", "helper-dev", "shim-real", "shim-dev", "dev"):
            os.makedirs(d(n), exist_ok=True)
        self.mux = harness.PrivateUsbmuxd(d("usbmuxd"), verbose=1, stop_timeout=15,
                                          start_timeout=30).start()
        self.devsvc = harness.DevSvc(logdir=d("dev"), ready_timeout=30).start()
        self.fakedev = harness.FakeDev(d("fakedev.sock"), logdir=d("dev"), ready_timeout=30).start()
        # Authenticated tunnels, as deployments are advised to run them: every
        # reconnect after a helper restart goes through the HMAC handshake.
        token = d("token")
        with open(token, "w") as f:
            f.write("soak-%032x\n" % random.Random(args.seed).getrandbits(128))
        hargs = ("--stats-interval", 30, "--token-file", token)
        hreal = Helper("unix:" + self.mux.socket, *hargs, log_level="info",
                       logdir=d("helper-real"), ready_timeout=30, stop_timeout=15).start()
        hdev = Helper("unix:" + self.fakedev.socket, *hargs, log_level="info",
                      logdir=d("helper-dev"), ready_timeout=30, stop_timeout=15).start()
        sargs = ("--stats-interval", 60, "--token-file", token)
        sreal = harness.Shim(d("shim-real.sock"), hreal.tunnel, *sargs, log_level="info",
                             logdir=d("shim-real"), ready_timeout=30, stop_timeout=15).start()
        sdev = harness.Shim(d("shim-dev.sock"), hdev.tunnel, *sargs, log_level="info",
                            logdir=d("shim-dev"), ready_timeout=30, stop_timeout=15).start()
        self.real = Chain("real", hreal, sreal, sreal.listen)
        self.dev = Chain("dev", hdev, sdev, sdev.listen)
        self.chains = {"real": self.real, "dev": self.dev}
        # What the real usbmuxd answers directly; the tunnel must give the same.
        self.buid = usbmuxd_request(self.mux.socket, {"MessageType": "ReadBUID"})["BUID"]
        self.nodev_reply = usbmuxd_request(self.mux.socket, NODEV_CONNECT)

    def procs(self):
        """name -> object with .pid (None while down)."""
        return {"shim-real": self.real.shim, "shim-dev": self.dev.shim,
                "helper-real": self.real.helper, "helper-dev": self.dev.helper,
                "usbmuxd": self.mux}


NODEV_CONNECT = {"MessageType": "Connect", "DeviceID": 4242, "PortNumber": socket.htons(62078)}


def pid_stats(obj):
    """(pid, rss_kib, fds) or (pid, None, None) if it is gone."""
    pid = obj.pid if obj is not None and obj.alive() else None
    if pid is None:
        return None, None, None
    try:
        return pid, harness.proc_rss_kib(pid), harness.proc_fd_count(pid)
    except OSError:
        return pid, None, None


def seccomp_mode(obj):
    """The Seccomp: field of /proc/PID/status (2 = filter), or "-"."""
    try:
        with open("/proc/%d/status" % obj.pid) as f:
            for line in f:
                if line.startswith("Seccomp:"):
                    return line.split()[1]
    except (OSError, TypeError):
        pass
    return "-"


def shim_open_sessions(shim):
    rc, out, err = harness._run([shim.binary, "stats", "--json", "--listen", shim.listen],
                                timeout=30)
    if rc != 0:
        raise OpError("muxshim stats: rc=%d %s" % (rc, err.strip()))
    return json.loads(out)["sessions_open"]


# --------------------------------------------------------------------------
# Operations: each raises OpError (or anything) on failure, returns bytes moved
# --------------------------------------------------------------------------

CLIENT_TIMEOUT = 90
MUXCONN_TIMEOUT = 150     # muxconn's own watchdog; the harness waits longer


def op_idevice_id(ctx, rng):
    rc, out, err = harness.run_client(["idevice_id", "-l"], ctx.setup.real.path,
                                      timeout=CLIENT_TIMEOUT)
    if rc != 0 or out.strip():
        raise OpError("idevice_id -l: rc=%d out=%r err=%r" % (rc, out[:200], err[:200]))
    return 0


def op_lmclient(ctx, rng):
    udid = "00008030-%016X" % rng.getrandbits(64)
    rc, out, err = harness.run_client([harness.tool("lmclient"), "all", "--udid", udid,
                                       "--events-ms", "300"], ctx.setup.real.path,
                                      timeout=CLIENT_TIMEOUT)
    if rc != 0:
        raise OpError("lmclient all: rc=%d %s" % (rc, (err or out).strip()[-300:]))
    return 0


def op_list_burst(ctx, rng):
    n = rng.choice((20, 50, 100))
    par = rng.choice((1, 4, 8))
    r = harness.muxconn("--list-loop", n, "--parallel", par, "--timeout", MUXCONN_TIMEOUT,
                        socket=ctx.setup.real.path, timeout=MUXCONN_TIMEOUT + 60, check=False)
    if not (r["_rc"] == 0 and r.get("ok") and r.get("list_sessions") == n and r.get("failed") == 0):
        raise OpError("muxconn --list-loop %d --parallel %d: %s" % (n, par, r.get("error", r)))
    return 0


def op_readbuid(ctx, rng):
    r = usbmuxd_request(ctx.setup.real.path, {"MessageType": "ReadBUID"}, timeout=30)
    if r.get("BUID") != ctx.setup.buid:
        raise OpError("ReadBUID: %r, usbmuxd says %r" % (r, ctx.setup.buid))
    return 0


def op_list_listeners(ctx, rng):
    r = usbmuxd_request(ctx.setup.real.path, {"MessageType": "ListListeners"}, timeout=30)
    if not isinstance(r.get("ListenerList"), list):
        raise OpError("ListListeners: %r" % (r,))
    return 0


def op_connect_nodev(ctx, rng):
    r = usbmuxd_request(ctx.setup.real.path, NODEV_CONNECT, timeout=30)
    if r != ctx.setup.nodev_reply:
        raise OpError("Connect to a missing device: %r, usbmuxd says %r"
                      % (r, ctx.setup.nodev_reply))
    return 0


def op_pair_record(ctx, rng):
    """Save a random record, read it back equal, delete it, read fails."""
    path = ctx.setup.real.path
    rid = "00008030-%016X" % rng.getrandbits(64)
    rec = {"HostID": "%032X" % rng.getrandbits(128), "SystemBUID": ctx.setup.buid,
           "Blob": rng.randbytes(rng.choice((16, 1000, 6000)))}
    data = plistlib.dumps(rec, fmt=rng.choice((plistlib.FMT_XML, plistlib.FMT_BINARY)))
    r = usbmuxd_request(path, {"MessageType": "SavePairRecord", "PairRecordID": rid,
                               "PairRecordData": data}, timeout=30)
    if r.get("Number") != 0:
        raise OpError("SavePairRecord: %r" % (r,))
    r = usbmuxd_request(path, {"MessageType": "ReadPairRecord", "PairRecordID": rid}, timeout=30)
    if "PairRecordData" not in r or plistlib.loads(r["PairRecordData"]) != rec:
        raise OpError(("ReadPairRecord: not the record saved: %r" % (r,))[:300])
    r = usbmuxd_request(path, {"MessageType": "DeletePairRecord", "PairRecordID": rid}, timeout=30)
    if r.get("Number") != 0:
        raise OpError("DeletePairRecord: %r" % (r,))
    r = usbmuxd_request(path, {"MessageType": "ReadPairRecord", "PairRecordID": rid}, timeout=30)
    if "PairRecordData" in r or r.get("Number", 0) == 0:
        raise OpError(("ReadPairRecord after delete: %r" % (r,))[:300])
    return len(data)


def op_listen_hold(ctx, rng):
    """A Listen subscription held 5-30 s (less when traffic pauses): no
    device, so nothing may arrive, and it must not end."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    try:
        s.connect(ctx.setup.real.path)
        s.sendall(plist_msg({"MessageType": "Listen", "ClientVersionString": "soak",
                             "ProgName": "soak"}))
        reply = recv_msg(s)[3]
        if reply.get("Number") != 0:
            raise OpError("Listen: %r" % (reply,))
        end = time.monotonic() + rng.uniform(5, 30)
        s.settimeout(0.5)
        while time.monotonic() < end and not ctx.gate.pausing:
            try:
                b = s.recv(4096)
            except socket.timeout:
                continue
            if not b:
                raise OpError("Listen subscription ended (EOF) after it was accepted")
            raise OpError("Listen: %d unexpected bytes with no device: %r" % (len(b), b[:64]))
    finally:
        s.close()
    return 0


def log_size(rng, lo=0, hi=23):
    """1 B .. 8 MiB, log-uniform."""
    return max(1, int(2 ** rng.uniform(lo, hi)))


def muxconn_dev(ctx, *args):
    r = harness.muxconn("--port", ctx.setup.devsvc.port, *args, "--timeout", MUXCONN_TIMEOUT,
                        socket=ctx.setup.dev.path, timeout=MUXCONN_TIMEOUT + 60, check=False)
    if not (r["_rc"] == 0 and r.get("ok") and r.get("failed") == 0):
        raise OpError("muxconn %s: %s" % (" ".join(map(str, args)), r.get("error", r)))
    return r


def op_dev_transfer(ctx, rng):
    mode = rng.choice(("--send", "--recv", "--both", "--echo"))
    n = log_size(rng)
    seed = rng.getrandbits(31)
    r = muxconn_dev(ctx, mode, n, "--seed", seed)
    if mode == "--send" and r.get("verdict") != "OK %d" % n:
        raise OpError("muxconn --send %d: device verdict %r" % (n, r.get("verdict")))
    return n * (2 if mode in ("--both", "--echo") else 1)


def op_dev_parallel_echo(ctx, rng):
    n = rng.choice((4096, 65536, 300000))
    muxconn_dev(ctx, "--parallel", 8, "--echo", n, "--seed", rng.getrandbits(31))
    return 16 * n


def op_dev_rtt(ctx, rng):
    muxconn_dev(ctx, "--rtt", 50, "--size", rng.choice((16, 512, 4096)))
    return 0


def op_dev_sha_echo(ctx, rng):
    """Random bytes to devsvc's ECHO and back, compared by SHA-256 and length."""
    n = log_size(rng, 0, 22)
    payload = rng.randbytes(n)
    s = connect_device(ctx.setup.dev.path, ctx.setup.devsvc.port, timeout=60)
    err = []

    def send():
        try:
            s.sendall(b"ECHO\n" + payload)
            s.shutdown(socket.SHUT_WR)
        except Exception as e:  # reported by the reader's check
            err.append(e)

    t = threading.Thread(target=send, daemon=True)
    t.start()
    h = hashlib.sha256()
    got = 0
    try:
        while True:
            b = s.recv(1 << 16)
            if not b:
                break
            h.update(b)
            got += len(b)
    finally:
        t.join(60)
        s.close()
    if err:
        raise OpError("echo of %d bytes: send failed: %s" % (n, err[0]))
    if got != n or h.digest() != hashlib.sha256(payload).digest():
        raise OpError("echo of %d bytes: got %d bytes, SHA-256 %s" % (
            n, got, "equal" if h.digest() == hashlib.sha256(payload).digest() else "differs"))
    return 2 * n


REAL_OPS = [(op_idevice_id, "idevice_id", 2), (op_lmclient, "lmclient", 1),
            (op_list_burst, "list-burst", 2), (op_readbuid, "readbuid", 3),
            (op_list_listeners, "listlisteners", 1), (op_connect_nodev, "connect-nodev", 1),
            (op_pair_record, "pair-record", 2)]
DEV_OPS = [(op_dev_transfer, "dev-transfer", 5), (op_dev_parallel_echo, "dev-parallel-echo", 1),
           (op_dev_rtt, "dev-rtt", 1), (op_dev_sha_echo, "dev-sha-echo", 3)]


class Ctx:
    def __init__(self, setup, rec, gate, clock, stop):
        self.setup = setup
        self.rec = rec
        self.gate = gate
        self.clock = clock
        self.stop = stop


def worker(ctx, chain, ops, seed, pause_max):
    rng = random.Random(seed)
    weights = [w for _, _, w in ops]
    for _, kind, _ in ops:
        ctx.rec.kind(kind, chain)
    while not ctx.stop.is_set():
        if not ctx.gate.enter():
            return
        fn, kind, _ = rng.choices(ops, weights)[0]
        start = ctx.clock.now()
        try:
            n = fn(ctx, rng)
            ctx.rec.op_done(kind, chain, start, True, n)
        except Exception as e:
            ctx.rec.op_done(kind, chain, start, False,
                            error="%s: %s" % (type(e).__name__, str(e).strip().splitlines()[0]
                                              if str(e).strip() else ""))
        finally:
            ctx.gate.leave()
        time.sleep(rng.uniform(0, pause_max))


# --------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------

class Sampler(threading.Thread):
    def __init__(self, ctx, every, outdir, restarting):
        super().__init__(daemon=True)
        self.ctx = ctx
        self.every = every
        self.phase = "setup"
        self.restarting = restarting     # set of service names being restarted
        self.rows = []                   # (t, phase, {name: (pid, rss, fds)})
        self.f = open(os.path.join(outdir, "samples.csv"), "w", newline="")
        self.w = csv.writer(self.f)
        hdr = ["t_s", "phase"]
        for n in DAEMONS:
            hdr += [n + "_pid", n + "_rss_kib", n + "_fds"]
        self.w.writerow(hdr)
        self.halt = threading.Event()
        self.died = set()

    def sample(self):
        t = self.ctx.clock.now()
        vals = {n: pid_stats(p) for n, p in self.ctx.setup.procs().items()}
        row = ["%.2f" % t, self.phase]
        for n in DAEMONS:
            row += ["" if v is None else v for v in vals[n]]
        self.w.writerow(row)
        self.f.flush()
        self.rows.append((t, self.phase, vals))
        # A daemon that is down while nobody restarts it died on its own.
        procs = self.ctx.setup.procs()
        for n in DAEMONS:
            if n in self.restarting or n in self.died:
                continue
            if not procs[n].alive() and n not in self.restarting:
                self.died.add(n)
                self.ctx.rec.anomaly("died:" + n, "%s is not running and was not being "
                                     "restarted" % n)
        for n, p in (("fakedev", self.ctx.setup.fakedev), ("devsvc", self.ctx.setup.devsvc)):
            if n not in self.died and not p.alive():
                self.died.add(n)
                self.ctx.rec.anomaly("died:" + n, "the test double %s died" % n)

    def run(self):
        while not self.halt.wait(self.every):
            try:
                self.sample()
            except Exception as e:
                log("sampler: %s" % e)


# --------------------------------------------------------------------------
# Restarts and quiet points
# --------------------------------------------------------------------------

class Coordinator:
    def __init__(self, ctx, args, sampler, restarting, outdir):
        self.ctx = ctx
        self.args = args
        self.sampler = sampler
        self.restarting = restarting
        self.rng = random.Random(args.seed ^ 0x5eed)
        self.quiet = []          # dict per quiet point
        self.qf = open(os.path.join(outdir, "quiet.csv"), "w", newline="")
        self.qw = csv.writer(self.qf)
        hdr = ["t_s", "label", "settled"]
        for n in DAEMONS:
            hdr += [n + "_rss_kib", n + "_fds"]
        hdr += ["shim-real_sessions_open", "shim-dev_sessions_open"]
        self.qw.writerow(hdr)
        self.counts = {"helper-real": 0, "helper-dev": 0, "usbmuxd": 0}

    # -- probes: the chain answers again -----------------------------------

    def probe(self, chain):
        s = self.ctx.setup
        try:
            if chain == "real":
                return usbmuxd_request(s.real.path, {"MessageType": "ReadBUID"},
                                       timeout=10).get("BUID") == s.buid
            sock = connect_device(s.dev.path, s.devsvc.port, timeout=10)
            try:
                sock.sendall(b"ECHO\nprobe")
                sock.shutdown(socket.SHUT_WR)
                data = b""
                while True:
                    b = sock.recv(64)
                    if not b:
                        break
                    data += b
                return data == b"probe"
            finally:
                sock.close()
        except Exception:
            return False

    def wait_back(self, chain, w):
        deadline = time.monotonic() + self.args.recovery_timeout
        while time.monotonic() < deadline:
            if self.probe(chain):
                w.back = self.ctx.clock.now()
                w.recovered = True
                return True
            time.sleep(0.2)
        w.back = self.ctx.clock.now()
        self.ctx.rec.anomaly("recovery:" + w.service, "the %s chain did not answer within %d s "
                             "after %s was restarted" % (chain, self.args.recovery_timeout,
                                                         w.service))
        return False

    def start_with_retries(self, name, start):
        for attempt in range(3):
            try:
                start()
                return True
            except harness.HarnessError as e:
                self.ctx.rec.anomaly("start:" + name, "attempt %d: %s" % (attempt + 1, e))
                time.sleep(2)
        return False

    # -- restarts ------------------------------------------------------------

    def restart(self, service):
        rec = self.ctx.rec
        k = self.counts[service]
        self.counts[service] += 1
        sig = signal.SIGKILL if k % 3 == 2 else signal.SIGTERM
        signame = "SIGKILL" if sig == signal.SIGKILL else "SIGTERM"
        w = Window(service, self.ctx.clock.now(), signame)
        with rec.lock:
            rec.windows.append(w)
            rec.restarts[service] += 1
        self.restarting.add(service)
        self.sampler.phase = "restart:" + service
        rec.event("restart", service, signame)
        s = self.ctx.setup
        try:
            if service == "usbmuxd":
                rc = s.mux.kill() if sig == signal.SIGKILL else s.mux.stop(timeout=15)
                w.stopped_rc = rc
                time.sleep(self.rng.uniform(0, 1.5))
                self.start_with_retries(service, s.mux.start)
                chain = "real"
            else:
                chain = service.split("-")[1]
                h = s.chains[chain].helper
                was_alive = h.alive()   # if not, the sampler has reported it
                rc = h.kill() if sig == signal.SIGKILL else h.stop(timeout=15)
                w.stopped_rc = rc
                if was_alive and sig == signal.SIGTERM and rc != 0:
                    rec.anomaly("exit:" + service, "exited with status %s on SIGTERM "
                                "(expected 0)\n%s" % (rc, h.log_tail(10)))
                time.sleep(self.rng.uniform(0, 2.5))
                self.start_with_retries(service, h.start)
        finally:
            self.sampler.died.discard(service)   # report a later death again
            self.restarting.discard(service)
        ok = self.wait_back(chain, w)
        rec.event("back" if ok else "not-back", service, "%.2f s after the restart began"
                  % (w.back - w.start))
        log("restarted %s (%s, exit %s): answering again after %.1f s"
            % (service, signame, w.stopped_rc, w.back - w.start))
        self.sampler.phase = "traffic"

    # -- quiet points --------------------------------------------------------

    def quiet_point(self, label, baseline=None, resume=True):
        s = self.ctx.setup
        self.sampler.phase = "quiet"
        t_pause = time.monotonic()
        drained = self.ctx.gate.pause(self.args.drain_timeout)
        row = {"t": self.ctx.clock.now(), "label": label, "settled": False}
        if not drained:
            self.ctx.rec.anomaly("quiet:" + label, "operations still running %d s after "
                                 "traffic paused" % self.args.drain_timeout)
        else:
            # Closed sessions are torn down by the daemons asynchronously:
            # wait until the shims report none open and the counts hold.
            deadline = time.monotonic() + self.args.settle_timeout
            prev = None
            while True:
                try:
                    sess = {n: shim_open_sessions(p) for n, p in
                            (("shim-real", s.real.shim), ("shim-dev", s.dev.shim))}
                except Exception as e:
                    sess = {"error": str(e)}
                vals = {n: pid_stats(p) for n, p in s.procs().items()}
                fds = {n: vals[n][2] for n in DAEMONS}
                at_base = baseline is not None and all(
                    fds[n] == baseline[n + "_fds"] for n in DAEMONS if n != "usbmuxd")
                steady = prev is not None and fds == prev
                if all(v == 0 for v in sess.values()) and (at_base or
                                                            (baseline is None and steady)):
                    row["settled"] = True
                    break
                if time.monotonic() >= deadline:
                    break
                prev = fds
                time.sleep(0.5)
            for n in DAEMONS:
                row[n + "_rss_kib"] = vals[n][1]
                row[n + "_fds"] = vals[n][2]
            row["shim-real_sessions_open"] = sess.get("shim-real")
            row["shim-dev_sessions_open"] = sess.get("shim-dev")
            self.quiet.append(row)
            out = ["%.2f" % row["t"], label, int(row["settled"])]
            for n in DAEMONS:
                out += [row[n + "_rss_kib"], row[n + "_fds"]]
            out += [row["shim-real_sessions_open"], row["shim-dev_sessions_open"]]
            self.qw.writerow(out)
            self.qf.flush()
            log("quiet point %s (%.1f s to drain and settle): fds %s" % (
                label, time.monotonic() - t_pause,
                " ".join("%s=%s" % (n, row[n + "_fds"]) for n in DAEMONS)))
        if resume:
            self.sampler.phase = "traffic"
            self.ctx.gate.resume()
        return row


def prefill(path, n, batch=32):
    """n short sessions (one ListDevices each) from n distinct processes."""
    bad = 0
    for i in range(0, n, batch):
        pids = []
        for _ in range(min(batch, n - i)):
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    s = socket.socket(socket.AF_UNIX)
                    s.settimeout(30)
                    s.connect(path)
                    s.sendall(plist_msg({"MessageType": "ListDevices"}))
                    recv_msg(s)
                    s.close()
                    code = 0
                finally:
                    os._exit(code)
            pids.append(pid)
        for pid in pids:
            _, st = os.waitpid(pid, 0)
            if st != 0:
                bad += 1
    return bad


# --------------------------------------------------------------------------
# Analysis
# --------------------------------------------------------------------------

def margin(ref):
    return max(MEM_MARGIN_FRACTION * ref, MEM_MARGIN_KIB)


def judge_memory(rows, name, t_start, t_end):
    """Shim rule: highest RSS in the last quarter vs highest in the first."""
    q = (t_end - t_start) / 4
    first = [v[name][1] for t, _, v in rows if t_start <= t <= t_start + q and v[name][1]]
    last = [v[name][1] for t, _, v in rows if t_end - q <= t <= t_end and v[name][1]]
    if not first or not last:
        return False, "no samples in the first or last quarter"
    ref, hi = max(first), max(last)
    ok = hi <= ref + margin(ref)
    return ok, "first quarter max %d KiB, last quarter max %d KiB (%+d KiB, allowed +%d)" % (
        ref, hi, hi - ref, margin(ref))


MIN_LIVES = 3


def judge_helper_memory(rows, name, min_samples):
    """The helpers restart, and a fresh process inherits no leak, so growth
    is measured within each incarnation (pid) that lived >= min_samples
    samples: the highest RSS of the last quarter of its life minus the
    highest of its first half. A life is about a minute, and one life alone
    is no verdict: a transfer burst, or heap that glibc keeps after one,
    moves a single life's figure by +-700 KiB without any leak (two rules
    that judged lives one by one failed or nearly failed clean runs). A leak
    grows every life alike, bursts go either way: so the verdict is on the
    mean over the lives, with the shims' margin, from MIN_LIVES lives up."""
    lives = {}
    for t, _, v in rows:
        pid, rss, _ = v[name]
        if pid and rss:
            lives.setdefault(pid, []).append((t, rss))
    growth, refs = [], []
    for pid, samples in lives.items():
        if len(samples) < min_samples:
            continue
        a, b = samples[0][0], samples[-1][0]
        q = (b - a) / 4
        ref = max(r for t, r in samples if t <= a + 2 * q)
        hi = max(r for t, r in samples if t >= b - q)
        growth.append(hi - ref)
        refs.append(ref)
    if len(growth) < MIN_LIVES:
        return None, ("%d incarnations lived %d samples, %d needed (not judged)"
                      % (len(growth), min_samples, MIN_LIVES)), growth
    mean = statistics.mean(growth)
    allowed = margin(statistics.mean(refs))
    return mean <= allowed, ("%d incarnations, mean growth within a life %+d KiB (lives %+d to "
                             "%+d), allowed +%d" % (len(growth), mean, min(growth), max(growth),
                                                    allowed)), growth


def fmt_table(header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "  ".join(str(x).rjust(w) if i else str(x).ljust(w)  # noqa: E731
                               for i, (x, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def md_table(header, rows, left=1):
    out = ["| " + " | ".join(map(str, header)) + " |",
           "|" + "|".join(" --- " if i < left else " ---: " for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(out)


def log_counts(path):
    c = {"warn": 0, "error": 0}
    try:
        with open(path, errors="replace") as f:
            for line in f:
                for lvl in c:
                    if " %s: " % lvl in line:
                        c[lvl] += 1
    except OSError:
        pass
    return c


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def every(seconds):
    return "every %g s" % seconds if seconds > 0 else "never"


def clamp(x, lo, hi):
    return max(lo, min(hi, x))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float,
                   default=float(os.environ.get("SOAK_MINUTES") or 10),
                   help="traffic duration (default $SOAK_MINUTES or 10)")
    p.add_argument("--out", help="output directory (default build/soak/DATE-TIME)")
    p.add_argument("--seed", type=int, default=1, help="seeds the operation mix and sizes")
    p.add_argument("--helper-every", type=float, help="seconds between restarts of each "
                   "muxshim-host (default: 10 %% of the run, between 20 and 60; 0: never)")
    p.add_argument("--usbmuxd-every", type=float, help="seconds between usbmuxd restarts "
                   "(default: 15 %% of the run, between 30 and 90; 0: never)")
    p.add_argument("--quiet-every", type=float, help="seconds between quiet points "
                   "(default: 10 %% of the run, between 15 and 60)")
    p.add_argument("--sample-every", type=float, default=2.0,
                   help="seconds between RSS/fd samples (default 2)")
    p.add_argument("--real-workers", type=int, default=3,
                   help="workers with real-client traffic to usbmuxd (default 3)")
    p.add_argument("--listeners", type=int, default=2, help="workers holding Listen subscriptions (default 2)")
    p.add_argument("--dev-workers", type=int, default=4,
                   help="workers with Connect data sessions (default 4)")
    p.add_argument("--pre", type=float, default=1.0,
                   help="a restart window begins this long before the restart")
    p.add_argument("--grace", type=float, default=5.0,
                   help="a restart window ends this long after the chain answers again")
    p.add_argument("--recovery-timeout", type=int, default=60,
                   help="seconds a chain may take to answer after a restart (default 60)")
    p.add_argument("--drain-timeout", type=int, default=300,
                   help="seconds running operations may take to finish at a quiet point")
    p.add_argument("--settle-timeout", type=int, default=20,
                   help="seconds for sessions and fds to return to baseline at a quiet point")
    p.add_argument("--min-life-samples", type=int, default=8,
                   help="a helper incarnation is judged on memory if it has this many samples")
    p.add_argument("--no-prefill", action="store_true",
                   help="do not fill the shims' per-process tables before traffic")
    a = p.parse_args()
    dur = a.minutes * 60
    if a.helper_every is None:
        a.helper_every = clamp(round(dur / 10), 20, 60)
    if a.usbmuxd_every is None:
        a.usbmuxd_every = clamp(round(dur * 0.15), 30, 90)
    if a.quiet_every is None:
        a.quiet_every = clamp(round(dur / 10), 15, 60)
    return a


def schedule(args, dur):
    ev = []
    if args.helper_every > 0:
        t = args.helper_every
        while t < dur:
            ev.append((t, "restart", "helper-real"))
            t += args.helper_every
        t = args.helper_every * 1.5
        while t < dur:
            ev.append((t, "restart", "helper-dev"))
            t += args.helper_every
    if args.usbmuxd_every > 0:
        t = args.usbmuxd_every
        while t < dur:
            ev.append((t, "restart", "usbmuxd"))
            t += args.usbmuxd_every
    t = args.quiet_every
    while t < dur - 5:
        ev.append((t, "quiet", None))
        t += args.quiet_every
    return sorted(ev, key=lambda e: (e[0], e[1] != "quiet"))


def main():
    args = parse_args()
    dur = args.minutes * 60
    outdir = os.path.abspath(args.out or os.path.join(
        harness.BUILD, "soak", datetime.datetime.now().strftime("%Y%m%d-%H%M%S")))
    os.makedirs(outdir, exist_ok=True)
    started_at = datetime.datetime.now().astimezone()
    log("output in %s" % outdir)
    log("%.1f min of traffic; helper restarts %s, usbmuxd restarts %s, quiet points "
        "every %g s, samples every %g s; workers: %d real + %d Listen + %d dev"
        % (args.minutes, every(args.helper_every), every(args.usbmuxd_every), args.quiet_every,
           args.sample_every, args.real_workers, args.listeners, args.dev_workers))

    try:
        setup = Setup(outdir, args)
    except harness.HarnessError as e:
        print("soak: could not set up: %s" % e, file=sys.stderr)
        return 2
    clock = Clock()
    rec = Recorder(clock, outdir)
    gate = Gate()
    stop = threading.Event()
    ctx = Ctx(setup, rec, gate, clock, stop)
    restarting = set()

    if not args.no_prefill:
        n = stats_max_procs() + 64
        t = time.monotonic()
        for ch in (setup.real, setup.dev):
            bad = prefill(ch.path, n)
            if bad:
                print("soak: prefill of %s: %d of %d sessions failed" % (ch.name, bad, n),
                      file=sys.stderr)
                return 2
        log("prefilled both shims' per-process tables with %d processes each (%.1f s)"
            % (n, time.monotonic() - t))

    sampler = Sampler(ctx, args.sample_every, outdir, restarting)
    coord = Coordinator(ctx, args, sampler, restarting, outdir)
    clock.t0 = time.monotonic()   # times in every file count from here; traffic follows
    sampler.sample()
    base = coord.quiet_point("baseline")
    if not base.get("settled"):
        print("soak: the baseline quiet point did not settle: %r" % base, file=sys.stderr)
        return 2
    sampler.start()
    sandbox = {n: seccomp_mode(p) for n, p in setup.procs().items() if n != "usbmuxd"}

    clock_traffic0 = clock.now()
    threads = []
    seed = args.seed
    for i in range(args.real_workers):
        threads.append(threading.Thread(target=worker, args=(ctx, "real", REAL_OPS, seed + i, 0.3),
                                        daemon=True))
    for i in range(args.listeners):
        threads.append(threading.Thread(
            target=worker, args=(ctx, "real", [(op_listen_hold, "listen-hold", 1)],
                                 seed + 100 + i, 1.0), daemon=True))
    for i in range(args.dev_workers):
        threads.append(threading.Thread(target=worker, args=(ctx, "dev", DEV_OPS, seed + 200 + i,
                                                             0.3), daemon=True))
    sampler.phase = "traffic"
    for th in threads:
        th.start()
    log("traffic started")

    try:
        for t_ev, what, arg in schedule(args, dur):
            delay = clock_traffic0 + t_ev - clock.now()
            if delay > 0:
                time.sleep(delay)
            if what == "restart":
                coord.restart(arg)
            else:
                coord.quiet_point("t+%ds" % t_ev, base)
        delay = clock_traffic0 + dur - clock.now()
        if delay > 0:
            time.sleep(delay)
        t_traffic_end = clock.now()
        log("traffic ends")
        final = coord.quiet_point("final", base, resume=False)
        stop.set()
        gate.stop()
        for th in threads:
            th.join(30)
    except KeyboardInterrupt:
        stop.set()
        gate.stop()
        print("soak: interrupted", file=sys.stderr)
        return 2
    for n, p in setup.procs().items():
        if n != "usbmuxd":
            sandbox[n] += "/" + seccomp_mode(p)
    sampler.halt.set()
    sampler.join(10)
    sampler.phase = "end"
    sampler.sample()

    # Clean exits on SIGTERM are part of the verdict.
    for name, proc in (("shim-real", setup.real.shim), ("shim-dev", setup.dev.shim),
                       ("helper-real", setup.real.helper), ("helper-dev", setup.dev.helper)):
        if not proc.alive():
            continue    # reported by the sampler
        rc = proc.stop(timeout=15)
        if rc != 0:
            rec.anomaly("exit:" + name, "exited with status %s on SIGTERM at the end (expected 0)"
                        % rc)
    setup.mux.stop()
    ended_at = datetime.datetime.now().astimezone()

    return report(args, outdir, setup, rec, sampler, coord, base, final, clock_traffic0,
                  t_traffic_end, started_at, ended_at, sandbox)


def report(args, outdir, setup, rec, sampler, coord, base, final, t0, t1, started_at, ended_at,
           sandbox):
    explained, unexplained = [], []
    per_kind = {}
    for f in rec.failures:
        w = rec.explain(f, args.pre, args.grace, t1 + 3600)
        k = per_kind.setdefault(f["kind"], [0, 0])
        if w is not None:
            k[0] += 1
            explained.append((f, w))
        else:
            k[1] += 1
            unexplained.append(f)
    with open(os.path.join(outdir, "failures.csv"), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["t_s", "started_s", "kind", "chain", "explained_by", "error"])
        for f in sorted(rec.failures, key=lambda f: f["t"]):
            win = rec.explain(f, args.pre, args.grace, t1 + 3600)
            w.writerow(["%.2f" % f["t"], "%.2f" % f["start"], f["kind"], f["chain"],
                        "%s %s at %.1f s" % (win.service, win.sig, win.start) if win else "",
                        f["error"]])

    checks = []   # (ok, text)
    n_unexp = len(unexplained) + len(rec.anomalies)
    checks.append((n_unexp == 0, "unexplained failures: %d (operations %d, daemon anomalies %d)"
                   % (n_unexp, len(unexplained), len(rec.anomalies))))
    never_ok = [k for k, v in rec.kinds.items() if v["ok"] == 0]
    checks.append((not never_ok, "every operation kind succeeded at least once"
                   + (" (never: %s)" % ", ".join(never_ok) if never_ok else "")))
    mem = {}
    for n in ("shim-real", "shim-dev"):
        ok, txt = judge_memory(sampler.rows, n, t0, t1)
        mem[n] = txt
        checks.append((ok, "memory flat, %s: %s" % (n, txt)))
    if args.helper_every > 0:
        for n in ("helper-real", "helper-dev"):
            ok, txt, _ = judge_helper_memory(sampler.rows, n, args.min_life_samples)
            mem[n] = txt
            checks.append((ok, "memory flat, %s (per incarnation): %s" % (n, txt)))
    else:
        for n in ("helper-real", "helper-dev"):
            ok, txt = judge_memory(sampler.rows, n, t0, t1)
            mem[n] = txt
            checks.append((ok, "memory flat, %s: %s" % (n, txt)))
    quiet = [q for q in coord.quiet if q is not base]
    checks.append((len(coord.quiet) >= 2, "quiet points taken: %d (incl. baseline and final)"
                   % len(coord.quiet)))
    for n in ("shim-real", "shim-dev", "helper-real", "helper-dev"):
        b = base[n + "_fds"]
        off = [(q["label"], q[n + "_fds"]) for q in quiet if q[n + "_fds"] != b]
        checks.append((not off, "fds flat, %s: baseline %s, quiet points %s" % (
            n, b, "all equal" if not off else "differ: " + ", ".join(
                "%s=%s" % x for x in off))))
    unsettled = [q["label"] for q in quiet if not q["settled"]]
    if unsettled:
        checks.append((False, "sessions still open or fds not at baseline after %d s at quiet "
                       "points: %s" % (args.settle_timeout, ", ".join(unsettled))))
    passed = all(ok is not False for ok, _ in checks)   # None: not judged

    # Tables.
    op_rows = []
    tot = [0, 0, 0, 0]
    for kind in sorted(rec.kinds, key=lambda k: (rec.kinds[k]["chain"], k)):
        v = rec.kinds[kind]
        e, u = per_kind.get(kind, (0, 0))
        op_rows.append([kind, v["chain"], v["ops"], v["ok"], e, u,
                        "%.1f" % (v["bytes"] / MiB) if v["bytes"] else "-"])
        for i, x in enumerate((v["ops"], v["ok"], e, u)):
            tot[i] += x
    op_rows.append(["total", "", *tot, "%.1f" % (sum(v["bytes"] for v in rec.kinds.values())
                                                 / MiB)])
    op_hdr = ["operation", "chain", "ops", "ok", "failed (explained)", "failed (unexplained)",
              "MiB verified"]

    d_rows = []
    for n in DAEMONS:
        rss = [v[n][1] for _, _, v in sampler.rows if v[n][1]]
        fds = [v[n][2] for _, _, v in sampler.rows if v[n][2]]
        pids = {v[n][0] for _, _, v in sampler.rows if v[n][0]}
        logs = {"shim-real": setup.real.shim.err_path, "shim-dev": setup.dev.shim.err_path,
                "helper-real": setup.real.helper.err_path,
                "helper-dev": setup.dev.helper.err_path}.get(n)
        lc = log_counts(logs) if logs else None
        d_rows.append([n, rec.restarts.get(n, 0), len(pids),
                       min(rss, default="-"), max(rss, default="-"),
                       min(fds, default="-"), max(fds, default="-"),
                       "%s/%s" % (base[n + "_fds"], final.get(n + "_fds")),
                       "%s/%s" % (base[n + "_rss_kib"], final.get(n + "_rss_kib")),
                       "%d/%d" % (lc["warn"], lc["error"]) if lc else "-"])
    d_hdr = ["daemon", "restarts", "pids", "RSS min KiB", "RSS max KiB", "fds min", "fds max",
             "quiet fds base/final", "quiet RSS base/final", "log warn/error"]

    w_sig = {}
    for w in rec.windows:
        w_sig.setdefault(w.service, []).append(w.sig)
    recov = [w.back - w.start for w in rec.windows if w.recovered]
    restart_line = "; ".join("%s %d (%d SIGKILL)" % (s, len(v), v.count("SIGKILL"))
                             for s, v in sorted(w_sig.items()))
    verdict = "PASS" if passed else "FAIL"
    sandbox_line = ", ".join("%s %s" % kv for kv in sandbox.items())

    params = ("%.1f min of traffic, seed %d; helper restarts %s per helper, usbmuxd "
              "restarts %s; quiet points every %g s; samples every %g s; workers %d real + %d "
              "Listen + %d dev; window = [restart - %g s, answering again + %g s]; prefill %s"
              % (args.minutes, args.seed, every(args.helper_every), every(args.usbmuxd_every),
                 args.quiet_every, args.sample_every, args.real_workers, args.listeners,
                 args.dev_workers, args.pre, args.grace,
                 "off" if args.no_prefill else "%d processes per shim" % (stats_max_procs() + 64)))
    distro = "?"
    try:
        with open("/etc/os-release") as fh:
            distro = re.search(r'^PRETTY_NAME="?([^"\n]*)', fh.read(), re.M).group(1)
    except (OSError, AttributeError):
        pass
    machine = "%s, kernel %s, %d CPUs, Python %s" % (distro, platform.release(), os.cpu_count(),
                                                     platform.python_version())

    text = ["", "soak %s - %s" % (started_at.strftime("%Y-%m-%d %H:%M %Z"), params), "",
            fmt_table(op_hdr, op_rows), "", fmt_table(d_hdr, d_rows), "",
            "restarts: %s; chains answering again after %s" % (
                restart_line or "none", "%.1f-%.1f s (median %.1f s)" % (
                    min(recov), max(recov), sorted(recov)[len(recov) // 2]) if recov else "-"),
            "seccomp mode (/proc/PID/status) at the start/end: %s" % sandbox_line, ""]
    mark = {True: "ok  ", False: "FAIL", None: "n/a "}
    text += ["%s %s" % (mark[ok], t) for ok, t in checks]
    if unexplained or rec.anomalies:
        text += ["", "unexplained (first 20):"]
        for f in sorted(unexplained, key=lambda f: f["t"])[:20]:
            text.append("  t=%.1f s %s (%s): %s" % (f["t"], f["kind"], f["chain"], f["error"]))
        for a in rec.anomalies[:20]:
            text.append("  t=%.1f s %s: %s" % (a["t"], a["what"], a["error"].splitlines()[0]))
    text += ["", "VERDICT: %s   (output: %s)" % (verdict, outdir), ""]
    print("\n".join(text))

    md = ["# Soak run %s" % started_at.strftime("%Y-%m-%d %H:%M %Z"), "",
          "- Machine: %s" % machine,
          "- Parameters: %s" % params,
          "- Wall time: %s to %s" % (started_at.strftime("%H:%M:%S"), ended_at.strftime("%H:%M:%S")),
          "- Restarts: %s" % (restart_line or "none"),
          "- Chains answering again after a restart: %s" % (
              "%.1f-%.1f s (median %.1f s)" % (min(recov), max(recov),
                                               sorted(recov)[len(recov) // 2]) if recov else "-"),
          "- seccomp mode (/proc/PID/status) at the start/end: %s" % sandbox_line,
          "", "## Operations", "", md_table(op_hdr, op_rows, left=2), "",
          "## Daemons", "", md_table(d_hdr, d_rows), "",
          "## Checks", ""]
    md += ["- %s %s" % ({True: "ok", False: "**FAIL**", None: "n/a"}[ok], t) for ok, t in checks]
    if unexplained or rec.anomalies:
        md += ["", "## Unexplained failures (first 20)", ""]
        md += ["- t=%.1f s %s (%s): %s" % (f["t"], f["kind"], f["chain"], f["error"])
               for f in sorted(unexplained, key=lambda f: f["t"])[:20]]
        md += ["- t=%.1f s %s: %s" % (a["t"], a["what"], a["error"].splitlines()[0])
               for a in rec.anomalies[:20]]
    md += ["", "## Verdict: %s" % verdict, ""]
    with open(os.path.join(outdir, "summary.md"), "w") as fh:
        fh.write("\n".join(md))
    return 0 if passed else 1


if __name__ == "__main__":
    try:
        rc = main()
    except harness.HarnessError as e:
        print("soak: %s" % e, file=sys.stderr)
        traceback.print_exc()
        rc = 2
    sys.exit(rc)
