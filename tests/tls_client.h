#pragma once
// A blocking HTTPS/1.1 client over OpenSSL for the TLS listener's tests: it verifies the
// server's certificate against a CA file and a host name, keeps its connection alive across
// requests, and reports what was negotiated (protocol version, ALPN, the certificate's subject).
#include <openssl/ssl.h>

#include <filesystem>
#include <map>
#include <string>

#include "harness.h"

namespace nimbus::testing {

struct TlsClientOptions {
  std::string ca_file;                   // trusted: the test's self-signed certificate
  std::string server_name = "localhost"; // SNI, and the name the certificate must carry
  std::string alpn = "http/1.1";         // offered protocols, comma-separated ("h2,http/1.1"); "" none
  int max_version = 0;                   // e.g. TLS1_1_VERSION to offer nothing newer
};

class TlsClient {
 public:
  TlsClient(int port, const TlsClientOptions& options);
  ~TlsClient();
  TlsClient(const TlsClient&) = delete;
  TlsClient& operator=(const TlsClient&) = delete;
  bool connected() const { return ssl_ != nullptr; }
  const std::string& error() const { return error_; }  // why the handshake failed
  std::string peer_common_name() const;
  std::string alpn() const;      // what the server chose, "" for none
  std::string version() const;   // "TLSv1.3"
  // One request on this connection (kept alive); status 0 when the connection failed.
  Response request(const std::string& method, const std::string& target,
                   const std::map<std::string, std::string>& headers = {}, const std::string& body = "");

 private:
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  int fd_ = -1;
  int port_ = 0;
  std::string error_;
  std::string pending_;  // bytes read past the last response
};

// A self-signed certificate (P-256) for CN=`common_name` with subjectAltName localhost and
// 127.0.0.1, written as `cert` and `key` (PEM), made by the openssl command.
void make_certificate(const std::filesystem::path& cert, const std::filesystem::path& key, const std::string& common_name);

}  // namespace nimbus::testing
