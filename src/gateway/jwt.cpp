#include "gateway/jwt.h"
#include "gateway/fetch.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>

#include <boost/json.hpp>
#include <algorithm>
#include <fstream>
#include <optional>
#include <sstream>

#include "core/text.h"

namespace nimbus {

namespace json = boost::json;

struct JwtVerifier::Key {
  std::string kid;
  std::string alg;  // RS256 or ES256
  EVP_PKEY* pkey = nullptr;
  ~Key() { EVP_PKEY_free(pkey); }
};

namespace {

constexpr std::size_t kMaxCached = 20000;

std::optional<std::string> base64url_decode(std::string_view in) {
  std::string s(in);
  for (auto& c : s) {
    if (c == '-') c = '+';
    else if (c == '_') c = '/';
    else if (c == '+' || c == '/' || c == '=') return std::nullopt;  // not the URL alphabet
  }
  while (s.size() % 4) s.push_back('=');
  return base64_decode(s);
}

std::string str(const json::object& o, std::string_view key) {
  auto* v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

// A NumericDate claim (RFC 7519 2): 0 when absent, nullopt when present but not a number of
// seconds in range (a string, null, a huge double): such a token is refused, not let through.
std::optional<int64_t> seconds_claim(const json::object& o, std::string_view key) {
  auto* v = o.if_contains(key);
  if (!v) return 0;
  if (v->is_int64() && v->as_int64() > 0) return v->as_int64();
  if (v->is_uint64() && v->as_uint64() < (uint64_t{1} << 62)) return static_cast<int64_t>(v->as_uint64());
  if (v->is_double() && v->as_double() > 0 && v->as_double() < 4e18) return static_cast<int64_t>(v->as_double());
  return std::nullopt;
}

struct Params {
  OSSL_PARAM_BLD* bld = OSSL_PARAM_BLD_new();
  OSSL_PARAM* params = nullptr;
  std::vector<BIGNUM*> bns;
  ~Params() {
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    for (auto* b : bns) BN_free(b);
  }
  BIGNUM* bn(const std::string& bytes) {
    bns.push_back(BN_bin2bn(reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()), nullptr));
    return bns.back();
  }
};

EVP_PKEY* key_from(const char* type, Params& p) {
  p.params = OSSL_PARAM_BLD_to_param(p.bld);
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr);
  EVP_PKEY* pkey = nullptr;
  if (!ctx || EVP_PKEY_fromdata_init(ctx) <= 0 || EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, p.params) <= 0) {
    pkey = nullptr;
  }
  EVP_PKEY_CTX_free(ctx);
  return pkey;
}

// One JWK (RFC 7517/7518) as a public key, or what is wrong with it.
Expected<std::shared_ptr<JwtVerifier::Key>> read_jwk(const json::object& jwk) {
  auto key = std::make_shared<JwtVerifier::Key>();
  key->kid = str(jwk, "kid");
  const std::string kty = str(jwk, "kty");
  auto field = [&](const char* name) -> Expected<std::string> {
    auto v = base64url_decode(str(jwk, name));
    if (!v || v->empty()) return Error{"its '" + std::string(name) + "' is missing or not base64url"};
    return *v;
  };
  if (kty == "RSA") {
    auto n = field("n");
    if (!n) return n.error();
    auto e = field("e");
    if (!e) return e.error();
    Params p;
    OSSL_PARAM_BLD_push_BN(p.bld, OSSL_PKEY_PARAM_RSA_N, p.bn(*n));
    OSSL_PARAM_BLD_push_BN(p.bld, OSSL_PKEY_PARAM_RSA_E, p.bn(*e));
    key->alg = "RS256";
    key->pkey = key_from("RSA", p);
  } else if (kty == "EC") {
    if (str(jwk, "crv") != "P-256") return Error{"its curve is '" + str(jwk, "crv") + "'; only P-256 (ES256) is supported"};
    auto x = field("x");
    if (!x) return x.error();
    auto y = field("y");
    if (!y) return y.error();
    if (x->size() != 32 || y->size() != 32) return Error{"its x and y are not 32 bytes each (P-256)"};
    std::string point = "\x04" + *x + *y;
    Params p;
    OSSL_PARAM_BLD_push_utf8_string(p.bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0);
    OSSL_PARAM_BLD_push_octet_string(p.bld, OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size());
    key->alg = "ES256";
    key->pkey = key_from("EC", p);
  } else {
    return Error{"its kty is '" + kty + "'; expected RSA (RS256) or EC (ES256)"};
  }
  if (!key->pkey) return Error{"OpenSSL does not take it as a public key"};
  if (auto alg = str(jwk, "alg"); !alg.empty() && alg != key->alg) {
    return Error{"its alg is '" + alg + "', but its key is for " + key->alg};
  }
  return key;
}

