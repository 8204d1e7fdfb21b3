// The speech sampler: a pure function of (seed, index); epochs are
// permutations at T = 1; DP slices tile the global batch; language balancing
// follows p^(1/T); within a language no clip repeats before all are used.
#include "data/speech_sampler.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <set>
#include <thread>
#include <vector>

#include "core/error.h"
#include "data/speech_shard.h"

using namespace chorus::data;

namespace {

// n0 clips of language 0 then n1 of language 1, interleaved.
std::vector<uint16_t> two_languages(int n0, int n1) {
  std::vector<uint16_t> v;
  for (int i = 0; i < n0; ++i) v.push_back(0);
  for (int i = 0; i < n1; ++i) v.insert(v.begin() + (i * 7) % (v.size() + 1), 1);
  return v;
}

double share_of_language(const SpeechSampler& s, const std::vector<uint16_t>& lang, uint16_t l, uint64_t n) {
  uint64_t hits = 0;
  std::vector<size_t> batch(1000);
  for (uint64_t i = 0; i < n; i += 1000) {
    s.batch_indices(i, 1000, 0, 1, batch.data());
    for (size_t c : batch) hits += lang[c] == l;
  }
  return static_cast<double>(hits) / static_cast<double>(n);
}

}  // namespace

TEST(SpeechSampler, PureFunctionOfSeedAndIndex) {
  const auto lang = two_languages(60, 17);
  for (double T : {1.0, 3.0}) {
    SCOPED_TRACE(T);
    SpeechSampler a(lang, 7, T), b(lang, 7, T), c(lang, 8, T);
    std::vector<size_t> seq;
    int differ = 0;
    for (uint64_t i = 0; i < 500; ++i) {
      seq.push_back(a.clip_at(i));
      differ += seq.back() != c.clip_at(i);
    }
    EXPECT_GT(differ, 100);  // another seed, another order
    // In reverse order, from a fresh sampler, far indices first: the same clips.
    for (uint64_t i = 500; i-- > 0;) ASSERT_EQ(b.clip_at(i), seq[i]) << i;
    // Far beyond the checkpoint interval, and back.
    SpeechSampler d(lang, 7, T);
    const size_t far = d.clip_at(1'000'003);
    EXPECT_EQ(d.clip_at(17), seq[17]);
    EXPECT_EQ(SpeechSampler(lang, 7, T).clip_at(1'000'003), far);
  }
}

TEST(SpeechSampler, TemperatureOneEpochsArePermutations) {
  const auto lang = two_languages(40, 13);
  const size_t n = lang.size();
  SpeechSampler s(lang, 3, 1.0);
  std::vector<size_t> first;
  for (uint64_t e = 0; e < 3; ++e) {
    std::vector<size_t> epoch(n);
    s.batch_indices(e * n, static_cast<int>(n), 0, 1, epoch.data());
    std::vector<size_t> sorted = epoch;
    std::sort(sorted.begin(), sorted.end());
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(sorted[i], i);
    if (e == 0)
      first = epoch;
    else
      EXPECT_NE(epoch, first);  // reshuffled every epoch
  }
  EXPECT_DOUBLE_EQ(s.language_probabilities()[0], 40.0 / 53.0);
}

TEST(SpeechSampler, DpSlicesTileTheGlobalBatch) {
  const auto lang = two_languages(90, 30);
  for (double T : {1.0, 5.0}) {
    SpeechSampler s(lang, 11, T);
    const int G = 24;
    for (uint64_t step = 0; step < 20; ++step) {
      std::vector<size_t> whole(G);
      s.batch_indices(step * G, G, 0, 1, whole.data());
      for (uint64_t j = 0; j < static_cast<uint64_t>(G); ++j) ASSERT_EQ(whole[j], s.clip_at(step * G + j));
      for (int dp : {2, 3, 4, 8}) {
        std::vector<size_t> tiled;
        for (int r = 0; r < dp; ++r) {
          std::vector<size_t> part(G / dp);
          s.batch_indices(step * G, G, r, dp, part.data());
          tiled.insert(tiled.end(), part.begin(), part.end());
        }
        ASSERT_EQ(tiled, whole) << "T " << T << " step " << step << " dp " << dp;
      }
    }
    std::vector<size_t> out(8);
    EXPECT_THROW(s.batch_indices(0, 10, 0, 4, out.data()), chorus::Error);
    EXPECT_THROW(s.batch_indices(0, 8, 4, 4, out.data()), chorus::Error);
    EXPECT_THROW(s.batch_indices(0, 0, 0, 1, out.data()), chorus::Error);
  }
}

