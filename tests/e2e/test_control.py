"""Control: SetWorkers, PauseStage/ResumeStage, Close, Drain, Watch, Reload
(and SIGHUP), Shutdown."""

import signal
import socket
import unittest

from harness import IFACE, ConnectionClosed, E2ETestCase, known_bug, stage, wait_until

PIPELINES = {
    "ctl": [stage("s1", "noop", workers=2, capacity=16), stage("s2", "noop")],
    "other": [stage("only", "noop")],
}


def names(stats_reply):
    return [p["name"] for p in stats_reply["pipelines"]]


class Stages(E2ETestCase):

    def setUp(self):
        self.daemon = self.start_daemon(PIPELINES)
        self.c = self.connect(self.daemon)

    def test_set_workers_changes_the_worker_count(self):
        """SetWorkers 5 then 1: Stats comes to show each count, and jobs still flow."""
        for n in (5, 1):
            self.ok(self.c, IFACE + ".SetWorkers", {"pipeline": "ctl", "stage": "s1", "workers": n})
            # Stats counts live workers: idle ones retire a moment after the reply.
            self.wait_stats(self.c, "ctl", lambda s: s["stages"][0]["workers"] == n,
                            "s1 has %d workers" % n)
        self.assertEqual(self.stage_stats(self.c, "ctl", "s2")["workers"], 1)
        self.assertEqual(self.wait_job(self.c, self.submit(self.c, "ctl"))["state"], "done")

    def test_set_workers_to_zero_is_invalid(self):
        """SetWorkers 0 is InvalidParameter {"parameter": "workers"}; nothing changes."""
        r = self.c.call(IFACE + ".SetWorkers", {"pipeline": "ctl", "stage": "s1", "workers": 0})
        self.assertError(r, "org.varlink.service.InvalidParameter", {"parameter": "workers"})
        self.assertEqual(self.stage_stats(self.c, "ctl", "s1")["workers"], 2)

    def test_set_workers_past_1024_is_a_limit(self):
        """SetWorkers 1025 is LimitExceeded {"parameter": "workers", "max": 1024}."""
        r = self.c.call(IFACE + ".SetWorkers",
                        {"pipeline": "ctl", "stage": "s1", "workers": 1025})
        self.assertError(r, IFACE + ".LimitExceeded", {"parameter": "workers", "max": 1024})
        self.assertEqual(self.stage_stats(self.c, "ctl", "s1")["workers"], 2)

    def test_pause_and_resume(self):
        """A paused stage takes no job (they queue, Stats says paused); resumed, they all run."""
        self.pause(self.c, "ctl", "s2")
        ids = self.submit_batch(self.c, "ctl", [{}] * 5)
        st = self.wait_stats(self.c, "ctl", lambda s: s["stages"][1]["queue_length"] == 5,
                             "the jobs reach the paused stage")
        self.assertTrue(st["stages"][1]["paused"])
        self.assertFalse(st["stages"][0]["paused"])
        self.assertEqual((st["stages"][1]["succeeded"], st["done"]), (0, 0))
        self.resume(self.c, "ctl", "s2")
        self.assertFalse(self.stage_stats(self.c, "ctl", "s2")["paused"])
        self.drain(self.c, "ctl")
        self.assertEqual([self.get_job(self.c, i)["state"] for i in ids], ["done"] * 5)

    def test_unknown_stage_lists_the_known_ones(self):
        """PauseStage, ResumeStage and SetWorkers of an unknown stage are NoSuchStage with the list."""
        for method, extra in (("PauseStage", {}), ("ResumeStage", {}),
                              ("SetWorkers", {"workers": 2})):
            r = self.c.call(IFACE + "." + method, dict(extra, pipeline="ctl", stage="s3"))
            self.assertError(r, IFACE + ".NoSuchStage",
                             {"pipeline": "ctl", "stage": "s3", "known": ["s1", "s2"]})


