"""muxshim-run (the ENTRYPOINT wrapper) and `muxshim health`, on the host.

The wrapper is not PID 1 here; it is a child subreaper, which is what makes
orphans come to it. tests/integration/test_docker.py repeats the essentials
with the wrapper as PID 1 of a real container."""
import os
import signal
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tunnel_util import Helper, harness  # noqa: E402

RUN = os.environ.get("MUXSHIM_RUN_BIN", os.path.join(harness.BUILD, "muxshim-run"))
SHIM = os.environ.get("MUXSHIM_BIN", os.path.join(harness.BUILD, "muxshim"))

SIGNALS = ["TERM", "INT", "HUP", "QUIT", "USR1", "USR2", "WINCH"]

# Logs every forwarded signal; TERM (the last one sent) ends it with status 7.
TRAP_SCRIPT = "".join("trap 'echo got %s' %s; " % (s, s) for s in SIGNALS[1:]) + \
    "trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 1 & wait $!; done"


def wait_text(proc, pattern, timeout=20, where="stdout"):
    read = proc.stdout_text if where == "stdout" else proc.stderr_text
    return harness.wait_for(lambda: pattern in read(), timeout, show=(proc,),
                            what="%r in %s of %s" % (pattern, where, proc.name))


def signal_state(pid):
    """pid and its descendants: name, state and signal masks (what a lost
    signal's report needs)."""
    lines, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        todo += harness._children(p)
        try:
            with open("/proc/%d/status" % p) as f:
                st = dict(l.split(":", 1) for l in f if ":" in l)
            lines.append("%d %s %s pending %s shared %s blocked %s caught %s" % (
                p, st["Name"].strip(), st["State"].strip(), st["SigPnd"].strip(),
                st["ShdPnd"].strip(), st["SigBlk"].strip(), st["SigCgt"].strip()))
        except (OSError, KeyError):
            lines.append("%d gone" % p)
    return "\n".join(lines)


def children_named(pid, comm):
    return [k for k in harness._children(pid) if harness._comm(k) == comm]


