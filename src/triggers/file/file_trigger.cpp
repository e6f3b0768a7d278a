#include "triggers/file/file_trigger.h"

#include <fcntl.h>
#include <fnmatch.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <date/date.h>
#include <algorithm>
#include <boost/json.hpp>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <mutex>
#include <random>
#include <set>

#include "core/ids.h"
#include "core/private_file.h"
#include "observe/log.h"
#include "pool/function_pools.h"
#include "store/store.h"
#include "triggers/outputs.h"

namespace nimbus {
namespace {

namespace fs = std::filesystem;
const TriggerKind kFile = TriggerKind::named("file");

constexpr const char* kProcessing = ".processing";
constexpr const char* kProcessed = "processed";
constexpr const char* kFailed = "failed";
// A name still held in .processing/ (an earlier file of that name runs) is looked at again after this.
constexpr Duration kLookAgain = std::chrono::seconds(1);
// Hosts sharing a store: the folders are listed (a drop on another machine of a network share
// raises no inotify event here) and the .processing/ folders of hosts gone are handed back
// this often; a folder counts as gone once untouched this long with its host out of the registry.
constexpr auto kLookEvery = std::chrono::seconds(2);
constexpr auto kOrphanAge = std::chrono::seconds(10);

std::string posix_error(const std::string& what, const fs::path& path, int err) {
  return "cannot " + what + " " + path.string() + ": " + std::strerror(err);
}

// The one place files are moved: never over an existing file. Returns 0 or the errno
// (ENOENT: `from` is gone, another host took it; EEXIST: `to` is taken). Where the file system
// has no RENAME_NOREPLACE (some network shares), a hard link does the same: it fails on an
// existing name.
int move_no_replace(const fs::path& from, const fs::path& to) {
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) return 0;
  if (errno != EINVAL && errno != ENOSYS) return errno;
  if (::link(from.c_str(), to.c_str()) != 0) return errno;
  if (::unlink(from.c_str()) != 0) return errno;
  return 0;
}

bool ends_with(std::string_view s, std::string_view end) {
  return s.size() >= end.size() && s.compare(s.size() - end.size(), end.size(), end) == 0;
}

// Hidden names and .tmp/.part are files still being written (write, then rename).
bool eligible(const std::string& name, const std::string& pattern) {
  if (name.empty() || name[0] == '.' || ends_with(name, ".tmp") || ends_with(name, ".part")) return false;
  return ::fnmatch(pattern.c_str(), name.c_str(), FNM_PERIOD) == 0;
}

// `orders.csv` -> `orders.20240501T101500Z.csv` (then -2, -3, ... within one second).
std::string stamped(const std::string& name, const std::string& stamp, int n) {
  fs::path p(name);
  std::string out = p.stem().string();
  out.append(".").append(stamp);
  if (n > 1) out.append("-").append(std::to_string(n));
  return out.append(p.extension().string());
}

// An eventfd that wakes the trigger's thread: a slot is free, a retry is due, or stop.
struct Bell {
  explicit Bell(int fd) : fd(fd), error(fd < 0 ? errno : 0) {}
  ~Bell() {
    if (fd >= 0) ::close(fd);
  }
  Bell(const Bell&) = delete;
  Bell& operator=(const Bell&) = delete;
  void ring() const {
    uint64_t one = 1;
    (void)!::write(fd, &one, sizeof one);
  }
  const int fd;
  const int error;  // why there is no fd
};

}  // namespace

// What the watches of one trigger share: the host's parts and the bell. Each watch holds it,
// so a completion that arrives after the trigger is gone still has all it needs.
struct FileTrigger::Shared {
  FunctionPools& pools;
  Store& store;
  const Clock& clock;
  Timers timers;
  Logger& logger;
  Bell bell;
  std::string host_id;  // names this host's folder under .processing/ (a shared store)
  bool alone;           // the embedded store: no other host can share these folders
};

class FileTrigger::Watch : public std::enable_shared_from_this<FileTrigger::Watch> {
 public:
  Watch(const FunctionSpec& fn, const FileTriggerSpec& spec, FunctionPool& pool, std::shared_ptr<Shared> shared)
      : fn_(fn),
        spec_(spec),
        dir_(spec.path),
        // One host alone takes files into .processing/ itself; hosts sharing a store (and
        // maybe the folder) each into .processing/<host id>/, so that one starting never
        // takes back what another is running.
        processing_(shared->alone ? dir_ / kProcessing : dir_ / kProcessing / shared->host_id),
        pool_(pool),
        shared_(std::move(shared)),
        limit_(pool.capacity()) {}

