// The GPT architecture options (GptConfig: rotary positions, RMSNorm, QK-norm,
// ReLU^2 / SwiGLU MLPs, an untied head, logit soft-capping), each alone and
// combined: the parameter table, gradients against finite differences,
// decoding against the training forward, tensor parallelism against one rank,
// bf16 / fp16 against fp32, int8 decoding, and the JSON that records them.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <ostream>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../nn/grad_check.h"
#include "core/error.h"
#include "core/rng.h"
#include "gpt_tp_check.h"
#include "models/gpt/gpt.h"

namespace chorus::models {
namespace {

using chorus::testing::random_tokens;

struct Arch {
  const char* name;
  PosKind pos = PosKind::learned;
  NormKind norm = NormKind::layernorm;
  bool qk_norm = false;
  MlpKind mlp = MlpKind::gelu;
  bool tied = true;
  float softcap = 0.0f;
};

// Test names and failure messages show the variant's name, not its bytes.
void PrintTo(const Arch& a, std::ostream* os) { *os << a.name; }

GptConfig config_of(const Arch& a) {
  GptConfig c;
  c.n_layer = 2;
  c.n_embd = 16;
  c.n_head = 2;
  c.vocab_size = 37;  // padded to 64
  c.context = 8;
  c.pos = a.pos;
  c.norm = a.norm;
  c.qk_norm = a.qk_norm;
  c.mlp = a.mlp;
  c.tied_head = a.tied;
  c.logit_softcap = a.softcap;
  return c;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Deterministic non-trivial weights (padded vocabulary rows stay zero): norm
// gains near 1, small biases, matrices of scale 0.25.
void set_weights(Gpt& model, uint64_t seed) {
  const auto& table = model.param_table();
  auto params = model.params();
  std::fill(params.begin(), params.end(), 0.0f);
  const GptConfig& c = model.config();
  for (size_t k = 0; k < table.size(); ++k) {
    const ParamSpec& spec = table[k];
    size_t n = spec.numel;
    if (spec.name == "wte.weight" || spec.name == "lm_head.weight") n = static_cast<size_t>(c.vocab_size) * c.n_embd;
    float* w = params.data() + spec.offset;
    Rng rng(seed, k);
    const bool gain = spec.shape.size() == 1 && ends_with(spec.name, ".weight");
    for (size_t j = 0; j < n; ++j) {
      const float u = 2.0f * rng.uniform() - 1.0f;
      w[j] = gain ? 1.0f + 0.25f * u : ends_with(spec.name, ".bias") ? 0.0625f * u : 0.25f * u;
    }
  }
}

const ParamSpec* find(const Gpt& m, const std::string& name) {
  for (const ParamSpec& p : m.param_table())
    if (p.name == name) return &p;
  return nullptr;
}

class GptArch : public ::testing::TestWithParam<Arch> {};

TEST_P(GptArch, ParamTableHasExactlyTheTensorsOfTheOptions) {
  const GptConfig c = config_of(GetParam());
  Gpt m(c, 2, 4);
  EXPECT_EQ(find(m, "wpe.weight") != nullptr, c.pos == PosKind::learned);
  EXPECT_EQ(find(m, "lm_head.weight") != nullptr, !c.tied_head);
  for (const char* norm : {"h.0.ln_1", "h.1.ln_2", "ln_f"}) {
    EXPECT_NE(find(m, std::string(norm) + ".weight"), nullptr) << norm;
    EXPECT_EQ(find(m, std::string(norm) + ".bias") != nullptr, c.norm == NormKind::layernorm) << norm;
  }
  const ParamSpec* fc = find(m, "h.0.mlp.c_fc.weight");
  const ParamSpec* proj = find(m, "h.0.mlp.c_proj.weight");
  ASSERT_TRUE(fc && proj);
  const int64_t F = 64;  // GELU / ReLU^2: 4 * 16; SwiGLU: 8 * 16 / 3 = 42 rounded up to 64
  EXPECT_EQ(c.mlp_hidden(), F);
  EXPECT_EQ(fc->global_shape, (std::vector<int64_t>{c.mlp == MlpKind::swiglu ? 2 * F : F, 16}));
  EXPECT_EQ(fc->tp_parts, c.mlp == MlpKind::swiglu ? 2 : 1);
  EXPECT_EQ(proj->global_shape, (std::vector<int64_t>{16, F}));
  // One contiguous buffer in table order.
  size_t offset = 0;
  for (const ParamSpec& p : m.param_table()) {
    EXPECT_EQ(p.offset, offset) << p.name;
    offset += p.numel;
  }
  EXPECT_EQ(offset, m.n_params());
  // Init: padded vocabulary rows of every vocabulary table stay zero.
  m.init_weights(5);
  for (const char* name : {"wte.weight", "lm_head.weight"}) {
    const ParamSpec* p = find(m, name);
    if (p == nullptr) continue;
    for (size_t j = static_cast<size_t>(c.vocab_size) * c.n_embd; j < p->numel; ++j)
      ASSERT_EQ(m.params()[p->offset + j], 0.0f) << name;
  }
}

TEST_P(GptArch, GradientsMatchFiniteDifferences) {
  const GptConfig c = config_of(GetParam());
  const int B = 2, T = 5;
  Gpt m(c, B, T);
  set_weights(m, 11);
  auto tok = random_tokens(B * T, c.vocab_size, 7), tgt = random_tokens(B * T, c.vocab_size, 8);
  tok[3] = tok[7] = 4;  // a repeated token
  tgt[2] = -1;          // an ignored position
  chorus::testing::expect_gpt_gradients_match_fd(m, tok, tgt, B, T, 9, 3e-4, 3e-2);
}

TEST_P(GptArch, DecodeStepMatchesForwardLogits) {
  const GptConfig c = config_of(GetParam());
  const int B = 2, T = c.context, Vp = c.padded_vocab();
  Gpt m(c, B, T);
  set_weights(m, 12);
  auto tok = random_tokens(B * T, c.vocab_size, 12);
  m.forward(tok.data(), nullptr, B, T);
  std::vector<float> full(m.logits(), m.logits() + static_cast<size_t>(B) * T * Vp);
  m.reset_cache(B);
  for (int pos = 0; pos < T; ++pos) {
    const int32_t step[2] = {tok[pos], tok[T + pos]};
    const float* logits = m.decode_step(step, pos);
    for (int b = 0; b < B; ++b)
      for (int v = 0; v < c.vocab_size; ++v)
        ASSERT_NEAR(logits[b * Vp + v], full[(static_cast<size_t>(b) * T + pos) * Vp + v], 3e-5)
            << "b " << b << " pos " << pos << " v " << v;
  }
  if (c.logit_softcap > 0.0f) {
    for (int i = 0; i < B * T; ++i)
      for (int v = 0; v < c.vocab_size; ++v) ASSERT_LE(std::abs(full[static_cast<size_t>(i) * Vp + v]), c.logit_softcap);
  }
  // int8 decoding runs every option too and stays close to fp32.
  m.set_decode_weights(nn::DecodeWeights::int8);
  m.reset_cache(B);
  double worst = 0.0, scale = 0.0;
  for (int pos = 0; pos < T; ++pos) {
    const int32_t step[2] = {tok[pos], tok[T + pos]};
    const float* logits = m.decode_step(step, pos);
    for (int b = 0; b < B; ++b)
      for (int v = 0; v < c.vocab_size; ++v) {
        const float want = full[(static_cast<size_t>(b) * T + pos) * Vp + v];
        worst = std::max(worst, static_cast<double>(std::abs(logits[b * Vp + v] - want)));
        scale = std::max(scale, static_cast<double>(std::abs(want)));
      }
  }
  EXPECT_GT(worst, 0.0);
  EXPECT_LT(worst, 0.05 * scale);
}

TEST_P(GptArch, TensorParallelShardsOnThreadsMatchOneRank) {
  chorus::testing::expect_tp_matches_one_rank(
      config_of(GetParam()), [](Gpt& m) { set_weights(m, 13); }, 2, 6, 2, /*every_tensor_has_gradient=*/true);
}

TEST_P(GptArch, HalfPrecisionFollowsFp32) {
  const GptConfig c = config_of(GetParam());
  const int B = 2, T = 6;
  auto tok = random_tokens(B * T, c.vocab_size, 21), tgt = random_tokens(B * T, c.vocab_size, 22);
  Gpt ref(c, B, T);
  set_weights(ref, 14);
  ref.zero_grad();
  const float want = ref.forward(tok.data(), tgt.data(), B, T);
  ref.backward();
  for (Precision p : {Precision::bf16, Precision::fp16}) {
    Gpt m(c, B, T, nullptr, p);
    auto dst = m.params();
    std::copy(ref.master_params().begin(), ref.master_params().end(), dst.begin());
    m.zero_grad();
    const float got = m.forward(tok.data(), tgt.data(), B, T);
    m.backward();
    EXPECT_NEAR(got, want, (p == Precision::bf16 ? 3e-2 : 5e-3) * want) << precision_name(p);
    // The gradient direction survives the 16-bit activations.
    double dot = 0, n1 = 0, n2 = 0;
    for (size_t i = 0; i < ref.n_params(); ++i) {
      dot += static_cast<double>(ref.grads()[i]) * m.grads()[i];
      n1 += static_cast<double>(ref.grads()[i]) * ref.grads()[i];
      n2 += static_cast<double>(m.grads()[i]) * m.grads()[i];
    }
    EXPECT_GT(dot / std::sqrt(n1 * n2), p == Precision::bf16 ? 0.99 : 0.999) << precision_name(p);
  }
}

TEST_P(GptArch, ArchJsonRoundTrips) {
  const GptConfig c = config_of(GetParam());
  const nlohmann::json j = gpt_arch_to_json(c);
  EXPECT_EQ(j.empty(), c.is_gpt2());
  GptConfig back = config_of(Arch{"gpt2"});
  gpt_arch_from_json(back, j, "test");
  EXPECT_EQ(gpt_arch_to_json(back), j);
  EXPECT_EQ(back.arch_name(), c.arch_name());
}

INSTANTIATE_TEST_SUITE_P(
    Options, GptArch,
    ::testing::Values(Arch{"gpt2"}, Arch{"rotary", PosKind::rotary}, Arch{"rmsnorm", PosKind::learned, NormKind::rmsnorm},
                      Arch{"qknorm", PosKind::learned, NormKind::layernorm, true},
                      Arch{"relu2", PosKind::learned, NormKind::layernorm, false, MlpKind::relu2},
                      Arch{"swiglu", PosKind::learned, NormKind::layernorm, false, MlpKind::swiglu},
                      Arch{"untied", PosKind::learned, NormKind::layernorm, false, MlpKind::gelu, false},
                      Arch{"softcap", PosKind::learned, NormKind::layernorm, false, MlpKind::gelu, true, 1.5f},
                      Arch{"modern", PosKind::rotary, NormKind::rmsnorm, true, MlpKind::relu2, false, 1.5f},
                      Arch{"modern_swiglu", PosKind::rotary, NormKind::rmsnorm, true, MlpKind::swiglu, false, 1.5f}),
    [](const ::testing::TestParamInfo<Arch>& i) { return std::string(i.param.name); });

TEST(GptArchJson, BadValuesAreRefusedByName) {
  GptConfig c;
  auto expect_error = [&](const nlohmann::json& j, const std::string& what) {
    try {
      gpt_arch_from_json(c, j, "manifest 'x'");
      ADD_FAILURE() << "accepted " << j.dump();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("manifest 'x'"), std::string::npos) << e.what();
    }
  };
  expect_error({{"pos", "alibi"}}, "learned or rotary");
  expect_error({{"norm", 3}}, "arch.norm");
  expect_error({{"mlp", "tanh"}}, "gelu, relu2 or swiglu");
  expect_error({{"qk_norm", "yes"}}, "arch.qk_norm");
  expect_error({{"flash", true}}, "arch.flash");
  GptConfig odd;
  odd.n_embd = 18;
  odd.n_head = 6;  // head size 3
  odd.pos = PosKind::rotary;
  EXPECT_THROW(odd.validate(), Error);
  GptConfig neg;
  neg.logit_softcap = -1.0f;
  EXPECT_THROW(neg.validate(), Error);
}

TEST(GptArchFlops, RotaryHasNoPositionTableAndUntiedCountsTheHead) {
  GptConfig c;
  c.n_layer = 6;
  c.n_embd = 384;
  c.n_head = 6;
  c.vocab_size = 8192;
  c.context = 256;
  const size_t base = gpt_flop_params(c);
  c.pos = PosKind::rotary;
  EXPECT_EQ(gpt_flop_params(c), base);  // wpe is not counted either way
  c.tied_head = false;
  EXPECT_EQ(gpt_flop_params(c), base + 8192u * 384u);
  c.mlp = MlpKind::swiglu;  // F = 1024: 3 matrices of 384 x 1024 = 2 of 384 x 1536 plus 0
  EXPECT_EQ(c.mlp_hidden(), 1024);
}

}  // namespace
}  // namespace chorus::models
