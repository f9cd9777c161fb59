"""A TCP relay for the encrypted tunnel (docs/PROTOCOL.md §7), stdlib only.

Put it between `muxshim --upstream tunnel:...` and `muxshim-host`: it
forwards bytes both ways and keeps a copy of everything it carried
(`captured["up"]`, shim -> helper, and `captured["down"]`), for tests that
look for secrets on the wire. Given a change, it applies it to one record
of the first connection only (later connections pass untouched, so a shim
that reconnects is served again):

  ("flip", index, offset)  flip the low bit of byte `offset` of record
                           `index` (offset 0..3 is the length field)
  ("replay", index)        send record `index` twice
  ("drop", index)          never send record `index`
  ("reorder", index)       send record index + 1 before record `index`
  ("truncate", index)      send the first half of record `index`, then close
                           the connection to its receiver

Records are counted per direction from 0; the bytes before them, the hello
and the AUTH frame (80 bytes), pass as they are.
"""
import socket
import threading

CLEAR = 36 + 12 + 32  # hello + AUTH frame


class RecordRelay:
    def __init__(self, target, direction="up", change=None):
        self.target = target
        self.direction = direction
        self.change = change
        self.captured = {"up": bytearray(), "down": bytearray()}
        self.connections = 0
        self.applied = threading.Event()
        self._lock = threading.Lock()
        self._socks = []
        self._lst = socket.socket()
        self._lst.bind(("127.0.0.1", 0))
        self._lst.listen(16)
        self.port = self._lst.getsockname()[1]

    @property
    def tunnel(self):
        return "tunnel:127.0.0.1:%d" % self.port

    def start(self):
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def close(self):
        for s in [self._lst] + self._socks:
            try:
                s.close()
            except OSError:
                pass

    def wire(self):
        with self._lock:
            return bytes(self.captured["up"]) + bytes(self.captured["down"])

    def _accept(self):
        while True:
            try:
                a, _ = self._lst.accept()
            except OSError:
                return
            try:
                b = socket.create_connection(self.target, timeout=10)
            except OSError:
                a.close()
                continue
            b.settimeout(None)
            self.connections += 1
            first = self.connections == 1
            self._socks += [a, b]
            for src, dst, name in ((a, b, "up"), (b, a, "down")):
                mangle = self.change if first and name == self.direction else None
                threading.Thread(target=self._pump, args=(src, dst, name, mangle),
                                 daemon=True).start()

    def _pump(self, src, dst, name, change):
        pending = bytearray()
        clear_left = CLEAR
        index = 0
        held = None  # the record held back by "reorder"
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                with self._lock:
                    self.captured[name] += data
                if change is None:
                    dst.sendall(data)
                    continue
                pending += data
                out = bytearray()
                take = min(clear_left, len(pending))
                out += pending[:take]
                del pending[:take]
                clear_left -= take
                while not clear_left and len(pending) >= 4:
                    total = 4 + int.from_bytes(pending[:4], "big") + 16
                    if len(pending) < total:
                        break
                    rec = bytes(pending[:total])
                    del pending[:total]
                    kind, at = change[0], change[1]
                    if index == at and kind == "flip":
                        off = change[2] % len(rec)
                        rec = rec[:off] + bytes([rec[off] ^ 1]) + rec[off + 1:]
                        self.applied.set()
                    elif index == at and kind == "replay":
                        rec += rec
                        self.applied.set()
                    elif index == at and kind == "drop":
                        rec = b""
                        self.applied.set()
                    elif index == at and kind == "reorder":
                        held, rec = rec, b""
                    elif index == at + 1 and kind == "reorder":
                        rec += held
                        self.applied.set()
                    elif index == at and kind == "truncate":
                        dst.sendall(bytes(out) + rec[:len(rec) // 2])
                        self.applied.set()
                        dst.shutdown(socket.SHUT_WR)
                        return
                    out += rec
                    index += 1
                if out:
                    dst.sendall(out)
        except OSError:
            pass  # the other pump, or close(), ended the connection
