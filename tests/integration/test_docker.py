"""The Docker packaging, proven with a real Docker engine.

A private dockerd (vfs storage, no bridge, no iptables, its own data and exec
roots and containerd namespace) is started for the run. There is no registry:
the base image is a Debian 12 minbase tree made by debootstrap from Debian's
archive and `docker import`ed as debian:bookworm-slim (the name the
Dockerfiles use). The rootfs tarball is cached in build/docker/ so later runs
skip debootstrap; a clean clone builds it from scratch. Then:

  - docker/Dockerfile is built with BuildKit (MUXSHIM_DOCKER_BUILDKIT=0: the
    classic builder; its builder stage apt-gets gcc, libplist-dev and
    libseccomp-dev with --network host) and the image is checked: runtime layer size,
    non-root user, labels, HEALTHCHECK, libplist found through the RUNPATH;
  - the sidecar shape: the muxshim image in one container, its socket shared
    by a volume with app containers (symlink, volume over /var/run,
    USBMUXD_SOCKET_ADDRESS), upstream the host's socket directory (a fake
    device for Connect data paths, the real usbmuxd for everything else) or
    the tunnel to muxshim-host via host.docker.internal (host-gateway);
  - the ENTRYPOINT shape: docker/examples/app-entrypoint.Dockerfile, i.e. the
    documented COPY --from recipe; muxshim-run as PID 1: exit status, signal
    forwarding, zombie reaping, docker stop, a killed muxshim restarted;
  - docker/compose/*.yml parsed and validated by docker-compose (and the
    Linux one brought up for real), the Kubernetes example parsed as YAML.

Real clients inside the app containers: idevice_id (Debian's
libimobiledevice-utils, installed by the example Dockerfiles), and the test
tools lmclient (libusbmuxd) and muxconn (byte-exact data paths), copied in.

Run by `make integration-docker` (MUXSHIM_DOCKER_SUITE=1). If dockerd cannot
start here the suite prints SKIPPED with the reason. Everything it started is
stopped at the end, its mounts unmounted and its directory removed.
"""
import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tunnel_util import Helper, harness  # noqa: E402

if not os.environ.get("MUXSHIM_DOCKER_SUITE"):
    msg = "SKIPPED: the Docker suite runs with `make integration-docker` (starts its own dockerd)"
    print("\n*** test_docker: %s ***" % msg, file=sys.stderr)
    raise unittest.SkipTest(msg)

ROOT = harness.ROOT
CACHE_DIR = os.path.join(harness.BUILD, "docker")
# Bump the suffix when the recipe in make_base_tar() changes.
BASE_TAR = os.path.join(CACHE_DIR, "bookworm-minbase-v1.tar")
BASE_TAG = "debian:bookworm-slim"
MIRROR = "http://deb.debian.org/debian"
IMAGE = "muxshim:test"
APP_SIDECAR = "app-sidecar-tools:test"
APP_ENTRYPOINT = "app-entrypoint-tools:test"
SIGNALS = ["TERM", "INT", "HUP", "QUIT", "USR1", "USR2", "WINCH"]
TRAP_SCRIPT = "".join("trap 'echo got %s' %s; " % (s, s) for s in SIGNALS[1:]) + \
    "trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 1 & wait $!; done"
SERIALS = ["fakedev-0001", "fakedev-0002"]
# As in every suite: a system call outside muxshim's seccomp allow-list kills
# it rather than failing quietly (tests/lib/harness.py).
STRICT = "MUXSHIM_SECCOMP_STRICT=1"
MiB = 1 << 20

# BuildKit (Docker's default builder since 23.0) unless MUXSHIM_DOCKER_BUILDKIT=0
# asks for the classic one (the default of Debian 12's docker.io 20.10).
BUILDKIT = "0" if os.environ.get("MUXSHIM_DOCKER_BUILDKIT") == "0" else "1"
ENGINE = None
TIMINGS = []


def _log(msg):
    print("test_docker: %s" % msg, file=sys.stderr, flush=True)


def _timed(what, fn, *a, **kw):
    t0 = time.monotonic()
    r = fn(*a, **kw)
    TIMINGS.append((what, time.monotonic() - t0))
    _log("%s: %.1f s" % (what, time.monotonic() - t0))
    return r


def docker_cli():
    # Debian's client (docker.io) first: the one a fresh machine has.
    for c in ("/usr/bin/docker", shutil.which("docker")):
        if c and os.access(c, os.X_OK):
            return c
    return None


