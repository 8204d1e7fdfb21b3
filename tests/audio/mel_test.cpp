// Log-mel features against an independent double-precision reference written
// here: explicit reflect padding, a direct O(N^2) DFT, the Slaney mel
// filterbank from its definition, and Whisper's normalisation. Also frame
// counts, where a tone's energy lands, silence, short clips, thread safety.
#include "audio/mel.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <thread>
#include <vector>

#include "core/error.h"

using namespace chorus::audio;

namespace {

// --- the reference, all double ------------------------------------------------------

// Slaney's mel scale (Auditory Toolbox; librosa htk=False): 200/3 Hz per mel
// up to 1 kHz, then 27 mels per octave-ish factor of 6.4.
double ref_mel(double f) {
  return f <= 1000.0 ? 3.0 * f / 200.0 : 15.0 + 27.0 * std::log(f / 1000.0) / std::log(6.4);
}
double ref_hz(double m) { return m <= 15.0 ? 200.0 * m / 3.0 : 1000.0 * std::pow(6.4, (m - 15.0) / 27.0); }

// Filter m: a triangle rising from edge[m] to edge[m+1] and falling to
// edge[m+2] (Hz), scaled to area-normalise it: 2 / (edge[m+2] - edge[m]).
std::vector<std::vector<double>> ref_filters(int n_mels, int n_fft, double sr) {
  const int n_bins = n_fft / 2 + 1;
  std::vector<double> edge(n_mels + 2);
  for (int i = 0; i < n_mels + 2; ++i) edge[i] = ref_hz(ref_mel(sr / 2) * i / (n_mels + 1));
  std::vector<std::vector<double>> w(n_mels, std::vector<double>(n_bins, 0.0));
  for (int m = 0; m < n_mels; ++m) {
    for (int k = 0; k < n_bins; ++k) {
      const double f = sr * k / n_fft;
      double v = 0;
      if (f > edge[m] && f <= edge[m + 1])
        v = (f - edge[m]) / (edge[m + 1] - edge[m]);
      else if (f > edge[m + 1] && f < edge[m + 2])
        v = (edge[m + 2] - f) / (edge[m + 2] - edge[m + 1]);
      w[m][k] = v * 2.0 / (edge[m + 2] - edge[m]);
    }
  }
  return w;
}

// Whisper's log_mel_spectrogram in double, (n_frames, n_mels).
std::vector<double> ref_log_mel(const std::vector<float>& x, int n_mels = 80, int n_fft = 400, int hop = 160,
                                double sr = 16000) {
  const int pad = n_fft / 2, n = static_cast<int>(x.size());
  // np.pad(x, pad, mode="reflect") spelled out.
  std::vector<double> p;
  for (int i = pad; i >= 1; --i) p.push_back(x[i]);
  for (float v : x) p.push_back(v);
  for (int i = n - 2; i >= n - 1 - pad; --i) p.push_back(x[i]);
  const int n_frames = n / hop;  // 1 + n / hop STFT frames, the last dropped
  const auto w = ref_filters(n_mels, n_fft, sr);
  const int n_bins = n_fft / 2 + 1;
  std::vector<double> out(static_cast<size_t>(n_frames) * n_mels);
  std::vector<double> power(n_bins);
  for (int t = 0; t < n_frames; ++t) {
    for (int k = 0; k < n_bins; ++k) {
      double re = 0, im = 0;
      for (int i = 0; i < n_fft; ++i) {
        const double win = 0.5 * (1 - std::cos(2 * M_PI * i / n_fft));  // periodic Hann
        const double v = p[t * hop + i] * win;
        re += v * std::cos(2 * M_PI * k * i / n_fft);
        im -= v * std::sin(2 * M_PI * k * i / n_fft);
      }
      power[k] = re * re + im * im;
    }
    for (int m = 0; m < n_mels; ++m) {
      double s = 0;
      for (int k = 0; k < n_bins; ++k) s += w[m][k] * power[k];
      out[t * n_mels + m] = std::log10(std::max(s, 1e-10));
    }
  }
  const double mx = *std::max_element(out.begin(), out.end());
  for (double& v : out) v = (std::max(v, mx - 8.0) + 4.0) / 4.0;
  return out;
}

std::vector<float> tones(std::initializer_list<std::pair<double, double>> hz_amp, size_t n,
                         double sr = 16000) {
  std::vector<float> x(n, 0.0f);
  for (size_t i = 0; i < n; ++i) {
    double v = 0;
    int j = 0;
    for (auto [hz, amp] : hz_amp) v += amp * std::sin(2 * M_PI * hz * i / sr + 0.7 * j++);
    x[i] = static_cast<float>(v);
  }
  return x;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
  return worst;
}

}  // namespace

