"""Jobs: Submit, GetJob, WaitJob, ListJobs, CancelJob, failing and rewriting
actions, retention of finished jobs."""

import unittest

from harness import IFACE, E2ETestCase, stage, wait_until

PIPELINES = {
    "echo": [stage("only", "noop")],
    "rw": [stage("a", "rewrite"), stage("b", "rewrite")],
    "fails": [stage("check", "noop"), stage("bad", "fail"), stage("never", "noop")],
    "half": [stage("odd", "fail:2")],
    "gate": [stage("hold", "noop", workers=1, capacity=16), stage("after", "noop")],
}


class Jobs(E2ETestCase):

    def setUp(self):
        self.daemon = self.start_daemon(PIPELINES)
        self.c = self.connect(self.daemon)

    def test_submit_returns_new_ids_in_order(self):
        """Each Submit returns a new id, one more than the last."""
        ids = [self.submit(self.c, p) for p in ("echo", "rw", "echo", "gate")]
        self.assertEqual(ids, [1, 2, 3, 4])

    def test_get_job_of_a_finished_job(self):
        """GetJob of a done job shows every field, its payload and its times in order."""
        job_id = self.submit(self.c, "gate", {"k": [1, 2, {"v": None}]})
        self.wait_job(self.c, job_id)
        job = self.get_job(self.c, job_id)
        self.assertEqual(job["id"], job_id)
        self.assertEqual(job["pipeline"], "gate")
        self.assertEqual(job["state"], "done")
        self.assertEqual(job["stage"], "after")
        self.assertEqual(job["runs"], 2)
        self.assertEqual(job["payload"], {"k": [1, 2, {"v": None}]})
        self.assertNotIn("error", job)
        self.assertLessEqual(job["submitted_usec"], job["started_usec"])
        self.assertLessEqual(job["started_usec"], job["finished_usec"])

    def test_get_job_of_a_queued_job(self):
        """A job waiting at a paused stage is queued there, with no payload and no end time."""
        self.pause(self.c, "gate", "hold")
        job_id = self.submit(self.c, "gate", {"x": 1})
        job = self.get_job(self.c, job_id)
        self.assertEqual((job["state"], job["stage"], job["runs"]), ("queued", "hold", 0))
        self.assertNotIn("payload", job)
        self.assertNotIn("finished_usec", job)
        self.resume(self.c, "gate", "hold")

    def test_get_job_of_a_job_queued_at_a_later_stage(self):
        """In flight, a job shows the runs made so far and when it started."""
        self.pause(self.c, "gate", "after")
        job_id = self.submit(self.c, "gate", {"x": 1})
        # The stage moves on a moment before the state (still "running"
        # from the stage before): wait for both.
        job = wait_until(lambda: (lambda j: j if (j["stage"], j["state"]) == ("after", "queued")
                                  else None)(self.get_job(self.c, job_id)),
                         "the job to reach the paused stage")
        self.assertEqual((job["state"], job["runs"], job["attempt"]), ("queued", 1, 1))
        self.assertLessEqual(job["submitted_usec"], job["started_usec"])
        self.assertNotIn("finished_usec", job)
        self.resume(self.c, "gate", "after")

    def test_wait_job_replies_once_the_job_ends(self):
        """WaitJob on a queued job holds until the job has run, then returns it done."""
        other = self.connect(self.daemon)
        self.pause(self.c, "gate", "hold")
        job_id = self.submit(self.c, "gate", {"w": 1})
        self.c.send_call(IFACE + ".WaitJob", {"id": job_id})
        self.resume(other, "gate", "hold")
        job = self.assertReply(self.c.recv())["job"]
        self.assertEqual((job["id"], job["state"], job["payload"]), (job_id, "done", {"w": 1}))

    def test_wait_job_of_an_ended_job_replies_at_once(self):
        """WaitJob on a job that has ended returns it."""
        job_id = self.submit(self.c, "echo")
        self.drain(self.c, "echo")
        self.assertEqual(self.wait_job(self.c, job_id)["state"], "done")

    def test_unknown_job(self):
        """GetJob, WaitJob and CancelJob of an id never given are NoSuchJob."""
        self.submit(self.c, "echo")
        for method in ("GetJob", "WaitJob", "CancelJob"):
            self.assertError(self.c.call(IFACE + "." + method, {"id": 2}), IFACE + ".NoSuchJob",
                             {"id": 2})

    def test_failing_action_fails_the_job(self):
        """A job whose action fails ends failed at that stage, with an error, and goes no further."""
        job = self.wait_job(self.c, self.submit(self.c, "fails", {"f": 1}))
        self.assertEqual((job["state"], job["stage"], job["runs"]), ("failed", "bad", 2))
        self.assertIsInstance(job["error"], str)
        self.assertTrue(job["error"])
        st = self.stats(self.c, "fails")
        self.assertEqual((st["failed"], st["done"], st["in_flight"]), (1, 0, 0))
        self.assertEqual([s["failed"] for s in st["stages"]], [0, 1, 0])
        self.assertEqual([s["succeeded"] for s in st["stages"]], [1, 0, 0])

    def test_fail_every_second_job(self):
        """fail:2 fails every second job it sees."""
        ids = [self.submit(self.c, "half") for _ in range(6)]
        states = [self.wait_job(self.c, i)["state"] for i in ids]
        self.assertEqual(sorted(states), ["done"] * 3 + ["failed"] * 3)
        self.assertEqual(self.stats(self.c, "half")["failed"], 3)

    def test_rewrite_payload_is_visible_in_get_job(self):
        """Two rewrite stages wrap the payload twice, and GetJob shows the result."""
        job_id = self.submit(self.c, "rw", {"n": 7})
        self.wait_job(self.c, job_id)
        self.assertEqual(self.get_job(self.c, job_id)["payload"],
                         {"stage": "b", "input": {"stage": "a", "input": {"n": 7}}})


