#include "deploy/package.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <fstream>
#include <memory>
#include <random>
#include <vector>

namespace nimbus::deploy {

namespace fs = std::filesystem;

namespace {

// libarchive's handles, freed on every way out; each call's code is checked by `check`.
struct WriterFree {
  void operator()(archive* a) const { archive_write_free(a); }
};
struct ReaderFree {
  void operator()(archive* a) const { archive_read_free(a); }
};
struct EntryFree {
  void operator()(archive_entry* e) const { archive_entry_free(e); }
};
using Writer = std::unique_ptr<archive, WriterFree>;
using Reader = std::unique_ptr<archive, ReaderFree>;
using Entry = std::unique_ptr<archive_entry, EntryFree>;

Status check(archive* a, int code, const std::string& what) {
  if (code >= ARCHIVE_WARN) return ok_status();
  const char* why = archive_error_string(a);
  return Error{what + ": " + (why ? why : "libarchive error " + std::to_string(code))};
}

la_ssize_t append_to_string(archive*, void* out, const void* buffer, size_t length) {
  static_cast<std::string*>(out)->append(static_cast<const char*>(buffer), length);
  return static_cast<la_ssize_t>(length);
}

// A name inside a package that stays inside its folder: relative, without "." or "..".
bool safe_name(const std::string& name) {
  if (name.empty() || name.front() == '/' || name.find('\0') != std::string::npos) return false;
  for (const auto& part : fs::path(name)) {
    const std::string p = part.string();
    if (p == ".." || p == ".") return false;
  }
  return true;
}

// A link at `name` (relative to the folder) to `target` stays inside the folder.
bool link_inside(const fs::path& name, const fs::path& target) {
  if (target.empty() || target.is_absolute()) return false;
  const fs::path resolved = (name.parent_path() / target).lexically_normal();
  return !resolved.empty() && *resolved.begin() != "..";
}

// What is never packaged: the host's state, version control, .nimbusignore's lines, the caller's.
std::vector<fs::path> left_out(const fs::path& dir, const PackOptions& options) {
  std::vector<fs::path> out{".nimbus", ".git"};
  for (const auto& p : options.leave_out) {
    fs::path rel = p.is_absolute() ? p.lexically_normal().lexically_relative(fs::absolute(dir).lexically_normal()) : p;
    rel = rel.lexically_normal();
    if (!rel.empty() && *rel.begin() != "..") out.push_back(rel);
  }
  if (auto text = std::ifstream(dir / ".nimbusignore"); text) {
    std::string line;
    while (std::getline(text, line)) {
      while (!line.empty() && (line.back() == ' ' || line.back() == '\r' || line.back() == '/')) line.pop_back();
      while (!line.empty() && line.front() == ' ') line.erase(0, 1);
      if (!line.empty() && line.front() != '#') out.push_back(fs::path(line).lexically_normal());
    }
  }
  return out;
}

bool under(const fs::path& relative, const std::vector<fs::path>& roots) {
  for (const auto& r : roots) {
    auto a = relative.begin();
    auto b = r.begin();
    for (; a != relative.end() && b != r.end() && *a == *b; ++a, ++b) {
    }
    if (b == r.end()) return true;
  }
  return false;
}

// Once everything is unpacked: the link at `name` resolves inside `root`, followed as the
// kernel follows it, one part at a time, through any links on the way (at most 40, as its
// ELOOP limit), so that a chain is judged by where it leads and never by its words alone (p ->
// "." and q -> "p/.." each read as inside, yet q climbs out). The folders a link sits in are
// real ones (nothing of a package is written through a link), so the walk starts from them.
Status link_stays_inside(const fs::path& root, const fs::path& name) {
  const auto outside = [&] { return Error{"the package holds a link '" + name.string() + "' to outside its folder"}; };
  std::error_code ec;
  const fs::path first = fs::read_symlink(root / name, ec);
  if (ec || !link_inside(name, first)) return outside();
  std::vector<std::string> at;  // where the walk is, as folders under root
  for (const auto& part : name.parent_path()) at.push_back(part.string());
  std::deque<std::string> todo;
  for (const auto& part : first) todo.push_back(part.string());
  int links = 1;
  while (!todo.empty()) {
    const std::string part = std::move(todo.front());
    todo.pop_front();
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (at.empty()) return outside();
      at.pop_back();
      continue;
    }
    at.push_back(part);
    fs::path here = root;
    for (const auto& a : at) here /= a;
    struct stat info{};
    if (::lstat(here.c_str(), &info) != 0 || !S_ISLNK(info.st_mode)) continue;  // a folder, a file, or nothing
    if (++links > 40) return Error{"the package's link '" + name.string() + "' goes round a loop of links"};
    const fs::path target = fs::read_symlink(here, ec);
    if (ec || target.empty() || target.is_absolute()) return outside();
    at.pop_back();  // a link's target starts from the folder the link is in
    std::vector<std::string> parts;
    for (const auto& t : target) parts.push_back(t.string());
    todo.insert(todo.begin(), parts.begin(), parts.end());
  }
  return ok_status();
}

// Every folder on the way to `name` under `root` is a real folder (made when missing), never a
// link: nothing of a package is written through a link, wherever it points.
Status real_parents(const fs::path& root, const fs::path& name) {
  fs::path at = root;
  for (const auto& part : name.parent_path()) {
    at /= part;
    struct stat info{};
    if (::lstat(at.c_str(), &info) == 0) {
      if (!S_ISDIR(info.st_mode)) return Error{"the package writes '" + name.string() + "' through a link or a file"};
      continue;
    }
    if (::mkdir(at.c_str(), 0755) != 0) return Error{"cannot create " + at.string() + ": " + std::strerror(errno)};
  }
  return ok_status();
}

}  // namespace

