#!/usr/bin/env python3
"""Durable submit benchmark: pipelined with its journal (Durability = full)
beside beanstalkd with a binlog, on the same disk, in the same run.

    tests/bench/run_durable.py BUILD_DIR [--repeat N (3)] [--duration S (5)]
        [--durability auto|full|omit (auto)] [--dir PARENT] [--servers LIST]
        [--shapes LIST] [--strace SECONDS (1; 0: no check)]
        [--wait-quiet SECONDS (120; 0: do not wait)]

Shapes (each a fixed duration, jobs/s reported):
  c1     1 client, one job per round trip (Submit / one `put`, wait, next)
  c50    50 clients, each its own connection, one job per round trip each;
         all 50 driven by one single-threaded selectors loop
  batch  1 client, 100 jobs per round trip: SubmitBatch of 100 payloads for
         pipelined; beanstalkd has no batch put, so 100 `put` commands written
         at once (pipelined on the connection) and 100 replies read
  pipe   1 client, 100 separate Submit calls written at once and 100 replies
         read: for beanstalkd the same as batch (100 `put`s), for pipelined
         one call per job (each reply waits for its job's commit; the calls
         after it share the commits)

Servers (a fresh one for every measurement, stopped after it):
  pipelined       one stage, Action = noop, Capacity = 100000 (the queue never
                  fills: the journal is measured, not backpressure), with
                  `Durability = full` (--durability full), or without the key
                  (--durability omit: today's daemon, memory only); auto (the
                  default) writes the key when the daemon accepts it and omits
                  it otherwise, and says which in every label
  pipelined-none  `Durability = none`: the memory-only ceiling; run only when
                  the daemon accepts the key (tried once at start)
  bs-f0           beanstalkd -b DIR -f0: fsync after every binlog write
  bs-f50          beanstalkd -b DIR -f50: fsync at most every 50 ms; it replies
                  INSERTED before the fsync, so up to 50 ms of acknowledged
                  jobs can be lost: the relaxed anchor, not an equal one
  bs-mem          beanstalkd without -b (no binlog): not run unless asked
                  (--servers), to check that the -b figures pay for the disk

Every measurement is repeated N times, interleaved (per round, per shape:
each server in turn), and the median reported, with the ratio pipelined /
bs-f0 per round and of the medians. The state directory and beanstalkd's
binlog directories live in one temporary directory (default: under BUILD_DIR,
which is on the repository's file system; never /tmp if that is a tmpfs),
whose file system is printed, along with its raw fdatasync rate (500 x
write 100 bytes + fdatasync), which bounds every 1-client durable figure.
The payload is the same 57-byte JSON object for every server.

The client is this script (Python, standard library). Its CPU use is printed
with each figure: near 100 % of a core means the figure is the client's limit,
not the server's (expected for the memory-only figures, not for the durable
ones). With one request in flight (c1, batch) client and server take turns,
so it is their sum near one core that marks a figure as CPU-bound. Before each measurement the driver waits (up to --wait-quiet
seconds) for a second in which other processes used under 5 % of a core, and
each figure says how much CPU they used meanwhile (NOT QUIET above 5 %: the
disk is shared, so a neighbour's fsyncs show in ours). pipelined's Stats
journal object (when present) is read before and
after each measurement: commits, changes and jobs per commit in the phase.

Exit status 0 when every measurement ran; 1 when one could not run (or got an
error reply, or the daemon's accepted count disagrees with the replies); 2 for
a usage error.
"""

import json
import os
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
from run_daemon import Failed, Servers, others_cpu, wait_for_socket  # noqa: E402

SHAPES = ["c1", "c50", "batch", "pipe"]
SERVERS_DEFAULT = ["pipelined", "bs-f0", "bs-f50", "pipelined-none"]
SERVERS_ALL = SERVERS_DEFAULT + ["bs-mem"]
CLIENTS = 50
BATCH = 100
CAPACITY = 100_000
FSYNC_LOOPS = 500

