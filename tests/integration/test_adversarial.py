"""What a hostile local user or peer tries against the daemons (issue 17):
a symlink swapped in at the socket path while the shim starts, signals,
untrusted process names in output, and a TCP upstream that never answers."""
import json
import os
import pwd
import re
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tunnel_util import Helper, harness, plist_msg  # noqa: E402

NOBODY = pwd.getpwnam("nobody")


def run_until_listening(argv, log_path, timeout=20):
    """Starts a daemon with stderr to log_path; returns (proc, started) once it
    logged that it listens or exited. 20 s: generous for a start that takes
    milliseconds, also under valgrind-free ASan builds on a busy machine."""
    log = open(log_path, "wb")
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
    log.close()

    def done():
        with open(log_path, "rb") as f:
            text = f.read()
        return p.poll() is not None or b" listening on " in text
    harness.wait_for(done, timeout, interval=0.002, what="the daemon to listen or exit")
    return p


def stop(p):
    if p.poll() is None:
        p.terminate()
    p.wait(timeout=20)


@unittest.skipIf(os.geteuid() != 0, "needs root: --socket-owner")
class SocketPathRace(unittest.TestCase):
    """A neighbour with write access to the socket's directory (0777, no
    sticky bit) waits for the socket to appear and renames a symlink to a
    root-owned 0600 file over it. Before the fix, the shim's chmod and chown
    then followed the symlink (the victim became nobody's, mode 0666); now
    mode and owner are applied inside a private directory before the socket
    is linked into place, so the victim never changes, whatever the timing."""
    TRIES = 150

    def test_symlink_swap_never_redirects_chmod_or_chown(self):
        d = harness.tempdir("race")
        os.chmod(d, 0o777)  # writable by all, no sticky bit
        victim_dir = harness.tempdir("victim")
        victim = os.path.join(victim_dir, "secret")
        with open(victim, "w") as f:
            f.write("root only\n")
        os.chmod(victim, 0o600)
        before = os.stat(victim)
        path = os.path.join(d, "usbmuxd")
        link_tmp = os.path.join(d, "evil")
        swapped = 0
        for i in range(self.TRIES):
            stop_flag = threading.Event()
            hit = []

            def attacker():
                # Spin until the socket exists, then replace it at once.
                while not stop_flag.is_set():
                    try:
                        st = os.lstat(path)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISSOCK(st.st_mode):
                        try:
                            os.symlink(victim, link_tmp)
                        except FileExistsError:
                            pass
                        os.rename(link_tmp, path)
                        hit.append(True)
                        return
            t = threading.Thread(target=attacker)
            t.start()
            try:
                p = run_until_listening(
                    [harness.shim_binary(), "--listen", path, "--upstream", "unix:/nonexistent",
                     "--control", "none", "--socket-mode", "0666",
                     "--socket-owner", "nobody:nogroup"], os.path.join(d, "log.%d" % i))
                # A listening shim's socket stays until the attacker swaps
                # it: wait for that (20 s, generous for a spinning thread).
                if p.poll() is None:
                    t.join(20)
            finally:
                stop_flag.set()
                t.join()
            stop(p)
            swapped += bool(hit)
            after = os.stat(victim)
            self.assertEqual((after.st_uid, after.st_gid, stat.S_IMODE(after.st_mode)),
                             (before.st_uid, before.st_gid, 0o600),
                             "try %d: the victim file was changed through the symlink" % i)
            for name in (path, link_tmp):
                try:
                    os.unlink(name)
                except FileNotFoundError:
                    pass
            # The private directories the shim made are gone again.
            self.assertEqual([n for n in os.listdir(d) if n.startswith(".muxshim-")], [])
        # The attack did run: the socket was replaced in every try.
        self.assertEqual(swapped, self.TRIES)

    def test_socket_has_owner_and_mode_when_it_appears(self):
        """The first moment the path exists, it is already nobody's, 0640:
        no client can connect while the old mode or owner applies."""
        d = harness.tempdir("race")
        path = os.path.join(d, "usbmuxd")
        seen = []
        stop_flag = threading.Event()

        def watcher():
            while not stop_flag.is_set():
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    continue
                seen.append((st.st_uid, stat.S_IMODE(st.st_mode)))
                return
        t = threading.Thread(target=watcher)
        t.start()
        try:
            p = run_until_listening(
                [harness.shim_binary(), "--listen", path, "--upstream", "unix:/nonexistent",
                 "--control", "none", "--socket-mode", "0640", "--socket-owner", "nobody"],
                os.path.join(d, "log"))
            if p.poll() is None:
                t.join(20)  # the socket stays: the watcher sees it (20 s: generous)
        finally:
            stop_flag.set()
            t.join()
        stop(p)
        self.assertEqual(seen, [(NOBODY.pw_uid, 0o640)])


