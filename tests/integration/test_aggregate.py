"""One shim, several upstreams (issue 14): phones of several hosts in one
container.

Each "host" is a fakedev (its own phones, serials HOSTn-0001..., its own
BUID and pair-record store) behind its own muxshim-host with a token; the
shim aggregates them over one encrypted tunnel per host. Real clients
(idevice_id, lmclient on libusbmuxd) list, forward and pair through it;
each host's fakedev logs what reached it, so routing is checked where it
lands.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from tunnel_util import Helper  # noqa: E402
from test_broker import LIST, ask, raw, read_msg, serials, session  # noqa: E402
from test_realclients import echo_through  # noqa: E402

WAIT = 30  # generous bound for conditions expected long before it


class Host:
    """A host: fakedev with its phones behind muxshim-host (token)."""

    def __init__(self, d, name, ndev, token):
        self.name = name
        self.sock = os.path.join(d, name + ".sock")
        self.buid = "BUID-OF-" + name
        self.token = token
        self.dev = harness.FakeDev(self.sock, ndev, "--verbose", "--serial-prefix", name,
                                   "--buid", self.buid, name="fakedev-" + name).start()
        self.helper = Helper("unix:" + self.sock, "--token-file", token).start()
        self.port = self.helper.port

    @property
    def tunnel(self):
        return "tunnel:127.0.0.1:%d" % self.port

    def restart_helper(self):
        self.helper = Helper("unix:" + self.sock, "--token-file", self.token,
                             port=self.port).start()

    def log(self):
        return self.dev.stderr_text()


def stats(path):
    r = subprocess.run([harness.shim_binary(), "stats", "--json", "--listen", path],
                       capture_output=True, text=True, timeout=WAIT)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def health(path, *args):
    r = subprocess.run([harness.shim_binary(), "health", "--listen", path] + list(args),
                       capture_output=True, text=True, timeout=WAIT)
    return r.returncode, r.stdout


def device_list(path):
    d = ask(path, LIST)
    import plistlib
    return plistlib.loads(d[16:])["DeviceList"]


class TwoHosts(unittest.TestCase):

    def setUp(self):
        self.d = harness.tempdir("aggregate")
        self.token = harness.write_token(os.path.join(self.d, "token"))
        self.a = Host(self.d, "hostA", 2, self.token)
        self.b = Host(self.d, "hostB", 2, self.token)
        self.path = os.path.join(self.d, "shim.sock")

    def tearDown(self):
        harness.cleanup_all()

    def start_shim(self, *args, hosts=None):
        hosts = hosts or (self.a, self.b)
        argv = []
        for h in hosts[1:]:
            argv += ["--upstream", h.tunnel]
        self.shim = harness.Shim(self.path, hosts[0].tunnel, *argv, "--token-file", self.token,
                                 "--broker", *args).start()
        harness.wait_for(lambda: self.shim.stderr_text().count("broker: subscribed to ")
                         >= len(hosts), WAIT, what="a subscription per upstream")
        return self.shim

    def test_every_phone_once_with_distinct_ids(self):
        self.start_shim()
        devs = device_list(self.path)
        self.assertEqual(sorted(e["Properties"]["SerialNumber"] for e in devs),
                         ["hostA-0001", "hostA-0002", "hostB-0001", "hostB-0002"])
        ids = [e["DeviceID"] for e in devs]
        self.assertEqual(len(set(ids)), 4, ids)
        for e in devs:  # clients read one or the other
            self.assertEqual(e["DeviceID"], e["Properties"]["DeviceID"])
        # The host whose list came first keeps usbmuxd's own IDs; the
        # other's collide and are remapped, stable while attached.
        by = {e["Properties"]["SerialNumber"]: e["DeviceID"] for e in devs}
        self.assertIn({(by["hostA-0001"], by["hostA-0002"]), (by["hostB-0001"], by["hostB-0002"])},
                      ({(1, 2), (0x1000000, 0x1000001)},))
        self.assertEqual({e["DeviceID"] for e in device_list(self.path)}, set(ids))
        # A real client lists the four (idevice_id, libimobiledevice).
        rc, out, err = harness.run_client(["idevice_id", "-l"], self.path)
        self.assertEqual(rc, 0, err)
        self.assertEqual(sorted(out.split()), sorted(by))
        # Each host saw one subscription and nothing for the 2 lists.
        for h in (self.a, self.b):
            self.assertEqual(h.log().count("ListDevices"), 1, h.name)
        s = stats(self.path)
        self.assertEqual([u["name"] for u in s["upstreams"]], [self.a.tunnel, self.b.tunnel])
        self.assertEqual([(u["subscription"], u["devices"]) for u in s["upstreams"]],
                         [("live", 2), ("live", 2)])
        self.assertEqual(s["broker"]["devices"], 4)

    def test_connect_goes_to_the_phones_host(self):
        svc = harness.DevSvc().start()
        self.start_shim()
        by = {e["Properties"]["SerialNumber"]: e["DeviceID"] for e in device_list(self.path)}
        for serial, host, own in (("hostA-0002", self.a, 2), ("hostB-0001", self.b, 1),
                                  ("hostB-0002", self.b, 2)):
            before = host.log().count("Connect dev %d port %d -> 0" % (own, svc.port))
            r = harness.muxconn("--port", svc.port, "--echo", 4096, "--device", by[serial],
                                socket=self.path)
            self.assertTrue(r.get("ok"), r)
            self.assertEqual(host.log().count("Connect dev %d port %d -> 0" % (own, svc.port)),
                             before + 1, serial)
        # iproxy (libusbmuxd-tools) forwards a local port to a phone of each
        # host, picked by UDID.
        for serial, host in (("hostA-0001", self.a), ("hostB-0002", self.b)):
            before = host.log().count("port %d -> 0" % svc.port)
            ip = harness.Iproxy(self.path, svc.port, 0, "-u", serial).start()
            payload = serial.encode() * 1000
            self.assertEqual(echo_through(ip.lport, payload, timeout=WAIT), payload, serial)
            self.assertEqual(host.log().count("port %d -> 0" % svc.port), before + 1, serial)
            ip.stop()
        # lmclient's connect1 uses usbmuxd_connect(1, port): hostA-0001.
        rc, out, err = harness.run_client([harness.tool("lmclient"), "all", "--expect-devices",
                                           "4", "--connect-port", svc.port,
                                           "--udid", "hostA-0001"], self.path)
        self.assertEqual(rc, 0, err + out)

    def test_pairing_a_phone_of_the_second_host(self):
        # The real libusbmuxd calls of a pairing client: ReadBUID, then
        # SavePairRecord for the phone, then read it back. The record must
        # land on the phone's host (hostB) and nowhere else.
        lm = harness.tool("lmclient")
        self.start_shim()
        rc, out, err = harness.run_client([lm, "all", "--expect-devices", "4", "--udid",
                                           "hostB-0002", "--keep-record"], self.path)
        self.assertEqual(rc, 0, err + out)
        self.assertIn("save rc=0", out)
        self.assertIn("read rc=0", out)
        direct_b = ask(self.b.sock, {"MessageType": "ReadPairRecord", "PairRecordID": "hostB-0002"})
        direct_a = ask(self.a.sock, {"MessageType": "ReadPairRecord", "PairRecordID": "hostB-0002"})
        import plistlib
        rec = plistlib.loads(plistlib.loads(direct_b[16:])["PairRecordData"])
        self.assertEqual(plistlib.loads(direct_a[16:]).get("Number"), 2)  # no record on A
        self.assertIn("SavePairRecord hostB-0002 -> 0", self.b.log())
        self.assertNotIn("SavePairRecord", self.a.log())
        # Both hosts' phones are visible: ReadBUID named the first host's
        # BUID, and that is what the record holds (docs/BROKER.md).
        self.assertIn("buid rc=0 value=%s" % self.a.buid, out)
        self.assertEqual(rec["SystemBUID"], self.a.buid)
        harness.cleanup_all()

    def test_pairing_in_a_container_limited_to_that_phone(self):
        # A container given only hostB's phone: ReadBUID names hostB, so the
        # record saved on hostB holds hostB's own BUID.
        lm = harness.tool("lmclient")
        self.start_shim("--device", "hostB-0001")
        rc, out, err = harness.run_client([lm, "all", "--expect-devices", "1", "--udid",
                                           "hostB-0001", "--keep-record"], self.path)
        self.assertEqual(rc, 0, err + out)
        self.assertIn("buid rc=0 value=%s" % self.b.buid, out)
        import plistlib
        direct_b = ask(self.b.sock, {"MessageType": "ReadPairRecord", "PairRecordID": "hostB-0001"})
        rec = plistlib.loads(plistlib.loads(direct_b[16:])["PairRecordData"])
        self.assertEqual(rec["SystemBUID"], self.b.buid)
        self.assertNotIn("SavePairRecord", self.a.log())

    def test_one_host_lost_the_others_keep_working(self):
        svc = harness.DevSvc().start()
        self.start_shim()
        by = {e["Properties"]["SerialNumber"]: e["DeviceID"] for e in device_list(self.path)}
        with session(self.path) as listener, socket.socket(socket.AF_UNIX) as pipe:
            listener.sendall(raw({"MessageType": "Listen"}, 5))
            self.assertEqual(read_msg(listener)[4]["Number"], 0)
            seen = sorted(read_msg(listener)[4]["Properties"]["SerialNumber"] for _ in range(4))
            self.assertEqual(seen, sorted(by))
            # A Connect pipe to a phone of host A, open across the loss.
            pipe.settimeout(WAIT)
            pipe.connect(self.path)
            pipe.sendall(raw({"MessageType": "Connect", "DeviceID": by["hostA-0001"],
                              "PortNumber": socket.htons(svc.port)}, 6))
            self.assertEqual(read_msg(pipe)[4]["Number"], 0)
            pipe.sendall(b"ECHO\n")

            self.b.helper.kill()
            gone = [read_msg(listener)[4] for _ in range(2)]
            self.assertEqual(sorted((e["MessageType"], e["DeviceID"]) for e in gone),
                             sorted(("Detached", by[s]) for s in ("hostB-0001", "hostB-0002")))
            # Host A untouched: its pipe still echoes, its phones listed and
            # reachable; health is ok while one upstream is, --all is not.
            pipe.sendall(b"still here")
            got = b""
            while len(got) < len(b"still here"):
                chunk = pipe.recv(64)
                self.assertTrue(chunk, "host A's Connect pipe ended when host B was lost")
                got += chunk
            self.assertEqual(got, b"still here")
            # ... and answered at once: no request waits on the lost host
            # (neither for its resubscription nor for its tunnel).
            parked = stats(self.path)["broker"]["parked"]
            for _ in range(20):
                self.assertEqual(sorted(serials(ask(self.path, LIST))),
                                 ["hostA-0001", "hostA-0002"])
            self.assertEqual(stats(self.path)["broker"]["parked"], parked,
                             "ListDevices waited for the lost host")
            r = harness.muxconn("--port", svc.port, "--echo", 1024, "--device", by["hostA-0002"],
                                socket=self.path)
            self.assertTrue(r.get("ok"), r)
            rc, out = health(self.path)
            self.assertEqual(rc, 0, out)
            harness.wait_for(lambda: health(self.path, "--all")[0] == 1, WAIT,
                             what="health --all failing while host B is away")
            self.assertIn(self.b.tunnel, health(self.path, "--all")[1])
            ups = stats(self.path)["upstreams"]
            self.assertEqual([u["tunnel"]["up"] for u in ups], [True, False])
            self.assertEqual(stats(self.path)["broker"]["subscription"], "partial")

            # Host B comes back: its phones are Attached again.
            self.b.restart_helper()
            back = [read_msg(listener)[4] for _ in range(2)]
            self.assertEqual(sorted((e["MessageType"], e["Properties"]["SerialNumber"])
                                    for e in back),
                             [("Attached", "hostB-0001"), ("Attached", "hostB-0002")])
            harness.wait_for(lambda: health(self.path, "--all")[0] == 0, WAIT,
                             what="health --all ok again")
        self.assertEqual(len(device_list(self.path)), 4)

    def test_filter_and_tenants_select_phones_wherever_they_are(self):
        # The shim's filter names phones of both hosts.
        self.start_shim("--device", "hostA-0002,hostB-0001")
        self.assertEqual(sorted(serials(ask(self.path, LIST))), ["hostA-0002", "hostB-0001"])
        self.shim.stop()
        # The hosts' tenant rules: the same tenants file on both hosts gives
        # this container's token one phone on each; an unfiltered shim sees
        # exactly those two (test_tenants tests what else a host refuses).
        tenants = os.path.join(self.d, "tenants")
        with open(tenants, "w") as f:
            f.write("lab  %s  hostA-0001,hostB-0002\n" % self.token)
        for h in (self.a, self.b):
            h.helper.stop()
            h.helper = Helper("unix:" + h.sock, "--tenants", tenants, port=h.port).start()
        self.start_shim()
        harness.wait_for(lambda: sorted(serials(ask(self.path, LIST))) ==
                         ["hostA-0001", "hostB-0002"], WAIT,
                         what="the tenants' phones through the aggregate")
        rc, out, err = harness.run_client(["idevice_id", "-l"], self.path)
        self.assertEqual(sorted(out.split()), ["hostA-0001", "hostB-0002"], err)

    def test_the_same_phone_on_two_hosts_is_two_entries(self):
        # As usbmuxd lists a phone's USB and network entries apart: a third
        # host whose phones have host A's UDIDs (the same phones, seen from
        # elsewhere) adds entries of their own, with IDs of their own.
        c = Host(self.d, "hostC", 2, self.token)
        c.dev.stop()
        c.dev = harness.FakeDev(c.sock, 2, "--verbose", "--serial-prefix", "hostA",
                                "--buid", c.buid, name="fakedev-hostC-as-A").start()
        self.start_shim(hosts=(self.a, self.b, c))
        devs = device_list(self.path)
        self.assertEqual(sorted(e["Properties"]["SerialNumber"] for e in devs),
                         ["hostA-0001", "hostA-0001", "hostA-0002", "hostA-0002",
                          "hostB-0001", "hostB-0002"])
        self.assertEqual(len({e["DeviceID"] for e in devs}), 6)
        # A Connect to either entry of hostA-0001 lands on the host behind it.
        svc = harness.DevSvc().start()
        for e in devs:
            if e["Properties"]["SerialNumber"] != "hostA-0001":
                continue
            before = (self.a.log().count("-> 0"), c.log().count("-> 0"))
            r = harness.muxconn("--port", svc.port, "--echo", 1024, "--device", e["DeviceID"],
                                socket=self.path)
            self.assertTrue(r.get("ok"), r)
            after = (self.a.log().count("-> 0"), c.log().count("-> 0"))
            self.assertEqual(sum(after) - sum(before), 1)
        self.assertGreater(self.a.log().count("Connect dev 1 port %d -> 0" % svc.port), 0)
        self.assertGreater(c.log().count("Connect dev 1 port %d -> 0" % svc.port), 0)

    def test_mixed_unix_and_tunnel_from_the_environment(self):
        env = {"MUXSHIM_UPSTREAM": "unix:%s,%s" % (self.a.sock, self.b.tunnel)}
        self.shim = harness.Shim(self.path, None, "--token-file", self.token, "--broker",
                                 env=env).start()
        harness.wait_for(lambda: self.shim.stderr_text().count("broker: subscribed to ") >= 2,
                         WAIT, what="both subscriptions")
        self.assertEqual(sorted(serials(ask(self.path, LIST))),
                         ["hostA-0001", "hostA-0002", "hostB-0001", "hostB-0002"])

    def test_bad_combinations_are_refused(self):
        shim = harness.shim_binary()
        for args, says in (
                (["--passthrough", "--upstream", self.a.tunnel, "--upstream", self.b.tunnel],
                 "--passthrough relays to one upstream"),
                (["--upstream", self.a.tunnel, "--upstream", self.a.tunnel], "given twice"),
        ):
            r = subprocess.run([shim, "--listen", self.path] + args, capture_output=True,
                               text=True, timeout=WAIT)
            self.assertEqual(r.returncode, 2, (args, r.stderr))
            self.assertIn(says, r.stderr)



# Scale: 16 hosts of 8 phones behind one shim (issue 14, item 6). Under
# valgrind every helper and the shim run under memcheck (each a few seconds
# to start and ~10x slower): 4 hosts there, which still crosses the
# collision remapping and the rolling restart; the plain and ASan passes run
# all 16.
SCALE_HOSTS = 4 if harness.VALGRIND else 16
SCALE_DEVICES = 8


class Traffic:
    """A client loop in a thread, as a farm's test runner would be: one
    muxconn ListDevices loop and one WebDriverAgent-pattern Connect loop per
    round, to a phone of a host other than the one being taken down. Every
    round must succeed."""

    def __init__(self, path, port, phones):
        self.path, self.port = path, port
        self.phones = phones          # host index -> [client-side DeviceID]
        self.cond = threading.Condition()
        self.down = None              # the host not to use
        self.started = self.finished = 0
        self.failures = []
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        n = len(self.phones)
        while True:
            with self.cond:
                if self.stopping:
                    return
                rnd = self.started
                self.started += 1
                # The next host after the one that is down (or round-robin).
                h = (rnd % n) if self.down is None else (self.down + 1 + rnd % (n - 1)) % n
                dev = self.phones[h][rnd % len(self.phones[h])]
            errs = []
            for args in (("--list-loop", 10, "--parallel", 2),
                         ("--connect-loop", 6, "--parallel", 2, "--device", dev,
                          "--port", self.port, "--size", 1024)):
                r = harness.muxconn(*args, socket=self.path, timeout=WAIT * 4, check=False)
                if r["_rc"] != 0 or not r.get("ok"):
                    errs.append("round %d (host %d, device %#x) %s: %s %s"
                                % (rnd, h, dev, args[0], r, r["_stderr"][-500:]))
            with self.cond:
                self.failures += errs
                self.finished += 1
                self.cond.notify_all()

    def set_down(self, h):
        """No round started from now on uses host h; returns once none that
        started before does either (rounds run one at a time)."""
        with self.cond:
            self.down = h
            n = self.started
            ok = self.cond.wait_for(lambda: self.finished >= n, WAIT * 4)
        assert ok, "a traffic round did not finish"

    def one_more_round(self):
        """Waits until a round that started after this call has finished:
        traffic ran while the state of the moment held."""
        with self.cond:
            n = self.started + 1
            ok = self.cond.wait_for(lambda: self.finished >= n, WAIT * 4)
        assert ok, "a traffic round did not finish"

    def stop(self):
        with self.cond:
            self.stopping = True
        self.thread.join(WAIT * 4)


class Scale(unittest.TestCase):
    """16 hosts' helpers, 8 phones each, behind one shim: real clients list,
    listen and connect across all of them, and every host's helper is
    killed and restarted in turn while traffic to the others runs."""

    def setUp(self):
        self.d = harness.tempdir("aggregate-scale")
        self.token = harness.write_token(os.path.join(self.d, "token"))
        self.hosts = [Host(self.d, "h%02d" % i, SCALE_DEVICES, self.token)
                      for i in range(SCALE_HOSTS)]
        self.path = os.path.join(self.d, "shim.sock")

    def tearDown(self):
        harness.cleanup_all()

    def start_shim(self, path, hosts):
        argv = []
        for h in hosts[1:]:
            argv += ["--upstream", h.tunnel]
        shim = harness.Shim(path, hosts[0].tunnel, *argv, "--token-file", self.token,
                            "--broker", name="muxshim-%d" % len(hosts)).start()
        want = [(h.tunnel, "live", h.dev.devices) for h in hosts]
        harness.wait_for(lambda: [(u["name"], u["subscription"], u["devices"])
                                  for u in stats(path)["upstreams"]] == want,
                         WAIT * 2, what="every upstream live with its phones")
        return shim

    def expected_serials(self, hosts=None):
        return sorted("%s-%04d" % (h.name, i + 1) for h in hosts or self.hosts
                      for i in range(h.dev.devices))

    def test_list_listen_connect_and_rolling_restarts(self):
        svc = harness.DevSvc().start()
        self.start_shim(self.path, self.hosts)
        everyone = self.expected_serials()
        self.assertEqual(len(everyone), SCALE_HOSTS * SCALE_DEVICES)

        # A real client lists them all (libimobiledevice's idevice_id).
        rc, out, err = harness.run_client(["idevice_id", "-l"], self.path)
        self.assertEqual(rc, 0, err)
        self.assertEqual(sorted(out.split()), everyone)

        with session(self.path) as listener:
            listener.sendall(raw({"MessageType": "Listen"}, 5))
            self.assertEqual(read_msg(listener)[4]["Number"], 0)
            att = [read_msg(listener)[4] for _ in everyone]
            self.assertEqual({e["MessageType"] for e in att}, {"Attached"})
            self.assertEqual(sorted(e["Properties"]["SerialNumber"] for e in att), everyone)
            ids = [e["DeviceID"] for e in att]
            self.assertEqual(len(set(ids)), len(ids), "DeviceIDs not distinct")
            by = {e["Properties"]["SerialNumber"]: e["DeviceID"] for e in att}
            self.assertEqual(by, {e["Properties"]["SerialNumber"]: e["DeviceID"]
                                  for e in device_list(self.path)})

            # Connect to a phone on several different hosts: each lands on
            # its own host, under that host's own DeviceID.
            for k in sorted({0, 1, SCALE_HOSTS // 2, SCALE_HOSTS - 1}):
                h = self.hosts[k]
                own = k % SCALE_DEVICES + 1
                line = "Connect dev %d port %d -> 0" % (own, svc.port)
                before = h.log().count(line)
                r = harness.muxconn("--port", svc.port, "--echo", 4096, "--device",
                                    by["%s-%04d" % (h.name, own)], socket=self.path)
                self.assertTrue(r.get("ok"), r)
                self.assertEqual(h.log().count(line), before + 1, h.name)

            # Each host's helper killed and restarted in turn while traffic
            # to the other hosts runs; the listener sees exactly that host's
            # phones go and come back, and nothing else.
            phones = {k: [by["%s-%04d" % (h.name, i + 1)] for i in range(SCALE_DEVICES)]
                      for k, h in enumerate(self.hosts)}
            traffic = Traffic(self.path, svc.port, phones)
            traffic.thread.start()
            try:
                for k, h in enumerate(self.hosts):
                    mine = ["%s-%04d" % (h.name, i + 1) for i in range(SCALE_DEVICES)]
                    traffic.set_down(k)
                    h.helper.kill()
                    gone = [read_msg(listener)[4] for _ in mine]
                    self.assertEqual(sorted((e["MessageType"], e["DeviceID"]) for e in gone),
                                     sorted(("Detached", by[s]) for s in mine), h.name)
                    traffic.one_more_round()     # the others served while h is away
                    self.assertEqual(len(device_list(self.path)), len(everyone) - len(mine))
                    h.restart_helper()
                    back = [read_msg(listener)[4] for _ in mine]
                    self.assertEqual(sorted((e["MessageType"], e["Properties"]["SerialNumber"])
                                            for e in back),
                                     [("Attached", s) for s in mine], h.name)
                    for e in back:               # its IDs from now on
                        by[e["Properties"]["SerialNumber"]] = e["DeviceID"]
                    traffic.phones[k] = [by[s] for s in mine]
                    self.assertEqual(len(set(by.values())), len(everyone), "IDs collide")
                    traffic.one_more_round()
            finally:
                traffic.stop()
            self.assertEqual(traffic.failures, [])
            self.assertGreaterEqual(traffic.finished, 2 * SCALE_HOSTS)
            self.assertEqual({e["Properties"]["SerialNumber"]: e["DeviceID"]
                              for e in device_list(self.path)}, by)
            # Nothing else was queued for the listener (an event late enough
            # to miss this is caught by no bound; the counts above are exact).
            listener.setblocking(False)
            with self.assertRaises(BlockingIOError):
                listener.recv(1)
        ups = stats(self.path)["upstreams"]
        self.assertEqual([(u["subscription"], u["devices"]) for u in ups],
                         [("live", SCALE_DEVICES)] * SCALE_HOSTS)
        self.assertTrue(all(u["losses"] >= 1 for u in ups), ups)
        # Every host's phones reachable again.
        for k in (0, SCALE_HOSTS - 1):
            r = harness.muxconn("--port", svc.port, "--echo", 1024, "--device", phones[k][0],
                                socket=self.path)
            self.assertTrue(r.get("ok"), r)

    def test_memory_per_upstream_and_per_device(self):
        # Three shims, each after its subscriptions are live and a client
        # listed through it: 1 upstream with 0 phones, 1 with 128, and 16
        # with 8 each. Per device: (1x128 - 1x0) / 128; per upstream:
        # (16x8 - 1x128) / 15. Recorded in docs/LIMITS.md.
        why = harness.rss_unmeasurable()
        if why:
            self.skipTest("RSS not measurable in this pass: " + why)
        if SCALE_HOSTS < 16:
            self.skipTest("16 hosts only outside valgrind")
        n = SCALE_HOSTS * SCALE_DEVICES
        empty = Host(self.d, "empty", 0, self.token)
        big = Host(self.d, "big", n, self.token)
        rss = {}
        for key, hosts in (("1x0", [empty]), ("1xN", [big]), ("16x8", self.hosts)):
            path = os.path.join(self.d, key + ".sock")
            shim = self.start_shim(path, hosts)
            rss[key + " subscribed"] = shim.rss_kib()
            self.assertEqual(len(device_list(path)), 0 if key == "1x0" else n)
            rss[key] = shim.rss_kib()
        per_dev = (rss["1xN"] - rss["1x0"]) / n
        per_up = (rss["16x8"] - rss["1xN"]) / (SCALE_HOSTS - 1)
        print("\n  [shim RSS: 1 upstream/0 devices %d KiB; 1 upstream/%d devices %d KiB; "
              "%d upstreams/%d devices %d KiB: %.2f KiB per device, %.1f KiB per upstream]"
              % (rss["1x0"], n, rss["1xN"], SCALE_HOSTS, n, rss["16x8"], per_dev, per_up),
              flush=True)
        print("  [before the first client's list: %s]" % ", ".join(
            "%s %d KiB" % (k.split()[0], v) for k, v in rss.items() if "subscribed" in k),
              flush=True)
        # Bounds an order of magnitude above what docs/LIMITS.md states.
        self.assertLess(per_dev, 64, rss)
        self.assertLess(per_up, 512, rss)


if __name__ == "__main__":
    unittest.main()
