"""What a hostile local user or peer tries against the daemons (issue 17):
a symlink swapped in at the socket path while the shim starts, signals,
untrusted process names in output, and a TCP upstream that never answers."""
import os
import pwd
import stat
import subprocess
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tunnel_util import harness  # noqa: E402

NOBODY = pwd.getpwnam("nobody")


def run_until_listening(argv, log_path, timeout=20):
    """Starts a daemon with stderr to log_path; returns (proc, started) once it
    logged that it listens or exited. 20 s: generous for a start that takes
    milliseconds, also under valgrind-free ASan builds on a busy machine."""
    log = open(log_path, "wb")
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
    log.close()

    def done():
        with open(log_path, "rb") as f:
            text = f.read()
        return p.poll() is not None or b" listening on " in text
    harness.wait_for(done, timeout, interval=0.002, what="the daemon to listen or exit")
    return p


def stop(p):
    if p.poll() is None:
        p.terminate()
    p.wait(timeout=20)


@unittest.skipIf(os.geteuid() != 0, "needs root: --socket-owner")
class SocketPathRace(unittest.TestCase):
    """A neighbour with write access to the socket's directory (0777, no
    sticky bit) waits for the socket to appear and renames a symlink to a
    root-owned 0600 file over it. Before the fix, the shim's chmod and chown
    then followed the symlink (the victim became nobody's, mode 0666); now
    mode and owner are applied inside a private directory before the socket
    is linked into place, so the victim never changes, whatever the timing."""
    TRIES = 150

    def test_symlink_swap_never_redirects_chmod_or_chown(self):
        d = harness.tempdir("race")
        os.chmod(d, 0o777)  # writable by all, no sticky bit
        victim_dir = harness.tempdir("victim")
        victim = os.path.join(victim_dir, "secret")
        with open(victim, "w") as f:
            f.write("root only\n")
        os.chmod(victim, 0o600)
        before = os.stat(victim)
        path = os.path.join(d, "usbmuxd")
        link_tmp = os.path.join(d, "evil")
        swapped = 0
        for i in range(self.TRIES):
            stop_flag = threading.Event()
            hit = []

            def attacker():
                # Spin until the socket exists, then replace it at once.
                while not stop_flag.is_set():
                    try:
                        st = os.lstat(path)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISSOCK(st.st_mode):
                        try:
                            os.symlink(victim, link_tmp)
                        except FileExistsError:
                            pass
                        os.rename(link_tmp, path)
                        hit.append(True)
                        return
            t = threading.Thread(target=attacker)
            t.start()
            try:
                p = run_until_listening(
                    [harness.shim_binary(), "--listen", path, "--upstream", "unix:/nonexistent",
                     "--control", "none", "--socket-mode", "0666",
                     "--socket-owner", "nobody:nogroup"], os.path.join(d, "log.%d" % i))
            finally:
                stop_flag.set()
                t.join()
            stop(p)
            swapped += bool(hit)
            after = os.stat(victim)
            self.assertEqual((after.st_uid, after.st_gid, stat.S_IMODE(after.st_mode)),
                             (before.st_uid, before.st_gid, 0o600),
                             "try %d: the victim file was changed through the symlink" % i)
            for name in (path, link_tmp):
                try:
                    os.unlink(name)
                except FileNotFoundError:
                    pass
            # The private directories the shim made are gone again.
            self.assertEqual([n for n in os.listdir(d) if n.startswith(".muxshim-")], [])
        # The attack did run: the socket was replaced in most tries.
        self.assertGreater(swapped, self.TRIES // 2)

    def test_socket_has_owner_and_mode_when_it_appears(self):
        """The first moment the path exists, it is already nobody's, 0640:
        no client can connect while the old mode or owner applies."""
        d = harness.tempdir("race")
        path = os.path.join(d, "usbmuxd")
        seen = []
        stop_flag = threading.Event()

        def watcher():
            while not stop_flag.is_set():
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    continue
                seen.append((st.st_uid, stat.S_IMODE(st.st_mode)))
                return
        t = threading.Thread(target=watcher)
        t.start()
        try:
            p = run_until_listening(
                [harness.shim_binary(), "--listen", path, "--upstream", "unix:/nonexistent",
                 "--control", "none", "--socket-mode", "0640", "--socket-owner", "nobody"],
                os.path.join(d, "log"))
        finally:
            stop_flag.set()
            t.join()
        stop(p)
        self.assertEqual(seen, [(NOBODY.pw_uid, 0o640)])


if __name__ == "__main__":
    unittest.main()