TEST(LogMel, FilterbankMatchesTheSlaneyDefinition) {
  LogMel mel;
  const auto ref = ref_filters(80, 400, 16000);
  double worst = 0;
  for (int m = 0; m < 80; ++m)
    for (int k = 0; k < 201; ++k) worst = std::max(worst, std::abs(mel.filters()[m * 201 + k] - ref[m][k]));
  EXPECT_LT(worst, 1e-7);
  // Whisper's assets/mel_filters.npz (mel_80, from librosa): filter 0, bin 1.
  EXPECT_NEAR(mel.filters()[0 * 201 + 1], 0.02486259, 1e-7);
  // Periodic Hann: w[0] = 0, w[n/2] = 1, symmetric about n/2.
  EXPECT_EQ(mel.window()[0], 0.0f);
  EXPECT_FLOAT_EQ(mel.window()[200], 1.0f);
  EXPECT_FLOAT_EQ(mel.window()[100], mel.window()[300]);
  for (double f : {0.0, 500.0, 1000.0, 1500.0, 7999.0}) EXPECT_NEAR(mel_to_hz(hz_to_mel(f)), f, 1e-9);
  EXPECT_NEAR(hz_to_mel(1000.0), 15.0, 1e-12);
}

TEST(LogMel, SineAndTwoTonesMatchTheDoubleReference) {
  LogMel mel;
  for (const auto& x : {tones({{1000.0, 0.5}}, 16000), tones({{440.0, 0.3}, {3000.0, 0.2}}, 12345),
                        tones({{7000.0, 0.9}}, 4000)}) {
    const std::vector<float> f = mel.compute(x);
    ASSERT_EQ(f.size(), static_cast<size_t>(x.size() / 160) * 80);
    EXPECT_LT(max_abs_diff(f, ref_log_mel(x)), 1e-3);
  }
  // Noise exercises every bin.
  std::mt19937 gen(5);
  std::normal_distribution<float> nd(0.0f, 0.1f);
  std::vector<float> noise(8000);
  for (float& v : noise) v = nd(gen);
  EXPECT_LT(max_abs_diff(mel.compute(noise), ref_log_mel(noise)), 1e-3);
}

TEST(LogMel, Whisper128MelsMatchesToo) {
  MelConfig cfg;
  cfg.n_mels = 128;
  LogMel mel(cfg);
  const auto x = tones({{300.0, 0.4}, {5000.0, 0.1}}, 6400);
  EXPECT_LT(max_abs_diff(mel.compute(x), ref_log_mel(x, 128)), 1e-3);
}

TEST(LogMel, FrameCount) {
  LogMel mel;
  EXPECT_EQ(mel.n_frames(0), 0);
  EXPECT_EQ(mel.n_frames(159), 0);
  EXPECT_EQ(mel.n_frames(160), 1);
  EXPECT_EQ(mel.n_frames(16000), 100);  // 100 frames per second
  EXPECT_EQ(mel.n_frames(16159), 100);
  EXPECT_EQ(mel.n_frames(16160), 101);
  EXPECT_EQ(mel.n_frames(480000), 3000);  // Whisper's 30 s window
}

