"""Shared set-ups for the tunnel suites: the helper, a shim dialling it, a
fake device, and raw usbmuxd-protocol helpers for tests that need to see
exact bytes (or send bad ones)."""
import os
import plistlib
import socket
import struct
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import harness  # noqa: E402


def helper_binary():
    return os.environ.get("MUXSHIM_HOST_BIN", os.path.join(harness.BUILD, "muxshim-host"))


class Helper(harness.Proc):
    """muxshim-host on a free loopback port."""

    def __init__(self, upstream, *extra, port=None, log_level="debug", **kw):
        self.port = port or harness.free_tcp_port()
        argv = [helper_binary(), "--listen", "127.0.0.1:%d" % self.port, "--upstream",
                upstream, "--log-level", log_level] + [str(a) for a in extra]
        kw.setdefault("ready_fn", lambda: harness.tcp_listening(self.port))
        kw.setdefault("valgrind", True)
        super().__init__(argv, name="muxshim-host", **kw)

    @property
    def tunnel(self):
        return "tunnel:127.0.0.1:%d" % self.port


def plist_msg(obj, tag=1):
    body = plistlib.dumps(obj)
    return struct.pack("<IIII", 16 + len(body), 1, 8, tag) + body


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        b = s.recv(n - len(buf))
        if not b:
            raise EOFError("EOF after %d of %d bytes" % (len(buf), n))
        buf += b
    return buf


def recv_msg(s):
    hdr = recv_exact(s, 16)
    length, version, message, tag = struct.unpack("<IIII", hdr)
    body = recv_exact(s, length - 16)
    return version, message, tag, plistlib.loads(body) if version == 1 else body


def usbmuxd_request(path, obj, timeout=10):
    """One session, one plist request, the reply as a dict. The connect
    retries a full listen queue or a restart (harness.connect_unix)."""
    s = harness.connect_unix(path, timeout)
    try:
        s.sendall(plist_msg(obj))
        return recv_msg(s)[3]
    finally:
        s.close()


def connect_device(path, port, device=1, timeout=10):
    """A usbmuxd Connect session to the fake device's port; returns the socket
    (now a raw pipe) or raises with the result number."""
    s = harness.connect_unix(path, timeout)
    s.sendall(plist_msg({"MessageType": "Connect", "DeviceID": device,
                         "PortNumber": socket.htons(port), "ProgName": "test"}))
    reply = recv_msg(s)[3]
    if reply.get("Number") != 0:
        s.close()
        raise ConnectionError("Connect refused: %r" % reply)
    return s


class CountingService:
    """A device-side TCP service that records, per connection, every byte it
    received until EOF or reset, so tests can prove nothing was lost."""

    def __init__(self):
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(64)
        self.port = self.srv.getsockname()[1]
        self.results = []
        self.cond = threading.Condition()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(c,), daemon=True).start()

    def _one(self, c):
        data = bytearray()
        end = "eof"
        try:
            while True:
                b = c.recv(1 << 16)
                if not b:
                    break
                data += b
        except ConnectionResetError:
            end = "reset"
        finally:
            c.close()
        with self.cond:
            self.results.append((bytes(data), end))
            self.cond.notify_all()

    def wait_results(self, n, timeout=20):
        with self.cond:
            ok = self.cond.wait_for(lambda: len(self.results) >= n, timeout)
            if not ok:
                raise AssertionError("only %d of %d device connections ended"
                                     % (len(self.results), n))
            return list(self.results)

    def close(self):
        self.srv.close()
