// DataLoader: a pure function of (seed, global sample index). Determinism,
// one visit per sample per epoch, DP-slice equivalence and exact resume.
#include "data/loader.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "core/error.h"

namespace fs = std::filesystem;
using chorus::Error;
using namespace chorus::data;

namespace {

constexpr int kT = 8;

// Token i of the stream is i, so a sample's first input identifies it.
std::shared_ptr<const TokenStream> counting_stream(uint32_t n_tokens) {
  std::vector<uint32_t> tokens(n_tokens);
  std::iota(tokens.begin(), tokens.end(), 0u);
  return std::make_shared<const TokenStream>(std::move(tokens), 4 * uint64_t{n_tokens});
}

struct Batch {
  std::vector<int32_t> inputs, targets;
  bool operator==(const Batch&) const = default;
};

Batch next(DataLoader& dl) {
  Batch b;
  b.inputs.resize(static_cast<size_t>(dl.local_batch()) * kT);
  b.targets.resize(b.inputs.size());
  dl.next_batch(b.inputs.data(), b.targets.data());
  return b;
}

// Window index of each row of a batch.
std::vector<uint64_t> sample_ids(const Batch& b) {
  std::vector<uint64_t> ids;
  for (size_t r = 0; r < b.inputs.size() / kT; ++r)
    ids.push_back(static_cast<uint64_t>(b.inputs[r * kT]) / kT);
  return ids;
}

// The dp_size = R batch, all ranks' slices concatenated in rank order.
Batch gathered(const std::vector<DataLoader*>& ranks) {
  Batch all;
  for (DataLoader* dl : ranks) {
    Batch b = next(*dl);
    all.inputs.insert(all.inputs.end(), b.inputs.begin(), b.inputs.end());
    all.targets.insert(all.targets.end(), b.targets.begin(), b.targets.end());
  }
  return all;
}

}  // namespace

TEST(DataLoader, SizesAndTargetsAreShiftedInputs) {
  auto stream = counting_stream(1000);
  DataLoader dl(stream, kT, 8, 1, 2, 5);
  EXPECT_EQ(dl.n_samples(), (1000u - 1) / kT);
  EXPECT_EQ(dl.local_batch(), 4);
  EXPECT_EQ(dl.consumed(), 0u);
  for (int step = 0; step < 40; ++step) {
    Batch b = next(dl);
    for (int r = 0; r < dl.local_batch(); ++r) {
      const int32_t* in = b.inputs.data() + r * kT;
      const int32_t* tg = b.targets.data() + r * kT;
      EXPECT_EQ(in[0] % kT, 0) << "samples start at multiples of T";
      for (int t = 0; t < kT; ++t) {
        EXPECT_EQ(tg[t], in[t] + 1);
        if (t + 1 < kT) {
          EXPECT_EQ(tg[t], in[t + 1]);
        }
      }
    }
  }
  EXPECT_EQ(dl.consumed(), 40u * 8);
}

TEST(DataLoader, Deterministic) {
  auto stream = counting_stream(1000);
  DataLoader a(stream, kT, 4, 0, 1, 11), b(stream, kT, 4, 0, 1, 11), c(stream, kT, 4, 0, 1, 12);
  bool any_diff = false;
  for (int step = 0; step < 10; ++step) {
    Batch ba = next(a), bb = next(b), bc = next(c);
    EXPECT_EQ(ba, bb);
    any_diff |= !(ba == bc);
  }
  EXPECT_TRUE(any_diff) << "another seed must give other batches";
}

TEST(DataLoader, EverySampleOncePerEpoch) {
  auto stream = counting_stream(1000);  // 124 samples = 31 batches of 4
  DataLoader dl(stream, kT, 4, 0, 1, 3);
  const uint64_t n = dl.n_samples();
  ASSERT_EQ(n % 4, 0u);
  std::vector<std::vector<uint64_t>> epochs;
  for (int e = 0; e < 2; ++e) {
    std::vector<uint64_t> seen;
    for (uint64_t k = 0; k < n / 4; ++k) {
      std::vector<uint64_t> ids = sample_ids(next(dl));
      seen.insert(seen.end(), ids.begin(), ids.end());
    }
    std::vector<uint64_t> sorted = seen;
    std::sort(sorted.begin(), sorted.end());
    std::vector<uint64_t> all(n);
    std::iota(all.begin(), all.end(), uint64_t{0});
    EXPECT_EQ(sorted, all) << "epoch " << e;
    epochs.push_back(seen);
  }
  EXPECT_NE(epochs[0], epochs[1]) << "each epoch has its own permutation";
  // sample_for is the same pure function the batches use.
  for (uint64_t i = 0; i < n; ++i) EXPECT_EQ(dl.sample_for(n + i), epochs[1][i]);
  EXPECT_EQ(dl.sample_for(0), epochs[0][0]);
}

TEST(DataLoader, DataParallelSlicesEqualSingleRank) {
  auto stream = counting_stream(1003);  // 125 samples: batches of 8 straddle epoch ends
  const int G = 8;
  DataLoader single(stream, kT, G, 0, 1, 9);
  std::vector<std::unique_ptr<DataLoader>> dp2, dp4;
  for (int r = 0; r < 2; ++r) dp2.push_back(std::make_unique<DataLoader>(stream, kT, G, r, 2, 9));
  for (int r = 0; r < 4; ++r) dp4.push_back(std::make_unique<DataLoader>(stream, kT, G, r, 4, 9));
  for (int step = 0; step < 40; ++step) {
    const Batch want = next(single);
    EXPECT_EQ(gathered({dp2[0].get(), dp2[1].get()}), want) << "step " << step;
    EXPECT_EQ(gathered({dp4[0].get(), dp4[1].get(), dp4[2].get(), dp4[3].get()}), want) << "step " << step;
  }
}

