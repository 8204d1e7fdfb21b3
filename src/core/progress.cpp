#include "core/progress.h"

#include <unistd.h>

#include <cstdio>

namespace chorus {

ProgressBar::ProgressBar(std::string label, uint64_t total, std::string unit, bool enabled)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), enabled_(enabled),
      tty_(isatty(STDERR_FILENO) != 0), start_(std::chrono::steady_clock::now()), last_draw_(start_) {}

ProgressBar::~ProgressBar() { finish(); }

void ProgressBar::update(uint64_t done) {
  done_ = done;
  if (!enabled_ || finished_) return;
  auto now = std::chrono::steady_clock::now();
  if (tty_) {
    if (now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    draw(false);
  } else if (total_ > 0) {
    int decile = static_cast<int>(10.0 * static_cast<double>(done_) / static_cast<double>(total_));
    if (decile > last_decile_ && decile < 10) {
      last_decile_ = decile;
      draw(false);
    }
  }
}

void ProgressBar::finish() {
  if (!enabled_ || finished_) return;
  finished_ = true;
  draw(true);
}

static std::string human(double x) {
  const char* suffix[] = {"", "k", "M", "G", "T"};
  int i = 0;
  while (x >= 1000.0 && i < 4) { x /= 1000.0; ++i; }
  char buf[32];
  std::snprintf(buf, sizeof buf, i ? "%.1f%s" : "%.0f%s", x, suffix[i]);
  return buf;
}

void ProgressBar::draw(bool final) {
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  double rate = secs > 0 ? static_cast<double>(done_) / secs : 0.0;
  std::string line = label_;
  line += ' ';
  if (total_ > 0) {
    double frac = static_cast<double>(done_) / static_cast<double>(total_);
    if (frac > 1.0) frac = 1.0;
    const int width = 30;
    int filled = static_cast<int>(frac * width);
    line += '[';
    line.append(static_cast<size_t>(filled), '#');
    line.append(static_cast<size_t>(width - filled), '.');
    line += "] ";
    char pct[16];
    std::snprintf(pct, sizeof pct, "%3d%% ", static_cast<int>(100.0 * frac));
    line += pct;
    line += human(static_cast<double>(done_));
    line += '/';
    line += human(static_cast<double>(total_));
  } else {
    line += human(static_cast<double>(done_));
  }
  char tail[64];
  if (!final && total_ > 0 && rate > 0 && done_ < total_)
    std::snprintf(tail, sizeof tail, "/s, %.1fs, eta %.0fs)", secs, static_cast<double>(total_ - done_) / rate);
  else
    std::snprintf(tail, sizeof tail, "/s, %.1fs)", secs);
  line += ' ';
  line += unit_;
  line += " (";
  line += human(rate);
  line += ' ';
  line += unit_;
  line += tail;
  if (tty_) {
    std::fprintf(stderr, "\r%s\x1b[K%s", line.c_str(), final ? "\n" : "");
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  std::fflush(stderr);
}

}  // namespace chorus
