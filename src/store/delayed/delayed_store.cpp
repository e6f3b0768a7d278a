#include "store/delayed/delayed_store.h"

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

namespace nimbus {
namespace {

class DelayedStore final : public Store {
 public:
  DelayedStore(std::unique_ptr<Store> inner, Duration latency)
      : inner_(std::move(inner)), latency_(latency), writer_([this] { run(); }) {
    // The inner store's health is this one's (a network store behind the injected latency).
    const Health now = inner_->health();
    set_health(now.available, now.problem, now.since_ms);
    inner_->on_health_change([this](const Health& h) { set_health(h.available, h.problem, h.since_ms); });
  }
  ~DelayedStore() override { close(); }

  void commit_metrics_text(std::string& out) const override { inner_->commit_metrics_text(out); }
  void commit(Batch batch, CommitDone done) override {
    later([this, b = std::make_shared<Batch>(std::move(batch)), done = std::move(done)]() mutable {
      inner_->commit(std::move(*b), std::move(done));
    });
  }
  void receive(std::string queue, int max, int64_t lease_ms, ReceiveDone done) override {
    later([=, this, done = std::move(done)]() mutable { inner_->receive(queue, max, lease_ms, std::move(done)); });
  }
  void extend(std::vector<LeaseRef> refs, int64_t lease_ms, std::function<void(Status)> done) override {
    later([=, this, done = std::move(done)]() mutable { inner_->extend(refs, lease_ms, std::move(done)); });
  }
  void subscribe(Subscription s, std::function<void(Status)> done) override {
    later([=, this, done = std::move(done)]() mutable { inner_->subscribe(s, std::move(done)); });
  }
  void purge(std::string queue, std::function<void(Expected<int64_t>)> done) override {
    later([=, this, done = std::move(done)]() mutable { inner_->purge(queue, std::move(done)); });
  }
  void replay_dead(std::string queue, std::function<void(Expected<int64_t>)> done) override {
    later([=, this, done = std::move(done)]() mutable { inner_->replay_dead(queue, std::move(done)); });
  }
  void trim_stream(std::string stream, int64_t before_ms, int64_t keep_last,
                   std::function<void(Expected<int64_t>)> done) override {
    later([=, this, done = std::move(done)]() mutable { inner_->trim_stream(stream, before_ms, keep_last, std::move(done)); });
  }
  void set_blob_subscriptions(std::vector<BlobSubscription> subs, std::function<void(Status)> done) override {
    later([=, this, done = std::move(done)]() mutable { inner_->set_blob_subscriptions(subs, std::move(done)); });
  }

  Expected<std::optional<StateEntry>> get(const std::string& store, const std::string& key) override {
    pause();
    return inner_->get(store, key);
  }
  Expected<std::vector<StateEntry>> scan(const std::string& store, const std::string& prefix, int limit) override {
    pause();
    return inner_->scan(store, prefix, limit);
  }
  Expected<std::vector<Message>> peek(const std::string& queue, int limit) override {
    pause();
    return inner_->peek(queue, limit);
  }
  Expected<std::vector<QueueStats>> stats() override {
    pause();
    return inner_->stats();
  }
  Expected<int64_t> next_due(const std::string& queue) override {
    pause();
    return inner_->next_due(queue);
  }
  Expected<std::vector<StreamRecord>> read_stream(const std::string& stream, int partition, int64_t from,
                                                  int max) override {
    pause();
    return inner_->read_stream(stream, partition, from, max);
  }
  Expected<std::vector<StreamPartitionInfo>> stream_info(const std::string& stream) override {
    pause();
    return inner_->stream_info(stream);
  }
  Expected<std::vector<StreamCheckpoint>> stream_checkpoints(const std::string& stream) override {
    pause();
    return inner_->stream_checkpoints(stream);
  }
  Expected<int64_t> stream_offset_at(const std::string& stream, int partition, int64_t time_ms) override {
    pause();
    return inner_->stream_offset_at(stream, partition, time_ms);
  }
  Expected<std::optional<BlobInfo>> head_blob(const std::string& container, const std::string& name) override {
    pause();
    return inner_->head_blob(container, name);
  }
  Expected<std::optional<Blob>> get_blob(const std::string& container, const std::string& name) override {
    pause();
    return inner_->get_blob(container, name);
  }
  Expected<BlobPage> list_blobs(const std::string& container, const std::string& prefix, const std::string& after,
                                int limit) override {
    pause();
    return inner_->list_blobs(container, prefix, after, limit);
  }

  std::unique_ptr<ChangeWatch> watch_changes(ChangeListener listener) override {
    return inner_->watch_changes(std::move(listener));
  }

  void close() override {
    close_io();  // work handed to run_blocking may still write
    {
      std::lock_guard lock(mu_);
      if (closed_) return;
      closed_ = true;
    }
    cv_.notify_all();
    if (writer_.joinable()) writer_.join();
    inner_->close();
  }

 private:
  void pause() const { std::this_thread::sleep_for(latency_); }

  // Writes reach the inner store `latency` after they were made, in the order they were made.
  void later(std::function<void()> write) {
    {
      std::lock_guard lock(mu_);
      if (!closed_) {
        pending_.push_back({std::chrono::steady_clock::now() + latency_, std::move(write)});
        cv_.notify_one();
        return;
      }
    }
    write();  // closing: straight through
  }

  void run() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return closed_ || !pending_.empty(); });
      if (pending_.empty()) return;
      auto due = pending_.front().first;
      if (std::chrono::steady_clock::now() < due && !closed_) {
        cv_.wait_until(lock, due);
        continue;
      }
      auto write = std::move(pending_.front().second);
      pending_.pop_front();
      lock.unlock();
      write();
      lock.lock();
    }
  }

  std::unique_ptr<Store> inner_;
  Duration latency_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<std::chrono::steady_clock::time_point, std::function<void()>>> pending_;
  bool closed_ = false;
  std::thread writer_;
};

}  // namespace

std::unique_ptr<Store> with_injected_latency(std::unique_ptr<Store> inner, Duration latency) {
  return std::make_unique<DelayedStore>(std::move(inner), latency);
}

}  // namespace nimbus
