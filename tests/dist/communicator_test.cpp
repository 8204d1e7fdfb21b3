// Collectives on rank-dependent inputs with closed-form results, on the world,
// TP and DP groups, for counts that do and do not divide the group size.
#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "core/error.h"
#include "dist/communicator.h"
#include "dist/grid.h"
#include "dist_test_env.h"

using namespace chorus::dist;
using chorus::dist::testing::g_runtime;

namespace {

// x_r[i] = (r + 1) * (i + 1): sum over r is (i + 1) * S with S = n(n+1)/2.
void check_group(Communicator& c) {
  const int R = c.size(), r = c.rank();
  const double S = R * (R + 1) / 2.0;
  for (size_t n : {size_t(1), size_t(7), size_t(64), size_t(1001)}) {
    SCOPED_TRACE(c.name() + " n=" + std::to_string(n));
    std::vector<float> x(n);
    for (size_t i = 0; i < n; ++i) x[i] = float((r + 1) * (i + 1));
    auto y = x;
    c.all_reduce(y.data(), n, ReduceOp::sum);
    for (size_t i = 0; i < n; ++i) ASSERT_FLOAT_EQ(y[i], float((i + 1) * S));
    y = x;
    c.all_reduce(y.data(), n, ReduceOp::avg);
    for (size_t i = 0; i < n; ++i) ASSERT_FLOAT_EQ(y[i], float((i + 1) * S / R));
    y = x;
    c.all_reduce(y.data(), n, DType::f32, ReduceOp::max);
    for (size_t i = 0; i < n; ++i) ASSERT_FLOAT_EQ(y[i], float(R * (i + 1)));

    // reduce-scatter: this rank's chunk of the sum / average
    for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg}) {
      const size_t b = chunk_begin(n, R, r), k = chunk_size(n, R, r);
      std::vector<float> chunk(k + 1, -1.0f);
      c.reduce_scatter(x.data(), chunk.data(), n, DType::f32, op);
      for (size_t i = 0; i < k; ++i)
        ASSERT_FLOAT_EQ(chunk[i], float((b + i + 1) * S / (op == ReduceOp::avg ? R : 1)));
      ASSERT_EQ(chunk[k], -1.0f);  // nothing written past the chunk
    }
    // all-gather: chunk of rank q holds q*1000 + i; separate and in-place buffers
    {
      std::vector<double> full(n, -1.0), mine(chunk_size(n, R, r));
      for (size_t i = 0; i < mine.size(); ++i) mine[i] = r * 1000.0 + double(i);
      c.all_gather(mine.data(), full.data(), n, DType::f64);
      for (int q = 0; q < R; ++q)
        for (size_t i = 0; i < chunk_size(n, R, q); ++i) ASSERT_EQ(full[chunk_begin(n, R, q) + i], q * 1000.0 + i);
      std::vector<double> inplace(n, -1.0);
      std::copy(mine.begin(), mine.end(), inplace.begin() + long(chunk_begin(n, R, r)));
      c.all_gather(inplace.data() + chunk_begin(n, R, r), inplace.data(), n, DType::f64);
      ASSERT_EQ(inplace, full);
    }
    // broadcast from the last rank
    {
      std::vector<int64_t> v(n, r);
      c.broadcast(v.data(), n, DType::i64, R - 1);
      for (auto e : v) ASSERT_EQ(e, R - 1);
    }
    c.barrier();
  }
}

}  // namespace

TEST(Communicator, WorldGroup) { check_group(g_runtime->world()); }

TEST(Communicator, TpAndDpSubGroups) {
  const int world = g_runtime->world().size();
  for (int tp = 1; tp <= world; tp *= 2) {
    if (world % tp) continue;
    ParallelGrid grid(*g_runtime, tp);
    ASSERT_EQ(grid.tp_size(), tp);
    ASSERT_EQ(grid.dp_size(), world / tp);
    // TP groups are consecutive ranks
    EXPECT_EQ(grid.world_rank(), grid.dp_rank() * tp + grid.tp_rank());
    check_group(grid.tp());
    check_group(grid.dp());
    // a value that differs per TP group shows the groups are really separate
    double v = grid.dp_rank();
    EXPECT_EQ(grid.tp().all_reduce_scalar(v, ReduceOp::sum), v * tp);
  }
}

TEST(Communicator, GridRefusesBadTp) {
  const int world = g_runtime->world().size();
  EXPECT_THROW(ParallelGrid(*g_runtime, world + 1), chorus::Error);
  ParallelGrid grid(*g_runtime, world);
  if (world > 1) {
    EXPECT_THROW(grid.check_divides(3, 4 * world, 64 * world), chorus::Error);
  }
  EXPECT_NO_THROW(grid.check_divides(world, 4 * world, 64 * world));
}

TEST(Communicator, ChunksCoverEveryElementOnce) {
  for (size_t n : {0, 1, 5, 17, 1000})
    for (int R : {1, 2, 3, 4, 7}) {
      size_t total = 0;
      for (int r = 0; r < R; ++r) {
        EXPECT_EQ(chunk_begin(n, R, r), total);
        total += chunk_size(n, R, r);
      }
      EXPECT_EQ(total, n);
    }
}
