// The divergence guard through the chorus executable on gpt-tiny
// (docs/RELIABILITY.md "Divergence"):
//   - one bad step (an Inf injected into a gradient) is skipped: the
//     parameters and Adam moments after it are those before it, training goes
//     on, and a run stopped after the bad step resumes exactly;
//   - an Inf gradient on DP rank 1 (DP 2, ZeRO-1) and a NaN loss on TP rank 1
//     only (TP 2) make every rank skip the same step;
//   - more than --max-bad-steps bad steps in a row stop the run with exit code
//     3; with --keep-last 2 the checkpoints left are good (`verify` passes on
//     `latest`, which holds the last good state);
//   - --max-bad-steps 0 stops at the first bad step (a gradient norm above
//     --bad-grad-norm); negative values are refused.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "common/process.h"

namespace fs = std::filesystem;
using chorus::testing::losses;
using chorus::testing::metric;
using chorus::testing::mpirun;
using chorus::testing::Result;
using chorus::testing::rows_to_compare;
using chorus::testing::sh;

namespace {

constexpr int kExitDiverged = 3;  // train::kExitDiverged

// Sets an environment variable for the lifetime of the object.
struct ScopedEnv {
  const char* name;
  ScopedEnv(const char* n, const std::string& v) : name(n) { ::setenv(n, v.c_str(), 1); }
  ~ScopedEnv() { ::unsetenv(name); }
};

class Divergence : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("chorus_div_e2e_" + std::to_string(getpid()));
    ASSERT_EQ(chorus::testing::make_corpus(dir_, {"en"}, 512), "");
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  static std::string path(const std::string& name) { return (dir_ / name).string(); }

  // Runs pretrain (6 steps unless args say otherwise) into run dir `name` and
  // expects exit code `want`.
  static Result pretrain(int np, const std::string& name, const std::string& args, int want = 0) {
    const std::string cmd = "timeout 120 " + (np > 1 ? mpirun(np) : std::string()) + CHORUS_BINARY +
                            " pretrain --config " + CHORUS_SOURCE_DIR + "/configs/gpt-tiny.ini --tokenizer " +
                            path("tok.json") + " --data " + path("shards") + " --run-dir " + path(name) +
                            (args.find("--steps") == std::string::npos ? " --steps 6" : "") +
                            " --warmup 2 --eval-every 0 --peak-gflops 100 --threads 1 --log-every 1000 " + args;
    Result r = sh(cmd);
    EXPECT_EQ(r.code, want) << cmd << "\n" << r.out;
    return r;
  }
  static Result tool(const std::string& args) { return sh(std::string(CHORUS_BINARY) + " checkpoint " + args); }
  // Parameters and Adam moments of a checkpoint, one digest under any layout.
  static std::string hash(const std::string& ckpt) {
    const Result r = tool("hash --with-optimizer " + ckpt);
    EXPECT_EQ(r.code, 0) << r.out;
    return r.out.substr(0, 64);
  }
  static std::string step_dir(const std::string& name, int step) {
    return path(name) + "/step-" + std::string(8 - std::to_string(step).size(), '0') + std::to_string(step);
  }

  // The run `name` had exactly one bad step, step 3 (index 2), skipped on
  // every rank: its state after step 3 is the state after step 2 of `ref`
  // (the same layout without the fault), and training went on.
  static void expect_step3_skipped(const std::string& name, const std::string& ref) {
    const auto bad = metric(path(name), "bad_step"), skipped = metric(path(name), "step_skipped");
    const auto loss = losses(path(name));
    ASSERT_EQ(bad.size(), 6u);
    for (size_t i = 0; i < bad.size(); ++i) {
      EXPECT_EQ(bad[i] != 0, i == 2) << "step " << i + 1;
      EXPECT_EQ(skipped[i] != 0, i == 2) << "step " << i + 1;
      if (i != 2) {
        EXPECT_TRUE(std::isfinite(loss[i])) << "step " << i + 1;
      }
    }
    EXPECT_EQ(metric(path(name), "bad_steps").back(), 1.0);
    EXPECT_EQ(hash(step_dir(name, 3)), hash(step_dir(ref, 2))) << "the bad step changed the state";
    EXPECT_NE(hash(step_dir(name, 4)), hash(step_dir(name, 3))) << "training stopped after the bad step";
  }

  static fs::path dir_;
};
fs::path Divergence::dir_;

}  // namespace

TEST_F(Divergence, OneBadStepIsSkippedAndTrainingGoesOn) {
  pretrain(1, "ref1", "--stop-at 2");
  ScopedEnv inject("CHORUS_INJECT_INF", "0:2");
  const Result r = pretrain(1, "skip1", "--save-every 1");
  EXPECT_NE(r.out.find("warning: step 3: bad step (non-finite gradient norm): loss "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("grad-norm inf; update skipped on every rank (1 in a row, --max-bad-steps 5)"),
            std::string::npos)
      << r.out;
  expect_step3_skipped("skip1", "ref1");
  EXPECT_TRUE(std::isnan(metric(path("skip1"), "grad_norm")[2]));
  EXPECT_TRUE(fs::exists(path("skip1") + "/model.h5"));
}

TEST_F(Divergence, ARunStoppedAfterABadStepResumesExactly) {
  ScopedEnv inject("CHORUS_INJECT_INF", "0:2");
  pretrain(1, "full", "");
  pretrain(1, "split", "--stop-at 3");
  pretrain(1, "split", "--resume auto");
  std::vector<double> a, b;
  ASSERT_TRUE(rows_to_compare(path("full"), path("split"), "loss", 6, &a, &b));
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i], b[i]) << "step " << i + 1;
  EXPECT_EQ(hash(step_dir("full", 6)), hash(step_dir("split", 6)));
}

