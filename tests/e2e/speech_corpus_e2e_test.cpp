// The speech corpus generator (datasets/speech/make_corpus.py) and the
// pretraining-text filter (datasets/speech/pretrain_text.py) end to end: a
// tiny corpus in en + zh, its manifests, its WAVs, disjoint splits, a rerun
// that synthesises nothing, and the held-out check. Skips without espeak-ng,
// sox or python3.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "common/process.h"

namespace fs = std::filesystem;
using chorus::testing::Result;
using chorus::testing::sh;

namespace {

const std::string kScripts = std::string(CHORUS_SOURCE_DIR) + "/datasets/speech/";

struct Row {
  std::string path, lang, text;
};

// Every line of a manifest as path / lang / text; a malformed line fails the test.
std::vector<Row> read_manifest(const fs::path& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  std::vector<Row> rows;
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> f;
    std::stringstream ss(line);
    for (std::string x; std::getline(ss, x, '\t');) f.push_back(x);
    EXPECT_EQ(f.size(), 3u) << path << ": " << line;
    if (f.size() == 3) rows.push_back({f[0], f[1], f[2]});
  }
  return rows;
}

struct WavInfo {
  uint16_t format = 0, channels = 0, bits = 0;
  uint32_t rate = 0, data_bytes = 0;
};

uint32_t le(const unsigned char* p, int n) {
  uint32_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = v << 8 | p[i];
  return v;
}

