#!/usr/bin/env python3
"""Writes the seed corpus of the parse_stream fuzz target from the QEMU captures.

Usage: fuzz/make-seeds.py   (from anywhere; rewrites fuzz/seeds/parse_stream/{capture,fault}-*)

Input format (see fuzz/src/lib.rs): byte 0 configuration, byte 1 chunking schedule, then the
server's bytes with client actions as 0xFF <letter>. The captures' client used id "cap" for
qmp_capabilities, then 1, 2, ... one command at a time, as the fuzzed session does (its
negotiation id is "cap"), so the scripts below reproduce the real exchange: take the qmp_capabilities transmit after
the greeting, and submit + transmit the next command after each reply, as the capture's client did.
Messages larger than BIG are dropped from the seeds to keep them small (their commands then fail at
EOF); the small size limits of the fuzz configurations still reach the too-large paths.
"""
import json
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
CAPTURES = os.path.join(HERE, "..", "qmp-proto", "tests", "captures")
OUT = os.path.join(HERE, "seeds", "parse_stream")
BIG = 8000
TRANSMIT = b"\xfft"
SUBMIT = b"\xffe"


def messages(data):
    """Splits a capture into top-level objects, each with the whitespace that follows it."""
    out, depth, in_str, esc, start = [], 0, False, False, None
    for i, c in enumerate(data):
        if in_str:
            if esc:
                esc = False
            elif c == 0x5C:
                esc = True
            elif c == 0x22:
                in_str = False
            continue
        if c == 0x22:
            in_str = True
        elif c in b"{[":
            if depth == 0:
                if out:
                    out[-1][1] = data[out[-1][0] : i]
                start = i
                out.append([i, None])
            depth += 1
        elif c in b"}]":
            depth -= 1
    if out:
        out[-1][1] = data[out[-1][0] :]
    return [m for _, m in out]


def reply_id(msg):
    """The number of the command a reply answers (0: qmp_capabilities, id "cap"), else None.
    QEMU writes the top-level id first in errors and last in returns."""
    if not (b'"return"' in msg or b'"error"' in msg):
        return None
    if re.search(rb'"id": "cap"', msg):
        return 0
    m = re.search(rb'^\{\s*"id": (\d+),', msg) or re.search(rb'"id": (\d+)\s*\}\s*$', msg)
    return int(m.group(1)) if m else None


def script(name):
    """(items, commands): the capture as a list of byte strings with client actions inserted."""
    server = open(os.path.join(CAPTURES, name + ".server.bin"), "rb").read()
    commands = len(open(os.path.join(CAPTURES, name + ".client.jsonl"), "rb").read().splitlines())
    items = []
    for msg in messages(server):
        items.append(msg)
        if msg.lstrip().startswith(b'{\r\n    "QMP"') or msg.startswith(b'{"QMP"'):
            items.append(TRANSMIT)
        n = reply_id(msg)
        if n is not None and n + 1 < commands:
            items.append(SUBMIT + TRANSMIT)
    return items


def write(fname, header, items):
    body = b"".join(i for i in items if len(i) <= BIG)
    with open(os.path.join(OUT, fname), "wb") as f:
        f.write(bytes(header) + body)


def main():
    os.makedirs(OUT, exist_ok=True)
    for old in os.listdir(OUT):
        if old.startswith(("capture-", "fault-")):
            os.remove(os.path.join(OUT, old))
    for name, conf in [
        ("qsd-compact", 0x04 | 0x40),
        ("qsd-pretty", 0x00),
        ("system-compact", 0x07),
        ("system-pretty", 0x02),
    ]:
        items = script(name)
        # The whole exchange, chunked by marker, one byte at a time, and at random.
        for chunking in (0, 1, 61):
            write(f"capture-{name}-whole-c{chunking}", [conf, chunking], items)
        # The greeting and negotiation, then two or three messages of the exchange at a time.
        greeting = items[:2]
        negotiated = 3
        submitted = 0
        i = negotiated
        part = 0
        while i < len(items):
            window = items[i : i + 4]
            prefix = greeting + [items[2]] + [SUBMIT] * submitted + [TRANSMIT]
            if any(len(w) <= BIG and not w.startswith(b"\xff") for w in window):
                write(f"capture-{name}-part{part:02}", [conf, 3 + part], prefix + window)
                part += 1
            submitted += sum(w.count(SUBMIT) for w in window)
            i += 4


