#!/usr/bin/env python3
"""Runs the program and plugin stage benchmarks (BENCHMARKS.md, "Program and
plugin stages (issue 4)"), each beside its anchors in the same run, and
prints one summary line per figure.

    tests/bench/run_programs.py BUILD_DIR [--repeat N] [spawn|plugin]...

spawn   10,000 jobs through a one-stage pipeline `Exec = /bin/true`, 2 workers,
        Capacity = 1024 (once with the default Stdout = json, once with
        Stdout = ignore), beside `seq 10000 | xargs -n1 -P2 /bin/true` and
        `seq 10000 | parallel -j2 /bin/true`, and the floor: 2 processes
        doing nothing but posix_spawn + waitpid of /bin/true; 3 runs each by
        default.
plugin  200,000 jobs into a one-stage pipeline, 2 workers, Capacity = 1024,
        `Action = noop` beside `Plugin = BUILD_DIR/.../noop.so`; 5 runs each
        by default. (The engine-level half of this benchmark is
        `bench_engine plugin`, which tests/bench/run runs first.)

Builds nothing: BUILD_DIR must hold daemon/pipelined, tests/bench/bench_daemon
and packaging/examples/plugins/noop.so (tests/bench/run builds them). As in
run_daemon.py, everything runs in a temporary directory, and a fresh daemon is
started for every measured run and stopped after it, whatever happens. The
spawn client is this script (Python: 10 SubmitBatch calls, negligible beside
10,000 spawns); the plugin client is bench_daemon's `batch` mode (C, as in
the daemon benchmarks: at 10^5..10^6 jobs/s the client must not be the limit).

Exit status 0 when every benchmark ran (a missed target is a result, not a
failure); 1 when one could not run or lost jobs; 2 for a usage error.
"""

import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree for the import below
import run_daemon  # noqa: E402 (the daemon benchmarks' driver, beside this file)
from run_daemon import Failed, fmt_rate, median_range  # noqa: E402

BENCHES = ["spawn", "plugin"]

N_SPAWN = 10_000
SPAWN_BATCH = 1000
SPAWN_CAPACITY = 1024
N_PARALLEL = 10_000      # GNU parallel's jobs per run...
N_PARALLEL_SLOW = 2_000  # ...or this many once a run of N_PARALLEL took over:
PARALLEL_SLOW_S = 180.0
N_PLUGIN = 200_000
PLUGIN_IN_FLIGHT = 4
PLUGIN_CAPACITY = 1024
WORKERS = 2

RUN_TIMEOUT = run_daemon.RUN_TIMEOUT
# A spawn run takes ~5 s; a reply that takes longer than this is a hang
# (reported with the daemon's threads' states, then the daemon is stopped).
SPAWN_TIMEOUT = 300


def hz():
    return os.sysconf("SC_CLK_TCK")


