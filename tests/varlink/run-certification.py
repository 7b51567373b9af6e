#!/usr/bin/env python3
"""Runs varlink-go-certification against our side of the certification.

  run-certification.py tool-client TOOL CERTIFICATION-SERVER
      starts CERTIFICATION-SERVER (our service on proto/) on a socket in a
      temporary directory, waits for its "ready", runs TOOL -client against
      it; passes if the tool exits 0, printed "End: 'true'" (the all_ok it
      read: varlink-go 0.4 exits 0 even when End answered false, or when it
      read another call's reply as End's) and the server reported the
      tool's End with all_ok=true. Then checks what the tool does not: the
      server's org.varlink.service (both descriptions parse with
      varlink-go-interface-generator when installed) and standard errors,
      ExpectedMore, oneway and pipelined calls.
  run-certification.py tool-server TOOL CERTIFICATION-CLIENT
      starts TOOL as the service, waits until its socket accepts a
      connection, runs CERTIFICATION-CLIENT (our client library) against
      it; passes if the client exits 0.

TOOL empty or missing: exit 77, which meson counts as skipped. Whatever
happens, the process started in the background is stopped (SIGTERM, then
SIGKILL) and the temporary directory removed. The timeouts are hang guards
only: both sides finish in well under a second.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

GUARD = 60.0


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=GUARD)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_connectable(path, proc):
    """Waits until path accepts a connection (the tool prints nothing when
    it listens)."""
    deadline = time.monotonic() + GUARD
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit("the tool exited with status %d before listening" % proc.returncode)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return
        except OSError:
            time.sleep(0.01)
        finally:
            s.close()
    sys.exit("the tool did not listen on %s within %.0f s" % (path, GUARD))


class Conn:
    """A raw Varlink connection: NUL-terminated JSON."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(GUARD)
        self.sock.connect(path)
        self.buf = b""

    def send(self, method, params=None, **flags):
        msg = dict(method=method, parameters=params or {}, **flags)
        self.sock.sendall(json.dumps(msg).encode() + b"\0")

    def recv(self):
        while b"\0" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError("the service closed the connection")
            self.buf += data
        msg, _, self.buf = self.buf.partition(b"\0")
        return json.loads(msg)

    def call(self, method, params=None, **flags):
        self.send(method, params, **flags)
        return self.recv()


def expect(what, got, want):
    if got != want:
        sys.exit("certification-server: %s: got %r, want %r" % (what, got, want))


