// Shared by the libFuzzer targets in tests/fuzz (see run_fuzz.sh).
//
// The contract every target checks: a parser given hostile bytes either
// returns a value or throws chorus::Error (a refusal with a message). Any other
// exception escapes LLVMFuzzerTestOneInput and aborts, which libFuzzer reports
// as a crash, as it does a sanitizer report or a failed FUZZ_ASSERT.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/error.h"

namespace chorus::fuzz {

// Aborts (a libFuzzer crash) when a property of an accepted input fails.
#define FUZZ_ASSERT(cond)                                                                  \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      std::fprintf(stderr, "FUZZ_ASSERT failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
      std::abort();                                                                        \
    }                                                                                      \
  } while (0)

// A private directory for the files a target must write (readers that take a
// path), created once per process and removed at exit. Under /dev/shm when it
// exists, so writing one file per input costs no disk I/O.
inline const std::string& scratch_dir() {
  static const std::string dir = [] {
    std::string tmpl =
        (access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp") + std::string("/chorus-fuzz-XXXXXX");
    if (!mkdtemp(tmpl.data())) std::abort();
    static std::string removed;
    removed = tmpl;
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(removed, ec);
    });
    return tmpl;
  }();
  return dir;
}

// Writes `n` bytes to scratch_dir()/name and returns the path.
inline std::string write_scratch(const std::string& name, const uint8_t* data, size_t n) {
  const std::string path = scratch_dir() + "/" + name;
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(n));
  f.close();
  if (!f) std::abort();
  return path;
}

// Runs fn; a chorus::Error is an accepted outcome (returns false), success
// returns true, anything else propagates.
template <class F>
bool accepts(F&& fn) {
  try {
    fn();
    return true;
  } catch (const Error&) {
    return false;
  }
}

}  // namespace chorus::fuzz
