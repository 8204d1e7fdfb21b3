#include "data/speech_shard.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <set>

#include "core/error.h"
#include "core/fsync.h"
#include "core/hdf5.h"

namespace chorus::data {

namespace fs = std::filesystem;

namespace {

constexpr const char* kFormat = "chorus-speech";
constexpr int64_t kVersion = 1;
constexpr int kMaxShardIndex = 999999;       // 6-digit file names, as the text shards
constexpr double kDurationTolerance = 1e-3;  // seconds; float32 of hours of audio is finer than this

bool valid_split(const std::string& s) {
  if (s.empty()) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
  });
}

// <split>_<one or more digits>.h5
bool is_shard_name(const std::string& name, const std::string& split) {
  const std::string prefix = split + "_";
  if (name.size() < prefix.size() + 1 + 3 || name.compare(0, prefix.size(), prefix) != 0) return false;
  if (name.compare(name.size() - 3, 3, ".h5") != 0) return false;
  for (size_t i = prefix.size(); i < name.size() - 3; ++i)
    if (name[i] < '0' || name[i] > '9') return false;
  return true;
}

std::string shard_name(const std::string& split, int index) {
  return strfmt("%s_%06d.h5", split.c_str(), index);
}

std::vector<std::string> dir_file_names(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  CHORUS_CHECK(!ec, "speech shard directory %s: cannot list it: %s", dir.c_str(), ec.message().c_str());
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    CHORUS_CHECK(!ec, "speech shard directory %s: cannot list it: %s", dir.c_str(), ec.message().c_str());
    names.push_back(it->path().filename().string());
  }
  return names;
}

std::string join(const std::vector<std::string>& v, char sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) out += sep;
    out += v[i];
  }
  return out;
}

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (true) {
    size_t end = s.find(',', pos);
    out.push_back(s.substr(pos, end == std::string::npos ? std::string::npos : end - pos));
    if (end == std::string::npos) break;
    pos = end + 1;
  }
  return out;
}

int16_t to_pcm16(float x) {
  const double v = std::lround(static_cast<double>(std::clamp(x, -1.0f, 1.0f)) * 32768.0);
  return static_cast<int16_t>(std::clamp(v, -32768.0, 32767.0));
}

void check_clip(const SpeechClip& c, size_t i, const std::string& where) {
  CHORUS_CHECK(!c.lang.empty() && c.lang.find(',') == std::string::npos,
               "%s: clip %zu: lang: expected a non-empty ISO code without ',', got \"%s\"", where.c_str(), i,
               c.lang.c_str());
  CHORUS_CHECK(!c.pcm.empty(), "%s: clip %zu (%s): pcm: expected at least one sample", where.c_str(), i,
               c.source.c_str());
}

}  // namespace

// The clips of one shard in their stored form (int16 PCM, concatenated
// bytes), so a writer holds 2 bytes per sample rather than the clips' floats.
class SpeechShardBuilder {
 public:
  size_t n_clips() const { return lang_.size(); }

  void add(const SpeechClip& c) {
    // Geometric growth (push_back): reserving exactly the new size per clip
    // copied the whole shard's PCM on every add (quadratic; 41 clips/s on 23k clips).
    for (float x : c.pcm) pcm_.push_back(to_pcm16(x));
    pcm_off_.push_back(pcm_.size());
    text_.insert(text_.end(), c.text.begin(), c.text.end());
    text_off_.push_back(text_.size());
    tokens_.insert(tokens_.end(), c.tokens.begin(), c.tokens.end());
    tok_off_.push_back(tokens_.size());
    source_.insert(source_.end(), c.source.begin(), c.source.end());
    src_off_.push_back(source_.size());
    lang_.push_back(c.lang);
    duration_.push_back(static_cast<float>(static_cast<double>(c.pcm.size()) / kSpeechSampleRate));
  }

