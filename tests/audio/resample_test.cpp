// The band-limited resampler against analytic sines: tones in the passband
// keep their amplitude (within 1 %), frequency and phase at common rates to and
// from 16 kHz; tones above the target's Nyquist frequency are removed (> 40 dB);
// identity, lengths and refusals.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "audio/wav.h"
#include "core/error.h"

using namespace chorus::audio;

namespace {

std::vector<float> tone(int rate, double hz, double amp, double seconds, double phase = 0.0) {
  const size_t n = static_cast<size_t>(std::llround(rate * seconds));
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = static_cast<float>(amp * std::sin(2 * M_PI * hz * i / rate + phase));
  return x;
}

// Largest |y[k] - amp sin(2 pi hz k / rate + phase)| away from the edges
// (edge = 1 % of the output plus 64 samples, where the zero extension shows).
double worst_error(const std::vector<float>& y, int rate, double hz, double amp, double phase = 0.0) {
  const size_t edge = y.size() / 100 + 64;
  double worst = 0;
  for (size_t k = edge; k + edge < y.size(); ++k)
    worst = std::max(worst, std::abs(y[k] - amp * std::sin(2 * M_PI * hz * k / rate + phase)));
  return worst;
}

double rms_middle(const std::vector<float>& y) {
  const size_t edge = y.size() / 10;
  double s = 0;
  for (size_t k = edge; k + edge < y.size(); ++k) s += static_cast<double>(y[k]) * y[k];
  return std::sqrt(s / static_cast<double>(y.size() - 2 * edge));
}

}  // namespace

TEST(Resample, SineThroughKeepsAmplitudeAndFrequency) {
  struct Case {
    int from;
    double hz;
  };
  for (const Case c :
       {Case{44100, 1000}, Case{8000, 1000}, Case{48000, 1000}, Case{22050, 440}, Case{11025, 3000},
        Case{8000, 3000}, Case{44100, 6500}, Case{32000, 150}, Case{16001, 1000},
        Case{96001, 1000} /* a phase table too big to keep: computed per output */}) {
    SCOPED_TRACE(std::to_string(c.from) + " Hz, " + std::to_string(c.hz) + " Hz tone");
    const std::vector<float> x = tone(c.from, c.hz, 0.8, 0.5, 0.4);
    const std::vector<float> y = resample(x, c.from, 16000);
    EXPECT_EQ(y.size(), static_cast<size_t>(std::ceil(x.size() * 16000.0 / c.from)));
    // 1 % of the amplitude, everywhere in the middle: amplitude, frequency
    // and phase (no delay) all have to be right.
    EXPECT_LT(worst_error(y, 16000, c.hz, 0.8, 0.4), 0.008);
  }
  // And from 16 kHz to other rates.
  for (int to : {8000, 44100, 22050}) {
    SCOPED_TRACE(to);
    const std::vector<float> y = resample(tone(16000, 1000, 0.8, 0.5), 16000, to);
    EXPECT_LT(worst_error(y, to, 1000, 0.8), 0.008);
  }
}

TEST(Resample, RemovesTonesAboveTheTargetNyquist) {
  struct Case {
    int from;
    double hz;
  };
  // 8.5 - 20 kHz: all above 16 kHz's Nyquist of 8 kHz (they would alias to
  // 7.5 - 4 kHz without filtering).
  for (const Case c : {Case{44100, 8500}, Case{44100, 10000}, Case{44100, 12000}, Case{48000, 9000},
                       Case{48000, 20000}, Case{22050, 9000}}) {
    SCOPED_TRACE(std::to_string(c.from) + " Hz, " + std::to_string(c.hz) + " Hz tone");
    const std::vector<float> x = tone(c.from, c.hz, 1.0, 0.5);
    const std::vector<float> y = resample(x, c.from, 16000);
    const double atten_db = 20 * std::log10(rms_middle(x) / rms_middle(y));
    EXPECT_GT(atten_db, 40.0);
  }
}

TEST(Resample, IdentityLengthsAndRefusals) {
  const std::vector<float> x = tone(16000, 123, 0.5, 0.01);
  EXPECT_EQ(resample(x, 16000, 16000), x);  // exact copy
  EXPECT_TRUE(resample({}, 44100, 16000).empty());
  EXPECT_EQ(resample(std::vector<float>(441), 44100, 16000).size(), 160u);
  EXPECT_EQ(resample(std::vector<float>(442), 44100, 16000).size(), 161u);
  EXPECT_EQ(resample(std::vector<float>(1), 8000, 16000).size(), 2u);
  // DC passes with unit gain.
  const std::vector<float> dc = resample(std::vector<float>(4410, 0.25f), 44100, 16000);
  for (size_t k = 200; k + 200 < dc.size(); ++k) ASSERT_NEAR(dc[k], 0.25f, 1e-5) << k;
  EXPECT_THROW(resample(x, 0, 16000), chorus::Error);
  EXPECT_THROW(resample(x, 16000, -1), chorus::Error);
}
