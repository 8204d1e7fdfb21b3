#include "train/finetune_speech.h"

#include <algorithm>
#include <filesystem>
#include <memory>

#include "audio/mel.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/state.h"
#include "checkpoint/tools.h"
#include "checkpoint/weights.h"
#include "core/error.h"
#include "core/json_number.h"
#include "core/log.h"
#include "core/rng.h"
#include "data/speech_sampler.h"
#include "data/speech_shard.h"
#include "data/tokenizer.h"
#include "eval/wer.h"
#include "nn/tp_shard.h"
#include "train/decode.h"
#include "train/run_dir.h"
#include "train/speech_batch.h"
#include "train/plan.h"

namespace chorus::train {

namespace fs = std::filesystem;

namespace {

// Refuses a pretrained decoder (source: its file) trained with another tokenizer.
void check_decoder_tokenizer(const std::string& source, const std::string& source_hash, const data::Tokenizer& tok,
                             const std::string& tok_path) {
  CHORUS_CHECK(source_hash == tok.hash(),
               "init-decoder: '%s' was trained with tokenizer %s but --tokenizer '%s' has hash %s (the decoder "
               "must use the tokenizer it was pretrained with)",
               source.c_str(), source_hash.c_str(), tok_path.c_str(), tok.hash().c_str());
}

// A GPT weights file from --init-decoder: a weights file, a run directory
// (its model.h5) or a GPT checkpoint (exported once into the run directory,
// after its tokenizer is checked).
std::string decoder_weights(const std::string& path, const std::string& run_dir, dist::ParallelGrid& grid,
                            const data::Tokenizer& tok, const std::string& tok_path) {
  if (fs::is_regular_file(path)) return path;
  CHORUS_CHECK(fs::exists(path), "init-decoder: '%s' does not exist (a GPT weights file, run directory or checkpoint)",
               path.c_str());
  if (fs::is_regular_file(fs::path(path) / "model.h5")) return (fs::path(path) / "model.h5").string();
  const std::string dir = checkpoint::resolve_checkpoint_dir(path);
  const std::string manifest = (fs::path(dir) / "manifest.json").string();
  const std::string hash = checkpoint::read_manifest(manifest).tokenizer_hash;
  if (tok.vocab_size_of(hash) == 0) check_decoder_tokenizer(manifest, hash, tok, tok_path);  // an ancestor grows
  const std::string out = (fs::path(run_dir) / "init-decoder.h5").string();
  std::string err;
  if (grid.world_rank() == 0) {
    try {
      checkpoint::export_weights(dir, out);
    } catch (const Error& e) {
      err = e.what();
    }
  }
  checkpoint::agree_on_failure(grid.world(), err, false);
  return out;
}

std::vector<std::string> ancestor_hashes(const data::Tokenizer& tok) {
  std::vector<std::string> h;
  for (const auto& a : tok.ancestors()) h.push_back(a.hash);
  return h;
}

class SpeechTask final : public TrainTask {
 public:
  SpeechTask(const FinetuneSpeechOptions& o, const data::Tokenizer& tok, const models::SpeechSeq2SeqConfig& cfg,
             dist::ParallelGrid& grid, bool pretrained)
      : o_(o),
        tok_(tok),
        cfg_(cfg),
        grid_(grid),
        pretrained_(pretrained),
        train_(o.data_dir, "train", tok.hash(), ancestor_hashes(tok)),
        val_(o.data_dir, "val", tok.hash(), ancestor_hashes(tok)),
        sampler_(train_, o.train.seed, o.temperature),
        bucketer_(sampler_, clip_lengths(train_), o.train.seed, o.bucket_batches),
        model_(cfg, o.batch, cfg.encoder.max_frames, o.max_tokens, &grid.tp(), o.train.precision) {
    table_ = model_.param_table();
    for (auto& p : table_) {
      const bool is_encoder = p.name.rfind("encoder.", 0) == 0;
      const bool is_new = is_encoder || p.name.find(".ln_x.") != std::string::npos ||
                          p.name.find(".crossattn.") != std::string::npos;
      (is_new ? new_ranges_ : old_ranges_).push_back({p.offset, p.offset + p.numel});
      if ((o.muon_scope == "new" && !is_new) || (o.muon_scope == "encoder" && !is_encoder))
        p.hidden_matrix = false;  // AdamW for this one (--muon-scope)
    }
  }
  models::SpeechSeq2Seq& model() { return model_; }

  std::span<float> params() override { return model_.params(); }
  std::span<float> grads() override { return model_.grads(); }
  const std::vector<models::ParamSpec>& param_table() const override { return table_; }
  void zero_grad() override { model_.zero_grad(); }

