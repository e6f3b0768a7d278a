#include "observe/trace.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/url/parse.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>

#include "core/ids.h"
#include "observe/log.h"

namespace nimbus {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

namespace {

std::string hex16(uint64_t v) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i, v >>= 4) out[static_cast<std::size_t>(i)] = kHex[v & 15];
  return out;
}

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

// "k=v,k2=v2" (values may be %-encoded, as the OpenTelemetry spec has it).
Expected<Headers> parse_headers(std::string_view text, const char* variable) {
  Headers out;
  std::size_t at = 0;
  while (at <= text.size()) {
    std::size_t end = text.find(',', at);
    if (end == std::string_view::npos) end = text.size();
    std::string_view item = text.substr(at, end - at);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (!item.empty()) {
      const std::size_t eq = item.find('=');
      if (eq == std::string_view::npos || eq == 0) {
        return Error{std::string(variable) + ": '" + std::string(item) + "' is not name=value"};
      }
      std::string value;
      for (std::size_t i = eq + 1; i < item.size(); ++i) {
        if (item[i] == '%' && i + 2 < item.size()) {
          int byte = 0;
          auto [p, ec] = std::from_chars(item.data() + i + 1, item.data() + i + 3, byte, 16);
          if (ec == std::errc() && p == item.data() + i + 3) {
            value += static_cast<char>(byte);
            i += 2;
            continue;
          }
        }
        value += item[i];
      }
      out.push_back({std::string(item.substr(0, eq)), std::move(value)});
    }
    at = end + 1;
  }
  return out;
}

}  // namespace

Status TraceSettings::read_environment() {
  const bool endpoint_from_environment = endpoint.empty();
  if (endpoint.empty()) {
    if (const char* v = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) {
      endpoint = v;
    } else if (const char* base = env("OTEL_EXPORTER_OTLP_ENDPOINT")) {
      endpoint = base;
      if (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
      endpoint += "/v1/traces";
    }
  }
  if (endpoint.empty()) return ok_status();  // tracing is off: nothing else is read
  // The environment's headers (credentials, often) go only to the environment's collector.
  if (headers.empty() && endpoint_from_environment) {
    for (const char* name : {"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"}) {
      if (const char* v = env(name)) {
        auto h = parse_headers(v, name);
        if (!h) return h.error();
        for (auto& x : *h) headers.push_back(std::move(x));
      }
    }
  }
  if (!sample) {
    // Unset: the default (parent-based, always on), or the ratio when only its argument is set.
    std::string sampler = env("OTEL_TRACES_SAMPLER")            ? env("OTEL_TRACES_SAMPLER")
                          : env("OTEL_TRACES_SAMPLER_ARG") ? "parentbased_traceidratio"
                                                                 : "parentbased_always_on";
    if (sampler.rfind("parentbased_", 0) == 0) sampler = sampler.substr(12);
    if (sampler == "always_on") {
      sample = 1.0;
    } else if (sampler == "always_off") {
      sample = 0.0;
    } else if (sampler == "traceidratio") {
      sample = 1.0;  // the default argument
      if (const char* v = env("OTEL_TRACES_SAMPLER_ARG")) {
        char* end = nullptr;
        const double r = std::strtod(v, &end);
        if (*end != '\0' || !std::isfinite(r) || r < 0 || r > 1) {
          return Error{"OTEL_TRACES_SAMPLER_ARG: '" + std::string(v) + "' is not a ratio between 0 and 1"};
        }
        sample = r;
      }
    } else {
      return Error{"OTEL_TRACES_SAMPLER: '" + std::string(env("OTEL_TRACES_SAMPLER")) +
                   "' is not a sampler Nimbus has; use parentbased_always_on, parentbased_always_off or "
                   "parentbased_traceidratio (with OTEL_TRACES_SAMPLER_ARG)"};
    }
  }
  if (!endpoint.empty()) {
    auto u = boost::urls::parse_uri(endpoint);
    if (!u || u->scheme() != "http" || u->host().empty()) {
      return Error{"the OTLP endpoint '" + endpoint +
                   "' is not an http:// URL (https is not supported yet: send to a collector on this machine or network)"};
    }
  }
  return ok_status();
}

Tracer::Tracer(TraceSettings settings, std::string service, std::string service_version, Logger& logger)
    : settings_(std::move(settings)),
      service_(std::move(service)),
      service_version_(std::move(service_version)),
      logger_(logger) {
  set_trace_sample_ratio(settings_.sample.value_or(1.0));
  thread_ = std::thread([this] { run(); });
}

Tracer::~Tracer() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Tracer::record(Span span) {
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    ++stats_.recorded;
    if (queue_.size() >= settings_.max_queue) {
      ++stats_.dropped;
      return;
    }
    queue_.push_back(std::move(span));
    wake = queue_.size() == settings_.max_batch;
  }
  if (wake) cv_.notify_one();
}

