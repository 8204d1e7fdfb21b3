// Checkpoints through the chorus executable on gpt-tiny (docs/CHECKPOINTS.md):
//   - exact resume: a run stopped after step 3 (--stop-at) and resumed with
//     --resume auto ends with the same `checkpoint hash` (parameters, and with
//     the Adam moments), byte-identical checkpoint files and the same loss at
//     every step as an uninterrupted run — on 1 rank, DP 2, ZeRO-1, gradient
//     accumulation, TP 2 and DP 2 x TP 2 with ZeRO-1;
//   - resharding TP 2 -> 1 -> 2 and DP 2 -> 1 -> 2 offline keeps the hash (and
//     gives byte-identical files back), and the next step's loss matches, also
//     when a run loads another layout's checkpoint at start-up;
//   - a save killed by SIGKILL at any point leaves `latest` on the previous
//     checkpoint, which verifies and resumes exactly;
//   - truncated, bit-flipped and missing files, another model config or
//     tokenizer and an unknown format version are refused by name;
//   - SIGTERM (one rank) and SIGUSR1 (forwarded by mpirun to two ranks)
//     finish the step, write a checkpoint and exit with code 75.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "checkpoint/manifest.h"
#include "common/process.h"

namespace fs = std::filesystem;

namespace {

using chorus::testing::losses;
using chorus::testing::mpirun;
using chorus::testing::Result;
using chorus::testing::rows_to_compare;
using chorus::testing::sh;


chorus::checkpoint::Manifest manifest(const std::string& dir) {
  return chorus::checkpoint::read_manifest(dir + "/manifest.json");
}

class Ckpt : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("chorus_ckpt_e2e_" + std::to_string(getpid()));
    ASSERT_EQ(chorus::testing::make_corpus(dir_, {"en", "fr"}, 512), "");
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  static std::string path(const std::string& name) { return (dir_ / name).string(); }

  static std::string pretrain_cmd(int np, const std::string& run_dir, const std::string& args,
                                  const std::string& tok = "tok.json", const std::string& shards = "shards") {
    return (np > 1 ? mpirun(np) : std::string()) + CHORUS_BINARY + " pretrain --quiet --config " +
           CHORUS_SOURCE_DIR + "/configs/gpt-tiny.ini --tokenizer " + path(tok) + " --data " + path(shards) +
           " --run-dir " + run_dir + (args.find("--steps") == std::string::npos ? " --steps 6" : "") +
           " --warmup 2 --eval-every 0 --peak-gflops 100 --threads 1 " + args;
  }
  // Runs pretrain and expects exit code `want`.
  static Result pretrain(int np, const std::string& run_dir, const std::string& args, int want = 0) {
    const std::string cmd = "timeout 120 " + pretrain_cmd(np, run_dir, args);
    Result r = sh(cmd);
    EXPECT_EQ(r.code, want) << cmd << "\n" << r.out;
    return r;
  }
  static Result tool(const std::string& args) {
    return sh(std::string(CHORUS_BINARY) + " checkpoint " + args);
  }
  static std::string hash(const std::string& dir, bool with_optimizer = false) {
    Result r = tool("hash " + dir + (with_optimizer ? " --with-optimizer" : ""));
    EXPECT_EQ(r.code, 0) << r.out;
    return r.out.substr(0, 64);
  }
  // Every file of two checkpoints has the same digest.
  static void expect_same_files(const std::string& a, const std::string& b) {
    const auto ma = manifest(a), mb = manifest(b);
    ASSERT_EQ(ma.files.size(), mb.files.size());
    for (size_t i = 0; i < ma.files.size(); ++i) {
      EXPECT_EQ(ma.files[i].path, mb.files[i].path);
      EXPECT_EQ(ma.files[i].sha256, mb.files[i].sha256) << ma.files[i].path;
    }
  }