  // Clips of global batch `consumed / G` for this DP rank, with SpecAugment
  // drawn from (seed, global index).
  void load_train_batch() {
    const int G = o_.batch * grid_.dp_size();
    idx_.resize(o_.batch);
    bucketer_.batch_indices(consumed_, G, grid_.dp_rank(), grid_.dp_size(), idx_.data());
    std::vector<SpeechItem> items(o_.batch);
    const uint64_t first = consumed_ + static_cast<uint64_t>(grid_.dp_rank()) * o_.batch;
#pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < o_.batch; ++i) {
      std::vector<float> pcm;
      train_.read_pcm(idx_[i], pcm);
      items[i] = make_item(mel_, pcm, cfg_.encoder.max_frames);
      items[i].lang = train_.lang(idx_[i]);
      const auto t = train_.tokens(idx_[i]);
      items[i].text.assign(t.begin(), t.end());
      if (o_.spec_augment) {
        Rng rng(o_.train.seed ^ 0x737065637ull, first + static_cast<uint64_t>(i));
        audio::spec_augment(items[i].feats.data(), items[i].n_frames, cfg_.encoder.n_mels, o_.augment, rng);
      }
    }
    consumed_ += G;
    build_batch(items, tok_, cfg_.encoder.n_mels, o_.max_tokens, batch_);
  }

  // The optimizer step the next micro-batch belongs to (consumed_ is restored on resume).
  int64_t current_step() const {
    return o_.train.step_after_micro_batches(consumed_ / (static_cast<uint64_t>(o_.batch) * grid_.dp_size()));
  }
  bool ctc_only(int64_t step) const { return step < o_.ctc_only_steps; }
  // At least one step has trained the decoder (its CER means something).
  bool decoder_trained() const { return current_step() > o_.ctc_only_steps; }

  double train_micro_batch(float loss_scale) override {
    const bool with_decoder = !ctc_only(current_step());
    load_train_batch();
    const models::SpeechLosses l = model_.forward(batch_, o_.ctc_weight, with_decoder);
    model_.backward(loss_scale, o_.ctc_weight);
    last_att_ = l.att;
    last_ctc_ = l.ctc;
    return l.att + o_.ctc_weight * l.ctc;
  }

  std::vector<LrGroup> lr_groups(int64_t step) const override {
    std::vector<LrGroup> g;
    if (ctc_only(step)) {  // the decoder (cross-attention included) is not run: frozen
      const size_t n_enc = model_.encoder_params(), n = n_enc + model_.decoder().n_params();
      g.push_back({{n_enc, n}, 0.0f});
      if (o_.new_lr_scale != 1.0f) g.push_back({{0, n_enc}, o_.new_lr_scale});
      return g;
    }
    const float old_scale = step < o_.freeze_decoder_steps && pretrained_ ? 0.0f : o_.decoder_lr_scale;
    if (old_scale != 1.0f)
      for (const auto& r : old_ranges_) g.push_back({r, old_scale});
    if (o_.new_lr_scale != 1.0f)
      for (const auto& r : new_ranges_) g.push_back({r, o_.new_lr_scale});
    return g;
  }

  // The val clips idx[begin, end).
  std::vector<SpeechItem> val_items(const std::vector<size_t>& idx, size_t begin, size_t end) {
    std::vector<SpeechItem> items(end - begin);
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t j = begin; j < end; ++j) {
      const size_t i = idx[j];
      std::vector<float> pcm;
      val_.read_pcm(i, pcm);
      items[j - begin] = make_item(mel_, pcm, cfg_.encoder.max_frames);
      items[j - begin].lang = val_.lang(i);
      const auto t = val_.tokens(i);
      items[j - begin].text.assign(t.begin(), t.end());
    }
    return items;
  }
  // n val clips spread evenly over the split (which prepare-speech writes in
  // manifest order, usually one language after another): every language counts.
  std::vector<size_t> spread_val(size_t n) const {
    n = std::min(n, val_.size());
    std::vector<size_t> idx(n);
    for (size_t j = 0; j < n; ++j) idx[j] = j * val_.size() / n;
    return idx;
  }

