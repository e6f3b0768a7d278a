#!/usr/bin/python3
"""A worker for the process runtime's start-up tests (tests/fleet_test.cpp).

  start_worker.py hold N [GO]  answers ready only once init and N invocations have arrived
                              (and the file GO exists, when named): it starts only if the
                              host sends work behind init
  start_worker.py fail-first DIR
                              the first instance (the one that creates DIR/first) waits for
                              DIR/go and exits without ready; later ones wait for one
                              invocation, then start

Each result's body says whether the invocation came before ready ("behind init") or after,
and, for `hold`, whether more than N invocations were waiting when it answered ready."""
import json
import os
import select
import struct
import sys
import time

INIT, READY, INVOKE, RESULT, SHUTDOWN = 1, 2, 3, 4, 9
IN = int(os.environ["NIMBUS_WORKER_FD"])
OUT = int(os.environ["NIMBUS_WORKER_OUT_FD"])
buf = b""


def send(kind, header, body=b""):
    h = json.dumps(header).encode()
    view = memoryview(struct.pack(">IBI", 5 + len(h) + len(body), kind, len(h)) + h + body)
    while view:
        view = view[os.write(OUT, view):]


def take():
    """The frames complete in buf."""
    global buf
    out = []
    while len(buf) >= 9:
        length, kind, hlen = struct.unpack(">IBI", buf[:9])
        if len(buf) < 4 + length:
            break
        out.append((kind, json.loads(buf[9:9 + hlen])))
        buf = buf[4 + length:]
    return out


def read():
    global buf
    chunk = os.read(IN, 65536)
    if not chunk:
        sys.exit(0)
    buf += chunk


def answer(header, text):
    send(RESULT, {"id": header["id"], "status": "ok", "http": {"status": 200, "headers": []}}, text.encode())


mode = sys.argv[1]
early = []  # frames before ready
if mode == "hold":
    want = int(sys.argv[2])
    while sum(1 for k, _ in early if k == INVOKE) < want:
        read()
        early += take()
    time.sleep(0.2)  # time for a host that sends too much to show it
    while len(sys.argv) > 3 and not os.path.exists(sys.argv[3]):
        time.sleep(0.01)
    more = bool(select.select([IN], [], [], 0)[0]) or bool(buf)
elif mode == "fail-first":
    folder = sys.argv[2]
    try:
        os.close(os.open(os.path.join(folder, "first"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        while not os.path.exists(os.path.join(folder, "go")):
            time.sleep(0.01)
        sys.exit(3)
    except FileExistsError:
        pass
    more = False
    while not any(k == INVOKE for k, _ in early):
        read()
        early += take()
send(READY, {"protocol": 1, "pid": os.getpid(), "runtime": "start_worker"})
for kind, header in early:
    if kind == INVOKE:
        answer(header, "behind init" + (", more waiting" if more else ""))
while True:
    for kind, header in take():
        if kind == INVOKE:
            answer(header, "after ready")
        elif kind == SHUTDOWN:
            sys.exit(0)
    read()