Expected<std::string> pack_app(const fs::path& dir, const PackOptions& options, std::vector<std::string>* skipped) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return Error{dir.string() + " is not a folder"};
  const std::vector<fs::path> excluded = left_out(dir, options);
  std::vector<fs::path> names;
  auto skip = [&](const fs::path& full, const std::string& why) -> Status {
    if (!options.skip_unpackable) return Error{full.string() + " " + why};
    if (skipped) skipped->push_back(full.string() + " " + why);
    return ok_status();
  };
  for (fs::recursive_directory_iterator it(dir, fs::directory_options::none, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path relative = it->path().lexically_relative(dir);
    if (under(relative, excluded)) {
      if (it->is_directory(ec) && !it->is_symlink(ec)) it.disable_recursion_pending();
      continue;
    }
    if (it->is_symlink(ec)) {
      if (!link_inside(relative, fs::read_symlink(it->path(), ec))) {
        if (auto st = skip(it->path(), "is a link to outside the folder; a version's package holds what is inside it");
            !st) {
          return st.error();
        }
        continue;
      }
    } else if (!it->is_directory(ec) && !it->is_regular_file(ec)) {
      if (auto st = skip(it->path(), "is neither a file, a folder nor a link"); !st) return st.error();
      continue;
    }
    names.push_back(relative);
  }
  if (ec) return Error{"cannot list " + dir.string() + ": " + ec.message()};
  std::sort(names.begin(), names.end());

  std::string out;
  Writer w(archive_write_new());
  if (!w) return Error{"cannot make a tar archive: out of memory"};
  if (auto st = check(w.get(), archive_write_set_format_pax_restricted(w.get()), "tar format"); !st) return st.error();
  if (auto st = check(w.get(), archive_write_set_bytes_in_last_block(w.get(), 1), "tar blocks"); !st) return st.error();
  // Names in UTF-8 whatever the locale: the same files make the same bytes on every machine.
  if (auto st = check(w.get(), archive_write_set_options(w.get(), "hdrcharset=UTF-8"), "tar names"); !st) return st.error();
  if (auto st = check(w.get(), archive_write_open(w.get(), &out, nullptr, append_to_string, nullptr), "tar open"); !st) {
    return st.error();
  }
  std::vector<char> buffer(1 << 16);
  for (const auto& relative : names) {
    const fs::path full = dir / relative;
    Entry e(archive_entry_new());
    archive_entry_update_pathname_utf8(e.get(), relative.generic_string().c_str());
    archive_entry_set_mtime(e.get(), 0, 0);
    if (fs::is_symlink(full, ec)) {
      archive_entry_set_filetype(e.get(), AE_IFLNK);
      archive_entry_set_perm(e.get(), 0777);
      archive_entry_set_symlink(e.get(), fs::read_symlink(full, ec).c_str());
      if (auto st = check(w.get(), archive_write_header(w.get(), e.get()), "tar " + relative.string()); !st) return st.error();
      continue;
    }
    if (fs::is_directory(full, ec)) {
      archive_entry_set_filetype(e.get(), AE_IFDIR);
      archive_entry_set_perm(e.get(), 0755);
      if (auto st = check(w.get(), archive_write_header(w.get(), e.get()), "tar " + relative.string()); !st) return st.error();
      continue;
    }
    struct stat info{};
    if (::lstat(full.c_str(), &info) != 0 || !S_ISREG(info.st_mode)) {
      if (auto st = skip(full, "went away or changed while it was packaged"); !st) return st.error();
      continue;
    }
    if (out.size() + static_cast<uint64_t>(info.st_size) > kMaxPackageBytes) {
      return Error{"the app folder " + dir.string() + " packs to more than " + std::to_string(kMaxPackageBytes >> 20) +
                   " MiB (" + relative.string() + " is " + std::to_string(info.st_size >> 20) +
                   " MiB); leave data out of it with .nimbusignore"};
    }
    archive_entry_set_filetype(e.get(), AE_IFREG);
    archive_entry_set_perm(e.get(), (info.st_mode & 0111) ? 0755 : 0644);
    archive_entry_set_size(e.get(), info.st_size);
    if (auto st = check(w.get(), archive_write_header(w.get(), e.get()), "tar " + relative.string()); !st) return st.error();
    std::ifstream in(full, std::ios::binary);
    if (!in) return Error{"cannot read " + full.string()};
    int64_t left = info.st_size;
    while (left > 0) {
      const auto want = static_cast<std::streamsize>(std::min<int64_t>(left, static_cast<int64_t>(buffer.size())));
      in.read(buffer.data(), want);
      if (in.gcount() != want) {
        // It shrank under us: the entry's size is promised, so the package cannot be finished.
        return Error{full.string() + " changed while it was packaged; try again"};
      }
      if (archive_write_data(w.get(), buffer.data(), static_cast<size_t>(want)) != want) {
        return Error{"tar " + relative.string() + ": " + (archive_error_string(w.get()) ? archive_error_string(w.get()) : "write failed")};
      }
      left -= want;
    }
    if (out.size() > kMaxPackageBytes) {
      return Error{"the app folder " + dir.string() + " packs to more than " + std::to_string(kMaxPackageBytes >> 20) +
                   " MiB; leave build output and data out of it"};
    }
  }
  if (auto st = check(w.get(), archive_write_close(w.get()), "tar close"); !st) return st.error();
  return out;
}

