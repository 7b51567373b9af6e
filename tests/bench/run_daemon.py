#!/usr/bin/env python3
"""Runs the daemon benchmarks (BENCHMARKS.md, "Daemon (issue 3)"), each
beside its anchor in the same run, and prints one summary line per benchmark.

    tests/bench/run_daemon.py BUILD_DIR [--repeat N (default 5)] [rtt|batch|clients|latency|flood]...

Builds nothing: BUILD_DIR must hold daemon/pipelined and
tests/bench/bench_daemon (tests/bench/run builds them). Everything runs in a
temporary directory: the daemon's configuration and socket, and redis-server
and beanstalkd started here as child processes on Unix sockets (never as
system services). A fresh daemon (and a fresh anchor server) is started for
every measured run and stopped after it, whatever happens.

Exit status 0 when every benchmark ran (a missed target is a result, not a
failure); 1 when one could not run or reported lost replies or jobs; 2 for a
usage error.
"""

import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BENCHES = ["rtt", "batch", "clients", "latency", "flood"]

# Jobs per run, as the issue asks.
N_RTT = 100_000
N_BATCH = 1_000_000
N_CLIENTS = 100_000
CLIENTS = 50
LATENCY_RATE = 5000
N_LATENCY = 50_000
N_FLOOD = 1_000_000

RUN_TIMEOUT = 600  # seconds for one measured run; a hang is reported, not waited for


class Failed(Exception):
    pass


def others_cpu():
    """{pid: CPU seconds} of every process outside this benchmark's own tree
    (this script and its descendants), children it has waited for included.
    Per-process times are exact (unlike /proc/stat's tick samples, which a
    timer-paced load fools); a process that starts and ends unwaited within
    a run is missed."""
    hz = os.sysconf("SC_CLK_TCK")
    procs = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After "pid (comm)": state ppid ... utime stime cutime cstime (fields 3.., 14..17).
        procs[int(d)] = (int(fields[1]), sum(int(x) for x in fields[11:15]) / hz)
    ours = {os.getpid()}
    changed = True
    while changed:
        changed = False
        for pid, (ppid, _) in procs.items():
            if ppid in ours and pid not in ours:
                ours.add(pid)
                changed = True
    return {pid: cpu for pid, (_, cpu) in procs.items() if pid not in ours}


def measured(b, fn):
    """Runs fn() (which must wait for every process it starts) and reports
    how much CPU other processes on the machine used meanwhile: a run with
    a busy neighbour is flagged, not silently mixed in."""
    t0, before = time.monotonic(), others_cpu()
    result = fn()
    wall, after = time.monotonic() - t0, others_cpu()
    other = sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())
    flag = "  !! NOT QUIET" if other > 0.05 * wall else ""
    print(f"  (other processes used {other:.2f} CPU-s in these {wall:.1f} s{flag})", flush=True)
    b.other.append(other / wall if wall else 0.0)
    return result


