"""The valgrind pass catches what it is there for (make integration-valgrind).

build/tests/leaky stands in for a daemon with a known leak or a known read
of uninitialised memory; the harness must fail the stop of each (with the
report), and pass a clean run. Runs only with MUXSHIM_VALGRIND=1."""
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import harness  # noqa: E402


class ValgrindCatches(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not harness.VALGRIND:
            msg = "SKIPPED: the valgrind self-test runs only with MUXSHIM_VALGRIND=1"
            print("\n  [%s]" % msg, flush=True)
            raise unittest.SkipTest(msg)

    def tearDown(self):
        harness.cleanup_all()

    def leaky(self, *args):
        return harness.Proc([harness.tool("leaky")] + list(args), name="leaky",
                            ready_line=r"^leaky ready$", valgrind=True).start()

    def test_clean_run_passes(self):
        p = self.leaky()
        self.assertEqual(p.stop(), 0)
        complete, problems = harness.valgrind_report(p.valgrind_log)
        self.assertTrue(complete)
        self.assertEqual(problems, [])

    def test_leak_fails_the_stop(self):
        p = self.leaky("--lose", 1000)
        with self.assertRaises(harness.ValgrindError) as cm:
            p.stop()
        self.assertIn("definitely lost: 1,000 bytes in 1 blocks", str(cm.exception))
        self.assertIn("leaky.c", str(cm.exception))   # the report, with the stack
        self.assertEqual(p.returncode, 99)             # --error-exitcode

    def test_uninitialised_read_fails_the_stop(self):
        p = self.leaky("--uninit")
        with self.assertRaises(harness.ValgrindError) as cm:
            p.stop()
        self.assertIn("ERROR SUMMARY: 1 errors", str(cm.exception))
        self.assertIn("uninitialised", str(cm.exception))

    def test_leak_fails_cleanup_all(self):
        """A daemon left for tearDown's cleanup_all() is judged there too."""
        self.leaky("--lose", 64)
        with self.assertRaises(harness.ValgrindError):
            harness.cleanup_all()


if __name__ == "__main__":
    unittest.main()
