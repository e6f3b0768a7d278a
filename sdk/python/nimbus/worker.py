"""The Python worker (run as `python3 -m nimbus`): speaks the Nimbus worker protocol (docs/worker-protocol.md) on the
socket in NIMBUS_WORKER_FD and runs one function's handler. Standard library only."""

import importlib.util
import inspect
import json
import os
import socket
import struct
import sys
import time
import traceback
import urllib.parse

PROTOCOL = 1
INIT, READY, INVOKE, RESULT, LOG, HOST_CALL, HOST_RESULT, HEARTBEAT, SHUTDOWN, FATAL = range(1, 11)


def encode(kind, header, body=b""):
    head = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack(">IBI", 1 + 4 + len(head) + len(body), kind, len(head)) + head + body


class Response:
    """A full reply: status, headers (dict or list of pairs) and body (str or bytes)."""

    def __init__(self, body=b"", status=200, headers=None, content_type=None):
        self.status = status
        self.headers = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        if isinstance(body, str):
            body = body.encode()
            content_type = content_type or "text/plain; charset=utf-8"
        if content_type and not any(n.lower() == "content-type" for n, _ in self.headers):
            self.headers.append(("content-type", content_type))
        self.body = body


class Request:
    def __init__(self, header, body):
        http = header.get("http") or {}
        self.method = http.get("method", "")
        self.path = http.get("path", "")
        self.raw_query = http.get("query", "")
        self.query = dict(urllib.parse.parse_qsl(self.raw_query, keep_blank_values=True))
        self.header_list = [tuple(h) for h in http.get("headers", [])]
        self.headers = {n.lower(): v for n, v in self.header_list}
        self.params = http.get("params", {})
        self.body = body
        self.trigger = header.get("trigger", "")
        self.attributes = header.get("attributes", {})
        self.metadata = header.get("metadata", {})

    def text(self):
        return self.body.decode()

    def json(self):
        return json.loads(self.body or b"null")


class _Log:
    def __init__(self, worker, invocation_id):
        self._worker, self._id = worker, invocation_id

    def _write(self, level, message):
        self._worker.send(LOG, {"id": self._id, "level": level, "message": str(message)})

    def debug(self, m):
        self._write("debug", m)

    def info(self, m):
        self._write("info", m)

    def warn(self, m):
        self._write("warn", m)

    def error(self, m):
        self._write("error", m)


class Context:
    def __init__(self, worker, header):
        self.invocation_id = header.get("id", "")
        self.function = worker.function
        self.attempt = header.get("attempt", 1)
        self.deadline_ms = header.get("deadline_ms", 0)
        self.traceparent = header.get("traceparent", "")
        self.log = _Log(worker, self.invocation_id)

    def remaining_ms(self):
        return max(0, self.deadline_ms - int(time.time() * 1000))


def _reply(value):
    """Turns what a handler returned into (http header, body bytes)."""
    if isinstance(value, Response):
        return {"status": value.status, "headers": [list(h) for h in value.headers]}, value.body
    if value is None:
        return {"status": 204, "headers": []}, b""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"status": 200, "headers": [["content-type", "application/octet-stream"]]}, bytes(value)
    if isinstance(value, str):
        return {"status": 200, "headers": [["content-type", "text/plain; charset=utf-8"]]}, value.encode()
    return {"status": 200, "headers": [["content-type", "application/json"]]}, json.dumps(value).encode()


