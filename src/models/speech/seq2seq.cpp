#include "models/speech/seq2seq.h"

#include <cstring>

#include "core/error.h"
#include "core/strfmt.h"
#include "nn/ctc.h"

namespace chorus::models {

nlohmann::json CtcPriorConfig::to_json() const {
  return {{"window", window}, {"floor", floor}, {"heads", n_heads}};
}

nlohmann::json SpeechSeq2SeqConfig::extra_json() const {
  nlohmann::json j = {{"encoder", encoder.to_json()}, {"ctc", "bytes"}};
  if (prior.enabled) j["ctc_prior"] = prior.to_json();
  return j;
}

SpeechSeq2SeqConfig SpeechSeq2SeqConfig::from_manifest(const GptConfig& decoder, const nlohmann::json& extra,
                                                       const std::string& where) {
  SpeechSeq2SeqConfig c;
  c.decoder = decoder;
  CHORUS_CHECK(extra.is_object() && extra.contains("encoder") && extra.value("ctc", "") == "bytes",
               "%s: field 'model_extra': expected {\"encoder\": ..., \"ctc\": \"bytes\"} (not a speech checkpoint?)",
               where.c_str());
  c.encoder = SpeechEncoderConfig::from_json(extra.at("encoder"), where);
  if (extra.contains("ctc_prior")) {
    const auto& p = extra.at("ctc_prior");
    try {
      c.prior.enabled = true;
      c.prior.window = p.at("window").get<int>();
      c.prior.floor = p.at("floor").get<float>();
      c.prior.n_heads = p.at("heads").get<int>();
    } catch (const nlohmann::json::exception& e) {
      throw Error(strfmt("%s: field 'model_extra.ctc_prior': %s", where.c_str(), e.what()));
    }
    CHORUS_CHECK(c.prior.window >= 0 && c.prior.floor > 0 && c.prior.n_heads >= 0 &&
                     c.prior.n_heads <= decoder.n_head,
                 "%s: field 'model_extra.ctc_prior': window %d must be >= 0, floor %g > 0 and heads in [0, %d]",
                 where.c_str(), c.prior.window, static_cast<double>(c.prior.floor), decoder.n_head);
  }
  return c;
}

SpeechSeq2Seq::SpeechSeq2Seq(const SpeechSeq2SeqConfig& cfg, int max_batch, int max_frames, int max_tokens,
                             dist::Communicator* tp, Precision precision)
    : cfg_(cfg) {
  encoder_ = std::make_unique<SpeechEncoder>(cfg.encoder, SpeechSeq2SeqConfig::kCtcVocab, SpeechSeq2SeqConfig::kCtcBlank, max_batch, max_frames,
                                             tp, precision);
  decoder_ = std::make_unique<Gpt>(cfg.decoder, max_batch, max_tokens, tp, precision, decoder_cross(cfg, max_frames));
  n_encoder_ = encoder_->n_params();
  const size_t n = n_encoder_ + decoder_->n_params();
  params_ = backend::cpu::AlignedBuffer(n);
  grads_ = backend::cpu::AlignedBuffer(n);
  encoder_->adopt_storage(params_.data(), grads_.data());
  decoder_->adopt_storage(params_.data() + n_encoder_, grads_.data() + n_encoder_);
  decoder_->set_per_sequence_mean(true);  // as the CTC loss: DP-exact for transcripts of unequal length
  if (cfg.prior.enabled)
    decoder_->set_cross_attention_bias_heads(cfg.prior.n_heads > 0 ? cfg.prior.n_heads : cfg.decoder.n_head);
  for (ParamSpec p : encoder_->param_table()) {
    p.name = "encoder." + p.name;
    table_.push_back(std::move(p));
  }
  for (ParamSpec p : decoder_->param_table()) {
    p.name = "decoder." + p.name;
    p.offset += n_encoder_;
    table_.push_back(std::move(p));
  }
}

void SpeechSeq2Seq::init_weights(uint64_t seed) {
  encoder_->init_weights(seed ^ 0x656e63ull);
  decoder_->init_weights(seed);
}

std::span<float> SpeechSeq2Seq::params() {
  encoder_->params();  // both compute copies go stale: the caller may write
  decoder_->params();
  return {params_.data(), params_.size()};
}
std::span<float> SpeechSeq2Seq::grads() { return {grads_.data(), grads_.size()}; }
void SpeechSeq2Seq::zero_grad() { std::memset(grads_.data(), 0, grads_.size() * sizeof(float)); }

GptMemory SpeechSeq2Seq::memory() const {
  GptMemory m = encoder_->memory_use();
  m += decoder_->memory();
  return m;
}

GptMemory speech_seq2seq_memory(const SpeechSeq2SeqConfig& cfg, int max_batch, int max_frames, int max_tokens,
                                int tp_size, Precision precision) {
  GptMemory m = speech_encoder_memory(cfg.encoder, SpeechSeq2SeqConfig::kCtcVocab, SpeechSeq2SeqConfig::kCtcBlank,
                                      max_batch, max_frames, tp_size, precision);
  m += gpt_memory(cfg.decoder, max_batch, max_tokens, tp_size, precision, decoder_cross(cfg, max_frames));
  return m;
}

SpeechLosses SpeechSeq2Seq::forward(const SpeechBatch& b, float ctc_weight, bool with_decoder) {
  CHORUS_CHECK(with_decoder || ctc_weight > 0.0f, "SpeechSeq2Seq::forward: without the decoder, a CTC weight > 0 is needed");
  SpeechLosses l;
  encoder_->forward(b.feats.data(), b.n_frames.data(), b.B, b.F);
  if (with_decoder) {
    decoder_->set_memory(encoder_->memory(), encoder_->memory_len(), encoder_->memory_rows());
    if (cfg_.prior.enabled) {
      ctc_prior(b, prior_);
      decoder_->set_cross_attention_bias(prior_.data());
    }
    l.att = decoder_->forward(b.tokens.data(), b.targets.data(), b.B, b.T);
  }
  if (ctc_weight > 0.0f)
    l.ctc = encoder_->ctc_loss(b.ctc_targets.data(), b.ctc_off.data(), b.ctc_len.data(), 1.0f, &l.ctc_infeasible);
  last_ = &b;
  last_with_decoder_ = with_decoder;
  return l;
}

void SpeechSeq2Seq::ctc_prior(const SpeechBatch& b, std::vector<float>& prior) const {
  CHORUS_CHECK(b.byte_off.size() == static_cast<size_t>(b.B) * b.T,
               "SpeechSeq2Seq::ctc_prior: the batch has no byte offsets (B x T)");
  const int S = encoder_->memory_rows(), V = encoder_->ctc_vocab(), blank = encoder_->ctc_blank();
  const int up = cfg_.encoder.ctc_upsample();
  prior.assign(static_cast<size_t>(b.B) * b.T * S, 0.0f);
#pragma omp parallel for schedule(dynamic, 1)
  for (int i = 0; i < b.B; ++i) {
    const int len = encoder_->ctc_len()[i];
    std::vector<float> lp(static_cast<size_t>(encoder_->ctc_rows()) * V), row(encoder_->memory_len()[i]);
    encoder_->ctc_log_probs(i, lp.data());
    // The prefixes of the transcript's labels, in order; each position takes its own.
    const int32_t* labels = b.ctc_targets.data() + b.ctc_off[i];
    nn::CtcPrefix h = nn::ctc_prefix_root(lp.data(), len, V, blank);
    int n = 0;
    for (int t = 0; t < b.T; ++t) {
      const int want = b.byte_off[static_cast<size_t>(i) * b.T + t];
      if (want < 0) continue;
      CHORUS_CHECK(want >= n && want <= b.ctc_len[i], "SpeechSeq2Seq::ctc_prior: byte offsets must grow, within "
                   "the transcript (clip %d position %d: %d after %d, of %d)", i, t, want, n, b.ctc_len[i]);
      for (; n < want; ++n) h = nn::ctc_prefix_extend(h, labels[n], lp.data(), len, V, blank);
      nn::ctc_alignment_prior(h, cfg_.prior.window, cfg_.prior.floor, up, row.data());
      std::copy(row.begin(), row.end(), prior.begin() + (static_cast<size_t>(i) * b.T + t) * S);
    }
  }
}

void SpeechSeq2Seq::backward(float loss_scale, float ctc_weight) {
  CHORUS_CHECK(last_ != nullptr, "SpeechSeq2Seq::backward: call forward first");
  if (ctc_weight > 0.0f)  // redo the CTC gradient at this scale (cheap next to the model)
    encoder_->ctc_loss(last_->ctc_targets.data(), last_->ctc_off.data(), last_->ctc_len.data(),
                       loss_scale * ctc_weight);
  if (last_with_decoder_) {
    decoder_->backward(loss_scale);
    encoder_->backward(decoder_->memory_grad(), ctc_weight > 0.0f);
  } else {
    encoder_->backward(nullptr, true);
  }
  last_ = nullptr;
}

}  // namespace chorus::models
