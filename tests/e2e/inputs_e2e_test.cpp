// Hostile input through the chorus executable (docs/RELIABILITY.md, "Refused
// inputs"): every command that writes refuses to overwrite what it reads, or
// an existing output without --force; a directory where a file is expected,
// a job that cannot fit in memory, an empty corpus and negative values where
// 0 means "off" are refused naming the flag; a config with a UTF-8 byte-order
// mark is read; error lines name no build-machine path and carry the
// "chorus <command>:" prefix once. Each refusal: exit code 1, the message
// asserted, nothing written.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "common/process.h"

namespace fs = std::filesystem;

namespace {

using chorus::testing::Result;

Result run(const std::string& args) { return chorus::testing::chorus(args); }

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

size_t count(const std::string& s, const std::string& needle) {
  size_t n = 0;
  for (size_t at = s.find(needle); at != std::string::npos; at = s.find(needle, at + 1)) ++n;
  return n;
}

class Inputs : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("chorus_inputs_e2e_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    ASSERT_EQ(chorus::testing::make_corpus(dir_, {"en", "de"}, 1024), "");
    // A finished 2-step run: <run>/model.h5 and the checkpoint <run>/step-00000002.
    const Result r = run("pretrain --quiet --config " + config() + " --tokenizer " + tok() + " --data " + shards() +
                         " --run-dir " + run_dir() + " --steps 2 --peak-gflops 100");
    ASSERT_EQ(r.code, 0) << r.out;
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static std::string config() { return std::string(CHORUS_SOURCE_DIR) + "/configs/gpt-tiny.ini"; }
  static std::string p(const std::string& rel) { return (dir_ / rel).string(); }
  static std::string tok() { return p("tok.json"); }
  static std::string shards() { return p("shards"); }
  static std::string run_dir() { return p("run"); }
  static std::string ckpt() { return p("run/step-00000002"); }
  static std::string pretrain_args() {
    return "pretrain --quiet --config " + config() + " --tokenizer " + tok() + " --data " + shards();
  }
  // Runs a command that must be refused: exit code 1 and every needle in the output.
  static Result refused(const std::string& args, std::initializer_list<std::string> needles) {
    Result r = run(args);
    EXPECT_EQ(r.code, 1) << args << "\n" << r.out;
    for (const auto& n : needles) EXPECT_NE(r.out.find(n), std::string::npos) << "'" << n << "' not in:\n" << r.out;
    EXPECT_EQ(r.out.find("terminate called"), std::string::npos) << r.out;
    return r;
  }
  static fs::path dir_;
};
fs::path Inputs::dir_;

}  // namespace

TEST_F(Inputs, ExportNeverWritesOverTheCheckpointItReadsNorAnExistingFileWithoutForce) {
  const std::string model_file = p("run/step-00000002/model-tp00.h5");
  const std::string before = slurp(model_file);
  ASSERT_FALSE(before.empty()) << "no model-tp00.h5 in the checkpoint";
  refused("checkpoint export " + ckpt() + " --out " + model_file + " --force",
          {"out: '" + model_file + "' lies inside the input", "would overwrite what this command reads"});
  refused("checkpoint export " + run_dir() + " --out " + ckpt() + " --force", {"out: '" + ckpt() + "' is the input"});
  refused("checkpoint export " + ckpt() + " --out " + run_dir() + " --format safetensors",
          {"contains the input"});
  EXPECT_EQ(slurp(model_file), before) << "the checkpoint was modified";
  // <run>/model.h5 exists (pretrain wrote it): only with --force.
  const std::string final_weights = p("run/model.h5");
  const std::string weights_before = slurp(final_weights);
  refused("checkpoint export " + ckpt() + " --out " + final_weights,
          {"out: '" + final_weights + "' already exists; give --force to replace it"});
  EXPECT_EQ(slurp(final_weights), weights_before);
  Result r = run("checkpoint export " + ckpt() + " --out " + final_weights + " --force");
  ASSERT_EQ(r.code, 0) << r.out;
  r = run("checkpoint export " + ckpt() + " --out " + p("hf") + " --format safetensors");
  ASSERT_EQ(r.code, 0) << r.out;
  refused("checkpoint export " + ckpt() + " --out " + p("hf") + " --format safetensors",
          {"/hf/model.safetensors' already exists"});
  r = run("checkpoint verify " + ckpt());
  EXPECT_EQ(r.code, 0) << r.out;
}

