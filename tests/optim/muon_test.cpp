// Muon (optim/muon.h, the Muon path of optim/distributed.h):
//   - Newton-Schulz leaves every singular value near 1 (wide, tall, scaled
//     inputs), and a tall matrix gives the transpose of its transpose's result;
//   - a few optimizer steps on a tiny GPT (real gradients) match a naive
//     double-precision Muon written out here, and every other tensor gets
//     exactly what AdamW alone gives it;
//   - the tensors marked for Muon are the hidden block matrices of the GPT,
//     of its cross-attention and of the speech encoder, and nothing else.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "core/rng.h"
#include "dist/communicator.h"
#include "models/gpt/gpt.h"
#include "models/speech/seq2seq.h"
#include "optim/adamw.h"
#include "optim/distributed.h"
#include "optim/muon.h"
#include "train/loop.h"

namespace {

using chorus::Rng;
using namespace chorus::optim;

std::vector<float> gaussian(size_t n, uint64_t seed, float scale = 1.0f) {
  Rng rng(seed, 3);
  std::vector<float> v(n);
  for (auto& x : v) x = scale * rng.normal();
  return v;
}

// Eigenvalues of a symmetric n x n matrix (cyclic Jacobi, double).
std::vector<double> sym_eigenvalues(std::vector<double> a, int n) {
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0;
    for (int p = 0; p < n; ++p)
      for (int q = p + 1; q < n; ++q) off += a[p * n + q] * a[p * n + q];
    if (off < 1e-22) break;
    for (int p = 0; p < n; ++p)
      for (int q = p + 1; q < n; ++q) {
        const double apq = a[p * n + q];
        if (std::fabs(apq) < 1e-300) continue;
        const double theta = (a[q * n + q] - a[p * n + p]) / (2 * apq);
        const double t = (theta >= 0 ? 1.0 : -1.0) / (std::fabs(theta) + std::sqrt(theta * theta + 1));
        const double c = 1 / std::sqrt(t * t + 1), s = t * c;
        for (int k = 0; k < n; ++k) {  // columns p, q
          const double akp = a[k * n + p], akq = a[k * n + q];
          a[k * n + p] = c * akp - s * akq;
          a[k * n + q] = s * akp + c * akq;
        }
        for (int k = 0; k < n; ++k) {  // rows p, q
          const double apk = a[p * n + k], aqk = a[q * n + k];
          a[p * n + k] = c * apk - s * aqk;
          a[q * n + k] = s * apk + c * aqk;
        }
      }
  }
  std::vector<double> ev(n);
  for (int i = 0; i < n; ++i) ev[i] = a[i * n + i];
  return ev;
}

// Singular values of x (rows, cols): sqrt of the eigenvalues of the small Gram matrix.
std::vector<double> singular_values(const std::vector<float>& x, int rows, int cols) {
  const int r = std::min(rows, cols);
  std::vector<double> g(static_cast<size_t>(r) * r, 0.0);
  for (int i = 0; i < r; ++i)
    for (int j = 0; j < r; ++j) {
      double s = 0;
      for (int k = 0; k < std::max(rows, cols); ++k)
        s += rows <= cols ? double(x[i * cols + k]) * x[j * cols + k] : double(x[k * cols + i]) * x[k * cols + j];
      g[i * r + j] = s;
    }
  auto ev = sym_eigenvalues(g, r);
  for (auto& e : ev) e = std::sqrt(std::max(0.0, e));
  std::sort(ev.begin(), ev.end());
  return ev;
}

