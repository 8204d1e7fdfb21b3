// chorus finetune-speech / transcribe / evaluate.
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "apps/job_flags.h"
#include "apps/options.h"
#include "apps/train_flags.h"
#include "audio/mel.h"
#include "audio/wav.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/weights.h"
#include "core/error.h"
#include "core/log.h"
#include "core/strfmt.h"
#include "core/timer.h"
#include "data/speech_shard.h"
#include "data/tokenizer.h"
#include "eval/wer.h"
#include "train/decode.h"
#include "train/finetune_speech.h"
#include "train/speech_batch.h"

namespace chorus::apps {

namespace fs = std::filesystem;

void add_finetune_speech_flags(OptionSet& o) {
  o.add<int>("encoder", "n-layer", 4, "encoder Transformer blocks");
  o.add<int>("encoder", "n-embd", 256, "encoder width (d)");
  o.add<int>("encoder", "n-head", 4, "encoder attention heads");
  o.add<int>("encoder", "n-mels", 80, "log-mel bins (80, Whisper's)");
  o.add<int>("encoder", "max-frames", 1000, "longest input in 10 ms frames (longer clips are cut)");
  o.add<int>("encoder", "subsample", 2,
             "input frames per encoder row: 2 (Whisper's: 50 rows per second) or 4 (both stem convolutions "
             "stride 2: 25 rows per second, half the encoder's work)");
  o.add<std::string>("decoder", "init-decoder", "",
                     "the pretrained GPT: a weights file (model.h5), a pretrain run directory, or a GPT checkpoint "
                     "(directory or save directory with `latest`); its tokenizer hash must match --tokenizer. "
                     "'none' = a decoder from random weights with the shape below");
  o.add<std::string>("decoder", "init-from", "",
                     "continue from a trained speech model instead (a finetune-speech run directory or checkpoint): "
                     "its encoder, decoder and CTC head, with a fresh optimizer from step 0; the [encoder] shape "
                     "comes from it (and its CTC prior, unless --ctc-prior is given). With --init-decoder as well: only its encoder "
                     "and CTC head, the decoder from --init-decoder (a GPT, or none = random weights)");
  o.add_switch("decoder", "ctc-prior",
               "give the decoder's cross-attention the CTC alignment prior: each position's attention scores get "
               "log(prior + floor), the prior covering the frames the CTC head puts after the transcript bytes "
               "before it (true bytes in training, the hypothesis' in decoding), so the decoder reads the right "
               "frames from its first step instead of having to learn to align (docs/SPEECH.md). Part of the "
               "model: transcribe / evaluate apply it too");
  o.add<int>("decoder", "ctc-prior-window", 8, "memory rows (20 ms each) after the prefix that the prior covers");
  o.add<float>("decoder", "ctc-prior-floor", 0.01f, "0.01",
               "added to the prior before the log: the weight attention keeps outside the window");
  o.add<int>("decoder", "ctc-prior-heads", 0, "cross-attention heads per layer that get the prior (0 = all)");
  o.add<int>("decoder", "dec-n-layer", 6, "decoder blocks when --init-decoder none");
  o.add<int>("decoder", "dec-n-embd", 384, "decoder width when --init-decoder none");
  o.add<int>("decoder", "dec-n-head", 6, "decoder heads when --init-decoder none");
  o.add<int>("decoder", "dec-context", 256, "decoder context when --init-decoder none");
  o.add<std::string>("data", "tokenizer", "tokenizer.json", "tokenizer JSON (the GPT's)");
  o.add<std::string>("data", "data", "speech", "directory of train_*.h5 / val_*.h5 speech shards");
  o.add<int>("data", "max-tokens", 128, "decoder positions per clip (prompt + transcript + end)");
  o.add<double>("data", "temperature", 1.0, "1",
                "language balancing: language l drawn with probability p_l^(1/T) (1 = as in the data; large = "
                "uniform over languages)");
  o.add_switch("data", "no-spec-augment", "train without SpecAugment");
  o.add<int>("data", "bucket-batches", 1,
             "length bucketing: sort each pool of N global batches' clips by length and cut it into batches of "
             "similar clips, taken in a random order (less padding, the same clips; 1 = off)");
  o.add<int>("train", "batch", 8, "clips per micro-batch (per data-parallel rank)");
  o.add<int>("train", "eval-batches", 4, "validation micro-batches for the val loss");
  o.add<int>("train", "eval-clips", 64,
             "val clips (spread over the split) decoded at each evaluation: val CER/WER of the attention decoder "
             "alone, greedy, and the CTC head's greedy CER (0 = none; evaluate decodes jointly)");
  o.add<float>("train", "ctc-weight", 0.3f, "0.3", "weight of the encoder's CTC loss (0 = attention only)");
  o.add<int64_t>("optim", "freeze-decoder-steps", 0, "train only the new layers for the first N steps");
  o.add<int64_t>("optim", "ctc-only-steps", 0,
                 "train the encoder on the CTC loss alone for the first N steps (the decoder is not run: cheaper "
                 "steps that align the encoder first)");
  o.add<float>("optim", "decoder-lr-scale", 1.0f, "1", "learning-rate factor of the pretrained decoder tensors");
  o.add<float>("optim", "new-lr-scale", 1.0f, "1", "learning-rate factor of the encoder and cross-attention");
  o.add<std::string>("optim", "muon-scope", "all",
                     "with --optimizer muon, the hidden matrices Muon updates: all (encoder, cross-attention and the "
                     "pretrained decoder's blocks), new (encoder and cross-attention; the pretrained blocks keep "
                     "AdamW, and a step skips their Newton-Schulz iterations) or encoder");
  TrainFlagDefaults d;
  d.run_dir = "checkpoints/speech";
  d.lr = 1e-3f;
  d.min_lr = 1e-4f;
  d.eval_every = 100;
  add_train_flags(o, d);
}

train::FinetuneSpeechOptions read_finetune_speech_flags(const po::variables_map& vm) {
  train::FinetuneSpeechOptions p;
  p.encoder.n_layer = vm["n-layer"].as<int>();
  p.encoder.n_embd = vm["n-embd"].as<int>();
  p.encoder.n_head = vm["n-head"].as<int>();
  p.encoder.n_mels = vm["n-mels"].as<int>();
  p.encoder.max_frames = vm["max-frames"].as<int>();
  p.encoder.subsample = vm["subsample"].as<int>();
  p.init_decoder = vm["init-decoder"].as<std::string>();
  p.init_from = vm["init-from"].as<std::string>();
  p.prior.enabled = vm["ctc-prior"].as<bool>();
  p.prior.window = vm["ctc-prior-window"].as<int>();
  p.prior.floor = vm["ctc-prior-floor"].as<float>();
  p.prior.n_heads = vm["ctc-prior-heads"].as<int>();
  CHORUS_CHECK(p.prior.window >= 0 && p.prior.floor > 0 && p.prior.n_heads >= 0,
               "ctc-prior-window must be >= 0, ctc-prior-floor > 0 and ctc-prior-heads >= 0 (got %d, %g, %d)",
               p.prior.window, static_cast<double>(p.prior.floor), p.prior.n_heads);
  p.decoder_if_random.n_layer = vm["dec-n-layer"].as<int>();
  p.decoder_if_random.n_embd = vm["dec-n-embd"].as<int>();
  p.decoder_if_random.n_head = vm["dec-n-head"].as<int>();
  p.decoder_if_random.context = vm["dec-context"].as<int>();
  p.tokenizer_path = vm["tokenizer"].as<std::string>();
  p.data_dir = vm["data"].as<std::string>();
  p.max_tokens = vm["max-tokens"].as<int>();
  p.temperature = vm["temperature"].as<double>();
  p.spec_augment = !vm["no-spec-augment"].as<bool>();
  p.bucket_batches = vm["bucket-batches"].as<int>();
  p.batch = vm["batch"].as<int>();
  p.eval_batches = vm["eval-batches"].as<int>();
  p.eval_clips = vm["eval-clips"].as<int>();
  CHORUS_CHECK(p.eval_batches >= 1 && p.eval_clips >= 0, "eval-batches: must be >= 1 (eval-clips >= 0)");
  p.ctc_weight = vm["ctc-weight"].as<float>();
  p.freeze_decoder_steps = vm["freeze-decoder-steps"].as<int64_t>();
  p.ctc_only_steps = vm["ctc-only-steps"].as<int64_t>();
  p.decoder_lr_scale = vm["decoder-lr-scale"].as<float>();
  p.new_lr_scale = vm["new-lr-scale"].as<float>();
  p.muon_scope = vm["muon-scope"].as<std::string>();
  CHORUS_CHECK(p.decoder_lr_scale >= 0 && p.new_lr_scale >= 0, "decoder-lr-scale / new-lr-scale: must be >= 0");
  p.train = read_train_flags(vm);
  return p;
}

int cmd_finetune_speech(int argc, char** argv, dist::Runtime& rt) {
  OptionSet o("finetune-speech",
              "Fine-tunes the joint speech encoder-decoder (docs/SPEECH.md) on speech shards from prepare-speech:\n"
              "a new audio encoder with a CTC head, and a decoder that is a pretrained GPT (--init-decoder) with a\n"
              "cross-attention block in every layer whose output projection starts at zero. Loss = attention\n"
              "cross-entropy on the transcript + ctc-weight x CTC. DP / TP / ZeRO-1, gradient accumulation,\n"
              "mixed precision, checkpoints and exact resume as for pretrain (the same loop and flags).");
  add_finetune_speech_flags(o);
  o.allow_config();
  po::variables_map vm;
  if (!o.parse(argc, argv, vm)) return 0;
  train::FinetuneSpeechOptions p = read_finetune_speech_flags(vm);
  dist::ParallelGrid grid(rt, vm["tp"].as<int>());
  p.train.grid = &grid;
  check_input_file(p.tokenizer_path, "tokenizer", "a tokenizer JSON file");
  const auto r = train::finetune_speech(p);
  if (r.stopped) return r.stop_signal != 0 ? train::kExitPreempted : 0;
  log_info("done: %lld steps, train loss %.4f -> %.4f%s; checkpoint %s", static_cast<long long>(r.steps_done),
           r.first_loss, r.last_loss,
           r.last_eval.contains("val_cer")
               ? strfmt(", val CER %.1f%%", 100 * r.last_eval.at("val_cer").get<double>()).c_str()
               : "",
           r.checkpoint.c_str());
  return 0;
}

namespace {

// A trained recogniser loaded for inference (fp32, one rank).
struct LoadedRecognizer {
  data::Tokenizer tok;
  std::unique_ptr<models::SpeechSeq2Seq> model;
  std::string dir;
};

// A weights file of a speech model (chorus quantize): the model from its
// header, every tensor by name, int8 decoding when it is quantised.
LoadedRecognizer load_recognizer_file(const std::string& path, const std::string& tok_override, int max_batch,
                                      const po::variables_map& vm) {
  LoadedRecognizer r;
  r.dir = path;
  checkpoint::WeightsHeader h;
  auto tensors = checkpoint::read_weights_tensors(path, &h);
  CHORUS_CHECK(h.model_type == "speech", "checkpoint '%s': attribute 'model_type' is '%s', expected 'speech'",
               path.c_str(), h.model_type.c_str());
  std::string tok_path = tok_override.empty() ? h.tokenizer : tok_override;
  CHORUS_CHECK(!tok_path.empty(), "checkpoint '%s': no tokenizer recorded (give --tokenizer)", path.c_str());
  check_input_file(tok_path, "tokenizer", "a tokenizer JSON file");
  r.tok = data::Tokenizer::load(tok_path);
  CHORUS_CHECK(r.tok.hash() == h.tokenizer_hash,
               "checkpoint '%s': attribute 'tokenizer_hash' is %s but tokenizer '%s' has %s", path.c_str(),
               h.tokenizer_hash.c_str(), tok_path.c_str(), r.tok.hash().c_str());
  const auto cfg = models::SpeechSeq2SeqConfig::from_manifest(h.config, h.model_extra, path);
  r.model = std::make_unique<models::SpeechSeq2Seq>(cfg, max_batch, cfg.encoder.max_frames, cfg.decoder.context,
                                                    nullptr, Precision::fp32);
  const auto params = r.model->params();
  CHORUS_CHECK(tensors.size() == r.model->param_table().size(),
               "checkpoint '%s': %zu tensors, the model of its header has %zu", path.c_str(), tensors.size(),
               r.model->param_table().size());
  for (const auto& p : r.model->param_table()) {
    auto it = std::find_if(tensors.begin(), tensors.end(), [&](const auto& t) { return t.name == p.name; });
    CHORUS_CHECK(it != tensors.end(), "checkpoint '%s': tensor 'params/%s' is missing", path.c_str(), p.name.c_str());
    CHORUS_CHECK(it->shape == p.shape && it->data.size() == p.numel,
                 "checkpoint '%s': tensor 'params/%s' has another shape than the model of its header", path.c_str(),
                 p.name.c_str());
    std::copy(it->data.begin(), it->data.end(), params.begin() + p.offset);
  }
  r.model->decoder().set_decode_weights(decode_weights_from(vm, h.quantization, path));
  return r;
}

LoadedRecognizer load_recognizer(const std::string& path, const std::string& tok_override, int max_batch,
                                 const po::variables_map& vm) {
  if (fs::is_regular_file(path)) return load_recognizer_file(path, tok_override, max_batch, vm);
  LoadedRecognizer r;
  r.dir = checkpoint::resolve_checkpoint_dir(path);
  const auto m = checkpoint::read_manifest((fs::path(r.dir) / "manifest.json").string());
  CHORUS_CHECK(m.model_type == "speech",
               "checkpoint '%s': field 'model_type' is '%s', expected 'speech' (a finetune-speech checkpoint)",
               r.dir.c_str(), m.model_type.c_str());
  std::string tok_path = tok_override;
  if (tok_path.empty()) {
    CHORUS_CHECK(m.run.contains("tokenizer"), "checkpoint '%s': no tokenizer recorded (give --tokenizer)",
                 r.dir.c_str());
    tok_path = m.run.at("tokenizer").get<std::string>();
  }
  r.tok = data::Tokenizer::load(tok_path);
  const auto cfg = models::SpeechSeq2SeqConfig::from_manifest(m.model, m.model_extra, r.dir);
  r.model = std::make_unique<models::SpeechSeq2Seq>(cfg, max_batch, cfg.encoder.max_frames, cfg.decoder.context,
                                                    nullptr, Precision::fp32);
  dist::ParallelGrid grid = dist::ParallelGrid::single();
  train::load_speech_weights(grid, r.dir, *r.model, r.tok.hash());
  r.model->decoder().set_decode_weights(decode_weights_from(vm, "", r.dir));
  return r;
}

struct Clip {
  std::string path, lang, text;
  double seconds = 0;
};

// Decodes clips in batches; returns transcripts in order and the decoding time.
std::vector<train::Transcript> run_clips(LoadedRecognizer& rec, const std::vector<Clip>& clips,
                                         const train::DecodeOptions& dopt, int batch, double* seconds_out,
                                         std::vector<double>* durations, train::DecodeTiming* timing) {
  audio::LogMel mel;
  const auto& ecfg = rec.model->config().encoder;
  std::vector<train::Transcript> out;
  Timer timer;
  models::SpeechBatch b;
  for (size_t at = 0; at < clips.size(); at += batch) {
    const size_t end = std::min(clips.size(), at + batch);
    std::vector<train::SpeechItem> items(end - at);
    for (size_t i = at; i < end; ++i) {
      const auto pcm = audio::load_audio_16k(clips[i].path);
      CHORUS_CHECK(!pcm.empty(), "%s: no audio samples", clips[i].path.c_str());
      if (durations) durations->push_back(pcm.size() / double(audio::kSampleRate));
      items[i - at] = train::make_item(mel, pcm, ecfg.max_frames);
      items[i - at].lang = dopt.lang.empty() ? rec.tok.languages().front() : dopt.lang;
    }
    train::build_batch(items, rec.tok, ecfg.n_mels, 8, b);
    auto t = train::transcribe_batch(*rec.model, rec.tok, b, dopt, {}, timing);
    out.insert(out.end(), t.begin(), t.end());
  }
  *seconds_out = timer.seconds();
  return out;
}

std::vector<Clip> read_manifest_clips(const std::string& path) {
  check_input_file(path, "manifest", "a manifest file (path<TAB>lang<TAB>text lines)");
  std::vector<Clip> clips;
  const fs::path base = fs::path(path).parent_path();
  for (const auto& e : data::read_speech_manifest(path)) {
    const fs::path p(e.path);  // relative paths are relative to the manifest's directory
    clips.push_back({p.is_absolute() ? e.path : (base / p).string(), e.lang, e.text, 0});
  }
  return clips;
}

void add_decode_flags(OptionSet& o) {
  o.add<std::string>("model", "checkpoint", "", "a finetune-speech run / save directory (its latest checkpoint), a "
                                                "checkpoint directory, or a weights file from `chorus quantize`");
  o.add<std::string>("model", "tokenizer", "", "tokenizer JSON (default: the one the checkpoint records)");
  add_decode_weight_flags(o, "the decoder's matrices (the encoder and the cross-attention keys/values stay fp32)");
  o.add<std::string>("decode", "lang", "", "language code of the audio (default: detect it per clip from the "
                                            "language-token distribution)");
  o.add<int>("decode", "beam", 1, "beam width (1 = greedy)");
  o.add<float>("decode", "ctc-weight", 0.3f, "0.3",
               "joint CTC/attention decoding: the attention decoder proposes tokens, ranked by (1 - w) x attention + "
               "w x CTC prefix log-probability (0 = attention alone)");
  o.add<int>("decode", "max-new-tokens", 120, "longest transcript in tokens");
  o.add<int>("decode", "min-new-tokens", 0, "no <|endoftext|> (and no repetition stop) before this many tokens: "
                                            "a fixed output length for speed benchmarks");
  o.add<int>("decode", "batch", 8, "clips decoded together");
  o.add<int>("system", "threads", 0, "OpenMP threads (0 = all cores)");
}

train::DecodeOptions read_decode_flags(const po::variables_map& vm) {
  CHORUS_CHECK(vm["threads"].as<int>() >= 0, "threads: must be >= 0, got %d", vm["threads"].as<int>());
  if (vm["threads"].as<int>() > 0) omp_set_num_threads(vm["threads"].as<int>());
  train::DecodeOptions d;
  d.lang = vm["lang"].as<std::string>();
  d.beam = vm["beam"].as<int>();
  d.ctc_weight = vm["ctc-weight"].as<float>();
  d.max_new_tokens = vm["max-new-tokens"].as<int>();
  d.min_new_tokens = vm["min-new-tokens"].as<int>();
  CHORUS_CHECK(d.min_new_tokens >= 0 && d.min_new_tokens <= d.max_new_tokens,
               "min-new-tokens: must be in [0, max-new-tokens], got %d", d.min_new_tokens);
  CHORUS_CHECK(d.beam >= 1, "beam: must be >= 1, got %d", d.beam);
  CHORUS_CHECK(d.ctc_weight >= 0 && d.ctc_weight <= 1, "ctc-weight: must be in [0, 1], got %g", d.ctc_weight);
  CHORUS_CHECK(d.max_new_tokens >= 1, "max-new-tokens: must be >= 1");
  CHORUS_CHECK(vm["batch"].as<int>() >= 1, "batch: must be >= 1");
  CHORUS_CHECK(!vm["checkpoint"].as<std::string>().empty(), "checkpoint: give --checkpoint DIR");
  return d;
}

}  // namespace

int cmd_transcribe(int argc, char** argv, dist::Runtime& rt) {
  require_single_process(rt, "transcribe");
  OptionSet o("transcribe", "Transcribes WAV files with a finetune-speech checkpoint: one line per file,\n"
                            "path<TAB>text (--json: one JSON object per line with language, tokens, avg_logprob).");
  add_decode_flags(o);
  o.add<std::string>("input", "manifest", "", "a manifest (path<TAB>lang<TAB>text) of files to transcribe");
  o.add_switch("output", "json", "one JSON object per line");
  o.add_list("input", "wav", "WAV files (positional)");
  o.positional("wav", -1);
  po::variables_map vm;
  if (!o.parse(argc, argv, vm)) return 0;
  const auto dopt = read_decode_flags(vm);
  std::vector<Clip> clips;
  if (!vm["manifest"].as<std::string>().empty()) clips = read_manifest_clips(vm["manifest"].as<std::string>());
  if (vm.count("wav"))
    for (const auto& w : vm["wav"].as<std::vector<std::string>>()) {
      check_input_file(w, "wav", "a WAV file");
      clips.push_back({w, "", "", 0});
    }
  CHORUS_CHECK(!clips.empty(), "wav: give WAV files (positional) or --manifest TSV");
  auto rec = load_recognizer(vm["checkpoint"].as<std::string>(), vm["tokenizer"].as<std::string>(),
                             vm["batch"].as<int>(), vm);
  double secs = 0;
  std::vector<double> dur;
  train::DecodeTiming timing;
  const auto t = run_clips(rec, clips, dopt, vm["batch"].as<int>(), &secs, &dur, &timing);
  for (size_t i = 0; i < clips.size(); ++i) {
    if (vm["json"].as<bool>()) {
      nlohmann::json j = {{"path", clips[i].path}, {"lang", t[i].lang}, {"text", t[i].text},
                          {"tokens", t[i].tokens}, {"avg_logprob", t[i].avg_logprob},
                          {"repetition_stopped", t[i].loop_stopped}};
      std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    } else {
      std::printf("%s\t%s\n", clips[i].path.c_str(), t[i].text.c_str());
    }
  }
  double audio_s = 0;
  for (double x : dur) audio_s += x;
  log_info("transcribed %zu files (%.1f s of audio) in %.2f s: real-time factor %.3f (encoder %.2f s, decoder %.2f s, "
           "%s weights)",
           clips.size(), audio_s, secs, secs / std::max(audio_s, 1e-9), timing.encoder_s, timing.decoder_s,
           nn::decode_weights_name(rec.model->decoder().decode_weights()));
  return 0;
}

int cmd_evaluate(int argc, char** argv, dist::Runtime& rt) {
  require_single_process(rt, "evaluate");
  OptionSet o("evaluate", "WER and CER per language and pooled over a manifest (path<TAB>lang<TAB>text), with the\n"
                          "normaliser of src/eval/wer.h (NFKC, case folding, punctuation removed, whitespace\n"
                          "collapsed; CER without spaces for unsegmented languages), S/I/D counts and real-time factor.");
  add_decode_flags(o);
  o.add<std::string>("input", "manifest", "", "the manifest to score (required)");
  o.add_switch("decode", "detect-lang", "detect the language instead of taking it from the manifest");
  o.add_switch("output", "json", "print the result as JSON");
  o.add<std::string>("output", "out", "", "also write the JSON result and every transcript to this file");
  o.add_switch("output", "force", "replace an existing --out file (refused without it)");
  po::variables_map vm;
  if (!o.parse(argc, argv, vm)) return 0;
  auto dopt = read_decode_flags(vm);
  CHORUS_CHECK(!vm["manifest"].as<std::string>().empty(), "manifest: give --manifest TSV");
  if (const std::string out = vm["out"].as<std::string>(); !out.empty()) {
    check_not_input(out, "out", {vm["manifest"].as<std::string>(),
                                 checkpoint::resolve_checkpoint_dir(vm["checkpoint"].as<std::string>()),
                                 vm["tokenizer"].as<std::string>()});
    check_new_file(out, "out", vm["force"].as<bool>());
  }
  const auto clips = read_manifest_clips(vm["manifest"].as<std::string>());
  CHORUS_CHECK(!clips.empty(), "manifest '%s': no clips", vm["manifest"].as<std::string>().c_str());
  auto rec = load_recognizer(vm["checkpoint"].as<std::string>(), vm["tokenizer"].as<std::string>(),
                             vm["batch"].as<int>(), vm);
  eval::ErrorRates rates;
  std::map<std::string, std::pair<double, double>> rtf;  // lang -> (decode s, audio s)
  nlohmann::json rows = nlohmann::json::array();
  // Decode language by language (the prompt is per batch unless detected).
  std::map<std::string, std::vector<size_t>> by_lang;
  train::DecodeTiming timing;
  for (size_t i = 0; i < clips.size(); ++i) by_lang[clips[i].lang].push_back(i);
  for (const auto& [lang, idx] : by_lang) {
    std::vector<Clip> sub;
    for (size_t i : idx) sub.push_back(clips[i]);
    train::DecodeOptions d = dopt;
    if (!vm["detect-lang"].as<bool>() && d.lang.empty()) d.lang = lang;
    double secs = 0;
    std::vector<double> dur;
    const auto t = run_clips(rec, sub, d, vm["batch"].as<int>(), &secs, &dur, &timing);
    double audio_s = 0;
    for (double x : dur) audio_s += x;
    rtf[lang] = {secs, audio_s};
    for (size_t k = 0; k < sub.size(); ++k) {
      rates.add(lang, sub[k].text, t[k].text);
      rows.push_back({{"path", sub[k].path}, {"lang", lang}, {"ref", sub[k].text}, {"hyp", t[k].text},
                      {"detected_lang", t[k].lang}});
    }
  }
  nlohmann::json j = rates.to_json();
  double ts = 0, as = 0;
  for (const auto& [lang, v] : rtf) {
    j["rtf"][lang] = v.first / std::max(v.second, 1e-9);
    ts += v.first;
    as += v.second;
  }
  j["rtf"]["overall"] = ts / std::max(as, 1e-9);
  j["checkpoint"] = rec.dir;
  j["decode"] = {{"beam", dopt.beam},
                 {"ctc_weight", dopt.ctc_weight},
                 {"weights", nn::decode_weights_name(rec.model->decoder().decode_weights())},
                 {"encoder_s", timing.encoder_s},
                 {"decoder_s", timing.decoder_s}};
  if (vm["json"].as<bool>())
    std::printf("%s\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  else {
    std::string per_lang;
    for (const auto& [lang, v] : rtf) per_lang += strfmt(" %s %.3f", lang.c_str(), v.first / std::max(v.second, 1e-9));
    std::printf("%s\nreal-time factor %.3f (%.1f s of audio decoded in %.1f s, beam %d; encoder %.1f s, decoder %.1f s, "
                "%s weights); per language:%s\n",
                rates.table().c_str(), ts / std::max(as, 1e-9), as, ts, dopt.beam, timing.encoder_s, timing.decoder_s,
                nn::decode_weights_name(rec.model->decoder().decode_weights()), per_lang.c_str());
  }
  if (!vm["out"].as<std::string>().empty()) {
    nlohmann::json full = j;
    full["transcripts"] = rows;
    std::ofstream f(vm["out"].as<std::string>());
    f << full.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    CHORUS_CHECK(f.good(), "out: cannot write '%s'", vm["out"].as<std::string>().c_str());
  }
  return 0;
}

}  // namespace chorus::apps
