// Gradient accumulation: N micro-batches of B/N give the same gradient and the
// same AdamW update as one batch of B.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/rng.h"
#include "models/gpt/gpt.h"
#include "optim/adamw.h"
#include "core/error.h"
#include "train/loop.h"

using namespace chorus;

namespace {

models::GptConfig tiny() {
  models::GptConfig c;
  c.n_layer = 2;
  c.n_embd = 32;
  c.n_head = 4;
  c.vocab_size = 100;
  c.context = 16;
  return c;
}

std::vector<float> update_with(int n_micro, const std::vector<int32_t>& x, const std::vector<int32_t>& y, int B,
                               int T, std::vector<float>* grads_out, float* loss_out) {
  const int b = B / n_micro;
  models::Gpt model(tiny(), b, T);
  model.init_weights(42);
  std::vector<optim::DecayRange> decay;
  for (const auto& p : model.param_table())
    if (p.decay) decay.push_back({p.offset, p.offset + p.numel});
  optim::AdamW opt(model.n_params(), decay, optim::AdamWConfig{});
  model.zero_grad();
  float loss = 0.0f;
  for (int m = 0; m < n_micro; ++m) {
    const size_t off = static_cast<size_t>(m) * b * T;
    loss += model.forward(x.data() + off, y.data() + off, b, T) / n_micro;
    model.backward(1.0f / static_cast<float>(n_micro));
  }
  *grads_out = std::vector<float>(model.grads().begin(), model.grads().end());
  *loss_out = loss;
  opt.step(model.params(), model.grads(), 1e-3f, 1);
  return std::vector<float>(model.params().begin(), model.params().end());
}

}  // namespace

TEST(GradAccum, MicroBatchesEqualOneBigBatch) {
  const int B = 8, T = 16;
  Rng rng(3);
  std::vector<int32_t> x(B * T), y(B * T);
  for (auto& v : x) v = static_cast<int32_t>(rng.below(100));
  for (auto& v : y) v = static_cast<int32_t>(rng.below(100));
  std::vector<float> g1, g4, g8;
  float l1, l4, l8;
  auto p1 = update_with(1, x, y, B, T, &g1, &l1);
  auto p4 = update_with(4, x, y, B, T, &g4, &l4);
  auto p8 = update_with(8, x, y, B, T, &g8, &l8);
  EXPECT_NEAR(l1, l4, 1e-5);
  EXPECT_NEAR(l1, l8, 1e-5);
  double gmax = 0;
  for (float v : g1) gmax = std::max(gmax, double(std::fabs(v)));
  for (size_t i = 0; i < g1.size(); ++i) {
    ASSERT_NEAR(g1[i], g4[i], 1e-5 * gmax + 1e-7) << "grad " << i;
    ASSERT_NEAR(g1[i], g8[i], 1e-5 * gmax + 1e-7) << "grad " << i;
  }
  // Adam normalises the step, so tiny gradients can flip the sign of an update of size lr;
  // compare the parameters where the gradient is clearly non-zero, and all within lr.
  for (size_t i = 0; i < p1.size(); ++i) {
    ASSERT_NEAR(p1[i], p4[i], 2e-3) << "param " << i;
    if (std::fabs(g1[i]) > 1e-3 * gmax) {
      ASSERT_NEAR(p1[i], p4[i], 1e-5) << "param " << i;
    }
  }
}

// Batch-size warmup (--batch-warmup): the micro-batches of a step ramp
// linearly from 1 to --grad-accum, and a sampler's consumed count maps back to
// the step it is in (the speech task's stage switch uses that inverse).
TEST(BatchWarmup, MicroBatchesRampAndMapBackToTheirStep) {
  train::TrainOptions o;
  o.grad_accum = 4;
  o.batch_warmup = 6;
  const std::vector<int> want = {1, 2, 2, 3, 4, 4, 4, 4};  // ceil(4 (s + 1) / 6), then 4
  for (int64_t s = 0; s < static_cast<int64_t>(want.size()); ++s) EXPECT_EQ(o.accum_at(s), want[s]) << "step " << s;
  uint64_t before = 0;
  for (int64_t s = 0; s < 12; ++s) {
    EXPECT_EQ(o.micro_batches_before(s), before) << "step " << s;
    for (int m = 0; m < o.accum_at(s); ++m) EXPECT_EQ(o.step_after_micro_batches(before + m), s) << "step " << s;
    before += static_cast<uint64_t>(o.accum_at(s));
  }
  o.batch_warmup = 0;  // off: every step does grad_accum micro-batches
  for (int64_t s = 0; s < 5; ++s) EXPECT_EQ(o.accum_at(s), 4);
  EXPECT_EQ(o.micro_batches_before(5), 20u);
  EXPECT_EQ(o.step_after_micro_batches(19), 4);
  EXPECT_EQ(o.step_after_micro_batches(20), 5);
  o.run_dir = "x";
  o.batch_warmup = 3;
  o.grad_accum = 1;
  try {
    o.validate();
    ADD_FAILURE() << "batch-warmup with grad-accum 1 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("batch-warmup"), std::string::npos) << e.what();
  }
}
