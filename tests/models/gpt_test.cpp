#include "models/gpt/gpt.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <new>
#include <string>
#include <vector>

#include "../nn/grad_check.h"
#include "../nn/thread_group.h"
#include "backend/cpu/gemv.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/strfmt.h"
#include "dist/communicator.h"
#include "gpt_tp_check.h"
#include "nn/matmul.h"

// Counting global operator new: a training step must not allocate.
namespace {
std::atomic<bool> g_count_news{false};
std::atomic<long> g_n_news{0};
}  // namespace

// GCC flags free() on a pointer from the replaced operator new; both sides are ours.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(size_t n) {
  if (g_count_news.load(std::memory_order_relaxed)) g_n_news.fetch_add(1, std::memory_order_relaxed);
  void* p = std::malloc(n == 0 ? 1 : n);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
#pragma GCC diagnostic pop

namespace chorus::models {
namespace {

using chorus::testing::random_tokens;

GptConfig tiny_config() {
  GptConfig c;
  c.n_layer = 2;
  c.n_embd = 16;
  c.n_head = 2;
  c.vocab_size = 37;  // padded to 64
  c.context = 8;
  return c;
}

// Deterministic non-trivial weights, the formula of
// tests/fixtures/make_gpt_reference.py: tensor k (table index), element j
// (padded wte rows stay zero).
float unit(uint64_t k, uint64_t j) {
  uint64_t x = (k << 32) | j;
  return static_cast<float>(splitmix64(x) >> 40) / 16777216.0f * 2.0f - 1.0f;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

void set_formula_weights(Gpt& model) {
  const auto& table = model.param_table();
  auto params = model.params();
  std::fill(params.begin(), params.end(), 0.0f);
  for (size_t k = 0; k < table.size(); ++k) {
    const ParamSpec& spec = table[k];
    size_t n = spec.numel;
    if (spec.name == "wte.weight") n = static_cast<size_t>(model.config().vocab_size) * model.config().n_embd;
    float* w = params.data() + spec.offset;
    const bool ln_gain = ends_with(spec.name, "ln_1.weight") || ends_with(spec.name, "ln_2.weight") ||
                         spec.name == "ln_f.weight";
    for (size_t j = 0; j < n; ++j) {
      const float u = unit(k, j);
      if (ln_gain) {
        w[j] = 1.0f + 0.25f * u;
      } else if (ends_with(spec.name, ".bias")) {
        w[j] = 0.0625f * u;
      } else {
        w[j] = 0.25f * u;
      }
    }
  }
}

template <typename F>
void expect_error_mentions(F&& f, const std::string& what) {
  try {
    f();
    ADD_FAILURE() << "expected chorus::Error mentioning " << what;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}

TEST(GptConfig, ValidateNamesTheBadField) {
  EXPECT_NO_THROW(tiny_config().validate());
  auto bad = [](auto mutate) {
    GptConfig c = tiny_config();
    mutate(c);
    return c;
  };
  expect_error_mentions([&] { bad([](GptConfig& c) { c.n_layer = 0; }).validate(); }, "n_layer");
  expect_error_mentions([&] { bad([](GptConfig& c) { c.n_embd = -4; }).validate(); }, "n_embd");
  expect_error_mentions([&] { bad([](GptConfig& c) { c.n_head = 0; }).validate(); }, "n_head");
  expect_error_mentions([&] { bad([](GptConfig& c) { c.n_head = 3; }).validate(); }, "n_head");
  expect_error_mentions([&] { bad([](GptConfig& c) { c.vocab_size = 0; }).validate(); }, "vocab_size");
  expect_error_mentions([&] { bad([](GptConfig& c) { c.context = 0; }).validate(); }, "context");
  EXPECT_EQ(tiny_config().padded_vocab(), 64);
}

TEST(Gpt, ConstructorAndForwardRejectBadSizes) {
  const GptConfig c = tiny_config();
  expect_error_mentions([&] { Gpt m(c, 0, 4); }, "max_batch");
  expect_error_mentions([&] { Gpt m(c, 1, c.context + 1); }, "max_seq");
  GptConfig bad = c;
  bad.n_head = 5;
  expect_error_mentions([&] { Gpt m(bad, 1, 4); }, "n_head");

  Gpt m(c, 2, 4);
  m.init_weights(1);
  auto tok = random_tokens(12, c.vocab_size, 1);
  expect_error_mentions([&] { m.forward(tok.data(), tok.data(), 3, 4); }, "max_batch");
  expect_error_mentions([&] { m.forward(tok.data(), tok.data(), 2, 5); }, "max_seq");
  tok[3] = c.vocab_size;
  expect_error_mentions([&] { m.forward(tok.data(), nullptr, 2, 4); }, "tokens[3]");
  tok[3] = 0;
  tok[5] = -1;
  expect_error_mentions([&] { m.forward(tok.data() + 4, tok.data(), 1, 4); }, "tokens[1]");
  tok[5] = -2;  // a target of -1 means "ignored"; other negatives are refused
  expect_error_mentions([&] { m.forward(tok.data(), tok.data() + 2, 1, 4); }, "targets[3]");
  expect_error_mentions([&] { m.backward(); }, "forward");
}

TEST(Gpt, ParamTableIsContiguousWithGpt2NamesAndShapes) {
  const GptConfig c = tiny_config();
  Gpt m(c, 1, 4);
  const auto& table = m.param_table();
  const int64_t C = c.n_embd;
  std::vector<std::pair<std::string, std::vector<int64_t>>> expected = {{"wte.weight", {64, C}},
                                                                        {"wpe.weight", {c.context, C}}};
  for (int l = 0; l < c.n_layer; ++l) {
    const std::string h = "h." + std::to_string(l) + ".";
    expected.insert(expected.end(), {{h + "ln_1.weight", {C}},
                                     {h + "ln_1.bias", {C}},
                                     {h + "attn.c_attn.weight", {3 * C, C}},
                                     {h + "attn.c_attn.bias", {3 * C}},
                                     {h + "attn.c_proj.weight", {C, C}},
                                     {h + "attn.c_proj.bias", {C}},
                                     {h + "ln_2.weight", {C}},
                                     {h + "ln_2.bias", {C}},
                                     {h + "mlp.c_fc.weight", {4 * C, C}},
                                     {h + "mlp.c_fc.bias", {4 * C}},
                                     {h + "mlp.c_proj.weight", {C, 4 * C}},
                                     {h + "mlp.c_proj.bias", {C}}});
  }
  expected.insert(expected.end(), {{"ln_f.weight", {C}}, {"ln_f.bias", {C}}});
  ASSERT_EQ(table.size(), expected.size());
  size_t offset = 0;
  for (size_t i = 0; i < table.size(); ++i) {
    const ParamSpec& s = table[i];
    EXPECT_EQ(s.name, expected[i].first);
    EXPECT_EQ(s.shape, expected[i].second) << s.name;
    EXPECT_EQ(s.global_shape, s.shape) << s.name;
    size_t numel = 1;
    for (int64_t d : s.shape) numel *= d;
    EXPECT_EQ(s.numel, numel) << s.name;
    EXPECT_EQ(s.offset, offset) << s.name << " is not contiguous with the previous tensor";
    offset += s.numel;
    EXPECT_EQ(s.decay, s.shape.size() == 2) << s.name << ": decay exactly for matrices and embeddings";
  }
  EXPECT_EQ(offset, m.n_params());
  EXPECT_EQ(m.params().size(), m.n_params());
  EXPECT_EQ(m.grads().size(), m.n_params());
  // Per layer: 12 C^2 + 13 C floats, one contiguous range.
  const size_t per_layer = 12 * C * C + 13 * C;
  for (int l = 0; l < c.n_layer; ++l) {
    const ParamSpec& first = table[2 + 12 * l];
    const ParamSpec& last = table[2 + 12 * l + 11];
    EXPECT_EQ(last.offset + last.numel - first.offset, per_layer);
  }
  EXPECT_EQ(m.n_params(), 64 * C + c.context * C + c.n_layer * per_layer + 2 * C);
  // FLOP accounting: real vocabulary, no position embedding.
  EXPECT_EQ(m.n_flop_params(), m.n_params() - (64 - c.vocab_size) * C - c.context * C);
  EXPECT_DOUBLE_EQ(m.flops_per_token(5), 6.0 * m.n_flop_params() + 12.0 * c.n_layer * C * 5);
}

TEST(Gpt, FlopParamsMatchThePeerForGptMini) {
  GptConfig c;  // bench/peers/torch_gpt_bench.py --preset gpt-mini prints these counts
  c.n_layer = 6;
  c.n_embd = 384;
  c.n_head = 6;
  c.vocab_size = 8192;
  c.context = 256;
  Gpt m(c, 1, 1);
  EXPECT_EQ(m.n_params(), 13891584u);
  EXPECT_EQ(m.n_flop_params(), 13793280u);
  EXPECT_DOUBLE_EQ(m.flops_per_token(256), 6.0 * 13793280 + 12.0 * 6 * 384 * 256);
}

TEST(Gpt, InitFollowsGpt2AndLossStartsNearLogVocab) {
  GptConfig c;
  c.n_layer = 2;
  c.n_embd = 64;
  c.n_head = 4;
  c.vocab_size = 500;
  c.context = 32;
  Gpt m(c, 2, 32);
  m.init_weights(42);
  const auto& table = m.param_table();
  auto p = m.params();
  auto stddev = [&](const ParamSpec& s) {
    double sum = 0.0, sq = 0.0;
    for (size_t j = 0; j < s.numel; ++j) {
      sum += p[s.offset + j];
      sq += p[s.offset + j] * p[s.offset + j];
    }
    return std::sqrt(sq / s.numel - (sum / s.numel) * (sum / s.numel));
  };
  for (const ParamSpec& s : table) {
    if (ends_with(s.name, ".bias")) {
      for (size_t j = 0; j < s.numel; ++j) ASSERT_EQ(p[s.offset + j], 0.0f) << s.name;
    } else if (s.shape.size() == 1) {  // LayerNorm gains
      for (size_t j = 0; j < s.numel; ++j) ASSERT_EQ(p[s.offset + j], 1.0f) << s.name;
    } else if (ends_with(s.name, "c_proj.weight")) {
      EXPECT_NEAR(stddev(s), 0.02 / std::sqrt(2.0 * c.n_layer), 0.001) << s.name;
    } else if (s.name != "wte.weight") {
      EXPECT_NEAR(stddev(s), 0.02, 0.001) << s.name;
    }
  }
  const ParamSpec& wte = table[0];
  for (size_t j = static_cast<size_t>(c.vocab_size) * c.n_embd; j < wte.numel; ++j)
    ASSERT_EQ(p[wte.offset + j], 0.0f) << "padded wte row";
  // Same seed, same weights; another seed, other weights.
  Gpt m2(c, 1, 1);
  m2.init_weights(42);
  EXPECT_EQ(std::memcmp(m.params().data(), m2.params().data(), m.n_params() * sizeof(float)), 0);
  m2.init_weights(43);
  EXPECT_NE(std::memcmp(m.params().data(), m2.params().data(), m.n_params() * sizeof(float)), 0);

  auto tok = random_tokens(64, c.vocab_size, 5), tgt = random_tokens(64, c.vocab_size, 6);
  const float loss = m.forward(tok.data(), tgt.data(), 2, 32);
  EXPECT_NEAR(loss, std::log(static_cast<double>(c.vocab_size)), 0.05);
}

TEST(Gpt, GradientsMatchFiniteDifferences) {
  const GptConfig c = tiny_config();
  const int B = 2, T = 5;
  Gpt m(c, B, T);
  set_formula_weights(m);
  auto tok = random_tokens(B * T, c.vocab_size, 7), tgt = random_tokens(B * T, c.vocab_size, 8);
  tok[3] = tok[7] = 4;  // a repeated token: its wte row gets two contributions
  // ~200 elements: 7 random ones from every tensor, plus the used wte rows;
  // padded vocabulary rows never receive gradient.
  chorus::testing::expect_gpt_gradients_match_fd(m, tok, tgt, B, T, 7, 2e-4, 2e-2);
}

TEST(Gpt, BackwardAccumulatesScaledMicroBatches) {
  const GptConfig c = tiny_config();
  const int B = 2, T = 8;
  Gpt m(c, B, T);
  set_formula_weights(m);
  auto tok = random_tokens(B * T, c.vocab_size, 1), tgt = random_tokens(B * T, c.vocab_size, 2);
  m.zero_grad();
  m.forward(tok.data(), tgt.data(), B, T);
  m.backward(1.0f);
  std::vector<float> full(m.grads().begin(), m.grads().end());
  m.zero_grad();
  m.forward(tok.data(), tgt.data(), B, T);
  m.backward(0.25f);
  expect_error_mentions([&] { m.backward(0.75f); }, "once per forward");
  m.forward(tok.data(), tgt.data(), B, T);
  m.backward(0.75f);
  auto g = m.grads();
  for (size_t i = 0; i < full.size(); ++i) ASSERT_NEAR(g[i], full[i], 1e-6f + 1e-5f * std::abs(full[i])) << i;
}

TEST(Gpt, TrainingStepAllocatesNothing) {
  const GptConfig c = tiny_config();
  const int B = 2, T = 8;
  Gpt m(c, B, T);
  m.init_weights(3);
  auto tok = random_tokens(B * T, c.vocab_size, 1), tgt = random_tokens(B * T, c.vocab_size, 2);
  m.forward(tok.data(), tgt.data(), B, T);  // warm-up: thread pools, BLAS buffers
  m.backward();
  g_n_news = 0;
  g_count_news = true;
  m.zero_grad();
  m.forward(tok.data(), tgt.data(), B, T);
  m.backward(0.5f);
  m.forward(tok.data(), tgt.data(), 1, 5);  // a smaller batch too
  m.backward(0.5f);
  g_count_news = false;
  EXPECT_EQ(g_n_news.load(), 0) << "operator new calls during a training step";
}

TEST(Gpt, TwoRunsAreBitIdentical) {
  const GptConfig c = tiny_config();
  const int B = 3, T = 8;
  auto tok = random_tokens(B * T, c.vocab_size, 3), tgt = random_tokens(B * T, c.vocab_size, 4);
  std::vector<float> losses, grads[2];
  for (int run = 0; run < 2; ++run) {
    Gpt m(c, B, T);
    m.init_weights(11);
    m.zero_grad();
    losses.push_back(m.forward(tok.data(), tgt.data(), B, T));
    m.backward();
    grads[run].assign(m.grads().begin(), m.grads().end());
  }
  EXPECT_EQ(losses[0], losses[1]);
  EXPECT_EQ(grads[0], grads[1]);
}

TEST(Gpt, BatchSmallerThanCapacityGivesSameResult) {
  const GptConfig c = tiny_config();
  const int B = 2, T = 5;
  Gpt exact(c, B, T), roomy(c, 4, c.context);
  set_formula_weights(exact);
  set_formula_weights(roomy);
  auto tok = random_tokens(B * T, c.vocab_size, 5), tgt = random_tokens(B * T, c.vocab_size, 6);
  exact.zero_grad();
  roomy.zero_grad();
  const float l1 = exact.forward(tok.data(), tgt.data(), B, T);
  // A bigger batch first, so stale activations sit in the roomy buffers.
  auto tok_big = random_tokens(4 * c.context, c.vocab_size, 7);
  roomy.forward(tok_big.data(), tok_big.data(), 4, c.context);
  const float l2 = roomy.forward(tok.data(), tgt.data(), B, T);
  EXPECT_NEAR(l1, l2, 1e-6);
  exact.backward();
  roomy.backward();
  auto g1 = exact.grads(), g2 = roomy.grads();
  for (size_t i = 0; i < g1.size(); ++i) ASSERT_NEAR(g1[i], g2[i], 1e-6f + 1e-5f * std::abs(g1[i])) << i;
}

TEST(Gpt, DecodeStepMatchesForwardLogits) {
  const GptConfig c = tiny_config();
  const int B = 2, T = c.context, Vp = c.padded_vocab();
  Gpt m(c, B, T);
  set_formula_weights(m);
  auto tok = random_tokens(B * T, c.vocab_size, 12);
  EXPECT_EQ(m.forward(tok.data(), nullptr, B, T), 0.0f);
  std::vector<float> full(m.logits(), m.logits() + static_cast<size_t>(B) * T * Vp);
  expect_error_mentions([&] { m.decode_step(tok.data(), 0); }, "reset_cache");
  for (int pass = 0; pass < 2; ++pass) {  // a second pass reuses the cache after reset_cache
    m.reset_cache(B);
    for (int pos = 0; pos < T; ++pos) {
      const int32_t step[2] = {tok[pos], tok[T + pos]};
      const float* logits = m.decode_step(step, pos);
      for (int b = 0; b < B; ++b)
        for (int v = 0; v < c.vocab_size; ++v)
          ASSERT_NEAR(logits[b * Vp + v], full[(static_cast<size_t>(b) * T + pos) * Vp + v], 2e-5)
              << "b " << b << " pos " << pos << " v " << v;
    }
  }
  m.reset_cache(B);
  expect_error_mentions([&] { m.decode_step(tok.data(), 1); }, "cached");
  expect_error_mentions([&] { m.decode_step(tok.data(), c.context); }, "pos");
}

// Decoding on packed weights (set_decode_weights: int8 or bf16) gives the
// logits of fp32 decoding with every packed matrix (block matrices and wte,
// which is both the LM head and the token embedding) replaced by its unpacked
// values, up to summation order; back on fp32, decoding is the fp32 model's
// exactly.
void expect_packed_decoding_equals_the_unpacked_weights(nn::DecodeWeights format) {
  SCOPED_TRACE(nn::decode_weights_name(format));
  const GptConfig c = tiny_config();
  const int B = 2, T = c.context, Vp = c.padded_vocab();
  Gpt m(c, B, T), deq(c, B, T);
  m.init_weights(3);
  auto pm = m.params(), pd = deq.params();
  std::copy(pm.begin(), pm.end(), pd.begin());
  int n_packed = 0;
  for (const ParamSpec& spec : deq.param_table()) {
    if (!spec.hidden_matrix && spec.name != "wte.weight") continue;
    const int rows = static_cast<int>(spec.shape[0]), cols = static_cast<int>(spec.shape[1]);
    const nn::PackedWeight w = nn::pack_weight(pd.data() + spec.offset, rows, cols, format);
    for (int r = 0; r < rows; ++r) w.row(r, pd.data() + spec.offset + static_cast<size_t>(r) * cols);
    ++n_packed;
  }
  EXPECT_EQ(n_packed, 4 * c.n_layer + 1);
  const auto tok = random_tokens(B * T, c.vocab_size, 5);
  const auto decode = [&](Gpt& g) {
    std::vector<float> out;
    g.reset_cache(B);
    for (int pos = 0; pos < T; ++pos) {
      const int32_t step[2] = {tok[pos], tok[T + pos]};
      const float* l = g.decode_step(step, pos);
      out.insert(out.end(), l, l + static_cast<size_t>(B) * Vp);
    }
    return out;
  };
  const auto f32 = decode(m);
  m.set_decode_weights(format);
  EXPECT_EQ(m.decode_weights(), format);
  const auto packed = decode(m), want = decode(deq);
  double max_err = 0;
  for (int b = 0; b < B; ++b)
    for (int pos = 0; pos < T; ++pos)
      for (int v = 0; v < c.vocab_size; ++v) {
        const size_t k = (static_cast<size_t>(pos) * B + b) * Vp + v;
        ASSERT_NEAR(packed[k], want[k], 1e-5 + 1e-4 * std::abs(want[k])) << "b " << b << " pos " << pos << " v " << v;
        max_err = std::max(max_err, double(std::abs(packed[k] - f32[k])));
      }
  EXPECT_GT(max_err, 0.0) << "packed decoding returned the fp32 logits: nothing was packed";
  m.set_decode_weights(nn::DecodeWeights::fp32);
  EXPECT_EQ(m.decode_weights(), nn::DecodeWeights::fp32);
  EXPECT_EQ(decode(m), f32);
}

TEST(Gpt, DecodeInt8EqualsDecodingTheDequantisedWeights) {
  expect_packed_decoding_equals_the_unpacked_weights(nn::DecodeWeights::int8);
}

TEST(Gpt, DecodeBf16EqualsDecodingTheRoundedWeights) {
  expect_packed_decoding_equals_the_unpacked_weights(nn::DecodeWeights::bf16);
}

// w8a8 decoding (int8 weights and int8 activation rows) stays close to the
// int8 weights' decoding and is not it: the activations were quantised too.
TEST(Gpt, DecodeW8a8IsCloseToInt8Weights) {
  const GptConfig c = tiny_config();
  const int B = 2, T = c.context, Vp = c.padded_vocab();
  Gpt m(c, B, T);
  m.init_weights(3);
  const auto tok = random_tokens(B * T, c.vocab_size, 5);
  const auto decode = [&](nn::DecodeWeights w) {
    m.set_decode_weights(w);
    std::vector<float> out;
    m.reset_cache(B);
    for (int pos = 0; pos < T; ++pos) {
      const int32_t step[2] = {tok[pos], tok[T + pos]};
      const float* l = m.decode_step(step, pos);
      for (int b = 0; b < B; ++b) out.insert(out.end(), l + b * Vp, l + b * Vp + c.vocab_size);
    }
    return out;
  };
  const auto i8 = decode(nn::DecodeWeights::int8), a8 = decode(nn::DecodeWeights::w8a8);
  EXPECT_EQ(m.decode_weights(), nn::DecodeWeights::w8a8);
  double max_diff = 0, max_abs = 0;
  for (size_t k = 0; k < i8.size(); ++k) {
    max_diff = std::max(max_diff, double(std::abs(a8[k] - i8[k])));
    max_abs = std::max(max_abs, double(std::abs(i8[k])));
  }
  EXPECT_GT(max_diff, 0.0) << "w8a8 gave the int8 logits: the activations were not quantised";
  EXPECT_LT(max_diff, 0.02 * max_abs) << "max |w8a8 - int8| " << max_diff << " of logits up to " << max_abs;
}

// ---- cross-check against PyTorch (tests/fixtures/make_gpt_reference.py) ----

struct Reference {
  GptConfig cfg;
  int B = 0, T = 0;
  std::vector<int32_t> tokens, targets;
  double loss = 0.0;
  std::vector<float> logits;  // (B, T, V)
  struct Tensor {
    std::string name;
    std::vector<int64_t> shape;
    std::vector<float> grad;
  };
  std::vector<Tensor> tensors;
};

Reference load_reference(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open " + path);
  auto read = [&](void* dst, size_t n) {
    f.read(static_cast<char*>(dst), static_cast<std::streamsize>(n));
    if (!f) throw Error("truncated fixture " + path);
  };
  auto i32 = [&] {
    int32_t v;
    read(&v, 4);
    return v;
  };
  char magic[8];
  read(magic, 8);
  if (std::memcmp(magic, "CHGPTREF", 8) != 0) throw Error("bad magic in " + path);
  uint32_t version;
  read(&version, 4);
  if (version != 1) throw Error("fixture version mismatch; HINT: rerun make_gpt_reference.py");
  Reference r;
  r.cfg.n_layer = i32();
  r.cfg.n_embd = i32();
  r.cfg.n_head = i32();
  r.cfg.vocab_size = i32();
  r.cfg.context = i32();
  r.B = i32();
  r.T = i32();
  const size_t N = static_cast<size_t>(r.B) * r.T;
  r.tokens.resize(N);
  r.targets.resize(N);
  read(r.tokens.data(), N * 4);
  read(r.targets.data(), N * 4);
  read(&r.loss, 8);
  r.logits.resize(N * r.cfg.vocab_size);
  read(r.logits.data(), r.logits.size() * 4);
  uint32_t n_tensors;
  read(&n_tensors, 4);
  for (uint32_t i = 0; i < n_tensors; ++i) {
    Reference::Tensor t;
    uint32_t len, ndim;
    read(&len, 4);
    t.name.resize(len);
    read(t.name.data(), len);
    read(&ndim, 4);
    t.shape.resize(ndim);
    read(t.shape.data(), ndim * 8);
    size_t numel = 1;
    for (int64_t d : t.shape) numel *= d;
    t.grad.resize(numel);
    read(t.grad.data(), numel * 4);
    r.tensors.push_back(std::move(t));
  }
  return r;
}

TEST(GptReference, MatchesPyTorchLossLogitsAndGradients) {
  const Reference ref = load_reference(std::string(CHORUS_SOURCE_DIR) + "/tests/fixtures/gpt_tiny_ref.bin");
  const int B = ref.B, T = ref.T, V = ref.cfg.vocab_size, Vp = ref.cfg.padded_vocab();
  Gpt m(ref.cfg, B + 1, ref.cfg.context);  // roomier than needed: strides must not matter
  set_formula_weights(m);
  m.zero_grad();
  const float loss = m.forward(ref.tokens.data(), ref.targets.data(), B, T);
  EXPECT_NEAR(loss, ref.loss, 2e-6 * ref.loss);

  double max_logit = 0.0, max_diff = 0.0;
  for (size_t r = 0; r < static_cast<size_t>(B) * T; ++r) {
    for (int v = 0; v < V; ++v) {
      max_logit = std::max(max_logit, std::abs(static_cast<double>(ref.logits[r * V + v])));
      max_diff =
          std::max(max_diff, std::abs(static_cast<double>(m.logits()[r * Vp + v]) - ref.logits[r * V + v]));
    }
  }
  EXPECT_LT(max_diff, 1e-5 * max_logit) << "logits";
  RecordProperty("logits_rel_err", strfmt("%.2e", max_diff / max_logit));
  RecordProperty("loss_rel_err", strfmt("%.2e", std::abs(loss - ref.loss) / ref.loss));

  m.backward();
  const auto& table = m.param_table();
  ASSERT_EQ(ref.tensors.size(), table.size());
  auto grads = m.grads();
  for (size_t k = 0; k < table.size(); ++k) {
    const ParamSpec& s = table[k];
    const Reference::Tensor& t = ref.tensors[k];
    ASSERT_EQ(t.name, s.name);
    std::vector<int64_t> shape = s.shape;
    if (s.name == "wte.weight") shape[0] = V;  // the reference has no padded rows
    ASSERT_EQ(t.shape, shape) << s.name;
    double max_ref = 0.0, diff = 0.0;
    for (size_t j = 0; j < t.grad.size(); ++j) {
      max_ref = std::max(max_ref, std::abs(static_cast<double>(t.grad[j])));
      diff = std::max(diff, std::abs(static_cast<double>(grads[s.offset + j]) - t.grad[j]));
    }
    // Per tensor: max abs error relative to the tensor's largest gradient.
    EXPECT_LT(diff, 1e-5 * max_ref) << s.name << " max |grad| " << max_ref;
    RecordProperty(s.name + "_rel_err", strfmt("%.2e", diff / max_ref));
    for (size_t j = t.grad.size(); j < s.numel; ++j) ASSERT_EQ(grads[s.offset + j], 0.0f) << "padded wte row";
  }
}

// Tensor parallelism without MPI: a TP group of threads (tests/nn/thread_group.h)
// holding shards of the formula weights gives one rank's loss and gradients.
// tests/dist/gpt_tp_test.cpp checks the same under mpirun, with init_weights.
TEST(Gpt, TensorParallelShardsOnThreadsMatchOneRank) {
  // 2 heads, vocab 37 padded to 64, over 2 ranks.
  chorus::testing::expect_tp_matches_one_rank(tiny_config(), set_formula_weights, 2, 6, 2);
}

TEST(Gpt, TensorParallelRefusesGenerationAndBadDegrees) {
  GptConfig c = tiny_config();
  chorus::testing::ThreadGroup(2).run([&](dist::Communicator& comm) {
    Gpt m(c, 1, 4, &comm);
    EXPECT_EQ(m.local_vocab(), c.padded_vocab() / 2);
    EXPECT_EQ(m.vocab_begin(), comm.rank() * c.padded_vocab() / 2);
    expect_error_mentions([&] { m.reset_cache(1); }, "generate runs on one rank");
    int32_t tok = 0;
    expect_error_mentions([&] { m.decode_step(&tok, 0); }, "generate runs on one rank");
  });
  chorus::testing::ThreadGroup(4).run([&](dist::Communicator& comm) {
    expect_error_mentions([&] { Gpt m(c, 1, 4, &comm); }, "n_head");  // 2 heads over 4 ranks
  });
}

}  // namespace
}  // namespace chorus::models