GREETING = (
    b'{"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": ""}, '
    b'"capabilities": ["oob"]}}\r\n'
)
READY = GREETING + TRANSMIT + b'{"return": {}, "id": "cap"}\r\n'
EV = b'{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}\r\n'

# Fault cases of PROTOCOL.md ("Fault cases to test"), as (name, configuration, body).
FAULTS = [
    ("inf", 0x04, READY + SUBMIT * 2 + TRANSMIT
     + b'{"return": {"x": inf}, "id": 1}\r\n{"return": {}, "id": 2}\r\n'),
    ("stale-reply", 0x04, GREETING + b'{"return": {}, "id": "abcd12"}\r\n' + TRANSMIT
     + b'{"return": {}, "id": "cap"}\r\n'),
    ("events-early", 0x04, EV + GREETING + TRANSMIT + EV + b'{"return": {}, "id": "cap"}\r\n'),
    ("idless-errors", 0x0C, READY + SUBMIT * 3 + TRANSMIT
     + b'{"error": {"class": "GenericError", "desc": "JSON parse error, invalid keyword"}}\r\n' * 3
     + b'{"id": 2, "error": {"class": "CommandNotFound", "desc": "x"}}\r\n'),
    ("deep-206", 0x03, READY + SUBMIT + TRANSMIT
     + b'{"return": ' + b"[" * 205 + b"1" + b"]" * 205 + b', "id": 1}\r\n'),
    ("deep-over-limit", 0x00, READY + SUBMIT + TRANSMIT
     + b'{"id": 1, "return": ' + b"[" * 100 + b"]" * 100 + b"}\r\n" + EV),
    ("size-limit-plus-one", 0x01, READY + SUBMIT * 2 + TRANSMIT
     + b'{"return": "' + b"y" * 40 + b'", "id": 1}\r\n{"return": {}, "id": 2}\r\n'),
    ("quit-eof", 0x04, READY + SUBMIT + TRANSMIT
     + b'{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "SHUTDOWN", '
     b'"data": {"guest": false, "reason": "host-qmp-quit"}}\r\n{"return": {}, "id": 1}\r\n'),
    ("truncated", 0x04, READY + SUBMIT + TRANSMIT + b'{"id": 1, "return": {"a"'),
    ("garbage", 0x04, b"hello 123 [1]" + READY + b"\x00\xfe]}" + SUBMIT + TRANSMIT
     + b'{"return": "\\uD83D\\uDE00 \\u00e9", "id": 1}'),
    # Messages that never close before a reply (the line rule, PROTOCOL.md "Resynchronisation").
    ("unclosed-deep", 0x04, READY + SUBMIT + TRANSMIT + b'{"event": "X", "data": ' + b"[" * 1000
     + b'\r\n{"return": {}, "id": 1}\r\n'),
    ("unclosed-object", 0x04, READY + SUBMIT + TRANSMIT + b'{"event": "X", "data": '
     + b'{"a": ' * 100 + b'\n{"return": {}, "id": 1}\n'),
    ("unclosed-string", 0x04, READY + SUBMIT + TRANSMIT + b'{"event": "X", "data": "open\r\n'
     + b'{"return": {}, "id": 1}\r\n'),
    ("unclosed-large", 0x01, READY + SUBMIT + TRANSMIT + b'{"event": "X", "data": "' + b"y" * 100
     + b'\r\n{"return": {}, "id": 1}\r\n'),
    ("unclosed-pretty", 0x04, READY + SUBMIT + TRANSMIT
     + b'{\r\n    "event": "X",\r\n    "data": "open\r\n}\r\n{"return": {}, "id": 1}\r\n'),
    ("oob-fd-abandon", 0x0C, READY + SUBMIT + b"\xffo\xfff\xfff" + TRANSMIT + b"\xffa"
     + b'{"return": {}, "id": 4}{"return": {}, "id": 3}' + TRANSMIT
     + b'{"return": {}, "id": 4}{"return": {}, "id": 2}{"return": {}, "id": 1}'),
]


def write_faults():
    for name, conf, body in FAULTS:
        for chunking in (0, 1, 5):
            with open(os.path.join(OUT, f"fault-{name}-c{chunking}"), "wb") as f:
                f.write(bytes([conf, chunking]) + body)


if __name__ == "__main__":
    main()
    write_faults()