def unavailable():
    """Why the engine cannot be tried here, or None."""
    if os.geteuid() != 0:
        return "needs root to run dockerd"
    for b in ("dockerd", "debootstrap"):
        if not shutil.which(b, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"):
            return "%s is not installed (make deps installs docker.io and debootstrap)" % b
    if not docker_cli():
        return "no docker client"
    return None


def make_base_tar(workdir):
    """debootstrap a Debian 12 minbase, trimmed like the official -slim image."""
    root = os.path.join(workdir, "rootfs")
    r = subprocess.run(["debootstrap", "--variant=minbase", "bookworm", root, MIRROR],
                       capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise harness.HarnessError("debootstrap failed (rc %d):\n%s" % (r.returncode,
                                                                      r.stdout[-3000:] + r.stderr[-3000:]))
    for d in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/man",
              "usr/share/locale", "usr/share/info"):
        subprocess.run(["sh", "-c", "rm -rf %s/*" % os.path.join(root, d)], check=True)
    subprocess.run(["find", os.path.join(root, "usr/share/doc"), "-mindepth", "1", "!", "-name",
                    "copyright", "!", "-type", "d", "-delete"], check=True)
    with open(os.path.join(root, "etc/dpkg/dpkg.cfg.d/docker"), "w") as f:
        f.write("path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\n"
                "path-exclude /usr/share/man/*\npath-exclude /usr/share/groff/*\n"
                "path-exclude /usr/share/info/*\npath-exclude /usr/share/locale/*\n"
                "path-exclude /usr/share/lintian/*\n")
    with open(os.path.join(root, "etc/apt/apt.conf.d/docker-clean"), "w") as f:
        f.write('Acquire::Languages "none";\n'
                'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb || true"; };\n'
                'Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";\n')
    with open(os.path.join(root, "etc/apt/sources.list"), "w") as f:
        f.write("deb %s bookworm main\ndeb %s bookworm-updates main\n"
                "deb http://deb.debian.org/debian-security bookworm-security main\n"
                % (MIRROR, MIRROR))
    os.makedirs(CACHE_DIR, exist_ok=True)
    tmp = BASE_TAR + ".%d.tmp" % os.getpid()
    subprocess.run(["tar", "--numeric-owner", "--exclude=./dev/*", "--exclude=./proc/*",
                    "--exclude=./sys/*", "-C", root, "-cf", tmp, "."], check=True, timeout=300)
    os.replace(tmp, BASE_TAR)
    harness._remove_tree(root)


class Engine:
    def __init__(self):
        # Under build/, not among /tmp's test directories, which something
        # else may sweep while the engine keeps its images here; /tmp only if
        # the checkout's path would make socket paths too long (108 bytes).
        # Removed at the end (atexit too).
        os.makedirs(CACHE_DIR, exist_ok=True)
        base = CACHE_DIR if len(CACHE_DIR) <= 40 else None
        self.dir = tempfile.mkdtemp(prefix="engine." if base else "muxshim-docker.", dir=base)
        os.chmod(self.dir, 0o755)
        atexit.register(self.remove)
        self.sock = os.path.join(self.dir, "docker.sock")
        self.cli = docker_cli()
        self.env = dict(os.environ, DOCKER_HOST="unix://" + self.sock, DOCKER_BUILDKIT=BUILDKIT,
                        DOCKER_CONFIG=os.path.join(self.dir, "cli"), COMPOSE_INTERACTIVE_NO_CLI="1")
        self.dockerd = None
        self.volumes = []

    def run(self, *args, timeout=180, check=True, input=None):
        r = subprocess.run([self.cli] + [str(a) for a in args], capture_output=True, text=True,
                           env=self.env, timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise harness.HarnessError("docker %s: rc %d\n%s%s" % (
                " ".join(str(a) for a in args), r.returncode, r.stdout[-3000:], r.stderr[-3000:]))
        return r

    def _answers(self):
        try:
            return self.run("version", "--format", "{{.Server.Version}}", timeout=10,
                            check=False).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def start(self):
        ns = "muxshim-test-%d" % os.getpid()
        argv = ["dockerd", "--data-root", os.path.join(self.dir, "data"),
                "--exec-root", os.path.join(self.dir, "exec"), "-H", "unix://" + self.sock,
                "--pidfile", os.path.join(self.dir, "dockerd.pid"), "--iptables=false",
                "--ip6tables=false", "--bridge=none", "--storage-driver=vfs",
                # host.docker.internal:host-gateway, for containers on the host network
                "--host-gateway-ip=127.0.0.1",
                "--containerd-namespace", ns, "--containerd-plugins-namespace", ns + "-plugins"]
        self.dockerd = harness.Proc(argv, name="dockerd", logdir=self.dir, ready_fn=self._answers,
                                    ready_timeout=90, stop_timeout=30)
        try:
            self.dockerd.start()
        except harness.HarnessError as e:
            msg = "SKIPPED: dockerd does not start here: %s" % str(e)[-1500:]
            print("\n*** test_docker: %s ***" % msg, file=sys.stderr)
            self.remove()
            raise unittest.SkipTest(msg)
        # The engine outlives the classes' harness.cleanup_all(); remove()
        # stops it (tearDownModule, or atexit before the harness's own).
        harness._unregister(self.dockerd)
        return self

    def stop(self):
        if self.dockerd and self.dockerd.alive():
            ids = self.run("ps", "-aq", check=False, timeout=60).stdout.split()
            if ids:
                self.run("rm", "-f", *ids, check=False, timeout=120)
            self.dockerd.stop()
        # containerd and its shims were started by our dockerd: they are the
        # containerd processes whose command line names our unique directory.
        for name in os.listdir("/proc"):
            if not name.isdigit() or not (harness._comm(int(name)) or "").startswith("containerd"):
                continue
            try:
                with open("/proc/%s/cmdline" % name, "rb") as f:
                    cmd = f.read().decode(errors="replace")
            except OSError:
                continue
            if self.dir + "/" in cmd:
                _log("killing leftover pid %s: %s" % (name, cmd.replace("\0", " ")[:120]))
                harness._kill(int(name), signal.SIGKILL)
        for mp in sorted(harness._mounts_under(self.dir), key=len, reverse=True):
            subprocess.run(["umount", "-l", mp], stderr=subprocess.DEVNULL, timeout=30)
        left = harness._mounts_under(self.dir)
        if left:
            _log("mounts left under %s: %s" % (self.dir, left))

    def remove(self):
        self.stop()
        if os.environ.get("MUXSHIM_KEEP_TMP") == "1":
            _log("kept %s" % self.dir)
        elif os.path.isdir(self.dir):
            harness._remove_tree(self.dir)

    def build(self, tag, dockerfile, context, *build_args, what=None):
        argv = ["build", "--network", "host", "-t", tag, "-f", dockerfile]
        if BUILDKIT == "1":
            argv += ["--progress", "plain"]
        for a in build_args:
            argv += ["--build-arg", a]
        argv.append(context)
        log = os.path.join(self.dir, "build-%s.log" % tag.replace(":", "_").replace("/", "_"))
        t0 = time.monotonic()
        r = self.run(*argv, timeout=1200, check=False)
        with open(log, "w") as f:
            f.write(r.stdout + r.stderr)
        TIMINGS.append((what or "build " + tag, time.monotonic() - t0))
        _log("built %s in %.1f s" % (tag, time.monotonic() - t0))
        if r.returncode != 0:
            raise harness.HarnessError("docker build %s failed (rc %d), log %s:\n%s" % (
                tag, r.returncode, log, (r.stdout + r.stderr)[-4000:]))

    def build_images(self):
        _log("builder: %s" % ("BuildKit" if BUILDKIT == "1" else "classic"))
        if not os.path.exists(BASE_TAR):
            _log("no cached base rootfs: debootstrap --variant=minbase bookworm (once)")
            _timed("debootstrap base rootfs", make_base_tar, self.dir)
        _timed("docker import base", self.run, "import", BASE_TAR, BASE_TAG, timeout=300)
        rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True,
                             text=True).stdout.strip() or "unknown"
        self.build(IMAGE, os.path.join(ROOT, "docker/Dockerfile"), ROOT, "REVISION=" + rev,
                   what="build docker/Dockerfile")
        self.run("tag", IMAGE, "muxshim")
        ex = os.path.join(ROOT, "docker/examples")
        self.build("app-sidecar:test", os.path.join(ex, "app-sidecar.Dockerfile"), ex)
        self.build("app-entrypoint:test", os.path.join(ex, "app-entrypoint.Dockerfile"), ex,
                   "MUXSHIM_IMAGE=" + IMAGE)
        # The test tools on top (they link the libusbmuxd and libplist that
        # libimobiledevice-utils brought in).
        ctx = os.path.join(self.dir, "tools-ctx")
        os.makedirs(ctx)
        for t in ("lmclient", "muxconn"):
            shutil.copy(harness.tool(t), ctx)
        with open(os.path.join(ctx, "Dockerfile"), "w") as f:
            f.write("ARG FROM_IMAGE\nFROM ${FROM_IMAGE}\nCOPY lmclient muxconn /usr/local/bin/\n")
        self.build(APP_SIDECAR, os.path.join(ctx, "Dockerfile"), ctx, "FROM_IMAGE=app-sidecar:test")
        self.build(APP_ENTRYPOINT, os.path.join(ctx, "Dockerfile"), ctx,
                   "FROM_IMAGE=app-entrypoint:test")

    def volume(self):
        name = "muxshim-test-%d" % len(self.volumes)
        self.run("volume", "create", name)
        self.volumes.append(name)
        return name

    def inspect(self, what, fmt):
        return self.run("inspect", "-f", fmt, what).stdout.strip()

    def logs(self, name):
        r = self.run("logs", name, check=False)
        return r.stdout + r.stderr

    def wait_health(self, name, status, timeout=60):
        return harness.wait_for(
            lambda: self.inspect(name, "{{.State.Health.Status}}") == status, timeout,
            interval=0.2, what="container %s %s\n%s" % (name, status, self.logs(name)[-2000:]))

    def wait_log(self, name, text, timeout=30):
        return harness.wait_for(lambda: text in self.logs(name), timeout, interval=0.1,
                                what="%r in the logs of %s" % (text, name))

    def exit_code(self, name, timeout=60):
        r = self.run("wait", name, timeout=timeout)
        return int(r.stdout.strip())


def setUpModule():
    global ENGINE
    reason = unavailable()
    if reason:
        msg = "SKIPPED: " + reason
        print("\n*** test_docker: %s ***" % msg, file=sys.stderr)
        raise unittest.SkipTest(msg)
    for t in ("fakedev", "devsvc", "lmclient", "muxconn"):
        harness.tool(t)
    ENGINE = Engine()
    try:
        _timed("dockerd start", ENGINE.start)
        ENGINE.build_images()
    except BaseException:
        ENGINE.remove()
        raise


def tearDownModule():
    if ENGINE:
        ENGINE.remove()
    harness.cleanup_all()
    if TIMINGS:
        _log("timings: " + ", ".join("%s %.1f s" % t for t in TIMINGS))


def host_dir(tag):
    """A directory to bind-mount as /run/host: world-traversable like /var/run,
    since the muxshim image runs as uid 10001. Inside the engine's directory
    (not /tmp, where a sweep of stale test directories could take it)."""
    d = tempfile.mkdtemp(prefix=tag + ".", dir=ENGINE.dir)
    os.chmod(d, 0o755)
    return d


def logs():
    """Where the host-side daemons of a test keep their logs."""
    return host_dir("logs")


def fake_host(tag, devices=2):
    d = host_dir(tag)
    fake = harness.FakeDev(os.path.join(d, "usbmuxd"), devices, logdir=d).start()
    return d, fake


def devsvc():
    return harness.DevSvc(logdir=logs()).start()


def muxconn_json(r):
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    if len(lines) != 1:
        raise AssertionError("muxconn: rc %d, stdout %r, stderr %r" % (r.returncode, r.stdout,
                                                                       r.stderr[-2000:]))
    return json.loads(lines[0])


class Image(unittest.TestCase):
    def test_runtime_layer_is_small(self):
        size = int(ENGINE.inspect(IMAGE, "{{.Size}}"))
        base = int(ENGINE.inspect(BASE_TAG, "{{.Size}}"))
        _log("image size: %s %.1f MB = base %.1f MB + %.0f kB" % (
            IMAGE, size / 1e6, base / 1e6, (size - base) / 1e3))
        self.assertLess(size - base, 5 * MiB)
        # the runtime stage's own layers: copies only, no package manager
        hist = ENGINE.run("history", "--no-trunc", "--format", "{{.CreatedBy}}", IMAGE).stdout
        self.assertIn("COPY", hist)
        self.assertNotIn("apt-get", hist)

    def test_non_root_labels_healthcheck(self):
        self.assertEqual(ENGINE.inspect(IMAGE, "{{.Config.User}}"), "10001:10001")
        labels = json.loads(ENGINE.inspect(IMAGE, "{{json .Config.Labels}}"))
        self.assertEqual(labels["org.opencontainers.image.title"], "muxshim")
        self.assertEqual(labels["org.opencontainers.image.version"], "0.1.0")
        self.assertEqual(labels["org.opencontainers.image.base.name"], BASE_TAG)
        self.assertRegex(labels["org.opencontainers.image.revision"], r"^[0-9a-f]{40}$")
        hc = json.loads(ENGINE.inspect(IMAGE, "{{json .Config.Healthcheck}}"))
        self.assertEqual(hc["Test"], ["CMD", "muxshim", "health", "--listen",
                                      "/run/muxshim/usbmuxd"])

    def test_libraries_travel_with_muxshim(self):
        # The base has no libplist: muxshim finds its own, and its own
        # libseccomp and libnettle, through the RUNPATH; muxshim-run needs only libc.
        r = ENGINE.run("run", "--rm", "--network", "none", "--entrypoint", "sh", IMAGE, "-c",
                       "ls /usr/lib/*/libplist* 2>/dev/null; muxshim --version; "
                       "muxshim-run --version; LD_TRACE_LOADED_OBJECTS=1 muxshim; echo ---; "
                       "LD_TRACE_LOADED_OBJECTS=1 muxshim-run")
        out = r.stdout.split("\n")
        self.assertEqual(out[:2], ["muxshim 0.1.0", "muxshim-run 0.1.0"], r.stdout)
        shim, run = r.stdout.split("\n---\n")
        libs = {l.split()[0]: l.split()[2] for l in shim.splitlines() if "=>" in l}
        self.assertEqual(libs["libplist-2.0.so.3"], "/opt/muxshim/bin/../lib/libplist-2.0.so.3")
        self.assertEqual(libs["libseccomp.so.2"], "/opt/muxshim/bin/../lib/libseccomp.so.2")
        # The tunnel's crypto library (README, "Dependencies"), also its own.
        self.assertEqual(libs["libnettle.so.8"], "/opt/muxshim/bin/../lib/libnettle.so.8")
        self.assertEqual(sorted(l.split()[0] for l in run.splitlines() if "=>" in l),
                         ["libc.so.6"], run)


class Sidecar(unittest.TestCase):
    """muxshim in its own container; apps see its socket through a volume."""

    @classmethod
    def setUpClass(cls):
        cls.dir, cls.fake = fake_host("docker-sidecar")
        cls.svc = devsvc()
        cls.vol = ENGINE.volume()
        ENGINE.run("run", "-d", "--name", "sidecar", "--network", "none", "-e", STRICT,
                   "--health-interval", "1s", "-v", cls.dir + ":/run/host:ro",
                   "-v", cls.vol + ":/run/muxshim", IMAGE)
        ENGINE.wait_health("sidecar", "healthy")

    @classmethod
    def tearDownClass(cls):
        ENGINE.run("rm", "-f", "sidecar", check=False)
        harness.cleanup_all()

    def app(self, *cmd, mount="/run/muxshim", env=(), check=False):
        argv = ["run", "--rm", "--network", "none", "-v", "%s:%s" % (self.vol, mount)]
        for e in env:
            argv += ["-e", e]
        return ENGINE.run(*(argv + [APP_SIDECAR] + list(cmd)), check=check)

    def test_runs_as_its_own_user_in_its_volume(self):
        st = ENGINE.run("exec", "sidecar", "cat", "/proc/1/status").stdout
        self.assertRegex(st, r"\nUid:\s+10001\s")
        ls = ENGINE.run("exec", "sidecar", "ls", "-ln", "/run/muxshim").stdout
        self.assertRegex(ls, r"srw-rw-rw- +1 10001 10001 .* usbmuxd\n")

    def test_idevice_id_through_the_symlink(self):
        r = self.app("idevice_id", "-l")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.split(), SERIALS)

    def test_connect_is_byte_exact(self):
        for mode in ("--both", "--send", "--recv"):
            r = self.app("muxconn", "--socket", "/var/run/usbmuxd", mode, 4 * MiB,
                         "--port", self.svc.port, "--device", 2)
            res = muxconn_json(r)
            self.assertTrue(res["ok"] and r.returncode == 0, (mode, res, r.stderr))
        r = self.app("lmclient", "all", "--expect-devices", 2, "--connect-port", self.svc.port,
                     "--no-pair-check")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("connect1", r.stdout)

    def test_volume_over_var_run(self):
        # No change to the app image, at a price: its own /run is hidden.
        r = self.app("sh", "-c", "ls -A /run; idevice_id -l", mount="/var/run")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.split(), ["usbmuxd", "usbmuxd.ctl"] + SERIALS)

    def test_usbmuxd_socket_address(self):
        # libusbmuxd 2.0.2 (Debian 12) honours it; without it and without the
        # symlink, nothing is found.
        script = "rm /var/run/usbmuxd; idevice_id -l"
        r = self.app("sh", "-c", script, env=["USBMUXD_SOCKET_ADDRESS=UNIX:/run/muxshim/usbmuxd"])
        self.assertEqual((r.returncode, r.stdout.split()), (0, SERIALS), r.stderr)
        r = self.app("sh", "-c", script)
        self.assertNotEqual(r.returncode, 0, r.stdout)

    def test_stats_from_the_sidecar(self):
        self.app("idevice_id", "-l", check=True)
        r = ENGINE.run("exec", "sidecar", "muxshim", "stats", "--json", "--listen",
                       "/run/muxshim/usbmuxd")
        st = json.loads(r.stdout)
        # the apps live in other pid namespaces: counted, not named
        self.assertGreater(st["sessions_total"], 0, st)
        self.assertIn(False, [p.get("comm_visible") for p in st["processes"]], st)


