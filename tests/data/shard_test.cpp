// HDF5 text shards: write/read round trip, the reader's refusals, list_shards
// and prepare_text end to end with a small trained tokenizer.
#include "data/shard.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "common/fixtures.h"
#include "core/error.h"
#include "core/hdf5.h"
#include "data/loader.h"
#include "data/tokenizer.h"

namespace fs = std::filesystem;
using chorus::Error;
using namespace chorus::data;
namespace h5 = chorus::h5;

namespace {

using chorus::testing::error_of;
using TempDir = chorus::testing::TempDir;

struct Sample {
  std::vector<uint32_t> tokens;
  std::vector<uint64_t> offsets;
};

Sample make_sample(uint64_t n_tokens, uint32_t vocab, uint64_t seed) {
  std::mt19937_64 gen(seed);
  Sample s;
  s.offsets.push_back(0);
  for (uint64_t i = 0; i < n_tokens; ++i) {
    s.tokens.push_back(static_cast<uint32_t>(gen() % vocab));
    if (i + 1 < n_tokens && gen() % 7 == 0) s.offsets.push_back(i + 1);
  }
  s.offsets.push_back(n_tokens);
  return s;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A shard written with raw HDF5 calls (through hdf5_util), so tests can make
// files write_shard would refuse to produce.
void write_raw_shard(const std::string& path, const std::vector<uint32_t>& tokens,
                     const std::vector<uint64_t>* offsets, int64_t vocab, const std::string& hash) {
  h5::File f = h5::File::create(path);
  h5::write_1d(f, "tokens", H5T_STD_U32LE, tokens);
  if (offsets) h5::write_1d(f, "doc_offsets", H5T_STD_U64LE, *offsets);
  h5::write_attr_string(f, "format", "chorus-text-shard");
  h5::write_attr_int(f, "version", 1, H5T_STD_I32LE);
  h5::write_attr_int(f, "vocab_size", vocab);
  h5::write_attr_string(f, "tokenizer_hash", hash);
  h5::write_attr_uint(f, "n_tokens", tokens.size());
  h5::write_attr_uint(f, "n_docs", offsets ? offsets->size() - 1 : 1);
  h5::write_attr_uint(f, "n_bytes", 10);
  h5::write_attr_string(f, "split", "train");
  f.close();
}

void expect_round_trip(int64_t vocab, const std::string& split, size_t want_bytes) {
  TempDir dir;
  const std::string path = dir.file(split + "_000000.h5");
  const Sample s = make_sample(5000, static_cast<uint32_t>(vocab), 42);
  write_shard(path, split, s.tokens, s.offsets, vocab, "hash-abc", 12345);
  EXPECT_TRUE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  {  // On-disk layout and attributes, as documented in shard.h.
    h5::File f = h5::File::open_read(path);
    const h5::Dataset1dInfo tok = h5::inspect_1d(f, "tokens");
    EXPECT_EQ(tok.type_class, H5T_INTEGER);
    EXPECT_FALSE(tok.is_signed);
    EXPECT_EQ(tok.type_bytes, want_bytes);
    EXPECT_EQ(tok.n, s.tokens.size());
    const h5::Dataset1dInfo off = h5::inspect_1d(f, "doc_offsets");
    EXPECT_EQ(off.type_name(), "uint64");
    EXPECT_EQ(h5::read_attr_string(f, "format"), "chorus-text-shard");
    EXPECT_EQ(h5::read_attr_int(f, "version"), 1);
    EXPECT_EQ(h5::read_attr_int(f, "vocab_size"), vocab);
    EXPECT_EQ(h5::read_attr_string(f, "tokenizer_hash"), "hash-abc");
    EXPECT_EQ(h5::read_attr_uint(f, "n_tokens"), s.tokens.size());
    EXPECT_EQ(h5::read_attr_uint(f, "n_docs"), s.offsets.size() - 1);
    EXPECT_EQ(h5::read_attr_uint(f, "n_bytes"), 12345u);
    EXPECT_EQ(h5::read_attr_string(f, "split"), split);
  }

  ShardReader r(path, "hash-abc", vocab);
  EXPECT_EQ(r.tokens(), s.tokens);
  EXPECT_EQ(r.doc_offsets(), s.offsets);
  EXPECT_EQ(r.info().path, path);
  EXPECT_EQ(r.info().split, split);
  EXPECT_EQ(r.info().vocab_size, vocab);
  EXPECT_EQ(r.info().tokenizer_hash, "hash-abc");
  EXPECT_EQ(r.info().n_tokens, s.tokens.size());
  EXPECT_EQ(r.info().n_docs, s.offsets.size() - 1);
  EXPECT_EQ(r.info().n_bytes, 12345u);

  ShardReader unchecked(path, "", 0);  // "" / 0 skip the hash and vocab checks
  EXPECT_EQ(unchecked.tokens(), s.tokens);
}

}  // namespace

// ---- write / read -------------------------------------------------------------------------

TEST(Shard, RoundTripUint16) { expect_round_trip(1000, "train", 2); }
TEST(Shard, RoundTripUint16AtLimit) { expect_round_trip(65536, "val", 2); }
TEST(Shard, RoundTripUint32) { expect_round_trip(70000, "val", 4); }

TEST(Shard, WriteRefusesBadInput) {
  TempDir dir;
  const std::string path = dir.file("train_000000.h5");
  std::vector<uint32_t> tokens = {1, 2, 3};
  std::string msg = error_of([&] { write_shard(path, "train", tokens, {0, 3}, 3, "h", 0); });
  EXPECT_CONTAINS(msg, path);
  EXPECT_CONTAINS(msg, "tokens");
  msg = error_of([&] { write_shard(path, "train", tokens, {0, 2}, 10, "h", 0); });
  EXPECT_CONTAINS(msg, "doc_offsets");
  msg = error_of([&] { write_shard(path, "test", tokens, {0, 3}, 10, "h", 0); });
  EXPECT_CONTAINS(msg, "split");
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

// ---- reader refusals ---------------------------------------------------------------------

class ShardRefusal : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.file("train_000000.h5");
    sample_ = make_sample(20000, 1000, 7);
    write_shard(path_, "train", sample_.tokens, sample_.offsets, 1000, "hash-A", 100);
  }
  TempDir dir_;
  std::string path_;
  Sample sample_;
};

