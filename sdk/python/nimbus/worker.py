"""The Python worker (the host runs `from nimbus.worker import main; main()`): speaks the
Nimbus worker protocol (docs/worker-protocol.md) on the fds in NIMBUS_WORKER_FD (frames in) and
NIMBUS_WORKER_OUT_FD (frames out) and runs one function's handler. Standard library only."""

# Start-up time is a feature: a cold start pays for every import before `ready`. Only what
# every invocation needs is imported here; traceback, asyncio and socket are imported where
# they are used, JSON goes through CPython's C codec without the json package (see _wire),
# and the query string is decoded without urllib (which pulls in re and more).
import contextvars
import os
import struct
import sys
import time

from ._wire import dumps, loads

PROTOCOL = 1
INIT, READY, INVOKE, RESULT, LOG, HOST_CALL, HOST_RESULT, HEARTBEAT, SHUTDOWN, FATAL = range(1, 11)
_PREFIX = struct.Struct(">IBI")
CO_COROUTINE = 0x80  # inspect.CO_COROUTINE, without importing inspect

# The trace context (traceparent, tracestate) of the invocation running in this context: a
# function's own HTTP calls (http.client, and so urllib and requests) carry it, so what they
# reach joins the trace.
_TRACE = contextvars.ContextVar("nimbus_trace", default=("", ""))
_http_client_patched = False


def _propagate_trace():
    """Once http.client is loaded (by the function, not by us: start-up time), its requests
    get the running invocation's traceparent (and tracestate) unless they set a traceparent
    themselves."""
    global _http_client_patched
    client = sys.modules.get("http.client")
    if client is None or _http_client_patched:
        return
    _http_client_patched = True
    original = client.HTTPConnection.request

    def request(self, method, url, body=None, headers=None, **kwargs):
        traceparent, tracestate = _TRACE.get()
        headers = {} if headers is None else headers
        if traceparent and not any(str(k).lower() == "traceparent" for k in headers):
            headers = dict(headers)
            headers["traceparent"] = traceparent
            if tracestate and not any(str(k).lower() == "tracestate" for k in headers):
                headers["tracestate"] = tracestate
        return original(self, method, url, body, headers, **kwargs)

    client.HTTPConnection.request = request


def encode(kind, header, body=b""):
    head = dumps(header, True).encode()
    return _PREFIX.pack(1 + 4 + len(head) + len(body), kind, len(head)) + head + body


def _unquote(text):
    """Percent-decoding with '+' as space (application/x-www-form-urlencoded), UTF-8."""
    text = text.replace("+", " ")
    if "%" not in text:
        return text
    parts = text.split("%")
    out = bytearray(parts[0].encode())
    for part in parts[1:]:
        try:
            out += bytes.fromhex(part[:2])
            out += part[2:].encode()
        except ValueError:
            out += b"%" + part.encode()
    return out.decode("utf-8", "replace")


def parse_query(raw):
    """'a=1&b=x%20y' -> {'a': '1', 'b': 'x y'}; the last of repeated names wins."""
    out = {}
    if raw:
        for pair in raw.split("&"):
            if pair:
                name, _, value = pair.partition("=")
                out[_unquote(name)] = _unquote(value)
    return out


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
    """The invocation as a request. query and headers are built on first use."""

    def __init__(self, header, body):
        http = header.get("http") or {}
        self._http = http
        self.method = http.get("method", "")
        self.path = http.get("path", "")
        self.raw_query = http.get("query", "")
        self.params = http.get("params", {})
        self.body = body
        self.trigger = header.get("trigger", "")
        self.attributes = header.get("attributes", {})
        self.metadata = header.get("metadata", {})
        self._query = None
        self._headers = None

    @property
    def query(self):
        if self._query is None:
            self._query = parse_query(self.raw_query)
        return self._query

    @property
    def header_list(self):
        return [tuple(h) for h in self._http.get("headers", [])]

    @property
    def headers(self):
        if self._headers is None:
            self._headers = {n.lower(): v for n, v in self._http.get("headers", [])}
        return self._headers

    def text(self):
        return self.body.decode()

    def json(self):
        return loads(self.body or b"null")