bool verify_signature(const JwtVerifier::Key& key, std::string_view data, const std::string& sig) {
  std::string der;
  const std::string* signature = &sig;
  if (key.alg == "ES256") {
    // JWS carries r||s (RFC 7518 3.4); OpenSSL verifies DER.
    if (sig.size() != 64) return false;
    ECDSA_SIG* es = ECDSA_SIG_new();
    BIGNUM* r = BN_bin2bn(reinterpret_cast<const unsigned char*>(sig.data()), 32, nullptr);
    BIGNUM* s = BN_bin2bn(reinterpret_cast<const unsigned char*>(sig.data()) + 32, 32, nullptr);
    ECDSA_SIG_set0(es, r, s);
    unsigned char* out = nullptr;
    int len = i2d_ECDSA_SIG(es, &out);
    if (len > 0) der.assign(reinterpret_cast<char*>(out), static_cast<std::size_t>(len));
    OPENSSL_free(out);
    ECDSA_SIG_free(es);
    if (der.empty()) return false;
    signature = &der;
  }
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  bool ok = md && EVP_DigestVerifyInit(md, nullptr, EVP_sha256(), nullptr, key.pkey) == 1 &&
            EVP_DigestVerify(md, reinterpret_cast<const unsigned char*>(signature->data()), signature->size(),
                             reinterpret_cast<const unsigned char*>(data.data()), data.size()) == 1;
  EVP_MD_CTX_free(md);
  return ok;
}

JwtVerifier::Verdict refuse(int status, std::string error, std::string description) {
  JwtVerifier::Verdict v;
  v.status = status;
  v.error = std::move(error);
  v.description = std::move(description);
  return v;
}

bool claim_has(const json::value& v, const std::string& want) {
  if (v.is_string()) return v.as_string() == want;
  if (v.is_array()) {
    for (const auto& x : v.as_array())
      if (claim_has(x, want)) return true;
    return false;
  }
  return json::serialize(v) == want;
}

}  // namespace

JwtVerifier::JwtVerifier(const JwtSpec& spec, const Clock& clock) : spec_(spec), clock_(clock) {}
JwtVerifier::~JwtVerifier() = default;

Status JwtVerifier::set_keys(const std::string& text, const std::string& source) {
  boost::system::error_code ec;
  json::value doc = json::parse(text, ec);
  if (ec || !doc.is_object() || !doc.as_object().if_contains("keys") || !doc.as_object().at("keys").is_array()) {
    return Error{source + " is not a JWKS document ({\"keys\": [...]})"};
  }
  auto next = std::make_shared<Keys>();
  const auto& keys = doc.as_object().at("keys").as_array();
  for (std::size_t i = 0; i < keys.size(); ++i) {
    if (!keys[i].is_object()) return Error{source + ": key " + std::to_string(i) + " is not an object"};
    const auto& jwk = keys[i].as_object();
    if (auto use = str(jwk, "use"); !use.empty() && use != "sig") continue;  // an encryption key: not ours
    auto key = read_jwk(jwk);
    if (!key) {
      // A provider's JWKS may hold kinds of keys we do not verify with (EdDSA, RS512): those
      // are left out from a URL; a file is the operator's own and must be all good.
      if (!spec_.jwks_url.empty()) continue;
      return Error{source + ": key " + std::to_string(i) + " (kid '" + str(jwk, "kid") + "'): " + key.error().message};
    }
    next->push_back(std::move(*key));
  }
  if (next->empty() && spec_.secret.empty()) return Error{source + " holds no RS256 or ES256 key"};
  std::lock_guard lock(mu_);
  keys_ = std::move(next);
  cache_.clear();  // a token verified with a key that is gone is verified again
  return ok_status();
}

std::shared_ptr<const JwtVerifier::Keys> JwtVerifier::keys() const {
  std::lock_guard lock(mu_);
  return keys_;
}

