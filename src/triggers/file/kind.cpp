// The file kind: its keys and its Trigger.
#include <yaml-cpp/yaml.h>

#include "manifest/manifest_reader.h"
#include "triggers/file/file_spec.h"
#include "triggers/file/file_trigger.h"
#include "triggers/kind.h"

namespace nimbus {
namespace {

namespace fs = std::filesystem;

std::shared_ptr<const TriggerSettings> read(ManifestReader& r, const YAML::Node& n, const std::string& path,
                                            const FunctionSpec&) {
  std::size_t errors_before = r.diagnostics.size();
  if (!r.check_map(n, path, {"path", "pattern", "max_size"})) return nullptr;
  auto f = std::make_shared<FileTriggerSpec>();
  if (auto v = n["path"]; !v) {
    r.error(n, path + ".path", "is missing; expected the folder to watch, e.g. path: inbox (relative to the app folder)");
  } else if (auto dir = r.scalar(v, path + ".path", "a folder")) {
    std::error_code ec;
    fs::path resolved = (r.app_dir() / *dir).lexically_normal();
    if (dir->empty()) {
      r.error(v, path + ".path", "is empty; expected the folder to watch, e.g. path: inbox");
    } else if (fs::exists(resolved, ec) && !fs::is_directory(resolved, ec)) {
      r.error(v, path + ".path", "'" + resolved.string() + "' is a file; expected a folder to watch (created at start when missing)");
    } else {
      f->path = resolved;
    }
  }
  if (auto v = n["pattern"]) {
    if (auto glob = r.scalar(v, path + ".pattern", "a file-name glob such as *.csv")) {
      if (glob->empty() || glob->find('/') != std::string::npos) {
        r.error(v, path + ".pattern", "'" + *glob + "' is not a file-name glob; expected one such as *.csv (names only, no '/')");
      } else {
        f->pattern = *glob;
      }
    }
  }
  if (auto v = n["max_size"]) {
    if (auto s = r.size(v, path + ".max_size")) f->max_size = *s;
  }
  if (r.diagnostics.size() != errors_before) return nullptr;
  return f;
}

Expected<std::unique_ptr<Trigger>> make(const TriggerContext& context) {
  return std::unique_ptr<Trigger>(std::make_unique<FileTrigger>(context));
}

}  // namespace

extern const TriggerTemplate kFileTemplate;
extern const TriggerKindInfo kFileKind = {"file", read, &kFileTemplate, make, nullptr};

}  // namespace nimbus
