#include "triggers/http/router.h"

#include <algorithm>
#include <cctype>

namespace nimbus {
namespace {

int hex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool method_allowed(const std::vector<std::string>& methods, std::string_view method) {
  if (methods.empty()) return true;
  for (const auto& m : methods) {
    if (m == method) return true;
    if (method == "HEAD" && m == "GET") return true;
  }
  return false;
}

}  // namespace

std::string form_decode(std::string_view s) {
  std::string plus_as_space(s);
  for (auto& c : plus_as_space)
    if (c == '+') c = ' ';
  std::string out;
  if (!percent_decode(plus_as_space, out)) return plus_as_space;
  return out;
}

bool percent_decode(std::string_view in, std::string& out) {
  out.clear();
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out.push_back(in[i]);
      continue;
    }
    if (i + 2 >= in.size()) return false;
    int h = hex(in[i + 1]), l = hex(in[i + 2]);
    if (h < 0 || l < 0) return false;
    out.push_back(static_cast<char>(h * 16 + l));
    i += 2;
  }
  return true;
}

std::optional<std::string> normalize_path(std::string_view path, std::string* why, bool* changed) {
  *changed = false;
  const bool escapes = path.find('%') != std::string_view::npos;
  const bool dots = path.find("/.") != std::string_view::npos;
  if (!escapes && !dots) return std::nullopt;  // the common case: nothing to do, no copy
  std::string decoded;
  decoded.reserve(path.size());
  for (std::size_t i = 0; i < path.size(); ++i) {
    if (path[i] != '%') {
      decoded.push_back(path[i]);
      continue;
    }
    int h = i + 2 < path.size() ? hex(path[i + 1]) : -1, l = i + 2 < path.size() ? hex(path[i + 2]) : -1;
    if (h < 0 || l < 0) {
      *why = "the path has a malformed percent-escape";
      return std::nullopt;
    }
    const char c = static_cast<char>(h * 16 + l);
    if (c == '/' || c == '\\') {
      *why = "the path has an encoded '/' or '\\' (%2F, %5C), which this gateway refuses";
      return std::nullopt;
    }
    if (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_' || c == '~') {
      decoded.push_back(c);
    } else {
      static const char* kHex = "0123456789ABCDEF";
      decoded.push_back('%');
      decoded.push_back(kHex[(h * 16 + l) >> 4]);
      decoded.push_back(kHex[(h * 16 + l) & 15]);
    }
    i += 2;
  }
  // remove_dot_segments (RFC 3986 5.2.4) over whole segments.
  std::vector<std::string_view> segments;
  std::string_view rest = decoded;
  if (!rest.empty() && rest.front() == '/') rest.remove_prefix(1);
  bool trailing = false;
  while (true) {
    auto slash = rest.find('/');
    std::string_view seg = rest.substr(0, slash);
    const bool last = slash == std::string_view::npos;
    if (seg == ".") {
      trailing = last;
    } else if (seg == "..") {
      if (!segments.empty()) segments.pop_back();
      trailing = last;
    } else {
      segments.push_back(seg);
      trailing = false;
    }
    if (last) break;
    rest.remove_prefix(slash + 1);
  }
  std::string out;
  out.reserve(decoded.size());
  for (const auto& seg : segments) {
    out.push_back('/');
    out.append(seg);
  }
  if (trailing || out.empty()) out.push_back('/');
  *changed = out != path;
  return out;
}

std::string host_name(std::string_view h) {
  if (!h.empty() && h.front() == '[') {
    auto close = h.find(']');
    h = h.substr(0, close == std::string_view::npos ? h.size() : close + 1);
  } else if (auto colon = h.rfind(':'); colon != std::string_view::npos) {
    h = h.substr(0, colon);
  }
  while (!h.empty() && h.back() == '.') h.remove_suffix(1);  // "example.com." is the same name
  std::string out(h);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool Router::match_host(std::string_view pattern, std::string_view host) {
  if (pattern.rfind("*.", 0) == 0) {
    std::string_view suffix = pattern.substr(1);  // ".example.com"
    return host.size() > suffix.size() && host.substr(host.size() - suffix.size()) == suffix;
  }
  return pattern == host;
}

void Router::add(RoutePattern pattern, std::vector<std::string> methods, int target, std::string host) {
  if (!host.empty()) any_host_ = true;
  routes_.push_back({std::move(pattern), std::move(methods), target, std::move(host)});
  std::stable_sort(routes_.begin(), routes_.end(), [](const Route& a, const Route& b) {
    if (a.host.empty() != b.host.empty()) return !a.host.empty();  // host routes first
    if (a.pattern.segments.size() != b.pattern.segments.size()) {
      return a.pattern.segments.size() > b.pattern.segments.size();
    }
    return a.pattern.more_specific_than(b.pattern);
  });
}

bool Router::match_path(const RoutePattern& p, std::string_view path, Headers* params) {
  if (path.empty() || path.front() != '/') return false;
  std::string_view rest = path.substr(1);
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);  // trailing slash ignored
  std::size_t i = 0;
  const auto& segs = p.segments;
  while (true) {
    if (rest.empty()) {
      // A catch-all matches nothing too: /{*rest} serves "/", /files/{*path} serves /files.
      if (i + 1 == segs.size() && segs[i].kind == RouteSegment::Kind::rest) {
        if (params) params->push_back({segs[i].text, std::string()});
        return true;
      }
      return i == segs.size();
    }
    if (i == segs.size()) return false;
    const auto& seg = segs[i];
    if (seg.kind == RouteSegment::Kind::rest) {
      std::string decoded;
      if (!percent_decode(rest, decoded)) return false;
      if (params) params->push_back({seg.text, std::move(decoded)});
      return true;
    }
    auto slash = rest.find('/');
    std::string_view part = rest.substr(0, slash);
    if (part.empty()) return false;
    if (seg.kind == RouteSegment::Kind::literal) {
      if (part != seg.text) return false;
    } else {
      std::string decoded;
      if (!percent_decode(part, decoded)) return false;
      if (params) params->push_back({seg.text, std::move(decoded)});
    }
    ++i;
    if (slash == std::string_view::npos) rest = {};
    else rest = rest.substr(slash + 1);
    if (slash != std::string_view::npos && rest.empty()) return i == segs.size();
  }
}

RouteMatch Router::match(std::string_view method, std::string_view path, std::string_view host_header) const {
  RouteMatch m;
  std::vector<std::string> allowed;
  std::string host;
  if (any_host_) host = host_name(host_header);
  for (const auto& r : routes_) {
    if (!r.host.empty() && !match_host(r.host, host)) continue;
    Headers params;
    if (!match_path(r.pattern, path, &params)) continue;
    if (method_allowed(r.methods, method)) {
      m.kind = RouteMatch::Kind::found;
      m.target = r.target;
      m.params = std::move(params);
      return m;
    }
    for (const auto& x : r.methods) {
      if (std::find(allowed.begin(), allowed.end(), x) == allowed.end()) allowed.push_back(x);
      if (x == "GET" && std::find(allowed.begin(), allowed.end(), "HEAD") == allowed.end()) allowed.push_back("HEAD");
    }
  }
  if (!allowed.empty()) {
    m.kind = RouteMatch::Kind::method_not_allowed;
    for (const auto& a : allowed) {
      if (!m.allow.empty()) m.allow += ", ";
      m.allow += a;
    }
  }
  return m;
}

}  // namespace nimbus
