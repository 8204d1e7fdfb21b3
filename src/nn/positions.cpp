#include "nn/positions.h"

#include <cmath>
#include <cstddef>

#include "core/dtype.h"
#include "core/error.h"

namespace chorus::nn {

void sinusoidal_positions(float* out, int n_pos, int C) {
  CHORUS_CHECK(C >= 4 && C % 2 == 0, "sinusoidal_positions: C = %d, expected an even width >= 4", C);
  CHORUS_CHECK(n_pos >= 0, "sinusoidal_positions: n_pos = %d, expected >= 0", n_pos);
  const int half = C / 2;
  const double increment = std::log(10000.0) / (half - 1);
#pragma omp parallel for schedule(static) if (static_cast <size_t>(n_pos) * C > (1u << 15))
  for (int t = 0; t < n_pos; ++t) {
    float* row = out + static_cast<size_t>(t) * C;
    for (int i = 0; i < half; ++i) {
      const double a = t * std::exp(-increment * i);
      row[i] = static_cast<float>(std::sin(a));
      row[half + i] = static_cast<float>(std::cos(a));
    }
  }
}

template <typename T>
void add_positions(T* x, const float* pos, int B, int Tn, int C) {
  const long n_rows = static_cast<long>(B) * Tn;
#pragma omp parallel for schedule(static) if (static_cast <size_t>(n_rows) * C > (1u << 15))
  for (long r = 0; r < n_rows; ++r) {
    T* row = x + static_cast<size_t>(r) * C;
    const float* p = pos + static_cast<size_t>(r % Tn) * C;
    for (int c = 0; c < C; ++c) row[c] = from_f32<T>(to_f32(row[c]) + p[c]);
  }
}

template void add_positions<float>(float*, const float*, int, int, int);
template void add_positions<bf16>(bf16*, const float*, int, int, int);
template void add_positions<fp16>(fp16*, const float*, int, int, int);

}  // namespace chorus::nn
