#pragma once
// What `nimbus new NAME --trigger KIND` writes for a trigger kind: the trigger's entry in the
// manifest, and a line for the generated handler saying what it receives. Each kind defines
// its own beside its code (triggers/<kind>/template.cpp); triggers/registry.cpp lists them.
#include <string>
#include <string_view>
#include <vector>

namespace nimbus {

struct TriggerTemplate {
  std::string_view kind;  // as the manifest names it: http, queue, topic, timer, ...
  // The entry under `triggers:` for function `name`, one line each, the first "- <kind>:".
  std::vector<std::string> (*manifest)(const std::string& name);
  // What the function receives, for a comment atop its handler.
  std::string (*receives)(const std::string& name);
};

const std::vector<TriggerTemplate>& trigger_templates();
const TriggerTemplate* find_trigger_template(std::string_view kind);

}  // namespace nimbus
