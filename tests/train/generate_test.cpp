#include "train/generate.h"

#include <gtest/gtest.h>

#include <map>

#include "core/rng.h"

using chorus::train::sample_logits;

TEST(SampleLogits, GreedyAndTopOnePickTheArgmax) {
  std::vector<float> logits = {0.1f, 2.0f, -1.0f, 1.9f};
  std::vector<std::pair<float, uint32_t>> scratch;
  EXPECT_EQ(sample_logits(logits.data(), 4, 0.0f, 0, 0.99f, scratch), 1u);
  for (float u : {0.0f, 0.5f, 0.999f}) EXPECT_EQ(sample_logits(logits.data(), 4, 1.0f, 1, u, scratch), 1u);
}

TEST(SampleLogits, FrequenciesFollowTheSoftmaxWithinTopK) {
  std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f), -50.0f};
  std::vector<std::pair<float, uint32_t>> scratch;
  chorus::Rng rng(7);
  std::map<uint32_t, int> count;
  const int n = 200000;
  for (int i = 0; i < n; ++i) count[sample_logits(logits.data(), 4, 1.0f, 3, rng.uniform(), scratch)]++;
  EXPECT_NEAR(count[0] / double(n), 0.5, 0.01);
  EXPECT_NEAR(count[1] / double(n), 0.3, 0.01);
  EXPECT_NEAR(count[2] / double(n), 0.2, 0.01);
  EXPECT_EQ(count[3], 0);
  // top-k 2 renormalises over the two best
  count.clear();
  for (int i = 0; i < n; ++i) count[sample_logits(logits.data(), 4, 1.0f, 2, rng.uniform(), scratch)]++;
  EXPECT_NEAR(count[0] / double(n), 0.625, 0.01);
  EXPECT_EQ(count[2], 0);
}
