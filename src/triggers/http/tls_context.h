#pragma once
// Inside the HTTP server only (server.cpp, tls.cpp): the Asio TLS context behind a
// TlsCertificates. Everything else sees server.h, which has no Asio.
#include <boost/asio/ssl/context.hpp>
#include <memory>
#include <mutex>
#include <string>

#include "triggers/http/server.h"

namespace nimbus {

struct FileStamp {
  long long size = -1, mtime_ns = -1;
  unsigned long long inode = 0;
  bool operator==(const FileStamp&) const = default;
};

struct TlsCertificates::Impl {
  std::string cert_file, key_file;
  std::mutex reload_mu;  // one reload at a time (the refresh round, `nimbus reload`)
  FileStamp cert_stamp, key_stamp;  // under reload_mu
  mutable std::mutex mu;
  std::shared_ptr<boost::asio::ssl::context> context;  // under mu
  std::string description;                             // under mu
  std::shared_ptr<boost::asio::ssl::context> current() const {
    std::lock_guard lock(mu);
    return context;
  }
};

}  // namespace nimbus
