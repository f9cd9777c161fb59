"""Finding the noisy client (the incident's real fault): one process opening
5 usbmuxd sessions per operation at a high rate, another at a normal rate.
`muxshim stats --json` must name the right pid and command with rates within
20 % and the right message mix, and only the noisy one gets the warning."""
import json
import os
import select
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tunnel_util import Helper, harness  # noqa: E402

SHIM = os.environ.get("MUXSHIM_BIN", os.path.join(harness.BUILD, "muxshim"))

# A client that paces usbmuxd sessions. argv: socket rate_ops ops_seconds mode
#   plist5: each operation = 4 ListDevices + 1 ReadBUID (plist, version 1)
#   binary: each operation = 1 binary (version 0) Connect to a missing device
CLIENT = r'''
import select, socket, struct, sys, time
path, rate, mode = sys.argv[1], float(sys.argv[2]), sys.argv[3]
def plist(t):
    b = ('<?xml version="1.0" encoding="UTF-8"?>\n<plist version="1.0"><dict>'
         '<key>MessageType</key><string>%s</string></dict></plist>' % t).encode()
    return struct.pack("<IIII", 16 + len(b), 1, 8, 1) + b
def session(msg):
    s = socket.socket(socket.AF_UNIX); s.settimeout(60); s.connect(path); s.sendall(msg)
    hdr = b""
    while len(hdr) < 16:
        c = s.recv(16 - len(hdr))
        if not c: break
        hdr += c
    if len(hdr) == 16:
        left = struct.unpack("<I", hdr[:4])[0] - 16
        while left > 0:
            c = s.recv(left)
            if not c: break
            left -= len(c)
    s.close()
ops = [plist("ListDevices")] * 4 + [plist("ReadBUID")] if mode == "plist5" else \
      [struct.pack("<IIII", 24, 0, 2, 1) + struct.pack("<IHH", 4242, socket.htons(62078), 0)]
print("started", flush=True)
t0 = time.monotonic(); n = 0
while True:  # until the test closes our stdin
    for m in ops: session(m)
    n += 1
    delay = max(0.0, t0 + n / rate - time.monotonic())
    if select.select([sys.stdin], [], [], delay)[0]: break
print(n, flush=True)
'''