std::string package_digest(const std::string& package) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(package.data(), package.size(), md, &length, EVP_sha256(), nullptr);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < length; ++i) {
    out.push_back(hex[md[i] >> 4]);
    out.push_back(hex[md[i] & 15]);
  }
  return out;
}

Status unpack_app(const std::string& package, const fs::path& into) {
  if (package.size() > kMaxPackageBytes) return Error{"the package is larger than " + std::to_string(kMaxPackageBytes >> 20) + " MiB"};
  std::error_code ec;
  if (fs::exists(into, ec)) return Error{into.string() + " exists already"};
  fs::create_directories(into.parent_path(), ec);
  if (ec) return Error{"cannot create " + into.parent_path().string() + ": " + ec.message()};
  std::random_device rd;
  const fs::path work = into.parent_path() / ("." + into.filename().string() + ".unpacking-" + std::to_string(rd()));
  fs::create_directory(work, ec);
  if (ec) return Error{"cannot create " + work.string() + ": " + ec.message()};
  struct RemoveUnlessKept {
    fs::path path;
    bool kept = false;
    ~RemoveUnlessKept() {
      std::error_code e;
      if (!kept) fs::remove_all(path, e);
    }
  } cleanup{work};

  Reader r(archive_read_new());
  if (!r) return Error{"cannot read a tar archive: out of memory"};
  archive_read_support_format_tar(r.get());
  if (auto st = check(r.get(), archive_read_open_memory(r.get(), package.data(), package.size()), "the package"); !st) {
    return st.error();
  }
  std::vector<char> buffer(1 << 16);
  std::vector<fs::path> links;
  // A tar holds its files' bytes as they are, so unpacking writes no more than the package's
  // size (a sparse entry could claim terabytes: refused); and no more entries than that bounds.
  uint64_t written = 0, entries = 0;
  for (;;) {
    archive_entry* e = nullptr;
    const int got = archive_read_next_header(r.get(), &e);
    if (got == ARCHIVE_EOF) break;
    if (auto st = check(r.get(), got, "the package"); !st) return st.error();
    const char* raw = archive_entry_pathname_utf8(e);
    if (!raw) raw = archive_entry_pathname(e);
    std::string name = raw ? raw : "";
    while (name.size() > 1 && name.back() == '/') name.pop_back();
    if (!safe_name(name)) return Error{"the package holds a file named '" + name + "', which would be outside its folder"};
    if (++entries > kMaxPackageEntries) return Error{"the package holds more than " + std::to_string(kMaxPackageEntries) + " entries"};
    if (archive_entry_sparse_count(e) > 0) return Error{"the package's '" + name + "' is a sparse file; packages hold plain files"};
    const fs::path target = work / name;
    const auto type = archive_entry_filetype(e);
    if (auto st = real_parents(work, name); !st) return st.error();
    if (type == AE_IFDIR) {
      if (::mkdir(target.c_str(), 0755) != 0 && errno != EEXIST) {
        return Error{"cannot create " + target.string() + ": " + std::strerror(errno)};
      }
      struct stat info{};
      if (::lstat(target.c_str(), &info) != 0 || !S_ISDIR(info.st_mode)) {
        return Error{"the package's folder '" + name + "' is also a file or a link"};
      }
      continue;
    }
    if (type == AE_IFLNK && archive_entry_hardlink(e) == nullptr) {
      const char* to = archive_entry_symlink(e);
      if (!to || !link_inside(name, to)) {
        return Error{"the package holds a link '" + name + "' to outside its folder"};
      }
      if (::symlink(to, target.c_str()) != 0) return Error{"cannot create " + target.string() + ": " + std::strerror(errno)};
      links.push_back(name);
      continue;
    }
    if (type != AE_IFREG || archive_entry_hardlink(e) != nullptr) {
      return Error{"the package holds '" + name + "', which is not a file, a folder or a link (hard links and devices are refused)"};
    }
    const mode_t mode = (archive_entry_perm(e) & 0111) ? 0755 : 0644;
    const int fd = ::open(target.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) return Error{"cannot write " + target.string() + ": " + std::strerror(errno)};
    struct CloseFd {
      int fd;
      ~CloseFd() { ::close(fd); }
    } closer{fd};
    for (;;) {
      const la_ssize_t n = archive_read_data(r.get(), buffer.data(), buffer.size());
      if (n == 0) break;
      if (n < 0) return Error{"the package's '" + name + "' cannot be read: " + (archive_error_string(r.get()) ? archive_error_string(r.get()) : "")};
      written += static_cast<uint64_t>(n);
      if (written > package.size()) return Error{"the package's files add up to more than the package itself"};
      for (la_ssize_t done = 0; done < n;) {
        const ssize_t w = ::write(fd, buffer.data() + done, static_cast<size_t>(n - done));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return Error{"cannot write " + target.string() + ": " + std::strerror(errno)};
        done += w;
      }
    }
  }
  for (const auto& link : links) {
    if (auto st = link_stays_inside(work, link); !st) return st.error();
  }
  fs::rename(work, into, ec);
  if (ec) return Error{"cannot move the unpacked version to " + into.string() + ": " + ec.message()};
  cleanup.kept = true;
  return ok_status();
}

}  // namespace nimbus::deploy
