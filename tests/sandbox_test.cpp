// isolation: sandbox as a security boundary (docs/security.md): one test per promise, each
// probing from inside a sandboxed Python function of a real host. We run as root in a
// container, so each denial is checked from the inside, where root would mask it.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <fstream>
#include <gtest/gtest.h>

#include "harness.h"

namespace nimbus::testing {
namespace {

namespace json = boost::json;

// Every probe is one handler, picked by ?what=; it reports what it saw as JSON.
constexpr const char* kProbe = R"PY(
import ctypes, errno, os, socket
libc = ctypes.CDLL(None, use_errno=True)
here = os.path.dirname(os.path.abspath(__file__))

def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e))

def read(path):
    if os.path.isdir(path):
        return os.listdir(path)
    with open(path, "rb") as f:
        return f.read()

def call(nr, *args):
    rc = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return "ok" if rc >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")

def status():
    lines = open("/proc/self/status").read().splitlines()
    return {k: v.strip() for k, v in (l.split(":", 1) for l in lines) if k in
            ("CapEff", "CapPrm", "CapBnd", "NoNewPrivs", "Seccomp")}

def procs():
    out = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                out[p] = open("/proc/%s/cmdline" % p, "rb").read().replace(b"\0", b" ").decode()
            except OSError:
                out[p] = "?"
    return out

def fork_bomb(limit):
    r, w = os.pipe()
    pids, error = [], "none"
    while len(pids) < limit:
        try:
            pid = os.fork()
        except OSError as e:
            error = errno.errorcode.get(e.errno, str(e))
            break
        if pid == 0:
            os.close(w)
            os.read(r, 1)  # until the parent lets go
            os._exit(0)
        pids.append(pid)
    os.close(w)
    for pid in pids:
        os.waitpid(pid, 0)
    os.close(r)
    return {"forked": len(pids), "error": error}

def memory_bomb():
    hoard = []
    while len(hoard) < 1024:  # 16 GiB at most: never reached under a limit
        hoard.append(bytearray(16 << 20))
    return {"hoarded_mib": 16 * len(hoard)}

def disk_bomb(path):
    written, error = 0, "none"
    try:
        with open(path, "wb") as f:
            chunk = b"x" * (1 << 20)
            while written < 256:  # MiB; a limit stops it well before
                f.write(chunk)
                f.flush()
                written += 1
    except OSError as e:
        error = errno.errorcode.get(e.errno, str(e))
    os.unlink(path)
    return {"written_mib": written, "error": error}

def admin(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    s.sendall(b"GET /admin/functions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return s.recv(64).decode().split("\r\n")[0]

def probe(req, ctx):
    what = req.query["what"]
    if what == "hello":
        return {"hello": "world"}
    if what == "reads":
        return {p: attempt(lambda p=p: read(p)) for p in req.query["paths"].split(",")}
    if what == "identity":
        return {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "status": status(),
                "home": os.environ.get("HOME"), "env": sorted(os.environ)}
    if what == "procs":
        return {"pid": os.getpid(), "procs": procs()}
    if what == "writes":
        def write(path):
            with open(path, "w") as f:
                f.write("x")
        return {p: attempt(lambda p=p: write(p)) for p in req.query["paths"].split(",")}
    if what == "syscalls":
        return {
            "ptrace": call(101, 0, 0, 0, 0),                       # PTRACE_TRACEME
            "unshare": call(272, 0x10000000),                      # CLONE_NEWUSER
            "mount": call(165, 0, 0, 0, 0, 0),
            "userfaultfd": call(323, 1),                           # UFFD_USER_MODE_ONLY
            "keyctl": call(250, 0, -2, 0),                         # KEYCTL_GET_KEYRING_ID, session
            "bpf": call(321, 0, 0, 0),
            "fork": fork_bomb(1)["error"],                         # plain forks still work
        }
    if what == "fork":
        return fork_bomb(int(req.query["limit"]))
    if what == "memory":
        return memory_bomb()
    if what == "disk":
        return disk_bomb(req.query["path"])
    if what == "admin":
        try:
            return {"admin": admin(int(req.query["port"]))}
        except OSError as e:
            return {"admin": errno.errorcode.get(e.errno, str(e))}
    raise ValueError("unknown probe " + what)
)PY";

json::object parse_object(const std::string& s) {
  boost::system::error_code ec;
  auto v = json::parse(s, ec);
  if (ec || !v.is_object()) return {};
  return v.as_object();
}

std::string text(const json::object& o, const char* key) {
  auto* v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->as_string()) : (v ? json::serialize(*v) : "<missing>");
}

