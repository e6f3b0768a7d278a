#!/usr/bin/env python3
"""The legacy app being strangled: any HTTP server will do. It answers every path it knows
with {"source": "monolith"} and keeps the paths it was asked for (GET /_seen lists them), so
the example's test can prove which requests reached it.

    MONOLITH_PORT=9090 python3 monolith.py
"""
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SEEN = []
LOCK = threading.Lock()


class Legacy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path == "/health":
            return self._reply(200, {"ok": True})
        if self.path == "/_seen":
            with LOCK:
                return self._reply(200, {"seen": list(SEEN)})
        with LOCK:
            SEEN.append(f"{self.command} {self.path}")
        self._reply(200, {"source": "monolith", "method": self.command, "path": self.path,
                          "forwarded_for": self.headers.get("X-Forwarded-For"), "body_bytes": len(body)})

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(os.environ.get("MONOLITH_PORT", "9090"))
    server = ThreadingHTTPServer(("127.0.0.1", port), Legacy)
    server.daemon_threads = True
    print(f"monolith listening on {port}", flush=True)
    server.serve_forever()