  nlohmann::json evaluate() override {
    // Loss: eval_batches x (batch x dp) val clips spread over the split, each DP rank its slice.
    const size_t G = static_cast<size_t>(o_.batch) * grid_.dp_size();
    double att = 0.0, ctc = 0.0;
    int n = 0;
    const std::vector<size_t> loss_idx = spread_val(static_cast<size_t>(o_.eval_batches) * G);
    for (int k = 0; k < o_.eval_batches && (k + 1) * G <= loss_idx.size(); ++k, ++n) {
      const size_t begin = k * G + static_cast<size_t>(grid_.dp_rank()) * o_.batch;
      build_batch(val_items(loss_idx, begin, begin + o_.batch), tok_, cfg_.encoder.n_mels, o_.max_tokens, batch_);
      const models::SpeechLosses l = model_.forward(batch_, o_.ctc_weight);
      att += l.att;
      ctc += l.ctc;
    }
    if (n == 0) {  // fewer val clips than one global batch: every rank evaluates what there is
      const std::vector<size_t> idx = spread_val(o_.batch);
      build_batch(val_items(idx, 0, idx.size()), tok_, cfg_.encoder.n_mels, o_.max_tokens, batch_);
      const models::SpeechLosses l = model_.forward(batch_, o_.ctc_weight);
      att = l.att;
      ctc = l.ctc;
      n = 1;
    }
    att = grid_.dp().all_reduce_scalar(att / n, dist::ReduceOp::avg);
    ctc = grid_.dp().all_reduce_scalar(ctc / n, dist::ReduceOp::avg);
    nlohmann::json m = {{"val_loss", att + o_.ctc_weight * ctc}, {"val_att_loss", att}, {"val_ctc_loss", ctc}};
    if (o_.eval_clips > 0 && grid_.tp_size() == 1) {
      // CER / WER of the attention decoder alone, greedy, and of the CTC head's
      // best path, on eval_clips val clips spread over the split: clip j of them
      // on DP rank j % dp, counts summed over DP. (evaluate decodes jointly.)
      eval::ErrorRates rates, ctc_rates;
      const std::vector<size_t> spread = spread_val(static_cast<size_t>(o_.eval_clips));
      std::vector<size_t> mine;
      for (size_t j = grid_.dp_rank(); j < spread.size(); j += grid_.dp_size()) mine.push_back(spread[j]);
      DecodeOptions dopt;
      dopt.ctc_weight = 0.0f;
      for (size_t at = 0; at < mine.size(); at += o_.batch) {
        const size_t end = std::min(mine.size(), at + o_.batch);
        build_batch(val_items(mine, at, end), tok_, cfg_.encoder.n_mels, o_.max_tokens, batch_);
        const auto ctc_hyp = ctc_greedy_batch(model_, batch_);
        for (size_t j = at; j < end; ++j)
          ctc_rates.add(val_.lang(mine[j]), std::string(val_.text(mine[j])), ctc_hyp[j - at]);
        if (!decoder_trained()) continue;
        const auto hyp = transcribe_batch(model_, tok_, batch_, dopt);
        for (size_t j = at; j < end; ++j)
          rates.add(val_.lang(mine[j]), std::string(val_.text(mine[j])), hyp[j - at].text);
      }
      const eval::Totals t = rates.overall(), tc = ctc_rates.overall();
      double c[6] = {static_cast<double>(t.chars.errors()),  static_cast<double>(t.chars.ref_length),
                     static_cast<double>(t.words.errors()),  static_cast<double>(t.words.ref_length),
                     static_cast<double>(tc.chars.errors()), static_cast<double>(tc.chars.ref_length)};
      for (double& v : c) v = grid_.dp().all_reduce_scalar(v, dist::ReduceOp::sum);
      if (decoder_trained()) {
        m["val_cer"] = c[0] / std::max(1.0, c[1]);
        m["val_wer"] = c[2] / std::max(1.0, c[3]);
      }
      m["val_ctc_cer"] = c[4] / std::max(1.0, c[5]);
    }
    return m;
  }
  std::string describe_eval(const nlohmann::json& m) const override {
    std::string s = strfmt("loss %.4f (attention %.4f, ctc %.4f)", m.at("val_loss").get<double>(),
                           m.at("val_att_loss").get<double>(), m.at("val_ctc_loss").get<double>());
    if (m.contains("val_cer"))
      s += strfmt(" | CER %.1f%% WER %.1f%%", 100 * m.at("val_cer").get<double>(),
                  100 * m.at("val_wer").get<double>());
    if (m.contains("val_ctc_cer")) s += strfmt(" | CTC greedy CER %.1f%%", 100 * m.at("val_ctc_cer").get<double>());
    return s;
  }

  nlohmann::json step_metrics() const override {
    return {{"att_loss", last_att_}, {"ctc_loss", last_ctc_}};  // the last micro-batch of this rank
  }
  const char* throughput_unit() const override { return "frames/s"; }  // 10 ms of audio each
  double tokens_per_step() const override {
    // frames of audio (10 ms) per step, at the batch's typical length: counted as
    // 100 items per second of audio of the train split on average
    const double avg_frames = 100.0 * train_.total_seconds() / std::max<size_t>(1, train_.size());
    return avg_frames * o_.batch * o_.train.grad_accum * grid_.dp_size();
  }
  double flops_per_step(int64_t step) const override {
    const double avg_frames = 100.0 * train_.total_seconds() / std::max<size_t>(1, train_.size());
    return speech_flops_per_step(cfg_, avg_frames, o_.max_tokens,
                                 static_cast<double>(o_.batch) * o_.train.grad_accum * grid_.dp_size(),
                                 !ctc_only(step));
  }
  models::GptMemory memory() const override { return model_.memory(); }
  uint64_t consumed() const override { return consumed_; }
  void set_consumed(uint64_t n) override { consumed_ = n; }

