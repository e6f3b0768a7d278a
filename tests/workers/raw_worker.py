#!/usr/bin/python3
"""A Nimbus worker written from docs/worker-protocol.md alone, with no Nimbus library:
what `runtime: process` runs. It answers every invocation with the request it saw, runs
them one at a time, and exits when told to shut down or when the host goes away."""
import json
import os
import struct
import sys

INIT, READY, INVOKE, RESULT, LOG, SHUTDOWN, FATAL = 1, 2, 3, 4, 5, 9, 10

IN = int(os.environ["NIMBUS_WORKER_FD"])  # frames from the host
OUT = int(os.environ["NIMBUS_WORKER_OUT_FD"])  # frames to the host
buf = b""


def send(kind, header, body=b""):
    h = json.dumps(header).encode()
    view = memoryview(struct.pack(">IBI", 1 + 4 + len(h) + len(body), kind, len(h)) + h + body)
    while view:
        view = view[os.write(OUT, view):]


def frames():
    global buf
    while True:
        while len(buf) >= 9:
            length, kind, hlen = struct.unpack(">IBI", buf[:9])
            if len(buf) < 4 + length:
                break
            header = json.loads(buf[9:9 + hlen])
            body = buf[9 + hlen:4 + length]
            buf = buf[4 + length:]
            yield kind, header, body
        chunk = os.read(IN, 65536)
        if not chunk:
            return
        buf += chunk


stream = frames()
kind, init, _ = next(stream)
if kind != INIT or init.get("protocol") != 1:
    send(FATAL, {"message": "raw_worker speaks protocol 1, the host sent %r" % init.get("protocol")})
    sys.exit(2)
send(READY, {"protocol": 1, "pid": os.getpid(), "runtime": "raw python %d.%d" % sys.version_info[:2]})
print("raw worker ready for", init["function"], "handler", init.get("handler", ""), flush=True)
for kind, header, body in stream:
    if kind == SHUTDOWN:
        break
    if kind != INVOKE:
        continue
    send(LOG, {"id": header["id"], "level": "info", "message": "raw worker saw " + header["http"]["path"]})
    reply = {"trigger": header["trigger"], "method": header["http"]["method"], "query": header["http"]["query"],
             "params": header["http"]["params"], "body": body.decode("latin-1"), "env": os.environ.get("GREETING", "")}
    send(RESULT, {"id": header["id"], "status": "ok",
                  "http": {"status": 201, "headers": [["content-type", "application/json"], ["x-worker", "raw"]]}},
         json.dumps(reply).encode())