class NoisyClient(unittest.TestCase):
    def tearDown(self):
        harness.cleanup_all()

    def start_client(self, d, name, path, rate, mode):
        """A client paced at `rate` operations/s until its stdin is closed;
        returns (Popen, the time it started its first session)."""
        exe = os.path.join(d, name)
        os.symlink(os.path.realpath(sys.executable), exe)  # comm = name
        script = os.path.join(d, "client.py")
        with open(script, "w") as f:
            f.write(CLIENT)
        p = subprocess.Popen([exe, script, path, str(rate), mode], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Generous bound for a Python start-up on a busy machine.
        if not select.select([p.stdout], [], [], 60)[0] or p.stdout.readline() != "started\n":
            p.kill()
            self.fail("client %s did not start: %s" % (name, p.communicate()[1]))
        return p, time.monotonic()

    def stats(self, path):
        p = subprocess.run([SHIM, "stats", "--json", "--listen", path], capture_output=True,
                           text=True, timeout=10)
        self.assertEqual(p.returncode, 0, p.stderr)
        return json.loads(p.stdout)

    def run_pattern(self, path, d, shim, passthrough):
        # noisy: 2 operations/s x 5 sessions = 10 sessions/s; normal: 1 session/s
        clients = []
        try:
            noisy, t_noisy = self.start_client(d, "noisyclient", path, 2, "plist5")
            clients.append(noisy)
            normal, t_normal = self.start_client(d, "calmclient", path, 1, "binary")
            clients.append(normal)
            # The shim's rate window is 10 s: look once both clients have run
            # for longer (the duration under test, not a wait for an event).
            # They run on until told to stop, however late this look comes.
            time.sleep(max(0.0, max(t_noisy, t_normal) + 11.5 - time.monotonic()))
            st = self.stats(path)
        finally:
            for p in clients:
                out, err = p.communicate(input="", timeout=60)   # EOF on stdin: stop
                self.assertEqual(p.returncode, 0, err)
        procs = {p["pid"]: p for p in st["processes"]}
        self.assertIn(noisy.pid, procs, st)
        self.assertIn(normal.pid, procs, st)
        n, c = procs[noisy.pid], procs[normal.pid]
        print("\nnoisy: %s\ncalm:  %s" % (json.dumps(n), json.dumps(c)))
        self.assertEqual(n["comm"], "noisyclient")
        self.assertEqual(c["comm"], "calmclient")
        self.assertTrue(n["comm_visible"])
        self.assertAlmostEqual(n["rate_per_s"], 10.0, delta=2.0)
        self.assertAlmostEqual(c["rate_per_s"], 1.0, delta=0.2)
        # message mix: 4 ListDevices to 1 ReadBUID; the calm one: binary Connects
        self.assertEqual(n["requests"]["ListDevices"], 4 * n["requests"]["ReadBUID"])
        self.assertEqual(n["requests"]["ListDevices"] + n["requests"]["ReadBUID"], n["sessions"])
        self.assertEqual(c["requests"]["Connect"], c["sessions"])
        self.assertGreaterEqual(st["versions"]["binary"], c["sessions"])
        self.assertTrue(n["warned"])
        self.assertFalse(c["warned"])
        log = shim.stderr_text()
        self.assertIn("busy client: pid %d (noisyclient)" % noisy.pid, log)
        self.assertNotIn("pid %d (calmclient)" % normal.pid, log)
        if passthrough:
            # Every session went to usbmuxd: the Windows arithmetic counts them.
            self.assertEqual(n["upstream_sessions"], n["sessions"])
            self.assertAlmostEqual(n["upstream_rate_per_s"], n["rate_per_s"], delta=0.5)
            self.assertIn("of them reached the host. Over per-session TCP", log)
            self.assertIn("ports in TIME_WAIT", log)
        else:
            # The broker answered them all (usbmuxd has no device here, so
            # even the Connects are refused as for an unknown device): the
            # warning still names the client, and says it costs no port.
            self.assertEqual((n["upstream_sessions"], c["upstream_sessions"]), (0, 0))
            self.assertIn("none of them reached the host (answered by the broker)", log)
            self.assertNotIn("ports in TIME_WAIT", log)

    def test_seed_pattern_unix_upstream(self):
        mux = harness.PrivateUsbmuxd().start()
        d = harness.tempdir("stats")
        path = os.path.join(d, "shim.sock")
        shim = harness.Shim(path, mux.socket, "--warn-rate", 5, "--passthrough",
                            log_level="info").start()
        self.run_pattern(path, d, shim, passthrough=True)

    def test_seed_pattern_through_tunnel(self):
        mux = harness.PrivateUsbmuxd().start()
        helper = Helper("unix:" + mux.socket).start()
        d = harness.tempdir("stats-tunnel")
        path = os.path.join(d, "shim.sock")
        shim = harness.Shim(path, helper.tunnel, "--warn-rate", 5, "--broker",
                            log_level="info").start()
        self.run_pattern(path, d, shim, passthrough=False)
        st = self.stats(path)
        self.assertTrue(st["tunnel"]["up"])
        self.assertEqual(st["tunnel"]["connects"], 1)


class Interfaces(unittest.TestCase):
    def tearDown(self):
        harness.cleanup_all()

    def test_table_prometheus_and_summary(self):
        mux = harness.PrivateUsbmuxd().start()
        d = harness.tempdir("stats-if")
        path = os.path.join(d, "shim.sock")
        port = harness.free_tcp_port()
        shim = harness.Shim(path, mux.socket, "--metrics", "127.0.0.1:%d" % port,
                            "--stats-interval", 1, log_level="info").start()
        rc, out, err = harness.run_client(["idevice_id", "-l"], path)
        self.assertEqual(rc, 0, err)
        p = subprocess.run([SHIM, "stats", "--listen", path], capture_output=True, text=True,
                           timeout=10)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("idevice_id", p.stdout)
        self.assertRegex(p.stdout, r"PID\s+UID\s+COMMAND")
        import urllib.request
        body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5).read()
        self.assertIn(b'muxshim_requests_total{type="ListDevices"} ', body)
        self.assertIn(b'comm="idevice_id"', body)
        harness.wait_for(lambda: "stats: " in shim.stderr_text(), 5, what="the periodic summary")
        # a bad request on the control socket gets an error line, the daemon lives on
        import socket
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(path + ".ctl")
        s.sendall(b"bogus\n")
        self.assertIn(b"error", s.recv(200))
        s.close()
        self.assertTrue(shim.alive())
        p = subprocess.run([SHIM, "stats", "--control", os.path.join(d, "nothing")],
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(p.returncode, 1)
        self.assertIn("cannot reach the daemon", p.stderr)

    def test_shutdown_with_control_and_metrics_clients_connected(self):
        """Connections open at SIGTERM are closed and freed: the valgrind pass
        found each one left behind (\"possibly lost\", 4 KiB)."""
        import socket
        mux = harness.PrivateUsbmuxd().start()
        path = os.path.join(harness.tempdir("stats-exit"), "shim.sock")
        port = harness.free_tcp_port()
        shim = harness.Shim(path, mux.socket, "--metrics", "127.0.0.1:%d" % port).start()
        fds0 = harness.settled_fd_count(shim)
        held = []
        for _ in range(3):
            c = socket.socket(socket.AF_UNIX)
            c.connect(path + ".ctl")
            c.sendall(b"js")                      # half a request, then silence
            held.append(c)
        held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        held[-1].sendall(b"GET /metrics HTTP/1.0\r\n")
        # The shim has taken them all in before it is told to stop.
        harness.wait_for(lambda: shim.fd_count() == fds0 + 4, 10,
                         what="the held connections accepted")
        self.assertEqual(shim.stop(), 0)   # under valgrind: a clean report, or it raises
        for c in held:
            c.close()


if __name__ == "__main__":
    unittest.main()
