'use strict';
// Durable orchestrations in Node: an orchestrator is a generator function that yields tasks
// (the same model and wire as the Python SDK, sdk/python/nimbus/durable.py; docs/durable.md).
//
//   const durable = require('nimbus/durable');
//   module.exports.helloCities = durable.orchestrator(function* (ctx) {
//     const out = [];
//     for (const city of ctx.input) out.push(yield ctx.callActivity('say_hello', city));
//     return out;
//   });
//
// An entity is a function of one operation (ctx.operationName, ctx.getInput(), ctx.getState(init),
// ctx.setState(v), ctx.deleteState(), ctx.setResult(v) or return the result):
//   module.exports.counter = durable.entity((ctx) => { ... });
//
// The function runs again from the start at every step against the instance's history, so it
// must be deterministic: time from ctx.currentTimeMs, ids from ctx.newGuid(), I/O in activities.
const crypto = require('crypto');

class ActivityFailed extends Error {
  constructor(error) {
    super((error && (error.message || error.type)) || 'failed');
    this.name = 'ActivityFailed';
    this.error = error || {};
  }
}

class Task {
  constructor() { this.done = false; this.result = undefined; this.error = null; this.parents = []; }
  finish(result, error) {
    if (this.done) return;
    this.done = true; this.result = result; this.error = error || null;
    for (const p of this.parents) p.childDone(this);
  }
  childDone() {}
}

class WhenAll extends Task {
  constructor(tasks) {
    super();
    this.tasks = [...tasks];
    for (const t of this.tasks) t.parents.push(this);
    this.childDone(null);
  }
  childDone(child) {
    if (child && child.error) return this.finish(undefined, child.error);
    if (this.tasks.every((t) => t.done)) this.finish(this.tasks.map((t) => t.result));
  }
}

class WhenAny extends Task {
  constructor(tasks) {
    super();
    this.tasks = [...tasks];
    for (const t of this.tasks) t.parents.push(this);
    const first = this.tasks.find((t) => t.done);
    if (first) this.finish(first);
  }
  childDone(child) { this.finish(child); }
}

// A call with a retry policy {maxAttempts, firstIntervalMs = 1000, backoff = 2, maxIntervalMs,
// handle(error) -> bool}: each failure schedules a durable timer, then the call again (all of
// it in the history, so replay makes the same steps).
class Retrying extends Task {
  constructor(ctx, start, policy) {
    super();
    if (!(policy.maxAttempts >= 1)) throw new TypeError('retry.maxAttempts is at least 1');
    this.ctx = ctx; this.start = start; this.policy = policy;
    this.attempt = 1; this.timer = null; this.current = null;
    this.watch(start());
  }
  watch(task) {
    this.current = task;
    task.parents.push(this);
    if (task.done) this.childDone(task);
  }
  delayMs() {
    const p = this.policy;
    let d = (p.firstIntervalMs ?? 1000) * Math.pow(p.backoff ?? 2, this.attempt - 1);
    if (p.maxIntervalMs != null) d = Math.min(d, p.maxIntervalMs);
    return Math.trunc(d);
  }
  childDone(child) {
    if (this.done || child !== this.current) return;
    if (child === this.timer) {
      this.timer = null; this.attempt += 1;
      this.watch(this.start());
      return;
    }
    if (!child.error) { this.finish(child.result); return; }
    const p = this.policy;
    if (this.attempt >= p.maxAttempts || (p.handle && !p.handle(child.error))) { this.finish(undefined, child.error); return; }
    this.timer = this.ctx.createTimer(this.ctx.currentTimeMs + this.delayMs());
    this.watch(this.timer);
  }
}

class ContinueAsNew { constructor(input) { this.input = input; } }

