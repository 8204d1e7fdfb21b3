// Deterministic distributed data loading for pretraining.
//
// The token stream of a split is the concatenation of its shards (sorted by
// name). Sample j (0 <= j < n_samples) is the window of T + 1 tokens starting at
// j * T; n_samples = (n_tokens - 1) / T. Global sample index i (counting from the
// start of training across epochs) maps to sample perm_e[i mod n_samples] with
// e = i / n_samples and perm_e a permutation seeded by (seed, e) (Fisher-Yates
// with chorus::Rng(seed, e)). Global batch k is indices [k*G, (k+1)*G); DP rank r
// of R takes its contiguous slice [k*G + r*G/R, k*G + (r+1)*G/R).
// The loader's whole state is `consumed` (global samples consumed), so a run can
// resume on any number of DP ranks.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/shard.h"

namespace chorus::data {

// A split's token stream held in memory (uint32), with its byte count.
class TokenStream {
 public:
  // Loads every shard of `split` in `dir`, validating hash and vocab.
  TokenStream(const std::string& dir, const std::string& split, const std::string& expected_hash,
              int64_t expected_vocab);
  // From memory (tests).
  TokenStream(std::vector<uint32_t> tokens, uint64_t n_bytes);
  uint64_t n_tokens() const { return tokens_.size(); }
  uint64_t n_bytes() const { return n_bytes_; }
  const uint32_t* data() const { return tokens_.data(); }
  // Where the tokens came from, for messages: "split 'val' of <dir> (2 shards:
  // <dir>/val_000000.h5 .. val_000001.h5)", or "tokens in memory".
  const std::string& source() const { return source_; }

 private:
  std::vector<uint32_t> tokens_;
  uint64_t n_bytes_ = 0;
  std::string source_ = "tokens in memory";
};

class DataLoader {
 public:
  // T: sequence length; global_batch: G samples per optimizer micro-step across
  // all DP ranks; dp_rank / dp_size: this rank's slice. G % dp_size must be 0.
  DataLoader(std::shared_ptr<const TokenStream> stream, int T, int global_batch, int dp_rank, int dp_size,
             uint64_t seed);
  uint64_t n_samples() const { return n_samples_; }
  int local_batch() const { return local_batch_; }
  // Fills inputs and targets, each (local_batch, T) int32 row-major, with this
  // rank's slice of the next global batch, and advances consumed by G.
  void next_batch(int32_t* inputs, int32_t* targets);
  // Sample id (window index) for global sample index i: the pure function above.
  uint64_t sample_for(uint64_t global_index);
  uint64_t consumed() const { return consumed_; }
  void set_consumed(uint64_t c) { consumed_ = c; }

 private:
  const std::vector<uint32_t>& permutation(uint64_t epoch);
  std::shared_ptr<const TokenStream> stream_;
  int T_, global_batch_, local_batch_, dp_rank_, dp_size_;
  uint64_t seed_, n_samples_, consumed_ = 0;
  uint64_t perm_epoch_ = UINT64_MAX;
  std::vector<uint32_t> perm_;
};

}  // namespace chorus::data
