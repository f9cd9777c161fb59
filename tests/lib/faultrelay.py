"""A fault-injecting TCP relay for tunnel tests (Python stdlib only).

Put it between `muxshim --upstream tunnel:...` and `muxshim-host`: it
forwards bytes both ways, byte-exact (a peer's FIN becomes a FIN, a reset a
reset), until it is armed with a fault. Once the chosen direction has carried
the chosen number of bytes (counted from the moment of arming, or from the
start of the next connection), it forwards exactly that many and breaks the
connection in one of these ways:

  close      FIN both ways
  rst        RST both ways (SO_LINGER 0, then close)
  rst_src    RST to the sender of the chosen direction; the other side stays
             connected and whatever it sends is read and dropped (a one-way
             cut: it can only notice by silence)
  rst_dst    the same with the roles swapped
  half       FIN toward the receiver of the chosen direction only; the other
             direction keeps flowing
  stall      nothing more is read or written either way; both sockets stay
             open for stall_s, then are closed
  blackhole  the chosen direction is read and dropped from then on, the
             other keeps flowing (a one-way loss)

    relay = FaultRelay(("127.0.0.1", helper_port)).start()
    # the shim dials tunnel:127.0.0.1:<relay.port>
    f = relay.arm(Fault("up", 123456, "rst"))   # up = shim -> helper
    f.fired.wait(10)

One thread runs every connection with non-blocking sockets and a selector,
so an action happens exactly when its byte offset is reached and a close is
a real close (a second thread blocked in recv() would hold the socket open).
"""

import collections
import queue
import selectors
import socket
import struct
import threading
import time

ACTIONS = ("close", "rst", "rst_src", "rst_dst", "half", "stall", "blackhole")
CHUNK = 65536
BUF_MAX = 256 * 1024   # read a direction only while less than this waits


class Fault:
    def __init__(self, direction, offset, action, next_connection=False, stall_s=3.0):
        if direction not in ("up", "down"):
            raise ValueError(direction)
        if action not in ACTIONS:
            raise ValueError(action)
        self.direction = direction
        self.offset = offset
        self.action = action
        self.next_connection = next_connection
        self.stall_s = stall_s
        self.fired = threading.Event()
        self.conn_id = None
        self.carried = None    # {"up": n, "down": n} on the connection when it fired

    def __repr__(self):
        return "Fault(%s after %d bytes %s%s)" % (self.action, self.offset, self.direction,
                                                 " of the next connection"
                                                 if self.next_connection else "")

    @classmethod
    def random(cls, rnd, max_offset, handshake=False, stall_s=3.0, actions=ACTIONS):
        """A seeded random fault: any of actions, either direction; an offset
        up to max_offset, or (handshake=True) within the first 100 bytes of
        the next connection, which covers the hellos and the first frames."""
        direction = rnd.choice(("up", "down"))
        action = rnd.choice(actions)
        if handshake:
            return cls(direction, rnd.randint(0, 100), action, next_connection=True,
                       stall_s=stall_s)
        # Half of them early (frame headers, small frames), half anywhere.
        if rnd.random() < 0.5:
            off = rnd.randint(0, min(max_offset, 4096))
        else:
            off = rnd.randint(0, max_offset)
        return cls(direction, off, action, stall_s=stall_s)


def _set_rst(s):
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass


class _Dir:
    def __init__(self, name, src, dst):
        self.name = name
        self.src, self.dst = src, dst
        self.buf = bytearray()
        self.reading = True        # src is read
        self.eof = False           # src said EOF: FIN dst once buf is empty
        self.fin_sent = False
        self.drop = False          # read and throw away (blackhole, survivor)
        self.fire = None           # Fault to execute once buf is flushed
        self.counted = 0           # bytes since the fault was armed
        self.carried = 0           # bytes forwarded in total


class _Conn:
    def __init__(self, cid, a, b):
        self.id = cid
        self.a, self.b = a, b      # a: the dialler (shim), b: the target (helper)
        self.dirs = {"up": _Dir("up", a, b), "down": _Dir("down", b, a)}
        self.fault = None
        self.open = {a: True, b: True}
        self.how = None
        self.deadline = None       # (time, action) for stall / survivor timeouts
        self.ended = threading.Event()

    def carried(self):
        return {d: self.dirs[d].carried for d in ("up", "down")}


