"""The encrypted tunnel (docs/PROTOCOL.md §7, docs/SECURITY.md): with a
token, nothing a client reads or sends crosses the tunnel in the clear, and
any record changed, replayed, reordered, dropped or cut on the way ends the
tunnel with a log line that says so; the shim then dials a new one.

    client -> muxshim ==tunnel==> RecordRelay ==> muxshim-host -> upstream

The relay (tests/lib/recordrelay.py) keeps a copy of every tunnel byte and
changes one record of the first connection when asked. The upstream for the
capture is a stub usbmuxd (below) whose ReadPairRecord answer carries a
private key, the very thing the tunnel must not show.
"""
import os
import plistlib
import socket
import struct
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from recordrelay import RecordRelay  # noqa: E402
from tunnel_util import Helper, harness, plist_msg, recv_exact, recv_msg, usbmuxd_request  # noqa: E402

KEY = (b"-----BEGIN RSA PRIVATE KEY-----\n" + os.urandom(48).hex().encode() +
       b"\n-----END RSA PRIVATE KEY-----\n")
PAIR_RECORD = plistlib.dumps({"HostPrivateKey": KEY, "HostID": "muxshim-test-host",
                              "SystemBUID": "muxshim-test-buid"})
# The pair record as usbmuxd sends it: base64 in the reply's plist. This
# part of the reply is what a capture would show of the key.
_REPLY = plistlib.dumps({"PairRecordData": PAIR_RECORD})
RECORD_ON_WIRE = _REPLY[_REPLY.index(b"<data>") + 6:_REPLY.index(b"</data>")]
UP = os.urandom(256 * 1024)     # client -> device in the Connect session
DOWN = os.urandom(256 * 1024)   # device -> client


