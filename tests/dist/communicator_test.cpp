// Collectives on rank-dependent inputs with closed-form results, on the world,
// TP and DP groups, for counts that do and do not divide the group size; for
// bf16 / fp16 also sums that must round, and bit-identical results on every rank.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <type_traits>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "dist/communicator.h"
#include "dist/grid.h"
#include "dist_test_env.h"

using namespace chorus::dist;
using chorus::dist::testing::g_runtime;

namespace {

template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<chorus::bf16>() {
  return DType::bf16;
}
template <>
constexpr DType dtype_of<chorus::fp16>() {
  return DType::f16;
}

// One unit in the last place of T at |x| (normal range): bf16 keeps 8
// significant bits, fp16 11.
template <class T>
float ulp_of(float x) {
  const int mant_bits = std::is_same_v<T, chorus::bf16> ? 8 : 11;
  return std::ldexp(1.0f, std::ilogb(x) - (mant_bits - 1));
}

template <class T>
std::vector<uint16_t> bits_of(const std::vector<T>& v) {
  std::vector<uint16_t> b(v.size());
  for (size_t i = 0; i < v.size(); ++i) b[i] = v[i].bits;
  return b;
}

// The 16-bit checks use EXPECT and report the first bad element, so a failure
// on some ranks never leaves the others waiting in the next collective.
// n when got[i] == want(i) for all i < n, else the first i where not.
template <class T, class Want>
size_t first_mismatch(const std::vector<T>& got, size_t n, Want want) {
  for (size_t i = 0; i < n; ++i)
    if (!(chorus::to_f32(got[i]) == want(i))) return i;
  return n;
}

// Fails unless every rank of c holds the same bits in v (gathered over c as i32).
template <class T>
void expect_same_on_every_rank(Communicator& c, const std::vector<T>& v, const char* what) {
  const size_t n = v.size(), R = static_cast<size_t>(c.size());
  std::vector<int32_t> mine(n), all(n * R);
  for (size_t i = 0; i < n; ++i) mine[i] = v[i].bits;
  c.all_gather(mine.data(), all.data(), all.size(), DType::i32);
  for (size_t q = 1; q < R; ++q) {
    size_t bad = n;
    for (size_t i = 0; i < n && bad == n; ++i)
      if (all[q * n + i] != all[i]) bad = i;
    EXPECT_EQ(bad, n) << what << ": rank " << q << " holds other bits than rank 0 (first at the element shown)";
  }
}

// 16-bit collectives. Exact cases: x_r[i] = (r + 1) * sign_i * 2^e_i with e_i in
// [-8, 7], so every partial sum (any order) is a small integer (<= R(R+1)/2)
// times 2^e_i, exact in bf16 and fp16.
template <class T>
void check_half_group(Communicator& c) {
  const int R = c.size(), r = c.rank();
  const DType t = dtype_of<T>();
  const float S = R * (R + 1) / 2.0f;
  auto unit = [](size_t i) { return std::ldexp((i / 16) % 2 ? -1.0f : 1.0f, int(i % 16) - 8); };
  for (size_t n : {size_t(1), size_t(7), size_t(1001)}) {
    SCOPED_TRACE(c.name() + (t == DType::bf16 ? " bf16" : " fp16") + " n=" + std::to_string(n));
    std::vector<T> x(n);
    for (size_t i = 0; i < n; ++i) x[i] = chorus::from_f32<T>(float(r + 1) * unit(i));
    for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::max, ReduceOp::min}) {
      SCOPED_TRACE(reduce_op_name(op));
      auto y = x;
      c.all_reduce(y.data(), n, t, op);
      const size_t bad = first_mismatch(y, n, [&](size_t i) {
        const float u = unit(i);
        switch (op) {
          case ReduceOp::sum: return S * u;
          // the documented avg: the (here exact) sum times 1/size in fp32, rounded
          case ReduceOp::avg: return chorus::round_to<T>(S * u * (1.0f / float(R)));
          case ReduceOp::max: return u > 0 ? float(R) * u : u;
          case ReduceOp::min: return u > 0 ? u : float(R) * u;
        }
        return 0.0f;
      });
      EXPECT_EQ(bad, n) << "first wrong element; got " << (bad < n ? chorus::to_f32(y[bad]) : 0.0f);
      expect_same_on_every_rank(c, y, "all_reduce");
    }
    // reduce-scatter: this rank's chunk of the sum / average, nothing written past it
    for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg}) {
      const size_t b = chunk_begin(n, R, r), k = chunk_size(n, R, r);
      std::vector<T> chunk(k + 1, T{0xdead});
      c.reduce_scatter(x.data(), chunk.data(), n, t, op);
      const size_t bad = first_mismatch(chunk, k, [&](size_t i) {
        const float sum = S * unit(b + i);
        return op == ReduceOp::avg ? chorus::round_to<T>(sum * (1.0f / float(R))) : sum;
      });
      EXPECT_EQ(bad, k) << reduce_op_name(op) << ": first wrong element of the chunk";
      EXPECT_EQ(chunk[k].bits, 0xdead) << "written past the chunk";
    }
    // all-gather and broadcast copy bits (any pattern, NaNs included)
    {
      std::vector<T> full(n, T{0xffff}), mine(chunk_size(n, R, r));
      for (size_t i = 0; i < mine.size(); ++i) mine[i] = T{uint16_t(r * 4099 + int(i) * 7)};
      c.all_gather(mine.data(), full.data(), n, t);
      std::vector<uint16_t> want(n);
      for (int q = 0; q < R; ++q)
        for (size_t i = 0; i < chunk_size(n, R, q); ++i)
          want[chunk_begin(n, R, q) + i] = uint16_t(q * 4099 + int(i) * 7);
      EXPECT_EQ(bits_of(full), want);
      std::vector<T> inplace(n, T{0xffff});
      std::copy(mine.begin(), mine.end(), inplace.begin() + long(chunk_begin(n, R, r)));
      c.all_gather(inplace.data() + chunk_begin(n, R, r), inplace.data(), n, t);
      EXPECT_EQ(bits_of(inplace), want);

      std::vector<T> v(n, T{uint16_t(0x3f80 + r)});
      c.broadcast(v.data(), n, t, R - 1);
      EXPECT_EQ(bits_of(v), std::vector<uint16_t>(n, uint16_t(0x3f80 + R - 1)));
    }
    // Sums that must round: x_r[i] in [1, 2) on a 1/97 grid. Against the fp32
    // sum (exact here: R values with 8 / 11 significant bits) rounded once, each
    // of the R - 1 combines may add up to one ulp, and avg's scaling one more.
    {
      std::vector<T> w(n);
      for (size_t i = 0; i < n; ++i) w[i] = chorus::from_f32<T>(1.0f + float((r * 37 + int(i) * 11) % 97) / 97.0f);
      std::vector<float> exact(n, 0.0f);
      for (int q = 0; q < R; ++q)
        for (size_t i = 0; i < n; ++i)
          exact[i] += chorus::round_to<T>(1.0f + float((q * 37 + int(i) * 11) % 97) / 97.0f);
      size_t n_rounded = 0;
      for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg}) {
        auto y = w;
        c.all_reduce(y.data(), n, t, op);
        size_t bad = n;
        for (size_t i = 0; i < n; ++i) {
          const float e = op == ReduceOp::avg ? exact[i] / float(R) : exact[i];
          const float ref = chorus::round_to<T>(e);
          n_rounded += ref != e;
          const float tol = float(op == ReduceOp::avg ? R : R - 1) * ulp_of<T>(ref);
          const float got = chorus::to_f32(y[i]);
          // one combine (R == 2, sum) rounds once: exactly the reference
          const bool ok = (R == 2 && op == ReduceOp::sum) ? got == ref : std::fabs(got - ref) <= tol;
          if (!ok && bad == n) {
            bad = i;
            ADD_FAILURE() << reduce_op_name(op) << " element " << i << ": got " << got << ", fp32 reference rounded "
                          << ref << ", tolerance " << tol;
          }
        }
        expect_same_on_every_rank(c, y, "rounding all_reduce");
      }
      if (R > 1 && n > 1) {
        EXPECT_GT(n_rounded, 0u) << "the inputs were meant to need rounding";
      }
    }
    // a NaN on one rank wins max and min on every rank
    for (ReduceOp op : {ReduceOp::max, ReduceOp::min}) {
      std::vector<T> y(n, chorus::from_f32<T>(float(r)));
      if (r == R - 1) y[0] = chorus::from_f32<T>(std::nanf(""));
      c.all_reduce(y.data(), n, t, op);
      EXPECT_TRUE(std::isnan(chorus::to_f32(y[0]))) << reduce_op_name(op);
      if (n > 1) {
        EXPECT_EQ(chorus::to_f32(y[1]), op == ReduceOp::max ? float(R - 1) : 0.0f);
      }
    }
    c.barrier();
  }
}

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

