#pragma once
// What a test sees of a worker process: its frames, its log lines and its exit, with bounded
// waits (shared by the worker process tests).
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "runtime/process/worker_process.h"

namespace nimbus {

struct Seen {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Frame> frames;
  std::vector<std::string> lines;
  bool exited = false;
  int code = -1;
  std::string why;

  WorkerCallbacks callbacks() {
    return {[this](Frame&& f) {
              std::lock_guard l(mu);
              frames.push_back(std::move(f));
              cv.notify_all();
            },
            [this](std::string_view line, bool) {
              std::lock_guard l(mu);
              lines.emplace_back(line);
              cv.notify_all();
            },
            [this](int c, const std::string& w) {
              std::lock_guard l(mu);
              exited = true;
              code = c;
              why = w;
              cv.notify_all();
            }};
  }
  // Waits (bounded) for a frame of `type` whose id is `id` ("" = any); returns it.
  std::optional<Frame> wait_frame(FrameType type, const std::string& id = "") {
    std::unique_lock l(mu);
    std::optional<Frame> found;
    cv.wait_for(l, std::chrono::seconds(20), [&] {
      for (auto& f : frames) {
        if (f.type != type) continue;
        if (!id.empty() && (!f.header.contains("id") || f.header.at("id").as_string() != id)) continue;
        found = f;
        return true;
      }
      return exited;
    });
    return found;
  }
  bool wait_exit() {
    std::unique_lock l(mu);
    return cv.wait_for(l, std::chrono::seconds(20), [&] { return exited; });
  }
};


}  // namespace nimbus
