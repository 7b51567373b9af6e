#!/usr/bin/env python3
"""Hostile-client benchmark (BENCHMARKS.md, "Hostile clients"): the latency
of a well-behaved client without an attack and during each attack, side by
side in the same run, with the daemon's memory and fd count.

    tests/bench/run_hostile.py BUILD_DIR [--rounds N (3000)] [--repeat R (3)]
        [--attacks LIST]

Attacks (each run by a separate attacker process, this script with
--attacker, so that it never shares a CPU time slice or the GIL with the
measuring client):
  slowloris  500 connections, each sent one byte a second of a call that
             never ends (a string that never closes; no NUL ever)
  huge       one connection after another streaming a message that never
             ends, as fast as the socket takes it, each cut off by the
             daemon at 1 MiB (MessageTooLarge), then the next
  neverread  one connection after another pipelining SubmitBatch calls (100
             jobs each, to its own pipeline "flood") and never reading a
             reply, each cut off at MaxOutputBuffer (4 MiB, the default)
  storm      connect/close as fast as possible: closed at once, after half
             a message, after an unread call (in turn)

For each attack, R pairs: a fresh daemon (one pipeline "bench" for the good
client, one "flood" for the never-reading submitter, Action = noop,
Durability = none: the loop is measured, not the disk) measured without the
attack, then a second fresh daemon with it; the summary compares the
medians of the R p99s (and gives each pair's ratio). The
good client does ROUNDS rounds of Submit + GetJob (one sample: both round
trips) and Stats (one sample), one at a time on one connection; p50 and p99
of each. The target: p99 during the attack within 2x of the p99 without.
VmRSS and the fd count of the daemon are sampled during the measurement
(the largest seen), and again once the attacker has gone (fds waited for to
return to their count before the attack).

Every figure says how much CPU other processes on the machine used meanwhile
(run_daemon.others_cpu): the machine's noise, not hidden.

Exit status 0 when every phase ran (a missed target is a result, not a
failure); 1 when one could not run or the good client got a wrong answer;
2 for a usage error.
"""

import json
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_daemon import Failed, Servers, drive, others_cpu, wait_for_socket  # noqa: E402

ATTACKS = ["slowloris", "huge", "neverread", "storm"]
SLOW = 500
GUARD = 120.0  # seconds: a hang guard, never a measured condition
MESSAGE_MAX = 1024 * 1024


# ---- the daemon from /proc ------------------------------------------------------


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_until(pred, what, guard=GUARD):
    deadline = time.monotonic() + guard
    while not pred():
        if time.monotonic() > deadline:
            raise Failed(f"never reached within {guard:.0f} s: {what}")
        time.sleep(0.01)


# ---- connections ---------------------------------------------------------------------


