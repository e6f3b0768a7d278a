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

const net = require('net');
const path = require('path');

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

class Worker {
  constructor(socket) {
    this.socket = socket;
    this.buffer = Buffer.alloc(0);
    this.handler = null;
    this.calls = 0;
    this.waiting = new Map();  // call id -> { resolve, reject }
    this.function = '';
    this.inFlight = 0;
  }

  send(type, header, body) { this.socket.write(encode(type, header, body)); }

  fatal(message, code) {
    this.send(FATAL, { message });
    this.socket.end(() => process.exit(code));
  }

  onData(chunk) {
    this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
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
      this.onFrame(type, header, body);
    }
  }

  async load(spec) {
    const colon = spec.lastIndexOf(':');
    if (colon <= 0) throw new Error(`handler '${spec}' should be path/file.js:exportName`);
    const file = path.resolve(spec.slice(0, colon));
    const name = spec.slice(colon + 1);
    const mod = file.endsWith('.mjs') ? await import(require('url').pathToFileURL(file).href) : require(file);
    const fn = mod[name];
    if (typeof fn !== 'function') throw new Error(`${spec.slice(0, colon)} has no export '${name}'`);
    this.handler = fn;
  }

  async onFrame(type, header, body) {
    if (type === INIT) {
      if (header.protocol !== PROTOCOL) {
        return this.fatal(`worker speaks protocol ${PROTOCOL}, host sent ${header.protocol}`, 2);
      }
      this.function = header.function || '';
      try {
        await this.load(header.handler || '');
      } catch (err) {
        return this.fatal(`cannot load handler ${header.handler}: ${err.message}`, 1);
      }
      return this.send(READY, { protocol: PROTOCOL, pid: process.pid, runtime: `node ${process.version}` });
    }
    if (type === INVOKE) return this.invoke(header, body);
    if (type === SHUTDOWN) {
      const deadline = Date.now() + (header.grace_ms || 0);
      const wait = () => (this.inFlight === 0 || Date.now() > deadline
        ? this.socket.end(() => process.exit(0)) : setTimeout(wait, 5));
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
      deadlineMs: header.deadline_ms || 0, traceparent: header.traceparent || '',
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
        this.send(HOST_CALL, { id, call_id: String(++this.calls), op: 'output', args: { binding, metadata: md } }, bytes);
      },
    };
    this.inFlight++;
    try {
      const [httpReply, out] = reply(await this.handler(req, ctx));
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
  const input = new net.Socket({ fd: inFd, readable: true, writable: inFd === outFd });
  const output = inFd === outFd ? input : new net.Socket({ fd: outFd, readable: false, writable: true });
  const worker = new Worker(output);
  input.on('data', (chunk) => worker.onData(chunk));
  input.on('end', () => process.exit(0));  // the host closed its end
  input.on('error', () => process.exit(1));
  output.on('error', () => process.exit(1));
}

module.exports = { Response };
if (require.main === module) main();
