"""Limits from the configuration: MaxConnections and MaxOutputBuffer."""

import socket
import unittest

from harness import IFACE, E2ETestCase, known_bug, stage

GET_INFO = "org.varlink.service.GetInfo"
PIPELINES = {"echo": [stage("only", "noop")]}
MAX_CONNECTIONS = 3


class MaxConnections(E2ETestCase):
    """MaxConnections=3."""

    def setUp(self):
        self.daemon = self.start_daemon(PIPELINES, MaxConnections=MAX_CONNECTIONS)

    def fill(self):
        conns = [self.connect(self.daemon) for _ in range(MAX_CONNECTIONS)]
        for c in conns:  # each one answered: each one counted
            self.assertReply(c.call(GET_INFO))
        return conns

    def test_connections_up_to_the_maximum_work(self):
        """3 connections at once are each served."""
        conns = self.fill()
        for c in conns:
            self.assertEqual(self.stats(c, "echo")["name"], "echo")

    def test_connection_past_the_maximum_is_told_why_and_closed(self):
        """The 4th connection gets LimitExceeded {"parameter": "connections"} unasked, then EOF."""
        self.fill()
        extra = self.connect(self.daemon)
        messages = extra.wait_eof()
        self.assertEqual(len(messages), 1, messages)
        self.assertError(messages[0], IFACE + ".LimitExceeded",
                         {"parameter": "connections", "max": MAX_CONNECTIONS})

    def test_a_closed_connection_frees_its_place(self):
        """Once one of 3 connections has closed, a new one is served."""
        conns = self.fill()
        # Half-close and read to the end: once the daemon has closed its
        # side, it no longer counts the connection.
        conns[0].sock.shutdown(socket.SHUT_WR)
        self.assertEqual(conns[0].wait_eof(), [])
        self.assertReply(self.connect(self.daemon).call(GET_INFO))
        for c in conns[1:]:
            self.assertReply(c.call(GET_INFO))


class MaxOutputBuffer(E2ETestCase):
    """MaxOutputBuffer=64KiB."""

    def test_client_that_never_reads_is_cut_off(self):
        """A client that sends calls and never reads its replies is closed; others keep working."""
        daemon = self.start_daemon(PIPELINES, MaxOutputBuffer="64KiB")
        greedy = self.connect(daemon)
        other = self.connect(daemon)
        self.assertReply(other.call(GET_INFO))
        chunk = greedy.encode_call(GET_INFO) * 1000
        sent = 0
        cut = False
        # The kernel holds some hundreds of KiB of replies, the daemon 64 KiB
        # more; 200,000 calls make about 30 MiB of replies.
        while sent < 200000:
            try:
                greedy.send_raw(chunk)
            except (BrokenPipeError, ConnectionResetError):
                cut = True
                break
            sent += 1000
        self.assertTrue(cut, "the daemon kept reading after %d unread replies" % sent)
        replies = greedy.wait_eof()  # what the kernel held, then EOF
        self.assertLess(len(replies), sent)
        for r in replies:
            self.assertReply(r)
        self.assertReply(other.call(GET_INFO))
        self.assertEqual(self.submit(other, "echo"), 1)
        self.assertIn("replies unread", daemon.stderr())


if __name__ == "__main__":
    unittest.main()
