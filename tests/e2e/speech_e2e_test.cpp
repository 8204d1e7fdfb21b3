// The whole speech path on tiny data: a synthesised corpus (espeak-ng) ->
// prepare-speech -> a tiny GPT pretrained -> finetune-speech from it -> resume
// exactness -> DP 2 and TP 2 equal one rank (AdamW and Muon) -> bf16 / fp16 track fp32 ->
// transcribe -> evaluate.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <sstream>
#include <string>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "common/process.h"

namespace fs = std::filesystem;
using chorus::testing::losses;
using chorus::testing::metric;
using chorus::testing::mpirun;
using chorus::testing::Result;
using chorus::testing::rows_to_compare;
using chorus::testing::sh;

namespace {

class SpeechE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (sh("command -v espeak-ng && command -v sox && command -v python3").code != 0) return;
    dir_ = fs::temp_directory_path() / ("chorus_speech_e2e_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    const std::string d = dir_.string();
    error_ = chorus::testing::make_corpus(dir_, {"en", "de"}, 512);
    if (!error_.empty()) return;
    const std::string src = CHORUS_SOURCE_DIR;
    auto step = [&](const std::string& cmd) {
      if (!error_.empty()) return;
      Result r = sh(cmd);
      if (r.code != 0) error_ = cmd + "\n" + r.out;
    };
    step("python3 " + src + "/datasets/speech/make_corpus.py --out " + d +
         "/corpus --langs en,de --train 24 --val 8 --test 8 --seed 3 --jobs 2");
    for (const char* split : {"train", "val", "test"})
      step(std::string(CHORUS_BINARY) + " prepare-speech --quiet --manifest " + d + "/corpus/" + split +
           ".tsv --tokenizer " + d + "/tok.json --out " + d + "/speech --split " + split);
    step(std::string(CHORUS_BINARY) + " pretrain --config " + src + "/configs/gpt-tiny.ini --tokenizer " + d +
         "/tok.json --data " + d + "/shards --run-dir " + d + "/gpt --steps 20 --quiet --threads 2");
    ready_ = error_.empty();
  }
  static void TearDownTestSuite() {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  void SetUp() override {
    if (dir_.empty()) GTEST_SKIP() << "espeak-ng, sox or python3 missing";
    ASSERT_TRUE(ready_) << error_;
  }
  // A small fine-tune into run `name` (extra flags appended).
  static Result finetune(const std::string& name, const std::string& extra, int np = 1) {
    const std::string d = dir_.string();
    const std::string cmd = (np > 1 ? mpirun(np) : std::string()) + CHORUS_BINARY +
                            " finetune-speech --tokenizer " + d + "/tok.json --data " + d + "/speech --run-dir " + d +
                            "/" + name + " --n-layer 2 --n-embd 64 --n-head 4 --max-frames 800 --max-tokens 64 " +
                            "--warmup 2 --lr 2e-3 --quiet " +
                            "--threads 1 " + extra;
    return sh(cmd);
  }
  // One rank vs DP 2 and TP 2: runs prefix + one / dp2 / tp2, with extra flags.
  // `init`: the decoder's source (default: random weights of a small GPT-2 shape).
  static void expect_layouts_equal(
      const std::string& prefix, const std::string& extra,
      const std::string& init = "--init-decoder none --dec-n-layer 2 --dec-n-embd 64 --dec-n-head 4 --dec-context 64") {
    const std::string d = dir_.string() + "/" + prefix;
    const std::string common = init + " --no-spec-augment --eval-clips 0 --steps 4 --eval-every 4 --bucket-batches 3 " +
                               extra + " ";
    Result one = finetune(prefix + "one", common + "--batch 4");
    ASSERT_EQ(one.code, 0) << one.out;
    Result dp = finetune(prefix + "dp2", common + "--batch 2", 2);
    ASSERT_EQ(dp.code, 0) << dp.out;
    Result tp = finetune(prefix + "tp2", common + "--batch 4 --tp 2", 2);
    ASSERT_EQ(tp.code, 0) << tp.out;
    std::vector<double> g1, g2, g3, l1, l2, l3;
    ASSERT_TRUE(rows_to_compare(d + "one", d + "dp2", "grad_norm", 4, &g1, &g2));
    ASSERT_TRUE(rows_to_compare(d + "one", d + "tp2", "grad_norm", 4, &g1, &g3));
    ASSERT_TRUE(rows_to_compare(d + "one", d + "dp2", "loss", 4, &l1, &l2));
    ASSERT_TRUE(rows_to_compare(d + "one", d + "tp2", "loss", 4, &l1, &l3));
    for (size_t i = 0; i < 4; ++i) {
      EXPECT_NEAR(l2[i], l1[i], 1e-4 * std::abs(l1[i]) + 1e-5) << "DP 2 step " << i;
      EXPECT_NEAR(l3[i], l1[i], 1e-4 * std::abs(l1[i]) + 1e-5) << "TP 2 step " << i;
      EXPECT_NEAR(g2[i], g1[i], 1e-3 * g1[i]) << "DP 2 grad norm step " << i;
      EXPECT_NEAR(g3[i], g1[i], 1e-3 * g1[i]) << "TP 2 grad norm step " << i;
    }
  }
  // transcribe of the test split from `checkpoint` succeeds with each set of flags.
  static void expect_transcribes(const std::string& checkpoint, std::initializer_list<const char*> flag_sets) {
    for (const char* flags : flag_sets) {
      Result t = chorus::testing::chorus("transcribe --checkpoint " + checkpoint + " --manifest " + dir_.string() +
                                         "/corpus/test.tsv " + flags);
      ASSERT_EQ(t.code, 0) << flags << "\n" << t.out;
      EXPECT_NE(t.out.find("real-time factor"), std::string::npos) << t.out;
    }
  }
  static inline fs::path dir_;
  static inline std::string error_;
  static inline bool ready_ = false;
};

TEST_F(SpeechE2E, FinetuneFromGptLearnsTranscribesAndEvaluates) {
  const std::string d = dir_.string();
  Result r = finetune("ft", "--init-decoder " + d + "/gpt --batch 4 --eval-clips 4 --steps 30 --eval-every 30");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto l = losses(d + "/ft");
  ASSERT_EQ(l.size(), 30u);
  double first = 0, last = 0;
  for (int i = 0; i < 5; ++i) first += l[i] / 5, last += l[l.size() - 1 - i] / 5;
  EXPECT_LT(last, 0.8 * first) << "the joint loss did not fall: " << first << " -> " << last;
  const auto cer = metric(d + "/ft", "val_cer");
  EXPECT_TRUE(std::isfinite(cer.back()));
  Result t = chorus::testing::chorus("transcribe --checkpoint " + d + "/ft --manifest " + d + "/corpus/test.tsv --beam 2 --json");
  ASSERT_EQ(t.code, 0) << t.out;
  EXPECT_NE(t.out.find("\"lang\""), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("real-time factor"), std::string::npos) << t.out;
  Result e = chorus::testing::chorus("evaluate --checkpoint " + d + "/ft --manifest " + d + "/corpus/test.tsv --json");
  ASSERT_EQ(e.code, 0) << e.out;
  EXPECT_NE(e.out.find("\"rtf\""), std::string::npos) << e.out;
  const auto j = nlohmann::json::parse(e.out.substr(e.out.find('{')));
  for (const char* lang : {"de", "en", "overall"}) EXPECT_GT(j["rtf"][lang].get<double>(), 0.0) << lang << e.out;
  Result text = chorus::testing::chorus("evaluate --checkpoint " + d + "/ft --manifest " + d + "/corpus/test.tsv");
  ASSERT_EQ(text.code, 0) << text.out;
  EXPECT_NE(text.out.find("; per language: de "), std::string::npos) << text.out;
  EXPECT_NE(text.out.find(" en "), std::string::npos) << text.out;

  // Decoding on int8 or bf16 copies of the decoder's matrices transcribes the
  // test clips as the fp32 weights do. This 30-step model is nearly uniform
  // over a few tokens (average log-prob ~ -3.4), so a near tie may flip and
  // the greedy paths part there (on an AVX-512 Xeon bf16 kept 10 of 16
  // transcripts whole, the other 6 parting after their 7th token): every
  // transcript must start with fp32's first tokens, at least half must be
  // identical, and an identical one must score the same to within
  // quantisation noise (broken scales or a wrong matrix change these).
  {
    const std::string cmd = "transcribe --checkpoint " + d + "/ft --manifest " + d + "/corpus/test.tsv --json";
    Result f32 = chorus::testing::chorus(cmd);
    ASSERT_EQ(f32.code, 0) << f32.out;
    const auto rows = [](const std::string& out) {
      std::vector<nlohmann::json> v;
      std::istringstream in(out);
      for (std::string line; std::getline(in, line);)
        if (!line.empty() && line[0] == '{') v.push_back(nlohmann::json::parse(line));
      return v;
    };
    const auto a = rows(f32.out);
    ASSERT_FALSE(a.empty()) << f32.out;
    for (const char* flag : {" --int8", " --bf16", " --int8 --int8-activations"}) {
      SCOPED_TRACE(flag);
      Result packed = chorus::testing::chorus(cmd + flag);
      ASSERT_EQ(packed.code, 0) << packed.out;
      const auto b = rows(packed.out);
      ASSERT_EQ(a.size(), b.size()) << packed.out;
      size_t same = 0;
      for (size_t i = 0; i < a.size(); ++i) {
        const auto ta = a[i]["tokens"].get<std::vector<int>>(), tb = b[i]["tokens"].get<std::vector<int>>();
        const size_t lead = std::min<size_t>({4, ta.size(), tb.size()});
        EXPECT_TRUE(std::equal(ta.begin(), ta.begin() + lead, tb.begin())) << i << ": " << a[i] << " vs " << b[i];
        if (a[i]["text"] != b[i]["text"]) continue;
        ++same;
        EXPECT_NEAR(a[i]["avg_logprob"].get<double>(), b[i]["avg_logprob"].get<double>(), 0.01) << i;
      }
      EXPECT_GE(same * 2, a.size()) << "fp32:\n" << f32.out << "\n" << flag << ":\n" << packed.out;
    }
  }
  // chorus quantize: the int8 file transcribes exactly as --int8 on the
  // checkpoint (the same codes), and is smaller; the GPT's file generates as
  // generate --int8 does.
  {
    Result q = chorus::testing::chorus("quantize --checkpoint " + d + "/ft --out " + d + "/ft-int8.h5");
    ASSERT_EQ(q.code, 0) << q.out;
    EXPECT_NE(q.out.find("(speech)"), std::string::npos) << q.out;
    const std::string cmd = "transcribe --manifest " + d + "/corpus/test.tsv --json --beam 2 --checkpoint ";
    Result a = chorus::testing::chorus(cmd + d + "/ft --int8");
    Result b = chorus::testing::chorus(cmd + d + "/ft-int8.h5");
    ASSERT_EQ(a.code, 0) << a.out;
    ASSERT_EQ(b.code, 0) << b.out;
    const auto json_lines = [](const std::string& out) {
      std::string v;
      std::istringstream in(out);
      for (std::string line; std::getline(in, line);)
        if (!line.empty() && line[0] == '{') v += line.substr(line.find("\"path\"")) + "\n";  // paths are equal
      return v;
    };
    EXPECT_EQ(json_lines(a.out), json_lines(b.out));
    EXPECT_NE(b.out.find("int8 weights"), std::string::npos) << b.out;
    Result again = chorus::testing::chorus("quantize --checkpoint " + d + "/ft --out " + d + "/ft-int8.h5");
    EXPECT_NE(again.code, 0);
    EXPECT_NE(again.out.find("--force"), std::string::npos) << again.out;
    Result int4 = chorus::testing::chorus("quantize --checkpoint " + d + "/ft --out " + d + "/x.h5 --scheme int4");
    EXPECT_NE(int4.code, 0);
    EXPECT_NE(int4.out.find("scheme"), std::string::npos) << int4.out;

    Result qg = chorus::testing::chorus("quantize --checkpoint " + d + "/gpt --out " + d + "/gpt-int8.h5");
    ASSERT_EQ(qg.code, 0) << qg.out;
    EXPECT_LT(fs::file_size(d + "/gpt-int8.h5"), fs::file_size(d + "/gpt/model.h5") / 2);
    const std::string gen = "generate --prompt 'The ' --max-new-tokens 24 --temperature 0 --run-dir " + d + "/gpt";
    Result g1 = chorus::testing::chorus(gen + " --int8");
    Result g2 = chorus::testing::chorus(gen + " --weights " + d + "/gpt-int8.h5");
    ASSERT_EQ(g1.code, 0) << g1.out;
    ASSERT_EQ(g2.code, 0) << g2.out;
    const auto text = [](std::string out) {  // without the timing line (stderr, interleaved)
      const size_t at = out.find("generated ");
      if (at != std::string::npos) out.erase(at, out.find('\n', at) - at);
      return out;
    };
    EXPECT_EQ(text(g1.out), text(g2.out));
    EXPECT_NE(g2.out.find("(int8 weights"), std::string::npos) << g2.out;
    // A file of the other kind is refused by name, as is an output inside the input.
    Result wrong_t = chorus::testing::chorus("transcribe --checkpoint " + d + "/gpt-int8.h5 --manifest " + d +
                                             "/corpus/test.tsv");
    EXPECT_NE(wrong_t.code, 0);
    EXPECT_NE(wrong_t.out.find("model_type"), std::string::npos) << wrong_t.out;
    Result wrong_g = chorus::testing::chorus("generate --weights " + d + "/ft-int8.h5 --tokenizer " + d + "/tok.json");
    EXPECT_NE(wrong_g.code, 0);
    EXPECT_NE(wrong_g.out.find("model_type"), std::string::npos) << wrong_g.out;
    Result inside = chorus::testing::chorus("quantize --checkpoint " + d + "/ft --out " + d + "/ft/q.h5");
    EXPECT_NE(inside.code, 0);
    EXPECT_NE(inside.out.find("out:"), std::string::npos) << inside.out;
    EXPECT_FALSE(fs::exists(d + "/ft/q.h5"));
  }
  // evaluate records the decode format; one format at a time; an int8 file is
  // not re-packed as bf16; --int8-activations needs int8 weights.
  const std::string eval = "evaluate --manifest " + d + "/corpus/test.tsv --checkpoint " + d;
  const auto weights_used = [&](const std::string& args) {
    Result r = chorus::testing::chorus(eval + args + " --json");
    EXPECT_EQ(r.code, 0) << r.out;
    return r.code == 0 ? nlohmann::json::parse(r.out.substr(r.out.find('{')))["decode"]["weights"].get<std::string>()
                       : r.out;
  };
  EXPECT_EQ(weights_used("/ft --int8"), "int8");
  EXPECT_EQ(weights_used("/ft --bf16"), "bf16");
  EXPECT_EQ(weights_used("/ft-int8.h5 --int8-activations"), "w8a8");
  const auto refused = [&](const std::string& args, const char* why) {
    Result r = chorus::testing::chorus(args);
    EXPECT_NE(r.code, 0) << args;
    EXPECT_NE(r.out.find(why), std::string::npos) << r.out;
  };
  refused(eval + "/ft --int8 --bf16", "--int8 and --bf16");
  refused(eval + "/ft-int8.h5 --bf16", "int8-quantised");
  refused(eval + "/ft --int8-activations", "--int8-activations: goes with --int8");
}

TEST_F(SpeechE2E, RefusesADecoderWithAnotherTokenizer) {
  const std::string d = dir_.string();
  ASSERT_EQ(sh(std::string(CHORUS_BINARY) + " train-tokenizer --input " + d + "/text --vocab 400 --out " + d +
               "/tok2.json").code, 0);
  Result r = sh(std::string(CHORUS_BINARY) + " finetune-speech --tokenizer " + d + "/tok2.json --data " + d +
                "/speech --init-decoder " + d + "/gpt --run-dir " + d + "/bad --steps 1 --quiet");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("tokenizer"), std::string::npos) << r.out;
}

