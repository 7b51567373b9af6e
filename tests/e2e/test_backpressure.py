"""Backpressure, shown by state rather than timing: a full first queue holds a
Submit, the daemon stops reading that client, and nobody else notices."""

import select
import unittest

from harness import IFACE, HANG_GUARD, E2ETestCase, stage

CAPACITY = 4
PIPELINES = {
    "bp": [stage("first", "noop", workers=1, capacity=CAPACITY), stage("second", "noop")],
    "free": [stage("only", "noop")],
}


def send_until_blocked(conn, next_call):
    """Sends next_call(i) for i = 0, 1, ... on conn's socket, non-blocking,
    until the kernel takes no more and no room comes back. A daemon that kept
    reading would make room: the loop would go on until the daemon had read
    far more than socket buffers hold (16 MiB). Returns (blocked, whole calls
    sent, bytes sent, the unsent rest of a call the kernel took only part
    of); the socket is left non-blocking."""
    conn.sock.setblocking(False)
    sent = sent_bytes = 0
    pending = b""
    while sent_bytes < 16 << 20:
        out = pending or next_call(sent)
        try:
            n = conn.sock.send(out)
        except BlockingIOError:
            if select.select([], [conn.sock], [], 0.25)[1]:
                continue  # room again: only a reading daemon makes room
            return True, sent, sent_bytes, pending
        sent_bytes += n
        pending = out[n:]
        if not pending:
            sent += 1
    return False, sent, sent_bytes, pending


