#include "data/shard.h"

#include <fcntl.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <limits>
#include <new>
#include <string_view>

#include "core/error.h"
#include "core/fsync.h"
#include "core/progress.h"
#include "core/rng.h"
#include "core/hdf5.h"

namespace chorus::data {

namespace fs = std::filesystem;

namespace {

constexpr const char* kFormat = "chorus-text-shard";
constexpr int64_t kVersion = 1;
constexpr int64_t kMaxVocab = int64_t{1} << 32;  // ids must fit uint32
constexpr int kMaxShardIndex = 999999;           // 6-digit file names

bool valid_split(const std::string& s) { return s == "train" || s == "val"; }

// <split>_NNNNNN.h5 (exactly six digits).
bool is_shard_name(const std::string& name, const std::string& split) {
  const std::string prefix = split + "_";
  if (name.size() != prefix.size() + 6 + 3) return false;
  if (name.compare(0, prefix.size(), prefix) != 0) return false;
  for (size_t i = prefix.size(); i < prefix.size() + 6; ++i) {
    if (name[i] < '0' || name[i] > '9') return false;
  }
  return name.compare(prefix.size() + 6, 3, ".h5") == 0;
}

// File names (not paths) of the entries of a directory.
std::vector<std::string> dir_file_names(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  CHORUS_CHECK(!ec, "shard directory %s: cannot list it: %s", dir.c_str(), ec.message().c_str());
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    CHORUS_CHECK(!ec, "shard directory %s: cannot list it: %s", dir.c_str(), ec.message().c_str());
    names.push_back(it->path().filename().string());
  }
  CHORUS_CHECK(!ec, "shard directory %s: cannot list it: %s", dir.c_str(), ec.message().c_str());
  return names;
}

std::string read_whole_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  CHORUS_CHECK(in.good(), "input file %s: cannot open for reading", path.c_str());
  std::error_code ec;
  uint64_t size = fs::file_size(path, ec);
  CHORUS_CHECK(!ec, "input file %s: cannot get its size: %s", path.c_str(), ec.message().c_str());
  std::string text(size, '\0');
  in.read(text.data(), static_cast<std::streamsize>(size));
  CHORUS_CHECK(static_cast<uint64_t>(in.gcount()) == size, "input file %s: expected %llu bytes, read %lld",
               path.c_str(), static_cast<unsigned long long>(size), static_cast<long long>(in.gcount()));
  return text;
}

// Documents of a text: its lines, without the trailing '\r' of CRLF files,
// skipping lines that are empty or whitespace only.
std::vector<std::string_view> split_documents(const std::string& text) {
  std::vector<std::string_view> docs;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + pos, end - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t\r\f\v") != std::string_view::npos) docs.push_back(line);
    pos = end + 1;
  }
  return docs;
}

// Deterministic uniform [0, 1) for document (file, doc) under `seed`.
double doc_uniform(uint64_t seed, uint64_t file, uint64_t doc) {
  uint64_t x = seed;
  uint64_t h = splitmix64(x);
  x = h ^ file;
  h = splitmix64(x);
  x = h ^ doc;
  h = splitmix64(x);
  return static_cast<double>(h >> 11) * (1.0 / 9007199254740992.0);
}

// Accumulates documents of one split and writes a shard whenever the next
// document would not fit (a document longer than the limit gets a shard alone).
class SplitWriter {
 public:
  SplitWriter(std::string split, std::string out_dir, const Tokenizer& tok, uint64_t limit)
      : split_(std::move(split)), out_dir_(std::move(out_dir)), tok_(tok), limit_(limit) {}

  void add(const std::vector<uint32_t>& doc, uint32_t eot, uint64_t n_bytes) {
    const uint64_t len = doc.size() + 1;
    if (!tokens_.empty() && tokens_.size() + len > limit_) flush();
    tokens_.insert(tokens_.end(), doc.begin(), doc.end());
    tokens_.push_back(eot);
    offsets_.push_back(tokens_.size());
    n_bytes_ += n_bytes;
    if (tokens_.size() >= limit_) flush();
  }