  void describe(checkpoint::Manifest& m) const override {
    m.model_type = "speech";
    m.model = cfg_.decoder;
    m.model_extra = cfg_.extra_json();
    m.tokenizer_hash = tok_.hash();
    m.eot_token = tok_.eot();
    m.sampler.seq_len = o_.max_tokens;
    m.sampler.samples_per_step = static_cast<uint64_t>(o_.batch) * grid_.dp_size() * o_.train.grad_accum;
    m.run = {{"batch", o_.batch}, {"data", fs::absolute(o_.data_dir).string()},
             {"tokenizer", fs::absolute(o_.tokenizer_path).string()}, {"init_decoder", o_.init_decoder},
             {"init_from", o_.init_from}, {"ctc_weight", o_.ctc_weight}, {"temperature", o_.temperature}};
  }

  void log_setup() const override {
    const auto& e = cfg_.encoder;
    const auto& d = cfg_.decoder;
    log_info("model: speech encoder L%d d%d h%d (%d mels, up to %d frames) + GPT decoder L%d d%d h%d vocab %d with "
             "cross-attention (%s): %.2fM parameters (%.2fM encoder)",
             e.n_layer, e.n_embd, e.n_head, e.n_mels, e.max_frames, d.n_layer, d.n_embd, d.n_head, d.vocab_size,
             pretrained_ ? ("from " + (o_.init_decoder.empty() ? o_.init_from : o_.init_decoder)).c_str() : "random init", model_.param_table().size() ? 
             (model_.encoder_params() + model_.decoder().n_params()) / 1e6 : 0.0, model_.encoder_params() / 1e6);
    std::string langs;
    for (const auto& l : train_.languages()) langs += (langs.empty() ? "" : " ") + l;
    log_info("data: %zu train clips (%.2f h; %s), %zu val clips; batch %d clips x accum %d x dp %d; language "
             "temperature %g; CTC weight %g%s",
             train_.size(), train_.total_seconds() / 3600, langs.c_str(), val_.size(), o_.batch,
             o_.train.grad_accum, grid_.dp_size(), o_.temperature, o_.ctc_weight,
             o_.bucket_batches > 1 ? strfmt("; length buckets over %d batches", o_.bucket_batches).c_str() : "");
    if (o_.ctc_only_steps > 0)
      log_info("steps 1-%lld: CTC only (the decoder is not run and stays as loaded)",
               static_cast<long long>(o_.ctc_only_steps));
    if (cfg_.prior.enabled)
      log_info("decoder cross-attention: CTC alignment prior on %s of every layer (window %d CTC frames, floor %g)",
               cfg_.prior.n_heads > 0 ? strfmt("the first %d heads", cfg_.prior.n_heads).c_str() : "all heads",
               cfg_.prior.window, static_cast<double>(cfg_.prior.floor));
  }

  nlohmann::json config_json() const override {
    const audio::SpecAugmentConfig& a = o_.augment;
    return {{"model_type", "speech"}, {"encoder", cfg_.encoder.to_json()},
            {"decoder", {{"n_layer", cfg_.decoder.n_layer}, {"n_embd", cfg_.decoder.n_embd},
                         {"n_head", cfg_.decoder.n_head}, {"vocab_size", cfg_.decoder.vocab_size},
                         {"context", cfg_.decoder.context}, {"arch", models::gpt_arch_to_json(cfg_.decoder)}}},
            {"tokenizer", fs::absolute(o_.tokenizer_path).string()}, {"tokenizer_hash", tok_.hash()},
            {"data", fs::absolute(o_.data_dir).string()}, {"init_decoder", o_.init_decoder},
            {"init_from", o_.init_from}, {"batch", o_.batch}, {"max_tokens", o_.max_tokens}, {"ctc_weight", json_float(o_.ctc_weight)},
            {"temperature", o_.temperature}, {"freeze_decoder_steps", o_.freeze_decoder_steps},
            {"ctc_only_steps", o_.ctc_only_steps}, {"bucket_batches", o_.bucket_batches},
            {"ctc_prior", cfg_.prior.enabled ? cfg_.prior.to_json() : nlohmann::json(nullptr)},
            {"decoder_lr_scale", json_float(o_.decoder_lr_scale)}, {"new_lr_scale", json_float(o_.new_lr_scale)},
            {"muon_scope", o_.muon_scope},
            {"spec_augment", o_.spec_augment},
            {"augment", {{"n_freq_masks", a.n_freq_masks}, {"freq_width", a.freq_width},
                         {"n_time_masks", a.n_time_masks}, {"time_width_fraction", a.time_width_fraction},
                         {"max_time_width", a.max_time_width}}},
            {"eval_batches", o_.eval_batches}, {"eval_clips", o_.eval_clips}};
  }

