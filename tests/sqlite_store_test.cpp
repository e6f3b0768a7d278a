// The embedded SQLite backend's own promises: the WAL, damaged files, a full disk, kill -9.
#include "store_conformance.h"

#include <algorithm>
#include <fstream>
#include <future>
#include <set>

#include "core/thread_role.h"
#include "harness.h"

namespace nimbus {
namespace {


// Commits 6 MB of messages (well past the checkpoint threshold of 1,000 pages of 4 KiB), then
// waits until the database file holds at least 4 MB of them: a checkpoint copied the WAL back.
::testing::AssertionResult commit_and_wait_for_checkpoint(Store& s, const fs::path& database) {
  for (int round = 0; round < 30; ++round) {
    Batch b;
    for (int i = 0; i < 100; ++i) {
      NewMessage m;
      m.payload = std::string(2000, static_cast<char>('a' + i % 26));
      b.enqueues.push_back({"q", std::move(m)});
    }
    if (auto st = s.commit_sync(std::move(b)); !st.ok()) return ::testing::AssertionFailure() << st.error().message;
  }
  const auto db_size = [&] {
    std::error_code ec;
    auto n = fs::file_size(database, ec);
    return ec ? std::uintmax_t{0} : n;
  };
  for (int i = 0; i < 1000 && db_size() < 4'000'000; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (db_size() >= 4'000'000u) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "the database file holds " << db_size() << " bytes of the 6 MB committed";
}

// --- the embedded backend's own promises -------------------------------------------------------

// The WAL is copied back into the database while the store runs (it once grew without bound
// until the host stopped: the checkpointer's connection had never read, and did nothing).
TEST(SqliteStore, TheWalIsCheckpointedWhileTheStoreRuns) {
  fs::path dir = fresh_dir();
  ManualClock clock;
  {
    auto s = open_store("sqlite:state.db", dir, clock);
    ASSERT_TRUE(s.ok()) << s.error().message;
    EXPECT_TRUE(commit_and_wait_for_checkpoint(**s, dir / "state.db")) << "no checkpoint ran";
  }
  fs::remove_all(dir);
}

// Reader connections keep their prepared statements, but a read leaves none of them open: a
// get() stops at its row, and a statement left there would hold that read's snapshot while the
// connection waits in the pool, and no checkpoint could copy the WAL past it.
TEST(SqliteStore, AFinishedReadHoldsNoSnapshotThatStopsCheckpoints) {
  fs::path dir = fresh_dir();
  ManualClock clock;
  {
    auto s = open_store("sqlite:state.db", dir, clock);
    ASSERT_TRUE(s.ok()) << s.error().message;
    Batch put;
    put.puts.push_back({"st", "k", "v", std::nullopt, 0});
    ASSERT_TRUE((*s)->commit_sync(std::move(put)).ok());
    for (int i = 0; i < 3; ++i) {  // the same prepared statement, used again
      auto got = (*s)->get("st", "k");
      ASSERT_TRUE(got.ok() && *got) << "the key reads back";
      EXPECT_EQ((*got)->value, "v");
    }
    EXPECT_TRUE(commit_and_wait_for_checkpoint(**s, dir / "state.db"))
        << "no checkpoint got past the snapshot of the get() that ran before the commits";
    Batch put2;
    put2.puts.push_back({"st", "k", "w", std::nullopt, 0});
    ASSERT_TRUE((*s)->commit_sync(std::move(put2)).ok());
    auto got = (*s)->get("st", "k");
    ASSERT_TRUE(got.ok() && *got);
    EXPECT_EQ((*got)->value, "w") << "a reader's kept statement reads the newest commit";
  }
  fs::remove_all(dir);
}

TEST(SqliteStore, ANonDatabaseFileIsAClearStartupError) {
  fs::path dir = fresh_dir();
  std::ofstream(dir / "state.db") << "this is not a database, it is a text file that happens to be here";
  ManualClock clock;
  auto s = open_store("sqlite:state.db", dir, clock);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find((dir / "state.db").string()), std::string::npos) << s.error().message;
  EXPECT_NE(s.error().message.find("not a database"), std::string::npos) << s.error().message;
  // Nothing was overwritten.
  std::ifstream in(dir / "state.db");
  std::string text((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(text.rfind("this is not a database", 0), 0u);
  fs::remove_all(dir);
}

TEST(SqliteStore, ADamagedDatabaseIsAClearStartupError) {
  fs::path dir = fresh_dir();
  ManualClock clock;
  {
    auto s = open_store("sqlite:state.db", dir, clock);
    ASSERT_TRUE(s.ok());
    Batch b;
    NewMessage m;
    m.payload = std::string(200, 'x');
    for (int i = 0; i < 2000; ++i) b.enqueues.push_back({"q", m});
    ASSERT_TRUE((*s)->commit_sync(std::move(b)).ok());
  }
  {
    // Scribble over pages in the middle of the file (the header stays valid).
    std::fstream f(dir / "state.db", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(4096 * 3);
    std::string junk(4096 * 4, '\x5a');
    f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
  }
  auto s = open_store("sqlite:state.db", dir, clock);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("state.db"), std::string::npos) << s.error().message;
  EXPECT_NE(s.error().message.find("move it aside"), std::string::npos) << s.error().message;
  fs::remove_all(dir);
}

TEST(SqliteStore, UnknownSchemesAreRefusedClearly) {
  ManualClock clock;
  auto s = open_store("mongodb://127.0.0.1:27017", fs::temp_directory_path(), clock);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("not available in this build"), std::string::npos);
}

// A full disk: commits fail with an io error that says so, and nothing already committed is
// damaged or lost (a 1 MiB tmpfs; root can mount one, others skip with the reason).
TEST(SqliteStore, AFullDiskFailsCommitsClearlyAndCorruptsNothing) {
  fs::path dir = fresh_dir();
  if (::mount("tmpfs", dir.c_str(), "tmpfs", 0, "size=1m") != 0) {
    fs::remove_all(dir);
    GTEST_SKIP() << "cannot mount a small tmpfs here (" << std::strerror(errno) << "); needs root";
  }
  int64_t committed = 0;
  std::string failure;
  {
    ManualClock clock;
    auto s = open_store("sqlite:state.db", dir, clock);
    ASSERT_TRUE(s.ok()) << s.error().message;
    for (int round = 0; round < 1000 && failure.empty(); ++round) {
      Batch b;
      for (int i = 0; i < 20; ++i) {
        NewMessage m;
        m.payload = std::string(1000, static_cast<char>('a' + round % 26));
        b.enqueues.push_back({"q", m});
      }
      auto r = (*s)->commit_sync(std::move(b));
      if (r.ok()) committed += 20;
      else failure = r.error().message + " [" + r.error().code + "]";
    }
    ASSERT_FALSE(failure.empty()) << "1 MiB never filled up";
    EXPECT_NE(failure.find("full"), std::string::npos) << failure;
    EXPECT_NE(failure.find("[io]"), std::string::npos) << failure;
    // Still usable for reads, and everything it acknowledged is there.
    auto all = (*s)->peek("q", 100000);
    ASSERT_TRUE(all.ok()) << all.error().message;
    EXPECT_EQ(static_cast<int64_t>(all->size()), committed);
  }
  {
    ManualClock clock;
    auto s = open_store("sqlite:state.db", dir, clock);  // quick_check runs at open
    ASSERT_TRUE(s.ok()) << s.error().message;
    auto all = (*s)->peek("q", 100000);
    ASSERT_TRUE(all.ok());
    EXPECT_EQ(static_cast<int64_t>(all->size()), committed) << "after a reopen";
  }
  ::umount(dir.c_str());
  fs::remove_all(dir);
}

std::size_t files_in(const fs::path& dir) {
  std::error_code ec;
  std::size_t n = 0;
  for (const auto& f : fs::directory_iterator(dir, ec)) n += f.is_regular_file() ? 1 : 0;
  return n;
}

// Where the blob bytes live is the SQLite backend's own option, in its URL: blobs=DIR
// (relative to the app folder); the default is blobs/ beside the database. Unknown options
// are refused by name, and store_files tells a sandbox what to hide.
TEST(SqliteStore, TheBlobFolderIsAnOptionOfItsUrl) {
  fs::path dir = fresh_dir();
  ManualClock clock;
  {
    auto s = open_store("sqlite:db/state.db?blobs=bytes", dir, clock);
    ASSERT_TRUE(s.ok()) << s.error().message;
    ASSERT_TRUE((*s)->commit_sync(put_batch(blob_put("up", "a.txt", "hello"))).ok());
    EXPECT_EQ(files_in(dir / "bytes" / "up"), 1u);
    EXPECT_FALSE(fs::exists(dir / "db" / "blobs"));
    auto got = (*s)->get_blob("up", "a.txt");
    ASSERT_TRUE(got.ok() && got->has_value());
    EXPECT_EQ((*got)->data, "hello");
  }
  auto files = store_files("sqlite:db/state.db?blobs=bytes", dir);
  ASSERT_TRUE(files.ok()) << files.error().message;
  EXPECT_NE(std::find(files->files.begin(), files->files.end(), dir / "db" / "state.db-wal"), files->files.end());
  ASSERT_EQ(files->folders.size(), 1u);
  EXPECT_EQ(files->folders[0], dir / "bytes");
  auto by_default = store_files("sqlite:db/state.db", dir);
  ASSERT_TRUE(by_default.ok());
  EXPECT_EQ(by_default->folders[0], dir / "db" / "blobs");

  auto unknown = open_store("sqlite:db/state.db?colour=blue", dir, clock);
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.error().message.find("unknown option 'colour'"), std::string::npos) << unknown.error().message;
  auto empty = open_store("sqlite:db/state.db?blobs=", dir, clock);
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.error().message.find("blobs= names no folder"), std::string::npos) << empty.error().message;
  auto network = store_files("postgres://nimbus@db/x", dir);
  ASSERT_TRUE(network.ok()) << network.error().message;
  EXPECT_TRUE(network->files.empty() && network->folders.empty()) << "a store across the network keeps nothing here";
  auto unknown_scheme = store_files("mongodb://db:27017", dir);
  ASSERT_FALSE(unknown_scheme.ok());
  EXPECT_NE(unknown_scheme.error().message.find("not available in this build"), std::string::npos);
  fs::remove_all(dir);
}

// The embedded backend keeps blob bytes in files beside the database: one per live version;
// a replaced or deleted version's file goes with its commit, and files a crash left without
// metadata (written, not yet committed) are removed when the store opens.
TEST(SqliteStore, BlobFilesFollowTheirMetadataAndCrashLeftoversAreRemovedAtOpen) {
  fs::path dir = fresh_dir();
  ManualClock clock;
  {
    auto s = open_store("sqlite:state.db", dir, clock);
    ASSERT_TRUE(s.ok()) << s.error().message;
    for (const char* v : {"v1", "v2", "v3"}) ASSERT_TRUE((*s)->commit_sync(put_batch(blob_put("up", "a/b.txt", v))).ok());
    ASSERT_TRUE((*s)->commit_sync(put_batch(blob_put("up", "gone", "x"))).ok());
    ASSERT_TRUE((*s)->commit_sync(delete_batch("up", "gone")).ok());
    EXPECT_EQ(files_in(dir / "blobs" / "up"), 1u) << "one file per live blob";
    // A refused put leaves no file behind.
    ASSERT_FALSE((*s)->commit_sync(put_batch(blob_put("up", "a/b.txt", "v4", "no"))).ok());
    EXPECT_EQ(files_in(dir / "blobs" / "up"), 1u);
  }
  // What a crash between writing a file and committing its metadata leaves behind.
  std::ofstream(dir / "blobs" / "up" / "0123456789abcdef0123456789abcdef") << "orphan";
  std::ofstream(dir / "blobs" / ".tmp" / "fedcba9876543210fedcba9876543210") << "half-written";
  {
    auto s = open_store("sqlite:state.db", dir, clock);
    ASSERT_TRUE(s.ok()) << s.error().message;
    EXPECT_EQ(files_in(dir / "blobs" / "up"), 1u) << "the orphan is removed at open";
    EXPECT_EQ(files_in(dir / "blobs" / ".tmp"), 0u);
    auto got = (*s)->get_blob("up", "a/b.txt");
    ASSERT_TRUE(got.ok() && got->has_value());
    EXPECT_EQ((*got)->data, "v3");
    // While a store has it open, a second opener removes nothing: the files in flight of a
    // running process are not leftovers.
    std::ofstream(dir / "blobs" / "up" / "00000000000000000000000000000000") << "in flight";
    auto second = open_store("sqlite:state.db", dir, clock);
    ASSERT_TRUE(second.ok()) << second.error().message;
    EXPECT_EQ(files_in(dir / "blobs" / "up"), 2u);
  }
  fs::remove_all(dir);
}

// kill -9 while blobs are put and replaced: after a reopen every committed blob reads back
// whole (its bytes match its SHA-256) and no file is left without metadata.
TEST(SqliteStore, KillNineDuringBlobPutsNeverLeavesMetadataWithoutItsFile) {
  fs::path dir = fresh_dir();
  // Enough puts that more than 10 names hold blobs.
  run_then_kill("sqlite:state.db", dir, 60, put_blobs_forever);
  ManualClock clock;
  auto s = open_store("sqlite:state.db", dir, clock);
  ASSERT_TRUE(s.ok()) << s.error().message;
  auto page = (*s)->list_blobs("c", "", "", 1000);
  ASSERT_TRUE(page.ok());
  ASSERT_GT(page->blobs.size(), 10u) << "the child committed too little to prove anything";
  for (const auto& info : page->blobs) {
    auto got = (*s)->get_blob("c", info.name);
    ASSERT_TRUE(got.ok()) << got.error().message;
    ASSERT_TRUE(got->has_value());
    EXPECT_EQ(sha256_hex((*got)->data), info.sha256) << info.name;
    EXPECT_EQ(static_cast<int64_t>((*got)->data.size()), info.size);
  }
  EXPECT_EQ(files_in(dir / "blobs" / "c"), page->blobs.size()) << "a file without metadata survived the reopen";
  s->reset();
  fs::remove_all(dir);
}


}  // namespace
}  // namespace nimbus