  const fs::path& dir() const { return dir_; }
  int wd = -1;

  // Makes the folders and hands what a previous run left in .processing/ back to the folder.
  Status prepare() {
    std::error_code ec;
    if (fs::exists(dir_, ec) && !fs::is_directory(dir_, ec)) {
      return Error{"function '" + fn_.name + "': file trigger path " + dir_.string() + " is a file; expected a folder"};
    }
    for (const fs::path& d : {dir_, processing_, dir_ / kProcessed, dir_ / kFailed}) {
      if (fs::create_directories(d, ec); ec) {
        return Error{"function '" + fn_.name + "': cannot create " + d.string() + ": " + ec.message()};
      }
    }
    return recover({});
  }

  // Hands back to the folder what earlier runs left in .processing/: files directly in it (a
  // host alone, or an older version), and the folders of hosts that are gone: not in `live`
  // (the registry's hosts) and untouched for kOrphanAge (a host that has just started may not
  // be in the registry yet). A host alone on its store has no one to wait for.
  Status recover(const std::set<std::string>& live) {
    std::error_code ec;
    const fs::path base = dir_ / kProcessing;
    for (const auto& entry : fs::directory_iterator(base, ec)) {
      const std::string name = entry.path().filename().string();
      if (entry.is_regular_file(ec)) {
        if (auto st = hand_back(entry.path()); !st) return st;
        continue;
      }
      if (!entry.is_directory(ec) || entry.path() == processing_ || live.count(name)) continue;
      if (!shared_->alone) {
        std::error_code tec;
        const auto touched = fs::last_write_time(entry.path(), tec);
        if (tec || fs::file_time_type::clock::now() - touched < kOrphanAge) continue;
      }
      std::error_code dec;
      for (const auto& left : fs::directory_iterator(entry.path(), dec)) {
        if (left.is_regular_file(dec)) {
          if (auto st = hand_back(left.path()); !st) return st;
        }
      }
      fs::remove(entry.path(), dec);  // empty now (or another host emptied it first)
    }
    if (ec) return Error{"function '" + fn_.name + "': " + posix_error("list", base, ec.value())};
    return ok_status();
  }

  // A file an earlier run took: back into the folder, to be taken again; if a newer file
  // has its name there, into this host's .processing/ folder, to run from there.
  Status hand_back(const fs::path& file) {
    const std::string name = file.filename().string();
    int err = move_no_replace(file, dir_ / name);
    bool run_here = false;  // a newer file took its name: run it from this host's .processing/
    if (err == EEXIST && file.parent_path() == processing_) {
      run_here = true;
      err = 0;
    } else if (err == EEXIST) {
      err = move_no_replace(file, processing_ / name);
      run_here = err == 0;
    }
    if (err == ENOENT) return ok_status();  // another host took it back first
    if (err == EEXIST) {
      shared_->logger.host(LogLevel::warn, "a file left in .processing/ waits: its name is taken in the folder and here",
                           {{"function", fn_.name}, {"file", file.string()}});
      return ok_status();
    }
    if (err != 0) return Error{"function '" + fn_.name + "': " + posix_error("move back", file, err)};
    shared_->logger.host(LogLevel::info, "taking again a file an earlier run left in .processing/",
                         {{"function", fn_.name}, {"file", name}});
    if (run_here) {
      std::lock_guard lock(mu_);
      retries_.push_back({name, 1});
    }
    return ok_status();
  }

