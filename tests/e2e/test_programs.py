"""Program stages (Exec=): what a program gets and gives back, every way a
child can misbehave, scratch directories, retries, failed jobs and requeue.

The programs are small shell and Python scripts written to a temporary
directory by each test class. No test waits for a fixed time: timeouts are
configured short (300 ms) and the tests wait for the job's end state."""

import json
import os
import shutil
import sys
import tempfile

from harness import IFACE, E2ETestCase, stage, wait_until

SCRIPTS = {
    # Prints its arguments as a JSON object: the next payload.
    "argv.py": "import json, sys\nprint(json.dumps({'argv': sys.argv[1:]}))\n",
    # Echoes what it got: stdin, environment and working directory.
    "env.sh": """p=$(cat)
printf '{"input":%s,"id":"%s","pipeline":"%s","stage":"%s","attempt":"%s","workdir":"%s","pwd":"%s"}\\n' \\
  "$p" "$PIPELINED_JOB_ID" "$PIPELINED_PIPELINE" "$PIPELINED_STAGE" "$PIPELINED_ATTEMPT" \\
  "$PIPELINED_WORKDIR" "$(pwd)"
""",
    # Fails with 75 (EX_TEMPFAIL) on its first two attempts.
    "flaky.sh": """[ "$PIPELINED_ATTEMPT" -ge 3 ] && exit 0
echo "attempt $PIPELINED_ATTEMPT failed" >&2
exit 75
""",
    "stubborn.sh": "trap '' TERM\nwhile :; do sleep 0.1; done\n",
    "grandchild.sh": "sleep 1000 &\necho $! > \"$1\"\nexit 0\n",
    "noisy.sh": """i=0
while [ $i -lt 10000 ]; do echo "line $i" >&2; i=$((i+1)); done
echo "the last words" >&2
exit 1
""",
    "make.sh": "echo made > made.txt\n",
    "check.sh": "test -f made.txt || exit 4\n[ -e \"$1\" ] || { echo \"flag $1 missing\" >&2; exit 1; }\n",
    "flag.sh": "[ -e \"$1\" ] || { echo \"flag $1 missing\" >&2; exit 1; }\n",
    "log.sh": "echo \"$PIPELINED_STAGE\" >> \"$1\"\n",
    # Prints a JSON object of exactly argv[1] bytes (compact), pretty-printed.
    "big.py": "import sys\nn = int(sys.argv[1])\nprint('{ \"b\" : \"' + 'x' * (n - 8) + '\" }')\n",
}


def write_scripts(test):
    d = tempfile.mkdtemp(prefix="pipelined-prog-")
    test.addCleanup(shutil.rmtree, d, True)
    for name, text in SCRIPTS.items():
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    return d