def file_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


# The signals whose default action ends a process, which the daemons turn
# into a logged, clean shutdown (SIGKILL cannot be caught).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGALRM,
                signal.SIGVTALRM, signal.SIGPROF, signal.SIGXCPU)
# Every wait below is for a log line or an exit that follows the signal at
# once; 20 s is generous by orders of magnitude (valgrind included).
WAIT = 20


class Signals(unittest.TestCase):
    """SIGHUP reopens --log-file, SIGUSR1 logs a status line, SIGUSR2 is
    logged and ignored: the daemon stays up through all three. Before, each
    of them killed both daemons silently (exit 129/138/140, sockets left on
    disk). Every signal that ends a daemon is logged and its sockets removed."""

    def make_shim(self, tag, **kw):
        d = harness.tempdir(tag)
        log = os.path.join(d, "shim.log")
        listen = os.path.join(d, "usbmuxd")
        shim = harness.Shim(listen, "unix:" + os.path.join(d, "nothing"), "--log-file", log,
                            **kw).start()
        return shim, listen, log

    def make_helper(self, tag, **kw):
        d = harness.tempdir(tag)
        log = os.path.join(d, "helper.log")
        helper = Helper("unix:" + os.path.join(d, "nothing"), "--log-file", log, **kw).start()
        return helper, log

    def check_stays_up(self, proc, log, serving):
        for sig, line in ((signal.SIGUSR1, "SIGUSR1: status"),
                          (signal.SIGUSR2, "SIGUSR2: ignored")):
            proc.send_signal(sig)
            harness.wait_for(lambda: line in file_text(log), WAIT, what=line)
            self.assertTrue(proc.alive(), "%s ended the daemon" % sig.name)
        # logrotate: rename, then HUP; new lines go to a new file of the old name.
        os.rename(log, log + ".1")
        proc.send_signal(signal.SIGHUP)
        harness.wait_for(lambda: "SIGHUP: reopened the log file %s" % log in file_text(log),
                         WAIT, what="the reopened log file")
        self.assertTrue(proc.alive(), "SIGHUP ended the daemon")
        self.assertNotIn("SIGHUP", file_text(log + ".1"))
        proc.send_signal(signal.SIGUSR1)
        harness.wait_for(lambda: file_text(log).count("SIGUSR1: status") == 1, WAIT,
                         what="a line in the new file")
        self.assertEqual(file_text(log + ".1").count("SIGUSR1: status"), 1)
        self.assertTrue(serving())

    def test_shim_hup_usr1_usr2_keep_it_up(self):
        shim, listen, log = self.make_shim("sig")
        self.check_stays_up(shim, log, lambda: harness.unix_accepts(listen))
        self.assertIn("sessions", file_text(log).split("SIGUSR1: status")[-1])  # the status line
        self.assertEqual(shim.stop(), 0)

    def test_helper_hup_usr1_usr2_keep_it_up(self):
        helper, log = self.make_helper("sig")
        self.check_stays_up(helper, log, lambda: harness.tcp_accepts("127.0.0.1", helper.port))
        self.assertIn("stats: 0 tunnels open", file_text(log))
        self.assertEqual(helper.stop(), 0)

    def test_hup_without_log_file_is_logged_and_harmless(self):
        d = harness.tempdir("sig")
        listen = os.path.join(d, "usbmuxd")
        shim = harness.Shim(listen, "unix:" + os.path.join(d, "nothing")).start()
        shim.send_signal(signal.SIGHUP)
        harness.wait_for(lambda: "no log file to reopen" in shim.stderr_text(), WAIT,
                         what="the SIGHUP line")
        self.assertTrue(shim.alive())
        self.assertEqual(shim.stop(), 0)

    def test_stop_signals_log_and_remove_sockets(self):
        for sig in STOP_SIGNALS:
            with self.subTest(signal=sig.name):
                # Not under valgrind: it would judge each of these exits.
                shim, listen, log = self.make_shim("sigstop", valgrind=False)
                shim.send_signal(sig)
                self.assertEqual(shim.wait(WAIT), 0)
                self.assertIn("signal %d: shutting down" % sig, file_text(log))
                self.assertFalse(os.path.exists(listen))
                self.assertFalse(os.path.exists(listen + ".ctl"))
                helper, hlog = self.make_helper("sigstop", valgrind=False)
                helper.send_signal(sig)
                self.assertEqual(helper.wait(WAIT), 0)
                self.assertIn("signal %d: shutting down" % sig, file_text(hlog))
                self.assertFalse(harness.tcp_accepts("127.0.0.1", helper.port))


