#!/usr/bin/env python3
"""Writes the seed corpora of the hello, addr, mountinfo, plist and proto fuzz
targets (tests/fuzz/corpus/NAME/). The input layouts are described at the
top of each tests/fuzz/fuzz_NAME.c. Run from anywhere; rewrites those dirs.
(The tunnel and inspect corpora were written by hand and are kept as is.)"""
import os
import plistlib
import shutil
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import bplist  # noqa: E402  (tests/lib)

SHIM, HELPER = 1, 2
AUTH_FLAG = 1
NONCE_A = bytes(range(0xa0, 0xb0))
NONCE_B = bytes(range(0xb0, 0xc0))


def hello(role, flags=0, max_frame=16384, window=262144, streams=64, nonce=NONCE_B,
          version=2, magic=b"MXTN"):
    return magic + struct.pack(">BBHIII", version, role, flags, max_frame, window,
                               streams) + nonce


def frame(ftype, stream, payload=b"", flags=0):
    return struct.pack(">BBHII", ftype, flags, 0, stream, len(payload)) + payload


PING = frame(4, 0, bytes(8))
AUTH_PLACEHOLDER = frame(6, 0, bytes(32))


def hello_input(me_helper, token, peer, ctl_extra=0):
    """ctl bit 0: we are the helper; the token is written as a length byte."""
    ctl = (1 if me_helper else 0) | ctl_extra
    n = len(token)
    if n == 256:
        ctl |= 8
        n = 255
    return bytes([ctl]) + NONCE_A + bytes([n]) + token + peer


