#include "triggers/template.h"

namespace nimbus {

extern const TriggerTemplate kQueueTemplate = {
    "queue",
    [](const std::string& name) -> std::vector<std::string> { return {"- queue:", "    name: " + name}; },
    [](const std::string& name) {
      return "each message sent to the queue " + name + " (its body is the message). A failure is retried with "
             "backoff, then the message goes to " + name + ".dead.";
    },
};

}  // namespace nimbus