def connect(path):
    """A blocking connect: it waits for room in a full listen backlog
    (bounded by SO_SNDTIMEO) instead of failing with EAGAIN."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", int(GUARD), 0))
    s.connect(path)
    return s


def call_bytes(method, params=None):
    msg = {"method": method}
    if params is not None:
        msg["parameters"] = params
    return json.dumps(msg, separators=(",", ":")).encode() + b"\0"


class Client:
    """The well-behaved client: one call at a time on one connection."""

    def __init__(self, path):
        self.sock = connect(path)
        self.sock.settimeout(GUARD)
        self.buf = b""

    def call(self, method, params=None):
        self.sock.sendall(call_bytes(method, params))
        while b"\0" not in self.buf:
            data = self.sock.recv(1 << 16)
            if not data:
                raise Failed("the daemon closed the good client's connection")
            self.buf += data
        msg, _, self.buf = self.buf.partition(b"\0")
        reply = json.loads(msg)
        if "error" in reply:
            raise Failed(f"the good client got {reply['error']} for {method}: {reply}")
        return reply.get("parameters", {})


# ---- attackers (run as separate processes) ------------------------------------------


def attack_slowloris(path, ready):
    head = b'{"method":"io.pipelined.Stats","parameters":{"pipeline":"'
    conns = [connect(path) for _ in range(SLOW)]
    for c in conns:
        c.send(head[:1])
    ready()
    sent = 1
    while True:  # one byte a second each; the string never closes
        time.sleep(1.0)
        byte = head[sent:sent + 1] or b"x"
        sent += 1
        for c in conns:
            c.send(byte)


def attack_huge(path, ready):
    head = b'{"method":"io.pipelined.Submit","parameters":{"pipeline":"bench","payload":{"s":"'
    chunk = b"x" * (256 * 1024)
    first = True
    while True:
        s = connect(path)
        try:
            s.sendall(head)
            while True:
                s.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        s.close()
        if first:
            ready()
            first = False


def attack_neverread(path, ready):
    batch = call_bytes("io.pipelined.SubmitBatch", {"pipeline": "flood", "payloads": [{}] * 100})
    first = True
    while True:
        s = connect(path)
        try:
            while True:
                s.sendall(batch * 10)
        except (BrokenPipeError, ConnectionResetError):
            pass
        s.close()
        if first:
            ready()
            first = False


def attack_storm(path, ready):
    shapes = [b"", b'{"method":"io.pipelined.St', call_bytes("io.pipelined.Stats")]
    i = 0
    while True:
        s = connect(path)
        if shapes[i % 3]:
            try:
                s.send(shapes[i % 3])
            except OSError:
                pass
        s.close()
        i += 1
        if i == 1000:
            ready()


def attacker_main(kind, path):
    def ready():
        print("ready", flush=True)

    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    globals()["attack_" + kind](path, ready)


# ---- the benchmark ---------------------------------------------------------------------


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


class Bench(Servers):
    def __init__(self, build, tmp):
        self.daemon_bin = os.path.join(build, "daemon", "pipelined")
        if not os.access(self.daemon_bin, os.X_OK):
            raise Failed(f"{self.daemon_bin} is missing: build it first (tests/bench/run does)")
        self.tmp = tmp
        self.procs = []
        self.runs = 0
        self.summary = []
        self.failed = []

    def daemon(self):
        self.runs += 1
        conf = os.path.join(self.tmp, f"pipelined-{self.runs}.conf")
        sock = os.path.join(self.tmp, f"p{self.runs}.sock")
        with open(conf, "w") as f:
            f.write(f"[daemon]\nStateDirectory = {self.tmp}/state\nDurability = none\n"
                    "RetainJobs = 10000\n"
                    "[pipeline bench]\n[stage bench/s0]\nAction = noop\n"
                    "[pipeline flood]\n[stage flood/s0]\nAction = noop\n")
        log = open(os.path.join(self.tmp, "pipelined.log"), "ab")
        proc = subprocess.Popen([self.daemon_bin, "-c", conf, "--socket", sock], stdout=log,
                                stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        self.procs.append((proc, "pipelined"))
        wait_for_socket(sock, proc, "pipelined")
        return proc, sock

    def attacker(self, kind, sock):
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--attacker", kind,
                                 sock], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.procs.append((proc, f"attacker {kind}"))
        line = proc.stdout.readline()  # blocks until the attack is under way
        if line.strip() != b"ready":
            raise Failed(f"the {kind} attacker exited before starting (status {proc.poll()})")
        return proc

    def phase(self, kind, rounds):
        """One fresh daemon, the attack kind (None: none), rounds measured.
        Returns the figures."""
        proc, sock = self.daemon()
        pid = proc.pid
        try:
            good = Client(sock)
            for i in range(200):  # warm up: allocations, page faults
                good.call("io.pipelined.Stats", {"pipeline": "bench"})
            base_fds, base_rss = fd_count(pid), rss_kib(pid)
            attacker = self.attacker(kind, sock) if kind else None
            if kind == "slowloris":
                wait_until(lambda: fd_count(pid) >= base_fds + SLOW, "500 slow connections in")
            submit, stats = [], []
            max_rss, max_fds = rss_kib(pid), fd_count(pid)
            t0, before = time.monotonic(), others_cpu()
            for i in range(rounds):
                a = time.perf_counter()
                job_id = good.call("io.pipelined.Submit",
                                   {"pipeline": "bench", "payload": {"i": i}})["id"]
                job = good.call("io.pipelined.GetJob", {"id": job_id})["job"]
                b = time.perf_counter()
                st = good.call("io.pipelined.Stats", {"pipeline": "bench"})
                c = time.perf_counter()
                if job["id"] != job_id or st["pipelines"][0]["name"] != "bench":
                    raise Failed(f"wrong answer during {kind}: {job} {st}")
                submit.append(b - a)
                stats.append(c - b)
                if i % 100 == 0:
                    max_rss, max_fds = max(max_rss, rss_kib(pid)), max(max_fds, fd_count(pid))
            wall = time.monotonic() - t0
            other = sum(cpu - before.get(p, 0.0) for p, cpu in others_cpu().items())
            if proc.poll() is not None:
                raise Failed(f"pipelined exited with status {proc.returncode} during {kind}")
            if attacker:
                self.stop_one(attacker)
            # The good connection is still open: back to the count before.
            wait_until(lambda: fd_count(pid) <= base_fds, f"fds back to {base_fds} after {kind}")
            accepted = good.call("io.pipelined.Stats", {"pipeline": "bench"})
            accepted = accepted["pipelines"][0]["accepted"]
            if accepted < rounds:
                raise Failed(f"the daemon accepted {accepted} of the good client's {rounds} jobs")
            after_rss, after_fds = rss_kib(pid), fd_count(pid)
            good.sock.close()
        finally:
            self.stop_all()
        us = lambda x: x * 1e6
        return {
            "submit_p50": us(pct(submit, 0.50)), "submit_p99": us(pct(submit, 0.99)),
            "stats_p50": us(pct(stats, 0.50)), "stats_p99": us(pct(stats, 0.99)),
            "base_rss": base_rss, "max_rss": max_rss, "after_rss": after_rss,
            "base_fds": base_fds, "max_fds": max_fds, "after_fds": after_fds,
            "wall": wall, "other": other,
        }

    def show(self, label, r):
        noisy = "  !! NOT QUIET" if r["other"] > 0.05 * r["wall"] else ""
        print(f"  {label:10} Submit+GetJob p50 {r['submit_p50']:7.0f} us  p99 "
              f"{r['submit_p99']:7.0f} us | Stats p50 {r['stats_p50']:6.0f} us  p99 "
              f"{r['stats_p99']:6.0f} us | RSS {r['base_rss']:,} -> max {r['max_rss']:,} -> "
              f"after {r['after_rss']:,} KiB | fds {r['base_fds']} -> max {r['max_fds']} -> "
              f"after {r['after_fds']} | others {r['other']:.2f} CPU-s in {r['wall']:.1f} s"
              f"{noisy}", flush=True)

    def run(self, kind, rounds, repeat):
        """repeat pairs (no attack, then the attack, each on a fresh daemon);
        the summary is on the medians of their p99s, with each pair's ratio."""
        quiet, loud = [], []
        for i in range(repeat):
            print(f"--- {kind}, pair {i + 1} of {repeat}", flush=True)
            quiet.append(self.phase(None, rounds))
            self.show("no attack", quiet[-1])
            loud.append(self.phase(kind, rounds))
            self.show(kind, loud[-1])
        med = lambda rs, k: statistics.median(r[k] for r in rs)
        ratio = med(loud, "submit_p99") / med(quiet, "submit_p99")
        sratio = med(loud, "stats_p99") / med(quiet, "stats_p99")
        pairs = ", ".join(f"{l['submit_p99'] / q['submit_p99']:.2f}x"
                          for q, l in zip(quiet, loud))
        noisy = sum(1 for r in quiet + loud if r["other"] > 0.05 * r["wall"])
        met = "yes" if ratio <= 2.0 and sratio <= 2.0 else "NO"
        line = (f"SUMMARY {kind:10} p99 Submit+GetJob {med(quiet, 'submit_p99'):.0f} -> "
                f"{med(loud, 'submit_p99'):.0f} us ({ratio:.2f}x; pairs {pairs}), Stats "
                f"{med(quiet, 'stats_p99'):.0f} -> {med(loud, 'stats_p99'):.0f} us "
                f"({sratio:.2f}x) | p50 Submit+GetJob {med(quiet, 'submit_p50'):.0f} -> "
                f"{med(loud, 'submit_p50'):.0f} us | RSS max {max(r['max_rss'] for r in loud):,}"
                f" KiB (before {max(r['base_rss'] for r in loud):,}), after "
                f"{max(r['after_rss'] for r in loud):,} | fds max "
                f"{max(r['max_fds'] for r in loud)}, after {max(r['after_fds'] for r in loud)} "
                f"(before {max(r['base_fds'] for r in loud)}) | noisy phases {noisy} of "
                f"{2 * repeat} | target p99 <= 2x: {met}")
        self.summary.append(line)
        print(line, flush=True)


