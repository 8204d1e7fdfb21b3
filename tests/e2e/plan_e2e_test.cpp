// chorus plan against real runs, the memory check before a job allocates,
// and the step line's elapsed time / ETA and rank spread (metrics.jsonl).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/process.h"

namespace fs = std::filesystem;
using chorus::testing::mpirun;
using chorus::testing::sh;

namespace {

class Plan : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("chorus_plan_" + std::to_string(getpid()));
    ASSERT_EQ(chorus::testing::make_corpus(dir_, {"en", "fr"}, 512), "");
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  static std::string data_flags() {
    return " --tokenizer " + (dir_ / "tok.json").string() + " --data " + (dir_ / "shards").string();
  }
  static std::string config(const char* name) { return std::string(" --config ") + CHORUS_SOURCE_DIR + "/configs/" + name; }
  static std::string prefix(int np) { return np > 1 ? mpirun(np) : std::string(); }

  static std::vector<nlohmann::json> rows(const fs::path& run_dir) {
    std::ifstream in(run_dir / "metrics.jsonl");
    std::vector<nlohmann::json> out;
    for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
    return out;
  }

  static fs::path dir_;
};
fs::path Plan::dir_;

// The five sizes of a "memory per rank: ..." line (a run's setup line or plan's), in MiB.
std::vector<double> memory_line(const std::string& out) {
  std::smatch m;
  const std::regex re(
      "memory per rank: fp32 master weights ([0-9.]+) MiB, \\w+ compute copy ([0-9.]+) MiB, fp32 grads ([0-9.]+) "
      "MiB, Adam state ([0-9.]+) MiB[^,]*, activations \\(\\w+\\) ([0-9.]+) MiB");
  if (!std::regex_search(out, m, re)) return {};
  std::vector<double> v;
  for (size_t i = 1; i <= 5; ++i) v.push_back(std::stod(m[i].str()));
  return v;
}

}  // namespace

// plan's memory per rank and FLOPs per step equal what a 1-step pretrain of
// gpt-mini reports, at DP 1 x TP 1, TP 2, and DP 2 with ZeRO-1 in bf16.
TEST_F(Plan, MatchesWhatARealRunReports) {
  struct Layout {
    int np;
    std::string flags;
    int dp;
  };
  const Layout layouts[] = {{1, "", 1}, {2, " --tp 2", 1}, {2, " --zero 1 --precision bf16", 2}};
  const std::string job = config("gpt-mini.ini") + data_flags() +
                          " --vocab-size 0 --batch 2 --seq-len 64 --steps 1 --eval-every 0 --eval-batches 1 "
                          "--peak-gflops 100 --threads 1 --quiet";
  int compared = 0;
  for (const Layout& l : layouts) {
    SCOPED_TRACE(l.flags);
    const fs::path run_dir = dir_ / ("run" + std::to_string(compared));
    const auto run = sh(prefix(l.np) + CHORUS_BINARY + " pretrain" + job + l.flags + " --run-dir " + run_dir.string());
    ASSERT_EQ(run.code, 0) << run.out;
    const auto plan =
        sh(std::string(CHORUS_BINARY) + " plan" + job + l.flags + " --dp " + std::to_string(l.dp) + " --run-dir x");
    ASSERT_EQ(plan.code, 0) << plan.out;
    const std::vector<double> real = memory_line(run.out), planned = memory_line(plan.out);
    ASSERT_EQ(real.size(), 5u) << run.out;
    ASSERT_EQ(planned.size(), 5u) << plan.out;
    for (size_t i = 0; i < 5; ++i) {
      EXPECT_NEAR(planned[i], real[i], 0.051) << "size " << i << "\nrun:\n" << run.out << "\nplan:\n" << plan.out;
      ++compared;
    }
    // FLOPs per step: the run's MFU x peak x ranks x step time (tokens per step / tokens per second).
    const auto r = rows(run_dir);
    ASSERT_EQ(r.size(), 1u);
    const double tokens_per_step = 2.0 * 64 * l.dp;
    const double real_flops =
        r[0]["mfu"].get<double>() * 100e9 * l.np * tokens_per_step / r[0]["tokens_per_s"].get<double>();
    std::smatch m;
    ASSERT_TRUE(std::regex_search(plan.out, m, std::regex("flops: ([0-9.e+]+) per step"))) << plan.out;
    EXPECT_NEAR(std::stod(m[1].str()) / real_flops, 1.0, 1e-3) << plan.out;
    EXPECT_NE(plan.out.find("step time: about"), std::string::npos) << plan.out;
  }
  EXPECT_EQ(compared, 15);
}

