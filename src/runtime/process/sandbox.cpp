// The plan of a sandboxed worker's file system and limits. The file system inside is built up
// from nothing: the language runtime (/usr and the links into it) and a few /etc files read-only,
// a passwd naming the sandbox user, fresh /proc and /dev, a private /tmp of bounded size, the
// app folder read-only with the host's own files (.nimbus, the store) masked, and only the
// folders the manifest lists as writable bound read-write.
#include <unistd.h>

#include <algorithm>
#include <fstream>

#include "runtime/process/sandbox.h"
#include "store/store.h"

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

// The /etc entries a sandbox sees: kEtcFiles, and Debian's Python's sitecustomize
// (/etc/python3.X).
std::vector<fs::path> etc_sources() {
  std::vector<fs::path> out;
  for (const char* name : kEtcFiles) out.push_back(fs::path("/etc") / name);
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/etc", ec)) {
    if (e.path().filename().string().rfind("python", 0) == 0) out.push_back(e.path());
  }
  return out;
}

bool inside(const fs::path& path, const fs::path& folder) {
  auto rel = path.lexically_normal().lexically_relative(folder.lexically_normal());
  return !rel.empty() && rel.begin()->string() != "..";
}

using Kind = SandboxMount::Kind;

void ro(std::vector<SandboxMount>& out, const std::string& path, bool optional = false, const std::string& at = "") {
  out.push_back(SandboxMount::bind(path, at.empty() ? path : at, Kind::bind_ro, optional));
}

// /usr, and the top-level folders a merged-/usr system links into it (bound as they are
// elsewhere); and what /etc holds, file by file, when there is no prepared /etc.
void add_runtime(std::vector<SandboxMount>& out, bool etc_files) {
  ro(out, "/usr");
  for (const char* top : {"/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"}) {
    std::error_code ec;
    auto st = fs::symlink_status(top, ec);
    if (ec || !fs::exists(st)) continue;
    if (fs::is_symlink(st)) {
      out.push_back(SandboxMount::link(fs::read_symlink(top, ec).string(), top));
    } else {
      ro(out, top);
    }
  }
  if (!etc_files) return;
  for (const auto& path : etc_sources()) ro(out, path.string(), true);
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
void mask_host_files(const AppSpec& app, std::vector<SandboxMount>& out) {
  std::error_code ec;
  const fs::path state = app.dir / ".nimbus";
  if (fs::is_directory(state, ec)) out.push_back(SandboxMount::at(Kind::tmpfs, state.string(), 1u << 20));
  auto kept = store_files(app.store, app.dir);  // the store part knows where its backend keeps data
  if (!kept) return;
  for (const auto& f : kept->files) {
    if (inside(f, app.dir) && !inside(f, state) && fs::exists(f, ec)) {
      out.push_back(SandboxMount::bind("/dev/null", f.string()));
    }
  }
  for (const auto& d : kept->folders) {
    if (inside(d, app.dir) && !inside(d, state) && fs::is_directory(d, ec)) {
      out.push_back(SandboxMount::at(Kind::tmpfs, d.string(), 1u << 20));
      out.push_back(SandboxMount::at(Kind::remount_ro, d.string()));
    }
  }
}

}  // namespace

std::size_t sandbox_data_limit(const FunctionSpec& fn) {
#if defined(__SANITIZE_ADDRESS__)
  return fn.memory_limit;
#else
  return fn.memory_limit > 0 ? fn.memory_limit : kSandboxDefaultMemory;
#endif
}

