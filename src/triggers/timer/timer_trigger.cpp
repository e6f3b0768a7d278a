#include "triggers/timer/timer_trigger.h"

#include <boost/json.hpp>
#include <date/date.h>

#include <mutex>

#include "core/prometheus_text.h"
#include "observe/log.h"
#include "pool/function_pools.h"
#include "store/store.h"
#include "triggers/finish.h"
#include "triggers/outputs.h"
#include "triggers/task_thread.h"
#include "triggers/timer/time_zone.h"

namespace nimbus {
namespace {

namespace json = boost::json;
const TriggerKind kTimer = TriggerKind::named("timer");
constexpr const char* kTimerStore = "_timers";

std::string rfc3339(int64_t s) {
  if (s <= 0) return "";
  return date::format("%Y-%m-%dT%H:%M:%SZ", date::sys_seconds(std::chrono::seconds(s)));
}

struct Record {
  int64_t last = 0, next = 0, running_until = 0;
  std::string etag;  // empty: no record yet
  int64_t running_for = 0;  // the due time whose run holds the schedule until running_until
};

int64_t field(const json::object& o, std::string_view key) {
  auto* v = o.if_contains(key);
  return v && v->is_int64() ? v->as_int64() : 0;
}

}  // namespace

class TimerTrigger::Timer : public std::enable_shared_from_this<TimerTrigger::Timer> {
 public:
  Timer(const FunctionSpec& fn, int index, const TimerTriggerSpec& spec, CronSchedule cron, TimeZone zone,
        FunctionPool& pool, Store& store, const Clock& clock, Timers timers, Logger& logger,
        std::shared_ptr<TaskThread> runs)
      : fn_(fn),
        spec_(spec),
        key_(fn.name + "#" + std::to_string(index)),
        cron_(std::move(cron)),
        zone_(std::move(zone)),
        pool_(pool),
        store_(store),
        clock_(clock),
        timers_(timers),
        logger_(logger),
        runs_(std::move(runs)) {}

  void start() {
    const int64_t now = unix_seconds(clock_);
    Record r = read();
    if (r.etag.empty()) {
      // First start: record the first due time, so a host down at that time finds it past due.
      write(r, Record{0, next_after(now), 0, {}});
      r = read();
    }
    if (r.next > 0 && r.next <= now && r.last < r.next) {
      run(r.next, /*past_due=*/true);  // it was due while no host ran it
    } else if (spec_.run_on_startup) {
      run(now, /*past_due=*/false);
    }
    arm(next_after(now));
  }

  void stop() {
    std::lock_guard lock(mu_);
    stopping_ = true;
    if (timer_id_ != 0) timers_.cancel(timer_id_);
    timer_id_ = 0;
  }

  TimerStatus status() {
    bool readable = true;
    Record r = read(&readable);
    std::lock_guard lock(mu_);
    return TimerStatus{fn_.name,           spec_.schedule,   zone_.name(),     r.last, r.next > 0 ? r.next : armed_for_,
                       std::atoi(key_.c_str() + key_.rfind('#') + 1), skipped_.load(), past_due_.load(), readable};
  }

 private:
  int64_t next_after(int64_t s) const { return zone_.next(cron_, SysSeconds(std::chrono::seconds(s))).time_since_epoch().count(); }

  Record read(bool* readable = nullptr) {
    Record r;
    auto got = store_.get(kTimerStore, key_);
    if (readable) *readable = got.ok();
    if (!got || !got->has_value()) return r;
    boost::system::error_code ec;
    auto v = json::parse((*got)->value, ec);
    if (!ec && v.is_object()) {
      r.last = field(v.as_object(), "last");
      r.next = field(v.as_object(), "next");
      r.running_until = field(v.as_object(), "running_until");
      r.running_for = field(v.as_object(), "running_for");
    }
    r.etag = (*got)->etag;
    return r;
  }

  // Writes the record only if it is still the one read (etag); false when another host won.
  bool write(const Record& seen, const Record& now) {
    Batch b;
    json::object o{{"last", now.last}, {"next", now.next}, {"running_until", now.running_until},
                   {"running_for", now.running_for}};
    b.puts.push_back({kTimerStore, key_, json::serialize(o), seen.etag, 0});
    auto r = store_.commit_sync(std::move(b));
    if (!r && r.error().code != store_error::conflict) {
      logger_.host(LogLevel::error, "cannot record a timer's status", {{"function", fn_.name}, {"error", r.error().message}});
    }
    return r.ok();
  }