TEST_F(Divergence, EveryDpRankSkipsTheStepOfAnInfOnOne) {
  pretrain(2, "ref_dp2", "--batch 4 --zero 1 --stop-at 2");
  ScopedEnv inject("CHORUS_INJECT_INF", "1:2");
  pretrain(2, "skip_dp2", "--batch 4 --zero 1 --save-every 1");
  expect_step3_skipped("skip_dp2", "ref_dp2");
}

TEST_F(Divergence, EveryTpRankSkipsTheStepOfANanLossOnOne) {
  // Only TP rank 1's loss is NaN (DP 1: no average carries it to rank 0); had
  // rank 0 applied its update, its shards would differ from the reference.
  pretrain(2, "ref_tp2", "--tp 2 --stop-at 2");
  ScopedEnv inject("CHORUS_INJECT_NAN_LOSS", "1:2");
  pretrain(2, "skip_tp2", "--tp 2 --save-every 1");
  expect_step3_skipped("skip_tp2", "ref_tp2");
}

TEST_F(Divergence, RepeatedBadStepsStopTheRunAndKeepTheGoodCheckpoints) {
  pretrain(1, "ref_good", "--steps 12 --stop-at 3");
  // From step 4 on every gradient is Inf: steps 4 and 5 are skipped (and
  // saved: their state is step 3's), step 6 is the third bad step in a row.
  ScopedEnv inject("CHORUS_INJECT_INF", "0:3:100");
  const Result r = pretrain(1, "diverged", "--steps 12 --save-every 1 --keep-last 2 --max-bad-steps 2", kExitDiverged);
  EXPECT_NE(r.out.find("error: training diverged: 3 bad steps in a row, more than --max-bad-steps 2 (the last, "
                       "step 6: non-finite gradient norm"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(metric(path("diverged"), "bad_step").size(), 6u);
  EXPECT_EQ(fs::read_symlink(path("diverged") + "/latest").string(), "step-00000005");
  EXPECT_TRUE(fs::exists(step_dir("diverged", 4)));
  EXPECT_FALSE(fs::exists(step_dir("diverged", 6))) << "nothing is saved after the stop";
  const Result v = tool("verify " + path("diverged"));
  EXPECT_EQ(v.code, 0) << v.out;
  EXPECT_EQ(hash(path("diverged")), hash(step_dir("ref_good", 3)));
  EXPECT_FALSE(fs::exists(path("diverged") + "/model.h5"));
}

TEST_F(Divergence, MaxBadStepsZeroStopsAtTheFirstGradNormAboveTheBound) {
  const Result r = pretrain(1, "bound", "--bad-grad-norm 1e-6 --max-bad-steps 0 --save-every 1", kExitDiverged);
  EXPECT_NE(r.out.find("step 1: bad step (gradient norm above --bad-grad-norm)"), std::string::npos) << r.out;
  const auto bad = metric(path("bound"), "bad_step");
  ASSERT_EQ(bad.size(), 1u);
  EXPECT_EQ(bad[0], 1.0);
  EXPECT_FALSE(fs::exists(path("bound") + "/latest"));
}

TEST_F(Divergence, NegativeBoundsAreRefused) {
  Result r = pretrain(1, "neg", "--max-bad-steps -1", 1);
  EXPECT_NE(r.out.find("max-bad-steps: must be >= 0"), std::string::npos) << r.out;
  r = pretrain(1, "neg", "--bad-grad-norm -1", 1);
  EXPECT_NE(r.out.find("bad-grad-norm: must be a finite number >= 0"), std::string::npos) << r.out;
  ScopedEnv inject("CHORUS_INJECT_INF", "0:x");
  r = pretrain(1, "neg", "", 1);
  EXPECT_NE(r.out.find("CHORUS_INJECT_INF: expected RANK:STEP or RANK:STEP:COUNT"), std::string::npos) << r.out;
}

TEST_F(Divergence, TheStopUnderMpirunExits3) {
  // Every rank throws after the same step and exits normally with code 3
  // (no MPI_Abort): mpirun passes the code on.
  const Result r = pretrain(2, "stop_dp2", "--batch 4 --bad-grad-norm 1e-6 --max-bad-steps 1", kExitDiverged);
  EXPECT_NE(r.out.find("training diverged: 2 bad steps in a row, more than --max-bad-steps 1"), std::string::npos)
      << r.out;
  EXPECT_EQ(metric(path("stop_dp2"), "bad_step").size(), 2u);
}
