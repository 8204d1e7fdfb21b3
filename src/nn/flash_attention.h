// Causal self-attention without the (B, NH, T, T) probability tensor: the
// tiled, online-softmax scheme of FlashAttention (Dao et al. 2022,
// arXiv:2205.14135; the loop order and the D = rowsum(dout * out) trick of
// FlashAttention-2, Dao 2023, arXiv:2307.08691), on the CPU.
//
// Same math and layout as attention_forward / attention_backward
// (nn/attention.h): q, k, v inside a fused (B, T, 3C) qkv, head h = columns
// [h*hs, (h+1)*hs), scores q k^T / sqrt(hs), key s allowed for query t iff
// s <= t. Forward keeps only the log-sum-exp of each query row (B, NH, T);
// backward recomputes the probabilities tile by tile, P = exp(S - lse).
// Activation memory for backward is O(B NH T) instead of O(B NH T^2).
//
// Work: query tiles of kFlashTile rows against key tiles of kFlashTile keys;
// tiles above the diagonal are never touched, and a tile on it runs in chunks
// of 32 query rows that each stop at their last key. Every product is a
// cblas_sgemm on a tile (single-threaded inside the OpenMP region). Forward:
// one task per (b, h, query tile), largest first, so small B * NH still fills
// the threads. Backward: one task per (b, h); key tiles outer (dk, dv of a
// key tile finish within its iteration), query tiles inner (dq accumulates
// across key tiles). Results do not depend on the thread count.
//
// Scratch per thread: O(kFlashTile^2 + kFlashTile * hs) floats and one head's
// D (T floats); for bf16 / fp16 backward also the fp32 dq accumulator of one
// head (T * hs floats, the size of that head's q). Never O(T^2).
//
// Written once for T in {float, bf16, fp16} (nn/typed.h): tiles of q, k, v
// (and dout) are viewed as fp32 (converted copies for 16-bit T), all
// arithmetic is fp32, the output is rounded once into T. Backward's
// D = rowsum(dout * out) reads out as stored (rounded), so it differentiates
// what forward produced.
//
// Gradient rule for every layer in src/nn: backward ACCUMULATES (+=) into
// parameter gradients and OVERWRITES activation gradients.
#pragma once

namespace chorus::nn {

// Query rows and keys per tile.
inline constexpr int kFlashTile = 128;

// out (B, T, C): per-head outputs, heads concatenated.
// lse (B, NH, T) fp32: log(sum_{s <= t} exp(q_t . k_s / sqrt(hs))) of each
//   query row, the only softmax statistic kept for backward.
// qkv (B, T, 3C). C % NH == 0; out must not overlap qkv.
template <typename T>
void flash_attention_forward(T* out, float* lse, const T* qkv, int B, int Tn, int C, int NH);

// dqkv (B, T, 3C): OVERWRITTEN with d/dq, d/dk, d/dv.
// dout (B, T, C); qkv, out and lse as given to / produced by
// flash_attention_forward.
template <typename T>
void flash_attention_backward(T* dqkv, const T* dout, const T* qkv, const T* out, const float* lse, int B,
                              int Tn, int C, int NH);

}  // namespace chorus::nn
