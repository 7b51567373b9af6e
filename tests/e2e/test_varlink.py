"""Varlink conformance of the real daemon: what the specification
(https://varlink.org, "Method Call" and "org.varlink.service") says a
service does with oneway, more, pipelined calls, unknown interfaces and
methods and bad parameters; that its interface descriptions parse with an
independent implementation (varlink-go); and that the README's examples of
calling the daemon with socat and Python's socket API work as printed.

The certification tool's own checks (both directions) are in tests/varlink/:
its client mode only exercises org.varlink.certification, which the daemon
does not implement.
"""

import json
import os
import re
import shutil
import subprocess
import tempfile

from harness import HANG_GUARD, IFACE, ROOT, E2ETestCase, stage

SERVICE = "org.varlink.service"
PIPELINES = {
    # The README's examples submit to "thumbs".
    "thumbs": [stage("only", "noop")],
    # Jobs wait here until the stage is resumed.
    "held": [stage("first", "noop")],
}


class Calls(E2ETestCase):
    """oneway, more and pipelining, as the Method Call section specifies."""

    def setUp(self):
        self.daemon = self.start_daemon(PIPELINES)
        self.c = self.connect(self.daemon)

    def test_oneway_submit_runs_and_gets_no_reply(self):
        """A oneway Submit creates a job and sends nothing: the next message
        on the connection is the reply to the next call."""
        self.c.send_call(IFACE + ".Submit", {"pipeline": "thumbs", "payload": {"n": 1}},
                         oneway=True)
        self.c.send_call(IFACE + ".ListJobs", {"pipeline": "thumbs"})
        jobs = self.assertReply(self.c.recv())["jobs"]
        # The oneway call ran before the next one: calls are handled in order.
        self.assertEqual([j["id"] for j in jobs], [1])
        job = self.ok(self.c, IFACE + ".WaitJob", {"id": 1})["job"]
        self.assertEqual(job["payload"], {"n": 1})
        self.assertFalse(self.c.has_message(), "a stray reply followed")

    def test_oneway_error_gets_no_reply(self):
        """A oneway call that fails is not answered either, whatever the error."""
        for method, params in [(IFACE + ".Nope", {}), ("com.example.Nope", {}),
                               (IFACE + ".GetJob", {"id": "x"}),
                               (IFACE + ".Submit", {"pipeline": "nope", "payload": {}})]:
            self.c.send_call(method, params, oneway=True)
        p = self.ok(self.c, SERVICE + ".GetInfo")
        self.assertIn(IFACE, p["interfaces"])
        self.assertFalse(self.c.has_message(), "a stray reply followed")

    def test_oneway_streaming_call_does_not_hold_the_connection(self):
        """A oneway Watch (with or without more) streams to nobody and does
        not keep the connection's later calls waiting."""
        self.c.send_call(IFACE + ".Watch", {}, more=True, oneway=True)
        self.c.send_call(IFACE + ".Watch", {}, oneway=True)
        self.assertIn(IFACE, self.ok(self.c, SERVICE + ".GetInfo")["interfaces"])
        # Nor is anything streamed later: a job's events reach no one here.
        other = self.connect(self.daemon)
        job_id = self.submit(other, "thumbs", {})
        self.ok(other, IFACE + ".WaitJob", {"id": job_id})
        self.assertEqual(self.ok(self.c, IFACE + ".GetJob", {"id": job_id})["job"]["state"],
                         "done")
        self.assertFalse(self.c.has_message(), "a oneway Watch streamed")

    def test_more_on_a_streaming_method_streams_with_continues(self):
        """Watch with more: the first reply and each event carry continues: true."""
        self.c.send_call(IFACE + ".Watch", {"pipeline": "thumbs"}, more=True)
        first = self.c.recv()
        self.assertEqual(self.assertReply(first), {"event": "watching"})
        self.assertIs(first.get("continues"), True)
        other = self.connect(self.daemon)
        job_id = self.submit(other, "thumbs", {"n": 2})
        seen = []
        while "ended" not in seen:
            event = self.c.recv()
            self.assertIs(event.get("continues"), True, event)
            p = self.assertReply(event)
            self.assertEqual(p["job"]["id"], job_id)
            seen.append(p["event"])
        self.assertEqual(seen, ["accepted", "ended"])

    def test_more_on_a_single_reply_method_gets_one_normal_reply(self):
        """more on Stats, GetInfo, Submit: one reply each, without continues,
        and the next call's reply comes next."""
        self.c.send_call(IFACE + ".Stats", {"pipeline": "thumbs"}, more=True)
        self.c.send_call(SERVICE + ".GetInfo", more=True)
        self.c.send_call(IFACE + ".Submit", {"pipeline": "thumbs", "payload": {}}, more=True)
        self.c.send_call(IFACE + ".GetJob", {"id": 999})
        replies = [self.c.recv() for _ in range(4)]
        self.assertEqual(self.assertReply(replies[0])["pipelines"][0]["name"], "thumbs")
        self.assertIn(IFACE, self.assertReply(replies[1])["interfaces"])
        self.assertEqual(self.assertReply(replies[2])["id"], 1)
        for r in replies[:3]:
            self.assertNotIn("continues", r)
        self.assertError(replies[3], IFACE + ".NoSuchJob", {"id": 999})

    def test_streaming_method_without_more_is_expected_more(self):
        """Watch requires more (io.pipelined.varlink): without it the call is
        org.varlink.service.ExpectedMore and the connection goes on."""
        r = self.c.call(IFACE + ".Watch", {})
        self.assertError(r, SERVICE + ".ExpectedMore")
        self.assertNotIn("continues", r)
        self.assertIn(IFACE, self.ok(self.c, SERVICE + ".GetInfo")["interfaces"])

    def test_pipelined_calls_in_one_write_are_answered_in_order(self):
        """Several calls in one write: one reply each, in the order sent,
        errors and normal replies mixed."""
        calls = [
            (IFACE + ".Submit", {"pipeline": "thumbs", "payload": {"i": 0}}),
            (IFACE + ".GetJob", {"id": 77}),
            (SERVICE + ".GetInfo", {}),
            (IFACE + ".Submit", {"pipeline": "thumbs", "payload": {"i": 1}}),
            ("com.example.Nope", {}),
            (IFACE + ".Stats", {"pipeline": "thumbs"}),
        ]
        self.c.send_raw(b"".join(self.c.encode_call(m, p) for m, p in calls))
        r = [self.c.recv() for _ in calls]
        self.assertEqual(self.assertReply(r[0])["id"], 1)
        self.assertError(r[1], IFACE + ".NoSuchJob", {"id": 77})
        self.assertIn(IFACE, self.assertReply(r[2])["interfaces"])
        self.assertEqual(self.assertReply(r[3])["id"], 2)
        self.assertError(r[4], SERVICE + ".InterfaceNotFound", {"interface": "com.example"})
        self.assertEqual(self.assertReply(r[5])["pipelines"][0]["accepted"], 2)
        self.assertFalse(self.c.has_message())


