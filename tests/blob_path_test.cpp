// Blob names and patterns (core/blob_path.h): what the store accepts and what blob triggers match.
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <thread>

#include "core/blob_path.h"

namespace nimbus {
namespace {

BlobPattern pattern(const std::string& text) {
  std::string problem;
  auto p = parse_blob_pattern(text, &problem);
  EXPECT_TRUE(p.has_value()) << text << ": " << problem;
  return p.value_or(BlobPattern{});
}

std::string captured(const std::string& pat, const std::string& name) {
  auto m = match_blob_pattern(pattern(pat), name);
  if (!m) return "(no match)";
  std::string out;
  for (const auto& c : *m) out += (out.empty() ? "" : " ") + c.name + "=" + c.value;
  return out;
}

TEST(BlobPath, PatternsCaptureOneSegmentOrSeveralWithAStar) {
  EXPECT_EQ(captured("{name}.csv", "a.csv"), "name=a");
  EXPECT_EQ(captured("{name}.csv", "a.b.csv"), "name=a.b");
  EXPECT_EQ(captured("{name}.csv", "dir/a.csv"), "(no match)") << "{name} is one segment";
  EXPECT_EQ(captured("{name}.csv", "a.txt"), "(no match)");
  EXPECT_EQ(captured("{name}.csv", ".csv"), "(no match)") << "captures are never empty";
  EXPECT_EQ(captured("{path*}.csv", "2024/05/a.csv"), "path=2024/05/a");
  EXPECT_EQ(captured("{year}/{month}/{file}", "2024/05/a.csv"), "year=2024 month=05 file=a.csv");
  EXPECT_EQ(captured("in/{rest*}", "in/x/y"), "rest=x/y");
  EXPECT_EQ(captured("exact.txt", "exact.txt"), "");
  EXPECT_EQ(pattern("in/{rest*}").prefix(), "in/");
  auto filled = fill_blob_pattern(pattern("thumbs/{name}.png"), [](const std::string& k) -> const std::string* {
    static const std::string a = "a";
    return k == "name" ? &a : nullptr;
  });
  ASSERT_TRUE(filled.ok());
  EXPECT_EQ(*filled, "thumbs/a.png");
  auto unfilled = fill_blob_pattern(pattern("{missing}.png"), [](const std::string&) { return nullptr; });
  ASSERT_FALSE(unfilled.ok());
  EXPECT_NE(unfilled.error().message.find("{missing}"), std::string::npos);
}

TEST(BlobPath, BadPatternsSayWhatIsWrong) {
  for (auto [text, why] : {std::pair{"{name", "no closing"}, {"name}", "no '{'"}, {"{Name}", "lower-case"},
                           {"{a}{b}", "nothing between"}, {"{a}/{a}", "twice"}, {"../{a}", "'..'"}, {"", "no name"}}) {
    std::string problem;
    EXPECT_FALSE(parse_blob_pattern(text, &problem).has_value()) << text;
    EXPECT_NE(problem.find(why), std::string::npos) << text << ": " << problem;
  }
}

TEST(BlobPath, PathsSplitIntoContainerAndName) {
  auto ok = split_blob_path("uploads/2024/a.csv");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->container, "uploads");
  EXPECT_EQ(ok->name, "2024/a.csv");
  EXPECT_FALSE(split_blob_path("uploads").ok());
  EXPECT_FALSE(split_blob_path("Uploads/a").ok());
  EXPECT_FALSE(split_blob_path("uploads/../a").ok());
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256_hex(std::string(1000, 'a')).size(), 64u);
}

// Found by fuzz/blob_path_fuzz.cpp: with several {x*} captures the search backtracked
// exponentially, so one upload name stalled the store's writer (it matches blob triggers).
TEST(BlobPath, MatchingManySpanningCapturesStaysFast) {
  auto p = std::make_shared<BlobPattern>(pattern("{a*}-{b*}-{c*}-{d*}-{e*}-{f*}.x"));
  const std::string name(1000, '-');  // every split fits until the ".x" that never comes
  auto done = std::make_shared<std::promise<bool>>();
  auto result = done->get_future();
  // A thread of its own, so that a regression fails the test instead of hanging it.
  std::thread([p, name, done] { done->set_value(match_blob_pattern(*p, name).has_value()); }).detach();
  ASSERT_EQ(result.wait_for(std::chrono::seconds(20)), std::future_status::ready) << "matching took over 20 s";
  EXPECT_FALSE(result.get());
  EXPECT_EQ(captured("{a*}-{b*}.x", "1-2-3.x"), "a=1 b=2-3") << "still the shortest capture first";
}

}  // namespace
}  // namespace nimbus
