#!/usr/bin/env python3
"""demo-server.py -- the image source and upload target of scripts/demo.

A small threaded HTTP server (Python standard library only) on 127.0.0.1:

  GET /src/NAME.png    a generated PNG (800x600 RGB, a pattern that differs
                       per NAME), made on first use and cached;
                       404 if NAME contains "missing";
                       if NAME contains "flaky", the first request for it is
                       answered by closing the connection (curl exits 52, a
                       transient failure the pipeline retries)
  PUT /upload/NAME     stores the body as RESULTS/NAME (NAME: 1..128 of
                       [A-Za-z0-9._-], not starting with '.'); answers 201 with
                       {"name": NAME, "bytes": N, "stored": PATH}
  GET /stats           the request counters as JSON

It binds an ephemeral port (or --port), prints "PORT\\n" on stdout and, with
--port-file, writes the port there (atomically) once it listens. No line is
logged per request; SIGTERM or SIGINT stops it and it prints the counters as
one line on stderr, then exits 0.

  scripts/demo-server.py --results DIR [--port-file FILE] [--port N]
"""

import argparse
import json
import os
import re
import signal
import struct
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WIDTH, HEIGHT = 800, 600
NAME_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")
UPLOAD_MAX = 32 * 1024 * 1024
CACHE_MAX = 512  # generated images kept (about 100 KiB each)


# ---- PNG --------------------------------------------------------------------


def png_chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def tri(v):
    """0..255 and back down: a gradient shifted by an offset has no seam."""
    v %= 510
    return v if v < 256 else 509 - v


