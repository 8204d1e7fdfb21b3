// The collective watchdog through the chorus executable on gpt-tiny, 2 ranks
// (dist/watchdog.h, docs/RELIABILITY.md):
//   - rank 1 frozen by SIGSTOP after a few steps, --watchdog-timeout 5: the
//     job ends within 20 s with exit code 79, and rank 0's error line names
//     rank 1 (its pid) as stuck and the collective rank 0 waited in;
//   - a run with the watchdog on has the same losses as one with it off, and
//     leaves every rank's last heartbeat ("stopped");
//   - a negative time-out (flag or CHORUS_WATCHDOG_TIMEOUT) is refused by name.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <string>

#include "common/process.h"

namespace fs = std::filesystem;

namespace {

using chorus::testing::mpirun;
using chorus::testing::Result;
using chorus::testing::rows_to_compare;
using chorus::testing::sh;

class Watchdog : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("chorus_watchdog_e2e_" + std::to_string(getpid()));
    ASSERT_EQ(chorus::testing::make_corpus(dir_, {"en"}, 512), "");
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  static std::string path(const std::string& name) { return (dir_ / name).string(); }
  static std::string pretrain_cmd(int np, const std::string& run_dir, const std::string& args) {
    return (np > 1 ? mpirun(np) : std::string()) + CHORUS_BINARY + " pretrain --quiet --config " +
           CHORUS_SOURCE_DIR + "/configs/gpt-tiny.ini --tokenizer " + path("tok.json") + " --data " +
           path("shards") + " --run-dir " + run_dir +
           " --batch 4 --warmup 2 --eval-every 0 --peak-gflops 100 --threads 1 " + args;
  }

  static fs::path dir_;
};

fs::path Watchdog::dir_;

TEST_F(Watchdog, AFrozenRankEndsTheJobNamingItAndTheCollective) {
  const std::string run = path("frozen");
  const std::string beat = run + "/.heartbeat/rank-1";
  // Start a long run, wait for 3 steps, SIGSTOP rank 1 (its pid from its
  // heartbeat) and time how long the job takes to end. Whatever happens, the
  // frozen rank is continued and killed at the end.
  const std::string script =
      pretrain_cmd(2, run, "--steps 100000 --watchdog-timeout 5") +
      " & job=$!; for i in $(seq 1200); do kill -0 $job 2>/dev/null || break; [ -f " + run +
      "/metrics.jsonl ] && [ $(wc -l < " + run + "/metrics.jsonl) -ge 3 ] && break; sleep 0.05; done; "
      "pid=$(sed -n 's/.*\"pid\":\\([0-9]*\\).*/\\1/p' " + beat + "); echo \"frozen pid=$pid\"; "
      "kill -STOP $pid; t0=$(date +%s.%N); "
      "( sleep 60; kill -CONT $pid; kill -KILL $job ) >/dev/null 2>&1 & guard=$!; "
      "wait $job; rc=$?; t1=$(date +%s.%N); kill $guard 2>/dev/null; "
      "kill -CONT $pid 2>/dev/null; kill -KILL $pid 2>/dev/null; "
      "echo \"rc=$rc\"; awk \"BEGIN { print \\\"elapsed=\\\" $t1 - $t0 }\"";
  const Result r = sh(script);
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex("frozen pid=([0-9]+)"))) << r.out;
  const std::string pid = m[1];
  ASSERT_FALSE(pid.empty()) << r.out;
  EXPECT_NE(r.out.find("rc=79"), std::string::npos) << r.out;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex("elapsed=([0-9.]+)"))) << r.out;
  EXPECT_LT(std::stod(m[1]), 20.0) << r.out;
  // Rank 0's line: the collective it waited in, and rank 1 by pid as stuck.
  EXPECT_TRUE(std::regex_search(
      r.out, std::regex("chorus watchdog: rank 0 \\(host [^,]+, pid [0-9]+\\) of 2 has waited [0-9.]+ s in "
                        "(world|dp|tp) [a-z_]+\\([^)]*\\) #[0-9]+ of (step|the [a-z]+ of step) [0-9]+ "
                        "\\(--watchdog-timeout 5\\); suspected stuck: rank 1 \\(host [^,]+, pid " +
                        pid + "\\): no heartbeat for [0-9.]+ s \\(frozen or gone\\)")))
      << r.out;
  EXPECT_NE(r.out.find("ending the job (exit code 79)"), std::string::npos) << r.out;
  // Ended by mpirun (a zombie until its new parent reaps it), not left behind.
  const Result ps = sh("for i in $(seq 50); do s=$(ps -o stat= -p " + pid +
                      "); [ -z \"$s\" ] || [ \"${s#Z}\" != \"$s\" ] && break; sleep 0.1; done; echo -n \"$s\"");
  EXPECT_TRUE(ps.out.empty() || ps.out[0] == 'Z') << "the frozen rank is still alive: " << ps.out;
}

TEST_F(Watchdog, OnOrOffTheLossesAreTheSame) {
  const std::string on = path("on"), off = path("off");
  for (const auto& [run, flag] : {std::pair{on, "5"}, std::pair{off, "0"}}) {
    const std::string cmd = "timeout 120 " + pretrain_cmd(2, run, std::string("--steps 6 --watchdog-timeout ") + flag);
    const Result r = sh(cmd);
    ASSERT_EQ(r.code, 0) << cmd << "\n" << r.out;
    EXPECT_EQ(r.out.find("watchdog:"), std::string::npos) << r.out;
  }
  std::vector<double> a, b;
  ASSERT_TRUE(rows_to_compare(on, off, "loss", 6, &a, &b));
  EXPECT_EQ(a, b);
  for (int rank : {0, 1}) {
    std::ifstream in(on + "/.heartbeat/rank-" + std::to_string(rank));
    std::string line;
    std::getline(in, line);
    EXPECT_NE(line.find("\"state\":\"stopped\""), std::string::npos) << rank << ": " << line;
    EXPECT_NE(line.find("\"step\":6"), std::string::npos) << rank << ": " << line;
  }
  EXPECT_FALSE(fs::exists(off + "/.heartbeat"));
}

TEST_F(Watchdog, ANegativeTimeoutIsRefused) {
  Result r = sh(pretrain_cmd(1, path("neg"), "--steps 2 --watchdog-timeout -1"));
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("watchdog-timeout: must be 0 (off) or at least 1 second, got -1"), std::string::npos)
      << r.out;
  r = sh("CHORUS_WATCHDOG_TIMEOUT=soon " + pretrain_cmd(1, path("neg"), "--steps 2"));
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("CHORUS_WATCHDOG_TIMEOUT: expected seconds (0 = off), got 'soon'"), std::string::npos)
      << r.out;
}

}  // namespace