class SidecarRealUsbmuxd(unittest.TestCase):
    """The real usbmuxd behind the sidecar: answers equal to direct ones."""

    def test_lmclient_and_idevice_id_match_direct(self):
        mux = harness.PrivateUsbmuxd(host_dir("usbmuxd")).start()
        os.chmod(mux.run_dir, 0o755)
        vol = ENGINE.volume()
        try:
            ENGINE.run("run", "-d", "--name", "sidecar-real", "--network", "none", "-e", STRICT,
                       "--health-interval", "1s", "-v", mux.run_dir + ":/run/host:ro",
                       "-v", vol + ":/run/muxshim", IMAGE)
            ENGINE.wait_health("sidecar-real", "healthy")
            direct = harness.run_client([harness.tool("lmclient"), "all"], mux.socket)
            self.assertEqual(direct[0], 0, direct)
            r = ENGINE.run("run", "--rm", "--network", "none", "-v", vol + ":/run/muxshim",
                           APP_SIDECAR, "lmclient", "all", check=False)
            self.assertEqual((r.returncode, r.stdout), direct[:2], r.stderr)
            r = ENGINE.run("run", "--rm", "--network", "none", "-v", vol + ":/run/muxshim",
                           APP_SIDECAR, "idevice_id", "-l", check=False)
            self.assertEqual((r.returncode, r.stdout), (0, ""), r.stderr)
        finally:
            ENGINE.run("rm", "-f", "sidecar-real", check=False)
            harness.cleanup_all()