  // Writes the clips into a new HDF5 file at `path` (not atomic) and fsyncs it.
  SpeechShardInfo write(const std::string& path, const std::string& split, const std::string& hash) const {
    const char* p = path.c_str();
    CHORUS_CHECK(valid_split(split), "%s: split: expected letters, digits, '-' or '_', got \"%s\"", p,
                 split.c_str());
    CHORUS_CHECK(!hash.empty(), "%s: tokenizer_hash: expected a non-empty string", p);
    CHORUS_CHECK(n_clips() > 0, "%s: clips: expected at least one clip", p);
    const std::set<std::string> lang_set(lang_.begin(), lang_.end());
    const std::vector<std::string> languages(lang_set.begin(), lang_set.end());
    CHORUS_CHECK(languages.size() <= 65536, "%s: lang: more than 65536 languages in one shard", p);
    std::map<std::string, uint16_t> index;
    for (size_t i = 0; i < languages.size(); ++i) index[languages[i]] = static_cast<uint16_t>(i);
    std::vector<uint16_t> lang;
    for (const std::string& l : lang_) lang.push_back(index.at(l));

    h5::File f = h5::File::create(path);
    h5::write_1d(f, "pcm", H5T_STD_I16LE, pcm_);
    h5::write_1d(f, "pcm_offsets", H5T_STD_U64LE, pcm_off_);
    h5::write_1d(f, "text", H5T_STD_U8LE, text_);
    h5::write_1d(f, "text_offsets", H5T_STD_U64LE, text_off_);
    h5::write_1d(f, "tokens", H5T_STD_U32LE, tokens_);
    h5::write_1d(f, "token_offsets", H5T_STD_U64LE, tok_off_);
    h5::write_1d(f, "lang", H5T_STD_U16LE, lang);
    h5::write_1d(f, "duration", H5T_IEEE_F32LE, duration_);
    h5::write_1d(f, "source", H5T_STD_U8LE, source_);
    h5::write_1d(f, "source_offsets", H5T_STD_U64LE, src_off_);
    h5::write_attr_string(f, "format", kFormat);
    h5::write_attr_int(f, "version", kVersion, H5T_STD_I32LE);
    h5::write_attr_int(f, "sample_rate", kSpeechSampleRate, H5T_STD_I32LE);
    h5::write_attr_string(f, "tokenizer_hash", hash);
    h5::write_attr_uint(f, "n_clips", n_clips());
    h5::write_attr_uint(f, "n_samples", pcm_.size());
    h5::write_attr_string(f, "languages", join(languages, ','));
    h5::write_attr_string(f, "split", split);
    f.flush();
    f.close();
    fsync_file(path);

    SpeechShardInfo info;
    info.path = path;
    info.split = split;
    info.n_clips = n_clips();
    info.n_samples = pcm_.size();
    info.languages = languages;
    return info;
  }

 private:
  std::vector<int16_t> pcm_;
  std::vector<uint64_t> pcm_off_{0}, text_off_{0}, tok_off_{0}, src_off_{0};
  std::vector<uint8_t> text_, source_;
  std::vector<uint32_t> tokens_;
  std::vector<std::string> lang_;
  std::vector<float> duration_;
};

namespace {

void remove_quietly(const std::string& path) {
  std::error_code ec;
  fs::remove(path, ec);
}

}  // namespace

// ---- writing ---------------------------------------------------------------------------

SpeechShardInfo write_speech_shard(const std::string& path, const std::string& split,
                                   const std::vector<SpeechClip>& clips, const std::string& tokenizer_hash) {
  const char* p = path.c_str();
  CHORUS_CHECK(valid_split(split), "%s: split: expected letters, digits, '-' or '_', got \"%s\"", p,
               split.c_str());
  CHORUS_CHECK(!tokenizer_hash.empty(), "%s: tokenizer_hash: expected a non-empty string", p);
  CHORUS_CHECK(!clips.empty(), "%s: clips: expected at least one clip", p);
  SpeechShardBuilder b;
  for (size_t i = 0; i < clips.size(); ++i) {
    check_clip(clips[i], i, path);
    b.add(clips[i]);
  }
  const std::string tmp = path + ".tmp";
  SpeechShardInfo info;
  try {
    info = b.write(tmp, split, tokenizer_hash);
    std::error_code ec;
    fs::rename(tmp, path, ec);
    CHORUS_CHECK(!ec, "%s: cannot rename %s into place: %s", path.c_str(), tmp.c_str(), ec.message().c_str());
  } catch (...) {
    remove_quietly(tmp);
    throw;
  }
  fsync_dir(fs::path(path).parent_path().string());
  info.path = path;
  return info;
}

