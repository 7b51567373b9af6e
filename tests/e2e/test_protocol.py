"""Protocol: framing, message checks, methods of org.varlink.service, limits,
ordering, oneway, half-close and broken peers -- raw bytes on the socket.

cases/protocol.json holds the error cases as data. Each case is an object:
  name                    what it checks
  send                    the message text (sent as UTF-8, then a NUL); with
                          "encoding": "latin-1" each character U+0000..U+00FF
                          is sent as that one byte (to send invalid UTF-8)
  expect_error            the error name expected, or null for a normal reply
  expect_params           (optional) a subset of the reply's parameters
  expect_reason_contains  (optional) text the InvalidMessage reason contains
  then_alive              true: the same connection still answers GetInfo
  known_bug               (optional) a reported daemon bug: the case runs in
                          an expectedFailure test until the bug is fixed
"""

import json
import os
import socket
import unittest

from harness import (BATCH_MAX, DEPTH_MAX, HERE, IFACE, LIST_MAX, MESSAGE_MAX, PAYLOAD_MAX,
                     ROOT, E2ETestCase, is_subset, known_bug, stage)

PIPELINES = {
    "echo": [stage("only", "noop")],
    "other": [stage("first", "noop"), stage("second", "noop")],
}

GET_INFO = "org.varlink.service.GetInfo"


def load_cases():
    with open(os.path.join(HERE, "cases", "protocol.json")) as f:
        return json.load(f)


def submit_message(payload_text):
    """A Submit call to echo whose payload is payload_text, verbatim."""
    return ('{"method":"io.pipelined.Submit","parameters":{"pipeline":"echo","payload":%s}}'
            % payload_text).encode()


class ProtocolCases(E2ETestCase):
    """The data-driven cases of cases/protocol.json."""

    def setUp(self):
        self.daemon = self.start_daemon(PIPELINES)

    def run_case(self, case):
        c = self.connect(self.daemon)
        text = case["send"]
        data = text.encode(case.get("encoding", "utf-8"))
        c.send_raw(data + b"\0")
        reply = c.recv()
        if case["expect_error"] is None:
            p = self.assertReply(reply)
            if "expect_params" in case:
                self.assertTrue(is_subset(case["expect_params"], p),
                                "parameters %r do not include %r" % (p, case["expect_params"]))
        else:
            p = self.assertError(reply, case["expect_error"])
            if "expect_params" in case:
                self.assertTrue(is_subset(case["expect_params"], p),
                                "parameters %r do not include %r" % (p, case["expect_params"]))
            if "expect_reason_contains" in case:
                self.assertIn(case["expect_reason_contains"], p.get("reason", ""))
        if case.get("then_alive", True):
            self.assertReply(c.call(GET_INFO), "the connection no longer answers")

    def test_protocol_cases(self):
        """Every case of cases/protocol.json gets its expected answer."""
        cases = load_cases()
        self.assertTrue(cases)
        for case in cases:
            with self.subTest(case=case["name"]):
                self.run_case(case)
        # The daemon survived every case.
        self.assertReply(self.connect(self.daemon).call(GET_INFO))


