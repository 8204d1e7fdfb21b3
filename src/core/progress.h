// A terminal progress bar for long data jobs (tokenizer training, sharding).
// Draws to stderr at most ~10 times a second; on a non-terminal (CI logs) it
// prints a plain line every 10 % instead of carriage-return redraws.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace chorus {

class ProgressBar {
 public:
  // label: what is being counted; total: expected final count (0 = unknown);
  // unit: shown after the rate ("B", "tok", "merges"); enabled: false silences it.
  ProgressBar(std::string label, uint64_t total, std::string unit, bool enabled = true);
  ~ProgressBar();
  void update(uint64_t done);     // absolute progress
  void add(uint64_t delta) { update(done_ + delta); }
  void finish();                  // draw the final state and a newline (idempotent)

 private:
  void draw(bool final);
  std::string label_, unit_;
  uint64_t total_, done_ = 0;
  bool enabled_, tty_, finished_ = false;
  int last_decile_ = -1;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace chorus