def wait_for_socket(path, proc, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Failed(f"{what} exited with status {proc.returncode} before listening")
        if os.path.exists(path):
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(path)
                return
            except OSError:
                pass
            finally:
                s.close()
        time.sleep(0.02)
    raise Failed(f"{what} is not listening on {path} after {timeout} s")


def stop(proc, what, timeout=30.0):
    """SIGTERM, then SIGKILL after timeout; returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"  ({what} ignored SIGTERM for {timeout} s: killed)", flush=True)
            proc.kill()
            proc.wait()
    return proc.returncode


class Servers:
    """The server processes a driver started: self.procs, (proc, what)
    pairs, stopped last first."""

    def stop_one(self, proc):
        for i, (p, what) in enumerate(self.procs):
            if p is proc:
                del self.procs[i]
                return stop(p, what)
        return None

    def stop_all(self):
        while self.procs:
            p, what = self.procs.pop()
            stop(p, what)


class Bench(Servers):
    def __init__(self, build, tmp):
        self.daemon_bin = os.path.join(build, "daemon", "pipelined")
        self.client_bin = os.path.join(build, "tests", "bench", "bench_daemon")
        for b in (self.daemon_bin, self.client_bin):
            if not os.access(b, os.X_OK):
                raise Failed(f"{b} is missing: build it first (tests/bench/run does)")
        self.tmp = tmp
        self.procs = []  # (proc, what): stopped in stop_all, last first
        self.summary = []
        self.failed = []
        self.runs = 0
        self.other = []  # per measured run: other processes' CPU, cores on average

    # ---- processes -------------------------------------------------------

    def start(self, argv, sock, what):
        log = open(os.path.join(self.tmp, f"{what}.log"), "ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        self.procs.append((proc, what))
        wait_for_socket(sock, proc, what)
        return proc

    def daemon(self, pipelines, retain_jobs=None, retain_bytes=None, durability=None):
        """A fresh pipelined with pipelines = {name: [(action, capacity)]}
        (durability: None for the default, full: every submit journaled)."""
        self.runs += 1
        conf = os.path.join(self.tmp, f"pipelined-{self.runs}.conf")
        sock = os.path.join(self.tmp, f"p{self.runs}.sock")
        lines = ["[daemon]", f"StateDirectory = {self.tmp}/state"]
        if retain_jobs is not None:
            lines.append(f"RetainJobs = {retain_jobs}")
        if retain_bytes is not None:
            lines.append(f"RetainBytes = {retain_bytes}")
        if durability is not None:
            lines.append(f"Durability = {durability}")
        for name, stages in pipelines.items():
            lines += ["", f"[pipeline {name}]"]
            for i, (action, capacity) in enumerate(stages):
                lines += [f"[stage {name}/s{i}]", f"Action = {action}", "Workers = 1",
                          f"Capacity = {capacity}"]
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        proc = self.start([self.daemon_bin, "-c", conf, "--socket", sock], sock, "pipelined")
        return proc, sock

    def redis(self):
        sock = os.path.join(self.tmp, "redis.sock")
        proc = self.start(["redis-server", "--port", "0", "--unixsocket", sock, "--save", "",
                           "--appendonly", "no", "--dir", self.tmp], sock, "redis-server")
        return proc, sock

    def beanstalkd(self):
        sock = os.path.join(self.tmp, "beanstalkd.sock")
        if os.path.exists(sock):
            os.unlink(sock)
        proc = self.start(["beanstalkd", "-l", f"unix:{sock}"], sock, "beanstalkd")
        return proc, sock

    # ---- measuring -------------------------------------------------------

    def client(self, args, blocking=False):
        """Runs bench_daemon, echoes its output, returns {key: {k: v}} of
        its RESULT lines. blocking: its clients block in read() instead of
        waiting in poll() (see bench_daemon.c)."""
        argv = [self.client_bin] + [str(a) for a in args]
        env = dict(os.environ, BENCH_BLOCKING_READ="1" if blocking else "0")
        print("$ " + ("BENCH_BLOCKING_READ=1 " if blocking else "") + "bench_daemon " +
              " ".join(str(a) for a in args), flush=True)
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT,
                               env=env)
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            print(out, end="")
            raise Failed(f"bench_daemon {args[0]} did not finish in {RUN_TIMEOUT} s")
        results = {}
        for line in p.stdout.splitlines():
            if line.startswith("RESULT "):
                parts = line.split()
                results[parts[1]] = dict(kv.split("=", 1) for kv in parts[2:])
            else:
                print(line)
        if p.stderr:
            print(p.stderr, end="")
        if p.returncode != 0:
            self.failed.append(f"bench_daemon {' '.join(map(str, args))}: exit {p.returncode}")
            print(f"  !! bench_daemon exited with status {p.returncode}: "
                  "an error reply, a lost reply or a missing job (see above)")
        sys.stdout.flush()
        return results

    def redis_benchmark(self, clients, n):
        proc, sock = self.redis()
        try:
            argv = ["redis-benchmark", "-s", sock, "-t", "lpush", "-c", str(clients), "-n",
                    str(n), "-q"]
            print("$ " + " ".join(argv[:1] + ["-s", "DIR/redis.sock"] + argv[3:]), flush=True)
            p = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT)
            m = re.findall(r"LPUSH: ([\d.]+) requests per second(.*)", p.stdout)
            if not m:
                raise Failed(f"redis-benchmark printed no result: {p.stdout[-300:]!r}")
            print(f"LPUSH: {m[-1][0]} requests per second{m[-1][1]}", flush=True)
            return float(m[-1][0])
        finally:
            self.stop_one(proc)

    def report(self, name, ours, anchor, ratio, target, met):
        line = (f"SUMMARY {name:17} ours {ours} | anchor {anchor} | ratio {ratio} | "
                f"target {target} | met: {met}")
        self.summary.append(line)
        print(line, flush=True)


def median_range(xs):
    return statistics.median(xs), min(xs), max(xs)


def fmt_rate(x):
    return f"{x:,.0f}/s"


def paired(b, name, ours_fn, anchor_fn, repeat, target, anchor_name, variants=()):
    """Alternates ours / anchor repeat times; summary on the medians.
    variants: (name, fn[, is_check]) measured in each run too, after ours,
    and compared with the same anchor runs (reported, never the headline);
    is_check marks the anchor driven by our own client."""
    ours, anchor = [], []
    extra = {v[0]: [] for v in variants}
    checks = {v[0] for v in variants if len(v) > 2 and v[2]}
    for i in range(repeat):
        print(f"--- {name} run {i + 1} of {repeat}", flush=True)
        ours.append(measured(b, ours_fn))
        for v in variants:
            extra[v[0]].append(measured(b, v[1]))
        anchor.append(measured(b, anchor_fn))
    am, alo, ahi = median_range(anchor)
    for label, xs in [(name, ours)] + list(extra.items()):
        om, olo, ohi = median_range(xs)
        ratios = [o / a for o, a in zip(xs, anchor)]
        print(f"{label}: ours {', '.join(fmt_rate(x) for x in xs)}; "
              f"{anchor_name} {', '.join(fmt_rate(x) for x in anchor)}; "
              f"pair ratios {', '.join(f'{r:.2f}x' for r in ratios)}", flush=True)
        ratio = om / am
        met = "n/a (no target)" if target is None else ("yes" if ratio >= target else "NO")
        if label in checks:
            met = "- (the anchor through our client: a check of the client)"
        b.report(label,
                 f"{fmt_rate(om)} median of {repeat} [{olo:,.0f}..{ohi:,.0f}]",
                 f"{anchor_name} {fmt_rate(am)} median [{alo:,.0f}..{ahi:,.0f}]",
                 f"{ratio:.2f}x (pairs {min(ratios):.2f}..{max(ratios):.2f})",
                 "none set" if target is None else f">= {target:.1f}x", met)


def one_stage(b, capacity=64):
    return b.daemon({"bench": [("noop", capacity)]})


def in_memory(b):
    """One stage, Durability=none: no journal, as beanstalkd without -b and
    redis without persistence (the anchors) keep nothing either."""
    return b.daemon({"bench": [("noop", 64)]}, durability="none")


def run_ours(b, mode, *args, pipeline="bench", make=one_stage, blocking=False):
    proc, sock = make(b)
    try:
        r = b.client([mode, sock, pipeline] + list(args), blocking=blocking)
    finally:
        b.stop_one(proc)
    if mode not in r:
        raise Failed(f"bench_daemon {mode} printed no result")
    return float(r[mode]["jobs_per_s"])


def run_redis_own(b, mode, *args, blocking=False):
    """redis driven by bench_daemon: the anchor through our own client code."""
    proc, sock = b.redis()
    try:
        r = b.client([mode, sock] + list(args), blocking=blocking)
    finally:
        b.stop_one(proc)
    if mode not in r:
        raise Failed(f"bench_daemon {mode} printed no result")
    return float(r[mode]["jobs_per_s"])


def bench_rtt(b, repeat):
    # Headline: our client waits in poll(), as redis-benchmark waits in
    # epoll. Variants: our client blocking in read() (as client/client.c
    # does), and redis driven by our client both ways, so that the client
    # is not what differs.
    paired(b, "rtt", lambda: run_ours(b, "rtt", N_RTT),
           lambda: b.redis_benchmark(1, N_RTT), repeat, 1.0, "redis lpush -c 1",
           variants=[("rtt-blocking", lambda: run_ours(b, "rtt", N_RTT, blocking=True)),
                     ("redis-own", lambda: run_redis_own(b, "redis-rtt", N_RTT), True),
                     ("redis-own-blk",
                      lambda: run_redis_own(b, "redis-rtt", N_RTT, blocking=True), True)])


def bench_batch(b, repeat):
    def anchor():
        proc, sock = b.beanstalkd()
        try:
            r = b.client(["beanstalk", sock, N_BATCH, 1000])
        finally:
            b.stop_one(proc)
        return float(r["beanstalk"]["jobs_per_s"])

    # The variant: a first queue that holds a whole batch, so the loop is
    # not held back every 32 jobs waiting for room.
    big = lambda: run_ours(b, "batch", N_BATCH, 4, make=lambda b: one_stage(b, 4096))
    mem = lambda: run_ours(b, "batch", N_BATCH, 4, make=in_memory)
    paired(b, "batch", lambda: run_ours(b, "batch", N_BATCH, 4), anchor, repeat, 2.0,
           "beanstalkd put", variants=[("batch-cap4096", big), ("batch-none", mem)])


def bench_clients(b, repeat):
    paired(b, "clients", lambda: run_ours(b, "clients", CLIENTS, N_CLIENTS),
           lambda: b.redis_benchmark(CLIENTS, N_CLIENTS), repeat, None,
           f"redis lpush -c {CLIENTS}",
           variants=[("clients-none",
                      lambda: run_ours(b, "clients", CLIENTS, N_CLIENTS, make=in_memory)),
                     ("clients-redis-own",
                      lambda: run_redis_own(b, "redis-clients", CLIENTS, N_CLIENTS), True)])


def bench_latency(b, repeat):
    print("--- latency", flush=True)
    def run():
        proc, sock = b.daemon({"three": [("noop", 64)] * 3})
        try:
            return b.client(["latency", sock, "three", LATENCY_RATE, N_LATENCY])
        finally:
            b.stop_one(proc)

    r = measured(b, run)
    e, g, s = r["latency_e2e"], r["latency_getinfo"], r["latency_submit"]
    b.report("latency",
             f"end-to-end p50 {e['p50_us']} us, p99 {e['p99_us']} us, p99.9 {e['p999_us']} us, "
             f"max {e['max_us']} us (Submit reply p50 {s['p50_us']}, p99 {s['p99_us']})",
             f"GetInfo round trip p50 {g['p50_us']} us, p99 {g['p99_us']} us, "
             f"p99.9 {g['p999_us']} us", "-", "none set", "n/a (no target)")


def bench_flood(b, repeat):
    def flood(capacity):
        stages = [("noop", capacity), ("busy:20", capacity)]

        def run():
            proc, sock = b.daemon({"flood": stages}, retain_jobs=1000, retain_bytes="64KiB")
            try:
                return b.client(["flood", sock, "flood", proc.pid, N_FLOOD])
            finally:
                b.stop_one(proc)

        return measured(b, run)["flood"]

    print("--- flood, capacity 64", flush=True)
    ours = flood(64)
    print("--- flood anchor, capacity 1048576", flush=True)
    anchor = flood(1048576)
    grow = int(ours["peak_kib"]) - int(ours["start_kib"])
    agrow = int(anchor["peak_kib"]) - int(anchor["start_kib"])
    ok = ours["done"] == str(N_FLOOD) and anchor["done"] == str(N_FLOOD)
    b.report("flood",
             f"RSS +{grow:,} KiB peak over start ({ours['start_kib']} -> {ours['peak_kib']} KiB, "
             f"VmHWM {ours['hwm_kib']}), done {ours['done']}/{N_FLOOD} in {ours['done_s']} s",
             f"capacity 1Mi: +{agrow:,} KiB ({anchor['start_kib']} -> {anchor['peak_kib']} KiB), "
             f"done {anchor['done']} in {anchor['done_s']} s",
             f"{grow / max(agrow, 1):.4f} of the anchor's growth",
             "flat, bounded by capacities; every job done",
             "see the tenths row" if ok else "NO: jobs missing")


def drive(script, make, names, run_one, expected_log=None):
    """The frame every benchmark driver shares: a temporary directory and
    make(tmp) (a Servers with .failed, .summary and optionally .other), then
    run_one(b, name) for each name (one that fails is reported and the next
    goes on; every server is stopped after each, whatever happens), the
    summary lines, how quiet the machine was, and the warnings and errors
    in the daemon's log (lines containing one of expected_log's keys are
    counted instead, with its description). Returns the exit status: 0, or
    1 if something could not run."""
    tmp = tempfile.mkdtemp(prefix="pipelined-bench-")
    b = None
    status = 0
    try:
        b = make(tmp)
        for n in names:
            try:
                run_one(b, n)
            except Failed as e:
                print(f"!! {n}: {e}", flush=True)
                b.failed.append(f"{n}: {e}")
            finally:
                b.stop_all()
        print()
        for line in b.summary:
            print(line)
        other = getattr(b, "other", None)
        if other:
            noisy = sum(1 for x in other if x > 0.05)
            print(f"QUIET {len(other) - noisy} of {len(other)} measured runs had other "
                  f"processes under 5% of a core (worst {max(other) * 100:.0f}%)")
        for f in b.failed:
            print(f"FAILED {f}")
        status = 1 if b.failed else 0
    except Failed as e:
        print(f"{script}: {e}", file=sys.stderr)
        status = 1
    finally:
        if b:
            b.stop_all()
        report_log(os.path.join(tmp, "pipelined.log"), expected_log or {})
        shutil.rmtree(tmp, ignore_errors=True)
    return status


def report_log(path, expected):
    """Prints the warnings and errors of the daemon's log; a line containing
    a key of expected is counted under its description instead."""
    if not os.path.exists(path):
        return
    counts = dict.fromkeys(expected, 0)
    bad = []
    for line in open(path, errors="replace").read().splitlines():
        key = next((k for k in expected if k in line), None)
        if key:
            counts[key] += 1
        elif "error" in line.lower() or "warning" in line.lower():
            bad.append(line)
    for key, n in counts.items():
        if n:
            print(f"pipelined.log: {n} {expected[key]}")
    if bad:
        print("pipelined.log: " + "\n  ".join(bad[:20]))


def main(argv):
    args = argv[1:]
    repeat = 5
    if "--repeat" in args:
        i = args.index("--repeat")
        try:
            repeat = int(args[i + 1])
        except (IndexError, ValueError):
            print("run_daemon.py: --repeat needs a number", file=sys.stderr)
            return 2
        del args[i:i + 2]
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    build, names = args[0], args[1:] or BENCHES
    for n in names:
        if n not in BENCHES:
            print(f"run_daemon.py: unknown benchmark '{n}' (known: {' '.join(BENCHES)})",
                  file=sys.stderr)
            return 2
    for prog in ("redis-server", "redis-benchmark", "beanstalkd"):
        if not shutil.which(prog):
            print(f"run_daemon.py: {prog} is missing: run scripts/setup bench", file=sys.stderr)
            return 1

    return drive("run_daemon.py", lambda tmp: Bench(build, tmp), names,
                 lambda b, n: globals()["bench_" + n](b, repeat))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
