#include "nn/tp_shard.h"

#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "core/error.h"

using namespace chorus::nn;

namespace {
std::vector<float> iota_vec(size_t n) {
  std::vector<float> v(n);
  std::iota(v.begin(), v.end(), 0.0f);
  return v;
}
}  // namespace

TEST(TpShard, ColumnParallelQkvTakesTheSameHeadsOfQKAndV) {
  // (3d, d) with d = 4, tp = 2: rank 1 holds rows 2-3 of q, k and v.
  ShardSpec s{{12, 4}, 0, 3};
  auto g = iota_vec(48);
  std::vector<float> local(local_numel(s, 2));
  ASSERT_EQ(local_shape(s, 2), (std::vector<int64_t>{6, 4}));
  slice_shard(s, 1, 2, g.data(), local.data());
  const int rows[] = {2, 3, 6, 7, 10, 11};
  for (int i = 0; i < 6; ++i)
    for (int c = 0; c < 4; ++c) EXPECT_EQ(local[i * 4 + c], g[rows[i] * 4 + c]);
}

TEST(TpShard, RowParallelTakesInputColumns) {
  ShardSpec s{{3, 8}, 1, 1};
  auto g = iota_vec(24);
  std::vector<float> local(local_numel(s, 4));
  slice_shard(s, 2, 4, g.data(), local.data());
  for (int row = 0; row < 3; ++row)
    for (int c = 0; c < 2; ++c) EXPECT_EQ(local[row * 2 + c], g[row * 8 + 4 + c]);
}

TEST(TpShard, PlaceInvertsSliceForEveryLayout) {
  for (ShardSpec s : {ShardSpec{{16, 6}, 0, 1}, ShardSpec{{24, 4}, 0, 3}, ShardSpec{{4, 16}, 1, 1},
                      ShardSpec{{24}, 0, 3}, ShardSpec{{8}, -1, 1}}) {
    for (int tp : {1, 2, 4}) {
      size_t n = 1;
      for (auto d : s.global_shape) n *= size_t(d);
      auto g = iota_vec(n);
      std::vector<float> rebuilt(n, -1.0f), local(local_numel(s, tp));
      for (int r = 0; r < tp; ++r) {
        slice_shard(s, r, tp, g.data(), local.data());
        place_shard(s, r, tp, local.data(), rebuilt.data());
      }
      EXPECT_EQ(rebuilt, g) << "axis " << s.axis << " tp " << tp;
    }
  }
  EXPECT_THROW(local_shape(ShardSpec{{10, 4}, 0, 3}, 2), chorus::Error);
}
