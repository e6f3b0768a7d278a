#pragma once
// Turns native functions' handlers into loadable libraries. A handler is either a prebuilt
// `path/to/lib.so`, or a source folder `functions/hello[:target]` holding a CMake project that
// calls nimbus_add_function(target ...). Source folders are built together (one CMake tree in
// .nimbus/build) and only when a source is newer than its library.
#include <filesystem>
#include <map>
#include <ostream>
#include <string>

#include "core/app_spec.h"
#include "core/expected.h"

namespace nimbus {

struct NativeHandler {
  std::filesystem::path library;  // what to dlopen
  std::filesystem::path source;   // the CMake folder; empty for a prebuilt .so
  std::string target;             // the CMake target (library file stem)
};

NativeHandler resolve_native_handler(const AppSpec& app, const FunctionSpec& function);

// The C++ SDK folder (holds nimbus/function.h and cmake/nimbus-config.cmake).
std::filesystem::path sdk_cpp_dir();

// The program that runs a native function in a worker process (isolation: process|sandbox):
// $NIMBUS_NATIVE_WORKER, else nimbus-native-worker beside the running binary, else the build's.
std::filesystem::path native_worker_program();

// Builds what is out of date; build tool output goes to `progress`. Returns each native
// function's library path.
Expected<std::map<std::string, std::filesystem::path>> build_native_functions(
    const AppSpec& app, std::ostream& progress);

}  // namespace nimbus
