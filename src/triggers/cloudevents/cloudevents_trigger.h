#pragma once
// The cloudevents trigger: a route on the public listener per trigger (PublicRoutes) that
// takes CloudEvents 1.0 in binary, structured or batch mode (cloudevent.h). Each event is one
// invocation with the event's attributes (id, source, type, subject, time; the rest in
// metadata as ce.<name>); a bad event is answered 400 with the reason, and nothing of its
// request runs. One event is answered with the function's reply; a batch with 200 and each
// event's status once all are done, or with the first failure's status when one failed (the
// sender sends the batch again). OPTIONS answers the CloudEvents webhook validation handshake
// (WebHook-Request-Origin), as Event Grid sends it.
#include <memory>

#include "triggers/trigger.h"

namespace nimbus {

class CloudEventsTrigger final : public Trigger {
 public:
  explicit CloudEventsTrigger(const TriggerContext& context);
  std::string_view kind() const override { return "cloudevents"; }
  // Its routes were added to the public listener when it was built; the http trigger serves them.
  Status start() override { return ok_status(); }
  void stop_taking_work() override {}
  // The http trigger drains its requests (these are among them).
  bool drain(Duration) override { return true; }

  struct Shared;

 private:
  std::shared_ptr<Shared> shared_;
};

}  // namespace nimbus
