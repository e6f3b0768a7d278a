// CloudEvents 1.0 over HTTP, read in each content mode and checked against the spec; the
// cloudevents trigger's manifest keys.
#include "triggers/cloudevents/cloudevent.h"

#include <gtest/gtest.h>
#include <strings.h>

#include "core/text.h"
#include "manifest_test.h"
#include "trigger_settings.h"
#include "triggers/cloudevents/cloudevents_spec.h"

namespace nimbus {
namespace {

Headers binary_headers() {
  return {{"Content-Type", "application/json"}, {"ce-specversion", "1.0"}, {"CE-ID", "42"},
          {"ce-source", "/shop"},              {"ce-type", "order.created"}, {"ce-subject", "A-17"},
          {"ce-time", "2026-12-02T18:53:06.25+01:00"}, {"ce-tenant", "acme%20co%25"}};
}

std::string error_of(const Headers& headers, std::string body, std::string* code = nullptr) {
  auto r = read_cloudevents(headers, std::move(body));
  if (r) return "";
  if (code) *code = r.error().code;
  return r.error().message;
}

TEST(CloudEvent, BinaryModeTakesTheAttributesFromHeadersAndTheBodyAsData) {
  auto r = read_cloudevents(binary_headers(), "{\"total\":9.5}");
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->size(), 1u);
  const CloudEvent& ev = r->front();
  EXPECT_EQ(ev.id, "42");
  EXPECT_EQ(ev.source, "/shop");
  EXPECT_EQ(ev.type, "order.created");
  EXPECT_EQ(ev.subject, "A-17");
  EXPECT_EQ(ev.data, "{\"total\":9.5}");
  EXPECT_EQ(ev.time_ms, *parse_rfc3339_ms("2026-12-02T17:53:06.25Z"));
  EXPECT_EQ(*find_header(ev.attributes, "ce.tenant"), "acme co%") << "percent-decoded";
  EXPECT_EQ(*find_header(ev.attributes, "ce.datacontenttype"), "application/json");
  EXPECT_EQ(*find_header(ev.attributes, "ce.specversion"), "1.0");
  EXPECT_EQ(find_header(ev.attributes, "ce.id"), nullptr) << "id, source, type and subject are fields";
}

TEST(CloudEvent, StructuredModeReadsJsonDataBase64AndExtensions) {
  Headers h{{"content-type", "application/cloudevents+json; charset=utf-8"}};
  auto r = read_cloudevents(h, R"({"specversion":"1.0","id":"1","source":"s","type":"t","n":7,"ok":true,)"
                               R"("data":{"big":12345678901234567890}})");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->front().data, R"({"big":12345678901234567890})");
  EXPECT_EQ(*find_header(r->front().attributes, "ce.n"), "7");
  EXPECT_EQ(*find_header(r->front().attributes, "ce.ok"), "true");
  r = read_cloudevents(h, R"({"specversion":"1.0","id":"1","source":"s","type":"t","data_base64":"AAEC/w=="})");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->front().data, std::string("\0\1\2\xff", 4));
  r = read_cloudevents(h, R"({"specversion":"1.0","id":"1","source":"s","type":"t","datacontenttype":"text/plain","data":"hi"})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->front().data, "hi") << "a string under a type other than JSON is the data itself";
  r = read_cloudevents(h, R"({"specversion":"1.0","id":"1","source":"s","type":"t","data":"hi"})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->front().data, "\"hi\"") << "JSON data is JSON text";
}

TEST(CloudEvent, BatchModeReadsEveryEventOrNone) {
  Headers h{{"Content-Type", "application/cloudevents-batch+json"}};
  auto r = read_cloudevents(h, R"([{"specversion":"1.0","id":"a","source":"s","type":"t"},)"
                               R"({"specversion":"1.0","id":"b","source":"s","type":"t","data":[1]}])");
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[1].id, "b");
  EXPECT_EQ((*r)[1].data, "[1]");
  EXPECT_TRUE(read_cloudevents(h, "[]")->empty());
  EXPECT_NE(error_of(h, R"([{"specversion":"1.0","id":"a","source":"s","type":"t"},{"id":"b"}])").find("event 1: specversion is missing"),
            std::string::npos);
  EXPECT_NE(error_of(h, "{}").find("not a JSON array"), std::string::npos);
}

