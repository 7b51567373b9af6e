"""systemd integration: sd_notify (READY, STATUS, RELOADING, STOPPING), the
watchdog and its per-worker heartbeats, socket activation, journal priority
prefixes, and the unit files in packaging/ (systemd-analyze verify and
security).

systemd is not PID 1 here: the tests play its part. A NotifySocket is an
AF_UNIX datagram socket in a temporary directory, given to the daemon as
NOTIFY_SOCKET; WATCHDOG_USEC and WATCHDOG_PID (set by a sh wrapper that execs
the daemon, so that $$ is its pid) turn the watchdog on; systemd-socket-activate
(package systemd) passes a listening socket.

No assertion depends on timing: the tests wait for messages and log lines;
where they check that pings stop, the daemon has said so in its log first,
and the gap checked is many ping intervals long.
"""

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
import unittest

from harness import (HANG_GUARD, IFACE, PIPELINED, PIPELINECTL, ROOT, Daemon, E2ETestCase,
                     have_pipelinectl, stage, wait_until)
from test_daemon import own_threads, switches, thread_state, waiting
from test_reload import ConfigFifo

BLOCKING = os.environ.get("PIPELINED_PLUGIN_BLOCKING")
PACKAGING = os.path.join(ROOT, "packaging")


class NotifySocket:
    """What systemd listens on for sd_notify: collects every datagram, each
    split into a dict of its KEY=VALUE lines, with the time it arrived."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="pipelined-notify-")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages = []  # (monotonic time, dict)
        self.lock = threading.Lock()
        self.closing = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.closing:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
            with self.lock:
                self.messages.append((time.monotonic(), fields))

    def close(self):
        self.closing = True
        self.thread.join()
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def all(self):
        with self.lock:
            return [m for _, m in self.messages]

    def count(self, key, value=None):
        return sum(1 for m in self.all() if key in m and (value is None or m[key] == value))

    def pings(self):
        return self.count("WATCHDOG", "1")

    def wait_for(self, predicate, what, start=0):
        """The first message (after the first `start` ones) for which
        predicate(fields) is true; returns (its index, fields)."""
        def find():
            for i, m in enumerate(self.all()[start:], start):
                if predicate(m):
                    return (i, m)
            return None
        return wait_until(find, what)

    def statuses(self):
        return [m["STATUS"] for m in self.all() if "STATUS" in m]


class SdDaemon(Daemon):
    """A Daemon started with a chosen environment and, optionally, through
    a wrapper (argv prefix) that execs it."""

    def __init__(self, test, pipelines=None, env=None, prefix=None, stderr=None, **daemon):
        super().__init__(test, pipelines, **daemon)
        self.env = env or {}
        self.prefix = prefix or []
        self.stderr_file = stderr

    def spawn(self, *extra_args, socket_path=None):
        args = self.prefix + [PIPELINED, "-c", self.conf, "--socket", socket_path or self.sock]
        args += list(extra_args)
        env = dict(os.environ)
        for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID",
                  "JOURNAL_STREAM"):
            env.pop(k, None)
        env.update(self.env)
        with open(self.stderr_path, "ab") as err, open(self.stdout_path, "ab") as out:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=self.stderr_file or err, cwd=self.dir, env=env)
        return self.proc


# Runs "$0" "$@" with WATCHDOG_PID set to its own pid (exec keeps the pid).
WATCHDOG_WRAPPER = ["/bin/sh", "-c", 'export WATCHDOG_PID=$$; exec "$0" "$@"']


class SystemdCase(E2ETestCase):

    def notify_socket(self):
        n = NotifySocket()
        self.addCleanup(n.close)
        return n

    def start_sd(self, pipelines, env=None, prefix=None, start=True, **daemon):
        d = SdDaemon(self, pipelines, env=env, prefix=prefix, **daemon)
        self.addCleanup(d.stop)
        self.daemons = getattr(self, "daemons", []) + [d]
        if start:
            d.start()
        return d

    def wait_log(self, d, text):
        return wait_until(lambda: text in d.stderr(), "%r in the daemon's log" % text)


class Notify(SystemdCase):
    """READY=1, STATUS=, RELOADING=1, STOPPING=1."""

    def test_ready_then_status_follows_the_work_then_stopping(self):
        """READY=1 once the socket answers, with a STATUS= line; STATUS= shows jobs
        queued and running while they are, then none (with the done count,
        thousands separated); STOPPING=1 at the end."""
        if not BLOCKING:
            self.skipTest("plugin paths not given (run through meson test)")
        n = self.notify_socket()
        release = os.path.join(tempfile.mkdtemp(prefix="pipelined-release-"), "go")
        self.addCleanup(shutil.rmtree, os.path.dirname(release), True)
        d = self.start_sd({"p": [stage("a", Plugin=BLOCKING, PluginArg=release, workers=2)],
                           "q": [stage("a", "noop", capacity=2000)]},
                          env={"NOTIFY_SOCKET": n.path})
        i, ready = n.wait_for(lambda m: "READY" in m, "READY=1")
        self.assertEqual(ready["READY"], "1")
        self.assertEqual(ready["STATUS"], "2 pipelines: 0 queued, 0 running, 0 done, 0 failed")
        c = self.connect(d)
        ids = self.submit_batch(c, "p", [{}] * 6)
        n.wait_for(lambda m: m.get("STATUS") == "2 pipelines: 4 queued, 2 running, 0 done, 0 failed",
                   "a STATUS= with 4 queued and 2 running")
        open(release, "w").close()
        self.wait_job(c, ids[-1])
        n.wait_for(lambda m: m.get("STATUS") == "2 pipelines: 0 queued, 0 running, 6 done, 0 failed",
                   "the STATUS= saying every job is done")
        # Thousands separators.
        for _ in range(2):
            self.submit_batch(c, "q", [{}] * 1000)
        self.drain(c, "q")
        n.wait_for(lambda m: m.get("STATUS") == "2 pipelines: 0 queued, 0 running, 2,006 done, "
                   "0 failed", "2,006 done")
        self.assertEqual(n.count("STOPPING"), 0)
        d.signal(signal.SIGTERM)
        self.assertEqual(d.wait_exit(), 0)
        n.wait_for(lambda m: m.get("STOPPING") == "1", "STOPPING=1")

    def test_stopping_is_sent_when_the_shutdown_begins(self):
        """SIGTERM while a job runs: STOPPING=1 arrives while the daemon still
        drains (it has not exited); then the job finishes and it exits 0. The
        same for the Shutdown method."""
        if not BLOCKING:
            self.skipTest("plugin paths not given (run through meson test)")
        for how in ("SIGTERM", "Shutdown"):
            with self.subTest(how=how):
                n = self.notify_socket()
                release = os.path.join(tempfile.mkdtemp(prefix="pipelined-release-"), "go")
                self.addCleanup(shutil.rmtree, os.path.dirname(release), True)
                d = self.start_sd({"hang": [stage("a", Plugin=BLOCKING, PluginArg=release)]},
                                  env={"NOTIFY_SOCKET": n.path})
                c = self.connect(d)
                job = self.submit(c, "hang")
                # Its worker busy (what STATUS= counts as running), not
                # only the job marked running a moment before.
                self.wait_stats(c, "hang", lambda s: s["stages"][0]["busy"] == 1, "job running")
                if how == "SIGTERM":
                    d.signal(signal.SIGTERM)
                else:
                    self.ok(c, IFACE + ".Shutdown")
                _, m = n.wait_for(lambda m: m.get("STOPPING") == "1", "STOPPING=1")
                self.assertTrue(m["STATUS"].startswith("stopping: 1 pipeline: 0 queued, "
                                                       "1 running"), m)
                self.assertIsNone(d.proc.poll(), "STOPPING=1 only came at the exit")
                open(release, "w").close()
                self.assertEqual(d.wait_exit(), 0)
                # The daemon's last message (its final STATUS=) read first:
                # a second STOPPING=1 before it would be counted.
                n.wait_for(lambda m: "1 done" in m.get("STATUS", ""), "the last STATUS=")
                self.assertEqual(n.count("STOPPING"), 1, n.all())
                d.stop()

    def test_reload_sends_reloading_then_ready(self):
        """SIGHUP, the Reload method, and a refused reload: each RELOADING=1 with
        MONOTONIC_USEC (CLOCK_MONOTONIC, between before and after), then READY=1."""
        n = self.notify_socket()
        d = self.start_sd({"p": [stage("a", "noop")]}, env={"NOTIFY_SOCKET": n.path})
        n.wait_for(lambda m: "READY" in m, "READY=1")

        def reload_and_check(trigger, what):
            start = len(n.all())
            before = time.monotonic_ns() // 1000
            trigger()
            i, m = n.wait_for(lambda m: "RELOADING" in m, "RELOADING=1 after " + what, start)
            after = time.monotonic_ns() // 1000
            self.assertEqual(m["RELOADING"], "1")
            self.assertTrue(before <= int(m["MONOTONIC_USEC"]) <= after, (before, m, after))
            _, r = n.wait_for(lambda m: "READY" in m, "READY=1 after " + what, i + 1)
            self.assertIn("STATUS", r)

        reload_and_check(lambda: d.signal(signal.SIGHUP), "SIGHUP")
        c = self.connect(d)
        reload_and_check(lambda: self.ok(c, IFACE + ".Reload"), "the Reload method")
        d.write_config(config_text="[daemon]\nStateDirectory = %s\nMaxConnections = many\n"
                       % d.state_dir)
        reload_and_check(lambda: self.assertEqual(
            c.call(IFACE + ".Reload").get("error"), "io.pipelined.ConfigInvalid"), "a refused reload")
        self.assertEqual(n.count("STOPPING"), 0)

    def test_reload_off_the_loop_notifies_each_load(self):
        """Loads on the pool thread: RELOADING=1 as each starts, READY=1 once it
        is applied, also for the load that follows a coalesced request; a
        shutdown during a load: STOPPING=1, and no READY=1 ever after it."""
        n = self.notify_socket()
        d = self.start_sd({"p": [stage("a", "noop")]}, env={"NOTIFY_SOCKET": n.path})
        n.wait_for(lambda m: "READY" in m, "READY=1")
        fifo = ConfigFifo(self, d)
        a, b = self.connect(d), self.connect(d)
        start = len(n.all())
        a.send_call(IFACE + ".Reload")
        fifo.wait_load()
        # Sent before the load was queued, so before it opened the file.
        i, _ = n.wait_for(lambda m: "RELOADING" in m, "RELOADING=1 of the first load", start)
        # B's Reload comes in the same read as its GetInfo: registered by the
        # time that is answered (see test_reload).
        b.send_raw(b.encode_call("org.varlink.service.GetInfo") + b.encode_call(IFACE + ".Reload"))
        self.assertReply(b.recv())
        self.assertFalse(any("READY" in m for m in n.all()[i:]), "READY=1 before the load ended")
        fifo.feed({"p": [stage("a", "noop")], "x": [stage("a", "noop")]})
        self.assertEqual(self.assertReply(a.recv())["added"], ["x"])
        # Both sent before A's reply: READY=1 of the first, RELOADING=1 of the second.
        j, _ = n.wait_for(lambda m: "READY" in m, "READY=1 of the first load", i + 1)
        k, _ = n.wait_for(lambda m: "RELOADING" in m, "RELOADING=1 of the second load", j + 1)
        fifo.wait_load()
        fifo.feed({"p": [stage("a", "noop")]})
        self.assertEqual(self.assertReply(b.recv())["removed"], ["x"])
        n.wait_for(lambda m: "READY" in m, "READY=1 of the second load", k + 1)
        # A third load, and a shutdown while it reads the file.
        a.send_call(IFACE + ".Reload")
        fifo.wait_load()
        self.ok(b, IFACE + ".Shutdown")
        self.assertEqual(a.recv().get("error"), IFACE + ".ShuttingDown")
        s, _ = n.wait_for(lambda m: "STOPPING" in m, "STOPPING=1")
        fifo.feed({"p": [stage("a", "noop")]})
        self.assertEqual(d.wait_exit(), 0)
        # The daemon's datagrams were queued before it exited; one of ours
        # after them says when every one of them has been read.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as t:
            t.sendto(b"TEST_SENTINEL=1", n.path)
        n.wait_for(lambda m: "TEST_SENTINEL" in m, "the sentinel")
        self.assertFalse(any("READY" in m for m in n.all()[s:]), n.all()[s:])
        self.assertEqual(n.count("RELOADING"), 3, n.all())
        d.stop()

    def test_an_idle_daemon_under_systemd_makes_no_wake_ups(self):
        """With NOTIFY_SOCKET (and no watchdog), once the last STATUS= says nothing
        is in flight, no thread of the daemon wakes up: the refresh timer has stopped."""
        n = self.notify_socket()
        d = self.start_sd({"p": [stage("a", "noop", workers=2)]}, env={"NOTIFY_SOCKET": n.path},
                          Durability="none")
        c = self.connect(d)
        self.submit_batch(c, "p", [{}] * 50)
        self.drain(c, "p")
        n.wait_for(lambda m: m.get("STATUS") == "1 pipeline: 0 queued, 0 running, 50 done, 0 failed",
                   "the STATUS= after the last job")
        pid = d.proc.pid
        tids = own_threads(pid)
        wait_until(lambda: all(thread_state(pid, t) == "S" and waiting(pid, t) for t in tids),
                   "every thread of the daemon waiting for work")
        before = {t: switches(pid, t) for t in tids}
        sent = len(n.all())
        # Not a timing assertion: a refresh timer still running (every
        # second) wakes the loop within this window on any machine.
        time.sleep(2.5)
        self.assertEqual({t: switches(pid, t) for t in tids}, before)
        self.assertEqual(len(n.all()), sent)

    def test_programs_do_not_inherit_what_systemd_tells_the_daemon(self):
        """NOTIFY_SOCKET, WATCHDOG_* and LISTEN_* are not in a stage program's environment."""
        n = self.notify_socket()
        script = os.path.join(tempfile.mkdtemp(prefix="pipelined-env-"), "env.sh")
        self.addCleanup(shutil.rmtree, os.path.dirname(script), True)
        with open(script, "w") as f:
            f.write("#!/bin/sh\nprintf '{\"env\":\"%s\"}' \"$(env | grep -E "
                    "'^(NOTIFY_SOCKET|WATCHDOG_|LISTEN_)' | tr '\\n' ' ')\"\n")
        os.chmod(script, 0o755)
        d = self.start_sd({"p": [stage("a", Exec=script)]}, prefix=WATCHDOG_WRAPPER,
                          env={"NOTIFY_SOCKET": n.path, "WATCHDOG_USEC": "60000000"})
        c = self.connect(d)
        job = self.wait_job(c, self.submit(c, "p"))
        self.assertEqual(job["state"], "done", job)
        self.assertEqual(job["payload"], {"env": ""})


