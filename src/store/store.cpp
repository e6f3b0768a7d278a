#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <iterator>
#include <string>
#include <cstring>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include "store/store.h"

#include "core/thread_role.h"
#include "core/ids.h"
#include "core/prometheus_text.h"

namespace nimbus {

namespace {
thread_local bool t_on_io_thread = false;
constexpr int kIoThreads = 2;  // reads and blob files; SQLite reads take microseconds
}  // namespace

// A few threads, started on first use, that run blocking store work in the order handed over.
struct Store::IoThreads {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::function<void()>> work;
  std::vector<std::thread> threads;
  bool closed = false;

  void run() {
    t_on_io_thread = true;
    std::unique_lock lock(mu);
    for (;;) {
      cv.wait(lock, [&] { return closed || !work.empty(); });
      if (work.empty()) return;
      auto next = std::move(work.front());
      work.pop_front();
      lock.unlock();
      next();
      lock.lock();
    }
  }
};

// Who watches the store's changes: listeners by id, so that a handle removes exactly its own.
struct Store::Watchers {
  std::mutex mu;
  uint64_t next = 1;
  std::map<uint64_t, ChangeListener> listeners;
};

// Who takes messages made in which queue on this host (offer_claims): by queue, in order.
struct Store::Claimants {
  mutable std::mutex mu;
  uint64_t next = 1;
  std::map<std::string, std::map<uint64_t, std::weak_ptr<Claimant>>> by_queue;
};

namespace {

class Watch final : public Store::ChangeWatch {
 public:
  Watch(std::weak_ptr<void> owner, std::function<void()> remove) : owner_(std::move(owner)), remove_(std::move(remove)) {}
  ~Watch() override {
    if (auto alive = owner_.lock()) remove_();
  }