class CloseAndDrain(E2ETestCase):

    def setUp(self):
        self.daemon = self.start_daemon(PIPELINES)
        self.c = self.connect(self.daemon)

    def test_close_replies_after_every_job_has_ended(self):
        """Close (with a paused stage holding jobs) replies once all of them are done."""
        self.pause(self.c, "ctl", "s1")
        ids = self.submit_batch(self.c, "ctl", [{"n": n} for n in range(6)])
        self.ok(self.c, IFACE + ".Close", {"pipeline": "ctl"})
        self.assertEqual([self.get_job(self.c, i)["state"] for i in ids], ["done"] * 6)
        st = self.stats(self.c, "ctl")
        self.assertEqual((st["state"], st["in_flight"], st["done"]), ("closed", 0, 6))

    def test_closed_pipeline_refuses_new_work(self):
        """After Close, Submit and SubmitBatch are PipelineClosed; other pipelines still work."""
        self.ok(self.c, IFACE + ".Close", {"pipeline": "ctl"})
        r = self.c.call(IFACE + ".Submit", {"pipeline": "ctl", "payload": {}})
        self.assertError(r, IFACE + ".PipelineClosed", {"pipeline": "ctl"})
        r = self.c.call(IFACE + ".SubmitBatch", {"pipeline": "ctl", "payloads": [{}]})
        self.assertError(r, IFACE + ".PipelineClosed", {"pipeline": "ctl"})
        self.assertEqual(self.stats(self.c, "ctl")["accepted"], 0)
        self.assertEqual(self.wait_job(self.c, self.submit(self.c, "other"))["state"], "done")

    def test_close_of_a_closed_pipeline_replies_at_once(self):
        """A second Close replies too."""
        self.ok(self.c, IFACE + ".Close", {"pipeline": "ctl"})
        self.ok(self.c, IFACE + ".Close", {"pipeline": "ctl"})
        self.assertEqual(self.stats(self.c, "ctl")["state"], "closed")

    def test_held_submitter_gets_pipeline_closed(self):
        """A Submit held by a full queue is answered PipelineClosed when the pipeline closes."""
        daemon = self.start_daemon({"tiny": [stage("one", "noop", capacity=1)]})
        b = self.connect(daemon)
        self.pause(b, "tiny", "one")
        first = self.submit(b, "tiny")
        a = self.connect(daemon)
        a.send_call(IFACE + ".Submit", {"pipeline": "tiny", "payload": {}})
        self.wait_stats(b, "tiny", lambda s: s["waiting_clients"] == 1, "A is held")
        self.ok(b, IFACE + ".Close", {"pipeline": "tiny"})
        self.assertError(a.recv(), IFACE + ".PipelineClosed", {"pipeline": "tiny"})
        self.assertEqual(self.get_job(b, first)["state"], "done")

    def test_drain_replies_once_no_job_is_left(self):
        """Drain replies only when nothing is queued or running; the pipeline stays open."""
        other = self.connect(self.daemon)
        self.pause(self.c, "ctl", "s2")
        self.submit_batch(self.c, "ctl", [{}] * 5)
        self.c.send_call(IFACE + ".Drain", {"pipeline": "ctl"})
        self.c.send_call(IFACE + ".Stats", {"pipeline": "ctl"})
        self.resume(other, "ctl", "s2")
        self.assertReply(self.c.recv())
        st = self.assertReply(self.c.recv())["pipelines"][0]
        self.assertEqual((st["in_flight"], st["done"], st["state"]), (0, 5, "running"))
        self.submit(self.c, "ctl")

    def test_drain_of_an_idle_pipeline_replies_at_once(self):
        """Drain with nothing in flight replies."""
        self.drain(self.c, "other")
        self.assertEqual(self.stats(self.c, "other")["in_flight"], 0)


