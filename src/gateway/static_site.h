#pragma once
// Static files for a web front end (`static: {dir, index, spa, max_age}` on a gateway route):
// the folder is read into memory when the host starts or reloads (never on an event loop),
// then served from there: ETag / If-None-Match (304), single byte ranges (206, 416),
// Cache-Control, HEAD, and an SPA fallback (a path with no file extension gets the index).
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "core/expected.h"
#include "core/gateway_spec.h"
#include "core/invocation.h"

namespace nimbus {

class IncomingRequest;

class StaticSite {
 public:
  // Reads every regular file under spec.dir; refuses a folder over spec.max_total bytes.
  static Expected<std::unique_ptr<StaticSite>> load(const StaticSpec& spec);

  // `path`: the file's path under the folder, as the route's catch-all captured it (decoded).
  HttpReply serve(std::string_view method, std::string_view path, IncomingRequest& request) const;

  std::size_t files() const { return files_.size(); }
  std::size_t bytes() const { return bytes_; }

 private:
  struct File {
    std::string body, content_type, etag;
  };
  const File* find(std::string_view path) const;
  StaticSpec spec_;
  std::map<std::string, File, std::less<>> files_;  // "/index.html"
  std::size_t bytes_ = 0;
};

// The Content-Type for a file name, by its extension ("application/octet-stream" if unknown).
std::string_view content_type_for(std::string_view name);

}  // namespace nimbus
