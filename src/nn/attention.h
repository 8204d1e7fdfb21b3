// Causal multi-head self-attention core: the part between GPT-2's c_attn
// (QKV projection) and c_proj (Vaswani et al. 2017; layout as llm.c).
// qkv rows are [q | k | v], each C = NH * hs wide, head h in columns
// [h*hs, (h+1)*hs) of each part. softmax(q k^T / sqrt(hs)) over keys t' <= t.
//
// All products are cblas_sgemm calls on strided per-(batch, head) views of qkv,
// one OpenMP task per (b, h), each GEMM single-threaded inside the parallel
// region. The causal mask is exploited in row blocks of kAttnBlock queries:
// block i only multiplies keys [0, end of block i), skipping most of the upper
// triangle.
//
// Written once for T in {float, bf16, fp16} (nn/typed.h): each (batch, head)
// task views its q, k, v (and dy) as fp32 (converted copies in per-thread
// scratch for 16-bit T), computes scores, softmax and products in fp32, and
// rounds the saved probabilities and the outputs once into T. The forward
// product P @ v uses the probabilities as rounded, so backward differentiates
// exactly what forward computed. The score gradient lives in one (T, T)
// per-thread scratch, never a (B, NH, T, T) buffer.
//
// Gradient rule for every layer in src/nn: backward ACCUMULATES (+=) into
// parameter gradients and OVERWRITES activation gradients.
#pragma once

#include <cstddef>

namespace chorus::nn {

inline constexpr int kAttnBlock = 32;

// out (B, T, C): per-head attention outputs, heads concatenated.
// att (B, NH, T, T): saved softmax probabilities. Row t holds the
//   probabilities in [0, t] and zeros up to the end of its row block; entries
//   beyond that are never written nor read.
// qkv (B, T, 3C). C % NH == 0.
template <typename T>
void attention_forward(T* out, T* att, const T* qkv, int B, int Tn, int C, int NH);

// dqkv (B, T, 3C): overwritten with d/dq, d/dk, d/dv.
// dout (B, T, C); qkv and att as saved by attention_forward.
template <typename T>
void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* att, int B, int Tn, int C, int NH);

// One decoding step against a KV cache, for generation.
// out (B, C): attention output of the newest position of each sequence.
// q: row b at q + b * q_stride, C wide (e.g. the q part of a (B, 3C) qkv).
// k_cache, v_cache: sequence b's key/value of position s at
//   cache + b * cache_stride + s * C, for s < n_ctx (the newest included).
// scores: scratch of B * NH * n_ctx floats.
void attention_decode(float* out, float* scores, const float* q, size_t q_stride, const float* k_cache,
                      const float* v_cache, size_t cache_stride, int B, int n_ctx, int C, int NH);

}  // namespace chorus::nn
