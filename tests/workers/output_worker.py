#!/usr/bin/python3
"""A protocol-page worker that checks the host's side of `output`: on each invocation it sends
an output host call (with a call_id, as an older worker would), then its result, and it answers
the *next* invocation with whether any host_result frame came in between (the host promises
none: outputs are one-way)."""
import json
import os
import struct

INIT, READY, INVOKE, RESULT, HOST_CALL, HOST_RESULT = 1, 2, 3, 4, 6, 7
IN, OUT = int(os.environ["NIMBUS_WORKER_FD"]), int(os.environ["NIMBUS_WORKER_OUT_FD"])
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
            buf = buf[4 + length:]
            yield kind, header
        chunk = os.read(IN, 65536)
        if not chunk:
            return
        buf += chunk


stream = frames()
next(stream)
send(READY, {"protocol": 1, "pid": os.getpid(), "runtime": "output checker"})
replies = 0
for kind, header in stream:
    if kind == HOST_RESULT:
        replies += 1
    if kind != INVOKE:
        continue
    send(HOST_CALL, {"id": header["id"], "call_id": "c1", "op": "output", "args": {"binding": "out", "metadata": {}}}, b"m")
    send(RESULT, {"id": header["id"], "status": "ok", "http": {"status": 200, "headers": []}},
         ("host_results %d" % replies).encode())
