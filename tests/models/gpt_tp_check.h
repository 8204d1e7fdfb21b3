// Test helpers for the GPT checks: deterministic random tokens, every
// tensor's gradient against finite differences, and the check that a model
// sharded over a ThreadGroup of ranks gives one rank's loss and gradients.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

#include "../nn/grad_check.h"
#include "../nn/thread_group.h"
#include "core/rng.h"
#include "dist/communicator.h"
#include "models/gpt/gpt.h"
#include "nn/tp_shard.h"

namespace chorus::testing {

// n tokens uniform in [0, vocab).
inline std::vector<int32_t> random_tokens(size_t n, int vocab, uint64_t seed) {
  Rng rng(seed, 3);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng.below(vocab));
  return t;
}

// Backward of m on (tok, tgt) (B, T) against central differences of its loss:
// `per_tensor` random elements of every tensor (real vocabulary rows only for
// wte / lm_head) plus one element of each of the first 8 tokens' wte rows, at
// tolerances atol / rtol. Padded vocabulary rows must get no gradient.
inline void expect_gpt_gradients_match_fd(models::Gpt& m, const std::vector<int32_t>& tok,
                                          const std::vector<int32_t>& tgt, int B, int T, int per_tensor, double atol,
                                          double rtol) {
  const models::GptConfig& c = m.config();
  m.zero_grad();
  m.forward(tok.data(), tgt.data(), B, T);
  m.backward();
  std::vector<float> grads(m.grads().begin(), m.grads().end());
  auto loss = [&] { return static_cast<double>(m.forward(tok.data(), tgt.data(), B, T)); };
  const size_t real_rows = static_cast<size_t>(c.vocab_size) * c.n_embd;
  Rng rng(9, 0);
  for (const models::ParamSpec& s : m.param_table()) {
    GradCheckOptions opt;
    opt.eps = 1e-2;
    opt.atol = atol;
    opt.rtol = rtol;
    const bool vocab_table = s.name == "wte.weight" || s.name == "lm_head.weight";
    const size_t n = vocab_table ? real_rows : s.numel;
    if (s.name == "wte.weight")
      for (int i = 0; i < 8; ++i) opt.indices.push_back(static_cast<size_t>(tok[i]) * c.n_embd + rng.below(c.n_embd));
    for (int i = 0; i < per_tensor; ++i) opt.indices.push_back(rng.below(n));
    expect_grad_close(s.name, m.params().data() + s.offset, grads.data() + s.offset, s.numel, loss, opt);
    if (vocab_table) {
      for (size_t j = real_rows; j < s.numel; ++j) ASSERT_EQ(grads[s.offset + j], 0.0f) << s.name << " padded row";
    }
  }
}

// A one-rank reference with set_weights' weights, and the same weights sliced
// over a ThreadGroup of tp ranks: one forward / backward (loss scale 0.5) on
// B x T random tokens, the last vocabulary entry among the targets (owned by
// the last rank, next to the padding). Every rank's loss equals rank 0's and
// matches the reference to 1e-5 relative; the gradient shards, placed into
// one global buffer (replicated tensors from rank 0), match the reference's
// for every tensor to 1e-5 of its largest element. every_tensor_has_gradient:
// also expect every tensor's reference gradient to be nonzero.
inline void expect_tp_matches_one_rank(const models::GptConfig& c,
                                       const std::function<void(models::Gpt&)>& set_weights, int B, int T,
                                       int tp, bool every_tensor_has_gradient = false) {
  models::Gpt ref(c, B, T);
  set_weights(ref);
  auto tok = random_tokens(B * T, c.vocab_size, 8), tgt = random_tokens(B * T, c.vocab_size, 9);
  tgt[0] = c.vocab_size - 1;  // owned by the last rank, next to the padding
  ref.zero_grad();
  const float want = ref.forward(tok.data(), tgt.data(), B, T);
  ref.backward(0.5f);
  const auto& ref_table = ref.param_table();
  std::vector<float> global_grads(ref.n_params(), 0.0f);
  std::vector<float> losses(tp);
  ThreadGroup(tp).run([&](dist::Communicator& comm) {
    models::Gpt m(c, B, T, &comm);
    const auto& table = m.param_table();
    for (size_t i = 0; i < table.size(); ++i)
      nn::slice_shard({table[i].global_shape, table[i].tp_axis, table[i].tp_parts}, comm.rank(), tp,
                      ref.params().data() + ref_table[i].offset, m.params().data() + table[i].offset);
    m.zero_grad();
    losses[comm.rank()] = m.forward(tok.data(), tgt.data(), B, T);
    m.backward(0.5f);
    comm.barrier();
    for (size_t i = 0; i < table.size(); ++i)  // disjoint shards; replicated tensors from rank 0
      if (table[i].tp_axis >= 0 || comm.rank() == 0)
        nn::place_shard({table[i].global_shape, table[i].tp_axis, table[i].tp_parts}, comm.rank(), tp,
                        m.grads().data() + table[i].offset, global_grads.data() + ref_table[i].offset);
    comm.barrier();
  });
  for (int r = 1; r < tp; ++r) EXPECT_EQ(losses[0], losses[r]) << "rank " << r;
  EXPECT_NEAR(losses[0], want, 1e-5 * std::abs(want));
  for (const models::ParamSpec& p : ref_table) {
    const float* g = ref.grads().data() + p.offset;
    float scale = 0.0f, worst = 0.0f;
    for (size_t j = 0; j < p.numel; ++j) {
      scale = std::max(scale, std::abs(g[j]));
      worst = std::max(worst, std::abs(g[j] - global_grads[p.offset + j]));
    }
    if (every_tensor_has_gradient) {
      EXPECT_GT(scale, 0.0f) << p.name << " got no gradient";
    }
    EXPECT_LE(worst, 1e-5f * scale + 1e-9f) << p.name;
  }
}

}  // namespace chorus::testing
