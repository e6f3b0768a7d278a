#pragma once
// Traces: spans of what the host does, exported over OTLP/HTTP (protobuf or JSON, http or
// https, optionally gzipped) to a collector, on one kept-alive connection.
//
// A span is recorded, and encoded for export at once, by whoever finished the work (record()
// never blocks: a full buffer drops the span and counts it). One exporter thread sends batches to the collector, retrying a
// failed batch with backoff; a collector that is down or slow costs the host nothing but the
// counters. Sampling is parent-based: a trace that arrives sampled (traceparent flags 01) is
// recorded, one that arrives unsampled is not, and a trace the host starts is sampled with the
// configured ratio (core/ids.h continue_trace reads it).
#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

#include "core/expected.h"
#include "core/invocation.h"

namespace nimbus {

class Logger;
struct InvocationRecord;

// The body of an export: binary protobuf (application/x-protobuf, the OpenTelemetry default)
// or JSON (application/json).
enum class OtlpProtocol : uint8_t { protobuf, json };

// Where spans go and how many: the manifest's `observe: {otlp: {...}}`, else the standard
// OTEL_EXPORTER_OTLP_* variables.
struct TraceSettings {
  std::string endpoint;  // the traces URL (http://host:4318/v1/traces); empty: tracing is off
  Headers headers;       // sent with every export (an API key for a hosted collector)
  std::optional<double> sample;  // the share of new traces recorded; unset: the variables', else 1
  std::optional<OtlpProtocol> protocol;  // unset: the variables', else protobuf
  std::optional<bool> gzip;              // compress each export; unset: the variables', else no
  std::string ca_file;  // https: the CAs the collector's certificate is checked against; empty: the system's
  std::size_t max_queue = 8192;   // spans waiting for export; past it new ones are dropped
  std::size_t max_batch = 512;    // spans per export request
  Duration flush = std::chrono::milliseconds(500);  // a batch waits at most this for company
  Duration timeout = std::chrono::seconds(5);       // one export request
  int max_attempts = 5;  // a batch the collector refuses (or cannot be reached) is tried this often

  // The variables a user of OpenTelemetry sets: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (the URL
  // itself), else OTEL_EXPORTER_OTLP_ENDPOINT (+ /v1/traces); OTEL_EXPORTER_OTLP_HEADERS
  // (k=v,k2=v2) and ..._TRACES_HEADERS, only for an endpoint from the variables too;
  // OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL (http/protobuf, http/json), ..._COMPRESSION (gzip,
  // none), ..._CERTIFICATE (the CA file for https) and ..._TIMEOUT (milliseconds);
  // OTEL_TRACES_SAMPLER (parentbased_always_on, parentbased_always_off,
  // parentbased_traceidratio, or the same without parentbased_, which Nimbus samples by the
  // parent all the same) and OTEL_TRACES_SAMPLER_ARG (the ratio). Fills only what `this` leaves
  // unset (the manifest wins); with no endpoint at all nothing else is read. A bad value is an
  // error naming it.
  Status read_environment();
};

enum class SpanKind : uint8_t { internal = 1, server = 2, client = 3, producer = 4, consumer = 5 };

// A trace id as its 32 lower-case hex digits, held inline: a span is recorded per invocation,
// and a heap string would cost each one. Anything but 32 characters makes it empty. Its 16
// bytes are read from the digits once, here, for every span that copies it (all zeros when
// they are not hex: a collector takes that as invalid rather than failing the batch).
struct TraceIdText {
  TraceIdText() = default;
  TraceIdText(std::string_view hex) { *this = hex; }  // NOLINT: converts like the string it replaces
  TraceIdText& operator=(std::string_view hex);
  // From digits already read (core/ids.h parse_traceparent): `high` and `low` are their value.
  TraceIdText(std::string_view hex, uint64_t high, uint64_t low);
  std::string_view view() const { return {digits_.data(), size_}; }
  bool empty() const { return size_ == 0; }
  // The id's bytes as OTLP's protobuf carries them.
  const std::array<uint8_t, 16>& bytes() const { return bytes_; }