def pid_alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Programs(E2ETestCase):

    def setUp(self):
        self.dir = d = write_scripts(self)
        sh = "/bin/sh " + d + "/"
        fast = {"Timeout": "300ms", "TimeoutGrace": "300ms"}
        self.daemon = self.start_daemon({
            "env": [stage("first", Exec=sh + "env.sh"), stage("second", Exec=sh + "env.sh")],
            "argv": [stage("a", Exec="%s %s/argv.py {a} {b}" % (sys.executable, d))],
            "safe": [stage("a", Exec="%s %s/argv.py -- {a}" % (sys.executable, d))],
            "hang": [stage("a", Exec="/bin/sleep 1000", **fast)],
            # 2 s for the shell to set its trap before the SIGTERM comes
            # (300 ms was short on a loaded machine: it died of SIGTERM).
            "stubborn": [stage("a", Exec=sh + "stubborn.sh", Timeout="2s",
                               TimeoutGrace="300ms")],
            "flood": [stage("a", Exec="/usr/bin/head -c 100000000 /dev/zero")],
            "grandchild": [stage("a", Exec=sh + "grandchild.sh {pidfile}")],
            "early": [stage("a", Exec="/bin/sh -c 'exit 0'"), stage("b", Exec="/bin/sh -c 'exit 3'")],
            "signal": [stage("a", Exec="/bin/sh -c 'kill -9 $$'")],
            "noisy": [stage("a", Exec=sh + "noisy.sh", StderrTail="200")],
            "required": [stage("a", Exec="/bin/echo not json", Stdout="json-required")],
            "atlimit": [stage("a", Exec="%s %s/big.py 65536" % (sys.executable, d),
                              Stdout="json-required")],
            "pastlimit": [stage("a", Exec="%s %s/big.py 65537" % (sys.executable, d))],
            "pastlimitreq": [stage("a", Exec="%s %s/big.py 65537" % (sys.executable, d),
                                   Stdout="json-required")],
            "scratch": [stage("make", Exec=sh + "make.sh"), stage("check", Exec=sh + "check.sh {flag}")],
            "flaky": [stage("a", Exec=sh + "flaky.sh", MaxAttempts="3", RetryDelay="10ms",
                            RetryExitCodes="75")],
            "notretried": [stage("a", Exec="/bin/sh -c 'exit 1'", MaxAttempts="3",
                                 RetryDelay="10ms", RetryExitCodes="75 timeout")],
            "slowretry": [stage("a", Exec=sh + "flaky.sh", workers=1, MaxAttempts="3",
                                RetryDelay="1h", RetryMaxDelay="2h")],
            "requeue": [stage("a", Exec=sh + "log.sh {log}"),
                        stage("b", Exec=sh + "flag.sh {flag}"),
                        stage("c", Exec=sh + "log.sh {log}")],
        })
        self.c = self.connect(self.daemon)

    def run_job(self, pipeline, payload=None):
        job_id = self.submit(self.c, pipeline, payload or {})
        self.wait_job(self.c, job_id)
        return self.get_job(self.c, job_id)

    # -- what a program gets and gives back

    def test_payload_environment_and_working_directory(self):
        """The payload comes on stdin, a JSON object on stdout is the next payload, the
        PIPELINED_* variables are set, and the cwd is the job's scratch directory."""
        job = self.run_job("env", {"k": "v"})
        self.assertEqual(job["state"], "done", job)
        out = job["payload"]
        self.assertEqual(out["stage"], "second")
        first = out["input"]
        self.assertEqual(first["input"], {"k": "v"})
        self.assertEqual((first["id"], first["pipeline"], first["stage"], first["attempt"]),
                         (str(job["id"]), "env", "first", "1"))
        workdir = os.path.join(self.daemon.state_dir, "jobs", str(job["id"]))
        self.assertEqual(first["workdir"], workdir)
        self.assertEqual(out["workdir"], workdir, "stages share one scratch directory")
        self.assertEqual(os.path.realpath(first["pwd"]), os.path.realpath(workdir))
        self.assertEqual(job["exit_status"], 0)

    def test_a_field_is_always_exactly_one_argument(self):
        """Blanks, quotes, $(...) and ; in a value reach the program verbatim, as one argument."""
        a, b = "x y; rm -rf / \"q\" 'q'", "$(id) `id` * ~"
        job = self.run_job("argv", {"a": a, "b": b})
        self.assertEqual(job["payload"], {"argv": [a, b]})
        job = self.run_job("argv", {"a": 42, "b": True})
        self.assertEqual(job["payload"], {"argv": ["42", "true"]})

    def test_a_field_cannot_become_an_option(self):
        """A value starting with '-' where an option could go fails the job at once (never
        retried); after a literal -- it is accepted."""
        for evil in ("--version", "-rf", "-"):
            job = self.run_job("argv", {"a": evil, "b": "x"})
            self.assertEqual(job["state"], "failed", job)
            self.assertIn("payload field 'a' starts with '-'", job["error"])
            self.assertNotIn("exit_status", job, "no program ran")
            self.assertNotIn("workdir", job, "nor was a scratch directory made for it")
            self.assertFalse(os.path.exists(
                os.path.join(self.daemon.state_dir, "jobs", str(job["id"]))))
        job = self.run_job("safe", {"a": "--version"})
        self.assertEqual(job["payload"], {"argv": ["--", "--version"]})

    def test_missing_and_unusable_fields(self):
        for payload, why in (({"a": "x"}, "payload has no field 'b'"),
                             ({"a": {"o": 1}, "b": "x"}, "payload field 'a' is an object"),
                             ({"a": None, "b": "x"}, "payload field 'a' is null")):
            job = self.run_job("argv", payload)
            self.assertEqual(job["state"], "failed", job)
            self.assertIn(why, job["error"])

    # -- misbehaving children

    def test_a_child_that_hangs_is_killed_at_the_timeout(self):
        job = self.run_job("hang")
        self.assertEqual(job["state"], "failed")
        self.assertTrue(job["timed_out"])
        self.assertEqual(job["signal"], 15)
        self.assertIn("timed out after 300ms", job["error"])

    def test_a_child_that_ignores_sigterm_gets_sigkill(self):
        job = self.run_job("stubborn")
        self.assertEqual(job["state"], "failed")
        self.assertTrue(job["timed_out"])
        self.assertEqual(job["signal"], 9)
        self.assertIn("SIGKILL", job["error"])

    def test_a_child_writing_100_mb_to_stdout(self):
        """The output past the capture limit is read and dropped: the child never blocks,
        and text that is not a JSON object leaves the payload unchanged."""
        job = self.run_job("flood", {"keep": 1})
        self.assertEqual(job["state"], "done", job)
        self.assertEqual(job["payload"], {"keep": 1})

    def test_a_grandchild_holding_the_pipe_does_not_hold_the_job(self):
        pidfile = os.path.join(self.dir, "grandchild.pid")
        job = self.run_job("grandchild", {"pidfile": pidfile})
        self.assertEqual(job["state"], "done", job)
        with open(pidfile) as f:
            pid = int(f.read())
        wait_until(lambda: not pid_alive(pid), "the grandchild to be killed with its group")

    def test_a_child_that_exits_before_reading_stdin(self):
        big = {"blob": "x" * 60000}
        job = self.run_job("early", big)
        self.assertEqual((job["state"], job["stage"], job["exit_status"]), ("failed", "b", 3))
        self.assertEqual(job["error"], "exited with status 3")

    def test_a_child_killed_by_a_signal(self):
        job = self.run_job("signal")
        self.assertEqual(job["state"], "failed")
        self.assertEqual(job["signal"], 9)
        self.assertFalse(job["timed_out"])
        self.assertNotIn("exit_status", job)
        self.assertEqual(job["error"], "killed by signal 9 (SIGKILL)")

    def test_stderr_tail_is_bounded_and_quoted_in_the_error(self):
        job = self.run_job("noisy")
        self.assertEqual(job["state"], "failed")
        self.assertLessEqual(len(job["stderr"].encode()), 200)
        self.assertTrue(job["stderr"].endswith("line 9999\nthe last words\n"), job["stderr"])
        self.assertEqual(job["error"], "exited with status 1: the last words")
        listed = self.ok(self.c, IFACE + ".ListJobs", {"pipeline": "noisy"})["jobs"]
        self.assertNotIn("stderr", listed[0], "listings leave the stderr tail out")

    def test_stdout_json_required(self):
        job = self.run_job("required")
        self.assertEqual(job["state"], "failed")
        self.assertIn("stdout is not a JSON object", job["error"])

    def test_stdout_payload_at_and_past_the_payload_limit(self):
        """A printed object of 64 KiB (compacted) becomes the payload; one byte more
        leaves the payload unchanged, or fails with Stdout=json-required."""
        job = self.run_job("atlimit", {"in": 1})
        self.assertEqual(job["state"], "done", job)
        self.assertEqual(len(json.dumps(job["payload"], separators=(",", ":"))), 65536)
        job = self.run_job("pastlimit", {"in": 1})
        self.assertEqual((job["state"], job["payload"]), ("done", {"in": 1}))
        job = self.run_job("pastlimitreq", {"in": 1})
        self.assertEqual(job["state"], "failed")
        self.assertIn("over the 65536-byte payload limit", job["error"])

    # -- scratch directories

    def test_scratch_directory_removed_when_done_kept_when_failed(self):
        flag = os.path.join(self.dir, "flag")
        open(flag, "w").close()
        done = self.run_job("scratch", {"flag": flag})
        self.assertEqual(done["state"], "done", done)
        self.assertNotIn("workdir", done)
        workdir = os.path.join(self.daemon.state_dir, "jobs", str(done["id"]))
        self.assertFalse(os.path.exists(workdir), "removed when the job succeeded")

        os.unlink(flag)
        failed = self.run_job("scratch", {"flag": flag})
        self.assertEqual(failed["state"], "failed")
        self.assertEqual(failed["workdir"],
                         os.path.join(self.daemon.state_dir, "jobs", str(failed["id"])))
        with open(os.path.join(failed["workdir"], "made.txt")) as f:
            self.assertEqual(f.read(), "made\n", "kept, with what the first stage left")
        r = self.ctl(self.daemon, "get", str(failed["id"]))
        self.assertEqual(r.returncode, 0, r)
        self.assertIn(failed["workdir"], r.stdout)

    # -- retries

    def test_retries_are_counted(self):
        job = self.run_job("flaky")
        self.assertEqual(job["state"], "done", job)
        self.assertEqual((job["runs"], job["attempt"]), (3, 3))
        st = self.stage_stats(self.c, "flaky", "a")
        self.assertEqual((st["retries"], st["succeeded"], st["failed"]), (2, 1, 0))

    def test_only_the_listed_exit_codes_are_retried(self):
        job = self.run_job("notretried")
        self.assertEqual((job["state"], job["runs"]), ("failed", 1))
        self.assertEqual(self.stage_stats(self.c, "notretried", "a")["retries"], 0)

    def test_a_job_waiting_for_its_retry_holds_no_worker(self):
        """With one worker and an hour between attempts, the job waits as "retrying"
        while the worker runs other jobs; it can be cancelled meanwhile."""
        waiting = self.submit(self.c, "slowretry", {})
        # Stats counts it once it is in the queue's delayed heap, a moment
        # after GetJob shows it "retrying": wait for that, then look.
        wait_until(lambda: self.stage_stats(self.c, "slowretry", "a")["retrying"] == 1,
                   "the job to wait for its retry")
        job = self.get_job(self.c, waiting)
        self.assertEqual(job["state"], "retrying")
        self.assertEqual(job["attempt"], 2)
        self.assertGreater(job["retry_at_usec"], job["submitted_usec"] + 1800 * 10**6)
        st = self.stage_stats(self.c, "slowretry", "a")
        self.assertEqual((st["retrying"], st["busy"]), (1, 0))
        # The same stage's only worker takes the next job meanwhile (it fails
        # at its first attempt too, and waits in turn).
        other = self.submit(self.c, "slowretry", {})
        wait_until(lambda: self.stage_stats(self.c, "slowretry", "a")["retrying"] == 2,
                   "the second job to be run and wait too")
        for job_id in (waiting, other):
            job = self.ok(self.c, IFACE + ".CancelJob", {"id": job_id})["job"]
            self.assertEqual(job["state"], "cancelled")
        for job_id in (waiting, other):
            self.assertEqual(self.wait_job(self.c, job_id)["state"], "cancelled")

    # -- failed jobs and requeue

    def test_requeue_resumes_at_the_failed_stage(self):
        log, flag = os.path.join(self.dir, "requeue.log"), os.path.join(self.dir, "rflag")
        job = self.run_job("requeue", {"log": log, "flag": flag})
        self.assertEqual((job["state"], job["stage"]), ("failed", "b"))
        self.assertIn("flag %s missing" % flag, job["error"])

        failed = self.ok(self.c, IFACE + ".ListJobs", {"state": "failed"})["jobs"]
        self.assertIn(job["id"], [j["id"] for j in failed])
        r = self.ctl(self.daemon, "list", "--failed")
        self.assertEqual(r.returncode, 0, r)
        self.assertIn(str(job["id"]), r.stdout)

        open(flag, "w").close()
        r = self.ctl(self.daemon, "requeue", str(job["id"]))
        self.assertEqual(r.returncode, 0, r)
        done = self.wait_job(self.c, job["id"])
        self.assertEqual(done["state"], "done", done)
        self.assertNotIn("error", done)
        with open(log) as f:
            self.assertEqual(f.read(), "a\nc\n", "stage a ran once: the job resumed at b")
        self.assertEqual(done["runs"], 4)

    def test_requeue_refuses_a_job_that_did_not_fail(self):
        job = self.run_job("env", {})
        reply = self.c.call(IFACE + ".RequeueJob", {"id": job["id"]})
        self.assertError(reply, IFACE + ".JobNotRequeueable", {"id": job["id"], "state": "done"})
        self.assertError(self.c.call(IFACE + ".RequeueJob", {"id": 999999}), IFACE + ".NoSuchJob")
        r = self.ctl(self.daemon, "requeue", str(job["id"]))
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("only failed jobs can be requeued", r.stderr)


