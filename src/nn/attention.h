// Multi-head attention core: the part between the Q/K/V projections and the
// output projection (Vaswani et al. 2017; layout as llm.c). One implementation,
// mha_forward / mha_backward, serves
//   causal self-attention      q, k, v inside a fused (B, T, 3C) qkv buffer
//                              (stride 3C), causal = true (GPT-2; the
//                              attention_forward / attention_backward wrappers);
//   bidirectional encoder      fused qkv, causal = false, kv_len = valid frames
//   self-attention with padding
//   cross-attention            q (B, Tq, C) from the decoder, k | v fused in a
//                              (B, Tk, 2C) buffer from the encoder (kv_stride
//                              2C), kv_len = valid encoder frames.
// Head h of a C = NH * hs wide row is columns [h*hs, (h+1)*hs);
// probabilities are softmax(q k^T / sqrt(hs)) over the allowed keys.
//
// All products are cblas_sgemm calls on strided per-(batch, head) views, one
// OpenMP task per (b, h), each GEMM single-threaded inside the parallel
// region. Causal attention works in row blocks of kAttnBlock queries: block i
// only multiplies keys [0, end of block i), skipping most of the upper
// triangle. Padded keys (s >= kv_len[b]) are never multiplied at all.
//
// Written once for T in {float, bf16, fp16} (nn/typed.h): each (batch, head)
// task views its q, k, v (and dy) as fp32 (converted copies in per-thread
// scratch for 16-bit T), computes scores, softmax and products in fp32, and
// rounds the saved probabilities and the outputs once into T. The forward
// product P @ v uses the probabilities as rounded, so backward differentiates
// exactly what forward computed. The score gradient lives in one (Tq, Tk)
// per-thread scratch, never a (B, NH, Tq, Tk) buffer.
//
// Gradient rule for every layer in src/nn: backward ACCUMULATES (+=) into
// parameter gradients and OVERWRITES activation gradients.
#pragma once

#include <cstddef>

namespace chorus::nn {

inline constexpr int kAttnBlock = 32;

// out (B, Tq, C): per-head attention outputs, heads concatenated (row stride C).
// att (B, NH, Tq, Tk): saved softmax probabilities. Row t holds the
//   probabilities of its allowed keys and zeros for the masked ones (padded or
//   future) up to the end of the row: with causal, the end of its row block of
//   kAttnBlock queries (entries beyond are never written nor read); otherwise
//   the whole row, Tk entries.
// q: row (b, t) at q + (b*Tq + t) * q_stride, C wide.
// k, v: row (b, s) at k / v + (b*Tk + s) * kv_stride, C wide.
// kv_len: nullptr (all Tk keys valid) or (B) valid key counts, 1 <= kv_len[b]
//   <= Tk: keys s >= kv_len[b] get probability 0.
// causal: key s is allowed for query t only if s <= t (requires Tq == Tk).
// C % NH == 0. out must not overlap q, k, v.
// bias (non-causal only): nullptr, or an additive bias on the scores before
// the softmax, head_weight[h] * values[b, t, s] (a log-prior over the keys, as
// the attention priors of FastPitch / RAD-TTS and the CTC alignment prior of
// the speech decoder); values (B, Tq, Tk) fp32, head_weight (NH) (0 = a head
// without it). A constant of the loss: backward needs nothing more (the saved
// probabilities include it).
struct AttentionBias {
  const float* values = nullptr;
  const float* head_weight = nullptr;
};
template <typename T>
void mha_forward(T* out, T* att, const T* q, size_t q_stride, const T* k, const T* v, size_t kv_stride,
                 const int* kv_len, int B, int Tq, int Tk, int C, int NH, bool causal,
                 const AttentionBias* bias = nullptr);

// dq: row (b, t) at dq + (b*Tq + t) * dq_stride; dk, dv: row (b, s) at
//   dk / dv + (b*Tk + s) * dkv_stride; each C wide, OVERWRITTEN (padded key
//   rows get zeros). Only those C columns of each row are written, so dq, dk
//   and dv may lie in one fused dqkv (stride 3C) or dk, dv in a fused dkv
//   (stride 2C).
// dout (B, Tq, C); q, k, v, att, kv_len and the shapes as given to mha_forward.
template <typename T>
void mha_backward(T* dq, size_t dq_stride, T* dk, T* dv, size_t dkv_stride, const T* dout, const T* q,
                  size_t q_stride, const T* k, const T* v, size_t kv_stride, const T* att, const int* kv_len,
                  int B, int Tq, int Tk, int C, int NH, bool causal);

// Causal self-attention on a fused qkv: mha_forward with q = qkv, k = qkv + C,
// v = qkv + 2C, strides 3C, Tq = Tk = T, no kv_len.
// out (B, T, C); att (B, NH, T, T) (see mha_forward); qkv (B, T, 3C).
template <typename T>
void attention_forward(T* out, T* att, const T* qkv, int B, int Tn, int C, int NH);

// dqkv (B, T, 3C): overwritten with d/dq, d/dk, d/dv.
// dout (B, T, C); qkv and att as saved by attention_forward.
template <typename T>
void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* att, int B, int Tn, int C, int NH);

// One query per sequence against n_keys keys (inference: cross-attention
// against the encoder's K/V, or a decoding step against a KV cache).
// out (B, C): attention output of each sequence's query (row stride C).
// scores: scratch of B * NH * n_keys floats; on return it holds the
//   probabilities (zeros for padded keys).
// q: row b at q + b * q_stride, C wide.
// k, v: key / value s of sequence b at k / v + b * batch_stride + s * kv_stride,
//   C wide, s < n_keys.
// kv_len: nullptr (all n_keys valid) or (B) valid key counts in [1, n_keys].
// bias: nullptr, or AttentionBias with values (B, n_keys) (the bias of each
// sequence's query row) and head_weight (NH).
void mha_decode(float* out, float* scores, const float* q, size_t q_stride, const float* k, const float* v,
                size_t kv_stride, size_t batch_stride, const int* kv_len, int B, int n_keys, int C, int NH,
                const AttentionBias* bias = nullptr);

// One decoding step against a KV cache, for generation: mha_decode with
// kv_stride C and batch_stride cache_stride.
// out (B, C): attention output of the newest position of each sequence.
// q: row b at q + b * q_stride, C wide (e.g. the q part of a (B, 3C) qkv).
// k_cache, v_cache: sequence b's key/value of position s at
//   cache + b * cache_stride + s * C, for s < n_ctx (the newest included).
// scores: scratch of B * NH * n_ctx floats.
void attention_decode(float* out, float* scores, const float* q, size_t q_stride, const float* k_cache,
                      const float* v_cache, size_t cache_stride, int B, int n_ctx, int C, int NH);

}  // namespace chorus::nn
