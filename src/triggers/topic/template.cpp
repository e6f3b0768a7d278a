#include "triggers/template.h"

namespace nimbus {

extern const TriggerTemplate kTopicTemplate = {
    "topic",
    [](const std::string& name) -> std::vector<std::string> { return {"- topic:", "    name: " + name + "-events"}; },
    [](const std::string& name) {
      return "each event published to the topic " + name + "-events, through its own subscription (named " + name +
             "); retried, then dead-lettered, like a queue message.";
    },
};

}  // namespace nimbus
