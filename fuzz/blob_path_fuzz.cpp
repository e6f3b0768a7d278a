// libFuzzer target for blob names, containers and name patterns (core/blob_path.h). Input: one
// field a line: a pattern, a blob name, a CONTAINER/PATH, then values for the pattern's captures.
// Invariants: a name that matches a pattern starts with the pattern's prefix,
// and filling the pattern with its captures gives the name back; a pattern filled with plain
// values (no '/') is matched again; split_blob_path accepts exactly what the two checks
// accept. Matching must stay fast on long names (libFuzzer's -timeout catches backtracking).
#include "fuzz/fuzz_input.h"
#include "core/blob_path.h"

namespace nimbus::fuzz {

std::string check_blob_path_input(std::string_view text) {
  auto f = fields(text, 8);
  f.resize(8);
  const std::string_view pattern_text = f[0], name = f[1], path = f[2];

  auto address = split_blob_path(path);
  if (address) {
    FUZZ_EXPECT(check_blob_container(address->container).empty() && check_blob_name(address->name).empty(),
                "split_blob_path accepted an invalid part");
    FUZZ_EXPECT(address->container + "/" + address->name == path, "split_blob_path lost bytes");
  } else {
    FUZZ_EXPECT(!address.error().message.empty(), "split_blob_path refused with no message");
  }

  std::string problem;
  auto pattern = parse_blob_pattern(pattern_text, &problem);
  FUZZ_EXPECT(pattern.has_value() == problem.empty(), "parse_blob_pattern and its problem disagree");
  if (!pattern) return "";

  if (auto captures = match_blob_pattern(*pattern, name)) {
    FUZZ_EXPECT(name.substr(0, pattern->prefix().size()) == pattern->prefix(), "a match without the prefix");
    FUZZ_EXPECT(captures->size() == pattern->captures().size(), "a match with a capture missing");
    auto filled = fill_blob_pattern(*pattern, [&](const std::string& n) -> const std::string* {
      for (const auto& c : *captures)
        if (c.name == n) return &c.value;
      return nullptr;
    });
    FUZZ_EXPECT(filled && *filled == name, "the captures do not fill the pattern back into the name");
  }

  // Fill with values made from the input; when the result is a valid name, it must match.
  std::vector<std::string> values;
  std::size_t next = 3;
  for (const auto& c : pattern->captures()) {
    std::string v(f[next]);
    next = std::min<std::size_t>(next + 1, 7);
    if (v.empty()) v = c;
    values.push_back(std::move(v));
  }
  const auto names = pattern->captures();
  auto filled = fill_blob_pattern(*pattern, [&](const std::string& n) -> const std::string* {
    for (std::size_t k = 0; k < names.size(); ++k)
      if (names[k] == n) return &values[k];
    return nullptr;
  });
  FUZZ_EXPECT(filled.ok(), "a pattern with every value given does not fill");
  bool plain = true;  // one-segment captures got values with no '/'
  std::size_t v = 0;
  for (const auto& part : pattern->parts) {
    if (!part.capture) continue;
    if (!part.many && values[v].find('/') != std::string::npos) plain = false;
    ++v;
  }
  if (plain && check_blob_name(*filled).empty()) {
    FUZZ_EXPECT(match_blob_pattern(*pattern, *filled).has_value(), "a filled pattern does not match: " + shown(*filled));
  }
  return "";
}

}  // namespace nimbus::fuzz

NIMBUS_FUZZ_TARGET(nimbus::fuzz::check_blob_path_input, 4096)
