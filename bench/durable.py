#!/usr/bin/env python3
"""Durable orchestrations (issue 15): the "hello cities" chain (an orchestrator calling 5
activities in sequence) and a fan-out of 1,000, on the store given by STORE (default the
embedded SQLite). The orchestrators are Python (the SDK's replay), or with ORCH=native C++
coroutines (bench/functions/durable_cities.cpp); the activity is the native hello function
(build/tests/functions/hello.so). Prints one JSON line:
  chain_instances, chain_s, orchestrations_per_s, history_events_per_s   (N chains started at once)
  chain_p50_ms, chain_p99_ms      (start-to-complete, one at a time, LAT_N of them)
  fanout_items, fanout_s, fanout_events_per_s
Usage: python3 bench/durable.py   (after make build). Env: N=300 LAT_N=100 FAN=1000 STORE=...
ORCH=python|native NIMBUS_BIN=path (another nimbus binary, to compare two builds side by side)
LAT_DUMP=file (each chain's latency, in order, one a line)
LAT_POLL=1 (latency by polling the status every 0.5 ms instead of one request with ?wait=)
"""
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NIMBUS = os.environ.get("NIMBUS_BIN") or os.path.join(REPO, "build", "nimbus")
HELLO = os.path.join(REPO, "build", "tests", "functions", "hello.so")
N = int(os.environ.get("N", "300"))
LAT_N = int(os.environ.get("LAT_N", "100"))
FAN = int(os.environ.get("FAN", "1000"))
STORE = os.environ.get("STORE", "")
ORCH_KIND = os.environ.get("ORCH", "python")
LAT_POLL = os.environ.get("LAT_POLL", "") == "1"
NATIVE = os.path.join(REPO, "build", "bench", "functions")

ORCH = '''from nimbus import durable

@durable.orchestrator
def cities(ctx):
    out = []
    for city in ["Tokyo", "Seattle", "London", "Lima", "Oslo"]:
        out.append((yield ctx.call_activity("hello", city)))
    return len(out)

@durable.orchestrator
def fan(ctx):
    results = yield ctx.when_all([ctx.call_activity("hello", i) for i in range(ctx.input)])
    return len(results)
'''


_conns = threading.local()


def call(port, method, path, body=None):
    """One request on this thread's kept-alive connection (a new connection per request would
    measure the client's connection set-up, on the same two cores, more than the host)."""
    for attempt in range(2):
        conn = getattr(_conns, "c", None)
        if conn is None:
            conn = _conns.c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request(method, path, body=None if body is None else body.encode())
            r = conn.getresponse()
            data = r.read()
            return r.status, (json.loads(data) if data and r.status < 300 else None)
        except (http.client.HTTPException, OSError):
            conn.close()
            _conns.c = None
            if attempt:
                raise


def start(port, name, instance, body):
    status, _ = call(port, "POST", f"/_nimbus/orchestrations/{name}?instance={instance}", body)
    assert status == 202, status


def status_of(port, name, instance):
    return call(port, "GET", f"/_nimbus/orchestrations/{name}/instances/{instance}")[1]


def wait_done(port, name, instance, poll=0.0005):
    while True:
        s = status_of(port, name, instance)
        if s and s["runtimeStatus"] in ("Completed", "Failed", "Terminated"):
            assert s["runtimeStatus"] == "Completed", s
            return s
        time.sleep(poll)


def main():
    if not (os.path.exists(NIMBUS) and os.path.exists(HELLO)):
        sys.exit("bench: build first (make build)")
    app = tempfile.mkdtemp(prefix="nimbus-durable-bench-")
    manifest = "name: durable-bench\n"
    if STORE:
        manifest += f'store: "{STORE}"\n'
    if ORCH_KIND == "native":
        cities = f"runtime: native\n    handler: {NATIVE}/durable_cities.so"
        fan = f"runtime: native\n    handler: {NATIVE}/durable_fan.so"
    else:
        cities, fan = "runtime: python\n    handler: orch.py:cities", "runtime: python\n    handler: orch.py:fan"
    manifest += f"""functions:
  cities:
    {cities}
    concurrency: 64
    triggers: [{{orchestration: {{auth: anonymous}}}}]
  fan:
    {fan}
    triggers: [{{orchestration: {{auth: anonymous}}}}]
  hello:
    runtime: native
    handler: {HELLO}
    triggers: [{{activity: {{batch_size: 64}}}}]
"""
    with open(os.path.join(app, "nimbus.yaml"), "w") as f:
        f.write(manifest)
    with open(os.path.join(app, "orch.py"), "w") as f:
        f.write(ORCH)
    env = {"PATH": "/usr/bin:/bin", "HOME": app}
    host = subprocess.Popen([NIMBUS, "start", app, "--port", "0", "--admin-port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=env, text=True)
    port = None
    for line in host.stdout:
        m = re.search(r"nimbus listening on http://[^:]+:(\d+)", line)
        if m:
            port = int(m.group(1))
            break
    threading.Thread(target=lambda: [None for _ in host.stdout], daemon=True).start()
    try:
        # Warm up (the workers start).
        start(port, "cities", "warm", "")
        wait_done(port, "cities", "warm")

        # Throughput: N chains at once.
        t0 = time.perf_counter()
        starters = []
        per = (N + 7) // 8
        for k in range(8):
            ids = [f"c{i}" for i in range(k * per, min(N, (k + 1) * per))]
            t = threading.Thread(target=lambda ids=ids: [start(port, "cities", i, "") for i in ids])
            t.start()
            starters.append(t)
        for t in starters:
            t.join()
        events = 0
        for i in range(N):
            events += wait_done(port, "cities", f"c{i}", poll=0.005)["historyEvents"]
        chain_s = time.perf_counter() - t0

        # Latency: one at a time, each started with ?wait= (the reply comes when the commit that
        # finishes the instance is in), or with LAT_POLL=1 by polling its status every 0.5 ms
        # (as before 2026-12-05's second session: 2,000 status reads a second on the same cores).
        lat = []
        for i in range(LAT_N):
            t = time.perf_counter()
            if LAT_POLL:
                start(port, "cities", f"l{i}", "")
                wait_done(port, "cities", f"l{i}")
            else:
                status, body = call(port, "POST", f"/_nimbus/orchestrations/cities?instance=l{i}&wait=60s", "")
                assert status == 200 and body["runtimeStatus"] == "Completed", (status, body)
            lat.append((time.perf_counter() - t) * 1000)
        if os.environ.get("LAT_DUMP"):
            with open(os.environ["LAT_DUMP"], "w") as f:
                f.write("\n".join(f"{x:.2f}" for x in lat) + "\n")
        lat.sort()

        # Fan-out.
        t = time.perf_counter()
        start(port, "fan", "f", str(FAN))
        fan = wait_done(port, "fan", "f", poll=0.002)
        fan_s = time.perf_counter() - t
        print(json.dumps({
            "store": STORE or "sqlite", "orchestrator": ORCH_KIND,
            "chain_instances": N, "chain_s": round(chain_s, 3),
            "orchestrations_per_s": round(N / chain_s, 1),
            "history_events_per_s": round(events / chain_s),
            "chain_p50_ms": round(lat[len(lat) // 2], 2), "chain_p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 2),
            "fanout_items": FAN, "fanout_s": round(fan_s, 3),
            "fanout_events_per_s": round(fan["historyEvents"] / fan_s),
        }))
    finally:
        host.terminate()
        host.wait(timeout=30)
        shutil.rmtree(app, ignore_errors=True)


if __name__ == "__main__":
    main()
