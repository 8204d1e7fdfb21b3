// Gradient rule: backward accumulates (+=) into parameter gradients and
// overwrites activation gradients (see embedding.h).
#include "nn/embedding.h"

#include <algorithm>
#include <cstdint>
#include <cstddef>

#include "core/dtype.h"

namespace chorus::nn {

template <typename T>
void embedding_forward(T* out, const int32_t* tokens, const T* wte, const T* wpe, int B, int Tn, int C) {
  const int n_rows = B * Tn;
#pragma omp parallel for schedule(static) if (static_cast <size_t>(n_rows) * C > (1u << 15))
  for (int r = 0; r < n_rows; ++r) {
    const int t = r % Tn;
    const T* te = wte + static_cast<size_t>(tokens[r]) * C;
    T* o = out + static_cast<size_t>(r) * C;
    if (wpe == nullptr) {  // no position table (rotary positions)
      std::copy_n(te, C, o);
      continue;
    }
    const T* pe = wpe + static_cast<size_t>(t) * C;
#pragma omp simd
    for (int c = 0; c < C; ++c) o[c] = from_f32<T>(to_f32(te[c]) + to_f32(pe[c]));
  }
}

template <typename T>
void embedding_backward(float* dwte, float* dwpe, const T* dout, const int32_t* tokens, int B, int Tn, int C) {
  embedding_backward_rows(dwte, dwpe, dout, tokens, 0, INT64_MAX, B, Tn, C);
}

template <typename T>
void embedding_backward_rows(float* dwte, float* dwpe, const T* dout, const int32_t* tokens, int64_t row_begin,
                           int64_t n_rows, int B, int Tn, int C) {
  // Split by column blocks so repeated tokens never race and the sum order is
  // fixed: each thread owns columns [c0, c0 + nc) of every row.
  constexpr int kBlock = 64;
  const int n_blocks = (C + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n_blocks > 1 && static_cast <size_t>(B) * Tn * C > (1u << 15))
  for (int blk = 0; blk < n_blocks; ++blk) {
    const int c0 = blk * kBlock;
    const int nc = std::min(kBlock, C - c0);
    for (int b = 0; b < B; ++b) {
      for (int t = 0; t < Tn; ++t) {
        const size_t i = static_cast<size_t>(b) * Tn + t;
        const T* d = dout + i * C + c0;
        if (dwpe != nullptr) {
          float* gpe = dwpe + static_cast<size_t>(t) * C + c0;
#pragma omp simd
          for (int c = 0; c < nc; ++c) gpe[c] += to_f32(d[c]);
        }
        const int64_t row = static_cast<int64_t>(tokens[i]) - row_begin;
        if (row < 0 || row >= n_rows) continue;
        float* gte = dwte + static_cast<size_t>(row) * C + c0;
#pragma omp simd
        for (int c = 0; c < nc; ++c) gte[c] += to_f32(d[c]);
      }
    }
  }
}

#define CHORUS_INSTANTIATE(T)                                                                          \
  template void embedding_forward<T>(T*, const int32_t*, const T*, const T*, int, int, int);               \
  template void embedding_backward<T>(float*, float*, const T*, const int32_t*, int, int, int);            \
  template void embedding_backward_rows<T>(float*, float*, const T*, const int32_t*, int64_t, int64_t, int, \
                                         int, int);
CHORUS_INSTANTIATE(float)
CHORUS_INSTANTIATE(bf16)
CHORUS_INSTANTIATE(fp16)
#undef CHORUS_INSTANTIATE

}  // namespace chorus::nn