class Context {
  constructor(work) {
    this.instanceId = work.instance;
    this.name = work.name || '';
    this.input = null;
    this.currentTimeMs = 0;
    this.isReplaying = true;
    this.actions = [];
    this.tasks = new Map();
    this.results = new Map();
    this.waiters = new Map();
    this.events = new Map();
    this.guids = 0;
    this.customStatus = undefined;
  }
  schedule(action) {
    const id = this.actions.length;
    this.actions.push(action);
    const task = new Task();
    this.tasks.set(id, task);
    if (this.results.has(id)) { const [r, e] = this.results.get(id); this.results.delete(id); task.finish(r, e); }
    return task;
  }
  // options.retry: a retry policy (class Retrying).
  callActivity(name, input = null, options = {}) {
    const start = () => this.schedule({ type: 'call_activity', name, input });
    return options.retry ? new Retrying(this, start, options.retry) : start();
  }
  callSubOrchestration(name, input = null, options = {}) {
    const start = () => this.schedule({ type: 'call_sub_orchestration', name, input });
    return options.retry ? new Retrying(this, start, options.retry) : start();
  }
  // An entity's operation, request/reply (yield it: its result) or one way (nothing to wait for).
  callEntity(name, key, op, input = null) { return this.schedule({ type: 'call_entity', name, key: String(key), op, input }); }
  signalEntity(name, key, op, input = null) { this.actions.push({ type: 'signal_entity', name, key: String(key), op, input }); }
  // A critical section: yield it to hold every [name, key]; others' operations on them wait
  // until unlockEntities() (not yielded) or the end of the instance.
  lockEntities(entities) {
    return this.schedule({ type: 'lock_entities', entities: entities.map(([name, key]) => ({ name, key: String(key) })) });
  }
  unlockEntities() { this.actions.push({ type: 'unlock_entities' }); }
  createTimer(fireAtMs) { return this.schedule({ type: 'create_timer', fire_at_ms: Math.trunc(fireAtMs) }); }
  waitForExternalEvent(name) {
    const task = new Task();
    const pending = this.events.get(name);
    if (pending && pending.length) task.finish(pending.shift());
    else { if (!this.waiters.has(name)) this.waiters.set(name, []); this.waiters.get(name).push(task); }
    return task;
  }
  whenAll(tasks) { return new WhenAll(tasks); }
  whenAny(tasks) { return new WhenAny(tasks); }
  newGuid() {
    this.guids += 1;
    const h = crypto.createHash('sha1').update(`nimbus:${this.instanceId}:${this.guids}`).digest('hex');
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-${((parseInt(h[16], 16) & 3) | 8).toString(16)}${h.slice(17, 20)}-${h.slice(20, 32)}`;
  }
  setCustomStatus(value) { this.customStatus = value; }
  continueAsNew(input = null) { throw new ContinueAsNew(input); }
  log(...args) { if (!this.isReplaying) console.log(...args); }

  apply(event) {
    switch (event.type) {
      case 'orchestrator_started': this.currentTimeMs = event.time_ms ?? this.currentTimeMs; break;
      case 'execution_started': this.input = event.input ?? null; break;
      case 'task_completed': case 'sub_orchestration_completed': this.resolve(event.task_id, event.result ?? null, null); break;
      case 'task_failed': case 'sub_orchestration_failed': this.resolve(event.task_id, undefined, event.error || { message: 'failed' }); break;
      case 'timer_fired': case 'lock_acquired': this.resolve(event.task_id, null, null); break;
      case 'event_raised': {
        const waiting = this.waiters.get(event.name);
        if (waiting && waiting.length) waiting.shift().finish(event.data ?? null);
        else { if (!this.events.has(event.name)) this.events.set(event.name, []); this.events.get(event.name).push(event.data ?? null); }
        break;
      }
      default: break;
    }
  }
  resolve(id, result, error) {
    const task = this.tasks.get(id);
    if (task) task.finish(result, error); else this.results.set(id, [result, error]);
  }
}

function step(fn, work) {
  const ctx = new Context(work);
  const history = work.history || [];
  const events = history.concat(work.new_events || []);
  let outcome = { type: 'running' };
  let gen = null;
  let waiting = null;
  let started = false;
  let finished = false;
  const advance = () => {
    for (;;) {
      if (waiting && !waiting.done) return false;
      let next;
      try {
        if (!gen) {
          const value = fn(ctx);
          if (!value || typeof value.next !== 'function') { outcome = { type: 'completed', output: value ?? null }; return true; }
          gen = value;
          next = gen.next();
        } else if (waiting.error) {
          next = gen.throw(new ActivityFailed(waiting.error));
        } else {
          next = gen.next(waiting.result);
        }
      } catch (e) {
        if (e instanceof ContinueAsNew) outcome = { type: 'continued_as_new', input: e.input };
        else outcome = { type: 'failed', error: { type: (e && e.name) || 'Error', message: String((e && e.message) || e) } };
        return true;
      }
      if (next.done) { outcome = { type: 'completed', output: next.value ?? null }; return true; }
      if (!(next.value instanceof Task)) {
        outcome = { type: 'failed', error: { type: 'TypeError', message: 'an orchestrator yields tasks' } };
        return true;
      }
      waiting = next.value;
    }
  };
  events.forEach((event, i) => {
    ctx.isReplaying = i < history.length;
    ctx.apply(event);
    if (event.type === 'execution_started') started = true;
    if (started && !finished) finished = advance();
  });
  const reply = { actions: ctx.actions, outcome };
  if (ctx.customStatus !== undefined) reply.custom_status = ctx.customStatus;
  return reply;
}

// Makes a generator function an orchestrator's handler (the host sends it each step).
function orchestrator(fn) {
  return (req) => step(fn, req.json());
}

// One operation on an entity: its name and input, the entity's state.
class EntityContext {
  constructor(name, key, op, input, state, exists) {
    this.entityName = name; this.entityKey = key; this.operationName = op;
    this.input = input; this.state = state; this.exists = exists;
    this.result = undefined; this.hasResult = false;
  }
  getInput() { return this.input; }
  getState(initializer) { return this.exists ? this.state : (initializer ? initializer() : null); }
  setState(value) { this.state = value; this.exists = true; }
  deleteState() { this.state = null; this.exists = false; }
  hasState() { return this.exists; }
  setResult(value) { this.result = value; this.hasResult = true; }
}

// Makes a function an entity's handler: it runs once per operation, in order; an operation
// that throws leaves the state as it was before it and fails only its caller.
function entity(fn) {
  return (req) => {
    const work = req.json();
    let state = work.state ?? null;
    let exists = !!work.exists;
    const results = [];
    for (const op of work.operations || []) {
      const ctx = new EntityContext(work.name, work.key, op.op, op.input ?? null,
        state === null ? null : JSON.parse(JSON.stringify(state)), exists);
      let returned;
      try {
        returned = fn(ctx);
      } catch (e) {
        results.push({ error: { type: (e && e.name) || 'Error', message: String((e && e.message) || e) } });
        continue;
      }
      state = ctx.state; exists = ctx.exists;
      results.push({ result: (ctx.hasResult ? ctx.result : returned) ?? null });
    }
    return { state, exists, results };
  };
}

module.exports = { orchestrator, entity, ActivityFailed, Task, EntityContext };