# A client that names itself (prctl PR_SET_NAME, what /proc/PID/comm shows),
# connects to the shim and waits for it to close the session.
NAMED_CLIENT = r"""
import ctypes, socket, sys
name = bytes.fromhex(sys.argv[2])
if ctypes.CDLL(None, use_errno=True).prctl(15, ctypes.c_char_p(name), 0, 0, 0) != 0:
    sys.exit("prctl failed")
s = socket.socket(socket.AF_UNIX)
s.settimeout(20)
s.connect(sys.argv[1])
s.recv(1)
"""

# The names: terminal escape and quote; bytes that are not UTF-8 and a C1
# control (CSI) encoded in UTF-8; a backslash, newline and tab.
NAMES = {b'\x1b[31mEVIL"': '\\x1b[31mEVIL"',
         b'\xff\xfebad\xc2\x9b': '\\xff\\xfebad\\xc2\\x9b',
         b'a\\b\nc\td': 'a\\b\\x0ac\\x09d'}

# One sample line of the text exposition format: name, optional labels whose
# values escape exactly backslash, double quote and newline, a value.
PROM_LINE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*'
                       r'(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
                       r'(,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")*\})? [-+0-9.eEInfNa]+$')


def prom_unescape(v):
    return re.sub(r'\\(.)', lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), v)


class UntrustedNames(unittest.TestCase):
    """Process names are chosen by the processes. Before, a client named
    '\x1b[31mEVIL"' put raw escape bytes into the `muxshim stats` table and
    the log, and /metrics wrote \u001b escapes the Prometheus text format
    does not define."""

    def test_names_escaped_in_table_json_metrics_and_log(self):
        d = harness.tempdir("names")
        path = os.path.join(d, "usbmuxd")
        port = harness.free_tcp_port()
        # The upstream does not exist: each client is closed at once, after
        # being counted; --warn-rate 0.01 makes the first session a "busy
        # client" line in the log, with the name.
        shim = harness.Shim(path, "unix:" + os.path.join(d, "nothing"), "--metrics",
                            "127.0.0.1:%d" % port, "--warn-rate", "0.01").start()
        for raw in NAMES:
            subprocess.run(["/usr/bin/python3", "-c", NAMED_CLIENT, path, raw.hex()], check=True,
                           timeout=30)
        for shown in NAMES.values():
            harness.wait_for(lambda: shown in shim.stderr_text(), WAIT, what="the busy-client line")

        table = subprocess.run([harness.shim_binary(), "stats", "--listen", path],
                               capture_output=True, timeout=20, check=True).stdout
        text = table.decode("utf-8")  # valid UTF-8
        self.assertFalse(re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]", text), table)
        for shown in NAMES.values():
            self.assertIn(shown, text)

        out = subprocess.run([harness.shim_binary(), "stats", "--json", "--listen", path],
                             capture_output=True, timeout=20, check=True).stdout
        comms = {p["comm"] for p in json.loads(out.decode("utf-8"))["processes"]}
        self.assertTrue(set(NAMES.values()) <= comms, comms)

        body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=20).read()
        labels = set()
        for line in body.decode("utf-8").splitlines():
            if line.startswith("#"):
                continue
            self.assertRegex(line, PROM_LINE)
            self.assertFalse(re.search(r"[\x00-\x1f\x7f-\x9f]", line), line)
            labels.update(prom_unescape(v) for v in re.findall(r'comm="((?:[^"\\]|\\.)*)"', line))
        self.assertTrue(set(NAMES.values()) <= labels, labels)

        with open(shim.err_path, "rb") as f:
            log = f.read()
        self.assertNotIn(b"\x1b", log)
        self.assertNotIn(b"\xff", log)
        for line in log.decode("utf-8").splitlines():
            self.assertFalse(re.search(r"[\x00-\x1f\x7f-\x9f]", line), line)
        self.assertEqual(shim.stop(), 0)


