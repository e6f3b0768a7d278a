#pragma once
// The store the admin and stream targets commit to: the real SQLite store, in a temp dir the
// target made, opened once per process and removed at exit.
#include <unistd.h>

#include <filesystem>
#include <memory>

#include "core/clock.h"
#include "store/store.h"

namespace nimbus::fuzz {

inline Store& fuzz_store() {
  struct Scratch {
    SystemClock clock;
    std::filesystem::path dir;
    std::unique_ptr<Store> store;
    Scratch() {
      std::string tmpl = (std::filesystem::temp_directory_path() / "nimbus-store-fuzz-XXXXXX").string();
      if (!::mkdtemp(tmpl.data())) std::abort();
      dir = tmpl;
      auto opened = open_store("sqlite:state.db", dir, clock);
      if (!opened) {
        std::fprintf(stderr, "fuzz: cannot open the store: %s\n", opened.error().message.c_str());
        std::abort();
      }
      store = std::move(*opened);
    }
    ~Scratch() {
      store->close();
      store.reset();
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  };
  static Scratch scratch;
  return *scratch.store;
}

}  // namespace nimbus::fuzz
