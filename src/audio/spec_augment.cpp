#include "audio/spec_augment.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace chorus::audio {

SpecAugmentMasks spec_augment(float* feats, int n_frames, int n_mels, const SpecAugmentConfig& cfg,
                              Rng& rng) {
  CHORUS_CHECK(n_frames >= 0 && n_mels >= 0, "spec_augment: shape: expected non-negative, got (%d, %d)",
               n_frames, n_mels);
  CHORUS_CHECK(cfg.n_freq_masks >= 0 && cfg.freq_width >= 0,
               "spec_augment: n_freq_masks / freq_width: expected >= 0, got %d / %d", cfg.n_freq_masks,
               cfg.freq_width);
  CHORUS_CHECK(cfg.n_time_masks >= 0 && cfg.max_time_width >= 0,
               "spec_augment: n_time_masks / max_time_width: expected >= 0, got %d / %d", cfg.n_time_masks,
               cfg.max_time_width);
  CHORUS_CHECK(cfg.time_width_fraction >= 0.0 && cfg.time_width_fraction <= 1.0,
               "spec_augment: time_width_fraction: expected a value in [0, 1], got %g",
               cfg.time_width_fraction);
  SpecAugmentMasks masks;
  if (n_frames == 0 || n_mels == 0) return masks;

  const size_t total = static_cast<size_t>(n_frames) * static_cast<size_t>(n_mels);
  double sum = 0.0;
  for (size_t i = 0; i < total; ++i) sum += feats[i];
  masks.fill = static_cast<float>(sum / static_cast<double>(total));

  const int F = std::min(cfg.freq_width, n_mels);
  for (int i = 0; i < cfg.n_freq_masks; ++i) {
    const int f = static_cast<int>(rng.below(static_cast<uint64_t>(F) + 1));
    const int f0 = static_cast<int>(rng.below(static_cast<uint64_t>(n_mels - f) + 1));
    masks.freq.push_back({f0, f});
    for (int t = 0; t < n_frames; ++t)
      std::fill_n(feats + static_cast<size_t>(t) * n_mels + f0, f, masks.fill);
  }
  const int T =
      std::min(cfg.max_time_width,
               static_cast<int>(std::floor(cfg.time_width_fraction * static_cast<double>(n_frames))));
  for (int i = 0; i < cfg.n_time_masks; ++i) {
    const int t = static_cast<int>(rng.below(static_cast<uint64_t>(T) + 1));
    const int t0 = static_cast<int>(rng.below(static_cast<uint64_t>(n_frames - t) + 1));
    masks.time.push_back({t0, t});
    std::fill_n(feats + static_cast<size_t>(t0) * n_mels, static_cast<size_t>(t) * n_mels, masks.fill);
  }
  return masks;
}

}  // namespace chorus::audio
