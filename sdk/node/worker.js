'use strict';
// The Node worker: speaks the Nimbus worker protocol (docs/worker-protocol.md) on the fds in
// NIMBUS_WORKER_FD (in) and NIMBUS_WORKER_OUT_FD (out) and runs one function's handler. Plain
// Node 18+, no dependencies.
//
//   exports.handler = async (req, ctx) => ({ hello: req.query.name || 'world' });
//
// Return a string (text/plain), a Buffer (application/octet-stream), an object or array
// (JSON), undefined/null (204), or a Response; promises are awaited, so many invocations run
// concurrently in one worker.

const fs = require('fs');
const path = require('path');
const { AsyncLocalStorage } = require('async_hooks');

// The invocation whose code is running (through its awaits): a function's own fetch() calls
// carry its traceparent (and tracestate), so what they reach joins the trace, unless the call
// sets a traceparent itself.
const running = new AsyncLocalStorage();
if (typeof globalThis.fetch === 'function') {
  const originalFetch = globalThis.fetch;
  globalThis.fetch = function fetch(input, init) {
    const traceparent = running.getStore()?.traceparent;
    if (!traceparent) return originalFetch(input, init);
    const headers = new Headers(init?.headers ?? (input instanceof Request ? input.headers : undefined));
    if (headers.has('traceparent')) return originalFetch(input, init);
    headers.set('traceparent', traceparent);
    const tracestate = running.getStore().tracestate;
    if (tracestate && !headers.has('tracestate')) headers.set('tracestate', tracestate);
    return originalFetch(input, { ...init, headers });
  };
}

// And so do its calls through Node's http and https modules (http.request, http.get and what is
// built on them: axios, got, node-fetch), unless the call sets a traceparent itself. Patched
// when first required (loading them at start would load `net`, milliseconds of every cold
// start), or before an ES module handler is imported. http.get calls the module's own request,
// not the export, so it is wrapped too.
const tracedHttp = new Set();
function traceHttp(mod) {
  if (tracedHttp.has(mod)) return mod;
  tracedHttp.add(mod);
  const originalRequest = mod.request;
  mod.request = function request(...args) {
    const req = originalRequest.apply(this, args);
    const store = running.getStore();
    const traceparent = store?.traceparent;
    try {
      // Raw header arrays are written at once (headersSent): those are left as they are.
      if (traceparent && !req.headersSent && req.getHeader('traceparent') === undefined) {
        req.setHeader('traceparent', traceparent);
        if (store.tracestate && req.getHeader('tracestate') === undefined) req.setHeader('tracestate', store.tracestate);
      }
    } catch (_) { /* a request that takes no more headers goes as it is */ }
    return req;
  };
  mod.get = function get(...args) {
    const req = mod.request(...args);
    req.end();
    return req;
  };
  return mod;
}
{
  const Module = require('module');
  const originalLoad = Module._load;
  Module._load = function load(request, ...rest) {
    const exports = originalLoad.call(this, request, ...rest);
    const name = typeof request === 'string' && request.startsWith('node:') ? request.slice(5) : request;
    return name === 'http' || name === 'https' ? traceHttp(exports) : exports;
  };
}

const PROTOCOL = 1;
const INIT = 1, READY = 2, INVOKE = 3, RESULT = 4, LOG = 5, HOST_CALL = 6, HOST_RESULT = 7,
  HEARTBEAT = 8, SHUTDOWN = 9, FATAL = 10;

class Response {
  constructor(body = '', { status = 200, headers = {}, contentType } = {}) {
    this.status = status;
    this.headers = Array.isArray(headers) ? headers.slice() : Object.entries(headers);
    if (typeof body === 'string') {
      body = Buffer.from(body);
      contentType = contentType || 'text/plain; charset=utf-8';
    }
    if (contentType && !this.headers.some(([n]) => n.toLowerCase() === 'content-type')) {
      this.headers.push(['content-type', contentType]);
    }
    this.body = body;
  }
}

function encode(type, header, body) {
  const head = Buffer.from(JSON.stringify(header));
  const payload = body ? (Buffer.isBuffer(body) ? body : Buffer.from(body)) : Buffer.alloc(0);
  const out = Buffer.allocUnsafe(9 + head.length + payload.length);
  out.writeUInt32BE(5 + head.length + payload.length, 0);
  out.writeUInt8(type, 4);
  out.writeUInt32BE(head.length, 5);
  head.copy(out, 9);
  payload.copy(out, 9 + head.length);
  return out;
}

