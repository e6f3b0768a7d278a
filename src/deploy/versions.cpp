#include "deploy/versions.h"

#include <algorithm>
#include <boost/json.hpp>
#include <charconv>
#include <cstdio>
#include <future>
#include <set>

#include "deploy/package.h"
#include "store/store.h"

namespace nimbus::deploy {

namespace json = boost::json;

namespace {

constexpr int kCasAttempts = 20;

Expected<BatchResult> commit_and_wait(Store& store, Batch batch) {
  std::promise<Expected<BatchResult>> done;
  auto got = done.get_future();
  store.commit(std::move(batch), [&done](Expected<BatchResult> r) { done.set_value(std::move(r)); });
  return got.get();
}

std::string number_key(int64_t n) {
  char digits[32];
  std::snprintf(digits, sizeof digits, "version/%08lld", static_cast<long long>(n));
  return digits;
}

std::string str(const json::object& o, const char* key) {
  const auto* v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->as_string()) : std::string();
}
int64_t integer(const json::object& o, const char* key) {
  const auto* v = o.if_contains(key);
  return v && v->is_int64() ? v->as_int64() : v && v->is_uint64() ? static_cast<int64_t>(v->as_uint64()) : 0;
}

std::optional<Version> decode_version(const std::string& text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) return std::nullopt;
  const auto& o = v.as_object();
  Version out;
  out.number = integer(o, "number");
  out.id = "v" + std::to_string(out.number);
  out.digest = str(o, "digest");
  out.size = integer(o, "size");
  out.created_ms = integer(o, "created_ms");
  out.message = str(o, "message");
  if (out.number <= 0 || out.digest.empty()) return std::nullopt;
  return out;
}

std::optional<Alias> decode_alias(const std::string& name, const std::string& text, const std::string& etag) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) return std::nullopt;
  const auto& o = v.as_object();
  Alias a;
  a.name = name;
  a.etag = etag;
  a.updated_ms = integer(o, "updated_ms");
  if (auto s = parse_sticky(str(o, "sticky"))) a.sticky = *s;
  auto targets = [&o](const char* key) {
    std::vector<Target> out;
    if (const auto* t = o.if_contains(key); t && t->is_array()) {
      for (const auto& e : t->as_array()) {
        if (!e.is_object()) continue;
        out.push_back({str(e.as_object(), "version"), static_cast<int>(integer(e.as_object(), "weight"))});
      }
    }
    return out;
  };
  a.targets = targets("targets");
  a.previous = targets("previous");
  return a;
}

}  // namespace