TEST_F(SpeechE2E, ResumeIsExact) {
  const std::string d = dir_.string();
  const std::string init = "--init-decoder " + d + "/gpt --batch 4 --eval-clips 4 --steps 8 --eval-every 8 ";
  ASSERT_EQ(finetune("full", init).code, 0);
  ASSERT_EQ(finetune("split", init + "--stop-at 3").code, 0);
  Result r = finetune("split", init + "--resume auto");
  ASSERT_EQ(r.code, 0) << r.out;
  const Result a = chorus::testing::chorus("checkpoint hash " + d + "/full");
  const Result b = chorus::testing::chorus("checkpoint hash " + d + "/split");
  ASSERT_EQ(a.code, 0) << a.out;
  EXPECT_EQ(a.out.substr(0, 64), b.out.substr(0, 64)) << a.out << b.out;
  std::vector<double> la, lb;
  ASSERT_TRUE(rows_to_compare(d + "/full", d + "/split", "loss", 8, &la, &lb));
  EXPECT_EQ(la, lb);
}

TEST_F(SpeechE2E, DataAndTensorParallelEqualOneRank) { expect_layouts_equal("", ""); }
// Muon on the encoder blocks, the decoder blocks and the cross-attention
// (whole matrices under TP), through CTC-only steps (the decoder frozen: an
// lr group of 0 over whole Muon matrices) and then joint training.
TEST_F(SpeechE2E, MuonDataAndTensorParallelEqualOneRank) {
  expect_layouts_equal("muon_", "--optimizer muon --ctc-only-steps 2");
}

