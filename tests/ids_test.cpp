// Invocation ids, W3C trace context and secrets.
#include "core/ids.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <string>

namespace nimbus {
namespace {

bool is_lower_hex(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// Checks the shape of a version-00 traceparent: 00-<32 hex>-<16 hex>-<2 hex>, non-zero ids.
void expect_valid_traceparent(const std::string& tp) {
  ASSERT_EQ(tp.size(), 55u) << tp;
  EXPECT_EQ(tp.substr(0, 3), "00-") << tp;
  EXPECT_EQ(tp[35], '-') << tp;
  EXPECT_EQ(tp[52], '-') << tp;
  EXPECT_TRUE(is_lower_hex(tp.substr(3, 32))) << tp;
  EXPECT_TRUE(is_lower_hex(tp.substr(36, 16))) << tp;
  EXPECT_TRUE(is_lower_hex(tp.substr(53, 2))) << tp;
  EXPECT_NE(tp.substr(3, 32), std::string(32, '0')) << tp;
  EXPECT_NE(tp.substr(36, 16), std::string(16, '0')) << tp;
}

TEST(InvocationIdTest, IsThirtyTwoLowercaseHex) {
  for (int i = 0; i < 100; ++i) {
    std::string id = new_invocation_id();
    ASSERT_EQ(id.size(), 32u) << id;
    EXPECT_TRUE(is_lower_hex(id)) << id;
  }
}

TEST(InvocationIdTest, UniqueOverTenThousandCalls) {
  std::set<std::string> ids;
  for (int i = 0; i < 10000; ++i) ids.insert(new_invocation_id());
  EXPECT_EQ(ids.size(), 10000u);
}

TEST(InvocationIdTest, RoughlyOrderedByTime) {
  // The first 12 hex digits are milliseconds: a later id never has a smaller prefix.
  std::string a = new_invocation_id();
  std::string b = new_invocation_id();
  EXPECT_LE(a.substr(0, 12), b.substr(0, 12));
}

TEST(TraceTest, ContinuesValidTraceparentWithNewParent) {
  const std::string incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  std::string out = continue_trace(incoming);
  expect_valid_traceparent(out);
  EXPECT_EQ(trace_id_of(out), "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(trace_id_of(out), trace_id_of(incoming));
  EXPECT_NE(out.substr(36, 16), "00f067aa0ba902b7") << "our span must become the new parent";
  EXPECT_EQ(out.substr(53, 2), "01") << "flags are carried over";
}

TEST(TraceTest, ContinuingTwiceGivesDifferentParents) {
  const std::string incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
  std::string a = continue_trace(incoming);
  std::string b = continue_trace(incoming);
  EXPECT_EQ(trace_id_of(a), trace_id_of(b));
  EXPECT_NE(a.substr(36, 16), b.substr(36, 16));
}

TEST(TraceTest, MalformedInputStartsANewTrace) {
  const std::string good_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
  const std::string cases[] = {
      "",
      "garbage",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",     // too short
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011",   // too long
      "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",    // uppercase
      "00-00000000000000000000000000000000-00f067aa0ba902b7-01",    // all-zero trace id
      "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",    // version ff
      "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",    // wrong separator
      "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",    // non-hex
      "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",    // all-zero parent id
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba9x2b7-01",    // non-hex parent id
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0z",    // non-hex flags
      "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",    // non-hex version
  };
  for (const auto& in : cases) {
    SCOPED_TRACE("input: '" + in + "'");
    std::string out = continue_trace(in);
    expect_valid_traceparent(out);
    EXPECT_NE(out, in);
    EXPECT_NE(trace_id_of(out), std::string(32, '0'));
    if (in.size() == 55) {
      EXPECT_NE(std::string(trace_id_of(out)), in.substr(3, 32));
    }
    EXPECT_NE(trace_id_of(out), good_trace);
  }
}

// What goes on is version 00 with only the sampled flag, whatever version and flags came in;
// a later version's extra fields are not passed on, and its trace continues.
TEST(TraceTest, ALaterVersionIsContinuedAsVersion00WithOnlyTheSampledFlag) {
  const std::string trace = "4bf92f3577b34da6a3ce929d0e0e4736";
  std::string out = continue_trace("01-" + trace + "-00f067aa0ba902b7-03-what-comes-later");
  expect_valid_traceparent(out);
  EXPECT_EQ(out.substr(0, 3), "00-");
  EXPECT_EQ(std::string(trace_id_of(out)), trace);
  EXPECT_EQ(out.substr(53), "01");
  out = continue_trace("00-" + trace + "-00f067aa0ba902b7-fe");  // unknown flags, not sampled
  EXPECT_EQ(std::string(trace_id_of(out)), trace);
  EXPECT_EQ(out.substr(53), "00");
  // Version 00 with more after it is no traceparent: a new trace starts.
  EXPECT_NE(std::string(trace_id_of(continue_trace("00-" + trace + "-00f067aa0ba902b7-01-x"))), trace);
}

// tracestate goes on as it came with a trace that is continued, and only then.
TEST(TraceTest, TracestateGoesOnAsItCameWithTheTraceItBelongsTo) {
  const std::string tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  EXPECT_EQ(continue_tracestate(tp, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"), "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
  // Blank members and the whitespace around members are dropped (the spec's OWS).
  EXPECT_EQ(continue_tracestate(tp, " congo=t61 ,\t, rojo=00f0 "), "congo=t61,rojo=00f0");
  // A later version's traceparent is continued, and so is its tracestate.
  EXPECT_EQ(continue_tracestate("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later", "a=1"), "a=1");
  // A trace that is not continued (no traceparent, a malformed one) takes nothing of it.
  EXPECT_EQ(continue_tracestate("", "a=1"), "");
  EXPECT_EQ(continue_tracestate("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "a=1"), "");
  EXPECT_EQ(continue_tracestate(tp, ""), "");
  // Not a list of key=value members of printable characters: dropped whole.
  EXPECT_EQ(continue_tracestate(tp, "a=1,justakey"), "");
  EXPECT_EQ(continue_tracestate(tp, "=1"), "");
  EXPECT_EQ(continue_tracestate(tp, std::string("a=1\x01")), "");
  EXPECT_EQ(continue_tracestate(tp, "a=caf\xc3\xa9"), "");
  // 32 members pass; 33 are more than the spec allows: dropped whole.
  std::string members;
  for (int i = 0; i < 32; ++i) members += (i ? ",k" : "k") + std::to_string(i) + "=v";
  EXPECT_EQ(continue_tracestate(tp, members), members);
  EXPECT_EQ(continue_tracestate(tp, members + ",k32=v"), "");
  // Over 512 characters: members over 128 characters go first, then members from the end until
  // it fits. Up to 512, long members stay.
  const std::string big(300, 'x');
  EXPECT_EQ(continue_tracestate(tp, "a=" + big + ",b=1,c=" + big + ",d=2"), "b=1,d=2");
  const std::string fits = "a=" + std::string(250, 'x') + ",b=" + std::string(255, 'y');
  ASSERT_EQ(fits.size(), 510u);
  EXPECT_EQ(continue_tracestate(tp, fits), fits);
  std::string hundreds, five;
  for (int i = 0; i < 6; ++i) {
    const std::string m = "k" + std::to_string(i) + "=" + std::string(97, 'v');  // 100 characters each
    hundreds += (i ? "," : "") + m;
    if (i < 5) five += (i ? "," : "") + m;
  }
  ASSERT_EQ(five.size(), 504u);
  EXPECT_EQ(continue_tracestate(tp, hundreds), five);
}

TEST(TraceTest, NewTracesDiffer) {
  EXPECT_NE(trace_id_of(continue_trace("")), trace_id_of(continue_trace("")));
}

TEST(TraceTest, TraceIdOfShortInputIsEmpty) { EXPECT_EQ(trace_id_of("00-abc"), ""); }

TEST(TraceTest, TraceIdOfMalformedTraceparentIsEmpty) {
  // The header promises "" for a malformed traceparent.
  EXPECT_EQ(trace_id_of("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            "4bf92f3577b34da6a3ce929d0e0e4736");
  const std::string malformed(55, 'x');  // the length of a traceparent, nothing else
  ASSERT_EQ(malformed.size(), 55u);
  EXPECT_EQ(trace_id_of(malformed), "");
  EXPECT_EQ(trace_id_of("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"), "");
}

TEST(SecretTest, IsUrlSafeBase64OfExpectedLength) {
  auto url_safe = [](const std::string& s) {
    return std::all_of(s.begin(), s.end(), [](char c) {
      return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
             c == '-' || c == '_';
    });
  };
  for (std::size_t bytes : {1u, 2u, 3u, 16u, 31u, 32u, 33u, 64u}) {
    SCOPED_TRACE("bytes=" + std::to_string(bytes));
    std::string s = new_secret(bytes);
    // Unpadded base64: ceil(8*bytes / 6) characters.
    EXPECT_EQ(s.size(), (bytes * 8 + 5) / 6);
    EXPECT_TRUE(url_safe(s)) << s;
    EXPECT_EQ(s.find('='), std::string::npos);
  }
  std::string def = new_secret();
  EXPECT_EQ(def.size(), 43u);  // 32 bytes
  EXPECT_TRUE(url_safe(def));
}

TEST(SecretTest, SecretsDiffer) {
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) seen.insert(new_secret());
  EXPECT_EQ(seen.size(), 100u);
}

TEST(SecretTest, ZeroBytesIsEmpty) { EXPECT_EQ(new_secret(0), ""); }

}  // namespace
}  // namespace nimbus
