"""The incident, reproduced and fixed (issue: the tunnel).

In a network namespace with 200 ephemeral ports and tcp_tw_reuse=0 (Windows
has no TIME_WAIT reuse), the seed's per-session TCP chain must fail within
about 200 sessions: that proves the test can fail. The same kind of sessions
through muxshim's tunnel, with the helper's upstream over TCP, must all
succeed, 20,000 of them, leaving no TIME_WAIT on the tunnel or upstream hops.
"""
import json
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import harness  # noqa: E402

INNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "exhaustion_inner.py")


def run_in_small_netns(mode, sessions, timeout):
    script = ('ip link set lo up && '
              'sysctl -qw net.ipv4.ip_local_port_range="40000 40199" net.ipv4.tcp_tw_reuse=0 && '
              'exec "$0" "$@"')
    p = subprocess.run(["unshare", "--net", "sh", "-c", script, sys.executable, INNER, mode,
                        str(sessions)], capture_output=True, text=True, timeout=timeout)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if p.returncode != 0 or not lines:
        raise AssertionError("inner run failed rc=%d\nstdout=%s\nstderr=%s"
                             % (p.returncode, p.stdout, p.stderr[-4000:]))
    return json.loads(lines[-1])


class PortExhaustion(unittest.TestCase):
    def test_seed_chain_runs_out_of_ports(self):
        r = run_in_small_netns("chain", 1000, 300)
        print("\nseed chain:", json.dumps(r), flush=True)
        self.assertEqual(r["port_range"], ["40000", "40199"])
        self.assertEqual(r["tw_reuse"], "0")
        self.assertIsNotNone(r["first_failure"], "the per-session chain never failed")
        # Two TCP hops per session, each leaving TIME_WAIT toward its own
        # destination: the 200-port range is gone after about 200 sessions.
        self.assertLessEqual(r["first_failure"], 260)
        self.assertGreaterEqual(r["first_failure"], 150)
        self.assertGreaterEqual(sum(r["time_wait"].values()), 190)

    def test_tunnel_survives_20000_sessions(self):
        r = run_in_small_netns("tunnel", 20000, 900)
        print("\ntunnel:", json.dumps(r), flush=True)
        self.assertEqual(r["tw_reuse"], "0")
        self.assertEqual(r["ok"], 20000, r)
        self.assertTrue(r["helper_alive"])
        tw = r["time_wait"]
        self.assertEqual(tw.get("27016", 0), 0, "TIME_WAIT on the tunnel hop: %s" % tw)
        self.assertEqual(tw.get("27015", 0), 0, "TIME_WAIT on the upstream hop: %s" % tw)


if __name__ == "__main__":
    unittest.main()
