#include "core/blob_path.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>

namespace nimbus {

std::string check_blob_name(std::string_view name) {
  if (name.empty()) return "is empty; expected a path such as 2024/a.csv";
  if (name.size() > kMaxBlobName) {
    return "is " + std::to_string(name.size()) + " bytes long; expected at most " + std::to_string(kMaxBlobName);
  }
  for (char c : name) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return "holds a control character (NUL, newline, ...); expected printable characters only";
    }
  }
  if (name.front() == '/') return "starts with '/'; expected a relative path such as 2024/a.csv";
  if (name.back() == '/') return "ends with '/'; expected it to name a blob, not a folder";
  std::size_t start = 0;
  while (start <= name.size()) {
    std::size_t slash = name.find('/', start);
    std::string_view seg = name.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (seg.empty()) return "has an empty segment ('//'); expected one '/' between names";
    if (seg == "." || seg == "..") return "has a '" + std::string(seg) + "' segment; expected plain names between the '/'";
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return "";
}

std::string check_blob_container(std::string_view c) {
  bool valid = !c.empty() && c.size() <= 63 && ((c[0] >= 'a' && c[0] <= 'z') || (c[0] >= '0' && c[0] <= '9')) &&
               std::all_of(c.begin(), c.end(), [](char ch) {
                 return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' || ch == '_';
               });
  if (valid) return "";
  return "is not a valid container name; expected 1 to 63 lower-case letters, digits, '.', '-' or '_', starting with a "
         "letter or digit";
}

Expected<BlobAddress> split_blob_path(std::string_view path) {
  std::string where;
  where.append("'").append(path).append("'");
  auto slash = path.find('/');
  std::string container(path.substr(0, slash));
  if (auto problem = check_blob_container(container); !problem.empty()) {
    return Error{where + ": container '" + container + "' " + problem};
  }
  if (slash == std::string_view::npos) {
    return Error{where + " names a container only; expected CONTAINER/PATH such as uploads/a.csv"};
  }
  std::string name(path.substr(slash + 1));
  if (auto problem = check_blob_name(name); !problem.empty()) return Error{where + ": blob name " + problem};
  return BlobAddress{std::move(container), std::move(name)};
}

std::string BlobPattern::prefix() const {
  std::string out;
  for (const auto& p : parts) {
    if (p.capture) break;
    out += p.text;
  }
  return out;
}

std::vector<std::string> BlobPattern::captures() const {
  std::vector<std::string> out;
  for (const auto& p : parts)
    if (p.capture) out.push_back(p.text);
  return out;
}

std::optional<BlobPattern> parse_blob_pattern(std::string_view text, std::string* problem) {
  auto fail = [problem](std::string why) -> std::optional<BlobPattern> {
    if (problem) *problem = std::move(why);
    return std::nullopt;
  };
  if (text.empty()) return fail("has no name part; expected CONTAINER/PATTERN such as uploads/{name}.csv");
  BlobPattern out;
  std::size_t i = 0;
  while (i < text.size()) {
    if (text[i] == '}') return fail("has a '}' with no '{' before it; expected captures such as {name}");
    if (text[i] != '{') {
      std::size_t next = text.find_first_of("{}", i);
      std::string literal(text.substr(i, next == std::string_view::npos ? std::string_view::npos : next - i));
      out.parts.push_back({false, false, literal});
      i += literal.size();
      continue;
    }
    std::size_t close = text.find('}', i);
    if (close == std::string_view::npos) return fail("has a '{' with no closing '}'; expected captures such as {name}");
    std::string name(text.substr(i + 1, close - i - 1));
    bool many = !name.empty() && name.back() == '*';
    if (many) name.pop_back();
    bool valid = !name.empty() && ((name[0] >= 'a' && name[0] <= 'z') || name[0] == '_') &&
                 std::all_of(name.begin(), name.end(), [](char c) {
                   return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
                 });
    if (!valid) {
      return fail("has capture '{" + std::string(text.substr(i + 1, close - i - 1)) +
                  "}'; expected a lower-case name such as {name}, or {rest*} to span '/'");
    }
    if (!out.parts.empty() && out.parts.back().capture) {
      return fail("has captures {" + out.parts.back().text + "} and {" + name +
                  "} with nothing between them; expected a literal (such as '/' or '.') to separate them");
    }
    for (const auto& p : out.parts) {
      if (p.capture && p.text == name) return fail("captures {" + name + "} twice; expected each name once");
    }
    out.parts.push_back({true, many, name});
    i = close + 1;
  }
  // The literal parts must be possible inside a valid name (no '..' segments and the like):
  // checked on the pattern with each capture replaced by a plain segment.
  std::string sample;
  for (const auto& p : out.parts) sample += p.capture ? std::string("x") : p.text;
  if (auto why = check_blob_name(sample); !why.empty()) return fail("cannot match any blob name: it " + why);
  return out;
}

