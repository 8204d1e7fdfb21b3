// `chorus checkpoint export --format safetensors` with the tokenizer
// (docs/RELIABILITY.md): the run's tokenizer is found through its
// config.json (or given with --tokenizer) and written as tokenizer.json +
// tokenizer_config.json, whose ids an independent Hugging Face reader
// (tests/data/hf_tokenizer_check.py) finds equal to Chorus's; another run's
// tokenizer, or a --tokenizer inside --out, is refused with nothing written.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/process.h"
#include "data/tokenizer.h"

namespace fs = std::filesystem;
using chorus::testing::Result;
using nlohmann::json;

namespace {

Result run(const std::string& args) { return chorus::testing::chorus(args); }

json read_json(const fs::path& p) {
  std::ifstream in(p);
  return json::parse(in);
}

class HfExport : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("chorus_hf_export_e2e_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    ASSERT_EQ(chorus::testing::make_corpus(dir_, {"en", "ja", "ar"}, 1024), "");
    const Result r = run("pretrain --quiet --config " + std::string(CHORUS_SOURCE_DIR) +
                         "/configs/gpt-tiny.ini" + " --tokenizer " + p("tok.json") + " --data " +
                         p("shards") + " --run-dir " + p("run") + " --steps 2 --peak-gflops 100");
    ASSERT_EQ(r.code, 0) << r.out;
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static std::string p(const std::string& rel) { return (dir_ / rel).string(); }
  static std::string ckpt() { return p("run/step-00000002"); }
  static fs::path dir_;
};
fs::path HfExport::dir_;

TEST_F(HfExport, WritesTheRunsTokenizerWhoseIdsAHuggingFaceReaderReproduces) {
  const Result r = run("checkpoint export " + ckpt() + " --format safetensors --out " + p("hf"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("tokenizer.json, tokenizer_config.json of " + p("tok.json")), std::string::npos)
      << r.out;
  const json cfg = read_json(p("hf/tokenizer_config.json"));
  EXPECT_EQ(cfg.at("model_max_length"), 64);
  EXPECT_EQ(read_json(p("hf/tokenizer.json")).at("model").at("vocab").size(), 1024u);

  const auto tok = chorus::data::Tokenizer::load(p("tok.json"));
  const std::string a = "Hello world, 12345 times!\n  \u65e5\u672c\u8a9e\u306e\u6587\u3002",
                    b = " \u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645\n";
  std::ofstream(p("sample.txt"), std::ios::binary) << a << "<|endoftext|><|ja|>" << b;
  std::vector<uint32_t> ids = tok.encode(a);
  ids.push_back(tok.eot());
  ids.push_back(tok.special("<|ja|>"));
  for (uint32_t id : tok.encode(b)) ids.push_back(id);

  if (chorus::testing::sh("/usr/bin/python3 -c 'import json, re'").code != 0)
    GTEST_SKIP() << "/usr/bin/python3 is not available";
  const Result c = chorus::testing::sh("/usr/bin/python3 " + std::string(CHORUS_SOURCE_DIR) +
                                       "/tests/data/hf_tokenizer_check.py " + p("hf/tokenizer.json") + " " +
                                       p("sample.txt"));
  ASSERT_EQ(c.code, 0) << c.out;
  const json j = json::parse(c.out);
  EXPECT_EQ(j.at("ids").get<std::vector<uint32_t>>(), ids);
  EXPECT_TRUE(j.at("roundtrip").get<bool>());
}

TEST_F(HfExport, AnotherRunsTokenizerOrOneInsideOutIsRefusedWithNothingWritten) {
  Result r =
      run("train-tokenizer --quiet --input " + p("text/en.txt") + " --vocab 600 --out " + p("other.json"));
  ASSERT_EQ(r.code, 0) << r.out;
  const auto other = chorus::data::Tokenizer::load(p("other.json"));
  const auto ours = chorus::data::Tokenizer::load(p("tok.json"));
  r = run("checkpoint export " + ckpt() + " --format safetensors --out " + p("hf2") + " --tokenizer " +
          p("other.json"));
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(
      r.out.find("tokenizer: '" + p("other.json") + "' has hash " + other.hash() + " but the checkpoint"),
      std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("was trained with tokenizer " + ours.hash()), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(p("hf2/model.safetensors")));

  fs::create_directories(p("hf3"));
  fs::copy_file(p("tok.json"), p("hf3/tokenizer.json"));
  r = run("checkpoint export " + ckpt() + " --format safetensors --force --out " + p("hf3") +
          " --tokenizer " + p("hf3/tokenizer.json"));
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("out: '" + p("hf3/tokenizer.json") + "' is the input"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(p("hf3/model.safetensors")));
}

}  // namespace