  void arm(int64_t due_s) {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    if (due_s >= std::chrono::duration_cast<std::chrono::seconds>(SysSeconds::max().time_since_epoch()).count() / 2) {
      logger_.host(LogLevel::warn, "timer schedule never runs again", {{"function", fn_.name}, {"schedule", spec_.schedule}});
      return;
    }
    armed_for_ = due_s;
    if (timer_id_ != 0) timers_.cancel(timer_id_);
    auto delay = std::chrono::seconds(due_s) - std::chrono::duration_cast<std::chrono::nanoseconds>(clock_.wall().time_since_epoch());
    std::weak_ptr<Timer> weak = weak_from_this();
    const TimePoint at = clock_.now() + std::chrono::duration_cast<Duration>(delay);
    timer_id_ = timers_.at(at,
        [weak, due_s] {
          if (auto self = weak.lock()) self->on_due(due_s);
        });
  }

  // On the timer thread: arms the next due time and hands the run (store reads, the claim,
  // the dispatch) to the trigger's own thread, so that the timer thread never waits on the store.
  void on_due(int64_t due_s) {
    {
      std::lock_guard lock(mu_);
      timer_id_ = 0;
      if (stopping_) return;
    }
    // The next due time is armed before this one runs. Late by more than a second (a stalled
    // host, a clock jump), it runs once, marked past due; the due times it slept through are
    // not replayed one by one.
    const int64_t now = unix_seconds(clock_);
    arm(next_after(std::max(due_s, now)));
    runs_->post([self = shared_from_this(), due_s, past_due = now - due_s > 1] { self->run(due_s, past_due); });
  }

  // Claims due time `due_s` in the store and runs the function if the claim lands. The claim
  // is an asynchronous commit, so the claims of timers due at the same moment share one
  // transaction; the run itself starts from the trigger's thread, never the store's writer.
  void run(int64_t due_s, bool past_due, int attempt = 0) {
    const int64_t now = unix_seconds(clock_);
    Record seen = read();
    if (!seen.etag.empty() && seen.last >= due_s) return;  // this due time already ran (another host)
    Record claim{due_s, next_after(std::max(due_s, now)), seen.running_until, {}, seen.running_for};
    const bool busy = seen.running_until > now;
    if (!busy) {
      claim.running_until = now + std::chrono::duration_cast<std::chrono::seconds>(fn_.timeout).count() + 1;
      claim.running_for = due_s;
    }
    Batch b;
    json::object o{{"last", claim.last}, {"next", claim.next}, {"running_until", claim.running_until},
                   {"running_for", claim.running_for}};
    b.puts.push_back({kTimerStore, key_, json::serialize(o), seen.etag, 0});
    store_.commit(std::move(b), [self = shared_from_this(), due_s, past_due, attempt, busy, last = seen.last,
                                 next = claim.next](Expected<BatchResult> r) {
      if (!r && r.error().code != store_error::conflict) {
        self->logger_.host(LogLevel::error, "cannot record a timer's status",
                           {{"function", self->fn_.name}, {"error", r.error().message}});
        return;
      }
      if (!r && attempt >= 4) return;
      self->runs_->post([self, r = r.ok(), due_s, past_due, attempt, busy, last, next] {
        if (!r) return self->run(due_s, past_due, attempt + 1);  // raced another host: look again
        bool stopping;
        {
          std::lock_guard lock(self->mu_);
          stopping = self->stopping_;
        }
        if (stopping && !busy) {
          // Claimed as the host stops: give the due time back, so the next start runs it past due.
          Record seen = self->read();
          if (seen.last == due_s) self->write(seen, Record{last, due_s, 0, {}, 0});
          return;
        }
        if (busy) {
          self->skipped_.fetch_add(1);
          self->logger_.host(LogLevel::warn, "timer run skipped: the previous run is still going",
                             {{"function", self->fn_.name}, {"scheduled_time", rfc3339(due_s)}});
          return;
        }
        if (past_due) self->past_due_.fetch_add(1);
        self->dispatch(due_s, past_due, last, next);
      });
    });
  }

  void dispatch(int64_t due_s, bool past_due, int64_t last_s, int64_t next_s) {
    Invocation inv = new_invocation(fn_, kTimer, "/timers/" + fn_.name, "nimbus.timer.fired", clock_);
    inv.subject = spec_.schedule;
    json::object payload{{"schedule", spec_.schedule},
                         {"time_zone", zone_.name()},
                         {"scheduled_time", rfc3339(due_s)},
                         {"is_past_due", past_due},
                         {"last", rfc3339(last_s)},
                         {"next", rfc3339(next_s)}};
    inv.payload = json::serialize(payload);
    inv.metadata.push_back({"content-type", "application/json"});
    InvocationStamp stamp = InvocationStamp::of(inv);
    pool_.dispatch(std::move(inv), [self = shared_from_this(), stamp = std::move(stamp), due_s](Result&& result) mutable {
      // Outputs are committed before the run counts as done (and before its hold is released).
      finish_invocation(&self->store_, self->fn_, self->logger_, self->clock_, std::move(stamp), std::move(result),
                        [self, due_s](Result&, const InvocationView&) {
                          // This may be the store's writer thread (after an output commit), where a
                          // blocking commit would wait on itself: the hold is released from the
                          // trigger's thread.
                          std::weak_ptr<Timer> weak = self;
                          self->runs_->post([weak, due_s] {
                            if (auto t = weak.lock()) t->release(due_s);
                          });
                          return 0;
                        });
    });
  }

