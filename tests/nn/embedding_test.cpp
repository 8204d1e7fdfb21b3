#include "nn/embedding.h"

#include <gtest/gtest.h>

#include "grad_check.h"

namespace chorus::nn {
namespace {

using chorus::testing::expect_grad_close;
using chorus::testing::random_vector;
using chorus::testing::weighted_sum;

TEST(Embedding, ForwardAndBackwardMatchFiniteDifferences) {
  const int B = 3, T = 5, C = 7, V = 6, ctx = 8;
  // Repeated tokens on purpose: their gradients must add up.
  std::vector<int32_t> tokens = {0, 1, 2, 1, 1, 5, 5, 0, 3, 3, 4, 0, 2, 2, 1};
  auto wte = random_vector(V * C, 1), wpe = random_vector(ctx * C, 2), wout = random_vector(B * T * C, 3);
  std::vector<float> out(B * T * C);
  auto loss = [&] {
    embedding_forward(out.data(), tokens.data(), wte.data(), wpe.data(), B, T, C);
    return weighted_sum(out.data(), wout.data(), out.size());
  };
  loss();
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      for (int c = 0; c < C; ++c)
        EXPECT_EQ(out[(b * T + t) * C + c], wte[tokens[b * T + t] * C + c] + wpe[t * C + c]);
  std::vector<float> dwte(V * C, 1.0f), dwpe(ctx * C, 1.0f);  // accumulate onto 1
  embedding_backward(dwte.data(), dwpe.data(), wout.data(), tokens.data(), B, T, C);
  for (auto& g : dwte) g -= 1.0f;
  for (auto& g : dwpe) g -= 1.0f;
  expect_grad_close("dwte", wte.data(), dwte.data(), wte.size(), loss);
  expect_grad_close("dwpe", wpe.data(), dwpe.data(), wpe.size(), loss);
  // Rows of wpe past T get no gradient.
  for (int i = T * C; i < ctx * C; ++i) EXPECT_EQ(dwpe[i], 0.0f);
}

TEST(Embedding, ParallelBackwardMatchesSerialSum) {
  const int B = 4, T = 64, C = 200, V = 10;
  std::vector<int32_t> tokens(B * T);
  for (int i = 0; i < B * T; ++i) tokens[i] = (i * 7) % V;
  auto dout = random_vector(B * T * C, 1);
  std::vector<float> dwte(V * C, 0.0f), dwpe(T * C, 0.0f);
  embedding_backward(dwte.data(), dwpe.data(), dout.data(), tokens.data(), B, T, C);
  for (int v = 0; v < V; ++v) {
    for (int c = 0; c < C; ++c) {
      double s = 0.0;
      for (int i = 0; i < B * T; ++i)
        if (tokens[i] == v) s += dout[i * C + c];
      EXPECT_NEAR(dwte[v * C + c], s, 1e-5);
    }
  }
  for (int t = 0; t < T; ++t) {
    for (int c = 0; c < C; ++c) {
      double s = 0.0;
      for (int b = 0; b < B; ++b) s += dout[(b * T + t) * C + c];
      EXPECT_NEAR(dwpe[t * C + c], s, 1e-5);
    }
  }
}

}  // namespace
}  // namespace chorus::nn