Expected<std::unique_ptr<JwtVerifier>> JwtVerifier::make(const JwtSpec& spec, const Clock& clock) {
  std::unique_ptr<JwtVerifier> v(new JwtVerifier(spec, clock));
  v->keys_ = std::make_shared<Keys>();
  if (!spec.jwks_file.empty()) {
    std::ifstream in(spec.jwks_file);
    if (!in) return Error{"gateway.jwt.jwks_file: cannot read " + spec.jwks_file};
    std::stringstream text;
    text << in.rdbuf();
    if (auto st = v->set_keys(text.str(), "gateway.jwt.jwks_file: " + spec.jwks_file); !st) return st.error();
  }
  if (!spec.jwks_url.empty()) {
    auto body = fetch_url(spec.jwks_url, spec.jwks_ca, std::chrono::seconds(5), 1u << 20);
    if (!body) return Error{"gateway.jwt.jwks_url: " + body.error().message};
    if (auto st = v->set_keys(*body, "gateway.jwt.jwks_url: " + spec.jwks_url); !st) return st.error();
    v->fetched_ = clock.now();
  }
  if (spec.secret.empty() && v->keys_->empty()) {
    return Error{"gateway.jwt has no keys: give a secret (HS256), a jwks_file or a jwks_url with RS256/ES256 keys"};
  }
  return v;
}

std::optional<std::string> JwtVerifier::refresh_keys() {
  if (spec_.jwks_url.empty()) return std::nullopt;
  const TimePoint now = clock_.now();
  const bool due = now - fetched_ >= spec_.jwks_refresh;
  const bool rotated = unknown_kid_.load() && now - fetched_ >= std::chrono::seconds(30);
  if (!due && !rotated) return std::nullopt;
  fetched_ = now;  // a failed fetch waits its turn too: the provider is not hammered
  unknown_kid_.store(false);
  auto body = fetch_url(spec_.jwks_url, spec_.jwks_ca, std::chrono::seconds(5), 1u << 20);
  if (!body) return "gateway.jwt.jwks_url: " + body.error().message;
  if (auto st = set_keys(*body, "gateway.jwt.jwks_url: " + spec_.jwks_url); !st) return st.error().message;
  return std::nullopt;
}

std::string JwtVerifier::describe() const {
  std::string out = spec_.secret.empty() ? "" : "HS256";
  for (const auto& k : *keys()) out += (out.empty() ? "" : ", ") + k->alg + " (kid '" + k->kid + "')";
  return out;
}