SpeechShardWriter::SpeechShardWriter(std::string out_dir, std::string split, std::string tokenizer_hash,
                                     size_t clips_per_shard, bool force)
    : out_dir_(std::move(out_dir)),
      split_(std::move(split)),
      hash_(std::move(tokenizer_hash)),
      clips_per_shard_(clips_per_shard),
      force_(force),
      pending_(std::make_unique<SpeechShardBuilder>()) {
  const char* d = out_dir_.c_str();
  CHORUS_CHECK(valid_split(split_),
               "speech shards in %s: split: expected letters, digits, '-' or '_', got \"%s\"", d,
               split_.c_str());
  CHORUS_CHECK(!hash_.empty(), "speech shards in %s: tokenizer_hash: expected a non-empty string", d);
  CHORUS_CHECK(clips_per_shard_ > 0, "speech shards in %s: clips_per_shard: expected > 0", d);
  std::error_code ec;
  fs::create_directories(out_dir_, ec);
  CHORUS_CHECK(!ec && fs::is_directory(out_dir_), "output directory %s: cannot create it%s%s", d,
               ec ? ": " : " (a file of that name exists?)", ec ? ec.message().c_str() : "");
  std::vector<std::string> existing;
  for (const std::string& name : dir_file_names(out_dir_)) {
    const bool is_tmp = name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0;
    const std::string base = is_tmp ? name.substr(0, name.size() - 4) : name;
    if (!is_shard_name(base, split_)) continue;
    if (is_tmp)
      remove_quietly((fs::path(out_dir_) / name).string());  // left by an interrupted run
    else
      existing.push_back(name);
  }
  std::sort(existing.begin(), existing.end());
  CHORUS_CHECK(
      force_ || existing.empty(),
      "output directory %s already holds %zu '%s' shard(s) (%s%s); pass --force to replace them, or choose "
      "another output directory or split",
      d, existing.size(), split_.c_str(), existing.empty() ? "" : existing.front().c_str(),
      existing.size() > 1 ? ", ..." : "");
}

SpeechShardWriter::~SpeechShardWriter() {
  if (committed_) return;
  for (const std::string& tmp : tmp_paths_) remove_quietly(tmp);
}

void SpeechShardWriter::add(const SpeechClip& clip) {
  CHORUS_CHECK(!committed_, "speech shards in %s: add() after commit()", out_dir_.c_str());
  check_clip(clip, static_cast<size_t>(n_clips_), "speech shards in " + out_dir_);
  pending_->add(clip);
  ++n_clips_;
  if (pending_->n_clips() >= clips_per_shard_) flush();
}

void SpeechShardWriter::flush() {
  if (pending_->n_clips() == 0) return;
  const int index = static_cast<int>(infos_.size());
  CHORUS_CHECK(index <= kMaxShardIndex,
               "output directory %s: more than %d '%s' shards; raise clips_per_shard", out_dir_.c_str(),
               kMaxShardIndex + 1, split_.c_str());
  const std::string final_path = (fs::path(out_dir_) / shard_name(split_, index)).string();
  const std::string tmp = final_path + ".tmp";
  tmp_paths_.push_back(tmp);
  SpeechShardInfo info = pending_->write(tmp, split_, hash_);
  info.path = final_path;
  infos_.push_back(std::move(info));
  pending_ = std::make_unique<SpeechShardBuilder>();
}

