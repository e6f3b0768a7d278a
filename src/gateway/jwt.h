#pragma once
// Verifies bearer tokens for routes with `auth: jwt`: the signature (HS256, RS256, ES256, with
// OpenSSL), then exp / nbf (with clock skew), iss, aud, and the route's scopes and claims.
// A signature is verified once: the token's claims are cached by the token (bounded), so
// the next request with the same token costs a hash lookup (an RS256 verify is ~17 µs, ES256
// ~58 µs: more than a whole request). No OpenSSL in this header.
#include <atomic>
#include <memory>
#include <optional>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/clock.h"
#include "core/expected.h"
#include "core/gateway_spec.h"

namespace nimbus {

class JwtVerifier {
 public:
  // Reads the JWKS file or fetches the JWKS URL (blocking: at start or reload). An error names
  // the file or URL and the key.
  static Expected<std::unique_ptr<JwtVerifier>> make(const JwtSpec& spec, const Clock& clock);

  // With a jwks_url: fetches the keys again when jwks_refresh has passed, or sooner (at most
  // every 30 s) when a token named a kid no key has. Blocking: on an I/O thread. Returns the
  // problem when the fetch failed (the keys in use stay), nothing when all is well.
  std::optional<std::string> refresh_keys();
  // The keys from a JWKS document, replacing the ones in use (tokens verified with the old
  // ones are verified again).
  Status set_keys(const std::string& jwks, const std::string& source);
  ~JwtVerifier();

  struct Verdict {
    int status = 200;         // 200, or 401 (no or bad token), 403 (a scope or claim missing)
    std::string error;        // RFC 6750: invalid_request, invalid_token, insufficient_scope
    std::string description;  // what is wrong, for the JSON error and WWW-Authenticate
    std::string claims;       // the token's claims as JSON, when valid
  };
  // `authorization`: the request's Authorization header (may be empty).
  Verdict verify(std::string_view authorization, const JwtRule& rule);

  // Algorithms and keys it knows, for messages: "HS256, RS256 (kid a1), ES256 (kid b2)".
  std::string describe() const;

  struct Key;

 private:
  JwtVerifier(const JwtSpec& spec, const Clock& clock);
  struct Cached {
    std::string claims;
    std::shared_ptr<const void> parsed;  // boost::json::object, kept parsed for the checks
    int64_t exp = 0, nbf = 0;            // seconds; 0 = absent
  };
  Verdict check(const Cached& c, const JwtRule& rule) const;

  using Keys = std::vector<std::shared_ptr<Key>>;
  std::shared_ptr<const Keys> keys() const;

  JwtSpec spec_;
  const Clock& clock_;
  mutable std::mutex mu_;
  std::shared_ptr<const Keys> keys_;  // under mu_: swapped whole by set_keys
  TimePoint fetched_{};                // jwks_url: the last fetch (I/O thread only)
  std::atomic<bool> unknown_kid_{false};
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, Cached, Hash, std::equal_to<>> cache_;  // by the whole token
};

}  // namespace nimbus
