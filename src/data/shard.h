// HDF5 text shards (DESIGN.md "Data"). One file holds:
//   /tokens       1-D uint16 (vocab <= 65536) or uint32, all documents concatenated,
//                 each document followed by <|endoftext|>
//   /doc_offsets  1-D uint64, n_docs + 1 entries, start of each document in /tokens
// and root attributes:
//   format = "chorus-text-shard", version = 1 (int), vocab_size (int64),
//   tokenizer_hash (string), n_tokens (uint64), n_docs (uint64),
//   n_bytes (uint64: raw UTF-8 bytes of the text encoded here, for bits-per-byte),
//   split ("train" | "val").
// Files are named <split>_<6-digit index>.h5 inside one directory.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/tokenizer.h"

namespace chorus::data {

struct ShardInfo {
  std::string path;
  std::string split;
  int64_t vocab_size = 0;
  std::string tokenizer_hash;
  uint64_t n_tokens = 0;
  uint64_t n_docs = 0;
  uint64_t n_bytes = 0;
};

// Writes one shard atomically (to path + ".tmp", then rename).
void write_shard(const std::string& path, const std::string& split, const std::vector<uint32_t>& tokens,
                 const std::vector<uint64_t>& doc_offsets, int64_t vocab_size,
                 const std::string& tokenizer_hash, uint64_t n_bytes);

// Reads and validates a shard. Every check failure throws chorus::Error naming
// the file, the field and what was expected: not HDF5 / truncated, missing
// dataset or attribute, wrong format/version, tokenizer_hash or vocab_size not
// equal to the expected ones (pass "" / 0 to skip those two checks), token count
// not matching n_tokens, doc_offsets not monotone, a token id >= vocab_size.
class ShardReader {
 public:
  ShardReader(const std::string& path, const std::string& expected_hash, int64_t expected_vocab);
  const ShardInfo& info() const { return info_; }
  // All tokens of the shard (shards are small: default 16M tokens at most).
  const std::vector<uint32_t>& tokens() const { return tokens_; }
  const std::vector<uint64_t>& doc_offsets() const { return doc_offsets_; }

 private:
  ShardInfo info_;
  std::vector<uint32_t> tokens_;
  std::vector<uint64_t> doc_offsets_;
};

struct PrepareTextOptions {
  std::vector<std::string> inputs;    // text files; each non-empty line is a document
                                      // (a CRLF line's '\r' is dropped; blank lines are skipped)
  std::string out_dir;
  double val_fraction = 0.05;         // fraction of documents (chosen by seeded hash) for val
  uint64_t shard_tokens = 16u << 20;  // max tokens per shard
  uint64_t seed = 1234;
  int n_threads = 0;                  // 0 = all cores
  bool progress = true;
  bool replace = false;               // replace the shards out_dir already holds (--force)
};

// Tokenizes the inputs and writes <out_dir>/train_000000.h5 ..., val_000000.h5 ...
// Returns the infos of the shards written. Refuses an out_dir that already
// holds shards unless opt.replace, and always one holding shards from a
// tokenizer with another hash.
std::vector<ShardInfo> prepare_text(const Tokenizer& tok, const PrepareTextOptions& opt);

// All shard paths of one split in a directory, sorted. Throws naming the
// directory if there are none.
std::vector<std::string> list_shards(const std::string& dir, const std::string& split);

}  // namespace chorus::data
