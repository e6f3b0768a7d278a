#include "store/blob_files.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/ids.h"
#include "store/store.h"

namespace nimbus {

namespace fs = std::filesystem;

namespace {

constexpr const char* kTmp = ".tmp";
constexpr const char* kLock = ".lock";

Error posix_error(const std::string& what, const fs::path& path, int err) {
  return Error{"cannot " + what + " blob file " + path.string() + ": " + std::strerror(err), store_error::io};
}

// fsync of a folder makes the names in it (a rename) durable, not only the bytes.
int sync_dir(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno;
  int rc = ::fsync(fd) == 0 ? 0 : errno;
  ::close(fd);
  return rc;
}

}  // namespace

BlobFiles::~BlobFiles() {
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the lock
}

Expected<int> BlobFiles::open(const std::function<bool(const std::string&, const std::string&)>& referenced) {
  std::error_code ec;
  fs::create_directories(root_ / kTmp, ec);
  if (ec) return Error{"cannot create the blob folder " + (root_ / kTmp).string() + ": " + ec.message(), store_error::io};
  const fs::path lock = root_ / kLock;
  lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd_ < 0) return posix_error("open the lock", lock, errno);
  int removed = 0;
  // Exclusive only when nobody else has the store open: another process's files in flight
  // (written, not yet committed) must not be taken for a crash's leftovers.
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) == 0) {
    for (const auto& c : fs::directory_iterator(root_, ec)) {
      const std::string container = c.path().filename().string();
      if (container == kLock || !c.is_directory(ec)) continue;
      const bool tmp = container == kTmp;
      for (const auto& f : fs::directory_iterator(c.path(), ec)) {
        if (tmp || !referenced(container, f.path().filename().string())) {
          if (fs::remove(f.path(), ec)) ++removed;
        }
      }
    }
  }
  if (::flock(lock_fd_, LOCK_SH) != 0) return posix_error("lock", lock, errno);
  return removed;
}

Expected<std::string> BlobFiles::write(const std::string& container, std::string_view data) {
  const std::string id = new_invocation_id();
  const fs::path tmp = root_ / kTmp / id;
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return posix_error("create", tmp, errno);
  std::size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return posix_error("write", tmp, err);
    }
    done += static_cast<std::size_t>(n);
  }
  if (fsync_ && ::fsync(fd) != 0) {
    int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return posix_error("sync", tmp, err);
  }
  ::close(fd);
  const fs::path dir = root_ / container;
  std::error_code ec;
  fs::create_directories(dir, ec);
  const fs::path to = dir / id;
  if (::rename(tmp.c_str(), to.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return posix_error("move into place", to, err);
  }
  if (fsync_) {
    if (int err = sync_dir(dir); err != 0) {
      ::unlink(to.c_str());
      return posix_error("sync the folder of", to, err);
    }
  }
  return id;
}

Expected<std::string> BlobFiles::read(const std::string& container, const std::string& id) const {
  const fs::path file = root_ / container / id;
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return Error{"blob file " + file.string() + " is gone", "gone"};
    return posix_error("open", file, errno);
  }
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return posix_error("read", file, err);
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out;
}

void BlobFiles::remove(const std::string& container, const std::string& id) const {
  ::unlink((root_ / container / id).c_str());
}

}  // namespace nimbus