namespace {

// A depth-first search, shortest capture first: "{name}.csv" on "a.b.csv" takes "a.b" after
// "a" fails the rest. Whether the parts from `part` on match the name from `at` on does not
// depend on how the search got there, so each (part, at) that failed is remembered: with
// several {x*} captures the search would otherwise take time exponential in their number
// (a crafted upload name would stall the store's writer, which matches blob triggers).
class PatternSearch {
 public:
  PatternSearch(const BlobPattern& pattern, std::string_view name, Headers& captures)
      : pattern_(pattern), name_(name), captures_(captures), failed_((pattern.parts.size() + 1) * (name.size() + 1)) {}

  bool match_from(std::size_t part, std::size_t at) {
    if (part == pattern_.parts.size()) return at == name_.size();
    const std::size_t memo = part * (name_.size() + 1) + at;
    if (failed_[memo]) return false;
    if (!try_part(part, at)) {
      failed_[memo] = true;
      return false;
    }
    return true;
  }

 private:
  bool try_part(std::size_t part, std::size_t at) {
    const auto& p = pattern_.parts[part];
    std::string_view rest = name_.substr(at);
    if (!p.capture) {
      if (rest.substr(0, p.text.size()) != p.text) return false;
      return match_from(part + 1, at + p.text.size());
    }
    std::size_t limit = p.many ? rest.size() : std::min(rest.size(), rest.find('/'));
    for (std::size_t n = 1; n <= limit; ++n) {
      captures_.push_back({p.text, std::string(rest.substr(0, n))});
      if (match_from(part + 1, at + n)) return true;
      captures_.pop_back();
    }
    return false;
  }

  const BlobPattern& pattern_;
  std::string_view name_;
  Headers& captures_;
  std::vector<bool> failed_;  // by part * (name size + 1) + offset
};

}  // namespace

std::optional<Headers> match_blob_pattern(const BlobPattern& pattern, std::string_view name) {
  Headers captures;
  if (!PatternSearch(pattern, name, captures).match_from(0, 0)) return std::nullopt;
  return captures;
}

Expected<std::string> fill_blob_pattern(const BlobPattern& pattern,
                                        const std::function<const std::string*(const std::string&)>& lookup) {
  std::string out;
  for (const auto& p : pattern.parts) {
    if (!p.capture) {
      out += p.text;
      continue;
    }
    const std::string* v = lookup(p.text);
    if (!v || v->empty()) return Error{"has no value for {" + p.text + "}"};
    out += *v;
  }
  return out;
}

std::string_view blob_event_name(BlobEvent event) {
  switch (event) {
    case kBlobCreated: return "created";
    case kBlobUpdated: return "updated";
    case kBlobDeleted: return "deleted";
  }
  return "unknown";
}

// SHA-256 as FIPS 180-4 defines it.
std::string sha256_hex(std::string_view data) {
  static constexpr std::array<uint32_t, 64> k = {
      0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
      0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
      0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
      0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
      0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
      0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
      0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
      0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
  std::array<uint32_t, 8> h = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                               0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  auto rotr = [](uint32_t x, int n) { return (x >> n) | (x << (32 - n)); };
  auto block = [&](const unsigned char* p) {
    uint32_t w[64];
    for (int i = 0; i < 16; ++i) {
      w[i] = (uint32_t(p[4 * i]) << 24) | (uint32_t(p[4 * i + 1]) << 16) | (uint32_t(p[4 * i + 2]) << 8) | p[4 * i + 3];
    }
    for (int i = 16; i < 64; ++i) {
      uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; ++i) {
      uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
      uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      hh = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += hh;
  };
  const auto* bytes = reinterpret_cast<const unsigned char*>(data.data());
  std::size_t full = data.size() / 64 * 64;
  for (std::size_t i = 0; i < full; i += 64) block(bytes + i);
  // The tail, a 1 bit, zeros, and the length in bits (big-endian) fill one or two blocks.
  unsigned char tail[128] = {};
  std::size_t rest = data.size() - full;
  if (rest) std::memcpy(tail, bytes + full, rest);
  tail[rest] = 0x80;
  std::size_t tail_size = rest < 56 ? 64 : 128;
  uint64_t bits = static_cast<uint64_t>(data.size()) * 8;
  for (int i = 0; i < 8; ++i) tail[tail_size - 1 - i] = static_cast<unsigned char>(bits >> (8 * i));
  for (std::size_t i = 0; i < tail_size; i += 64) block(tail + i);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(64);
  for (uint32_t v : h) {
    for (int shift = 28; shift >= 0; shift -= 4) out.push_back(kHex[(v >> shift) & 0xf]);
  }
  return out;
}

}  // namespace nimbus