# The same 57 bytes as bench_daemon's payload (tests/bench/bench_daemon.c).
PAYLOAD = b'{"url":"http://127.0.0.1:8080/img/000001.png","size":640}'

CLIENT_BOUND = 0.90  # client CPU share of one core above which a figure is flagged


def fs_report(path):
    """(type, device, mount point) of the file system holding path."""
    fstype = subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True,
                            text=True).stdout.strip()
    df = subprocess.run(["df", "-PT", path], capture_output=True, text=True).stdout.split("\n")
    fields = df[1].split() if len(df) > 1 else ["?"] * 7
    return fstype, fields[0], fields[-1], fields[1]


def fsync_rate(d, n=FSYNC_LOOPS):
    """Raw syncs/s of the disk under d: (append 100 bytes + fdatasync) n times,
    then (overwrite the same 100 bytes in place + fdatasync) n times."""
    out = {}
    data = b"x" * 99 + b"\n"
    path = os.path.join(d, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        t0 = time.monotonic()
        for _ in range(n):
            os.write(fd, data)
            os.fdatasync(fd)
        out["append"] = n / (time.monotonic() - t0)
        t0 = time.monotonic()
        for _ in range(n):
            os.pwrite(fd, data, 0)
            os.fdatasync(fd)
        out["overwrite"] = n / (time.monotonic() - t0)
    finally:
        os.close(fd)
        os.unlink(path)
    return out


def wait_quiet(limit):
    """Waits (up to limit seconds) for a second in which processes outside
    this benchmark used under 5 % of a core; returns the seconds waited, or
    None when the machine never got quiet."""
    t0 = time.monotonic()
    while True:
        a = others_cpu()
        time.sleep(1.0)
        b = others_cpu()
        if sum(c - a.get(pid, 0.0) for pid, c in b.items()) < 0.05:
            return time.monotonic() - t0
        if time.monotonic() - t0 > limit:
            return None


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for_tcp(port, proc, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Failed(f"{what} exited with status {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise Failed(f"{what} is not listening on 127.0.0.1:{port} after {timeout} s")


# ---- protocols --------------------------------------------------------------


class Proto:
    """How one shape talks to one server: the bytes of one request, how many
    jobs it carries, the reply separator, how many replies it gets back, and
    how to tell an error reply."""

    def __init__(self, req, jobs, sep, replies, ok):
        self.req, self.jobs, self.sep, self.replies, self.ok = req, jobs, sep, replies, ok


def varlink_proto(pipeline, batch, pipelined=False):
    if pipelined:  # batch separate Submits in one write
        one = varlink_proto(pipeline, 1)
        return Proto(one.req * batch, batch, b"\0", batch, one.ok)
    if batch == 1:
        msg = {"method": "io.pipelined.Submit",
               "parameters": {"pipeline": pipeline, "payload": "@P@"}}
    else:
        msg = {"method": "io.pipelined.SubmitBatch",
               "parameters": {"pipeline": pipeline, "payloads": ["@P@"] * batch}}
    req = json.dumps(msg, separators=(",", ":")).encode().replace(b'"@P@"', PAYLOAD) + b"\0"
    return Proto(req, batch, b"\0", 1, lambda m: m.startswith(b'{"parameters":{"id'))


def beanstalk_proto(batch):
    put = b"put 1024 0 60 %d\r\n%s\r\n" % (len(PAYLOAD), PAYLOAD)
    return Proto(put * batch, batch, b"\r\n", batch, lambda m: m.startswith(b"INSERTED "))


def drive(connect, proto, nconn, duration):
    """Opens nconn connections, then keeps one request in flight on each for
    duration seconds (a new one as soon as every reply of the last is in);
    returns (jobs, seconds, client CPU share of one core)."""
    socks = [connect() for _ in range(nconn)]
    sel = selectors.DefaultSelector()
    try:
        state = {}
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
            state[s] = [b"", 0]  # buffer, replies still due
        req, sep, per, ok = proto.req, proto.sep, proto.replies, proto.ok
        requests = 0
        c0, t0 = time.process_time(), time.monotonic()
        deadline = t0 + duration
        for s in socks:
            s.sendall(req)
            state[s][1] = per
        active = nconn
        last = t0
        while active:
            events = sel.select(30)
            if not events and time.monotonic() > deadline + 60:
                raise Failed("no reply for 60 s after the deadline")
            for key, _ in events:
                s = key.fileobj
                st = state[s]
                data = s.recv(262144)
                if not data:
                    raise Failed("the server closed a connection")
                parts = (st[0] + data).split(sep)
                st[0] = parts.pop()
                for m in parts:
                    if not ok(m):
                        raise Failed(f"error reply: {m[:300]!r}")
                st[1] -= len(parts)
                if st[1] == 0:
                    requests += 1
                    last = time.monotonic()
                    if last < deadline:
                        s.sendall(req)
                        st[1] = per
                    else:
                        sel.unregister(s)
                        active -= 1
                elif st[1] < 0:
                    raise Failed("more replies than requests")
        wall = last - t0
        return requests * proto.jobs, wall, (time.process_time() - c0) / wall
    finally:
        sel.close()
        for s in socks:
            s.close()


# ---- servers ----------------------------------------------------------------


class Bench(Servers):
    def __init__(self, build, tmp, durability):
        self.daemon_bin = os.path.join(build, "daemon", "pipelined")
        if not os.access(self.daemon_bin, os.X_OK):
            raise Failed(f"{self.daemon_bin} is missing: build it first (tests/bench/run does)")
        self.beanstalkd = shutil.which("beanstalkd")
        if not self.beanstalkd:
            raise Failed("beanstalkd is missing: run scripts/setup bench")
        self.tmp = tmp
        self.runs = 0
        self.procs = []
        self.durability = durability  # "full" or None (key omitted)

    def start(self, argv, what, wait):
        log = open(os.path.join(self.tmp, f"{what}.log"), "ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        self.procs.append((proc, what))
        try:
            wait(proc)
        except Failed:
            self.stop_one(proc)
            raise
        return proc

    def pipelined(self, durability):
        """A fresh daemon on a fresh state directory; durability None omits
        the key. Returns (proc, socket path)."""
        self.runs += 1
        conf = os.path.join(self.tmp, f"pipelined-{self.runs}.conf")
        sock = os.path.join(self.tmp, f"p{self.runs}.sock")
        state = os.path.join(self.tmp, f"state-{self.runs}")
        lines = ["[daemon]", f"StateDirectory = {state}"]
        if durability is not None:
            lines.append(f"Durability = {durability}")
        lines += ["", "[pipeline bench]", "[stage bench/s0]", "Action = noop", "Workers = 1",
                  f"Capacity = {CAPACITY}"]
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.last_state = state
        proc = self.start([self.daemon_bin, "-c", conf, "--socket", sock], "pipelined",
                          lambda p: wait_for_socket(sock, p, "pipelined"))
        return proc, sock

    def accepts(self, key_value):
        """Whether the daemon starts with `Durability = key_value`."""
        try:
            proc, _ = self.pipelined(key_value)
        except Failed:
            return False
        self.stop_one(proc)
        return True

    def beanstalk(self, fsync_ms):
        """A fresh beanstalkd on a free loopback port; fsync_ms None: no binlog."""
        self.runs += 1
        port = free_port()
        argv = [self.beanstalkd, "-l", "127.0.0.1", "-p", str(port)]
        if fsync_ms is not None:
            binlog = os.path.join(self.tmp, f"binlog-{self.runs}")
            os.mkdir(binlog)
            argv += ["-b", binlog, f"-f{fsync_ms}"]
        proc = self.start(argv, "beanstalkd", lambda p: wait_for_tcp(port, p, "beanstalkd"))
        return proc, port


def varlink_call(sock_path, method, params=None):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(sock_path)
        s.sendall(json.dumps({"method": method, "parameters": params or {}}).encode() + b"\0")
        buf = b""
        while b"\0" not in buf:
            d = s.recv(65536)
            if not d:
                raise Failed(f"{method}: connection closed")
            buf += d
        return json.loads(buf.split(b"\0", 1)[0])
    finally:
        s.close()


def stats(sock_path):
    """(accepted in pipeline bench, journal object or None)."""
    p = varlink_call(sock_path, "io.pipelined.Stats").get("parameters", {})
    accepted = sum(pl.get("accepted", 0) for pl in p.get("pipelines", []))
    return accepted, p.get("journal")


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


# ---- one measurement --------------------------------------------------------


SYNC_CALLS = ("fsync", "fdatasync", "sync_file_range", "msync", "syncfs", "sync")


class Strace:
    """strace -c -f attached to a running server (every thread): counts its
    sync system calls until stopped."""

    def __init__(self, pid, out):
        self.out = out
        self.proc = subprocess.Popen(
            ["strace", "-f", "-c", "-o", out, "-e", "trace=" + ",".join(SYNC_CALLS),
             "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # strace says "Process N attached" once per thread; give it time to.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not os.path.exists(f"/proc/{self.proc.pid}"):
            time.sleep(0.01)
        time.sleep(0.5)

    def stop(self):
        """{syscall: calls}."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        calls = {}
        try:
            text = open(self.out).read()
        except OSError:
            return calls
        for line in text.splitlines():
            f = line.split()
            if len(f) >= 5 and f[-1] in SYNC_CALLS and f[3].isdigit():
                calls[f[-1]] = int(f[3])
        return calls


def measure(b, server, shape, duration, trace=False):
    """Runs one shape against a fresh server; returns a dict (rate, ...).
    trace: count the server's sync calls with strace meanwhile (a check, not
    a measurement: strace slows every traced call)."""
    nconn = CLIENTS if shape == "c50" else 1
    batch = BATCH if shape in ("batch", "pipe") else 1
    res = {}
    tracer = None
    if server.startswith("pipelined"):
        dur = "none" if server == "pipelined-none" else b.durability
        proc, sock = b.pipelined(dur)
        try:
            acc0, j0 = stats(sock)

            def connect():
                s = socket.socket(socket.AF_UNIX)
                s.connect(sock)
                return s

            if trace:
                tracer = Strace(proc.pid, os.path.join(b.tmp, "strace.out"))
            cpu0 = cpu_seconds(proc.pid)
            jobs, wall, client = drive(connect, varlink_proto("bench", batch, shape == "pipe"),
                                       nconn, duration)
            res["server_cpu"] = (cpu_seconds(proc.pid) - cpu0) / wall
            if tracer:
                res["syncs"] = tracer.stop()
            acc1, j1 = stats(sock)
            if acc1 - acc0 != jobs:
                raise Failed(f"the daemon accepted {acc1 - acc0} jobs, the client counted {jobs}")
            if j0 is not None and j1 is not None:
                res["journal"] = {"before": j0, "after": j1}
            elif dur == "full":
                print("  !! Durability = full, but Stats has no journal object", flush=True)
            res["disk_bytes"] = du(b.last_state)
        finally:
            if tracer:
                tracer.stop()
            b.stop_one(proc)
    else:
        fsync_ms = {"bs-f0": 0, "bs-f50": 50, "bs-mem": None}[server]
        proc, port = b.beanstalk(fsync_ms)
        try:
            if trace:
                tracer = Strace(proc.pid, os.path.join(b.tmp, "strace.out"))
            cpu0 = cpu_seconds(proc.pid)
            jobs, wall, client = drive(
                lambda: socket.create_connection(("127.0.0.1", port)),
                beanstalk_proto(batch), nconn, duration)
            res["server_cpu"] = (cpu_seconds(proc.pid) - cpu0) / wall
            if tracer:
                res["syncs"] = tracer.stop()
        finally:
            if tracer:
                tracer.stop()
            b.stop_one(proc)
    res.update(jobs=jobs, wall=wall, rate=jobs / wall, client_cpu=client)
    return res


def journal_line(j, jobs):
    """Phase deltas of the journal counters."""
    a, z = j["before"], j["after"]
    commits = z.get("commits", 0) - a.get("commits", 0)
    changes = z.get("changes", 0) - a.get("changes", 0)
    jj = z.get("jobs", 0) - a.get("jobs", 0)
    per = f"{jobs / commits:,.1f}" if commits else "-"
    cpc = f"{changes / commits:,.1f}" if commits else "-"
    return (f"journal: {commits:,} commits, {changes:,} changes, {jj:,} jobs journaled; "
            f"jobs/commit {per}, changes/commit {cpc}; "
            f"durability {z.get('durability')}, db {z.get('db_bytes', 0):,} B, "
            f"wal {z.get('wal_bytes', 0):,} B"), (jobs / commits if commits else None)


def main(argv):
    args = argv[1:]
    opts = {"--repeat": "3", "--duration": "5", "--durability": "auto", "--dir": None,
            "--servers": ",".join(SERVERS_DEFAULT), "--shapes": ",".join(SHAPES),
            "--strace": "1", "--wait-quiet": "120"}
    rest = []
    i = 0
    while i < len(args):
        if args[i] in opts:
            if i + 1 >= len(args):
                print(f"run_durable.py: {args[i]} needs a value", file=sys.stderr)
                return 2
            opts[args[i]] = args[i + 1]
            i += 2
        else:
            rest.append(args[i])
            i += 1
    if len(rest) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    build = rest[0]
    try:
        repeat = int(opts["--repeat"])
        duration = float(opts["--duration"])
        float(opts["--strace"])
        quiet_s = float(opts["--wait-quiet"])
    except ValueError:
        print("run_durable.py: --repeat, --duration, --strace and --wait-quiet need numbers",
              file=sys.stderr)
        return 2
    servers = [s for s in opts["--servers"].split(",") if s]
    shapes = [s for s in opts["--shapes"].split(",") if s]
    bad = [s for s in servers if s not in SERVERS_ALL] + [s for s in shapes if s not in SHAPES]
    if bad or opts["--durability"] not in ("auto", "full", "omit") or repeat < 1:
        print(f"run_durable.py: bad option value(s) {bad or opts['--durability']} "
              f"(servers: {' '.join(SERVERS_ALL)}; shapes: {' '.join(SHAPES)}; "
              "durability: auto full omit)", file=sys.stderr)
        return 2

    parent = opts["--dir"] or build
    tmp = tempfile.mkdtemp(prefix="durable-", dir=os.path.abspath(parent))
    b = None
    failed = []
    try:
        fstype, dev, mnt, dftype = fs_report(tmp)
        print(f"directory {tmp}: file system {fstype} ({dftype}), device {dev}, "
              f"mounted on {mnt}", flush=True)
        if fstype in ("tmpfs", "ramfs"):
            print("!! the directory is on a memory file system: fsync costs nothing here; "
                  "pass --dir on a disk", flush=True)
        quiet_s = float(opts["--wait-quiet"])
        if quiet_s > 0:
            wait_quiet(quiet_s)
        fr = fsync_rate(tmp)
        print(f"raw disk: write 100 B + fdatasync x{FSYNC_LOOPS}: append {fr['append']:,.0f}/s "
              f"({1e6 / fr['append']:.0f} us each), overwrite in place "
              f"{fr['overwrite']:,.0f}/s ({1e6 / fr['overwrite']:.0f} us each)", flush=True)

        b = Bench(build, tmp, None)
        mode = opts["--durability"]
        if mode in ("auto", "full"):
            if b.accepts("full"):
                b.durability = "full"
            elif mode == "full":
                raise Failed("the daemon rejects `Durability = full` (see pipelined.log); "
                             "use --durability omit for a daemon without the journal")
        label = {"full": "pipelined-full", None: "pipelined-nokey"}[b.durability]
        print(f"pipelined: {'Durability = full' if b.durability else 'no Durability key'} "
              f"({'accepted' if b.durability else 'not written: this daemon has no journal'})",
              flush=True)
        if "pipelined-none" in servers:
            if b.accepts("none"):
                print("pipelined-none: Durability = none accepted (memory-only ceiling)")
            else:
                print("pipelined-none: Durability = none rejected by this daemon: skipped")
                servers.remove("pipelined-none")
        names = {s: (label if s == "pipelined" else s) for s in servers}
        print(f"payload {len(PAYLOAD)} bytes: {PAYLOAD.decode()}", flush=True)
        print(f"{repeat} rounds x {len(shapes)} shapes x {len(servers)} servers, {duration:g} s "
              "each, a fresh server per measurement", flush=True)

        strace_s = float(opts["--strace"])
        if strace_s > 0 and not shutil.which("strace"):
            print("strace is missing: no sync-call check", flush=True)
            strace_s = 0
        if strace_s > 0:
            print(f"--- check: the servers' sync calls, strace -f -c attached for {strace_s:g} s "
                  "per server and shape (not measured: strace slows them)", flush=True)
            for sh in shapes:
                for sv in servers:
                    try:
                        res = measure(b, sv, sh, strace_s, trace=True)
                    except Failed as e:
                        print(f"!! strace check {sh} {names[sv]}: {e}", flush=True)
                        failed.append(f"strace check {sh} {names[sv]}: {e}")
                        b.stop_all()
                        continue
                    calls = res.get("syncs", {})
                    n = sum(calls.values())
                    detail = ", ".join(f"{k} {v:,}" for k, v in sorted(calls.items())) or "none"
                    line = (f"syncs {sh:5} {names[sv]:16} {n:>8,} sync calls for "
                            f"{res['jobs']:>8,} jobs: {n / max(res['jobs'], 1):.3f} per job "
                            f"({detail})")
                    if "journal" in res:
                        jl, _ = journal_line(res["journal"], res["jobs"])
                        line += "; " + jl.split(";")[0]
                    print(line, flush=True)
            print("--- measurements", flush=True)

        results = {(sv, sh): [] for sv in servers for sh in shapes}
        noisy = []
        jpc = {(sv, sh): [] for sv in servers for sh in shapes}
        for r in range(repeat):
            for sh in shapes:
                for sv in servers:
                    if quiet_s > 0:
                        waited = wait_quiet(quiet_s)
                        if waited is None:
                            print(f"  (not quiet after waiting {quiet_s:g} s: measuring anyway)",
                                  flush=True)
                        elif waited > 1.5:
                            print(f"  (waited {waited:.0f} s for other processes to go quiet)",
                                  flush=True)
                    try:
                        t0, o0 = time.monotonic(), others_cpu()
                        res = measure(b, sv, sh, duration)
                        o1, wall = others_cpu(), time.monotonic() - t0
                        other = sum(c - o0.get(pid, 0.0) for pid, c in o1.items()) / wall
                        noisy.append(other)
                    except Failed as e:
                        print(f"!! round {r + 1} {sh} {names[sv]}: {e}", flush=True)
                        failed.append(f"{sh} {names[sv]}: {e}")
                        b.stop_all()
                        continue
                    results[(sv, sh)].append(res["rate"])
                    flag = "  (client-bound?)" if res["client_cpu"] > CLIENT_BOUND else ""
                    if (sh != "c50" and not flag
                            and res["client_cpu"] + res["server_cpu"] > CLIENT_BOUND):
                        # One request in flight: client and server take turns,
                        # so their CPU adds up to one core at most.
                        flag = "  (CPU-bound round trip: client + server ~ 1 core)"
                    line = (f"round {r + 1} {sh:5} {names[sv]:16} {res['rate']:>10,.0f} jobs/s  "
                            f"({res['jobs']:,} in {res['wall']:.2f} s; CPU server "
                            f"{res['server_cpu'] * 100:.0f}%, client "
                            f"{res['client_cpu'] * 100:.0f}%{flag}, other processes "
                            f"{other * 100:.0f}%{'  !! NOT QUIET' if other > 0.05 else ''})")
                    if "disk_bytes" in res:
                        line += f" state dir {res['disk_bytes']:,} B"
                    print(line, flush=True)
                    if "journal" in res:
                        text, per = journal_line(res["journal"], res["jobs"])
                        print("        " + text, flush=True)
                        if per is not None:
                            jpc[(sv, sh)].append(per)

        print()
        print("SUMMARY durable submit: jobs/s, median of "
              f"{repeat} [min..max]; {duration:g} s per measurement")
        width = max(len(n) for n in names.values())
        header = f"{'server':{width}}" + "".join(f" | {sh:>28}" for sh in shapes)
        print(header)
        print("-" * len(header))
        for sv in servers:
            row = f"{names[sv]:{width}}"
            for sh in shapes:
                xs = results[(sv, sh)]
                cell = (f"{statistics.median(xs):,.0f} [{min(xs):,.0f}..{max(xs):,.0f}]"
                        if xs else "-")
                row += f" | {cell:>28}"
            print(row)
        if any(jpc.values()):
            row = f"{'jobs/commit':{width}}"
            for sh in shapes:
                xs = jpc.get(("pipelined", sh), [])
                row += f" | {(f'{statistics.median(xs):,.1f}' if xs else '-'):>28}"
            print(row)
        if "pipelined" in servers and "bs-f0" in servers:
            print()
            for sh in shapes:
                ours, anchor = results[("pipelined", sh)], results[("bs-f0", sh)]
                if not ours or not anchor or len(ours) != len(anchor):
                    continue
                pairs = [o / a for o, a in zip(ours, anchor)]
                print(f"RATIO {sh:5} {label} / bs-f0: rounds "
                      f"{', '.join(f'{x:.2f}x' for x in pairs)}; median of rounds "
                      f"{statistics.median(pairs):.2f}x; ratio of medians "
                      f"{statistics.median(ours) / statistics.median(anchor):.2f}x")
        print("(batch for beanstalkd: 100 `put` commands written at once, 100 replies read; "
              "it has no batch put)")
        if quiet_s > 0:
            wait_quiet(quiet_s)
        fr = fsync_rate(tmp)
        print(f"raw disk after the measurements: append {fr['append']:,.0f}/s, overwrite in place "
              f"{fr['overwrite']:,.0f}/s")
        if noisy:
            print(f"QUIET {sum(1 for x in noisy if x <= 0.05)} of {len(noisy)} measurements had "
                  f"other processes under 5% of a core (worst {max(noisy) * 100:.0f}%)")
        for f in failed:
            print(f"FAILED {f}")
        return 1 if failed else 0
    except Failed as e:
        print(f"run_durable.py: {e}", file=sys.stderr)
        return 1
    finally:
        if b:
            b.stop_all()
        log = os.path.join(tmp, "pipelined.log")
        if os.path.exists(log):
            bad = [l for l in open(log, errors="replace").read().splitlines()
                   if ("error" in l.lower() or "warning" in l.lower())
                   and "unknown key in [daemon]" not in l]
            if bad:
                print("pipelined.log: " + "\n  ".join(bad[:20]))
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
