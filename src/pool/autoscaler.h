#pragma once
// How many instances a function should have, from how much work is in flight: the model is
// Knative's KPA. Samples of in-flight invocations (running plus waiting) are averaged over a
// stable window (60 s) and a panic window (6 s). Normally the stable average decides; when the
// panic window asks for at least twice the current instances, the scaler panics: it follows the
// short window up and does not scale down until a whole stable window passes without another
// panic. Scale-down is rate-limited and zero needs a stable window with no work at all, so a
// load that wobbles around a boundary does not make instances flap. Pure and clock-free: the
// caller passes the time, so tests replay recorded traces.
#include <deque>
#include <utility>

#include "core/clock.h"

namespace nimbus {

struct AutoscalerConfig {
  double target_per_instance = 1.0;  // in-flight invocations one instance should carry
  int min_instances = 0;
  int max_instances = 4;
  Duration stable_window = std::chrono::seconds(60);
  Duration panic_window = std::chrono::seconds(6);
  double panic_threshold = 2.0;      // panic when the panic window wants >= 2x the current count
  double max_scale_down_rate = 2.0;  // at most halve the instances in one decision
};

class Autoscaler {
 public:
  explicit Autoscaler(AutoscalerConfig config) : config_(config) {}

  // One observation: `in_flight` invocations running or waiting at `now`.
  void record(TimePoint now, double in_flight);
  // The instance count to aim for, given `current` instances at `now`.
  int desired(TimePoint now, int current);
  bool panicking() const { return panicking_; }

 private:
  double average(TimePoint now, Duration window) const;
  double peak(TimePoint now, Duration window) const;

  AutoscalerConfig config_;
  std::deque<std::pair<TimePoint, double>> samples_;
  bool panicking_ = false;
  TimePoint panic_since_{};
  int panic_floor_ = 0;  // while panicking, never aim below this
};

}  // namespace nimbus
