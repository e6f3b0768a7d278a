#pragma once
// Integration-test harness: starts the real `nimbus` binary on port 0 in a temporary app
// folder, talks real HTTP to it over loopback sockets, and collects what it prints.
#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace nimbus::testing {

std::filesystem::path test_function(const std::string& name);  // built test library path

// A fresh temporary folder, removed when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }
  void write(const std::string& relative, const std::string& content) const;
  std::string read(const std::string& relative) const;  // "" when missing

 private:
  std::filesystem::path path_;
};

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};
// Runs `nimbus ARGS...` in `cwd` and waits for it.
CommandResult run_nimbus(const std::vector<std::string>& args, const std::filesystem::path& cwd);

class Host {
 public:
  // Starts `nimbus start DIR --port 0 --admin-port 0 --tls-port 0 EXTRA...`; waits for the
  // listening line. `wrapper`: a command (looked up on PATH) that runs the host: it is given
  // the nimbus binary and its arguments after its own, and must exec it (same pid).
  explicit Host(const std::filesystem::path& app_dir, std::vector<std::string> extra = {},
                std::vector<std::string> wrapper = {});
  ~Host();
  bool started() const { return http_port_ > 0; }
  int http_port() const { return http_port_; }
  int admin_port() const { return admin_port_; }
  int https_port() const { return https_port_; }  // 0 unless the app has gateway.tls
  pid_t pid() const { return pid_; }
  std::string output();            // stdout so far (logs)
  std::string errors();            // stderr so far
  int signal_and_wait(int signo);  // exit code (128+N if killed by signal N)
  int wait_exit();
  // Waits (bounded) until stdout contains `needle`.
  bool wait_for_output(const std::string& needle, int timeout_ms = 10000);
  std::string admin_token() const;

 private:
  void pump(int fd, std::string* into);
  pid_t pid_ = -1;
  int http_port_ = 0;
  int admin_port_ = 0;
  int https_port_ = 0;
  int exit_code_ = -1;
  std::filesystem::path dir_;
  std::mutex mu_;
  std::string out_, err_;
  std::thread out_thread_, err_thread_;
};

struct Response {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

// One request on a new connection (Connection: close).
// (The whole exchange within timeout_ms: a status of 0 when it did not end by then.)
Response request(int port, const std::string& method, const std::string& target,
                 const std::map<std::string, std::string>& headers = {}, const std::string& body = "",
                 int timeout_ms = 10000);
// Sends raw bytes, then reads until the server closes (or timeout_ms passes); returns what came.
std::string send_raw(int port, const std::string& bytes, int timeout_ms = 10000,
                     int pause_after_ms = 0);
Response parse_response(const std::string& raw);
int connect_to(int port);  // -1 when refused

// Polls (bounded, real time) until `pred` holds; whether it did.
template <class Pred>
bool eventually(Pred pred, int timeout_ms = 15000) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < until) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

}  // namespace nimbus::testing
