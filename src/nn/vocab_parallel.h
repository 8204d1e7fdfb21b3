// Vocabulary-parallel token embedding and softmax cross-entropy (Megatron-LM's
// VocabParallelEmbedding and vocab_parallel_cross_entropy, Shoeybi et al.
// 2019, section 3). The (Vp, C) token embedding is split on its rows: TP rank
// r holds rows [r*Vp/tp, (r+1)*Vp/tp). The LM head tied to it produces this
// rank's columns of the logits only, (N, Vp/tp): no rank ever holds the full
// (N, Vp) logits. Global ids >= V (the padding up to Vp) are not part of the
// softmax and get zero gradient.
//
// With tp == nullptr (or a group of one) and the range covering the whole
// vocabulary these are exactly embedding_forward / softmax_cross_entropy_forward.
// With tp > 1 every rank of the group must make the same calls in the same
// order, with the same tokens and targets.
//
// Tensors in T (float, bf16 or fp16); the TP all-reduces, sums and the softmax
// statistics are fp32 (a 16-bit embedding row is exact in fp32, so the
// all-reduced sum equals the owner's row before it is rounded once).
//
// Gradient rule for every layer in src/nn: backward ACCUMULATES (+=) into
// parameter gradients and OVERWRITES activation gradients.
#pragma once

#include <cstdint>

namespace chorus::dist {
class Communicator;
}

namespace chorus::nn {

// This rank's slice of the padded vocabulary: wte rows / logit columns
// [begin, begin + size) of the global Vp.
struct VocabRange {
  int begin = 0;
  int size = 0;   // Vp / tp: local rows of wte, local columns of the logits
  int vocab = 0;  // V: the real vocabulary; global ids >= V are padding
  // Local columns that are real vocabulary entries: [0, n_valid()).
  int n_valid() const;
  bool owns(int32_t id) const { return id >= begin && id < begin + size; }
};

// out (B, T, C) = wte[tokens[b, t]] + wpe[t], the embedding row found on the
// rank that owns the token: each rank writes its rows (zeros for tokens it does
// not own), the TP group ALL-REDUCEs (sum), then wpe (replicated) is added
// once. wte (r.size, C) is this rank's rows; wpe (>= T, C). The result is the
// same on every rank.
template <typename T>
void vocab_parallel_embedding_forward(T* out, const int32_t* tokens, const T* wte, const T* wpe,
                                      const VocabRange& r, int B, int Tn, int C, dist::Communicator* tp);

// Backward of the all-reduce is the identity: dwte (r.size, C) += dout rows of
// the tokens this rank owns; dwpe (>= T, C) += dout summed over B (the same on
// every rank). dout (B, T, C) is replicated. Deterministic (column blocks, rows
// in order).
template <typename T>
void vocab_parallel_embedding_backward(float* dwte, float* dwpe, const T* dout, const int32_t* tokens,
                                       const VocabRange& r, int B, int Tn, int C);

// Parallel softmax cross-entropy over local logits (N, r.size), the columns
// [r.begin, r.begin + r.size) of the full (N, Vp) logits:
//   row max        ALL-REDUCE max over the group
//   sum of exp     ALL-REDUCE sum  } one all-reduce of the (2, N) stats
//   target logit   ALL-REDUCE sum  } (only the owning rank contributes)
// losses (N) = lse - logits[target], lse (N) = log sum_{v < V} exp(logits[v]):
// the same on every rank. targets (N) global ids in [0, V), or < 0 to ignore a
// row (loss 0). stats: scratch of 2N floats (unused when tp is one rank).
template <typename T>
void vocab_parallel_cross_entropy_forward(float* losses, float* lse, float* stats, const T* logits,
                                          const int32_t* targets, int N, const VocabRange& r,
                                          dist::Communicator* tp);

// dlogits (N, r.size) = dloss * (softmax - onehot(target)) on this rank's
// columns, 0 for padded columns and ignored rows (overwritten; may alias
// logits). lse as forward. Local: no communication (the gradient w.r.t. the LM
// head input is then the column-parallel all-reduce, nn/parallel_linear.h).
// softcap > 0: the logits are soft-capped, y = cap tanh(z / cap)
// (nn/mlp_activations.h softcap_forward), and dlogits is the gradient w.r.t.
// the uncapped z: (softmax - onehot) (1 - (y / cap)^2).
template <typename T>
void vocab_parallel_cross_entropy_backward(T* dlogits, const T* logits, const float* lse,
                                           const int32_t* targets, float dloss, int N, const VocabRange& r,
                                           float softcap = 0.0f);

}  // namespace chorus::nn