class FdsAndZombies(E2ETestCase):
    """After many program runs (and failures) the daemon holds no more fds than
    before and has no zombie children."""

    def test_no_leaked_fds_or_zombies(self):
        d = self.start_daemon({"p": [stage("a", Exec="/bin/sh -c 'exit $((PIPELINED_JOB_ID % 2))'",
                                           workers=4)]})
        c = self.connect(d)
        fd_dir = "/proc/%d/fd" % d.proc.pid
        self.submit(c, "p", {})  # warm up: threads, pipes once
        wait_until(lambda: self.stats(c, "p")["in_flight"] == 0, "the warm-up job")
        before = len(os.listdir(fd_dir))
        ids = self.submit_batch(c, "p", [{}] * 400)
        self.wait_job(c, ids[-1])
        wait_until(lambda: self.stats(c, "p")["in_flight"] == 0, "every job to end")
        self.assertEqual(len(os.listdir(fd_dir)), before)
        children = [p for p in os.listdir("/proc") if p.isdigit() and self._ppid(p) == d.proc.pid]
        self.assertEqual(children, [], "no child (zombie or not) is left")

    def test_many_concurrent_runs_without_pipes(self):
        """Stdout=ignore and StderrTail=0 give the child /dev/null: 1,000 runs on 4
        workers all succeed (a descriptor closed twice would fail other runs with EBADF)."""
        d = self.start_daemon({"p": [stage("a", Exec="/bin/true", workers=4, Stdout="ignore",
                                           StderrTail="0")]})
        c = self.connect(d)
        ids = []
        for _ in range(4):
            ids += self.submit_batch(c, "p", [{}] * 250)
        wait_until(lambda: self.stats(c, "p")["in_flight"] == 0, "every job to end")
        st = self.stats(c, "p")
        failed = [j for j in self.list_all(c, state="failed")]
        self.assertEqual((st["done"], st["failed"]), (1000, 0), failed[:3])

    @staticmethod
    def _ppid(pid):
        try:
            with open("/proc/%s/stat" % pid) as f:
                return int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return None


