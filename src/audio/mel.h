// Log-mel features exactly as Whisper computes them (openai/whisper,
// whisper/audio.py, log_mel_spectrogram), so a Chorus speech model sees the
// same inputs a Whisper model would:
//   1. STFT: torch.stft(audio, n_fft = 400, hop = 160, window = hann_window(400),
//      center = True, pad_mode = "reflect"): the signal is reflect-padded by
//      n_fft / 2 on both sides and frame t covers padded samples
//      [t*hop, t*hop + n_fft), i.e. it is centred on sample t*hop.
//      The window is the periodic Hann window of torch.hann_window:
//      w[i] = 0.5 - 0.5 cos(2 pi i / n_fft).
//   2. magnitudes = stft[..., :-1].abs() ** 2: the power spectrum |X|^2 of the
//      n_fft / 2 + 1 bins; the last frame is dropped, so a clip of n samples gives
//      n_frames = n / hop frames (100 frames per second at 16 kHz).
//   3. mel_spec = filters @ magnitudes with filters = librosa.filters.mel(sr,
//      n_fft, n_mels) (htk = False: Slaney's mel scale, linear below 1 kHz and
//      logarithmic above; norm = "slaney": each triangle scaled by 2 / its width
//      in Hz), over 0 .. sr / 2.
//   4. log_spec = log10(max(mel_spec, 1e-10))
//   5. log_spec = max(log_spec, log_spec.max() - 8.0): a floor 80 dB below the
//      loudest value of the clip (the max is over this clip's frames and bins).
//   6. log_spec = (log_spec + 4.0) / 4.0
// Layout differs from Whisper's (n_mels, n_frames): Chorus writes (n_frames,
// n_mels) row-major, one frame per row, as the encoder's conv stem reads it.
// Whisper pads the audio to 30 s before the STFT when transcribing; Chorus
// computes features of the clip as given (pad the samples first to reproduce
// that).
#pragma once

#include <cstddef>
#include <vector>

namespace chorus::audio {

struct MelConfig {
  int n_mels = 80;          // mel bands (Whisper large-v3 uses 128)
  int n_fft = 400;          // FFT size = window length: 25 ms at 16 kHz
  int hop = 160;            // frame step: 10 ms at 16 kHz
  int sample_rate = 16000;  // Hz
};

// A log-mel feature extractor. Construction builds the window, the filterbank
// and the FFTW plan once; compute() is const and safe to call from many threads
// at once (each call uses its own buffers with fftwf_execute_dft_r2c; the plan
// is made with FFTW_ESTIMATE under a process-wide mutex, since FFTW's planner
// is not thread-safe: other code that plans FFTW transforms on other threads
// at the same time must take the same care).
class LogMel {
 public:
  // Throws chorus::Error on a config with a non-positive field, n_fft odd, or
  // hop > n_fft.
  explicit LogMel(const MelConfig& cfg = MelConfig());
  ~LogMel();
  LogMel(const LogMel&) = delete;
  LogMel& operator=(const LogMel&) = delete;

  const MelConfig& config() const { return cfg_; }
  int n_mels() const { return cfg_.n_mels; }
  // Frames for a clip of n_samples: n_samples / hop (step 2 above).
  int n_frames(size_t n_samples) const;
  // Writes the (n_frames(n), n_mels) features of samples[0, n) to out
  // (row-major). n == 0 or n < hop writes nothing. Clips shorter than
  // n_fft / 2 + 1 samples cannot be reflect-padded (torch.stft refuses them);
  // for those the padding is zeros instead, documented deviation.
  void compute(const float* samples, size_t n, float* out) const;
  // Convenience: returns the features of a whole clip.
  std::vector<float> compute(const std::vector<float>& samples) const;

  // The filterbank, (n_mels, n_fft / 2 + 1) row-major (step 3), and the window.
  const std::vector<float>& filters() const { return filters_; }
  const std::vector<float>& window() const { return window_; }

 private:
  MelConfig cfg_;
  int n_bins_ = 0;                      // n_fft / 2 + 1
  std::vector<float> window_;           // (n_fft)
  std::vector<float> filters_;          // (n_mels, n_bins)
  std::vector<int> band_lo_, band_hi_;  // non-zero bin range [lo, hi) of each filter
  void* plan_ = nullptr;                // fftwf_plan
};

// Slaney mel scale of librosa (htk = False): linear 3 / 200 mel per Hz below
// 1 kHz, logarithmic above (27 mels per factor 6.4). Exposed for tests.
double hz_to_mel(double hz);
double mel_to_hz(double mel);

}  // namespace chorus::audio