// An app with a sandboxed probe (`box`), one with the network (`online`), and one with tight
// limits (`bomb`); `extra_env` is set in the host's own environment.
struct SandboxApp {
  SandboxApp() {
    dir.write("nimbus.yaml",
              "name: box\nfunctions:\n"
              "  box:\n    runtime: python\n    handler: app.py:probe\n    isolation: sandbox\n"
              "    writable: [out]\n    env: {GIVEN: {value: only-this, secret: true}}\n"
              "    triggers: [{http: {route: /box}}]\n"
              "  online:\n    runtime: python\n    handler: app.py:probe\n    isolation: sandbox\n    network: true\n"
              "    triggers: [{http: {route: /online}}]\n"
              "  bomb:\n    runtime: python\n    handler: app.py:probe\n    isolation: sandbox\n"
              "    max_processes: 16\n    memory_limit: 96MiB\n    timeout: 20s\n"
              "    triggers: [{http: {route: /bomb}}]\n");
    dir.write("app.py", kProbe);
    host = std::make_unique<Host>(dir.path());
  }
  json::object probe(const std::string& route, const std::string& query) {
    Response r = request(host->http_port(), "GET", route + "?" + query);
    EXPECT_EQ(r.status, 200) << route << "?" << query << ": " << r.body << "\n" << host->output();
    return parse_object(r.body);
  }
  TempDir dir;
  std::unique_ptr<Host> host;
};

TEST(Sandbox, HostFilesTokensKeysAndTheStoreAreInvisible) {
  SandboxApp app;
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  const auto state = app.dir.path() / ".nimbus";
  // They exist on the host (else this test would prove nothing).
  for (const char* f : {"admin.token", "keys.json", "state.db"}) ASSERT_TRUE(std::filesystem::exists(state / f)) << f;
  const std::string paths = (state / "admin.token").string() + "," + (state / "keys.json").string() + "," +
                            (state / "state.db").string() + ",/etc/shadow,/root,/home," + (app.dir.path() / "app.py").string();
  auto o = app.probe("/box", "what=reads&paths=" + paths);
  EXPECT_EQ(text(o, (state / "admin.token").c_str()), "ENOENT");
  EXPECT_EQ(text(o, (state / "keys.json").c_str()), "ENOENT");
  EXPECT_EQ(text(o, (state / "state.db").c_str()), "ENOENT");
  EXPECT_EQ(text(o, "/etc/shadow"), "ENOENT");
  EXPECT_EQ(text(o, "/root"), "ENOENT");
  EXPECT_EQ(text(o, "/home"), "ENOENT");
  EXPECT_EQ(text(o, (app.dir.path() / "app.py").c_str()), "ok");  // its own folder is there
}

TEST(Sandbox, RunsAsAnUnprivilegedUserWithoutCapabilitiesOrNewPrivileges) {
  SandboxApp app;
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  auto o = app.probe("/box", "what=identity");
  EXPECT_NE(o["uid"].as_int64(), 0);
  EXPECT_NE(o["euid"].as_int64(), 0);
  EXPECT_NE(o["gid"].as_int64(), 0);
  auto status = o["status"].as_object();
  EXPECT_EQ(text(status, "CapEff"), "0000000000000000");
  EXPECT_EQ(text(status, "CapPrm"), "0000000000000000");
  EXPECT_EQ(text(status, "CapBnd"), "0000000000000000");
  EXPECT_EQ(text(status, "NoNewPrivs"), "1");
  EXPECT_EQ(text(status, "Seccomp"), "2");  // a filter is loaded
  EXPECT_EQ(text(o, "home"), "/tmp");
}

// Secrets reach a function only through its env: nothing of the host's environment does.
TEST(Sandbox, SeesOnlyItsOwnEnvironment) {
  ::setenv("NIMBUS_SANDBOX_HOST_SECRET", "leaked", 1);  // inherited by the host started next
  SandboxApp app;
  ::unsetenv("NIMBUS_SANDBOX_HOST_SECRET");
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  auto o = app.probe("/box", "what=identity");
  std::set<std::string> allowed = {"PATH", "HOME", "LANG", "NIMBUS_FUNCTION", "NIMBUS_APP", "PYTHONPATH",
                                   "PYTHONPYCACHEPREFIX", "GIVEN", "NIMBUS_API", "NIMBUS_API_TOKEN",
                                   "NIMBUS_WORKER_FD", "NIMBUS_WORKER_OUT_FD"};
  bool given = false;
  for (const auto& k : o["env"].as_array()) {
    EXPECT_TRUE(allowed.count(std::string(k.as_string()))) << "unexpected variable " << k.as_string();
    given = given || k.as_string() == "GIVEN";
  }
  EXPECT_TRUE(given);
}

TEST(Sandbox, SeesOnlyItsOwnProcesses) {
  SandboxApp app;
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  auto o = app.probe("/box", "what=procs");
  auto procs = o["procs"].as_object();
  // The worker, PID 1 of its namespace, and whatever it starts: no host process, not even the host.
  EXPECT_EQ(o["pid"].as_int64(), 1);
  EXPECT_LE(procs.size(), 2u) << json::serialize(procs);
  for (const auto& [pid, cmdline] : procs) {
    EXPECT_EQ(std::string(cmdline.as_string()).find("nimbus start"), std::string::npos) << pid << ": " << cmdline;
  }
  EXPECT_TRUE(procs.contains(std::to_string(o["pid"].as_int64())));
}

