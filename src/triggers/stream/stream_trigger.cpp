#include "triggers/stream/stream_trigger.h"

#include <algorithm>
#include <boost/json.hpp>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>
#include <thread>

#include "core/ids.h"
#include "core/text.h"
#include "observe/log.h"
#include "observe/trace.h"
#include "pool/function_pools.h"
#include "triggers/outputs.h"
#include "triggers/task_thread.h"

namespace nimbus {
namespace {

namespace json = boost::json;
const TriggerKind kStream = TriggerKind::named("stream");

constexpr auto kTrimEvery = std::chrono::minutes(1);
// Partition leases: renewed every kLeaseEvery, lost kLeaseTtl after the last renewal.
constexpr auto kLeaseEvery = std::chrono::seconds(1);
constexpr auto kLeaseTtl = std::chrono::seconds(5);

}  // namespace

namespace {

// JSON numbers have no range, but a double does: 1e999 parses as infinity, which Boost.JSON
// writes as `Infinity`, not JSON. A payload holding one is passed on as its text instead.
bool all_finite(const json::value& v) {
  switch (v.kind()) {
    case json::kind::double_: return std::isfinite(v.get_double());
    case json::kind::array:
      for (const auto& e : v.get_array())
        if (!all_finite(e)) return false;
      return true;
    case json::kind::object:
      for (const auto& m : v.get_object())
        if (!all_finite(m.value())) return false;
      return true;
    default: return true;
  }
}

}  // namespace

std::string stream_batch_payload(const std::vector<StreamRecord>& records) {
  // Each record is written as an object; a JSON payload is spliced in as its own text, not
  // parsed and written again: a double would turn 2222222222222222222222222222222222 (or any
  // integer past 2^64) into 2.2222222222222222E33, and a reader that keeps big integers exact
  // (Python, Go's json.Number, JS with a reviver) would get other digits than were appended.
  std::string out = "[";
  for (const auto& r : records) {
    // Keys, attributes and metadata come from outside as bytes; JSON text must be UTF-8.
    auto text = [](const std::string& s) { return replace_invalid_utf8(s); };
    json::object metadata;
    for (const auto& m : r.metadata) metadata[text(m.name)] = text(m.value);
    json::object o{{"stream", text(r.stream)}, {"partition", r.partition}, {"offset", r.offset},
                   {"key", text(r.key)},       {"time_ms", r.time_ms},     {"id", text(r.id)},
                   {"type", text(r.type)},     {"source", text(r.source)}, {"subject", text(r.subject)},
                   {"metadata", std::move(metadata)}};
    boost::system::error_code ec;
    json::value data = r.payload.empty() ? json::value() : json::parse(r.payload, ec);
    const bool splice = !r.payload.empty() && !ec && all_finite(data);
    if (!splice && valid_utf8(r.payload)) {
      o["data"] = r.payload;
    } else if (!splice) {
      o["data_base64"] = base64(r.payload);
    }
    std::string element = json::serialize(o);
    if (splice) {
      element.pop_back();  // the object's closing brace
      element += ",\"data\":";
      element += r.payload;
      element += '}';
    }
    if (out.size() > 1) out += ',';
    out += element;
  }
  out += ']';
  return out;
}

// One partition of one stream, consumed by one function's group: at most one batch in flight.
class StreamTrigger::Partition : public std::enable_shared_from_this<Partition> {
 public:
  Partition(const FunctionSpec& fn, const StreamTriggerSpec& spec, int partition, FunctionPool& pool, Store& store,
            const Clock& clock, Timers timers, Logger& logger, std::shared_ptr<TaskThread> worker)
      : fn_(fn),
        spec_(spec),
        partition_(partition),
        wake_name_(stream_wake_name(spec.name, partition)),
        pool_(pool),
        store_(store),
        clock_(clock),
        timers_(timers),
        logger_(logger),
        worker_(std::move(worker)) {}

  const std::string& wake_name() const { return wake_name_; }
  // This partition's lease (triggers/stream/partition_leases.h).
  std::string lease_key() const { return spec_.name + "/" + std::to_string(partition_) + "/" + spec_.group; }

  // Whether this host holds the partition's lease and reads it. Taken: it starts again from
  // the group's committed checkpoint. Given up: no new batch starts (a running one commits,
  // fenced by its checkpoint). On the thread that runs the lease rounds (or before any pump).
  void set_owned(bool owned) {
    {
      std::lock_guard lock(mu_);
      if (owned_ == owned) return;
      owned_ = owned;
      if (!owned || running_ || stopping_) return;
    }
    has_stored_ = false;
    stored_ = 0;
    if (auto st = load(); !st) {
      logger_.host(LogLevel::warn, "stream checkpoint read failed; trying again",
                   {{"function", fn_.name}, {"stream", spec_.name}, {"error", st.error().message}});
    }
    poke();
  }

