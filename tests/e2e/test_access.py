"""Access control, end to end: the socket's mode and group, who may call
which method (AllowUsers=, AllowGroups=, ReadOnlyUsers=, ReadOnlyGroups=),
PermissionDenied and its log line, the submitter's uid on every job (also
after a restart), the per-uid cap on jobs in flight (MaxJobsPerUser=), and
a reload that changes the lists.

The daemon runs as root (as in CI); the clients run as other uids: a forked
child drops to the uid, gid and groups wanted, connects, and hands the
connected socket back (SO_PEERCRED records who connected, so the parent can
then use it), and pipelinectl runs with subprocess's user=/group=/
extra_groups=. Numeric ids need no passwd entry. Without root the tests are
skipped: nothing else can take another uid."""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import unittest

from harness import (HANG_GUARD, IFACE, PIPELINECTL, PIPELINED, E2ETestCase,
                     VarlinkConnection, have_pipelinectl, stage, wait_until)

SERVICE = "org.varlink.service"

# The daemon's classes (daemon/server.c, methods[]); every method the
# interface declares must be in exactly one of them (test_every_method_is_classified).
READ_ONLY = {"GetJob", "ListJobs", "WaitJob", "Watch", "Stats"}
MODIFYING = {"Submit", "SubmitBatch", "CancelJob", "RequeueJob", "PauseStage", "ResumeStage",
             "SetWorkers", "Close", "Drain", "Reload", "Shutdown"}

# Who is who in these tests (ids nobody on the machine is likely to use).
ADMIN = 4001        # AllowUsers
READER = 4002       # ReadOnlyUsers
STRANGER = 4003     # in no list
ADMIN_GROUP = 4100  # AllowGroups
READ_GROUP = 4200   # ReadOnlyGroups
POLICY = {"AllowUsers": ADMIN, "AllowGroups": ADMIN_GROUP, "ReadOnlyUsers": READER,
          "ReadOnlyGroups": READ_GROUP, "SocketMode": "0666"}

PIPELINES = {"p": [stage("s", "noop", capacity=64)]}

# Blocks until the file named by $1 exists: keeps jobs in flight across a
# restart (a paused stage does not stay paused).
GATE_SH = 'while [ ! -e "$1" ]; do sleep 0.02; done\n'


def connect_as(path, uid, gid=None, groups=()):
    """A VarlinkConnection to path made by uid (primary group gid, default
    uid; supplementary groups exactly groups). Raises the OSError the
    child's connect() got (PermissionError when the socket's mode refuses)."""
    gid = uid if gid is None else gid
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:  # the child: never returns into the test runner
        status = 1
        try:
            parent.close()
            os.setgroups(list(groups))
            os.setgid(gid)
            os.setuid(uid)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
                socket.send_fds(child, [b"ok"], [s.fileno()])
            except OSError as e:
                child.sendall(b"E%d" % e.errno)
            status = 0
        finally:
            os._exit(status)
    child.close()
    try:
        parent.settimeout(HANG_GUARD)
        msg, fds, _, _ = socket.recv_fds(parent, 64, 1)
    finally:
        parent.close()
        os.waitpid(pid, 0)
    if not fds:
        if msg.startswith(b"E"):
            errno = int(msg[1:])
            raise OSError(errno, os.strerror(errno))
        raise AssertionError("the child could not connect as uid %d: %r" % (uid, msg))
    conn = VarlinkConnection.__new__(VarlinkConnection)
    conn.sock = socket.socket(fileno=fds[0])
    conn.sock.settimeout(HANG_GUARD)
    conn.buf = b""
    conn.closed = False
    return conn


def ctl_as(daemon, uid, *args, gid=None, groups=()):
    """Runs pipelinectl ARGS as uid; returns (exit status, stdout, stderr)."""
    env = dict(os.environ)
    env.pop("PIPELINED_SOCKET", None)
    p = subprocess.run([PIPELINECTL, "--socket", daemon.sock] + list(args), capture_output=True,
                       text=True, env=env, timeout=HANG_GUARD, user=uid,
                       group=uid if gid is None else gid, extra_groups=list(groups))
    return p.returncode, p.stdout, p.stderr