class Wrapper(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.require_binary(RUN, "run `make`")
        cls.d = harness.tempdir("run")
        cls.fake = harness.FakeDev(os.path.join(cls.d, "up.sock"), 2).start()

    @classmethod
    def tearDownClass(cls):
        harness.cleanup_all()

    def setUp(self):
        self.sock = os.path.join(self.d, "usbmuxd-%s" % self._testMethodName[-20:])

    def tearDown(self):
        for p in list(harness._live):
            if isinstance(p, harness.Proc) and p.name.startswith("muxshim-run"):
                p.kill()

    def argv(self, *cmd, extra=()):
        return [RUN, "--shim", SHIM, "--listen", self.sock, "--upstream",
                "unix:" + self.fake.socket] + list(extra) + ["--"] + list(cmd)

    def run_wrapper(self, *cmd, extra=(), env=None, timeout=30):
        e = dict(os.environ)
        e.update(env or {})
        return subprocess.run(self.argv(*cmd, extra=extra), capture_output=True, text=True,
                              timeout=timeout, env=e)

    def start_wrapper(self, *cmd, extra=(), ready_line=None):
        return harness.Proc(self.argv(*cmd, extra=extra), name="muxshim-run",
                            ready_line=ready_line, ready_timeout=20).start()

    def test_real_client_runs_after_the_socket_accepts(self):
        r = self.run_wrapper("idevice_id", "-l",
                             env={"USBMUXD_SOCKET_ADDRESS": "UNIX:" + self.sock})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.split(), ["fakedev-0001", "fakedev-0002"])
        # muxshim was started first and stopped after the command
        self.assertIn("accepting on %s; running idevice_id" % self.sock, r.stderr)
        self.assertIn("idevice_id exited with status 0; stopping muxshim", r.stderr)
        self.assertIn("signal 15: shutting down", r.stderr)
        self.assertFalse(os.path.exists(self.sock), "muxshim left its socket behind")

    def test_exit_status_is_the_commands(self):
        self.assertEqual(self.run_wrapper("sh", "-c", "exit 3").returncode, 3)
        self.assertEqual(self.run_wrapper("true").returncode, 0)
        self.assertEqual(self.run_wrapper("sh", "-c", "kill -KILL $$").returncode, 128 + 9)
        self.assertEqual(self.run_wrapper("sh", "-c", "kill -TERM $$").returncode, 128 + 15)
        r = self.run_wrapper("no-such-command-here")
        self.assertEqual(r.returncode, 127, r.stderr)
        self.assertIn("cannot run no-such-command-here", r.stderr)
        noexec = os.path.join(self.d, "not-executable")
        open(noexec, "w").close()
        self.assertEqual(self.run_wrapper(noexec).returncode, 126)

    def test_usage_errors(self):
        for argv in ([RUN], [RUN, "--upstream", "unix:/x"], [RUN, "--"],
                     [RUN, "--on-shim-exit", "maybe", "--", "true"],
                     [RUN, "--ready-timeout", "0", "--", "true"], [RUN, "--shim"]):
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            self.assertEqual(r.returncode, 2, (argv, r.stderr))
            self.assertIn("Try 'muxshim-run --help'", r.stderr)
        r = subprocess.run([RUN, "--help"], capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 0)
        self.assertIn("--on-shim-exit", r.stdout)

    def test_signals_are_forwarded_to_the_command_only(self):
        # A signal ignored when a shell starts cannot be trapped (POSIX), and
        # muxshim-run's command inherits what the wrapper inherited, as exec
        # does: under `nohup make check` the trap on HUP would not be set.
        # The command here starts with every forwarded signal at its default.
        saved = {s: signal.signal(getattr(signal, "SIG" + s), signal.SIG_DFL)
                 for s in SIGNALS[1:]}
        try:
            w = self.start_wrapper("sh", "-c", TRAP_SCRIPT, ready_line=r"^ready")
        finally:
            for s, h in saved.items():
                signal.signal(getattr(signal, "SIG" + s), h)
        shims = children_named(w.pid, "muxshim")
        self.assertEqual(len(shims), 1, harness._children(w.pid))
        for name in SIGNALS[1:]:
            w.send_signal(getattr(signal, "SIG" + name))
            try:
                wait_text(w, "got %s\n" % name)
            except harness.HarnessError as e:
                raise AssertionError("%s\n%s" % (e, signal_state(w.pid))) from None
        self.assertEqual(children_named(w.pid, "muxshim"), shims, "muxshim was disturbed")
        w.send_signal(signal.SIGTERM)
        self.assertEqual(w.wait(20), 7)
        got = [l.split()[1] for l in w.stdout_text().splitlines() if l.startswith("got ")]
        self.assertEqual(got, SIGNALS[1:] + ["TERM"])
        self.assertNotIn("restarting", w.stderr_text())
        self.assertFalse(harness._pid_alive(shims[0]), "muxshim still running")

    def test_orphans_are_reaped(self):
        # The orphan's parent has exited (it is reparented) by the time the
        # inner sh returns; it lives until killed, then must be reaped: its
        # /proc entry goes away (bounded at 30 s: reaping takes milliseconds).
        script = ("sh -c 'sleep 600 & echo $! > %s/orphan'; P=$(cat %s/orphan); "
                  "grep PPid /proc/$P/status; kill $P; i=0; "
                  "while [ -e /proc/$P ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; "
                  "if [ -e /proc/$P ]; then echo left $(grep State /proc/$P/status); "
                  "else echo reaped; fi" % ((self.d,) * 2))
        w = self.start_wrapper("sh", "-c", script)
        self.assertEqual(w.wait(60), 0, w.log_tail())
        out = w.stdout_text().split("\n")
        self.assertEqual(out[0].split(), ["PPid:", str(w.pid)], "orphan not handed to the wrapper")
        self.assertEqual(out[1], "reaped", w.log_tail())

    def test_dead_shim_is_restarted_with_a_log_line(self):
        w = self.start_wrapper("sleep", "60", ready_line=None)
        wait_text(w, "running sleep", where="stderr")
        old = children_named(w.pid, "muxshim")
        self.assertEqual(len(old), 1)
        os.kill(old[0], signal.SIGKILL)
        wait_text(w, "muxshim was killed by SIGKILL while sleep was running", where="stderr")
        wait_text(w, "accepting again on %s" % self.sock, where="stderr")
        new = children_named(w.pid, "muxshim")
        self.assertEqual(len(new), 1)
        self.assertNotEqual(new, old)
        r = harness.run_client(["idevice_id", "-l"], self.sock)
        self.assertEqual(r[0], 0, r)
        self.assertEqual(r[1].split(), ["fakedev-0001", "fakedev-0002"])
        # a second quick death waits (backoff) but comes back too
        os.kill(new[0], signal.SIGKILL)
        wait_text(w, "restarting it in 250 ms (restart #2)", where="stderr")
        harness.wait_for(lambda: len(children_named(w.pid, "muxshim")) == 1 and
                         harness.unix_accepts(self.sock), 20, what="second restart")
        w.send_signal(signal.SIGTERM)
        self.assertEqual(w.wait(20), 128 + 15)

    def test_on_shim_exit_exit(self):
        w = self.start_wrapper("sleep", "60", extra=["--on-shim-exit", "exit"])
        wait_text(w, "running sleep", where="stderr")
        shim = children_named(w.pid, "muxshim")[0]
        # "running sleep" is logged at fork; the exec may still be on its way.
        harness.wait_for(lambda: children_named(w.pid, "sleep"), 20, what="sleep to start")
        sleeper = children_named(w.pid, "sleep")[0]
        os.kill(shim, signal.SIGKILL)
        self.assertEqual(w.wait(20), 125)
        self.assertFalse(harness._pid_alive(sleeper))
        self.assertIn("stopping sleep (--on-shim-exit exit)", w.stderr_text())

    def test_shim_that_cannot_start_means_no_command(self):
        marker = os.path.join(self.d, "ran")
        r = subprocess.run([RUN, "--shim", SHIM, "--listen", "/nonexistent/dir/usbmuxd", "--",
                            "touch", marker], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 125, r.stderr)
        self.assertIn("before it accepted on /nonexistent/dir/usbmuxd; not running touch",
                      r.stderr)
        self.assertFalse(os.path.exists(marker))

    def test_someone_elses_listener_does_not_count(self):
        # A live listener on the path: muxshim refuses to take it over and
        # exits; the wrapper must not mistake that listener for its muxshim.
        other = socket.socket(socket.AF_UNIX)
        other.bind(self.sock)
        other.listen(16)
        try:
            r = self.run_wrapper("true")
        finally:
            other.close()
            os.unlink(self.sock)
        self.assertEqual(r.returncode, 125, r.stderr)
        self.assertIn("is in use", r.stderr)

    def test_ready_timeout(self):
        never = os.path.join(self.d, "never-listens")
        with open(never, "w") as f:
            f.write("#!/bin/sh\nexec sleep 60\n")
        os.chmod(never, 0o755)
        t0 = time.monotonic()
        r = subprocess.run([RUN, "--shim", never, "--ready-timeout", "500", "--listen",
                            self.sock, "--", "true"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 125, r.stderr)
        self.assertIn("did not accept on %s within 500 ms" % self.sock, r.stderr)
        self.assertLess(time.monotonic() - t0, 40)   # the fake shim would hang for 60 s

    def test_sigterm_before_the_command_started(self):
        never = os.path.join(self.d, "slow-shim")
        with open(never, "w") as f:
            f.write("#!/bin/sh\nexec sleep 60\n")
        os.chmod(never, 0o755)
        w = harness.Proc([RUN, "--shim", never, "--listen", self.sock, "--", "true"],
                         name="muxshim-run-early").start()
        harness.wait_for(lambda: children_named(w.pid, "sleep"), 10, what="fake shim")
        fake = children_named(w.pid, "sleep")[0]
        w.send_signal(signal.SIGTERM)
        self.assertEqual(w.wait(20), 128 + 15)
        self.assertFalse(harness._pid_alive(fake))


class Health(unittest.TestCase):
    """`muxshim health`: the daemon's own verdict over its control socket."""

    def tearDown(self):
        harness.cleanup_all()

    def health(self, listen, *opts):
        r = subprocess.run([SHIM, "health", "--listen", listen] + list(opts), capture_output=True,
                           text=True, timeout=20)
        return r.returncode, r.stdout + r.stderr

    def test_unix_upstream(self):
        d = harness.tempdir("health")
        mux = harness.PrivateUsbmuxd(os.path.join(d, "mux"))   # not started yet
        listen = os.path.join(d, "usbmuxd")
        harness.Shim(listen, mux.socket).start()
        rc, out = self.health(listen)
        self.assertEqual(rc, 1, out)
        self.assertIn("fail: serving %s, upstream unix:%s: no socket" % (listen, mux.socket), out)
        # --live: the daemon and its socket only (for orchestrators that restart on failure)
        self.assertEqual(self.health(listen, "--live"), (0, "ok: serving %s\n" % listen))
        mux.start()
        rc, out = self.health(listen)
        self.assertEqual(rc, 0, out)
        self.assertIn("ok: serving %s, upstream unix:%s accepts connections" % (listen, mux.socket),
                      out)
        mux.stop()                      # leaves its dead socket file: connection refused
        rc, out = self.health(listen)
        self.assertEqual(rc, 1, out)
        self.assertIn("refused", out)
        mux.start()
        self.assertEqual(self.health(listen)[0], 0)
        os.unlink(listen)               # our socket gone: clients cannot reach us
        rc, out = self.health(listen)
        self.assertEqual(rc, 1, out)
        self.assertIn("is no longer this daemon's socket", out)
        self.assertEqual(self.health(listen, "--live")[0], 1)

    def test_tunnel_upstream(self):
        d = harness.tempdir("health")
        fake = harness.FakeDev(os.path.join(d, "fake.sock")).start()
        helper = Helper("unix:" + fake.socket).start()
        listen = os.path.join(d, "usbmuxd")
        harness.Shim(listen, helper.tunnel).start()
        harness.wait_for(lambda: self.health(listen)[0] == 0, 20, what="tunnel up")
        self.assertIn("tunnel up", self.health(listen)[1])
        helper.stop()
        harness.wait_for(lambda: self.health(listen)[0] == 1, 20, what="tunnel down")
        self.assertIn("the tunnel is down", self.health(listen)[1])
        helper.start()
        harness.wait_for(lambda: self.health(listen)[0] == 0, 30, what="tunnel up again")

    def test_no_daemon(self):
        rc, out = self.health("/nonexistent/usbmuxd")
        self.assertEqual(rc, 1)
        self.assertIn("cannot reach the daemon at /nonexistent/usbmuxd.ctl", out)
        r = subprocess.run([SHIM, "health", "--bogus"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)


if __name__ == "__main__":
    unittest.main()
