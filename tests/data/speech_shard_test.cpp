// Speech shards: write -> read round trip of every field over several shards;
// the reader's refusals (tokenizer hash, damaged offsets, wrong format, wrong
// version, no shards); the writer's all-or-nothing commit and --force rules;
// the manifest parser.
#include "data/speech_shard.h"

#include <gtest/gtest.h>
#include <hdf5.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "common/fixtures.h"
#include "core/error.h"
#include "core/hdf5.h"
#include "data/shard.h"

namespace fs = std::filesystem;
using chorus::Error;
using namespace chorus::data;

namespace {

using chorus::testing::error_of;
using TempDir = chorus::testing::TempDir;

const std::string kHash = "0123abcd";

SpeechClip make_clip(int i) {
  SpeechClip c;
  c.lang = i % 3 == 0 ? "de" : (i % 3 == 1 ? "en" : "fr");
  c.text = "clip number " + std::to_string(i) + (i % 2 ? " — grüß" : "");
  for (int k = 0; k <= i % 5; ++k) c.tokens.push_back(static_cast<uint32_t>(1000 * i + k));
  c.pcm.resize(800 + 37 * i);
  for (size_t k = 0; k < c.pcm.size(); ++k) c.pcm[k] = static_cast<float>(0.9 * std::sin(0.01 * k * (i + 1)));
  c.pcm[0] = i % 2 ? 1.5f : -1.0f;  // clipped / the extreme value
  c.source = "/data/clips/" + std::to_string(i) + ".wav";
  return c;
}

float stored(float x) {
  const double v = std::lround(static_cast<double>(std::clamp(x, -1.0f, 1.0f)) * 32768.0);
  return static_cast<float>(std::clamp(v, -32768.0, 32767.0) / 32768.0);
}

std::vector<SpeechClip> write_clips(const std::string& dir, int n, size_t per_shard,
                                    const std::string& split = "train") {
  std::vector<SpeechClip> clips;
  SpeechShardWriter w(dir, split, kHash, per_shard, false);
  for (int i = 0; i < n; ++i) {
    clips.push_back(make_clip(i));
    w.add(clips.back());
  }
  w.commit();
  return clips;
}

// Overwrites elements of a dataset in place (raw HDF5), to damage a shard.
void poke_u64(const std::string& path, const char* name, const std::vector<uint64_t>& values) {
  chorus::h5::quiet_errors();
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(f, 0);
  hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
  ASSERT_GE(d, 0);
  ASSERT_GE(H5Dwrite(d, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()), 0);
  H5Dclose(d);
  H5Fclose(f);
}

std::vector<uint64_t> read_u64(const std::string& path, const char* name) {
  chorus::h5::File f = chorus::h5::File::open_read(path);
  return chorus::h5::read_1d<uint64_t>(f, name);
}

}  // namespace

