"""Runs inside a fresh network namespace (see test_exhaustion.py), where the
ephemeral port range is cut to 200 ports and tcp_tw_reuse is 0, as on a
Windows host. Stands up the real usbmuxd behind a TCP listener on
127.0.0.1:27015 (Apple's usbmuxd on Windows; build/tests/tcprelay, one event
loop, so that the stand-in is never what limits the session rate) and drives
ListDevices sessions through one of two paths, printing one JSON line:

  chain   the incident's setup: a per-session TCP hop (socat) into a host
          reverse proxy (socat) in front of usbmuxd's TCP port
  tunnel  muxshim -> one tunnel -> muxshim-host, whose upstream is TCP
  tunnel-wine  the same with build/muxshim-host.exe under wine (see
          test_windows.py): SESSIONS is the minimum; batches go on until
          MUXSHIM_WINE_BUDGET_S seconds (default 120) have passed, or 20,000
  gate-wine    tunnel-wine with --tenants (a `*` tenant): every session goes
          through the gate, over a loopback pair on Windows; exactly SESSIONS
          sessions, then the pairs' TIME_WAIT is counted once all have closed

MUXSHIM_HOST_EXE names another .exe (e.g. an old build, to see a test fail).
"""
import json
import os
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import harness  # noqa: E402

LIST_DEVICES = (b'<?xml version="1.0" encoding="UTF-8"?>\n<plist version="1.0"><dict>'
                b'<key>MessageType</key><string>ListDevices</string>'
                b'<key>ProgName</key><string>exhaustion</string></dict></plist>')


WINE_ENV = {"WINEDEBUG": "-all", "WINEDLLOVERRIDES": "mscoree,mshtml="}


def list_devices(path):
    """One usbmuxd session: ListDevices, the whole reply, close. True if ok."""
    s = socket.socket(socket.AF_UNIX)
    # Generous: running out of ports fails a session at once (the hop cannot
    # connect and closes), so this bounds only a stuck session.
    s.settimeout(60)
    try:
        s.connect(path)
        s.sendall(struct.pack("<IIII", 16 + len(LIST_DEVICES), 1, 8, 1) + LIST_DEVICES)
        hdr = b""
        while len(hdr) < 16:
            b = s.recv(16 - len(hdr))
            if not b:
                return False
            hdr += b
        length = struct.unpack("<I", hdr[:4])[0]
        got = 16
        while got < length:
            b = s.recv(length - got)
            if not b:
                return False
            got += len(b)
        return b"DeviceList" in hdr or got == length
    except OSError:
        return False
    finally:
        s.close()


def time_wait_by_port():
    out = subprocess.run(["ss", "-Htan", "state", "time-wait"], capture_output=True,
                         text=True, check=True).stdout
    ports = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) < 4:
            continue
        peer = f[-1].rsplit(":", 1)[1]
        ports[peer] = ports.get(peer, 0) + 1
    return ports


def listening(port):
    return lambda: harness.tcp_listening(port)


def open_pairs():
    """Connections in this namespace other than the tunnel (27016) and the
    usbmuxd hop (27015): the gate's loopback pairs, while not closed."""
    out = subprocess.run(["ss", "-Htan", "state", "connected"], capture_output=True,
                         text=True, check=True).stdout
    return [l for l in out.splitlines() if l.split() and not any(
        f.endswith((":27016", ":27015")) for f in l.split()[-2:]) and
        not l.startswith("TIME-WAIT")]


def run_gate_wine(helper, path, sessions):
    """Exactly `sessions` gated ListDevices, then TIME_WAIT once every pair
    has closed. The helper's own long-lived pairs (its signal socket, on
    Windows a loopback pair too) are open before and after: not counted."""
    before = set(open_pairs())
    r = harness.muxconn("--list-loop", sessions, socket=path, timeout=600, check=False)

    def left():
        return sorted(set(open_pairs()) - before)
    # The last sessions' pairs close just after their clients saw the reply:
    # wait for that (60 s bounds only a wedged wine; it takes milliseconds).
    try:
        harness.wait_for(lambda: not left(), 60, what="the gate's pairs closed")
    except harness.HarnessError:
        pass  # reported below: open_pairs
    still = left()
    # Which process holds each end left open (the helper, or only the
    # wineserver), with its timers: what tells a session the helper never
    # ended from a socket wine kept after the helper closed it.
    holders = []
    if still:
        out = subprocess.run(["ss", "-Htanpo", "state", "connected"], capture_output=True,
                             text=True).stdout
        ports = {f.rsplit(":", 1)[1] for l in still for f in l.split()[-2:]}
        holders = [l for l in out.splitlines()
                   if any(f.rsplit(":", 1)[-1] in ports for f in l.split()[3:5])]
    return {"mode": "gate-wine", "attempted": sessions, "ok": r.get("ops_ok", 0),
            "failed": r.get("ops_failed", 0), "open_pairs": still, "pair_holders": holders,
            "helper_alive": helper.alive(), "helper_log": helper.stderr_text()[-2000:]}


