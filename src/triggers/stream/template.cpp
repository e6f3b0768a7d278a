#include "triggers/template.h"

namespace nimbus {

extern const TriggerTemplate kStreamTemplate = {
    "stream",
    [](const std::string& name) -> std::vector<std::string> {
      return {"- stream:", "    name: " + name + "-records", "    batch_size: 100"};
    },
    [](const std::string& name) {
      return "batches of records appended to the stream " + name + "-records, in order per partition (the body is "
             "a JSON array of records); the group's checkpoint moves past a batch when it succeeds.";
    },
};

}  // namespace nimbus
