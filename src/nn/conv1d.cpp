// Gradient rule: backward accumulates (+=) into parameter gradients and
// overwrites activation gradients (see conv1d.h).
#include "nn/conv1d.h"

#include <algorithm>

#include "backend/cpu/gemm.h"
#include "backend/cpu/ops.h"
#include "core/error.h"

namespace chorus::nn {

namespace cpu = chorus::backend::cpu;

namespace {

struct Conv {
  int B, Tin, Cin, Cout, K, stride, pad, Tout;
  int CK() const { return Cin * K; }
  size_t n_rows() const { return static_cast<size_t>(B) * Tout; }
  // im2col is the identity: out = in @ w^T directly.
  bool pointwise() const { return K == 1 && stride == 1 && pad == 0; }
  // Output positions per im2col tile.
  size_t tile_rows() const {
    return std::clamp(kConv1dTileElems / static_cast<size_t>(CK()), size_t{1}, n_rows());
  }
};

Conv check_conv(int B, int Tin, int Cin, int Cout, int K, int stride, int pad) {
  CHORUS_CHECK(B >= 0 && Tin >= 1 && Cin >= 1 && Cout >= 1 && K >= 1 && pad >= 0,
               "conv1d: B=%d Tin=%d Cin=%d Cout=%d K=%d pad=%d: expected positive sizes and pad >= 0", B, Tin,
               Cin, Cout, K, pad);
  return {B, Tin, Cin, Cout, K, stride, pad, conv1d_out_len(Tin, K, stride, pad)};
}

// This thread's im2col tile of n elements of T (grow-only scratch).
template <typename T>
T* tile_scratch(size_t n) {
  return reinterpret_cast<T*>(cpu::thread_scratch(cpu::kScratchIm2col, (n * sizeof(T) + 3) / 4));
}

// cols (r1 - r0, Cin*K): rows [r0, r1) of the im2col matrix of in.
template <typename T>
void im2col(T* cols, const T* in, const Conv& c, size_t r0, size_t r1) {
  const int CK = c.CK(), K = c.K, Cin = c.Cin;
  const long n = static_cast<long>(r1 - r0);
#pragma omp parallel for schedule(static) if (static_cast <size_t>(n) * CK > (1u << 15))
  for (long i = 0; i < n; ++i) {
    const size_t r = r0 + i;
    const int b = static_cast<int>(r / c.Tout), to = static_cast<int>(r % c.Tout);
    T* dst = cols + static_cast<size_t>(i) * CK;
    for (int k = 0; k < K; ++k) {
      const int ti = to * c.stride - c.pad + k;
      if (ti < 0 || ti >= c.Tin) {
        for (int ci = 0; ci < Cin; ++ci) dst[ci * K + k] = from_f32<T>(0.0f);
      } else {
        const T* src = in + (static_cast<size_t>(b) * c.Tin + ti) * Cin;
        for (int ci = 0; ci < Cin; ++ci) dst[ci * K + k] = src[ci];
      }
    }
  }
}

// din_acc (B, Tin, Cin) += col2im of dcols, the gradient of im2col rows
// [r0, r1). Each thread gathers into its own input rows (no races).
void col2im_add(float* din_acc, const float* dcols, const Conv& c, size_t r0, size_t r1) {
  const int CK = c.CK(), K = c.K, Cin = c.Cin;
  // Input rows of the items this tile touches.
  const long g0 = static_cast<long>(r0 / c.Tout) * c.Tin,
             g1 = static_cast<long>((r1 - 1) / c.Tout + 1) * c.Tin;
#pragma omp parallel for schedule(static) if (static_cast <size_t>(g1 - g0) * Cin > (1u << 15))
  for (long g = g0; g < g1; ++g) {
    const long b = g / c.Tin;
    const int ti = static_cast<int>(g % c.Tin);
    float* dst = din_acc + static_cast<size_t>(g) * Cin;
    for (int k = 0; k < K; ++k) {
      const int num = ti + c.pad - k;  // = to * stride
      if (num < 0 || num % c.stride != 0 || num / c.stride >= c.Tout) continue;
      const size_t r = static_cast<size_t>(b) * c.Tout + num / c.stride;
      if (r < r0 || r >= r1) continue;
      const float* src = dcols + (r - r0) * CK + k;
      for (int ci = 0; ci < Cin; ++ci) dst[ci] += src[static_cast<size_t>(ci) * K];
    }
  }
}

}  // namespace

int conv1d_out_len(int Tin, int K, int stride, int pad) {
  CHORUS_CHECK(stride >= 1 && Tin + 2 * pad >= K,
               "conv1d: Tin=%d with pad=%d is shorter than the kernel K=%d (or stride %d < 1)", Tin, pad, K,
               stride);
  return (Tin + 2 * pad - K) / stride + 1;
}

template <typename T>
void conv1d_forward(T* out, const T* in, const Same<T>* w, const Same<T>* b, int B, int Tin, int Cin,
                    int Cout, int K, int stride, int pad) {
  const Conv c = check_conv(B, Tin, Cin, Cout, K, stride, pad);
  const size_t N = c.n_rows(), n_out = N * Cout;
  if (N == 0) return;
  const int CK = c.CK();
  float* acc = f32_accumulator(out, n_out, cpu::kScratchAcc);
  float beta = 0.0f;
  if (b != nullptr) {
    cpu::add_row_broadcast<T>(acc, nullptr, b, static_cast<int>(N), Cout);
    beta = 1.0f;
  }
  if (c.pointwise()) {
    cpu::gemm_mixed(false, true, static_cast<int>(N), Cout, Cin, 1.0f, in, Cin, w, Cin, beta, acc, Cout);
  } else {
    const size_t tile = c.tile_rows();
    T* cols = tile_scratch<T>(tile * CK);
    for (size_t r0 = 0; r0 < N; r0 += tile) {
      const size_t r1 = std::min(N, r0 + tile);
      im2col(cols, in, c, r0, r1);
      // out[r0:r1] (+)= cols @ w^T, w as (Cout, Cin*K)
      cpu::gemm_mixed(false, true, static_cast<int>(r1 - r0), Cout, CK, 1.0f, cols, CK, w, CK, beta,
                      acc + r0 * Cout, Cout);
    }
  }
  commit(out, acc, n_out);
}

template <typename T>
void conv1d_backward(T* din, float* dw, float* db, const T* dout, const T* in, const Same<T>* w, int B,
                     int Tin, int Cin, int Cout, int K, int stride, int pad) {
  const Conv c = check_conv(B, Tin, Cin, Cout, K, stride, pad);
  const size_t N = c.n_rows(), n_in = static_cast<size_t>(B) * Tin * Cin;
  const int CK = c.CK();
  if (db != nullptr && N > 0) cpu::col_sum_accumulate(db, dout, static_cast<int>(N), Cout);
  if (c.pointwise()) {
    if (dw != nullptr && N > 0)
      cpu::gemm_mixed(true, false, Cout, Cin, static_cast<int>(N), 1.0f, dout, Cout, in, Cin, 1.0f, dw, Cin);
    if (din != nullptr && N > 0) {
      float* acc = f32_accumulator(din, n_in, cpu::kScratchAcc);
      cpu::gemm_mixed(false, false, static_cast<int>(N), Cin, Cout, 1.0f, dout, Cout, w, Cin, 0.0f, acc, Cin);
      commit(din, acc, n_in);
    }
    return;
  }
  float* acc = nullptr;
  if (din != nullptr) {
    acc = f32_accumulator(din, n_in, cpu::kScratchAcc);
    cpu::fill(acc, 0.0f, n_in);  // input positions no output sees (stride > K) get 0
  }
  if (N > 0 && (dw != nullptr || din != nullptr)) {
    const size_t tile = c.tile_rows();
    T* cols = dw != nullptr ? tile_scratch<T>(tile * CK) : nullptr;
    float* dcols = din != nullptr ? cpu::thread_scratch(cpu::kScratchIm2colGrad, tile * CK) : nullptr;
    for (size_t r0 = 0; r0 < N; r0 += tile) {
      const size_t r1 = std::min(N, r0 + tile);
      const int rows = static_cast<int>(r1 - r0);
      const T* dy = dout + r0 * Cout;
      if (dw != nullptr) {
        // dw (Cout, Cin*K) += dout[r0:r1]^T @ cols
        im2col(cols, in, c, r0, r1);
        cpu::gemm_mixed(true, false, Cout, CK, rows, 1.0f, dy, Cout, cols, CK, 1.0f, dw, CK);
      }
      if (din != nullptr) {
        // dcols = dout[r0:r1] @ w, then scattered back onto the input positions
        cpu::gemm_mixed(false, false, rows, CK, Cout, 1.0f, dy, Cout, w, CK, 0.0f, dcols, CK);
        col2im_add(acc, dcols, c, r0, r1);
      }
    }
  }
  if (din != nullptr) commit(din, acc, n_in);
}

#define CHORUS_INSTANTIATE(T)                                                                            \
  template void conv1d_forward<T>(T*, const T*, const T*, const T*, int, int, int, int, int, int, int);  \
  template void conv1d_backward<T>(T*, float*, float*, const T*, const T*, const T*, int, int, int, int, \
                                   int, int, int);
CHORUS_INSTANTIATE(float)
CHORUS_INSTANTIATE(bf16)
CHORUS_INSTANTIATE(fp16)
#undef CHORUS_INSTANTIATE

}  // namespace chorus::nn
