#include "nn/positions.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "grad_check.h"

namespace chorus::nn {
namespace {

// Whisper's sinusoids(length, channels) (openai/whisper, model.py), written out:
// log_timescale_increment = log(10000) / (channels // 2 - 1),
// inv_timescales = exp(-increment * arange(channels // 2)),
// scaled_time = arange(length)[:, None] * inv_timescales[None, :],
// cat([sin(scaled_time), cos(scaled_time)], dim=1).
TEST(Positions, SinusoidsMatchWhisperFormula) {
  const int n_pos = 1500, C = 384;
  std::vector<float> pos(static_cast<size_t>(n_pos) * C);
  sinusoidal_positions(pos.data(), n_pos, C);
  const double inc = std::log(10000.0) / (C / 2 - 1);
  for (int t = 0; t < n_pos; t += 7)
    for (int i = 0; i < C / 2; ++i) {
      const double a = t * std::exp(-inc * i);
      ASSERT_NEAR(pos[static_cast<size_t>(t) * C + i], std::sin(a), 1e-7) << t << " " << i;
      ASSERT_NEAR(pos[static_cast<size_t>(t) * C + C / 2 + i], std::cos(a), 1e-7) << t << " " << i;
    }
  // Known values: position 0 is [0...0 | 1...1]; the first channel pair has
  // timescale 1, the last 1/10000.
  for (int i = 0; i < C / 2; ++i) {
    EXPECT_EQ(pos[i], 0.0f);
    EXPECT_EQ(pos[C / 2 + i], 1.0f);
  }
  EXPECT_NEAR(pos[1 * C + 0], std::sin(1.0), 1e-7);
  EXPECT_NEAR(pos[1 * C + C / 2 - 1], std::sin(1e-4), 1e-9);
  EXPECT_NEAR(pos[1000 * static_cast<size_t>(C) + C - 1], std::cos(0.1), 1e-7);
  EXPECT_THROW(sinusoidal_positions(pos.data(), 4, 7), Error);
  EXPECT_THROW(sinusoidal_positions(pos.data(), 4, 2), Error);
}

TEST(Positions, AddBroadcastsOverBatch) {
  const int B = 3, Tn = 5, C = 8;
  std::vector<float> pos(static_cast<size_t>(Tn + 2) * C);
  sinusoidal_positions(pos.data(), Tn + 2, C);
  const auto x0 = chorus::testing::random_vector(static_cast<size_t>(B) * Tn * C, 1);
  std::vector<float> x = x0;
  add_positions(x.data(), pos.data(), B, Tn, C);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < Tn; ++t)
      for (int c = 0; c < C; ++c) {
        const size_t i = (static_cast<size_t>(b) * Tn + t) * C + c;
        ASSERT_EQ(x[i], x0[i] + pos[static_cast<size_t>(t) * C + c]);
      }
  // 16-bit: the fp32 sum rounded once.
  std::vector<bf16> xb(x0.size());
  convert(xb.data(), x0.data(), x0.size());
  std::vector<float> xr(x0.size());
  convert(xr.data(), xb.data(), xb.size());
  add_positions(xb.data(), pos.data(), B, Tn, C);
  for (size_t i = 0; i < xb.size(); ++i)
    ASSERT_EQ(xb[i].bits, from_f32<bf16>(xr[i] + pos[(i / C % Tn) * C + i % C]).bits) << i;
}

}  // namespace
}  // namespace chorus::nn
