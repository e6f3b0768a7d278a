// The manifest reader's value readers: scalars with ${VAR} expanded, durations, sizes,
// integers, booleans, choices, names and blob paths, each reporting what is wrong and where.
#include "manifest/manifest_reader.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <set>

#include "core/units.h"

namespace nimbus {

void ManifestReader::error(const YAML::Node& at, const std::string& path, std::string message) {
  Diagnostic d;
  d.file = file_;
  if (at.IsDefined() && at.Mark().line >= 0) {
    d.line = at.Mark().line + 1;
    d.column = at.Mark().column + 1;
  }
  d.path = path;
  d.message = std::move(message);
  diagnostics.push_back(std::move(d));
}

bool ManifestReader::check_map(const YAML::Node& node, const std::string& path,
                               const std::vector<std::string_view>& known) {
  if (!node.IsMap()) {
    error(node, path, "is " + kind_of(node) + "; expected a mapping of keys to values");
    return false;
  }
  const std::vector<std::string_view>& candidates = known;
  std::set<std::string> seen;
  for (auto it = node.begin(); it != node.end(); ++it) {
    std::string key = it->first.Scalar();
    if (!seen.insert(key).second) {
      error(it->first, join(path, key), "appears twice; expected each key once");
      continue;
    }
    if (std::find(candidates.begin(), candidates.end(), key) == candidates.end()) {
      std::string msg = "unknown key '" + key + "'";
      std::string guess = did_you_mean(key, candidates);
      if (!guess.empty()) msg += "; did you mean '" + guess + "'?";
      else msg += "; expected one of: " + list(candidates);
      error(it->first, join(path, key), msg);
    }
  }
  return true;
}

std::optional<std::string> ManifestReader::scalar(const YAML::Node& node, const std::string& path,
                                                  std::string_view expected) {
  if (!node.IsScalar()) {
    error(node, path, "is " + kind_of(node) + "; expected " + std::string(expected));
    return std::nullopt;
  }
  return expand(node, path, node.Scalar());
}

std::optional<std::string> ManifestReader::expand(const YAML::Node& at, const std::string& path,
                                                  const std::string& text) {
  std::string out;
  std::size_t i = 0;
  while (i < text.size()) {
    if (text.compare(i, 2, "${") != 0) {
      out.push_back(text[i++]);
      continue;
    }
    auto close = text.find('}', i + 2);
    if (close == std::string::npos) {
      error(at, path, "has '${' with no closing '}'; expected ${NAME} or ${NAME:-default}");
      return std::nullopt;
    }
    std::string inner = text.substr(i + 2, close - i - 2);
    std::optional<std::string> fallback;
    if (auto dash = inner.find(":-"); dash != std::string::npos) {
      fallback = inner.substr(dash + 2);
      inner.resize(dash);
    }
    bool valid = !inner.empty() && std::all_of(inner.begin(), inner.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
    });
    if (!valid) {
      error(at, path, "has '${" + inner + "}'; expected an environment variable name");
      return std::nullopt;
    }
    auto value = env_(inner);
    if (!value && !fallback) {
      error(at, path,
            "uses environment variable " + inner +
                ", which is not set; set it, or give a default as ${" + inner + ":-value}");
      return std::nullopt;
    }
    out += value ? *value : *fallback;
    i = close + 1;
  }
  return out;
}

std::optional<Duration> ManifestReader::duration(const YAML::Node& node, const std::string& path) {
  auto text = scalar(node, path, "a duration such as 500ms, 30s or 5m");
  if (!text) return std::nullopt;
  auto d = parse_duration(*text);
  if (!d || *d <= Duration::zero()) {
    error(node, path, "'" + *text + "' is not a duration; expected a positive duration such as 500ms, 30s or 5m");
    return std::nullopt;
  }
  return d;
}

std::optional<std::string> ManifestReader::app_file(const YAML::Node& node, const std::string& path, const char* what) {
  auto text = scalar(node, path, what);
  if (!text) return std::nullopt;
  std::filesystem::path f(*text);
  if (f.is_relative()) f = app_dir() / f;
  if (!std::filesystem::is_regular_file(f)) {
    error(node, path, "'" + *text + "' is not a file (" + f.string() + ")");
    return std::nullopt;
  }
  return f.string();
}

std::optional<std::size_t> ManifestReader::size(const YAML::Node& node, const std::string& path) {
  auto text = scalar(node, path, "a size such as 512KiB or 10MiB");
  if (!text) return std::nullopt;
  auto s = parse_size(*text);
  if (!s || *s == 0) {
    error(node, path, "'" + *text + "' is not a size; expected a positive size such as 512KiB or 10MiB");
    return std::nullopt;
  }
  return s;
}

