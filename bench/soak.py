#!/usr/bin/python3
"""The soak test's load and measurements (run by bench/soak.sh against a host it started).

Mixed load on loopback, all of it paced and bounded: HTTP GETs with keep-alive to a native, a
Python and a Node function (one client thread each); messages POSTed to the admin API into the
queue pipeline in -> stage1 -> mid -> stage2 -> done; records POSTed to the stream `events`
(16 keys), read by the Python function `sink`, which puts one message per record on
`stream-seen`; the host's own timer `tick` every second. In every interval one worker process of
the host is killed with SIGKILL (in turn: py, js, sink, stage2) and must be replaced.

Every interval one line: the host's RSS, open fds and threads (/proc), the HTTP requests of
that interval with errors, p50 and p99, the queue and stream figures, the store's file sizes,
the timer runs and the kill. At the end the load stops, the pipeline drains (bounded), and a
verdict: RSS drift, fds and threads flat, the store's WAL bounded, nothing lost, duplicated or
dead-lettered, every killed worker replaced, the timer firing every second. Exit status 1 if
the verdict fails. Standard library only (run with /usr/bin/python3).
"""

import argparse
import http.client
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time

KILL_ORDER = ["py", "js", "sink", "stage2"]
ROUTES = ["/hello", "/py", "/js"]
NOT_OK = ("error", "timeout", "crashed", "unavailable", "overloaded")


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def pct(sorted_values, p):
    """Nearest rank."""
    if not sorted_values:
        return float("nan")
    return sorted_values[max(0, math.ceil(p * len(sorted_values)) - 1)]


class Client:
    """One keep-alive connection, reopened after an error. Not shared between threads."""

    def __init__(self, port, headers=None, timeout=10.0, idle=False):
        self.port, self.headers, self.timeout = port, headers or {}, timeout
        self.idle = idle  # may sit idle past the host's keep-alive timeout
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        """-> (status, body bytes); status 0 on a connection error, -1 if refused (nothing sent)."""
        h = dict(self.headers)
        if headers:
            h.update(headers)
        reused = self.conn is not None
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            self.conn.request(method, path, body=body, headers=h)
            r = self.conn.getresponse()
            data = r.read()
            if r.getheader("connection", "").lower() == "close":
                self.close()
            return r.status, data
        except ConnectionRefusedError as e:
            self.close()
            return -1, str(e).encode()
        except (OSError, http.client.HTTPException) as e:
            # The load's connections are never idle long enough for the host to close them, so
            # a connection lost is an error to count. A GET on one that sat idle (the admin
            # connection through the warm-up) may have been closed by the host: once more.
            self.close()
            if reused and self.idle and method == "GET":
                return self.request(method, path, body, headers)
            return 0, str(e).encode()

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Paced(threading.Thread):
    """Calls self.once() `rate` times a second on a fixed schedule until stopped; a schedule
    more than a second behind restarts from now instead of bursting."""

    def __init__(self, name, rate, stop):
        super().__init__(name=name, daemon=True)
        self.rate, self.stop = rate, stop

    def run(self):
        if self.rate <= 0:
            return
        period = 1.0 / self.rate
        next_t = time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic()
            if next_t > now:
                if self.stop.wait(next_t - now):
                    break
            elif now - next_t > 1.0:
                next_t = now
            self.once()
            next_t += period


class HttpLoad(Paced):
    def __init__(self, port, route, rate, stop, sink):
        super().__init__("http" + route, rate, stop)
        self.client, self.route, self.sink = Client(port), route, sink

    def once(self):
        t0 = time.perf_counter()
        status, _ = self.client.request("GET", self.route)
        self.sink.add(self.route, time.perf_counter() - t0, status)


class Producer(Paced):
    """POSTs to the admin API; counts what was taken (201) and what may or may not have been."""

    def __init__(self, name, admin_port, token, path, rate, stop, body, headers=None):
        super().__init__(name, rate, stop)
        self.client = Client(admin_port, {"Authorization": "Bearer " + token})
        self.path, self.body, self.headers = path, body, headers
        self.seq = 0
        self.ok = 0          # taken: 201
        self.refused = 0     # answered with an error or refused: not taken
        self.unknown = 0     # no answer: maybe taken
        self.lock = threading.Lock()

    def once(self):
        self.seq += 1
        status, _ = self.client.request("POST", self.path, self.body(self.seq),
                                        self.headers(self.seq) if self.headers else None)
        with self.lock:
            if status == 201:
                self.ok += 1
            elif status == 0:
                self.unknown += 1
            else:
                self.refused += 1

    def counts(self):
        with self.lock:
            return self.ok, self.refused, self.unknown


