#pragma once
// Reads and checks nimbus.yaml. Every problem is reported (not just the first), each as
// FILE:LINE:COL: key.path: what is wrong; what is expected. Unknown keys get a did-you-mean.
// ${VAR} and ${VAR:-default} in values read the environment given (never the process's own
// directly, so tests can pass one).
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/app_spec.h"
#include "core/expected.h"

namespace nimbus {

struct Diagnostic {
  std::string file;
  int line = 0;  // 1-based; 0 when the problem has no place in the file
  int column = 0;
  std::string path;     // functions.orders.triggers[0].http.route
  std::string message;  // what is wrong; what is expected
  std::string to_string() const;
};

using EnvLookup = std::function<std::optional<std::string>(std::string_view name)>;
EnvLookup process_environment();

struct ManifestLoad {
  std::optional<AppSpec> app;  // set when there were no diagnostics
  std::vector<Diagnostic> diagnostics;
  std::string report() const;  // one diagnostic per line
};

// `path` is the manifest file, or an app folder holding nimbus.yaml.
ManifestLoad load_manifest(const std::filesystem::path& path, const EnvLookup& env);
// Parses manifest text; `file` names it in diagnostics and `app_dir` anchors relative paths.
ManifestLoad parse_manifest(std::string_view text, const std::string& file,
                            const std::filesystem::path& app_dir, const EnvLookup& env);

// The manifest's text in a canonical form without the top-level `key` (YAML re-emitted, so
// comments and layout do not count): two manifests that differ only under `key` compare
// equal. An error when the text is not a YAML mapping.
Expected<std::string> manifest_without(std::string_view text, std::string_view key);

// What a deployed version may not change while the host runs (deploy/): the manifest in a
// canonical form with each function reduced to what its triggers use (triggers, outputs,
// retry, timeout). Two manifests whose code settings alone differ (runtime, handler, env,
// limits, instances, isolation) compare equal. topology_differences says, one line each,
// which top-level keys and functions differ between two manifests' texts.
Expected<std::string> manifest_topology(std::string_view text);
std::vector<std::string> topology_differences(std::string_view before, std::string_view after);

// The closest candidate to `word` within a small edit distance, or "".
std::string did_you_mean(std::string_view word, const std::vector<std::string_view>& candidates);

}  // namespace nimbus
