#!/usr/bin/env python3
"""crash.py -- durability harness for pipelined: kill it, restart it, and
check that no acknowledged job was lost.

The promise under test: once a client got a reply accepting a job
(Submit -> {"id": N}), the job runs to completion (or to a recorded failure)
whatever happens to the daemon. Stages run at least once per job.

Standard library only. Usable as a program and as a module (the e2e suite,
tests/e2e/test_durability.py, imports it).

Sub-commands (the first argument; "kills" is the default):

  crash.py [kills] --pipelined PATH --kills N [--seed S] [--mode sigkill|powerloss]
           [--sync normal] [--state-dir DIR] [--verbose] [--expect-loss]
      A 3-stage program pipeline under load (several client threads: Submit
      with an idempotency key per job, some SubmitBatch); SIGKILL the daemon
      (and every process of its session) at random moments (seeded, 50-500 ms
      apart), restart it on the same state directory, N times; then wait for
      every job to end and check every acknowledged job. Prints

        kills=N acked=A lost=L recovered=R duplicated_stage_runs=D unfinished=U

      and details. Exit 0 iff lost == 0, unfinished == 0 and no other problem
      (a restart that failed, a done job with a stage that never ran, two jobs
      for one idempotency key, a wrong idempotent reply, a sanitizer report,
      a final SIGTERM that did not exit 0). With --expect-loss (the
      --sync normal proof) the exit status is 0 iff lost > 0 instead.
      --mode powerloss runs the daemon with PIPELINED_TEST_VFS=powerloss (a
      kill drops every journal write not yet synced, as a power cut would);
      --sync normal adds PIPELINED_TEST_SYNCHRONOUS=normal (a weaker journal
      that MUST lose acknowledged jobs under powerloss).

  crash.py crashpoints --pipelined PATH [--verbose]
      For each crash point (stage-done-before-journal:1..6,
      journal-before-reply:1..5, mid-batch:1..4): PIPELINED_CRASH_AT=NAME:N,
      a deterministic 20-job workload (singles and batches) through a 2-stage
      program pipeline, wait for exit status 99 (or the workload to end: "not
      reached"), restart without the variable, check 0 lost.

  crash.py faults --pipelined PATH [--verbose]
      PIPELINED_TEST_VFS=fail-sync:N / fail-write:N for a few N under load:
      the daemon must exit with status 1 and say why; every submit that got a
      success reply must be done after a restart without the fault, and no
      connection sees a success after an error.

  crash.py corrupt --pipelined PATH [--verbose]
      A journal made by a real run, stopped with SIGTERM, then damaged
      (truncated to half, garbage in the middle, random garbage, a newer
      schema: user_version 99): the daemon must refuse to start with exit
      status 1, mention the journal on stderr, and leave journal.db
      byte-identical.

  crash.py all --pipelined PATH     every tier above with the quick sizes.

Tiers:
  quick (the e2e suite): 50 kills sigkill, 20 kills powerloss (FULL),
      powerloss + synchronous=NORMAL until it loses (bounded), crash points,
      faults, corrupt. About 30-40 s in a normal build (the e2e suite scales
      the kill counts down in sanitizer builds).
      python3 tests/crash/crash.py all --pipelined build/daemon/pipelined
  long (by hand, before a release or after touching the journal):
      python3 tests/crash/crash.py --pipelined build/daemon/pipelined --kills 1000 --seed 1
      python3 tests/crash/crash.py --pipelined build/daemon/pipelined --kills 1000 \\
          --mode powerloss --seed 2
      (about 5-10 minutes each; a failure prints the seed to rerun with).

Identity: every job's payload is {"tag": T} (T unique in a run, also its
idempotency key); stages run `/bin/sh stage.sh {tag} LOGDIR`, which appends
"JOBID STAGE ATTEMPT TAG" to LOGDIR/STAGE.log in one O_APPEND write. Jobs
are matched by tag, not id, so a daemon that reuses ids after a restart (one
without a journal does) is still judged correctly.

Extra [daemon] keys for the configuration: --daemon-key Durability=full (may
repeat). By default none is set (Durability defaults to full).
"""

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

GUARD = 120.0          # hang guard for one reply / one wait (seconds)
START_GUARD = 60.0     # a daemon must listen within this
FINISH_GUARD = 300.0   # every job must end within this after the load stops
STALL_GUARD = float(os.environ.get("PIPELINED_CRASH_STALL", "30"))  # seconds without any change
IFACE = "io.pipelined"
TERMINAL = ("done", "failed", "cancelled")
ACTIVE = ("queued", "running", "retrying")
CRASH_EXIT = 99
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                     "WARNING: ThreadSanitizer", "runtime error:")
JOURNAL_FILE = "journal.db"

CRASH_POINTS = (("stage-done-before-journal", 6), ("journal-before-reply", 5), ("mid-batch", 4))
FAULTS = (("fail-sync", 2), ("fail-sync", 5), ("fail-sync", 20),
          ("fail-write", 3), ("fail-write", 10), ("fail-write", 50))

STAGE_SCRIPT = """# $1: the job's tag, $2: the log directory. One O_APPEND write per line.
printf '%s %s %s %s\\n' "$PIPELINED_JOB_ID" "$PIPELINED_STAGE" "$PIPELINED_ATTEMPT" "$1" >> "$2/$PIPELINED_STAGE.log"
sleep 0.00$(( (PIPELINED_JOB_ID * 7919 + ${#1}) % 5 + 1 ))
exit 0
"""

_verbose = False
_t0 = time.monotonic()


def log(fmt, *args):
    if _verbose:
        sys.stderr.write("[%7.3f] %s\n" % (time.monotonic() - _t0, fmt % args if args else fmt))
        sys.stderr.flush()


class HarnessError(Exception):
    """The harness could not do its job (the daemon hung, would not start...)."""


# ---- Varlink ------------------------------------------------------------------


class Closed(Exception):
    """The daemon closed the connection (or was not there)."""