void Tracer::invocation(const InvocationRecord& r, WallTime finished) {
  if (!trace_sampled(r.traceparent)) return;
  Span s;
  s.trace_id = std::string(trace_id_of(r.traceparent));
  s.span_id = span_id_of(r.traceparent);
  if (s.trace_id.empty() || s.span_id == 0) return;
  s.parent_span_id = r.parent_span;
  s.name = std::string(r.function);
  const std::string_view trigger = to_string(r.trigger);
  // faas.trigger: http, pubsub, datasource, timer or other (OpenTelemetry FaaS conventions).
  std::string_view faas = "other";
  if (r.trigger == TriggerKind::http || r.trigger == TriggerKind::admin) faas = "http";
  else if (trigger == "queue" || trigger == "topic" || trigger == "stream" || trigger == "mqtt" || trigger == "cloudevents") faas = "pubsub";
  else if (trigger == "timer") faas = "timer";
  else if (trigger == "file" || trigger == "blob") faas = "datasource";
  s.kind = faas == "http" ? SpanKind::server : faas == "timer" ? SpanKind::internal : SpanKind::consumer;
  const auto end = std::chrono::duration_cast<std::chrono::nanoseconds>(finished.time_since_epoch()).count();
  s.end_unix_ns = end;
  s.start_unix_ns = end - std::chrono::duration_cast<std::chrono::nanoseconds>(r.duration).count();
  s.attributes.reserve(8);
  s.attributes.emplace_back("faas.name", std::string(r.function));
  s.attributes.emplace_back("faas.trigger", std::string(faas));
  s.attributes.emplace_back("faas.invocation_id", std::string(r.invocation_id));
  s.attributes.emplace_back("nimbus.trigger", std::string(trigger));
  s.attributes.emplace_back("nimbus.outcome", std::string(to_string(r.outcome)));
  if (!r.version.empty()) s.attributes.emplace_back("nimbus.version", std::string(r.version));
  if (faas == "pubsub") s.attributes.emplace_back("messaging.operation.type", std::string("process"));
  if (r.status != 0) s.attributes.emplace_back("http.response.status_code", int64_t{r.status});
  if (r.outcome != Outcome::success || r.status >= 500) {
    s.error = true;
    s.status_message = r.error_type.empty() ? std::string(to_string(r.outcome)) : std::string(r.error_type);
    if (!r.error_type.empty()) s.attributes.emplace_back("error.type", std::string(r.error_type));
  }
  // The spans inside it, laid from its start: the wait, then the run (each clamped to it).
  const int64_t start = s.start_unix_ns;
  const auto ns = [](Duration d) { return std::chrono::duration_cast<std::chrono::nanoseconds>(d).count(); };
  auto inner = [&](const char* name, uint64_t parent, int64_t from, int64_t to) {
    Span c;
    c.trace_id = s.trace_id;
    c.span_id = new_span_id();
    c.parent_span_id = parent;
    c.name = name;
    c.start_unix_ns = std::clamp(from, start, end);
    c.end_unix_ns = std::clamp(to, c.start_unix_ns, end);
    return c;
  };
  const int64_t waited = ns(r.waited), ran = ns(r.ran);
  if (r.queued && r.parent_span != 0) {
    // Before the invocation began, under the span that sent the message.
    Span q;
    q.trace_id = s.trace_id;
    q.span_id = new_span_id();
    q.parent_span_id = r.parent_span;
    q.name = "queue wait";
    q.start_unix_ns = start - ns(*r.queued);
    q.end_unix_ns = start;
    q.attributes.emplace_back("faas.name", std::string(r.function));
    record(std::move(q));
  }
  if (waited >= 100000 || r.cold_start > Duration::zero()) {  // a wait under 0.1 ms has no span
    Span w = inner("wait", s.span_id, start, start + waited);
    const bool cold = r.cold_start > Duration::zero();
    w.attributes.emplace_back("faas.coldstart", cold);
    if (cold) {
      Span c = inner("cold start", w.span_id, start + waited - ns(r.cold_start), start + waited);
      record(std::move(w));
      record(std::move(c));
    } else {
      record(std::move(w));
    }
  }
  if (ran > 0) {
    Span x = inner("execution", s.span_id, start + waited, start + waited + ran);
    if (s.error) x.error = true;
    record(std::move(x));
  }
  record(std::move(s));
}

