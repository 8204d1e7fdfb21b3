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
void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int NH);

// dqkv (B, T, 3C): overwritten with d/dq, d/dk, d/dv.
// datt (B, NH, T, T): scratch (the probability gradient, then the score gradient).
// dout (B, T, C); qkv and att as saved by attention_forward.
void attention_backward(float* dqkv, float* datt, const float* dout, const float* qkv, const float* att,
                        int B, int T, int C, int NH);

// One decoding step against a KV cache, for generation.
// out (B, C): attention output of the newest position of each sequence.
// q: row b at q + b * q_stride, C wide (e.g. the q part of a (B, 3C) qkv).
// k_cache, v_cache: sequence b's key/value of position s at
//   cache + b * cache_stride + s * C, for s < n_ctx (the newest included).
// scores: scratch of B * NH * n_ctx floats.
void attention_decode(float* out, float* scores, const float* q, size_t q_stride, const float* k_cache,
                      const float* v_cache, size_t cache_stride, int B, int n_ctx, int C, int NH);

}  // namespace chorus::nn