class Latencies:
    """HTTP samples of the current interval, taken away by the sampler at its end."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.samples = {r: [] for r in ROUTES}
        self.errors = {}

    def add(self, route, seconds, status):
        with self.lock:
            if status == 200:
                self.samples[route].append(seconds)
            else:
                key = "%s %s" % (route, status if status > 0 else "conn")
                self.errors[key] = self.errors.get(key, 0) + 1

    def take(self):
        with self.lock:
            s, e = self.samples, self.errors
            self.reset()
        return s, e


class Host:
    def __init__(self, pid, admin_port, token):
        self.pid = pid
        self.admin = Client(admin_port, {"Authorization": "Bearer " + token}, idle=True)

    def alive(self):
        try:
            with open("/proc/%d/stat" % self.pid) as f:
                return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except OSError:
            return False

    def proc(self):
        status = {}
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                status[k] = v.strip()
        rss_kb = int(status["VmRSS"].split()[0])
        anon_kb = int(status["RssAnon"].split()[0])
        threads = int(status["Threads"])
        fds = len(os.listdir("/proc/%d/fd" % self.pid))
        return rss_kb, anon_kb, fds, threads

    def workers(self):
        """{pid: function} of the host's child processes (their NIMBUS_FUNCTION)."""
        out = subprocess.run(["pgrep", "-P", str(self.pid)], capture_output=True, text=True).stdout
        found = {}
        for p in out.split():
            try:
                with open("/proc/%s/environ" % p, "rb") as f:
                    env = f.read().split(b"\0")
            except OSError:
                continue
            for kv in env:
                if kv.startswith(b"NIMBUS_FUNCTION="):
                    found[int(p)] = kv.split(b"=", 1)[1].decode()
        return found

    def workers_rss_kb(self, pids):
        total = 0
        for p in pids:
            try:
                with open("/proc/%d/status" % p) as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
            except OSError:
                pass
        return total

    def get_json(self, path):
        status, body = self.admin.request("GET", path)
        if status != 200:
            raise RuntimeError("GET %s: %s %s" % (path, status, body[:200]))
        return json.loads(body)

    def queues(self):
        """{queue: row} from GET /admin/queues (a queue with nothing in it may be absent)."""
        return {q["queue"]: q for q in self.get_json("/admin/queues")["queues"]}

    def stream_lag(self, name, group):
        """Records of the stream not yet behind the group's checkpoint (a partition with no
        checkpoint yet counts whole)."""
        d = self.get_json("/admin/streams/" + name)
        cps = {}
        for g in d["groups"]:
            if g["group"] == group:
                cps = {p["partition"]: p["offset"] for p in g["partitions"]}
        return sum(max(0, p["next_offset"] - cps.get(p["partition"], p["first_offset"]))
                   for p in d["partition_offsets"])

    def metrics(self):
        """(timer runs of `tick`, invocations that did not succeed, by function)."""
        status, body = self.admin.request("GET", "/metrics")
        if status != 200:
            raise RuntimeError("GET /metrics: %s" % status)
        ticks, failed = 0, {}
        for m in re.finditer(r'^nimbus_invocations_total\{function="([^"]*)",trigger="([^"]*)",outcome="([^"]*)"\} (\S+)$',
                             body.decode(), re.M):
            fn, trigger, outcome, v = m.group(1), m.group(2), m.group(3), int(float(m.group(4)))
            if fn == "tick" and trigger == "timer" and outcome == "success":
                ticks += v
            if outcome in NOT_OK and v:
                failed[fn] = failed.get(fn, 0) + v
        return ticks, failed


def store_sizes(app):
    """(database, WAL) file sizes in KiB of the app's SQLite store."""
    def kb(name):
        try:
            return os.path.getsize(os.path.join(app, ".nimbus", name)) / 1024
        except OSError:
            return 0.0
    return kb("state.db"), kb("state.db-wal")


def backlog(q, name):
    row = q.get(name, {})
    return row.get("ready", 0) + row.get("delayed", 0) + row.get("in_flight", 0)


