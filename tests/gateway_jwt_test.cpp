// JWT verification on its own: real keys made with OpenSSL, the injected clock for exp/nbf.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "core/clock.h"
#include "gateway/jwt.h"
#include "jwt_signer.h"
#include "test_upstream.h"

namespace nimbus::testing {
namespace {

namespace json = boost::json;

// A folder for key files, removed afterwards.
struct KeyDir {
  KeyDir() : root(std::filesystem::temp_directory_path() / ("nimbus-jwt-" + std::to_string(::getpid()))) {
    std::filesystem::create_directories(root);
  }
  ~KeyDir() { std::filesystem::remove_all(root); }
  void write(const std::string& name, const std::string& text) const { std::ofstream(root / name) << text; }
  const std::filesystem::path& path() const { return root; }
  std::filesystem::path root;
};

struct Jwt : ::testing::Test {
  KeyDir dir;
  ManualClock clock;
  TestKey rsa = TestKey::rsa("r1"), ec = TestKey::ec("e1"), stranger = TestKey::rsa("r1");
  std::string secret = std::string(40, 's');
  int64_t now() const {
    return std::chrono::duration_cast<std::chrono::seconds>(clock.wall().time_since_epoch()).count();
  }
  std::unique_ptr<JwtVerifier> verifier(JwtSpec spec = {}) {
    dir.write("jwks.json", jwks({&rsa, &ec}));
    spec.jwks_file = (dir.path() / "jwks.json").string();
    spec.secret = secret;
    auto v = JwtVerifier::make(spec, clock);
    EXPECT_TRUE(v) << (v ? "" : v.error().message);
    return v ? std::move(*v) : nullptr;
  }
  json::object claims(int64_t ttl = 300) const {
    return {{"sub", "alice"}, {"iss", "https://auth.test"}, {"aud", "shop"}, {"exp", now() + ttl}, {"scope", "orders:read cart"}};
  }
};

TEST_F(Jwt, AcceptsRs256Es256AndHs256TokensAndHandsOnTheirClaims) {
  auto v = verifier();
  ASSERT_TRUE(v);
  EXPECT_EQ(v->describe(), "HS256, RS256 (kid 'r1'), ES256 (kid 'e1')");
  for (const std::string& token : {rsa.token(claims()), ec.token(claims()), hs256_token(secret, claims())}) {
    auto verdict = v->verify("Bearer " + token, {});
    EXPECT_EQ(verdict.status, 200) << verdict.description;
    EXPECT_EQ(json::parse(verdict.claims).as_object().at("sub").as_string(), "alice");
    // Again: from the cache, the same answer.
    EXPECT_EQ(v->verify("Bearer " + token, {}).status, 200);
  }
}

TEST_F(Jwt, RefusesForgedTamperedExpiredEarlyAndForeignTokensWithTheReason) {
  JwtSpec spec;
  spec.issuer = "https://auth.test";
  spec.audiences = {"shop"};
  spec.clock_skew = std::chrono::seconds(30);
  auto v = verifier(spec);
  ASSERT_TRUE(v);
  auto refused = [&](const std::string& authorization, int status, const std::string& why) {
    auto verdict = v->verify(authorization, {});
    EXPECT_EQ(verdict.status, status) << authorization;
    EXPECT_NE(verdict.description.find(why), std::string::npos) << verdict.description;
  };
  refused("", 401, "a bearer token is required");
  refused("Basic dXNlcjpwYXNz", 401, "not a bearer token");
  refused("Bearer not-a-jwt", 401, "not a JWS");
  refused("Bearer " + stranger.token(claims()), 401, "signature does not verify");  // same kid, other key
  std::string good = rsa.token(claims());
  std::string tampered = good;
  auto dot = tampered.find('.');
  auto payload = b64url(json::serialize(json::object{{"sub", "mallory"}, {"exp", now() + 300}}));
  tampered = tampered.substr(0, dot + 1) + payload + tampered.substr(tampered.rfind('.'));
  refused("Bearer " + tampered, 401, "signature does not verify");
  refused("Bearer " + hs256_token(std::string(40, 'x'), claims()), 401, "signature does not verify");
  std::string none = b64url(R"({"alg":"none"})") + "." + b64url(json::serialize(claims())) + ".";
  refused("Bearer " + none, 401, "'none' is not accepted");
  auto other_iss = claims();
  other_iss["iss"] = "https://evil.test";
  refused("Bearer " + ec.token(other_iss), 401, "issuer");
  auto other_aud = claims();
  other_aud["aud"] = json::array{"billing", "crm"};
  refused("Bearer " + ec.token(other_aud), 401, "audience");
  auto listed_aud = claims();
  listed_aud["aud"] = json::array{"billing", "shop"};
  EXPECT_EQ(v->verify("Bearer " + ec.token(listed_aud), {}).status, 200);
  // exp and nbf against the injected clock, with the skew.
  std::string short_lived = rsa.token(claims(10));
  EXPECT_EQ(v->verify("Bearer " + short_lived, {}).status, 200);
  clock.advance(std::chrono::seconds(35));  // 25 s past exp: inside the 30 s skew
  EXPECT_EQ(v->verify("Bearer " + short_lived, {}).status, 200);
  clock.advance(std::chrono::seconds(10));  // the cached token is checked again
  refused("Bearer " + short_lived, 401, "expired");
  auto text_exp = claims();
  text_exp["exp"] = std::to_string(now() - 10000);  // a string: never "absent"
  refused("Bearer " + rsa.token(text_exp), 401, "not a number of seconds");
  std::string crit_header = b64url(R"({"alg":"HS256","crit":["exp"],"exp":1})");
  std::string signing = crit_header + "." + b64url(json::serialize(claims()));
  std::string crit_token = hs256_token(secret, claims());
  crit_token = signing + crit_token.substr(crit_token.rfind('.'));
  refused("Bearer " + crit_token, 401, "critical extensions");
  auto early = claims();
  early["nbf"] = now() + 120;
  refused("Bearer " + rsa.token(early), 401, "not valid for another");
}

TEST_F(Jwt, RoutesAskForScopesAndClaims) {
  auto v = verifier();
  ASSERT_TRUE(v);
  auto c = claims();
  c["role"] = "admin";
  c["groups"] = json::array{"ops", "dev"};
  std::string token = "Bearer " + rsa.token(c);
  EXPECT_EQ(v->verify(token, JwtRule{{"orders:read"}, {}}).status, 200);
  auto no_scope = v->verify(token, JwtRule{{"orders:write"}, {}});
  EXPECT_EQ(no_scope.status, 403);
  EXPECT_EQ(no_scope.error, "insufficient_scope");
  EXPECT_EQ(v->verify(token, JwtRule{{}, {{"role", "admin"}, {"groups", "ops"}}}).status, 200);
  EXPECT_EQ(v->verify(token, JwtRule{{}, {{"role", "viewer"}}}).status, 403);
  auto scp = claims();
  scp.erase("scope");
  scp["scp"] = json::array{"orders:write"};
  EXPECT_EQ(v->verify("Bearer " + rsa.token(scp), JwtRule{{"orders:write"}, {}}).status, 200);
}

TEST_F(Jwt, ABadKeySetIsReportedWithTheKeyThatIsWrong) {
  dir.write("bad.json", R"({"keys":[{"kty":"EC","crv":"P-384","kid":"k9","x":"AA","y":"AA"}]})");
  JwtSpec spec;
  spec.jwks_file = (dir.path() / "bad.json").string();
  auto v = JwtVerifier::make(spec, clock);
  ASSERT_FALSE(v);
  EXPECT_NE(v.error().message.find("kid 'k9'"), std::string::npos) << v.error().message;
  EXPECT_NE(v.error().message.find("P-256"), std::string::npos) << v.error().message;
}


TEST_F(Jwt, KeysFromAUrlAreFetchedAtStartAgainWhenAnUnknownKidComesAndKeptWhenTheProviderFails) {
  TestUpstream idp("idp");
  idp.set_reply("/jwks.json", 200, jwks({&rsa}));
  JwtSpec spec;
  spec.jwks_url = "http://127.0.0.1:" + std::to_string(idp.port()) + "/jwks.json";
  auto made = JwtVerifier::make(spec, clock);
  ASSERT_TRUE(made) << made.error().message;
  auto& v = **made;
  EXPECT_EQ(v.describe(), "RS256 (kid 'r1')");
  const std::string old_token = rsa.token(claims(7200)), new_token = ec.token(claims(7200));
  EXPECT_EQ(v.verify("Bearer " + old_token, {}).status, 200);
  EXPECT_NE(v.verify("Bearer " + new_token, {}).description.find("no ES256 key with kid 'e1'"), std::string::npos);

  // The provider rotates: r1 out, e1 in. An unknown kid asks for a fetch, at most every 30 s.
  idp.set_reply("/jwks.json", 200, jwks({&ec}));
  const int fetches = idp.requests();
  EXPECT_FALSE(v.refresh_keys());
  EXPECT_EQ(idp.requests(), fetches) << "not within 30 s of the last fetch";
  clock.advance(std::chrono::seconds(31));
  EXPECT_FALSE(v.refresh_keys());
  EXPECT_EQ(idp.requests(), fetches + 1);
  EXPECT_EQ(v.verify("Bearer " + new_token, {}).status, 200);
  EXPECT_EQ(v.verify("Bearer " + old_token, {}).status, 401) << "a cached token of a key that is gone is verified again";
  EXPECT_FALSE(v.refresh_keys());
  EXPECT_EQ(idp.requests(), fetches + 1) << "nothing is due: no fetch";

  // Every jwks_refresh (10 min) it fetches again; a failing provider leaves the keys in use.
  idp.set_reply("/jwks.json", 500, "{}");
  clock.advance(std::chrono::minutes(10));
  auto problem = v.refresh_keys();
  ASSERT_TRUE(problem);
  EXPECT_NE(problem->find("answered 500"), std::string::npos) << *problem;
  idp.set_reply("/jwks.json", 200, "{\"not\": \"a jwks\"}");
  clock.advance(std::chrono::minutes(10));
  problem = v.refresh_keys();
  ASSERT_TRUE(problem);
  EXPECT_NE(problem->find("is not a JWKS document"), std::string::npos) << *problem;
  idp.stop();
  clock.advance(std::chrono::minutes(10));
  problem = v.refresh_keys();
  ASSERT_TRUE(problem);
  EXPECT_NE(problem->find("cannot connect"), std::string::npos) << *problem;
  EXPECT_EQ(v.verify("Bearer " + new_token, {}).status, 200) << "the last good keys stay in use";

  // At start, a provider that cannot be reached stops the start with the URL and the reason.
  auto unreachable = JwtVerifier::make(spec, clock);
  ASSERT_FALSE(unreachable);
  EXPECT_NE(unreachable.error().message.find("gateway.jwt.jwks_url: cannot connect to 127.0.0.1:"), std::string::npos)
      << unreachable.error().message;
}

}  // namespace
}  // namespace nimbus::testing
