"""100,000 jobs through a 3-stage pipeline."""

import collections
import unittest

from harness import BATCH_MAX, IFACE, LIST_MAX, E2ETestCase, stage

# Full size in every build: it takes about 1 s here, 3 s under ASan or TSan.
JOBS = 100000
IN_FLIGHT_BATCHES = 4


class Bulk(E2ETestCase):

    def test_100000_jobs_each_once(self):
        """100,000 jobs in pipelined batches of 1000: unique ids, all done, all listed once."""
        daemon = self.start_daemon(
            {"big": [stage("one", "noop", workers=3, capacity=64),
                     stage("two", "noop", workers=4, capacity=64),
                     stage("three", "noop", workers=2, capacity=64)]},
            RetainJobs=JOBS)
        c = self.connect(daemon)
        batches = JOBS // BATCH_MAX
        sent = received = 0
        ids = []
        while received < batches:
            while sent < batches and sent - received < IN_FLIGHT_BATCHES:
                base = sent * BATCH_MAX
                c.send_call(IFACE + ".SubmitBatch",
                            {"pipeline": "big",
                             "payloads": [{"n": base + i} for i in range(BATCH_MAX)]})
                sent += 1
            batch = self.assertReply(c.recv())["ids"]
            self.assertEqual(len(batch), BATCH_MAX)
            ids += batch
            received += 1
        self.assertEqual(len(set(ids)), JOBS, "an id was returned twice")
        self.assertEqual(ids, sorted(ids), "ids out of submission order")

        self.drain(c, "big")
        st = self.stats(c, "big")
        self.assertEqual((st["accepted"], st["done"], st["failed"], st["cancelled"],
                          st["in_flight"]), (JOBS, JOBS, 0, 0, 0))
        for s in st["stages"]:
            self.assertEqual((s["succeeded"], s["queue_length"], s["busy"]), (JOBS, 0, 0))

        listed = self.list_all(c, page=LIST_MAX)
        counts = collections.Counter(j["id"] for j in listed)
        self.assertEqual(len(listed), JOBS)
        self.assertEqual(set(counts), set(ids))
        self.assertEqual(max(counts.values()), 1)
        self.assertEqual({j["state"] for j in listed}, {"done"})
        # Spot checks: the payload went with its id.
        for k in (0, JOBS // 2, JOBS - 1):
            self.assertEqual(self.get_job(c, ids[k])["payload"], {"n": k})


if __name__ == "__main__":
    unittest.main()
