#include "tls_client.h"

#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <stdexcept>

namespace nimbus::testing {

namespace {
std::string last_openssl_error() {
  unsigned long e = ERR_get_error();
  if (e == 0) return "no OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}
}  // namespace

TlsClient::TlsClient(int port, const TlsClientOptions& options) : port_(port) {
  ctx_ = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
  if (!options.ca_file.empty() && SSL_CTX_load_verify_locations(ctx_, options.ca_file.c_str(), nullptr) != 1) {
    error_ = "cannot load CA " + options.ca_file + ": " + last_openssl_error();
    return;
  }
  if (options.max_version) SSL_CTX_set_max_proto_version(ctx_, options.max_version);
  if (options.max_version && options.max_version < TLS1_2_VERSION) SSL_CTX_set_security_level(ctx_, 0);
  if (!options.alpn.empty()) {
    std::string wire;
    std::size_t start = 0;
    while (start <= options.alpn.size()) {
      auto comma = options.alpn.find(',', start);
      std::string p = options.alpn.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      wire += static_cast<char>(p.size());
      wire += p;
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    SSL_CTX_set_alpn_protos(ctx_, reinterpret_cast<const unsigned char*>(wire.data()), static_cast<unsigned>(wire.size()));
  }
  fd_ = connect_to(port);
  if (fd_ < 0) {
    error_ = "connection refused";
    return;
  }
  timeval tv{10, 0};
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  SSL* ssl = SSL_new(ctx_);
  SSL_set_fd(ssl, fd_);
  SSL_set_tlsext_host_name(ssl, options.server_name.c_str());
  SSL_set1_host(ssl, options.server_name.c_str());
  if (SSL_connect(ssl) != 1) {
    error_ = "handshake failed: " + last_openssl_error();
    SSL_free(ssl);
    return;
  }
  ssl_ = ssl;
}

TlsClient::~TlsClient() {
  if (ssl_) {
    SSL_shutdown(ssl_);
    SSL_free(ssl_);
  }
  if (fd_ >= 0) ::close(fd_);
  if (ctx_) SSL_CTX_free(ctx_);
}

std::string TlsClient::peer_common_name() const {
  if (!ssl_) return "";
  X509* cert = SSL_get1_peer_certificate(ssl_);
  if (!cert) return "";
  char cn[256] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn);
  X509_free(cert);
  return cn;
}

std::string TlsClient::alpn() const {
  if (!ssl_) return "";
  const unsigned char* p = nullptr;
  unsigned int n = 0;
  SSL_get0_alpn_selected(ssl_, &p, &n);
  return std::string(reinterpret_cast<const char*>(p ? p : reinterpret_cast<const unsigned char*>("")), n);
}

std::string TlsClient::version() const { return ssl_ ? SSL_get_version(ssl_) : ""; }

Response TlsClient::request(const std::string& method, const std::string& target,
                            const std::map<std::string, std::string>& headers, const std::string& body) {
  if (!ssl_) return {};
  std::string out = method + " " + target + " HTTP/1.1\r\n";
  if (!headers.count("Host")) out += "Host: localhost:" + std::to_string(port_) + "\r\n";
  for (const auto& [k, v] : headers) out += k + ": " + v + "\r\n";
  if (!body.empty() || method == "POST" || method == "PUT") out += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  out += "\r\n" + body;
  if (SSL_write(ssl_, out.data(), static_cast<int>(out.size())) != static_cast<int>(out.size())) return {};
  std::string raw = std::move(pending_);
  pending_.clear();
  char buf[16384];
  std::size_t need = std::string::npos;
  for (;;) {
    auto end = raw.find("\r\n\r\n");
    if (end != std::string::npos && need == std::string::npos) {
      std::size_t length = 0;
      Response head = parse_response(raw.substr(0, end + 4));
      if (auto cl = head.header("content-length"); !cl.empty()) length = std::stoul(cl);
      need = end + 4 + (method == "HEAD" ? 0 : length);
    }
    if (need != std::string::npos && raw.size() >= need) break;
    int n = SSL_read(ssl_, buf, sizeof buf);
    if (n <= 0) return {};
    raw.append(buf, static_cast<std::size_t>(n));
  }
  pending_ = raw.substr(need);
  raw.resize(need);
  return parse_response(raw);
}

void make_certificate(const std::filesystem::path& cert, const std::filesystem::path& key, const std::string& common_name) {
  const std::string cmd = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=" +
                          common_name + " -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout '" + key.string() +
                          "' -out '" + cert.string() + "' 2>/dev/null";
  if (std::system(cmd.c_str()) != 0) throw std::runtime_error("openssl req failed: " + cmd);
}

}  // namespace nimbus::testing
