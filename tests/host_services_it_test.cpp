// End to end: host services (state, publish, invoke) from every runtime.
#include "it_common.h"

namespace nimbus::testing {
namespace {

TEST(HostServices, StateWithETagsPublishAndInvokeFromEveryRuntime) {
  TempDir dir;
  dir.write("nimbus.yaml",
            "name: svc\nfunctions:\n"
            "  counter:\n    runtime: native\n    handler: " + test_function("counter").string() + "\n"
            "    concurrency: 8\n    triggers: [{http: {route: /count}}]\n"
            "  py:\n    runtime: python\n    handler: app.py:handle\n    triggers: [{http: {route: /py}}]\n"
            "  js:\n    runtime: node\n    handler: app.js:handle\n    triggers: [{http: {route: /js}}]\n"
            "  listener:\n    runtime: native\n    handler: " + test_function("relay").string() + "\n"
            "    triggers: [{topic: {name: news}}]\n    outputs: {next: {queue: heard}}\n"
            "  relayer:\n    runtime: native\n    handler: " + test_function("relay").string() + "\n"
            "    triggers: [{http: {route: /relayer}}]\n    outputs: {next: {queue: invoked}}\n");
  dir.write("app.py", R"PY(
from nimbus import HostError
def handle(req, ctx):
    first = ctx.state_put("docs", "a", "one", if_match="")
    try:
        ctx.state_put("docs", "a", "again", if_match="")
        second = "no conflict?"
    except HostError as e:
        second = "conflict" if e.conflict else str(e)
    value, etag = ctx.state_get("docs", "a")
    missing = ctx.state_get("docs", "nothing")
    counted = ctx.invoke("counter", "").decode()
    for k in ["item/2", "item/1", "item/3", "other"]:
        ctx.state_put("list", k, "v-" + k)
    ctx.state_put("list", "item/bin", b"\xff\x00")
    listed = [[k, v.hex() if k == "item/bin" else v.decode(), e] for k, v, e in ctx.state_list("list", prefix="item/")]
    two = [k for k, _, _ in ctx.state_list("list", prefix="item/", limit=2)]
    try:
        ctx.state_list("list", limit=5000)
        too_many = "accepted"
    except HostError as e:
        too_many = str(e)
    return {"first": first, "second": second, "value": value.decode(), "etag": etag, "missing": missing,
            "counted": counted, "listed": listed, "two": two, "too_many": too_many}
)PY");
  dir.write("app.js", R"JS(
exports.handle = async (req, ctx) => {
  await ctx.statePut('docs', 'js', 'from node');
  const got = await ctx.stateGet('docs', 'js');
  const eventId = await ctx.publish('news', 'extra', { type: 'headline', subject: 'js/1' });
  await ctx.invoke('relayer', 'via-invoke');
  let conflict = false;
  try { await ctx.statePut('docs', 'js', 'x', { ifMatch: 'stale' }); } catch (e) { conflict = e.conflict; }
  const listed = (await ctx.stateList('list', { prefix: 'item/' })).map((i) => i.key + '=' + i.value.toString('hex'));
  return { value: got.value.toString(), eventId, conflict, listed };
};
)JS");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();

  // 24 increments from 8 at a time: the ETag loop loses no update.
  std::vector<std::future<Response>> calls;
  for (int i = 0; i < 24; ++i) {
    calls.push_back(std::async(std::launch::async, [&] { return request(host.http_port(), "GET", "/count?key=k"); }));
  }
  std::set<std::string> seen;
  for (auto& c : calls) {
    Response r = c.get();
    ASSERT_EQ(r.status, 200) << r.body;
    seen.insert(r.body);
  }
  EXPECT_EQ(seen.size(), 24u) << "every increment saw a different count";
  EXPECT_EQ(request(host.http_port(), "GET", "/count?key=k").body, "25");

  Response py = request(host.http_port(), "GET", "/py");
  ASSERT_EQ(py.status, 200) << py.body << host.output();
  auto p = parse_object(py.body);
  EXPECT_EQ(p["first"].as_string(), "1");
  EXPECT_EQ(p["second"].as_string(), "conflict");
  EXPECT_EQ(p["value"].as_string(), "one");
  EXPECT_EQ(p["etag"].as_string(), "1");
  EXPECT_TRUE(p["missing"].is_null());
  EXPECT_EQ(p["counted"].as_string(), "1") << "invoke ran the native counter (key 'default')";
  // state.list: the keys under a prefix in key order, values (binary ones too) and ETags.
  EXPECT_EQ(json::serialize(p["listed"]),
            R"([["item/1","v-item/1","1"],["item/2","v-item/2","1"],["item/3","v-item/3","1"],["item/bin","ff00","1"]])");
  EXPECT_EQ(json::serialize(p["two"]), R"(["item/1","item/2"])");
  EXPECT_NE(p["too_many"].as_string().find("not between 1 and 1000"), std::string::npos) << p["too_many"];

  Response js = request(host.http_port(), "GET", "/js");
  ASSERT_EQ(js.status, 200) << js.body << host.output();
  auto j = parse_object(js.body);
  EXPECT_EQ(j["value"].as_string(), "from node");
  EXPECT_TRUE(j["conflict"].as_bool());
  EXPECT_EQ(json::serialize(j["listed"]), R"(["item/1=762d6974656d2f31","item/2=762d6974656d2f32","item/3=762d6974656d2f33","item/bin=ff00"])");
  EXPECT_EQ(j["eventId"].as_string().size(), 32u);
  Admin admin{host.admin_port(), host.admin_token()};
  ASSERT_TRUE(admin.wait([&] { return admin.peek("heard").size() == 1; }));
  EXPECT_EQ(admin.peek("heard")[0]["payload"].as_string(), "extra|listener");
  auto invoked = admin.peek("invoked");  // an invoked function's outputs are committed too
  ASSERT_EQ(invoked.size(), 1u);
  EXPECT_EQ(invoked[0]["payload"].as_string(), "via-invoke|relayer");
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

}  // namespace
}  // namespace nimbus::testing

namespace nimbus::testing {
namespace {

// The same ETag loop from a native function in a worker process: host calls cross the
// protocol, answered on the worker's reader thread (concurrency 1) or to waiting runner
// threads (concurrency 4).
TEST(HostServices, NativeFunctionsInWorkerProcessesReachThemToo) {
  TempDir dir;
  std::string lib = test_function("counter").string();
  dir.write("nimbus.yaml", "name: iso\nfunctions:\n"
                           "  one:\n    runtime: native\n    handler: " + lib + "\n    isolation: process\n"
                           "    max_instances: 1\n    concurrency: 1\n    triggers: [{http: {route: /one}}]\n"
                           "  many:\n    runtime: native\n    handler: " + lib + "\n    isolation: process\n"
                           "    max_instances: 1\n    concurrency: 4\n    triggers: [{http: {route: /many}}]\n");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  for (const char* route : {"/one", "/many"}) {
    std::vector<std::future<Response>> calls;
    for (int i = 0; i < 12; ++i) {
      calls.push_back(std::async(std::launch::async, [&, route] {
        return request(host.http_port(), "GET", std::string(route) + "?key=shared");
      }));
    }
    for (auto& c : calls) {
      Response r = c.get();
      ASSERT_EQ(r.status, 200) << route << ": " << r.body << host.output();
    }
  }
  EXPECT_EQ(request(host.http_port(), "GET", "/one?key=shared").body, "25") << "24 increments, none lost";
  EXPECT_EQ(request(host.http_port(), "GET", "/many?invoke=one").body, "1") << "invoke crosses too (key 'default')";
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

}  // namespace
}  // namespace nimbus::testing

namespace nimbus::testing {
namespace {

// Host services over loopback HTTP with the instance's own token: what a worker in any
// language can use without speaking host_call frames.
TEST(HostServices, TheLoopbackApiServesWorkersWithTheirInstanceToken) {
  TempDir dir;
  dir.write("nimbus.yaml", "name: api\nfunctions:\n  f:\n    runtime: python\n    handler: app.py:handle\n"
                           "    triggers: [{http: {route: /f}}]\n");
  dir.write("app.py", R"PY(
import os, urllib.request, urllib.error
def call(op, query, body=b"", token=None):
    url = os.environ["NIMBUS_API"] + "/v1/" + op + "?" + query
    headers = {"authorization": "Bearer " + (token or os.environ["NIMBUS_API_TOKEN"])}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST", headers=headers)) as r:
            return [r.status, r.headers.get("x-nimbus-etag"), r.read().decode()]
    except urllib.error.HTTPError as e:
        return [e.code, None, e.read().decode()]
def handle(req, ctx):
    return {"put": call("state.put", "store=s&key=k", b"v1"),
            "create_only": call("state.put", "store=s&key=k&if_match=", b"v2")[0],
            "get": call("state.get", "store=s&key=k"),
            "stranger": call("state.get", "store=s&key=k", token="not-a-token")[0],
            "unknown_op": call("teleport", "x=1")[0]}
)PY");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Response r = request(host.http_port(), "GET", "/f");
  ASSERT_EQ(r.status, 200) << r.body << host.output();
  auto o = parse_object(r.body);
  EXPECT_EQ(o["put"].as_array()[0].as_int64(), 200);
  EXPECT_EQ(o["put"].as_array()[1].as_string(), "1");
  EXPECT_EQ(o["create_only"].as_int64(), 409);
  EXPECT_EQ(o["get"].as_array()[2].as_string(), "v1");
  EXPECT_EQ(o["stranger"].as_int64(), 401);
  EXPECT_EQ(o["unknown_op"].as_int64(), 400);
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

}  // namespace
}  // namespace nimbus::testing
