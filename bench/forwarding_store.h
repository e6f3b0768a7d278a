#pragma once
// A Store that hands every call to another one: benchmarks derive from it to watch commits.
#include "store/store.h"

namespace nimbus {

class ForwardingStore : public Store {
 public:
  explicit ForwardingStore(Store& inner) : inner_(inner) {}
  void commit(Batch batch, CommitDone done) override { inner_.commit(std::move(batch), std::move(done)); }
  void receive(std::string q, int max, int64_t lease, ReceiveDone done) override {
    inner_.receive(std::move(q), max, lease, std::move(done));
  }
  void extend(std::vector<LeaseRef> r, int64_t lease, std::function<void(Status)> done) override {
    inner_.extend(std::move(r), lease, std::move(done));
  }
  void subscribe(Subscription s, std::function<void(Status)> done) override { inner_.subscribe(std::move(s), std::move(done)); }
  void purge(std::string q, std::function<void(Expected<int64_t>)> done) override { inner_.purge(std::move(q), std::move(done)); }
  void replay_dead(std::string q, std::function<void(Expected<int64_t>)> done) override {
    inner_.replay_dead(std::move(q), std::move(done));
  }
  void trim_stream(std::string s, int64_t before, int64_t keep, std::function<void(Expected<int64_t>)> done) override {
    inner_.trim_stream(std::move(s), before, keep, std::move(done));
  }
  Expected<std::optional<StateEntry>> get(const std::string& s, const std::string& k) override { return inner_.get(s, k); }
  Expected<std::vector<StateEntry>> scan(const std::string& s, const std::string& p, int l) override {
    return inner_.scan(s, p, l);
  }
  Expected<std::vector<Message>> peek(const std::string& q, int l) override { return inner_.peek(q, l); }
  Expected<std::vector<QueueStats>> stats() override { return inner_.stats(); }
  Expected<int64_t> next_due(const std::string& q) override { return inner_.next_due(q); }
  Expected<std::vector<StreamRecord>> read_stream(const std::string& s, int p, int64_t from, int max) override {
    return inner_.read_stream(s, p, from, max);
  }
  Expected<std::vector<StreamPartitionInfo>> stream_info(const std::string& s) override { return inner_.stream_info(s); }
  Expected<std::vector<StreamCheckpoint>> stream_checkpoints(const std::string& s) override {
    return inner_.stream_checkpoints(s);
  }
  Expected<int64_t> stream_offset_at(const std::string& s, int p, int64_t t) override {
    return inner_.stream_offset_at(s, p, t);
  }
  std::unique_ptr<ChangeWatch> watch_changes(ChangeListener l) override { return inner_.watch_changes(std::move(l)); }
  void set_blob_subscriptions(std::vector<BlobSubscription> s, std::function<void(Status)> done) override {
    inner_.set_blob_subscriptions(std::move(s), std::move(done));
  }
  Expected<std::optional<BlobInfo>> head_blob(const std::string& c, const std::string& n) override {
    return inner_.head_blob(c, n);
  }
  Expected<std::optional<Blob>> get_blob(const std::string& c, const std::string& n) override { return inner_.get_blob(c, n); }
  Expected<BlobPage> list_blobs(const std::string& c, const std::string& p, const std::string& a, int l) override {
    return inner_.list_blobs(c, p, a, l);
  }
  void close() override { inner_.close(); }

 protected:
  Store& inner_;
};

}  // namespace nimbus