const std::vector<SpeechShardInfo>& SpeechShardWriter::commit() {
  if (committed_) return infos_;
  flush();
  CHORUS_CHECK(!infos_.empty(), "speech shards in %s: no clips to write", out_dir_.c_str());
  std::set<std::string> ours;
  for (size_t i = 0; i < infos_.size(); ++i) {
    std::error_code ec;
    fs::rename(tmp_paths_[i], infos_[i].path, ec);
    CHORUS_CHECK(!ec, "%s: cannot rename %s into place: %s", infos_[i].path.c_str(), tmp_paths_[i].c_str(),
                 ec.message().c_str());
    ours.insert(fs::path(infos_[i].path).filename().string());
  }
  committed_ = true;
  if (force_) {
    for (const std::string& name : dir_file_names(out_dir_)) {
      if (!is_shard_name(name, split_) || ours.count(name)) continue;
      std::error_code ec;
      fs::remove(fs::path(out_dir_) / name, ec);
      CHORUS_CHECK(!ec, "output directory %s: cannot remove the old shard %s: %s", out_dir_.c_str(),
                   name.c_str(), ec.message().c_str());
    }
  }
  fsync_dir(out_dir_);
  return infos_;
}

std::vector<std::string> list_speech_shards(const std::string& dir, const std::string& split) {
  std::error_code ec;
  CHORUS_CHECK(fs::is_directory(dir, ec), "speech shard directory %s: not found or not a directory",
               dir.c_str());
  std::vector<std::string> paths;
  for (const std::string& name : dir_file_names(dir))
    if (is_shard_name(name, split)) paths.push_back((fs::path(dir) / name).string());
  std::sort(paths.begin(), paths.end());
  CHORUS_CHECK(
      !paths.empty(),
      "speech shard directory %s: no '%s' shards (expected files named %s_NNNNNN.h5; run prepare-speech "
      "--split %s)",
      dir.c_str(), split.c_str(), split.c_str(), split.c_str());
  return paths;
}

// ---- reading ---------------------------------------------------------------------------

namespace {

// Checks a dataset's stored type and returns its length.
uint64_t check_dataset(const h5::File& f, const char* name, H5T_class_t cls, bool is_signed, size_t max_bytes,
                       const char* expected) {
  const h5::Dataset1dInfo info = h5::inspect_1d(f, name);
  const bool ok = info.type_class == cls && info.type_bytes <= max_bytes &&
                  (cls != H5T_INTEGER || info.is_signed == is_signed);
  CHORUS_CHECK(ok, "%s: dataset '%s': expected %s, found %s", f.path().c_str(), name, expected,
               info.type_name().c_str());
  return info.n;
}

// Reads an offsets dataset of n_clips + 1 entries and checks that it starts at
// 0, never decreases and ends at data_len (the length of the dataset it indexes).
std::vector<uint64_t> read_offsets(const h5::File& f, const char* name, uint64_t n_clips, uint64_t data_len,
                                   const char* data_name) {
  const char* p = f.path().c_str();
  const uint64_t n = check_dataset(f, name, H5T_INTEGER, false, 8, "uint64");
  CHORUS_CHECK(n == n_clips + 1, "%s: dataset '%s': expected n_clips + 1 = %llu entries, found %llu", p, name,
               static_cast<unsigned long long>(n_clips + 1), static_cast<unsigned long long>(n));
  std::vector<uint64_t> off(n);
  h5::read_1d(f, name, H5T_NATIVE_UINT64, off.data(), n);
  CHORUS_CHECK(off.front() == 0, "%s: dataset '%s': expected first entry 0, found %llu", p, name,
               static_cast<unsigned long long>(off.front()));
  for (size_t i = 1; i < off.size(); ++i)
    CHORUS_CHECK(off[i] >= off[i - 1],
                 "%s: dataset '%s': inconsistent offsets: entry %zu (%llu) < entry %zu (%llu); expected "
                 "non-decreasing values",
                 p, name, i, static_cast<unsigned long long>(off[i]), i - 1,
                 static_cast<unsigned long long>(off[i - 1]));
  CHORUS_CHECK(
      off.back() == data_len,
      "%s: dataset '%s': inconsistent offsets: last entry is %llu, expected the length of '%s' (%llu)", p,
      name, static_cast<unsigned long long>(off.back()), data_name,
      static_cast<unsigned long long>(data_len));
  return off;
}

template <class T>
std::vector<T> read_all(const h5::File& f, const char* name, uint64_t n) {
  std::vector<T> v;
  try {
    v.resize(n);
  } catch (const std::exception&) {
    CHORUS_FAIL("%s: dataset '%s': cannot allocate memory for %llu elements (corrupt file?)",
                f.path().c_str(), name, static_cast<unsigned long long>(n));
  }
  h5::read_1d(f, name, h5::native_type<T>(), v.data(), n);
  return v;
}

}  // namespace

