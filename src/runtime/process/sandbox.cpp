// The bubblewrap command line of a sandboxed worker. The file system inside is built up from
// nothing: the language runtime (/usr and the links into it) and a few /etc files read-only,
// a passwd naming the sandbox user, fresh /proc and /dev, a private /tmp of bounded size, the
// app folder read-only with the host's own files (.nimbus, the store) masked, and only the
// folders the manifest lists as writable bound read-write.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "runtime/process/sandbox.h"
#include "runtime/process/worker_process.h"

namespace nimbus {
namespace fs = std::filesystem;

namespace {

// What a C library, Python and Node read from /etc. Not passwd/shadow/group (ours are made
// up), nothing of the host's own configuration, no private keys (/etc/ssl/private).
constexpr const char* kEtcFiles[] = {"ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "ssl/certs",
                                     "ssl/openssl.cnf", "ca-certificates", "localtime", "timezone", "mime.types",
                                     "nsswitch.conf"};
// Name resolution, only when the sandbox may reach the network.
constexpr const char* kEtcNetworkFiles[] = {"resolv.conf", "hosts", "host.conf", "gai.conf"};

bool inside(const fs::path& path, const fs::path& folder) {
  auto rel = path.lexically_normal().lexically_relative(folder.lexically_normal());
  return !rel.empty() && rel.begin()->string() != "..";
}

void add(std::vector<std::string>& out, std::initializer_list<std::string> args) { out.insert(out.end(), args); }

// /usr, and the top-level folders a merged-/usr system links into it (bound as they are
// elsewhere).
void add_runtime(std::vector<std::string>& out) {
  add(out, {"--ro-bind", "/usr", "/usr"});
  for (const char* top : {"/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"}) {
    std::error_code ec;
    auto st = fs::symlink_status(top, ec);
    if (ec || !fs::exists(st)) continue;
    if (fs::is_symlink(st)) {
      add(out, {"--symlink", fs::read_symlink(top, ec).string(), top});
    } else {
      add(out, {"--ro-bind", top, top});
    }
  }
  for (const char* name : kEtcFiles) add(out, {"--ro-bind-try", std::string("/etc/") + name, std::string("/etc/") + name});
  // Debian's Python reads its sitecustomize from /etc/python3.X.
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/etc", ec)) {
    if (e.path().filename().string().rfind("python", 0) == 0) add(out, {"--ro-bind-try", e.path().string(), e.path().string()});
  }
}

std::string passwd() {
  const std::string uid = std::to_string(kSandboxUid), gid = std::to_string(kSandboxGid);
  return "root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n"
         "nimbus:x:" + uid + ":" + gid + ":nimbus sandbox:/tmp:/usr/sbin/nologin\n"
         "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
}

std::string group() {
  return "root:x:0:\nnimbus:x:" + std::to_string(kSandboxGid) + ":\nnogroup:x:65534:\n";
}

// The host's own files inside the app folder: .nimbus (admin token, function keys, the default
// store, native builds) and a store kept elsewhere in the app. Masked, not left out, so that
// the rest of the app folder stays where the function expects it.
void mask_host_files(const AppSpec& app, std::vector<std::string>& out) {
  std::error_code ec;
  const fs::path state = app.dir / ".nimbus";
  if (fs::is_directory(state, ec)) add(out, {"--tmpfs", state.string()});
  if (app.store.rfind("sqlite:", 0) != 0) return;
  fs::path db = app.store.substr(7);
  if (db.is_relative()) db = app.dir / db;
  if (!inside(db, app.dir) || inside(db, state)) return;
  for (const char* suffix : {"", "-wal", "-shm", "-journal"}) {
    fs::path f = db.string() + suffix;
    if (fs::exists(f, ec)) add(out, {"--ro-bind", "/dev/null", f.string()});
  }
  if (fs::is_directory(db.parent_path() / "blobs", ec)) add(out, {"--tmpfs", (db.parent_path() / "blobs").string()});
}

}  // namespace

std::size_t sandbox_data_limit(const FunctionSpec& fn) {
#if defined(__SANITIZE_ADDRESS__)
  return fn.memory_limit;
#else
  return fn.memory_limit > 0 ? fn.memory_limit : kSandboxDefaultMemory;
#endif
}

Expected<ScratchFile> ScratchFile::with(std::string_view content, int min_fd) {
  int fd = ::memfd_create("nimbus-sandbox", MFD_CLOEXEC);
  if (fd < 0) return Error{std::string("cannot make a sandbox file in memory: memfd_create: ") + std::strerror(errno)};
  if (fd < min_fd) {
    int high = ::fcntl(fd, F_DUPFD_CLOEXEC, min_fd);
    ::close(fd);
    if (high < 0) return Error{std::string("cannot move a sandbox file above fd ") + std::to_string(min_fd) + ": " + std::strerror(errno)};
    fd = high;
  }
  ScratchFile file(fd);
  std::size_t done = 0;
  while (done < content.size()) {
    ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Error{std::string("cannot write a sandbox file in memory: ") + std::strerror(errno)};
    done += static_cast<std::size_t>(n);
  }
  if (::lseek(fd, 0, SEEK_SET) != 0) return Error{std::string("cannot rewind a sandbox file in memory: ") + std::strerror(errno)};
  return file;
}

