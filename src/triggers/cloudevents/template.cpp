#include "triggers/template.h"

namespace nimbus {

extern const TriggerTemplate kCloudEventsTemplate = {
    "cloudevents",
    [](const std::string& name) -> std::vector<std::string> { return {"- cloudevents:", "    path: /events/" + name}; },
    [](const std::string& name) {
      return "CloudEvents 1.0 sent to /events/" + name +
             " (binary, structured or batch mode), one event per call: its data is the body and its "
             "attributes are the event's (id, source, type, subject; the rest in metadata as ce.<name>).";
    },
};

}  // namespace nimbus
