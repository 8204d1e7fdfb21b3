// The sizing functions `chorus plan` and the memory check use
// (models::gpt_memory, speech_encoder_memory, speech_seq2seq_memory and the
// FLOP counts) give exactly what the built models report, for every
// precision, with cross-attention and under TP = 2 (a thread group).
#include <gtest/gtest.h>

#include <mutex>
#include <vector>

#include "core/error.h"
#include "models/gpt/gpt.h"
#include "models/speech/encoder.h"
#include "models/speech/seq2seq.h"
#include "nn/thread_group.h"

using namespace chorus;
using models::GptMemory;

namespace {

models::GptConfig small_gpt() {
  models::GptConfig c;
  c.n_layer = 3;
  c.n_embd = 48;
  c.n_head = 4;
  c.vocab_size = 300;  // padded to 320: the padding counts in the buffers, not in the FLOPs
  c.context = 40;
  return c;
}

void expect_same(const GptMemory& built, const GptMemory& planned) {
  EXPECT_EQ(built.master_bytes, planned.master_bytes);
  EXPECT_EQ(built.compute_weight_bytes, planned.compute_weight_bytes);
  EXPECT_EQ(built.grad_bytes, planned.grad_bytes);
  EXPECT_EQ(built.activation_bytes, planned.activation_bytes);
  EXPECT_GT(planned.activation_bytes, 0u);
}

const Precision kPrecisions[] = {Precision::fp32, Precision::bf16, Precision::fp16};

}  // namespace

TEST(MemoryPlan, GptMatchesTheBuiltModelInEveryPrecision) {
  for (Precision p : kPrecisions) {
    SCOPED_TRACE(precision_name(p));
    models::Gpt m(small_gpt(), 3, 17, nullptr, p);
    expect_same(m.memory(), models::gpt_memory(small_gpt(), 3, 17, 1, p));
    EXPECT_EQ(m.memory().compute_weight_bytes == 0, p == Precision::fp32);
  }
}

TEST(MemoryPlan, GptWithCrossAttentionMatches) {
  const models::CrossAttentionConfig cross{24, 11};
  models::Gpt m(small_gpt(), 2, 9, nullptr, Precision::bf16, cross);
  expect_same(m.memory(), models::gpt_memory(small_gpt(), 2, 9, 1, Precision::bf16, cross));
  EXPECT_EQ(m.n_flop_params(), models::gpt_flop_params(small_gpt(), cross));
  EXPECT_DOUBLE_EQ(m.flops_per_token(9), models::gpt_flops_per_token(small_gpt(), 9, cross));
}

TEST(MemoryPlan, GptFlopsMatchTheModel) {
  models::Gpt m(small_gpt(), 1, 8);
  EXPECT_EQ(m.n_flop_params(), models::gpt_flop_params(small_gpt()));
  EXPECT_DOUBLE_EQ(m.flops_per_token(8), models::gpt_flops_per_token(small_gpt(), 8));
}

TEST(MemoryPlan, GptUnderTensorParallelMatchesEveryRank) {
  for (Precision p : {Precision::fp32, Precision::bf16}) {
    SCOPED_TRACE(precision_name(p));
    const GptMemory planned = models::gpt_memory(small_gpt(), 2, 16, 2, p);
    std::vector<GptMemory> built(2);
    chorus::testing::ThreadGroup group(2);
    group.run([&](dist::Communicator& tp) {
      models::Gpt m(small_gpt(), 2, 16, &tp, p);
      built[static_cast<size_t>(tp.rank())] = m.memory();
    });
    for (const GptMemory& b : built) expect_same(b, planned);
    // A TP shard holds less than the whole model.
    EXPECT_LT(planned.master_bytes, models::gpt_memory(small_gpt(), 2, 16, 1, p).master_bytes);
  }
}

TEST(MemoryPlan, GptRefusesWhatTheConstructorRefuses) {
  EXPECT_THROW(models::gpt_memory(small_gpt(), 1, 8, 3, Precision::fp32), Error);   // 3 does not divide 4 heads
  EXPECT_THROW(models::gpt_memory(small_gpt(), 1, 41, 1, Precision::fp32), Error);  // past the context
  EXPECT_THROW(models::gpt_memory(small_gpt(), 0, 8, 1, Precision::fp32), Error);
}

TEST(MemoryPlan, SpeechEncoderAndJointModelMatch) {
  models::SpeechSeq2SeqConfig c;
  c.encoder.n_mels = 16;
  c.encoder.n_layer = 2;
  c.encoder.n_embd = 32;
  c.encoder.n_head = 4;
  c.encoder.max_frames = 30;
  c.decoder = small_gpt();
  for (Precision p : kPrecisions) {
    SCOPED_TRACE(precision_name(p));
    models::SpeechEncoder e(c.encoder, 257, 0, 2, 30, nullptr, p);
    expect_same(e.memory_use(), models::speech_encoder_memory(c.encoder, 257, 0, 2, 30, 1, p));
    EXPECT_DOUBLE_EQ(e.flops(2, 25), models::speech_encoder_flops(c.encoder, 257, 2, 25));
    models::SpeechSeq2Seq m(c, 2, 30, 12, nullptr, p);
    expect_same(m.memory(), models::speech_seq2seq_memory(c, 2, 30, 12, 1, p));
  }
}