std::optional<long> ManifestReader::integer(const YAML::Node& node, const std::string& path, long min, long max) {
  std::string expected = "an integer from " + std::to_string(min) + " to " + std::to_string(max);
  auto text = scalar(node, path, expected);
  if (!text) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(text->c_str(), &end, 10);
  if (text->empty() || *end != '\0' || errno != 0 || v < min || v > max) {
    error(node, path, "'" + *text + "' is out of range; expected " + expected);
    return std::nullopt;
  }
  return v;
}

std::optional<double> ManifestReader::share(const YAML::Node& node, const std::string& path, const char* problem) {
  std::string text = node.IsScalar() ? node.Scalar() : "";
  const bool percent = !text.empty() && text.back() == '%';
  if (percent) text.pop_back();
  char* end = nullptr;
  const double value = text.empty() ? -1 : std::strtod(text.c_str(), &end) / (percent ? 100.0 : 1.0);
  if (text.empty() || *end != '\0' || !std::isfinite(value) || value < 0 || value > 1) {
    error(node, path, problem);
    return std::nullopt;
  }
  return value;
}

std::optional<bool> ManifestReader::boolean(const YAML::Node& node, const std::string& path) {
  auto text = scalar(node, path, "true or false");
  if (!text) return std::nullopt;
  if (*text == "true") return true;
  if (*text == "false") return false;
  error(node, path, "'" + *text + "' is not a boolean; expected true or false");
  return std::nullopt;
}

std::optional<std::string> ManifestReader::choice(const YAML::Node& node, const std::string& path,
                                                  const std::vector<std::string_view>& choices) {
  auto text = scalar(node, path, "one of: " + list(choices));
  if (!text) return std::nullopt;
  if (std::find(choices.begin(), choices.end(), *text) != choices.end()) return text;
  std::string msg = "'" + *text + "' is not allowed";
  std::string guess = did_you_mean(*text, choices);
  if (!guess.empty()) msg += "; did you mean '" + guess + "'?";
  else msg += "; expected one of: " + list(choices);
  error(node, path, msg);
  return std::nullopt;
}

bool ManifestReader::check_name(const YAML::Node& at, const std::string& path, const std::string& name, const char* what) {
  bool valid = !name.empty() && name.size() <= 200 && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
  });
  if (!valid) {
    error(at, path, "'" + name + "' is not a valid " + what +
                        " name; expected lower-case letters, digits, '.', '-' or '_' (at most 200)");
  }
  return valid;
}

std::optional<ManifestReader::BlobPathSpec> ManifestReader::blob_path(const YAML::Node& v, const std::string& path, const char* example) {
  auto text = scalar(v, path, std::string("a blob path such as ") + example);
  if (!text) return std::nullopt;
  auto slash = text->find('/');
  std::string container = text->substr(0, slash);
  if (auto why = check_blob_container(container); !why.empty()) {
    error(v, path, "'" + *text + "': container '" + container + "' " + why);
    return std::nullopt;
  }
  std::string problem;
  auto pattern = slash == std::string::npos ? std::nullopt : parse_blob_pattern(text->substr(slash + 1), &problem);
  if (!pattern) {
    error(v, path, "'" + *text + "' " + (problem.empty() ? std::string("names a container only") : problem) +
                       "; expected CONTAINER/NAME such as " + example);
    return std::nullopt;
  }
  return BlobPathSpec{container, text->substr(slash + 1), std::move(*pattern)};
}

std::string ManifestReader::kind_of(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Map: return "a mapping";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Scalar: return "'" + n.Scalar() + "'";
    case YAML::NodeType::Null: return "empty";
    default: return "missing";
  }
}

std::string ManifestReader::join(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}

bool ManifestReader::is_name(const std::string& s) {
  if (s.empty() || s.size() > 63 || !(s[0] >= 'a' && s[0] <= 'z')) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
  });
}

std::vector<std::pair<YAML::Node, std::string>> ManifestReader::one_or_list(const YAML::Node& v, const std::string& path) {
  std::vector<std::pair<YAML::Node, std::string>> out;
  if (v.IsSequence()) {
    for (std::size_t i = 0; i < v.size(); ++i) out.emplace_back(v[i], path + "[" + std::to_string(i) + "]");
  } else {
    out.emplace_back(v, path);
  }
  return out;
}

std::vector<std::string> ManifestReader::http_methods(const YAML::Node& v, const std::string& path) {
  static const std::vector<std::string_view> kMethods = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"};
  std::vector<std::string> out;
  for (const auto& [item, p] : one_or_list(v, path)) {
    auto m = scalar(item, p, "an HTTP method");
    if (!m) continue;
    std::string upper = *m;
    std::transform(upper.begin(), upper.end(), upper.begin(), ::toupper);
    if (std::find(kMethods.begin(), kMethods.end(), upper) == kMethods.end()) {
      error(item, p, "'" + *m + "' is not an HTTP method; expected one of: " + list(kMethods));
    } else if (std::find(out.begin(), out.end(), upper) == out.end()) {
      out.push_back(upper);
    }
  }
  return out;
}

}  // namespace nimbus
