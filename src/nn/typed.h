// How a layer written once for every storage dtype T (float, bf16, fp16)
// reads and writes its tensors (docs/DESIGN.md "Mixed precision"): inputs are
// viewed as fp32 (the tensor itself for float, a converted copy in per-thread
// scratch otherwise), all arithmetic and every reduction runs in fp32, and an
// output is computed into an fp32 accumulator (the output itself for float)
// that is rounded once into T. Parameter gradients are always fp32.
#pragma once

#include <cstddef>
#include <type_traits>

#include "backend/cpu/workspace.h"
#include "core/dtype.h"

namespace chorus::nn {

// T for parameters that must not take part in deduction (they may be nullptr).
template <typename T>
using Same = std::type_identity_t<T>;

template <typename T>
inline constexpr bool kIsF32 = std::is_same_v<T, float>;

// A read-only fp32 view of (rows, cols) values with leading dimension ld.
struct F32View {
  const float* p;
  int ld;
};

// fp32 view of rows of src (rows, cols, leading dimension ld): src itself for
// float, else a converted copy in `scratch` (rows * cols floats, ld = cols).
// Serial: for use inside parallel loops.
template <typename T>
inline F32View f32_rows(const T* src, int rows, int cols, int ld, float* scratch) {
  if constexpr (kIsF32<T>) {
    (void)rows, (void)cols, (void)scratch;
    return {src, ld};
  } else {
    for (int r = 0; r < rows; ++r)
      convert_serial(scratch + static_cast<size_t>(r) * cols, src + static_cast<size_t>(r) * ld, cols);
    return {scratch, cols};
  }
}

// Rounds fp32 rows (leading dimension ld_src) into dst (ld_dst); nothing to do
// for float when src is dst. Serial.
template <typename T>
inline void store_rows(T* dst, int ld_dst, const float* src, int ld_src, int rows, int cols) {
  if constexpr (kIsF32<T>) {
    if (dst == src) return;
  }
  for (int r = 0; r < rows; ++r)
    convert_serial(dst + static_cast<size_t>(r) * ld_dst, src + static_cast<size_t>(r) * ld_src, cols);
}

// An fp32 accumulator of n elements for an output of T: out itself for float,
// else this thread's scratch `slot`.
template <typename T>
inline float* f32_accumulator(T* out, size_t n, backend::cpu::ScratchSlot slot) {
  if constexpr (kIsF32<T>) {
    (void)n, (void)slot;
    return out;
  } else {
    (void)out;
    return backend::cpu::thread_scratch(slot, n);
  }
}

// Rounds the accumulator into out (parallel); a no-op when acc is out.
template <typename T>
inline void commit(T* out, const float* acc, size_t n) {
  if constexpr (kIsF32<T>) {
    if (out == acc) return;
  }
  convert(out, acc, n);
}

}  // namespace chorus::nn
