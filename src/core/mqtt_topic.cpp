#include "core/mqtt_topic.h"

#include <charconv>

#include "core/text.h"

namespace nimbus {
namespace {

constexpr std::size_t kMaxTopic = 65535;  // an MQTT string's length is 16 bits
constexpr std::string_view kSharePrefix = "$share/";

std::vector<std::string_view> levels(std::string_view topic) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  for (;;) {
    std::size_t slash = topic.find('/', start);
    if (slash == std::string_view::npos) {
      out.push_back(topic.substr(start));
      return out;
    }
    out.push_back(topic.substr(start, slash - start));
    start = slash + 1;
  }
}

// What every topic string must be: non-empty UTF-8 without NUL, short enough for the protocol.
std::string check_text(std::string_view topic) {
  if (topic.empty()) return "is empty; expected a topic such as devices/+/telemetry";
  if (topic.size() > kMaxTopic) return "is longer than 65535 bytes, the protocol's limit";
  if (topic.find('\0') != std::string_view::npos) return "holds a NUL character, which MQTT forbids in topics";
  if (!valid_utf8(topic)) return "is not valid UTF-8, which MQTT requires of topics";
  return "";
}

// "$share/<group>/<filter>" -> "<filter>"; anything else unchanged. Empty when the group or
// the filter is missing.
std::string_view unshared(std::string_view filter) {
  if (filter.substr(0, kSharePrefix.size()) != kSharePrefix) return filter;
  std::string_view rest = filter.substr(kSharePrefix.size());
  std::size_t slash = rest.find('/');
  if (slash == 0 || slash == std::string_view::npos) return {};
  std::string_view group = rest.substr(0, slash);
  if (group.find_first_of("+#") != std::string_view::npos) return {};
  return rest.substr(slash + 1);
}

// "'text'": built by appending (GCC 12 warns falsely on "'" + std::string(...)).
std::string quoted(std::string_view text) {
  std::string out = "'";
  out.append(text);
  out += '\'';
  return out;
}

}  // namespace

std::string check_topic_filter(std::string_view filter) {
  if (std::string problem = check_text(filter); !problem.empty()) return problem;
  std::string_view plain = unshared(filter);
  if (plain.empty()) {
    return "is a shared subscription without a group or a filter; expected $share/GROUP/FILTER";
  }
  auto parts = levels(plain);
  for (std::size_t i = 0; i < parts.size(); ++i) {
    std::string_view level = parts[i];
    if (level.find('#') != std::string_view::npos) {
      if (level != "#") return "has '#' inside a level; expected '#' alone as the last level, e.g. site/#";
      if (i + 1 != parts.size()) return "has '#' before the last level; expected it last, e.g. site/#";
    }
    if (level.find('+') != std::string_view::npos && level != "+") {
      return "has '+' inside a level; expected '+' alone between slashes, e.g. devices/+/telemetry";
    }
  }
  return "";
}

std::string check_topic_name(std::string_view topic) {
  if (std::string problem = check_text(topic); !problem.empty()) return problem;
  if (topic.find_first_of("+#") != std::string_view::npos) {
    return "holds a wildcard ('+' or '#'); expected a topic name to publish to, e.g. devices/d1/commands";
  }
  return "";
}

bool topic_matches(std::string_view filter, std::string_view topic, std::vector<std::string>* captures) {
  filter = unshared(filter);
  if (filter.empty() || topic.empty()) return false;
  auto want = levels(filter);
  auto have = levels(topic);
  // MQTT 4.7.2: wildcards in the first level never match topics beginning with '$' ($SYS/...).
  if (topic.front() == '$' && (want[0] == "+" || want[0] == "#")) return false;
  std::vector<std::string> caught;
  std::size_t i = 0;
  for (; i < want.size(); ++i) {
    if (want[i] == "#") {
      // "a/#" matches "a" itself and everything under it.
      std::string rest;
      for (std::size_t j = i; j < have.size(); ++j) {
        if (j > i) rest += '/';
        rest += have[j];
      }
      caught.push_back(std::move(rest));
      if (captures) *captures = std::move(caught);
      return true;
    }
    if (i >= have.size()) return false;
    if (want[i] == "+") {
      caught.emplace_back(have[i]);
    } else if (want[i] != have[i]) {
      return false;
    }
  }
  if (i != have.size()) return false;
  if (captures) *captures = std::move(caught);
  return true;
}

