// Inputs found by the fuzz targets (tests/fuzz, docs/RELIABILITY.md "Fuzzing")
// through the chorus executable: each is refused promptly with a message, not
// a hang or a crash. (The fuzz run replays the same inputs from
// tests/fuzz/corpus/*/regress-*.)
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "common/fixtures.h"
#include "common/process.h"

namespace {

using chorus::testing::Result;

// Bounded: before the fix these never returned.
Result run(const std::string& args) {
  return chorus::testing::sh("timeout 60 " + std::string(CHORUS_BINARY) + " " + args);
}

// Boost.Program_options replaced "%value%" in its message with the value
// "%value%" forever: a flag or config value with a placeholder hung chorus.
TEST(FuzzFindings, FlagValueWithAnOptionParserPlaceholderIsRefused) {
  const Result r = run("pretrain --n-layer %value%");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("argument 2 ('%value%') contains '%value%'"), std::string::npos) << r.out;
  const Result u = run("pretrain --nope%canonical_option%");
  EXPECT_EQ(u.code, 1) << u.out;
  EXPECT_NE(u.out.find("contains '%canonical_option%'"), std::string::npos) << u.out;
}

TEST(FuzzFindings, ConfigWithAnOptionParserPlaceholderIsRefused) {
  chorus::testing::TempDir dir;
  const std::string ini = dir.file("bad.ini");
  std::ofstream(ini) << "[model]\nn-layer = %value%\n";
  const Result r = run("pretrain --config " + ini);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("config '" + ini + "' contains '%value%'"), std::string::npos) << r.out;
}

}  // namespace