void Tracer::store_commit(std::string_view traceparent, WallTime began, WallTime ended, std::string_view what, bool ok) {
  Span s;
  s.trace_id = std::string(trace_id_of(traceparent));
  s.parent_span_id = span_id_of(traceparent);
  if (s.trace_id.empty() || s.parent_span_id == 0) return;
  s.span_id = new_span_id();
  s.name = "store commit";
  s.start_unix_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(began.time_since_epoch()).count();
  s.end_unix_ns = std::max(s.start_unix_ns,
                           std::chrono::duration_cast<std::chrono::nanoseconds>(ended.time_since_epoch()).count());
  s.attributes.emplace_back("nimbus.commit", std::string(what));
  if (!ok) {
    s.error = true;
    s.status_message = "the commit failed";
  }
  record(std::move(s));
}

TraceStats Tracer::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

void Tracer::metrics_text(std::string& out) const {
  const TraceStats s = stats();
  auto counter = [&out](const char* name, const char* help, uint64_t v) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " counter\n" + name + " " +
           std::to_string(v) + "\n";
  };
  counter("nimbus_trace_spans_recorded_total", "Spans recorded for export.", s.recorded);
  counter("nimbus_trace_spans_exported_total", "Spans the collector accepted.", s.exported);
  counter("nimbus_trace_spans_dropped_total", "Spans dropped because the export queue was full.", s.dropped);
  counter("nimbus_trace_spans_failed_total", "Spans given up on after the collector refused or could not be reached.",
          s.failed);
  counter("nimbus_trace_export_requests_total", "Export requests sent to the collector.", s.export_requests);
  counter("nimbus_trace_export_failures_total", "Export requests that failed (each retry counts).", s.export_failures);
}

namespace {

// A JSON string, always valid UTF-8 (the log's escaper: bytes that are not UTF-8 become
// U+FFFD, which a collector takes; a raw bad byte would make it refuse the whole batch).
void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  append_json_escaped(out, s);
  out += '"';
}

void append_attribute(std::string& out, std::string_view key, const std::variant<std::string, int64_t, bool>& v) {
  out += "{\"key\":";
  append_json_string(out, key);
  if (const auto* text = std::get_if<std::string>(&v)) {
    out += ",\"value\":{\"stringValue\":";
    append_json_string(out, *text);
  } else if (const bool* flag = std::get_if<bool>(&v)) {
    out += *flag ? ",\"value\":{\"boolValue\":true" : ",\"value\":{\"boolValue\":false";
  } else {
    out += ",\"value\":{\"intValue\":\"";  // int64 is a string in OTLP/JSON
    out += std::to_string(std::get<int64_t>(v));
    out += '"';
  }
  out += "}}";
}

}  // namespace

// Written by hand, not through a JSON DOM: the exporter shares the host's cores, and at every
// invocation traced this is most of what tracing costs.
std::string Tracer::otlp_json(const std::vector<Span>& spans, std::string_view service,
                              std::string_view service_version) {
  std::string out;
  out.reserve(256 + spans.size() * 640);
  out += "{\"resourceSpans\":[{\"resource\":{\"attributes\":[";
  append_attribute(out, "service.name", std::string(service));
  out += ',';
  append_attribute(out, "telemetry.sdk.name", std::string("nimbus"));
  if (!service_version.empty()) {
    out += ',';
    append_attribute(out, "service.version", std::string(service_version));
  }
  out += "]},\"scopeSpans\":[{\"scope\":{\"name\":\"nimbus\"},\"spans\":[";
  bool first = true;
  for (const auto& s : spans) {
    if (!first) out += ',';
    first = false;
    out += "{\"traceId\":";
    append_json_string(out, s.trace_id);
    out += ",\"spanId\":\"" + hex16(s.span_id) + '"';
    if (s.parent_span_id != 0) out += ",\"parentSpanId\":\"" + hex16(s.parent_span_id) + '"';
    out += ",\"name\":";
    append_json_string(out, s.name);
    out += ",\"kind\":";
    out += std::to_string(static_cast<int>(s.kind));
    out += ",\"startTimeUnixNano\":\"" + std::to_string(s.start_unix_ns) + "\",\"endTimeUnixNano\":\"" +
           std::to_string(s.end_unix_ns) + "\",\"attributes\":[";
    for (std::size_t i = 0; i < s.attributes.size(); ++i) {
      if (i) out += ',';
      append_attribute(out, s.attributes[i].first, s.attributes[i].second);
    }
    out += ']';
    if (s.error) {
      out += ",\"status\":{\"code\":2,\"message\":";
      append_json_string(out, s.status_message);
      out += '}';
    }
    out += '}';
  }
  out += "]}]}]}";
  return out;
}

