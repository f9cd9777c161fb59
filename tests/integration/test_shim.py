"""muxshim over a UNIX upstream (Linux hosts): relay behaviour, lifecycle,
containers, restarts, leaks and bad input, against the real usbmuxd and the
fake device."""
import os
import random
import signal
import socket
import stat
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tunnel_util import connect_device, harness, plist_msg, recv_exact, recv_msg  # noqa: E402

MiB = 1 << 20
SHIM = os.environ.get("MUXSHIM_BIN", os.path.join(harness.BUILD, "muxshim"))
# Under ASan or valgrind RSS says nothing about leaks (harness.assert_rss_bound);
# `make check` asserts memory bounds in its plain pass.
assert_rss_bound = harness.assert_rss_bound


class DataPaths(unittest.TestCase):
    """Connect sessions through the shim to the fake device."""

    @classmethod
    def setUpClass(cls):
        d = harness.tempdir("shim-data")
        cls.dev = harness.DevSvc().start()
        cls.fd = harness.FakeDev(os.path.join(d, "fd.sock")).start()
        cls.paths = {}
        cls.shims = {}
        for name, extra in (("splice", ()), ("copy", ("--no-splice",))):
            path = os.path.join(d, name + ".sock")
            cls.shims[name] = harness.Shim(path, cls.fd.socket, *extra, log_level="info").start()
            cls.paths[name] = path

    @classmethod
    def tearDownClass(cls):
        harness.cleanup_all()

    def mc(self, *args, mode="splice", **kw):
        return harness.muxconn("--port", self.dev.port, *args, socket=self.paths[mode], **kw)

    def test_64mib_each_way_byte_exact(self):
        for mode in ("splice", "copy"):
            with self.subTest(mode=mode):
                r = self.mc("--send", 64 * MiB, mode=mode, timeout=300)
                self.assertEqual(r["verdict"], "OK %d" % (64 * MiB))
                r = self.mc("--recv", 64 * MiB, mode=mode, timeout=300)
                self.assertEqual(r["bytes"], 64 * MiB)
                r = self.mc("--both", 64 * MiB, mode=mode, timeout=300)
                self.assertTrue(r["ok"])

    def test_half_close_keeps_other_direction(self):
        # The client shuts down its write side; the device's verdict must
        # still come back the other way.
        r = self.mc("--send", 1 * MiB)
        self.assertEqual(r["verdict"], "OK %d" % MiB)
        s = connect_device(self.paths["copy"], self.dev.port)
        s.sendall(b"ECHO\nhello")
        s.shutdown(socket.SHUT_WR)
        got = b""
        while True:
            b = s.recv(100)
            if not b:
                break
            got += b
        s.close()
        self.assertEqual(got, b"hello")

    def test_100_concurrent_sessions(self):
        r = self.mc("--parallel", 100, "--both", 1 * MiB, timeout=300)
        self.assertEqual(r["sessions"], 100)
        self.assertEqual(r["failed"], 0)

    def test_client_that_stops_reading(self):
        """Its device keeps sending: the shim must not buffer it, and other
        sessions must not notice."""
        shim = self.shims["copy"]
        rss0 = shim.rss_kib()
        stall = harness.start_stall(self.paths["copy"], self.dev.port)
        try:
            r = self.mc("--rtt", 300, mode="copy")
            r2 = self.mc("--recv", 16 * MiB, mode="copy")
            rss1 = shim.rss_kib()
            # The flood stays stalled until end_stall(): had it blocked the
            # shim, the other sessions would not have finished at all.
            self.assertIsNone(stall.poll(), "the stalled client ended by itself")
        finally:
            rc, res, err = harness.end_stall(stall)
        print("\nbeside a stalled reader: rtt p99 %.0f us, bulk %.0f MB/s, RSS %d -> %d KiB"
              % (r["p99_us"], r2["mbps"], rss0, rss1))
        self.assertEqual(rc, 0, err)
        self.assertGreater(res["pending_max"], 0, res)   # it was flooded throughout
        # At most one 64 KiB chunk per direction is ever held.
        assert_rss_bound(self, rss1 - rss0, 1024)


def bind_dead_socket(path):
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()  # the file stays; nothing listens: a stale socket


