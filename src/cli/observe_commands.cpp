#include "cli/observe_commands.h"

#include <CLI/CLI.hpp>
#include <boost/json.hpp>
#include <boost/url/encode.hpp>
#include <boost/url/rfc/unreserved_chars.hpp>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <thread>

#include "cli/admin_client.h"
#include "core/text.h"

namespace nimbus {

namespace json = boost::json;

namespace {

std::string percent_encode(const std::string& s) { return boost::urls::encode(s, boost::urls::unreserved_chars); }

std::string text(const json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  if (!v) return {};
  if (v->is_string()) return std::string(v->as_string());
  if (v->is_double()) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3f", v->as_double());
    return buf;
  }
  return json::serialize(*v);
}

std::string one_line(std::string s, std::size_t max) {
  for (auto& c : s) {
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  }
  if (s.size() > max) s = s.substr(0, max) + "...";
  return s;
}

int invocations(const std::string& dir, const std::string& function, bool failed, const std::string& trace,
                const std::string& id, int limit, bool as_json) {
  std::string target = "/admin/invocations?limit=" + std::to_string(limit);
  if (!function.empty()) target += "&function=" + percent_encode(function);
  if (failed) target += "&failed=1";
  if (!trace.empty()) target += "&trace=" + percent_encode(ascii_lower(trace));
  if (!id.empty()) target += "&id=" + percent_encode(id);
  auto r = admin_call(dir, "GET", target);
  if (!r) return fail(r.error().message);
  const auto* found = r->if_contains("invocations");
  if (!found || !found->is_array()) return fail("the host's answer has no list of invocations: " + json::serialize(*r));
  const auto& list = found->as_array();
  if (as_json) {
    std::cout << json::serialize(*r) << "\n";
    return 0;
  }
  if (list.empty()) {
    std::cout << "no invocations recorded" << (function.empty() ? "" : " for " + function)
              << (failed ? " that failed" : "") << (trace.empty() ? "" : " in trace " + trace) << "\n";
    return 0;
  }
  if (!id.empty()) {
    // One invocation, in full, with its log lines.
    const auto& o = list.front().as_object();
    for (const char* key : {"invocation_id", "function", "trigger", "outcome", "status", "attempt", "duration_ms", "time",
                            "version", "trace_id", "error_type", "error"}) {
      if (o.if_contains(key)) std::printf("%-14s %s\n", key, text(o, key).c_str());
    }
    const auto* logs = o.if_contains("logs");
    if (logs && logs->is_array() && !logs->as_array().empty()) {
      std::printf("logs:\n");
      for (const auto& l : logs->as_array()) {
        const auto& line = l.as_object();
        std::printf("  %s %-5s %s\n", text(line, "time").c_str(), text(line, "level").c_str(), text(line, "msg").c_str());
      }
    }
    return 0;
  }
  std::printf("%-27s %-16s %-7s %-11s %6s %3s %11s %-7s %-32s %s\n", "TIME", "FUNCTION", "TRIGGER", "OUTCOME", "STATUS",
              "TRY", "DURATION_MS", "VERSION", "TRACE", "INVOCATION");
  for (const auto& v : list) {
    const auto& o = v.as_object();
    std::string status = text(o, "status");
    std::string version = text(o, "version");
    std::string trace_id = text(o, "trace_id");
    std::printf("%-27s %-16s %-7s %-11s %6s %3s %11s %-7s %-32s %s\n", text(o, "time").c_str(), text(o, "function").c_str(),
                text(o, "trigger").c_str(), text(o, "outcome").c_str(), status.empty() ? "-" : status.c_str(),
                text(o, "attempt").c_str(), text(o, "duration_ms").c_str(), version.empty() ? "-" : version.c_str(),
                trace_id.empty() ? "-" : trace_id.c_str(), text(o, "invocation_id").c_str());
    if (o.if_contains("error") || o.if_contains("error_type")) {
      std::printf("    %s: %s\n", text(o, "error_type").c_str(), one_line(text(o, "error"), 200).c_str());
    }
  }
  return 0;
}

// Prints the host's lines; with `follow`, keeps asking (a long poll) and finds the host again
// when it restarts, until interrupted.
int logs(const std::string& dir, const std::string& function, int lines, bool follow) {
  std::string run;      // the host's run we follow
  std::string after;    // the last line of it we printed
  bool waiting = false;  // said that no host answers
  for (bool first = true;; ) {
    auto host = find_running_host(dir);
    Expected<HttpResponse> res = Error{""};
    if (host) {
      std::string target = "/admin/logs?limit=" + std::to_string(first ? lines : 5000);
      if (!function.empty()) target += "&function=" + percent_encode(function);
      if (!first) target += "&after=" + after + "&wait_ms=20000&host=" + percent_encode(run);
      res = http_request(host->admin_host, host->admin_port, "GET", target, "", host->token);
    }
    if (!host || !res) {
      if (!follow) return fail(host ? res.error().message : host.error().message);
      if (!waiting) {
        std::cerr << "nimbus: no host answers for " << dir << "; waiting for it to start (Ctrl-C ends)" << std::endl;
        waiting = true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      continue;
    }
    if (res->status != 200) {
      boost::system::error_code ec;
      json::value v = json::parse(res->body, ec);
      const json::object* err = !ec && v.is_object() && v.as_object().if_contains("error") && v.at("error").is_object()
                                    ? &v.at("error").as_object() : nullptr;
      return fail("the host answered " + std::to_string(res->status) + ": " + (err ? text(*err, "message") : res->body));
    }
    if (waiting) {
      std::cerr << "nimbus: the host is back; following its lines" << std::endl;
      waiting = false;
    }
    if (res->header("x-nimbus-log-gap") == "1") {
      std::cerr << "nimbus: some lines were lost here (the host keeps the last 4 MiB of lines)" << std::endl;
    }
    std::cout << res->body << std::flush;
    if (!follow) return 0;
    if (!res->header("retry-after").empty()) std::this_thread::sleep_for(std::chrono::seconds(1));  // the host is busy
    run = res->header("x-nimbus-host");
    after = res->header("x-nimbus-log-next");
    if (after.empty()) after = "0";
    first = false;
  }
}

}  // namespace

ObserveCommands::ObserveCommands(CLI::App& cli) {
  invocations_ = cli.add_subcommand("invocations", "Recent invocations from the store's history: outcome, duration, trace, "
                                                   "error; --id shows one with its log lines");
  invocations_->add_option("function", function_, "Only this function's");
  invocations_->add_flag("--failed", failed_, "Only those that did not succeed");
  invocations_->add_option("--trace", trace_, "Only those in this trace (32 hex digits)");
  invocations_->add_option("--id", id_, "One invocation, in full, with its log lines");
  invocations_->add_option("--limit", limit_, "How many, newest first")->capture_default_str();
  invocations_->add_flag("--json", json_, "Print the host's JSON");
  invocations_->add_option("--dir", dir_, "The app folder")->capture_default_str();

  logs_ = cli.add_subcommand("logs", "The running host's log lines; -f follows them (across restarts) until Ctrl-C");
  logs_->add_option("function", function_, "Only lines about this function");
  logs_->add_flag("-f,--follow", follow_, "Keep printing new lines");
  logs_->add_option("-n,--lines", lines_, "How many of the last lines first")->capture_default_str();
  logs_->add_option("--dir", dir_, "The app folder")->capture_default_str();
}

std::optional<int> ObserveCommands::run() const {
  if (invocations_->parsed()) {
    if (limit_ < 1) return fail("--limit must be 1 or more");
    return invocations(dir_, function_, failed_, trace_, id_, limit_, json_);
  }
  if (logs_->parsed()) {
    if (lines_ < 1) return fail("--lines must be 1 or more");
    return logs(dir_, function_, lines_, follow_);
  }
  return std::nullopt;
}

}  // namespace nimbus
