// Matrix-vector products for decoding one token (M = 1: every projection and
// the LM head at batch 1), where every weight is read once and the product is
// memory-bound.
//
// fp32: gemv_f32, four AVX-512 accumulators per row and OpenMP over rows; it
// is what backend::cpu::gemm runs for a contiguous matrix-vector product
// (bench/int8_gemv_bench.cpp measured OpenBLAS 0.3.21's sgemv 3-4x slower on
// these shapes on a Sapphire Rapids Xeon).
//
// int8: weight-only int8 quantisation for inference (issue 10): a weight matrix
// W (rows, cols), row-major as Linear weights are (out, in), stored as int8
// codes q with one fp32 scale per output row (per-output-channel, symmetric):
//   scale[r] = max_c |W[r, c]| / 127,  q[r, c] = round(W[r, c] / scale[r]) in [-127, 127],
// so |W - scale * q| <= scale / 2 element-wise (an all-zero row gets scale 0).
// Decoding one token multiplies every weight once by a vector (y = W x), a
// memory-bound product: int8 codes move a quarter of fp32's bytes. The kernel
// converts codes to fp32 in registers and accumulates in fp32, so its result is
// the fp32 product with the dequantised weights, up to summation order.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

namespace chorus::backend::cpu {

// y[r] = alpha * sum_c W[r, c] x[c] + beta * y[r] (y not read when beta == 0), W
// rows x cols with row stride ldw, x and y contiguous. AVX-512 or AVX2 + FMA
// where the CPU has them (chosen at run time), a portable loop elsewhere;
// OpenMP over rows unless called inside a parallel region.
void gemv_f32(const float* W, size_t ldw, int rows, int cols, const float* x, float* y, float alpha = 1.0f,
              float beta = 0.0f);

// Y (M, rows) = alpha * X (M, cols) W^T + beta * Y for a few rows M (beam
// search decodes M = beam tokens at once): every weight row is read once for
// all M vectors, where OpenBLAS's sgemm would pack the whole W per call.
// Row strides ldx, ldw, ldy; Y not read when beta == 0.
void gemm_rows_f32(int M, const float* X, size_t ldx, const float* W, size_t ldw, int rows, int cols, float* Y,
                   size_t ldy, float alpha = 1.0f, float beta = 0.0f);

// Quantises W (rows x cols, row stride ld >= cols) into q (rows x cols, dense)
// and scale (rows). Non-finite weights throw chorus::Error naming the row.
void quantize_rows_int8(const float* W, int rows, int cols, size_t ld, int8_t* q, float* scale);
// W ~= scale[r] * q[r, c] (rows x cols, dense).
void dequantize_rows_int8(const int8_t* q, const float* scale, int rows, int cols, float* W);
// y[r] = beta * y[r] + scale[r] * sum_c q[r, c] x[c] for r < rows (y is not
// read when beta == 0). AVX-512 or AVX2 + FMA where the CPU has them (chosen
// at run time), a portable loop elsewhere; OpenMP over rows.
void gemv_int8(const int8_t* q, const float* scale, int rows, int cols, const float* x, float* y, float beta = 0.0f);
// Y (M, rows) = X (M, cols) dequant(q)^T + beta * Y: gemm_rows_f32 for int8
// codes (a beam of M tokens through a quantised weight, each code row read
// once for all M vectors). Y not read when beta == 0.
void gemm_rows_int8(int M, const float* X, size_t ldx, const int8_t* q, const float* scale, int rows, int cols,
                    float* Y, size_t ldy, float beta = 0.0f);
// Y (M, rows) = X (M, cols) W^T + beta * Y for bf16 weights W (rows, cols),
// dense: weight-only bf16 decoding (half of fp32's bytes, the exponent range
// of fp32; each value widened exactly by a 16-bit shift, products and sums in
// fp32). The paths of gemm_rows_f32.
void gemm_rows_bf16(int M, const float* X, size_t ldx, const bf16* W, int rows, int cols, float* Y, size_t ldy,
                    float beta = 0.0f);
void gemm_rows_bf16_reference(int M, const float* X, size_t ldx, const bf16* W, int rows, int cols, float* Y,
                              size_t ldy, float beta = 0.0f);
// int8 activations x int8 weights ("w8a8", for CPUs with integer dot-product
// units): each row of X is quantised like the weights (symmetric, per row:
// sx[m] = max_c |X[m, c]| / 127, xq = round(X / sx) in [-127, 127]), the code
// products are summed exactly in int32, and
//   Y[m, r] = beta * Y[m, r] + (sx[m] * scale[r]) * float(sum_c q[r, c] xq[m, c]).
// Paths, chosen at run time: AVX-512 VNNI (vpdpbusd on xq + 128, corrected by
// 128 * sum q), AVX2 (vpmaddubsw on |xq| and q * sign(xq), which cannot
// saturate at |codes| <= 127), a portable loop. The integer sums are exact, so
// every path gives the same bits. Y not read when beta == 0.
void gemm_rows_w8a8(int M, const float* X, size_t ldx, const int8_t* q, const float* scale, int rows, int cols,
                    float* Y, size_t ldy, float beta = 0.0f);
// Which path gemm_rows_w8a8 takes: "avx512_vnni", "avx2" or "portable"
// (set_gemv_path("avx512") takes VNNI where the CPU has it).
const char* gemm_w8a8_path();
// The portable loop alone (tests compare the two paths).
void gemv_int8_reference(const int8_t* q, const float* scale, int rows, int cols, const float* x, float* y,
                         float beta = 0.0f);
// Which path gemv_f32 / gemm_rows_f32 / gemv_int8 take: "avx512", "avx2" or "portable".
const char* gemv_int8_path();
// Tests: force a path ("portable", "avx2", "avx512"; nullptr = back to the
// best this CPU runs). Returns false, changing nothing, when the CPU lacks it.
bool set_gemv_path(const char* path);

}  // namespace chorus::backend::cpu
