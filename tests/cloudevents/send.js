// Sends CloudEvents with the CloudEvents SDK (npm `cloudevents`) to the URL given, in each
// content mode, and prints one JSON line: for every case, what was sent and what came back.
// tests/cloudevents_it_test.cpp starts a host, runs this, and checks both sides.
"use strict";
const http = require("http");
const { CloudEvent, HTTP, Mode, emitterFor } = require("cloudevents");

const url = new URL(process.argv[2]);

// A TransportFunction for the SDK's emitter that also keeps the response's status.
function transport(message) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: "POST", headers: message.headers }, (res) => {
      let body = "";
      res.setEncoding("utf-8");
      res.on("data", (c) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode, body }));
    });
    req.on("error", reject);
    req.end(message.body);
  });
}

async function main() {
  const out = {};
  const binary = emitterFor(transport, { binding: HTTP, mode: Mode.BINARY });
  const structured = emitterFor(transport, { binding: HTTP, mode: Mode.STRUCTURED });

  const order = new CloudEvent({
    type: "com.example.order.created",
    source: "/shop/orders",
    subject: "A-17",
    datacontenttype: "application/json",
    data: { order: "A-17", total: 9.5 },
    tenant: "acme co",
  });
  out.binary = { sent: order.toJSON(), sent_time_ms: Date.parse(order.time), got: await binary(order) };

  const bytes = new CloudEvent({
    type: "com.example.blob",
    source: "/shop/blobs",
    datacontenttype: "application/octet-stream",
    data: Buffer.from([0, 1, 2, 255]),
  });
  out.structured = { sent: bytes.toJSON(), got: await structured(bytes) };

  const a = new CloudEvent({ type: "com.example.a", source: "/batch", data: { n: 1 } });
  const b = new CloudEvent({ type: "com.example.b", source: "/batch", datacontenttype: "text/plain", data: "plain text" });
  const batch = { headers: { "content-type": "application/cloudevents-batch+json" }, body: JSON.stringify([a, b]) };
  out.batch = { sent: [a.toJSON(), b.toJSON()], got: await transport(batch) };

  // Not valid: no source (the SDK lets it through with strict off).
  const nosource = new CloudEvent({ type: "com.example.bad", source: "", data: "x" }, false);
  out.invalid = { got: await binary(nosource) };

  const old = new CloudEvent({ specversion: "0.3", type: "com.example.old", source: "/old", data: "x" });
  out.old_version = { got: await structured(old) };

  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