// A decoder from a GPT pretrained with every architecture option
// (docs/ARCHITECTURE.md: rotary, RMSNorm, QK-norm, SwiGLU, untied head,
// soft-capped logits): the speech model keeps its layout (recorded in the
// manifest), DP 2 and TP 2 equal one rank, and transcribe decodes it (joint
// beam, and on int8 weights).
TEST_F(SpeechE2E, DecoderFromAGptWithEveryArchitectureOption) {
  const std::string d = dir_.string(), src = CHORUS_SOURCE_DIR;
  Result g = sh(std::string(CHORUS_BINARY) + " pretrain --config " + src + "/configs/gpt-tiny.ini --tokenizer " + d +
                "/tok.json --data " + d + "/shards --run-dir " + d + "/gpt_modern --steps 4 --quiet --threads 2 " +
                "--pos rotary --norm rmsnorm --qk-norm --mlp swiglu --untied-head --logit-softcap 30");
  ASSERT_EQ(g.code, 0) << g.out;
  expect_layouts_equal("modern_", "--ctc-only-steps 1", "--init-decoder " + d + "/gpt_modern");
  const Result m = sh("cat " + d + "/modern_one/latest/manifest.json");
  EXPECT_NE(m.out.find("\"pos\": \"rotary\""), std::string::npos) << m.out;
  EXPECT_NE(m.out.find("\"mlp\": \"swiglu\""), std::string::npos) << m.out;
  expect_transcribes(d + "/modern_tp2", {"--beam 3 --ctc-weight 0.3", "--beam 1 --int8"});
}

