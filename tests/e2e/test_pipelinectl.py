"""pipelinectl against a real daemon: output, errors and exit codes
(0 ok, 1 refused or job failed, 2 usage, 3 unreachable, 75 busy)."""

import json
import os
import unittest

from harness import E2ETestCase, have_pipelinectl, run_ctl, stage

PIPELINES = {
    "images": [stage("download", "noop"), stage("resize", "rewrite", workers=2)],
    "thumbs": [stage("only", "noop", capacity=2)],
    "bad": [stage("boom", "fail")],
}


@unittest.skipUnless(have_pipelinectl(), "pipelinectl is not built")
class Pipelinectl(E2ETestCase):

    def setUp(self):
        self.daemon = self.start_daemon(PIPELINES)
        self.c = self.connect(self.daemon)

    def run_ok(self, *args, input=None):
        r = self.ctl(self.daemon, *args, input=input)
        self.assertEqual(r.returncode, 0, r)
        return r

    def assertQuiet(self, *args):
        r = self.run_ok(*args)
        self.assertEqual(r.stdout, "", r)
        return r

    # -- submit

    def test_submit_prints_the_id(self):
        """submit PIPELINE PAYLOAD prints the new job's id and nothing else."""
        r = self.run_ok("submit", "images", '{"url": "a.png"}')
        job_id = int(r.stdout.strip())
        self.assertEqual(r.stdout, "%d\n" % job_id)
        job = self.wait_job(self.c, job_id)
        self.assertEqual(job["payload"], {"stage": "resize", "input": {"url": "a.png"}})

    def test_submit_bad_json_is_a_usage_error_showing_where(self):
        """A payload that is not JSON: exit 2, and the message says where parsing stopped."""
        r = self.ctl(self.daemon, "submit", "images", '{"url": "a.png",}')
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("column", r.stderr)
        self.assertEqual(r.stdout, "")
        self.assertEqual(self.stats(self.c, "images")["accepted"], 0)

    def test_submit_stdin_bulk(self):
        """submit --stdin with 5000 JSON lines prints 5000 ids, in input order."""
        lines = "".join('{"n": %d}\n' % n for n in range(5000))
        r = self.run_ok("submit", "images", "--stdin", input=lines)
        ids = [int(x) for x in r.stdout.split()]
        self.assertEqual(len(ids), 5000)
        self.assertEqual(len(set(ids)), 5000)
        self.drain(self.c, "images")
        self.assertEqual(self.stats(self.c, "images")["done"], 5000)
        self.assertEqual(self.get_job(self.c, ids[4321])["payload"]["input"], {"n": 4321})

    def test_submit_to_an_unknown_pipeline(self):
        """submit to an unknown pipeline: exit 1, "no such pipeline (known: ...)"."""
        r = self.ctl(self.daemon, "submit", "imgs", "{}")
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("no such pipeline (known: images, thumbs, bad)", r.stderr)
        self.assertIn("imgs", r.stderr)
        self.assertEqual(r.stdout, "")

    def test_submit_nowait_to_a_full_pipeline_is_busy(self):
        """submit --nowait into a full first queue exits 75."""
        self.pause(self.c, "thumbs", "only")
        self.submit_batch(self.c, "thumbs", [{}, {}])
        r = self.ctl(self.daemon, "submit", "--nowait", "thumbs", "{}")
        self.assertEqual(r.returncode, 75, r)
        self.assertIn("busy", r.stderr)
        self.resume(self.c, "thumbs", "only")

    def test_submit_wait_of_a_failing_job(self):
        """submit --wait of a job that fails exits 1."""
        r = self.ctl(self.daemon, "submit", "--wait", "bad", "{}")
        self.assertEqual(r.returncode, 1, r)

    # -- daemon not there, usage

    def test_daemon_not_running(self):
        """With no daemon at the socket: exit 3, "is pipelined running?"."""
        missing = os.path.join(self.daemon.dir, "nothing-here.sock")
        r = run_ctl(missing, "stats")
        self.assertEqual(r.returncode, 3, r)
        self.assertIn("is pipelined running?", r.stderr)

    def test_usage_errors_exit_2(self):
        """Unknown verb, missing or extra arguments, unknown option: exit 2."""
        for args in (["frobnicate"], ["submit"], ["pause", "images"], ["get", "1", "2"],
                     ["stats", "--bogus"], []):
            with self.subTest(args=args):
                r = self.ctl(self.daemon, *args)
                self.assertEqual(r.returncode, 2, r)
                self.assertTrue(r.stderr.startswith("pipelinectl: "), r)

    # -- jobs

    def test_get(self):
        """get ID shows the job; --json is the Job object."""
        job_id = self.submit(self.c, "images", {"k": 1})
        self.wait_job(self.c, job_id)
        r = self.run_ok("get", str(job_id))
        self.assertIn("done", r.stdout)
        self.assertIn("images", r.stdout)
        job = json.loads(self.run_ok("--json", "get", str(job_id)).stdout)
        self.assertEqual((job["id"], job["state"]), (job_id, "done"))

    def test_get_unknown_job(self):
        """get of an unknown id exits 1 saying no such job."""
        r = self.ctl(self.daemon, "get", "999")
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("no such job 999", r.stderr)

    def test_list(self):
        """list shows the jobs; --json is an array of them; --pipeline and --state filter."""
        ids = self.submit_batch(self.c, "images", [{}] * 3)
        failed = self.submit(self.c, "bad")
        self.drain(self.c, "images")
        self.drain(self.c, "bad")
        r = self.run_ok("list")
        for i in ids + [failed]:
            self.assertIn(str(i), r.stdout)
        jobs = json.loads(self.run_ok("list", "--json", "--all").stdout)
        self.assertEqual([j["id"] for j in jobs], ids + [failed])
        jobs = json.loads(self.run_ok("list", "--json", "--state", "failed").stdout)
        self.assertEqual([j["id"] for j in jobs], [failed])
        jobs = json.loads(self.run_ok("list", "--json", "--pipeline", "images").stdout)
        self.assertEqual([j["id"] for j in jobs], ids)

    def test_wait(self):
        """wait of done jobs exits 0; wait of a failed job exits 1."""
        ids = self.submit_batch(self.c, "images", [{}] * 2)
        self.run_ok("wait", *map(str, ids))
        r = self.ctl(self.daemon, "wait", str(self.submit(self.c, "bad")))
        self.assertEqual(r.returncode, 1, r)

    def test_cancel_is_quiet(self):
        """cancel of a queued job: exit 0, no output; the job ends cancelled."""
        self.pause(self.c, "thumbs", "only")
        job_id = self.submit(self.c, "thumbs")
        self.assertQuiet("cancel", str(job_id))
        self.resume(self.c, "thumbs", "only")
        self.assertEqual(self.wait_job(self.c, job_id)["state"], "cancelled")

    # -- stats and control

    def test_stats_table_names_the_stages(self):
        """stats PIPELINE prints a table with the stage names."""
        r = self.run_ok("stats", "images")
        for word in ("images", "download", "resize"):
            self.assertIn(word, r.stdout)

    def test_stats_json(self):
        """stats --json is the daemon's array of PipelineStats."""
        pipelines = json.loads(self.run_ok("--json", "stats").stdout)
        self.assertIsInstance(pipelines, list)
        self.assertEqual([p["name"] for p in pipelines], ["images", "thumbs", "bad"])
        self.assertEqual([s["name"] for s in pipelines[0]["stages"]], ["download", "resize"])

    def test_pause_resume_scale_are_quiet(self):
        """pause, resume and scale exit 0 and print nothing; the daemon shows their effect."""
        self.assertQuiet("pause", "images", "resize")
        self.assertTrue(self.stage_stats(self.c, "images", "resize")["paused"])
        self.assertQuiet("resume", "images", "resize")
        self.assertFalse(self.stage_stats(self.c, "images", "resize")["paused"])
        self.assertQuiet("scale", "images", "resize", "3")
        self.wait_stats(self.c, "images", lambda s: s["stages"][1]["workers"] == 3,
                        "resize has 3 workers")

    def test_unknown_stage(self):
        """pause of an unknown stage exits 1 listing the known ones."""
        r = self.ctl(self.daemon, "pause", "images", "crop")
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("download, resize", r.stderr)

    def test_drain_and_close_are_quiet(self):
        """drain and close exit 0 and print nothing; close leaves the pipeline closed."""
        self.submit_batch(self.c, "images", [{}] * 20)
        self.assertQuiet("drain", "images")
        self.assertEqual(self.stats(self.c, "images")["in_flight"], 0)
        self.assertQuiet("close", "images")
        self.assertEqual(self.stats(self.c, "images")["state"], "closed")
        r = self.ctl(self.daemon, "submit", "images", "{}")
        self.assertEqual(r.returncode, 1, r)

    def test_info(self):
        """info shows the daemon's product and version."""
        r = self.run_ok("info")
        self.assertIn("pipelined", r.stdout)


if __name__ == "__main__":
    unittest.main()
