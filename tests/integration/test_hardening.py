"""Hardening that a user relies on: the seccomp sandbox (on in every suite,
strict), dropping to --user, the socket's mode and owner, --request-timeout
for silent or stalled clients, the helper's handshake timeout, a log
destination that refuses lines, and requests that would amplify in libplist
refused before anything parses them."""
import json
import os
import pwd
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tunnel_util import Helper, connect_device, harness, plist_msg, recv_exact, recv_msg  # noqa: E402
import bplist  # noqa: E402  (tests/lib, on the path through tunnel_util)

NOBODY = pwd.getpwnam("nobody")


def status_fields(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        return sum(int(x) for x in f.read().split()[13:15])


def list_devices(path, timeout=10):
    s = harness.connect_unix(path, timeout)   # usbmuxd's queue may be full
    try:
        s.sendall(plist_msg({"MessageType": "ListDevices"}))
        return recv_msg(s)[3]
    finally:
        s.close()


def closed_within(s, seconds):
    """Seconds until the peer closed s (EOF or reset), or None if it stayed open."""
    s.settimeout(seconds)
    t0 = time.monotonic()
    try:
        while True:
            if not s.recv(4096):
                return time.monotonic() - t0
    except socket.timeout:
        return None
    except ConnectionResetError:
        return time.monotonic() - t0


def env_with(**kv):
    e = dict(os.environ)
    e.update({k: str(v) for k, v in kv.items()})
    return e


def world_dir(tag):
    """A temp dir other users can traverse (the daemons may run as nobody)."""
    d = harness.tempdir(tag)
    os.chmod(d, 0o755)
    return d


class Sandbox(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if harness.VALGRIND:
            # valgrind answers prctl(PR_SET_SECCOMP) with success but installs
            # no filter (Seccomp: 0), and has no seccomp(2): nothing to test.
            msg = ("SKIPPED under valgrind: valgrind installs no seccomp filter (it fakes "
                   "prctl(PR_SET_SECCOMP)); the plain and ASan passes test the sandbox")
            print("\n  [%s]" % msg, flush=True)
            raise unittest.SkipTest(msg)
        cls.mux = harness.PrivateUsbmuxd().start()

    @classmethod
    def tearDownClass(cls):
        harness.cleanup_all()

    def shim(self, *extra, env=None, tag="sandbox"):
        path = os.path.join(harness.tempdir(tag), "shim.sock")
        return harness.Shim(path, self.mux.socket, *extra, env=env).start()

    def test_both_daemons_run_sandboxed(self):
        helper = Helper("unix:" + self.mux.socket).start()
        shim = self.shim()
        tshim = harness.Shim(os.path.join(harness.tempdir("sandbox-t"), "s.sock"),
                             helper.tunnel).start()
        for p in (shim, helper, tshim):
            # The line follows the filter's loading, which follows readiness
            # (the sockets accept first): wait for it (5 s: it is the next
            # thing the daemon does).
            harness.wait_for(lambda: "seccomp sandbox on" in p.stderr_text(), 5,
                             what="the sandbox line")
            st = status_fields(p.pid)
            self.assertEqual(st["Seccomp"], "2", p)    # filter mode
            self.assertEqual(st["NoNewPrivs"], "1", p)
        # ... and serve real requests from inside the sandbox.
        direct = list_devices(self.mux.socket)
        self.assertEqual(list_devices(shim.listen), direct)
        self.assertEqual(list_devices(tshim.listen), direct)
        rc, out, err = harness.run_client(["idevice_id", "-l"], tshim.listen)
        self.assertEqual(rc, 0, err)

    def test_a_call_outside_the_list_is_denied(self):
        # Permissive mode: the call fails with EPERM, the daemon goes on.
        shim = self.shim(env=env_with(MUXSHIM_SECCOMP_STRICT=0, MUXSHIM_SECCOMP_PROBE=1))
        harness.wait_for(lambda: "seccomp probe" in shim.stderr_text(), 5, what="probe line")
        self.assertIn("seccomp probe: execve was denied (Operation not permitted)",
                      shim.stderr_text())
        self.assertEqual(list_devices(shim.listen), list_devices(self.mux.socket))
        self.assertTrue(shim.alive())
        # Without the sandbox the same call is not denied (it fails for
        # another reason: the file does not exist) - the probe can tell.
        off = self.shim("--no-seccomp", env=env_with(MUXSHIM_SECCOMP_PROBE=1))
        harness.wait_for(lambda: "seccomp probe" in off.stderr_text(), 5, what="probe line")
        self.assertIn("execve was NOT denied (No such file or directory)", off.stderr_text())
        self.assertIn("seccomp sandbox off (--no-seccomp)", off.stderr_text())
        self.assertEqual(status_fields(off.pid)["Seccomp"], "0")
        # Strict mode (what the suites use): the same call kills the process.
        strict = subprocess.Popen(
            [harness.shim_binary(), "--listen",
             os.path.join(harness.tempdir("strict"), "s.sock"), "--upstream",
             "unix:" + self.mux.socket], env=env_with(MUXSHIM_SECCOMP_STRICT=1,
                                                      MUXSHIM_SECCOMP_PROBE=1),
            stderr=subprocess.PIPE)
        _, err = strict.communicate(timeout=20)
        self.assertEqual(strict.returncode, -signal.SIGSYS, err.decode())

    def test_helper_probe_denied(self):
        helper = Helper("unix:" + self.mux.socket,
                        env=env_with(MUXSHIM_SECCOMP_STRICT=0, MUXSHIM_SECCOMP_PROBE=1)).start()
        harness.wait_for(lambda: "seccomp probe" in helper.stderr_text(), 5, what="probe line")
        self.assertIn("execve was denied", helper.stderr_text())
        self.assertEqual(status_fields(helper.pid)["Seccomp"], "2")

    def test_tunnel_by_host_name_resolves_inside_the_sandbox(self):
        # getaddrinfo reads /etc/hosts and may open netlink/UDP sockets: all
        # must be on the allow-list (strict mode kills the shim otherwise).
        helper = Helper("unix:" + self.mux.socket).start()
        shim = harness.Shim(os.path.join(harness.tempdir("byname"), "s.sock"),
                            "tunnel:localhost:%d" % helper.port).start()
        self.assertEqual(list_devices(shim.listen), list_devices(self.mux.socket))
        helper.stop()
        helper = Helper("unix:" + self.mux.socket, port=helper.port).start()
        harness.wait_for(lambda: shim.stderr_text().count(": up") >= 2, 15, what="redial")
        self.assertEqual(list_devices(shim.listen), list_devices(self.mux.socket))
        self.assertTrue(shim.alive())


class Privileges(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.mux = harness.PrivateUsbmuxd().start()
        # The usbmuxd socket's directory must be reachable by nobody.
        os.chmod(cls.mux.dir, 0o755)
        os.chmod(cls.mux.run_dir, 0o755)

    @classmethod
    def tearDownClass(cls):
        harness.cleanup_all()

    def test_shim_drops_to_user(self):
        path = os.path.join(world_dir("user"), "shim.sock")
        shim = harness.Shim(path, self.mux.socket, "--user", "nobody").start()
        harness.wait_for(lambda: "seccomp sandbox on" in shim.stderr_text(), 10,
                         what="setup to finish")
        st = status_fields(shim.pid)
        self.assertEqual(st["Uid"].split(), [str(NOBODY.pw_uid)] * 4)
        self.assertEqual(st["Gid"].split(), [str(NOBODY.pw_gid)] * 4)
        self.assertEqual(st["CapEff"], "0000000000000000")
        self.assertIn("running as user nobody", shim.stderr_text())
        self.assertEqual(list_devices(path), list_devices(self.mux.socket))

    def test_helper_drops_to_user(self):
        helper = Helper("unix:" + self.mux.socket, "--user", "nobody").start()
        harness.wait_for(lambda: "seccomp sandbox on" in helper.stderr_text(), 10,
                         what="setup to finish")
        self.assertEqual(status_fields(helper.pid)["Uid"].split()[1], str(NOBODY.pw_uid))
        shim = harness.Shim(os.path.join(world_dir("huser"), "s.sock"), helper.tunnel).start()
        self.assertEqual(list_devices(shim.listen), list_devices(self.mux.socket))

    def test_unknown_user_is_an_error(self):
        for argv in ([harness.shim_binary(), "--listen",
                      os.path.join(harness.tempdir("nouser"), "s.sock")],
                     [os.environ.get("MUXSHIM_HOST_BIN",
                                     os.path.join(harness.BUILD, "muxshim-host")),
                      "--listen", "127.0.0.1:%d" % harness.free_tcp_port()]):
            p = subprocess.run(argv + ["--upstream", "unix:" + self.mux.socket, "--user",
                                       "no-such-user-xyz"], capture_output=True, timeout=20)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn(b"--user no-such-user-xyz: no such user", p.stderr)

    def test_socket_mode_and_owner(self):
        d = world_dir("owner")
        path = os.path.join(d, "shim.sock")
        shim = harness.Shim(path, self.mux.socket, "--socket-mode", "0660",
                            "--socket-owner", "nobody:nogroup").start()
        # The socket appears with its owner already set (test_adversarial:
        # SocketPathRace checks the first moment it exists).
        st = os.stat(path)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o660)
        self.assertEqual((st.st_uid, st.st_gid),
                         (NOBODY.pw_uid, __import__("grp").getgrnam("nogroup").gr_gid))
        probe = ("import socket,sys\n"
                 "s=socket.socket(socket.AF_UNIX)\n"
                 "try:\n s.connect(sys.argv[1]); print('connected')\n"
                 "except PermissionError: print('denied')\n")

        def connect_as(uid, gid):
            # Debian's python: the test's own may live where nobody cannot go.
            return subprocess.run(["/usr/bin/python3", "-c", probe, path], capture_output=True,
                                  text=True, timeout=20, user=uid, group=gid,
                                  extra_groups=[]).stdout.strip()
        self.assertEqual(connect_as(NOBODY.pw_uid, NOBODY.pw_gid), "connected")
        self.assertEqual(connect_as(4321, 4321), "denied")
        self.assertTrue(shim.alive())

    def test_bad_socket_owner_is_an_error_and_leaves_no_socket(self):
        path = os.path.join(harness.tempdir("badowner"), "s.sock")
        p = subprocess.run([harness.shim_binary(), "--listen", path, "--upstream",
                            "unix:" + self.mux.socket, "--socket-owner", "nobody:no-such-grp"],
                           capture_output=True, timeout=20)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn(b"--socket-owner nobody:no-such-grp: no such user or group", p.stderr)
        self.assertFalse(os.path.exists(path))
        for bad in ("", ":"):
            p = subprocess.run([harness.shim_binary(), "--listen", path, "--socket-owner", bad],
                               capture_output=True, timeout=20)
            self.assertEqual(p.returncode, 2, p.stderr)


class RequestTimeout(unittest.TestCase):
    """--request-timeout closes clients that send nothing or stall inside a
    request; whole requests may then wait as long as they like."""
    TIMEOUT_MS = 300

    @classmethod
    def setUpClass(cls):
        d = harness.tempdir("rtimeout")
        cls.mux = harness.PrivateUsbmuxd().start()
        cls.dev = harness.DevSvc().start()
        cls.fd = harness.FakeDev(os.path.join(d, "fd.sock")).start()
        cls.helper = Helper("unix:" + cls.fd.socket).start()

    @classmethod
    def tearDownClass(cls):
        harness.cleanup_all()

    def setUp(self):
        # Fresh shims per test: the timeout warning is rate-limited per shim.
        d = harness.tempdir("rtimeout")
        t = str(self.TIMEOUT_MS)
        self.shims = {
            "unix": harness.Shim(os.path.join(d, "u.sock"), self.fd.socket,
                                 "--request-timeout", t, log_level="info").start(),
            "tunnel": harness.Shim(os.path.join(d, "t.sock"), self.helper.tunnel,
                                   "--request-timeout", t, log_level="info").start(),
        }
        self.real = harness.Shim(os.path.join(d, "r.sock"), self.mux.socket,
                                 "--request-timeout", t, log_level="info").start()

    def tearDown(self):
        for p in list(self.shims.values()) + [self.real]:
            p.stop()

    def connect(self, path):
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        return s

    def test_silent_client_is_closed(self):
        for kind, shim in self.shims.items():
            with self.subTest(kind):
                t0 = time.monotonic()   # before the connect: a late look cannot shorten it
                s = self.connect(shim.listen)
                waited = closed_within(s, 10)
                s.close()
                self.assertIsNotNone(waited, "a silent client was never closed")
                self.assertGreaterEqual(time.monotonic() - t0, 0.2)
                harness.wait_for(lambda: "sent nothing for 300 ms" in shim.stderr_text(), 5,
                                 what="timeout log line")
                out = subprocess.run([harness.shim_binary(), "stats", "--json", "--listen",
                                      shim.listen], capture_output=True, text=True, timeout=20)
                self.assertEqual(json.loads(out.stdout)["request_timeouts"], 1, out)

    def test_client_stalled_mid_request_is_closed(self):
        msg = plist_msg({"MessageType": "ListDevices"})
        for kind, shim in self.shims.items():
            for cut in (7, 20):  # inside the header, inside the body
                with self.subTest(kind=kind, cut=cut):
                    s = self.connect(shim.listen)
                    s.sendall(msg[:cut])
                    self.assertIsNotNone(closed_within(s, 10))
                    s.close()
            harness.wait_for(lambda: "stopped in the middle of a request" in shim.stderr_text(),
                             5, what="timeout log line")

    def test_client_stalled_in_its_second_request_is_closed(self):
        # One whole request and the start of the next in one write, to the
        # broker (these tests' other shims relay): it reads both at once,
        # answers the first, and the clock runs for the second.
        msg = plist_msg({"MessageType": "ListDevices"})
        d = harness.tempdir("rtimeout-broker")
        for kind, up in (("unix", self.fd.socket), ("tunnel", self.helper.tunnel)):
            shim = harness.Shim(os.path.join(d, kind + ".sock"), up, "--broker", "--request-timeout",
                                str(self.TIMEOUT_MS), log_level="info").start()
            try:
                with self.subTest(kind):
                    s = self.connect(shim.listen)
                    s.settimeout(10)
                    s.sendall(msg + msg[:20])
                    self.assertIn("DeviceList", recv_msg(s)[3])
                    self.assertIsNotNone(closed_within(s, 10))
                    s.close()
                    harness.wait_for(lambda: "stopped in the middle of a request"
                                     in shim.stderr_text(), 5, what="timeout log line")
            finally:
                shim.stop()

    def test_slow_but_moving_client_is_not_closed(self):
        # Bytes that keep arriving restart the clock: a few every 30 ms for
        # 1.5 s (5 x the timeout) complete the request and get the answer.
        # 30 ms gaps leave this process 10 x the gap to be late by on a busy
        # machine before a gap reaches the 300 ms timeout.
        msg = plist_msg({"MessageType": "ListDevices"})
        s = self.connect(self.real.listen)
        s.settimeout(10)
        step = len(msg) // 50 + 1
        for i in range(0, len(msg), step):
            s.sendall(msg[i:i + step])
            time.sleep(0.03)
        self.assertIn("DeviceList", recv_msg(s)[3])
        s.close()

    def test_listen_and_connect_pipes_may_idle(self):
        # A Listen subscription waits for events with nothing to send.
        s = self.connect(self.real.listen)
        s.sendall(plist_msg({"MessageType": "Listen"}))
        s.settimeout(10)
        self.assertEqual(recv_msg(s)[3].get("Number"), 0)
        self.assertIsNone(closed_within(s, 1.5), "an idle Listen session was closed")
        s.close()
        # A Connect pipe idle for 5 x the timeout still carries bytes.
        for kind, shim in self.shims.items():
            with self.subTest(kind):
                c = connect_device(shim.listen, self.dev.port)
                time.sleep(1.5)
                c.sendall(b"ECHO\n" + b"x" * 1000)
                self.assertEqual(recv_exact(c, 1000), b"x" * 1000)
                c.close()
        # After a whole request the client may wait (and read) at leisure.
        s = self.connect(self.real.listen)
        s.sendall(plist_msg({"MessageType": "ReadBUID"}))
        time.sleep(1.0)
        s.settimeout(10)
        self.assertIn("BUID", recv_msg(s)[3])
        s.close()

    def test_timeout_zero_disables(self):
        shim = harness.Shim(os.path.join(harness.tempdir("rt0"), "s.sock"), self.mux.socket,
                            "--request-timeout", "0").start()
        s = self.connect(shim.listen)
        self.assertIsNone(closed_within(s, 1.5))
        s.sendall(plist_msg({"MessageType": "ListDevices"}))
        s.settimeout(10)
        self.assertIn("DeviceList", recv_msg(s)[3])
        s.close()


class HelperHandshakeTimeout(unittest.TestCase):
    def tearDown(self):
        harness.cleanup_all()

    def test_silent_and_half_hello_connections_are_closed(self):
        mux = harness.PrivateUsbmuxd().start()
        helper = Helper("unix:" + mux.socket, "--handshake-timeout", "300").start()
        for first in (b"", b"MXTN\x00"):
            s = socket.create_connection(("127.0.0.1", helper.port))
            if first:
                s.sendall(first)
            waited = closed_within(s, 10)
            s.close()
            self.assertIsNotNone(waited, "helper kept a silent connection (%r)" % first)
        harness.wait_for(lambda: "handshake" in helper.stderr_text(), 5, what="log line")
        shim = harness.Shim(os.path.join(harness.tempdir("hs"), "s.sock"), helper.tunnel).start()
        self.assertEqual(list_devices(shim.listen), list_devices(mux.socket))


class HelperOutOfDescriptors(unittest.TestCase):
    def tearDown(self):
        harness.cleanup_all()

    def test_emfile_on_the_helper_pauses_and_recovers(self):
        # 24 descriptors: a few for itself, the rest for tunnels and their
        # usbmuxd connections. 40 held Listen sessions need far more.
        mux = harness.PrivateUsbmuxd().start()
        port = harness.free_tcp_port()
        helper_bin = os.environ.get("MUXSHIM_HOST_BIN", os.path.join(harness.BUILD, "muxshim-host"))
        helper = harness.Proc(["prlimit", "--nofile=24:24", helper_bin, "--listen",
                               "127.0.0.1:%d" % port, "--upstream", "unix:" + mux.socket],
                              name="muxshim-host",
                              ready_fn=lambda: harness.tcp_listening(port)).start()
        shim = harness.Shim(os.path.join(harness.tempdir("hemfile"), "s.sock"),
                            "tunnel:127.0.0.1:%d" % port, log_level="info").start()
        held = []
        for _ in range(40):
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(10)
            s.connect(shim.listen)
            s.sendall(plist_msg({"MessageType": "Listen"}))
            held.append(s)
        harness.wait_for(lambda: "Too many open files" in helper.stderr_text(), 15,
                         what="the helper's EMFILE log line")
        # Sessions it could not serve end (the client sees EOF or an answer),
        # none hangs forever; and the helper does not spin meanwhile.
        cpu0 = cpu_ticks(helper.pid)
        time.sleep(1.0)
        spent = cpu_ticks(helper.pid) - cpu0
        self.assertLess(spent, 20, "the helper spins out of descriptors (%d ticks/s)" % spent)
        for s in held:
            s.close()
        deadline = time.monotonic() + 60   # generous: recovery is immediate
        while True:
            try:
                if "DeviceList" in list_devices(shim.listen, timeout=5):
                    break
            except OSError:
                pass
            self.assertLess(time.monotonic(), deadline, "no recovery: " + helper.log_tail())
            time.sleep(0.2)
        self.assertTrue(helper.alive() and shim.alive())


class LogDestination(unittest.TestCase):
    def tearDown(self):
        for p in getattr(self, "procs", []):
            if p.poll() is None:
                p.terminate()
                p.wait(20)
        harness.cleanup_all()

    def spawn(self, argv, stderr):
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=stderr, start_new_session=True)
        self.procs = getattr(self, "procs", []) + [p]
        return p

    def test_log_file_on_a_full_disk_falls_back_to_stderr(self):
        mux = harness.PrivateUsbmuxd().start()
        helper = Helper("unix:" + mux.socket, "--log-file", "/dev/full").start()
        shim = harness.Shim(os.path.join(harness.tempdir("logfull"), "s.sock"),
                            helper.tunnel).start()
        self.assertEqual(list_devices(shim.listen), list_devices(mux.socket))
        # Lines the file refused arrived on stderr instead.
        self.assertIn("listening on 127.0.0.1:%d" % helper.port, helper.stderr_text())
        self.assertTrue(helper.alive())

    def check_daemons_survive(self, stderr_for):
        """Both daemons with stderr from stderr_for(); debug logging, so every
        session writes lines that go nowhere."""
        mux = harness.PrivateUsbmuxd().start()
        port = harness.free_tcp_port()
        path = os.path.join(harness.tempdir("stderr"), "s.sock")
        helper = self.spawn([os.environ.get("MUXSHIM_HOST_BIN",
                                            os.path.join(harness.BUILD, "muxshim-host")),
                             "--listen", "127.0.0.1:%d" % port, "--upstream",
                             "unix:" + mux.socket, "--log-level", "debug"], stderr_for())
        harness.wait_for(lambda: harness.tcp_listening(port), 20, what="helper")
        shim = self.spawn([harness.shim_binary(), "--listen", path, "--upstream",
                           "tunnel:127.0.0.1:%d" % port, "--log-level", "debug"], stderr_for())
        harness.wait_for(lambda: harness.unix_accepts(path), 20, what="shim")
        for _ in range(20):
            self.assertIn("DeviceList", list_devices(path))
        self.assertIsNone(helper.poll())
        self.assertIsNone(shim.poll())
        for p in (shim, helper):
            p.terminate()
            self.assertEqual(p.wait(20), 0)

    def test_stderr_on_a_full_disk(self):
        full = open("/dev/full", "w")
        self.addCleanup(full.close)
        self.check_daemons_survive(lambda: full)

    def test_stderr_pipe_nobody_reads(self):
        def closed_pipe():
            r, w = os.pipe()
            os.close(r)  # writes now fail with EPIPE (and would raise SIGPIPE)
            self.addCleanup(os.close, w)
            return w
        self.check_daemons_survive(closed_pipe)

    def test_closed_stderr_never_receives_a_socket(self):
        # Started with fd 2 closed, a daemon's first socket would become fd 2
        # and log lines would be written into it; the daemons reopen 0-2 on
        # /dev/null first. A client must see only usbmuxd's bytes.
        mux = harness.PrivateUsbmuxd().start()
        path = os.path.join(harness.tempdir("fd2"), "s.sock")
        p = subprocess.Popen(["sh", "-c", 'exec "$@" <&- >&- 2>&-', "sh", harness.shim_binary(),
                              "--listen", path, "--upstream", "unix:" + mux.socket,
                              "--log-level", "debug"], start_new_session=True)
        self.procs = [p]
        harness.wait_for(lambda: harness.unix_accepts(path), 20, what="shim")
        for _ in range(5):
            self.assertEqual(list_devices(path), list_devices(mux.socket))


if __name__ == "__main__":
    unittest.main()


class AmplifyingPlist(unittest.TestCase):
    """Issue 17: a binary plist whose arrays share each other's objects made
    libplist build a fresh copy per reference (a 4 KB request cost the shim
    96 MB; the largest one the header allows would need tens of GB). The
    shim refuses it before libplist or usbmuxd sees it, on both upstreams."""

    @classmethod
    def setUpClass(cls):
        # -v x3: usbmuxd logs "command len N" for every request it reads.
        cls.mux = harness.PrivateUsbmuxd(verbose=4).start()
        cls.helper = Helper("unix:" + cls.mux.socket).start()

    @classmethod
    def tearDownClass(cls):
        harness.cleanup_all()

    def stats(self, shim):
        out = subprocess.run([harness.shim_binary(), "stats", "--json", "--listen", shim.listen],
                             capture_output=True, text=True, timeout=20)
        return json.loads(out.stdout)

    def test_largest_amplifying_request_is_refused(self):
        body = bplist.amplifying_request(bplist.USBMUXD_MSG_MAX - 16)
        msg = bplist.usbmuxd_message(body, tag=7)
        self.assertEqual(len(msg), bplist.USBMUXD_MSG_MAX)
        d = harness.tempdir("amplify")
        for kind, upstream in (("unix", self.mux.socket), ("tunnel", self.helper.tunnel)):
            with self.subTest(kind):
                shim = harness.Shim(os.path.join(d, kind + ".sock"), upstream,
                                    log_level="info").start()
                try:
                    self.check(shim, msg)
                finally:
                    shim.stop()

    def test_nul_request_is_refused(self):
        # A raw NUL inside an XML string: libplist 2.2 keeps it and its
        # plist_get_string_val aborts, which usbmuxd calls on MessageType.
        # Refused by the relay's gate and by the broker alike, unread by
        # usbmuxd.
        body = (b'<?xml version="1.0" encoding="UTF-8"?>\n<plist version="1.0"><dict>'
                b"<key>MessageType</key><string>List\0Devices</string></dict></plist>")
        msg = bplist.usbmuxd_message(body, tag=9)
        d = harness.tempdir("nulreq")
        for kind, upstream in (("unix", self.mux.socket), ("tunnel", self.helper.tunnel)):
            for mode in ("--passthrough", "--broker"):
                with self.subTest(kind=kind, mode=mode):
                    shim = harness.Shim(os.path.join(d, kind + mode + ".sock"), upstream, mode,
                                        log_level="info").start()
                    try:
                        self.check(shim, msg)
                    finally:
                        shim.stop()

    def check(self, shim, msg):
        # A ListDevices first: the shim is warm, and usbmuxd's log shows
        # that it does log each request it reads (or the check below says
        # nothing).
        list_devices(shim.listen)
        harness.wait_for(lambda: "command len" in self.mux.log_text(), 10,
                         what="usbmuxd logging requests")
        peak0 = harness.proc_peak_rss_kib(shim.pid)
        before = self.stats(shim)
        attacker = socket.socket(socket.AF_UNIX)
        attacker.connect(shim.listen)
        attacker.sendall(msg)
        # Another client meanwhile is served (30 s: a generous bound for a
        # loaded machine or valgrind, not a speed claim).
        reply = list_devices(shim.listen, timeout=30)
        self.assertIn("DeviceList", reply)
        waited = closed_within(attacker, 30)
        attacker.close()
        # One 64 KiB body held and checked: far below a megabyte of peak
        # RSS, where the old code needed 96 MB for 4 KB (tens of GB here).
        harness.assert_rss_bound(self, harness.proc_peak_rss_kib(shim.pid) - peak0, 8 * 1024,
                                 "peak RSS growth from the amplifying request")
        self.assertIsNotNone(waited, "the client that sent the amplifying request was not closed")
        harness.wait_for(lambda: "request refused before it reached usbmuxd" in shim.stderr_text(),
                         10, what="refusal log line")
        after = self.stats(shim)
        self.assertEqual(after["requests_refused"], before.get("requests_refused", 0) + 1)
        self.assertTrue(shim.alive())
        # usbmuxd never read it (it would log "command len 65536") and
        # still answers.
        self.assertNotIn("command len %d" % len(msg), self.mux.log_text())
        self.assertTrue(self.mux.alive())
        self.assertIn("DeviceList", list_devices(self.mux.socket))