// Tolerance: the speedrun's quintic is tuned for speed, not convergence: the
// scalar map s -> 3.4445 s - 4.7750 s^3 + 2.0315 s^5 iterated 5 times sends
// every s in [0.005, 1] (a normalised singular value) into [0.68, 1.16].
// So singular values must lie in [0.6, 1.25] (the map's range and a margin
// for fp32), i.e. U^T U = I only to about +-0.6 in its eigenvalues — while a
// wrong coefficient, a missing normalisation or a missing transpose leaves
// values far outside (0.1 or 1e3).
TEST(NewtonSchulz, SingularValuesNearOne) {
  struct Case {
    int rows, cols;
    float scale;
  };
  for (const Case c : {Case{16, 48, 1.0f}, Case{48, 16, 1.0f}, Case{32, 96, 1e-3f}, Case{96, 32, 50.0f},
                       Case{24, 40, 1.0f}}) {
    SCOPED_TRACE(std::to_string(c.rows) + "x" + std::to_string(c.cols));
    auto x = gaussian(static_cast<size_t>(c.rows) * c.cols, 7 + c.rows, c.scale);
    const auto sv_in = singular_values(x, c.rows, c.cols);
    std::vector<float> scratch(ns_scratch_floats(c.rows, c.cols));
    newton_schulz5(x.data(), c.rows, c.cols, 5, scratch.data());
    const auto sv = singular_values(x, c.rows, c.cols);
    std::printf("[ ns5     ] %dx%d: singular values %.3g..%.3g -> %.3f..%.3f\n", c.rows, c.cols, sv_in.front(),
                sv_in.back(), sv.front(), sv.back());
    EXPECT_GT(sv.front(), 0.6);
    EXPECT_LT(sv.back(), 1.25);
  }
}

TEST(NewtonSchulz, TallIsTheTransposeOfWide) {
  const int rows = 40, cols = 12;
  auto tall = gaussian(rows * cols, 11);
  std::vector<float> wide(rows * cols);
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j) wide[j * rows + i] = tall[i * cols + j];
  std::vector<float> scratch(ns_scratch_floats(rows, cols));
  newton_schulz5(tall.data(), rows, cols, 5, scratch.data());
  newton_schulz5(wide.data(), cols, rows, 5, scratch.data());
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j) ASSERT_EQ(tall[i * cols + j], wide[j * rows + i]);
  EXPECT_FLOAT_EQ(muon_scale(rows, cols), std::sqrt(40.0f / 12.0f));
  EXPECT_FLOAT_EQ(muon_scale(cols, rows), 1.0f);
}

// The naive reference: double precision, loops written out, the same recipe.
void naive_ns5(std::vector<double>& x, int rows, int cols) {
  const bool tall = rows > cols;
  const int r = std::min(rows, cols), c = std::max(rows, cols);
  std::vector<double> X(static_cast<size_t>(r) * c);
  double ss = 0;
  for (double v : x) ss += v * v;
  const double inv = 1.0 / (std::sqrt(ss) + 1e-7);
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j) (tall ? X[j * rows + i] : X[i * cols + j]) = x[i * cols + j] * inv;
  const double a = 3.4445, b = -4.7750, cc = 2.0315;
  for (int s = 0; s < 5; ++s) {
    std::vector<double> A(r * r, 0.0), B(r * r, 0.0), Y(X.size(), 0.0);
    for (int i = 0; i < r; ++i)
      for (int j = 0; j < r; ++j)
        for (int k = 0; k < c; ++k) A[i * r + j] += X[i * c + k] * X[j * c + k];
    for (int i = 0; i < r; ++i)
      for (int j = 0; j < r; ++j) {
        double aa = 0;
        for (int k = 0; k < r; ++k) aa += A[i * r + k] * A[k * r + j];
        B[i * r + j] = b * A[i * r + j] + cc * aa;
      }
    for (int i = 0; i < r; ++i)
      for (int j = 0; j < c; ++j) {
        double bx = 0;
        for (int k = 0; k < r; ++k) bx += B[i * r + k] * X[k * c + j];
        Y[i * c + j] = a * X[i * c + j] + bx;
      }
    X = Y;
  }
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j) x[i * cols + j] = tall ? X[j * rows + i] : X[i * cols + j];
}

chorus::models::GptConfig tiny_gpt() {
  chorus::models::GptConfig c;
  c.n_layer = 2;
  c.n_embd = 32;
  c.n_head = 4;
  c.vocab_size = 64;
  c.context = 16;
  return c;
}