class SidecarHealth(unittest.TestCase):
    def tearDown(self):
        ENGINE.run("rm", "-f", "sidecar-health", check=False)
        harness.cleanup_all()

    def test_health_follows_the_upstream(self):
        d, fake = fake_host("docker-health")
        ENGINE.run("run", "-d", "--name", "sidecar-health", "--network", "none", "-e", STRICT,
                   "--health-interval", "1s", "--health-retries", "2",
                   "-v", d + ":/run/host:ro", IMAGE)
        ENGINE.wait_health("sidecar-health", "healthy")
        fake.stop()                                     # removes its socket
        ENGINE.wait_health("sidecar-health", "unhealthy")
        out = ENGINE.inspect("sidecar-health", "{{(index .State.Health.Log 0).Output}}")
        last = json.loads(ENGINE.inspect("sidecar-health", "{{json .State.Health.Log}}"))[-1]
        self.assertEqual(last["ExitCode"], 1, out)
        self.assertIn("no socket at /run/host/usbmuxd", last["Output"])
        fake.start()
        ENGINE.wait_health("sidecar-health", "healthy")


class SidecarTunnel(unittest.TestCase):
    """Docker Desktop's shape on this Linux engine: the tunnel to
    host.docker.internal (host-gateway), one TCP connection for all sessions."""

    @classmethod
    def setUpClass(cls):
        d = host_dir("docker-tunnel")
        cls.fake = harness.FakeDev(os.path.join(d, "fake.sock"), 2, logdir=d).start()
        cls.svc = devsvc()
        cls.token = os.path.join(d, "token")
        harness.write_token(cls.token, 0o644)           # readable by uid 10001
        cls.helper = Helper("unix:" + cls.fake.socket, "--token-file", cls.token,
                            logdir=d).start()
        cls.vol = ENGINE.volume()
        ENGINE.run("run", "-d", "--name", "sidecar-tunnel", "--network", "host", "-e", STRICT,
                   "--add-host", "host.docker.internal:host-gateway",
                   "--health-interval", "1s", "--health-retries", "2",
                   "-v", cls.token + ":/run/secrets/muxshim:ro", "-v", cls.vol + ":/run/muxshim",
                   IMAGE, "--upstream", "tunnel:host.docker.internal:%d" % cls.helper.port,
                   "--token-file", "/run/secrets/muxshim")
        ENGINE.wait_health("sidecar-tunnel", "healthy")

    @classmethod
    def tearDownClass(cls):
        ENGINE.run("rm", "-f", "sidecar-tunnel", check=False)
        harness.cleanup_all()

    def app(self, *cmd):
        return ENGINE.run("run", "--rm", "--network", "none", "-v", self.vol + ":/run/muxshim",
                          APP_SIDECAR, *cmd, check=False)

    def tunnels(self):
        out = subprocess.run(["ss", "-Htn", "state", "established", "( sport = :%d )"
                              % self.helper.port], capture_output=True, text=True).stdout
        return len(out.splitlines())

    def test_one_connection_for_all_sessions(self):
        r = self.app("idevice_id", "-l")
        self.assertEqual((r.returncode, r.stdout.split()), (0, SERIALS), r.stderr)
        r = self.app("muxconn", "--socket", "/var/run/usbmuxd", "--both", 4 * MiB,
                     "--port", self.svc.port)
        self.assertTrue(muxconn_json(r)["ok"], r.stderr)
        r = self.app("muxconn", "--socket", "/var/run/usbmuxd", "--list-loop", 200,
                     "--parallel", 4)
        self.assertTrue(muxconn_json(r)["ok"], r.stderr)
        self.assertEqual(self.tunnels(), 1)

    def test_z_health_follows_the_tunnel(self):
        self.helper.stop()
        ENGINE.wait_health("sidecar-tunnel", "unhealthy")
        last = json.loads(ENGINE.inspect("sidecar-tunnel", "{{json .State.Health.Log}}"))[-1]
        self.assertIn("the tunnel is down", last["Output"])
        self.helper.start()
        ENGINE.wait_health("sidecar-tunnel", "healthy", timeout=60)
        r = self.app("idevice_id", "-l")
        self.assertEqual((r.returncode, r.stdout.split()), (0, SERIALS), r.stderr)


