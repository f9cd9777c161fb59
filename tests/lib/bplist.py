"""A small binary plist (bplist00) writer for tests, standard library only.

It writes exactly the object graph it is given, shared references
included, which is what the hostile shapes need (plistlib writes trees).

    objs = [("str", "MessageType"), ("str", "ListDevices"), ("dict", [(0, 1)])]
    body = encode(objs, root=2)

Object kinds: ("true",), ("false",), ("int", n), ("str", s) (ASCII),
("data", b), ("array", [index, ...]), ("dict", [(key_index, value_index), ...]).

amplifying_request(size) builds the request of issue 17: a dict whose value
is an array of k references to a second array of k references to one
object. libplist 2.2 builds a fresh copy per reference: about k*k nodes.
"""
import struct


def _int_bytes(n):
    for size in (1, 2, 4, 8):
        if n < 1 << (8 * size):
            return size
    raise ValueError("too large")


def _marker(kind, count):
    if count < 15:
        return bytes([kind << 4 | count])
    size = _int_bytes(count)
    return bytes([kind << 4 | 0xF, 0x10 | {1: 0, 2: 1, 4: 2, 8: 3}[size]]) + count.to_bytes(size, "big")


def encode(objs, root, ref_size=None, offset_size=None):
    """bplist00 bytes for objs (a list indexed by reference number)."""
    ref_size = ref_size or _int_bytes(max(len(objs) - 1, 1))
    parts, offsets, pos = [b"bplist00"], [], 8
    for o in objs:
        kind = o[0]
        if kind == "true":
            b = b"\x09"
        elif kind == "false":
            b = b"\x08"
        elif kind == "int":
            size = _int_bytes(o[1])
            b = bytes([0x10 | {1: 0, 2: 1, 4: 2, 8: 3}[size]]) + o[1].to_bytes(size, "big")
        elif kind == "str":
            s = o[1].encode("ascii")
            b = _marker(0x5, len(s)) + s
        elif kind == "data":
            b = _marker(0x4, len(o[1])) + o[1]
        elif kind == "array":
            b = _marker(0xA, len(o[1])) + b"".join(i.to_bytes(ref_size, "big") for i in o[1])
        elif kind == "dict":
            b = (_marker(0xD, len(o[1])) + b"".join(k.to_bytes(ref_size, "big") for k, _ in o[1])
                 + b"".join(v.to_bytes(ref_size, "big") for _, v in o[1]))
        else:
            raise ValueError(kind)
        offsets.append(pos)
        parts.append(b)
        pos += len(b)
    offset_size = offset_size or _int_bytes(pos)
    table = pos
    parts.append(b"".join(o.to_bytes(offset_size, "big") for o in offsets))
    parts.append(bytes(6) + struct.pack(">BBQQQ", offset_size, ref_size, len(objs), root, table))
    return b"".join(parts)


def amplifying_request(size):
    """A plist request body of exactly `size` bytes (at least 200) that
    expands to about (size/2)^2 nodes in libplist 2.2."""

    def build(k1, k2):
        objs = [("str", "MessageType"), ("str", "ListDevices"), ("str", "ProgName"),
                ("true",), ("array", [3] * k2), ("array", [4] * k1),
                ("dict", [(0, 1), (2, 5)])]
        return encode(objs, root=6, ref_size=1, offset_size=4)

    fixed = len(build(0, 0))
    # Array headers grow by 5 bytes once a count needs its own integer.
    k = max(size - fixed - 10, 0)
    k1, k2 = k // 2, k - k // 2
    body = build(k1, k2)
    k2 += size - len(body)
    body = build(k1, k2)
    assert len(body) == size, (len(body), size)
    return body


def usbmuxd_message(body, tag=1):
    """A usbmuxd version-1 plist message carrying body."""
    return struct.pack("<IIII", 16 + len(body), 1, 8, tag) + body


# usbmuxd's limit on one message, header included (usbmuxd-protocol.md).
USBMUXD_MSG_MAX = 65536