  // Queues every eligible name in the folder, in name order.
  void scan() {
    std::error_code ec;
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(dir_, ec)) {
      if (entry.is_regular_file(ec)) names.push_back(entry.path().filename().string());
    }
    if (ec) {
      shared_->logger.host(LogLevel::error, "cannot list a watched folder",
                           {{"function", fn_.name}, {"path", dir_.string()}, {"error", ec.message()}});
    }
    std::sort(names.begin(), names.end());
    for (auto& n : names) noticed(std::move(n));
  }

  void noticed(std::string name) {
    if (!eligible(name, spec_.pattern)) return;
    std::lock_guard lock(mu_);
    if (stopping_ || !waiting_names_.insert(name).second) return;
    waiting_.push_back(std::move(name));
  }

  // On the trigger's thread: takes and starts files while the function has room.
  void pump() {
    for (;;) {
      Taken next;
      bool fresh = false;
      {
        std::lock_guard lock(mu_);
        if (stopping_ || running_ >= limit_) return;
        if (!retries_.empty()) {
          next = std::move(retries_.front());
          retries_.pop_front();
        } else if (!waiting_.empty()) {
          next = {std::move(waiting_.front()), 1};
          waiting_.pop_front();
          waiting_names_.erase(next.name);
          fresh = true;
        } else {
          return;
        }
        ++running_;
      }
      if (fresh && !take(next.name)) {
        finished();
        continue;
      }
      run(std::move(next));
    }
  }

  void stop() {
    std::lock_guard lock(mu_);
    stopping_ = true;
    for (TimerQueue::Id id : timers_armed_) shared_->timers.cancel(id);
    timers_armed_.clear();
    waiting_.clear();
    waiting_names_.clear();
    retries_.clear();  // taken files waiting for a retry stay in .processing/ for the next start
  }

  bool wait_idle(TimePoint until) {
    std::unique_lock lock(mu_);
    return idle_cv_.wait_until(lock, until, [&] { return running_ == 0; });
  }

 private:
  struct Taken {
    std::string name;
    int attempt = 1;
  };

  // Moves the file into .processing/; false when it is not ours to run (now).
  bool take(const std::string& name) {
    std::error_code ec;
    if (!fs::is_regular_file(dir_ / name, ec)) return false;
    int err = move_no_replace(dir_ / name, processing_ / name);
    if (err == 0) return true;
    if (err == EEXIST) {
      after(kLookAgain, [name](Watch& self) { self.noticed(name); });
    } else if (err != ENOENT) {  // ENOENT: another host took it first
      shared_->logger.host(LogLevel::error, "cannot take a dropped file",
                           {{"function", fn_.name}, {"error", posix_error("move", dir_ / name, err)}});
    }
    return false;
  }

  void run(Taken t) {
    const fs::path file = processing_ / t.name;
    std::error_code ec;
    const std::uintmax_t size = fs::file_size(file, ec);
    if (ec) return settle(t, Result::failure(Outcome::error, "unreadable", posix_error("read", file, ec.value())));
    if (size > spec_.max_size) {
      fail(t.name, 0, "too_large",
           "the file is " + std::to_string(size) + " bytes, above the trigger's max_size of " +
               std::to_string(spec_.max_size) + " bytes");
      return finished();
    }
    auto bytes = read_file(file);
    if (!bytes) return settle(t, Result::failure(Outcome::error, "unreadable", bytes.error().message));
    Invocation inv =
        new_invocation(fn_, kFile, "/files/" + fn_.name, "nimbus.file.dropped", shared_->clock);
    inv.subject = t.name;
    inv.attempt = t.attempt;
    inv.payload = std::move(*bytes);
    inv.metadata = {
        {"file.name", t.name}, {"file.path", (dir_ / t.name).string()}, {"file.size", std::to_string(size)}};
    std::string id = inv.id, trace = inv.traceparent;
    TimePoint started = inv.started;
    pool_.dispatch(std::move(inv), [self = shared_from_this(), t, id, trace, started](Result&& result) {
      // Outputs are committed before the file counts as processed.
      commit_outputs_then(
          &self->shared_->store, self->fn_, std::move(result), trace, std::string_view(),
          [self, t, id, trace, started](Result&& r) { self->ran(t, id, trace, started, r); },
          self->shared_->logger.tracer(), &self->shared_->clock);
    });
  }

  void ran(const Taken& t, const std::string& id, const std::string& trace, TimePoint started, const Result& r) {
    const Duration took = shared_->clock.now() - started;
    shared_->logger.invocation(
        {fn_.name, kFile, id, trace, r.outcome, 0, took, r.error.type, r.error.message, {}, r.version, 0, 1, r.waited,
         r.cold_start, r.ran});
    // Moving the file out is file I/O, and this may be an event loop, the timer thread or the
    // store's writer: the store's I/O threads do it (they run until the store closes, after
    // the host has waited for files in progress).
    shared_->store.run_blocking([self = shared_from_this(), t, r] { self->settle(t, r); });
  }

  // The attempt ended: processed/, a retry after the backoff, or failed/.
  void settle(const Taken& t, const Result& r) {
    if (r.outcome == Outcome::success) {
      auto moved = move_out(t.name, kProcessed);
      if (!moved) {
        shared_->logger.host(LogLevel::error, "cannot move a processed file",
                             {{"function", fn_.name}, {"error", moved.error().message}});
      }
    } else if (t.attempt < fn_.retry.max_attempts) {
      Taken again{t.name, t.attempt + 1};
      after(fn_.retry.next_delay(t.attempt), [again](Watch& self) {
        std::lock_guard lock(self.mu_);
        self.retries_.push_back(again);
      });
    } else {
      fail(t.name, t.attempt, r.error.type.empty() ? std::string(to_string(r.outcome)) : r.error.type, r.error.message);
    }
    finished();
  }

  // Moves a taken file to failed/ with `<name>.reason.json` beside it.
  void fail(const std::string& name, int attempts, const std::string& error_type, const std::string& message) {
    auto moved = move_out(name, kFailed);
    if (!moved) {
      shared_->logger.host(LogLevel::error, "cannot move a failed file",
                           {{"function", fn_.name}, {"error", moved.error().message}});
      return;
    }
    boost::json::object reason{
        {"function", fn_.name},
        {"file", name},
        {"error_type", error_type},
        {"message", message},
        {"attempts", attempts},
        {"failed_at", date::format("%FT%TZ", date::floor<std::chrono::milliseconds>(shared_->clock.wall()))}};
    fs::path reason_file = *moved;
    reason_file += ".reason.json";
    if (auto st = write_private_file(reason_file, boost::json::serialize(reason) + "\n"); !st) {
      shared_->logger.host(LogLevel::error, "cannot write a failed file's reason",
                           {{"function", fn_.name}, {"error", st.error().message}});
    }
    shared_->logger.host(
        LogLevel::warn, "file moved to failed/",
        {{"function", fn_.name}, {"file", moved->string()}, {"attempts", attempts}, {"error_type", error_type}});
  }

  // Moves `.processing/<name>` into `<folder>/<to>/`, under a time-stamped name when the
  // plain one is taken there. Returns where it went.
  Expected<fs::path> move_out(const std::string& name, const char* to) {
    const fs::path from = processing_ / name;
    const std::string stamp = date::format("%Y%m%dT%H%M%SZ", date::floor<std::chrono::seconds>(shared_->clock.wall()));
    for (int n = 0; n < 1000; ++n) {
      fs::path target = dir_ / to / (n == 0 ? name : stamped(name, stamp, n));
      int err = move_no_replace(from, target);
      if (err == 0) return target;
      if (err != EEXIST) return Error{posix_error("move", from, err)};
    }
    return Error{"cannot move " + from.string() + ": every time-stamped name in " + (dir_ / to).string() + " is taken"};
  }

  // Runs `then` on this watch after `delay` (from the timer thread), unless it stopped, then
  // rings the trigger's thread.
  void after(Duration delay, std::function<void(Watch&)> then) {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    std::weak_ptr<Watch> weak = weak_from_this();
    auto id = std::make_shared<TimerQueue::Id>(0);
    const TimePoint at = shared_->clock.now() + delay;
    *id = shared_->timers.at(
        at,
        [weak, id, then = std::move(then)] {
          auto self = weak.lock();
          if (!self) return;
          {
            std::lock_guard lock(self->mu_);
            if (self->timers_armed_.erase(*id) == 0) return;  // cancelled by stop()
          }
          then(*self);
          self->shared_->bell.ring();
        });
    timers_armed_.insert(*id);
  }

  void finished() {
    {
      std::lock_guard lock(mu_);
      --running_;
      idle_cv_.notify_all();
    }
    shared_->bell.ring();  // room for the next file
  }

  const FunctionSpec& fn_;
  FileTriggerSpec spec_;
  fs::path dir_, processing_;
  FunctionPool& pool_;
  std::shared_ptr<Shared> shared_;
  const int limit_;
  std::mutex mu_;
  std::condition_variable idle_cv_;
  std::deque<std::string> waiting_;  // names seen in the folder, not taken yet
  std::set<std::string> waiting_names_;
  std::deque<Taken> retries_;  // taken files whose backoff is over
  std::set<TimerQueue::Id> timers_armed_;
  int running_ = 0;  // taken and not yet moved out (or left for a retry)
  bool stopping_ = false;
};

