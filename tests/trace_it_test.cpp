// Traces end to end (observe/trace.h): one request through HTTP, a queue, a topic and a stream,
// handled by Python and Node functions, is one trace whose spans form the right tree at a real
// HTTP collector; parent-based sampling; a dead collector costs nothing but its counters.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "free_port.h"
#include "haproxy.h"
#include "it_common.h"
#include "otlp/otlp_json.h"
#include "test_upstream.h"
#include "tls_client.h"

namespace nimbus::testing {
namespace {

namespace json = boost::json;

struct SeenSpan {
  std::string trace_id, span_id, parent_span_id, name;
  std::string trace_state;  // W3C tracestate (empty: none)
  int kind = 0;
  int64_t start_ns = 0, end_ns = 0;
  std::string service;  // its resource's service.name
  std::map<std::string, std::string> attributes;
  std::vector<std::pair<std::string, std::string>> links;  // (trace id, span id)
  bool error = false;
};

// An export's body as OTLP/JSON: gzip inflated, protobuf decoded by Google's protobuf.
json::value export_json(const TestUpstream::Seen& req) {
  const auto header = [&](const char* name) {
    auto it = req.headers.find(name);
    return it == req.headers.end() ? std::string() : it->second;
  };
  std::string body = header("content-encoding") == "gzip" ? gunzip(req.body) : req.body;
  if (header("content-type") == "application/x-protobuf") {
    std::string problem;
    body = otlp_protobuf_to_json(body, &problem);
    EXPECT_EQ(problem, "") << "a protobuf export that protobuf does not read";
    if (!problem.empty()) return json::object{{"resourceSpans", json::array{}}};
  } else {
    EXPECT_EQ(header("content-type"), "application/json");
  }
  return json::parse(body);
}

// Every span the collector was sent (OTLP bodies posted to /v1/traces, protobuf or JSON).
std::vector<SeenSpan> spans_at(TestUpstream& collector) {
  std::vector<SeenSpan> out;
  for (const auto& req : collector.seen()) {
    if (req.method != "POST" || req.target != "/v1/traces") continue;
    json::value body = export_json(req);
    for (const auto& rs : body.at("resourceSpans").as_array()) {
      std::string service;  // the resource's service.name
      if (const auto* res = rs.as_object().if_contains("resource")) {
        for (const auto& a : res->at("attributes").as_array()) {
          if (a.at("key").as_string() == "service.name") service = a.at("value").at("stringValue").as_string();
        }
      }
      for (const auto& ss : rs.at("scopeSpans").as_array()) {
        for (const auto& s : ss.at("spans").as_array()) {
          const auto& o = s.as_object();
          SeenSpan span;
          span.trace_id = o.at("traceId").as_string();
          span.span_id = o.at("spanId").as_string();
          if (o.contains("parentSpanId")) span.parent_span_id = o.at("parentSpanId").as_string();
          if (o.contains("traceState")) span.trace_state = o.at("traceState").as_string();
          span.name = o.at("name").as_string();
          span.kind = static_cast<int>(o.at("kind").as_int64());
          // Strings in OTLP/JSON, as the host writes them; some SDKs write numbers.
          const auto nanos = [](const json::value& v) -> int64_t {
            if (v.is_string()) return std::stoll(std::string(v.as_string()));
            return v.is_uint64() ? static_cast<int64_t>(v.as_uint64()) : v.to_number<int64_t>();
          };
          span.start_ns = nanos(o.at("startTimeUnixNano"));
          span.end_ns = nanos(o.at("endTimeUnixNano"));
          span.service = service;
          // protobuf's JSON leaves an empty list out
          for (const auto& a : o.contains("attributes") ? o.at("attributes").as_array() : json::array{}) {
            const auto& v = a.at("value").as_object();
            span.attributes[std::string(a.at("key").as_string())] =
                v.contains("stringValue") ? std::string(v.at("stringValue").as_string())
                : v.contains("boolValue") ? std::string(v.at("boolValue").as_bool() ? "true" : "false")
                                          : std::string(v.at("intValue").as_string());
          }
          span.error = o.contains("status") && o.at("status").at("code").as_int64() == 2;
          for (const auto& l : o.contains("links") ? o.at("links").as_array() : json::array{}) {
            span.links.emplace_back(l.at("traceId").as_string(), l.at("spanId").as_string());
          }
          out.push_back(std::move(span));
        }
      }
    }
  }
  return out;
}

// The first of `spans` called `name` (null: none).
const SeenSpan* first_named(const std::vector<SeenSpan>& spans, const std::string& name) {
  for (const auto& s : spans) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

std::string pipeline_manifest(const std::string& endpoint, const std::string& sample) {
  return "name: traced\nobserve:\n  otlp: {endpoint: \"" + endpoint + "\", sample: " + sample +
         ", headers: {x-collector-key: secret}}\n"
         "functions:\n"
         "  front:\n    runtime: python\n    handler: app.py:front\n"
         "    triggers: [{http: {route: /order}}]\n    outputs: {next: {queue: orders}}\n"
         "  worker:\n    runtime: node\n    handler: app.js:worker\n"
         "    triggers: [{queue: {name: orders}}]\n    outputs: {placed: {topic: placed}}\n"
         "  notify:\n    runtime: python\n    handler: app.py:notify\n"
         "    triggers: [{topic: {name: placed}}]\n    outputs: {audit: {stream: audit}}\n"
         "  audit:\n    runtime: node\n    handler: app.js:audit\n"
         "    triggers: [{stream: {name: audit, batch_size: 1}}]\n";
}

void write_pipeline(const TempDir& dir, const std::string& endpoint, const std::string& sample = "1.0") {
  dir.write("nimbus.yaml", pipeline_manifest(endpoint, sample));
  dir.write("app.py",
            "def front(req, ctx):\n    ctx.output('next', req.text())\n    return 'accepted'\n\n"
            "def notify(req, ctx):\n    ctx.output('audit', req.text(), {'key': 'a'})\n");
  dir.write("app.js",
            "exports.worker = async (req, ctx) => { ctx.output('placed', req.text()); };\n"
            "exports.audit = async (req, ctx) => {};\n");
}

TEST(Traces, OneRequestThroughHttpQueueTopicAndStreamIsOneTreeOfSpans) {
  TestUpstream collector("collector");
  TempDir dir;
  write_pipeline(dir, "http://127.0.0.1:" + std::to_string(collector.port()) + "/v1/traces");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  // The client's own trace: the host's spans join it.
  const std::string trace = "4bf92f3577b34da6a3ce929d0e0e4736", client_span = "00f067aa0ba902b7";
  Response r = request(host.http_port(), "POST", "/order",
                       {{"traceparent", "00-" + trace + "-" + client_span + "-01"}, {"tracestate", "pipe=1"}}, "A-17");
  ASSERT_EQ(r.status, 200) << r.body;
  std::vector<SeenSpan> spans;
  // The four invocations' spans, the spans inside them, and the two deliveries' commits.
  const auto invocation_spans = [&] {
    return std::count_if(spans.begin(), spans.end(), [](const SeenSpan& s) { return s.attributes.count("faas.trigger"); });
  };
  const auto named = [&](const std::string& name) {
    return std::count_if(spans.begin(), spans.end(), [&](const SeenSpan& s) { return s.name == name; });
  };
  ASSERT_TRUE(eventually([&] {
    spans = spans_at(collector);
    return invocation_spans() >= 4 && named("execution") >= 4 && named("store commit") >= 4;
  }, 20000)) << spans.size() << " spans\n" << host.output();
  std::map<std::string, SeenSpan> by_name;
  std::map<std::string, std::vector<SeenSpan>> children;  // by parent span id
  for (const auto& s : spans) {
    EXPECT_EQ(s.trace_id, trace) << s.name << " is in another trace";
    // Every span, the commits of outputs, acks and the stream's checkpoint too, in the
    // client's tracestate (OTLP trace_state).
    EXPECT_EQ(s.trace_state, "pipe=1") << s.name << " " << (s.attributes.count("nimbus.commit") ? s.attributes.at("nimbus.commit") : "");
    children[s.parent_span_id].push_back(s);
    if (s.attributes.count("faas.trigger")) {
      EXPECT_TRUE(by_name.emplace(s.name, s).second) << s.name << " twice";
    }
  }
  ASSERT_EQ(by_name.size(), 4u);
  const auto child = [&](const std::string& of, const std::string& name) -> const SeenSpan* {
    for (const auto& c : children[by_name[of].span_id]) {
      if (c.name == name) return &c;
    }
    return nullptr;
  };
  // The tree: client -> front (server) -> worker -> notify -> audit (consumers).
  EXPECT_EQ(by_name["front"].parent_span_id, client_span);
  EXPECT_EQ(by_name["worker"].parent_span_id, by_name["front"].span_id);
  EXPECT_EQ(by_name["notify"].parent_span_id, by_name["worker"].span_id);
  EXPECT_EQ(by_name["audit"].parent_span_id, by_name["notify"].span_id);
  EXPECT_EQ(by_name["front"].kind, 2);
  for (const char* consumer : {"worker", "notify", "audit"}) EXPECT_EQ(by_name[consumer].kind, 5) << consumer;
  // The FaaS and messaging attributes of the OpenTelemetry conventions.
  EXPECT_EQ(by_name["front"].attributes["faas.trigger"], "http");
  EXPECT_EQ(by_name["front"].attributes["http.response.status_code"], "200");
  EXPECT_EQ(by_name["front"].attributes["faas.invocation_id"].size(), 32u);
  EXPECT_NE(host.output().find("\"invocation_id\":\"" + by_name["front"].attributes["faas.invocation_id"] + "\""),
            std::string::npos) << "the span's invocation id is not the log line's";
  EXPECT_EQ(by_name["worker"].attributes["faas.trigger"], "pubsub");
  EXPECT_EQ(by_name["worker"].attributes["nimbus.trigger"], "queue");
  EXPECT_EQ(by_name["notify"].attributes["nimbus.trigger"], "topic");
  EXPECT_EQ(by_name["audit"].attributes["nimbus.trigger"], "stream");
  EXPECT_EQ(by_name["audit"].attributes["messaging.operation.type"], "process");
  // Inside each invocation: its function's own run; the first request to the Python function
  // waited for its worker to start (a cold start, inside the wait).
  for (const char* fn : {"front", "worker", "notify", "audit"}) EXPECT_NE(child(fn, "execution"), nullptr) << fn;
  const SeenSpan* wait = child("front", "wait");
  ASSERT_NE(wait, nullptr);
  EXPECT_EQ(wait->attributes.at("faas.coldstart"), "true");
  bool cold = false;
  for (const auto& c : children[wait->span_id]) {
    if (c.name != "cold start") continue;
    cold = true;
    EXPECT_GE(c.start_ns, wait->start_ns);
    EXPECT_LE(c.end_ns, wait->end_ns);
  }
  EXPECT_TRUE(cold) << "no cold start span inside the first request's wait";
  // In order, within the invocation: the wait, then the run.
  const SeenSpan* run = child("front", "execution");
  EXPECT_GE(wait->start_ns, by_name["front"].start_ns);
  EXPECT_LE(wait->end_ns, run->start_ns);
  EXPECT_LE(run->end_ns, by_name["front"].end_ns);
  EXPECT_GT(run->end_ns, run->start_ns);
  // A message's time in its queue, under the span that sent it; and the commit that settled
  // each delivery, under the invocation it settled.
  bool queued = false;
  for (const auto& c : children[by_name["front"].span_id]) {
    queued |= c.name == "queue wait" && c.attributes.count("faas.name") && c.attributes.at("faas.name") == "worker";
  }
  EXPECT_TRUE(queued) << "no queue wait under the span that enqueued the worker's message";
  for (const char* fn : {"worker", "notify"}) {
    const SeenSpan* commit = child(fn, "store commit");
    ASSERT_NE(commit, nullptr) << fn;
    EXPECT_EQ(commit->attributes.at("nimbus.commit"), "ack");
  }
  const SeenSpan* outputs = child("front", "store commit");  // the HTTP function's outputs, before its reply
  ASSERT_NE(outputs, nullptr);
  EXPECT_EQ(outputs->attributes.at("nimbus.commit"), "outputs");
  EXPECT_LE(outputs->end_ns, by_name["front"].end_ns) << "the reply waits for the commit";
  const SeenSpan* checkpoint = child("audit", "store commit");  // the stream batch's checkpoint
  ASSERT_NE(checkpoint, nullptr);
  EXPECT_EQ(checkpoint->attributes.at("nimbus.commit"), "checkpoint");
  EXPECT_GE(checkpoint->start_ns, by_name["audit"].end_ns - 1000000) << "the commit comes after the run";
  // The manifest's headers go with every export, in protobuf (the OpenTelemetry default), on
  // one kept-alive connection; the resource names the app. Every span was in the trace above.
  for (const auto& req : collector.seen()) {
    EXPECT_EQ(req.headers.at("x-collector-key"), "secret");
    EXPECT_EQ(req.headers.at("content-type"), "application/x-protobuf");
    EXPECT_EQ(json::serialize(export_json(req).at("resourceSpans").at(0).at("resource").at("attributes").at(0)),
              R"({"key":"service.name","value":{"stringValue":"traced"}})");
  }
  EXPECT_EQ(collector.connections(), 1) << collector.seen().size() << " exports";
  // The log line of each invocation names the same trace (the log is written off the loop).
  EXPECT_TRUE(host.wait_for_output("\"function\":\"audit\",\"trigger\":\"stream\"", 10000)) << host.output();
  EXPECT_NE(host.output().find("\"trace_id\":\"" + trace + "\""), std::string::npos);
  // Counted once the collector's answer is read (it records a request before answering).
  std::string metrics;
  EXPECT_TRUE(eventually([&] {
    metrics = request(host.admin_port(), "GET", "/metrics").body;
    return metrics.find("nimbus_trace_spans_exported_total " + std::to_string(spans_at(collector).size()) + "\n") !=
           std::string::npos;
  }, 10000)) << metrics;
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

// Parent-based sampling at a ratio of 0: new traces are not recorded, a trace that arrives
// sampled is (and its messages carry that on); one that arrives unsampled is not.
TEST(Traces, SamplingFollowsTheParentAndTheRatioForNewTraces) {
  TestUpstream collector("collector");
  TempDir dir;
  write_pipeline(dir, "http://127.0.0.1:" + std::to_string(collector.port()) + "/v1/traces", "0");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  for (int i = 0; i < 20; ++i) ASSERT_EQ(request(host.http_port(), "POST", "/order", {}, "new").status, 200);
  const std::string unsampled = "00-11111111111111111111111111111111-2222222222222222-00";
  ASSERT_EQ(request(host.http_port(), "POST", "/order", {{"traceparent", unsampled}}, "no").status, 200);
  const std::string sampled = "00-33333333333333333333333333333333-4444444444444444-01";
  ASSERT_EQ(request(host.http_port(), "POST", "/order", {{"traceparent", sampled}}, "yes").status, 200);
  std::vector<SeenSpan> spans;
  const auto invocation_spans = [&] {
    return std::count_if(spans.begin(), spans.end(), [](const SeenSpan& s) { return s.attributes.count("faas.trigger"); });
  };
  ASSERT_TRUE(eventually([&] {
    spans = spans_at(collector);
    return invocation_spans() >= 4;
  }, 20000)) << spans.size();
  // Let the other 21 requests' pipelines finish too: still only the sampled trace's spans (its
  // 4 invocations' and those inside them), every one recorded exported.
  ASSERT_TRUE(eventually([&] {
    return lines_with(host.output(), {"\"function\":\"audit\""}) >= 22;
  }, 20000)) << host.output();
  Admin admin{host.admin_port(), host.admin_token()};
  ASSERT_TRUE(admin.wait([&] {
    spans = spans_at(collector);
    const std::string metrics = request(host.admin_port(), "GET", "/metrics").body;
    return metrics.find("nimbus_trace_spans_recorded_total " + std::to_string(spans.size()) + "\n") != std::string::npos &&
           metrics.find("nimbus_trace_spans_exported_total " + std::to_string(spans.size()) + "\n") != std::string::npos;
  }));
  EXPECT_EQ(invocation_spans(), 4);
  for (const auto& s : spans) EXPECT_EQ(s.trace_id, "33333333333333333333333333333333") << s.name;
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

// The OpenTelemetry JS SDK from npm (tests/otel, installed by scripts/setup.sh) inside a Node
// function joins the host's trace: the function extracts ctx.traceparent with the SDK's W3C
// propagator, and the span it starts and exports to the same collector is a child of the
// invocation's span, in the client's trace.
TEST(Traces, TheOpenTelemetryJsSdkInANodeFunctionJoinsTheTrace) {
  const std::string modules = std::string(NIMBUS_SOURCE_DIR) + "/tests/otel/node_modules";
  ASSERT_TRUE(std::filesystem::exists(modules + "/@opentelemetry/sdk-trace-base")) << "run scripts/setup.sh";
  TestUpstream collector("collector");
  TempDir dir;
  const std::string endpoint = "http://127.0.0.1:" + std::to_string(collector.port()) + "/v1/traces";
  dir.write("nimbus.yaml", "name: otel\nobserve:\n  otlp: {endpoint: \"" + endpoint +
                               "\"}\nfunctions:\n  charge:\n    runtime: node\n    handler: app.js:charge\n"
                               "    triggers: [{http: {route: /charge}}]\n");
  dir.write("app.js", "const M = '" + modules + "/@opentelemetry/';\n"
                      "const api = require(M + 'api');\n"
                      "const { W3CTraceContextPropagator } = require(M + 'core');\n"
                      "const { BasicTracerProvider, SimpleSpanProcessor } = require(M + 'sdk-trace-base');\n"
                      "const { OTLPTraceExporter } = require(M + 'exporter-trace-otlp-http');\n"
                      "const { resourceFromAttributes } = require(M + 'resources');\n"
                      "const provider = new BasicTracerProvider({\n"
                      "  resource: resourceFromAttributes({ 'service.name': 'payments-sdk' }),\n"
                      "  spanProcessors: [new SimpleSpanProcessor(new OTLPTraceExporter({ url: '" + endpoint + "' }))],\n"
                      "});\n"
                      "const tracer = provider.getTracer('payments');\n"
                      "const propagator = new W3CTraceContextPropagator();\n"
                      "exports.charge = async (req, ctx) => {\n"
                      "  const parent = propagator.extract(api.ROOT_CONTEXT, { traceparent: ctx.traceparent },\n"
                      "                                    api.defaultTextMapGetter);\n"
                      "  const span = tracer.startSpan('charge card', { attributes: { 'order.id': req.text() } }, parent);\n"
                      "  span.end();\n"
                      "  await provider.forceFlush();\n"
                      "  return 'charged';\n"
                      "};\n");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  const std::string trace = "5bf92f3577b34da6a3ce929d0e0e4737", client_span = "10f067aa0ba902b8";
  Response r = request(host.http_port(), "POST", "/charge", {{"traceparent", "00-" + trace + "-" + client_span + "-01"}},
                       "A-17");
  ASSERT_EQ(r.status, 200) << r.body << host.output();
  std::vector<SeenSpan> spans;
  const auto find = [&](const std::string& name) { return first_named(spans, name); };
  ASSERT_TRUE(eventually([&] {
    spans = spans_at(collector);
    return find("charge") && find("charge card");
  }, 20000)) << spans.size() << " spans\n" << host.output();
  const SeenSpan& invocation = *find("charge");
  const SeenSpan& sdk = *find("charge card");
  EXPECT_EQ(invocation.trace_id, trace);
  EXPECT_EQ(invocation.parent_span_id, client_span);
  EXPECT_EQ(sdk.trace_id, trace) << "the SDK's span is in another trace";
  EXPECT_EQ(sdk.parent_span_id, invocation.span_id) << "the SDK's span is not the invocation's child";
  EXPECT_EQ(sdk.service, "payments-sdk");
  EXPECT_EQ(invocation.service, "otel");
  EXPECT_EQ(sdk.attributes.at("order.id"), "A-17");
  EXPECT_LE(invocation.start_ns, sdk.start_ns);
  EXPECT_LE(sdk.end_ns, invocation.end_ns);
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

// Blob events carry the trace of the write that caused them: a function's blob output, and a
// put through the admin API with a traceparent header; the blob-triggered function's span is
// the writer's child.
TEST(Traces, BlobEventsContinueTheTraceOfTheWriteThatCausedThem) {
  TestUpstream collector("collector");
  TempDir dir;
  dir.write("nimbus.yaml", "name: blobtrace\nobserve:\n  otlp: {endpoint: \"http://127.0.0.1:" +
                               std::to_string(collector.port()) + "/v1/traces\"}\nfunctions:\n"
                               "  writer:\n    runtime: python\n    handler: app.py:writer\n"
                               "    triggers: [{http: {route: /write}}]\n    outputs: {out: {blob: \"files/{name}\"}}\n"
                               "  reader:\n    runtime: python\n    handler: app.py:reader\n"
                               "    triggers: [{blob: {path: \"files/{name}\"}}]\n");
  dir.write("app.py", "def writer(req, ctx):\n    ctx.output('out', req.text(), {'path': 'a.txt'})\n    return 'written'\n\n"
                      "def reader(req, ctx):\n    pass\n");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  const std::string trace = "6bf92f3577b34da6a3ce929d0e0e4738", client_span = "20f067aa0ba902b9";
  ASSERT_EQ(request(host.http_port(), "POST", "/write",
                    {{"traceparent", "00-" + trace + "-" + client_span + "-01"}, {"tracestate", "blob=w1"}}, "x")
                .status,
            200);
  const std::string admin_trace = "7bf92f3577b34da6a3ce929d0e0e4739", admin_span = "30f067aa0ba902ba";
  ASSERT_EQ(request(host.admin_port(), "PUT", "/admin/blobs/files/b.txt",
                    {{"Authorization", "Bearer " + host.admin_token()},
                     {"traceparent", "00-" + admin_trace + "-" + admin_span + "-01"}, {"tracestate", "blob=a2"}},
                    "y")
                .status,
            201);
  std::vector<SeenSpan> spans;
  const auto invocations_of = [&](const std::string& fn) {
    std::vector<SeenSpan> out;
    for (const auto& s : spans) {
      if (s.name == fn && s.attributes.count("faas.trigger")) out.push_back(s);
    }
    return out;
  };
  ASSERT_TRUE(eventually([&] {
    spans = spans_at(collector);
    return invocations_of("writer").size() == 1 && invocations_of("reader").size() == 2;
  }, 20000)) << spans.size() << " spans\n" << host.output();
  const SeenSpan writer = invocations_of("writer").front();
  EXPECT_EQ(writer.trace_id, trace);
  EXPECT_EQ(writer.parent_span_id, client_span);
  std::map<std::string, SeenSpan> readers;  // by trace
  for (const auto& r : invocations_of("reader")) readers[r.trace_id] = r;
  ASSERT_TRUE(readers.count(trace)) << "the blob event of the function's output started a trace of its own";
  EXPECT_EQ(readers[trace].parent_span_id, writer.span_id);
  EXPECT_EQ(readers[trace].attributes["nimbus.trigger"], "blob");
  ASSERT_TRUE(readers.count(admin_trace)) << "the blob event of the admin put started a trace of its own";
  EXPECT_EQ(readers[admin_trace].parent_span_id, admin_span);
  // The tracestate that came with each write goes on with its blob event, and every span of
  // the trace is exported with it (OTLP's trace_state).
  EXPECT_EQ(writer.trace_state, "blob=w1");
  EXPECT_EQ(readers[trace].trace_state, "blob=w1");
  EXPECT_EQ(readers[admin_trace].trace_state, "blob=a2");
  // Every span, those that come after the invocations' too (the commits that settle the blob
  // events' deliveries): the host sends what it holds when it stops.
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
  spans = spans_at(collector);
  std::size_t commits = 0;
  for (const auto& s : spans) {
    if (s.trace_id == trace || s.trace_id == admin_trace) {
      EXPECT_EQ(s.trace_state, s.trace_id == trace ? "blob=w1" : "blob=a2") << s.name;
      commits += s.attributes.count("nimbus.commit");
    }
  }
  EXPECT_GE(commits, 1u) << "no store commit span in the blob events' traces";
}

// A collector that is not there: every request is answered as fast, and the spans it could
// not take are counted (and the first failure logged once).
// The gateway carries the trace to an upstream: the upstream's parent is the gateway's span,
// which the collector gets as a server span under the client's; with no traceparent from the
// client, the upstream still gets a fresh one; tracestate passes as it came.
TEST(Traces, TheGatewayContinuesTheTraceToAnUpstreamUnderASpanOfItsOwn) {
  TestUpstream collector("collector");
  TestUpstream legacy("legacy");
  TempDir dir;
  dir.write("nimbus.yaml", "name: edge\nobserve:\n  otlp: {endpoint: \"http://127.0.0.1:" + std::to_string(collector.port()) +
                               "/v1/traces\"}\ngateway:\n  upstreams:\n    legacy: http://127.0.0.1:" +
                               std::to_string(legacy.port()) +
                               "\n  routes:\n    - path: /legacy/{*rest}\n      upstream: legacy\n"
                               "functions:\n  hello:\n    runtime: native\n    handler: " + fn("hello") +
                               "\n    triggers: [{http: {route: /hello}}]\n");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  const std::string trace = "4bf92f3577b34da6a3ce929d0e0e4736", client_span = "00f067aa0ba902b7";
  Response r = request(host.http_port(), "GET", "/legacy/orders",
                       {{"traceparent", "00-" + trace + "-" + client_span + "-01"}, {"tracestate", "vendor=1"}});
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(legacy.requests(), 1);
  const auto seen = legacy.seen().at(0);
  const std::string sent = seen.headers.count("traceparent") ? seen.headers.at("traceparent") : "";
  ASSERT_EQ(sent.size(), 55u) << sent;
  EXPECT_EQ(sent.substr(3, 32), trace);
  const std::string gateway_span = sent.substr(36, 16);
  EXPECT_NE(gateway_span, client_span);
  EXPECT_EQ(seen.headers.count("tracestate") ? seen.headers.at("tracestate") : "", "vendor=1");

  std::vector<SeenSpan> spans;
  ASSERT_TRUE(eventually([&] {
    spans = spans_at(collector);
    return std::any_of(spans.begin(), spans.end(), [&](const SeenSpan& s) { return s.span_id == gateway_span; });
  }, 15000));
  const auto s = *std::find_if(spans.begin(), spans.end(), [&](const SeenSpan& x) { return x.span_id == gateway_span; });
  EXPECT_EQ(s.trace_id, trace);
  EXPECT_EQ(s.parent_span_id, client_span);
  EXPECT_EQ(s.kind, 2);  // server
  EXPECT_EQ(s.name, "GET /legacy/{*rest}");
  EXPECT_EQ(s.attributes.at("http.response.status_code"), "200");
  EXPECT_EQ(s.attributes.at("nimbus.upstream"), "legacy");
  EXPECT_EQ(s.trace_state, "vendor=1");  // the client's trace's, on the gateway's span too

  // No trace from the client: one starts at the gateway, and the upstream is in it.
  ASSERT_EQ(request(host.http_port(), "GET", "/legacy/other").status, 200);
  ASSERT_EQ(legacy.requests(), 2);
  const auto fresh = legacy.seen().at(1).headers;
  ASSERT_TRUE(fresh.count("traceparent"));
  EXPECT_EQ(fresh.at("traceparent").size(), 55u);
  EXPECT_NE(fresh.at("traceparent").substr(3, 32), trace);
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

// A function's own HTTP calls carry its invocation's traceparent (Python: http.client, and so
// urllib; Node: fetch), so what they reach joins the trace as the invocation's child; a call
// that sets its own traceparent keeps it.
TEST(Traces, AFunctionsOwnHttpCallsCarryItsTraceparentInPythonAndNode) {
  TestUpstream up("up");
  TempDir dir;
  const std::string own = "00-" + std::string(32, 'a') + "-" + std::string(16, 'b') + "-01";
  dir.write("nimbus.yaml", "name: callout\nfunctions:\n"
                           "  pycall:\n    runtime: python\n    handler: app.py:pycall\n    triggers: [{http: {route: /py}}]\n"
                           "  nodecall:\n    runtime: node\n    handler: app.js:nodecall\n    triggers: [{http: {route: /node}}]\n"
                           "  esmcall:\n    runtime: node\n    handler: esm.mjs:esmcall\n    triggers: [{http: {route: /esm}}]\n");
  // Three calls each: the usual client, the same with a traceparent of the function's own, and
  // the lower-level one (Python's http.client, Node's http module).
  dir.write("app.py", "import http.client, urllib.parse, urllib.request\n"
                      "def pycall(req, ctx):\n"
                      "    urllib.request.urlopen(req.query['url']).read()\n"
                      "    mine = urllib.request.Request(req.query['url'], headers={'traceparent': '" + own + "'})\n"
                      "    urllib.request.urlopen(mine).read()\n"
                      "    u = urllib.parse.urlsplit(req.query['url'])\n"
                      "    c = http.client.HTTPConnection(u.hostname, u.port)\n"
                      "    c.request('GET', u.path)\n"
                      "    c.getresponse().read()\n"
                      "    return 'called'\n");
  dir.write("app.js", "const http = require('http');\n"
                      "exports.nodecall = async (req, ctx) => {\n"
                      "  await (await fetch(req.query.url)).text();\n"
                      "  await (await fetch(req.query.url, { headers: { traceparent: '" + own + "' } })).text();\n"
                      "  await new Promise((done, fail) => http.get(req.query.url, (r) => { r.resume(); r.on('end', done); })"
                      ".on('error', fail));\n"
                      "  return 'called';\n};\n");
  // An ES module's named import of http's get (bound when it is imported).
  dir.write("esm.mjs", "import { get } from 'node:http';\n"
                       "export const esmcall = async (req, ctx) => {\n"
                       "  await (await fetch(req.query.url)).text();\n"
                       "  await (await fetch(req.query.url, { headers: { traceparent: '" + own + "' } })).text();\n"
                       "  await new Promise((done, fail) => get(req.query.url, (r) => { r.resume(); r.on('end', done); })"
                       ".on('error', fail));\n"
                       "  return 'called';\n};\n");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  const std::string target = "?url=http://127.0.0.1:" + std::to_string(up.port()) + "/seen";
  int seen = 0;
  for (const auto& [route, trace] : {std::pair<std::string, std::string>{"/py", std::string(31, '1') + "f"},
                                     std::pair<std::string, std::string>{"/node", std::string(31, '2') + "f"},
                                     std::pair<std::string, std::string>{"/esm", std::string(31, '3') + "f"}}) {
    SCOPED_TRACE(route);
    const std::string client_span = "00f067aa0ba902b7";
    Response r = request(host.http_port(), "GET", route + target, {{"traceparent", "00-" + trace + "-" + client_span + "-01"}});
    ASSERT_EQ(r.status, 200) << r.body << host.output();
    ASSERT_EQ(up.requests(), seen + 3);
    const auto calls = up.seen();
    const auto first = calls.at(static_cast<std::size_t>(seen)).headers, second = calls.at(static_cast<std::size_t>(seen) + 1).headers,
               third = calls.at(static_cast<std::size_t>(seen) + 2).headers;
    seen += 3;
    ASSERT_TRUE(first.count("traceparent")) << "the function's call carried no traceparent";
    const std::string carried = first.at("traceparent");
    ASSERT_EQ(carried.size(), 55u) << carried;
    EXPECT_EQ(carried.substr(3, 32), trace);
    // Its parent is the invocation's own span, which the history names.
    std::vector<json::object> found;
    ASSERT_TRUE(admin.wait([&] {
      Response h = admin.call("GET", "/admin/invocations?trace=" + trace);
      json::object body = parse_object(h.body);
      found.clear();
      for (auto& v : body["invocations"].as_array()) found.push_back(v.as_object());
      return found.size() == 1;
    }));
    EXPECT_EQ(carried.substr(36, 16), std::string(found[0].at("span_id").as_string()));
    EXPECT_NE(carried.substr(36, 16), client_span);
    EXPECT_EQ(second.count("traceparent") ? second.at("traceparent") : "", own);  // the function's own, kept
    EXPECT_EQ(third.count("traceparent") ? third.at("traceparent") : "", carried) << "the lower-level client's call";
  }
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

// A W3C tracestate that comes with a trace goes on with it, unchanged, through every hop: an
// output to a queue, a host call's publish to a topic, an output to a stream, a CloudEvent;
// each Python, Node and C++ function is handed it, and the Python and Node functions' own HTTP
// calls carry it beside their traceparent. One that comes with a malformed traceparent (a new
// trace starts) is not passed on.
TEST(Traces, TracestateGoesOnWithTheTraceThroughEveryHopAndOnTheFunctionsOwnCalls) {
  TestUpstream up("up");
  TempDir dir;
  const std::string url = "http://127.0.0.1:" + std::to_string(up.port()) + "/seen/";
  dir.write("nimbus.yaml",
            "name: states\nfunctions:\n"
            "  front:\n    runtime: python\n    handler: app.py:front\n"
            "    triggers: [{http: {route: /order}}]\n    outputs: {next: {queue: orders}}\n"
            "  worker:\n    runtime: node\n    handler: app.js:worker\n    triggers: [{queue: {name: orders}}]\n"
            "  notify:\n    runtime: python\n    handler: app.py:notify\n"
            "    triggers: [{topic: {name: placed}}]\n    outputs: {audit: {stream: audit}}\n"
            "  audit:\n    runtime: node\n    handler: app.js:audit\n"
            "    triggers: [{stream: {name: audit, batch_size: 1}}]\n"
            "  event:\n    runtime: node\n    handler: app.js:event\n    triggers: [{cloudevents: {path: /events}}]\n"
            "  echo:\n    runtime: native\n    handler: " + fn("echo") + "\n    triggers: [{http: {route: /echo}}]\n");
  // Each function calls out with what it was handed in its path (the client adds the headers).
  dir.write("app.py", "import urllib.parse, urllib.request\n"
                      "def call(name, ctx):\n"
                      "    urllib.request.urlopen('" + url + "' + name + '?state=' + urllib.parse.quote(ctx.tracestate)).read()\n"
                      "def front(req, ctx):\n    call('front', ctx)\n    ctx.output('next', req.text())\n    return 'ok'\n"
                      "def notify(req, ctx):\n    call('notify', ctx)\n    ctx.output('audit', req.text(), {'key': 'a'})\n");
  dir.write("app.js", "const call = async (name, ctx) => (await fetch('" + url +
                      "' + name + '?state=' + encodeURIComponent(ctx.tracestate))).text();\n"
                      "exports.worker = async (req, ctx) => { await call('worker', ctx); await ctx.publish('placed', req.text()); };\n"
                      "exports.audit = async (req, ctx) => { await call('audit', ctx); };\n"
                      "exports.event = async (req, ctx) => { await call('event', ctx); return 'ok'; };\n");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  const std::string trace = "4bf92f3577b34da6a3ce929d0e0e4736";
  const std::string state = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";
  const std::map<std::string, std::string> w3c{{"traceparent", "00-" + trace + "-00f067aa0ba902b7-01"},
                                               {"tracestate", state}};
  Response r = request(host.http_port(), "POST", "/order", w3c, "A-17");
  ASSERT_EQ(r.status, 200) << r.body << host.output();
  ASSERT_TRUE(eventually([&] { return up.requests() >= 4; }, 20000)) << up.requests() << "\n" << host.output();
  // A CloudEvent in binary mode: its distributed tracing extension is the W3C headers.
  auto ce = w3c;
  ce.insert({{"ce-specversion", "1.0"}, {"ce-id", "e-1"}, {"ce-source", "/test"}, {"ce-type", "t"},
             {"content-type", "text/plain"}});
  r = request(host.http_port(), "POST", "/events", ce, "x");
  ASSERT_EQ(r.status, 200) << r.body << host.output();
  // Each function's call: what it was handed (ctx.tracestate, in the query) and its headers.
  std::map<std::string, TestUpstream::Seen> by_name;
  for (const auto& seen : up.seen()) by_name[seen.target.substr(6, seen.target.find('?') - 6)] = seen;
  for (const char* name : {"front", "worker", "notify", "audit", "event"}) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(by_name.count(name)) << "no call from " << name;
    const std::string& target = by_name[name].target;
    EXPECT_EQ(target.substr(target.find('=') + 1), "congo%3Dt61rcWkgMzE%2Crojo%3D00f067aa0ba902b7");
    const auto& headers = by_name[name].headers;
    ASSERT_TRUE(headers.count("traceparent"));
    EXPECT_EQ(headers.at("traceparent").substr(3, 32), trace);
    EXPECT_EQ(headers.count("tracestate") ? headers.at("tracestate") : "", state);
  }
  // A C++ function gets it too, and trace_headers() for its own calls.
  r = request(host.http_port(), "GET", "/echo?trace=1", w3c);
  ASSERT_EQ(r.status, 200) << r.body;
  json::object echoed = parse_object(r.body);
  EXPECT_EQ(echoed["tracestate"].as_string(), state);
  EXPECT_EQ(json::serialize(echoed["trace_headers"].as_array().at(1)), "[\"tracestate\",\"" + state + "\"]");
  // Two tracestate headers are one list, in order (the W3C combining of repeated headers).
  const std::string raw = send_raw(host.http_port(), "GET /echo?trace=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                   "traceparent: 00-" + trace + "-00f067aa0ba902b7-01\r\ntracestate: a=1\r\n"
                                   "tracestate: b=2\r\n\r\n");
  EXPECT_NE(raw.find("\"tracestate\":\"a=1,b=2\""), std::string::npos) << raw;
  // With a malformed traceparent the trace starts anew, and the tracestate does not go on.
  r = request(host.http_port(), "GET", "/echo?trace=1",
              {{"traceparent", "00-" + trace + "-00f067aa0ba902b7"}, {"tracestate", state}});
  ASSERT_EQ(r.status, 200) << r.body;
  echoed = parse_object(r.body);
  EXPECT_NE(std::string(echoed["traceparent"].as_string()).substr(3, 32), trace);
  EXPECT_EQ(echoed["tracestate"].as_string(), "");
  EXPECT_EQ(echoed["trace_headers"].as_array().size(), 1u);
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

TEST(Traces, HostCallsAreSpansAndWhatTheyCauseIsTheirChild) {
  TestUpstream collector("collector");
  TempDir dir;
  dir.write("nimbus.yaml", "name: calls\nobserve:\n  otlp: {endpoint: \"http://127.0.0.1:" + std::to_string(collector.port()) +
                               "/v1/traces\"}\nfunctions:\n"
                               "  front:\n    runtime: python\n    handler: app.py:front\n"
                               "    triggers: [{http: {route: /go}}]\n"
                               "  helper:\n    runtime: python\n    handler: app.py:helper\n    triggers: [{http: {route: /helper}}]\n"
                               "  on_placed:\n    runtime: python\n    handler: app.py:quiet\n"
                               "    triggers: [{topic: {name: placed}}]\n"
                               "  on_job:\n    runtime: python\n    handler: app.py:quiet\n"
                               "    triggers: [{queue: {name: jobs}}]\n");
  dir.write("app.py",
            "def front(req, ctx):\n"
            "    ctx.state_put('carts', 'c1', b'x')\n"
            "    ctx.state_get('carts', 'c1')\n"
            "    ctx.publish('placed', b'p')\n"
            "    ctx.enqueue('jobs', b'j')\n"
            "    ctx.invoke('helper', b'h')\n"
            "    try:\n        ctx.invoke('nobody', b'')\n    except Exception:\n        pass\n"
            "    return 'ok'\n\n"
            "def helper(req, ctx):\n    return 'helped'\n\n"
            "def quiet(req, ctx):\n    pass\n");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  const std::string trace = "5bf92f3577b34da6a3ce929d0e0e4736";
  ASSERT_EQ(request(host.http_port(), "GET", "/go",
                    {{"traceparent", "00-" + trace + "-00f067aa0ba902b7-01"}, {"tracestate", "calls=1"}})
                .status,
            200);
  std::vector<SeenSpan> spans;
  const auto find = [&](const std::string& name) { return first_named(spans, name); };
  // The ack of on_job's message: the dispatcher's commit span.
  const auto ack = [&]() -> const SeenSpan* {
    const SeenSpan* job = find("on_job");
    for (const auto& s : spans) {
      if (job && s.name == "store commit" && s.parent_span_id == job->span_id) return &s;
    }
    return nullptr;
  };
  ASSERT_TRUE(eventually([&] {
    spans = spans_at(collector);
    return find("on_placed") && find("on_job") && find("helper") && find("invoke nobody") && find("front") && ack();
  }, 20000)) << spans.size() << " spans\n" << host.output();
  EXPECT_EQ(ack()->attributes.at("nimbus.commit"), "ack");
  EXPECT_EQ(ack()->trace_state, "calls=1");
  for (const char* name : {"front", "on_placed", "on_job", "helper", "invoke nobody"}) {
    EXPECT_EQ(find(name)->trace_state, "calls=1") << name;
  }
  const SeenSpan front = *find("front");
  struct Expect {
    const char* name;
    int kind;
    const char* attribute;
    const char* value;
  };
  for (const Expect& e : {Expect{"state.put carts", 3, "db.collection.name", "carts"},
                          Expect{"state.get carts", 3, "db.operation.name", "state.get"},
                          Expect{"publish placed", 4, "messaging.destination.name", "placed"},
                          Expect{"enqueue jobs", 4, "messaging.operation.type", "send"},
                          Expect{"invoke helper", 3, "faas.invoked_name", "helper"}}) {
    const SeenSpan* s = find(e.name);
    ASSERT_NE(s, nullptr) << e.name;
    EXPECT_EQ(s->trace_id, trace) << e.name;
    EXPECT_EQ(s->parent_span_id, front.span_id) << e.name << " is not under the calling invocation";
    EXPECT_EQ(s->kind, e.kind) << e.name;
    EXPECT_EQ(s->trace_state, "calls=1") << e.name;
    EXPECT_EQ(s->attributes.count(e.attribute) ? s->attributes.at(e.attribute) : "", e.value) << e.name;
    EXPECT_FALSE(s->error) << e.name;
    EXPECT_GE(s->start_ns, front.start_ns) << e.name;
    EXPECT_LE(s->end_ns, front.end_ns) << e.name;
  }
  // What a call caused is its child: the message's consumer under the publish, the invoked
  // function under the invoke.
  EXPECT_EQ(find("on_placed")->parent_span_id, find("publish placed")->span_id);
  EXPECT_EQ(find("on_job")->parent_span_id, find("enqueue jobs")->span_id);
  EXPECT_EQ(find("helper")->parent_span_id, find("invoke helper")->span_id);
  EXPECT_TRUE(host.wait_for_output("\"function\":\"helper\",\"trigger\":\"admin\"", 5000))
      << "an invoked function has its log line, as a triggered one has\n" << host.output();
  // A call that failed says so.
  EXPECT_TRUE(find("invoke nobody")->error);
  EXPECT_EQ(find("invoke nobody")->parent_span_id, front.span_id);
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

TEST(Traces, AnAsyncRoutesAcceptIsASpanAndTheRunLaterIsItsChild) {
  TestUpstream collector("collector");
  TempDir dir;
  dir.write("nimbus.yaml", "name: later\nobserve:\n  otlp: {endpoint: \"http://127.0.0.1:" + std::to_string(collector.port()) +
                               "/v1/traces\"}\nfunctions:\n"
                               "  job:\n    runtime: python\n    handler: app.py:job\n"
                               "    triggers: [{http: {route: /job, methods: [POST], async: true}}]\n");
  dir.write("app.py", "def job(req, ctx):\n    return 'done'\n");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  const std::string trace = "6bf92f3577b34da6a3ce929d0e0e4736", client_span = "20f067aa0ba902b7";
  ASSERT_EQ(request(host.http_port(), "POST", "/job",
                    {{"traceparent", "00-" + trace + "-" + client_span + "-01"}, {"tracestate", "later=2"}}, "x")
                .status,
            202);
  std::vector<SeenSpan> spans;
  const auto find = [&](const std::string& name) { return first_named(spans, name); };
  ASSERT_TRUE(eventually([&] {
    spans = spans_at(collector);
    return find("POST job (accept)") && find("job");
  }, 20000)) << spans.size() << " spans\n" << host.output();
  const SeenSpan& accept = *find("POST job (accept)");
  EXPECT_EQ(accept.trace_id, trace);
  EXPECT_EQ(accept.parent_span_id, client_span);
  EXPECT_EQ(accept.kind, 2);
  EXPECT_EQ(accept.attributes.at("http.response.status_code"), "202");
  EXPECT_EQ(find("job")->parent_span_id, accept.span_id) << "the run is not under the accept";
  EXPECT_EQ(accept.trace_state, "later=2");
  EXPECT_EQ(find("job")->trace_state, "later=2");
  // The accept has its log line too, in the same trace (the run has its own).
  EXPECT_TRUE(host.wait_for_output("\"msg\":\"accepted\",\"function\":\"job\",\"trigger\":\"http\"", 5000)) << host.output();
  EXPECT_GT(lines_with(host.output(), {"\"msg\":\"accepted\"", "\"trace_id\":\"" + trace + "\"", "\"status\":202"}), 0)
      << host.output();
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

// An orchestration started with a traceparent is one trace: each orchestrator step is a span
// (trigger orchestration) with its log line and history record, the activity it calls and the
// entity operation it calls are children of the step that sent them, and the step that their
// answers wake is in the same trace.
TEST(Traces, AnOrchestrationsStepsActivitiesAndEntityOperationsAreOneTrace) {
  TestUpstream collector("collector");
  TempDir dir;
  dir.write("nimbus.yaml", "name: flows\nobserve:\n  otlp: {endpoint: \"http://127.0.0.1:" + std::to_string(collector.port()) +
                               "/v1/traces\"}\nfunctions:\n"
                               "  flow:\n    runtime: python\n    handler: app.py:flow\n"
                               "    triggers: [{orchestration: {auth: anonymous}}]\n"
                               "  hello:\n    runtime: python\n    handler: app.py:hello\n    triggers: [{activity: {}}]\n"
                               "  tally:\n    runtime: python\n    handler: app.py:tally\n"
                               "    triggers: [{entity: {auth: anonymous}}]\n");
  dir.write("app.py", R"(from nimbus import durable

@durable.orchestrator
def flow(ctx):
    greeting = yield ctx.call_activity("hello", "Oslo")
    total = yield ctx.call_entity("tally", "t1", "add", 2)
    return [greeting, total]

def hello(req, ctx):
    return "hello " + req.json()

@durable.entity
def tally(ctx):
    value = ctx.get_state(lambda: 0) + ctx.get_input()
    ctx.set_state(value)
    return value
)");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  const std::string trace = "7bf92f3577b34da6a3ce929d0e0e4736", client_span = "30f067aa0ba902b7";
  Response started = request(host.http_port(), "POST", "/_nimbus/orchestrations/flow?instance=o1",
                             {{"traceparent", "00-" + trace + "-" + client_span + "-01"}, {"tracestate", "flow=7"}}, "");
  ASSERT_EQ(started.status, 202) << started.body;
  ASSERT_TRUE(eventually([&] {
    return request(host.http_port(), "GET", "/_nimbus/orchestrations/flow/instances/o1").status == 200;
  }, 20000)) << host.output();
  std::vector<SeenSpan> spans;
  const auto named = [&](const std::string& name) {
    std::vector<const SeenSpan*> out;
    for (const auto& s : spans) {
      if (s.name == name) out.push_back(&s);
    }
    return out;
  };
  ASSERT_TRUE(eventually([&] {
    spans = spans_at(collector);
    return named("flow").size() >= 3 && !named("hello").empty() && !named("tally").empty();
  }, 20000)) << spans.size() << " spans\n" << host.output();
  const std::vector<const SeenSpan*> steps = named("flow");
  for (const SeenSpan* step : steps) {
    EXPECT_EQ(step->trace_id, trace) << "an orchestrator step outside the caller's trace";
    EXPECT_EQ(step->attributes.at("nimbus.trigger"), "orchestration");
    EXPECT_FALSE(step->error);
  }
  const auto by_id = [&](const std::string& id) -> const SeenSpan* {
    for (const auto& s : spans) {
      if (s.span_id == id) return &s;
    }
    return nullptr;
  };
  const SeenSpan& hello = *named("hello").front();
  const SeenSpan& tally = *named("tally").front();
  EXPECT_EQ(hello.trace_id, trace);
  EXPECT_EQ(tally.trace_id, trace);
  ASSERT_NE(by_id(hello.parent_span_id), nullptr) << "the activity's parent span was not exported";
  EXPECT_EQ(by_id(hello.parent_span_id)->name, "flow") << "the activity is not under the step that called it";
  ASSERT_NE(by_id(tally.parent_span_id), nullptr) << "the entity operation's parent span was not exported";
  EXPECT_EQ(by_id(tally.parent_span_id)->name, "flow") << "the entity operation is not under the step that called it";
  EXPECT_NE(hello.parent_span_id, tally.parent_span_id) << "one step called both";
  // The tracestate that came with the start goes on through every step, the activity and the
  // entity's operation (and its reply to the step after it), and on every span exported.
  for (const auto& s : spans) {
    if (s.trace_id == trace) {
      EXPECT_EQ(s.trace_state, "flow=7") << s.name;
    }
  }
  // Log lines and history records, as every invocation has.
  EXPECT_TRUE(host.wait_for_output("\"function\":\"flow\",\"trigger\":\"orchestration\"", 5000)) << host.output();
  EXPECT_TRUE(host.wait_for_output("\"function\":\"tally\",\"trigger\":\"entity\"", 5000)) << host.output();
  Admin admin{host.admin_port(), host.admin_token()};
  std::set<std::string> kinds;
  ASSERT_TRUE(eventually([&] {
    Response r = admin.call("GET", "/admin/invocations?trace=" + trace);
    if (r.status != 200) return false;
    kinds.clear();
    const json::value body = json::parse(r.body);
    for (const auto& v : body.at("invocations").as_array()) {
      kinds.insert(std::string(v.at("function").as_string()) + "/" + std::string(v.at("trigger").as_string()));
    }
    return kinds.count("flow/orchestration") && kinds.count("tally/entity") && kinds.count("hello/activity");
  }, 10000)) << [&] {
    std::string all;
    for (const auto& k : kinds) all += k + " ";
    return all;
  }();
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

// observe.otlp.protocol http/json: what reaches the collector is OTLP/JSON (content-type
// application/json, ids in hex, times as strings), gzipped when asked, and the same spans.
TEST(Traces, TheJsonProtocolSendsOtlpJsonOverTheWire) {
  TestUpstream collector("collector");
  TempDir dir;
  dir.write("nimbus.yaml", "name: jsonwire\nobserve:\n  otlp: {endpoint: \"http://127.0.0.1:" +
                               std::to_string(collector.port()) +
                               "/v1/traces\", protocol: http/json, compression: gzip}\nfunctions:\n"
                               "  hello:\n    runtime: python\n    handler: app.py:hello\n"
                               "    triggers: [{http: {route: /hello}}]\n");
  dir.write("app.py", "def hello(req, ctx):\n    return 'hi'\n");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  const std::string trace = "8bf92f3577b34da6a3ce929d0e0e4736";
  ASSERT_EQ(request(host.http_port(), "GET", "/hello", {{"traceparent", "00-" + trace + "-40f067aa0ba902b7-01"}}).status, 200);
  std::vector<SeenSpan> spans;
  ASSERT_TRUE(eventually([&] {
    spans = spans_at(collector);
    return first_named(spans, "hello") != nullptr;
  }, 20000)) << host.output();
  bool json_seen = false;
  for (const auto& req : collector.seen()) {
    if (req.target != "/v1/traces") continue;
    EXPECT_EQ(req.headers.count("content-type") ? req.headers.at("content-type") : "", "application/json");
    EXPECT_EQ(req.headers.count("content-encoding") ? req.headers.at("content-encoding") : "", "gzip");
    // OTLP/JSON's own spelling, not protobuf's JSON mapping: ids as hex, kind as a number.
    const std::string body = gunzip(req.body);
    EXPECT_NE(body.find("\"traceId\":\"" + trace + "\""), std::string::npos) << body.substr(0, 400);
    json_seen = true;
  }
  EXPECT_TRUE(json_seen);
  const SeenSpan& hello = *first_named(spans, "hello");
  EXPECT_EQ(hello.trace_id, trace);
  EXPECT_EQ(hello.parent_span_id, "40f067aa0ba902b7");
  EXPECT_EQ(hello.kind, 2);
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

// A stream batch of records from two traces continues the first record's trace, and its span
// links to the other record's cause. (The records are written while no group reads the
// stream, under one key (one partition); the group added next starts at the oldest record
// and takes both in one batch.)
TEST(Traces, AStreamBatchOfRecordsFromTwoTracesLinksToTheOneItIsNotUnder) {
  TestUpstream collector("collector");
  TempDir dir;
  const std::string head = "name: linked\nobserve:\n  otlp: {endpoint: \"http://127.0.0.1:" +
                           std::to_string(collector.port()) + "/v1/traces\"}\nfunctions:\n"
                           "  put:\n    runtime: python\n    handler: app.py:put\n"
                           "    triggers: [{http: {route: /put}}]\n    outputs: {out: {stream: events}}\n";
  dir.write("app.py", "def put(req, ctx):\n    ctx.output('out', req.text(), {'key': 'one'})\n    return 'ok'\n\n"
                      "def batch(req, ctx):\n    pass\n");
  const std::string first = "9bf92f3577b34da6a3ce929d0e0e4736", second = "9cf92f3577b34da6a3ce929d0e0e4736";
  dir.write("nimbus.yaml", head);
  {
    Host host(dir.path());
    ASSERT_TRUE(host.started()) << host.errors();
    ASSERT_EQ(request(host.http_port(), "POST", "/put", {{"traceparent", "00-" + first + "-50f067aa0ba902b7-01"}}, "a").status, 200);
    ASSERT_EQ(request(host.http_port(), "POST", "/put", {{"traceparent", "00-" + second + "-60f067aa0ba902b7-01"}}, "b").status,
              200);
    EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
  }
  dir.write("nimbus.yaml", head + "  batch:\n    runtime: python\n    handler: app.py:batch\n"
                                  "    triggers: [{stream: {name: events, batch_size: 10}}]\n");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  std::vector<SeenSpan> spans;
  ASSERT_TRUE(eventually([&] {
    spans = spans_at(collector);
    return first_named(spans, "batch") != nullptr;
  }, 20000)) << host.output();
  const auto put_of = [&](const std::string& trace) -> const SeenSpan* {
    for (const auto& s : spans) {
      if (s.name == "put" && s.trace_id == trace) return &s;
    }
    return nullptr;
  };
  ASSERT_NE(put_of(first), nullptr);
  ASSERT_NE(put_of(second), nullptr);
  const SeenSpan& batch = *first_named(spans, "batch");
  EXPECT_EQ(batch.trace_id, first);
  EXPECT_EQ(batch.parent_span_id, put_of(first)->span_id);
  EXPECT_EQ(batch.links, (std::vector<std::pair<std::string, std::string>>{{second, put_of(second)->span_id}}))
      << "the batch span does not link to the record of the other trace";
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

// A collector named by a host name that never resolves (a DNS server that takes the question
// and never answers) holds up neither the exports nor the stop: the export fails within its
// timeout, naming the lookup, and the host stops at once. The host runs in a mount namespace
// of its own whose /etc/resolv.conf names that server (so this needs root).
TEST(Traces, ACollectorNameThatNeverResolvesHoldsUpNeitherExportsNorTheStop) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: a mount namespace for the host, and port 53";
  const int dns = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(53);
  ::inet_pton(AF_INET, "127.0.0.77", &addr.sin_addr);
  ASSERT_EQ(::bind(dns, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << std::strerror(errno);
  TempDir dir;
  dir.write("resolv.conf", "nameserver 127.0.0.77\noptions timeout:30 attempts:1\n");
  dir.write("nimbus.yaml", "name: slowdns\nobserve:\n  otlp: {endpoint: \"http://collector.nimbus.test:4318/v1/traces\"}\n"
                           "functions:\n  hello:\n    runtime: python\n    handler: app.py:hello\n"
                           "    triggers: [{http: {route: /hello}}]\n");
  dir.write("app.py", "def hello(req, ctx):\n    return 'hi'\n");
  Host host(dir.path(), {},
            {"unshare", "--mount", "sh", "-c",
             "mount --bind '" + (dir.path() / "resolv.conf").string() +
                 "' /etc/resolv.conf && OTEL_EXPORTER_OTLP_TIMEOUT=500 exec \"$0\" \"$@\""});
  ASSERT_TRUE(host.started()) << host.errors();
  ASSERT_EQ(request(host.http_port(), "GET", "/hello").status, 200);
  EXPECT_TRUE(host.wait_for_output("took longer than the export timeout (500 ms)", 5000)) << host.output();
  const auto stop = std::chrono::steady_clock::now();
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - stop, std::chrono::seconds(3)) << "the stop waited for the lookup";
  ::close(dns);
}

// The counter `name` in the host's /metrics (-1 when missing).
int64_t metric(const Host& host, const std::string& name) {
  const std::string m = request(host.admin_port(), "GET", "/metrics").body;
  const std::size_t at = m.find("\n" + name + " ");
  return at == std::string::npos ? -1 : std::stoll(m.substr(at + name.size() + 2));
}

// Three GET /hello, each waited for at `collector` (so each goes in an export of its own).
void three_exports(Host& host, TestUpstream& collector) {
  const auto invocations = [&] {
    const auto spans = spans_at(collector);
    return std::count_if(spans.begin(), spans.end(), [](const SeenSpan& s) { return s.name == "hello"; });
  };
  for (int i = 1; i <= 3; ++i) {
    ASSERT_EQ(request(host.http_port(), "GET", "/hello").status, 200);
    ASSERT_TRUE(eventually([&] { return invocations() == i; }, 10000)) << host.output();
  }
}

TEST(Traces, ExportsGoToAnHttpsCollectorCheckedAgainstItsCaGzippedOnOneKeptConnection) {
  TestUpstream collector("collector");
  TempDir certs;
  make_certificate(certs.path() / "cert.pem", certs.path() / "key.pem", "collector");
  std::ofstream(certs.path() / "both.pem") << certs.read("cert.pem") << certs.read("key.pem");
  // HAProxy from Debian terminates TLS with that certificate in front of the collector.
  const int port = free_port();
  Haproxy tls(certs.path(), port,
              "frontend otlp\n  mode http\n  bind 127.0.0.1:" + std::to_string(port) + " ssl crt " +
                  (certs.path() / "both.pem").string() + "\n  default_backend collector\nbackend collector\n  mode http\n"
                  "  server c 127.0.0.1:" + std::to_string(collector.port()) + "\n");
  ASSERT_TRUE(tls.running()) << "haproxy did not start (scripts/setup.sh installs it)";
  const auto app = [&](const TempDir& dir, const std::filesystem::path& ca) {
    dir.write("nimbus.yaml", "name: secure\nobserve:\n  otlp: {endpoint: \"https://localhost:" + std::to_string(port) +
                                 "/v1/traces\", ca: " + ca.string() +
                                 ", compression: gzip}\nfunctions:\n  hello:\n    runtime: python\n"
                                 "    handler: app.py:hello\n    triggers: [{http: {route: /hello}}]\n");
    dir.write("app.py", "def hello(req, ctx):\n    return 'hi'\n");
  };
  TempDir dir;
  app(dir, certs.path() / "cert.pem");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  // Three exports on one connection.
  ASSERT_NO_FATAL_FAILURE(three_exports(host, collector));
  const auto seen = collector.seen();
  ASSERT_GE(seen.size(), 3u);
  for (const auto& req : seen) {
    EXPECT_EQ(req.headers.at("content-type"), "application/x-protobuf");
    EXPECT_EQ(req.headers.at("content-encoding"), "gzip");
  }
  EXPECT_GE(metric(host, "nimbus_trace_export_requests_total"), 3);
  EXPECT_EQ(metric(host, "nimbus_trace_export_connections_total"), 1) << "a connection per export";
  EXPECT_EQ(metric(host, "nimbus_trace_export_failures_total"), 0);

  // A host that trusts another CA sends nothing to this collector: the handshake fails, counted.
  TempDir other_ca;
  make_certificate(other_ca.path() / "cert.pem", other_ca.path() / "key.pem", "someone-else");
  TempDir wrong_dir;
  app(wrong_dir, other_ca.path() / "cert.pem");
  Host wrong(wrong_dir.path());
  ASSERT_TRUE(wrong.started()) << wrong.errors();
  ASSERT_EQ(request(wrong.http_port(), "GET", "/hello").status, 200);
  EXPECT_TRUE(eventually([&] { return metric(wrong, "nimbus_trace_export_failures_total") > 0; }, 10000));
  EXPECT_TRUE(wrong.wait_for_output("certificate verify failed", 5000)) << wrong.output();
  EXPECT_EQ(collector.seen().size(), seen.size()) << "spans went to a collector the CA does not vouch for";
  EXPECT_EQ(wrong.signal_and_wait(SIGTERM), 0);
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

TEST(Traces, AKeptConnectionTheCollectorClosedIsReplacedWithoutLosingTheBatch) {
  TestUpstream collector("collector");
  TempDir lb;
  // HAProxy in front of the collector closes a client connection idle for 100 ms: every export
  // after the first finds its kept connection closed.
  const int port = free_port();
  Haproxy proxy(lb.path(), port,
                "frontend otlp\n  mode http\n  timeout http-keep-alive 100ms\n  bind 127.0.0.1:" + std::to_string(port) +
                    "\n  default_backend collector\nbackend collector\n  mode http\n  server c 127.0.0.1:" +
                    std::to_string(collector.port()) + "\n");
  ASSERT_TRUE(proxy.running()) << "haproxy did not start (scripts/setup.sh installs it)";
  TempDir dir;
  dir.write("nimbus.yaml", "name: idle\nobserve:\n  otlp: {endpoint: \"http://127.0.0.1:" + std::to_string(port) +
                               "/v1/traces\"}\nfunctions:\n  hello:\n    runtime: python\n"
                               "    handler: app.py:hello\n    triggers: [{http: {route: /hello}}]\n");
  dir.write("app.py", "def hello(req, ctx):\n    return 'hi'\n");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  ASSERT_NO_FATAL_FAILURE(three_exports(host, collector));
  EXPECT_EQ(metric(host, "nimbus_trace_export_failures_total"), 0) << "a closed kept connection failed an export";
  EXPECT_EQ(metric(host, "nimbus_trace_export_connections_total"), 3);
  EXPECT_EQ(metric(host, "nimbus_trace_spans_failed_total"), 0);
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

TEST(Traces, ADeadCollectorCostsNothingButACounter) {
  HeldPort dead;  // bound, never listening: connections are refused
  ASSERT_NE(dead.port(), 0);
  TempDir dir;
  write_pipeline(dir, "http://127.0.0.1:" + std::to_string(dead.port()) + "/v1/traces");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  for (int i = 0; i < 50; ++i) ASSERT_EQ(request(host.http_port(), "POST", "/order", {}, "x").status, 200) << i;
  EXPECT_TRUE(eventually([&] {
    const std::string m = request(host.admin_port(), "GET", "/metrics").body;
    return m.find("nimbus_trace_spans_failed_total 0\n") == std::string::npos &&
           m.find("nimbus_trace_spans_failed_total") != std::string::npos;
  }, 30000)) << request(host.admin_port(), "GET", "/metrics").body;
  EXPECT_TRUE(host.wait_for_output("traces: the collector did not take a batch", 5000)) << host.output();
  EXPECT_EQ(lines_with(host.output(), {"traces: the collector did not take a batch"}), 1);
  EXPECT_EQ(request(host.http_port(), "POST", "/order", {}, "x").status, 200);
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

}  // namespace
}  // namespace nimbus::testing

namespace nimbus::testing {
namespace {

TEST(Cli, VersionIsPrintedByEveryBuild) {
  CommandResult r = run_nimbus({"--version"}, std::filesystem::temp_directory_path());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "nimbus " NIMBUS_VERSION_TEXT "\n");
}

}  // namespace
}  // namespace nimbus::testing
