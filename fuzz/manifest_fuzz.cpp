// libFuzzer target for the manifest reader (manifest/manifest.h: parse_manifest): any text is
// either an AppSpec or a list of diagnostics, each with a message, never a crash or a throw.
// A manifest that loads holds only what the reader promises to have checked: valid routes,
// blob patterns, topic filters and cron schedules, and positive limits. Parsing is pure: the
// same text gives the same report. The app folder is a temp dir the target made (file
// triggers look whether their folder exists); nothing is written and nothing is built.
#include <unistd.h>

#include <filesystem>
#include <map>

#include "triggers/blob/blob_spec.h"
#include "triggers/mqtt/mqtt_spec.h"
#include "triggers/timer/timer_spec.h"
#include "fuzz/fuzz_input.h"
#include "core/cron.h"
#include "core/mqtt_topic.h"
#include "core/route_pattern.h"
#include "manifest/manifest.h"

namespace nimbus::fuzz {
namespace {

const std::filesystem::path& app_dir() {
  static const std::filesystem::path dir = [] {
    std::string tmpl = (std::filesystem::temp_directory_path() / "nimbus-manifest-fuzz-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) std::abort();
    return std::filesystem::path(tmpl);
  }();
  return dir;
}

std::optional<std::string> env(std::string_view name) {
  static const std::map<std::string, std::string, std::less<>> vars = {
      {"PORT", "8080"}, {"EMPTY", ""}, {"ROUTE", "/orders/{id}"}, {"QUEUE", "orders"}, {"NESTED", "${PORT}"}};
  auto it = vars.find(name);
  if (it == vars.end()) return std::nullopt;
  return it->second;
}

std::string check_app(const AppSpec& app) {
  FUZZ_EXPECT(!app.name.empty(), "an app with no name");
  for (const auto& fn : app.functions) {
    FUZZ_EXPECT(!fn.name.empty(), "a function with no name");
    FUZZ_EXPECT(fn.concurrency > 0 && fn.wait_queue >= 0 && fn.timeout.count() > 0, "function " + fn.name + " limits");
    FUZZ_EXPECT(fn.retry.max_attempts >= 1, "function " + fn.name + " retry");
    for (const auto& t : fn.triggers) {
      FUZZ_EXPECT(t.settings != nullptr, "a loaded trigger with no settings");
      for (const auto& r : t.settings->public_routes()) {
        FUZZ_EXPECT(check_route(r.route).empty(), "a loaded route that does not parse: " + shown(r.route));
      }
      if (const auto* timer = t.as<TimerTriggerSpec>()) {
        FUZZ_EXPECT(static_cast<bool>(parse_cron(timer->schedule)), "a loaded schedule that does not parse");
      } else if (const auto* mqtt = t.as<MqttTriggerSpec>()) {
        FUZZ_EXPECT(check_topic_filter(mqtt->filter).empty(), "a loaded topic filter that is not valid");
      } else if (const auto* blob = t.as<BlobTriggerSpec>()) {
        FUZZ_EXPECT(check_blob_container(blob->container).empty(), "a loaded container that is not valid");
        FUZZ_EXPECT(parse_blob_pattern(blob->pattern, nullptr).has_value(), "a loaded blob pattern that does not parse");
      }
    }
  }
  for (const auto& s : app.streams) FUZZ_EXPECT(s.partitions >= 1, "stream " + s.name + " has no partitions");
  return "";
}

}  // namespace

std::string check_manifest_input(std::string_view text) {
  const ManifestLoad load = parse_manifest(text, "nimbus.yaml", app_dir(), env);
  FUZZ_EXPECT(load.app.has_value() == load.diagnostics.empty(), "an app and diagnostics, or neither");
  for (const auto& d : load.diagnostics) {
    FUZZ_EXPECT(!d.message.empty(), "a diagnostic with no message at " + d.path);
    FUZZ_EXPECT(d.line >= 0 && d.column >= 0, "a diagnostic at a negative place");
  }
  const ManifestLoad again = parse_manifest(text, "nimbus.yaml", app_dir(), env);
  FUZZ_EXPECT(again.report() == load.report(), "the same text gave another report");
  if (load.app) return check_app(*load.app);
  return "";
}

}  // namespace nimbus::fuzz

NIMBUS_FUZZ_TARGET(nimbus::fuzz::check_manifest_input, 8192)
