"""Test harness for muxshim integration tests and benchmarks (Python stdlib only).

Import convention: every tests/integration/test_*.py starts with

    import os, sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
    import harness

and the suites run from the repo root with

    python3 -m unittest discover -s tests/integration -t . -v

(tests/integration/__init__.py exists only because discover with -t . needs
the start directory to be importable.)

What is here
  ROOT, BUILD, TOOLS            repo root, ROOT/build, ROOT/build/tests
  tempdir(), TempDir            /tmp/muxshim-test.XXXX dirs, removed at exit
                                (kept when MUXSHIM_KEEP_TMP=1)
  Proc                          any daemon: log files, readiness, stop, /proc stats
  PrivateUsbmuxd                the real Debian usbmuxd in its own mount namespace
  Shim, FakeDev, DevSvc         build/muxshim and the test doubles in build/tests
  muxconn(...)                  run build/tests/muxconn, return its JSON line as a dict
  TcpRelay                      build/tests/tcprelay: TCP listener in front of a UNIX
                                socket (the stand-in for Apple's usbmuxd on 27015)
  run_client(cmd, socket)       run a real libusbmuxd client against a socket
  Container                     a simulated container (mount+net+pid namespaces)
  cleanup_all()                 stop everything still running (also runs at exit)
  VALGRIND, valgrind_report()   MUXSHIM_VALGRIND=1: both daemons run under
                                valgrind's memcheck; see "valgrind" below

Every process is started in its own session so that its whole process group
can be killed; everything still running is killed at interpreter exit (and on
SIGTERM, which is turned into SystemExit). Namespaced children die with their
namespace: usbmuxd's mount namespace goes away with usbmuxd, and a Container's
pid namespace takes every process inside with it when its init is killed.
"""

import atexit
import contextlib
import errno
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.realpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
BUILD = os.path.join(ROOT, "build")
TOOLS = os.path.join(BUILD, "tests")

# Every daemon the suites start runs in the seccomp sandbox, strict: a call
# outside the allow-list kills it (in production it fails with EPERM), so a
# path that needs a call the list lacks fails its test instead of hiding.
# Under valgrind (below) the production mode is asked for instead, but no
# filter is in force there at all: valgrind 3.19 has no seccomp(2) (ENOSYS;
# strict mode's kill-process action then cannot be confirmed and libseccomp
# fails with ENOMEM) and answers prctl(PR_SET_SECCOMP) with success without
# installing the filter (/proc/PID/status: "Seccomp: 0"), though the daemon
# logs "seccomp sandbox on". The plain and ASan passes test the sandbox.
os.environ.setdefault("MUXSHIM_SECCOMP_STRICT",
                      "0" if os.environ.get("MUXSHIM_VALGRIND") == "1" else "1")
TMP_PREFIX = "muxshim-test."

USBMUXD = shutil.which("usbmuxd", path="/usr/sbin:/usr/bin:/sbin:/bin") or "/usr/sbin/usbmuxd"
LOCKDOWN_MOUNTPOINT = "/var/lib/lockdown"

# Bounds, not expectations: each is an order of magnitude above what the
# thing takes on an idle machine (a daemon is ready, or exits on SIGTERM,
# in well under a second), so that a busy machine, ASan or valgrind never
# fails a correct build. Waiting ends as soon as the condition holds.
DEFAULT_READY_TIMEOUT = 30.0
DEFAULT_STOP_TIMEOUT = 20.0
DEFAULT_CLIENT_TIMEOUT = 60.0
# wait_for() never gives up sooner than this: every condition it is used for
# (a log line, a socket, a counter) comes within a second on an idle machine.
WAIT_MIN_S = 30.0

# --------------------------------------------------------------------------
# valgrind
#
# With MUXSHIM_VALGRIND=1, every muxshim and muxshim-host the harness starts
# (Shim, Container.start_shim, tunnel_util.Helper: the Procs made with
# valgrind=True) runs under memcheck with a leak check at exit. Stopping such
# a daemon (stop(), or cleanup_all() in a tearDown) sends SIGTERM, waits for
# valgrind's report and raises ValgrindError, with the report, unless it says
# "ERROR SUMMARY: 0 errors" and nothing definitely, indirectly or possibly
# lost: the test fails. So does one still running VALGRIND_TIMEOUT after
# SIGTERM. A daemon a test kills with SIGKILL leaves no report and is not
# judged. Start-up is slow under valgrind (~1-2 s), so ready and stop
# timeouts are raised to VALGRIND_TIMEOUT. MUXSHIM_VALGRIND_ARGS (split like
# a shell line) is appended to each such daemon's arguments in this mode,
# for options valgrind needs (e.g. turning a syscall filter off).
# --------------------------------------------------------------------------

VALGRIND = os.environ.get("MUXSHIM_VALGRIND") == "1"
VALGRIND_ARGS = shlex.split(os.environ.get("MUXSHIM_VALGRIND_ARGS", ""))
VALGRIND_TIMEOUT = 60.0
_vg_tally = {"clean": 0, "failed": 0, "unjudged": 0}   # daemon runs, for the summary at exit
VALGRIND_CMD = ["valgrind", "--tool=memcheck", "--leak-check=full",
                "--show-leak-kinds=definite,indirect,possible",
                "--errors-for-leak-kinds=definite,indirect,possible",
                "--error-exitcode=99", "--track-fds=no", "--trace-children=no",
                "--num-callers=30"]


def valgrind_report(log_path):
    """Judges a valgrind log: (complete, problems). complete is False when
    the log has no final summary (the process was killed, or is running);
    problems lists what makes a complete report fail."""
    text = _read(log_path)
    m = re.search(r"ERROR SUMMARY: ([\d,]+) errors", text)
    if not m:
        return False, ["no ERROR SUMMARY in %s" % log_path]
    problems = []
    if m.group(1) != "0":
        problems.append("ERROR SUMMARY: %s errors" % m.group(1))
    if "All heap blocks were freed -- no leaks are possible" not in text:
        if "LEAK SUMMARY:" not in text:
            problems.append("no leak summary")
        for kind in ("definitely lost", "indirectly lost", "possibly lost"):
            lm = re.search(kind + r": ([\d,]+) bytes in ([\d,]+) blocks", text)
            if lm is None:
                problems.append("no '%s' line" % kind)
            elif lm.group(1) != "0":
                problems.append("%s: %s bytes in %s blocks" % (kind, lm.group(1), lm.group(2)))
    return True, problems


class HarnessError(Exception):
    """A helper could not do what it was asked; the message says why."""


class ValgrindError(HarnessError):
    """A daemon's valgrind report was not clean; the message holds it."""


# --------------------------------------------------------------------------
# Cleanup registry
# --------------------------------------------------------------------------

