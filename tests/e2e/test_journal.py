"""The journal (Durability=full, the default), end to end: recovery after a
crash at the stage each job had reached, finished jobs kept across restarts,
idempotent submits, retention by age and count, the free-space floor,
journal statistics, and Durability=none.

The crash, power-loss and fault-injection harness is tests/crash/crash.py
(run by test_durability.py); these tests pin the behaviours one at a time.
No test waits for a fixed time: they wait for states (wait_until)."""

import os
import shutil
import signal
import socket
import tempfile

from harness import IFACE, E2ETestCase, stage, wait_until

# Appends "STAGE JOBID" to the file named by $1: which stage ran which job.
LOG_SH = "echo \"$PIPELINED_STAGE $PIPELINED_JOB_ID\" >> \"$1\"\n"


def wait_committed(test, conn, changes):
    """Waits until the journal has committed at least `changes` changes:
    stage transitions may wait a moment (JOURNAL_LAZY_USEC) for company."""
    wait_until(lambda: test.ok(conn, IFACE + ".Stats")["journal"]["changes"] >= changes,
               "%d changes committed" % changes)


def restart(test, d, signum=signal.SIGKILL):
    """Ends d with signum, then starts it again on the same directory."""
    d.proc.send_signal(signum)
    status = d.proc.wait()
    if signum == signal.SIGTERM:
        test.assertEqual(status, 0, d.stderr())
    d.status = None
    d.start()