TEST_F(ShardRefusal, OtherTokenizerHash) {
  const std::string msg = error_of([&] { ShardReader(path_, "hash-B", 1000); });
  EXPECT_CONTAINS(msg, path_);
  EXPECT_CONTAINS(msg, "tokenizer_hash");
  EXPECT_CONTAINS(msg, "hash-A");
  EXPECT_CONTAINS(msg, "hash-B");
}

TEST_F(ShardRefusal, OtherVocabSize) {
  const std::string msg = error_of([&] { ShardReader(path_, "hash-A", 1024); });
  EXPECT_CONTAINS(msg, path_);
  EXPECT_CONTAINS(msg, "vocab_size");
  EXPECT_CONTAINS(msg, "1024");
}

TEST_F(ShardRefusal, TruncatedFile) {
  const std::string bytes = read_bytes(path_);
  ASSERT_GT(bytes.size(), 30000u);
  const std::string cut = dir_.file("cut_000000.h5");
  write_bytes(cut, bytes.substr(0, bytes.size() / 2));
  const std::string msg = error_of([&] { ShardReader(cut, "hash-A", 1000); });
  EXPECT_CONTAINS(msg, cut);
  EXPECT_CONTAINS(msg, "truncated");
}

TEST_F(ShardRefusal, TinyPrefixOfFile) {
  const std::string cut = dir_.file("tiny.h5");
  write_bytes(cut, read_bytes(path_).substr(0, 100));
  const std::string msg = error_of([&] { ShardReader(cut, "", 0); });
  EXPECT_CONTAINS(msg, cut);
}

TEST_F(ShardRefusal, MissingDataset) {
  const std::string raw = dir_.file("raw.h5");
  write_raw_shard(raw, sample_.tokens, nullptr, 1000, "hash-A");
  const std::string msg = error_of([&] { ShardReader(raw, "hash-A", 1000); });
  EXPECT_CONTAINS(msg, raw);
  EXPECT_CONTAINS(msg, "doc_offsets");
  EXPECT_CONTAINS(msg, "missing");
}

TEST_F(ShardRefusal, MissingAttribute) {
  const std::string raw = dir_.file("noattr.h5");
  {
    h5::File f = h5::File::create(raw);
    h5::write_attr_string(f, "format", "chorus-text-shard");
    h5::write_attr_int(f, "version", 1, H5T_STD_I32LE);
    f.close();
  }
  const std::string msg = error_of([&] { ShardReader(raw, "", 0); });
  EXPECT_CONTAINS(msg, raw);
  EXPECT_CONTAINS(msg, "split");
}

