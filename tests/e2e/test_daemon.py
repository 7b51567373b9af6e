"""The daemon process: command line, configuration errors, its socket file,
signals and exit statuses."""

import os
import signal
import socket
import subprocess
import time
import unittest

from harness import HANG_GUARD, IFACE, PIPELINED, Daemon, E2ETestCase, stage, wait_until

PIPELINES = {"echo": [stage("only", "noop")]}


def run(*args):
    return subprocess.run([PIPELINED] + list(args), capture_output=True, text=True,
                          timeout=HANG_GUARD, stdin=subprocess.DEVNULL)


class CommandLine(E2ETestCase):

    def bad_config(self):
        """A Daemon (not started) whose file has a bad value on line 3."""
        d = Daemon(self)
        self.addCleanup(d.stop)
        d.write_config(config_text="[daemon]\nStateDirectory = %s\nMaxConnections = many\n"
                       "\n[pipeline echo]\n\n[stage echo/only]\nAction = noop\n" % d.state_dir)
        return d

    def test_bad_config_exits_78_with_one_line_naming_file_line_and_key(self):
        """A bad value: exit 78 and one stderr line "FILE:LINE: KEY: ..."."""
        d = self.bad_config()
        d.spawn()
        d.expected_status = 78
        self.assertEqual(d.wait_exit(), 78)
        lines = d.stderr().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("%s:3: MaxConnections" % d.conf, lines[0])
        self.assertFalse(os.path.exists(d.sock))

    def test_check_config_of_a_good_file(self):
        """--check-config FILE of a good file exits 0 and says ok."""
        d = Daemon(self, PIPELINES)
        self.addCleanup(d.stop)
        p = run("--check-config", d.conf)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("ok", p.stdout)
        self.assertIn("echo", p.stdout)

    def test_check_config_of_a_bad_file(self):
        """--check-config FILE of a bad file exits 78 naming the line."""
        d = self.bad_config()
        p = run("--check-config", d.conf)
        self.assertEqual(p.returncode, 78)
        self.assertIn("%s:3" % d.conf, p.stderr)

    def test_missing_config_file_exits_78(self):
        """A configuration file that does not exist: exit 78 naming it."""
        p = run("-c", "/nonexistent/pipelined.conf", "--socket", "/nonexistent/sock")
        self.assertEqual(p.returncode, 78)
        self.assertIn("/nonexistent/pipelined.conf", p.stderr)

    def test_usage_error_exits_2(self):
        """An unknown option or a stray argument exits 2."""
        self.assertEqual(run("--frobnicate").returncode, 2)
        self.assertEqual(run("-c", "x.conf", "extra").returncode, 2)

    def test_help_and_version(self):
        """--help and --version exit 0 and print."""
        p = run("--help")
        self.assertEqual(p.returncode, 0)
        self.assertIn("--check-config", p.stdout)
        p = run("--version")
        self.assertEqual(p.returncode, 0)
        self.assertTrue(p.stdout.startswith("pipelined "))


class SocketFile(E2ETestCase):

    def test_stale_socket_file_is_replaced(self):
        """A socket file nobody listens on (left by a crash) is removed and the daemon starts."""
        d = self.start_daemon(PIPELINES, start=False)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(d.sock)
        s.close()  # no unlink: the file stays
        self.assertTrue(os.path.exists(d.sock))
        d.start()
        self.assertEqual(self.submit(self.connect(d), "echo"), 1)

    def test_second_daemon_on_a_live_socket_refuses(self):
        """A second daemon on the socket of a live one exits non-zero; the first keeps working."""
        first = self.start_daemon(PIPELINES)
        second = Daemon(self, PIPELINES)
        self.addCleanup(second.stop)
        second.spawn(socket_path=first.sock)
        status = second.wait_exit()
        second.expected_status = status
        self.assertNotEqual(status, 0)
        self.assertIn("another pipelined is running", second.stderr())
        self.assertEqual(self.submit(self.connect(first), "echo"), 1)
        self.assertTrue(os.path.exists(first.sock))

    def test_sigterm_exits_0_and_removes_the_socket(self):
        """SIGTERM: the daemon says it is exiting, exits 0 and removes its socket file."""
        d = self.start_daemon(PIPELINES)
        c = self.connect(d)
        self.submit_batch(c, "echo", [{}] * 10)
        d.signal(signal.SIGTERM)
        self.assertEqual(d.wait_exit(), 0)
        self.assertIn("exiting", d.stderr())
        self.assertFalse(os.path.exists(d.sock))

    def test_sigint_exits_0(self):
        """SIGINT shuts down like SIGTERM."""
        d = self.start_daemon(PIPELINES)
        d.signal(signal.SIGINT)
        self.assertEqual(d.wait_exit(), 0)
        self.assertFalse(os.path.exists(d.sock))

    def test_state_directory_is_created(self):
        """A missing StateDirectory is created at start."""
        d = self.start_daemon(PIPELINES)
        self.assertTrue(os.path.isdir(d.state_dir))
        self.ok(self.connect(d), IFACE + ".Stats")


