# The order's process, as plain code: it runs again from the top at every step against the
# instance's history, so everything that touches the world is an activity (steps.py).
from nimbus import durable

LARGE = 1000


@durable.orchestrator
def order(ctx):
    o = ctx.input
    done = []
    yield ctx.call_activity("reserve_stock", o)
    done.append("reserved")
    try:
        if o["amount"] >= LARGE:
            ctx.set_custom_status({"waiting_for": "approval"})
            timeout = ctx.create_timer(ctx.current_time_ms + o.get("approval_timeout_ms", 24 * 3600 * 1000))
            winner = yield ctx.when_any([ctx.wait_for_external_event("approval"), timeout])
            if winner is timeout or not winner.result.get("approved"):
                raise RuntimeError("not approved" if winner is not timeout else "no approval in time")
            done.append("approved by " + winner.result.get("by", "?"))
        ctx.set_custom_status({"step": "charging"})
        receipt = yield ctx.call_activity("charge", o)
        done.append("charged " + receipt)
        tracking = yield ctx.call_activity("ship", o)
        done.append("shipped " + tracking)
        ctx.set_custom_status({"step": "done"})
        return {"order": o["id"], "status": "shipped", "steps": done}
    except Exception as failed:
        # Compensation: undo what was done, then end with the reason.
        yield ctx.call_activity("release_stock", o)
        done.append("released")
        ctx.set_custom_status({"step": "cancelled"})
        return {"order": o["id"], "status": "cancelled", "reason": str(failed), "steps": done}
