// What run directories are made of (core/): floats as given in JSON, atomic
// small-file writes that report a full disk, the recorded command line and
// Slurm job, the version, log lines that cannot be written.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/fixtures.h"
#include "core/error.h"
#include "core/fsync.h"
#include "core/json_number.h"
#include "core/log.h"
#include "core/process_info.h"
#include "core/version.h"

namespace fs = std::filesystem;
using namespace chorus;

namespace {

using chorus::testing::slurp;

fs::path scratch(const char* name) {
  const fs::path d = fs::temp_directory_path() / (std::string("chorus_run_record_") + name + "_" +
                                                  std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

}  // namespace

TEST(JsonFloat, WritesTheShortestDecimalThatReadsBackAsTheFloat) {
  EXPECT_EQ(nlohmann::json(0.9f).dump(), "0.8999999761581421");  // the bug it fixes
  EXPECT_EQ(nlohmann::json(json_float(0.9f)).dump(), "0.9");
  EXPECT_EQ(nlohmann::json(json_float(0.95f)).dump(), "0.95");
  EXPECT_EQ(nlohmann::json(json_float(6e-4f)).dump(), "0.0006");
  EXPECT_EQ(nlohmann::json(json_float(1e-8f)).dump(), "1e-08");
  EXPECT_EQ(nlohmann::json(json_float(3.0f)).dump(), "3.0");
  EXPECT_EQ(nlohmann::json(json_float(-0.1f)).dump(), "-0.1");
  // Round trip: reading the JSON back and narrowing gives the same float, for
  // every float of a sweep over magnitudes.
  for (float f = 1e-30f; f < 1e30f; f *= 1.37f) {
    const double d = nlohmann::json::parse(nlohmann::json(json_float(f)).dump()).get<double>();
    EXPECT_EQ(static_cast<float>(d), f);
  }
  EXPECT_TRUE(std::isinf(json_float(INFINITY)));
  EXPECT_TRUE(std::isnan(json_float(NAN)));
}

TEST(WriteFileAtomic, ReplacesTheFileAndReportsAFullDiskLeavingTheOldOne) {
  const fs::path d = scratch("atomic");
  const std::string path = (d / "config.json").string();
  write_file_atomic(path, "one\n");
  EXPECT_EQ(slurp(path), "one\n");
  write_file_atomic(path, "two\n");
  EXPECT_EQ(slurp(path), "two\n");
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  // The temporary file on a full disk: /dev/full fails every write with ENOSPC.
  fs::create_symlink("/dev/full", path + ".tmp");
  try {
    write_file_atomic(path, "three\n");
    ADD_FAILURE() << "no error on a full disk";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path + ".tmp: writing failed: No space left on device (" + path +
                                         " is unchanged)"),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(slurp(path), "two\n");
  EXPECT_FALSE(fs::exists(fs::symlink_status(path + ".tmp")));
  EXPECT_THROW(write_file_atomic((d / "no" / "such" / "dir.json").string(), "x"), Error);
  fs::remove_all(d);
}

TEST(ProcessInfo, CommandLineIsShellQuotedAndSlurmIsRecordedWhenSet) {
  const char* args[] = {"chorus", "pretrain", "--lr", "3e-4", "--run-dir", "my runs/it's", ""};
  record_command_line(7, const_cast<char**>(args));
  EXPECT_EQ(command_line(), "chorus pretrain --lr 3e-4 --run-dir 'my runs/it'\\''s' ''");
  ::unsetenv("SLURM_JOB_ID");
  ::unsetenv("SLURM_RESTART_COUNT");
  EXPECT_TRUE(slurm_job().is_null());
  ::setenv("SLURM_JOB_ID", "123", 1);
  ::setenv("SLURM_RESTART_COUNT", "4", 1);
  EXPECT_EQ(slurm_job(), nlohmann::json({{"job_id", "123"}, {"restart_count", "4"}}));
  ::unsetenv("SLURM_JOB_ID");
  ::unsetenv("SLURM_RESTART_COUNT");
  EXPECT_FALSE(host_name().empty());
  EXPECT_EQ(utc_now().size(), 20u);  // 2026-12-02T04:01:40Z
}

TEST(Version, IsTheProjectVersionAndARevision) {
  EXPECT_STREQ(version(), "0.1.0");
  const std::string rev = git_revision();
  EXPECT_TRUE(rev == "unknown" || rev.size() == 12 || rev.size() == 18) << rev;
  EXPECT_EQ(version_line(), std::string("chorus 0.1.0 (git ") + rev + ")");
}

TEST(Log, ALineThatCannotBeWrittenThrowsNamingTheStream) {
  std::fflush(stdout);
  const int saved = ::dup(1);
  ASSERT_TRUE(std::freopen("/dev/full", "w", stdout) != nullptr);
  std::string what;
  try {
    log_info("a step line");
  } catch (const Error& e) {
    what = e.what();
  }
  std::fflush(stdout);
  std::clearerr(stdout);
  ::dup2(saved, 1);
  ::close(saved);
  EXPECT_NE(what.find("log: writing to stdout failed: No space left on device"), std::string::npos) << what;
}
