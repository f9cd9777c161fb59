#!/usr/bin/env python3
"""The tunnel's bulk rate, plain and encrypted, side by side: part B of
bench.py narrowed to its two tunnel rows and its bulk metric
(`make bench-tunnel`). One fakedev + devsvc; per round, each direction is
measured on the plain tunnel then on the encrypted one, back to back; the
figures are the medians of the rounds, the ratio that of the medians.

--hold SECONDS keeps both tunnels up afterwards (their daemons' pids are
printed) and runs one saturating --recv or --send on one of them, so
that a profiler can be attached (perf record -p PID)."""
import argparse
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
from bench import MIB, Samples, harness, log, muxconn  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5, help="rounds; figures are their median")
    ap.add_argument("--bulk-mib", type=int, default=256, help="size of one bulk transfer")
    ap.add_argument("--hold", type=float, default=0,
                    help="then run a saturating transfer on --hold-path this long")
    ap.add_argument("--hold-mode", choices=("recv", "send"), default="recv")
    ap.add_argument("--hold-path", choices=("tunnel", "tunnel_enc"), default="tunnel_enc")
    args = ap.parse_args()
    for t in ("muxconn", "fakedev", "devsvc"):
        harness.tool(t)
    logdir = harness.tempdir("bench-tunnel")
    res = {"samples": Samples(), "failed": {}, "errors": []}
    S = res["samples"]
    try:
        fdev = harness.FakeDev(os.path.join(logdir, "fakedev.sock"), logdir=logdir).start()
        dsvc = harness.DevSvc(logdir=logdir).start()
        paths = [p for p in bench.build_paths_b(fdev, os.path.join(logdir, "b"), res)
                 if p.key in ("tunnel", "tunnel_enc")]
        if res["errors"]:
            sys.exit("bench-tunnel: %s" % "; ".join(res["errors"]))

        clk = os.sysconf("SC_CLK_TCK")

        def cpu(pid, precise=False):
            if precise:
                # The daemons: their threads' run time in ns (schedstat), where
                # utime + stime would count 10 ms ticks.
                total = 0
                for t in os.listdir("/proc/%d/task" % pid):
                    with open("/proc/%d/task/%s/schedstat" % (pid, t)) as f:
                        total += int(f.read().split()[0])
                return total / 1e9
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / clk   # utime + stime

        cpu_ns = {}    # (mode, path key, process) -> [CPU ns per byte, one per round]

        def bulk(p, mode, n, seed, account=False):
            procs = {"shim": p.daemons[[k for k in p.daemons if k.startswith("muxshim (")][0]],
                     "helper": p.daemons[[k for k in p.daemons if k.startswith("muxshim-host")][0]],
                     "fakedev": fdev, "devsvc": dsvc}
            precise = ("shim", "helper")
            before = {k: cpu(v.pid, k in precise) for k, v in procs.items()}
            ru = resource.getrusage(resource.RUSAGE_CHILDREN)
            before["client"] = ru.ru_utime + ru.ru_stime
            r = muxconn(["--socket", p.socket, "--port", dsvc.port, "--" + mode, n,
                         "--seed", seed, "--timeout", 60], timeout=75)
            if account:
                ru = resource.getrusage(resource.RUSAGE_CHILDREN)
                after = {k: cpu(v.pid, k in precise) for k, v in procs.items()}
                after["client"] = ru.ru_utime + ru.ru_stime
                for k in after:
                    cpu_ns.setdefault((mode, p.key, k), []).append(
                        (after[k] - before[k]) * 1e9 / n)
            return r["mbps"]

        for p in paths:
            for mode in ("recv", "send"):
                bulk(p, mode, 4 * MIB, 99)
        for rnd in range(args.reps):
            for mode in ("recv", "send"):
                for p in paths:
                    S.add((mode, p.key), rnd, bulk(p, mode, args.bulk_mib * MIB, rnd + 1, True))
            log("round %d/%d: %s" % (rnd + 1, args.reps, "  ".join(
                "%s %s %.0f" % (m, k, S.d[(m, k)][rnd])
                for m in ("recv", "send") for k in ("tunnel", "tunnel_enc"))))
        print("%-6s %12s %12s %8s" % ("", "plain MB/s", "enc MB/s", "ratio"))
        for mode in ("recv", "send"):
            print("%-6s %12.0f %12.0f %7.3fx" % (
                mode, S.get((mode, "tunnel")), S.get((mode, "tunnel_enc")),
                S.ratio((mode, "tunnel_enc"), (mode, "tunnel"))))
        print("\nCPU time per byte moved (ns/B, median of the rounds; shim and helper from "
              "schedstat, the others in clock ticks of %d ms):" % (1000 // clk))
        names = ("client", "shim", "helper", "fakedev", "devsvc")
        print("%-6s %-11s" % ("", "") + "".join("%9s" % k for k in names) + "%9s" % "total")
        for mode in ("recv", "send"):
            for p in paths:
                v = [statistics.median(cpu_ns[(mode, p.key, k)]) for k in names]
                print("%-6s %-11s" % (mode, p.key) + "".join("%9.2f" % x for x in v)
                      + "%9.2f" % sum(v))
        if args.hold > 0:
            enc = [p for p in paths if p.key == args.hold_path][0]
            print("pids: " + " ".join("%s=%d" % (n, d.pid) for n, d in enc.daemons.items()),
                  flush=True)
            load = harness.Proc([harness.tool("muxconn"), "--socket", enc.socket, "--port",
                                 dsvc.port, "--" + args.hold_mode, 1 << 42, "--timeout",
                                 int(args.hold) + 60],
                                name="hold", logdir=logdir, ready_fn=lambda: True)
            load.start()
            time.sleep(args.hold)   # the profiler's window, not a synchronisation
            load.kill()
    finally:
        harness.cleanup_all()


if __name__ == "__main__":
    main()
