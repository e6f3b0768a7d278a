// Language and transport are two axes: the runtime registry picks a function's transport from
// its spec, and each transport's executor says what its pool admits.
#include "pool/fleet.h"
#include "runtime/registry.h"

#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "observe/log.h"
#include "observe/metrics.h"

namespace nimbus {
namespace {

class RuntimeRegistryTest : public ::testing::Test {
 protected:
  RuntimeContext context(std::map<std::string, std::filesystem::path> libraries = {}) {
    app_.dir = std::filesystem::temp_directory_path();
    return RuntimeContext{app_, clock_, Timers(timers_, nullptr), logger_, metrics_, nullptr, {}, "",
                          [](const std::string&) { return std::string("token"); }, [](const std::string&) {},
                          std::move(libraries)};
  }
  static FunctionSpec function(RuntimeKind language, Isolation isolation) {
    FunctionSpec fn;
    fn.name = "f";
    fn.runtime = language;
    fn.isolation = isolation;
    fn.handler = language == RuntimeKind::python ? "app.py:main" : "";
    fn.concurrency = 8;
    fn.max_instances = 3;
    return fn;
  }

  AppSpec app_;
  ManualClock clock_;
  TimerQueue timers_;
  int devnull_ = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  LogSink sink_{devnull_};
  Logger logger_{sink_, clock_, "test"};
  Metrics metrics_{{"f"}};
};

TEST_F(RuntimeRegistryTest, EachLanguageAndIsolationHasItsTransport) {
  EXPECT_EQ(function(RuntimeKind::native, Isolation::none).transport(), Transport::in_process);
  EXPECT_EQ(function(RuntimeKind::native, Isolation::process).transport(), Transport::frames);
  EXPECT_EQ(function(RuntimeKind::native, Isolation::sandbox).transport(), Transport::frames);
  EXPECT_EQ(function(RuntimeKind::python, Isolation::process).transport(), Transport::frames);
  EXPECT_EQ(function(RuntimeKind::node, Isolation::process).transport(), Transport::frames);
  EXPECT_EQ(function(RuntimeKind::process, Isolation::process).transport(), Transport::frames);
  EXPECT_EQ(runtime_transports().size(), 2u);
}

TEST_F(RuntimeRegistryTest, InProcessRunsInTheCallersThreadAndAdmitsItsConcurrency) {
  auto fn = function(RuntimeKind::native, Isolation::none);
  auto executor = make_executor(fn, 0, context({{"f", std::filesystem::path(NIMBUS_TEST_FUNCTIONS) / "hello.so"}}));
  ASSERT_TRUE(executor) << executor.error().message;
  EXPECT_EQ((*executor)->mode(), Executor::Mode::synchronous);
  EXPECT_EQ((*executor)->capacity(fn), 8);
  auto missing = make_executor(fn, 0, context());
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message.find("its library was not built"), std::string::npos);
}

TEST_F(RuntimeRegistryTest, FramesRunAFleetAndAdmitConcurrencyTimesInstances) {
  auto fn = function(RuntimeKind::python, Isolation::process);
  auto executor = make_executor(fn, 0, context());
  ASSERT_TRUE(executor) << executor.error().message;
  EXPECT_EQ((*executor)->mode(), Executor::Mode::asynchronous);
  EXPECT_EQ((*executor)->capacity(fn), 24);
  (*executor)->stop(std::chrono::seconds(1));  // it started nothing (min_instances 0)
}

}  // namespace
}  // namespace nimbus
