// Tensor-parallel GPT (Megatron layout) against the single-rank model: on every
// rank a TP = 2 / 4 shard and a reference Gpt(cfg, B, T, nullptr) start from
// the same seed and see the same data; the loss, the logit shards, every
// gradient (gathered to its global tensor) and the initial parameters must
// agree, the shards must be local (no rank holds full logits), and a
// training step allocates nothing.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "dist/communicator.h"
#include "dist/grid.h"
#include "dist_test_env.h"
#include "models/gpt/gpt.h"
#include "nn/tp_shard.h"

// Counting global operator new: a training step must not allocate.
namespace {
std::atomic<bool> g_count_news{false};
std::atomic<long> g_n_news{0};
}  // namespace

// GCC flags free() on a pointer from the replaced operator new; both sides are ours.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t n) {
  if (g_count_news.load(std::memory_order_relaxed)) g_n_news.fetch_add(1, std::memory_order_relaxed);
  void* p = std::malloc(n == 0 ? 1 : n);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#pragma GCC diagnostic pop

using chorus::Error;
using chorus::Rng;
using chorus::dist::Communicator;
using chorus::dist::DType;
using chorus::dist::ParallelGrid;
using chorus::dist::ReduceOp;
using chorus::dist::testing::g_runtime;
using chorus::models::Gpt;
using chorus::models::GptConfig;
using chorus::models::ParamSpec;

namespace {

// L2 d64 h4, vocab 300 (padded 320: with TP = 4 the last rank holds 60 real
// rows and 20 padding rows).
GptConfig tiny_config() {
  GptConfig c;
  c.n_layer = 2;
  c.n_embd = 64;
  c.n_head = 4;
  c.vocab_size = 300;
  c.context = 32;
  return c;
}

// vocab 65 (padded 128): with TP = 2 rank 1 holds a single real row; with
// TP = 4 rank 3 holds padding rows only (it contributes nothing to the softmax).
GptConfig edge_vocab_config() {
  GptConfig c = tiny_config();
  c.vocab_size = 65;
  return c;
}

std::vector<int32_t> random_tokens(size_t n, int vocab, uint64_t seed) {
  Rng rng(seed, 7);
  std::vector<int32_t> out(n);
  for (auto& t : out) t = static_cast<int32_t>(rng.uniform() * vocab) % vocab;
  // The highest ids too: they live on the last rank that owns real rows.
  if (n > 2) out[1] = vocab - 1;
  return out;
}

chorus::nn::ShardSpec shard_of(const ParamSpec& p) { return {p.global_shape, p.tp_axis, p.tp_parts}; }

size_t numel_of(const std::vector<int64_t>& shape) {
  size_t n = 1;
  for (auto d : shape) n *= static_cast<size_t>(d);
  return n;
}

// The global tensor of `local` (this rank's shard of p), gathered over tp.
std::vector<float> gather_global(Communicator& tp, const ParamSpec& p, const float* local) {
  if (p.tp_axis < 0 || tp.size() == 1) return std::vector<float>(local, local + p.numel);
  std::vector<float> all(p.numel * tp.size());
  tp.all_gather(local, all.data(), all.size(), DType::f32);
  std::vector<float> global(numel_of(p.global_shape));
  for (int r = 0; r < tp.size(); ++r)
    chorus::nn::place_shard(shard_of(p), r, tp.size(), all.data() + r * p.numel, global.data());
  return global;
}

// True when x (n) is bit-identical on every rank of the group.
bool same_on_every_rank(Communicator& c, const float* x, size_t n) {
  std::vector<float> lo(x, x + n), hi(x, x + n);
  c.all_reduce(lo.data(), n, DType::f32, ReduceOp::min);
  c.all_reduce(hi.data(), n, DType::f32, ReduceOp::max);
  for (size_t i = 0; i < n; ++i)
    if (lo[i] != hi[i] || lo[i] != x[i]) return false;
  return true;
}

double max_abs(const float* x, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, static_cast<double>(std::fabs(x[i])));
  return m;
}

