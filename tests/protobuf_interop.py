#!/usr/bin/python3
"""Delimited protobuf streams between the protobuf library and buffstreams.

The protobuf library (Debian's python3-protobuf) writes messages the way
writeDelimitedTo does -- a varint length, then the message -- to a socket
where `bscat listen --framing varint` receives them; then it reads what
`bscat send --framing varint` writes, the way parseDelimitedFrom does.
Every message must arrive intact and in order, across the 1-, 2- and
3-byte varint widths.

usage: protobuf_interop.py BSCAT
"""
import os
import socket
import subprocess
import sys
import tempfile

from google.protobuf import wrappers_pb2
from google.protobuf.internal import decoder, encoder

SIZES = [0, 1, 7, 112, 126, 127, 128, 300, 16381, 16385, 70000]


def messages():
    for i, n in enumerate(SIZES):
        payload = bytes((ord("a") + (i + k) % 26) for k in range(n))
        yield wrappers_pb2.BytesValue(value=payload).SerializeToString()


def protobuf_to_buffstreams(bscat, path):
    want = list(messages())
    listen = subprocess.Popen(
        [bscat, "listen", "unix:" + path, "--framing", "varint", "--hex",
         "--count", str(len(want))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(500):  # wait for the socket, bounded
        if os.path.exists(path):
            break
        listen.poll()
        if listen.returncode is not None:
            sys.exit("bscat listen exited early: " + listen.stderr.read())
        subprocess.run(["sleep", "0.01"])
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    for m in want:  # writeDelimitedTo
        s.sendall(encoder._VarintBytes(len(m)) + m)
    out, err = listen.communicate(timeout=30)
    s.close()
    got = [bytes.fromhex(line.replace(" ", "")) for line in out.splitlines()]
    if listen.returncode != 0 or got != want:
        sys.exit("protobuf -> buffstreams: %d of %d messages match (rc %d) %s"
                 % (sum(a == b for a, b in zip(got, want)), len(want),
                    listen.returncode, err))
    for g in got:
        wrappers_pb2.BytesValue.FromString(g)  # each parses as the message
    print("ok   protobuf writeDelimited -> bs_recv_data: %d messages" % len(want))


def buffstreams_to_protobuf(bscat, path):
    want = list(messages())
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    srv.settimeout(30)
    send = subprocess.Popen(
        [bscat, "send", "unix:" + path, "--framing", "varint", "--hex"],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    conn, _ = srv.accept()
    conn.settimeout(30)
    send.stdin.write("".join(m.hex() + "\n" for m in want))
    send.stdin.close()
    data = b""
    while True:
        chunk = conn.recv(1 << 16)
        if not chunk:
            break
        data += chunk
    send.wait(timeout=30)
    got, pos = [], 0
    while pos < len(data):  # parseDelimitedFrom
        n, pos = decoder._DecodeVarint32(data, pos)
        got.append(wrappers_pb2.BytesValue.FromString(data[pos:pos + n]))
        pos += n
    values = [wrappers_pb2.BytesValue.FromString(m) for m in want]
    if send.returncode != 0 or got != values:
        sys.exit("buffstreams -> protobuf: %d of %d messages match (rc %d) %s"
                 % (sum(a == b for a, b in zip(got, values)), len(values),
                    send.returncode, send.stderr.read()))
    print("ok   bs_send_data -> protobuf parseDelimited: %d messages" % len(want))


def main():
    bscat = sys.argv[1]
    with tempfile.TemporaryDirectory() as d:
        protobuf_to_buffstreams(bscat, os.path.join(d, "a.sock"))
        buffstreams_to_protobuf(bscat, os.path.join(d, "b.sock"))


if __name__ == "__main__":
    main()