def check_service(sock, tmp):
    """org.varlink.service and the standard errors of our service."""
    svc = "org.varlink.service"
    cert = "org.varlink.certification"
    c = Conn(sock)
    info = c.call(svc + ".GetInfo")["parameters"]
    expect("GetInfo interfaces", info["interfaces"], [svc, cert])
    gen = shutil.which("varlink-go-interface-generator")
    for iface in info["interfaces"]:
        r = c.call(svc + ".GetInterfaceDescription", {"interface": iface})
        text = r["parameters"]["description"]
        expect("description of " + iface, text.count("interface %s\n" % iface), 1)
        if gen:
            path = os.path.join(tmp, iface + ".varlink")
            with open(path, "w") as f:
                f.write(text)
            g = subprocess.run([gen, path], cwd=tmp, capture_output=True, text=True,
                               timeout=GUARD)
            expect("varlink-go parses " + iface, g.returncode, 0)
    errors = [
        ("org.example.Nope", {}, {}, svc + ".InterfaceNotFound", {"interface": "org.example"}),
        (cert + ".Test99", {}, {}, svc + ".MethodNotFound", {"method": cert + ".Test99"}),
        (svc + ".Nope", {}, {}, svc + ".MethodNotFound", {"method": svc + ".Nope"}),
        (svc + ".GetInterfaceDescription", {}, {}, svc + ".InvalidParameter",
         {"parameter": "interface"}),
        (svc + ".GetInterfaceDescription", {"interface": "org.example"}, {},
         svc + ".InterfaceNotFound", {"interface": "org.example"}),
        (svc + ".GetInfo", {"x": 1}, {}, svc + ".InvalidParameter", {"parameter": "x"}),
        (cert + ".Start", {"x": 1}, {}, svc + ".InvalidParameter", {"parameter": "x"}),
        (cert + ".Test01", {}, {}, svc + ".InvalidParameter", {"parameter": "client_id"}),
        (cert + ".Test02", {"client_id": "x", "bool": 1}, {}, svc + ".InvalidParameter",
         {"parameter": "bool"}),
        (cert + ".Test10", {"client_id": "x", "mytype": {}}, {}, svc + ".ExpectedMore", {}),
        (cert + ".Test01", {"client_id": "no-such-client"}, {"more": True},
         cert + ".ClientIdError", {}),
    ]
    # Pipelined: every call in one write, a oneway one among them.
    data = b""
    for method, params, flags, _, _ in errors:
        data += json.dumps(dict(method=method, parameters=params, **flags)).encode() + b"\0"
        data += json.dumps(dict(method="org.example.Nope", oneway=True)).encode() + b"\0"
    c.sock.sendall(data)
    for method, params, flags, name, want in errors:
        r = c.recv()
        expect("%s %r error" % (method, params), r.get("error"), name)
        expect("%s %r parameters" % (method, params), r.get("parameters", {}), want)
        expect("%s %r continues" % (method, params), r.get("continues"), None)
    expect("the connection after the errors",
           c.call(svc + ".GetInfo")["parameters"]["interfaces"], [svc, cert])
    c.sock.close()


def tool_client(tool, server, sock):
    proc = subprocess.Popen([server, sock], stdout=subprocess.PIPE, text=True)
    try:
        if proc.stdout.readline().strip() != "ready":
            sys.exit("certification-server did not start")
        run = subprocess.run([tool, "-client", "-varlink", "unix:" + sock],
                             capture_output=True, text=True, timeout=GUARD)
        sys.stdout.write(run.stdout)
        sys.stdout.write(run.stderr)
        check_service(sock, os.path.dirname(sock))
    finally:
        stop(proc)
    out = proc.stdout.read()
    sys.stdout.write(out)
    if run.returncode != 0:
        sys.exit("varlink-go-certification -client failed (status %d)" % run.returncode)
    if "End: 'true'" not in run.stdout + run.stderr:
        sys.exit("the tool did not read all_ok true from End")
    if "all_ok=true" not in out:
        sys.exit("the tool exited 0 but the service saw no successful End")
    if proc.returncode != 0:
        sys.exit("certification-server exited with status %d" % proc.returncode)
    print("varlink-go-certification -client: passed against certification-server")


def tool_server(tool, client, sock):
    proc = subprocess.Popen([tool, "-varlink", "unix:" + sock],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_connectable(sock, proc)
        run = subprocess.run([client, "unix:" + sock], capture_output=True, text=True,
                             timeout=GUARD)
        sys.stdout.write(run.stdout)
        sys.stdout.write(run.stderr)
    finally:
        stop(proc)
    if run.returncode != 0:
        sys.stdout.write(proc.stdout.read())
        sys.exit("certification-client failed against varlink-go-certification (status %d)"
                 % run.returncode)
    print("certification-client: passed against varlink-go-certification")


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("tool-client", "tool-server"):
        sys.exit(__doc__)
    mode, tool, ours = sys.argv[1:]
    if not tool or not os.access(tool, os.X_OK):
        print("varlink-go-certification is not installed (Debian package varlink-go): skipped")
        return 77
    # A SIGTERM (meson's timeout) still runs the finally clauses that stop
    # the background process and remove the directory.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))
    tmp = tempfile.mkdtemp(prefix="varlink-cert-")
    try:
        sock = os.path.join(tmp, "cert.sock")
        (tool_client if mode == "tool-client" else tool_server)(tool, ours, sock)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
