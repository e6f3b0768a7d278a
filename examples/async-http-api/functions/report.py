# A report in two slow steps, each an activity; the progress shows in the custom status.
import time

from nimbus import durable


@durable.orchestrator
def report(ctx):
    ctx.set_custom_status({"progress": "gathering"})
    rows = yield ctx.call_activity("gather", ctx.input)
    ctx.set_custom_status({"progress": "rendering"})
    document = yield ctx.call_activity("render", rows)
    ctx.set_custom_status({"progress": "done"})
    return document


def gather(req, ctx):
    spec = req.json()
    time.sleep(spec.get("work_ms", 200) / 1000)
    return [{"region": r, "sales": len(r) * 100} for r in spec.get("regions", [])]


def render(req, ctx):
    rows = req.json()
    time.sleep(0.1)
    return {"title": "Sales", "rows": rows, "total": sum(r["sales"] for r in rows)}
