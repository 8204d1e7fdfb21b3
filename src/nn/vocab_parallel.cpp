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
#include "nn/embedding.h"
#include "nn/softmax_cross_entropy.h"
#include "nn/typed.h"

namespace chorus::nn {

namespace cpu = chorus::backend::cpu;

namespace {
bool is_parallel(const dist::Communicator* tp) { return tp != nullptr && tp->size() > 1; }
bool covers_all(const VocabRange& r) { return r.begin == 0 && r.size >= r.vocab; }

// Row i of (N, width) logits as fp32, its first n_valid columns valid (the
// row itself for float, a converted copy in this thread's scratch otherwise).
template <typename T>
const float* row_f32(const T* logits, int i, int width, int n_valid) {
  return f32_rows(logits + static_cast<size_t>(i) * width, 1, n_valid, width,
                  cpu::thread_scratch(cpu::kScratchRowIn, static_cast<size_t>(n_valid > 0 ? n_valid : 1)))
      .p;
}
}  // namespace

int VocabRange::n_valid() const { return std::clamp(vocab - begin, 0, size); }

template <typename T>
void vocab_parallel_embedding_forward(T* out, const int32_t* tokens, const T* wte, const T* wpe, const VocabRange& r,
                                      int B, int Tn, int C, dist::Communicator* tp) {
  if (!is_parallel(tp) && covers_all(r)) {
    embedding_forward(out, tokens, wte, wpe, B, Tn, C);
    return;
  }
  const int n_rows = B * Tn;
  const size_t n = static_cast<size_t>(n_rows) * C;
  float* acc = f32_accumulator(out, n, cpu::kScratchAcc);
#pragma omp parallel for schedule(static) if (n > (1u << 15))
  for (int i = 0; i < n_rows; ++i) {
    float* o = acc + static_cast<size_t>(i) * C;
    if (r.owns(tokens[i]))
      convert_serial(o, wte + static_cast<size_t>(tokens[i] - r.begin) * C, C);
    else
      std::memset(o, 0, static_cast<size_t>(C) * sizeof(float));
  }
  if (is_parallel(tp)) tp->all_reduce(acc, n, dist::ReduceOp::sum);

  // Exactly wte[token] + wpe[t] as on one rank: the other ranks added zeros.
#pragma omp parallel for schedule(static) if (static_cast <size_t>(n_rows) * C > (1u << 15))
  for (int i = 0; i < n_rows; ++i) {
    if (wpe == nullptr) continue;  // rotary positions: no table
    const T* pe = wpe + static_cast<size_t>(i % Tn) * C;
    float* o = acc + static_cast<size_t>(i) * C;
#pragma omp simd
    for (int c = 0; c < C; ++c) o[c] += to_f32(pe[c]);
  }
  commit(out, acc, n);
}

template <typename T>
void vocab_parallel_embedding_backward(float* dwte, float* dwpe, const T* dout, const int32_t* tokens,
                                       const VocabRange& r, int B, int Tn, int C) {
  embedding_backward_rows(dwte, dwpe, dout, tokens, r.begin, r.size, B, Tn, C);
}

template <typename T>
void vocab_parallel_cross_entropy_forward(float* losses, float* lse, float* stats, const T* logits,
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
    lse[i] = n_valid > 0 ? cpu::max_of(row_f32(logits, i, r.size, n_valid), n_valid)
                         : std::numeric_limits<float>::lowest();
  if (is_parallel(tp)) tp->all_reduce(lse, static_cast<size_t>(N), dist::ReduceOp::max);

  // 2. Local sums of exp(logit - max) and the target logit where this rank owns it.
#pragma omp parallel for schedule(static) if (big)
  for (int i = 0; i < N; ++i) {
    const float* l = row_f32(logits, i, r.size, n_valid);
    sum_exp[i] = n_valid > 0 ? cpu::sum_exp(l, n_valid, lse[i]) : 0.0f;
    // Padded ids are never targets, so an owned target is a valid column.
    target_logit[i] = r.owns(targets[i]) ? l[targets[i] - r.begin] : 0.0f;
  }
  if (is_parallel(tp)) tp->all_reduce(stats, 2 * static_cast<size_t>(N), dist::ReduceOp::sum);
  // 3. Identical arithmetic on identical inputs: the same losses on every rank.
  for (int i = 0; i < N; ++i) {
    lse[i] += std::log(sum_exp[i]);
    losses[i] = targets[i] >= 0 ? lse[i] - target_logit[i] : 0.0f;
  }
}

template <typename T>
void vocab_parallel_cross_entropy_backward(T* dlogits, const T* logits, const float* lse,
                                           const int32_t* targets, float dloss, int N, const VocabRange& r,
                                           float softcap) {
  if (covers_all(r) && softcap == 0.0f) {
    softmax_cross_entropy_backward(dlogits, logits, lse, targets, dloss, N, r.vocab, r.size);
    return;
  }
  const int n_valid = r.n_valid();
#pragma omp parallel for schedule(static) if (static_cast <size_t>(N) * r.size > (1u << 15))
  for (int i = 0; i < N; ++i) {
    T* d_t = dlogits + static_cast<size_t>(i) * r.size;
    const int target = targets[i];
    if (target < 0) {
      std::memset(static_cast<void*>(d_t), 0, static_cast<size_t>(r.size) * sizeof(T));
      continue;
    }
    const float* l = row_f32(logits, i, r.size, n_valid);
    float* d = f32_accumulator(d_t, r.size, cpu::kScratchRowOut);
    if (softcap > 0.0f) {
      // l holds the capped logits y = cap tanh(z / cap) (d may be l itself:
      // each element is read before it is written): dz = dy (1 - (y / cap)^2).
      const float inv_cap = 1.0f / softcap;
      const int t = r.owns(target) ? target - r.begin : -1;
      for (int v = 0; v < n_valid; ++v) {
        const float y = l[v], u = y * inv_cap;
        float g = cpu::exp_approx(y - lse[i]) * dloss;
        if (v == t) g -= dloss;
        d[v] = g * (1.0f - u * u);
      }
    } else {
      cpu::exp_store_scaled(d, l, n_valid, lse[i], dloss);
      if (r.owns(target)) d[target - r.begin] -= dloss;
    }
    for (int v = n_valid; v < r.size; ++v) d[v] = 0.0f;
    store_rows(d_t, r.size, d, r.size, 1, r.size);
  }
}

#define CHORUS_INSTANTIATE(T)                                                                                    \
  template void vocab_parallel_embedding_forward<T>(T*, const int32_t*, const T*, const T*, const VocabRange&, \
                                                    int, int, int, dist::Communicator*);                       \
  template void vocab_parallel_embedding_backward<T>(float*, float*, const T*, const int32_t*, const VocabRange&, \
                                                     int, int, int);                                             \
  template void vocab_parallel_cross_entropy_forward<T>(float*, float*, float*, const T*, const int32_t*, int,   \
                                                        const VocabRange&, dist::Communicator*);                \
  template void vocab_parallel_cross_entropy_backward<T>(T*, const T*, const float*, const int32_t*, float, int, \
                                                         const VocabRange&, float);
CHORUS_INSTANTIATE(float)
CHORUS_INSTANTIATE(bf16)
CHORUS_INSTANTIATE(fp16)
#undef CHORUS_INSTANTIATE

}  // namespace chorus::nn