TEST(Muon, StepsOnATinyGptMatchANaiveReference) {
  const auto cfg = tiny_gpt();
  const int B = 2, T = 16;
  chorus::models::Gpt gpt(cfg, B, T);
  gpt.init_weights(5);
  const auto& table = gpt.param_table();
  const size_t n = gpt.n_params();
  std::vector<Range> decay;
  for (const auto& p : table)
    if (p.decay) decay.push_back({p.offset, p.offset + p.numel});
  chorus::dist::LocalCommunicator dp("dp"), tp("tp");
  DistributedOptimizerConfig ocfg;
  ocfg.grad_clip = 0.0f;  // the reference below does not clip
  ocfg.kind = OptimizerKind::muon;
  ocfg.muon.momentum = 0.9f;
  ocfg.muon_matrices = chorus::train::muon_matrices(table);
  DistributedOptimizer opt(n, decay, {}, ocfg, dp, tp);
  AdamW adam_only(n, decay, ocfg.adamw);  // what the non-Muon tensors must get, bit for bit

  const std::vector<float> init(gpt.params().begin(), gpt.params().end());
  std::vector<double> ref_p(init.begin(), init.end()), ref_m(n, 0.0);
  std::vector<float> adam_p(gpt.params().begin(), gpt.params().end());
  const float lr = 1e-3f, muon_lr = 0.02f, mu = 0.9f;
  for (int step = 1; step <= 3; ++step) {
    std::vector<int32_t> tok(B * T), tgt(B * T);
    Rng rng(100 + step, 1);
    for (int i = 0; i < B * T; ++i) tok[i] = static_cast<int32_t>(rng.below(cfg.vocab_size)), tgt[i] = static_cast<int32_t>(rng.below(cfg.vocab_size));
    gpt.zero_grad();
    gpt.forward(tok.data(), tgt.data(), B, T);
    gpt.backward();
    std::vector<float> g(gpt.grads().begin(), gpt.grads().end());
    adam_only.step(adam_p, g, lr, step);
    // Naive Muon on the hidden matrices, part by part.
    for (const auto& mm : ocfg.muon_matrices) {
      std::vector<double> u(mm.numel);
      for (size_t i = 0; i < mm.numel; ++i) {
        double& m = ref_m[mm.offset + i];
        m = mu * m + g[mm.offset + i];
        u[i] = g[mm.offset + i] + mu * m;
      }
      const int pr = static_cast<int>(mm.rows / mm.tp_parts), cols = static_cast<int>(mm.cols);
      for (int k = 0; k < mm.tp_parts; ++k) {
        std::vector<double> part(u.begin() + static_cast<long>(k) * pr * cols,
                                 u.begin() + static_cast<long>(k + 1) * pr * cols);
        naive_ns5(part, pr, cols);
        const double s = std::sqrt(std::max(1.0, double(pr) / cols));
        for (size_t i = 0; i < part.size(); ++i) ref_p[mm.offset + k * pr * cols + i] -= muon_lr * s * part[i];
      }
    }
    StepOptions so;
    so.muon_lr = muon_lr;
    opt.step(gpt.params(), gpt.grads(), lr, step, so);
  }
  const auto p = gpt.params();
  std::set<std::string> muon_names;
  for (const auto& mm : ocfg.muon_matrices) muon_names.insert(mm.name);
  for (const auto& spec : table) {
    SCOPED_TRACE(spec.name);
    if (!muon_names.count(spec.name)) {
      // Untouched by Muon: exactly AdamW's result, and AdamW's moments.
      for (size_t i = spec.offset; i < spec.offset + spec.numel; ++i) ASSERT_EQ(p[i], adam_p[i]);
      continue;
    }
    // The update (not the parameters) to 1e-4 relative: fp32 GEMMs in five
    // Newton-Schulz steps against double; a wrong coefficient, scale or
    // momentum is off by O(1).
    double num = 0, den = 0, mnum = 0, mden = 0;
    for (size_t i = spec.offset; i < spec.offset + spec.numel; ++i) {
      num += (p[i] - ref_p[i]) * (p[i] - ref_p[i]);
      mnum += (opt.adamw().m()[i] - ref_m[i]) * (opt.adamw().m()[i] - ref_m[i]);
      mden += ref_m[i] * ref_m[i];
      ASSERT_EQ(opt.adamw().v()[i], 0.0f) << "Muon's matrices keep no second moment";
    }
    // Scale: the total Muon displacement of this tensor in the reference.
    for (size_t i = spec.offset; i < spec.offset + spec.numel; ++i) den += (ref_p[i] - init[i]) * (ref_p[i] - init[i]);
    EXPECT_GT(den, 0.0);
    EXPECT_LT(std::sqrt(num / den), 1e-4);
    EXPECT_LT(std::sqrt(mnum / mden), 1e-6) << "the momentum (in exp_avg)";
  }
}