def run_wine(path, min_sessions, gated=False):
    """The helper under wine, with a wineserver of this namespace's own: one
    from outside would create the helper's sockets in its own namespace."""
    harness.Proc(["wineserver", "-f", "-p"], name="wineserver", env=WINE_ENV).start()
    exe = os.environ.get("MUXSHIM_HOST_EXE", os.path.join(harness.BUILD, "muxshim-host.exe"))
    extra, shim_extra = [], []
    if gated:
        d = harness.tempdir("gate-wine")
        token = harness.write_token(os.path.join(d, "all.key"))
        tenants = os.path.join(d, "tenants.txt")
        with open(tenants, "w") as f:
            f.write("all all.key *\r\n")
        extra = ["--tenants", "Z:" + tenants.replace("/", "\\")]
        shim_extra = ["--token-file", token]
    helper = harness.Proc(["wine", exe,
                           "--listen", "127.0.0.1:27016", "--upstream", "tcp:127.0.0.1:27015",
                           "--log-level", "warn"] + extra,
                          name="muxshim-host-wine", env=WINE_ENV, ready_fn=listening(27016),
                          ready_timeout=120).start()
    harness.Shim(path, "tunnel:127.0.0.1:27016", *shim_extra, log_level="warn").start()
    if gated:
        return run_gate_wine(helper, path, min_sessions)
    budget = float(os.environ.get("MUXSHIM_WINE_BUDGET_S", "120"))
    t0 = time.monotonic()
    done = ok = 0
    failed = None
    while done < 20000 and (done < min_sessions or time.monotonic() - t0 < budget):
        # 600 s for 500 sessions: wine's slowest seen is ~50/s (10 s a batch)
        r = harness.muxconn("--list-loop", 500, socket=path, timeout=600, check=False)
        done += 500
        ok += r.get("ops_ok", 0)
        if not r.get("ok"):
            failed = {k: v for k, v in r.items() if k != "_stderr"}
            break
    return {"mode": "tunnel-wine", "attempted": done, "ok": ok,
            "seconds": round(time.monotonic() - t0, 1), "failed_batch": failed,
            "helper_alive": helper.alive(), "helper_log": helper.stderr_text()[-2000:]}


def main(mode, sessions):
    mux = harness.PrivateUsbmuxd().start()
    # Apple's listener. Its connections end the way the helper ends them
    # (with a reset: no TIME_WAIT on either side) or, in the chain, with the
    # reverse proxy's FIN first: TIME_WAIT then lands on the proxy's side,
    # as in the incident.
    harness.TcpRelay(mux.socket, 27015, name="usbmuxd-tcp").start()
    d = harness.tempdir("exhaustion")
    path = os.path.join(d, "client.sock")
    if mode == "chain":
        harness.Proc(["socat", "TCP-LISTEN:23333,bind=127.0.0.1,reuseaddr,fork",
                      "TCP:127.0.0.1:27015"], name="reverse-proxy",
                     ready_fn=listening(23333)).start()
        harness.Proc(["socat", "UNIX-LISTEN:%s,fork" % path, "TCP:127.0.0.1:23333"],
                     name="container-hop", ready_socket=path).start()
        ok = 0
        first_failure = None
        for i in range(sessions):
            if list_devices(path):
                ok += 1
            elif first_failure is None:
                first_failure = i + 1
                break
        result = {"mode": mode, "attempted": i + 1, "ok": ok, "first_failure": first_failure}
    elif mode in ("tunnel-wine", "gate-wine"):
        result = run_wine(path, sessions, gated=mode == "gate-wine")
    else:
        helper = harness.Proc([os.path.join(harness.BUILD, "muxshim-host"), "--listen",
                               "127.0.0.1:27016", "--upstream", "tcp:127.0.0.1:27015",
                               "--log-level", "warn"], name="muxshim-host",
                              ready_fn=listening(27016)).start()
        harness.Shim(path, "tunnel:127.0.0.1:27016", log_level="warn").start()
        # Order-of-magnitude generous: 600 s is 10x the minute the whole
        # chain needed at its slowest seen rate (~330 sessions/s, when the
        # stand-in was socat, forking per session, on a busy 2-core machine).
        r = harness.muxconn("--list-loop", sessions, socket=path, timeout=600, check=False)
        result = {"mode": mode, "attempted": sessions, "ok": r.get("ops_ok", 0),
                  "failed": r.get("ops_failed", 0), "unfinished": r.get("ops_unfinished"),
                  "sessions_per_s": r.get("sessions_per_s"),
                  "muxconn": {k: v for k, v in r.items() if not k.startswith("_")},
                  "helper_alive": helper.alive()}
    result["time_wait"] = time_wait_by_port()
    result["port_range"] = open("/proc/sys/net/ipv4/ip_local_port_range").read().split()
    result["tw_reuse"] = open("/proc/sys/net/ipv4/tcp_tw_reuse").read().strip()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    try:
        main(sys.argv[1], int(sys.argv[2]))
    finally:
        if sys.argv[1] in ("tunnel-wine", "gate-wine"):
            subprocess.run(["wineserver", "-k"], env=dict(os.environ, **WINE_ENV), timeout=30)
        harness.cleanup_all()
