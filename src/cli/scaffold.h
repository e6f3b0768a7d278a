#pragma once
// `nimbus init` and `nimbus new`: write a new app, or add a function to one, so that
// `nimbus start` serves it with no other step.
#include <filesystem>
#include <string>

#include "core/expected.h"

namespace nimbus {

Status init_app(const std::filesystem::path& dir, const std::string& name);

struct NewFunction {
  std::string name;
  std::string runtime = "native";
  std::string trigger = "http";
};
Status add_function(const std::filesystem::path& app_dir, const NewFunction& spec);

// Inserts `block` (lines indented for a function entry) into the manifest text's functions
// mapping; returns the new text. Pure: tested without files.
Expected<std::string> insert_function_block(const std::string& manifest, const std::string& name,
                                            const std::string& body_lines);

}  // namespace nimbus