  // Where the group stands: its committed checkpoint, or (a new group) the start or the end.
  Status load() {
    auto cps = store_.stream_checkpoints(spec_.name);
    if (!cps) return cps.error();
    for (const auto& c : *cps) {
      if (c.group == spec_.group && c.partition == partition_) {
        stored_ = c.offset;
        has_stored_ = true;
      }
    }
    position_ = stored_;
    if (!has_stored_ && spec_.from_latest) {
      auto info = store_.stream_info(spec_.name);
      if (!info) return info.error();
      for (const auto& p : *info)
        if (p.partition == partition_) position_ = p.next_offset;
    }
    return ok_status();
  }

  // Looks for records now (on the trigger's worker thread).
  void poke() {
    std::weak_ptr<Partition> weak = weak_from_this();
    worker_->post([weak] {
      if (auto self = weak.lock()) self->pump();
    });
  }

  void stop() {
    std::lock_guard lock(mu_);
    stopping_ = true;
    if (timer_ != 0) timers_.cancel(timer_);
    timer_ = 0;
    if (waiting_retry_) {
      // Nothing runs: the batch is read again from the checkpoint at the next start.
      waiting_retry_ = false;
      running_ = false;
    }
  }
  bool busy() const {
    std::lock_guard lock(mu_);
    return running_;
  }

 private:
  void pump() {
    {
      std::lock_guard lock(mu_);
      if (running_ || stopping_ || waiting_retry_ || !owned_) return;
      running_ = true;
    }
    auto records = store_.read_stream(spec_.name, partition_, position_, spec_.batch_size);
    if (records && records->empty() && follow_checkpoint()) {
      records = store_.read_stream(spec_.name, partition_, position_, spec_.batch_size);
    }
    if (!records || records->empty()) {
      if (!records) {
        logger_.host(LogLevel::warn, "stream read failed; trying again",
                     {{"function", fn_.name}, {"stream", spec_.name}, {"error", records.error().message}});
      }
      idle();
      return;
    }
    batch_ = std::move(*records);
    if (batch_.front().offset > position_) {
      // Retention dropped records this group had not read: say so, and go on from what is kept.
      logger_.host(LogLevel::warn, "stream records were dropped by retention before this group read them",
                   {{"function", fn_.name}, {"stream", spec_.name}, {"partition", partition_},
                    {"from", position_}, {"to", batch_.front().offset}});
    }
    attempt_ = 0;
    run();
  }

  // The committed checkpoint moved without us (a replay, or another host of the group):
  // read from there. Looked at when the partition is idle, where it costs one small read.
  bool follow_checkpoint() {
    auto cps = store_.stream_checkpoints(spec_.name);
    if (!cps) return false;
    bool moved = false;
    for (const auto& c : *cps) {
      if (c.group == spec_.group && c.partition == partition_ && (!has_stored_ || c.offset != stored_)) {
        logger_.host(LogLevel::info, "stream checkpoint moved; reading from it",
                     {{"function", fn_.name}, {"stream", spec_.name}, {"partition", partition_}, {"offset", c.offset}});
        stored_ = position_ = c.offset;
        has_stored_ = true;
        moved = true;
      }
    }
    return moved;
  }

  // Nothing to read: look again after max_wait (appends on this host wake it sooner).
  void idle() {
    std::lock_guard lock(mu_);
    running_ = false;
    if (stopping_) return;
    arm_locked(clock_.now() + spec_.max_wait, false);
  }

  void arm_locked(TimePoint at, bool retry) {
    if (timer_ != 0) timers_.cancel(timer_);
    std::weak_ptr<Partition> weak = weak_from_this();
    timer_ = timers_.at(at,
        [weak, retry] {
          if (auto self = weak.lock()) {
            {
              std::lock_guard lock(self->mu_);
              self->timer_ = 0;
            }
            if (retry) {
              self->worker_->post([weak] {
                if (auto s = weak.lock()) s->run();
              });
            } else {
              self->poke();
            }
          }
        });
  }

