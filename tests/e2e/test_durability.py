"""Durability: an acknowledged job survives whatever happens to the daemon.

The work is done by tests/crash/crash.py (a standalone harness, also run by
hand for the long tier); these tests run its quick tier:

- SIGKILL under load, restart, many times: no acknowledged job lost;
- the same with a simulated power cut (PIPELINED_TEST_VFS=powerloss) and
  synchronous=FULL: nothing lost; and with synchronous=NORMAL: something
  lost (the proof that the test can see a loss);
- every deterministic crash point (PIPELINED_CRASH_AT): exit 99, then a
  restart finishes every acknowledged job;
- journal write and sync failures (PIPELINED_TEST_VFS=fail-write/fail-sync):
  exit 1, and every acknowledged job is done after a restart;
- damaged journals: refused (exit 1, a message naming the journal), never
  touched.

Sizes: PIPELINED_CRASH_KILLS sets the number of kills of the SIGKILL test
(default 50; fewer in sanitizer builds, which this file tells from the
binary), PIPELINED_CRASH_SCALE multiplies every kill count (e.g. 0.2),
PIPELINED_CRASH_SEED fixes the seed (default: random, printed on failure).
"""

import os
import random
import sys

from harness import PIPELINED, ROOT, E2ETestCase

sys.path.insert(0, os.path.join(ROOT, "tests", "crash"))
import crash  # noqa: E402

SANITIZER = crash.sanitizer_of(PIPELINED)


def scaled(normal, asan, tsan):
    n = {None: normal, "asan": asan, "tsan": tsan}[SANITIZER]
    return max(1, int(round(n * float(os.environ.get("PIPELINED_CRASH_SCALE", "1")))))


def seed():
    s = os.environ.get("PIPELINED_CRASH_SEED")
    return int(s) if s else random.SystemRandom().randrange(1 << 30)


def explain(r):
    """A failure message: the summary line, the details, how to rerun."""
    lines = [crash.summary_line(r)]
    for p in r.get("problems", []):
        lines.append("PROBLEM: %s" % p)
    for key in ("lost_detail", "unfinished_detail", "skipped_detail", "duplicate_jobs_detail",
                "idempotency_errors"):
        for x in r.get(key, [])[:10]:
            lines.append("%s: %s" % (key, x))
    lines.append("rerun: python3 tests/crash/crash.py --pipelined %s --kills %d --seed %d "
                 "--mode %s%s" % (PIPELINED, r["kills"], r["seed"], r["mode"],
                                  " --sync normal" if r.get("sync") == "normal" else ""))
    return "\n".join(lines)


class Durability(E2ETestCase):

    def test_a_clean_run_leaves_a_journal(self):
        self.assertTrue(crash.has_journal(PIPELINED),
                        "no %s in the state directory after a clean run" % crash.JOURNAL_FILE)

    def kills(self, kills, mode="sigkill", sync=None):
        r = crash.run_kills(PIPELINED, kills, seed(), mode=mode, sync=sync)
        print("\n    %s (seed %d, %s)" % (crash.summary_line(r), r["seed"], mode), end=" ")
        return r

    def test_sigkill_under_load_loses_no_acknowledged_job(self):
        """SIGKILL (daemon and its programs) at random moments under load, restart on the
        same state directory: every acknowledged job ends done, each stage having run."""
        n = int(os.environ.get("PIPELINED_CRASH_KILLS") or 0) or scaled(50, 20, 10)
        r = self.kills(n)
        self.assertEqual(r["kills"], n, explain(r))
        self.assertTrue(r["ok"], explain(r))
        self.assertGreater(r["acked"], 0, explain(r))
        self.assertIs(r["keys_supported"], True, "Submit's key is not supported")

    def test_power_loss_with_full_sync_loses_nothing(self):
        """The same with every unsynced journal write dropped at each kill."""
        r = self.kills(scaled(20, 8, 5), mode="powerloss")
        self.assertTrue(r["ok"], explain(r))

    def test_power_loss_with_normal_sync_loses_jobs(self):
        """synchronous=NORMAL must lose acknowledged jobs on a power cut: if it did not,
        the power-loss test above could not see a loss either."""
        rs = crash.prove_normal_loses(PIPELINED, scaled(10, 5, 4), tries=5, seed=seed())
        lines = [crash.summary_line(r) + " (seed %d)" % r["seed"] for r in rs]
        print("\n    " + "\n    ".join(lines), end=" ")
        self.assertGreater(rs[-1]["lost"], 0,
                           "synchronous=NORMAL never lost an acknowledged job under power loss:\n"
                           + "\n".join(lines))

    def test_crash_points(self):
        """Exit 99 at each crash point, then a restart without it finishes every acknowledged
        job. A stage that finished before its transition was journaled runs again."""
        k = {None: (6, 5, 4)}.get(SANITIZER, (3, 3, 2))
        points = [(name, min(n, kk)) for (name, n), kk in zip(crash.CRASH_POINTS, k)]
        rs = crash.crashpoints(PIPELINED, points)
        lines = [crash.crashpoint_line(r) for r in rs]
        report = "\n".join(lines)
        print("\n    " + "\n    ".join(lines), end=" ")
        for r in rs:
            with self.subTest(point=r["point"]):
                self.assertEqual(r["problems"], [], report)
        for name, _ in points:
            reached = [r for r in rs if r["point"].startswith(name + ":") and r.get("reached")]
            self.assertTrue(reached, "crash point %s never reached:\n%s" % (name, report))

    def test_journal_write_and_sync_failures(self):
        """A failing journal write or sync: exit 1 saying so, no success reply after an
        error, and every job acknowledged before is done after a restart."""
        cases = crash.FAULTS if SANITIZER is None else crash.FAULTS[::2]
        rs = crash.faults(PIPELINED, cases)
        report = "\n".join(crash.fault_line(r) for r in rs)
        for r in rs:
            with self.subTest(fault=r["fault"]):
                self.assertEqual(r["problems"], [], report)

    def test_damaged_journal_is_refused_and_left_alone(self):
        """Truncated, overwritten, garbage, or of a newer schema: exit 1 (not a signal), a
        message naming the journal, journal.db byte-identical."""
        r = crash.corrupt(PIPELINED)
        self.assertTrue(r["journal"])
        self.assertEqual(r["problems"], [])
        self.assertEqual([c["damage"] for c in r["cases"]], [d for d, _ in crash.DAMAGES])
        for c in r["cases"]:
            with self.subTest(damage=c["damage"]):
                self.assertEqual(c["problems"], [], c)
