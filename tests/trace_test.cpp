// Traces without a host (observe/trace.h): the sampling of new traces, the OTLP/JSON body, the
// OTEL_* variables, and a bounded export queue that drops and counts instead of growing.
#include "observe/trace.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <boost/json.hpp>

#include "core/clock.h"
#include "core/ids.h"
#include "core/text.h"
#include "observe/log.h"
#include "harness.h"
#include "otlp/otlp_json.h"
#include "test_upstream.h"

namespace nimbus {
namespace {

namespace json = boost::json;

struct RatioReset {
  ~RatioReset() { set_trace_sample_ratio(1.0); }
};

TEST(Traces, NewTracesAreSampledAtTheRatioAndIncomingOnesKeepTheirFlag) {
  RatioReset reset;
  set_trace_sample_ratio(0.25);
  int sampled = 0;
  for (int i = 0; i < 20000; ++i) sampled += trace_sampled(continue_trace("")) ? 1 : 0;
  EXPECT_NEAR(sampled, 5000, 300);
  set_trace_sample_ratio(0.0);
  const std::string in_sampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  const std::string in_unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
  EXPECT_TRUE(trace_sampled(continue_trace(in_sampled)));
  EXPECT_FALSE(trace_sampled(continue_trace(in_unsampled)));
  EXPECT_FALSE(trace_sampled(continue_trace("")));
  set_trace_sample_ratio(1.0);
  EXPECT_TRUE(trace_sampled(continue_trace("")));
  EXPECT_FALSE(trace_sampled(continue_trace(in_unsampled))) << "an unsampled parent is followed";
  // The incoming span is the parent; ours is new, in the same trace.
  const std::string ours = continue_trace(in_sampled);
  EXPECT_EQ(trace_id_of(ours), "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(span_id_of(in_sampled), 0x00f067aa0ba902b7u);
  EXPECT_NE(span_id_of(ours), span_id_of(in_sampled));
  EXPECT_EQ(span_id_of("garbage"), 0u);
}

TEST(Traces, TheOtlpJsonBodyHasTheShapeCollectorsRead) {
  Span s;
  s.trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
  s.span_id = 0x1234;
  s.parent_span_id = 0xabcdef;
  s.name = "front";
  s.kind = SpanKind::server;
  s.start_unix_ns = 1700000000000000000;
  s.end_unix_ns = 1700000000001000000;
  s.error = true;
  s.status_message = "time \"out\"\n\\ \x01 ü";  // escaped, and UTF-8 kept
  s.attributes = {{"faas.trigger", std::string("http")}, {"http.response.status_code", int64_t{504}}};
  s.trace_state = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";
  Span root = s;
  root.parent_span_id = 0;
  root.error = false;
  root.trace_state.clear();
  json::value v = json::parse(Tracer::otlp_json({s, root}, "shop", "1.2.3"));
  const auto& rs = v.at("resourceSpans").at(0);
  const auto& res = rs.at("resource").at("attributes").as_array();
  EXPECT_EQ(res.at(0).at("key"), "service.name");
  EXPECT_EQ(res.at(0).at("value").at("stringValue"), "shop");
  EXPECT_NE(json::serialize(res).find("\"service.version\""), std::string::npos);
  const auto& spans = rs.at("scopeSpans").at(0).at("spans").as_array();
  ASSERT_EQ(spans.size(), 2u);
  const auto& o = spans.at(0).as_object();
  EXPECT_EQ(o.at("traceId"), "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(o.at("spanId"), "0000000000001234");  // hex, not base64, in OTLP/JSON
  EXPECT_EQ(o.at("parentSpanId"), "0000000000abcdef");
  EXPECT_EQ(o.at("kind"), 2);
  EXPECT_EQ(o.at("startTimeUnixNano"), "1700000000000000000");  // 64-bit numbers as strings
  EXPECT_EQ(o.at("endTimeUnixNano"), "1700000000001000000");
  EXPECT_EQ(o.at("status").at("code"), 2);
  EXPECT_EQ(o.at("status").at("message"), "time \"out\"\n\\ \x01 ü");
  EXPECT_EQ(o.at("attributes").at(1).at("value").at("intValue"), "504");
  EXPECT_EQ(o.at("traceState"), "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
  EXPECT_FALSE(spans.at(1).as_object().contains("traceState"));  // none: left out
  EXPECT_FALSE(spans.at(1).as_object().contains("parentSpanId"));
  EXPECT_FALSE(spans.at(1).as_object().contains("status"));

  // Bytes that are not UTF-8 (a function's error type) become U+FFFD: the body stays JSON a
  // collector takes (a strict parser refuses it otherwise).
  Span bad = s;
  bad.status_message = "bad \xff\xfe byte";
  const std::string body = Tracer::otlp_json({bad}, "shop", "1.2.3");
  EXPECT_TRUE(valid_utf8(body));
  json::value parsed = json::parse(body);
  EXPECT_EQ(parsed.at("resourceSpans").at(0).at("scopeSpans").at(0).at("spans").at(0).at("status").at("message"),
            "bad \xef\xbf\xbd\xef\xbf\xbd byte");
}

struct EnvVar {
  const char* name;
  EnvVar(const char* n, const char* value) : name(n) { setenv(n, value, 1); }
  ~EnvVar() { unsetenv(name); }
};

TEST(Traces, TheOtelVariablesFillWhatTheManifestLeavesUnset) {
  {
    EnvVar e("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/");
    EnvVar h("OTEL_EXPORTER_OTLP_HEADERS", "api-key=abc%20def, tenant=t1");
    EnvVar r("OTEL_TRACES_SAMPLER_ARG", "0.1");
    TraceSettings s;
    ASSERT_TRUE(s.read_environment());
    EXPECT_EQ(s.endpoint, "http://collector:4318/v1/traces");
    ASSERT_EQ(s.headers.size(), 2u);
    EXPECT_EQ(s.headers[0].name, "api-key");
    EXPECT_EQ(s.headers[0].value, "abc def");
    EXPECT_EQ(s.headers[1].value, "t1");
    EXPECT_DOUBLE_EQ(s.sample.value_or(-1), 0.1);
    // The manifest's endpoint wins; the traces variable is the URL itself.
    EnvVar t("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://other:4318/custom");
    TraceSettings from_manifest;
    from_manifest.endpoint = "http://127.0.0.1:9/v1/traces";
    ASSERT_TRUE(from_manifest.read_environment());
    EXPECT_EQ(from_manifest.endpoint, "http://127.0.0.1:9/v1/traces");
    TraceSettings traces_var;
    ASSERT_TRUE(traces_var.read_environment());
    EXPECT_EQ(traces_var.endpoint, "http://other:4318/custom");
  }
  {
    EnvVar e("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
    EnvVar r("OTEL_TRACES_SAMPLER_ARG", "nan");
    TraceSettings s;
    auto st = s.read_environment();
    ASSERT_FALSE(st);
    EXPECT_NE(st.error().message.find("OTEL_TRACES_SAMPLER_ARG"), std::string::npos) << st.error().message;
  }
  {
    // The sampler by name; the manifest's share (even 1) wins over the variables.
    EnvVar e("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
    EnvVar r("OTEL_TRACES_SAMPLER_ARG", "0.25");
    {
      EnvVar off("OTEL_TRACES_SAMPLER", "parentbased_always_off");
      TraceSettings s;
      ASSERT_TRUE(s.read_environment());
      EXPECT_DOUBLE_EQ(s.sample.value_or(-1), 0.0);
    }
    {
      EnvVar ratio("OTEL_TRACES_SAMPLER", "traceidratio");
      TraceSettings s;
      ASSERT_TRUE(s.read_environment());
      EXPECT_DOUBLE_EQ(s.sample.value_or(-1), 0.25);
      TraceSettings manifest_says_all;
      manifest_says_all.sample = 1.0;
      ASSERT_TRUE(manifest_says_all.read_environment());
      EXPECT_DOUBLE_EQ(manifest_says_all.sample.value_or(-1), 1.0);
    }
    EnvVar bad("OTEL_TRACES_SAMPLER", "jaeger_remote");
    TraceSettings s;
    auto st = s.read_environment();
    ASSERT_FALSE(st);
    EXPECT_NE(st.error().message.find("OTEL_TRACES_SAMPLER: 'jaeger_remote'"), std::string::npos) << st.error().message;
  }
  {
    EnvVar e("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
    EnvVar h("OTEL_EXPORTER_OTLP_HEADERS", "novalue");
    TraceSettings s;
    auto st = s.read_environment();
    ASSERT_FALSE(st);
    EXPECT_NE(st.error().message.find("OTEL_EXPORTER_OTLP_HEADERS: 'novalue'"), std::string::npos) << st.error().message;
  }
  {
    // No endpoint anywhere: tracing is off and the other variables are not even read; and the
    // environment's headers never go to the manifest's collector.
    EnvVar r("OTEL_TRACES_SAMPLER_ARG", "lots");
    EnvVar h("OTEL_EXPORTER_OTLP_HEADERS", "api-key=secret");
    TraceSettings off;
    EXPECT_TRUE(off.read_environment());
    EXPECT_TRUE(off.endpoint.empty());
    TraceSettings manifest;
    manifest.endpoint = "http://mine:4318/v1/traces";
    EXPECT_FALSE(manifest.read_environment()) << "the bad ratio is still read when tracing is on";
    EXPECT_TRUE(manifest.headers.empty()) << "the environment's key went to the manifest's collector";
  }
  {
    EnvVar e("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://collector:4318/v1/traces");
    TraceSettings s;
    auto st = s.read_environment();
    ASSERT_FALSE(st);
    EXPECT_NE(st.error().message.find("is not an http:// or https:// URL"), std::string::npos) << st.error().message;
  }
}

// The batch span processor's variables of the OpenTelemetry SDKs set the export queue, the
// batch and the wait for company; bad ones are errors naming the variable.
TEST(Traces, TheExportQueueBatchAndDelayComeFromTheBatchProcessorsVariables) {
  {
    EnvVar e("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
    TraceSettings s;
    ASSERT_TRUE(s.read_environment());
    EXPECT_EQ(s.max_queue, 8192u);  // unset: Nimbus's own defaults
    EXPECT_EQ(s.max_batch, 512u);
    EXPECT_EQ(s.flush, std::chrono::milliseconds(500));
  }
  {
    EnvVar e("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
    EnvVar q("OTEL_BSP_MAX_QUEUE_SIZE", "100");
    EnvVar b("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "20");
    EnvVar d("OTEL_BSP_SCHEDULE_DELAY", "250");
    TraceSettings s;
    ASSERT_TRUE(s.read_environment());
    EXPECT_EQ(s.max_queue, 100u);
    EXPECT_EQ(s.max_batch, 20u);
    EXPECT_EQ(s.flush, std::chrono::milliseconds(250));
  }
  const std::vector<std::vector<std::pair<const char*, const char*>>> bad = {
      {{"OTEL_BSP_MAX_QUEUE_SIZE", "0"}},
      {{"OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "many"}},
      {{"OTEL_BSP_SCHEDULE_DELAY", "-5"}},
      {{"OTEL_BSP_MAX_QUEUE_SIZE", "100"}, {"OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "200"}},  // a batch past the queue
  };
  for (const auto& vars : bad) {
    EnvVar e("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
    std::vector<std::unique_ptr<EnvVar>> set;
    for (const auto& [name, value] : vars) set.push_back(std::make_unique<EnvVar>(name, value));
    TraceSettings s;
    auto st = s.read_environment();
    ASSERT_FALSE(st) << vars.back().first;
    EXPECT_NE(st.error().message.find(vars.back().first), std::string::npos) << st.error().message;
  }
}

TEST(Traces, TheProtocolCompressionCertificateAndTimeoutComeFromTheOtelVariables) {
  {
    // Nothing said: protobuf (the OpenTelemetry default), uncompressed, the system's CAs.
    EnvVar e("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318");
    TraceSettings s;
    ASSERT_TRUE(s.read_environment());
    EXPECT_EQ(s.protocol, OtlpProtocol::protobuf);
    EXPECT_EQ(s.gzip, false);
    EXPECT_EQ(s.ca_file, "");
    EXPECT_EQ(s.timeout, std::chrono::seconds(5));
  }
  {
    // The signal's own variable wins over the general one.
    EnvVar e("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318");
    EnvVar p("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf");
    EnvVar tp("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json");
    EnvVar c("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip");
    EnvVar ca("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/etc/hostname");
    EnvVar t("OTEL_EXPORTER_OTLP_TIMEOUT", "1500");
    TraceSettings s;
    ASSERT_TRUE(s.read_environment());
    EXPECT_EQ(s.protocol, OtlpProtocol::json);
    EXPECT_EQ(s.gzip, true);
    EXPECT_EQ(s.ca_file, "/etc/hostname");
    EXPECT_EQ(s.timeout, std::chrono::milliseconds(1500));
    // The manifest's choices stay.
    TraceSettings manifest;
    manifest.protocol = OtlpProtocol::protobuf;
    manifest.gzip = false;
    ASSERT_TRUE(manifest.read_environment());
    EXPECT_EQ(manifest.protocol, OtlpProtocol::protobuf);
    EXPECT_EQ(manifest.gzip, false);
  }
  // Each bad value is an error naming its variable.
  const std::pair<const char*, const char*> bad[] = {
      {"OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"},
      {"OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "zstd"},
      {"OTEL_EXPORTER_OTLP_TIMEOUT", "5s"},
      {"OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem"},
  };
  for (const auto& [name, value] : bad) {
    EnvVar e("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318");
    EnvVar v(name, value);
    TraceSettings s;
    auto st = s.read_environment();
    ASSERT_FALSE(st) << name;
    EXPECT_NE(st.error().message.find(value), std::string::npos) << st.error().message;
    if (std::string(name) != "OTEL_EXPORTER_OTLP_CERTIFICATE") {
      EXPECT_NE(st.error().message.find(name), std::string::npos) << st.error().message;
    }
  }
  {
    // A CA file for a plain http:// collector is a mistake worth naming.
    EnvVar e("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
    EnvVar ca("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/hostname");
    TraceSettings s;
    auto st = s.read_environment();
    ASSERT_FALSE(st);
    EXPECT_NE(st.error().message.find("not https://"), std::string::npos) << st.error().message;
  }
}

// Drops the lists and strings that are empty: protobuf's JSON leaves them out (proto3's
// defaults), OTLP/JSON writes them.
void drop_empty_lists(json::value& v) {
  if (auto* o = v.if_object()) {
    for (auto it = o->begin(); it != o->end();) {
      const bool empty_list = it->value().is_array() && it->value().as_array().empty();
      const bool empty_text = it->value().is_string() && it->value().as_string().empty();  // proto3 leaves it out
      if (empty_list || empty_text) {
        it = o->erase(it);
      } else {
        drop_empty_lists(it->value());
        ++it;
      }
    }
  } else if (auto* a = v.if_array()) {
    for (auto& x : *a) drop_empty_lists(x);
  }
}

TEST(Traces, TheOtlpProtobufBodyIsTheSameRequestAsTheJsonToGooglesProtobuf) {
  Span s;
  s.trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
  s.span_id = 0x1234;
  s.parent_span_id = 0xfedcba9876543210;  // the top bit set: bytes, not a signed number
  s.name = "front \xc3\xa9";
  s.kind = SpanKind::server;
  s.start_unix_ns = 1700000000000000000;
  s.end_unix_ns = 1700000000001000000;
  s.error = true;
  s.status_message = "bad \xff\xfe byte";  // not UTF-8: U+FFFD in both
  s.attributes = {{"faas.trigger", std::string("http")},
                  {"http.response.status_code", int64_t{504}},
                  {"negative", int64_t{-5}},
                  {"zero", int64_t{0}},
                  {"faas.coldstart", true},
                  {"warm", false},
                  {"empty", std::string()},
                  {"long", std::string(300, 'x')},  // a length of two varint bytes
                  {"odd", std::string("a\xc0" "b")},
                  {"borrowed", std::string_view("a view")},          // text the recorder owns
                  {"borrowed odd", std::string_view("v\xc0" "w")}};
  s.trace_state = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";
  s.links = {SpanLink{TraceIdText("0af7651916cd43dd8448eb211c80319c"), 0x8000000000000001},
             SpanLink{TraceIdText("1af7651916cd43dd8448eb211c80319c"), 7}};
  Span bare;  // no parent, no attributes, no status
  bare.trace_id = "0af7651916cd43dd8448eb211c80319c";
  bare.span_id = 0xb7ad6b7169203331;
  bare.name = "execution";
  bare.kind = SpanKind::internal;
  bare.start_unix_ns = 1;
  bare.end_unix_ns = 2;
  Span nameless = bare;  // no name, an error without a message
  nameless.name.clear();
  nameless.error = true;
  std::vector<Span> spans{s, bare, nameless};
  for (int i = 0; i < 200; ++i) {  // a body past 16 KiB: lengths of three varint bytes
    Span c = bare;
    c.span_id = static_cast<uint64_t>(i + 1);
    c.parent_span_id = 0x1234;
    c.attributes = {{"faas.name", "fn-" + std::to_string(i)}};
    spans.push_back(c);
  }
  const std::string body = Tracer::otlp_protobuf(spans, "shop", "1.2.3");
  EXPECT_GT(body.size(), 16384u);
  std::string problem;
  const std::string decoded = testing::otlp_protobuf_to_json(body, &problem);
  ASSERT_EQ(problem, "");
  json::value from_protobuf = json::parse(decoded);
  json::value from_json = json::parse(Tracer::otlp_json(spans, "shop", "1.2.3"));
  drop_empty_lists(from_json);
  drop_empty_lists(from_protobuf);
  EXPECT_EQ(from_protobuf, from_json) << json::serialize(from_protobuf).substr(0, 3000);
  // and about a third of the JSON's bytes
  EXPECT_LT(body.size() * 2, Tracer::otlp_json(spans, "shop", "1.2.3").size());

  EXPECT_NE(decoded.find("\"a view\""), std::string::npos);
  EXPECT_NE(decoded.find("\"v\\ufffdw\""), std::string::npos);  // U+FFFD for the bad byte

  // The decoder is strict: a body cut short is not a request.
  testing::otlp_protobuf_to_json(body.substr(0, body.size() - 3), &problem);
  EXPECT_NE(problem, "");
}

// A trace id of 32 characters that are not all hex goes out as 16 zero bytes (a collector
// takes it as invalid; a bad byte must not fail the batch), one that is as its bytes.
TEST(Traces, ATraceIdThatIsNotHexIsSentAsZeros) {
  Span bad;
  bad.trace_id = "4bf92f3577b34da6a3ce929d0e0e473g";
  bad.span_id = 1;
  bad.name = "x";
  bad.start_unix_ns = 1;  // (proto3 leaves out a zero; the encoder writes both times)
  bad.end_unix_ns = 2;
  Span upper = bad;
  upper.trace_id = "4BF92F3577B34DA6A3CE929D0E0E4736";
  std::string problem;
  const std::string decoded = testing::otlp_protobuf_to_json(Tracer::otlp_protobuf({bad, upper}, "shop", ""), &problem);
  ASSERT_EQ(problem, "");
  const json::value request = json::parse(decoded);
  const json::array& spans = request.at("resourceSpans").at(0).at("scopeSpans").at(0).at("spans").as_array();
  ASSERT_EQ(spans.size(), 2u);
  EXPECT_EQ(spans[0].at("traceId").as_string(), std::string(32, '0'));
  EXPECT_EQ(spans[1].at("traceId").as_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
}

TEST(Traces, AFullExportQueueDropsAndCountsNewSpansInsteadOfGrowing) {
  RatioReset reset;
  SystemClock clock;
  LogSink sink(-1);
  Logger logger(sink, clock, "t");
  TraceSettings s;
  s.endpoint = "http://127.0.0.1:1/v1/traces";  // nothing there
  s.max_queue = 10;
  s.max_batch = 1000;                   // never full enough to send early...
  s.flush = std::chrono::hours(1);      // ...nor old enough: the queue only fills
  Tracer tracer(s, "t", "", logger);
  for (int i = 0; i < 100; ++i) {
    Span span;
    span.trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    span.span_id = static_cast<uint64_t>(i + 1);
    tracer.record(std::move(span));
  }
  const TraceStats st = tracer.stats();
  EXPECT_EQ(st.recorded, 100u);
  EXPECT_EQ(st.dropped, 90u);
  std::string text;
  tracer.metrics_text(text);
  EXPECT_NE(text.find("nimbus_trace_spans_dropped_total 90\n"), std::string::npos) << text;
}

// A tracer exporting OTLP/JSON to a real HTTP collector, in batches of `max_batch`.
struct ExportingTo {
  ExportingTo(std::size_t max_batch, Duration flush)
      : sink(-1), logger(sink, clock, "t"), collector("collector"), tracer(settings_for(max_batch, flush), "t", "", logger) {}
  TraceSettings settings_for(std::size_t max_batch, Duration flush) const {
    TraceSettings s;
    s.endpoint = "http://127.0.0.1:" + std::to_string(collector.port()) + "/v1/traces";
    s.protocol = OtlpProtocol::json;
    s.max_batch = max_batch;
    s.flush = flush;
    return s;
  }
  SystemClock clock;
  LogSink sink;
  Logger logger;
  testing::TestUpstream collector;
  Tracer tracer;
};

// A backlog (more spans waiting than a batch) is sent oldest first, a batch at a time, each
// span once.
TEST(Traces, ABacklogIsSentInOrderABatchAtATime) {
  ExportingTo c(4, std::chrono::milliseconds(20));
  Tracer& tracer = c.tracer;
  testing::TestUpstream& collector = c.collector;
  constexpr int kSpans = 50;
  for (int round = 0; round < 2; ++round) {  // the second behind what is left of the first
    std::vector<Span> spans(kSpans);
    for (int i = 0; i < kSpans; ++i) {
      spans[i].trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
      spans[i].span_id = static_cast<uint64_t>(round * kSpans + i + 1);
      spans[i].name = "s";
    }
    tracer.record(spans.data(), spans.size());  // all at once: a backlog of 50
  }
  for (int i = 0; i < 1000 && tracer.stats().exported < 2 * kSpans; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(tracer.stats().exported, 2u * kSpans);
  std::vector<std::string> ids;
  for (const auto& req : collector.seen()) {
    const json::value body = json::parse(req.body);
    const auto& spans = body.at("resourceSpans").at(0).at("scopeSpans").at(0).at("spans").as_array();
    EXPECT_LE(spans.size(), 4u);
    for (const auto& sp : spans) ids.push_back(std::string(sp.at("spanId").as_string()));
  }
  ASSERT_EQ(ids.size(), 2u * kSpans);
  for (int i = 0; i < 2 * kSpans; ++i) {
    char want[17];
    std::snprintf(want, sizeof want, "%016x", i + 1);
    EXPECT_EQ(ids[static_cast<std::size_t>(i)], want) << "span " << i << " out of order, twice or lost";
  }
}

// A thread's spans are written over by the invocations after them (trace.cpp's reused_spans):
// what one span held (links, an error, its attributes) must not show in the next one written there.
TEST(Traces, ASpanWrittenOverAnExportedOneCarriesNothingOfIt) {
  ExportingTo c(5, std::chrono::milliseconds(10));  // each invocation's spans are a batch of their own
  Tracer& tracer = c.tracer;
  testing::TestUpstream& collector = c.collector;
  // `n` exports answered and their spans given back for reuse (counted in the same lock).
  uint64_t sent = 0;
  const auto exported = [&](std::size_t n) {
    for (int i = 0; i < 1000 && (collector.requests() < static_cast<int>(n) || tracer.stats().exported < sent); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return collector.requests() == static_cast<int>(n) && tracer.stats().exported == sent;
  };
  const std::string trace = "4bf92f3577b34da6a3ce929d0e0e4736";
  const std::vector<std::string> links = {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"};
  const std::string dirty_tp = "00-" + trace + "-00f067aa0ba902b7-01", clean_tp = "00-" + trace + "-00f067aa0ba902b8-01";
  InvocationRecord dirty{};
  dirty.function = "f";
  dirty.trigger = TriggerKind::named("stream");
  dirty.invocation_id = "0123456789abcdef0123456789abcdef";
  dirty.traceparent = dirty_tp;
  dirty.outcome = Outcome::error;
  dirty.status = 500;
  dirty.duration = std::chrono::milliseconds(5);
  dirty.error_type = "Boom";
  dirty.version = "v7";
  dirty.parent_span = 0x99;
  dirty.waited = std::chrono::milliseconds(2);
  dirty.cold_start = std::chrono::milliseconds(1);
  dirty.ran = std::chrono::milliseconds(3);
  dirty.queued = std::chrono::milliseconds(4);
  dirty.links = &links;
  dirty.tracestate = "vendor=dirty";
  tracer.invocation(dirty, WallTime(std::chrono::seconds(1700000000)));
  sent = 5;  // queue wait, wait, cold start, execution, its own
  ASSERT_TRUE(exported(1));
  {  // each of the five in the invocation's trace state
    const json::value first = json::parse(collector.seen().at(0).body);
    const auto& spans = first.at("resourceSpans").at(0).at("scopeSpans").at(0).at("spans").as_array();
    ASSERT_EQ(spans.size(), 5u);
    for (const auto& sp : spans) EXPECT_EQ(sp.as_object().if_contains("traceState") ? sp.at("traceState") : "", "vendor=dirty");
  }
  InvocationRecord clean{};
  clean.function = "g";
  clean.trigger = TriggerKind::http;
  clean.invocation_id = "fedcba9876543210fedcba9876543210";
  clean.traceparent = clean_tp;
  clean.outcome = Outcome::success;
  clean.status = 200;
  clean.duration = std::chrono::milliseconds(1);
  clean.ran = std::chrono::milliseconds(1);
  tracer.invocation(clean, WallTime(std::chrono::seconds(1700000001)));
  sent += 2;  // execution, its own
  ASSERT_TRUE(exported(2));
  const json::value body = json::parse(collector.seen().at(1).body);
  const auto& spans = body.at("resourceSpans").at(0).at("scopeSpans").at(0).at("spans").as_array();
  ASSERT_EQ(spans.size(), 2u) << json::serialize(spans);
  const auto& execution = spans.at(0).as_object();
  const auto& own = spans.at(1).as_object();
  EXPECT_EQ(execution.at("name"), "execution");
  EXPECT_FALSE(execution.contains("status")) << json::serialize(execution);
  EXPECT_TRUE(!execution.contains("attributes") || execution.at("attributes").as_array().empty()) << json::serialize(execution);
  EXPECT_TRUE(!execution.contains("links") || execution.at("links").as_array().empty()) << json::serialize(execution);
  EXPECT_EQ(own.at("name"), "g");
  EXPECT_EQ(own.at("spanId"), "00f067aa0ba902b8");
  EXPECT_FALSE(own.contains("parentSpanId"));
  EXPECT_FALSE(own.contains("traceState")) << json::serialize(own);
  EXPECT_FALSE(execution.contains("traceState")) << json::serialize(execution);
  EXPECT_FALSE(own.contains("status")) << json::serialize(own);
  EXPECT_TRUE(!own.contains("links") || own.at("links").as_array().empty()) << json::serialize(own);
  std::set<std::string> keys;
  for (const auto& a : own.at("attributes").as_array()) keys.insert(std::string(a.at("key").as_string()));
  EXPECT_EQ(keys, (std::set<std::string>{"faas.name", "faas.trigger", "faas.invocation_id", "nimbus.trigger",
                                         "nimbus.outcome", "http.response.status_code"}));
  // and the first export had all of the dirty one's
  const std::string first = collector.seen().at(0).body;
  for (const char* part : {"\"queue wait\"", "\"cold start\"", "\"Boom\"", "\"v7\"", "b7ad6b7169203331"}) {
    EXPECT_NE(first.find(part), std::string::npos) << part << " in " << first;
  }
}

}  // namespace
}  // namespace nimbus

namespace nimbus {
namespace {

// A collector whose every answer is scripted, on a raw socket: a status, how it goes out (whole;
// in pieces, its head split mid-line and its body chunked; or never), and what it saw.
class ScriptedCollector {
 public:
  // whole: with a length; pieces: the head cut mid-line, a chunked body; never: no answer;
  // after_100: a 100 Continue first; half: part of an answer, then the connection closes;
  // to_eof: an answer without a length, ended by closing the sending side (reads go on).
  enum class How { whole, pieces, never, after_100, half, to_eof };
  struct Answer {
    int status = 200;
    How how = How::whole;
  };
  explicit ScriptedCollector(std::vector<Answer> script) : script_(std::move(script)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 16) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      return;
    }
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { accept_loop(); });
  }
  ~ScriptedCollector() {
    ::shutdown(fd_, SHUT_RDWR);  // the accept loop ends; the fd closes after it has
    if (thread_.joinable()) thread_.join();
    ::close(fd_);
    std::lock_guard lock(mu_);
    for (int c : connections_) ::close(c);
  }
  int port() const { return port_; }
  std::vector<std::string> bodies() {
    std::lock_guard lock(mu_);
    return bodies_;
  }
  std::vector<std::string> heads() {  // each request's head, lower-cased
    std::lock_guard lock(mu_);
    return heads_;
  }
  int connections() {
    std::lock_guard lock(mu_);
    return static_cast<int>(connections_.size());
  }

 private:
  void accept_loop() {
    std::vector<std::thread> serving;
    for (;;) {
      const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) break;
      {
        std::lock_guard lock(mu_);
        connections_.push_back(c);
      }
      serving.emplace_back([this, c] { serve(c); });
    }
    {
      std::lock_guard lock(mu_);
      for (int x : connections_) ::shutdown(x, SHUT_RDWR);  // a serve() in recv ends
    }
    for (auto& t : serving) t.join();
  }
  void serve(int c) {
    std::string in;
    char buf[65536];
    for (;;) {
      std::size_t head_end;
      while ((head_end = in.find("\r\n\r\n")) == std::string::npos) {
        const ssize_t n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0) return;
        in.append(buf, static_cast<std::size_t>(n));
      }
      std::string head = in.substr(0, head_end);
      for (auto& ch : head) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      const std::size_t at = head.find("content-length: ");
      const std::size_t length = at == std::string::npos ? 0 : std::stoul(head.substr(at + 16));
      while (in.size() < head_end + 4 + length) {
        const ssize_t n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0) return;
        in.append(buf, static_cast<std::size_t>(n));
      }
      Answer answer;
      {
        std::lock_guard lock(mu_);
        bodies_.push_back(in.substr(head_end + 4, length));
        heads_.push_back(head);
        if (next_ < script_.size()) answer = script_[next_++];
      }
      in.erase(0, head_end + 4 + length);
      const std::string status = std::to_string(answer.status);
      if (answer.how == How::never) continue;  // reads on, answers nothing
      if (answer.how == How::half) {
        const std::string part = "HTTP/1.1 " + status + " X\r\nContent-Length: 10\r\n\r\n{";
        ::send(c, part.data(), part.size(), MSG_NOSIGNAL);
        ::shutdown(c, SHUT_RDWR);
        return;
      }
      if (answer.how == How::to_eof) {
        const std::string out = "HTTP/1.1 " + status + " X\r\n\r\n{}";
        ::send(c, out.data(), out.size(), MSG_NOSIGNAL);
        ::shutdown(c, SHUT_WR);
        continue;
      }
      if (answer.how == How::after_100) {  // an interim answer first, the real one after it
        const std::string interim = "HTTP/1.1 100 Continue\r\n\r\n";
        ::send(c, interim.data(), interim.size(), MSG_NOSIGNAL);
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        answer.how = How::whole;
      }
      if (answer.how == How::whole) {
        const std::string out = "HTTP/1.1 " + status + " X\r\nContent-Length: 2\r\n\r\n{}";
        ::send(c, out.data(), out.size(), MSG_NOSIGNAL);
        continue;
      }
      // In pieces: the status line cut in two, a header, a chunked body, each on its own.
      for (const std::string& piece : {"HTTP/1.1 " + status.substr(0, 1), status.substr(1) + " X\r\nTransfer-",
                                       std::string("Encoding: chunked\r\n\r\n"), std::string("1\r\n{\r\n"),
                                       std::string("1\r\n}\r\n0\r\n\r\n")}) {
        ::send(c, piece.data(), piece.size(), MSG_NOSIGNAL);
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    }
  }
  std::vector<Answer> script_;
  std::size_t next_ = 0;
  int fd_ = -1, port_ = 0;
  std::mutex mu_;
  std::vector<std::string> bodies_, heads_;
  std::vector<int> connections_;
  std::thread thread_;
};

// A tracer sending OTLP/protobuf to `port` in batches of 2, flushed at once, with `timeout`.
TraceSettings exporting_to(int port, Duration timeout = std::chrono::seconds(5)) {
  TraceSettings s;
  s.endpoint = "http://127.0.0.1:" + std::to_string(port) + "/v1/traces";
  s.max_batch = 2;
  s.flush = std::chrono::milliseconds(10);
  s.timeout = timeout;
  return s;
}

// Spans `first` and `first + 1` of one trace, named "s".
std::vector<Span> two_spans(uint64_t first) {
  std::vector<Span> spans(2);
  for (uint64_t i = 0; i < 2; ++i) {
    spans[i].trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    spans[i].span_id = first + i;
    spans[i].name = "s";
  }
  return spans;
}

void record_two(Tracer& tracer, uint64_t first) {
  std::vector<Span> spans = two_spans(first);
  tracer.record(spans.data(), spans.size());
}

// OTLP/HTTP: 429, 502, 503 and 504 are tried again, with backoff, and the batch arrives whole;
// another refusal (400) is given up at once and counted. An answer that comes in pieces, its
// body chunked, is read as well as one that comes whole, on the same kept connection.
TEST(Traces, TheExporterRetriesWhatOtlpAllowsGivesUpOnTheRestAndReadsAnswersInPieces) {
  using How = ScriptedCollector::How;
  ScriptedCollector collector({{503, How::whole}, {200, How::pieces}, {400, How::pieces}, {200, How::whole}});
  ASSERT_NE(collector.port(), 0);
  SystemClock clock;
  LogSink sink(-1);
  Logger logger(sink, clock, "t");
  Tracer tracer(exporting_to(collector.port()), "t", "", logger);
  record_two(tracer, 1);
  ASSERT_TRUE(testing::eventually([&] { return tracer.stats().exported == 2; }, 10000)) << tracer.stats().export_requests;
  record_two(tracer, 3);
  ASSERT_TRUE(testing::eventually([&] { return tracer.stats().failed == 2; }, 10000));
  record_two(tracer, 5);
  ASSERT_TRUE(testing::eventually([&] { return tracer.stats().exported == 4; }, 10000));
  const TraceStats st = tracer.stats();
  EXPECT_EQ(st.export_requests, 4u) << "the 503 once more; the 400 not again";
  EXPECT_EQ(st.export_failures, 2u);
  EXPECT_EQ(st.failed, 2u);
  const auto bodies = collector.bodies();
  ASSERT_EQ(bodies.size(), 4u);
  EXPECT_EQ(bodies[0], bodies[1]) << "a retry sends the same batch";
  EXPECT_NE(bodies[1], bodies[2]);
  // Each request is the whole protobuf request, its parts (head, then the spans) sent as one.
  const auto expected = [](uint64_t first) { return Tracer::otlp_protobuf(two_spans(first), "t", ""); };
  EXPECT_EQ(bodies[0], expected(1));
  EXPECT_EQ(bodies[2], expected(3));
  EXPECT_EQ(bodies[3], expected(5));
  EXPECT_EQ(collector.connections(), 1) << "one kept connection for every export";
}

// A collector that takes the request and never answers is cut off at the export's timeout:
// the batch is counted failed (after its attempts) and nothing waits longer than that.
TEST(Traces, ACollectorThatNeverAnswersIsCutOffAtTheExportTimeout) {
  ScriptedCollector collector(std::vector<ScriptedCollector::Answer>(10, {200, ScriptedCollector::How::never}));
  ASSERT_NE(collector.port(), 0);
  SystemClock clock;
  LogSink sink(-1);
  Logger logger(sink, clock, "t");
  TraceSettings s = exporting_to(collector.port(), std::chrono::milliseconds(200));
  s.max_attempts = 2;
  const auto began = std::chrono::steady_clock::now();
  {
    Tracer tracer(s, "t", "", logger);
    record_two(tracer, 1);
    ASSERT_TRUE(testing::eventually([&] { return tracer.stats().failed == 2; }, 10000));
    const auto took = std::chrono::steady_clock::now() - began;
    EXPECT_GE(took, std::chrono::milliseconds(400)) << "two attempts of 200 ms each";
    EXPECT_LT(took, std::chrono::seconds(3));
    EXPECT_EQ(tracer.stats().export_failures, 2u);
    EXPECT_EQ(collector.bodies().size(), 2u) << "each attempt's request arrived";
  }
  EXPECT_LT(std::chrono::steady_clock::now() - began, std::chrono::seconds(4)) << "the stop waited";
}

// A Host or Content-Type of the user's takes the place of the exporter's (one of each goes out),
// other headers go as they are, and a 1xx answer before the real one is passed over (the batch
// counts as exported, the connection stays in step for the next).
TEST(Traces, AUsersHostReplacesTheExportersAndAnInterimAnswerIsPassedOver) {
  using How = ScriptedCollector::How;
  ScriptedCollector collector({{200, How::after_100}, {200, How::whole}});
  ASSERT_NE(collector.port(), 0);
  SystemClock clock;
  LogSink sink(-1);
  Logger logger(sink, clock, "t");
  TraceSettings s = exporting_to(collector.port());
  s.headers.push_back({"Host", "collector.example"});
  s.headers.push_back({"x-api-key", "k1"});
  ASSERT_TRUE(s.read_environment());
  Tracer tracer(s, "t", "", logger);
  record_two(tracer, 1);
  ASSERT_TRUE(testing::eventually([&] { return tracer.stats().exported == 2; }, 10000));
  record_two(tracer, 3);
  ASSERT_TRUE(testing::eventually([&] { return tracer.stats().exported == 4; }, 10000));
  EXPECT_EQ(tracer.stats().export_failures, 0u);
  EXPECT_EQ(collector.connections(), 1);
  const auto heads = collector.heads();
  ASSERT_EQ(heads.size(), 2u);
  for (const auto& head : heads) {
    std::size_t hosts = 0;
    for (std::size_t at = 0; (at = head.find("\r\nhost:", at)) != std::string::npos; ++at) ++hosts;
    EXPECT_EQ(hosts, 1u) << head;
    EXPECT_NE(head.find("\r\nhost: collector.example"), std::string::npos) << head;
    EXPECT_NE(head.find("\r\nx-api-key: k1"), std::string::npos) << head;
    EXPECT_NE(head.find("\r\ncontent-type: application/x-protobuf"), std::string::npos) << head;
  }
}

// Part of an answer, then a closed connection: the collector may have taken the batch, so it is
// not sent again on the spot (the export fails, the retry after backoff sends it). An answer
// that ends with the connection leaves nothing to keep: the next export opens a new one rather
// than writing into a connection whose other side is gone (which would send that batch twice).
TEST(Traces, AHalfAnswerIsNotResentAtOnceAndAnAnswerEndedByCloseIsNotKept) {
  using How = ScriptedCollector::How;
  ScriptedCollector collector({{200, How::whole}, {200, How::half}, {200, How::to_eof}, {200, How::whole}});
  ASSERT_NE(collector.port(), 0);
  SystemClock clock;
  LogSink sink(-1);
  Logger logger(sink, clock, "t");
  Tracer tracer(exporting_to(collector.port()), "t", "", logger);
  record_two(tracer, 1);
  ASSERT_TRUE(testing::eventually([&] { return tracer.stats().exported == 2; }, 10000));
  record_two(tracer, 3);  // half an answer on the kept connection, then the retry: to_eof
  ASSERT_TRUE(testing::eventually([&] { return tracer.stats().exported == 4; }, 10000));
  EXPECT_EQ(tracer.stats().export_failures, 1u) << "the half answer failed that try, once";
  record_two(tracer, 5);
  ASSERT_TRUE(testing::eventually([&] { return tracer.stats().exported == 6; }, 10000));
  const auto bodies = collector.bodies();
  ASSERT_EQ(bodies.size(), 4u) << "batch 3-4 twice (its retry), every other batch once";
  EXPECT_EQ(bodies[1], bodies[2]);
  EXPECT_EQ(collector.connections(), 3) << "a new connection after the half answer, and after the answer ended by close";
}

// A header goes into the request's head as it is: a name that is not an HTTP token, or a value
// with a line break (a %0D%0A in the variable), is refused before anything is sent.
TEST(Traces, AnOtlpHeaderThatWouldWriteHeadersOfItsOwnIsRefused) {
  // read_environment's error for a manifest header `name: value` ("" when it is taken).
  const auto refusal = [](const char* name, const char* value) {
    TraceSettings s;
    s.endpoint = "http://127.0.0.1:9/v1/traces";
    s.headers.push_back({name, value});
    auto st = s.read_environment();
    return st ? std::string() : st.error().message;
  };
  EXPECT_NE(refusal("api-key", "abc\r\nX-Injected: 1").find("'api-key' has a control character"), std::string::npos);
  EXPECT_NE(refusal("api key", "abc").find("'api key' is not an HTTP header name"), std::string::npos);
  for (const char* own : {"Content-Length", "transfer-encoding", "Connection", "Content-Encoding"}) {
    EXPECT_NE(refusal(own, "1").find("is the exporter's own to set"), std::string::npos) << own;
  }
  EXPECT_EQ(refusal("x-api-key", "abc def\t~!"), "");
  {
    EnvVar e("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
    EnvVar h("OTEL_EXPORTER_OTLP_HEADERS", "tenant=a%0D%0AX-Injected: 1");
    TraceSettings s;
    auto st = s.read_environment();
    ASSERT_FALSE(st);
    EXPECT_NE(st.error().message.find("'tenant'"), std::string::npos) << st.error().message;
  }
}

}  // namespace
}  // namespace nimbus

namespace nimbus {
namespace {

// An invocation span's attributes that repeat (the function, its trigger, outcome, version)
// are encoded once per thread and copied after: each span must still carry its own, in both
// protocols, whichever came before it on the thread.
TEST(Traces, AnInvocationsSpanCarriesItsOwnFunctionTriggerOutcomeAndVersionInBothProtocols) {
  struct Case {
    const char* function;
    TriggerKind trigger;
    Outcome outcome;
    const char* version;
    int status;
  };
  const std::vector<Case> cases = {
      {"front", TriggerKind::http, Outcome::success, "", 200},
      {"worker", TriggerKind::named("queue"), Outcome::success, "", 0},
      {"front", TriggerKind::http, Outcome::error, "", 500},
      {"worker", TriggerKind::named("queue"), Outcome::success, "v2", 0},
      {"front", TriggerKind::http, Outcome::success, "", 201},
      {"worker", TriggerKind::named("timer"), Outcome::timeout, "", 0},
      {"worker", TriggerKind::named("queue"), Outcome::success, "", 0},
  };
  for (const OtlpProtocol protocol : {OtlpProtocol::json, OtlpProtocol::protobuf}) {
    SCOPED_TRACE(protocol == OtlpProtocol::json ? "json" : "protobuf");
    ScriptedCollector collector(std::vector<ScriptedCollector::Answer>(10, {200, ScriptedCollector::How::whole}));
    ASSERT_NE(collector.port(), 0);
    SystemClock clock;
    LogSink sink(-1);
    Logger logger(sink, clock, "t");
    TraceSettings settings = exporting_to(collector.port());
    settings.protocol = protocol;
    settings.max_batch = 64;
    std::vector<std::string> ids;
    {
      Tracer tracer(settings, "t", "", logger);
      for (const auto& c : cases) {
        const std::string tp = continue_trace(""), id = new_invocation_id();
        ids.push_back(id);
        InvocationRecord r{};
        r.function = c.function;
        r.trigger = c.trigger;
        r.invocation_id = id;
        r.traceparent = tp;
        r.outcome = c.outcome;
        r.status = c.status;
        r.version = c.version;
        r.duration = std::chrono::microseconds(50);
        tracer.invocation(r, std::chrono::system_clock::now());
      }
    }  // the stop sends what is queued
    std::map<std::string, json::object> by_id;  // invocation id -> the span's attributes
    for (const auto& body : collector.bodies()) {
      std::string text = body, problem;
      if (protocol == OtlpProtocol::protobuf) {
        text = testing::otlp_protobuf_to_json(body, &problem);
        ASSERT_TRUE(problem.empty()) << problem;
      }
      const json::value v = json::parse(text);
      for (const auto& sp : v.at("resourceSpans").at(0).at("scopeSpans").at(0).at("spans").as_array()) {
        json::object attrs;
        for (const auto& a : sp.at("attributes").as_array()) {
          const auto& value = a.at("value").as_object();
          attrs[a.at("key").as_string()] = value.contains("stringValue") ? value.at("stringValue") : value.at("intValue");
        }
        attrs["kind"] = sp.at("kind");
        if (attrs.contains("faas.invocation_id")) by_id[std::string(attrs.at("faas.invocation_id").as_string())] = attrs;
      }
    }
    ASSERT_EQ(by_id.size(), cases.size());
    for (std::size_t i = 0; i < cases.size(); ++i) {
      const Case& c = cases[i];
      SCOPED_TRACE(i);
      const json::object& a = by_id.at(ids[i]);
      const auto text = [&a](const char* key) {
        return a.contains(key) && a.at(key).is_string() ? std::string(a.at(key).as_string()) : std::string("(none)");
      };
      const std::string trigger(to_string(c.trigger));
      EXPECT_EQ(text("faas.name"), c.function);
      EXPECT_EQ(text("nimbus.trigger"), trigger);
      EXPECT_EQ(text("faas.trigger"), c.trigger == TriggerKind::http ? "http" : trigger == "timer" ? "timer" : "pubsub");
      EXPECT_EQ(text("nimbus.outcome"), std::string(to_string(c.outcome)));
      EXPECT_EQ(text("nimbus.version"), *c.version ? c.version : "(none)");
      EXPECT_EQ(text("messaging.operation.type"), trigger == "queue" ? "process" : "(none)");
      EXPECT_EQ(a.contains("http.response.status_code"), c.status != 0);
      // SERVER (2) for HTTP, INTERNAL (1) for a timer, CONSUMER (5) for a message; JSON's kind
      // is a number, the protobuf decoded to JSON names it.
      const json::value& kind = a.at("kind");
      const int want = c.trigger == TriggerKind::http ? 2 : trigger == "timer" ? 1 : 5;
      const char* names[] = {"", "SPAN_KIND_INTERNAL", "SPAN_KIND_SERVER", "", "", "SPAN_KIND_CONSUMER"};
      if (kind.is_int64()) {
        EXPECT_EQ(kind.as_int64(), want);
      } else {
        EXPECT_EQ(std::string(kind.as_string()), names[want]);
      }
    }
  }
}

}  // namespace
}  // namespace nimbus
