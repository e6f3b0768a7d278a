// The store factory: a URL's scheme picks the backend. A backend is a folder under store/ with
// a class implementing Store (passing tests/store_conformance_test.cpp) and one line below.
#include <string_view>

#include "store/postgres/pg_store.h"
#include "store/redis/redis_store.h"
#include "store/sqlite/sqlite_store.h"
#include "store/store.h"

namespace nimbus {
namespace {

struct Backend {
  std::string_view scheme;  // before the ':'
  Expected<std::unique_ptr<Store>> (*open)(const std::string& url, const std::filesystem::path& base,
                                           const Clock& clock, StoreOptions options);
  Expected<StoreFiles> (*files)(const std::string& url, const std::filesystem::path& base);
};

constexpr Backend kBackends[] = {
    {"sqlite", open_sqlite_store, sqlite_store_files},
    {"postgres", open_postgres_store, postgres_store_files},
    {"postgresql", open_postgres_store, postgres_store_files},
    {"redis", open_redis_store, redis_store_files},
};

const Backend* backend_of(const std::string& url) {
  const auto colon = url.find(':');
  if (colon == std::string::npos) return nullptr;
  for (const Backend& b : kBackends) {
    if (b.scheme == std::string_view(url).substr(0, colon)) return &b;
  }
  return nullptr;
}

Error unknown_backend(const std::string& url) {
  std::string known;
  for (const Backend& b : kBackends) known += (known.empty() ? "" : ", ") + std::string(b.scheme) + ":";
  return Error{"store '" + url + "': the " + url.substr(0, url.find(':')) +
               " backend is not available in this build of Nimbus yet; use " + known + "PATH (the embedded store)"};
}

}  // namespace

Expected<std::unique_ptr<Store>> open_store(const std::string& url, const std::filesystem::path& base,
                                            const Clock& clock, StoreOptions options) {
  const Backend* b = backend_of(url);
  if (!b) return unknown_backend(url);
  return b->open(url, base, clock, options);
}

Expected<StoreFiles> store_files(const std::string& url, const std::filesystem::path& base) {
  const Backend* b = backend_of(url);
  if (!b) return unknown_backend(url);
  return b->files(url, base);
}

}  // namespace nimbus