class HostError(Exception):
    """The host refused a host call; conflict is True when an ETag or create-only condition failed."""

    def __init__(self, message):
        super().__init__(message)
        self.conflict = message.startswith("conflict")


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
        self.tracestate = header.get("tracestate", "")
        self.message_id = header.get("message_id", "")
        self._worker = worker
        self._log = None

    @property
    def log(self):
        if self._log is None:
            self._log = _Log(self._worker, self.invocation_id)
        return self._log

    def remaining_ms(self):
        return max(0, self.deadline_ms - int(time.time() * 1000))

    # ---- host services. In a sync handler they return the answer; in an async handler they
    # return an awaitable. A refusal raises HostError (e.conflict for a failed ETag condition).
    def call(self, op, args, body=b""):
        if isinstance(body, str):
            body = body.encode()
        elif not isinstance(body, (bytes, bytearray, memoryview)):
            body = dumps(body).encode()
        return self._worker.host_call(self.invocation_id, op, {k: str(v) for k, v in args.items() if v is not None},
                                      bytes(body))

    def _then(self, pending, shape):
        if hasattr(pending, "__await__"):
            async def shaped():
                return shape(*(await pending))
            return shaped()
        return shape(*pending)

    def state_get(self, store, key):
        """(value bytes, etag), or None when the key is absent."""
        return self._then(self.call("state.get", {"store": store, "key": key}),
                          lambda h, b: (b, h["fields"].get("etag", "")) if h["fields"].get("found") == "true" else None)

    def state_put(self, store, key, value, if_match=None, ttl_ms=None):
        """Writes value; with if_match only when the ETag is that ("" = only if absent). Returns the new ETag."""
        return self._then(self.call("state.put", {"store": store, "key": key, "if_match": if_match, "ttl_ms": ttl_ms},
                                    value), lambda h, b: h["fields"].get("etag", ""))

    def state_delete(self, store, key, if_match=None):
        return self._then(self.call("state.delete", {"store": store, "key": key, "if_match": if_match}),
                          lambda h, b: None)

    def state_list(self, store, prefix="", limit=100):
        """[(key, value bytes, etag)] of the keys under prefix, in key order, at most limit (1-1000)."""
        def items(h, b):
            out = []
            for item in loads(b)["items"]:
                if "value" in item:
                    value = item["value"].encode()
                else:
                    import base64  # only for values that are not UTF-8
                    value = base64.b64decode(item["value_base64"])
                out.append((item["key"], value, item["etag"]))
            return out
        return self._then(self.call("state.list", {"store": store, "prefix": prefix, "limit": limit}), items)

    def publish(self, topic, payload, type=None, subject=None):
        """Publishes now (not tied to this invocation's outcome: use outputs for that). Returns the event id."""
        return self._then(self.call("publish", {"topic": topic, "type": type, "subject": subject}, payload),
                          lambda h, b: h["fields"].get("event_id", ""))

    def enqueue(self, queue, payload, type=None, delay_ms=None):
        return self._then(self.call("enqueue", {"queue": queue, "type": type, "delay_ms": delay_ms}, payload),
                          lambda h, b: h["fields"].get("id", ""))

    def invoke(self, function, payload=b""):
        """Runs another function and returns its reply body (bytes)."""
        return self._then(self.call("invoke", {"function": function}, payload), lambda h, b: b)

    def output(self, binding, payload, metadata=None):
        """A message for the output binding `binding` (the function's `outputs:`), committed
        with the result: with the input's ack for queue and topic triggers, before the reply
        for HTTP. payload: bytes, str, or anything JSON can encode. State outputs take the key
        from metadata["key"]; stream outputs too (it picks the partition: one key, one order)."""
        if isinstance(payload, str):
            payload = payload.encode()
        elif not isinstance(payload, (bytes, bytearray, memoryview)):
            payload = dumps(payload).encode()
        # One-way: the host sends no reply to an output (a sync handler writing outputs in a
        # loop reads nothing until it returns).
        self._worker.send(HOST_CALL, {"id": self.invocation_id, "op": "output",
                                      "args": {"binding": binding,
                                               "metadata": {k: str(v) for k, v in (metadata or {}).items()}}},
                          bytes(payload))


