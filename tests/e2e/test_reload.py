"""Reload off the loop: the configuration file is read on a pool thread while
the loop goes on serving; one load at a time, requests made during a load
coalesced into one more; a shutdown or a hang-up during a load.

The file is made a FIFO once the daemon has started: a load opening it
blocks until the test opens the write end, and then reads until the test
writes the new configuration and closes it. So the test, not a clock,
decides how long a load lasts, and it can tell when a load has started (a
non-blocking open for writing succeeds only while a reader has the FIFO
open: ENXIO otherwise)."""

import errno
import os
import pwd
import signal
import socket

from harness import HANG_GUARD, IFACE, E2ETestCase, make_config, stage, wait_until

PIPELINES = {"p": [stage("a", "noop")]}
UPPERCASE = os.environ.get("PIPELINED_PLUGIN_UPPERCASE")

# How long a Stats may take while a load is blocked. Only a hang guard, for
# the broken case (a load on the loop thread: nothing is answered until the
# FIFO is released, and without this the test would wait HANG_GUARD, then the
# cleanup HANG_GUARD more for the SIGTERM). Generous for a sanitizer build
# on a busy machine.
LOOP_GUARD = 30.0


def names(stats_reply):
    return [p["name"] for p in stats_reply["pipelines"]]


class ConfigFifo:
    """The daemon's configuration file, replaced by a FIFO."""

    def __init__(self, test, daemon):
        self.daemon = daemon
        self.fd = None
        os.unlink(daemon.conf)
        os.mkfifo(daemon.conf)
        test.addCleanup(self.release)  # runs before the daemon's stop

    def wait_load(self):
        """Waits until a load has the FIFO open for reading and keeps the
        write end: the load then waits in read() until feed."""
        assert self.fd is None, "a load already waits for feed"
        def try_open():
            try:
                return (os.open(self.daemon.conf, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC),)
            except OSError as e:
                if e.errno != errno.ENXIO:  # no reader yet
                    raise
                return None
        self.fd = wait_until(try_open, "a configuration load opens the file")[0]

    def feed(self, pipelines, **daemon):
        """Hands the waiting load a configuration with pipelines (and the
        [daemon] keys daemon), and the end of the file."""
        data = make_config(pipelines, self.daemon.state_dir, **daemon).encode()
        while data:
            data = data[os.write(self.fd, data):]
        os.close(self.fd)
        self.fd = None

    def release(self):
        """Cleanup (a test that failed midway): a load blocked in open() or
        read() gets the end of the file, and later ones a regular file, so
        that stopping the daemon does not wait on the FIFO."""
        if not os.path.exists(self.daemon.conf) or os.path.isfile(self.daemon.conf):
            return
        rw = os.open(self.daemon.conf, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self.daemon.write_config(PIPELINES)  # replaces the FIFO
        os.close(rw)
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class ReloadOffTheLoop(E2ETestCase):

    def setUp(self):
        self.daemon = self.start_daemon(PIPELINES)
        self.fifo = ConfigFifo(self, self.daemon)

    def answered_by_the_loop(self, conn, data):
        """Sends data (encoded calls) on conn and returns the first reply,
        failing after LOOP_GUARD (not HANG_GUARD)."""
        conn.send_raw(data)
        conn.sock.settimeout(LOOP_GUARD)
        try:
            return conn.recv()
        except AssertionError:
            self.fail("no answer within %.0f s while a reload read the file: "
                      "the load blocks the loop" % LOOP_GUARD)
        finally:
            conn.sock.settimeout(HANG_GUARD)

    def test_the_loop_serves_others_while_a_load_waits(self):
        """While a Reload's load is blocked reading the file, another connection's
        Stats and GetInfo are answered and the Reload is not; once the file is
        written the Reload's reply has the changes."""
        a = self.connect(self.daemon)
        a.send_call(IFACE + ".Reload")
        self.fifo.wait_load()
        b = self.connect(self.daemon)
        stats = self.answered_by_the_loop(b, b.encode_call(IFACE + ".Stats"))
        self.assertEqual(names(self.assertReply(stats)), ["p"])
        self.assertReply(self.answered_by_the_loop(b, b.encode_call("org.varlink.service.GetInfo")))
        # No reply to A can exist yet, and none can be on its way: the load
        # waits in read() for bytes only this test can write. A reply sent
        # early (before the load completed) would have been written while
        # the daemon handled A's call, with a direct write to the socket,
        # in the loop turn that started the load; B's Stats was sent only
        # after the load had opened the file, so it was read in a later
        # turn, and A's socket already held any such reply when B's answer
        # came back.
        self.assertFalse(a.has_message(), "a reply to Reload before its load completed")
        self.fifo.feed(dict(PIPELINES, fresh=[stage("x", "noop")]))
        self.assertEqual(self.assertReply(a.recv()),
                         {"added": ["fresh"], "removed": [], "replaced": [], "rescaled": []})
        self.assertEqual(names(self.ok(b, IFACE + ".Stats")), ["p", "fresh"])

    def test_requests_during_a_load_get_one_more_load(self):
        """A Reload and a SIGHUP made while a load is blocked are not answered with
        that load's result (it may have read the file before them): one more
        load starts when it completes, and B's reply shows what that one read."""
        a = self.connect(self.daemon)
        a.send_call(IFACE + ".Reload")
        self.fifo.wait_load()
        # B's Reload is registered before the first load can complete: both
        # calls go in one send, so the daemon reads them in one read and
        # handles both in that callback; the GetInfo reply is written in it,
        # so once it is here the Reload has been seen (the first load's
        # completion runs on the loop too, and only after the test writes
        # the file, below).
        b = self.connect(self.daemon)
        self.assertReply(self.answered_by_the_loop(
            b, b.encode_call("org.varlink.service.GetInfo") + b.encode_call(IFACE + ".Reload")))
        # The SIGHUP: its log line is written by the callback that records
        # the request.
        self.daemon.signal(signal.SIGHUP)
        wait_until(lambda: "SIGHUP: reloading" in self.daemon.stderr(), "the SIGHUP is handled")
        self.fifo.feed(dict(PIPELINES, first=[stage("x", "noop")]))
        self.assertEqual(self.assertReply(a.recv()),
                         {"added": ["first"], "removed": [], "replaced": [], "rescaled": []})
        # B waits for the second load, which waits for the test: no reply yet.
        self.assertFalse(b.has_message(), "B answered with the first load's result")
        self.fifo.wait_load()  # the second load started on its own
        self.fifo.feed(dict(PIPELINES, second=[stage("x", "noop")]))
        self.assertEqual(self.assertReply(b.recv()),
                         {"added": ["second"], "removed": ["first"], "replaced": [],
                          "rescaled": []})
        c = self.connect(self.daemon)
        self.assertEqual(names(self.ok(c, IFACE + ".Stats")), ["p", "second"])
        log = self.daemon.stderr()
        self.assertEqual(log.count("configuration reloaded from"), 2, log)

    def test_shutdown_during_a_load(self):
        """A shutdown while a load is blocked: the Reload caller gets ShuttingDown
        at once, the daemon waits for the load, discards it and exits 0."""
        a = self.connect(self.daemon)
        a.send_call(IFACE + ".Reload")
        self.fifo.wait_load()
        c = self.connect(self.daemon)
        self.assertReply(self.answered_by_the_loop(c, c.encode_call(IFACE + ".Shutdown")))
        self.assertError(a.recv(), IFACE + ".ShuttingDown")
        # The load still waits for the test: the daemon cannot have exited.
        self.assertIsNone(self.daemon.proc.poll(), "exited with a load still running")
        self.fifo.feed(dict(PIPELINES, late=[stage("x", "noop")]))
        self.assertEqual(self.daemon.wait_exit(), 0)
        log = self.daemon.stderr()
        self.assertIn("reload discarded: the daemon is shutting down", log)
        self.assertNotIn("configuration reloaded", log)

    def test_a_load_that_never_returns_cannot_outlast_the_deadline(self):
        """A shutdown with a deadline while a load is blocked (a name lookup
        that never returns, say): once the deadline passes the daemon exits
        with status 1, saying why, without the load."""
        self.connect(self.daemon).send_call(IFACE + ".Reload")
        self.fifo.wait_load()
        c = self.connect(self.daemon)
        self.assertReply(c.call(IFACE + ".Shutdown", {"timeout_ms": 200}))
        self.daemon.expected_status = 1
        self.assertEqual(self.daemon.wait_exit(), 1)
        self.assertIn("shutdown deadline passed while a configuration load still runs",
                      self.daemon.stderr())

    def test_caller_hangs_up_during_a_load(self):
        """The Reload caller's connection goes away while its load is blocked:
        the daemon goes on serving, and applies the load when it completes."""
        for how in ("reset", "eof"):
            with self.subTest(how=how):
                a = self.connect(self.daemon)
                if how == "reset":
                    # A reply left unread when A closes makes the daemon's
                    # next read fail (ECONNRESET): it closes A at once, with
                    # the Reload held.
                    a.send_raw(a.encode_call("org.varlink.service.GetInfo") +
                               a.encode_call(IFACE + ".Reload"))
                    self.assertTrue(a.sock.recv(1, socket.MSG_PEEK), "GetInfo answered")
                else:
                    # A plain end of input: the held call is answered (the
                    # write fails), then the connection is closed.
                    a.send_call(IFACE + ".Reload")
                self.fifo.wait_load()
                a.close()
                b = self.connect(self.daemon)
                self.assertIn("p", names(self.assertReply(
                    self.answered_by_the_loop(b, b.encode_call(IFACE + ".Stats")))))
                self.fifo.feed(dict(PIPELINES, **{how: [stage("x", "noop")]}))
                wait_until(lambda: how in names(self.ok(b, IFACE + ".Stats")),
                           "the load is applied")

    def test_plugin_and_names_are_loaded_off_the_loop(self):
        """What config_load does besides reading (a plugin's test load with
        dlopen, a user name looked up through NSS) runs on the pool thread
        too (under the sanitizers, with the loop serving meanwhile), and the
        result works: the plugin's pipeline runs jobs."""
        if not UPPERCASE:
            self.skipTest("plugin paths not given (run through meson test)")
        a = self.connect(self.daemon)
        a.send_call(IFACE + ".Reload")
        self.fifo.wait_load()
        b = self.connect(self.daemon)
        self.assertReply(self.answered_by_the_loop(b, b.encode_call(IFACE + ".Stats")))
        # The test's own user, by name: the daemon's uid may call everything
        # whatever the lists say, so this test's calls stay allowed.
        me = pwd.getpwuid(os.geteuid()).pw_name
        self.fifo.feed(dict(PIPELINES, up=[stage("u", Plugin=UPPERCASE, PluginArg="t")]),
                       AllowUsers=me)
        self.assertEqual(self.assertReply(a.recv())["added"], ["up"])
        self.assertIn("access: every method for", self.daemon.stderr())
        job = self.wait_job(b, self.submit(b, "up", {"t": "abc"}))
        self.assertEqual(job["payload"], {"t": "ABC"})
