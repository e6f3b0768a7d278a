# The monitor loop: check, and if not done yet sleep on a durable timer and start again as
# new (the history holds one iteration, however long it watches).
from nimbus import durable


@durable.orchestrator
def watch(ctx):
    state = ctx.input
    checks = state.get("checks", 0) + 1
    done = yield ctx.call_activity("check", state["job"])
    if done:
        return {"job": state["job"], "checks": checks}
    ctx.set_custom_status({"checks": checks})
    yield ctx.create_timer(ctx.current_time_ms + state.get("every_ms", 60000))
    ctx.continue_as_new(dict(state, checks=checks))


def check(req, ctx):
    return ctx.state_get("jobs", req.json()) is not None


def mark_done(req, ctx):
    ctx.state_put("jobs", req.params["job"], "done")
    return {"job": req.params["job"], "done": True}