TEST(CloudEvent, WhatTheSpecDoesNotAllowIsA400NamingIt) {
  auto without = [](std::string_view name) {
    Headers h = binary_headers();
    std::erase_if(h, [&](const Header& x) { return strcasecmp(x.name.c_str(), name.data()) == 0; });
    return h;
  };
  std::string code;
  EXPECT_NE(error_of(without("ce-source"), "x", &code).find("source is missing"), std::string::npos);
  EXPECT_EQ(code, "400");
  EXPECT_NE(error_of(without("ce-id"), "x").find("id is missing"), std::string::npos);
  EXPECT_NE(error_of(without("ce-type"), "x").find("type is missing"), std::string::npos);
  EXPECT_NE(error_of(without("ce-specversion"), "x").find("specversion is missing"), std::string::npos);
  Headers h = binary_headers();
  h.push_back({"ce-bad_name", "x"});
  EXPECT_NE(error_of(h, "x").find("'ce-bad_name' names no valid attribute"), std::string::npos);
  h = binary_headers();
  h[6].value = "yesterday";
  EXPECT_NE(error_of(h, "x").find("time 'yesterday' is not an RFC 3339 time"), std::string::npos);
  h = binary_headers();
  h[7].value = "%zz";
  EXPECT_NE(error_of(h, "x").find("bad percent-encoding"), std::string::npos);
  EXPECT_NE(error_of({{"content-type", "text/plain"}}, "x").find("not a CloudEvent"), std::string::npos);

  Headers s{{"content-type", "application/cloudevents+json"}};
  EXPECT_NE(error_of(s, "{").find("not valid JSON"), std::string::npos);
  EXPECT_NE(error_of(s, R"({"specversion":"0.3","id":"1","source":"s","type":"t"})").find("only CloudEvents 1.0"), std::string::npos);
  EXPECT_NE(error_of(s, R"({"specversion":"1.0","id":"","source":"s","type":"t"})").find("id is missing or empty"), std::string::npos);
  EXPECT_NE(error_of(s, R"({"specversion":"1.0","id":"1","source":"s","type":"t","data":1,"data_base64":"AA=="})").find("both data"),
            std::string::npos);
  EXPECT_NE(error_of(s, R"({"specversion":"1.0","id":"1","source":"s","type":"t","data_base64":"A*=="})").find("not valid base64"),
            std::string::npos);
  EXPECT_NE(error_of(s, R"({"specversion":"1.0","id":"1","source":"s","type":"t","Tenant":"x"})").find("'Tenant' is not a valid name"),
            std::string::npos);
  EXPECT_NE(error_of(s, R"({"specversion":"1.0","id":"1","source":"s","type":"t","x":{"a":1}})").find("is an object"), std::string::npos);
  EXPECT_NE(error_of(s, "[]").find("is not a JSON object"), std::string::npos);
  EXPECT_NE(error_of({{"content-type", "application/cloudevents+avro"}}, "x", &code).find("is not taken"), std::string::npos);
  EXPECT_EQ(code, "415");
}

TEST(CloudEvent, Rfc3339TimesAndBase64) {
  EXPECT_EQ(parse_rfc3339_ms("1970-01-01T00:00:00Z"), 0);
  EXPECT_EQ(parse_rfc3339_ms("1970-01-01T01:00:00.5+01:00"), 500);
  EXPECT_EQ(parse_rfc3339_ms("2000-03-01T00:00:00Z"), 951868800000);
  for (const char* bad : {"2026-02-30T00:00:00Z", "2026-12-02 18:53:06Z", "2026-12-02T18:53:06", "2026-12-02T25:00:00Z",
                          "2026-12-02T18:53:06.Z", "2026-12-02T18:53:06Zx"}) {
    EXPECT_FALSE(parse_rfc3339_ms(bad)) << bad;
  }
  EXPECT_EQ(base64_decode("aGVsbG8="), "hello");
  EXPECT_EQ(base64_decode("aGVsbG8"), "hello");
  EXPECT_EQ(base64_decode(""), "");
  EXPECT_FALSE(base64_decode("a"));
  EXPECT_FALSE(base64_decode("aGV$"));
  EXPECT_EQ(base64_decode(base64(std::string("\0\xff\x10", 3))), std::string("\0\xff\x10", 3));
}

TEST(CloudEventsKeys, PathAndAuthAreReadAndCheckedAndAPathTakenByAnHttpRouteConflicts) {
  auto load = parse(one_function(kBasicFn + "triggers:\n  - cloudevents: {path: \"/events/{tenant}\", auth: function}\n"));
  ASSERT_TRUE(load.app) << load.report();
  const auto& t = settings_of<CloudEventsTriggerSpec>(load.app->functions[0].triggers[0]);
  EXPECT_EQ(t.path, "/events/{tenant}");
  EXPECT_EQ(t.auth, AuthLevel::function);
  const std::string at = "functions.orders.triggers[0].cloudevents";
  expect_diag(parse(one_function(kBasicFn + "triggers:\n  - cloudevents: {auth: function}\n")), at + ".path", "is missing");
  expect_diag(parse(one_function(kBasicFn + "triggers:\n  - cloudevents: {path: events}\n")), at + ".path", "start with '/'");
  expect_diag(parse(one_function(kBasicFn + "triggers:\n  - cloudevents: {path: /e, pth: x}\n")), at + ".pth", "did you mean 'path'?");
  expect_diag(parse(one_function(kBasicFn + "triggers:\n  - cloudevents: {path: /_nimbus/e}\n")), at + ".path", "keeps for itself");
  expect_diag(parse(one_function(kBasicFn + "triggers:\n  - cloudevents: {path: /e}\n  - http: {route: /e, methods: [POST]}\n")),
              "functions.orders.triggers", "already served");
}

}  // namespace
}  // namespace nimbus
