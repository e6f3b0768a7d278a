#pragma once
// The embedded store's blob bytes: one file per blob version under `<root>/<container>/<id>`
// (`id` random, never reused), written to `<root>/.tmp/` first, fsync'd when the store's
// durability asks for it, and renamed into place before the metadata that names it commits.
// So committed metadata never names a missing file; a crash can only leave files that no
// metadata names, which sweep() removes when the store opens while no other process has it.
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

#include "core/expected.h"

namespace nimbus {

class BlobFiles {
 public:
  BlobFiles(std::filesystem::path root, bool fsync) : root_(std::move(root)), fsync_(fsync) {}
  ~BlobFiles();
  BlobFiles(const BlobFiles&) = delete;
  BlobFiles& operator=(const BlobFiles&) = delete;

  // Makes the folders and takes the store's lock (shared while open). `referenced(container,
  // id)` says whether committed metadata names a file; when this is the only process with the
  // store open, every other file (and every temporary one) is removed. Returns how many.
  Expected<int> open(const std::function<bool(const std::string& container, const std::string& id)>& referenced);

  // Writes `data` as a new file of `container`; returns its id.
  Expected<std::string> write(const std::string& container, std::string_view data);
  // The bytes of a file; an error with code "gone" when it no longer exists (replaced meanwhile).
  Expected<std::string> read(const std::string& container, const std::string& id) const;
  void remove(const std::string& container, const std::string& id) const;

 private:
  std::filesystem::path root_;
  bool fsync_;
  int lock_fd_ = -1;
};

}  // namespace nimbus