def dead(q):
    return {name: row["dead"] for name, row in q.items() if row.get("dead", 0)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--app", required=True)
    ap.add_argument("--host-pid", type=int, required=True)
    ap.add_argument("--minutes", type=int, default=30)
    ap.add_argument("--interval", type=float, default=60.0, help="seconds per recorded 'minute'")
    ap.add_argument("--warmup", type=float, default=60.0)
    ap.add_argument("--http-rps", type=float, default=300.0, help="in all, split over the three routes")
    ap.add_argument("--queue-rps", type=float, default=50.0)
    ap.add_argument("--stream-rps", type=float, default=50.0)
    ap.add_argument("--drain", type=float, default=120.0, help="at most this long for the pipeline to drain")
    ap.add_argument("--replace-within", type=float, default=15.0)
    ap.add_argument("--fd-slack", type=int, default=8)
    ap.add_argument("--thread-slack", type=int, default=2)
    ap.add_argument("--rss-drift", type=float, default=0.10)
    ap.add_argument("--wal-max-mib", type=float, default=96.0,
                    help="the store cuts its WAL back to 64 MiB at each restart (journal_size_limit); between two "
                         "restarts it grows by what was written since, so a WAL held near 64 MiB is bounded and one "
                         "far above it is growth")
    ap.add_argument("--section", help="write the markdown section for bench/RESULTS.md here")
    ap.add_argument("--command", default="bash bench/soak.sh")
    ap.add_argument("--machine", default="")
    a = ap.parse_args()
    sys.setswitchinterval(0.0005)  # client threads waiting for the GIL would add to latencies

    with open(os.path.join(a.app, ".nimbus", "host.json")) as f:
        hj = json.load(f)
    with open(os.path.join(a.app, ".nimbus", "admin.token")) as f:
        token = f.read().strip()
    host = Host(a.host_pid, hj["admin_port"], token)

    stop = threading.Event()
    lat = Latencies()
    loads = [HttpLoad(hj["http_port"], r, a.http_rps / len(ROUTES), stop, lat) for r in ROUTES]
    queue = Producer("queue", hj["admin_port"], token, "/admin/queues/in/messages", a.queue_rps, stop,
                     lambda n: ("soak-%d" % n).encode(), lambda n: {"content-type": "text/plain"})
    stream = Producer("stream", hj["admin_port"], token, "/admin/streams/events/records", a.stream_rps, stop,
                      lambda n: json.dumps({"n": n, "t": time.time()}).encode(),
                      lambda n: {"x-key": "device-%d" % (n % 16), "content-type": "application/json"})
    threads = loads + [queue, stream]
    for t in threads:
        t.start()
    log("load: HTTP %.0f req/s over %s (keep-alive, a thread each), queue %.0f msg/s, stream %.0f rec/s, "
        "timer 1/s; %d x %.0f s after %.0f s of warm-up; host pid %d" %
        (a.http_rps, " ".join(ROUTES), a.queue_rps, a.stream_rps, a.minutes, a.interval, a.warmup, a.host_pid))

    rows, kills, problems = [], [], []
    # Warm-up: every function started, first SQLite pages in, the autoscaler settled. The admin
    # reads the samples make are made once in it too: the host opens a store reader (and its
    # threads and fds) on the first of them, which would otherwise show as growth in minute 2.
    kill_n = 0
    try:
        time.sleep(a.warmup / 2)
        host.queues()
        host.stream_lag("events", "sink")
        time.sleep(a.warmup / 2)
        lat.take()
        ticks0, failed0 = host.metrics()
        t0 = time.monotonic()
        for minute in range(1, a.minutes + 1):
            start = t0 + (minute - 1) * a.interval
            end = start + a.interval
            # The kill, a quarter into the interval; its replacement is awaited (bounded).
            time.sleep(max(0.0, start + a.interval / 4 - time.monotonic()))
            if not host.alive():
                problems.append("the host died during minute %d" % minute)
                break
            before = host.workers()
            for i in range(len(KILL_ORDER)):
                fn = KILL_ORDER[(kill_n + i) % len(KILL_ORDER)]
                pids = [p for p, f in before.items() if f == fn]
                if pids:
                    break
            kill_n += 1
            if pids:
                victim = pids[0]
                t_kill = time.monotonic()
                os.kill(victim, signal.SIGKILL)
                new = None
                limit = min(t_kill + a.replace_within, end - 0.5)
                while time.monotonic() < limit:
                    now_workers = host.workers()
                    fresh = [p for p, f in now_workers.items() if f == fn and p not in before]
                    if fresh:
                        new = fresh[0]
                        break
                    time.sleep(0.02)
                kill = {"minute": minute, "function": fn, "pid": victim, "new": new,
                        "ms": (time.monotonic() - t_kill) * 1000 if new else None}
            else:
                kill = {"minute": minute, "function": None}
            kills.append(kill)

            time.sleep(max(0.0, end - time.monotonic()))
            if not host.alive():
                problems.append("the host died during minute %d" % minute)
                break
            samples, errors = lat.take()
            rss_kb, anon_kb, fds, nthreads = host.proc()
            wk = host.workers()
            q = host.queues()
            lag = host.stream_lag("events", "sink")
            ticks, failed = host.metrics()
            db_kb, wal_kb = store_sizes(a.app)
            allv = sorted(v for r in ROUTES for v in samples[r])
            sent, _, _ = queue.counts()
            appended, _, _ = stream.counts()
            row = {
                "minute": minute, "rss_kb": rss_kb, "anon_kb": anon_kb, "fds": fds, "threads": nthreads,
                "workers": len(wk), "workers_rss_kb": host.workers_rss_kb(wk),
                "req": len(allv) + sum(errors.values()), "errors": sum(errors.values()), "error_kinds": errors,
                "p50": pct(allv, 0.50) * 1000, "p99": pct(allv, 0.99) * 1000,
                "p99_by_route": {r: pct(sorted(samples[r]), 0.99) * 1000 for r in ROUTES},
                "sent": sent, "done": q.get("done", {}).get("ready", 0),
                "in": backlog(q, "in"), "mid": backlog(q, "mid"), "dead": sum(dead(q).values()),
                "appended": appended, "seen": q.get("stream-seen", {}).get("ready", 0), "lag": lag,
                "db_kb": db_kb, "wal_kb": wal_kb,
                "ticks": ticks - ticks0, "failed": {k: v - failed0.get(k, 0) for k, v in failed.items() if v - failed0.get(k, 0)},
                "kill": kill,
            }
            ticks0, failed0 = ticks, failed
            rows.append(row)
            if kill.get("function"):
                k = "killed %s %d -> %s" % (kill["function"], kill["pid"],
                                            "%d in %.0f ms" % (kill["new"], kill["ms"]) if kill["new"] else "NOT REPLACED")
            else:
                k = "no worker to kill"
            log("minute %d/%d: rss %.1f MiB (anon %.1f), fds %d, threads %d (workers %d, %.1f MiB) | http %d req, %d err, "
                "p50 %.2f p99 %.2f ms (%s) | queue sent %d done %d, backlog in %d mid %d, dead %d | "
                "stream appended %d seen %d lag %d | store %.1f MiB, WAL %.1f MiB | timer %d | failed invocations %s | %s" %
                (minute, a.minutes, rss_kb / 1024, anon_kb / 1024, fds, nthreads, row["workers"], row["workers_rss_kb"] / 1024,
                 row["req"], row["errors"], row["p50"], row["p99"],
                 " ".join("%s %.2f" % (r[1:], v) for r, v in row["p99_by_route"].items()),
                 sent, row["done"], row["in"], row["mid"], row["dead"], appended, row["seen"], lag,
                 db_kb / 1024, wal_kb / 1024, row["ticks"], json.dumps(row["failed"], separators=(",", ":")) if row["failed"] else "0", k))
            if errors:
                log("  http errors: %s" % ", ".join("%s x%d" % kv for kv in sorted(errors.items())))
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        problems.append("the soak could not sample the host: %s: %s" % (type(e).__name__, e))
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=15)

    # Drain: nothing left in in/mid (ready, delayed or leased) and the stream read to its end,
    # twice in a row half a second apart; bounded.
    sent, refused, unknown = queue.counts()
    appended, s_refused, s_unknown = stream.counts()
    log("load stopped: %d messages sent (%d refused, %d unanswered), %d records appended (%d refused, %d unanswered); "
        "draining (at most %.0f s)" % (sent, refused, unknown, appended, s_refused, s_unknown, a.drain))
    t_drain = time.monotonic()
    calm = 0
    q, lag, readable = {}, 0, False
    try:
        while host.alive() and time.monotonic() - t_drain < a.drain:
            q = host.queues()
            lag = host.stream_lag("events", "sink")
            calm = calm + 1 if backlog(q, "in") + backlog(q, "mid") == 0 and lag == 0 else 0
            if calm >= 2:
                break
            time.sleep(0.5)
        if host.alive():
            q = host.queues()
            lag = host.stream_lag("events", "sink")
            readable = True
        elif not problems:
            problems.append("the host died")
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        problems.append("the soak could not read the queues after the load: %s: %s" % (type(e).__name__, e))
    drained_s = time.monotonic() - t_drain
    done = q.get("done", {}).get("ready", 0)
    seen = q.get("stream-seen", {}).get("ready", 0)
    dl = dead(q)

    # The verdict.
    verdict = []

    def check(ok, text):
        verdict.append((ok, text))
        log("%s %s" % ("PASS" if ok else "FAIL", text))

    log("verdict (drained in %.1f s):" % drained_s)
    for p in problems:
        check(False, p)
    if rows:
        first, last = rows[0], rows[-1]
        drift = (last["rss_kb"] - first["rss_kb"]) / first["rss_kb"]
        check(drift < a.rss_drift, "host RSS drift %+.1f%% (%.1f MiB in minute 1, %.1f MiB in minute %d; max %.1f MiB) < %.0f%%" %
              (drift * 100, first["rss_kb"] / 1024, last["rss_kb"] / 1024, last["minute"],
               max(r["rss_kb"] for r in rows) / 1024, a.rss_drift * 100))
        check(last["fds"] - first["fds"] <= a.fd_slack, "open fds flat: %d in minute 1, %d in minute %d (range %d-%d; allowed +%d)" %
              (first["fds"], last["fds"], last["minute"], min(r["fds"] for r in rows), max(r["fds"] for r in rows), a.fd_slack))
        check(last["threads"] - first["threads"] <= a.thread_slack,
              "threads flat: %d in minute 1, %d in minute %d (range %d-%d; allowed +%d)" %
              (first["threads"], last["threads"], last["minute"], min(r["threads"] for r in rows),
               max(r["threads"] for r in rows), a.thread_slack))
        wal_max = max(r["wal_kb"] for r in rows) / 1024
        check(wal_max <= a.wal_max_mib, "store WAL bounded: %.1f MiB at most (%.1f MiB in minute 1, %.1f MiB in minute %d; "
              "database %.1f MiB at the end) <= %.0f MiB" %
              (wal_max, first["wal_kb"] / 1024, last["wal_kb"] / 1024, last["minute"], last["db_kb"] / 1024, a.wal_max_mib))
        ticks = sum(r["ticks"] for r in rows)
        expect = len(rows) * a.interval
        check(ticks >= 0.9 * expect, "timer: %d runs in %.0f s (expected ~%.0f; per minute %d-%d)" %
              (ticks, expect, expect, min(r["ticks"] for r in rows), max(r["ticks"] for r in rows)))
    else:
        check(False, "no minute recorded")
    lost = sent - done
    extra = max(0, done - sent - unknown)  # an unanswered POST may have been taken
    s_lost = appended - seen
    s_extra = max(0, seen - appended - s_unknown)
    if readable:
        check(lost <= 0 and extra == 0 and not dl and backlog(q, "in") + backlog(q, "mid") == 0,
              "queue pipeline: %d sent, %d reached done: %d lost, %d duplicated, %d left in in/mid, dead-lettered %s" %
              (sent, done, max(0, lost), extra, backlog(q, "in") + backlog(q, "mid"), json.dumps(dl) if dl else "0"))
        check(s_lost <= 0 and s_extra == 0 and lag == 0,
              "stream: %d appended, %d seen by sink: %d lost, %d duplicated, lag %d" %
              (appended, seen, max(0, s_lost), s_extra, lag))
    else:
        check(False, "queue pipeline and stream not checked: the host could not be read after the load "
              "(%d messages sent, %d records appended)" % (sent, appended))
    killed = [k for k in kills if k.get("function")]
    unreplaced = [k for k in killed if not k["new"]]
    ms = sorted(k["ms"] for k in killed if k["new"])
    check(len(killed) == len(kills) and not unreplaced,
          "workers: %d killed with SIGKILL (%s), %d replaced (median %.0f ms, max %.0f ms after the kill)%s" %
          (len(killed), ", ".join(sorted({k["function"] for k in killed})), len(killed) - len(unreplaced),
           pct(ms, 0.5) if ms else float("nan"), ms[-1] if ms else float("nan"),
           "; not replaced: " + ", ".join("%s %d" % (k["function"], k["pid"]) for k in unreplaced) if unreplaced else
           ("; %d minutes found no worker to kill" % (len(kills) - len(killed)) if len(killed) < len(kills) else "")))
    http_req = sum(r["req"] for r in rows)
    http_err = sum(r["errors"] for r in rows)
    if rows:
        log("info: HTTP %d requests, %d errors (a SIGKILL fails the requests in flight on that worker); "
            "p99 per minute %.2f-%.2f ms" % (http_req, http_err, min(r["p99"] for r in rows), max(r["p99"] for r in rows)))
    passed = all(ok for ok, _ in verdict)
    log("soak %s" % ("PASSED" if passed else "FAILED"))

    if a.section:
        write_section(a, rows, verdict, passed, http_req, http_err, drained_s)
    return 0 if passed else 1


