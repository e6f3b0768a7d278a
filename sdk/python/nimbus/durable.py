"""Durable orchestrations in Python: an orchestrator is a generator that yields tasks.

    from nimbus import durable

    @durable.orchestrator
    def hello_cities(ctx):
        a = yield ctx.call_activity("say_hello", "Tokyo")
        b = yield ctx.call_activity("say_hello", "London")
        return [a, b]

The function runs again from the start at every step, against the instance's history
(deterministic replay): a task the history says is done gives its result at once, so code
must be deterministic: take time from ctx.current_time_ms, ids from ctx.new_guid(), and
do I/O only in activities. Yield:

    ctx.call_activity(name, input)              the activity's result (raises ActivityFailed)
    ctx.call_activity(name, input, retry=durable.RetryPolicy(max_attempts=5, first_interval_ms=1000))
                                                the same, tried again on durable timers
    ctx.call_sub_orchestration(name, input)     the child's output
    ctx.call_entity(name, key, op, input)       an entity operation's result
    ctx.create_timer(fire_at_ms)                None, at that time (durable: survives restarts)
    ctx.wait_for_external_event(name)           the data of the next event by that name
    ctx.when_all([tasks])                       a list of their results
    ctx.when_any([tasks])                       the first task done (its .result)

`yield ctx.lock_entities([(name, key), ...])` starts a critical section over those entities
(others' operations on them wait) until ctx.unlock_entities() or the instance ends.
ctx.signal_entity(name, key, op, input) sends an entity an operation without waiting (not
yielded). ctx.set_custom_status(value) shows a JSON value in the instance's status; return ends the
instance with its output; ctx.continue_as_new(input) starts it again from a fresh history.

An entity is a keyed object whose operations run one at a time per key:

    @durable.entity
    def counter(ctx):
        value = ctx.get_state(lambda: 0)
        if ctx.operation_name == "add":
            ctx.set_state(value + ctx.get_input())
        elif ctx.operation_name == "get":
            return value                     # the caller's result (or ctx.set_result)
        elif ctx.operation_name == "delete":
            ctx.delete_state()

An operation that raises leaves the state as it was before it and fails only its caller.
The host side is src/durable/; docs/durable.md is the guide.
"""

import copy

import uuid

__all__ = ["orchestrator", "entity", "ActivityFailed", "NonDeterminism", "Task", "EntityContext", "RetryPolicy"]


class ActivityFailed(Exception):
    """A called activity or sub-orchestration failed after its retries."""

    def __init__(self, error):
        self.error = error or {}
        super().__init__(self.error.get("message") or self.error.get("type") or "failed")


class NonDeterminism(Exception):
    pass


class Task:
    """Something an orchestrator waits for; done once the history says so."""

    def __init__(self):
        self.done = False
        self.result = None
        self.error = None
        self._parents = []

    def _finish(self, result=None, error=None):
        if self.done:
            return
        self.done, self.result, self.error = True, result, error
        for parent in self._parents:
            parent._child_done(self)

    def _child_done(self, child):
        pass


class _WhenAll(Task):
    def __init__(self, tasks):
        super().__init__()
        self.tasks = list(tasks)
        for t in self.tasks:
            t._parents.append(self)
        self._child_done(None)

    def _child_done(self, child):
        if child is not None and child.error is not None:
            return self._finish(error=child.error)
        if all(t.done for t in self.tasks):
            self._finish(result=[t.result for t in self.tasks])


class _WhenAny(Task):
    def __init__(self, tasks):
        super().__init__()
        self.tasks = list(tasks)
        for t in self.tasks:
            t._parents.append(self)
        for t in self.tasks:
            if t.done:
                self._finish(result=t)
                break

    def _child_done(self, child):
        self._finish(result=child)


class RetryPolicy:
    """How a call is tried again when it fails: up to max_attempts in all, waiting
    first_interval_ms, then that times backoff each time (at most max_interval_ms) on a durable
    timer. handle(error) -> bool may say which failures are worth another try."""

    def __init__(self, max_attempts, first_interval_ms=1000, backoff=2.0, max_interval_ms=None, handle=None):
        if int(max_attempts) < 1:
            raise ValueError("max_attempts is at least 1")
        self.max_attempts = int(max_attempts)
        self.first_interval_ms = max(0, int(first_interval_ms))
        self.backoff = float(backoff)
        self.max_interval_ms = max_interval_ms
        self.handle = handle

    def delay_ms(self, attempt):
        """The wait after failed attempt number `attempt` (1-based)."""
        delay = self.first_interval_ms * (self.backoff ** (attempt - 1))
        if self.max_interval_ms is not None:
            delay = min(delay, self.max_interval_ms)
        return int(delay)