JwtVerifier::Verdict JwtVerifier::verify(std::string_view authorization, const JwtRule& rule) {
  if (authorization.empty()) return refuse(401, "invalid_request", "a bearer token is required: Authorization: Bearer <JWT>");
  if (authorization.size() < 7 || !std::equal(authorization.begin(), authorization.begin() + 7, "bearer ",
                                              [](char a, char b) { return std::tolower(static_cast<unsigned char>(a)) == b; })) {
    return refuse(401, "invalid_request", "the Authorization header is not a bearer token; expected Authorization: Bearer <JWT>");
  }
  std::string_view token = authorization.substr(7);
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  const auto dot1 = token.find('.');
  const auto dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) {
    return refuse(401, "invalid_token", "the token is not a JWS compact serialization (header.payload.signature)");
  }
  const std::string_view signature_text = token.substr(dot2 + 1);
  {
    std::lock_guard lock(mu_);
    auto it = cache_.find(token);  // the whole token: header, claims and signature
    if (it != cache_.end()) return check(it->second, rule);
  }
  auto header_text = base64url_decode(token.substr(0, dot1));
  auto payload_text = base64url_decode(token.substr(dot1 + 1, dot2 - dot1 - 1));
  auto signature = base64url_decode(signature_text);
  if (!header_text || !payload_text || !signature) return refuse(401, "invalid_token", "the token is not base64url");
  boost::system::error_code ec;
  json::value header = json::parse(*header_text, ec);
  if (ec || !header.is_object()) return refuse(401, "invalid_token", "the token's header is not a JSON object");
  json::value payload = json::parse(*payload_text, ec);
  if (ec || !payload.is_object()) return refuse(401, "invalid_token", "the token's claims are not a JSON object");
  if (header.as_object().contains("crit")) {
    // RFC 7515 4.1.11: extensions we do not understand must not be ignored.
    return refuse(401, "invalid_token", "the token's header names critical extensions (crit), which are not supported");
  }
  const std::string alg = str(header.as_object(), "alg");
  const std::string kid = str(header.as_object(), "kid");
  const std::string_view signed_part = token.substr(0, dot2);
  bool valid = false;
  if (alg == "HS256") {
    if (spec_.secret.empty()) return refuse(401, "invalid_token", "HS256 tokens are not accepted here (no secret)");
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    HMAC(EVP_sha256(), spec_.secret.data(), static_cast<int>(spec_.secret.size()),
         reinterpret_cast<const unsigned char*>(signed_part.data()), signed_part.size(), mac, &len);
    valid = signature->size() == len && CRYPTO_memcmp(mac, signature->data(), len) == 0;
  } else if (alg == "RS256" || alg == "ES256") {
    bool known = false;
    const auto keys_now = keys();
    for (const auto& k : *keys_now) {
      if (k->alg != alg || (!kid.empty() && k->kid != kid)) continue;
      known = true;
      if (verify_signature(*k, signed_part, *signature)) {
        valid = true;
        break;
      }
    }
    if (!known) {
      unknown_kid_.store(true);  // perhaps a key the provider has just rotated in
      return refuse(401, "invalid_token", "no " + alg + " key" + (kid.empty() ? std::string() : " with kid '" + kid + "'") +
                                              " is known here");
    }
  } else {
    return refuse(401, "invalid_token", "the algorithm '" + alg + "' is not accepted; expected HS256, RS256 or ES256");
  }
  if (!valid) return refuse(401, "invalid_token", "the token's signature does not verify");
  auto exp = seconds_claim(payload.as_object(), "exp");
  auto nbf = seconds_claim(payload.as_object(), "nbf");
  if (!exp || !nbf) return refuse(401, "invalid_token", "the token's exp or nbf is not a number of seconds");
  Cached c;
  c.claims = json::serialize(payload);  // one line, whatever the token's layout: fit for a header
  c.exp = *exp;
  c.nbf = *nbf;
  c.parsed = std::make_shared<json::object>(std::move(payload.as_object()));
  Verdict v = check(c, rule);
  std::lock_guard lock(mu_);
  if (cache_.size() >= kMaxCached) cache_.clear();  // bounded; a miss costs one verify again
  cache_.emplace(std::string(token), std::move(c));
  return v;
}

JwtVerifier::Verdict JwtVerifier::check(const Cached& c, const JwtRule& rule) const {
  const auto& claims = *static_cast<const json::object*>(c.parsed.get());
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(clock_.wall().time_since_epoch()).count();
  const int64_t skew = std::chrono::duration_cast<std::chrono::seconds>(spec_.clock_skew).count();
  if (c.exp != 0 && now > c.exp + skew) {
    return refuse(401, "invalid_token", "the token expired " + std::to_string(now - c.exp) + " s ago");
  }
  if (c.nbf != 0 && now + skew < c.nbf) {
    return refuse(401, "invalid_token", "the token is not valid for another " + std::to_string(c.nbf - now) + " s");
  }
  if (!spec_.issuer.empty() && str(claims, "iss") != spec_.issuer) {
    return refuse(401, "invalid_token", "the token's issuer is '" + str(claims, "iss") + "'; expected '" + spec_.issuer + "'");
  }
  if (!spec_.audiences.empty()) {
    const json::value* aud = claims.if_contains("aud");
    bool ok = false;
    for (const auto& a : spec_.audiences) ok = ok || (aud && claim_has(*aud, a));
    if (!ok) return refuse(401, "invalid_token", "the token is not for this audience");
  }
  for (const auto& scope : rule.scopes) {
    bool has = false;
    if (const auto* s = claims.if_contains("scope"); s && s->is_string()) {
      std::string_view rest = s->as_string();
      while (!rest.empty() && !has) {
        auto space = rest.find(' ');
        has = rest.substr(0, space) == scope;
        rest = space == std::string_view::npos ? std::string_view() : rest.substr(space + 1);
      }
    }
    if (const auto* s = claims.if_contains("scp"); !has && s) has = claim_has(*s, scope);
    if (!has) return refuse(403, "insufficient_scope", "the token lacks the scope '" + scope + "'");
  }
  for (const auto& want : rule.claims) {
    const json::value* v = claims.if_contains(want.name);
    if (!v || !claim_has(*v, want.value)) {
      return refuse(403, "insufficient_scope", "the token's claim '" + want.name + "' is not '" + want.value + "'");
    }
  }
  Verdict ok;
  ok.claims = c.claims;
  return ok;
}

}  // namespace nimbus