TEST_F(ShardRefusal, WrongFormatAndVersion) {
  const std::string raw = dir_.file("other.h5");
  {
    h5::File f = h5::File::create(raw);
    h5::write_attr_string(f, "format", "something-else");
    f.close();
  }
  std::string msg = error_of([&] { ShardReader(raw, "", 0); });
  EXPECT_CONTAINS(msg, raw);
  EXPECT_CONTAINS(msg, "format");
  {
    h5::File f = h5::File::create(raw);
    h5::write_attr_string(f, "format", "chorus-text-shard");
    h5::write_attr_int(f, "version", 2);
    f.close();
  }
  msg = error_of([&] { ShardReader(raw, "", 0); });
  EXPECT_CONTAINS(msg, "version");
}

TEST_F(ShardRefusal, NotHdf5) {
  const std::string txt = dir_.file("notes.h5");
  write_bytes(txt, "this is plain text, not HDF5\n");
  std::string msg = error_of([&] { ShardReader(txt, "hash-A", 1000); });
  EXPECT_CONTAINS(msg, txt);
  EXPECT_CONTAINS(msg, "not an HDF5 file");
  const std::string missing = dir_.file("missing.h5");
  msg = error_of([&] { ShardReader(missing, "hash-A", 1000); });
  EXPECT_CONTAINS(msg, missing);
  EXPECT_CONTAINS(msg, "not found");
}

TEST_F(ShardRefusal, TokenIdOutOfVocab) {
  const std::string raw = dir_.file("bad_ids.h5");
  std::vector<uint32_t> tokens = sample_.tokens;
  tokens[1234] = 1000;  // == vocab_size
  write_raw_shard(raw, tokens, &sample_.offsets, 1000, "hash-A");
  const std::string msg = error_of([&] { ShardReader(raw, "hash-A", 1000); });
  EXPECT_CONTAINS(msg, raw);
  EXPECT_CONTAINS(msg, "tokens");
  EXPECT_CONTAINS(msg, "1234");
}

TEST_F(ShardRefusal, InconsistentCountsAndOffsets) {
  const std::string raw = dir_.file("bad_offsets.h5");
  std::vector<uint64_t> offsets = sample_.offsets;
  std::swap(offsets[1], offsets[2]);
  write_raw_shard(raw, sample_.tokens, &offsets, 1000, "hash-A");
  std::string msg = error_of([&] { ShardReader(raw, "", 0); });
  EXPECT_CONTAINS(msg, raw);
  EXPECT_CONTAINS(msg, "doc_offsets");
  {
    h5::File f = h5::File::create(raw);
    h5::write_1d(f, "tokens", H5T_STD_U32LE, sample_.tokens);
    h5::write_1d(f, "doc_offsets", H5T_STD_U64LE, sample_.offsets);
    h5::write_attr_string(f, "format", "chorus-text-shard");
    h5::write_attr_int(f, "version", 1, H5T_STD_I32LE);
    h5::write_attr_int(f, "vocab_size", 1000);
    h5::write_attr_string(f, "tokenizer_hash", "hash-A");
    h5::write_attr_uint(f, "n_tokens", sample_.tokens.size() + 1);
    h5::write_attr_uint(f, "n_docs", sample_.offsets.size() - 1);
    h5::write_attr_uint(f, "n_bytes", 0);
    h5::write_attr_string(f, "split", "train");
    f.close();
  }
  msg = error_of([&] { ShardReader(raw, "", 0); });
  EXPECT_CONTAINS(msg, "n_tokens");
}

// ---- list_shards -----------------------------------------------------------------------

TEST(Shard, ListShards) {
  TempDir dir;
  for (const char* name : {"train_000002.h5", "train_000000.h5", "train_000001.h5", "val_000000.h5",
                           "train_1.h5", "train_000003.h5.tmp", "xtrain_000004.h5"}) {
    write_bytes(dir.file(name), "x");
  }
  const std::vector<std::string> train = list_shards(dir.str(), "train");
  ASSERT_EQ(train.size(), 3u);
  EXPECT_EQ(fs::path(train[0]).filename(), "train_000000.h5");
  EXPECT_EQ(fs::path(train[2]).filename(), "train_000002.h5");
  EXPECT_EQ(list_shards(dir.str(), "val").size(), 1u);
  std::string msg = error_of([&] { list_shards(dir.str(), "test"); });
  EXPECT_CONTAINS(msg, dir.str());
  msg = error_of([&] { list_shards(dir.file("nowhere"), "train"); });
  EXPECT_CONTAINS(msg, dir.file("nowhere"));
}

