"""harness.py -- what every end-to-end test shares.

The tests start the real pipelined (PIPELINED, a path) in a fresh temporary
directory, talk to it over its Unix socket with raw Varlink messages
(VarlinkConnection) and with the real pipelinectl (PIPELINECTL), and stop it
at the end of every test, checking that it exited as expected (0 after
SIGTERM): a sanitizer report makes the daemon exit non-zero, so it fails the
test that caused it.

No test waits for a fixed time. Tests wait for *state* (wait_until polls, for
example, Stats); the only time limits are hang guards (HANG_GUARD seconds)
that turn a daemon that never gets there into a failure instead of a hung
suite.
"""

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

PIPELINED = os.environ.get("PIPELINED") or os.path.join(ROOT, "build", "daemon", "pipelined")
PIPELINECTL = os.environ.get("PIPELINECTL") or os.path.join(ROOT, "build", "client", "pipelinectl")

# Hang guards, in seconds. Never a condition for passing: a test fails on
# one only when the state it waits for is never reached.
HANG_GUARD = 120.0
START_GUARD = 60.0

# proto/limits.h
MESSAGE_MAX = 1024 * 1024
DEPTH_MAX = 64
PAYLOAD_MAX = 64 * 1024
BATCH_MAX = 1000
LIST_MAX = 1000
WORKERS_MAX = 1024

IFACE = "io.pipelined"


def have_pipelinectl():
    return os.path.isfile(PIPELINECTL) and os.access(PIPELINECTL, os.X_OK)


# ---- configuration ----------------------------------------------------------


def stage(name, action=None, workers=None, capacity=None, **keys):
    """One stage of a pipeline, for make_config: a built-in Action=, or
    (action None) what keys say, e.g. Exec="/bin/true", Timeout="1s"."""
    return {"name": name, "action": action, "workers": workers, "capacity": capacity,
            "keys": keys}


def make_config(pipelines, state_dir, **daemon):
    """INI text for pipelined: a [daemon] section with StateDirectory and the
    keys given (e.g. MaxConnections=4), then each pipeline of the dict
    pipelines (name -> list of stage()) with its stages, in order."""
    lines = ["[daemon]", "StateDirectory = %s" % state_dir]
    for key, value in daemon.items():
        lines.append("%s = %s" % (key, value))
    for name, stages in pipelines.items():
        lines += ["", "[pipeline %s]" % name]
        for st in stages:
            lines += ["", "[stage %s/%s]" % (name, st["name"])]
            if st["action"] is not None:
                lines.append("Action = %s" % st["action"])
            for key, value in st.get("keys", {}).items():
                lines.append("%s = %s" % (key, value))
            if st["workers"] is not None:
                lines.append("Workers = %d" % st["workers"])
            if st["capacity"] is not None:
                lines.append("Capacity = %d" % st["capacity"])
    return "\n".join(lines) + "\n"


# ---- the daemon -------------------------------------------------------------