class Watch(E2ETestCase):

    def setUp(self):
        self.daemon = self.start_daemon(PIPELINES)
        self.c = self.connect(self.daemon)

    def watch(self, pipeline=None):
        w = self.connect(self.daemon)
        w.send_call(IFACE + ".Watch", {"pipeline": pipeline} if pipeline else {}, more=True)
        first = w.recv()
        self.assertEqual(self.assertReply(first), {"event": "watching"})
        self.assertIs(first.get("continues"), True)
        return w

    def next_event(self, w):
        r = w.recv()
        self.assertIs(r.get("continues"), True, r)
        return self.assertReply(r)

    def test_watch_needs_more(self):
        """Watch without more is ExpectedMore."""
        self.assertError(self.c.call(IFACE + ".Watch"), "org.varlink.service.ExpectedMore")

    def test_watch_streams_job_events(self):
        """A watcher sees "accepted" then "ended" for a submitted job, each with continues."""
        w = self.watch()
        job_id = self.submit(self.c, "other", {"x": 1})
        e = self.next_event(w)
        self.assertEqual((e["event"], e["pipeline"], e["job"]["id"]), ("accepted", "other", job_id))
        e = self.next_event(w)
        self.assertEqual((e["event"], e["job"]["id"], e["job"]["state"]), ("ended", job_id, "done"))

    def test_watch_of_one_pipeline(self):
        """A watcher of one pipeline sees none of another's events."""
        w = self.watch("ctl")
        self.submit(self.c, "other")
        job_id = self.submit(self.c, "ctl")
        e = self.next_event(w)
        self.assertEqual((e["event"], e["pipeline"], e["job"]["id"]), ("accepted", "ctl", job_id))

    def test_watch_streams_control_events(self):
        """paused, resumed, scaled, drained and closed events name the pipeline and stage."""
        w = self.watch("ctl")
        self.pause(self.c, "ctl", "s1")
        self.assertEqual(self.next_event(w),
                         {"event": "paused", "pipeline": "ctl", "stage": "s1"})
        self.resume(self.c, "ctl", "s1")
        self.assertEqual(self.next_event(w),
                         {"event": "resumed", "pipeline": "ctl", "stage": "s1"})
        self.ok(self.c, IFACE + ".SetWorkers", {"pipeline": "ctl", "stage": "s2", "workers": 3})
        self.assertEqual(self.next_event(w),
                         {"event": "scaled", "pipeline": "ctl", "stage": "s2"})
        self.pause(self.c, "ctl", "s1")
        self.assertEqual(self.next_event(w)["event"], "paused")
        self.submit(self.c, "ctl")
        self.assertEqual(self.next_event(w)["event"], "accepted")
        self.c.send_call(IFACE + ".Drain", {"pipeline": "ctl"})
        other = self.connect(self.daemon)
        self.resume(other, "ctl", "s1")
        self.assertReply(self.c.recv())
        events = [self.next_event(w)["event"] for _ in range(3)]
        self.assertEqual(events, ["resumed", "ended", "drained"])
        self.ok(self.c, IFACE + ".Close", {"pipeline": "ctl"})
        self.assertEqual(self.next_event(w), {"event": "closed", "pipeline": "ctl"})


