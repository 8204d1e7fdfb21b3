#include "data/loader.h"

#include <cstdint>
#include <filesystem>
#include <numeric>
#include <utility>

#include "core/error.h"
#include "core/rng.h"

namespace chorus::data {

namespace fs = std::filesystem;

// ---- TokenStream ---------------------------------------------------------------------

TokenStream::TokenStream(const std::string& dir, const std::string& split, const std::string& expected_hash,
                         int64_t expected_vocab) {
  std::string hash = expected_hash;
  int64_t vocab = expected_vocab;
  const std::vector<std::string> paths = list_shards(dir, split);
  source_ = strfmt("split '%s' of %s (%zu shard%s: %s%s%s)", split.c_str(), dir.c_str(), paths.size(),
                   paths.size() == 1 ? "" : "s", paths.front().c_str(), paths.size() > 1 ? " .. " : "",
                   paths.size() > 1 ? fs::path(paths.back()).filename().c_str() : "");
  for (const std::string& path : paths) {
    // Where the caller gave no hash / vocab, every shard must agree with the first.
    ShardReader shard(path, hash, vocab);
    const ShardInfo& info = shard.info();
    CHORUS_CHECK(info.split == split,
                 "%s: attribute 'split': expected \"%s\" (as the file name says), found \"%s\"", path.c_str(),
                 split.c_str(), info.split.c_str());
    if (hash.empty()) hash = info.tokenizer_hash;
    if (vocab == 0) vocab = info.vocab_size;
    tokens_.insert(tokens_.end(), shard.tokens().begin(), shard.tokens().end());
    n_bytes_ += info.n_bytes;
  }
}

TokenStream::TokenStream(std::vector<uint32_t> tokens, uint64_t n_bytes)
    : tokens_(std::move(tokens)), n_bytes_(n_bytes) {}

// ---- DataLoader -----------------------------------------------------------------------

DataLoader::DataLoader(std::shared_ptr<const TokenStream> stream, int T, int global_batch, int dp_rank,
                       int dp_size, uint64_t seed)
    : stream_(std::move(stream)),
      T_(T),
      global_batch_(global_batch),
      local_batch_(0),
      dp_rank_(dp_rank),
      dp_size_(dp_size),
      seed_(seed),
      n_samples_(0) {
  CHORUS_CHECK(stream_ != nullptr, "DataLoader: stream: expected a token stream, got null");
  CHORUS_CHECK(T_ > 0, "DataLoader: sequence length T: expected > 0, got %d", T_);
  CHORUS_CHECK(global_batch_ > 0, "DataLoader: global_batch: expected > 0, got %d", global_batch_);
  CHORUS_CHECK(dp_size_ > 0, "DataLoader: dp_size: expected > 0, got %d", dp_size_);
  CHORUS_CHECK(dp_rank_ >= 0 && dp_rank_ < dp_size_, "DataLoader: dp_rank: expected 0..%d, got %d",
               dp_size_ - 1, dp_rank_);
  CHORUS_CHECK(
      global_batch_ % dp_size_ == 0,
      "DataLoader: global_batch %d must be divisible by dp_size %d (each DP rank takes an equal slice)",
      global_batch_, dp_size_);
  local_batch_ = global_batch_ / dp_size_;
  const uint64_t n = stream_->n_tokens();
  n_samples_ = n > 0 ? (n - 1) / static_cast<uint64_t>(T_) : 0;
  CHORUS_CHECK(
      n_samples_ > 0,
      "%s: %llu tokens, too few for one sample of sequence length --seq-len %d (needs at least %d tokens: "
      "more text, or a shorter --seq-len)",
      stream_->source().c_str(), static_cast<unsigned long long>(n), T_, T_ + 1);
  CHORUS_CHECK(n_samples_ <= UINT32_MAX, "%s: %llu samples: expected at most 2^32 - 1 (raise --seq-len)",
               stream_->source().c_str(), static_cast<unsigned long long>(n_samples_));
}

const std::vector<uint32_t>& DataLoader::permutation(uint64_t epoch) {
  if (epoch == perm_epoch_) return perm_;
  perm_.resize(n_samples_);
  std::iota(perm_.begin(), perm_.end(), 0u);
  // Fisher-Yates (Knuth, TAOCP vol. 2, Algorithm P), from the last position down.
  Rng rng(seed_, epoch);
  for (uint64_t i = n_samples_ - 1; i > 0; --i) {
    const uint64_t j = rng.below(i + 1);
    std::swap(perm_[i], perm_[j]);
  }
  perm_epoch_ = epoch;
  return perm_;
}

uint64_t DataLoader::sample_for(uint64_t global_index) {
  return permutation(global_index / n_samples_)[global_index % n_samples_];
}

void DataLoader::next_batch(int32_t* inputs, int32_t* targets) {
  const uint64_t start = consumed_ + static_cast<uint64_t>(dp_rank_) * static_cast<uint64_t>(local_batch_);
  const uint32_t* tokens = stream_->data();
  const size_t T = static_cast<size_t>(T_);
  for (int b = 0; b < local_batch_; ++b) {
    const uint32_t* src = tokens + sample_for(start + static_cast<uint64_t>(b)) * T;
    int32_t* in = inputs + static_cast<size_t>(b) * T;
    int32_t* tg = targets + static_cast<size_t>(b) * T;
    for (size_t t = 0; t < T; ++t) {
      in[t] = static_cast<int32_t>(src[t]);
      tg[t] = static_cast<int32_t>(src[t + 1]);
    }
  }
  consumed_ += static_cast<uint64_t>(global_batch_);
}

}  // namespace chorus::data