class Daemon:
    """One pipelined process in its own temporary directory.

    dir/pipelined.conf is its configuration, dir/sock its socket, dir/state
    its state directory, dir/stderr what it wrote to stderr. stop() (run by
    the test's cleanup) ends it with SIGTERM (SIGKILL if it hangs), checks
    its exit status against expected_status and removes the directory."""

    def __init__(self, test, pipelines=None, config_text=None, **daemon):
        self.test = test
        self.dir = tempfile.mkdtemp(prefix="pipelined-e2e-")
        self.conf = os.path.join(self.dir, "pipelined.conf")
        self.sock = os.path.join(self.dir, "sock")
        self.state_dir = os.path.join(self.dir, "state")
        self.stderr_path = os.path.join(self.dir, "stderr")
        self.stdout_path = os.path.join(self.dir, "stdout")
        self.proc = None
        self.status = None
        self.expected_status = 0
        self.stopped = False
        self.write_config(pipelines or {}, config_text, **daemon)

    def write_config(self, pipelines=None, config_text=None, **daemon):
        """Writes the configuration file (replacing it atomically)."""
        if config_text is None:
            config_text = make_config(pipelines or {}, self.state_dir, **daemon)
        tmp = self.conf + ".tmp"
        with open(tmp, "w") as f:
            f.write(config_text)
        os.replace(tmp, self.conf)

    def spawn(self, *extra_args, socket_path=None):
        """Starts the process without waiting for its socket."""
        args = [PIPELINED, "-c", self.conf, "--socket", socket_path or self.sock]
        args += list(extra_args)
        with open(self.stderr_path, "ab") as err, open(self.stdout_path, "ab") as out:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         cwd=self.dir)
        return self.proc

    def start(self):
        """Starts the daemon and returns once its socket accepts connections."""
        self.spawn()
        deadline = time.monotonic() + START_GUARD
        while True:
            if self.proc.poll() is not None:
                self.status = self.expected_status = self.proc.returncode
                self.test.fail("pipelined exited with status %d before listening:\n%s"
                               % (self.status, self.stderr()))
            if self.probe():
                return self
            if time.monotonic() > deadline:
                self.test.fail("pipelined did not listen on %s within %.0f s:\n%s"
                               % (self.sock, START_GUARD, self.stderr()))
            time.sleep(0.01)

    def probe(self):
        """True if the daemon answers a GetInfo on a new connection. The probe
        half-closes and reads until the daemon closes: by then the daemon no
        longer counts the connection (a test of MaxConnections needs that)."""
        try:
            c = VarlinkConnection(self.sock)
        except OSError:
            return False
        try:
            c.send_call("org.varlink.service.GetInfo")
            c.sock.shutdown(socket.SHUT_WR)
            replies = c.wait_eof()
            return len(replies) == 1 and "error" not in replies[0]
        except OSError:
            return False
        finally:
            c.close()

    def stderr(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum):
        self.proc.send_signal(signum)

    def wait_exit(self, guard=HANG_GUARD):
        """Waits for the process to exit on its own; returns its status. The
        hang guard fails the test (after a SIGKILL)."""
        try:
            self.status = self.proc.wait(timeout=guard)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.test.fail("pipelined did not exit within %.0f s:\n%s" % (guard, self.stderr()))
        return self.status

    def stop(self, check=True):
        """Cleanup: SIGTERM, wait, SIGKILL if it hangs; checks the exit status
        (unless check is false) and removes the directory. Fails the test on
        an unexpected status, printing the daemon's stderr (where sanitizer
        reports go). Only the first call does anything."""
        if self.stopped:
            return
        self.stopped = True
        problem = None
        try:
            if self.proc is not None and self.status is None:
                if self.proc.poll() is None:
                    self.proc.send_signal(signal.SIGTERM)
                    try:
                        self.proc.wait(timeout=HANG_GUARD)
                    except subprocess.TimeoutExpired:
                        self.proc.kill()
                        self.proc.wait()
                        problem = "pipelined did not exit within %.0f s of SIGTERM" % HANG_GUARD
                self.status = self.proc.returncode
            if problem is None and self.proc is not None and self.status != self.expected_status:
                problem = "pipelined exited with status %s, expected %s" % (
                    self.status, self.expected_status)
            if problem is None and self.proc is not None:
                # A sanitizer that reports but still exits 0 would hide here.
                text = self.stderr()
                for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                               "WARNING: ThreadSanitizer", "runtime error:"):
                    if marker in text:
                        problem = "pipelined's stderr has a sanitizer report"
                        break
            if problem is not None and check:
                self.test.fail("%s\n--- pipelined stderr ---\n%s--- end ---"
                               % (problem, self.stderr()))
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


# ---- a Varlink connection ---------------------------------------------------


class ConnectionClosed(Exception):
    """The daemon closed the connection (EOF or reset) while we read."""