class Conn:
    """NUL-terminated JSON over a Unix socket. Every failure of the socket is
    Closed; a reply that takes longer than timeout is a HarnessError."""

    def __init__(self, path, timeout=GUARD):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError as e:
            self.sock.close()
            raise Closed("connect: %s" % e)
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, method, params=None):
        msg = {"method": method}
        if params is not None:
            msg["parameters"] = params
        try:
            self.sock.sendall(json.dumps(msg, separators=(",", ":")).encode() + b"\0")
        except socket.timeout:
            raise HarnessError("sending %s blocked for %.0f s" % (method, GUARD))
        except OSError as e:
            raise Closed("send: %s" % e)

    def recv(self):
        while b"\0" not in self.buf:
            try:
                data = self.sock.recv(1 << 20)
            except socket.timeout:
                raise HarnessError("no reply from pipelined within %.0f s" % GUARD)
            except OSError as e:
                raise Closed("recv: %s" % e)
            if not data:
                raise Closed("EOF")
            self.buf += data
        msg, _, self.buf = self.buf.partition(b"\0")
        return json.loads(msg.decode("utf-8"))

    def call(self, method, params=None):
        self.send(method, params)
        return self.recv()

    def ok(self, method, params=None):
        """The parameters of a normal reply; HarnessError on an error reply."""
        r = self.call(IFACE + "." + method if "." not in method else method, params)
        if "error" in r:
            raise HarnessError("%s %r -> %r" % (method, params, r))
        return r.get("parameters", {})


def list_jobs(conn, **filters):
    jobs, after = [], 0
    while True:
        p = conn.ok("ListJobs", dict(filters, after_id=after, limit=1000))
        jobs += p["jobs"]
        if p.get("next_after_id") is None:
            return jobs
        after = p["next_after_id"]


def any_active(conn):
    for st in ACTIVE:
        if conn.ok("ListJobs", {"state": st, "limit": 1})["jobs"]:
            return True
    return False


# ---- the daemon -----------------------------------------------------------------


def config_text(state_dir, pipelines, daemon_keys=()):
    """pipelines: {name: [(stage_name, {Key: value})]}; daemon_keys: [(K, V)]."""
    lines = ["[daemon]", "StateDirectory = %s" % state_dir, "RetainJobs = 10000000",
             "RetainBytes = 1GiB", "ShutdownTimeoutSec = 60"]
    lines += ["%s = %s" % kv for kv in daemon_keys]
    for name, stages in pipelines.items():
        lines += ["", "[pipeline %s]" % name]
        for sname, keys in stages:
            lines += ["", "[stage %s/%s]" % (name, sname)]
            lines += ["%s = %s" % kv for kv in keys.items()]
    return "\n".join(lines) + "\n"