  // The run of `due_s` ended: let the next due time run (unless the hold is no longer ours).
  void release(int64_t due_s) {
    for (int attempt = 0; attempt < 5; ++attempt) {
      Record seen = read();
      if (seen.running_until == 0 || seen.running_for != due_s) return;
      Record done{seen.last, seen.next, 0, {}, 0};
      if (write(seen, done)) return;
    }
  }

  const FunctionSpec& fn_;
  TimerTriggerSpec spec_;
  std::string key_;
  CronSchedule cron_;
  TimeZone zone_;
  FunctionPool& pool_;
  Store& store_;
  const Clock& clock_;
  Timers timers_;
  Logger& logger_;
  std::shared_ptr<TaskThread> runs_;  // shared: a completion may post after the trigger is gone (dropped)
  std::mutex mu_;
  TimerQueue::Id timer_id_ = 0;
  int64_t armed_for_ = 0;
  std::atomic<uint64_t> skipped_{0}, past_due_{0};
  bool stopping_ = false;
};

TimerTrigger::TimerTrigger(const TriggerContext& c)
    : app_(c.app),
      pools_(c.pools),
      store_(c.store),
      clock_(c.clock),
      timers_(c.timers),
      logger_(c.logger),
      runs_(std::make_shared<TaskThread>()) {}

TimerTrigger::~TimerTrigger() {
  stop_taking_work();
  runs_->close();  // what was handed over runs (a due time claimed as the host stops goes back)
}

Status TimerTrigger::start() {
  for (const auto& fn : app_.functions) {
    FunctionPool* pool = pools_.find(fn.name);
    if (!pool) continue;
    int index = 0;
    for (const auto* t : fn.triggers_of<TimerTriggerSpec>()) {
      auto cron = parse_cron(t->schedule);
      if (!cron) return Error{"function '" + fn.name + "': " + cron.error().message};
      auto zone = TimeZone::find(t->time_zone);
      if (!zone) return Error{"function '" + fn.name + "': " + zone.error().message};
      list_.push_back(std::make_shared<Timer>(fn, index++, *t, std::move(*cron), std::move(*zone), *pool, store_, clock_,
                                              timers_, logger_, runs_));
    }
  }
  for (auto& t : list_) t->start();
  return ok_status();
}

void TimerTrigger::stop_taking_work() {
  for (auto& t : list_) t->stop();
}

std::vector<TimerStatus> TimerTrigger::status() const {
  std::vector<TimerStatus> out;
  for (const auto& t : list_) out.push_back(t->status());
  return out;
}

void TimerTrigger::metrics_text(std::string& out) {
  auto all = status();
  // A timer whose record the store would not give: no numbers, rather than wrong ones.
  std::erase_if(all, [](const TimerStatus& t) { return !t.readable; });
  auto family = [&](const char* name, const char* type, const char* help, auto value) {
    prometheus_family(out, name, type, help);
    for (const auto& t : all) {
      // A function may have several timers: each is a series of its own.
      out += std::string(name) + "{function=\"" + prometheus_label(t.function) + "\",timer=\"" + std::to_string(t.index) +
             "\",schedule=\"" + prometheus_label(t.schedule) + "\"} " + std::to_string(value(t)) + "\n";
    }
  };
  family("nimbus_timer_last_run_timestamp_seconds", "gauge", "When a timer's last run was due (unix seconds; 0: never).",
         [](const TimerStatus& t) { return t.last_s; });
  family("nimbus_timer_next_run_timestamp_seconds", "gauge", "When a timer's next run is due (unix seconds).",
         [](const TimerStatus& t) { return t.next_s; });
  family("nimbus_timer_skipped_runs_total", "counter", "Due times skipped because the previous run was still going.",
         [](const TimerStatus& t) { return t.skipped; });
  family("nimbus_timer_past_due_runs_total", "counter", "Runs started late: due while no host ran the timer.",
         [](const TimerStatus& t) { return t.past_due; });
}

std::vector<AdminView> TimerTrigger::admin_views() {
  return {{"/admin/timers", [this] {
             namespace json = boost::json;
             auto iso = [](int64_t s) -> json::value {
               if (s <= 0) return nullptr;
               return json::value(date::format("%Y-%m-%dT%H:%M:%SZ", date::sys_seconds(std::chrono::seconds(s))));
             };
             json::array list;
             for (const auto& t : status()) {
               list.push_back(json::object{{"function", t.function}, {"schedule", t.schedule}, {"time_zone", t.time_zone},
                                           {"last", iso(t.last_s)}, {"next", iso(t.next_s)}});
             }
             return json::serialize(json::object{{"timers", std::move(list)}});
           }}};
}

}  // namespace nimbus
