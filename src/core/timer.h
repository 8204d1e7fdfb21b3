// Wall-clock timing and process memory figures for the step log.
#pragma once

#include <chrono>
#include <cstdint>

namespace chorus {

class Timer {
 public:
  Timer() : start_(std::chrono::steady_clock::now()) {}
  void reset() { start_ = std::chrono::steady_clock::now(); }
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

// Peak resident set size of this process in bytes (getrusage).
uint64_t peak_rss_bytes();

}  // namespace chorus