  // Uninterrupted 6 steps vs stopped after 3 and resumed: bit-identical.
  static void exact_resume(const std::string& name, int np, const std::string& layout) {
    const std::string full = path(name + "_full"), split = path(name + "_split");
    pretrain(np, full, layout);
    pretrain(np, split, layout + " --stop-at 3 --save-every 2 --keep-last 1");
    EXPECT_FALSE(fs::exists(split + "/step-00000002")) << "keep-last 1 keeps only step 3";
    EXPECT_EQ(fs::read_symlink(split + "/latest").string(), "step-00000003");
    EXPECT_FALSE(fs::exists(split + "/model.h5")) << "a stopped run writes no final weights";
    auto r = pretrain(np, split, layout + " --resume auto");
    std::vector<double> a, b;
    ASSERT_TRUE(rows_to_compare(full, split, "loss", 6, &a, &b));
    for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i], b[i]) << "step " << i + 1;
    const std::string ha = hash(full), hb = hash(split);
    EXPECT_EQ(ha, hb);
    EXPECT_EQ(hash(full, true), hash(split, true));
    EXPECT_EQ(hash(full + "/model.h5"), ha);
    expect_same_files(full + "/step-00000006", split + "/step-00000006");
    std::printf(
        "[ resume  ] %s: uninterrupted and resumed after step 3 both hash to %.16s..., losses identical\n",
        name.c_str(), ha.c_str());
  }

  // The training loss logged for `step` in run_dir/metrics.jsonl.
  static double loss_at(const std::string& run_dir, int step) {
    std::ifstream in(run_dir + "/metrics.jsonl");
    for (std::string line; std::getline(in, line);) {
      const auto row = nlohmann::json::parse(line);
      if (row["step"].get<int>() == step) return row["loss"].get<double>();
    }
    ADD_FAILURE() << run_dir << " logged no step " << step;
    return NAN;
  }

  static fs::path dir_;
};
fs::path Ckpt::dir_;

}  // namespace

