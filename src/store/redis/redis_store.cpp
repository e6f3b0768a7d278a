// The Redis store: opening (the script, the schema version), the writer's pipelined group
// commit, the subscriber thread, queue and stream operations, and the reads (redis_store.h).
#include "store/redis/redis_store.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <set>

#include "core/ids.h"
#include "core/thread_role.h"
#include "store/backend.h"
#include "store/redis/store_script.h"

namespace nimbus {
namespace rd {
namespace {

constexpr int kSchemaVersion = 1;

Message message_of(const Value& v) {
  Message m;
  m.id = v[0].str();
  m.event_id = v[1].str();
  m.queue = v[2].str();
  m.type = v[3].str();
  m.source = v[4].str();
  m.subject = v[5].str();
  const std::string meta = v[6].str();
  m.metadata = decode_headers(meta.data(), static_cast<int>(meta.size()));
  m.payload = v[7].str();
  m.deliveries = static_cast<int>(v[8].num());
  m.enqueued_ms = v[9].num();
  m.due_ms = v[10].num();
  m.lease = v[11].str();
  m.last_error = v[12].str();
  m.first_failed_ms = v[13].num();
  m.last_failed_ms = v[14].num();
  return m;
}

bool is_noscript(const std::string& text) { return text.rfind("NOSCRIPT", 0) == 0; }

}  // namespace

RedisStore::RedisStore(std::string url, Address address, const Clock& clock, StoreOptions options)
    : url_(std::move(url)), address_(std::move(address)), clock_(clock), options_(options),
      origin_(new_invocation_id()) {}

RedisStore::~RedisStore() {
  close();
  for (int fd : stop_pipe_) {
    if (fd >= 0) ::close(fd);
  }
}

// The script's SHA is fixed in open(), before any thread reads it; after a server restart
// (or SCRIPT FLUSH) the same text is loaded again and gets the same SHA.
Status RedisStore::load_script(Connection& c) {
  auto r = c.run({"SCRIPT", "LOAD", std::string(kStoreScript)});
  if (!r) return Error{r.error().message, store_error::io};
  if (sha_.empty()) sha_ = r->str();
  if (r->str() != sha_) return Error{"Redis answered SCRIPT LOAD with SHA " + r->str() + ", not " + sha_, store_error::io};
  return ok_status();
}

Status RedisStore::open() {
  writer_conn_ = std::make_unique<Connection>(address_);
  Connection& c = *writer_conn_;
  if (auto st = c.connect(); !st) return Error{st.error().message, store_error::io};
  if (auto st = load_script(c); !st) return st;
  // The layout's version: set by the first host, refused when newer than this build.
  const std::string schema_key = address_.prefix + ":schema";
  auto set = c.run({"SET", schema_key, std::to_string(kSchemaVersion), "NX"});
  if (!set) return set.error();
  auto found = c.run({"GET", schema_key});
  if (!found) return found.error();
  if (found->num() > kSchemaVersion) {
    return Error{"the Redis database at " + redact_store_url(url_) + " was written by a newer Nimbus (schema version " +
                     found->str() + ", this build reads up to " + std::to_string(kSchemaVersion) +
                     "); upgrade this host, or give it another prefix= or database",
                 store_error::io};
  }
  // A server that may evict keys would drop messages silently: refused (a server that hides
  // CONFIG, as some managed ones do, is taken at its word).
  if (auto policy = c.run({"CONFIG", "GET", "maxmemory-policy"}); policy && policy->operator[](1).str() != "" &&
                                                                   policy->operator[](1).str() != "noeviction") {
    return Error{"store " + redact_store_url(url_) + ": the Redis server has maxmemory-policy " + policy->operator[](1).str() +
                     ", so it may evict (lose) messages and state when memory is full; set maxmemory-policy noeviction",
                 store_error::io};
  }
  // Durability is the server's (appendonly / appendfsync, docs/redis.md): say what it keeps.
  if (options_.durability == Durability::fsync) {
    auto conf = c.run({"CONFIG", "GET", "appendfsync"});
    auto aof = c.run({"CONFIG", "GET", "appendonly"});
    if (conf && aof && (aof->operator[](1).str() != "yes" || conf->operator[](1).str() != "always")) {
      return Error{"store " + redact_store_url(url_) +
                       ": durability: fsync needs the Redis server to run with appendonly yes and appendfsync always "
                       "(it has appendonly " + aof->operator[](1).str() + ", appendfsync " + conf->operator[](1).str() + ")",
                   store_error::io};
    }
  }
  if (::pipe2(stop_pipe_, O_CLOEXEC) != 0) return Error{"cannot make a pipe for the store's listener", store_error::io};
  listener_ = std::thread([this] {
    name_this_thread("store-listen");
    listen_loop();
  });
  writer_ = std::thread([this] {
    set_thread_role(ThreadRole::store_writer);
    name_this_thread("store-writer");
    write_loop();
  });
  return ok_status();
}

std::vector<std::string> RedisStore::command(const std::string& op, int64_t now) const {
  return {"EVALSHA", sha_, "0", op, address_.prefix, std::to_string(now), origin_};
}

// --- the subscriber ------------------------------------------------------------------------

void RedisStore::listen_loop() {
  auto conn = std::make_unique<Connection>(address_);
  const std::string channel = address_.prefix + ":changes";
  bool subscribed = false;
  while (!stopping_) {
    if (!subscribed) {
      // Subscribed once the server confirms: ["subscribe", channel, count].
      auto confirm = conn->send({"SUBSCRIBE", channel}) ? conn->read_reply(1000, stop_pipe_[0]) : Expected<Value>(Value{});
      if (confirm && confirm->kind == Value::array && (*confirm)[0].str() == "subscribe" &&
          (*confirm)[1].str() == channel) {
        subscribed = true;
        set_health(HealthSource::probe, true, {}, unix_ms(clock_));
        continue;
      }
      if (stopping_) break;
      // The server is away (or did not confirm): this connection is the store's probe, so the
      // store is unhealthy until it is back. A fresh connection every second until then.
      set_health(HealthSource::probe, false, "the connection to Redis at " + redact_store_url(url_) + " was lost", unix_ms(clock_));
      conn = std::make_unique<Connection>(address_);
      pollfd stop{stop_pipe_[0], POLLIN, 0};
      ::poll(&stop, 1, 1000);
      continue;
    }
    auto v = conn->read_reply(-1, stop_pipe_[0]);
    if (!v) {
      subscribed = false;
      continue;
    }
    if (v->kind != Value::array || v->items.size() < 3 || (*v)[0].str() != "message") continue;
    // origin, then names, each length-prefixed: N:text.
    const std::string payload = (*v)[2].str();
    std::vector<std::string> parts;
    for (std::size_t at = 0; at < payload.size();) {
      const auto colon = payload.find(':', at);
      if (colon == std::string::npos) break;
      const std::size_t n = std::stoul(payload.substr(at, colon - at));
      parts.push_back(payload.substr(colon + 1, n));
      at = colon + 1 + n;
    }
    if (parts.size() < 2 || parts[0] == origin_) continue;
    parts.erase(parts.begin());
    std::sort(parts.begin(), parts.end());
    parts.erase(std::unique(parts.begin(), parts.end()), parts.end());
    notify_changes(parts);
  }
}

// --- the writer ----------------------------------------------------------------------------

void RedisStore::submit(Op op) {
  if (!queue_.push(op)) op.done(Error{"the store is closed", store_error::io});
}

void RedisStore::write_loop() {
  for (;;) {
    std::vector<Op> group = queue_.take();
    if (group.empty()) return;  // closed and drained
    const auto began = std::chrono::steady_clock::now();
    const std::size_t batches = group.size();
    run_group(group);
    record_commit(std::chrono::steady_clock::now() - began, batches);
  }
}

void RedisStore::run_group(std::vector<Op>& group) {
  Connection& c = *writer_conn_;
  std::vector<Op*> pending;
  for (auto& op : group) {
    if (!op.refused) {
      op.done(op.refused);
      continue;
    }
    pending.push_back(&op);
  }
  std::vector<std::string> woken;
  std::vector<std::pair<Op*, Status>> outcomes;
  constexpr int kMaxReloads = 3;  // a server that keeps forgetting the script is not retried forever
  constexpr int kMaxStale = 50;   // nor a blob that keeps changing under one commit
  int reloads = 0;
  // Sent together; those whose preparation went stale (or whose script the server forgot,
  // after a restart) are sent again. A lost connection fails what was not answered.
  while (!pending.empty()) {
    const int64_t now = unix_ms(clock_);
    std::vector<std::vector<std::string>> commands;
    std::vector<Op*> sent;
    // Commits that only acknowledge go in one call, first (a consumer's usual completion).
    std::vector<Op*> acking;
    for (Op* op : pending) {
      if (!op->acks_only.empty()) acking.push_back(op);
    }
    if (acking.size() > 1) {
      auto argv = command("acks", now);
      argv.push_back(std::to_string(acking.size()));
      for (Op* op : acking) {
        argv.push_back(std::to_string(op->acks_only.size()));
        for (const auto& ref : op->acks_only) argv.insert(argv.end(), {ref.id, ref.lease});
      }
      commands.push_back(std::move(argv));
      pending.erase(std::remove_if(pending.begin(), pending.end(), [](Op* op) { return !op->acks_only.empty(); }),
                    pending.end());
    } else {
      acking.clear();
    }
    // One operation per blob name in a round trip: one prepared before the one ahead of it
    // committed would only go stale. The others wait for the next round trip.
    std::set<std::string> blobs_taken;
    std::vector<Op*> later;
    for (Op* op : pending) {
      if (std::any_of(op->blob_keys.begin(), op->blob_keys.end(), [&](auto& k) { return blobs_taken.count(k) > 0; })) {
        later.push_back(op);
        continue;
      }
      blobs_taken.insert(op->blob_keys.begin(), op->blob_keys.end());
      if (op->prepare) {
        // Reads what it is prepared from (a lost connection reconnects on the next command).
        if (auto st = op->prepare(c, now); !st) {
          outcomes.emplace_back(op, st);
          continue;
        }
      }
      auto argv = command(op->name, now);
      op->args(now, argv);
      commands.push_back(std::move(argv));
      sent.push_back(op);
    }
    pending = std::move(later);
    if (commands.empty()) continue;
    if (after_prepare_ && std::any_of(sent.begin(), sent.end(), [](Op* op) { return bool(op->prepare); })) after_prepare_();
    std::vector<Value> replies;
    const Status delivered = c.pipeline(commands, replies);
    set_health(HealthSource::work, bool(delivered), delivered ? std::string() : delivered.error().message,
               unix_ms(clock_));
    // Those the connection lost before they were answered: whether they ran is unknown, so
    // each caller hears of the failure (at least once, never lost).
    auto lost = [&](Op* op) {
      outcomes.emplace_back(op, Error{"the connection to Redis at " + redact_store_url(url_) +
                                          " was lost during a commit: " + delivered.error().message,
                                      store_error::io});
    };
    bool reload = false;
    const std::size_t first = acking.empty() ? 0 : 1;
    if (!acking.empty() && replies.empty()) {
      for (Op* op : acking) lost(op);
    } else if (!acking.empty()) {
      const Value& r = replies[0];
      if (r.kind == Value::error && is_noscript(r.text)) {
        reload = true;
        pending.insert(pending.end(), acking.begin(), acking.end());
      } else {
        for (std::size_t i = 0; i < acking.size(); ++i) {
          if (r.kind == Value::error) {
            outcomes.emplace_back(acking[i], Error{"Redis: " + r.text, store_error::io});
          } else if (r[i].str() == "ok") {
            outcomes.emplace_back(acking[i], ok_status());
          } else {
            outcomes.emplace_back(acking[i], Error{r[i].str(), store_error::conflict});
          }
        }
      }
    }
    for (std::size_t i = 0; i < sent.size(); ++i) {
      Op* op = sent[i];
      if (first + i >= replies.size()) {
        lost(op);
        continue;
      }
      const Value& r = replies[first + i];
      if (r.kind == Value::error && is_noscript(r.text)) {
        reload = true;
        pending.push_back(op);
        continue;
      }
      if (r.kind == Value::error) {
        outcomes.emplace_back(op, Error{"Redis: " + r.text, store_error::io});
        continue;
      }
      if (r.kind == Value::array && r[0].str() == "stale") {
        if (++op->stale >= kMaxStale) {
          outcomes.emplace_back(op, Error{"a blob of this commit kept changing while it was prepared (" +
                                              std::to_string(kMaxStale) + " tries)",
                                          store_error::conflict});
        } else {
          pending.push_back(op);
        }
        continue;
      }
      outcomes.emplace_back(op, op->finish(r, woken));
    }
    if (reload) {
      Status st = ++reloads > kMaxReloads
                      ? Status(Error{"the Redis server forgot the store's script " + std::to_string(kMaxReloads) +
                                         " times during one commit",
                                     store_error::io})
                      : load_script(c);
      if (!st) {
        for (Op* op : pending) outcomes.emplace_back(op, st);
        pending.clear();
      }
    }
  }
  if (!woken.empty()) {  // consumers hear before committers return
    std::sort(woken.begin(), woken.end());
    woken.erase(std::unique(woken.begin(), woken.end()), woken.end());
    notify_changes(woken);
  }
  for (auto& [op, st] : outcomes) op->done(std::move(st));
}

// --- operations ----------------------------------------------------------------------------

namespace {

// The writer's op for a script operation whose reply is a count.
RedisStore::Op count_op(std::string name, std::vector<std::string> args, std::function<void(Expected<int64_t>)> done,
                        std::function<void(int64_t, std::vector<std::string>&)> wake = nullptr) {
  auto n = std::make_shared<int64_t>(0);
  RedisStore::Op op;
  op.name = std::move(name);
  op.args = [args = std::move(args)](int64_t, std::vector<std::string>& argv) {
    argv.insert(argv.end(), args.begin(), args.end());
  };
  op.finish = [n, wake = std::move(wake)](const Value& r, std::vector<std::string>& woken) -> Status {
    *n = r.num();
    if (wake) wake(*n, woken);
    return ok_status();
  };
  op.done = [n, done = std::move(done)](Status st) {
    if (!st) return done(st.error());
    done(*n);
  };
  return op;
}

RedisStore::Op status_op(std::string name, std::vector<std::string> args, std::function<void(Status)> done) {
  RedisStore::Op op;
  op.name = std::move(name);
  op.args = [args = std::move(args)](int64_t, std::vector<std::string>& argv) {
    argv.insert(argv.end(), args.begin(), args.end());
  };
  op.finish = [](const Value&, std::vector<std::string>&) { return ok_status(); };
  op.done = std::move(done);
  return op;
}

}  // namespace

void RedisStore::commit(Batch batch, CommitDone done) { submit(commit_op(std::move(batch), std::move(done))); }

void RedisStore::receive(std::string queue, int max, int64_t lease_ms, ReceiveDone done) {
  auto out = std::make_shared<std::vector<Message>>();
  Op op;
  op.name = "receive";
  op.args = [queue = std::move(queue), max, lease_ms](int64_t now, std::vector<std::string>& argv) {
    // One lease token per delivery: this call's random part, then the message's sequence.
    argv.insert(argv.end(), {queue, std::to_string(std::max(max, 0)), new_invocation_id() + ".",
                             std::to_string(saturating_after(now, lease_ms))});
  };
  op.finish = [out](const Value& r, std::vector<std::string>&) {
    out->clear();
    for (const auto& m : r.items) out->push_back(message_of(m));
    return ok_status();
  };
  op.done = [out, done = std::move(done)](Status st) {
    if (!st) return done(st.error());
    done(std::move(*out));
  };
  if (max <= 0) {
    op.args = [](int64_t, std::vector<std::string>& argv) { argv.insert(argv.end(), {"", "0", "x", "0"}); };
  }
  submit(std::move(op));
}

void RedisStore::extend(std::vector<LeaseRef> refs, int64_t lease_ms, std::function<void(Status)> done) {
  Op op;
  op.name = "extend";
  op.args = [refs = std::move(refs), lease_ms](int64_t now, std::vector<std::string>& argv) {
    argv.push_back(std::to_string(saturating_after(now, lease_ms)));
    argv.push_back(std::to_string(refs.size()));
    for (const auto& r : refs) argv.insert(argv.end(), {r.id, r.lease});
  };
  op.finish = [](const Value&, std::vector<std::string>&) { return ok_status(); };
  op.done = std::move(done);
  submit(std::move(op));
}

void RedisStore::subscribe(Subscription s, std::function<void(Status)> done) {
  submit(status_op("subscribe", {s.topic, s.name, s.type, s.source, s.subject_prefix}, std::move(done)));
}

void RedisStore::purge(std::string queue, std::function<void(Expected<int64_t>)> done) {
  submit(count_op("purge", {std::move(queue)}, std::move(done)));
}

void RedisStore::replay_dead(std::string queue, std::function<void(Expected<int64_t>)> done) {
  submit(count_op("replay_dead", {queue}, std::move(done), [queue](int64_t n, std::vector<std::string>& woken) {
    if (n > 0) woken.push_back(queue);
  }));
}

void RedisStore::trim_stream(std::string stream, int64_t before_ms, int64_t keep_last,
                             std::function<void(Expected<int64_t>)> done) {
  submit(count_op("trim_stream", {std::move(stream), std::to_string(before_ms), std::to_string(keep_last)},
                  std::move(done)));
}

void RedisStore::set_blob_subscriptions(std::vector<BlobSubscription> subs, std::function<void(Status)> done) {
  // Kept as the host gave them (checked first); a put matches them host-side (redis_batch.cpp).
  std::string encoded;
  Headers list;
  for (const auto& s : subs) {
    list.push_back({s.queue, s.container});
    list.push_back({s.pattern, std::to_string(s.events)});
  }
  encoded = encode_headers(list);
  Op op = status_op("set_blob_subscriptions", {encoded}, std::move(done));
  op.refused = check_blob_subscriptions(subs);
  submit(std::move(op));
}

void RedisStore::close() {
  close_io();  // what was handed to the I/O threads may still commit
  if (!queue_.close()) return;
  if (writer_.joinable()) writer_.join();
  stopping_ = true;
  if (stop_pipe_[1] >= 0) {
    const char x = 1;
    (void)!::write(stop_pipe_[1], &x, 1);
  }
  if (listener_.joinable()) listener_.join();
  pool_.clear();
}

// --- reads ---------------------------------------------------------------------------------

Expected<Value> RedisStore::read(const std::string& op, const std::vector<std::string>& args) {
  check_may_block("a store read");
  std::unique_ptr<Connection> conn = pool_.take();
  if (!conn) conn = std::make_unique<Connection>(address_);
  auto argv = command(op, unix_ms(clock_));
  argv.insert(argv.end(), args.begin(), args.end());
  Expected<Value> out = conn->run(argv);
  for (int again = 0; again < 2 && !out; ++again) {
    if (out.error().code == "redis" && is_noscript(out.error().message.substr(7))) {
      if (auto st = load_script(*conn); !st) return st.error();
    } else if (!conn->connected()) {
      conn = std::make_unique<Connection>(address_);  // once more on a fresh connection
    } else {
      break;
    }
    out = conn->run(argv);
  }
  if (!out) {
    if (!conn->connected()) set_health(HealthSource::work, false, out.error().message, unix_ms(clock_));
    return Error{out.error().message, store_error::io};
  }
  if (conn->connected()) pool_.give(std::move(conn));
  return out;
}

Expected<std::optional<StateEntry>> RedisStore::get(const std::string& store, const std::string& key) {
  auto r = read("get", {store, key});
  if (!r) return r.error();
  if (r->items.empty()) return std::optional<StateEntry>();
  return std::optional<StateEntry>(StateEntry{key, (*r)[0].str(), (*r)[1].str(), (*r)[2].num()});
}

Expected<std::vector<StateEntry>> RedisStore::scan(const std::string& store, const std::string& prefix, int limit) {
  auto r = read("scan", {store, prefix, std::to_string(std::max(limit, 0))});
  if (!r) return r.error();
  std::vector<StateEntry> out;
  for (const auto& e : r->items) out.push_back(StateEntry{e[0].str(), e[1].str(), e[2].str(), e[3].num()});
  return out;
}

Expected<std::vector<Message>> RedisStore::peek(const std::string& queue, int limit) {
  auto r = read("peek", {queue, std::to_string(limit)});
  if (!r) return r.error();
  std::vector<Message> out;
  for (const auto& m : r->items) out.push_back(message_of(m));
  return out;
}

Expected<std::vector<QueueStats>> RedisStore::stats() {
  auto r = read("stats", {});
  if (!r) return r.error();
  std::vector<QueueStats> out;
  for (const auto& q : r->items) out.push_back(QueueStats{q[0].str(), q[1].num(), q[2].num(), q[3].num()});
  std::sort(out.begin(), out.end(), [](const QueueStats& a, const QueueStats& b) { return a.queue < b.queue; });
  return out;
}

Expected<int64_t> RedisStore::next_due(const std::string& queue) {
  auto r = read("next_due", {queue});
  if (!r) return r.error();
  return r->num();
}

Expected<std::vector<StreamRecord>> RedisStore::read_stream(const std::string& stream, int partition, int64_t from,
                                                            int max) {
  auto r = read("read_stream", {stream, std::to_string(partition), std::to_string(std::max<int64_t>(from, 0)),
                                std::to_string(max)});
  if (!r) return r.error();
  std::vector<StreamRecord> out;
  for (const auto& e : r->items) {
    StreamRecord rec;
    rec.stream = stream;
    rec.partition = partition;
    rec.offset = e[0].num();
    rec.key = e[1].str();
    rec.id = e[2].str();
    rec.type = e[3].str();
    rec.source = e[4].str();
    rec.subject = e[5].str();
    const std::string meta = e[6].str();
    rec.metadata = decode_headers(meta.data(), static_cast<int>(meta.size()));
    rec.payload = e[7].str();
    rec.time_ms = e[8].num();
    out.push_back(std::move(rec));
  }
  return out;
}

Expected<std::vector<StreamPartitionInfo>> RedisStore::stream_info(const std::string& stream) {
  auto r = read("stream_info", {stream});
  if (!r) return r.error();
  std::vector<StreamPartitionInfo> out;
  for (const auto& p : r->items) {
    StreamPartitionInfo info;
    info.stream = stream;
    info.partition = static_cast<int>(p[0].num());
    info.first_offset = p[1].num();
    info.next_offset = p[2].num();
    info.records = info.next_offset - info.first_offset;  // retention drops only the oldest
    out.push_back(info);
  }
  std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.partition < b.partition; });
  return out;
}

