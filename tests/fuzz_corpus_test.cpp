// The fuzz targets' invariants over their committed corpora (fuzz/corpus/<target>/), in every
// build: the inputs that once broke something stay fixed, and the targets stay honest under
// GCC and the ASan build too. `make fuzz` explores beyond the corpus (docs/fuzzing.md).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>

namespace nimbus {
bool check_cron_input(std::string_view text);  // fuzz/cron_fuzz.cpp
namespace fuzz {
std::string check_frame_input(std::string_view data);
std::string check_manifest_input(std::string_view text);
std::string check_route_input(std::string_view text);
std::string check_blob_path_input(std::string_view text);
std::string check_mqtt_topic_input(std::string_view text);
std::string check_admin_input(std::string_view text);
std::string check_stream_input(std::string_view text);
std::string check_http_input(std::string_view bytes);
}  // namespace fuzz
namespace {

namespace fs = std::filesystem;

struct Target {
  const char* name;
  std::string (*check)(std::string_view);
};

std::string check_cron(std::string_view text) { return check_cron_input(text) ? "" : "an invariant broke"; }

class FuzzCorpus : public ::testing::TestWithParam<Target> {};

TEST_P(FuzzCorpus, EveryCommittedInputKeepsTheInvariants) {
  const Target& t = GetParam();
  const fs::path dir = fs::path(NIMBUS_SOURCE_DIR) / "fuzz" / "corpus" / t.name;
  ASSERT_TRUE(fs::is_directory(dir)) << dir;
  int inputs = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    std::ifstream in(entry.path(), std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    EXPECT_EQ(t.check(bytes.str()), "") << entry.path();
    ++inputs;
  }
  EXPECT_GT(inputs, 0) << "no corpus in " << dir;
}

INSTANTIATE_TEST_SUITE_P(Targets, FuzzCorpus,
                         ::testing::Values(Target{"cron", check_cron}, Target{"frame", fuzz::check_frame_input},
                                           Target{"manifest", fuzz::check_manifest_input},
                                           Target{"route", fuzz::check_route_input},
                                           Target{"blob_path", fuzz::check_blob_path_input},
                                           Target{"mqtt_topic", fuzz::check_mqtt_topic_input},
                                           Target{"admin", fuzz::check_admin_input},
                                           Target{"stream", fuzz::check_stream_input},
                                           Target{"http", fuzz::check_http_input}),
                         [](const ::testing::TestParamInfo<Target>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace nimbus
