#pragma once
// Files that hold secrets (.nimbus/admin.token, .nimbus/keys.json): written atomically with
// mode 0600 from the first byte, so no other user can ever read them.
#include <filesystem>
#include <string>

#include "core/expected.h"

namespace nimbus {

Status write_private_file(const std::filesystem::path& file, const std::string& content);
Expected<std::string> read_file(const std::filesystem::path& file);

}  // namespace nimbus
