"""muxshim --broker: answers from a device table, one upstream subscription,
Listen clients that outlive their upstream, the device filter.

Real peers wherever they exist: Debian's usbmuxd behind the shim (answers
compared byte for byte with direct ones), idevice_id and lmclient (libusbmuxd);
fakedev where devices are needed (no iPhone here). Upstream connections are
counted at the upstream (fakedev --verbose logs each one).
"""

import json
import os
import plistlib
import queue
import signal
import socket
import subprocess
import struct
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from tunnel_util import Helper, recv_exact  # noqa: E402

LIST = {"MessageType": "ListDevices"}
# Generous bounds: they only end a wait for a condition that is expected
# long before them, on any machine.
WAIT = 30


def raw(obj, tag=1):
    body = plistlib.dumps(obj)
    return struct.pack("<IIII", 16 + len(body), 1, 8, tag) + body


def read_msg(s):
    """(version, message, tag, body bytes, parsed body or None)."""
    hdr = recv_exact(s, 16)
    length, version, message, tag = struct.unpack("<IIII", hdr)
    body = recv_exact(s, length - 16)
    return version, message, tag, hdr + body, plistlib.loads(body) if version == 1 else None


def session(path, timeout=WAIT):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(path)
    return s


def read_to_eof(s):
    got = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return got
        got += chunk


def ask(path, obj, tag=1):
    """One request on a fresh connection; the whole reply message as bytes."""
    with session(path) as s:
        s.sendall(raw(obj, tag))
        return read_msg(s)[3]


NODE_CLIENT = os.path.join(harness.ROOT, "tests", "clients", "node", "usbmux_client.js")


def appium(path, *ops):
    """Appium's usbmuxd client (npm: appium-ios-device) against path."""
    if not os.path.isdir(os.path.join(os.path.dirname(NODE_CLIENT), "node_modules")):
        raise AssertionError("the npm clients are not installed: run `make clients` "
                             "(this test fails rather than skips without them)")
    r = subprocess.run(["node", NODE_CLIENT, path] + [str(o) for o in ops], capture_output=True,
                       text=True, timeout=120)
    if r.returncode != 0:
        raise AssertionError("usbmux_client.js %s: rc %d: %s" % (" ".join(map(str, ops)),
                                                                  r.returncode, r.stderr))
    return json.loads(r.stdout)


