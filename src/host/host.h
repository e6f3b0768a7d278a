#pragma once
// The running host: assembles the parts for one app (native builds, pools, the HTTP trigger,
// the admin API, logs and metrics), serves until SIGINT/SIGTERM or an admin shutdown, then
// drains in-flight work within the grace period and returns the exit code.
#include <filesystem>
#include <optional>
#include <string>

#include "core/app_spec.h"
#include "core/clock.h"

namespace nimbus {

struct HostOptions {
  std::string address = "127.0.0.1";
  int port = 8080;
  std::string admin_address = "127.0.0.1";
  int admin_port = 8081;
  int tls_port = -1;  // the gateway's TLS listener (gateway.tls); -1: the manifest's port
  int loops = 0;  // event-loop threads; 0 = one per CPU this process may use
  // Fault injection (tests, drills): every store read and write takes this much longer.
  Duration store_latency = Duration::zero();
  // Versions (deploy/): serve what the store's `live` alias names; the folder does not become
  // live by itself (hosts that CI deploys to).
  bool serve_deployed = false;
};

// Where a running host records itself, inside the app folder.
std::filesystem::path host_file(const std::filesystem::path& app_dir);

int run_host(const AppSpec& app, const HostOptions& options);

}  // namespace nimbus