std::string check_topic_template(std::string_view pattern) {
  if (std::string problem = check_text(pattern); !problem.empty()) return problem;
  if (pattern.find_first_of("+#") != std::string_view::npos) {
    return "holds a wildcard ('+' or '#'); expected a topic to publish to, with {name} for values from the "
           "output's metadata, e.g. devices/{device}/commands";
  }
  constexpr const char* kExpected = "; expected {name} placeholders within one level, e.g. devices/{device}/commands";
  std::size_t open = std::string_view::npos;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '{') {
      if (open != std::string_view::npos) return std::string("has a '{' inside a placeholder") + kExpected;
      open = i;
    } else if (c == '}') {
      if (open == std::string_view::npos) return std::string("has a '}' with no '{'") + kExpected;
      if (i == open + 1) return std::string("has an empty placeholder {}") + kExpected;
      open = std::string_view::npos;
    } else if (c == '/' && open != std::string_view::npos) {
      return std::string("has a placeholder across a '/'") + kExpected;
    }
  }
  if (open != std::string_view::npos) return std::string("has a '{' that is never closed") + kExpected;
  return "";
}

std::string fill_topic_template(std::string_view pattern, const Headers& metadata, std::string* problem) {
  std::string out;
  std::size_t at = 0;
  while (at < pattern.size()) {
    std::size_t open = pattern.find('{', at);
    if (open == std::string_view::npos) {
      out.append(pattern.substr(at));
      break;
    }
    std::size_t close = pattern.find('}', open);
    if (close == std::string_view::npos) {
      out.append(pattern.substr(at));
      break;
    }
    out.append(pattern.substr(at, open - at));
    std::string_view name = pattern.substr(open + 1, close - open - 1);
    const std::string* value = find_header(metadata, name);
    if (!value || value->empty()) {
      *problem = "topic " + std::string(pattern) + " needs metadata \"" + std::string(name) + "\", which the output lacks";
      return {};
    }
    if (value->find_first_of("/+#") != std::string::npos) {
      *problem = "metadata \"" + std::string(name) + "\" is '" + *value + "', which holds '/', '+' or '#'; topic " +
                 std::string(pattern) + " expects one level there";
      return {};
    }
    out += *value;
    at = close + 1;
  }
  if (std::string bad = check_topic_name(out); !bad.empty()) {
    *problem = "topic '" + out + "' " + bad;
    return {};
  }
  problem->clear();
  return out;
}

MqttAddress parse_mqtt_url(std::string_view url, std::string* problem) {
  MqttAddress out;
  problem->clear();
  std::string_view rest;
  if (url.substr(0, 7) == "mqtt://") {
    rest = url.substr(7);
  } else if (url.substr(0, 6) == "tcp://") {
    rest = url.substr(6);
  } else if (url.substr(0, 8) == "mqtts://" || url.substr(0, 6) == "ssl://") {
    *problem = quoted(url) + " asks for TLS, which this build does not support; expected mqtt://HOST:PORT";
    return out;
  } else {
    *problem = quoted(url) + " is not an MQTT broker URL; expected mqtt://HOST:PORT, e.g. mqtt://127.0.0.1:1883";
    return out;
  }
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  std::string_view host = rest;
  std::size_t colon = rest.rfind(':');
  if (colon != std::string_view::npos && rest.find(']', colon) == std::string_view::npos) {
    host = rest.substr(0, colon);
    std::string_view port = rest.substr(colon + 1);
    int value = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc() || end != port.data() + port.size() || value < 1 || value > 65535) {
      *problem = quoted(url) + " has port " + quoted(port) + "; expected a port from 1 to 65535";
      return out;
    }
    out.port = value;
  }
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty() || host.find_first_of("/@?") != std::string_view::npos) {
    *problem = quoted(url) + " has no usable host; expected mqtt://HOST:PORT (user and password go in "
               "username: and password:)";
    return out;
  }
  out.host = std::string(host);
  return out;
}

}  // namespace nimbus
