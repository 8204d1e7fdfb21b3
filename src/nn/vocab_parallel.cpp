// Gradient rule: backward accumulates (+=) into parameter gradients and
// overwrites activation gradients (see vocab_parallel.h).
#include "nn/vocab_parallel.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <limits>

#include "backend/cpu/vmath.h"
#include "dist/communicator.h"
#include "nn/encoder.h"
#include "nn/softmax_cross_entropy.h"

namespace chorus::nn {

namespace cpu = chorus::backend::cpu;

namespace {
bool is_parallel(const dist::Communicator* tp) { return tp != nullptr && tp->size() > 1; }
bool covers_all(const VocabRange& r) { return r.begin == 0 && r.size >= r.vocab; }
}  // namespace

int VocabRange::n_valid() const { return std::clamp(vocab - begin, 0, size); }

void vocab_parallel_embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe,
                                      const VocabRange& r, int B, int T, int C, dist::Communicator* tp) {
  if (!is_parallel(tp) && covers_all(r)) {
    encoder_forward(out, tokens, wte, wpe, B, T, C);
    return;
  }
  const int n_rows = B * T;
  const size_t row_bytes = static_cast<size_t>(C) * sizeof(float);
#pragma omp parallel for schedule(static) if (static_cast <size_t>(n_rows) * C > (1u << 15))
  for (int i = 0; i < n_rows; ++i) {
    float* o = out + static_cast<size_t>(i) * C;
    if (r.owns(tokens[i]))
      std::memcpy(o, wte + static_cast<size_t>(tokens[i] - r.begin) * C, row_bytes);
    else
      std::memset(o, 0, row_bytes);
  }
  if (is_parallel(tp)) tp->all_reduce(out, static_cast<size_t>(n_rows) * C, dist::ReduceOp::sum);

  // Exactly wte[token] + wpe[t] as on one rank: the other ranks added zeros.
#pragma omp parallel for schedule(static) if (static_cast <size_t>(n_rows) * C > (1u << 15))
  for (int i = 0; i < n_rows; ++i) {
    const float* pe = wpe + static_cast<size_t>(i % T) * C;
    float* o = out + static_cast<size_t>(i) * C;
#pragma omp simd
    for (int c = 0; c < C; ++c) o[c] += pe[c];
  }
}

void vocab_parallel_embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens,
                                       const VocabRange& r, int B, int T, int C) {
  encoder_backward_rows(dwte, dwpe, dout, tokens, r.begin, r.size, B, T, C);
}

void vocab_parallel_cross_entropy_forward(float* losses, float* lse, float* stats, const float* logits,
                                          const int32_t* targets, int N, const VocabRange& r,
                                          dist::Communicator* tp) {
  if (!is_parallel(tp) && covers_all(r)) {
    softmax_cross_entropy_forward(losses, lse, logits, targets, N, r.vocab, r.size);
    return;
  }
  const int n_valid = r.n_valid();  // may be 0: a rank holding padding rows only
  const bool big = static_cast<size_t>(N) * r.size > (1u << 15);
  float* sum_exp = stats;           // (N)
  float* target_logit = stats + N;  // (N)
  // 1. Row max over the group (lse holds it until step 3).
#pragma omp parallel for schedule(static) if (big)
  for (int i = 0; i < N; ++i)
    lse[i] = n_valid > 0 ? cpu::max_of(logits + static_cast<size_t>(i) * r.size, n_valid)
                         : std::numeric_limits<float>::lowest();
  if (is_parallel(tp)) tp->all_reduce(lse, static_cast<size_t>(N), dist::ReduceOp::max);

  // 2. Local sums of exp(logit - max) and the target logit where this rank owns it.
#pragma omp parallel for schedule(static) if (big)
  for (int i = 0; i < N; ++i) {
    const float* l = logits + static_cast<size_t>(i) * r.size;
    sum_exp[i] = n_valid > 0 ? cpu::sum_exp(l, n_valid, lse[i]) : 0.0f;
    target_logit[i] = r.owns(targets[i]) ? l[targets[i] - r.begin] : 0.0f;
  }
  if (is_parallel(tp)) tp->all_reduce(stats, 2 * static_cast<size_t>(N), dist::ReduceOp::sum);
  // 3. Identical arithmetic on identical inputs: the same losses on every rank.
  for (int i = 0; i < N; ++i) {
    lse[i] += std::log(sum_exp[i]);
    losses[i] = targets[i] >= 0 ? lse[i] - target_logit[i] : 0.0f;
  }
}

void vocab_parallel_cross_entropy_backward(float* dlogits, const float* logits, const float* lse,
                                           const int32_t* targets, float dloss, int N, const VocabRange& r) {
  if (covers_all(r)) {
    softmax_cross_entropy_backward(dlogits, logits, lse, targets, dloss, N, r.vocab, r.size);
    return;
  }
  const int n_valid = r.n_valid();
#pragma omp parallel for schedule(static) if (static_cast <size_t>(N) * r.size > (1u << 15))
  for (int i = 0; i < N; ++i) {
    const float* l = logits + static_cast<size_t>(i) * r.size;
    float* d = dlogits + static_cast<size_t>(i) * r.size;
    const int target = targets[i];
    if (target < 0) {
      std::memset(d, 0, static_cast<size_t>(r.size) * sizeof(float));
      continue;
    }
    cpu::exp_store_scaled(d, l, n_valid, lse[i], dloss);
    if (r.owns(target)) d[target - r.begin] -= dloss;
    for (int v = n_valid; v < r.size; ++v) d[v] = 0.0f;
  }
}

}  // namespace chorus::nn
