// SpecAugment (Park et al. 2019, "SpecAugment: A Simple Data Augmentation
// Method for Automatic Speech Recognition", arXiv:1904.08779), the frequency-
// and time-masking parts (no time warping), applied in place to one clip's
// log-mel features during training.
//
// Frequency masks: f ~ U{0..F}, f0 ~ U{0..n_mels - f}; bands [f0, f0 + f) of
// every frame are masked. Time masks: the width bound is
// T = min(max_time_width, floor(time_width_fraction * n_frames)) (the paper's
// T and its upper bound p * tau), t ~ U{0..T}, t0 ~ U{0..n_frames - t}; frames
// [t0, t0 + t) are masked in every band. Masks may overlap.
//
// Masked values are set to the mean of the clip's features (computed before
// any masking). The paper sets them to zero on features normalised to zero
// mean, and notes that this is the same as the mean; Chorus's Whisper-style
// features are not zero-mean, so the mean is the equivalent choice.
//
// Deterministic: the masks depend only on the Rng's state and the shape, and
// the draws are made in a fixed order (all frequency masks, then all time
// masks; two draws per mask, even for a zero width).
#pragma once

#include <vector>

#include "core/rng.h"

namespace chorus::audio {

struct SpecAugmentConfig {
  int n_freq_masks = 2;               // LibriSpeech "LD" policy: m_F = 2, F = 27 for 80 bins; 15 is milder
  int freq_width = 15;                // F: maximum masked bands per mask
  int n_time_masks = 2;               // m_T
  double time_width_fraction = 0.05;  // p: a time mask covers at most p of the frames ...
  int max_time_width = 40;            // ... and at most T frames
};

// One mask: [start, start + width) along its axis (bands or frames).
struct SpecMask {
  int start = 0;
  int width = 0;
};

// What spec_augment did (for tests and logging).
struct SpecAugmentMasks {
  std::vector<SpecMask> freq, time;
  float fill = 0.0f;  // the value written into masked cells (the clip's mean)
};

// Masks feats (n_frames, n_mels) row-major in place. Throws chorus::Error on a
// negative count or width, a fraction outside [0, 1], or negative dimensions.
// An empty input is left as it is (no draws are made).
SpecAugmentMasks spec_augment(float* feats, int n_frames, int n_mels, const SpecAugmentConfig& cfg, Rng& rng);

}  // namespace chorus::audio