TEST(LogMel, PeakBandIsWhereTheToneMaps) {
  LogMel mel;
  const auto filt = ref_filters(80, 400, 16000);
  const double spacing = ref_mel(8000.0) / 81;  // mels between band centres
  for (double hz : {240.0, 250.0, 1000.0, 2000.0, 4400.0, 6000.0}) {
    SCOPED_TRACE(hz);
    const auto f = mel.compute(tones({{hz, 0.5}}, 8000));
    const int t = 25;  // a frame in the middle
    const auto row = f.begin() + t * 80;
    const int peak = static_cast<int>(std::max_element(row, row + 80) - row);
    // The band whose (area-normalised) triangle weighs the tone's nearest FFT
    // bin most, or a neighbour (the Hann main lobe spans 3 bins).
    const int bin = static_cast<int>(std::lround(hz / 40.0));
    int expect = 0;
    for (int m = 1; m < 80; ++m)
      if (filt[m][bin] > filt[expect][bin]) expect = m;
    EXPECT_LE(std::abs(peak - expect), 1) << "peak band " << peak << ", expected about " << expect;
    // The peak band's centre is within one band spacing of the tone on the mel scale.
    EXPECT_LT(std::abs(spacing * (peak + 1) - ref_mel(hz)), spacing) << "peak band " << peak;
  }
}

TEST(LogMel, SilenceAndVeryShortClips) {
  LogMel mel;
  // Silence: log10(1e-10) = -10 everywhere, (-10 + 4) / 4 = -1.5.
  for (float v : mel.compute(std::vector<float>(3200, 0.0f))) ASSERT_FLOAT_EQ(v, -1.5f);
  // Shorter than n_fft / 2 + 1 = 201: zero padding instead of reflection.
  std::vector<float> x = tones({{1000.0, 0.5}}, 180);
  const auto f = mel.compute(x);
  ASSERT_EQ(f.size(), 80u);
  for (float v : f) ASSERT_TRUE(std::isfinite(v));
  EXPECT_GT(*std::max_element(f.begin(), f.end()), -1.5f);
  EXPECT_TRUE(mel.compute(std::vector<float>(100, 0.1f)).empty());
  // Exactly 201 samples is the shortest reflect-padded clip: matches the reference.
  x = tones({{1000.0, 0.5}}, 201);
  EXPECT_LT(max_abs_diff(mel.compute(x), ref_log_mel(x)), 1e-3);
}

TEST(LogMel, ConcurrentComputeGivesTheSerialResult) {
  const LogMel mel;
  std::vector<std::vector<float>> clips;
  for (int i = 0; i < 8; ++i)
    clips.push_back(tones({{200.0 + 300 * i, 0.4}, {5000.0 - 200 * i, 0.1}}, 16000 + 77 * i));
  std::vector<std::vector<float>> serial, parallel(clips.size());
  for (const auto& c : clips) serial.push_back(mel.compute(c));
  std::vector<std::thread> threads;
  for (int rep = 0; rep < 3; ++rep) {
    threads.clear();
    for (size_t i = 0; i < clips.size(); ++i)
      threads.emplace_back([&, i] { parallel[i] = mel.compute(clips[i]); });
    for (auto& th : threads) th.join();
    for (size_t i = 0; i < clips.size(); ++i) ASSERT_EQ(parallel[i], serial[i]) << i;
  }
  // Many extractors constructed and destroyed concurrently (planner under a mutex).
  threads.clear();
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&] {
      for (int j = 0; j < 20; ++j) {
        LogMel m;
        EXPECT_EQ(m.compute(clips[0]), serial[0]);
      }
    });
  for (auto& th : threads) th.join();
}

TEST(LogMel, RefusesBadConfigs) {
  MelConfig c;
  c.n_fft = 401;
  EXPECT_THROW(LogMel{c}, chorus::Error);
  c = MelConfig();
  c.hop = 0;
  EXPECT_THROW(LogMel{c}, chorus::Error);
  c = MelConfig();
  c.n_mels = 0;
  EXPECT_THROW(LogMel{c}, chorus::Error);
}
