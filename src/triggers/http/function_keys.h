#pragma once
// Function keys for routes with `auth: function`: one key per function plus a host key that
// opens every function, kept in .nimbus/keys.json (mode 0600) and generated on first start.
// A caller presents one in the x-functions-key header or the `code` query parameter.
#include <filesystem>
#include <map>
#include <string>

#include "core/app_spec.h"
#include "core/expected.h"

namespace nimbus {

class FunctionKeys {
 public:
  // Reads the file, adding keys for functions that have none yet (and writing it back).
  static Expected<FunctionKeys> load_or_create(const std::filesystem::path& file, const AppSpec& app);

  // Constant-time: true when `presented` is this function's key or the host key.
  bool accepts(const std::string& function, std::string_view presented) const;
  const std::string& host_key() const { return host_; }
  const std::string* key_of(const std::string& function) const;

 private:
  std::string host_;
  std::map<std::string, std::string> functions_;
};

}  // namespace nimbus
