#include "core/private_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace nimbus {

Status write_private_file(const std::filesystem::path& file, const std::string& content) {
  std::error_code ec;
  std::filesystem::create_directories(file.parent_path(), ec);
  auto tmp = file;
  tmp += ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Error{"cannot write " + tmp.string() + ": " + std::strerror(errno)};
  const char* p = content.data();
  std::size_t left = content.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return Error{"cannot write " + tmp.string() + ": " + std::strerror(err)};
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  ::fchmod(fd, 0600);
  ::close(fd);
  if (::rename(tmp.c_str(), file.c_str()) != 0) {
    return Error{"cannot write " + file.string() + ": " + std::strerror(errno)};
  }
  return ok_status();
}

Expected<std::string> read_file(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return Error{"cannot read " + file.string() + ": " + std::strerror(errno)};
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

}  // namespace nimbus
