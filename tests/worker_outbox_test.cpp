// A worker process's outbox: sends never block, whatever the worker reads, and arrive whole
// and in order; a worker that stops reading is killed at the outbox's bound or after the stall
// bound (with a reader thread and on an event loop).
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <random>
#include <thread>

#include "triggers/http/server.h"
#include "worker_seen.h"

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace nimbus {
namespace {

// A worker that takes nothing from its input for a while, then copies all of it to a file.
WorkerSpawn late_reader(const fs::path& into, double after_s) {
  WorkerSpawn spec;
  spec.argv = {"/usr/bin/python3", "-c",
               "import os,sys,time\n"
               "time.sleep(" + std::to_string(after_s) + ")\n"
               "with open(sys.argv[1],'wb') as f:\n"
               "  while True:\n"
               "    b=os.read(3,1<<16)\n"
               "    if not b: break\n"
               "    f.write(b)\n",
               into.string()};
  spec.env = {"PATH=/usr/bin:/bin"};
  return spec;
}

std::string numbered_frames(int count, std::size_t pad) {
  std::string all;
  for (int i = 0; i < count; ++i) {
    std::string wire;
    encode_frame(FrameType::heartbeat, {{"n", i}, {"pad", std::string(pad, 'x')}}, {}, wire);
    all += wire;
  }
  return all;
}

// Sending to a worker that is not reading returns at once, whatever the pipe holds: what it
// cannot take waits in the outbox, and reaches the worker whole and in order once it reads —
// with a reader thread, and on an event loop.
void sends_never_block_and_arrive_in_order(Reactor* reactor) {
  const fs::path out = fs::temp_directory_path() / ("nimbus-outbox-" + std::to_string(std::random_device{}()));
  Seen seen;
  auto w = WorkerProcess::spawn(late_reader(out, 0.5), seen.callbacks(), reactor);
  ASSERT_TRUE(w.ok()) << w.error().message;
  const std::string all = numbered_frames(400, 4000);  // ~1.6 MB: 25 times the pipe
  ASSERT_GT(all.size(), 20 * (*w)->pipe_capacity());
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 400; ++i) {
    std::string wire;
    encode_frame(FrameType::heartbeat, {{"n", i}, {"pad", std::string(4000, 'x')}}, {}, wire);
    ASSERT_TRUE((*w)->send_raw(wire));
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 300ms) << "a send waited for the worker";
  EXPECT_GT((*w)->outbox_size(), all.size() / 2);
  // The worker reads from 0.5 s on: wait (bounded) until it has written all it was sent.
  auto written = [&] {
    std::error_code ec;
    auto n = fs::file_size(out, ec);
    return ec ? 0 : static_cast<std::size_t>(n);
  };
  for (int i = 0; i < 4000 && written() < all.size(); ++i) std::this_thread::sleep_for(5ms);
  EXPECT_EQ((*w)->outbox_size(), 0u);
  w->reset();
  std::ifstream in(out, std::ios::binary);
  std::string got((std::istreambuf_iterator<char>(in)), {});
  fs::remove(out);
  EXPECT_EQ(got.size(), all.size());
  EXPECT_TRUE(got == all) << "the frames arrived changed or out of order";
}

TEST(WorkerProcessTest, SendsNeverBlockAndTheOutboxArrivesWholeAndInOrder) {
  sends_never_block_and_arrive_in_order(nullptr);
}

TEST(WorkerProcessTest, OnAnEventLoopSendsNeverBlockAndTheOutboxArrivesWholeAndInOrder) {
  EventLoops loops(1);
  loops.start();
  sends_never_block_and_arrive_in_order(&loops.reactor(0));
  loops.drain();
}

// A worker that lets its outbox pass the bound is killed, and its end says why.
TEST(WorkerProcessTest, AWorkerThatDoesNotReadIsKilledWhenItsOutboxPassesTheBound) {
  EventLoops loops(1);
  loops.start();
  {
    Seen seen;
    WorkerSpawn spec;
    spec.argv = {"/usr/bin/python3", "-c", "import time; time.sleep(60)"};
    spec.env = {"PATH=/usr/bin:/bin"};
    spec.max_outbox = 256 * 1024;
    auto w = WorkerProcess::spawn(spec, seen.callbacks(), &loops.reactor(0));
    ASSERT_TRUE(w.ok()) << w.error().message;
    std::string wire;
    encode_frame(FrameType::heartbeat, {{"pad", std::string(32 * 1024, 'x')}}, {}, wire);
    auto t0 = std::chrono::steady_clock::now();
    int sent = 0;
    while (sent < 100 && (*w)->send_raw(wire)) ++sent;
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 300ms);
    EXPECT_LT(sent, 100) << "the outbox grew past its bound";
    EXPECT_GE(static_cast<std::size_t>(sent) * wire.size(), 256u * 1024) << "killed before the bound";
    ASSERT_TRUE(seen.wait_exit());
    EXPECT_NE(seen.why.find("did not read its input"), std::string::npos) << seen.why;
    EXPECT_EQ(seen.code, 128 + SIGKILL);
    Status after = (*w)->send(FrameType::heartbeat, {});
    EXPECT_FALSE(after.ok());
    EXPECT_NE(after.error().message.find("did not read its input"), std::string::npos) << after.error().message;
  }
  loops.drain();
}

// A worker that takes nothing of its input for input_stall while more is sent is killed,
// and its end says so (time by the injected clock).
TEST(WorkerProcessTest, AWorkerThatTakesNothingForTheStallBoundIsKilled) {
  EventLoops loops(1);
  loops.start();
  {
    ManualClock clock;
    Seen seen;
    WorkerSpawn spec;
    spec.argv = {"/usr/bin/python3", "-c", "import time; time.sleep(60)"};
    spec.env = {"PATH=/usr/bin:/bin"};
    spec.input_stall = 5000ms;
    spec.clock = &clock;
    auto w = WorkerProcess::spawn(spec, seen.callbacks(), &loops.reactor(0));
    ASSERT_TRUE(w.ok()) << w.error().message;
    std::string wire;
    encode_frame(FrameType::heartbeat, {{"pad", std::string(64 * 1024, 'x')}}, {}, wire);
    ASSERT_TRUE((*w)->send_raw(wire));  // more than the pipe takes: the rest waits
    ASSERT_GT((*w)->outbox_size(), 0u);
    clock.advance(4s);
    EXPECT_TRUE((*w)->send_raw(wire)) << "killed before the stall bound";
    clock.advance(2s);
    EXPECT_FALSE((*w)->send_raw(wire)) << "not killed past the stall bound";
    ASSERT_TRUE(seen.wait_exit());
    EXPECT_NE(seen.why.find("did not read its input for 5000 ms"), std::string::npos) << seen.why;
  }
  loops.drain();
}

}  // namespace
}  // namespace nimbus