_lock = threading.RLock()
_live = []        # objects with a _cleanup() method, in start order
_tmpdirs = []     # paths to remove at exit


def _register(obj):
    with _lock:
        if obj not in _live:
            _live.append(obj)


def _unregister(obj):
    with _lock:
        if obj in _live:
            _live.remove(obj)


def cleanup_all():
    """Stop everything this module started and still runs (newest first).
    In valgrind mode, raises ValgrindError afterwards if a daemon's valgrind
    report was not clean (so a tearDown that calls this fails the test)."""
    with _lock:
        objs = list(reversed(_live))
    valgrind_failures = []
    for obj in objs:
        try:
            obj._cleanup()
        except ValgrindError as e:
            valgrind_failures.append(str(e))
        except Exception as e:  # cleanup must go on
            print("harness: cleanup of %r failed: %s" % (obj, e), file=sys.stderr)
        _unregister(obj)
    if valgrind_failures:
        raise ValgrindError("\n\n".join(valgrind_failures))


def _mounts_under(path):
    """Mount points of this mount namespace at or below path."""
    path = os.path.realpath(path)
    found = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mp = line.split()[4].replace("\\040", " ")
                if mp == path or mp.startswith(path + "/"):
                    found.append(mp)
    except OSError:
        pass
    return found


def _remove_tree(path):
    # Never recurse into something mounted below the temp dir.
    mounts = _mounts_under(path)
    for mp in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=10)
    if _mounts_under(path):
        print("harness: not removing %s: still has mounts" % path, file=sys.stderr)
        return
    shutil.rmtree(path, ignore_errors=True)


def _atexit():
    failed = False
    try:
        cleanup_all()
    except ValgrindError as e:
        # Daemons no test stopped: no test can fail any more, so the exit
        # status of the whole run does.
        print("harness: at exit: %s" % e, file=sys.stderr)
        failed = True
    if VALGRIND:
        print("harness: valgrind reports: %(clean)d clean, %(failed)d not clean (each failed "
              "its test, or was meant to: test_valgrind makes 3); %(unjudged)d runs killed "
              "without a report" % _vg_tally, file=sys.stderr)
    if os.environ.get("MUXSHIM_KEEP_TMP") == "1":
        for d in _tmpdirs:
            print("harness: kept %s" % d, file=sys.stderr)
    else:
        for d in _tmpdirs:
            _remove_tree(d)
    if failed:
        sys.stderr.flush()
        os._exit(99)


atexit.register(_atexit)

def _on_sigterm(signum, frame):
    # Once: a second SIGTERM (timeout(1) sends two) must not interrupt cleanup.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(128 + signum)


if threading.current_thread() is threading.main_thread():
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _on_sigterm)


def tempdir(tag=None):
    """A new /tmp/muxshim-test.XXXX directory, removed at interpreter exit."""
    d = tempfile.mkdtemp(prefix=TMP_PREFIX + (tag + "." if tag else ""), dir="/tmp")
    with _lock:
        _tmpdirs.append(d)
    return d


class TempDir:
    """with TempDir() as d: ... -- removed on exit from the block."""

    def __init__(self, tag=None):
        self.path = tempfile.mkdtemp(prefix=TMP_PREFIX + (tag + "." if tag else ""), dir="/tmp")

    def __enter__(self):
        return self.path

    def __exit__(self, *exc):
        if os.environ.get("MUXSHIM_KEEP_TMP") != "1":
            _remove_tree(self.path)
        return False


# --------------------------------------------------------------------------
# Small utilities
# --------------------------------------------------------------------------

def write_token(path, mode=0o600):
    """A fresh random tunnel token (64 hex digits: 256 bits, as
    `--gen-token` writes) in path; returns path. The daemons refuse tokens
    under 128 bits."""
    with open(path, "w") as f:
        f.write(os.urandom(32).hex() + "\n")
    os.chmod(path, mode)
    return path


def wait_for(pred, timeout, interval=0.02, what="condition", show=()):
    """Poll pred() until it returns a true value (returned) or raise
    HarnessError after max(timeout, WAIT_MIN_S) seconds. show: processes
    whose log tails the error carries (what the test was waiting to read)."""
    timeout = max(timeout, WAIT_MIN_S)
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            tails = "".join("\n" + p.log_tail() for p in show)
            raise HarnessError("timed out after %.1f s waiting for %s%s" % (timeout, what, tails))
        time.sleep(interval)


# How long a client connection to usbmuxd (or to a daemon in front of it)
# retries a full listen queue (EAGAIN: usbmuxd's is a few connections deep,
# and a timeout on a socket makes Python's connect non-blocking), and a
# refused or missing socket while the daemon restarts. Generous: a restart
# takes ~0.1 s, a full queue drains in milliseconds; 30 s is two orders of
# magnitude above either on a busy machine. The daemons do the same
# (--connect-timeout).
CONNECT_RETRY_S = 30.0
_CONNECT_RETRY_ERRNOS = (errno.EAGAIN, errno.ECONNREFUSED, errno.ENOENT)


def connect_unix(path, timeout=10.0, retry_for=CONNECT_RETRY_S):
    """A stream socket connected to the UNIX socket path, with `timeout` set
    on it. EAGAIN, ECONNREFUSED and ENOENT are retried (backing off from
    5 ms to 100 ms) until retry_for seconds have passed, then raised."""
    deadline = time.monotonic() + retry_for
    delay = 0.005
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(path)
            return s
        except OSError as e:
            s.close()
            if e.errno not in _CONNECT_RETRY_ERRNOS or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def unix_accepts(path, timeout=0.5):
    """True if a UNIX stream socket at path accepts a connection now."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def tcp_accepts(host, port, timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tcp_listening(port):
    """True if some socket of this network namespace listens on TCP port."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        return True
        except (OSError, StopIteration):
            continue
    return False


def free_tcp_port(host="127.0.0.1"):
    """A port that was free a moment ago (for tools that need a fixed number)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _tail(path, lines=40):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError as e:
        return "<%s: %s>" % (path, e)
    return "\n".join(data.splitlines()[-lines:])


def _read(path, offset=0):
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _children(pid):
    """Direct children of pid (host pid numbers)."""
    kids = []
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            kids = [int(x) for x in f.read().split()]
    except OSError:
        pass
    if kids:
        return kids
    # Fallback: scan /proc (slower, always available).
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                st = f.read()
            ppid = int(st[st.rindex(")") + 2:].split()[1])
        except (OSError, ValueError):
            continue
        if ppid == pid:
            kids.append(int(name))
    return kids


def _pid_alive(pid):
    """True if pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
        return st[st.rindex(")") + 2] != "Z"
    except (OSError, ValueError):
        return False


def _comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return None


