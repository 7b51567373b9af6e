#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpus (tests/fuzz/corpus/) from the
protocol tests: the parse cases of tests/data/ (test_message.c), the
examples of proto/PROTOCOL.md, the calls of test_rawjson.c, and the
framing cases of test_frame.c written as fuzz_frame.c scripts. Run it again when those change: it
rewrites the files it names and leaves any other file in corpus/ (inputs
merged from a fuzzing run) and the regressions alone.

Usage: tests/fuzz/make-corpus.py
"""
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MESSAGE_MAX = 1024 * 1024  # PROTO_MESSAGE_MAX


def nested(call, depth, strings):
    """As test_message.c's nested(): a message exactly depth levels deep."""
    head = b'{"method":"io.pipelined.Stats","parameters":{"x":' if call else b'{"parameters":{"x":'
    level = b'["[{\\"\\\\","\\\\","]]",' if strings else b"["
    return head + level * (depth - 2) + b"0" + b"]" * (depth - 2) + b"}}"


def data_cases(name, call):
    """The messages of tests/data/<name>, directives expanded (an @open run
    is cut to 300 bytes: past the depth limit, and short to mutate)."""
    with open(os.path.join(ROOT, "tests", "data", name), "rb") as f:
        for lineno, line in enumerate(f.read().split(b"\n"), 1):
            if not line or line.startswith(b"#"):
                continue
            text = line.split(b"\t", 2)[2]
            m = re.fullmatch(rb"@(depth|depth-strings|open) (\d+)", text)
            if m:
                n = int(m.group(2))
                if m.group(1) == b"open":
                    text = b"[" * min(n, 300)
                else:
                    text = nested(call, n, m.group(1) == b"depth-strings")
            yield f"{name.split('.')[0]}-{lineno:03d}", text


def protocol_examples():
    """Lines of PROTOCOL.md's code blocks that are messages."""
    with open(os.path.join(ROOT, "proto", "PROTOCOL.md"), "rb") as f:
        fenced = False
        for lineno, line in enumerate(f.read().split(b"\n"), 1):
            if line.startswith(b"```"):
                fenced = not fenced
            elif fenced and line.startswith(b"{"):
                yield f"protocol-{lineno:03d}", line


def rawjson_cases():
    """The calls of test_rawjson.c: payload slices with strings that hold
    brackets and escapes, whitespace, an escaped key, an empty array."""
    yield "rawjson-elements", (
        rb'{"method":"io.pipelined.SubmitBatch","parameters":{"pipeline":"p",'
        rb'"payloads":[{"a":1},{"b":[1,{"c":"]}\"{"}]},{}]}}')
    yield "rawjson-spaced", (
        rb' { "parameters" : { "payload" : { "x" : [ 1 , 2 ] } } ,'
        rb' "method" : "io.pipelined.Submit" } ')
    yield "rawjson-empty", rb'{"method":"a.B","parameters":{"payloads":[ ]}}'
    yield "rawjson-escaped-key", rb'{"method":"a.B","parameters":{"payl\u006fads":[{}]}}'
    yield "rawjson-batch", (
        rb'{"method":"io.pipelined.SubmitBatch","parameters":{"pipeline":"p","payloads":[{},'
        rb'{"url":"http://x/a b.png","n":12,"f":-1.5e3,"t":true,"z":null},'
        rb'{"s":"\"quoted\\ \u00e9 \n","a":[[],[{}],[[[1]]]],"o":{"k":{"k":{}}}},'
        rb'{"brackets":"[{]}","comma":","}]}}')


# fuzz_frame.c's script: a limit byte, then operations.
def limit(max_message):
    assert 1 <= max_message <= 240 or max_message == MESSAGE_MAX
    return bytes([max_message - 1 if max_message <= 240 else 0xF0])


def feed(data):
    out = b""
    for i in range(0, len(data), 127):
        out += bytes([len(data[i:i + 127])]) + data[i:i + 127]
    return out or b"\x00"


def run(byte, count):
    assert count % 128 == 0 and 1 <= count // 128 <= 1 << 16
    n = count // 128 - 1
    return bytes([0xFF, byte, n >> 8, n & 0xFF])


TAKE_ALL = b"\x80"
TAKE_ALL_COMPACT = b"\x81"


def take(n, compact=False):
    assert n < 32 and not (compact and n == 31)
    return bytes([0xC0 | (0x20 if compact else 0) | n])


def frame_cases(stream_messages):
    # test_split_and_joined_messages
    yield "split-joined", (limit(64) + take(1) + feed(b'{"a"') + take(1) +
                           feed(b':1}\0{}\0{"b') + take(2) + take(1) + feed(b'"}\0') +
                           take(1) + feed(b"\0") + TAKE_ALL)
    # test_one_byte_at_a_time
    s = limit(64)
    for c in b'{"x":[1,2,3]}\0{"y":null}\0':
        s += feed(bytes([c])) + TAKE_ALL
    yield "one-byte-at-a-time", s
    # test_message_limit_at_and_past: 16 with the NUL; 15 unfinished; one more
    yield "limit-at-and-past", (limit(16) + feed(b"a" * 15 + b"\0") + TAKE_ALL +
                                feed(b"a" * 15) + feed(b"a") + TAKE_ALL + feed(b"b\0"))
    # An over-long message that arrives whole, behind a good one.
    yield "whole-too-long", limit(16) + feed(b"ok\0" + b"a" * 16 + b"\0") + TAKE_ALL
    yield "empty-reads", limit(1) + feed(b"") + feed(b"\0\0") + take(1) + feed(b"") + TAKE_ALL
    # test_protocol_limit_is_sane: PROTO_MESSAGE_MAX at the limit and past it.
    yield "protocol-max-at", (limit(MESSAGE_MAX) + run(ord("a"), MESSAGE_MAX - 128) +
                              feed(b"a" * 127) + take(1) + feed(b"\0") + TAKE_ALL_COMPACT +
                              feed(b"{") + TAKE_ALL_COMPACT)
    yield "protocol-max-past", limit(MESSAGE_MAX) + run(ord("a"), MESSAGE_MAX) + TAKE_ALL
    # A large message handed out, then compacted (FRAME_BUFFER_KEEP).
    yield "compact-large", (limit(MESSAGE_MAX) + run(ord("x"), 128 * 1024) + feed(b"\0{}\0") +
                            take(1, compact=True) + take(1, compact=True))
    # The calls of tests/data as one stream, read 7 bytes at a time.
    stream = b"".join(m + b"\0" for m in stream_messages if len(m) < 240)[:3000]
    s = limit(240)
    for i in range(0, len(stream), 7):
        s += feed(stream[i:i + 7]) + (TAKE_ALL_COMPACT if i % 3 else take(2))
    yield "calls-stream", s


def write(target, cases):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    seen = set()
    for name, data in cases:
        if data in seen:
            continue
        seen.add(data)
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    print(f"{d}: {len(seen)} files")


def main():
    messages = (list(data_cases("calls.txt", True)) + list(data_cases("replies.txt", False)) +
                list(protocol_examples()) + list(rawjson_cases()))
    write("message", messages)
    write("frame", frame_cases([m for _, m in messages]))


main()