function reply(value) {
  if (value instanceof Response) return [{ status: value.status, headers: value.headers }, value.body];
  if (value === undefined || value === null) return [{ status: 204, headers: [] }, Buffer.alloc(0)];
  if (Buffer.isBuffer(value) || value instanceof Uint8Array) {
    return [{ status: 200, headers: [['content-type', 'application/octet-stream']] }, Buffer.from(value)];
  }
  if (typeof value === 'string') return [{ status: 200, headers: [['content-type', 'text/plain; charset=utf-8']] }, Buffer.from(value)];
  return [{ status: 200, headers: [['content-type', 'application/json']] }, Buffer.from(JSON.stringify(value))];
}

// Until the first turn of the event loop, frames are read with readSync and written with
// writeSync: the host writes init (and, for a start from zero, the first invocations) as it
// spawns the worker, so a cold start answers its first request without loading `net` and
// the streams under it (several ms). After that first turn the fds become net.Sockets. The
// synchronous writes go through a non-blocking descriptor of the output pipe: a write must
// never wait on a host that may itself be waiting to write to us; when the pipe is full, the
// socket takes over.

class Worker {
  constructor(inFd, outFd) {
    this.inFd = inFd;
    this.outFd = outFd;
    this.socket = null;  // the output stream, once attached
    this.syncFd = -1;    // before that: the output pipe, opened again without blocking
    this.buffer = Buffer.alloc(0);
    this.handler = null;
    this.loading = false;  // an ES module is being imported: frames wait in `held`
    this.held = [];
    this.calls = 0;
    this.waiting = new Map();  // call id -> { resolve, reject }
    this.function = '';
    this.inFlight = 0;
  }

  send(type, header, body) {
    const frame = encode(type, header, body);
    let off = 0;
    if (!this.socket) {
      try {
        while (off < frame.length) off += fs.writeSync(this.syncFd, frame, off);
        return;
      } catch (err) {
        if (err.code !== 'EAGAIN') process.exit(1);  // the host has gone
      }
      this.attach();  // the pipe is full: the rest goes when the host has read
    }
    this.socket.write(off ? frame.subarray(off) : frame);
  }

  // Reads until at least one whole frame (init) is in the buffer, then handles what came.
  // False when the fd cannot be read that way (non-blocking): the sockets take over.
  startSync() {
    try {
      const { O_WRONLY, O_NONBLOCK } = fs.constants;
      this.syncFd = fs.openSync(`/proc/self/fd/${this.outFd}`, O_WRONLY | O_NONBLOCK);
    } catch (err) {
      return false;  // not a pipe (one socket both ways), or no /proc
    }
    const chunk = Buffer.allocUnsafe(64 * 1024);
    while (!this.hasFrame()) {
      let n;
      try {
        n = fs.readSync(this.inFd, chunk, 0, chunk.length, null);
      } catch (err) {
        if (err.code === 'EINTR') continue;
        return false;
      }
      if (n === 0) process.exit(0);  // the host closed its end
      this.buffer = Buffer.concat([this.buffer, chunk.subarray(0, n)]);
    }
    this.onData(null);
    return true;
  }

  hasFrame() {
    return this.buffer.length >= 4 && this.buffer.length >= 4 + this.buffer.readUInt32BE(0);
  }

  attach() {
    if (this.socket) return;
    if (this.syncFd >= 0) fs.closeSync(this.syncFd);
    this.syncFd = -1;
    const net = require('net');
    const same = this.inFd === this.outFd;
    const input = new net.Socket({ fd: this.inFd, readable: true, writable: same });
    this.socket = same ? input : new net.Socket({ fd: this.outFd, readable: false, writable: true });
    input.on('data', (chunk) => this.onData(chunk));
    input.on('end', () => process.exit(0));  // the host closed its end
    input.on('error', () => process.exit(1));
    this.socket.on('error', () => process.exit(1));
  }

  // Ends the process once what was written has left.
  exit(code) {
    if (this.socket) this.socket.end(() => process.exit(code));
    else process.exit(code);
  }

  fatal(message, code) {
    this.send(FATAL, { message });
    this.exit(code);
  }

