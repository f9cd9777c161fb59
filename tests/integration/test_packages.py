"""The installers, installed the way their users install them.

  - Msi: build/muxshim-host-VERSION-x64.msi (make msi) in a fresh wine prefix
    (a copy of a pristine one cached in build/wineprefix-pkg.pristine):
    `wine msiexec /i ... /qn LISTEN=... UPSTREAM=...`, the service RUNNING
    (wine's Service Control Manager, `sc query`) and serving the Linux shim
    through its tunnel with the token the installer made; an upgrade to a
    newer build (MUXSHIM_MSI_NEXT, same sources, the next VERSION) with no
    properties given: options and token kept, the new version running, one
    product registered; `msiexec /x`: service, program and registry gone,
    token and log kept; a reinstall keeps that token; an install with
    TENANTS (a `*` tenant): the service runs with --tenants instead of
    --token-file and serves that tenant's shim, and an upgrade keeps it.
  - Deb: the packages of `make deb` installed with `apt install ./muxshim*.deb`
    into a fresh Debian 12 container of a private dockerd (the engine and the
    debootstrapped base image of test_docker.py, cached in build/docker/);
    the packaged binaries' --version, the system user, the token and its
    mode, man pages, `systemd-analyze verify` and `security` on the unit;
    the helper started exactly as the unit starts it, as its user, serving
    the shim through its tunnel; the template unit muxshim@.service installed
    and not enabled, an instance verified with the packaged example config,
    and the helper run as that instance's ExecStart (--serve) answering on
    its socket; reinstall, remove and purge.
  - ManPages: genman.py --check (every option in each program's --help is in
    its man page, every table option in --help) and groff warnings.

What these cannot show is printed as NOTE lines (wine has no Windows ACLs,
no service failure actions, no real SCM; the container has no systemd
running, so the unit's sandbox is verified and scored, not run).

Run by `make integration-packages` (MUXSHIM_PACKAGES_SUITE=1), which builds
the packages first.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tunnel_util import harness, usbmuxd_request  # noqa: E402

if not os.environ.get("MUXSHIM_PACKAGES_SUITE"):
    msg = "SKIPPED: the installer suite runs with `make integration-packages` (builds the packages)"
    print("\n*** test_packages: %s ***" % msg, file=sys.stderr)
    raise unittest.SkipTest(msg)

ROOT = harness.ROOT
BUILD = harness.BUILD
MSI = os.environ.get("MUXSHIM_MSI", "")
MSI_NEXT = os.environ.get("MUXSHIM_MSI_NEXT", "")
DEB_DIR = os.path.join(BUILD, "deb")
WINE = shutil.which("wine")
WINESERVER = shutil.which("wineserver")
PRISTINE = os.path.join(BUILD, "wineprefix-pkg.pristine")
PREFIX = os.path.join(BUILD, "wineprefix-pkg")
WINE_ENV = {"WINEPREFIX": PREFIX, "WINEDEBUG": "-all", "WINEDLLOVERRIDES": "mscoree,mshtml="}
TIMINGS = []


def note(msg):
    print("\n*** test_packages: NOTE: %s ***" % msg, file=sys.stderr, flush=True)


def timed(what, t0):
    TIMINGS.append((what, time.monotonic() - t0))


def tearDownModule():
    if TIMINGS:
        print("\ntest_packages: timings: " + ", ".join("%s %.1f s" % t for t in TIMINGS),
              file=sys.stderr)


def version_of(msi):
    m = re.search(r"muxshim-host-([0-9.]+)-x64\.msi$", msi)
    return m.group(1) if m else None


class ManPages(unittest.TestCase):
    def test_tables_and_help_agree(self):
        r = subprocess.run([sys.executable, os.path.join(ROOT, "man/genman.py"), "--check",
                            BUILD], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_pages_render_without_warnings(self):
        for prog in ("muxshim", "muxshim-host", "muxshim-run"):
            page = os.path.join(BUILD, "man", prog + ".1")
            r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", page],
                               capture_output=True, text=True)
            self.assertEqual((r.returncode, r.stderr), (0, ""), page)
            text = subprocess.run(["groff", "-man", "-Tutf8", "-P-cbou", page], capture_output=True,
                                  text=True).stdout
            self.assertIn("OPTIONS", text)
            self.assertNotIn("@OPTIONS@", text)


# --- the MSI under wine ------------------------------------------------------

def wine_run(*args, timeout=300):
    """(rc, stdout, stderr) of a Windows program run to its end; output goes
    through files, since wine's background processes may inherit pipes."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen([WINE] + [str(a) for a in args], stdin=subprocess.DEVNULL,
                             stdout=out, stderr=err, env=dict(os.environ, **WINE_ENV))
        try:
            rc = p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise
        out.seek(0)
        err.seek(0)
        return (rc, out.read().decode("utf-8", "replace"),
                err.read().decode("utf-8", "replace"))