 private:
  const FinetuneSpeechOptions& o_;
  const data::Tokenizer& tok_;
  models::SpeechSeq2SeqConfig cfg_;
  dist::ParallelGrid& grid_;
  bool pretrained_;
  data::SpeechDataset train_, val_;
  data::SpeechSampler sampler_;
  data::LengthBucketer bucketer_;
  audio::LogMel mel_;
  models::SpeechSeq2Seq model_;
  models::SpeechBatch batch_;
  std::vector<size_t> idx_;
  uint64_t consumed_ = 0;
  static std::vector<uint32_t> clip_lengths(const data::SpeechDataset& d) {
    std::vector<uint32_t> n(d.size());
    for (size_t i = 0; i < d.size(); ++i) n[i] = static_cast<uint32_t>(d.n_samples(i));
    return n;
  }
  std::vector<models::ParamSpec> table_;  // the model's, with hidden_matrix as --muon-scope says
  std::vector<optim::Range> new_ranges_, old_ranges_;
  float last_att_ = 0, last_ctc_ = 0;
};

}  // namespace

DecoderSource decoder_source(const FinetuneSpeechOptions& o, int vocab_if_random) {
  DecoderSource d;
  if (o.init_decoder == "none") {
    d.config = o.decoder_if_random;
    d.config.vocab_size = vocab_if_random;
    return d;
  }
  const std::string& path = o.init_decoder;
  CHORUS_CHECK(!path.empty(), "init-decoder: give a GPT weights file, run directory or checkpoint, or 'none' for a "
                              "decoder from random weights");
  CHORUS_CHECK(fs::exists(path), "init-decoder: '%s' does not exist (a GPT weights file, run directory or checkpoint)",
               path.c_str());
  d.file = fs::is_regular_file(path) ? path : (fs::path(path) / "model.h5").string();
  if (fs::is_regular_file(d.file)) {
    const auto h = checkpoint::read_weights_header(d.file);
    d.config = h.config;
    d.tokenizer_hash = h.tokenizer_hash;
    return d;
  }
  d.file = (fs::path(checkpoint::resolve_checkpoint_dir(path)) / "manifest.json").string();
  const checkpoint::Manifest m = checkpoint::read_manifest(d.file);
  d.config = m.model;
  d.tokenizer_hash = m.tokenizer_hash;
  return d;
}

models::SpeechSeq2SeqConfig speech_checkpoint_config(const std::string& path, std::string* dir_out,
                                                     std::string* tokenizer_hash_out) {
  const std::string dir = checkpoint::resolve_checkpoint_dir(path);
  const std::string manifest = (fs::path(dir) / "manifest.json").string();
  const checkpoint::Manifest m = checkpoint::read_manifest(manifest);
  CHORUS_CHECK(m.model_type == "speech",
               "%s: field 'model_type' is '%s', expected 'speech' (a finetune-speech checkpoint)", manifest.c_str(),
               m.model_type.c_str());
  if (dir_out) *dir_out = dir;
  if (tokenizer_hash_out) *tokenizer_hash_out = m.tokenizer_hash;
  return models::SpeechSeq2SeqConfig::from_manifest(m.model, m.model_extra, manifest);
}

void load_speech_weights(dist::ParallelGrid& grid, const std::string& dir, models::SpeechSeq2Seq& model,
                         const std::string& tokenizer_hash) {
  checkpoint::RankState st;
  for (const auto& p : model.param_table()) {
    st.tensors.push_back({p.name, p.global_shape, p.tp_axis, p.tp_parts});
    st.offsets.push_back(p.offset);
  }
  st.params = model.params();
  // Weights only: an empty optimizer range reads (and hashes) the model files and
  // not the Adam moments, two thirds of a checkpoint's bytes.
  st.opt_range = {0, 0};
  st.model_type = "speech";
  // The weights must be the same model; the CTC prior (no parameters) may differ.
  const auto without_prior = [](nlohmann::json j) {
    if (j.is_object()) j.erase("ctc_prior");
    return j;
  };
  const std::string manifest = (fs::path(dir) / "manifest.json").string();
  const nlohmann::json saved = checkpoint::read_manifest(manifest).model_extra;
  CHORUS_CHECK(without_prior(saved) == without_prior(model.config().extra_json()),
               "%s: field 'model_extra' is %s but this run's model is %s (the encoder must be the same)",
               manifest.c_str(), saved.dump().c_str(), model.config().extra_json().dump().c_str());
  st.model_extra = nullptr;  // checked above
  checkpoint::load_checkpoint(grid, dir, 0, model.config().decoder, tokenizer_hash, st);
}

