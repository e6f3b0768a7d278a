#include "cli/deploy_commands.h"

#include <CLI/CLI.hpp>
#include <boost/json.hpp>
#include <boost/url/encode.hpp>
#include <boost/url/rfc/unreserved_chars.hpp>
#include <iostream>

#include "cli/admin_client.h"
#include "deploy/package.h"
#include "manifest/manifest.h"

namespace nimbus {

namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

// A query parameter's value, %-encoded (Boost.URL).
std::string percent_encode(const std::string& s) { return boost::urls::encode(s, boost::urls::unreserved_chars); }

// "v3 90%, v4 10%"
std::string targets_text(const json::value& targets) {
  std::string out;
  if (!targets.is_array()) return out;
  for (const auto& t : targets.as_array()) {
    if (!t.is_object()) continue;
    const auto& o = t.as_object();
    if (!out.empty()) out += ", ";
    out += std::string(o.at("version").as_string()) + " " + std::to_string(o.at("weight").to_number<int64_t>()) + "%";
  }
  return out;
}

std::string alias_line(const json::object& a) {
  std::string line = std::string(a.at("alias").as_string()) + " = " + targets_text(a.at("targets"));
  if (const auto* s = a.if_contains("sticky"); s && s->is_string()) line += " (sticky by " + std::string(s->as_string()) + ")";
  return line;
}

int deploy_folder(const std::string& dir, const std::string& to, const std::string& alias, int weight, const std::string& message) {
  // The manifest is checked here first: its problems are the deployer's to see, with lines.
  auto load = load_manifest(dir, process_environment());
  if (!load.app) return fail("the app in " + dir + " has problems; nothing is deployed:\n" + load.report());
  auto package = deploy::pack_app(dir);
  if (!package) return fail("cannot package " + dir + ": " + package.error().message);
  std::string target = "/admin/versions?alias=" + percent_encode(alias) + "&weight=" + std::to_string(weight);
  if (!message.empty()) target += "&message=" + percent_encode(message);
  auto r = admin_call(to.empty() ? dir : to, "POST", target, *package, {{"content-type", "application/x-tar"}});
  if (!r) return fail("deploy refused: " + r.error().message);
  std::cout << "deployed " << json::value_to<std::string>(r->at("version")) << " ("
            << json::value_to<std::string>(r->at("digest")).substr(0, 12) << ", " << package->size() << " bytes): "
            << json::value_to<std::string>(r->at("alias")) << " = " << targets_text(r->at("targets")) << "\n";
  return 0;
}

int versions(const std::string& dir, bool as_json) {
  auto r = admin_call(dir, "GET", "/admin/versions");
  if (!r) return fail(r.error().message);
  if (as_json) {
    std::cout << json::serialize(*r) << "\n";
    return 0;
  }
  const auto& vs = r->at("versions").as_array();
  if (vs.empty()) {
    std::cout << "nothing is deployed yet: the host runs its folder (nimbus deploy makes the first version)\n";
    return 0;
  }
  std::printf("%-8s %-12s %10s  %-24s %s\n", "VERSION", "DIGEST", "BYTES", "ALIASES", "MESSAGE");
  for (const auto& v : vs) {
    const auto& o = v.as_object();
    std::string aliases;
    for (const auto& a : o.at("aliases").as_array()) {
      if (!aliases.empty()) aliases += ",";
      aliases += std::string(a.at("alias").as_string()) + ":" + std::to_string(a.at("weight").to_number<int64_t>()) + "%";
    }
    std::printf("%-8s %-12s %10lld  %-24s %s\n", std::string(o.at("version").as_string()).c_str(),
                std::string(o.at("digest").as_string()).substr(0, 12).c_str(),
                static_cast<long long>(o.at("size").to_number<int64_t>()), aliases.empty() ? "-" : aliases.c_str(),
                std::string(o.at("message").as_string()).c_str());
  }
  for (const auto& a : r->at("aliases").as_array()) std::cout << alias_line(a.as_object()) << "\n";
  return 0;
}

int traffic_set(const std::string& dir, const std::string& alias, const std::vector<std::string>& weights,
                const std::string& sticky) {
  std::string joined;
  for (const auto& w : weights) joined += (joined.empty() ? "" : " ") + w;
  json::object body{{"targets", joined}};
  if (!sticky.empty()) body["sticky"] = sticky == "none" ? "" : sticky;
  auto r = admin_call(dir, "PUT", "/admin/aliases/" + alias, json::serialize(body), {{"content-type", "application/json"}});
  if (!r) return fail(r.error().message);
  std::cout << alias_line(*r) << "\n";
  return 0;
}

int rollback(const std::string& dir, const std::string& alias) {
  auto r = admin_call(dir, "POST", "/admin/aliases/" + alias + "/rollback");
  if (!r) return fail(r.error().message);
  std::cout << "rolled back: " << alias_line(*r) << "\n";
  return 0;
}

int swap(const std::string& dir, const std::string& a, const std::string& b) {
  auto r = admin_call(dir, "POST", "/admin/aliases/" + a + "/swap/" + b);
  if (!r) return fail(r.error().message);
  for (const auto& x : r->at("aliases").as_array()) std::cout << alias_line(x.as_object()) << "\n";
  return 0;
}

}  // namespace

