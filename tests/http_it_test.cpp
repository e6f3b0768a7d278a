// End to end: HTTP behaviour of the real host (status codes, limits, keys, framing).
#include "it_common.h"

namespace nimbus::testing {
namespace {

TEST(Http, ServesHelloAndLogsOneJsonLinePerInvocation) {
  App app(manifest());
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  Response r = request(app.port(), "GET", "/hello");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "Hello, World!");
  EXPECT_EQ(r.header("content-type"), "text/plain; charset=utf-8");
  ASSERT_TRUE(app.host->wait_for_output("\"msg\":\"invocation\""));
  std::string log = app.host->output();
  int lines = 0;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);) {
    if (line.find("\"msg\":\"invocation\"") == std::string::npos) continue;
    ++lines;
    auto o = parse_object(line);
    EXPECT_EQ(o["app"].as_string(), "it");
    EXPECT_EQ(o["function"].as_string(), "hello");
    EXPECT_EQ(o["trigger"].as_string(), "http");
    EXPECT_EQ(o["status"].as_int64(), 200);
    EXPECT_EQ(o["outcome"].as_string(), "success");
    EXPECT_EQ(o["invocation_id"].as_string().size(), 32u);
    EXPECT_TRUE(o.contains("time"));
    EXPECT_TRUE(o.contains("duration_ms"));
  }
  EXPECT_EQ(lines, 1);
}

TEST(Http, RoutesPathParamsQueryHeadersAndKeepAlive) {
  App app(manifest());
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  Response r = request(app.port(), "POST", "/orders/a%20b?x=1&y=two", {{"X-Custom", "v1"}}, "hello");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-echo"), "yes");
  auto o = parse_object(r.body);
  EXPECT_EQ(o["method"].as_string(), "POST");
  EXPECT_EQ(o["path"].as_string(), "/orders/a%20b");
  EXPECT_EQ(o["query"].as_string(), "x=1&y=two");
  EXPECT_EQ(o["params"].as_object()["id"].as_string(), "a b");
  EXPECT_EQ(o["headers"].as_object()["X-Custom"].as_string(), "v1");
  EXPECT_EQ(o["body_size"].as_int64(), 5);

  Response rest = request(app.port(), "PUT", "/files/a/b/c.txt", {}, "x");
  EXPECT_EQ(parse_object(rest.body)["params"].as_object()["path"].as_string(), "a/b/c.txt");

  // Two requests on one keep-alive connection.
  std::string two = "GET /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  std::string raw = send_raw(app.port(), two);
  size_t count = 0;
  for (size_t p = raw.find("Hello, World!"); p != std::string::npos; p = raw.find("Hello, World!", p + 1)) ++count;
  EXPECT_EQ(count, 2u) << raw;
}

TEST(Http, BinaryBodiesRoundTripExactly) {
  App app(manifest());
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  std::string body;
  for (int i = 0; i < 4096; ++i) body.push_back(static_cast<char>(i % 256));
  Response r = request(app.port(), "POST", "/orders/1?raw=1", {{"Content-Type", "application/octet-stream"}}, body);
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.body, body);
  Response status = request(app.port(), "GET", "/orders/1?raw=1&status=201");
  EXPECT_EQ(status.status, 201);
}

TEST(Http, UnknownRouteIs404AndWrongMethodIs405WithAllow) {
  App app(manifest());
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  Response nf = request(app.port(), "GET", "/nope");
  EXPECT_EQ(nf.status, 404);
  EXPECT_EQ(nf.header("content-type"), "application/json");
  auto err = parse_object(nf.body)["error"].as_object();
  EXPECT_EQ(err["code"].as_string(), "not_found");
  EXPECT_EQ(err["invocation_id"].as_string().size(), 32u);
  Response na = request(app.port(), "DELETE", "/hello");
  EXPECT_EQ(na.status, 405);
  EXPECT_EQ(na.header("allow"), "GET, HEAD");
  EXPECT_EQ(parse_object(na.body)["error"].as_object()["code"].as_string(), "method_not_allowed");
  Response head = request(app.port(), "HEAD", "/hello");
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.header("content-length"), "13");
}

