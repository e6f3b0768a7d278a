#include "runtime/process/frame.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace nimbus