class DeafListener:
    """A TCP port on 127.0.0.1 that never answers a SYN: a listener with
    backlog 0 whose one-entry accept queue is filled by a connection nobody
    accepts. Linux then drops further SYNs (whatever tcp_syncookies says, that
    is for the SYN queue), so a connect sits in SYN-SENT for the kernel's
    retries (about 130 s with tcp_syn_retries 6) unless the caller bounds it."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.filler = socket.create_connection(("127.0.0.1", self.port), timeout=20)
        # The queue is full once a further SYN goes unanswered.
        probe = socket.socket()
        probe.setblocking(False)
        self.assert_silent(probe)

    def assert_silent(self, probe):
        probe.connect_ex(("127.0.0.1", self.port))
        try:
            import select
            _, w, _ = select.select([], [probe], [], 1.0)
            if w:
                raise AssertionError("the deaf listener answered a SYN: accept queue not full")
        finally:
            probe.close()

    def close(self):
        self.filler.close()
        self.sock.close()


def eof_within(s, seconds):
    """True if the peer closed s within seconds (EOF or reset)."""
    s.settimeout(seconds)
    try:
        while s.recv(4096):
            pass
        return True
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True


# The daemons give up after --connect-timeout 300 ms; without the bound the
# client waits for the kernel's SYN retries (~130 s). 60 s: generous by two
# orders of magnitude over the bound, and still half the unbounded wait.
CLOSE_BOUND = 60


class TcpUpstreamConnectTimeout(unittest.TestCase):
    """tcp: upstreams (the helper's toward Windows' usbmuxd, the shim's legacy
    one) bound a connect that gets no answer by --connect-timeout (issue 11,
    6b: a client once waited 134.7 s)."""

    def setUp(self):
        self.deaf = DeafListener()
        self.addCleanup(self.deaf.close)

    def tearDown(self):
        harness.cleanup_all()

    def client_closed(self, path):
        c = socket.socket(socket.AF_UNIX)
        c.settimeout(20)
        c.connect(path)
        c.sendall(plist_msg({"MessageType": "ListDevices"}))
        try:
            return eof_within(c, CLOSE_BOUND)
        finally:
            c.close()

    def test_helper_tcp_upstream(self):
        helper = Helper("tcp:127.0.0.1:%d" % self.deaf.port, "--connect-timeout", "300").start()
        d = harness.tempdir("ctimeout")
        path = os.path.join(d, "usbmuxd")
        # --request-timeout 0: only the connect bound may close the client.
        shim = harness.Shim(path, helper.tunnel, "--tunnel-wait", "20000",
                            "--request-timeout", "0").start()
        harness.wait_for(lambda: "tunnel #1: up" in helper.stderr_text(), WAIT,
                         what="the tunnel")
        self.assertTrue(self.client_closed(path), "the client was not closed")
        self.assertIn("no answer within 300 ms (--connect-timeout)", helper.stderr_text())
        self.assertTrue(helper.alive() and shim.alive())

    def test_shim_legacy_tcp_upstream(self):
        d = harness.tempdir("ctimeout")
        path = os.path.join(d, "usbmuxd")
        # --request-timeout 0: the shim does not read a client before its
        # upstream is connected, so the request clock would otherwise close
        # it after 10 s whatever the connect does.
        shim = harness.Shim(path, "tcp:127.0.0.1:%d" % self.deaf.port,
                            "--connect-timeout", "300", "--request-timeout", "0").start()
        self.assertTrue(self.client_closed(path), "the client was not closed")
        harness.wait_for(lambda: "no answer within 300 ms (--connect-timeout)" in
                         shim.stderr_text(), WAIT, what="the warning")
        self.assertTrue(shim.alive())


if __name__ == "__main__":
    unittest.main()