_TEXT = [["content-type", "text/plain; charset=utf-8"]]
_JSON = [["content-type", "application/json"]]
_BYTES = [["content-type", "application/octet-stream"]]


def _reply(value):
    """Turns what a handler returned into (http header, body bytes)."""
    if isinstance(value, Response):
        return {"status": value.status, "headers": [list(h) for h in value.headers]}, value.body
    if isinstance(value, str):
        return {"status": 200, "headers": _TEXT}, value.encode()
    if value is None:
        return {"status": 204, "headers": []}, b""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"status": 200, "headers": _BYTES}, bytes(value)
    return {"status": 200, "headers": _JSON}, dumps(value).encode()


def _is_coroutine_function(fn):
    code = getattr(fn, "__code__", None) or getattr(getattr(fn, "__call__", None), "__code__", None)
    return bool(code is not None and code.co_flags & CO_COROUTINE)


class Worker:
    """Runs frames through the handler. Sync handlers get a plain blocking loop (no asyncio:
    cheaper per invocation and faster to start) that runs every whole frame a read brought and
    answers them in one write; async handlers get an asyncio loop so their invocations overlap."""

    def __init__(self, fd, out_fd=None):
        self.fd = fd  # frames from the host
        self.out_fd = fd if out_fd is None else out_fd  # frames to the host
        self.function = ""
        self.handler = None
        self.is_async = False
        self.pending = []  # encoded frames waiting to be written (sync mode)
        self.calls = 0  # host calls made, for call ids
        self.buf = bytearray()
        self.deferred = []  # frames read while a blocking host call waited
        self.waiting = {}  # asyncio: call id -> future
        self.writer = None  # asyncio mode

    def host_call(self, invocation_id, op, args, body):
        self.calls += 1
        call_id = str(self.calls)
        self.send(HOST_CALL, {"id": invocation_id, "call_id": call_id, "op": op, "args": args}, body)
        if self.writer is not None:  # asyncio: the reader loop resolves it
            import asyncio
            future = asyncio.get_running_loop().create_future()
            self.waiting[call_id] = future
            return future
        # Blocking: read until our answer; invocations that arrive meanwhile wait their turn.
        self.flush()
        while True:
            frame = self.take_frame(self.buf)
            if frame is None:
                if not self.read(self.buf):
                    raise HostError("the host closed the connection")
                continue
            kind, head, data = frame
            if kind == HOST_RESULT and head.get("call_id") == call_id:
                return self.answer(head, data)
            self.deferred.append(frame)

    @staticmethod
    def answer(head, data):
        if not head.get("ok"):
            raise HostError(head.get("error", "the host refused the call"))
        head.setdefault("fields", {})
        return head, data

    def send(self, kind, header, body=b""):
        frame = encode(kind, header, body)
        if self.writer is not None:
            self.writer.write(frame)
        else:
            self.pending.append(frame)

    def flush(self):
        if self.pending:
            data = b"".join(self.pending) if len(self.pending) > 1 else self.pending[0]
            self.pending.clear()
            view = memoryview(data)
            while view:
                view = view[os.write(self.out_fd, view):]

    def load(self, spec):
        path, _, name = spec.rpartition(":")
        if not path or not name:
            raise ValueError(f"handler '{spec}' should be path/file.py:function")
        try:
            with open(path, "rb") as f:
                source = f.read()
        except OSError as exc:
            raise ValueError(f"handler file {path} cannot be read: {exc.strerror}") from None
        # A module of its own, as an import would make (without importlib's start-up cost).
        module = type(sys)("nimbus_user_" + self.function.replace("-", "_"))
        module.__file__ = path
        sys.modules[module.__name__] = module
        sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
        exec(compile(source, path, "exec"), module.__dict__)
        handler = getattr(module, name, None)
        if not callable(handler):
            raise ValueError(f"{path} has no function '{name}'")
        self.handler = handler
        self.is_async = _is_coroutine_function(handler)

    def result_for(self, ctx, value):
        http, out = _reply(value)
        self.send(RESULT, {"id": ctx.invocation_id, "status": "ok", "http": http}, out)

    def failure_for(self, ctx, exc):
        import traceback  # only failures pay for it
        self.send(RESULT, {"id": ctx.invocation_id, "status": "error", "error": {
            "type": type(exc).__name__, "message": str(exc), "stack": traceback.format_exc()}})

    def expired(self, header):
        """True for an invocation reached after its deadline (it waited behind init while the
        worker started), answered without running it: the host has answered its caller."""
        deadline = header.get("deadline_ms", 0)
        if not deadline or time.time() * 1000 <= deadline:
            return False
        self.send(RESULT, {"id": header.get("id", ""), "status": "error", "error": {
            "type": "DeadlineExceeded", "message": "the deadline passed before the invocation started", "stack": ""}})
        return True

    def invoke_sync(self, header, body):
        if self.expired(header):
            return
        ctx = Context(self, header)
        if not _http_client_patched:
            _propagate_trace()
        token = _TRACE.set((ctx.traceparent, ctx.tracestate))
        try:
            self.result_for(ctx, self.handler(Request(header, body), ctx))
        except Exception as exc:  # the function failed: report it, keep serving
            self.failure_for(ctx, exc)
        finally:
            _TRACE.reset(token)

    async def invoke_async(self, header, body):
        if self.expired(header):
            return
        ctx = Context(self, header)
        if not _http_client_patched:
            _propagate_trace()
        _TRACE.set((ctx.traceparent, ctx.tracestate))  # this task's own context: it ends with the task
        try:
            value = self.handler(Request(header, body), ctx)
            if hasattr(value, "__await__"):
                value = await value
            self.result_for(ctx, value)
        except Exception as exc:
            self.failure_for(ctx, exc)

    @staticmethod
    def take_frame(buf):
        """The next whole frame from buf as (kind, header, body), removed from buf; or None."""
        if len(buf) < 9:
            return None
        length, kind, head_len = _PREFIX.unpack_from(buf)
        if len(buf) < 4 + length:
            return None
        if length < 5 or head_len > length - 5:
            raise ValueError(f"malformed frame: length {length}, header length {head_len}")
        head = loads(bytes(buf[9:9 + head_len]))
        body = bytes(buf[9 + head_len:4 + length])
        del buf[:4 + length]
        return kind, head, body

    def read(self, buf):
        data = os.read(self.fd, 1 << 16)
        buf += data
        return len(data)

    def start(self, buf):
        """Reads init, loads the handler and answers ready; returns 0 to go on, else an exit code."""
        frame = None
        while frame is None:
            if not self.read(buf):
                return 1
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

    def next_frame(self, buf):
        if self.deferred:
            return self.deferred.pop(0)
        return self.take_frame(buf)

    def serve(self):
        buf = self.buf
        code = self.start(buf)
        self.flush()
        if code:
            return code
        if self.is_async:
            import asyncio  # only async handlers pay for it
            return asyncio.run(self.serve_async(buf))
        take, invoke = self.next_frame, self.invoke_sync
        while True:
            while True:
                frame = take(buf)
                if frame is None:
                    break
                kind, head, body = frame
                if kind == INVOKE:
                    invoke(head, body)
                elif kind == SHUTDOWN:
                    self.flush()
                    return 0
                elif kind == FATAL:
                    return 1
            self.flush()
            if not self.read(buf):
                return 0  # the host closed the socket

    async def serve_async(self, buf):
        import asyncio
        if self.out_fd == self.fd:  # one socket both ways
            import socket
            reader, self.writer = await asyncio.open_connection(sock=socket.socket(fileno=self.fd))
        else:  # a pipe each way, as the Nimbus host gives them
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader()
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(self.fd, "rb", 0))
            transport, protocol = await loop.connect_write_pipe(
                asyncio.streams.FlowControlMixin, os.fdopen(self.out_fd, "wb", 0))
            self.writer = asyncio.StreamWriter(transport, protocol, reader, loop)
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
            if kind == HOST_RESULT:
                future = self.waiting.pop(head.get("call_id"), None)
                if future is not None and not future.done():
                    try:
                        future.set_result(self.answer(head, body))
                    except HostError as exc:
                        future.set_exception(exc)
            elif kind == INVOKE:
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
    sys.exit(Worker(fd, int(os.environ.get("NIMBUS_WORKER_OUT_FD", fd))).serve())