void check_half_types(Communicator& c) {
  check_half_group<chorus::bf16>(c);
  check_half_group<chorus::fp16>(c);
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

TEST(Communicator, HalfTypesOnWorldTpAndDpGroups) {
  check_half_types(g_runtime->world());
  const int world = g_runtime->world().size();
  for (int tp = 2; tp < world; tp *= 2) {
    if (world % tp) continue;
    ParallelGrid grid(*g_runtime, tp);
    check_half_types(grid.tp());
    check_half_types(grid.dp());
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

TEST(Communicator, LocalGroupCopiesHalfTypes) {
  LocalCommunicator c;
  for (DType t : {DType::bf16, DType::f16}) {
    EXPECT_EQ(dtype_size(t), 2u);
    std::vector<uint16_t> x = {0x3f80, 0x7fc1, 0x8001, 0x1234, 0xffff}, y(x.size(), 0);
    auto z = x;
    for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::max, ReduceOp::min})
      c.all_reduce(z.data(), z.size(), t, op);
    EXPECT_EQ(z, x);
    c.reduce_scatter(x.data(), y.data(), x.size(), t, ReduceOp::avg);
    EXPECT_EQ(y, x);
    std::fill(y.begin(), y.end(), 0);
    c.all_gather(x.data(), y.data(), x.size(), t);
    EXPECT_EQ(y, x);
    c.broadcast(z.data(), z.size(), t, 0);
    EXPECT_EQ(z, x);
  }
}