namespace {

// The token embedding (rows x C, global) of a model trained with a tokenizer of
// old_vocab tokens, for tok, which extends it (add-language): the old rows kept,
// the new tokens' rows at the mean of the old language tokens' rows (a new
// language starts where the languages are), padding rows zero.
std::vector<float> grow_embedding(const float* src, int64_t rows, size_t C, const data::Tokenizer& tok,
                                  int old_vocab) {
  std::vector<uint32_t> old_langs;
  for (const auto& l : tok.languages()) {
    const uint32_t id = tok.special("<|" + l + "|>");
    if (static_cast<int>(id) < old_vocab) old_langs.push_back(id);
  }
  std::vector<float> grown(static_cast<size_t>(rows) * C, 0.0f);
  std::copy_n(src, static_cast<size_t>(old_vocab) * C, grown.begin());
  std::vector<double> mean(C, 0.0);
  for (uint32_t id : old_langs)
    for (size_t c = 0; c < C; ++c) mean[c] += src[id * C + c] / static_cast<double>(old_langs.size());
  for (int r = old_vocab; r < tok.vocab_size(); ++r)
    for (size_t c = 0; c < C; ++c) grown[r * C + c] = static_cast<float>(mean[c]);
  return grown;
}

// A GPT weights file into a speech decoder whose tokenizer extends the GPT's:
// every tensor by name, wte grown (grow_embedding), the cross-attention (not in
// a GPT file) left as initialised; this rank's TP shard of each.
void load_decoder_grown(const std::string& file, models::Gpt& dec, const data::Tokenizer& tok, int old_vocab,
                        const dist::ParallelGrid& grid) {
  const auto tensors = checkpoint::read_weights_tensors(file);
  const auto params = dec.params();
  for (const auto& p : dec.param_table()) {
    const auto it = std::find_if(tensors.begin(), tensors.end(), [&](const auto& t) { return t.name == p.name; });
    if (it == tensors.end()) {
      CHORUS_CHECK(p.name.find(".ln_x.") != std::string::npos || p.name.find(".crossattn.") != std::string::npos,
                   "init-decoder: '%s' has no tensor '%s'", file.c_str(), p.name.c_str());
      continue;
    }
    const float* src = it->data.data();
    std::vector<float> grown;
    if (it->shape != p.global_shape) {
      CHORUS_CHECK((p.name == "wte.weight" || p.name == "lm_head.weight") && it->shape.size() == 2 && it->shape[1] == p.global_shape[1] &&
                       it->shape[0] >= old_vocab,
                   "init-decoder: '%s': tensor '%s' has another shape; only the embedding may grow with the "
                   "tokenizer",
                   file.c_str(), p.name.c_str());
      grown = grow_embedding(src, p.global_shape[0], static_cast<size_t>(p.global_shape[1]), tok, old_vocab);
      src = grown.data();
    }
    nn::slice_shard(checkpoint::shard_spec(p), grid.tp_rank(), grid.tp_size(), src, params.data() + p.offset);
  }
}

}  // namespace

void load_speech_weights_grown(dist::ParallelGrid& grid, const std::string& dir, models::SpeechSeq2Seq& model,
                               const data::Tokenizer& tok, int old_vocab) {
  const std::string manifest_path = (fs::path(dir) / "manifest.json").string();
  const checkpoint::Manifest m = checkpoint::read_manifest(manifest_path);
  const checkpoint::GlobalState g = checkpoint::read_global(dir, m, false);
  const auto params = model.params();
  for (const auto& p : model.param_table()) {
    size_t i = 0;
    while (i < m.tensors.size() && m.tensors[i].name != p.name) ++i;
    CHORUS_CHECK(i < m.tensors.size(), "%s: no tensor '%s'", manifest_path.c_str(), p.name.c_str());
    const auto& saved = m.tensors[i].global_shape;
    const float* src = g.params.data() + g.offsets[i];
    std::vector<float> grown;
    if (saved != p.global_shape) {
      CHORUS_CHECK(p.name == "decoder.wte.weight" && saved.size() == 2 && p.global_shape.size() == 2 &&
                       saved[1] == p.global_shape[1] && saved[0] >= old_vocab && p.global_shape[0] >= tok.vocab_size(),
                   "%s: tensor '%s' has shape [%lld, %lld] here; only the decoder's embedding may grow with the "
                   "tokenizer",
                   manifest_path.c_str(), p.name.c_str(), static_cast<long long>(saved[0]),
                   static_cast<long long>(saved.size() > 1 ? saved[1] : 0));
      grown = grow_embedding(src, p.global_shape[0], static_cast<size_t>(saved[1]), tok, old_vocab);
      src = grown.data();
    }
    nn::slice_shard(checkpoint::shard_spec(p), grid.tp_rank(), grid.tp_size(), src, params.data() + p.offset);
  }
}