class ServiceInterface(E2ETestCase):
    """org.varlink.service: GetInfo and GetInterfaceDescription."""

    def setUp(self):
        self.daemon = self.start_daemon(PIPELINES)
        self.c = self.connect(self.daemon)

    def test_get_info(self):
        """GetInfo names the product, its version and both interfaces."""
        p = self.ok(self.c, GET_INFO)
        self.assertEqual(p["product"], "pipelined")
        for key in ("vendor", "version", "url"):
            self.assertIsInstance(p[key], str)
        self.assertIn("io.pipelined", p["interfaces"])
        self.assertIn("org.varlink.service", p["interfaces"])

    def test_interface_description_of_io_pipelined(self):
        """The description of io.pipelined is the interface file, verbatim."""
        p = self.ok(self.c, "org.varlink.service.GetInterfaceDescription",
                    {"interface": "io.pipelined"})
        self.assertIn("interface io.pipelined", p["description"])
        with open(os.path.join(ROOT, "proto", "io.pipelined.varlink")) as f:
            self.assertEqual(p["description"], f.read())

    def test_interface_description_of_the_service_interface(self):
        """The description of org.varlink.service declares it."""
        p = self.ok(self.c, "org.varlink.service.GetInterfaceDescription",
                    {"interface": "org.varlink.service"})
        self.assertIn("interface org.varlink.service", p["description"])

    def test_interface_description_of_an_unknown_interface(self):
        """An unknown interface's description is InterfaceNotFound naming it."""
        r = self.c.call("org.varlink.service.GetInterfaceDescription",
                        {"interface": "com.example.nothing"})
        self.assertError(r, "org.varlink.service.InterfaceNotFound",
                         {"interface": "com.example.nothing"})

    def test_more_on_a_single_reply_method(self):
        """A call with more to a one-answer method gets one reply, without continues."""
        self.c.send_call(GET_INFO, more=True)
        self.c.send_call(IFACE + ".GetJob", {"id": 424242})
        first = self.c.recv()
        self.assertReply(first)
        self.assertFalse(first.get("continues", False))
        self.assertError(self.c.recv(), IFACE + ".NoSuchJob")


