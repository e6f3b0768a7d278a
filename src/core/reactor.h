#pragma once
// An event loop that can watch file descriptors. The process runtime hands its workers'
// pipes to the host's HTTP event loops, so that a worker's reply is read on the thread that
// delivers it, with no reader thread of its own in between: one context switch fewer per
// invocation. No Asio in this header.
#include <functional>
#include <memory>
#include <string_view>

namespace nimbus {

class Reactor {
 public:
  // Watching stops when the Watch is destroyed: from another thread, the destructor waits
  // for a call in progress; from inside the callback, it only stops further calls.
  class Watch {
   public:
    virtual ~Watch() = default;
  };
  virtual ~Reactor() = default;
  // Calls `on_readable` on the reactor's thread while `fd` is readable or hung up: after each
  // call the fd is looked at again (level-triggered), so a callback may read once and return.
  // The fd stays the caller's: the reactor never closes it.
  virtual std::unique_ptr<Watch> watch(int fd, std::function<void()> on_readable) = 0;
  // Reads `fd` on the reactor's thread and hands over each read's bytes; an empty view, once,
  // at the end of the stream or on an error, after which nothing more is read. Cheaper than
  // watch() plus a read of one's own: the registration with the loop stays as it is between
  // reads (no system call to re-arm it). The fd stays the caller's, but becomes non-blocking.
  virtual std::unique_ptr<Watch> read(int fd, std::function<void(std::string_view)> on_data) = 0;
  // Calls `on_writable` on the reactor's thread while `fd` can take a write (level-triggered,
  // like watch()): for a writer whose non-blocking write came up short. End the watch once
  // there is nothing left to write.
  virtual std::unique_ptr<Watch> writable(int fd, std::function<void()> on_writable) = 0;
};

}  // namespace nimbus