def make_png(name, width=WIDTH, height=HEIGHT):
    """A valid 8-bit RGB PNG: red grows left to right, green top to bottom,
    blue is a checkerboard; gradient offsets and square size come from name's CRC, so
    every name gives a different picture. Rows are built with slice
    assignment, so a picture takes milliseconds, not a Python loop per pixel."""
    seed = zlib.crc32(name.encode())
    off_r, off_g = seed & 0xFF, (seed >> 8) & 0xFF
    square = 8 + (seed >> 16) % 56
    blue = (seed >> 24) | 0x40
    reds = bytes(tri(x * 255 // (width - 1) + off_r) for x in range(width))
    # The blue channel of a row, for the two phases of the checkerboard.
    blues = [bytes(blue if (x // square + phase) % 2 else 0 for x in range(width))
             for phase in (0, 1)]
    raw = bytearray()
    row = bytearray(3 * width)
    row[0::3] = reds
    for y in range(height):
        row[1::3] = bytes((tri(y * 255 // (height - 1) + off_g),)) * width
        row[2::3] = blues[(y // square) % 2]
        raw += b"\x00"  # filter type None
        raw += row
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(bytes(raw), 6)) + png_chunk(b"IEND", b""))


# ---- the server ---------------------------------------------------------------


class State:
    def __init__(self, results):
        self.results = results
        self.lock = threading.Lock()
        self.cache = {}           # name -> PNG bytes (insertion order: oldest first)
        self.flaky_seen = set()   # flaky names already refused once
        self.counts = {"requests": 0, "images": 0, "not_found": 0, "dropped": 0,
                       "uploads": 0, "upload_bytes": 0, "refused": 0, "hangups": 0}

    def count(self, key, n=1):
        with self.lock:
            self.counts[key] += n

    def image(self, name):
        with self.lock:
            data = self.cache.get(name)
        if data is None:
            data = make_png(name)  # outside the lock: other requests go on
            with self.lock:
                self.cache[name] = data
                while len(self.cache) > CACHE_MAX:
                    del self.cache[next(iter(self.cache))]
        return data


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # also answers "Expect: 100-continue" (curl -T)
    server_version = "pipelined-demo/1"
    timeout = 30  # seconds a connection may sit idle

    def log_message(self, fmt, *args):  # quiet: the counters say what happened
        pass

    def reply(self, code, body=b"", ctype="text/plain; charset=utf-8"):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def refuse(self, code, text):
        self.server.state.count("refused")
        self.close_connection = True
        self.reply(code, text + "\n")

    def do_GET(self):
        st = self.server.state
        st.count("requests")
        path = self.path.split("?", 1)[0]
        if path == "/stats":
            with st.lock:
                body = json.dumps(st.counts)
            self.reply(200, body + "\n", "application/json")
            return
        m = re.fullmatch(r"/src/([A-Za-z0-9._-]+)\.png", path)
        if not m or not NAME_RE.match(m.group(1)):
            self.refuse(404, "no such path: %s" % path)
            return
        name = m.group(1)
        if "missing" in name:
            st.count("not_found")
            self.reply(404, "no image named %s\n" % name)
            return
        if "flaky" in name:
            with st.lock:
                first = name not in st.flaky_seen
                st.flaky_seen.add(name)
            if first:
                st.count("dropped")
                self.close_connection = True  # no reply at all: curl exits 52
                return
        data = st.image(name)
        st.count("images")
        self.reply(200, data, "image/png")

    do_HEAD = do_GET

    def do_PUT(self):
        st = self.server.state
        st.count("requests")
        m = re.fullmatch(r"/upload/([^/]+)", self.path.split("?", 1)[0])
        if not m or not NAME_RE.match(m.group(1)):
            self.refuse(400, "bad upload name (want /upload/NAME, NAME of [A-Za-z0-9._-])")
            return
        name = m.group(1)
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.refuse(411, "Content-Length required")
            return
        length = int(length)
        if length > UPLOAD_MAX:
            self.refuse(413, "too large: %d bytes (at most %d)" % (length, UPLOAD_MAX))
            return
        body = self.rfile.read(length)
        if len(body) != length:
            self.refuse(400, "short body")
            return
        final = os.path.join(st.results, name)
        tmp = os.path.join(st.results, ".%s.%d.tmp" % (name, threading.get_ident()))
        with open(tmp, "wb") as f:
            f.write(body)
        os.replace(tmp, final)  # whole files only: a reader never sees half a thumbnail
        st.count("uploads")
        st.count("upload_bytes", length)
        self.reply(201, json.dumps({"name": name, "bytes": length, "stored": final}) + "\n",
                   "application/json")

    def do_POST(self):
        self.server.state.count("requests")
        self.refuse(405, "method not allowed")

    do_DELETE = do_PATCH = do_POST


class Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client cannot hold up the exit
    request_queue_size = 128

    def handle_error(self, request, client_address):
        """A client that hangs up early (curl -f closing on a 404, a job
        killed by its timeout) is normal: count it. Anything else gets one
        line on stderr, not a traceback."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            self.state.count("hangups")
        else:
            print("demo-server: request from %s:%d: %r" % (client_address + (exc,)),
                  file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description="image source and upload target for scripts/demo")
    ap.add_argument("--results", required=True, help="directory for uploaded files")
    ap.add_argument("--port-file", help="write the port here once listening")
    ap.add_argument("--port", type=int, default=0, help="port (default: an ephemeral one)")
    args = ap.parse_args()

    os.makedirs(args.results, exist_ok=True)
    # SIGTERM and SIGINT are blocked in every thread (the threads started
    # below inherit the mask) and taken with sigwait by the main thread. A
    # Python signal handler would not do: the kernel may deliver the signal
    # to a busy request thread, and the main thread, asleep in a wait, would
    # not run the handler until it woke up. A SIGINT ignored on entry (a
    # background job of a script) stays ignored.
    stop_signals = {signal.SIGTERM}
    if signal.getsignal(signal.SIGINT) != signal.SIG_IGN:
        stop_signals.add(signal.SIGINT)
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)

    httpd = Server(("127.0.0.1", args.port), Handler)
    httpd.state = State(os.path.abspath(args.results))
    port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.5},
                              name="http")
    thread.start()
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, args.port_file)
    print(port, flush=True)

    signal.sigwait(stop_signals)
    httpd.shutdown()
    thread.join()
    httpd.server_close()
    with httpd.state.lock:
        counts = dict(httpd.state.counts)
    print("demo-server: " + ", ".join("%s %d" % kv for kv in counts.items()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