class FaultRelay:
    """Listens on 127.0.0.1:port (0 = a free port) and relays each accepted
    connection to target = (host, port)."""

    def __init__(self, target, port=0, verbose=False):
        self.target = target
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", port))
        self.srv.listen(16)
        self.srv.setblocking(False)
        self.port = self.srv.getsockname()[1]
        self.sel = selectors.DefaultSelector()
        self.conns = []
        self.cmds = queue.Queue()
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.pending_fault = None
        self.verbose = verbose
        self.lines = collections.deque(maxlen=2000)
        self.lock = threading.Lock()
        self.stopped = False
        self.thread = None

    # -- public, from any thread --------------------------------------------

    def start(self):
        self.sel.register(self.srv, selectors.EVENT_READ, ("listen", None))
        self.sel.register(self.wake_r, selectors.EVENT_READ, ("wake", None))
        self.thread = threading.Thread(target=self._run, name="faultrelay", daemon=True)
        self.thread.start()
        return self

    def arm(self, fault):
        """Arms fault on the newest live connection, or (next_connection) on
        the next one accepted. Returns the fault; fault.fired is an Event."""
        done = threading.Event()
        self._cmd(("arm", (fault, done)))
        done.wait(5)   # counting starts once the loop has it
        return fault

    def disarm(self):
        done = threading.Event()
        self._cmd(("disarm", done))
        done.wait(5)

    def cut_now(self, action="close"):
        """Breaks the newest live connection now; returns the Fault."""
        return self.arm(Fault("up", 0, action))

    def live(self):
        with self.lock:
            return [c for c in self.conns if not c.ended.is_set()]

    def connections(self):
        with self.lock:
            return list(self.conns)

    def log(self, msg):
        line = "%.3f relay: %s" % (time.monotonic(), msg)
        self.lines.append(line)
        if self.verbose:
            print(line, flush=True)

    def close(self):
        self._cmd(("stop", None))
        if self.thread:
            self.thread.join(5)

    # -- the loop -------------------------------------------------------------

    def _cmd(self, c):
        self.cmds.put(c)
        try:
            self.wake_w.send(b"x")
        except OSError:
            pass

    def _run(self):
        while not self.stopped:
            timeout = 0.05
            for key, ev in self.sel.select(timeout):
                kind, c = key.data
                if kind == "listen":
                    self._accept()
                elif kind == "wake":
                    try:
                        while self.wake_r.recv(4096):
                            pass
                    except BlockingIOError:
                        pass
                else:
                    if c.ended.is_set():
                        continue
                    s = key.fileobj
                    if ev & selectors.EVENT_READ:
                        self._readable(c, s)
                    if not c.ended.is_set() and ev & selectors.EVENT_WRITE:
                        self._writable(c, s)
            while True:
                try:
                    cmd, arg = self.cmds.get_nowait()
                except queue.Empty:
                    break
                self._command(cmd, arg)
            now = time.monotonic()
            with self.lock:
                conns = [c for c in self.conns if not c.ended.is_set()]
            for c in conns:
                if c.deadline and now >= c.deadline[0]:
                    c.deadline = None
                    self._end(c, rst=False, how=c.how or "timeout")
                elif not c.ended.is_set():
                    self._update(c)
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            if not c.ended.is_set():
                self._end(c, rst=True, how="relay stopped")
        self.srv.close()
        self.sel.close()
        self.wake_r.close()
        self.wake_w.close()

    def _command(self, cmd, arg):
        if cmd == "stop":
            self.stopped = True
        elif cmd == "disarm":
            arg.set()
            self.pending_fault = None
            for c in self.live():
                c.fault = None
        elif cmd == "arm":
            f, done = arg
            done.set()
            if f.next_connection:
                self.pending_fault = f
                return
            live = [c for c in self.live() if c.fault is None or c.fault.fired.is_set()]
            if not live:
                self.log("arm %r: no live connection" % f)
                return
            self._arm_conn(live[-1], f)

    def _arm_conn(self, c, f):
        c.fault = f
        f.conn_id = c.id
        for d in c.dirs.values():
            d.counted = 0
        self.log("conn %d: armed %r" % (c.id, f))
        if f.offset == 0:
            self._cut(c, c.dirs[f.direction], 0, b"")

    def _accept(self):
        try:
            a, _ = self.srv.accept()
        except OSError:
            return
        try:
            b = socket.create_connection(self.target, timeout=5)
        except OSError as e:
            self.log("cannot reach %s: %s" % (self.target, e))
            _set_rst(a)
            a.close()
            return
        for s in (a, b):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.lock:
            c = _Conn(len(self.conns) + 1, a, b)
            self.conns.append(c)
        self.sel.register(a, selectors.EVENT_READ, ("conn", c))
        self.sel.register(b, selectors.EVENT_READ, ("conn", c))
        self.log("conn %d accepted" % c.id)
        f = self.pending_fault
        self.pending_fault = None
        if f is not None:
            self._arm_conn(c, f)

    def _dir_from(self, c, s):
        return c.dirs["up"] if s is c.a else c.dirs["down"]

    def _dir_to(self, c, s):
        return c.dirs["down"] if s is c.a else c.dirs["up"]

    def _readable(self, c, s):
        d = self._dir_from(c, s)
        if not (d.reading or d.drop):
            return
        try:
            data = s.recv(CHUNK)
        except BlockingIOError:
            return
        except OSError as e:
            # A reset from one side: pass it on as a reset.
            self.log("conn %d: %s: %s" % (c.id, d.name, e))
            self._end(c, rst=True, how=c.how or "%s reset by its sender" % d.name)
            return
        if d.drop:
            if not data:
                # Its sender is gone: nothing left to cut off.
                self._end(c, rst=False, how=c.how)
            return
        if not data:
            d.eof = True
            d.reading = False
            self._flush(c, d)
            return
        f = c.fault
        if f is not None and not f.fired.is_set() and f.direction == d.name \
                and d.fire is None:
            room = f.offset - d.counted
            if room <= len(data):
                self._cut(c, d, max(room, 0), data)
                return
        d.counted += len(data)
        d.buf += data
        self._flush(c, d)

    def _cut(self, c, d, n, data):
        d.buf += data[:n]
        d.counted += n
        d.fire = c.fault
        d.reading = False
        self._flush(c, d)

    def _flush(self, c, d):
        while d.buf and c.open.get(d.dst):
            try:
                n = d.dst.send(d.buf)
            except BlockingIOError:
                return
            except OSError as e:
                self.log("conn %d: %s send: %s" % (c.id, d.name, e))
                self._end(c, rst=True, how="%s receiver gone" % d.name)
                return
            d.carried += n
            del d.buf[:n]
        if d.buf:
            return
        if d.fire is not None:
            f, d.fire = d.fire, None
            self._fire(c, d, f)
            return
        if d.eof and not d.fin_sent:
            d.fin_sent = True
            try:
                d.dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            other = c.dirs["down" if d.name == "up" else "up"]
            if other.fin_sent or (other.eof and not other.buf):
                if other.eof and not other.fin_sent:
                    self._flush(c, other)
                self._end(c, rst=False, how=c.how or "closed by both peers")

    def _writable(self, c, s):
        self._flush(c, self._dir_to(c, s))

    def _update(self, c):
        for s in (c.a, c.b):
            if not c.open.get(s):
                continue
            d_in, d_out = self._dir_from(c, s), self._dir_to(c, s)
            ev = 0
            if (d_in.reading or d_in.drop) and len(d_in.buf) < BUF_MAX:
                ev |= selectors.EVENT_READ
            if d_out.buf:
                ev |= selectors.EVENT_WRITE
            try:
                key = self.sel.get_key(s)
                if ev == 0:
                    self.sel.unregister(s)
                elif key.events != ev:
                    self.sel.modify(s, ev, key.data)
            except KeyError:
                if ev:
                    self.sel.register(s, ev, ("conn", c))

    def _fire(self, c, d, f):
        f.carried = c.carried()
        self.log("conn %d: %r fires (carried up %d, down %d)"
                 % (c.id, f, f.carried["up"], f.carried["down"]))
        other = c.dirs["down" if d.name == "up" else "up"]
        c.how = f.action
        if f.action == "close":
            self._end(c, rst=False, how="close")
        elif f.action == "rst":
            self._end(c, rst=True, how="rst")
        elif f.action in ("rst_src", "rst_dst"):
            victim, survivor = (d.src, d.dst) if f.action == "rst_src" else (d.dst, d.src)
            _set_rst(victim)
            self._close_one(c, victim)
            for x in (d, other):
                x.reading = False
                x.buf.clear()
            self._dir_from(c, survivor).drop = True
            c.deadline = (time.monotonic() + f.stall_s + 10, "survivor")
        elif f.action == "half":
            c.deadline = (time.monotonic() + f.stall_s + 10, "half")
            d.fin_sent = True
            d.eof = True
            try:
                d.dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        elif f.action == "stall":
            for x in (d, other):
                x.reading = False
            other.buf.clear()
            c.deadline = (time.monotonic() + f.stall_s, "stall")
        elif f.action == "blackhole":
            d.drop = True
            c.deadline = (time.monotonic() + f.stall_s + 10, "blackhole")
        f.fired.set()

    def _close_one(self, c, s):
        if not c.open.get(s):
            return
        c.open[s] = False
        try:
            self.sel.unregister(s)
        except KeyError:
            pass
        s.close()

    def _end(self, c, rst, how):
        if c.ended.is_set():
            return
        c.how = c.how or how
        for s in (c.a, c.b):
            if c.open.get(s):
                if rst:
                    _set_rst(s)
                else:
                    # Unread bytes would turn the close into a reset.
                    try:
                        s.shutdown(socket.SHUT_WR)
                        for _ in range(64):
                            if not s.recv(CHUNK):
                                break
                    except OSError:
                        pass
                self._close_one(c, s)
        self.log("conn %d ended: %s (carried up %d, down %d)"
                 % (c.id, c.how, c.dirs["up"].carried, c.dirs["down"].carried))
        c.ended.set()
