#pragma once
// An app version's package: the app folder (nimbus.yaml and the functions' files) as one tar
// archive made the same way every time, so that the same files give the same bytes and the
// same digest (content-addressed versions). Unpacking refuses anything that could write
// outside its folder.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "core/expected.h"

namespace nimbus::deploy {

// Larger packages are refused (the store keeps each one as a blob).
inline constexpr std::size_t kMaxPackageBytes = 256u << 20;
inline constexpr uint64_t kMaxPackageEntries = 200000;

struct PackOptions {
  // Left out besides .nimbus/ (the host's own state), .git/ and what .nimbusignore lists (one
  // path relative to the folder a line; # comments): absolute, or relative to the folder.
  std::vector<std::filesystem::path> leave_out;
  // Links that point outside the folder, and special files, are left out (each said in
  // `skipped`) instead of refusing the package.
  bool skip_unpackable = false;
};

// The folder's files, folders and links (those that point inside it: node_modules/.bin), in
// name order, with neither times nor owners.
Expected<std::string> pack_app(const std::filesystem::path& dir, const PackOptions& options = {},
                               std::vector<std::string>* skipped = nullptr);

// The package's sha256, as 64 hex digits.
std::string package_digest(const std::string& package);

// Writes the package's files under `into`, which must not exist yet (it is made whole or not
// at all: the files go to a sibling folder first, renamed into place at the end). Refused:
// absolute names, "..", links that point outside the folder, anything written through a link,
// hard links and device files, and packages past kMaxPackageBytes.
Status unpack_app(const std::string& package, const std::filesystem::path& into);

}  // namespace nimbus::deploy