Expected<fs::path> make_sandbox_etc(const fs::path& dir) {
  std::error_code ec;
  const fs::path etc = dir / "etc";
  const fs::path fresh = dir / ("etc.new-" + std::to_string(::getpid()));
  fs::remove_all(fresh, ec);
  fs::create_directories(fresh, ec);
  if (ec) return Error{"cannot make the sandbox's /etc in " + fresh.string() + ": " + ec.message()};
  fs::permissions(dir, fs::perms(0755), ec);
  fs::permissions(fresh, fs::perms(0755), ec);
  for (const fs::path& source : etc_sources()) {
    const auto status = fs::symlink_status(source, ec);
    if (ec || !fs::exists(status)) continue;
    const fs::path to = fresh / source.lexically_relative("/etc");
    fs::create_directories(to.parent_path(), ec);
    // Links are kept as links: they point into /usr (zoneinfo, certificates, alternatives),
    // which the sandbox has.
    if (fs::is_symlink(status)) {
      fs::copy_symlink(source, to, ec);
    } else {
      fs::copy(source, to, fs::copy_options::recursive | fs::copy_options::copy_symlinks, ec);
    }
    if (ec) return Error{"cannot copy " + source.string() + " into the sandbox's /etc (" + to.string() + "): " + ec.message()};
  }
  auto write = [&](const char* name, const std::string& text) {
    std::ofstream out(fresh / name, std::ios::binary | std::ios::trunc);
    out << text;
    return static_cast<bool>(out.flush());
  };
  if (!write("passwd", passwd()) || !write("group", group()) ||
      !write("hosts", "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n")) {
    return Error{"cannot write the sandbox's /etc files in " + fresh.string()};
  }
  // The resolver's files are bound over these (network: true): the mount points must exist.
  for (const char* name : kEtcNetworkFiles) {
    if (!fs::exists(fresh / name, ec)) std::ofstream(fresh / name).flush();
  }
  // Readable to the sandbox user (a root host's umask may have made them private).
  for (auto it = fs::recursive_directory_iterator(fresh, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_symlink(ec)) continue;
    fs::permissions(it->path(), it->is_directory(ec) ? fs::perms(0755) : fs::perms(0644), ec);
  }
  fs::remove_all(etc, ec);
  fs::rename(fresh, etc, ec);
  if (ec) return Error{"cannot put the sandbox's /etc in place at " + etc.string() + ": " + ec.message()};
  return etc;
}

std::vector<SandboxMount> sandbox_minimal_mounts() {
  return {SandboxMount::bind("/usr", "/usr"),         SandboxMount::link("usr/bin", "/bin"),
          SandboxMount::link("usr/lib", "/lib"),      SandboxMount::link("usr/lib64", "/lib64"),
          SandboxMount::at(Kind::proc, "/proc"),      SandboxMount::at(Kind::dev, "/dev"),
          SandboxMount::at(Kind::tmpfs, "/tmp", 1u << 20, 01777)};
}

