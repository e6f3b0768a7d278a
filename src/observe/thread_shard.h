#pragma once
// Which shard this thread uses for each live owner (a LogSink, a Metrics). Owners are told
// apart by a generation number that is never reused, so a new owner at a dead one's address
// never inherits its shard. The common case (one owner) is one comparison.
#include <cstdint>
#include <utility>
#include <vector>

namespace nimbus {

class ThreadShardCache {
 public:
  void* find(uint64_t generation) const {
    for (const auto& [g, shard] : entries_)
      if (g == generation) return shard;
    return nullptr;
  }
  void remember(uint64_t generation, void* shard) { entries_.emplace_back(generation, shard); }

 private:
  std::vector<std::pair<uint64_t, void*>> entries_;
};

}  // namespace nimbus
