#include "optim/muon.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "backend/cpu/ops.h"
#include "core/error.h"

namespace chorus::optim {

const char* optimizer_name(OptimizerKind k) { return k == OptimizerKind::muon ? "muon" : "adamw"; }

OptimizerKind parse_optimizer(const std::string& s) {
  if (s == "adamw") return OptimizerKind::adamw;
  CHORUS_CHECK(s == "muon", "optimizer: expected adamw or muon, got '%s'", s.c_str());
  return OptimizerKind::muon;
}

size_t ns_scratch_floats(int64_t rows, int64_t cols) {
  const size_t r = static_cast<size_t>(std::min(rows, cols)), c = static_cast<size_t>(std::max(rows, cols));
  return 2 * r * c + 2 * r * r;  // X, the next X, A, B
}

float muon_scale(int64_t rows, int64_t cols) {
  return std::sqrt(std::max(1.0f, static_cast<float>(rows) / static_cast<float>(cols)));
}

void newton_schulz5(float* x, int64_t rows, int64_t cols, int steps, float* scratch) {
  CHORUS_CHECK(rows > 0 && cols > 0, "newton_schulz5: empty matrix (%lld, %lld)", static_cast<long long>(rows),
               static_cast<long long>(cols));
  const bool tall = rows > cols;
  const int r = static_cast<int>(std::min(rows, cols)), c = static_cast<int>(std::max(rows, cols));
  const size_t rc = static_cast<size_t>(r) * c;
  float* X = scratch;
  float* Y = X + rc;
  float* A = Y + rc;
  float* B = A + static_cast<size_t>(r) * r;
  double ss = 0.0;
  for (size_t i = 0; i < rc; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float inv = static_cast<float>(1.0 / (std::sqrt(ss) + 1e-7));
  if (tall) {  // X (cols, rows) = x^T
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) X[j * rows + i] = x[i * cols + j] * inv;
  } else {
    for (size_t i = 0; i < rc; ++i) X[i] = x[i] * inv;
  }
  for (int s = 0; s < steps; ++s) {
    backend::cpu::gemm(false, true, r, r, c, 1.0f, X, c, X, c, 0.0f, A, r);  // A = X X^T (r, r)
    backend::cpu::gemm(false, false, r, r, r, kNsC, A, r, A, r, 0.0f, B, r);  // B = c A A
    for (size_t i = 0; i < static_cast<size_t>(r) * r; ++i) B[i] += kNsB * A[i];  // + b A
    std::copy(X, X + rc, Y);
    backend::cpu::gemm(false, false, r, c, r, 1.0f, B, r, X, c, kNsA, Y, c);  // Y = a X + B X
    std::swap(X, Y);
  }
  if (tall) {
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) x[i * cols + j] = X[j * rows + i];
  } else {
    std::copy(X, X + rc, x);
  }
}

}  // namespace chorus::optim
