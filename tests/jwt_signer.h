#pragma once
// Test-side token minting: RSA and P-256 key pairs made with OpenSSL, their public halves as a
// JWKS document, and JWS compact tokens signed with them (or with an HS256 secret).
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <boost/json.hpp>
#include <memory>
#include <string>

#include "core/text.h"

namespace nimbus::testing {

inline std::string b64url(std::string_view in) {
  std::string s = base64(in);
  for (auto& c : s) {
    if (c == '+') c = '-';
    else if (c == '/') c = '_';
  }
  while (!s.empty() && s.back() == '=') s.pop_back();
  return s;
}

struct TestKey {
  std::string alg, kid;
  std::shared_ptr<EVP_PKEY> pkey;

  static TestKey rsa(std::string kid) {
    return {"RS256", std::move(kid), std::shared_ptr<EVP_PKEY>(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048}), EVP_PKEY_free)};
  }
  static TestKey ec(std::string kid) {
    return {"ES256", std::move(kid), std::shared_ptr<EVP_PKEY>(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"), EVP_PKEY_free)};
  }

  boost::json::object jwk() const {
    auto bn = [&](const char* name) {
      BIGNUM* b = nullptr;
      EVP_PKEY_get_bn_param(pkey.get(), name, &b);
      std::string out(static_cast<std::size_t>(BN_num_bytes(b)), '\0');
      BN_bn2bin(b, reinterpret_cast<unsigned char*>(out.data()));
      BN_free(b);
      return b64url(out);
    };
    if (alg == "RS256") return {{"kty", "RSA"}, {"kid", kid}, {"alg", "RS256"}, {"n", bn(OSSL_PKEY_PARAM_RSA_N)}, {"e", bn(OSSL_PKEY_PARAM_RSA_E)}};
    unsigned char point[65];
    size_t len = 0;
    EVP_PKEY_get_octet_string_param(pkey.get(), OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point, &len);
    std::string p(reinterpret_cast<char*>(point), len);
    return {{"kty", "EC"}, {"crv", "P-256"}, {"kid", kid}, {"x", b64url(p.substr(1, 32))}, {"y", b64url(p.substr(33, 32))}};
  }

  std::string sign(std::string_view data) const {
    EVP_MD_CTX* md = EVP_MD_CTX_new();
    size_t len = 0;
    EVP_DigestSignInit(md, nullptr, EVP_sha256(), nullptr, pkey.get());
    EVP_DigestSign(md, nullptr, &len, reinterpret_cast<const unsigned char*>(data.data()), data.size());
    std::string sig(len, '\0');
    EVP_DigestSign(md, reinterpret_cast<unsigned char*>(sig.data()), &len, reinterpret_cast<const unsigned char*>(data.data()),
                   data.size());
    sig.resize(len);
    EVP_MD_CTX_free(md);
    if (alg != "ES256") return sig;
    const unsigned char* p = reinterpret_cast<const unsigned char*>(sig.data());
    ECDSA_SIG* es = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(sig.size()));
    std::string raw(64, '\0');
    BN_bn2binpad(ECDSA_SIG_get0_r(es), reinterpret_cast<unsigned char*>(raw.data()), 32);
    BN_bn2binpad(ECDSA_SIG_get0_s(es), reinterpret_cast<unsigned char*>(raw.data()) + 32, 32);
    ECDSA_SIG_free(es);
    return raw;
  }

  std::string token(const boost::json::object& claims) const {
    std::string signing = b64url(boost::json::serialize(boost::json::object{{"alg", alg}, {"typ", "JWT"}, {"kid", kid}})) + "." +
                          b64url(boost::json::serialize(claims));
    return signing + "." + b64url(sign(signing));
  }
};

inline std::string jwks(std::initializer_list<const TestKey*> keys) {
  boost::json::array a;
  for (const auto* k : keys) a.push_back(k->jwk());
  return boost::json::serialize(boost::json::object{{"keys", std::move(a)}});
}

inline std::string hs256_token(const std::string& secret, const boost::json::object& claims) {
  std::string signing = b64url(R"({"alg":"HS256","typ":"JWT"})") + "." + b64url(boost::json::serialize(claims));
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()), reinterpret_cast<const unsigned char*>(signing.data()),
       signing.size(), mac, &len);
  return signing + "." + b64url(std::string(reinterpret_cast<char*>(mac), len));
}

}  // namespace nimbus::testing