  onData(chunk) {
    if (chunk) this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
    while (this.buffer.length >= 4) {
      const length = this.buffer.readUInt32BE(0);
      if (length < 5) return this.fatal(`malformed frame: length ${length}`, 2);
      if (this.buffer.length < 4 + length) return;
      const type = this.buffer[4];
      const headLen = this.buffer.readUInt32BE(5);
      if (headLen > length - 5) return this.fatal(`malformed frame: header length ${headLen}`, 2);
      const header = JSON.parse(this.buffer.subarray(9, 9 + headLen).toString());
      const body = Buffer.from(this.buffer.subarray(9 + headLen, 4 + length));
      this.buffer = this.buffer.subarray(4 + length);
      if (this.loading) this.held.push([type, header, body]);
      else this.onFrame(type, header, body);
    }
  }

  // Loads the handler: a CommonJS file at once, an ES module (.mjs) by import(), during which
  // the frames that follow init are held. Answers ready, or fatal when it cannot load.
  init(header) {
    if (header.protocol !== PROTOCOL) {
      return this.fatal(`worker speaks protocol ${PROTOCOL}, host sent ${header.protocol}`, 2);
    }
    this.function = header.function || '';
    const spec = header.handler || '';
    const failed = (err) => this.fatal(`cannot load handler ${spec}: ${err.message}`, 1);
    const colon = spec.lastIndexOf(':');
    if (colon <= 0) return failed(new Error(`handler '${spec}' should be path/file.js:exportName`));
    const file = path.resolve(spec.slice(0, colon));
    const name = spec.slice(colon + 1);
    const loaded = (mod) => {
      const fn = mod[name];
      if (typeof fn !== 'function') throw new Error(`${spec.slice(0, colon)} has no export '${name}'`);
      this.handler = fn;
      this.send(READY, { protocol: PROTOCOL, pid: process.pid, runtime: `node ${process.version}` });
    };
    if (!file.endsWith('.mjs')) {
      try {
        return loaded(require(file));
      } catch (err) {
        return failed(err);
      }
    }
    this.loading = true;
    // An ES module's `import http from 'node:http'` does not pass through require.
    traceHttp(require('http'));
    traceHttp(require('https'));
    require('module').syncBuiltinESMExports();  // its named imports ({ request }) see the wrapped ones
    return import(require('url').pathToFileURL(file).href).then(loaded).then(() => {
      this.loading = false;
      for (const [type, h, body] of this.held.splice(0)) this.onFrame(type, h, body);
    }, failed);
  }

  onFrame(type, header, body) {
    if (type === INIT) return this.init(header);
    if (type === INVOKE) return this.invoke(header, body);
    if (type === SHUTDOWN) {
      const deadline = Date.now() + (header.grace_ms || 0);
      const wait = () => (this.inFlight === 0 || Date.now() > deadline
        ? this.exit(0) : setTimeout(wait, 5));
      return wait();
    }
    if (type === HOST_RESULT) {
      const waiter = this.waiting.get(header.call_id);
      if (!waiter) return undefined;
      this.waiting.delete(header.call_id);
      if (!header.ok) {
        const err = new Error(header.error || 'the host refused the call');
        err.conflict = String(header.error || '').startsWith('conflict');
        return waiter.reject(err);
      }
      return waiter.resolve({ fields: header.fields || {}, body });
    }
    if (type === FATAL) process.exit(1);
    // heartbeat and anything newer: nothing to do
  }

