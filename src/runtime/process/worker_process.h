#pragma once
// One worker process and its protocol socket: spawns it with a clean, explicit environment
// and the socket as fd 3, sends frames (thread-safe), and delivers what it says (frames),
// what it prints (stdout/stderr lines) and how it ended, each through a callback. A worker
// that sends a malformed or oversized frame is killed, and its end reports why.
#include <sys/types.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/expected.h"
#include "runtime/process/frame.h"

namespace nimbus {

struct WorkerSpawn {
  std::vector<std::string> argv;  // argv[0] is an absolute path: no PATH search
  std::vector<std::string> env;   // NAME=value, the worker's whole environment
  std::filesystem::path cwd;
  std::size_t max_frame = kDefaultMaxFrame;
  std::size_t memory_limit = 0;  // RLIMIT_DATA bytes; 0 = none
  int64_t cpu_seconds = 0;       // RLIMIT_CPU; 0 = none
  int open_files = 0;            // RLIMIT_NOFILE; 0 = none
};

struct WorkerCallbacks {
  std::function<void(Frame&&)> frame;                                 // reader thread
  std::function<void(std::string_view line, bool from_stderr)> output;  // output thread
  std::function<void(int exit_code, const std::string& why)> exited;    // once, reader thread
};

class WorkerProcess {
 public:
  static Expected<std::unique_ptr<WorkerProcess>> spawn(const WorkerSpawn& spec, WorkerCallbacks callbacks);
  ~WorkerProcess();  // kills the worker if it still runs, and joins its threads
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;

  Status send(FrameType type, const boost::json::object& header, std::string_view body = {});
  bool send_raw(std::string_view wire);  // an already encoded frame
  void kill();
  pid_t pid() const { return pid_; }

 private:
  WorkerProcess() = default;
  void read_frames();
  void read_output();

  pid_t pid_ = -1;
  int sock_ = -1;
  int out_ = -1;
  int err_ = -1;
  std::size_t max_frame_ = kDefaultMaxFrame;
  WorkerCallbacks callbacks_;
  std::mutex send_mu_;
  std::atomic<bool> killed_{false};
  std::thread reader_;
  std::thread output_;
};

}  // namespace nimbus