def proc_cpu(pid):
    """(utime+stime, cutime+cstime) of pid in seconds: its own threads, and
    the children it has reaped (the programs it ran)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ut, st, cut, cst = (int(x) for x in fields[11:15])
    return (ut + st) / hz(), (cut + cst) / hz()


def thread_cpu(pid):
    """{"loop": s, "workers": s, "other": s}: CPU seconds of the daemon's
    threads. The loop is the main thread (tid == pid), workers are named
    "pl:<stage>", anything else is libuv's thread pool."""
    out = {"loop": 0.0, "workers": 0.0, "other": 0.0}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                text = f.read()
        except OSError:
            continue
        comm = text[text.index("(") + 1:text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / hz()
        if int(tid) == pid:
            out["loop"] += cpu
        elif comm.startswith("pl:"):
            out["workers"] += cpu
        else:
            out["other"] += cpu
    return out


def negative_dentries():
    """The kernel's count of negative dentries (names looked up and found
    missing, cached): /proc/sys/fs/dentry-state, field 5."""
    with open("/proc/sys/fs/dentry-state") as f:
        return int(f.read().split()[4])


def others_by_pid():
    """{pid: (comm, CPU seconds)} of every process outside this script's
    own tree (as run_daemon.others_cpu, with names)."""
    procs = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                text = f.read()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        procs[int(d)] = (int(fields[1]), text[text.index("(") + 1:text.rindex(")")],
                         (int(fields[11]) + int(fields[12])) / hz())
    ours = {os.getpid()}
    changed = True
    while changed:
        changed = False
        for pid, (ppid, _, _) in procs.items():
            if ppid in ours and pid not in ours:
                ours.add(pid)
                changed = True
    return {pid: (comm, cpu) for pid, (_, comm, cpu) in procs.items() if pid not in ours}


def measured(b, fn):
    """run_daemon.measured, naming the busiest other processes when the run
    was not quiet: in the spawn runs that is mostly the kernel's block-layer
    workers (kworker/*-kblockd) doing the discards that the daemon's scratch
    directories cause on a file system mounted with `discard`: work the
    daemon itself induced."""
    before = others_by_pid()
    result = run_daemon.measured(b, fn)
    if b.other and b.other[-1] > 0.05:
        after = others_by_pid()
        top = sorted(((cpu - before.get(pid, ("", 0.0))[1], comm)
                      for pid, (comm, cpu) in after.items()), reverse=True)
        print("  (busiest of them: " +
              ", ".join(f"{comm} {cpu:.2f} s" for cpu, comm in top[:4] if cpu > 0) + ")",
              flush=True)
    return result


class Programs(run_daemon.Bench):
    def __init__(self, build, tmp):
        super().__init__(build, tmp)
        self.build = build
        self.engine_bin = os.path.join(build, "tests", "bench", "bench_engine")
        self.noop_so = os.path.abspath(
            os.path.join(build, "packaging", "examples", "plugins", "noop.so"))
        self.spawn_failed = {}  # Stdout= mode -> jobs failed over all runs

    def daemon_stages(self, pipeline, keys):
        """A fresh pipelined with one pipeline of one stage "s0" given by
        keys ({key: value}, in file order)."""
        self.runs += 1
        conf = os.path.join(self.tmp, f"pipelined-{self.runs}.conf")
        sock = os.path.join(self.tmp, f"p{self.runs}.sock")
        lines = ["[daemon]", f"StateDirectory = {self.tmp}/state", "",
                 f"[pipeline {pipeline}]", f"[stage {pipeline}/s0]"]
        lines += [f"{k} = {v}" for k, v in keys.items()]
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        proc = self.start([self.daemon_bin, "-c", conf, "--socket", sock], sock, "pipelined")
        return proc, sock


# ---- a minimal Varlink client (spawn) -----------------------------------------


class Conn:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(SPAWN_TIMEOUT)
        self.s.connect(path)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def reply(self):
        """The next NUL-terminated reply, as bytes (not parsed)."""
        while b"\0" not in self.buf:
            chunk = self.s.recv(1 << 16)
            if not chunk:
                raise Failed("the daemon hung up")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return msg

    def call(self, method, **params):
        self.send(json.dumps({"method": "io.pipelined." + method,
                              "parameters": params}).encode() + b"\0")
        r = json.loads(self.reply())
        if "error" in r:
            raise Failed(f"{method}: {r}")
        return r.get("parameters", {})

    def close(self):
        self.s.close()


def submit_and_drain(sock, pipeline, n, batch):
    """n jobs of payload {} in SubmitBatch calls of `batch`, all sent at once
    by a writer thread (the daemon holds a call while the first queue is
    full, and stops reading: backpressure); then Drain. Returns (seconds from
    the first send to the Drain reply, seconds to the last SubmitBatch reply,
    ids accepted, the pipeline's Stats).

    Drain, not WaitJob on the last id: with 2 workers the last id can end
    while the other worker still runs an earlier job, and Drain replies only
    when no job is queued or running. It is sent after the last SubmitBatch
    reply, when at most ~1,000 jobs are left; while it waits, every ended job
    wakes the loop (the mailbox's prompt mode), a few us each beside ~0.8 ms
    per job."""
    c = Conn(sock)
    msg = (json.dumps({"method": "io.pipelined.SubmitBatch",
                       "parameters": {"pipeline": pipeline, "payloads": [{}] * batch}},
                      separators=(",", ":")).encode() + b"\0")
    calls = (n + batch - 1) // batch
    err = []

    def writer():
        try:
            for _ in range(calls):
                c.send(msg)
        except OSError as e:
            err.append(e)

    prefix = b'{"parameters":{"ids":['
    t0 = time.monotonic()
    w = threading.Thread(target=writer)
    w.start()
    ids = 0
    for _ in range(calls):
        rep = c.reply()
        if not rep.startswith(prefix):
            raise Failed(f"SubmitBatch: {rep[:200]!r}")
        ids += rep.count(b",") + 1
    t_accepted = time.monotonic() - t0
    w.join()
    if err:
        raise Failed(f"SubmitBatch: {err[0]}")
    c.send(json.dumps({"method": "io.pipelined.Drain",
                       "parameters": {"pipeline": pipeline}}).encode() + b"\0")
    rep = c.reply()
    t_done = time.monotonic() - t0
    if b'"error"' in rep[:20]:
        raise Failed(f"Drain: {rep[:200]!r}")
    stats = c.call("Stats", pipeline=pipeline)["pipelines"][0]
    c.close()
    return t_done, t_accepted, ids, stats


# ---- spawn ----------------------------------------------------------------------


def run_daemon_spawn(b, stdout_mode):
    keys = {"Exec": "/bin/true", "Workers": WORKERS, "Capacity": SPAWN_CAPACITY}
    if stdout_mode:
        keys["Stdout"] = stdout_mode
    proc, sock = b.daemon_stages("true", keys)
    try:
        cpu0, child0 = proc_cpu(proc.pid)
        th0, neg0 = thread_cpu(proc.pid), negative_dentries()
        try:
            t_done, t_acc, ids, st = submit_and_drain(sock, "true", N_SPAWN, SPAWN_BATCH)
        except socket.timeout:
            print(f"  !! no reply for {SPAWN_TIMEOUT} s; the daemon's threads:", flush=True)
            for tid in sorted(os.listdir(f"/proc/{proc.pid}/task")):
                t = f"/proc/{proc.pid}/task/{tid}"
                try:
                    with open(f"{t}/comm") as f, open(f"{t}/wchan") as g:
                        print(f"     {tid} {f.read().strip()}: {g.read().strip()}")
                except OSError:
                    pass
            print("     its fds: " + ", ".join(
                f"{fd}->{os.readlink(f'/proc/{proc.pid}/fd/{fd}')}"
                for fd in sorted(os.listdir(f"/proc/{proc.pid}/fd"), key=int)), flush=True)
            b.failed.append(f"spawn (Stdout = {stdout_mode or 'json'}): the daemon hung "
                            f"(no reply in {SPAWN_TIMEOUT} s)")
            return None  # left out of the medians; the other runs go on
        cpu1, child1 = proc_cpu(proc.pid)
        th1, neg1 = thread_cpu(proc.pid), negative_dentries()
        threads = {k: th1[k] - th0.get(k, 0.0) for k in th1}
        errors = {}
        if st["failed"]:
            c = Conn(sock)
            for j in c.call("ListJobs", pipeline="true", state="failed", limit=1000)["jobs"]:
                errors[j.get("error")] = errors.get(j.get("error"), 0) + 1
            c.close()
    finally:
        b.stop_one(proc)
    label = f"Stdout = {stdout_mode or 'json (default)'}"
    print(f"daemon, {label}: {N_SPAWN} jobs in {t_done:.3f} s = {N_SPAWN / t_done:,.0f} jobs/s "
          f"(all accepted after {t_acc:.3f} s); ids {ids}, done {st['done']}, "
          f"failed {st['failed']}", flush=True)
    print(f"  CPU: daemon {cpu1 - cpu0:.2f} s ({(cpu1 - cpu0) / N_SPAWN * 1e6:.0f} us/job: "
          f"loop {threads['loop']:.2f} s, workers {threads['workers']:.2f} s, "
          f"other {threads['other']:.2f} s), the programs {child1 - child0:.2f} s "
          f"({(child1 - child0) / N_SPAWN * 1e6:.0f} us/job); negative dentries "
          f"{neg1 - neg0:+,}", flush=True)
    for e, k in sorted(errors.items(), key=lambda x: -x[1]):
        print(f"  !! {k} jobs failed: {e}", flush=True)
    if st["failed"]:
        b.spawn_failed[stdout_mode] = b.spawn_failed.get(stdout_mode, 0) + st["failed"]
    if ids != N_SPAWN or st["done"] != N_SPAWN:
        b.failed.append(f"spawn ({label}): ids {ids}, done {st['done']} of {N_SPAWN}; "
                        f"failed {st['failed']} ({'; '.join(errors)})")
    return N_SPAWN / t_done


def run_shell(b, what, n, cmd):
    """Wall time of a shell pipeline, and the CPU of everything it ran."""
    print(f"$ {cmd}", flush=True)
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    try:
        p = subprocess.run(["sh", "-c", cmd], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise Failed(f"{what} did not finish in {RUN_TIMEOUT} s")
    dt = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if p.returncode != 0 or p.stderr.strip():
        raise Failed(f"{what} exited with {p.returncode}: {p.stderr[-300:]!r}")
    print(f"{what}: {n} jobs in {dt:.3f} s = {n / dt:,.0f} jobs/s; CPU {cpu:.2f} s "
          f"({cpu / n * 1e6:.0f} us/job, {what} and the programs)", flush=True)
    return n / dt, dt


# Each of WORKERS processes runs its share of /bin/true one at a time, with
# glibc's posix_spawn (os.posix_spawn) and waitpid, and nothing else: no
# pipes, no scratch directory, no queue. What the two cores give when
# spawning is all there is to do.
FLOOR_CHILD = (
    "import os,sys\n"
    "for _ in range(int(sys.argv[1])):\n"
    "    os.waitpid(os.posix_spawn('/bin/true', ['/bin/true'], os.environ), 0)\n")


def run_floor(n):
    print(f"$ {WORKERS} x python3 -c 'os.posix_spawn(\"/bin/true\") + waitpid' x {n // WORKERS}",
          flush=True)
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-c", FLOOR_CHILD, str(n // WORKERS)])
             for _ in range(WORKERS)]
    codes = [p.wait() for p in procs]
    dt = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if any(codes):
        raise Failed(f"the posix_spawn loop exited with {codes}")
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    print(f"posix_spawn floor: {n} spawns in {dt:.3f} s = {n / dt:,.0f}/s "
          f"({dt / (n / WORKERS) * 1e6:.0f} us per spawn+wait on each of {WORKERS}); CPU "
          f"{cpu / n * 1e6:.0f} us per spawn (the loop and the program)", flush=True)
    return n / dt


def bench_spawn(b, repeat):
    for prog in ("xargs", "parallel", "seq"):
        if not shutil.which(prog):
            raise Failed(f"{prog} is missing: run scripts/setup bench")
    ver = subprocess.run(["parallel", "--version"], capture_output=True, text=True).stdout
    print(f"# {ver.splitlines()[0] if ver else 'parallel: no version'}; "
          f"{subprocess.run(['xargs', '--version'], capture_output=True, text=True).stdout.splitlines()[0]}",
          flush=True)
    rows = {"spawn": [], "spawn-ignore": [], "xargs": [], "parallel": [], "floor": []}
    n_par = N_PARALLEL
    for i in range(repeat):
        print(f"--- spawn run {i + 1} of {repeat}", flush=True)
        rows["spawn"].append(measured(b, lambda: run_daemon_spawn(b, None)))
        rows["spawn-ignore"].append(measured(b, lambda: run_daemon_spawn(b, "ignore")))
        rows["xargs"].append(measured(b, lambda: run_shell(
            b, "xargs", N_SPAWN, f"seq {N_SPAWN} | xargs -n1 -P{WORKERS} /bin/true")[0]))
        rows["floor"].append(measured(b, lambda: run_floor(N_SPAWN)))
        rate, dt = measured(b, lambda: run_shell(
            b, "parallel", n_par, f"seq {n_par} | parallel -j{WORKERS} /bin/true"))
        rows["parallel"].append(rate)
        if n_par == N_PARALLEL and dt > PARALLEL_SLOW_S:
            n_par = N_PARALLEL_SLOW
            print(f"  (parallel took over {PARALLEL_SLOW_S:.0f} s: {n_par} jobs from now on; "
                  "jobs/s compared)", flush=True)

    xm = statistics.median(rows["xargs"])
    pm = statistics.median(rows["parallel"])
    fm = statistics.median(rows["floor"])
    for name in ("xargs", "parallel", "floor"):
        m, lo, hi = median_range(rows[name])
        print(f"{name}: {', '.join(fmt_rate(x) for x in rows[name])}", flush=True)
        b.report(name, f"{fmt_rate(m)} median of {repeat} [{lo:,.0f}..{hi:,.0f}]", "-", "-",
                 "(anchor)", "-")
    for name in ("spawn", "spawn-ignore"):
        pairs = [(o, x, p) for o, x, p in zip(rows[name], rows["xargs"], rows["parallel"])
                 if o is not None]
        failed = b.spawn_failed.get("ignore" if name == "spawn-ignore" else None, 0)
        if not pairs:
            b.report(name, "no run finished (see FAILED)", "-", "-", "-", "-")
            continue
        xs = [o for o, _, _ in pairs]
        m, lo, hi = median_range(xs)
        rx = [o / x for o, x, _ in pairs]
        rp = [o / p for o, _, p in pairs]
        print(f"{name}: {', '.join(fmt_rate(x) for x in xs)}; pair ratios vs xargs "
              f"{', '.join(f'{r:.2f}x' for r in rx)}, vs parallel "
              f"{', '.join(f'{r:.2f}x' for r in rp)}", flush=True)
        b.report(name, f"{fmt_rate(m)} median of {len(xs)} [{lo:,.0f}..{hi:,.0f}]",
                 f"xargs -P2 {fmt_rate(xm)}, parallel -j2 {fmt_rate(pm)}",
                 f"{m / xm:.2f}x xargs (pairs {min(rx):.2f}..{max(rx):.2f}), "
                 f"{m / pm:.2f}x parallel (pairs {min(rp):.2f}..{max(rp):.2f}); "
                 f"{m / fm:.0%} of the posix_spawn floor",
                 ">= 1.0x xargs, >= 6x parallel",
                 f"xargs {'yes' if m / xm >= 1.0 else 'NO'}, "
                 f"parallel {'yes' if m / pm >= 6.0 else 'NO'}" +
                 (f" -- BUT {failed} jobs failed over the runs (see FAILED)" if failed else ""))


# ---- plugin (daemon level) --------------------------------------------------------


def run_daemon_plugin(b, keys):
    keys = dict(keys, Workers=WORKERS, Capacity=PLUGIN_CAPACITY)
    proc, sock = b.daemon_stages("bench", keys)
    try:
        th0, neg0, t0 = thread_cpu(proc.pid), negative_dentries(), time.monotonic()
        r = b.client(["batch", sock, "bench", N_PLUGIN, PLUGIN_IN_FLIGHT])
        th1, neg1, wall = thread_cpu(proc.pid), negative_dentries(), time.monotonic() - t0
    finally:
        b.stop_one(proc)
    if "batch" not in r:
        raise Failed("bench_daemon batch printed no result")
    t = {k: th1[k] - th0.get(k, 0.0) for k in th1}
    print(f"  daemon threads' CPU while bench_daemon ran ({wall:.2f} s): loop {t['loop']:.2f} s "
          f"({t['loop'] / wall * 100:.0f} % of it), workers {t['workers']:.2f} s "
          f"({t['workers'] / N_PLUGIN * 1e6:.2f} us/job), other {t['other']:.2f} s; "
          f"negative dentries {neg1 - neg0:+,}", flush=True)
    return float(r["batch"]["done_jobs_per_s"])


def bench_plugin(b, repeat):
    if not os.access(b.noop_so, os.R_OK):
        raise Failed(f"{b.noop_so} is missing: build it first (tests/bench/run does)")
    builtin, plugin = [], []
    for i in range(repeat):
        print(f"--- plugin run {i + 1} of {repeat}", flush=True)
        print("# Action = noop", flush=True)
        builtin.append(measured(b, lambda: run_daemon_plugin(b, {"Action": "noop"})))
        print(f"# Plugin = {b.noop_so}", flush=True)
        plugin.append(measured(b, lambda: run_daemon_plugin(b, {"Plugin": b.noop_so})))
    bm, blo, bhi = median_range(builtin)
    pm, plo, phi = median_range(plugin)
    ratios = [p / q for p, q in zip(plugin, builtin)]
    print(f"plugin-daemon: Plugin = noop.so {', '.join(fmt_rate(x) for x in plugin)}; "
          f"Action = noop {', '.join(fmt_rate(x) for x in builtin)}; pair ratios "
          f"{', '.join(f'{r:.2f}x' for r in ratios)}", flush=True)
    b.report("plugin-daemon", f"{fmt_rate(pm)} median of {repeat} [{plo:,.0f}..{phi:,.0f}]",
             f"Action = noop {fmt_rate(bm)} median [{blo:,.0f}..{bhi:,.0f}]",
             f"{pm / bm:.2f}x (pairs {min(ratios):.2f}..{max(ratios):.2f})", "none set",
             "n/a (no target)")


def main(argv):
    args = argv[1:]
    repeat = None
    if "--repeat" in args:
        i = args.index("--repeat")
        try:
            repeat = int(args[i + 1])
        except (IndexError, ValueError):
            print("run_programs.py: --repeat needs a number", file=sys.stderr)
            return 2
        del args[i:i + 2]
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    build, names = args[0], args[1:] or BENCHES
    for n in names:
        if n not in BENCHES:
            print(f"run_programs.py: unknown benchmark '{n}' (known: {' '.join(BENCHES)})",
                  file=sys.stderr)
            return 2
    defaults = {"spawn": 3, "plugin": 5}

    return run_daemon.drive("run_programs.py", lambda tmp: Programs(build, tmp), names,
                            lambda b, n: globals()["bench_" + n](b, repeat or defaults[n]))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