void Tracer::run() {
  std::unique_lock lock(mu_);
  Duration backoff = std::chrono::milliseconds(100);
  while (true) {
    cv_.wait_for(lock, settings_.flush, [&] { return stopping_ || queue_.size() >= settings_.max_batch; });
    if (queue_.empty()) {
      if (stopping_) return;
      continue;
    }
    std::vector<Span> batch;
    const std::size_t n = std::min(queue_.size(), settings_.max_batch);
    batch.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      batch.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    const bool last_round = stopping_;
    lock.unlock();
    const std::string body = otlp_json(batch, service_, service_version_);
    bool sent = false;
    std::string problem;
    // On the way out, one try (a dead collector must not hold the host's stop).
    const int attempts = last_round ? 1 : std::max(1, settings_.max_attempts);
    for (int attempt = 1; attempt <= attempts && !sent; ++attempt) {
      bool retryable = true;
      sent = send(body, &problem, &retryable);
      lock.lock();
      ++stats_.export_requests;
      if (!sent) ++stats_.export_failures;
      const bool stop_now = stopping_;
      lock.unlock();
      if (sent || !retryable || attempt == attempts || stop_now) break;
      // Backoff with the wait cut short by a stop; new spans queue meanwhile (bounded).
      lock.lock();
      cv_.wait_for(lock, backoff, [&] { return stopping_; });
      lock.unlock();
      backoff = std::min<Duration>(backoff * 2, std::chrono::seconds(5));
    }
    lock.lock();
    if (sent) {
      stats_.exported += batch.size();
      backoff = std::chrono::milliseconds(100);
    } else {
      stats_.failed += batch.size();
      if (stopping_) {
        // Stopping and the collector failed: the rest is given up at once, not tried batch
        // by batch (one that never answers would hold the stop a timeout per batch).
        stats_.failed += queue_.size();
        queue_.clear();
      }
      if (!warned_) {
        warned_ = true;
        lock.unlock();
        logger_.host(LogLevel::warn, "traces: the collector did not take a batch; spans are dropped and counted (nimbus_trace_spans_failed_total)",
                     {{"endpoint", settings_.endpoint}, {"error", problem}});
        lock.lock();
      }
    }
  }
}

bool Tracer::send(const std::string& body, std::string* problem, bool* retryable) {
  auto u = boost::urls::parse_uri(settings_.endpoint);
  if (!u) {
    *problem = "not a URL";
    return false;
  }
  const std::string host(u->host_address());
  const std::string port = u->has_port() ? std::string(u->port()) : "80";
  std::string target(u->encoded_path());
  if (target.empty()) target = "/";
  if (u->has_query()) target += "?" + std::string(u->encoded_query());
  asio::io_context io;
  beast::tcp_stream stream(io);
  beast::error_code ec;
  asio::ip::tcp::resolver resolver(io);
  auto results = resolver.resolve(host, port, ec);
  if (ec) {
    *problem = "cannot resolve " + host + ": " + ec.message();
    return false;
  }
  stream.expires_after(settings_.timeout);
  // Asynchronous with a deadline: a collector that accepts and never answers is cut off.
  stream.async_connect(results, [&](beast::error_code e, const auto&) { ec = e; });
  io.run();
  if (ec) {
    *problem = "cannot connect to " + host + ":" + port + ": " + ec.message();
    return false;
  }
  http::request<http::string_body> req{http::verb::post, target, 11};
  req.set(http::field::host, std::string(u->encoded_host_and_port()));  // [::1]:4318 keeps its brackets
  req.set(http::field::content_type, "application/json");
  req.set(http::field::connection, "close");
  for (const auto& h : settings_.headers) req.set(h.name, h.value);
  req.body() = body;
  req.prepare_payload();
  http::response<http::string_body> res;
  beast::flat_buffer buffer;
  io.restart();
  http::async_write(stream, req, [&](beast::error_code e, std::size_t) {
    ec = e;
    if (!e) http::async_read(stream, buffer, res, [&](beast::error_code e2, std::size_t) { ec = e2; });
  });
  io.run();
  if (ec) {
    *problem = "the export to " + settings_.endpoint + " failed: " + ec.message();
    return false;
  }
  const int status = static_cast<int>(res.result_int());
  if (status < 200 || status >= 300) {
    *problem = "the collector answered " + std::to_string(status) + ": " + res.body().substr(0, 200);
    // OTLP/HTTP: 429, 502, 503 and 504 may be tried again; other refusals would be refused again.
    *retryable = status == 429 || status == 502 || status == 503 || status == 504;
    return false;
  }
  return true;
}

}  // namespace nimbus