// The CTC alignment prior on three of the decoder's four heads (split 2 + 1
// over the TP ranks), with subsampling 4 (two CTC frames per encoder row).
// The checkpoint records the prior, and transcribe / evaluate decode with it
// (greedy and joint beam).
TEST_F(SpeechE2E, CtcPriorDataAndTensorParallelEqualOneRank) {
  expect_layouts_equal("prior_", "--ctc-prior --ctc-prior-heads 3 --ctc-prior-window 4 --subsample 4");
  const std::string d = dir_.string();
  const Result m = sh("cat " + d + "/prior_one/latest/manifest.json");
  EXPECT_NE(m.out.find("\"ctc_prior\""), std::string::npos) << m.out;
  EXPECT_NE(m.out.find("\"subsample\""), std::string::npos) << m.out;
  expect_transcribes(d + "/prior_one", {"--beam 1 --ctc-weight 0", "--beam 3 --ctc-weight 0.3"});
  Result e = chorus::testing::chorus("evaluate --checkpoint " + d + "/prior_tp2 --manifest " + d + "/corpus/test.tsv");
  EXPECT_EQ(e.code, 0) << e.out;
}

// Muon honours a frozen decoder (--freeze-decoder-steps: an lr group of 0
// while the decoder has gradients): its block matrices at step 2 are the
// GPT's, while the encoder's moved.
TEST_F(SpeechE2E, MuonLeavesAFrozenDecoderUnchanged) {
  const std::string d = dir_.string();
  ASSERT_EQ(finetune("muon_frozen", "--init-decoder " + d + "/gpt --batch 4 --eval-clips 0 --steps 4 "
                                    "--optimizer muon --freeze-decoder-steps 2 --stop-at 2 --save-every 2")
                .code,
            0);
  const Result dec = chorus::testing::chorus("checkpoint hash " + d + "/muon_frozen --prefix decoder.h.0.mlp.");
  const Result gpt = chorus::testing::chorus("checkpoint hash " + d + "/gpt --prefix h.0.mlp.");
  ASSERT_EQ(dec.code, 0) << dec.out;
  ASSERT_EQ(gpt.code, 0) << gpt.out;
  EXPECT_EQ(dec.out.substr(0, 64), gpt.out.substr(0, 64)) << dec.out << gpt.out;
  ASSERT_EQ(finetune("muon_frozen0", "--init-decoder " + d + "/gpt --batch 4 --eval-clips 0 --steps 4 "
                                     "--optimizer muon --freeze-decoder-steps 2 --stop-at 1 --save-every 1")
                .code,
            0);
  const Result e1 = chorus::testing::chorus("checkpoint hash " + d + "/muon_frozen0 --prefix encoder.blocks.0.");
  const Result e2 = chorus::testing::chorus("checkpoint hash " + d + "/muon_frozen --prefix encoder.blocks.0.");
  ASSERT_EQ(e1.code, 0) << e1.out;
  EXPECT_NE(e1.out.substr(0, 64), e2.out.substr(0, 64)) << "the encoder did not train";
}