std::set<std::string> hidden_names(const std::vector<chorus::models::ParamSpec>& table) {
  std::set<std::string> out;
  for (const auto& mm : chorus::train::muon_matrices(table)) out.insert(mm.name);
  return out;
}

TEST(Muon, TakesOnlyTheHiddenBlockMatrices) {
  chorus::models::Gpt gpt(tiny_gpt(), 1, 8);
  const std::regex gpt_hidden(R"(h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight)");
  std::set<std::string> want;
  for (const auto& p : gpt.param_table())
    if (std::regex_match(p.name, gpt_hidden)) want.insert(p.name);
  EXPECT_EQ(want.size(), 8u);
  EXPECT_EQ(hidden_names(gpt.param_table()), want);
  for (const auto& mm : chorus::train::muon_matrices(gpt.param_table())) {
    if (mm.name.find("c_attn") != std::string::npos) {
      EXPECT_EQ(mm.tp_parts, 3) << "q, k, v orthogonalised apart";
    }
  }

  // The speech model: the encoder's blocks, the decoder's blocks and its
  // cross-attention; not the convolutions, the CTC head, wte/wpe, LayerNorms, biases.
  chorus::models::SpeechSeq2SeqConfig sc;
  sc.encoder.n_layer = 2;
  sc.encoder.n_embd = 32;
  sc.encoder.n_head = 4;
  sc.encoder.n_mels = 16;
  sc.encoder.max_frames = 40;
  sc.decoder = tiny_gpt();
  chorus::models::SpeechSeq2Seq speech(sc, 1, 40, 8, nullptr, chorus::Precision::fp32);
  const std::regex speech_hidden(
      R"((encoder\.blocks\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)|)"
      R"(decoder\.h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj|crossattn\.q|crossattn\.kv|crossattn\.c_proj))\.weight)");
  want.clear();
  for (const auto& p : speech.param_table())
    if (std::regex_match(p.name, speech_hidden)) want.insert(p.name);
  EXPECT_EQ(want.size(), 8u + 8u + 6u);
  EXPECT_EQ(hidden_names(speech.param_table()), want);
}

TEST(Muon, RefusesALearningRateRangeThatCutsAMatrix) {
  chorus::models::Gpt gpt(tiny_gpt(), 1, 8);
  chorus::dist::LocalCommunicator dp("dp"), tp("tp");
  DistributedOptimizerConfig ocfg;
  ocfg.kind = OptimizerKind::muon;
  ocfg.muon_matrices = chorus::train::muon_matrices(gpt.param_table());
  DistributedOptimizer opt(gpt.n_params(), {}, {}, ocfg, dp, tp);
  const auto& mm = ocfg.muon_matrices[0];
  StepOptions so;
  so.muon_lr = 0.02f;
  so.lr_scales.push_back({{mm.offset + 1, mm.offset + mm.numel}, 0.5f});
  try {
    opt.step(gpt.params(), gpt.grads(), 1e-3f, 1, so);
    FAIL() << "a range cutting a Muon matrix was accepted";
  } catch (const chorus::Error& e) {
    EXPECT_NE(std::string(e.what()).find(mm.name), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_optimizer("sgd"), chorus::Error);
}

}  // namespace
