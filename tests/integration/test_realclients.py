"""Real libusbmuxd clients against the real usbmuxd, directly and through muxshim.

Run from the repo root:  python3 -m unittest discover -s tests/integration -t . -v
Needs: build/muxshim (`make`), build/tests/{lmclient,fakedev,devsvc} (`make tools`),
Debian's usbmuxd, idevice_id and iproxy. A missing muxshim is a failure, not a skip.
"""

import os
import socket
import sys
import threading
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import harness as h  # noqa: E402

EXPECTED_LMCLIENT = [
    "list rc=ok count=0 serials=",
    "buid rc=0 value={buid}",
    "save rc=0",
    "read rc=0 size={size} match=yes",
    "delete rc=0",
    "reread rc=-2",
    "events rc=0 count=0 list=",
    "unsubscribe rc=0",
    "connect dev=12345 port=22 rc=-19",
]

ECHO_PAYLOAD = bytes((i * 7 + 3) % 251 for i in range(64 * 1024))


def require_shim(testcase):
    b = h.shim_binary()
    if not (os.path.isfile(b) and os.access(b, os.X_OK)):
        testcase.fail("muxshim binary %s is missing: build it with `make` (or set MUXSHIM_BIN); "
                      "this test fails rather than skips without it" % b)
    return b


def echo_through(port, payload, timeout=10.0):
    """Send "ECHO\n" + payload to 127.0.0.1:port and read len(payload) bytes back.

    No half-close: iproxy closes both directions as soon as its client sends
    EOF, so the echo would be lost (seen with iproxy 2.0.2 straight to fakedev).
    The sender runs in a thread so that a full pipe cannot deadlock the test.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.settimeout(timeout)
        errors = []

        def send():
            try:
                s.sendall(b"ECHO\n" + payload)
            except OSError as e:
                errors.append(e)

        t = threading.Thread(target=send, daemon=True)
        t.start()
        chunks, got = [], 0
        try:
            while got < len(payload):
                c = s.recv(65536)
                if not c:
                    break
                chunks.append(c)
                got += len(c)
        except (socket.timeout, ConnectionResetError):
            pass
        t.join(timeout)
        return b"".join(chunks)


def closed_without_data(port, timeout=5.0):
    """Connect to 127.0.0.1:port and report how the peer ends the connection:
    "eof", "reset", or "open" (nothing within timeout). Data counts as a failure."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.settimeout(timeout)
        try:
            data = s.recv(4096)
        except ConnectionResetError:
            return "reset"
        except socket.timeout:
            return "open"
        return "eof" if data == b"" else "data:%r" % data[:64]


