"""Hostile clients: connections that never finish a message (slowloris),
endless and oversized messages, deep nesting, invalid UTF-8, clients that
never read, connect/close storms, half-closed peers and a daemon out of file
descriptors.

Every test checks the same four things, besides its own:
  - the daemon stays up (it answers, and exits 0 at the end: Daemon.stop);
  - its memory stays under a bound computed from what the attack may cost
    (VmRSS / VmHWM from /proc/PID/status; each bound is explained where set);
  - its open file descriptors (/proc/PID/fd) return to the count before the
    attack once the hostile clients are gone;
  - a well-behaved client (GoodClient: Submit, GetJob of that job, Stats)
    gets correct answers while the attack is in progress, on a connection
    opened before it and on new connections opened during it.

Nothing waits for a fixed time: the tests wait for states (fd counts,
replies, EOF), with the harness's hang guards only. The slow trickle is
real for a few connections (one byte a second, from a thread) and driven as
fast as the test can for the rest: what matters is that they never finish.
"""

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import unittest

from harness import (DEPTH_MAX, HANG_GUARD, IFACE, MESSAGE_MAX, PIPELINED, ROOT, ConnectionClosed,
                     Daemon, E2ETestCase, VarlinkConnection, stage, wait_until)

sys.path.insert(0, os.path.join(ROOT, "tests", "crash"))
import crash  # noqa: E402

# A sanitizer build's memory is not the daemon's: ASan keeps freed blocks in
# quarantine and adds shadow memory, TSan its shadow. The memory bounds are
# checked in normal builds only; everything else holds in all builds.
MEMORY_CHECKED = crash.sanitizer_of(PIPELINED) is None

PIPELINES = {"work": [stage("only", "noop")], "held": [stage("first", "noop")]}
GET_INFO = "org.varlink.service.GetInfo"
KIB = 1024
MIB = 1024 * 1024


# ---- the daemon seen from /proc ---------------------------------------------


