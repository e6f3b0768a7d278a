#include "cli/scaffold.h"

#include <fstream>
#include <regex>
#include <sstream>

#include "core/private_file.h"
#include "manifest/manifest.h"
#include "triggers/template.h"

namespace nimbus {
namespace fs = std::filesystem;

namespace {

Status write_new(const fs::path& file, const std::string& content) {
  std::error_code ec;
  if (fs::exists(file, ec)) return Error{file.string() + " already exists; not overwriting it"};
  fs::create_directories(file.parent_path(), ec);
  std::ofstream out(file, std::ios::binary);
  out << content;
  if (!out) return Error{"cannot write " + file.string()};
  return ok_status();
}

std::string cpp_identifier(const std::string& name) {
  std::string id = name;
  for (auto& c : id)
    if (c == '-') c = '_';
  return id;
}

std::string function_cmake(const std::string& name) {
  return "cmake_minimum_required(VERSION 3.16)\n"
         "project(" + cpp_identifier(name) + " CXX)\n"
         "find_package(nimbus REQUIRED)  # the host passes nimbus_DIR when it builds the app\n"
         "nimbus_add_function(" + name + " " + name + ".cpp)\n";
}

std::string function_source(const std::string& name, const std::string& body) {
  std::string id = cpp_identifier(name);
  return "#include <nimbus/function.h>\n\n"
         "nimbus::Response " + id + "(const nimbus::Request& req, nimbus::Context& ctx) {\n" + body +
         "}\n\nNIMBUS_FUNCTION(" + id + ")\n";
}

bool valid_name(const std::string& s) {
  return std::regex_match(s, std::regex("[a-z][a-z0-9_-]{0,62}"));
}

}  // namespace

Status init_app(const fs::path& dir, const std::string& name) {
  if (!valid_name(name)) {
    return Error{"app name '" + name + "' is not valid; use lowercase letters, digits, '-' or '_', starting with a letter"};
  }
  std::error_code ec;
  if (fs::exists(dir / "nimbus.yaml", ec)) {
    return Error{(dir / "nimbus.yaml").string() + " already exists; this folder is already a Nimbus app"};
  }
  std::string manifest =
      "# A Nimbus app: functions and the events that trigger them.\n"
      "name: " + name + "\n"
      "functions:\n"
      "  hello:\n"
      "    runtime: native\n"
      "    handler: functions/hello   # a CMake folder; `nimbus start` builds it when it changes\n"
      "    blocking: false            # quick, non-blocking code runs on the event loop\n"
      "    timeout: 10s\n"
      "    triggers:\n"
      "      - http:\n"
      "          route: /hello\n"
      "          methods: [GET]\n";
  for (auto st : {write_new(dir / "nimbus.yaml", manifest),
                  write_new(dir / "functions/hello/CMakeLists.txt", function_cmake("hello")),
                  write_new(dir / "functions/hello/hello.cpp",
                            function_source("hello",
                                            "  auto name = req.query_param(\"name\").value_or(\"World\");\n"
                                            "  return nimbus::Response::text(200, \"Hello, \" + name + \"!\");\n")),
                  write_new(dir / ".gitignore", ".nimbus/\n")}) {
    if (!st) return st;
  }
  return ok_status();
}

Expected<std::string> insert_function_block(const std::string& manifest, const std::string& name,
                                            const std::string& body_lines) {
  std::vector<std::string> lines;
  std::istringstream in(manifest);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  static const std::regex kFunctions(R"(^functions:\s*(\{\s*\})?\s*(#.*)?$)");
  std::size_t at = lines.size();
  std::smatch functions_line;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if (std::regex_match(lines[i], functions_line, kFunctions)) {
      at = i;
      break;
    }
  }
  std::string indent = "  ";
  std::size_t insert_at;
  if (at == lines.size()) {
    lines.push_back("functions:");
    insert_at = lines.size();
  } else {
    // "functions: {}  # note" becomes "functions:  # note": the mapping gets entries, the note stays.
    std::string comment = functions_line[2].matched ? "  " + functions_line[2].str() : "";
    lines[at] = "functions:" + comment;
    std::size_t end = at + 1;
    std::size_t last_entry_line = at;  // new entries go right after the block's last line
    bool indent_found = false;
    for (; end < lines.size(); ++end) {
      const std::string& l = lines[end];
      auto first = l.find_first_not_of(' ');
      if (first == std::string::npos) continue;
      if (first == 0) {
        if (l[0] == '#') continue;  // a top-level comment belongs to what follows it
        break;                      // the next top-level key
      }
      last_entry_line = end;
      if (l[first] == '#') continue;
      if (!indent_found) {
        indent = l.substr(0, first);
        indent_found = true;
      }
      if (l.compare(first, name.size() + 1, name + ":") == 0 && first == indent.size()) {
        return Error{"function '" + name + "' already exists in the manifest"};
      }
    }
    insert_at = last_entry_line + 1;
  }
  std::vector<std::string> block = {indent + name + ":"};
  std::istringstream body(body_lines);
  for (std::string l; std::getline(body, l);) block.push_back(indent + indent + l);
  lines.insert(lines.begin() + static_cast<std::ptrdiff_t>(insert_at), block.begin(), block.end());
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

Status add_function(const fs::path& app_dir, const NewFunction& spec) {
  if (!valid_name(spec.name)) {
    return Error{"function name '" + spec.name + "' is not valid; use lowercase letters, digits, '-' or '_', starting with a letter"};
  }
  if (spec.runtime != "native" && spec.runtime != "python" && spec.runtime != "node") {
    return Error{"runtime '" + spec.runtime + "' is not available in this build of Nimbus yet; use --runtime native, python or node"};
  }
  const bool python = spec.runtime == "python";
  const bool node = spec.runtime == "node";
  const TriggerTemplate* trigger = find_trigger_template(spec.trigger);
  if (!trigger) {
    std::string kinds;
    for (const auto& t : trigger_templates()) kinds += (kinds.empty() ? "" : ", ") + std::string(t.kind);
    return Error{"there is no trigger kind '" + spec.trigger + "'; use --trigger with one of: " + kinds};
  }
  const bool http = spec.trigger == "http";
  const fs::path manifest = app_dir / "nimbus.yaml";
  auto text = read_file(manifest);
  if (!text) return Error{text.error().message + " (run `nimbus new` inside an app folder, or `nimbus init` first)"};
  std::string body = python ? "runtime: python\n"
                              "handler: functions/" + spec.name + "/main.py:handler\n"
                     : node ? "runtime: node\n"
                              "handler: functions/" + spec.name + "/index.js:handler\n"
                            : "runtime: native\n"
                              "handler: functions/" + spec.name + "\n";
  body += "triggers:\n";
  for (const auto& line : trigger->manifest(spec.name)) body += "  " + line + "\n";
  auto updated = insert_function_block(*text, spec.name, body);
  if (!updated) return updated.error();
  auto check = parse_manifest(*updated, manifest.string(), app_dir,
                              [](std::string_view) { return std::optional<std::string>("x"); });
  if (!check.app) return Error{"the manifest would not be valid after adding '" + spec.name + "':\n" + check.report()};
  const fs::path folder = app_dir / "functions" / spec.name;
  std::vector<std::pair<fs::path, std::string>> files;
  const std::string receives = "Called for " + trigger->receives(spec.name);
  if (node) {
    files.emplace_back(folder / "index.js",
                       "// " + receives + "\n"
                       "exports.handler = async (req, ctx) => {\n" +
                           (http ? "  ctx.log.info('" + spec.name + " called');\n"
                                   "  return { function: '" + spec.name + "' };\n"
                                 : "  ctx.log.info(`" + spec.name + ": ${req.trigger} event, ${req.body.length} bytes`);\n") +
                           "};\n");
  } else if (python) {
    files.emplace_back(folder / "main.py",
                       "# " + receives + "\n"
                       "def handler(req, ctx):\n" +
                           (http ? "    ctx.log.info(\"" + spec.name + " called\")\n"
                                   "    return {\"function\": \"" + spec.name + "\"}\n"
                                 : "    ctx.log.info(\"" + spec.name + ": %s event, %d bytes\" % (req.trigger, len(req.body)))\n"));
  } else {
    files.emplace_back(folder / "CMakeLists.txt", function_cmake(spec.name));
    files.emplace_back(folder / (spec.name + ".cpp"),
                       "// " + receives + "\n" +
                           function_source(spec.name, http ? "  ctx.log.info(\"" + spec.name + " called\");\n"
                                                             "  return nimbus::Response::json(200, R\"({\"function\":\"" +
                                                                 spec.name + "\"})\");\n"
                                                           : "  ctx.log.info(\"" + spec.name + ": \" + std::string(req.trigger()) + "
                                                             "\" event, \" + std::to_string(req.body().size()) + \" bytes\");\n"
                                                             "  return nimbus::Response::text(200, \"\");\n"));
  }
  for (const auto& [file, content] : files) {
    if (auto st = write_new(file, content); !st) return st;
  }
  std::ofstream out(manifest, std::ios::binary | std::ios::trunc);
  out << *updated;
  if (!out) return Error{"cannot write " + manifest.string()};
  return ok_status();
}

}  // namespace nimbus