  void run() {
    {
      std::lock_guard lock(mu_);
      waiting_retry_ = false;
      if (stopping_ || !owned_) {  // given up meanwhile: its next holder reads it from the checkpoint
        running_ = false;
        return;
      }
    }
    ++attempt_;
    // The batch continues the trace of its first record that carries one; its span links to
    // the other records' (each a cause in a trace of its own), up to the span's link limit.
    std::string_view parent_trace, parent_state;
    auto links = std::make_shared<std::vector<std::string>>();
    for (const auto& rec : batch_) {
      const std::string* tp = find_header(rec.metadata, "traceparent");
      if (!tp) continue;
      if (parent_trace.empty()) {
        parent_trace = *tp;
        if (const std::string* ts = find_header(rec.metadata, "tracestate")) parent_state = *ts;
      } else if (*tp != parent_trace && links->size() < Tracer::kMaxLinks &&
                 std::find(links->begin(), links->end(), *tp) == links->end()) {
        links->push_back(*tp);
      }
    }
    Invocation inv = new_invocation(fn_, kStream, "/streams/" + spec_.name,
                                    "nimbus.stream.batch", clock_, parent_trace, parent_state);
    inv.subject = spec_.name + "/" + std::to_string(partition_);
    inv.attempt = attempt_;
    inv.payload = stream_batch_payload(batch_);
    inv.metadata = {{"content-type", "application/json"},
                    {"stream", spec_.name},
                    {"partition", std::to_string(partition_)},
                    {"group", spec_.group},
                    {"first_offset", std::to_string(batch_.front().offset)},
                    {"last_offset", std::to_string(batch_.back().offset)},
                    {"count", std::to_string(batch_.size())}};
    std::string id = inv.id, trace = inv.traceparent, state = inv.tracestate;
    TimePoint started = inv.started;
    const uint64_t parent = inv.parent_span;
    pool_.dispatch(std::move(inv), [self = shared_from_this(), id, trace, state, started, parent, attempt = attempt_,
                                    links](Result&& result) {
      InvocationRecord record{self->fn_.name, kStream, id, trace, result.outcome, 0, self->clock_.now() - started,
                              result.error.type, result.error.message, {}, result.version, parent, attempt,
                              result.waited, result.cold_start, result.ran, std::nullopt,
                              links->empty() ? nullptr : links.get()};
      record.tracestate = state;
      self->logger_.invocation(record);
      auto held = std::make_shared<Result>(std::move(result));
      std::weak_ptr<Partition> weak = self;
      self->worker_->post([weak, held, trace, state] {
        if (auto s = weak.lock()) s->finish(std::move(*held), trace, state);
      });
    });
  }

  // Success: checkpoint past the batch with the outputs. Failure: retry, or dead-letter the
  // batch (and checkpoint past it) after the last attempt.
  void finish(Result&& result, const std::string& trace, const std::string& state) {
    const int64_t next = batch_.back().offset + 1;
    Batch commit;
    if (result.outcome == Outcome::success) {
      if (auto st = add_outputs(fn_, std::move(result.outputs), commit, nullptr, trace, state); !st) {
        result = Result::failure(Outcome::error, "invalid_output", st.error().message);
        commit = Batch{};
      }
    }
    // Fenced by the checkpoint this batch was read from (a group with none is at 0).
    commit.checkpoints.push_back({spec_.group, spec_.name, partition_, next, stored_});
    bool dead = false;
    std::string error;
    if (result.outcome != Outcome::success) {
      error = result.error.type + ": " + result.error.message;
      if (attempt_ < fn_.retry.max_attempts) {
        const Duration delay = fn_.retry.next_delay(attempt_);
        std::lock_guard lock(mu_);
        waiting_retry_ = true;
        if (stopping_) {
          running_ = false;
          return;
        }
        arm_locked(clock_.now() + delay, true);
        return;
      }
      dead = true;
      NewMessage m;
      m.type = "nimbus.stream.dead_batch";
      m.source = "/streams/" + spec_.name;
      m.subject = spec_.name + "/" + std::to_string(partition_);
      m.payload = stream_batch_payload(batch_);
      m.metadata = {{"error", error},
                    {"attempts", std::to_string(attempt_)},
                    {"group", spec_.group},
                    {"first_offset", std::to_string(batch_.front().offset)},
                    {"last_offset", std::to_string(batch_.back().offset)}};
      commit.enqueues.push_back({spec_.name + "." + spec_.group + ".dead", std::move(m)});
    }
    std::weak_ptr<Partition> weak = weak_from_this();
    // The commit's own span (the checkpoint with the outputs, or the dead letter), under the
    // invocation's, when its trace is recorded.
    Tracer* tracer = trace_sampled(trace) ? logger_.tracer() : nullptr;
    const WallTime commit_began = tracer ? clock_.wall() : WallTime{};
    store_.commit(std::move(commit), [weak, next, dead, error, tracer, commit_began,
                                      parent = tracer ? trace_context_of(trace) : TraceContext(),
                                      state = tracer ? state : std::string()](Expected<BatchResult> done) {
      auto self = weak.lock();
      if (!self) return;
      if (tracer) tracer->store_commit(parent, state, commit_began, self->clock_.wall(), dead ? "dead-letter" : "checkpoint", done.ok());
      // The store's writer thread: hand the rest to the trigger's own.
      self->worker_->post([weak, ok = done.ok(), conflict = !done.ok() && done.error().code == store_error::conflict,
                          message = done.ok() ? std::string() : done.error().message, next, dead, error] {
        auto s = weak.lock();
        if (!s) return;
        s->committed(ok, conflict, message, next, dead, error);
      });
    });
  }