def proc_status(pid):
    """{"VmRSS": KiB, "VmHWM": KiB, ...} of /proc/PID/status."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            if value.strip().endswith("kB"):
                out[key] = int(value.split()[0])
    return out


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def cpu_seconds(pid):
    """User + system CPU time of the whole process (every thread)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RawConnection(VarlinkConnection):
    """A VarlinkConnection whose connect() waits for room in the daemon's
    listen backlog (up to the hang guard) instead of failing with EAGAIN, as
    a non-blocking connect to a Unix socket does when the daemon is behind:
    500 connections opened at once outrun its accept loop for a moment."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                                 struct.pack("ll", int(HANG_GUARD), 0))
            self.sock.settimeout(None)  # blocking: connect sleeps on a full backlog
            self.sock.connect(path)
            self.sock.settimeout(HANG_GUARD)
        except BaseException:
            self.sock.close()
            raise
        self.buf = b""
        self.closed = False


# ---- the well-behaved client -------------------------------------------------


class GoodClient:
    """A client doing what clients should: Submit a job, GetJob it, Stats.
    round() checks every answer; fresh_round() does the same on a new
    connection (a client arriving during the attack)."""

    def __init__(self, test, daemon):
        self.test = test
        self.daemon = daemon
        self.conn = test.connect(daemon)
        self.rounds = 0

    def round(self, conn=None):
        t = self.test
        conn = conn or self.conn
        self.rounds += 1
        payload = {"good": self.rounds, "text": "caf\u00e9 \u2713"}
        job_id = t.submit(conn, "work", payload)
        job = t.wait_job(conn, job_id)
        t.assertEqual((job["id"], job["state"], job["payload"]), (job_id, "done", payload))
        job = t.get_job(conn, job_id)
        t.assertEqual((job["id"], job["pipeline"], job["payload"]), (job_id, "work", payload))
        st = t.stats(conn, "work")
        t.assertEqual(st["name"], "work")
        t.assertGreaterEqual(st["accepted"], self.rounds)

    def fresh_round(self):
        c = RawConnection(self.daemon.sock)
        try:
            self.round(c)
            # Closed by the daemon before this returns (half-close, read to
            # EOF): the fd counts that follow do not race its close.
            c.sock.shutdown(socket.SHUT_WR)
            self.test.assertEqual(c.wait_eof(), [])
        finally:
            c.close()


class HostileTestCase(E2ETestCase):
    """Starts a daemon (Durability=none: the connections are measured, not
    the disk) with a good client connected, and records the baseline."""

    daemon_keys = {}

    def setUp(self):
        self.daemon = self.start_daemon(PIPELINES, Durability="none", **self.daemon_keys)
        self.pid = self.daemon.proc.pid
        self.good = GoodClient(self, self.daemon)
        self.good.round()
        # The probe of start() and the round's connection are closed: what
        # is open now is the daemon's own files and the good connection.
        self.base_fds = fd_count(self.pid)
        self.base = proc_status(self.pid)

    def hostile(self):
        """A raw connection, closed at the end of the test if still open."""
        c = RawConnection(self.daemon.sock)
        self.addCleanup(c.close)
        return c

    def assert_fds_back(self):
        """Waits until the daemon holds no more fds than before the attack."""
        # Connections still in the listen backlog hold no fd of the daemon's
        # yet: a new one answered (and closed) means every earlier one has
        # been accepted (the backlog is first in, first out), so the count
        # can no longer go up past the wait below.
        self.assertTrue(self.daemon.probe(), "the daemon answers a new connection")
        wait_until(lambda: fd_count(self.pid) <= self.base_fds,
                   "the daemon's fd count back to %d" % self.base_fds)
        self.assertEqual(fd_count(self.pid), self.base_fds)

    def assert_rss_under(self, extra_kib, why):
        """VmRSS is at most the baseline plus extra_kib (why: the bound)."""
        if not MEMORY_CHECKED:
            return
        rss = proc_status(self.pid)["VmRSS"]
        self.assertLessEqual(rss, self.base["VmRSS"] + extra_kib,
                             "VmRSS %d KiB, baseline %d KiB, bound +%d KiB (%s)"
                             % (rss, self.base["VmRSS"], extra_kib, why))

    def assert_hwm_under(self, extra_kib, why):
        if not MEMORY_CHECKED:
            return
        hwm = proc_status(self.pid)["VmHWM"]
        self.assertLessEqual(hwm, self.base["VmHWM"] + extra_kib,
                             "VmHWM %d KiB, baseline %d KiB, bound +%d KiB (%s)"
                             % (hwm, self.base["VmHWM"], extra_kib, why))

    def assert_good(self):
        self.good.round()
        self.good.fresh_round()

    def expect_cut_off(self, conn, error):
        """conn gets exactly one message, the error named error, then EOF."""
        messages = conn.wait_eof()
        self.assertEqual([m.get("error") for m in messages], [error], messages)
        return messages[0].get("parameters", {})


# ---- slowloris ---------------------------------------------------------------

SLOW = 500
TRICKLED = 5  # of the SLOW connections, those sent one byte a second by a thread
# A call that is never finished: its bytes go out one at a time, the NUL never.
SLOW_MESSAGE = b'{"method":"io.pipelined.Stats","parameters":{"pipeline":"work"}}'


class Slowloris(HostileTestCase):

    def test_500_connections_that_never_finish_a_message(self):
        """500 connections trickle a call byte by byte and never end it: each
        is accepted and kept, memory stays within 16 KiB each, a good client
        (old connection and new ones) is served throughout, and once they hang
        up every fd is given back."""
        slow = [self.hostile() for _ in range(SLOW)]
        # Each one accepted (and not refused for MaxConnections: the default
        # must leave room for a good client beside 500 idle ones).
        wait_until(lambda: fd_count(self.pid) >= self.base_fds + SLOW,
                   "%d connections accepted" % SLOW)
        stop = threading.Event()
        sent = [0] * TRICKLED

        def trickle():
            # One byte a second: a real slow client, never finishing.
            while not stop.is_set():
                for i in range(TRICKLED):
                    if sent[i] < len(SLOW_MESSAGE):
                        slow[i].send_raw(SLOW_MESSAGE[sent[i]:sent[i] + 1])
                        sent[i] += 1
                stop.wait(1.0)

        t = threading.Thread(target=trickle, daemon=True)
        t.start()
        try:
            # The others, driven faster: 20 rounds of one byte each.
            for k in range(20):
                for c in slow[TRICKLED:]:
                    c.send_raw(SLOW_MESSAGE[k:k + 1])
                if k % 5 == 0:
                    self.assert_good()
            # The slow ones have really been slow for a while.
            wait_until(lambda: min(sent) >= 3, "the trickle under way")
            self.assert_good()
            self.assertTrue(self.daemon.running())
            for c in slow:
                self.assertFalse(c.has_message(), "a never-finished call was answered")
            self.assertEqual(fd_count(self.pid), self.base_fds + SLOW)
            # Per slow connection: its Conn (under 1 KiB) and the frame
            # reader's first buffer (4 KiB), with malloc's rounding: 16 KiB
            # each is a bound with room to spare, 8 MiB for the 500.
            self.assert_rss_under(SLOW * 16, "500 x 16 KiB per idle slow connection")
        finally:
            stop.set()
            t.join()
        self.assertEqual(self.stats(self.good.conn, "work")["accepted"], self.good.rounds)
        for c in slow:
            c.close()
        self.assert_fds_back()
        self.assert_good()

    def test_slow_peers_that_half_close_are_told_why_and_closed(self):
        """Slow connections that half-close mid-message each get InvalidMessage
        naming the missing NUL, then EOF."""
        slow = [self.hostile() for _ in range(50)]
        for c in slow:
            c.send_raw(SLOW_MESSAGE[:10])
            c.sock.shutdown(socket.SHUT_WR)
        for c in slow:
            p = self.expect_cut_off(c, IFACE + ".InvalidMessage")
            self.assertIn("ended inside a message", p["reason"])
        self.assert_fds_back()
        self.assert_good()


# ---- endless and oversized messages -------------------------------------------

# Bytes that start a message and could go on for ever: raw bytes, a string
# claiming gigabytes, a number of endless digits, endless nesting.
ENDLESS = {
    "raw bytes": (b"", b"x"),
    "a string": (b'{"method":"io.pipelined.Submit","parameters":{"pipeline":"work",'
                 b'"payload":{"s":"', b"x"),
    "a number": (b'{"method":"io.pipelined.GetJob","parameters":{"id":1', b"9"),
    "nesting": (b'{"method":"io.pipelined.Submit","parameters":{"pipeline":"work",'
                b'"payload":{"a":', b"["),
}
GIGABYTES = 4 * 1024 * MIB  # what the endless sender would send if let


class HugeMessages(HostileTestCase):

    def stream(self, conn, head, unit):
        """Sends head, then unit repeated, up to GIGABYTES, until the daemon
        closes; returns the bytes sent."""
        chunk = unit * (256 * KIB)
        sent = 0
        try:
            conn.send_raw(head)
            sent = len(head)
            while sent < GIGABYTES:
                conn.send_raw(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return sent

    def test_endless_messages_are_cut_off_at_the_limit(self):
        """A message that never ends (bytes, a string, a number, nesting) gets
        MessageTooLarge once it passes 1 MiB and is closed; the daemon stops
        reading it there (the sender is refused within a few MiB, not 4 GiB),
        and its memory peak grows by no more than the buffer of one message."""
        for name, (head, unit) in ENDLESS.items():
            with self.subTest(endless=name):
                c = self.hostile()
                result = {}
                t = threading.Thread(target=lambda: result.update(sent=self.stream(c, head, unit)))
                t.start()
                # The good client, while the message streams in.
                self.assert_good()
                p = self.expect_cut_off(c, IFACE + ".MessageTooLarge")
                self.assertEqual(p["max"], MESSAGE_MAX)
                t.join(HANG_GUARD)
                self.assertFalse(t.is_alive())
                # 1 MiB read, plus what the two socket buffers held when
                # the daemon closed (a few hundred KiB each).
                self.assertLess(result["sent"], 8 * MIB,
                                "the daemon read on past the limit")
                c.close()
        # One message buffered at a time: the frame reader's buffer grows by
        # doubling to 1 MiB, and its last growth to 2 MiB happens just before
        # the limit is noticed; realloc copies. 4 MiB is that, with room.
        self.assert_hwm_under(4 * MIB // KIB, "one oversized message in the reader")
        self.assert_fds_back()
        self.assert_good()
        self.assertEqual(self.stats(self.good.conn, "work")["accepted"], self.good.rounds)

    def test_four_endless_messages_at_once(self):
        """Four endless senders at once each cost one message buffer at most."""
        conns = [self.hostile() for _ in ENDLESS]
        threads = []
        for c, (head, unit) in zip(conns, ENDLESS.values()):
            threads.append(threading.Thread(target=self.stream, args=(c, head, unit)))
            threads[-1].start()
        self.assert_good()
        for c in conns:
            self.expect_cut_off(c, IFACE + ".MessageTooLarge")
        for t in threads:
            t.join(HANG_GUARD)
        self.assert_hwm_under(4 * 4 * MIB // KIB, "four oversized messages in their readers")
        for c in conns:
            c.close()
        self.assert_fds_back()
        self.assert_good()

    def test_whole_messages_claiming_huge_sizes(self):
        """Complete messages just under 1 MiB made of one huge string, one huge
        number, or one huge key are answered with an error; the connection stays."""
        room = MESSAGE_MAX - 200
        cases = [
            # A string of ~1 MiB in a payload: over the payload limit.
            (b'{"method":"io.pipelined.Submit","parameters":{"pipeline":"work","payload":'
             b'{"s":"' + b"x" * room + b'"}}}', IFACE + ".LimitExceeded"),
            # A number of ~1 MiB digits: not a 64-bit integer.
            (b'{"method":"io.pipelined.GetJob","parameters":{"id":' + b"9" * room + b"}}",
             IFACE + ".InvalidMessage"),
            # A real number with a huge exponent.
            (b'{"method":"io.pipelined.GetJob","parameters":{"id":1e' + b"9" * room + b"}}",
             IFACE + ".InvalidMessage"),
            # A parameter name of ~1 MiB.
            (b'{"method":"io.pipelined.Stats","parameters":{"' + b"k" * room + b'":1}}',
             "org.varlink.service.InvalidParameter"),
            # A method name of ~1 MiB.
            (b'{"method":"io.pipelined.' + b"A" * room + b'"}',
             "org.varlink.service.MethodNotFound"),
        ]
        c = self.hostile()
        for msg, error in cases:
            with self.subTest(error=error, start=msg[:60]):
                self.assertLessEqual(len(msg) + 1, MESSAGE_MAX)
                c.send_raw(msg + b"\0")
                self.assertEqual(c.recv().get("error"), error)
                self.assertReply(c.call(GET_INFO))
                self.assert_good()
        self.assertEqual(self.stats(self.good.conn, "work")["accepted"], self.good.rounds)


# ---- nesting --------------------------------------------------------------------


def nested_call(depth, opener=b"[", closer=b"]"):
    """A Stats call whose unknown parameter "deep" makes the message nest
    exactly depth levels (the envelope and "parameters" are two)."""
    inner = depth - 2
    return (b'{"method":"io.pipelined.Stats","parameters":{"deep":' + opener * inner +
            closer * inner + b"}}\0")


class DeepNesting(HostileTestCase):

    def test_nesting_at_and_past_the_limit(self):
        """64 levels are parsed (InvalidParameter for "deep"); 65, and a whole
        1 MiB message of brackets, are InvalidMessage about nesting, without
        the parser ever recursing that deep; the connection stays usable."""
        c = self.hostile()
        c.send_raw(nested_call(DEPTH_MAX))
        self.assertEqual(c.recv()["error"], "org.varlink.service.InvalidParameter")
        objects = lambda d: (b'{"method":"io.pipelined.Stats","parameters":{"deep":' +
                             b'{"a":' * (d - 3) + b"{}" + b"}" * (d - 3) + b"}}\0")
        c.send_raw(objects(DEPTH_MAX))
        self.assertEqual(c.recv()["error"], "org.varlink.service.InvalidParameter")
        inner = (MESSAGE_MAX - 100) // 2
        for msg in (nested_call(DEPTH_MAX + 1), objects(DEPTH_MAX + 1),
                    b"[" * inner + b"]" * inner + b"\0",
                    b"[" * (MESSAGE_MAX - 1) + b"\0",  # never closed
                    b'{"a":' * ((MESSAGE_MAX - 10) // 5) + b"\0"):
            with self.subTest(start=msg[:30], length=len(msg)):
                self.assertLessEqual(len(msg), MESSAGE_MAX)
                c.send_raw(msg)
                p = self.assertError(c.recv(), IFACE + ".InvalidMessage")
                self.assertIn("nesting", p["reason"])
                self.assertReply(c.call(GET_INFO))
                self.assert_good()
        self.assertTrue(self.daemon.running())


# ---- invalid UTF-8 ---------------------------------------------------------------


def submit_raw(payload_text):
    return (b'{"method":"io.pipelined.Submit","parameters":{"pipeline":"work","payload":' +
            payload_text + b"}}\0")


INVALID_UTF8 = {
    "method name": b'{"method":"io.pipelined.St\xffats"}\0',
    "method name, truncated sequence": b'{"method":"io.pipelined.Stats\xc3"}\0',
    "string parameter": b'{"method":"io.pipelined.Stats","parameters":{"pipeline":"wo\xfe'
                        b'rk"}}\0',
    "parameter name": b'{"method":"io.pipelined.Stats","parameters":{"pipe\x80line":"work"}}\0',
    "payload: lone continuation byte": submit_raw(b'{"s":"\x80"}'),
    "payload: overlong slash": submit_raw(b'{"s":"\xc0\xaf"}'),
    "payload: overlong NUL": submit_raw(b'{"s":"a\xc0\x80b"}'),
    "payload: UTF-16 surrogate": submit_raw(b'{"s":"\xed\xa0\x80"}'),
    "payload: past U+10FFFF": submit_raw(b'{"s":"\xf4\x90\x80\x80"}'),
    "payload: five-byte form": submit_raw(b'{"s":"\xf8\x88\x80\x80\x80"}'),
    "payload: truncated at the end": submit_raw(b'{"s":"ok\xe2\x82"}'),
    "payload: in a key": submit_raw(b'{"k\xff":1}'),
    "payload: nested deep": submit_raw(b'{"a":[{"b":["\xe0\x80\x80"]}]}'),
    "payload: escaped lone surrogate": submit_raw(b'{"s":"\\ud800"}'),
    "payload: escaped NUL": submit_raw(b'{"s":"a\\u0000b"}'),
}


class InvalidUtf8(HostileTestCase):

    def test_invalid_utf8_is_refused_everywhere(self):
        """Invalid UTF-8 in a method name, a parameter, a payload (raw bytes or
        escapes that decode to no character) is InvalidMessage: no job is
        accepted, and the connection stays usable."""
        c = self.hostile()
        for name, msg in INVALID_UTF8.items():
            with self.subTest(case=name):
                c.send_raw(msg)
                self.assertError(c.recv(), IFACE + ".InvalidMessage")
                self.assertReply(c.call(GET_INFO))
        self.assert_good()
        self.assertEqual(self.stats(c, "work")["accepted"], self.good.rounds)

    def test_valid_utf8_at_the_edges_is_kept_exactly(self):
        """The largest code points of each length go through a job unchanged
        (the refusals above are not a refusal of everything outside ASCII)."""
        c = self.hostile()
        text = "\u007f\u0080\u07ff\u0800\uffff\U00010000\U0010ffff\u00e9"
        # Sent as raw UTF-8 bytes, not \u escapes.
        c.send_raw(submit_raw(json.dumps({"s": text}, ensure_ascii=False).encode()))
        job_id = self.assertReply(c.recv())["id"]
        self.assertEqual(self.wait_job(c, job_id)["payload"], {"s": text})


# ---- clients that never read -------------------------------------------------------


class NeverReads(HostileTestCase):
    daemon_keys = {"MaxOutputBuffer": "64KiB", "RetainJobs": 1000}

    def test_submitter_that_never_reads_is_cut_off(self):
        """A client that pipelines SubmitBatch calls and never reads a reply is
        closed once 64 KiB of replies wait (the log says so); the good client
        is served meanwhile; memory stays within the output limit and the
        finished jobs kept."""
        greedy = self.hostile()
        batch = greedy.encode_call(IFACE + ".SubmitBatch",
                                   {"pipeline": "work", "payloads": [{}] * 100})
        sent = 0
        cut = False
        # Each reply is ~500 bytes; the socket buffers hold a few hundred
        # KiB: 20,000 batches (2 million jobs) is far past where it must stop.
        while sent < 20000:
            try:
                greedy.send_raw(batch * 10)
            except (BrokenPipeError, ConnectionResetError):
                cut = True
                break
            sent += 10
            if sent % 200 == 0:
                self.assert_good()
        self.assertTrue(cut, "the daemon kept answering after %d unread batches" % sent)
        self.assertRegex(self.daemon.stderr(),
                         r"connection \d+: over 65536 bytes of replies unread; closing it")
        greedy.close()
        self.assert_good()
        # The output limit twice (the buffer being written and the one
        # collecting), 1000 finished jobs kept (~200 bytes each), the
        # mailbox and queues in between: 8 MiB is a generous bound.
        self.assert_rss_under(8 * MIB // KIB, "64 KiB x 2 of output, 1000 jobs kept")
        self.assert_fds_back()

    def test_many_never_reading_clients_at_once(self):
        """20 clients that never read are each cut off; memory stays within
        20 x the output limit (x2 for the swap buffer) plus the jobs kept."""
        greedy = [self.hostile() for _ in range(20)]
        batch = greedy[0].encode_call(IFACE + ".SubmitBatch",
                                      {"pipeline": "work", "payloads": [{}] * 100})
        cut = [False] * len(greedy)
        for rounds in range(2000):
            for i, g in enumerate(greedy):
                if cut[i]:
                    continue
                try:
                    g.send_raw(batch * 5)
                except (BrokenPipeError, ConnectionResetError):
                    cut[i] = True
            if all(cut):
                break
            if rounds % 100 == 0:
                self.assert_good()
        self.assertTrue(all(cut), cut)
        self.assertEqual(len(self.daemon.stderr().split("replies unread")) - 1, len(greedy))
        self.assert_rss_under(20 * 2 * 64 + 8 * MIB // KIB, "20 x 2 x 64 KiB, jobs kept")
        for g in greedy:
            g.close()
        self.assert_fds_back()
        self.assert_good()


# ---- connect / close storm --------------------------------------------------------------


class ConnectCloseStorm(HostileTestCase):

    def test_10000_connect_close_cycles(self):
        """10,000 connections, each closed at once, after half a message, after
        a call whose reply it never reads, or after a half-close: no fd and no
        connection buffer is left behind (RSS does not grow with the count)."""
        shapes = [
            lambda c: None,
            lambda c: c.send_raw(b'{"method":"io.pipelined.St'),
            lambda c: c.send_call(IFACE + ".Stats", {"pipeline": "work"}),
            lambda c: (c.send_call(GET_INFO), c.sock.shutdown(socket.SHUT_WR),
                       c.wait_eof()),
        ]
        rss_at_1000 = None
        for i in range(10000):
            c = RawConnection(self.daemon.sock)
            try:
                shapes[i % len(shapes)](c)
            finally:
                c.close()
            if i % 1000 == 999:
                self.assert_good()
                if rss_at_1000 is None:
                    self.assert_fds_back()
                    rss_at_1000 = proc_status(self.pid)["VmRSS"]
        self.assert_fds_back()
        # 9,000 more connections after the first 1,000: a leaked frame
        # buffer (4 KiB) each would be 36 MiB; allow 4 MiB of noise.
        rss = proc_status(self.pid)["VmRSS"]
        if MEMORY_CHECKED:
            self.assertLess(rss - rss_at_1000, 4 * MIB // KIB,
                            "VmRSS %d KiB after 10,000 connections, %d after 1,000"
                            % (rss, rss_at_1000))
        self.assert_good()


    def test_a_burst_past_the_accept_batch_is_all_served(self):
        """100 connections that arrive at once (the daemon stopped while they
        queue in its backlog) are accepted 8 per loop turn, and every one of
        them is served: those left for a later turn are not forgotten."""
        self.daemon.signal(signal.SIGSTOP)
        try:
            burst = [self.hostile() for _ in range(100)]
            for c in burst:
                c.send_call(GET_INFO)
            self.good.conn.send_call(IFACE + ".Stats", {"pipeline": "work"})
        finally:
            self.daemon.signal(signal.SIGCONT)
        self.assertEqual(self.stats_reply(self.good.conn.recv()), "work")
        for c in burst:
            self.assertEqual(self.assertReply(c.recv())["product"], "pipelined")
            c.close()
        self.assert_fds_back()
        self.assert_good()

    def stats_reply(self, reply):
        return self.assertReply(reply)["pipelines"][0]["name"]


PACED_RATE = 20   # MaxConnectionRate= of the test below: new connections a second
ACCEPT_BURST = 128  # daemon/server.c: accepted at once before pacing begins


class PacedAccepts(HostileTestCase):
    """MaxConnectionRate=: past a burst, new connections wait in the listen
    backlog and are accepted at the configured rate; the connected client is
    served meanwhile, and each waiting connection in the end."""

    daemon_keys = {"MaxConnectionRate": PACED_RATE}

    def test_connections_past_the_rate_wait_and_are_all_served(self):
        """149 connections opened as fast as they go, a call on each: every
        one is answered, and not before the pacing allows (129 at once, then
        20 a second: the last no sooner than 1 s after the first connect,
        however fast the machine). One warning names the key."""
        n = ACCEPT_BURST + 1 + PACED_RATE
        t0 = time.monotonic()
        # Past the backlog (128), a connect() waits for the daemon to accept.
        crowd = [self.hostile() for _ in range(n)]
        for c in crowd:
            c.send_call(GET_INFO)
        self.assert_good()  # the connected client is not held behind them
        for c in crowd:
            self.assertEqual(self.assertReply(c.recv())["product"], "pipelined")
        elapsed = time.monotonic() - t0
        # A lower bound only: a slow machine makes it longer, never shorter.
        least = (n - ACCEPT_BURST - 1) / PACED_RATE
        self.assertGreaterEqual(elapsed, least,
                                "%d connections served in %.3f s: no pacing at %d a second"
                                % (n, elapsed, PACED_RATE))
        self.assertEqual(self.daemon.stderr().count(
            "new connections arrive faster than MaxConnectionRate=20 a second"), 1,
            self.daemon.stderr())
        for c in crowd:
            c.close()
        self.assert_fds_back()
        self.assert_good()


class PacedThenRaised(HostileTestCase):
    """A reload that raises MaxConnectionRate= takes effect at once: the
    debt run up at the old rate does not hold the new one back."""

    daemon_keys = {"MaxConnectionRate": 1}

    def test_a_raised_rate_applies_to_connections_already_waiting(self):
        """At 1 a second, 129 connections get in at once and 10 more wait (about
        129 s of debt); after a reload to 5,000 a second those 10 are served
        at once. (With the debt kept they would wait past the hang guard.)"""
        crowd = [self.hostile() for _ in range(ACCEPT_BURST + 1 + 10)]
        for c in crowd:
            c.send_call(GET_INFO)
        self.daemon.write_config(PIPELINES, Durability="none", MaxConnectionRate=5000)
        self.assertReply(self.good.conn.call(IFACE + ".Reload"))
        for c in crowd:
            self.assertEqual(self.assertReply(c.recv())["product"], "pipelined")
            c.close()
        self.assert_fds_back()


# ---- half-closed peers ------------------------------------------------------------------


class HalfClosed(HostileTestCase):

    def test_half_close_after_calls_gets_every_reply(self):
        """Submit and GetJob then shutdown(SHUT_WR): both replies, then EOF."""
        c = self.hostile()
        c.send_call(IFACE + ".Submit", {"pipeline": "work", "payload": {"x": 1}})
        c.send_call(IFACE + ".Stats", {"pipeline": "work"})
        c.sock.shutdown(socket.SHUT_WR)
        messages = c.wait_eof()
        self.assertEqual(len(messages), 2, messages)
        job_id = self.assertReply(messages[0])["id"]
        self.assertEqual(self.assertReply(messages[1])["pipelines"][0]["name"], "work")
        # GetJob shows the payload once the job has ended: wait for that
        # (a GetJob at once raced the worker on a slow build).
        self.assertEqual(self.wait_job(self.good.conn, job_id)["payload"], {"x": 1})
        self.assert_fds_back()

    def test_a_watch_after_the_end_of_input_ends_the_connection(self):
        """WaitJob, Watch, then shutdown(SHUT_WR): the Watch is taken only once
        the WaitJob is answered, after the end of input; it ends at once (no
        second EOF will come to end it) and the daemon closes."""
        self.pause(self.good.conn, "held", "first")
        job = self.submit(self.good.conn, "held")
        c = self.hostile()
        c.send_call(IFACE + ".WaitJob", {"id": job})
        c.send_call(IFACE + ".Watch", {"pipeline": "held"}, more=True)
        c.sock.shutdown(socket.SHUT_WR)
        self.resume(self.good.conn, "held", "first")
        messages = c.wait_eof()
        self.assertEqual(self.assertReply(messages[0])["job"]["state"], "done")
        self.assert_fds_back()

    def test_half_close_inside_a_message(self):
        """A whole call, half of another, then shutdown(SHUT_WR): the reply to
        the first, InvalidMessage saying the connection ended inside a
        message, then EOF; the daemon gives the fd back."""
        c = self.hostile()
        c.send_call(GET_INFO)
        c.send_raw(b'{"method":"io.pipelined.Stats","parameters":{"pipe')
        c.sock.shutdown(socket.SHUT_WR)
        messages = c.wait_eof()
        self.assertEqual(len(messages), 2, messages)
        self.assertReply(messages[0])
        p = self.assertError(messages[1], IFACE + ".InvalidMessage")
        self.assertIn("ended inside a message", p["reason"])
        self.assert_fds_back()
        self.assert_good()

    def test_half_close_after_a_trailing_newline(self):
        """A call, its NUL, then a newline (as `echo` adds) and a half-close:
        the reply and EOF, no error for the blank tail."""
        c = self.hostile()
        c.send_raw(c.encode_call(GET_INFO) + b"\n \t\r\n")
        c.sock.shutdown(socket.SHUT_WR)
        messages = c.wait_eof()
        self.assertEqual(len(messages), 1, messages)
        self.assertReply(messages[0])
        self.assert_fds_back()

    def test_hang_up_inside_a_message_gives_the_fd_back(self):
        """Peers that close altogether in the middle of a message (100 of
        them) leave no fd behind."""
        for _ in range(100):
            c = self.hostile()
            c.send_raw(b'{"method":"io.pipelined.Stats"')
            c.close()
        self.assert_fds_back()
        self.assert_good()

    def test_half_close_inside_a_message_behind_a_held_call(self):
        """A WaitJob that is held, half a message after it, then a half-close:
        the WaitJob is answered when its job ends, then InvalidMessage, EOF."""
        self.pause(self.good.conn, "held", "first")
        job_id = self.submit(self.good.conn, "held")
        c = self.hostile()
        c.send_call(IFACE + ".WaitJob", {"id": job_id})
        c.send_raw(b'{"method":"org.varlink')
        c.sock.shutdown(socket.SHUT_WR)
        self.assert_good()
        self.resume(self.good.conn, "held", "first")
        messages = c.wait_eof()
        self.assertEqual([m.get("error") for m in messages], [None, IFACE + ".InvalidMessage"])
        self.assertEqual(messages[0]["parameters"]["job"]["state"], "done")
        self.assert_fds_back()


# ---- a daemon out of file descriptors ------------------------------------------------------

FD_LIMIT = 64


class LimitedDaemon(Daemon):
    """A daemon started under `prlimit --nofile=SOFT:HARD` (prlimit execs it:
    the pid is the daemon's); both FD_LIMIT unless set."""

    soft = hard = FD_LIMIT

    def spawn(self, *extra_args, socket_path=None):
        args = ["prlimit", "--nofile=%d:%d" % (self.soft, self.hard), "--", PIPELINED,
                "-c", self.conf, "--socket", socket_path or self.sock] + list(extra_args)
        with open(self.stderr_path, "ab") as err, open(self.stdout_path, "ab") as out:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         cwd=self.dir)
        return self.proc