class VarlinkConnection:
    """A raw Varlink client: NUL-terminated JSON messages over a Unix socket.
    Every blocking read has the hang guard as its timeout."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(HANG_GUARD)
        try:
            self.sock.connect(path)
        except BaseException:
            self.sock.close()
            raise
        self.buf = b""
        self.closed = False

    def close(self):
        if not self.closed:
            self.closed = True
            self.sock.close()

    # -- sending

    @staticmethod
    def encode_call(method, params=None, more=False, oneway=False):
        msg = {"method": method}
        if params is not None:
            msg["parameters"] = params
        if more:
            msg["more"] = True
        if oneway:
            msg["oneway"] = True
        return json.dumps(msg, separators=(",", ":")).encode() + b"\0"

    def send_raw(self, data):
        """Sends bytes as they are (no NUL added)."""
        self.sock.sendall(data)

    def send_call(self, method, params=None, more=False, oneway=False):
        """Sends a call without reading its reply (pipelining)."""
        self.sock.sendall(self.encode_call(method, params, more, oneway))

    def call(self, method, params=None, more=False, oneway=False):
        """Sends a call and returns its reply (a dict), or None for oneway."""
        self.send_call(method, params, more, oneway)
        if oneway:
            return None
        return self.recv()

    # -- receiving

    def _fill(self):
        try:
            data = self.sock.recv(1 << 20)
        except ConnectionResetError:
            data = b""
        except socket.timeout:
            raise AssertionError("no message from pipelined within %.0f s" % HANG_GUARD)
        if not data:
            raise ConnectionClosed("the daemon closed the connection")
        self.buf += data

    def recv_raw(self):
        """The next message's bytes, without the NUL."""
        while b"\0" not in self.buf:
            self._fill()
        msg, _, self.buf = self.buf.partition(b"\0")
        return msg

    def recv(self):
        """The next message, parsed."""
        return json.loads(self.recv_raw().decode("utf-8"))

    def has_message(self):
        """True if a whole message has already arrived (does not block)."""
        if b"\0" in self.buf:
            return True
        self.sock.setblocking(False)
        try:
            data = self.sock.recv(1 << 20)
            if data:
                self.buf += data
        except (BlockingIOError, ConnectionResetError):
            pass
        finally:
            self.sock.settimeout(HANG_GUARD)
        return b"\0" in self.buf

    def wait_eof(self):
        """Reads until the daemon closes the connection; returns the messages
        that came before the end. Fails on the hang guard."""
        messages = []
        while True:
            try:
                messages.append(self.recv())
            except ConnectionClosed:
                return messages


# ---- pipelinectl ------------------------------------------------------------


class CtlResult:
    def __init__(self, args, returncode, stdout, stderr):
        self.args, self.returncode, self.stdout, self.stderr = args, returncode, stdout, stderr

    def __repr__(self):
        return "pipelinectl %s -> exit %d\nstdout: %r\nstderr: %r" % (
            " ".join(self.args), self.returncode, self.stdout[:2000], self.stderr[:2000])


def run_ctl(socket_path, *args, input=None, env=None):
    """Runs pipelinectl --socket PATH ARGS...; returns a CtlResult (text)."""
    cmd = [PIPELINECTL]
    if socket_path is not None:
        cmd += ["--socket", socket_path]
    cmd += list(args)
    full_env = dict(os.environ)
    full_env.pop("PIPELINED_SOCKET", None)
    full_env.update(env or {})
    try:
        p = subprocess.run(cmd, input=input, capture_output=True, text=True, env=full_env,
                           timeout=HANG_GUARD)
    except subprocess.TimeoutExpired:
        raise AssertionError("pipelinectl %s hung for %.0f s" % (" ".join(args), HANG_GUARD))
    return CtlResult(list(args), p.returncode, p.stdout, p.stderr)


# ---- the base test case -----------------------------------------------------


def wait_until(predicate, what="the condition", guard=HANG_GUARD, interval=0.005):
    """Polls predicate() until it returns a true value, and returns that value.
    Only a hang guard: fails (AssertionError) if it never becomes true within
    guard seconds. predicate may raise AssertionError to fail at once."""
    deadline = time.monotonic() + guard
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError("never reached within %.0f s: %s (last: %r)" % (guard, what, last))
        time.sleep(interval)
        interval = min(interval * 2, 0.05)


def known_bug(reason):
    """Marks a test that fails because of a reported daemon bug (reason says
    which). The test runs as an expected failure; its daemons are stopped and
    checked inside the test, so that a crash counts as the expected failure.
    Once the bug is fixed the test passes, which unittest reports as an
    unexpected success (a failure): then remove the marker."""
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(self, *args, **kwargs):
            try:
                fn(self, *args, **kwargs)
            except BaseException:
                for d in getattr(self, "daemons", []):
                    d.stop(check=False)
                raise
            for d in getattr(self, "daemons", []):
                d.stop()
        wrapper.known_bug = reason
        return unittest.expectedFailure(wrapper)
    return decorate