// ---- prepare_text ----------------------------------------------------------------------

namespace {

const std::vector<std::string>& corpus_files() {
  static const std::vector<std::string> files = {
      "The quick brown fox jumps over the lazy dog.\n"
      "\n"
      "A second line about foxes and dogs.\r\n"
      "   \n"
      "Pack my box with five dozen liquor jugs.\n"
      "How vexingly quick daft zebras jump!\n"
      "The five boxing wizards jump quickly.\n",
      "Der schnelle braune Fuchs springt über den faulen Hund.\n"
      "Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich.\n"
      "Falsches Üben von Xylophonmusik quält jeden größeren Zwerg.\n"
      "Franz jagt im komplett verwahrlosten Taxi quer durch Bayern.\n"
      "Victor jagt zwölf Boxkämpfer quer über den großen Sylter Deich.",  // no final newline
      "Portez ce vieux whisky au juge blond qui fume.\n"
      "Voix ambiguë d'un cœur qui au zéphyr préfère les jattes de kiwis.\n"
      "This line is deliberately long so that it needs more tokens than one shard holds on its own, which "
      "means it must be written to a shard by itself rather than being split or dropped by the writer.\n"
      "Le cœur déçu mais l'âme plutôt naïve, Louÿs rêva de crapaüter en canoë au delà des îles.\n",
  };
  return files;
}

// The documents prepare_text should find: non-empty, non-blank lines without '\r'.
std::vector<std::string> expected_docs() {
  std::vector<std::string> docs;
  for (const std::string& text : corpus_files()) {
    size_t pos = 0;
    while (pos < text.size()) {
      size_t end = text.find('\n', pos);
      if (end == std::string::npos) end = text.size();
      std::string line = text.substr(pos, end - pos);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.find_first_not_of(" \t") != std::string::npos) docs.push_back(line);
      pos = end + 1;
    }
  }
  return docs;
}

Tokenizer small_tokenizer(int vocab) {
  TokenizerTrainOptions opt;
  opt.vocab_size = vocab;
  opt.languages = {"en", "de", "fr"};
  opt.n_threads = 2;
  opt.progress = false;
  return Tokenizer::train_texts(corpus_files(), opt);
}

}  // namespace