TEST(Sandbox, WritesOnlyItsTmpAndTheFoldersTheManifestMakesWritable) {
  SandboxApp app;
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  const auto dir = app.dir.path();
  const std::string own = (dir / "escaped.txt").string(), state = (dir / ".nimbus" / "planted").string(),
                    out = (dir / "out" / "result.txt").string();
  auto o = app.probe("/box", "what=writes&paths=/tmp/scratch,/dev/shm/segment,/usr/escaped,/dev/planted," + own + "," +
                                 state + "," + out);
  EXPECT_EQ(text(o, "/tmp/scratch"), "ok");
  EXPECT_EQ(text(o, "/dev/shm/segment"), "ok");
  EXPECT_EQ(text(o, "/dev/planted"), "EROFS");  // /dev is memory too: not a way around memory_limit
  EXPECT_EQ(text(o, "/usr/escaped"), "EROFS");
  EXPECT_EQ(text(o, own.c_str()), "EROFS");
  EXPECT_EQ(text(o, state.c_str()), "EROFS");
  EXPECT_EQ(text(o, out.c_str()), "ok");  // writable: [out]
  EXPECT_FALSE(std::filesystem::exists(dir / "escaped.txt"));
  EXPECT_FALSE(std::filesystem::exists(dir / ".nimbus" / "planted"));
  EXPECT_TRUE(std::filesystem::exists(dir / "out" / "result.txt"));
}

TEST(Sandbox, SeccompDeniesKernelSurfaceWithEperm) {
  SandboxApp app;
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  auto o = app.probe("/box", "what=syscalls");
  for (const char* call : {"ptrace", "unshare", "mount", "userfaultfd", "keyctl", "bpf"}) {
    EXPECT_EQ(text(o, call), "EPERM") << call;
  }
  EXPECT_EQ(text(o, "fork"), "none");  // a plain fork is not a namespace
}

TEST(Sandbox, AForkBombIsContainedAndTheHostAnswers) {
  SandboxApp app;
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  auto o = app.probe("/bomb", "what=fork&limit=200");
  EXPECT_LT(o["forked"].as_int64(), 16) << json::serialize(o);
  EXPECT_GT(o["forked"].as_int64(), 0) << json::serialize(o);  // forks work, up to the limit  // max_processes: 16, threads included
  EXPECT_EQ(text(o, "error"), "EAGAIN");
  EXPECT_EQ(app.probe("/box", "what=hello")["hello"].as_string(), "world");
  EXPECT_EQ(app.probe("/bomb", "what=hello")["hello"].as_string(), "world");  // and the bombed one recovers
}

TEST(Sandbox, AMemoryBombEndsOnlyItsOwnWorker) {
  SandboxApp app;
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  Response r = request(app.host->http_port(), "GET", "/bomb?what=memory");
  EXPECT_TRUE(r.status == 500 || r.status == 502) << r.status << " " << r.body;  // MemoryError, or the worker died
  EXPECT_EQ(r.body.find("hoarded_mib"), std::string::npos) << r.body;
  EXPECT_EQ(app.probe("/box", "what=hello")["hello"].as_string(), "world");
  EXPECT_EQ(app.probe("/bomb", "what=hello")["hello"].as_string(), "world");
  // Its /tmp and /dev/shm are memory as well: bounded (memory_limit: 96MiB; /dev/shm 64 MiB).
  for (const char* path : {"/tmp/hoard", "/dev/shm/hoard"}) {
    auto o = app.probe("/bomb", std::string("what=disk&path=") + path);
    EXPECT_LE(o["written_mib"].as_int64(), 96) << path << ": " << json::serialize(o);
    EXPECT_EQ(text(o, "error"), "ENOSPC") << path;
  }
}

TEST(Sandbox, TheAdminApiIsUnreachableWithoutNetworkAndUselessWithoutAToken) {
  SandboxApp app;
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  const std::string port = std::to_string(app.host->admin_port());
  EXPECT_NE(text(app.probe("/box", "what=admin&port=" + port), "admin").rfind("HTTP/1.1", 0), 0u);
  EXPECT_EQ(text(app.probe("/online", "what=admin&port=" + port), "admin"), "HTTP/1.1 401 Unauthorized");
}

// A writable folder inside another is refused at start: the outer one's sandbox could swap the
// inner one for a link to any host folder, which the next launch would bind writable.
TEST(Sandbox, AWritableFolderInsideAnotherIsRefusedAtStart) {
  TempDir dir;
  dir.write("nimbus.yaml",
            "name: nest\nfunctions:\n"
            "  box:\n    runtime: python\n    handler: app.py:probe\n    isolation: sandbox\n"
            "    writable: [data, data/inner]\n    triggers: [{http: {route: /box}}]\n");
  dir.write("app.py", kProbe);
  Host host(dir.path());
  EXPECT_FALSE(host.started());
  EXPECT_NE(host.errors().find("data/inner is inside the folder data that function 'box' may write"), std::string::npos)
      << host.errors();
}

}  // namespace
}  // namespace nimbus::testing