class NodeUsbmuxListener:
    """node-usbmux (npm: usbmux) listening on path, through
    tests/clients/node/usbmux_listen.js: its events, one dict each."""

    SCRIPT = os.path.join(os.path.dirname(NODE_CLIENT), "usbmux_listen.js")

    def __init__(self, path):
        if not os.path.isdir(os.path.join(os.path.dirname(NODE_CLIENT), "node_modules", "usbmux")):
            raise AssertionError("the npm clients are not installed: run `make clients` "
                                 "(this test fails rather than skips without them)")
        self.events = queue.Queue()
        self.p = subprocess.Popen(["node", self.SCRIPT, path], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.p.stdout:
            self.events.put(json.loads(line))
        self.events.put({"ev": "exit"})

    def take(self, n, what):
        """The next n events; a client that has not sent them within the
        bound has lost them."""
        got = []
        deadline = time.monotonic() + 60
        while len(got) < n:
            try:
                got.append(self.events.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError("node-usbmux: %s: %d of %d events: %r"
                                     % (what, len(got), n, got)) from None
        return got

    def pending(self):
        """Events already here (after an exchange that proves the earlier
        ones were delivered: nothing more can be owed)."""
        got = []
        while not self.events.empty():
            got.append(self.events.get())
        return got

    def tunnel(self, udid, port):
        self.p.stdin.write("tunnel %s %d\n" % (udid, port))
        self.p.stdin.flush()
        return self.take(1, "tunnel to " + udid)[0]

    def close(self):
        self.p.kill()
        self.p.wait()
        self.reader.join(10)  # it reads to the EOF of the pipe
        self.p.stdin.close()
        self.p.stdout.close()


def upstream_connections(fakedev):
    return fakedev.stderr_text().count(": open")


def serials(reply_bytes):
    d = plistlib.loads(reply_bytes[16:])
    return [e["Properties"]["SerialNumber"] for e in d["DeviceList"]]


class RealUsbmuxd(unittest.TestCase):
    """Debian's usbmuxd behind the broker, on a UNIX socket and through the
    tunnel: the same bytes as direct."""

    @classmethod
    def setUpClass(cls):
        cls.mux = harness.PrivateUsbmuxd().start()
        cls.d = harness.tempdir("broker-real")
        cls.unix = os.path.join(cls.d, "unix.sock")
        cls.shim = harness.Shim(cls.unix, cls.mux.socket, "--broker").start()
        cls.helper = Helper("unix:" + cls.mux.socket).start()
        cls.tun = os.path.join(cls.d, "tunnel.sock")
        cls.tshim = harness.Shim(cls.tun, cls.helper.tunnel, "--broker").start()

    @classmethod
    def tearDownClass(cls):
        harness.cleanup_all()

    def test_answers_identical_to_direct(self):
        requests = [
            LIST,
            {"MessageType": "ReadBUID"},
            {"MessageType": "Connect", "DeviceID": 12345, "PortNumber": 0x7ef2},
            {"MessageType": "ReadPairRecord", "PairRecordID": "no-such-device"},
            {"MessageType": "SomethingNew", "Value": 1},
        ]
        for req in requests:
            direct = ask(self.mux.socket, req, tag=7)
            for path in (self.unix, self.tun):
                self.assertEqual(ask(path, req, tag=7), direct, (path, req))

    def test_real_clients(self):
        for path in (self.unix, self.tun):
            d = harness.run_client(["idevice_id", "-l"], self.mux.socket)
            b = harness.run_client(["idevice_id", "-l"], path)
            self.assertEqual(b[:2], d[:2])
            lm = harness.tool("lmclient")
            rc, out, err = harness.run_client([lm, "all"], path)
            self.assertEqual(rc, 0, err)
            rc_d, out_d, _ = harness.run_client([lm, "all"], self.mux.socket)
            self.assertEqual(out, out_d)

    def test_appium_client(self):
        # Several requests on one connection (Appium's tags 0, 1, 2): two
        # answered here, the pair record forwarded.
        direct = appium(self.mux.socket, "list", "buid", "pair:no-such-device")
        for path in (self.unix, self.tun):
            self.assertEqual(appium(path, "list", "buid", "pair:no-such-device"), direct)

    def test_several_requests_on_one_connection(self):
        with session(self.unix) as s:
            for tag, req in enumerate([LIST, {"MessageType": "ReadBUID"}, LIST,
                                       {"MessageType": "ReadPairRecord", "PairRecordID": "x"},
                                       LIST], start=1):
                s.sendall(raw(req, tag))
                v, m, t, whole, body = read_msg(s)
                self.assertEqual(t, tag)
                self.assertEqual(whole, ask(self.mux.socket, req, tag), req)

    def test_listen_survives_usbmuxd_restart(self):
        with session(self.unix) as s:
            s.sendall(raw({"MessageType": "Listen"}, 3))
            self.assertEqual(read_msg(s)[4], {"MessageType": "Result", "Number": 0})
            subscribes = self.shim.stderr_text().count("subscribed to the upstream")
            self.mux.stop()
            harness.wait_for(lambda: "subscription lost" in self.shim.stderr_text(), WAIT,
                             what="the broker noticing")
            self.mux.start()
            harness.wait_for(lambda: self.shim.stderr_text().count("subscribed to the upstream")
                             > subscribes, WAIT, what="the broker resubscribing")
            # Still open: nothing to read, no EOF.
            s.settimeout(0.2)
            with self.assertRaises(socket.timeout):
                s.recv(1)
        self.assertEqual(harness.run_client(["idevice_id", "-l"], self.unix)[0], 0)


class WithDevices(unittest.TestCase):
    """fakedev (3 devices) behind the broker."""

    def setUp(self):
        self.d = harness.tempdir("broker-dev")
        self.up = os.path.join(self.d, "fakedev.sock")
        self.dev = harness.FakeDev(self.up, 3, "--verbose").start()
        self.path = os.path.join(self.d, "shim.sock")

    def tearDown(self):
        harness.cleanup_all()

    def start_shim(self, *args, env=None):
        self.shim = harness.Shim(self.path, self.up, "--broker", *args, env=env).start()
        harness.wait_for(lambda: "subscribed to the upstream" in self.shim.stderr_text(), WAIT,
                         what="the subscription")
        return self.shim

    def test_repeated_questions_cost_the_upstream_nothing(self):
        self.start_shim()
        before = upstream_connections(self.dev)
        direct = None
        for i in range(200):
            got = ask(self.path, LIST, tag=i + 1)
            if direct is None:
                direct = ask(self.up, LIST, tag=i + 1)
                before += 1  # that one was ours, directly
                self.assertEqual(got, direct)
            self.assertEqual(serials(got), ["fakedev-0001", "fakedev-0002", "fakedev-0003"])
        self.assertEqual(upstream_connections(self.dev), before,
                         "ListDevices through the broker reached the upstream")
        r = subprocess.run([harness.shim_binary(), "stats", "--json", "--listen", self.path],
                           capture_output=True, text=True, timeout=WAIT)
        self.assertEqual(r.returncode, 0, r.stderr)
        b = json.loads(r.stdout)["broker"]
        self.assertEqual(b["local"]["ListDevices"], 200)
        self.assertEqual(b["forwarded"]["ListDevices"], 0)
        self.assertEqual((b["subscription"], b["devices"], b["subscribes"]), ("live", 3, 1))
        r = subprocess.run([harness.shim_binary(), "stats", "--listen", self.path],
                           capture_output=True, text=True, timeout=WAIT)
        self.assertIn("broker: subscription live", r.stdout)

    def test_list_devices_answer_follows_every_table_change(self):
        """The broker keeps its encoded ListDevices reply while the table is
        unchanged: the first answer after a change must show it (no retries
        here), and every answer, fresh or kept, is usbmuxd's (fakedev's)
        own bytes under the request's tag."""
        self.start_shim()
        sub = session(self.path)
        sub.sendall(raw({"MessageType": "Listen"}, 4))
        read_msg(sub)  # Result
        for _ in range(3):
            read_msg(sub)  # Attached

        def both(tag):
            got = ask(self.path, LIST, tag)
            self.assertEqual(got, ask(self.up, LIST, tag))
            self.assertEqual(struct.unpack("<I", got[12:16])[0], tag)
            return serials(got)

        three = ["fakedev-0001", "fakedev-0002", "fakedev-0003"]
        for tag in (1, 2, 3):  # encoded once, then kept
            self.assertEqual(both(tag), three)
        # The broker writes the event to its subscribers while it updates
        # its table, in one turn of its loop: once the event is here, the
        # next connection is answered from the new table.
        self.dev.send_signal(signal.SIGUSR1)  # unplugs fakedev-0003
        self.assertEqual(read_msg(sub)[4], {"MessageType": "Detached", "DeviceID": 3})
        for tag in (4, 5):
            self.assertEqual(both(tag), three[:2])
        self.dev.send_signal(signal.SIGUSR2)  # and back
        self.assertEqual(read_msg(sub)[4]["MessageType"], "Attached")
        for tag in (6, 7):
            self.assertEqual(both(tag), three)
        sub.close()

    def test_connect_goes_through(self):
        svc = harness.DevSvc().start()
        self.start_shim()
        r = harness.muxconn("--port", svc.port, "--echo", 65536, "--device", 2, socket=self.path)
        self.assertTrue(r.get("ok"), r)
        got = appium(self.path, "list", "echo:3:%d" % svc.port)
        self.assertEqual(got, appium(self.up, "list", "echo:3:%d" % svc.port))
        self.assertEqual(got["echo"], "ok")

    def test_listen_sees_detached_then_attached_when_upstream_restarts(self):
        self.start_shim()
        with session(self.path) as s:
            s.sendall(raw({"MessageType": "Listen"}, 9))
            self.assertEqual(read_msg(s)[4]["Number"], 0)
            attached = [read_msg(s)[4] for _ in range(3)]
            self.assertEqual([a["MessageType"] for a in attached], ["Attached"] * 3)
            self.assertEqual(sorted(a["DeviceID"] for a in attached), [1, 2, 3])
            self.dev.stop()
            detached = [read_msg(s)[4] for _ in range(3)]
            self.assertEqual([e["MessageType"] for e in detached], ["Detached"] * 3)
            self.assertEqual(sorted(e["DeviceID"] for e in detached), [1, 2, 3])
            # While the upstream is away: no devices, honestly.
            self.assertEqual(serials(ask(self.path, LIST)), [])
            self.dev = harness.FakeDev(self.up, 3, "--verbose").start()
            back = [read_msg(s)[4] for _ in range(3)]
            self.assertEqual([e["MessageType"] for e in back], ["Attached"] * 3)
            self.assertEqual(sorted(e["Properties"]["SerialNumber"] for e in back),
                             ["fakedev-0001", "fakedev-0002", "fakedev-0003"])
            # Both DeviceIDs agree (clients read one or the other).
            for e in back:
                self.assertEqual(e["DeviceID"], e["Properties"]["DeviceID"])

    def test_listen_survives_a_helper_restart(self):
        # The broker over the tunnel: the helper (muxshim-host) restarts, as
        # on an upgrade. The Listen client sees its devices go and come
        # back, and never an EOF.
        helper = Helper("unix:" + self.up).start()
        self.shim = harness.Shim(self.path, helper.tunnel, "--broker").start()
        harness.wait_for(lambda: "subscribed to the upstream" in self.shim.stderr_text(), WAIT,
                         what="the subscription")
        with session(self.path) as s:
            s.sendall(raw({"MessageType": "Listen"}, 4))
            self.assertEqual(read_msg(s)[4]["Number"], 0)
            self.assertEqual(sorted(read_msg(s)[4]["DeviceID"] for _ in range(3)), [1, 2, 3])
            port = helper.port
            helper.stop()
            gone = [read_msg(s)[4] for _ in range(3)]
            self.assertEqual(sorted((e["MessageType"], e["DeviceID"]) for e in gone),
                             [("Detached", 1), ("Detached", 2), ("Detached", 3)])
            Helper("unix:" + self.up, port=port).start()
            back = [read_msg(s)[4] for _ in range(3)]
            self.assertEqual(sorted((e["MessageType"], e["Properties"]["SerialNumber"])
                                    for e in back),
                             [("Attached", "fakedev-0001"), ("Attached", "fakedev-0002"),
                              ("Attached", "fakedev-0003")])
        self.assertEqual(serials(ask(self.path, LIST)),
                         ["fakedev-0001", "fakedev-0002", "fakedev-0003"])

    def test_plug_and_unplug_reach_every_subscriber(self):
        self.start_shim()
        subs = []
        for version in (1, 0):
            s = session(self.path)
            if version:
                s.sendall(raw({"MessageType": "Listen"}, 4))
            else:
                s.sendall(struct.pack("<IIII", 16, 0, 3, 4))
            read_msg(s)  # Result
            for _ in range(3):
                read_msg(s)
            subs.append((version, s))
        self.dev.send_signal(signal.SIGUSR1)  # unplugs fakedev-0003
        for version, s in subs:
            v, m, t, whole, body = read_msg(s)
            if version:
                self.assertEqual(body, {"MessageType": "Detached", "DeviceID": 3})
            else:
                self.assertEqual((m, struct.unpack("<I", whole[16:20])[0]), (5, 3))
        harness.wait_for(lambda: serials(ask(self.path, LIST)) == ["fakedev-0001", "fakedev-0002"],
                         WAIT, what="the table without the unplugged device")
        reply = plistlib.loads(ask(self.path, {"MessageType": "Connect", "DeviceID": 3,
                                               "PortNumber": 0x7ef2})[16:])
        self.assertEqual(reply["Number"], 2)
        self.dev.send_signal(signal.SIGUSR2)  # and back
        for version, s in subs:
            v, m, t, whole, body = read_msg(s)
            if version:
                self.assertEqual((body["MessageType"], body["DeviceID"]), ("Attached", 3))
            else:
                self.assertEqual((m, whole[22:34].rstrip(b"\0")), (4, b"fakedev-0003"))
            s.close()
        # libusbmuxd's own subscription sees the same devices.
        rc, out, err = harness.run_client([harness.tool("lmclient"), "all", "--expect-devices", 3,
                                           "--no-pair-check"], self.path)
        self.assertEqual(rc, 0, out + err)

    def test_node_usbmux_through_plugs_and_restarts(self):
        # A real client the other tests do not use (npm: usbmux), on the
        # UNIX and the tunnel upstream, and through a filter: its Listen sees
        # the same devices as direct, plugs and unplugs, every device leave
        # and come back when fakedev or the helper restarts, and never an
        # EOF; its getTunnel (ListDevices by UDID, then Connect) echoes.
        svc = harness.DevSvc().start()
        helper = Helper("unix:" + self.up).start()
        paths = {"unix": self.path, "tunnel": os.path.join(self.d, "tunnel.sock"),
                 "filter": os.path.join(self.d, "filter.sock")}
        shims = [harness.Shim(paths["unix"], self.up, "--broker").start(),
                 harness.Shim(paths["tunnel"], helper.tunnel, "--broker").start(),
                 harness.Shim(paths["filter"], self.up, "--broker",
                              "--device", "fakedev-0002").start()]
        for shim in shims:
            harness.wait_for(lambda: "subscribed to the upstream" in shim.stderr_text(), WAIT,
                             what="the subscription")
        all3 = ["fakedev-0001", "fakedev-0002", "fakedev-0003"]
        seen = {"direct": all3, "unix": all3, "tunnel": all3, "filter": ["fakedev-0002"]}
        ls = {k: NodeUsbmuxListener(self.up if k == "direct" else paths[k]) for k in seen}
        try:
            def expect(keys, ev, what, order=sorted):
                for k in keys:
                    got = ls[k].take(len(seen[k]), "%s, %s" % (k, what))
                    self.assertEqual(order((e["ev"], e.get("udid")) for e in got),
                                     order((ev, u) for u in seen[k]), "%s, %s" % (k, what))
            expect(ls, "attached", "the first Attached", order=list)
            for k, l in ls.items():
                self.assertEqual(l.tunnel("fakedev-0002", svc.port),
                                 {"ev": "tunnel", "udid": "fakedev-0002", "ok": True}, k)
            self.assertIn("not connected", ls["filter"].tunnel("fakedev-0001", svc.port)["error"])
            self.dev.send_signal(signal.SIGUSR1)   # unplugs fakedev-0003
            for k in ("direct", "unix", "tunnel"):
                self.assertEqual(ls[k].take(1, k + ", unplug"),
                                 [{"ev": "detached", "udid": "fakedev-0003"}])
            self.dev.send_signal(signal.SIGUSR2)   # and back
            for k in ("direct", "unix", "tunnel"):
                self.assertEqual(ls[k].take(1, k + ", plug"),
                                 [{"ev": "attached", "udid": "fakedev-0003"}])
            ls.pop("direct").close()  # its usbmuxd is about to go
            self.dev.stop()
            expect(ls, "detached", "fakedev stopped")
            self.dev = harness.FakeDev(self.up, 3, "--verbose").start()
            expect(ls, "attached", "fakedev back")
            port = helper.port
            helper.stop()
            expect(["tunnel"], "detached", "helper stopped")
            Helper("unix:" + self.up, port=port).start()
            expect(["tunnel"], "attached", "helper back")
            for k, l in ls.items():
                self.assertEqual(l.tunnel("fakedev-0002", svc.port)["ok"], True, k)
                # The filter hid the unplug and the helper's restart; the
                # UNIX shims never saw the helper: nothing else came.
                self.assertEqual(l.pending(), [], k)
        finally:
            for l in ls.values():
                l.close()

    def test_binary_v0_listen(self):
        self.start_shim()
        with session(self.path) as s:
            s.sendall(struct.pack("<IIII", 16, 0, 3, 5))
            v, m, t, whole, _ = read_msg(s)
            self.assertEqual((v, m, t), (0, 1, 5))
            self.assertEqual(struct.unpack("<I", whole[16:20])[0], 0)
            recs = [read_msg(s) for _ in range(3)]
            for v, m, t, whole, _ in recs:
                self.assertEqual((v, m, len(whole)), (0, 4, 16 + 268))
            self.assertEqual(sorted(whole[22:34].rstrip(b"\0") for _, _, _, whole, _ in recs),
                             [b"fakedev-0001", b"fakedev-0002", b"fakedev-0003"])

    def test_device_filter(self):
        self.start_shim("--device", "fakedev-0002")
        self.assertEqual(serials(ask(self.path, LIST)), ["fakedev-0002"])
        rc, out, err = harness.run_client(["idevice_id", "-l"], self.path)
        self.assertEqual((rc, out.split()), (0, ["fakedev-0002"]))
        # A device that is not given does not exist: Connect is refused as
        # usbmuxd refuses an unknown DeviceID, without asking the upstream.
        before = upstream_connections(self.dev)
        reply = plistlib.loads(ask(self.path, {"MessageType": "Connect", "DeviceID": 1,
                                               "PortNumber": 0x7ef2})[16:])
        self.assertEqual(reply, {"MessageType": "Result", "Number": 2})
        reply = plistlib.loads(ask(self.path, {"MessageType": "ReadPairRecord",
                                               "PairRecordID": "fakedev-0001"})[16:])
        self.assertEqual(reply, {"MessageType": "Result", "Number": 2})
        self.assertEqual(upstream_connections(self.dev), before)
        with session(self.path) as s:
            s.sendall(raw({"MessageType": "Listen"}))
            self.assertEqual(read_msg(s)[4]["Number"], 0)
            self.assertEqual(read_msg(s)[4]["Properties"]["SerialNumber"], "fakedev-0002")
            s.settimeout(0.3)
            with self.assertRaises(socket.timeout):
                s.recv(1)

    def test_filter_applies_to_every_request_of_a_connection(self):
        # A forwarded request (ReadPairRecord) is answered and the client
        # stays with the broker: what it sends next on the same connection
        # is filtered and answered here too, never passed on as it is.
        self.start_shim("--device", "fakedev-0002")
        before = upstream_connections(self.dev)
        with session(self.path) as s:
            s.sendall(raw({"MessageType": "ReadPairRecord", "PairRecordID": "fakedev-0002"}, 5))
            v, m, t, whole, body = read_msg(s)
            self.assertEqual(t, 5)
            self.assertEqual(whole, ask(self.up, {"MessageType": "ReadPairRecord",
                                                  "PairRecordID": "fakedev-0002"}, 5))
            self.assertEqual(upstream_connections(self.dev), before + 2)  # ours, and direct
            s.sendall(raw({"MessageType": "Connect", "DeviceID": 1, "PortNumber": 0x7ef2}, 6))
            v, m, t, whole, body = read_msg(s)
            self.assertEqual((t, body), (6, {"MessageType": "Result", "Number": 2}))
            s.sendall(raw({"MessageType": "ReadPairRecord", "PairRecordID": "fakedev-0001"}, 7))
            self.assertEqual(read_msg(s)[4], {"MessageType": "Result", "Number": 2})
            s.sendall(raw(LIST, 8))
            self.assertEqual(serials(read_msg(s)[3]), ["fakedev-0002"])
        self.assertEqual(upstream_connections(self.dev), before + 2,
                         "a request after the forwarded one reached the upstream")
        # A Connect is handed to a relay (on success the connection is the
        # device's). One the device refuses leaves a relay behind: a request
        # after it would skip the filter, so the connection is closed instead
        # (clients open a connection per Connect).
        with session(self.path) as s:
            s.sendall(raw({"MessageType": "Connect", "DeviceID": 2, "PortNumber": 0x7ef2}, 9))
            self.assertEqual(read_msg(s)[4], {"MessageType": "Result", "Number": 3})
            s.sendall(raw({"MessageType": "Connect", "DeviceID": 1, "PortNumber": 0x7ef2}, 10))
            self.assertEqual(s.recv(1), b"")
        harness.wait_for(lambda: "a request after a Connect on the same connection"
                         in self.shim.stderr_text(), WAIT, what="the refusal logged")
        self.assertEqual(upstream_connections(self.dev), before + 3)

    def test_a_request_that_waits_for_the_subscription_is_counted_once(self):
        # The upstream is stopped (SIGSTOP): the kernel accepts the
        # broker's subscription, nobody answers it, and a ListDevices
        # meanwhile waits (parks) for the table. Answered once the upstream
        # runs again, it is one request in the statistics, not two.
        self.dev.send_signal(signal.SIGSTOP)
        try:
            self.shim = harness.Shim(self.path, self.up, "--broker").start()

            def stats():
                return json.loads(subprocess.run(
                    [harness.shim_binary(), "stats", "--json", "--listen", self.path],
                    capture_output=True, text=True, timeout=WAIT, check=True).stdout)
            s = session(self.path)
            s.sendall(raw(LIST, 1))
            harness.wait_for(lambda: stats()["broker"]["parked"] == 1, WAIT,
                             what="the request parked")
        finally:
            self.dev.send_signal(signal.SIGCONT)
        self.assertEqual(read_msg(s)[4].keys(), {"DeviceList"})
        s.close()
        st = stats()
        mine = [p for p in st["processes"] if p["pid"] == os.getpid()]
        self.assertEqual(len(mine), 1, st)
        self.assertEqual(mine[0]["requests"]["ListDevices"], 1, st)
        self.assertEqual(st["broker"]["local"]["ListDevices"], 1, st)

    def test_bytes_sent_after_a_connect_before_its_result(self):
        """Bytes a client sends right after a Connect, before its result,
        are not read with it: they stay in the socket, as usbmuxd leaves
        them. On success the relay passes them to the device: nothing lost
        or reordered. On failure they are a request the broker never saw
        (it would skip its filter): the client gets its Result, then the
        connection is closed and the request is not answered. Both over
        the UNIX upstream (session.c) and the tunnel (link.c)."""
        svc = harness.DevSvc().start()
        helper = Helper("unix:" + self.up).start()
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]
        closed.close()  # nothing listens there: the device refuses (Result 3)

        def pn(port):  # clients send htons(port) in a little-endian integer
            return ((port & 0xff) << 8) | (port >> 8)

        for upstream in (self.up, helper.tunnel):
            path = os.path.join(self.d, "after-connect-%d.sock" % len(upstream))
            shim = harness.Shim(path, upstream, "--broker").start()
            harness.wait_for(lambda: "subscribed to the upstream" in shim.stderr_text(), WAIT,
                             what="the subscription")
            payload = b"ECHO\n" + bytes(range(256)) * 64
            with session(path) as s:
                s.sendall(raw({"MessageType": "Connect", "DeviceID": 2,
                               "PortNumber": pn(svc.port)}, 3) + payload)
                self.assertEqual(read_msg(s)[4], {"MessageType": "Result", "Number": 0})
                want = payload[len(b"ECHO\n"):]
                s.shutdown(socket.SHUT_WR)
                got = read_to_eof(s)
                self.assertEqual(got, want, upstream)
            with session(path) as s:
                s.sendall(raw({"MessageType": "Connect", "DeviceID": 2,
                               "PortNumber": pn(dead_port)}, 4) + raw(LIST, 5))
                self.assertEqual(read_msg(s)[4], {"MessageType": "Result", "Number": 3})
                got = read_to_eof(s)
                self.assertNotIn(b"DeviceList", got, upstream)
            harness.wait_for(lambda: "a request after a Connect on the same connection"
                             in shim.stderr_text(), WAIT, what="the refusal logged")
            st = json.loads(subprocess.run(
                [harness.shim_binary(), "stats", "--json", "--listen", path],
                capture_output=True, text=True, timeout=WAIT, check=True).stdout)
            self.assertEqual(st["requests_refused"], 1, st)
            shim.stop()

    def test_device_filter_from_environment_and_connection_type(self):
        env = dict(os.environ, MUXSHIM_DEVICES="fakedev-0001,fakedev-0003")
        self.start_shim(env=env)
        self.assertEqual(serials(ask(self.path, LIST)), ["fakedev-0001", "fakedev-0003"])
        self.shim.stop()
        self.start_shim("--connection", "network")  # fakedev's devices are USB
        self.assertEqual(serials(ask(self.path, LIST)), [])

    def test_upstream_missing_or_stopped(self):
        # The host's usbmuxd is often not running at all (Debian starts it
        # when a phone is plugged in and it exits with the last one). Direct
        # clients then fail to connect; through the broker they are told the
        # truth at once: no devices (with --passthrough they get EOF, as
        # test_shim tests). The log explains why, once.
        missing = os.path.join(self.d, "nothing-here")
        shim = harness.Shim(self.path, missing, "--broker", "--connect-timeout", 60000).start()
        for i in range(20):
            with session(self.path, timeout=60) as s:
                s.sendall(raw(LIST, i + 1))
                self.assertEqual(read_msg(s)[2:5:2], (i + 1, {"DeviceList": []}))
        rc, out, err = harness.run_client(["idevice_id", "-l"], self.path)
        self.assertEqual((rc, out.strip()), (0, ""), err)
        log = shim.stderr_text()
        self.assertIn("no socket at %s" % missing, log)
        self.assertEqual(log.count("upstream unavailable"), 1, log)
        # Once it starts, the devices appear (the subscription retries).
        os.rename(self.up, missing)
        harness.wait_for(lambda: "subscribed to the upstream (3 devices)" in shim.stderr_text(),
                         WAIT, what="the broker subscribing once usbmuxd is there")
        self.assertEqual(serials(ask(self.path, LIST)),
                         ["fakedev-0001", "fakedev-0002", "fakedev-0003"])

    def test_upstream_that_never_answers(self):
        # A listener that accepts and says nothing: clients that need the
        # table wait for the subscription, which gives up after 10 s; then
        # they are answered (no devices), not held forever.
        hung = os.path.join(self.d, "hung.sock")
        lsock = socket.socket(socket.AF_UNIX)
        lsock.bind(hung)
        lsock.listen(64)
        held = []
        shim = harness.Shim(self.path, hung, "--broker").start()
        held.append(lsock.accept()[0])  # the subscription, never answered
        with session(self.path, timeout=60) as s:
            s.sendall(raw(LIST, 5))
            v, m, t, whole, body = read_msg(s)
            self.assertEqual((t, body), (5, {"DeviceList": []}))
        self.assertIn("no device list from the upstream within 10 s", shim.stderr_text())
        # Later clients are answered at once (not held for 10 s each), and
        # the one silent subscription is kept, not retried into a pile of
        # half-closed relay sessions.
        with session(self.path, timeout=5) as s:
            s.sendall(raw(LIST, 6))
            self.assertEqual(read_msg(s)[4], {"DeviceList": []})
        lsock.settimeout(0.5)
        with self.assertRaises(socket.timeout):
            held.append(lsock.accept()[0])
        for c in held:
            c.close()
        lsock.close()

    def test_protocol_edges_as_usbmuxd(self):
        self.start_shim()
        fds = shim_fds = self.shim.fd_count()
        # Version 2: a binary BADVERSION, then the connection closes.
        with session(self.path) as s:
            s.sendall(struct.pack("<IIII", 16, 2, 8, 9))
            v, m, t, whole, _ = read_msg(s)
            self.assertEqual((v, m, t, whole[16:20]), (0, 1, 9, struct.pack("<I", 6)))
            self.assertEqual(s.recv(1), b"")
        # Connect without a port: BADCOMMAND; without a DeviceID: BADDEV;
        # the connection stays usable, as with usbmuxd.
        with session(self.path) as s:
            s.sendall(raw({"MessageType": "Connect", "DeviceID": 1}, 3))
            self.assertEqual(read_msg(s)[4], {"MessageType": "Result", "Number": 1})
            s.sendall(raw({"MessageType": "Connect", "PortNumber": 0x7ef2}, 4))
            self.assertEqual(read_msg(s)[4], {"MessageType": "Result", "Number": 2})
            s.sendall(raw(LIST, 5))
            self.assertEqual(len(read_msg(s)[4]["DeviceList"]), 3)
        # A command on a Listen connection: BADCOMMAND with its tag, then EOF.
        with session(self.path) as s:
            s.sendall(raw({"MessageType": "Listen"}, 1))
            for _ in range(4):
                read_msg(s)
            s.sendall(raw(LIST, 77))
            self.assertEqual(read_msg(s)[2:5:2], (77, {"MessageType": "Result", "Number": 1}))
            self.assertEqual(s.recv(1), b"")
        # The same with the header in two pieces, an event between them
        # (so that the shim has read the first piece alone): usbmuxd waits
        # for the whole header, and so does the broker.
        with session(self.path) as s:
            s.sendall(raw({"MessageType": "Listen"}, 1))
            for _ in range(4):
                read_msg(s)
            cmd = raw(LIST, 78)
            s.sendall(cmd[:8])
            self.dev.send_signal(signal.SIGUSR1)  # unplugs fakedev-0003
            self.assertEqual(read_msg(s)[4]["MessageType"], "Detached")
            s.sendall(cmd[8:])
            self.assertEqual(read_msg(s)[2:5:2], (78, {"MessageType": "Result", "Number": 1}))
            self.assertEqual(s.recv(1), b"")
        self.dev.send_signal(signal.SIGUSR2)  # and back
        # Nothing of this stays behind in the shim. (At most: the count at
        # the start may still hold the harness's readiness probe, which a
        # slow shim, under ASan, closes a moment later.)
        harness.wait_for(lambda: self.shim.fd_count() <= shim_fds, WAIT,
                         what="the shim's descriptors back to %d or fewer" % fds)

    def test_bad_filters_are_refused(self):
        for args, msg in [(["--device", "a/b"], "--device"), (["--device", ""], "--device"),
                          (["--connection", "wifi"], "--connection")]:
            r = subprocess.run([harness.shim_binary(), "--listen", self.path, "--upstream",
                                "unix:" + self.up, "--broker"] + args,
                               capture_output=True, text=True, timeout=WAIT)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn(msg, r.stderr)
        r = subprocess.run([harness.shim_binary(), "--listen", self.path, "--upstream",
                            "unix:" + self.up, "--device", "x", "--passthrough"],
                           capture_output=True, text=True, timeout=WAIT)
        self.assertEqual(r.returncode, 2)
        self.assertIn("needs the broker", r.stderr)

    def test_subscriber_that_never_reads_is_dropped(self):
        self.dev.stop()
        self.dev = harness.FakeDev(self.up, 100, "--verbose").start()
        shim = self.start_shim("--event-queue", 16384)
        s = session(self.path)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(raw({"MessageType": "Listen"}))
        # 100 Attached (about 55 KB), then 100 Detached and 100 Attached for
        # each upstream restart, never read: the kernel's socket buffers
        # (about 200 KB) fill, then the 16 KiB queue. A few restarts do it.
        for restart in range(10):
            if "does not read its events" in shim.stderr_text():
                break
            subscribed = shim.stderr_text().count("subscribed to the upstream")
            self.dev.stop()
            self.dev = harness.FakeDev(self.up, 100, "--verbose").start()
            harness.wait_for(lambda: shim.stderr_text().count("subscribed to the upstream")
                             > subscribed, WAIT, what="the broker resubscribing")
        self.assertIn("does not read its events", shim.stderr_text())
        s.close()
        # Everyone else is still served.
        self.assertEqual(len(serials(ask(self.path, LIST))), 100)
        harness.assert_rss_bound(self, shim.rss_kib(), 64 * 1024, "shim RSS (KiB)")


if __name__ == "__main__":
    unittest.main()