TEST(PrepareText, EndToEnd) {
  TempDir dir;
  std::vector<std::string> inputs;
  for (size_t i = 0; i < corpus_files().size(); ++i) {
    inputs.push_back(dir.file("input_" + std::to_string(i) + ".txt"));
    write_bytes(inputs.back(), corpus_files()[i]);
  }
  const Tokenizer tok = small_tokenizer(320);
  PrepareTextOptions opt;
  opt.inputs = inputs;
  opt.out_dir = dir.file("shards");
  opt.val_fraction = 0.2;
  opt.shard_tokens = 40;
  opt.seed = 7;
  opt.n_threads = 2;
  opt.progress = false;
  const std::vector<ShardInfo> infos = prepare_text(tok, opt);

  const std::vector<std::string> train = list_shards(opt.out_dir, "train");
  const std::vector<std::string> val = list_shards(opt.out_dir, "val");
  ASSERT_FALSE(train.empty());
  ASSERT_FALSE(val.empty());
  EXPECT_EQ(infos.size(), train.size() + val.size());

  std::multiset<std::string> found;
  uint64_t n_bytes = 0, n_tokens_train = 0;
  bool saw_single_big_doc = false;
  for (const std::vector<std::string>* split : {&train, &val}) {
    for (const std::string& path : *split) {
      ShardReader r(path, tok.hash(), tok.vocab_size());
      const ShardInfo& info = r.info();
      EXPECT_EQ(info.split, split == &train ? "train" : "val");
      if (info.n_tokens > opt.shard_tokens) {
        EXPECT_EQ(info.n_docs, 1u) << path << ": only a single oversized document may exceed shard_tokens";
        saw_single_big_doc = true;
      }
      const auto it =
          std::find_if(infos.begin(), infos.end(), [&](const ShardInfo& i) { return i.path == path; });
      ASSERT_NE(it, infos.end()) << path;
      EXPECT_EQ(it->n_tokens, info.n_tokens);
      EXPECT_EQ(it->n_docs, info.n_docs);
      EXPECT_EQ(it->n_bytes, info.n_bytes);
      EXPECT_EQ(it->tokenizer_hash, tok.hash());
      const auto& t = r.tokens();
      const auto& off = r.doc_offsets();
      for (size_t d = 0; d + 1 < off.size(); ++d) {
        ASSERT_GT(off[d + 1], off[d]);
        EXPECT_EQ(t[off[d + 1] - 1], tok.eot()) << "each document ends with <|endoftext|>";
        found.insert(tok.decode(std::span<const uint32_t>(t.data() + off[d], off[d + 1] - off[d] - 1)));
      }
      n_bytes += info.n_bytes;
      if (split == &train) n_tokens_train += info.n_tokens;
    }
  }
  EXPECT_TRUE(saw_single_big_doc);
  const std::vector<std::string> docs = expected_docs();
  EXPECT_EQ(found, std::multiset<std::string>(docs.begin(), docs.end()));
  uint64_t want_bytes = 0;
  for (const std::string& d : docs) want_bytes += d.size() + 1;
  EXPECT_EQ(n_bytes, want_bytes);

  const TokenStream stream(opt.out_dir, "train", tok.hash(), tok.vocab_size());
  EXPECT_EQ(stream.n_tokens(), n_tokens_train);

  // Same tokenizer again: refused without replace (--force), naming the directory.
  EXPECT_CONTAINS(error_of([&] { prepare_text(tok, opt); }), "already holds shards");
  // With replace: allowed, deterministic, and stale shards are removed.
  opt.replace = true;
  write_bytes(dir.file("shards/train_000099.h5"), read_bytes(train[0]));
  const std::vector<ShardInfo> again = prepare_text(tok, opt);
  EXPECT_FALSE(fs::exists(dir.file("shards/train_000099.h5")));
  ASSERT_EQ(again.size(), infos.size());
  for (size_t i = 0; i < infos.size(); ++i) {
    EXPECT_EQ(again[i].path, infos[i].path);
    EXPECT_EQ(again[i].n_tokens, infos[i].n_tokens);
  }
  EXPECT_EQ(ShardReader(train[0], "", 0).tokens(), ShardReader(again[0].path, "", 0).tokens());

  // Another tokenizer into the same directory: refused, naming both hashes.
  const Tokenizer other = small_tokenizer(330);
  ASSERT_NE(other.hash(), tok.hash());
  const std::string msg = error_of([&] { prepare_text(other, opt); });
  EXPECT_CONTAINS(msg, opt.out_dir);
  EXPECT_CONTAINS(msg, tok.hash());
  EXPECT_CONTAINS(msg, other.hash());
  EXPECT_TRUE(fs::exists(train[0])) << "the refused run must not delete existing shards";
}

TEST(PrepareText, SplitsAreNeverEmptyWithTwoDocs) {
  TempDir dir;
  const std::string input = dir.file("two.txt");
  write_bytes(input, "first document here\nsecond document here\n");
  const Tokenizer tok = small_tokenizer(300);
  for (double frac : {0.0, 1.0}) {
    PrepareTextOptions opt;
    opt.inputs = {input};
    opt.out_dir = dir.file("out");
    opt.val_fraction = frac;
    opt.progress = false;
    opt.replace = true;  // the second round rewrites the first one's shards
    const std::vector<ShardInfo> infos = prepare_text(tok, opt);
    ASSERT_EQ(infos.size(), 2u) << "val_fraction " << frac;
    EXPECT_EQ(infos[0].split, "train");
    EXPECT_EQ(infos[1].split, "val");
    EXPECT_EQ(infos[0].n_docs, 1u);
    EXPECT_EQ(infos[1].n_docs, 1u);
  }
  PrepareTextOptions opt;
  opt.inputs = {dir.file("absent.txt")};
  opt.out_dir = dir.file("out2");
  opt.progress = false;
  const std::string msg = error_of([&] { prepare_text(tok, opt); });
  EXPECT_CONTAINS(msg, dir.file("absent.txt"));
}