class Lifecycle(unittest.TestCase):
    def setUp(self):
        self.d = harness.tempdir("shim-life")
        self.mux = harness.PrivateUsbmuxd().start()
        self.path = os.path.join(self.d, "usbmuxd")

    def tearDown(self):
        harness.cleanup_all()

    def run_shim(self, *args, timeout=10):
        return subprocess.run([SHIM, "--listen", self.path, "--upstream",
                               "unix:" + self.mux.socket] + [str(a) for a in args],
                              capture_output=True, text=True, timeout=timeout)

    def test_stale_socket_is_replaced(self):
        bind_dead_socket(self.path)
        shim = harness.Shim(self.path, self.mux.socket).start()
        # Logged just after listen(): the socket may accept a moment before.
        harness.wait_for(lambda: "replaced the stale socket file" in shim.stderr_text(), 10,
                         what="the stale-socket log line")
        rc, out, err = harness.run_client(["idevice_id", "-l"], self.path)
        self.assertEqual(rc, 0, err)

    def test_live_listener_is_never_stolen(self):
        live = socket.socket(socket.AF_UNIX)
        live.bind(self.path)
        live.listen(4)
        try:
            p = self.run_shim()
            self.assertEqual(p.returncode, 1)
            self.assertIn("is in use", p.stderr)
            c = socket.socket(socket.AF_UNIX)
            c.connect(self.path)  # still the original listener's
            c.close()
            self.assertTrue(stat.S_ISSOCK(os.lstat(self.path).st_mode))
        finally:
            live.close()

    def test_non_socket_is_not_touched(self):
        with open(self.path, "w") as f:
            f.write("precious")
        p = self.run_shim()
        self.assertEqual(p.returncode, 1)
        self.assertIn("not a socket", p.stderr)
        with open(self.path) as f:
            self.assertEqual(f.read(), "precious")

    def test_socket_mode_and_clean_exit(self):
        old = os.umask(0o077)  # must not matter
        try:
            shim = harness.Shim(self.path, self.mux.socket).start()
        finally:
            os.umask(old)
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o666)
        self.assertEqual(shim.stop(), 0)
        self.assertFalse(os.path.exists(self.path), "SIGTERM must remove the socket")
        shim = harness.Shim(self.path, self.mux.socket, "--socket-mode", "0660").start()
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o660)
        shim.send_signal(signal.SIGINT)
        self.assertEqual(shim.wait(10), 0)
        self.assertFalse(os.path.exists(self.path))

    def test_command_line(self):
        p = subprocess.run([SHIM, "--help"], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0)
        self.assertIn("--upstream", p.stdout)
        p = subprocess.run([SHIM, "--version"], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0)
        self.assertRegex(p.stdout, r"^muxshim \d+\.\d+\.\d+")
        bad = [["--upstream", "unix:relative"], ["--upstream", "ftp://x"],
               ["--socket-mode", "999"], ["--max-sessions", "0"], ["--log-level", "loud"],
               ["--listen", "relative/path"], ["--bogus"], ["extra"],
               ["--upstream", "tcp:host:70000"], ["--upstream"]]
        for args in bad:
            with self.subTest(args=args):
                p = subprocess.run([SHIM, "--listen", self.path] + args, capture_output=True,
                                   text=True, timeout=10)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertIn("muxshim:", p.stderr)
                self.assertFalse(os.path.exists(self.path))

    def test_env_upstream(self):
        shim = harness.Proc([SHIM, "--listen", self.path],
                            env={"MUXSHIM_UPSTREAM": "unix:" + self.mux.socket},
                            ready_socket=self.path).start()
        # The socket may accept a moment before the start-up line is written.
        harness.wait_for(lambda: "upstream unix:" + self.mux.socket in shim.stderr_text(), 30,
                         what="the start-up line naming the upstream")
        rc, out, err = harness.run_client(["idevice_id", "-l"], self.path)
        self.assertEqual(rc, 0, err)

    def test_upstream_missing_answers_promptly(self):
        # A shim that retried the missing socket would hold each client for
        # --connect-timeout (60 s here); answering at once takes
        # milliseconds. 10 s tells the two apart on any machine. The relay
        # (--passthrough) closes the client; the broker answers it (no
        # devices: test_broker's test_upstream_missing_or_stopped).
        shim = harness.Shim(self.path, os.path.join(self.d, "nothing-here"),
                            "--connect-timeout", 60000, "--passthrough").start()
        for i in range(50):
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(60)
            s.connect(self.path)
            t0 = time.monotonic()
            self.assertEqual(s.recv(10), b"")
            self.assertLess(time.monotonic() - t0, 10.0)
            s.close()
        log = shim.stderr_text()
        self.assertIn("no socket at %s" % os.path.join(self.d, "nothing-here"), log)
        # rate-limited: 50 failures, one line
        self.assertEqual(log.count("upstream unavailable"), 1, log)

    def test_upstream_stopped_is_explained(self):
        # The relay's answer (the broker's: no devices, test_broker).
        shim = harness.Shim(self.path, self.mux.socket, "--passthrough").start()
        self.mux.stop()  # leaves its socket file behind: ECONNREFUSED
        rc, out, err = harness.run_client(["idevice_id", "-l"], self.path)
        self.assertNotEqual(rc, 0)
        harness.wait_for(lambda: "nothing listens on it" in shim.stderr_text(), 5,
                         what="the refused diagnosis")