// --init-from continues from a speech model: with nothing trained in its
// first step (CTC only, so the decoder is frozen, and the encoder's lr scaled
// by 0) the weights are the source's, on one rank and resharded to TP 2; a
// GPT checkpoint is refused; with --init-decoder, the encoder is the
// source's and the decoder the GPT's (or random).
TEST_F(SpeechE2E, InitFromASpeechModelStartsFromItsWeights) {
  const std::string d = dir_.string();
  ASSERT_EQ(finetune("from_src", "--init-decoder " + d + "/gpt --batch 4 --eval-clips 0 --steps 3").code, 0);
  const std::string still = "--init-from " + d + "/from_src --batch 4 --eval-clips 0 --steps 1 --ctc-only-steps 1 "
                            "--new-lr-scale 0 ";
  Result one = finetune("from_one", still);
  ASSERT_EQ(one.code, 0) << one.out;
  EXPECT_NE(one.out.find("init-from: encoder, decoder and CTC head from"), std::string::npos) << one.out;
  Result tp = finetune("from_tp2", still + "--tp 2", 2);
  ASSERT_EQ(tp.code, 0) << tp.out;
  const Result src = chorus::testing::chorus("checkpoint hash " + d + "/from_src");
  ASSERT_EQ(src.code, 0) << src.out;
  for (const char* run : {"from_one", "from_tp2"}) {
    const Result h = chorus::testing::chorus("checkpoint hash " + d + "/" + run);
    ASSERT_EQ(h.code, 0) << h.out;
    EXPECT_EQ(h.out.substr(0, 64), src.out.substr(0, 64)) << run << ": not the source's weights\n" << h.out << src.out;
  }
  Result gpt = finetune("from_gpt", "--init-from " + d + "/gpt --steps 1");
  EXPECT_NE(gpt.code, 0);
  EXPECT_NE(gpt.out.find("expected 'speech'"), std::string::npos) << gpt.out;
  // --init-from with --init-decoder: the source's encoder, the GPT's decoder (or random).
  Result mixed = finetune("from_mixed", still + "--init-decoder " + d + "/gpt");
  ASSERT_EQ(mixed.code, 0) << mixed.out;
  const auto hash = [&](const std::string& run, const std::string& prefix) {
    const Result h = chorus::testing::chorus("checkpoint hash " + d + "/" + run + " --prefix " + prefix);
    EXPECT_EQ(h.code, 0) << h.out;
    return h.out.substr(0, 64);
  };
  EXPECT_EQ(hash("from_mixed", "encoder."), hash("from_src", "encoder.")) << "the encoder is not the source's";
  EXPECT_EQ(hash("from_mixed", "decoder.h.0.mlp."), hash("gpt", "h.0.mlp.")) << "the decoder is not the GPT's";
  EXPECT_NE(hash("from_src", "decoder.h.0.mlp."), hash("gpt", "h.0.mlp.")) << "the source's decoder did not train";
  Result random = finetune("from_random", still + "--init-decoder none --dec-n-layer 2 --dec-n-embd 64 --dec-n-head 4 "
                                                  "--dec-context 64");
  ASSERT_EQ(random.code, 0) << random.out;
  EXPECT_EQ(hash("from_random", "encoder."), hash("from_src", "encoder."));
  EXPECT_NE(random.out.find("decoder from random weights"), std::string::npos) << random.out;
}