  void flush() {
    if (tokens_.empty()) return;
    CHORUS_CHECK(index_ <= kMaxShardIndex,
                 "output directory %s: more than %d '%s' shards; raise shard_tokens", out_dir_.c_str(),
                 kMaxShardIndex + 1, split_.c_str());
    std::string path = (fs::path(out_dir_) / strfmt("%s_%06d.h5", split_.c_str(), index_)).string();
    write_shard(path, split_, tokens_, offsets_, tok_.vocab_size(), tok_.hash(), n_bytes_);
    ShardInfo info;
    info.path = path;
    info.split = split_;
    info.vocab_size = tok_.vocab_size();
    info.tokenizer_hash = tok_.hash();
    info.n_tokens = tokens_.size();
    info.n_docs = offsets_.size() - 1;
    info.n_bytes = n_bytes_;
    infos_.push_back(std::move(info));
    tokens_.clear();
    offsets_.assign(1, 0);
    n_bytes_ = 0;
    ++index_;
  }

  const std::vector<ShardInfo>& infos() const { return infos_; }

 private:
  std::string split_, out_dir_;
  const Tokenizer& tok_;
  uint64_t limit_;
  std::vector<uint32_t> tokens_;
  std::vector<uint64_t> offsets_{0};
  uint64_t n_bytes_ = 0;
  int index_ = 0;
  std::vector<ShardInfo> infos_;
};

// Refuses an out_dir holding shards unless `replace`, and one holding shards of
// another tokenizer; otherwise removes the old train/val shards (and leftover
// .tmp files) so none survive the rewrite.
void clear_old_shards(const std::string& out_dir, const std::string& hash, bool replace) {
  std::vector<std::string> old;
  for (const std::string& name : dir_file_names(out_dir)) {
    for (const char* split : {"train", "val"}) {
      const bool is_tmp = name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0;
      if (is_shard_name(is_tmp ? name.substr(0, name.size() - 4) : name, split)) {
        if (!is_tmp) {
          CHORUS_CHECK(replace,
                       "output directory %s already holds shards (%s); pass --force to replace them, or choose "
                       "another output directory",
                       out_dir.c_str(), name.c_str());
          const std::string path = (fs::path(out_dir) / name).string();
          std::string found;
          try {
            h5::File f = h5::File::open_read(path);
            found = h5::read_attr_string(f, "tokenizer_hash");
          } catch (const Error& e) {
            CHORUS_FAIL(
                "output directory %s holds %s, whose tokenizer_hash cannot be read (%s); remove it or choose "
                "another output directory",
                out_dir.c_str(), name.c_str(), e.what());
          }
          CHORUS_CHECK(
              found == hash,
              "output directory %s holds shards from another tokenizer: %s has tokenizer_hash %s, this "
              "tokenizer's hash is %s; remove them or choose another output directory",
              out_dir.c_str(), name.c_str(), found.c_str(), hash.c_str());
        }
        old.push_back(name);
      }
    }
  }
  for (const std::string& name : old) {
    std::error_code ec;
    fs::remove(fs::path(out_dir) / name, ec);
    CHORUS_CHECK(!ec, "output directory %s: cannot remove old shard %s: %s", out_dir.c_str(), name.c_str(),
                 ec.message().c_str());
  }
}

}  // namespace

// ---- write_shard --------------------------------------------------------------------

