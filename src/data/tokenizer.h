// Byte-level BPE tokenizer, trained by Chorus itself (GPT-2 style: text is
// split into pre-tokens, each pre-token's UTF-8 bytes are merged pairwise by
// learned rank). Ids 0..255 are the raw bytes, then the learned merges, then
// the special tokens. Any byte string round-trips, including invalid UTF-8.
//
// Special tokens (DESIGN.md), reserved at training time so a GPT trained now
// can later be the speech decoder:
//   <|endoftext|> <|startoftranscript|> <|xx|> (one per language)
//   <|transcribe|> <|notimestamps|>
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace chorus::data {

struct TokenizerTrainOptions {
  int vocab_size = 8192;                  // total, including 256 bytes and specials
  std::vector<std::string> languages;     // ISO codes, one <|xx|> token each
  int n_threads = 0;                      // 0 = all cores (OpenMP)
  bool progress = true;                   // progress bar on stderr
};

class Tokenizer {
 public:
  Tokenizer() = default;

  // Train on the contents of `files` (each file is pre-tokenized on its own).
  // Throws chorus::Error naming a file that cannot be read, or a vocab_size too
  // small for bytes + specials + 1 merge, and files that hold no text (empty or
  // whitespace only). If the corpus runs out of pairs before vocab_size is
  // reached, training stops early with a warning and vocab_size() is smaller.
  // The same corpus gives the same merges for any n_threads.
  static Tokenizer train(const std::vector<std::string>& files, const TokenizerTrainOptions& opt);
  // Train on in-memory texts (tests; an empty corpus gives a merge-less tokenizer).
  static Tokenizer train_texts(const std::vector<std::string>& texts, const TokenizerTrainOptions& opt);

  // JSON file: {"format": "chorus-bpe", "version": 1, "vocab_size": N,
  // "merges": [[a,b],...], "specials": ["<|endoftext|>",...], "languages": [...],
  // "hash": "<sha256>"}. load() verifies the stored hash and names the file and
  // field on any problem. save() writes path + ".tmp", then renames it.
  static Tokenizer load(const std::string& path);
  void save(const std::string& path) const;

  // Plain text -> ids. Special-token strings in the text are NOT parsed; they
  // are encoded as ordinary bytes. Thread-safe (const).
  std::vector<uint32_t> encode(std::string_view text) const;
  // The pre-tokens encode() merges within, in order; they concatenate to text.
  static std::vector<std::string_view> pretokens(std::string_view text);
  // ids -> bytes. Special tokens decode to their literal string "<|...|>".
  // An id >= vocab_size() throws.
  std::string decode(std::span<const uint32_t> ids) const;
  // Bytes of one token (for streaming output in generate).
  const std::string& token_bytes(uint32_t id) const;

  int vocab_size() const;                 // bytes + merges + specials
  // Id of a special token by its full string, e.g. "<|endoftext|>", "<|de|>".
  // Throws if absent.
  uint32_t special(std::string_view name) const;
  uint32_t eot() const { return special("<|endoftext|>"); }
  const std::vector<std::string>& languages() const { return languages_; }
  // Merge i joins ids (a, b) into id 256 + i; special i has id 256 + n_merges + i.
  const std::vector<std::pair<uint32_t, uint32_t>>& merges() const { return merges_; }
  const std::vector<std::string>& specials() const { return specials_; }
  // SHA-256 hex of the merges, specials and languages (the tokenizer's identity;
  // stored in every shard and checkpoint).
  const std::string& hash() const { return hash_; }

  // A new language for a trained tokenizer (and the models trained with it):
  // this tokenizer with <|code|> appended as the last special token (id =
  // vocab_size()), so every existing id keeps its meaning. The result has its
  // own hash and records this one as an ancestor (extends()); throws if the
  // language is already there or the code is not 2-3 lowercase letters.
  Tokenizer with_language(const std::string& code) const;
  // The tokenizers this one was extended from (with_language), oldest first:
  // each one's hash and vocabulary size. Saved and, on load, verified (each
  // hash is recomputed from this tokenizer's merges and leading specials).
  struct Ancestor {
    std::string hash;
    int vocab_size = 0;
  };
  const std::vector<Ancestor>& ancestors() const { return ancestors_; }
  // The vocabulary size of the ancestor with this hash (this tokenizer's own
  // for its own hash); 0 if it is neither.
  int vocab_size_of(const std::string& hash) const;

 private:
  void build_tables();   // derive vocab bytes, merge ranks and hash from merges_/specials_
  static std::string identity_hash(const std::vector<std::pair<uint32_t, uint32_t>>& merges,
                                   std::span<const std::string> specials, std::span<const std::string> languages);
  std::vector<std::pair<uint32_t, uint32_t>> merges_;   // merge i creates id 256 + i
  std::vector<std::string> specials_;                   // id = 256 + merges_.size() + i
  std::vector<std::string> languages_;
  std::vector<Ancestor> ancestors_;
  // derived (build_tables): implementation-defined lookup structures
  std::vector<std::string> vocab_;                      // id -> bytes
  std::string hash_;
  struct Impl;
  std::shared_ptr<const Impl> impl_;                    // merge-rank lookup etc.
};

// The pre-tokenizer as one regular expression (Oniguruma / Hugging Face
// `tokenizers` syntax: \x{HEX} code points, classes, (?=...) look-ahead):
// its successive leftmost matches are the chunks encode() splits a valid
// UTF-8 text into, character classes included (generated from the same
// classifier). Invalid UTF-8 has no counterpart: a regex runs on characters.
std::string pretokenizer_regex();

// Languages reserved by default: the 33 of datasets/text, en de fr es it pt ru
// zh first, then the rest alphabetically. The order fixes the ids of <|xx|> tokens.
const std::vector<std::string>& default_languages();

}  // namespace chorus::data