TEST_F(Ckpt, ExactResumeSingleRank) { exact_resume("one", 1, "--batch 8"); }
TEST_F(Ckpt, ExactResumeDataParallel2) { exact_resume("dp2", 2, "--batch 4"); }
TEST_F(Ckpt, ExactResumeZero1Dp2) { exact_resume("zero1", 2, "--batch 4 --zero 1"); }
TEST_F(Ckpt, ExactResumeGradAccum) {
  exact_resume("accum", 1, "--batch 4 --grad-accum 2");
  exact_resume("dp2accum", 2, "--batch 2 --grad-accum 2 --zero 1");
}
// Batch-size warmup: steps 1..4 do 1, 2, 3, 4 micro-batches, then 4; the
// first step is exactly a run without accumulation, and a stop inside the ramp
// resumes bit-exactly.
TEST_F(Ckpt, BatchWarmupRampsTheBatchAndResumesExactly) {
  exact_resume("bwarm", 1, "--batch 2 --grad-accum 4 --batch-warmup 4");
  const std::string full = path("bwarm_full"), plain = path("bwarm_plain");
  std::vector<double> tokens;
  std::ifstream in(full + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    const auto row = nlohmann::json::parse(line);
    if (row.contains("tokens") && row.contains("loss")) tokens.push_back(row["tokens"].get<double>());
  }
  ASSERT_EQ(tokens.size(), 6u);
  const double micro = tokens[0];  // one micro-batch: batch 2 x seq
  const std::vector<double> want = {1, 3, 6, 10, 14, 18};  // cumulative micro-batches
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(tokens[i], want[i] * micro) << "step " << i + 1;
  pretrain(1, plain, "--batch 2");
  EXPECT_EQ(loss_at(full, 1), loss_at(plain, 1));
  std::vector<double> na, nb;  // the gradient of step 1 is one micro-batch's mean, not a quarter of it
  ASSERT_TRUE(rows_to_compare(full, plain, "grad_norm", 6, &na, &nb));
  EXPECT_EQ(na[0], nb[0]);
  EXPECT_NE(loss_at(full, 2), loss_at(plain, 2)) << "step 2 averages two micro-batches";
  EXPECT_EQ(manifest(full + "/step-00000006").sampler.consumed, 18u * 2u) << "samples of 18 micro-batches of 2";
}
// Muon's momentum lives in the exp_avg slots of its matrices: the same exact resume.
TEST_F(Ckpt, ExactResumeMuon) { exact_resume("muon", 1, "--batch 8 --optimizer muon"); }
TEST_F(Ckpt, ExactResumeMuonDp2xTp2Zero1) { exact_resume("muon_dp2tp2", 4, "--batch 4 --tp 2 --zero 1 --optimizer muon"); }
// The optimizer is recorded (config.json, the manifest) and a resume with the
// other one is refused, naming the checkpoint and both optimizers.
TEST_F(Ckpt, ResumeWithAnotherOptimizerIsRefused) {
  for (const auto& [trained, other] : {std::pair{"muon", "adamw"}, std::pair{"adamw", "muon"}}) {
    SCOPED_TRACE(std::string("trained with ") + trained);
    const std::string run = path(std::string("switch_") + trained);
    pretrain(1, run, std::string("--batch 8 --stop-at 2 --optimizer ") + trained);
    const std::string ckpt = run + "/step-00000002";
    EXPECT_EQ(manifest(ckpt).optimizer.type, trained);
    std::ifstream cfg(run + "/config.json");
    EXPECT_EQ(nlohmann::json::parse(cfg).at("optimizer").get<std::string>(), trained);
    const Result r = pretrain(1, run, std::string("--batch 8 --resume auto --optimizer ") + other, 1);
    EXPECT_NE(r.out.find(ckpt), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(std::string("trained with --optimizer ") + trained + " and this run has --optimizer " + other),
              std::string::npos)
        << r.out;
    EXPECT_EQ(manifest(ckpt).optimizer.type, trained) << "the refused run changed nothing";
  }
}
// The architecture options (docs/ARCHITECTURE.md) resume exactly too, and are
// part of the model a checkpoint resumes: a run with other options is refused
// by name; the GPT-2 safetensors export refuses a layout it cannot hold, the
// chorus weights file keeps it and generate decodes it.
TEST_F(Ckpt, ExactResumeModernArchDp2xTp2Zero1) {
  exact_resume("modern_dp2tp2", 4,
               "--batch 4 --tp 2 --zero 1 --optimizer muon --pos rotary --norm rmsnorm --qk-norm --mlp swiglu "
               "--untied-head --logit-softcap 30");
}
TEST_F(Ckpt, ArchIsRecordedAndAnotherIsRefused) {
  const std::string run = path("arch_switch");
  pretrain(1, run, "--batch 8 --stop-at 2 --pos rotary --mlp relu2");
  const std::string ckpt = run + "/step-00000002";
  EXPECT_EQ(manifest(ckpt).model.pos, chorus::models::PosKind::rotary);
  EXPECT_EQ(manifest(ckpt).model.mlp, chorus::models::MlpKind::relu2);
  std::ifstream cfg(run + "/config.json");
  EXPECT_EQ(nlohmann::json::parse(cfg).at("model").at("arch").at("pos").get<std::string>(), "rotary");
  Result r = pretrain(1, run, "--batch 8 --resume auto --mlp relu2", 1);
  EXPECT_NE(r.out.find("field 'model.arch' is rotary relu2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(ckpt), std::string::npos) << r.out;
  r = tool("export " + ckpt + " --out " + path("arch_hf") + " --format safetensors");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("cannot express rotary positions"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(path("arch_hf") + "/model.safetensors"));
  r = tool("export " + ckpt + " --out " + path("arch.h5"));
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string gen = std::string(CHORUS_BINARY) + " generate --weights " + path("arch.h5") + " --tokenizer " +
                          path("tok.json") + " --max-new-tokens 8 --threads 1";
  r = sh(gen);
  EXPECT_EQ(r.code, 0) << r.out;
  r = sh(gen + " --int8");
  EXPECT_EQ(r.code, 0) << r.out;
  r = sh(gen + " --bf16");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("(bf16 weights"), std::string::npos) << r.out;
}
TEST_F(Ckpt, ExactResumeTensorParallel2) { exact_resume("tp2", 2, "--batch 8 --tp 2"); }
TEST_F(Ckpt, ExactResumeDp2xTp2Zero1) { exact_resume("dp2tp2", 4, "--batch 4 --tp 2 --zero 1"); }
// Mixed precision: the fp32 masters, Adam state and (fp16) the loss scaler's
// scale, good-step count and skipped count come back exactly. The fp16 run
// skips step 2 (an injected Inf on rank 1) and grows its scale every 2 good
// steps, so the scaler's state at the stop (step 3) is neither its start nor
// constant.
TEST_F(Ckpt, ExactResumeBf16Dp2) { exact_resume("bf16dp2", 2, "--batch 4 --precision bf16"); }
TEST_F(Ckpt, ExactResumeFp16Dp2WithLossScaling) {
  ::setenv("CHORUS_INJECT_INF", "1:1", 1);
  exact_resume("fp16dp2", 2, "--batch 4 --zero 1 --precision fp16 --loss-scale-init 1024 --loss-scale-interval 2");
  ::unsetenv("CHORUS_INJECT_INF");
  const auto m = manifest(path("fp16dp2_split") + "/step-00000006");
  EXPECT_EQ(m.precision, "fp16");
  EXPECT_TRUE(m.loss_scaler.enabled);
  EXPECT_EQ(m.loss_scaler.skipped_steps, 1);
  // 1024, step 2 skipped -> 512, then 4 good steps (3..6) grow it twice -> 2048.
  EXPECT_EQ(m.loss_scaler.scale, 2048.0);
  const auto scales = chorus::testing::metric(path("fp16dp2_split"), "loss_scale");
  ASSERT_EQ(scales.size(), 6u);
  EXPECT_EQ(scales[1], 1024.0);  // the skipped step ran at 1024
  EXPECT_EQ(scales[2], 512.0);
}

TEST_F(Ckpt, ReshardDp2To1To2) {
  const std::string full = path("rdp_full"), a = path("rdp_a");
  pretrain(2, full, "--batch 4 --zero 1");
  pretrain(2, a, "--batch 4 --zero 1 --stop-at 3");
  const std::string A = a + "/step-00000003", B = path("rdp_b"), C = path("rdp_c");
  auto r = tool("reshard " + A + " --out " + B + " --dp 1 --zero 0");
  ASSERT_EQ(r.code, 0) << r.out;
  r = tool("reshard " + B + " --out " + C + " --dp 2 --zero 1");
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string h = hash(A);
  EXPECT_EQ(hash(B), h);
  EXPECT_EQ(hash(C), h);
  EXPECT_EQ(hash(B, true), hash(A, true));
  expect_same_files(A, C);
  // The next step on one rank (global batch unchanged), from the resharded copy and
  // from the original (resharded at start-up): the same loss, close to DP 2's.
  const std::string r1 = path("rdp_r1"), r2 = path("rdp_r2");
  pretrain(1, r1, "--batch 8 --stop-at 4 --resume " + B);
  r = pretrain(1, r2, "--batch 8 --stop-at 4 --resume " + a);
  EXPECT_NE(r.out.find("resharded from tp 1 x dp 2, zero 1"), std::string::npos) << r.out;
  EXPECT_EQ(loss_at(r1, 4), loss_at(r2, 4));
  EXPECT_NEAR(loss_at(r1, 4), loss_at(full, 4), 1e-5 * std::fabs(loss_at(full, 4)));
  EXPECT_EQ(hash(r1), hash(r2));
  std::printf(
      "[ reshard ] DP 2 -> 1 -> 2: hash %.16s... throughout; step-4 loss %.7f (1 rank) vs %.7f (DP 2)\n",
      h.c_str(), loss_at(r1, 4), loss_at(full, 4));
}

TEST_F(Ckpt, ReshardTp2To1To2) {
  const std::string full = path("rtp_full"), a = path("rtp_a");
  pretrain(2, full, "--batch 8 --tp 2");
  pretrain(2, a, "--batch 8 --tp 2 --stop-at 3");
  const std::string A = a + "/step-00000003", B = path("rtp_b"), C = path("rtp_c");
  auto r = tool("reshard " + A + " --out " + B + " --tp 1");
  ASSERT_EQ(r.code, 0) << r.out;
  r = tool("reshard " + B + " --out " + C + " --tp 2");
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string h = hash(A);
  EXPECT_EQ(hash(B), h);
  EXPECT_EQ(hash(C), h);
  EXPECT_EQ(hash(C, true), hash(A, true));
  expect_same_files(A, C);
  // Next step: TP 2 from the round-tripped copy equals the uninterrupted TP 2 run;
  // TP 1 from the resharded copy and from the TP-2 original (start-up) agree.
  const std::string t2 = path("rtp_t2"), t1 = path("rtp_t1"), t1s = path("rtp_t1s"), t12 = path("rtp_t12");
  pretrain(2, t2, "--batch 8 --tp 2 --stop-at 4 --resume " + C);
  EXPECT_EQ(loss_at(t2, 4), loss_at(full, 4));
  pretrain(1, t1, "--batch 8 --stop-at 4 --resume " + B);
  r = pretrain(1, t1s, "--batch 8 --stop-at 4 --resume " + a);
  EXPECT_NE(r.out.find("resharded from tp 2 x dp 1"), std::string::npos) << r.out;
  EXPECT_EQ(loss_at(t1, 4), loss_at(t1s, 4));
  EXPECT_NEAR(loss_at(t1, 4), loss_at(full, 4), 1e-5 * std::fabs(loss_at(full, 4)));
  // TP 1 -> 2 at start-up
  pretrain(2, t12, "--batch 8 --tp 2 --stop-at 4 --resume " + B);
  EXPECT_EQ(loss_at(t12, 4), loss_at(full, 4));
  std::printf(
      "[ reshard ] TP 2 -> 1 -> 2: hash %.16s... throughout; step-4 loss %.7f (TP 1) vs %.7f (TP 2)\n",
      h.c_str(), loss_at(t1, 4), loss_at(full, 4));
}

TEST_F(Ckpt, SigkillDuringASaveLeavesThePreviousCheckpoint) {
  const std::string full = path("kill_full");
  pretrain(1, full, "--batch 8");
  const std::string want = hash(full, true);
  // Kill during the save of step 4: after the first shard file (1), after the manifest
  // (3), after the rename of step-00000004.tmp (4), i.e. just before `latest` moves.
  for (int n : {1, 3, 4}) {
    const std::string run = path("kill_" + std::to_string(n));
    auto r = sh("CHORUS_CKPT_KILL_AT=4:" + std::to_string(n) + " " +
                pretrain_cmd(1, run, "--batch 8 --save-every 2"));
    EXPECT_EQ(r.code, 128 + SIGKILL) << r.out;
    EXPECT_EQ(fs::read_symlink(run + "/latest").string(), "step-00000002") << "kill after event " << n;
    r = tool("verify " + run);
    EXPECT_EQ(r.code, 0) << r.out;
    EXPECT_NE(r.out.find("OK " + run + "/step-00000002"), std::string::npos) << r.out;
    r = pretrain(1, run, "--batch 8 --save-every 2 --resume auto");
    EXPECT_NE(r.out.find("resumed from " + run + "/step-00000002"), std::string::npos) << r.out;
    EXPECT_EQ(hash(run, true), want) << "kill after event " << n;
    EXPECT_FALSE(fs::exists(run + "/step-00000004.tmp"));
  }
  // Two ranks (ZeRO-1), both killed after their first shard file.
  const std::string run = path("kill_mpi");
  auto r = sh(
      mpirun(2) + "-x CHORUS_CKPT_KILL_AT=4:1 " + std::string(CHORUS_BINARY) + " pretrain --quiet --config " +
      CHORUS_SOURCE_DIR + "/configs/gpt-tiny.ini --tokenizer " + path("tok.json") + " --data " +
      path("shards") + " --run-dir " + run +
      " --steps 6 --warmup 2 --eval-every 0 --peak-gflops 100 --threads 1 --batch 4 --zero 1 --save-every 2");
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_EQ(fs::read_symlink(run + "/latest").string(), "step-00000002");
  EXPECT_EQ(tool("verify " + run).code, 0);
}

TEST_F(Ckpt, DamagedCheckpointsAreRefusedNamingTheFile) {
  const std::string run = path("dmg");
  pretrain(1, run, "--batch 8 --stop-at 3");
  const std::string good = run + "/step-00000003";
  auto variant = [&](const std::string& name) {
    const std::string d = path(name);
    fs::copy(good, d, fs::copy_options::recursive);
    return d;
  };
  struct Case {
    std::string name, file, expect;
  };
  const std::string truncated = variant("dmg_trunc"), flipped = variant("dmg_flip"),
                    missing = variant("dmg_missing");
  fs::resize_file(truncated + "/model-tp00.h5", fs::file_size(truncated + "/model-tp00.h5") - 1000);
  {
    std::fstream f(flipped + "/optim-tp00-dp00.h5", std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(4000);
    char c;
    f.read(&c, 1);
    c ^= 1;
    f.seekp(4000);
    f.write(&c, 1);
  }
  fs::remove(missing + "/optim-tp00-dp00.h5");
  for (const Case& c : {Case{"truncated", truncated + "/model-tp00.h5", "truncated"},
                        Case{"bit flip", flipped + "/optim-tp00-dp00.h5", "SHA-256"},
                        Case{"missing", missing + "/optim-tp00-dp00.h5", "missing"}}) {
    auto r = tool("verify " + fs::path(c.file).parent_path().string());
    EXPECT_EQ(r.code, 1) << c.name << "\n" << r.out;
    EXPECT_NE(r.out.find(c.file), std::string::npos) << c.name << "\n" << r.out;
    EXPECT_NE(r.out.find(c.expect), std::string::npos) << c.name << "\n" << r.out;
    r = pretrain(1, path("dmg_run"), "--batch 8 --resume " + fs::path(c.file).parent_path().string(), 1);
    EXPECT_NE(r.out.find(c.file), std::string::npos) << c.name << "\n" << r.out;
    EXPECT_FALSE(fs::exists(path("dmg_run") + "/metrics.jsonl")) << "no training after a refused load";
  }
  EXPECT_EQ(tool("verify " + good).code, 0);
}

TEST_F(Ckpt, AnotherConfigTokenizerOrFormatVersionIsRefused) {
  const std::string run = path("cfg");
  pretrain(1, run, "--batch 8 --stop-at 3");
  auto r = pretrain(1, run, "--batch 8 --resume auto --n-embd 32", 1);
  EXPECT_NE(r.out.find("model.n_embd"), std::string::npos) << r.out;
  // a tokenizer of the same size trained on other text, with its own shards
  const std::string bin = CHORUS_BINARY;
  ASSERT_EQ(sh(bin + " train-tokenizer --quiet --input " + path("text/en.txt") + " --vocab 512 --out " +
               path("tok2.json"))
                .code,
            0);
  ASSERT_EQ(sh(bin + " prepare-text --quiet --tokenizer " + path("tok2.json") + " --input " + path("text") +
               " --out " + path("shards2"))
                .code,
            0);
  r = sh("timeout 60 " + pretrain_cmd(1, run, "--batch 8 --resume auto", "tok2.json", "shards2"));
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("tokenizer.hash"), std::string::npos) << r.out;
  // a manifest from a future format version (its self-hash consistent)
  const std::string d = run + "/step-00000003";
  auto m = manifest(d);
  m.format_version = 2;
  chorus::checkpoint::write_manifest(d + "/manifest.json", m);
  r = tool("verify " + d);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("format_version"), std::string::npos) << r.out;
  r = pretrain(1, run, "--batch 8 --resume auto", 1);
  EXPECT_NE(r.out.find("'format_version' is 2, this build reads version 1"), std::string::npos) << r.out;
}

