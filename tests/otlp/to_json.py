#!/usr/bin/python3
"""Reads one OTLP/protobuf export (ExportTraceServiceRequest) on stdin and writes it as OTLP/JSON
on stdout, decoded by Google's protobuf (python3-protobuf) with the schema in trace.proto (compiled
by protoc). Exits 1 with the reason on stderr when the bytes are not that message: they do not
parse, carry fields the schema does not have, or protobuf would encode the decoded message
differently (a length, a wire type or a field order that a strict reader could refuse).

OTLP/JSON differs from protobuf's own JSON mapping in two ways that are undone here: trace and
span ids are hex, not base64, and enums are numbers."""
import base64
import json
import os
import subprocess
import sys
import tempfile

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

here = os.path.dirname(os.path.abspath(__file__))
with tempfile.TemporaryDirectory() as tmp:
    desc = os.path.join(tmp, "trace.desc")
    subprocess.run(["protoc", "--proto_path=" + here, "--descriptor_set_out=" + desc, "trace.proto"], check=True)
    with open(desc, "rb") as f:
        files = descriptor_pb2.FileDescriptorSet.FromString(f.read())
pool = descriptor_pool.DescriptorPool()
for f in files.file:
    pool.Add(f)
Request = message_factory.MessageFactory(pool).GetPrototype(
    pool.FindMessageTypeByName("opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest"))

data = sys.stdin.buffer.read()
try:
    request = Request.FromString(data)
except Exception as e:  # noqa: BLE001 - any decode error is the answer
    sys.exit("not an ExportTraceServiceRequest: %s" % e)
stripped = Request()
stripped.CopyFrom(request)
stripped.DiscardUnknownFields()
if stripped.SerializeToString() != data:
    sys.exit("protobuf encodes the decoded request differently (%d bytes against %d): unknown fields or a "
             "non-canonical encoding" % (len(stripped.SerializeToString()), len(data)))

out = json_format.MessageToDict(request, use_integers_for_enums=True)
for rs in out.get("resourceSpans", []):
    for ss in rs.get("scopeSpans", []):
        for span in ss.get("spans", []):
            for field in ("traceId", "spanId", "parentSpanId"):
                if field in span:
                    span[field] = base64.b64decode(span[field]).hex()
            for link in span.get("links", []):
                for field in ("traceId", "spanId"):
                    if field in link:
                        link[field] = base64.b64decode(link[field]).hex()
json.dump(out, sys.stdout)
