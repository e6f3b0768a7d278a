#pragma once
// The native runtime: a function is a shared library built against sdk/cpp, loaded with
// dlopen and called through the C ABI in sdk/cpp/nimbus/abi.h. Trusted code only: it shares
// the host's address space, and its deadline is advisory.
#include <filesystem>
#include <functional>
#include <memory>
#include <string_view>

#include "core/app_spec.h"
#include "core/clock.h"
#include "core/expected.h"
#include "runtime/executor.h"

namespace nimbus {

class Logger;
class Services;
enum class LogLevel : uint8_t;

// Where a native function's own log lines go (the host's Logger, or a worker's log frames).
using NativeLog = std::function<void(LogLevel, const Invocation&, std::string_view message)>;

// Loads `library` for `function`. Errors name the file and, for a missing entry point, the
// symbol and how to provide it.
Expected<std::unique_ptr<Executor>> load_native_function(const FunctionSpec& function,
                                                         const std::filesystem::path& library,
                                                         const Clock& clock, Logger& logger,
                                                         Services* services = nullptr);
// `services` answers the function's host calls (state, publish, invoke); null: none offered.
Expected<std::unique_ptr<Executor>> load_native_function(const FunctionSpec& function,
                                                         const std::filesystem::path& library,
                                                         NativeLog log, Services* services = nullptr);

}  // namespace nimbus