class Reload(E2ETestCase):

    def setUp(self):
        self.daemon = self.start_daemon(PIPELINES)
        self.c = self.connect(self.daemon)

    def reload(self, pipelines):
        self.daemon.write_config(pipelines)
        return self.ok(self.c, IFACE + ".Reload")

    def test_reload_without_changes(self):
        """Reloading the same file changes nothing."""
        self.assertEqual(self.reload(PIPELINES),
                         {"added": [], "removed": [], "replaced": [], "rescaled": []})

    def test_reload_adds_a_pipeline(self):
        """A new pipeline in the file is "added" and takes jobs."""
        p = self.reload(dict(PIPELINES, fresh=[stage("x", "rewrite")]))
        self.assertEqual(p, {"added": ["fresh"], "removed": [], "replaced": [], "rescaled": []})
        job = self.wait_job(self.c, self.submit(self.c, "fresh", {"a": 1}))
        self.assertEqual(job["payload"], {"stage": "x", "input": {"a": 1}})

    def test_reload_removes_a_pipeline(self):
        """A pipeline gone from the file is "removed": its accepted jobs finish, then it is unknown."""
        self.pause(self.c, "other", "only")
        job_id = self.submit(self.c, "other")
        p = self.reload({"ctl": PIPELINES["ctl"]})
        self.assertEqual(p["removed"], ["other"])
        self.assertEqual(names(self.ok(self.c, IFACE + ".Stats")), ["ctl"])
        r = self.c.call(IFACE + ".Submit", {"pipeline": "other", "payload": {}})
        self.assertError(r, IFACE + ".NoSuchPipeline", {"pipeline": "other", "known": ["ctl"]})
        self.assertEqual(self.wait_job(self.c, job_id)["state"], "done")

    def test_reload_rescales(self):
        """A changed worker count is "rescaled" and applies at once."""
        p = self.reload(dict(PIPELINES, ctl=[stage("s1", "noop", workers=4, capacity=16),
                                             stage("s2", "noop")]))
        self.assertEqual(p, {"added": [], "removed": [], "replaced": [], "rescaled": ["ctl"]})
        self.wait_stats(self.c, "ctl", lambda s: s["stages"][0]["workers"] == 4, "s1 has 4 workers")

    def test_reload_replaces_a_changed_pipeline(self):
        """A changed action is "replaced": the new action runs new jobs; old jobs still finish."""
        self.pause(self.c, "other", "only")
        old = self.submit(self.c, "other", {"v": 1})
        p = self.reload(dict(PIPELINES, other=[stage("only", "rewrite")]))
        self.assertEqual(p, {"added": [], "removed": [], "replaced": ["other"], "rescaled": []})
        st = self.stats(self.c, "other")
        self.assertEqual((st["stages"][0]["action"], st["accepted"]), ("rewrite", 0))
        new = self.wait_job(self.c, self.submit(self.c, "other", {"v": 2}))
        self.assertEqual(new["payload"], {"stage": "only", "input": {"v": 2}})
        old_job = self.wait_job(self.c, old)
        self.assertEqual((old_job["state"], old_job["payload"]), ("done", {"v": 1}))

    def test_submit_held_on_a_replaced_pipeline_moves_to_its_successor(self):
        """A Submit held by a full queue when a reload replaces the pipeline goes to the new one."""
        self.pause(self.c, "other", "only")
        self.submit_batch(self.c, "other", [{}] * 64)  # the default capacity: full
        a = self.connect(self.daemon)
        a.send_call(IFACE + ".Submit", {"pipeline": "other", "payload": {"held": 1}})
        self.wait_stats(self.c, "other", lambda s: s["waiting_clients"] == 1, "A is held")
        p = self.reload(dict(PIPELINES, other=[stage("only", "rewrite")]))
        self.assertEqual(p["replaced"], ["other"])
        job = self.wait_job(self.c, self.assertReply(a.recv())["id"])
        self.assertEqual(job["payload"], {"stage": "only", "input": {"held": 1}})

    def test_invalid_file_is_config_invalid_and_changes_nothing(self):
        """A bad file is ConfigInvalid with file, line and reason; the pipelines stay as they were."""
        before = self.ok(self.c, IFACE + ".Stats")
        text = ("[daemon]\nStateDirectory = %s\n\n[pipeline ctl]\n\n[stage ctl/s1]\n"
                "Action = noop\nWorkers = lots\n" % self.daemon.state_dir)
        self.daemon.write_config(config_text=text)
        p = self.assertError(self.c.call(IFACE + ".Reload"), IFACE + ".ConfigInvalid",
                             {"file": self.daemon.conf, "line": 8})
        self.assertTrue(p["reason"])
        after = self.ok(self.c, IFACE + ".Stats")
        self.assertEqual(names(after), names(before))
        self.assertEqual([s["workers"] for s in after["pipelines"][0]["stages"]], [2, 1])
        self.assertEqual(self.wait_job(self.c, self.submit(self.c, "other"))["state"], "done")

    def test_sighup_reloads(self):
        """SIGHUP re-reads the file: an added pipeline appears in Stats."""
        self.daemon.write_config(dict(PIPELINES, late=[stage("x", "noop")]))
        self.daemon.signal(signal.SIGHUP)
        wait_until(lambda: "late" in names(self.ok(self.c, IFACE + ".Stats")),
                   "the pipeline added by SIGHUP appears")
        self.assertEqual(self.wait_job(self.c, self.submit(self.c, "late"))["state"], "done")

    def test_sighup_with_an_invalid_file_changes_nothing(self):
        """SIGHUP with a bad file logs the refusal and the daemon keeps running as it was."""
        self.daemon.write_config(config_text="[pipeline broken\n")
        self.daemon.signal(signal.SIGHUP)
        wait_until(lambda: "reload refused" in self.daemon.stderr(), "the refusal is logged")
        self.assertEqual(names(self.ok(self.c, IFACE + ".Stats")), ["ctl", "other"])


