#include "triggers/template.h"

namespace nimbus {

extern const TriggerTemplate kFileTemplate = {
    "file",
    [](const std::string& name) -> std::vector<std::string> {
      return {"- file:", "    path: inbox/" + name + "   # relative to the app folder", "    pattern: \"*\""};
    },
    [](const std::string& name) {
      return "each file dropped into inbox/" + name + " (the body is its bytes); it then moves to processed/, or to "
             "failed/ after the last retry.";
    },
};

}  // namespace nimbus
