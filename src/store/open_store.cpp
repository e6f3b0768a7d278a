// The store factory: a URL's scheme picks the backend. A backend is a folder under store/ with
// a class implementing Store (passing tests/store_conformance_test.cpp) and one line below.
#include <string_view>

#include "store/sqlite/sqlite_store.h"
#include "store/store.h"

namespace nimbus {
namespace {

struct Backend {
  std::string_view scheme;  // before the ':'
  Expected<std::unique_ptr<Store>> (*open)(const std::string& url, const std::filesystem::path& base,
                                           const Clock& clock, StoreOptions options);
};

constexpr Backend kBackends[] = {
    {"sqlite", open_sqlite_store},
};

}  // namespace

Expected<std::unique_ptr<Store>> open_store(const std::string& url, const std::filesystem::path& base,
                                            const Clock& clock, StoreOptions options) {
  const auto colon = url.find(':');
  const std::string scheme = url.substr(0, colon);
  if (colon != std::string::npos) {
    for (const Backend& b : kBackends) {
      if (b.scheme == scheme) return b.open(url, base, clock, options);
    }
  }
  std::string known;
  for (const Backend& b : kBackends) known += (known.empty() ? "" : ", ") + std::string(b.scheme) + ":";
  return Error{"store '" + url + "': the " + scheme + " backend is not available in this build of Nimbus yet; use " +
               known + "PATH (the embedded store)"};
}

}  // namespace nimbus
