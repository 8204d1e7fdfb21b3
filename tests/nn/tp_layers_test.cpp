// The tensor-parallel layers (nn/parallel_linear.h, nn/vocab_parallel.h) on
// TP groups of 2, 3 and 4 ranks simulated by threads (thread_group.h): each
// rank's shard of the outputs and gradients must equal the same slice of the
// plain layer's (nn/matmul.h, nn/embedding.h, nn/softmax_cross_entropy.h), and
// with no TP group they must be exactly the plain layers.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "grad_check.h"
#include "nn/embedding.h"
#include "nn/matmul.h"
#include "nn/parallel_linear.h"
#include "nn/softmax_cross_entropy.h"
#include "nn/tp_shard.h"
#include "nn/vocab_parallel.h"
#include "thread_group.h"

namespace chorus::nn {
namespace {

using chorus::testing::random_vector;
using chorus::testing::ThreadGroup;

std::vector<float> shard(const ShardSpec& s, int rank, int tp, const std::vector<float>& global) {
  std::vector<float> out(local_numel(s, tp));
  slice_shard(s, rank, tp, global.data(), out.data());
  return out;
}

// max |a - b| over n elements.
float max_diff(const float* a, const float* b, size_t n) {
  float m = 0.0f;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

TEST(ColumnParallelLinear, ShardsMatchThePlainLayer) {
  const int N = 6, C = 8, OC = 12;
  const auto x = random_vector(N * C, 1), w = random_vector(OC * C, 2), b = random_vector(OC, 3);
  const auto dout = random_vector(N * OC, 4);
  std::vector<float> out(N * OC), dx(N * C), dw(OC * C, 0.0f), db(OC, 0.0f);
  matmul_forward(out.data(), x.data(), w.data(), b.data(), N, C, OC);
  matmul_backward(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), N, C, OC);
  for (int tp : {2, 3, 4}) {
    SCOPED_TRACE("tp " + std::to_string(tp));
    const ShardSpec ws{{OC, C}, 0, 1}, bs{{OC}, 0, 1}, cols{{N, OC}, 1, 1};  // out columns = W rows
    ThreadGroup(tp).run([&](dist::Communicator& comm) {
      const int r = comm.rank(), OCl = OC / tp;
      const auto wl = shard(ws, r, tp, w), bl = shard(bs, r, tp, b), doutl = shard(cols, r, tp, dout);
      std::vector<float> outl(N * OCl), dxl(N * C), dwl(OCl * C, 0.0f), dbl(OCl, 0.0f);
      column_parallel_forward(outl.data(), x.data(), wl.data(), bl.data(), N, C, OCl);
      EXPECT_LT(max_diff(outl.data(), shard(cols, r, tp, out).data(), outl.size()), 1e-5f);
      column_parallel_backward(dxl.data(), dwl.data(), dbl.data(), doutl.data(), x.data(), wl.data(), N, C,
                               OCl, &comm);
      EXPECT_LT(max_diff(dxl.data(), dx.data(), dx.size()), 1e-5f) << "input gradient not all-reduced";
      EXPECT_LT(max_diff(dwl.data(), shard(ws, r, tp, dw).data(), dwl.size()), 1e-5f);
      EXPECT_LT(max_diff(dbl.data(), shard(bs, r, tp, db).data(), dbl.size()), 1e-5f);
    });
  }
}

TEST(RowParallelLinear, ShardsMatchThePlainLayerAndAddBiasAndResidualOnce) {
  const int N = 6, C = 12, OC = 8;
  const auto x = random_vector(N * C, 1), w = random_vector(OC * C, 2), b = random_vector(OC, 3);
  const auto res = random_vector(N * OC, 5), dout = random_vector(N * OC, 4);
  std::vector<float> out(N * OC), dx(N * C), dw(OC * C, 0.0f), db(OC, 0.0f);
  matmul_forward(out.data(), x.data(), w.data(), b.data(), N, C, OC, res.data());
  matmul_backward(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), N, C, OC);
  for (int tp : {2, 3, 4}) {
    SCOPED_TRACE("tp " + std::to_string(tp));
    const ShardSpec ws{{OC, C}, 1, 1}, xs{{N, C}, 1, 1};  // W columns = input columns
    ThreadGroup(tp).run([&](dist::Communicator& comm) {
      const int r = comm.rank(), Cl = C / tp;
      const auto wl = shard(ws, r, tp, w), xl = shard(xs, r, tp, x);
      std::vector<float> outl = res;  // out aliases the residual, as in a decode step
      std::vector<float> dxl(N * Cl), dwl(OC * Cl, 0.0f), dbl(OC, 0.0f);
      row_parallel_forward(outl.data(), xl.data(), wl.data(), b.data(), N, Cl, OC, outl.data(), &comm);
      EXPECT_LT(max_diff(outl.data(), out.data(), out.size()), 1e-5f);
      row_parallel_backward(dxl.data(), dwl.data(), dbl.data(), dout.data(), xl.data(), wl.data(), N, Cl, OC);
      EXPECT_LT(max_diff(dxl.data(), shard(xs, r, tp, dx).data(), dxl.size()), 1e-5f);
      EXPECT_LT(max_diff(dwl.data(), shard(ws, r, tp, dw).data(), dwl.size()), 1e-5f);
      EXPECT_EQ(max_diff(dbl.data(), db.data(), db.size()), 0.0f) << "replicated bias gradient";
    });
  }
}

TEST(ParallelLinear, WithoutAGroupIsExactlyMatmul) {
  const int N = 5, C = 8, OC = 16;
  const auto x = random_vector(N * C, 1), w = random_vector(OC * C, 2), b = random_vector(OC, 3);
  const auto res = random_vector(N * OC, 4), dout = random_vector(N * OC, 5);
  std::vector<float> a(N * OC), c(N * OC);
  matmul_forward(a.data(), x.data(), w.data(), b.data(), N, C, OC, res.data());
  row_parallel_forward(c.data(), x.data(), w.data(), b.data(), N, C, OC, res.data(), nullptr);
  EXPECT_EQ(a, c);
  std::vector<float> dx1(N * C), dx2(N * C), dw1(OC * C, 0.0f), dw2(OC * C, 0.0f);
  matmul_backward(dx1.data(), dw1.data(), nullptr, dout.data(), x.data(), w.data(), N, C, OC);
  column_parallel_backward(dx2.data(), dw2.data(), nullptr, dout.data(), x.data(), w.data(), N, C, OC,
                           nullptr);
  EXPECT_EQ(dx1, dx2);
  EXPECT_EQ(dw1, dw2);
}

// V = 70 real tokens padded to Vp = 96: with tp = 4 the last rank's 24 rows
// are all padding; with tp = 3, rank 2 holds [64, 96), 6 of them real.
constexpr int kV = 70, kVp = 96;

std::vector<int32_t> some_tokens(int n, int vocab, uint64_t seed) {
  Rng rng(seed, 3);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = static_cast<int32_t>(rng.uniform() * vocab) % vocab;
  t[0] = vocab - 1;
  t[1] = 0;
  t[2] = t[3];  // a repeated token
  return t;
}

TEST(VocabParallelEmbedding, ShardsMatchTheEncoder) {
  const int B = 2, T = 5, C = 8;
  const auto wte = random_vector(kVp * C, 1), wpe = random_vector(T * C, 2),
             dout = random_vector(B * T * C, 3);
  const auto tokens = some_tokens(B * T, kV, 4);
  std::vector<float> out(B * T * C), dwte(kVp * C, 0.0f), dwpe(T * C, 0.0f);
  embedding_forward(out.data(), tokens.data(), wte.data(), wpe.data(), B, T, C);
  embedding_backward(dwte.data(), dwpe.data(), dout.data(), tokens.data(), B, T, C);
  for (int tp : {2, 3, 4}) {
    SCOPED_TRACE("tp " + std::to_string(tp));
    const ShardSpec rows{{kVp, C}, 0, 1};
    ThreadGroup(tp).run([&](dist::Communicator& comm) {
      const VocabRange range{comm.rank() * kVp / tp, kVp / tp, kV};
      const auto wl = shard(rows, comm.rank(), tp, wte);
      std::vector<float> outl(B * T * C), dwl(wl.size(), 0.0f), dwpel(T * C, 0.0f);
      vocab_parallel_embedding_forward(outl.data(), tokens.data(), wl.data(), wpe.data(), range, B, T, C,
                                       &comm);
      EXPECT_EQ(outl, out) << "exactly wte + wpe: the other ranks add zeros";
      vocab_parallel_embedding_backward(dwl.data(), dwpel.data(), dout.data(), tokens.data(), range, B, T, C);
      EXPECT_EQ(dwl, shard(rows, comm.rank(), tp, dwte));
      EXPECT_EQ(dwpel, dwpe);
    });
  }
}

TEST(VocabParallelCrossEntropy, ShardsMatchTheFullSoftmax) {
  const int N = 7;
  auto logits = random_vector(N * kVp, 1, 6.0f);
  std::vector<int32_t> targets = some_tokens(N, kV, 2);
  targets[4] = -1;  // ignored row
  std::vector<float> losses(N), lse(N), dlogits(N * kVp);
  softmax_cross_entropy_forward(losses.data(), lse.data(), logits.data(), targets.data(), N, kV, kVp);
  softmax_cross_entropy_backward(dlogits.data(), logits.data(), lse.data(), targets.data(), 0.5f, N, kV, kVp);
  // The padded columns must never be read: poison them.
  for (int n = 0; n < N; ++n)
    for (int v = kV; v < kVp; ++v) logits[n * kVp + v] = n % 2 ? NAN : 1e30f;
  for (int tp : {2, 3, 4}) {
    SCOPED_TRACE("tp " + std::to_string(tp));
    const ShardSpec cols{{N, kVp}, 1, 1};
    ThreadGroup(tp).run([&](dist::Communicator& comm) {
      const VocabRange range{comm.rank() * kVp / tp, kVp / tp, kV};
      auto l = shard(cols, comm.rank(), tp, logits);
      std::vector<float> lossesl(N), lsel(N), stats(2 * N);
      vocab_parallel_cross_entropy_forward(lossesl.data(), lsel.data(), stats.data(), l.data(),
                                           targets.data(), N, range, &comm);
      EXPECT_LT(max_diff(lossesl.data(), losses.data(), N), 1e-5f);
      EXPECT_LT(max_diff(lsel.data(), lse.data(), N), 1e-5f);
      EXPECT_EQ(lossesl[4], 0.0f);
      vocab_parallel_cross_entropy_backward(l.data(), l.data(), lsel.data(), targets.data(), 0.5f, N, range);
      EXPECT_LT(max_diff(l.data(), shard(cols, comm.rank(), tp, dlogits).data(), l.size()), 1e-6f);
    });
  }
}

TEST(VocabParallelCrossEntropy, WithoutAGroupIsExactlyTheFullSoftmax) {
  const int N = 4;
  const auto logits = random_vector(N * kVp, 1, 6.0f);
  const auto targets = some_tokens(N, kV, 2);
  std::vector<float> a(N), b(N), lse_a(N), lse_b(N);
  softmax_cross_entropy_forward(a.data(), lse_a.data(), logits.data(), targets.data(), N, kV, kVp);
  vocab_parallel_cross_entropy_forward(b.data(), lse_b.data(), nullptr, logits.data(), targets.data(), N,
                                       VocabRange{0, kVp, kV}, nullptr);
  EXPECT_EQ(a, b);
  EXPECT_EQ(lse_a, lse_b);
}

}  // namespace
}  // namespace chorus::nn
