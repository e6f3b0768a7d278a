#include "triggers/http/function_keys.h"

#include <boost/json.hpp>

#include "core/ids.h"
#include "core/private_file.h"

namespace nimbus {
namespace json = boost::json;

Expected<FunctionKeys> FunctionKeys::load_or_create(const std::filesystem::path& file, const AppSpec& app) {
  FunctionKeys keys;
  bool dirty = false;
  std::error_code ec;
  if (std::filesystem::exists(file, ec)) {
    auto text = read_file(file);
    if (!text) return text.error();
    boost::system::error_code jec;
    json::value v = json::parse(*text, jec);
    if (jec || !v.is_object()) {
      return Error{file.string() + ": not valid JSON (" + jec.message() +
                   "); delete it to generate new function keys"};
    }
    const auto& o = v.as_object();
    if (auto* h = o.if_contains("host"); h && h->is_string()) keys.host_ = std::string(h->as_string());
    if (auto* f = o.if_contains("functions"); f && f->is_object()) {
      for (const auto& [name, key] : f->as_object()) {
        if (key.is_string()) keys.functions_[std::string(name)] = std::string(key.as_string());
      }
    }
  }
  if (keys.host_.empty()) {
    keys.host_ = new_secret();
    dirty = true;
  }
  for (const auto& fn : app.functions) {
    if (!keys.functions_.count(fn.name)) {
      keys.functions_[fn.name] = new_secret();
      dirty = true;
    }
  }
  if (dirty) {
    json::object fns;
    for (const auto& [name, key] : keys.functions_) fns[name] = key;
    json::object root{{"host", keys.host_}, {"functions", std::move(fns)}};
    if (auto st = write_private_file(file, json::serialize(root) + "\n"); !st) return st.error();
  }
  return keys;
}

bool FunctionKeys::accepts(const std::string& function, std::string_view presented) const {
  if (presented.empty()) return false;
  bool ok = secrets_equal(presented, host_);
  if (auto it = functions_.find(function); it != functions_.end()) ok = secrets_equal(presented, it->second) || ok;
  return ok;
}

const std::string* FunctionKeys::key_of(const std::string& function) const {
  auto it = functions_.find(function);
  return it == functions_.end() ? nullptr : &it->second;
}

}  // namespace nimbus