TEST(SpeechSampler, TemperatureBalancesLanguages) {
  const auto lang = two_languages(900, 100);  // 90 % / 10 %
  const uint64_t n = 200000;
  // T = 1: as the data, 90 / 10 (and a permutation per epoch).
  EXPECT_NEAR(share_of_language(SpeechSampler(lang, 1, 1.0), lang, 0, n), 0.9, 0.005);
  // T = 2: q ~ sqrt(p): 0.9487 / (0.9487 + 0.3162) = 0.75.
  SpeechSampler t2(lang, 1, 2.0);
  const double q2 = std::sqrt(0.9) / (std::sqrt(0.9) + std::sqrt(0.1));
  EXPECT_NEAR(t2.language_probabilities()[0], q2, 1e-12);
  EXPECT_NEAR(share_of_language(t2, lang, 0, n), q2, 0.01);
  // T large / infinite: uniform over languages.
  for (double T : {1e6, std::numeric_limits<double>::infinity()}) {
    SpeechSampler s(lang, 1, T);
    EXPECT_NEAR(s.language_probabilities()[1], 0.5, 1e-5);
    EXPECT_NEAR(share_of_language(s, lang, 0, n), 0.5, 0.01);
  }
  // T < 1 sharpens; a tiny T must not underflow.
  SpeechSampler sharp(lang, 1, 0.01);
  EXPECT_NEAR(sharp.language_probabilities()[0], 1.0, 1e-12);
  EXPECT_EQ(lang[sharp.clip_at(5)], 0);
  EXPECT_THROW(SpeechSampler(lang, 1, 0.0), chorus::Error);
  EXPECT_THROW(SpeechSampler(lang, 1, -2.0), chorus::Error);
  EXPECT_THROW(SpeechSampler(std::vector<uint16_t>{}, 1, 1.0), chorus::Error);
}

TEST(SpeechSampler, WithinALanguageEveryClipBeforeAnyRepeat) {
  const auto lang = two_languages(500, 37);
  SpeechSampler s(lang, 5, std::numeric_limits<double>::infinity());
  std::vector<std::vector<size_t>> drawn(2);
  for (uint64_t i = 0; i < 20000; ++i) {
    const size_t c = s.clip_at(i);
    drawn[lang[c]].push_back(c);
  }
  for (int l = 0; l < 2; ++l) {
    const size_t n_l = l == 0 ? 500 : 37;
    ASSERT_GE(drawn[l].size(), 3 * n_l);
    std::vector<size_t> prev;
    for (size_t cycle = 0; cycle < 3; ++cycle) {
      std::vector<size_t> block(drawn[l].begin() + cycle * n_l, drawn[l].begin() + (cycle + 1) * n_l);
      const std::vector<size_t> unsorted = block;
      std::sort(block.begin(), block.end());
      EXPECT_TRUE(std::adjacent_find(block.begin(), block.end()) == block.end())
          << "language " << l << " cycle " << cycle;
      if (cycle > 0) {
        EXPECT_NE(unsorted, prev) << "each cycle is reshuffled";
      }
      prev = unsorted;
    }
  }
}

TEST(SpeechSampler, ConcurrentCallsAgree) {
  const auto lang = two_languages(300, 50);
  for (double T : {1.0, 4.0}) {
    SpeechSampler ref(lang, 9, T), shared(lang, 9, T);
    std::vector<size_t> expect(6000);
    for (uint64_t i = 0; i < expect.size(); ++i) expect[i] = ref.clip_at(i);
    std::vector<int> bad(4, 0);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
      threads.emplace_back([&, t] {
        for (uint64_t i = t; i < expect.size(); i += 4)
          bad[t] += shared.clip_at(expect.size() - 1 - i) != expect[expect.size() - 1 - i];
      });
    for (auto& th : threads) th.join();
    for (int b : bad) EXPECT_EQ(b, 0);
  }
}

