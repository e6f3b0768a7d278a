#pragma once
// API keys for gateway routes with `auth: api_key`: made by `nimbus keys create NAME
// [--quota 1000/h]`, shown once, kept in the store only as a SHA-256 hash (state store
// `_api_keys`, so every host on a shared store knows them), revoked by name. A key is
// "nk_<id>.<secret>": the id finds the record, the secret is checked against its hash in
// constant time. Each host holds the records in memory (the event loops never read the
// store) and reloads them every second off the loops, so a new or revoked key counts on every
// host within about a second. A key's quota is a token bucket, one for all the hosts of a
// shared store (gateway/rate_sync.h), else per host.
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "core/expected.h"
#include "core/gateway_spec.h"
#include "gateway/policies.h"
#include "gateway/rate_sync.h"

namespace nimbus {

class Store;

inline constexpr const char* kApiKeysStore = "_api_keys";

struct ApiKeyRecord {
  std::string id, name, hash;  // hash: SHA-256 hex of the secret
  std::optional<RateLimitSpec> quota;
  int64_t created_ms = 0;
};

// A new key for `name` (1-64 letters, digits, '-', '_', '.'), with its record to store.
struct NewApiKey {
  std::string key;  // shown once
  ApiKeyRecord record;
};
Expected<NewApiKey> make_api_key(const std::string& name, const std::string& quota, int64_t now_ms);
std::string encode_api_key(const ApiKeyRecord& r);
std::optional<ApiKeyRecord> decode_api_key(std::string_view json);
// "100/s", "6000/m", "1000/h", "10000/d" as a token bucket (burst: the count); an error names
// the text. The manifest's rate_limit.rate and `nimbus keys --quota` both read rates with it.
Expected<RateLimitSpec> parse_quota(const std::string& text);

class ApiKeys {
 public:
  // `sync`: quotas shared by the hosts of a shared store (null: each host counts its own).
  ApiKeys(Store& store, const Clock& clock, std::shared_ptr<RateLimitSync> sync = nullptr)
      : store_(store), clock_(clock), sync_(std::move(sync)) {}
  // Reads every record from the store (blocking: not on an event loop).
  Status load();

  struct Check {
    int status = 200;  // or 401 (missing, unknown, wrong), 429 (over its quota), 503 (keys stale)
    std::string message;
    std::string name;  // the key's name, when valid
    std::optional<RateLimiter::Decision> quota;
  };
  // On a loop: `presented` from the X-Api-Key header.
  Check check(std::string_view presented);
  std::size_t size() const;

 private:
  struct Entry {
    ApiKeyRecord record;
    std::shared_ptr<RateLimiter> limiter;  // kept across reloads while the quota is the same
  };
  Store& store_;
  const Clock& clock_;
  std::shared_ptr<RateLimitSync> sync_;
  mutable std::mutex mu_;
  std::map<std::string, Entry, std::less<>> by_id_;
  TimePoint loaded_at_{};
  static constexpr Duration kMaxStale = std::chrono::seconds(30);
};

}  // namespace nimbus