@unittest.skipUnless(os.geteuid() == 0, "needs root: clients run as other uids")
class Access(E2ETestCase):

    def start(self, pipelines=PIPELINES, **keys):
        """A daemon whose directory other uids may enter (the socket's own
        mode is then the only gate)."""
        d = self.start_daemon(pipelines, start=False, **keys)
        os.chmod(d.dir, 0o755)
        return d.start()

    def as_user(self, d, uid, gid=None, groups=()):
        c = connect_as(d.sock, uid, gid, groups)
        self.addCleanup(c.close)
        return c

    def denied(self, conn, method, params=None):
        """Asserts conn may not call method: PermissionDenied naming it."""
        self.assertError(conn.call(method, params), IFACE + ".PermissionDenied",
                         {"method": method})

    def refusal_lines(self, d, uid, method):
        return [l for l in d.stderr().splitlines()
                if "permission denied: uid %d " % uid in l and " call %s " % method in l]

    # -- the socket

    def test_socket_mode_and_group_as_configured(self):
        """SocketMode=0660, SocketGroup=4242: the file has them; a member of
        4242 connects, anyone else gets EACCES from connect()."""
        d = self.start(SocketMode="0660", SocketGroup=4242)
        st = os.stat(d.sock)
        self.assertEqual(st.st_mode & 0o7777, 0o660)
        self.assertEqual(st.st_gid, 4242)
        self.ok(self.as_user(d, 4010, 4242), IFACE + ".Stats")  # no access key: all
        self.ok(self.as_user(d, 4011, 4011, [4242]), IFACE + ".Stats")
        with self.assertRaises(PermissionError):
            connect_as(d.sock, 4012, 4012)

    def test_socket_mode_default(self):
        """Without SocketMode=: 0660, the daemon's group."""
        d = self.start()
        st = os.stat(d.sock)
        self.assertEqual(st.st_mode & 0o7777, 0o660)
        self.assertEqual(st.st_gid, os.getegid())
        d2 = self.start(SocketMode="0600")
        self.assertEqual(os.stat(d2.sock).st_mode & 0o7777, 0o600)
        with self.assertRaises(PermissionError):
            connect_as(d2.sock, ADMIN)

    @unittest.skipUnless(shutil.which("systemd-socket-activate"), "needs systemd-socket-activate")
    def test_a_socket_passed_by_systemd_keeps_its_mode(self):
        """With socket activation the .socket unit decides the mode and group:
        the daemon leaves the socket as it got it and logs that its keys are
        ignored."""
        d = self.start_daemon(PIPELINES, start=False, SocketMode="0600", SocketGroup=4242)
        os.chmod(d.dir, 0o755)
        with open(d.stderr_path, "ab") as err:
            d.proc = subprocess.Popen(
                ["systemd-socket-activate", "-l", d.sock,
                 PIPELINED, "-c", d.conf, "--socket", d.sock],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, cwd=d.dir)
        wait_until(lambda: d.proc.poll() is not None or d.probe(), "the daemon answers")
        self.assertIsNone(d.proc.poll(), d.stderr())
        st = os.stat(d.sock)
        self.assertNotEqual(st.st_gid, 4242)
        self.assertNotEqual(st.st_mode & 0o777, 0o600)
        self.assertIn("SocketMode= and SocketGroup= are ignored: the socket was passed by "
                      "systemd", d.stderr())

    def test_unknown_user_or_group_stops_the_start(self):
        """An unknown name is a configuration error naming it (exit 78)."""
        for key, word in (("AllowUsers", "no-such-user-pipelined"),
                          ("ReadOnlyGroups", "no-such-group-pipelined"),
                          ("SocketGroup", "no-such-group-pipelined")):
            with self.subTest(key=key):
                d = self.start_daemon(PIPELINES, start=False, **{key: word})
                d.spawn()
                d.expected_status = 78
                self.assertEqual(d.wait_exit(), 78)
                self.assertIn("%s: unknown %s '%s'" % (key, "user" if "Users" in key
                                                        else "group", word), d.stderr())

    # -- who may call what

    def test_allowed_read_only_and_refused_users(self):
        d = self.start(**POLICY)
        admin = self.as_user(d, ADMIN)
        job_id = self.submit(admin, "p", {"n": 1})
        self.wait_job(admin, job_id)

        reader = self.as_user(d, READER)
        self.stats(reader, "p")
        self.assertEqual(self.get_job(reader, job_id)["payload"], {"n": 1})
        self.denied(reader, IFACE + ".Submit", {"pipeline": "p", "payload": {}})
        self.denied(reader, IFACE + ".CancelJob", {"id": job_id})
        # The connection stays open, and usable for what it may call.
        self.assertEqual(self.get_job(reader, job_id)["id"], job_id)

        stranger = self.as_user(d, STRANGER)
        self.denied(stranger, IFACE + ".Stats")
        self.denied(stranger, IFACE + ".GetJob", {"id": job_id})
        self.denied(stranger, IFACE + ".Submit", {"pipeline": "p", "payload": {}})
        # Introspection is open to whoever can connect (varlinkctl uses it).
        self.ok(stranger, SERVICE + ".GetInfo")
        self.ok(stranger, SERVICE + ".GetInterfaceDescription", {"interface": IFACE})
        # Nothing the refused calls asked for happened.
        self.assertEqual([j["id"] for j in self.list_all(admin)], [job_id])
        # Root may always.
        self.submit(self.connect(d), "p")

    def test_group_membership_grants_access(self):
        """AllowGroups= and ReadOnlyGroups= count the primary group and the
        supplementary ones."""
        d = self.start(**POLICY)
        cases = [  # (uid, gid, groups, may submit, may read)
            (4020, ADMIN_GROUP, [], True, True),
            (4021, 4021, [7, ADMIN_GROUP], True, True),
            (4022, READ_GROUP, [], False, True),
            (4023, 4023, [READ_GROUP], False, True),
            (4024, 4024, [7, 8], False, False),
            # More groups than the daemon's first buffer (32) holds, and as
            # many as Linux allows (NGROUPS_MAX, PEER_GROUPS_MAX): the one
            # that grants access comes last.
            (4025, 4025, list(range(6000, 6039)) + [READ_GROUP], False, True),
            (4026, 4026, list(range(6000, 6000 + 65535)) + [ADMIN_GROUP], True, True),
        ]
        for uid, gid, groups, may_submit, may_read in cases:
            with self.subTest(uid=uid, gid=gid, groups=groups):
                c = self.as_user(d, uid, gid, groups)
                r = c.call(IFACE + ".Submit", {"pipeline": "p", "payload": {}})
                if may_submit:
                    self.assertReply(r)
                else:
                    self.assertError(r, IFACE + ".PermissionDenied",
                                     {"method": IFACE + ".Submit"})
                r = c.call(IFACE + ".Stats")
                if may_read:
                    self.assertReply(r)
                else:
                    self.assertError(r, IFACE + ".PermissionDenied",
                                     {"method": IFACE + ".Stats"})

    def test_every_method_is_classified(self):
        """Every method io.pipelined.varlink declares is read-only or
        modifying, here and in the daemon: a read-only caller gets anything
        but PermissionDenied from the read-only ones and PermissionDenied
        from the others; a caller in no list gets it from every one."""
        d = self.start(**POLICY)
        reader = self.as_user(d, READER)
        text = self.ok(reader, SERVICE + ".GetInterfaceDescription",
                       {"interface": IFACE})["description"]
        declared = set(re.findall(r"^method\s+(\w+)", text, re.M))
        self.assertEqual(declared, READ_ONLY | MODIFYING,
                         "classify every method (here and in daemon/server.c methods[])")
        self.assertFalse(READ_ONLY & MODIFYING)
        stranger = self.as_user(d, STRANGER)
        for name in sorted(declared):
            method = IFACE + "." + name
            with self.subTest(method=method):
                # Parameters are looked at only after the check: {} is
                # refused (InvalidParameter, ExpectedMore) by the method
                # itself if the caller may call it, and starts nothing.
                r = reader.call(method, {})
                if name in READ_ONLY:
                    self.assertNotEqual(r.get("error"), IFACE + ".PermissionDenied", r)
                else:
                    self.assertError(r, IFACE + ".PermissionDenied", {"method": method})
                self.denied(stranger, method, {})

    def test_a_refusal_is_logged_once_per_user_and_method(self):
        d = self.start(**POLICY)
        for _ in range(2):  # two connections, three calls each
            c = self.as_user(d, STRANGER)
            for _ in range(3):
                self.denied(c, IFACE + ".Submit", {"pipeline": "p", "payload": {}})
        self.denied(self.as_user(d, STRANGER), IFACE + ".Stats")
        self.denied(self.as_user(d, READER), IFACE + ".Submit", {"pipeline": "p", "payload": {}})
        # Logged before the reply is sent: they are in the file now.
        lines = self.refusal_lines(d, STRANGER, IFACE + ".Submit")
        self.assertEqual(len(lines), 1, d.stderr())
        self.assertRegex(lines[0], r"uid %d \(pid \d+, connection \d+\) may not call "
                                   r"io\.pipelined\.Submit \(it is in no access list\)" % STRANGER)
        self.assertEqual(len(self.refusal_lines(d, STRANGER, IFACE + ".Stats")), 1)
        self.assertIn("(it has read-only access)",
                      self.refusal_lines(d, READER, IFACE + ".Submit")[0])

    def test_the_refusal_log_is_bounded(self):
        """256 (uid, method) pairs are logged; past them, one line says no
        more will be."""
        d = self.start(**POLICY)
        methods = sorted(READ_ONLY | MODIFYING)
        pairs = 0
        for uid in range(5000, 5000 + 256 // len(methods) + 2):
            c = self.as_user(d, uid)
            for name in methods:
                self.denied(c, IFACE + "." + name, {})
                pairs += 1
            c.close()
        self.assertGreater(pairs, 256)
        text = d.stderr()
        self.assertEqual(text.count("permission denied: uid "), 256)
        self.assertEqual(text.count("further refusals are not logged"), 1)
        self.assertIn("permission denied to 256 different callers and methods", text)

    def test_policy_is_logged_at_start(self):
        d = self.start(**POLICY)
        self.assertIn("access: every method for uid 0 (the daemon's), 1 user and 1 group; "
                      "read-only methods for 1 more user and 1 group; introspection only for "
                      "anyone else", d.stderr())
        d2 = self.start()
        self.assertIn("whoever can open the socket may call every method", d2.stderr())

    # -- the submitter's uid

    def test_uid_is_recorded_and_survives_a_restart(self):
        d = self.start(**POLICY)
        admin = self.as_user(d, ADMIN)
        ids = self.submit_batch(admin, "p", [{}, {}])
        root_id = self.submit(self.connect(d), "p")
        for job_id in ids:
            self.assertEqual(self.wait_job(admin, job_id)["uid"], ADMIN)
        self.assertEqual(self.wait_job(admin, root_id)["uid"], 0)
        self.assertEqual({j["id"]: j["uid"] for j in self.list_all(admin)},
                         {ids[0]: ADMIN, ids[1]: ADMIN, root_id: 0})
        d.proc.send_signal(signal.SIGTERM)
        self.assertEqual(d.proc.wait(), 0, d.stderr())
        d.status = None
        d.start()
        c = self.connect(d)
        self.assertEqual(self.get_job(c, ids[0])["uid"], ADMIN)
        self.assertEqual(self.get_job(c, root_id)["uid"], 0)

    def test_pipelinectl_shows_the_submitter(self):
        if not have_pipelinectl():
            self.skipTest("pipelinectl is not built")
        d = self.start(**POLICY)
        job_id = self.submit(self.as_user(d, ADMIN), "p")
        self.wait_job(self.connect(d), job_id)
        status, out, err = ctl_as(d, READER, "get", str(job_id))
        self.assertEqual(status, 0, err)
        self.assertIn("user:      uid %d\n" % ADMIN, out)  # no passwd entry: the number
        root_job = self.submit(self.connect(d), "p")
        self.wait_job(self.connect(d), root_job)
        r = self.ctl(d, "get", str(root_job))
        self.assertIn("user:      root (uid 0)\n", r.stdout)
        r = self.ctl(d, "list")
        self.assertRegex(r.stdout, r"(?m)^ID\s+PIPELINE\s+USER\s+STATE")
        self.assertRegex(r.stdout, r"(?m)^%d\s+p\s+%d\s+done" % (job_id, ADMIN))
        self.assertRegex(r.stdout, r"(?m)^%d\s+p\s+root\s+done" % root_job)

    def test_pipelinectl_permission_denied_message(self):
        if not have_pipelinectl():
            self.skipTest("pipelinectl is not built")
        d = self.start(**POLICY)
        status, _, err = ctl_as(d, READER, "submit", "p", "{}")
        self.assertEqual(status, 4, err)
        self.assertEqual(
            err, "pipelinectl: submit to 'p': permission denied: uid %d may not call "
                 "io.pipelined.Submit (the daemon's administrator grants it with AllowUsers= "
                 "or AllowGroups= in pipelined.conf)\n" % READER)
        status, _, err = ctl_as(d, STRANGER, "stats")
        self.assertEqual(status, 4, err)
        self.assertIn("permission denied: uid %d may not call io.pipelined.Stats (the daemon's "
                      "administrator grants it with AllowUsers= or AllowGroups=, or "
                      "ReadOnlyUsers= or ReadOnlyGroups= in pipelined.conf)" % STRANGER, err)

    # -- MaxJobsPerUser=

    def test_jobs_per_user_cap(self):
        """MaxJobsPerUser=3, the stage paused: a uid gets 3 jobs in flight,
        not 4; a batch that would pass the cap is refused whole; another uid
        has its own 3; once jobs end there is room again."""
        d = self.start(MaxJobsPerUser=3, **POLICY)
        root = self.connect(d)
        self.pause(root, "p", "s")
        a = self.as_user(d, ADMIN)
        b = self.as_user(d, 4030, ADMIN_GROUP)
        over = {"parameter": "jobs_per_user", "max": 3}
        self.submit(a, "p")
        self.assertError(a.call(IFACE + ".SubmitBatch", {"pipeline": "p", "payloads": [{}] * 3}),
                         IFACE + ".LimitExceeded", over)
        self.assertEqual(len([j for j in self.list_all(root) if j["uid"] == ADMIN]), 1,
                         "nothing of the refused batch was accepted")
        self.submit_batch(a, "p", [{}, {}])  # at the cap
        self.assertError(a.call(IFACE + ".Submit", {"pipeline": "p", "payload": {}}),
                         IFACE + ".LimitExceeded", over)
        ids_b = self.submit_batch(b, "p", [{}] * 3)  # another uid is not affected
        self.assertError(b.call(IFACE + ".Submit", {"pipeline": "p", "payload": {}}),
                         IFACE + ".LimitExceeded", over)
        self.assertEqual(self.stats(root, "p")["in_flight"], 6)
        self.resume(root, "p", "s")
        for job_id in ids_b:
            self.wait_job(root, job_id)
        self.drain(root, "p")
        self.submit_batch(a, "p", [{}] * 3)
        self.submit_batch(b, "p", [{}] * 3)

    def test_held_submits_count_and_give_their_place_back(self):
        """A submit held by a full queue counts against the cap while held;
        if its client hangs up before the jobs go in, they stop counting."""
        d = self.start({"h": [stage("s", "noop", capacity=1)]}, MaxJobsPerUser=3, **POLICY)
        root = self.connect(d)
        self.pause(root, "h", "s")
        a1, a2, a3 = (self.as_user(d, ADMIN) for _ in range(3))
        self.submit(a1, "h")  # the queue is full now
        a2.send_call(IFACE + ".Submit", {"pipeline": "h", "payload": {}})
        self.wait_stats(root, "h", lambda s: s["waiting_clients"] == 1, "the submit is held")
        self.assertError(a3.call(IFACE + ".SubmitBatch", {"pipeline": "h", "payloads": [{}, {}]}),
                         IFACE + ".LimitExceeded", {"parameter": "jobs_per_user", "max": 3})
        a2.close()  # hangs up while held: its job never goes in
        self.resume(root, "h", "s")
        self.drain(root, "h")
        self.wait_stats(root, "h", lambda s: s["waiting_clients"] == 0, "the hold is gone")
        self.assertEqual(len(self.list_all(root)), 1)
        self.pause(root, "h", "s")
        self.submit(a3, "h")
        a3.send_call(IFACE + ".SubmitBatch", {"pipeline": "h", "payloads": [{}, {}]})
        self.wait_stats(root, "h", lambda s: s["waiting_clients"] == 1, "the batch is held")
        self.resume(root, "h", "s")
        self.assertEqual(len(self.assertReply(a3.recv())["ids"]), 2)

    def test_requeue_counts_against_the_submitter(self):
        d = self.start({"f": [stage("bad", "fail"), stage("ok", "noop")]},
                       MaxJobsPerUser=1, **POLICY)
        root = self.connect(d)
        a = self.as_user(d, ADMIN)
        failed = self.submit(a, "f")
        self.assertEqual(self.wait_job(a, failed)["state"], "failed")
        self.pause(root, "f", "bad")
        self.submit(a, "f")  # in flight: the cap is reached
        # Requeued by root, the job still counts as ADMIN's.
        self.assertError(root.call(IFACE + ".RequeueJob", {"id": failed}),
                         IFACE + ".LimitExceeded", {"parameter": "jobs_per_user", "max": 1})
        self.resume(root, "f", "bad")
        self.drain(root, "f")
        self.pause(root, "f", "bad")
        self.assertEqual(self.ok(root, IFACE + ".RequeueJob", {"id": failed})["job"]["uid"],
                         ADMIN)
        self.assertError(a.call(IFACE + ".Submit", {"pipeline": "f", "payload": {}}),
                         IFACE + ".LimitExceeded", {"parameter": "jobs_per_user"})

    def test_recovered_jobs_count_against_their_uid(self):
        gate_dir = tempfile.mkdtemp(prefix="pipelined-access-")
        self.addCleanup(shutil.rmtree, gate_dir, True)
        script, go = os.path.join(gate_dir, "gate.sh"), os.path.join(gate_dir, "go")
        with open(script, "w") as f:
            f.write(GATE_SH)
        pipelines = {"g": [stage("wait", Exec="/bin/sh %s %s" % (script, go), Stdout="ignore",
                                 workers=1, capacity=8)]}
        d = self.start(pipelines, MaxJobsPerUser=2, **POLICY)
        a = self.as_user(d, ADMIN)
        ids = self.submit_batch(a, "g", [{}, {}])
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        d.status = None
        d.start()
        a = self.as_user(d, ADMIN)
        self.assertError(a.call(IFACE + ".Submit", {"pipeline": "g", "payload": {}}),
                         IFACE + ".LimitExceeded", {"parameter": "jobs_per_user", "max": 2})
        self.submit(self.as_user(d, 4031, ADMIN_GROUP), "g")
        open(go, "w").close()
        for job_id in ids:
            job = self.wait_job(a, job_id)
            self.assertEqual((job["state"], job["uid"]), ("done", ADMIN))
        self.submit(a, "g")

    # -- reload

    def test_reload_changes_the_lists_for_later_calls(self):
        d = self.start(**POLICY)
        root = self.connect(d)
        admin = self.as_user(d, ADMIN)
        stranger = self.as_user(d, STRANGER)
        self.denied(stranger, IFACE + ".Submit", {"pipeline": "p", "payload": {}})
        keys = dict(POLICY, AllowUsers="%d %d" % (STRANGER, 4040), ReadOnlyUsers="",
                    SocketMode="0600")
        d.write_config(PIPELINES, **keys)
        self.ok(root, IFACE + ".Reload")
        # The socket keeps its mode until a restart, and the log says so.
        self.assertEqual(os.stat(d.sock).st_mode & 0o777, 0o666)
        self.assertIn("reload: SocketMode= and SocketGroup= changes take effect at restart",
                      d.stderr())
        # The same connections, the new lists.
        self.submit(stranger, "p")
        self.denied(admin, IFACE + ".Submit", {"pipeline": "p", "payload": {}})
        self.denied(self.as_user(d, READER), IFACE + ".Stats")
        # A file naming an unknown user changes nothing.
        d.write_config(PIPELINES, **dict(keys, AllowUsers="no-such-user-pipelined"))
        r = root.call(IFACE + ".Reload")
        self.assertError(r, IFACE + ".ConfigInvalid")
        self.assertIn("unknown user 'no-such-user-pipelined'", r["parameters"]["reason"])
        self.submit(stranger, "p")
        self.denied(admin, IFACE + ".Stats")


if __name__ == "__main__":
    unittest.main()
