#pragma once
// One step per key at a time (an orchestration instance, an entity): messages for a key whose
// step is under way wait here for the next step of that key, which takes them all at once.
// Shared by the orchestration and entity workers (orchestrations.cpp, entities.cpp).
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "store/store.h"

namespace nimbus::durable {

class KeyedSteps {
 public:
  // True: the caller runs a step for `key` with `messages` now. False: a step is under way;
  // they were moved here and join the next one.
  bool enter(const std::string& key, std::vector<Message>& messages) {
    std::lock_guard lock(mu_);
    if (running_.count(key)) {
      auto& w = waiting_[key];
      for (auto& m : messages) w.push_back(std::move(m));
      messages.clear();
      return false;
    }
    running_.insert(key);
    return true;
  }

  // The step for `key` is over: the messages that waited for it make the next step (the key
  // stays taken); none, or `stopping`, frees the key (what waited stays for take_waiting()).
  std::vector<Message> leave(const std::string& key, bool stopping) {
    std::lock_guard lock(mu_);
    auto it = waiting_.find(key);
    if (it == waiting_.end() || stopping) {
      running_.erase(key);
      return {};
    }
    std::vector<Message> next = std::move(it->second);
    waiting_.erase(it);
    return next;
  }

  // Everything waiting (a stopping worker hands it back to the store).
  std::vector<Message> take_waiting() {
    std::lock_guard lock(mu_);
    std::vector<Message> all;
    for (auto& [key, messages] : waiting_) {
      for (auto& m : messages) all.push_back(std::move(m));
    }
    waiting_.clear();
    return all;
  }

 private:
  std::mutex mu_;
  std::set<std::string> running_;
  std::map<std::string, std::vector<Message>> waiting_;
};

}  // namespace nimbus::durable
