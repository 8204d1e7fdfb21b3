// CHORUS_CHECK: the message users see names no build-machine path; the
// source location is kept apart, relative to the source tree.
#include "core/error.h"

#include <gtest/gtest.h>

#include <string_view>

TEST(Error, MessageHasNoSourcePathAndLocationIsRelative) {
  try {
    CHORUS_CHECK(1 + 1 == 3, "batch: must be >= %d, got %d", 1, 0);
    FAIL() << "no throw";
  } catch (const chorus::Error& e) {
    EXPECT_STREQ(e.what(), "batch: must be >= 1, got 0");
    EXPECT_EQ(e.where().rfind("tests/core/error_test.cpp:", 0), 0u) << e.where();
  }
  static_assert(std::string_view(chorus::source_relative("/home/build/chorus/src/data/shard.cpp")) ==
                "src/data/shard.cpp");
  static_assert(std::string_view(chorus::source_relative("/a/src/x/tests/t.cpp")) == "tests/t.cpp");
  static_assert(std::string_view(chorus::source_relative("plain.cpp")) == "plain.cpp");
}
