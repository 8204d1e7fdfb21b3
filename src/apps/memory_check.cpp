#include "apps/memory_check.h"

#include <unistd.h>

#include <fstream>
#include <sstream>

#include "core/error.h"

namespace chorus::apps {

uint64_t memory_available() {
  std::ifstream in("/proc/meminfo");
  for (std::string line; std::getline(in, line);) {
    std::istringstream ls(line);
    std::string key;
    uint64_t kb = 0;
    if (ls >> key >> kb && key == "MemAvailable:") return kb * 1024;
  }
  const long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) : 0;
}

double gpt_bytes_lower_bound(int n_layer, int n_embd, int vocab, int context, int batch, int seq, bool train,
                             int tp) {
  const double L = n_layer, C = n_embd, V = vocab, tokens = double(batch) * double(seq);
  // Per block: attention (4 C^2) and MLP (8 C^2) matrices; embeddings (V + context) x C.
  const double params = (L * 12.0 * C * C) / tp + (V + context) * C;
  const double per_param = train ? 16.0 : 4.0;  // weights (+ gradients + Adam m and v), fp32
  // Saved per token and layer at least: the block input, q/k/v, the attention
  // output and the 4C-wide MLP activation (fp32); then the logits.
  const double acts = tokens * (L * (C + 3.0 * C + C + 4.0 * C) / tp + V) * 4.0;
  return params * per_param + acts;
}

void check_memory_fits(const std::string& command, double bytes, const std::string& what,
                       const std::string& flags) {
  const uint64_t avail = memory_available();
  if (avail == 0 || bytes <= static_cast<double>(avail)) return;
  CHORUS_FAIL(
      "%s does not fit in memory: it needs at least %.1f GB per process (%s) but %.1f GB are available "
      "(MemAvailable, /proc/meminfo); reduce %s",
      command.c_str(), bytes / 1e9, what.c_str(), static_cast<double>(avail) / 1e9, flags.c_str());
}

}  // namespace chorus::apps