class Worker:
    """Runs frames through the handler. Sync handlers get a plain blocking loop (no asyncio:
    cheaper per invocation and faster to start); async handlers get an asyncio loop so their
    invocations overlap."""

    def __init__(self, sock):
        self.sock = sock
        self.function = ""
        self.handler = None
        self.is_async = False
        self.pending = []  # encoded frames waiting to be written (sync mode)
        self.writer = None  # asyncio mode

    def send(self, kind, header, body=b""):
        frame = encode(kind, header, body)
        if self.writer is not None:
            self.writer.write(frame)
        else:
            self.pending.append(frame)

    def flush(self):
        if self.pending:
            self.sock.sendall(b"".join(self.pending))
            self.pending.clear()

    def load(self, spec):
        path, _, name = spec.rpartition(":")
        if not path or not name:
            raise ValueError(f"handler '{spec}' should be path/file.py:function")
        module_spec = importlib.util.spec_from_file_location("nimbus_user_" + self.function.replace("-", "_"), path)
        if module_spec is None:
            raise ValueError(f"handler file {path} cannot be loaded")
        module = importlib.util.module_from_spec(module_spec)
        sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
        module_spec.loader.exec_module(module)
        handler = getattr(module, name, None)
        if not callable(handler):
            raise ValueError(f"{path} has no function '{name}'")
        self.handler = handler
        self.is_async = inspect.iscoroutinefunction(handler)

    def result_for(self, ctx, value):
        http, out = _reply(value)
        self.send(RESULT, {"id": ctx.invocation_id, "status": "ok", "http": http}, out)

    def failure_for(self, ctx, exc):
        self.send(RESULT, {"id": ctx.invocation_id, "status": "error", "error": {
            "type": type(exc).__name__, "message": str(exc), "stack": traceback.format_exc()}})

    def invoke_sync(self, header, body):
        ctx = Context(self, header)
        try:
            self.result_for(ctx, self.handler(Request(header, body), ctx))
        except Exception as exc:  # the function failed: report it, keep serving
            self.failure_for(ctx, exc)

    async def invoke_async(self, header, body):
        ctx = Context(self, header)
        try:
            value = self.handler(Request(header, body), ctx)
            if inspect.isawaitable(value):
                value = await value
            self.result_for(ctx, value)
        except Exception as exc:
            self.failure_for(ctx, exc)

    @staticmethod
    def take_frame(buf):
        """The next whole frame from buf as (kind, header, body), removed from buf; or None."""
        if len(buf) < 4:
            return None
        length = struct.unpack_from(">I", buf)[0]
        if len(buf) < 4 + length:
            return None
        kind, head_len = struct.unpack_from(">BI", buf, 4)
        if length < 5 or head_len > length - 5:
            raise ValueError(f"malformed frame: length {length}, header length {head_len}")
        head = json.loads(bytes(buf[9:9 + head_len]))
        body = bytes(buf[9 + head_len:4 + length])
        del buf[:4 + length]
        return kind, head, body

    def start(self, buf):
        """Reads init, loads the handler and answers ready; returns 0 to go on, else an exit code."""
        frame = None
        while frame is None:
            data = self.sock.recv(65536)
            if not data:
                return 1
            buf += data
            frame = self.take_frame(buf)
        kind, head, _ = frame
        if kind != INIT:
            self.send(FATAL, {"message": f"expected init first, got frame type {kind}"})
            return 2
        if head.get("protocol") != PROTOCOL:
            self.send(FATAL, {"message": f"worker speaks protocol {PROTOCOL}, host sent {head.get('protocol')}"})
            return 2
        self.function = head.get("function", "")
        try:
            self.load(head.get("handler", ""))
        except Exception as exc:
            self.send(FATAL, {"message": f"cannot load handler {head.get('handler')}: {exc}"})
            return 1
        self.send(READY, {"protocol": PROTOCOL, "pid": os.getpid(), "runtime": "python " + sys.version.split()[0]})
        return 0

    def serve(self):
        buf = bytearray()
        code = self.start(buf)
        self.flush()
        if code:
            return code
        if self.is_async:
            import asyncio  # only async handlers pay for it
            return asyncio.run(self.serve_async(buf))
        while True:
            while True:
                frame = self.take_frame(buf)
                if frame is None:
                    break
                kind, head, body = frame
                if kind == INVOKE:
                    self.invoke_sync(head, body)
                elif kind == SHUTDOWN:
                    self.flush()
                    return 0
                elif kind == FATAL:
                    return 1
            self.flush()
            data = self.sock.recv(1 << 16)
            if not data:
                return 0  # the host closed the socket
            buf += data

    async def serve_async(self, buf):
        import asyncio
        reader, self.writer = await asyncio.open_connection(sock=self.sock)
        tasks = set()
        while True:
            frame = self.take_frame(buf)
            if frame is None:
                data = await reader.read(1 << 16)
                if not data:
                    return 0
                buf += data
                continue
            kind, head, body = frame
            if kind == INVOKE:
                task = asyncio.ensure_future(self.invoke_async(head, body))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            elif kind == SHUTDOWN:
                if tasks:
                    await asyncio.wait(tasks, timeout=head.get("grace_ms", 0) / 1000)
                await self.writer.drain()
                return 0
            elif kind == FATAL:
                return 1


def main():
    # The host turns each printed line into a log line: do not hold lines back in a buffer.
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    fd = int(os.environ.get("NIMBUS_WORKER_FD", "3"))
    sock = socket.socket(fileno=fd)
    sys.exit(Worker(sock).serve())