TEST(SpeechShard, RoundTripOfEveryFieldAcrossShards) {
  TempDir dir;
  // Shards of 2, 2, 2, 1 clips; languages de en | fr de | en fr | de, so each
  // shard's own language indices differ from the dataset's.
  const auto clips = write_clips(dir.str(), 7, 2);
  EXPECT_TRUE(fs::exists(dir.file("train_000000.h5")));
  EXPECT_TRUE(fs::exists(dir.file("train_000003.h5")));
  EXPECT_FALSE(fs::exists(dir.file("train_000004.h5")));
  for (const auto& e : fs::directory_iterator(dir.str())) EXPECT_NE(e.path().extension(), ".tmp");

  SpeechDataset ds(dir.str(), "train", kHash);
  ASSERT_EQ(ds.size(), 7u);
  EXPECT_EQ(ds.shard_paths().size(), 4u);
  EXPECT_EQ(ds.languages(), (std::vector<std::string>{"de", "en", "fr"}));
  EXPECT_EQ(ds.tokenizer_hash(), kHash);
  double total = 0;
  std::vector<float> pcm;
  for (size_t i = 0; i < clips.size(); ++i) {
    SCOPED_TRACE(i);
    const SpeechClip& c = clips[i];
    EXPECT_EQ(ds.lang(i), c.lang);
    EXPECT_EQ(ds.languages()[ds.lang_id(i)], c.lang);
    EXPECT_EQ(ds.text(i), c.text);
    EXPECT_EQ(std::vector<uint32_t>(ds.tokens(i).begin(), ds.tokens(i).end()), c.tokens);
    EXPECT_EQ(ds.source(i), c.source);
    ASSERT_EQ(ds.n_samples(i), c.pcm.size());
    EXPECT_DOUBLE_EQ(ds.seconds(i), c.pcm.size() / 16000.0);
    ds.read_pcm(i, pcm);
    ASSERT_EQ(pcm.size(), c.pcm.size());
    for (size_t k = 0; k < pcm.size(); ++k) ASSERT_EQ(pcm[k], stored(c.pcm[k])) << k;
    EXPECT_LE(std::abs(pcm[1] - c.pcm[1]), 0.5 / 32768);
    total += c.pcm.size() / 16000.0;
  }
  EXPECT_NEAR(ds.total_seconds(), total, 1e-9);
  EXPECT_CONTAINS(error_of([&] { ds.text(7); }), "out of range");

  // Attributes, as a user of h5py would see them.
  chorus::h5::File f = chorus::h5::File::open_read(dir.file("train_000001.h5"));
  EXPECT_EQ(chorus::h5::read_attr_string(f, "format"), "chorus-speech");
  EXPECT_EQ(chorus::h5::read_attr_int(f, "version"), 1);
  EXPECT_EQ(chorus::h5::read_attr_int(f, "sample_rate"), 16000);
  EXPECT_EQ(chorus::h5::read_attr_uint(f, "n_clips"), 2u);
  EXPECT_EQ(chorus::h5::read_attr_uint(f, "n_samples"), clips[2].pcm.size() + clips[3].pcm.size());
  EXPECT_EQ(chorus::h5::read_attr_string(f, "languages"), "de,fr");
  EXPECT_EQ(chorus::h5::read_1d<uint16_t>(f, "lang"), (std::vector<uint16_t>{1, 0}));  // fr, de
  EXPECT_EQ(chorus::h5::read_attr_string(f, "tokenizer_hash"), kHash);
  EXPECT_EQ(chorus::h5::read_1d<float>(f, "duration")[1], static_cast<float>(clips[3].pcm.size() / 16000.0));
  EXPECT_EQ(chorus::h5::read_attr_string(f, "split"), "train");
}

TEST(SpeechShard, ConcurrentReadsAgree) {
  TempDir dir;
  write_clips(dir.str(), 6, 10);
  const SpeechDataset ds(dir.str(), "train", "");
  std::vector<std::vector<float>> serial(ds.size());
  for (size_t i = 0; i < ds.size(); ++i) ds.read_pcm(i, serial[i]);
  std::vector<std::thread> threads;
  std::vector<int> bad(4, 0);
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      std::vector<float> buf;
      for (int rep = 0; rep < 50; ++rep)
        for (size_t i = 0; i < ds.size(); ++i) {
          ds.read_pcm((i + t) % ds.size(), buf);
          bad[t] += buf != serial[(i + t) % ds.size()];
        }
    });
  for (auto& th : threads) th.join();
  for (int b : bad) EXPECT_EQ(b, 0);
}

TEST(SpeechShard, RefusesAnotherTokenizersShards) {
  TempDir dir;
  write_clips(dir.str(), 2, 10);
  const std::string msg = error_of([&] { SpeechDataset(dir.str(), "train", "feedbeef"); });
  EXPECT_CONTAINS(msg, dir.file("train_000000.h5"));
  EXPECT_CONTAINS(msg, "tokenizer_hash");
  EXPECT_CONTAINS(msg, "feedbeef");
  EXPECT_CONTAINS(msg, kHash);
  // With "" the shards must agree among themselves.
  SpeechShardInfo other =
      write_speech_shard(dir.file("train_000001.h5"), "train", {make_clip(5)}, "otherhash");
  EXPECT_EQ(other.n_clips, 1u);
  EXPECT_CONTAINS(error_of([&] { SpeechDataset(dir.str(), "train", ""); }),
                  "train_000001.h5: attribute 'tokenizer_hash'");
}