class Messages(E2ETestCase):
    """Framing and message limits."""

    def setUp(self):
        self.daemon = self.start_daemon(PIPELINES)
        self.c = self.connect(self.daemon)

    def test_invalid_json_names_where_parsing_stopped(self):
        """Broken JSON gets InvalidMessage with line and column; the connection stays usable."""
        self.c.send_raw(b'{"method": "org.varlink.service.GetInfo", "parameters": {]}\0')
        p = self.assertError(self.c.recv(), IFACE + ".InvalidMessage")
        self.assertIn("line 1 column 58", p["reason"])
        self.assertReply(self.c.call(GET_INFO))

    def nested(self, depth):
        """A Submit whose unknown parameter "deep" makes the message nest to depth."""
        inner = depth - 2  # the envelope and "parameters"
        return ('{"method":"io.pipelined.Submit","parameters":{"pipeline":"echo","payload":{},'
                '"deep":' + "[" * inner + "]" * inner + "}}").encode() + b"\0"

    def test_nesting_depth_64_is_read(self):
        """A message nested 64 deep is read as a call (refused for its parameter only)."""
        self.c.send_raw(self.nested(DEPTH_MAX))
        self.assertError(self.c.recv(), "org.varlink.service.InvalidParameter",
                         {"parameter": "deep"})

    def test_nesting_depth_65_is_refused(self):
        """A message nested 65 deep is InvalidMessage; the connection stays usable."""
        self.c.send_raw(self.nested(DEPTH_MAX + 1))
        p = self.assertError(self.c.recv(), IFACE + ".InvalidMessage")
        self.assertIn("nesting", p["reason"])
        self.assertReply(self.c.call(GET_INFO))

    def sized_message(self, total, n=17):
        """A SubmitBatch of n payloads (each under the payload limit) that is
        exactly total bytes long, its NUL included."""
        def message(pads):
            payloads = ",".join('{"pad":"%s"}' % ("x" * k) for k in pads)
            return ('{"method":"io.pipelined.SubmitBatch","parameters":{"pipeline":"echo",'
                    '"payloads":[%s]}}' % payloads).encode() + b"\0"
        q, r = divmod(total - len(message([0] * n)), n)
        pads = [q + (i < r) for i in range(n)]
        self.assertLessEqual(max(pads) + len('{"pad":""}'), PAYLOAD_MAX)
        msg = message(pads)
        self.assertEqual(len(msg), total)
        return msg

    def test_message_of_exactly_the_maximum_size_is_read(self):
        """A message of exactly 1 MiB with its NUL is read and executed."""
        self.c.send_raw(self.sized_message(MESSAGE_MAX))
        self.assertEqual(self.assertReply(self.c.recv())["ids"], list(range(1, 18)))
        self.assertReply(self.c.call(GET_INFO))

    def test_message_one_byte_over_the_maximum_closes_the_connection(self):
        """A message of 1 MiB + 1 byte gets MessageTooLarge, then the daemon closes."""
        try:
            self.c.send_raw(self.sized_message(MESSAGE_MAX + 1))
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed before our last bytes went out: fine
        messages = self.c.wait_eof()
        self.assertEqual(len(messages), 1, messages)
        self.assertError(messages[0], IFACE + ".MessageTooLarge", {"max": MESSAGE_MAX})
        other = self.connect(self.daemon)
        self.assertEqual(self.stats(other, "echo")["accepted"], 0)

    def test_garbage_without_nul_cuts_off_only_that_peer(self):
        """A peer sending over 1 MiB without a NUL is cut off; another keeps working."""
        other = self.connect(self.daemon)
        self.assertReply(other.call(GET_INFO))
        half = b"x" * (MESSAGE_MAX // 2)
        self.c.send_raw(half)
        self.assertReply(other.call(GET_INFO))  # while the garbage is half in
        try:
            self.c.send_raw(half + b"x" * 4096)
        except (BrokenPipeError, ConnectionResetError):
            pass
        messages = self.c.wait_eof()
        self.assertEqual([m.get("error") for m in messages], [IFACE + ".MessageTooLarge"])
        self.assertReply(other.call(GET_INFO))
        self.assertEqual(self.submit(other, "echo"), 1)

    def test_payload_of_exactly_the_limit_is_accepted(self):
        """A payload of exactly 65536 bytes of compact JSON is accepted."""
        payload = {"pad": "x" * (PAYLOAD_MAX - len('{"pad":""}'))}
        self.assertEqual(len(json.dumps(payload, separators=(",", ":"))), PAYLOAD_MAX)
        job_id = self.submit(self.c, "echo", payload)
        self.assertEqual(self.wait_job(self.c, job_id)["payload"], payload)

    def test_payload_one_byte_over_the_limit_is_refused(self):
        """A payload of 65537 bytes is LimitExceeded {"parameter": "payload"}."""
        payload = {"pad": "x" * (PAYLOAD_MAX + 1 - len('{"pad":""}'))}
        r = self.c.call(IFACE + ".Submit", {"pipeline": "echo", "payload": payload})
        self.assertError(r, IFACE + ".LimitExceeded", {"parameter": "payload", "max": PAYLOAD_MAX})
        self.assertEqual(self.stats(self.c, "echo")["accepted"], 0)

    def test_payload_size_counts_compact_json(self):
        """Whitespace in the sent payload does not count toward its limit."""
        pad = "x" * (PAYLOAD_MAX - len('{"pad":""}'))
        self.c.send_raw(submit_message('{  "pad" :   "%s"   }' % pad) + b"\0")
        self.assertIsInstance(self.assertReply(self.c.recv())["id"], int)

    def test_batch_of_1000_is_accepted(self):
        """SubmitBatch with 1000 payloads returns 1000 ids in order."""
        ids = self.submit_batch(self.c, "echo", [{"n": i} for i in range(BATCH_MAX)])
        self.assertEqual(len(ids), BATCH_MAX)
        self.assertEqual(ids, sorted(set(ids)))

    def test_batch_of_1001_is_refused(self):
        """SubmitBatch with 1001 payloads is LimitExceeded and accepts none."""
        r = self.c.call(IFACE + ".SubmitBatch",
                        {"pipeline": "echo", "payloads": [{}] * (BATCH_MAX + 1)})
        self.assertError(r, IFACE + ".LimitExceeded", {"parameter": "payloads", "max": BATCH_MAX})
        self.assertEqual(self.stats(self.c, "echo")["accepted"], 0)

    def test_list_limit_1000_is_accepted(self):
        """ListJobs with limit 1000 returns up to 1000 jobs."""
        self.submit_batch(self.c, "echo", [{}] * 1000)
        self.submit(self.c, "echo")
        p = self.ok(self.c, IFACE + ".ListJobs", {"limit": LIST_MAX})
        self.assertEqual([j["id"] for j in p["jobs"]], list(range(1, 1001)))
        self.assertEqual(p["next_after_id"], 1000)

    def test_list_limit_1001_is_refused(self):
        """ListJobs with limit 1001 is LimitExceeded {"parameter": "limit"}."""
        r = self.c.call(IFACE + ".ListJobs", {"limit": LIST_MAX + 1})
        self.assertError(r, IFACE + ".LimitExceeded", {"parameter": "limit", "max": LIST_MAX})


class Ordering(E2ETestCase):
    """Oneway calls, pipelined calls and half-closed peers."""

    def setUp(self):
        self.daemon = self.start_daemon(PIPELINES)
        self.c = self.connect(self.daemon)

    def test_oneway_call_gets_no_reply(self):
        """A oneway call is executed but answered not at all: the next reply is the next call's."""
        self.c.send_call(IFACE + ".Submit", {"pipeline": "echo", "payload": {"one": 1}},
                         oneway=True)
        self.c.send_call(IFACE + ".Submit", {"pipeline": "nope", "payload": {}}, oneway=True)
        reply = self.c.call(IFACE + ".GetJob", {"id": 1})
        job = self.assertReply(reply)["job"]  # the oneway Submit did run
        self.assertEqual(job["id"], 1)
        self.assertReply(self.c.call(GET_INFO))
        self.assertFalse(self.c.has_message())

    def test_pipelined_calls_are_answered_in_order(self):
        """Many calls sent at once are answered one each, in the order sent."""
        n = 200
        data = b"".join(
            self.c.encode_call(IFACE + ".GetJob", {"id": 100000 + i}) if i % 2 else
            self.c.encode_call(IFACE + ".Submit", {"pipeline": "echo", "payload": {"i": i}})
            for i in range(n))
        self.c.send_raw(data)
        submitted = []
        for i in range(n):
            r = self.c.recv()
            if i % 2:
                self.assertError(r, IFACE + ".NoSuchJob", {"id": 100000 + i})
            else:
                submitted.append(self.assertReply(r)["id"])
        self.assertEqual(submitted, list(range(1, n // 2 + 1)))

    def test_half_closed_peer_gets_every_reply_then_eof(self):
        """A peer that sends 3 calls and shuts down its sending side gets 3 replies, then EOF."""
        self.c.send_call(GET_INFO)
        self.c.send_call(IFACE + ".Submit", {"pipeline": "echo", "payload": {}})
        self.c.send_call(IFACE + ".Stats", {"pipeline": "echo"})
        self.c.sock.shutdown(socket.SHUT_WR)
        messages = self.c.wait_eof()
        self.assertEqual(len(messages), 3, messages)
        for m in messages:
            self.assertReply(m)
        self.assertEqual(messages[1]["parameters"]["id"], 1)
        self.assertEqual(messages[2]["parameters"]["pipelines"][0]["name"], "echo")

    def test_half_closed_peer_gets_the_reply_of_a_held_call(self):
        """A WaitJob sent before a half-close is still answered once the job ends."""
        a = self.connect(self.daemon)
        self.pause(a, "other", "first")
        job_id = self.submit(a, "other")
        self.c.send_call(IFACE + ".WaitJob", {"id": job_id})
        self.c.sock.shutdown(socket.SHUT_WR)
        self.resume(a, "other", "first")
        messages = self.c.wait_eof()
        self.assertEqual(len(messages), 1, messages)
        self.assertEqual(self.assertReply(messages[0])["job"]["state"], "done")


if __name__ == "__main__":
    unittest.main()