TEST(Http, FunctionKeyIsRequiredWhereAuthIsFunction) {
  App app(manifest());
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  auto keys = parse_object(slurp(app.dir.path() / ".nimbus" / "keys.json"));
  std::string key = std::string(keys["functions"].as_object()["secure"].as_string());
  std::string other = std::string(keys["functions"].as_object()["hello"].as_string());
  std::string host_key = std::string(keys["host"].as_string());

  Response missing = request(app.port(), "GET", "/secure");
  EXPECT_EQ(missing.status, 401);
  EXPECT_EQ(parse_object(missing.body)["error"].as_object()["code"].as_string(), "unauthorized");
  EXPECT_EQ(request(app.port(), "GET", "/secure", {{"x-functions-key", "wrong"}}).status, 401);
  EXPECT_EQ(request(app.port(), "GET", "/secure", {{"x-functions-key", other}}).status, 401);
  EXPECT_EQ(request(app.port(), "GET", "/secure", {{"x-functions-key", key}}).status, 200);
  EXPECT_EQ(request(app.port(), "GET", "/secure?code=" + key).status, 200);
  EXPECT_EQ(request(app.port(), "GET", "/secure", {{"x-functions-key", host_key}}).status, 200);
  EXPECT_EQ(request(app.port(), "GET", "/hello").status, 200);  // anonymous stays open
  auto mode = std::filesystem::status(app.dir.path() / ".nimbus" / "keys.json").permissions();
  EXPECT_EQ(mode & std::filesystem::perms::all, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
}

TEST(Http, ExpectContinueGetsTheGoAheadAndFunctionsCannotSetFraming) {
  App app(manifest());
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  int fd = connect_to(app.port());
  ASSERT_GE(fd, 0);
  std::string head = "POST /orders/1?raw=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n";
  ASSERT_EQ(::send(fd, head.data(), head.size(), MSG_NOSIGNAL), static_cast<ssize_t>(head.size()));
  char buf[256];
  ssize_t n = ::recv(fd, buf, sizeof buf, 0);
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string(buf, static_cast<size_t>(n)), "HTTP/1.1 100 Continue\r\n\r\n");
  ASSERT_EQ(::send(fd, "hello", 5, MSG_NOSIGNAL), 5);
  n = ::recv(fd, buf, sizeof buf, 0);
  ::close(fd);
  Response r = parse_response(std::string(buf, static_cast<size_t>(std::max<ssize_t>(n, 0))));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "hello");
}

TEST(Http, MalformedRequestIs400AndTheHostLivesOn) {
  App app(manifest());
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  Response r = parse_response(send_raw(app.port(), "GET /hello HTTP/1.1\r\nHost x\r\n\r\n"));
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(parse_object(r.body)["error"].as_object()["code"].as_string(), "bad_request");
  EXPECT_EQ(request(app.port(), "GET", "/hello").status, 200);
}

TEST(Http, BodyOverTheLimitIs413) {
  App app(manifest("http:\n  max_body: 1KiB\n"));
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  EXPECT_EQ(request(app.port(), "POST", "/orders/1", {}, std::string(1024, 'x')).status, 200);
  Response r = request(app.port(), "POST", "/orders/1", {}, std::string(1025, 'x'));
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(parse_object(r.body)["error"].as_object()["code"].as_string(), "payload_too_large");
}

TEST(Http, HeadersOverTheLimitAre431) {
  App app(manifest("http:\n  max_header: 1KiB\n"));
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  Response r = request(app.port(), "GET", "/hello", {{"X-Big", std::string(2000, 'a')}});
  EXPECT_EQ(r.status, 431);
  EXPECT_EQ(parse_object(r.body)["error"].as_object()["code"].as_string(), "header_fields_too_large");
}

// A request-target that alone passes the header limit is 414 (URI Too Long), not 431.
TEST(Http, ARequestLineOverTheLimitIs414) {
  App app(manifest("http:\n  max_header: 1KiB\n"));
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  Response r = request(app.port(), "GET", "/hello?q=" + std::string(2000, 'a'));
  EXPECT_EQ(r.status, 414) << r.body;
  EXPECT_EQ(parse_object(r.body)["error"].as_object()["code"].as_string(), "uri_too_long");
  EXPECT_EQ(request(app.port(), "GET", "/hello?q=" + std::string(500, 'a')).status, 200);
}

