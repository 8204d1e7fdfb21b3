// Deterministic distributed sampling of speech clips, with optional language
// balancing. Like the text loader (data/loader.h), the clip of global sample
// index i (counting from the start of training, across epochs) is a pure
// function of (seed, i), so the sampler's whole state is `consumed`, the
// number of global samples used so far, and a run resumes exactly on any
// number of DP ranks.
//
// temperature T = 1: every clip equally likely, exactly as the text loader:
//   clip_at(i) = perm_e[i mod N], e = i / N, perm_e a Fisher-Yates permutation of
//   the N clips drawn with chorus::Rng(seed, e). Each epoch uses every clip once.
//
// temperature T != 1: language-balanced sampling as in multilingual MT and
// XLS-R (Arivazhagan et al. 2019; Conneau et al. 2020, "Unsupervised
// cross-lingual representation learning for speech recognition", sec. 3.2):
//   language l is drawn with probability q_l = p_l^(1/T) / sum_k p_k^(1/T),
//   p_l = (clips of l) / N; T -> infinity (pass +inf) gives every language the
//   same share, T < 1 sharpens towards the big languages. The draw for index i
//   uses its own uniform u_i = hash(seed, i) (splitmix64), inverted through the
//   cumulative q in language order. Index i is then the k-th draw of language l
//   (k = number of j < i that drew l), and takes clip perm_{l,c}[k mod n_l],
//   c = k / n_l, where perm_{l,c} is a Fisher-Yates permutation of l's clips
//   drawn with Rng(seed ^ 0x5be3c14f9a1d7e25, (l << 40) | c): within a language,
//   every clip is used once before any repeats.
//   Computing k needs the draws of all earlier indices; the sampler caches the
//   per-language counts every 8192 indices (lazily, under a mutex) and after
//   the last index served, so consecutive batches cost only their own draws
//   and a jump costs at most 8192 draws plus any indices not yet cached.
//
// Global batch b of size G is indices [b*G, (b+1)*G); DP rank r of dp takes the
// contiguous slice [b*G + r*G/dp, b*G + (r+1)*G/dp) (G % dp == 0).
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "data/speech_shard.h"

namespace chorus::data {

class SpeechSampler {
 public:
  // Samples the clips of `data` (only its per-clip languages are kept; `data`
  // need not outlive the sampler). temperature: > 0, may be +infinity.
  SpeechSampler(const SpeechDataset& data, uint64_t seed, double temperature);
  // The same from per-clip language ids (0-based, dense or not; tests).
  SpeechSampler(const std::vector<uint16_t>& clip_lang, uint64_t seed, double temperature);

  size_t n_clips() const { return clip_lang_.size(); }
  double temperature() const { return temperature_; }
  // q_l for each language id (0 for ids without clips); p_l when T = 1.
  const std::vector<double>& language_probabilities() const { return q_; }

  // The clip of global sample index i: the pure function described above.
  // Thread-safe.
  size_t clip_at(uint64_t global_index) const;

  // Fills out[0, global_batch / dp) with dp_rank's slice of the global batch
  // that starts after `consumed` samples (the clips of indices
  // consumed + dp_rank * G/dp + j). Throws chorus::Error unless global_batch > 0,
  // dp > 0, 0 <= dp_rank < dp and global_batch % dp == 0. Thread-safe.
  void batch_indices(uint64_t consumed, int global_batch, int dp_rank, int dp, size_t* out) const;

 private:
  static constexpr uint64_t kCheckpointEvery = 8192;
  uint16_t draw_language(uint64_t i) const;
  // Per-language draw counts of indices [0, i) (balanced mode); lock held.
  std::vector<uint64_t> counts_before(uint64_t i) const;
  size_t clip_in_language(uint16_t l, uint64_t k) const;  // lock held
  size_t clip_in_epoch(uint64_t i) const;                 // lock held

  uint64_t seed_;
  double temperature_;
  bool balanced_;
  std::vector<uint16_t> clip_lang_;
  std::vector<std::vector<uint32_t>> lang_clips_;  // clips of each language id, ascending
  std::vector<double> q_;                          // probability of each language id
  std::vector<double> cdf_;                        // cumulative q_, last entry 1
  std::vector<uint16_t> cdf_lang_;                 // language id of each cdf_ entry

  // Caches (results never depend on them).
  mutable std::mutex mu_;
  mutable std::vector<std::vector<uint64_t>> checkpoints_;  // counts before index m * kCheckpointEvery
  mutable uint64_t cursor_index_ = UINT64_MAX;              // counts before the last index served
  mutable std::vector<uint64_t> cursor_counts_;
  mutable uint64_t perm_epoch_ = UINT64_MAX;
  mutable std::vector<uint32_t> perm_;
  mutable std::vector<uint64_t> lang_cycle_;  // cycle of lang_perm_[l]
  mutable std::vector<std::vector<uint32_t>> lang_perm_;
};

// Length bucketing on top of a SpeechSampler, so that a batch's clips have
// similar lengths and little of it is padding. The global batches come in
// pools of `pool_batches`: pool p holds the clips of global sample indices
// [p*P, (p+1)*P), P = pool_batches x G, as the sampler gives them. They are
// sorted by length (ties by position in the pool) and cut into pool_batches
// batches of G consecutive clips, which are taken in the order of a
// permutation drawn with Rng(seed ^ 0x6275636b6574, p). So the clips used are
// exactly the sampler's (each pool is a reordering of P of its indices), and
// global batch b is still a pure function of (seed, b): resume is exact and
// DP ranks take contiguous slices of the same global batch as without
// bucketing. pool_batches 1 = the sampler's order.
class LengthBucketer {
 public:
  // lengths[c]: clip c's length (any unit; samples). pool_batches >= 1.
  LengthBucketer(const SpeechSampler& sampler, std::vector<uint32_t> lengths, uint64_t seed, int pool_batches);
  int pool_batches() const { return pool_batches_; }
  // As SpeechSampler::batch_indices; `consumed` must be a multiple of global_batch.
  void batch_indices(uint64_t consumed, int global_batch, int dp_rank, int dp, size_t* out);

 private:
  const SpeechSampler& sampler_;
  std::vector<uint32_t> lengths_;
  uint64_t seed_;
  int pool_batches_;
  // Cache: the last pool's batches in the order they are taken.
  uint64_t pool_ = UINT64_MAX;
  int pool_g_ = 0;
  std::vector<size_t> pool_clips_;  // pool_batches_ x G
};

}  // namespace chorus::data