class StandardErrors(E2ETestCase):
    """The errors of org.varlink.service, with the parameter each names."""

    def setUp(self):
        self.daemon = self.start_daemon(PIPELINES)
        self.c = self.connect(self.daemon)

    def test_unknown_interface_is_interface_not_found(self):
        """A method of an interface the daemon does not serve: InterfaceNotFound
        naming the interface, not the method."""
        for method, iface in [("com.example.Foo", "com.example"),
                              ("io.pipelinedx.Submit", "io.pipelinedx"),
                              # Varlink allows '-' in an interface name.
                              ("org.example-x.Foo", "org.example-x"),
                              ("org.varlink.service.x.GetInfo", "org.varlink.service.x")]:
            with self.subTest(method=method):
                self.assertError(self.c.call(method, {}), SERVICE + ".InterfaceNotFound",
                                 {"interface": iface})

    def test_unknown_method_of_a_known_interface_is_method_not_found(self):
        """MethodNotFound names the method, fully qualified, for either interface."""
        for method in [IFACE + ".Nope", IFACE + ".SubmitJob", SERVICE + ".GetInfoX"]:
            with self.subTest(method=method):
                r = self.c.call(method, {})
                self.assertEqual(self.assertError(r, SERVICE + ".MethodNotFound"),
                                 {"method": method})

    def test_bad_parameters_are_invalid_parameter_naming_it(self):
        """Missing, wrong type, out of range, unknown: InvalidParameter {parameter}."""
        cases = [
            (IFACE + ".Submit", {"payload": {}}, "pipeline"),                    # missing
            (IFACE + ".Submit", {"pipeline": "thumbs"}, "payload"),              # missing
            (IFACE + ".Submit", {"pipeline": 5, "payload": {}}, "pipeline"),     # type
            (IFACE + ".Submit", {"pipeline": "thumbs", "payload": []}, "payload"),
            (IFACE + ".GetJob", {"id": "1"}, "id"),                              # type
            (IFACE + ".GetJob", {"id": 1.0}, "id"),                              # a real
            (IFACE + ".GetJob", {}, "id"),                                       # missing
            (IFACE + ".GetJob", {"id": 1, "verbose": True}, "verbose"),          # extra
            (IFACE + ".Stats", {"bogus": 1}, "bogus"),                           # extra
            (IFACE + ".SetWorkers", {"pipeline": "thumbs", "stage": "only",
                                     "workers": 0}, "workers"),                  # range
            (SERVICE + ".GetInfo", {"x": 1}, "x"),                               # extra
            (SERVICE + ".GetInterfaceDescription", {}, "interface"),             # missing
            (SERVICE + ".GetInterfaceDescription", {"interface": 1}, "interface"),
        ]
        for method, params, name in cases:
            with self.subTest(method=method, params=params):
                r = self.c.call(method, params)
                self.assertEqual(self.assertError(r, SERVICE + ".InvalidParameter"),
                                 {"parameter": name})
        # Nothing was submitted by the refused calls.
        self.assertEqual(self.ok(self.c, IFACE + ".ListJobs", {})["jobs"], [])

    def test_absent_parameters_mean_empty(self):
        """A call without "parameters" is a call with {}."""
        self.c.send_raw(b'{"method":"org.varlink.service.GetInfo"}\0')
        self.assertIn(IFACE, self.assertReply(self.c.recv())["interfaces"])
        self.c.send_raw(b'{"method":"io.pipelined.GetJob"}\0')
        self.assertError(self.c.recv(), SERVICE + ".InvalidParameter", {"parameter": "id"})