// The fmt and data chunks of a RIFF/WAVE file (zeros where missing).
WavInfo read_wav(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<unsigned char> b((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  WavInfo w;
  if (b.size() < 12 || std::memcmp(b.data(), "RIFF", 4) != 0 || std::memcmp(b.data() + 8, "WAVE", 4) != 0)
    return w;
  for (size_t at = 12; at + 8 <= b.size();) {
    const uint32_t size = le(&b[at + 4], 4);
    if (std::memcmp(&b[at], "fmt ", 4) == 0 && at + 8 + 16 <= b.size()) {
      w.format = le(&b[at + 8], 2);
      w.channels = le(&b[at + 10], 2);
      w.rate = le(&b[at + 12], 4);
      w.bits = le(&b[at + 22], 2);
    } else if (std::memcmp(&b[at], "data", 4) == 0) {
      w.data_bytes = std::min<uint64_t>(size, b.size() - at - 8);
    }
    at += 8 + size + (size & 1);
  }
  return w;
}

class SpeechCorpus : public ::testing::Test {
 protected:
  void SetUp() override {
    if (sh("command -v espeak-ng && command -v sox && command -v python3").code != 0)
      GTEST_SKIP() << "espeak-ng, sox or python3 not installed (apt-get install -y espeak-ng sox python3)";
    dir_ = fs::temp_directory_path() / ("chorus_speech_e2e_" + std::to_string(getpid()));
    fs::remove_all(dir_);
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  fs::path dir_;
};

}  // namespace

TEST_F(SpeechCorpus, TinyCorpusIsWellFormedDisjointAndHeldOutOfPretraining) {
  const fs::path corpus = dir_ / "corpus";
  const std::string gen = "python3 " + kScripts + "make_corpus.py --out " + corpus.string() +
                          " --langs en,zh --train 3 --val 2 --test 2 --jobs 2";
  Result r = sh(gen);
  ASSERT_EQ(r.code, 0) << r.out;

  const std::map<std::string, size_t> want = {{"train", 3}, {"val", 2}, {"test", 2}};
  std::map<std::string, std::set<std::string>> texts;  // split -> transcripts
  for (const auto& [split, n] : want) {
    std::map<std::string, size_t> per_lang;
    for (const Row& row : read_manifest(corpus / (split + ".tsv"))) {
      ++per_lang[row.lang];
      EXPECT_TRUE(row.lang == "en" || row.lang == "zh") << row.lang;
      EXPECT_EQ(row.path.rfind("clips/" + split + "/" + row.lang + "/", 0), 0u) << row.path;
      EXPECT_EQ(fs::path(row.path).extension(), ".wav") << row.path;
      EXPECT_FALSE(row.text.empty());
      EXPECT_TRUE(texts[split].insert(row.text).second)
          << "duplicate transcript in " << split << ": " << row.text;
      const WavInfo w = read_wav(corpus / row.path);
      EXPECT_EQ(w.format, 1) << row.path << ": not PCM";
      EXPECT_EQ(w.channels, 1) << row.path;
      EXPECT_EQ(w.rate, 16000u) << row.path;
      EXPECT_EQ(w.bits, 16) << row.path;
      EXPECT_GT(w.data_bytes, 16000u) << row.path << ": under half a second of audio";
    }
    EXPECT_EQ(per_lang["en"], n) << split;
    EXPECT_EQ(per_lang["zh"], n) << split;
  }
  for (const char* a : {"train", "val", "test"}) {
    for (const char* b : {"train", "val", "test"}) {
      if (std::strcmp(a, b) >= 0) continue;
      for (const std::string& t : texts[a]) {
        EXPECT_EQ(texts[b].count(t), 0u) << t << " in " << a << " and " << b;
      }
    }
  }

  std::ifstream jin(corpus / "corpus.json");
  const auto meta = nlohmann::json::parse(jin);
  EXPECT_EQ(meta["clips"], 14);
  EXPECT_EQ(meta["splits"]["train"]["langs"]["zh"]["clips"], 3);
  EXPECT_GT(meta["seconds"].get<double>(), 7.0);
  EXPECT_EQ(meta["parameters"]["sample_rate"], 16000);

  // A rerun finds every clip and rewrites nothing.
  const fs::path first = corpus / read_manifest(corpus / "train.tsv").at(0).path;
  const auto stamp = fs::last_write_time(first);
  r = sh(gen);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("14 already there"), std::string::npos) << r.out;
  EXPECT_EQ(fs::last_write_time(first), stamp);

  // Pretraining text without the val / test sentences, and the check on it.
  const fs::path text = dir_ / "text";
  r = sh("python3 " + kScripts + "pretrain_text.py --langs en,zh,sw --out " + text.string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(fs::exists(text / "en.txt") && fs::exists(text / "zh.txt") && fs::exists(text / "sw.txt"))
      << r.out;
  const std::string held = (corpus / "val.tsv").string() + " " + (corpus / "test.tsv").string();
  r = sh("python3 " + kScripts + "pretrain_text.py --out " + text.string() + " --check " + held);
  EXPECT_EQ(r.code, 0) << r.out;

  // The check notices a test transcript that is there.
  fs::create_directories(dir_ / "leaky");
  std::ofstream(dir_ / "leaky" / "zh.txt") << "开头一句话。" << *texts["test"].rbegin() << "\n";
  std::ofstream(dir_ / "leaky" / "en.txt") << *texts["test"].begin() << "\n";
  r = sh("python3 " + kScripts + "pretrain_text.py --out " + (dir_ / "leaky").string() + " --check " + held);
  EXPECT_EQ(r.code, 1) << r.out;
}

// The transfer languages (not in the default corpus) come from
// datasets/text-extra and hold at least 50 test sentences each, disjoint from
// their train sentences.
TEST_F(SpeechCorpus, TransferLanguagesHoldFiftyTestSentences) {
  const fs::path corpus = dir_ / "transfer";
  Result r = sh("python3 " + kScripts + "make_corpus.py --out " + corpus.string() +
                " --langs pl,cs --train 2 --val 1 --test 1 --jobs 2 --quiet");
  ASSERT_EQ(r.code, 0) << r.out;
  std::ifstream jin(corpus / "corpus.json");
  const auto meta = nlohmann::json::parse(jin);
  for (const char* lang : {"pl", "cs"}) {
    EXPECT_GE(meta["pool_sizes"][lang]["test"].get<int>(), 50) << lang;
    EXPECT_GE(meta["pool_sizes"][lang]["train"].get<int>(), 100) << lang;
    EXPECT_EQ(meta["splits"]["test"]["langs"][lang]["clips"], 1) << lang;
  }
  Result def = sh("python3 " + kScripts + "make_corpus.py --help");
  EXPECT_NE(def.out.find("en,de,fr,es,it,pt,ru,zh"), std::string::npos) << "the default stays the eight languages";
}
