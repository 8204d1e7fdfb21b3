// The speech model: a decoder with fresh (zero-projection) cross-attention
// computes exactly the GPT it was loaded from; finite-difference gradients of
// the whole joint model (encoder conv stem, blocks, CTC head, cross-attention,
// decoder) through the joint loss; padding does not change a clip's outputs.
#include "models/speech/seq2seq.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "../nn/grad_check.h"
#include "core/rng.h"
#include "nn/ctc.h"

namespace {

using chorus::models::Gpt;
using chorus::models::GptConfig;
using chorus::models::SpeechBatch;
using chorus::models::SpeechSeq2Seq;
using chorus::models::SpeechSeq2SeqConfig;

SpeechSeq2SeqConfig tiny_config(int subsample = 2) {
  SpeechSeq2SeqConfig c;
  c.encoder.subsample = subsample;
  c.encoder.n_mels = 8;
  c.encoder.n_layer = 1;
  c.encoder.n_embd = 16;
  c.encoder.n_head = 2;
  c.encoder.max_frames = 12;
  c.decoder.n_layer = 2;
  c.decoder.n_embd = 16;
  c.decoder.n_head = 2;
  c.decoder.vocab_size = 40;
  c.decoder.context = 8;
  return c;
}

SpeechBatch tiny_batch() {
  SpeechBatch b;
  b.B = 2;
  b.F = 12;
  b.T = 6;
  b.feats = chorus::testing::random_vector(static_cast<size_t>(b.B) * b.F * 8, 5);
  b.n_frames = {12, 9};
  for (int t = 9; t < 12; ++t)
    for (int m = 0; m < 8; ++m) b.feats[(12 + t) * 8 + m] = 0.0f;  // clip 1 padded
  b.tokens = {1, 2, 3, 4, 5, 6, 1, 7, 8, 9, 0, 0};
  b.targets = {2, -1, -1, 5, 6, 0, 7, -1, -1, 9, 0, -1};
  b.ctc_targets = {5, 6, 9};
  b.ctc_off = {0, 2};
  b.ctc_len = {2, 1};
  return b;
}

TEST(SpeechModel, FreshCrossAttentionGivesThePretrainedGptsLogits) {
  const SpeechSeq2SeqConfig c = tiny_config();
  Gpt gpt(c.decoder, 2, 6);
  gpt.init_weights(9);
  SpeechSeq2Seq m(c, 2, 12, 6, nullptr, chorus::Precision::fp32);
  m.init_weights(3);
  // Copy the GPT's tensors by name into the decoder (the cross tensors keep their init).
  const auto& dt = m.decoder().param_table();
  for (const auto& p : gpt.param_table())
    for (const auto& q : dt)
      if (q.name == p.name) std::copy_n(gpt.params().data() + p.offset, p.numel, m.decoder().params().data() + q.offset);
  const SpeechBatch b = tiny_batch();
  std::vector<int32_t> tokens = b.tokens;
  gpt.forward(tokens.data(), nullptr, 2, 6);
  m.encoder().forward(b.feats.data(), b.n_frames.data(), 2, 12);
  m.decoder().set_memory(m.encoder().memory(), m.encoder().memory_len(), m.encoder().memory_rows());
  m.decoder().forward(tokens.data(), nullptr, 2, 6);
  const int Vp = c.decoder.padded_vocab();
  for (int i = 0; i < 2 * 6; ++i)
    for (int v = 0; v < c.decoder.vocab_size; ++v)
      ASSERT_EQ(m.decoder().logits()[i * Vp + v], gpt.logits()[i * Vp + v]) << "row " << i << " token " << v;
}

void check_joint_gradient(int subsample) {
  SpeechSeq2SeqConfig c = tiny_config(subsample);
  SpeechSeq2Seq m(c, 2, 12, 6, nullptr, chorus::Precision::fp32);
  m.init_weights(4);
  // Non-zero cross-attention output projections, so every path carries gradient.
  chorus::Rng rng(1, 2);
  for (const auto& p : m.param_table())
    if (p.name.find("crossattn.c_proj.weight") != std::string::npos)
      for (size_t i = 0; i < p.numel; ++i) m.params()[p.offset + i] = 0.1f * rng.normal();
  const SpeechBatch b = tiny_batch();
  const float w = 0.5f;
  auto loss = [&]() {
    const auto l = m.forward(b, w);
    return static_cast<double>(l.att) + w * l.ctc;
  };
  m.zero_grad();
  loss();
  m.backward(1.0f, w);
  const std::vector<float> g(m.grads().begin(), m.grads().end());
  chorus::testing::GradCheckOptions opt;
  opt.eps = 3e-3;
  opt.atol = 2e-3;
  opt.rtol = 3e-2;
  for (const auto& p : m.param_table()) {
    opt.max_checks = 6;
    chorus::testing::expect_grad_close(p.name, m.params().data() + p.offset, g.data() + p.offset, p.numel, loss,
                                       opt);
  }
}

TEST(SpeechModel, JointLossGradientMatchesFiniteDifferences) { check_joint_gradient(2); }
// --subsample 4: the first stem convolution strided too (25 memory rows per second).
TEST(SpeechModel, JointLossGradientMatchesFiniteDifferencesSubsample4) { check_joint_gradient(4); }

// A CTC-only step (--ctc-only-steps): the decoder is not run (no attention
// loss, no decoder gradient) and the encoder's gradient is that of
// ctc_weight x CTC alone, even where the cross-attention would feed it one.
TEST(SpeechModel, CtcOnlyStepTrainsTheEncoderOnCtcAlone) {
  SpeechSeq2SeqConfig c = tiny_config();
  SpeechSeq2Seq m(c, 2, 12, 6, nullptr, chorus::Precision::fp32);
  m.init_weights(4);
  chorus::Rng rng(1, 2);
  for (const auto& p : m.param_table())
    if (p.name.find("crossattn.c_proj.weight") != std::string::npos)
      for (size_t i = 0; i < p.numel; ++i) m.params()[p.offset + i] = 0.1f * rng.normal();
  const SpeechBatch b = tiny_batch();
  const float w = 0.7f;
  const float ctc_full = m.forward(b, w).ctc;
  auto loss = [&]() {
    const auto l = m.forward(b, w, /*with_decoder=*/false);
    EXPECT_EQ(l.att, 0.0f);
    return static_cast<double>(w) * l.ctc;
  };
  m.zero_grad();
  EXPECT_FLOAT_EQ(static_cast<float>(loss()) / w, ctc_full);
  m.backward(1.0f, w);
  const std::vector<float> g(m.grads().begin(), m.grads().end());
  for (size_t i = m.encoder_params(); i < g.size(); ++i) ASSERT_EQ(g[i], 0.0f) << "decoder gradient at " << i;
  double enc_norm = 0.0;
  for (size_t i = 0; i < m.encoder_params(); ++i) enc_norm += static_cast<double>(g[i]) * g[i];
  EXPECT_GT(enc_norm, 0.0);
  chorus::testing::GradCheckOptions opt;
  opt.eps = 3e-3;
  opt.atol = 2e-3;
  opt.rtol = 3e-2;
  for (const auto& p : m.param_table()) {
    if (p.name.rfind("encoder.", 0) != 0) continue;
    opt.max_checks = 6;
    chorus::testing::expect_grad_close(p.name, m.params().data() + p.offset, g.data() + p.offset, p.numel, loss,
                                       opt);
  }
}

void check_padding(int subsample) {
  SpeechSeq2SeqConfig c = tiny_config(subsample);
  SpeechSeq2Seq m(c, 2, 12, 6, nullptr, chorus::Precision::fp32);
  m.init_weights(5);
  SpeechBatch b = tiny_batch();
  m.encoder().forward(b.feats.data(), b.n_frames.data(), 2, 12);
  const int S = m.encoder().memory_rows(), d = c.encoder.n_embd;
  std::vector<float> both(static_cast<size_t>(2) * S * d);
  m.encoder().memory_f32(both.data());
  // Clip 1 alone, unpadded (9 frames).
  std::vector<float> alone_feats(b.feats.begin() + 12 * 8, b.feats.begin() + 12 * 8 + 9 * 8);
  const int n9 = 9;
  m.encoder().forward(alone_feats.data(), &n9, 1, 9);
  const int S1 = m.encoder().memory_rows();
  std::vector<float> alone(static_cast<size_t>(S1) * d);
  m.encoder().memory_f32(alone.data());
  ASSERT_EQ(S1, c.encoder.out_len(9));
  ASSERT_EQ(m.encoder().memory_len()[0], S1);
  for (int s = 0; s < S1; ++s)
    for (int j = 0; j < d; ++j)
      EXPECT_NEAR(both[(static_cast<size_t>(S) + s) * d + j], alone[static_cast<size_t>(s) * d + j], 2e-5)
          << "memory row " << s;
}

TEST(SpeechModel, PaddingDoesNotChangeAClipsMemory) { check_padding(2); }
TEST(SpeechModel, PaddingDoesNotChangeAClipsMemorySubsample4) { check_padding(4); }

// The KV-cached decoder (set_decode_memory + decode_step, as transcribe runs
// it) gives the training forward's logits at every position, also after a
// beam reorder of the cache.
TEST(SpeechModel, CachedDecodingMatchesTheFullForward) {
  SpeechSeq2SeqConfig c = tiny_config();
  SpeechSeq2Seq m(c, 2, 12, 6, nullptr, chorus::Precision::fp32);
  m.init_weights(6);
  chorus::Rng rng(3, 4);
  for (const auto& p : m.param_table())
    if (p.name.find("crossattn.c_proj.weight") != std::string::npos)
      for (size_t i = 0; i < p.numel; ++i) m.params()[p.offset + i] = 0.1f * rng.normal();
  const SpeechBatch b = tiny_batch();
  m.encoder().forward(b.feats.data(), b.n_frames.data(), 2, 12);
  const int S = m.encoder().memory_rows(), d = c.encoder.n_embd, Vp = c.decoder.padded_vocab();
  std::vector<float> mem(static_cast<size_t>(2) * S * d);
  m.encoder().memory_f32(mem.data());
  std::vector<int> mem_len(m.encoder().memory_len(), m.encoder().memory_len() + 2);
  m.decoder().set_memory(m.encoder().memory(), mem_len.data(), S);
  m.decoder().forward(b.tokens.data(), nullptr, 2, 6);
  const std::vector<float> full(m.decoder().logits(), m.decoder().logits() + 2 * 6 * Vp);
  // Decode with the two sequences swapped in the cache halfway (a beam reorder).
  std::vector<float> mem_swapped(mem.size());
  std::copy_n(mem.begin() + S * d, S * d, mem_swapped.begin());
  std::copy_n(mem.begin(), S * d, mem_swapped.begin() + S * d);
  std::vector<int> len_swapped = {mem_len[1], mem_len[0]};
  m.decoder().reset_cache(2);
  m.decoder().set_decode_memory(mem_swapped.data(), len_swapped.data(), S);
  bool swapped = true;
  for (int t = 0; t < 6; ++t) {
    if (t == 3) {
      const int src[2] = {1, 0};
      m.decoder().reorder_cache(src);
      swapped = false;
    }
    int32_t in[2];
    for (int r = 0; r < 2; ++r) in[r] = b.tokens[(swapped ? 1 - r : r) * 6 + t];
    const float* lg = m.decoder().decode_step(in, t);
    for (int r = 0; r < 2; ++r) {
      const int seq = swapped ? 1 - r : r;
      for (int v = 0; v < c.decoder.vocab_size; ++v)
        ASSERT_NEAR(lg[r * Vp + v], full[(seq * 6 + t) * Vp + v], 1e-4) << "seq " << seq << " pos " << t;
    }
  }
}

// The CTC alignment prior (--ctc-prior): decoding with each step's bias from
// the CTC prefix of the bytes so far (as transcribe does) gives the training
// forward's logits at every position, where the prior came from the batch's
// byte offsets; and the prior does change them.
TEST(SpeechModel, CtcPriorInDecodingMatchesTheTrainingForward) {
  for (int subsample : {2, 4}) {
    SCOPED_TRACE(subsample);
    SpeechSeq2SeqConfig c = tiny_config(subsample);
    c.prior.enabled = true;
    c.prior.window = 2;
    c.prior.floor = 0.05f;
    c.prior.n_heads = 1;
    SpeechSeq2Seq m(c, 2, 12, 6, nullptr, chorus::Precision::fp32);
    m.init_weights(6);
    chorus::Rng rng(3, 4);
    for (const auto& p : m.param_table())
      if (p.name.find("crossattn.c_proj.weight") != std::string::npos)
        for (size_t i = 0; i < p.numel; ++i) m.params()[p.offset + i] = 0.3f * rng.normal();
    SpeechBatch b = tiny_batch();
    // Transcript labels: clip 0 {5, 6} at positions 3, 4 (then the end at 5), clip 1 {9} at 3 (end at 4).
    b.byte_off = {-1, -1, -1, 0, 1, 2, -1, -1, -1, 0, 1, -1};
    const int Vp = c.decoder.padded_vocab();
    m.forward(b, 0.5f);
    const std::vector<float> full(m.decoder().logits(), m.decoder().logits() + 2 * 6 * Vp);
    SpeechSeq2SeqConfig plain = c;
    plain.prior.enabled = false;
    SpeechSeq2Seq m0(plain, 2, 12, 6, nullptr, chorus::Precision::fp32);
    std::copy(m.params().begin(), m.params().end(), m0.params().begin());
    m0.forward(b, 0.5f);
    double changed = 0.0;
    for (size_t i = 0; i < full.size(); ++i) changed = std::max(changed, std::abs(double(full[i]) - m0.decoder().logits()[i]));
    EXPECT_GT(changed, 1e-3) << "the prior did not change the logits";

    auto& enc = m.encoder();
    enc.forward(b.feats.data(), b.n_frames.data(), 2, 12);
    const int S = enc.memory_rows(), d = c.encoder.n_embd, V = enc.ctc_vocab();
    std::vector<float> mem(static_cast<size_t>(2) * S * d);
    enc.memory_f32(mem.data());
    std::vector<std::vector<float>> lp(2, std::vector<float>(static_cast<size_t>(enc.ctc_rows()) * V));
    std::vector<chorus::nn::CtcPrefix> h(2);
    for (int i = 0; i < 2; ++i) {
      enc.ctc_log_probs(i, lp[i].data());
      h[i] = chorus::nn::ctc_prefix_root(lp[i].data(), enc.ctc_len()[i], V, enc.ctc_blank());
    }
    m.decoder().reset_cache(2);
    m.decoder().set_decode_memory(mem.data(), enc.memory_len(), S);
    std::vector<float> bias(static_cast<size_t>(2) * S);
    for (int t = 0; t < 6; ++t) {
      std::fill(bias.begin(), bias.end(), 0.0f);
      for (int i = 0; i < 2; ++i) {
        const int off = b.byte_off[i * 6 + t];
        if (off < 0) continue;
        if (off > 0) h[i] = chorus::nn::ctc_prefix_extend(h[i], b.ctc_targets[b.ctc_off[i] + off - 1], lp[i].data(),
                                                         enc.ctc_len()[i], V, enc.ctc_blank());
        chorus::nn::ctc_alignment_prior(h[i], c.prior.window, c.prior.floor, c.encoder.ctc_upsample(),
                                        bias.data() + static_cast<size_t>(i) * S);
      }
      m.decoder().set_decode_bias(bias.data());
      const int32_t in[2] = {b.tokens[t], b.tokens[6 + t]};
      const float* lg = m.decoder().decode_step(in, t);
      for (int r = 0; r < 2; ++r)
        for (int v = 0; v < c.decoder.vocab_size; ++v)
          ASSERT_NEAR(lg[r * Vp + v], full[(r * 6 + t) * Vp + v], 1e-4) << "seq " << r << " pos " << t;
    }
  }
}

}  // namespace