class Recovery(E2ETestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="pipelined-journal-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.log = os.path.join(self.tmp, "log")
        self.script = os.path.join(self.tmp, "log.sh")
        with open(self.script, "w") as f:
            f.write(LOG_SH)

    def three_stages(self):
        run = "/bin/sh %s %s" % (self.script, self.log)
        return {"p": [stage(n, Exec=run, Stdout="ignore") for n in ("a", "b", "c")]}

    def runs(self):
        with open(self.log) as f:
            return sorted(f.read().split("\n")[:-1])

    def test_a_crash_resumes_every_job_at_the_stage_it_had_reached(self):
        d = self.start_daemon(self.three_stages())
        c = self.connect(d)
        self.pause(c, "p", "c")
        ids = [self.submit(c, "p", {"n": i}) for i in range(5)]
        self.wait_stats(c, "p", lambda s: s["stages"][2]["queue_length"] == 5,
                        "five jobs queued at the paused stage c")
        wait_committed(self, c, 5 * 3)  # each: submitted, at b, at c
        restart(self, d)  # SIGKILL: no shutdown, no flush
        c = self.connect(d)
        for i in ids:
            job = self.wait_job(c, i)
            self.assertEqual((job["state"], job["stage"], job["runs"]), ("done", "c", 3), job)
        # Stages a and b ran once per job: nothing started over.
        self.assertEqual(self.runs(), sorted("%s %d" % (s, i) for s in "abc" for i in ids))
        # Ids go on after a restart.
        self.assertEqual(self.submit(c, "p"), ids[-1] + 1)
        self.assertIn("5 unfinished jobs resumed", d.stderr())

    def test_finished_jobs_stay_queryable_across_restarts(self):
        d = self.start_daemon({"p": [stage("a", Exec="/bin/sh -c 'echo oops >&2; exit 3'")],
                               "q": [stage("a", "noop")]})
        c = self.connect(d)
        failed = self.wait_job(c, self.submit(c, "p", {"x": 1}))
        done = self.wait_job(c, self.submit(c, "q", {"y": "é"}))
        for signum in (signal.SIGTERM, signal.SIGKILL):
            restart(self, d, signum)
            c = self.connect(d)
            self.assertEqual(self.get_job(c, failed["id"]), failed)
            self.assertEqual(self.get_job(c, done["id"]), done)
        self.assertEqual(failed["stderr"], "oops\n")
        self.assertTrue(os.path.isdir(failed["workdir"]), "a failed job's directory is kept")

    def test_a_job_waiting_for_a_retry_resumes_with_its_attempt_count(self):
        d = self.start_daemon({"p": [stage("a", Exec="/bin/false", MaxAttempts=5,
                                           RetryDelay="1h")]})
        c = self.connect(d)
        jid = self.submit(c, "p")
        # In the stage's delayed queue (Stats counts it there), not just
        # marked "retrying" by its worker: that is the case this pins.
        wait_until(lambda: self.stage_stats(c, "p", "a")["retrying"] == 1, "the first retry")
        restart(self, d, signal.SIGTERM)  # a shutdown does not wait for the retry
        c = self.connect(d)
        # Attempt 2 runs at once after the start; attempt 3 waits an hour.
        # (While attempt 2's failure is being handled the job may show
        # attempt 3 still "running": wait for the state too.)
        job = wait_until(lambda: (lambda j: j if (j["state"], j["attempt"]) == ("retrying", 3)
                                  else None)(self.get_job(c, jid)), "attempt 2 after the restart")
        self.assertEqual(job["runs"], 2, job)

    def test_a_run_that_fails_during_a_shutdown_resumes_at_the_next_start(self):
        """A retryable failure after the shutdown began: its retry is refused
        (the shutdown does not wait for it), and the job stays unfinished in
        the journal, as one already waiting for its retry does; it runs
        again after the restart. (It was journaled failed: lost.)"""
        gate, ok = os.path.join(self.tmp, "gate"), os.path.join(self.tmp, "ok")
        program = ("/bin/sh -c 'while [ ! -e %s ]; do sleep 0.01; done; [ -e %s ]'"
                   % (gate, ok))
        d = self.start_daemon({"p": [stage("a", Exec=program, MaxAttempts=5,
                                           RetryDelay="1ms")]})
        c = self.connect(d)
        jid = self.submit(c, "p")
        self.wait_stats(c, "p", lambda s: s["stages"][0]["busy"] == 1, "the run under way")
        # The Shutdown call's effects are done before the next call on the
        # connection is read: the ShuttingDown refusal says retries stopped.
        self.ok(c, IFACE + ".Shutdown")
        self.assertError(c.call(IFACE + ".Submit", {"pipeline": "p", "payload": {}}),
                         IFACE + ".ShuttingDown")
        with open(gate, "w"):
            pass  # the run fails (no "ok" file) after the retries stopped
        self.assertEqual(d.proc.wait(), 0, d.stderr())
        d.status = None
        with open(ok, "w"):
            pass
        d.start()
        job = self.wait_job(self.connect(d), jid)
        self.assertEqual((job["state"], job["runs"]), ("done", 2), job)

    def test_unfinished_jobs_of_a_removed_pipeline_stop_the_start(self):
        d = self.start_daemon({"p": [stage("a", "noop")], "other": [stage("a", "noop")]})
        c = self.connect(d)
        self.pause(c, "p", "a")
        jid = self.submit(c, "p")
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        d.write_config({"other": [stage("a", "noop")]})
        d.spawn()
        self.assertEqual(d.wait_exit(), 1)
        self.assertIn("the journal has 1 unfinished job (the first: %d) of pipeline 'p', "
                      "which the configuration no longer defines" % jid, d.stderr())
        d.status = None
        d.write_config({"p": [stage("a", "noop")], "other": [stage("a", "noop")]})
        d.start()
        self.assertEqual(self.wait_job(self.connect(d), jid)["state"], "done")

    def test_a_job_whose_stage_was_removed_fails_with_the_reason(self):
        d = self.start_daemon({"p": [stage("a", "noop"), stage("b", "noop")]})
        c = self.connect(d)
        self.pause(c, "p", "b")
        jid = self.submit(c, "p")
        self.wait_stats(c, "p", lambda s: s["stages"][1]["queue_length"] == 1, "job at b")
        wait_committed(self, c, 2)  # submitted, at b
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        d.status = None
        d.write_config({"p": [stage("a", "noop")]})
        d.start()
        job = self.get_job(self.connect(d), jid)
        self.assertEqual(job["state"], "failed")
        self.assertIn("its stage 'b' is no longer in pipeline 'p'", job["error"])


class Idempotency(E2ETestCase):

    def submit_key(self, conn, key, payload=None):
        return self.ok(conn, IFACE + ".Submit",
                       {"pipeline": "p", "payload": payload or {}, "key": key})

    def test_the_same_key_gives_the_same_job(self):
        d = self.start_daemon({"p": [stage("a", "noop")]})
        c = self.connect(d)
        first = self.submit_key(c, "order-17", {"n": 1})
        self.assertNotIn("existing", first)
        again = self.submit_key(c, "order-17", {"n": 2})
        self.assertEqual(again, {"id": first["id"], "existing": True})
        other = self.submit_key(c, "order-18")
        self.assertEqual(other["id"], first["id"] + 1)
        job = self.wait_job(c, first["id"])
        self.assertEqual((job["key"], job["payload"]), ("order-17", {"n": 1}))
        # Across a crash too: the key is in the journal.
        restart(self, d)
        c = self.connect(d)
        self.assertEqual(self.submit_key(c, "order-17"), {"id": first["id"], "existing": True})

    def test_a_key_is_free_again_once_retention_forgets_its_job(self):
        d = self.start_daemon({"p": [stage("a", "noop")]}, RetainJobs=0)
        c = self.connect(d)
        first = self.submit_key(c, "k")["id"]
        wait_until(lambda: c.call(IFACE + ".GetJob", {"id": first}).get("error"),
                   "the job forgotten")
        self.assertEqual(self.submit_key(c, "k"), {"id": first + 1})

    def test_key_limits(self):
        d = self.start_daemon({"p": [stage("a", "noop")]})
        c = self.connect(d)
        self.assertIn("id", self.submit_key(c, "k" * 256))
        self.assertError(c.call(IFACE + ".Submit", {"pipeline": "p", "payload": {},
                                                    "key": "k" * 257}),
                         IFACE + ".LimitExceeded", {"parameter": "key", "max": 256})
        for bad in ("", 17, []):
            self.assertError(c.call(IFACE + ".Submit", {"pipeline": "p", "payload": {},
                                                        "key": bad}),
                             "org.varlink.service.InvalidParameter", {"parameter": "key"},
                             msg="key %r" % (bad,))
        # A NUL never gets that far: the protocol refuses \u0000 in any string.
        self.assertError(c.call(IFACE + ".Submit", {"pipeline": "p", "payload": {},
                                                    "key": "a\u0000b"}),
                         IFACE + ".InvalidMessage")
        self.assertError(c.call(IFACE + ".SubmitBatch", {"pipeline": "p", "payloads": [{}],
                                                         "key": "k"}),
                         "org.varlink.service.InvalidParameter", {"parameter": "key"})

    def test_pipelinectl_submit_key(self):
        d = self.start_daemon({"p": [stage("a", "noop")]})
        r1 = self.ctl(d, "submit", "p", "{}", "--key", "abc")
        r2 = self.ctl(d, "submit", "p", "{}", "--key", "abc")
        self.assertEqual((r1.returncode, r2.returncode), (0, 0), (r1, r2))
        self.assertEqual(r1.stdout, r2.stdout)
        r = self.ctl(d, "get", r1.stdout.strip())
        self.assertRegex(r.stdout, r"\nkey: +abc\n")
        r = self.ctl(d, "submit", "p", "--stdin", "--key", "abc", input="{}\n")
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("--key", r.stderr)
        r = self.ctl(d, "submit", "p", "{}", "--key", "x" * 257)
        self.assertEqual(r.returncode, 2, r)


PENDING_REPLIES_MAX = 1024  # daemon/server.c: replies one connection may have waiting


class PipelinedSubmits(E2ETestCase):
    """Submits pipelined on one connection: each reply waits for its job's
    commit, but the calls after it are taken meanwhile, so their jobs share
    commits; replies keep the order of the calls. The journal's commits are
    held by the test: PIPELINED_TEST_VFS=sync-gate:PATH makes every sync
    wait while PATH does not exist (daemon/testvfs.h)."""

    def setUp(self):
        tmp = tempfile.mkdtemp(prefix="pipelined-gate-")
        self.addCleanup(shutil.rmtree, tmp, True)
        self.gate = os.path.join(tmp, "gate")
        self.open_gate()
        os.environ["PIPELINED_TEST_VFS"] = "sync-gate:" + self.gate
        try:
            # Paused: jobs wait at the stage, so nothing but the submits
            # is journaled.
            self.d = self.start_daemon({"p": [stage("a", "noop", capacity=4096)]})
        finally:
            del os.environ["PIPELINED_TEST_VFS"]
        self.addCleanup(self.open_gate)  # before the daemon is stopped
        self.watch = self.connect(self.d)
        self.pause(self.watch, "p", "a")

    def open_gate(self):
        with open(self.gate, "w"):
            pass

    def close_gate(self):
        os.unlink(self.gate)

    def journal(self):
        return self.ok(self.watch, IFACE + ".Stats")["journal"]

    def test_calls_after_a_waiting_reply_are_taken_and_answered_in_order(self):
        c = self.connect(self.d)
        self.close_gate()
        for n in range(10):
            c.send_call(IFACE + ".Submit", {"pipeline": "p", "payload": {"n": n}})
        c.send_call("org.varlink.service.GetInfo")
        # All ten accepted while the first one's commit cannot finish (one
        # at a time, only the first would be).
        self.wait_stats(self.watch, "p", lambda s: s["accepted"] == 10, "ten jobs accepted")
        commits = self.journal()["commits"]
        # Nothing is on disk, so no reply may have been sent: not even
        # GetInfo's, which comes after them.
        self.assertFalse(c.has_message(), "a reply before its job was committed")
        self.open_gate()
        ids = [self.assertReply(c.recv())["id"] for _ in range(10)]
        self.assertEqual(ids, list(range(ids[0], ids[0] + 10)))
        self.assertEqual(self.assertReply(c.recv())["product"], "pipelined")
        # The one that was waiting, then the nine behind it together.
        self.assertLessEqual(self.journal()["commits"] - commits, 2)

    def test_a_connection_with_too_many_waiting_replies_is_read_no_further(self):
        """Past PENDING_REPLIES_MAX waiting replies the daemon takes no more of
        the connection's calls until replies go out; then it goes on, and
        every call is answered, in order."""
        n = PENDING_REPLIES_MAX + 100
        c = self.connect(self.d)
        self.close_gate()
        c.send_raw(b"".join(c.encode_call(IFACE + ".Submit", {"pipeline": "p", "payload": {}})
                            for _ in range(n)))
        self.wait_stats(self.watch, "p", lambda s: s["accepted"] >= PENDING_REPLIES_MAX,
                        "the first %d jobs accepted" % PENDING_REPLIES_MAX)
        # Not one more while none of them can be answered.
        self.assertEqual(self.stats(self.watch, "p")["accepted"], PENDING_REPLIES_MAX)
        self.open_gate()
        ids = [self.assertReply(c.recv())["id"] for _ in range(n)]
        self.assertEqual(ids, list(range(ids[0], ids[0] + n)))
        self.assertEqual(self.stats(self.watch, "p")["accepted"], n)

    def test_a_peer_that_half_closes_gets_every_waiting_reply(self):
        """Submits, then shutdown(SHUT_WR) while their commit waits: the daemon
        answers them all once committed, then closes."""
        c = self.connect(self.d)
        self.close_gate()
        for _ in range(3):
            c.send_call(IFACE + ".Submit", {"pipeline": "p", "payload": {}})
        c.sock.shutdown(socket.SHUT_WR)
        self.wait_stats(self.watch, "p", lambda s: s["accepted"] == 3, "three jobs accepted")
        self.open_gate()
        messages = c.wait_eof()
        self.assertEqual(len(messages), 3, messages)
        self.assertTrue(all("id" in self.assertReply(m) for m in messages), messages)


    def test_a_watch_ended_by_the_peer_leaves_no_waiting_reply_behind(self):
        """Submit, Watch, shutdown(SHUT_WR) while the Submit's commit waits: the
        end of input ends the Watch, but the Submit's reply still comes (the
        job is accepted: its submitter must learn its id), then the close."""
        c = self.connect(self.d)
        self.close_gate()
        c.send_call(IFACE + ".Submit", {"pipeline": "p", "payload": {}})
        c.send_call(IFACE + ".Watch", {"pipeline": "p"}, more=True)
        c.sock.shutdown(socket.SHUT_WR)
        self.wait_stats(self.watch, "p", lambda s: s["accepted"] == 1, "the job accepted")
        self.open_gate()
        messages = c.wait_eof()
        self.assertTrue(messages, "no reply at all")
        self.assertIn("id", self.assertReply(messages[0]))


class Retention(E2ETestCase):

    def test_by_age_in_memory_and_in_the_journal(self):
        d = self.start_daemon({"p": [stage("a", "noop")]}, RetainAge="1s")
        c = self.connect(d)
        jid = self.submit(c, "p")
        self.assertEqual(self.wait_job(c, jid)["state"], "done")
        wait_until(lambda: c.call(IFACE + ".GetJob", {"id": jid}).get("error")
                   == IFACE + ".NoSuchJob", "the job forgotten after RetainAge")
        restart(self, d, signal.SIGTERM)
        c = self.connect(d)
        self.assertError(c.call(IFACE + ".GetJob", {"id": jid}), IFACE + ".NoSuchJob")

    def test_by_count_across_a_restart(self):
        d = self.start_daemon({"p": [stage("a", "noop")]}, RetainJobs=2)
        c = self.connect(d)
        ids = [self.wait_job(c, self.submit(c, "p"))["id"] for _ in range(4)]
        wait_committed(self, c, 4 + 4 + 2)  # submitted, ended; two forgotten
        restart(self, d)
        c = self.connect(d)
        self.assertEqual([j["id"] for j in self.list_all(c)], ids[2:])


class FreeSpaceFloor(E2ETestCase):

    def test_below_the_floor_submits_are_refused_and_accepted_jobs_go_on(self):
        d = self.start_daemon({"p": [stage("a", "noop")]})
        c = self.connect(d)
        self.pause(c, "p", "a")
        ids = self.submit_batch(c, "p", [{}, {}, {}])
        d.write_config({"p": [stage("a", "noop")]}, JournalMinFree="16384G")
        self.ok(c, IFACE + ".Reload")
        p = self.assertError(c.call(IFACE + ".Submit", {"pipeline": "p", "payload": {}}),
                             IFACE + ".NoSpace", {"min_free_bytes": 16384 << 30})
        self.assertLess(p["free_bytes"], 16384 << 30)
        self.assertTrue(self.ok(c, IFACE + ".Stats")["journal"]["space_low"])
        r = self.ctl(d, "stats")
        self.assertIn("below the free-space floor", r.stdout)
        # Jobs accepted before still run, and their ends are journaled.
        self.resume(c, "p", "a")
        for i in ids:
            self.assertEqual(self.wait_job(c, i)["state"], "done")
        wait_committed(self, c, 3 + 3)  # submitted, ended
        restart(self, d, signal.SIGKILL)
        c = self.connect(d)
        self.assertEqual([self.get_job(c, i)["state"] for i in ids], ["done"] * 3)
        # Lowering the floor lets submits in again.
        d.write_config({"p": [stage("a", "noop")]}, JournalMinFree=0)
        self.ok(c, IFACE + ".Reload")
        self.submit(c, "p")

    def test_a_floor_above_the_free_space_refuses_the_first_submit(self):
        d = self.start_daemon({"p": [stage("a", "noop")]}, JournalMinFree="16384G")
        c = self.connect(d)
        self.assertError(c.call(IFACE + ".Submit", {"pipeline": "p", "payload": {}}),
                         IFACE + ".NoSpace")
        self.get_job  # other calls still work
        self.assertEqual(self.ok(c, IFACE + ".Stats")["journal"]["durability"], "full")


class JournalStatsAndModes(E2ETestCase):

    def test_stats_show_the_journal(self):
        d = self.start_daemon({"p": [stage("a", "noop")]})
        c = self.connect(d)
        self.submit_batch(c, "p", [{}] * 10)
        self.submit(c, "p")
        j = self.ok(c, IFACE + ".Stats")["journal"]
        self.assertEqual((j["durability"], j["jobs"], j["failed"]), ("full", 11, False))
        self.assertGreater(j["commits"], 0)
        self.assertGreater(j["db_bytes"] + j["wal_bytes"], 0)
        self.assertGreater(j["commits_per_sec"], 0)
        r = self.ctl(d, "stats")
        self.assertEqual(r.returncode, 0, r)
        self.assertRegex(r.stdout, r"journal: [0-9.]+ [KMG]?i?B \(WAL [0-9.]+ [KMG]?i?B\), "
                                   r"[0-9.]+ commits/s, [0-9.]+ changes/commit, "
                                   r"[0-9.]+ jobs/commit, [0-9.]+ [KMGT]?i?B free")
        self.assertTrue(os.path.isfile(os.path.join(d.state_dir, "journal.db")))

    def test_durability_none_keeps_jobs_in_memory_only(self):
        d = self.start_daemon({"p": [stage("a", "noop")]}, Durability="none")
        c = self.connect(d)
        self.assertEqual(self.wait_job(c, self.submit(c, "p"))["id"], 1)
        self.assertEqual(self.ok(c, IFACE + ".Stats")["journal"], {"durability": "none"})
        self.assertIn("journal: none", self.ctl(d, "stats").stdout)
        self.assertFalse(os.path.exists(os.path.join(d.state_dir, "journal.db")))
        restart(self, d)
        c = self.connect(d)
        self.assertError(c.call(IFACE + ".GetJob", {"id": 1}), IFACE + ".NoSuchJob")
        self.assertEqual(self.submit(c, "p"), 1)

    def test_bad_values_are_configuration_errors(self):
        for key, value, why in (("Durability", "sometimes", "unknown value (known: full, none)"),
                                ("RetainAge", "3 weeks", "not a duration"),
                                ("JournalMinFree", "17T", "not a size")):
            d = self.start_daemon({"p": [stage("a", "noop")]}, start=False, **{key: value})
            d.spawn()
            self.assertEqual(d.wait_exit(), 78, key)
            self.assertIn("%s: %s" % (key, why), d.stderr())
            d.expected_status = 78

    def test_one_daemon_per_state_directory(self):
        first = self.start_daemon({"p": [stage("a", "noop")]})
        second = self.start_daemon(start=False, config_text=open(first.conf).read())
        second.spawn()
        self.assertEqual(second.wait_exit(), 1)
        second.expected_status = 1
        self.assertIn("state directory %s: another pipelined is using it" % first.state_dir,
                      second.stderr())
        self.assertEqual(self.submit(self.connect(first), "p"), 1)
