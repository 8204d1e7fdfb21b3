// Grow-only scratch buffers for the mixed-precision paths: the fp32
// accumulators a bf16/fp16 layer computes into before rounding its output, and
// the fp32 rows it converts its inputs into. Each (thread, slot) pair owns one
// 64-byte aligned buffer that only ever grows, so after the first step of a
// given shape a training step allocates nothing. A pointer stays valid until
// the same thread asks for the same slot with a larger size.
#pragma once

#include <cstddef>

namespace chorus::backend::cpu {

// Slots: one per concurrent use. A function that holds one slot's pointer
// must not call code that asks for the same slot on the same thread.
enum ScratchSlot {
  kScratchAcc,      // a layer's fp32 output accumulator (B*T rows)
  kScratchAcc2,     // a second accumulator (e.g. the LM-head input gradient)
  kScratchRowIn,    // fp32 copy of an input row / tile
  kScratchRowIn2,
  kScratchRowOut,   // fp32 output row / tile before rounding
  kScratchAttnP,    // attention: one head's (Tq, Tk) probabilities
  kScratchAttnDS,   // attention: one head's (Tq, Tk) score gradient
  kScratchAttnQKV,  // attention: one head's q, k, v (and dy) in fp32
  kScratchAttnGrad, // attention: one head's dq, dk, dv in fp32
  kScratchIm2col,     // conv1d: an im2col tile, stored in the layer's dtype
  kScratchIm2colGrad, // conv1d: the fp32 gradient of an im2col tile
  kScratchSlots
};

// At least n floats of this thread's buffer for `slot` (contents arbitrary).
float* thread_scratch(ScratchSlot slot, size_t n);

// Bytes held by all scratch buffers of all threads (for the memory report).
size_t scratch_bytes();

}  // namespace chorus::backend::cpu