class Entrypoint(unittest.TestCase):
    """muxshim-run as PID 1 of the app's own container
    (docker/examples/app-entrypoint.Dockerfile)."""

    @classmethod
    def setUpClass(cls):
        cls.dir, cls.fake = fake_host("docker-entrypoint")
        cls.svc = devsvc()

    @classmethod
    def tearDownClass(cls):
        harness.cleanup_all()

    def tearDown(self):
        ids = ENGINE.run("ps", "-aq", "--filter", "name=^ep-", check=False).stdout.split()
        if ids:
            ENGINE.run("rm", "-f", *ids, check=False)

    def argv(self, *cmd, detach=None):
        a = ["run", "--network", "none", "-e", STRICT, "-v", self.dir + ":/run/host:ro"]
        a += ["-d", "--name", detach] if detach else ["--rm"]
        return a + [APP_ENTRYPOINT] + [str(c) for c in cmd]

    def run_app(self, *cmd):
        return ENGINE.run(*self.argv(*cmd), check=False, timeout=120)

    def test_default_command_lists_devices(self):
        r = self.run_app()                                  # CMD ["idevice_id", "-l"]
        self.assertEqual((r.returncode, r.stdout.split()), (0, SERIALS), r.stderr)
        self.assertRegex(r.stderr, r"muxshim-run\[1\] info: muxshim \(pid \d+\) accepting on "
                                   r"/var/run/usbmuxd; running idevice_id")
        self.assertIn("idevice_id exited with status 0; stopping muxshim", r.stderr)

    def test_connect_is_byte_exact(self):
        r = self.run_app("muxconn", "--socket", "/var/run/usbmuxd", "--both", 4 * MiB,
                         "--port", self.svc.port)
        self.assertTrue(muxconn_json(r)["ok"] and r.returncode == 0, r.stderr)
        r = self.run_app("lmclient", "all", "--expect-devices", 2, "--connect-port",
                         self.svc.port, "--no-pair-check")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_exit_status(self):
        self.assertEqual(self.run_app("sh", "-c", "exit 3").returncode, 3)
        self.assertEqual(self.run_app("sh", "-c", "kill -KILL $$").returncode, 137)
        r = self.run_app("no-such-command")
        self.assertEqual(r.returncode, 127, r.stderr)
        self.assertIn("cannot run no-such-command", r.stderr)

    def test_signals_forwarded_and_status_kept(self):
        ENGINE.run(*self.argv("sh", "-c", TRAP_SCRIPT, detach="ep-signals"))
        ENGINE.wait_log("ep-signals", "ready")
        for name in SIGNALS[1:]:
            ENGINE.run("kill", "-s", name, "ep-signals")
            ENGINE.wait_log("ep-signals", "got %s\n" % name)
        # muxshim did not get them: still serving, never restarted
        r = ENGINE.run("exec", "ep-signals", "idevice_id", "-l", check=False)
        self.assertEqual((r.returncode, r.stdout.split()), (0, SERIALS), r.stderr)
        ENGINE.run("kill", "-s", "TERM", "ep-signals")
        self.assertEqual(ENGINE.exit_code("ep-signals"), 7)
        logs = ENGINE.logs("ep-signals")
        got = [l.split()[1] for l in logs.splitlines() if l.startswith("got ")]
        self.assertEqual(got, SIGNALS[1:] + ["TERM"])
        self.assertNotIn("restarting", logs)
        self.assertIn("sh exited with status 7; stopping muxshim", logs)
        self.assertIn("signal 15: shutting down", logs)

    def test_docker_stop(self):
        ENGINE.run(*self.argv("sleep", "300", detach="ep-stop"))
        ENGINE.wait_log("ep-stop", "running sleep")
        t0 = time.monotonic()
        # Exit code 143 (SIGTERM) rather than 137 (SIGKILL) is the proof; the
        # time only has to stay clear of docker's 120 s kill timeout.
        ENGINE.run("stop", "-t", "120", "ep-stop", timeout=300)
        self.assertLess(time.monotonic() - t0, 100, "SIGTERM not forwarded: docker had to SIGKILL")
        self.assertEqual(int(ENGINE.inspect("ep-stop", "{{.State.ExitCode}}")), 143)

    def test_orphans_reaped_by_pid_1(self):
        # As in test_run: the orphan lives until killed (it was reparented
        # when the inner sh returned), then its reaping is waited for (30 s).
        script = ("sh -c 'sleep 600 & echo $! > /tmp/orphan'; P=$(cat /tmp/orphan); "
                  "grep PPid /proc/$P/status; kill $P; i=0; "
                  "while [ -e /proc/$P ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; "
                  "if [ -e /proc/$P ]; then echo left $(grep State /proc/$P/status); "
                  "else echo reaped; fi")
        r = self.run_app("sh", "-c", script)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.split("\n")[:2], ["PPid:\t1", "reaped"], r.stdout)

    def test_killed_muxshim_is_restarted(self):
        ENGINE.run(*self.argv("sleep", "300", detach="ep-restart"))
        ENGINE.wait_log("ep-restart", "running sleep")
        find = ("for p in /proc/[0-9]*; do [ \"$(cat $p/comm 2>/dev/null)\" = muxshim ] && "
                "echo ${p#/proc/}; done; true")
        pids = ENGINE.run("exec", "ep-restart", "sh", "-c", find).stdout.split()
        self.assertEqual(len(pids), 1)
        ENGINE.run("exec", "ep-restart", "sh", "-c", "kill -KILL " + pids[0])
        ENGINE.wait_log("ep-restart", "muxshim was killed by SIGKILL while sleep was running")
        ENGINE.wait_log("ep-restart", "accepting again on /var/run/usbmuxd")
        r = ENGINE.run("exec", "ep-restart", "idevice_id", "-l", check=False)
        self.assertEqual((r.returncode, r.stdout.split()), (0, SERIALS), r.stderr)
        self.assertNotEqual(ENGINE.run("exec", "ep-restart", "sh", "-c", find).stdout.split(),
                            pids)

    def test_non_root(self):
        # /run is root's: the default socket path cannot be served ...
        r = ENGINE.run("run", "--rm", "--network", "none", "--user", "1000:1000", "-e", STRICT,
                       "-v", self.dir + ":/run/host:ro", APP_ENTRYPOINT, "true", check=False)
        self.assertEqual(r.returncode, 125, r.stderr)
        self.assertIn("cannot listen on /var/run/usbmuxd", r.stderr)
        self.assertIn("before it accepted on /var/run/usbmuxd; not running true", r.stderr)
        # ... a directory the user owns can (docs/docker.md, "As another user")
        r = ENGINE.run("run", "--rm", "--network", "none", "--user", "1000:1000", "-e", STRICT,
                       "-v", self.dir + ":/run/host:ro",
                       "--entrypoint", "/opt/muxshim/bin/muxshim-run", APP_ENTRYPOINT,
                       "--listen", "/tmp/usbmuxd", "--upstream", "unix:/run/host/usbmuxd", "--",
                       "sh", "-c", "USBMUXD_SOCKET_ADDRESS=UNIX:/tmp/usbmuxd idevice_id -l",
                       check=False)
        self.assertEqual((r.returncode, r.stdout.split()), (0, SERIALS), r.stderr)

    def test_tunnel_upstream(self):
        d = host_dir("docker-ep-tunnel")
        token = os.path.join(d, "token")
        harness.write_token(token, 0o644)               # readable by uid 10001
        helper = Helper("unix:" + self.fake.socket, "--token-file", token, logdir=d).start()
        r = ENGINE.run("run", "--rm", "--network", "host", "-e", STRICT,
                       "--add-host", "host.docker.internal:host-gateway",
                       "-v", token + ":/run/secrets/muxshim:ro",
                       "--entrypoint", "/opt/muxshim/bin/muxshim-run", APP_ENTRYPOINT,
                       "--upstream", "tunnel:host.docker.internal:%d" % helper.port,
                       "--token-file", "/run/secrets/muxshim", "--",
                       "muxconn", "--socket", "/var/run/usbmuxd", "--both", 2 * MiB,
                       "--port", self.svc.port, check=False, timeout=120)
        self.assertTrue(muxconn_json(r)["ok"] and r.returncode == 0, r.stderr)
        helper.stop()