Expected<std::vector<StreamCheckpoint>> RedisStore::stream_checkpoints(const std::string& stream) {
  auto r = read("checkpoints", {stream});
  if (!r) return r.error();
  std::vector<StreamCheckpoint> out;
  for (const auto& c : r->items) {
    out.push_back(StreamCheckpoint{c[0].str(), c[1].str(), static_cast<int>(c[2].num()), c[3].num(), c[4].num()});
  }
  std::sort(out.begin(), out.end(), [](const StreamCheckpoint& a, const StreamCheckpoint& b) {
    return std::tie(a.stream, a.group, a.partition) < std::tie(b.stream, b.group, b.partition);
  });
  return out;
}

Expected<int64_t> RedisStore::stream_offset_at(const std::string& stream, int partition, int64_t time_ms) {
  auto r = read("stream_offset_at", {stream, std::to_string(partition), std::to_string(time_ms)});
  if (!r) return r.error();
  return r->num();
}

}  // namespace rd

Expected<std::unique_ptr<Store>> open_redis_store(const std::string& url, const std::filesystem::path&,
                                                  const Clock& clock, StoreOptions options) {
  auto address = rd::parse_address(url);
  if (!address) return address.error();
  auto store = std::make_unique<rd::RedisStore>(url, *address, clock, options);
  if (auto st = store->open(); !st) return st.error();
  return std::unique_ptr<Store>(std::move(store));
}

Expected<StoreFiles> redis_store_files(const std::string& url, const std::filesystem::path&) {
  if (auto address = rd::parse_address(url); !address) return address.error();
  return StoreFiles{};  // across the network: nothing on this machine to hide
}

}  // namespace nimbus
