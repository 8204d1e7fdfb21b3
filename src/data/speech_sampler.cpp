#include "data/speech_sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/error.h"
#include "core/rng.h"

namespace chorus::data {

namespace {

constexpr uint64_t kLangDrawKey = 0x243F6A8885A308D3ull;  // seeds the per-index language draws
constexpr uint64_t kLangPermKey = 0x5be3c14f9a1d7e25ull;  // seeds the per-language permutations

// Fisher-Yates (Knuth, TAOCP vol. 2, Algorithm P), from the last position down,
// as data/loader.cpp does.
void shuffle(std::vector<uint32_t>& v, Rng& rng) {
  for (uint64_t i = v.size(); i > 1; --i) {
    const uint64_t j = rng.below(i);
    std::swap(v[i - 1], v[j]);
  }
}

std::vector<uint16_t> clip_languages(const SpeechDataset& data) {
  std::vector<uint16_t> out(data.size());
  for (size_t i = 0; i < data.size(); ++i) out[i] = data.lang_id(i);
  return out;
}

}  // namespace

SpeechSampler::SpeechSampler(const SpeechDataset& data, uint64_t seed, double temperature)
    : SpeechSampler(clip_languages(data), seed, temperature) {}

SpeechSampler::SpeechSampler(const std::vector<uint16_t>& clip_lang, uint64_t seed, double temperature)
    : seed_(seed), temperature_(temperature), balanced_(temperature != 1.0), clip_lang_(clip_lang) {
  CHORUS_CHECK(!clip_lang_.empty(), "SpeechSampler: expected at least one clip");
  CHORUS_CHECK(clip_lang_.size() < std::numeric_limits<uint32_t>::max(),
               "SpeechSampler: %zu clips: expected fewer than 2^32 - 1", clip_lang_.size());
  CHORUS_CHECK(
      temperature > 0.0 && !std::isnan(temperature),
      "SpeechSampler: temperature: expected > 0 (1 = every clip equally likely, larger = more balanced "
      "languages, inf = uniform over languages), got %g",
      temperature);
  const size_t n_ids = static_cast<size_t>(*std::max_element(clip_lang_.begin(), clip_lang_.end())) + 1;
  lang_clips_.assign(n_ids, {});
  for (size_t i = 0; i < clip_lang_.size(); ++i)
    lang_clips_[clip_lang_[i]].push_back(static_cast<uint32_t>(i));

  // q_l proportional to p_l^(1/T), in the log domain so that a small T cannot
  // underflow every term.
  const double n = static_cast<double>(clip_lang_.size());
  const double inv_t = 1.0 / temperature;  // 0 for T = inf
  q_.assign(n_ids, 0.0);
  double max_log = -std::numeric_limits<double>::infinity();
  for (size_t l = 0; l < n_ids; ++l)
    if (!lang_clips_[l].empty()) max_log = std::max(max_log, inv_t * std::log(lang_clips_[l].size() / n));
  double sum = 0.0;
  for (size_t l = 0; l < n_ids; ++l) {
    if (lang_clips_[l].empty()) continue;
    q_[l] = std::exp(inv_t * std::log(lang_clips_[l].size() / n) - max_log);
    sum += q_[l];
  }
  double acc = 0.0;
  for (size_t l = 0; l < n_ids; ++l) {
    q_[l] /= sum;
    if (lang_clips_[l].empty()) continue;
    acc += q_[l];
    cdf_.push_back(acc);
    cdf_lang_.push_back(static_cast<uint16_t>(l));
  }
  cdf_.back() = 1.0;

  lang_cycle_.assign(n_ids, UINT64_MAX);
  lang_perm_.assign(n_ids, {});
  checkpoints_.push_back(std::vector<uint64_t>(n_ids, 0));
}

uint16_t SpeechSampler::draw_language(uint64_t i) const {
  uint64_t x = seed_ ^ kLangDrawKey;
  x = splitmix64(x) ^ i;
  const uint64_t h = splitmix64(x);
  const double u = static_cast<double>(h >> 11) * (1.0 / 9007199254740992.0);  // [0, 1)
  const size_t k = static_cast<size_t>(std::upper_bound(cdf_.begin(), cdf_.end(), u) - cdf_.begin());
  return cdf_lang_[std::min(k, cdf_lang_.size() - 1)];
}

std::vector<uint64_t> SpeechSampler::counts_before(uint64_t i) const {
  const uint64_t m = i / kCheckpointEvery;
  while (checkpoints_.size() <= m) {
    std::vector<uint64_t> c = checkpoints_.back();
    const uint64_t from = (checkpoints_.size() - 1) * kCheckpointEvery;
    for (uint64_t j = from; j < from + kCheckpointEvery; ++j) ++c[draw_language(j)];
    checkpoints_.push_back(std::move(c));
  }
  // Start from the last position asked for when that is closer than the
  // checkpoint (consecutive batches then cost only their own draws).
  const bool from_cursor = cursor_index_ <= i && cursor_index_ >= m * kCheckpointEvery;
  std::vector<uint64_t> c = from_cursor ? cursor_counts_ : checkpoints_[m];
  for (uint64_t j = from_cursor ? cursor_index_ : m * kCheckpointEvery; j < i; ++j) ++c[draw_language(j)];
  return c;
}

size_t SpeechSampler::clip_in_language(uint16_t l, uint64_t k) const {
  const std::vector<uint32_t>& clips = lang_clips_[l];
  const uint64_t n = clips.size();
  const uint64_t cycle = k / n;
  if (lang_cycle_[l] != cycle) {
    lang_perm_[l] = clips;
    Rng rng(seed_ ^ kLangPermKey, (static_cast<uint64_t>(l) << 40) | cycle);
    shuffle(lang_perm_[l], rng);
    lang_cycle_[l] = cycle;
  }
  return lang_perm_[l][k % n];
}

size_t SpeechSampler::clip_in_epoch(uint64_t i) const {
  const uint64_t n = clip_lang_.size();
  const uint64_t epoch = i / n;
  if (perm_epoch_ != epoch) {
    perm_.resize(n);
    std::iota(perm_.begin(), perm_.end(), 0u);
    Rng rng(seed_, epoch);
    shuffle(perm_, rng);
    perm_epoch_ = epoch;
  }
  return perm_[i % n];
}

size_t SpeechSampler::clip_at(uint64_t global_index) const {
  size_t out = 0;
  batch_indices(global_index, 1, 0, 1, &out);
  return out;
}

void SpeechSampler::batch_indices(uint64_t consumed, int global_batch, int dp_rank, int dp,
                                  size_t* out) const {
  CHORUS_CHECK(global_batch > 0, "SpeechSampler: global_batch: expected > 0, got %d", global_batch);
  CHORUS_CHECK(dp > 0, "SpeechSampler: dp: expected > 0, got %d", dp);
  CHORUS_CHECK(dp_rank >= 0 && dp_rank < dp, "SpeechSampler: dp_rank: expected 0..%d, got %d", dp - 1,
               dp_rank);
  CHORUS_CHECK(
      global_batch % dp == 0,
      "SpeechSampler: global_batch %d must be divisible by dp %d (each DP rank takes an equal slice)",
      global_batch, dp);
  const uint64_t local = static_cast<uint64_t>(global_batch / dp);
  const uint64_t start = consumed + static_cast<uint64_t>(dp_rank) * local;
  std::lock_guard<std::mutex> lock(mu_);
  if (!balanced_) {
    for (uint64_t j = 0; j < local; ++j) out[j] = clip_in_epoch(start + j);
    return;
  }
  std::vector<uint64_t> counts = counts_before(start);
  for (uint64_t j = 0; j < local; ++j) {
    const uint16_t l = draw_language(start + j);
    out[j] = clip_in_language(l, counts[l]++);
  }
  cursor_index_ = start + local;
  cursor_counts_ = std::move(counts);
}

LengthBucketer::LengthBucketer(const SpeechSampler& sampler, std::vector<uint32_t> lengths, uint64_t seed,
                               int pool_batches)
    : sampler_(sampler), lengths_(std::move(lengths)), seed_(seed), pool_batches_(pool_batches) {
  CHORUS_CHECK(pool_batches >= 1, "bucket-batches: expected >= 1 (1 = no bucketing), got %d", pool_batches);
  CHORUS_CHECK(lengths_.size() == sampler.n_clips(), "LengthBucketer: %zu lengths for %zu clips", lengths_.size(),
               sampler.n_clips());
}

void LengthBucketer::batch_indices(uint64_t consumed, int global_batch, int dp_rank, int dp, size_t* out) {
  CHORUS_CHECK(global_batch > 0 && consumed % static_cast<uint64_t>(global_batch) == 0,
               "LengthBucketer: consumed %llu is not a multiple of the global batch %d",
               static_cast<unsigned long long>(consumed), global_batch);
  if (pool_batches_ == 1) return sampler_.batch_indices(consumed, global_batch, dp_rank, dp, out);
  const uint64_t G = static_cast<uint64_t>(global_batch), P = G * static_cast<uint64_t>(pool_batches_);
  const uint64_t batch = consumed / G, pool = batch / pool_batches_;
  if (pool != pool_ || global_batch != pool_g_) {
    std::vector<size_t> clips(P);
    sampler_.batch_indices(pool * P, static_cast<int>(P), 0, 1, clips.data());
    std::vector<uint32_t> order(P);
    for (uint32_t j = 0; j < P; ++j) order[j] = j;
    std::stable_sort(order.begin(), order.end(),
                     [&](uint32_t a, uint32_t b) { return lengths_[clips[a]] < lengths_[clips[b]]; });
    std::vector<uint32_t> perm(pool_batches_);
    for (int k = 0; k < pool_batches_; ++k) perm[k] = static_cast<uint32_t>(k);
    Rng rng(seed_ ^ 0x6275636b6574ull, pool);
    for (int k = pool_batches_ - 1; k > 0; --k) std::swap(perm[k], perm[rng.next_u64() % static_cast<uint64_t>(k + 1)]);
    pool_clips_.resize(P);
    for (int k = 0; k < pool_batches_; ++k)
      for (uint64_t j = 0; j < G; ++j) pool_clips_[k * G + j] = clips[order[perm[k] * G + j]];
    pool_ = pool;
    pool_g_ = global_batch;
  }
  CHORUS_CHECK(dp > 0 && dp_rank >= 0 && dp_rank < dp && global_batch % dp == 0,
               "LengthBucketer: dp rank %d of %d for a global batch of %d", dp_rank, dp, global_batch);
  const uint64_t local = G / static_cast<uint64_t>(dp);
  const size_t* b = pool_clips_.data() + (batch % pool_batches_) * G + static_cast<uint64_t>(dp_rank) * local;
  std::copy(b, b + local, out);
}

}  // namespace chorus::data