def check_kubernetes_examples(test):
    """Every docker/kubernetes/*.yaml parses as a Pod with muxshim as its
    native sidecar and the app; the aggregating one dials several hosts'
    helpers with a token from a mounted Secret."""
    import yaml  # python3-yaml, which docker-compose depends on
    kdir = os.path.join(ROOT, "docker/kubernetes")
    files = sorted(f for f in os.listdir(kdir) if f.endswith(".yaml"))
    test.assertEqual(files, ["aggregate.yaml", "sidecar.yaml"])
    for name in files:
        with open(os.path.join(kdir, name)) as f:
            pod = yaml.safe_load(f)
        test.assertEqual(pod["kind"], "Pod", name)
        spec = pod["spec"]
        names = [c["name"] for c in spec["initContainers"] + spec["containers"]]
        test.assertEqual(names, ["muxshim", "app"], name)
        shim = spec["initContainers"][0]
        test.assertEqual(shim["restartPolicy"], "Always", name)
        args = shim["args"]
        ups = [args[i + 1] for i, a in enumerate(args) if a == "--upstream"]
        if name != "aggregate.yaml":
            continue
        test.assertGreaterEqual(len(ups), 2)
        test.assertTrue(all(u.startswith("tunnel:") and u.endswith(":27016") for u in ups), ups)
        token = args[args.index("--token-file") + 1]
        mounts = {m["name"]: m["mountPath"] for m in shim["volumeMounts"]}
        secret = [v["name"] for v in spec["volumes"] if "secret" in v]
        test.assertEqual(len(secret), 1)
        test.assertTrue(token.startswith(mounts[secret[0]] + "/"), (token, mounts))
        # readable by the image's user (uid/gid 10001) through the group
        test.assertEqual(spec["securityContext"]["fsGroup"], 10001)


