// The instance record's JSON (durable.h).
#include "durable/durable.h"

#include <algorithm>
#include <boost/json.hpp>
#include <cctype>
#include <fstream>
#include <iterator>

#include "core/blob_path.h"

namespace nimbus::durable {
namespace json = boost::json;

namespace {

constexpr const char* kStatusNames[] = {"Pending", "Running", "Completed", "Failed", "Terminated", "Suspended"};

std::string text(const json::object& o, const char* key, const char* otherwise = "") {
  const auto* v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->as_string()) : std::string(otherwise);
}
int64_t number(const json::object& o, const char* key, int64_t otherwise = 0) {
  const auto* v = o.if_contains(key);
  if (v && v->is_int64()) return v->as_int64();
  if (v && v->is_uint64()) return static_cast<int64_t>(v->as_uint64());
  return otherwise;
}
// A JSON value kept as its text (input, output, custom status).
std::string value_text(const json::object& o, const char* key) {
  const auto* v = o.if_contains(key);
  return v ? json::serialize(*v) : std::string("null");
}
json::value parsed(const std::string& text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  return ec ? json::value(text) : v;
}

}  // namespace

const char* to_string(RuntimeStatus s) { return kStatusNames[static_cast<int>(s)]; }

std::optional<RuntimeStatus> status_from(std::string_view text) {
  for (int i = 0; i < 6; ++i) {
    std::string_view name = kStatusNames[i];
    if (name.size() == text.size() &&
        std::equal(name.begin(), name.end(), text.begin(), [](char a, char b) { return std::tolower(a) == std::tolower(b); })) {
      return static_cast<RuntimeStatus>(i);
    }
  }
  return std::nullopt;
}

std::string encode(const Instance& i) {
  json::object o;
  o["id"] = i.id;
  o["name"] = i.name;
  o["status"] = to_string(i.status);
  o["input"] = parsed(i.input);
  o["output"] = parsed(i.output);
  if (!i.error.empty()) o["error"] = i.error;
  o["custom_status"] = parsed(i.custom_status);
  o["created_ms"] = i.created_ms;
  o["updated_ms"] = i.updated_ms;
  o["generation"] = i.generation;
  o["pages"] = i.pages;
  o["events"] = i.events;
  if (!i.parent_instance.empty()) {
    o["parent_instance"] = i.parent_instance;
    o["parent_queue"] = i.parent_queue;
    o["parent_task"] = i.parent_task;
  }
  if (!i.locks.empty()) o["locks"] = parsed(i.locks);
  if (!i.version.empty()) o["version"] = i.version;
  if (!i.app_version.empty()) o["app_version"] = i.app_version;
  return json::serialize(o);
}

std::optional<Instance> decode_instance(const std::string& text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) return std::nullopt;
  const json::object& o = v.as_object();
  Instance i;
  i.id = durable::text(o, "id");
  i.name = durable::text(o, "name");
  auto status = status_from(durable::text(o, "status"));
  if (i.id.empty() || !status) return std::nullopt;
  i.status = *status;
  i.input = value_text(o, "input");
  i.output = value_text(o, "output");
  i.error = durable::text(o, "error");
  i.custom_status = value_text(o, "custom_status");
  i.created_ms = number(o, "created_ms");
  i.updated_ms = number(o, "updated_ms");
  i.generation = static_cast<int>(number(o, "generation"));
  i.pages = static_cast<int>(number(o, "pages"));
  i.events = number(o, "events");
  i.parent_instance = durable::text(o, "parent_instance");
  i.parent_queue = durable::text(o, "parent_queue");
  i.parent_task = number(o, "parent_task", -1);
  if (o.if_contains("locks") && o.at("locks").is_object()) i.locks = json::serialize(o.at("locks"));
  i.version = durable::text(o, "version");
  i.app_version = durable::text(o, "app_version");
  return i;
}

std::string orchestrator_version(const AppSpec& app, const FunctionSpec& fn) {
  auto specs = fn.triggers_of<OrchestrationTriggerSpec>();
  if (!specs.empty() && !specs.front()->version.empty()) return specs.front()->version;
  std::string text = fn.handler;
  if (fn.runtime == RuntimeKind::python || fn.runtime == RuntimeKind::node) {
    const std::string file = fn.handler.substr(0, fn.handler.rfind(':'));
    std::ifstream in(app.dir / file, std::ios::binary);
    if (in) text.assign(std::istreambuf_iterator<char>(in), {});
  } else {
    for (const auto& arg : fn.command) text += "\n" + arg;
  }
  return sha256_hex(text).substr(0, 16);
}

std::map<std::string, std::string> orchestrator_versions(const AppSpec& app) {
  std::map<std::string, std::string> out;
  for (const auto& fn : app.functions) {
    if (!fn.triggers_of<OrchestrationTriggerSpec>().empty()) out[fn.name] = orchestrator_version(app, fn);
  }
  return out;
}

}  // namespace nimbus::durable
