#include "audio/mel.h"

#include <fftw3.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <memory>
#include <mutex>

#include "core/error.h"

namespace chorus::audio {

namespace {

// FFTW's planner (and plan destruction) is not thread-safe; execution is.
std::mutex& fftw_planner_mutex() {
  static std::mutex m;
  return m;
}

// FFT buffers. FFTW requires the arrays passed to fftwf_execute_dft_r2c to
// have the alignment of those the plan was made with; every buffer here is
// 64-byte aligned (beyond any SIMD requirement of FFTW). std::aligned_alloc
// rather than fftwf_malloc, which FFTW does not document as thread-safe.
struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
template <class T>
std::unique_ptr<T, FreeDeleter> aligned_array(size_t n) {
  const size_t bytes = (n * sizeof(T) + 63) / 64 * 64;
  return std::unique_ptr<T, FreeDeleter>(static_cast<T*>(std::aligned_alloc(64, bytes)));
}

// librosa.filters.mel constants (htk = False), from Slaney's Auditory Toolbox.
constexpr double kFSp = 200.0 / 3.0;  // Hz per mel below 1 kHz
constexpr double kMinLogHz = 1000.0;
constexpr double kMinLogMel = kMinLogHz / kFSp;  // 15
const double kLogStep = std::log(6.4) / 27.0;

}  // namespace

double hz_to_mel(double hz) {
  if (hz < kMinLogHz) return hz / kFSp;
  return kMinLogMel + std::log(hz / kMinLogHz) / kLogStep;
}

double mel_to_hz(double mel) {
  if (mel < kMinLogMel) return mel * kFSp;
  return kMinLogHz * std::exp(kLogStep * (mel - kMinLogMel));
}

LogMel::LogMel(const MelConfig& cfg) : cfg_(cfg) {
  CHORUS_CHECK(cfg.n_mels > 0, "LogMel: n_mels: expected > 0, got %d", cfg.n_mels);
  CHORUS_CHECK(cfg.n_fft > 0 && cfg.n_fft % 2 == 0, "LogMel: n_fft: expected a positive even number, got %d",
               cfg.n_fft);
  CHORUS_CHECK(cfg.hop > 0 && cfg.hop <= cfg.n_fft, "LogMel: hop: expected 1..n_fft (%d), got %d", cfg.n_fft,
               cfg.hop);
  CHORUS_CHECK(cfg.sample_rate > 0, "LogMel: sample_rate: expected > 0, got %d", cfg.sample_rate);
  const int n_fft = cfg.n_fft;
  n_bins_ = n_fft / 2 + 1;

  // torch.hann_window(n_fft) (periodic=True).
  window_.resize(n_fft);
  for (int i = 0; i < n_fft; ++i)
    window_[i] = static_cast<float>(0.5 - 0.5 * std::cos(2.0 * M_PI * i / n_fft));

  // librosa.filters.mel(sr, n_fft, n_mels, fmin=0, fmax=sr/2, htk=False,
  // norm="slaney"), computed in double and stored as float32 as librosa does.
  const int n_mels = cfg.n_mels;
  const double sr = cfg.sample_rate;
  std::vector<double> fft_freqs(n_bins_);
  for (int k = 0; k < n_bins_; ++k)
    fft_freqs[k] = k * (sr / 2.0) / (n_bins_ - 1);  // np.linspace(0, sr/2, n_bins)
  std::vector<double> mel_f(n_mels + 2);
  const double mel_max = hz_to_mel(sr / 2.0);
  for (int i = 0; i < n_mels + 2; ++i) mel_f[i] = mel_to_hz(mel_max * i / (n_mels + 1));
  filters_.assign(static_cast<size_t>(n_mels) * n_bins_, 0.0f);
  band_lo_.assign(n_mels, 0);
  band_hi_.assign(n_mels, 0);
  for (int m = 0; m < n_mels; ++m) {
    const double lo = mel_f[m], mid = mel_f[m + 1], hi = mel_f[m + 2];
    const double enorm = 2.0 / (hi - lo);
    int first = n_bins_, last = -1;
    for (int k = 0; k < n_bins_; ++k) {
      const double lower = (fft_freqs[k] - lo) / (mid - lo);
      const double upper = (hi - fft_freqs[k]) / (hi - mid);
      const double w = std::max(0.0, std::min(lower, upper)) * enorm;
      filters_[static_cast<size_t>(m) * n_bins_ + k] = static_cast<float>(w);
      if (w > 0.0) {
        first = std::min(first, k);
        last = k;
      }
    }
    band_lo_[m] = last < 0 ? 0 : first;
    band_hi_[m] = last < 0 ? 0 : last + 1;
  }

  auto in = aligned_array<float>(n_fft);
  auto out = aligned_array<fftwf_complex>(n_bins_);
  CHORUS_CHECK(in && out, "LogMel: cannot allocate FFT buffers of %d samples", n_fft);
  {
    std::lock_guard<std::mutex> lock(fftw_planner_mutex());
    plan_ = fftwf_plan_dft_r2c_1d(n_fft, in.get(), out.get(), FFTW_ESTIMATE);
  }
  CHORUS_CHECK(plan_ != nullptr, "LogMel: FFTW could not plan a real FFT of size %d", n_fft);
}

LogMel::~LogMel() {
  if (!plan_) return;
  std::lock_guard<std::mutex> lock(fftw_planner_mutex());
  fftwf_destroy_plan(static_cast<fftwf_plan>(plan_));
}

int LogMel::n_frames(size_t n_samples) const {
  return static_cast<int>(n_samples / static_cast<size_t>(cfg_.hop));
}

void LogMel::compute(const float* samples, size_t n, float* out) const {
  const int n_frames_out = n_frames(n);
  if (n_frames_out == 0) return;
  const int n_fft = cfg_.n_fft, hop = cfg_.hop, n_mels = cfg_.n_mels;
  const int64_t pad = n_fft / 2;
  const int64_t len = static_cast<int64_t>(n);
  // Step 1: centre padding. torch's reflect mode mirrors about the first / last
  // sample without repeating it (x[-i] = x[i], x[n-1+i] = x[n-1-i]); it needs
  // pad < n. Shorter clips get zeros instead (see the header).
  const bool reflect = pad < len;
  auto padded = [&](int64_t i) -> float {
    int64_t s = i - pad;
    if (s < 0) {
      if (!reflect) return 0.0f;
      s = -s;
    } else if (s >= len) {
      if (!reflect) return 0.0f;
      s = 2 * (len - 1) - s;
    }
    return samples[s];
  };

  auto frame = aligned_array<float>(n_fft);
  auto spec = aligned_array<fftwf_complex>(n_bins_);
  CHORUS_CHECK(frame && spec, "LogMel: cannot allocate FFT buffers of %d samples", n_fft);
  std::vector<float> power(n_bins_);
  const fftwf_plan plan = static_cast<fftwf_plan>(plan_);
  float max_log = -std::numeric_limits<float>::infinity();
  for (int t = 0; t < n_frames_out; ++t) {
    const int64_t start = static_cast<int64_t>(t) * hop;
    float* f = frame.get();
    if (start >= pad && start + n_fft - pad <= len) {
      const float* src = samples + (start - pad);
      for (int i = 0; i < n_fft; ++i) f[i] = src[i] * window_[i];
    } else {
      for (int i = 0; i < n_fft; ++i) f[i] = padded(start + i) * window_[i];
    }
    fftwf_execute_dft_r2c(plan, f, spec.get());
    // Step 2: power spectrum.
    for (int k = 0; k < n_bins_; ++k) {
      const float re = spec.get()[k][0], im = spec.get()[k][1];
      power[k] = re * re + im * im;
    }
    // Steps 3-4: mel filterbank, log10 with the 1e-10 floor.
    float* row = out + static_cast<size_t>(t) * n_mels;
    for (int m = 0; m < n_mels; ++m) {
      const float* w = filters_.data() + static_cast<size_t>(m) * n_bins_;
      float acc = 0.0f;
      for (int k = band_lo_[m]; k < band_hi_[m]; ++k) acc += w[k] * power[k];
      const float v = std::log10(std::max(acc, 1e-10f));
      row[m] = v;
      max_log = std::max(max_log, v);
    }
  }
  // Steps 5-6: floor at (clip max - 8), then (x + 4) / 4.
  const float floor = max_log - 8.0f;
  const size_t total = static_cast<size_t>(n_frames_out) * n_mels;
  for (size_t i = 0; i < total; ++i) out[i] = (std::max(out[i], floor) + 4.0f) / 4.0f;
}

std::vector<float> LogMel::compute(const std::vector<float>& samples) const {
  std::vector<float> out(static_cast<size_t>(n_frames(samples.size())) * cfg_.n_mels);
  compute(samples.data(), samples.size(), out.data());
  return out;
}

}  // namespace chorus::audio
