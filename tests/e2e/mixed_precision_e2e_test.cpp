// Mixed precision through the chorus executable on gpt-tiny:
//   - 200 steps in bf16 and in fp16 (with dynamic loss scaling) track the fp32
//     loss curve: every 20-step window's mean training loss and the final
//     validation loss within stated tolerances;
//   - an Inf injected into one rank's gradients (fp16, DP 2 and TP 2) makes
//     the job skip exactly that step on every rank, halves the loss scale,
//     and training goes on with finite losses and parameters;
//   - a checkpoint written in fp32 resumes in bf16 (with a warning), since the
//     files hold the fp32 masters;
//   - memory by kind is reported, and bf16 halves the activation table.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/process.h"

namespace fs = std::filesystem;
using chorus::testing::losses;
using chorus::testing::metric;
using chorus::testing::mpirun;
using chorus::testing::rows_to_compare;
using chorus::testing::sh;

namespace {

class MixedPrecision : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("chorus_mp_e2e_" + std::to_string(getpid()));
    ASSERT_EQ(chorus::testing::make_corpus(dir_, {"en", "de", "fr"}, 512), "");
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  static std::string run(const std::string& name, int np, const std::string& args, int want = 0,
                         std::string* out = nullptr) {
    const std::string run_dir = (dir_ / name).string();
    const std::string cmd = "timeout 300 " + (np > 1 ? mpirun(np) : std::string()) + CHORUS_BINARY +
                            " pretrain --config " + CHORUS_SOURCE_DIR + "/configs/gpt-tiny.ini --tokenizer " +
                            (dir_ / "tok.json").string() + " --data " + (dir_ / "shards").string() + " --run-dir " +
                            run_dir + " --peak-gflops 100 --log-every 1000 " + args;
    auto r = sh(cmd);
    EXPECT_EQ(r.code, want) << cmd << "\n" << r.out;
    if (out != nullptr) *out = r.out;
    return run_dir;
  }

  static double last_val_loss(const std::string& run_dir) {
    std::ifstream in(run_dir + "/metrics.jsonl");
    double v = NAN;
    for (std::string line; std::getline(in, line);) {
      const auto row = nlohmann::json::parse(line);
      if (row.contains("val_loss")) v = row["val_loss"].get<double>();
    }
    return v;
  }

  // The 16-bit curve against fp32: window means of the training loss (one
  // batch is noisy; a window of 20 averages it) and the final validation loss.
  static void expect_tracks_fp32(const std::string& lp, double window_tol, double val_tol) {
    std::vector<double> a, b;
    ASSERT_TRUE(rows_to_compare(reference(), lp, "loss", 200, &a, &b));
    double worst = 0;
    for (size_t w = 0; w < 10; ++w) {
      double ma = 0, mb = 0;
      for (size_t i = 20 * w; i < 20 * (w + 1); ++i) ma += a[i] / 20, mb += b[i] / 20;
      const double rel = std::fabs(ma - mb) / ma;
      worst = std::max(worst, rel);
      EXPECT_LT(rel, window_tol) << "steps " << 20 * w + 1 << "-" << 20 * (w + 1) << ": fp32 " << ma << " vs " << mb;
    }
    const double va = last_val_loss(reference()), vb = last_val_loss(lp);
    std::printf("[ mixed   ] %s: worst 20-step window %.2f%% from fp32, val loss %.4f vs fp32 %.4f (%.2f%%)\n",
                lp.c_str(), 100 * worst, vb, va, 100 * std::fabs(va - vb) / va);
    EXPECT_LT(std::fabs(va - vb) / va, val_tol);
    EXPECT_LT(b.back(), b.front() - 1.0) << "it learned";
  }

  static const std::string& reference() {
    static const std::string r = run("fp32", 1, "--steps 200 --eval-every 100 --threads 2");
    return r;
  }

  static fs::path dir_;
};
fs::path MixedPrecision::dir_;

}  // namespace

// Tolerances: over these 200 steps the fp32 loss falls from 6.2 to ~4.9; with
// 8 (bf16) or 11 (fp16) mantissa bits in every activation, curves measured
// on an AVX2 machine stay within ~1% of fp32 per window. Another machine's
// GEMM order gives another trajectory: on an AVX-512 Xeon the fp16 run met a
// batch (step 23) whose gradient norm was 7.3 against fp32's 0.48 and then
// trailed fp32 by up to 3.3% per window and 3.4% in validation loss. That
// batch is a property of the weights the fp16 run had reached, not of fp16
// arithmetic at that step: fp32 compute resumed from the fp16 run's step-22
// checkpoint gives the same loss and gradient norm (and no step overflowed),
// though the two runs' losses agreed to 1e-4 up to step 22 (Adam's
// per-coordinate normalisation can turn rounding-level gradient differences
// into full-size updates). So 3% / 2% for bf16, 5% / 5% for fp16, while
// a real bug (a dropped term, a wrong scale: loss stuck near 6, or off by
// >10%) fails either.
TEST_F(MixedPrecision, Bf16TracksFp32For200Steps) {
  expect_tracks_fp32(run("bf16", 1, "--steps 200 --eval-every 100 --threads 2 --precision bf16"), 0.03, 0.02);
}
TEST_F(MixedPrecision, Fp16WithLossScalingTracksFp32For200Steps) {
  const std::string r = run("fp16", 1, "--steps 200 --eval-every 100 --threads 2 --precision fp16");
  expect_tracks_fp32(r, 0.05, 0.05);
  const auto scale = metric(r, "loss_scale");
  ASSERT_EQ(scale.size(), 200u);
  EXPECT_EQ(scale.front(), 65536.0);
}