// A language the tokenizer lacks (add-language): a model trained with the old
// tokenizer continues on the new one with its decoder's embedding grown. With
// nothing trained, every old tensor is the source's and the old languages
// transcribe exactly as before; TP 2 loads the same grown model; then it
// trains on clips of the new language (English audio relabelled 'af').
TEST_F(SpeechE2E, InitFromGrowsTheVocabularyForANewLanguage) {
  const std::string d = dir_.string();
  ASSERT_EQ(finetune("grow_src", "--init-decoder " + d + "/gpt --batch 4 --eval-clips 0 --steps 3").code, 0);
  Result add = chorus::testing::chorus("add-language --tokenizer " + d + "/tok.json --lang af --out " + d +
                                       "/tok-af.json");
  ASSERT_EQ(add.code, 0) << add.out;
  ASSERT_EQ(sh("awk -F '\t' 'BEGIN{OFS=\"\t\"} $2 == \"en\" {$2 = \"af\"; $1 = \"" + d + "/corpus/\" $1; print}' " +
               d + "/corpus/train.tsv > " + d + "/af.tsv").code, 0);
  for (const char* split : {"train", "val"}) {
    Result p = chorus::testing::chorus("prepare-speech --quiet --manifest " + d + "/af.tsv --tokenizer " + d +
                                       "/tok-af.json --out " + d + "/speech-af --split " + split);
    ASSERT_EQ(p.code, 0) << p.out;
  }
  const std::string grow = "--tokenizer " + d + "/tok-af.json --data " + d + "/speech-af --init-from " + d +
                           "/grow_src --batch 4 --eval-clips 0 --steps 1 --ctc-only-steps 1 --new-lr-scale 0 ";
  const auto run = [&](const std::string& name, const std::string& flags, int np = 1) {
    const std::string cmd = (np > 1 ? mpirun(np) : std::string()) + CHORUS_BINARY + " finetune-speech --run-dir " +
                            d + "/" + name + " --max-tokens 64 --warmup 1 --quiet --threads 1 " + flags;
    return sh(cmd);
  };
  Result one = run("grow_one", grow);
  ASSERT_EQ(one.code, 0) << one.out;
  EXPECT_NE(one.out.find("the decoder's embedding grows by 1 rows"), std::string::npos) << one.out;
  Result tp = run("grow_tp2", grow + "--tp 2", 2);
  ASSERT_EQ(tp.code, 0) << tp.out;
  const auto hash = [&](const std::string& run_name, const std::string& prefix) {
    const Result h = chorus::testing::chorus("checkpoint hash " + d + "/" + run_name +
                                             (prefix.empty() ? "" : " --prefix " + prefix));
    EXPECT_EQ(h.code, 0) << h.out;
    return h.out.substr(0, 64);
  };
  EXPECT_EQ(hash("grow_one", ""), hash("grow_tp2", "")) << "TP 2 grew another model";
  EXPECT_EQ(hash("grow_one", "encoder."), hash("grow_src", "encoder."));
  EXPECT_EQ(hash("grow_one", "decoder.h."), hash("grow_src", "decoder.h."));
  EXPECT_NE(hash("grow_one", "decoder.wte."), hash("grow_src", "decoder.wte.")) << "the embedding did not grow";
  // The old languages: their val loss (on shards of the old tokenizer, which the
  // new one reads) is the source model's, but for the one new row in the softmax.
  const std::string still = "--data " + d + "/speech --init-from " + d + "/grow_src --batch 4 --eval-clips 0 "
                            "--steps 1 --ctc-only-steps 1 --new-lr-scale 0 --eval-every 1 ";
  ASSERT_EQ(run("grow_src_val", still + "--tokenizer " + d + "/tok.json").code, 0);
  Result v = run("grow_val", still + "--tokenizer " + d + "/tok-af.json");
  ASSERT_EQ(v.code, 0) << v.out;
  const double att_src = metric(d + "/grow_src_val", "val_att_loss").back();
  const double att_grown = metric(d + "/grow_val", "val_att_loss").back();
  EXPECT_NEAR(att_grown, att_src, 1e-3 * att_src) << "the old tokens' rows or the blocks changed";
  // Training on the new language, and transcribing it.
  Result train = run("grow_train", "--tokenizer " + d + "/tok-af.json --data " + d + "/speech-af --init-from " + d +
                                       "/grow_src --batch 4 --eval-clips 4 --steps 4 --eval-every 4");
  ASSERT_EQ(train.code, 0) << train.out;
  Result t = chorus::testing::chorus("transcribe --checkpoint " + d + "/grow_train --manifest " + d +
                                     "/af.tsv --lang af");
  EXPECT_EQ(t.code, 0) << t.out;
  // --init-decoder GPT with the extended tokenizer (a new language from the
  // GPT alone, encoder new): the GPT's tensors load unchanged, the embedding
  // grows; the decoder is not trained in a CTC-only step, so its blocks are the
  // GPT's as with the GPT's own tokenizer.
  const std::string from_gpt = "--init-decoder " + d + "/gpt --batch 4 --eval-clips 0 --steps 1 --ctc-only-steps 1 ";
  Result g1 = run("gpt_grow", from_gpt + "--tokenizer " + d + "/tok-af.json --data " + d + "/speech-af");
  ASSERT_EQ(g1.code, 0) << g1.out;
  EXPECT_NE(g1.out.find("the embedding grows by 1 rows"), std::string::npos) << g1.out;
  ASSERT_EQ(run("gpt_same", from_gpt + "--tokenizer " + d + "/tok.json --data " + d + "/speech").code, 0);
  for (const char* prefix : {"decoder.h.0.attn.", "decoder.h.1.mlp.", "decoder.wpe.", "decoder.ln_f."})
    EXPECT_EQ(hash("gpt_grow", prefix), hash("gpt_same", prefix)) << prefix;
  EXPECT_NE(hash("gpt_grow", "decoder.wte."), hash("gpt_same", "decoder.wte."));
  // A tokenizer that does not extend the model's is refused, naming it.
  ASSERT_EQ(chorus::testing::chorus("train-tokenizer --quiet --input " + d + "/text --vocab 400 --out " + d +
                                    "/tok-other.json").code,
            0);
  Result bad = run("grow_bad", "--tokenizer " + d + "/tok-other.json --data " + d + "/speech-af --init-from " + d +
                                   "/grow_src --steps 1");
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.out.find("tok-other.json"), std::string::npos) << bad.out;
  Result bad_gpt = run("gpt_bad", "--tokenizer " + d + "/tok-other.json --data " + d + "/speech-af " + from_gpt);
  EXPECT_NE(bad_gpt.code, 0);
  EXPECT_NE(bad_gpt.out.find("tok-other.json"), std::string::npos) << bad_gpt.out;
}

