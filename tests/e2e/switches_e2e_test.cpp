// The fault-injection switches of the release binary (docs/RELIABILITY.md):
// `pretrain --help` names them, and a run with one set says so in a warning
// before it fails as asked.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "common/process.h"

namespace fs = std::filesystem;
using chorus::testing::Result;

TEST(Switches, PretrainHelpNamesThemAndARunWarnsWhenOneIsSet) {
  const Result help = chorus::testing::chorus("pretrain --help");
  ASSERT_EQ(help.code, 0) << help.out;
  for (const char* name :
       {"CHORUS_FAIL_AT", "CHORUS_CKPT_KILL_AT", "CHORUS_INJECT_INF", "CHORUS_INJECT_NAN_LOSS", "CHORUS_STEP_DELAY_MS"})
    EXPECT_NE(help.out.find(name), std::string::npos) << name << " not in:\n" << help.out;
  EXPECT_NE(help.out.find("docs/RELIABILITY.md"), std::string::npos) << help.out;

  const fs::path dir = fs::temp_directory_path() / ("chorus_switches_e2e_" + std::to_string(getpid()));
  fs::remove_all(dir);
  ASSERT_EQ(chorus::testing::make_corpus(dir, {"en"}, 512), "");
  const Result r =
      chorus::testing::sh("CHORUS_FAIL_AT=0:1 " + std::string(CHORUS_BINARY) + " pretrain --quiet --config " +
                          std::string(CHORUS_SOURCE_DIR) + "/configs/gpt-tiny.ini --tokenizer " +
                          (dir / "tok.json").string() + " --data " + (dir / "shards").string() +
                          " --run-dir " + (dir / "run").string() + " --steps 3 --peak-gflops 100");
  fs::remove_all(dir);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("warning: CHORUS_FAIL_AT=0:1 is set: a fault-injection switch for the tests"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("injected failure at step 1 (CHORUS_FAIL_AT)"), std::string::npos) << r.out;
}

TEST(Switches, AMalformedStepDelayIsRefusedNamingTheVariable) {
  const Result r = chorus::testing::sh("CHORUS_STEP_DELAY_MS=20x " + std::string(CHORUS_BINARY) +
                                       " pretrain --config " + std::string(CHORUS_SOURCE_DIR) +
                                       "/configs/gpt-tiny.ini --tokenizer t.json --data d --run-dir r");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("CHORUS_STEP_DELAY_MS: expected milliseconds from 0 to 60000, got '20x'"), std::string::npos)
      << r.out;
}
