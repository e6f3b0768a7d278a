"""Nimbus functions in Python: the worker library (standard library only).

A handler takes a request and a context and returns the reply:

    def handler(req, ctx):
        ctx.log.info("hello")
        return {"hello": req.query.get("name", "world")}

    async def handler(req, ctx):          # async handlers run concurrently in one worker
        ...

Return a str (text/plain), bytes (application/octet-stream), a dict or list (JSON), None
(204), or a Response for full control. The host runs this module as the worker process; see
docs/worker-protocol.md.
"""

from .worker import Context, HostError, Request, Response

__all__ = ["Context", "HostError", "Request", "Response"]
