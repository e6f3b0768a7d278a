#pragma once
// Every function's pool, by name and by index (the index metrics use). Triggers reach
// functions only through this.
#include <memory>
#include <string_view>
#include <vector>

#include "pool/function_pool.h"

namespace nimbus {

class FunctionPools {
 public:
  void add(std::unique_ptr<FunctionPool> pool) { pools_.push_back(std::move(pool)); }
  FunctionPool* find(std::string_view name) const {
    for (const auto& p : pools_)
      if (p->spec().name == name) return p.get();
    return nullptr;
  }
  FunctionPool& at(int index) const { return *pools_[static_cast<std::size_t>(index)]; }
  int size() const { return static_cast<int>(pools_.size()); }
  void close_all() {
    for (auto& p : pools_) p->close();
  }

 private:
  std::vector<std::unique_ptr<FunctionPool>> pools_;
};

}  // namespace nimbus
