#include "apps/memory_check.h"

#include "core/error.h"
#include "core/meminfo.h"

namespace chorus::apps {

void check_memory_fits(const std::string& command, double bytes, const std::string& what,
                       const std::string& flags) {
  const uint64_t avail = memory_available();
  if (avail == 0 || bytes <= static_cast<double>(avail)) return;
  CHORUS_FAIL(
      "%s does not fit in memory: it needs %.1f GB (%s) but %.1f GB are available (MemAvailable, /proc/meminfo); "
      "reduce %s",
      command.c_str(), bytes / 1e9, what.c_str(), static_cast<double>(avail) / 1e9, flags.c_str());
}

}  // namespace chorus::apps