// A layout that cannot fit is refused before anything is allocated or
// written, naming the sizes and the flags; plan says the same with --max-memory.
TEST_F(Plan, RefusesALayoutThatCannotFit) {
  const fs::path run_dir = dir_ / "too_big";
  const std::string job = config("gpt-mini.ini") + data_flags() + " --vocab-size 0 --steps 1 --quiet";
  auto r = sh(std::string(CHORUS_BINARY) + " pretrain" + job + " --max-memory 0.05 --run-dir " + run_dir.string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("pretrain does not fit in memory: each rank needs"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--max-memory 0.05 GiB per rank"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("reduce --batch, --seq-len"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(run_dir / "metrics.jsonl"));
  EXPECT_FALSE(fs::exists(run_dir / "config.json"));

  // Without --max-memory: MemAvailable shared by the ranks of this host (two
  // ranks, TP 2: the check is collective and every rank refuses alike).
  r = sh(mpirun(2) + CHORUS_BINARY + " pretrain" + job +
         " --n-layer 48 --n-embd 8192 --n-head 64 --tp 2 --run-dir " + run_dir.string());
  EXPECT_EQ(r.code, 1) << r.out;  // every rank ends normally (no abort), one report
  EXPECT_NE(r.out.find("pretrain does not fit in memory"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("does not fit", r.out.find("does not fit") + 1), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("MPI_ABORT"), std::string::npos) << r.out;  // (not "aborting": hwloc prints that in a chroot)
  EXPECT_NE(r.out.find("MemAvailable"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("shared by 2 ranks on this host"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("bad_alloc"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(run_dir / "metrics.jsonl"));

  r = sh(std::string(CHORUS_BINARY) + " plan" + job + " --peak-gflops 10 --max-memory 0.05");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("memory per rank:"), std::string::npos) << r.out;  // the report comes first
  EXPECT_NE(r.out.find("pretrain does not fit in memory"), std::string::npos) << r.out;

  // finetune-speech refuses before it reads its (here missing) data.
  const std::string speech = config("speech-mini.ini") + " --tokenizer " + (dir_ / "tok.json").string() +
                             " --init-decoder none --dec-context 128 --data " + (dir_ / "no_speech").string() +
                             " --steps 1 --quiet";
  r = sh(std::string(CHORUS_BINARY) + " finetune-speech" + speech + " --max-memory 0.01 --run-dir " +
         (dir_ / "speech_too_big").string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("finetune-speech does not fit in memory: each rank needs"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("reduce --batch, --max-frames"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir_ / "speech_too_big" / "config.json"));
  // plan takes the same flags (finetune-speech first) and prints the same report.
  r = sh(std::string(CHORUS_BINARY) + " plan finetune-speech" + speech + " --peak-gflops 10 --avg-seconds 3");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(memory_line(r.out).size(), 5u) << r.out;
  EXPECT_NE(r.out.find("300 frames on average, up to 1000"), std::string::npos) << r.out;

  r = sh(std::string(CHORUS_BINARY) + " plan" + job + " --tp 5");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("TP = 5 does not divide n_head = 6"), std::string::npos) << r.out;
}

// Every metrics.jsonl row has elapsed_s and eta_s (sane and monotone), and the
// rows of every --rank-stats-every'th step the spread of step times over ranks.
TEST_F(Plan, StepRowsCarryElapsedEtaAndRankSpread) {
  const fs::path run_dir = dir_ / "eta";
  const auto r = sh(mpirun(2) + CHORUS_BINARY + " pretrain" + config("gpt-tiny.ini") + data_flags() +
                    " --steps 8 --eval-every 4 --save-every 4 --rank-stats-every 3 --run-dir " + run_dir.string());
  ASSERT_EQ(r.code, 0) << r.out;
  const auto rs = rows(run_dir);
  ASSERT_EQ(rs.size(), 8u);
  double last_elapsed = 0.0;
  int with_ranks = 0;
  for (const auto& row : rs) {
    const int64_t step = row["step"].get<int64_t>();
    SCOPED_TRACE(step);
    const double elapsed = row["elapsed_s"].get<double>(), eta = row["eta_s"].get<double>();
    EXPECT_GT(elapsed, last_elapsed);
    EXPECT_TRUE(std::isfinite(eta) && eta >= 0.0);
    last_elapsed = elapsed;
    const bool stats = step % 3 == 0;
    EXPECT_EQ(row.contains("slowest_rank"), stats);
    if (stats) {
      ++with_ranks;
      const double lo = row["rank_step_ms_min"].get<double>(), med = row["rank_step_ms_median"].get<double>(),
                   hi = row["rank_step_ms_max"].get<double>();
      EXPECT_GT(lo, 0.0);
      EXPECT_LE(lo, med);
      EXPECT_LE(med, hi);
      const int slowest = row["slowest_rank"].get<int>();
      EXPECT_TRUE(slowest == 0 || slowest == 1);
    }
  }
  EXPECT_EQ(with_ranks, 2);
  // No ETA is wildly off: none exceeds a few times the whole run.
  for (const auto& row : rs) EXPECT_LT(row["eta_s"].get<double>(), 5 * last_elapsed + 1.0);
  // Before the first evaluation is timed an ETA counts the steps only; the
  // first row's is the 7 steps left at the first step's time.
  EXPECT_NEAR(rs[0]["eta_s"].get<double>(), 7 * rs[0]["elapsed_s"].get<double>(),
              0.5 * 7 * rs[0]["elapsed_s"].get<double>() + 0.01);
  // The step lines say the same.
  const std::regex line("step +[0-9]+/8 \\|.*\\| [0-9hms]+ elapsed, ETA [0-9hms]+");
  const std::regex spread("\\| fwd\\+bwd [0-9]+/[0-9]+/[0-9]+ ms \\(min/med/max of ranks\\), slowest rank [01]");
  int lines = 0, spreads = 0;
  for (std::sregex_iterator it(r.out.begin(), r.out.end(), line), end; it != end; ++it) ++lines;
  for (std::sregex_iterator it(r.out.begin(), r.out.end(), spread), end; it != end; ++it) ++spreads;
  EXPECT_EQ(lines, 8) << r.out;
  EXPECT_EQ(spreads, 2) << r.out;

  const auto bad = sh(std::string(CHORUS_BINARY) + " pretrain" + config("gpt-tiny.ini") + data_flags() +
                      " --rank-stats-every -1 --run-dir " + (dir_ / "neg").string());
  EXPECT_EQ(bad.code, 1) << bad.out;
  EXPECT_NE(bad.out.find("rank-stats-every: must be >= 0 (0 = off), got -1"), std::string::npos) << bad.out;
}