SandboxPlan sandbox_plan(const AppSpec& app, const FunctionSpec& fn, const SandboxView& view,
                         const SandboxSetup& setup) {
  SandboxPlan plan;
  plan.network = fn.network;
  plan.cgroup = setup.cgroup;
  std::vector<SandboxMount>& out = plan.mounts;
  add_runtime(out, setup.etc.empty());
  if (!setup.etc.empty()) {
    ro(out, setup.etc.string(), false, "/etc");
  } else {
    out.push_back(SandboxMount::file("/etc/passwd", passwd()));
    out.push_back(SandboxMount::file("/etc/group", group()));
  }
  if (fn.network) {
    for (const char* name : kEtcNetworkFiles) ro(out, std::string("/etc/") + name, true);
  }
  const std::size_t memory = fn.memory_limit > 0 ? fn.memory_limit : kSandboxDefaultMemory;
  // /tmp and /dev/shm are memory: bounded, or they would be a way around memory_limit; and
  // /dev itself is read-only for the same reason.
  out.push_back(SandboxMount::at(Kind::proc, "/proc"));
  out.push_back(SandboxMount::at(Kind::dev, "/dev"));
  out.push_back(SandboxMount::at(Kind::tmpfs, "/dev/shm", std::min<std::size_t>(memory, kSandboxShmSize), 01777));
  out.push_back(SandboxMount::at(Kind::remount_ro, "/dev"));
  out.push_back(SandboxMount::at(Kind::tmpfs, "/tmp", memory, 01777));
  ro(out, app.dir.string());
  for (const auto& dir : fn.writable) {
    const auto path = (app.dir / dir).string();
    out.push_back(SandboxMount::bind(path, path, Kind::bind_rw));
  }
  // After the writable folders, so that none can cover a mask (check_sandbox_plan refuses a
  // store inside one anyway).
  mask_host_files(app, out);
  for (const auto& path : view.read_only) {
    if (!inside(path, "/usr")) ro(out, path.string());
  }
  // The host's bytecode cache of the SDK and the handler (prepare_sandbox fills it), to read.
  if (std::error_code ec; fn.runtime == RuntimeKind::python && fs::is_directory(app.dir / ".nimbus" / "pycache", ec)) {
    ro(out, (app.dir / ".nimbus" / "pycache").string());
  }
  // The mask held mount points for what lives under .nimbus (a native build): now read-only.
  if (std::error_code ec; fs::is_directory(app.dir / ".nimbus", ec)) {
    out.push_back(SandboxMount::at(Kind::remount_ro, (app.dir / ".nimbus").string()));
  }
  plan.max_processes = fn.max_processes;
  plan.data_limit = sandbox_data_limit(fn);
  if (fn.cpu_limit > Duration::zero()) {
    const auto cpu = std::chrono::duration_cast<std::chrono::seconds>(fn.cpu_limit).count();
    plan.cpu_seconds = cpu > 0 ? cpu : 1;
  }
  plan.open_files = fn.open_files;
  // An unusable filter (prepare_sandbox reports it at start) leaves this empty, and the
  // launcher refuses to start without one: fail closed.
  if (const auto& program = seccomp_program(); program) plan.seccomp = *program;
  return plan;
}

namespace {

// The real path of `path`, as far as it exists.
fs::path real(const fs::path& path) {
  std::error_code ec;
  fs::path out = fs::weakly_canonical(path, ec);
  return ec ? path.lexically_normal() : out;
}

}  // namespace

Status check_sandbox_plan(const AppSpec& app, const std::string& function, const SandboxPlan& plan) {
  struct Writable {
    fs::path path;
    std::string name;   // as the manifest writes it
    std::string owner;  // the function
  };
  std::vector<Writable> writable;
  for (const auto& fn : app.functions) {
    if (fn.isolation != Isolation::sandbox) continue;
    for (const auto& dir : fn.writable) writable.push_back({real(app.dir / dir), dir, fn.name});
  }
  auto where = [&](const Writable& w) {
    return "the folder " + w.name + " that function '" + w.owner + "' may write (writable:)";
  };
  for (const SandboxMount& m : plan.mounts) {
    const bool bind = m.kind == SandboxMount::Kind::bind_ro || m.kind == SandboxMount::Kind::bind_rw;
    const bool mask = m.kind == SandboxMount::Kind::tmpfs || (bind && m.source == "/dev/null");
    if (!bind && !mask) continue;
    const fs::path path = real(mask ? m.target : m.source);
    for (const Writable& w : writable) {
      const bool under = path != w.path && inside(path, w.path);
      if (mask && (under || path == w.path) && inside(path, app.dir)) {
        return Error{"function '" + function + "': the store's " + (m.kind == SandboxMount::Kind::tmpfs ? "blob folder " : "file ") +
                     path.string() + " is inside " + where(w) + ": a sandbox could read or replace it. Keep the store " +
                     "outside writable folders (the default, .nimbus/state.db, is)"};
      }
      if (!under) continue;
      if (m.kind == SandboxMount::Kind::bind_rw) {
        return Error{"function '" + function + "': writable folder " + path.string() + " is inside " + where(w) +
                     ": a sandbox could swap it for a link to any host folder. Use one of them, or folders side by side"};
      }
      return Error{"function '" + function + "': isolation: sandbox shows it " + path.string() + ", which is inside " +
                   where(w) + ": a sandbox could replace it with a link to a host file. Keep it out of writable folders"};
    }
  }
  return ok_status();
}

}  // namespace nimbus