def win_path(path):
    return "Z:" + path.replace("/", "\\")


def drive_c(*parts):
    return os.path.join(PREFIX, "drive_c", *parts)


def reg_query(key, *args):
    rc, out, _ = wine_run("reg", "query", key, *args)
    return out if rc == 0 else None


def service_state():
    """The state `sc query` reports (RUNNING, STOPPED, ...), or None when
    the service does not exist."""
    rc, out, _ = wine_run("sc", "query", "muxshim-host")
    m = re.search(r"STATE\s*:\s*\d+\s+(\w+)", out)
    return m.group(1) if rc == 0 and m else None


def product_code(msi):
    out = subprocess.run(["msiinfo", "export", msi, "Property"], capture_output=True,
                         text=True, check=True).stdout
    return re.search(r"^ProductCode\t(\{[0-9A-F-]+\})$", out, re.M).group(1)


def registered_products():
    """DisplayName/DisplayVersion of every product in Apps (the Uninstall key)."""
    out = reg_query(r"HKLM\Software\Microsoft\Windows\CurrentVersion\Uninstall", "/s") or ""
    found = []
    for block in out.split("\n\n"):
        name = re.search(r"DisplayName\s+REG_SZ\s+(.*)", block)
        ver = re.search(r"DisplayVersion\s+REG_SZ\s+(.*)", block)
        if name and "muxshim" in name.group(1):
            found.append((name.group(1).strip(), ver.group(1).strip() if ver else None))
    return found


class WinePrefix:
    """A fresh prefix for the run: a copy of the pristine one (made once,
    ~10-30 s), and one wineserver for it, killed at the end."""
    server = None

    @classmethod
    def start(cls):
        if not os.path.isdir(PRISTINE):
            t0 = time.monotonic()
            tmp = PRISTINE + ".%d.tmp" % os.getpid()
            shutil.rmtree(tmp, ignore_errors=True)
            env = dict(os.environ, **dict(WINE_ENV, WINEPREFIX=tmp))
            r = subprocess.run([WINE, "cmd", "/c", "exit", "0"], env=env, capture_output=True,
                               timeout=600)
            subprocess.run([WINESERVER, "-k"], env=env, timeout=60, capture_output=True)
            subprocess.run([WINESERVER, "-w"], env=env, timeout=60, capture_output=True)
            if r.returncode != 0:
                raise AssertionError("wine cannot make a prefix: %s" % r.stderr[-2000:])
            os.replace(tmp, PRISTINE)
            timed("pristine wine prefix", t0)
        subprocess.run([WINESERVER, "-k"], env=dict(os.environ, **WINE_ENV), timeout=60,
                       capture_output=True)
        shutil.rmtree(PREFIX, ignore_errors=True)
        shutil.copytree(PRISTINE, PREFIX, symlinks=True)
        cls.server = subprocess.Popen([WINESERVER, "-f", "-p"], env=dict(os.environ, **WINE_ENV),
                                      start_new_session=True, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)

    @classmethod
    def stop(cls):
        if cls.server is None:
            return
        subprocess.run([WINESERVER, "-k"], env=dict(os.environ, **WINE_ENV), timeout=60,
                       capture_output=True)
        try:
            cls.server.wait(30)
        except subprocess.TimeoutExpired:
            cls.server.kill()
            cls.server.wait(10)
        cls.server = None