void check_layout(int tp_degree, const GptConfig& cfg) {
  SCOPED_TRACE("tp " + std::to_string(tp_degree) + ", vocab " + std::to_string(cfg.vocab_size));
  ParallelGrid grid(*g_runtime, tp_degree);
  Communicator& tp = grid.tp();
  const int max_b = 3, max_t = 16;
  const uint64_t seed = 1234;
  Gpt ref(cfg, max_b, max_t, nullptr);
  Gpt m(cfg, max_b, max_t, &tp);
  ref.init_weights(seed);
  m.init_weights(seed);
  EXPECT_EQ(m.tp_size(), tp_degree);
  EXPECT_EQ(m.tp_rank(), tp.rank());

  // The table: same names and order as one rank, local shapes, contiguous.
  const auto& table = m.param_table();
  const auto& ref_table = ref.param_table();
  ASSERT_EQ(table.size(), ref_table.size());
  size_t offset = 0;
  for (size_t i = 0; i < table.size(); ++i) {
    const ParamSpec& p = table[i];
    const ParamSpec& r = ref_table[i];
    EXPECT_EQ(p.name, r.name);
    EXPECT_EQ(p.global_shape, r.shape) << p.name;
    EXPECT_EQ(p.tp_axis, r.tp_axis) << p.name;
    EXPECT_EQ(p.tp_parts, r.tp_parts) << p.name;
    EXPECT_EQ(p.shape, chorus::nn::local_shape(shard_of(p), tp_degree)) << p.name;
    EXPECT_EQ(p.numel, numel_of(p.shape)) << p.name;
    EXPECT_EQ(p.offset, offset) << p.name;
    offset += p.numel;
    // The Megatron split of each tensor.
    const std::string& n = p.name;
    auto ends_with = [&](const char* suffix) {
      const std::string s(suffix);
      return n.size() >= s.size() && n.compare(n.size() - s.size(), s.size(), s) == 0;
    };
    int axis = -1, parts = 1;
    if (n == "wte.weight" || ends_with("mlp.c_fc.weight") || ends_with("mlp.c_fc.bias")) axis = 0;
    if (ends_with("attn.c_attn.weight") || ends_with("attn.c_attn.bias")) axis = 0, parts = 3;
    if (ends_with("attn.c_proj.weight") || ends_with("mlp.c_proj.weight")) axis = 1;
    EXPECT_EQ(p.tp_axis, axis) << n;
    EXPECT_EQ(p.tp_parts, parts) << n;
  }
  EXPECT_EQ(offset, m.n_params());
  EXPECT_EQ(m.params().size(), m.n_params());
  EXPECT_EQ(m.grads().size(), m.n_params());
  EXPECT_LT(m.n_params(), ref.n_params());
  EXPECT_EQ(m.n_flop_params(), ref.n_flop_params());  // the whole model's
  const size_t C = cfg.n_embd;
  const size_t per_layer = (12 * C * C + 7 * C) / tp_degree + 6 * C;  // local floats of one block
  for (int l = 0; l < cfg.n_layer; ++l) {
    const ParamSpec& first = table[2 + 12 * l];
    const ParamSpec& last = table[2 + 12 * l + 11];
    EXPECT_EQ(last.offset + last.numel - first.offset, per_layer) << "layer " << l;
  }

  // No ASSERT between collectives below: a rank that returned early would
  // leave the others waiting in the next one.
  // (c) The initial parameters, reassembled, are exactly the single-rank model.
  for (size_t i = 0; i < table.size(); ++i) {
    const auto global = gather_global(tp, table[i], m.params().data() + table[i].offset);
    const float* want = ref.params().data() + ref_table[i].offset;
    EXPECT_EQ(global.size(), ref_table[i].numel);
    size_t n_diff = 0;
    for (size_t j = 0; j < std::min(global.size(), ref_table[i].numel); ++j) n_diff += global[j] != want[j];
    EXPECT_EQ(n_diff, 0u) << table[i].name << ": initial values differ from one rank's";
  }

  // Then move every tensor off its init (biases 0, LN gains 1 would hide a
  // bias added on every rank instead of once): the same global noise on both.
  for (size_t i = 0; i < table.size(); ++i) {
    std::vector<float> noise(ref_table[i].numel), shard(table[i].numel);
    Rng rng(seed, 1000 + i);
    for (auto& x : noise) x = 0.05f * rng.normal();
    chorus::nn::slice_shard(shard_of(table[i]), tp.rank(), tp_degree, noise.data(), shard.data());
    float* w_ref = ref.params().data() + ref_table[i].offset;
    float* w = m.params().data() + table[i].offset;
    for (size_t j = 0; j < noise.size(); ++j) w_ref[j] += noise[j];
    for (size_t j = 0; j < shard.size(); ++j) w[j] += shard[j];
  }

  // (d) Logits are sharded: this rank's columns only, never (B, T, Vp).
  const int Vp = cfg.padded_vocab(), Vl = Vp / tp_degree;
  EXPECT_EQ(m.local_vocab(), Vl);
  EXPECT_EQ(m.vocab_begin(), tp.rank() * Vl);
  const size_t full_logits_bytes = sizeof(float) * max_b * max_t * static_cast<size_t>(Vp);
  EXPECT_GE(ref.activation_bytes() - m.activation_bytes(), full_logits_bytes - full_logits_bytes / tp_degree)
      << "the activations hold more than the local logit columns";

  // (e) Consecutive forward/backward calls with different batch sizes; the
  // gradients accumulate over them.
  struct Batch {
    int B, T;
    float scale;
  };
  const Batch batches[] = {{max_b, max_t, 1.0f}, {1, 9, 0.5f}, {2, max_t, 0.25f}, {max_b, 5, 1.0f}};
  ref.zero_grad();
  m.zero_grad();
  uint64_t data_seed = 10;
  for (const Batch& b : batches) {
    SCOPED_TRACE("B " + std::to_string(b.B) + " T " + std::to_string(b.T));
    const size_t n = static_cast<size_t>(b.B) * b.T;
    const auto tokens = random_tokens(n, cfg.vocab_size, ++data_seed);
    const auto targets = random_tokens(n, cfg.vocab_size, ++data_seed);
    const float want = ref.forward(tokens.data(), targets.data(), b.B, b.T);
    const float loss = m.forward(tokens.data(), targets.data(), b.B, b.T);
    // (a) The same loss as one rank, and the same on every TP rank.
    EXPECT_NEAR(loss, want, 1e-5 * std::fabs(want));
    EXPECT_TRUE(same_on_every_rank(tp, &loss, 1)) << "the loss differs between TP ranks";
    // The logit shard is the reference's columns [begin, begin + Vl).
    double worst_logit = 0;
    for (size_t row = 0; row < n; ++row) {
      const float* got = m.logits() + row * Vl;
      const float* full = ref.logits() + row * Vp + m.vocab_begin();
      for (int v = 0; v < Vl && m.vocab_begin() + v < cfg.vocab_size; ++v)
        worst_logit = std::max(worst_logit, std::fabs(static_cast<double>(got[v]) - full[v]));
    }
    EXPECT_LT(worst_logit, 1e-5) << "local logits differ from the reference's columns";
    ref.backward(b.scale);
    m.backward(b.scale);

    // (b) Every gradient, reassembled, equals the single-rank gradient.
    for (size_t i = 0; i < table.size(); ++i) {
      const ParamSpec& p = table[i];
      const float* local = m.grads().data() + p.offset;
      if (p.tp_axis < 0) {
        EXPECT_TRUE(same_on_every_rank(tp, local, p.numel)) << p.name << ": replicated gradient differs";
      }
      const auto global = gather_global(tp, p, local);
      const float* want_g = ref.grads().data() + ref_table[i].offset;
      const double tol = 1e-5 * max_abs(want_g, global.size()) + 1e-9;
      double worst = 0;
      size_t worst_j = 0;
      for (size_t j = 0; j < global.size(); ++j) {
        const double d = std::fabs(static_cast<double>(global[j]) - want_g[j]);
        if (d > worst) worst = d, worst_j = j;
      }
      EXPECT_LE(worst, tol) << p.name << "[" << worst_j << "]: " << global[worst_j] << " vs "
                            << want_g[worst_j];
    }
  }

  // A training step allocates nothing, with the TP collectives included.
  const auto tokens = random_tokens(max_b * max_t, cfg.vocab_size, 99);
  g_n_news = 0;
  g_count_news = true;
  m.zero_grad();
  m.forward(tokens.data(), tokens.data(), max_b, max_t);
  m.backward(0.5f);
  m.forward(tokens.data(), tokens.data(), 1, 5);
  m.backward(0.5f);
  g_count_news = false;
  EXPECT_EQ(g_n_news.load(), 0) << "operator new calls during a TP training step";

  // Generation runs on one rank.
  try {
    m.reset_cache(1);
    ADD_FAILURE() << "reset_cache with TP > 1 should throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("generate runs on one rank"), std::string::npos) << e.what();
  }
}

std::vector<int> tp_degrees(int n_head) {
  std::vector<int> out;
  for (int tp : {2, 4})
    if (g_runtime->world().size() % tp == 0 && n_head % tp == 0) out.push_back(tp);
  return out;
}

}  // namespace

TEST(GptTensorParallel, MatchesOneRank) {
  for (int tp : tp_degrees(tiny_config().n_head)) check_layout(tp, tiny_config());
}

TEST(GptTensorParallel, MatchesOneRankWhenARankHoldsOnlyPaddedVocabulary) {
  for (int tp : tp_degrees(edge_vocab_config().n_head)) check_layout(tp, edge_vocab_config());
}

TEST(GptTensorParallel, RefusesATpDegreeThatDoesNotDivideTheHeads) {
  if (g_runtime->world().size() % 4 != 0) GTEST_SKIP() << "needs 4 ranks";
  ParallelGrid grid(*g_runtime, 4);
  GptConfig c = tiny_config();
  c.n_head = 2;
  try {
    Gpt m(c, 1, 4, &grid.tp());
    ADD_FAILURE() << "TP = 4 with 2 heads should throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("n_head"), std::string::npos) << e.what();
  }
}