TEST_F(Inputs, TextToolsRefuseToOverwriteTheirInputsOrOutputsWithoutForce) {
  const std::string en = p("text/en.txt");
  const std::string text_before = slurp(en);
  refused("train-tokenizer --quiet --input " + en + " --vocab 300 --out " + en + " --force",
          {"out: '" + en + "' is the input '" + en + "'"});
  EXPECT_EQ(slurp(en), text_before);
  const std::string tok_before = slurp(tok());
  refused("train-tokenizer --quiet --input " + en + " --vocab 300 --out " + tok(),
          {"out: '" + tok() + "' already exists; give --force"});
  EXPECT_EQ(slurp(tok()), tok_before);
  refused("train-tokenizer --quiet --input " + en + " --vocab 300 --out " + p("text"),
          {"out: '" + p("text") + "' contains the input"});
  Result r = run("train-tokenizer --quiet --input " + en + " --vocab 300 --out " + p("tok300.json"));
  ASSERT_EQ(r.code, 0) << r.out;
  r = run("train-tokenizer --quiet --input " + en + " --vocab 300 --out " + p("tok300.json") + " --force");
  ASSERT_EQ(r.code, 0) << r.out;

  refused("prepare-text --quiet --tokenizer " + tok() + " --input " + p("text") + " --out " + shards(),
          {"output directory " + shards() + " already holds shards", "pass --force"});
  refused("prepare-text --quiet --tokenizer " + tok() + " --input " + p("text") + " --out " + p("text") + " --force",
          {"out: '" + p("text") + "' contains the input '" + p("text") + "/de.txt'"});
  refused("prepare-text --quiet --tokenizer " + tok() + " --input " + p("text") + " --out " + p("") + " --force",
          {"contains the input"});
  fs::create_directories(p("shards-copy"));
  fs::copy(shards(), p("shards-copy"), fs::copy_options::recursive);
  r = run("prepare-text --quiet --tokenizer " + tok() + " --input " + p("text") + " --out " + p("shards-copy") +
          " --force");
  EXPECT_EQ(r.code, 0) << r.out;

  fs::create_directories(p("m"));
  std::ofstream(p("m/train.tsv")) << "a.wav\ten\thello\n";
  refused("prepare-speech --quiet --manifest " + p("m/train.tsv") + " --tokenizer " + tok() + " --out " + p("m"),
          {"out: '" + p("m") + "' contains the input '" + p("m/train.tsv") + "'"});
}

TEST_F(Inputs, ADirectoryWhereAFileIsExpectedIsNamedWithItsFlag) {
  refused("pretrain --config " + p("text"), {"config: '" + p("text") + "' is a directory, expected a .ini file"});
  refused("pretrain --quiet --config " + config() + " --tokenizer " + p("text") + " --data " + shards() +
              " --run-dir " + p("r-dir"),
          {"tokenizer: '" + p("text") + "' is a directory, expected a tokenizer JSON file"});
  EXPECT_FALSE(fs::exists(p("r-dir")));
  refused("prepare-text --quiet --tokenizer " + p("text") + " --input " + p("text") + " --out " + p("s-dir"),
          {"tokenizer: '" + p("text") + "' is a directory"});
  refused("prepare-speech --quiet --manifest " + p("text") + " --tokenizer " + tok() + " --out " + p("sp"),
          {"manifest: '" + p("text") + "' is a directory, expected a manifest file"});
  refused("generate --weights " + p("run") + " --tokenizer " + tok(), {"weights: '" + p("run") + "' is a directory"});
  refused("generate --run-dir " + run_dir() + " --tokenizer " + p("text"), {"tokenizer: '" + p("text") + "' is a directory"});
  refused("transcribe --checkpoint " + ckpt() + " " + p("text"), {"wav: '" + p("text") + "' is a directory, expected a WAV file"});
  refused("evaluate --checkpoint " + ckpt() + " --manifest " + p("text"), {"manifest: '" + p("text") + "' is a directory"});
}

TEST_F(Inputs, AConfigWithAByteOrderMarkIsRead) {
  const std::string bom = p("bom.ini");
  std::ofstream(bom) << "\xEF\xBB\xBF" << slurp(config());
  const Result r = run("pretrain --quiet --config " + bom + " --tokenizer " + tok() + " --data " + shards() +
                       " --run-dir " + p("bom-run") + " --steps 1 --peak-gflops 100");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(fs::exists(p("bom-run/model.h5"))) << r.out;
}

TEST_F(Inputs, AJobThatCannotFitInMemoryIsRefusedNamingItsFlags) {
  // About 3.3e12 parameters: tens of terabytes.
  refused(pretrain_args() + " --n-layer 64 --n-embd 65536 --n-head 64 --run-dir " + p("huge"),
          {"pretrain does not fit in memory", "each rank needs", "GiB", "MemAvailable", "GPT L64 d65536 h64",
           "reduce --batch, --seq-len, --n-embd or --n-layer"});
  EXPECT_FALSE(fs::exists(p("huge"))) << "nothing may be written for a refused run";
  refused(pretrain_args() + " --batch 1000000000 --run-dir " + p("huge"),
          {"pretrain does not fit in memory", "batch 1000000000 x seq 64"});
  refused("finetune-speech --quiet --tokenizer " + tok() + " --data " + p("none") +
              " --init-decoder none --n-layer 64 --n-embd 65536 --n-head 64 --run-dir " + p("huge"),
          {"finetune-speech does not fit in memory", "speech encoder L64 d65536 h64"});
  EXPECT_FALSE(fs::exists(p("huge")));
}

