// chorus prepare-speech end to end: a manifest of good clips (16 kHz, 44.1 kHz
// stereo, 8 kHz, relative and absolute paths) plus a missing file, a malformed
// WAV, an unknown language, an over-long transcript and an empty transcript:
// rc 0, each bad clip reported once with its line, the summary, readable
// shards. Then the refusals: existing shards without --force, an all-bad
// manifest, a malformed manifest line.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "audio/wav.h"
#include "common/process.h"
#include "data/speech_shard.h"
#include "data/tokenizer.h"

namespace fs = std::filesystem;
using chorus::testing::Result;

namespace {

Result run(const std::string& args) { return chorus::testing::chorus(args); }

std::vector<float> tone(int rate, double hz, double seconds) {
  std::vector<float> x(static_cast<size_t>(rate * seconds));
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(0.3 * std::sin(2 * M_PI * hz * i / rate));
  return x;
}

// A 16-bit stereo WAV (write_wav_pcm16 writes mono only).
void write_stereo(const std::string& path, const std::vector<float>& left, int rate) {
  std::vector<uint8_t> b;
  auto put = [&](uint64_t v, int n) {
    for (int i = 0; i < n; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
  };
  const uint32_t data = static_cast<uint32_t>(left.size() * 4);
  b.insert(b.end(), {'R', 'I', 'F', 'F'});
  put(36 + data, 4);
  b.insert(b.end(), {'W', 'A', 'V', 'E', 'f', 'm', 't', ' '});
  put(16, 4);
  put(1, 2);
  put(2, 2);
  put(rate, 4);
  put(rate * 4, 4);
  put(4, 2);
  put(16, 2);
  b.insert(b.end(), {'d', 'a', 't', 'a'});
  put(data, 4);
  for (float x : left) {
    put(static_cast<uint16_t>(static_cast<int16_t>(std::lround(x * 32767))), 2);
    put(static_cast<uint16_t>(static_cast<int16_t>(std::lround(-x * 32767))), 2);  // mixes down to silence
  }
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

bool contains(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

class PrepareSpeech : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("chorus_speech_e2e_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "clips" / "sub");
    std::ofstream(dir_ / "text.txt")
        << "Hello world, this is a small corpus.\nGuten Tag, das ist ein kleiner Text.\n"
           "Another line of English text for the merges.\nNoch eine Zeile Deutsch.\n";
    tok_ = (dir_ / "tok.json").string();
    const Result r = run("train-tokenizer --quiet --input " + (dir_ / "text.txt").string() +
                         " --vocab 300 --languages en,de --out " + tok_);
    ASSERT_EQ(r.code, 0) << r.out;
    chorus::audio::write_wav_pcm16((dir_ / "clips" / "a.wav").string(), tone(16000, 440, 0.5), 16000);
    write_stereo((dir_ / "clips" / "b.wav").string(), tone(44100, 1000, 0.3), 44100);
    chorus::audio::write_wav_pcm16((dir_ / "clips" / "sub" / "c.wav").string(), tone(8000, 300, 0.25), 8000);
    std::ofstream(dir_ / "clips" / "bad.wav") << "this is not a wav file at all";
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  static std::string manifest(const std::string& name, const std::string& body) {
    const fs::path p = dir_ / name;
    std::ofstream(p) << body;
    return p.string();
  }
  static fs::path dir_;
  static std::string tok_;
};
fs::path PrepareSpeech::dir_;
std::string PrepareSpeech::tok_;

}  // namespace

TEST_F(PrepareSpeech, SkipsBadClipsAndWritesReadableShards) {
  const std::vector<std::string> lines = {
      "clips/a.wav\ten\tHello world",                             // 1 ok
      "clips/missing.wav\ten\tnot there",                         // 2 unreadable
      "clips/bad.wav\tde\tkaputt",                                // 3 malformed
      "",                                                         // 4 blank
      "clips/a.wav\txx\tunknown language",                        // 5 unknown language
      "clips/a.wav\ten\t" + std::string(200, 'x'),                // 6 too long
      (dir_ / "clips" / "b.wav").string() + "\tde\tGuten Tag\r",  // 7 ok, absolute, CRLF
      "clips/sub/c.wav\ten\tthis is a small corpus",              // 8 ok
      "clips/a.wav\tde\t   ",                                     // 9 empty transcript
  };
  std::string body;
  for (const std::string& l : lines) body += l + "\n";
  const std::string m = manifest("m.tsv", body);
  const std::string out = (dir_ / "shards").string();
  Result r = run("prepare-speech --manifest " + m + " --tokenizer " + tok_ + " --out " + out +
                 " --max-tokens 40 --clips-per-shard 2 --threads 2");
  ASSERT_EQ(r.code, 0) << r.out;
  for (const char* line :
       {"m.tsv:2: skipped clips/missing.wav: unreadable", "m.tsv:3: skipped clips/bad.wav: malformed WAV",
        "m.tsv:5: skipped clips/a.wav: unknown language", "m.tsv:6: skipped clips/a.wav: too long",
        "m.tsv:9: skipped clips/a.wav: empty transcript"})
    EXPECT_TRUE(contains(r.out, line)) << line << "\n" << r.out;
  EXPECT_TRUE(contains(r.out, "not a RIFF/WAVE file")) << r.out;
  EXPECT_TRUE(contains(r.out, "--max-tokens 40")) << r.out;
  EXPECT_TRUE(contains(r.out, "<|xx|>")) << r.out;
  EXPECT_TRUE(contains(r.out, "prepared 3 clips")) << r.out;
  EXPECT_TRUE(contains(r.out,
                       "in 2 shards; skipped 5: 1 unreadable, 1 malformed WAV, 1 empty transcript, "
                       "1 unknown language, 1 too long"))
      << r.out;

  const chorus::data::Tokenizer tok = chorus::data::Tokenizer::load(tok_);
  const chorus::data::SpeechDataset ds(out, "train", tok.hash());
  ASSERT_EQ(ds.size(), 3u);
  EXPECT_EQ(ds.shard_paths().size(), 2u);
  EXPECT_EQ(ds.languages(), (std::vector<std::string>{"de", "en"}));
  EXPECT_EQ(ds.text(0), "Hello world");
  EXPECT_EQ(ds.lang(1), "de");
  EXPECT_EQ(ds.text(1), "Guten Tag");  // the '\r' of the CRLF line is gone
  EXPECT_EQ(ds.n_samples(0), 8000u);
  EXPECT_EQ(ds.n_samples(1), 4800u);  // 0.3 s at 44.1 kHz -> 16 kHz
  EXPECT_EQ(ds.n_samples(2), 4000u);  // 0.25 s at 8 kHz -> 16 kHz
  EXPECT_EQ(ds.source(2), (dir_ / "clips" / "sub" / "c.wav").string());
  const auto ids = tok.encode("this is a small corpus");
  EXPECT_EQ(std::vector<uint32_t>(ds.tokens(2).begin(), ds.tokens(2).end()), ids);
  std::vector<float> pcm;
  ds.read_pcm(0, pcm);
  EXPECT_NEAR(pcm[1000], 0.3 * std::sin(2 * M_PI * 440 * 1000 / 16000.0), 1e-4);
  ds.read_pcm(1, pcm);  // stereo with opposite channels mixes down to silence
  for (size_t i = 0; i < pcm.size(); ++i) ASSERT_LE(std::abs(pcm[i]), 1.0f / 32768) << i;

  // Again without --force: refused, naming the flag; with --force: replaced.
  r = run("prepare-speech --quiet --manifest " + m + " --tokenizer " + tok_ + " --out " + out);
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(contains(r.out, "--force")) << r.out;
  r = run("prepare-speech --quiet --force --manifest " + m + " --tokenizer " + tok_ + " --out " + out +
          " --max-tokens 448");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "prepared 4 clips")) << r.out;  // the long transcript fits 448
  EXPECT_EQ(chorus::data::SpeechDataset(out, "train", tok.hash()).size(), 4u);
  EXPECT_FALSE(fs::exists(out + "/train_000001.h5"));  // one shard of 1000 now; the old second one is gone
}

TEST_F(PrepareSpeech, AllBadManifestFailsAndWritesNothing) {
  const std::string m = manifest("bad.tsv",
                                 "clips/missing.wav\ten\tnot there\n"
                                 "clips/bad.wav\ten\tkaputt\n"
                                 "clips/a.wav\tzz\tunknown\n");
  const std::string out = (dir_ / "none").string();
  const Result r = run("prepare-speech --quiet --manifest " + m + " --tokenizer " + tok_ + " --out " + out);
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "every clip of manifest")) << r.out;
  EXPECT_TRUE(contains(r.out, "3 clips: 1 unreadable, 1 malformed WAV, 1 unknown language")) << r.out;
  EXPECT_TRUE(contains(r.out, "no shards written")) << r.out;
  EXPECT_TRUE(!fs::exists(out) || fs::is_empty(out));
}

TEST_F(PrepareSpeech, RefusesMalformedManifestLinesAndMissingFlags) {
  const std::string m = manifest("broken.tsv", "clips/a.wav\ten\tok\nclips/a.wav en no tabs here\n");
  Result r = run("prepare-speech --quiet --manifest " + m + " --tokenizer " + tok_ + " --out " +
                 (dir_ / "x").string());
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(contains(r.out, "broken.tsv:2: malformed line")) << r.out;
  r = run("prepare-speech --tokenizer " + tok_ + " --out " + (dir_ / "x").string());
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(contains(r.out, "--manifest")) << r.out;
  r = run("prepare-speech --help");
  EXPECT_EQ(r.code, 0);
  for (const char* flag : {"usage: chorus prepare-speech", "--manifest", "--tokenizer", "--out", "--split",
                           "--max-tokens", "--clips-per-shard", "--threads", "--force", "--quiet", "448"})
    EXPECT_TRUE(contains(r.out, flag)) << flag << "\n" << r.out;
  EXPECT_TRUE(contains(run("--help").out, "prepare-speech"));
}
