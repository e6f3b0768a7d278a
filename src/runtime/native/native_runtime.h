#pragma once
// The native runtime: a function is a shared library built against sdk/cpp, loaded with
// dlopen and called through the C ABI in sdk/cpp/nimbus/abi.h. Trusted code only: it shares
// the host's address space, and its deadline is advisory.
#include <filesystem>
#include <memory>

#include "core/app_spec.h"
#include "core/clock.h"
#include "core/expected.h"
#include "runtime/executor.h"

namespace nimbus {

class Logger;

// Loads `library` for `function`. Errors name the file and, for a missing entry point, the
// symbol and how to provide it.
Expected<std::unique_ptr<Executor>> load_native_function(const FunctionSpec& function,
                                                         const std::filesystem::path& library,
                                                         const Clock& clock, Logger& logger);

}  // namespace nimbus
