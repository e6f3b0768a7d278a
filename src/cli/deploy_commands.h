#pragma once
// The version commands: `nimbus deploy`, `versions`, `traffic set`, `rollback` and `swap`,
// which talk to a running host's admin API (deploy/deployments.h does the work there).
#include <optional>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace nimbus {

class DeployCommands {
 public:
  // Registers the commands on `cli`.
  explicit DeployCommands(CLI::App& cli);
  // After parsing: runs the one that was given (its exit code), or nullopt when none was.
  std::optional<int> run() const;

 private:
  CLI::App* deploy_ = nullptr;
  CLI::App* versions_ = nullptr;
  CLI::App* traffic_set_ = nullptr;
  CLI::App* rollback_ = nullptr;
  CLI::App* swap_ = nullptr;
  std::string dir_ = ".";  // the app folder to package (deploy)
  std::string to_;         // the app folder whose running host takes it ("" = dir_)
  std::string host_dir_ = ".";
  std::string alias_ = "live";
  std::string other_alias_;
  std::string message_;
  std::string sticky_;
  int weight_ = 100;
  bool json_ = false;
  std::vector<std::string> weights_;
};

}  // namespace nimbus