// A transfer coding other than chunked cannot be undone by the server: 501, and nothing runs.
TEST(Http, AnUnknownTransferCodingIs501) {
  App app(manifest());
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  Response r = parse_response(send_raw(app.port(),
                                       "POST /orders/1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                                       "5\r\nhello\r\n0\r\n\r\n"));
  EXPECT_EQ(r.status, 501) << r.body;
  EXPECT_EQ(parse_object(r.body)["error"].as_object()["code"].as_string(), "not_implemented");
  EXPECT_NE(r.body.find("gzip"), std::string::npos) << r.body;
  Response ok = parse_response(send_raw(app.port(),
                                        "POST /orders/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                        "Transfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"));
  EXPECT_EQ(ok.status, 200) << ok.body;
}

TEST(Http, SlowClientIs408AndIdleConnectionsClose) {
  App app(manifest("http:\n  read_timeout: 300ms\n  idle_timeout: 300ms\n"));
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  // Half a request, then silence: the server answers 408 and closes.
  auto start = std::chrono::steady_clock::now();
  Response r = parse_response(send_raw(app.port(), "GET /hello HTTP/1.1\r\nHost: x\r\n", 5000));
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(r.status, 408);
  EXPECT_LT(took, std::chrono::seconds(3));
  // Nothing at all: the connection is closed without a reply.
  EXPECT_EQ(send_raw(app.port(), "", 5000), "");
}

TEST(Http, FunctionOverItsTimeoutIs504) {
  App app(manifest("", {{"sleepy", "    timeout: 200ms\n"}}));
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  auto start = std::chrono::steady_clock::now();
  Response r = request(app.port(), "GET", "/sleep?ms=3000");
  EXPECT_EQ(r.status, 504);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(2500));
  EXPECT_EQ(parse_object(r.body)["error"].as_object()["code"].as_string(), "timeout");
  EXPECT_EQ(request(app.port(), "GET", "/sleep?ms=1").status, 200);
}

TEST(Http, ConcurrencyLimitWithFullWaitQueueIs503WithRetryAfter) {
  App app(manifest("", {{"sleepy", "    concurrency: 1\n    wait_queue: 1\n"}}));
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  auto first = std::async(std::launch::async, [&] { return request(app.port(), "GET", "/sleep?ms=1500"); });
  ASSERT_TRUE(wait_running(app, "sleepy", 1));
  auto second = std::async(std::launch::async, [&] { return request(app.port(), "GET", "/sleep?ms=1"); });
  // The second waits in the queue; the third finds the queue full.
  ASSERT_TRUE(wait_count(app, "sleepy", "waiting", 1));
  Response third = request(app.port(), "GET", "/sleep?ms=1");
  EXPECT_EQ(third.status, 503);
  EXPECT_EQ(third.header("retry-after"), "1");
  EXPECT_EQ(parse_object(third.body)["error"].as_object()["code"].as_string(), "overloaded");
  EXPECT_EQ(first.get().status, 200);
  EXPECT_EQ(second.get().status, 200);
}

TEST(Http, ThrowingFunctionIs500WithInvocationIdAndDetailsOnlyInTheLog) {
  App app(manifest());
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  Response r = request(app.port(), "GET", "/boom");
  EXPECT_EQ(r.status, 500);
  auto err = parse_object(r.body)["error"].as_object();
  EXPECT_EQ(err["code"].as_string(), "function_error");
  std::string id(err["invocation_id"].as_string());
  EXPECT_EQ(id.size(), 32u);
  EXPECT_EQ(r.body.find("hunter2"), std::string::npos);
  ASSERT_TRUE(app.host->wait_for_output("hunter2"));
  std::string log = app.host->output();
  // Both the user's log line and the failure line carry the invocation id.
  std::regex user_line("\"msg\":\"about to fail\"[^\\n]*\"invocation_id\":\"" + id + "\"");
  std::regex fail_line("\"invocation_id\":\"" + id + "\"[^\\n]*\"outcome\":\"error\"[^\\n]*hunter2");
  EXPECT_TRUE(std::regex_search(log, user_line)) << log;
  EXPECT_TRUE(std::regex_search(log, fail_line)) << log;
}


}  // namespace
}  // namespace nimbus::testing