FileTrigger::FileTrigger(const TriggerContext& c)
    : app_(c.app),
      shared_(new Shared{c.pools, c.store, c.clock, c.timers, c.logger, Bell(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)),
                         c.host_id.empty() ? "host-" + new_invocation_id().substr(0, 12) : c.host_id,
                         c.app.store.rfind("sqlite:", 0) == 0}) {}

FileTrigger::~FileTrigger() {
  stop_taking_work();
  if (inotify_fd_ >= 0) ::close(inotify_fd_);
}

Status FileTrigger::start() {
  for (const auto& fn : app_.functions) {
    FunctionPool* pool = shared_->pools.find(fn.name);
    if (!pool) continue;
    for (const auto* t : fn.triggers_of<FileTriggerSpec>()) {
      watches_.push_back(std::make_shared<Watch>(fn, *t, *pool, shared_));
    }
  }
  if (watches_.empty()) return ok_status();
  if (shared_->bell.fd < 0) {
    return Error{std::string("file triggers: cannot create an eventfd: ") + std::strerror(shared_->bell.error)};
  }
  inotify_fd_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (inotify_fd_ < 0) return Error{std::string("file triggers: cannot start inotify: ") + std::strerror(errno)};
  for (auto& w : watches_) {
    if (auto st = w->prepare(); !st) return st;
    // Watched before the first scan, so a file dropped in between is heard of (twice at most).
    w->wd = ::inotify_add_watch(inotify_fd_, w->dir().c_str(), IN_CLOSE_WRITE | IN_MOVED_TO);
    if (w->wd < 0) return Error{posix_error("watch", w->dir(), errno) + " (raise fs.inotify.max_user_watches?)"};
  }
  for (auto& w : watches_) w->scan();
  thread_ = std::thread([this] { run(); });
  return ok_status();
}

