// train/run_dir.h and the metrics writer: the run-directory lock (refusal
// naming the holder, stale lock taken over with a warning, release), the
// checkpoint size estimate and room check, metrics rows on a full disk.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/fixtures.h"
#include "core/error.h"
#include "core/process_info.h"
#include "dist/grid.h"
#include "train/metrics.h"
#include "train/run_dir.h"

namespace fs = std::filesystem;
using namespace chorus;

namespace {

using chorus::testing::slurp;

class RunDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("chorus_run_dir_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  dist::Communicator& world() { return grid_.world(); }
  fs::path dir_;
  dist::ParallelGrid grid_ = dist::ParallelGrid::single();
};

std::string refusal(const fs::path& dir, dist::Communicator& world) {
  try {
    train::DirLock again(dir.string(), "run-dir", world);
  } catch (const AgreedError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_F(RunDirTest, SecondLockIsRefusedNamingTheHolderAndReleasedOnDestruction) {
  const char* args[] = {"chorus", "pretrain", "--run-dir", "r"};
  record_command_line(4, const_cast<char**>(args));
  const fs::path run = dir_ / "run";
  {
    train::DirLock lock(run.string(), "run-dir", world());
    const auto rec = nlohmann::json::parse(slurp(run / ".lock"));
    EXPECT_EQ(rec["pid"], static_cast<long long>(getpid()));
    EXPECT_EQ(rec["command"], "chorus pretrain --run-dir r");
    // flock(2) locks belong to an open file: a second open in this process conflicts as another process would.
    const std::string msg = refusal(run, world());
    EXPECT_NE(msg.find("run-dir: '" + run.string() + "' is in use by another run: host " + host_name() + ", pid " +
                       std::to_string(getpid()) + ", since " + rec["since"].get<std::string>() +
                       " (command: chorus pretrain --run-dir r)"),
              std::string::npos)
        << msg;
    EXPECT_NE(msg.find("give this run another --run-dir"), std::string::npos) << msg;
  }
  EXPECT_FALSE(fs::exists(run / ".lock")) << "released";
  EXPECT_FALSE(fs::exists(run)) << "the folder it created held nothing else: removed";
}

TEST_F(RunDirTest, StaleLockIsNamedInAWarningAndTakenOver) {
  std::ofstream(dir_ / ".lock")
      << R"({"host":"gone","pid":99999999,"since":"2026-01-01T00:00:00Z","command":"chorus pretrain x"})";
  ::testing::internal::CaptureStderr();
  {
    train::DirLock lock(dir_.string(), "run-dir", world());
    EXPECT_NE(slurp(dir_ / ".lock").find(std::to_string(getpid())), std::string::npos);
  }
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("warning: run-dir: taking over the stale lock of '" + dir_.string() +
                     "' held by host gone, pid 99999999, since 2026-01-01T00:00:00Z (command: chorus pretrain x): "
                     "that run ended without releasing it"),
            std::string::npos)
      << err;
  // An unreadable record is still a stale lock.
  std::ofstream(dir_ / ".lock") << "garbage";
  ::testing::internal::CaptureStderr();
  { train::DirLock lock(dir_.string(), "run-dir", world()); }
  EXPECT_NE(::testing::internal::GetCapturedStderr().find("it holds 'garbage'"), std::string::npos);
}

TEST_F(RunDirTest, RefusedLockRemovesTheFoldersItCreated) {
  const fs::path other = dir_ / "held";
  train::DirLock held(other.string(), "run-dir", world());
  EXPECT_FALSE(refusal(other, world()).empty());
  EXPECT_TRUE(fs::exists(other / ".lock")) << "the holder's lock file stays";
  {
    train::DirLock lock((dir_ / "a" / "b" / "c").string(), "run-dir", world());
    EXPECT_TRUE(fs::is_directory(dir_ / "a" / "b" / "c"));
  }
  EXPECT_FALSE(fs::exists(dir_ / "a")) << "nothing was written in them: all three are removed";
  {
    train::DirLock lock((dir_ / "x" / "y").string(), "run-dir", world());
    std::ofstream(dir_ / "x" / "y" / "config.json") << "{}";
  }
  EXPECT_TRUE(fs::exists(dir_ / "x" / "y" / "config.json")) << "a folder with files stays";
  std::ofstream(dir_ / "file") << "x";
  try {
    train::DirLock lock((dir_ / "file").string(), "run-dir", world());
    ADD_FAILURE() << "a file taken for a directory";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("run-dir: cannot create '" + (dir_ / "file").string()), std::string::npos)
        << e.what();
  }
}

TEST_F(RunDirTest, CheckpointEstimateAndRoomCheck) {
  models::ParamSpec a, b;
  a.global_shape = {512, 64};  // TP-split or not: the global tensor counts once
  b.global_shape = {64};
  const uint64_t n = 512 * 64 + 64, bytes = 12 * n;
  EXPECT_EQ(train::checkpoint_bytes_estimate({a, b}), bytes + bytes / 50 + (1u << 20));
  EXPECT_EQ(train::save_room_error(dir_.string(), "save-dir", 1 << 20), "");
  EXPECT_EQ(train::save_room_error((dir_ / "not" / "yet").string(), "save-dir", 1 << 20), "")
      << "a directory still to be created is checked where it will be";
  const std::string err = train::save_room_error(dir_.string(), "save-dir", uint64_t(1) << 62);
  EXPECT_NE(err.find("save-dir: '" + dir_.string() + "' has "), std::string::npos) << err;
  EXPECT_NE(err.find("MB free, but one checkpoint of this model needs about 4611686018427.4 MB"), std::string::npos)
      << err;
  std::ofstream(dir_ / "file") << "x";
  EXPECT_NE(train::save_room_error((dir_ / "file").string(), "save-dir", 1).find("is not a directory"),
            std::string::npos);
}

TEST(MetricsWriter, ARowThatDoesNotReachTheDiskThrowsNamingTheFile) {
  train::MetricsWriter m("/dev/full", true, true);
  try {
    m.write({{"step", 1}, {"loss", 5.0}});
    ADD_FAILURE() << "no error on a full disk";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("metrics: writing '/dev/full' failed: No space left on device"),
              std::string::npos)
        << e.what();
  }
  train::MetricsWriter off("/dev/full", false, true);
  EXPECT_NO_THROW(off.write({{"step", 1}}));
}