void write_shard(const std::string& path, const std::string& split, const std::vector<uint32_t>& tokens,
                 const std::vector<uint64_t>& doc_offsets, int64_t vocab_size,
                 const std::string& tokenizer_hash, uint64_t n_bytes) {
  const char* p = path.c_str();
  CHORUS_CHECK(valid_split(split), "%s: split: expected \"train\" or \"val\", got \"%s\"", p, split.c_str());
  CHORUS_CHECK(vocab_size > 0 && vocab_size <= kMaxVocab, "%s: vocab_size: expected 1..2^32, got %lld", p,
               static_cast<long long>(vocab_size));
  CHORUS_CHECK(!tokenizer_hash.empty(), "%s: tokenizer_hash: expected a non-empty string", p);
  CHORUS_CHECK(!doc_offsets.empty() && doc_offsets.front() == 0 && doc_offsets.back() == tokens.size(),
               "%s: doc_offsets: expected n_docs + 1 entries from 0 to the token count %zu, got %zu entries "
               "(first %llu, last %llu)",
               p, tokens.size(), doc_offsets.size(),
               static_cast<unsigned long long>(doc_offsets.empty() ? 0 : doc_offsets.front()),
               static_cast<unsigned long long>(doc_offsets.empty() ? 0 : doc_offsets.back()));
  for (size_t i = 1; i < doc_offsets.size(); ++i) {
    CHORUS_CHECK(doc_offsets[i] >= doc_offsets[i - 1],
                 "%s: doc_offsets: expected non-decreasing values, entry %zu (%llu) < entry %zu (%llu)", p, i,
                 static_cast<unsigned long long>(doc_offsets[i]), i - 1,
                 static_cast<unsigned long long>(doc_offsets[i - 1]));
  }
  auto bad = std::find_if(tokens.begin(), tokens.end(),
                          [&](uint32_t t) { return static_cast<int64_t>(t) >= vocab_size; });
  CHORUS_CHECK(bad == tokens.end(), "%s: tokens: expected ids < vocab_size %lld, token %lld is %u", p,
               static_cast<long long>(vocab_size), static_cast<long long>(bad - tokens.begin()),
               bad == tokens.end() ? 0u : *bad);

  const std::string tmp = path + ".tmp";
  try {
    h5::File f = h5::File::create(tmp);
    // HDF5 converts the uint32 ids to uint16 on write when they fit.
    const hid_t token_type = vocab_size <= 65536 ? H5T_STD_U16LE : H5T_STD_U32LE;
    h5::write_1d(f, "tokens", token_type, H5T_NATIVE_UINT32, tokens.data(), tokens.size());
    h5::write_1d(f, "doc_offsets", H5T_STD_U64LE, doc_offsets);
    h5::write_attr_string(f, "format", kFormat);
    h5::write_attr_int(f, "version", kVersion, H5T_STD_I32LE);
    h5::write_attr_int(f, "vocab_size", vocab_size, H5T_STD_I64LE);
    h5::write_attr_string(f, "tokenizer_hash", tokenizer_hash);
    h5::write_attr_uint(f, "n_tokens", tokens.size());
    h5::write_attr_uint(f, "n_docs", doc_offsets.size() - 1);
    h5::write_attr_uint(f, "n_bytes", n_bytes);
    h5::write_attr_string(f, "split", split);
    f.flush();
    f.close();
    fsync_file(tmp);
    std::error_code ec;
    fs::rename(tmp, path, ec);
    CHORUS_CHECK(!ec, "%s: cannot rename %s into place: %s", p, tmp.c_str(), ec.message().c_str());
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
  fsync_dir(fs::path(path).parent_path().string());
}

// ---- ShardReader ---------------------------------------------------------------------

ShardReader::ShardReader(const std::string& path, const std::string& expected_hash, int64_t expected_vocab) {
  const char* p = path.c_str();
  h5::File f = h5::File::open_read(path);

  const std::string format = h5::read_attr_string(f, "format");
  CHORUS_CHECK(format == kFormat,
               "%s: attribute 'format': expected \"%s\", found \"%s\" (not a Chorus text shard)", p, kFormat,
               format.c_str());
  const int64_t version = h5::read_attr_int(f, "version");
  CHORUS_CHECK(version == kVersion,
               "%s: attribute 'version': expected %lld, found %lld (HINT: written by another Chorus version; "
               "re-run prepare-text)",
               p, static_cast<long long>(kVersion), static_cast<long long>(version));

  info_.path = path;
  info_.split = h5::read_attr_string(f, "split");
  CHORUS_CHECK(valid_split(info_.split), "%s: attribute 'split': expected \"train\" or \"val\", found \"%s\"",
               p, info_.split.c_str());
  info_.tokenizer_hash = h5::read_attr_string(f, "tokenizer_hash");
  CHORUS_CHECK(
      expected_hash.empty() || info_.tokenizer_hash == expected_hash,
      "%s: attribute 'tokenizer_hash': expected %s (this run's tokenizer), found %s (HINT: the shard was "
      "made with another tokenizer; re-run prepare-text with this one)",
      p, expected_hash.c_str(), info_.tokenizer_hash.c_str());
  info_.vocab_size = h5::read_attr_int(f, "vocab_size");
  CHORUS_CHECK(info_.vocab_size > 0 && info_.vocab_size <= kMaxVocab,
               "%s: attribute 'vocab_size': expected 1..2^32, found %lld", p,
               static_cast<long long>(info_.vocab_size));
  CHORUS_CHECK(expected_vocab == 0 || info_.vocab_size == expected_vocab,
               "%s: attribute 'vocab_size': expected %lld (this run's tokenizer), found %lld", p,
               static_cast<long long>(expected_vocab), static_cast<long long>(info_.vocab_size));
  info_.n_tokens = h5::read_attr_uint(f, "n_tokens");
  info_.n_docs = h5::read_attr_uint(f, "n_docs");
  info_.n_bytes = h5::read_attr_uint(f, "n_bytes");

  const h5::Dataset1dInfo tok = h5::inspect_1d(f, "tokens");
  CHORUS_CHECK(
      tok.type_class == H5T_INTEGER && !tok.is_signed && (tok.type_bytes == 2 || tok.type_bytes == 4),
      "%s: dataset 'tokens': expected uint16 or uint32, found %s", p, tok.type_name().c_str());
  CHORUS_CHECK(tok.n == info_.n_tokens, "%s: dataset 'tokens': expected n_tokens = %llu elements, found %llu",
               p, static_cast<unsigned long long>(info_.n_tokens), static_cast<unsigned long long>(tok.n));
  const h5::Dataset1dInfo off = h5::inspect_1d(f, "doc_offsets");
  CHORUS_CHECK(off.type_class == H5T_INTEGER && !off.is_signed && off.type_bytes <= 8,
               "%s: dataset 'doc_offsets': expected uint64, found %s", p, off.type_name().c_str());
  CHORUS_CHECK(info_.n_docs < std::numeric_limits<uint64_t>::max() && off.n == info_.n_docs + 1,
               "%s: dataset 'doc_offsets': expected n_docs + 1 = %llu elements, found %llu", p,
               static_cast<unsigned long long>(info_.n_docs + 1), static_cast<unsigned long long>(off.n));

  try {
    tokens_.resize(tok.n);
    doc_offsets_.resize(off.n);
  } catch (const std::exception&) {
    CHORUS_FAIL(
        "%s: cannot allocate memory for %llu tokens and %llu doc_offsets (corrupt n_tokens / n_docs?)", p,
        static_cast<unsigned long long>(tok.n), static_cast<unsigned long long>(off.n));
  }
  h5::read_1d(f, "tokens", H5T_NATIVE_UINT32, tokens_.data(), tok.n);
  h5::read_1d(f, "doc_offsets", H5T_NATIVE_UINT64, doc_offsets_.data(), off.n);

  CHORUS_CHECK(doc_offsets_.front() == 0, "%s: dataset 'doc_offsets': expected first entry 0, found %llu", p,
               static_cast<unsigned long long>(doc_offsets_.front()));
  CHORUS_CHECK(doc_offsets_.back() == info_.n_tokens,
               "%s: dataset 'doc_offsets': expected last entry n_tokens = %llu, found %llu", p,
               static_cast<unsigned long long>(info_.n_tokens),
               static_cast<unsigned long long>(doc_offsets_.back()));
  for (size_t i = 1; i < doc_offsets_.size(); ++i) {
    CHORUS_CHECK(
        doc_offsets_[i] >= doc_offsets_[i - 1],
        "%s: dataset 'doc_offsets': expected non-decreasing values, entry %zu (%llu) < entry %zu (%llu)", p,
        i, static_cast<unsigned long long>(doc_offsets_[i]), i - 1,
        static_cast<unsigned long long>(doc_offsets_[i - 1]));
  }
  const int64_t vocab = info_.vocab_size;
  auto bad = std::find_if(tokens_.begin(), tokens_.end(),
                          [&](uint32_t t) { return static_cast<int64_t>(t) >= vocab; });
  CHORUS_CHECK(bad == tokens_.end(),
               "%s: dataset 'tokens': expected ids < vocab_size %lld, token %lld is %u (corrupt shard?)", p,
               static_cast<long long>(vocab), static_cast<long long>(bad - tokens_.begin()),
               bad == tokens_.end() ? 0u : *bad);
}

// ---- prepare_text -----------------------------------------------------------------------

std::vector<ShardInfo> prepare_text(const Tokenizer& tok, const PrepareTextOptions& opt) {
  CHORUS_CHECK(!opt.inputs.empty(), "prepare_text: inputs: expected at least one text file");
  CHORUS_CHECK(!opt.out_dir.empty(), "prepare_text: out_dir: expected a directory path");
  CHORUS_CHECK(opt.val_fraction >= 0.0 && opt.val_fraction <= 1.0,
               "prepare_text: val_fraction: expected a value in [0, 1], got %g", opt.val_fraction);
  CHORUS_CHECK(opt.shard_tokens > 0, "prepare_text: shard_tokens: expected > 0");
  CHORUS_CHECK(!tok.hash().empty(), "prepare_text: the tokenizer has no hash (not trained or loaded?)");

  // Pass 1: count documents and decide the split of each, without tokenizing,
  // so that memory stays bounded by one input file and one shard per split.
  const size_t n_files = opt.inputs.size();
  std::vector<uint64_t> docs_per_file(n_files, 0);
  uint64_t n_docs = 0, n_val = 0, total_bytes = 0;
  double min_u = 2.0, max_u = -1.0;
  std::pair<size_t, uint64_t> argmin{0, 0}, argmax{0, 0};
  for (size_t fi = 0; fi < n_files; ++fi) {
    const std::string text = read_whole_file(opt.inputs[fi]);
    total_bytes += text.size();
    const std::vector<std::string_view> docs = split_documents(text);
    docs_per_file[fi] = docs.size();
    for (uint64_t d = 0; d < docs.size(); ++d) {
      const double u = doc_uniform(opt.seed, fi, d);
      n_val += u < opt.val_fraction;
      if (u < min_u) {
        min_u = u;
        argmin = {fi, d};
      }
      if (u > max_u) {
        max_u = u;
        argmax = {fi, d};
      }
    }
    n_docs += docs.size();
  }
  CHORUS_CHECK(n_docs > 0, "prepare_text: no documents (non-empty lines) in the %zu input file(s), first %s",
               n_files, opt.inputs[0].c_str());
  // With two or more documents both splits get at least one.
  const bool force_val = n_docs >= 2 && n_val == 0;
  const bool force_train = n_docs >= 2 && n_val == n_docs;
  auto is_val = [&](size_t fi, uint64_t d) {
    if (force_val && std::make_pair(fi, d) == argmin) return true;
    if (force_train && std::make_pair(fi, d) == argmax) return false;
    return doc_uniform(opt.seed, fi, d) < opt.val_fraction;
  };

  {
    std::error_code ec;
    fs::create_directories(opt.out_dir, ec);
    CHORUS_CHECK(!ec && fs::is_directory(opt.out_dir), "output directory %s: cannot create it%s%s",
                 opt.out_dir.c_str(), ec ? ": " : " (a file of that name exists?)",
                 ec ? ec.message().c_str() : "");
  }
  clear_old_shards(opt.out_dir, tok.hash(), opt.replace);

  // Pass 2: tokenize in parallel, in blocks of documents, keeping input order.
  const int n_threads = opt.n_threads > 0 ? opt.n_threads : omp_get_max_threads();
  const uint32_t eot = tok.eot();
  constexpr uint64_t kBlockBytes = 8u << 20;
  SplitWriter train("train", opt.out_dir, tok, opt.shard_tokens);
  SplitWriter val("val", opt.out_dir, tok, opt.shard_tokens);
  ProgressBar bar("tokenize", total_bytes, "B", opt.progress);
  uint64_t bytes_before = 0;
  for (size_t fi = 0; fi < n_files; ++fi) {
    const std::string text = read_whole_file(opt.inputs[fi]);
    const std::vector<std::string_view> docs = split_documents(text);
    CHORUS_CHECK(docs.size() == docs_per_file[fi],
                 "input file %s: changed while being prepared (%llu documents, then %zu)",
                 opt.inputs[fi].c_str(), static_cast<unsigned long long>(docs_per_file[fi]), docs.size());
    size_t begin = 0;
    while (begin < docs.size()) {
      size_t end = begin;
      uint64_t block_bytes = 0;
      while (end < docs.size() && (end == begin || block_bytes + docs[end].size() <= kBlockBytes)) {
        block_bytes += docs[end].size();
        ++end;
      }
      const int64_t n_block = static_cast<int64_t>(end - begin);
      std::vector<std::vector<uint32_t>> ids(n_block);
      std::exception_ptr failure;
#pragma omp parallel for schedule(dynamic, 4) num_threads(n_threads)
      for (int64_t k = 0; k < n_block; ++k) {
        try {
          ids[k] = tok.encode(docs[begin + k]);
        } catch (...) {
#pragma omp critical(chorus_prepare_text_failure)
          if (!failure) failure = std::current_exception();
        }
      }
      if (failure) std::rethrow_exception(failure);
      for (int64_t k = 0; k < n_block; ++k) {
        const uint64_t d = begin + k;
        // The newline that ended the line is represented by <|endoftext|>.
        (is_val(fi, d) ? val : train).add(ids[k], eot, docs[d].size() + 1);
      }
      const std::string_view last = docs[end - 1];
      bar.update(bytes_before + static_cast<uint64_t>(last.data() + last.size() - text.data()));
      begin = end;
    }
    bytes_before += text.size();
    bar.update(bytes_before);
  }
  train.flush();
  val.flush();
  bar.finish();

  std::vector<ShardInfo> infos = train.infos();
  infos.insert(infos.end(), val.infos().begin(), val.infos().end());
  return infos;
}

// ---- list_shards -----------------------------------------------------------------------

std::vector<std::string> list_shards(const std::string& dir, const std::string& split) {
  std::error_code ec;
  CHORUS_CHECK(fs::is_directory(dir, ec), "shard directory %s: not found or not a directory", dir.c_str());
  std::vector<std::string> paths;
  for (const std::string& name : dir_file_names(dir)) {
    if (is_shard_name(name, split)) paths.push_back((fs::path(dir) / name).string());
  }
  std::sort(paths.begin(), paths.end());
  CHORUS_CHECK(!paths.empty(),
               "shard directory %s: no '%s' shards (expected files named %s_NNNNNN.h5; run prepare-text)",
               dir.c_str(), split.c_str(), split.c_str());
  return paths;
}

}  // namespace chorus::data