TEST(SpeechShard, RefusesDamagedOffsets) {
  TempDir dir;
  write_clips(dir.str(), 4, 10);
  const std::string path = dir.file("train_000000.h5");
  const fs::path backup = dir.file("backup.h5.orig");
  fs::copy_file(path, backup);
  struct Damage {
    const char* dataset;
    int entry;
    uint64_t value;
    bool add;  // value is added to the entry instead of replacing it
    const char* says;
  };
  for (const Damage& d : {Damage{"pcm_offsets", 2, 1, false, "entry 2 (1) < entry 1"},
                          Damage{"pcm_offsets", 4, 5, true, "expected the length of 'pcm'"},
                          Damage{"text_offsets", 0, 3, false, "expected first entry 0"},
                          Damage{"token_offsets", 4, 999, true, "expected the length of 'tokens'"},
                          Damage{"source_offsets", 1, 1u << 30, false, "inconsistent offsets"},
                          Damage{"pcm_offsets", 1, 0, false, "clip 0 has no samples"}}) {
    SCOPED_TRACE(std::string(d.dataset) + "[" + std::to_string(d.entry) + "]");
    fs::copy_file(backup, path, fs::copy_options::overwrite_existing);
    auto v = read_u64(path, d.dataset);
    v[d.entry] = d.add ? v[d.entry] + d.value : d.value;
    poke_u64(path, d.dataset, v);
    const std::string msg = error_of([&] { SpeechDataset(dir.str(), "train", kHash); });
    EXPECT_CONTAINS(msg, path);
    EXPECT_CONTAINS(msg, d.dataset);
    EXPECT_CONTAINS(msg, d.says);
  }
}