FinetuneSpeechResult finetune_speech(const FinetuneSpeechOptions& opt_in) {
  FinetuneSpeechOptions opt = opt_in;
  const auto tok = data::Tokenizer::load(opt.tokenizer_path);
  CHORUS_CHECK(opt.batch >= 1, "batch: must be >= 1, got %d", opt.batch);
  CHORUS_CHECK(opt.max_tokens >= 6, "max-tokens: must be >= 6, got %d", opt.max_tokens);
  CHORUS_CHECK(opt.ctc_weight >= 0, "ctc-weight: must be >= 0, got %g", opt.ctc_weight);
  CHORUS_CHECK(opt.temperature > 0, "temperature: must be > 0, got %g", opt.temperature);
  CHORUS_CHECK(opt.freeze_decoder_steps >= 0, "freeze-decoder-steps: must be >= 0");
  CHORUS_CHECK(opt.muon_scope == "all" || opt.muon_scope == "new" || opt.muon_scope == "encoder",
               "muon-scope: expected all, new or encoder, got '%s'", opt.muon_scope.c_str());
  CHORUS_CHECK(opt.ctc_only_steps >= 0, "ctc-only-steps: must be >= 0, got %lld", static_cast<long long>(opt.ctc_only_steps));
  CHORUS_CHECK(opt.ctc_only_steps == 0 || opt.ctc_weight > 0,
               "ctc-only-steps: the CTC-only steps train the CTC loss alone, so ctc-weight must be > 0 (got %g)",
               opt.ctc_weight);
  opt.encoder.validate();
  opt.train.validate();
  dist::ParallelGrid single = dist::ParallelGrid::single();
  dist::ParallelGrid& grid = opt.train.grid ? *opt.train.grid : single;
  opt.train.grid = &grid;
  models::SpeechSeq2SeqConfig cfg;
  std::string init_from_dir;
  models::SpeechSeq2SeqConfig from_cfg;  // the --init-from model's config
  int grow_from_vocab = 0;               // > 0: its tokenizer had this many tokens, --tokenizer extends it
  std::string from_hash;                 // its tokenizer's hash
  // --init-from alone: the whole model continues; with --init-decoder too,
  // only its encoder (and CTC head), the decoder from that GPT or random.
  const bool encoder_only = !opt.init_from.empty() && !opt.init_decoder.empty();
  if (!opt.init_from.empty()) {
    std::string& hash = from_hash;
    from_cfg = speech_checkpoint_config(opt.init_from, &init_from_dir, &hash);
    // The checkpoint's tokenizer, or one that extends it with new languages (add-language).
    grow_from_vocab = hash != tok.hash() ? tok.vocab_size_of(hash) : 0;
    if (grow_from_vocab == 0) check_decoder_tokenizer(init_from_dir, hash, tok, opt.tokenizer_path);
    CHORUS_CHECK(grow_from_vocab == 0 || grow_from_vocab == from_cfg.decoder.vocab_size,
                 "init-from: %s's decoder has %d tokens but its tokenizer (an ancestor of --tokenizer '%s') had %d",
                 init_from_dir.c_str(), from_cfg.decoder.vocab_size, opt.tokenizer_path.c_str(), grow_from_vocab);
    if (!(from_cfg.encoder == opt.encoder))
      log_info("init-from: the encoder shape comes from %s (L%d d%d h%d, %d mels, up to %d frames, subsample %d); "
               "the [encoder] options are not used",
               init_from_dir.c_str(), from_cfg.encoder.n_layer, from_cfg.encoder.n_embd, from_cfg.encoder.n_head,
               from_cfg.encoder.n_mels, from_cfg.encoder.max_frames, from_cfg.encoder.subsample);
    opt.encoder = from_cfg.encoder;
    cfg = from_cfg;
    if (grow_from_vocab > 0) {
      cfg.decoder.vocab_size = tok.vocab_size();
      log_info("init-from: %s was trained with tokenizer %.12s (%d tokens); --tokenizer '%s' extends it to %d "
               "tokens: the decoder's embedding grows by %d rows",
               init_from_dir.c_str(), hash.c_str(), grow_from_vocab, opt.tokenizer_path.c_str(), tok.vocab_size(),
               tok.vocab_size() - grow_from_vocab);
    }
    if (opt.prior.enabled) cfg.prior = opt.prior;  // no parameters: a model may gain it when it continues
  } else {
    cfg.encoder = opt.encoder;
    cfg.prior = opt.prior;
  }
  int decoder_grow_from = 0;  // > 0: the GPT's tokenizer had this many tokens, --tokenizer extends it
  if (opt.init_from.empty() || encoder_only) {
    const DecoderSource source = decoder_source(opt, tok.vocab_size());
    cfg.decoder = source.config;
    if (!source.file.empty()) {
      decoder_grow_from = source.tokenizer_hash != tok.hash() ? tok.vocab_size_of(source.tokenizer_hash) : 0;
      if (decoder_grow_from == 0) check_decoder_tokenizer(source.file, source.tokenizer_hash, tok, opt.tokenizer_path);
      CHORUS_CHECK(decoder_grow_from == 0 || decoder_grow_from == source.config.vocab_size,
                   "init-decoder: %s has %d tokens but its tokenizer (an ancestor of --tokenizer '%s') had %d",
                   source.file.c_str(), source.config.vocab_size, opt.tokenizer_path.c_str(), decoder_grow_from);
      if (decoder_grow_from > 0) {
        cfg.decoder.vocab_size = tok.vocab_size();
        log_info("init-decoder: %s was trained with tokenizer %.12s (%d tokens); --tokenizer '%s' extends it to %d "
                 "tokens: the embedding grows by %d rows",
                 source.file.c_str(), source.tokenizer_hash.c_str(), decoder_grow_from, opt.tokenizer_path.c_str(),
                 tok.vocab_size(), tok.vocab_size() - decoder_grow_from);
      }
    }
  }
  cfg.decoder.validate();
  CHORUS_CHECK(cfg.prior.n_heads <= cfg.decoder.n_head, "ctc-prior-heads: %d exceeds the decoder's %d heads",
               cfg.prior.n_heads, cfg.decoder.n_head);
  CHORUS_CHECK(!cfg.prior.enabled || opt.ctc_weight > 0,
               "ctc-prior: the prior comes from the CTC head, so ctc-weight must be > 0 (got %g)", opt.ctc_weight);
  CHORUS_CHECK(opt.max_tokens <= cfg.decoder.context, "max-tokens: %d exceeds the decoder context %d",
               opt.max_tokens, cfg.decoder.context);
  grid.check_divides(cfg.decoder.n_head, cfg.decoder.mlp_hidden(), cfg.decoder.padded_vocab());
  // Before anything is written or read: the longest clips (the mean length only changes the FLOPs).
  check_plan_fits(plan_finetune_speech(opt, cfg, {grid.dp_size(), grid.tp_size(), opt.train.zero_stage,
                                                  opt.train.precision}, cfg.encoder.max_frames),
                  opt.train.max_memory_gib, grid.world(), "finetune-speech",
                  "--batch, --max-frames, --max-tokens, --n-embd or --n-layer, or use --tp / --zero 1 over more ranks");
  const RunDirLock lock(opt.train);  // before init-decoder.h5 is exported into the run directory

  const bool pretrained = encoder_only ? opt.init_decoder != "none" : !init_from_dir.empty() || opt.init_decoder != "none";
  std::string weights;
  if (pretrained && (init_from_dir.empty() || encoder_only)) {
    weights = decoder_weights(opt.init_decoder, opt.train.run_dir, grid, tok, opt.tokenizer_path);
    const auto h = checkpoint::read_weights_header(weights);
    if (decoder_grow_from == 0) check_decoder_tokenizer(weights, h.tokenizer_hash, tok, opt.tokenizer_path);
  }
  SpeechTask task(opt, tok, cfg, grid, pretrained);
  task.model().init_weights(opt.train.seed);
  if (encoder_only) {
    // The whole source model (same TP layout), then its encoder's floats: the
    // first encoder_params() of both flat buffers, laid out by the same config.
    models::SpeechSeq2Seq source(from_cfg, 1, from_cfg.encoder.max_frames, from_cfg.decoder.context, &grid.tp(),
                                 Precision::fp32);
    load_speech_weights(grid, init_from_dir, source, from_hash);
    CHORUS_CHECK(source.encoder_params() == task.model().encoder_params(), "init-from: encoder sizes differ");
    std::copy_n(source.params().data(), source.encoder_params(), task.model().params().data());
    log_info("init-from: encoder and CTC head from %s; decoder %s", init_from_dir.c_str(),
             pretrained ? ("from " + opt.init_decoder).c_str() : "from random weights");
  } else if (!init_from_dir.empty()) {
    if (grow_from_vocab > 0)
      load_speech_weights_grown(grid, init_from_dir, task.model(), tok, grow_from_vocab);
    else
      load_speech_weights(grid, init_from_dir, task.model(), tok.hash());
    log_info("init-from: encoder, decoder and CTC head from %s", init_from_dir.c_str());
  }
  if (pretrained && !weights.empty() && decoder_grow_from > 0)
    load_decoder_grown(weights, task.model().decoder(), tok, decoder_grow_from, grid);
  else if (pretrained && !weights.empty())
    checkpoint::load_weights(weights, task.model().decoder(), tok.hash(), grid.tp_rank(), grid.tp_size(),
                             /*allow_new_cross_attention=*/true);
  FinetuneSpeechResult r;
  static_cast<TrainResult&>(r) = run_training(task, opt.train);
  r.weights_path = r.checkpoint;
  return r;
}

}  // namespace chorus::train
