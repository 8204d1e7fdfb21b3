// What the machine has: the memory checks before a job allocates
// (train/plan.h, apps/memory_check.h) compare their sizes with it.
#pragma once

#include <cstdint>

namespace chorus {

// Bytes the kernel says can be allocated now: MemAvailable of /proc/meminfo,
// else free + cached pages from sysconf; 0 when unknown.
uint64_t memory_available();

}  // namespace chorus
