#include "backend/cpu/workspace.h"

#include <array>
#include <atomic>

#include "backend/cpu/buffer.h"

namespace chorus::backend::cpu {
namespace {
std::atomic<size_t> g_total_bytes{0};

struct ThreadScratch {
  std::array<AlignedBuffer, kScratchSlots> slots;
  ~ThreadScratch() {
    for (auto& b : slots) g_total_bytes -= b.size() * sizeof(float);
  }
};
}  // namespace

float* thread_scratch(ScratchSlot slot, size_t n) {
  thread_local ThreadScratch scratch;
  AlignedBuffer& b = scratch.slots[slot];
  if (b.size() < n) {
    const size_t old = b.size();
    b = AlignedBuffer();  // free first: peak memory is the new size, not both
    // Grow by at least 1/8 so a slowly rising size does not reallocate each call.
    b = AlignedBuffer(n + n / 8);
    g_total_bytes += (b.size() - old) * sizeof(float);
  }
  return b.data();
}

size_t scratch_bytes() { return g_total_bytes.load(); }

}  // namespace chorus::backend::cpu
