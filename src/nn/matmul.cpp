// Gradient rule: backward accumulates (+=) into parameter gradients and
// overwrites activation gradients (see matmul.h).
#include "nn/matmul.h"

#include <algorithm>

#include "backend/cpu/gemm.h"
#include "backend/cpu/gemv.h"
#include "backend/cpu/ops.h"
#include "core/error.h"
#include "nn/typed.h"

namespace chorus::nn {

namespace cpu = chorus::backend::cpu;

template <typename T>
void matmul_forward_f32(float* acc, const T* inp, const T* weight, const Same<T>* bias, int N, int C, int OC,
                        const Same<T>* residual) {
  float beta = 0.0f;
  if (bias != nullptr || residual != nullptr) {
    // Pre-fill the accumulator with bias (+ residual) and let the GEMM add onto
    // it: one write pass instead of a GEMM then an extra read-modify-write pass.
    cpu::add_row_broadcast(acc, residual, bias, N, OC);
    beta = 1.0f;
  }
  cpu::gemm_mixed(false, true, N, OC, C, 1.0f, inp, C, weight, C, beta, acc, OC);
}

template <typename T>
void matmul_forward(T* out, const T* inp, const T* weight, const Same<T>* bias, int N, int C, int OC,
                    const Same<T>* residual) {
  const size_t n = static_cast<size_t>(N) * OC;
  float* acc = f32_accumulator(out, n, cpu::kScratchAcc);
  matmul_forward_f32(acc, inp, weight, bias, N, C, OC, residual);
  commit(out, acc, n);
}

template <typename T>
void matmul_backward_f32(float* dinp_acc, float* dweight, float* dbias, const T* dout, const T* inp,
                         const T* weight, int N, int C, int OC) {
  if (dinp_acc != nullptr) cpu::gemm_mixed(false, false, N, C, OC, 1.0f, dout, OC, weight, C, 0.0f, dinp_acc, C);
  if (dweight != nullptr) cpu::gemm_mixed(true, false, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dweight, C);
  if (dbias != nullptr) cpu::col_sum_accumulate(dbias, dout, N, OC);
}

template <typename T>
void matmul_backward(Same<T>* dinp, float* dweight, float* dbias, const T* dout, const T* inp, const T* weight, int N,
                     int C, int OC) {
  const size_t n = static_cast<size_t>(N) * C;
  float* acc = dinp != nullptr ? f32_accumulator(dinp, n, cpu::kScratchAcc) : nullptr;
  matmul_backward_f32(acc, dweight, dbias, dout, inp, weight, N, C, OC);
  if (dinp != nullptr) commit(dinp, acc, n);
}

#define CHORUS_INSTANTIATE(T)                                                                                  \
  template void matmul_forward<T>(T*, const T*, const T*, const T*, int, int, int, const T*);                \
  template void matmul_forward_f32<T>(float*, const T*, const T*, const T*, int, int, int, const T*);        \
  template void matmul_backward<T>(T*, float*, float*, const T*, const T*, const T*, int, int, int);         \
  template void matmul_backward_f32<T>(float*, float*, float*, const T*, const T*, const T*, int, int, int);
CHORUS_INSTANTIATE(float)
CHORUS_INSTANTIATE(bf16)
CHORUS_INSTANTIATE(fp16)
#undef CHORUS_INSTANTIATE

const char* decode_weights_name(DecodeWeights w) {
  switch (w) {
    case DecodeWeights::bf16: return "bf16";
    case DecodeWeights::int8: return "int8";
    case DecodeWeights::w8a8: return "w8a8";
    case DecodeWeights::fp32: break;
  }
  return "fp32";
}

PackedWeight pack_weight(const float* W, int rows, int cols, DecodeWeights format) {
  CHORUS_CHECK(format != DecodeWeights::fp32, "pack_weight: fp32 needs no packed copy");
  PackedWeight w;
  w.format = format;
  w.rows = rows;
  w.cols = cols;
  const size_t n = static_cast<size_t>(rows) * cols;
  if (format != DecodeWeights::bf16) {
    w.q.resize(n);
    w.scale.resize(rows);
    cpu::quantize_rows_int8(W, rows, cols, static_cast<size_t>(cols), w.q.data(), w.scale.data());
  } else {
    w.h.resize(n);
    for (size_t i = 0; i < n; ++i) w.h[i] = from_f32<bf16>(W[i]);
  }
  return w;
}

void PackedWeight::row(int r, float* out) const {
  const size_t at = static_cast<size_t>(r) * cols;
  if (format != DecodeWeights::bf16)
    for (int c = 0; c < cols; ++c) out[c] = scale[r] * static_cast<float>(q[at + c]);
  else
    for (int c = 0; c < cols; ++c) out[c] = to_f32(h[at + c]);
}

void matmul_forward_packed(float* out, const float* inp, const PackedWeight& w, const float* bias, int N,
                           const float* residual) {
  const int OC = w.rows, C = w.cols;
  float beta = 0.0f;
  if (bias != nullptr || residual != nullptr) {
    cpu::add_row_broadcast<float>(out, residual, bias, N, OC);
    beta = 1.0f;
  }
  switch (w.format) {
    case DecodeWeights::int8: return cpu::gemm_rows_int8(N, inp, C, w.q.data(), w.scale.data(), OC, C, out, OC, beta);
    case DecodeWeights::w8a8: return cpu::gemm_rows_w8a8(N, inp, C, w.q.data(), w.scale.data(), OC, C, out, OC, beta);
    case DecodeWeights::bf16: return cpu::gemm_rows_bf16(N, inp, C, w.h.data(), OC, C, out, OC, beta);
    case DecodeWeights::fp32: break;
  }
  throw Error("matmul_forward_packed: the weight is not packed");
}

}  // namespace chorus::nn