ScratchFile::~ScratchFile() {
  if (fd_ >= 0) ::close(fd_);
}

SandboxCommand sandbox_command(const AppSpec& app, const FunctionSpec& fn, const SandboxView& view,
                                         const SandboxSetup& setup, std::vector<std::string> argv) {
  SandboxCommand c;
  std::vector<std::string>& out = c.argv;
  if (!setup.cgroup.empty()) {
    // Joins the function's cgroup before bubblewrap forks, so that all it starts is counted.
    add(out, {"/bin/sh", "-c", "echo 0 > \"$0/cgroup.procs\" && exec \"$@\"", setup.cgroup.string()});
  }
  if (::geteuid() == 0) {
    // Mapped to root outside, the sandbox would own every root-owned file it can see, and
    // RLIMIT_NPROC would not apply: bubblewrap runs as the sandbox user instead.
    add(out, {kSetpriv, "--reuid=" + std::to_string(kSandboxUid), "--regid=" + std::to_string(kSandboxGid),
              "--clear-groups", "--"});
  }
  const int first_fd = kWorkerOutFd + 1;
  add(out, {kBubblewrap, "--unshare-user", "--uid", std::to_string(kSandboxUid), "--gid", std::to_string(kSandboxGid),
            "--disable-userns", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--cap-drop", "ALL", "--new-session", "--die-with-parent", "--seccomp", std::to_string(first_fd)});
  if (!fn.network) out.push_back("--unshare-net");
  add_runtime(out);
  add(out, {"--ro-bind-data", std::to_string(first_fd + 1), "/etc/passwd", "--ro-bind-data",
            std::to_string(first_fd + 2), "/etc/group"});
  if (fn.network) {
    for (const char* name : kEtcNetworkFiles) {
      add(out, {"--ro-bind-try", std::string("/etc/") + name, std::string("/etc/") + name});
    }
  }
  const std::size_t memory = fn.memory_limit > 0 ? fn.memory_limit : kSandboxDefaultMemory;
  // /tmp and /dev/shm are memory: bounded, or they would be a way around memory_limit; and
  // /dev itself (a tmpfs bubblewrap fills with device nodes) is read-only for the same reason.
  const std::size_t shm = std::min<std::size_t>(memory, kSandboxShmSize);
  add(out, {"--proc", "/proc", "--dev", "/dev", "--size", std::to_string(shm), "--tmpfs", "/dev/shm", "--remount-ro",
            "/dev", "--size", std::to_string(memory), "--tmpfs", "/tmp"});
  add(out, {"--ro-bind", app.dir.string(), app.dir.string()});
  mask_host_files(app, out);
  for (const auto& dir : fn.writable) add(out, {"--bind", (app.dir / dir).string(), (app.dir / dir).string()});
  for (const auto& path : view.read_only) {
    if (inside(path, "/usr")) continue;
    add(out, {"--ro-bind", path.string(), path.string()});
  }
  // The host's bytecode cache of the SDK and the handler (prepare_sandbox fills it), to read.
  if (std::error_code ec; fn.runtime == RuntimeKind::python && fs::is_directory(app.dir / ".nimbus" / "pycache", ec)) {
    const auto cache = (app.dir / ".nimbus" / "pycache").string();
    add(out, {"--ro-bind", cache, cache});
  }
  // The mask held mount points for what lives under .nimbus (a native build): now read-only.
  if (std::error_code ec; fs::is_directory(app.dir / ".nimbus", ec)) {
    add(out, {"--remount-ro", (app.dir / ".nimbus").string()});
  }
  add(out, {"--chdir", view.cwd.string(), "--"});
  // Limits set from inside: RLIMIT_NPROC counts per user *in the sandbox's own namespace*
  // only when set after it is made; and no fork can run ahead of them.
  add(out, {kPrlimit, "--nproc=" + std::to_string(fn.max_processes) + ":" + std::to_string(fn.max_processes)});
  if (const auto data = sandbox_data_limit(fn); data > 0) {
    out.push_back("--data=" + std::to_string(data) + ":" + std::to_string(data));
  }
  const auto cpu = std::chrono::duration_cast<std::chrono::seconds>(fn.cpu_limit).count();
  if (fn.cpu_limit > Duration::zero()) {
    const auto s = std::to_string(cpu > 0 ? cpu : 1);
    out.push_back("--cpu=" + s + ":" + s);
  }
  if (fn.open_files > 0) out.push_back("--nofile=" + std::to_string(fn.open_files) + ":" + std::to_string(fn.open_files));
  out.push_back("--");
  out.insert(out.end(), std::make_move_iterator(argv.begin()), std::make_move_iterator(argv.end()));
  // An unusable filter becomes an empty program, which bubblewrap refuses: fail closed.
  const auto& program = seccomp_program();
  c.files = {program ? *program : std::string(), passwd(), group()};
  return c;
}

}  // namespace nimbus