def _killpg(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill(pid, sig):
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def proc_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def proc_peak_rss_kib(pid):
    """VmHWM: the most RSS pid ever had, so that a transient blow-up that
    was freed again still shows."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def proc_fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def settled_fd_count(proc, steady=1.0, timeout=15):
    """proc's descriptor count once it held still for `steady` seconds: the
    closes of a client's last sessions may still be on their way when the
    client is done (seconds later under valgrind). A leaked descriptor
    stays counted."""
    deadline = time.monotonic() + timeout
    last, since = proc.fd_count(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        n = proc.fd_count()
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since >= steady:
            break
    return last


def rss_unmeasurable():
    """Why a daemon's RSS growth says nothing about its own memory in this
    run (a sentence), or None when it does."""
    if os.environ.get("MUXSHIM_SANITIZED"):
        return "ASan keeps freed memory in quarantine"
    if VALGRIND:
        return "valgrind holds freed blocks back and grows its own tables"
    return None


def assert_rss_bound(test, grown_kib, limit_kib, what="RSS growth"):
    """test.assertLess(grown_kib, limit_kib), except in the sanitizer and
    valgrind passes, which say loudly that they do not check it (the plain
    pass of `make check` does)."""
    why = rss_unmeasurable()
    if why:
        print("  [%s bound of %d KiB NOT checked in this pass: %s; the plain pass checks it]"
              % (what, limit_kib, why), flush=True)
        return
    test.assertLess(grown_kib, limit_kib, what)


# --------------------------------------------------------------------------
# Proc: any daemon
# --------------------------------------------------------------------------

class Proc:
    """A daemon started with stdout/stderr in log files.

    argv            the command
    name            used for log file names (default: basename of argv[0])
    logdir          where NAME.out / NAME.err go (default: a new tempdir())
    env             extra environment variables (added to os.environ)
    ready_socket    a UNIX socket path that must accept a connection
    ready_line      a regex that must match a line of stdout; the match is kept
                    in self.ready_match
    ready_fn        a callable that must return true
    ready_timeout   seconds (default 10)
    valgrind        run it under valgrind when MUXSHIM_VALGRIND=1 (see above)

    start() returns self once ready, or raises HarnessError with the log tail
    (and kills the process). stop() sends SIGTERM to the process, waits,
    SIGKILLs its process group after stop_timeout and returns the exit status
    (negative = killed by that signal, as in subprocess).
    """

    def __init__(self, argv, *, name=None, logdir=None, env=None, cwd=None,
                 ready_socket=None, ready_line=None, ready_fn=None,
                 ready_timeout=DEFAULT_READY_TIMEOUT, stop_timeout=DEFAULT_STOP_TIMEOUT,
                 valgrind=False):
        self.argv = [str(a) for a in argv]
        self.name = name or os.path.basename(self.argv[0])
        self.valgrind = valgrind and VALGRIND
        if self.valgrind:
            self.argv += VALGRIND_ARGS
            ready_timeout = max(ready_timeout, VALGRIND_TIMEOUT)
            stop_timeout = max(stop_timeout, VALGRIND_TIMEOUT)
        self.valgrind_log = None   # this run's valgrind log (valgrind mode)
        self._vg_runs = 0
        self._vg_judged = True
        self._vg_stop_ignored = False
        self.logdir = logdir or tempdir(self.name)
        os.makedirs(self.logdir, exist_ok=True)
        self.out_path = os.path.join(self.logdir, self.name + ".out")
        self.err_path = os.path.join(self.logdir, self.name + ".err")
        self.env = dict(env or {})
        self.cwd = cwd
        self.ready_socket = ready_socket
        self.ready_line = re.compile(ready_line) if isinstance(ready_line, str) else ready_line
        self.ready_fn = ready_fn
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.popen = None
        self.ready_match = None
        self.returncode = None

    def __repr__(self):
        return "<%s %s pid=%s>" % (type(self).__name__, self.name,
                                   self.popen.pid if self.popen else None)

    # -- lifecycle ---------------------------------------------------------

    def _command(self):
        """The argv to run: self.argv, under valgrind in valgrind mode."""
        if not self.valgrind:
            return self.argv
        return self._valgrind_prefix() + self.argv

    def _valgrind_prefix(self):
        self._vg_runs += 1
        self.valgrind_log = os.path.join(self.logdir, "%s.valgrind.%d.log"
                                         % (self.name, self._vg_runs))
        self._vg_judged = False
        self._vg_stop_ignored = False
        return VALGRIND_CMD + ["--log-file=" + self.valgrind_log]

    def check_valgrind(self):
        """Valgrind mode: raise ValgrindError with the report unless this
        run's report is clean. Once per run; nothing to judge without a
        report (killed with SIGKILL) or outside valgrind mode."""
        if not self.valgrind or self._vg_judged or self.valgrind_log is None:
            return
        self._vg_judged = True
        complete, problems = valgrind_report(self.valgrind_log)
        if not complete:
            if self._vg_stop_ignored:
                problems = ["still running %.0f s after SIGTERM: killed, so valgrind wrote no "
                            "report" % VALGRIND_TIMEOUT]
            elif self.returncode is not None and self.returncode >= 0:
                problems = ["the daemon exited (status %d) but valgrind wrote no report"
                            % self.returncode]
            else:
                print("harness: %s: killed (status %s), no valgrind report: %s"
                      % (self.name, self.returncode, self.valgrind_log), file=sys.stderr)
                _vg_tally["unjudged"] += 1
                return
        _vg_tally["failed" if problems else "clean"] += 1
        if problems:
            raise ValgrindError("valgrind: %s (pid %s): %s\n--- %s ---\n%s"
                               % (self.name, self.pid, "; ".join(problems), self.valgrind_log,
                                  _tail(self.valgrind_log, 200)))

    def start(self):
        if self.popen is not None and self.popen.poll() is None:
            raise HarnessError("%s already running" % self.name)
        self.check_valgrind()   # the previous run's, if it ended on its own
        env = dict(os.environ)
        env.update(self.env)
        self.returncode = None
        self.ready_match = None
        with open(self.out_path, "ab") as out, open(self.err_path, "ab") as err:
            self._out_offset = out.tell()
            try:
                self.popen = subprocess.Popen(self._command(), stdin=subprocess.DEVNULL, stdout=out,
                                              stderr=err, env=env, cwd=self.cwd,
                                              start_new_session=True)
            except OSError as e:
                raise HarnessError("cannot start %s: %s" % (self.argv[0], e)) from e
        _register(self)
        try:
            self.wait_ready()
        except BaseException:
            self._hard_kill()
            raise
        return self

    def _ready_now(self):
        if self.ready_socket is not None and not unix_accepts(self._socket_path_for_check()):
            return False
        if self.ready_line is not None:
            for line in _read(self.out_path, self._out_offset).splitlines():
                m = self.ready_line.search(line)
                if m:
                    self.ready_match = m
                    break
            else:
                return False
        if self.ready_fn is not None and not self.ready_fn():
            return False
        return True

    def _socket_path_for_check(self):
        return self.ready_socket

    def wait_ready(self, timeout=None):
        timeout = self.ready_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            if self._ready_now():
                return self
            rc = self.popen.poll()
            if rc is not None:
                self.returncode = rc
                raise HarnessError("%s exited with status %s before it was ready\n%s"
                                   % (self.name, rc, self.log_tail()))
            if time.monotonic() >= deadline:
                raise HarnessError("%s not ready after %.1f s (%s)\n%s"
                                   % (self.name, timeout, self._ready_desc(), self.log_tail()))
            time.sleep(0.02)

    def _ready_desc(self):
        parts = []
        if self.ready_socket:
            parts.append("socket %s accepting" % self.ready_socket)
        if self.ready_line:
            parts.append("stdout line /%s/" % self.ready_line.pattern)
        if self.ready_fn:
            parts.append("%s()" % getattr(self.ready_fn, "__name__", "ready_fn"))
        return ", ".join(parts) or "nothing"

    @property
    def pid(self):
        """The pid to signal and to measure (the daemon itself)."""
        return self.popen.pid if self.popen else None

    def alive(self):
        return self.popen is not None and self.popen.poll() is None and _pid_alive(self.pid)

    def send_signal(self, sig):
        if self.alive():
            _kill(self.pid, sig)

    def wait(self, timeout=None):
        """Wait for exit; returns the status or raises subprocess.TimeoutExpired."""
        self.returncode = self.popen.wait(timeout)
        return self.returncode

    def stop(self, timeout=None, sig=signal.SIGTERM):
        """Signal, wait up to timeout, then SIGKILL the group. Returns the status."""
        if self.popen is None:
            return None
        timeout = self.stop_timeout if timeout is None else timeout
        if self.valgrind:
            timeout = max(timeout, VALGRIND_TIMEOUT)   # the leak check takes a while
        if self.popen.poll() is None:
            _kill(self.pid, sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                print("harness: %s ignored signal %d for %.1f s, killing" % (self.name, sig, timeout),
                      file=sys.stderr)
                self._vg_stop_ignored = sig == signal.SIGTERM
        self._hard_kill()
        self.check_valgrind()
        return self.returncode

    def kill(self):
        """SIGKILL now (the process, then its whole group); returns the status."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            _kill(self.pid, signal.SIGKILL)
        self._hard_kill()
        return self.returncode

    def _hard_kill(self):
        if self.popen is None:
            return
        _killpg(self.popen.pid, signal.SIGKILL)   # stragglers in its session
        try:
            self.returncode = self.popen.wait(10)
        except subprocess.TimeoutExpired:
            raise HarnessError("%s (pid %d) survived SIGKILL" % (self.name, self.popen.pid))
        _unregister(self)

    def _cleanup(self):
        if self.valgrind and self.popen is not None:
            self.stop()   # SIGTERM, so that valgrind reports; raises if it is not clean
        else:
            self._hard_kill()

    def __enter__(self):
        if self.popen is None:
            self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    # -- inspection --------------------------------------------------------

    def rss_kib(self):
        return proc_rss_kib(self.pid)

    def fd_count(self):
        return proc_fd_count(self.pid)

    def stdout_text(self):
        return _read(self.out_path)

    def stderr_text(self):
        return _read(self.err_path)

    def log_tail(self, lines=40):
        return "--- %s stdout (%s) ---\n%s\n--- %s stderr (%s) ---\n%s" % (
            self.name, self.out_path, _tail(self.out_path, lines),
            self.name, self.err_path, _tail(self.err_path, lines))


# --------------------------------------------------------------------------
# The real usbmuxd, privately
# --------------------------------------------------------------------------

class PrivateUsbmuxd:
    """Debian's usbmuxd with a private /run and /var/lib/lockdown.

    usbmuxd hard-codes /var/run/usbmuxd (socket) and /var/run/usbmuxd.pid (an
    fcntl-locked pid file); here both land in DIR/run. Its pairing records
    and SystemConfiguration.plist (BUID) land in DIR/lockdown, so the BUID is
    stable across restart() but differs between instances.

        with PrivateUsbmuxd() as mux:
            run_client(["idevice_id", "-l"], mux.socket)

    Attributes: dir, run_dir, lockdown_dir, socket, pid_file, log_path, pid.
    The process is `unshare` exec'ing `sh` exec'ing usbmuxd, so pid is
    usbmuxd's own (start() checks /proc/PID/comm). Its mount namespace dies
    with it: nothing stays mounted on the host.
    """

    def __init__(self, dir=None, *, verbose=2, start_timeout=DEFAULT_READY_TIMEOUT,
                 stop_timeout=DEFAULT_STOP_TIMEOUT):
        self.dir = dir or tempdir("usbmuxd")
        self.run_dir = os.path.join(self.dir, "run")
        self.lockdown_dir = os.path.join(self.dir, "lockdown")
        self.socket = os.path.join(self.run_dir, "usbmuxd")
        self.pid_file = os.path.join(self.run_dir, "usbmuxd.pid")
        self.log_path = os.path.join(self.dir, "usbmuxd.log")
        self.verbose = verbose
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.popen = None
        self.returncode = None
        self.starts = 0
        for d in (self.run_dir, self.lockdown_dir):
            os.makedirs(d, exist_ok=True)

    def __repr__(self):
        return "<PrivateUsbmuxd %s pid=%s>" % (self.dir, self.pid)

    @property
    def pid(self):
        return self.popen.pid if self.popen else None

    @property
    def address(self):
        """The value for USBMUXD_SOCKET_ADDRESS."""
        return "UNIX:" + self.socket

    def _command(self):
        # set -e: if a bind mount failed, usbmuxd must not start on the real /run.
        vflags = " -v" * max(0, self.verbose - 1)   # -f already implies one -v
        script = ("set -e; mount --bind %s /run; mount --bind %s %s; exec %s -f -U root%s"
                  % (shlex.quote(self.run_dir), shlex.quote(self.lockdown_dir),
                     LOCKDOWN_MOUNTPOINT, shlex.quote(USBMUXD), vflags))
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]

    def start(self):
        if self.alive():
            raise HarnessError("usbmuxd already running (pid %d)" % self.pid)
        if not os.path.exists(USBMUXD):
            raise HarnessError("%s not installed (apt-get install usbmuxd)" % USBMUXD)
        os.makedirs(LOCKDOWN_MOUNTPOINT, exist_ok=True)   # only a mount point
        # usbmuxd's single-instance check is an fcntl lock on its pid file. A
        # stale pid file (after SIGTERM or SIGKILL) does not stop a new start,
        # but unlinking a *locked* one would let a second instance start,
        # unlink the first one's socket and orphan it: so check the lock first.
        holder = self._pid_file_holder()
        if holder is not None:
            raise HarnessError("another usbmuxd (pid %s) holds %s" % (holder, self.pid_file))
        if unix_accepts(self.socket):
            raise HarnessError("something already serves %s" % self.socket)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.pid_file)
        self.returncode = None
        with open(self.log_path, "ab") as log:
            log.write(b"=== harness: start #%d ===\n" % (self.starts + 1))
            log.flush()
            self._log_offset = log.tell()
            self.popen = subprocess.Popen(self._command(), stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=log, start_new_session=True)
        self.starts += 1
        _register(self)
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_ready(self):
        deadline = time.monotonic() + self.start_timeout
        while True:
            rc = self.popen.poll()
            if rc is not None:
                self.returncode = rc
                raise HarnessError("usbmuxd exited with status %d during start-up\n%s"
                                   % (rc, self.log_tail()))
            # The socket file may be a stale one from a previous run, so only
            # a successful connect counts, and only once usbmuxd has taken its
            # lock and written its own pid (a second instance exits instead).
            if (_comm(self.pid) == "usbmuxd" and self._pid_file_pid() == self.pid
                    and unix_accepts(self.socket)):
                return
            if time.monotonic() >= deadline:
                raise HarnessError("usbmuxd socket %s not accepting after %.1f s (comm=%s)\n%s"
                                   % (self.socket, self.start_timeout, _comm(self.pid),
                                      self.log_tail()))
            time.sleep(0.01)

    def _pid_file_holder(self):
        """The pid in the pid file if a live process holds its lock, else None."""
        try:
            fd = os.open(self.pid_file, os.O_WRONLY)
        except OSError:
            return None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return None          # nobody holds it (closing the fd releases ours)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES):
                return self._pid_file_pid() or "?"
            return None
        finally:
            os.close(fd)

    def _pid_file_pid(self):
        try:
            with open(self.pid_file) as f:
                return int(f.read().strip() or 0)
        except (OSError, ValueError):
            return None

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout=None):
        """SIGTERM, wait (usbmuxd takes ~0.1 s), SIGKILL fallback. Returns the status.

        Like the real daemon, leaves the dead socket file behind (connect ->
        ECONNREFUSED); the pid file is removed."""
        if self.popen is None:
            return None
        timeout = self.stop_timeout if timeout is None else timeout
        if self.popen.poll() is None:
            _kill(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                print("harness: usbmuxd ignored SIGTERM for %.1f s, killing" % timeout,
                      file=sys.stderr)
        return self._reap()

    def kill(self):
        """SIGKILL (socket and pid file stay, as after a crash). Returns the status."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            _kill(self.popen.pid, signal.SIGKILL)
        return self._reap(remove_pid_file=False)

    def _reap(self, remove_pid_file=True):
        _killpg(self.popen.pid, signal.SIGKILL)
        try:
            self.returncode = self.popen.wait(10)
        except subprocess.TimeoutExpired:
            raise HarnessError("usbmuxd pid %d survived SIGKILL" % self.popen.pid)
        if remove_pid_file:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.pid_file)
        _unregister(self)
        return self.returncode

    def restart(self, timeout=None):
        """stop() then start(); returns self. DeviceIDs restart at 1, the BUID stays."""
        self.stop(timeout)
        return self.start()

    def remove_socket(self):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)

    def log_text(self):
        return _read(self.log_path)

    def log_tail(self, lines=40):
        return "--- usbmuxd log (%s) ---\n%s" % (self.log_path, _tail(self.log_path, lines))

    def rss_kib(self):
        return proc_rss_kib(self.pid)

    def fd_count(self):
        return proc_fd_count(self.pid)

    def _cleanup(self):
        if self.popen is not None:
            self.kill()

    def __enter__(self):
        if not self.alive():
            self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


# --------------------------------------------------------------------------
# muxshim and the test tools
# --------------------------------------------------------------------------

def shim_binary():
    return os.environ.get("MUXSHIM_BIN") or os.path.join(BUILD, "muxshim")


def require_binary(path, hint):
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise HarnessError("%s is missing or not executable: %s" % (path, hint))
    return path


def tool(name):
    """Path of build/tests/NAME; raises HarnessError if it was not built."""
    return require_binary(os.path.join(TOOLS, name), "run `make tools`")


def shim_mode(args):
    """The mode options for a shim started with args.

    muxshim's default is the broker. Most suites were written for the relay
    and test it (sessions through the tunnel, upstream faults, TIME_WAIT):
    a shim that names neither mode gets --passthrough, so that those tests
    keep testing what they were written for. The broker's suites say
    --broker (test_broker, test_realclients, parts of test_stats); the
    Docker and muxshim-run suites use the binaries' real default.
    MUXSHIM_SHIM_ARGS (options for every shim of a run) come last and win.
    """
    env = shlex.split(os.environ.get("MUXSHIM_SHIM_ARGS", ""))
    given = set(args) | set(env)
    mode = [] if given & {"--broker", "--passthrough"} else ["--passthrough"]
    return mode + env


def _upstream_arg(upstream):
    s = str(upstream)
    return "unix:" + s if s.startswith("/") else s


class Shim(Proc):
    """build/muxshim (or $MUXSHIM_BIN) listening on `listen`, relaying to `upstream`.

    upstream: a path (becomes unix:PATH) or an address string ("unix:/p");
    None: no --upstream (MUXSHIM_UPSTREAM or the default applies).
    Ready when the listen socket and the control socket (LISTEN.ctl, or
    --control's; not with --control none) accept a connection.
    """

    def __init__(self, listen, upstream, *extra_args, log_level="debug", binary=None,
                 name="muxshim", **kw):
        self.binary = binary or shim_binary()
        require_binary(self.binary, "build it with `make` (or set MUXSHIM_BIN)")
        self.listen = listen
        self.upstream = _upstream_arg(upstream) if upstream is not None else None
        extra = [str(a) for a in extra_args]
        extra += shim_mode(extra)
        argv = [self.binary, "--listen", listen] + \
            (["--upstream", self.upstream] if self.upstream else []) + \
            ["--log-level", log_level] + extra
        # The control socket comes up last (after --socket-owner is applied,
        # for one): waiting for it too means start() returns a daemon that
        # is fully set up, however slowly it starts (valgrind). It is tried
        # first, so that the listening socket sees one probe (one session).
        control = extra[extra.index("--control") + 1] if "--control" in extra[:-1] else listen + ".ctl"
        if control != "none" and "ready_fn" not in kw and "ready_socket" not in kw:
            kw["ready_fn"] = lambda: unix_accepts(control) and unix_accepts(listen)
        else:
            kw.setdefault("ready_socket", listen)
        kw.setdefault("valgrind", True)
        super().__init__(argv, name=name, **kw)


class FakeDev(Proc):
    """build/tests/fakedev: a fake usbmuxd with N devices (serials fakedev-0001..)."""

    def __init__(self, socket_path, devices=1, *extra_args, name="fakedev", **kw):
        self.socket = socket_path
        self.devices = devices
        argv = [tool("fakedev"), "--socket", socket_path, "--devices", str(devices)]
        argv += [str(a) for a in extra_args]
        kw.setdefault("ready_line", r"^fakedev ready ")
        super().__init__(argv, name=name, **kw)

    def _ready_now(self):
        return super()._ready_now() and unix_accepts(self.socket)


class _PortFromReadyLine(Proc):
    """A tool that prints "NAME ready PORT" once listening: after start(),
    .port is the bound port (also when it was asked for port 0)."""

    def __init__(self, argv, port, name, **kw):
        kw.setdefault("ready_line", r"^%s ready (\d+)" % os.path.basename(argv[0]))
        super().__init__(argv, name=name, **kw)
        self.port = port or None

    def start(self):
        super().start()
        self.port = int(self.ready_match.group(1))
        return self


class DevSvc(_PortFromReadyLine):
    """build/tests/devsvc: the TCP service behind a fake device port."""

    def __init__(self, port=0, *extra_args, name="devsvc", **kw):
        argv = [tool("devsvc"), "--port", str(port)] + [str(a) for a in extra_args]
        super().__init__(argv, port, name, **kw)


class MuxconnError(HarnessError):
    def __init__(self, msg, result=None):
        super().__init__(msg)
        self.result = result


class TcpRelay(_PortFromReadyLine):
    """build/tests/tcprelay on host:port (0: a free one, read back from its
    ready line, so no other process can take it in between) in front of the
    UNIX socket target: one event loop, no process per session."""

    def __init__(self, target, port=0, host="127.0.0.1", name="tcprelay", **kw):
        argv = [tool("tcprelay"), "%s:%d" % (host, port), target]
        super().__init__(argv, port, name, **kw)


def muxconn(*args, socket=None, tcp=None, timeout=120.0, check=True):
    """Run build/tests/muxconn (--socket PATH or --tcp HOST:PORT, then args).

    timeout bounds the run: unless args give --timeout, muxconn gets one a
    little shorter, so that a run cut short still prints its counts
    (ops_ok, ops_failed, ops_unfinished) instead of being killed silently.
    Returns its JSON line as a dict plus "_rc" and "_stderr". With check=True
    (default) raises MuxconnError unless rc == 0 and "ok" is true.
    """
    argv = [tool("muxconn")]
    if socket is not None:
        argv += ["--socket", socket]
    if tcp is not None:
        argv += ["--tcp", tcp]
    argv += [str(a) for a in args]
    if "--timeout" not in argv:
        argv += ["--timeout", "%.1f" % max(1.0, timeout - max(2.0, timeout * 0.05))]
    rc, out, err = _run(argv, timeout=timeout)
    lines = [l for l in out.splitlines() if l.strip()]
    result = None
    if len(lines) == 1:
        try:
            result = json.loads(lines[0])
        except ValueError:
            result = None
    if result is None:
        raise MuxconnError("muxconn %s: rc=%d, expected one JSON line, got stdout=%r stderr=%r"
                           % (" ".join(argv[1:]), rc, out, err))
    result["_rc"] = rc
    result["_stderr"] = err
    if check and (rc != 0 or not result.get("ok")):
        raise MuxconnError("muxconn %s failed: rc=%d %s\n%s"
                           % (" ".join(argv[1:]), rc, lines[0], err), result)
    return result


def unix_recv_queue(pid):
    """Bytes waiting unread in the receive queues of pid's UNIX stream
    sockets, as ss(8) reports them."""
    out = subprocess.run(["ss", "-xHpn"], capture_output=True, text=True, timeout=30).stdout
    tag = "pid=%d," % pid
    return sum(int(line.split()[2]) for line in out.splitlines()
               if tag in line and line.split()[2].isdigit())


def start_stall(socket_path, port, *extra, timeout=60.0):
    """A client that stops reading while its device floods (muxconn --stall,
    in the background). Returns its Popen once the flood has filled what
    lies behind it: bytes wait unread in its socket and their count held
    still for 0.3 s (bounded by timeout, generous: it fills in milliseconds).
    It reads nothing until end_stall(), however long the test takes."""
    p = subprocess.Popen([tool("muxconn"), "--socket", socket_path, "--port", str(port),
                          "--stall", "3600", "--timeout", "3700"] + [str(a) for a in extra],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while True:
            if p.poll() is not None:
                out, err = p.communicate()
                raise HarnessError("the stalled client ended early: %s %s" % (out, err))
            n = unix_recv_queue(p.pid)
            if n != last:
                last, since = n, time.monotonic()
            elif n > 0 and time.monotonic() - since >= 0.3:
                return p
            if time.monotonic() >= deadline:
                raise HarnessError("the flood did not fill the stalled client's socket in "
                                   "%.0f s (%d bytes queued)" % (timeout, n))
            time.sleep(0.05)
    except BaseException:
        _killpg(p.pid, signal.SIGKILL)
        p.wait()
        raise


def end_stall(p, timeout=60.0):
    """Ends a start_stall() client (SIGUSR1: it closes and reports). Returns
    (returncode, its JSON line as a dict or None, stderr)."""
    if p.poll() is None:
        p.send_signal(signal.SIGUSR1)
    try:
        out, err = p.communicate(timeout=timeout)
    finally:
        _killpg(p.pid, signal.SIGKILL)
    lines = [l for l in out.decode("utf-8", "replace").splitlines() if l.startswith("{")]
    return p.returncode, json.loads(lines[0]) if lines else None, err.decode("utf-8", "replace")


# --------------------------------------------------------------------------
# One-shot commands
# --------------------------------------------------------------------------

def _run(argv, *, timeout=DEFAULT_CLIENT_TIMEOUT, env=None, unset=(), input=None, cwd=None):
    """Run argv in its own session with os.environ + env - unset; on timeout
    kill the whole group and raise HarnessError. Returns (rc, stdout, stderr)."""
    full_env = dict(os.environ)
    for k in unset:
        full_env.pop(k, None)
    if env:
        full_env.update(env)
    p = subprocess.Popen(argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env, cwd=cwd,
                         start_new_session=True)
    try:
        out, err = p.communicate(input=input.encode() if isinstance(input, str) else input,
                                 timeout=timeout)
    except subprocess.TimeoutExpired:
        _killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        raise HarnessError("%s timed out after %.1f s\nstdout: %s\nstderr: %s"
                           % (" ".join(argv), timeout, out.decode("utf-8", "replace")[-2000:],
                              err.decode("utf-8", "replace")[-2000:]))
    finally:
        _killpg(p.pid, signal.SIGKILL)   # nothing it started may outlive it
    return p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def socket_address(target):
    """USBMUXD_SOCKET_ADDRESS value: a path -> UNIX:path; "host:port" as is."""
    target = str(target)
    return "UNIX:" + target if target.startswith("/") else target


def run_client(cmd, socket_path, *, timeout=DEFAULT_CLIENT_TIMEOUT, env=None, input=None):
    """Run a real usbmuxd client with USBMUXD_SOCKET_ADDRESS=UNIX:<socket_path>.

    socket_path: a path, a "host:port" string, or None (leave the variable
    unset, i.e. the client's default /var/run/usbmuxd). Returns (rc, stdout,
    stderr); raises HarnessError on timeout (after killing it).
    """
    argv = shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]
    return _run(argv, timeout=timeout, env=client_env(socket_path, env),
                unset=("USBMUXD_SOCKET_ADDRESS",), input=input)


def client_env(socket_path, extra=None):
    """The env additions that point a libusbmuxd client at socket_path."""
    e = dict(extra or {})
    if socket_path is not None:
        e["USBMUXD_SOCKET_ADDRESS"] = socket_address(socket_path)
    return e


# --------------------------------------------------------------------------
# A container without Docker
# --------------------------------------------------------------------------

_INIT_PY = r"""
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
signal.signal(signal.SIGINT, lambda *a: os._exit(0))
sys.stdout.write("container ready\n"); sys.stdout.flush()
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(0.1)
    except InterruptedError:
        pass
"""


class Container:
    """A simulated container: new mount, network and pid namespaces.

    Inside: a tmpfs on /run (so /var/run/usbmuxd is the container's own),
    host_run bind-mounted at /run/host (read-only with readonly=True), as
    `docker run -v /var/run:/run/host[:ro]` would do; lo is up; /proc is the
    namespace's own. Host paths (ROOT, BUILD, /tmp) are visible unchanged.

    The namespace's pid 1 is a small reaping init. Commands run inside with
    nsenter; when the container stops its init is SIGKILLed and the kernel
    kills every process inside, so nothing can outlive it.

        with Container(mux.run_dir) as c:
            shim = c.start_shim()                     # /var/run/usbmuxd -> /run/host/usbmuxd
            rc, out, err = c.exec("idevice_id -l; echo rc=$?")

    exec() runs `sh -c SCRIPT` (stdout/stderr captured, rc returned);
    spawn() starts a long-running process inside and returns a Proc whose
    pid, signals and /proc stats are those of the real process;
    host_path(p) maps a path inside to one usable from outside
    (/proc/INIT/root/p), e.g. to connect to the container's socket.
    """

    def __init__(self, host_run=None, *, readonly=False, name="container", logdir=None,
                 start_timeout=DEFAULT_READY_TIMEOUT):
        self.host_run = host_run
        self.readonly = readonly
        self.name = name
        self.logdir = logdir or tempdir(name)
        self.start_timeout = start_timeout
        self._init_path = os.path.join(self.logdir, "container-init.py")
        with open(self._init_path, "w") as f:
            f.write(_INIT_PY)
        self.proc = None          # the unshare process
        self.init_pid = None      # host pid of the namespace's pid 1
        self._spawned = []

    def __repr__(self):
        return "<Container %s init=%s>" % (self.name, self.init_pid)

    def _setup_script(self):
        lines = ["set -e",
                 "mount -t tmpfs -o mode=0755 tmpfs /run",
                 "mkdir -p /run/host /run/lock"]
        if self.host_run is not None:
            lines.append("mount --bind %s /run/host" % shlex.quote(self.host_run))
            if self.readonly:
                lines.append("mount -o remount,bind,ro /run/host")
        lines.append("ip link set lo up")
        lines.append("exec %s %s" % (shlex.quote(sys.executable), shlex.quote(self._init_path)))
        return "\n".join(lines)

    def start(self):
        if self.proc is not None and self.proc.alive():
            raise HarnessError("container %s already running" % self.name)
        argv = ["unshare", "--mount", "--propagation", "private", "--net", "--pid", "--fork",
                "--kill-child=SIGKILL", "--mount-proc", "sh", "-c", self._setup_script()]
        self.proc = Proc(argv, name=self.name + "-init", logdir=self.logdir,
                         ready_line=r"^container ready$", ready_timeout=self.start_timeout)
        self.proc._cleanup = self._cleanup          # stop the namespace, not just unshare
        self.proc.start()
        _unregister(self.proc)
        _register(self)
        kids = wait_for(lambda: _children(self.proc.pid), 5, what="the container's init")
        self.init_pid = kids[0]
        return self

    def alive(self):
        return self.init_pid is not None and _pid_alive(self.init_pid)

    def host_path(self, path):
        """A path inside the container, reachable from outside, as
        /proc/INIT/root/... with symlinks resolved the way the container sees
        them (an absolute link such as /var/run -> /run would otherwise be
        followed in the caller's mount namespace)."""
        if not path.startswith("/"):
            raise ValueError("absolute path expected")
        root = "/proc/%d/root" % self.init_pid
        parts = [p for p in path.split("/") if p]
        done = []
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == ".":
                continue
            if part == "..":
                if done:
                    done.pop()
                continue
            cur = root + "/" + "/".join(done + [part])
            try:
                target = os.readlink(cur)
            except OSError:          # not a link, or does not exist (yet)
                done.append(part)
                continue
            hops += 1
            if hops > 40:
                raise HarnessError("too many symlinks in %s" % path)
            tparts = [p for p in target.split("/") if p]
            if target.startswith("/"):
                done = []
            parts = tparts + parts
        return root + "/" + "/".join(done)

    def _nsenter(self):
        return ["nsenter", "--target", str(self.init_pid), "--mount", "--net", "--pid", "--"]

    def exec(self, script, *, timeout=DEFAULT_CLIENT_TIMEOUT, env=None, input=None,
             check=False):
        """Run `sh -c script` inside; returns (rc, stdout, stderr).
        check=True raises HarnessError when rc != 0."""
        if not self.alive():
            raise HarnessError("container %s is not running" % self.name)
        rc, out, err = _run(self._nsenter() + ["sh", "-c", script], timeout=timeout, env=env,
                            input=input)
        if check and rc != 0:
            raise HarnessError("in %s: script failed with rc=%d\n--- script ---\n%s\n"
                               "--- stdout ---\n%s\n--- stderr ---\n%s"
                               % (self.name, rc, script, out, err))
        return rc, out, err

    def spawn(self, argv, *, name=None, ready_socket=None, ready_line=None,
              ready_timeout=DEFAULT_READY_TIMEOUT, env=None, valgrind=False):
        """Start a long-running process inside. ready_socket is a path as seen
        inside the container. Returns a started ContainerProc."""
        if not self.alive():
            raise HarnessError("container %s is not running" % self.name)
        p = ContainerProc(self, argv, name=name, logdir=self.logdir, env=env,
                          ready_socket=ready_socket, ready_line=ready_line,
                          ready_timeout=ready_timeout, valgrind=valgrind)
        p.start()
        self._spawned.append(p)
        return p

    def start_shim(self, *extra_args, listen="/var/run/usbmuxd",
                   upstream="unix:/run/host/usbmuxd", log_level="debug", binary=None,
                   name="muxshim"):
        """Start muxshim inside (listening on the container's /var/run/usbmuxd)."""
        b = binary or shim_binary()
        require_binary(b, "build it with `make` (or set MUXSHIM_BIN)")
        extra = [str(a) for a in extra_args]
        argv = [b, "--listen", listen, "--upstream", _upstream_arg(upstream),
                "--log-level", log_level] + extra + shim_mode(extra)
        return self.spawn(argv, name=name, ready_socket=listen, valgrind=True)

    def pids(self):
        """Pids (as seen inside) of every process in the container, init (1)
        included, the shell that lists them excluded."""
        if not self.alive():
            return []
        rc, out, _ = _run(self._nsenter() + ["sh", "-c",
                          'for d in /proc/[0-9]*; do p=${d#/proc/}; [ "$p" = $$ ] || echo $p; done'],
                          timeout=10)
        return sorted(int(x) for x in out.split()) if rc == 0 else []

    def ps(self):
        """`ps -e -o pid,ppid,stat,args` as seen inside."""
        return self.exec("ps -e -o pid,ppid,stat,args", timeout=10)[1]

    def stop(self):
        """Kill the namespace's init (so everything inside), reap unshare."""
        self._cleanup()

    def _cleanup(self):
        valgrind_failures = []
        for p in self._spawned:
            if p.popen is not None and p.popen.poll() is None:
                try:
                    p.stop(timeout=2)   # longer under valgrind (stop() sees to it)
                except ValgrindError as e:
                    valgrind_failures.append(str(e))
                except Exception:
                    pass
        if self.init_pid is not None:
            _kill(self.init_pid, signal.SIGKILL)
        if self.proc is not None and self.proc.popen is not None:
            _killpg(self.proc.popen.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.popen.wait(10)
        for p in self._spawned:
            with contextlib.suppress(Exception):
                p._hard_kill()
        self.init_pid = None
        _unregister(self)
        if valgrind_failures:
            raise ValgrindError("\n\n".join(valgrind_failures))

    def __enter__(self):
        if not self.alive():
            self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    @classmethod
    def run_once(cls, host_run, script, *, readonly=False, shim_args=None,
                 timeout=DEFAULT_CLIENT_TIMEOUT):
        """Start a container, optionally muxshim inside (shim_args: list, may be
        empty), run script, stop. Returns (rc, stdout, stderr, shim_log)."""
        with cls(host_run, readonly=readonly) as c:
            shim = c.start_shim(*shim_args) if shim_args is not None else None
            rc, out, err = c.exec(script, timeout=timeout)
            log = ""
            if shim is not None:
                shim.stop()
                log = shim.stderr_text() + shim.stdout_text()
            return rc, out, err, log


class ContainerProc(Proc):
    """A Proc started through nsenter. nsenter forks the real process inside
    the pid namespace and does not forward signals, so pid (for signals,
    rss_kib, fd_count) is the real process, found as nsenter's child."""

    def __init__(self, container, argv, **kw):
        self.container = container
        name = kw.pop("name", None) or os.path.basename(str(argv[0]))
        super().__init__(container._nsenter() + [str(a) for a in argv], name=name, **kw)
        self._inner_pid = None

    def _socket_path_for_check(self):
        return self.container.host_path(self.ready_socket)

    def _command(self):
        if not self.valgrind:
            return self.argv
        n = len(self.container._nsenter())   # valgrind runs inside, as nsenter's child
        return self.argv[:n] + self._valgrind_prefix() + self.argv[n:]

    def _resolve(self):
        if self._inner_pid is None and self.popen is not None:
            kids = _children(self.popen.pid)
            if kids:
                self._inner_pid = kids[0]
        return self._inner_pid

    def start(self):
        self._inner_pid = None
        return super().start()

    def _ready_now(self):
        return self._resolve() is not None and super()._ready_now()

    @property
    def pid(self):
        return self._resolve() or (self.popen.pid if self.popen else None)

    def alive(self):
        return (self.popen is not None and self.popen.poll() is None
                and self._resolve() is not None and _pid_alive(self._inner_pid))

    def stop(self, timeout=None, sig=signal.SIGTERM):
        if self.popen is None:
            return None
        timeout = self.stop_timeout if timeout is None else timeout
        if self.valgrind:
            timeout = max(timeout, VALGRIND_TIMEOUT)   # the leak check takes a while
        if self.popen.poll() is None and self._resolve() is not None:
            _kill(self._inner_pid, sig)
            try:
                self.popen.wait(timeout)     # nsenter exits with the child's status
            except subprocess.TimeoutExpired:
                print("harness: %s ignored signal %d for %.1f s, killing" % (self.name, sig, timeout),
                      file=sys.stderr)
                self._vg_stop_ignored = sig == signal.SIGTERM
        self._hard_kill()
        self.check_valgrind()
        return self.returncode

    def kill(self):
        if self.popen is not None and self.popen.poll() is None and self._resolve():
            _kill(self._inner_pid, signal.SIGKILL)
        self._hard_kill()
        return self.returncode

    def _hard_kill(self):
        if self._inner_pid is not None:
            _kill(self._inner_pid, signal.SIGKILL)
        super()._hard_kill()


class Iproxy(Proc):
    """iproxy LPORT:DPORT (libusbmuxd-tools) pointed at socket_path via
    USBMUXD_SOCKET_ADDRESS. Ready when LPORT is listening (checked in
    /proc/net/tcp, so no connection is made). lport=0 picks a free port."""

    def __init__(self, socket_path, dport, lport=0, *extra_args, name="iproxy", **kw):
        self.lport = lport or free_tcp_port()
        self.dport = dport
        argv = [shutil.which("iproxy") or "iproxy"] + [str(a) for a in extra_args]
        argv.append("%d:%d" % (self.lport, dport))
        env = client_env(socket_path, kw.pop("env", None))
        kw.setdefault("ready_fn", lambda: tcp_listening(self.lport))
        super().__init__(argv, name=name, env=env, **kw)
