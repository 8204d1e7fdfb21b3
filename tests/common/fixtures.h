// Small helpers shared by unit tests: a temporary directory removed at the
// end, the message of the chorus::Error a call throws, a file's content, and
// a substring check.
// Header-only; include as "common/fixtures.h".
#pragma once

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "core/error.h"

namespace chorus::testing {

// A fresh directory under the system temp directory, removed at the end.
class TempDir {
 public:
  explicit TempDir(const std::string& tag = "chorus_test") {
    static int counter = 0;
    path_ = std::filesystem::temp_directory_path() /
            (tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

// The message of the chorus::Error that f throws ("" plus a test failure if none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const chorus::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected chorus::Error";
  return "";
}

// The whole content of a file ("" if it cannot be read).
inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace chorus::testing

#define EXPECT_CONTAINS(haystack, needle)                          \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) \
      << "'" << (haystack) << "' lacks '" << (needle) << "'"