void FileTrigger::stop_taking_work() {
  for (auto& w : watches_) w->stop();
  if (!thread_.joinable()) return;
  stopping_ = true;
  shared_->bell.ring();
  thread_.join();
}

bool FileTrigger::wait_idle(TimePoint until) {
  bool all = true;
  for (auto& w : watches_) all &= w->wait_idle(until);
  return all;
}

void FileTrigger::run() {
  alignas(inotify_event) char buf[16 * 1024];
  pollfd fds[2] = {{inotify_fd_, POLLIN, 0}, {shared_->bell.fd, POLLIN, 0}};
  auto last_look = std::chrono::steady_clock::now();
  for (;;) {
    if (!shared_->alone && std::chrono::steady_clock::now() - last_look >= kLookEvery) {
      last_look = std::chrono::steady_clock::now();
      look_around();
    }
    for (auto& w : watches_) w->pump();
    const int timeout = shared_->alone ? -1 : static_cast<int>(std::chrono::milliseconds(kLookEvery).count());
    if (::poll(fds, 2, timeout) < 0 && errno != EINTR) {
      shared_->logger.host(LogLevel::error, "file triggers stopped watching", {{"error", std::strerror(errno)}});
      return;
    }
    if (fds[1].revents & POLLIN) {
      uint64_t rings;
      (void)!::read(shared_->bell.fd, &rings, sizeof rings);
    }
    if (stopping_) return;
    if (fds[0].revents & POLLIN) read_events(buf, sizeof buf);
  }
}

void FileTrigger::look_around() {
  // Who is alive: the registry's records (host/cluster.h). A read that fails hands nothing back.
  auto hosts = shared_->store.scan(kHostsStateStore, "", 100000);
  for (auto& w : watches_) {
    if (hosts) {
      std::set<std::string> live{shared_->host_id};
      for (const auto& h : *hosts) live.insert(h.key);
      if (auto st = w->recover(live); !st) {
        shared_->logger.host(LogLevel::error, "cannot hand back files of a host that is gone", {{"error", st.error().message}});
      }
    }
    w->scan();
  }
}

void FileTrigger::read_events(char* buf, std::size_t size) {
  for (;;) {
    ssize_t n = ::read(inotify_fd_, buf, size);
    if (n <= 0) return;  // EAGAIN: all read
    for (char* p = buf; p < buf + n;) {
      auto* ev = reinterpret_cast<inotify_event*>(p);
      p += sizeof(inotify_event) + ev->len;
      if (ev->mask & IN_Q_OVERFLOW) {
        for (auto& w : watches_) w->scan();  // events were lost: look at everything
        continue;
      }
      for (auto& w : watches_) {
        if (w->wd != ev->wd) continue;
        if (ev->mask & IN_IGNORED) {
          shared_->logger.host(LogLevel::error, "a watched folder was removed or moved; its files are no longer taken",
                               {{"path", w->dir().string()}});
        } else if (ev->len > 0 && !(ev->mask & IN_ISDIR)) {
          w->noticed(ev->name);
        }
      }
    }
  }
}

}  // namespace nimbus
