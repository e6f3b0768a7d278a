#pragma once
// The manifest's reader, inside the manifest part (manifest.h is its interface): it walks the
// YAML tree into an AppSpec and records every problem as a Diagnostic with its place. The
// value readers (scalars with ${VAR}, durations, sizes, names) are in manifest_reader.cpp; the
// app, function and output keys in manifest.cpp; the list of triggers in manifest_triggers.cpp,
// each kind's own keys in its folder (triggers/<kind>/kind.cpp).
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/app_spec.h"
#include "core/blob_path.h"
#include "manifest/manifest.h"

namespace nimbus {

class ManifestReader {
 public:
  ManifestReader(std::string file, const EnvLookup& env, std::filesystem::path app_dir)
      : file_(std::move(file)), env_(env), app_dir_(std::move(app_dir)) {}

  std::vector<Diagnostic> diagnostics;

  // The whole manifest (its root mapping) into `app`.
  void read_app(const YAML::Node& root, AppSpec& app);

  // Records a problem at `at` (its line and column) under the key path `path`.
  void error(const YAML::Node& at, const std::string& path, std::string message);

 public:
  // The values a key can hold, for every key reader (the app's here, each trigger kind's in
  // its folder under triggers/). Each reports what is wrong and returns nullopt/false.
  // CONTAINER/PATTERN: a container, and a name pattern with captures (core/blob_path.h).
  struct BlobPathSpec {
    std::string container, text;
    BlobPattern pattern;
  };

  // Values (manifest_reader.cpp): each reports what is wrong and returns nullopt/false.
  // Checks that `node` is a map whose keys are all in `known`; reports unknown and repeated
  // keys. Returns false when `node` is not a map.
  bool check_map(const YAML::Node& node, const std::string& path,
                 const std::vector<std::string_view>& known);
  // A scalar with ${VAR} expanded; nullopt (after reporting) when it is not a scalar.
  std::optional<std::string> scalar(const YAML::Node& node, const std::string& path,
                                    std::string_view expected);
  std::optional<std::string> expand(const YAML::Node& at, const std::string& path,
                                    const std::string& text);
  std::optional<Duration> duration(const YAML::Node& node, const std::string& path);
  std::optional<std::size_t> size(const YAML::Node& node, const std::string& path);
  // A file the manifest names (relative to the app's folder): its absolute path, or an error
  // at `path` when it is not a file. `what` says what it should be ("a PEM file").
  std::optional<std::string> app_file(const YAML::Node& node, const std::string& path, const char* what);
  std::optional<long> integer(const YAML::Node& node, const std::string& path, long min, long max);
  std::optional<bool> boolean(const YAML::Node& node, const std::string& path);
  // A share between 0 and 1, written 0.01 or 1%; `problem` says what was expected otherwise.
  std::optional<double> share(const YAML::Node& node, const std::string& path, const char* problem);
  // Reads one of `choices`; reports a did-you-mean otherwise.
  std::optional<std::string> choice(const YAML::Node& node, const std::string& path,
                                    const std::vector<std::string_view>& choices);
  // Queue, topic and state names: lower-case letters, digits, '.', '-', '_'.
  bool check_name(const YAML::Node& at, const std::string& path, const std::string& name, const char* what);
  // A value or a list of values, each with its path (`path[i]` inside a list).
  std::vector<std::pair<YAML::Node, std::string>> one_or_list(const YAML::Node& v, const std::string& path);
  // methods: GET or [GET, POST]: upper case, each once; reports what is not an HTTP method.
  std::vector<std::string> http_methods(const YAML::Node& v, const std::string& path);
  std::optional<BlobPathSpec> blob_path(const YAML::Node& v, const std::string& path, const char* example);
  static std::string kind_of(const YAML::Node& n);
  static std::string join(const std::string& path, const std::string& key);
  static bool is_name(const std::string& s);
  // A list for messages: "a, b, c".
  template <class Range>
  static std::string list(const Range& items) {
    std::string out;
    for (std::string_view s : items) {
      if (!out.empty()) out += ", ";
      out += s;
    }
    return out;
  }
  // Where relative paths in the manifest (file triggers) start.
  const std::filesystem::path& app_dir() const { return app_dir_; }
  const std::string& file() const { return file_; }

 private:

  // The app, its functions and their outputs (manifest.cpp).
  // mqtt: {url, client_id, username, password, keepalive}: the one broker of the app.
  void read_mqtt_broker(const YAML::Node& n, AppSpec& app);
  // mqtt triggers and outputs need the app's broker.
  void check_mqtt_broker(const YAML::Node& root, const AppSpec& app);
  void read_streams(const YAML::Node& n, AppSpec& app);
  // Streams that functions read or write without declaring them get the defaults; stream
  // outputs learn their stream's partition count (a record's key picks the partition).
  void resolve_streams(AppSpec& app);
  void read_http(const YAML::Node& n, HttpSettings& http);
  // gateway: {upstreams, routes} (manifest_gateway.cpp); after the functions, which routes name.
  void read_gateway(const YAML::Node& n, AppSpec& app);
  void read_upstream(const YAML::Node& n, const std::string& path, UpstreamSpec& u);
  std::optional<UpstreamTarget> upstream_url(const YAML::Node& v, const std::string& path);
  void read_header_edits(const YAML::Node& n, const std::string& path, HeaderEdits& edits);
  std::optional<CorsSpec> read_cors(const YAML::Node& n, const std::string& path);
  std::optional<RateLimitSpec> read_rate_limit(const YAML::Node& n, const std::string& path);
  std::optional<JwtSpec> read_jwt(const YAML::Node& n, const std::string& path);
  void read_gateway_route(const YAML::Node& n, const std::string& path, const AppSpec& app, GatewaySpec& gw,
                          GatewayRouteSpec& r);
  bool read_function(const YAML::Node& n, const std::string& path, FunctionSpec& fn);
  void read_env(const YAML::Node& n, const std::string& path, FunctionSpec& fn);
  // max_processes and writable: isolation: sandbox only (outside one they would promise nothing).
  void read_sandbox_keys(const YAML::Node& n, const std::string& path, FunctionSpec& fn);
  void read_outputs(const YAML::Node& n, const std::string& path, FunctionSpec& fn);
  void read_retry(const YAML::Node& n, const std::string& path, RetryPolicy& r);

  // Triggers: the list, each read by its kind's reader (triggers/<kind>/kind.cpp); then
  // the checks across functions every kind's settings take part in.
  void read_triggers(const YAML::Node& n, const std::string& path, FunctionSpec& fn);
  void check_route_conflicts(const AppSpec& app);

  std::string file_;
  const EnvLookup& env_;
  std::filesystem::path app_dir_;  // relative paths in the manifest (file triggers) start here
};

}  // namespace nimbus