class InContainer(unittest.TestCase):
    """A simulated container: the shim is the container's /var/run/usbmuxd,
    the host's run directory is bind-mounted read-only at /run/host."""

    def tearDown(self):
        harness.cleanup_all()

    def test_clients_inside_get_what_the_host_gets(self):
        mux = harness.PrivateUsbmuxd().start()
        direct = harness.run_client(["idevice_id", "-l"], mux.socket)
        with harness.Container(mux.run_dir, readonly=True) as c:
            c.start_shim()
            rc, out, err = c.exec("unset USBMUXD_SOCKET_ADDRESS; idevice_id -l; echo rc=$?; "
                                  "stat -c %a /var/run/usbmuxd; touch /run/host/x 2>&1 || true")
            self.assertEqual(rc, 0, err)
            self.assertIn("rc=0", out)
            self.assertEqual(out.split("rc=0")[0], direct[1])
            self.assertIn("666", out)
            self.assertIn("Read-only", out)  # the mount is read-only, connect works anyway
            lm = harness.tool("lmclient")
            rc_in, out_in, err_in = c.exec("unset USBMUXD_SOCKET_ADDRESS; %s all" % lm)
            rc_d, out_d, err_d = harness.run_client([lm, "all"], mux.socket)
            self.assertEqual((rc_in, out_in), (rc_d, out_d), err_in)

    def test_host_usbmuxd_restart_without_touching_the_shim(self):
        mux = harness.PrivateUsbmuxd().start()
        with harness.Container(mux.run_dir, readonly=True) as c:
            shim = c.start_shim()
            shim_pid = shim.pid
            # A session in flight: a Listen subscription, opened from outside
            # through the container's socket.
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(15)
            s.connect(c.host_path("/var/run/usbmuxd"))
            s.sendall(plist_msg({"MessageType": "Listen"}))
            self.assertEqual(recv_msg(s)[3].get("Number"), 0)
            mux.restart()
            self.assertEqual(s.recv(100), b"", "sessions in flight end with EOF")
            s.close()
            rc, out, err = c.exec("unset USBMUXD_SOCKET_ADDRESS; idevice_id -l; echo rc=$?")
            self.assertIn("rc=0", out, err + shim.stderr_text())
            self.assertEqual(shim.pid, shim_pid)
            self.assertTrue(shim.alive())

    def test_single_file_mount_goes_stale_and_is_diagnosed(self):
        mux = harness.PrivateUsbmuxd().start()
        with harness.Container(None) as c:
            # As `docker run -v /var/run/usbmuxd:/run/host/usbmuxd` would.
            c.exec("touch /run/host/usbmuxd && mount --bind %s /run/host/usbmuxd" % mux.socket,
                   check=True)
            shim = c.start_shim()
            rc, out, err = c.exec("unset USBMUXD_SOCKET_ADDRESS; idevice_id -l; echo rc=$?")
            self.assertIn("rc=0", out)
            mux.restart()  # a new socket file; the mount keeps the old inode
            rc, out, err = c.exec("unset USBMUXD_SOCKET_ADDRESS; idevice_id -l; echo rc=$?")
            self.assertNotIn("rc=0", out)
            harness.wait_for(lambda: "Mount the directory, not the file" in shim.stderr_text(),
                             5, what="the single-file mount diagnosis")


