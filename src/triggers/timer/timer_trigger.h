#pragma once
// Timer triggers: cron schedules in a time zone, on the injected clock. Each schedule's status
// (last and next due time, and until when a run holds it) lives in the store (state store
// `_timers`), and every due time is claimed with an ETag-checked write before it runs, so:
// - several hosts on one store run each due time once (the one whose claim lands);
// - runs of one timer never overlap (a due time that finds a run still holding the schedule
//   is skipped, and logged);
// - a host that was down when a run was due runs it once on start, with is_past_due: true;
// - run_on_startup runs it once when the host starts.
// A function receives a JSON payload: schedule, time_zone, scheduled_time, is_past_due, last,
// next (RFC 3339, UTC).
#include <memory>
#include <string>
#include <vector>

#include "core/app_spec.h"
#include "core/clock.h"
#include "core/expected.h"
#include "triggers/timer/timer_spec.h"
#include "triggers/trigger.h"

namespace nimbus {

class FunctionPools;
class Logger;
class Store;
class TaskThread;

struct TimerStatus {
  std::string function;
  std::string schedule;
  std::string time_zone;
  int64_t last_s = 0;  // Unix seconds; 0 = never
  int64_t next_s = 0;
  int index = 0;          // which of the function's timers (in the manifest's order, from 0)
  uint64_t skipped = 0;   // due times this host skipped: the previous run was still going
  uint64_t past_due = 0;  // runs this host started late (due while no host ran the timer)
  bool readable = true;   // false: the store did not answer; last and next are not known
};

class TimerTrigger final : public Trigger {
 public:
  explicit TimerTrigger(const TriggerContext& context);
  ~TimerTrigger() override;
  TimerTrigger(const TimerTrigger&) = delete;
  TimerTrigger& operator=(const TimerTrigger&) = delete;

  // Checks every schedule's time zone, runs what is past due or asked to run on startup, and
  // arms the next due times. Errors name the function and the zone.
  std::string_view kind() const override { return "timer"; }
  Status start() override;
  // No new runs; a due time missed while stopped runs past due at the next start.
  void stop_taking_work() override;
  bool drain(Duration) override { return true; }  // a run in flight is the pool's (the host waits for it)
  std::vector<TimerStatus> status() const;
  // GET /admin/timers: each schedule with its last and next run.
  std::vector<AdminView> admin_views() override;
  void metrics_text(std::string& out) override;

  class Timer;

 private:
  const AppSpec& app_;
  FunctionPools& pools_;
  Store& store_;
  const Clock& clock_;
  Timers timers_;
  Logger& logger_;
  // Where due times run (store reads, claims, dispatch): never the timer thread.
  std::shared_ptr<TaskThread> runs_;
  std::vector<std::shared_ptr<Timer>> list_;
};

}  // namespace nimbus