class Introspection(E2ETestCase):
    """GetInfo and GetInterfaceDescription, read by an independent parser."""

    def setUp(self):
        self.daemon = self.start_daemon(PIPELINES)
        self.c = self.connect(self.daemon)

    def test_get_info_lists_exactly_the_interfaces_served(self):
        """GetInfo lists org.varlink.service and io.pipelined, each describable."""
        p = self.ok(self.c, SERVICE + ".GetInfo")
        self.assertEqual(sorted(p["interfaces"]), sorted([SERVICE, IFACE]))
        self.assertEqual(set(p), {"vendor", "product", "version", "url", "interfaces"})
        for iface in p["interfaces"]:
            d = self.ok(self.c, SERVICE + ".GetInterfaceDescription", {"interface": iface})
            self.assertEqual(set(d), {"description"})
            self.assertRegex(d["description"], r"(?m)^interface %s$" % re.escape(iface))

    def test_descriptions_parse_with_varlink_go(self):
        """Each interface description parses with varlink-go's generator, an
        independent Varlink implementation; a broken one fails it."""
        gen = shutil.which("varlink-go-interface-generator")
        if not gen:
            self.skipTest("varlink-go-interface-generator is not installed (varlink-go)")
        tmp = tempfile.mkdtemp(prefix="varlink-idl-")
        self.addCleanup(shutil.rmtree, tmp, True)

        def parses(name, text):
            path = os.path.join(tmp, name + ".varlink")
            with open(path, "w") as f:
                f.write(text)
            r = subprocess.run([gen, path], cwd=tmp, capture_output=True, text=True,
                               timeout=HANG_GUARD)
            return r.returncode == 0, r.stdout + r.stderr

        for iface in self.ok(self.c, SERVICE + ".GetInfo")["interfaces"]:
            with self.subTest(interface=iface):
                text = self.ok(self.c, SERVICE + ".GetInterfaceDescription",
                               {"interface": iface})["description"]
                ok, out = parses(iface, text)
                self.assertTrue(ok, "%s does not parse: %s" % (iface, out))
        # The check can fail: a description with a syntax error is refused.
        ok, _ = parses("broken", "interface org.example.broken\nmethod Foo( -> ()\n")
        self.assertFalse(ok)


def readme_examples(kind):
    """The fenced code blocks of README.md marked <!-- test_varlink: KIND -->."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    return re.findall(r"<!-- test_varlink: %s -->\n```\w*\n(.*?)```" % re.escape(kind), text,
                      re.S)


README_SOCKET = "/run/pipelined.sock"


class ReadmeExamples(E2ETestCase):
    """README's "Calling the daemon from other programs", run as printed
    (with the test daemon's socket path)."""

    def setUp(self):
        self.daemon = self.start_daemon(PIPELINES)

    def example(self, kind):
        blocks = readme_examples(kind)
        self.assertEqual(len(blocks), 1, "README.md has no single %s example" % kind)
        self.assertIn(README_SOCKET, blocks[0])
        return blocks[0].replace(README_SOCKET, self.daemon.sock)

    def test_socat_examples(self):
        """The socat lines print one reply per line: Stats, then a Submit's id."""
        if not shutil.which("socat"):
            self.skipTest("socat is not installed")
        r = subprocess.run(["sh", "-e", "-c", self.example("sh")], capture_output=True,
                           text=True, timeout=HANG_GUARD)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(len(lines), 2, r.stdout)
        stats = json.loads(lines[0])["parameters"]
        self.assertEqual(sorted(p["name"] for p in stats["pipelines"]), ["held", "thumbs"])
        self.assertEqual(json.loads(lines[1]), {"parameters": {"id": 1}})
        c = self.connect(self.daemon)
        job = self.ok(c, IFACE + ".WaitJob", {"id": 1})["job"]
        self.assertEqual(job["payload"], {"url": "https://example.com/a.png"})

    def test_python_example(self):
        """The Python lines submit a job, wait for it and print its state."""
        r = subprocess.run(["python3", "-c", self.example("python")], capture_output=True,
                           text=True, timeout=HANG_GUARD)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "done\n")
        c = self.connect(self.daemon)
        self.assertEqual(self.ok(c, IFACE + ".GetJob", {"id": 1})["job"]["pipeline"], "thumbs")
