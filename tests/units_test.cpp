// Durations and sizes as the manifest and CLI spell them.
#include "core/units.h"

#include <gtest/gtest.h>

namespace nimbus {
namespace {

using namespace std::chrono_literals;

TEST(ParseDurationTest, AcceptsEachUnit) {
  EXPECT_EQ(parse_duration("250ms"), Duration(250ms));
  EXPECT_EQ(parse_duration("5s"), Duration(5s));
  EXPECT_EQ(parse_duration("2m"), Duration(2min));
  EXPECT_EQ(parse_duration("1h"), Duration(1h));
  EXPECT_EQ(parse_duration("7d"), Duration(24h * 7)) << "days, for retention";
  EXPECT_EQ(parse_duration("1.5s"), Duration(1500ms));
  EXPECT_EQ(parse_duration("10"), Duration(10s)) << "a bare number is seconds";
  EXPECT_EQ(parse_duration("100us"), Duration(100us));
  EXPECT_EQ(parse_duration("0.5ms"), Duration(500us));
  EXPECT_EQ(parse_duration(" 3s "), Duration(3s)) << "surrounding spaces are tolerated";
}

TEST(ParseDurationTest, RejectsJunk) {
  for (const char* bad : {"", "abc", "5x", "-1s", "s", "ms5", "5 sec", "1w", "inf", "nan"}) {
    EXPECT_FALSE(parse_duration(bad).has_value()) << "'" << bad << "'";
  }
}

TEST(ParseDurationTest, RejectsOverflow) { EXPECT_FALSE(parse_duration("1e12h").has_value()); }

TEST(ParseSizeTest, AcceptsEachUnit) {
  EXPECT_EQ(parse_size("512"), 512u);
  EXPECT_EQ(parse_size("512B"), 512u);
  EXPECT_EQ(parse_size("64KiB"), 64u * 1024);
  EXPECT_EQ(parse_size("10MiB"), 10u * 1024 * 1024);
  EXPECT_EQ(parse_size("1GiB"), 1024u * 1024 * 1024);
  EXPECT_EQ(parse_size("10MB"), 10'000'000u);
  EXPECT_EQ(parse_size("2KB"), 2000u);
  EXPECT_EQ(parse_size("1GB"), 1'000'000'000u);
  EXPECT_EQ(parse_size("1.5KiB"), 1536u);
}

TEST(ParseSizeTest, RejectsJunk) {
  for (const char* bad : {"", "abc", "10XB", "-1", "-5MiB", "MiB", "10 mib", "10mb", "1e30"}) {
    EXPECT_FALSE(parse_size(bad).has_value()) << "'" << bad << "'";
  }
}

TEST(FormatDurationTest, PicksTheLargestExactUnit) {
  EXPECT_EQ(format_duration(5s), "5s");
  EXPECT_EQ(format_duration(2min), "120s");
  EXPECT_EQ(format_duration(250ms), "250ms");
  EXPECT_EQ(format_duration(1500ms), "1500ms");
  EXPECT_EQ(format_duration(42us), "42us");
  EXPECT_EQ(format_duration(Duration::zero()), "0s");
}

TEST(FormatDurationTest, RoundTripsThroughParse) {
  for (Duration d : {Duration(7s), Duration(250ms), Duration(1500ms), Duration(42us), Duration(1h)}) {
    auto back = parse_duration(format_duration(d));
    ASSERT_TRUE(back.has_value()) << format_duration(d);
    EXPECT_EQ(*back, d) << format_duration(d);
  }
}

}  // namespace
}  // namespace nimbus
