"""The tunnel: muxshim --upstream tunnel: -> muxshim-host -> usbmuxd.

Real usbmuxd and real clients where they exist; the fake device for Connect
data paths. Every daemon runs from build/ (MUXSHIM_BIN / MUXSHIM_HOST_BIN
select other builds, e.g. the sanitizer ones)."""
import errno
import json
import os
import plistlib
import random
import re
import shlex
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tunnel_util import (CountingService, Helper, connect_device, harness, helper_binary,  # noqa: E402
                         recv_exact, usbmuxd_request)

MiB = 1 << 20


def time_wait_toward(port):
    out = subprocess.run(["ss", "-Htan", "state", "time-wait"], capture_output=True,
                         text=True).stdout
    return sum(1 for l in out.splitlines() if l.split() and
               (l.split()[-1].endswith(":%d" % port) or l.split()[-2].endswith(":%d" % port)))


class RealUsbmuxdThroughTunnel(unittest.TestCase):
    """Identical answers to direct, with the helper's upstream as the real
    UNIX socket and as TCP (tcprelay standing in for Apple's 27015 listener)."""

    @classmethod
    def setUpClass(cls):
        cls.mux = harness.PrivateUsbmuxd().start()
        cls.tcp_port = harness.TcpRelay(cls.mux.socket, name="usbmuxd-tcp").start().port
        d = harness.tempdir("tunnel-real")
        cls.paths = {"direct": cls.mux.socket}
        for kind, up in (("unix", "unix:" + cls.mux.socket),
                         ("tcp", "tcp:127.0.0.1:%d" % cls.tcp_port)):
            h = Helper(up).start()
            path = os.path.join(d, kind + ".sock")
            harness.Shim(path, h.tunnel).start()
            cls.paths[kind] = path

    @classmethod
    def tearDownClass(cls):
        harness.cleanup_all()

    def test_idevice_id_identical(self):
        results = {k: harness.run_client(["idevice_id", "-l"], p) for k, p in self.paths.items()}
        self.assertEqual(results["direct"][0], 0, results["direct"])
        for k in ("unix", "tcp"):
            self.assertEqual(results[k][:2], results["direct"][:2], k)

    def test_lmclient_identical(self):
        lm = harness.tool("lmclient")
        results = {k: harness.run_client([lm, "all"], p) for k, p in self.paths.items()}
        self.assertEqual(results["direct"][0], 0, results["direct"])
        self.assertIn("BUID", results["direct"][1].upper())
        for k in ("unix", "tcp"):
            self.assertEqual(results[k][:2], results["direct"][:2], k)

    def test_raw_requests_identical(self):
        requests = [
            {"MessageType": "ListDevices"},
            {"MessageType": "ReadBUID"},
            {"MessageType": "ListListeners"},
            {"MessageType": "ReadPairRecord", "PairRecordID": "0000-no-such-device"},
            {"MessageType": "Connect", "DeviceID": 4242, "PortNumber": socket.htons(62078)},
            {"MessageType": "NoSuchMessage"},
        ]
        for req in requests:
            direct = usbmuxd_request(self.paths["direct"], req)
            for k in ("unix", "tcp"):
                self.assertEqual(usbmuxd_request(self.paths[k], req), direct, (k, req))

    def test_parallel_bursts_meet_usbmuxd_backlog(self):
        """usbmuxd listens with a backlog of 5; 8 parallel clients overflow it
        and the helper must retry (EAGAIN), not refuse the sessions."""
        r = harness.muxconn("--list-loop", 3000, "--parallel", 8, socket=self.paths["unix"],
                            timeout=300)
        self.assertEqual(r["list_sessions"], 3000)
        self.assertEqual(r["failed"], 0)

    def test_no_time_wait_on_tcp_upstream(self):
        before = time_wait_toward(self.tcp_port)
        r = harness.muxconn("--list-loop", 500, socket=self.paths["tcp"])
        self.assertEqual(r["list_sessions"], 500)
        after = time_wait_toward(self.tcp_port)
        print("\nTIME_WAIT toward the TCP upstream: before %d, after 500 sessions %d"
              % (before, after))
        self.assertEqual(after, 0)