  void committed(bool ok, bool conflict, const std::string& message, int64_t next, bool dead, const std::string& error) {
    if (ok) {
      stored_ = position_ = next;
      has_stored_ = true;
      if (dead) {
        logger_.host(LogLevel::warn, "stream batch dead-lettered after its last attempt",
                     {{"function", fn_.name}, {"stream", spec_.name}, {"partition", partition_},
                      {"queue", spec_.name + "." + spec_.group + ".dead"}, {"error", error}});
      }
    } else if (conflict) {
      // Another consumer of this group moved the checkpoint: go on from where it is.
      logger_.host(LogLevel::info, "stream checkpoint moved by another consumer; re-reading",
                   {{"function", fn_.name}, {"stream", spec_.name}, {"partition", partition_}});
      has_stored_ = false;
      stored_ = 0;
      (void)load();
    } else {
      logger_.host(LogLevel::warn, "stream checkpoint commit failed; the batch runs again",
                   {{"function", fn_.name}, {"stream", spec_.name}, {"partition", partition_}, {"error", message}});
    }
    {
      std::lock_guard lock(mu_);
      running_ = false;
      if (stopping_) return;
    }
    pump();
  }

  const FunctionSpec& fn_;
  StreamTriggerSpec spec_;
  int partition_;
  std::string wake_name_;
  FunctionPool& pool_;
  Store& store_;
  const Clock& clock_;
  Timers timers_;
  Logger& logger_;
  // Shared: a batch's completion may come back (on a pool thread) after the trigger is gone, and
  // then posts to a closed thread, which drops it.
  std::shared_ptr<TaskThread> worker_;
  mutable std::mutex mu_;
  bool running_ = false;        // a batch is being read, run or committed
  bool waiting_retry_ = false;  // a failed batch waits for its next attempt
  bool stopping_ = false;
  bool owned_ = false;          // this host holds the partition's lease
  TimerQueue::Id timer_ = 0;
  // Worker thread only:
  int64_t stored_ = 0;    // the committed checkpoint
  bool has_stored_ = false;
  int64_t position_ = 0;  // the next offset to read
  std::vector<StreamRecord> batch_;
  int attempt_ = 0;
};

StreamTrigger::StreamTrigger(const TriggerContext& c)
    : app_(c.app), pools_(c.pools), store_(c.store), clock_(c.clock), timers_(c.timers), logger_(c.logger),
      host_id_(c.host_id.empty() ? "host-" + new_invocation_id().substr(0, 12) : c.host_id) {}

StreamTrigger::~StreamTrigger() { stop(Duration::zero()); }

Status StreamTrigger::start() {
  for (const auto& st : app_.streams) {
    auto info = store_.stream_info(st.name);
    if (!info) return info.error();
    for (const auto& p : *info) {
      if (p.partition >= st.partitions) {
        return Error{"stream '" + st.name + "' has records in partition " + std::to_string(p.partition) +
                     " but the manifest gives it " + std::to_string(st.partitions) +
                     " partitions; changing the count would move keys between partitions (and out of order)"};
      }
    }
  }
  worker_ = std::make_shared<TaskThread>();
  for (const auto& fn : app_.functions) {
    FunctionPool* pool = pools_.find(fn.name);
    if (!pool) continue;
    for (const auto* t : fn.triggers_of<StreamTriggerSpec>()) {
      const StreamSpec* st = app_.find_stream(t->name);
      const int partitions = st ? st->partitions : 1;
      for (int p = 0; p < partitions; ++p) {
        auto part = std::make_shared<Partition>(fn, *t, p, *pool, store_, clock_, timers_, logger_,
                                                worker_);
        if (auto s = part->load(); !s) {
          return Error{"function '" + fn.name + "': cannot read the checkpoints of stream '" + t->name +
                       "': " + s.error().message};
        }
        partitions_.push_back(std::move(part));
      }
    }
  }
  if (partitions_.empty() && app_.streams.empty()) return ok_status();
  // Which partitions this host reads: those it holds a lease on (partition_leases.h). The
  // first round runs now; the next ones every kLeaseEvery on the trigger's thread.
  std::vector<PartitionLeases::Unit> units;
  for (auto& p : partitions_) {
    std::weak_ptr<Partition> weak = p;
    units.push_back({p->lease_key(),
                     [weak](bool owned) {
                       if (auto s = weak.lock()) s->set_owned(owned);
                     },
                     [weak] {
                       auto s = weak.lock();
                       return s && s->busy();
                     }});
  }
  // The embedded store is one host's alone (its writer locks the file): no one to share with,
  // and after a crash no dead host's leases to wait for.
  const bool alone = app_.store.rfind("sqlite:", 0) == 0;
  if (alone) {
    for (auto& p : partitions_) p->set_owned(true);
  } else {
    leases_ = std::make_unique<PartitionLeases>(store_, clock_, logger_, host_id_, std::move(units), kLeaseTtl);
    leases_->round();
  }
  appended_ = store_.watch_changes([this](const std::vector<std::string>& names) { on_appended(names); });
  started_ = true;
  if (!alone) arm_lease_round();
  for (auto& p : partitions_) p->poke();
  for (const auto& st : app_.streams) {
    if (st.retention != Duration{} || st.max_records != 0) {
      trim();
      break;
    }
  }
  return ok_status();
}

void StreamTrigger::arm_lease_round() {
  std::lock_guard lock(lease_mu_);
  if (!started_) return;
  lease_timer_ = timers_.at(clock_.now() + kLeaseEvery, [this] {
    worker_->post([this] {
      leases_->round();
      arm_lease_round();
    });
  });
}

void StreamTrigger::on_appended(const std::vector<std::string>& names) {
  for (const auto& name : names) {
    if (name.rfind("stream ", 0) != 0) continue;
    for (auto& p : partitions_)
      if (p->wake_name() == name) p->poke();
  }
}

void StreamTrigger::trim() {
  // The next round is armed before this one's trims are submitted: a trim can commit before
  // this returns, and whoever saw it (a test moving a manual clock on) must find the next
  // round already counted from now.
  const TimePoint at = clock_.now() + kTrimEvery;
  trim_timer_ = timers_.at(at, [this] { trim(); });
  for (const auto& st : app_.streams) {
    if (st.retention == Duration{} && st.max_records == 0) continue;
    const int64_t before =
        st.retention == Duration{}
            ? 0
            : unix_ms(clock_) - std::chrono::duration_cast<std::chrono::milliseconds>(st.retention).count();
    // The logger outlives the store; this trigger may not (the callback runs on the writer).
    store_.trim_stream(st.name, before, st.max_records, [&logger = logger_, name = st.name](Expected<int64_t> n) {
      if (!n) {
        logger.host(LogLevel::warn, "stream retention failed", {{"stream", name}, {"error", n.error().message}});
      } else if (*n > 0) {
        logger.host(LogLevel::info, "stream retention dropped records", {{"stream", name}, {"records", *n}});
      }
    });
  }
}

void StreamTrigger::stop_taking_work() {
  if (!started_) return;
  {
    std::lock_guard lock(lease_mu_);
    started_ = false;
    timers_.cancel(lease_timer_);
  }
  draining_ = true;
  timers_.cancel(trim_timer_);
  appended_.reset();
  for (auto& p : partitions_) p->stop();
}

bool StreamTrigger::drain(Duration grace) {
  if (!draining_) return true;
  draining_ = false;
  const auto give_up = std::chrono::steady_clock::now() + grace;  // real time: the clock may be a test's
  auto busy = [&] {
    for (auto& p : partitions_)
      if (p->busy()) return true;
    return false;
  };
  while (busy() && std::chrono::steady_clock::now() < give_up) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  const bool done = !busy();
  worker_->close();
  // A host that stops gives its partitions back at once: the others need not wait for the
  // leases to expire.
  if (leases_) leases_->release_all();
  return done;
}

}  // namespace nimbus