bool valid_alias_name(const std::string& name) {
  if (name.empty() || name.size() > 40 || !(name[0] >= 'a' && name[0] <= 'z')) return false;
  if (version_number(name) > 0) return false;
  return std::all_of(name.begin(), name.end(),
                     [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'; });
}

int64_t version_number(const std::string& id) {
  if (id.size() < 2 || id[0] != 'v' || id[1] == '0') return 0;
  int64_t n = 0;
  auto [end, ec] = std::from_chars(id.data() + 1, id.data() + id.size(), n);
  return ec == std::errc() && end == id.data() + id.size() && n > 0 ? n : 0;
}

Expected<std::vector<Target>> parse_weights(const std::vector<std::string>& words) {
  std::vector<Target> out;
  std::set<std::string> seen;
  int sum = 0;
  for (const auto& w : words) {
    const auto eq = w.find('=');
    Target t{w.substr(0, eq), 100};
    if (version_number(t.version) == 0) return Error{"'" + w + "': expected VERSION=WEIGHT such as v3=90"};
    if (eq != std::string::npos) {
      const std::string weight = w.substr(eq + 1);
      int n = -1;
      auto [end, ec] = std::from_chars(weight.data(), weight.data() + weight.size(), n);
      if (ec != std::errc() || end != weight.data() + weight.size() || n < 0 || n > 100) {
        return Error{"'" + w + "': a weight is a whole number from 0 to 100"};
      }
      t.weight = n;
    }
    if (!seen.insert(t.version).second) return Error{"'" + t.version + "' is named twice"};
    sum += t.weight;
    out.push_back(std::move(t));
  }
  if (out.empty()) return Error{"name at least one version, such as v3 or v3=90 v4=10"};
  if (sum != 100) return Error{"the weights sum to " + std::to_string(sum) + "; they must sum to 100"};
  return out;
}

Expected<Sticky> parse_sticky(const std::string& text) {
  if (text.empty()) return Sticky{};
  const auto colon = text.find(':');
  const std::string from = text.substr(0, colon), name = colon == std::string::npos ? "" : text.substr(colon + 1);
  if ((from != "header" && from != "cookie") || name.empty() ||
      !std::all_of(name.begin(), name.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.'; })) {
    return Error{"sticky '" + text + "': expected header:NAME or cookie:NAME"};
  }
  Sticky s;
  s.from = from == "header" ? Sticky::From::header : Sticky::From::cookie;
  s.name = name;
  if (s.from == Sticky::From::header) std::transform(s.name.begin(), s.name.end(), s.name.begin(), ::tolower);
  return s;
}

std::string to_string(const Sticky& sticky) {
  switch (sticky.from) {
    case Sticky::From::header:
      return "header:" + sticky.name;
    case Sticky::From::cookie:
      return "cookie:" + sticky.name;
    case Sticky::From::none:
      break;
  }
  return "";
}

std::string version_json(const Version& v) {
  return json::serialize(json::object{{"version", v.id},
                                      {"number", v.number},
                                      {"digest", v.digest},
                                      {"size", v.size},
                                      {"created_ms", v.created_ms},
                                      {"message", v.message}});
}

std::string alias_json(const Alias& a) {
  auto targets = [](const std::vector<Target>& ts) {
    json::array out;
    for (const auto& t : ts) out.push_back(json::object{{"version", t.version}, {"weight", t.weight}});
    return out;
  };
  json::object o{{"alias", a.name}, {"targets", targets(a.targets)}, {"updated_ms", a.updated_ms}};
  if (!a.previous.empty()) o["previous"] = targets(a.previous);
  if (a.sticky.from != Sticky::From::none) o["sticky"] = to_string(a.sticky);
  return json::serialize(o);
}

Expected<Version> VersionCatalog::add(const std::string& package, const std::string& message) {
  if (package.size() > kMaxPackageBytes) {
    return Error{"the package is larger than " + std::to_string(kMaxPackageBytes >> 20) + " MiB", store_error::too_large};
  }
  const std::string digest = package_digest(package);
  for (int attempt = 0; attempt < kCasAttempts; ++attempt) {
    auto known = store_.get(kDeployStore, "digest/" + digest);
    if (!known) return known.error();
    if (*known) {
      int64_t n = 0;
      std::from_chars((*known)->value.data(), (*known)->value.data() + (*known)->value.size(), n);
      auto got = store_.get(kDeployStore, number_key(n));
      if (!got) return got.error();
      if (*got) {
        if (auto v = decode_version((*got)->value)) return *v;
      }
      return Error{"the store's record of version v" + std::to_string(n) + " is missing or damaged"};
    }
    auto counter = store_.get(kDeployStore, "counter");
    if (!counter) return counter.error();
    int64_t last = 0;
    std::string etag;
    if (*counter) {
      std::from_chars((*counter)->value.data(), (*counter)->value.data() + (*counter)->value.size(), last);
      etag = (*counter)->etag;
    }
    Version v;
    v.number = last + 1;
    v.id = "v" + std::to_string(v.number);
    v.digest = digest;
    v.size = static_cast<int64_t>(package.size());
    v.created_ms = unix_ms(clock_);
    v.message = message;
    Batch b;
    b.puts.push_back({kDeployStore, "counter", std::to_string(v.number), etag, 0});
    b.puts.push_back({kDeployStore, number_key(v.number), version_json(v), std::string(), 0});
    b.puts.push_back({kDeployStore, "digest/" + digest, std::to_string(v.number), std::string(), 0});
    b.blob_puts.push_back({kPackageContainer, digest + ".tar", package, "application/x-tar", {}, std::nullopt, {}, {}});
    auto done = commit_and_wait(store_, std::move(b));
    if (done) return v;
    if (done.error().code != store_error::conflict) return done.error();
    // Another deploy took the number (or stored the same package) first: read again.
  }
  return Error{"cannot number the version: too many deploys at once; try again", store_error::conflict};
}

Expected<std::vector<Version>> VersionCatalog::list() {
  auto rows = store_.scan(kDeployStore, "version/", 100000);
  if (!rows) return rows.error();
  std::vector<Version> out;
  for (const auto& r : *rows) {
    if (auto v = decode_version(r.value)) out.push_back(std::move(*v));
  }
  std::sort(out.begin(), out.end(), [](const Version& a, const Version& b) { return a.number < b.number; });
  return out;
}

Expected<std::optional<Version>> VersionCatalog::find(const std::string& id) {
  const int64_t n = version_number(id);
  if (n == 0) return std::optional<Version>{};
  auto got = store_.get(kDeployStore, number_key(n));
  if (!got) return got.error();
  if (!*got) return std::optional<Version>{};
  return decode_version((*got)->value);
}

Expected<std::string> VersionCatalog::package(const Version& version) {
  auto blob = store_.get_blob(kPackageContainer, version.digest + ".tar");
  if (!blob) return blob.error();
  if (!*blob) return Error{"the package of version " + version.id + " is missing from the store"};
  if (package_digest((*blob)->data) != version.digest) {
    return Error{"the package of version " + version.id + " in the store does not match its digest"};
  }
  return std::move((*blob)->data);
}

Expected<std::optional<Alias>> VersionCatalog::alias(const std::string& name) {
  auto got = store_.get(kDeployStore, "alias/" + name);
  if (!got) return got.error();
  if (!*got) return std::optional<Alias>{};
  return decode_alias(name, (*got)->value, (*got)->etag);
}

Expected<std::vector<Alias>> VersionCatalog::aliases() {
  auto rows = store_.scan(kDeployStore, "alias/", 10000);
  if (!rows) return rows.error();
  std::vector<Alias> out;
  for (const auto& r : *rows) {
    if (auto a = decode_alias(r.key.substr(6), r.value, r.etag)) out.push_back(std::move(*a));
  }
  return out;
}

Status VersionCatalog::put_aliases(const std::vector<Alias>& aliases) {
  Batch b;
  for (const auto& alias : aliases) {
    Alias stored = alias;
    stored.updated_ms = unix_ms(clock_);
    b.puts.push_back({kDeployStore, "alias/" + alias.name, alias_json(stored), alias.etag, 0});
  }
  auto done = commit_and_wait(store_, std::move(b));
  if (!done) return done.error();
  return ok_status();
}

}  // namespace nimbus::deploy
