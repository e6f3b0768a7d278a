// The cloudevents trigger end to end: the real host, a Python function that reports what it
// received, and the CloudEvents SDK from npm (tests/cloudevents/send.js) as the sender, in
// binary, structured and batch mode, plus events the spec does not allow.
#include <cstdio>

#include "it_common.h"

namespace nimbus::testing {
namespace {

constexpr const char* kReceiver = R"(import base64

def receive(req, ctx):
    return {"trigger": req.trigger, "attributes": req.attributes, "metadata": req.metadata,
            "body_base64": base64.b64encode(req.body).decode()}
)";

// What send.js prints: for each case, the events sent and the response.
json::object send_events(int port, const std::string& path) {
  const std::filesystem::path sdk = std::filesystem::path(NIMBUS_SOURCE_DIR) / "tests/cloudevents";
  EXPECT_TRUE(std::filesystem::exists(sdk / "node_modules/cloudevents"))
      << "the CloudEvents SDK is not installed: run scripts/setup.sh (npm ci in tests/cloudevents)";
  const std::string command = "env -i PATH=/usr/bin:/bin node " + (sdk / "send.js").string() + " http://127.0.0.1:" +
                              std::to_string(port) + path + " 2>&1";
  std::string out;
  if (FILE* p = ::popen(command.c_str(), "r")) {
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    EXPECT_EQ(::pclose(p), 0) << out;
  }
  return parse_object(out);
}

// An app folder with its manifest and app.py, and its host.
struct PythonApp {
  PythonApp(const std::string& manifest, const std::string& code) {
    dir.write("nimbus.yaml", manifest);
    dir.write("app.py", code);
    host = std::make_unique<Host>(dir.path());
  }
  TempDir dir;
  std::unique_ptr<Host> host;
  int port() const { return host->http_port(); }
};

json::object reply_body(json::object& c) { return parse_object(std::string(c["got"].as_object()["body"].as_string())); }
int64_t status_of(json::object& c) { return c["got"].as_object()["status"].as_int64(); }

TEST(CloudEventsTrigger, TheSdkSendsInEveryModeAndTheFunctionGetsTheEventsAttributes) {
  PythonApp app("name: ce\nfunctions:\n  receive:\n    runtime: python\n    handler: app.py:receive\n"
                "    triggers:\n      - cloudevents: {path: /events}\n",
                kReceiver);
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  json::object out = send_events(app.port(), "/events");
  ASSERT_FALSE(out.empty());

  // Binary mode: attributes from ce-* headers, the body is the data, extensions in metadata.
  auto& binary = out["binary"].as_object();
  ASSERT_EQ(status_of(binary), 200) << json::serialize(binary);
  auto sent = binary["sent"].as_object();
  auto got = reply_body(binary);
  EXPECT_EQ(got["trigger"].as_string(), "cloudevents");
  auto attributes = got["attributes"].as_object();
  EXPECT_EQ(attributes["id"], sent["id"]);
  EXPECT_EQ(attributes["source"].as_string(), "/shop/orders");
  EXPECT_EQ(attributes["type"].as_string(), "com.example.order.created");
  EXPECT_EQ(attributes["subject"].as_string(), "A-17");
  EXPECT_EQ(binary["sent_time_ms"].as_int64(), attributes["time_ms"].as_int64()) << "the event's own time";
  auto metadata = got["metadata"].as_object();
  EXPECT_EQ(metadata["ce.tenant"].as_string(), "acme co") << "an extension, percent-decoded";
  EXPECT_EQ(metadata["ce.time"], sent["time"]);
  EXPECT_EQ(metadata["ce.specversion"].as_string(), "1.0");
  EXPECT_EQ(metadata["content-type"].as_string(), "application/json");
  EXPECT_EQ(json::parse(base64_decode(got["body_base64"].as_string()).value()), sent["data"]);

  // Structured mode with data_base64: the bytes arrive as they were.
  auto& structured = out["structured"].as_object();
  ASSERT_EQ(status_of(structured), 200) << json::serialize(structured);
  got = reply_body(structured);
  EXPECT_EQ(got["attributes"].as_object()["id"], structured["sent"].as_object()["id"]);
  EXPECT_EQ(got["body_base64"].as_string(), "AAEC/w==");
  EXPECT_EQ(got["metadata"].as_object()["content-type"].as_string(), "application/octet-stream");

  // Batch mode: one invocation per event, each answered in the results.
  auto& batch = out["batch"].as_object();
  ASSERT_EQ(status_of(batch), 200) << json::serialize(batch);
  auto results = reply_body(batch)["results"].as_array();
  auto events = batch["sent"].as_array();
  ASSERT_EQ(results.size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(results[i].as_object()["id"], events[i].as_object()["id"]);
    EXPECT_EQ(results[i].as_object()["status"].as_int64(), 200);
  }

  // Events the spec does not allow: 400 with the reason, and the function is not called.
  auto& invalid = out["invalid"].as_object();
  EXPECT_EQ(status_of(invalid), 400);
  auto error = reply_body(invalid)["error"].as_object();
  EXPECT_EQ(error["code"].as_string(), "invalid_cloudevent");
  EXPECT_NE(std::string(error["message"].as_string()).find("source is missing"), std::string::npos) << error;
  auto& old = out["old_version"].as_object();
  EXPECT_EQ(status_of(old), 400);
  EXPECT_NE(std::string(reply_body(old)["error"].as_object()["message"].as_string()).find("only CloudEvents 1.0"),
            std::string::npos);
  std::string log = app.host->output();
  EXPECT_EQ(log.find("com.example.bad"), std::string::npos);
}

TEST(CloudEventsTrigger, ARouteWithFunctionAuthWantsAKeyAndAFailedEventFailsItsBatch) {
  PythonApp app("name: ce\nfunctions:\n  receive:\n    runtime: python\n    handler: app.py:receive\n"
                "    triggers:\n      - cloudevents: {path: /secure, auth: function}\n"
                "  picky:\n    runtime: python\n    handler: app.py:picky\n"
                "    triggers:\n      - cloudevents: {path: \"/picky/{tenant}\"}\n",
                std::string(kReceiver) +
                    "\ndef picky(req, ctx):\n    if req.attributes['type'] == 'bad':\n        raise ValueError('no')\n"
                    "    return None\n");
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  const std::string event = R"({"specversion":"1.0","id":"e1","source":"/t","type":"ok"})";
  auto r = request(app.port(), "POST", "/secure", {{"content-type", "application/cloudevents+json"}}, event);
  EXPECT_EQ(r.status, 401) << r.body;

  const std::string batch = R"([{"specversion":"1.0","id":"g1","source":"/t","type":"ok"},)"
                            R"({"specversion":"1.0","id":"b1","source":"/t","type":"bad"}])";
  r = request(app.port(), "POST", "/picky/acme", {{"content-type", "application/cloudevents-batch+json"}}, batch);
  EXPECT_EQ(r.status, 500) << r.body;
  auto error = parse_object(r.body)["error"].as_object();
  EXPECT_EQ(error["code"].as_string(), "batch_failed");
  EXPECT_NE(std::string(error["message"].as_string()).find("1 of 2 events failed (b1)"), std::string::npos) << r.body;

  // One bad event in a batch: nothing of it runs.
  const std::string half = R"([{"specversion":"1.0","id":"g2","source":"/t","type":"ok"},{"id":"x"}])";
  r = request(app.port(), "POST", "/picky/acme", {{"content-type", "application/cloudevents-batch+json"}}, half);
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("event 1: specversion is missing"), std::string::npos) << r.body;
  r = request(app.port(), "POST", "/picky/acme", {{"content-type", "application/cloudevents+avro"}}, "x");
  EXPECT_EQ(r.status, 415) << r.body;
}

}  // namespace
}  // namespace nimbus::testing