TEST_F(SpeechE2E, Bf16AndFp16TrackFp32) {
  const std::string d = dir_.string();
  const std::string common = "--init-decoder " + d + "/gpt --batch 4 --no-spec-augment --eval-clips 0 --steps 6 "
                             "--eval-every 6 ";
  ASSERT_EQ(finetune("p32", common).code, 0);
  for (const char* p : {"bf16", "fp16"}) {
    Result r = finetune(std::string("p") + p, common + "--precision " + p);
    ASSERT_EQ(r.code, 0) << r.out;
    std::vector<double> a, b, va, vb;
    ASSERT_TRUE(rows_to_compare(d + "/p32", d + "/p" + p, "loss", 6, &a, &b));
    for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(b[i], a[i], 0.03 * a[i]) << p << " step " << i;
    ASSERT_TRUE(rows_to_compare(d + "/p32", d + "/p" + p, "val_loss", 6, &va, &vb));
    EXPECT_NEAR(vb.back(), va.back(), 0.03 * va.back()) << p;
  }
}

}  // namespace

// --ctc-only-steps: the first steps train the encoder on CTC alone (no
// attention loss, the decoder untouched), then the joint loss; resume across
// the switch is exact; validation reports the CTC head's greedy CER throughout
// and the decoder's only after the switch.
TEST_F(SpeechE2E, CtcOnlyStepsThenJointAndResumeAcrossTheSwitch) {
  const std::string d = dir_.string();
  const std::string flags = "--init-decoder " + d + "/gpt --batch 4 --eval-clips 4 --steps 6 --eval-every 2 "
                            "--ctc-weight 0.5 --ctc-only-steps 3 --bucket-batches 2 ";
  Result full = finetune("ctc_full", flags);
  ASSERT_EQ(full.code, 0) << full.out;
  const auto att = metric(d + "/ctc_full", "att_loss");
  ASSERT_EQ(att.size(), 6u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(att[i], 0.0) << "step " << i + 1 << " ran the decoder";
  for (int i = 3; i < 6; ++i) EXPECT_GT(att[i], 0.0) << "step " << i + 1 << " did not";
  // Evaluations after steps 2, 4 and 6: the CTC head's CER at each, the decoder's after the switch.
  const auto ctc_cer = metric(d + "/ctc_full", "val_ctc_cer"), cer = metric(d + "/ctc_full", "val_cer");
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(std::isfinite(ctc_cer[i]), i % 2 == 1) << "val_ctc_cer at step " << i + 1;
    EXPECT_EQ(std::isfinite(cer[i]), i == 3 || i == 5) << "val_cer at step " << i + 1;
  }
  // The decoder did not move during the CTC-only steps: its tensors at step 2 are the GPT's.
  ASSERT_EQ(finetune("ctc_split", flags + "--stop-at 2 --save-every 2").code, 0);
  const Result dec = chorus::testing::chorus("checkpoint hash " + d + "/ctc_split --prefix decoder.h.0.mlp.");
  const Result gpt = chorus::testing::chorus("checkpoint hash " + d + "/gpt --prefix h.0.mlp.");
  ASSERT_EQ(dec.code, 0) << dec.out;
  ASSERT_EQ(gpt.code, 0) << gpt.out;
  EXPECT_EQ(dec.out.substr(0, 64), gpt.out.substr(0, 64)) << dec.out << gpt.out;
  Result r = finetune("ctc_split", flags + "--resume auto");
  ASSERT_EQ(r.code, 0) << r.out;
  const Result a = chorus::testing::chorus("checkpoint hash " + d + "/ctc_full");
  const Result b = chorus::testing::chorus("checkpoint hash " + d + "/ctc_split");
  EXPECT_EQ(a.out.substr(0, 64), b.out.substr(0, 64)) << a.out << b.out;
}
