// The manifest reader's triggers: the list under each function, each entry read by its kind's
// own reader (triggers/<kind>/kind.cpp, found through triggers/kind.h); and routes that two
// functions would both serve on the public listener, whatever kinds declared them.
#include <algorithm>

#include "core/route_pattern.h"
#include "manifest/manifest_reader.h"
#include "triggers/kind.h"

namespace nimbus {

void ManifestReader::read_triggers(const YAML::Node& n, const std::string& path, FunctionSpec& fn) {
  std::vector<std::string_view> kinds;
  for (const auto* k : trigger_kinds()) kinds.push_back(k->name);
  if (!n.IsSequence()) {
    error(n, path, "is " + kind_of(n) + "; expected a list of triggers, e.g. - http: {route: /" + fn.name + "}");
    return;
  }
  for (std::size_t i = 0; i < n.size(); ++i) {
    std::string p = path + "[" + std::to_string(i) + "]";
    const YAML::Node t = n[i];
    if (!t.IsMap() || t.size() != 1) {
      error(t, p, "is not a single trigger; expected one key naming the trigger kind: " + list(kinds));
      continue;
    }
    auto it = t.begin();
    std::string name = it->first.Scalar();
    const TriggerKindInfo* kind = find_trigger_kind(name);
    if (!kind || !kind->read) {
      std::string guess = did_you_mean(name, kinds);
      error(it->first, p + "." + name,
            "unknown trigger kind '" + name + "'" +
                (guess.empty() ? "; expected one of: " + list(kinds) : "; did you mean '" + guess + "'?"));
      continue;
    }
    if (auto settings = kind->read(*this, it->second, p + "." + name, fn)) {
      fn.triggers.push_back({TriggerKind::named(kind->name), std::move(settings)});
    }
  }
}

void ManifestReader::check_route_conflicts(const AppSpec& app) {
  struct Seen {
    std::string shape, function;
    std::vector<std::string> methods;
  };
  std::vector<Seen> seen;
  for (const auto& fn : app.functions) {
    for (const auto& t : fn.triggers) {
      for (const auto& route : t.settings->public_routes()) {
        std::string shape = route_shape(route.route);
        for (const auto& s : seen) {
          if (s.shape != shape) continue;
          bool overlap = s.methods.empty() || route.methods.empty();
          for (const auto& m : route.methods)
            if (std::find(s.methods.begin(), s.methods.end(), m) != s.methods.end()) overlap = true;
          if (overlap) {
            Diagnostic d;
            d.file = file_;
            d.path = "functions." + fn.name + ".triggers";
            d.message = "route " + route.route + " is already served by function '" + s.function +
                        "' for the same methods; expected each method and path to have one function";
            diagnostics.push_back(std::move(d));
          }
        }
        seen.push_back({shape, fn.name, route.methods});
      }
    }
  }
}

}  // namespace nimbus
