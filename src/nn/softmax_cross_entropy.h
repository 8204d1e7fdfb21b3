// Fused softmax + cross-entropy over a padded vocabulary. logits rows are Vp
// wide (Vp >= V, padded for GEMM alignment and later vocab-parallel splits);
// columns v >= V are not part of the distribution: excluded from the softmax
// and given zero gradient. The softmax is never stored: forward keeps the
// per-row log-sum-exp and backward recomputes the probabilities from it.
// Logits and their gradient are in T (float, bf16 or fp16); the max, the sum
// of exponentials and the log-sum-exp are fp32.
//
// Gradient rule for every layer in src/nn: backward ACCUMULATES (+=) into
// parameter gradients and OVERWRITES activation gradients.
#pragma once

#include <cstdint>

namespace chorus::nn {

// losses (N) = lse - logits[target]; lse (N) = log sum_{v < V} exp(logits[v]).
// logits (N, Vp); targets (N) in [0, V), or < 0 to ignore a row (loss 0).
template <typename T>
void softmax_cross_entropy_forward(float* losses, float* lse, const T* logits, const int32_t* targets,
                                   int N, int V, int Vp);

// dlogits (N, Vp) = dloss * (softmax(logits) - onehot(target)) for v < V, 0 for
// padded columns and ignored rows (overwritten). dloss: gradient of the
// objective w.r.t. each row's loss (e.g. 1/N for the mean). dlogits may alias
// logits (in place), which is how the GPT LM head saves a (N, Vp) buffer.
template <typename T>
void softmax_cross_entropy_backward(T* dlogits, const T* logits, const float* lse,
                                    const int32_t* targets, float dloss, int N, int V, int Vp);

}  // namespace chorus::nn
