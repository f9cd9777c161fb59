"""make demo: the whole chain against the real usbmuxd and real clients.

1. A private real usbmuxd (Debian's) stands in for the host's.
2. A simulated container (mount + pid + net namespaces) gets the host's run
   directory read-only at /run/host, and muxshim as its /var/run/usbmuxd.
   Real clients inside (idevice_id, the libusbmuxd C library) use it
   unmodified; the host's usbmuxd is restarted under them.
3. The Windows/macOS shape: muxshim -> one tunnel -> muxshim-host -> usbmuxd
   over TCP, many sessions, and the TIME_WAIT count on the host.
4. `muxshim stats`: which process opened how many sessions of which kind.
Everything is stopped at the end."""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import harness  # noqa: E402


def say(msg):
    print("\n== " + msg, flush=True)


def show(label, rc, out, err=""):
    print("   %s (rc=%d)" % (label, rc))
    for line in (out.strip() or "(no output)").splitlines():
        print("     | " + line)
    if rc != 0 and err.strip():
        for line in err.strip().splitlines()[-5:]:
            print("     ! " + line)


def time_wait(port):
    out = subprocess.run(["ss", "-Htan", "state", "time-wait"], capture_output=True,
                         text=True).stdout
    return sum(1 for l in out.splitlines() if (":%d " % port) in l + " ")


def main():
    lm = harness.tool("lmclient")
    say("starting a private, real usbmuxd (Debian %s)" % subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "usbmuxd"], capture_output=True,
        text=True).stdout)
    mux = harness.PrivateUsbmuxd().start()
    print("   its socket: %s (no iPhone here: the device list is empty)" % mux.socket)
    show("idevice_id -l, directly", *harness.run_client(["idevice_id", "-l"], mux.socket))

    say("a container: host run dir at /run/host (read-only), muxshim on /var/run/usbmuxd")
    with harness.Container(mux.run_dir, readonly=True) as c:
        shim = c.start_shim("--broker", log_level="info")  # the default, said out loud
        show("ls -l /var/run/usbmuxd inside", *c.exec("ls -l /var/run/usbmuxd"))
        show("idevice_id -l inside, no configuration",
             *c.exec("unset USBMUXD_SOCKET_ADDRESS; idevice_id -l"))
        rc_in, out_in, err_in = c.exec("unset USBMUXD_SOCKET_ADDRESS; %s all" % lm)
        show("libusbmuxd calls inside (list, BUID, pair records, events, connect)",
             rc_in, out_in, err_in)
        rc_d, out_d, _ = harness.run_client([lm, "all"], mux.socket)
        print("   same answers as directly on the host: %s"
              % ("YES" if (rc_in, out_in) == (rc_d, out_d) else "NO"))
        say("restarting the host's usbmuxd under the running shim")
        mux.restart()
        show("idevice_id -l inside, after the restart",
             *c.exec("unset USBMUXD_SOCKET_ADDRESS; idevice_id -l; echo exit=$?"))
        shim.stop()
        print("   muxshim's log:")
        for line in shim.stderr_text().strip().splitlines():
            print("     | " + line)

    say("the Windows/macOS shape: one tunnel to muxshim-host, usbmuxd over TCP")
    tcp_port = harness.free_tcp_port()
    harness.Proc(["socat", "TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork" % tcp_port,
                  "UNIX-CONNECT:" + mux.socket], name="usbmuxd-tcp",
                 ready_fn=lambda: harness.tcp_listening(tcp_port)).start()
    print("   socat on 127.0.0.1:%d stands in for Apple's usbmuxd TCP listener" % tcp_port)
    hport = harness.free_tcp_port()
    d = harness.tempdir("demo")
    token = os.path.join(d, "token")
    harness.write_token(token)
    helper = harness.Proc([os.path.join(harness.BUILD, "muxshim-host"), "--listen",
                           "127.0.0.1:%d" % hport, "--upstream", "tcp:127.0.0.1:%d" % tcp_port,
                           "--token-file", token],
                          ready_fn=lambda: harness.tcp_listening(hport)).start()
    print("   a token on both sides: the tunnel is authenticated and encrypted")
    bpath = os.path.join(d, "broker.sock")
    bshim = harness.Shim(bpath, "tunnel:127.0.0.1:%d" % hport, "--broker", "--token-file", token,
                         log_level="info").start()
    show("idevice_id -l through the tunnel (the broker, muxshim's default)",
         *harness.run_client(["idevice_id", "-l"], bpath))
    r = harness.muxconn("--list-loop", 2000, socket=bpath)
    print("   2,000 ListDevices sessions: %.0f sessions/s, answered by the broker from its one"
          " subscription" % r["sessions_per_s"])
    bshim.stop()
    closed = [l for l in helper.stderr_text().splitlines() if "tunnel #1: closed" in l]
    print("   the helper, when that tunnel closed: %s"
          % (closed[-1].split("; ", 1)[-1] if closed else "(no line: see its log)"))
    path = os.path.join(d, "usbmuxd")
    tshim = harness.Shim(path, "tunnel:127.0.0.1:%d" % hport, "--passthrough", "--token-file",
                         token, log_level="info").start()
    r = harness.muxconn("--list-loop", 2000, socket=path)
    print("   the same 2,000 sessions with --passthrough (each one a tunnel stream and a usbmuxd"
          " connection): %.0f sessions/s" % r["sessions_per_s"])
    print("   TIME_WAIT sockets toward usbmuxd's TCP port afterwards: %d" % time_wait(tcp_port))
    print("   TIME_WAIT sockets on the tunnel port: %d" % time_wait(hport))
    say("who used usbmuxd through that shim: muxshim stats")
    p = subprocess.run([os.path.join(harness.BUILD, "muxshim"), "stats", "--listen", path],
                       capture_output=True, text=True, timeout=10)
    for line in p.stdout.rstrip().splitlines():
        print("     | " + line)
    tshim.stop()
    helper.stop()
    for name, p in (("muxshim (tunnel)", tshim), ("muxshim-host", helper)):
        print("   %s log:" % name)
        for line in p.stderr_text().strip().splitlines()[-4:]:
            print("     | " + line)
    mux.stop()
    say("done; everything started here has been stopped")


if __name__ == "__main__":
    try:
        main()
    finally:
        harness.cleanup_all()