class _Retrying(Task):
    """A call with a RetryPolicy: each failure schedules a durable timer, then the call again
    (all of it in the history, so replay makes the same steps)."""

    def __init__(self, ctx, start, policy):
        super().__init__()
        self._ctx, self._start, self._policy = ctx, start, policy
        self._attempt = 1
        self._timer = None
        self._watch(start())

    def _watch(self, task):
        self._current = task
        task._parents.append(self)
        if task.done:
            self._child_done(task)

    def _child_done(self, child):
        if self.done or child is not self._current:
            return
        if child is self._timer:
            self._timer = None
            self._attempt += 1
            return self._watch(self._start())
        if child.error is None:
            return self._finish(child.result)
        policy = self._policy
        if self._attempt >= policy.max_attempts or (policy.handle is not None and not policy.handle(child.error)):
            return self._finish(error=child.error)
        self._timer = self._ctx.create_timer(self._ctx.current_time_ms + policy.delay_ms(self._attempt))
        self._watch(self._timer)


class _Continue(Exception):
    def __init__(self, value):
        self.value = value


class Context:
    def __init__(self, work):
        self.instance_id = work["instance"]
        self.name = work.get("name", "")
        self.input = None
        self.current_time_ms = 0
        self.is_replaying = True
        self._actions = []
        self._tasks = {}        # task id -> Task
        self._results = {}      # task id -> (result, error) seen before the task was made
        self._waiters = {}      # event name -> [Task]
        self._events = {}       # event name -> [data] raised before anyone waited
        self._guids = 0
        self._custom_status = None
        self._has_custom_status = False

    # --- what an orchestrator calls -----------------------------------------------------
    def _schedule(self, action):
        task_id = len(self._actions)
        self._actions.append(action)
        task = Task()
        self._tasks[task_id] = task
        if task_id in self._results:
            task._finish(*self._results.pop(task_id))
        return task

    def call_activity(self, name, input=None, retry=None):
        start = lambda: self._schedule({"type": "call_activity", "name": name, "input": input})
        return _Retrying(self, start, retry) if retry is not None else start()

    def call_sub_orchestration(self, name, input=None, retry=None):
        start = lambda: self._schedule({"type": "call_sub_orchestration", "name": name, "input": input})
        return _Retrying(self, start, retry) if retry is not None else start()

    def call_entity(self, name, key, operation, input=None):
        """An entity's operation, request/reply: its result (raises ActivityFailed)."""
        return self._schedule({"type": "call_entity", "name": name, "key": str(key), "op": operation, "input": input})

    def signal_entity(self, name, key, operation, input=None):
        """An entity's operation, one way: nothing to wait for (do not yield it)."""
        self._actions.append({"type": "signal_entity", "name": name, "key": str(key), "op": operation, "input": input})

    def lock_entities(self, entities):
        """A critical section: yield it to hold every (name, key) in `entities`; operations of
        others on them wait until ctx.unlock_entities() or the end of the instance."""
        return self._schedule({"type": "lock_entities",
                               "entities": [{"name": name, "key": str(key)} for name, key in entities]})

    def unlock_entities(self):
        """Ends the critical section (not yielded)."""
        self._actions.append({"type": "unlock_entities"})

    def create_timer(self, fire_at_ms):
        return self._schedule({"type": "create_timer", "fire_at_ms": int(fire_at_ms)})

    def wait_for_external_event(self, name):
        task = Task()
        pending = self._events.get(name)
        if pending:
            task._finish(pending.pop(0))
        else:
            self._waiters.setdefault(name, []).append(task)
        return task

    def when_all(self, tasks):
        return _WhenAll(tasks)

    def when_any(self, tasks):
        return _WhenAny(tasks)

    def new_guid(self):
        self._guids += 1
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"nimbus:{self.instance_id}:{self._guids}"))

    def set_custom_status(self, value):
        self._custom_status, self._has_custom_status = value, True

    def continue_as_new(self, input=None):
        raise _Continue(input)

    def log(self, *args):
        """Prints only when not replaying (each line once, not once per step)."""
        if not self.is_replaying:
            print(*args, flush=True)

    # --- the history, one event at a time -------------------------------------------------
    def _apply(self, event):
        kind = event.get("type")
        if kind == "orchestrator_started":
            self.current_time_ms = event.get("time_ms", self.current_time_ms)
        elif kind == "execution_started":
            self.input = event.get("input")
        elif kind in ("task_completed", "sub_orchestration_completed"):
            self._resolve(event["task_id"], event.get("result"), None)
        elif kind in ("task_failed", "sub_orchestration_failed"):
            self._resolve(event["task_id"], None, event.get("error") or {"message": "failed"})
        elif kind in ("timer_fired", "lock_acquired"):
            self._resolve(event["task_id"], None, None)
        elif kind == "event_raised":
            name = event.get("name")
            waiters = self._waiters.get(name)
            if waiters:
                waiters.pop(0)._finish(event.get("data"))
            else:
                self._events.setdefault(name, []).append(event.get("data"))

    def _resolve(self, task_id, result, error):
        task = self._tasks.get(task_id)
        if task is None:
            self._results[task_id] = (result, error)
        else:
            task._finish(result, error)