class Backpressure(E2ETestCase):

    def setUp(self):
        self.daemon = self.start_daemon(PIPELINES)
        self.b = self.connect(self.daemon)  # the bystander, and the operator
        self.pause(self.b, "bp", "first")
        self.first_ids = self.submit_batch(self.b, "bp", [{"n": n} for n in range(CAPACITY)])

    def check_bounded(self, st):
        q = st["stages"][0]
        self.assertLessEqual(q["queue_length"], q["queue_capacity"])
        self.assertEqual(q["queue_capacity"], CAPACITY)

    def hold_a(self):
        """Client A submits into the full queue; returns A once the daemon holds it."""
        a = self.connect(self.daemon)
        a.send_call(IFACE + ".Submit", {"pipeline": "bp", "payload": {"n": "held"}})
        self.wait_stats(self.b, "bp", lambda s: s["waiting_clients"] == 1,
                        "A's Submit is held", check=self.check_bounded)
        return a

    def test_held_submit_waits_for_room(self):
        """A 5th Submit into a full, paused queue of 4 is held: waiting_clients 1, queue 4/4."""
        a = self.hold_a()
        st = self.stats(self.b, "bp")
        self.check_bounded(st)
        self.assertEqual((st["stages"][0]["queue_length"], st["accepted"]), (CAPACITY, CAPACITY))
        self.assertFalse(a.has_message(), "the held Submit was answered")
        self.resume(self.b, "bp", "first")
        self.assertEqual(self.assertReply(a.recv())["id"], CAPACITY + 1)
        self.drain(self.b, "bp")
        self.assertEqual(self.stats(self.b, "bp")["done"], CAPACITY + 1)

    def test_other_clients_are_not_affected(self):
        """While A is held, B can still use Stats, GetJob, ListJobs and another pipeline."""
        self.hold_a()
        self.assertEqual(self.get_job(self.b, self.first_ids[0])["state"], "queued")
        self.assertEqual(len(self.list_all(self.b, pipeline="bp")), CAPACITY)
        self.assertEqual(self.wait_job(self.b, self.submit(self.b, "free"))["state"], "done")
        self.resume(self.b, "bp", "first")

    def test_daemon_stops_reading_a_held_client(self):
        """A held client's writes fill the socket (the daemon reads no more); on resume
        every call is answered, in order, and every job completes."""
        a = self.hold_a()
        blocked, sent, sent_bytes, pending = send_until_blocked(
            a, lambda i: a.encode_call(IFACE + ".Submit", {"pipeline": "bp", "payload": {"i": i}}))
        self.assertTrue(blocked, "the daemon read %d bytes of Submits from a held client"
                        % sent_bytes)
        st = self.stats(self.b, "bp")
        self.check_bounded(st)
        self.assertEqual((st["waiting_clients"], st["accepted"]), (1, CAPACITY))

        a.sock.settimeout(HANG_GUARD)
        self.resume(self.b, "bp", "first")
        if pending:  # the rest of a Submit cut by the full buffer
            a.send_raw(pending)
            sent += 1
        ids = [self.assertReply(a.recv())["id"] for _ in range(1 + sent)]
        self.assertEqual(ids, list(range(CAPACITY + 1, CAPACITY + 2 + sent)))
        self.drain(self.b, "bp")
        st = self.stats(self.b, "bp")
        total = CAPACITY + 1 + sent
        self.assertEqual((st["accepted"], st["done"], st["in_flight"], st["waiting_clients"]),
                         (total, total, 0, 0))

    def test_input_behind_a_held_wait_is_bounded(self):
        """Behind a held WaitJob the daemon buffers a bounded amount of input
        (HOLD_INPUT_MAX, 64 KiB), then stops reading; afterwards every call is answered."""
        a = self.connect(self.daemon)
        a.send_call(IFACE + ".WaitJob", {"id": self.first_ids[0]})  # queued, stage paused
        call = a.encode_call("org.varlink.service.GetInfo", {})
        blocked, sent, _, pending = send_until_blocked(a, lambda i: call)
        self.assertTrue(blocked, "the daemon kept reading behind a held call (%d calls)" % sent)
        a.sock.settimeout(HANG_GUARD)
        self.resume(self.b, "bp", "first")
        if pending:
            a.send_raw(pending)
            sent += 1
        self.assertEqual(self.assertReply(a.recv())["job"]["state"], "done")
        for _ in range(sent):
            self.assertEqual(self.assertReply(a.recv())["product"], "pipelined")

    def test_held_clients_are_served_first_come_first_served(self):
        """Two held clients get their replies in the order they were held."""
        a = self.hold_a()
        c = self.connect(self.daemon)
        c.send_call(IFACE + ".Submit", {"pipeline": "bp", "payload": {"n": "second"}})
        self.wait_stats(self.b, "bp", lambda s: s["waiting_clients"] == 2, "both are held",
                        check=self.check_bounded)
        self.resume(self.b, "bp", "first")
        self.assertEqual(self.assertReply(a.recv())["id"], CAPACITY + 1)
        self.assertEqual(self.assertReply(c.recv())["id"], CAPACITY + 2)

    def test_nowait_on_a_full_pipeline_is_busy(self):
        """Submit with nowait into the full queue is Busy with retry_after_ms >= 1, at once."""
        r = self.b.call(IFACE + ".Submit", {"pipeline": "bp", "payload": {}, "nowait": True})
        p = self.assertError(r, IFACE + ".Busy", {"pipeline": "bp"})
        self.assertGreaterEqual(p["retry_after_ms"], 1)
        self.assertEqual(self.stats(self.b, "bp")["accepted"], CAPACITY)
        self.resume(self.b, "bp", "first")

    def test_nowait_behind_a_held_client_is_busy(self):
        """nowait is Busy while another client is held, even once there is room."""
        self.hold_a()
        r = self.b.call(IFACE + ".Submit", {"pipeline": "bp", "payload": {}, "nowait": True})
        self.assertError(r, IFACE + ".Busy", {"pipeline": "bp"})
        self.resume(self.b, "bp", "first")

    def test_nowait_batch_is_all_or_none(self):
        """With 2 places left, a nowait batch of 3 is Busy and accepts none; one of 2 fits."""
        self.resume(self.b, "bp", "first")
        self.drain(self.b, "bp")
        self.pause(self.b, "bp", "first")
        self.submit_batch(self.b, "bp", [{}, {}])
        r = self.b.call(IFACE + ".SubmitBatch",
                        {"pipeline": "bp", "payloads": [{}] * 3, "nowait": True})
        self.assertError(r, IFACE + ".Busy", {"pipeline": "bp"})
        self.assertEqual(self.stats(self.b, "bp")["accepted"], CAPACITY + 2)
        r = self.b.call(IFACE + ".SubmitBatch",
                        {"pipeline": "bp", "payloads": [{}] * 2, "nowait": True})
        self.assertEqual(len(self.assertReply(r)["ids"]), 2)
        st = self.stats(self.b, "bp")
        self.assertEqual((st["accepted"], st["stages"][0]["queue_length"]),
                         (CAPACITY + 4, CAPACITY))
        self.resume(self.b, "bp", "first")

    def test_held_batch_is_accepted_in_parts(self):
        """A batch larger than the queue is held and accepted as room appears; ids in order."""
        a = self.connect(self.daemon)
        a.send_call(IFACE + ".SubmitBatch", {"pipeline": "bp", "payloads": [{}] * 50})
        self.wait_stats(self.b, "bp", lambda s: s["waiting_clients"] == 1, "the batch is held",
                        check=self.check_bounded)
        self.resume(self.b, "bp", "first")
        ids = self.assertReply(a.recv())["ids"]
        self.assertEqual(ids, list(range(CAPACITY + 1, CAPACITY + 51)))
        self.drain(self.b, "bp")
        self.assertEqual(self.stats(self.b, "bp")["done"], CAPACITY + 50)

    def test_held_submit_moves_to_the_pipeline_a_reload_put_in_place(self):
        """A Submit held on a pipeline that a reload replaces is accepted by its successor."""
        a = self.hold_a()
        self.daemon.write_config(dict(PIPELINES, bp=[stage("first", "rewrite", capacity=CAPACITY),
                                                     stage("second", "noop")]))
        p = self.ok(self.b, IFACE + ".Reload")
        self.assertEqual(p["replaced"], ["bp"])
        job_id = self.assertReply(a.recv())["id"]
        job = self.wait_job(self.b, job_id)
        self.assertEqual(job["payload"], {"stage": "first", "input": {"n": "held"}})
        self.assertEqual(self.stats(self.b, "bp")["accepted"], 1)
        # The jobs accepted by the old pipeline still finish.
        self.assertEqual([self.wait_job(self.b, i)["state"] for i in self.first_ids],
                         ["done"] * CAPACITY)

    def test_held_submit_on_a_removed_pipeline_is_refused(self):
        """A Submit held on a pipeline that a reload removes is answered PipelineClosed."""
        a = self.hold_a()
        self.daemon.write_config({"free": PIPELINES["free"]})
        self.assertEqual(self.ok(self.b, IFACE + ".Reload")["removed"], ["bp"])
        self.assertError(a.recv(), IFACE + ".PipelineClosed", {"pipeline": "bp"})
        self.assertEqual([self.wait_job(self.b, i)["state"] for i in self.first_ids],
                         ["done"] * CAPACITY)


if __name__ == "__main__":
    unittest.main()