def write_section(a, rows, verdict, passed, http_req, http_err, drained_s):
    out = []
    w = out.append
    w("## %s — soak: %d minutes of mixed load on one host (%s)" %
      (time.strftime("%Y-%m-%d"), a.minutes, "passed" if passed else "FAILED"))
    w("")
    if a.machine:
        w("- Machine: %s." % a.machine)
    w("- Command: `%s`." % a.command)
    w("- Load (loopback, paced, unpinned): HTTP GET with keep-alive at %.0f req/s in all, one client "
      "thread each for `/hello` (native `hello.so`, in the host, `blocking: false`), `/py` (Python) and "
      "`/js` (Node); %.0f messages/s POSTed to the admin API into the queue pipeline `in` → `stage1` "
      "(`relay.so` in the host) → `mid` → `stage2` (`relay.so`, `isolation: process`) → `done`; %.0f "
      "records/s POSTed to the stream `events` (4 partitions, 16 keys), read by the Python function "
      "`sink` which outputs one message per record; a native timer every second. One worker killed with "
      "SIGKILL a quarter into every minute, in turn `py`, `js`, `sink`, `stage2`. App: `bench/soak_app`. "
      "%.0f s warm-up; each row is one %.0f s interval, sampled at its end; latency measured by the Python "
      "client (`bench/soak.py`), send to full response." %
      (a.http_rps, a.queue_rps, a.stream_rps, a.warmup, a.interval))
    w("")
    w("| minute | host RSS (anon) MiB | fds | threads | workers (RSS MiB) | HTTP req | errors | p50 ms | p99 ms | "
      "queue sent / done | backlog in+mid | stream appended / seen | store / WAL MiB | timer runs | killed → replaced |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        k = r["kill"]
        if k.get("function"):
            kill = "%s, %s" % (k["function"], "%.0f ms" % k["ms"] if k["new"] else "**not replaced**")
        else:
            kill = "none found"
        w("| %d | %.1f (%.1f) | %d | %d | %d (%.1f) | %d | %d | %.2f | %.2f | %d / %d | %d | %d / %d | %.1f / %.1f | %d | %s |" %
          (r["minute"], r["rss_kb"] / 1024, r["anon_kb"] / 1024, r["fds"], r["threads"], r["workers"], r["workers_rss_kb"] / 1024,
           r["req"], r["errors"], r["p50"], r["p99"], r["sent"], r["done"], r["in"] + r["mid"],
           r["appended"], r["seen"], r["db_kb"] / 1024, r["wal_kb"] / 1024, r["ticks"], kill))
    w("")
    w("Verdict (after the load stopped; the pipeline drained in %.1f s):" % drained_s)
    w("")
    for ok, text in verdict:
        w("- %s %s" % ("**pass**:" if ok else "**FAIL**:", text))
    w("- HTTP: %d requests, %d errors in all (a SIGKILL fails the requests in flight on that worker with 502)."
      % (http_req, http_err))
    w("")
    with open(a.section, "w") as f:
        f.write("\n".join(out))


if __name__ == "__main__":
    sys.exit(main())
