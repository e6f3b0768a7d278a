#include "triggers/template.h"

namespace nimbus {

extern const TriggerTemplate kHttpTemplate = {
    "http",
    [](const std::string& name) -> std::vector<std::string> { return {"- http:", "    route: /" + name}; },
    [](const std::string& name) { return "HTTP requests to /" + name + "; what it returns is the response."; },
};

}  // namespace nimbus