@unittest.skipUnless(shutil.which("prlimit"), "prlimit (util-linux) is not installed")
class OutOfFds(E2ETestCase):

    def test_the_soft_limit_is_raised_within_the_hard_one(self):
        """Started with 64 open files allowed softly and 8192 hard, the
        daemon runs with MaxConnections=4096 plus 1024 spare (not the hard
        limit: the programs it runs inherit the soft one), and does not warn."""
        d = LimitedDaemon(self, PIPELINES, Durability="none")
        d.soft, d.hard = FD_LIMIT, 8192
        self.addCleanup(d.stop)
        self.daemons = [d]
        d.start()
        with open("/proc/%d/limits" % d.proc.pid) as f:
            self.assertRegex(f.read(), r"Max open files\s+5120\s+8192")
        self.assertNotIn("open files limit", d.stderr())
        GoodClient(self, d).round()

    def test_more_clients_than_fds(self):
        """Under a 64-fd limit, 200 clients: the daemon warns at start, serves
        those it can, closes the rest at once (libuv's EMFILE trick) without
        spinning, keeps serving the good client's connection, and serves new
        clients again once the crowd leaves."""
        d = LimitedDaemon(self, PIPELINES, Durability="none")
        self.addCleanup(d.stop)
        self.daemons = [d]
        d.start()
        pid = d.proc.pid
        with open("/proc/%d/limits" % pid) as f:
            self.assertRegex(f.read(), r"Max open files\s+%d\s+%d" % (FD_LIMIT, FD_LIMIT))
        self.assertIn("the open files limit (%d) is below MaxConnections=4096" % FD_LIMIT,
                      d.stderr())
        good = GoodClient(self, d)
        good.round()
        base = fd_count(pid)
        crowd = []
        for _ in range(200):
            crowd.append(RawConnection(d.sock))
        self.addCleanup(lambda: [c.close() for c in crowd])
        wait_until(lambda: fd_count(pid) >= FD_LIMIT, "the daemon at its fd limit")
        # Those accepted are served; the rest see EOF (or a reset) at once.
        served = refused = 0
        for c in crowd:
            try:
                c.send_call(GET_INFO)
                self.assertReply(c.recv())
                served += 1
            except (ConnectionClosed, BrokenPipeError, ConnectionResetError):
                refused += 1
        self.assertEqual(served + refused, len(crowd))
        self.assertGreater(served, 0)
        self.assertGreater(refused, 0)
        good.round()
        # At the limit, with connections still knocking, the daemon must
        # wait, not spin: a busy loop would use about one CPU-second per
        # second. 200 more attempts, then an idle stretch of at least 2 s.
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        for _ in range(200):
            try:
                RawConnection(d.sock).close()
            except OSError:
                pass
        # (libuv's trick closes its reserve fd for a moment: wait.)
        wait_until(lambda: fd_count(pid) == FD_LIMIT, "the daemon still at its fd limit")
        wait_until(lambda: time.monotonic() - t0 >= 2.0, "2 s at the limit")
        used, wall = cpu_seconds(pid) - cpu0, time.monotonic() - t0
        self.assertLess(used, 0.5 * wall, "the daemon used %.2f CPU-s in %.2f s at its fd "
                        "limit: a busy loop" % (used, wall))
        good.round()
        for c in crowd:
            c.close()
        wait_until(lambda: fd_count(pid) <= base, "the daemon's fds back to %d" % base)
        good.round()
        good.fresh_round()


if __name__ == "__main__":
    unittest.main()