class Compose(unittest.TestCase):
    FILES = sorted(os.path.join(ROOT, "docker/compose", f)
                   for f in os.listdir(os.path.join(ROOT, "docker/compose")) if f.endswith(".yml"))

    def compose(self, *args, env=None, timeout=120):
        exe = shutil.which("docker-compose")
        if not exe:
            self.skipTest("SKIPPED: docker-compose is not installed (make deps installs it)")
        e = dict(ENGINE.env)
        e.update(env or {})
        return subprocess.run([exe] + list(args), capture_output=True, text=True, env=e,
                              timeout=timeout)

    def test_examples_validate(self):
        self.assertGreaterEqual(len(self.FILES), 3)
        for f in self.FILES:
            r = self.compose("-f", f, "config", "-q")
            self.assertEqual(r.returncode, 0, (f, r.stderr))
        check_kubernetes_examples(self)

    def test_linux_example_up(self):
        """docker/compose/linux.yml for real: only the networks are overridden
        (this engine has no bridge) and the health interval shortened."""
        d, fake = fake_host("docker-compose")
        ENGINE.run("tag", APP_SIDECAR, "my-ios-app")
        override = os.path.join(d, "override.yml")
        with open(override, "w") as f:
            f.write("services:\n"
                    "  muxshim:\n    network_mode: none\n    healthcheck:\n      interval: 1s\n"
                    "    environment:\n      - %s\n" % STRICT +
                    "  app:\n    network_mode: none\n")
        base = ["-p", "muxshimtest", "-f", os.path.join(ROOT, "docker/compose/linux.yml"),
                "-f", override]
        env = {"USBMUXD_HOST_DIR": d}
        try:
            r = self.compose(*(base + ["up", "-d"]), env=env, timeout=180)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            app = "muxshimtest_app_1"
            self.assertEqual(ENGINE.exit_code(app), 0, ENGINE.logs(app))
            self.assertEqual(ENGINE.run("logs", app).stdout.split(), SERIALS)
        finally:
            r = self.compose(*(base + ["down", "-v"]), env=env, timeout=180)
            fake.stop()


if __name__ == "__main__":
    unittest.main()