TEST(DataLoader, ResumeOnAnyDpSize) {
  auto stream = counting_stream(1003);
  const int G = 8, k = 23;
  DataLoader ran(stream, kT, G, 0, 1, 21);
  for (int i = 0; i < k; ++i) next(ran);
  EXPECT_EQ(ran.consumed(), uint64_t{k} * G);
  const Batch want = next(ran);

  DataLoader resumed(stream, kT, G, 0, 1, 21);
  resumed.set_consumed(uint64_t{k} * G);
  EXPECT_EQ(next(resumed), want);

  std::vector<std::unique_ptr<DataLoader>> dp4;
  for (int r = 0; r < 4; ++r) {
    dp4.push_back(std::make_unique<DataLoader>(stream, kT, G, r, 4, 21));
    dp4.back()->set_consumed(uint64_t{k} * G);
  }
  EXPECT_EQ(gathered({dp4[0].get(), dp4[1].get(), dp4[2].get(), dp4[3].get()}), want);
  // And the runs stay together afterwards.
  const Batch want2 = next(ran);
  EXPECT_EQ(gathered({dp4[0].get(), dp4[1].get(), dp4[2].get(), dp4[3].get()}), want2);
}

TEST(DataLoader, Refusals) {
  auto stream = counting_stream(1000);
  try {
    DataLoader(stream, kT, 6, 0, 4, 1);
    ADD_FAILURE() << "G % dp_size != 0 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("dp_size"), std::string::npos) << e.what();
  }
  try {
    DataLoader(counting_stream(8), kT, 4, 0, 1, 1);
    ADD_FAILURE() << "a split shorter than T + 1 tokens accepted";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("8 tokens"), std::string::npos) << msg;
    EXPECT_NE(msg.find("--seq-len 8"), std::string::npos) << msg;
  }
  EXPECT_THROW(DataLoader(stream, kT, 4, 1, 1, 1), Error);
  EXPECT_THROW(DataLoader(stream, 0, 4, 0, 1, 1), Error);
  EXPECT_THROW(DataLoader(nullptr, kT, 4, 0, 1, 1), Error);
  DataLoader ok(counting_stream(9), kT, 4, 0, 1, 1);  // exactly T + 1 tokens: one sample
  EXPECT_EQ(ok.n_samples(), 1u);
}

TEST(TokenStream, LoadsShardsInOrderAndChecksThem) {
  const fs::path dir = fs::temp_directory_path() / ("chorus_loader_test_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::vector<uint32_t> a = {1, 2, 3, 0}, b = {4, 5, 0};
  write_shard((dir / "train_000001.h5").string(), "train", b, {0, 3}, 10, "h", 7);
  write_shard((dir / "train_000000.h5").string(), "train", a, {0, 4}, 10, "h", 5);
  write_shard((dir / "val_000000.h5").string(), "val", {9, 0}, {0, 2}, 10, "h", 3);

  TokenStream s(dir.string(), "train", "h", 10);
  ASSERT_EQ(s.n_tokens(), 7u);
  EXPECT_EQ(std::vector<uint32_t>(s.data(), s.data() + 7), (std::vector<uint32_t>{1, 2, 3, 0, 4, 5, 0}));
  EXPECT_EQ(s.n_bytes(), 12u);
  EXPECT_EQ(TokenStream(dir.string(), "val", "", 0).n_tokens(), 2u);

  try {
    TokenStream(dir.string(), "train", "other", 10);
    ADD_FAILURE() << "another tokenizer hash accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer_hash"), std::string::npos) << e.what();
  }
  // Shards of one split must agree with each other even without an expected hash.
  write_shard((dir / "train_000002.h5").string(), "train", b, {0, 3}, 10, "h2", 7);
  EXPECT_THROW(TokenStream(dir.string(), "train", "", 0), Error);
  EXPECT_THROW(TokenStream(dir.string(), "test", "", 0), Error);
  fs::remove_all(dir);
}

TEST(DataLoader, TooShortASplitIsNamedWithItsFiles) {
  const fs::path dir = fs::temp_directory_path() / ("chorus_loader_short_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  write_shard((dir / "val_000000.h5").string(), "val", {9, 3, 0}, {0, 3}, 10, "h", 3);
  write_shard((dir / "val_000001.h5").string(), "val", {4, 0}, {0, 2}, 10, "h", 2);
  auto stream = std::make_shared<const TokenStream>(dir.string(), "val", "h", 10);
  try {
    DataLoader dl(stream, 16, 1, 0, 1, 1);
    ADD_FAILURE() << "a split of 5 tokens accepted for T = 16";
  } catch (const Error& e) {
    const std::string what = e.what();
    for (const std::string& s : {std::string("split 'val' of ") + dir.string(), (dir / "val_000000.h5").string(),
                                 std::string("val_000001.h5"), std::string("5 tokens"), std::string("--seq-len 16")})
      EXPECT_NE(what.find(s), std::string::npos) << "'" << s << "' not in: " << what;
  }
  fs::remove_all(dir);
}