class NoGrowth(unittest.TestCase):
    def tearDown(self):
        harness.cleanup_all()

    def test_10000_sessions_leave_no_fds_or_memory(self):
        mux = harness.PrivateUsbmuxd().start()
        path = os.path.join(harness.tempdir("leak"), "shim.sock")
        shim = harness.Shim(path, mux.socket, log_level="warn").start()
        harness.muxconn("--list-loop", 300, socket=path)  # warm-up
        fds0, rss0 = harness.settled_fd_count(shim), shim.rss_kib()
        r = harness.muxconn("--list-loop", 10000, "--parallel", 4, socket=path, timeout=600)
        self.assertEqual(r["list_sessions"], 10000)
        fds1, rss1 = harness.settled_fd_count(shim), shim.rss_kib()
        print("\n10,000 sessions: fds %d -> %d, RSS %d -> %d KiB" % (fds0, fds1, rss0, rss1))
        self.assertEqual(fds1, fds0)
        assert_rss_bound(self, rss1 - rss0, 256)


class OutOfDescriptors(unittest.TestCase):
    def tearDown(self):
        harness.cleanup_all()

    def test_emfile_pauses_accept_and_recovers(self):
        mux = harness.PrivateUsbmuxd().start()
        path = os.path.join(harness.tempdir("emfile"), "shim.sock")
        shim = harness.Proc(["prlimit", "--nofile=24:24", SHIM, "--listen", path, "--upstream",
                             "unix:" + mux.socket], name="muxshim", ready_socket=path).start()
        idle = []
        for _ in range(40):  # far more than the shim has descriptors for
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)  # completes in the listen queue
            idle.append(s)
        harness.wait_for(lambda: "out of file descriptors (Too many open files): not accepting"
                         in shim.stderr_text(), 10, what="the EMFILE log line")
        cpu0 = open("/proc/%d/stat" % shim.pid).read().split()[13:15]
        time.sleep(1.0)
        cpu1 = open("/proc/%d/stat" % shim.pid).read().split()[13:15]
        spent = sum(int(b) - int(a) for a, b in zip(cpu0, cpu1))
        self.assertLess(spent, 20, "the shim spins while out of descriptors (%d ticks/s)" % spent)
        for s in idle:
            s.close()
        deadline = time.monotonic() + 60   # generous: the loop ends as soon as it holds
        while True:
            rc, out, err = harness.run_client(["idevice_id", "-l"], path)
            if rc == 0:
                break
            self.assertLess(time.monotonic(), deadline, "no recovery: " + shim.log_tail())
            time.sleep(0.2)
        self.assertTrue(shim.alive())


class BadClients(unittest.TestCase):
    def tearDown(self):
        harness.cleanup_all()

    def test_garbage_truncation_and_silence(self):
        mux = harness.PrivateUsbmuxd().start()
        path = os.path.join(harness.tempdir("bad"), "shim.sock")
        shim = harness.Shim(path, mux.socket, log_level="info").start()
        rnd = random.Random(11)
        silent = []
        for _ in range(50):  # connect and never speak
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            silent.append(s)
        for i in range(100):
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(5)
            s.connect(path)
            if i % 3 == 0:
                s.sendall(bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 5000))))
            elif i % 3 == 1:
                s.sendall(b"\x10\x00\x00\x00\x01\x00\x00")  # mid-header
            else:
                s.sendall(b"\xff\xff\xff\x7f\x01\x00\x00\x00\x08\x00\x00\x00\x01\x00\x00\x00")
            s.close()
        r = harness.muxconn("--list-loop", 500, socket=path)
        self.assertEqual(r["list_sessions"], 500)
        rc, out, err = harness.run_client(["idevice_id", "-l"], path)
        self.assertEqual(rc, 0, err)
        for s in silent:
            s.close()
        self.assertTrue(shim.alive())
        self.assertNotIn("error:", shim.stderr_text())


if __name__ == "__main__":
    unittest.main()