class ListJobs(E2ETestCase):

    def setUp(self):
        self.daemon = self.start_daemon(PIPELINES)
        self.c = self.connect(self.daemon)
        # 1..25 echo, 26..35 fails, 36..40 echo, 41..43 queued at gate.
        self.echo = self.submit_batch(self.c, "echo", [{"i": i} for i in range(25)])
        self.failed = self.submit_batch(self.c, "fails", [{}] * 10)
        self.echo += self.submit_batch(self.c, "echo", [{}] * 5)
        self.drain(self.c, "echo")
        self.drain(self.c, "fails")
        self.pause(self.c, "gate", "hold")
        self.queued = self.submit_batch(self.c, "gate", [{}] * 3)

    def tearDown(self):
        self.resume(self.c, "gate", "hold")

    def test_list_defaults(self):
        """Without parameters: the first 100 jobs (here all 43), in id order, no next_after_id."""
        p = self.ok(self.c, IFACE + ".ListJobs")
        self.assertEqual([j["id"] for j in p["jobs"]], list(range(1, 44)))
        self.assertNotIn("next_after_id", p)

    def test_filter_by_pipeline(self):
        """pipeline= lists only that pipeline's jobs."""
        jobs = self.list_all(self.c, pipeline="echo")
        self.assertEqual([j["id"] for j in jobs], self.echo)
        self.assertEqual({j["pipeline"] for j in jobs}, {"echo"})

    def test_filter_by_state(self):
        """state= lists only jobs in that state."""
        self.assertEqual([j["id"] for j in self.list_all(self.c, state="failed")], self.failed)
        self.assertEqual([j["id"] for j in self.list_all(self.c, state="queued")], self.queued)
        self.assertEqual([j["id"] for j in self.list_all(self.c, state="done")], self.echo)
        self.assertEqual(self.list_all(self.c, state="cancelled"), [])

    def test_filter_by_pipeline_and_state(self):
        """Both filters together."""
        self.assertEqual(self.list_all(self.c, pipeline="echo", state="failed"), [])
        jobs = self.list_all(self.c, pipeline="fails", state="failed")
        self.assertEqual([j["id"] for j in jobs], self.failed)

    def test_paging_lists_every_job_exactly_once(self):
        """Pages of 7 following next_after_id cover every job exactly once, in order."""
        ids = [j["id"] for j in self.list_all(self.c, page=7)]
        self.assertEqual(ids, list(range(1, 44)))

    def test_paging_with_a_filter(self):
        """Pages of 4 of one pipeline cover exactly its jobs."""
        ids = [j["id"] for j in self.list_all(self.c, page=4, pipeline="echo")]
        self.assertEqual(ids, self.echo)

    def test_after_id(self):
        """after_id lists only later jobs."""
        p = self.ok(self.c, IFACE + ".ListJobs", {"after_id": 40, "limit": 10})
        self.assertEqual([j["id"] for j in p["jobs"]], [41, 42, 43])
        self.assertNotIn("next_after_id", p)


