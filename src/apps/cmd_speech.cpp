// chorus prepare-speech: manifest of clips -> validated 16 kHz speech shards
// (data/speech_shard.h; docs/SPEECH_DATA.md).
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <exception>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "apps/commands.h"
#include "apps/options.h"
#include "audio/wav.h"
#include "core/error.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/timer.h"
#include "data/speech_shard.h"
#include "data/tokenizer.h"

namespace chorus::apps {

namespace fs = std::filesystem;

namespace {

// <|startoftranscript|> <|xx|> <|transcribe|> <|notimestamps|> before the
// transcript and <|endoftext|> after it (DESIGN.md "Speech model").
constexpr int kPromptAndEndTokens = 5;
// Whisper's decoder context (n_text_ctx = 448).
constexpr int kDefaultMaxTokens = 448;
// Clips decoded in parallel before being appended, in manifest order.
constexpr size_t kBlock = 128;

// Why a clip was skipped; the order is the order of the summary.
enum Reason {
  kUnreadable,
  kMalformed,
  kEmptyAudio,
  kEmptyTranscript,
  kUnknownLanguage,
  kTooLong,
  kNumReasons
};
constexpr std::array<const char*, kNumReasons> kReasonNames = {
    "unreadable", "malformed WAV", "empty audio", "empty transcript", "unknown language", "too long"};

struct Outcome {
  int reason = -1;     // -1: kept
  std::string detail;  // why it was skipped
  data::SpeechClip clip;
};

// Validates and loads one clip. Cheap checks (transcript, language, length)
// come first so that a doomed clip is never decoded.
Outcome process(const data::ManifestEntry& e, const data::Tokenizer& tok, const std::set<std::string>& langs,
                int max_tokens, const std::string& tok_path) {
  Outcome o;
  auto skip = [&](Reason r, std::string detail) {
    o.reason = r;
    o.detail = std::move(detail);
    return o;
  };
  if (e.text.empty()) return skip(kEmptyTranscript, "the transcript (third field) is empty");
  if (!langs.count(e.lang))
    return skip(kUnknownLanguage, strfmt("language '%s' has no <|%s|> token in the tokenizer %s",
                                         e.lang.c_str(), e.lang.c_str(), tok_path.c_str()));
  o.clip.tokens = tok.encode(e.text);
  const size_t n_tok = o.clip.tokens.size() + kPromptAndEndTokens;
  if (n_tok > static_cast<size_t>(max_tokens))
    return skip(kTooLong,
                strfmt("the transcript is %zu tokens + %d prompt/end tokens = %zu > --max-tokens %d",
                       o.clip.tokens.size(), kPromptAndEndTokens, n_tok, max_tokens));
  std::error_code ec;
  const fs::file_status st = fs::status(e.resolved, ec);
  if (!fs::exists(st)) return skip(kUnreadable, strfmt("%s: file not found", e.resolved.c_str()));
  if (!fs::is_regular_file(st))
    return skip(kUnreadable, strfmt("%s: not a regular file", e.resolved.c_str()));
  if (::access(e.resolved.c_str(), R_OK) != 0)
    return skip(kUnreadable, strfmt("%s: cannot read: %s", e.resolved.c_str(), std::strerror(errno)));
  try {
    o.clip.pcm = audio::load_audio_16k(e.resolved);
  } catch (const Error& err) {
    return skip(kMalformed, err.what());
  }
  if (o.clip.pcm.empty())
    return skip(kEmptyAudio, strfmt("%s: the file holds no samples", e.resolved.c_str()));
  o.clip.lang = e.lang;
  o.clip.text = e.text;
  o.clip.source = e.resolved;
  return o;
}

}  // namespace

int cmd_prepare_speech(int argc, char** argv, dist::Runtime& rt) {
  require_single_process(rt, "prepare-speech");
  OptionSet o(
      "prepare-speech",
      "Reads the clips of a manifest (one 'path<TAB>lang<TAB>text' line per clip, no header; relative\n"
      "paths are relative to the manifest's directory), decodes each WAV, mixes it to mono, resamples it\n"
      "to 16 kHz, tokenizes its transcript and writes HDF5 speech shards <out>/<split>_NNNNNN.h5.\n"
      "Bad clips are skipped with one warning each: unreadable file, malformed WAV, empty audio, empty\n"
      "transcript, a language without a <|xx|> token in the tokenizer, a transcript longer than\n"
      "--max-tokens. A summary follows; if every clip is skipped nothing is written and the exit code is 1.\n"
      "Shards appear all at once at the end (written as .tmp, then renamed). See docs/SPEECH_DATA.md.");
  o.add_optional<std::string>("data", "manifest", "the TSV manifest (required)");
  o.add<std::string>("data", "tokenizer", "tokenizer.json",
                     "tokenizer JSON from chorus train-tokenizer; its hash is stored in every shard");
  o.add_optional<std::string>("data", "out",
                              "output directory for the shards (required; created if missing)");
  o.add<std::string>("data", "split", "train",
                     "split name: the shards are <out>/<split>_NNNNNN.h5 (letters, digits, - _)");
  o.add<int>("data", "max-tokens", kDefaultMaxTokens,
             "skip clips whose transcript tokens + 5 prompt/end tokens exceed this (448 = Whisper's decoder "
             "context)");
  o.add<uint64_t>("data", "clips-per-shard", 1000, "maximum clips per shard file");
  o.add_switch("data", "force", "replace existing <split> shards in --out (refused without it)");
  o.add<int>("system", "threads", 0, "OpenMP threads for decoding and resampling (0 = all cores)");
  o.add_switch("system", "quiet", "no progress bar");
  o.allow_config();
  po::variables_map vm;
  if (!o.parse(argc, argv, vm)) return 0;
  CHORUS_CHECK(vm.count("manifest"), "manifest: no manifest given (use --manifest FILE.tsv)");
  CHORUS_CHECK(vm.count("out"), "out: no output directory given (use --out DIR)");
  const std::string manifest = vm["manifest"].as<std::string>();
  const std::string out_dir = vm["out"].as<std::string>();
  const std::string split = vm["split"].as<std::string>();
  const std::string tok_path = vm["tokenizer"].as<std::string>();
  const int max_tokens = vm["max-tokens"].as<int>();
  CHORUS_CHECK(max_tokens > kPromptAndEndTokens,
               "max-tokens: must be > %d (the prompt and end tokens), got %d", kPromptAndEndTokens,
               max_tokens);
  const uint64_t per_shard = vm["clips-per-shard"].as<uint64_t>();
  CHORUS_CHECK(per_shard > 0, "clips-per-shard: must be > 0");
  const int threads = vm["threads"].as<int>();
  CHORUS_CHECK(threads >= 0, "threads: must be >= 0, got %d", threads);
  if (threads > 0) omp_set_num_threads(threads);
  const bool progress = !vm["quiet"].as<bool>();
  check_input_file(manifest, "manifest", "a manifest file (path<TAB>lang<TAB>text lines)");
  check_input_file(tok_path, "tokenizer", "a tokenizer JSON file");
  check_not_input(out_dir, "out", {manifest, tok_path});

  Timer timer;
  const std::vector<data::ManifestEntry> entries = data::read_speech_manifest(manifest);
  CHORUS_CHECK(!entries.empty(), "manifest %s: no clips (every line is blank)", manifest.c_str());
  const data::Tokenizer tok = data::Tokenizer::load(tok_path);
  const std::set<std::string> langs(tok.languages().begin(), tok.languages().end());
  data::SpeechShardWriter writer(out_dir, split, tok.hash(), per_shard, vm["force"].as<bool>());

  std::array<size_t, kNumReasons> skipped{};
  std::map<std::string, std::pair<size_t, uint64_t>> per_lang;  // clips, samples
  uint64_t total_samples = 0;
  {
    ProgressBar bar("clips", entries.size(), "clips", progress);
    for (size_t begin = 0; begin < entries.size(); begin += kBlock) {
      const size_t end = std::min(entries.size(), begin + kBlock);
      const int64_t n = static_cast<int64_t>(end - begin);
      std::vector<Outcome> outcomes(n);
      std::exception_ptr failure;
#pragma omp parallel for schedule(dynamic, 1)
      for (int64_t k = 0; k < n; ++k) {
        try {
          outcomes[k] = process(entries[begin + k], tok, langs, max_tokens, tok_path);
        } catch (...) {
#pragma omp critical(chorus_prepare_speech_failure)
          if (!failure) failure = std::current_exception();
        }
      }
      if (failure) std::rethrow_exception(failure);
      for (int64_t k = 0; k < n; ++k) {
        const data::ManifestEntry& e = entries[begin + k];
        Outcome& oc = outcomes[k];
        if (oc.reason >= 0) {
          ++skipped[oc.reason];
          log_warn("%s:%zu: skipped %s: %s: %s", manifest.c_str(), e.line, e.path.c_str(),
                   kReasonNames[oc.reason], oc.detail.c_str());
          continue;
        }
        auto& pl = per_lang[oc.clip.lang];
        pl.first += 1;
        pl.second += oc.clip.pcm.size();
        total_samples += oc.clip.pcm.size();
        writer.add(oc.clip);
      }
      bar.update(end);
    }
    bar.finish();
  }

  size_t n_skipped = 0;
  std::string reasons;
  for (int r = 0; r < kNumReasons; ++r) {
    if (!skipped[r]) continue;
    n_skipped += skipped[r];
    reasons += strfmt("%s%zu %s", reasons.empty() ? "" : ", ", skipped[r], kReasonNames[r]);
  }
  CHORUS_CHECK(
      writer.n_clips() > 0,
      "every clip of manifest %s was skipped (%zu clips: %s; see the warnings above); no shards written",
      manifest.c_str(), n_skipped, reasons.c_str());
  const auto& infos = writer.commit();

  const double hours = static_cast<double>(total_samples) / data::kSpeechSampleRate / 3600.0;
  log_info("prepared %llu clips (%.2f hours) in %zu shards; skipped %zu%s%s",
           static_cast<unsigned long long>(writer.n_clips()), hours, infos.size(), n_skipped,
           n_skipped ? ": " : "", reasons.c_str());
  std::string by_lang;
  for (const auto& [lang, c] : per_lang)
    by_lang += strfmt("%s%s %zu (%.2f h)", by_lang.empty() ? "" : ", ", lang.c_str(), c.first,
                      static_cast<double>(c.second) / data::kSpeechSampleRate / 3600.0);
  log_info("languages: %s", by_lang.c_str());
  log_info("wrote %s/%s_*.h5 (tokenizer hash %.12s) in %.1f s", out_dir.c_str(), split.c_str(),
           tok.hash().c_str(), timer.seconds());
  return 0;
}

}  // namespace chorus::apps
