#pragma once
// The file trigger's settings (`- file: {path, pattern, max_size}`), read in kind.cpp.
#include <cstddef>
#include <filesystem>
#include <string>

#include "core/app_spec.h"

namespace nimbus {

// A folder that legacy systems drop files into; each file whose name matches `pattern` (a
// glob) is one invocation, then moves to processed/ or failed/ under the folder.
struct FileTriggerSpec final : TriggerSettings {
  std::filesystem::path path;  // absolute: relative manifest paths are resolved against the app folder
  std::string pattern = "*";
  std::size_t max_size = 64u << 20;  // larger files fail without running the function
  std::vector<std::filesystem::path> data_folders() const override { return {path}; }
};

}  // namespace nimbus