UPPERCASE = os.environ.get("PIPELINED_PLUGIN_UPPERCASE")
INITFAIL = os.environ.get("PIPELINED_PLUGIN_INITFAIL")
SCRATCH = os.environ.get("PIPELINED_PLUGIN_SCRATCH")


class Plugins(E2ETestCase):
    """Plugin= stages: the example plugin, loaded by the real daemon."""

    def setUp(self):
        if not UPPERCASE or not INITFAIL or not SCRATCH:
            self.skipTest("plugin paths not given (run through meson test)")
        self.daemon = self.start_daemon({
            "up": [stage("upper", Plugin=UPPERCASE, PluginArg="title", workers=2,
                         MaxAttempts="3", RetryDelay="10ms"),
                   stage("shell", Exec="/bin/sh -c 'cat'")],
            "broken": [stage("a", Plugin=INITFAIL, workers=2)],
            "scratch": [stage("a", Plugin=SCRATCH),
                        stage("b", Exec="/bin/sh -c 'test -f note'")],
        })
        self.c = self.connect(self.daemon)

    def test_plugin_rewrites_the_payload_and_hands_it_on(self):
        ids = self.submit_batch(self.c, "up", [{"title": "job %d" % i, "n": i} for i in range(50)])
        for i, job_id in enumerate(ids):
            job = self.wait_job(self.c, job_id)
            self.assertEqual(job["state"], "done", job)
            self.assertEqual(job["payload"], {"title": "JOB %d" % i, "n": i})
        st = self.stage_stats(self.c, "up", "upper")
        self.assertEqual(st["action"], "plugin:" + UPPERCASE)
        self.assertEqual(st["succeeded"], 50)

    def test_plugin_permanent_failure_is_not_retried(self):
        job = self.wait_job(self.c, self.submit(self.c, "up", {"other": 1}))
        self.assertEqual((job["state"], job["stage"], job["runs"]), ("failed", "upper", 1))
        self.assertIn("title", job["error"])

    def test_a_worker_whose_init_failed_fails_its_jobs_with_the_reason(self):
        job = self.wait_job(self.c, self.submit(self.c, "broken", {}))
        self.assertEqual(job["state"], "failed")
        self.assertIn("pipelined_worker_init", job["error"])

    def test_a_plugin_shares_the_scratch_directory_and_it_is_kept_or_removed(self):
        done = self.wait_job(self.c, self.submit(self.c, "scratch", {}))
        self.assertEqual(done["state"], "done", "the program stage saw the plugin's file")
        self.assertFalse(os.path.exists(os.path.join(self.daemon.state_dir, "jobs",
                                                     str(done["id"]))))
        failed = self.wait_job(self.c, self.submit(self.c, "scratch", {"fail": 1}))
        self.assertEqual(failed["state"], "failed")
        with open(os.path.join(failed["workdir"], "note")) as f:
            self.assertEqual(f.read(), "from the plugin\n")

    def test_a_plugin_that_does_not_load_is_a_configuration_error(self):
        d = self.start_daemon({"x": [stage("a", Plugin="/no/such/plugin.so")]}, start=False)
        d.spawn()
        self.assertEqual(d.wait_exit(), 78)
        d.expected_status = 78
        self.assertIn("Plugin: ", d.stderr())
        self.assertIn("/no/such/plugin.so", d.stderr())