TEST_F(Inputs, AnOutOfMemoryFailureNamesTheCommand) {
  // Under a 1.5 GB address-space limit the allocation itself fails (the
  // estimate looks at MemAvailable, not at ulimit): std::bad_alloc is reported.
  const Result r = chorus::testing::sh("ulimit -v 1500000; OMP_NUM_THREADS=1 " + std::string(CHORUS_BINARY) + " " +
                                       pretrain_args() + " --n-layer 4 --n-embd 2048 --n-head 16 --threads 1 --run-dir " +
                                       p("oom"));
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("chorus pretrain: error: out of memory"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("in 'chorus pretrain'"), std::string::npos) << r.out;
}

TEST_F(Inputs, AnEmptyCorpusTrainsNoTokenizer) {
  std::ofstream(p("empty.txt")).flush();
  std::ofstream(p("blank.txt")) << "  \n\t\n\r\n   ";
  for (const char* f : {"empty.txt", "blank.txt"}) {
    refused("train-tokenizer --quiet --input " + p(f) + " --vocab 300 --out " + p("t-empty.json"),
            {"hold no text", p(f)});
    EXPECT_FALSE(fs::exists(p("t-empty.json")));
  }
  // Too little text for the vocabulary asked for: trained, with a warning.
  std::ofstream(p("tiny.txt")) << "abab abab\n";
  const Result r = run("train-tokenizer --quiet --input " + p("tiny.txt") + " --vocab 8000 --out " + p("t-tiny.json"));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("allows only"), std::string::npos) << r.out;
}

TEST_F(Inputs, NegativeValuesWhereZeroMeansOffAreRefused) {
  const std::string rd = " --run-dir " + p("neg");
  refused(pretrain_args() + rd + " --grad-clip -1", {"grad-clip: must be >= 0 (0 = no clipping), got -1"});
  refused(pretrain_args() + rd + " --peak-gflops -5", {"peak-gflops: must be >= 0"});
  refused(pretrain_args() + rd + " --weight-decay -0.1", {"weight-decay: must be >= 0"});
  refused(pretrain_args() + rd + " --vocab-size -3", {"vocab-size: must be >= 0"});
  refused(pretrain_args() + rd + " --keep-last -1", {"keep-last: must be >= 0"});
  refused(pretrain_args() + rd + " --batch -2", {"batch / seq-len: must be >= 1"});
  EXPECT_FALSE(fs::exists(p("neg")));
  refused("generate --run-dir " + run_dir() + " --top-k -1", {"top-k: must be >= 0 (0 = all tokens), got -1"});
  refused("generate --run-dir " + run_dir() + " --threads -1", {"threads: must be >= 0"});
  refused("checkpoint reshard " + ckpt() + " --out " + p("rs") + " --tp -2", {"tp / dp: must be >= 1"});
  refused("checkpoint reshard " + ckpt() + " --out " + p("rs") + " --zero -3", {"zero: must be 0 or 1, or -1"});
  refused("transcribe --checkpoint " + ckpt() + " --ctc-weight -1 x.wav", {"ctc-weight: must be in [0, 1]"});
}

TEST_F(Inputs, ErrorLinesCarryOnePrefixAndNoBuildPaths) {
  Result r = refused(pretrain_args() + " --no-such-flag", {"chorus pretrain: error: unrecognised option '--no-such-flag'"});
  EXPECT_EQ(count(r.out, "chorus pretrain:"), 1u) << r.out;
  r = refused(pretrain_args() + " --grad-clip -1 --run-dir " + p("neg"), {"grad-clip"});
  EXPECT_EQ(count(r.out, "chorus pretrain:"), 1u) << r.out;
  EXPECT_EQ(r.out.find(".cpp"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find(CHORUS_SOURCE_DIR), std::string::npos) << r.out;
  // CHORUS_DEBUG=1: the location, relative to the source tree.
  r = chorus::testing::sh("CHORUS_DEBUG=1 " + std::string(CHORUS_BINARY) + " " + pretrain_args() +
                          " --grad-clip -1 --run-dir " + p("neg"));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("[src/apps/train_flags.cpp:"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find(CHORUS_SOURCE_DIR), std::string::npos) << r.out;
}

TEST_F(Inputs, ABitFlippedModelFileIsRefusedByGenerate) {
  // Copy the final weights and flip one byte near the end of the file, inside
  // the tensor data (the last dataset written is stored last).
  const std::string w = p("flipped.h5");
  fs::copy_file(p("run/model.h5"), w, fs::copy_options::overwrite_existing);
  Result ok = run("generate --weights " + w + " --tokenizer " + tok() + " --max-new-tokens 2");
  ASSERT_EQ(ok.code, 0) << ok.out;
  std::fstream f(w, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(0, std::ios::end);
  const std::streamoff at = f.tellg() / 2;
  f.seekg(at);
  char c = 0;
  f.read(&c, 1);
  c ^= 0x01;
  f.seekp(at);
  f.write(&c, 1);
  f.close();
  refused("generate --weights " + w + " --tokenizer " + tok() + " --max-new-tokens 2",
          {"weights '" + w + "': tensor 'params/", "is damaged: its data has SHA-256"});
}
