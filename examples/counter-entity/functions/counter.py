"""A counter entity and a rollup orchestration over several counters."""
from nimbus import durable


@durable.entity
def counter(ctx):
    value = ctx.get_state(lambda: 0)
    op = ctx.operation_name
    if op == "add":
        ctx.set_state(value + int(ctx.get_input() or 1))
    elif op == "reset":
        ctx.set_state(0)
    elif op == "delete":
        ctx.delete_state()
    elif op != "get":
        raise ValueError(f"a counter has no operation '{op}' (add, get, reset, delete)")
    return ctx.get_state(lambda: 0) if ctx.has_state() else None


@durable.orchestrator
def rollup(ctx):
    pages = sorted(set(ctx.input or []))
    # While it holds the counters, increments for them wait: nothing lands between the read
    # and the reset.
    yield ctx.lock_entities([("counter", page) for page in pages])
    values = yield ctx.when_all([ctx.call_entity("counter", page, "get") for page in pages])
    yield ctx.when_all([ctx.call_entity("counter", page, "reset") for page in pages])
    ctx.unlock_entities()
    return dict(zip(pages, values))