def _step(fn, work):
    ctx = Context(work)
    history = work.get("history", [])
    events = list(history) + list(work.get("new_events", []))
    outcome = {"type": "running"}
    gen = None
    waiting = None
    started = False

    def advance():
        nonlocal gen, waiting, outcome
        while True:
            if waiting is not None and not waiting.done:
                return False
            try:
                if gen is None:
                    value = fn(ctx)
                    if not hasattr(value, "send"):  # a plain function: done at once
                        outcome = {"type": "completed", "output": value}
                        return True
                    gen = value
                    yielded = gen.send(None)
                elif waiting.error is not None:
                    yielded = gen.throw(ActivityFailed(waiting.error))
                else:
                    yielded = gen.send(waiting.result)
            except StopIteration as stop:
                outcome = {"type": "completed", "output": stop.value}
                return True
            except _Continue as more:
                outcome = {"type": "continued_as_new", "input": more.value}
                return True
            except Exception as exc:  # the orchestration fails (its code raised)
                outcome = {"type": "failed", "error": {"type": type(exc).__name__, "message": str(exc)}}
                return True
            if not isinstance(yielded, Task):
                outcome = {"type": "failed", "error": {"type": "TypeError",
                                                      "message": f"an orchestrator yields tasks, not {type(yielded).__name__}"}}
                return True
            waiting = yielded

    finished = False
    for i, event in enumerate(events):
        ctx.is_replaying = i < len(history)
        ctx._apply(event)
        if event.get("type") == "execution_started":
            started = True
        if started and not finished:
            finished = advance()
    reply = {"actions": ctx._actions, "outcome": outcome}
    if ctx._has_custom_status:
        reply["custom_status"] = ctx._custom_status
    return reply


def orchestrator(fn):
    """Makes a generator function an orchestrator's handler (the host sends it each step)."""

    def handler(req, _ctx):
        return _step(fn, req.json())

    handler.__name__ = getattr(fn, "__name__", "orchestrator")
    handler.__doc__ = fn.__doc__
    return handler


class EntityContext:
    """One operation on an entity: its name and input, the entity's state."""

    def __init__(self, name, key, operation, input, state, exists):
        self.entity_name = name
        self.entity_key = key
        self.operation_name = operation
        self._input = input
        self._state = state
        self._exists = exists
        self._result = None
        self._has_result = False

    def get_input(self):
        return self._input

    def get_state(self, initializer=None):
        """The state; with none yet, initializer() (or None)."""
        if not self._exists:
            return initializer() if initializer is not None else None
        return self._state

    def set_state(self, value):
        self._state, self._exists = value, True

    def delete_state(self):
        self._state, self._exists = None, False

    def has_state(self):
        return self._exists

    def set_result(self, value):
        self._result, self._has_result = value, True


def entity(fn):
    """Makes a function an entity's handler: it runs once per operation, in order."""

    def handler(req, _ctx):
        work = req.json()
        state, exists = work.get("state"), bool(work.get("exists"))
        results = []
        for op in work.get("operations", []):
            ctx = EntityContext(work.get("name"), work.get("key"), op.get("op"), op.get("input"),
                                copy.deepcopy(state), exists)
            try:
                returned = fn(ctx)
            except Exception as exc:  # this operation fails; the state stays as before it
                results.append({"error": {"type": type(exc).__name__, "message": str(exc)}})
                continue
            state, exists = ctx._state, ctx._exists
            results.append({"result": ctx._result if ctx._has_result else returned})
        return {"state": state, "exists": exists, "results": results}

    handler.__name__ = getattr(fn, "__name__", "entity")
    handler.__doc__ = fn.__doc__
    return handler
