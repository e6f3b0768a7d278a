#include "runtime/process/frame.h"

#include "core/text.h"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <random>

namespace nimbus {
namespace {

namespace json = boost::json;

std::string encode(FrameType type, const json::object& header, std::string_view body) {
  std::string out;
  encode_frame(type, header, body, out);
  return out;
}

std::string u32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}

TEST(FrameTest, RoundTripsHeaderAndBinaryBody) {
  std::string body("a\0b\xff\n", 5);
  std::string wire = encode(FrameType::invoke, {{"id", "abc"}, {"attempt", 2}}, body);
  EXPECT_EQ(wire.size(), 4 + 1 + 4 + json::serialize(json::object{{"id", "abc"}, {"attempt", 2}}).size() + 5);
  FrameDecoder d;
  d.feed(wire.data(), wire.size());
  Frame f;
  std::string err;
  ASSERT_EQ(d.next(f, err), FrameDecoder::Status::frame) << err;
  EXPECT_EQ(f.type, FrameType::invoke);
  EXPECT_EQ(f.header.at("id").as_string(), "abc");
  EXPECT_EQ(f.header.at("attempt").as_int64(), 2);
  EXPECT_EQ(f.body, body);
  EXPECT_EQ(d.next(f, err), FrameDecoder::Status::need_more);
  EXPECT_EQ(d.buffered(), 0u);
}

TEST(FrameTest, HeadersWrittenAsTextDecodeToTheSameStrings) {
  // Every byte value that JSON must escape, quotes, backslashes and UTF-8 that must not be.
  std::string tricky;
  for (int c = 0; c < 0x20; ++c) tricky.push_back(static_cast<char>(c));
  tricky += "\"quoted\" back\\slash caf\xc3\xa9 \x7f end";
  std::string wire = "garbage before";  // begin_frame appends: the frame starts mid-buffer
  const std::size_t start = begin_frame(FrameType::result, wire);
  wire += "{\"a\":";
  json_string(wire, tricky);
  wire += ",\"b\":";
  json_string(wire, "");
  wire += "}";
  std::string body("x\0y", 3);
  end_frame(start, body, wire);
  FrameDecoder d;
  d.feed(wire.data() + start, wire.size() - start);
  Frame f;
  std::string err;
  ASSERT_EQ(d.next(f, err), FrameDecoder::Status::frame) << err;
  EXPECT_EQ(f.type, FrameType::result);
  EXPECT_EQ(f.header.at("a").as_string(), tricky);
  EXPECT_EQ(f.header.at("b").as_string(), "");
  EXPECT_EQ(f.body, body);
  EXPECT_EQ(d.buffered(), 0u);
}

TEST(FrameTest, BytesThatAreNotUtf8AreWrittenAsReplacementCharacters) {
  // A Latin-1 header value from a client must not make a frame no JSON reader accepts.
  const std::string fffd = "\xef\xbf\xbd";
  struct Case {
    std::string in, out;
  };
  for (const Case& c : std::vector<Case>{
           {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"},
           {"caf\xe9 ok", "caf" + fffd + " ok"},                  // Latin-1
           {"\x80", fffd},                                        // a lone continuation byte
           {"\xc3", fffd},                                        // cut short at the end
           {"\xe2\x82x", fffd + fffd + "x"},                      // cut short mid-string
           {"\xc0\x80", fffd + fffd},                              // overlong NUL
           {"\xe0\x80\x80", fffd + fffd + fffd},                   // overlong
           {"\xed\xa0\x80", fffd + fffd + fffd},                   // a surrogate
           {"\xf4\x90\x80\x80", fffd + fffd + fffd + fffd},          // above U+10FFFF
           {"\xf4\x8f\xbf\xbf", "\xf4\x8f\xbf\xbf"},                // U+10FFFF itself
           {"\xff\xfe", fffd + fffd},
           {"long ascii run then \xff after eight-byte blocks", "long ascii run then " + fffd + " after eight-byte blocks"},
       }) {
    std::string text;
    json_string(text, c.in);
    boost::system::error_code ec;
    json::value v = json::parse(text, ec);
    ASSERT_FALSE(ec) << text << ": " << ec.message();
    EXPECT_EQ(v.as_string(), c.out) << text;
  }
}

TEST(FrameTest, AnyBytesBecomeAJsonStringThatStrictReadersAcceptAndUtf8SurvivesUnchanged) {
  std::mt19937 rng(11);
  for (int round = 0; round < 20000; ++round) {
    std::string s(static_cast<size_t>(rng() % 24), '\0');
    for (auto& c : s) c = static_cast<char>(rng() % 4 == 0 ? rng() : 0x80 + rng() % 0x80);
    // Half behind a run of ASCII (checked eight bytes at a time), up to where the rest begins.
    if (round % 2 == 1) s = std::string(static_cast<size_t>(rng() % 20), 'a') + s;
    std::string text;
    json_string(text, s);
    boost::system::error_code ec;
    json::value v = json::parse(text, ec);  // strict: rejects what is not UTF-8
    ASSERT_FALSE(ec) << round;
    // Boost.JSON is the oracle for valid_utf8: a string of the same bytes, none needing an
    // escape, parses exactly when it is UTF-8.
    std::string plain;
    for (char c : s) {
      if (static_cast<unsigned char>(c) >= 0x20 && c != '"' && c != '\\') plain.push_back(c);
    }
    json::parse("\"" + plain + "\"", ec);
    ASSERT_EQ(valid_utf8(plain), !ec) << round;
    if (valid_utf8(s)) {
      ASSERT_EQ(v.as_string(), s) << round;
    }
    ASSERT_TRUE(valid_utf8(std::string(v.as_string()))) << round;
  }
}

TEST(FrameTest, DecodesFramesFedOneByteAtATime) {
  std::string wire;
  for (int i = 0; i < 50; ++i) encode_frame(FrameType::log, {{"n", i}}, std::string(static_cast<size_t>(i), 'x'), wire);
  FrameDecoder d;
  Frame f;
  std::string err;
  int seen = 0;
  for (char c : wire) {
    d.feed(&c, 1);
    while (true) {
      auto st = d.next(f, err);
      ASSERT_NE(st, FrameDecoder::Status::error) << err;
      if (st == FrameDecoder::Status::need_more) break;
      EXPECT_EQ(f.header.at("n").as_int64(), seen);
      EXPECT_EQ(f.body.size(), static_cast<size_t>(seen));
      ++seen;
    }
  }
  EXPECT_EQ(seen, 50);
}

TEST(FrameTest, ManyLargeFramesKeepTheBufferBounded) {
  FrameDecoder d;
  Frame f;
  std::string err;
  std::string body(100000, 'z');
  for (int i = 0; i < 100; ++i) {
    std::string wire = encode(FrameType::result, {{"i", i}}, body);
    d.feed(wire.data(), wire.size());
    ASSERT_EQ(d.next(f, err), FrameDecoder::Status::frame) << err;
    EXPECT_EQ(f.body.size(), body.size());
  }
  EXPECT_EQ(d.buffered(), 0u);
}

struct Malformed {
  std::string name;
  std::string bytes;
  std::string expect;
};

TEST(FrameTest, MalformedInputIsAnErrorThatNamesTheProblem) {
  std::vector<Malformed> cases = {
      {"length too small", u32(3) + "abc", "too small"},
      {"over the limit", u32(2000) + std::string(2000, 'x'), "over the limit of 1024"},
      {"unknown type", u32(7) + std::string(1, '\x2a') + u32(2) + "{}", "unknown frame type 42"},
      {"type zero", u32(7) + std::string(1, '\0') + u32(2) + "{}", "unknown frame type 0"},
      {"header past the end", u32(7) + std::string(1, '\x05') + u32(99) + "{}", "runs past the end"},
      {"header not json", u32(8) + std::string(1, '\x05') + u32(3) + "{x}", "not a JSON object"},
      {"header an array", u32(7) + std::string(1, '\x05') + u32(2) + "[]", "not a JSON object"},
  };
  for (const auto& c : cases) {
    FrameDecoder d(1024);
    d.feed(c.bytes.data(), c.bytes.size());
    Frame f;
    std::string err;
    EXPECT_EQ(d.next(f, err), FrameDecoder::Status::error) << c.name;
    EXPECT_NE(err.find(c.expect), std::string::npos) << c.name << ": " << err;
    // A failed stream stays failed: nothing after garbage is trusted.
    std::string good = encode(FrameType::heartbeat, {}, "");
    d.feed(good.data(), good.size());
    EXPECT_EQ(d.next(f, err), FrameDecoder::Status::error) << c.name;
  }
}

TEST(FrameTest, OversizedLengthFailsBeforeTheBytesArrive) {
  FrameDecoder d(1024);
  std::string head = u32(1u << 30);  // a 1 GiB claim: refused at once, nothing buffered for it
  d.feed(head.data(), head.size());
  Frame f;
  std::string err;
  EXPECT_EQ(d.next(f, err), FrameDecoder::Status::error);
}

TEST(FrameTest, RandomBytesNeverCrashTheDecoder) {
  std::mt19937 rng(7);
  for (int round = 0; round < 2000; ++round) {
    std::string junk(static_cast<size_t>(rng() % 64), '\0');
    for (auto& c : junk) c = static_cast<char>(rng());
    FrameDecoder d(4096);
    d.feed(junk.data(), junk.size());
    Frame f;
    std::string err;
    for (int i = 0; i < 8; ++i) {
      auto st = d.next(f, err);
      if (st != FrameDecoder::Status::frame) break;
      EXPECT_GE(static_cast<int>(f.type), 1);
      EXPECT_LE(static_cast<int>(f.type), 10);
    }
  }
}

// ---------------------------------------------------------------- typed headers

namespace typed {

Frame decode_one(FrameType typed, const std::string& wire, FrameDecoder::Status expect = FrameDecoder::Status::frame,
                 std::string* error = nullptr) {
  FrameDecoder d;
  d.decode_typed(typed);
  d.feed(wire.data(), wire.size());
  Frame f;
  std::string err;
  EXPECT_EQ(d.next(f, err), expect) << err;
  if (error) *error = err;
  return f;
}

std::string tricky(std::string_view base) {
  std::string s(base);
  s += " \"q\" \\ \n\t\x01\x1f caf\xc3\xa9 \xf0\x9f\x98\x80 end";
  return s;
}

TEST(FrameTypedTest, AnInvokeFrameDecodesStraightIntoTheInvocation) {
  Invocation inv;
  inv.id = tricky("id");
  inv.trigger = TriggerKind::named("queue");
  inv.attempt = 3;
  inv.event_id = tricky("event");
  inv.message_id = "m-42";
  inv.source = tricky("/source");
  inv.type = "com.example.order";
  inv.subject = tricky("subject");
  inv.time = WallTime(std::chrono::milliseconds(1763729999000));
  inv.enqueued_ms = 1763729998000;
  inv.started = TimePoint(std::chrono::seconds(100));
  inv.deadline = inv.started + std::chrono::milliseconds(2500);
  inv.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  inv.metadata = {{"a", tricky("1")}, {tricky("k"), ""}};
  inv.payload = std::string("bin\0ary\xff", 8);
  inv.http = HttpRequest{"POST", "/orders/7%20x", "a=1&b=%22", {{"Host", "x"}, {"X-Tricky", tricky("v")}}, {{"id", "7"}}};
  std::string wire = "prefix";  // encode_invoke appends
  encode_invoke(inv, wire);
  wire.erase(0, 6);

  Frame f = decode_one(FrameType::invoke, wire);
  ASSERT_EQ(f.type, FrameType::invoke);
  EXPECT_TRUE(f.header.empty());
  const InvokeHeader& h = f.invoke;
  EXPECT_EQ(h.inv.id, inv.id);
  EXPECT_EQ(h.trigger, "queue");
  EXPECT_EQ(h.attempt, 3);
  EXPECT_EQ(h.deadline_ms, 1763729999000 + 2500);
  EXPECT_EQ(h.time_ms, 1763729998000);
  EXPECT_EQ(h.inv.event_id, inv.event_id);
  EXPECT_EQ(h.inv.message_id, "m-42");
  EXPECT_EQ(h.inv.source, inv.source);
  EXPECT_EQ(h.inv.type, inv.type);
  EXPECT_EQ(h.inv.subject, inv.subject);
  EXPECT_EQ(h.inv.traceparent, inv.traceparent);
  ASSERT_EQ(h.inv.metadata.size(), 2u);
  EXPECT_EQ(h.inv.metadata[0].name, "a");
  EXPECT_EQ(h.inv.metadata[0].value, inv.metadata[0].value);
  EXPECT_EQ(h.inv.metadata[1].name, inv.metadata[1].name);
  EXPECT_EQ(h.inv.metadata[1].value, "");
  ASSERT_TRUE(h.inv.http.has_value());
  EXPECT_EQ(h.inv.http->method, "POST");
  EXPECT_EQ(h.inv.http->path, "/orders/7%20x");
  EXPECT_EQ(h.inv.http->query, "a=1&b=%22");
  ASSERT_EQ(h.inv.http->headers.size(), 2u);
  EXPECT_EQ(h.inv.http->headers[1].name, "X-Tricky");
  EXPECT_EQ(h.inv.http->headers[1].value, inv.http->headers[1].value);
  ASSERT_EQ(h.inv.http->params.size(), 1u);
  EXPECT_EQ(h.inv.http->params[0].value, "7");
  EXPECT_EQ(f.body, inv.payload);

  // The same bytes read as a tree say the same: the text encoder writes the documented format.
  Frame tree = decode_one(FrameType::result, wire);  // typed for results only: invoke stays a tree
  EXPECT_EQ(tree.header.at("id").as_string(), inv.id);
  EXPECT_EQ(tree.header.at("attributes").as_object().at("subject").as_string(), inv.subject);
  EXPECT_EQ(tree.header.at("http").as_object().at("headers").as_array()[1].as_array()[1].as_string(),
            inv.http->headers[1].value);

  // Without http, there is none; without a message id, it is absent.
  Invocation plain;
  plain.id = "p";
  wire.clear();
  encode_invoke(plain, wire);
  Frame p = decode_one(FrameType::invoke, wire);
  EXPECT_EQ(p.invoke.inv.id, "p");
  EXPECT_FALSE(p.invoke.inv.http.has_value());
  EXPECT_TRUE(p.invoke.inv.message_id.empty());
}

TEST(FrameTypedTest, AResultFrameDecodesStraightIntoItsParts) {
  HttpReply reply{201, {{"content-type", "text/plain"}, {"x-tricky", tricky("v")}}, std::string("b\0dy", 4)};
  std::string wire;
  encode_http_result(tricky("id"), reply, wire);
  Frame f = decode_one(FrameType::result, wire);
  ASSERT_EQ(f.type, FrameType::result);
  EXPECT_EQ(f.result.id, tricky("id"));
  EXPECT_EQ(f.result.status, "ok");
  EXPECT_TRUE(f.result.has_http);
  EXPECT_FALSE(f.result.has_error);
  EXPECT_EQ(f.result.http_status, 201);
  ASSERT_EQ(f.result.headers.size(), 2u);
  EXPECT_EQ(f.result.headers[1].value, tricky("v"));
  EXPECT_FALSE(f.result.malformed_headers);
  EXPECT_EQ(f.body, reply.body);

  wire.clear();
  encode_frame(FrameType::result,
               {{"id", "e1"}, {"status", "error"}, {"error", {{"type", "ValueError"}, {"message", "bad"}, {"stack", "at x"}}}},
               "", wire);
  Frame e = decode_one(FrameType::result, wire);
  EXPECT_EQ(e.result.status, "error");
  EXPECT_TRUE(e.result.has_error);
  EXPECT_EQ(e.result.error_type, "ValueError");
  EXPECT_EQ(e.result.error_message, "bad");
  EXPECT_EQ(e.result.error_stack, "at x");
  EXPECT_FALSE(e.result.has_http);
}

TEST(FrameTypedTest, LongKeysAndStringsArriveWholeThoughTheParserHandsThemOverInParts) {
  // Boost.JSON hands long strings with escapes to the handler in parts.
  std::string key = tricky(std::string(20000, 'k'));
  std::string value = tricky(std::string(50000, 'v')) + std::string(3000, '\n');
  Invocation inv;
  inv.id = value;
  inv.metadata = {{key, value}};
  std::string wire;
  encode_invoke(inv, wire);
  Frame f = decode_one(FrameType::invoke, wire);
  EXPECT_EQ(f.invoke.inv.id, value);
  ASSERT_EQ(f.invoke.inv.metadata.size(), 1u);
  EXPECT_EQ(f.invoke.inv.metadata[0].name, key);
  EXPECT_EQ(f.invoke.inv.metadata[0].value, value);
}

std::string frame_with(FrameType type, std::string_view header) {
  std::string wire;
  std::size_t start = begin_frame(type, wire);
  wire += header;
  end_frame(start, "", wire);
  return wire;
}

TEST(FrameTypedTest, AHeaderThatIsNotOneJsonObjectIsAMalformedFrame) {
  for (std::string_view header : {"[1]", "\"x\"", "7", "null", "{\"id\":", "{} {}", "{\"id\":\"a\",}", "{\"id\":\"\\x\"}",
                                  "{\"id\":\"\xff\"}"}) {
    std::string error;
    decode_one(FrameType::result, frame_with(FrameType::result, header), FrameDecoder::Status::error, &error);
    EXPECT_NE(error.find("result frame header is not a JSON object"), std::string::npos) << header << ": " << error;
  }
}

TEST(FrameTypedTest, UnknownKeysAreSkippedAndValuesOfTheWrongKindCountAsAbsent) {
  Frame f = decode_one(FrameType::result, frame_with(FrameType::result, R"({
      "extra": {"id": "nested-not-mine", "http": {"status": 500}, "list": [["a", "b"], {"id": "x"}]},
      "id": "mine", "later": [1, 2.5, null, true, {"status": "error"}],
      "http": {"status": 200.5, "unknown": {"headers": [["no", "no"]]}, "headers": [["a", "1"]]},
      "status": 7})"));
  EXPECT_EQ(f.result.id, "mine");
  EXPECT_EQ(f.result.status, "");          // a number where a string belongs: absent
  EXPECT_EQ(f.result.http_status, 200);    // a double where an integer belongs: absent
  ASSERT_EQ(f.result.headers.size(), 1u);  // not the ones under "unknown"
  EXPECT_EQ(f.result.headers[0].name, "a");
  EXPECT_FALSE(f.result.malformed_headers);

  Frame i = decode_one(FrameType::invoke, frame_with(FrameType::invoke,
      R"({"id": "i", "attempt": "3", "deadline_ms": 18446744073709551615, "trigger": ["http"],
          "attributes": "none", "http": {"headers": {"Host": "h", "X": "y"}, "params": [["id", "7"]]}})"));
  EXPECT_EQ(i.invoke.inv.id, "i");
  EXPECT_EQ(i.invoke.attempt, 1);
  EXPECT_EQ(i.invoke.deadline_ms, 0);
  EXPECT_EQ(i.invoke.trigger, "");
  ASSERT_TRUE(i.invoke.inv.http.has_value());
  ASSERT_EQ(i.invoke.inv.http->headers.size(), 2u);  // pairs may be written as an object too
  EXPECT_EQ(i.invoke.inv.http->headers[1].name, "X");
  EXPECT_EQ(i.invoke.inv.http->headers[1].value, "y");
  ASSERT_EQ(i.invoke.inv.http->params.size(), 1u);
}

TEST(FrameTypedTest, HeaderListsHoldingAnythingButPairsOfStringsAreFlaggedAndKeepTheGoodPairs) {
  struct Case {
    std::string headers;
    bool malformed;
    std::size_t good;
  };
  for (const Case& c : std::vector<Case>{{R"([["a","1"],["b","2"]])", false, 2},
                                         {R"({"a":"1"})", false, 1},
                                         {R"([])", false, 0},
                                         {R"([["a"]])", true, 0},
                                         {R"([["a","1","x"],["b","2"]])", true, 1},
                                         {R"([["a",1]])", true, 0},
                                         {R"(["a"])", true, 0},
                                         {R"([[["x"],"y"],["b","2"]])", true, 1},
                                         {R"([[{"x":"y"},"y"]])", true, 0},
                                         {R"({"a":1,"b":"2"})", true, 1},
                                         {R"({"a":{"b":"c"}})", true, 0},
                                         {R"([null])", true, 0}}) {
    Frame f = decode_one(FrameType::result,
                         frame_with(FrameType::result, R"({"id":"x","http":{"status":200,"headers":)" + c.headers + "}}"));
    EXPECT_EQ(f.result.malformed_headers, c.malformed) << c.headers;
    EXPECT_EQ(f.result.headers.size(), c.good) << c.headers;
  }
}

// A differential check: random headers, read typed and read as a tree by the rules the typed
// reader follows, agree.
class RandomJson {
 public:
  explicit RandomJson(uint32_t seed) : rng_(seed) {}

  json::object object(int depth) {
    static const char* kKeys[] = {"id", "status", "error", "http", "type", "message", "stack", "headers",
                                  "trigger", "attempt", "deadline_ms", "traceparent", "attributes", "metadata",
                                  "method", "path", "query", "params", "source", "subject", "time_ms", "zz"};
    json::object o;
    int n = static_cast<int>(rng_() % 6);
    for (int i = 0; i < n; ++i) o[kKeys[rng_() % std::size(kKeys)]] = value(depth + 1);
    return o;
  }

  json::value value(int depth) {
    switch (rng_() % (depth > 3 ? 6 : 9)) {
      case 0: return json::value(text());
      case 1: return json::value(static_cast<int64_t>(rng_() % 700) - 50);
      case 2: return json::value(uint64_t{1} << 63 | rng_());
      case 3: return json::value(1.5);
      case 4: return json::value(rng_() % 2 == 0);
      case 5: return json::value(nullptr);
      case 6: return json::value(object(depth));
      case 7: {  // a list of (mostly) pairs
        json::array a;
        int n = static_cast<int>(rng_() % 4);
        for (int i = 0; i < n; ++i) {
          if (rng_() % 4 == 0) a.push_back(value(depth + 1));
          else a.push_back(json::array{json::value(text()), rng_() % 5 == 0 ? value(depth + 1) : json::value(text())});
        }
        return a;
      }
      default: {
        json::array a;
        int n = static_cast<int>(rng_() % 3);
        for (int i = 0; i < n; ++i) a.push_back(value(depth + 1));
        return a;
      }
    }
  }

 private:
  std::string text() {
    static const char* kTexts[] = {"", "a", "ok", "error", "http", "\"\\\n", "caf\xc3\xa9", "x y z"};
    return kTexts[rng_() % std::size(kTexts)];
  }
  std::mt19937 rng_;
};

std::string text_or_empty(const json::object& o, std::string_view key) {
  auto* v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

// What the typed reader makes of a pairs value: {good pairs, malformed}.
std::pair<Headers, bool> expected_pairs(const json::value* v) {
  Headers out;
  bool bad = false;
  if (v && v->is_array()) {
    for (const auto& p : v->as_array()) {
      const bool ok = p.is_array() && p.as_array().size() == 2 && p.as_array()[0].is_string() && p.as_array()[1].is_string();
      if (ok) out.push_back({std::string(p.as_array()[0].as_string()), std::string(p.as_array()[1].as_string())});
      else bad = true;
    }
  } else if (v && v->is_object()) {
    for (const auto& [k, val] : v->as_object()) {
      if (val.is_string()) out.push_back({std::string(k), std::string(val.as_string())});
      else bad = true;
    }
  }
  return {out, bad};
}

bool same(const Headers& a, const Headers& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].name != b[i].name || a[i].value != b[i].value) return false;
  }
  return true;
}

TEST(FrameTypedTest, RandomHeadersReadTypedAgreeWithTheTree) {
  RandomJson gen(20261121);
  for (int round = 0; round < 3000; ++round) {
    json::object root = gen.object(0);
    const std::string text = json::serialize(root);

    Frame r = decode_one(FrameType::result, frame_with(FrameType::result, text));
    const ResultHeader& h = r.result;
    ASSERT_EQ(h.id, text_or_empty(root, "id")) << text;
    ASSERT_EQ(h.status, text_or_empty(root, "status")) << text;
    const json::object* err = root.contains("error") && root.at("error").is_object() ? &root.at("error").as_object() : nullptr;
    ASSERT_EQ(h.has_error, err != nullptr) << text;
    ASSERT_EQ(h.error_message, err ? text_or_empty(*err, "message") : "") << text;
    const json::object* http = root.contains("http") && root.at("http").is_object() ? &root.at("http").as_object() : nullptr;
    ASSERT_EQ(h.has_http, http != nullptr) << text;
    const json::value* status = http ? http->if_contains("status") : nullptr;
    ASSERT_EQ(h.http_status, status && status->is_int64() ? status->as_int64() : 200) << text;
    auto [pairs, bad] = expected_pairs(http ? http->if_contains("headers") : nullptr);
    ASSERT_TRUE(same(h.headers, pairs)) << text;
    ASSERT_EQ(h.malformed_headers, bad) << text;

    Frame i = decode_one(FrameType::invoke, frame_with(FrameType::invoke, text));
    const InvokeHeader& v = i.invoke;
    ASSERT_EQ(v.inv.id, text_or_empty(root, "id")) << text;
    ASSERT_EQ(v.trigger, text_or_empty(root, "trigger")) << text;
    const json::value* attempt = root.if_contains("attempt");
    ASSERT_EQ(v.attempt, attempt && attempt->is_int64() ? attempt->as_int64() : 1) << text;
    const json::object* attrs =
        root.contains("attributes") && root.at("attributes").is_object() ? &root.at("attributes").as_object() : nullptr;
    ASSERT_EQ(v.inv.subject, attrs ? text_or_empty(*attrs, "subject") : "") << text;
    ASSERT_TRUE(same(v.inv.metadata, expected_pairs(root.if_contains("metadata")).first)) << text;
    ASSERT_EQ(v.inv.http.has_value(), http != nullptr) << text;
    if (http) {
      ASSERT_EQ(v.inv.http->path, text_or_empty(*http, "path")) << text;
      ASSERT_TRUE(same(v.inv.http->params, expected_pairs(http->if_contains("params")).first)) << text;
    }
  }
}

// The typed reader accepts exactly what Boost.JSON accepts (as an object): headers with bytes
// changed, removed or added at random, and a corpus of the hard cases.
TEST(FrameTypedTest, AcceptsAndRefusesExactlyWhatBoostJsonDoes) {
  auto agree = [](const std::string& text) {
    boost::system::error_code ec;
    json::value tree = json::parse(text, ec);
    const bool boost_accepts = !ec && tree.is_object();
    FrameDecoder d;
    d.decode_typed(FrameType::result);
    std::string wire = frame_with(FrameType::result, text);
    d.feed(wire.data(), wire.size());
    Frame f;
    std::string err;
    const bool typed_accepts = d.next(f, err) == FrameDecoder::Status::frame;
    EXPECT_EQ(typed_accepts, boost_accepts) << "header: " << text << "\n" << err << " / " << ec.message();
    if (typed_accepts && boost_accepts) {
      const json::object& root = tree.as_object();
      EXPECT_EQ(f.result.id, text_or_empty(root, "id")) << text;
    }
    return typed_accepts == boost_accepts;
  };
  for (const char* text : {
           "{}", " {} ", "\t\r\n{}\n", "", " ", "{", "}", "{]", "[}", "{\"a\"}", "{\"a\":}", "{\"a\" 1}", "{\"a\":1,}",
           "{,}", "{\"a\":1 \"b\":2}", "{\"id\":\"x\"}x", "{a:1}", "{'a':1}", "{\"id\":tru}", "{\"id\":true}",
           "{\"id\":nul}", "{\"id\":nulll}", "{\"n\":01}", "{\"n\":-}", "{\"n\":-0}", "{\"n\":1.}", "{\"n\":.5}",
           "{\"n\":1e}", "{\"n\":1e+}", "{\"n\":1E-2}", "{\"n\":+1}", "{\"n\":9223372036854775807}",
           "{\"n\":9223372036854775808}", "{\"n\":18446744073709551616}", "{\"n\":-9223372036854775809}",
           "{\"n\":1e400}", "{\"n\":NaN}", "{\"n\":0x10}", "{\"id\":\"\\u0041\\u00e9\\u20ac\"}",
           "{\"id\":\"\\ud83d\\ude00\"}", "{\"id\":\"\\ud83d\"}", "{\"id\":\"\\ude00\"}", "{\"id\":\"\\ud83dx\"}",
           "{\"id\":\"\\ud83d\\u0041\"}", "{\"id\":\"\\u12\"}", "{\"id\":\"\\u12g4\"}", "{\"id\":\"\\x\"}",
           "{\"id\":\"\\/\\b\\f\\n\\r\\t\\\"\\\\\"}", "{\"id\":\"a\tb\"}", "{\"id\":\"a\x01\"}",
           "{\"id\":\"caf\xc3\xa9\"}", "{\"id\":\"caf\xe9\"}", "{\"id\":\"\xed\xa0\x80\"}", "{\"id\":\"\xc0\x80\"}",
           "{\"id\":\"\xf4\x90\x80\x80\"}", "{\"id\":\"unterminated}", "{\"k\xff\":1}", "{\"a\":[1,2,]}",
           "{\"a\":[,1]}", "{\"a\":[1 2]}", "{\"a\":{\"b\":[{}]}}", "{} // c", "/* c */ {}", "{\"a\":1}\u0000",
       }) {
    agree(text);
  }
  std::string deep = "{\"a\":";
  for (int depth = 2; depth <= 40; ++depth) {
    std::string text = "{\"a\":" + std::string(static_cast<size_t>(depth - 1), '[') + std::string(static_cast<size_t>(depth - 1), ']') + "}";
    agree(text);
  }

  RandomJson gen(7);
  std::mt19937 rng(99);
  int disagreements = 0;
  for (int round = 0; round < 20000 && disagreements < 5; ++round) {
    std::string text = json::serialize(gen.object(0));
    int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits && !text.empty(); ++e) {
      static const char kBytes[] = "{}[],:\"\\ -0123456789.eE+tfnulx\x01\x7f\xc3\xa9\xff\xed";
      std::size_t at = rng() % text.size();
      switch (rng() % 3) {
        case 0: text[at] = kBytes[rng() % (sizeof kBytes - 1)]; break;
        case 1: text.erase(at, 1); break;
        default: text.insert(at, 1, kBytes[rng() % (sizeof kBytes - 1)]);
      }
    }
    if (!agree(text)) ++disagreements;
  }
}

}  // namespace typed

}  // namespace
}  // namespace nimbus