def is_subset(expected, actual):
    """True if every key of expected is in actual with a matching value
    (dicts recursively; other values, lists included, compared exactly)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and is_subset(v, actual[k]) for k, v in expected.items())
    return expected == actual


class E2ETestCase(unittest.TestCase):
    """A test case with helpers to start daemons and talk to them. Every daemon
    and connection made here is stopped/closed when the test ends."""

    maxDiff = 4000

    def start_daemon(self, pipelines=None, config_text=None, start=True, **daemon):
        d = Daemon(self, pipelines, config_text, **daemon)
        self.addCleanup(d.stop)
        if not hasattr(self, "daemons"):
            self.daemons = []
        self.daemons.append(d)
        if start:
            d.start()
        return d

    def connect(self, daemon_or_path):
        path = daemon_or_path.sock if isinstance(daemon_or_path, Daemon) else daemon_or_path
        c = VarlinkConnection(path)
        self.addCleanup(c.close)
        return c

    def ctl(self, daemon, *args, input=None):
        if not have_pipelinectl():
            self.skipTest("pipelinectl is not built (%s)" % PIPELINECTL)
        path = daemon.sock if isinstance(daemon, Daemon) else daemon
        return run_ctl(path, *args, input=input)

    # -- replies

    def assertReply(self, reply, msg=None):
        """A normal reply; returns its parameters."""
        self.assertIsInstance(reply, dict, msg)
        self.assertNotIn("error", reply, msg or "expected a reply, got %r" % (reply,))
        self.assertIsInstance(reply.get("parameters", {}), dict)
        return reply.get("parameters", {})

    def assertError(self, reply, name, params=None, msg=None):
        """An error reply named name whose parameters include params; returns
        the parameters."""
        self.assertIsInstance(reply, dict, msg)
        self.assertEqual(reply.get("error"), name, msg or "reply: %r" % (reply,))
        p = reply.get("parameters", {})
        if params is not None:
            self.assertTrue(is_subset(params, p),
                            msg or "error parameters %r do not include %r" % (p, params))
        return p

    def ok(self, conn, method, params=None):
        """Calls method and returns the parameters of its (normal) reply."""
        return self.assertReply(conn.call(method, params), "%s %r" % (method, params))

    # -- common calls

    def stats(self, conn, pipeline):
        p = self.ok(conn, IFACE + ".Stats", {"pipeline": pipeline})
        self.assertEqual(len(p["pipelines"]), 1)
        return p["pipelines"][0]

    def stage_stats(self, conn, pipeline, stage_name):
        for st in self.stats(conn, pipeline)["stages"]:
            if st["name"] == stage_name:
                return st
        self.fail("no stage %s in %s" % (stage_name, pipeline))

    def submit(self, conn, pipeline, payload=None):
        return self.ok(conn, IFACE + ".Submit",
                       {"pipeline": pipeline, "payload": payload or {}})["id"]

    def submit_batch(self, conn, pipeline, payloads):
        return self.ok(conn, IFACE + ".SubmitBatch",
                       {"pipeline": pipeline, "payloads": payloads})["ids"]

    def get_job(self, conn, job_id):
        return self.ok(conn, IFACE + ".GetJob", {"id": job_id})["job"]

    def wait_job(self, conn, job_id):
        return self.ok(conn, IFACE + ".WaitJob", {"id": job_id})["job"]

    def pause(self, conn, pipeline, stage_name):
        self.ok(conn, IFACE + ".PauseStage", {"pipeline": pipeline, "stage": stage_name})

    def resume(self, conn, pipeline, stage_name):
        self.ok(conn, IFACE + ".ResumeStage", {"pipeline": pipeline, "stage": stage_name})

    def drain(self, conn, pipeline):
        self.ok(conn, IFACE + ".Drain", {"pipeline": pipeline})

    def list_all(self, conn, page=LIST_MAX, **filters):
        """Every job ListJobs shows, page after page; fails if a page repeats
        or goes backwards."""
        jobs, after = [], 0
        while True:
            params = dict(filters, after_id=after, limit=page)
            p = self.ok(conn, IFACE + ".ListJobs", params)
            ids = [j["id"] for j in p["jobs"]]
            self.assertEqual(ids, sorted(ids), "a page not in id order")
            if ids:
                self.assertGreater(ids[0], after, "a page repeats jobs")
            self.assertLessEqual(len(ids), page)
            jobs += p["jobs"]
            if p.get("next_after_id") is None:
                return jobs
            self.assertTrue(ids, "an empty page with next_after_id")
            self.assertEqual(p["next_after_id"], ids[-1])
            after = p["next_after_id"]

    def wait_stats(self, conn, pipeline, predicate, what, check=None):
        """Polls Stats of pipeline until predicate(stats) holds; returns those
        stats. check(stats), if given, asserts on every sample."""
        def probe():
            s = self.stats(conn, pipeline)
            if check:
                check(s)
            return s if predicate(s) else None
        return wait_until(probe, what)