SpeechDataset::SpeechDataset(const std::string& dir, const std::string& split,
                             const std::string& tokenizer_hash, const std::vector<std::string>& ancestor_hashes)
    : paths_(list_speech_shards(dir, split)), hash_(tokenizer_hash) {
  std::set<std::string> all_langs;
  struct Loaded {
    std::vector<std::string> languages;
    std::vector<uint16_t> lang;
  };
  std::vector<Loaded> loaded;
  for (const std::string& path : paths_) {
    const char* p = path.c_str();
    h5::File f = h5::File::open_read(path);
    const std::string format = h5::read_attr_string(f, "format");
    CHORUS_CHECK(format == kFormat,
                 "%s: attribute 'format': expected \"%s\", found \"%s\" (not a Chorus speech shard)", p,
                 kFormat, format.c_str());
    const int64_t version = h5::read_attr_int(f, "version");
    CHORUS_CHECK(
        version == kVersion,
        "%s: attribute 'version': expected %lld, found %lld (HINT: written by another Chorus version; "
        "re-run prepare-speech)",
        p, static_cast<long long>(kVersion), static_cast<long long>(version));
    const int64_t rate = h5::read_attr_int(f, "sample_rate");
    CHORUS_CHECK(rate == kSpeechSampleRate, "%s: attribute 'sample_rate': expected %d, found %lld", p,
                 kSpeechSampleRate, static_cast<long long>(rate));
    const std::string hash = h5::read_attr_string(f, "tokenizer_hash");
    if (hash_.empty()) hash_ = hash;
    const bool ancestor = std::find(ancestor_hashes.begin(), ancestor_hashes.end(), hash) != ancestor_hashes.end();
    CHORUS_CHECK(
        hash == hash_ || ancestor,
        "%s: attribute 'tokenizer_hash': expected %s (%s), found %s (HINT: the shard was made with another "
        "tokenizer; re-run prepare-speech with this one)",
        p, hash_.c_str(), tokenizer_hash.empty() ? "that of the first shard" : "this run's tokenizer",
        hash.c_str());
    const std::string shard_split = h5::read_attr_string(f, "split");
    CHORUS_CHECK(shard_split == split,
                 "%s: attribute 'split': expected \"%s\" (as the file name says), found \"%s\"", p,
                 split.c_str(), shard_split.c_str());
    const uint64_t n_clips = h5::read_attr_uint(f, "n_clips");
    CHORUS_CHECK(n_clips > 0 && n_clips < std::numeric_limits<uint32_t>::max(),
                 "%s: attribute 'n_clips': expected 1 .. 2^32 - 2, found %llu", p,
                 static_cast<unsigned long long>(n_clips));
    const uint64_t n_samples = h5::read_attr_uint(f, "n_samples");
    Loaded l;
    l.languages = split_commas(h5::read_attr_string(f, "languages"));
    for (size_t i = 0; i < l.languages.size(); ++i) {
      CHORUS_CHECK(!l.languages[i].empty(),
                   "%s: attribute 'languages': expected comma-separated ISO codes, entry %zu is empty", p, i);
      CHORUS_CHECK(
          i == 0 || l.languages[i - 1] < l.languages[i],
          "%s: attribute 'languages': expected distinct codes in sorted order, found \"%s\" before \"%s\"", p,
          l.languages[i - 1].c_str(), l.languages[i].c_str());
    }

    const uint64_t n_pcm = check_dataset(f, "pcm", H5T_INTEGER, true, 2, "int16");
    CHORUS_CHECK(n_pcm == n_samples, "%s: dataset 'pcm': expected n_samples = %llu elements, found %llu", p,
                 static_cast<unsigned long long>(n_samples), static_cast<unsigned long long>(n_pcm));
    const uint64_t n_text = check_dataset(f, "text", H5T_INTEGER, false, 1, "uint8");
    const uint64_t n_tok = check_dataset(f, "tokens", H5T_INTEGER, false, 4, "uint32");
    const uint64_t n_src = check_dataset(f, "source", H5T_INTEGER, false, 1, "uint8");
    const uint64_t n_lang = check_dataset(f, "lang", H5T_INTEGER, false, 2, "uint16");
    const uint64_t n_dur = check_dataset(f, "duration", H5T_FLOAT, false, 4, "float32");
    CHORUS_CHECK(n_lang == n_clips, "%s: dataset 'lang': expected n_clips = %llu entries, found %llu", p,
                 static_cast<unsigned long long>(n_clips), static_cast<unsigned long long>(n_lang));
    CHORUS_CHECK(n_dur == n_clips, "%s: dataset 'duration': expected n_clips = %llu entries, found %llu", p,
                 static_cast<unsigned long long>(n_clips), static_cast<unsigned long long>(n_dur));

    const auto pcm_off = read_offsets(f, "pcm_offsets", n_clips, n_pcm, "pcm");
    const auto text_off = read_offsets(f, "text_offsets", n_clips, n_text, "text");
    const auto tok_off = read_offsets(f, "token_offsets", n_clips, n_tok, "tokens");
    const auto src_off = read_offsets(f, "source_offsets", n_clips, n_src, "source");
    for (uint64_t i = 0; i < n_clips; ++i)
      CHORUS_CHECK(pcm_off[i + 1] > pcm_off[i], "%s: dataset 'pcm_offsets': clip %llu has no samples", p,
                   static_cast<unsigned long long>(i));

    l.lang = read_all<uint16_t>(f, "lang", n_clips);
    for (uint64_t i = 0; i < n_clips; ++i)
      CHORUS_CHECK(l.lang[i] < l.languages.size(),
                   "%s: dataset 'lang': clip %llu has index %u, expected < %zu (the entries of 'languages')",
                   p, static_cast<unsigned long long>(i), l.lang[i], l.languages.size());
    const auto duration = read_all<float>(f, "duration", n_clips);
    for (uint64_t i = 0; i < n_clips; ++i) {
      const double expect = static_cast<double>(pcm_off[i + 1] - pcm_off[i]) / kSpeechSampleRate;
      CHORUS_CHECK(std::abs(static_cast<double>(duration[i]) - expect) <= kDurationTolerance,
                   "%s: dataset 'duration': clip %llu lasts %.4f s, expected %.4f s (its pcm samples / %d)",
                   p, static_cast<unsigned long long>(i), static_cast<double>(duration[i]), expect,
                   kSpeechSampleRate);
    }

    // Append to the in-memory dataset, shifting the offsets.
    const auto pcm = read_all<int16_t>(f, "pcm", n_pcm);
    const auto text = read_all<uint8_t>(f, "text", n_text);
    const auto tokens = read_all<uint32_t>(f, "tokens", n_tok);
    const auto source = read_all<uint8_t>(f, "source", n_src);
    const uint64_t pcm_base = pcm_.size(), text_base = text_.size(), tok_base = tokens_.size();
    pcm_.insert(pcm_.end(), pcm.begin(), pcm.end());
    text_.append(reinterpret_cast<const char*>(text.data()), text.size());
    tokens_.insert(tokens_.end(), tokens.begin(), tokens.end());
    for (uint64_t i = 0; i < n_clips; ++i) {
      pcm_offsets_.push_back(pcm_base + pcm_off[i + 1]);
      text_offsets_.push_back(text_base + text_off[i + 1]);
      token_offsets_.push_back(tok_base + tok_off[i + 1]);
      sources_.emplace_back(reinterpret_cast<const char*>(source.data()) + src_off[i],
                            src_off[i + 1] - src_off[i]);
    }
    all_langs.insert(l.languages.begin(), l.languages.end());
    loaded.push_back(std::move(l));
  }
  languages_.assign(all_langs.begin(), all_langs.end());
  CHORUS_CHECK(languages_.size() <= 65536, "speech shard directory %s: more than 65536 languages",
               dir.c_str());
  for (const Loaded& l : loaded) {
    std::vector<uint16_t> remap(l.languages.size());
    for (size_t i = 0; i < l.languages.size(); ++i)
      remap[i] = static_cast<uint16_t>(
          std::lower_bound(languages_.begin(), languages_.end(), l.languages[i]) - languages_.begin());
    for (uint16_t x : l.lang) lang_.push_back(remap[x]);
  }
}