class Msi(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        for what, ok in (("wine", WINE and WINESERVER), ("MUXSHIM_MSI", os.path.isfile(MSI)),
                         ("MUXSHIM_MSI_NEXT", os.path.isfile(MSI_NEXT))):
            if not ok:
                raise AssertionError("%s is missing (make integration-packages builds both MSIs)"
                                     % what)
        t0 = time.monotonic()
        WinePrefix.start()
        timed("fresh wine prefix", t0)

    @classmethod
    def tearDownClass(cls):
        WinePrefix.stop()
        harness.cleanup_all()

    def msiexec(self, *args):
        log = os.path.join(self.dir, "msiexec-%d.log" % len(os.listdir(self.dir)))
        t0 = time.monotonic()
        rc, out, err = wine_run("msiexec", *args, "/qn", "/l*v", win_path(log))
        timed("msiexec " + args[0], t0)
        with open(log, encoding="utf-8", errors="replace") as f:
            text = f.read()
        self.assertEqual(rc, 0, "msiexec %s: rc %d\n%s" % (args, rc, text[-3000:]))
        return text

    def wait_state(self, state):
        harness.wait_for(lambda: service_state() == state, 60, interval=0.3,
                         what="the service %s (sc query)" % state)

    def shim_works(self):
        """ListDevices through the shim answers as usbmuxd does directly
        (the shim redials a restarted helper with backoff: wait for it)."""
        direct = harness.run_client(["idevice_id", "-l"], self.mux.socket)
        harness.wait_for(lambda: "DeviceList" in usbmuxd_request(
            self.shim_path, {"MessageType": "ListDevices"}, timeout=30), 60, interval=0.2,
            what="ListDevices through the shim and the installed service")
        self.assertEqual(harness.run_client(["idevice_id", "-l"], self.shim_path)[:2], direct[:2])

    def test_install_use_upgrade_uninstall(self):
        self.dir = harness.tempdir("pkg-msi")
        self.mux = harness.PrivateUsbmuxd().start()
        tcp = harness.TcpRelay(self.mux.socket, name="usbmuxd-tcp").start().port
        port = harness.free_tcp_port()
        listen, upstream = "127.0.0.1:%d" % port, "tcp:127.0.0.1:%d" % tcp
        data = drive_c("ProgramData", "muxshim")
        token, log = os.path.join(data, "token"), os.path.join(data, "muxshim-host.log")
        exe = drive_c("Program Files", "muxshim", "muxshim-host.exe")
        svc_key = r"HKLM\System\CurrentControlSet\Services\muxshim-host"

        # 1. A fresh install with the user's options.
        self.assertIsNone(service_state())
        text = self.msiexec("/i", win_path(MSI), "LISTEN=" + listen, "UPSTREAM=" + upstream)
        self.wait_state("RUNNING")
        harness.wait_for(lambda: harness.tcp_listening(port), 60, what="the service listening")
        conf = reg_query(svc_key)
        self.assertRegex(conf, r"Start\s+REG_DWORD\s+0x2\b")  # automatic
        self.assertIn("--service --listen %s --upstream %s" % (listen, upstream), conf)
        self.assertIn(r'--token-file "C:\ProgramData\muxshim\token"', conf)
        self.assertIn(r'--log-file "C:\ProgramData\muxshim\muxshim-host.log"', conf)
        self.assertRegex(text, r"SetFailureActions\. Return value 1")
        with open(token) as f:
            first_token = f.read()
        self.assertRegex(first_token, r"^[0-9a-f]{64}\n$")
        def read(path):
            with open(path) as f:
                return f.read()
        harness.wait_for(lambda: os.path.exists(log) and "listening on " + listen in read(log),
                         30, what="the service's log in ProgramData")
        note("wine cannot show: the token file's ACL (SYSTEM and Administrators only; wine "
             "keeps no Windows ACLs), the service's failure actions (sc.exe failure ran and "
             "succeeded, wine does not store them), the quoting of the service's image path "
             "(wine's msi writes it unquoted; Windows Installer quotes it), the Apps entry UI")
        local_token = os.path.join(self.dir, "token")
        shutil.copy(token, local_token)  # "copy the token into the container"
        self.shim_path = os.path.join(self.dir, "shim.sock")
        harness.Shim(self.shim_path, "tunnel:" + listen, "--token-file", local_token,
                     "--tunnel-wait", 30000, log_level="info").start()
        self.shim_works()

        # 2. Upgrade to the next build, no properties: options and token kept.
        self.msiexec("/i", win_path(MSI_NEXT))
        self.wait_state("RUNNING")
        rc, out, _ = wine_run(exe, "--version")
        self.assertIn("muxshim-host %s" % version_of(MSI_NEXT), out)
        self.assertIn("--service --listen %s --upstream %s" % (listen, upstream),
                      reg_query(svc_key))
        with open(token) as f:
            self.assertEqual(f.read(), first_token)
        self.assertEqual(registered_products(), [("muxshim host helper", version_of(MSI_NEXT))])
        with open(log) as f:
            text = f.read()
        self.assertIn("signal 15: shutting down", text)  # the old one stopped cleanly
        self.assertIn("muxshim-host %s listening on %s" % (version_of(MSI_NEXT), listen), text)
        self.shim_works()

        # 3. Uninstall: everything but the token and the log goes.
        self.msiexec("/x", product_code(MSI_NEXT))
        self.assertIsNone(service_state())
        self.assertFalse(os.path.exists(os.path.dirname(exe)))
        self.assertIsNone(reg_query(r"HKLM\Software\muxshim\muxshim-host"))
        self.assertEqual(registered_products(), [])
        self.assertFalse(harness.tcp_listening(port))
        with open(token) as f:
            self.assertEqual(f.read(), first_token)
        self.assertTrue(os.path.exists(log))

        # 4. A reinstall (defaults this time) finds that token and keeps it.
        self.msiexec("/i", win_path(MSI))
        self.wait_state("RUNNING")
        self.assertIn("--listen 127.0.0.1:27016 --upstream tcp:127.0.0.1:27015",
                      reg_query(svc_key))
        with open(token) as f:
            self.assertEqual(f.read(), first_token)
        self.msiexec("/x", product_code(MSI))
        self.assertIsNone(service_state())

        # 5. TENANTS: the service runs with the tenants file (reloaded by
        # --tenants-watch, Windows having no SIGHUP) instead of the token
        # file; a shim with the tenant's token is served, one with the
        # installer's token is not. A `*` tenant: this build has no gate.
        tenants = os.path.join(self.dir, "tenants.txt")
        tenant_token = harness.write_token(os.path.join(self.dir, "alpha.key"))
        with open(tenants, "w") as f:
            f.write("# relative token paths: next to this file\r\nalpha alpha.key *\r\n")
        tenants_args = '--tenants "%s" --tenants-watch 5' % win_path(tenants)
        self.msiexec("/i", win_path(MSI), "LISTEN=" + listen, "UPSTREAM=" + upstream,
                     "TENANTS=" + win_path(tenants))
        self.wait_state("RUNNING")
        conf = reg_query(svc_key)
        self.assertIn("--log-level info %s --log-file" % tenants_args, conf)
        self.assertNotIn("--token-file", conf)
        shim_with = {}
        for name, tok in (("tenant", tenant_token), ("installer", local_token)):
            shim_with[name] = harness.Shim(
                os.path.join(self.dir, name + ".sock"), "tunnel:" + listen, "--token-file",
                tok, "--tunnel-wait", 30000, log_level="info").start()
        self.shim_path = shim_with["tenant"].listen
        self.shim_works()
        harness.wait_for(lambda: "(tenant alpha): up" in read(log), 30,
                         what="the tenant named in the service's log")
        harness.wait_for(lambda: "token mismatch" in shim_with["installer"].stderr_text(), 60,
                         what="the shim with the installer's token refused")

        # 6. An upgrade with no properties keeps TENANTS.
        self.msiexec("/i", win_path(MSI_NEXT))
        self.wait_state("RUNNING")
        self.assertIn("--log-level info %s --log-file" % tenants_args, reg_query(svc_key))
        self.shim_works()
        self.msiexec("/x", product_code(MSI_NEXT))
        self.assertIsNone(service_state())


# --- the Debian packages in a fresh Debian 12 container ----------------------

class Deb(unittest.TestCase):
    engine = None

    @classmethod
    def setUpClass(cls):
        os.environ.setdefault("MUXSHIM_DOCKER_SUITE", "1")
        import test_docker as td
        cls.td = td
        debs = sorted(glob.glob(os.path.join(DEB_DIR, "muxshim*.deb")))
        cls.debs = [d for d in debs if "-dbgsym_" not in d]
        if len(cls.debs) != 2:
            raise AssertionError("expected muxshim and muxshim-host in %s (make deb): %s"
                                 % (DEB_DIR, debs))
        reason = td.unavailable()
        if reason:
            msg = "SKIPPED: Deb: " + reason
            print("\n*** test_packages: %s ***" % msg, file=sys.stderr)
            raise unittest.SkipTest(msg)
        cls.engine = td.Engine()
        try:
            t0 = time.monotonic()
            cls.engine.start()
            if not os.path.exists(td.BASE_TAR):
                td.make_base_tar(cls.engine.dir)
            cls.engine.run("import", td.BASE_TAR, td.BASE_TAG, timeout=300)
            timed("dockerd and base image", t0)
        except BaseException:
            cls.engine.remove()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.engine:
            cls.engine.remove()
        harness.cleanup_all()

    def sh(self, script, check=True, timeout=300):
        r = self.engine.run("exec", "pkg", "sh", "-ec", script, check=False, timeout=timeout)
        if check and r.returncode != 0:
            self.fail("in the container: %s\nrc %d\n%s%s" % (script, r.returncode,
                                                             r.stdout[-3000:], r.stderr[-3000:]))
        return r

    def test_install_run_remove(self):
        d = harness.tempdir("pkg-deb")
        debdir = os.path.join(d, "debs")
        os.makedirs(debdir)
        for deb in self.debs:
            shutil.copy(deb, debdir)
        # /run/muxshim from here: the per-container gate's socket, reachable
        # from the host the way a container mounting it would reach it.
        rundir = os.path.join(d, "run-muxshim")
        os.makedirs(rundir)
        for p in (d, debdir, rundir):
            os.chmod(p, 0o755)
        self.engine.run("run", "-d", "--name", "pkg", "--network", "host", "-v",
                        debdir + ":/debs:ro", "-v", rundir + ":/run/muxshim",
                        self.td.BASE_TAG, "sleep", "infinity")
        # The base image is trimmed like the -slim one (no man pages): undo
        # that, so the container installs what a Debian 12 system would.
        self.sh("rm -f /etc/dpkg/dpkg.cfg.d/docker")
        t0 = time.monotonic()
        self.sh("apt-get update -q >/dev/null && cd /debs && "
                "DEBIAN_FRONTEND=noninteractive apt install -y ./muxshim*.deb", timeout=900)
        timed("apt install ./muxshim*.deb", t0)

        # The packaged binaries, their man pages, the user, the token.
        with open(os.path.join(ROOT, "Makefile")) as f:
            from_make = re.search(r"^VERSION\s*:=\s*(\S+)", f.read(), re.M).group(1)
        for prog in ("muxshim", "muxshim-host", "muxshim-run"):
            out = self.sh("%s --version" % prog).stdout
            self.assertIn("%s %s" % (prog, from_make), out)
            self.sh("test -s /usr/share/man/man1/%s.1.gz" % prog)
        uid = int(self.sh("id -u _muxshim").stdout)
        self.assertLess(uid, 1000)
        self.assertIn("/usr/sbin/nologin", self.sh("getent passwd _muxshim").stdout)
        st = self.sh("stat -c '%U %G %a %s' /etc/muxshim/token").stdout.split()
        self.assertEqual(st, ["root", "_muxshim", "640", "65"])
        first_token = self.sh("cat /etc/muxshim/token").stdout
        self.assertRegex(first_token, r"^[0-9a-f]{64}\n$")

        # The unit: verified (with man-db, as on a standard system, so that
        # its Documentation= page is found) and its sandbox scored (nothing
        # runs systemd here).
        self.sh("DEBIAN_FRONTEND=noninteractive apt-get install -y -q man-db >/dev/null",
                timeout=600)
        self.assertIn("/usr/share/man/man1/muxshim-host.1.gz",
                      self.sh("man -w muxshim-host").stdout)
        unit = "/lib/systemd/system/muxshim-host.service"
        r = self.sh("systemd-analyze verify %s 2>&1" % unit)
        self.assertEqual(r.stdout.strip(), "", r.stdout)
        r = self.sh("systemd-analyze security --offline=true --no-pager %s 2>&1" % unit)
        m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout)
        self.assertTrue(m, r.stdout[-2000:])
        self.assertLessEqual(float(m.group(1)), 3.0, r.stdout[-3000:])
        self.sh("test -L /etc/systemd/system/multi-user.target.wants/muxshim-host.service")
        note("the container runs no systemd: the unit is verified and its sandbox scored "
             "(systemd-analyze security, exposure %s), the helper started below as the unit "
             "starts it, but not by systemd itself, so the sandbox options do not apply there"
             % m.group(1))

        # The daemon comes up as the unit starts it: its ExecStart, with
        # /etc/default/muxshim-host's options, as _muxshim.
        mux = harness.PrivateUsbmuxd().start()
        tcp = harness.TcpRelay(mux.socket, name="usbmuxd-tcp").start().port
        port = harness.free_tcp_port()
        unit_text = self.sh("cat %s" % unit).stdout
        execstart = re.search(r"^ExecStart=(.*)$", unit_text, re.M).group(1)
        self.sh("sed -i 's|^MUXSHIM_HOST_OPTS=.*|MUXSHIM_HOST_OPTS=\"--listen 127.0.0.1:%d "
                "--upstream tcp:127.0.0.1:%d\"|' /etc/default/muxshim-host" % (port, tcp))
        self.engine.run("exec", "-d", "pkg", "sh", "-c",
                        "echo $$ >/tmp/helper.pid; . /etc/default/muxshim-host; "
                        "exec setpriv --reuid=_muxshim --regid=_muxshim --clear-groups "
                        "--no-new-privs %s "
                        ">/tmp/helper.log 2>&1" % execstart)
        harness.wait_for(lambda: harness.tcp_listening(port), 60,
                         what="the packaged helper listening\n" +
                         self.sh("cat /tmp/helper.log", check=False).stdout)
        token = os.path.join(d, "token")
        with open(token, "w") as f:
            f.write(first_token)
        os.chmod(token, 0o600)
        shim_path = os.path.join(d, "shim.sock")
        harness.Shim(shim_path, "tunnel:127.0.0.1:%d" % port, "--token-file", token,
                     "--tunnel-wait", 30000, log_level="info").start()
        direct = harness.run_client(["idevice_id", "-l"], mux.socket)
        self.assertIn("DeviceList", usbmuxd_request(shim_path, {"MessageType": "ListDevices"},
                                                    timeout=60))
        self.assertEqual(harness.run_client(["idevice_id", "-l"], shim_path)[:2], direct[:2])
        self.assertIn("token required", self.sh("cat /tmp/helper.log").stdout)
        self.sh("kill $(cat /tmp/helper.pid)")

        # The per-container template unit: installed, not enabled, its
        # example config in the docs; an instance with that config verifies.
        tmpl = "/lib/systemd/system/muxshim@.service"
        example = "/usr/share/doc/muxshim-host/examples/example.conf"
        self.sh("test -f %s && test -f %s" % (tmpl, example))
        self.assertEqual(self.sh("ls /etc/systemd/system/*.wants/ | grep -c muxshim@ || true")
                         .stdout.strip(), "0")
        self.sh("cp %s /etc/muxshim/demo.conf" % example)
        r = self.sh("systemd-analyze verify /lib/systemd/system/muxshim@demo.service 2>&1")
        self.assertEqual(r.stdout.strip(), "", r.stdout)
        r = self.sh("systemd-analyze security --offline=true --no-pager muxshim@demo.service "
                    "2>&1", check=False)
        m = re.search(r"Overall exposure level for \S+: ([0-9.]+ \S+)", r.stdout)
        note("muxshim@.service (root, its own sandbox options): systemd-analyze security "
             "exposure %s" % (m.group(1) if m else "not reported"))

        # The packaged helper runs --serve as the unit runs it: its ExecStart
        # for instance demo, with the example config (its device list) and
        # an upstream set in that file; the socket answers ListDevices.
        self.assertIn("--serve PATH", self.sh("muxshim-host --help").stdout)
        self.sh("echo MUXSHIM_UPSTREAM=tcp:127.0.0.1:%d >> /etc/muxshim/demo.conf" % tcp)
        tmpl_text = self.sh("cat %s" % tmpl).stdout
        execstart = re.search(r"^ExecStart=(.*)$", tmpl_text, re.M).group(1).replace("%i", "demo")
        default_upstream = re.search(r"^Environment=(MUXSHIM_UPSTREAM=\S+)$", tmpl_text,
                                     re.M).group(1)
        self.sh("mkdir -p -m 0755 /run/muxshim/demo")  # RuntimeDirectory=
        self.engine.run("exec", "-d", "pkg", "sh", "-c",
                        "echo $$ >/tmp/gate.pid; %s; . /etc/muxshim/demo.conf; exec %s "
                        ">/tmp/gate.log 2>&1" % (default_upstream, execstart))
        gate = os.path.join(rundir, "demo", "usbmuxd")
        harness.wait_for(lambda: os.path.exists(gate), 60,
                         what="the packaged gate's socket\n" +
                         self.sh("cat /tmp/gate.log", check=False).stdout)
        self.assertIn("DeviceList", usbmuxd_request(gate, {"MessageType": "ListDevices"},
                                                    timeout=60))
        self.assertEqual(harness.run_client(["idevice_id", "-l"], gate)[:2], direct[:2])
        glog = self.sh("cat /tmp/gate.log").stdout
        self.assertRegex(glog, r"serving /run/muxshim/demo/usbmuxd for demo .*upstream "
                         r"\S*127\.0\.0\.1:%d" % tcp)
        self.sh("kill $(cat /tmp/gate.pid)")
        harness.wait_for(lambda: not os.path.exists(gate), 30,
                         what="the gate removing its socket at exit")

        # Reinstall keeps the token; remove keeps it; purge removes it.
        self.sh("cd /debs && DEBIAN_FRONTEND=noninteractive apt install -y --reinstall "
                "./muxshim-host_*.deb")
        self.assertEqual(self.sh("cat /etc/muxshim/token").stdout, first_token)
        self.sh("DEBIAN_FRONTEND=noninteractive apt-get remove -y muxshim-host")
        self.sh("test -e /etc/muxshim/token && ! test -e /usr/bin/muxshim-host")
        self.sh("DEBIAN_FRONTEND=noninteractive apt-get purge -y muxshim-host")
        self.sh("! test -e /etc/muxshim/token && ! test -e /etc/default/muxshim-host")
        self.sh("DEBIAN_FRONTEND=noninteractive apt-get purge -y muxshim && "
                "! test -e /usr/bin/muxshim")


if __name__ == "__main__":
    unittest.main()
