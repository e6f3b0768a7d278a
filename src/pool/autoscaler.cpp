#include "pool/autoscaler.h"

#include <algorithm>
#include <cmath>

namespace nimbus {

void Autoscaler::record(TimePoint now, double in_flight) {
  samples_.emplace_back(now, in_flight);
  while (!samples_.empty() && now - samples_.front().first >= config_.stable_window) samples_.pop_front();
}

double Autoscaler::average(TimePoint now, Duration window) const {
  double sum = 0;
  int n = 0;
  for (auto it = samples_.rbegin(); it != samples_.rend() && now - it->first < window; ++it) {
    sum += it->second;
    ++n;
  }
  return n == 0 ? 0.0 : sum / n;
}

double Autoscaler::peak(TimePoint now, Duration window) const {
  double top = 0;
  for (auto it = samples_.rbegin(); it != samples_.rend() && now - it->first < window; ++it) top = std::max(top, it->second);
  return top;
}

int Autoscaler::desired(TimePoint now, int current) {
  const double target = std::max(config_.target_per_instance, 1e-9);
  int stable = static_cast<int>(std::ceil(average(now, config_.stable_window) / target - 1e-9));
  int panic = static_cast<int>(std::ceil(average(now, config_.panic_window) / target - 1e-9));

  if (panic > 0 && panic >= config_.panic_threshold * std::max(current, 1) && panic > current) {
    if (!panicking_) panic_floor_ = current;
    panicking_ = true;
    panic_since_ = now;
  } else if (panicking_ && now - panic_since_ >= config_.stable_window) {
    panicking_ = false;
    panic_floor_ = 0;
  }

  int want;
  if (panicking_) {
    want = std::max({panic, stable, panic_floor_});  // up fast, never down while panicking
    panic_floor_ = want;
  } else {
    if (peak(now, config_.stable_window) == 0) {
      want = 0;  // a whole stable window with nothing in flight: scale to zero (or min)
    } else {
      // Scale down gradually (at most by max_scale_down_rate per decision), never below one
      // while there was work in the window.
      int floor_by_rate = static_cast<int>(std::ceil(current / config_.max_scale_down_rate));
      want = std::max({stable, floor_by_rate, 1});
    }
  }
  return std::clamp(want, config_.min_instances, config_.max_instances);
}

}  // namespace nimbus
