"""The test tools' own contracts that the suites rely on: muxconn reports
what a run cut short by its --timeout did, and tcprelay (the stand-in for
Apple's 127.0.0.1:27015 listener) relays, closes where TIME_WAIT belongs,
and waits for a UNIX socket that is not there yet."""
import os
import socket
import struct
import subprocess
import sys
import threading
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import harness  # noqa: E402


def time_wait(port):
    """(this side's, the peer's): TIME_WAIT sockets whose local port is
    `port`, and those whose peer port is."""
    out = subprocess.run(["ss", "-Htan", "state", "time-wait"], capture_output=True,
                         text=True, check=True).stdout
    local = peer = 0
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 4:
            local += f[-2].endswith(":%d" % port)
            peer += f[-1].endswith(":%d" % port)
    return local, peer


class Muxconn(unittest.TestCase):
    def tearDown(self):
        harness.cleanup_all()

    def test_timeout_reports_what_was_done(self):
        fd = harness.FakeDev(os.path.join(harness.tempdir("tools"), "fd.sock")).start()
        n = 10 ** 9   # more than any machine does in 2 s
        r = harness.muxconn("--list-loop", n, "--parallel", 2, "--timeout", 2,
                            socket=fd.socket, check=False)
        self.assertFalse(r["ok"], r)
        self.assertTrue(r["timed_out"], r)
        self.assertGreater(r["ops_ok"], 0, r)
        self.assertEqual(r["list_sessions"], r["ops_ok"], r)
        self.assertEqual(r["ops_failed"], 0, r)
        self.assertEqual(r["ops_ok"] + r["ops_failed"] + r["ops_unfinished"], n, r)

    def test_finished_run_counts_too(self):
        fd = harness.FakeDev(os.path.join(harness.tempdir("tools"), "fd.sock")).start()
        r = harness.muxconn("--list-loop", 300, "--parallel", 3, socket=fd.socket)
        self.assertEqual((r["ops_ok"], r["ops_failed"], r["ops_unfinished"]), (300, 0, 0), r)

    def test_lists_a_thousand_devices(self):
        # fakedev's maximum: a DeviceList of about 500 KB, within the
        # codec's bound for replies (1 MiB) on both sides; before the tools
        # shared the codec, 64 KiB stopped both near 120 devices.
        fd = harness.FakeDev(os.path.join(harness.tempdir("tools"), "fd.sock"), 1000).start()
        r = harness.muxconn("--list-once", socket=fd.socket)
        self.assertEqual(r["devices"], 1000, r)
        self.assertEqual(r["serials"], ["fakedev-%04d" % i for i in range(1, 1001)])


class TcpRelay(unittest.TestCase):
    def tearDown(self):
        harness.cleanup_all()

    def test_relays_many_sessions(self):
        fd = harness.FakeDev(os.path.join(harness.tempdir("tools"), "fd.sock")).start()
        relay = harness.TcpRelay(fd.socket).start()
        r = harness.muxconn("--list-loop", 2000, "--parallel", 8,
                            tcp="127.0.0.1:%d" % relay.port, timeout=300)
        self.assertEqual(r["list_sessions"], 2000, r)
        self.assertEqual(harness.settled_fd_count(relay), 5,   # stdio, listener, epoll
                         "tcprelay keeps connections open")

    def serve(self, path, n, close_first):
        """A UNIX server that answers each connection with b'hi', then closes
        it at once (close_first, as usbmuxd does on a bad request) or once
        the client has gone."""
        srv = socket.socket(socket.AF_UNIX)
        srv.bind(path)
        srv.listen(16)

        def run():
            for _ in range(n):
                c, _ = srv.accept()
                c.sendall(b"hi")
                if not close_first:
                    while c.recv(4096):
                        pass
                c.close()
            srv.close()
        threading.Thread(target=run, daemon=True).start()

    def test_time_wait_stays_off_the_client(self):
        d = harness.tempdir("tools")
        path = os.path.join(d, "srv.sock")
        self.serve(path, 20, close_first=False)
        relay = harness.TcpRelay(path).start()
        before = time_wait(relay.port)
        # The client ends first with a reset, as muxshim-host does: no
        # TIME_WAIT on either side.
        for _ in range(20):
            c = socket.create_connection(("127.0.0.1", relay.port), timeout=30)
            self.assertEqual(c.recv(2), b"hi")
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
        self.assertEqual(time_wait(relay.port), before)
        # The UNIX side ends first: the relay closes first, so TIME_WAIT,
        # if any, is the relay's (local port), never the client's.
        relay.stop()
        os.unlink(path)
        self.serve(path, 20, close_first=True)
        relay = harness.TcpRelay(path, relay.port).start()
        for _ in range(20):
            c = socket.create_connection(("127.0.0.1", relay.port), timeout=30)
            self.assertEqual(c.recv(2), b"hi")
            self.assertEqual(c.recv(1), b"")   # the relay's FIN came first
            c.close()
        local, peer = time_wait(relay.port)
        self.assertEqual(peer, before[1], "TIME_WAIT on the client's side")
        self.assertGreaterEqual(local - before[0], 20)

    def test_waits_for_the_unix_socket(self):
        """A session that arrives while usbmuxd is not there yet (restart)
        is held and relayed once it is."""
        d = harness.tempdir("tools")
        path = os.path.join(d, "late.sock")
        relay = harness.TcpRelay(path).start()
        c = socket.create_connection(("127.0.0.1", relay.port), timeout=60)
        c.sendall(b"x")
        harness.wait_for(lambda: relay.fd_count() == 6, 30,   # + the client's connection
                         what="tcprelay to hold the client")
        self.serve(path, 1, close_first=True)
        self.assertEqual(c.recv(2), b"hi")
        c.close()
        self.assertEqual(relay.stderr_text(), "")


if __name__ == "__main__":
    unittest.main()