 private:
  std::array<char, 32> digits_{};
  std::array<uint8_t, 16> bytes_{};
  uint8_t size_ = 0;
};

// A span that is not this one's parent but a cause of it (the other records of a stream batch).
struct SpanLink {
  TraceIdText trace_id;
  uint64_t span_id = 0;
};

// A traceparent's trace id and span id, read once: what a callback keeps to record a span
// under it later (no heap string, nothing to read again). Empty and 0 when it is not valid.
struct TraceContext {
  TraceIdText trace_id;
  uint64_t span_id = 0;
};
TraceContext trace_context_of(std::string_view traceparent);

struct Span {
  TraceIdText trace_id;        // 32 hex
  uint64_t span_id = 0;
  uint64_t parent_span_id = 0;  // 0: a root
  std::string trace_state;      // the W3C tracestate of its trace, as it came (empty: none)
  std::string name;
  SpanKind kind = SpanKind::internal;
  int64_t start_unix_ns = 0, end_unix_ns = 0;
  bool error = false;
  std::string status_message;
  // Keys are static strings (literals): a span is recorded per invocation, and keys that
  // allocate would cost each one. A value is text (a string, or a string_view of text that
  // lives until record() returns: record() encodes the span before it returns), an int or a bool.
  using Value = std::variant<std::string, int64_t, bool, std::string_view>;
  std::vector<std::pair<std::string_view, Value>> attributes;
  std::vector<SpanLink> links;
  // Attributes already encoded in the exporter's protocol (trace.cpp: an invocation's that
  // are the same for every invocation of a function, its trigger and outcome, encoded once per
  // thread), written before `attributes`; they must outlive record(). Empty for spans made
  // elsewhere (a span with them goes only to the tracer whose protocol they are in).
  std::string_view preset_attributes;
};

struct TraceStats {
  uint64_t recorded = 0, exported = 0, dropped = 0, failed = 0;  // spans
  uint64_t export_requests = 0, export_failures = 0;             // requests
  uint64_t connections = 0;  // opened to the collector (one is kept alive while it lets us)
};

class OtlpClient;  // trace.cpp: one connection to the collector

class Tracer {
 public:
  // Links kept per span (OpenTelemetry's default limit); past them they are left out.
  static constexpr std::size_t kMaxLinks = 128;
  // Starts the exporter thread; `service` is the app's name (service.name).
  Tracer(TraceSettings settings, std::string service, std::string service_version, Logger& logger);
  ~Tracer();  // sends what is buffered (within one timeout), then stops
  Tracer(const Tracer&) = delete;
  Tracer& operator=(const Tracer&) = delete;

  // Never blocks on I/O: the span is queued for export, or dropped and counted when the
  // queue is full.
  void record(Span span);
  // Several at once (one lock for the spans of one invocation).
  void record(Span* spans, std::size_t n);
  // The span of one invocation, from its log record (when its trace is sampled): a server span
  // for HTTP and calls, a consumer span for messages, with the OpenTelemetry FaaS attributes.
  // Inside it, where its time went (when known): "wait" (for a slot and an instance), "cold
  // start" within it, "execution" (the function's own run); and a message's "queue wait"
  // under the span that sent it.
  void invocation(const InvocationRecord& r, WallTime finished);
  // The commit that settled a message's delivery (`what`: ack, retry, dead-letter), under the
  // span of `invocation` (trace_context_of its traceparent).
  void store_commit(const TraceContext& invocation, std::string_view tracestate, WallTime began, WallTime ended,
                    std::string_view what, bool ok);
  // A host service a function called (ctx.publish, ctx.enqueue, ctx.state_*, ctx.invoke:
  // core/services.h) as span `span_id` under the invocation whose traceparent is `caller` (and
  // tracestate `caller_state`): a
  // producer span for publish and enqueue, a client span for the rest, with the
  // OpenTelemetry messaging, database or FaaS attributes; an error when it failed.
  void host_call(std::string_view caller, std::string_view caller_state, uint64_t span_id, std::string_view op,
                 const Headers& args, WallTime began, WallTime ended, bool ok, std::string_view error);
  TraceStats stats() const;
  // The counters in Prometheus text format (nimbus_trace_*).
  void metrics_text(std::string& out) const;

  // The OTLP/JSON body for `spans` (ExportTraceServiceRequest).
  static std::string otlp_json(const std::vector<Span>& spans, std::string_view service,
                               std::string_view service_version);
  // The same request in protobuf's binary encoding (opentelemetry/proto/collector/trace/v1).
  static std::string otlp_protobuf(const std::vector<Span>& spans, std::string_view service,
                                   std::string_view service_version);

 private:
  void run();
  // `s` as it goes into the export's body (protobuf or JSON, settings_), appended to `out`.
  void encode(const Span& s, std::string& out) const;

  TraceSettings settings_;
  std::string service_, service_version_;
  std::string resource_;  // the request around the spans: the encoded Resource, or the JSON before them
  Logger& logger_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  // Spans waiting for export, already encoded by the thread that recorded them (a span is
  // written once, straight from what it was made of, and nothing of it crosses threads but
  // these bytes): pending_ holds them back to back, ends_ where each ends (a backlog is sent
  // max_batch at a time). The exporter swaps pending_ for its emptied batch: no allocation.
  std::string pending_;
  std::vector<uint32_t> ends_;
  bool stopping_ = false;
  TraceStats stats_;
  bool warned_ = false;  // the first failed export is logged; later ones are counted
  std::unique_ptr<OtlpClient> client_;  // the exporter thread's connection to the collector
  std::thread thread_;
};

}  // namespace nimbus