class RealClients(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.lmclient = h.tool("lmclient")
        cls.mux = h.PrivateUsbmuxd().start()
        cls.addClassCleanup(cls.mux.stop)

    def setUp(self):
        if not self.mux.alive():          # a previous test may have broken it
            self.mux.start()

    # -- helpers -----------------------------------------------------------

    def start_shim(self, upstream, *extra):
        require_shim(self)
        # The broker, muxshim's default; `make integration-passthrough` runs
        # this suite again with MUXSHIM_SHIM_ARGS=--passthrough (the relay).
        shim = h.Shim(os.path.join(h.tempdir("shim"), "usbmuxd"), upstream, "--broker", *extra)
        shim.start()
        self.addCleanup(self._stop_shim, shim)
        return shim

    def _stop_shim(self, shim):
        was_alive = shim.alive()
        rc = shim.stop()
        if was_alive:
            self.assertEqual(rc, 0, "muxshim did not exit 0 on SIGTERM\n" + shim.log_tail())
            self.assertFalse(os.path.exists(shim.listen),
                             "muxshim left its socket behind on SIGTERM")

    def start_proc(self, proc):
        proc.start()
        self.addCleanup(proc.stop)
        return proc

    def run_lmclient(self, socket_path, *args):
        return h.run_client([self.lmclient, "all"] + list(args), socket_path, timeout=30)

    def context(self, *procs):
        return "\n".join([self.mux.log_tail(20)] + [p.log_tail(30) for p in procs])

    # -- direct --------------------------------------------------------------

    def test_idevice_id_direct(self):
        rc, out, err = h.run_client(["idevice_id", "-l"], self.mux.socket)
        self.assertEqual((rc, out), (0, ""), "stderr: %s\n%s" % (err, self.context()))

    def test_idevice_id_no_daemon(self):
        rc, out, err = h.run_client(["idevice_id", "-l"],
                                    os.path.join(h.tempdir("nodaemon"), "usbmuxd"))
        self.assertEqual(rc, 255, "idevice_id without a daemon: out=%r err=%r" % (out, err))

    def test_lmclient_direct(self):
        rc, out, err = self.run_lmclient(self.mux.socket)
        self.assertEqual(rc, 0, "lmclient failed directly:\n%s%s\n%s" % (out, err, self.context()))
        lines = out.splitlines()
        self.assertEqual(len(lines), len(EXPECTED_LMCLIENT), out)
        buid = lines[1].split("value=", 1)[1]
        size = lines[3].split("size=", 1)[1].split()[0] if "size=" in lines[3] else "?"
        expected = [l.format(buid=buid, size=size) for l in EXPECTED_LMCLIENT]
        self.assertEqual(lines, expected)
        self.assertRegex(buid, r"^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$")

    # -- through muxshim -----------------------------------------------------

    def test_idevice_id_via_shim(self):
        direct = h.run_client(["idevice_id", "-l"], self.mux.socket)
        shim = self.start_shim(self.mux.socket)
        via = h.run_client(["idevice_id", "-l"], shim.listen)
        self.assertEqual(via, direct, self.context(shim))
        self.assertTrue(shim.alive(), "muxshim died\n" + shim.log_tail())

    def test_lmclient_via_shim_identical(self):
        direct = self.run_lmclient(self.mux.socket)
        self.assertEqual(direct[0], 0, "lmclient failed directly:\n%s%s" % direct[1:])
        shim = self.start_shim(self.mux.socket)
        via = self.run_lmclient(shim.listen)
        self.assertEqual(via[1], direct[1], "stdout differs via muxshim\n" + self.context(shim))
        self.assertEqual(via, direct, self.context(shim))
        # Twice more: sessions must not disturb each other or leak state.
        for _ in range(2):
            self.assertEqual(self.run_lmclient(shim.listen, "--events-ms", "300")[1].splitlines(),
                             direct[1].splitlines(), self.context(shim))
        self.assertTrue(shim.alive(), "muxshim died\n" + shim.log_tail())

    def test_lmclient_fakedev_via_shim_identical(self):
        """A fake device: device list, events and a Connect tunnel match direct."""
        svc = self.start_proc(h.DevSvc())
        dev = self.start_proc(h.FakeDev(os.path.join(h.tempdir("fakedev"), "usbmuxd"), 2))
        args = ["--expect-devices", "2", "--connect-port", str(svc.port), "--no-pair-check"]
        direct = self.run_lmclient(dev.socket, *args)
        self.assertEqual(direct[0], 0, "lmclient vs fakedev:\n%s%s\n%s"
                         % (direct[1], direct[2], self.context(dev, svc)))
        shim = self.start_shim(dev.socket)
        via = self.run_lmclient(shim.listen, *args)
        self.assertEqual(via, direct, self.context(shim, dev, svc))

    # -- iproxy --------------------------------------------------------------

    def test_iproxy_fakedev_direct(self):
        """Baseline for the test doubles: iproxy -> fakedev -> devsvc."""
        svc = self.start_proc(h.DevSvc())
        dev = self.start_proc(h.FakeDev(os.path.join(h.tempdir("fakedev"), "usbmuxd"), 1))
        ip = self.start_proc(h.Iproxy(dev.socket, svc.port))
        got = echo_through(ip.lport, ECHO_PAYLOAD)
        self.assertEqual(len(got), len(ECHO_PAYLOAD), self.context(ip, dev, svc))
        self.assertEqual(got, ECHO_PAYLOAD)

    def test_iproxy_fakedev_via_shim(self):
        svc = self.start_proc(h.DevSvc())
        dev = self.start_proc(h.FakeDev(os.path.join(h.tempdir("fakedev"), "usbmuxd"), 1))
        shim = self.start_shim(dev.socket)
        for i in range(3):                      # one usbmuxd session per TCP client
            # A fresh iproxy per round: iproxy 2.0.2 select()s with nfds taken
            # from its usbmuxd fd, so once a client's fd is the higher one it
            # never reads that client (its bug, seen straight to fakedev too).
            ip = self.start_proc(h.Iproxy(shim.listen, svc.port))
            got = echo_through(ip.lport, ECHO_PAYLOAD)
            self.assertEqual(len(got), len(ECHO_PAYLOAD),
                             "round %d\n%s" % (i, self.context(shim, ip, dev, svc)))
            self.assertEqual(got, ECHO_PAYLOAD, "round %d: payload corrupted" % i)
        self.assertTrue(shim.alive(), "muxshim died\n" + shim.log_tail())

    def _iproxy_no_device(self, socket_path, *procs):
        ip = self.start_proc(h.Iproxy(socket_path, 22))
        for i in range(2):
            how = closed_without_data(ip.lport)
            self.assertIn(how, ("eof", "reset"),
                          "round %d: iproxy should close the client when there is no device, "
                          "got %s\n%s" % (i, how, self.context(ip, *procs)))
        self.assertTrue(ip.alive(), "iproxy exited\n" + ip.log_tail())

    def test_iproxy_no_device_direct(self):
        self._iproxy_no_device(self.mux.socket)

    def test_iproxy_no_device_via_shim(self):
        shim = self.start_shim(self.mux.socket)
        self._iproxy_no_device(shim.listen, shim)
        self.assertTrue(shim.alive(), "muxshim died\n" + shim.log_tail())


if __name__ == "__main__":
    unittest.main()
