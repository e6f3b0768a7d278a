"""GET /greet?name=...: a Python function, run in a worker process that starts on the first
request and is retired after idle_timeout (scale to zero)."""


def handler(req, ctx):
    name = req.query.get("name", "friend")
    ctx.log.info(f"greeting {name}")
    return {"greeting": f"Hello, {name}!", "invocation": ctx.invocation_id}