// Rank 1 (DP rank 1, or TP rank 1) writes an Inf into its gradients at step
// index 3 (logged as step 4): that step is skipped everywhere and the scale
// halves; had any rank applied it, its AdamW would have turned the Inf into
// NaN parameters and every later loss would be NaN.
void expect_one_skip(const std::string& run_dir) {
  const auto skipped = metric(run_dir, "step_skipped"), scale = metric(run_dir, "loss_scale");
  const auto loss = losses(run_dir), skipped_total = metric(run_dir, "skipped_steps");
  ASSERT_EQ(scale.size(), 8u);
  for (size_t i = 0; i < scale.size(); ++i) {
    EXPECT_EQ(skipped[i] != 0, i == 3) << "step " << i + 1;
    EXPECT_EQ(scale[i], i <= 3 ? 1024.0 : 512.0) << "step " << i + 1;
    EXPECT_EQ(skipped_total[i], i < 3 ? 0.0 : 1.0) << "step " << i + 1;
    EXPECT_TRUE(std::isfinite(loss[i])) << "step " << i + 1;
  }
  EXPECT_TRUE(std::isnan(metric(run_dir, "grad_norm")[3])) << "the skipped step logs no gradient norm";
}

TEST_F(MixedPrecision, InjectedOverflowSkipsTheSameStepOnEveryDpRank) {
  ::setenv("CHORUS_INJECT_INF", "1:3", 1);
  const std::string r = run("inject_dp2", 2, "--steps 8 --batch 4 --precision fp16 --loss-scale-init 1024 --threads 1");
  ::unsetenv("CHORUS_INJECT_INF");
  expect_one_skip(r);
}

TEST_F(MixedPrecision, InjectedOverflowSkipsTheSameStepOnEveryTpRank) {
  ::setenv("CHORUS_INJECT_INF", "1:3", 1);
  std::string out;
  const std::string r = run("inject_tp2", 2, "--steps 8 --tp 2 --precision fp16 --loss-scale-init 1024 --threads 1 "
                                             "--zero 0", 0, &out);
  ::unsetenv("CHORUS_INJECT_INF");
  expect_one_skip(r);
  EXPECT_NE(out.find("step skipped on every rank, scale now 512"), std::string::npos) << out;
}

TEST_F(MixedPrecision, RepeatedOverflowStopsWithAClearError) {
  // A scale that can never shrink enough: Inf on every step from step 0 is
  // simulated by max-skipped-steps 1 and one injected Inf.
  ::setenv("CHORUS_INJECT_INF", "0:0", 1);
  std::string out;
  run("diverge", 1, "--steps 4 --precision fp16 --max-skipped-steps 1 --threads 1", 3, &out);  // kExitDiverged
  ::unsetenv("CHORUS_INJECT_INF");
  EXPECT_NE(out.find("training diverged: 1 steps in a row had non-finite gradients"), std::string::npos) << out;
}

TEST_F(MixedPrecision, AnFp32CheckpointResumesInBf16) {
  const std::string dir = run("switch", 1, "--steps 6 --stop-at 3 --threads 1");
  std::string out;
  run("switch", 1, "--steps 6 --resume auto --precision bf16 --threads 1", 0, &out);
  EXPECT_NE(out.find("was trained in fp32 and this run computes in bf16"), std::string::npos) << out;
  const auto l = losses(dir);
  ASSERT_EQ(l.size(), 6u);
  for (double x : l) EXPECT_TRUE(std::isfinite(x));
}

TEST_F(MixedPrecision, MemoryByKindAndBf16HalvesActivations) {
  std::string o32, o16;
  run("mem32", 1, "--steps 1 --threads 1", 0, &o32);
  const std::string r = run("mem16", 1, "--steps 1 --threads 1 --precision bf16", 0, &o16);
  auto mib = [](const std::string& out, const std::string& key) {
    const auto at = out.find(key);
    EXPECT_NE(at, std::string::npos) << key << " in\n" << out;
    return at == std::string::npos ? -1.0 : std::stod(out.substr(at + key.size()));
  };
  EXPECT_NEAR(mib(o16, "activations (bf16) "), mib(o32, "activations (fp32) ") / 2, 0.05 * mib(o32, "activations (fp32) "));
  EXPECT_NEAR(mib(o16, "bf16 compute copy "), mib(o16, "fp32 master weights ") / 2, 0.1);
  for (const char* key : {"mem_params_mib", "mem_grads_mib", "mem_optimizer_mib", "mem_activations_mib"})
    EXPECT_GT(metric(r, key).at(0), 0.0) << key;
}