void SpeechDataset::check_index(size_t i, const char* what) const {
  CHORUS_CHECK(i < size(), "SpeechDataset::%s: clip index %zu out of range (the split has %zu clips)", what,
               i, size());
}

const std::string& SpeechDataset::lang(size_t i) const {
  check_index(i, "lang");
  return languages_[lang_[i]];
}

uint16_t SpeechDataset::lang_id(size_t i) const {
  check_index(i, "lang_id");
  return lang_[i];
}

std::string_view SpeechDataset::text(size_t i) const {
  check_index(i, "text");
  return std::string_view(text_).substr(text_offsets_[i], text_offsets_[i + 1] - text_offsets_[i]);
}

std::span<const uint32_t> SpeechDataset::tokens(size_t i) const {
  check_index(i, "tokens");
  return std::span<const uint32_t>(tokens_.data() + token_offsets_[i],
                                   token_offsets_[i + 1] - token_offsets_[i]);
}

size_t SpeechDataset::n_samples(size_t i) const {
  check_index(i, "n_samples");
  return pcm_offsets_[i + 1] - pcm_offsets_[i];
}

void SpeechDataset::read_pcm(size_t i, std::vector<float>& out) const {
  check_index(i, "read_pcm");
  const int16_t* src = pcm_.data() + pcm_offsets_[i];
  out.resize(pcm_offsets_[i + 1] - pcm_offsets_[i]);
  for (size_t k = 0; k < out.size(); ++k) out[k] = static_cast<float>(src[k]) * (1.0f / 32768.0f);
}

