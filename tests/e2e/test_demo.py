"""scripts/demo end to end: the images pipeline of packaging/examples/images.conf
(curl, ImageMagick's convert, curl -T) on 12 jobs against the demo's own web
server, with the daemon and pipelinectl under test.

The demo itself checks every job (exit 0 only if each job for an existing
image is done and each for a missing one failed with a 404); this test checks
that, what it prints, the thumbnails it reports, and that it leaves no process
behind."""

import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import unittest

from harness import HANG_GUARD, PIPELINECTL, PIPELINED, ROOT, have_pipelinectl

DEMO = os.path.join(ROOT, "scripts", "demo")
# The programs packaging/examples/images.conf runs, by the paths it names.
TOOLS = ("/usr/bin/curl", "/usr/bin/convert")
JOBS = 12
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                     "WARNING: ThreadSanitizer", "runtime error:")


def missing_tools():
    return [t for t in TOOLS if not os.access(t, os.X_OK)]


def png_size(path):
    """(width, height) from a PNG's IHDR, or None if the file is not a whole
    PNG (signature, IHDR first, IEND last)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 45 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    if data[-12:-4] != b"\x00\x00\x00\x00IEND":
        return None
    return struct.unpack(">II", data[16:24])


def process_info(pid):
    """(state, process group, cmdline, cwd) of a live process, or None if
    there is none (or only a zombie)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    state, pgrp = fields[0], int(fields[2])
    if state == "Z":
        return None
    try:
        cwd = os.readlink("/proc/%d/cwd" % pid)
    except OSError:
        cwd = ""
    return state, pgrp, cmdline, cwd


def processes_of(pgrp, tmp):
    """Live processes in process group pgrp, or whose command line or working
    directory mention tmp: what the demo started (its daemon, server, the
    programs the daemon ran)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        info = process_info(int(name))
        if info is None:
            continue
        _, group, cmdline, cwd = info
        if group == pgrp or tmp in cmdline or cwd.startswith(tmp):
            found.append((int(name), cmdline))
    return found


@unittest.skipIf(missing_tools(), "scripts/demo needs curl and ImageMagick (missing: %s; "
                 "scripts/setup installs them)" % ", ".join(missing_tools()))
@unittest.skipUnless(have_pipelinectl(), "pipelinectl is not built")
class Demo(unittest.TestCase):
    maxDiff = 4000

    def run_demo(self, tmp, *args):
        env = dict(os.environ, DEMO_NO_SETUP="1", PIPELINED=PIPELINED, PIPELINECTL=PIPELINECTL,
                   TMPDIR=tmp)
        for key in ("DEMO_CLEANUP", "DEMO_JOBS", "DEMO_TIMEOUT", "PIPELINED_SOCKET"):
            env.pop(key, None)
        # Its own session: whatever it leaves behind can be found (and killed)
        # by process group.
        proc = subprocess.Popen([DEMO] + list(args), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, cwd=tmp, start_new_session=True)
        self.addCleanup(self.kill_leftovers, proc.pid, tmp)
        try:
            out, err = proc.communicate(timeout=HANG_GUARD)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            self.fail("scripts/demo did not end within %.0f s\n--- stdout ---\n%s\n"
                      "--- stderr ---\n%s" % (HANG_GUARD, out, err))
        return proc.pid, proc.returncode, out, err

    @staticmethod
    def kill_leftovers(pgrp, tmp):
        for pid, _ in processes_of(pgrp, tmp):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def test_demo_runs_the_images_pipeline(self):
        """scripts/demo 12: exit 0, the stats table, the 404 reasons, one PNG
        thumbnail of at most 256 px per done job, nothing left running."""
        tmp = tempfile.mkdtemp(prefix="pipelined-e2e-demo-")
        self.addCleanup(shutil.rmtree, tmp, True)
        pgrp, status, out, err = self.run_demo(tmp, str(JOBS))
        both = "--- stdout ---\n%s\n--- stderr ---\n%s" % (out, err)

        # Nothing it started is left: the daemon and server it names, and any
        # process of its session or working in its directory.
        pids = {name: int(pid) for name, pid in
                re.findall(r"demo: (pipelined|demo-server) .*\(pid (\d+)\)", out)}
        self.assertEqual(sorted(pids), ["demo-server", "pipelined"], both)
        for name, pid in pids.items():
            info = process_info(pid)
            if info and (name in info[2] or tmp in info[2]):
                self.fail("%s (pid %d) still runs after the demo\n%s" % (name, pid, both))
        self.assertEqual(processes_of(pgrp, tmp), [], "processes left behind\n" + both)

        # The daemon's log has no sanitizer report (the demo already fails if
        # the daemon exits non-zero).
        logs = [os.path.join(d, f) for d, _, files in os.walk(tmp) for f in files
                if f == "pipelined.log"]
        self.assertEqual(len(logs), 1, both)
        with open(logs[0], encoding="utf-8", errors="replace") as f:
            log = f.read()
        for marker in SANITIZER_MARKERS:
            self.assertNotIn(marker, log, "pipelined.log:\n" + log)

        self.assertEqual(status, 0, both)

        # The stats table, with every stage.
        self.assertIn("== pipelinectl stats images\n", out)
        table = out.split("== pipelinectl stats images\n", 1)[1].split("\n==", 1)[0]
        self.assertRegex(table, r"\nSTAGE +WORKERS", both)
        for st in ("download", "resize", "upload"):
            self.assertRegex(table, r"\n%s +\d+/\d+" % st, both)

        # The failures and their reasons: the missing images' 404s.
        self.assertIn("== why the failed jobs failed", out)
        reasons = out.split("== why the failed jobs failed", 1)[1].split("\n==", 1)[0]
        failed_lines = [l for l in reasons.splitlines() if l.strip().startswith("job ")]
        self.assertTrue(failed_lines, both)
        for line in failed_lines:
            self.assertIn("missing-", line, both)
            self.assertIn("404", line, both)

        # The totals add up.
        m = re.search(r"demo: (\d+) submitted, (\d+) done, (\d+) failed in ", out)
        self.assertIsNotNone(m, both)
        submitted, done, failed = (int(x) for x in m.groups())
        self.assertEqual(submitted, JOBS, both)
        self.assertEqual(done + failed, JOBS, both)
        self.assertEqual(failed, len(failed_lines), both)
        self.assertGreaterEqual(failed, 1, both)

        # One thumbnail per done job: a whole PNG, at most 256 px a side, for
        # an existing image only.
        m = re.search(r"thumbnails: (\d+) files in (\S+)", out)
        self.assertIsNotNone(m, both)
        results = m.group(2)
        self.assertTrue(results.startswith(tmp), both)
        thumbs = sorted(os.listdir(results))
        self.assertEqual(len(thumbs), done, thumbs)
        self.assertEqual(int(m.group(1)), done, both)
        for name in thumbs:
            with self.subTest(thumbnail=name):
                self.assertRegex(name, r"^(photo|flaky)-\d+\.png$")
                size = png_size(os.path.join(results, name))
                self.assertIsNotNone(size, "%s is not a whole PNG" % name)
                self.assertGreater(min(size), 0)
                self.assertLessEqual(max(size), 256, "%s is %dx%d" % ((name,) + size))


if __name__ == "__main__":
    unittest.main()
