// libFuzzer target for MQTT topic filters, topic names, output topic templates and broker URLs
// (core/mqtt_topic.h). Input: one field a line: a filter, a topic, a template, a metadata
// value, a URL. Invariants: a valid filter's match has one capture per '+' (and one for '#')
// that put back into the filter give the topic; a valid topic name (outside
// $share/) is a filter that matches itself; a valid template filled with one-level values is
// a valid topic name; a URL either parses to a host and a port in 1..65535 or is refused.
#include "fuzz/fuzz_input.h"
#include "core/mqtt_topic.h"

namespace nimbus::fuzz {
namespace {

// The filter's levels with '+' and '#' replaced by the captures, joined again.
std::string rebuild(std::string_view filter, const std::vector<std::string>& captures) {
  if (filter.substr(0, 7) == "$share/") {
    filter.remove_prefix(7);
    filter.remove_prefix(filter.find('/') + 1);
  }
  std::string out;
  std::size_t c = 0;
  std::size_t start = 0;
  while (true) {
    std::size_t slash = filter.find('/', start);
    std::string_view level = filter.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (level == "#") {
      // "a/#" matches "a" too: then the '/' before it goes.
      if (captures[c].empty() && !out.empty()) out.pop_back();
      else out += captures[c];
      return out;
    }
    out += level == "+" ? std::string_view(captures[c++]) : level;
    if (slash == std::string_view::npos) return out;
    out += '/';
    start = slash + 1;
  }
}

}  // namespace

std::string check_mqtt_topic_input(std::string_view text) {
  auto f = fields(text, 5);
  f.resize(5);
  const std::string_view filter = f[0], topic = f[1], pattern = f[2], value = f[3], url = f[4];

  const bool filter_ok = check_topic_filter(filter).empty();
  const bool topic_ok = check_topic_name(topic).empty();
  std::vector<std::string> captures;
  if (topic_matches(filter, topic, &captures)) {
    std::size_t wild = 0;
    std::string_view plain = filter;
    if (plain.substr(0, 7) == "$share/") plain.remove_prefix(plain.find('/', 7) + 1);
    for (std::size_t start = 0;;) {
      std::size_t slash = plain.find('/', start);
      auto level = plain.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
      wild += level == "+" || level == "#";
      if (slash == std::string_view::npos) break;
      start = slash + 1;
    }
    if (filter_ok) {
      FUZZ_EXPECT(captures.size() == wild, "a match with " + std::to_string(captures.size()) + " captures for " +
                                               std::to_string(wild) + " wildcards");
      // '#' matching nothing ("a/#" on "a" or on "a/") captures "": both give "a" back.
      const std::string back = rebuild(filter, captures);
      FUZZ_EXPECT(back == topic || (!captures.empty() && captures.back().empty() && back + "/" == topic),
                  "captures put back into the filter give " + shown(back));
    }
  }
  if (topic_ok && topic.substr(0, 7) != "$share/") {
    FUZZ_EXPECT(check_topic_filter(topic).empty(), "a valid topic name is not a valid filter");
    FUZZ_EXPECT(topic_matches(topic, topic), "a topic does not match itself");
  }

  if (check_topic_template(pattern).empty()) {
    Headers metadata;
    std::string one_level(value);
    for (auto& c : one_level)
      if (c == '/' || c == '+' || c == '#') c = '_';
    if (one_level.empty()) one_level = "v";
    // Every placeholder gets the value.
    for (std::size_t open = pattern.find('{'); open != std::string_view::npos; open = pattern.find('{', open + 1)) {
      std::size_t close = pattern.find('}', open);
      metadata.push_back({std::string(pattern.substr(open + 1, close - open - 1)), one_level});
    }
    std::string problem;
    std::string filled = fill_topic_template(pattern, metadata, &problem);
    if (problem.empty()) FUZZ_EXPECT(check_topic_name(filled).empty(), "a filled template is not a topic name");
  }

  std::string problem;
  MqttAddress address = parse_mqtt_url(url, &problem);
  if (problem.empty()) {
    FUZZ_EXPECT(!address.host.empty() && address.port >= 1 && address.port <= 65535, "a parsed URL with no host or port");
  }
  return "";
}

}  // namespace nimbus::fuzz

NIMBUS_FUZZ_TARGET(nimbus::fuzz::check_mqtt_topic_input, 4096)
