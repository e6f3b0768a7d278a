#include "harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>
#include <stdexcept>

extern char** environ;

namespace nimbus::testing {
namespace fs = std::filesystem;

fs::path test_function(const std::string& name) { return fs::path(NIMBUS_TEST_FUNCTIONS) / (name + ".so"); }

TempDir::TempDir() {
  std::random_device rd;
  path_ = fs::temp_directory_path() / ("nimbus-it-" + std::to_string(getpid()) + "-" + std::to_string(rd()));
  fs::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

void TempDir::write(const std::string& relative, const std::string& content) const {
  fs::create_directories((path_ / relative).parent_path());
  std::ofstream(path_ / relative, std::ios::binary) << content;
}

std::string TempDir::read(const std::string& relative) const {
  std::ifstream in(path_ / relative, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

namespace {

pid_t spawn(const std::vector<std::string>& args, const fs::path& cwd, int out_fd, int err_fd,
            const std::vector<std::string>& wrapper = {}) {
  std::vector<char*> argv;
  std::string nimbus = NIMBUS_BINARY;
  std::vector<std::string> copy = wrapper;
  copy.push_back(nimbus);
  copy.insert(copy.end(), args.begin(), args.end());
  std::string binary = copy.front();
  for (auto& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
  posix_spawn_file_actions_adddup2(&fa, err_fd, 2);
  posix_spawn_file_actions_addchdir_np(&fa, cwd.c_str());
  pid_t pid = -1;
  int rc = posix_spawnp(&pid, binary.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw std::runtime_error("cannot spawn " + binary);
  return pid;
}

int wait_pid(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string read_all(int fd) {
  std::string out;
  char buf[8192];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  return out;
}

}  // namespace

CommandResult run_nimbus(const std::vector<std::string>& args, const fs::path& cwd) {
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
  pid_t pid = spawn(args, cwd, out[1], err[1]);
  ::close(out[1]);
  ::close(err[1]);
  CommandResult r;
  std::thread t([&] { r.err = read_all(err[0]); });
  r.out = read_all(out[0]);
  t.join();
  ::close(out[0]);
  ::close(err[0]);
  r.exit_code = wait_pid(pid);
  return r;
}

Host::Host(const fs::path& app_dir, std::vector<std::string> extra, std::vector<std::string> wrapper) : dir_(app_dir) {
  std::vector<std::string> args = {"start", app_dir.string(), "--port", "0", "--admin-port", "0", "--tls-port", "0"};
  args.insert(args.end(), extra.begin(), extra.end());
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
  pid_ = spawn(args, app_dir, out[1], err[1], wrapper);
  ::close(out[1]);
  ::close(err[1]);
  out_thread_ = std::thread([this, fd = out[0]] { pump(fd, &out_); });
  err_thread_ = std::thread([this, fd = err[0]] { pump(fd, &err_); });
  static const std::regex kListening(
      R"(nimbus listening on http://[^:]+:(\d+)(?: https://[^:]+:(\d+))? admin http://[^:]+:(\d+))");
  auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < give_up) {
    std::smatch m;
    std::string text = output();
    if (std::regex_search(text, m, kListening)) {
      http_port_ = std::stoi(m[1]);
      if (m[2].matched) https_port_ = std::stoi(m[2]);
      admin_port_ = std::stoi(m[3]);
      return;
    }
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      pid_ = -1;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

Host::~Host() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    wait_pid(pid_);
  }
  if (out_thread_.joinable()) out_thread_.join();
  if (err_thread_.joinable()) err_thread_.join();
}

void Host::pump(int fd, std::string* into) {
  char buf[8192];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) {
    std::lock_guard lock(mu_);
    into->append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
}

std::string Host::output() {
  std::lock_guard lock(mu_);
  return out_;
}

std::string Host::errors() {
  std::lock_guard lock(mu_);
  return err_;
}

int Host::wait_exit() {
  if (pid_ > 0) {
    exit_code_ = wait_pid(pid_);
    pid_ = -1;
  }
  if (out_thread_.joinable()) out_thread_.join();
  if (err_thread_.joinable()) err_thread_.join();
  return exit_code_;
}

int Host::signal_and_wait(int signo) {
  if (pid_ > 0) ::kill(pid_, signo);
  return wait_exit();
}

bool Host::wait_for_output(const std::string& needle, int timeout_ms) {
  auto give_up = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < give_up) {
    if (output().find(needle) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

std::string Host::admin_token() const {
  std::ifstream in(dir_ / ".nimbus" / "admin.token");
  std::string token;
  std::getline(in, token);
  return token;
}

int connect_to(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

std::string send_raw(int port, const std::string& bytes, int timeout_ms, int pause_after_ms) {
  int fd = connect_to(port);
  if (fd < 0) return "";
  size_t sent = 0;
  while (sent < bytes.size()) {
    ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  if (pause_after_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(pause_after_ms));
  std::string out;
  auto give_up = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  char buf[16384];
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(give_up - std::chrono::steady_clock::now()).count();
    if (left <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) break;
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

Response parse_response(const std::string& raw) {
  Response r;
  auto end = raw.find("\r\n\r\n");
  if (raw.rfind("HTTP/1.1 ", 0) != 0 || end == std::string::npos) return r;
  r.status = std::stoi(raw.substr(9, 3));
  std::istringstream head(raw.substr(0, end));
  std::string line;
  std::getline(head, line);
  while (std::getline(head, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::string value = line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.erase(0, 1);
    r.headers[name] = value;
  }
  r.body = raw.substr(end + 4);
  if (auto cl = r.headers.find("content-length"); cl != r.headers.end()) {
    r.body.resize(std::min(r.body.size(), static_cast<size_t>(std::stoul(cl->second))));
  }
  return r;
}

Response request(int port, const std::string& method, const std::string& target,
                 const std::map<std::string, std::string>& headers, const std::string& body, int timeout_ms) {
  auto given = [&](std::string_view name) {
    for (const auto& [n, v] : headers) {
      if (n.size() == name.size() && std::equal(n.begin(), n.end(), name.begin(), [](char a, char b) {
            return std::tolower(static_cast<unsigned char>(a)) == b;
          })) {
        return true;
      }
    }
    return false;
  };
  std::string req = method + " " + target + " HTTP/1.1\r\n";
  if (!given("host")) req += "Host: 127.0.0.1\r\n";
  if (!given("connection")) req += "Connection: close\r\n";
  for (const auto& [n, v] : headers) req += n + ": " + v + "\r\n";
  if (!body.empty() || method == "POST" || method == "PUT") req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  req += "\r\n" + body;
  return parse_response(send_raw(port, req, timeout_ms));
}

}  // namespace nimbus::testing