def session_members(sid):
    """Live (non-zombie) processes of session sid."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields: state ppid pgrp session ...
        if fields[0] != "Z" and int(fields[3]) == sid:
            pids.append(int(name))
    return pids


class Daemon:
    """pipelined started in its own session (so that it and every program it
    runs can be killed), restartable on the same files. Its stderr, across
    every start, goes to one file with a marker line before each start."""

    def __init__(self, pipelined, workdir, conf, sock):
        self.pipelined, self.workdir, self.conf, self.sock = pipelined, workdir, conf, sock
        self.stderr_path = os.path.join(workdir, "stderr")
        self.proc = None
        self.status = None
        self.starts = 0
        self.start_offset = 0

    def spawn(self, env_extra=None):
        assert not self.alive()
        env = dict(os.environ)
        for k in ("PIPELINED_CRASH_AT", "PIPELINED_TEST_VFS", "PIPELINED_TEST_SYNCHRONOUS"):
            env.pop(k, None)
        env.update(env_extra or {})
        self.starts += 1
        with open(self.stderr_path, "ab") as err:
            err.write(("=== start %d env=%r\n" % (self.starts, env_extra or {})).encode())
            err.flush()
            self.start_offset = err.tell()
            self.proc = subprocess.Popen(
                [self.pipelined, "-c", self.conf, "--socket", self.sock],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, cwd=self.workdir, env=env,
                start_new_session=True)
        self.status = None
        log("daemon start %d pid %d env %r", self.starts, self.proc.pid, env_extra or {})

    def probe(self):
        try:
            c = Conn(self.sock, timeout=10)
        except Closed:
            return False
        try:
            r = c.call("org.varlink.service.GetInfo")
            return "error" not in r
        except (Closed, HarnessError):
            return False
        finally:
            c.close()

    def start(self, env_extra=None, guard=START_GUARD):
        """Spawns and waits until it answers. True when it does; False when it
        exited first (self.status is then its status)."""
        self.spawn(env_extra)
        return self.wait_listening(guard)

    def wait_listening(self, guard=START_GUARD):
        deadline = time.monotonic() + guard
        while True:
            if self.poll() is not None:
                return False
            if self.probe():
                return True
            if time.monotonic() > deadline:
                self.kill()
                raise HarnessError("pipelined did not listen within %.0f s:\n%s"
                                   % (guard, self.stderr_tail()))
            time.sleep(0.005)

    def poll(self):
        if self.proc is None:
            return self.status
        r = self.proc.poll()
        if r is not None:
            self.status = r
            self._reap_session()
        return r

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def _reap_session(self):
        """SIGKILL whatever is left of the daemon's session (programs it ran,
        each in its own process group)."""
        if self.proc is None:
            return
        for _ in range(20):
            pids = session_members(self.proc.pid)
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.002)

    def kill(self):
        """SIGKILL the daemon and every process of its session; its status."""
        if self.proc is None:
            return self.status
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
        self.proc.wait()
        self.status = self.proc.returncode
        self._reap_session()
        return self.status

    def wait_exit(self, guard=GUARD):
        """Waits for it to exit on its own; its status, or None after guard."""
        try:
            self.proc.wait(timeout=guard)
        except subprocess.TimeoutExpired:
            return None
        return self.poll()

    def terminate(self, guard=GUARD):
        """SIGTERM and wait (SIGKILL after guard: then HarnessError)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=guard)
            except subprocess.TimeoutExpired:
                self.kill()
                raise HarnessError("pipelined did not exit within %.0f s of SIGTERM" % guard)
        return self.poll()

    def stderr_all(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stderr_last(self):
        """What the last started process wrote."""
        try:
            with open(self.stderr_path, "rb") as f:
                f.seek(self.start_offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stderr_tail(self, n=3000):
        return self.stderr_all()[-n:]

    def sanitizer_reports(self):
        text = self.stderr_all()
        return sum(text.count(m) for m in SANITIZER_MARKERS)


class Run:
    """A temporary directory with a configuration, the stage script, the
    stage logs, a state directory and a Daemon. Use as a context manager:
    the daemon is always killed and the directory removed at the end."""

    def __init__(self, pipelined, stages, workers=2, capacity=16, daemon_keys=(),
                 state_dir=None, keep=False, prefix="pipelined-crash-"):
        pipelined = os.path.abspath(pipelined)
        if not (os.path.isfile(pipelined) and os.access(pipelined, os.X_OK)):
            raise HarnessError("no pipelined at %s" % pipelined)
        self.dir = tempfile.mkdtemp(prefix=prefix)
        self.keep = keep
        self.logdir = os.path.join(self.dir, "logs")
        os.mkdir(self.logdir)
        self.state_dir = os.path.abspath(state_dir) if state_dir else os.path.join(self.dir, "state")
        os.makedirs(self.state_dir, exist_ok=True)
        self.script = os.path.join(self.dir, "stage.sh")
        with open(self.script, "w") as f:
            f.write(STAGE_SCRIPT)
        self.stages = list(stages)
        self.pipeline = "crash"
        exec_line = "/bin/sh %s {tag} %s" % (self.script, self.logdir)
        pipes = {self.pipeline: [(s, {"Exec": exec_line, "Stdout": "ignore",
                                      "Workers": workers, "Capacity": capacity})
                                 for s in self.stages]}
        self.conf = os.path.join(self.dir, "pipelined.conf")
        with open(self.conf, "w") as f:
            f.write(config_text(self.state_dir, pipes, daemon_keys))
        self.sock = os.path.join(self.dir, "sock")
        self.daemon = Daemon(pipelined, self.dir, self.conf, self.sock)
        self.acked_path = os.path.join(self.dir, "acked.log")
        log("run dir %s", self.dir)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        try:
            self.daemon.kill()
        finally:
            if not self.keep:
                shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def journal(self):
        return os.path.join(self.state_dir, JOURNAL_FILE)

    def stage_runs(self):
        """{(tag, stage): number of runs} from the stage logs."""
        runs = {}
        for st in self.stages:
            try:
                with open(os.path.join(self.logdir, st + ".log")) as f:
                    lines = f.read().splitlines()
            except FileNotFoundError:
                continue
            for line in lines:
                parts = line.split()
                if len(parts) != 4:
                    continue  # cannot happen with one O_APPEND write per line
                key = (parts[3], parts[1])
                runs[key] = runs.get(key, 0) + 1
        return runs


# ---- load ----------------------------------------------------------------------


class Load:
    """Client threads, each with its own connection, submitting as fast as
    they are answered: Submit with the tag as idempotency key (falling back
    to no key if the daemon does not know the parameter), sometimes a
    SubmitBatch (no keys), sometimes a resubmit of an acknowledged key (it
    must return the same id, "existing": true). An accepted id is recorded
    (memory, then the file) before anything else. A keyed Submit whose reply
    never came is retried with the same key on the next connection (when the
    daemon knows keys); if that says "existing", the job was committed but
    never acknowledged: recovered."""

    def __init__(self, sock, pipeline, record_path, seed, threads=4, prefix="j",
                 batch_prob=0.12, batch_max=8, idem_prob=0.02, flush_retries=True):
        self.sock, self.pipeline, self.seed = sock, pipeline, seed
        self.nthreads, self.prefix = threads, prefix
        self.batch_prob, self.batch_max, self.idem_prob = batch_prob, batch_max, idem_prob
        self.flush_retries = flush_retries
        self.lock = threading.Lock()
        self.record_path = record_path
        self.acked = {}              # tag -> id
        self.keyed = []              # acknowledged tags submitted with their key
        self.keys = None             # does the daemon take "key"? None: not known yet
        self.retry_pending = {}      # thread -> [tags] keyed submits never answered
        self.unacked = set()         # tags submitted whose reply never came (not retried)
        self.recovered_by_retry = 0
        self.retries = 0
        self.idem_checks = 0
        self.idem_errors = []
        self.errors = {}             # error name -> count
        self.success_after_error = 0
        self.submits = 0
        self.stop_event = threading.Event()
        self.threads = []
        self.failure = None

    # -- bookkeeping

    def _ack(self, tag, job_id):
        with self.lock:
            self.acked[tag] = job_id
            self.unacked.discard(tag)
            with open(self.record_path, "a") as f:
                f.write("%s %d\n" % (tag, job_id))

    def _error(self, reply):
        name = reply.get("error", "?")
        with self.lock:
            self.errors[name] = self.errors.get(name, 0) + 1
        log("error reply %r", reply)

    # -- calls

    def _submit(self, conn, tag, state, retry=False):
        """One keyed Submit. True: answered (accepted or refused); False:
        connection lost before the reply (tag stays unanswered)."""
        params = {"pipeline": self.pipeline, "payload": {"tag": tag}}
        if self.keys is not False:
            params["key"] = tag
        with self.lock:
            self.submits += 1
            if retry:
                self.retries += 1
        r = conn.call(IFACE + ".Submit", params)
        if ("error" in r and r["error"] == "org.varlink.service.InvalidParameter"
                and r.get("parameters", {}).get("parameter") == "key"):
            if self.keys is not False:
                log("the daemon does not know Submit's key: submitting without keys")
            self.keys = False
            del params["key"]
            r = conn.call(IFACE + ".Submit", params)
        elif "key" in params and "error" not in r:
            self.keys = True
        if "error" in r:
            state["errored"] = True
            self._error(r)
            with self.lock:
                self.unacked.add(tag)
            return True
        p = r.get("parameters", {})
        self._ack(tag, p["id"])
        if "key" in params:
            with self.lock:
                self.keyed.append(tag)
        if state.get("errored"):
            with self.lock:
                self.success_after_error += 1
        if retry and p.get("existing"):
            with self.lock:
                self.recovered_by_retry += 1
            log("retry of %s: existing job %d (recovered)", tag, p["id"])
        return True

    def _batch(self, conn, tags, state):
        with self.lock:
            self.submits += len(tags)
        r = conn.call(IFACE + ".SubmitBatch",
                      {"pipeline": self.pipeline, "payloads": [{"tag": t} for t in tags]})
        if "error" in r:
            state["errored"] = True
            self._error(r)
            return
        ids = r.get("parameters", {})["ids"]
        for t, i in zip(tags, ids):
            self._ack(t, i)
        if state.get("errored"):
            with self.lock:
                self.success_after_error += 1

    def _idem_check(self, conn, rng):
        with self.lock:
            if not self.keyed:
                return
            tag = self.keyed[rng.randrange(len(self.keyed))]
            want = self.acked[tag]
        r = conn.call(IFACE + ".Submit", {"pipeline": self.pipeline, "payload": {"tag": tag},
                                          "key": tag})
        with self.lock:
            self.idem_checks += 1
            p = r.get("parameters", {})
            if "error" in r or p.get("id") != want or p.get("existing") is not True:
                self.idem_errors.append("resubmit of acknowledged %s (id %d) -> %r" % (tag, want, r))

    # -- threads

    def _thread(self, idx):
        rng = random.Random("%s-%d" % (self.seed, idx))
        retry = self.retry_pending.setdefault(idx, [])
        seq = 0
        conn = None
        state = {}
        while True:
            stopping = self.stop_event.is_set()
            if stopping and not (self.flush_retries and retry and self.keys):
                break
            if conn is None:
                try:
                    conn = Conn(self.sock)
                    state = {}
                except Closed:
                    if stopping:
                        break  # nobody there to retry with
                    self.stop_event.wait(0.01)
                    continue
            inflight = []
            try:
                if retry and self.keys:
                    tag = retry[0]
                    inflight = [tag]
                    self._submit(conn, tag, state, retry=True)
                    retry.pop(0)
                elif retry and self.keys is False:
                    with self.lock:
                        self.unacked.update(retry)
                    retry.clear()
                elif self.keys and rng.random() < self.idem_prob:
                    self._idem_check(conn, rng)
                elif rng.random() < self.batch_prob:
                    n = rng.randint(2, self.batch_max)
                    tags = ["%s%d-%d" % (self.prefix, idx, seq + k) for k in range(n)]
                    seq += n
                    inflight = tags
                    self._batch(conn, tags, state)
                else:
                    tag = "%s%d-%d" % (self.prefix, idx, seq)
                    seq += 1
                    inflight = [tag]
                    if not self._submit(conn, tag, state):
                        retry.append(tag)
                inflight = []
            except Closed:
                conn.close()
                conn = None
                if len(inflight) == 1 and self.keys is not False:
                    if inflight[0] not in retry:
                        retry.append(inflight[0])
                elif inflight:
                    with self.lock:
                        self.unacked.update(inflight)
            except Exception as e:  # a harness bug or a hang: stop the load, report it
                self.failure = "load thread %d: %r" % (idx, e)
                log(self.failure)
                break
        if conn is not None:
            conn.close()
        with self.lock:
            self.unacked.update(retry)

    def start(self):
        for i in range(self.nthreads):
            t = threading.Thread(target=self._thread, args=(i,), daemon=True)
            t.start()
            self.threads.append(t)

    def stop(self, guard=GUARD):
        self.stop_event.set()
        deadline = time.monotonic() + guard
        for t in self.threads:
            t.join(max(0.1, deadline - time.monotonic()))
        alive = sum(t.is_alive() for t in self.threads)
        if alive:
            raise HarnessError("%d load threads did not stop within %.0f s" % (alive, guard))


# ---- checking ------------------------------------------------------------------


def active_jobs(conn):
    """(id, state, stage, runs, attempt) of every job queued, running or retrying."""
    out = []
    for st in ACTIVE:
        out += [(j["id"], j["state"], j["stage"], j.get("runs"), j.get("attempt"))
                for j in list_jobs(conn, state=st)]
    return sorted(out)


def wait_finished(daemon, guard=FINISH_GUARD, stall=STALL_GUARD):
    """Waits until no job is queued, running or retrying. Returns None, or a
    problem: the daemon died, the jobs in flight did not change at all for
    stall seconds, or guard seconds passed."""
    deadline = time.monotonic() + guard
    last, since = None, time.monotonic()
    while True:
        if not daemon.alive():
            return "pipelined exited (status %s) while jobs were finishing" % daemon.poll()
        try:
            c = Conn(daemon.sock)
            try:
                while daemon.alive():
                    now = active_jobs(c)
                    if not now:
                        return None
                    t = time.monotonic()
                    if now != last:
                        last, since = now, t
                    elif t - since > stall:
                        return ("no progress for %.0f s: %d jobs in flight, e.g. %r"
                                % (stall, len(now), now[:5]))
                    if t > deadline:
                        return "jobs still in flight %.0f s after the load stopped" % guard
                    time.sleep(0.05)
            finally:
                c.close()
        except Closed:
            time.sleep(0.05)
        if time.monotonic() > deadline:
            return "jobs still in flight %.0f s after the load stopped" % guard


def verify(run, acked, extra_recovered=0):
    """Checks every acknowledged job (acked: tag -> id) against the daemon
    and the stage logs. Returns a dict of counts and problem lists."""
    c = Conn(run.sock)
    try:
        listed = list_jobs(c)
        by_id, by_tag = {}, {}
        for j in listed:
            r = c.call(IFACE + ".GetJob", {"id": j["id"]})
            if "error" in r:
                continue  # forgotten meanwhile (retention): cannot happen here
            job = r["parameters"]["job"]
            by_id[job["id"]] = job
            tag = (job.get("payload") or {}).get("tag")
            by_tag.setdefault(tag, []).append(job["id"])
    finally:
        c.close()
    runs = run.stage_runs()
    lost, unfinished, skipped = [], [], []
    for tag, jid in sorted(acked.items()):
        job = by_id.get(jid)
        if job is None:
            lost.append("%s: id %d: no such job" % (tag, jid))
        elif (job.get("payload") or {}).get("tag") != tag:
            lost.append("%s: id %d is another job (%r): the id was reused"
                        % (tag, jid, (job.get("payload") or {}).get("tag")))
        elif job["state"] != "done":
            lost.append("%s: id %d is %s%s" % (tag, jid, job["state"],
                                               " (%s)" % job["error"] if job.get("error") else ""))
        else:
            for st in run.stages:
                if runs.get((tag, st), 0) == 0:
                    skipped.append("%s: id %d is done but stage %s never ran" % (tag, jid, st))
    for job in by_id.values():
        if job["state"] in ACTIVE:
            unfinished.append("id %d is %s at stage %s" % (job["id"], job["state"], job["stage"]))
    acked_tags = set(acked)
    never_acked = sorted(t for t in by_tag if t not in acked_tags)
    dup_jobs = sorted("%s: ids %r" % (t, ids) for t, ids in by_tag.items() if len(ids) > 1)
    dup_runs = sum(n - 1 for n in runs.values() if n > 1)
    return {
        "acked": len(acked), "lost": len(lost), "lost_detail": lost,
        "recovered": len(never_acked) + extra_recovered,
        "recovered_detail": never_acked, "recovered_by_retry": extra_recovered,
        "duplicated_stage_runs": dup_runs,
        "duplicated_pairs": sum(1 for n in runs.values() if n > 1),
        "unfinished": len(unfinished), "unfinished_detail": unfinished,
        "skipped_stage_runs": len(skipped), "skipped_detail": skipped,
        "duplicate_jobs": len(dup_jobs), "duplicate_jobs_detail": dup_jobs,
        "jobs_in_daemon": len(by_id),
        "failed_jobs": sum(1 for j in by_id.values() if j["state"] == "failed"),
    }


def summary_line(r):
    return ("kills=%d acked=%d lost=%d recovered=%d duplicated_stage_runs=%d unfinished=%d"
            % (r["kills"], r["acked"], r["lost"], r["recovered"], r["duplicated_stage_runs"],
               r["unfinished"]))


def print_details(r, out=sys.stdout, limit=20):
    for k in sorted(r):
        v = r[k]
        if isinstance(v, list):
            if v:
                out.write("  %s (%d):\n" % (k, len(v)))
                for x in v[:limit]:
                    out.write("    %s\n" % (x,))
                if len(v) > limit:
                    out.write("    ... %d more\n" % (len(v) - limit))
        elif not isinstance(v, dict):
            out.write("  %s: %s\n" % (k, v))


# ---- tier 1: kills ------------------------------------------------------------------


def vfs_env(mode, sync=None, extra=None):
    env = {}
    vfs = []
    if mode == "powerloss":
        vfs.append("powerloss")
    if extra:
        vfs.append(extra)
    if vfs:
        env["PIPELINED_TEST_VFS"] = ",".join(vfs)
    if sync:
        env["PIPELINED_TEST_SYNCHRONOUS"] = sync
    return env


def run_kills(pipelined, kills, seed=1, mode="sigkill", sync=None, state_dir=None,
              daemon_keys=(), threads=4, keep=False, min_delay=0.05, max_delay=0.5):
    """The kill/restart loop. Returns a result dict (see summary_line); its
    "ok" says whether lost == 0, unfinished == 0 and no other problem."""
    rng = random.Random(seed)
    env = vfs_env(mode, sync)
    res = {"kills": 0, "seed": seed, "mode": mode, "sync": sync or "full", "problems": []}
    with Run(pipelined, ["s1", "s2", "s3"], workers=2, capacity=16, daemon_keys=daemon_keys,
             state_dir=state_dir, keep=keep) as run:
        d = run.daemon
        if not d.start(env):
            raise HarnessError("pipelined did not start (status %s):\n%s"
                               % (d.status, d.stderr_tail()))
        load = Load(run.sock, run.pipeline, run.acked_path, seed, threads=threads)
        load.start()
        try:
            for k in range(kills):
                time.sleep(rng.uniform(min_delay, max_delay))
                if not d.alive():
                    res["problems"].append("pipelined exited by itself (status %s) before kill %d"
                                           % (d.poll(), k + 1))
                    break
                status = d.kill()
                res["kills"] += 1
                log("kill %d (status %s), acked so far %d", k + 1, status, len(load.acked))
                if load.failure:
                    break
                if not d.start(env):
                    res["problems"].append("restart %d failed: exit status %s:\n%s"
                                           % (k + 1, d.status, d.stderr_last()[-2000:]))
                    break
            if d.alive():
                time.sleep(0.1)  # let the threads retry what the last kill left unanswered
        finally:
            load.stop()
        if load.failure:
            res["problems"].append(load.failure)
        finish = wait_finished(d) if d.alive() else "pipelined is not running"
        if finish:
            res["problems"].append(finish)
        if d.alive():
            v = verify(run, load.acked, load.recovered_by_retry)
            res.update(v)
            st = d.terminate()
            if st != 0:
                res["problems"].append("SIGTERM at the end: exit status %s" % st)
        else:
            res.update({"acked": len(load.acked), "lost": len(load.acked), "recovered": 0,
                        "duplicated_stage_runs": 0, "unfinished": 0})
            res["problems"].append("could not check: the daemon is not running")
        res.update({"keys_supported": load.keys, "submits": load.submits,
                    "retries": load.retries, "unacked_submits": len(load.unacked),
                    "idempotency_checks": load.idem_checks,
                    "idempotency_errors": load.idem_errors,
                    "error_replies": dict(load.errors),
                    "sanitizer_reports": d.sanitizer_reports(),
                    "journal_exists": os.path.exists(run.journal), "starts": d.starts})
        if res["sanitizer_reports"]:
            res["problems"].append("sanitizer reports in pipelined's stderr:\n" + d.stderr_tail())
    for k in ("skipped_stage_runs", "duplicate_jobs"):
        if res.get(k):
            res["problems"].append("%s = %d" % (k, res[k]))
    if res["idempotency_errors"]:
        res["problems"].append("%d wrong idempotent replies" % len(res["idempotency_errors"]))
    res["ok"] = res["lost"] == 0 and res["unfinished"] == 0 and not res["problems"]
    return res


def prove_normal_loses(pipelined, kills=10, tries=5, seed=1, daemon_keys=(), keep=False):
    """powerloss with synchronous=NORMAL, up to tries runs of kills kills,
    until one loses an acknowledged job. Returns the list of results (the
    last one has lost > 0 if the proof succeeded)."""
    out = []
    for t in range(tries):
        r = run_kills(pipelined, kills, seed + t, "powerloss", "normal", None, daemon_keys,
                      keep=keep)
        out.append(r)
        if r["lost"] > 0:
            break
    return out


# ---- tier 2: crash points ----------------------------------------------------------


def _workload(prefix):
    """20 jobs: ("s", [tag]) singles and ("b", [tags]) batches, fixed order."""
    ops, n = [], 0
    for kind, size in [("s", 1)] * 4 + [("b", 4)] + [("s", 1)] * 4 + [("b", 4)] + [("s", 1)] * 4:
        ops.append((kind, ["%s-%d" % (prefix, n + i) for i in range(size)]))
        n += size
    return ops


def _submit_ops(load, conn, ops, state):
    """Submits ops in order on conn until the connection dies. Returns the
    index of the first op not answered (len(ops) if all were)."""
    for i, (kind, tags) in enumerate(ops):
        try:
            if kind == "s":
                load._submit(conn, tags[0], state)
            else:
                load._batch(conn, tags, state)
        except Closed:
            return i
    return len(ops)


def crashpoint_case(pipelined, name, n, daemon_keys=(), keep=False):
    res = {"point": "%s:%d" % (name, n), "problems": []}
    with Run(pipelined, ["a", "b"], workers=2, capacity=8, daemon_keys=daemon_keys,
             keep=keep) as run:
        d = run.daemon
        load = Load(run.sock, run.pipeline, run.acked_path, seed=n, threads=0)
        ops = _workload("%s%d" % (name[:2], n))
        if not d.start({"PIPELINED_CRASH_AT": "%s:%d" % (name, n)}):
            res["problems"].append("did not start (status %s)" % d.status)
            res.update(reached=d.status == CRASH_EXIT, status=d.status)
            return res
        conn = Conn(run.sock)
        try:
            done = _submit_ops(load, conn, ops, {})
        finally:
            conn.close()
        # Wait for the crash, or for the workload to end without it.
        deadline = time.monotonic() + GUARD
        while d.alive() and time.monotonic() < deadline:
            try:
                c = Conn(run.sock)
                try:
                    if not any_active(c):
                        break
                finally:
                    c.close()
            except (Closed, HarnessError):
                pass
            time.sleep(0.02)
        status = d.poll()
        reached = status is not None
        res.update(reached=reached, status=status)
        if not reached:
            if done < len(ops):
                res["problems"].append("connection lost but pipelined still runs")
            st = d.terminate()
            if st != 0:
                res["problems"].append("not reached; SIGTERM: exit status %s" % st)
            res.update(acked=len(load.acked), lost=0, recovered=0, duplicated_stage_runs=0,
                       unfinished=0)
            return res
        if status != CRASH_EXIT:
            res["problems"].append("exit status %s, expected %d" % (status, CRASH_EXIT))
        if not d.start():
            res["problems"].append("restart failed: exit status %s\n%s"
                                   % (d.status, d.stderr_last()))
            res.update(acked=len(load.acked), lost=len(load.acked), recovered=0,
                       duplicated_stage_runs=0, unfinished=0)
            return res
        acked_before = len(load.acked)
        conn = Conn(run.sock)
        try:
            # Retry the keyed single whose reply never came, then the rest.
            state = {}
            if done < len(ops):
                kind, tags = ops[done]
                if kind == "s" and load.keys is not False:
                    load._submit(conn, tags[0], state, retry=True)
                else:
                    load.unacked.update(tags)
                _submit_ops(load, conn, ops[done + 1:], state)
        finally:
            conn.close()
        finish = wait_finished(d)
        if finish:
            res["problems"].append(finish)
        res.update(verify(run, load.acked, load.recovered_by_retry))
        res["acked_before_crash"] = acked_before
        st = d.terminate()
        if st != 0:
            res["problems"].append("SIGTERM after the check: exit status %s" % st)
        if d.sanitizer_reports():
            res["problems"].append("sanitizer report:\n" + d.stderr_tail())
        for k in ("skipped_stage_runs", "duplicate_jobs", "lost", "unfinished"):
            if res.get(k):
                res["problems"].append("%s = %d" % (k, res[k]))
    return res


def crashpoints(pipelined, points=CRASH_POINTS, daemon_keys=(), keep=False):
    """Every crash point NAME:1..K. Returns a list of per-case dicts (each
    with reached, status, acked, lost, recovered, duplicated_stage_runs,
    problems)."""
    out = []
    for name, k in points:
        for n in range(1, k + 1):
            r = crashpoint_case(pipelined, name, n, daemon_keys, keep)
            log("crash point %s: %s", r["point"], crashpoint_line(r))
            out.append(r)
    return out


def crashpoint_line(r):
    if not r.get("reached"):
        return "%-30s not reached acked=%s" % (r["point"], r.get("acked"))
    return ("%-30s reached status=%s acked=%s lost=%s recovered=%s duplicated_stage_runs=%s"
            " unfinished=%s" % (r["point"], r.get("status"), r.get("acked"), r.get("lost"),
                                r.get("recovered"), r.get("duplicated_stage_runs"),
                                r.get("unfinished")))


# ---- tier 3: journal write/sync failures ----------------------------------------------


def fault_case(pipelined, kind, n, daemon_keys=(), keep=False, guard=10.0):
    """PIPELINED_TEST_VFS=KIND:N under load. reached: the daemon exited by
    itself within guard seconds."""
    res = {"fault": "%s:%d" % (kind, n), "problems": []}
    with Run(pipelined, ["a", "b"], workers=2, capacity=16, daemon_keys=daemon_keys,
             keep=keep) as run:
        d = run.daemon
        listening = d.start({"PIPELINED_TEST_VFS": "%s:%d" % (kind, n)})
        load = Load(run.sock, run.pipeline, run.acked_path, seed=n, threads=3,
                    prefix=kind[5], flush_retries=False)
        if listening:
            load.start()
            status = d.wait_exit(guard)
            load.stop()
        else:
            status = d.status
        res["before_listening"] = not listening
        res["reached"] = status is not None
        res["status"] = status
        res["stderr"] = d.stderr_last().strip().splitlines()[-5:]
        res["success_after_error"] = load.success_after_error
        res["error_replies"] = dict(load.errors)
        res["acked"] = len(load.acked)
        if load.success_after_error:
            res["problems"].append("%d successes after an error on the same connection"
                                   % load.success_after_error)
        if load.failure:
            res["problems"].append(load.failure)
        if status is None:
            st = d.terminate()
            res["problems"].append("never failed within %.0f s (SIGTERM: status %s)" % (guard, st))
            return res
        if status != 1:
            res["problems"].append("exit status %s, expected 1 (a signal is negative)" % status)
        if "journal" not in d.stderr_last().lower():
            res["problems"].append("stderr does not mention the journal:\n" + d.stderr_last())
        if not d.start():
            res["problems"].append("restart without the fault failed: status %s\n%s"
                                   % (d.status, d.stderr_last()))
            res.update(acked=len(load.acked), lost=len(load.acked))
            return res
        finish = wait_finished(d)
        if finish:
            res["problems"].append(finish)
        v = verify(run, load.acked, 0)
        res.update(v)
        st = d.terminate()
        if st != 0:
            res["problems"].append("SIGTERM after the check: exit status %s" % st)
        if d.sanitizer_reports():
            res["problems"].append("sanitizer report:\n" + d.stderr_tail())
        for k in ("lost", "unfinished", "skipped_stage_runs", "duplicate_jobs"):
            if res.get(k):
                res["problems"].append("%s = %d" % (k, res[k]))
    return res


def faults(pipelined, cases=FAULTS, daemon_keys=(), keep=False):
    out = []
    for kind, n in cases:
        r = fault_case(pipelined, kind, n, daemon_keys, keep)
        log("fault %s: %s", r["fault"], fault_line(r))
        out.append(r)
    return out


def fault_line(r):
    return ("%-16s reached=%s status=%s acked=%s lost=%s errors=%s"
            % (r["fault"], r.get("reached"), r.get("status"), r.get("acked"), r.get("lost"),
               r.get("error_replies")))


# ---- tier 4: damaged journals ---------------------------------------------------------


def _sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _damage_half(path, rng):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)


def _damage_middle(path, rng):
    size = os.path.getsize(path)
    span = max(4096, size // 4)
    start = max(0, size // 2 - span // 2)
    with open(path, "r+b") as f:
        f.seek(start)
        f.write(bytes(rng.getrandbits(8) for _ in range(min(span, size - start))))


def _damage_garbage(path, rng):
    size = os.path.getsize(path)
    with open(path, "wb") as f:
        f.write(bytes(rng.getrandbits(8) for _ in range(max(size, 4096))))


def _damage_newer(path, rng):
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA user_version = 99")
        db.commit()
    finally:
        db.close()


DAMAGES = (("truncated-half", _damage_half), ("garbage-middle", _damage_middle),
           ("random-garbage", _damage_garbage), ("user-version-99", _damage_newer))


def corrupt(pipelined, damages=DAMAGES, daemon_keys=(), keep=False, jobs=300):
    """Returns {"journal": bool, "cases": [{damage, status, mentions_journal,
    identical, problems}]}; journal False (no cases) when a clean run left
    no journal.db."""
    out = {"journal": False, "cases": [], "problems": []}
    rng = random.Random(7)
    with Run(pipelined, ["a"], workers=2, capacity=64, daemon_keys=daemon_keys, keep=keep) as run:
        d = run.daemon
        if not d.start():
            raise HarnessError("pipelined did not start:\n" + d.stderr_tail())
        c = Conn(run.sock)
        try:
            pad = "x" * 200
            for i in range(0, jobs, 100):
                c.ok("SubmitBatch", {"pipeline": run.pipeline,
                                     "payloads": [{"tag": "c%d" % (i + k), "pad": pad}
                                                  for k in range(100)]})
        finally:
            c.close()
        finish = wait_finished(d)
        if finish:
            out["problems"].append(finish)
        st = d.terminate()
        if st != 0:
            out["problems"].append("SIGTERM after making the journal: status %s" % st)
        if not os.path.exists(run.journal):
            return out
        out["journal"] = True
        pristine = os.path.join(run.dir, "pristine")
        shutil.copytree(run.state_dir, pristine)
        out["journal_bytes"] = os.path.getsize(run.journal)
        out["left_beside"] = sorted(f for f in os.listdir(run.state_dir)
                                    if f.startswith(JOURNAL_FILE + "-"))
        for name, damage in damages:
            shutil.rmtree(run.state_dir)
            shutil.copytree(pristine, run.state_dir)
            damage(run.journal, rng)
            before = _sha(run.journal)
            case = {"damage": name, "problems": []}
            d.spawn()
            status = d.wait_exit(START_GUARD)
            if status is None:
                listening = d.probe()
                d.kill()
                case["problems"].append("did not exit within %.0f s (listening: %s)"
                                        % (START_GUARD, listening))
            err = d.stderr_last()
            case["status"] = status
            case["stderr"] = err.strip().splitlines()[-3:]
            case["mentions_journal"] = "journal" in err.lower()
            case["identical"] = os.path.exists(run.journal) and _sha(run.journal) == before
            if status is not None and status != 1:
                case["problems"].append("exit status %s, expected 1%s" % (
                    status, " (killed by signal %d)" % -status if status < 0 else ""))
            if not case["mentions_journal"]:
                case["problems"].append("stderr does not mention the journal: %r" % err[-500:])
            if not case["identical"]:
                case["problems"].append("journal.db changed")
            if any(m in err for m in SANITIZER_MARKERS):
                case["problems"].append("sanitizer report:\n" + err[-3000:])
            log("corrupt %s: %r", name, case)
            out["cases"].append(case)
    return out


# ---- feature probe ---------------------------------------------------------------------


def has_journal(pipelined, daemon_keys=()):
    """True if this pipelined keeps a journal.db in its state directory (a
    clean start and stop leaves one)."""
    with Run(pipelined, ["a"], daemon_keys=daemon_keys, prefix="pipelined-probe-") as run:
        if not run.daemon.start():
            return False
        run.daemon.terminate()
        return os.path.exists(run.journal)


def sanitizer_of(pipelined):
    """"tsan", "asan" or None: what pipelined was built with (from its symbols)."""
    try:
        with open(pipelined, "rb") as f:
            data = f.read()
    except OSError:
        return None
    if b"__tsan_init" in data:
        return "tsan"
    if b"__asan_init" in data:
        return "asan"
    return None


# ---- command line ------------------------------------------------------------------------


def main(argv=None):
    global _verbose
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = "kills"
    if argv and argv[0] in ("kills", "crashpoints", "faults", "corrupt", "all"):
        cmd = argv.pop(0)
    ap = argparse.ArgumentParser(prog="crash.py [kills|crashpoints|faults|corrupt|all]",
                                 description="durability harness for pipelined")
    ap.add_argument("--pipelined", default=os.environ.get("PIPELINED"),
                    help="the daemon binary (default: $PIPELINED)")
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    ap.add_argument("--mode", choices=("sigkill", "powerloss"), default="sigkill")
    ap.add_argument("--sync", choices=("normal",), default=None,
                    help="PIPELINED_TEST_SYNCHRONOUS=normal (a build that must lose jobs)")
    ap.add_argument("--expect-loss", action="store_true",
                    help="exit 0 iff lost > 0 (the proof that the test sees losses)")
    ap.add_argument("--state-dir", help="state directory to use (kept)")
    ap.add_argument("--daemon-key", action="append", default=[], metavar="KEY=VALUE",
                    help="an extra [daemon] key, e.g. Durability=full")
    ap.add_argument("--threads", type=int, default=4, help="client threads")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--verbose", "-v", action="store_true")
    args = ap.parse_args(argv)
    _verbose = args.verbose
    if not args.pipelined:
        ap.error("--pipelined PATH (or $PIPELINED) is required")
    keys = []
    for kv in args.daemon_key:
        k, sep, v = kv.partition("=")
        if not sep:
            ap.error("--daemon-key wants KEY=VALUE, got %r" % kv)
        keys.append((k.strip(), v.strip()))
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    ok = True
    try:
        if cmd in ("kills", "all"):
            r = run_kills(args.pipelined, args.kills, seed, args.mode, args.sync,
                          args.state_dir, keys, args.threads, args.keep)
            print(summary_line(r))
            print_details(r)
            if args.expect_loss:
                ok = ok and r["lost"] > 0
            else:
                ok = ok and r["ok"]
            if not r["ok"] and not args.expect_loss:
                print("  rerun: crash.py --pipelined %s --kills %d --seed %d --mode %s%s"
                      % (args.pipelined, args.kills, seed, args.mode,
                         " --sync normal" if args.sync else ""))
        if cmd == "all":
            r = run_kills(args.pipelined, max(1, args.kills * 2 // 5), seed + 1, "powerloss",
                          None, None, keys, args.threads, args.keep)
            print(summary_line(r) + " (powerloss, synchronous=FULL)")
            for p in r["problems"]:
                print("    PROBLEM: %s" % p)
            ok = ok and r["ok"]
            rs = prove_normal_loses(args.pipelined, max(1, args.kills // 5), seed=seed + 2,
                                    daemon_keys=keys, keep=args.keep)
            for r in rs:
                print(summary_line(r) + " (powerloss, synchronous=NORMAL: must lose)")
            if rs[-1]["lost"] == 0:
                print("    PROBLEM: synchronous=NORMAL never lost an acknowledged job")
                ok = False
        if cmd in ("crashpoints", "all"):
            rs = crashpoints(args.pipelined, daemon_keys=keys, keep=args.keep)
            for r in rs:
                print(crashpoint_line(r))
                for p in r["problems"]:
                    print("    PROBLEM: %s" % p)
                ok = ok and not r["problems"]
            for name, _ in CRASH_POINTS:
                if not any(r.get("reached") for r in rs if r["point"].startswith(name + ":")):
                    print("    PROBLEM: crash point %s never reached" % name)
                    ok = False
            print("crashpoints: %d cases, %d reached, %d with problems"
                  % (len(rs), sum(1 for r in rs if r.get("reached")),
                     sum(1 for r in rs if r["problems"])))
        if cmd in ("faults", "all"):
            rs = faults(args.pipelined, daemon_keys=keys, keep=args.keep)
            for r in rs:
                print(fault_line(r))
                for p in r["problems"]:
                    print("    PROBLEM: %s" % p)
                ok = ok and not r["problems"]
        if cmd in ("corrupt", "all"):
            r = corrupt(args.pipelined, daemon_keys=keys, keep=args.keep)
            if not r["journal"]:
                print("corrupt: no journal.db after a clean run: nothing to damage")
                ok = False
            for cse in r["cases"]:
                print("%-16s status=%s mentions_journal=%s identical=%s"
                      % (cse["damage"], cse["status"], cse["mentions_journal"], cse["identical"]))
                for p in cse["problems"]:
                    print("    PROBLEM: %s" % p)
                ok = ok and not cse["problems"]
            for p in r["problems"]:
                print("    PROBLEM: %s" % p)
            ok = ok and not r["problems"]
    except HarnessError as e:
        print("harness error: %s" % e)
        return 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
