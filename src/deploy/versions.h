#pragma once
// What the store keeps of deployments, so that every host on a shared store runs the same
// versions: each version (an immutable, content-addressed package of the app folder, numbered
// v1, v2, ... in the order they came) and each alias (`live`, `staging`, your own), which
// names one version or weights over several.
//
//   state store _deploy   "counter"            the last version number given
//                         "version/<8 digits>" a version's record (JSON)
//                         "digest/<sha256>"    its number: the same package is the same version
//                         "alias/<name>"       an alias's record (JSON), written under its ETag
//   blob container nimbus-versions  "<sha256>.tar"  the packages
//
// Synchronous: callers are the admin API's and the deploy thread's, never an event loop.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/expected.h"

namespace nimbus {
class Store;
}

namespace nimbus::deploy {

inline constexpr const char* kDeployStore = "_deploy";
inline constexpr const char* kPackageContainer = "nimbus-versions";

struct Version {
  std::string id;  // "v3"
  int64_t number = 0;
  std::string digest;  // the package's sha256
  int64_t size = 0;    // the package's bytes
  int64_t created_ms = 0;
  std::string message;  // what the deployer said of it
};

struct Target {
  std::string version;  // "v3"
  int weight = 0;       // 0 to 100; an alias's weights sum to 100
};

// How a request keeps its version across requests (a canary shows one user one version):
// hashed from a header's or a cookie's value. Empty: each request is weighed on its own.
struct Sticky {
  enum class From { none, header, cookie } from = From::none;
  std::string name;
};

struct Alias {
  std::string name;
  std::vector<Target> targets;
  Sticky sticky;
  std::vector<Target> previous;  // what it named before its last change (rollback goes back to it)
  int64_t updated_ms = 0;
  std::string etag;  // as read; "" for one not yet stored
};

// An alias name: 1 to 40 lower-case letters, digits, '-' and '_', starting with a letter, and
// not of the form v<number> (those are versions).
bool valid_alias_name(const std::string& name);
// "v3" -> 3; 0 for anything else.
int64_t version_number(const std::string& id);

// "v3=90 v4=10" as separate words (a bare "v3" is 100): the targets, or what is wrong. The
// weights must sum to 100 and name each version once.
Expected<std::vector<Target>> parse_weights(const std::vector<std::string>& words);
// "header:NAME" or "cookie:NAME" ("" = none).
Expected<Sticky> parse_sticky(const std::string& text);
std::string to_string(const Sticky& sticky);

class VersionCatalog {
 public:
  VersionCatalog(Store& store, const Clock& clock) : store_(store), clock_(clock) {}

  // Keeps `package` as a new version, or finds the version it already is (same digest).
  Expected<Version> add(const std::string& package, const std::string& message);
  Expected<std::vector<Version>> list();
  Expected<std::optional<Version>> find(const std::string& id);
  Expected<std::string> package(const Version& version);

  Expected<std::optional<Alias>> alias(const std::string& name);
  Expected<std::vector<Alias>> aliases();
  // Stores it if it is unchanged since it was read (its etag; "" = it must not exist yet).
  // A conflict is store_error::conflict: read it again and retry.
  // Several are written together or none is (a swap).
  Status put_aliases(const std::vector<Alias>& aliases);

 private:
  Store& store_;
  const Clock& clock_;
};

std::string version_json(const Version& v);
std::string alias_json(const Alias& a);

}  // namespace nimbus::deploy