TEST(SpeechShard, RefusesWrongFormatVersionAndMissingShards) {
  TempDir dir;
  EXPECT_CONTAINS(error_of([&] { SpeechDataset(dir.str(), "train", kHash); }), "no 'train' shards");
  EXPECT_CONTAINS(error_of([&] { SpeechDataset(dir.file("nope"), "train", kHash); }), "not found");
  // A text shard under a speech shard's name.
  write_shard(dir.file("train_000000.h5"), "train", {1, 2, 3}, {0, 3}, 10, kHash, 3);
  const std::string msg = error_of([&] { SpeechDataset(dir.str(), "train", kHash); });
  EXPECT_CONTAINS(msg, "train_000000.h5: attribute 'format'");
  EXPECT_CONTAINS(msg, "chorus-text-shard");
  // A future version.
  fs::remove(dir.file("train_000000.h5"));
  write_speech_shard(dir.file("train_000000.h5"), "train", {make_clip(0)}, kHash);
  {
    chorus::h5::quiet_errors();
    hid_t f = H5Fopen(dir.file("train_000000.h5").c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    hid_t a = H5Aopen(f, "version", H5P_DEFAULT);
    const int32_t two = 2;
    ASSERT_GE(H5Awrite(a, H5T_NATIVE_INT32, &two), 0);
    H5Aclose(a);
    H5Fclose(f);
  }
  EXPECT_CONTAINS(error_of([&] { SpeechDataset(dir.str(), "train", kHash); }),
                  "attribute 'version': expected 1, found 2");
  // Other splits are separate.
  write_clips(dir.str(), 2, 10, "val");
  EXPECT_EQ(SpeechDataset(dir.str(), "val", kHash).size(), 2u);
}

TEST(SpeechShard, WriterIsAllOrNothingAndNeedsForceToReplace) {
  TempDir dir;
  {
    SpeechShardWriter w(dir.str(), "train", kHash, 2, false);
    for (int i = 0; i < 5; ++i) w.add(make_clip(i));
    // Two full shards are on disk only as .tmp files until commit().
    EXPECT_TRUE(fs::exists(dir.file("train_000001.h5.tmp")));
    EXPECT_FALSE(fs::exists(dir.file("train_000000.h5")));
  }  // destroyed without commit
  EXPECT_TRUE(fs::is_empty(dir.str()));

  write_clips(dir.str(), 5, 2);  // 3 shards
  const std::string msg = error_of([&] { SpeechShardWriter(dir.str(), "train", kHash, 2, false); });
  EXPECT_CONTAINS(msg, dir.str());
  EXPECT_CONTAINS(msg, "already holds 3 'train' shard(s)");
  EXPECT_CONTAINS(msg, "--force");
  // Another split in the same directory is fine.
  write_clips(dir.str(), 1, 2, "val");

  {
    SpeechShardWriter w(dir.str(), "train", kHash, 2, true);
    w.add(make_clip(9));
    w.commit();
  }
  EXPECT_FALSE(fs::exists(dir.file("train_000001.h5")));  // old shards not replaced are removed
  SpeechDataset ds(dir.str(), "train", kHash);
  ASSERT_EQ(ds.size(), 1u);
  EXPECT_EQ(ds.text(0), make_clip(9).text);
  EXPECT_EQ(SpeechDataset(dir.str(), "val", kHash).size(), 1u);

  SpeechShardWriter empty(dir.str(), "test", kHash, 2, false);
  EXPECT_CONTAINS(error_of([&] { empty.commit(); }), "no clips");
  EXPECT_CONTAINS(error_of([&] { SpeechShardWriter(dir.str(), "bad/split", kHash, 2, false); }), "split");
  SpeechClip silent = make_clip(1);
  silent.pcm.clear();
  EXPECT_CONTAINS(error_of([&] { write_speech_shard(dir.file("x.h5"), "train", {silent}, kHash); }),
                  "expected at least one sample");
}

TEST(SpeechManifest, ParsesResolvesAndReportsLineNumbers) {
  TempDir dir;
  fs::create_directories(dir.file("sub"));
  const std::string m = dir.file("sub/clips.tsv");
  std::ofstream(m) << "a.wav\tde\tHallo Welt\r\n"
                      "\n"
                      "  /abs/b.wav \t en \t  text with\ttab  \n"
                      "../c.wav\tfr\t\n";
  const auto e = read_speech_manifest(m);
  ASSERT_EQ(e.size(), 3u);
  EXPECT_EQ(e[0].line, 1u);
  EXPECT_EQ(e[0].resolved, (fs::path(dir.file("sub")) / "a.wav").string());
  EXPECT_EQ(e[0].text, "Hallo Welt");
  EXPECT_EQ(e[1].line, 3u);
  EXPECT_EQ(e[1].path, "/abs/b.wav");
  EXPECT_EQ(e[1].resolved, "/abs/b.wav");
  EXPECT_EQ(e[1].lang, "en");
  EXPECT_EQ(e[1].text, "text with\ttab");
  EXPECT_EQ(e[2].resolved, dir.file("c.wav"));
  EXPECT_EQ(e[2].text, "");  // empty transcripts are prepare-speech's to skip

  std::ofstream(m) << "a.wav\tde\tok\nb.wav de no tabs\n";
  EXPECT_CONTAINS(error_of([&] { read_speech_manifest(m); }), m + ":2: malformed line");
  std::ofstream(m) << "a.wav\t\tno language\n";
  EXPECT_CONTAINS(error_of([&] { read_speech_manifest(m); }), m + ":1: malformed line: the language");
  EXPECT_CONTAINS(error_of([&] { read_speech_manifest(dir.file("none.tsv")); }), "none.tsv: file not found");
}