TEST(SpeechSampler, FromADataset) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("chorus_sampler_test_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  {
    SpeechShardWriter w(dir.string(), "train", "h", 100, false);
    for (int i = 0; i < 12; ++i) {
      SpeechClip c;
      c.lang = i < 9 ? "sw" : "is";
      c.text = "x";
      c.pcm.assign(160, 0.1f);
      w.add(c);
    }
    w.commit();
  }
  const SpeechDataset ds(dir.string(), "train", "h");
  SpeechSampler s(ds, 1, std::numeric_limits<double>::infinity());
  EXPECT_EQ(s.n_clips(), 12u);
  // languages() is sorted: "is" = 0, "sw" = 1.
  EXPECT_NEAR(s.language_probabilities()[0], 0.5, 1e-12);
  EXPECT_EQ(ds.lang(s.clip_at(0)), ds.languages()[ds.lang_id(s.clip_at(0))]);
  std::filesystem::remove_all(dir);
}

// Length bucketing: the same clips as the sampler, each pool cut into batches
// of neighbouring lengths, DP slices of the same global batch, 1 = the sampler.
TEST(LengthBucketer, ReordersEachPoolIntoBatchesOfSimilarLength) {
  const auto langs = two_languages(300, 100);
  const SpeechSampler s(langs, 5, 2.0);
  std::vector<uint32_t> len(langs.size());
  for (size_t c = 0; c < len.size(); ++c) len[c] = static_cast<uint32_t>((c * 7919) % 1000);
  const int G = 8, pool = 6;
  LengthBucketer b(s, len, 5, pool);
  bool shuffled = false;
  for (int p = 0; p < 3; ++p) {
    std::vector<size_t> want(G * pool), got;
    s.batch_indices(static_cast<uint64_t>(p) * G * pool, G * pool, 0, 1, want.data());
    std::vector<std::pair<uint32_t, uint32_t>> ranges;  // (min, max) length of each batch
    for (int k = 0; k < pool; ++k) {
      std::vector<size_t> one(G), halves(G);
      const uint64_t consumed = (static_cast<uint64_t>(p) * pool + k) * G;
      b.batch_indices(consumed, G, 0, 1, one.data());
      b.batch_indices(consumed, G, 0, 2, halves.data());
      b.batch_indices(consumed, G, 1, 2, halves.data() + G / 2);
      EXPECT_EQ(halves, one) << "DP slices of batch " << k;
      got.insert(got.end(), one.begin(), one.end());
      uint32_t lo = UINT32_MAX, hi = 0;
      for (size_t c : one) lo = std::min(lo, len[c]), hi = std::max(hi, len[c]);
      if (!ranges.empty() && lo < ranges.back().first) shuffled = true;
      ranges.push_back({lo, hi});
    }
    std::vector<size_t> a = want, c = got;
    std::sort(a.begin(), a.end());
    std::sort(c.begin(), c.end());
    EXPECT_EQ(c, a) << "pool " << p << " is not a reordering of the sampler's clips";
    std::sort(ranges.begin(), ranges.end());
    for (size_t k = 1; k < ranges.size(); ++k)
      EXPECT_LE(ranges[k - 1].second, ranges[k].first) << "batches of pool " << p << " overlap in length";
  }
  EXPECT_TRUE(shuffled) << "batches taken in length order in every pool";
  // A fresh bucketer (as after a resume) gives the same batch; 1 = the sampler's order.
  LengthBucketer again(s, len, 5, pool), off(s, len, 5, 1);
  std::vector<size_t> x(G), y(G), z(G), w(G);
  b.batch_indices(13 * G, G, 0, 1, x.data());
  again.batch_indices(13 * G, G, 0, 1, y.data());
  EXPECT_EQ(x, y);
  off.batch_indices(13 * G, G, 0, 1, z.data());
  s.batch_indices(13 * G, G, 0, 1, w.data());
  EXPECT_EQ(z, w);
  EXPECT_THROW(LengthBucketer(s, len, 5, 0), chorus::Error);
  EXPECT_THROW(b.batch_indices(3, G, 0, 1, x.data()), chorus::Error);
}
