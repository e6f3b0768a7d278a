#include <future>

#include "store/store.h"

namespace nimbus {

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
