// TLS certificates for the public listener: an OpenSSL server context made from PEM files,
// swapped whole when the files change (connections keep the context they started with).
#include "triggers/http/tls_context.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/stat.h>

#include <boost/asio/ssl/context.hpp>
#include <cerrno>
#include <cstring>
#include <ctime>

namespace nimbus {

namespace ssl = boost::asio::ssl;

namespace {

Expected<FileStamp> stamp(const std::string& file, const char* what) {
  struct stat st{};
  if (::stat(file.c_str(), &st) != 0) return Error{std::string("tls ") + what + " '" + file + "' cannot be read: " + std::strerror(errno)};
  return FileStamp{static_cast<long long>(st.st_size), static_cast<long long>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec,
                   static_cast<unsigned long long>(st.st_ino)};
}

std::string openssl_reason() {
  unsigned long e = ERR_peek_last_error();
  ERR_clear_error();
  if (e == 0) return "unknown error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

// ALPN: HTTP/1.1 when the client offers it; a client offering only h2 goes on without ALPN.
int choose_protocol(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in, unsigned int inlen, void*) {
  for (unsigned int i = 0; i < inlen;) {
    unsigned int len = in[i];
    if (i + 1 + len > inlen) break;
    if (len == 8 && std::memcmp(in + i + 1, "http/1.1", 8) == 0) {
      *out = in + i + 1;
      *outlen = static_cast<unsigned char>(len);
      return SSL_TLSEXT_ERR_OK;
    }
    i += 1 + len;
  }
  return SSL_TLSEXT_ERR_NOACK;
}

std::string describe_leaf(SSL_CTX* ctx) {
  X509* leaf = SSL_CTX_get0_certificate(ctx);
  if (!leaf) return "no certificate";
  char subject[256] = {};
  X509_NAME_oneline(X509_get_subject_name(leaf), subject, sizeof subject - 1);
  std::string out = subject;
  struct tm t{};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(leaf), &t) == 1) {
    char when[32];
    std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &t);
    out += ", not after ";
    out += when;
  }
  return out;
}

struct Made {
  std::shared_ptr<ssl::context> context;
  std::string description;
};

Expected<Made> make_context(const std::string& cert_file, const std::string& key_file) {
  ERR_clear_error();
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  SSL_CTX* raw = ctx->native_handle();
  SSL_CTX_set_min_proto_version(raw, TLS1_2_VERSION);
  SSL_CTX_set_options(raw, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_mode(raw, SSL_MODE_RELEASE_BUFFERS);
  // An encrypted key gets no password (OpenSSL would ask on the terminal, and wait): it fails.
  SSL_CTX_set_default_passwd_cb(raw, [](char*, int, int, void*) { return 0; });  // idle keep-alive connections hold no 34 KiB buffers
  if (SSL_CTX_use_certificate_chain_file(raw, cert_file.c_str()) != 1) {
    return Error{"tls cert '" + cert_file + "' is not a PEM certificate chain: " + openssl_reason()};
  }
  if (SSL_CTX_use_PrivateKey_file(raw, key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
      ERR_clear_error();
      return Error{"tls key '" + key_file + "' does not belong to the certificate in '" + cert_file + "'"};
    }
    return Error{"tls key '" + key_file + "' is not a PEM private key: " + openssl_reason()};
  }
  if (SSL_CTX_check_private_key(raw) != 1) {
    return Error{"tls key '" + key_file + "' does not belong to the certificate in '" + cert_file + "': " + openssl_reason()};
  }
  SSL_CTX_set_alpn_select_cb(raw, choose_protocol, nullptr);
  return Made{ctx, describe_leaf(raw)};
}

}  // namespace

TlsCertificates::~TlsCertificates() = default;

Expected<std::shared_ptr<TlsCertificates>> TlsCertificates::load(const std::string& cert_file, const std::string& key_file) {
  auto cert_stamp = stamp(cert_file, "cert");
  if (!cert_stamp) return cert_stamp.error();
  auto key_stamp = stamp(key_file, "key");
  if (!key_stamp) return key_stamp.error();
  auto made = make_context(cert_file, key_file);
  if (!made) return made.error();
  std::shared_ptr<TlsCertificates> certs(new TlsCertificates());
  certs->impl_ = std::make_unique<Impl>();
  certs->impl_->cert_file = cert_file;
  certs->impl_->key_file = key_file;
  certs->impl_->cert_stamp = *cert_stamp;
  certs->impl_->key_stamp = *key_stamp;
  certs->impl_->context = std::move(made->context);
  certs->impl_->description = std::move(made->description);
  return certs;
}

Expected<bool> TlsCertificates::reload_if_changed() {
  std::lock_guard reloading(impl_->reload_mu);
  auto cert_stamp = stamp(impl_->cert_file, "cert");
  if (!cert_stamp) return cert_stamp.error();
  auto key_stamp = stamp(impl_->key_file, "key");
  if (!key_stamp) return key_stamp.error();
  if (*cert_stamp == impl_->cert_stamp && *key_stamp == impl_->key_stamp) return false;
  auto made = make_context(impl_->cert_file, impl_->key_file);
  // A renewal that writes the two files one after the other is caught between them: the next
  // round (the stamps are kept only on success) tries again.
  if (!made) return made.error();
  impl_->cert_stamp = *cert_stamp;
  impl_->key_stamp = *key_stamp;
  std::lock_guard lock(impl_->mu);
  impl_->context = std::move(made->context);
  impl_->description = std::move(made->description);
  return true;
}

std::string TlsCertificates::describe() const {
  std::lock_guard lock(impl_->mu);
  return impl_->description;
}

}  // namespace nimbus