class StubUsbmuxd:
    """A usbmuxd on a UNIX socket with one device: ReadPairRecord answers
    PAIR_RECORD; Connect answers Result 0, then sends DOWN and reads UP."""

    def __init__(self, path):
        self.path = path
        self.got_up = threading.Event()
        self.srv = socket.socket(socket.AF_UNIX)
        self.srv.bind(path)
        self.srv.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self.srv.close()

    def _accept(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _reply(self, c, obj, tag):
        c.sendall(plist_msg(obj, tag))

    def _serve(self, c):
        dev = {"DeviceID": 1, "MessageType": "Attached",
               "Properties": {"ConnectionType": "USB", "DeviceID": 1, "SerialNumber": "stub-0001"}}
        try:
            while True:
                _, _, tag, req = recv_msg(c)
                mt = req.get("MessageType")
                if mt == "ReadPairRecord":
                    self._reply(c, {"PairRecordData": PAIR_RECORD}, tag)
                elif mt == "ListDevices":
                    self._reply(c, {"DeviceList": [dev]}, tag)
                elif mt == "Listen":
                    self._reply(c, {"MessageType": "Result", "Number": 0}, tag)
                    self._reply(c, dev, 0)
                elif mt == "Connect":
                    self._reply(c, {"MessageType": "Result", "Number": 0}, tag)
                    t = threading.Thread(target=c.sendall, args=(DOWN,), daemon=True)
                    t.start()
                    if recv_exact(c, len(UP)) == UP:
                        self.got_up.set()
                    t.join(30)
                    return
                else:
                    self._reply(c, {"MessageType": "Result", "Number": 0}, tag)
        except (OSError, EOFError, ValueError):
            pass
        finally:
            c.close()


def windows(data, size=24):
    """Non-overlapping slices of data: any one of them on the wire is a leak."""
    return [data[i:i + size] for i in range(0, len(data) - size + 1, size)]


def leaks(wire, secret):
    return sum(1 for w in windows(secret) if w in wire)


class Capture(unittest.TestCase):
    """A pair record read and a Connect session's data, both ways, through
    a captured tunnel: with a token none of it is on the wire; without one
    (loopback only) all of it is, which shows the capture sees it."""

    def tearDown(self):
        harness.cleanup_all()

    def run_traffic(self, *token_args):
        d = harness.tempdir("crypt-capture")
        stub = StubUsbmuxd(os.path.join(d, "usbmuxd.sock"))
        self.addCleanup(stub.close)
        helper = Helper("unix:" + stub.path, *token_args).start()
        relay = RecordRelay(("127.0.0.1", helper.port)).start()
        self.addCleanup(relay.close)
        path = os.path.join(d, "shim.sock")
        harness.Shim(path, relay.tunnel, *token_args).start()
        reply = usbmuxd_request(path, {"MessageType": "ReadPairRecord",
                                       "PairRecordID": "stub-0001"}, timeout=30)
        self.assertEqual(reply["PairRecordData"], PAIR_RECORD)
        s = harness.connect_unix(path, 30)
        s.settimeout(30)
        s.sendall(plist_msg({"MessageType": "Connect", "DeviceID": 1,
                             "PortNumber": socket.htons(62078)}, 7))
        self.assertEqual(recv_msg(s)[3]["Number"], 0)
        s.sendall(UP)
        self.assertEqual(recv_exact(s, len(DOWN)), DOWN)
        # Bound: the whole UP crossed (30 s, far above the milliseconds it takes).
        self.assertTrue(stub.got_up.wait(30), "the device did not get the client's bytes")
        s.close()
        return relay.wire(), helper

    def test_nothing_readable_with_a_token(self):
        token = harness.write_token(os.path.join(harness.tempdir("crypt-token"), "token"))
        wire, helper = self.run_traffic("--token-file", token)
        self.assertGreater(len(wire), len(UP) + len(DOWN))
        for name, secret in (("the private key", KEY), ("the pair record", RECORD_ON_WIRE),
                             ("the client's bytes", UP), ("the device's bytes", DOWN)):
            self.assertEqual(leaks(wire, secret), 0, "%s crossed the tunnel in the clear" % name)
        with open(token, "rb") as f:
            self.assertNotIn(f.read().strip(), wire)
        # Nor anything of the usbmuxd protocol: no plist, no frame of a stream.
        self.assertNotIn(b"<plist", wire)
        self.assertNotIn(b"PairRecordData", wire)
        self.assertIn("encrypted", helper.stderr_text())

    def test_plain_without_a_token_is_seen(self):
        wire, _ = self.run_traffic()
        self.assertGreater(leaks(wire, UP), len(UP) // 24 // 2)
        self.assertGreater(leaks(wire, DOWN), len(DOWN) // 24 // 2)
        self.assertIn(b"PairRecordData", wire)
        self.assertGreater(leaks(wire, RECORD_ON_WIRE), len(RECORD_ON_WIRE) // 24 // 2)


class Tampering(unittest.TestCase):
    """One record of the first tunnel changed on the way: the receiver ends
    the tunnel, says why, and the shim's next tunnel serves again."""

    def setUp(self):
        d = harness.tempdir("crypt-tamper")
        self.token = harness.write_token(os.path.join(d, "token"))
        fake = harness.FakeDev(os.path.join(d, "fake.sock")).start()
        self.helper = Helper("unix:" + fake.socket, "--token-file", self.token).start()
        self.path = os.path.join(d, "shim.sock")

    def tearDown(self):
        harness.cleanup_all()

    def attack(self, direction, change, expect):
        relay = RecordRelay(("127.0.0.1", self.helper.port), direction, change).start()
        self.addCleanup(relay.close)
        shim = harness.Shim(self.path, relay.tunnel, "--token-file", self.token).start()
        receiver = self.helper if direction == "up" else shim
        # Requests make records in both directions until the change is made
        # and the tunnel ends (some of them may fail on the way).
        def changed_and_said():
            if not relay.applied.is_set():
                try:
                    usbmuxd_request(self.path, {"MessageType": "ListDevices"}, timeout=5)
                except (OSError, EOFError, ValueError):
                    pass
            return expect in receiver.stderr_text()
        harness.wait_for(changed_and_said, 30, interval=0.05, what="log line %r" % expect)
        # The next tunnel (untouched) serves.
        harness.wait_for(lambda: relay.connections >= 2, 30, what="the shim's next tunnel")
        self.assertIn("DeviceList", usbmuxd_request(self.path, {"MessageType": "ListDevices"},
                                                    timeout=30))
        self.assertTrue(self.helper.alive())

    def test_bit_flipped_in_ciphertext(self):
        self.attack("up", ("flip", 0, 9), "encrypted record 0 failed authentication")

    def test_bit_flipped_in_tag(self):
        self.attack("down", ("flip", 1, -1), "encrypted record 1 failed authentication")

    def test_bit_flipped_in_length(self):
        self.attack("up", ("flip", 0, 0), "encrypted record 0 has an impossible length")

    def test_record_replayed(self):
        self.attack("up", ("replay", 0), "encrypted record 1 failed authentication")

    def test_record_dropped(self):
        self.attack("down", ("drop", 0), "encrypted record 0 failed authentication")

    def test_records_reordered(self):
        self.attack("up", ("reorder", 1), "encrypted record 1 failed authentication")

    def test_record_cut(self):
        self.attack("up", ("truncate", 1), "connection closed in the middle of an encrypted record")


if __name__ == "__main__":
    unittest.main()
