#pragma once
// What the manifest tests share: a full manifest, one-function manifests, parsing with a given
// environment, and where a needle sits in a text (to check FILE:LINE:COL).
#include "manifest/manifest.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <atomic>
#include <fstream>
#include <map>
#include <string>

namespace nimbus {


using namespace std::chrono_literals;

inline const std::string kFile = "apps/shop/nimbus.yaml";

inline std::string new_suffix() {
  static std::atomic<int> n{0};
  return std::to_string(n.fetch_add(1)) + "_" +
         std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
}

inline EnvLookup env_of(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](std::string_view name) -> std::optional<std::string> {
    auto it = vars.find(std::string(name));
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

inline ManifestLoad parse(std::string_view text, std::map<std::string, std::string> vars = {}) {
  return parse_manifest(text, kFile, "/srv/shop", env_of(std::move(vars)));
}

// The 1-based line and column of the first occurrence of `needle` in `text`.
inline std::pair<int, int> position_of(std::string_view text, std::string_view needle) {
  auto at = text.find(needle);
  EXPECT_NE(at, std::string_view::npos) << needle;
  int line = 1, col = 1;
  for (std::size_t i = 0; i < at; ++i) {
    if (text[i] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  return {line, col};
}

// The diagnostic for exactly `path` whose message contains `fragment`, or null.
inline const Diagnostic* find_diag(const ManifestLoad& load, std::string_view path,
                            std::string_view fragment = "") {
  for (const auto& d : load.diagnostics) {
    if (d.path == path && d.message.find(fragment) != std::string::npos) return &d;
  }
  return nullptr;
}

// Asserts the load failed with a diagnostic at `path` mentioning `fragment`; returns it.
inline const Diagnostic& expect_diag(const ManifestLoad& load, std::string_view path,
                              std::string_view fragment) {
  static const Diagnostic kNone;
  EXPECT_FALSE(load.app.has_value()) << "a manifest with errors must not produce an app";
  const Diagnostic* d = find_diag(load, path, fragment);
  EXPECT_NE(d, nullptr) << "no diagnostic at '" << path << "' mentioning '" << fragment
                        << "'; got:\n"
                        << load.report();
  if (d) {
    EXPECT_EQ(d->file, kFile);
  }
  return d ? *d : kNone;
}

// A manifest with one function whose body lines are `fn_body` (indented 4 spaces by us).
inline std::string one_function(const std::string& fn_body, const std::string& fn_name = "orders") {
  std::string out = "name: shop\nfunctions:\n  " + fn_name + ":\n";
  std::string line;
  for (char c : fn_body) {
    if (c == '\n') {
      out += "    " + line + "\n";
      line.clear();
    } else {
      line += c;
    }
  }
  if (!line.empty()) out += "    " + line + "\n";
  return out;
}

inline const std::string kBasicFn =
    "runtime: native\n"
    "handler: functions/orders\n";

inline const std::string kFullManifest = R"(# The whole surface of the manifest.
name: shop
store: ${STORE_URL}
http:
  max_body: 1MiB
  max_header: 8KiB
  read_timeout: 5s
  idle_timeout: 2m
shutdown_grace: 15s
worker_threads: 8
functions:
  orders:
    runtime: native
    handler: functions/orders
    timeout: 2500ms
    concurrency: 4
    wait_queue: 10
    blocking: false
    env:
      REGION: eu-${ZONE:-west}
      DB_PASSWORD:
        value: ${DB_PASSWORD}
        secret: true
      PLAIN:
        value: visible
    triggers:
      - http:
          route: /orders/{id}
          methods: [GET, put]
          auth: function
      - http:
          route: /orders
          methods: POST
  health:
    runtime: native
    handler: lib/health.so
    triggers:
      - http: {route: /health}
)";

}  // namespace nimbus