const std::string& SpeechDataset::source(size_t i) const {
  check_index(i, "source");
  return sources_[i];
}

// ---- manifest ----------------------------------------------------------------------------

namespace {

std::string trim(std::string_view s) {
  const char* ws = " \t\r\n\f\v";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return "";
  const size_t e = s.find_last_not_of(ws);
  return std::string(s.substr(b, e - b + 1));
}

}  // namespace

std::vector<ManifestEntry> read_speech_manifest(const std::string& path) {
  const char* p = path.c_str();
  std::error_code ec;
  CHORUS_CHECK(fs::exists(path, ec), "manifest %s: file not found", p);
  CHORUS_CHECK(!fs::is_directory(path, ec), "manifest %s: is a directory, expected a TSV file", p);
  std::ifstream in(path, std::ios::binary);
  CHORUS_CHECK(in.good(), "manifest %s: cannot open for reading: %s", p, std::strerror(errno));
  const fs::path base = fs::path(path).parent_path();
  std::vector<ManifestEntry> out;
  std::string line;
  size_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (trim(line).empty()) continue;
    const size_t t1 = line.find('\t');
    const size_t t2 = t1 == std::string::npos ? std::string::npos : line.find('\t', t1 + 1);
    CHORUS_CHECK(t2 != std::string::npos,
                 "%s:%zu: malformed line: expected path<TAB>lang<TAB>text, found %s tab(s)", p, line_no,
                 t1 == std::string::npos ? "no" : "one");
    ManifestEntry e;
    e.line = line_no;
    e.path = trim(std::string_view(line).substr(0, t1));
    e.lang = trim(std::string_view(line).substr(t1 + 1, t2 - t1 - 1));
    e.text = trim(std::string_view(line).substr(t2 + 1));
    CHORUS_CHECK(!e.path.empty(), "%s:%zu: malformed line: the path (first field) is empty", p, line_no);
    CHORUS_CHECK(!e.lang.empty(), "%s:%zu: malformed line: the language (second field) is empty", p, line_no);
    const fs::path ep(e.path);
    e.resolved = (ep.is_absolute() ? ep : (base / ep)).lexically_normal().string();
    out.push_back(std::move(e));
  }
  CHORUS_CHECK(!in.bad(), "manifest %s: read error after line %zu", p, line_no);
  return out;
}

}  // namespace chorus::data