  async invoke(header, body) {
    const http = header.http || {};
    const id = header.id || '';
    if (header.deadline_ms && Date.now() > header.deadline_ms) {
      // Reached after its deadline (it waited behind init while the worker started): the
      // host has answered its caller already, so it does not run.
      const message = 'the deadline passed before the invocation started';
      return this.send(RESULT, { id, status: 'error', error: { type: 'DeadlineExceeded', message, stack: '' } });
    }
    const headers = {};
    for (const [n, v] of http.headers || []) headers[n.toLowerCase()] = v;
    const req = {
      method: http.method || '', path: http.path || '', rawQuery: http.query || '',
      query: http.query ? Object.fromEntries(new URLSearchParams(http.query)) : {},
      headers, headerList: http.headers || [], params: http.params || {}, body,
      trigger: header.trigger || '', attributes: header.attributes || {}, metadata: header.metadata || {},
      text() { return body.toString(); },
      json() { return body.length ? JSON.parse(body.toString()) : null; },
    };
    const log = (level) => (message) => this.send(LOG, { id, level, message: String(message) });
    const ctx = {
      invocationId: id, function: this.function, attempt: header.attempt || 1,
      deadlineMs: header.deadline_ms || 0, traceparent: header.traceparent || '', tracestate: header.tracestate || '',
      remainingMs() { return Math.max(0, this.deadlineMs - Date.now()); },
      log: { debug: log('debug'), info: log('info'), warn: log('warn'), error: log('error') },
      messageId: header.message_id || '',
      // Host services: each returns a promise; a refusal rejects (err.conflict for a failed ETag).
      call: (op, args = {}, payload = '') => {
        const callId = String(++this.calls);
        const a = {};
        for (const [k, v] of Object.entries(args)) if (v !== undefined && v !== null) a[k] = String(v);
        const bytes = Buffer.isBuffer(payload) ? payload
          : Buffer.from(typeof payload === 'string' ? payload : JSON.stringify(payload));
        return new Promise((resolve, reject) => {
          this.waiting.set(callId, { resolve, reject });
          this.send(HOST_CALL, { id, call_id: callId, op, args: a }, bytes);
        });
      },
      stateGet: async (store, key) => {
        const r = await ctx.call('state.get', { store, key });
        return r.fields.found === 'true' ? { value: r.body, etag: r.fields.etag } : null;
      },
      statePut: async (store, key, value, { ifMatch, ttlMs } = {}) =>
        (await ctx.call('state.put', { store, key, if_match: ifMatch, ttl_ms: ttlMs }, value)).fields.etag,
      stateDelete: async (store, key, { ifMatch } = {}) => { await ctx.call('state.delete', { store, key, if_match: ifMatch }); },
      // [{ key, value (Buffer), etag }] under prefix, in key order, at most limit (1-1000).
      stateList: async (store, { prefix = '', limit = 100 } = {}) => {
        const r = await ctx.call('state.list', { store, prefix, limit });
        return JSON.parse(r.body.toString()).items.map((i) => ({
          key: i.key, etag: i.etag,
          value: 'value' in i ? Buffer.from(i.value) : Buffer.from(i.value_base64, 'base64'),
        }));
      },
      publish: async (topic, payload, { type, subject } = {}) =>
        (await ctx.call('publish', { topic, type, subject }, payload)).fields.event_id,
      enqueue: async (queue, payload, { type, delayMs } = {}) =>
        (await ctx.call('enqueue', { queue, type, delay_ms: delayMs }, payload)).fields.id,
      invoke: async (fn, payload = '') => (await ctx.call('invoke', { function: fn }, payload)).body,
      // A message for an output binding (the function's `outputs:`), committed with the result
      // (with the input's ack for queue and topic triggers). State and stream outputs: metadata.key.
      output: (binding, payload, metadata = {}) => {
        const bytes = Buffer.isBuffer(payload) ? payload
          : Buffer.from(typeof payload === 'string' ? payload : JSON.stringify(payload));
        const md = {};
        for (const [k, v] of Object.entries(metadata)) md[k] = String(v);
        // One-way: the host sends no reply to an output.
        this.send(HOST_CALL, { id, op: 'output', args: { binding, metadata: md } }, bytes);
      },
    };
    this.inFlight++;
    try {
      const [httpReply, out] = reply(await running.run(ctx, () => this.handler(req, ctx)));
      this.send(RESULT, { id, status: 'ok', http: httpReply }, out);
    } catch (err) {
      const e = err instanceof Error ? err : new Error(String(err));
      this.send(RESULT, { id, status: 'error', error: { type: e.name, message: e.message, stack: e.stack || '' } });
    } finally {
      this.inFlight--;
    }
  }
}

function main() {
  // Frames come in on NIMBUS_WORKER_FD and go out on NIMBUS_WORKER_OUT_FD (a pipe each way);
  // without the second, one socket carries both.
  const inFd = Number(process.env.NIMBUS_WORKER_FD || 3);
  const outFd = Number(process.env.NIMBUS_WORKER_OUT_FD || inFd);
  const worker = new Worker(inFd, outFd);
  if (worker.startSync()) setImmediate(() => worker.attach());
  else worker.attach();
}

module.exports = { Response };
if (require.main === module) main();
