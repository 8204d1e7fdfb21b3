// Lays out named (pointer, numel) slots of any element type in one buffer,
// each slot starting on a 64-byte boundary: a model sizes its whole
// activation table with add(), allocates once, then bind() points every slot
// into the allocation (llm.c style; a training step allocates nothing).
#pragma once

#include <cstddef>
#include <vector>

namespace chorus::backend::cpu {

class Arena {
 public:
  template <typename U>
  void add(U** slot, size_t numel) {
    slots_.push_back({reinterpret_cast<void**>(slot), total_});
    total_ += (numel * sizeof(U) + 63) / 64 * 64;
  }
  size_t bytes() const { return total_; }
  void bind(void* base) const {
    for (const auto& s : slots_) *s.slot = static_cast<char*>(base) + s.offset;
  }

 private:
  struct Slot {
    void** slot;
    size_t offset;  // bytes
  };
  std::vector<Slot> slots_;
  size_t total_ = 0;
};

}  // namespace chorus::backend::cpu