class Watchdog(SystemdCase):
    """WATCHDOG=1 only while every stage makes progress."""

    INTERVAL = 1.0  # WATCHDOG_USEC, in seconds: a ping every 0.5 s

    def setUp(self):
        if not BLOCKING:
            self.skipTest("plugin paths not given (run through meson test)")
        self.notify = self.notify_socket()
        self.release = os.path.join(tempfile.mkdtemp(prefix="pipelined-release-"), "go")
        self.addCleanup(shutil.rmtree, os.path.dirname(self.release), True)
        self.daemon = self.start_sd(
            {"hang": [stage("a", Plugin=BLOCKING, PluginArg=self.release, workers=2)],
             "long": [stage("s", Exec="/bin/sleep 4")]},
            prefix=WATCHDOG_WRAPPER,
            env={"NOTIFY_SOCKET": self.notify.path,
                 "WATCHDOG_USEC": str(int(self.INTERVAL * 1e6))})
        self.conn = self.connect(self.daemon)

    def wait_pings(self, n):
        base = self.notify.pings()
        wait_until(lambda: self.notify.pings() >= base + n, "%d more WATCHDOG=1" % n)

    def test_pings_stop_while_a_stage_is_stuck_and_resume_after(self):
        """A plugin call that hangs: after the stale time the daemon logs which
        pipeline, stage, worker and job, and pings no more (checked over 8 ping
        intervals); STATUS= says STUCK; once released, pings resume."""
        d, n = self.daemon, self.notify
        self.wait_pings(2)  # an idle daemon pings
        job = self.submit(self.conn, "hang")
        self.wait_log(d, "watchdog pings stop")
        self.assertRegex(d.stderr(), r"pipeline hang, stage a: worker [12] \(thread \d+\) has "
                         r"been in job %d for \d+\.\d s without a sign of progress \(1 worker "
                         r"stuck in all\)" % job)
        # STATUS= says STUCK after the last ping: once it is read, every
        # ping sent before the stall has been counted.
        n.wait_for(lambda m: m.get("STATUS", "").startswith("STUCK: hang/a worker "),
                   "STATUS= STUCK")
        stopped_at = n.pings()
        time.sleep(8 * self.INTERVAL / 2)
        self.assertEqual(n.pings(), stopped_at, "a ping while the stage was stuck")
        self.assertTrue(any(s.startswith("STUCK: hang/a worker ") and "(job %d)" % job in s
                            for s in n.statuses()), n.statuses())
        self.assertEqual(d.stderr().count("watchdog pings stop"), 1, "logged once")
        open(self.release, "w").close()
        self.assertEqual(self.wait_job(self.conn, job)["state"], "done")
        self.wait_log(d, "watchdog pings resume")
        self.wait_pings(2)

    def test_a_long_running_program_is_not_stuck(self):
        """A program that runs for 4 watchdog intervals: its worker beats from
        the poll loop, pings go on, nothing is logged as stuck."""
        d, n = self.daemon, self.notify
        self.wait_pings(1)
        before = n.pings()
        job = self.wait_job(self.conn, self.submit(self.conn, "long"))
        self.assertEqual(job["state"], "done", job)
        self.assertNotIn("without a sign of progress", d.stderr())
        # About 8 pings in 4 s; 3 is far below what any machine sends.
        self.assertGreaterEqual(n.pings() - before, 3)

    def test_a_plugin_stuck_in_its_worker_setup_stops_the_pings(self):
        """A worker whose plugin's pipelined_worker_init hangs is stuck too."""
        n = self.notify_socket()
        release = self.release + ".init"
        d = self.start_sd({"slow": [stage("a", Plugin=BLOCKING, PluginArg="init:" + release)]},
                          prefix=WATCHDOG_WRAPPER,
                          env={"NOTIFY_SOCKET": n.path,
                               "WATCHDOG_USEC": str(int(self.INTERVAL * 1e6))})
        self.wait_log(d, "watchdog pings stop")
        self.assertRegex(d.stderr(), r"pipeline slow, stage a: worker 1 \(thread \d+\) has been "
                         r"in its plugin's worker setup for \d+\.\d s")
        stopped_at = n.pings()
        open(release, "w").close()
        self.wait_log(d, "watchdog pings resume")
        wait_until(lambda: n.pings() >= stopped_at + 2, "pings after the setup ended")
        # No job was in flight, so the status refresh never ran: STATUS=
        # must still stop saying STUCK.
        self.assertTrue(any(s.startswith("STUCK: slow/a worker 1") for s in n.statuses()),
                        n.statuses())
        wait_until(lambda: not n.statuses()[-1].startswith("STUCK"),
                   "a STATUS= without STUCK once the setup ended")
        c = self.connect(d)
        self.assertEqual(self.wait_job(c, self.submit(c, "slow"))["state"], "done")

    def test_the_watchdog_is_announced_only_for_this_process(self):
        """WATCHDOG_PID naming another process: no watchdog (sd_watchdog_enabled)."""
        n = self.notify_socket()
        d = self.start_sd({"p": [stage("a", "noop")]},
                          env={"NOTIFY_SOCKET": n.path, "WATCHDOG_USEC": "1000000",
                               "WATCHDOG_PID": "1"})
        n.wait_for(lambda m: "READY" in m, "READY=1")
        self.assertIn("watchdog: pinging every 0.500 s", self.daemon.stderr())
        self.assertNotIn("watchdog", d.stderr())
        # The setUp daemon (the same interval, with a watchdog) pings twice
        # meanwhile: a ping from this one would have come by then.
        self.wait_pings(2)
        self.assertEqual(n.pings(), 0)