DeployCommands::DeployCommands(CLI::App& cli) {
  deploy_ = cli.add_subcommand("deploy", "Package the app folder as a new version and send it to the running host; "
                                         "traffic moves to it once it is warm");
  deploy_->add_option("dir", dir_, "App folder to package")->capture_default_str();
  deploy_->add_option("--to", to_, "App folder of the running host that takes it (default: the one packaged)");
  deploy_->add_option("--alias", alias_, "Alias that moves to the version")->capture_default_str();
  deploy_->add_option("--weight", weight_, "Share of the alias's traffic, 1 to 100 (less: a canary beside what it names)")
      ->capture_default_str();
  deploy_->add_option("-m,--message", message_, "What the version is, for `nimbus versions`");

  versions_ = cli.add_subcommand("versions", "Every version the store keeps, and what each alias names");
  versions_->add_option("--dir", host_dir_, "App folder")->capture_default_str();
  versions_->add_flag("--json", json_, "Print the admin API's JSON");

  auto* traffic = cli.add_subcommand("traffic", "Point an alias at versions, with weights");
  traffic->require_subcommand(1);
  traffic->add_option("--dir", host_dir_, "App folder")->capture_default_str();
  traffic_set_ = traffic->add_subcommand("set", "e.g. nimbus traffic set live v3=90 v4=10");
  traffic_set_->add_option("alias", alias_, "Alias (live, staging, your own)")->required();
  traffic_set_->add_option("weights", weights_, "VERSION=WEIGHT ... summing to 100 (a bare VERSION is 100)")->required();
  traffic_set_->add_option("--sticky", sticky_, "header:NAME or cookie:NAME keeps a user on one version (none: off)");

  rollback_ = cli.add_subcommand("rollback", "Point an alias back at what it named before its last change");
  rollback_->add_option("alias", alias_, "Alias")->capture_default_str();
  rollback_->add_option("--dir", host_dir_, "App folder")->capture_default_str();

  swap_ = cli.add_subcommand("swap", "Exchange two aliases' versions at once (blue/green: nimbus swap staging live)");
  swap_->add_option("alias", alias_, "An alias")->required();
  swap_->add_option("other", other_alias_, "The other alias")->required();
  swap_->add_option("--dir", host_dir_, "App folder")->capture_default_str();
}

std::optional<int> DeployCommands::run() const {
  if (deploy_->parsed()) return deploy_folder(dir_, to_, alias_, weight_, message_);
  if (versions_->parsed()) return versions(host_dir_, json_);
  if (traffic_set_->parsed()) return traffic_set(host_dir_, alias_, weights_, sticky_);
  if (rollback_->parsed()) return rollback(host_dir_, alias_);
  if (swap_->parsed()) return swap(host_dir_, alias_, other_alias_);
  return std::nullopt;
}

}  // namespace nimbus