class ShutdownWithRetries(E2ETestCase):

    def test_shutdown_does_not_wait_for_a_retry_due_much_later(self):
        """A job waiting an hour for its next attempt ends failed at shutdown, which then
        finishes at once (exit 0) instead of running into its deadline (exit 1)."""
        d = self.start_daemon({"p": [stage("a", Exec="/bin/sh -c 'exit 1'", MaxAttempts="5",
                                           RetryDelay="1h", RetryMaxDelay="1h")]},
                              ShutdownTimeoutSec=60)
        c = self.connect(d)
        job_id = self.submit(c, "p", {})
        wait_until(lambda: self.get_job(c, job_id)["state"] == "retrying", "the retry wait")
        watcher = self.connect(d)
        self.ok(watcher, IFACE + ".Shutdown", {})
        self.assertEqual(d.wait_exit(), 0, d.stderr())


class ScratchAcrossRestarts(E2ETestCase):

    def test_a_new_job_never_finds_an_old_runs_files(self):
        """With Durability=none ids start again at 1 after a restart: the
        scratch directories an earlier run kept are removed at start."""
        state = tempfile.mkdtemp(prefix="pipelined-state-")
        self.addCleanup(shutil.rmtree, state, True)
        text = ("[daemon]\nStateDirectory = %s\nDurability = none\n[pipeline p]\n[stage p/a]\n"
                "Exec = /bin/sh -c 'test ! -e old || exit 9; touch old; exit 1'\n" % state)
        for run in (1, 2):
            d = self.start_daemon(config_text=text)
            c = self.connect(d)
            job = self.wait_job(c, self.submit(c, "p", {}))
            self.assertEqual(job["id"], 1)
            self.assertEqual(job["exit_status"], 1, "run %d: %r" % (run, job))
            self.assertTrue(os.path.exists(os.path.join(state, "jobs", "1", "old")))
            d.stop()

    def test_with_the_journal_a_failed_jobs_directory_outlives_a_restart(self):
        """With the journal ids go on, a failed job (and its scratch directory)
        is still there after a restart, and directories of jobs the journal
        does not know are removed at start."""
        state = tempfile.mkdtemp(prefix="pipelined-state-")
        self.addCleanup(shutil.rmtree, state, True)
        text = ("[daemon]\nStateDirectory = %s\n[pipeline p]\n[stage p/a]\n"
                "Exec = /bin/sh -c 'test ! -e old || exit 9; touch old; exit 1'\n" % state)
        for run in (1, 2):
            stray = os.path.join(state, "jobs", "999")
            if run == 2:
                os.makedirs(stray)
            d = self.start_daemon(config_text=text)
            c = self.connect(d)
            job = self.wait_job(c, self.submit(c, "p", {}))
            self.assertEqual((job["id"], job["exit_status"]), (run, 1), job)
            self.assertTrue(os.path.exists(os.path.join(state, "jobs", "1", "old")))
            self.assertEqual(self.get_job(c, 1)["workdir"], os.path.join(state, "jobs", "1"))
            self.assertFalse(os.path.exists(stray))
            d.stop()