namespace nimbus {
namespace {

// The store's threads say what they are in `top -H`, perf and gdb: its writer, its
// checkpointer and the I/O threads that serve blocking reads.
std::set<std::string> thread_names() {
  std::set<std::string> names;
  for (const auto& task : fs::directory_iterator("/proc/self/task")) {
    std::ifstream in(task.path() / "comm");
    std::string name;
    if (std::getline(in, name)) names.insert(name);
  }
  return names;
}

TEST(SqliteStore, ItsThreadsAreNamedForWhatTheyDo) {
  fs::path dir = fresh_dir();
  ManualClock clock;
  auto s = open_store("sqlite:state.db", dir, clock);
  ASSERT_TRUE(s.ok()) << s.error().message;
  std::promise<void> read;
  (*s)->run_blocking([&] { read.set_value(); });
  read.get_future().get();
  // A thread names itself as it starts: given a moment on a loaded machine.
  using testing::eventually;
  for (const char* name : {"store-writer", "store-ckpt", "store-io"}) {
    EXPECT_TRUE(eventually([&] { return thread_names().count(name) > 0; })) << name;
  }
  s->reset();
  EXPECT_TRUE(eventually([] { return thread_names().count("store-writer") == 0; })) << "the writer is gone with the store";
  fs::remove_all(dir);
}

// Reads may block (for a network backend, on the network): never on an event loop, the timer
// thread or the writer. Checked builds (the sanitized run of `make test`) stop there at once.
TEST(SqliteStoreDeathTest, AReadOnAThreadThatMustNotBlockStopsTheProcessInCheckedBuilds) {
#ifdef NDEBUG
  GTEST_SKIP() << "checked builds only (make test runs this in the sanitized, debug build)";
#else
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  fs::path dir = fresh_dir();
  ManualClock clock;
  auto s = open_store("sqlite:state.db", dir, clock);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_TRUE((*s)->get("st", "k").ok()) << "a free thread may read";
  for (ThreadRole role : {ThreadRole::event_loop, ThreadRole::timer, ThreadRole::store_writer}) {
    EXPECT_DEATH(
        {
          set_thread_role(role);
          (void)(*s)->get("st", "k");
        },
        std::string("a store read on ") + to_string(role))
        << to_string(role);
  }
  // On the store's own I/O threads a read is where it belongs.
  std::promise<bool> read;
  (*s)->run_blocking([&] { read.set_value((*s)->get("st", "k").ok()); });
  EXPECT_TRUE(read.get_future().get());
  s->reset();
  fs::remove_all(dir);
#endif
}

}  // namespace
}  // namespace nimbus
