#include "models/speech/seq2seq.h"

#include <cstring>

#include "core/error.h"

namespace chorus::models {

nlohmann::json SpeechSeq2SeqConfig::extra_json() const {
  return {{"encoder", encoder.to_json()}, {"ctc", "bytes"}};
}

SpeechSeq2SeqConfig SpeechSeq2SeqConfig::from_manifest(const GptConfig& decoder, const nlohmann::json& extra,
                                                       const std::string& where) {
  SpeechSeq2SeqConfig c;
  c.decoder = decoder;
  CHORUS_CHECK(extra.is_object() && extra.contains("encoder") && extra.value("ctc", "") == "bytes",
               "%s: field 'model_extra': expected {\"encoder\": ..., \"ctc\": \"bytes\"} (not a speech checkpoint?)",
               where.c_str());
  c.encoder = SpeechEncoderConfig::from_json(extra.at("encoder"), where);
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
    l.att = decoder_->forward(b.tokens.data(), b.targets.data(), b.B, b.T);
  }
  if (ctc_weight > 0.0f)
    l.ctc = encoder_->ctc_loss(b.ctc_targets.data(), b.ctc_off.data(), b.ctc_len.data(), 1.0f, &l.ctc_infeasible);
  last_ = &b;
  last_with_decoder_ = with_decoder;
  return l;
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