class FailedJobsAcrossReloadAndRetention(E2ETestCase):

    def config(self, state, stages):
        text = "[daemon]\nStateDirectory = %s\nRetainJobs = 1\n[pipeline p]\n" % state
        for name, exec_line in stages:
            text += "[stage p/%s]\nExec = %s\n" % (name, exec_line)
        return text

    def test_requeue_after_a_reload_goes_to_the_same_stage_of_the_new_pipeline(self):
        state = tempfile.mkdtemp(prefix="pipelined-state-")
        self.addCleanup(shutil.rmtree, state, True)
        flag = os.path.join(state, "flag")
        check = "/bin/sh -c 'test -e %s'" % flag
        d = self.start_daemon(config_text=self.config(state, [("a", "/bin/true"), ("b", check)]))
        c = self.connect(d)
        job = self.wait_job(c, self.submit(c, "p", {}))
        self.assertEqual((job["state"], job["stage"]), ("failed", "b"))
        # Replaced: a new first stage; "b" is still there, now third.
        d.write_config(config_text=self.config(
            state, [("new", "/bin/true"), ("a", "/bin/true"), ("b", check)]))
        self.assertEqual(self.ok(c, IFACE + ".Reload")["replaced"], ["p"])
        open(flag, "w").close()
        requeued = self.ok(c, IFACE + ".RequeueJob", {"id": job["id"]})["job"]
        self.assertEqual(requeued["stage"], "b")
        done = self.wait_job(c, job["id"])
        self.assertEqual((done["state"], done["stage"], done["runs"]), ("done", "b", 3))
        # A failed job whose stage a reload removed cannot go back.
        os.unlink(flag)
        other = self.wait_job(c, self.submit(c, "p", {}))
        self.assertEqual((other["state"], other["stage"]), ("failed", "b"))
        d.write_config(config_text=self.config(state, [("a", "/bin/true")]))
        self.ok(c, IFACE + ".Reload")
        self.assertError(c.call(IFACE + ".RequeueJob", {"id": other["id"]}),
                         IFACE + ".NoSuchStage", {"pipeline": "p", "stage": "b", "known": ["a"]})

    def test_a_failed_jobs_scratch_directory_goes_when_retention_forgets_it(self):
        state = tempfile.mkdtemp(prefix="pipelined-state-")
        self.addCleanup(shutil.rmtree, state, True)
        d = self.start_daemon(config_text=self.config(
            state, [("a", "/bin/sh -c 'touch f; exit $((PIPELINED_JOB_ID % 2))'")]))
        c = self.connect(d)
        failed = self.wait_job(c, self.submit(c, "p", {}))
        self.assertEqual(failed["state"], "failed")
        self.assertTrue(os.path.isdir(failed["workdir"]))
        self.assertEqual(self.wait_job(c, self.submit(c, "p", {}))["state"], "done")
        # RetainJobs = 1: the done job pushed the failed one out, and its
        # directory is removed (on the loop's thread pool).
        self.assertError(c.call(IFACE + ".GetJob", {"id": failed["id"]}), IFACE + ".NoSuchJob")
        wait_until(lambda: not os.path.exists(failed["workdir"]), "the directory to go")