class SocketActivation(SystemdCase):

    def setUp(self):
        self.activate = shutil.which("systemd-socket-activate")
        self.tmp = tempfile.mkdtemp(prefix="pipelined-sa-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def test_serves_on_the_passed_socket_and_leaves_it_in_place(self):
        """systemd-socket-activate -l PATH: the first connection starts the daemon,
        which serves it on the passed socket (its Socket= is the same path, as in
        a real installation: binding it would fail); at exit the socket file is
        still there."""
        if not self.activate:
            self.skipTest("systemd-socket-activate is not installed")
        path = os.path.join(self.tmp, "activated.sock")
        d = self.start_sd({"p": [stage("a", "noop")]}, prefix=[self.activate, "-l", path],
                          start=False)
        d.spawn(socket_path=path)
        # The file exists a moment before the socket listens: retry the
        # connect itself.
        def try_connect():
            try:
                return self.connect(path)
            except (FileNotFoundError, ConnectionRefusedError):
                return None
        c = wait_until(try_connect, "systemd-socket-activate listening")
        self.assertEqual(self.ok(c, "org.varlink.service.GetInfo")["product"], "pipelined")
        self.assertEqual(self.submit(c, "p"), 1)
        self.assertIn("listening on %s (passed by systemd)" % path, d.stderr())
        d.signal(signal.SIGTERM)
        self.assertEqual(d.wait_exit(), 0)
        self.assertTrue(stat.S_ISSOCK(os.stat(path).st_mode), "the passed socket was removed")

    def passed(self, sockets):
        """Starts the daemon with these sockets as fds 3, 4... (LISTEN_FDS,
        LISTEN_PID set by a sh wrapper) and returns it once it has exited."""
        redirs = " ".join("%d<&%d" % (3 + i, s.fileno()) for i, s in enumerate(sockets))
        wrapper = ["/bin/sh", "-c", 'export LISTEN_FDS=%d LISTEN_PID=$$; exec "$0" "$@" %s'
                   % (len(sockets), redirs)]
        d = self.start_sd({"p": [stage("a", "noop")]}, prefix=wrapper, start=False)
        fds = [s.fileno() for s in sockets]
        with open(d.stderr_path, "ab") as err, open(d.stdout_path, "ab") as out:
            env = dict(os.environ)
            env.pop("NOTIFY_SOCKET", None)
            d.proc = subprocess.Popen(wrapper + [PIPELINED, "-c", d.conf, "--socket", d.sock],
                                      stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                      cwd=d.dir, env=env, pass_fds=fds)
        d.expected_status = 1
        self.assertEqual(d.wait_exit(), 1, d.stderr())
        self.assertFalse(os.path.exists(d.sock))
        return d

    def test_a_wrong_socket_is_refused(self):
        """Not exactly one listening Unix stream socket: a clear error, exit 1,
        and a passed socket file is never removed."""
        def unix(kind, listen, name):
            s = socket.socket(socket.AF_UNIX, kind)
            s.bind(os.path.join(self.tmp, name))
            if listen:
                s.listen()
            self.addCleanup(s.close)
            return s

        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(tcp.close)
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        not_listening = "is not a listening Unix stream socket"
        cases = [
            ("datagram", [unix(socket.SOCK_DGRAM, False, "dgram")], not_listening),
            ("not listening", [unix(socket.SOCK_STREAM, False, "idle")], not_listening),
            ("tcp", [tcp], not_listening),
            ("two", [unix(socket.SOCK_STREAM, True, "one"), unix(socket.SOCK_STREAM, True, "two")],
             "systemd passed 2 sockets; pipelined takes exactly one"),
        ]
        for name, sockets, message in cases:
            with self.subTest(name):
                d = self.passed(sockets)
                self.assertIn("socket activation: ", d.stderr())
                self.assertIn(message, d.stderr())
                for s in sockets:
                    if s.family == socket.AF_UNIX:
                        self.assertTrue(os.path.exists(s.getsockname()))


class JournalStream(SystemdCase):

    def run_with_stderr_pipe(self, journal_stream):
        """Starts the daemon with stderr on a pipe; journal_stream(dev, ino) gives
        JOURNAL_STREAM. Reloads once with a warning and once refused, stops it,
        and returns everything it wrote to stderr."""
        r, w = os.pipe()
        st = os.fstat(w)
        chunks = []
        reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: os.read(r, 65536), b"")))
        reader.start()
        try:
            with os.fdopen(w, "wb") as wf:
                d = self.start_sd({"p": [stage("a", "noop")]}, stderr=wf,
                                  env={"JOURNAL_STREAM": journal_stream(st.st_dev, st.st_ino)})
            c = self.connect(d)
            # A warning (Socket= changes at restart only), then an error.
            d.write_config(config_text="[daemon]\nStateDirectory = %s\nSocket = %s\n"
                           "[pipeline p]\n[stage p/a]\nAction = noop\n"
                           % (d.state_dir, d.sock + ".new"))
            self.ok(c, IFACE + ".Reload")
            d.write_config(config_text="[daemon]\nStateDirectory = %s\nMaxConnections = many\n"
                           % d.state_dir)
            d.signal(signal.SIGHUP)
            wait_until(lambda: b"reload refused" in b"".join(chunks), "the refused reload logged")
            d.stop()
        finally:
            reader.join(HANG_GUARD)
            os.close(r)
        return b"".join(chunks).decode()

    def test_priority_prefixes_when_stderr_is_the_journal(self):
        """JOURNAL_STREAM naming stderr: "<6>", "<4>", "<3>" prefixes and no
        "pipelined:"; naming something else: the usual "pipelined: " lines."""
        text = self.run_with_stderr_pipe(lambda dev, ino: "%d:%d" % (dev, ino))
        lines = text.splitlines()
        self.assertTrue(lines and all(re.match(r"<[346]>\S", l) for l in lines), lines)
        self.assertTrue(any(l.startswith("<6>listening on ") for l in lines), lines)
        self.assertTrue(any(l.startswith("<4>reload: Socket= ") for l in lines), lines)
        self.assertTrue(any(l.startswith("<3>reload refused: ") for l in lines), lines)
        self.assertNotIn("pipelined:", text)

        text = self.run_with_stderr_pipe(lambda dev, ino: "%d:%d" % (dev, ino + 1))
        lines = text.splitlines()
        self.assertTrue(lines and all(l.startswith("pipelined: ") for l in lines), lines)
        self.assertIn("pipelined: warning: reload: Socket= ", text)
        self.assertIn("pipelined: error: reload refused: ", text)
        self.assertNotIn("<6>", text)


SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
EXPOSURE_MAX = 2.0


@unittest.skipUnless(SYSTEMD_ANALYZE, "systemd-analyze is not installed")
class Units(unittest.TestCase):
    """packaging/pipelined.service and .socket, checked by systemd-analyze."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="pipelined-units-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def copy_units(self):
        """The units, in a temporary directory, with ExecStart= and ExecReload=
        pointing at the built binaries (verify checks that they exist)."""
        for name in ("pipelined.service", "pipelined.socket"):
            with open(os.path.join(PACKAGING, name)) as f:
                text = f.read()
            text = text.replace("/usr/sbin/pipelined ", PIPELINED + " ")
            text = text.replace("/usr/bin/pipelinectl ", PIPELINECTL + " ")
            with open(os.path.join(self.tmp, name), "w") as f:
                f.write(text)
        return [os.path.join(self.tmp, n) for n in ("pipelined.service", "pipelined.socket")]

    def analyze(self, *args):
        env = dict(os.environ, SYSTEMD_LOG_LEVEL="notice", SYSTEMD_LOG_COLOR="0")
        return subprocess.run([SYSTEMD_ANALYZE] + list(args), capture_output=True, text=True,
                              timeout=HANG_GUARD, env=env, cwd=self.tmp)

    def test_verify_passes(self):
        """systemd-analyze verify: exit 0 and not a word of warning on either unit."""
        if not have_pipelinectl():
            self.skipTest("pipelinectl is not built")
        service, sock = self.copy_units()
        with open(service) as f:
            self.assertIn(PIPELINED + " ", f.read(), "ExecStart= was not rewritten")
        p = self.analyze("verify", "--man=no", service, sock)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr.strip(), "", "verify had something to say")

    def test_security_exposure(self):
        """systemd-analyze security --offline=yes rates the service at most 2.0."""
        service, _ = self.copy_units()
        p = self.analyze("security", "--offline=yes", "--no-pager", service)
        m = re.search(r"Overall exposure level for pipelined\.service: (\d+\.\d+)", p.stdout)
        self.assertIsNotNone(m, p.stdout + p.stderr)
        self.assertLessEqual(float(m.group(1)), EXPOSURE_MAX, p.stdout)


if __name__ == "__main__":
    unittest.main()
