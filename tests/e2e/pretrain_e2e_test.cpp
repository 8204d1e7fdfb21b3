// Whole jobs through the chorus executable on shipped text: tokenizer ->
// shards -> 60 steps of gpt-tiny -> generate; plus CLI refusals.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "common/process.h"

namespace fs = std::filesystem;

namespace {

using chorus::testing::Result;

Result run(const std::string& args) { return chorus::testing::chorus(args); }

class E2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("chorus_e2e_" + std::to_string(getpid()));
    // A slice of the shipped corpus: four languages, two scripts each way.
    tok_ = (dir_ / "tok.json").string();
    shards_ = (dir_ / "shards").string();
    ASSERT_EQ(chorus::testing::make_corpus(dir_, {"en", "de", "ru", "zh"}, 1024), "");
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static std::string config() { return std::string(CHORUS_SOURCE_DIR) + "/configs/gpt-tiny.ini"; }
  static fs::path dir_;
  static std::string tok_, shards_;
};
fs::path E2E::dir_;
std::string E2E::tok_, E2E::shards_;

}  // namespace

TEST_F(E2E, TinyGptLearnsAndLogsMetrics) {
  const std::string run_dir = (dir_ / "run").string();
  auto r = run("pretrain --config " + config() + " --tokenizer " + tok_ + " --data " + shards_ + " --run-dir " +
               run_dir + " --steps 60 --peak-gflops 100 --log-every 10 --sample-tokens 30");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto at = r.out.find("sample:\n");
  ASSERT_NE(at, std::string::npos) << r.out;
  EXPECT_GT(r.out.size() - at, 20u) << "the sample is (nearly) empty:\n" << r.out;
  EXPECT_NE(r.out.find("tok/s"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("MFU"), std::string::npos) << r.out;

  std::ifstream in(run_dir + "/metrics.jsonl");
  ASSERT_TRUE(in.good());
  std::vector<nlohmann::json> rows;
  for (std::string line; std::getline(in, line);) rows.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(rows.size(), 60u);
  int n_val = 0;
  for (const auto& row : rows) {
    for (const char* k : {"step", "loss", "lr", "grad_norm", "tokens_per_s", "mfu"}) ASSERT_TRUE(row.contains(k)) << k;
    if (row.contains("val_loss")) {
      ++n_val;
      ASSERT_TRUE(row.contains("val_bpb"));
      EXPECT_GT(row["val_bpb"].get<double>(), 0.0);
    }
  }
  EXPECT_EQ(n_val, 3);  // eval-every 20 in gpt-tiny.ini: steps 20, 40, 60
  const double first = rows.front()["loss"].get<double>();
  double last5 = 0;
  for (size_t i = rows.size() - 5; i < rows.size(); ++i) last5 += rows[i]["loss"].get<double>() / 5;
  EXPECT_NEAR(first, std::log(1024.0), 0.5);  // uniform prediction at init
  // 60 steps of 512 tokens: from uniform (ln 1024 = 6.93) to well below it
  // (more than one nat, i.e. perplexity down by more than e).
  EXPECT_LT(last5, first - 1.0) << "loss fell only from " << first << " to " << last5;
  EXPECT_LT(rows.back()["val_loss"].get<double>(), first - 0.9);

  // generate from the saved weights
  auto g = run("generate --run-dir " + run_dir + " --prompt 'The ' --max-new-tokens 20 --seed 3");
  ASSERT_EQ(g.code, 0) << g.out;
  EXPECT_EQ(g.out.rfind("The ", 0), 0u) << g.out;
  EXPECT_GT(g.out.size(), 8u);
}

TEST_F(E2E, SameSeedSameLosses) {
  auto a = run("pretrain --quiet --config " + config() + " --tokenizer " + tok_ + " --data " + shards_ +
               " --run-dir " + (dir_ / "a").string() + " --steps 5 --peak-gflops 100");
  auto b = run("pretrain --quiet --config " + config() + " --tokenizer " + tok_ + " --data " + shards_ +
               " --run-dir " + (dir_ / "b").string() + " --steps 5 --peak-gflops 100");
  ASSERT_EQ(a.code, 0) << a.out;
  ASSERT_EQ(b.code, 0) << b.out;
  std::vector<double> la, lb;
  ASSERT_TRUE(
      chorus::testing::rows_to_compare((dir_ / "a").string(), (dir_ / "b").string(), "loss", 5, &la, &lb));
  EXPECT_EQ(la, lb);
}

TEST_F(E2E, RefusesUnknownKeysBadValuesAndMismatchedData) {
  const fs::path bad = dir_ / "bad.ini";
  std::ofstream(bad) << "[model]\nn-layer = 2\nn-layers = 3\n";
  auto r = run("pretrain --config " + bad.string() + " --tokenizer " + tok_ + " --data " + shards_);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("bad.ini"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("n-layers"), std::string::npos) << r.out;

  std::ofstream(bad) << "[train]\nn-layer = 2\n";  // right key, wrong section
  r = run("pretrain --config " + bad.string());
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("train.n-layer"), std::string::npos) << r.out;

  r = run("pretrain --config " + config() + " --batch abc");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("batch"), std::string::npos) << r.out;

  r = run("pretrain --config " + config() + " --n-head 5 --tokenizer " + tok_ + " --data " + shards_ +
          " --run-dir " + (dir_ / "c").string());
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(r.out.find("n_head") != std::string::npos || r.out.find("n-head") != std::string::npos) << r.out;

  // a tokenizer whose hash differs from the shards'
  const std::string tok2 = (dir_ / "tok2.json").string();
  ASSERT_EQ(run("train-tokenizer --quiet --input " + (dir_ / "text" / "en.txt").string() + " --vocab 1024 --out " + tok2).code, 0);
  r = run("pretrain --config " + config() + " --tokenizer " + tok2 + " --data " + shards_ + " --run-dir " +
          (dir_ / "d").string() + " --steps 2");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("hash"), std::string::npos) << r.out;

  // a flag overrides the config file: --steps 2 beats steps = 60
  r = run("pretrain --quiet --config " + config() + " --tokenizer " + tok_ + " --data " + shards_ + " --run-dir " +
          (dir_ / "e").string() + " --steps 2 --peak-gflops 100");
  ASSERT_EQ(r.code, 0) << r.out;
  std::ifstream in(dir_ / "e" / "metrics.jsonl");
  int lines = 0;
  for (std::string l; std::getline(in, l);) ++lines;
  EXPECT_EQ(lines, 2);
}

TEST_F(E2E, HelpDocumentsEveryCommand) {
  for (const char* cmd : {"train-tokenizer", "prepare-text", "pretrain", "generate"}) {
    auto r = run(std::string(cmd) + " --help");
    EXPECT_EQ(r.code, 0) << cmd;
    EXPECT_NE(r.out.find("usage: chorus"), std::string::npos) << r.out;
  }
  auto r = run("pretrain --help");
  for (const char* flag : {"--config", "--steps", "--batch", "--seed", "--run-dir", "--grad-accum", "--lr"})
    EXPECT_NE(r.out.find(flag), std::string::npos) << flag;
}
