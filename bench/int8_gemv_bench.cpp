// Decoding's matrix-vector products: OpenBLAS cblas_sgemv, our fp32 loop
// (backend::cpu::gemv_f32, the int8 kernel's loop on fp32 weights), the same
// through backend::cpu::gemm with M = 1 (what decoding calls) and weight-only
// int8 (backend::cpu::gemv_int8),
// on the shapes of the speech bench's decoder (d 384) and its 51,865-token
// LM head. Prints microseconds per product, effective weight bandwidth and the
// speed-up, per thread count. A second table: a beam of M rows through each
// packed format decoding offers (gemm_rows_f32 / _bf16 / _int8 / _w8a8, M = 1,
// 8, 32; the quickstart's 8,192-token LM head). Build: cmake --build build --target int8_gemv_bench;
// run: build/bin/int8_gemv_bench [threads...] (default 1 2).
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "backend/cpu/gemm.h"
#include "backend/cpu/gemv.h"
#include "backend/cpu/ops.h"
#include "core/dtype.h"

using namespace chorus::backend::cpu;

namespace {

template <class F>
double best_us(F f, double min_secs = 0.3) {
  f();
  double best = 1e30, spent = 0;
  while (spent < min_secs) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::min(best, s);
    spent += s;
  }
  return best * 1e6;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> threads;
  for (int i = 1; i < argc; ++i) threads.push_back(std::atoi(argv[i]));
  if (threads.empty()) threads = {1, 2};
  std::printf("cpu: %s\nint8 path: %s\n", cpu_features_string().c_str(), gemv_int8_path());
  struct Shape {
    const char* what;
    int rows, cols;
  };
  const Shape shapes[] = {{"attn qkv (3C, C)", 1152, 384}, {"mlp up (4C, C)", 1536, 384},
                          {"mlp down (C, 4C)", 384, 1536}, {"lm head (V, C)", 51904, 384}};
  std::mt19937 g(1);
  std::normal_distribution<float> n(0.0f, 0.02f);
  std::printf("%-18s %7s %10s %10s %10s %10s %10s %10s %9s %9s\n", "product", "threads", "sgemv us", "f32loop us",
              "gemm us", "int8 us", "sgemv GB/s", "int8 GB/s", "vs sgemv", "vs gemm");
  for (int t : threads) {
    set_n_threads(t);
    for (const Shape& s : shapes) {
      std::vector<float> W(static_cast<size_t>(s.rows) * s.cols), x(s.cols), y(s.rows);
      for (float& v : W) v = n(g);
      for (float& v : x) v = n(g);
      std::vector<int8_t> q(W.size());
      std::vector<float> scale(s.rows);
      quantize_rows_int8(W.data(), s.rows, s.cols, s.cols, q.data(), scale.data());
      // y (1, rows) = x (1, cols) @ W^T: the decode step's call.
      const double f32 = best_us([&] {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, s.rows, s.cols, 1.0f, W.data(), s.cols, x.data(), 1, 0.0f, y.data(), 1);
      });
      // What decoding runs now: backend::cpu::gemm with M = 1 -> gemv_f32.
      const double ours = best_us([&] { gemm(false, true, 1, s.rows, s.cols, 1.0f, x.data(), s.cols, W.data(), s.cols,
                                             0.0f, y.data(), s.rows); });
      const double loop = best_us([&] { gemv_f32(W.data(), s.cols, s.rows, s.cols, x.data(), y.data()); });
      const double i8 = best_us([&] { gemv_int8(q.data(), scale.data(), s.rows, s.cols, x.data(), y.data()); });
      const double bytes32 = 4.0 * W.size(), bytes8 = 1.0 * W.size() + 4.0 * s.rows;
      std::printf("%-18s %7d %10.1f %10.1f %10.1f %10.1f %10.1f %10.1f %8.2fx %8.2fx\n", s.what, t, f32, loop, ours,
                  i8, bytes32 / f32 / 1e3, bytes8 / i8 / 1e3, f32 / i8, ours / i8);
    }
  }
  // Beams: Y (M, rows) = X (M, cols) W^T in every decode format.
  std::printf("\nbeams (w8a8 path: %s)\n%-18s %7s %4s %10s %10s %10s %10s %9s %9s %9s\n", gemm_w8a8_path(), "product",
              "threads", "M", "f32 us", "bf16 us", "int8 us", "w8a8 us", "bf16 x", "int8 x", "w8a8 x");
  const Shape beam_shapes[] = {{"attn qkv (3C, C)", 1152, 384}, {"mlp up (4C, C)", 1536, 384},
                               {"mlp down (C, 4C)", 384, 1536}, {"lm head (8192, C)", 8192, 384}};
  for (int t : threads) {
    set_n_threads(t);
    for (const Shape& s : beam_shapes) {
      for (int M : {1, 8, 32}) {
        std::vector<float> W(static_cast<size_t>(s.rows) * s.cols), X(static_cast<size_t>(M) * s.cols),
            Y(static_cast<size_t>(M) * s.rows);
        for (float& v : W) v = n(g);
        for (float& v : X) v = n(g);
        std::vector<int8_t> q(W.size());
        std::vector<float> scale(s.rows);
        quantize_rows_int8(W.data(), s.rows, s.cols, s.cols, q.data(), scale.data());
        std::vector<chorus::bf16> h(W.size());
        for (size_t i = 0; i < W.size(); ++i) h[i] = chorus::from_f32<chorus::bf16>(W[i]);
        const size_t ld = s.cols, ldy = s.rows;
        const double f = best_us([&] { gemm_rows_f32(M, X.data(), ld, W.data(), ld, s.rows, s.cols, Y.data(), ldy); });
        const double b = best_us([&] { gemm_rows_bf16(M, X.data(), ld, h.data(), s.rows, s.cols, Y.data(), ldy); });
        const double i8 = best_us(
            [&] { gemm_rows_int8(M, X.data(), ld, q.data(), scale.data(), s.rows, s.cols, Y.data(), ldy); });
        const double a8 = best_us(
            [&] { gemm_rows_w8a8(M, X.data(), ld, q.data(), scale.data(), s.rows, s.cols, Y.data(), ldy); });
        std::printf("%-18s %7d %4d %10.1f %10.1f %10.1f %10.1f %8.2fx %8.2fx %8.2fx\n", s.what, t, M, f, b, i8, a8,
                    f / b, f / i8, f / a8);
      }
    }
  }
  return 0;
}