 private:
  std::weak_ptr<void> owner_;
  std::function<void()> remove_;
};

}  // namespace

struct Store::CommitStats {
  static constexpr double kSeconds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
  static constexpr double kBatches[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
  std::atomic<uint64_t> seconds[std::size(kSeconds) + 1] = {};  // the last: above every bound
  std::atomic<uint64_t> batches[std::size(kBatches) + 1] = {};
  std::atomic<uint64_t> total_ns{0}, total_batches{0};
};

struct Store::HealthState {
  mutable std::mutex mu;
  Health now;
  std::function<void(const Health&)> listener;
  bool probe_ok = true, work_ok = true;
  std::string probe_problem, work_problem;
};

namespace {

template <std::size_t N>
void histogram_text(std::string& out, const char* name, const char* help, const double (&bounds)[N],
                    const std::atomic<uint64_t> (&counts)[N + 1], double sum) {
  prometheus_family(out, name, "histogram", help);
  uint64_t cumulative = 0;
  char buf[64];
  for (std::size_t i = 0; i <= N; ++i) {
    cumulative += counts[i].load(std::memory_order_relaxed);
    if (i < N) std::snprintf(buf, sizeof buf, "%g", bounds[i]);
    out += name;
    out += "_bucket{le=\"";
    out += i < N ? buf : "+Inf";
    out += "\"} ";
    out += std::to_string(cumulative);
    out += '\n';
  }
  std::snprintf(buf, sizeof buf, "%.17g", sum);
  out += name;
  out += "_sum ";
  out += buf;
  out += '\n';
  out += name;
  out += "_count ";
  out += std::to_string(cumulative);  // the +Inf bucket, as the format has it
  out += '\n';
}

}  // namespace

void Store::record_commit(std::chrono::nanoseconds took, std::size_t batches) {
  CommitStats& c = *commits_;
  const double s = std::chrono::duration<double>(took).count();
  std::size_t i = 0;
  while (i < std::size(CommitStats::kSeconds) && s > CommitStats::kSeconds[i]) ++i;
  c.seconds[i].fetch_add(1, std::memory_order_relaxed);
  std::size_t j = 0;
  while (j < std::size(CommitStats::kBatches) && static_cast<double>(batches) > CommitStats::kBatches[j]) ++j;
  c.batches[j].fetch_add(1, std::memory_order_relaxed);
  c.total_ns.fetch_add(static_cast<uint64_t>(took.count()), std::memory_order_relaxed);
  c.total_batches.fetch_add(batches, std::memory_order_relaxed);
}

void Store::commit_metrics_text(std::string& out) const {
  const CommitStats& c = *commits_;
  histogram_text(out, "nimbus_store_commit_duration_seconds", "Time of each store transaction (a group of batches).",
                 CommitStats::kSeconds, c.seconds, static_cast<double>(c.total_ns.load()) / 1e9);
  histogram_text(out, "nimbus_store_commit_batches",
                 "Operations grouped into each store transaction: batches, and receives, lease extensions and the like.",
                 CommitStats::kBatches,
                 c.batches, static_cast<double>(c.total_batches.load()));
}

Store::Store()
    : commits_(std::make_unique<CommitStats>()), io_(std::make_unique<IoThreads>()), watchers_(std::make_shared<Watchers>()), health_(std::make_unique<HealthState>()),
      claimants_(std::make_shared<Claimants>()) {}

Store::Health Store::health() const {
  std::lock_guard lock(health_->mu);
  return health_->now;
}

void Store::on_health_change(std::function<void(const Health&)> listener) {
  std::lock_guard lock(health_->mu);
  health_->listener = std::move(listener);
}

void Store::set_health(bool available, const std::string& problem, int64_t now_ms) {
  std::function<void(const Health&)> listener;
  Health changed;
  {
    std::lock_guard lock(health_->mu);
    if (health_->now.available == available) {
      if (!available) health_->now.problem = problem;  // the latest reason, no new event
      return;
    }
    health_->now = Health{available, available ? std::string() : problem, now_ms};
    changed = health_->now;
    listener = health_->listener;
  }
  if (listener) listener(changed);
}

void Store::set_health(HealthSource source, bool ok, const std::string& problem, int64_t now_ms) {
  bool available;
  std::string why;
  {
    std::lock_guard lock(health_->mu);
    if (source == HealthSource::probe) {
      health_->probe_ok = ok;
      health_->probe_problem = problem;
      if (ok) health_->work_ok = true;  // the server answers again: the next commit will tell
    } else {
      health_->work_ok = ok;
      health_->work_problem = problem;
    }
    available = health_->probe_ok && health_->work_ok;
    why = !health_->probe_ok ? health_->probe_problem : health_->work_problem;
  }
  set_health(available, why, now_ms);
}

std::unique_ptr<Store::ChangeWatch> Store::watch_changes(ChangeListener listener) {
  uint64_t id = 0;
  {
    std::lock_guard lock(watchers_->mu);
    id = watchers_->next++;
    watchers_->listeners[id] = std::move(listener);
  }
  std::weak_ptr<Watchers> weak = watchers_;
  return std::make_unique<Watch>(weak, [weak, id] {
    if (auto w = weak.lock()) {
      std::lock_guard lock(w->mu);
      w->listeners.erase(id);
    }
  });
}

std::unique_ptr<Store::ChangeWatch> Store::offer_claims(const std::string& queue, std::weak_ptr<Claimant> claimant) {
  uint64_t id = 0;
  {
    std::lock_guard lock(claimants_->mu);
    id = claimants_->next++;
    claimants_->by_queue[queue][id] = std::move(claimant);
  }
  std::weak_ptr<Claimants> weak = claimants_;
  return std::make_unique<Watch>(weak, [weak, queue, id] {
    if (auto c = weak.lock()) {
      std::lock_guard lock(c->mu);
      auto it = c->by_queue.find(queue);
      if (it == c->by_queue.end()) return;
      it->second.erase(id);
      if (it->second.empty()) c->by_queue.erase(it);
    }
  });
}

std::vector<Store::Claim> Store::reserve_claims(const Batch& batch) const {
  std::vector<Claim> claims(batch.enqueues.size());
  std::vector<std::shared_ptr<Claimant>> asked;  // let go after the lock (a last reference ends an offer)
  std::lock_guard lock(claimants_->mu);
  if (claimants_->by_queue.empty()) return claims;
  for (std::size_t i = 0; i < batch.enqueues.size(); ++i) {
    const auto& e = batch.enqueues[i];
    if (e.message.delay_ms > 0) continue;
    auto it = claimants_->by_queue.find(e.queue);
    if (it == claimants_->by_queue.end()) continue;
    for (const auto& [id, weak] : it->second) {
      auto c = weak.lock();
      if (!c) continue;
      if (const int64_t lease_ms = c->reserve(); lease_ms > 0) {
        claims[i] = Claim{std::move(c), lease_ms, new_invocation_id() + ".h"};
        break;
      }
      asked.push_back(std::move(c));
    }
  }
  return claims;
}

void Store::settle_claims(std::vector<Claim>& claims, Batch& batch, const BatchResult* result, int64_t now_ms) {
  // By consumer, in the batch's order.
  std::map<Claimant*, std::pair<std::shared_ptr<Claimant>, std::vector<Message>>> taken;
  std::map<Claimant*, std::pair<std::shared_ptr<Claimant>, int>> back;
  for (std::size_t i = 0; i < claims.size() && i < batch.enqueues.size(); ++i) {
    Claim& c = claims[i];
    if (!c.to) continue;
    if (!result || i >= result->message_ids.size()) {
      auto& b = back[c.to.get()];
      b.first = c.to;
      ++b.second;
      continue;
    }
    auto& e = batch.enqueues[i];
    Message m;
    m.id = result->message_ids[i];
    m.event_id = e.message.event_id.empty() ? m.id : e.message.event_id;
    m.queue = e.queue;
    m.type = std::move(e.message.type);
    m.source = std::move(e.message.source);
    m.subject = std::move(e.message.subject);
    m.metadata = std::move(e.message.metadata);
    m.payload = std::move(e.message.payload);
    m.deliveries = 1;
    m.enqueued_ms = now_ms;
    m.due_ms = now_ms + c.lease_ms;
    m.lease = c.lease;
    auto& t = taken[c.to.get()];
    t.first = c.to;
    t.second.push_back(std::move(m));
  }
  for (auto& [raw, b] : back) b.first->unclaimed(b.second);
  for (auto& [raw, t] : taken) t.first->claimed(std::move(t.second));
  claims.clear();
}

void Store::notify_changes(const std::vector<std::string>& names) const {
  std::vector<ChangeListener> listeners;
  {
    std::lock_guard lock(watchers_->mu);
    for (const auto& [id, l] : watchers_->listeners) listeners.push_back(l);
  }
  for (const auto& l : listeners) l(names);
}

Store::~Store() { close_io(); }

bool Store::on_io_thread() { return t_on_io_thread; }

void Store::run_blocking(std::function<void()> work) {
  if (t_on_io_thread) return work();
  {
    std::lock_guard lock(io_->mu);
    if (!io_->closed) {
      if (io_->threads.empty()) {
        for (int i = 0; i < kIoThreads; ++i) io_->threads.emplace_back([io = io_.get()] {
          name_this_thread("store-io");
          io->run();
        });
      }
      io_->work.push_back(std::move(work));
      io_->cv.notify_one();
      return;
    }
  }
  work();  // closing: nothing else will run it
}

void Store::close_io() {
  {
    std::lock_guard lock(io_->mu);
    io_->closed = true;
  }
  io_->cv.notify_all();
  for (auto& t : io_->threads)
    if (t.joinable()) t.join();
  io_->threads.clear();
}

// The blocking forms wait on a promise the writer fulfils; never call them on the writer
// thread (from inside a store callback).
Expected<BatchResult> Store::commit_sync(Batch batch) {
  std::promise<Expected<BatchResult>> p;
  auto f = p.get_future();
  commit(std::move(batch), [&p](Expected<BatchResult> r) { p.set_value(std::move(r)); });
  return f.get();
}

Expected<std::vector<Message>> Store::receive_sync(std::string queue, int max, int64_t lease_ms) {
  std::promise<Expected<std::vector<Message>>> p;
  auto f = p.get_future();
  receive(std::move(queue), max, lease_ms, [&p](Expected<std::vector<Message>> r) { p.set_value(std::move(r)); });
  return f.get();
}

namespace {
template <class T, class Start>
T wait_for(Start&& start) {
  std::promise<T> p;
  auto f = p.get_future();
  start([&p](T r) { p.set_value(std::move(r)); });
  return f.get();
}
}  // namespace

Status Store::extend_sync(std::vector<LeaseRef> refs, int64_t lease_ms) {
  return wait_for<Status>([&](auto done) { extend(std::move(refs), lease_ms, std::move(done)); });
}

Status Store::subscribe_sync(Subscription subscription) {
  return wait_for<Status>([&](auto done) { subscribe(std::move(subscription), std::move(done)); });
}

Expected<int64_t> Store::purge_sync(std::string queue) {
  return wait_for<Expected<int64_t>>([&](auto done) { purge(std::move(queue), std::move(done)); });
}

Expected<int64_t> Store::replay_dead_sync(std::string queue) {
  return wait_for<Expected<int64_t>>([&](auto done) { replay_dead(std::move(queue), std::move(done)); });
}

}  // namespace nimbus

namespace nimbus {

Expected<int64_t> Store::trim_stream_sync(std::string stream, int64_t before_ms, int64_t keep_last) {
  return wait_for<Expected<int64_t>>(
      [&](auto done) { trim_stream(std::move(stream), before_ms, keep_last, std::move(done)); });
}

int stream_partition(std::string_view key, int partitions) {
  if (partitions <= 1) return 0;
  uint64_t h = 14695981039346656037ull;  // FNV-1a, 64 bits
  for (unsigned char c : key) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return static_cast<int>(h % static_cast<uint64_t>(partitions));
}

std::string stream_wake_name(const std::string& stream, int partition) {
  // Queue names cannot hold a space, so this never names a queue.
  return "stream " + stream + " " + std::to_string(partition);
}

}  // namespace nimbus

namespace nimbus {

Status Store::set_blob_subscriptions_sync(std::vector<BlobSubscription> subscriptions) {
  return wait_for<Status>([&](auto done) { set_blob_subscriptions(std::move(subscriptions), std::move(done)); });
}

}  // namespace nimbus

namespace nimbus {

NewMessage blob_event_message(const BlobInfo& info, BlobEvent event, const Headers& captures,
                              const std::string& traceparent, const std::string& tracestate) {
  NewMessage m;
  m.type = "nimbus.blob." + std::string(blob_event_name(event));
  m.source = "/blobs/" + info.container;
  m.subject = info.name;
  const std::string* name_capture = nullptr;
  for (const auto& c : captures)
    if (c.name == "name") name_capture = &c.value;
  m.metadata = {{"blob.container", info.container},
                {"blob.name", name_capture ? *name_capture : info.name},
                {"blob.path", info.container + "/" + info.name},
                {"blob.event", std::string(blob_event_name(event))},
                {"blob.version", std::to_string(info.version)},
                {"blob.etag", info.etag},
                {"blob.size", std::to_string(info.size)},
                {"blob.content_type", info.content_type},
                {"blob.sha256", info.sha256}};
  const std::size_t builtins = m.metadata.size();
  for (const auto& c : captures) {
    bool taken = false;  // built-in keys are never replaced (the manifest refuses such captures)
    for (std::size_t i = 0; i < builtins; ++i) taken |= m.metadata[i].name == "blob." + c.name;
    if (!taken) m.metadata.push_back({"blob." + c.name, c.value});
  }
  add_trace_context(m.metadata, traceparent, tracestate);
  return m;
}

std::string blob_event_id(const std::string& queue, const BlobInfo& info, BlobEvent event) {
  // Unique per queue, name and version (versions never repeat for a name), so it is also
  // the same id if one event were ever written twice.
  return queue + "/" + info.container + "/" + info.name + "#" + std::to_string(info.version) +
         (event == kBlobDeleted ? ":deleted" : "");
}

std::string encode_headers(const Headers& headers) {
  std::string out;
  auto put = [&out](const std::string& s) {
    uint32_t n = static_cast<uint32_t>(s.size());
    out.append(reinterpret_cast<const char*>(&n), 4);
    out += s;
  };
  for (const auto& h : headers) {
    put(h.name);
    put(h.value);
  }
  return out;
}

Headers decode_headers(const void* data, int size) {
  Headers out;
  const char* p = static_cast<const char*>(data);
  const char* end = p + (size > 0 ? size : 0);
  auto take = [&](std::string& s) {
    uint32_t n;
    if (end - p < 4) return false;
    std::memcpy(&n, p, 4);
    p += 4;
    if (static_cast<uint32_t>(end - p) < n) return false;
    s.assign(p, n);
    p += n;
    return true;
  };
  while (p < end) {
    Header h;
    if (!take(h.name) || !take(h.value)) break;
    out.push_back(std::move(h));
  }
  return out;
}

std::string redact_store_url(const std::string& url) {
  // scheme://user:password@host... -> scheme://user:***@host...
  const auto scheme = url.find("://");
  if (scheme == std::string::npos) return url;
  const auto at = url.find('@', scheme + 3);
  if (at == std::string::npos) return url;
  const auto colon = url.find(':', scheme + 3);
  if (colon == std::string::npos || colon > at) return url;
  return url.substr(0, colon + 1) + "***" + url.substr(at);
}

}  // namespace nimbus