class Cancel(E2ETestCase):

    def setUp(self):
        self.daemon = self.start_daemon(PIPELINES)
        self.c = self.connect(self.daemon)

    def test_cancel_a_queued_job(self):
        """A queued job can be cancelled: it never runs and ends cancelled; the others run."""
        self.pause(self.c, "gate", "hold")
        ids = self.submit_batch(self.c, "gate", [{"n": n} for n in range(3)])
        job = self.ok(self.c, IFACE + ".CancelJob", {"id": ids[1]})["job"]
        self.assertEqual(job["id"], ids[1])
        self.resume(self.c, "gate", "hold")
        self.drain(self.c, "gate")
        ended = [self.get_job(self.c, i) for i in ids]
        self.assertEqual([j["state"] for j in ended], ["done", "cancelled", "done"])
        self.assertEqual(ended[1]["runs"], 0)
        self.assertIn("cancel", ended[1]["error"])
        st = self.stats(self.c, "gate")
        self.assertEqual((st["done"], st["cancelled"], st["in_flight"]), (2, 1, 0))

    def test_cancel_an_ended_job_is_refused(self):
        """A job that has ended cannot be cancelled: JobNotCancellable with its state."""
        job_id = self.submit(self.c, "echo")
        self.wait_job(self.c, job_id)
        self.assertError(self.c.call(IFACE + ".CancelJob", {"id": job_id}),
                         IFACE + ".JobNotCancellable", {"id": job_id, "state": "done"})

    def test_cancel_twice(self):
        """A job cancelled once cannot be cancelled again."""
        self.pause(self.c, "gate", "hold")
        job_id = self.submit(self.c, "gate")
        self.ok(self.c, IFACE + ".CancelJob", {"id": job_id})
        r = self.c.call(IFACE + ".CancelJob", {"id": job_id})
        self.assertError(r, IFACE + ".JobNotCancellable", {"id": job_id})
        self.resume(self.c, "gate", "hold")
        self.assertEqual(self.wait_job(self.c, job_id)["state"], "cancelled")

    def test_cancel_a_running_job_is_refused(self):
        """A running job cannot be cancelled: JobNotCancellable {"state": "running"}."""
        daemon = self.start_daemon({"slow": [stage("nap", "sleep:600000")]})
        c = self.connect(daemon)
        job_id = self.submit(c, "slow")
        self.wait_stats(c, "slow", lambda s: s["stages"][0]["busy"] == 1, "the job is running")
        self.assertError(c.call(IFACE + ".CancelJob", {"id": job_id}),
                         IFACE + ".JobNotCancellable", {"id": job_id, "state": "running"})
        self.assertEqual(self.get_job(c, job_id)["state"], "running")
        # The job would run for 10 minutes: end the daemon past a deadline.
        self.ok(c, IFACE + ".Shutdown", {"mode": "now", "timeout_ms": 100})
        daemon.expected_status = 1
        self.assertEqual(daemon.wait_exit(), 1)


class Retention(E2ETestCase):

    def test_only_the_newest_finished_jobs_are_kept(self):
        """RetainJobs=5: after 10 jobs have ended, the 5 oldest are NoSuchJob, the 5 newest kept."""
        daemon = self.start_daemon(PIPELINES, RetainJobs=5)
        c = self.connect(daemon)
        ids = [self.submit(c, "echo", {"n": n}) for n in range(10)]
        self.drain(c, "echo")
        for job_id in ids[:5]:
            self.assertError(c.call(IFACE + ".GetJob", {"id": job_id}), IFACE + ".NoSuchJob",
                             {"id": job_id})
        for n, job_id in enumerate(ids[5:], 5):
            self.assertEqual(self.get_job(c, job_id)["payload"], {"n": n})
        self.assertEqual([j["id"] for j in self.list_all(c)], ids[5:])

    def test_unfinished_jobs_are_never_dropped(self):
        """RetainJobs=2: 6 queued jobs all stay listed until they end."""
        daemon = self.start_daemon(PIPELINES, RetainJobs=2)
        c = self.connect(daemon)
        self.pause(c, "gate", "hold")
        ids = self.submit_batch(c, "gate", [{}] * 6)
        self.assertEqual([j["id"] for j in self.list_all(c)], ids)
        self.resume(c, "gate", "hold")
        self.drain(c, "gate")
        self.assertEqual([j["id"] for j in self.list_all(c)], ids[-2:])


if __name__ == "__main__":
    unittest.main()
