#pragma once
// The trigger seam: each kind (http, queue, timer, ...) turns a source into Invocations,
// hands them to the function's pool, and completes them with the Result. The host starts
// every trigger, and on shutdown stops them taking new work and waits for what they hold.
#include <string_view>

#include "core/expected.h"

namespace nimbus {

class Trigger {
 public:
  virtual ~Trigger() = default;
  virtual std::string_view kind() const = 0;
  virtual Status start() = 0;
  virtual void stop_taking_work() = 0;
  virtual int in_progress() const = 0;  // invocations taken and not yet completed
};

}  // namespace nimbus
