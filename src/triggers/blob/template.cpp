#include "triggers/template.h"

namespace nimbus {

extern const TriggerTemplate kBlobTemplate = {
    "blob",
    [](const std::string& name) -> std::vector<std::string> {
      return {"- blob:", "    path: \"" + name + "/{name}\"", "    events: [created, updated]"};
    },
    [](const std::string& name) {
      return "each blob created or updated in the container " + name +
             " (the body is its bytes; its name and version are in the metadata).";
    },
};

}  // namespace nimbus
