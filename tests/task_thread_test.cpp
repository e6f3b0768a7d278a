// The triggers' task thread: tasks run in order, a failing one does not stop the rest, and a
// task that lets go of the last reference to the thread's owner does not make it join itself.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <stdexcept>
#include <vector>

#include "triggers/task_thread.h"

namespace nimbus {
namespace {

TEST(TaskThread, RunsTasksInOrderAndAFailingOneDoesNotStopTheRest) {
  std::vector<int> order;
  {
    TaskThread t;
    for (int i = 0; i < 100; ++i) {
      t.post([&order, i] {
        if (i == 50) throw std::runtime_error("a bug");
        order.push_back(i);
      });
    }
    t.drain();
  }
  ASSERT_EQ(order.size(), 99u);
  for (std::size_t k = 1; k < order.size(); ++k) EXPECT_LT(order[k - 1], order[k]);
}

TEST(TaskThread, ATaskThatDropsTheLastReferenceToItsThreadEndsItWithoutJoiningItself) {
  struct Owner {
    std::shared_ptr<TaskThread> thread = std::make_shared<TaskThread>();
  };
  auto owner = std::make_shared<Owner>();
  auto done = std::make_shared<std::promise<void>>();
  auto finished = done->get_future();
  TaskThread* t = owner->thread.get();
  // The task holds the only reference: when it lets go, ~TaskThread runs on the thread itself.
  t->post([owner = std::move(owner), done]() mutable {
    owner.reset();
    done->set_value();
  });
  ASSERT_EQ(finished.wait_for(std::chrono::seconds(5)), std::future_status::ready);
}

}  // namespace
}  // namespace nimbus