def main(argv):
    args = argv[1:]
    if len(args) == 3 and args[0] == "--attacker" and args[1] in ATTACKS:
        attacker_main(args[1], args[2])
        return 0
    rounds, repeat, attacks = 3000, 3, list(ATTACKS)
    rest = []
    i = 0
    try:
        while i < len(args):
            if args[i] == "--rounds":
                rounds = int(args[i + 1])
                i += 2
            elif args[i] == "--repeat":
                repeat = int(args[i + 1])
                i += 2
            elif args[i] == "--attacks":
                attacks = [a for a in args[i + 1].split(",") if a]
                i += 2
            else:
                rest.append(args[i])
                i += 1
    except (IndexError, ValueError):
        print("run_hostile.py: --rounds and --repeat need numbers, --attacks a list",
              file=sys.stderr)
        return 2
    bad = [a for a in attacks if a not in ATTACKS]
    if len(rest) != 1 or bad or rounds < 100 or repeat < 1:
        print(__doc__, file=sys.stderr)
        return 2
    print(f"# {rounds} rounds per phase, {repeat} pairs per attack; attacks: "
          f"{' '.join(attacks)}", flush=True)
    expected = {
        "replies unread": "never-reading connections cut off (\"over ... bytes of replies "
                          "unread\")",
        "faster than MaxConnectionRate": "warnings that new connections were paced (once a "
                                         "minute at most per daemon: slowloris and storm)",
    }
    return drive("run_hostile.py", lambda tmp: Bench(rest[0], tmp), attacks,
                 lambda b, kind: b.run(kind, rounds, repeat), expected)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
