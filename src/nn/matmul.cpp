// Gradient rule: backward accumulates (+=) into parameter gradients and
// overwrites activation gradients (see matmul.h).
#include "nn/matmul.h"

#include "backend/cpu/ops.h"

namespace chorus::nn {

namespace cpu = chorus::backend::cpu;

void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N, int C,
                    int OC, const float* residual) {
  float beta = 0.0f;
  if (bias != nullptr || residual != nullptr) {
    // Pre-fill out with bias (+ residual) and let the GEMM accumulate onto it:
    // one write pass instead of a GEMM then an extra read-modify-write pass.
    cpu::add_row_broadcast(out, residual, bias, N, OC);
    beta = 1.0f;
  }
  cpu::gemm(false, true, N, OC, C, 1.0f, inp, C, weight, C, beta, out, OC);
}

void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int N, int C, int OC) {
  if (dinp != nullptr) cpu::gemm(false, false, N, C, OC, 1.0f, dout, OC, weight, C, 0.0f, dinp, C);
  if (dweight != nullptr) cpu::gemm(true, false, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dweight, C);
  if (dbias != nullptr) cpu::col_sum_accumulate(dbias, dout, N, OC);
}

}  // namespace chorus::nn
