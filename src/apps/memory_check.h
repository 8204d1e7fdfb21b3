// The memory check of `generate` before it allocates the model, so that a
// model that cannot fit is refused naming its file instead of ending in
// std::bad_alloc (or the kernel's OOM killer) later. The training jobs check
// their whole layout in train/plan.h.
#pragma once

#include <string>

namespace chorus::apps {

// Throws chorus::Error when `bytes` exceed memory_available() (core/meminfo.h):
// "<command> does not fit in memory: it needs X GB (<what>) but Y GB are available ...; reduce <flags>".
void check_memory_fits(const std::string& command, double bytes, const std::string& what,
                       const std::string& flags);

}  // namespace chorus::apps
