#pragma once
// Looking back and following along: `nimbus invocations` (the store's invocation history,
// observe/history.h) and `nimbus logs [-f]` (the host's log lines, admin/observe_endpoints.h).
#include <optional>
#include <string>

namespace CLI {
class App;
}

namespace nimbus {

class ObserveCommands {
 public:
  explicit ObserveCommands(CLI::App& cli);  // registers the commands
  std::optional<int> run() const;           // after parsing: the one given, or nullopt

 private:
  CLI::App* invocations_ = nullptr;
  CLI::App* logs_ = nullptr;
  std::string dir_ = ".";
  std::string function_;
  std::string trace_;
  std::string id_;
  bool failed_ = false;
  bool json_ = false;
  bool follow_ = false;
  int limit_ = 20;
  int lines_ = 100;
};

}  // namespace nimbus