def switches(pid, tid):
    """Voluntary + involuntary context switches of one thread so far."""
    n = 0
    with open("/proc/%d/task/%d/status" % (pid, tid)) as f:
        for line in f:
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                n += int(line.split()[1])
    return n


def thread_state(pid, tid):
    """The one-letter state of a thread (R running, S sleeping, ...)."""
    with open("/proc/%d/task/%d/stat" % (pid, tid)) as f:
        return f.read().rsplit(")", 1)[1].split()[0]


# x86-64 system calls a thread waits in when it has nothing to do: futex
# (a condition variable), epoll_wait, epoll_pwait, epoll_pwait2.
WAITING_SYSCALLS = {"202", "232", "281", "441"}


def waiting(pid, tid):
    """True if the thread is blocked in a wait for work (not in I/O: a
    thread asleep in fdatasync or statvfs is also in state S)."""
    try:
        with open("/proc/%d/task/%d/syscall" % (pid, tid)) as f:
            return f.read().split()[0] in WAITING_SYSCALLS
    except (OSError, IndexError):
        return False


def own_threads(pid):
    """The daemon's own threads: the loop (the main thread), the stage
    workers, named "pl:<stage>", and the journal's writer, "journal" (a
    sanitizer's helper threads are not ours)."""
    tids = []
    for t in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/comm" % (pid, t)) as f:
            comm = f.read().strip()
            if int(t) == pid or comm.startswith("pl:") or comm == "journal":
                tids.append(int(t))
    return tids


class Idle(E2ETestCase):

    def test_an_idle_daemon_makes_no_wake_ups(self):
        """Idle (jobs done, clients connected but silent): no thread of the daemon wakes up."""
        d = self.start_daemon({"p": [stage("a", "noop", workers=3), stage("b", "noop", workers=2)]})
        c = self.connect(d)
        self.submit_batch(c, "p", [{}] * 100)
        self.ok(c, IFACE + ".Drain", {"pipeline": "p"})
        # The jobs' ends (and moves to b: 3 changes a job) may wait a moment in the journal
        # (JOURNAL_LAZY_USEC); their commit wakes the loop: wait for it.
        wait_until(lambda: self.ok(c, IFACE + ".Stats")["journal"]["changes"] >= 300,
                   "the jobs' ends committed")
        # The writer told the loop before it counted them: one more round
        # trip, and the loop has taken that wake-up too.
        self.ok(c, IFACE + ".Stats")
        pid = d.proc.pid
        tids = own_threads(pid)
        self.assertEqual(len(tids), 1 + 5 + 1, tids)  # the loop, five workers, the journal
        # The loop may still be finishing the reply, the writer its chores
        # after the commit: start counting once every thread is asleep
        # (state S) waiting for work (a futex or epoll_wait).
        wait_until(lambda: all(thread_state(pid, t) == "S" and waiting(pid, t) for t in tids),
                   "every thread of the daemon waiting for work")
        before = {t: switches(pid, t) for t in tids}
        # Not a timing assertion: a daemon that polls or keeps a periodic
        # timer wakes up within this window on any machine; one that blocks
        # never does, however slow the machine is.
        time.sleep(2)
        after = {t: switches(pid, t) for t in tids}
        self.assertEqual(after, before)


if __name__ == "__main__":
    unittest.main()