TEST_F(Ckpt, SigtermOnOneRankCheckpointsAndExits75) {
  const std::string run = path("sigterm");
  // Long enough never to finish: stopped by SIGTERM once 5 steps are logged.
  const std::string cmd = pretrain_cmd(1, run, "--batch 8 --steps 100000");
  auto r =
      sh(cmd + " & pid=$!; for i in $(seq 600); do kill -0 $pid 2>/dev/null || break; [ -f " + run +
         "/metrics.jsonl ] && [ $(wc -l < " + run +
         "/metrics.jsonl) -ge 5 ] && break; sleep 0.05; done; kill -TERM $pid; wait $pid; echo \"rc=$?\"");
  ASSERT_NE(r.out.find("rc=75"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("stopped by SIGTERM"), std::string::npos) << r.out;
  const auto k = static_cast<int64_t>(losses(run).size());
  ASSERT_GE(k, 5);
  const auto m = manifest(run + "/latest");
  EXPECT_EQ(m.step, k) << "the checkpoint is of the last finished step";
  EXPECT_EQ(tool("verify " + run).code, 0);
  // The stopped run continues exactly: two more steps equal an uninterrupted run's.
  const std::string stop = " --stop-at " + std::to_string(k + 2);
  pretrain(1, run, "--batch 8 --steps 100000 --resume auto" + stop);
  const std::string ref = path("sigterm_ref");
  pretrain(1, ref, "--batch 8 --steps 100000" + stop);
  EXPECT_EQ(hash(run, true), hash(ref, true));
  std::vector<double> a, b;
  ASSERT_TRUE(rows_to_compare(run, ref, "loss", static_cast<size_t>(k + 2), &a, &b));
  EXPECT_EQ(a, b);
}

TEST_F(Ckpt, SigusrToMpirunStopsEveryRankAtTheSameStep) {
  const std::string run = path("sigusr");
  const std::string cmd = pretrain_cmd(2, run, "--batch 4 --zero 1 --steps 100000");
  auto r =
      sh(cmd + " & pid=$!; for i in $(seq 600); do kill -0 $pid 2>/dev/null || break; [ -f " + run +
         "/metrics.jsonl ] && [ $(wc -l < " + run +
         "/metrics.jsonl) -ge 5 ] && break; sleep 0.05; done; kill -USR1 $pid; wait $pid; echo \"rc=$?\"");
  ASSERT_NE(r.out.find("rc=75"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("stopped by SIGUSR1"), std::string::npos) << r.out;
  const auto m = manifest(run + "/latest");
  EXPECT_EQ(m.step, static_cast<int64_t>(losses(run).size()));
  EXPECT_EQ(m.rng.size(), 2u);
  EXPECT_EQ(m.files.size(), 3u);  // one model file, two ZeRO-1 optimizer slices
  EXPECT_EQ(tool("verify " + run).code, 0);
}

TEST_F(Ckpt, ToolsInspectExportAndAFreshAutoStart) {
  const std::string run = path("tools");
  auto r = pretrain(1, run, "--batch 8 --resume auto --stop-at 3");
  EXPECT_NE(r.out.find("no checkpoint in " + run + "; starting from step 0"), std::string::npos) << r.out;
  r = tool("inspect " + run + " --tensors");
  ASSERT_EQ(r.code, 0) << r.out;
  for (const char* s : {"step         3", "layout       tp 1 x dp 1, zero 0", "model-tp00.h5",
                        "optim-tp00-dp00.h5", "h.1.mlp.c_proj.weight", "(64, 256)"})
    EXPECT_NE(r.out.find(s), std::string::npos) << s << "\n" << r.out;
  const std::string h5 = path("tools_export.h5");
  ASSERT_EQ(tool("export " + run + " --out " + h5).code, 0);
  EXPECT_EQ(hash(h5), hash(run));
  r = sh(std::string(CHORUS_BINARY) + " generate --weights " + h5 + " --tokenizer " + path("tok.json") +
         " --prompt 'The ' --max-new-tokens 8 --seed 1");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out.rfind("The ", 0), 0u) << r.out;
  r = tool("export " + run + " --format safetensors --out " + path("tools_hf"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(fs::exists(path("tools_hf/model.safetensors")));
  EXPECT_TRUE(fs::exists(path("tools_hf/config.json")));
  r = tool("frobnicate " + run);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("unknown action 'frobnicate'"), std::string::npos) << r.out;
}
