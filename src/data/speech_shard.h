// HDF5 speech shards (DESIGN.md "Data"; the format is described for users in
// docs/SPEECH_DATA.md). One file <dir>/<split>_NNNNNN.h5 holds n clips:
//   /pcm            int16, all clips' 16 kHz mono samples concatenated (x * 32768,
//                   rounded, clamped to [-32768, 32767])
//   /pcm_offsets    uint64, n + 1: clip i is pcm[pcm_offsets[i], pcm_offsets[i+1])
//   /text           uint8, the UTF-8 transcripts concatenated (no separators)
//   /text_offsets   uint64, n + 1
//   /tokens         uint32, each transcript's token ids (tokenizer.encode(text), no
//                   special tokens) concatenated
//   /token_offsets  uint64, n + 1
//   /lang           uint16, n: index of the clip's language in the 'languages'
//                   attribute
//   /duration       float32, n: seconds (= samples / 16000)
//   /source         uint8, the original audio paths concatenated
//   /source_offsets uint64, n + 1
// and root attributes:
//   format = "chorus-speech", version = 1 (int), sample_rate = 16000 (int),
//   tokenizer_hash (string), n_clips (uint64), n_samples (uint64, = pcm length),
//   languages (string: the shard's distinct ISO codes, sorted, comma-separated,
//   e.g. "de,en"), split (string).
// Split names are letters, digits, '-' and '_' ("train", "val", "test-clean").
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace chorus::data {

// Sample rate of every speech shard (= audio::kSampleRate, Whisper's 16 kHz).
inline constexpr int kSpeechSampleRate = 16000;

// One clip to write.
struct SpeechClip {
  std::string lang;              // ISO code, e.g. "de"
  std::string text;              // transcript, UTF-8
  std::vector<uint32_t> tokens;  // tokenizer ids of `text`, without special tokens
  std::vector<float> pcm;        // 16 kHz mono in [-1, 1] (clipped when stored)
  std::string source;            // path of the original audio file
};

class SpeechShardBuilder;  // speech_shard.cpp: the clips of one shard, as stored

// What was written to one shard file.
struct SpeechShardInfo {
  std::string path;
  std::string split;
  uint64_t n_clips = 0;
  uint64_t n_samples = 0;  // 16 kHz samples in the shard
  std::vector<std::string> languages;
};

// Writes one shard atomically (path + ".tmp", fsync, rename). Throws
// chorus::Error naming the path and the field on an invalid split, an empty
// tokenizer hash, no clips, a clip without samples or without a language, a
// language code with a ',' in it.
SpeechShardInfo write_speech_shard(const std::string& path, const std::string& split,
                                   const std::vector<SpeechClip>& clips, const std::string& tokenizer_hash);

// Writes the clips of one split as a sequence of shards <out_dir>/<split>_NNNNNN.h5,
// all or nothing: every full shard is written (fsynced) as <name>.tmp, and
// commit() moves them into place; a writer destroyed without commit() removes
// its .tmp files, leaving the directory as it was.
class SpeechShardWriter {
 public:
  // Creates out_dir if needed. Refuses (chorus::Error) an out_dir that already
  // holds <split> shards unless `force`; with force, commit() removes the old
  // shards of the split that the new ones do not replace. Leftover .tmp files of
  // the split are removed. clips_per_shard > 0.
  SpeechShardWriter(std::string out_dir, std::string split, std::string tokenizer_hash,
                    size_t clips_per_shard, bool force);
  ~SpeechShardWriter();
  SpeechShardWriter(const SpeechShardWriter&) = delete;
  SpeechShardWriter& operator=(const SpeechShardWriter&) = delete;

  // Appends a clip (held as int16 PCM until its shard is written); writes a
  // shard (.tmp) whenever clips_per_shard are buffered. Throws on a clip
  // without samples or language.
  void add(const SpeechClip& clip);
  // Writes the last partial shard, renames every shard into place, removes the
  // replaced old shards (force) and fsyncs the directory. Throws if no clip was
  // added. Returns the shards written, in order.
  const std::vector<SpeechShardInfo>& commit();
  uint64_t n_clips() const { return n_clips_; }

 private:
  void flush();
  std::string out_dir_, split_, hash_;
  size_t clips_per_shard_;
  bool force_, committed_ = false;
  uint64_t n_clips_ = 0;
  std::unique_ptr<SpeechShardBuilder> pending_;  // clips of the shard being filled
  std::vector<std::string> tmp_paths_;
  std::vector<SpeechShardInfo> infos_;
};

// Every <dir>/<split>_<digits>.h5, sorted by name. Throws naming the directory
// if it is missing or holds none.
std::vector<std::string> list_speech_shards(const std::string& dir, const std::string& split);

// All clips of one split: every <dir>/<split>_*.h5 in name order, verified and
// held in memory (PCM as int16: 32 KB per second of audio). Every accessor is
// const and safe to call from many threads at once. Accessors taking a clip
// index throw chorus::Error when i >= size().
class SpeechDataset {
 public:
  // Loads and checks every shard of `split`: the format, version and
  // sample_rate attributes; tokenizer_hash equal to `tokenizer_hash` (the run's;
  // "" accepts any, but then all shards must agree with the first); the split
  // attribute; each dataset's type and length; offsets that start at 0, never
  // decrease and end at their dataset's length; lang indices within
  // 'languages'; durations matching the sample counts; no clip without samples.
  // Each failure names the file and the field. No shards for the split is an
  // error too. A shard made with one of `ancestor_hashes` (tokenizers the
  // run's extends with new language tokens, Tokenizer::ancestors: their ids
  // mean the same) is accepted as well.
  SpeechDataset(const std::string& dir, const std::string& split, const std::string& tokenizer_hash,
                const std::vector<std::string>& ancestor_hashes = {});

  size_t size() const { return lang_.size(); }
  const std::string& lang(size_t i) const;           // ISO code, e.g. "de"
  uint16_t lang_id(size_t i) const;                  // index of lang(i) in languages()
  std::string_view text(size_t i) const;             // transcript (UTF-8)
  std::span<const uint32_t> tokens(size_t i) const;  // transcript token ids, no specials
  size_t n_samples(size_t i) const;                  // 16 kHz samples
  double seconds(size_t i) const { return static_cast<double>(n_samples(i)) / kSpeechSampleRate; }
  // Clip i's samples as float (int16 / 32768) into out (resized).
  void read_pcm(size_t i, std::vector<float>& out) const;
  const std::string& source(size_t i) const;                         // original audio path
  std::vector<std::string> languages() const { return languages_; }  // distinct, sorted
  double total_seconds() const { return static_cast<double>(pcm_.size()) / kSpeechSampleRate; }
  const std::string& tokenizer_hash() const { return hash_; }
  const std::vector<std::string>& shard_paths() const { return paths_; }

 private:
  void check_index(size_t i, const char* what) const;
  std::vector<std::string> paths_;
  std::string hash_;
  std::vector<std::string> languages_;
  std::vector<int16_t> pcm_;
  std::vector<uint64_t> pcm_offsets_{0};
  std::string text_;
  std::vector<uint64_t> text_offsets_{0};
  std::vector<uint32_t> tokens_;
  std::vector<uint64_t> token_offsets_{0};
  std::vector<uint16_t> lang_;
  std::vector<std::string> sources_;
};

// One line of a speech manifest: `path<TAB>lang<TAB>text`.
struct ManifestEntry {
  size_t line = 0;       // 1-based line number in the manifest
  std::string path;      // as written
  std::string resolved;  // path, or manifest directory / path when relative
  std::string lang;      // as written (surrounding blanks removed)
  std::string text;      // the rest of the line (may contain tabs), surrounding blanks removed
};

// Reads a manifest: UTF-8 text, one clip per line, no header; a '\r' before
// the newline is dropped, blank lines are skipped; relative paths are relative
// to the manifest's directory. A line without two tabs, or with an empty path
// or language, is refused naming "<manifest>:<line>". An empty transcript is
// NOT an error here (prepare-speech skips such clips).
std::vector<ManifestEntry> read_speech_manifest(const std::string& path);

}  // namespace chorus::data
