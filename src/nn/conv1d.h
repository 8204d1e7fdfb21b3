// 1-D convolution over time, channels-last: the convolutional stem of a speech
// encoder (Whisper's conv1 / conv2: K = 3, pad = 1, stride 1 then 2). Weights
// in PyTorch's nn.Conv1d layout (Cout, Cin, K), so checkpoints load without
// reordering; zero padding on both sides (PyTorch padding_mode="zeros").
//
// Implemented as im2col + one GEMM per tile of output positions: the tile
// cols (rows, Cin*K), column ci*K + k = in[b, to*stride - pad + k, ci] (zero
// outside [0, Tin)), so that out = cols @ w^T with w viewed as (Cout, Cin*K).
// The tiles live in the calling thread's grow-only scratch
// (backend/cpu/workspace.h, slots kScratchIm2col and kScratchIm2colGrad), at
// most kConv1dTileElems elements each, so memory stays bounded for long inputs
// and nothing is allocated per call once the largest shape has run. K = 1,
// stride 1, pad 0 multiplies the input directly (no copy).
//
// Written once for T in {float, bf16, fp16} (nn/typed.h): activations,
// weights and bias in T, products through backend::cpu::gemm_mixed with fp32
// accumulation, outputs rounded once into T; parameter gradients fp32.
//
// Gradient rule for every layer in src/nn: backward ACCUMULATES (+=) into
// parameter gradients and OVERWRITES activation gradients.
#pragma once

#include <cstddef>

#include "nn/typed.h"

namespace chorus::nn {

// Elements of one im2col tile (rows * Cin * K), at least one row.
inline constexpr size_t kConv1dTileElems = size_t{1} << 22;

// Output length: (Tin + 2*pad - K) / stride + 1. Throws chorus::Error when the
// padded input is shorter than the kernel or stride < 1.
int conv1d_out_len(int Tin, int K, int stride, int pad);

// out (B, Tout, Cout) = conv(in (B, Tin, Cin), w (Cout, Cin, K)) + b (Cout),
// Tout = conv1d_out_len(Tin, K, stride, pad); b may be nullptr. out must not
// overlap in. Called from outside parallel regions (uses the OpenMP team).
template <typename T>
void conv1d_forward(T* out, const T* in, const Same<T>* w, const Same<T>* b, int B, int Tin, int Cin,
                    int Cout, int K, int stride, int pad);

// din (B, Tin, Cin): OVERWRITTEN with d/din (nullptr skips it).
// dw (Cout, Cin, K), db (Cout): fp32, ACCUMULATED (either may be nullptr).
// dout (B, Tout, Cout); in, w and the shapes as given to conv1d_forward.
template <typename T>
void conv1d_backward(T* din, float* dw, float* db, const T* dout, const T* in, const Same<T>* w, int B,
                     int Tin, int Cin, int Cout, int K, int stride, int pad);

}  // namespace chorus::nn