class Shutdown(E2ETestCase):
    """A watcher (registered before the shutdown: it has had its "watching")
    sees every job end before the daemon closes it; a WaitJob could not be
    known to be registered in time."""

    def watcher(self, daemon):
        w = self.connect(daemon)
        w.send_call(IFACE + ".Watch", {}, more=True)
        self.assertEqual(self.assertReply(w.recv()), {"event": "watching"})
        return w

    @staticmethod
    def ended(events):
        return [(e["parameters"]["job"]["id"], e["parameters"]["job"]["state"])
                for e in events if e["parameters"].get("event") == "ended"]

    def test_shutdown_drain_finishes_every_accepted_job(self):
        """Shutdown (drain) replies; all 5 queued sleep:100 jobs end done; the daemon exits 0."""
        # Jobs that end 100 ms apart: each "ended" is written on its own
        # (see test_shutdown_delivers_every_event_before_closing).
        daemon = self.start_daemon({"slow": [stage("nap", "sleep:100")]})
        c = self.connect(daemon)
        late = self.connect(daemon)
        w = self.watcher(daemon)
        ids = self.submit_batch(c, "slow", [{"n": n} for n in range(5)])
        self.ok(c, IFACE + ".Shutdown")
        try:
            r = late.call(IFACE + ".Submit", {"pipeline": "slow", "payload": {}})
            self.assertError(r, IFACE + ".ShuttingDown")
        except (ConnectionClosed, BrokenPipeError, ConnectionResetError):
            pass  # the daemon had already finished: closed is fine too
        events = w.wait_eof()
        self.assertEqual(self.ended(events), [(i, "done") for i in ids])
        self.assertEqual(daemon.wait_exit(), 0)
        self.assertIn("exiting", daemon.stderr())

    def test_shutdown_answers_held_submitters(self):
        """A Submit held by a full queue is answered ShuttingDown; the daemon exits 0."""
        daemon = self.start_daemon({"tiny": [stage("one", "noop", capacity=2)]})
        b = self.connect(daemon)
        self.pause(b, "tiny", "one")
        self.submit_batch(b, "tiny", [{}, {}])
        a = self.connect(daemon)
        a.send_call(IFACE + ".Submit", {"pipeline": "tiny", "payload": {}})
        self.wait_stats(b, "tiny", lambda s: s["waiting_clients"] == 1, "A is held")
        self.ok(b, IFACE + ".Shutdown")
        self.assertError(a.recv(), IFACE + ".ShuttingDown")
        self.assertEqual(daemon.wait_exit(), 0)

    def held_batch(self):
        """A daemon whose pipeline "tiny" (capacity 3) is paused, holding a batch of 10
        sent on connection a after its first 3 jobs; b is another connection."""
        daemon = self.start_daemon({"tiny": [stage("one", "noop", capacity=3)]})
        b = self.connect(daemon)
        self.pause(b, "tiny", "one")
        a = self.connect(daemon)
        a.send_call(IFACE + ".SubmitBatch", {"pipeline": "tiny", "payloads": [{}] * 10})
        self.wait_stats(b, "tiny", lambda s: s["waiting_clients"] == 1, "the batch is held")
        return daemon, a, b

    def test_a_held_batch_refused_at_shutdown_names_its_accepted_jobs(self):
        """A SubmitBatch held after its first jobs were accepted is answered ShuttingDown
        with their ids; those jobs run, the others were never taken."""
        daemon, a, b = self.held_batch()
        self.ok(b, IFACE + ".Shutdown")
        p = self.assertError(a.recv(), IFACE + ".ShuttingDown")
        self.assertEqual(p["accepted"], [1, 2, 3])
        self.assertEqual(daemon.wait_exit(), 0)

    def test_a_held_batch_whose_client_left_is_not_run(self):
        """A client that closes its connection while its batch is held: when room comes,
        the jobs not yet accepted are dropped with the connection, not run."""
        daemon, a, b = self.held_batch()
        a.close()
        self.resume(b, "tiny", "one")
        st = self.wait_stats(b, "tiny", lambda s: s["waiting_clients"] == 0 and s["in_flight"] == 0,
                             "the pipeline to settle")
        self.assertEqual((st["accepted"], st["done"]), (3, 3))

    def test_a_half_closed_held_client_still_gets_its_ids(self):
        daemon, a, b = self.held_batch()
        a.sock.shutdown(socket.SHUT_WR)
        self.resume(b, "tiny", "one")
        self.assertEqual(self.assertReply(a.recv())["ids"], list(range(1, 11)))

    def test_shutdown_delivers_every_event_before_closing(self):
        """A watcher gets every job's "ended" and the "closed" event before the daemon exits."""
        # Whether output is still being written at the exit depends on the
        # daemon's timing: ten rounds, each must deliver everything.
        for _ in range(10):
            daemon = self.start_daemon({"tiny": [stage("one", "noop")]})
            b = self.connect(daemon)
            w = self.watcher(daemon)
            self.pause(b, "tiny", "one")
            ids = self.submit_batch(b, "tiny", [{}] * 10)
            self.ok(b, IFACE + ".Shutdown")
            events = w.wait_eof()
            self.assertEqual(self.ended(events), [(i, "done") for i in ids])
            self.assertEqual(events[-1]["parameters"], {"event": "closed", "pipeline": "tiny"})
            self.assertEqual(daemon.wait_exit(), 0)

    def test_shutdown_now_discards_queued_jobs(self):
        """Shutdown now: a job queued at a paused stage ends cancelled, never run; exit 0."""
        daemon = self.start_daemon({"p": [stage("one", "noop"), stage("two", "noop")]})
        c = self.connect(daemon)
        w = self.watcher(daemon)
        self.pause(c, "p", "one")
        # One job: its "ended" is the only event at the end (see
        # test_shutdown_delivers_every_event_before_closing).
        ids = [self.submit(c, "p")]
        self.ok(c, IFACE + ".Shutdown", {"mode": "now"})
        events = [e["parameters"] for e in w.wait_eof()]
        ended = [e["job"] for e in events if e.get("event") == "ended"]
        self.assertEqual([(j["id"], j["state"], j["runs"]) for j in ended],
                         [(i, "cancelled", 0) for i in ids])
        self.assertIn("shutdown", ended[0]["error"])
        self.assertEqual(daemon.wait_exit(), 0)

    def test_shutdown_now_past_the_deadline_exits_1(self):
        """Shutdown now, timeout_ms 300, a 10-minute job running: the daemon gives up at the
        deadline, says so and exits 1."""
        daemon = self.start_daemon({"slow": [stage("nap", "sleep:600000")]})
        c = self.connect(daemon)
        self.submit(c, "slow")
        self.wait_stats(c, "slow", lambda s: s["stages"][0]["busy"] == 1, "the job runs")
        self.ok(c, IFACE + ".Shutdown", {"mode": "now", "timeout_ms": 300})
        daemon.expected_status = 1
        self.assertEqual(daemon.wait_exit(), 1)
        self.assertIn("deadline passed", daemon.stderr())

    def test_shutdown_now_ends_jobs_queued_behind_a_busy_worker(self):
        """Shutdown now with the only worker busy: the job queued behind it ends cancelled."""
        daemon = self.start_daemon({"slow": [stage("nap", "sleep:600000")]})
        daemon.expected_status = 1  # the running job outlasts the deadline
        c = self.connect(daemon)
        w = self.watcher(daemon)
        self.submit(c, "slow")
        self.wait_stats(c, "slow", lambda s: s["stages"][0]["busy"] == 1, "the job runs")
        queued = self.submit(c, "slow")
        self.ok(c, IFACE + ".Shutdown", {"mode": "now", "timeout_ms": 5000})
        e = self.assertReply(w.recv())  # before the deadline closes the connection
        while e["event"] != "ended":  # skip the two "accepted"
            e = self.assertReply(w.recv())
        self.assertEqual((e["job"]["id"], e["job"]["state"]), (queued, "cancelled"))


if __name__ == "__main__":
    unittest.main()
