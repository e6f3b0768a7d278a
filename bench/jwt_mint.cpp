// bench/gateway.sh's keys and tokens: writes DIR/jwks.json (an RSA and a P-256 public key)
// and prints two lines, an RS256 token and an ES256 token, valid for a day, audience "bench".
#include <chrono>
#include <fstream>
#include <iostream>

#include "jwt_signer.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: jwt_mint DIR\n";
    return 2;
  }
  using nimbus::testing::TestKey;
  TestKey rsa = TestKey::rsa("bench-rsa"), ec = TestKey::ec("bench-ec");
  std::ofstream(std::string(argv[1]) + "/jwks.json") << nimbus::testing::jwks({&rsa, &ec});
  const int64_t now =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  boost::json::object claims{{"sub", "bench"}, {"aud", "bench"}, {"exp", now + 86400}, {"scope", "read"}};
  std::cout << rsa.token(claims) << "\n" << ec.token(claims) << "\n";
  return 0;
}