def hello_seeds():
    tok = b"secret"
    return {
        # no tokens: the shim meets the helper's hello, then a frame
        "plain_shim_side": hello_input(False, b"", hello(HELPER) + PING),
        "plain_helper_side": hello_input(True, b"", hello(SHIM, streams=1) + PING),
        # tokens on both sides, the correct AUTH spliced in (ctl bit 1)
        "auth_ok": hello_input(True, tok, hello(SHIM, AUTH_FLAG) + AUTH_PLACEHOLDER + PING, 2),
        # ... with one bit of it flipped (ctl bit 2, bit index 77)
        "auth_bit_flipped": hello_input(True, tok, hello(SHIM, AUTH_FLAG) + AUTH_PLACEHOLDER
                                        + bytes([77]), 6),
        # a wrong proof as sent, a PING before AUTH, a half-arrived AUTH
        "auth_wrong": hello_input(False, tok, hello(HELPER, AUTH_FLAG) + AUTH_PLACEHOLDER),
        "auth_expected": hello_input(False, tok, hello(HELPER, AUTH_FLAG) + PING),
        "auth_partial": hello_input(True, tok, hello(SHIM, AUTH_FLAG) + AUTH_PLACEHOLDER[:20]),
        # the longest token (256 bytes: HMAC hashes keys over 64 bytes first)
        "auth_token_256": hello_input(True, bytes(range(256)), hello(SHIM, AUTH_FLAG)
                                      + AUTH_PLACEHOLDER, 2),
        # refusals: token on one side only, version 2, wrong role, limits, HTTP
        "token_one_side": hello_input(True, tok, hello(SHIM) + PING),
        "version_2": hello_input(False, b"", hello(HELPER, version=2)),
        "wrong_role": hello_input(False, b"", hello(SHIM)),
        "limits_out_of_range": hello_input(False, b"", hello(HELPER, max_frame=1 << 21)),
        "http_get": hello_input(True, b"", b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"),
    }


def addr_seeds():
    # ctl bits 0-1: parser (0 addr_parse, 1 hostport, 2 usbmuxd env);
    # bits 2-4: allowed kinds (1 unix, 2 tcp, 4 tunnel); bits 5-7: error buffer size
    def a(parser, allowed, text, errsize=7):
        return bytes([parser | allowed << 2 | errsize << 5]) + text.encode()
    return {
        "unix": a(0, 7, "unix:/run/host/usbmuxd"),
        "tcp_v4": a(0, 7, "tcp:127.0.0.1:27015"),
        "tunnel_name": a(0, 7, "tunnel:host.docker.internal:27016"),
        "tcp_v6": a(0, 7, "tcp:[::1]:65535"),
        "kind_not_allowed": a(0, 1, "tunnel:127.0.0.1:27016", 0),
        "v6_unbracketed": a(0, 7, "tcp:::1:27015", 2),
        "port_out_of_range": a(0, 7, "tcp:localhost:65536"),
        "relative_path": a(0, 7, "unix:run/usbmuxd"),
        "hostport": a(1, 0, "127.0.0.1:27016"),
        "hostport_v6": a(1, 0, "[fe80::1%lo]:27016"),
        "env_unix": a(2, 0, "UNIX:/var/run/usbmuxd"),
        "env_tcp": a(2, 0, "192.168.1.2:27015"),
        "env_long_path": a(2, 0, "UNIX:/" + "p" * 120, 1),
        "long_host": a(0, 7, "tunnel:[" + "h" * 255 + "]:65535"),
    }


MOUNTINFO = (
    "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
    "25 22 0:21 / /proc rw,nosuid shared:12 - proc proc rw\n"
    "31 22 0:25 / /run rw,nosuid,nodev - tmpfs tmpfs rw,mode=755\n"
    "40 31 0:30 /usbmuxd /run/host/usbmuxd rw,relatime - tmpfs tmpfs rw\n"
    "41 22 8:1 /srv/a\\040b /mnt/with\\040space ro - ext4 /dev/sda1 rw\n"
)


def mountinfo_seeds():
    return {
        "bind_mounted_file": b"/run/host/usbmuxd\0" + MOUNTINFO.encode(),
        "escaped_space": b"/mnt/with space\0" + MOUNTINFO.encode(),
        "not_mounted": b"/var/run/usbmuxd\0" + MOUNTINFO.encode(),
        "short_lines": b"/x\0" + b"1 2 3\n\n1 2 3 4 /x\n1 2 3 4  /x\n",
    }


XML_HEAD = (b'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" '
            b'"http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n<plist version="1.0">\n')


def umx(body, version=1, message=8, tag=0):
    """A usbmuxd message; fuzz_proto decodes an odd tag as a reply/event."""
    return struct.pack("<IIII", 16 + len(body), version, message, tag) + body


def xml_dict(inner):
    return XML_HEAD + b"<dict>" + inner + b"</dict></plist>"


def proto_seeds():
    props = (b"<key>ConnectionSpeed</key><integer>480000000</integer>"
             b"<key>ConnectionType</key><string>USB</string><key>DeviceID</key><integer>3</integer>"
             b"<key>LocationID</key><integer>4660</integer><key>ProductID</key><integer>4776</integer>"
             b"<key>SerialNumber</key><string>00008030-001A2B3C4D5E6F70</string>")
    attached = (b"<key>MessageType</key><string>Attached</string><key>DeviceID</key><integer>3</integer>"
                b"<key>Properties</key><dict>" + props + b"</dict>")
    rec = struct.pack("<IH", 3, 0x12a8) + b"serial".ljust(256, b"\0") + struct.pack("<HI", 0, 0x1234)
    return {
        "req_list_devices": umx(xml_dict(b"<key>MessageType</key><string>ListDevices</string>"), tag=2),
        "req_connect": umx(xml_dict(b"<key>MessageType</key><string>Connect</string><key>DeviceID</key>"
                                    b"<integer>3</integer><key>PortNumber</key><integer>32498</integer>"), tag=4),
        "req_read_pair_record": umx(xml_dict(b"<key>MessageType</key><string>ReadPairRecord</string>"
                                             b"<key>PairRecordID</key><string>00008030-0011</string>"), tag=6),
        "req_v0_connect": umx(struct.pack("<IHH", 3, 0xf27e, 0), version=0, message=2, tag=8),
        "req_v0_listen": umx(b"", version=0, message=3, tag=10),
        "ev_result": umx(xml_dict(b"<key>MessageType</key><string>Result</string><key>Number</key>"
                                  b"<integer>2</integer>"), tag=1),
        "ev_attached": umx(xml_dict(attached), tag=1),
        "ev_detached": umx(xml_dict(b"<key>MessageType</key><string>Detached</string><key>DeviceID</key>"
                                    b"<integer>3</integer>"), tag=1),
        "ev_device_list": umx(xml_dict(b"<key>DeviceList</key><array><dict>" + attached + b"</dict></array>"), tag=3),
        "ev_buid": umx(xml_dict(b"<key>BUID</key><string>41A8CD95-05A8-BB46-DE5F-BEEF1B3F056A</string>"), tag=5),
        "ev_v0_add": umx(rec, version=0, message=4, tag=1),
        "ev_v0_result": umx(struct.pack("<I", 0), version=0, message=1, tag=1),
    }


def plist_seeds():
    """Real requests in both forms, and the hostile shapes the guard refuses."""
    base = {"ClientVersionString": "libusbmuxd 2.0.2", "ProgName": "idevice_id",
            "kLibUSBMuxVersion": 3}
    reqs = {
        "list": dict(base, MessageType="ListDevices"),
        "connect": dict(base, MessageType="Connect", DeviceID=3, PortNumber=32498),
        "read_pair": dict(base, MessageType="ReadPairRecord",
                          PairRecordID="00008030-001A2B3C4D5E6F70"),
        "save_pair": dict(base, MessageType="SavePairRecord", DeviceID=3,
                          PairRecordID="00008030-001A2B3C4D5E6F70",
                          PairRecordData=plistlib.dumps(
                              {k: bytes(range(256)) * 2 for k in
                               ("DeviceCertificate", "HostCertificate", "HostPrivateKey",
                                "RootCertificate", "RootPrivateKey")},
                              fmt=plistlib.FMT_BINARY)),
    }
    seeds = {}
    for name, d in reqs.items():
        seeds[name + ".xml"] = plistlib.dumps(d)
        seeds[name + ".bin"] = plistlib.dumps(d, fmt=plistlib.FMT_BINARY)
    seeds["amplifying_1k.bin"] = bplist.amplifying_request(1024)
    seeds["cycle.bin"] = bplist.encode([("array", [1]), ("array", [0])], root=0)
    seeds["shared_ok.bin"] = bplist.encode([("true",), ("array", [0, 0]), ("array", [1, 1])],
                                           root=2)
    seeds["nested.xml"] = b"<plist>" + b"<array>" * 40 + b"</array>" * 40 + b"</plist>"
    seeds["nul.xml"] = plistlib.dumps(dict(base, MessageType="List")).replace(b"List", b"Li\0st")
    return seeds


def write(name, seeds):
    d = os.path.join(HERE, "corpus", name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for fname, data in seeds.items():
        with open(os.path.join(d, fname), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    write("hello", hello_seeds())
    write("addr", addr_seeds())
    write("mountinfo", mountinfo_seeds())
    write("proto", proto_seeds())
    write("plist", plist_seeds())
