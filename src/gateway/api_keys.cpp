#include "gateway/api_keys.h"

#include <boost/json.hpp>
#include <algorithm>
#include <cctype>
#include <charconv>

#include "core/blob_path.h"
#include "core/ids.h"
#include "store/store.h"

namespace nimbus {

namespace json = boost::json;

Expected<RateLimitSpec> parse_quota(const std::string& text) {
  RateLimitSpec r;
  r.text = text;
  const auto slash = std::min(text.find('/'), text.size());
  double count = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + slash, count);
  const std::string unit = slash < text.size() ? text.substr(slash + 1) : "";
  const double seconds = unit == "s" ? 1 : unit == "m" ? 60 : unit == "h" ? 3600 : unit == "d" ? 86400 : 0;
  if (ec != std::errc() || end != text.data() + slash || count < 1 || seconds == 0) {
    return Error{"'" + text + "' is not a rate; expected N/s, N/m, N/h or N/d, e.g. 100/s or 1000/h"};
  }
  r.rate = count / seconds;
  r.burst = count;
  r.per = RateLimitSpec::Per::route;  // one bucket: the key's own
  return r;
}

Expected<NewApiKey> make_api_key(const std::string& name, const std::string& quota, int64_t now_ms) {
  if (name.empty() || name.size() > 64 || !std::all_of(name.begin(), name.end(), [](unsigned char c) {
        return std::isalnum(c) || c == '-' || c == '_' || c == '.';
      })) {
    return Error{"the key name '" + name + "' is not valid; expected 1 to 64 letters, digits, '-', '_' or '.'"};
  }
  NewApiKey k;
  k.record.id = sha256_hex(new_secret(16)).substr(0, 12);
  k.record.name = name;
  k.record.created_ms = now_ms;
  if (!quota.empty()) {
    auto q = parse_quota(quota);
    if (!q) return q.error();
    k.record.quota = *q;
  }
  const std::string secret = new_secret(32);
  k.record.hash = sha256_hex(secret);
  k.key = "nk_" + k.record.id + "." + secret;
  return k;
}

std::string encode_api_key(const ApiKeyRecord& r) {
  json::object o{{"id", r.id}, {"name", r.name}, {"hash", r.hash}, {"created_ms", r.created_ms}};
  if (r.quota) o["quota"] = r.quota->text;
  return json::serialize(o);
}

std::optional<ApiKeyRecord> decode_api_key(std::string_view text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) return std::nullopt;
  const auto& o = v.as_object();
  auto str = [&](const char* k) {
    auto* x = o.if_contains(k);
    return x && x->is_string() ? std::string(x->as_string()) : std::string();
  };
  ApiKeyRecord r;
  r.id = str("id");
  r.name = str("name");
  r.hash = str("hash");
  if (auto* c = o.if_contains("created_ms"); c && c->is_int64()) r.created_ms = c->as_int64();
  if (auto q = str("quota"); !q.empty()) {
    auto spec = parse_quota(q);
    if (!spec) return std::nullopt;
    r.quota = *spec;
  }
  if (r.id.empty() || r.hash.size() != 64) return std::nullopt;
  return r;
}

Status ApiKeys::load() {
  auto rows = store_.scan(kApiKeysStore, "", 100000);
  if (!rows) return Error{"cannot read the API keys: " + rows.error().message};
  // Parsed without the lock (the loops take it to check keys); then swapped in.
  std::vector<ApiKeyRecord> records;
  for (const auto& row : *rows) {
    if (auto r = decode_api_key(row.value)) records.push_back(std::move(*r));
  }
  std::map<std::string, Entry, std::less<>> next;
  std::map<std::string, Entry, std::less<>> old;
  {
    std::lock_guard lock(mu_);
    old = by_id_;
  }
  for (auto& r : records) {
    Entry e;
    // A key whose quota is unchanged keeps its bucket (a reload must not refill it).
    if (auto o = old.find(r.id); o != old.end() && o->second.limiter && o->second.record.quota && r.quota &&
                                 o->second.record.quota->text == r.quota->text) {
      e.limiter = o->second.limiter;
    } else if (r.quota) {
      e.limiter = std::make_shared<RateLimiter>(*r.quota, clock_, 1, sync_ ? "api_key " + r.id : std::string());
      if (sync_) sync_->add(e.limiter);
    }
    e.record = std::move(r);
    next.emplace(e.record.id, std::move(e));
  }
  {
    std::lock_guard lock(mu_);
    by_id_.swap(next);
    loaded_at_ = clock_.now();
  }
  return ok_status();
}

std::size_t ApiKeys::size() const {
  std::lock_guard lock(mu_);
  return by_id_.size();
}

ApiKeys::Check ApiKeys::check(std::string_view presented) {
  Check c;
  c.status = 401;
  if (presented.empty()) {
    c.message = "an API key is required: send it in the X-Api-Key header";
    return c;
  }
  auto dot = presented.find('.');
  if (presented.rfind("nk_", 0) != 0 || dot == std::string_view::npos) {
    c.message = "the API key is not valid";
    return c;
  }
  std::string_view id = presented.substr(3, dot - 3);
  const std::string hash = sha256_hex(presented.substr(dot + 1));
  std::shared_ptr<RateLimiter> limiter;
  {
    std::lock_guard lock(mu_);
    // Fail closed: keys not reloaded for a while may include revoked ones.
    if (clock_.now() - loaded_at_ > kMaxStale) {
      c.status = 503;
      c.message = "API keys cannot be checked: the store has not been read for over " +
                  std::to_string(std::chrono::duration_cast<std::chrono::seconds>(kMaxStale).count()) + " s";
      return c;
    }
    auto it = by_id_.find(id);
    if (it == by_id_.end() || !secrets_equal(hash, it->second.record.hash)) {
      c.message = "the API key is not valid (unknown or revoked)";
      return c;
    }
    c.name = it->second.record.name;
    limiter = it->second.limiter;
  }
  c.status = 200;
  if (limiter) {
    c.quota = limiter->take("");
    if (!c.quota->allowed) {
      c.status = 429;
      c.message = "the API key '" + c.name + "' is over its quota; retry after " + std::to_string(c.quota->retry_after_s) + " s";
    }
  }
  return c;
}

}  // namespace nimbus