class SeveralShimsAndLegacyTcp(unittest.TestCase):
    def tearDown(self):
        harness.cleanup_all()

    def test_one_helper_serves_several_containers(self):
        mux = harness.PrivateUsbmuxd().start()
        helper = Helper("unix:" + mux.socket).start()
        d = harness.tempdir("tunnel-multi")
        paths = [os.path.join(d, "shim%d.sock" % i) for i in range(3)]
        for p in paths:
            harness.Shim(p, helper.tunnel).start()
        procs = [subprocess.Popen([harness.tool("muxconn"), "--socket", p, "--list-loop", "300",
                                   "--timeout", "110"],   # just under the 120 s waited below
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for p in paths]
        for p in procs:
            out, err = p.communicate(timeout=120)
            self.assertEqual(p.returncode, 0, err)
        log = helper.stderr_text()
        for i in (1, 2, 3):
            self.assertIn("tunnel #%d: up" % i, log)
        self.assertNotIn("tunnel #4", log)  # one tunnel per shim, not per session

    def test_helper_per_tunnel_counters(self):
        mux = harness.PrivateUsbmuxd().start()
        helper = Helper("unix:" + mux.socket, "--stats-interval", 1, log_level="info").start()
        path = os.path.join(harness.tempdir("tunnel-counters"), "shim.sock")
        harness.Shim(path, helper.tunnel).start()
        harness.muxconn("--list-loop", 50, socket=path)
        # A line per second: wait for one written after the last stream
        # closed (a slow helper, under valgrind, may print one before).
        final = re.compile(r"tunnel #1: 0 streams open, 5\d opened, 0 refused, 5\d upstream "
                           r"connects, 0 upstream failures")
        harness.wait_for(lambda: final.search(helper.stderr_text()), 30,
                         what="a counters line with every stream closed")

    def test_legacy_tcp_upstream(self):
        mux = harness.PrivateUsbmuxd().start()
        port = harness.TcpRelay(mux.socket, name="usbmuxd-tcp").start().port
        path = os.path.join(harness.tempdir("legacy"), "shim.sock")
        harness.Shim(path, "tcp:127.0.0.1:%d" % port).start()
        rc, out, err = harness.run_client(["idevice_id", "-l"], path)
        self.assertEqual(rc, 0, err)
        self.assertEqual(usbmuxd_request(path, {"MessageType": "ReadBUID"}),
                         usbmuxd_request(mux.socket, {"MessageType": "ReadBUID"}))
        # and it fails cleanly when nothing listens there
        path2 = os.path.join(harness.tempdir("legacy2"), "shim.sock")
        shim2 = harness.Shim(path2, "tcp:127.0.0.1:%d" % harness.free_tcp_port()).start()
        rc, out, err = harness.run_client(["idevice_id", "-l"], path2)
        self.assertNotEqual(rc, 0)
        harness.wait_for(lambda: "Connection refused" in shim2.stderr_text(), 5,
                         what="the refused log line")


class FakeDevice(unittest.TestCase):
    """Connect data paths through the tunnel, against the fake device."""

    @classmethod
    def setUpClass(cls):
        d = harness.tempdir("tunnel-dev")
        cls.dev = harness.DevSvc().start()
        cls.fd = harness.FakeDev(os.path.join(d, "fd.sock")).start()
        cls.helper = Helper("unix:" + cls.fd.socket).start()
        cls.shim_path = os.path.join(d, "shim.sock")
        cls.shim = harness.Shim(cls.shim_path, cls.helper.tunnel, log_level="info").start()
        # The same chain with a TCP upstream (abortive close policy).
        cls.tcp_port = harness.TcpRelay(cls.fd.socket, name="fd-tcp").start().port
        cls.helper_tcp = Helper("tcp:127.0.0.1:%d" % cls.tcp_port).start()
        cls.shim_tcp_path = os.path.join(d, "shim-tcp.sock")
        harness.Shim(cls.shim_tcp_path, cls.helper_tcp.tunnel, log_level="info").start()

    @classmethod
    def tearDownClass(cls):
        harness.cleanup_all()

    def mc(self, *args, **kw):
        return harness.muxconn("--port", self.dev.port, *args, socket=self.shim_path, **kw)

    def test_four_concurrent_64mib_both_ways(self):
        r = self.mc("--parallel", 4, "--both", 64 * MiB, timeout=300)
        self.assertEqual(r["sessions"], 4)
        self.assertEqual(r["failed"], 0)

    def test_half_close(self):
        # SNK: the client sends, shuts down its write side, and must still
        # receive the device's verdict over the other direction.
        r = self.mc("--send", 8 * MiB)
        self.assertEqual(r["verdict"], "OK %d" % (8 * MiB))
        r = self.mc("--recv", 8 * MiB)
        self.assertTrue(r["ok"])

    def test_500_concurrent_streams(self):
        r = self.mc("--parallel", 500, "--echo", 4096, timeout=300)
        self.assertEqual(r["sessions"], 500)
        self.assertEqual(r["failed"], 0)

    def test_stalled_stream_does_not_block_others(self):
        """Head-of-line: a client that stops reading while its device floods
        must not delay another stream, nor grow either daemon's memory."""
        rss0 = (self.shim.rss_kib(), self.helper.rss_kib())
        stall = harness.start_stall(self.shim_path, self.dev.port)
        try:
            r = self.mc("--rtt", 300, "--size", 1024)
            rss1 = (self.shim.rss_kib(), self.helper.rss_kib())
            # The flood stays stalled until end_stall(): had it blocked the
            # tunnel, the round trips would not have finished at all.
            self.assertIsNone(stall.poll(), "the stalled client ended by itself")
        finally:
            rc, res, err = harness.end_stall(stall)
        print("\nrtt beside a stalled flood: p50 %.0f us, p99 %.0f us; RSS shim %d->%d KiB, "
              "helper %d->%d KiB" % (r["p50_us"], r["p99_us"], rss0[0], rss1[0], rss0[1],
                                    rss1[1]))
        self.assertEqual(rc, 0, err)
        self.assertGreater(res["pending_max"], 0, res)   # it was flooded throughout
        # One stalled stream may hold at most its window (256 KiB) per side.
        harness.assert_rss_bound(self, rss1[0] - rss0[0], 8 * 1024, "shim RSS growth")
        harness.assert_rss_bound(self, rss1[1] - rss0[1], 8 * 1024, "helper RSS growth")

    def test_tcp_upstream_loses_no_client_bytes(self):
        """TCP upstreams are closed with a reset (no TIME_WAIT). Prove that
        no byte a client sent is lost: clients write and close at once."""
        svc = CountingService()
        try:
            rnd = random.Random(7)
            payloads = [bytes(rnd.getrandbits(8) for _ in range(n))
                        for n in (1, 100, 65536, 300000)] * 10
            for p in payloads:
                s = connect_device(self.shim_tcp_path, svc.port)
                s.sendall(p)
                s.close()
            results = svc.wait_results(len(payloads))
        finally:
            svc.close()
        got = sorted(len(d) for d, _ in results)
        self.assertEqual(got, sorted(len(p) for p in payloads))
        self.assertEqual(sorted(d for d, _ in results), sorted(payloads))
        # These clients close without waiting for an answer: the helper
        # ends such sessions with a FIN, not a reset (link.c,
        # stream_local_fin), so a TIME_WAIT per session is allowed here, and
        # only as many as the helper counts. Sessions that were answered
        # end with a reset: test_no_time_wait_on_tcp_upstream.
        tw = time_wait_toward(self.tcp_port)
        self.helper_tcp.send_signal(signal.SIGUSR1)  # the per-tunnel counters
        harness.wait_for(lambda: "ended with a FIN" in self.helper_tcp.stderr_text(), 30,
                         what="the helper's counters")
        fins = max(int(n) for n in re.findall(r"(\d+) TCP upstreams ended with a FIN",
                                               self.helper_tcp.stderr_text()))
        self.assertGreaterEqual(fins, len(payloads))
        self.assertLessEqual(tw, fins)

    def test_tcp_upstream_data_paths(self):
        r = harness.muxconn("--port", self.dev.port, "--recv", 16 * MiB,
                            socket=self.shim_tcp_path)
        self.assertTrue(r["ok"])
        r = harness.muxconn("--port", self.dev.port, "--parallel", 50, "--rtt", 20,
                            socket=self.shim_tcp_path)
        self.assertEqual(r["failed"], 0)


class SlowTcpUpstream(unittest.TestCase):
    """A TCP upstream (Windows' usbmuxd) that has not read what it was sent
    when the client closes: its kernel has acknowledged every byte, so a
    reset would throw them away. The helper ends such a session with a FIN."""

    def tearDown(self):
        harness.cleanup_all()

    def test_unread_bytes_survive_the_close(self):
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(8)
        port = lsock.getsockname()[1]
        go = threading.Event()
        got = {}

        def server():
            while True:
                conn, _ = lsock.accept()
                try:
                    first = conn.recv(1, socket.MSG_PEEK)
                except ConnectionResetError:
                    first = b""
                if first:          # the client's session (the shim's
                    break          # readiness probe sends nothing)
                conn.close()
            go.wait(60)
            data = b""
            try:
                while True:
                    b = conn.recv(65536)
                    if not b:
                        break
                    data += b
            except ConnectionResetError:
                got["reset"] = True
            got["data"] = data
            conn.close()

        t = threading.Thread(target=server, daemon=True)
        t.start()
        helper = Helper("tcp:127.0.0.1:%d" % port).start()
        path = os.path.join(harness.tempdir("tunnel-slow-tcp"), "shim.sock")
        harness.Shim(path, helper.tunnel).start()
        # One valid request of about 60 KiB (a MessageType usbmuxd does not
        # know): the shim forwards it, the upstream's kernel takes it all,
        # the upstream application reads nothing until the client is gone.
        body = plistlib.dumps({"MessageType": "Padding", "Pad": "x" * 60000})
        msg = struct.pack("<IIII", 16 + len(body), 1, 8, 1) + body
        with socket.socket(socket.AF_UNIX) as c:
            c.connect(path)
            c.sendall(msg)
        harness.wait_for(lambda: "ending it with a FIN" in helper.stderr_text(), 30,
                         what="the helper ending the upstream with a FIN, not a reset")
        go.set()
        t.join(60)
        self.assertFalse(got.get("reset"), "the upstream got a reset with bytes unread")
        self.assertEqual(got.get("data"), msg)
        lsock.close()


class Restarts(unittest.TestCase):
    def tearDown(self):
        harness.cleanup_all()

    def wait_session_ok(self, path, port, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            r = harness.muxconn("--port", port, "--echo", 1024, socket=path, check=False,
                                timeout=20)
            if r.get("ok"):
                return time.monotonic()
            if time.monotonic() > deadline:
                self.fail("no session succeeded within %d s: %r" % (timeout, r))
            time.sleep(0.2)

    def test_helper_killed_and_restarted(self):
        d = harness.tempdir("tunnel-restart")
        dev = harness.DevSvc().start()
        fd = harness.FakeDev(os.path.join(d, "fd.sock")).start()
        helper = Helper("unix:" + fd.socket).start()
        path = os.path.join(d, "shim.sock")
        shim = harness.Shim(path, helper.tunnel).start()
        s = connect_device(path, dev.port, timeout=15)
        s.sendall(b"ECHO\nping")
        self.assertEqual(recv_exact(s, 4), b"ping")
        helper.kill()
        t0 = time.monotonic()
        self.assertEqual(s.recv(100), b"", "open session must end with EOF")
        self.assertLess(time.monotonic() - t0, 10)
        s.close()
        helper2 = Helper("unix:" + fd.socket, port=helper.port).start()
        self.wait_session_ok(path, dev.port)
        self.assertTrue(shim.alive())
        self.assertIn("reconnecting", shim.stderr_text())
        helper2.stop()

    def test_usbmuxd_restarted_behind_helper(self):
        mux = harness.PrivateUsbmuxd().start()
        helper = Helper("unix:" + mux.socket).start()
        path = os.path.join(harness.tempdir("tunnel-mux-restart"), "shim.sock")
        harness.Shim(path, helper.tunnel).start()
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(15)
        s.connect(path)
        from tunnel_util import plist_msg, recv_msg
        s.sendall(plist_msg({"MessageType": "Listen"}))
        self.assertEqual(recv_msg(s)[3].get("Number"), 0)
        mux.stop()
        self.assertEqual(s.recv(100), b"", "the Listen session must end with EOF")
        s.close()
        mux.start()
        deadline = time.monotonic() + 60   # generous: the loop ends as soon as it holds
        while True:
            rc, out, err = harness.run_client(["idevice_id", "-l"], path)
            if rc == 0:
                break
            self.assertLess(time.monotonic(), deadline, err)
            time.sleep(0.2)
        self.assertTrue(helper.alive())


class BadInputOnTunnelPort(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.mux = harness.PrivateUsbmuxd().start()
        cls.helper = Helper("unix:" + cls.mux.socket).start()
        cls.path = os.path.join(harness.tempdir("tunnel-bad"), "shim.sock")
        harness.Shim(cls.path, cls.helper.tunnel).start()

    @classmethod
    def tearDownClass(cls):
        harness.cleanup_all()

    @staticmethod
    def hello(version=2, role=1, flags=0, max_frame=16384, window=262144, streams=64):
        return (b"MXTN" + bytes([version, role]) + struct.pack(">HIII", flags, max_frame,
                                                                 window, streams) + bytes(16))

    @staticmethod
    def frame(t, flags, sid, payload=b"", length=None):
        return struct.pack(">BBHII", t, flags, 0, sid,
                           len(payload) if length is None else length) + payload

    def attack(self, data, expect_log, read_hello=True, helper=None):
        helper = helper or self.helper
        before = len(helper.stderr_text())
        s = socket.create_connection(("127.0.0.1", helper.port), timeout=10)
        try:
            if read_hello:
                recv_exact(s, 36)
            try:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)  # then nothing more: the helper decides
            except OSError as e:
                # It may close before reading everything: the write or the
                # shutdown then finds the connection reset or already gone.
                if e.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                    raise
            # The helper must close the connection (EOF or reset), not hang.
            try:
                while s.recv(65536):
                    pass
            except ConnectionResetError:
                pass
        finally:
            s.close()
        harness.wait_for(lambda: expect_log in helper.stderr_text()[before:], 5,
                         what="log line %r" % expect_log)
        # Everyone else is still served.
        self.assertTrue(helper.alive())
        rc, out, err = harness.run_client(["idevice_id", "-l"], self.path)
        self.assertEqual(rc, 0, err)

    def test_http_request(self):
        self.attack(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not a muxshim tunnel peer")

    def test_random_bytes(self):
        self.attack(bytes(random.Random(3).getrandbits(8) for _ in range(4096)),
                    "not a muxshim tunnel peer")

    def test_other_version(self):
        # A version-1 peer (before encryption) is told to upgrade.
        self.attack(self.hello(version=1), "peer speaks tunnel version 1, this side speaks 2: "
                                           "upgrade the peer")
        self.attack(self.hello(version=3), "upgrade this side")

    def test_wrong_role(self):
        self.attack(self.hello(role=2), "wrong role")

    def test_oversized_frame(self):
        self.attack(self.hello() + self.frame(1, 0, 1) + self.frame(0, 0, 1, length=1 << 30),
                    "larger than the advertised maximum")

    def test_unknown_type(self):
        self.attack(self.hello() + self.frame(9, 0, 0), "unknown frame type")

    def test_window_violation(self):
        # An upstream that accepts and never reads: the helper cannot pass
        # the bytes on, so it grants no credit, and 4 MiB overruns the
        # 256 KiB window whatever the socket buffers hold.
        sink_path = os.path.join(harness.tempdir("sink"), "sink.sock")
        sink = socket.socket(socket.AF_UNIX)
        sink.bind(sink_path)
        sink.listen(8)
        try:
            h = Helper("unix:" + sink_path).start()
            chunk = self.frame(0, 0, 1, b"x" * 16384)
            self.attack(self.hello() + self.frame(1, 0, 1) + chunk * 256, "receive window",
                        helper=h)
        finally:
            sink.close()

    def test_truncated_frame_then_close(self):
        self.attack(self.hello() + self.frame(1, 0, 1) + self.frame(0, 0, 1, length=100)[:7],
                    "closed by peer")

    def test_data_for_never_opened_stream(self):
        self.attack(self.hello() + self.frame(0, 0, 7, b"hi"), "never opened")


class AuthAndExposure(unittest.TestCase):
    def tearDown(self):
        harness.cleanup_all()

    def setUp(self):
        self.d = harness.tempdir("tunnel-auth")
        self.mux = harness.PrivateUsbmuxd().start()
        for name in ("a", "b"):
            harness.write_token(os.path.join(self.d, name))

    def test_matching_tokens(self):
        h = Helper("unix:" + self.mux.socket, "--token-file", os.path.join(self.d, "a")).start()
        path = os.path.join(self.d, "shim.sock")
        harness.Shim(path, h.tunnel, "--token-file", os.path.join(self.d, "a")).start()
        rc, out, err = harness.run_client(["idevice_id", "-l"], path)
        self.assertEqual(rc, 0, err)

    def mismatch(self, helper_args, shim_args, helper_says, shim_says):
        h = Helper("unix:" + self.mux.socket, *helper_args).start()
        path = os.path.join(self.d, "shim.sock")
        shim = harness.Shim(path, h.tunnel, "--tunnel-wait", 500, *shim_args).start()
        t0 = time.monotonic()
        rc, out, err = harness.run_client(["idevice_id", "-l"], path)
        self.assertNotEqual(rc, 0, "a refused tunnel must not serve clients")
        self.assertLess(time.monotonic() - t0, 10)
        harness.wait_for(lambda: helper_says in h.stderr_text(), 5, what=helper_says)
        harness.wait_for(lambda: shim_says in shim.stderr_text(), 5, what=shim_says)

    def test_token_mismatch(self):
        self.mismatch(["--token-file", os.path.join(self.d, "a")],
                      ["--token-file", os.path.join(self.d, "b")],
                      "token mismatch", "token mismatch")

    def test_helper_requires_token(self):
        self.mismatch(["--token-file", os.path.join(self.d, "a")], [],
                      "peer has no token", "peer requires a token")

    def test_token_never_on_the_wire(self):
        """Capture the shim's side of the handshake: the token is not in it."""
        with open(os.path.join(self.d, "a"), "rb") as f:
            secret = f.read().strip()
        lst = socket.socket()
        lst.bind(("127.0.0.1", 0))
        lst.listen(1)
        port = lst.getsockname()[1]
        path = os.path.join(self.d, "shim.sock")
        harness.Shim(path, "tunnel:127.0.0.1:%d" % port, "--token-file",
                     os.path.join(self.d, "a")).start()
        c, _ = lst.accept()
        c.settimeout(5)
        hello = recv_exact(c, 36)
        self.assertEqual(hello[:6], b"MXTN\x02\x01")
        self.assertEqual(hello[7] & 1, 1, "the hello must announce authentication")
        # Answer as a helper with a token, then read the shim's proof.
        c.sendall(b"MXTN\x02\x02" + struct.pack(">HIII", 1, 16384, 262144, 64) + os.urandom(16))
        auth = recv_exact(c, 12 + 32)
        self.assertEqual(auth[0], 6)
        self.assertNotIn(secret, hello + auth)
        c.close()
        lst.close()

    def test_non_loopback_needs_token_or_force(self):
        port = harness.free_tcp_port()
        p = subprocess.run([os.path.join(harness.BUILD, "muxshim-host"), "--listen",
                            "0.0.0.0:%d" % port, "--upstream", "unix:" + self.mux.socket],
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(p.returncode, 2)
        self.assertIn("without a token", p.stderr)
        h = harness.Proc([os.path.join(harness.BUILD, "muxshim-host"), "--listen",
                          "0.0.0.0:%d" % port, "--upstream", "unix:" + self.mux.socket,
                          "--allow-remote"], ready_fn=lambda: harness.tcp_listening(port)).start()
        # Logged just after listen(): the port may be seen listening first.
        harness.wait_for(lambda: "WITHOUT a token" in h.stderr_text(), 30,
                         what="the no-token warning")


class Keepalive(unittest.TestCase):
    def tearDown(self):
        harness.cleanup_all()

    def setUp(self):
        d = harness.tempdir("tunnel-ka")
        self.dev = harness.DevSvc().start()
        self.fd = harness.FakeDev(os.path.join(d, "fd.sock")).start()
        self.helper = Helper("unix:" + self.fd.socket, "--keepalive", 200).start()
        self.path = os.path.join(d, "shim.sock")
        self.shim = harness.Shim(self.path, self.helper.tunnel, "--keepalive", 200).start()

    def test_no_false_alarm_under_load(self):
        """A 200 ms keepalive, and bulk traffic that keeps the tunnel's send
        queue full for seconds: the tunnel must stay up."""
        r = harness.muxconn("--port", self.dev.port, "--parallel", 4, "--both", 128 * MiB,
                            socket=self.path, timeout=300)
        self.assertEqual(r["failed"], 0)
        time.sleep(1)  # idle: pings now flow and are answered
        r = harness.muxconn("--port", self.dev.port, "--echo", 1024, socket=self.path)
        self.assertTrue(r["ok"])
        self.assertNotIn("lost", self.shim.stderr_text())
        self.assertNotIn("keepalive timeout", self.helper.stderr_text())

    def test_silent_helper_is_detected(self):
        s = connect_device(self.path, self.dev.port, timeout=60)
        s.sendall(b"ECHO\nping")
        self.assertEqual(recv_exact(s, 4), b"ping")
        self.helper.send_signal(signal.SIGSTOP)  # alive, connected, silent
        try:
            t0 = time.monotonic()
            self.assertEqual(s.recv(100), b"", "the open session must end with EOF")
            waited = time.monotonic() - t0
        finally:
            self.helper.send_signal(signal.SIGCONT)
        s.close()
        print("\nsilent helper detected after %.2f s (keepalive 200 ms)" % waited)
        # 600 ms by the book; undetected would be never (the recv's 60 s)
        self.assertLess(waited, 30)
        harness.wait_for(lambda: "keepalive timeout" in self.shim.stderr_text(), 5,
                         what="the keepalive log line")


class TunnelDown(unittest.TestCase):
    def tearDown(self):
        harness.cleanup_all()

    def test_client_waits_then_is_closed(self):
        port = harness.free_tcp_port()  # nothing listens there
        path = os.path.join(harness.tempdir("tunnel-down"), "shim.sock")
        shim = harness.Shim(path, "tunnel:127.0.0.1:%d" % port, "--tunnel-wait", 700).start()
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(60)
        t0 = time.monotonic()   # before the connect: a late look cannot shorten the wait
        s.connect(path)
        self.assertEqual(s.recv(10), b"")
        waited = time.monotonic() - t0
        s.close()
        self.assertGreater(waited, 0.5)
        self.assertLess(waited, 30)   # 700 ms by the book; a shim that ignored it: never
        harness.wait_for(lambda: "is down: closed a client after waiting 700 ms"
                         in shim.stderr_text(), 5, what="the tunnel-down log line")


if __name__ == "__main__":
    unittest.main()


def under_silent_dns(cmd, d, name, **kw):
    """cmd (a daemon) in private mount and network namespaces whose
    resolv.conf names a DNS server that takes queries and never answers (a
    UDP socket bound and never read, held by the daemon's own process), with
    glibc's longest timeout: a lookup waits a minute. Its pid is the
    daemon's (each step execs the next)."""
    conf = os.path.join(d, "resolv.conf")
    with open(conf, "w") as f:
        f.write("nameserver 127.0.0.1\noptions timeout:30 attempts:2\n")
    blackhole = ("import os, socket, sys\n"
                 "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                 "s.bind(('127.0.0.1', 53))\n"
                 "os.set_inheritable(s.fileno(), True)\n"
                 "os.execv(sys.argv[1], sys.argv[1:])\n")
    inner = "ip link set lo up && mount --bind %s /etc/resolv.conf && exec %s -c %s %s" % (
        shlex.quote(conf), shlex.quote(sys.executable), shlex.quote(blackhole),
        " ".join(shlex.quote(str(a)) for a in cmd))
    return harness.Proc(["unshare", "-m", "-n", "--propagation", "private", "sh", "-c", inner],
                        name=name, **kw)


class NameResolution(unittest.TestCase):
    """The upstream's host is a name: resolving it must not stop the loop
    (common/resolver.c, in both daemons)."""

    def tearDown(self):
        harness.cleanup_all()

    def test_slow_dns_does_not_block_the_shim(self):
        # Under a DNS that never answers (under_silent_dns). A shim that
        # resolved on its loop would not answer `muxshim stats` (its control
        # socket is served by the same loop) until then; resolved by its
        # thread, it answers at once, and the log says nothing of the name
        # yet. 30 s tells the two apart on any machine.
        d = harness.tempdir("dns")
        path = os.path.join(d, "shim.sock")
        shim_cmd = [harness.shim_binary(), "--listen", path, "--passthrough",
                    "--upstream", "tunnel:muxshim-dns-test.example:27016", "--log-level", "debug"]
        shim = under_silent_dns(shim_cmd, d, "muxshim-dns", ready_socket=path + ".ctl").start()
        t0 = time.monotonic()
        r = subprocess.run([harness.shim_binary(), "stats", "--json", "--listen", path],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertLess(time.monotonic() - t0, 30.0, "the shim's loop waited for DNS")
        self.assertFalse(json.loads(r.stdout)["tunnel"]["up"])
        self.assertNotIn("resolve the name", shim.stderr_text())
        # A client meanwhile waits for the tunnel (--tunnel-wait) and is
        # closed, as while any tunnel is down: not held by the lookup.
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(60)
            s.connect(path)
            t0 = time.monotonic()
            self.assertEqual(s.recv(10), b"")
            self.assertLess(time.monotonic() - t0, 30.0)

    def test_slow_dns_does_not_block_the_helper(self):
        # The helper's usbmuxd is tcp:NAME, under a DNS that never answers
        # (under_silent_dns). With --tenants its gate subscribes to usbmuxd
        # as it starts, and every stream connects there too. A helper that
        # resolved on its loop would hang in getaddrinfo for the lookup's
        # minute before it even serves --metrics (the same loop); resolved
        # by the resolver's thread, /metrics answers at once. 30 s tells the
        # two apart on any machine.
        d = harness.tempdir("dns-helper")
        harness.write_token(os.path.join(d, "t.key"))
        tenants = os.path.join(d, "tenants")
        with open(tenants, "w") as f:
            f.write("t t.key *\n")
        cmd = [helper_binary(), "--listen", "127.0.0.1:27016",
               "--upstream", "tcp:muxshim-dns-test.example:27015", "--tenants", tenants,
               "--metrics", "127.0.0.1:9464", "--log-level", "debug"]
        helper = under_silent_dns(cmd, d, "muxshim-host-dns", ready_fn=lambda: True).start()
        harness.wait_for(lambda: "listening on 127.0.0.1:27016" in helper.stderr_text(), 30,
                         what="the helper's start")
        # /metrics from inside the helper's network namespace: connect (it
        # is refused until the listener is up), ask, and read the answer,
        # all within 30 s of the start line.
        probe = ("import socket, sys, time\n"
                 "t0 = time.monotonic()\n"
                 "while True:\n"
                 "    try:\n"
                 "        s = socket.create_connection(('127.0.0.1', 9464), timeout=30)\n"
                 "        break\n"
                 "    except ConnectionRefusedError:\n"
                 "        if time.monotonic() - t0 > 30:\n"
                 "            sys.exit('--metrics not listening after 30 s')\n"
                 "        time.sleep(0.05)  # polls the listener's arrival, bounded above\n"
                 "s.settimeout(max(1.0, 30 - (time.monotonic() - t0)))\n"
                 "s.sendall(b'GET /metrics HTTP/1.0\\r\\n\\r\\n')\n"
                 "data = b''\n"
                 "while True:\n"
                 "    b = s.recv(65536)\n"
                 "    if not b:\n"
                 "        break\n"
                 "    data += b\n"
                 "sys.stdout.write(data.decode())\n")
        t0 = time.monotonic()
        r = subprocess.run(["nsenter", "-t", str(helper.pid), "-n", sys.executable, "-c", probe],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr + helper.stderr_text()[-2000:])
        self.assertLess(time.monotonic() - t0, 30.0, "the helper's loop waited for DNS")
        self.assertIn("200 OK", r.stdout.splitlines()[0])
        self.assertIn("muxshim_host_", r.stdout)
        # Nothing came back from DNS meanwhile: the name is still unresolved.
        self.assertTrue(helper.alive())
